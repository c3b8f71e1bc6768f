#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void reserve(struct wbuf *b, size_t more) {
  if (b->error != WIRE_OK) return;
  if (more > WIRE_MAX_FRAME || b->len + more > WIRE_MAX_FRAME + 4u) {
    b->error = WIRE_TOO_BIG;
    return;
  }
  if (b->len + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more) cap *= 2;
  uint8_t *data = realloc(b->data, cap);
  if (data == NULL) {
    b->error = WIRE_NO_MEMORY;
    return;
  }
  b->data = data;
  b->cap = cap;
}

static void put_le(struct wbuf *b, uint64_t v, size_t n) {
  reserve(b, n);
  if (b->error != WIRE_OK) return;
  for (size_t i = 0; i < n; i++) b->data[b->len + i] = (uint8_t)(v >> (8 * i));
  b->len += n;
}

void wbuf_start(struct wbuf *b, uint32_t function_id) {
  memset(b, 0, sizeof *b);
  put_le(b, 0, 4);
  put_le(b, 0, 4);
  put_le(b, function_id, 4);
}

void wbuf_free(struct wbuf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

void wbuf_u8(struct wbuf *b, uint8_t v) { put_le(b, v, 1); }
void wbuf_u32(struct wbuf *b, uint32_t v) { put_le(b, v, 4); }

void wbuf_ulong(struct wbuf *b, CK_ULONG v) {
  put_le(b, v == CK_UNAVAILABLE_INFORMATION ? WIRE_UNAVAILABLE : (uint64_t)v, 8);
}

void wbuf_bytes(struct wbuf *b, const void *p, CK_ULONG len) {
  if (p == NULL) len = 0;
  if (len > WIRE_MAX_FRAME) {
    if (b->error == WIRE_OK) b->error = WIRE_TOO_BIG;
    return;
  }
  put_le(b, (uint32_t)len, 4);
  reserve(b, len);
  if (b->error != WIRE_OK || len == 0) return;
  memcpy(b->data + b->len, p, len);
  b->len += len;
}

static void set_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void wbuf_seal(struct wbuf *b, uint32_t request_id) {
  if (b->error != WIRE_OK) return;
  set_le32(b->data, (uint32_t)(b->len - 4));
  set_le32(b->data + 4, request_id);
}

void rbuf_init(struct rbuf *r, const uint8_t *p, size_t len) {
  r->p = p;
  r->left = len;
  r->failed = 0;
}

static const uint8_t *take(struct rbuf *r, size_t n) {
  if (r->failed || n > r->left) {
    r->failed = 1;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

static uint64_t get_le(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

uint32_t wire_get_u32(const uint8_t *p) { return (uint32_t)get_le(p, 4); }

uint8_t rbuf_u8(struct rbuf *r) {
  const uint8_t *p = take(r, 1);
  return p ? p[0] : 0;
}

uint32_t rbuf_u32(struct rbuf *r) {
  const uint8_t *p = take(r, 4);
  return p ? (uint32_t)get_le(p, 4) : 0;
}

uint64_t rbuf_u64(struct rbuf *r) {
  const uint8_t *p = take(r, 8);
  return p ? get_le(p, 8) : 0;
}

CK_ULONG rbuf_ulong(struct rbuf *r) {
  uint64_t v = rbuf_u64(r);
  if (v == WIRE_UNAVAILABLE) return CK_UNAVAILABLE_INFORMATION;
  if (v > (uint64_t)ULONG_MAX) {
    r->failed = 1;
    return 0;
  }
  return (CK_ULONG)v;
}

void rbuf_bytes(struct rbuf *r, const uint8_t **p, size_t *len) {
  size_t n = rbuf_u32(r);
  const uint8_t *data = take(r, n);
  *p = data;
  *len = data ? n : 0;
}

void rbuf_fixed(struct rbuf *r, void *dst, size_t n) {
  const uint8_t *p = take(r, n);
  if (p) memcpy(dst, p, n);
}

void rbuf_version(struct rbuf *r, CK_VERSION *v) {
  v->major = rbuf_u8(r);
  v->minor = rbuf_u8(r);
}

int rbuf_done(const struct rbuf *r) { return !r->failed && r->left == 0; }

int wire_send_all(int fd, const uint8_t *p, size_t n, size_t *sent) {
  while (n > 0) {
    ssize_t got = send(fd, p, n, MSG_NOSIGNAL);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return 0;
    p += got;
    n -= (size_t)got;
    *sent += (size_t)got;
  }
  return 1;
}
