/* The connection to one helper process: it owns the socket, the table of calls waiting for replies and the
 * helper's pid. Many threads may call link_call at once; the module creates no thread of its own (one waiting
 * caller at a time reads the socket and hands each reply to its waiter). */
#ifndef AKV_LINK_H
#define AKV_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pkcs11_3.h"
#include "wire.h"

struct link;

/* Spawns the helper. args supplies the application's mutex callbacks (may be NULL).
 * Returns NULL with *rv set (CKR_GENERAL_ERROR, CKR_HOST_MEMORY or the CreateMutex result) on failure. */
struct link *link_open(const CK_C_INITIALIZE_ARGS *args, CK_RV *rv);

/* Sends the request (sealing it with a fresh request id) and waits for its reply, at most the call timeout.
 * On CKR_OK, *reply is a malloc'd reply frame without its length field (u32 id, U rv, payload) that the caller
 * frees. Returns CKR_DEVICE_ERROR when the helper is gone, the send fails or the timeout expires; *unsent is then
 * 1 when no byte of the request reached the helper, so the call may run on a new one, and 2 when the helper died
 * after the request was sent and before it answered (it may or may not have acted on it). A helper that times out or
 * whose socket breaks is killed and reaped at once, so that a call reported as failed can have no later effect. */
CK_RV link_call(struct link *link, struct wbuf *request, const char *function, uint8_t **reply, size_t *reply_len,
                int *unsent);

/* True once the helper is gone: the library then replaces it at the next call. */
int link_is_dead(struct link *link);
pid_t link_pid(const struct link *link);
/* "the helper (pid N)" or "the agent", for log lines. */
const char *link_peer(const struct link *link);
/* AZURE_KEYVAULT_PKCS11_CALL_TIMEOUT_MS as read at link_open. */
unsigned long link_timeout_ms(const struct link *link);

/* Announces that the helper is about to exit (C_Finalize), so its end-of-file is not reported as a failure. */
void link_expect_exit(struct link *link);

/* Closes the connection: waiting and later calls get CKR_DEVICE_ERROR, and the helper is reaped (killed if it
 * has not exited 3 s after end-of-file). Safe to call once per link, from the process that opened it. */
void link_stop(struct link *link);

/* Frees a stopped link; no thread may still be using it. */
void link_free(struct link *link);

/* In a forked child, right after fork: closes the child's copy of the socket so that the parent's helper still
 * sees end-of-file when the parent goes away, however long the child lives. Async-signal-safe. */
void link_close_inherited(struct link *link);

/* In a forked child: drops the parent's link without sending anything, joining or reaping anything. */
void link_abandon(struct link *link);

#endif
