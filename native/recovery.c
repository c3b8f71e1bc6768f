#include "recovery.h"

#include <pthread.h>
#include <stdlib.h>

struct recorded_session {
  CK_SESSION_HANDLE handle;
  CK_SLOT_ID slot;
  CK_FLAGS flags;
};

struct recorded_login {
  CK_SLOT_ID slot;
  CK_USER_TYPE user_type;
};

static pthread_mutex_t record_mu = PTHREAD_MUTEX_INITIALIZER;
static struct recorded_session *sessions;
static size_t session_count, session_capacity;
/* Login state is per slot; applications log in to few slots, so a short array does. */
static struct recorded_login *logins;
static size_t login_count, login_capacity;

static int grow(void **items, size_t *capacity, size_t count, size_t item_size) {
  if (count < *capacity) return 1;
  size_t next = *capacity == 0 ? 16 : *capacity * 2;
  void *bigger = realloc(*items, next * item_size);
  if (bigger == NULL) return 0;
  *items = bigger;
  *capacity = next;
  return 1;
}

/* Caller holds record_mu. */
static struct recorded_session *find_session(CK_SESSION_HANDLE handle) {
  for (size_t i = 0; i < session_count; i++) {
    if (sessions[i].handle == handle) return &sessions[i];
  }
  return NULL;
}

/* Caller holds record_mu. */
static void forget_login(CK_SLOT_ID slot) {
  for (size_t i = 0; i < login_count; i++) {
    if (logins[i].slot == slot) {
      logins[i] = logins[--login_count];
      return;
    }
  }
}

/* Caller holds record_mu. */
static int slot_has_sessions(CK_SLOT_ID slot) {
  for (size_t i = 0; i < session_count; i++) {
    if (sessions[i].slot == slot) return 1;
  }
  return 0;
}

void recovery_reset(void) {
  pthread_mutex_lock(&record_mu);
  free(sessions);
  free(logins);
  sessions = NULL;
  logins = NULL;
  session_count = session_capacity = login_count = login_capacity = 0;
  pthread_mutex_unlock(&record_mu);
}

void recovery_session_opened(CK_SESSION_HANDLE session, CK_SLOT_ID slot, CK_FLAGS flags) {
  pthread_mutex_lock(&record_mu);
  /* Out of memory only costs this session its survival of a helper restart. */
  if (grow((void **)&sessions, &session_capacity, session_count, sizeof *sessions)) {
    sessions[session_count++] = (struct recorded_session){.handle = session, .slot = slot, .flags = flags};
  }
  pthread_mutex_unlock(&record_mu);
}

void recovery_session_closed(CK_SESSION_HANDLE session) {
  pthread_mutex_lock(&record_mu);
  struct recorded_session *found = find_session(session);
  if (found != NULL) {
    CK_SLOT_ID slot = found->slot;
    *found = sessions[--session_count];
    if (!slot_has_sessions(slot)) forget_login(slot);
  }
  pthread_mutex_unlock(&record_mu);
}

void recovery_slot_closed(CK_SLOT_ID slot) {
  pthread_mutex_lock(&record_mu);
  size_t kept = 0;
  for (size_t i = 0; i < session_count; i++) {
    if (sessions[i].slot != slot) sessions[kept++] = sessions[i];
  }
  session_count = kept;
  forget_login(slot);
  pthread_mutex_unlock(&record_mu);
}

void recovery_logged_in(CK_SESSION_HANDLE session, CK_USER_TYPE user_type) {
  if (user_type != CKU_USER && user_type != CKU_SO) return;
  pthread_mutex_lock(&record_mu);
  struct recorded_session *found = find_session(session);
  if (found != NULL) {
    forget_login(found->slot);
    if (grow((void **)&logins, &login_capacity, login_count, sizeof *logins)) {
      logins[login_count++] = (struct recorded_login){.slot = found->slot, .user_type = user_type};
    }
  }
  pthread_mutex_unlock(&record_mu);
}

void recovery_logged_out(CK_SESSION_HANDLE session) {
  pthread_mutex_lock(&record_mu);
  struct recorded_session *found = find_session(session);
  if (found != NULL) forget_login(found->slot);
  pthread_mutex_unlock(&record_mu);
}

size_t recovery_encode(struct wbuf *b) {
  pthread_mutex_lock(&record_mu);
  size_t count = session_count;
  wbuf_u32(b, (uint32_t)session_count);
  for (size_t i = 0; i < session_count; i++) {
    wbuf_ulong(b, sessions[i].handle);
    wbuf_ulong(b, sessions[i].slot);
    wbuf_ulong(b, sessions[i].flags);
  }
  wbuf_u32(b, (uint32_t)login_count);
  for (size_t i = 0; i < login_count; i++) {
    wbuf_ulong(b, logins[i].slot);
    wbuf_ulong(b, logins[i].user_type);
  }
  pthread_mutex_unlock(&record_mu);
  return count;
}

void recovery_before_fork(void) { pthread_mutex_lock(&record_mu); }
void recovery_after_fork(void) { pthread_mutex_unlock(&record_mu); }
