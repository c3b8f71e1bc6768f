/* A PKCS#11 host that forks after signing, for test/agent/fork.test.ts: the parent initialises and signs, forks;
 * the child tries the inherited session (it must get CKR_CRYPTOKI_NOT_INITIALIZED), initialises and signs on its
 * own; the parent signs again after the child has exited. Usage: fork-host <module.so>. Prints "key value" lines
 * (return values in hex, signatures of CKM_ECDSA_SHA256 in hex) for the test to verify; it judges nothing itself. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;

#define PRINT_RV(key, rv) printf("%s 0x%lx\n", key, (unsigned long)(rv))

static void print_hex(const char *key, const CK_BYTE *data, CK_ULONG len) {
  printf("%s ", key);
  for (CK_ULONG i = 0; i < len; i++) printf("%02x", data[i]);
  printf("\n");
}

/* The first slot with a token, a session on it and its private key; prints the first failing step. */
static int open_signer(const char *who, CK_SESSION_HANDLE *session, CK_OBJECT_HANDLE *key) {
  char name[64];
  CK_SLOT_ID slot;
  CK_ULONG count = 1;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, &slot, &count);
  if (rv == CKR_OK && count == 0) rv = CKR_TOKEN_NOT_PRESENT;
  if (rv == CKR_OK) rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, session);
  CK_OBJECT_CLASS klass = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE template[] = {{CKA_CLASS, &klass, sizeof klass}};
  CK_ULONG found = 0;
  if (rv == CKR_OK) rv = f->C_FindObjectsInit(*session, template, 1);
  if (rv == CKR_OK) rv = f->C_FindObjects(*session, key, 1, &found);
  if (rv == CKR_OK) rv = f->C_FindObjectsFinal(*session);
  if (rv == CKR_OK && found != 1) rv = CKR_KEY_HANDLE_INVALID;
  snprintf(name, sizeof name, "%s.open", who);
  PRINT_RV(name, rv);
  return rv == CKR_OK;
}

/* Signs `message` and prints "<who>.<what>.rv" and, on success, "<who>.<what> <hex>". */
static CK_RV sign(const char *who, const char *what, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const char *message) {
  char name[64];
  CK_MECHANISM mechanism = {CKM_ECDSA_SHA256, NULL, 0};
  CK_BYTE signature[132];
  CK_ULONG len = sizeof signature;
  CK_RV rv = f->C_SignInit(session, &mechanism, key);
  if (rv == CKR_OK) rv = f->C_Sign(session, (CK_BYTE_PTR)message, strlen(message), signature, &len);
  snprintf(name, sizeof name, "%s.%s.rv", who, what);
  PRINT_RV(name, rv);
  snprintf(name, sizeof name, "%s.%s", who, what);
  if (rv == CKR_OK) print_hex(name, signature, len);
  return rv;
}

static int child(CK_SESSION_HANDLE inherited, CK_OBJECT_HANDLE inherited_key) {
  CK_INFO info;
  PRINT_RV("child.GetInfo", f->C_GetInfo(&info));
  CK_MECHANISM mechanism = {CKM_ECDSA_SHA256, NULL, 0};
  PRINT_RV("child.SignInit", f->C_SignInit(inherited, &mechanism, inherited_key));
  PRINT_RV("child.init", f->C_Initialize(NULL));
  CK_SESSION_HANDLE session;
  CK_OBJECT_HANDLE key;
  if (open_signer("child", &session, &key)) sign("child", "sig", session, key, "signed by the child");
  PRINT_RV("child.Finalize", f->C_Finalize(NULL));
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fork-host <module.so>\n");
    return 2;
  }
  void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  CK_C_GetFunctionList get = module == NULL ? NULL : (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  if (get == NULL || get(&f) != CKR_OK) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], module == NULL ? dlerror() : "no C_GetFunctionList");
    return 2;
  }
  PRINT_RV("parent.init", f->C_Initialize(NULL));
  CK_SESSION_HANDLE session;
  CK_OBJECT_HANDLE key;
  if (!open_signer("parent", &session, &key)) return 1;
  sign("parent", "before", session, key, "signed by the parent before fork");
  /* Nothing buffered may be printed twice. */
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    int status = child(session, key);
    fflush(stdout);
    _exit(status);
  }
  int status = -1;
  if (pid > 0) waitpid(pid, &status, 0);
  printf("parent.childExit %d\n", pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  sign("parent", "after", session, key, "signed by the parent after fork");
  PRINT_RV("parent.Finalize", f->C_Finalize(NULL));
  return 0;
}
