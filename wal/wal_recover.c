/*
 * wal_recover.c — crash recovery (scan to the end of the valid log, cut after
 * the last consistency point, replay page records into the engine, W7) and
 * wal_truncate, which cuts the log at a record boundary the same way.
 * Reads the log with wal_reader.c.
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

/* ---------------------------------------------------------------- recovery */

static void log_corruption(struct wal_reader *r)
{
    struct wal_reader_stop s;
    wal_reader_stop_info(r, &s);
    if (strcmp(s.path, s.valid_path) == 0)
        rd_error("WAL corruption at segment file \"%s\" offset %" PRIu64 " (lsn %X/%X): %s; valid "
                 "records follow at offset %" PRIu64 " — refusing to start",
                 s.path, s.offset, (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason, s.valid_offset);
    else
        rd_error("WAL corruption at segment file \"%s\" offset %" PRIu64 " (lsn %X/%X): %s; valid "
                 "records follow in segment file \"%s\" at offset %" PRIu64 " — refusing to start",
                 s.path, s.offset, (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason, s.valid_path,
                 s.valid_offset);
}

/*
 * Pass 1: finds the end of the valid log and the cut point — the end of the
 * last COMMIT, CHECKPOINT or TIMELINE record (or the redo point if there is none).
 * *prev_at_cut is the start of the record that ends at the cut.
 */
struct pending_tl {
    uint32_t new_tli, prev_tli;
    uint64_t lsn;
};

static int recover_scan(struct wal *w, uint64_t *cut, uint64_t *prev_at_cut, uint64_t *end,
                        uint64_t *nrecords, struct pending_tl *tl)
{
    struct wal_reader *r;
    int rc = wal_reader_open(w->dir, w->ctl.redo_lsn, &r);
    if (rc < 0)
        return rc;
    *cut = *end = w->ctl.redo_lsn;
    *prev_at_cut = 0;
    *nrecords = 0;
    int first = 1;
    struct wal_record rec;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        if (first) {
            *prev_at_cut = rec.prev_lsn; /* the record before redo */
            first = 0;
        }
        (*nrecords)++;
        *end = rec.end_lsn;
        /* COMMIT, CHECKPOINT and TIMELINE are consistency points (W7). */
        if (rec.type == WAL_REC_COMMIT || rec.type == WAL_REC_CHECKPOINT || rec.type == WAL_REC_TIMELINE) {
            *cut = rec.end_lsn;
            *prev_at_cut = rec.lsn;
        }
        if (rec.type == WAL_REC_TIMELINE && rd_get_u32le(rec.body) > tl->new_tli) {
            tl->new_tli = rd_get_u32le(rec.body);
            tl->prev_tli = rd_get_u32le(rec.body + 4);
            tl->lsn = rec.lsn;
        }
    }
    if (rc == RD_ECORRUPT)
        log_corruption(r);
    else if (rc == 0) {
        struct wal_reader_stop s;
        wal_reader_stop_info(r, &s);
        if (s.reason != NULL)
            rd_info("end of WAL at lsn %X/%X: %s", (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason);
    }
    wal_reader_close(r);
    return rc;
}

/* Zeroes the log from cut to the end of its segment, deletes later segments,
 * fdatasyncs every segment from the redo point up to the cut. */
static int recover_truncate(struct wal *w, uint64_t cut)
{
    uint64_t segno = cut / w->seg_size, off = cut % w->seg_size;
    int rc;
    wal_prep_abandon(w, 0); /* it could land past the cut */
    if (off == 0) {
        /* The cut is a segment boundary: segment segno starts afresh. */
        if ((rc = wal_seg_remove_range(w, segno, UINT64_MAX)) < 0)
            return rc;
    } else {
        if ((rc = wal_seg_remove_range(w, segno + 1, UINT64_MAX)) < 0)
            return rc;
        w->have_prepared = 0;
        if ((rc = wal_seg_prepare(w, segno)) < 0) /* redo may sit in a segment never created */
            return rc;
        char path[PATH_MAX];
        wal_seg_path(w, segno, path, sizeof(path));
        /* A buffered fd of its own: the writer's may be O_DIRECT (unaligned here). */
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            rd_error("could not open WAL segment \"%s\": %s", path, rd_strerror(rc));
            return rc;
        }
        /* Zero the rest of the segment, unless it already is (a clean restart). */
        uint64_t len = w->seg_size - off;
        uint8_t *tail = malloc(len);
        if (tail == NULL) {
            close(fd);
            return -ENOMEM;
        }
        long n = wal_pread_all(fd, tail, len, off);
        rc = n < 0 ? (int)n : 0;
        int dirty = rc < 0 || (uint64_t)n != len;
        for (uint64_t i = 0; !dirty && i < len; i++)
            dirty = tail[i] != 0;
        if (dirty) {
            memset(tail, 0, len);
            rc = wal_pwrite_all(fd, tail, len, off);
            if (rc == 0 && fdatasync(fd) < 0)
                rd_panic("could not fdatasync WAL segment \"%s\": %s", path, strerror(errno));
        }
        free(tail);
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc < 0) {
            rd_error("could not write WAL segment \"%s\": %s", path, rd_strerror(rc));
            return rc;
        }
    }
    /* Bytes read during recovery may exist only in the page cache (the last
     * process died before its fdatasync): make them durable before any data
     * page derived from them can be written. */
    uint64_t last = off == 0 ? segno : segno + 1;
    for (uint64_t s = w->ctl.redo_lsn / w->seg_size; s < last; s++) {
        int fd = wal_seg_fd(w, s);
        if (fd < 0)
            return fd;
        if (fdatasync(fd) < 0) {
            char path[PATH_MAX];
            wal_seg_path(w, s, path, sizeof(path));
            rd_panic("could not fdatasync WAL segment \"%s\": %s", path, strerror(errno));
        }
    }
    w->have_prepared = 0;
    if (off != 0) {
        w->prepared_segno = segno;
        w->have_prepared = 1;
    } else if (segno > 0) {
        w->prepared_segno = segno - 1;
        w->have_prepared = 1;
    }
    return 0;
}

/* Pass 2: applies every page record that ends at or before the cut. */
static int recover_replay(struct wal *w, struct engine *e, uint64_t cut, uint64_t *applied)
{
    struct wal_reader *r;
    int rc = wal_reader_open(w->dir, w->ctl.redo_lsn, &r);
    if (rc < 0)
        return rc;
    struct wal_record rec;
    *applied = 0;
    while ((rc = wal_reader_next(r, &rec)) == 1 && rec.end_lsn <= cut) {
        if (rec.type != WAL_REC_PAGE_DELTA && rec.type != WAL_REC_PAGE_IMAGE)
            continue;
        rc = engine_redo(e, rec.page_id, rec.type, rec.body, rec.body_len, rec.end_lsn);
        if (rc < 0) {
            rd_error("could not replay WAL record at lsn %X/%X (page %" PRIu32 ", %s): %s",
                     (unsigned)(rec.lsn >> 32), (unsigned)rec.lsn, rec.page_id,
                     wal_rec_type_name(rec.type), rd_strerror(rc));
            break;
        }
        (*applied)++;
    }
    wal_reader_close(r);
    return rc < 0 ? rc : 0;
}

int wal_recover(struct wal *w, struct engine *e)
{
    rd_assert(!w->recovered);
    uint64_t t0 = rd_now_us();
    uint64_t cut, prev, end, nrec, applied;
    struct pending_tl tl = {0, 0, 0};
    int rc = recover_scan(w, &cut, &prev, &end, &nrec, &tl);
    if (rc < 0)
        return rc;
    if (end > cut)
        rd_info("discarding %" PRIu64 " bytes of WAL after the last commit at %X/%X (transaction "
                "without a commit record)",
                end - cut, (unsigned)(cut >> 32), (unsigned)cut);
    if ((rc = recover_truncate(w, cut)) < 0)
        return rc;
    w->insert_lsn = w->flushed_lsn = w->written_lsn = cut;
    w->prev_lsn = prev;
    w->prev_unknown = nrec == 0;
    w->recovered = 1;
    if (cut % w->seg_size != 0 && (rc = wal_seg_prepare(w, cut / w->seg_size)) < 0)
        return rc;
    if ((rc = wal_bufs_reset_at(w, cut)) < 0)
        return rc;
    if ((rc = recover_replay(w, e, cut, &applied)) < 0)
        return rc;
    if ((rc = engine_reload_meta(e)) < 0) {
        rd_error("could not reload the engine's meta page after recovery: %s", rd_strerror(rc));
        return rc;
    }
    engine_set_fpi_threshold(e, w->ctl.redo_lsn);
    if (tl.new_tli > w->timeline) {
        /* A TIMELINE record whose switch did not complete (crash between the
         * record and the control file update): complete it now. */
        if (tl.prev_tli != w->timeline) {
            rd_error("WAL holds a switch from timeline %" PRIu32 " to %" PRIu32 " at %X/%X, but this "
                     "log is on timeline %" PRIu32,
                     tl.prev_tli, tl.new_tli, (unsigned)(tl.lsn >> 32), (unsigned)tl.lsn, w->timeline);
            return RD_ECORRUPT;
        }
        rd_info("completing the switch to timeline %" PRIu32 " at %X/%X", tl.new_tli,
                (unsigned)(tl.lsn >> 32), (unsigned)tl.lsn);
        if ((rc = wal_finish_switch(w, tl.new_tli, tl.lsn)) < 0)
            return rc;
    }
    w->ctl.state = WAL_STATE_IN_PRODUCTION;
    w->ctl.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &w->ctl)) < 0)
        return rc;
    rd_info("recovery: replayed %" PRIu64 " page records of %" PRIu64 " from redo %X/%X to %X/%X in "
            "%" PRIu64 " ms",
            applied, nrec, (unsigned)(w->ctl.redo_lsn >> 32), (unsigned)w->ctl.redo_lsn,
            (unsigned)(cut >> 32), (unsigned)cut, (rd_now_us() - t0) / 1000);
    return 0;
}

/* ---------------------------------------------------------------- truncation */

int wal_truncate(struct wal *w, uint64_t lsn)
{
    rd_assert(w->recovered);
    char s[32];
    wal_fmt_lsn(s, sizeof(s), lsn);
    if (w->in_flight) {
        rd_error("cannot truncate the WAL at %s with a flush in flight", s);
        return RD_ESTATE;
    }
    if (lsn > w->insert_lsn || lsn < w->ctl.redo_lsn || (w->chain.n > 1 && lsn <= wal_timeline_switch_lsn(w))) {
        rd_error("cannot truncate the WAL at %s: outside [redo, end] of the current timeline", s);
        return -EINVAL;
    }
    if (w->spread.active && w->spread.restart && lsn <= w->spread.restart_ckpt_lsn)
        w->spread.active = w->spread.restart = 0; /* W17: its CHECKPOINT record is being cut away */
    if (lsn == w->insert_lsn)
        return 0;
    int rc = wal_flush_sync(w, w->insert_lsn); /* the reader below reads the files */
    if (rc < 0)
        return rc;
    struct wal_reader *r;
    if ((rc = wal_reader_open_timeline(w->dir, w->ctl.redo_lsn, wal_timeline(w), &r)) < 0)
        return rc;
    uint64_t target = wal_next_record_lsn(lsn, w->seg_size);
    int found = wal_next_record_lsn(w->ctl.redo_lsn, w->seg_size) == target, any = 0;
    uint64_t prev = 0;
    struct wal_record rec;
    while (!found && (rc = wal_reader_next(r, &rec)) == 1) {
        if (!any)
            prev = rec.prev_lsn;
        any = 1;
        uint64_t end = rec.type == WAL_REC_SWITCH ? rec.lsn - rec.lsn % w->seg_size + w->seg_size : rec.end_lsn;
        if (rec.lsn >= target)
            break;
        if (wal_next_record_lsn(end, w->seg_size) == target) {
            found = 1;
            prev = rec.lsn;
        }
    }
    if (!found) {
        char where[PATH_MAX];
        uint64_t where_off = 0;
        wal_reader_position(r, where, sizeof(where), &where_off);
        rd_error("cannot truncate the WAL at %s: not a record boundary (the log read from %X/%X along "
                 "timeline %u stops at \"%s\" offset %" PRIu64 ", rc %d)",
                 s, (unsigned)(w->ctl.redo_lsn >> 32), (unsigned)w->ctl.redo_lsn, wal_timeline(w), where,
                 where_off, rc);
    }
    wal_reader_close(r);
    if (!found) {
        return rc < 0 ? rc : -EINVAL;
    }
    if ((rc = recover_truncate(w, lsn)) < 0)
        return rc;
    wal_prune_fds(w);
    w->insert_lsn = w->flushed_lsn = w->written_lsn = lsn;
    w->prev_lsn = prev;
    w->prev_unknown = !any && w->prev_unknown;
    if (lsn % w->seg_size != 0 && (rc = wal_seg_prepare(w, lsn / w->seg_size)) < 0)
        return rc;
    if ((rc = wal_bufs_reset_at(w, lsn)) < 0)
        return rc;
    rd_info("WAL truncated at %s", s);
    return 0;
}
