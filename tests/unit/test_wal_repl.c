/*
 * test_wal_repl.c — the WAL's replication side (classic mode): a replica log
 * fed through wal_sender_read / wal_append_encoded stays byte-identical to the
 * primary's, validation of shipped records, the sender's bounds, written LSN,
 * truncation, timelines (switch, follow, history, segment naming), restart
 * points and initialisation from a base backup.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    char *d = strdup("/tmp/rd-test-walr-XXXXXX");
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

static int inst_open_rc(struct inst *in, const char *dir, struct rd_loop *loop)
{
    struct wal_options o = {.dir = dir, .segment_size_bytes = MIB, .loop = loop};
    int rc = wal_open(&o, &in->w);
    cr_assert_eq(rc, 0, "wal_open: %s", rd_strerror(rc));
    char data[600];
    snprintf(data, sizeof(data), "%s/data.rdb", dir);
    struct engine_options eo = {.data_path = data, .cache_pages = 256, .sink = wal_engine_sink(in->w)};
    rc = engine_open(&eo, &in->e);
    cr_assert_eq(rc, 0, "engine_open: %s", rd_strerror(rc));
    return wal_recover(in->w, in->e);
}

static void inst_open(struct inst *in, const char *dir)
{
    int rc = inst_open_rc(in, dir, NULL);
    cr_assert_eq(rc, 0, "wal_recover: %s", rd_strerror(rc));
}

static void inst_close(struct inst *in)
{
    cr_assert_eq(wal_close(in->w), 0);
    cr_assert_eq(engine_close(in->e), 0);
}

static void key_of(int i, char *k, size_t len) { snprintf(k, len, "key-%06d", i); }

static uint64_t put_commit(struct inst *in, int i, size_t vlen)
{
    char k[32];
    uint8_t v[4096];
    key_of(i, k, sizeof(k));
    for (size_t j = 0; j < vlen; j++)
        v[j] = (uint8_t)(i * 13 + (int)j);
    engine_txn_begin(in->e);
    int rc = engine_put(in->e, (const uint8_t *)k, strlen(k), v, vlen);
    engine_txn_end(in->e);
    cr_assert_eq(rc, 0, "engine_put: %s", rd_strerror(rc));
    uint64_t end;
    cr_assert_eq(wal_append_commit(in->w, (uint64_t)i, &end), 0);
    return end;
}

static int has_key(struct inst *in, int i)
{
    char k[32];
    key_of(i, k, sizeof(k));
    int rc = engine_exists(in->e, (const uint8_t *)k, strlen(k));
    cr_assert_geq(rc, 0);
    return rc;
}

/* The primary's system id, from its control file. */
static uint64_t sysid_of(const char *dir)
{
    struct wal_control c;
    cr_assert_eq(wal_control_read(dir, &c), 0);
    return c.system_id;
}

struct stream_stats {
    uint64_t records, switches, images, commits, checkpoints, timelines;
    uint64_t last_tl_lsn;
    uint32_t last_tl_new;
};

/* Ships everything durable on the primary from *from to the replica, record
 * by record, in messages of at most max_bytes; applies page records to the
 * replica's engine (if any). Updates *from. */
static void stream(struct inst *p, struct inst *r, uint64_t *from, size_t max_bytes, struct stream_stats *ss)
{
    struct wal_sender_cursor *c;
    cr_assert_eq(wal_sender_open(p->w, &c), 0);
    struct rd_buf out = {0};
    for (;;) {
        uint64_t first, next;
        out.len = 0;
        int n = wal_sender_read(c, *from, wal_flushed_lsn(p->w), max_bytes, &out, &first, &next);
        cr_assert_geq(n, 0, "wal_sender_read: %s", rd_strerror(n));
        if (n == 0)
            break;
        uint64_t lsn = first;
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            uint64_t end;
            size_t used;
            int rc = wal_append_encoded(r->w, out.data + off, out.len - off, lsn, &end, &used);
            cr_assert_eq(rc, 0, "wal_append_encoded at %lx: %s", (unsigned long)lsn, rd_strerror(rc));
            struct wal_record rec;
            cr_assert_gt(wal_record_decode(out.data + off, out.len - off, &rec), 0);
            ss->records++;
            ss->switches += rec.type == WAL_REC_SWITCH;
            ss->images += rec.type == WAL_REC_PAGE_IMAGE;
            ss->commits += rec.type == WAL_REC_COMMIT;
            ss->checkpoints += rec.type == WAL_REC_CHECKPOINT;
            if (rec.type == WAL_REC_TIMELINE) {
                ss->timelines++;
                ss->last_tl_lsn = wal_next_record_lsn(lsn, MIB);
                ss->last_tl_new = rd_get_u32le(rec.body);
            }
            if (r->e != NULL && (rec.type == WAL_REC_PAGE_DELTA || rec.type == WAL_REC_PAGE_IMAGE))
                cr_assert_eq(engine_redo(r->e, rec.page_id, rec.type, rec.body, rec.body_len, end), 0);
            off += used;
            lsn = end;
        }
        cr_assert_eq(off, out.len);
        cr_assert_eq(lsn, next);
        *from = next;
    }
    rd_buf_free(&out);
    wal_sender_close(c);
    if (r->e != NULL)
        cr_assert_eq(engine_reload_meta(r->e), 0);
    cr_assert_eq(wal_flush_sync(r->w, wal_insert_lsn(r->w)), 0);
}

static long read_file(const char *path, uint8_t **out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    *out = malloc((size_t)sb.st_size + 1);
    long n = wal_pread_all(fd, *out, (size_t)sb.st_size, 0);
    close(fd);
    return n;
}

/* Every segment file (and history file) of a is in b with the same bytes; returns how many. */
static int compare_wal_dirs(const char *a, const char *b)
{
    char da[600];
    snprintf(da, sizeof(da), "%s/wal", a);
    DIR *d = opendir(da);
    cr_assert(d != NULL);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t s;
        if (wal_seg_name_parse(de->d_name, &tl, &s) != 0 && strstr(de->d_name, ".history") == NULL)
            continue;
        char pa[900], pb[900];
        snprintf(pa, sizeof(pa), "%s/wal/%s", a, de->d_name);
        snprintf(pb, sizeof(pb), "%s/wal/%s", b, de->d_name);
        uint8_t *x, *y;
        long nx = read_file(pa, &x), ny = read_file(pb, &y);
        cr_assert_geq(ny, 0, "%s missing on the replica", de->d_name);
        cr_assert_eq(nx, ny, "%s: sizes differ", de->d_name);
        long diff = -1;
        for (long i = 0; i < nx && diff < 0; i++)
            if (x[i] != y[i])
                diff = i;
        cr_assert_eq(diff, -1, "%s differs at offset %ld", de->d_name, diff);
        free(x);
        free(y);
        n++;
    }
    closedir(d);
    return n;
}

static int file_exists(const char *dir, const char *name)
{
    char p[900];
    snprintf(p, sizeof(p), "%s/wal/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Replica dir cloned at the very start of the primary's log (redo 0/40). */
static void clone_at_start(const char *pdir, const char *rdir, struct inst *r)
{
    cr_assert_eq(wal_init_from_backup(rdir, sysid_of(pdir), 1, WAL_SEG_HDR_SIZE, 0, MIB), 0);
    inst_open(r, rdir);
}

/* ---------------------------------------------------------------- tests */

Test(wal_repl, replica_log_is_byte_identical_to_the_primary_across_segment_switches)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    clone_at_start(pd, rd, &r);
    uint64_t from = WAL_SEG_HDR_SIZE;
    wal_set_keep_lsn(p.w, from); /* a replication slot: checkpoints keep what the replica needs */
    struct stream_stats ss = {0};
    int i = 0;
    /* Several rounds: write, checkpoint (so the next changes log page images), stream. */
    for (int round = 0; round < 4; round++) {
        for (int k = 0; k < 600; k++, i++)
            put_commit(&p, i, 500 + (size_t)(i % 7) * 400);
        cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
        for (int k = 0; k < 50; k++, i++)
            put_commit(&p, i % 300, 100);
        cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
        stream(&p, &r, &from, round % 2 ? 1 : 64 * 1024, &ss);
        cr_assert_eq(wal_insert_lsn(r.w), wal_insert_lsn(p.w));
    }
    cr_assert_geq(wal_insert_lsn(p.w) / MIB, 3, "at least 3 segment switches");
    cr_assert_gt(ss.switches, 0);
    cr_assert_gt(ss.images, 0);
    cr_assert_gt(ss.commits, 0);
    cr_assert_gt(ss.checkpoints, 0);
    int n = compare_wal_dirs(pd, rd);
    cr_assert_geq(n, 4);
    /* The replica recovers from its own log, with the primary's keys. */
    inst_close(&r);
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), wal_insert_lsn(p.w));
    for (int k = 0; k < i; k += 97)
        cr_assert(has_key(&r, k) == (k % 650 < 600 || k < 300), "key %d", k);
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}

Test(wal_repl, append_encoded_rejects_bad_checksum_wrong_lsn_and_broken_prev_chain)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst r;
    cr_assert_eq(wal_init_from_backup(rd, 42, 1, WAL_SEG_HDR_SIZE, 0, MIB), 0);
    inst_open(&r, rd);
    uint8_t body[16] = {1, 2, 3}, rec[64];
    size_t len = wal_record_encode(rec, sizeof(rec), 0, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    uint64_t end;
    size_t used;
    /* The first record after a clone: its prev is accepted as is. */
    cr_assert_eq(wal_append_encoded(r.w, rec, len, 64, &end, &used), 0);
    cr_assert_eq(end, 64 + 48);
    cr_assert_eq(used, 48);
    /* Next record: prev must be 64. */
    len = wal_record_encode(rec, sizeof(rec), 64, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    rec[40] ^= 1; /* body byte: checksum mismatch */
    cr_assert_eq(wal_append_encoded(r.w, rec, len, end, &end, &used), RD_ECORRUPT);
    rec[40] ^= 1;
    cr_assert_eq(wal_append_encoded(r.w, rec, len, end + 48, &end, &used), RD_ECORRUPT, "wrong LSN");
    cr_assert_eq(wal_append_encoded(r.w, rec, len - 8, end, &end, &used), RD_ECORRUPT, "truncated");
    uint8_t bad[64];
    size_t blen = wal_record_encode(bad, sizeof(bad), 8, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, 16);
    cr_assert_eq(wal_append_encoded(r.w, bad, blen, end, &end, &used), RD_ECORRUPT, "prev chain");
    cr_assert_eq(wal_insert_lsn(r.w), 112, "nothing appended by rejected records");
    cr_assert_eq(wal_append_encoded(r.w, rec, len, end, &end, &used), 0);
    cr_assert_eq(end, 160);
    cr_assert_eq(wal_flush_sync(r.w, end), 0);
    inst_close(&r);
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), 160);
    inst_close(&r);
    remove_dir(pd);
    remove_dir(rd);
}

Test(wal_repl, sender_returns_enotfound_for_removed_segments)
{
    char *pd = make_dir();
    struct inst p;
    inst_open(&p, pd);
    for (int i = 0; i < 900; i++)
        put_commit(&p, i, 3000);
    cr_assert_gt(wal_insert_lsn(p.w), 2 * MIB);
    cr_assert_eq(wal_oldest_lsn(p.w), 0);
    cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
    uint64_t oldest = wal_oldest_lsn(p.w);
    cr_assert_gt(oldest, 0);
    cr_assert_eq(oldest % MIB, 0);
    struct wal_sender_cursor *c;
    cr_assert_eq(wal_sender_open(p.w, &c), 0);
    struct rd_buf out = {0};
    uint64_t first, next;
    cr_assert_eq(wal_sender_read(c, 64, wal_flushed_lsn(p.w), 4096, &out, &first, &next), RD_ENOTFOUND);
    cr_assert_eq(out.len, 0);
    /* From the oldest segment still present it works (first = its first record). */
    cr_assert_gt(wal_sender_read(c, oldest, wal_flushed_lsn(p.w), 4096, &out, &first, &next), 0);
    cr_assert_eq(first, oldest + WAL_SEG_HDR_SIZE);
    rd_buf_free(&out);
    wal_sender_close(c);
    inst_close(&p);
    remove_dir(pd);
}

Test(wal_repl, sender_never_returns_records_at_or_past_upto)
{
    char *pd = make_dir();
    struct inst p;
    inst_open(&p, pd);
    uint64_t ends[400];
    for (int i = 0; i < 400; i++)
        ends[i] = put_commit(&p, i, 2000);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    put_commit(&p, 1000, 10); /* not durable: never sent */
    struct wal_sender_cursor *c;
    cr_assert_eq(wal_sender_open(p.w, &c), 0);
    struct rd_buf out = {0};
    uint64_t uptos[] = {ends[0], ends[123], ends[399], wal_insert_lsn(p.w)};
    for (size_t u = 0; u < 4; u++) {
        uint64_t upto = uptos[u], from = 64, first, next, last_start = 0;
        int n;
        while (out.len = 0, (n = wal_sender_read(c, from, upto, 10000, &out, &first, &next)) > 0) {
            cr_assert_leq(out.len, 10000 + 9216 + 32);
            uint64_t lsn = first;
            size_t off = 0;
            for (int i = 0; i < n; i++) {
                struct wal_record rec;
                int len = wal_record_decode(out.data + off, out.len - off, &rec);
                cr_assert_gt(len, 0);
                lsn = wal_next_record_lsn(lsn, MIB);
                cr_assert_lt(lsn, upto, "record at %lx >= upto %lx", (unsigned long)lsn, (unsigned long)upto);
                last_start = lsn;
                lsn = rec.type == WAL_REC_SWITCH ? lsn - lsn % MIB + MIB : lsn + (uint64_t)len;
                off += (size_t)len;
            }
            cr_assert_eq(lsn, next);
            from = next;
        }
        cr_assert_eq(n, 0);
        cr_assert_gt(last_start, 0);
        cr_assert_leq(from, wal_flushed_lsn(p.w));
        if (u < 3)
            cr_assert_eq(from, upto);
    }
    /* max_bytes below one record still returns exactly one. */
    out.len = 0;
    uint64_t first, next;
    cr_assert_eq(wal_sender_read(c, 64, wal_flushed_lsn(p.w), 1, &out, &first, &next), 1);
    cr_assert_eq(first, 64);
    rd_buf_free(&out);
    wal_sender_close(c);
    inst_close(&p);
    remove_dir(pd);
}

Test(wal_repl, written_lsn_advances_with_async_flush)
{
    char *pd = make_dir();
    struct rd_loop loop;
    char why[256];
    cr_assert_eq(rd_loop_init(&loop, 64, why, sizeof(why)), 0, "%s", why);
    struct inst p;
    cr_assert_eq(inst_open_rc(&p, pd, &loop), 0);
    uint64_t start = wal_written_lsn(p.w);
    cr_assert_eq(start, wal_flushed_lsn(p.w));
    uint64_t end = 0;
    for (int i = 0; i < 20; i++)
        end = put_commit(&p, i, 100);
    wal_flush_async(p.w);
    cr_assert(wal_flush_in_flight(p.w));
    cr_assert_eq(wal_written_lsn(p.w), start, "no completion processed yet");
    for (int i = 0; i < 1000 && wal_flush_in_flight(p.w); i++) {
        cr_assert_geq(rd_loop_run_once(&loop, 100000), 0);
        cr_assert_geq(wal_written_lsn(p.w), wal_flushed_lsn(p.w));
    }
    cr_assert_eq(wal_written_lsn(p.w), end);
    cr_assert_eq(wal_flushed_lsn(p.w), end);
    /* A synchronous flush sets both. */
    end = put_commit(&p, 99, 100);
    cr_assert_eq(wal_flush_sync(p.w, end), 0);
    cr_assert_eq(wal_written_lsn(p.w), end);
    inst_close(&p);
    rd_loop_destroy(&loop);
    remove_dir(pd);
}

Test(wal_repl, truncate_drops_a_trailing_incomplete_transaction_and_recovery_after_it_works)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    clone_at_start(pd, rd, &r);
    for (int i = 0; i < 50; i++)
        put_commit(&p, i, 300);
    uint64_t last_commit = wal_insert_lsn(p.w);
    /* A transaction whose commit never arrives. */
    engine_txn_begin(p.e);
    cr_assert_eq(engine_put(p.e, (const uint8_t *)"orphan", 6, (const uint8_t *)"x", 1), 0);
    engine_txn_end(p.e);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    uint64_t from = 64;
    struct stream_stats ss = {0};
    stream(&p, &r, &from, 1 << 20, &ss);
    cr_assert_gt(wal_insert_lsn(r.w), last_commit);
    cr_assert_neq(wal_truncate(r.w, last_commit + 8), 0, "not a record boundary");
    cr_assert_eq(wal_truncate(r.w, last_commit), 0);
    cr_assert_eq(wal_insert_lsn(r.w), last_commit);
    cr_assert_eq(wal_flushed_lsn(r.w), last_commit);
    /* Appending continues on the cut log (as a promoted primary would). */
    uint64_t end;
    cr_assert_eq(wal_append_commit(r.w, 777, &end), 0);
    cr_assert_eq(wal_flush_sync(r.w, end), 0);
    inst_close(&r); /* the orphan's pages are dirty only in the pool: dropped */
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), end);
    cr_assert(has_key(&r, 49));
    cr_assert(!engine_exists(r.e, (const uint8_t *)"orphan", 6));
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}

static long read_text(const char *dir, const char *name, char *buf, size_t len)
{
    char p[900];
    snprintf(p, sizeof(p), "%s/wal/%s", dir, name);
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return -1;
    long n = wal_pread_all(fd, buf, len - 1, 0);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    return n;
}

Test(wal_repl, switch_timeline_names_new_segments_writes_history_and_survives_reopen)
{
    char *pd = make_dir();
    struct inst p;
    inst_open(&p, pd);
    for (int i = 0; i < 400; i++)
        put_commit(&p, i, 3000);
    uint64_t before = wal_insert_lsn(p.w);
    uint64_t sw;
    cr_assert_eq(wal_switch_timeline(p.w, &sw), 0);
    cr_assert_eq(sw, before);
    cr_assert_eq(wal_timeline(p.w), 2);
    cr_assert_eq(wal_timeline_parent(p.w), 1);
    cr_assert_eq(wal_timeline_switch_lsn(p.w), sw);
    cr_assert_eq(wal_flushed_lsn(p.w), sw + 48);
    char text[256], expect[64];
    cr_assert_gt(read_text(pd, "00000002.history", text, sizeof(text)), 0);
    snprintf(expect, sizeof(expect), "1 %X/%X\n", (unsigned)(sw >> 32), (unsigned)sw);
    cr_assert_str_eq(text, expect);
    struct wal_control c;
    cr_assert_eq(wal_control_read(pd, &c), 0);
    cr_assert_eq(c.timeline, 2);
    /* The switch segment exists under both names; older ones only under timeline 1. */
    char name[32];
    uint64_t sseg = sw / MIB;
    wal_seg_name(name, sizeof(name), 2, sseg);
    cr_assert(file_exists(pd, name));
    wal_seg_name(name, sizeof(name), 1, sseg);
    cr_assert(file_exists(pd, name));
    wal_seg_name(name, sizeof(name), 1, sseg + 1);
    cr_assert(!file_exists(pd, name), "old timeline's prepared segment removed");
    /* Continue writing into new segments: they carry timeline 2. */
    for (int i = 400; i < 800; i++)
        put_commit(&p, i, 3000);
    uint64_t end = wal_insert_lsn(p.w);
    cr_assert_gt(end / MIB, sseg);
    wal_seg_name(name, sizeof(name), 2, end / MIB);
    cr_assert(file_exists(pd, name));
    wal_seg_name(name, sizeof(name), 1, end / MIB);
    cr_assert(!file_exists(pd, name));
    cr_assert_eq(wal_flush_sync(p.w, end), 0);
    inst_close(&p);
    /* Reopen: recovery reads timeline 1 segments then timeline 2 ones. */
    inst_open(&p, pd);
    cr_assert_eq(wal_timeline(p.w), 2);
    cr_assert_eq(wal_timeline_switch_lsn(p.w), sw);
    cr_assert_eq(wal_insert_lsn(p.w), end);
    for (int i = 0; i < 800; i += 37)
        cr_assert(has_key(&p, i), "key %d", i);
    uint64_t e2 = put_commit(&p, 5000, 10);
    cr_assert_eq(wal_flush_sync(p.w, e2), 0);
    cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
    inst_close(&p);
    inst_open(&p, pd);
    cr_assert(has_key(&p, 5000));
    cr_assert_gt(wal_insert_lsn(p.w), e2);
    inst_close(&p);
    remove_dir(pd);
}

Test(wal_repl, follow_timeline_on_a_replica_fed_a_timeline_record)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    clone_at_start(pd, rd, &r);
    for (int i = 0; i < 300; i++)
        put_commit(&p, i, 2500);
    uint64_t sw;
    cr_assert_eq(wal_switch_timeline(p.w, &sw), 0);
    uint64_t from = 64;
    struct stream_stats ss = {0};
    stream(&p, &r, &from, 1 << 16, &ss);
    cr_assert_eq(ss.timelines, 1);
    cr_assert_eq(ss.last_tl_lsn, sw);
    cr_assert_eq(ss.last_tl_new, 2);
    cr_assert_neq(wal_follow_timeline(r.w, 3, sw), 0, "no such TIMELINE record");
    cr_assert_eq(wal_follow_timeline(r.w, 2, sw - 48), RD_ECORRUPT, "not the TIMELINE record");
    cr_assert_eq(wal_follow_timeline(r.w, 2, sw), 0);
    cr_assert_eq(wal_timeline(r.w), 2);
    cr_assert_eq(wal_timeline_parent(r.w), 1);
    /* Both continue on timeline 2; the logs (incl. history) stay identical. */
    for (int i = 300; i < 700; i++)
        put_commit(&p, i, 2500);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    stream(&p, &r, &from, 1 << 16, &ss);
    cr_assert_geq(compare_wal_dirs(pd, rd), 3);
    inst_close(&r);
    inst_open(&r, rd);
    cr_assert_eq(wal_timeline(r.w), 2);
    cr_assert_eq(wal_insert_lsn(r.w), wal_insert_lsn(p.w));
    cr_assert(has_key(&r, 650));
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}

Test(wal_repl, restartpoint_writes_control_redo_and_removes_old_segments_without_appending)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    clone_at_start(pd, rd, &r);
    wal_set_keep_lsn(p.w, 64);
    for (int i = 0; i < 900; i++)
        put_commit(&p, i, 3000);
    cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
    struct wal_control pc;
    cr_assert_eq(wal_control_read(pd, &pc), 0);
    for (int i = 900; i < 950; i++)
        put_commit(&p, i, 300);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    uint64_t from = 64;
    struct stream_stats ss = {0};
    stream(&p, &r, &from, 1 << 20, &ss);
    uint64_t ins = wal_insert_lsn(r.w);
    cr_assert_eq(wal_oldest_lsn(r.w), 0);
    cr_assert_eq(wal_restartpoint(r.w, r.e, pc.checkpoint_lsn, pc.redo_lsn), 0);
    cr_assert_eq(wal_insert_lsn(r.w), ins, "nothing appended");
    struct wal_control rc;
    cr_assert_eq(wal_control_read(rd, &rc), 0);
    cr_assert_eq(rc.redo_lsn, pc.redo_lsn);
    cr_assert_eq(rc.checkpoint_lsn, pc.checkpoint_lsn);
    cr_assert_eq(wal_oldest_lsn(r.w), pc.redo_lsn / MIB * MIB);
    cr_assert_gt(wal_oldest_lsn(r.w), 0);
    cr_assert_geq(compare_wal_dirs(rd, pd), 2, "what the replica kept is identical");
    inst_close(&r);
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), ins);
    for (int i = 0; i < 950; i += 41)
        cr_assert(has_key(&r, i), "key %d", i);
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}

Test(wal_repl, init_from_backup_then_append_encoded_from_redo_then_recover)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    for (int i = 0; i < 500; i++)
        put_commit(&p, i, 3000);
    cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
    struct wal_control pc;
    cr_assert_eq(wal_control_read(pd, &pc), 0);
    /* The base backup: the primary's data file as of the checkpoint. */
    char src[600], dst[600], cmd[1400];
    snprintf(src, sizeof(src), "%s/data.rdb", pd);
    snprintf(dst, sizeof(dst), "%s/data.rdb", rd);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(wal_init_from_backup(rd, pc.system_id, pc.timeline, pc.redo_lsn, pc.checkpoint_lsn, MIB), 0);
    cr_assert_eq(wal_init_from_backup(rd, pc.system_id, pc.timeline, pc.redo_lsn, pc.checkpoint_lsn, MIB),
                 -EEXIST);
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), pc.redo_lsn);
    for (int i = 500; i < 900; i++)
        put_commit(&p, i, 3000);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    uint64_t from = pc.redo_lsn;
    struct stream_stats ss = {0};
    stream(&p, &r, &from, 1 << 16, &ss);
    cr_assert_eq(wal_insert_lsn(r.w), wal_insert_lsn(p.w));
    /* Segments after the redo one are identical (the redo one only from redo on). */
    char name[32], pa[900], pb[900];
    for (uint64_t s = pc.redo_lsn / MIB + 1; s <= wal_insert_lsn(p.w) / MIB; s++) {
        wal_seg_name(name, sizeof(name), 1, s);
        snprintf(pa, sizeof(pa), "%s/wal/%s", pd, name);
        snprintf(pb, sizeof(pb), "%s/wal/%s", rd, name);
        uint8_t *x, *y;
        cr_assert_eq(read_file(pa, &x), (long)MIB);
        cr_assert_eq(read_file(pb, &y), (long)MIB);
        cr_assert_eq(memcmp(x, y, MIB), 0, "segment %lu", (unsigned long)s);
        free(x);
        free(y);
    }
    inst_close(&r);
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), wal_insert_lsn(p.w));
    for (int i = 0; i < 900; i += 29)
        cr_assert(has_key(&r, i), "key %d", i);
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}

/* W16: promotions take their term's block, crash restarts +1 inside it; limits refuse. */
Test(wal_repl, timeline_numbers_per_term_block_and_crash_restarts)
{
    uint32_t t;
    cr_assert_eq(wal_promotion_timeline(1, 17, &t), 0);
    cr_assert_eq(t, 17u << 12);
    cr_assert_eq(wal_crash_timeline(t, &t), 0);
    cr_assert_eq(t, (17u << 12) + 1);
    /* a promotion under a term not above the current block starts the next block */
    cr_assert_eq(wal_promotion_timeline(t, 3, &t), 0);
    cr_assert_eq(t, 18u << 12);
    cr_assert_eq(wal_promotion_timeline(t, 0, &t), 0);
    cr_assert_eq(t, 19u << 12);
    /* old-style numbers (W15: timeline = term) move to a block above them */
    cr_assert_eq(wal_promotion_timeline(65, 66, &t), 0);
    cr_assert_eq(t, 66u << 12);
    /* sixteen crash restarts of a node on term 17's block never reach term 33's block */
    uint32_t a = 17u << 12;
    for (int i = 0; i < 16; i++)
        cr_assert_eq(wal_crash_timeline(a, &a), 0);
    cr_assert_lt(a, 33u << 12);
    cr_assert_eq(wal_crash_timeline((17u << 12) + WAL_TLI_CRASH_MASK - 1, &t), 0);
    cr_assert_eq(wal_crash_timeline((17u << 12) + WAL_TLI_CRASH_MASK, &t), -ERANGE);
    cr_assert_eq(wal_promotion_timeline(1, 1ull << 20, &t), -ERANGE);
    cr_assert_eq(wal_promotion_timeline(UINT32_MAX, 0, &t), -ERANGE);
    cr_assert_eq(wal_promotion_timeline(1, (1ull << 20) - 1, &t), 0);
}

/* W17: a spread restart point on a replica, with more WAL streamed and replayed between its
 * slices (pages changed after the redo point are not written by the sweep: the primary's full
 * images restore them), then a crash: recovery from the restart point's redo point restores
 * every key, those written during the sweep included. */
Test(wal_repl, spread_restartpoint_with_replay_between_slices_then_crash_recovers_everything)
{
    char *pd = make_dir(), *rd = make_dir();
    struct inst p, r;
    inst_open(&p, pd);
    clone_at_start(pd, rd, &r);
    wal_set_keep_lsn(p.w, 64);
    for (int i = 0; i < 900; i++)
        put_commit(&p, i, 3000);
    cr_assert_eq(wal_checkpoint(p.w, p.e), 0);
    struct wal_control pc;
    cr_assert_eq(wal_control_read(pd, &pc), 0);
    cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
    uint64_t from = 64;
    struct stream_stats ss = {0};
    stream(&p, &r, &from, 1 << 20, &ss);
    cr_assert_eq(wal_restartpoint_begin(r.w, r.e, pc.checkpoint_lsn, pc.redo_lsn, 0), 0);
    cr_assert(wal_restartpoint_active(r.w));
    int done = 0, steps = 0, next_key = 900;
    while (!done) {
        for (int k = 0; k < 5; k++) /* overwrites (full images after the redo point) and new keys */
            put_commit(&p, (steps * 97 + k * 31) % 900, 3000), put_commit(&p, next_key++, 300);
        cr_assert_eq(wal_flush_sync(p.w, wal_insert_lsn(p.w)), 0);
        stream(&p, &r, &from, 1 << 20, &ss);
        cr_assert_eq(wal_checkpoint_step(r.w, r.e, &done), 0);
        steps++;
        cr_assert_lt(steps, 1000);
    }
    cr_assert_gt(steps, 1, "the sweep took several slices");
    cr_assert_gt(ss.images, 0, "the primary logged full images after its redo point");
    cr_assert_eq(wal_restartpoint_end(r.w, r.e), 0);
    cr_assert_not(wal_restartpoint_active(r.w));
    struct wal_control rc;
    cr_assert_eq(wal_control_read(rd, &rc), 0);
    cr_assert_eq(rc.redo_lsn, pc.redo_lsn);
    cr_assert_eq(rc.checkpoint_lsn, pc.checkpoint_lsn);
    uint64_t ins = wal_insert_lsn(r.w);
    inst_close(&r); /* a crash: nothing more is written */
    inst_open(&r, rd);
    cr_assert_eq(wal_insert_lsn(r.w), ins);
    for (int i = 0; i < next_key; i++)
        cr_assert(has_key(&r, i), "key %d", i);
    inst_close(&r);
    inst_close(&p);
    remove_dir(pd);
    remove_dir(rd);
}
