/*
 * redo.c — the redo record and batch codecs (format tables in redo/README.md
 * and redo/redo.h). Decoders take untrusted bytes: every length is checked
 * against the buffer before it is read, and bad bytes give RD_ECORRUPT, never
 * an assert. Encoders take the writer's records: a malformed record is a
 * programmer error reported as -EINVAL, an oversized one as RD_ETOOBIG.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"
#include "engine/engine.h"
#include "redo/redo.h"
#include "redo/redo_int.h"

_Static_assert(REDO_BATCH_HDR_SIZE == 8 + 8 + 4 + 4 + 8, "batch header layout");
_Static_assert(ENGINE_REC_PAGE_DELTA != REDO_REC_COMMIT && ENGINE_REC_PAGE_IMAGE != REDO_REC_COMMIT,
               "record types must not collide");
_Static_assert(REDO_FLAG_CPL == ENGINE_REC_FLAG_MTR_END, "CPL flag is the engine's MTR end flag");

/* ------------------------------------------------------------ validity rule */

size_t redo_commit_body(uint8_t *out, uint64_t txn_id)
{
    if (txn_id < (1ull << 49))
        return redo_varint_put(out, txn_id); /* 1..7 bytes */
    rd_put_u64le(out, txn_id);
    return 8;
}

int redo_commit_txn(const uint8_t *body, size_t body_len, uint64_t *txn_id)
{
    if (body_len == 8) {
        *txn_id = rd_get_u64le(body);
        return 0;
    }
    uint64_t v;
    if (body_len < 1 || body_len > 7 || redo_varint_get(body, body_len, &v) != (int)body_len)
        return RD_ECORRUPT;
    *txn_id = v;
    return 0;
}

/* The rule both sides share, on the decoded fields. lsn must be known. */
static int rec_fields_ok(const struct redo_rec *r)
{
    if (r->lsn == 0)
        return 0;
    if (r->prev_pg_lsn != 0 && r->prev_pg_lsn >= r->lsn)
        return 0;
    if ((r->flags & ~REDO_FLAG_CPL) != 0)
        return 0;
    if (ENGINE_REC_IS_PAGE(r->type))
        return r->page_id != ENGINE_PAGE_NONE;
    uint64_t txn;
    return r->type == REDO_REC_COMMIT && r->page_id == ENGINE_PAGE_NONE && r->body != NULL &&
           redo_commit_txn(r->body, r->body_len, &txn) == 0;
}

int redo_rec_check(const struct redo_rec *r)
{
    if (r->body_len > REDO_MAX_BODY)
        return RD_ETOOBIG;
    if (r->body_len > 0 && r->body == NULL)
        return -EINVAL;
    return rec_fields_ok(r) ? 0 : -EINVAL;
}

/* ------------------------------------------------------------ record codec */

/* Writes everything but the body; `first` is lsn_delta (batch) or lsn (abs). */
static size_t rec_put_hdr(uint8_t *dst, uint64_t first, const struct redo_rec *r)
{
    size_t n = 0;
    n += redo_varint_put(dst + n, first);
    n += redo_varint_put(dst + n, r->prev_pg_lsn == 0 ? 0 : r->lsn - r->prev_pg_lsn);
    n += redo_varint_put(dst + n, (uint64_t)(uint32_t)(r->page_id + 1u)); /* NONE -> 0 */
    dst[n++] = r->type;
    dst[n++] = r->flags;
    n += redo_varint_put(dst + n, r->body_len);
    rd_assert(n <= REDO_REC_HDR_MAX);
    return n;
}

/* Reads one record; *first receives lsn_delta or lsn, resolved by the caller
 * through `resolve` semantics below. Returns bytes used or RD_ECORRUPT. */
static int rec_get(const uint8_t *p, size_t n, uint64_t *first, uint64_t *prev_delta,
                   struct redo_rec *r)
{
    size_t off = 0;
    uint64_t page1, body_len;
    int k;
    if ((k = redo_varint_get(p + off, n - off, first)) < 0)
        return k;
    off += (size_t)k;
    if ((k = redo_varint_get(p + off, n - off, prev_delta)) < 0)
        return k;
    off += (size_t)k;
    if ((k = redo_varint_get(p + off, n - off, &page1)) < 0)
        return k;
    off += (size_t)k;
    if (page1 > 0xFFFFFFFFull || n - off < 2)
        return RD_ECORRUPT;
    r->page_id = (uint32_t)(page1 - 1u); /* 0 -> ENGINE_PAGE_NONE */
    r->type = p[off++];
    r->flags = p[off++];
    if ((k = redo_varint_get(p + off, n - off, &body_len)) < 0)
        return k;
    off += (size_t)k;
    if (body_len > REDO_MAX_BODY || body_len > n - off)
        return RD_ECORRUPT;
    r->body_len = (uint32_t)body_len;
    r->body = body_len > 0 ? p + off : NULL;
    off += (size_t)body_len;
    return (int)off;
}

/* ---- REDO_FMT_COMPACT records (inside a batch only) ---- */

#define TAG_TYPE_MASK 0x1fu
#define TAG_CPL 0x20u
#define TAG_BACK_PREV 0x40u /* back-link = lsn - 1 */
#define TAG_COMMIT_U64 0x80u /* commits: an 8-byte body (u64) instead of a varint; else zero */
_Static_assert(REDO_REC_COMMIT <= TAG_TYPE_MASK && ENGINE_REC_PAGE_SPLIT <= TAG_TYPE_MASK, "types fit the tag");

/* Writes a compact record's header (everything before the body; a commit has none after
 * its tag and back-link: its body length is implied). */
static size_t rec_put_hdr_compact(uint8_t *dst, const struct redo_rec *r)
{
    size_t n = 0;
    bool back_prev = r->prev_pg_lsn != 0 && r->prev_pg_lsn == r->lsn - 1;
    bool u64 = r->type == REDO_REC_COMMIT && r->body_len == 8;
    dst[n++] = (uint8_t)(r->type | ((r->flags & REDO_FLAG_CPL) ? TAG_CPL : 0) | (back_prev ? TAG_BACK_PREV : 0) |
                         (u64 ? TAG_COMMIT_U64 : 0));
    if (!back_prev)
        n += redo_varint_put(dst + n, r->prev_pg_lsn == 0 ? 0 : r->lsn - r->prev_pg_lsn);
    if (r->type != REDO_REC_COMMIT) {
        n += redo_varint_put(dst + n, r->page_id);
        n += redo_varint_put(dst + n, r->body_len);
    }
    rd_assert(n <= REDO_REC_HDR_MAX);
    return n;
}

/* Reads one compact record whose LSN is lsn. Returns bytes used or RD_ECORRUPT. */
static int rec_get_compact(const uint8_t *p, size_t n, uint64_t lsn, struct redo_rec *r)
{
    size_t off = 0;
    int k;
    if (n < 1 || lsn == 0)
        return RD_ECORRUPT;
    uint8_t tag = p[off++];
    r->lsn = lsn;
    r->type = tag & TAG_TYPE_MASK;
    if ((tag & TAG_COMMIT_U64) && r->type != REDO_REC_COMMIT)
        return RD_ECORRUPT;
    r->flags = (tag & TAG_CPL) ? REDO_FLAG_CPL : 0;
    if (tag & TAG_BACK_PREV) {
        if (lsn < 2)
            return RD_ECORRUPT; /* would be LSN 0, which is "none" (delta 0) */
        r->prev_pg_lsn = lsn - 1;
    } else {
        uint64_t d;
        if ((k = redo_varint_get(p + off, n - off, &d)) < 0)
            return k;
        off += (size_t)k;
        if (d == 1 || d >= lsn)
            return RD_ECORRUPT; /* 1 is the tag bit's (R3); d == lsn would mean LSN 0 */
        r->prev_pg_lsn = d == 0 ? 0 : lsn - d;
    }
    uint64_t body_len;
    if (r->type == REDO_REC_COMMIT) {
        r->page_id = ENGINE_PAGE_NONE;
        if (tag & TAG_COMMIT_U64) {
            body_len = 8;
        } else { /* the body is one varint: its own length */
            uint64_t txn;
            if ((k = redo_varint_get(p + off, n - off, &txn)) < 0 || k > 7)
                return RD_ECORRUPT;
            body_len = (uint64_t)k;
        }
    } else {
        uint64_t page;
        if ((k = redo_varint_get(p + off, n - off, &page)) < 0)
            return k;
        off += (size_t)k;
        if (page >= ENGINE_PAGE_NONE)
            return RD_ECORRUPT;
        r->page_id = (uint32_t)page;
        if ((k = redo_varint_get(p + off, n - off, &body_len)) < 0)
            return k;
        off += (size_t)k;
    }
    if (body_len > REDO_MAX_BODY || body_len > n - off)
        return RD_ECORRUPT;
    r->body_len = (uint32_t)body_len;
    r->body = body_len > 0 ? p + off : NULL;
    off += (size_t)body_len;
    return rec_fields_ok(r) ? (int)off : RD_ECORRUPT;
}

/* Given the record's lsn, turns the back-link delta into an LSN and applies
 * the validity rule. */
static int rec_resolve(struct redo_rec *r, uint64_t lsn, uint64_t prev_delta)
{
    if (lsn == 0 || prev_delta >= lsn)
        return RD_ECORRUPT; /* delta == lsn would mean LSN 0: encoded as delta 0 */
    r->lsn = lsn;
    r->prev_pg_lsn = prev_delta == 0 ? 0 : lsn - prev_delta;
    return rec_fields_ok(r) ? 0 : RD_ECORRUPT;
}

size_t redo_rec_encode_abs(uint8_t *dst, size_t cap, const struct redo_rec *r)
{
    int rc = redo_rec_check(r);
    if (rc < 0)
        return (size_t)(ptrdiff_t)rc;
    uint8_t hdr[REDO_REC_HDR_MAX];
    size_t h = rec_put_hdr(hdr, r->lsn, r);
    if (cap < h || cap - h < r->body_len)
        return (size_t)(ptrdiff_t)RD_ETOOBIG;
    memcpy(dst, hdr, h);
    if (r->body_len > 0)
        memcpy(dst + h, r->body, r->body_len);
    return h + r->body_len;
}

int redo_rec_decode_abs(const uint8_t *src, size_t n, struct redo_rec *r, size_t *used)
{
    struct redo_rec t;
    uint64_t lsn, prev_delta;
    memset(&t, 0, sizeof(t));
    int k = rec_get(src, n, &lsn, &prev_delta, &t);
    if (k < 0)
        return k;
    if (rec_resolve(&t, lsn, prev_delta) < 0)
        return RD_ECORRUPT;
    *r = t;
    if (used != NULL)
        *used = (size_t)k;
    return 0;
}

/* ------------------------------------------------------------ batch builder */

static void batch_put_hdr(uint8_t *p, const struct redo_batch_hdr *h)
{
    rd_put_u64le(p + 0, h->first_lsn);
    rd_put_u64le(p + 8, h->last_lsn);
    rd_put_u32le(p + 16, h->nrecords);
    rd_put_u16le(p + 20, (uint16_t)h->pg);
    p[22] = h->format;
    p[23] = 0;
    rd_put_u64le(p + 24, h->vdl);
}

static int batch_ensure_hdr(struct redo_batch *b)
{
    if (b->buf.len >= REDO_BATCH_HDR_SIZE)
        return 0;
    static const uint8_t zero[REDO_BATCH_HDR_SIZE];
    rd_assert(b->buf.len == 0);
    return rd_buf_append(&b->buf, zero, sizeof(zero));
}

void redo_batch_begin(struct redo_batch *b, uint64_t first_lsn)
{
    redo_batch_begin_format(b, first_lsn, REDO_FMT_COMPACT);
}

void redo_batch_begin_format(struct redo_batch *b, uint64_t first_lsn, uint8_t format)
{
    rd_assert(first_lsn >= 1 && (format == REDO_FMT_V1 || format == REDO_FMT_COMPACT));
    rd_buf_reset(&b->buf); /* keeps the allocation of a reused batch */
    memset(&b->hdr, 0, sizeof(b->hdr));
    b->hdr.format = format;
    b->hdr.first_lsn = first_lsn;
    b->hdr.last_lsn = first_lsn - 1;
    b->last_lsn = first_lsn - 1;
    (void)batch_ensure_hdr(b); /* retried by add/finish if memory is short */
}

int redo_batch_add(struct redo_batch *b, const struct redo_rec *r)
{
    int rc = redo_rec_check(r);
    if (rc < 0)
        return rc;
    if (r->lsn != b->last_lsn + 1)
        return -EINVAL; /* LSNs in a batch are consecutive */
    if (b->hdr.nrecords == UINT32_MAX)
        return RD_ETOOBIG;
    if ((rc = batch_ensure_hdr(b)) < 0)
        return rc;
    uint8_t hdr[REDO_REC_HDR_MAX];
    size_t h = b->hdr.format == REDO_FMT_COMPACT ? rec_put_hdr_compact(hdr, r) : rec_put_hdr(hdr, 1, r);
    if (b->buf.len + h + r->body_len > FRAME_MAX_PAYLOAD)
        return RD_ETOOBIG; /* the batch must fit in one frame: send it and start another */
    if ((rc = rd_buf_reserve(&b->buf, h + r->body_len)) < 0)
        return rc;
    memcpy(b->buf.data + b->buf.len, hdr, h);
    if (r->body_len > 0)
        memcpy(b->buf.data + b->buf.len + h, r->body, r->body_len);
    b->buf.len += h + r->body_len;
    b->last_lsn = r->lsn;
    b->hdr.last_lsn = r->lsn;
    b->hdr.nrecords++;
    return 0;
}

void redo_batch_finish(struct redo_batch *b, uint64_t vdl)
{
    /* Only an empty batch can lack its header here; 32 bytes of OOM is fatal. */
    rd_assert(batch_ensure_hdr(b) == 0);
    b->hdr.vdl = vdl;
    b->hdr.pg = 0;
    rd_assert(b->hdr.last_lsn - b->hdr.first_lsn + 1 == b->hdr.nrecords);
    batch_put_hdr(b->buf.data, &b->hdr);
}

void redo_batch_free(struct redo_batch *b)
{
    rd_buf_free(&b->buf);
    memset(&b->hdr, 0, sizeof(b->hdr));
    b->last_lsn = 0;
}

/* ------------------------------------------------------------ batch reader */

int redo_batch_parse_hdr(const uint8_t *p, size_t n, struct redo_batch_hdr *h)
{
    if (n < REDO_BATCH_HDR_SIZE)
        return RD_ECORRUPT;
    struct redo_batch_hdr t;
    t.first_lsn = rd_get_u64le(p + 0);
    t.last_lsn = rd_get_u64le(p + 8);
    t.nrecords = rd_get_u32le(p + 16);
    t.pg = rd_get_u16le(p + 20);
    t.format = p[22];
    t.vdl = rd_get_u64le(p + 24);
    if (t.first_lsn == 0 || t.pg != 0 || p[23] != 0 || (t.format != REDO_FMT_V1 && t.format != REDO_FMT_COMPACT))
        return RD_ECORRUPT;
    if (t.last_lsn < t.first_lsn - 1 || t.last_lsn - (t.first_lsn - 1) != t.nrecords)
        return RD_ECORRUPT; /* LSNs run first_lsn..last_lsn, one record each */
    if ((uint64_t)t.nrecords * (t.format == REDO_FMT_V1 ? REDO_REC_MIN_SIZE : REDO_REC_MIN_SIZE_COMPACT) >
        n - REDO_BATCH_HDR_SIZE)
        return RD_ECORRUPT; /* cannot hold that many records */
    *h = t;
    return 0;
}

int redo_batch_next(const uint8_t *p, size_t n, size_t *off, uint64_t *prev_lsn, struct redo_rec *r)
{
    struct redo_batch_hdr h;
    int rc = redo_batch_parse_hdr(p, n, &h);
    if (rc < 0)
        return rc;
    if (*off < REDO_BATCH_HDR_SIZE || *off > n)
        return RD_ECORRUPT;
    if (*off == REDO_BATCH_HDR_SIZE)
        *prev_lsn = h.first_lsn - 1; /* first call: the caller need not set it */
    if (*prev_lsn < h.first_lsn - 1 || *prev_lsn > h.last_lsn)
        return RD_ECORRUPT;
    if (*prev_lsn == h.last_lsn)
        return *off == n ? 0 : RD_ECORRUPT; /* trailing bytes after the last record */
    struct redo_rec t;
    uint64_t delta, prev_delta;
    memset(&t, 0, sizeof(t));
    int k;
    if (h.format == REDO_FMT_COMPACT) {
        if ((k = rec_get_compact(p + *off, n - *off, *prev_lsn + 1, &t)) < 0)
            return k;
    } else {
        if ((k = rec_get(p + *off, n - *off, &delta, &prev_delta, &t)) < 0)
            return k;
        if (delta != 1 || rec_resolve(&t, *prev_lsn + 1, prev_delta) < 0)
            return RD_ECORRUPT;
    }
    *off += (size_t)k;
    *prev_lsn = t.lsn;
    *r = t;
    return 1;
}
