/* The PKCS#11 3.0 function table of a module, for the test drivers that make the 3.0 calls pkcs11js cannot.
 * p11-kit 0.24's header predates 3.0: the 3.0 table is the 2.40 table followed by C_GetInterfaceList,
 * C_GetInterface, C_LoginUser, C_SessionCancel, the message calls ... */
#ifndef AKV_TEST_V30_H
#define AKV_TEST_V30_H

#include <dlfcn.h>
#include <stdio.h>

#include <p11-kit/pkcs11.h>

typedef struct {
  CK_CHAR *pInterfaceName;
  CK_VOID_PTR pFunctionList;
  CK_FLAGS flags;
} interface_t;
typedef CK_RV (*get_interface_t)(CK_UTF8CHAR *, CK_VERSION *, interface_t **, CK_FLAGS);

/* The "PKCS 11" 3.0 interface's function list, or NULL (with the reason on stderr). */
static void *load_v30_table(const char *module_path) {
  void *module = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
  if (module == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return NULL;
  }
  get_interface_t get_interface = (get_interface_t)dlsym(module, "C_GetInterface");
  CK_VERSION v30 = {3, 0};
  interface_t *found = NULL;
  if (get_interface == NULL || get_interface((CK_UTF8CHAR *)"PKCS 11", &v30, &found, 0) != CKR_OK) {
    fprintf(stderr, "C_GetInterface(PKCS 11, 3.0) failed\n");
    return NULL;
  }
  return found->pFunctionList;
}

#endif
