/*
 * wal_flush.c — group commit: the two buffers, the asynchronous flush through
 * io_uring (one write + linked fdatasync per segment, or direct writes in
 * open_datasync mode) and the synchronous flush the engine calls before it
 * writes a page (W1, W2, W5, W9, W12). State machine: README.md.
 */
#include "wal/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"
#include "wal/wal_writer.h"

uint64_t wal_flushed_lsn(const struct wal *w) { return w->flushed_lsn; }
int wal_flush_in_flight(const struct wal *w) { return w->in_flight; }
uint64_t wal_unflushed_bytes(const struct wal *w) { return w->bufs[w->active].len; }
uint64_t wal_written_lsn(const struct wal *w) { return w->written_lsn; }

/* ---------------------------------------------------------------- flushing */

static void flush_advanced(struct wal *w, uint64_t lsn)
{
    if (lsn > w->flushed_lsn)
        w->flushed_lsn = lsn;
    if (lsn > w->written_lsn)
        w->written_lsn = lsn;
}

/* Empties buffer b to start at lsn. In direct mode its first `lsn % block`
 * bytes get a copy of the log's partial last block, from tail (which may
 * point into b itself). */
static void buf_restart(struct wal *w, struct wal_buf *b, uint64_t lsn, const uint8_t *tail)
{
    b->start_lsn = lsn;
    b->len = 0;
    b->commits = 0;
    b->pre = w->direct ? (size_t)(lsn % WAL_DIO_ALIGN) : 0;
    if (b->pre > 0)
        memmove(b->mem, tail, b->pre);
    b->data = b->mem + b->pre;
}

/* The bytes [lsn - lsn % block, lsn) of buffer b, which ends at lsn. */
static const uint8_t *buf_tail(const struct wal *w, const struct wal_buf *b)
{
    size_t pre = w->direct ? (size_t)((b->start_lsn + b->len) % WAL_DIO_ALIGN) : 0;
    return b->mem + b->pre + b->len - pre;
}

/* Both buffers empty at lsn (recovery, truncation); in direct mode the
 * partial block before lsn is read back from its segment file. */
int wal_bufs_reset_at(struct wal *w, uint64_t lsn)
{
    for (int i = 0; i < 2; i++)
        buf_restart(w, &w->bufs[i], lsn, w->bufs[i].mem); /* pre is filled below */
    struct wal_buf *a = &w->bufs[w->active];
    if (a->pre == 0)
        return 0;
    char path[PATH_MAX];
    wal_seg_path(w, lsn / w->seg_size, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    long n = fd < 0 ? -errno : wal_pread_all(fd, a->mem, a->pre, lsn % w->seg_size - a->pre);
    if (fd >= 0)
        close(fd);
    if (n >= 0 && (size_t)n != a->pre)
        n = -EIO;
    if (n < 0) {
        rd_error("could not read WAL segment \"%s\": %s", path, rd_strerror((int)n));
        return (int)n;
    }
    return 0;
}

/* Where a write of buffer bytes [from, piece_end) (within one segment) goes:
 * in direct mode widened to whole blocks (the zero padding after the buffer's
 * end is set by buf_pad). Sets *ptr and *len; returns the file offset. */
static uint64_t write_range(const struct wal *w, const struct wal_buf *b, uint64_t from, uint64_t piece_end,
                            const uint8_t **ptr, size_t *len)
{
    if (w->direct) {
        uint64_t wfrom = from - from % WAL_DIO_ALIGN;
        uint64_t wend = RD_ALIGN_UP(piece_end, (uint64_t)WAL_DIO_ALIGN);
        *ptr = b->mem + (wfrom - (b->start_lsn - b->pre));
        *len = (size_t)(wend - wfrom);
        return wfrom % w->seg_size;
    }
    *ptr = b->data + (from - b->start_lsn);
    *len = (size_t)(piece_end - from);
    return from % w->seg_size;
}

/* Direct mode: zeroes the buffer from its end to the next block boundary. */
static void buf_pad(const struct wal *w, struct wal_buf *b)
{
    if (!w->direct)
        return;
    size_t used = b->pre + b->len;
    memset(b->mem + used, 0, RD_ALIGN_UP(used, (size_t)WAL_DIO_ALIGN) - used);
}

/* Writes buffer bytes [from, b end) with pwrite, one piece per segment;
 * records the first and last segment touched. */
static void sync_write_buf(struct wal *w, struct wal_buf *b, uint64_t from, uint64_t *seg_lo,
                           uint64_t *seg_hi)
{
    uint64_t end = b->start_lsn + b->len;
    from = RD_MAX(from, b->start_lsn);
    buf_pad(w, b);
    while (from < end) {
        uint64_t segno = from / w->seg_size;
        uint64_t piece_end = RD_MIN(end, (segno + 1) * w->seg_size);
        const uint8_t *ptr;
        size_t len;
        uint64_t off = write_range(w, b, from, piece_end, &ptr, &len);
        int fd = wal_seg_fd(w, segno);
        int rc = fd < 0 ? fd : wal_pwrite_all(fd, ptr, len, off);
        if (rc < 0) {
            char path[PATH_MAX];
            wal_seg_path(w, segno, path, sizeof(path));
            rd_panic("could not write WAL segment \"%s\": %s", path, rd_strerror(rc));
        }
        *seg_lo = RD_MIN(*seg_lo, segno);
        *seg_hi = RD_MAX(*seg_hi, segno);
        from = piece_end;
    }
}

static void flush_io_check(struct wal *w, const struct wal_flush_io *fio, int res)
{
    if (fio->is_fsync && res >= 0 && rd_fault("wal_fsync"))
        res = -EIO; /* tests: RD_FAULT=wal_fsync:N */
    if (res < 0 || (!fio->is_fsync && (size_t)res != fio->expect)) {
        char path[PATH_MAX];
        wal_seg_path(w, fio->segno, path, sizeof(path));
        rd_panic("could not %s WAL segment \"%s\": %s", fio->is_fsync ? "fdatasync" : "write", path,
                 res < 0 ? strerror(-res) : "short write");
    }
}

static int flush_match(void *ctx, const struct io_uring_cqe *cqe)
{
    struct wal *w = ctx;
    const void *d = io_uring_cqe_get_data(cqe);
    for (size_t i = 0; i < w->ios_total; i++) {
        if (d == &w->ios[i].io) {
            flush_io_check(w, &w->ios[i], cqe->res); /* a failure is fatal now, not later */
            return 1;
        }
    }
    return 0;
}

int wal_flush_sync(struct wal *w, uint64_t lsn)
{
    if (w->flushed_lsn >= lsn)
        return 0;
    if (lsn > w->insert_lsn) {
        rd_error("asked to flush WAL up to %X/%X, beyond its end %X/%X", (unsigned)(lsn >> 32),
                 (unsigned)lsn, (unsigned)(w->insert_lsn >> 32), (unsigned)w->insert_lsn);
        return RD_ESTATE;
    }
    uint64_t t0 = rd_now_us();
    uint64_t seg_lo = UINT64_MAX, seg_hi = 0;
    uint64_t from = w->flushed_lsn;
    if (w->in_flight && w->direct) {
        /* The in-flight write carries zero padding after its end in the block
         * the active buffer starts in: writing that block now could be undone
         * by the in-flight write landing later. Wait until it completed (its
         * O_DSYNC write is then durable); the loop dispatches it as usual. */
        wal_wait_cqes_peek(w->opt.loop, flush_match, w, w->ios_total - w->ios_done, "a WAL write");
    } else if (w->in_flight) {
        /* Rewriting bytes an in-flight write also carries is harmless: identical. */
        sync_write_buf(w, &w->bufs[!w->active], from, &seg_lo, &seg_hi);
    }
    sync_write_buf(w, &w->bufs[w->active], from, &seg_lo, &seg_hi);
    for (uint64_t s = seg_lo; !w->direct && s <= seg_hi && seg_lo != UINT64_MAX; s++) {
        int fd = wal_seg_fd(w, s);
        int frc = fd < 0 ? fd : fdatasync(fd) < 0 ? -errno : rd_fault("wal_fsync") ? -EIO : 0;
        if (frc < 0) {
            char path[PATH_MAX];
            wal_seg_path(w, s, path, sizeof(path));
            rd_panic("could not fdatasync WAL segment \"%s\": %s", path, rd_strerror(frc));
        }
        w->st.fsyncs++;
    }
    w->st.flushes++;
    w->st.flush_bytes += w->insert_lsn - from;
    w->st.flush_lat_us_total += rd_now_us() - t0;
    struct wal_buf *a = &w->bufs[w->active];
    w->st.group_commits_max = RD_MAX(w->st.group_commits_max, a->commits);
    wal_group_hist_note(&w->st, a->commits);
    flush_advanced(w, w->insert_lsn);
    w->notify_pending = 1;
    /* Everything in the active buffer is durable: drop it. */
    buf_restart(w, a, w->insert_lsn, buf_tail(w, a));
    if (!w->in_flight)
        wal_prune_fds(w);
    return 0;
}

static void flush_io_done(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct wal_flush_io *fio = (struct wal_flush_io *)io;
    struct wal *w = fio->w;
    flush_io_check(w, fio, cqe->res);
    if (!fio->is_fsync && !w->closed && ++w->writes_done == w->writes_total) {
        /* Every write of the batch completed: its bytes are in the page cache
         * (direct mode: on stable storage). */
        const struct wal_buf *wb = &w->bufs[!w->active];
        if (wb->start_lsn + wb->len > w->written_lsn)
            w->written_lsn = wb->start_lsn + wb->len;
    }
    if (++w->ios_done < w->ios_total)
        return;
    if (w->closed) { /* the owner is gone: release what the kernel held (W5) */
        w->in_flight = 0;
        wal_free(w);
        return;
    }
    /* The whole batch is durable. */
    struct wal_buf *b = &w->bufs[!w->active];
    uint64_t end = b->start_lsn + b->len;
    w->st.flushes++;
    w->st.flush_bytes += b->len;
    w->st.flush_lat_us_total += rd_now_us() - w->flush_started_us;
    w->st.group_commits_max = RD_MAX(w->st.group_commits_max, b->commits);
    wal_group_hist_note(&w->st, b->commits);
    w->in_flight = 0;
    free(w->ios);
    w->ios = NULL;
    b->len = 0;
    b->commits = 0;
    flush_advanced(w, end);
    w->notify_pending = 0;
    wal_prune_fds(w);
    if (w->opt.on_flushed != NULL)
        w->opt.on_flushed(w->opt.on_flushed_arg, w->flushed_lsn);
}

void wal_flush_async(struct wal *w)
{
    rd_assert(w->opt.loop != NULL);
    if (w->in_flight)
        return;
    struct wal_buf *a = &w->bufs[w->active];
    if (a->len == 0) {
        if (w->notify_pending && w->opt.on_flushed != NULL) {
            w->notify_pending = 0;
            w->opt.on_flushed(w->opt.on_flushed_arg, w->flushed_lsn);
        }
        return;
    }
    /* Swap: the full buffer goes in flight, appends continue in the other
     * (which in direct mode starts with a copy of the partial last block). */
    struct wal_buf *b = a;
    w->active = !w->active;
    a = &w->bufs[w->active];
    buf_restart(w, a, b->start_lsn + b->len, buf_tail(w, b));
    rd_assert(a->start_lsn == w->insert_lsn);
    buf_pad(w, b);

    uint64_t end = b->start_lsn + b->len;
    uint64_t seg_lo = b->start_lsn / w->seg_size, seg_hi = (end - 1) / w->seg_size;
    size_t nseg = (size_t)(seg_hi - seg_lo + 1);
    size_t per_seg = w->direct ? 1 : 2; /* write [+ linked fdatasync] */
    w->ios = calloc(per_seg * nseg, sizeof(*w->ios));
    if (w->ios == NULL)
        rd_panic("could not write WAL: out of memory for %zu flush operations", per_seg * nseg);
    w->ios_total = per_seg * nseg;
    w->writes_total = nseg;
    w->ios_done = 0;
    w->writes_done = 0;
    w->in_flight = 1;
    w->flush_started_us = rd_now_us();
    struct io_uring *ring = &w->opt.loop->ring;
    uint64_t from = b->start_lsn;
    for (size_t i = 0; i < nseg; i++) {
        uint64_t segno = seg_lo + i;
        uint64_t piece_end = RD_MIN(end, (segno + 1) * w->seg_size);
        int fd = wal_seg_fd(w, segno);
        if (fd < 0) {
            char path[PATH_MAX];
            wal_seg_path(w, segno, path, sizeof(path));
            rd_panic("could not write WAL segment \"%s\": %s", path, rd_strerror(fd));
        }
        /* A write and its fsync must be in one submission to stay linked. */
        if (io_uring_sq_space_left(ring) < per_seg) {
            int rc = rd_loop_submit(w->opt.loop);
            if (rc < 0)
                rd_panic("could not submit WAL write: %s", strerror(-rc));
        }
        const uint8_t *ptr;
        size_t len;
        uint64_t off = write_range(w, b, from, piece_end, &ptr, &len);
        struct wal_flush_io *wio = &w->ios[per_seg * i];
        *wio = (struct wal_flush_io){{flush_io_done}, w, 0, len, segno};
        struct io_uring_sqe *sqe = rd_loop_sqe(w->opt.loop, &wio->io);
        io_uring_prep_write(sqe, fd, ptr, (unsigned)len, off);
        io_uring_sqe_set_data(sqe, &wio->io);
        if (!w->direct) {
            struct wal_flush_io *sio = &w->ios[per_seg * i + 1];
            *sio = (struct wal_flush_io){{flush_io_done}, w, 1, 0, segno};
            sqe->flags |= IOSQE_IO_LINK;
            sqe = rd_loop_sqe(w->opt.loop, &sio->io);
            io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
            io_uring_sqe_set_data(sqe, &sio->io);
            w->st.fsyncs++;
        }
        from = piece_end;
    }
}
