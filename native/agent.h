/* The shared agent (docs/agent.md): whether this process uses one, where it listens, starting one when none
 * answers, checking that it runs as this user (or is a system agent), and the hello that places the process in its
 * context. A process that cannot use an agent falls back to a private helper, with one log line. */
#ifndef AKV_AGENT_H
#define AKV_AGENT_H

/* 0 with *fd connected and greeted; -1 when this process uses a private helper (logged when it is a failure). */
int agent_connect(int *fd);

#endif
