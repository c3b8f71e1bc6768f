#include "marshal.h"

#include <string.h>

enum mechanism_parameter_kind { PARAM_NONE = 0, PARAM_RAW = 1, PARAM_OAEP = 2, PARAM_MALFORMED = 3, PARAM_GCM = 4 };
enum message_parameter_kind { MESSAGE_NONE = 0, MESSAGE_GCM = 1, MESSAGE_MALFORMED = 3 };

int bad_data(const void *p, CK_ULONG len) { return p == NULL && len != 0; }

void put_out(struct wbuf *b, const void *p, const CK_ULONG *pulLen) {
  wbuf_u8(b, p != NULL);
  wbuf_ulong(b, p != NULL ? *pulLen : 0);
}

void take_out(struct call *c, CK_RV rv, CK_BYTE_PTR p, CK_ULONG_PTR pulLen, CK_ULONG capacity) {
  CK_ULONG length = rbuf_ulong(&c->reply);
  const uint8_t *data = NULL;
  size_t n = 0;
  rbuf_bytes(&c->reply, &data, &n);
  if (!call_valid(c)) return;
  if (!rbuf_done(&c->reply)) {
    call_reject(c, "the reply is longer than its shape");
    return;
  }
  int copies = rv == CKR_OK && p != NULL;
  if (n != 0 && !copies) {
    call_reject(c, "output data without CKR_OK or without an output buffer");
    return;
  }
  if (copies && (n != length || length > capacity)) {
    call_reject(c, "output data larger than the buffer or differing from its length");
    return;
  }
  if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) *pulLen = length;
  if (copies && n != 0) memcpy(p, data, n);
}

void take_list(struct call *c, CK_RV rv, CK_ULONG *list, CK_ULONG_PTR pulCount, CK_ULONG capacity) {
  CK_ULONG count = rbuf_ulong(&c->reply);
  uint32_t n = rbuf_u32(&c->reply);
  if (!call_valid(c)) return;
  if (c->reply.left != (size_t)n * 8u) {
    call_reject(c, "list length does not match its entries");
    return;
  }
  int copies = rv == CKR_OK && list != NULL;
  if (copies && (n != count || count > capacity)) {
    call_reject(c, "list longer than the buffer or differing from its count");
    return;
  }
  if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL) *pulCount = count;
  for (uint32_t i = 0; i < n; i++) {
    CK_ULONG entry = rbuf_ulong(&c->reply);
    if (copies) list[i] = entry;
  }
}

CK_RV put_template(struct wbuf *b, const CK_ATTRIBUTE *pTemplate, CK_ULONG ulCount) {
  if (pTemplate == NULL && ulCount != 0) return CKR_ARGUMENTS_BAD;
  if (ulCount > UINT32_MAX) return CKR_ARGUMENTS_BAD;
  wbuf_u32(b, (uint32_t)ulCount);
  for (CK_ULONG i = 0; i < ulCount; i++) {
    if (bad_data(pTemplate[i].pValue, pTemplate[i].ulValueLen)) return CKR_ARGUMENTS_BAD;
    wbuf_ulong(b, pTemplate[i].type);
    wbuf_bytes(b, pTemplate[i].pValue, pTemplate[i].ulValueLen);
  }
  return CKR_OK;
}

static void put_oaep(struct wbuf *b, const CK_RSA_PKCS_OAEP_PARAMS *oaep) {
  if (bad_data(oaep->pSourceData, oaep->ulSourceDataLen)) {
    wbuf_u8(b, PARAM_MALFORMED);
    return;
  }
  wbuf_u8(b, PARAM_OAEP);
  wbuf_ulong(b, oaep->hashAlg);
  wbuf_ulong(b, oaep->mgf);
  wbuf_ulong(b, oaep->source);
  wbuf_bytes(b, oaep->pSourceData, oaep->ulSourceDataLen);
}

/* CK_GCM_PARAMS as PKCS#11 v2.40 first published it, without ulIvBits (the errata added it). SunPKCS11 sends this
 * layout first and the other only after a refusal. */
struct gcm_params_v240 {
  CK_BYTE_PTR pIv;
  CK_ULONG ulIvLen;
  CK_BYTE_PTR pAAD;
  CK_ULONG ulAADLen;
  CK_ULONG ulTagBits;
};

static void put_gcm(struct wbuf *b, const CK_BYTE *iv, CK_ULONG iv_len, CK_ULONG iv_bits, const CK_BYTE *aad,
                    CK_ULONG aad_len, CK_ULONG tag_bits) {
  if (bad_data(iv, iv_len) || bad_data(aad, aad_len)) {
    wbuf_u8(b, PARAM_MALFORMED);
    return;
  }
  wbuf_u8(b, PARAM_GCM);
  wbuf_bytes(b, iv, iv_len);
  wbuf_ulong(b, iv_bits);
  wbuf_bytes(b, aad, aad_len);
  wbuf_ulong(b, tag_bits);
}

CK_RV put_mechanism(struct wbuf *b, const CK_MECHANISM *pMechanism) {
  if (pMechanism == NULL) return CKR_ARGUMENTS_BAD;
  wbuf_ulong(b, pMechanism->mechanism);
  const void *param = pMechanism->pParameter;
  CK_ULONG len = pMechanism->ulParameterLen;
  if (bad_data(param, len)) {
    wbuf_u8(b, PARAM_MALFORMED);
  } else if (param == NULL || len == 0) {
    wbuf_u8(b, PARAM_NONE);
  } else if (pMechanism->mechanism == CKM_RSA_PKCS_OAEP) {
    if (len == sizeof(CK_RSA_PKCS_OAEP_PARAMS)) {
      put_oaep(b, param);
    } else {
      wbuf_u8(b, PARAM_MALFORMED);
    }
  } else if (pMechanism->mechanism == CKM_AES_GCM) {
    if (len == sizeof(CK_GCM_PARAMS)) {
      const CK_GCM_PARAMS *gcm = param;
      put_gcm(b, gcm->pIv, gcm->ulIvLen, gcm->ulIvBits, gcm->pAAD, gcm->ulAADLen, gcm->ulTagBits);
    } else if (len == sizeof(struct gcm_params_v240)) {
      const struct gcm_params_v240 *gcm = param;
      put_gcm(b, gcm->pIv, gcm->ulIvLen, gcm->ulIvLen * 8, gcm->pAAD, gcm->ulAADLen, gcm->ulTagBits);
    } else {
      wbuf_u8(b, PARAM_MALFORMED);
    }
  } else {
    wbuf_u8(b, PARAM_RAW);
    wbuf_bytes(b, param, len);
  }
  return CKR_OK;
}

CK_GCM_MESSAGE_PARAMS *put_message_parameter(struct wbuf *b, void *pParameter, CK_ULONG ulParameterLen) {
  if (bad_data(pParameter, ulParameterLen)) {
    wbuf_u8(b, MESSAGE_MALFORMED);
    return NULL;
  }
  if (pParameter == NULL || ulParameterLen == 0) {
    wbuf_u8(b, MESSAGE_NONE);
    return NULL;
  }
  CK_GCM_MESSAGE_PARAMS *gcm = pParameter;
  if (ulParameterLen != sizeof *gcm || gcm->ulTagBits % 8 != 0 || bad_data(gcm->pIv, gcm->ulIvLen) ||
      bad_data(gcm->pTag, gcm->ulTagBits / 8)) {
    wbuf_u8(b, MESSAGE_MALFORMED);
    return NULL;
  }
  wbuf_u8(b, MESSAGE_GCM);
  wbuf_bytes(b, gcm->pIv, gcm->ulIvLen);
  wbuf_ulong(b, gcm->ulIvFixedBits);
  wbuf_ulong(b, gcm->ivGenerator);
  wbuf_bytes(b, gcm->pTag, gcm->ulTagBits / 8);
  wbuf_ulong(b, gcm->ulTagBits);
  return gcm;
}
