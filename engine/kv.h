/*
 * kv.h — the value format: what the bytes the B+tree stores under a key mean
 * (string or hash, and an optional expiry time). The B+tree itself stores
 * opaque byte strings; this layer gives them a type and a TTL so that every
 * command is still one or more engine_put/engine_delete calls — page records
 * that classic replicas replay and aurora readers apply unchanged.
 *
 * Stored value (engine/README.md "Values"):
 *
 * | form   | condition                              | bytes                                     |
 * |--------|----------------------------------------|-------------------------------------------|
 * | plain  | empty, or first byte != 0xFE           | the string itself (no type byte, no TTL)   |
 * | tagged | first byte == 0xFE (ENGINE_KV_TAG)     | 0xFE, u8 type, u8 flags, [u64 expire_ms], payload |
 *
 * type: 0 string (payload = the string), 1 hash (payload = u32 n, then n ×
 * {u32 field_len, field, u32 value_len, value}, fields distinct, insertion
 * order). flags bit 0: an expiry follows (u64 little-endian, ms since the Unix
 * epoch on the writer's clock); other bits must be 0. A string without a TTL
 * is stored plain unless it starts with 0xFE, so values written before this
 * format existed read unchanged and an ordinary SET costs no extra byte.
 *
 * Threading: none (pure functions, plus engine calls on the caller's thread).
 */
#ifndef RD_ENGINE_KV_H
#define RD_ENGINE_KV_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "engine/engine.h"

#define ENGINE_KV_TAG 0xFEu
#define ENGINE_KV_FLAG_EXPIRE 0x01u
#define ENGINE_KV_HDR_MAX 11u /* tag + type + flags + u64 expire */

enum engine_kv_type {
    ENGINE_KV_STRING = 0,
    ENGINE_KV_HASH = 1,
};

/* A decoded value. data points into the buffer given to engine_kv_decode
 * (valid as long as that buffer is). */
struct engine_kv {
    uint8_t type;
    uint64_t expire_ms; /* 0: no expiry */
    const uint8_t *data;
    size_t len;
};

/* 0, or RD_ECORRUPT (unknown type or flags, truncated header, a hash payload
 * that does not parse exactly). */
int engine_kv_decode(const uint8_t *raw, size_t len, struct engine_kv *out);
/* Appends the stored form of (type, expire_ms, payload) to out (not reset
 * first). 0 or -ENOMEM. */
int engine_kv_encode(struct rd_buf *out, uint8_t type, uint64_t expire_ms, const uint8_t *data, size_t len);
/* Stored size of a value without building it. */
size_t engine_kv_encoded_len(uint8_t type, uint64_t expire_ms, const uint8_t *data, size_t len);
/* Whether v has expired at time now_ms (expire_ms <= now_ms). */
static inline int engine_kv_expired(const struct engine_kv *v, uint64_t now_ms)
{
    return v->expire_ms != 0 && v->expire_ms <= now_ms;
}

/*
 * Reads key at view time now_ms into *raw (reset first) and decodes it into
 * *out. Returns 0 (live), RD_ENOTFOUND (absent; *expired = 0) or RD_ENOTFOUND
 * with *expired = 1 (present but expired at now_ms: hidden; the writer deletes
 * it), or an engine error / RD_ECORRUPT. expired may be NULL.
 */
int engine_kv_get(struct engine *e, const uint8_t *key, size_t key_len, uint64_t now_ms, struct rd_buf *raw,
                  struct engine_kv *out, int *expired);

/* ---- hash payloads ---- */

/* Iterates a hash payload: *off starts at 0; returns 1 and the next field and
 * value, 0 at the end, RD_ECORRUPT on bad bytes. */
int engine_kv_hash_next(const uint8_t *p, size_t len, size_t *off, const uint8_t **field, size_t *field_len,
                        const uint8_t **val, size_t *val_len);
/* Number of fields (or RD_ECORRUPT). */
int64_t engine_kv_hash_count(const uint8_t *p, size_t len);
/* Finds field; 1 found (value returned), 0 not, RD_ECORRUPT. */
int engine_kv_hash_find(const uint8_t *p, size_t len, const uint8_t *field, size_t field_len, const uint8_t **val,
                        size_t *val_len);
/* Builds into out (reset first) the payload p with field set to val (added at
 * the end if new; val NULL: removed). *added is 1 if the field was new, *removed 1
 * if it existed and val is NULL. 0, RD_ECORRUPT or -ENOMEM. */
int engine_kv_hash_set(const uint8_t *p, size_t len, const uint8_t *field, size_t field_len, const uint8_t *val,
                       size_t val_len, struct rd_buf *out, int *added, int *removed);

#endif
