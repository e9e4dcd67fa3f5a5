/*
 * wal_segment.c — the writer's segment files: their paths along the timeline
 * chain, synchronous creation (W4), the cache of open fds, removal, and the
 * asynchronous preparation of the next segment through the loop (W6, W13).
 * Formats: wal_record.c.
 */
#include "wal/wal.h"

#include <dirent.h>
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

int wal_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* ---------------------------------------------------------------- segment files */

/* The file of segment segno: an existing one of the newest chain timeline that
 * touches the segment, else the name to create it under. Returns its timeline. */
uint32_t wal_seg_path_ex(const struct wal *w, uint64_t segno, char *dst, size_t len, int *exists)
{
    return wal_chain_seg_path(w->wal_dir, &w->chain, w->seg_size, segno, dst, len, exists);
}

void wal_seg_path(const struct wal *w, uint64_t segno, char *dst, size_t len)
{
    int exists;
    wal_seg_path_ex(w, segno, dst, len, &exists);
}

/*
 * Creates segment segno zero-filled to full size with its header, under a
 * temporary name, fdatasynced, renamed into place, directory fsynced — so a
 * segment file either does not exist or is complete. Called ahead of need
 * (when the current segment is half full), so the commit path never pays.
 */
static int seg_create(struct wal *w, uint64_t segno)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int exists;
    uint32_t tli = wal_seg_path_ex(w, segno, path, sizeof(path), &exists);
    if (exists)
        return 0; /* exists already (after a restart): never replace a segment */
    snprintf(tmp, sizeof(tmp), "%s/segtemp.%d", w->wal_dir, (int)getpid());
    uint64_t t0 = rd_now_us();
    const char *what = "create";
    int rc = 0;
    uint8_t *zero = calloc(1, WAL_SEG_SIZE_MIN);
    if (zero == NULL)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    what = "write";
    for (uint64_t off = 0; off < w->seg_size && rc == 0; off += WAL_SEG_SIZE_MIN)
        rc = wal_pwrite_all(fd, zero, WAL_SEG_SIZE_MIN, off);
    if (rc == 0) {
        struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
        uint8_t hb[WAL_SEG_HDR_SIZE];
        wal_seg_header_encode(hb, &h);
        rc = wal_pwrite_all(fd, hb, sizeof(hb), 0);
    }
    if (rc == 0) {
        what = "fdatasync";
        if (fdatasync(fd) < 0)
            rc = -errno;
    }
    if (close(fd) < 0 && rc == 0) {
        what = "close";
        rc = -errno;
    }
    if (rc < 0)
        goto fail;
    what = "rename";
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto fail;
    }
    what = "fsync the directory of";
    rc = wal_fsync_dir(w->wal_dir);
    if (rc < 0)
        goto fail;
    free(zero);
    w->st.segments_created_sync++;
    rd_debug("created WAL segment \"%s\" synchronously in %" PRIu64 " us", path, rd_now_us() - t0);
    return 1;
fail:
    free(zero);
    rd_error("could not %s WAL segment \"%s\": %s", what, tmp, rd_strerror(rc));
    return rc;
}

/* Makes sure segment segno exists (creating it and any missing before it),
 * synchronously. An asynchronous preparation of it (or of an earlier one)
 * that has not completed is abandoned: its temp file is removed. */
int wal_seg_prepare(struct wal *w, uint64_t segno)
{
    if (w->have_prepared && w->prepared_segno >= segno)
        return 0;
    if (w->prep != NULL && w->prep->segno <= segno) {
        rd_info("WAL segment %" PRIu64 " is not ready yet (background preparation at stage %d, %" PRIu64
                " of %" PRIu64 " bytes): creating it synchronously",
                w->prep->segno, w->prep->stage, w->prep->off, w->seg_size);
        wal_prep_abandon(w, 0);
    }
    uint64_t from = w->have_prepared ? w->prepared_segno + 1 : segno;
    for (uint64_t s = from; s <= segno; s++) {
        int rc = seg_create(w, s);
        if (rc < 0)
            return rc;
        w->prepared_segno = s;
        w->have_prepared = 1;
    }
    return 0;
}

/* Returns an open fd for segment segno (kept open until pruned). */
int wal_seg_fd(struct wal *w, uint64_t segno)
{
    for (size_t i = 0; i < w->nfds; i++)
        if (w->fds[i].segno == segno)
            return w->fds[i].fd;
    if (w->nfds == w->fds_cap) {
        size_t cap = w->fds_cap ? w->fds_cap * 2 : 8;
        struct wal_fd *p = realloc(w->fds, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        w->fds = p;
        w->fds_cap = cap;
    }
    char path[PATH_MAX];
    wal_seg_path(w, segno, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CLOEXEC | (w->direct ? O_DIRECT | O_DSYNC : 0));
    if (fd < 0) {
        int rc = -errno;
        rd_error("could not open WAL segment \"%s\": %s", path, rd_strerror(rc));
        return rc;
    }
    w->fds[w->nfds++] = (struct wal_fd){segno, fd};
    return fd;
}

/* Closes fds of segments below segno. A failed close of a WAL file whose
 * writes were already fdatasynced loses nothing, but is logged. */
static void seg_fds_prune(struct wal *w, uint64_t below_segno)
{
    size_t j = 0;
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->fds[i].segno < below_segno) {
            if (close(w->fds[i].fd) < 0)
                rd_warn("could not close WAL segment %" PRIu64 ": %s", w->fds[i].segno,
                        strerror(errno));
        } else {
            w->fds[j++] = w->fds[i];
        }
    }
    w->nfds = j;
}

void wal_close_retired(struct wal *w)
{
    for (size_t i = 0; i < w->nretired; i++)
        if (close(w->retired[i]) < 0)
            rd_warn("could not close a replaced WAL segment: %s", strerror(errno));
    w->nretired = 0;
}

/* Drops the cached fd of segment segno (its file is being removed or replaced). */
void wal_seg_fd_forget(struct wal *w, uint64_t segno)
{
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->fds[i].segno != segno)
            continue;
        int fd = w->fds[i].fd;
        w->fds[i] = w->fds[--w->nfds];
        int *p = w->in_flight ? realloc(w->retired, (w->nretired + 1) * sizeof(*p)) : NULL;
        if (p != NULL) {
            w->retired = p;
            w->retired[w->nretired++] = fd;
        } else {
            if (w->in_flight)
                rd_panic("could not retire a WAL segment fd: out of memory");
            if (close(fd) < 0)
                rd_warn("could not close WAL segment %" PRIu64 ": %s", segno, strerror(errno));
        }
        return;
    }
}

void wal_prune_fds(struct wal *w)
{
    if (!w->in_flight)
        wal_close_retired(w);
    uint64_t need = w->bufs[w->active].start_lsn;
    if (w->in_flight)
        need = RD_MIN(need, w->bufs[!w->active].start_lsn);
    seg_fds_prune(w, RD_MIN(need, w->flushed_lsn) / w->seg_size);
}

/* ---------------------------------------------------------------- waiting for own completions */

/* Waits until `need` completions matched by `match` are in the CQ ring,
 * WITHOUT consuming anything: the loop dispatches them (and everything else)
 * later as usual. Used where a blocking caller (wal_flush_sync, wal_close)
 * must know that an operation of ours finished, from inside an engine call
 * where running the loop's dispatch would be re-entrant. */
void wal_wait_cqes_peek(struct rd_loop *l, int (*match)(void *ctx, const struct io_uring_cqe *cqe),
                           void *ctx, size_t need, const char *what)
{
    struct io_uring *ring = &l->ring;
    for (;;) {
        size_t found = 0;
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(ring, head, cqe)
        {
            seen++;
            if (match(ctx, cqe))
                found++;
        }
        if (found >= need)
            return;
        if (seen >= ring->cq.ring_entries)
            rd_panic("could not wait for %s: the completion queue is full", what);
        int rc = io_uring_submit_and_wait(ring, seen + 1);
        if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY)
            rd_panic("could not wait for %s: %s", what, strerror(-rc));
    }
}

/* ---------------------------------------------------------------- asynchronous segment preparation */

/* Abandoned preparations still waiting for their last completion (reachable,
 * so leak checkers do not flag a loop destroyed before it arrived). */
static struct wal_prep *prep_orphans;

static void prep_free(struct wal_prep *p)
{
    if (p->fd >= 0 && close(p->fd) < 0)
        rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
    free(p->chunk);
    free(p);
}

static void prep_submit(struct wal_prep *p)
{
    struct wal *w = p->w;
    struct io_uring_sqe *sqe = rd_loop_sqe(w->opt.loop, &p->io);
    if (p->stage == 2) {
        io_uring_prep_fsync(sqe, p->fd, IORING_FSYNC_DATASYNC);
        p->expect = 0;
    } else {
        p->expect = (size_t)RD_MIN((uint64_t)WAL_PREP_CHUNK, w->seg_size - p->off);
        io_uring_prep_write(sqe, p->fd, p->chunk, (unsigned)p->expect, p->off);
    }
    io_uring_sqe_set_data(sqe, &p->io);
}

static void prep_cqe(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct wal_prep *p = (struct wal_prep *)io;
    struct wal *w = p->w;
    if (w == NULL) { /* abandoned: its temp file is already unlinked */
        for (struct wal_prep **pp = &prep_orphans; *pp != NULL; pp = &(*pp)->next_orphan)
            if (*pp == p) {
                *pp = p->next_orphan;
                break;
            }
        prep_free(p);
        return;
    }
    if (cqe->res < 0 || (p->stage < 2 && (size_t)cqe->res != p->expect)) {
        rd_warn("background preparation of WAL segment \"%s\" failed (%s): it will be created "
                "synchronously when needed",
                p->tmp, cqe->res < 0 ? strerror(-cqe->res) : "short write");
        w->prep_failed_segno = p->segno + 1;
        w->prep = NULL;
        if (unlink(p->tmp) < 0)
            rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
        prep_free(p);
        return;
    }
    if (p->stage < 2) {
        if (p->stage == 0)
            memset(p->chunk, 0, WAL_SEG_HDR_SIZE); /* from now on a chunk of zeros */
        p->stage = 1;
        p->off += p->expect;
        if (p->off >= w->seg_size)
            p->stage = 2;
        prep_submit(p);
        return;
    }
    /* Zero-filled with its header and fdatasynced: rename it into place. */
    w->prep = NULL;
    int fd = p->fd;
    p->fd = -1;
    if (close(fd) < 0)
        rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
    char path[PATH_MAX];
    int exists;
    uint32_t tli = wal_seg_path_ex(w, p->segno, path, sizeof(path), &exists);
    if (exists || tli != p->tli) { /* made meanwhile (synchronously), or the timeline moved on */
        if (unlink(p->tmp) < 0)
            rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
        prep_free(p);
        return;
    }
    if (rename(p->tmp, path) < 0) {
        rd_warn("could not rename \"%s\" to \"%s\": %s (the segment will be created synchronously)", p->tmp,
                path, strerror(errno));
        w->prep_failed_segno = p->segno + 1;
        unlink(p->tmp);
        prep_free(p);
        return;
    }
    int rc = wal_fsync_dir(w->wal_dir);
    if (rc < 0) /* the segment's name might not survive a crash: never write records into it */
        rd_panic("could not fsync WAL directory \"%s\": %s", w->wal_dir, rd_strerror(rc));
    if (w->have_prepared && w->prepared_segno + 1 == p->segno)
        w->prepared_segno = p->segno;
    w->st.segments_prepared_async++;
    rd_debug("prepared WAL segment \"%s\" in the background", path);
    prep_free(p);
}

/* Starts preparing segment segno in the background (needs the loop). Any
 * failure just leaves the work to the synchronous path. */
static void prep_start(struct wal *w, uint64_t segno)
{
    char path[PATH_MAX];
    int exists;
    uint32_t tli = wal_seg_path_ex(w, segno, path, sizeof(path), &exists);
    if (exists)
        return;
    struct wal_prep *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return;
    p->io.on_cqe = prep_cqe;
    p->w = w;
    p->segno = segno;
    p->tli = tli;
    p->fd = -1;
    snprintf(p->tmp, sizeof(p->tmp), "%s/segtemp.%d.%" PRIu64, w->wal_dir, (int)getpid(), segno);
    p->chunk = aligned_alloc(WAL_DIO_ALIGN, WAL_PREP_CHUNK);
    if (p->chunk == NULL) {
        prep_free(p);
        return;
    }
    memset(p->chunk, 0, WAL_PREP_CHUNK);
    struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(p->chunk, &h);
    /* Direct writes when the WAL uses them: the zeros go to the device chunk
     * by chunk instead of in one burst at the fdatasync. */
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    p->fd = w->direct ? open(p->tmp, flags | O_DIRECT, 0600) : -1;
    if (p->fd < 0)
        p->fd = open(p->tmp, flags, 0600);
    if (p->fd < 0) {
        rd_warn("could not create \"%s\": %s (the segment will be created synchronously)", p->tmp,
                strerror(errno));
        w->prep_failed_segno = segno + 1;
        prep_free(p);
        return;
    }
    w->prep = p;
    prep_submit(p);
}

static int prep_match(void *ctx, const struct io_uring_cqe *cqe)
{
    return io_uring_cqe_get_data(cqe) == ctx;
}

/* Gives up the current preparation: its temp file is removed now; the
 * struct lives until its in-flight operation completes. With wait, blocks
 * until that operation finished (wal_close), and releases the fd and buffer. */
void wal_prep_abandon(struct wal *w, int wait)
{
    struct wal_prep *p = w->prep;
    if (p == NULL)
        return;
    w->prep = NULL;
    p->w = NULL;
    if (unlink(p->tmp) < 0 && errno != ENOENT)
        rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
    if (wait) {
        wal_wait_cqes_peek(w->opt.loop, prep_match, &p->io, 1, "a WAL segment preparation");
        if (p->fd >= 0 && close(p->fd) < 0)
            rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
        p->fd = -1;
        free(p->chunk);
        p->chunk = NULL;
    }
    p->next_orphan = prep_orphans;
    prep_orphans = p;
}

/* After an append that left the current segment segno filled to off: makes
 * sure segment segno + 1 is (being) prepared. With a loop, in the background
 * from a quarter on; without, synchronously at half (W6). */
int wal_prepare_next(struct wal *w, uint64_t segno, uint64_t off)
{
    if (w->have_prepared && w->prepared_segno > segno)
        return 0;
    if (w->opt.loop == NULL)
        return off >= w->seg_size / 2 ? wal_seg_prepare(w, segno + 1) : 0;
    if (off >= w->seg_size / WAL_PREP_START_DIV && w->prep == NULL && w->prep_failed_segno != segno + 2)
        prep_start(w, segno + 1);
    return 0;
}

int wal_prep_in_flight(const struct wal *w) { return w->prep != NULL; }
uint64_t wal_prep_segno(const struct wal *w) { return w->prep != NULL ? w->prep->segno : UINT64_MAX; }

/* Deletes the segment files with segno in [lo, hi] of every timeline of the
 * chain (including an ancestor's copy of a switch segment, and leftovers past
 * an ancestor's end); fsyncs the dir. */
int wal_seg_remove_range(struct wal *w, uint64_t lo, uint64_t hi)
{
    DIR *d = opendir(w->wal_dir);
    if (d == NULL)
        return -errno;
    int removed = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t s;
        if (wal_seg_name_parse(de->d_name, &tl, &s) != 0 || s < lo || s > hi ||
            wal_chain_find(&w->chain, tl) < 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        wal_seg_fd_forget(w, s);
        if (unlink(path) < 0) {
            if (errno == ENOENT)
                continue;
            rc = -errno;
            rd_error("could not remove WAL segment \"%s\": %s", path, strerror(errno));
            break;
        }
        removed++;
    }
    closedir(d);
    if (rc == 0 && removed)
        rc = wal_fsync_dir(w->wal_dir);
    return rc;
}
