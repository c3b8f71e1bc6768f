/* The function tables: the v2.40 CK_FUNCTION_LIST for C_GetFunctionList, and the "PKCS 11" v3.0 and v2.40
 * interfaces for C_GetInterfaceList and C_GetInterface. Both answer without C_Initialize. */
#include <string.h>

#include "pkcs11_3.h"

/* The v2.40 functions in CK_FUNCTION_LIST order; the v3.0 list begins with the same ones. */
#define V2_40_FUNCTIONS \
    C_Initialize, \
    C_Finalize, \
    C_GetInfo, \
    C_GetFunctionList, \
    C_GetSlotList, \
    C_GetSlotInfo, \
    C_GetTokenInfo, \
    C_GetMechanismList, \
    C_GetMechanismInfo, \
    C_InitToken, \
    C_InitPIN, \
    C_SetPIN, \
    C_OpenSession, \
    C_CloseSession, \
    C_CloseAllSessions, \
    C_GetSessionInfo, \
    C_GetOperationState, \
    C_SetOperationState, \
    C_Login, \
    C_Logout, \
    C_CreateObject, \
    C_CopyObject, \
    C_DestroyObject, \
    C_GetObjectSize, \
    C_GetAttributeValue, \
    C_SetAttributeValue, \
    C_FindObjectsInit, \
    C_FindObjects, \
    C_FindObjectsFinal, \
    C_EncryptInit, \
    C_Encrypt, \
    C_EncryptUpdate, \
    C_EncryptFinal, \
    C_DecryptInit, \
    C_Decrypt, \
    C_DecryptUpdate, \
    C_DecryptFinal, \
    C_DigestInit, \
    C_Digest, \
    C_DigestUpdate, \
    C_DigestKey, \
    C_DigestFinal, \
    C_SignInit, \
    C_Sign, \
    C_SignUpdate, \
    C_SignFinal, \
    C_SignRecoverInit, \
    C_SignRecover, \
    C_VerifyInit, \
    C_Verify, \
    C_VerifyUpdate, \
    C_VerifyFinal, \
    C_VerifyRecoverInit, \
    C_VerifyRecover, \
    C_DigestEncryptUpdate, \
    C_DecryptDigestUpdate, \
    C_SignEncryptUpdate, \
    C_DecryptVerifyUpdate, \
    C_GenerateKey, \
    C_GenerateKeyPair, \
    C_WrapKey, \
    C_UnwrapKey, \
    C_DeriveKey, \
    C_SeedRandom, \
    C_GenerateRandom, \
    C_GetFunctionStatus, \
    C_CancelFunction, \
    C_WaitForSlotEvent,

static CK_FUNCTION_LIST list_2_40 = {
    {2, 40},
    V2_40_FUNCTIONS
};

static CK_FUNCTION_LIST_3_0 list_3_0 = {
    {3, 0},
    V2_40_FUNCTIONS
    C_GetInterfaceList,
    C_GetInterface,
    C_LoginUser,
    C_SessionCancel,
    C_MessageEncryptInit,
    C_EncryptMessage,
    C_EncryptMessageBegin,
    C_EncryptMessageNext,
    C_MessageEncryptFinal,
    C_MessageDecryptInit,
    C_DecryptMessage,
    C_DecryptMessageBegin,
    C_DecryptMessageNext,
    C_MessageDecryptFinal,
    C_MessageSignInit,
    C_SignMessage,
    C_SignMessageBegin,
    C_SignMessageNext,
    C_MessageSignFinal,
    C_MessageVerifyInit,
    C_VerifyMessage,
    C_VerifyMessageBegin,
    C_VerifyMessageNext,
    C_MessageVerifyFinal,
};

static CK_CHAR interface_name[] = "PKCS 11";

/* The newest first: C_GetInterface with no name and no version returns the first entry. Neither interface is
 * fork-safe: a forked child must call C_Initialize. */
static CK_INTERFACE interfaces[] = {
    {interface_name, &list_3_0, 0},
    {interface_name, &list_2_40, 0},
};

#define INTERFACE_COUNT (sizeof interfaces / sizeof interfaces[0])

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
  if (ppFunctionList == NULL) return CKR_ARGUMENTS_BAD;
  *ppFunctionList = &list_2_40;
  return CKR_OK;
}

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount) {
  if (pulCount == NULL) return CKR_ARGUMENTS_BAD;
  if (pInterfacesList == NULL) {
    *pulCount = INTERFACE_COUNT;
    return CKR_OK;
  }
  if (*pulCount < INTERFACE_COUNT) {
    *pulCount = INTERFACE_COUNT;
    return CKR_BUFFER_TOO_SMALL;
  }
  memcpy(pInterfacesList, interfaces, sizeof interfaces);
  *pulCount = INTERFACE_COUNT;
  return CKR_OK;
}

static const CK_VERSION *interface_version(const CK_INTERFACE *interface) {
  return &((const CK_FUNCTION_LIST *)interface->pFunctionList)->version;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion, CK_INTERFACE_PTR_PTR ppInterface,
                     CK_FLAGS flags) {
  if (ppInterface == NULL) return CKR_ARGUMENTS_BAD;
  for (size_t i = 0; i < INTERFACE_COUNT; i++) {
    CK_INTERFACE *candidate = &interfaces[i];
    if (pInterfaceName != NULL && strcmp((const char *)pInterfaceName, (const char *)candidate->pInterfaceName) != 0) {
      continue;
    }
    const CK_VERSION *version = interface_version(candidate);
    if (pVersion != NULL && (pVersion->major != version->major || pVersion->minor != version->minor)) continue;
    if ((candidate->flags & flags) != flags) continue;
    *ppInterface = candidate;
    return CKR_OK;
  }
  return CKR_ARGUMENTS_BAD;
}
