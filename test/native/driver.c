/* Drives build/azure-keyvault-pkcs11.so against test/fixtures/fake-helper.mjs for the ava tests in this folder.
 * Usage: driver <module.so> <scenario> [args]. Prints "key value" lines on stdout for the test to assert on;
 * it never judges results itself, except that it exits non-zero when the module cannot be loaded. */
#include <dlfcn.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "../fixtures/pkcs11-v30.h"

static CK_FUNCTION_LIST_PTR f;
static void *module;

#define PRINT_RV(key, rv) printf("%s 0x%lx\n", key, (unsigned long)(rv))

static void load(const char *path) {
  module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (module == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    exit(2);
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  if (get == NULL || get(&f) != CKR_OK) {
    fprintf(stderr, "C_GetFunctionList failed\n");
    exit(2);
  }
}

static CK_RV sign(const char *data, CK_BYTE *out, CK_ULONG *out_len) {
  CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
  CK_RV rv = f->C_SignInit(1, &mech, 1);
  if (rv != CKR_OK) return rv;
  return f->C_Sign(1, (CK_BYTE_PTR)data, strlen(data), out, out_len);
}

/* Signs data and checks the echo; prints nothing. Returns 1 when the signature equals the data. */
static int sign_matches(const char *data) {
  CK_BYTE out[256];
  CK_ULONG len = sizeof out;
  return sign(data, out, &len) == CKR_OK && len == strlen(data) && memcmp(out, data, len) == 0;
}

/* The fake helper's JSON report about itself (object 99, CKA_VALUE); caller frees. */
static char *helper_report(void) {
  CK_ATTRIBUTE a = {CKA_VALUE, NULL, 0};
  if (f->C_GetAttributeValue(1, 99, &a, 1) != CKR_OK) return NULL;
  a.pValue = calloc(1, a.ulValueLen + 1);
  if (f->C_GetAttributeValue(1, 99, &a, 1) != CKR_OK) return NULL;
  return a.pValue;
}

static long helper_pid(void) {
  char *report = helper_report();
  if (report == NULL) return -1;
  long pid = strtol(strstr(report, "\"pid\":") + 6, NULL, 10);
  free(report);
  return pid;
}

/* kill() with a pid of 0 or -1 would signal the whole process group or every process: only ever a real pid. */
static void kill_helper(long pid, int sig) {
  if (pid > 1) kill((pid_t)pid, sig);
}

/* Until the killed process is wholly dead, a zombie waiting to be reaped (or gone): a SIGKILL is not instant on a
 * loaded machine, and a request sent before the kill took effect is lost in flight, not "never sent". The group
 * leader turns 'Z' while the process's other threads still exit and its socket is still open, so the threads are
 * counted too. Bounded: 5 s. The process is not reaped here. */
static void wait_until_dead(long pid) {
  char stat_path[64], task_path[64];
  snprintf(stat_path, sizeof stat_path, "/proc/%ld/stat", pid);
  snprintf(task_path, sizeof task_path, "/proc/%ld/task", pid);
  for (int tries = 0; tries < 1000; tries++) {
    FILE *f = fopen(stat_path, "r");
    if (f == NULL) return;
    char state = 0;
    int fields = fscanf(f, "%*d %*s %c", &state);
    fclose(f);
    DIR *tasks = opendir(task_path);
    int threads = 0;
    if (tasks != NULL) {
      for (struct dirent *e; (e = readdir(tasks)) != NULL;) threads += e->d_name[0] != '.';
      closedir(tasks);
    }
    if (fields == 1 && (state == 'Z' || state == 'X') && threads <= 1) return;
    usleep(5000);
  }
}

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
  closedir(d);
  return n - (strcmp(path, "/proc/self/fd") == 0); /* the descriptor opendir used */
}

static int count_children(void) {
  /* waitpid(-1) fails with ECHILD when this process has no children at all, zombies included. */
  int status;
  pid_t got = waitpid(-1, &status, WNOHANG);
  return got == -1 && errno == ECHILD ? 0 : 1;
}

/* Sockets above the standard descriptors. */
static int count_sockets(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    char path[300], target[128];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t len = readlink(path, target, sizeof target - 1);
    /* 0-2 may be sockets too: libuv hands a child its stdio as socketpairs. */
    if (len > 0 && atoi(e->d_name) > 2) {
      target[len] = '\0';
      n += strncmp(target, "socket:", 7) == 0;
    }
  }
  closedir(d);
  return n;
}

static void scenario_basic(void) {
  CK_INFO info;
  PRINT_RV("pre.GetInfo", f->C_GetInfo(&info));
  PRINT_RV("pre.Finalize", f->C_Finalize(NULL));
  PRINT_RV("pre.InitToken", f->C_InitToken(0, NULL, 0, NULL));
  PRINT_RV("pre.GetFunctionStatus", f->C_GetFunctionStatus(1));

  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof args);
  args.pReserved = &args;
  PRINT_RV("init.reserved", f->C_Initialize(&args));
  memset(&args, 0, sizeof args);
  args.CreateMutex = (CK_CREATEMUTEX)1;
  PRINT_RV("init.partialMutex", f->C_Initialize(&args));
  memset(&args, 0, sizeof args);
  args.flags = CKF_LIBRARY_CANT_CREATE_OS_THREADS | CKF_OS_LOCKING_OK;
  PRINT_RV("init.cantCreateThreads", f->C_Initialize(&args));
  printf("init.cantCreateThreads.threads %d\n", count_dir("/proc/self/task"));
  printf("init.cantCreateThreads.sign %d\n", sign_matches("no threads"));
  PRINT_RV("init.cantCreateThreads.Finalize", f->C_Finalize(NULL));
  memset(&args, 0, sizeof args);
  args.flags = CKF_OS_LOCKING_OK;
  PRINT_RV("init", f->C_Initialize(&args));
  PRINT_RV("init.again", f->C_Initialize(NULL));

  memset(&info, 0, sizeof info);
  PRINT_RV("GetInfo", f->C_GetInfo(&info));
  printf("GetInfo.manufacturer %.32s|\n", (const char *)info.manufacturerID);
  printf("GetInfo.cryptoki %d.%d\n", info.cryptokiVersion.major, info.cryptokiVersion.minor);
  PRINT_RV("GetInfo.null", f->C_GetInfo(NULL));

  CK_ULONG count = 0;
  PRINT_RV("slots.query", f->C_GetSlotList(CK_TRUE, NULL, &count));
  printf("slots.query.count %lu\n", count);
  CK_SLOT_ID slots[8] = {0};
  count = 1;
  PRINT_RV("slots.small", f->C_GetSlotList(CK_TRUE, slots, &count));
  printf("slots.small.count %lu\n", count);
  printf("slots.small.first %lu\n", slots[0]);
  count = 8;
  PRINT_RV("slots.full", f->C_GetSlotList(CK_TRUE, slots, &count));
  printf("slots.full.count %lu\n", count);
  printf("slots.full.ids %lu,%lu,%lu\n", slots[0], slots[1], slots[2]);
  PRINT_RV("slots.nullCount", f->C_GetSlotList(CK_TRUE, slots, NULL));

  CK_SESSION_HANDLE session = 0;
  PRINT_RV("OpenSession", f->C_OpenSession(10, CKF_SERIAL_SESSION, NULL, NULL, &session));
  printf("OpenSession.handle %lu\n", session);
  PRINT_RV("OpenSession.null", f->C_OpenSession(10, CKF_SERIAL_SESSION, NULL, NULL, NULL));

  CK_ATTRIBUTE query[2] = {{CKA_LABEL, NULL, 0}, {CKA_ID, NULL, 0}};
  PRINT_RV("attr.query", f->C_GetAttributeValue(1, 1, query, 2));
  printf("attr.query.lengths %lu,%lu\n", query[0].ulValueLen, query[1].ulValueLen);
  char label[3] = {0};
  CK_BYTE id[16] = {0};
  CK_ATTRIBUTE small[2] = {{CKA_LABEL, label, sizeof label}, {CKA_ID, id, sizeof id}};
  PRINT_RV("attr.small", f->C_GetAttributeValue(1, 1, small, 2));
  printf("attr.small.labelLen 0x%lx\n", small[0].ulValueLen);
  printf("attr.small.idLen %lu\n", small[1].ulValueLen);
  printf("attr.small.id %d,%d,%d,%d\n", id[0], id[1], id[2], id[3]);
  CK_BYTE value[8];
  CK_ATTRIBUTE sensitive[2] = {{CKA_VALUE, value, sizeof value}, {CKA_ID, id, sizeof id}};
  PRINT_RV("attr.sensitive", f->C_GetAttributeValue(1, 1, sensitive, 2));
  printf("attr.sensitive.valueLen 0x%lx\n", sensitive[0].ulValueLen);
  printf("attr.sensitive.idLen %lu\n", sensitive[1].ulValueLen);
  CK_ATTRIBUTE unknown[1] = {{0x7777, value, sizeof value}};
  PRINT_RV("attr.unknown", f->C_GetAttributeValue(1, 1, unknown, 1));
  printf("attr.unknown.len 0x%lx\n", unknown[0].ulValueLen);
  PRINT_RV("attr.nullTemplate", f->C_GetAttributeValue(1, 1, NULL, 1));
  CK_ULONG klass = 0;
  CK_ATTRIBUTE cls[1] = {{CKA_CLASS, &klass, sizeof klass}};
  PRINT_RV("attr.class", f->C_GetAttributeValue(1, 1, cls, 1));
  printf("attr.class.value %lu\n", klass);

  CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
  PRINT_RV("SignInit", f->C_SignInit(1, &mech, 1));
  PRINT_RV("SignInit.nullMech", f->C_SignInit(1, NULL, 1));
  const char *data = "hello, shim";
  CK_ULONG len = 0;
  PRINT_RV("sign.query", f->C_Sign(1, (CK_BYTE_PTR)data, strlen(data), NULL, &len));
  printf("sign.query.len %lu\n", len);
  CK_BYTE out[64] = {0};
  len = 4;
  PRINT_RV("sign.small", f->C_Sign(1, (CK_BYTE_PTR)data, strlen(data), out, &len));
  printf("sign.small.len %lu\n", len);
  printf("sign.small.untouched %d\n", out[0] == 0);
  len = sizeof out;
  PRINT_RV("sign.full", f->C_Sign(1, (CK_BYTE_PTR)data, strlen(data), out, &len));
  printf("sign.full.value %.*s\n", (int)len, (const char *)out);
  PRINT_RV("sign.nullLen", f->C_Sign(1, (CK_BYTE_PTR)data, strlen(data), out, NULL));
  PRINT_RV("sign.nullData", f->C_Sign(1, NULL, 5, out, &len));
  len = sizeof out;
  PRINT_RV("sign.garbage", sign("garbage", out, &len));
  PRINT_RV("sign.afterGarbage", sign("still fine", out, &len));
  /* A well-formed OUT followed by a stray byte: nothing may be written, not even the length. */
  memset(out, 0, sizeof out);
  len = sizeof out;
  PRINT_RV("sign.trailing", sign("trailing", out, &len));
  printf("sign.trailing.len %lu\n", len);
  printf("sign.trailing.untouched %d\n", out[0] == 0);

  CK_BYTE random[32] = {0};
  PRINT_RV("random", f->C_GenerateRandom(1, random, sizeof random));
  printf("random.last 0x%x\n", random[31]);

  PRINT_RV("InitToken", f->C_InitToken(0, NULL, 0, NULL));
  PRINT_RV("GetFunctionStatus", f->C_GetFunctionStatus(1));
  PRINT_RV("CancelFunction", f->C_CancelFunction(1));
  PRINT_RV("WaitForSlotEvent", f->C_WaitForSlotEvent(0, NULL, NULL));

  PRINT_RV("Finalize.reserved", f->C_Finalize(&args));
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  PRINT_RV("post.GetInfo", f->C_GetInfo(&info));
  PRINT_RV("post.Finalize", f->C_Finalize(NULL));
}


static void scenario_interfaces(void) {
  get_interface_list_t list = (get_interface_list_t)dlsym(module, "C_GetInterfaceList");
  get_interface_t get = (get_interface_t)dlsym(module, "C_GetInterface");
  CK_ULONG count = 0;
  PRINT_RV("list.query", list(NULL, &count));
  printf("list.count %lu\n", count);
  interface_t entries[4];
  CK_ULONG one = 1;
  PRINT_RV("list.small", list(entries, &one));
  count = 4;
  PRINT_RV("list.full", list(entries, &count));
  for (CK_ULONG i = 0; i < count; i++) {
    CK_VERSION *v = entries[i].pFunctionList;
    printf("list.%lu %s %d.%d flags=%lu\n", i, (char *)entries[i].pInterfaceName, v->major, v->minor,
           entries[i].flags);
  }
  interface_t *found = NULL;
  PRINT_RV("get.default", get(NULL, NULL, &found, 0));
  CK_VERSION *v = found->pFunctionList;
  printf("get.default.version %d.%d\n", v->major, v->minor);
  CK_VERSION v240 = {2, 40};
  PRINT_RV("get.v240", get((CK_UTF8CHAR *)"PKCS 11", &v240, &found, 0));
  v = found->pFunctionList;
  printf("get.v240.version %d.%d\n", v->major, v->minor);
  printf("get.v240.sameAsGetFunctionList %d\n", (void *)found->pFunctionList == (void *)f);
  PRINT_RV("get.unknownName", get((CK_UTF8CHAR *)"Vendor thing", NULL, &found, 0));
  PRINT_RV("get.forkSafe", get(NULL, NULL, &found, 1));
  /* In the 3.0 table, the v2.40 part must hold the same functions and C_LoginUser must follow the 3.0 pair. */
  get(NULL, NULL, &found, 0);
  void **table3 = (void **)((char *)found->pFunctionList + offsetof(CK_FUNCTION_LIST, C_Initialize));
  void **table2 = (void **)&f->C_Initialize;
  int same = 1;
  for (int i = 0; i < 68; i++) same &= table3[i] == table2[i];
  printf("table3.v2PartSame %d\n", same);
  printf("table3.GetInterfaceList %d\n", table3[68] == (void *)list);
  printf("table3.GetInterface %d\n", table3[69] == (void *)get);
  printf("table3.LoginUser %d\n", table3[70] == dlsym(module, "C_LoginUser"));
  printf("table3.MessageVerifyFinal %d\n", table3[91] == dlsym(module, "C_MessageVerifyFinal"));
}

static void print_hex(const char *key, const CK_BYTE *p, size_t n) {
  printf("%s ", key);
  for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
  printf("%s\n", n == 0 ? "-" : "");
}

/* The part of the fake helper's report that records what the shim sent ("seen"). */
static void print_seen(const char *key) {
  char *report = helper_report();
  const char *seen = report != NULL ? strstr(report, "\"seen\":") : NULL;
  printf("%s %s\n", key, seen != NULL ? seen + 7 : "null");
  free(report);
}

static void scenario_keys(void) {
  PRINT_RV("init", f->C_Initialize(NULL));
  CK_ULONG value_len = 32;
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE secret[2] = {{CKA_LABEL, "k1", 2}, {CKA_VALUE_LEN, &value_len, sizeof value_len}};
  CK_MECHANISM aes_gen = {CKM_AES_KEY_GEN, NULL, 0}, invalid = {0x7001, NULL, 0}, truncated = {0x7002, NULL, 0};
  CK_OBJECT_HANDLE key = 0x4321, pub = 0x4321, priv = 0x4321;

  PRINT_RV("gk.ok", f->C_GenerateKey(1, &aes_gen, secret, 2, &key));
  printf("gk.ok.handle 0x%lx\n", key);
  print_seen("gk.seen");
  key = 0x4321;
  PRINT_RV("gk.error", f->C_GenerateKey(1, &invalid, secret, 2, &key));
  printf("gk.error.handle 0x%lx\n", key);
  PRINT_RV("gk.malformed", f->C_GenerateKey(1, &truncated, secret, 2, &key));
  printf("gk.malformed.handle 0x%lx\n", key);
  PRINT_RV("gk.nullHandle", f->C_GenerateKey(1, &aes_gen, secret, 2, NULL));
  PRINT_RV("gk.nullMech", f->C_GenerateKey(1, NULL, secret, 2, &key));
  PRINT_RV("gk.nullTemplate", f->C_GenerateKey(1, &aes_gen, NULL, 2, &key));

  CK_MECHANISM ec_gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
  CK_BYTE p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
  CK_ATTRIBUTE pub_tpl[1] = {{CKA_EC_PARAMS, p256, sizeof p256}};
  CK_ATTRIBUTE priv_tpl[2] = {{CKA_LABEL, "pair", 4}, {CKA_SIGN, &yes, sizeof yes}};
  PRINT_RV("gkp.ok", f->C_GenerateKeyPair(1, &ec_gen, pub_tpl, 1, priv_tpl, 2, &pub, &priv));
  printf("gkp.ok.handles 0x%lx,0x%lx\n", pub, priv);
  print_seen("gkp.seen");
  pub = priv = 0x4321;
  PRINT_RV("gkp.error", f->C_GenerateKeyPair(1, &invalid, pub_tpl, 1, priv_tpl, 2, &pub, &priv));
  printf("gkp.error.handles 0x%lx,0x%lx\n", pub, priv);
  PRINT_RV("gkp.malformed", f->C_GenerateKeyPair(1, &truncated, pub_tpl, 1, priv_tpl, 2, &pub, &priv));
  printf("gkp.malformed.handles 0x%lx,0x%lx\n", pub, priv);
  PRINT_RV("gkp.nullPublic", f->C_GenerateKeyPair(1, &ec_gen, pub_tpl, 1, priv_tpl, 2, NULL, &priv));
  PRINT_RV("gkp.nullPrivate", f->C_GenerateKeyPair(1, &ec_gen, pub_tpl, 1, priv_tpl, 2, &pub, NULL));
  PRINT_RV("gkp.nullTemplate", f->C_GenerateKeyPair(1, &ec_gen, pub_tpl, 1, NULL, 1, &pub, &priv));

  /* C_WrapKey follows the OUT rules: 40 bytes counting up from the key handle. */
  CK_BYTE iv8[8] = {0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6};
  CK_MECHANISM kw = {CKM_AES_KEY_WRAP, iv8, sizeof iv8};
  CK_BYTE wrapped[64] = {0};
  CK_ULONG len = 0;
  PRINT_RV("wrap.query", f->C_WrapKey(1, &kw, 7, 9, NULL, &len));
  printf("wrap.query.len %lu\n", len);
  print_seen("wrap.seen");
  len = 8;
  PRINT_RV("wrap.small", f->C_WrapKey(1, &kw, 7, 9, wrapped, &len));
  printf("wrap.small.len %lu\n", len);
  printf("wrap.small.untouched %d\n", wrapped[0] == 0);
  len = sizeof wrapped;
  PRINT_RV("wrap.full", f->C_WrapKey(1, &kw, 7, 9, wrapped, &len));
  print_hex("wrap.full.value", wrapped, len);
  memset(wrapped, 0, sizeof wrapped);
  len = sizeof wrapped;
  PRINT_RV("wrap.malformed", f->C_WrapKey(1, &kw, 7, 666, wrapped, &len));
  printf("wrap.malformed.len %lu\n", len);
  printf("wrap.malformed.untouched %d\n", wrapped[0] == 0 && wrapped[39] == 0);
  PRINT_RV("wrap.nullLen", f->C_WrapKey(1, &kw, 7, 9, wrapped, NULL));
  PRINT_RV("wrap.nullMech", f->C_WrapKey(1, NULL, 7, 9, wrapped, &len));

  CK_BYTE blob[24];
  memset(blob, 0x33, sizeof blob);
  key = 0x4321;
  PRINT_RV("unwrap.ok", f->C_UnwrapKey(1, &kw, 7, blob, sizeof blob, secret, 1, &key));
  printf("unwrap.ok.handle 0x%lx\n", key);
  print_seen("unwrap.seen");
  key = 0x4321;
  PRINT_RV("unwrap.error", f->C_UnwrapKey(1, &invalid, 7, blob, sizeof blob, secret, 1, &key));
  printf("unwrap.error.handle 0x%lx\n", key);
  PRINT_RV("unwrap.garbage", f->C_UnwrapKey(1, &kw, 7, (CK_BYTE_PTR) "garbage", 7, secret, 1, &key));
  printf("unwrap.garbage.handle 0x%lx\n", key);
  PRINT_RV("unwrap.nullHandle", f->C_UnwrapKey(1, &kw, 7, blob, sizeof blob, secret, 1, NULL));
  PRINT_RV("unwrap.nullWrapped", f->C_UnwrapKey(1, &kw, 7, NULL, 24, secret, 1, &key));

  /* Mechanism parameters: CK_GCM_PARAMS for CKM_AES_GCM (kind 4), raw bytes for the rest. */
  CK_BYTE iv12[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  CK_GCM_PARAMS gcm = {iv12, sizeof iv12, 96, (CK_BYTE_PTR) "hdr", 3, 128};
  CK_MECHANISM aes_gcm = {CKM_AES_GCM, &gcm, sizeof gcm};
  PRINT_RV("gcm.init", f->C_EncryptInit(1, &aes_gcm, 5));
  print_seen("gcm.seen");
  aes_gcm.ulParameterLen = sizeof gcm - 1;
  PRINT_RV("gcm.short", f->C_EncryptInit(1, &aes_gcm, 5));
  print_seen("gcm.short.seen");
  aes_gcm.ulParameterLen = sizeof gcm;
  gcm.pAAD = NULL;
  PRINT_RV("gcm.nullAad", f->C_EncryptInit(1, &aes_gcm, 5));
  print_seen("gcm.nullAad.seen");
  CK_MECHANISM aes_cbc = {CKM_AES_CBC_PAD, iv12, 12};
  PRINT_RV("cbc.init", f->C_EncryptInit(1, &aes_cbc, 5));
  print_seen("cbc.seen");
  PRINT_RV("Finalize", f->C_Finalize(NULL));
}


static CK_BYTE msg_iv[12], msg_tag[16], msg_out[64];
static gcm_message_params_t msg_params;

static void reset_message_buffers(void) {
  for (int i = 0; i < 12; i++) msg_iv[i] = (CK_BYTE)(0x10 + i);
  memset(msg_tag, 0, sizeof msg_tag);
  memset(msg_out, 0, sizeof msg_out);
  msg_params = (gcm_message_params_t){msg_iv, sizeof msg_iv, 0, 3 /* CKG_GENERATE_RANDOM */, msg_tag, 128};
}

/* Prints rv, *pulLen and whether the IV, tag and output buffer kept their contents. */
static void encrypt_message(message_t encrypt, const char *key, const char *aad, int with_output, CK_ULONG capacity) {
  reset_message_buffers();
  const char *plaintext = "attack at dawn";
  CK_ULONG len = capacity;
  char name[64];
  PRINT_RV(key, encrypt(1, &msg_params, sizeof msg_params, (CK_BYTE_PTR)aad, strlen(aad), (CK_BYTE_PTR)plaintext,
                        strlen(plaintext), with_output ? msg_out : NULL, &len));
  snprintf(name, sizeof name, "%s.len", key);
  printf("%s %lu\n", name, len);
  CK_BYTE iv0[12];
  for (int i = 0; i < 12; i++) iv0[i] = (CK_BYTE)(0x10 + i);
  snprintf(name, sizeof name, "%s.ivUntouched", key);
  printf("%s %d\n", name, memcmp(msg_iv, iv0, sizeof iv0) == 0);
  snprintf(name, sizeof name, "%s.tag", key);
  print_hex(name, msg_tag, sizeof msg_tag);
  snprintf(name, sizeof name, "%s.out", key);
  print_hex(name, msg_out, msg_out[0] == 0 ? 0 : strlen(plaintext));
}

static void scenario_message(void) {
  message_init_t encrypt_init = (message_init_t)dlsym(module, "C_MessageEncryptInit");
  message_t encrypt = (message_t)dlsym(module, "C_EncryptMessage");
  message_final_t encrypt_final = (message_final_t)dlsym(module, "C_MessageEncryptFinal");
  message_init_t decrypt_init = (message_init_t)dlsym(module, "C_MessageDecryptInit");
  message_t decrypt = (message_t)dlsym(module, "C_DecryptMessage");
  message_final_t decrypt_final = (message_final_t)dlsym(module, "C_MessageDecryptFinal");
  message_begin_t encrypt_begin = (message_begin_t)dlsym(module, "C_EncryptMessageBegin");
  message_begin_t decrypt_begin = (message_begin_t)dlsym(module, "C_DecryptMessageBegin");
  PRINT_RV("pre.EncryptMessage", encrypt(1, NULL, 0, NULL, 0, NULL, 0, NULL, NULL));
  PRINT_RV("init", f->C_Initialize(NULL));

  CK_MECHANISM aes_gcm = {CKM_AES_GCM, NULL, 0};
  PRINT_RV("enc.init", encrypt_init(1, &aes_gcm, 5));
  PRINT_RV("enc.init.nullMech", encrypt_init(1, NULL, 5));
  encrypt_message(encrypt, "enc.query", "hdr", 0, 0);
  encrypt_message(encrypt, "enc.small", "hdr", 1, 2);
  encrypt_message(encrypt, "enc.full", "hdr", 1, sizeof msg_out);
  print_hex("enc.full.iv", msg_iv, sizeof msg_iv);
  print_seen("enc.full.seen");
  encrypt_message(encrypt, "enc.badIv", "bad-iv", 1, sizeof msg_out);
  encrypt_message(encrypt, "enc.badTag", "bad-tag", 1, sizeof msg_out);
  encrypt_message(encrypt, "enc.ivOnQuery", "iv-on-query", 0, 0);
  encrypt_message(encrypt, "enc.afterBad", "hdr", 1, sizeof msg_out);

  /* Parameters the shim cannot read travel as malformed (kind 3); the fake helper answers MECHANISM_PARAM_INVALID. */
  CK_ULONG len = sizeof msg_out;
  reset_message_buffers();
  msg_params.ulTagBits = 100;
  PRINT_RV("enc.oddTagBits", encrypt(1, &msg_params, sizeof msg_params, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  print_seen("enc.oddTagBits.seen");
  reset_message_buffers();
  msg_params.pIv = NULL;
  PRINT_RV("enc.nullIv", encrypt(1, &msg_params, sizeof msg_params, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  PRINT_RV("enc.shortParam", encrypt(1, &msg_params, sizeof msg_params - 8, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  PRINT_RV("enc.nullParamWithLen", encrypt(1, NULL, 48, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  /* No parameter at all: output only. */
  reset_message_buffers();
  len = sizeof msg_out;
  PRINT_RV("enc.noParam", encrypt(1, NULL, 0, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  printf("enc.noParam.len %lu\n", len);
  print_seen("enc.noParam.seen");
  reset_message_buffers();
  PRINT_RV("enc.nullLen", encrypt(1, &msg_params, sizeof msg_params, NULL, 0, (CK_BYTE_PTR) "x", 1, msg_out, NULL));
  PRINT_RV("enc.nullAad", encrypt(1, &msg_params, sizeof msg_params, NULL, 3, (CK_BYTE_PTR) "x", 1, msg_out, &len));
  PRINT_RV("enc.nullPlaintext", encrypt(1, &msg_params, sizeof msg_params, NULL, 0, NULL, 1, msg_out, &len));
  PRINT_RV("enc.final", encrypt_final(1));

  PRINT_RV("dec.init", decrypt_init(1, &aes_gcm, 5));
  CK_BYTE plain[32] = {0};
  CK_BYTE cipher[4] = {'a' ^ 0x55, 'b' ^ 0x55, 'c' ^ 0x55, 'd' ^ 0x55};
  reset_message_buffers();
  len = 0;
  PRINT_RV("dec.query", decrypt(1, &msg_params, sizeof msg_params, NULL, 0, cipher, 4, NULL, &len));
  printf("dec.query.len %lu\n", len);
  len = 2;
  PRINT_RV("dec.small", decrypt(1, &msg_params, sizeof msg_params, NULL, 0, cipher, 4, plain, &len));
  printf("dec.small.len %lu\n", len);
  printf("dec.small.untouched %d\n", plain[0] == 0);
  len = sizeof plain;
  PRINT_RV("dec.full", decrypt(1, &msg_params, sizeof msg_params, NULL, 0, cipher, 4, plain, &len));
  printf("dec.full.value %.*s\n", (int)len, (const char *)plain);
  memset(plain, 0, sizeof plain);
  len = sizeof plain;
  PRINT_RV("dec.garbage", decrypt(1, &msg_params, sizeof msg_params, (CK_BYTE_PTR) "garbage", 7, cipher, 4, plain, &len));
  printf("dec.garbage.len %lu\n", len);
  printf("dec.garbage.untouched %d\n", plain[0] == 0);
  PRINT_RV("dec.nullLen", decrypt(1, &msg_params, sizeof msg_params, NULL, 0, cipher, 4, plain, NULL));
  PRINT_RV("dec.nullCiphertext", decrypt(1, &msg_params, sizeof msg_params, NULL, 0, NULL, 4, plain, &len));
  PRINT_RV("dec.final", decrypt_final(1));

  PRINT_RV("enc.begin", encrypt_begin(1, &msg_params, sizeof msg_params, NULL, 0));
  PRINT_RV("dec.begin", decrypt_begin(1, &msg_params, sizeof msg_params, NULL, 0));
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  PRINT_RV("post.MessageEncryptFinal", encrypt_final(1));
}

struct worker {
  int index;
  int rounds;
  int ok;
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  for (int i = 0; i < w->rounds; i++) {
    char data[64];
    /* Every call sleeps a little in the helper, so that many are in flight at once and replies overtake. */
    snprintf(data, sizeof data, "sleep:%d thread %d round %d", (w->index * 7 + i * 3) % 40, w->index, i);
    w->ok += sign_matches(data);
  }
  return NULL;
}

static void scenario_threads(int threads, int rounds) {
  PRINT_RV("init", f->C_Initialize(NULL));
  pthread_t ids[64];
  struct worker workers[64];
  for (int i = 0; i < threads; i++) {
    workers[i] = (struct worker){i, rounds, 0};
    pthread_create(&ids[i], NULL, worker_main, &workers[i]);
  }
  int ok = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(ids[i], NULL);
    ok += workers[i].ok;
  }
  printf("threads.ok %d\n", ok);
  char *report = helper_report();
  printf("threads.maxInFlight %ld\n", report ? strtol(strstr(report, "\"maxInFlight\":") + 14, NULL, 10) : -1);
  free(report);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
}

static void scenario_timeout(void) {
  PRINT_RV("init", f->C_Initialize(NULL));
  long before = helper_pid();
  CK_BYTE out[64];
  CK_ULONG len = sizeof out;
  PRINT_RV("sign.slow", sign("sleep:10000", out, &len));
  /* The helper that did not answer is gone at once: killed and reaped, so nothing it still held can happen. */
  printf("afterTimeout.children %d\n", count_children());
  printf("afterTimeout.oldHelperGone %d\n", before > 1 && kill((pid_t)before, 0) != 0);
  printf("sign.afterTimeout %d\n", sign_matches("quick"));
  long after = helper_pid();
  printf("helper.replaced %d\n", after > 0 && after != before);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
}

static void *slow_sign(void *arg) {
  CK_BYTE out[64];
  CK_ULONG len = sizeof out;
  *(CK_RV *)arg = sign("sleep:60000", out, &len);
  return NULL;
}

static int restores_reported(void) {
  char *report = helper_report();
  int n = report != NULL ? (int)strtol(strstr(report, "\"restores\":") + 11, NULL, 10) : -1;
  free(report);
  return n;
}

static void scenario_kill(void) {
  PRINT_RV("init", f->C_Initialize(NULL));
  CK_SESSION_HANDLE session = 0;
  PRINT_RV("open", f->C_OpenSession(10, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_BYTE out[64];
  CK_ULONG len = sizeof out;
  PRINT_RV("sign.die", sign("die", out, &len));
  /* The helper that died is reaped before any further call. */
  printf("afterDeath.children %d\n", count_children());
  long first = helper_pid();
  printf("sign.afterDeath %d\n", sign_matches("anything"));
  printf("afterDeath.restores %d\n", restores_reported());

  /* Killed from outside while idle: the next call notices before its request is sent and runs on a new helper. */
  kill_helper(first, SIGKILL);
  wait_until_dead(first);
  printf("sign.afterIdleKill %d\n", sign_matches("after an idle kill"));
  long second = helper_pid();
  printf("idleKill.newPid %d\n", second > 0 && second != first);

  /* Killed from outside while a call waits for it. */
  CK_RV slow_rv = 0;
  pthread_t t;
  pthread_create(&t, NULL, slow_sign, &slow_rv);
  /* The report shows the slow call in flight before the helper is killed. */
  for (int i = 0; i < 500; i++) {
    char *report = helper_report();
    int busy = report != NULL && strstr(report, "\"maxInFlight\":2") != NULL;
    free(report);
    if (busy) break;
    usleep(10000);
  }
  kill_helper(second, SIGKILL);
  pthread_join(t, NULL);
  PRINT_RV("sign.killedMidCall", slow_rv);
  printf("midCall.children %d\n", count_children());
  printf("sign.afterMidCallKill %d\n", sign_matches("alive once more"));
  long third = helper_pid();
  printf("midCall.newPid %d\n", third > 0 && third != second && third != first);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  printf("children %d\n", count_children());
  PRINT_RV("reinit", f->C_Initialize(NULL));
  printf("sign.afterReinit %d\n", sign_matches("alive again"));
  printf("afterReinit.restores %d\n", restores_reported());
  PRINT_RV("Finalize2", f->C_Finalize(NULL));
}

/* A replacement helper that dies at start-up, again and again: the module must back off, not fork in a loop. */
static void scenario_backoff(void) {
  PRINT_RV("init", f->C_Initialize(NULL));
  setenv("FAKE_HELPER_MODE", "die-on-init", 1);
  long pid = helper_pid();
  kill_helper(pid, SIGKILL);
  wait_until_dead(pid);
  CK_BYTE out[64];
  int failures = 0;
  for (int i = 0; i < 200; i++) {
    CK_ULONG len = sizeof out;
    failures += sign("during the outage", out, &len) == CKR_DEVICE_ERROR;
  }
  printf("outage.deviceErrors %d\n", failures);
  unsetenv("FAKE_HELPER_MODE");
  /* Past the back-off a healthy helper starts again; bounded wait. */
  int recovered = 0;
  for (int i = 0; i < 100 && !recovered; i++) {
    recovered = sign_matches("after the outage");
    if (!recovered) usleep(100000);
  }
  printf("recovered %d\n", recovered);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
}

static void scenario_fork(void) {
  PRINT_RV("parent.init", f->C_Initialize(NULL));
  printf("parent.sockets %d\n", count_sockets());
  printf("parent.signBefore %d\n", sign_matches("before fork"));
  long parent_helper = helper_pid();
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    printf("child.inheritedSockets %d\n", count_sockets());
    CK_INFO info;
    PRINT_RV("child.GetInfo", f->C_GetInfo(&info));
    CK_BYTE out[64];
    CK_ULONG len = sizeof out;
    PRINT_RV("child.Sign", f->C_Sign(1, (CK_BYTE_PTR) "x", 1, out, &len));
    PRINT_RV("child.InitToken", f->C_InitToken(0, NULL, 0, NULL));
    PRINT_RV("child.Finalize", f->C_Finalize(NULL));
    PRINT_RV("child.init", f->C_Initialize(NULL));
    printf("child.sign %d\n", sign_matches("in the child"));
    long child_helper = helper_pid();
    printf("child.ownHelper %d\n", child_helper > 0 && child_helper != parent_helper);
    printf("child.parentHelperAlive %d\n", parent_helper > 1 && kill((pid_t)parent_helper, 0) == 0);
    PRINT_RV("child.Finalize2", f->C_Finalize(NULL));
    printf("child.children %d\n", count_children());
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  printf("parent.childExit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  printf("parent.signAfter %d\n", sign_matches("after fork"));
  printf("parent.sameHelper %d\n", helper_pid() == parent_helper);
  PRINT_RV("parent.Finalize", f->C_Finalize(NULL));
}

static void scenario_cycles(int n) {
  /* The first cycle loads what stays loaded (node's libraries are not ours, but dlopen'd state may be). */
  PRINT_RV("warmup.init", f->C_Initialize(NULL));
  PRINT_RV("warmup.Finalize", f->C_Finalize(NULL));
  int fds_before = count_dir("/proc/self/fd");
  int threads_before = count_dir("/proc/self/task");
  int ok = 0;
  for (int i = 0; i < n; i++) {
    CK_INFO info;
    ok += f->C_Initialize(NULL) == CKR_OK && f->C_GetInfo(&info) == CKR_OK && sign_matches("cycle") &&
          f->C_Finalize(NULL) == CKR_OK;
  }
  printf("cycles.ok %d\n", ok);
  printf("cycles.fdsBefore %d\n", fds_before);
  printf("cycles.fdsAfter %d\n", count_dir("/proc/self/fd"));
  printf("cycles.threadsBefore %d\n", threads_before);
  printf("cycles.threadsAfter %d\n", count_dir("/proc/self/task"));
  printf("cycles.children %d\n", count_children());
}

static int creates, destroys, locks, unlocks;
static CK_RV app_create(void **mutex) {
  __atomic_add_fetch(&creates, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_t *m = malloc(sizeof *m);
  pthread_mutex_init(m, NULL);
  *mutex = m;
  return CKR_OK;
}
static CK_RV app_destroy(void *mutex) {
  __atomic_add_fetch(&destroys, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_destroy(mutex);
  free(mutex);
  return CKR_OK;
}
static CK_RV app_lock(void *mutex) {
  __atomic_add_fetch(&locks, 1, __ATOMIC_SEQ_CST);
  return pthread_mutex_lock(mutex) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}
static CK_RV app_unlock(void *mutex) {
  __atomic_add_fetch(&unlocks, 1, __ATOMIC_SEQ_CST);
  return pthread_mutex_unlock(mutex) == 0 ? CKR_OK : CKR_GENERAL_ERROR;
}

static void scenario_mutex(void) {
  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof args);
  args.CreateMutex = app_create;
  args.DestroyMutex = app_destroy;
  args.LockMutex = app_lock;
  args.UnlockMutex = app_unlock;
  PRINT_RV("init", f->C_Initialize(&args));
  printf("mutex.signs %d\n", sign_matches("one") + sign_matches("two") + sign_matches("three"));
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  printf("mutex.creates %d\n", creates);
  printf("mutex.destroys %d\n", destroys);
  printf("mutex.locksAtLeast6 %d\n", locks >= 6);
  printf("mutex.balanced %d\n", locks == unlocks);
}

static void scenario_init_only(void) {
  PRINT_RV("init", f->C_Initialize(NULL));
  CK_INFO info;
  PRINT_RV("GetInfo", f->C_GetInfo(&info));
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  printf("children %d\n", count_children());
}

static void scenario_report(const char *marker_path) {
  /* A descriptor without close-on-exec that the helper must not inherit. */
  FILE *marker = fopen(marker_path, "r");
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, NULL);
  signal(SIGINT, SIG_IGN);
  PRINT_RV("init", f->C_Initialize(NULL));
  char *report = helper_report();
  printf("report %s\n", report ? report : "null");
  free(report);
  PRINT_RV("Finalize", f->C_Finalize(NULL));
  if (marker) fclose(marker);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: driver <module.so> <scenario> [args]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  load(argv[1]);
  const char *s = argv[2];
  if (strcmp(s, "basic") == 0) scenario_basic();
  else if (strcmp(s, "interfaces") == 0) scenario_interfaces();
  else if (strcmp(s, "keys") == 0) scenario_keys();
  else if (strcmp(s, "message") == 0) scenario_message();
  else if (strcmp(s, "threads") == 0) scenario_threads(atoi(argv[3]), atoi(argv[4]));
  else if (strcmp(s, "timeout") == 0) scenario_timeout();
  else if (strcmp(s, "kill") == 0) scenario_kill();
  else if (strcmp(s, "backoff") == 0) scenario_backoff();
  else if (strcmp(s, "fork") == 0) scenario_fork();
  else if (strcmp(s, "cycles") == 0) scenario_cycles(atoi(argv[3]));
  else if (strcmp(s, "mutex") == 0) scenario_mutex();
  else if (strcmp(s, "init") == 0) scenario_init_only();
  else if (strcmp(s, "report") == 0) scenario_report(argv[3]);
  else {
    fprintf(stderr, "unknown scenario %s\n", s);
    return 2;
  }
  printf("done 1\n");
  return 0;
}
