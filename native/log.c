#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int debug_enabled;

void log_configure(void) {
  const char *value = getenv("AZURE_KEYVAULT_PKCS11_DEBUG");
  atomic_store(&debug_enabled, value != NULL && value[0] != '\0' && strcmp(value, "0") != 0);
}

/* One write(2) per line so that lines from several threads and processes do not interleave, and no stdio
 * buffer of the host is touched. */
static void write_line(const char *fmt, va_list args) {
  char line[1024];
  static const char prefix[] = "AZURE_KEYVAULT: ";
  size_t used = sizeof prefix - 1;
  memcpy(line, prefix, used);
  int n = vsnprintf(line + used, sizeof line - used - 1, fmt, args);
  if (n < 0) return;
  used += (size_t)n < sizeof line - used - 1 ? (size_t)n : sizeof line - used - 2;
  line[used++] = '\n';
  ssize_t ignored = write(STDERR_FILENO, line, used);
  (void)ignored;
}

void log_error(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  write_line(fmt, args);
  va_end(args);
}

void log_debug(const char *fmt, ...) {
  if (!atomic_load(&debug_enabled)) return;
  va_list args;
  va_start(args, fmt);
  write_line(fmt, args);
  va_end(args);
}

void log_forward(const char *line, size_t len) {
  /* The line arrived whole in one frame: one write keeps it from interleaving with other threads' lines. */
  ssize_t ignored = write(STDERR_FILENO, line, len);
  (void)ignored;
}
