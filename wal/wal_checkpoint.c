/*
 * wal_checkpoint.c — checkpoints (primary, standalone), restart points (a
 * replica's checkpoint at its primary's CHECKPOINT record), the clean shutdown
 * checkpoint, and the removal of segments below the redo point and the keep
 * LSN (the replication slot).
 */
#include "wal/wal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"
#include "wal/wal_writer.h"

void wal_set_keep_lsn(struct wal *w, uint64_t lsn) { w->keep_lsn = lsn; }

/* ---------------------------------------------------------------- checkpoints */

/* The second half of every checkpoint: the pages the redo point needs are
 * written and fdatasynced; log the CHECKPOINT record, make it durable, point
 * the control file at it, and remove what the new redo point no longer needs. */
static int checkpoint_finish(struct wal *w, struct engine *e, uint32_t state, uint64_t redo)
{
    int rc;
    uint8_t body[WAL_CHECKPOINT_BODY];
    uint64_t now = rd_wall_us();
    rd_put_u64le(body, redo);
    rd_put_u32le(body + 8, w->timeline);
    rd_put_u64le(body + 12, now);
    uint64_t start, end;
    if ((rc = wal_append_record(w, WAL_REC_CHECKPOINT, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start,
                            &end)) < 0)
        return rc;
    if ((rc = wal_flush_sync(w, end)) < 0)
        return rc;
    struct wal_control c = w->ctl;
    c.state = state;
    c.checkpoint_lsn = start;
    c.redo_lsn = redo;
    c.time_us = now;
    if ((rc = wal_control_write(w->dir, &c)) < 0)
        return rc;
    w->ctl = c;
    engine_set_fpi_threshold(e, redo);
    w->ckpt_end_lsn = end;
    w->last_ckpt_ms = rd_now_ms();
    w->st.checkpoints++;
    /* Remove segments wholly below the redo point and the keep LSN. */
    uint64_t keep = redo;
    if (w->keep_lsn != 0)
        keep = RD_MIN(keep, w->keep_lsn);
    uint64_t keep_seg = keep / w->seg_size;
    if (keep_seg > 0) {
        wal_prune_fds(w);
        if ((rc = wal_seg_remove_range(w, 0, keep_seg - 1)) < 0)
            return rc;
    }
    return 0;
}

static int checkpoint(struct wal *w, struct engine *e, uint32_t state)
{
    rd_assert(w->recovered);
    w->spread.active = 0; /* a full checkpoint supersedes a spread one in progress */
    w->spread.restart = 0;
    uint64_t redo = w->insert_lsn;
    int rc = wal_flush_sync(w, w->insert_lsn);
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("checkpoint: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
    return checkpoint_finish(w, e, state, redo);
}

int wal_checkpoint(struct wal *w, struct engine *e) { return checkpoint(w, e, WAL_STATE_IN_PRODUCTION); }

/* ---------------------------------------------------------------- spread checkpoints */

/*
 * A spread checkpoint (W-spread, as PostgreSQL's checkpointer with
 * checkpoint_completion_target) writes the dirty pages in slices between loop
 * turns instead of in one blocking step:
 *
 *   begin: redo = insert LSN; the WAL is flushed to it (one group flush); from
 *          now on the first change to a page whose LSN is below redo logs a
 *          full-page image (engine_set_fpi_threshold), exactly as after a
 *          blocking checkpoint;
 *   step:  one slice of the buffer pool (engine_flush_dirty_slice), paced so
 *          the sweep ends about spread_ms after begin (a turn that is on
 *          schedule writes nothing); only pages with LSN <=
 *          redo are written: a page changed after redo is restored by recovery
 *          from the full image its first change after redo logged (eviction
 *          writes pages too, always after flushing the WAL to their LSN);
 *   end:   one fdatasync of the data file (most of it already written back by
 *          sync_file_range in the slices), then the CHECKPOINT record, the
 *          control file and segment removal (checkpoint_finish), as before.
 *
 * Until the control file is written, recovery starts at the previous redo
 * point, which is still valid: nothing below it was removed. A crash in the
 * middle therefore loses nothing, it just replays more.
 */
#define WAL_SPREAD_MAX_WRITES 64u  /* pages per slice (512 KiB): bounds one loop turn's stall */

int wal_checkpoint_active(const struct wal *w) { return w->spread.active; }

int wal_checkpoint_begin(struct wal *w, struct engine *e, uint64_t spread_ms)
{
    rd_assert(w->recovered && !w->spread.active);
    uint64_t redo = w->insert_lsn;
    int rc = wal_flush_sync(w, redo);
    if (rc < 0)
        return rc;
    engine_set_fpi_threshold(e, redo);
    w->spread.active = 1;
    w->spread.restart = 0;
    w->spread.redo_lsn = redo;
    w->spread.start_ms = rd_now_ms();
    w->spread.spread_ms = spread_ms;
    w->spread.cursor = 0;
    w->spread.pages_written = 0;
    return 0;
}

int wal_checkpoint_step(struct wal *w, struct engine *e, int *done)
{
    rd_assert(w->spread.active && done != NULL);
    *done = 0;
    size_t nframes = engine_frame_count(e);
    uint64_t el = rd_now_ms() - w->spread.start_ms;
    /* Where the sweep should be by now: linear in time over spread_ms, and in
     * WAL over half of checkpoint_wal_bytes (whichever is ahead, as PostgreSQL's
     * checkpoint_completion_target), at least a minimum slice. */
    double frac = w->spread.spread_ms == 0 ? 1.0 : (double)el / (double)w->spread.spread_ms;
    if (w->opt.checkpoint_wal_bytes != 0)
        frac = RD_MAX(frac, (double)(w->insert_lsn - w->spread.redo_lsn) / (double)(w->opt.checkpoint_wal_bytes / 2));
    size_t due = frac >= 1.0 ? nframes : (size_t)((double)nframes * frac);
    if (due <= w->spread.cursor)
        return 0; /* on schedule: nothing this turn */
    size_t scan = due - w->spread.cursor;
    int rc = engine_flush_dirty_slice(e, &w->spread.cursor, w->spread.redo_lsn, WAL_SPREAD_MAX_WRITES, scan);
    if (rc < 0) {
        rd_error("checkpoint: could not write dirty pages: %s", rd_strerror(rc));
        return rc;
    }
    w->spread.pages_written += (size_t)rc;
    *done = w->spread.cursor >= nframes;
    return 0;
}

int wal_checkpoint_end(struct wal *w, struct engine *e)
{
    rd_assert(w->spread.active && !w->spread.restart && w->spread.cursor >= engine_frame_count(e));
    int rc = engine_sync(e);
    if (rc < 0)
        return rc;
    w->spread.active = 0;
    if ((rc = checkpoint_finish(w, e, WAL_STATE_IN_PRODUCTION, w->spread.redo_lsn)) < 0)
        return rc;
    w->st.spread_checkpoints++;
    return 0;
}

void wal_promote_fast(struct wal *w, struct engine *e)
{
    rd_assert(w->recovered && w->ctl.redo_lsn <= w->insert_lsn);
    /* W17: a spread restart point in progress is dropped; the control file keeps the last one,
     * whose redo point the FPI threshold below matches. */
    w->spread.active = 0;
    w->spread.restart = 0;
    engine_set_fpi_threshold(e, w->ctl.redo_lsn);
}

int wal_needs_checkpoint(const struct wal *w)
{
    if (!w->recovered || w->spread.active || w->insert_lsn == w->ckpt_end_lsn || w->insert_lsn == w->ctl.redo_lsn)
        return 0; /* nothing logged since the last checkpoint */
    if (w->opt.checkpoint_wal_bytes != 0 && w->insert_lsn - w->ctl.redo_lsn > w->opt.checkpoint_wal_bytes)
        return 1;
    if (w->opt.checkpoint_interval_ms != 0 &&
        rd_now_ms() - w->last_ckpt_ms > w->opt.checkpoint_interval_ms)
        return 1;
    return 0;
}

int wal_shutdown(struct wal *w, struct engine *e)
{
    int rc = checkpoint(w, e, WAL_STATE_SHUT_DOWN);
    if (rc == 0)
        rd_info("WAL shut down cleanly at %X/%X", (unsigned)(w->insert_lsn >> 32),
                (unsigned)w->insert_lsn);
    return rc;
}

/* ---------------------------------------------------------------- restart points, cloning */

/* checkpoint_lsn (as the CHECKPOINT record's start, normalised as wal_append_encoded does) and
 * redo_lsn must lie in this log, above the current redo point. */
static int restartpoint_check(const struct wal *w, uint64_t *checkpoint_lsn, uint64_t redo_lsn)
{
    *checkpoint_lsn = wal_next_record_lsn(*checkpoint_lsn, w->seg_size);
    if (redo_lsn > *checkpoint_lsn || *checkpoint_lsn >= w->insert_lsn || redo_lsn < w->ctl.redo_lsn) {
        rd_error("restart point: checkpoint %X/%X redo %X/%X is not within this log", (unsigned)(*checkpoint_lsn >> 32),
                 (unsigned)*checkpoint_lsn, (unsigned)(redo_lsn >> 32), (unsigned)redo_lsn);
        return -EINVAL;
    }
    return 0;
}

static int restartpoint_finish(struct wal *w, uint64_t checkpoint_lsn, uint64_t redo_lsn);

int wal_restartpoint(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    rd_assert(w->recovered);
    w->spread.active = 0; /* a blocking restart point supersedes a spread one in progress */
    int rc = restartpoint_check(w, &checkpoint_lsn, redo_lsn);
    if (rc < 0)
        return rc;
    rc = wal_flush_sync(w, w->insert_lsn); /* W8: the CHECKPOINT record is durable */
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("restart point: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
    return restartpoint_finish(w, checkpoint_lsn, redo_lsn);
}

/* W17: a spread restart point writes only pages with LSN <= redo_lsn, in slices
 * (wal_checkpoint_step), like W14's spread checkpoint. A page changed after redo_lsn is
 * not needed: the primary logged a full-page image for the first change of every page after
 * its checkpoint's redo point (its FPI threshold was redo_lsn from that checkpoint's begin),
 * and this replica replays that image in recovery from redo_lsn. The WAL is flushed to the
 * insert point first, so no page written is ahead of the local log. */
int wal_restartpoint_begin(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn,
                           uint64_t spread_ms)
{
    rd_assert(w->recovered && !w->spread.active);
    (void)e;
    int rc = restartpoint_check(w, &checkpoint_lsn, redo_lsn);
    if (rc < 0)
        return rc;
    if ((rc = wal_flush_sync(w, w->insert_lsn)) < 0)
        return rc;
    w->spread.active = 1;
    w->spread.restart = 1;
    w->spread.restart_ckpt_lsn = checkpoint_lsn;
    w->spread.redo_lsn = redo_lsn;
    w->spread.start_ms = rd_now_ms();
    w->spread.spread_ms = spread_ms;
    w->spread.cursor = 0;
    w->spread.pages_written = 0;
    return 0;
}

int wal_restartpoint_end(struct wal *w, struct engine *e)
{
    rd_assert(w->spread.active && w->spread.restart && w->spread.cursor >= engine_frame_count(e));
    int rc = engine_sync(e);
    if (rc < 0)
        return rc;
    w->spread.active = 0;
    w->spread.restart = 0;
    if ((rc = restartpoint_finish(w, w->spread.restart_ckpt_lsn, w->spread.redo_lsn)) < 0)
        return rc;
    w->st.spread_checkpoints++;
    return 0;
}

static int restartpoint_finish(struct wal *w, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    int rc;
    struct wal_control c = w->ctl;
    c.state = WAL_STATE_IN_PRODUCTION;
    c.checkpoint_lsn = checkpoint_lsn;
    c.redo_lsn = redo_lsn;
    c.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &c)) < 0)
        return rc;
    w->ctl = c;
    w->last_ckpt_ms = rd_now_ms();
    w->st.checkpoints++;
    uint64_t keep = redo_lsn;
    if (w->keep_lsn != 0)
        keep = RD_MIN(keep, w->keep_lsn);
    uint64_t keep_seg = keep / w->seg_size;
    if (keep_seg > 0) {
        wal_prune_fds(w);
        if ((rc = wal_seg_remove_range(w, 0, keep_seg - 1)) < 0)
            return rc;
    }
    return 0;
}

int wal_restartpoint_active(const struct wal *w) { return w->spread.active && w->spread.restart; }
