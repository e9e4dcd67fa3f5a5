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

static int checkpoint(struct wal *w, struct engine *e, uint32_t state)
{
    rd_assert(w->recovered);
    uint64_t redo = w->insert_lsn;
    int rc = wal_flush_sync(w, w->insert_lsn);
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("checkpoint: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
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

int wal_checkpoint(struct wal *w, struct engine *e) { return checkpoint(w, e, WAL_STATE_IN_PRODUCTION); }

void wal_promote_fast(struct wal *w, struct engine *e)
{
    rd_assert(w->recovered && w->ctl.redo_lsn <= w->insert_lsn);
    engine_set_fpi_threshold(e, w->ctl.redo_lsn);
}

int wal_needs_checkpoint(const struct wal *w)
{
    if (!w->recovered || w->insert_lsn == w->ckpt_end_lsn || w->insert_lsn == w->ctl.redo_lsn)
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

int wal_restartpoint(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    rd_assert(w->recovered);
    checkpoint_lsn = wal_next_record_lsn(checkpoint_lsn, w->seg_size); /* as wal_append_encoded */
    if (redo_lsn > checkpoint_lsn || checkpoint_lsn >= w->insert_lsn || redo_lsn < w->ctl.redo_lsn) {
        rd_error("restart point: checkpoint %X/%X redo %X/%X is not within this log", (unsigned)(checkpoint_lsn >> 32),
                 (unsigned)checkpoint_lsn, (unsigned)(redo_lsn >> 32), (unsigned)redo_lsn);
        return -EINVAL;
    }
    int rc = wal_flush_sync(w, w->insert_lsn); /* W8: the CHECKPOINT record is durable */
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("restart point: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
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
