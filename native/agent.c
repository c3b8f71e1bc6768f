#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_config.h"
#include "clock.h"
#include "function_ids.h"
#include "log.h"
#include "spawn.h"
#include "wire.h"

extern char **environ;

#define HELLO_TIMEOUT_MS 10000
/* Starting an agent is two node starts (the launcher and the agent); a loaded machine may take seconds. */
#define START_TIMEOUT_MS 15000

/* The variables that decide a process's context: the same list as src/agent/context-key.ts. */
static const char *const context_prefixes[] = {"AZURE_", "IDENTITY_", "MSI_", "IMDS_", NULL};
static const char *const context_names[] = {"NODE_EXTRA_CA_CERTS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                                            "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HOME",
                                            "XDG_CONFIG_HOME", "PATH", NULL};

struct agent_target {
  char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
  /* The default per-user folder: created here, and it must stay private. */
  int private_folder;
};

enum choice { CHOICE_DEFAULT, CHOICE_ON, CHOICE_OFF };

static enum choice env_choice(void) {
  const char *v = getenv("AZURE_KEYVAULT_PKCS11_AGENT");
  if (v == NULL || v[0] == '\0') return CHOICE_DEFAULT;
  if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0) {
    return CHOICE_ON;
  }
  if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 || strcasecmp(v, "off") == 0) {
    return CHOICE_OFF;
  }
  log_error("AZURE_KEYVAULT_PKCS11_AGENT=%s is neither 1 nor 0; ignoring it", v);
  return CHOICE_DEFAULT;
}

/* Returns 1 with *target filled when this process should use an agent. */
static int choose(struct agent_target *target) {
  struct agent_config config;
  agent_config_read(&config);
  enum choice choice = env_choice();
  if (choice == CHOICE_DEFAULT && config.agent != -1) choice = config.agent ? CHOICE_ON : CHOICE_OFF;
  if (choice == CHOICE_OFF) return 0;

  const char *explicit = getenv("AZURE_KEYVAULT_PKCS11_AGENT_SOCKET");
  if (explicit == NULL || explicit[0] == '\0') explicit = config.socket[0] != '\0' ? config.socket : NULL;
  int written;
  target->private_folder = explicit == NULL;
  if (explicit != NULL) {
    written = snprintf(target->socket, sizeof target->socket, "%s", explicit);
  } else {
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime != NULL && runtime[0] == '/') {
      written = snprintf(target->socket, sizeof target->socket, "%s/azure-keyvault-pkcs11/agent.sock", runtime);
    } else if (choice == CHOICE_ON) {
      written = snprintf(target->socket, sizeof target->socket, "/tmp/azure-keyvault-pkcs11-%ld/agent.sock",
                         (long)geteuid());
    } else {
      /* On by default only where the user has a private runtime folder (docs/agent.md). */
      return 0;
    }
  }
  if (written < 0 || (size_t)written >= sizeof target->socket) {
    log_error("the agent socket path is longer than %zu bytes; using a private helper", sizeof target->socket - 1);
    return 0;
  }
  return 1;
}

static void folder_of(const char *socket_path, char *out, size_t size) {
  snprintf(out, size, "%s", socket_path);
  char *slash = strrchr(out, '/');
  if (slash == NULL) snprintf(out, size, ".");
  else if (slash == out) out[1] = '\0';
  else *slash = '\0';
}

/* The default folder: 0700 and ours, or nobody else's agent could be trusted with our keys, nor ours with theirs. */
static int prepare_private_folder(const char *folder, char *why, size_t why_size) {
  if (mkdir(folder, 0700) != 0 && errno != EEXIST) {
    snprintf(why, why_size, "cannot create %s: %s", folder, strerror(errno));
    return 0;
  }
  struct stat st;
  if (lstat(folder, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(why, why_size, "%s is not a folder", folder);
    return 0;
  }
  if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    snprintf(why, why_size, "%s must belong to uid %ld with mode 0700 (it has uid %ld, mode %03o)", folder,
             (long)geteuid(), (long)st.st_uid, (unsigned)(st.st_mode & 0777));
    return 0;
  }
  return 1;
}

static int connect_to(const char *socket_path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  snprintf(address.sun_path, sizeof address.sun_path, "%s", socket_path);
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/* Runs the launcher and waits for it: it exits 0 once an agent listens. */
static int start_agent(const char *socket_path, char *why, size_t why_size) {
  pid_t launcher;
  if (spawn_agent_launcher(socket_path, &launcher) != 0) {
    snprintf(why, why_size, "cannot start one");
    return 0;
  }
  struct timespec deadline = clock_after_ms(START_TIMEOUT_MS);
  int status = 0;
  for (;;) {
    pid_t got = waitpid(launcher, &status, WNOHANG);
    if (got == launcher) break;
    if (got < 0 && errno != EINTR) {
      /* The host reaps children itself; the agent may still have started. */
      return 1;
    }
    if (clock_ms_until(&deadline) == 0) {
      kill(launcher, SIGKILL);
      while (waitpid(launcher, &status, 0) < 0 && errno == EINTR) {
      }
      snprintf(why, why_size, "it did not start within %d ms", START_TIMEOUT_MS);
      return 0;
    }
    clock_sleep_ms(5);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(why, why_size, "it failed to start (see agent.log beside the socket)");
    return 0;
  }
  return 1;
}

/* Connects, starting an agent first when none answers. One process at a time starts it (a lock file in the
 * folder), so that 64 processes arriving together start one agent, not 64. */
static int connect_or_start(const struct agent_target *target, char *why, size_t why_size) {
  int fd = connect_to(target->socket);
  if (fd >= 0) return fd;
  if (errno != ENOENT && errno != ECONNREFUSED) {
    snprintf(why, why_size, "cannot connect: %s", strerror(errno));
    return -1;
  }
  char folder[PATH_MAX], lock_path[PATH_MAX + 16];
  folder_of(target->socket, folder, sizeof folder);
  if (!target->private_folder) {
    /* A socket set by config or environment is started on demand only in a folder of this user's. */
    struct stat st;
    if (stat(folder, &st) != 0 || st.st_uid != geteuid()) {
      snprintf(why, why_size, "no agent answers (%s), and its folder is not this user's to start one in",
               strerror(ENOENT));
      return -1;
    }
  }
  snprintf(lock_path, sizeof lock_path, "%s/agent.lock", folder);
  int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock < 0) {
    snprintf(why, why_size, "cannot open %s: %s", lock_path, strerror(errno));
    return -1;
  }
  struct timespec deadline = clock_after_ms(START_TIMEOUT_MS);
  while (flock(lock, LOCK_EX | LOCK_NB) != 0) {
    if ((errno != EWOULDBLOCK && errno != EINTR) || clock_ms_until(&deadline) == 0) {
      snprintf(why, why_size, "cannot lock %s: %s", lock_path, errno == EWOULDBLOCK ? "another start hangs" : strerror(errno));
      close(lock);
      return -1;
    }
    clock_sleep_ms(5);
  }
  /* Whoever held the lock may have started it. */
  fd = connect_to(target->socket);
  if (fd < 0 && start_agent(target->socket, why, why_size)) {
    fd = connect_to(target->socket);
    if (fd < 0) snprintf(why, why_size, "it started but does not answer: %s", strerror(errno));
  }
  flock(lock, LOCK_UN);
  close(lock);
  return fd;
}

/* The agent must run as this user, or be a system agent (root) that admitted us by its own list. */
static int check_agent_user(int fd, char *why, size_t why_size) {
  struct ucred peer;
  socklen_t length = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    snprintf(why, why_size, "cannot read its credentials: %s", strerror(errno));
    return 0;
  }
  if (peer.uid != geteuid() && peer.uid != 0) {
    snprintf(why, why_size, "it runs as uid %ld, neither this user (%ld) nor root", (long)peer.uid, (long)geteuid());
    return 0;
  }
  return 1;
}

static int is_context_variable(const char *entry) {
  for (const char *const *prefix = context_prefixes; *prefix != NULL; prefix++) {
    if (strncmp(entry, *prefix, strlen(*prefix)) == 0) return 1;
  }
  for (const char *const *name = context_names; *name != NULL; name++) {
    size_t n = strlen(*name);
    if (strncmp(entry, *name, n) == 0 && entry[n] == '=') return 1;
  }
  return 0;
}

static int recv_all(int fd, uint8_t *p, size_t n, const struct timespec *deadline) {
  while (n > 0) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int left = clock_ms_until(deadline);
    if (left <= 0 || poll(&pfd, 1, left) <= 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    ssize_t got = recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    p += got;
    n -= (size_t)got;
  }
  return 1;
}

enum hello_result { HELLO_OK, HELLO_DECLINED, HELLO_FAILED };

/* Tells the agent which context this process belongs to (docs/protocol.md, AgentHello). */
static enum hello_result hello(int fd, char *why, size_t why_size) {
  struct wbuf b;
  wbuf_start(&b, FN_AgentHello);
  uint32_t count = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++) count += is_context_variable(*e);
  wbuf_u32(&b, count);
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (is_context_variable(*e)) wbuf_bytes(&b, *e, strlen(*e));
  }
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == NULL) cwd[0] = '\0';
  wbuf_bytes(&b, cwd, strlen(cwd));
  wbuf_seal(&b, 1);
  enum hello_result result = HELLO_FAILED;
  size_t sent = 0;
  uint8_t header[4], reply[WIRE_REPLY_MIN];
  struct timespec deadline = clock_after_ms(HELLO_TIMEOUT_MS);
  if (b.error != WIRE_OK) {
    snprintf(why, why_size, "the environment is too large to send");
  } else if (!wire_send_all(fd, b.data, b.len, &sent) || !recv_all(fd, header, sizeof header, &deadline)) {
    snprintf(why, why_size, "it closed the connection or did not answer within %d ms", HELLO_TIMEOUT_MS);
  } else if (wire_get_u32(header) != WIRE_REPLY_MIN || !recv_all(fd, reply, sizeof reply, &deadline) ||
             wire_get_u32(reply) != 1) {
    snprintf(why, why_size, "its answer to the hello is malformed");
  } else {
    struct rbuf r;
    rbuf_init(&r, reply + 4, sizeof reply - 4);
    CK_RV rv = rbuf_ulong(&r);
    if (rv == CKR_OK) {
      result = HELLO_OK;
    } else if (rv == CKR_FUNCTION_NOT_SUPPORTED) {
      result = HELLO_DECLINED;
    } else {
      snprintf(why, why_size, "it refused the hello (0x%lx)", (unsigned long)rv);
    }
  }
  wbuf_free(&b);
  return result;
}

int agent_connect(int *fd_out) {
  struct agent_target target;
  if (!choose(&target)) return -1;
  char why[PATH_MAX + 128] = "";
  char folder[PATH_MAX];
  folder_of(target.socket, folder, sizeof folder);
  int fd = -1;
  if (target.private_folder && !prepare_private_folder(folder, why, sizeof why)) {
    fd = -1;
  } else {
    fd = connect_or_start(&target, why, sizeof why);
  }
  if (fd >= 0 && !check_agent_user(fd, why, sizeof why)) {
    close(fd);
    fd = -1;
  }
  if (fd >= 0) {
    enum hello_result result = hello(fd, why, sizeof why);
    if (result != HELLO_OK) {
      close(fd);
      fd = -1;
      if (result == HELLO_DECLINED) {
        log_debug("the config says \"agent\": false; using a private helper");
        return -1;
      }
    }
  }
  if (fd < 0) {
    log_error("cannot use the agent at %s: %s; using a private helper", target.socket, why);
    return -1;
  }
  log_debug("connected to the agent at %s", target.socket);
  *fd_out = fd;
  return 0;
}
