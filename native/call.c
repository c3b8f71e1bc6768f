#include "call.h"

#include <stdlib.h>
#include <string.h>

#include "library.h"
#include "function_ids.h"
#include "log.h"

void call_begin_on(struct call *c, struct link *link, uint32_t function_id, const char *function) {
  memset(c, 0, sizeof *c);
  c->function = function;
  c->function_id = function_id;
  c->link = link;
  wbuf_start(&c->request, function_id);
}

CK_RV call_begin(struct call *c, uint32_t function_id, const char *function) {
  struct link *link = NULL;
  CK_RV rv = library_enter(&link);
  if (rv != CKR_OK) return rv;
  call_begin_on(c, link, function_id, function);
  c->entered = 1;
  return CKR_OK;
}

/* What a call whose arguments cannot fit one frame returns: a length error where the function's list of return
 * values has one, else the token's "not enough memory", which every function may return. */
static CK_RV too_big_rv(uint32_t function_id) {
  switch (function_id) {
    case FN_C_Encrypt:
    case FN_C_EncryptUpdate:
    case FN_C_Sign:
    case FN_C_SignUpdate:
    case FN_C_Verify:
    case FN_C_VerifyUpdate:
    case FN_C_EncryptMessage:
      return CKR_DATA_LEN_RANGE;
    case FN_C_Decrypt:
    case FN_C_DecryptUpdate:
    case FN_C_DecryptMessage:
      return CKR_ENCRYPTED_DATA_LEN_RANGE;
    case FN_C_VerifyFinal:
      return CKR_SIGNATURE_LEN_RANGE;
    default:
      return CKR_DEVICE_MEMORY;
  }
}

/* Calls that change no state in the helper, so that asking a second helper is the same as asking the first. */
static int changes_nothing(uint32_t function_id) {
  switch (function_id) {
    case FN_C_GetInfo:
    case FN_C_GetSlotList:
    case FN_C_GetSlotInfo:
    case FN_C_GetTokenInfo:
    case FN_C_GetMechanismList:
    case FN_C_GetMechanismInfo:
    case FN_C_GetSessionInfo:
    case FN_C_GetObjectSize:
    case FN_C_GetAttributeValue:
      return 1;
    default:
      return 0;
  }
}

CK_RV call_run(struct call *c) {
  if (c->request.error == WIRE_NO_MEMORY) return CKR_HOST_MEMORY;
  if (c->request.error == WIRE_TOO_BIG) {
    CK_RV rv = too_big_rv(c->function_id);
    log_error("%s: the arguments exceed the 64 MiB frame limit; returning %s", c->function,
              rv == CKR_DEVICE_MEMORY ? "CKR_DEVICE_MEMORY" : "a length error");
    return rv;
  }
  int unsent = 0;
  CK_RV rv = link_call(c->link, &c->request, c->function, &c->frame, &c->frame_len, &unsent);
  if (rv != CKR_OK && (unsent == 1 || (unsent == 2 && changes_nothing(c->function_id))) && c->entered) {
    /* The request never reached the helper, or it only asks a question: run it on the replacement. A helper that
     * is exiting may still hold its socket open for a moment, so a question sent then is lost in flight. */
    library_leave();
    c->entered = 0;
    rv = library_enter(&c->link);
    if (rv != CKR_OK) return rv;
    c->entered = 1;
    rv = link_call(c->link, &c->request, c->function, &c->frame, &c->frame_len, &unsent);
  }
  if (rv != CKR_OK) return rv;
  c->replied = 1;
  rbuf_init(&c->reply, c->frame, c->frame_len);
  rbuf_u32(&c->reply); /* the request id, already matched */
  return (CK_RV)rbuf_ulong(&c->reply);
}

int call_valid(const struct call *c) { return c->replied && !c->reply.failed; }

int call_succeeded(const struct call *c, CK_RV rv) { return rv == CKR_OK && call_valid(c) && rbuf_done(&c->reply); }

void call_reject(struct call *c, const char *why) {
  if (!c->rejected) log_error("%s: protocol error: %s; returning CKR_DEVICE_ERROR", c->function, why);
  c->rejected = 1;
  c->reply.failed = 1;
}

CK_RV call_end(struct call *c, CK_RV rv) {
  if (c->replied && !rbuf_done(&c->reply)) {
    if (!c->rejected) {
      log_error("%s: protocol error: the reply is %s; returning CKR_DEVICE_ERROR", c->function,
                c->reply.failed ? "truncated or malformed" : "longer than expected");
    }
    rv = CKR_DEVICE_ERROR;
  }
  free(c->frame);
  wbuf_free(&c->request);
  if (c->entered) library_leave();
  memset(c, 0, sizeof *c);
  return rv;
}
