/* Starting the helper process: `<node> <helper>` with the socket as fd 3, a sanitised environment, stdin and
 * stdout on /dev/null, stderr shared with the host, default signal handling and its own session. */
#ifndef AKV_SPAWN_H
#define AKV_SPAWN_H

#include <sys/types.h>

/* On success returns 0, stores the shim's end of the socketpair (close-on-exec) in *fd and the helper's pid in
 * *pid. On failure logs one line on stderr and returns -1. */
int spawn_helper(int *fd, pid_t *pid);

/* Starts `<node> <helper> agent --detach --socket socket_path`, which returns once an agent listens there (and
 * leaves the agent running in its own session, no child of ours). The caller reaps *pid. */
int spawn_agent_launcher(const char *socket_path, pid_t *pid);

#endif
