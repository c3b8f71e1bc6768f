#include "link.h"

#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "clock.h"
#include "lock.h"
#include "log.h"
#include "spawn.h"

#define DEFAULT_CALL_TIMEOUT_MS 120000UL
/* After end-of-file the helper has this long to exit on its own before it is killed. */
#define EXIT_GRACE_MS 3000L
/* A helper whose socket closed unexpectedly gets this long to finish exiting before it is killed and reaped. */
#define LOST_GRACE_MS 100L

/* A thread waiting for its reply. The waiter lives on that thread's stack. */
struct waiter {
  struct waiter *next;
  uint32_t id;
  int done;
  uint8_t *reply;
  size_t reply_len;
  pthread_cond_t cv;
};

/* A reply frame being read; it survives from one reading thread to the next. */
struct incoming {
  uint8_t header[4];
  size_t header_got;
  uint8_t *frame;
  size_t frame_len;
  size_t frame_got;
};

/* There is no reader thread (hosts may pass CKF_LIBRARY_CANT_CREATE_OS_THREADS): one of the waiting callers
 * reads the socket at a time and hands each reply to its waiter; when its own reply has arrived it passes the
 * reading role on to another waiter. */
struct link {
  int fd;
  /* The private helper's pid; 0 for a connection to the shared agent, which is no child of ours. */
  pid_t pid;
  /* "the helper (pid N)" or "the agent", for log lines. */
  char peer[40];
  unsigned long timeout_ms;

  /* Guards everything below, and the waiters' fields. */
  pthread_mutex_t mu;
  pthread_condattr_t cv_attr;
  struct waiter *waiters;
  uint32_t next_id;
  int reading; /* a caller owns `incoming` and reads the socket */
  int dead;
  int closing;
  int reported_dead;
  /* Set by the first reply; before it, a dead helper is a start-up failure that C_Initialize reports. */
  int answered;
  int reaped;

  struct incoming incoming; /* owned by the reading caller */

  /* The global lock: one writer at a time on the socket. */
  struct lock writer;
};

enum read_result { READ_FRAME, READ_TIMEOUT, READ_CLOSED };

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

/* Reads whatever is available towards the next frame, waiting at most until deadline. */
static int read_some(int fd, uint8_t *p, size_t n, const struct timespec *deadline, size_t *got) {
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int ready = poll(&pfd, 1, clock_ms_until(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return READ_CLOSED;
    if (ready == 0) return READ_TIMEOUT;
    ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (r <= 0) return READ_CLOSED;
    *got += (size_t)r;
    return READ_FRAME;
  }
}

/* Called by the reading caller without mu. On READ_FRAME, *frame is a complete malloc'd reply frame. */
static enum read_result read_frame(struct link *link, const struct timespec *deadline, uint8_t **frame,
                                   size_t *frame_len) {
  struct incoming *in = &link->incoming;
  while (in->header_got < sizeof in->header) {
    int r = read_some(link->fd, in->header + in->header_got, sizeof in->header - in->header_got, deadline,
                      &in->header_got);
    if (r != READ_FRAME) return r;
  }
  if (in->frame == NULL) {
    uint32_t len = wire_get_u32(in->header);
    if (len < WIRE_REPLY_MIN || len > WIRE_MAX_FRAME) {
      log_error("protocol error: the helper sent a frame of %u bytes; dropping the link", len);
      return READ_CLOSED;
    }
    in->frame = malloc(len);
    if (in->frame == NULL) {
      log_error("out of memory reading a %u-byte reply; dropping the link", len);
      return READ_CLOSED;
    }
    in->frame_len = len;
    in->frame_got = 0;
  }
  while (in->frame_got < in->frame_len) {
    int r = read_some(link->fd, in->frame + in->frame_got, in->frame_len - in->frame_got, deadline, &in->frame_got);
    if (r != READ_FRAME) return r;
  }
  *frame = in->frame;
  *frame_len = in->frame_len;
  memset(in, 0, sizeof *in);
  return READ_FRAME;
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

/* Caller holds mu. */
static void mark_dead(struct link *link) {
  link->dead = 1;
  for (struct waiter *w = link->waiters; w != NULL; w = w->next) pthread_cond_signal(&w->cv);
}

static void describe_exit(pid_t pid, int status);

/* Waits up to grace_ms for the helper to exit by itself, then kills it; either way it is reaped. A host that reaps
 * its own children (SIGCHLD ignored, a waitpid(-1) loop) may have done it already. */
static void reap_within(struct link *link, long grace_ms, int complain) {
  int status = 0;
  for (long waited = 0; waited < grace_ms; waited += 5) {
    pid_t got = waitpid(link->pid, &status, WNOHANG);
    if (got == link->pid) {
      describe_exit(link->pid, status);
      return;
    }
    if (got < 0 && errno != EINTR) return;
    clock_sleep_ms(5);
  }
  if (complain) log_error("the helper (pid %ld) did not exit after its socket closed; killing it", (long)link->pid);
  /* Still our unreaped child, so the pid cannot belong to another process. */
  kill(link->pid, SIGKILL);
  while (waitpid(link->pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!complain) log_debug("stopped the helper (pid %ld)", (long)link->pid);
}

/* Caller holds mu. A helper that was lost (its socket closed, or it stopped answering) is reaped at once, so that
 * no zombie waits for C_Finalize and nothing it still runs can reach the vault or the application. The module
 * installs no SIGCHLD handler: the host's signal disposition stays its own. */
static void reap_lost(struct link *link) {
  if (link->reaped || link->pid == 0) return;
  link->reaped = 1;
  reap_within(link, LOST_GRACE_MS, 0);
}

/* Caller holds mu. A helper that has exited may still have its socket open for a moment (the kernel closes an
 * exiting task's files asynchronously), and a request sent then would be lost in flight; asking first costs one
 * waitpid. A host that reaps its own children makes this answer "no", and the send finds out instead. */
static int helper_exited(struct link *link) {
  if (link->pid == 0 || link->reaped) return 0;
  int status = 0;
  if (waitpid(link->pid, &status, WNOHANG) != link->pid) return 0;
  link->reaped = 1;
  describe_exit(link->pid, status);
  return 1;
}

/* Caller holds mu: the link cannot be used any more; wakes every waiter and, unless C_Finalize is closing it,
 * reaps the helper. */
static void drop_link(struct link *link) {
  mark_dead(link);
  shutdown(link->fd, SHUT_RDWR);
  if (!link->closing) reap_lost(link);
}

/* Caller holds mu. */
static void deliver(struct link *link, uint8_t *frame, size_t len) {
  uint32_t id = wire_get_u32(frame);
  if (id == 0) {
    /* An agent's log line for this host (request ids are never 0): the host's stderr, where a private helper's
     * lines go directly. */
    struct rbuf r;
    const uint8_t *line = NULL;
    size_t line_len = 0;
    rbuf_init(&r, frame + WIRE_REPLY_MIN, len - WIRE_REPLY_MIN);
    rbuf_bytes(&r, &line, &line_len);
    if (rbuf_done(&r)) log_forward((const char *)line, line_len);
    free(frame);
    return;
  }
  for (struct waiter *w = link->waiters; w != NULL; w = w->next) {
    if (w->id == id) {
      link->answered = 1;
      remove_waiter(link, w);
      w->reply = frame;
      w->reply_len = len;
      w->done = 1;
      pthread_cond_signal(&w->cv);
      return;
    }
  }
  log_debug("dropped a reply for request %u that nobody waits for (timed out?)", id);
  free(frame);
}

/* Caller holds mu: gives the reading role to a thread that still waits, if any. */
static void pass_reading_on(struct link *link) {
  link->reading = 0;
  if (link->waiters != NULL) pthread_cond_signal(&link->waiters->cv);
}

/* Caller holds mu. Logs once per link so that a dead helper does not flood the host's stderr. */
static void report_dead(struct link *link, const char *function) {
  if (link->reported_dead || link->closing || !link->answered) return;
  link->reported_dead = 1;
  log_error("%s: the helper is gone; returning CKR_DEVICE_ERROR", function);
}

/* Caller holds mu: the reading caller saw end-of-file or a broken frame. */
static void lose_connection(struct link *link) {
  if (link->dead) return;
  if (!link->closing && !link->answered) {
    log_error("%s stopped before answering C_Initialize", link->peer);
  } else if (!link->closing) {
    log_error("lost the connection to %s; calls in flight fail with CKR_DEVICE_ERROR and the next call starts a new "
              "helper",
              link->peer);
  }
  drop_link(link);
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

  if (agent_connect(&link->fd) == 0) {
    link->pid = 0;
    snprintf(link->peer, sizeof link->peer, "the agent");
  } else if (spawn_helper(&link->fd, &link->pid) == 0) {
    snprintf(link->peer, sizeof link->peer, "the helper (pid %ld)", (long)link->pid);
  } else {
    lock_destroy(&link->writer);
    pthread_condattr_destroy(&link->cv_attr);
    pthread_mutex_destroy(&link->mu);
    free(link);
    *rv = CKR_GENERAL_ERROR;
    return NULL;
  }
  set_send_timeout(link->fd, link->timeout_ms);
  return link;
}

/* Caller holds mu. Ids wrap after 2^32 calls; skip any still in flight. */
static uint32_t fresh_id(struct link *link) {
  for (;;) {
    uint32_t id = link->next_id++;
    if (id == 0) continue; /* 0 marks an agent's log frames */
    int in_use = 0;
    for (struct waiter *w = link->waiters; w != NULL && !in_use; w = w->next) in_use = w->id == id;
    if (!in_use) return id;
  }
}

/* Caller holds mu and the reading role; returns with mu held. Reads replies, handing each to its waiter, until
 * w's own reply arrives, the deadline passes or the connection is lost. */
static int read_until_answered(struct link *link, struct waiter *w, const struct timespec *deadline) {
  int timed_out = 0;
  while (!w->done && !link->dead && !timed_out) {
    pthread_mutex_unlock(&link->mu);
    uint8_t *frame = NULL;
    size_t len = 0;
    enum read_result r = read_frame(link, deadline, &frame, &len);
    pthread_mutex_lock(&link->mu);
    if (r == READ_FRAME) {
      deliver(link, frame, len);
    } else if (r == READ_TIMEOUT) {
      timed_out = 1;
    } else {
      lose_connection(link);
    }
  }
  pass_reading_on(link);
  return timed_out;
}

/* Caller holds mu; returns with mu held. Waits as a follower, taking the reading role when it is free. */
static int wait_for_reply(struct link *link, struct waiter *w, const struct timespec *deadline) {
  int timed_out = 0;
  while (!w->done && !link->dead && !timed_out) {
    if (!link->reading) {
      link->reading = 1;
      timed_out = read_until_answered(link, w, deadline);
    } else {
      timed_out = pthread_cond_timedwait(&w->cv, &link->mu, deadline) == ETIMEDOUT;
    }
  }
  return timed_out;
}

CK_RV link_call(struct link *link, struct wbuf *request, const char *function, uint8_t **reply, size_t *reply_len,
                int *unsent) {
  *unsent = 0;
  /* A cancelled thread holding the reading role would leave every other call waiting for nothing. */
  int cancel_state;
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);

  struct waiter w;
  memset(&w, 0, sizeof w);
  pthread_cond_init(&w.cv, &link->cv_attr);

  pthread_mutex_lock(&link->mu);
  if (!link->dead && helper_exited(link)) {
    log_debug("%s has exited; this call starts a new helper", link->peer);
    drop_link(link);
  }
  if (link->dead) {
    *unsent = 1;
    pthread_mutex_unlock(&link->mu);
    pthread_cond_destroy(&w.cv);
    pthread_setcancelstate(cancel_state, NULL);
    return CKR_DEVICE_ERROR;
  }
  w.id = fresh_id(link);
  w.next = link->waiters;
  link->waiters = &w;
  pthread_mutex_unlock(&link->mu);

  wbuf_seal(request, w.id);
  size_t sent = 0;
  int send_failed = 1;
  if (lock_acquire(&link->writer) == CKR_OK) {
    send_failed = !wire_send_all(link->fd, request->data, request->len, &sent);
    lock_release(&link->writer);
  }

  pthread_mutex_lock(&link->mu);
  if (send_failed && !link->dead) {
    /* A partial frame would desynchronise the stream: the link is unusable from here on. */
    if (sent == 0 && link->answered) {
      log_debug("%s: %s is gone (%s)", function, link->peer,
                strerror(errno));
    } else {
      log_error("%s: cannot send to the helper: %s", function, strerror(errno));
    }
    drop_link(link);
  }
  if (send_failed && sent == 0) {
    /* Nothing reached a helper, so the call can run on a new one as if it had just been made. */
    *unsent = 1;
    remove_waiter(link, &w);
  } else {
    struct timespec deadline = clock_after_ms(link->timeout_ms);
    int timed_out = wait_for_reply(link, &w, &deadline);
    if (!w.done) {
      remove_waiter(link, &w);
      if (timed_out && !link->dead) {
        /* The helper may still act on the call later; a call reported as failed must have no effect, so this
         * helper goes, and with it whatever it was doing. The next call starts a new one. */
        log_error("%s: %s did not answer within %lu ms (AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS); %s and returning "
                  "CKR_DEVICE_ERROR",
                  function, link->peer, link->timeout_ms, link->pid != 0 ? "stopping it" : "closing the connection");
        drop_link(link);
      } else {
        *unsent = 2;
        report_dead(link, function);
      }
    }
  }
  /* A follower that was handed the reading role just as it timed out passes it on. */
  if (!link->reading && link->waiters != NULL) pthread_cond_signal(&link->waiters->cv);
  pthread_mutex_unlock(&link->mu);
  pthread_cond_destroy(&w.cv);
  pthread_setcancelstate(cancel_state, NULL);

  if (!w.done) return CKR_DEVICE_ERROR;
  *reply = w.reply;
  *reply_len = w.reply_len;
  return CKR_OK;
}

int link_is_dead(struct link *link) {
  pthread_mutex_lock(&link->mu);
  int dead = link->dead;
  pthread_mutex_unlock(&link->mu);
  return dead;
}

pid_t link_pid(const struct link *link) { return link->pid; }

const char *link_peer(const struct link *link) { return link->peer; }

unsigned long link_timeout_ms(const struct link *link) { return link->timeout_ms; }

static void describe_exit(pid_t pid, int status) {
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == 0) {
      log_debug("the helper (pid %ld) exited", (long)pid);
    } else {
      log_error("the helper (pid %ld) exited with status %d", (long)pid, WEXITSTATUS(status));
    }
  } else if (WIFSIGNALED(status)) {
    log_error("the helper (pid %ld) was killed by signal %d", (long)pid, WTERMSIG(status));
  }
}

/* The helper exits on end-of-file; one that does not is killed so that C_Finalize cannot hang. */
static void reap(struct link *link) { reap_within(link, EXIT_GRACE_MS, 1); }

void link_expect_exit(struct link *link) {
  pthread_mutex_lock(&link->mu);
  link->closing = 1;
  pthread_mutex_unlock(&link->mu);
}

void link_stop(struct link *link) {
  pthread_mutex_lock(&link->mu);
  link->closing = 1;
  int already_reaped = link->reaped;
  link->reaped = 1;
  pthread_mutex_unlock(&link->mu);
  /* Wakes a caller blocked reading: it sees end-of-file and every waiter gets CKR_DEVICE_ERROR. */
  shutdown(link->fd, SHUT_RDWR);
  if (!already_reaped && link->pid != 0) reap(link);
}

void link_free(struct link *link) {
  close(link->fd);
  free(link->incoming.frame);
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
  free(link->incoming.frame);
  free(link);
}
