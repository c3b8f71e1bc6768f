/* Sessions and login. Each success is also noted in the recovery record, so that a replacement helper can take
 * the sessions over (recovery.h). */
#include "entry.h"
#include "recovery.h"

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                    CK_SESSION_HANDLE_PTR phSession) {
  (void)pApplication; /* The module never calls Notify back. */
  (void)Notify;
  struct call c;
  CALL_BEGIN(c, C_OpenSession);
  if (phSession == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, slotID);
  wbuf_ulong(&c.request, flags);
  CK_RV rv = call_run(&c);
  CK_SESSION_HANDLE session = rbuf_ulong(&c.reply);
  if (call_succeeded(&c, rv)) {
    *phSession = session;
    recovery_session_opened(session, slotID, flags);
  }
  return call_end(&c, rv);
}

/* One CK_ULONG argument and no reply payload; on_success records what the helper's CKR_OK changed. */
static CK_RV call_with_ulong(uint32_t function_id, const char *function, CK_ULONG value, void (*on_success)(CK_ULONG)) {
  struct call c;
  CK_RV rv = call_begin(&c, function_id, function);
  if (rv != CKR_OK) return rv;
  wbuf_ulong(&c.request, value);
  rv = call_run(&c);
  if (call_succeeded(&c, rv)) on_success(value);
  return call_end(&c, rv);
}

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession) {
  return call_with_ulong(FN_C_CloseSession, "C_CloseSession", hSession, recovery_session_closed);
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID) {
  return call_with_ulong(FN_C_CloseAllSessions, "C_CloseAllSessions", slotID, recovery_slot_closed);
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession) {
  return call_with_ulong(FN_C_Logout, "C_Logout", hSession, recovery_logged_out);
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo) {
  struct call c;
  CALL_BEGIN(c, C_GetSessionInfo);
  if (pInfo == NULL) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  CK_RV rv = call_run(&c);
  CK_SESSION_INFO info;
  info.slotID = rbuf_ulong(&c.reply);
  info.state = rbuf_ulong(&c.reply);
  info.flags = rbuf_ulong(&c.reply);
  info.ulDeviceError = rbuf_ulong(&c.reply);
  if (call_succeeded(&c, rv)) *pInfo = info;
  return call_end(&c, rv);
}

CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen) {
  struct call c;
  CALL_BEGIN(c, C_Login);
  /* A NULL PIN with length 0 is the protected authentication path. */
  if (bad_data(pPin, ulPinLen)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, userType);
  wbuf_bytes(&c.request, pPin, ulPinLen);
  CK_RV rv = call_run(&c);
  if (call_succeeded(&c, rv)) recovery_logged_in(hSession, userType);
  return call_end(&c, rv);
}

CK_RV C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                  CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen) {
  struct call c;
  CALL_BEGIN(c, C_LoginUser);
  if (bad_data(pPin, ulPinLen) || bad_data(pUsername, ulUsernameLen)) return call_end(&c, CKR_ARGUMENTS_BAD);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, userType);
  wbuf_bytes(&c.request, pPin, ulPinLen);
  wbuf_bytes(&c.request, pUsername, ulUsernameLen);
  CK_RV rv = call_run(&c);
  if (call_succeeded(&c, rv)) recovery_logged_in(hSession, userType);
  return call_end(&c, rv);
}

CK_RV C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags) {
  struct call c;
  CALL_BEGIN(c, C_SessionCancel);
  wbuf_ulong(&c.request, hSession);
  wbuf_ulong(&c.request, flags);
  CK_RV rv = call_run(&c);
  return call_end(&c, rv);
}
