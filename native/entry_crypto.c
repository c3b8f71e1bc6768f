/* Cryptographic operations: encrypt, decrypt, digest, sign, verify, random and the v3.0 single-part message
 * encryption. They share four shapes: Init (session, mechanism, key), single-part or update with output (data in,
 * OUT back), Final with output, and input-only updates. */
#include <string.h>

#include "entry.h"

static CK_RV op_init(uint32_t function_id, const char *function, CK_SESSION_HANDLE hSession,
                     CK_MECHANISM_PTR pMechanism, const CK_OBJECT_HANDLE *hKey) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  wbuf_ulong(&c.request, hSession);
  rv = put_mechanism(&c.request, pMechanism);
  if (rv != CKR_OK) return call_end(&c, rv);
  if (hKey != NULL) wbuf_ulong(&c.request, *hKey);
  rv = call_run(&c);
  return call_end(&c, rv);
}

/* pIn may be absent (Final): has_input selects whether BYTES is sent. */
static CK_RV op_with_output(uint32_t function_id, const char *function, CK_SESSION_HANDLE hSession, int has_input,
                            CK_BYTE_PTR pIn, CK_ULONG ulInLen, CK_BYTE_PTR pOut, CK_ULONG_PTR pulOutLen) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  if (pulOutLen == NULL || (has_input && bad_data(pIn, ulInLen))) return call_end(&c, CKR_ARGUMENTS_BAD);
  CK_ULONG capacity = pOut != NULL ? *pulOutLen : 0;
  wbuf_ulong(&c.request, hSession);
  if (has_input) wbuf_bytes(&c.request, pIn, ulInLen);
  put_out(&c.request, pOut, pulOutLen);
  rv = call_run(&c);
  take_out(&c, rv, pOut, pulOutLen, capacity);
  return call_end(&c, rv);
}

/* Session followed by up to two BYTES fields, nothing back. */
static CK_RV op_with_input(uint32_t function_id, const char *function, CK_SESSION_HANDLE hSession, int fields,
                           const void *p1, CK_ULONG len1, const void *p2, CK_ULONG len2) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  if (bad_data(p1, len1) || (fields > 1 && bad_data(p2, len2))) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_bytes(&c.request, p1, len1);
  if (fields > 1) wbuf_bytes(&c.request, p2, len2);
  rv = call_run(&c);
  return call_end(&c, rv);
}

#define INIT(name, key) op_init(FN_##name, #name, hSession, pMechanism, key)
#define WITH_OUTPUT(name, in, inLen, out, outLen) op_with_output(FN_##name, #name, hSession, 1, in, inLen, out, outLen)
#define FINAL(name, out, outLen) op_with_output(FN_##name, #name, hSession, 0, NULL, 0, out, outLen)
#define INPUT(name, p, len) op_with_input(FN_##name, #name, hSession, 1, p, len, NULL, 0)

CK_RV C_EncryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_EncryptInit, &hKey);
}
CK_RV C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pEncryptedData,
                CK_ULONG_PTR pulEncryptedDataLen) {
  return WITH_OUTPUT(C_Encrypt, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen);
}
CK_RV C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                      CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
  return WITH_OUTPUT(C_EncryptUpdate, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen);
}
CK_RV C_EncryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart,
                     CK_ULONG_PTR pulLastEncryptedPartLen) {
  return FINAL(C_EncryptFinal, pLastEncryptedPart, pulLastEncryptedPartLen);
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_DecryptInit, &hKey);
}
CK_RV C_Decrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen,
                CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen) {
  return WITH_OUTPUT(C_Decrypt, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen);
}
CK_RV C_DecryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart, CK_ULONG ulEncryptedPartLen,
                      CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen) {
  return WITH_OUTPUT(C_DecryptUpdate, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen);
}
CK_RV C_DecryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart, CK_ULONG_PTR pulLastPartLen) {
  return FINAL(C_DecryptFinal, pLastPart, pulLastPartLen);
}

CK_RV C_DigestInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism) { return INIT(C_DigestInit, NULL); }
CK_RV C_Digest(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pDigest,
               CK_ULONG_PTR pulDigestLen) {
  return WITH_OUTPUT(C_Digest, pData, ulDataLen, pDigest, pulDigestLen);
}
CK_RV C_DigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
  return INPUT(C_DigestUpdate, pPart, ulPartLen);
}
CK_RV C_DigestKey(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey) {
  struct call c;
  CALL_BEGIN(c, C_DigestKey);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, hKey);
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}
CK_RV C_DigestFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen) {
  return FINAL(C_DigestFinal, pDigest, pulDigestLen);
}

CK_RV C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_SignInit, &hKey);
}
CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
             CK_ULONG_PTR pulSignatureLen) {
  return WITH_OUTPUT(C_Sign, pData, ulDataLen, pSignature, pulSignatureLen);
}
CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
  return INPUT(C_SignUpdate, pPart, ulPartLen);
}
CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen) {
  return FINAL(C_SignFinal, pSignature, pulSignatureLen);
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_VerifyInit, &hKey);
}
CK_RV C_Verify(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen, CK_BYTE_PTR pSignature,
               CK_ULONG ulSignatureLen) {
  return op_with_input(FN_C_Verify, "C_Verify", hSession, 2, pData, ulDataLen, pSignature, ulSignatureLen);
}
CK_RV C_VerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
  return INPUT(C_VerifyUpdate, pPart, ulPartLen);
}
CK_RV C_VerifyFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen) {
  return INPUT(C_VerifyFinal, pSignature, ulSignatureLen);
}

/* The helper refuses every seed (CKR_RANDOM_SEED_NOT_SUPPORTED) after checking the session, so the seed's bytes
 * never travel: only its length, which keeps even a 64 MiB seed within the function's return values. */
CK_RV C_SeedRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen) {
  struct call c;
  CALL_BEGIN(c, C_SeedRandom);
  if (bad_data(pSeed, ulSeedLen)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, ulSeedLen);
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pRandomData, CK_ULONG ulRandomLen) {
  struct call c;
  CALL_BEGIN(c, C_GenerateRandom);
  if (bad_data(pRandomData, ulRandomLen)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, ulRandomLen);
  CK_RV rv = call_run(&c);
  const uint8_t *data = NULL;
  size_t n = 0;
  rbuf_bytes(&c.reply, &data, &n);
  if (call_valid(&c) && rv == CKR_OK && n != ulRandomLen) call_reject(&c, "random data of the wrong length");
  if (call_valid(&c) && rv != CKR_OK && n != 0) call_reject(&c, "random data with an error");
  if (call_succeeded(&c, rv) && n != 0) memcpy(pRandomData, data, n);
  return call_end(&c, rv);
}

/* ---- message-based encryption (v3.0): single-part only; Begin/Next stay in unsupported.c ------------------ */

static CK_RV session_only(uint32_t function_id, const char *function, CK_SESSION_HANDLE hSession) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  wbuf_ulong(&c.request, hSession);
  rv = call_run(&c);
  return call_end(&c, rv);
}

/* C_EncryptMessage's reply carries the IV and tag for the caller's CK_GCM_MESSAGE_PARAMS: exactly ulIvLen and
 * ulTagBits / 8 bytes on CKR_OK with output, nothing otherwise (a length query, an error). */
static void check_iv_tag(struct call *c, CK_RV rv, const CK_GCM_MESSAGE_PARAMS *gcm, int has_output, size_t iv_len,
                         size_t tag_len) {
  if (!call_valid(c)) return;
  int writes = rv == CKR_OK && has_output && gcm != NULL;
  if (iv_len != (writes ? gcm->ulIvLen : 0) || tag_len != (writes ? gcm->ulTagBits / 8 : 0)) {
    call_reject(c, "IV or tag of the wrong length for the message parameter");
  }
}

/* C_EncryptMessage and C_DecryptMessage: MSGPARAM, BYTES associated data, BYTES input, OUT. */
static CK_RV message_op(uint32_t function_id, const char *function, int encrypt, CK_SESSION_HANDLE hSession,
                        CK_VOID_PTR pParameter, CK_ULONG ulParameterLen, CK_BYTE_PTR pAssociatedData,
                        CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pIn, CK_ULONG ulInLen, CK_BYTE_PTR pOut,
                        CK_ULONG_PTR pulOutLen) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  if (pulOutLen == NULL || bad_data(pAssociatedData, ulAssociatedDataLen) || bad_data(pIn, ulInLen)) {
    return call_end(&c, CKR_ARGUMENTS_BAD);
  }
  CK_ULONG capacity = pOut != NULL ? *pulOutLen : 0;
  wbuf_ulong(&c.request, hSession);
  CK_GCM_MESSAGE_PARAMS *gcm = put_message_parameter(&c.request, pParameter, ulParameterLen);
  wbuf_bytes(&c.request, pAssociatedData, ulAssociatedDataLen);
  wbuf_bytes(&c.request, pIn, ulInLen);
  put_out(&c.request, pOut, pulOutLen);
  rv = call_run(&c);
  const uint8_t *iv = NULL, *tag = NULL;
  size_t iv_len = 0, tag_len = 0;
  if (encrypt) {
    rbuf_bytes(&c.reply, &iv, &iv_len);
    rbuf_bytes(&c.reply, &tag, &tag_len);
    check_iv_tag(&c, rv, gcm, pOut != NULL, iv_len, tag_len);
  }
  take_out(&c, rv, pOut, pulOutLen, capacity);
  /* check_iv_tag allowed bytes only with a GCM parameter of these lengths. */
  if (call_valid(&c) && iv_len != 0) memcpy(gcm->pIv, iv, iv_len);
  if (call_valid(&c) && tag_len != 0) memcpy(gcm->pTag, tag, tag_len);
  return call_end(&c, rv);
}

CK_RV C_MessageEncryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_MessageEncryptInit, &hKey);
}
CK_RV C_EncryptMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                       CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pPlaintext,
                       CK_ULONG ulPlaintextLen, CK_BYTE_PTR pCiphertext, CK_ULONG_PTR pulCiphertextLen) {
  return message_op(FN_C_EncryptMessage, "C_EncryptMessage", 1, hSession, pParameter, ulParameterLen,
                    pAssociatedData, ulAssociatedDataLen, pPlaintext, ulPlaintextLen, pCiphertext, pulCiphertextLen);
}
CK_RV C_MessageEncryptFinal(CK_SESSION_HANDLE hSession) {
  return session_only(FN_C_MessageEncryptFinal, "C_MessageEncryptFinal", hSession);
}

CK_RV C_MessageDecryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
  return INIT(C_MessageDecryptInit, &hKey);
}
CK_RV C_DecryptMessage(CK_SESSION_HANDLE hSession, CK_VOID_PTR pParameter, CK_ULONG ulParameterLen,
                       CK_BYTE_PTR pAssociatedData, CK_ULONG ulAssociatedDataLen, CK_BYTE_PTR pCiphertext,
                       CK_ULONG ulCiphertextLen, CK_BYTE_PTR pPlaintext, CK_ULONG_PTR pulPlaintextLen) {
  return message_op(FN_C_DecryptMessage, "C_DecryptMessage", 0, hSession, pParameter, ulParameterLen,
                    pAssociatedData, ulAssociatedDataLen, pCiphertext, ulCiphertextLen, pPlaintext, pulPlaintextLen);
}
CK_RV C_MessageDecryptFinal(CK_SESSION_HANDLE hSession) {
  return session_only(FN_C_MessageDecryptFinal, "C_MessageDecryptFinal", hSession);
}
