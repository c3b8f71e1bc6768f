/* The PKCS#11 side of encoding: how caller buffers become wire fields, and the rules for writing replies back
 * into them ("What the shim writes back" in docs/protocol.md). */
#ifndef AKV_MARSHAL_H
#define AKV_MARSHAL_H

#include "call.h"
#include "pkcs11_3.h"

/* OUT request: present flag and capacity. pulLen must not be NULL. */
void put_out(struct wbuf *b, const void *p, const CK_ULONG *pulLen);

/* OUT reply, the last field of its reply: *pulLen on CKR_OK/CKR_BUFFER_TOO_SMALL, data copied on CKR_OK when p is
 * not NULL. capacity is the *pulLen the caller passed in. Nothing is written unless the whole reply is well formed. */
void take_out(struct call *c, CK_RV rv, CK_BYTE_PTR p, CK_ULONG_PTR pulLen, CK_ULONG capacity);

/* List reply (U count, u32 n, n x U): *pulCount on CKR_OK/CKR_BUFFER_TOO_SMALL, entries on CKR_OK. */
void take_list(struct call *c, CK_RV rv, CK_ULONG *list, CK_ULONG_PTR pulCount, CK_ULONG capacity);

/* TEMPLATE. CKR_ARGUMENTS_BAD for a NULL template with a count, or a NULL value with a length. */
CK_RV put_template(struct wbuf *b, const CK_ATTRIBUTE *pTemplate, CK_ULONG ulCount);

/* MECH. CKR_ARGUMENTS_BAD for a NULL mechanism; unreadable parameters travel as kind 3 for the helper to judge. */
CK_RV put_mechanism(struct wbuf *b, const CK_MECHANISM *pMechanism);

/* MSGPARAM of C_EncryptMessage / C_DecryptMessage; unreadable parameters travel as kind 3. Returns the caller's
 * CK_GCM_MESSAGE_PARAMS when it travelled as GCM (kind 1), else NULL. */
CK_GCM_MESSAGE_PARAMS *put_message_parameter(struct wbuf *b, void *pParameter, CK_ULONG ulParameterLen);

/* True for a NULL data pointer with a non-zero length. */
int bad_data(const void *p, CK_ULONG len);

#endif
