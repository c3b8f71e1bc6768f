/* Log lines for the host's stderr, always prefixed "AZURE_KEYVAULT: ". The module never writes to stdout. */
#ifndef AKV_LOG_H
#define AKV_LOG_H

/* Reads AZURE_KEYVAULT_PKCS11_DEBUG; called by C_Initialize. */
void log_configure(void);

/* A line the operator must see (helper gone, timeout, spawn failure). */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A line shown only when AZURE_KEYVAULT_PKCS11_DEBUG is set. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
