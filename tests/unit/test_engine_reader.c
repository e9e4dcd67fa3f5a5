/*
 * test_engine_reader.c — the engine as an aurora reader fed with redo
 * (engine_redo_if_cached, engine_invalidate_page): a writer engine emits
 * records; a storage model serves every page at the read point (GetPage);
 * a reader engine with the smallest pool (64 frames: constant eviction and
 * re-fetch) applies each batch of records to the pages it caches, then moves
 * its read point. After every batch the reader must answer exactly like the
 * writer. Randomized: prints its seed; SEED=n replays a run.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "engine/engine_int.h"

#define SIM_MAX_PAGES 20000u

struct sim_rec {
    uint64_t lsn;
    uint32_t page_id;
    uint8_t type;
    uint32_t len;
    uint8_t *body;
};

/* The record stream, the storage model (each page at the read point) and the
 * read point. Records [0, folded) are in the pages; [fed, n) not yet fed. */
static struct {
    struct sim_rec *recs;
    size_t n, cap, fed, folded;
    uint64_t last_lsn, read_lsn, getpages;
    uint8_t *page[SIM_MAX_PAGES];
} sim;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void seed_init(void)
{
    const char *s = getenv("SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    if (seed == 0)
        seed = 1;
    printf("seed=%lu\n", (unsigned long)seed);
    fflush(stdout);
    rng_state = seed * 0x9E3779B97F4A7C15ull | 1;
}

static int writer_emit(void *ctx, uint32_t page_id, uint8_t type, uint8_t flags, const uint8_t *body, size_t len,
                       uint64_t *end_lsn)
{
    (void)ctx;
    (void)flags;
    if (sim.n == sim.cap) {
        sim.cap = sim.cap ? sim.cap * 2 : 4096;
        sim.recs = realloc(sim.recs, sim.cap * sizeof(*sim.recs));
        cr_assert_not_null(sim.recs);
    }
    struct sim_rec *r = &sim.recs[sim.n++];
    r->lsn = ++sim.last_lsn;
    r->page_id = page_id;
    r->type = type;
    r->len = (uint32_t)len;
    r->body = malloc(len ? len : 1);
    cr_assert_not_null(r->body);
    memcpy(r->body, body, len);
    *end_lsn = r->lsn;
    return 0;
}

static int writer_read(void *ctx, uint32_t page_id, uint8_t *page)
{
    (void)ctx;
    (void)page_id;
    memset(page, 0, ENGINE_PAGE_SIZE); /* a new volume */
    return 0;
}

static int reader_emit(void *ctx, uint32_t page_id, uint8_t type, uint8_t flags, const uint8_t *body, size_t len,
                       uint64_t *end_lsn)
{
    (void)ctx, (void)page_id, (void)type, (void)flags, (void)body, (void)len, (void)end_lsn;
    return RD_ESTATE; /* a reader never changes pages */
}

/* GetPage@read point. */
static int reader_read(void *ctx, uint32_t page_id, uint8_t *page)
{
    (void)ctx;
    sim.getpages++;
    cr_assert_lt(page_id, SIM_MAX_PAGES);
    if (sim.page[page_id] == NULL) {
        memset(page, 0, ENGINE_PAGE_SIZE);
        return 0;
    }
    memcpy(page, sim.page[page_id], ENGINE_PAGE_SIZE);
    engine_page_seal(page);
    return 0;
}

/* Storage catches up to the writer; the read point moves there. */
static void storage_advance(void)
{
    for (; sim.folded < sim.n; sim.folded++) {
        struct sim_rec *r = &sim.recs[sim.folded];
        if (r->page_id == ENGINE_PAGE_NONE)
            continue;
        cr_assert_lt(r->page_id, SIM_MAX_PAGES);
        if (sim.page[r->page_id] == NULL)
            cr_assert_not_null(sim.page[r->page_id] = calloc(1, ENGINE_PAGE_SIZE));
        cr_assert_eq(engine_page_apply(sim.page[r->page_id], r->type, r->body, r->len, r->lsn), 0);
    }
    sim.read_lsn = sim.last_lsn;
}

static void sim_free(void)
{
    for (size_t i = 0; i < sim.n; i++)
        free(sim.recs[i].body);
    free(sim.recs);
    for (size_t i = 0; i < SIM_MAX_PAGES; i++)
        free(sim.page[i]);
    memset(&sim, 0, sizeof(sim));
}

static size_t key_of(char *k, uint64_t id)
{
    int n = snprintf(k, 40, "key:%08llu:", (unsigned long long)id);
    memset(k + n, 'p', 60); /* long keys: internal pages split too */
    return (size_t)n + 60;
}

static size_t value_of(uint8_t *v, uint64_t id, uint64_t version)
{
    size_t len = version % 50 == 7 ? 3000 + (size_t)(version % 9000) /* overflow chains */
                                   : 50 + (size_t)((id * 31 + version) % 300);
    for (size_t i = 0; i < len; i++)
        v[i] = (uint8_t)('a' + (id + version + i) % 26);
    return len;
}

/* One writer operation: new keys in order, overwrites, deletes, and ranges of
 * deletes (empty leaves -> free list -> reused by later splits). */
static void writer_op(struct engine *w, uint64_t *nkeys, uint64_t version)
{
    static uint8_t val[16384];
    char key[128];
    uint64_t x = rnd() % 100;
    if (x < 40 || *nkeys == 0) {
        size_t kl = key_of(key, *nkeys);
        cr_assert_eq(engine_put(w, (uint8_t *)key, kl, val, value_of(val, *nkeys, version)), 0);
        (*nkeys)++;
    } else if (x < 70) {
        uint64_t id = rnd() % *nkeys;
        size_t kl = key_of(key, id);
        cr_assert_eq(engine_put(w, (uint8_t *)key, kl, val, value_of(val, id, version)), 0);
    } else if (x < 85) {
        size_t kl = key_of(key, rnd() % *nkeys);
        int rc = engine_delete(w, (uint8_t *)key, kl);
        cr_assert(rc == 0 || rc == RD_ENOTFOUND);
    } else {
        for (uint64_t id = rnd() % *nkeys, k = 0; k < 40 && id + k < *nkeys; k++) {
            size_t kl = key_of(key, id + k);
            int rc = engine_delete(w, (uint8_t *)key, kl);
            cr_assert(rc == 0 || rc == RD_ENOTFOUND);
        }
    }
}

/* Feeds every record not fed yet, as a reader does with one FEED_REDO frame. */
static void feed(struct engine *r, uint64_t *applied)
{
    for (; sim.fed < sim.n; sim.fed++) {
        struct sim_rec *q = &sim.recs[sim.fed];
        if (q->page_id == ENGINE_PAGE_NONE)
            continue;
        int rc = engine_redo_if_cached(r, q->page_id, q->type, q->body, q->len, q->lsn);
        cr_assert_geq(rc, 0, "record lsn %lu page %u: %s", (unsigned long)q->lsn, q->page_id, rd_strerror(rc));
        *applied += (uint64_t)rc;
    }
    cr_assert_eq(engine_reload_meta(r), 0);
    storage_advance();
}

Test(engine_reader, reader_fed_with_redo_answers_like_the_writer, .timeout = 300)
{
    seed_init();
    struct engine *w, *r;
    struct engine_options wo = {.data_path = NULL, .cache_pages = SIM_MAX_PAGES,
                                .sink = {.emit = writer_emit, .read_page = writer_read}};
    cr_assert_eq(engine_open(&wo, &w), 0); /* emits images of the meta and root pages */
    storage_advance();
    sim.fed = sim.n;
    struct engine_options ro = {.data_path = NULL, .cache_pages = 64,
                                .sink = {.emit = reader_emit, .read_page = reader_read}};
    cr_assert_eq(engine_open(&ro, &r), 0);
    struct rd_buf a = {0}, b = {0};
    char key[128];
    uint64_t nkeys = 0, applied = 0, checks = 0, feeds = 0;
    for (uint64_t op = 0; op < 150000; op++) {
        writer_op(w, &nkeys, op);
        if (rnd() % 4 != 0)
            continue; /* feed at every few operation ends: each is a consistency point */
        feed(r, &applied);
        feeds++;
        for (int c = 0; c < 10; c++) {
            uint64_t id = rnd() % nkeys;
            size_t kl = key_of(key, id);
            a.len = b.len = 0;
            int rw = engine_get(w, (uint8_t *)key, kl, &a), rr = engine_get(r, (uint8_t *)key, kl, &b);
            cr_assert_eq(rr, rw, "op %lu key %lu: the writer answers %d, the reader %d (read point %lu)",
                         (unsigned long)op, (unsigned long)id, rw, rr, (unsigned long)sim.read_lsn);
            if (rw == 0)
                cr_assert(a.len == b.len && memcmp(a.data, b.data, a.len) == 0, "op %lu key %lu: values differ",
                          (unsigned long)op, (unsigned long)id);
            checks++;
        }
        cr_assert_eq(engine_key_count(r), engine_key_count(w));
    }
    struct engine_stats st;
    engine_get_stats(w, &st);
    printf("%lu feeds, %zu records, %lu applied to cached pages, %lu GetPage, %lu gets compared; %lu keys, height "
           "%u, %lu pages (%lu free)\n",
           (unsigned long)feeds, sim.n, (unsigned long)applied, (unsigned long)sim.getpages, (unsigned long)checks,
           (unsigned long)st.keys, st.height, (unsigned long)st.pages_total, (unsigned long)st.pages_free);
    cr_assert_geq(st.height, 3);
    cr_assert_gt(applied, 0);
    rd_buf_free(&a);
    rd_buf_free(&b);
    cr_assert_eq(engine_close(r), 0);
    cr_assert_eq(engine_close(w), 0);
    sim_free();
}

Test(engine_reader, pinned_page_is_neither_applied_nor_dropped_and_old_records_are_skipped)
{
    struct engine *w, *r;
    struct engine_options wo = {.data_path = NULL, .cache_pages = 256,
                                .sink = {.emit = writer_emit, .read_page = writer_read}};
    cr_assert_eq(engine_open(&wo, &w), 0);
    storage_advance();
    sim.fed = sim.n;
    struct engine_options ro = {.data_path = NULL, .cache_pages = 64,
                                .sink = {.emit = reader_emit, .read_page = reader_read}};
    cr_assert_eq(engine_open(&ro, &r), 0);
    uint8_t v[8] = "value";
    cr_assert_eq(engine_put(w, (const uint8_t *)"k1", 2, v, 5), 0);
    storage_advance();
    sim.fed = sim.n; /* the reader fetches the root at the new read point: it has the record */
    struct rd_buf out = {0};
    cr_assert_eq(engine_get(r, (const uint8_t *)"k1", 2, &out), 0);
    size_t first = sim.n;
    cr_assert_eq(engine_put(w, (const uint8_t *)"k2", 2, v, 5), 0);
    struct sim_rec *leaf = NULL;
    for (size_t i = first; i < sim.n; i++)
        if (sim.recs[i].page_id != 0 && sim.recs[i].page_id != ENGINE_PAGE_NONE)
            leaf = &sim.recs[i];
    cr_assert_not_null(leaf);
    /* A record the cached page already has: skipped (0), the page unchanged. */
    struct sim_rec *old = &sim.recs[first - 1];
    if (old->page_id == leaf->page_id)
        cr_assert_eq(engine_redo_if_cached(r, old->page_id, old->type, old->body, old->len, old->lsn), 0);
    /* Pinned (a command in progress would hold it): refused by both calls. */
    int32_t f;
    cr_assert_eq(pool_get(r, leaf->page_id, POOL_READ, &f), 0);
    cr_assert_eq(engine_redo_if_cached(r, leaf->page_id, leaf->type, leaf->body, leaf->len, leaf->lsn), RD_ESTATE);
    cr_assert_eq(engine_invalidate_page(r, leaf->page_id), RD_ESTATE);
    pool_unpin(r, f);
    cr_assert_eq(engine_redo_if_cached(r, leaf->page_id, leaf->type, leaf->body, leaf->len, leaf->lsn), 1);
    cr_assert_eq(engine_redo_if_cached(r, leaf->page_id, leaf->type, leaf->body, leaf->len, leaf->lsn), 0);
    /* A malformed record: RD_ECORRUPT (the reader then drops the page). */
    uint8_t bad[3] = {0, 0, 0};
    cr_assert_eq(engine_redo_if_cached(r, leaf->page_id, ENGINE_REC_PAGE_DELTA, bad, 3, leaf->lsn + 1), RD_ECORRUPT);
    rd_buf_free(&out);
    cr_assert_eq(engine_close(r), 0);
    cr_assert_eq(engine_close(w), 0);
    sim_free();
}
