/*
 * test_wal.c — the WAL on its own: record and segment formats, control file,
 * torn tail vs corruption, group commit through a real io_uring loop, segment
 * switches. Engine-level behaviour (replay, FPIs, atomic transactions) is in
 * test_wal_engine.c. Recovery here uses a real engine on an empty data file,
 * with logs holding only WAL-level records (commits).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/loop.h"
#include "common/util.h"
#include "engine/engine.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

#define MIB (1024u * 1024u)

/* ---------------------------------------------------------------- helpers */

static char *make_dir(void)
{
    char *d = strdup("/tmp/rd-test-wal-XXXXXX");
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

static struct wal *open_wal(const char *dir, uint64_t seg_size, struct rd_loop *loop)
{
    struct wal_options o = {.dir = dir, .segment_size_bytes = seg_size, .loop = loop};
    struct wal *w = NULL;
    int rc = wal_open(&o, &w);
    cr_assert_eq(rc, 0, "wal_open: %s", rd_strerror(rc));
    return w;
}

struct inst {
    struct wal *w;
    struct engine *e;
};

/* Opens WAL + engine and recovers; returns the wal_recover result. */
static int inst_open(struct inst *in, const char *dir, uint64_t seg_size)
{
    in->w = open_wal(dir, seg_size, NULL);
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(in->w)};
    int rc = engine_open(&eo, &in->e);
    cr_assert_eq(rc, 0, "engine_open: %s", rd_strerror(rc));
    return wal_recover(in->w, in->e);
}

/* A crash: nothing more is flushed, memory is dropped. */
static void inst_crash(struct inst *in)
{
    cr_assert_eq(wal_close(in->w), 0);
    cr_assert_eq(engine_close(in->e), 0);
}

static void seg_file(const char *dir, uint64_t segno, char *out, size_t len)
{
    char name[32];
    wal_seg_name(name, sizeof(name), 1, segno);
    snprintf(out, len, "%s/wal/%s", dir, name);
}

static void patch_file(const char *path, uint64_t off, const void *bytes, size_t len)
{
    int fd = open(path, O_WRONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(pwrite(fd, bytes, len, (off_t)off), (ssize_t)len);
    cr_assert_eq(close(fd), 0);
}

/* Reads the whole log from the start; returns records read, *stop the last result. */
static long count_records(const char *dir, int *stop, uint64_t *last_end, long *switches)
{
    struct wal_reader *r;
    cr_assert_eq(wal_reader_open(dir, 0, &r), 0);
    struct wal_record rec;
    long n = 0;
    int rc;
    if (switches)
        *switches = 0;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        n++;
        if (last_end)
            *last_end = rec.end_lsn;
        if (switches && rec.type == WAL_REC_SWITCH)
            (*switches)++;
    }
    *stop = rc;
    wal_reader_close(r);
    return n;
}

/* ---------------------------------------------------------------- record format */

Test(wal, record_encode_decode_round_trip)
{
    uint8_t body[100], buf[256];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 7);
    size_t n = wal_record_encode(buf, sizeof(buf), 0x1234, WAL_REC_PAGE_DELTA, ENGINE_REC_FLAG_MTR_END, 42,
                                 body, sizeof(body));
    cr_assert_eq(n, 136); /* 32 + 100 = 132, aligned to 8 */
    struct wal_record rec;
    cr_assert_eq(wal_record_decode(buf, n, &rec), 136);
    cr_assert_eq(rec.type, WAL_REC_PAGE_DELTA);
    cr_assert_eq(rec.flags, ENGINE_REC_FLAG_MTR_END);
    cr_assert_eq(rec.page_id, 42);
    cr_assert_eq(rec.prev_lsn, 0x1234);
    cr_assert_eq(rec.body_len, sizeof(body));
    cr_assert_eq(memcmp(rec.body, body, sizeof(body)), 0);
    cr_assert_eq(buf[132] | buf[133] | buf[134] | buf[135], 0, "padding is zero");
}

Test(wal, decode_rejects_bad_checksum)
{
    uint8_t body[16] = {1, 2, 3}, buf[64];
    size_t n = wal_record_encode(buf, sizeof(buf), 8, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    struct wal_record rec;
    cr_assert_eq(wal_record_decode(buf, n, &rec), 48);
    buf[40] ^= 1; /* body */
    cr_assert_eq(wal_record_decode(buf, n, &rec), RD_ECORRUPT);
    buf[40] ^= 1;
    buf[WAL_RH_CSUM] ^= 0x80; /* the checksum itself */
    cr_assert_eq(wal_record_decode(buf, n, &rec), RD_ECORRUPT);
}

Test(wal, decode_rejects_truncated_record)
{
    uint8_t body[200] = {0}, buf[256];
    size_t n = wal_record_encode(buf, sizeof(buf), 0, WAL_REC_PAGE_IMAGE, 0, 3, body, sizeof(body));
    struct wal_record rec;
    for (size_t avail = 0; avail < n; avail++)
        cr_assert_eq(wal_record_decode(buf, avail, &rec), RD_ECORRUPT, "avail %zu", avail);
    cr_assert_eq(wal_record_decode(buf, n, &rec), (int)n);
}

static void reseal(uint8_t *buf)
{
    uint32_t total = rd_get_u32le(buf);
    rd_put_u64le(buf + WAL_RH_CSUM, rd_checksum64_2(buf, WAL_RH_CSUM, buf + 32, total - 32, RD_SEED_WAL));
}

Test(wal, decode_rejects_bad_length)
{
    uint8_t body[16] = {0}, buf[20000];
    memset(buf, 0, sizeof(buf));
    wal_record_encode(buf, sizeof(buf), 0, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    struct wal_record rec;
    uint32_t bad[] = {0, 1, 31, 40 /* commit body must be 16 */, 32 + WAL_BODY_MAX + 8, 0xFFFFFFFFu};
    for (size_t i = 0; i < RD_ARRAY_LEN(bad); i++) {
        rd_put_u32le(buf, bad[i]);
        if (bad[i] >= 32 && bad[i] < sizeof(buf))
            reseal(buf);
        cr_assert_eq(wal_record_decode(buf, sizeof(buf), &rec), RD_ECORRUPT, "length %u", bad[i]);
    }
}

Test(wal, decode_rejects_nonzero_reserved_fields_and_unknown_type)
{
    uint8_t body[16] = {0}, buf[64];
    struct wal_record rec;
    size_t offs[] = {WAL_RH_RSV1, WAL_RH_RSV1 + 1, WAL_RH_RSV2, WAL_RH_RSV2 + 3, WAL_RH_FLAGS};
    for (size_t i = 0; i < RD_ARRAY_LEN(offs); i++) {
        size_t n = wal_record_encode(buf, sizeof(buf), 0, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
        buf[offs[i]] = 0x40;
        reseal(buf);
        cr_assert_eq(wal_record_decode(buf, n, &rec), RD_ECORRUPT, "offset %zu", offs[i]);
    }
    size_t n = wal_record_encode(buf, sizeof(buf), 0, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    buf[WAL_RH_TYPE] = 99;
    reseal(buf);
    cr_assert_eq(wal_record_decode(buf, n, &rec), RD_ECORRUPT);
}

Test(wal, segment_header_round_trip_and_rejects_damage)
{
    struct wal_seg_header h = {1, 3, 77, 16 * MIB, 0xABCDEF}, g;
    uint8_t b[WAL_SEG_HDR_SIZE];
    wal_seg_header_encode(b, &h);
    cr_assert_eq(wal_seg_header_decode(b, sizeof(b), &g, NULL), 0);
    cr_assert_eq(g.timeline, 3);
    cr_assert_eq(g.segno, 77);
    cr_assert_eq(g.segment_size_bytes, 16 * MIB);
    cr_assert_eq(g.system_id, 0xABCDEF);
    for (size_t i = 0; i < sizeof(b); i++) {
        b[i] ^= 0x10;
        cr_assert_neq(wal_seg_header_decode(b, sizeof(b), &g, NULL), 0, "byte %zu", i);
        b[i] ^= 0x10;
    }
    cr_assert_eq(wal_seg_header_decode(b, 63, &g, NULL), RD_ECORRUPT);
}

Test(wal, segment_names_are_timeline_and_segment_number_in_hex)
{
    char name[32];
    wal_seg_name(name, sizeof(name), 1, 0x2A);
    cr_assert_str_eq(name, "00000001000000000000002A");
    uint32_t tl;
    uint64_t s;
    cr_assert_eq(wal_seg_name_parse(name, &tl, &s), 0);
    cr_assert_eq(tl, 1);
    cr_assert_eq(s, 0x2A);
    cr_assert_neq(wal_seg_name_parse("control", &tl, &s), 0);
    cr_assert_neq(wal_seg_name_parse("00000001000000000000002a", &tl, &s), 0);
}

/* ---------------------------------------------------------------- control file */

Test(wal, control_file_round_trips_and_rejects_corruption)
{
    char *dir = make_dir();
    struct wal_control c = {0x1122334455667788ull, 2, WAL_STATE_SHUT_DOWN, 1000, 900, 16 * MIB, 12345}, d;
    cr_assert_eq(wal_control_write(dir, &c), 0);
    cr_assert_eq(wal_control_read(dir, &d), 0);
    cr_assert_eq(memcmp(&c, &d, sizeof(c)), 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/control", dir);
    patch_file(path, 20, "\x01", 1);
    cr_assert_eq(wal_control_read(dir, &d), RD_ECORRUPT);
    cr_assert_eq(wal_control_write(dir, &c), 0);
    patch_file(path, 8, "\x02", 1);
    cr_assert_eq(wal_control_read(dir, &d), RD_EVERSION);
    cr_assert_eq(truncate(path, 100), 0);
    cr_assert_eq(wal_control_read(dir, &d), RD_ECORRUPT);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(wal_control_read(dir, &d), -ENOENT);
    remove_dir(dir);
}

Test(wal, open_initialises_a_new_log_with_control_and_first_segment)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, 0), 0);
    struct wal_control c;
    cr_assert_eq(wal_control_read(dir, &c), 0);
    cr_assert_eq(c.timeline, 1);
    cr_assert_eq(c.state, WAL_STATE_IN_PRODUCTION);
    cr_assert_eq(c.redo_lsn, WAL_SEG_HDR_SIZE);
    cr_assert_eq(c.segment_size_bytes, WAL_SEGMENT_SIZE_DEFAULT);
    cr_assert_neq(c.system_id, 0);
    char seg[600];
    seg_file(dir, 0, seg, sizeof(seg));
    struct stat sb;
    cr_assert_eq(stat(seg, &sb), 0);
    cr_assert_eq((uint64_t)sb.st_size, WAL_SEGMENT_SIZE_DEFAULT);
    cr_assert_eq(wal_insert_lsn(in.w), WAL_SEG_HDR_SIZE);
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal, open_refuses_segments_without_a_control_file)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    inst_crash(&in);
    char path[600];
    snprintf(path, sizeof(path), "%s/control", dir);
    cr_assert_eq(unlink(path), 0);
    struct wal_options o = {.dir = dir};
    struct wal *w;
    cr_assert_eq(wal_open(&o, &w), RD_ECORRUPT);
    remove_dir(dir);
}

/* ---------------------------------------------------------------- torn tail and corruption */

static uint64_t append_commits(struct wal *w, int n)
{
    uint64_t end = 0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(wal_append_commit(w, (uint64_t)i + 1, &end), 0);
    return end;
}

Test(wal, torn_tail_is_truncated_and_appending_continues_after_restart)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    uint64_t end = append_commits(in.w, 10);
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_crash(&in);

    /* Tear the last record (commit records are 48 bytes) and add garbage after it. */
    char seg[600];
    seg_file(dir, 0, seg, sizeof(seg));
    uint64_t last = end - 48;
    patch_file(seg, last + 40, "\xde\xad\xbe\xef", 4);
    patch_file(seg, end + 8, "garbage!", 8);

    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    cr_assert_eq(wal_insert_lsn(in.w), last, "log ends before the torn record");
    uint64_t end2 = append_commits(in.w, 5);
    cr_assert_eq(wal_flush_sync(in.w, end2), 0);
    inst_crash(&in);

    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    cr_assert_eq(wal_insert_lsn(in.w), end2);
    inst_crash(&in);
    int stop;
    uint64_t last_end = 0;
    cr_assert_eq(count_records(dir, &stop, &last_end, NULL), 14);
    cr_assert_eq(stop, 0);
    cr_assert_eq(last_end, end2);
    remove_dir(dir);
}

Test(wal, truncated_segment_file_is_a_torn_tail)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    uint64_t end = append_commits(in.w, 3);
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_crash(&in);
    char seg[600];
    seg_file(dir, 0, seg, sizeof(seg));
    cr_assert_eq(truncate(seg, (off_t)(end - 20)), 0); /* cuts the last record */
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    cr_assert_eq(wal_insert_lsn(in.w), end - 48);
    uint64_t end2 = append_commits(in.w, 1);
    cr_assert_eq(wal_flush_sync(in.w, end2), 0);
    inst_crash(&in);
    int stop;
    cr_assert_eq(count_records(dir, &stop, NULL, NULL), 3);
    remove_dir(dir);
}

Test(wal, corruption_before_valid_records_refuses_to_start)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    uint64_t end = append_commits(in.w, 20);
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_crash(&in);
    char seg[600];
    seg_file(dir, 0, seg, sizeof(seg));
    patch_file(seg, WAL_SEG_HDR_SIZE + 48 * 3 + 36, "\x55", 1); /* body of the 4th record */

    int stop;
    cr_assert_eq(count_records(dir, &stop, NULL, NULL), 3);
    cr_assert_eq(stop, RD_ECORRUPT);

    struct wal_reader *r;
    cr_assert_eq(wal_reader_open(dir, 0, &r), 0);
    struct wal_record rec;
    while (wal_reader_next(r, &rec) == 1)
        ;
    struct wal_reader_stop s;
    wal_reader_stop_info(r, &s);
    cr_assert(s.corrupt);
    cr_assert_eq(s.offset, WAL_SEG_HDR_SIZE + 48 * 3);
    cr_assert_eq(s.valid_offset, WAL_SEG_HDR_SIZE + 48 * 4);
    cr_assert_str_eq(s.path, s.valid_path);
    wal_reader_close(r);

    cr_assert_eq(inst_open(&in, dir, MIB), RD_ECORRUPT);
    inst_crash(&in);
    /* Nothing was truncated: the evidence is still there. */
    cr_assert_eq(count_records(dir, &stop, NULL, NULL), 3);
    cr_assert_eq(stop, RD_ECORRUPT);
    remove_dir(dir);
}

Test(wal, corruption_is_detected_when_valid_records_are_in_a_later_segment)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    uint64_t end = append_commits(in.w, 30000); /* 48 bytes each: spills into segment 1 */
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    cr_assert_geq(end, MIB + 1000);
    inst_crash(&in);
    char seg[600];
    seg_file(dir, 0, seg, sizeof(seg));
    /* Wipe the second half of segment 0: the log "ends" there, but segment 1 holds records. */
    uint8_t *zero = calloc(1, MIB / 2);
    patch_file(seg, MIB / 2, zero, MIB / 2);
    free(zero);
    cr_assert_eq(inst_open(&in, dir, MIB), RD_ECORRUPT);
    inst_crash(&in);
    remove_dir(dir);
}

/* ---------------------------------------------------------------- group commit */

struct flushed_seen {
    int calls;
    uint64_t lsn;
};

static void on_flushed(void *arg, uint64_t lsn)
{
    struct flushed_seen *s = arg;
    s->calls++;
    s->lsn = lsn;
}

Test(wal, async_group_commit_makes_a_batch_durable_with_one_flush)
{
    char *dir = make_dir();
    struct rd_loop loop;
    char why[256];
    cr_assert_eq(rd_loop_init(&loop, 64, why, sizeof(why)), 0, "%s", why);
    struct flushed_seen seen = {0};
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .loop = &loop,
                            .on_flushed = on_flushed, .on_flushed_arg = &seen};
    struct wal *w;
    cr_assert_eq(wal_open(&o, &w), 0);
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine *e;
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(w)};
    cr_assert_eq(engine_open(&eo, &e), 0);
    cr_assert_eq(wal_recover(w, e), 0);

    uint64_t end = append_commits(w, 100);
    cr_assert_eq(wal_unflushed_bytes(w), 100 * 48);
    wal_flush_async(w);
    cr_assert(wal_flush_in_flight(w));
    cr_assert_eq(wal_unflushed_bytes(w), 0);
    /* Appends during the flush go to the other buffer and wait for the next one. */
    uint64_t end2 = append_commits(w, 7);
    wal_flush_async(w); /* no-op: one flush at a time */
    for (int i = 0; i < 1000 && seen.calls == 0; i++)
        cr_assert_geq(rd_loop_run_once(&loop, 100000), 0);
    cr_assert_eq(seen.calls, 1);
    cr_assert_eq(seen.lsn, end);
    cr_assert_eq(wal_flushed_lsn(w), end);
    cr_assert(!wal_flush_in_flight(w));
    struct wal_stats st;
    wal_get_stats(w, &st);
    cr_assert_eq(st.flushes, 1);
    cr_assert_eq(st.group_commits_max, 100);
    cr_assert_eq(st.commits, 107);

    wal_flush_async(w);
    for (int i = 0; i < 1000 && seen.calls == 1; i++)
        cr_assert_geq(rd_loop_run_once(&loop, 100000), 0);
    cr_assert_eq(seen.lsn, end2);
    cr_assert_eq(wal_flushed_lsn(w), end2);

    /* A synchronous flush is reported to on_flushed at the next wal_flush_async. */
    uint64_t end3 = append_commits(w, 1);
    cr_assert_eq(wal_flush_sync(w, end3), 0);
    cr_assert_eq(wal_flushed_lsn(w), end3);
    wal_flush_async(w);
    cr_assert_eq(seen.calls, 3);
    cr_assert_eq(seen.lsn, end3);

    cr_assert_eq(wal_close(w), 0);
    cr_assert_eq(engine_close(e), 0);
    rd_loop_destroy(&loop);
    int stop;
    cr_assert_eq(count_records(dir, &stop, NULL, NULL), 108);
    remove_dir(dir);
}

Test(wal, sync_flush_during_async_flush_covers_both_buffers)
{
    char *dir = make_dir();
    struct rd_loop loop;
    char why[256];
    cr_assert_eq(rd_loop_init(&loop, 64, why, sizeof(why)), 0, "%s", why);
    struct flushed_seen seen = {0};
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .loop = &loop,
                            .on_flushed = on_flushed, .on_flushed_arg = &seen};
    struct wal *w;
    cr_assert_eq(wal_open(&o, &w), 0);
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine *e;
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(w)};
    cr_assert_eq(engine_open(&eo, &e), 0);
    cr_assert_eq(wal_recover(w, e), 0);
    append_commits(w, 50);
    wal_flush_async(w);
    uint64_t end = append_commits(w, 50);
    cr_assert_eq(wal_flush_sync(w, end), 0);
    cr_assert_eq(wal_flushed_lsn(w), end);
    while (wal_flush_in_flight(w))
        cr_assert_geq(rd_loop_run_once(&loop, 100000), 0);
    cr_assert_eq(wal_flushed_lsn(w), end, "a late completion never moves flushed back");
    cr_assert_eq(seen.lsn, end);
    cr_assert_eq(wal_close(w), 0);
    cr_assert_eq(engine_close(e), 0);
    rd_loop_destroy(&loop);
    remove_dir(dir);
}

/* ---------------------------------------------------------------- segments */

Test(wal, records_switch_segments_and_never_span_them)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    struct engine_sink sink = wal_engine_sink(in.w);
    uint8_t body[WAL_BODY_MAX];
    memset(body, 0xA5, sizeof(body));
    uint64_t end = 0;
    long n = 0;
    /* Mixed sizes so segment ends fall both at SWITCH records and in < 32-byte tails. */
    for (int i = 0; i < 1500; i++) {
        size_t len = 1 + (size_t)(i * 977) % 8000;
        cr_assert_eq(sink.emit(sink.ctx, (uint32_t)i, WAL_REC_PAGE_DELTA, 0, body, len, &end), 0);
        n++;
        if (i % 10 == 9) {
            cr_assert_eq(wal_append_commit(in.w, (uint64_t)i, &end), 0);
            n++;
        }
    }
    uint64_t start;
    cr_assert_eq(sink.emit(sink.ctx, 1, WAL_REC_PAGE_DELTA, 0, body, WAL_BODY_MAX + 1, &start),
                 RD_ETOOBIG);
    cr_assert_gt(end / MIB, 4, "several segments");
    cr_assert_eq(wal_flush_sync(in.w, end), 0);
    inst_crash(&in);

    struct wal_reader *r;
    cr_assert_eq(wal_reader_open(dir, 0, &r), 0);
    struct wal_record rec;
    long got = 0, switches = 0;
    uint64_t prev = 0;
    int rc;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        cr_assert_eq(rec.lsn / MIB, (rec.end_lsn - 1) / MIB, "record at %lx spans segments",
                     (unsigned long)rec.lsn);
        cr_assert_geq(rec.lsn % MIB, WAL_SEG_HDR_SIZE);
        cr_assert_eq(rec.lsn % 8, 0);
        if (got > 0)
            cr_assert_eq(rec.prev_lsn, prev);
        prev = rec.lsn;
        if (rec.type == WAL_REC_SWITCH)
            switches++;
        else
            got++;
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(got, n);
    cr_assert_gt(switches, 0);
    cr_assert_eq(prev + 48, end);
    wal_reader_close(r);

    /* Reading from an LSN in the middle works too. */
    cr_assert_eq(wal_reader_open(dir, 2 * MIB, &r), 0);
    cr_assert_eq(wal_reader_next(r, &rec), 1);
    cr_assert_eq(rec.lsn, 2 * MIB + WAL_SEG_HDR_SIZE);
    wal_reader_close(r);
    remove_dir(dir);
}

Test(wal, the_next_segment_is_prepared_before_it_is_needed)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    char seg1[600];
    seg_file(dir, 1, seg1, sizeof(seg1));
    struct stat sb;
    cr_assert_neq(stat(seg1, &sb), 0);
    append_commits(in.w, (int)(MIB / 2 / 48) + 10);
    cr_assert_eq(stat(seg1, &sb), 0, "segment 1 exists once segment 0 is half full");
    cr_assert_eq((uint64_t)sb.st_size, MIB);
    inst_crash(&in);
    /* After the crash, the prepared but empty segment is not a problem. */
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal, checkpoint_writes_control_and_removes_old_segments)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    uint64_t end = append_commits(in.w, 60000); /* ~2.7 segments */
    cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
    struct wal_control c;
    cr_assert_eq(wal_control_read(dir, &c), 0);
    cr_assert_eq(c.redo_lsn, end);
    cr_assert_geq(c.checkpoint_lsn, end);
    cr_assert_eq(wal_flushed_lsn(in.w), wal_insert_lsn(in.w));
    char seg0[600];
    seg_file(dir, 0, seg0, sizeof(seg0));
    struct stat sb;
    cr_assert_neq(stat(seg0, &sb), 0, "segment 0 removed");
    cr_assert_eq(wal_needs_checkpoint(in.w), 0);
    cr_assert_eq(wal_shutdown(in.w, in.e), 0);
    cr_assert_eq(wal_control_read(dir, &c), 0);
    cr_assert_eq(c.state, WAL_STATE_SHUT_DOWN);
    inst_crash(&in);
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    cr_assert_eq(wal_control_read(dir, &c), 0);
    cr_assert_eq(c.state, WAL_STATE_IN_PRODUCTION);
    uint64_t e2 = append_commits(in.w, 1);
    cr_assert_gt(e2, end);
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal, needs_checkpoint_after_configured_bytes)
{
    char *dir = make_dir();
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .checkpoint_wal_bytes = 4096};
    struct wal *w;
    cr_assert_eq(wal_open(&o, &w), 0);
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine *e;
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(w)};
    cr_assert_eq(engine_open(&eo, &e), 0);
    cr_assert_eq(wal_recover(w, e), 0);
    cr_assert_eq(wal_needs_checkpoint(w), 0);
    append_commits(w, 10);
    cr_assert_eq(wal_needs_checkpoint(w), 0);
    append_commits(w, 100);
    cr_assert_eq(wal_needs_checkpoint(w), 1);
    cr_assert_eq(wal_checkpoint(w, e), 0);
    cr_assert_eq(wal_needs_checkpoint(w), 0);
    cr_assert_eq(wal_close(w), 0);
    cr_assert_eq(engine_close(e), 0);
    remove_dir(dir);
}

Test(wal, checkpoint_keeps_segments_at_or_above_the_keep_lsn)
{
    char *dir = make_dir();
    struct inst in;
    cr_assert_eq(inst_open(&in, dir, MIB), 0);
    wal_set_keep_lsn(in.w, WAL_SEG_HDR_SIZE); /* a replica still needs everything */
    append_commits(in.w, 60000);
    cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
    char seg0[600];
    seg_file(dir, 0, seg0, sizeof(seg0));
    struct stat sb;
    cr_assert_eq(stat(seg0, &sb), 0, "segment 0 kept for the keep LSN");
    wal_set_keep_lsn(in.w, 0);
    append_commits(in.w, 1);
    cr_assert_eq(wal_checkpoint(in.w, in.e), 0);
    cr_assert_neq(stat(seg0, &sb), 0, "removed once released");
    inst_crash(&in);
    remove_dir(dir);
}

Test(wal, close_with_a_flush_in_flight_is_released_by_its_completion)
{
    char *dir = make_dir();
    struct rd_loop loop;
    char why[256];
    cr_assert_eq(rd_loop_init(&loop, 64, why, sizeof(why)), 0, "%s", why);
    struct flushed_seen seen = {0};
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .loop = &loop,
                            .on_flushed = on_flushed, .on_flushed_arg = &seen};
    struct wal *w;
    cr_assert_eq(wal_open(&o, &w), 0);
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine *e;
    struct engine_options eo = {.data_path = data, .cache_pages = 64, .sink = wal_engine_sink(w)};
    cr_assert_eq(engine_open(&eo, &e), 0);
    cr_assert_eq(wal_recover(w, e), 0);
    append_commits(w, 10);
    wal_flush_async(w);
    cr_assert_eq(wal_close(w), 0);
    cr_assert_eq(engine_close(e), 0);
    uint64_t before = loop.cqes;
    for (int i = 0; i < 100 && loop.cqes < before + 2; i++)
        cr_assert_geq(rd_loop_run_once(&loop, 100000), 0);
    cr_assert_eq(loop.cqes, before + 2, "write + fsync completed");
    cr_assert_eq(seen.calls, 0, "no callback after close");
    rd_loop_destroy(&loop);
    int stop;
    cr_assert_eq(count_records(dir, &stop, NULL, NULL), 10);
    remove_dir(dir);
}
