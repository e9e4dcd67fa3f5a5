/*
 * trace_hooks.h — the commit trace on a primary / writer (issue 13; common/trace.h).
 * Each hook in the commit path is one line calling one of these or trace_lsn_reached.
 */
#ifndef RD_SERVER_TRACE_HOOKS_H
#define RD_SERVER_TRACE_HOOKS_H

#include <stdint.h>

#include "common/resp.h"
#include "common/trace.h"

struct server;
struct conn;

/* CLOCK_MONOTONIC µs when sampling is on, else 0 (nothing to pay when tracing is off). */
uint64_t server_trace_now(void);
/* After a write command: if this write is sampled, records RECEIVED (at t_recv_us), PAGES_CHANGED
 * (a: log bytes or records, lsn_before..commit_lsn) and follows commit_lsn until its reply. */
void server_trace_write(struct server *s, uint64_t lsn_before, uint64_t commit_lsn, uint64_t t_recv_us);
/* Each loop turn before shipping: TRACE_WAL_WRITTEN for the traced commits the primary's completed
 * WAL writes cover (stamped when the loop sees the completion: at most one turn late). */
void server_trace_wal_written_slow(struct server *s);
static inline void server_trace_wal_written(struct server *s)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    server_trace_wal_written_slow(s);
#else
    (void)s;
#endif
}
/* End of server_update_release: local flush (classic), durable point, replies released. */
void server_trace_release(struct server *s, uint64_t durable_lsn, uint64_t release_lsn);
/* Replica: a status message was sent (written / flushed / applied up to w / f / ap). */
void server_trace_replica_status(uint64_t w, uint64_t f, uint64_t ap);
/* A replica's number in the trace (the `node` of shipped / ack_received, and which trace marks it has
 * had): its position in --sync-replicas + 1; not listed: the number its name ends with (1..7), else 7. */
uint16_t server_trace_node(const struct server *s, const char *name);
#if defined(RD_TRACE_OFF) && !defined(RD_TRACE_HOOKS_IMPL)
/* The A/B build without the hooks (docs/results.md, issue 13): the commit path calls nothing. */
#define server_trace_now() ((uint64_t)0)
#define server_trace_write(s, lsn_before, commit_lsn, t_recv_us) ((void)(s), (void)(lsn_before), (void)(commit_lsn), (void)(t_recv_us))
#define server_trace_release(s, durable_lsn, release_lsn) ((void)(s), (void)(durable_lsn), (void)(release_lsn))
#define server_trace_replica_status(w, f, ap) ((void)(w), (void)(f), (void)(ap))
#endif
/* REDOUBT.TRACE SAMPLE N | LAST | GET [ID] | LSN | WATCH ID LSN (docs/operations.md). */
void cmd_redoubt_trace(struct server *s, struct conn *c, const struct resp_args *a);

#endif
