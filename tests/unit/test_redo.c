/* Unit tests for redo/: record and batch codecs (round trips, rejection of
 * every malformed input, truncations and bit flips), the VCL/VDL tracker
 * against a brute-force model, and the recovery point. Randomized tests print
 * their seed; SEED= replays one. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/util.h"
#include "engine/engine.h"
#include "redo/redo.h"
#include "redo/redo_int.h"

static uint64_t rng_state;

static void rng_seed(const char *test)
{
    const char *s = getenv("SEED");
    rng_state = s ? strtoull(s, NULL, 0) : 0x5EED4ED0ull;
    if (rng_state == 0)
        rng_state = 1;
    fprintf(stderr, "test_redo %s: SEED=%llu\n", test, (unsigned long long)rng_state);
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint64_t rng_below(uint64_t n) { return n == 0 ? 0 : rng_next() % n; }

/* ------------------------------------------------------------ helpers */

/* A random valid record at lsn; body bytes go into store (REDO_MAX_BODY). */
static void random_rec(struct redo_rec *r, uint64_t lsn, uint8_t *store)
{
    memset(r, 0, sizeof(*r));
    r->lsn = lsn;
    r->prev_pg_lsn = (lsn == 1 || rng_below(4) == 0) ? 0 : rng_below(2) ? lsn - 1 : lsn - 1 - rng_below(lsn - 1);
    r->flags = (uint8_t)(rng_below(2) ? REDO_FLAG_CPL : 0);
    switch (rng_below(4)) {
    case 0: /* its body is written below: a varint txn id or 8 bytes */
        r->type = REDO_REC_COMMIT;
        r->page_id = ENGINE_PAGE_NONE;
        break;
    case 1:
        r->type = ENGINE_REC_PAGE_DELTA;
        r->page_id = rng_below(8) == 0 ? ENGINE_PAGE_NONE - 1 : (uint32_t)rng_below(100000);
        r->body_len = (uint32_t)rng_below(200);
        break;
    case 2:
        r->type = rng_below(2) ? ENGINE_REC_CELL_INSERT : ENGINE_REC_PAGE_SPLIT;
        r->page_id = (uint32_t)rng_below(1u << (7 * (1 + rng_below(4))));
        r->body_len = (uint32_t)rng_below(300);
        break;
    default:
        r->type = ENGINE_REC_PAGE_IMAGE;
        r->page_id = (uint32_t)rng_next() % ENGINE_PAGE_NONE;
        r->body_len = (uint32_t)(rng_below(16) == 0 ? REDO_MAX_BODY : rng_below(ENGINE_PAGE_SIZE));
        break;
    }
    for (uint32_t i = 0; i < r->body_len; i++)
        store[i] = (uint8_t)rng_next();
    if (r->type == REDO_REC_COMMIT)
        r->body_len = (uint32_t)(rng_below(4) == 0 ? 8 : redo_commit_body(store, rng_next() >> rng_below(64)));
    r->body = r->body_len ? store : NULL;
}

static void assert_rec_eq(const struct redo_rec *a, const struct redo_rec *b)
{
    cr_assert_eq(a->lsn, b->lsn);
    cr_assert_eq(a->prev_pg_lsn, b->prev_pg_lsn, "lsn %llu", (unsigned long long)a->lsn);
    cr_assert_eq(a->page_id, b->page_id);
    cr_assert_eq(a->type, b->type);
    cr_assert_eq(a->flags, b->flags);
    cr_assert_eq(a->body_len, b->body_len);
    if (a->body_len)
        cr_assert(memcmp(a->body, b->body, a->body_len) == 0);
}

/* Iterates a whole batch. Returns the number of records, or the error. */
static int iterate(const uint8_t *p, size_t n, struct redo_rec *out, size_t max)
{
    struct redo_batch_hdr h;
    int rc = redo_batch_parse_hdr(p, n, &h);
    if (rc < 0)
        return rc;
    size_t off = REDO_BATCH_HDR_SIZE, count = 0;
    uint64_t prev = 0xdeadbeef; /* set by the first call */
    struct redo_rec r;
    while ((rc = redo_batch_next(p, n, &off, &prev, &r)) == 1) {
        cr_assert(r.body_len == 0 || (r.body >= p && r.body + r.body_len <= p + n));
        cr_assert_eq(r.lsn, h.first_lsn + count);
        if (out != NULL && count < max)
            out[count] = r;
        count++;
    }
    if (rc < 0)
        return rc;
    cr_assert_eq(count, h.nrecords);
    cr_assert_eq(off, n);
    return (int)count;
}

#define MAXREC 64
static uint8_t bodies[MAXREC][REDO_MAX_BODY];

static uint8_t batch_format = REDO_FMT_COMPACT; /* what build_batch writes */

/* Builds a batch of nrec random records starting at first; recs receive them. */
static void build_batch(struct redo_batch *b, uint64_t first, size_t nrec, struct redo_rec *recs, uint64_t vdl)
{
    redo_batch_begin_format(b, first, batch_format);
    for (size_t i = 0; i < nrec; i++) {
        random_rec(&recs[i], first + i, bodies[i]);
        cr_assert_eq(redo_batch_add(b, &recs[i]), 0);
    }
    redo_batch_finish(b, vdl);
}

/* ------------------------------------------------------------ varints */

Test(redo_varint, round_trips_boundaries_and_rejects_overlong_and_overflow)
{
    uint64_t vals[] = {0, 1, 127, 128, 16383, 16384, 0xFFFFFFFFull, UINT64_MAX >> 1, UINT64_MAX};
    for (size_t i = 0; i < RD_ARRAY_LEN(vals); i++) {
        uint8_t b[REDO_VARINT_MAX];
        size_t n = redo_varint_put(b, vals[i]);
        uint64_t v;
        cr_assert_eq(redo_varint_get(b, n, &v), (int)n);
        cr_assert_eq(v, vals[i]);
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(redo_varint_get(b, k, &v), RD_ECORRUPT, "prefix %zu of %zu", k, n);
    }
    uint64_t v;
    const uint8_t overlong[] = {0x80, 0x00};
    cr_assert_eq(redo_varint_get(overlong, 2, &v), RD_ECORRUPT);
    const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x01};
    cr_assert_eq(redo_varint_get(eleven, sizeof(eleven), &v), RD_ECORRUPT);
    const uint8_t overflow[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    cr_assert_eq(redo_varint_get(overflow, sizeof(overflow), &v), RD_ECORRUPT);
}

/* ------------------------------------------------------------ records */

Test(redo_rec, abs_encoding_round_trips_random_records)
{
    rng_seed("abs_round_trip");
    static uint8_t buf[REDO_MAX_BODY + 64];
    for (int i = 0; i < 20000; i++) {
        struct redo_rec r, d;
        uint64_t lsn = rng_below(4) == 0 ? UINT64_MAX - rng_below(1000) : 1 + rng_below(1u << 30);
        random_rec(&r, lsn, bodies[0]);
        size_t n = redo_rec_encode_abs(buf, sizeof(buf), &r);
        cr_assert(n <= sizeof(buf), "encode failed: %zd", (ssize_t)n);
        size_t used = 0;
        cr_assert_eq(redo_rec_decode_abs(buf, n, &d, &used), 0);
        cr_assert_eq(used, n);
        assert_rec_eq(&r, &d);
        /* Trailing bytes are left to the caller; every strict prefix is rejected. */
        size_t cut = rng_below(n);
        cr_assert_eq(redo_rec_decode_abs(buf, cut, &d, &used), RD_ECORRUPT);
        /* Too small a destination is RD_ETOOBIG, not an overflow. */
        cr_assert_eq(redo_rec_encode_abs(buf, n - 1, &r), (size_t)(ptrdiff_t)RD_ETOOBIG);
    }
}

Test(redo_rec, encoder_rejects_malformed_records)
{
    uint8_t buf[64], body[8] = {0};
    struct redo_rec ok = {.lsn = 10, .prev_pg_lsn = 3, .page_id = 7, .type = ENGINE_REC_PAGE_DELTA,
                          .flags = 0, .body = body, .body_len = 8};
    cr_assert(redo_rec_encode_abs(buf, sizeof(buf), &ok) <= sizeof(buf));
    struct redo_rec r = ok;
    r.prev_pg_lsn = 10;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.lsn = 0; r.prev_pg_lsn = 0;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.type = 9;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.flags = 0x02;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.page_id = ENGINE_PAGE_NONE;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.type = REDO_REC_COMMIT; /* a commit has no page */
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r.page_id = ENGINE_PAGE_NONE; r.body_len = 4; /* and a txn id: 8 bytes, or one varint of its length */
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)-EINVAL);
    r = ok; r.body_len = REDO_MAX_BODY + 1;
    cr_assert_eq(redo_rec_encode_abs(buf, sizeof(buf), &r), (size_t)(ptrdiff_t)RD_ETOOBIG);
}

Test(redo_rec, decoder_rejects_bad_fields)
{
    struct redo_rec d;
    size_t used;
    /* lsn 5, prev delta 5 (would be LSN 0), page 1, DELTA, flags 0, body 0 */
    const uint8_t prev_zero[] = {5, 5, 2, ENGINE_REC_PAGE_DELTA, 0, 0};
    cr_assert_eq(redo_rec_decode_abs(prev_zero, sizeof(prev_zero), &d, &used), RD_ECORRUPT);
    const uint8_t lsn_zero[] = {0, 0, 2, ENGINE_REC_PAGE_DELTA, 0, 0};
    cr_assert_eq(redo_rec_decode_abs(lsn_zero, sizeof(lsn_zero), &d, &used), RD_ECORRUPT);
    const uint8_t bad_type[] = {5, 1, 2, 9, 0, 0};
    cr_assert_eq(redo_rec_decode_abs(bad_type, sizeof(bad_type), &d, &used), RD_ECORRUPT);
    const uint8_t bad_flags[] = {5, 1, 2, ENGINE_REC_PAGE_DELTA, 0x80, 0};
    cr_assert_eq(redo_rec_decode_abs(bad_flags, sizeof(bad_flags), &d, &used), RD_ECORRUPT);
    const uint8_t page_too_big[] = {5, 1, 0x80, 0x80, 0x80, 0x80, 0x10, ENGINE_REC_PAGE_DELTA, 0, 0};
    cr_assert_eq(redo_rec_decode_abs(page_too_big, sizeof(page_too_big), &d, &used), RD_ECORRUPT);
    const uint8_t body_past_end[] = {5, 1, 2, ENGINE_REC_PAGE_DELTA, 0, 3, 0xaa, 0xbb};
    cr_assert_eq(redo_rec_decode_abs(body_past_end, sizeof(body_past_end), &d, &used), RD_ECORRUPT);
    const uint8_t body_too_big[] = {5, 1, 2, ENGINE_REC_PAGE_DELTA, 0, 0x81, 0x80, 0x01};
    cr_assert_eq(redo_rec_decode_abs(body_too_big, sizeof(body_too_big), &d, &used), RD_ECORRUPT);
    const uint8_t good[] = {5, 1, 2, ENGINE_REC_PAGE_DELTA, REDO_FLAG_CPL, 2, 0xaa, 0xbb, 0xcc};
    cr_assert_eq(redo_rec_decode_abs(good, sizeof(good), &d, &used), 0);
    cr_assert_eq(used, 8);
    cr_assert_eq(d.lsn, 5);
    cr_assert_eq(d.prev_pg_lsn, 4);
    cr_assert_eq(d.page_id, 1);
    cr_assert_eq(d.flags, REDO_FLAG_CPL);
    cr_assert_eq(d.body, good + 6);
}

/* ------------------------------------------------------------ batches */

Test(redo_batch, round_trips_random_batches)
{
    rng_seed("batch_round_trip");
    struct redo_batch b = {0};
    struct redo_rec recs[MAXREC], got[MAXREC];
    for (int it = 0; it < 600; it++) {
        uint64_t first = 1 + rng_below(it % 2 ? 1000 : UINT64_MAX - MAXREC - 1);
        size_t nrec = rng_below(MAXREC + 1);
        uint64_t vdl = rng_next();
        batch_format = (it / 2) % 2 ? REDO_FMT_V1 : REDO_FMT_COMPACT;
        build_batch(&b, first, nrec, recs, vdl); /* reuses b's buffer */
        struct redo_batch_hdr h;
        cr_assert_eq(redo_batch_parse_hdr(b.buf.data, b.buf.len, &h), 0);
        cr_assert_eq(h.first_lsn, first);
        cr_assert_eq(h.last_lsn, first + nrec - 1);
        cr_assert_eq(h.nrecords, nrec);
        cr_assert_eq(h.pg, 0);
        cr_assert_eq(h.format, batch_format);
        cr_assert_eq(h.vdl, vdl);
        cr_assert_eq(iterate(b.buf.data, b.buf.len, got, MAXREC), (int)nrec);
        for (size_t i = 0; i < nrec; i++)
            assert_rec_eq(&recs[i], &got[i]);
    }
    batch_format = REDO_FMT_COMPACT;
    redo_batch_free(&b);
}

Test(redo_batch, empty_batch_is_valid_and_yields_no_records)
{
    struct redo_batch b = {0};
    redo_batch_begin(&b, 42);
    redo_batch_finish(&b, 41);
    cr_assert_eq(b.buf.len, REDO_BATCH_HDR_SIZE);
    cr_assert_eq(iterate(b.buf.data, b.buf.len, NULL, 0), 0);
    redo_batch_free(&b);
}

Test(redo_batch, add_enforces_consecutive_lsns_and_leaves_batch_unchanged)
{
    struct redo_batch b = {0};
    uint8_t body[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct redo_rec r = {.lsn = 100, .page_id = 3, .type = ENGINE_REC_PAGE_DELTA, .body = body, .body_len = 8};
    redo_batch_begin(&b, 100);
    cr_assert_eq(redo_batch_add(&b, &r), 0);
    size_t len = b.buf.len;
    r.lsn = 102; /* a hole */
    cr_assert_eq(redo_batch_add(&b, &r), -EINVAL);
    r.lsn = 100; /* a repeat */
    cr_assert_eq(redo_batch_add(&b, &r), -EINVAL);
    r.lsn = 99; /* backwards */
    cr_assert_eq(redo_batch_add(&b, &r), -EINVAL);
    r.lsn = 101; r.body_len = REDO_MAX_BODY + 1;
    cr_assert_eq(redo_batch_add(&b, &r), RD_ETOOBIG);
    r.body_len = 8; r.prev_pg_lsn = 101;
    cr_assert_eq(redo_batch_add(&b, &r), -EINVAL);
    cr_assert_eq(b.buf.len, len);
    cr_assert_eq(b.hdr.nrecords, 1);
    r.prev_pg_lsn = 100;
    cr_assert_eq(redo_batch_add(&b, &r), 0);
    redo_batch_finish(&b, 0);
    cr_assert_eq(iterate(b.buf.data, b.buf.len, NULL, 0), 2);
    redo_batch_free(&b);
}

Test(redo_batch, parse_rejects_bad_headers_holes_and_trailing_bytes)
{
    rng_seed("bad_headers");
    struct redo_batch b = {0};
    struct redo_rec recs[MAXREC];
    batch_format = REDO_FMT_V1;
    build_batch(&b, 10, 5, recs, 3);
    batch_format = REDO_FMT_COMPACT;
    uint8_t *p = malloc(b.buf.len + 1);
    size_t n = b.buf.len;
    struct redo_batch_hdr h;
#define RESET() memcpy(p, b.buf.data, n)
    RESET(); rd_put_u64le(p, 0); /* first_lsn 0 */
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); rd_put_u64le(p + 8, 15); /* last_lsn disagrees with nrecords */
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); rd_put_u32le(p + 16, 4);
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); rd_put_u32le(p + 16, 0xFFFFFFFFu); rd_put_u64le(p + 8, 10ull + 0xFFFFFFFEull);
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT); /* more records than bytes */
    RESET(); rd_put_u32le(p + 20, 1); /* only protection group 0 exists */
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); p[REDO_BATCH_HDR_SIZE] = 2; /* first record's lsn_delta 2: a hole */
    cr_assert_eq(iterate(p, n, NULL, 0), RD_ECORRUPT);
    RESET(); p[n] = 0; /* one trailing byte */
    cr_assert_eq(iterate(p, n + 1, NULL, 0), RD_ECORRUPT);
    RESET();
    cr_assert_eq(iterate(p, n, NULL, 0), 5);
    /* A caller-supplied offset outside the payload is rejected, not followed. */
    size_t off = n + 1;
    uint64_t prev = 0;
    struct redo_rec r;
    cr_assert_eq(redo_batch_next(p, n, &off, &prev, &r), RD_ECORRUPT);
    off = 3;
    cr_assert_eq(redo_batch_next(p, n, &off, &prev, &r), RD_ECORRUPT);
#undef RESET
    free(p);
    redo_batch_free(&b);
}

static const uint8_t *txn8_or(const uint8_t *p)
{
    static uint8_t t[3];
    t[0] = p[0];
    t[1] = p[1] & 0x7f; /* the varint ends at byte 2: a 3-byte body holds more */
    t[2] = 0;
    return t;
}

Test(redo_batch, compact_format_is_versioned_canonical_and_smaller)
{
    struct redo_batch b = {0}, v1 = {0};
    uint8_t body[5] = {1, 2, 3, 4, 5}, txn[8] = {7};
    /* A transaction as the writer logs it: a leaf record, the meta page, the commit. */
    struct redo_rec rs[3] = {
        {.lsn = 1000, .prev_pg_lsn = 999, .page_id = 300, .type = ENGINE_REC_CELL_INSERT, .body = body, .body_len = 5},
        {.lsn = 1001, .prev_pg_lsn = 1000, .page_id = 0, .type = ENGINE_REC_PAGE_DELTA, .flags = REDO_FLAG_CPL,
         .body = body, .body_len = 5},
        {.lsn = 1002, .prev_pg_lsn = 1001, .page_id = ENGINE_PAGE_NONE, .type = REDO_REC_COMMIT,
         .flags = REDO_FLAG_CPL, .body = txn, .body_len = 8}};
    redo_batch_begin(&b, 1000);
    redo_batch_begin_format(&v1, 1000, REDO_FMT_V1);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(redo_batch_add(&b, &rs[i]), 0);
        cr_assert_eq(redo_batch_add(&v1, &rs[i]), 0);
    }
    redo_batch_finish(&b, 5);
    redo_batch_finish(&v1, 5);
    /* tag + 2-byte page + len + 5 | tag + page + len + 5 | tag + 8 */
    cr_assert_eq(b.buf.len, REDO_BATCH_HDR_SIZE + (1 + 2 + 1 + 5) + (1 + 1 + 1 + 5) + (1 + 8));
    cr_assert_eq(v1.buf.len, REDO_BATCH_HDR_SIZE + (6 + 1 + 5) + (6 + 5) + (6 + 8));
    /* A reader of the first form only (pg = u32 at 20 must be 0) refuses the compact form. */
    cr_assert_neq(rd_get_u32le(b.buf.data + 20), 0);
    cr_assert_eq(rd_get_u32le(v1.buf.data + 20), 0);
    struct redo_rec got[3];
    cr_assert_eq(iterate(b.buf.data, b.buf.len, got, 3), 3);
    for (int i = 0; i < 3; i++)
        assert_rec_eq(&rs[i], &got[i]);
    uint8_t *p = malloc(b.buf.len);
    size_t n = b.buf.len, first = REDO_BATCH_HDR_SIZE;
    struct redo_batch_hdr h;
#define RESET() memcpy(p, b.buf.data, n)
    RESET(); p[22] = 2; /* unknown format */
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); p[23] = 1; /* reserved */
    cr_assert_eq(redo_batch_parse_hdr(p, n, &h), RD_ECORRUPT);
    RESET(); p[first] |= 0x80; /* reserved tag bit */
    cr_assert_eq(iterate(p, n, NULL, 0), RD_ECORRUPT);
    RESET(); p[first] = (uint8_t)(p[first] & ~0x1fu) | 9; /* unknown type */
    cr_assert_eq(iterate(p, n, NULL, 0), RD_ECORRUPT);
    RESET(); memcpy(p + first + 1, "\xff\xff\xff\xff\x0f", 5); /* page id 0xFFFFFFFF (none) */
    cr_assert_eq(iterate(p, n, NULL, 0), RD_ECORRUPT);
    free(p);
    /* Non-canonical: a back-link delta of 1 written as a varint (the tag bit says it). */
    const uint8_t hdr_then[] = {ENGINE_REC_PAGE_DELTA, 1, 3, 0};
    uint8_t q[REDO_BATCH_HDR_SIZE + sizeof(hdr_then)];
    memcpy(q, b.buf.data, REDO_BATCH_HDR_SIZE);
    rd_put_u64le(q + 8, 1000);
    rd_put_u32le(q + 16, 1);
    memcpy(q + REDO_BATCH_HDR_SIZE, hdr_then, sizeof(hdr_then));
    cr_assert_eq(iterate(q, sizeof(q), NULL, 0), RD_ECORRUPT);
    q[REDO_BATCH_HDR_SIZE + 1] = 0; /* no back-link: fine */
    cr_assert_eq(iterate(q, sizeof(q), NULL, 0), 1);
    /* The back-link bit at LSN 1 would name LSN 0 ("none"). */
    rd_put_u64le(q, 1);
    rd_put_u64le(q + 8, 1);
    q[REDO_BATCH_HDR_SIZE] = ENGINE_REC_PAGE_DELTA | 0x40;
    const uint8_t rest[] = {3, 0, 0};
    memcpy(q + REDO_BATCH_HDR_SIZE + 1, rest, 3);
    cr_assert_eq(iterate(q, REDO_BATCH_HDR_SIZE + 3, NULL, 0), RD_ECORRUPT);
    /* The writer's commit body is a varint (2 bytes for txn 300): 3 bytes in a compact batch. */
    uint8_t vb[REDO_COMMIT_BODY_MAX];
    struct redo_rec c = {.lsn = 7, .prev_pg_lsn = 6, .page_id = ENGINE_PAGE_NONE, .type = REDO_REC_COMMIT,
                         .flags = REDO_FLAG_CPL, .body = vb, .body_len = (uint32_t)redo_commit_body(vb, 300)};
    cr_assert_eq(c.body_len, 2);
    uint64_t id = 0;
    cr_assert_eq(redo_commit_txn(vb, 2, &id), 0);
    cr_assert_eq(id, 300);
    cr_assert_eq(redo_commit_txn(txn8_or(vb), 3, &id), RD_ECORRUPT); /* not one varint of 3 bytes */
    redo_batch_begin(&b, 7);
    cr_assert_eq(redo_batch_add(&b, &c), 0);
    redo_batch_finish(&b, 0);
    cr_assert_eq(b.buf.len, REDO_BATCH_HDR_SIZE + 3);
    cr_assert_eq(iterate(b.buf.data, b.buf.len, got, 1), 1);
    assert_rec_eq(&c, &got[0]);
    cr_assert_eq(redo_commit_body(vb, 1ull << 49), 8); /* large ids: u64, tag bit 7 */
    /* A commit varint of 8 bytes (txn >= 2^49 must be a u64 body) is refused. */
    uint8_t big[REDO_BATCH_HDR_SIZE + 9];
    memcpy(big, b.buf.data, REDO_BATCH_HDR_SIZE);
    big[REDO_BATCH_HDR_SIZE] = REDO_REC_COMMIT;
    memcpy(big + REDO_BATCH_HDR_SIZE + 1, "\x80\x80\x80\x80\x80\x80\x80\x01", 8);
    cr_assert_eq(iterate(big, sizeof(big), NULL, 0), RD_ECORRUPT);
#undef RESET
    redo_batch_free(&b);
    redo_batch_free(&v1);
}

Test(redo_batch, every_truncation_is_rejected)
{
    rng_seed("truncation");
    struct redo_batch b = {0};
    struct redo_rec recs[MAXREC];
    for (int it = 0; it < 40; it++) {
        batch_format = it % 2 ? REDO_FMT_V1 : REDO_FMT_COMPACT;
        build_batch(&b, 1 + rng_below(1000), 1 + rng_below(12), recs, 0);
        for (size_t cut = 0; cut < b.buf.len; cut++) {
            uint8_t *p = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
            memcpy(p, b.buf.data, cut);
            cr_assert_eq(iterate(p, cut, NULL, 0), RD_ECORRUPT, "cut %zu of %zu", cut, b.buf.len);
            free(p);
        }
    }
    batch_format = REDO_FMT_COMPACT;
    redo_batch_free(&b);
}

Test(redo_batch, bit_flips_never_crash_and_decoded_records_stay_in_bounds)
{
    rng_seed("bit_flips");
    struct redo_batch b = {0};
    struct redo_rec recs[MAXREC];
    for (int it = 0; it < 20; it++) {
        batch_format = it % 2 ? REDO_FMT_V1 : REDO_FMT_COMPACT;
        build_batch(&b, 1 + rng_below(1u << 20), 1 + rng_below(6), recs, rng_below(100));
        size_t n = RD_MIN(b.buf.len, (size_t)600); /* flip within the headers, mostly */
        uint8_t *p = malloc(b.buf.len);
        for (size_t bit = 0; bit < n * 8; bit++) {
            memcpy(p, b.buf.data, b.buf.len);
            p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int rc = iterate(p, b.buf.len, NULL, 0); /* asserts bounds itself */
            cr_assert(rc == RD_ECORRUPT || rc >= 0);
            struct redo_rec r;
            size_t used;
            if (redo_rec_decode_abs(p + REDO_BATCH_HDR_SIZE, b.buf.len - REDO_BATCH_HDR_SIZE, &r, &used) == 0)
                cr_assert(used <= b.buf.len - REDO_BATCH_HDR_SIZE);
        }
        free(p);
    }
    batch_format = REDO_FMT_COMPACT;
    redo_batch_free(&b);
}

/* ------------------------------------------------------------ quorum */

struct model {
    uint64_t scl[REDO_NODES];
    uint64_t *cpls; /* every CPL ever registered, ascending */
    size_t ncpl;
    uint64_t vdl_prev;
};

static uint64_t model_vcl(const struct model *m)
{
    uint64_t best = 0; /* the largest v with >= 4 nodes at or above it: try each SCL */
    for (size_t i = 0; i < REDO_NODES; i++) {
        unsigned c = 0;
        for (size_t j = 0; j < REDO_NODES; j++)
            c += m->scl[j] >= m->scl[i];
        if (c >= REDO_WRITE_QUORUM && m->scl[i] > best)
            best = m->scl[i];
    }
    return best;
}

static uint64_t model_vdl(const struct model *m, uint64_t vcl)
{
    uint64_t v = 0;
    for (size_t i = 0; i < m->ncpl; i++)
        if (m->cpls[i] <= vcl)
            v = m->cpls[i];
    return v;
}

static size_t model_pending(const struct model *m, uint64_t vdl)
{
    size_t k = 0;
    for (size_t i = 0; i < m->ncpl; i++)
        k += m->cpls[i] > vdl;
    return k;
}

Test(redo_quorum, matches_brute_force_model_under_random_ack_orders)
{
    rng_seed("quorum_model");
    const size_t steps = 200000, cap = 16;
    struct redo_quorum q;
    cr_assert_eq(redo_quorum_init(&q, cap), 0);
    struct model m = {0};
    m.cpls = calloc(steps + 1, sizeof(uint64_t));
    uint64_t frontier = 0, last_cpl = 0, prev_vdl = 0;
    size_t fulls = 0, advances = 0;
    for (size_t s = 0; s < steps; s++) {
        frontier += rng_below(4); /* the writer keeps sending */
        if (rng_below(3) == 0 && last_cpl < frontier) {
            uint64_t c = last_cpl + 1 + rng_below(frontier - last_cpl);
            uint64_t vcl = model_vcl(&m), vdl = model_vdl(&m, vcl);
            int rc = redo_quorum_add_cpl(&q, c);
            if (c <= vcl) {
                cr_assert_eq(rc, 1, "late CPL %llu under VCL %llu", (unsigned long long)c,
                             (unsigned long long)vcl);
            } else if (model_pending(&m, vdl) == cap) {
                cr_assert_eq(rc, RD_EFULL);
                fulls++;
                c = 0;
            } else {
                cr_assert_eq(rc, 0);
            }
            if (c != 0) {
                m.cpls[m.ncpl++] = c;
                last_cpl = c;
            }
            cr_assert_eq(redo_quorum_add_cpl(&q, last_cpl), -EINVAL); /* not ascending */
            cr_assert_eq(q.vdl, model_vdl(&m, vcl));
            cr_assert(q.vdl >= prev_vdl);
            prev_vdl = q.vdl;
        }
        /* Some phases ack only three nodes: no quorum, so CPLs pile up (back-pressure). */
        int stalled = (s / 2000) % 4 == 3;
        unsigned node = (unsigned)rng_below(stalled ? REDO_WRITE_QUORUM - 1 : REDO_NODES);
        /* Mostly advances; sometimes a stale (lower) ack, which is ignored. */
        uint64_t scl = m.scl[node] + rng_below(frontier - m.scl[node] + 1);
        if (rng_below(8) == 0)
            scl = rng_below(m.scl[node] + 1);
        int adv = redo_quorum_ack(&q, node, scl);
        if (scl > m.scl[node])
            m.scl[node] = scl;
        uint64_t vcl = model_vcl(&m), vdl = model_vdl(&m, vcl);
        cr_assert_eq(q.vcl, vcl, "step %zu", s);
        cr_assert_eq(q.vdl, vdl, "step %zu", s);
        cr_assert_eq(adv, vdl != prev_vdl);
        cr_assert(q.vdl <= q.vcl);
        cr_assert(q.vdl >= prev_vdl, "VDL went backwards at step %zu", s);
        for (size_t i = 0; i < REDO_NODES; i++)
            cr_assert_eq(q.scl[i], m.scl[i]);
        advances += adv;
        prev_vdl = vdl;
    }
    fprintf(stderr, "quorum model: %zu steps, VCL %llu, VDL %llu, %zu VDL advances, %zu RD_EFULL\n",
            steps, (unsigned long long)q.vcl, (unsigned long long)q.vdl, advances, fulls);
    cr_assert(advances > 100 && fulls > 0, "the run should exercise advances and back-pressure");
    free(m.cpls);
    redo_quorum_free(&q);
}

Test(redo_quorum, needs_four_of_six_and_ignores_lower_acks)
{
    struct redo_quorum q;
    cr_assert_eq(redo_quorum_init(&q, 4), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 5), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 9), 0);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(redo_quorum_ack(&q, i, 10), 0);
    cr_assert_eq(q.vcl, 0); /* three nodes are not a write quorum */
    cr_assert_eq(redo_quorum_ack(&q, 3, 7), 1); /* 4th largest is 7: CPL 5 */
    cr_assert_eq(q.vcl, 7);
    cr_assert_eq(q.vdl, 5);
    cr_assert_eq(redo_quorum_ack(&q, 3, 6), 0); /* a lower ack is ignored */
    cr_assert_eq(q.scl[3], 7);
    cr_assert_eq(redo_quorum_ack(&q, 4, 9), 1); /* SCLs 10,10,10,9,7,0: VCL 9, VDL 9 */
    cr_assert_eq(q.vcl, 9);
    cr_assert_eq(q.vdl, 9);
    cr_assert_eq(q.cpl_n, 0);
    redo_quorum_free(&q);
}

Test(redo_quorum, ring_full_is_back_pressure_until_vdl_passes)
{
    struct redo_quorum q;
    cr_assert_eq(redo_quorum_init(&q, 2), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 3), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 6), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 8), RD_EFULL);
    for (unsigned i = 0; i < REDO_WRITE_QUORUM; i++)
        redo_quorum_ack(&q, i, 4);
    cr_assert_eq(q.vdl, 3);
    cr_assert_eq(redo_quorum_add_cpl(&q, 8), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 9), RD_EFULL);
    redo_quorum_free(&q);
}

Test(redo_quorum, reset_node_lowers_its_scl_but_never_vcl_or_vdl)
{
    struct redo_quorum q;
    cr_assert_eq(redo_quorum_init(&q, 8), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 10), 0);
    cr_assert_eq(redo_quorum_add_cpl(&q, 20), 0);
    for (unsigned i = 0; i < REDO_NODES; i++)
        redo_quorum_ack(&q, i, i < 4 ? 15 : 0);
    cr_assert_eq(q.vcl, 15);
    cr_assert_eq(q.vdl, 10);
    redo_quorum_reset_node(&q, 0, 0); /* node 0 replaced by an empty segment */
    cr_assert_eq(q.scl[0], 0);
    cr_assert_eq(q.vcl, 15);
    cr_assert_eq(q.vdl, 10);
    /* Only three nodes hold 15+ now: 25 on nodes 1..3 is not enough ... */
    for (unsigned i = 1; i < 4; i++)
        cr_assert_eq(redo_quorum_ack(&q, i, 25), 0);
    cr_assert_eq(q.vcl, 15);
    /* ... until the reset node catches up (a lower-than-before ack now counts). */
    cr_assert_eq(redo_quorum_ack(&q, 0, 12), 0);
    cr_assert_eq(redo_quorum_ack(&q, 0, 22), 1);
    cr_assert_eq(q.vcl, 22);
    cr_assert_eq(q.vdl, 20);
    redo_quorum_free(&q);
}

/* ------------------------------------------------------------ recovery */

Test(redo_recovery, three_answers_give_max_scl_and_its_cpl)
{
    struct redo_node_state st[3] = {{.scl = 40, .max_cpl = 38}, {.scl = 55, .max_cpl = 50}, {.scl = 12, .max_cpl = 12}};
    uint64_t vcl = 0, vdl = 0;
    cr_assert_eq(redo_recovery_point(st, 3, &vcl, &vdl), 0);
    cr_assert_eq(vcl, 55);
    cr_assert_eq(vdl, 50);
}

Test(redo_recovery, six_answers_use_every_node)
{
    struct redo_node_state st[6] = {{9, 7}, {30, 25}, {31, 25}, {29, 25}, {0, 0}, {33, 33}};
    uint64_t vcl = 0, vdl = 0;
    cr_assert_eq(redo_recovery_point(st, 6, &vcl, &vdl), 0);
    cr_assert_eq(vcl, 33);
    cr_assert_eq(vdl, 33);
}

Test(redo_recovery, fewer_than_three_answers_is_no_quorum)
{
    struct redo_node_state st[2] = {{100, 90}, {100, 90}};
    uint64_t vcl = 7, vdl = 7;
    cr_assert_eq(redo_recovery_point(st, 2, &vcl, &vdl), RD_EQUORUM);
    cr_assert_eq(redo_recovery_point(st, 0, &vcl, &vdl), RD_EQUORUM);
    cr_assert_eq(vcl, 7); /* outputs untouched on error */
    cr_assert_eq(vdl, 7);
}

Test(redo_recovery, rejects_an_answer_with_cpl_above_its_scl)
{
    struct redo_node_state st[3] = {{10, 11}, {20, 20}, {5, 5}};
    uint64_t vcl, vdl;
    cr_assert_eq(redo_recovery_point(st, 3, &vcl, &vdl), RD_ECORRUPT);
}

Test(redo_recovery, any_read_quorum_sees_every_write_quorum_record)
{
    /* Exhaustive over which 4 nodes acknowledged LSN L and which 3 answer:
     * the recovery VCL always covers L (4 + 3 > 6). */
    const uint64_t L = 100;
    for (unsigned wq = 0; wq < 64; wq++) {
        if (__builtin_popcount(wq) != 4)
            continue;
        for (unsigned rq = 0; rq < 64; rq++) {
            if (__builtin_popcount(rq) != 3)
                continue;
            struct redo_node_state st[3];
            size_t k = 0;
            for (unsigned i = 0; i < 6; i++)
                if (rq & (1u << i)) {
                    st[k].scl = (wq & (1u << i)) ? L : L / 2;
                    st[k].max_cpl = st[k].scl;
                    k++;
                }
            uint64_t vcl, vdl;
            cr_assert_eq(redo_recovery_point(st, 3, &vcl, &vdl), 0);
            cr_assert(vcl >= L && vdl >= L);
        }
    }
}
