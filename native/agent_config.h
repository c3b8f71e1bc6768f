/* The two config.json fields the shim itself needs, before any helper runs: `"agent"` and `"agent_socket"`. It
 * finds the file as the helper does and reads only these top-level fields; the helper validates the whole file. */
#ifndef AKV_AGENT_CONFIG_H
#define AKV_AGENT_CONFIG_H

#include <limits.h>

struct agent_config {
  int agent; /* 1 true, 0 false, -1 absent */
  char socket[PATH_MAX]; /* empty when absent */
};

void agent_config_read(struct agent_config *config);

#endif
