/*
 * Benchmark driver: loads the module the way a C host does (dlopen + C_GetFunctionList), then either measures
 * a cold start (C_Initialize + find + first signature) or signs from N threads for a fixed time.
 * Prints one JSON object on stdout. The signatures themselves are checked by bench/run.ts with node:crypto. With THREADS > 0 it also
 * reports the helper's CPU time per signature (helperCpuMsPerOp) and its own (hostCpuMsPerOp).
 *
 * usage: sign-driver MODULE TOKEN_LABEL MECH(ecdsa|rsa|round-trip) THREADS SECONDS DIGEST_HEX [SIG_OUT_FILE]
 *   THREADS = 0 means: cold start only. DIGEST_HEX is a SHA-256 digest, so the caller can verify the signature
 *   over the message it hashed.
 *   SIGN_DRIVER_HOLD=1 with THREADS = 0: after the cold start, keep a session open and the module initialized until
 *   stdin reaches end of file (bench/agent.ts measures the memory of helpers serving clients that stay).
 *   SIGN_DRIVER_WARMUP_SECONDS (default 0): before measuring, sign from WARMUP_THREADS threads for this long, so
 *   that the figures describe a helper whose JavaScript the JIT has already optimised, like the floor's process.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p11;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static CK_MECHANISM_TYPE mechanism;
static double deadline;
/* MECH "round-trip": measure one helper round trip (C_GetSessionInfo) instead of a signature. */
static int round_trips_only;
static CK_BYTE digest[32];
static CK_BYTE digest_info[19 + 32] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                       0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) of a process, from /proc/PID/stat; -1 when unreadable. */
static double process_cpu(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long utime, stime;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The helper the module spawned: our only child process. 0 when not found. */
static pid_t find_helper(void) {
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  pid_t self = getpid(), found = 0;
  struct dirent *entry;
  while (!found && (entry = readdir(proc)) != NULL) {
    int pid = atoi(entry->d_name);
    if (pid <= 0) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    int ppid;
    if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == self) found = pid;
  }
  closedir(proc);
  return found;
}

static double self_cpu(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, CK_RV rv) {
  fprintf(stderr, "sign-driver: %s failed: 0x%lx\n", what, (unsigned long)rv);
  exit(1);
}

static void check(const char *what, CK_RV rv) {
  if (rv != CKR_OK) die(what, rv);
}

static void find_slot_and_key(const char *label) {
  CK_ULONG count = 0;
  check("C_GetSlotList", p11->C_GetSlotList(CK_TRUE, NULL, &count));
  CK_SLOT_ID *slots = calloc(count ? count : 1, sizeof *slots);
  check("C_GetSlotList", p11->C_GetSlotList(CK_TRUE, slots, &count));
  size_t label_len = strlen(label);
  int found = 0;
  for (CK_ULONG i = 0; i < count && !found; i++) {
    CK_TOKEN_INFO info;
    check("C_GetTokenInfo", p11->C_GetTokenInfo(slots[i], &info));
    size_t n = sizeof info.label;
    while (n > 0 && info.label[n - 1] == ' ') n--;
    if (n == label_len && memcmp(info.label, label, n) == 0) {
      slot = slots[i];
      found = 1;
    }
  }
  free(slots);
  if (!found) {
    fprintf(stderr, "sign-driver: no token labelled %s\n", label);
    exit(1);
  }
  CK_SESSION_HANDLE session;
  check("C_OpenSession", p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_OBJECT_CLASS klass = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &klass, sizeof klass}};
  check("C_FindObjectsInit", p11->C_FindObjectsInit(session, tmpl, 1));
  CK_ULONG n = 0;
  check("C_FindObjects", p11->C_FindObjects(session, &key, 1, &n));
  check("C_FindObjectsFinal", p11->C_FindObjectsFinal(session));
  if (n != 1) {
    fprintf(stderr, "sign-driver: no private key on token %s\n", label);
    exit(1);
  }
  check("C_CloseSession", p11->C_CloseSession(session));
}

static CK_ULONG sign_once(CK_SESSION_HANDLE session, CK_BYTE *sig, CK_ULONG cap) {
  CK_MECHANISM mech = {mechanism, NULL, 0};
  CK_BYTE *input = mechanism == CKM_ECDSA ? digest : digest_info;
  CK_ULONG input_len = mechanism == CKM_ECDSA ? sizeof digest : sizeof digest_info;
  check("C_SignInit", p11->C_SignInit(session, &mech, key));
  CK_ULONG len = cap;
  check("C_Sign", p11->C_Sign(session, input, input_len, sig, &len));
  return len;
}

struct worker {
  pthread_t thread;
  unsigned long ops;
};

/* Many threads warm up faster than one: at 20 ms of vault latency a single thread signs only 50 times a second. */
#define WARMUP_THREADS 16

static void *work(void *arg);

static unsigned long run_workers(int threads, double seconds) {
  struct worker *workers = calloc((size_t)threads, sizeof *workers);
  deadline = now() + seconds;
  for (int i = 0; i < threads; i++) pthread_create(&workers[i].thread, NULL, work, &workers[i]);
  unsigned long ops = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(workers[i].thread, NULL);
    ops += workers[i].ops;
  }
  free(workers);
  return ops;
}

static void *work(void *arg) {
  struct worker *w = arg;
  CK_SESSION_HANDLE session;
  check("C_OpenSession", p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_BYTE sig[1024];
  CK_SESSION_INFO info;
  while (now() < deadline) {
    if (round_trips_only)
      check("C_GetSessionInfo", p11->C_GetSessionInfo(session, &info));
    else
      sign_once(session, sig, sizeof sig);
    w->ops++;
  }
  p11->C_CloseSession(session);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 7 || strlen(argv[6]) != 2 * sizeof digest) {
    fprintf(stderr, "usage: sign-driver MODULE TOKEN_LABEL ecdsa|rsa|round-trip THREADS SECONDS DIGEST_HEX [SIG_OUT_FILE]\n");
    return 2;
  }
  mechanism = strcmp(argv[3], "rsa") == 0 ? CKM_RSA_PKCS : CKM_ECDSA;
  round_trips_only = strcmp(argv[3], "round-trip") == 0;
  int threads = atoi(argv[4]);
  double seconds = atof(argv[5]);
  for (size_t i = 0; i < sizeof digest; i++) {
    unsigned int byte;
    if (sscanf(argv[6] + 2 * i, "%2x", &byte) != 1) return 2;
    digest[i] = (CK_BYTE)byte;
  }
  memcpy(digest_info + 19, digest, sizeof digest);

  double t0 = now();
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "sign-driver: %s\n", dlerror());
    return 1;
  }
  CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  check("C_GetFunctionList", get_list(&p11));
  CK_C_INITIALIZE_ARGS args = {0};
  args.flags = CKF_OS_LOCKING_OK;
  check("C_Initialize", p11->C_Initialize(&args));
  double t_init = now();
  find_slot_and_key(argv[2]);
  CK_SESSION_HANDLE session;
  check("C_OpenSession", p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_BYTE sig[1024];
  CK_ULONG sig_len = sign_once(session, sig, sizeof sig);
  double t_first = now();
  if (argc > 7) {
    FILE *f = fopen(argv[7], "wb");
    if (!f || fwrite(sig, 1, sig_len, f) != sig_len) return 1;
    fclose(f);
  }
  const char *hold = getenv("SIGN_DRIVER_HOLD");
  int holding = threads == 0 && hold && strcmp(hold, "1") == 0;
  if (!holding) p11->C_CloseSession(session);

  if (threads == 0) {
    printf("{\"initializeMs\":%.3f,\"coldFirstSignatureMs\":%.3f}\n", (t_init - t0) * 1e3, (t_first - t0) * 1e3);
    if (holding) {
      fflush(stdout);
      char buf[256];
      while (fread(buf, 1, sizeof buf, stdin) > 0) {
      }
      p11->C_CloseSession(session);
    }
  } else {
    const char *warmup = getenv("SIGN_DRIVER_WARMUP_SECONDS");
    if (warmup && atof(warmup) > 0) run_workers(WARMUP_THREADS, atof(warmup));
    /* CPU per signature of the helper and of this host process: far steadier than latency on a shared machine. */
    pid_t helper = find_helper();
    double helper_cpu0 = helper ? process_cpu(helper) : -1, self_cpu0 = self_cpu();
    double start = now();
    unsigned long ops = run_workers(threads, seconds);
    double elapsed = now() - start;
    double helper_cpu = helper && helper_cpu0 >= 0 ? process_cpu(helper) - helper_cpu0 : -1;
    double host_cpu = self_cpu() - self_cpu0;
    double per_op = 1e3 / (double)(ops ? ops : 1);
    printf("{\"threads\":%d,\"operations\":%lu,\"seconds\":%.3f,\"perSecond\":%.1f,\"meanLatencyMs\":%.4f,"
           "\"helperCpuMsPerOp\":%.4f,\"hostCpuMsPerOp\":%.4f}\n",
           threads, ops, elapsed, ops / elapsed, elapsed * threads * 1e3 / (double)(ops ? ops : 1),
           helper_cpu >= 0 ? helper_cpu * per_op : -1.0, host_cpu * per_op);
  }
  check("C_Finalize", p11->C_Finalize(NULL));
  return 0;
}
