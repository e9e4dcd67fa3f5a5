/*
 * test_wal_perf.c — the WAL write path's performance features, for both sync
 * methods (fdatasync, open_datasync = O_DIRECT|O_DSYNC): asynchronous
 * preparation of the next segment through the loop (and its synchronous
 * fallback), crash in the middle of a preparation, block-aligned direct
 * writes seen by buffered readers, a synchronous flush during an async one,
 * and flushed <= written <= insert throughout.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/err.h"
#include "common/loop.h"
#include "common/util.h"
#include "engine/engine.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

#define MIB (1024u * 1024u)

static char *make_dir(const char *base)
{
    char *d = malloc(256);
    snprintf(d, 256, "%s/rd-test-walperf-XXXXXX", base);
    cr_assert(mkdtemp(d) != NULL, "mkdtemp %s: %s", d, strerror(errno));
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
    struct rd_loop loop;
    struct wal *w;
    struct engine *e;
    uint64_t seen_lsn;
    long calls;
    const char *dir;
};

static void on_flushed(void *arg, uint64_t lsn)
{
    struct inst *in = arg;
    cr_assert_geq(lsn, in->seen_lsn, "flushed LSN never goes back");
    in->seen_lsn = lsn;
    in->calls++;
}

static void inst_open(struct inst *in, const char *dir, int method)
{
    memset(in, 0, sizeof(*in));
    in->dir = dir;
    char why[256];
    cr_assert_eq(rd_loop_init(&in->loop, 64, why, sizeof(why)), 0, "%s", why);
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .loop = &in->loop,
                            .on_flushed = on_flushed, .on_flushed_arg = in, .sync_method = method};
    int rc = wal_open(&o, &in->w);
    cr_assert_eq(rc, 0, "wal_open: %s", rd_strerror(rc));
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(in->w)};
    cr_assert_eq(engine_open(&eo, &in->e), 0);
    rc = wal_recover(in->w, in->e);
    cr_assert_eq(rc, 0, "wal_recover: %s", rd_strerror(rc));
}

/* Runs the loop until no flush and no preparation is in flight. */
static void inst_drain(struct inst *in)
{
    for (int i = 0; i < 10000 && (wal_flush_in_flight(in->w) || wal_prep_in_flight(in->w)); i++)
        cr_assert_geq(rd_loop_run_once(&in->loop, 100000), 0);
    cr_assert(!wal_flush_in_flight(in->w) && !wal_prep_in_flight(in->w));
}

static void inst_close(struct inst *in)
{
    cr_assert_eq(wal_close(in->w), 0);
    cr_assert_eq(engine_close(in->e), 0);
    /* Let orphaned operations (abandoned preparations) complete. */
    for (int i = 0; i < 5; i++)
        rd_loop_run_once(&in->loop, 1000);
    rd_loop_destroy(&in->loop);
}

/* COMMIT records readable from the start with a buffered reader. */
static long count_records(const char *dir, uint64_t *last_end)
{
    struct wal_reader *r;
    cr_assert_eq(wal_reader_open(dir, 0, &r), 0);
    struct wal_record rec;
    long n = 0;
    int rc;
    uint64_t prev = 0;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        if (n > 0)
            cr_assert_eq(rec.prev_lsn, prev);
        prev = rec.lsn;
        if (rec.type == WAL_REC_COMMIT)
            n++;
        if (last_end)
            *last_end = rec.end_lsn;
    }
    cr_assert_eq(rc, 0);
    wal_reader_close(r);
    return n;
}

static long count_temp_files(const char *dir)
{
    char wd[600];
    snprintf(wd, sizeof(wd), "%s/wal", dir);
    DIR *d = opendir(wd);
    cr_assert(d != NULL);
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += strncmp(de->d_name, "segtemp.", 8) == 0;
    closedir(d);
    return n;
}

static int direct_supported(const char *dir)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/odirect-check", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd >= 0)
        close(fd);
    unlink(p);
    return fd >= 0;
}

/* Appends a mixed load (page deltas of varied sizes, commits) with an async
 * flush and a loop turn every few records; checks the LSN order invariants
 * and that a buffered reader sees everything below the flushed LSN. */
static long mixed_load(struct inst *in, int txns, uint64_t *end_out)
{
    static uint8_t val[4096];
    uint64_t end = 0;
    long n = 0;
    for (int t = 0; t < txns; t++) {
        /* Real engine changes (deltas, images, evictions that flush_sync). */
        char k[32];
        snprintf(k, sizeof(k), "key:%05d", t % 500);
        size_t len = 1 + (size_t)(t * 977) % 2000;
        memset(val, 'a' + t % 26, len);
        engine_txn_begin(in->e);
        cr_assert_eq(engine_put(in->e, (const uint8_t *)k, strlen(k), val, len), 0);
        engine_txn_end(in->e);
        cr_assert_eq(wal_append_commit(in->w, (uint64_t)t, &end), 0);
        n++;
        if (t % 5 == 4) {
            wal_flush_async(in->w);
            cr_assert_geq(rd_loop_run_once(&in->loop, 0), 0);
        }
        uint64_t f = wal_flushed_lsn(in->w), wr = wal_written_lsn(in->w), ins = wal_insert_lsn(in->w);
        cr_assert(f <= wr && wr <= ins, "flushed %lx written %lx insert %lx", (unsigned long)f,
                  (unsigned long)wr, (unsigned long)ins);
        if (t % 400 == 399) {
            uint64_t last = 0;
            count_records(in->dir, &last);
            cr_assert_geq(last, f, "a buffered reader sees every flushed byte");
        }
    }
    wal_flush_async(in->w);
    for (int i = 0; i < 10000 && wal_flushed_lsn(in->w) < end; i++) {
        cr_assert_geq(rd_loop_run_once(&in->loop, 100000), 0);
        wal_flush_async(in->w);
    }
    cr_assert_eq(wal_flushed_lsn(in->w), end);
    cr_assert_eq(in->seen_lsn, end);
    *end_out = end;
    return n;
}

static void many_appends_then_recover(int method)
{
    char *dir = make_dir("/tmp");
    struct inst in;
    inst_open(&in, dir, method);
    struct wal_stats st;
    wal_get_stats(in.w, &st);
    int want = method == WAL_SYNC_OPEN_DATASYNC && direct_supported(dir) ? WAL_SYNC_OPEN_DATASYNC
                                                                         : WAL_SYNC_FDATASYNC;
    cr_assert_eq(st.sync_method, (uint32_t)want);
    uint64_t end;
    long n = mixed_load(&in, 6000, &end);
    cr_assert_gt(end / MIB, 5, "several segment switches");
    inst_drain(&in);
    wal_get_stats(in.w, &st);
    cr_assert_gt(st.segments_prepared_async, 0);
    if (want == WAL_SYNC_OPEN_DATASYNC)
        cr_assert_eq(st.fsyncs, 0, "no fdatasync with O_DSYNC writes");
    inst_close(&in);
    uint64_t last = 0;
    cr_assert_eq(count_records(dir, &last), n);
    cr_assert_eq(last, end);
    /* Reopen + recover (with the same method), append more, recover again. */
    inst_open(&in, dir, method);
    cr_assert_eq(wal_insert_lsn(in.w), end);
    uint64_t end2;
    long n2 = mixed_load(&in, 1500, &end2);
    inst_drain(&in);
    inst_close(&in);
    cr_assert_eq(count_records(dir, &last), n + n2);
    cr_assert_eq(last, end2);
    /* And the other method reads the same log. */
    inst_open(&in, dir, method == WAL_SYNC_FDATASYNC ? WAL_SYNC_OPEN_DATASYNC : WAL_SYNC_FDATASYNC);
    cr_assert_eq(wal_insert_lsn(in.w), end2);
    inst_close(&in);
    cr_assert_eq(count_temp_files(dir), 0);
    remove_dir(dir);
}

Test(wal_perf, many_appends_async_flushes_segment_switches_recover_fdatasync)
{
    many_appends_then_recover(WAL_SYNC_FDATASYNC);
}

Test(wal_perf, many_appends_async_flushes_segment_switches_recover_open_datasync)
{
    many_appends_then_recover(WAL_SYNC_OPEN_DATASYNC);
}

static void sync_flush_during_async(int method)
{
    char *dir = make_dir("/tmp");
    struct inst in;
    inst_open(&in, dir, method);
    uint64_t end = 0;
    long n = 0;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 1 + round % 7; i++, n++)
            cr_assert_eq(wal_append_commit(in.w, (uint64_t)n, &end), 0);
        wal_flush_async(in.w);
        for (int i = 0; i < 1 + round % 3; i++, n++)
            cr_assert_eq(wal_append_commit(in.w, (uint64_t)n, &end), 0);
        /* The active buffer starts inside the in-flight write's last block. */
        cr_assert_eq(wal_flush_sync(in.w, end), 0);
        cr_assert_eq(wal_flushed_lsn(in.w), end);
        uint64_t last = 0;
        count_records(dir, &last);
        cr_assert_eq(last, end, "round %d: the sync flush is visible and not undone", round);
        if (round % 2)
            cr_assert_geq(rd_loop_run_once(&in.loop, 0), 0);
    }
    inst_drain(&in);
    cr_assert_eq(wal_flushed_lsn(in.w), end);
    uint64_t last = 0;
    cr_assert_eq(count_records(dir, &last), n);
    cr_assert_eq(last, end);
    inst_close(&in);
    inst_open(&in, dir, method);
    cr_assert_eq(wal_insert_lsn(in.w), end);
    inst_close(&in);
    remove_dir(dir);
}

Test(wal_perf, sync_flush_during_async_flush_fdatasync) { sync_flush_during_async(WAL_SYNC_FDATASYNC); }
Test(wal_perf, sync_flush_during_async_flush_open_datasync) { sync_flush_during_async(WAL_SYNC_OPEN_DATASYNC); }

/* Direct writes rewrite the partial last block: a buffered reader that has
 * that block in its page cache must see the new bytes. */
Test(wal_perf, buffered_readers_see_direct_writes_of_the_same_block)
{
    char *dir = make_dir("/tmp");
    struct inst in;
    inst_open(&in, dir, WAL_SYNC_OPEN_DATASYNC);
    struct wal_sender_cursor *c;
    cr_assert_eq(wal_sender_open(in.w, &c), 0);
    uint64_t from = wal_insert_lsn(in.w), end = 0;
    long total = 0;
    for (int round = 0; round < 50; round++) {
        cr_assert_eq(wal_append_commit(in.w, (uint64_t)round, &end), 0);
        wal_flush_async(in.w);
        while (wal_flush_in_flight(in.w))
            cr_assert_geq(rd_loop_run_once(&in.loop, 100000), 0);
        /* Every round's record lands in the block the previous one read. */
        struct rd_buf out = {0};
        uint64_t first, next;
        int got = wal_sender_read(c, from, wal_flushed_lsn(in.w), 1u << 20, &out, &first, &next);
        cr_assert_eq(got, 1, "round %d: the new record is visible", round);
        cr_assert_eq(next, end);
        rd_buf_free(&out);
        from = next;
        total++;
        uint64_t last = 0;
        cr_assert_eq(count_records(dir, &last), total);
        cr_assert_eq(last, end);
    }
    wal_sender_close(c);
    inst_drain(&in);
    inst_close(&in);
    remove_dir(dir);
}

/* The writer reaches the end of a segment before the background preparation
 * finished (the loop never ran): the segment is created synchronously, the
 * abandoned temp file removed; nothing is lost. */
static void fallback_when_not_ready(int method)
{
    char *dir = make_dir("/tmp");
    struct inst in;
    inst_open(&in, dir, method);
    uint64_t end = 0;
    long n = 0;
    while (!wal_prep_in_flight(in.w)) {
        cr_assert_eq(wal_append_commit(in.w, (uint64_t)n++, &end), 0);
        cr_assert_lt(end, MIB);
    }
    cr_assert_eq(wal_prep_segno(in.w), 1);
    while (end < MIB + 4096)
        cr_assert_eq(wal_append_commit(in.w, (uint64_t)n++, &end), 0);
    struct wal_stats st;
    wal_get_stats(in.w, &st);
    cr_assert_geq(st.segments_created_sync, 1);
    cr_assert(!wal_prep_in_flight(in.w) || wal_prep_segno(in.w) == 2);
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_drain(&in);
    inst_close(&in);
    cr_assert_eq(count_temp_files(dir), 0);
    uint64_t last;
    cr_assert_eq(count_records(dir, &last), n);
    cr_assert_eq(last, end);
    inst_open(&in, dir, method);
    cr_assert_eq(wal_insert_lsn(in.w), end);
    inst_close(&in);
    remove_dir(dir);
}

Test(wal_perf, segment_not_ready_falls_back_to_synchronous_creation_fdatasync)
{
    fallback_when_not_ready(WAL_SYNC_FDATASYNC);
}
Test(wal_perf, segment_not_ready_falls_back_to_synchronous_creation_open_datasync)
{
    fallback_when_not_ready(WAL_SYNC_OPEN_DATASYNC);
}

/* A process dies while the next segment is being prepared: its temp file
 * (partly zero-filled, with a valid header) is never taken for a segment,
 * is removed at the next open, and the log continues across that segment. */
static void crash_during_preparation(int method)
{
    char *dir = make_dir("/tmp");
    struct inst in;
    inst_open(&in, dir, method);
    inst_close(&in);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct inst c;
        inst_open(&c, dir, method);
        uint64_t end = 0;
        long n = 0;
        while (!wal_prep_in_flight(c.w))
            wal_append_commit(c.w, (uint64_t)n++, &end);
        /* Let it get part-way (a chunk or two), then flush and die. */
        rd_loop_run_once(&c.loop, 100000);
        if (wal_flush_sync(c.w, end) != 0 || !wal_prep_in_flight(c.w))
            _exit(3);
        FILE *f = fopen("/dev/null", "w");
        (void)f;
        char p[600];
        snprintf(p, sizeof(p), "%s/expect", dir);
        FILE *e = fopen(p, "w");
        fprintf(e, "%ld %lu\n", n, (unsigned long)end);
        fclose(e);
        _exit(0); /* a crash: no close, temp file left */
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    char p[600];
    snprintf(p, sizeof(p), "%s/expect", dir);
    FILE *e = fopen(p, "r");
    long n;
    unsigned long end;
    cr_assert_eq(fscanf(e, "%ld %lu", &n, &end), 2);
    fclose(e);
    cr_assert_eq(count_temp_files(dir), 1, "the half-prepared segment is left under its temp name");
    char seg1[600], name[32];
    wal_seg_name(name, sizeof(name), 1, 1);
    snprintf(seg1, sizeof(seg1), "%s/wal/%s", dir, name);
    struct stat sb;
    cr_assert_neq(stat(seg1, &sb), 0, "segment 1 does not exist");
    /* Recovery: everything flushed is there, the temp file is gone, and
     * appending continues into segment 1 (prepared again). */
    inst_open(&in, dir, method);
    cr_assert_eq(count_temp_files(dir), 0);
    cr_assert_eq(wal_insert_lsn(in.w), end);
    uint64_t end2;
    long n2 = mixed_load(&in, 1500, &end2);
    cr_assert_gt(end2, 2 * MIB);
    inst_drain(&in);
    inst_close(&in);
    uint64_t last;
    cr_assert_eq(count_records(dir, &last), n + n2);
    cr_assert_eq(last, end2);
    remove_dir(dir);
}

Test(wal_perf, crash_during_segment_preparation_fdatasync) { crash_during_preparation(WAL_SYNC_FDATASYNC); }
Test(wal_perf, crash_during_segment_preparation_open_datasync)
{
    crash_during_preparation(WAL_SYNC_OPEN_DATASYNC);
}

/* tmpfs refuses O_DIRECT: open_datasync falls back to fdatasync. */
Test(wal_perf, open_datasync_falls_back_where_o_direct_is_refused)
{
    struct stat sb;
    if (stat("/dev/shm", &sb) != 0)
        cr_skip_test("no /dev/shm");
    char *dir = make_dir("/dev/shm");
    struct inst in;
    inst_open(&in, dir, WAL_SYNC_OPEN_DATASYNC);
    struct wal_stats st;
    wal_get_stats(in.w, &st);
    cr_assert_eq(st.sync_method, direct_supported(dir) ? WAL_SYNC_OPEN_DATASYNC : WAL_SYNC_FDATASYNC);
    uint64_t end;
    long n = mixed_load(&in, 300, &end);
    inst_drain(&in);
    inst_close(&in);
    uint64_t last;
    cr_assert_eq(count_records(dir, &last), n);
    remove_dir(dir);
}

/* RD_WAL_SYNC_METHOD chooses when the option is AUTO. */
Test(wal_perf, environment_variable_chooses_the_method)
{
    char *dir = make_dir("/tmp");
    setenv("RD_WAL_SYNC_METHOD", "open_datasync", 1);
    struct inst in;
    inst_open(&in, dir, WAL_SYNC_AUTO);
    struct wal_stats st;
    wal_get_stats(in.w, &st);
    cr_assert_eq(st.sync_method, direct_supported(dir) ? WAL_SYNC_OPEN_DATASYNC : WAL_SYNC_FDATASYNC);
    inst_close(&in);
    setenv("RD_WAL_SYNC_METHOD", "fdatasync", 1);
    inst_open(&in, dir, WAL_SYNC_AUTO);
    wal_get_stats(in.w, &st);
    cr_assert_eq(st.sync_method, WAL_SYNC_FDATASYNC);
    inst_close(&in);
    unsetenv("RD_WAL_SYNC_METHOD");
    remove_dir(dir);
}
