/* The library's one piece of global state: whether it is initialised, by which process, and the link to the
 * helper. C_Initialize and C_Finalize change it; every other call holds a reference to the link while it runs. */
#ifndef AKV_LIBRARY_H
#define AKV_LIBRARY_H

#include "link.h"
#include "pkcs11_3.h"

/* Checks pInitArgs as PKCS#11 requires; CKR_OK for NULL. */
CK_RV library_check_init_args(const CK_C_INITIALIZE_ARGS *args);

/* Brings a new helper to the application's state: C_Initialize, then the recorded sessions (recovery.h). */
typedef CK_RV (*library_handshake_fn)(struct link *link, CK_FLAGS flags);

/* Spawns a helper, runs handshake on it (which returns the helper's C_Initialize result) and publishes the link
 * when that is CKR_OK. A forked child's inherited state is dropped first without touching the parent's helper.
 * The same handshake brings up each replacement when a helper dies (library_enter). */
CK_RV library_initialize(const CK_C_INITIALIZE_ARGS *args, library_handshake_fn handshake);

/* Runs goodbye (the helper's C_Finalize) and tears the link down once no call uses it any more. */
CK_RV library_finalize(CK_RV (*goodbye)(struct link *link));

/* CKR_CRYPTOKI_NOT_INITIALIZED unless C_Initialize succeeded in this process; else CKR_OK and a link that stays
 * valid until library_leave. When the helper has died, the first caller starts a new one (rate-limited) and
 * the others wait for it; CKR_DEVICE_ERROR while a back-off holds or the new helper cannot start. */
CK_RV library_enter(struct link **link);
void library_leave(void);

/* CKR_OK when initialised in this process; for calls answered without the helper. */
CK_RV library_check(void);

#endif
