/* PKCS#11 3.0 session functions, driven through the real helper for test/module/v3-functions.test.ts (pkcs11js
 * only speaks 2.40). Usage: v3-driver <module.so> <hex SHA-256 digest>. Prints "key value" lines; the test judges.
 * C_LoginUser and C_SessionCancel are taken from the 3.0 interface's table, as a 3.0 host gets them. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "../fixtures/pkcs11-v30.h"

#define PRINT_RV(key, rv) printf("%s 0x%lx\n", key, (unsigned long)(rv))

/* The 3.0 shapes (p11-kit 0.24's header predates them): the 3.0 table is the 2.40 table followed by
 * C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel, ... */
typedef CK_RV (*login_user_t)(CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG);
typedef CK_RV (*session_cancel_t)(CK_SESSION_HANDLE, CK_FLAGS);
struct table3 {
  CK_FUNCTION_LIST v2;
  void *get_interface_list;
  void *get_interface;
  login_user_t login_user;
  session_cancel_t session_cancel;
};
#define FLAG_FIND_OBJECTS 0x40UL /* CKF_FIND_OBJECTS, new in 3.0 */

int main(int argc, char **argv) {
  if (argc != 3 || strlen(argv[2]) != 64) {
    fprintf(stderr, "usage: v3-driver MODULE DIGEST_HEX\n");
    return 2;
  }
  CK_BYTE digest[32];
  for (int i = 0; i < 32; i++) {
    unsigned int byte;
    if (sscanf(argv[2] + 2 * i, "%2x", &byte) != 1) return 2;
    digest[i] = (CK_BYTE)byte;
  }
  void *table = load_v30_table(argv[1]);
  if (table == NULL) return 2;
  struct table3 *f = table;

  PRINT_RV("Initialize", f->v2.C_Initialize(NULL));
  CK_SLOT_ID slot;
  CK_ULONG count = 1;
  PRINT_RV("GetSlotList", f->v2.C_GetSlotList(CK_TRUE, &slot, &count));
  CK_SESSION_HANDLE session;
  PRINT_RV("OpenSession", f->v2.C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
  CK_SESSION_INFO info;

  /* C_LoginUser: any PIN and user name; the state rules are C_Login's. */
  PRINT_RV("LoginUser", f->login_user(session, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4, (CK_UTF8CHAR_PTR) "alice", 5));
  f->v2.C_GetSessionInfo(session, &info);
  printf("LoginUser.state %lu\n", (unsigned long)info.state);
  PRINT_RV("LoginUser.again", f->login_user(session, CKU_USER, (CK_UTF8CHAR_PTR) "1234", 4, (CK_UTF8CHAR_PTR) "alice", 5));
  PRINT_RV("LoginUser.nullPinWithLength", f->login_user(session, CKU_USER, NULL, 4, NULL, 0));
  PRINT_RV("Logout", f->v2.C_Logout(session));
  f->v2.C_GetSessionInfo(session, &info);
  printf("Logout.state %lu\n", (unsigned long)info.state);
  PRINT_RV("LoginUser.badSession", f->login_user(session + 1000, CKU_USER, (CK_UTF8CHAR_PTR) "1", 1, NULL, 0));

  /* C_SessionCancel ends the named operations and only those. */
  CK_OBJECT_CLASS klass = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &klass, sizeof klass}};
  CK_OBJECT_HANDLE key;
  CK_ULONG n = 0;
  f->v2.C_FindObjectsInit(session, tmpl, 1);
  f->v2.C_FindObjects(session, &key, 1, &n);
  f->v2.C_FindObjectsFinal(session);
  printf("keys %lu\n", (unsigned long)n);
  CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
  CK_BYTE sig[256];
  CK_ULONG sig_len = sizeof sig;
  PRINT_RV("SignInit", f->v2.C_SignInit(session, &ecdsa, key));
  PRINT_RV("FindObjectsInit", f->v2.C_FindObjectsInit(session, tmpl, 1));
  PRINT_RV("SessionCancel.find", f->session_cancel(session, FLAG_FIND_OBJECTS));
  PRINT_RV("FindObjects.afterCancel", f->v2.C_FindObjects(session, &key, 1, &n));
  PRINT_RV("SignInit.stillActive", f->v2.C_SignInit(session, &ecdsa, key));
  PRINT_RV("SessionCancel.sign", f->session_cancel(session, CKF_SIGN));
  PRINT_RV("Sign.afterCancel", f->v2.C_Sign(session, digest, sizeof digest, sig, &sig_len));
  PRINT_RV("SignInit.afterCancel", f->v2.C_SignInit(session, &ecdsa, key));
  sig_len = sizeof sig;
  PRINT_RV("Sign", f->v2.C_Sign(session, digest, sizeof digest, sig, &sig_len));
  printf("signature ");
  for (CK_ULONG i = 0; i < sig_len; i++) printf("%02x", sig[i]);
  printf("\n");
  PRINT_RV("SessionCancel.nothingActive", f->session_cancel(session, CKF_SIGN | CKF_DECRYPT));
  PRINT_RV("SessionCancel.badSession", f->session_cancel(session + 1000, CKF_SIGN));
  PRINT_RV("CloseSession", f->v2.C_CloseSession(session));
  PRINT_RV("Finalize", f->v2.C_Finalize(NULL));
  PRINT_RV("SessionCancel.finalized", f->session_cancel(session, CKF_SIGN));
  printf("done 1\n");
  return 0;
}
