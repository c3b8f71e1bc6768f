/* Log lines for the host's stderr, always prefixed "AZURE_KEYVAULT: ". The module never writes to stdout. */
#ifndef AKV_LOG_H
#define AKV_LOG_H

#include <stddef.h>

/* Reads AZURE_KEYVAULT_PKCS11_DEBUG; called by C_Initialize. */
void log_configure(void);

/* A line the operator must see (helper gone, timeout, spawn failure). */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A line shown only when AZURE_KEYVAULT_PKCS11_DEBUG is set. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes a line an agent sent for this host (it carries its own prefix and newline) to stderr, as it came. */
void log_forward(const char *line, size_t len);

#endif
