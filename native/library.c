#include "library.h"

#include <pthread.h>
#include <unistd.h>

#include "log.h"

/* Serialises C_Initialize and C_Finalize; never held by ordinary calls. */
static pthread_mutex_t lifecycle_mu = PTHREAD_MUTEX_INITIALIZER;
/* Guards the fields below; held only for a few instructions, so the fork handlers can take it. */
static pthread_mutex_t state_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained_cv = PTHREAD_COND_INITIALIZER;
static int initialized;
static pid_t owner_pid;
static struct link *current;
static int active_calls;

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&state_mu); }
static void after_fork_in_parent(void) { pthread_mutex_unlock(&state_mu); }

/* Only the forking thread exists in the child: calls other threads had in flight never finish there, and a
 * C_Initialize or C_Finalize that was running in another thread can never release its lock. */
static void after_fork_in_child(void) {
  active_calls = 0;
  if (initialized && current != NULL) link_close_inherited(current);
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

CK_RV library_initialize(const CK_C_INITIALIZE_ARGS *args, CK_RV (*handshake)(struct link *link, CK_FLAGS flags)) {
  pthread_once(&fork_handlers_once, register_fork_handlers);
  pthread_mutex_lock(&lifecycle_mu);

  struct link *inherited = NULL;
  pthread_mutex_lock(&state_mu);
  if (initialized && owner_pid == getpid()) {
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
  pthread_mutex_unlock(&state_mu);
  pthread_mutex_unlock(&lifecycle_mu);
  return CKR_OK;
}

CK_RV library_finalize(CK_RV (*goodbye)(struct link *link)) {
  pthread_mutex_lock(&lifecycle_mu);
  pthread_mutex_lock(&state_mu);
  if (!initialized || owner_pid != getpid()) {
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

  pthread_mutex_unlock(&lifecycle_mu);
  return CKR_OK;
}

CK_RV library_enter(struct link **link) {
  pthread_mutex_lock(&state_mu);
  if (!initialized || owner_pid != getpid()) {
    pthread_mutex_unlock(&state_mu);
    return CKR_CRYPTOKI_NOT_INITIALIZED;
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
  CK_RV rv = initialized && owner_pid == getpid() ? CKR_OK : CKR_CRYPTOKI_NOT_INITIALIZED;
  pthread_mutex_unlock(&state_mu);
  return rv;
}

/* A host that unloads the module without C_Finalize would otherwise keep the helper running until it exits. The
 * helper sees end-of-file and exits. */
__attribute__((destructor)) static void library_unload(void) {
  if (pthread_mutex_trylock(&state_mu) != 0) return;
  struct link *link = initialized && owner_pid == getpid() ? current : NULL;
  initialized = 0;
  current = NULL;
  pthread_mutex_unlock(&state_mu);
  if (link != NULL) link_stop(link);
}
