#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

extern char **environ;

#define HELPER_FD 3
/* Keeps both socket ends clear of 0-3 even when the host closed its standard descriptors. */
#define LOWEST_SOCKET_FD 10

static const char *node_path(void) {
  const char *env = getenv("AZURE_KEYVAULT_PKCS11_NODE");
  return env != NULL && env[0] != '\0' ? env : AKV_NODE_PATH;
}

static const char *helper_path(void) {
  const char *env = getenv("AZURE_KEYVAULT_PKCS11_HELPER");
  return env != NULL && env[0] != '\0' ? env : AKV_HELPER_PATH;
}

/* NODE_OPTIONS, NODE_PATH, NODE_CHANNEL_FD, NODE_TLS_REJECT_UNAUTHORIZED and friends would let the host's
 * environment change what the helper runs or how it trusts TLS; NODE_EXTRA_CA_CERTS is part of the documented
 * trust configuration, so it stays. OPENSSL_CONF and the other OPENSSL_* variables go too: a host configured to load
 * an OpenSSL provider for every program (pkcs11-provider with this very module, say) must not make node load it,
 * or the helper's own TLS and hashing would call back into the module. */
static int keeps_variable(const char *entry) {
  if (strncmp(entry, "OPENSSL_", 8) == 0) return 0;
  if (strncmp(entry, "NODE_", 5) != 0) return 1;
  return strncmp(entry, "NODE_EXTRA_CA_CERTS=", 20) == 0;
}

/* Node reads OPENSSL_CONF, or else the system's openssl.cnf, at start: an empty configuration loads no provider. */
static char no_openssl_config[] = "OPENSSL_CONF=/dev/null";

/* The returned array points into environ; only the array itself is freed. */
static char **helper_environment(void) {
  size_t n = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++) n++;
  char **env = calloc(n + 2, sizeof *env);
  if (env == NULL) return NULL;
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (keeps_variable(environ[i])) env[kept++] = environ[i];
  }
  env[kept++] = no_openssl_config;
  env[kept] = NULL;
  return env;
}

static int move_high(int fd) {
  if (fd >= LOWEST_SOCKET_FD) return fd;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, LOWEST_SOCKET_FD);
  close(fd);
  return high;
}

static int std_fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

/* child_end becomes fd 3 when it is not -1. */
static int build_file_actions(posix_spawn_file_actions_t *actions, int child_end) {
  int rc = posix_spawn_file_actions_init(actions);
  if (rc != 0) return rc;
  if (rc == 0 && child_end >= 0) rc = posix_spawn_file_actions_adddup2(actions, child_end, HELPER_FD);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  if (rc == 0 && !std_fd_is_open(STDERR_FILENO)) {
    rc = posix_spawn_file_actions_addopen(actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  } else if (rc == 0) {
    /* Node hosts mark fd 2 close-on-exec; dup2 onto itself clears the flag in the child (POSIX 2024,
     * glibc >= 2.29), so the helper's log lines reach the host's stderr instead of vanishing. */
    rc = posix_spawn_file_actions_adddup2(actions, STDERR_FILENO, STDERR_FILENO);
  }
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(actions, child_end >= 0 ? HELPER_FD + 1 : HELPER_FD);
  if (rc != 0) posix_spawn_file_actions_destroy(actions);
  return rc;
}

static int build_attributes(posix_spawnattr_t *attr) {
  int rc = posix_spawnattr_init(attr);
  if (rc != 0) return rc;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  if (rc == 0) rc = posix_spawnattr_setsigmask(attr, &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(attr, &all);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID);
  }
  if (rc != 0) posix_spawnattr_destroy(attr);
  return rc;
}

/* `<node> <helper> extra...` with child_end as fd 3 (or none), the sanitised environment and the attributes above. */
static int spawn_node(const char *what, char *const extra[], int child_end, pid_t *pid) {
  const char *node = node_path();
  const char *helper = helper_path();
  char *argv[8];
  size_t argc = 0;
  argv[argc++] = (char *)node;
  argv[argc++] = (char *)helper;
  for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 7; i++) argv[argc++] = extra[i];
  argv[argc] = NULL;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  char **env = helper_environment();
  int rc = env == NULL ? ENOMEM : build_file_actions(&actions, child_end);
  if (rc == 0) {
    rc = build_attributes(&attr);
    if (rc != 0) posix_spawn_file_actions_destroy(&actions);
  }
  if (rc == 0) {
    rc = posix_spawn(pid, node, &actions, &attr, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  free(env);
  if (rc != 0) {
    log_error("cannot start %s `%s %s`: %s (set AZURE_KEYVAULT_PKCS11_NODE to a node executable)", what, node, helper,
              strerror(rc));
  }
  return rc;
}

int spawn_helper(int *fd, pid_t *pid) {
  const char *helper = helper_path();
  if (access(helper, R_OK) != 0) {
    log_error("cannot read the helper %s: %s (set AZURE_KEYVAULT_PKCS11_HELPER or rebuild)", helper,
              strerror(errno));
    return -1;
  }

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    log_error("cannot create the helper socket: %s", strerror(errno));
    return -1;
  }
  sv[0] = move_high(sv[0]);
  sv[1] = move_high(sv[1]);
  if (sv[0] < 0 || sv[1] < 0) {
    log_error("cannot place the helper socket: %s", strerror(errno));
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    return -1;
  }

  int rc = spawn_node("the helper", NULL, sv[1], pid);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    return -1;
  }
  log_debug("started the helper `%s %s` as pid %ld", node_path(), helper, (long)*pid);
  *fd = sv[0];
  return 0;
}

int spawn_agent_launcher(const char *socket_path, pid_t *pid) {
  char *extra[] = {"agent", "--detach", "--socket", (char *)socket_path, NULL};
  if (spawn_node("the agent", extra, -1, pid) != 0) return -1;
  log_debug("starting an agent on %s (launcher pid %ld)", socket_path, (long)*pid);
  return 0;
}
