/* Unit tests for the storage node's pure parts: the hot-log record format
 * (round trip, checksum, torn tail vs corruption) and the record store (SCL
 * with out-of-order arrival, truncation, page materialisation at an LSN). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/util.h"
#include "engine/engine.h"
#include "redo/redo.h"
#include "storage-node/sn_int.h"

/* A PAGE_IMAGE body whose bytes [16, 64) are all `fill`; lower 64, upper 8192. */
static size_t image_body(uint8_t *b, uint8_t fill)
{
    rd_put_u16le(b, 64);
    rd_put_u16le(b + 2, ENGINE_PAGE_SIZE);
    memset(b + 4, fill, 48);
    return 52;
}

static struct redo_rec rec(uint64_t lsn, uint32_t page, const uint8_t *body, size_t len)
{
    return (struct redo_rec){.lsn = lsn, .prev_pg_lsn = lsn - 1, .page_id = page,
                             .type = ENGINE_REC_PAGE_IMAGE, .flags = 0, .body = body, .body_len = (uint32_t)len};
}

static int count_cb(void *arg, uint64_t off, uint32_t len, uint64_t epoch, const struct redo_rec *r)
{
    (void)off; (void)len; (void)r;
    cr_assert_eq(epoch, 3);
    (*(int *)arg)++;
    return 0;
}

/* A hot-log image: file header + n records with lsn 1..n. */
static void build_log(struct rd_buf *f, int n)
{
    uint8_t h[SN_HOTLOG_FILE_HDR_SIZE], body[64];
    sn_hotlog_file_hdr(h, 2);
    rd_buf_append(f, h, sizeof(h));
    for (int i = 1; i <= n; i++) {
        size_t bl = image_body(body, (uint8_t)i);
        struct redo_rec r = rec((uint64_t)i, 1, body, bl);
        cr_assert_gt(sn_hotlog_rec_append(f, 3, &r), 0);
    }
}

Test(sn_hotlog, record_round_trips)
{
    struct rd_buf f = {0};
    build_log(&f, 1);
    uint32_t id = 0;
    cr_assert_eq(sn_hotlog_check_file_hdr(f.data, f.len, &id), 0);
    cr_assert_eq(id, 2);
    struct redo_rec r;
    uint64_t epoch;
    size_t used;
    cr_assert_eq(sn_hotlog_rec_decode(f.data + 32, f.len - 32, &epoch, &r, &used), 1);
    cr_assert(r.lsn == 1 && r.page_id == 1 && r.body_len == 52 && epoch == 3 && used == f.len - 32);
    cr_assert_eq(sn_hotlog_rec_decode(f.data + 32, f.len - 33, &epoch, &r, &used), 0); /* partial */
    rd_buf_free(&f);
}

Test(sn_hotlog, rejects_record_with_bad_checksum)
{
    struct rd_buf f = {0};
    build_log(&f, 1);
    struct redo_rec r;
    uint64_t epoch;
    size_t used;
    for (size_t i = 32; i < f.len; i++) {
        f.data[i] ^= 0x10;
        int rc = sn_hotlog_rec_decode(f.data + 32, f.len - 32, &epoch, &r, &used);
        cr_assert_neq(rc, 1, "a flipped bit at %zu was accepted", i);
        f.data[i] ^= 0x10;
    }
    rd_buf_free(&f);
}

Test(sn_hotlog, torn_tail_is_cut_and_middle_corruption_reported)
{
    struct rd_buf f = {0};
    build_log(&f, 10);
    size_t full = f.len, one = (full - 32) / 10;
    int n = 0;
    struct sn_scan_result res;
    cr_assert_eq(sn_hotlog_scan(f.data, full, count_cb, &n, &res), 0);
    cr_assert(n == 10 && res.valid_end == full && !res.torn && !res.corrupt);
    for (size_t cut = full - one + 1; cut < full; cut += 7) { /* last record partial */
        n = 0;
        sn_hotlog_scan(f.data, cut, count_cb, &n, &res);
        cr_assert(n == 9 && res.torn && !res.corrupt && res.valid_end == full - one);
    }
    f.data[full - 3] ^= 1; /* last record garbled: a torn tail too */
    n = 0;
    sn_hotlog_scan(f.data, full, count_cb, &n, &res);
    cr_assert(n == 9 && res.torn && !res.corrupt);
    f.data[full - 3] ^= 1;
    f.data[32 + 4 * one + 30] ^= 1; /* record 5 of 10: corruption */
    n = 0;
    sn_hotlog_scan(f.data, full, count_cb, &n, &res);
    cr_assert(n == 4 && res.corrupt && !res.torn && res.valid_end == 32 + 4 * one);
    rd_buf_free(&f);
}

Test(sn_store, scl_never_passes_a_gap_with_out_of_order_arrival)
{
    struct sn_store st;
    sn_store_init(&st);
    uint8_t body[64];
    size_t bl = image_body(body, 1);
    uint64_t order[] = {3, 1, 5, 4, 2, 7};
    uint64_t want_scl[] = {0, 1, 1, 1, 5, 5};
    for (size_t i = 0; i < RD_ARRAY_LEN(order); i++) {
        struct redo_rec r = rec(order[i], 0, body, bl);
        cr_assert_null(sn_store_get(&st, order[i]));
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 1), 0);
        sn_store_advance(&st);
        cr_assert_eq(st.scl, want_scl[i], "after %llu: scl %llu", (unsigned long long)order[i],
                     (unsigned long long)st.scl);
    }
    cr_assert_eq(st.durable_max, 7);
    /* Not yet durable records do not count. */
    struct redo_rec r6 = rec(6, 0, body, bl);
    sn_store_add(&st, &r6, 1, 0, 0, 0);
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 5);
    sn_store_get(&st, 6)->durable = 1;
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 7);
    sn_store_truncate(&st, 4);
    cr_assert(st.scl == 4 && st.durable_max == 4 && st.nrecs == 4 && sn_store_get(&st, 5) == NULL);
    sn_store_free(&st);
}

Test(sn_store, materialises_a_page_at_any_lsn_above_the_coalesced_point)
{
    struct sn_store st;
    sn_store_init(&st);
    static uint8_t bodies[10][64];
    for (uint64_t lsn = 1; lsn <= 10; lsn++) {
        size_t bl = image_body(bodies[lsn - 1], (uint8_t)(0xA0 + lsn));
        struct redo_rec r = rec(lsn, (uint32_t)(lsn % 2), bodies[lsn - 1], bl); /* pages 0, 1 alternate */
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 1), 0);
    }
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 10);
    uint8_t *page = calloc(1, ENGINE_PAGE_SIZE);
    for (uint64_t at = 0; at <= 10; at++) {
        memset(page, 0, ENGINE_PAGE_SIZE);
        cr_assert_eq(sn_store_materialise(&st, 1, at, page), 0);
        uint64_t want = at == 0 ? 0 : (at % 2 ? at : at - 1); /* newest odd lsn <= at */
        cr_assert_eq(engine_page_lsn(page), want);
        if (want)
            cr_assert_eq(page[20], 0xA0 + want);
    }
    /* After coalescing to 6: records <= 6 leave the history; a base newer than read_lsn is TOO_OLD. */
    sn_store_gc(&st, 6);
    cr_assert_eq(st.coalesced_lsn, 6);
    memset(page, 0, ENGINE_PAGE_SIZE);
    cr_assert_eq(engine_page_apply(page, ENGINE_REC_PAGE_IMAGE, bodies[4], 52, 5), 0); /* base: page 1 at 5 */
    cr_assert_eq(sn_store_materialise(&st, 1, 8, page), 0);
    cr_assert_eq(engine_page_lsn(page), 7);
    cr_assert_eq(sn_store_materialise(&st, 1, 6, page), RD_ESTALE);
    free(page);
    sn_store_free(&st);
}

Test(sn_hotlog, segment_header_and_names)
{
    uint8_t h[SN_HOTLOG_FILE_HDR_SIZE];
    uint32_t id = 0;
    sn_hotlog_file_hdr(h, 4); /* older versions: segment 0 */
    cr_assert_eq(sn_hotlog_check_file_hdr(h, sizeof(h), &id), 0);
    cr_assert_eq(sn_hotlog_hdr_seg(h), 0);
    sn_hotlog_file_hdr_seg(h, 4, 12345);
    cr_assert_eq(sn_hotlog_check_file_hdr(h, sizeof(h), &id), 0);
    cr_assert_eq(id, 4);
    cr_assert_eq(sn_hotlog_hdr_seg(h), 12345);
    h[13] ^= 1; /* the segment number is covered by the header checksum */
    cr_assert_eq(sn_hotlog_check_file_hdr(h, sizeof(h), &id), RD_ECORRUPT);
    uint64_t no = 99;
    cr_assert(sn_hotlog_seg_name("hotlog.0", &no) && no == 0);
    cr_assert(sn_hotlog_seg_name("hotlog.17", &no) && no == 17);
    cr_assert(!sn_hotlog_seg_name("hotlog", &no));
    cr_assert(!sn_hotlog_seg_name("hotlog.new", &no));
    cr_assert(!sn_hotlog_seg_name("hotlog.01", &no));
    cr_assert(!sn_hotlog_seg_name("hotlog.", &no));
    cr_assert(!sn_hotlog_seg_name("hotlog.3x", &no));
    cr_assert(!sn_hotlog_seg_name("hotlog.99999999999999999999999", &no));
    cr_assert(SN_HL_VOFF(3, 100) > SN_HL_VOFF(2, 1ull << 39));
    cr_assert_eq(SN_HL_VSEG(SN_HL_VOFF(3, 100)), 3);
    cr_assert_eq(SN_HL_FOFF(SN_HL_VOFF(3, 100)), 100);
}

Test(sn_files, meta_keeps_the_coalesced_cpl)
{
    struct sn_meta m, d;
    memset(&m, 0, sizeof(m));
    m.node_id = 1;
    m.epoch = 3;
    m.coalesced_lsn = 500;
    m.coalesced_cpl = 490;
    uint8_t img[SN_META_SIZE];
    sn_meta_encode(img, &m);
    cr_assert_eq(sn_meta_decode(img, sizeof(img), &d), 0);
    cr_assert_eq(d.coalesced_lsn, 500);
    cr_assert_eq(d.coalesced_cpl, 490);
}

/* Trimming drops the records of deleted segments (by hot-log offset) and a
 * restart over a trimmed log starts its SCL at the coalesced point. */
Test(sn_store, trim_drops_old_segments_and_recovery_floors_the_scl)
{
    struct sn_store st;
    sn_store_init(&st);
    uint8_t body[64];
    size_t bl = image_body(body, 7);
    for (uint64_t lsn = 1; lsn <= 30; lsn++) {
        struct redo_rec r = rec(lsn, (uint32_t)(lsn % 3), body, bl);
        if (lsn % 10 == 0) {
            r.page_id = ENGINE_PAGE_NONE;
            r.type = REDO_REC_COMMIT;
            r.flags = REDO_FLAG_CPL;
        }
        cr_assert_eq(sn_store_add(&st, &r, 1, SN_HL_VOFF((lsn - 1) / 10, 32 + lsn), 10, 1), 0);
    }
    cr_assert_eq(sn_store_advance(&st), 30);
    sn_store_gc(&st, 20);
    cr_assert_eq(sn_store_trim(&st, SN_HL_VOFF(1, 0), 10), 10); /* segment 0: lsns 1..10 */
    cr_assert_eq(st.nrecs, 20);
    cr_assert_null(sn_store_get(&st, 10));
    cr_assert_not_null(sn_store_get(&st, 11));
    cr_assert_eq(st.trimmed_lsn, 10);
    cr_assert_eq(st.scl, 30);
    sn_store_free(&st);

    /* Recovery: segment 0 is gone, meta says coalesced 20 with CPL 20. */
    sn_store_init(&st);
    st.coalesced_lsn = 20;
    for (uint64_t lsn = 11; lsn <= 30; lsn++) {
        if (lsn == 25)
            continue; /* a gap above the coalesced point stays a gap */
        struct redo_rec r = rec(lsn, (uint32_t)(lsn % 3), body, bl);
        cr_assert_eq(sn_store_add(&st, &r, 1, SN_HL_VOFF((lsn - 1) / 10, 32 + lsn), 10, 1), 0);
    }
    sn_store_trimmed_floor(&st, 20, 20);
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 24);
    cr_assert_eq(st.max_cpl, 20);
    cr_assert_eq(st.trimmed_lsn, 20);
    sn_store_free(&st);
}

Test(sn_store, rebase_after_a_page_copy_drops_records_below_and_floors_the_scl)
{
    struct sn_store st;
    sn_store_init(&st);
    uint8_t body[64];
    size_t bl = image_body(body, 9);
    /* Held: 1..10 (scl 10) and 41..50 above a gap; nothing coalesced. */
    for (uint64_t lsn = 1; lsn <= 50; lsn++) {
        if (lsn > 10 && lsn <= 40)
            continue;
        struct redo_rec r = rec(lsn, (uint32_t)(lsn % 4), body, bl);
        if (lsn % 10 == 0) {
            r.page_id = ENGINE_PAGE_NONE;
            r.type = REDO_REC_COMMIT;
            r.flags = REDO_FLAG_CPL;
        }
        cr_assert_eq(sn_store_add(&st, &r, 1, SN_HL_VOFF(0, 32 + lsn * 100), 100, 1), 0);
    }
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 10);
    cr_assert_eq(st.hot_records, 20);
    /* A peer's page store holds every lsn <= 44 (its newest CPL 40). */
    cr_assert_eq(sn_store_rebase(&st, 44, 40), 14);
    cr_assert_eq(st.coalesced_lsn, 44);
    cr_assert_eq(st.trimmed_lsn, 44);
    cr_assert_eq(st.scl, 44);
    cr_assert_eq(st.max_cpl, 40);
    cr_assert_eq(st.hot_records, 6);
    cr_assert_null(sn_store_get(&st, 5));
    cr_assert_null(sn_store_get(&st, 44));
    cr_assert_not_null(sn_store_get(&st, 45));
    for (size_t i = 0; i < st.npages; i++) /* ST3: no history at or below the new coalesced point */
        cr_assert_eq(st.pages[i].n, 0);
    cr_assert_eq(sn_store_advance(&st), 6);
    cr_assert_eq(st.scl, 50);
    cr_assert_eq(st.max_cpl, 50);
    struct sn_page_hist *h = sn_store_page(&st, 45 % 4);
    cr_assert(h != NULL && h->n == 2 && h->lsn[0] == 45 && h->lsn[1] == 49);
    sn_store_free(&st);
}

Test(sn_store, lsn_index_finds_records_near_far_below_and_after_a_truncate)
{
    struct sn_store st;
    sn_store_init(&st);
    uint8_t body[64];
    size_t bl = image_body(body, 1);
    /* 5000..5999 (the array grows), 10 (it moves down), 2^40 (too far: the hash table), then
     * 6000..9999 (growing over the far one would not reach it) */
    uint64_t far = 1ull << 40;
    for (uint64_t l = 5000; l < 6000; l++) {
        struct redo_rec r = rec(l, 0, body, bl);
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 1), 0);
    }
    struct redo_rec r10 = rec(10, 0, body, bl), rf = rec(far, 0, body, bl);
    cr_assert_eq(sn_store_add(&st, &r10, 1, 0, 0, 1), 0);
    cr_assert_eq(sn_store_add(&st, &rf, 1, 0, 0, 1), 0);
    for (uint64_t l = 6000; l < 10000; l++) {
        struct redo_rec r = rec(l, 0, body, bl);
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 1), 0);
    }
    for (uint64_t l = 1; l < 12000; l++) {
        struct sn_rec *x = sn_store_get(&st, l);
        int held = l == 10 || (l >= 5000 && l < 10000);
        cr_assert_eq(x != NULL, held, "lsn %llu", (unsigned long long)l);
        cr_assert(x == NULL || x->lsn == l);
        cr_assert(x == NULL || sn_store_at(&st, (uint32_t)(x - st.recs), l) == x);
        cr_assert(x == NULL || sn_store_at(&st, 0, l) == x); /* a wrong hint falls back to the index */
    }
    cr_assert(sn_store_get(&st, far) != NULL && sn_store_get(&st, far)->lsn == far);
    cr_assert_null(sn_store_get(&st, far + 1));
    cr_assert_null(sn_store_get(&st, 0));
    sn_store_truncate(&st, 7000); /* drops 7001.. and the far one; the index is rebuilt */
    cr_assert_null(sn_store_get(&st, far));
    cr_assert_null(sn_store_get(&st, 7001));
    cr_assert(sn_store_get(&st, 7000) != NULL && sn_store_get(&st, 10) != NULL && sn_store_get(&st, 5000) != NULL);
    struct redo_rec r7001 = rec(7001, 0, body, bl);
    cr_assert_eq(sn_store_add(&st, &r7001, 1, 0, 0, 1), 0);
    cr_assert(sn_store_get(&st, 7001) == &st.recs[st.nrecs - 1]);
    sn_store_free(&st);
}

/* N19: the SCL a flush reaches is foretold when it starts (every held record
 * not durable yet is in it), and sn_store_advance reaches exactly that. */
Test(sn_store, scl_if_held_durable_foretells_the_flush)
{
    struct sn_store st;
    sn_store_init(&st);
    uint8_t body[64];
    size_t bl = image_body(body, 2);
    uint64_t durable[] = {1, 2, 3};
    for (size_t i = 0; i < RD_ARRAY_LEN(durable); i++) {
        struct redo_rec r = rec(durable[i], 0, body, bl);
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 1), 0);
    }
    sn_store_advance(&st);
    cr_assert_eq(st.scl, 3);
    cr_assert_eq(sn_store_scl_if_held_durable(&st), 3);
    uint64_t flight[] = {5, 4, 6, 8}; /* 7 missing: the flush reaches 6 */
    for (size_t i = 0; i < RD_ARRAY_LEN(flight); i++) {
        struct redo_rec r = rec(flight[i], 0, body, bl);
        cr_assert_eq(sn_store_add(&st, &r, 1, 0, 0, 0), 0);
    }
    uint64_t want = sn_store_scl_if_held_durable(&st);
    cr_assert_eq(want, 6);
    cr_assert_eq(st.scl, 3, "nothing changed");
    for (size_t i = 0; i < RD_ARRAY_LEN(flight); i++)
        sn_store_get(&st, flight[i])->durable = 1;
    sn_store_advance(&st);
    cr_assert_eq(st.scl, want);
    sn_store_free(&st);
}

/* N18: the page cache holds one image per slot, misses after an eviction or a drop. */
Test(sn_pcache, direct_mapped_put_get_evict_drop)
{
    struct sn_pcache c;
    cr_assert_eq(sn_pcache_init(&c, 4), 0);
    static uint8_t a[ENGINE_PAGE_SIZE], b[ENGINE_PAGE_SIZE], out[ENGINE_PAGE_SIZE];
    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    cr_assert_eq(sn_pcache_get(&c, 1, out), 0);
    sn_pcache_put(&c, 1, a);
    cr_assert_eq(sn_pcache_get(&c, 1, out), 1);
    cr_assert(memcmp(out, a, sizeof(a)) == 0);
    sn_pcache_put(&c, 5, b); /* same slot as 1: evicts it */
    cr_assert_eq(sn_pcache_get(&c, 1, out), 0);
    cr_assert(sn_pcache_get(&c, 5, out) == 1 && memcmp(out, b, sizeof(b)) == 0);
    sn_pcache_drop(&c, 1); /* not there: nothing happens */
    cr_assert_eq(sn_pcache_get(&c, 5, out), 1);
    sn_pcache_drop(&c, 5);
    cr_assert_eq(sn_pcache_get(&c, 5, out), 0);
    cr_assert(c.hits == 3 && c.misses == 3);
    sn_pcache_free(&c);
    struct sn_pcache off;
    cr_assert_eq(sn_pcache_init(&off, 0), 0); /* disabled: always misses, puts are ignored */
    sn_pcache_put(&off, 1, a);
    cr_assert_eq(sn_pcache_get(&off, 1, out), 0);
    sn_pcache_free(&off);
}
