/* One round trip to the helper for one PKCS#11 call: holds the library reference, the request being built and
 * the reply being read. Typical use:
 *
 *   struct call c;
 *   CK_RV rv = call_begin(&c, FN_C_X, "C_X");      // CKR_CRYPTOKI_NOT_INITIALIZED, or a request to fill
 *   if (rv != CKR_OK) return rv;
 *   ...argument checks: return call_end(&c, CKR_ARGUMENTS_BAD) ...
 *   wbuf_ulong(&c.request, hSession); ...
 *   rv = call_run(&c);                               // the helper's rv, or CKR_DEVICE_ERROR (a request that
 *                                                    // never reached a dead helper runs on its replacement)
 *   ...decode c.reply (always, whatever rv), write outputs only when call_valid(&c)...
 *   return call_end(&c, rv);                         // malformed reply -> CKR_DEVICE_ERROR
 */
#ifndef AKV_CALL_H
#define AKV_CALL_H

#include "link.h"
#include "wire.h"

struct call {
  const char *function;
  uint32_t function_id;
  struct link *link;
  struct wbuf request;
  uint8_t *frame;
  size_t frame_len;
  struct rbuf reply;
  int replied;
  int rejected;
  int entered;
};

CK_RV call_begin(struct call *c, uint32_t function_id, const char *function);
CK_RV call_run(struct call *c);
/* True when the helper replied and nothing so far was malformed. */
int call_valid(const struct call *c);
/* True when rv is CKR_OK and the whole reply was read without a fault: the only case outputs are written. */
int call_succeeded(const struct call *c, CK_RV rv);
/* Marks the reply malformed (logged once by call_end). */
void call_reject(struct call *c, const char *why);
CK_RV call_end(struct call *c, CK_RV rv);

/* The same round trip on a link the caller already holds (C_Initialize and C_Finalize). */
void call_begin_on(struct call *c, struct link *link, uint32_t function_id, const char *function);

#endif
