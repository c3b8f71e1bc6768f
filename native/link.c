#include "link.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lock.h"
#include "log.h"
#include "spawn.h"

#define DEFAULT_CALL_TIMEOUT_MS 120000UL
/* After end-of-file the helper has this long to exit on its own before it is killed. */
#define EXIT_GRACE_MS 3000L

struct waiter {
  struct waiter *next;
  uint32_t id;
  int done;
  uint8_t *reply;
  size_t reply_len;
  pthread_cond_t cv;
};

struct link {
  int fd;
  pid_t pid;
  unsigned long timeout_ms;
  pthread_t reader;

  /* Guards everything below, and the waiters' fields. */
  pthread_mutex_t mu;
  pthread_condattr_t cv_attr;
  struct waiter *waiters;
  uint32_t next_id;
  int dead;
  int closing;
  int reported_dead;
  /* Set by the first reply; before it, a dead helper is a start-up failure that C_Initialize reports. */
  int answered;

  /* The global lock: one writer at a time on the socket. */
  struct lock writer;
};

static unsigned long read_timeout_ms(void) {
  const char *text = getenv("AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS");
  if (text == NULL || text[0] == '\0') return DEFAULT_CALL_TIMEOUT_MS;
  char *end = NULL;
  errno = 0;
  unsigned long value = strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0' || value == 0 || text[0] == '-') {
    log_error("AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS=%s is not a positive number of milliseconds; using %lu", text,
              DEFAULT_CALL_TIMEOUT_MS);
    return DEFAULT_CALL_TIMEOUT_MS;
  }
  return value;
}

static int read_full(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t got = recv(fd, p, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    p += got;
    n -= (size_t)got;
  }
  return 1;
}

static int send_full(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return 0;
    p += sent;
    n -= (size_t)sent;
  }
  return 1;
}

/* Caller holds mu. */
static void mark_dead(struct link *link) {
  link->dead = 1;
  for (struct waiter *w = link->waiters; w != NULL; w = w->next) pthread_cond_signal(&w->cv);
}

/* Caller holds mu. */
static void remove_waiter(struct link *link, struct waiter *target) {
  for (struct waiter **w = &link->waiters; *w != NULL; w = &(*w)->next) {
    if (*w == target) {
      *w = target->next;
      return;
    }
  }
}

static void describe_exit(pid_t pid, int status, int expected) {
  if (WIFEXITED(status)) {
    if (expected && WEXITSTATUS(status) == 0) {
      log_debug("the helper (pid %ld) exited", (long)pid);
    } else {
      log_error("the helper (pid %ld) exited with status %d", (long)pid, WEXITSTATUS(status));
    }
  } else if (WIFSIGNALED(status)) {
    log_error("the helper (pid %ld) was killed by signal %d", (long)pid, WTERMSIG(status));
  }
}

/* The helper exits on end-of-file; one that does not is killed so that C_Finalize cannot hang. */
static void reap(struct link *link, int expected) {
  int status = 0;
  for (long waited = 0; waited < EXIT_GRACE_MS; waited += 10) {
    pid_t got = waitpid(link->pid, &status, WNOHANG);
    if (got == link->pid) {
      describe_exit(link->pid, status, expected);
      return;
    }
    if (got < 0) return; /* Already reaped by the host (SIGCHLD ignored or a waitpid(-1) loop). */
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    nanosleep(&ten_ms, NULL);
  }
  log_error("the helper (pid %ld) did not exit after its socket closed; killing it", (long)link->pid);
  kill(link->pid, SIGKILL);
  while (waitpid(link->pid, &status, 0) < 0 && errno == EINTR) {
  }
}

static void deliver(struct link *link, uint8_t *frame, size_t len) {
  uint32_t id = wire_get_u32(frame);
  pthread_mutex_lock(&link->mu);
  for (struct waiter *w = link->waiters; w != NULL; w = w->next) {
    if (w->id == id) {
      link->answered = 1;
      remove_waiter(link, w);
      w->reply = frame;
      w->reply_len = len;
      w->done = 1;
      pthread_cond_signal(&w->cv);
      pthread_mutex_unlock(&link->mu);
      return;
    }
  }
  pthread_mutex_unlock(&link->mu);
  log_debug("dropped a reply for request %u that nobody waits for (timed out?)", id);
  free(frame);
}

static void *reader_main(void *arg) {
  struct link *link = arg;
  for (;;) {
    uint8_t header[4];
    if (!read_full(link->fd, header, sizeof header)) break;
    uint32_t len = wire_get_u32(header);
    if (len < WIRE_REPLY_MIN || len > WIRE_MAX_FRAME) {
      log_error("protocol error: the helper sent a frame of %u bytes; dropping the link", len);
      break;
    }
    uint8_t *frame = malloc(len);
    if (frame == NULL) {
      log_error("out of memory reading a %u-byte reply; dropping the link", len);
      break;
    }
    if (!read_full(link->fd, frame, len)) {
      free(frame);
      break;
    }
    deliver(link, frame, len);
  }

  pthread_mutex_lock(&link->mu);
  int expected = link->closing;
  int answered = link->answered;
  mark_dead(link);
  pthread_mutex_unlock(&link->mu);
  shutdown(link->fd, SHUT_RDWR);
  if (!expected && !answered) {
    log_error("the helper (pid %ld) stopped before answering C_Initialize", (long)link->pid);
  } else if (!expected) {
    log_error("lost the connection to the helper (pid %ld); calls fail with CKR_DEVICE_ERROR until C_Finalize and "
              "C_Initialize",
              (long)link->pid);
  }
  reap(link, expected);
  return NULL;
}

/* The reader must not run the host's signal handlers. */
static int start_reader(struct link *link) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&link->reader, NULL, reader_main, link);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

static void set_send_timeout(int fd, unsigned long timeout_ms) {
  struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000), .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

struct link *link_open(const CK_C_INITIALIZE_ARGS *args, CK_RV *rv) {
  struct link *link = calloc(1, sizeof *link);
  if (link == NULL) {
    *rv = CKR_HOST_MEMORY;
    return NULL;
  }
  *rv = lock_init(&link->writer, args);
  if (*rv != CKR_OK) {
    free(link);
    return NULL;
  }
  pthread_mutex_init(&link->mu, NULL);
  pthread_condattr_init(&link->cv_attr);
  pthread_condattr_setclock(&link->cv_attr, CLOCK_MONOTONIC);
  link->timeout_ms = read_timeout_ms();
  link->next_id = 1;

  if (spawn_helper(&link->fd, &link->pid) != 0) {
    *rv = CKR_GENERAL_ERROR;
    goto fail;
  }
  set_send_timeout(link->fd, link->timeout_ms);
  if (start_reader(link) != 0) {
    log_error("cannot start the reader thread");
    close(link->fd);
    kill(link->pid, SIGKILL);
    while (waitpid(link->pid, NULL, 0) < 0 && errno == EINTR) {
    }
    *rv = CKR_GENERAL_ERROR;
    goto fail;
  }
  return link;

fail:
  lock_destroy(&link->writer);
  pthread_condattr_destroy(&link->cv_attr);
  pthread_mutex_destroy(&link->mu);
  free(link);
  return NULL;
}

/* Caller holds mu. Ids wrap after 2^32 calls; skip any still in flight. */
static uint32_t fresh_id(struct link *link) {
  for (;;) {
    uint32_t id = link->next_id++;
    int in_use = 0;
    for (struct waiter *w = link->waiters; w != NULL && !in_use; w = w->next) in_use = w->id == id;
    if (!in_use) return id;
  }
}

static struct timespec deadline_after(unsigned long ms) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += (time_t)(ms / 1000);
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec += 1;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

/* Caller holds mu. Logs once per link so that a dead helper does not flood the host's stderr. */
static void report_dead(struct link *link, const char *function) {
  if (link->reported_dead || link->closing || !link->answered) return;
  link->reported_dead = 1;
  log_error("%s: the helper is gone; returning CKR_DEVICE_ERROR", function);
}

CK_RV link_call(struct link *link, struct wbuf *request, const char *function, uint8_t **reply,
                size_t *reply_len) {
  struct waiter w;
  memset(&w, 0, sizeof w);
  pthread_cond_init(&w.cv, &link->cv_attr);

  pthread_mutex_lock(&link->mu);
  if (link->dead) {
    report_dead(link, function);
    pthread_mutex_unlock(&link->mu);
    pthread_cond_destroy(&w.cv);
    return CKR_DEVICE_ERROR;
  }
  w.id = fresh_id(link);
  w.next = link->waiters;
  link->waiters = &w;
  pthread_mutex_unlock(&link->mu);

  wbuf_seal(request, w.id);
  int sent = 0;
  if (lock_acquire(&link->writer) == CKR_OK) {
    sent = send_full(link->fd, request->data, request->len);
    lock_release(&link->writer);
  }

  pthread_mutex_lock(&link->mu);
  if (!sent && !link->dead) {
    /* A partial frame would desynchronise the stream: the link is unusable from here on. */
    log_error("%s: cannot send to the helper: %s", function, strerror(errno));
    mark_dead(link);
    shutdown(link->fd, SHUT_RDWR);
  }
  struct timespec deadline = deadline_after(link->timeout_ms);
  int timed_out = 0;
  while (!w.done && !link->dead && !timed_out) {
    timed_out = pthread_cond_timedwait(&w.cv, &link->mu, &deadline) == ETIMEDOUT;
  }
  if (!w.done) remove_waiter(link, &w);
  if (!w.done && timed_out && !link->dead) {
    log_error("%s: the helper did not answer within %lu ms (AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS); returning "
              "CKR_DEVICE_ERROR",
              function, link->timeout_ms);
  } else if (!w.done) {
    report_dead(link, function);
  }
  pthread_mutex_unlock(&link->mu);
  pthread_cond_destroy(&w.cv);

  if (!w.done) return CKR_DEVICE_ERROR;
  *reply = w.reply;
  *reply_len = w.reply_len;
  return CKR_OK;
}

void link_expect_exit(struct link *link) {
  pthread_mutex_lock(&link->mu);
  link->closing = 1;
  pthread_mutex_unlock(&link->mu);
}

void link_stop(struct link *link) {
  pthread_mutex_lock(&link->mu);
  link->closing = 1;
  pthread_mutex_unlock(&link->mu);
  shutdown(link->fd, SHUT_RDWR);
  pthread_join(link->reader, NULL);
}

void link_free(struct link *link) {
  close(link->fd);
  lock_destroy(&link->writer);
  pthread_condattr_destroy(&link->cv_attr);
  pthread_mutex_destroy(&link->mu);
  free(link);
}

void link_close_inherited(struct link *link) {
  if (link->fd >= 0) close(link->fd);
  link->fd = -1;
}

void link_abandon(struct link *link) {
  /* The parent's threads, locks and helper belong to the parent; only our copy of the descriptor is ours. */
  link_close_inherited(link);
  free(link);
}
