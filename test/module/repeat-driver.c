/* A host that makes the same failing call many times: C_Initialize, one session on the first slot, then
 * C_SignInit on that slot's private key (handle 1) N times. Prints "signInit.<i> 0x<rv>" lines for the test.
 * Usage: repeat-driver <module.so> <N> */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include <p11-kit/pkcs11.h>

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (module == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  CK_FUNCTION_LIST_PTR f = NULL;
  if (get == NULL || get(&f) != CKR_OK) return 2;
  printf("init 0x%lx\n", (unsigned long)f->C_Initialize(NULL));
  CK_SLOT_ID slot = 0;
  CK_ULONG count = 1;
  printf("slots 0x%lx\n", (unsigned long)f->C_GetSlotList(CK_TRUE, &slot, &count));
  CK_SESSION_HANDLE session = 0;
  printf("open 0x%lx\n", (unsigned long)f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_MECHANISM mechanism = {CKM_ECDSA, NULL, 0};
  int n = atoi(argv[2]);
  for (int i = 0; i < n; i++) {
    printf("signInit.%d 0x%lx\n", i, (unsigned long)f->C_SignInit(session, &mechanism, slot * 16 + 1));
  }
  printf("finalize 0x%lx\n", (unsigned long)f->C_Finalize(NULL));
  return 0;
}
