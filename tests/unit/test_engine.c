/*
 * test_engine.c — unit tests of the storage engine: a randomized model test
 * with an online replica applying every emitted record, replay from empty,
 * record validation, checksums, limits, mini-transaction boundaries and
 * no-steal. Randomized tests print their seed; SEED=n replays a run.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static uint64_t seed_init(void)
{
    const char *s = getenv("SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (seed == 0)
        seed = 1;
    printf("seed=%lu\n", (unsigned long)seed);
    fflush(stdout);
    rng_state = seed * 0x9E3779B97F4A7C15ull | 1;
    return seed;
}

static void make_tmpdir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/rd-engine-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmpdir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    cr_assert_eq(system(cmd), 0);
}

/* A sink that assigns LSNs (24 bytes of framing + body, like a WAL), can keep
 * every record, can forward each record to a replica engine, and checks the
 * MTR_END discipline and the WAL rule. */
struct rec {
    uint32_t pid;
    uint8_t type, flags;
    size_t off, len;
    uint64_t end_lsn;
};

struct cap {
    uint64_t lsn;
    bool keep;
    struct rec *recs;
    size_t n, cap_recs;
    struct rd_buf bytes;
    struct engine *replica;
    size_t op_records, op_ends; /* since the last op_reset */
    uint8_t op_last_flags;
    uint64_t max_flush;
    bool is_replica; /* its pages carry the writer's LSNs: no WAL-rule check */
};

static int cap_emit(void *ctx, uint32_t pid, uint8_t type, uint8_t flags, const uint8_t *body,
                    size_t len, uint64_t *end_lsn)
{
    struct cap *c = ctx;
    c->lsn += 24 + len;
    *end_lsn = c->lsn;
    c->op_records++;
    c->op_last_flags = flags;
    if (flags & ENGINE_REC_FLAG_MTR_END)
        c->op_ends++;
    if (c->keep) {
        if (c->n == c->cap_recs) {
            c->cap_recs = c->cap_recs ? 2 * c->cap_recs : 1024;
            c->recs = realloc(c->recs, c->cap_recs * sizeof(*c->recs));
            cr_assert_not_null(c->recs);
        }
        c->recs[c->n++] = (struct rec){pid, type, flags, c->bytes.len, len, c->lsn};
        cr_assert_eq(rd_buf_append(&c->bytes, body, len), 0);
    }
    if (c->replica) {
        int rc = engine_redo(c->replica, pid, type, body, len, c->lsn);
        cr_assert_eq(rc, 0, "replica redo failed: %d", rc);
    }
    return 0;
}

static int cap_flush(void *ctx, uint64_t lsn)
{
    struct cap *c = ctx;
    if (!c->is_replica)
        cr_assert_leq(lsn, c->lsn, "flush_to beyond the emitted log");
    if (lsn > c->max_flush)
        c->max_flush = lsn;
    return 0;
}

static void op_reset(struct cap *c)
{
    c->op_records = c->op_ends = 0;
    c->op_last_flags = 0;
}

static void cap_free(struct cap *c)
{
    free(c->recs);
    rd_buf_free(&c->bytes);
}

static struct engine *open_engine(const char *path, size_t cache, struct cap *c)
{
    struct engine_options o = {.data_path = path, .cache_pages = cache,
                               .sink = {.ctx = c, .emit = cap_emit, .flush_to = cap_flush}};
    struct engine *e = NULL;
    int rc = engine_open(&o, &e);
    cr_assert_eq(rc, 0, "engine_open(%s): %s", path ? path : "NULL", rd_strerror(rc));
    return e;
}

static void gen_value(uint64_t vseed, size_t len, uint8_t *out)
{
    uint64_t x = vseed * 0x9E3779B97F4A7C15ull + len + 1;
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        out[i] = (uint8_t)(x >> (8 * (i % 8)));
    }
}

static void compare_pages(struct engine *a, struct engine *b)
{
    struct engine_stats sa, sb;
    engine_get_stats(a, &sa);
    engine_get_stats(b, &sb);
    cr_assert_eq(sa.pages_total, sb.pages_total);
    static uint8_t pa[ENGINE_PAGE_SIZE], pb[ENGINE_PAGE_SIZE];
    for (uint32_t pid = 0; pid < sa.pages_total; pid++) {
        cr_assert_eq(engine_debug_read_page(a, pid, pa), 0);
        cr_assert_eq(engine_debug_read_page(b, pid, pb), 0);
        cr_assert(memcmp(pa + 8, pb + 8, ENGINE_PAGE_SIZE - 8) == 0,
                  "page %u differs between writer and replica", pid);
    }
}

/* ---------------------------------------------------------------- model */

#define NKEYS 2500
struct mkey {
    uint8_t k[ENGINE_KEY_MAX];
    size_t len;
    bool present;
    uint64_t vseed;
    size_t vlen;
};
static struct mkey *keys;

static int mkey_cmp(const void *a, const void *b)
{
    const struct mkey *x = a, *y = b;
    return pg_key_cmp(x->k, x->len, y->k, y->len);
}

static size_t gen_keys(void)
{
    keys = calloc(NKEYS, sizeof(*keys));
    cr_assert_not_null(keys);
    for (size_t i = 0; i < NKEYS; i++) {
        keys[i].len = rnd_below(10) < 7 ? 1 + rnd_below(32) : 1 + rnd_below(ENGINE_KEY_MAX);
        for (size_t j = 0; j < keys[i].len; j++)
            keys[i].k[j] = (uint8_t)(rnd_below(4) == 0 ? rnd() : 'a' + rnd_below(26));
    }
    qsort(keys, NKEYS, sizeof(*keys), mkey_cmp);
    size_t n = 0;
    for (size_t i = 0; i < NKEYS; i++)
        if (n == 0 || mkey_cmp(&keys[n - 1], &keys[i]) != 0)
            keys[n++] = keys[i];
    return n;
}

static size_t random_vlen(void)
{
    size_t r = rnd_below(100);
    if (r < 3)
        return 0;
    if (r < 60)
        return rnd_below(100);
    if (r < 85)
        return 100 + rnd_below(1900);
    if (r < 97)
        return 2000 + rnd_below(8000);
    return 10000 + rnd_below(60000);
}

struct scan_ctx {
    size_t nkeys, idx, seen;
    bool with_values;
    uint8_t *vbuf;
};

static int scan_check(void *arg, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
    struct scan_ctx *s = arg;
    while (s->idx < s->nkeys && !keys[s->idx].present)
        s->idx++;
    cr_assert_lt(s->idx, s->nkeys, "scan returned a key beyond the model");
    struct mkey *m = &keys[s->idx];
    cr_assert(klen == m->len && memcmp(k, m->k, klen) == 0, "scan key mismatch at model %zu", s->idx);
    cr_assert_eq(vlen, m->vlen);
    if (s->with_values) {
        cr_assert(vlen == 0 || v != NULL);
        gen_value(m->vseed, m->vlen, s->vbuf);
        cr_assert(memcmp(v, s->vbuf, vlen) == 0, "scan value mismatch");
    }
    s->idx++;
    s->seen++;
    return 0;
}

static size_t lower_bound(size_t nkeys, const uint8_t *k, size_t len)
{
    size_t lo = 0, hi = nkeys;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pg_key_cmp(keys[mid].k, keys[mid].len, k, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void check_scan(struct engine *e, size_t nkeys, size_t start_idx, size_t max, bool with_values,
                       uint8_t *vbuf)
{
    /* start_idx SIZE_MAX: scan from the first key */
    struct scan_ctx s = {.nkeys = nkeys, .idx = start_idx == SIZE_MAX ? 0 : start_idx,
                         .with_values = with_values, .vbuf = vbuf};
    struct rd_buf next = {0};
    const uint8_t *start = start_idx < nkeys ? keys[start_idx].k : NULL;
    size_t start_len = start_idx < nkeys ? keys[start_idx].len : 0;
    int rc = engine_scan(e, start, start_len, max, with_values, scan_check, &s, &next);
    cr_assert_eq(rc, 0);
    while (s.idx < nkeys && !keys[s.idx].present)
        s.idx++;
    if (s.idx < nkeys) {
        cr_assert_eq(s.seen, max, "scan stopped early");
        cr_assert(next.len == keys[s.idx].len && memcmp(next.data, keys[s.idx].k, next.len) == 0,
                  "scan next key mismatch");
    } else {
        cr_assert_eq(next.len, 0);
    }
    rd_buf_free(&next);
}

static void check_all(struct engine *e, size_t nkeys, uint8_t *vbuf)
{
    uint64_t present = 0;
    for (size_t i = 0; i < nkeys; i++)
        present += keys[i].present;
    cr_assert_eq(engine_key_count(e), present);
    check_scan(e, nkeys, SIZE_MAX, SIZE_MAX, true, vbuf);
}

Test(engine, survives_random_ops_against_reference_model, .timeout = 300)
{
    seed_init();
    size_t nkeys = gen_keys();
    char dir[64], pa[128], pb[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(pa, sizeof(pa), "%s/a.db", dir);
    snprintf(pb, sizeof(pb), "%s/b.db", dir);
    struct cap ca = {0}, cb = {.is_replica = true};
    struct engine *a = open_engine(pa, 96, &ca);
    copy_file(pa, pb);
    struct engine *b = open_engine(pb, 64, &cb);
    ca.replica = b; /* the replica applies every record as it is emitted */
    uint8_t *val = malloc(ENGINE_VALUE_MAX), *exp = malloc(ENGINE_VALUE_MAX);
    struct rd_buf got = {0};
    const size_t nops = 100000;
    uint64_t peak_pages = 0;
    int phase = 0; /* 0 grow, 1 shrink to few keys, 2 regrow, 3 mixed */
    for (size_t op = 0; op < nops; op++) {
        if (op % 25000 == 0 && op > 0)
            phase = (phase + 1) % 4;
        if (op % 5000 == 4999) { /* checkpoint: flush, then images again for first touches */
            cr_assert_eq(engine_flush_dirty(a), 0);
            engine_set_fpi_threshold(a, rnd_below(2) ? ca.lsn : 0);
            cr_assert_eq(engine_flush_dirty(b), 0);
        }
        bool txn = rnd_below(50) == 0;
        if (txn)
            engine_txn_begin(a);
        size_t r = rnd_below(100), i = rnd_below(nkeys);
        int put_pct = phase == 1 ? 5 : phase == 3 ? 35 : 60;
        int del_pct = phase == 1 ? 75 : phase == 3 ? 30 : 8;
        struct mkey *m = &keys[i];
        op_reset(&ca);
        if ((int)r < put_pct) {
            size_t vlen = random_vlen();
            uint64_t vs = rnd();
            bool simple = LEAF_CELL_HDR + m->len + vlen <= LEAF_INLINE_MAX &&
                          (!m->present || LEAF_CELL_HDR + m->len + m->vlen <= LEAF_INLINE_MAX);
            gen_value(vs, vlen, val);
            int rc = engine_put(a, m->k, m->len, val, vlen);
            cr_assert_eq(rc, 0, "put: %s", rd_strerror(rc));
            m->present = true;
            m->vseed = vs;
            m->vlen = vlen;
            if (ca.op_records > 0)
                cr_assert(ca.op_last_flags & ENGINE_REC_FLAG_MTR_END, "last record lacks MTR_END");
            if (simple)
                cr_assert_leq(ca.op_ends, 1, "a single-mtr put emitted %zu MTR_END", ca.op_ends);
        } else if ((int)r < put_pct + del_pct) {
            int rc = engine_delete(a, m->k, m->len);
            cr_assert_eq(rc, m->present ? 0 : RD_ENOTFOUND, "delete: %s", rd_strerror(rc));
            if (ca.op_records > 0)
                cr_assert(ca.op_last_flags & ENGINE_REC_FLAG_MTR_END, "last record lacks MTR_END");
            m->present = false;
        } else if (r < 97) {
            got.len = 0;
            int rc = engine_get(a, m->k, m->len, &got);
            cr_assert_eq(engine_exists(a, m->k, m->len), m->present ? 1 : 0);
            if (!m->present) {
                cr_assert_eq(rc, RD_ENOTFOUND);
            } else {
                cr_assert_eq(rc, 0, "get: %s", rd_strerror(rc));
                cr_assert_eq(got.len, m->vlen);
                gen_value(m->vseed, m->vlen, exp);
                cr_assert(memcmp(got.data, exp, got.len) == 0, "value mismatch");
            }
        } else {
            check_scan(a, nkeys, lower_bound(nkeys, m->k, m->len), 1 + rnd_below(40), rnd_below(2), exp);
        }
        if (txn)
            engine_txn_end(a);
        if (op % 25000 == 24999) {
            check_all(a, nkeys, exp);
            struct engine_stats st;
            engine_get_stats(a, &st);
            printf("op=%zu phase=%d keys=%lu pages=%lu free=%lu height=%u splits=%lu evictions=%lu "
                   "images=%lu deltas=%lu\n",
                   op + 1, phase, (unsigned long)st.keys, (unsigned long)st.pages_total,
                   (unsigned long)st.pages_free, st.height, (unsigned long)st.splits,
                   (unsigned long)st.evictions, (unsigned long)st.image_records,
                   (unsigned long)st.delta_records);
            if (phase == 0)
                peak_pages = st.pages_total;
            if (phase == 1)
                cr_assert_gt(st.pages_free, 0, "deletes freed no pages");
            if (phase == 2) /* regrowth reused the free list instead of extending the file */
                cr_assert_leq(st.pages_total, peak_pages + peak_pages / 2 + 64);
        }
    }
    check_all(a, nkeys, exp);
    check_all(b, nkeys, exp);
    cr_assert_eq(engine_reload_meta(b), 0);
    compare_pages(a, b);
    struct engine_stats st;
    engine_get_stats(a, &st);
    cr_assert_gt(st.evictions, 0, "the test should exercise eviction");
    cr_assert_gt(st.splits, 0);

    /* Durability through the file: flush, reopen, compare. */
    cr_assert_eq(engine_flush_dirty(a), 0);
    cr_assert_eq(engine_close(a), 0);
    a = open_engine(pa, 64, &ca);
    check_all(a, nkeys, exp);
    cr_assert_eq(engine_close(a), 0);
    cr_assert_eq(engine_close(b), 0);
    rd_buf_free(&got);
    free(val);
    free(exp);
    free(keys);
    cap_free(&ca);
    rm_tmpdir(dir);
}

/* ---------------------------------------------------------------- replay */

Test(engine, replays_record_stream_from_empty_into_identical_pages, .timeout = 120)
{
    seed_init();
    size_t nkeys = gen_keys();
    char dir[64], pa[128], pb[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(pa, sizeof(pa), "%s/a.db", dir);
    snprintf(pb, sizeof(pb), "%s/b.db", dir);
    struct cap ca = {.keep = true}, cb = {.is_replica = true};
    struct engine *a = open_engine(pa, 64, &ca);
    uint8_t *val = malloc(ENGINE_VALUE_MAX);
    for (size_t op = 0; op < 8000; op++) {
        if (op % 1000 == 999)
            engine_set_fpi_threshold(a, ca.lsn);
        struct mkey *m = &keys[rnd_below(nkeys)];
        if (rnd_below(3) == 0) {
            int rc = engine_delete(a, m->k, m->len);
            cr_assert(rc == 0 || rc == RD_ENOTFOUND);
            m->present = false;
        } else {
            m->vlen = random_vlen();
            m->vseed = rnd();
            gen_value(m->vseed, m->vlen, val);
            cr_assert_eq(engine_put(a, m->k, m->len, val, m->vlen), 0);
            m->present = true;
        }
    }
    /* E18: the stream holds logical records (inserts, splits' left halves) besides deltas
     * and images, and everything below replays them too. */
    size_t per_type[8] = {0};
    for (size_t i = 0; i < ca.n; i++)
        per_type[ca.recs[i].type & 7]++;
    cr_assert_gt(per_type[ENGINE_REC_CELL_INSERT], 100);
    cr_assert_gt(per_type[ENGINE_REC_PAGE_SPLIT], 10);
    cr_assert_gt(per_type[ENGINE_REC_PAGE_DELTA], 100);
    /* from an empty file: the replica builds the same initial pages */
    struct engine *b = open_engine(pb, 64, &cb);
    for (int pass = 0; pass < 2; pass++) { /* the second pass must change nothing */
        for (size_t i = 0; i < ca.n; i++) {
            struct rec *r = &ca.recs[i];
            int rc = engine_redo(b, r->pid, r->type, ca.bytes.data + r->off, r->len, r->end_lsn);
            cr_assert_eq(rc, 0);
        }
        cr_assert_eq(engine_reload_meta(b), 0);
        compare_pages(a, b);
    }
    cr_assert_eq(engine_flush_dirty(b), 0);
    check_all(b, nkeys, val);
    /* And through engine_page_apply on plain page copies starting from zero pages. */
    struct engine_stats st;
    engine_get_stats(a, &st);
    uint8_t *pages = calloc(st.pages_total, ENGINE_PAGE_SIZE);
    cr_assert_not_null(pages);
    copy_file(pb, pa); /* unused afterwards; just exercise a flushed file */
    struct engine *fresh = open_engine(NULL, 64, &cb);
    for (uint32_t pid = 0; pid < 2; pid++)
        cr_assert_eq(engine_debug_read_page(fresh, pid, pages + (size_t)pid * ENGINE_PAGE_SIZE), 0);
    for (size_t i = 0; i < ca.n; i++) {
        struct rec *r = &ca.recs[i];
        cr_assert_lt(r->pid, st.pages_total);
        cr_assert_eq(engine_page_apply(pages + (size_t)r->pid * ENGINE_PAGE_SIZE, r->type,
                                       ca.bytes.data + r->off, r->len, r->end_lsn),
                     0);
    }
    static uint8_t pg[ENGINE_PAGE_SIZE];
    for (uint32_t pid = 0; pid < st.pages_total; pid++) {
        cr_assert_eq(engine_debug_read_page(b, pid, pg), 0);
        cr_assert(memcmp(pg + 8, pages + (size_t)pid * ENGINE_PAGE_SIZE + 8, ENGINE_PAGE_SIZE - 8) == 0,
                  "page %u differs after engine_page_apply", pid);
    }
    free(pages);
    cr_assert_eq(engine_close(fresh), 0);
    cr_assert_eq(engine_close(a), 0);
    cr_assert_eq(engine_close(b), 0);
    free(val);
    free(keys);
    cap_free(&ca);
    rm_tmpdir(dir);
}

/* ---------------------------------------------------------------- apply validation */

static void expect_reject(uint8_t type, const uint8_t *body, size_t len)
{
    static uint8_t page[ENGINE_PAGE_SIZE], copy[ENGINE_PAGE_SIZE];
    for (size_t i = 0; i < sizeof(page); i++)
        page[i] = (uint8_t)(i * 7);
    memcpy(copy, page, sizeof(page));
    cr_assert_eq(engine_page_apply(page, type, body, len, 99), RD_ECORRUPT, "accepted a bad body");
    cr_assert(memcmp(page, copy, sizeof(page)) == 0, "a rejected record changed the page");
}

Test(engine, apply_rejects_malformed_bodies_and_leaves_page_unchanged)
{
    uint8_t b[ENGINE_PAGE_SIZE + 64];
    memset(b, 0xAB, sizeof(b));
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 0);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 1);
    expect_reject(ENGINE_REC_PAGE_DELTA, NULL, 0);
    rd_put_u16le(b, 0); /* zero ranges */
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 2);
    rd_put_u16le(b, 1);
    rd_put_u16le(b + 2, 8); /* offset inside [0,16) */
    rd_put_u16le(b + 4, 4);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 10);
    rd_put_u16le(b + 2, 8190); /* runs past the page */
    rd_put_u16le(b + 4, 4);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 10);
    rd_put_u16le(b + 2, 100); /* truncated data */
    rd_put_u16le(b + 4, 10);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 9);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 17); /* trailing garbage */
    rd_put_u16le(b + 4, 0); /* empty range */
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 6);
    rd_put_u16le(b, 2); /* second range header truncated */
    rd_put_u16le(b + 4, 4);
    expect_reject(ENGINE_REC_PAGE_DELTA, b, 12);
    rd_put_u16le(b, 1);
    rd_put_u16le(b + 2, 16);
    rd_put_u16le(b + 4, 4);
    static uint8_t page[ENGINE_PAGE_SIZE];
    cr_assert_eq(engine_page_apply(page, ENGINE_REC_PAGE_DELTA, b, 10, 5), 0); /* sanity: valid */
    cr_assert_eq(engine_page_lsn(page), 5);
    cr_assert_eq(page[18], 0xAB);
    expect_reject(7, b, 10); /* unknown type */
    /* images */
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 3);
    rd_put_u16le(b, 10); /* lower < 16 */
    rd_put_u16le(b + 2, 8192);
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 4);
    rd_put_u16le(b, 200); /* lower > upper */
    rd_put_u16le(b + 2, 100);
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 4 + 184 + 8092);
    rd_put_u16le(b, 100); /* upper beyond the page */
    rd_put_u16le(b + 2, 9000);
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 4 + 84);
    rd_put_u16le(b, 100); /* length mismatch */
    rd_put_u16le(b + 2, 200);
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 4 + 84 + 7992 - 1);
    expect_reject(ENGINE_REC_PAGE_IMAGE, b, 4 + 84 + 7992 + 1);
    memset(page, 0x11, sizeof(page));
    cr_assert_eq(engine_page_apply(page, ENGINE_REC_PAGE_IMAGE, b, 4 + 84 + 7992, 7), 0);
    cr_assert_eq(page[150], 0, "image hole must be zero");
    cr_assert_eq(page[18], 0xAB);
    cr_assert_eq(page[8191], 0xAB);
    cr_assert_eq(engine_page_lsn(page), 7);
}

/* A leaf page (id 7) with n cells "k00".."k(n-1)" of vlen-byte values, the odd ones removed
 * again when holes is set (fragmented free space). */
static void logical_leaf(uint8_t *p, unsigned n, unsigned vlen, bool holes)
{
    memset(p, 0, ENGINE_PAGE_SIZE);
    pg_init(p, 7, PG_LEAF);
    uint8_t c[LEAF_CELL_HDR + 3 + 2000];
    for (unsigned i = 0; i < n; i++) {
        rd_put_u16le(c, 3);
        rd_put_u32le(c + 2, vlen);
        c[6] = 0;
        c[7] = 'k';
        c[8] = (uint8_t)('0' + i / 10); /* past '9' for i >= 100: still ascending */
        c[9] = (uint8_t)('0' + i % 10);
        memset(c + 10, 'v', vlen);
        cr_assert(pg_insert_cell(p, i, c, LEAF_CELL_HDR + 3 + vlen));
    }
    if (holes) { /* fill the gap to 10 bytes with one last cell, then free two in the middle */
        unsigned fill = pg_upper(p) - pg_lower(p) - 2 - 10 - (LEAF_CELL_HDR + 3);
        rd_put_u32le(c + 2, fill);
        c[7] = 'z';
        memset(c + 10, 'f', fill);
        cr_assert(pg_insert_cell(p, n, c, LEAF_CELL_HDR + 3 + fill));
        pg_remove_cell(p, 3);
        pg_remove_cell(p, 1);
        cr_assert_lt(pg_upper(p) - pg_lower(p), 20);
    }
    cr_assert_eq(pg_check(p, 7), 0);
}

static void expect_reject_on(const uint8_t *page0, uint8_t type, const uint8_t *body, size_t len)
{
    static uint8_t page[ENGINE_PAGE_SIZE];
    memcpy(page, page0, sizeof(page));
    cr_assert_eq(engine_page_apply(page, type, body, len, 99), RD_ECORRUPT, "accepted a bad logical record");
    cr_assert(memcmp(page, page0, sizeof(page)) == 0, "a rejected record changed the page");
}

Test(engine, logical_records_apply_exactly_and_reject_what_does_not_fit)
{
    static uint8_t leaf[ENGINE_PAGE_SIZE], after[ENGINE_PAGE_SIZE], got[ENGINE_PAGE_SIZE];
    uint8_t b[4 + LEAF_CELL_HDR + 3 + 2000], cell[LEAF_CELL_HDR + 3 + 2000];
    rd_put_u16le(cell, 3);
    rd_put_u32le(cell + 2, 20);
    cell[6] = 0;
    memcpy(cell + 7, "k05", 3); /* sorts after k04, before k06 */
    cell[7 + 2] = '5';
    memset(cell + 10, 'n', 20);
    const unsigned csz = LEAF_CELL_HDR + 3 + 20;
    /* Builder and apply agree (E8) for an insert, an insert that compacts, a split's left
     * half with and without a new cell; pg_build_change picks the logical form. */
    for (int holes = 0; holes < 2; holes++) {
        logical_leaf(leaf, holes ? 60 : 10, holes ? 100 : 30, holes);
        memcpy(after, leaf, sizeof(after));
        unsigned pos = holes ? 3 : 5;
        cr_assert(pg_insert_cell(after, pos, cell, csz));
        uint8_t type = 0;
        size_t len = pg_build_change(leaf, after, b, &type);
        cr_assert_eq(type, ENGINE_REC_CELL_INSERT);
        cr_assert_eq(len, 2 + csz);
        memcpy(got, leaf, sizeof(got));
        cr_assert_eq(engine_page_apply(got, type, b, len, 9), 0);
        cr_assert(memcmp(got + 16, after + 16, ENGINE_PAGE_SIZE - 16) == 0);
        if (holes)
            cr_assert_eq(pg_frag(after), 0, "this insert compacted the page");
    }
    logical_leaf(leaf, 40, 60, false);
    for (int with_cell = 0; with_cell < 2; with_cell++) {
        pg_init(after, 7, PG_LEAF);
        unsigned keep = 20;
        for (unsigned i = 0, j = 0; i < keep; i++) {
            if (with_cell && i == 5)
                cr_assert(pg_insert_cell(after, i, cell, csz));
            else {
                const uint8_t *c = pg_cell(leaf, j++);
                cr_assert(pg_insert_cell(after, i, c, pg_cell_size(leaf, c)));
            }
        }
        uint8_t type = 0;
        size_t len = pg_build_change(leaf, after, b, &type);
        cr_assert_eq(type, ENGINE_REC_PAGE_SPLIT);
        cr_assert_eq(len, with_cell ? 4 + csz : 2);
        memcpy(got, leaf, sizeof(got));
        cr_assert_eq(engine_page_apply(got, type, b, len, 9), 0);
        cr_assert(memcmp(got + 16, after + 16, ENGINE_PAGE_SIZE - 16) == 0);
    }
    /* A change of no logical shape is a delta. */
    memcpy(after, leaf, sizeof(after));
    after[ENGINE_PAGE_SIZE - 1] ^= 1;
    uint8_t type = 0;
    cr_assert_gt(pg_build_change(leaf, after, b, &type), 0);
    cr_assert_eq(type, ENGINE_REC_PAGE_DELTA);

    /* Rejections, the page unchanged. */
    logical_leaf(leaf, 10, 30, false);
    rd_put_u16le(b, 3);
    memcpy(b + 2, cell, csz);
    memcpy(got, leaf, sizeof(got));
    cr_assert_eq(engine_page_apply(got, ENGINE_REC_CELL_INSERT, b, 2 + csz, 9), 0); /* sanity */
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 2 + csz - 1); /* cell length disagrees */
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 2 + csz + 1);
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 1);
    rd_put_u16le(b, 11); /* slot past nslots */
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 2 + csz);
    rd_put_u16le(b, 3);
    rd_put_u16le(b + 2, 0); /* key length 0 */
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 2 + csz);
    rd_put_u16le(b + 2, 3);
    rd_put_u32le(b + 4, 9000); /* inline value longer than a page */
    expect_reject_on(leaf, ENGINE_REC_CELL_INSERT, b, 2 + csz);
    rd_put_u32le(b + 4, 20);
    static uint8_t zero[ENGINE_PAGE_SIZE], garbage[ENGINE_PAGE_SIZE], full[ENGINE_PAGE_SIZE];
    expect_reject_on(zero, ENGINE_REC_CELL_INSERT, b, 2 + csz); /* not a leaf or internal page */
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (uint8_t)(i * 7);
    garbage[PG_OFF_TYPE] = PG_LEAF;
    expect_reject_on(garbage, ENGINE_REC_CELL_INSERT, b, 2 + csz); /* fails the structure check */
    logical_leaf(full, 113, 60, false); /* no room for another cell */
    cr_assert_lt(pg_free_total(full), csz + 2);
    expect_reject_on(full, ENGINE_REC_CELL_INSERT, b, 2 + csz);
    memcpy(got, leaf, sizeof(got));
    rd_put_u16le(got + PG_OFF_FRAG, 500); /* free-space accounting that does not add up */
    expect_reject_on(got, ENGINE_REC_CELL_INSERT, b, 2 + csz);
    uint8_t sp[4 + sizeof(cell)];
    rd_put_u16le(sp, 11); /* keep more cells than there are */
    expect_reject_on(leaf, ENGINE_REC_PAGE_SPLIT, sp, 2);
    rd_put_u16le(sp, 5);
    rd_put_u16le(sp + 2, 5); /* the new cell outside the kept prefix */
    memcpy(sp + 4, cell, csz);
    expect_reject_on(leaf, ENGINE_REC_PAGE_SPLIT, sp, 4 + csz);
    expect_reject_on(leaf, ENGINE_REC_PAGE_SPLIT, sp, 3);
    rd_put_u16le(sp + 2, 4);
    memcpy(got, leaf, sizeof(got));
    cr_assert_eq(engine_page_apply(got, ENGINE_REC_PAGE_SPLIT, sp, 4 + csz, 9), 0); /* sanity */
    cr_assert_eq(pg_nslots(got), 5);
    cr_assert_eq(engine_rec_validate(ENGINE_REC_PAGE_SPLIT, sp, 4 + csz), 0);
    cr_assert_eq(engine_rec_validate(ENGINE_REC_PAGE_SPLIT, sp, 1), RD_ECORRUPT);
    cr_assert_eq(engine_rec_validate(ENGINE_REC_CELL_INSERT, b, 2 + 6), RD_ECORRUPT); /* shorter than any cell */
    cr_assert_eq(engine_rec_validate(9, b, 10), RD_ECORRUPT);
}

/* ---------------------------------------------------------------- checksums */

static void corrupt_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t c;
    cr_assert_eq(pread(fd, &c, 1, off), 1);
    c ^= 0x5A;
    cr_assert_eq(pwrite(fd, &c, 1, off), 1);
    cr_assert_eq(close(fd), 0);
}

Test(engine, corrupt_page_in_data_file_gives_ecorrupt_not_a_crash)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/c.db", dir);
    struct cap c = {0};
    struct engine *e = open_engine(path, 64, &c);
    uint8_t v[300] = {1};
    char k[32];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof(k), "key%05d", i);
        cr_assert_eq(engine_put(e, (uint8_t *)k, strlen(k), v, sizeof(v)), 0);
    }
    struct engine_stats st;
    engine_get_stats(e, &st);
    cr_assert_gt(st.height, 1);
    cr_assert_eq(engine_flush_dirty(e), 0);
    uint8_t meta[ENGINE_PAGE_SIZE];
    cr_assert_eq(engine_debug_read_page(e, 0, meta), 0);
    uint32_t root = rd_get_u32le(meta + META_OFF_ROOT);
    cr_assert_eq(engine_close(e), 0);

    corrupt_byte(path, (off_t)root * ENGINE_PAGE_SIZE + 3000);
    e = open_engine(path, 64, &c);
    struct rd_buf out = {0};
    cr_assert_eq(engine_get(e, (const uint8_t *)"key00001", 8, &out), RD_ECORRUPT);
    cr_assert_eq(engine_put(e, (const uint8_t *)"key00001", 8, v, 3), RD_ECORRUPT);
    cr_assert_eq(engine_close(e), 0);

    corrupt_byte(path, 100); /* the meta page */
    struct engine_options o = {.data_path = path, .cache_pages = 64, .sink = {.ctx = &c, .emit = cap_emit}};
    struct engine *e2 = NULL;
    cr_assert_eq(engine_open(&o, &e2), RD_ECORRUPT);
    cr_assert_null(e2);
    rd_buf_free(&out);
    rm_tmpdir(dir);
}

Test(engine, verify_accepts_zero_page_and_sealed_page_only)
{
    static uint8_t p[ENGINE_PAGE_SIZE];
    memset(p, 0, sizeof(p));
    cr_assert_eq(engine_page_verify(p), 0);
    pg_init(p, 9, PG_LEAF);
    cr_assert_eq(engine_page_verify(p), RD_ECORRUPT);
    engine_page_seal(p);
    cr_assert_eq(engine_page_verify(p), 0);
    p[5000] ^= 1;
    cr_assert_eq(engine_page_verify(p), RD_ECORRUPT);
}

/* ---------------------------------------------------------------- limits */

Test(engine, rejects_oversized_keys_and_values_and_accepts_empty_values)
{
    struct cap c = {0};
    struct engine *e = open_engine(NULL, 64, &c);
    uint8_t *big = calloc(1, ENGINE_VALUE_MAX + 1);
    uint8_t key[ENGINE_KEY_MAX + 1];
    memset(key, 'k', sizeof(key));
    cr_assert_eq(engine_put(e, key, 0, big, 1), RD_ETOOBIG);
    cr_assert_eq(engine_put(e, key, ENGINE_KEY_MAX + 1, big, 1), RD_ETOOBIG);
    cr_assert_eq(engine_put(e, key, 5, big, ENGINE_VALUE_MAX + 1), RD_ETOOBIG);
    cr_assert_eq(engine_key_count(e), 0);
    cr_assert_eq(c.lsn, 0, "a rejected put emitted records");
    cr_assert_eq(engine_put(e, key, 3, NULL, 0), 0);
    struct rd_buf out = {0};
    cr_assert_eq(engine_get(e, key, 3, &out), 0);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(engine_exists(e, key, 3), 1);
    engine_close(e);

    /* the largest value, with a 64-frame pool, through a file */
    char dir[64], path[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/l.db", dir);
    e = open_engine(path, 64, &c);
    for (size_t i = 0; i < ENGINE_VALUE_MAX; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    cr_assert_eq(engine_put(e, key, ENGINE_KEY_MAX, big, ENGINE_VALUE_MAX), 0);
    out.len = 0;
    cr_assert_eq(engine_get(e, key, ENGINE_KEY_MAX, &out), 0);
    cr_assert_eq(out.len, ENGINE_VALUE_MAX);
    cr_assert(memcmp(out.data, big, out.len) == 0);
    struct engine_stats st;
    engine_get_stats(e, &st);
    uint64_t pages = st.pages_total;
    cr_assert_eq(engine_put(e, key, ENGINE_KEY_MAX, big, 10), 0); /* frees the chain */
    engine_get_stats(e, &st);
    cr_assert_geq(st.pages_free, ENGINE_VALUE_MAX / OVF_CAP);
    cr_assert_eq(engine_put(e, key, ENGINE_KEY_MAX, big, ENGINE_VALUE_MAX), 0); /* reuses it */
    engine_get_stats(e, &st);
    cr_assert_eq(st.pages_total, pages);
    engine_close(e);
    rd_buf_free(&out);
    free(big);
    rm_tmpdir(dir);
}

/* ---------------------------------------------------------------- mini-transactions */

Test(engine, mtr_end_marks_exactly_the_last_record_of_each_mtr)
{
    struct cap c = {.keep = true};
    struct engine *e = open_engine(NULL, 1024, &c); /* no file: everything stays in the pool */
    engine_set_fpi_threshold(e, 1);
    uint8_t v[700];
    memset(v, 'v', sizeof(v));
    char k[32];
    size_t splits_seen = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof(k), "k%07d", (i * 7919) % 2000);
        size_t first = c.n;
        uint64_t splits = 0;
        struct engine_stats st;
        engine_get_stats(e, &st);
        splits = st.splits;
        cr_assert_eq(engine_put(e, (uint8_t *)k, strlen(k), v, sizeof(v)), 0);
        engine_get_stats(e, &st);
        cr_assert_gt(c.n, first);
        for (size_t r = first; r < c.n; r++)
            cr_assert_eq((c.recs[r].flags & ENGINE_REC_FLAG_MTR_END) != 0, r == c.n - 1,
                         "put %d: record %zu of %zu has the wrong MTR_END flag", i, r - first,
                         c.n - first);
        if (st.splits > splits) {
            splits_seen++;
            cr_assert_geq(c.n - first, 3, "a split touches leaf, new page and parent");
        }
    }
    cr_assert_gt(splits_seen, 10);
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof(k), "k%07d", i);
        size_t first = c.n;
        cr_assert_eq(engine_delete(e, (uint8_t *)k, strlen(k)), 0);
        for (size_t r = first; r < c.n; r++)
            cr_assert_eq((c.recs[r].flags & ENGINE_REC_FLAG_MTR_END) != 0, r == c.n - 1);
    }
    struct engine_stats st;
    engine_get_stats(e, &st);
    cr_assert_eq(st.height, 1, "the tree collapses when emptied");
    cr_assert_eq(st.keys, 0);
    cr_assert_eq(st.pages_free + 2, st.pages_total, "every page but meta and root is free");
    engine_close(e);
    cap_free(&c);
}

Test(engine, no_steal_keeps_txn_pages_out_of_the_file_and_reports_etoobig)
{
    char dir[64], path[128];
    make_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/t.db", dir);
    struct cap c = {0};
    struct engine *e = open_engine(path, 64, &c);
    uint8_t v[1000];
    memset(v, 'x', sizeof(v));
    char k[32];
    for (int i = 0; i < 3000; i++) { /* a tree bigger than the pool */
        snprintf(k, sizeof(k), "base%06d", i);
        cr_assert_eq(engine_put(e, (uint8_t *)k, strlen(k), v, sizeof(v)), 0);
    }
    struct engine_stats before, after;
    engine_get_stats(e, &before);
    cr_assert_gt(before.evictions, 0);
    cr_assert_eq(engine_flush_dirty(e), 0);
    engine_txn_begin(e);
    cr_assert_eq(engine_put(e, (const uint8_t *)"base000001", 10, v, 10), 0);
    engine_get_stats(e, &before);
    struct rd_buf out = {0};
    for (int i = 0; i < 3000; i += 3) { /* reads force evictions of everything else */
        snprintf(k, sizeof(k), "base%06d", i);
        cr_assert_eq(engine_get(e, (uint8_t *)k, strlen(k), &out), 0);
    }
    engine_get_stats(e, &after);
    cr_assert_gt(after.evictions, before.evictions);
    cr_assert_eq(after.dirty_writes, before.dirty_writes, "a txn page was written during the txn");
    /* a transaction needing more pages than the pool has fails cleanly */
    uint8_t *big = calloc(1, ENGINE_VALUE_MAX);
    int rc = engine_put(e, (const uint8_t *)"huge", 4, big, ENGINE_VALUE_MAX);
    cr_assert_eq(rc, RD_ETOOBIG, "got %d", rc);
    engine_txn_end(e);
    free(big);
    rd_buf_free(&out);
    engine_close(e);
    rm_tmpdir(dir);
}

Test(engine, describe_prints_header_and_keys)
{
    struct cap c = {0};
    struct engine *e = open_engine(NULL, 64, &c);
    cr_assert_eq(engine_put(e, (const uint8_t *)"hello\x01", 6, (const uint8_t *)"w", 1), 0);
    static uint8_t p[ENGINE_PAGE_SIZE];
    cr_assert_eq(engine_debug_read_page(e, 1, p), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    engine_page_describe(p, f);
    cr_assert_eq(engine_debug_read_page(e, 0, p), 0);
    engine_page_describe(p, f);
    fclose(f);
    cr_assert_not_null(strstr(buf, "type=LEAF"));
    cr_assert_not_null(strstr(buf, "\"hello\\x01\""));
    cr_assert_not_null(strstr(buf, "magic=RDBTMETA"));
    free(buf);
    engine_close(e);
}

/* ---------------------------------------------------------------- failures */

static int failing_emit(void *ctx, uint32_t pid, uint8_t type, uint8_t flags, const uint8_t *body,
                        size_t len, uint64_t *end_lsn)
{
    int *calls = ctx;
    (*calls)++;
    *end_lsn = 1;
    return -EIO;
}

Test(engine, sink_failure_is_sticky)
{
    int calls = 0;
    struct engine_options o = {.cache_pages = 64, .sink = {.ctx = &calls, .emit = failing_emit}};
    struct engine *e = NULL;
    cr_assert_eq(engine_open(&o, &e), 0);
    cr_assert_eq(engine_put(e, (const uint8_t *)"a", 1, (const uint8_t *)"b", 1), -EIO);
    cr_assert_eq(engine_put(e, (const uint8_t *)"c", 1, (const uint8_t *)"d", 1), -EIO);
    cr_assert_eq(engine_delete(e, (const uint8_t *)"a", 1), -EIO);
    cr_assert_eq(calls, 1, "no more records after the sink failed");
    engine_close(e);
}

static int stop_at_two(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    int *n = arg;
    return ++*n == 2 ? 1 : 0;
}

Test(engine, scan_returns_callback_value_and_redo_rejects_malformed_page)
{
    struct cap c = {.keep = true};
    struct engine *e = open_engine(NULL, 64, &c);
    for (char k = 'a'; k <= 'e'; k++)
        cr_assert_eq(engine_put(e, (const uint8_t *)&k, 1, (const uint8_t *)"v", 1), 0);
    int n = 0;
    struct rd_buf next = {0};
    cr_assert_eq(engine_scan(e, NULL, 0, 10, 1, stop_at_two, &n, &next), 1);
    cr_assert_eq(n, 2);
    n = 0;
    cr_assert_eq(engine_scan(e, (const uint8_t *)"c", 1, 1, 0, stop_at_two, &n, &next), 0);
    cr_assert(next.len == 1 && next.data[0] == 'd');
    /* an image claiming 5000 slots on leaf 1 is rejected and leaves the page alone */
    static uint8_t img[ENGINE_PAGE_SIZE];
    cr_assert_eq(engine_debug_read_page(e, 1, img), 0);
    rd_put_u16le(img + PG_OFF_NSLOTS, 5000);
    uint8_t body[ENGINE_PAGE_SIZE];
    size_t len = pg_build_image(img, body);
    struct cap c2 = {0};
    struct engine *r = open_engine(NULL, 64, &c2);
    cr_assert_eq(engine_redo(r, 1, ENGINE_REC_PAGE_IMAGE, body, len, 1000), RD_ECORRUPT);
    cr_assert_eq(engine_redo(r, 1, ENGINE_REC_PAGE_DELTA, body, 3, 1000), RD_ECORRUPT);
    n = 0;
    cr_assert_eq(engine_scan(r, NULL, 0, 10, 1, stop_at_two, &n, &next), 0);
    cr_assert_eq(n, 0);
    engine_close(r);
    engine_close(e);
    rd_buf_free(&next);
    cap_free(&c);
}
