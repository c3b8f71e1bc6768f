/* What a replacement helper must be told so that the application's sessions outlive a helper that died: each open
 * session's handle, slot and flags, and the user each slot is logged in as. It follows the helper's successful
 * replies and nothing else; the helper stays the only judge of PKCS#11 rules. Active operations are not recorded:
 * they are lost with the helper, and the application gets CKR_OPERATION_NOT_INITIALIZED for them. */
#ifndef AKV_RECOVERY_H
#define AKV_RECOVERY_H

#include "pkcs11_3.h"
#include "wire.h"

/* Forgets everything (C_Initialize, C_Finalize, a forked child's C_Initialize). */
void recovery_reset(void);

void recovery_session_opened(CK_SESSION_HANDLE session, CK_SLOT_ID slot, CK_FLAGS flags);
/* Closing a slot's last session logs that slot out, as the helper does. */
void recovery_session_closed(CK_SESSION_HANDLE session);
void recovery_slot_closed(CK_SLOT_ID slot);
/* userType CKU_USER or CKU_SO; CKU_CONTEXT_SPECIFIC changes no state and is ignored. */
void recovery_logged_in(CK_SESSION_HANDLE session, CK_USER_TYPE user_type);
void recovery_logged_out(CK_SESSION_HANDLE session);

/* Appends the record in the shape of the helper's restore request (docs/protocol.md); returns the session count. */
size_t recovery_encode(struct wbuf *b);

/* Fork handlers: the record's lock is held across fork so that the child never inherits it locked. */
void recovery_before_fork(void);
void recovery_after_fork(void);

#endif
