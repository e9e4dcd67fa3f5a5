/*
 * repl_restartpoint.c — a replica's restart points, spread (wal W17): begun at the
 * primary's CHECKPOINT record as the replica replays it, then one slice of dirty
 * pages per loop turn, so replay and the WAL receiver's acknowledgements never
 * wait for a whole buffer pool's writes (the blocking form stalled the replica's
 * loop, and with it every synchronous commit waiting for this replica).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/repl_int.h"

int repl_restartpoint_begin(struct server *s, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    const char *e = getenv("REDOUBT_CHECKPOINT_SPREAD"); /* 0: one blocking step (A/B runs) */
    if (e != NULL && strcmp(e, "0") == 0)
        return wal_restartpoint(s->wal, s->engine, checkpoint_lsn, redo_lsn);
    uint64_t iv = s->cfg.checkpoint_interval_ms;
    /* Well inside REPL_RESTARTPOINT_MS, so one sweep ends before the next may begin. */
    uint64_t spread_ms = RD_MIN(iv ? iv / 2 : 5000u, REPL_RESTARTPOINT_MS / 2);
    return wal_restartpoint_begin(s->wal, s->engine, checkpoint_lsn, redo_lsn, spread_ms);
}

void repl_restartpoint_step(struct server *s)
{
    if (s->wal == NULL || s->engine == NULL || !wal_restartpoint_active(s->wal) || wal_flush_in_flight(s->wal))
        return;
    int done = 0;
    int rc = wal_checkpoint_step(s->wal, s->engine, &done);
    if (rc == 0 && done)
        rc = wal_restartpoint_end(s->wal, s->engine);
    if (rc < 0)
        rd_panic("restart point failed: %s", rd_strerror(rc));
}
