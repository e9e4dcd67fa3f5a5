/*
 * kv.c — the value format (type + expiry) over the B+tree's byte strings.
 * The table of the stored forms is in kv.h and engine/README.md "Values".
 * A value is valid if and only if it is plain (empty or first byte != 0xFE),
 * or tagged with a known type, only known flag bits, a complete expiry when
 * flagged, and — for a hash — a payload whose n entries end exactly at the
 * end of the value. Anything else is RD_ECORRUPT, never an assert.
 */
#include <errno.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "engine/kv.h"

static int hash_walk_check(const uint8_t *p, size_t len)
{
    if (len < 4)
        return RD_ECORRUPT;
    uint32_t n = rd_get_u32le(p);
    size_t off = 4;
    for (uint32_t i = 0; i < n; i++) {
        for (int part = 0; part < 2; part++) {
            if (len - off < 4)
                return RD_ECORRUPT;
            uint32_t l = rd_get_u32le(p + off);
            off += 4;
            if (len - off < l)
                return RD_ECORRUPT;
            off += l;
        }
    }
    return off == len ? 0 : RD_ECORRUPT;
}

int engine_kv_decode(const uint8_t *raw, size_t len, struct engine_kv *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || raw[0] != ENGINE_KV_TAG) {
        out->type = ENGINE_KV_STRING;
        out->data = raw;
        out->len = len;
        return 0;
    }
    if (len < 3)
        return RD_ECORRUPT;
    uint8_t type = raw[1], flags = raw[2];
    if (type > ENGINE_KV_HASH || (flags & ~ENGINE_KV_FLAG_EXPIRE) != 0)
        return RD_ECORRUPT;
    size_t off = 3;
    if (flags & ENGINE_KV_FLAG_EXPIRE) {
        if (len < off + 8)
            return RD_ECORRUPT;
        out->expire_ms = rd_get_u64le(raw + off);
        off += 8;
        if (out->expire_ms == 0)
            return RD_ECORRUPT; /* the encoder never writes 0 with the flag */
    }
    out->type = type;
    out->data = raw + off;
    out->len = len - off;
    if (type == ENGINE_KV_HASH && hash_walk_check(out->data, out->len) < 0)
        return RD_ECORRUPT;
    return 0;
}

size_t engine_kv_encoded_len(uint8_t type, uint64_t expire_ms, const uint8_t *data, size_t len)
{
    if (type == ENGINE_KV_STRING && expire_ms == 0 && (len == 0 || data[0] != ENGINE_KV_TAG))
        return len;
    return 3 + (expire_ms ? 8 : 0) + len;
}

int engine_kv_encode(struct rd_buf *out, uint8_t type, uint64_t expire_ms, const uint8_t *data, size_t len)
{
    rd_assert(type <= ENGINE_KV_HASH);
    if (type == ENGINE_KV_STRING && expire_ms == 0 && (len == 0 || data[0] != ENGINE_KV_TAG))
        return rd_buf_append(out, data, len) < 0 ? -ENOMEM : 0;
    uint8_t hdr[ENGINE_KV_HDR_MAX] = {ENGINE_KV_TAG, type, expire_ms ? ENGINE_KV_FLAG_EXPIRE : 0};
    size_t hl = 3;
    if (expire_ms) {
        rd_put_u64le(hdr + 3, expire_ms);
        hl += 8;
    }
    if (rd_buf_append(out, hdr, hl) < 0 || rd_buf_append(out, data, len) < 0)
        return -ENOMEM;
    return 0;
}

int engine_kv_get(struct engine *e, const uint8_t *key, size_t key_len, uint64_t now_ms, struct rd_buf *raw,
                  struct engine_kv *out, int *expired)
{
    if (expired)
        *expired = 0;
    rd_buf_reset(raw);
    int rc = engine_get(e, key, key_len, raw);
    if (rc < 0)
        return rc;
    rc = engine_kv_decode(raw->data, raw->len, out);
    if (rc < 0)
        return rc;
    if (engine_kv_expired(out, now_ms)) {
        if (expired)
            *expired = 1;
        return RD_ENOTFOUND;
    }
    return 0;
}

int engine_kv_hash_next(const uint8_t *p, size_t len, size_t *off, const uint8_t **field, size_t *field_len,
                        const uint8_t **val, size_t *val_len)
{
    if (*off == 0)
        *off = 4;
    if (*off == len)
        return 0;
    const uint8_t *ptr[2];
    size_t l[2];
    for (int part = 0; part < 2; part++) {
        if (*off > len || len - *off < 4)
            return RD_ECORRUPT;
        l[part] = rd_get_u32le(p + *off);
        *off += 4;
        if (len - *off < l[part])
            return RD_ECORRUPT;
        ptr[part] = p + *off;
        *off += l[part];
    }
    *field = ptr[0], *field_len = l[0], *val = ptr[1], *val_len = l[1];
    return 1;
}

int64_t engine_kv_hash_count(const uint8_t *p, size_t len)
{
    if (len < 4)
        return RD_ECORRUPT;
    return rd_get_u32le(p);
}

int engine_kv_hash_find(const uint8_t *p, size_t len, const uint8_t *field, size_t field_len, const uint8_t **val,
                        size_t *val_len)
{
    size_t off = 0;
    const uint8_t *f, *v;
    size_t fl, vl;
    int rc;
    while ((rc = engine_kv_hash_next(p, len, &off, &f, &fl, &v, &vl)) == 1)
        if (fl == field_len && memcmp(f, field, fl) == 0) {
            *val = v, *val_len = vl;
            return 1;
        }
    return rc;
}

static int put_part(struct rd_buf *out, const uint8_t *p, size_t n)
{
    uint8_t l[4];
    rd_put_u32le(l, (uint32_t)n);
    return rd_buf_append(out, l, 4) < 0 || rd_buf_append(out, p, n) < 0 ? -ENOMEM : 0;
}

int engine_kv_hash_set(const uint8_t *p, size_t len, const uint8_t *field, size_t field_len, const uint8_t *val,
                       size_t val_len, struct rd_buf *out, int *added, int *removed)
{
    *added = *removed = 0;
    rd_buf_reset(out);
    uint8_t n4[4] = {0};
    if (rd_buf_append(out, n4, 4) < 0)
        return -ENOMEM;
    uint32_t n = 0;
    int found = 0;
    size_t off = 0;
    const uint8_t *f, *v;
    size_t fl, vl;
    int rc;
    while (len > 0 && (rc = engine_kv_hash_next(p, len, &off, &f, &fl, &v, &vl)) != 0) {
        if (rc < 0)
            return rc;
        if (fl == field_len && memcmp(f, field, fl) == 0) {
            found = 1;
            if (val == NULL) {
                *removed = 1;
                continue;
            }
            v = val, vl = val_len; /* replaced in place: the order is kept */
        }
        if (put_part(out, f, fl) < 0 || put_part(out, v, vl) < 0)
            return -ENOMEM;
        n++;
    }
    if (!found && val != NULL) {
        if (put_part(out, field, field_len) < 0 || put_part(out, val, val_len) < 0)
            return -ENOMEM;
        n++;
        *added = 1;
    }
    rd_put_u32le(out->data, n);
    return 0;
}
