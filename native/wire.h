/* Frame encoding and decoding for the shim <-> helper protocol (docs/protocol.md). Little-endian throughout;
 * every CK_ULONG travels as a u64 ("U"). Nothing here knows PKCS#11 buffer rules: see marshal.h. */
#ifndef AKV_WIRE_H
#define AKV_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "pkcs11_3.h"

#define WIRE_PROTOCOL_VERSION 2u
#define WIRE_MAX_FRAME (64u * 1024u * 1024u)
/* u32 length, u32 request id, u32 function id. */
#define WIRE_REQUEST_HEADER 12u
/* u32 request id, U rv: the part of a reply after its length field that every reply has. */
#define WIRE_REPLY_MIN 12u
#define WIRE_UNAVAILABLE UINT64_MAX

enum wire_error { WIRE_OK = 0, WIRE_NO_MEMORY, WIRE_TOO_BIG };

/* A request being built. The caller owns data and frees it with wbuf_free. */
struct wbuf {
  uint8_t *data;
  size_t len;
  size_t cap;
  enum wire_error error;
};

/* Starts a request frame for function_id; the length and request id are filled by wbuf_seal. */
void wbuf_start(struct wbuf *b, uint32_t function_id);
void wbuf_free(struct wbuf *b);
void wbuf_u8(struct wbuf *b, uint8_t v);
void wbuf_u32(struct wbuf *b, uint32_t v);
void wbuf_ulong(struct wbuf *b, CK_ULONG v);
/* BYTES: a NULL pointer travels as length 0. */
void wbuf_bytes(struct wbuf *b, const void *p, CK_ULONG len);
/* Writes the length and request id into the header. */
void wbuf_seal(struct wbuf *b, uint32_t request_id);

/* A reply being read. It does not own its memory. A read past the end sets failed and yields zeroes. */
struct rbuf {
  const uint8_t *p;
  size_t left;
  int failed;
};

void rbuf_init(struct rbuf *r, const uint8_t *p, size_t len);
uint8_t rbuf_u8(struct rbuf *r);
uint32_t rbuf_u32(struct rbuf *r);
uint64_t rbuf_u64(struct rbuf *r);
/* A U that must fit a CK_ULONG (all ones maps to CK_UNAVAILABLE_INFORMATION). */
CK_ULONG rbuf_ulong(struct rbuf *r);
/* BYTES: points *p into the reply; *len is its length. */
void rbuf_bytes(struct rbuf *r, const uint8_t **p, size_t *len);
void rbuf_fixed(struct rbuf *r, void *dst, size_t n);
void rbuf_version(struct rbuf *r, CK_VERSION *v);
/* True when every byte was read and nothing was missing. */
int rbuf_done(const struct rbuf *r);

uint32_t wire_get_u32(const uint8_t *p);

/* Sends all n bytes (no SIGPIPE), counting in *sent what went out; 0 when the socket fails first. */
int wire_send_all(int fd, const uint8_t *p, size_t n, size_t *sent);

#endif
