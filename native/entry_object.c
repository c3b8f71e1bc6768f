/* Objects: create, generate, wrap and unwrap, destroy, attributes and search. */
#include <string.h>

#include "entry.h"

/* TEMPLATE in, U handle back: the end of C_CreateObject, C_GenerateKey and C_UnwrapKey, whose requests start
 * differently. The handle is written only on CKR_OK. */
static CK_RV template_to_handle(struct call *c, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                                CK_OBJECT_HANDLE_PTR phObject) {
  CK_RV rv = put_template(&c->request, pTemplate, ulCount);
  if (rv != CKR_OK) return call_end(c, rv);
  rv = call_run(c);
  CK_OBJECT_HANDLE object = rbuf_ulong(&c->reply);
  if (call_succeeded(c, rv)) *phObject = object;
  return call_end(c, rv);
}

CK_RV C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                     CK_OBJECT_HANDLE_PTR phObject) {
  struct call c;
  CALL_BEGIN(c, C_CreateObject);
  if (phObject == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  return template_to_handle(&c, pTemplate, ulCount, phObject);
}

CK_RV C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_ATTRIBUTE_PTR pTemplate,
                    CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey) {
  struct call c;
  CALL_BEGIN(c, C_GenerateKey);
  if (phKey == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = put_mechanism(&c.request, pMechanism);
  if (rv != CKR_OK) return call_end(&c, rv);
  return template_to_handle(&c, pTemplate, ulCount, phKey);
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                        CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,
                        CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
                        CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey) {
  struct call c;
  CALL_BEGIN(c, C_GenerateKeyPair);
  if (phPublicKey == NULL || phPrivateKey == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = put_mechanism(&c.request, pMechanism);
  if (rv == CKR_OK) rv = put_template(&c.request, pPublicKeyTemplate, ulPublicKeyAttributeCount);
  if (rv == CKR_OK) rv = put_template(&c.request, pPrivateKeyTemplate, ulPrivateKeyAttributeCount);
  if (rv != CKR_OK) return call_end(&c, rv);
  rv = call_run(&c);
  CK_OBJECT_HANDLE public_key = rbuf_ulong(&c.reply);
  CK_OBJECT_HANDLE private_key = rbuf_ulong(&c.reply);
  if (call_succeeded(&c, rv)) {
    *phPublicKey = public_key;
    *phPrivateKey = private_key;
  }
  return call_end(&c, rv);
}

CK_RV C_WrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hWrappingKey,
                CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey, CK_ULONG_PTR pulWrappedKeyLen) {
  struct call c;
  CALL_BEGIN(c, C_WrapKey);
  if (pulWrappedKeyLen == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  CK_ULONG capacity = pWrappedKey != NULL ? *pulWrappedKeyLen : 0;
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = put_mechanism(&c.request, pMechanism);
  if (rv != CKR_OK) return call_end(&c, rv);
  wbuf_ulong(&c.request, hWrappingKey);
  wbuf_ulong(&c.request, hKey);
  put_out(&c.request, pWrappedKey, pulWrappedKeyLen);
  rv = call_run(&c);
  take_out(&c, rv, pWrappedKey, pulWrappedKeyLen, capacity);
  return call_end(&c, rv);
}

CK_RV C_UnwrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hUnwrappingKey,
                  CK_BYTE_PTR pWrappedKey, CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate,
                  CK_ULONG ulAttributeCount, CK_OBJECT_HANDLE_PTR phKey) {
  struct call c;
  CALL_BEGIN(c, C_UnwrapKey);
  if (phKey == NULL || bad_data(pWrappedKey, ulWrappedKeyLen)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = put_mechanism(&c.request, pMechanism);
  if (rv != CKR_OK) return call_end(&c, rv);
  wbuf_ulong(&c.request, hUnwrappingKey);
  wbuf_bytes(&c.request, pWrappedKey, ulWrappedKeyLen);
  return template_to_handle(&c, pTemplate, ulAttributeCount, phKey);
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject) {
  struct call c;
  CALL_BEGIN(c, C_DestroyObject);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, hObject);
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize) {
  struct call c;
  CALL_BEGIN(c, C_GetObjectSize);
  if (pulSize == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, hObject);
  CK_RV rv = call_run(&c);
  CK_ULONG size = rbuf_ulong(&c.reply);
  if (call_succeeded(&c, rv)) *pulSize = size;
  return call_end(&c, rv);
}

static int writes_lengths(CK_RV rv) {
  return rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
         rv == CKR_BUFFER_TOO_SMALL;
}

/* Checks the whole reply before the caller's template is touched, so a malformed reply writes nothing. */
static void check_attribute_reply(struct call *c, struct rbuf r, const CK_ATTRIBUTE *pTemplate, CK_ULONG ulCount) {
  if (rbuf_u32(&r) != ulCount) {
    if (!r.failed) call_reject(c, "attribute count differs from the request");
    return;
  }
  for (CK_ULONG i = 0; i < ulCount && !r.failed; i++) {
    CK_ULONG length = rbuf_ulong(&r);
    const uint8_t *data = NULL;
    size_t n = 0;
    rbuf_bytes(&r, &data, &n);
    if (n != 0 && (pTemplate[i].pValue == NULL || n != length || length > pTemplate[i].ulValueLen)) {
      call_reject(c, "attribute value larger than the buffer or differing from its length");
      return;
    }
  }
  if (!rbuf_done(&r)) call_reject(c, "attribute reply truncated or too long");
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                          CK_ULONG ulCount) {
  struct call c;
  CALL_BEGIN(c, C_GetAttributeValue);
  if ((pTemplate == NULL && ulCount != 0) || ulCount > UINT32_MAX) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, hObject);
  wbuf_u32(&c.request, (uint32_t)ulCount);
  for (CK_ULONG i = 0; i < ulCount; i++) {
    wbuf_ulong(&c.request, pTemplate[i].type);
    put_out(&c.request, pTemplate[i].pValue, &pTemplate[i].ulValueLen);
  }
  CK_RV rv = call_run(&c);
  if (!call_valid(&c)) return call_end(&c, rv);
  check_attribute_reply(&c, c.reply, pTemplate, ulCount);
  if (!call_valid(&c)) return call_end(&c, rv);

  rbuf_u32(&c.reply);
  for (CK_ULONG i = 0; i < ulCount; i++) {
    CK_ULONG length = rbuf_ulong(&c.reply);
    const uint8_t *data = NULL;
    size_t n = 0;
    rbuf_bytes(&c.reply, &data, &n);
    if (!writes_lengths(rv)) continue;
    pTemplate[i].ulValueLen = length;
    if (n != 0) memcpy(pTemplate[i].pValue, data, n);
  }
  return call_end(&c, rv);
}

static CK_RV call_with_template(uint32_t function_id, const char *function, CK_SESSION_HANDLE hSession,
                                const CK_OBJECT_HANDLE *hObject, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  wbuf_ulong(&c.request, hSession);
  if (hObject != NULL) wbuf_ulong(&c.request, *hObject);
  rv = put_template(&c.request, pTemplate, ulCount);
  if (rv != CKR_OK) return call_end(&c, rv);
  rv = call_run(&c);
  return call_end(&c, rv);
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                          CK_ULONG ulCount) {
  return call_with_template(FN_C_SetAttributeValue, "C_SetAttributeValue", hSession, &hObject, pTemplate, ulCount);
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount) {
  return call_with_template(FN_C_FindObjectsInit, "C_FindObjectsInit", hSession, NULL, pTemplate, ulCount);
}

CK_RV C_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount,
                    CK_ULONG_PTR pulObjectCount) {
  struct call c;
  CALL_BEGIN(c, C_FindObjects);
  if (pulObjectCount == NULL || bad_data(phObject, ulMaxObjectCount)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, ulMaxObjectCount);
  CK_RV rv = call_run(&c);
  uint32_t n = rbuf_u32(&c.reply);
  if (call_valid(&c) && (n > ulMaxObjectCount || c.reply.left != (size_t)n * 8u)) {
    call_reject(&c, "more objects than asked for, or a truncated list");
  }
  int copies = call_valid(&c) && rv == CKR_OK;
  for (uint32_t i = 0; i < n && call_valid(&c); i++) {
    CK_OBJECT_HANDLE object = rbuf_ulong(&c.reply);
    if (copies) phObject[i] = object;
  }
  if (copies && call_valid(&c)) *pulObjectCount = n;
  return call_end(&c, rv);
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession) {
  struct call c;
  CALL_BEGIN(c, C_FindObjectsFinal);
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}
