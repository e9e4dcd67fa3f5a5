/*
 * test_wal_engine.c — the WAL with the real engine: crash recovery replays
 * committed transactions (and only those), is idempotent, survives eviction
 * and segment switches; full-page images follow checkpoints.
 * A "crash" closes the WAL and the engine without flushing anything more.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "engine/engine.h"
#include "wal/wal.h"

#define MIB (1024u * 1024u)

static char *make_dir(void)
{
    char *d = strdup("/tmp/rd-test-walx-XXXXXX");
    cr_assert(mkdtemp(d) != NULL);
    return d;
}

static void remove_dir(char *d)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

struct inst {
    struct wal *w;
    struct engine *e;
};

static void inst_open(struct inst *in, const char *dir, size_t cache_pages)
{
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB};
    int rc = wal_open(&o, &in->w);
    cr_assert_eq(rc, 0, "wal_open: %s", rd_strerror(rc));
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine_options eo = {.data_path = data, .cache_pages = cache_pages,
                                .sink = wal_engine_sink(in->w)};
    rc = engine_open(&eo, &in->e);
    cr_assert_eq(rc, 0, "engine_open: %s", rd_strerror(rc));
    rc = wal_recover(in->w, in->e);
    cr_assert_eq(rc, 0, "wal_recover: %s", rd_strerror(rc));
}

static void inst_crash(struct inst *in)
{
    cr_assert_eq(wal_close(in->w), 0);
    cr_assert_eq(engine_close(in->e), 0);
}

static void key_of(int i, char *k, size_t len) { snprintf(k, len, "key-%06d", i); }

static void value_of(int i, int version, uint8_t *v, size_t len)
{
    for (size_t j = 0; j < len; j++)
        v[j] = (uint8_t)(i * 31 + version * 7 + (int)j);
}

/* One transaction: put, then its commit record (as the server does). */
static uint64_t put_commit(struct inst *in, int i, int version, size_t vlen)
{
    char k[32];
    uint8_t v[8192];
    key_of(i, k, sizeof(k));
    value_of(i, version, v, vlen);
    engine_txn_begin(in->e);
    int rc = engine_put(in->e, (const uint8_t *)k, strlen(k), v, vlen);
    engine_txn_end(in->e);
    cr_assert_eq(rc, 0, "engine_put: %s", rd_strerror(rc));
    uint64_t end;
    cr_assert_eq(wal_append_commit(in->w, (uint64_t)i, &end), 0);
    return end;
}

static void check_key(struct inst *in, int i, int version, size_t vlen)
{
    char k[32];
    uint8_t v[8192];
    key_of(i, k, sizeof(k));
    value_of(i, version, v, vlen);
    struct rd_buf out = {0};
    int rc = engine_get(in->e, (const uint8_t *)k, strlen(k), &out);
    cr_assert_eq(rc, 0, "get %s: %s", k, rd_strerror(rc));
    cr_assert_eq(out.len, vlen, "%s", k);
    cr_assert_eq(memcmp(out.data, v, vlen), 0, "%s", k);
    rd_buf_free(&out);
}

static int has_key(struct inst *in, int i)
{
    char k[32];
    key_of(i, k, sizeof(k));
    int rc = engine_exists(in->e, (const uint8_t *)k, strlen(k));
    cr_assert_geq(rc, 0);
    return rc;
}

Test(wal_engine, recovery_replays_committed_transactions_and_twice_is_the_same_as_once)
{
    char *dir = make_dir();
    struct inst in;
    inst_open(&in, dir, 64);
    uint64_t end = 0;
    /* ~1.3 MB of values with a 64-page pool: evictions write pages (flush_to). */
    for (int i = 0; i < 3000; i++)
        end = put_commit(&in, i, 1, 400 + (size_t)(i % 50));
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    struct engine_stats es;
    engine_get_stats(in.e, &es);
    cr_assert_gt(es.evictions, 0, "the test must exercise eviction");
    inst_crash(&in);

    for (int round = 0; round < 3; round++) {
        inst_open(&in, dir, 64);
        cr_assert_eq(engine_key_count(in.e), 3000, "round %d", round);
        for (int i = 0; i < 3000; i += 7)
            check_key(&in, i, 1, 400 + (size_t)(i % 50));
        if (round < 2)
            cr_assert_eq(wal_insert_lsn(in.w), end);
        if (round == 1)
            cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
        inst_crash(&in);
    }
    remove_dir(dir);
}

Test(wal_engine, records_after_the_last_commit_are_not_replayed)
{
    char *dir = make_dir();
    struct inst in;
    inst_open(&in, dir, 64);
    uint64_t c1 = put_commit(&in, 1, 1, 100);
    /* A transaction whose commit record never made it: its records are durable. */
    char k[32];
    key_of(2, k, sizeof(k));
    engine_txn_begin(in.e);
    cr_assert_eq(engine_put(in.e, (const uint8_t *)k, strlen(k), (const uint8_t *)"lost", 4), 0);
    engine_txn_end(in.e);
    cr_assert_gt(wal_insert_lsn(in.w), c1);
    cr_assert_eq(wal_flush_sync(in.w, wal_insert_lsn(in.w)), 0);
    inst_crash(&in);

    inst_open(&in, dir, 64);
    cr_assert_eq(wal_insert_lsn(in.w), c1, "the log is cut after the last commit");
    cr_assert(has_key(&in, 1));
    cr_assert(!has_key(&in, 2));
    cr_assert_eq(engine_key_count(in.e), 1);
    uint64_t c3 = put_commit(&in, 3, 1, 100);
    cr_assert_eq(wal_flush_sync(in.w, c3), 0);
    inst_crash(&in);

    inst_open(&in, dir, 64);
    cr_assert(has_key(&in, 1));
    cr_assert(!has_key(&in, 2));
    cr_assert(has_key(&in, 3));
    check_key(&in, 3, 1, 100);
    cr_assert_eq(engine_key_count(in.e), 2);
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal_engine, full_page_image_on_first_change_after_checkpoint_and_not_on_the_second)
{
    char *dir = make_dir();
    struct inst in;
    inst_open(&in, dir, 64);
    put_commit(&in, 1, 1, 100);
    cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
    struct wal_stats a, b, c;
    wal_get_stats(in.w, &a);
    put_commit(&in, 1, 2, 100); /* overwrite: changes the leaf only */
    wal_get_stats(in.w, &b);
    cr_assert_geq(b.image_records, a.image_records + 1, "first change after a checkpoint is an FPI");
    put_commit(&in, 1, 3, 100);
    wal_get_stats(in.w, &c);
    cr_assert_eq(c.image_records, b.image_records, "second change is a delta");
    cr_assert_gt(c.records, b.records);
    cr_assert_eq(wal_flush_sync(in.w, wal_insert_lsn(in.w)), 0);
    inst_crash(&in);
    inst_open(&in, dir, 64);
    check_key(&in, 1, 3, 100);
    /* Recovery sets the FPI threshold to the redo point: pages from before it get images. */
    wal_get_stats(in.w, &a);
    put_commit(&in, 1, 4, 100); /* the leaf's LSN is above the redo point */
    wal_get_stats(in.w, &b);
    cr_assert_eq(b.image_records, a.image_records, "pages changed after the redo point need no FPI");
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal_engine, recovery_across_segment_switches_and_checkpoints)
{
    char *dir = make_dir();
    struct inst in;
    inst_open(&in, dir, 128);
    uint64_t end = 0;
    for (int i = 0; i < 800; i++) {
        end = put_commit(&in, i, 1, 2000 + (size_t)(i % 5) * 900);
        if (i == 300)
            cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
    }
    for (int i = 0; i < 800; i += 3)
        end = put_commit(&in, i, 2, 3000);
    cr_assert_gt(end / MIB, 3, "several segments");
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_crash(&in);
    inst_open(&in, dir, 128);
    cr_assert_eq(engine_key_count(in.e), 800);
    for (int i = 0; i < 800; i++) {
        if (i % 3 == 0)
            check_key(&in, i, 2, 3000);
        else
            check_key(&in, i, 1, 2000 + (size_t)(i % 5) * 900);
    }
    cr_assert_eq(wal_shutdown(in.w, in.e), 0);
    inst_crash(&in);
    inst_open(&in, dir, 128);
    cr_assert_eq(engine_key_count(in.e), 800);
    check_key(&in, 799, 1, 2000 + 4 * 900);
    inst_crash(&in);
    remove_dir(dir);
}

/* A spread checkpoint (wal_checkpoint_begin/_step/_end) with transactions
 * between its slices, then a crash: recovery from its redo point restores
 * every committed value, pages changed during the sweep included (their first
 * change after the redo point logged a full image). A crash in the middle of
 * a sweep recovers from the previous redo point. */
static void spread_round(struct inst *in, int version, int finish)
{
    struct wal_stats a, b;
    wal_get_stats(in->w, &a);
    cr_assert_eq(wal_checkpoint_begin(in->w, in->e, 0), 0);
    cr_assert(wal_checkpoint_active(in->w));
    cr_assert_eq(wal_needs_checkpoint(in->w), 0, "no second checkpoint while one is in progress");
    int done = 0, steps = 0;
    for (int i = 0; !done; i++) {
        put_commit(in, (i * 37) % 600, version, 700); /* between slices */
        cr_assert_eq(wal_checkpoint_step(in->w, in->e, &done), 0);
        steps++;
        if (!finish && steps == 2)
            return; /* crash mid-sweep */
    }
    cr_assert_eq(wal_checkpoint_end(in->w, in->e), 0);
    cr_assert_not(wal_checkpoint_active(in->w));
    wal_get_stats(in->w, &b);
    cr_assert_eq(b.checkpoints, a.checkpoints + 1);
    cr_assert_eq(b.spread_checkpoints, a.spread_checkpoints + 1);
    cr_assert_gt(b.image_records, a.image_records, "pages changed during the sweep were logged as images");
}

Test(wal_engine, spread_checkpoint_with_writes_between_slices_recovers_everything)
{
    char *dir = make_dir();
    struct inst in;
    inst_open(&in, dir, 2048); /* > 256 frames: several slices */
    for (int i = 0; i < 600; i++)
        put_commit(&in, i, 1, 700);
    spread_round(&in, 2, 1);
    for (int i = 0; i < 600; i += 7)
        put_commit(&in, i, 3, 700);
    cr_assert_eq(wal_flush_sync(in.w, wal_insert_lsn(in.w)), 0);
    inst_crash(&in);
    inst_open(&in, dir, 2048);
    cr_assert_eq(engine_key_count(in.e), 600);
    for (int i = 0; i < 600; i++) {
        char k[32];
        key_of(i, k, sizeof(k));
        struct rd_buf out = {0};
        cr_assert_eq(engine_get(in.e, (const uint8_t *)k, strlen(k), &out), 0);
        cr_assert_eq(out.len, 700);
        rd_buf_free(&out);
    }
    for (int i = 0; i < 600; i += 7)
        check_key(&in, i, 3, 700);
    /* Crash in the middle of the next sweep: nothing is lost either. */
    spread_round(&in, 4, 0);
    for (int i = 1; i < 600; i += 7)
        put_commit(&in, i, 5, 700);
    cr_assert_eq(wal_flush_sync(in.w, wal_insert_lsn(in.w)), 0);
    inst_crash(&in);
    inst_open(&in, dir, 2048);
    cr_assert_eq(engine_key_count(in.e), 600);
    for (int i = 1; i < 600; i += 7)
        check_key(&in, i, 5, 700);
    cr_assert_eq(wal_shutdown(in.w, in.e), 0);
    inst_crash(&in);
    remove_dir(dir);
}
