#include "library.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "recovery.h"

/* Two limits keep a helper that cannot start, or that crashes on every call, from becoming a fork loop: at most
 * REPLACEMENTS_PER_WINDOW replacements in REPLACEMENT_WINDOW_MS, and after each failed start a pause that doubles
 * from FIRST_BACKOFF_MS up to MAX_BACKOFF_MS. Calls made meanwhile return CKR_DEVICE_ERROR at once. */
#define REPLACEMENTS_PER_WINDOW 5
#define REPLACEMENT_WINDOW_MS 10000L
#define FIRST_BACKOFF_MS 500L
#define MAX_BACKOFF_MS 60000L

/* Serialises C_Initialize and C_Finalize; never held by ordinary calls. */
static pthread_mutex_t lifecycle_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guards the fields below; held only for a few instructions, so the fork handlers can take it. */
static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained_cv = PTHREAD_COND_INITIALIZER;
static int initialized;
static pid_t owner_pid;
static struct link *current;
static int active_calls;

/* What C_Initialize was given, so that a replacement helper starts the same way. */
static CK_C_INITIALIZE_ARGS init_args;
static int has_init_args;
static library_handshake_fn init_handshake;
/* When the last replacements started (a ring, oldest at replacement_next), failed starts in a row, and when the
 * next start may be tried after them. */
static struct timespec replacement_times[REPLACEMENTS_PER_WINDOW];
static unsigned replacement_next;
static unsigned failed_starts;
static struct timespec next_attempt;
static int backoff_logged;

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

/* Caller holds state_mu. A forked child inherits `initialized` but not the right to use the parent's helper. */
static int initialized_here(void) { return initialized && owner_pid == getpid(); }

static void before_fork(void) {
  pthread_mutex_lock(&state_mu);
  recovery_before_fork();
}
static void after_fork_in_parent(void) {
  recovery_after_fork();
  pthread_mutex_unlock(&state_mu);
}

/* Only the forking thread exists in the child: calls other threads had in flight never finish there, and a
 * C_Initialize or C_Finalize that was running in another thread can never release its lock. */
static void after_fork_in_child(void) {
  active_calls = 0;
  if (initialized && current != NULL) link_close_inherited(current);
  recovery_after_fork();
  pthread_mutex_init(&lifecycle_mu, NULL);
  pthread_cond_init(&drained_cv, NULL);
  pthread_mutex_unlock(&state_mu);
}

static void register_fork_handlers(void) {
  pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

CK_RV library_check_init_args(const CK_C_INITIALIZE_ARGS *args) {
  if (args == NULL) return CKR_OK;
  if (args->pReserved != NULL) return CKR_ARGUMENTS_BAD;
  int supplied = (args->CreateMutex != NULL) + (args->DestroyMutex != NULL) + (args->LockMutex != NULL) +
                 (args->UnlockMutex != NULL);
  if (supplied != 0 && supplied != 4) return CKR_ARGUMENTS_BAD;
  /* CKF_LIBRARY_CANT_CREATE_OS_THREADS (GnuTLS, hence p11tool, passes it) needs nothing: the module creates no
   * thread; it spawns a process, and callers read their own replies. */
  return CKR_OK;
}

CK_RV library_initialize(const CK_C_INITIALIZE_ARGS *args, library_handshake_fn handshake) {
  pthread_once(&fork_handlers_once, register_fork_handlers);
  pthread_mutex_lock(&lifecycle_mu);

  struct link *inherited = NULL;
  pthread_mutex_lock(&state_mu);
  if (initialized_here()) {
    pthread_mutex_unlock(&state_mu);
    pthread_mutex_unlock(&lifecycle_mu);
    return CKR_CRYPTOKI_ALREADY_INITIALIZED;
  }
  if (initialized) {
    inherited = current;
    current = NULL;
    initialized = 0;
  }
  pthread_mutex_unlock(&state_mu);
  if (inherited != NULL) {
    log_debug("C_Initialize in a forked child (pid %ld): leaving the parent's helper alone", (long)getpid());
    link_abandon(inherited);
  }

  log_configure();
  recovery_reset();
  CK_RV rv = CKR_OK;
  struct link *link = link_open(args, &rv);
  if (link == NULL) {
    pthread_mutex_unlock(&lifecycle_mu);
    return rv;
  }
  rv = handshake(link, args != NULL ? args->flags : 0);
  if (rv != CKR_OK) {
    link_stop(link);
    link_free(link);
    pthread_mutex_unlock(&lifecycle_mu);
    return rv;
  }

  pthread_mutex_lock(&state_mu);
  current = link;
  owner_pid = getpid();
  initialized = 1;
  active_calls = 0;
  has_init_args = args != NULL;
  if (args != NULL) init_args = *args;
  init_handshake = handshake;
  memset(replacement_times, 0, sizeof replacement_times);
  replacement_next = 0;
  failed_starts = 0;
  memset(&next_attempt, 0, sizeof next_attempt);
  backoff_logged = 0;
  pthread_mutex_unlock(&state_mu);
  pthread_mutex_unlock(&lifecycle_mu);
  return CKR_OK;
}

CK_RV library_finalize(CK_RV (*goodbye)(struct link *link)) {
  pthread_mutex_lock(&lifecycle_mu);
  pthread_mutex_lock(&state_mu);
  if (!initialized_here()) {
    pthread_mutex_unlock(&state_mu);
    pthread_mutex_unlock(&lifecycle_mu);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  struct link *link = current;
  pthread_mutex_unlock(&state_mu);

  link_expect_exit(link);
  CK_RV rv = goodbye(link);
  if (rv != CKR_OK) log_debug("the helper answered C_Finalize with 0x%lx; finalising anyway", (unsigned long)rv);

  pthread_mutex_lock(&state_mu);
  initialized = 0;
  current = NULL;
  pthread_mutex_unlock(&state_mu);

  /* Calls still in flight get CKR_DEVICE_ERROR from the stopped link; wait for them before freeing it. */
  link_stop(link);
  pthread_mutex_lock(&state_mu);
  while (active_calls > 0) pthread_cond_wait(&drained_cv, &state_mu);
  pthread_mutex_unlock(&state_mu);
  link_free(link);
  recovery_reset();

  pthread_mutex_unlock(&lifecycle_mu);
  return CKR_OK;
}

/* Called with lifecycle_mu held, state_mu not held, and current dead. Starts a new helper, replays C_Initialize and
 * the application's open sessions and login state on it, and publishes it. The dead link is reaped already (link.c
 * kills a helper the moment it is lost); the calls still using it have all failed and drain at once. */
static CK_RV replace_helper(struct link *dead) {
  const struct timespec *oldest = &replacement_times[replacement_next];
  int window_full = oldest->tv_sec != 0 && clock_ms_since(oldest) < REPLACEMENT_WINDOW_MS;
  long wait_ms = window_full ? REPLACEMENT_WINDOW_MS - clock_ms_since(oldest) : -clock_ms_since(&next_attempt);
  if (wait_ms > 0) {
    if (!backoff_logged) {
      if (window_full) {
        log_error("the helper was replaced %d times within %ld s; not starting another for %ld ms (calls return "
                  "CKR_DEVICE_ERROR until then)",
                  REPLACEMENTS_PER_WINDOW, REPLACEMENT_WINDOW_MS / 1000, wait_ms);
      } else {
        log_error("a new helper failed to start %u times in a row; not starting another for %ld ms (calls return "
                  "CKR_DEVICE_ERROR until then)",
                  failed_starts, wait_ms);
      }
      backoff_logged = 1;
    }
    return CKR_DEVICE_ERROR;
  }
  backoff_logged = 0;
  clock_gettime(CLOCK_MONOTONIC, &replacement_times[replacement_next]);
  replacement_next = (replacement_next + 1) % REPLACEMENTS_PER_WINDOW;

  pthread_mutex_lock(&state_mu);
  while (active_calls > 0) pthread_cond_wait(&drained_cv, &state_mu);
  pthread_mutex_unlock(&state_mu);

  CK_RV rv = CKR_OK;
  struct link *fresh = link_open(has_init_args ? &init_args : NULL, &rv);
  if (fresh != NULL) {
    rv = init_handshake(fresh, has_init_args ? init_args.flags : 0);
    if (rv != CKR_OK) {
      link_stop(fresh);
      link_free(fresh);
      fresh = NULL;
    }
  }
  if (fresh == NULL) {
    failed_starts++;
    long backoff = FIRST_BACKOFF_MS;
    for (unsigned i = 1; i < failed_starts && backoff < MAX_BACKOFF_MS; i++) backoff *= 2;
    next_attempt = clock_after_ms(backoff < MAX_BACKOFF_MS ? backoff : MAX_BACKOFF_MS);
    log_error("cannot start a new helper to replace %s; calls return CKR_DEVICE_ERROR", link_peer(dead));
    return CKR_DEVICE_ERROR;
  }
  failed_starts = 0;
  if (link_pid(dead) == 0 && link_pid(fresh) == 0) {
    log_error("reconnected to the agent; open sessions and login state were restored, active operations are lost");
  } else {
    log_error("%s was replaced by %s; open sessions and login state were restored, active operations are lost",
              link_peer(dead), link_peer(fresh));
  }

  pthread_mutex_lock(&state_mu);
  current = fresh;
  pthread_mutex_unlock(&state_mu);
  link_free(dead);
  return CKR_OK;
}

CK_RV library_enter(struct link **link) {
  pthread_mutex_lock(&state_mu);
  if (!initialized_here()) {
    pthread_mutex_unlock(&state_mu);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
  }
  if (link_is_dead(current)) {
    pthread_mutex_unlock(&state_mu);
    pthread_mutex_lock(&lifecycle_mu);
    pthread_mutex_lock(&state_mu);
    /* C_Finalize, or another caller's replacement, may have run while this one waited. */
    if (!initialized_here()) {
      pthread_mutex_unlock(&state_mu);
      pthread_mutex_unlock(&lifecycle_mu);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    struct link *dead = current;
    pthread_mutex_unlock(&state_mu);
    CK_RV rv = link_is_dead(dead) ? replace_helper(dead) : CKR_OK;
    pthread_mutex_unlock(&lifecycle_mu);
    if (rv != CKR_OK) return rv;
    pthread_mutex_lock(&state_mu);
    if (!initialized_here()) {
      pthread_mutex_unlock(&state_mu);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
  }
  active_calls++;
  *link = current;
  pthread_mutex_unlock(&state_mu);
  return CKR_OK;
}

void library_leave(void) {
  pthread_mutex_lock(&state_mu);
  if (--active_calls == 0) pthread_cond_broadcast(&drained_cv);
  pthread_mutex_unlock(&state_mu);
}

CK_RV library_check(void) {
  pthread_mutex_lock(&state_mu);
  CK_RV rv = initialized_here() ? CKR_OK : CKR_CRYPTOKI_NOT_INITIALIZED;
  pthread_mutex_unlock(&state_mu);
  return rv;
}

/* A host that unloads the module without C_Finalize would otherwise keep the helper running until it exits. The
 * helper sees end-of-file and exits. */
__attribute__((destructor)) static void library_unload(void) {
  if (pthread_mutex_trylock(&state_mu) != 0) return;
  struct link *link = initialized_here() ? current : NULL;
  initialized = 0;
  current = NULL;
  pthread_mutex_unlock(&state_mu);
  if (link != NULL) link_stop(link);
}
