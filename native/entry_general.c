/* C_Initialize, C_Finalize and the library, slot, token and mechanism queries. */
#include <string.h>

#include "entry.h"
#include "library.h"
#include "log.h"
#include "recovery.h"

/* A replacement helper takes over the sessions the application still has open (recovery.h). */
static CK_RV restore_sessions(struct link *link) {
  struct call c;
  call_begin_on(&c, link, FN_RestoreSessions, "restoring the sessions");
  size_t count = recovery_encode(&c.request);
  if (count == 0) return call_end(&c, CKR_OK); /* A first start, or nothing open: no round trip. */
  CK_RV rv = call_run(&c);
  rv = call_end(&c, rv);
  if (rv != CKR_OK) {
    log_error("the new helper refused the %zu open session(s) (0x%lx)", count, (unsigned long)rv);
  } else if (count > 0) {
    log_debug("restored %zu session(s) on the new helper", count);
  }
  return rv;
}

static CK_RV handshake(struct link *link, CK_FLAGS flags) {
  struct call c;
  call_begin_on(&c, link, FN_C_Initialize, "C_Initialize");
  wbuf_u32(&c.request, WIRE_PROTOCOL_VERSION);
  wbuf_u8(&c.request, (uint8_t)sizeof(CK_ULONG));
  wbuf_ulong(&c.request, flags);
  /* The helper keeps its own deadlines well inside ours, so that it answers a slow vault with an error before the
   * shim gives up on it and replaces it. */
  wbuf_ulong(&c.request, link_timeout_ms(link));
  CK_RV rv = call_run(&c);
  int replied = c.replied;
  rv = call_end(&c, rv);
  if (!replied) {
    log_error("C_Initialize failed: the helper did not start (see the lines above); returning CKR_GENERAL_ERROR");
    return CKR_GENERAL_ERROR;
  }
  /* CKR_DEVICE_ERROR (a malformed reply) is not a return value C_Initialize may use. */
  if (rv != CKR_OK) return rv == CKR_DEVICE_ERROR ? CKR_GENERAL_ERROR : rv;
  return restore_sessions(link);
}

static CK_RV goodbye(struct link *link) {
  struct call c;
  call_begin_on(&c, link, FN_C_Finalize, "C_Finalize");
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}

CK_RV C_Initialize(CK_VOID_PTR pInitArgs) {
  const CK_C_INITIALIZE_ARGS *args = pInitArgs;
  CK_RV rv = library_check_init_args(args);
  if (rv != CKR_OK) return rv;
  return library_initialize(args, handshake);
}

CK_RV C_Finalize(CK_VOID_PTR pReserved) {
  if (pReserved != NULL) return CKR_ARGUMENTS_BAD;
  return library_finalize(goodbye);
}

CK_RV C_GetInfo(CK_INFO_PTR pInfo) {
  struct call c;
  CALL_BEGIN(c, C_GetInfo);
  if (pInfo == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  CK_RV rv = call_run(&c);
  CK_INFO info;
  memset(&info, 0, sizeof info);
  rbuf_version(&c.reply, &info.cryptokiVersion);
  rbuf_fixed(&c.reply, info.manufacturerID, sizeof info.manufacturerID);
  info.flags = rbuf_ulong(&c.reply);
  rbuf_fixed(&c.reply, info.libraryDescription, sizeof info.libraryDescription);
  rbuf_version(&c.reply, &info.libraryVersion);
  if (call_succeeded(&c, rv)) *pInfo = info;
  return call_end(&c, rv);
}

CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount) {
  struct call c;
  CALL_BEGIN(c, C_GetSlotList);
  if (pulCount == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  CK_ULONG capacity = pSlotList != NULL ? *pulCount : 0;
  wbuf_u8(&c.request, tokenPresent ? 1 : 0);
  put_out(&c.request, pSlotList, pulCount);
  CK_RV rv = call_run(&c);
  take_list(&c, rv, pSlotList, pulCount, capacity);
  return call_end(&c, rv);
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo) {
  struct call c;
  CALL_BEGIN(c, C_GetSlotInfo);
  if (pInfo == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, slotID);
  CK_RV rv = call_run(&c);
  CK_SLOT_INFO info;
  memset(&info, 0, sizeof info);
  rbuf_fixed(&c.reply, info.slotDescription, sizeof info.slotDescription);
  rbuf_fixed(&c.reply, info.manufacturerID, sizeof info.manufacturerID);
  info.flags = rbuf_ulong(&c.reply);
  rbuf_version(&c.reply, &info.hardwareVersion);
  rbuf_version(&c.reply, &info.firmwareVersion);
  if (call_succeeded(&c, rv)) *pInfo = info;
  return call_end(&c, rv);
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo) {
  struct call c;
  CALL_BEGIN(c, C_GetTokenInfo);
  if (pInfo == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, slotID);
  CK_RV rv = call_run(&c);
  CK_TOKEN_INFO info;
  memset(&info, 0, sizeof info);
  struct rbuf *r = &c.reply;
  rbuf_fixed(r, info.label, sizeof info.label);
  rbuf_fixed(r, info.manufacturerID, sizeof info.manufacturerID);
  rbuf_fixed(r, info.model, sizeof info.model);
  rbuf_fixed(r, info.serialNumber, sizeof info.serialNumber);
  info.flags = rbuf_ulong(r);
  info.ulMaxSessionCount = rbuf_ulong(r);
  info.ulSessionCount = rbuf_ulong(r);
  info.ulMaxRwSessionCount = rbuf_ulong(r);
  info.ulRwSessionCount = rbuf_ulong(r);
  info.ulMaxPinLen = rbuf_ulong(r);
  info.ulMinPinLen = rbuf_ulong(r);
  info.ulTotalPublicMemory = rbuf_ulong(r);
  info.ulFreePublicMemory = rbuf_ulong(r);
  info.ulTotalPrivateMemory = rbuf_ulong(r);
  info.ulFreePrivateMemory = rbuf_ulong(r);
  rbuf_version(r, &info.hardwareVersion);
  rbuf_version(r, &info.firmwareVersion);
  rbuf_fixed(r, info.utcTime, sizeof info.utcTime);
  if (call_succeeded(&c, rv)) *pInfo = info;
  return call_end(&c, rv);
}

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList, CK_ULONG_PTR pulCount) {
  struct call c;
  CALL_BEGIN(c, C_GetMechanismList);
  if (pulCount == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  CK_ULONG capacity = pMechanismList != NULL ? *pulCount : 0;
  wbuf_ulong(&c.request, slotID);
  put_out(&c.request, pMechanismList, pulCount);
  CK_RV rv = call_run(&c);
  take_list(&c, rv, pMechanismList, pulCount, capacity);
  return call_end(&c, rv);
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo) {
  struct call c;
  CALL_BEGIN(c, C_GetMechanismInfo);
  if (pInfo == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, slotID);
  wbuf_ulong(&c.request, type);
  CK_RV rv = call_run(&c);
  CK_MECHANISM_INFO info;
  info.ulMinKeySize = rbuf_ulong(&c.reply);
  info.ulMaxKeySize = rbuf_ulong(&c.reply);
  info.flags = rbuf_ulong(&c.reply);
  if (call_succeeded(&c, rv)) *pInfo = info;
  return call_end(&c, rv);
}
