/* A seeded random-call fuzzer for the module's PKCS#11 API (test/fuzz/api-fuzz.test.ts runs it against the real
 * helper and the emulator). Usage: api-fuzz <module.so> <seed> <calls> [big-MiB].
 *
 * It takes the v2.40 table (C_GetFunctionList) and the "PKCS 11" 3.0 interface (C_GetInterface) and calls
 * functions of either at random: valid, stale and random handles, NULL pointers, lengths from 0 to past the 64 MiB
 * frame limit (backed by one buffer of big-MiB, default 65; 0 leaves huge inputs out), random templates and
 * mechanisms with bad parameters, and C_Finalize / C_Initialize in the middle with and without mutex callbacks.
 *
 * After every call it checks what the spec (and docs/protocol.md for the choices it leaves open) guarantees: the rv
 * is a defined CKR value; no output buffer was written outside its capacity (canary bytes on both sides) or past
 * the length reported; nothing was written on an error; the length rules of CKR_OK / CKR_BUFFER_TOO_SMALL and of
 * C_GetAttributeValue; CKR_CRYPTOKI_NOT_INITIALIZED exactly when not initialised; CKR_ARGUMENTS_BAD for a NULL
 * pointer the spec forbids; no mutex left locked. CKR_DEVICE_ERROR and CKR_GENERAL_ERROR count as violations: the
 * emulator never fails, so they mean the helper died, sent a malformed reply, or threw.
 *
 * Prints "key value" lines (calls, violations, rv histogram) and exits 1 at the first violation, printing the seed,
 * the call index and the last calls made. */
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pkcs11_3.h"

#ifndef CKR_OPERATION_CANCEL_FAILED
#define CKR_OPERATION_CANCEL_FAILED 0x202UL /* 3.0 */
#endif
#ifndef CKR_AEAD_DECRYPT_FAILED
#define CKR_AEAD_DECRYPT_FAILED 0x42UL /* 3.0 */
#endif

/* ---- randomness ------------------------------------------------------------------------------------------ */

static uint64_t rng;
static uint64_t next64(void) { /* splitmix64 */
  uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return n == 0 ? 0 : next64() % n; }
static int chance(unsigned percent) { return below(100) < percent; }
#define PICK(array) ((array)[below(sizeof(array) / sizeof((array)[0]))])
static void random_bytes(void *p, size_t n) {
  uint8_t *b = p;
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next64();
}

/* ---- reporting ------------------------------------------------------------------------------------------- */

static unsigned long long seed;
static long call_index;
static const char *current_function = "-";
#define TRACE_LINES 24
static char trace[TRACE_LINES][160];

static void note(const char *fmt, ...) {
  char *line = trace[call_index % TRACE_LINES];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof trace[0], fmt, ap);
  va_end(ap);
}

static void violation(const char *fmt, ...) {
  fprintf(stderr, "VIOLATION seed %llu call %ld %s: ", seed, call_index, current_function);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nlast calls (index: call):\n");
  for (long i = call_index - TRACE_LINES + 1; i <= call_index; i++) {
    if (i >= 0) fprintf(stderr, "  %ld: %s\n", i, trace[i % TRACE_LINES]);
  }
  printf("violation seed=%llu call=%ld %s\n", seed, call_index, current_function);
  fflush(stdout);
  exit(1);
}

/* A call that does not return within this many seconds is a hang (the shim's own call timeout is 120 s). */
#define STEP_SECONDS 60

static void on_alarm(int sig) {
  (void)sig;
  /* Not async-signal-safe, but the process ends here and the main thread is blocked in the module. */
  fprintf(stderr, "HANG seed %llu call %ld %s: no return within %d s\n", seed, call_index, current_function, STEP_SECONDS);
  for (long i = call_index - TRACE_LINES + 1; i <= call_index; i++) {
    if (i >= 0) fprintf(stderr, "  %ld: %s\n", i, trace[i % TRACE_LINES]);
  }
  printf("violation seed=%llu call=%ld hang\n", seed, call_index);
  fflush(stdout);
  _exit(3);
}

/* Every CKR value PKCS#11 3.0 defines. */
static const CK_RV defined_rvs[] = {
    0x0,   0x1,   0x2,   0x3,   0x5,   0x6,   0x7,   0x8,   0x9,   0xa,   0x10,  0x11,  0x12,  0x13,  0x1b,
    0x20,  0x21,  0x30,  0x31,  0x32,  0x40,  0x41,  0x42,  0x50,  0x51,  0x54,  0x60,  0x62,  0x63,  0x64,  0x65,
    0x66,  0x67,  0x68,  0x69,  0x6a,  0x70,  0x71,  0x82,  0x90,  0x91,  0xa0,  0xa1,  0xa2,  0xa3,  0xa4,
    0xb0,  0xb1,  0xb3,  0xb4,  0xb5,  0xb6,  0xb7,  0xb8,  0xc0,  0xc1,  0xd0,  0xd1,  0xe0,  0xe1,  0xe2,
    0xf0,  0xf1,  0xf2,  0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x110, 0x112, 0x113, 0x114, 0x115, 0x120,
    0x121, 0x130, 0x140, 0x150, 0x160, 0x170, 0x180, 0x190, 0x191, 0x1a0, 0x1a1, 0x1b0, 0x1b1, 0x1b5, 0x1b6,
    0x1b7, 0x1b8, 0x1b9, 0x1ba, 0x1bb, 0x1c0, 0x1c1, 0x1c2, 0x1c3, 0x1c4, 0x200, 0x201, 0x202,
};

#define HISTOGRAM 128
static struct {
  CK_RV rv;
  long count;
} histogram[HISTOGRAM];
static long calls_made;

/* Successes per function, so that the test can tell the calls reached the helper's real work. */
#define FUNCTIONS 96
static struct {
  const char *name;
  long ok;
} successes[FUNCTIONS];

static void count_rv(CK_RV rv) {
  calls_made++;
  for (int i = 0; rv == CKR_OK && i < FUNCTIONS; i++) {
    if (successes[i].name == NULL) successes[i].name = current_function;
    if (strcmp(successes[i].name, current_function) == 0) {
      successes[i].ok++;
      break;
    }
  }
  for (int i = 0; i < HISTOGRAM; i++) {
    if (histogram[i].count == 0) histogram[i].rv = rv;
    if (histogram[i].rv == rv) {
      histogram[i].count++;
      return;
    }
  }
}

/* ---- mutex callbacks that check how the module uses them ------------------------------------------------ */

#define MUTEX_MAGIC 0x6d757478
struct fuzz_mutex {
  int magic;
  int locked;
  int destroyed;
};
static int live_mutexes, locked_mutexes, fail_next_create;

static CK_RV create_mutex(CK_VOID_PTR_PTR out) {
  if (out == NULL) violation("CreateMutex called with NULL");
  if (fail_next_create) {
    fail_next_create = 0;
    return CKR_HOST_MEMORY;
  }
  struct fuzz_mutex *m = calloc(1, sizeof *m);
  m->magic = MUTEX_MAGIC;
  live_mutexes++;
  *out = m;
  return CKR_OK;
}
static struct fuzz_mutex *mutex_of(CK_VOID_PTR p, const char *what) {
  struct fuzz_mutex *m = p;
  if (m == NULL || m->magic != MUTEX_MAGIC) violation("%s on a pointer that CreateMutex did not return", what);
  if (m->destroyed) violation("%s on a destroyed mutex", what);
  return m;
}
static CK_RV destroy_mutex(CK_VOID_PTR p) {
  struct fuzz_mutex *m = mutex_of(p, "DestroyMutex");
  if (m->locked) violation("DestroyMutex on a locked mutex");
  m->destroyed = 1; /* kept, so that a later use is caught; a handful per run */
  live_mutexes--;
  return CKR_OK;
}
static CK_RV lock_mutex(CK_VOID_PTR p) {
  struct fuzz_mutex *m = mutex_of(p, "LockMutex");
  /* The fuzzer has one thread: a second lock would deadlock a real mutex. */
  if (m->locked) violation("LockMutex on a mutex this thread already holds");
  m->locked = 1;
  locked_mutexes++;
  return CKR_OK;
}
static CK_RV unlock_mutex(CK_VOID_PTR p) {
  struct fuzz_mutex *m = mutex_of(p, "UnlockMutex");
  if (!m->locked) violation("UnlockMutex on a mutex that is not locked");
  m->locked = 0;
  locked_mutexes--;
  return CKR_OK;
}

/* ---- guarded buffers ------------------------------------------------------------------------------------- */

#define CANARY 64
#define FILL 0xc3
/* Bytes past the reported length that are checked for writes (all of them for buffers up to this size). */
#define TAIL_CHECK 65536

static uint8_t canary_byte(size_t i) { return (uint8_t)(0x5a ^ (i * 31)); }

struct guarded {
  uint8_t *base;
  size_t cap;  /* bytes between the canaries */
  size_t fill; /* bytes of the body filled with FILL (all, or the first TAIL_CHECK of a big one) */
  int shared;
};

static uint8_t *body(const struct guarded *g) { return g->base + CANARY; }

static void arm(struct guarded *g) {
  for (size_t i = 0; i < CANARY; i++) {
    g->base[i] = canary_byte(i);
    g->base[CANARY + g->cap + i] = canary_byte(i + 7);
  }
  g->fill = g->cap < TAIL_CHECK ? g->cap : TAIL_CHECK;
  memset(body(g), FILL, g->fill);
}

static void guarded_new(struct guarded *g, size_t cap) {
  g->base = malloc(cap + 2 * CANARY);
  if (g->base == NULL) {
    fprintf(stderr, "out of memory for a %zu-byte buffer\n", cap);
    exit(2);
  }
  g->cap = cap;
  g->shared = 0;
  arm(g);
}

static struct guarded big_out; /* allocated once: big-MiB */
static uint8_t *big_in;
static size_t big_bytes;

static void guarded_big(struct guarded *g, size_t cap) {
  *g = big_out;
  g->cap = cap;
  g->shared = 1;
  arm(g);
}

static void guarded_free(struct guarded *g) {
  if (!g->shared) free(g->base);
  g->base = NULL;
}

/* The canaries are intact, and nothing was written at or after `written` (the length the module reported, 0 when
 * it may not write at all). */
static void guarded_check(const struct guarded *g, size_t written, const char *what) {
  for (size_t i = 0; i < CANARY; i++) {
    if (g->base[i] != canary_byte(i)) violation("%s: byte %zd before the buffer overwritten", what, (ssize_t)i - CANARY);
    if (g->base[CANARY + g->cap + i] != canary_byte(i + 7)) {
      violation("%s: byte %zu past the end of a %zu-byte buffer overwritten", what, i, g->cap);
    }
  }
  for (size_t i = written; i < g->fill; i++) {
    if (body(g)[i] != FILL) violation("%s: byte %zu written, but the module reported %zu bytes (capacity %zu)", what, i, written, g->cap);
  }
}

/* ---- the module and what the fuzzer knows about its state ------------------------------------------------ */

static CK_FUNCTION_LIST *f2;
static CK_FUNCTION_LIST_3_0 *f3;
static int initialized;
static int uses_callbacks;

#define MAX_SESSIONS 12
struct session_entry {
  CK_SESSION_HANDLE handle;
  CK_SLOT_ID slot;
};
static struct session_entry open_sessions[MAX_SESSIONS];
static int open_count;
#define MAX_STALE 32
static CK_SESSION_HANDLE stale[MAX_STALE]; /* closed by this helper: never valid again (src/helper/README.md) */
static int stale_count;
#define MAX_SLOTS 16
static CK_SLOT_ID slots[MAX_SLOTS];
static int slot_count = -1; /* unknown until C_GetSlotList answers */
#define MAX_OBJECTS 64
static CK_OBJECT_HANDLE objects[MAX_OBJECTS];
static struct {
  CK_SLOT_ID slot;
  CK_OBJECT_CLASS klass;
  CK_KEY_TYPE key_type;
} object_info[MAX_OBJECTS]; /* as C_GetAttributeValue told it, for coherent Init calls */
static int object_count;

/* The table a 2.40 function is taken from: either one, they must hold the same functions. */
static CK_FUNCTION_LIST *v2(void) { return chance(50) ? f2 : (CK_FUNCTION_LIST *)f3; }

enum handle_kind { H_VALID, H_STALE, H_RANDOM };
static enum handle_kind session_kind;
static int session_index;

static CK_SESSION_HANDLE pick_session(void) {
  unsigned r = (unsigned)below(100);
  if (open_count > 0 && r < 70) {
    session_kind = H_VALID;
    session_index = (int)below((uint64_t)open_count);
    return open_sessions[session_index].handle;
  }
  if (stale_count > 0 && r < 85) {
    session_kind = H_STALE;
    return stale[below((uint64_t)stale_count)];
  }
  static const CK_SESSION_HANDLE odd[] = {0, 1, 2, 3, 0xffffffffUL, (CK_SESSION_HANDLE)-1, (CK_SESSION_HANDLE)-2, 1000};
  CK_SESSION_HANDLE h = chance(50) ? PICK(odd) : (CK_SESSION_HANDLE)next64();
  /* A small number may name a session the fuzzer knows. */
  session_kind = H_RANDOM;
  for (int i = 0; i < open_count; i++) {
    if (open_sessions[i].handle == h) session_kind = H_VALID, session_index = i;
  }
  for (int i = 0; i < stale_count; i++) {
    if (stale[i] == h) session_kind = H_STALE;
  }
  return h;
}

static CK_OBJECT_HANDLE pick_object(void) {
  if (object_count > 0 && chance(70)) return objects[below((uint64_t)object_count)];
  if (chance(50)) return (CK_OBJECT_HANDLE)below(64);
  static const CK_OBJECT_HANDLE odd[] = {0, (CK_OBJECT_HANDLE)-1, 0xffffffffUL, 0x80000000UL};
  return chance(50) ? PICK(odd) : (CK_OBJECT_HANDLE)next64();
}

static int slot_known(CK_SLOT_ID id) {
  for (int i = 0; i < slot_count; i++) {
    if (slots[i] == id) return 1;
  }
  return 0;
}

static CK_SLOT_ID pick_slot(void) {
  if (slot_count > 0 && chance(75)) return slots[below((uint64_t)slot_count)];
  static const CK_SLOT_ID odd[] = {0, 1, 2, 3, 16, 0xffffffffUL, (CK_SLOT_ID)-1};
  return chance(60) ? PICK(odd) : (CK_SLOT_ID)next64();
}

static void forget_state(void) {
  open_count = 0;
  stale_count = 0;
  object_count = 0;
}

static void add_stale(CK_SESSION_HANDLE h) {
  if (stale_count < MAX_STALE) stale[stale_count++] = h;
}

static void remove_open(int index) {
  add_stale(open_sessions[index].handle);
  open_sessions[index] = open_sessions[--open_count];
}

/* ---- checks shared by all calls -------------------------------------------------------------------------- */

static int is_defined(CK_RV rv) {
  for (size_t i = 0; i < sizeof defined_rvs / sizeof defined_rvs[0]; i++) {
    if (defined_rvs[i] == rv) return 1;
  }
  return 0;
}

enum shape {
  S_LIBRARY,   /* answered without C_Initialize (C_GetFunctionList, C_GetInterface*) */
  S_OFFERED,   /* goes to the helper */
  S_UNOFFERED, /* CKR_FUNCTION_NOT_SUPPORTED once initialised */
  S_PARALLEL,  /* C_GetFunctionStatus, C_CancelFunction: CKR_FUNCTION_NOT_PARALLEL once initialised */
};

struct expect {
  enum shape shape;
  int bad_args;    /* a pointer the spec requires is NULL, or a length with a NULL pointer */
  int has_session; /* the first argument is a session handle (session_kind says which kind) */
  int has_slot;
  CK_SLOT_ID slot;
  int has_output; /* an output buffer with a length: CKR_BUFFER_TOO_SMALL is possible */
  CK_ULONG request_bytes; /* the inputs that travel to the helper: past 64 MiB the shim refuses them */
};

#define FRAME_LIMIT (64ul << 20)

static int spec_allows(CK_RV rv, const struct expect *e);

/* The helper was killed: the next call that reaches it may be lost (CKR_DEVICE_ERROR), once; the open sessions
 * must survive on its replacement. */
static int helper_killed, last_call_lost;
static long helper_kills, lost_calls;

static void check_rv(CK_RV rv, const struct expect *e) {
  count_rv(rv);
  last_call_lost = 0;
  if (!is_defined(rv)) violation("rv 0x%lx is not a CKR value", (unsigned long)rv);
  if (locked_mutexes != 0) violation("returned 0x%lx with %d mutex(es) still locked", (unsigned long)rv, locked_mutexes);
  if (e->shape == S_LIBRARY) return;
  if (!initialized) {
    if (rv != CKR_CRYPTOKI_NOT_INITIALIZED) violation("0x%lx before C_Initialize, expected CKR_CRYPTOKI_NOT_INITIALIZED", (unsigned long)rv);
    return;
  }
  if (rv == CKR_CRYPTOKI_NOT_INITIALIZED) violation("CKR_CRYPTOKI_NOT_INITIALIZED while initialised");
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) violation("CKR_CRYPTOKI_ALREADY_INITIALIZED from a function other than C_Initialize");
  if (e->shape == S_UNOFFERED) {
    if (rv != CKR_FUNCTION_NOT_SUPPORTED) violation("0x%lx from a function the module does not offer, expected CKR_FUNCTION_NOT_SUPPORTED", (unsigned long)rv);
    return;
  }
  if (e->shape == S_PARALLEL) {
    if (rv != CKR_FUNCTION_NOT_PARALLEL) violation("0x%lx, expected CKR_FUNCTION_NOT_PARALLEL", (unsigned long)rv);
    return;
  }
  if (helper_killed && !e->bad_args && e->request_bytes <= FRAME_LIMIT - 65536) {
    helper_killed = 0;
    if (rv == CKR_DEVICE_ERROR) {
      lost_calls++;
      last_call_lost = 1;
      return;
    }
  }
  if (rv == CKR_DEVICE_ERROR) violation("CKR_DEVICE_ERROR: the helper died, timed out or sent a malformed reply (see its log)");
  if (rv == CKR_GENERAL_ERROR) violation("CKR_GENERAL_ERROR: the helper threw or rejected the request (see its log)");
  if (!spec_allows(rv, e)) violation("0x%lx is not a return value PKCS#11 lists for this function", (unsigned long)rv);
  if (e->bad_args) {
    if (rv != CKR_ARGUMENTS_BAD) violation("0x%lx for a NULL pointer the spec forbids, expected CKR_ARGUMENTS_BAD", (unsigned long)rv);
    return;
  }
  /* The shim cannot send more than a frame: it refuses the call before the helper sees it, with a length error or
   * CKR_DEVICE_MEMORY (which of them the function's list allows is checked above). */
  int refused = rv == CKR_DATA_LEN_RANGE || rv == CKR_ENCRYPTED_DATA_LEN_RANGE || rv == CKR_SIGNATURE_LEN_RANGE || rv == CKR_DEVICE_MEMORY;
  if (e->request_bytes > FRAME_LIMIT && !refused) {
    violation("0x%lx for %lu bytes of input, past the frame limit: expected a length error or CKR_DEVICE_MEMORY", (unsigned long)rv,
              (unsigned long)e->request_bytes);
  }
  if (e->request_bytes > FRAME_LIMIT - 65536 && refused) return;
  if (rv == CKR_BUFFER_TOO_SMALL && !e->has_output) violation("CKR_BUFFER_TOO_SMALL without an output buffer");
  if (e->has_session && session_kind == H_VALID && (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED)) {
    violation("0x%lx for an open session", (unsigned long)rv);
  }
  if (e->has_session && session_kind == H_STALE && rv != CKR_SESSION_HANDLE_INVALID) {
    violation("0x%lx for a closed session, expected CKR_SESSION_HANDLE_INVALID", (unsigned long)rv);
  }
  if (e->has_slot && slot_count >= 0) {
    int known = slot_known(e->slot);
    if (known && rv == CKR_SLOT_ID_INVALID) violation("CKR_SLOT_ID_INVALID for slot %lu of C_GetSlotList", (unsigned long)e->slot);
    if (!known && rv != CKR_SLOT_ID_INVALID) violation("0x%lx for slot %lu, which C_GetSlotList did not list", (unsigned long)rv, (unsigned long)e->slot);
  }
}

#define BEGIN(name) (current_function = (name))

/* The return values PKCS#11 lists for each function the module offers (v2.40 section 5, 3.0 additions), beyond
 * those any function may return (checked in spec_allows). "function rv" pairs given on the command line are
 * accepted deviations: the test names each one with its reason. */
static const struct {
  const char *name;
  CK_RV rvs[24];
} spec_rvs[] = {
    {"C_GetInfo", {0}},
    {"C_GetSlotList", {CKR_BUFFER_TOO_SMALL}},
    {"C_GetSlotInfo", {CKR_SLOT_ID_INVALID}},
    {"C_GetTokenInfo", {CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED}},
    {"C_GetMechanismList", {CKR_BUFFER_TOO_SMALL, CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED}},
    {"C_GetMechanismInfo", {CKR_MECHANISM_INVALID, CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED}},
    {"C_OpenSession", {CKR_SESSION_COUNT, CKR_SESSION_PARALLEL_NOT_SUPPORTED, CKR_SESSION_READ_WRITE_SO_EXISTS, CKR_SLOT_ID_INVALID,
                       CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKR_TOKEN_WRITE_PROTECTED}},
    {"C_CloseSession", {0}},
    {"C_CloseAllSessions", {CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_PRESENT}},
    {"C_GetSessionInfo", {0}},
    {"C_Login", {CKR_OPERATION_NOT_INITIALIZED, CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_SESSION_READ_ONLY_EXISTS, CKR_USER_ALREADY_LOGGED_IN,
                 CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_USER_PIN_NOT_INITIALIZED, CKR_USER_TOO_MANY_TYPES, CKR_USER_TYPE_INVALID}},
    {"C_LoginUser", {CKR_OPERATION_NOT_INITIALIZED, CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_SESSION_READ_ONLY_EXISTS, CKR_USER_ALREADY_LOGGED_IN,
                     CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_USER_PIN_NOT_INITIALIZED, CKR_USER_TOO_MANY_TYPES, CKR_USER_TYPE_INVALID}},
    {"C_Logout", {CKR_USER_NOT_LOGGED_IN}},
    {"C_CreateObject", {CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, CKR_CURVE_NOT_SUPPORTED,
                        CKR_DOMAIN_PARAMS_INVALID, CKR_PIN_EXPIRED, CKR_SESSION_READ_ONLY, CKR_TEMPLATE_INCOMPLETE,
                        CKR_TEMPLATE_INCONSISTENT, CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN}},
    {"C_DestroyObject", {CKR_ACTION_PROHIBITED, CKR_OBJECT_HANDLE_INVALID, CKR_PIN_EXPIRED, CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED}},
    {"C_GetObjectSize", {CKR_INFORMATION_SENSITIVE, CKR_OBJECT_HANDLE_INVALID}},
    {"C_GetAttributeValue", {CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL, CKR_OBJECT_HANDLE_INVALID}},
    {"C_SetAttributeValue", {CKR_ACTION_PROHIBITED, CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID,
                             CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_READ_ONLY, CKR_TEMPLATE_INCONSISTENT, CKR_TOKEN_WRITE_PROTECTED,
                             CKR_USER_NOT_LOGGED_IN}},
    {"C_FindObjectsInit", {CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED}},
    {"C_FindObjects", {CKR_OPERATION_NOT_INITIALIZED}},
    {"C_FindObjectsFinal", {CKR_OPERATION_NOT_INITIALIZED}},
#define INIT_RVS                                                                                                  \
  {CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_HANDLE_INVALID, CKR_KEY_SIZE_RANGE, CKR_KEY_TYPE_INCONSISTENT,           \
   CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN}
    {"C_EncryptInit", INIT_RVS},
    {"C_DecryptInit", INIT_RVS},
    {"C_SignInit", INIT_RVS},
    {"C_VerifyInit", INIT_RVS},
    {"C_DigestInit", {CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN}},
    {"C_Encrypt", {CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_EncryptUpdate", {CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_EncryptFinal", {CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_Decrypt", {CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                   CKR_USER_NOT_LOGGED_IN, CKR_FUNCTION_REJECTED}},
    {"C_DecryptUpdate", {CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                         CKR_USER_NOT_LOGGED_IN}},
    {"C_DecryptFinal", {CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED,
                        CKR_USER_NOT_LOGGED_IN}},
    {"C_Digest", {CKR_BUFFER_TOO_SMALL, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_DigestUpdate", {CKR_OPERATION_NOT_INITIALIZED}},
    {"C_DigestFinal", {CKR_BUFFER_TOO_SMALL, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_Sign", {CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN,
                CKR_FUNCTION_REJECTED}},
    {"C_SignUpdate", {CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN}},
    {"C_SignFinal", {CKR_BUFFER_TOO_SMALL, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN, CKR_FUNCTION_REJECTED}},
    {"C_Verify", {CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED, CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE}},
    {"C_VerifyUpdate", {CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_VerifyFinal", {CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED, CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE}},
    {"C_SeedRandom", {CKR_OPERATION_ACTIVE, CKR_RANDOM_SEED_NOT_SUPPORTED, CKR_RANDOM_NO_RNG, CKR_USER_NOT_LOGGED_IN}},
    {"C_GenerateRandom", {CKR_OPERATION_ACTIVE, CKR_RANDOM_NO_RNG, CKR_USER_NOT_LOGGED_IN}},
    {"C_SessionCancel", {CKR_OPERATION_CANCEL_FAILED}},
    /* v2.40 section 5.14. */
#define GENERATE_RVS                                                                                              \
  CKR_ATTRIBUTE_READ_ONLY, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, CKR_CURVE_NOT_SUPPORTED,        \
      CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED, CKR_SESSION_READ_ONLY, \
      CKR_TEMPLATE_INCOMPLETE, CKR_TEMPLATE_INCONSISTENT, CKR_TOKEN_WRITE_PROTECTED, CKR_USER_NOT_LOGGED_IN
    {"C_GenerateKey", {GENERATE_RVS}},
    {"C_GenerateKeyPair", {GENERATE_RVS, CKR_DOMAIN_PARAMS_INVALID}},
    {"C_WrapKey", {CKR_BUFFER_TOO_SMALL, CKR_KEY_HANDLE_INVALID, CKR_KEY_NOT_WRAPPABLE, CKR_KEY_SIZE_RANGE, CKR_KEY_UNEXTRACTABLE,
                   CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID, CKR_OPERATION_ACTIVE, CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN,
                   CKR_WRAPPING_KEY_HANDLE_INVALID, CKR_WRAPPING_KEY_SIZE_RANGE, CKR_WRAPPING_KEY_TYPE_INCONSISTENT}},
    {"C_UnwrapKey", {GENERATE_RVS, CKR_BUFFER_TOO_SMALL, CKR_DOMAIN_PARAMS_INVALID, CKR_UNWRAPPING_KEY_HANDLE_INVALID,
                     CKR_UNWRAPPING_KEY_SIZE_RANGE, CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, CKR_WRAPPED_KEY_INVALID,
                     CKR_WRAPPED_KEY_LEN_RANGE}},
    /* v3.0 section 5.13 (single-part message encryption). */
    {"C_MessageEncryptInit", INIT_RVS},
    {"C_MessageDecryptInit", INIT_RVS},
    {"C_EncryptMessage", {CKR_BUFFER_TOO_SMALL, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_OPERATION_NOT_INITIALIZED}},
    {"C_DecryptMessage", {CKR_AEAD_DECRYPT_FAILED, CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE,
                          CKR_OPERATION_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN}},
    {"C_MessageEncryptFinal", {CKR_OPERATION_NOT_INITIALIZED}},
    {"C_MessageDecryptFinal", {CKR_OPERATION_NOT_INITIALIZED}},
};

#define MAX_DEVIATIONS 32
static struct {
  const char *name;
  CK_RV rv;
  long seen;
} deviations[MAX_DEVIATIONS];
static int deviation_count;

static int spec_allows(CK_RV rv, const struct expect *e) {
  /* Any function: section 5.1 (and FUNCTION_NOT_SUPPORTED, which the module answers for single-part mechanisms). */
  static const CK_RV common[] = {CKR_OK, CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR, CKR_HOST_MEMORY,
                                 CKR_FUNCTION_FAILED, CKR_FUNCTION_CANCELED, CKR_FUNCTION_NOT_SUPPORTED, CKR_DEVICE_ERROR,
                                 CKR_DEVICE_MEMORY, CKR_DEVICE_REMOVED};
  for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) {
    if (common[i] == rv) return 1;
  }
  if (e->has_session && (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED)) return 1;
  for (size_t i = 0; i < sizeof spec_rvs / sizeof spec_rvs[0]; i++) {
    if (strcmp(spec_rvs[i].name, current_function) != 0) continue;
    for (int j = 0; j < 24 && spec_rvs[i].rvs[j] != 0; j++) {
      if (spec_rvs[i].rvs[j] == rv) return 1;
    }
    break;
  }
  for (int i = 0; i < deviation_count; i++) {
    if (deviations[i].rv == rv && strcmp(deviations[i].name, current_function) == 0) {
      deviations[i].seen++;
      return 1;
    }
  }
  /* AKV_FUZZ_COLLECT=1: list every such pair at the end instead of stopping at the first. */
  if (getenv("AKV_FUZZ_COLLECT") != NULL && deviation_count < MAX_DEVIATIONS) {
    deviations[deviation_count].name = current_function;
    deviations[deviation_count].rv = rv;
    deviations[deviation_count++].seen = 1;
    return 1;
  }
  return 0;
}

/* ---- inputs ---------------------------------------------------------------------------------------------- */

struct input {
  uint8_t *p;
  CK_ULONG len;
  uint8_t *copy; /* to check that the module did not write into its input */
  int bad;       /* NULL with a length */
};

#define NEAR_LIMIT_FRAMES 3 /* 64 MiB frames take a while: a few per run */
static int near_limit_budget = NEAR_LIMIT_FRAMES;
static long past_limit_inputs;

static const uint8_t sha256_digest_info[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                             0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

static void input_new(struct input *in) {
  memset(in, 0, sizeof *in);
  unsigned r = (unsigned)below(1000);
  if (r < 40) { /* NULL, length 0: legal */
    return;
  }
  if (r < 80) { /* NULL with a length */
    static const CK_ULONG lens[] = {1, 32, 0x7fffffffUL, (CK_ULONG)-1};
    in->len = PICK(lens);
    in->bad = 1;
    return;
  }
  if (r < 990 || big_in == NULL) {
    static const CK_ULONG typical[] = {0, 1, 16, 20, 28, 32, 48, 51, 64, 66, 83, 100, 128, 245, 256, 257, 512};
    if (r < 600) {
      in->len = PICK(typical);
    } else if (r < 900) {
      in->len = below(600);
    } else if (r < 985) {
      in->len = below(70000);
    } else {
      in->len = 1 + below(4u << 20);
    }
    in->p = malloc(in->len + 1);
    random_bytes(in->p, in->len);
    if (in->len == 51 && chance(70)) memcpy(in->p, sha256_digest_info, sizeof sha256_digest_info);
  } else {
    /* Past the 64 MiB frame limit (the shim must refuse it), or just under it (the helper must cope). */
    size_t limit = 64u << 20;
    if (near_limit_budget > 0 && chance(50) && big_bytes >= limit) {
      near_limit_budget--;
      in->len = limit - 256 - below(4096);
    } else {
      in->len = big_bytes > limit ? limit + 1 + below(big_bytes - limit) : big_bytes;
      past_limit_inputs += in->len > limit;
    }
    in->p = big_in;
    return;
  }
  if (in->len <= TAIL_CHECK) {
    in->copy = malloc(in->len + 1);
    memcpy(in->copy, in->p, in->len);
  }
}

/* A digest-sized or DigestInfo input: what the signing mechanisms accept. */
static void good_input(struct input *in) {
  memset(in, 0, sizeof *in);
  static const CK_ULONG lens[] = {20, 32, 32, 48, 51, 64, 100};
  in->len = PICK(lens);
  in->p = malloc(in->len);
  random_bytes(in->p, in->len);
  if (in->len == 51) memcpy(in->p, sha256_digest_info, sizeof sha256_digest_info);
  in->copy = malloc(in->len);
  memcpy(in->copy, in->p, in->len);
}

static void input_free(struct input *in) {
  if (in->copy != NULL && memcmp(in->copy, in->p, in->len) != 0) violation("the module wrote into a %lu-byte input", (unsigned long)in->len);
  if (in->p != big_in) free(in->p);
  free(in->copy);
  memset(in, 0, sizeof *in);
}

/* An output buffer and its length: NULL (a length query), small, exact-ish, large, or past 64 MiB. */
struct output {
  struct guarded g;
  int present;
  CK_ULONG len;      /* what the module sees in *pulLen */
  CK_ULONG capacity; /* len before the call */
  int null_len;      /* pulLen itself is NULL */
};

static void output_new(struct output *o) {
  memset(o, 0, sizeof *o);
  unsigned r = (unsigned)below(1000);
  if (r < 30) {
    o->null_len = 1;
  }
  if (r >= 30 && r < 250) {
    static const CK_ULONG any[] = {0, 1, 256, 0xffffffffUL, (CK_ULONG)-1};
    o->len = chance(50) ? PICK(any) : (CK_ULONG)next64();
  } else {
    static const CK_ULONG caps[] = {0, 1, 7, 20, 31, 32, 48, 63, 64, 65, 71, 72, 96, 103, 104, 128, 132, 139, 255, 256, 257, 384, 512, 1024};
    size_t cap;
    if (r < 900 || big_out.base == NULL) {
      cap = r < 800 ? PICK(caps) : below(1u << 20);
      guarded_new(&o->g, cap);
    } else {
      cap = big_out.cap;
      guarded_big(&o->g, cap);
    }
    o->present = 1;
    o->len = cap;
  }
  o->capacity = o->len;
}

static CK_BYTE_PTR out_ptr(struct output *o) { return o->present ? body(&o->g) : NULL; }
static CK_ULONG_PTR out_len(struct output *o) { return o->null_len ? NULL : &o->len; }

/* The spec's length rules, and the shim's: data only with CKR_OK, *pulLen only with CKR_OK / CKR_BUFFER_TOO_SMALL. */
static void output_check(struct output *o, CK_RV rv, const char *what) {
  if (o->null_len) {
    if (o->present) guarded_check(&o->g, 0, what);
    return;
  }
  if (rv == CKR_OK && o->present && o->len > o->capacity) {
    violation("%s: CKR_OK with %lu bytes in a %lu-byte buffer", what, (unsigned long)o->len, (unsigned long)o->capacity);
  }
  if (rv == CKR_BUFFER_TOO_SMALL && o->len <= o->capacity) {
    violation("%s: CKR_BUFFER_TOO_SMALL, yet the %lu bytes needed fit the %lu-byte buffer", what, (unsigned long)o->len, (unsigned long)o->capacity);
  }
  if (rv == CKR_BUFFER_TOO_SMALL && !o->present) violation("%s: CKR_BUFFER_TOO_SMALL for a length query (NULL buffer)", what);
  if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL && o->len != o->capacity) {
    violation("%s: *pulLen changed from %lu to %lu with rv 0x%lx", what, (unsigned long)o->capacity, (unsigned long)o->len, (unsigned long)rv);
  }
  if (o->present) guarded_check(&o->g, rv == CKR_OK ? (size_t)o->len : 0, what);
}

static void output_free(struct output *o) { guarded_free(&o->g); }

/* ---- templates and mechanisms ---------------------------------------------------------------------------- */

static const CK_ATTRIBUTE_TYPE known_types[] = {
    CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_VALUE, CKA_CERTIFICATE_TYPE, CKA_ISSUER, CKA_SERIAL_NUMBER,
    CKA_KEY_TYPE, CKA_SUBJECT, CKA_ID, CKA_SENSITIVE, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN,
    CKA_VERIFY, CKA_DERIVE, CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_EC_PARAMS,
    CKA_EC_POINT, CKA_EXTRACTABLE, CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_MODIFIABLE,
    CKA_ALWAYS_AUTHENTICATE, CKA_ALLOWED_MECHANISMS, CKA_KEY_GEN_MECHANISM, CKA_START_DATE, CKA_PUBLIC_KEY_INFO,
    CKA_COPYABLE, CKA_DESTROYABLE, CKA_WRAP_TEMPLATE, CKA_CHECK_VALUE, CKA_TRUSTED, CKA_VENDOR_DEFINED, 0x7fffffffUL,
};

#define MAX_TEMPLATE 10
struct template {
  CK_ATTRIBUTE attrs[MAX_TEMPLATE + 1];
  CK_ATTRIBUTE_PTR ptr;
  CK_ULONG count;
  struct guarded values[MAX_TEMPLATE];
  CK_ULONG capacity[MAX_TEMPLATE];
  int has_value[MAX_TEMPLATE];
  int bad; /* NULL template with a count, or a NULL value with a length (bad for inputs, a query for reads) */
};

/* for_read: the template of C_GetAttributeValue, whose NULL values with lengths are length queries. */
static void template_new(struct template *t, int for_read) {
  memset(t, 0, sizeof *t);
  t->count = below(MAX_TEMPLATE + 1);
  t->ptr = t->attrs;
  if (chance(4)) {
    t->ptr = NULL;
    t->bad = t->count != 0;
    if (chance(20)) t->count = (CK_ULONG)-1;
    t->bad = t->count != 0;
    return;
  }
  for (CK_ULONG i = 0; i < t->count; i++) {
    CK_ATTRIBUTE *a = &t->attrs[i];
    a->type = chance(90) ? PICK(known_types) : (CK_ATTRIBUTE_TYPE)next64();
    unsigned r = (unsigned)below(100);
    if (r < 20) {
      a->pValue = NULL;
      a->ulValueLen = chance(50) ? 0 : (chance(50) ? 8 : (CK_ULONG)next64());
      if (a->ulValueLen != 0 && !for_read) t->bad = 1;
    } else {
      static const CK_ULONG lens[] = {0, 1, 2, 4, 7, 8, 9, 16, 20, 32, 64, 65, 127, 128, 255, 256, 300, 512, 1000, 2048};
      CK_ULONG len = r < 50 && !for_read ? sizeof(CK_ULONG) : PICK(lens);
      if (r < 50 && !for_read) {
        static const CK_ULONG classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE, CKO_SECRET_KEY, CKO_DATA, 0x12345};
        guarded_new(&t->values[i], len);
        CK_ULONG v = PICK(classes);
        memcpy(body(&t->values[i]), &v, sizeof v);
        a->type = chance(70) ? CKA_CLASS : CKA_KEY_TYPE;
      } else {
        guarded_new(&t->values[i], len);
        if (!for_read) random_bytes(body(&t->values[i]), len);
        if (!for_read && len == 1) body(&t->values[i])[0] = (uint8_t)below(3);
      }
      t->has_value[i] = 1;
      a->pValue = body(&t->values[i]);
      a->ulValueLen = len;
    }
    t->capacity[i] = a->ulValueLen;
  }
}

static void template_free(struct template *t) {
  for (int i = 0; i < MAX_TEMPLATE; i++) {
    if (t->has_value[i]) guarded_free(&t->values[i]);
  }
}

static const CK_MECHANISM_TYPE mechanism_types[] = {
    CKM_RSA_PKCS,        CKM_RSA_PKCS_OAEP,   CKM_RSA_PKCS_PSS,        CKM_SHA256_RSA_PKCS,     CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS, CKM_SHA1_RSA_PKCS,   CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS,
    CKM_ECDSA,           CKM_ECDSA_SHA1,      CKM_ECDSA_SHA256,        CKM_ECDSA_SHA384,        CKM_ECDSA_SHA512,
    CKM_SHA256,          CKM_SHA384,          CKM_SHA512,              CKM_SHA_1,               CKM_SHA224,
    CKM_AES_CBC,         CKM_RSA_X_509,       CKM_VENDOR_DEFINED,      0x7fffffffUL,            CKM_AES_GCM,
    CKM_AES_KEY_WRAP,    CKM_AES_KEY_GEN,     CKM_EC_KEY_PAIR_GEN,     CKM_RSA_PKCS_KEY_PAIR_GEN,
};
static const CK_ULONG hash_types[] = {CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_SHA_1, CKM_SHA224, CKM_MD5, 0, (CK_ULONG)-1};
static const CK_ULONG mgf_types[] = {CKG_MGF1_SHA256, CKG_MGF1_SHA384, CKG_MGF1_SHA512, CKG_MGF1_SHA1, CKG_MGF1_SHA224, 0, 99, (CK_ULONG)-1};

struct mechanism {
  CK_MECHANISM m;
  CK_MECHANISM_PTR ptr;
  uint8_t *param;
  uint8_t *source;
  uint8_t *iv;
};

/* Mechanisms with parameters the module accepts, so that some operations get past Init. */
static void coherent_mechanism(struct mechanism *mech, CK_KEY_TYPE key_type) {
  static const CK_MECHANISM_TYPE plain[] = {CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS,
                                            CKM_SHA512_RSA_PKCS, CKM_SHA256, CKM_SHA384, CKM_SHA512};
  unsigned r = (unsigned)below(4);
  if (key_type == CKK_EC) {
    mech->m.mechanism = plain[below(3)];
  } else if (r < 2) {
    mech->m.mechanism = key_type == CKK_RSA ? plain[3 + below(3)] : PICK(plain);
  } else if (r == 2) {
    static const CK_RSA_PKCS_PSS_PARAMS pss[] = {{CKM_SHA256, CKG_MGF1_SHA256, 32}, {CKM_SHA384, CKG_MGF1_SHA384, 48}, {CKM_SHA256, CKG_MGF1_SHA256, 0}};
    mech->m.mechanism = chance(50) ? CKM_RSA_PKCS_PSS : CKM_SHA256_RSA_PKCS_PSS;
    mech->param = malloc(sizeof pss[0]);
    memcpy(mech->param, &pss[below(3)], sizeof pss[0]);
    mech->m.ulParameterLen = sizeof pss[0];
  } else {
    CK_RSA_PKCS_OAEP_PARAMS oaep = {chance(50) ? CKM_SHA256 : CKM_SHA_1, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
    if (oaep.hashAlg == CKM_SHA_1) oaep.mgf = CKG_MGF1_SHA1;
    mech->m.mechanism = CKM_RSA_PKCS_OAEP;
    mech->param = malloc(sizeof oaep);
    memcpy(mech->param, &oaep, sizeof oaep);
    mech->m.ulParameterLen = sizeof oaep;
  }
  mech->m.pParameter = mech->param;
}

/* A GCM parameter's IV and AAD: real buffers of the stated lengths, or now and then NULL (a malformed parameter). */
static void gcm_buffers(struct mechanism *mech, CK_ULONG iv_len, CK_BYTE_PTR *iv, CK_ULONG aad_len, CK_BYTE_PTR *aad) {
  if (chance(95)) {
    mech->iv = malloc(iv_len + 1);
    random_bytes(mech->iv, iv_len);
    *iv = mech->iv;
  }
  if (chance(90)) {
    free(mech->source);
    mech->source = malloc(aad_len + 1);
    random_bytes(mech->source, aad_len);
    *aad = mech->source;
  }
}
static void mechanism_new(struct mechanism *mech) {
  memset(mech, 0, sizeof *mech);
  if (chance(40)) {
    mech->ptr = &mech->m;
    coherent_mechanism(mech, (CK_KEY_TYPE)-1);
    return;
  }
  mech->ptr = chance(3) ? NULL : &mech->m;
  mech->m.mechanism = chance(92) ? PICK(mechanism_types) : (CK_MECHANISM_TYPE)next64();
  unsigned r = (unsigned)below(100);
  if (r < 35) return; /* no parameter */
  if (r < 40) {       /* NULL with a length */
    mech->m.ulParameterLen = chance(50) ? sizeof(CK_RSA_PKCS_OAEP_PARAMS) : (CK_ULONG)next64();
    return;
  }
  /* A parameter of the right size for PSS or OAEP, or a size off by a little or a lot; always backed. */
  static const long deltas[] = {0, 0, 0, 0, -1, 1, -8, 8};
  size_t base = chance(50) ? sizeof(CK_RSA_PKCS_PSS_PARAMS) : chance(70) ? sizeof(CK_RSA_PKCS_OAEP_PARAMS) : sizeof(CK_GCM_PARAMS);
  size_t len = r < 90 ? (size_t)((long)base + PICK(deltas)) : below(300);
  size_t room = len > sizeof(CK_GCM_PARAMS) ? len : sizeof(CK_GCM_PARAMS);
  mech->param = malloc(room);
  random_bytes(mech->param, room);
  /* An OAEP-sized parameter holds a pointer the shim follows: never a random one (the caller's bug, not the module's). */
  if (chance(70) || len == sizeof(CK_RSA_PKCS_OAEP_PARAMS)) {
    if (len == sizeof(CK_RSA_PKCS_OAEP_PARAMS)) base = len;
    CK_RSA_PKCS_PSS_PARAMS pss = {PICK(hash_types), PICK(mgf_types), chance(70) ? below(100) : (CK_ULONG)next64()};
    if (base == sizeof pss) memcpy(mech->param, &pss, sizeof pss);
    CK_RSA_PKCS_OAEP_PARAMS oaep = {PICK(hash_types), PICK(mgf_types), chance(80) ? CKZ_DATA_SPECIFIED : next64(), NULL, 0};
    if (chance(30)) {
      oaep.ulSourceDataLen = chance(90) ? below(40) : (CK_ULONG)next64();
      if (oaep.ulSourceDataLen < 40 && chance(80)) {
        mech->source = malloc(oaep.ulSourceDataLen + 1);
        random_bytes(mech->source, oaep.ulSourceDataLen);
        oaep.pSourceData = mech->source;
      }
    }
    if (base == sizeof oaep) memcpy(mech->param, &oaep, sizeof oaep);
  }
  /* So does a GCM-sized parameter of CKM_AES_GCM: real buffers, or NULL with a length (malformed, never read). The
   * shim takes CK_GCM_PARAMS in the errata's layout and as v2.40 first published it (no ulIvBits, the size of an
   * OAEP parameter). */
  if (mech->m.mechanism == CKM_AES_GCM && len == sizeof(CK_GCM_PARAMS)) {
    CK_GCM_PARAMS gcm = {NULL, chance(80) ? 12 : below(80), 0, NULL, below(40), chance(70) ? 128 : below(200)};
    gcm.ulIvBits = chance(90) ? gcm.ulIvLen * 8 : below(1000);
    gcm_buffers(mech, gcm.ulIvLen, &gcm.pIv, gcm.ulAADLen, &gcm.pAAD);
    memcpy(mech->param, &gcm, sizeof gcm);
  }
  if (mech->m.mechanism == CKM_AES_GCM && len == 5 * sizeof(CK_ULONG)) {
    struct {
      CK_BYTE_PTR pIv;
      CK_ULONG ulIvLen;
      CK_BYTE_PTR pAAD;
      CK_ULONG ulAADLen;
      CK_ULONG ulTagBits;
    } gcm = {NULL, chance(80) ? 12 : below(80), NULL, below(40), chance(70) ? 128 : below(200)};
    gcm_buffers(mech, gcm.ulIvLen, &gcm.pIv, gcm.ulAADLen, &gcm.pAAD);
    memcpy(mech->param, &gcm, sizeof gcm);
  }
  mech->m.pParameter = mech->param;
  mech->m.ulParameterLen = len;
}

static void mechanism_free(struct mechanism *mech) {
  free(mech->param);
  free(mech->source);
  free(mech->iv);
}

/* ---- the calls ------------------------------------------------------------------------------------------- */

/* Fixed text fields are blank-padded, never NUL-terminated. */
static void check_padded(const CK_UTF8CHAR *p, size_t n, const char *field) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == 0) violation("%s has a NUL at %zu", field, i);
  }
}

/* A struct output between canaries; untouched unless rv is CKR_OK. */
#define STRUCT_CALL(type, call_expr, ok_checks)                                                    \
  do {                                                                                             \
    struct guarded g;                                                                              \
    guarded_new(&g, sizeof(type));                                                                 \
    int null_info = chance(5);                                                                     \
    type *info = null_info ? NULL : (type *)body(&g);                                              \
    e.bad_args = null_info;                                                                        \
    CK_RV rv = (call_expr);                                                                        \
    check_rv(rv, &e);                                                                              \
    guarded_check(&g, rv == CKR_OK ? sizeof(type) : 0, #type);                                     \
    if (rv == CKR_OK) { ok_checks; }                                                               \
    guarded_free(&g);                                                                              \
  } while (0)

static void call_initialize(void) {
  BEGIN("C_Initialize");
  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof args);
  int use_args = chance(70), bad = 0, callbacks = 0, failing = 0;
  if (use_args) {
    unsigned r = (unsigned)below(100);
    if (r < 45) {
      args.CreateMutex = create_mutex;
      args.DestroyMutex = destroy_mutex;
      args.LockMutex = lock_mutex;
      args.UnlockMutex = unlock_mutex;
      callbacks = 1;
      if (chance(10)) failing = fail_next_create = 1;
    } else if (r < 55) { /* some callbacks but not all */
      args.CreateMutex = chance(50) ? create_mutex : NULL;
      args.LockMutex = lock_mutex;
      bad = 1;
    }
    static const CK_FLAGS flags[] = {0, CKF_OS_LOCKING_OK, CKF_LIBRARY_CANT_CREATE_OS_THREADS,
                                     CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS, 0xfc};
    args.flags = PICK(flags);
    if (chance(8)) {
      args.pReserved = &args;
      bad = 1;
    }
  }
  note("C_Initialize(args=%d callbacks=%d failing=%d flags=0x%lx reserved=%d) initialized=%d", use_args, callbacks, failing,
       (unsigned long)args.flags, args.pReserved != NULL, initialized);
  int mutexes_before = live_mutexes;
  CK_RV rv = v2()->C_Initialize(use_args ? &args : NULL);
  fail_next_create = 0;
  count_rv(rv);
  if (!is_defined(rv)) violation("rv 0x%lx is not a CKR value", (unsigned long)rv);
  if (locked_mutexes != 0) violation("returned with a mutex locked");
  if (bad) {
    if (rv != CKR_ARGUMENTS_BAD) violation("0x%lx for bad C_INITIALIZE_ARGS, expected CKR_ARGUMENTS_BAD", (unsigned long)rv);
  } else if (initialized) {
    if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) violation("0x%lx when initialised, expected CKR_CRYPTOKI_ALREADY_INITIALIZED", (unsigned long)rv);
  } else if (failing) {
    if (rv == CKR_OK) violation("CKR_OK although CreateMutex failed");
    if (live_mutexes != mutexes_before) violation("C_Initialize failed but left %d mutex(es) alive", live_mutexes - mutexes_before);
  } else if (rv != CKR_OK) {
    violation("0x%lx, expected CKR_OK (the helper could not start?)", (unsigned long)rv);
  }
  if (rv == CKR_OK) {
    initialized = 1;
    uses_callbacks = callbacks;
    forget_state();
  }
}

static void call_finalize(void) {
  BEGIN("C_Finalize");
  int bad = chance(10);
  note("C_Finalize(reserved=%d) initialized=%d", bad, initialized);
  CK_RV rv = v2()->C_Finalize(bad ? (CK_VOID_PTR)&bad : NULL);
  count_rv(rv);
  if (!is_defined(rv)) violation("rv 0x%lx is not a CKR value", (unsigned long)rv);
  if (locked_mutexes != 0) violation("returned with a mutex locked");
  CK_RV expected = bad ? CKR_ARGUMENTS_BAD : initialized ? CKR_OK : CKR_CRYPTOKI_NOT_INITIALIZED;
  if (rv != expected) violation("0x%lx, expected 0x%lx", (unsigned long)rv, (unsigned long)expected);
  if (rv == CKR_OK) {
    initialized = 0;
    forget_state();
    if (live_mutexes != 0) violation("%d mutex(es) created with the application's callbacks not destroyed", live_mutexes);
  }
}

static void call_interfaces(void) {
  unsigned r = (unsigned)below(3);
  if (r == 0) {
    BEGIN("C_GetFunctionList");
    CK_FUNCTION_LIST_PTR got = NULL;
    int null = chance(20);
    note("C_GetFunctionList(null=%d)", null);
    CK_RV rv = f3->C_GetFunctionList(null ? NULL : &got);
    count_rv(rv);
    if (rv != (null ? CKR_ARGUMENTS_BAD : CKR_OK)) violation("0x%lx", (unsigned long)rv);
    if (!null && got != f2) violation("returned another table than before");
  } else if (r == 1) {
    BEGIN("C_GetInterfaceList");
    CK_ULONG count = below(4);
    struct guarded g;
    guarded_new(&g, 4 * sizeof(CK_INTERFACE));
    int null_list = chance(40), null_count = chance(10);
    CK_ULONG capacity = count;
    note("C_GetInterfaceList(null_list=%d null_count=%d count=%lu)", null_list, null_count, (unsigned long)count);
    CK_RV rv = f3->C_GetInterfaceList(null_list ? NULL : (CK_INTERFACE_PTR)body(&g), null_count ? NULL : &count);
    count_rv(rv);
    if (null_count && rv != CKR_ARGUMENTS_BAD) violation("0x%lx for a NULL pulCount", (unsigned long)rv);
    if (rv == CKR_OK && !null_list && count > capacity) violation("%lu interfaces in room for %lu", (unsigned long)count, (unsigned long)capacity);
    if (rv == CKR_BUFFER_TOO_SMALL && count <= capacity) violation("CKR_BUFFER_TOO_SMALL with room");
    guarded_check(&g, rv == CKR_OK && !null_list ? count * sizeof(CK_INTERFACE) : 0, "interface list");
    guarded_free(&g);
  } else {
    BEGIN("C_GetInterface");
    static const char *names[] = {"PKCS 11", "PKCS 11", "PKCS 11 ", "pkcs 11", "", "Vendor"};
    CK_VERSION versions[] = {{3, 0}, {2, 40}, {2, 20}, {3, 1}, {0, 0}, {255, 255}};
    const char *name = chance(20) ? NULL : PICK(names);
    CK_VERSION version = PICK(versions);
    int null_version = chance(20), null_out = chance(10);
    CK_FLAGS flags = chance(80) ? 0 : (chance(50) ? CKF_INTERFACE_FORK_SAFE : next64());
    CK_INTERFACE_PTR got = NULL;
    note("C_GetInterface(%s, %d.%d null_version=%d null_out=%d flags=0x%lx)", name ? name : "NULL", version.major, version.minor,
         null_version, null_out, (unsigned long)flags);
    CK_RV rv = f3->C_GetInterface((CK_UTF8CHAR_PTR)name, null_version ? NULL : &version, null_out ? NULL : &got, flags);
    count_rv(rv);
    if (!is_defined(rv)) violation("rv 0x%lx is not a CKR value", (unsigned long)rv);
    if (null_out && rv != CKR_ARGUMENTS_BAD) violation("0x%lx for a NULL ppInterface", (unsigned long)rv);
    if (rv == CKR_OK) {
      const CK_VERSION *v = (const CK_VERSION *)got->pFunctionList;
      if (!null_version && (v->major != version.major || v->minor != version.minor)) violation("asked for %d.%d, got %d.%d", version.major, version.minor, v->major, v->minor);
      if (name != NULL && strcmp((const char *)got->pInterfaceName, name) != 0) violation("asked for '%s', got '%s'", name, got->pInterfaceName);
      if ((got->flags & flags) != flags) violation("interface lacks the flags asked for");
    }
  }
}

/* This process's one live child: the module's helper. */
static pid_t helper_child(void) {
  DIR *proc = opendir("/proc");
  pid_t found = 0;
  for (struct dirent *d; proc != NULL && (d = readdir(proc)) != NULL && found == 0;) {
    if (!isdigit((unsigned char)d->d_name[0])) continue;
    char path[300], stat[512];
    snprintf(path, sizeof path, "/proc/%s/stat", d->d_name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL) continue;
    size_t n = fread(stat, 1, sizeof stat - 1, fp);
    fclose(fp);
    stat[n] = 0;
    char *close = strrchr(stat, ')');
    char state;
    long ppid;
    if (close != NULL && sscanf(close + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)getpid() && state != 'Z') {
      found = (pid_t)atol(d->d_name);
    }
  }
  if (proc != NULL) closedir(proc);
  return found;
}

static int kills_enabled;

static void kill_helper(void) {
  BEGIN("SIGKILL to the helper");
  pid_t pid = helper_child();
  note("SIGKILL to the helper (pid %ld)", (long)pid);
  if (pid <= 0 || kill(pid, SIGKILL) != 0) return;
  /* Until the shim has reaped it, as a host would see it gone: at most 2 s. */
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld", (long)pid);
  for (int i = 0; i < 200 && access(path, F_OK) == 0; i++) usleep(10000);
  helper_killed = 1;
  helper_kills++;
}

static void call_get_info(void) {
  BEGIN("C_GetInfo");
  struct expect e = {.shape = S_OFFERED};
  note("C_GetInfo");
  STRUCT_CALL(CK_INFO, v2()->C_GetInfo(info), {
    check_padded(info->manufacturerID, 32, "manufacturerID");
    check_padded(info->libraryDescription, 32, "libraryDescription");
    if (info->flags != 0) violation("CK_INFO.flags 0x%lx, must be 0", (unsigned long)info->flags);
  });
}

static void call_slot_list(void) {
  BEGIN("C_GetSlotList");
  struct expect e = {.shape = S_OFFERED, .has_output = 1};
  struct guarded g;
  CK_ULONG caps[] = {0, 1, 2, 3, 16};
  CK_ULONG capacity = PICK(caps);
  guarded_new(&g, capacity * sizeof(CK_SLOT_ID));
  int null_list = chance(35), null_count = chance(5);
  CK_ULONG count = null_list && chance(50) ? (CK_ULONG)next64() : capacity;
  CK_ULONG before = count;
  CK_BBOOL present = chance(50) ? CK_TRUE : (CK_BBOOL)next64();
  e.bad_args = null_count;
  note("C_GetSlotList(present=%u null_list=%d null_count=%d count=%lu)", present, null_list, null_count, (unsigned long)count);
  CK_RV rv = v2()->C_GetSlotList(present, null_list ? NULL : (CK_SLOT_ID_PTR)body(&g), null_count ? NULL : &count);
  check_rv(rv, &e);
  if (rv == CKR_BUFFER_TOO_SMALL && (null_list || count <= capacity)) violation("CKR_BUFFER_TOO_SMALL with room or for a query");
  if (rv == CKR_OK && !null_list && count > capacity) violation("%lu slots in room for %lu", (unsigned long)count, (unsigned long)capacity);
  if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL && count != before) violation("*pulCount changed with rv 0x%lx", (unsigned long)rv);
  guarded_check(&g, rv == CKR_OK && !null_list ? count * sizeof(CK_SLOT_ID) : 0, "slot list");
  if (rv == CKR_OK && !null_list && count <= MAX_SLOTS) {
    memcpy(slots, body(&g), count * sizeof(CK_SLOT_ID));
    slot_count = (int)count;
  }
  guarded_free(&g);
}

static void call_slot_info(int token) {
  struct expect e = {.shape = S_OFFERED, .has_slot = 1};
  e.slot = pick_slot();
  if (!token) {
    BEGIN("C_GetSlotInfo");
    note("C_GetSlotInfo(slot=%lu)", (unsigned long)e.slot);
    STRUCT_CALL(CK_SLOT_INFO, v2()->C_GetSlotInfo(e.slot, info), {
      check_padded(info->slotDescription, 64, "slotDescription");
      check_padded(info->manufacturerID, 32, "manufacturerID");
    });
  } else {
    BEGIN("C_GetTokenInfo");
    note("C_GetTokenInfo(slot=%lu)", (unsigned long)e.slot);
    STRUCT_CALL(CK_TOKEN_INFO, v2()->C_GetTokenInfo(e.slot, info), {
      check_padded(info->label, 32, "label");
      check_padded(info->manufacturerID, 32, "manufacturerID");
      check_padded(info->model, 16, "model");
      check_padded(info->serialNumber, 16, "serialNumber");
    });
  }
}

static void call_mechanisms(void) {
  struct expect e = {.shape = S_OFFERED, .has_slot = 1};
  e.slot = pick_slot();
  if (chance(50)) {
    BEGIN("C_GetMechanismList");
    e.has_output = 1;
    CK_ULONG caps[] = {0, 1, 5, 32, 64};
    CK_ULONG capacity = PICK(caps);
    struct guarded g;
    guarded_new(&g, capacity * sizeof(CK_MECHANISM_TYPE));
    int null_list = chance(35), null_count = chance(5);
    CK_ULONG count = capacity, before = count;
    e.bad_args = null_count;
    note("C_GetMechanismList(slot=%lu null_list=%d null_count=%d count=%lu)", (unsigned long)e.slot, null_list, null_count, (unsigned long)count);
    CK_RV rv = v2()->C_GetMechanismList(e.slot, null_list ? NULL : (CK_MECHANISM_TYPE_PTR)body(&g), null_count ? NULL : &count);
    check_rv(rv, &e);
    if (rv == CKR_BUFFER_TOO_SMALL && (null_list || count <= capacity)) violation("CKR_BUFFER_TOO_SMALL with room or for a query");
    if (rv == CKR_OK && !null_list && count > capacity) violation("%lu mechanisms in room for %lu", (unsigned long)count, (unsigned long)capacity);
    if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL && count != before) violation("*pulCount changed with rv 0x%lx", (unsigned long)rv);
    guarded_check(&g, rv == CKR_OK && !null_list ? count * sizeof(CK_MECHANISM_TYPE) : 0, "mechanism list");
    guarded_free(&g);
  } else {
    BEGIN("C_GetMechanismInfo");
    CK_MECHANISM_TYPE type = chance(90) ? PICK(mechanism_types) : (CK_MECHANISM_TYPE)next64();
    note("C_GetMechanismInfo(slot=%lu type=0x%lx)", (unsigned long)e.slot, (unsigned long)type);
    STRUCT_CALL(CK_MECHANISM_INFO, v2()->C_GetMechanismInfo(e.slot, type, info), {
      if (info->ulMinKeySize > info->ulMaxKeySize) violation("ulMinKeySize %lu > ulMaxKeySize %lu", (unsigned long)info->ulMinKeySize, (unsigned long)info->ulMaxKeySize);
    });
  }
}

static void record_objects(const CK_OBJECT_HANDLE *found, CK_ULONG count) {
  for (CK_ULONG i = 0; i < count && object_count < MAX_OBJECTS; i++) {
    int known = 0;
    for (int j = 0; j < object_count; j++) known |= objects[j] == found[i];
    if (!known) {
      object_info[object_count].klass = (CK_OBJECT_CLASS)-1;
      objects[object_count++] = found[i];
    }
  }
}

/* A well-formed search of everything on a fresh session, so that the key handles are known. */
static void discover(CK_SESSION_HANDLE h) {
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  session_kind = H_VALID;
  session_index = open_count - 1;
  CK_OBJECT_HANDLE found[16];
  CK_ULONG count = 0;
  call_index++;
  BEGIN("C_FindObjectsInit");
  note("C_FindObjectsInit(%lu, all)", (unsigned long)h);
  CK_RV rv = f2->C_FindObjectsInit(h, NULL, 0);
  check_rv(rv, &e);
  if (rv != CKR_OK) return;
  call_index++;
  BEGIN("C_FindObjects");
  note("C_FindObjects(%lu, 16)", (unsigned long)h);
  rv = f2->C_FindObjects(h, found, 16, &count);
  check_rv(rv, &e);
  if (rv == CKR_OK && count > 16) violation("%lu objects for at most 16", (unsigned long)count);
  if (rv == CKR_OK) {
    int first = object_count;
    record_objects(found, count);
    for (int i = first; i < object_count; i++) {
      CK_OBJECT_CLASS klass = (CK_OBJECT_CLASS)-1;
      CK_KEY_TYPE key_type = (CK_KEY_TYPE)-1;
      CK_ATTRIBUTE a[] = {{CKA_CLASS, &klass, sizeof klass}, {CKA_KEY_TYPE, &key_type, sizeof key_type}};
      call_index++;
      BEGIN("C_GetAttributeValue");
      note("C_GetAttributeValue(%lu, %lu, CKA_CLASS, CKA_KEY_TYPE)", (unsigned long)h, (unsigned long)objects[i]);
      struct expect ea = e;
      ea.has_output = 1;
      CK_RV ar = f2->C_GetAttributeValue(h, objects[i], a, 2);
      check_rv(ar, &ea);
      if (ar != CKR_OK && ar != CKR_ATTRIBUTE_TYPE_INVALID) violation("0x%lx reading the class of a found object", (unsigned long)ar);
      if (a[0].ulValueLen != sizeof klass) violation("CKA_CLASS of %lu bytes", (unsigned long)a[0].ulValueLen);
      object_info[i].slot = open_sessions[open_count - 1].slot;
      object_info[i].klass = klass;
      object_info[i].key_type = a[1].ulValueLen == sizeof key_type ? key_type : (CK_KEY_TYPE)-1;
    }
  }
  call_index++;
  BEGIN("C_FindObjectsFinal");
  note("C_FindObjectsFinal(%lu)", (unsigned long)h);
  check_rv(f2->C_FindObjectsFinal(h), &e);
}

static void call_open_session(void) {
  BEGIN("C_OpenSession");
  struct expect e = {.shape = S_OFFERED, .has_slot = 1};
  e.slot = pick_slot();
  static const CK_FLAGS flags_set[] = {CKF_SERIAL_SESSION, CKF_SERIAL_SESSION | CKF_RW_SESSION, 0, CKF_RW_SESSION, 0xff};
  CK_FLAGS flags = PICK(flags_set);
  CK_SESSION_HANDLE handle = 0x1234;
  int null_out = chance(5);
  e.bad_args = null_out;
  note("C_OpenSession(slot=%lu flags=0x%lx null=%d)", (unsigned long)e.slot, (unsigned long)flags, null_out);
  CK_RV rv = v2()->C_OpenSession(e.slot, flags, NULL, NULL, null_out ? NULL : &handle);
  check_rv(rv, &e);
  if (!null_out && rv != CKR_OK && handle != 0x1234) violation("*phSession written with rv 0x%lx", (unsigned long)rv);
  if (initialized && !null_out && !last_call_lost && slot_known(e.slot) && !(flags & CKF_SERIAL_SESSION) && rv != CKR_SESSION_PARALLEL_NOT_SUPPORTED) {
    violation("0x%lx without CKF_SERIAL_SESSION, expected CKR_SESSION_PARALLEL_NOT_SUPPORTED", (unsigned long)rv);
  }
  if (rv == CKR_OK) {
    if (handle == CK_INVALID_HANDLE) violation("session handle 0 (CK_INVALID_HANDLE)");
    for (int i = 0; i < open_count; i++) {
      if (open_sessions[i].handle == handle) violation("session handle %lu handed out twice", (unsigned long)handle);
    }
    for (int i = 0; i < stale_count; i++) {
      if (stale[i] == handle) violation("session handle %lu reused after C_CloseSession", (unsigned long)handle);
    }
    if (open_count == MAX_SESSIONS) {
      CK_RV closed = f2->C_CloseSession(handle);
      count_rv(closed);
      if (closed != CKR_OK) violation("closing a fresh session: 0x%lx", (unsigned long)closed);
      add_stale(handle);
    } else {
      open_sessions[open_count].handle = handle;
      open_sessions[open_count].slot = e.slot;
      open_count++;
      if (object_count < 9 && chance(50)) discover(handle);
    }
  }
}

static void call_close_session(void) {
  if (chance(15)) {
    BEGIN("C_CloseAllSessions");
    struct expect e = {.shape = S_OFFERED, .has_slot = 1};
    e.slot = pick_slot();
    note("C_CloseAllSessions(slot=%lu)", (unsigned long)e.slot);
    CK_RV rv = v2()->C_CloseAllSessions(e.slot);
    check_rv(rv, &e);
    if (rv == CKR_OK) {
      for (int i = open_count - 1; i >= 0; i--) {
        if (open_sessions[i].slot == e.slot) remove_open(i);
      }
    }
    return;
  }
  BEGIN("C_CloseSession");
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  note("C_CloseSession(%lu kind=%d)", (unsigned long)h, session_kind);
  CK_RV rv = v2()->C_CloseSession(h);
  check_rv(rv, &e);
  if (rv == CKR_OK && session_kind == H_VALID) remove_open(session_index);
  if (rv == CKR_OK && session_kind == H_RANDOM) add_stale(h); /* a handle it had not told us about */
}

static void call_session_info(void) {
  BEGIN("C_GetSessionInfo");
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  enum handle_kind kind = session_kind;
  int index = session_index;
  note("C_GetSessionInfo(%lu kind=%d)", (unsigned long)h, kind);
  STRUCT_CALL(CK_SESSION_INFO, v2()->C_GetSessionInfo(h, info), {
    if (kind == H_VALID && info->slotID != open_sessions[index].slot) violation("session of slot %lu reports slot %lu", (unsigned long)open_sessions[index].slot, (unsigned long)info->slotID);
    if (info->state > CKS_RW_SO_FUNCTIONS) violation("session state %lu", (unsigned long)info->state);
    if (!(info->flags & CKF_SERIAL_SESSION)) violation("session flags 0x%lx lack CKF_SERIAL_SESSION", (unsigned long)info->flags);
  });
}

static void call_login(void) {
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  static const CK_USER_TYPE users[] = {CKU_USER, CKU_SO, CKU_CONTEXT_SPECIFIC, 3, (CK_USER_TYPE)-1};
  CK_USER_TYPE user = PICK(users);
  struct input pin, name;
  input_new(&pin);
  int r = (int)below(3);
  if (r == 0) {
    BEGIN("C_Logout");
    note("C_Logout(%lu kind=%d)", (unsigned long)h, session_kind);
    check_rv(v2()->C_Logout(h), &e);
  } else if (r == 1) {
    BEGIN("C_Login");
    e.bad_args = pin.bad;
    e.request_bytes = pin.len;
    note("C_Login(%lu kind=%d user=%lu pin=%lu%s)", (unsigned long)h, session_kind, (unsigned long)user, (unsigned long)pin.len, pin.bad ? " NULL" : "");
    check_rv(v2()->C_Login(h, user, pin.p, pin.len), &e);
  } else {
    BEGIN("C_LoginUser");
    input_new(&name);
    e.bad_args = pin.bad || name.bad;
    e.request_bytes = pin.len + name.len;
    note("C_LoginUser(%lu kind=%d user=%lu pin=%lu name=%lu)", (unsigned long)h, session_kind, (unsigned long)user, (unsigned long)pin.len, (unsigned long)name.len);
    check_rv(f3->C_LoginUser(h, user, pin.p, pin.len, name.p, name.len), &e);
    input_free(&name);
  }
  input_free(&pin);
}

static void call_objects(void) {
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  CK_OBJECT_HANDLE o = pick_object();
  unsigned r = (unsigned)below(5);
  if (r == 0) {
    BEGIN("C_CreateObject");
    struct template t;
    template_new(&t, 0);
    CK_OBJECT_HANDLE created = 0x4321;
    int null_out = chance(10);
    e.bad_args = t.bad || null_out;
    note("C_CreateObject(%lu kind=%d count=%lu bad=%d)", (unsigned long)h, session_kind, (unsigned long)t.count, e.bad_args);
    CK_RV rv = v2()->C_CreateObject(h, t.ptr, t.count, null_out ? NULL : &created);
    check_rv(rv, &e);
    if (rv != CKR_OK && created != 0x4321) violation("*phObject written with rv 0x%lx", (unsigned long)rv);
    template_free(&t);
  } else if (r == 1) {
    BEGIN("C_DestroyObject");
    note("C_DestroyObject(%lu kind=%d object=%lu)", (unsigned long)h, session_kind, (unsigned long)o);
    check_rv(v2()->C_DestroyObject(h, o), &e);
  } else if (r == 2) {
    BEGIN("C_GetObjectSize");
    CK_ULONG size = 0x5555;
    int null_out = chance(10);
    e.bad_args = null_out;
    note("C_GetObjectSize(%lu kind=%d object=%lu)", (unsigned long)h, session_kind, (unsigned long)o);
    CK_RV rv = v2()->C_GetObjectSize(h, o, null_out ? NULL : &size);
    check_rv(rv, &e);
    if (rv != CKR_OK && size != 0x5555) violation("*pulSize written with rv 0x%lx", (unsigned long)rv);
  } else if (r == 3) {
    BEGIN("C_SetAttributeValue");
    struct template t;
    template_new(&t, 0);
    e.bad_args = t.bad;
    note("C_SetAttributeValue(%lu kind=%d object=%lu count=%lu)", (unsigned long)h, session_kind, (unsigned long)o, (unsigned long)t.count);
    check_rv(v2()->C_SetAttributeValue(h, o, t.ptr, t.count), &e);
    template_free(&t);
  } else {
    BEGIN("C_CopyObject");
    e.shape = S_UNOFFERED;
    struct template t;
    template_new(&t, 0);
    CK_OBJECT_HANDLE copy = 0x4321;
    note("C_CopyObject(%lu object=%lu)", (unsigned long)h, (unsigned long)o);
    CK_RV rv = v2()->C_CopyObject(h, o, t.ptr, t.count, chance(50) ? NULL : &copy);
    check_rv(rv, &e);
    if (copy != 0x4321) violation("*phNewObject written");
    template_free(&t);
  }
}

static void call_get_attributes(void) {
  BEGIN("C_GetAttributeValue");
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  CK_OBJECT_HANDLE o = pick_object();
  struct template t;
  template_new(&t, 1);
  e.bad_args = t.ptr == NULL && t.count != 0;
  e.has_output = 1;
  note("C_GetAttributeValue(%lu kind=%d object=%lu count=%lu%s)", (unsigned long)h, session_kind, (unsigned long)o, (unsigned long)t.count, t.ptr ? "" : " NULL");
  CK_RV rv = v2()->C_GetAttributeValue(h, o, t.ptr, t.count);
  check_rv(rv, &e);
  int writes = rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL;
  int unavailable = 0, too_small = 0;
  for (CK_ULONG i = 0; t.ptr != NULL && i < t.count; i++) {
    CK_ATTRIBUTE *a = &t.attrs[i];
    CK_ULONG len = a->ulValueLen;
    if (!writes && len != t.capacity[i]) violation("attribute %lu: ulValueLen changed with rv 0x%lx", (unsigned long)i, (unsigned long)rv);
    if (writes && len == CK_UNAVAILABLE_INFORMATION) {
      unavailable++;
      if (a->pValue != NULL) too_small++;
    }
    if (writes && len != CK_UNAVAILABLE_INFORMATION && a->pValue != NULL && len > t.capacity[i]) {
      violation("attribute %lu (type 0x%lx): ulValueLen %lu for a %lu-byte buffer, must be CK_UNAVAILABLE_INFORMATION", (unsigned long)i,
                (unsigned long)a->type, (unsigned long)len, (unsigned long)t.capacity[i]);
    }
    if (t.has_value[i]) {
      size_t written = writes && len != CK_UNAVAILABLE_INFORMATION && len <= t.capacity[i] ? len : 0;
      guarded_check(&t.values[i], written, "attribute value");
    }
  }
  if (rv == CKR_OK && unavailable) violation("CKR_OK with %d attribute(s) CK_UNAVAILABLE_INFORMATION", unavailable);
  if ((rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID) && !unavailable) {
    violation("rv 0x%lx but no attribute is CK_UNAVAILABLE_INFORMATION", (unsigned long)rv);
  }
  if (rv == CKR_BUFFER_TOO_SMALL && !too_small) violation("CKR_BUFFER_TOO_SMALL but no attribute with a buffer is CK_UNAVAILABLE_INFORMATION");
  template_free(&t);
}

static void call_find(void) {
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  unsigned r = (unsigned)below(3);
  if (r == 0) {
    BEGIN("C_FindObjectsInit");
    struct template t;
    template_new(&t, 0);
    if (chance(40)) t.count = 0, t.bad = 0;
    e.bad_args = t.bad;
    note("C_FindObjectsInit(%lu kind=%d count=%lu bad=%d)", (unsigned long)h, session_kind, (unsigned long)t.count, t.bad);
    check_rv(v2()->C_FindObjectsInit(h, t.ptr, t.count), &e);
    template_free(&t);
  } else if (r == 1) {
    BEGIN("C_FindObjects");
    CK_ULONG caps[] = {0, 1, 3, 16, 64};
    CK_ULONG max = PICK(caps);
    struct guarded g;
    guarded_new(&g, max * sizeof(CK_OBJECT_HANDLE));
    int null_list = chance(5), null_count = chance(5);
    CK_ULONG count = 0x7777;
    e.bad_args = null_count || (null_list && max != 0);
    note("C_FindObjects(%lu kind=%d max=%lu null_list=%d null_count=%d)", (unsigned long)h, session_kind, (unsigned long)max, null_list, null_count);
    CK_RV rv = v2()->C_FindObjects(h, null_list ? NULL : (CK_OBJECT_HANDLE_PTR)body(&g), max, null_count ? NULL : &count);
    check_rv(rv, &e);
    if (rv == CKR_OK && count > max) violation("%lu objects for at most %lu", (unsigned long)count, (unsigned long)max);
    if (rv != CKR_OK && count != 0x7777) violation("*pulObjectCount written with rv 0x%lx", (unsigned long)rv);
    guarded_check(&g, rv == CKR_OK ? count * sizeof(CK_OBJECT_HANDLE) : 0, "object list");
    if (rv == CKR_OK) record_objects((const CK_OBJECT_HANDLE *)body(&g), count);
    guarded_free(&g);
  } else {
    BEGIN("C_FindObjectsFinal");
    note("C_FindObjectsFinal(%lu kind=%d)", (unsigned long)h, session_kind);
    check_rv(v2()->C_FindObjectsFinal(h), &e);
  }
}

typedef CK_RV (*init_fn)(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
typedef CK_RV (*in_out_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*final_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);
typedef CK_RV (*in_fn)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);

static void call_in_out(int forced, CK_SESSION_HANDLE forced_session);

static void call_init(void) {
  CK_FUNCTION_LIST *t = v2();
  struct {
    const char *name;
    init_fn fn;
    enum shape shape;
  } inits[] = {
      {"C_SignInit", t->C_SignInit, S_OFFERED},
      {"C_VerifyInit", t->C_VerifyInit, S_OFFERED},
      {"C_EncryptInit", t->C_EncryptInit, S_OFFERED},
      {"C_DecryptInit", t->C_DecryptInit, S_OFFERED},
      {"C_DigestInit", NULL, S_OFFERED},
      {"C_SignRecoverInit", t->C_SignRecoverInit, S_UNOFFERED},
      {"C_VerifyRecoverInit", t->C_VerifyRecoverInit, S_UNOFFERED},
      {"C_MessageEncryptInit", f3->C_MessageEncryptInit, S_OFFERED},
      {"C_MessageDecryptInit", f3->C_MessageDecryptInit, S_OFFERED},
      {"C_MessageSignInit", f3->C_MessageSignInit, S_UNOFFERED},
      {"C_MessageVerifyInit", f3->C_MessageVerifyInit, S_UNOFFERED},
  };
  unsigned i = (unsigned)(chance(85) ? below(5) : below(sizeof inits / sizeof inits[0]));
  BEGIN(inits[i].name);
  struct expect e = {.shape = inits[i].shape, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  CK_OBJECT_HANDLE key = pick_object();
  struct mechanism m;
  mechanism_new(&m);
  /* Half the time a key of the session's token that suits the operation, and a mechanism for it. */
  static const CK_OBJECT_CLASS wanted[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY};
  if (i < 4 && session_kind == H_VALID && chance(50)) {
    for (int j = 0; j < object_count; j++) {
      if (object_info[j].klass == wanted[i] && object_info[j].slot == open_sessions[session_index].slot) {
        key = objects[j];
        mechanism_free(&m);
        memset(&m, 0, sizeof m);
        m.ptr = &m.m;
        coherent_mechanism(&m, object_info[j].key_type);
        break;
      }
    }
  }
  e.bad_args = m.ptr == NULL;
  note("%s(%lu kind=%d mech=%s0x%lx param=%lu%s key=%lu)", inits[i].name, (unsigned long)h, session_kind, m.ptr ? "" : "NULL ",
       (unsigned long)m.m.mechanism, (unsigned long)m.m.ulParameterLen, m.m.pParameter ? "" : " (NULL)", (unsigned long)key);
  CK_RV rv = inits[i].fn != NULL ? inits[i].fn(h, m.ptr, key) : t->C_DigestInit(h, m.ptr);
  check_rv(rv, &e);
  mechanism_free(&m);
  /* Carry the operation on, on the same session: Sign, Verify, Encrypt, Decrypt, Digest. */
  static const int single_part[] = {0, -1, 1, 2, 3};
  if (rv == CKR_OK && i < 5 && chance(80)) {
    call_index++;
    if (single_part[i] >= 0) {
      call_in_out(single_part[i], h);
    } else {
      BEGIN("C_Verify");
      struct expect ev = {.shape = S_OFFERED, .has_session = 1};
      struct input data, sig;
      good_input(&data);
      input_new(&sig);
      ev.bad_args = sig.bad;
      ev.request_bytes = data.len + sig.len;
      note("C_Verify(%lu after C_VerifyInit data=%lu sig=%lu%s)", (unsigned long)h, (unsigned long)data.len, (unsigned long)sig.len, sig.bad ? " NULL" : "");
      CK_RV vr = t->C_Verify(h, data.p, data.len, sig.p, sig.len);
      check_rv(vr, &ev);
      if (vr == CKR_OK) violation("a random signature verified");
      input_free(&sig);
      input_free(&data);
    }
  }
}

/* forced >= 0: that function on session h with a useful input (the step after a successful Init). */
static void call_in_out(int forced, CK_SESSION_HANDLE forced_session) {
  CK_FUNCTION_LIST *t = v2();
  struct {
    const char *name;
    in_out_fn fn;
    enum shape shape;
  } fns[] = {
      {"C_Sign", t->C_Sign, S_OFFERED},
      {"C_Encrypt", t->C_Encrypt, S_OFFERED},
      {"C_Decrypt", t->C_Decrypt, S_OFFERED},
      {"C_Digest", t->C_Digest, S_OFFERED},
      {"C_EncryptUpdate", t->C_EncryptUpdate, S_OFFERED},
      {"C_DecryptUpdate", t->C_DecryptUpdate, S_OFFERED},
      {"C_SignRecover", t->C_SignRecover, S_UNOFFERED},
      {"C_VerifyRecover", t->C_VerifyRecover, S_UNOFFERED},
      {"C_DigestEncryptUpdate", t->C_DigestEncryptUpdate, S_UNOFFERED},
      {"C_DecryptDigestUpdate", t->C_DecryptDigestUpdate, S_UNOFFERED},
      {"C_SignEncryptUpdate", t->C_SignEncryptUpdate, S_UNOFFERED},
      {"C_DecryptVerifyUpdate", t->C_DecryptVerifyUpdate, S_UNOFFERED},
  };
  unsigned i = forced >= 0 ? (unsigned)forced : (unsigned)(chance(85) ? below(6) : below(sizeof fns / sizeof fns[0]));
  BEGIN(fns[i].name);
  struct expect e = {.shape = fns[i].shape, .has_session = 1, .has_output = 1};
  CK_SESSION_HANDLE h = forced >= 0 ? forced_session : pick_session();
  struct input in;
  struct output out;
  if (forced >= 0 && chance(80)) {
    good_input(&in);
  } else {
    input_new(&in);
  }
  output_new(&out);
  e.bad_args = in.bad || out.null_len;
  e.request_bytes = in.len;
  note("%s(%lu kind=%d in=%lu%s out=%s cap=%lu%s)", fns[i].name, (unsigned long)h, session_kind, (unsigned long)in.len, in.bad ? " NULL" : "",
       out.present ? "buf" : "NULL", (unsigned long)out.capacity, out.null_len ? " pulLen=NULL" : "");
  CK_RV rv = fns[i].fn(h, in.p, in.len, out_ptr(&out), out_len(&out));
  check_rv(rv, &e);
  output_check(&out, rv, fns[i].name);
  /* A length query keeps the operation: a buffer of the length it gave must then be big enough. */
  if (rv == CKR_OK && !out.present && !out.null_len && e.shape == S_OFFERED && out.len <= (1u << 20) && chance(70)) {
    struct output again;
    memset(&again, 0, sizeof again);
    guarded_new(&again.g, out.len);
    again.present = 1;
    again.len = again.capacity = out.len;
    call_index++;
    note("%s(%lu again with the length queried: %lu)", fns[i].name, (unsigned long)h, (unsigned long)out.len);
    CK_RV rv2 = fns[i].fn(h, in.p, in.len, body(&again.g), &again.len);
    check_rv(rv2, &e);
    if (rv2 == CKR_BUFFER_TOO_SMALL) violation("CKR_BUFFER_TOO_SMALL for the %lu bytes the length query asked for", (unsigned long)out.len);
    output_check(&again, rv2, fns[i].name);
    output_free(&again);
  }
  output_free(&out);
  input_free(&in);
}

static void call_final(void) {
  CK_FUNCTION_LIST *t = v2();
  struct {
    const char *name;
    final_fn fn;
    enum shape shape;
  } fns[] = {
      {"C_SignFinal", t->C_SignFinal, S_OFFERED},
      {"C_EncryptFinal", t->C_EncryptFinal, S_OFFERED},
      {"C_DecryptFinal", t->C_DecryptFinal, S_OFFERED},
      {"C_DigestFinal", t->C_DigestFinal, S_OFFERED},
      {"C_GetOperationState", t->C_GetOperationState, S_UNOFFERED},
  };
  unsigned i = (unsigned)below(sizeof fns / sizeof fns[0]);
  BEGIN(fns[i].name);
  struct expect e = {.shape = fns[i].shape, .has_session = 1, .has_output = 1};
  CK_SESSION_HANDLE h = pick_session();
  struct output out;
  output_new(&out);
  e.bad_args = out.null_len;
  note("%s(%lu kind=%d out=%s cap=%lu%s)", fns[i].name, (unsigned long)h, session_kind, out.present ? "buf" : "NULL", (unsigned long)out.capacity,
       out.null_len ? " pulLen=NULL" : "");
  CK_RV rv = fns[i].fn(h, out_ptr(&out), out_len(&out));
  check_rv(rv, &e);
  output_check(&out, rv, fns[i].name);
  output_free(&out);
}

static void call_in(void) {
  CK_FUNCTION_LIST *t = v2();
  struct {
    const char *name;
    in_fn fn;
    enum shape shape;
  } fns[] = {
      {"C_SignUpdate", t->C_SignUpdate, S_OFFERED},
      {"C_VerifyUpdate", t->C_VerifyUpdate, S_OFFERED},
      {"C_DigestUpdate", t->C_DigestUpdate, S_OFFERED},
      {"C_VerifyFinal", t->C_VerifyFinal, S_OFFERED},
      {"C_SeedRandom", t->C_SeedRandom, S_OFFERED},
      {"C_Verify", NULL, S_OFFERED},
      {"C_GenerateRandom", NULL, S_OFFERED},
  };
  unsigned i = (unsigned)below(sizeof fns / sizeof fns[0]);
  BEGIN(fns[i].name);
  struct expect e = {.shape = fns[i].shape, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  struct input in;
  input_new(&in);
  e.bad_args = in.bad;
  if (i == 5) {
    struct input sig;
    input_new(&sig);
    e.bad_args = in.bad || sig.bad;
    e.request_bytes = in.len + sig.len;
    note("C_Verify(%lu kind=%d data=%lu%s sig=%lu%s)", (unsigned long)h, session_kind, (unsigned long)in.len, in.bad ? " NULL" : "",
         (unsigned long)sig.len, sig.bad ? " NULL" : "");
    check_rv(t->C_Verify(h, in.p, in.len, sig.p, sig.len), &e);
    input_free(&sig);
  } else if (i == 6) {
    /* The output of C_GenerateRandom is exactly ulRandomLen bytes: a guarded buffer of that size. */
    struct guarded g;
    CK_ULONG len = in.len;
    int null_out = in.p == NULL;
    /* Between 64 KiB and the helper's 16 MiB limit the helper asks the vault 128 bytes at a time: about 4 s per
     * MiB against the emulator (reported). Lengths past the limit are refused at once and stay in. */
    if (!null_out && len > 65536 && len <= (16ul << 20)) len = below(65536);
    if (!null_out) {
      if (in.p == big_in) guarded_big(&g, len);
      else guarded_new(&g, len);
    }
    note("C_GenerateRandom(%lu kind=%d len=%lu%s)", (unsigned long)h, session_kind, (unsigned long)len, null_out ? " NULL" : "");
    CK_RV rv = t->C_GenerateRandom(h, null_out ? NULL : body(&g), len);
    check_rv(rv, &e);
    if (!null_out) {
      guarded_check(&g, rv == CKR_OK ? len : 0, "random data");
      guarded_free(&g);
    }
  } else {
    /* A seed need not travel (the module has no use for it): past the frame limit it is not refused. */
    e.request_bytes = i == 4 ? 0 : in.len;
    note("%s(%lu kind=%d in=%lu%s)", fns[i].name, (unsigned long)h, session_kind, (unsigned long)in.len, in.bad ? " NULL" : "");
    check_rv(fns[i].fn(h, in.p, in.len), &e);
  }
  input_free(&in);
}

static void call_misc(void) {
  CK_FUNCTION_LIST *t = v2();
  CK_SESSION_HANDLE h = pick_session();
  struct expect e = {.shape = S_UNOFFERED, .has_session = 1};
  struct input a, b;
  input_new(&a);
  input_new(&b);
  unsigned r = (unsigned)below(12);
  CK_OBJECT_HANDLE out_handle = 0x4321;
  struct mechanism m;
  mechanism_new(&m);
  struct template tpl;
  template_new(&tpl, 0);
  CK_ULONG len = 16;
  CK_FLAGS flags = next64();
  switch (r) {
    case 0:
      BEGIN("C_GetFunctionStatus");
      e.shape = S_PARALLEL;
      check_rv(t->C_GetFunctionStatus(h), &e);
      break;
    case 1:
      BEGIN("C_CancelFunction");
      e.shape = S_PARALLEL;
      check_rv(t->C_CancelFunction(h), &e);
      break;
    case 2:
      BEGIN("C_InitToken");
      check_rv(t->C_InitToken(pick_slot(), a.p, a.len, b.p), &e);
      break;
    case 3:
      BEGIN("C_InitPIN");
      check_rv(t->C_InitPIN(h, a.p, a.len), &e);
      break;
    case 4:
      BEGIN("C_SetPIN");
      check_rv(t->C_SetPIN(h, a.p, a.len, b.p, b.len), &e);
      break;
    case 5:
      BEGIN("C_SetOperationState");
      check_rv(t->C_SetOperationState(h, a.p, a.len, pick_object(), pick_object()), &e);
      break;
    case 6:
      BEGIN("C_DeriveKey");
      check_rv(t->C_DeriveKey(h, m.ptr, pick_object(), tpl.ptr, tpl.count, &out_handle), &e);
      break;
    case 7: {
      BEGIN("C_WaitForSlotEvent");
      CK_SLOT_ID slot = 0x99;
      /* Only with CKF_DONT_BLOCK: a blocking wait is allowed to wait for ever. */
      check_rv(t->C_WaitForSlotEvent(CKF_DONT_BLOCK, chance(50) ? NULL : &slot, chance(10) ? &slot : NULL), &e);
      if (slot != 0x99) violation("*pSlot written");
      break;
    }
    case 8: {
      BEGIN("C_SessionCancel");
      e.shape = S_OFFERED;
      static const CK_FLAGS cancel[] = {CKF_SIGN, CKF_VERIFY, CKF_ENCRYPT, CKF_DECRYPT, CKF_DIGEST, 0x40, 0};
      flags = chance(70) ? PICK(cancel) : flags;
      note("C_SessionCancel(%lu kind=%d flags=0x%lx)", (unsigned long)h, session_kind, (unsigned long)flags);
      check_rv(f3->C_SessionCancel(h, flags), &e);
      break;
    }
    case 9:
      BEGIN("C_SignMessage");
      check_rv(f3->C_SignMessage(h, m.m.pParameter, m.m.ulParameterLen, a.p, a.len, b.p, &len), &e);
      break;
    case 10:
      BEGIN("C_DecryptMessageNext");
      check_rv(f3->C_DecryptMessageNext(h, m.m.pParameter, m.m.ulParameterLen, a.p, a.len, b.p, &len, flags), &e);
      break;
    default: {
      BEGIN("C_MessageFinal");
      CK_RV (*finals[])(CK_SESSION_HANDLE) = {f3->C_MessageSignFinal, f3->C_MessageVerifyFinal};
      check_rv(PICK(finals)(h), &e);
      break;
    }
  }
  if (r != 8) note("%s(%lu kind=%d ...)", current_function, (unsigned long)h, session_kind);
  if (out_handle != 0x4321 || len != 16) violation("an output written by a function the module does not offer");
  template_free(&tpl);
  mechanism_free(&m);
  input_free(&a);
  input_free(&b);
}

/* C_GenerateKey, C_GenerateKeyPair, C_WrapKey and C_UnwrapKey (v2.40 section 5.14): handles are written only on
 * CKR_OK, wrapped keys follow the OUT rules. */
static void call_keys(void) {
  CK_FUNCTION_LIST *t = v2();
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  struct mechanism m;
  mechanism_new(&m);
  struct template pub, priv;
  template_new(&pub, 0);
  template_new(&priv, 0);
  CK_OBJECT_HANDLE first = 0x4321, second = 0x4321;
  int null_first = chance(5), null_second = chance(5);
  CK_RV rv;
  unsigned r = (unsigned)below(4);
  if (r == 0) {
    BEGIN("C_GenerateKey");
    e.bad_args = m.ptr == NULL || pub.bad || null_first;
    note("C_GenerateKey(%lu kind=%d mech=0x%lx count=%lu bad=%d)", (unsigned long)h, session_kind, (unsigned long)m.m.mechanism,
         (unsigned long)pub.count, e.bad_args);
    rv = t->C_GenerateKey(h, m.ptr, pub.ptr, pub.count, null_first ? NULL : &first);
    check_rv(rv, &e);
  } else if (r == 1) {
    BEGIN("C_GenerateKeyPair");
    e.bad_args = m.ptr == NULL || pub.bad || priv.bad || null_first || null_second;
    note("C_GenerateKeyPair(%lu kind=%d mech=0x%lx counts=%lu,%lu bad=%d)", (unsigned long)h, session_kind, (unsigned long)m.m.mechanism,
         (unsigned long)pub.count, (unsigned long)priv.count, e.bad_args);
    rv = t->C_GenerateKeyPair(h, m.ptr, pub.ptr, pub.count, priv.ptr, priv.count, null_first ? NULL : &first, null_second ? NULL : &second);
    check_rv(rv, &e);
    if (rv == CKR_OK && (first == 0x4321 || second == 0x4321)) violation("CKR_OK without both handles");
  } else if (r == 2) {
    BEGIN("C_WrapKey");
    struct output out;
    output_new(&out);
    e.has_output = 1;
    e.bad_args = m.ptr == NULL || out.null_len;
    CK_OBJECT_HANDLE wrapping = pick_object(), key = pick_object();
    note("C_WrapKey(%lu kind=%d mech=0x%lx wrapping=%lu key=%lu out=%s cap=%lu%s)", (unsigned long)h, session_kind,
         (unsigned long)m.m.mechanism, (unsigned long)wrapping, (unsigned long)key, out.present ? "buf" : "NULL", (unsigned long)out.capacity,
         out.null_len ? " pulLen=NULL" : "");
    rv = t->C_WrapKey(h, m.ptr, wrapping, key, out_ptr(&out), out_len(&out));
    check_rv(rv, &e);
    output_check(&out, rv, "C_WrapKey");
    output_free(&out);
  } else {
    BEGIN("C_UnwrapKey");
    struct input wrapped;
    input_new(&wrapped);
    e.bad_args = m.ptr == NULL || wrapped.bad || pub.bad || null_first;
    e.request_bytes = wrapped.len;
    CK_OBJECT_HANDLE unwrapping = pick_object();
    note("C_UnwrapKey(%lu kind=%d mech=0x%lx unwrapping=%lu wrapped=%lu%s count=%lu)", (unsigned long)h, session_kind,
         (unsigned long)m.m.mechanism, (unsigned long)unwrapping, (unsigned long)wrapped.len, wrapped.bad ? " NULL" : "", (unsigned long)pub.count);
    rv = t->C_UnwrapKey(h, m.ptr, unwrapping, wrapped.p, wrapped.len, pub.ptr, pub.count, null_first ? NULL : &first);
    check_rv(rv, &e);
    input_free(&wrapped);
  }
  if (rv != CKR_OK && (first != 0x4321 || second != 0x4321)) violation("a new object handle written with rv 0x%lx", (unsigned long)rv);
  template_free(&pub);
  template_free(&priv);
  mechanism_free(&m);
}

/* The pParameter of C_EncryptMessage / C_DecryptMessage: a CK_GCM_MESSAGE_PARAMS with guarded IV and tag buffers
 * (sometimes with a NULL pointer or a tag length the shim must pass on as malformed), nothing, or bytes of another
 * size, which the shim must never read as the struct. */
struct message_parameter {
  CK_GCM_MESSAGE_PARAMS gcm, copy;
  void *ptr;
  CK_ULONG len;
  struct guarded iv, tag;
  int has_iv, has_tag;
  uint8_t *raw;
};

static void message_parameter_new(struct message_parameter *p) {
  memset(p, 0, sizeof *p);
  unsigned r = (unsigned)below(100);
  if (r < 10) return;
  if (r < 15) { /* NULL with a length */
    p->len = chance(50) ? sizeof p->gcm : (CK_ULONG)next64();
    return;
  }
  if (r < 25) {
    size_t n = below(100);
    if (n == sizeof p->gcm) n++;
    p->raw = malloc(n + 1);
    random_bytes(p->raw, n);
    p->ptr = p->raw;
    p->len = n;
    return;
  }
  static const CK_ULONG iv_lens[] = {12, 12, 12, 0, 1, 16, 60, 128};
  static const CK_ULONG tag_bits[] = {128, 128, 128, 96, 104, 112, 120, 64, 32, 0, 100, 7, 129};
  p->gcm.ulIvLen = PICK(iv_lens);
  p->gcm.ulTagBits = PICK(tag_bits);
  p->gcm.ulIvFixedBits = chance(80) ? 0 : below(200);
  p->gcm.ivGenerator = chance(90) ? below(4) : next64();
  if (chance(95)) {
    guarded_new(&p->iv, p->gcm.ulIvLen);
    p->has_iv = 1;
    p->gcm.pIv = body(&p->iv);
  }
  if (chance(95)) {
    guarded_new(&p->tag, p->gcm.ulTagBits / 8 + (p->gcm.ulTagBits % 8 != 0));
    p->has_tag = 1;
    p->gcm.pTag = body(&p->tag);
  }
  p->copy = p->gcm;
  p->ptr = &p->gcm;
  p->len = sizeof p->gcm;
}

/* The IV and tag may be written only by C_EncryptMessage on CKR_OK with output; the struct itself never. */
static void message_parameter_free(struct message_parameter *p, int may_write) {
  if (p->ptr == &p->gcm && memcmp(&p->gcm, &p->copy, sizeof p->gcm) != 0) violation("the module changed the CK_GCM_MESSAGE_PARAMS");
  if (p->has_iv) guarded_check(&p->iv, may_write ? p->iv.cap : 0, "pIv");
  if (p->has_tag) guarded_check(&p->tag, may_write ? p->tag.cap : 0, "pTag");
  if (p->has_iv) guarded_free(&p->iv);
  if (p->has_tag) guarded_free(&p->tag);
  free(p->raw);
}

/* The v3.0 single-part message API (section 5.13): Init, EncryptMessage / DecryptMessage, Final. */
static void call_message(void) {
  struct expect e = {.shape = S_OFFERED, .has_session = 1};
  CK_SESSION_HANDLE h = pick_session();
  unsigned r = (unsigned)below(6);
  int encrypt = r % 2 == 0;
  if (r < 2) {
    BEGIN(encrypt ? "C_MessageEncryptInit" : "C_MessageDecryptInit");
    struct mechanism m;
    mechanism_new(&m);
    if (chance(50)) {
      mechanism_free(&m);
      memset(&m, 0, sizeof m);
      m.m.mechanism = CKM_AES_GCM;
      m.ptr = &m.m;
    }
    e.bad_args = m.ptr == NULL;
    CK_OBJECT_HANDLE key = pick_object();
    note("%s(%lu kind=%d mech=%s0x%lx key=%lu)", current_function, (unsigned long)h, session_kind, m.ptr ? "" : "NULL ",
         (unsigned long)m.m.mechanism, (unsigned long)key);
    check_rv((encrypt ? f3->C_MessageEncryptInit : f3->C_MessageDecryptInit)(h, m.ptr, key), &e);
    mechanism_free(&m);
  } else if (r < 4) {
    BEGIN(encrypt ? "C_EncryptMessage" : "C_DecryptMessage");
    struct message_parameter p;
    message_parameter_new(&p);
    struct input aad, data;
    input_new(&aad);
    input_new(&data);
    struct output out;
    output_new(&out);
    e.has_output = 1;
    e.bad_args = aad.bad || data.bad || out.null_len;
    e.request_bytes = aad.len + data.len;
    note("%s(%lu kind=%d param=%lu%s aad=%lu%s data=%lu%s out=%s cap=%lu%s)", current_function, (unsigned long)h, session_kind,
         (unsigned long)p.len, p.ptr ? "" : " (NULL)", (unsigned long)aad.len, aad.bad ? " NULL" : "", (unsigned long)data.len,
         data.bad ? " NULL" : "", out.present ? "buf" : "NULL", (unsigned long)out.capacity, out.null_len ? " pulLen=NULL" : "");
    CK_RV rv = (encrypt ? f3->C_EncryptMessage : f3->C_DecryptMessage)(h, p.ptr, p.len, aad.p, aad.len, data.p, data.len,
                                                                       out_ptr(&out), out_len(&out));
    check_rv(rv, &e);
    output_check(&out, rv, current_function);
    message_parameter_free(&p, encrypt && rv == CKR_OK && out.present);
    output_free(&out);
    input_free(&data);
    input_free(&aad);
  } else {
    BEGIN(encrypt ? "C_MessageEncryptFinal" : "C_MessageDecryptFinal");
    note("%s(%lu kind=%d)", current_function, (unsigned long)h, session_kind);
    check_rv((encrypt ? f3->C_MessageEncryptFinal : f3->C_MessageDecryptFinal)(h), &e);
  }
}

/* ---- main ------------------------------------------------------------------------------------------------ */

static void load(const char *path) {
  void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (module == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    exit(2);
  }
  CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  CK_C_GetInterface get_interface = (CK_C_GetInterface)dlsym(module, "C_GetInterface");
  CK_VERSION v30 = {3, 0};
  CK_INTERFACE_PTR found = NULL;
  if (get_list == NULL || get_list(&f2) != CKR_OK || get_interface == NULL ||
      get_interface((CK_UTF8CHAR_PTR) "PKCS 11", &v30, &found, 0) != CKR_OK) {
    fprintf(stderr, "C_GetFunctionList or C_GetInterface(\"PKCS 11\", 3.0) failed\n");
    exit(2);
  }
  f3 = found->pFunctionList;
  if (f2->version.major != 2 || f2->version.minor != 40 || f3->version.major != 3 || f3->version.minor != 0) {
    fprintf(stderr, "unexpected table versions %d.%d and %d.%d\n", f2->version.major, f2->version.minor, f3->version.major, f3->version.minor);
    exit(2);
  }
  /* The 3.0 table begins with the 2.40 functions: the fuzzer takes them from either. */
  if (memcmp((const char *)f2 + sizeof(CK_VERSION), (const char *)f3 + sizeof(CK_VERSION),
             sizeof(CK_FUNCTION_LIST) - sizeof(CK_VERSION)) != 0) {
    fprintf(stderr, "the 3.0 table does not begin with the 2.40 functions\n");
    exit(2);
  }
}

static int compare_counts(const void *a, const void *b) {
  long ca = ((const long *)a)[1], cb = ((const long *)b)[1];
  return ca < cb ? 1 : ca > cb ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: api-fuzz MODULE SEED CALLS [BIG_MIB [FUNCTION:RV ...]]\n");
    return 2;
  }
  for (int i = 5; i < argc && deviation_count < MAX_DEVIATIONS; i++) {
    char *colon = strchr(argv[i], ':');
    if (colon == NULL) return 2;
    *colon = 0;
    deviations[deviation_count].name = argv[i];
    deviations[deviation_count++].rv = strtoul(colon + 1, NULL, 0);
  }
  seed = strtoull(argv[2], NULL, 0);
  long budget = strtol(argv[3], NULL, 0);
  size_t big_mib = argc >= 5 ? strtoul(argv[4], NULL, 0) : 65;
  rng = seed;
  load(argv[1]);
  if (big_mib > 0) {
    big_bytes = big_mib << 20;
    big_in = malloc(big_bytes);
    if (big_in == NULL) return 2;
    memset(big_in, 0x42, big_bytes);
    guarded_new(&big_out, big_bytes);
    big_out.shared = 1;
  }

  /* AKV_FUZZ_KILLS=1: SIGKILL the helper now and then (the shim replaces it and hands it the open sessions). */
  kills_enabled = getenv("AKV_FUZZ_KILLS") != NULL;
  signal(SIGALRM, on_alarm);
  long slow = 0;
  while (call_index < budget) {
    alarm(STEP_SECONDS);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long first = call_index;
    unsigned r = (unsigned)below(1000);
    if (initialized && open_count == 0 && chance(60)) {
      call_open_session();
    } else if (r < 4 && initialized && kills_enabled) {
      kill_helper();
    } else if (r < 12) {
      call_finalize();
    } else if (r < 30 || (!initialized && r < 600)) {
      call_initialize();
    } else if (r < 45) {
      call_interfaces();
    } else if (r < 60) {
      call_get_info();
    } else if (r < 90) {
      call_slot_list();
    } else if (r < 120) {
      call_slot_info((int)below(2));
    } else if (r < 160) {
      call_mechanisms();
    } else if (r < 230) {
      call_open_session();
    } else if (r < 260) {
      call_close_session();
    } else if (r < 290) {
      call_session_info();
    } else if (r < 330) {
      call_login();
    } else if (r < 370) {
      call_objects();
    } else if (r < 450) {
      call_get_attributes();
    } else if (r < 540) {
      call_find();
    } else if (r < 680) {
      call_init();
    } else if (r < 830) {
      call_in_out(-1, 0);
    } else if (r < 880) {
      call_final();
    } else if (r < 940) {
      call_in();
    } else if (r < 960) {
      call_keys();
    } else if (r < 980) {
      call_message();
    } else {
      call_misc();
    }
    /* Slow steps are reported (not judged: the machine may be loaded), to show where the time goes. */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (ms >= 1000) {
      slow++;
      for (long i = first; i <= call_index; i++) fprintf(stderr, "SLOW %ld ms: call %ld: %s\n", ms, i, trace[i % TRACE_LINES]);
    }
    call_index++;
  }
  alarm(0);
  if (initialized) {
    current_function = "C_Finalize";
    CK_RV rv = f2->C_Finalize(NULL);
    count_rv(rv);
    if (rv != CKR_OK) violation("0x%lx", (unsigned long)rv);
    if (live_mutexes != 0) violation("%d mutex(es) not destroyed", live_mutexes);
  }

  long sorted[HISTOGRAM][2];
  int kinds = 0;
  for (; kinds < HISTOGRAM && histogram[kinds].count != 0; kinds++) {
    sorted[kinds][0] = (long)histogram[kinds].rv;
    sorted[kinds][1] = histogram[kinds].count;
  }
  qsort(sorted, (size_t)kinds, sizeof sorted[0], compare_counts);
  printf("seed %llu\ncalls %ld\nviolations 0\nrvs %d\n", seed, calls_made, kinds);
  printf("inputs.nearLimit %d\ninputs.pastLimit %ld\nslowSteps %ld\n", NEAR_LIMIT_FRAMES - near_limit_budget, past_limit_inputs, slow);
  printf("respawn.kills %ld\nrespawn.lostCalls %ld\n", helper_kills, lost_calls);
  printf("summary seed=%llu calls=%ld violations=0 top:", seed, calls_made);
  for (int i = 0; i < kinds && i < 8; i++) printf(" 0x%lx=%ld", (unsigned long)sorted[i][0], sorted[i][1]);
  printf("\n");
  for (int i = 0; i < kinds; i++) printf("rv.0x%lx %ld\n", (unsigned long)sorted[i][0], sorted[i][1]);
  for (int i = 0; i < deviation_count; i++) printf("deviation.%s.0x%lx %ld\n", deviations[i].name + 2, (unsigned long)deviations[i].rv, deviations[i].seen);
  for (int i = 0; i < FUNCTIONS && successes[i].name != NULL; i++) printf("ok.%s %ld\n", successes[i].name + 2, successes[i].ok);
  return 0;
}
