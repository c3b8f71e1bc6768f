/* The functions the module does not offer, answered without the helper: CKR_FUNCTION_NOT_SUPPORTED once
 * initialised (CKR_FUNCTION_NOT_PARALLEL for the legacy parallel-function calls), CKR_CRYPTOKI_NOT_INITIALIZED
 * before. */
#include "library.h"
#include "pkcs11_3.h"

static CK_RV unsupported(void) {
  CK_RV rv = library_check();
  return rv != CKR_OK ? rv : CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV not_parallel(void) {
  CK_RV rv = library_check();
  return rv != CKR_OK ? rv : CKR_FUNCTION_NOT_PARALLEL;
}

#define UNUSED(x) (void)(x)

CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pLabel) {
  UNUSED(slotID), UNUSED(pPin), UNUSED(ulPinLen), UNUSED(pLabel);
  return unsupported();
}
CK_RV C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen) {
  UNUSED(hSession), UNUSED(pPin), UNUSED(ulPinLen);
  return unsupported();
}
CK_RV C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen, CK_UTF8CHAR_PTR pNewPin,
               CK_ULONG ulNewLen) {
  UNUSED(hSession), UNUSED(pOldPin), UNUSED(ulOldLen), UNUSED(pNewPin), UNUSED(ulNewLen);
  return unsupported();
}
CK_RV C_GetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,
                          CK_ULONG_PTR pulOperationStateLen) {
  UNUSED(hSession), UNUSED(pOperationState), UNUSED(pulOperationStateLen);
  return unsupported();
}
CK_RV C_SetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState, CK_ULONG ulOperationStateLen,
                          CK_OBJECT_HANDLE hEncryptionKey, CK_OBJECT_HANDLE hAuthenticationKey) {
  UNUSED(hSession), UNUSED(pOperationState), UNUSED(ulOperationStateLen), UNUSED(hEncryptionKey),
      UNUSED(hAuthenticationKey);
  return unsupported();
}
CK_RV C_CopyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                   CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject) {
  UNUSED(hSession), UNUSED(hObject), UNUSED(pTemplate), UNUSED(ulCount), UNUSED(phNewObject);
  return unsupported();
}
CK_RV C_SignRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  UNUSED(hSession), UNUSED(pMechanism), UNUSED(hKey);
  return unsupported();
}
CK_RV C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                    CK_ULONG_PTR pulSignatureLen) {
  UNUSED(hSession), UNUSED(pData), UNUSED(ulDataLen), UNUSED(pSignature), UNUSED(pulSignatureLen);
  return unsupported();
}
CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  UNUSED(hSession), UNUSED(pMechanism), UNUSED(hKey);
  return unsupported();
}
CK_RV C_VerifyRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen,
                      CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen) {
  UNUSED(hSession), UNUSED(pSignature), UNUSED(ulSignatureLen), UNUSED(pData), UNUSED(pulDataLen);
  return unsupported();
}
CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                            CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
  UNUSED(hSession), UNUSED(pPart), UNUSED(ulPartLen), UNUSED(pEncryptedPart), UNUSED(pulEncryptedPartLen);
  return unsupported();
}
CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                            CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen) {
  UNUSED(hSession), UNUSED(pEncryptedPart), UNUSED(ulEncryptedPartLen), UNUSED(pPart), UNUSED(pulPartLen);
  return unsupported();
}
CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                          CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
  UNUSED(hSession), UNUSED(pPart), UNUSED(ulPartLen), UNUSED(pEncryptedPart), UNUSED(pulEncryptedPartLen);
  return unsupported();
}
CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                            CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen) {
  UNUSED(hSession), UNUSED(pEncryptedPart), UNUSED(ulEncryptedPartLen), UNUSED(pPart), UNUSED(pulPartLen);
  return unsupported();
}
CK_RV C_DeriveKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hBaseKey,
                  CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey) {
  UNUSED(hSession), UNUSED(pMechanism), UNUSED(hBaseKey), UNUSED(pTemplate), UNUSED(ulAttributeCount),
      UNUSED(phKey);
  return unsupported();
}
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession) {
  UNUSED(hSession);
  return not_parallel();
}
CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession) {
  UNUSED(hSession);
  return not_parallel();
}
CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved) {
  UNUSED(flags), UNUSED(pSlot), UNUSED(pReserved);
  return unsupported();
}

/* PKCS#11 3.0 message-based functions. */
CK_RV C_EncryptMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                            CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pAssociatedData),
      UNUSED(ulAssociatedDataLen);
  return unsupported();
}
CK_RV C_EncryptMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                           CK_BYTE_PTR pPlaintextPart, CK_ULONG ulPlaintextPartLen, CK_BYTE_PTR pCiphertextPart,
                           CK_ULONG_PTR pulCiphertextPartLen, CK_FLAGS flags) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pPlaintextPart), UNUSED(ulPlaintextPartLen),
      UNUSED(pCiphertextPart), UNUSED(pulCiphertextPartLen), UNUSED(flags);
  return unsupported();
}
CK_RV C_DecryptMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                            CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pAssociatedData),
      UNUSED(ulAssociatedDataLen);
  return unsupported();
}
CK_RV C_DecryptMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                           CK_BYTE_PTR pCiphertextPart, CK_ULONG ulCiphertextPartLen, CK_BYTE_PTR pPlaintextPart,
                           CK_ULONG_PTR pulPlaintextPartLen, CK_FLAGS flags) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pCiphertextPart),
      UNUSED(ulCiphertextPartLen), UNUSED(pPlaintextPart), UNUSED(pulPlaintextPartLen), UNUSED(flags);
  return unsupported();
}
CK_RV C_MessageSignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  UNUSED(hSession), UNUSED(pMechanism), UNUSED(hKey);
  return unsupported();
}
CK_RV C_SignMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen, CK_BYTE_PTR pData,
                    CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pData), UNUSED(ulDataLen),
      UNUSED(pSignature), UNUSED(pulSignatureLen);
  return unsupported();
}
CK_RV C_SignMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen);
  return unsupported();
}
CK_RV C_SignMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                        CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
                        CK_ULONG_PTR pulSignatureLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pData), UNUSED(ulDataLen),
      UNUSED(pSignature), UNUSED(pulSignatureLen);
  return unsupported();
}
CK_RV C_MessageSignFinal(CK_SESSION_HANDLE hSession) {
  UNUSED(hSession);
  return unsupported();
}
CK_RV C_MessageVerifyInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  UNUSED(hSession), UNUSED(pMechanism), UNUSED(hKey);
  return unsupported();
}
CK_RV C_VerifyMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                      CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pData), UNUSED(ulDataLen),
      UNUSED(pSignature), UNUSED(ulSignatureLen);
  return unsupported();
}
CK_RV C_VerifyMessageBegin(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen);
  return unsupported();
}
CK_RV C_VerifyMessageNext(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                          CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen) {
  UNUSED(hSession), UNUSED(pParameter), UNUSED(ulParameterLen), UNUSED(pData), UNUSED(ulDataLen),
      UNUSED(pSignature), UNUSED(ulSignatureLen);
  return unsupported();
}
CK_RV C_MessageVerifyFinal(CK_SESSION_HANDLE hSession) {
  UNUSED(hSession);
  return unsupported();
}
