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
/* End of server_update_release: local flush (classic), durable point, replies released. */
void server_trace_release(struct server *s, uint64_t durable_lsn, uint64_t release_lsn);
/* Replica: a status message was sent (written / flushed / applied up to w / f / ap). */
void server_trace_replica_status(uint64_t w, uint64_t f, uint64_t ap);
/* A replica's number in the trace: its position in --sync-replicas + 1 (0: not listed). */
uint16_t server_trace_node(const struct server *s, const char *name);
/* REDOUBT.TRACE SAMPLE N | LAST | GET [ID] | LSN | WATCH ID LSN (docs/operations.md). */
void cmd_redoubt_trace(struct server *s, struct conn *c, const struct resp_args *a);

#endif
