/*
 * repl_restartpoint.c — a replica's restart points, spread (wal W17): begun at the
 * primary's CHECKPOINT record as the replica replays it, then one slice of dirty
 * pages per loop turn, so replay and the WAL receiver's acknowledgements never
 * wait for a whole buffer pool's writes (the blocking form stalled the replica's
 * loop, and with it every synchronous commit waiting for this replica).
 * Each restart point logs its longest stall of the loop, for A/B runs.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/repl_int.h"

static struct {
    uint64_t start_us, max_step_us;
    unsigned steps;
} rp;

int repl_restartpoint_begin(struct server *s, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    /* Blocking unless REDOUBT_RESTARTPOINT_SPREAD=1: measured on this machine, the spread form
     * cost 20-35 % of sync throughput (wal/README W17); REDOUBT_CHECKPOINT_SPREAD=0 forces blocking. */
    const char *e = getenv("REDOUBT_CHECKPOINT_SPREAD"), *r = getenv("REDOUBT_RESTARTPOINT_SPREAD");
    uint64_t t0 = rd_now_us();
    if ((e != NULL && strcmp(e, "0") == 0) || r == NULL || strcmp(r, "1") != 0) {
        int rc = wal_restartpoint(s->wal, s->engine, checkpoint_lsn, redo_lsn);
        if (rc == 0)
            rd_info("restart point (blocking) complete: the loop stalled %" PRIu64 " ms", (rd_now_us() - t0) / 1000);
        return rc;
    }
    uint64_t iv = s->cfg.checkpoint_interval_ms;
    /* Well inside REPL_RESTARTPOINT_MS, so one sweep ends before the next may begin. */
    uint64_t spread_ms = RD_MIN(iv ? iv / 2 : 5000u, REPL_RESTARTPOINT_MS / 2);
    int rc = wal_restartpoint_begin(s->wal, s->engine, checkpoint_lsn, redo_lsn, spread_ms);
    rp.start_us = t0;
    rp.max_step_us = rd_now_us() - t0;
    rp.steps = 0;
    return rc;
}

void repl_restartpoint_step(struct server *s)
{
    if (s->wal == NULL || s->engine == NULL || !wal_restartpoint_active(s->wal) || wal_flush_in_flight(s->wal))
        return;
    int done = 0;
    uint64_t t0 = rd_now_us();
    int rc = wal_checkpoint_step(s->wal, s->engine, &done);
    if (rc == 0 && done)
        rc = wal_restartpoint_end(s->wal, s->engine);
    if (rc < 0)
        rd_panic("restart point failed: %s", rd_strerror(rc));
    rp.max_step_us = RD_MAX(rp.max_step_us, rd_now_us() - t0);
    rp.steps++;
    if (done)
        rd_info("restart point (spread) complete in %" PRIu64 " ms over %u loop turns: the longest stall %" PRIu64
                " us", (rd_now_us() - rp.start_us) / 1000, rp.steps, rp.max_step_us);
}
