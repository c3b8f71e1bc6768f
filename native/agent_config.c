#include "agent_config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The same search as src/config/load.ts findConfigFile. */
static int config_path(char *out, size_t size) {
  const char *explicit = getenv("AZURE_KEYVAULT_PKCS11_CONFIG");
  if (explicit != NULL && explicit[0] != '\0') return snprintf(out, size, "%s", explicit) < (int)size;
  const char *xdg = getenv("XDG_CONFIG_HOME");
  const char *home = getenv("HOME");
  if (xdg != NULL && xdg[0] == '/') {
    snprintf(out, size, "%s/azure-keyvault-pkcs11/config.json", xdg);
  } else if (home != NULL && home[0] != '\0') {
    snprintf(out, size, "%s/.config/azure-keyvault-pkcs11/config.json", home);
  } else {
    out[0] = '\0';
  }
  FILE *probe = out[0] != '\0' ? fopen(out, "r") : NULL;
  if (probe != NULL) {
    fclose(probe);
    return 1;
  }
  return snprintf(out, size, "%s", "/etc/azure-keyvault-pkcs11/config.json") < (int)size;
}

/* A JSON string starting at p (just after its opening quote); copies it into out unless out is NULL. Returns the
 * position after the closing quote, or NULL when the text ends first. Escapes other than \" and \\ are copied as
 * they stand: a socket path with such characters is not worth a JSON decoder in the shim. */
static const char *scan_string(const char *p, const char *end, char *out, size_t size) {
  size_t n = 0;
  while (p < end && *p != '"') {
    if (*p == '\\' && p + 1 < end) p++;
    if (out != NULL && n + 1 < size) out[n++] = *p;
    p++;
  }
  if (out != NULL && size > 0) out[n] = '\0';
  return p < end ? p + 1 : NULL;
}

static const char *skip_space(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* Walks the top-level object only, skipping nested values, so that a slot's fields never count. */
static void scan_top_level(const char *p, const char *end, struct agent_config *config) {
  p = skip_space(p, end);
  if (p >= end || *p != '{') return;
  p++;
  int depth = 1;
  int expect_key = 1;
  while (p < end && depth > 0) {
    p = skip_space(p, end);
    if (p >= end) return;
    char c = *p;
    if (c == '"') {
      char key[32];
      const char *after = scan_string(p + 1, end, key, sizeof key);
      if (after == NULL) return;
      p = after;
      if (depth != 1 || !expect_key) continue;
      p = skip_space(p, end);
      if (p >= end || *p != ':') return;
      p = skip_space(p + 1, end);
      expect_key = 0;
      if (strcmp(key, "agent") == 0) {
        if (end - p >= 4 && strncmp(p, "true", 4) == 0) config->agent = 1;
        if (end - p >= 5 && strncmp(p, "false", 5) == 0) config->agent = 0;
      } else if (strcmp(key, "agent_socket") == 0 && p < end && *p == '"') {
        p = scan_string(p + 1, end, config->socket, sizeof config->socket);
        if (p == NULL) return;
      }
    } else {
      if (c == '{' || c == '[') depth++;
      if (c == '}' || c == ']') depth--;
      if (c == ',' && depth == 1) expect_key = 1;
      p++;
    }
  }
}

void agent_config_read(struct agent_config *config) {
  config->agent = -1;
  config->socket[0] = '\0';
  char path[PATH_MAX];
  if (!config_path(path, sizeof path)) return;
  FILE *file = fopen(path, "re");
  if (file == NULL) return;
  /* Config files are a few kilobytes; a bigger one is read in part, as the helper will report what is wrong. */
  static const size_t limit = 1024 * 1024;
  char *text = malloc(limit);
  if (text != NULL) {
    size_t n = fread(text, 1, limit, file);
    scan_top_level(text, text + n, config);
    free(text);
  }
  fclose(file);
}
