/*
 * trace_hooks.c — the commit trace on a primary / writer (trace_hooks.h, common/trace.h).
 *
 * What is traced today, per sampled write, on the process that took it (classic primary or aurora
 * writer): received -> pages changed (log bytes: WAL bytes in classic, LSNs in aurora) -> [aurora:
 * redo batch sealed (bytes before lz4)] -> shipped to each replica / storage node (bytes on the wire
 * in aurora) -> classic: WAL fsynced locally -> acknowledgement from each peer (its flush LSN / SCL)
 * -> durable (sync set reached / VDL) -> reply released. A classic replica told to watch the WAL past
 * an LSN (REDOUBT.TRACE WATCH, before the write) records received -> written -> flushed -> acked
 * (the last three stamped when its status message reports them) -> applied. Since the trace mark
 * (common/trace.h C22) a replica follows the exact commit under the primary's id, as storage nodes
 * (storage-node/sn_trace.c) and aurora readers (aurora/aur_trace.c) do: WATCH is kept for scripts.
 */
#define RD_TRACE_HOOKS_IMPL /* the real functions, also in an RD_TRACE_OFF build */
#include "server/trace_hooks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"
#include "wal/wal.h"

uint64_t server_trace_now(void)
{
#ifndef RD_TRACE_OFF
    return trace_every ? rd_now_us() : 0;
#else
    return 0;
#endif
}

static uint64_t last_id; /* the newest sampled write (REDOUBT.TRACE LAST) */

void server_trace_write(struct server *s, uint64_t lsn_before, uint64_t commit_lsn, uint64_t t_recv_us)
{
    (void)s;
    if (t_recv_us == 0 || commit_lsn <= lsn_before)
        return; /* tracing off, or the command changed nothing */
    uint64_t id = trace_sample(trace_every);
    if (id == 0 || trace_commit_begin(id, commit_lsn) < 0)
        return;
    trace_record_slow(id, TRACE_RECEIVED, 0, lsn_before, 0, t_recv_us);
    trace_record_slow(id, TRACE_PAGES_CHANGED, 0, commit_lsn - lsn_before, commit_lsn, 0);
    last_id = id;
}

void server_trace_release(struct server *s, uint64_t durable_lsn, uint64_t release_lsn)
{
    if (__builtin_expect(trace_ninflight == 0, 1) || (s->role != SERVER_ROLE_PRIMARY && s->role != SERVER_ROLE_WRITER))
        return; /* a replica follows a watched commit's WAL, not its release */
    if (s->role == SERVER_ROLE_PRIMARY)
        trace_lsn_reached(TRACE_WAL_FSYNCED, 0, durable_lsn, 0);
    trace_lsn_reached(TRACE_DURABLE, 0, release_lsn, durable_lsn);
    trace_commits_released(release_lsn);
}

void server_trace_wal_written_slow(struct server *s)
{
    if (s->role == SERVER_ROLE_PRIMARY && s->wal != NULL)
        trace_lsn_reached(TRACE_WAL_WRITTEN, 0, wal_written_lsn(s->wal), 0);
}

void server_trace_replica_status(uint64_t w, uint64_t f, uint64_t ap)
{
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_lsn_reached(TRACE_PEER_WRITTEN, 0, w, 0);
    trace_lsn_reached(TRACE_PEER_FSYNCED, 0, f, 0);
    trace_lsn_reached(TRACE_PEER_ACKED, 0, f, ap);
}

uint16_t server_trace_node(const struct server *s, const char *name)
{
    if (name == NULL)
        return TRACE_MAX_NODES - 1;
    for (unsigned i = 0; i < s->cfg.sync_nnames; i++)
        if (strcmp(s->cfg.sync_names[i], name) == 0)
            return (uint16_t)(i + 1);
    /* Not a sync replica (e.g. --commit local): the number its name ends with ("replica2" -> 2, as
     * scripts/cluster names them), so each gets its own trace marks; else the last index. */
    size_t n = strlen(name), k = n;
    while (k > 0 && name[k - 1] >= '0' && name[k - 1] <= '9')
        k--;
    unsigned long v = k < n && n - k <= 3 ? strtoul(name + k, NULL, 10) : 0;
    return (uint16_t)(v >= 1 && v < TRACE_MAX_NODES ? v : TRACE_MAX_NODES - 1);
}

static int arg_is(const struct resp_arg *a, const char *w)
{
    size_t n = strlen(w);
    return a->len == n && strncasecmp((const char *)a->ptr, w, n) == 0;
}

static int arg_u64(const struct resp_arg *a, uint64_t *out, int base)
{
    char tmp[24];
    if (a->len == 0 || a->len >= sizeof(tmp))
        return -EINVAL;
    memcpy(tmp, a->ptr, a->len);
    tmp[a->len] = 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, base);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

void cmd_redoubt_trace(struct server *s, struct conn *c, const struct resp_args *a)
{
    (void)s;
    int rc = 0;
    uint64_t v = 0;
    if (a->n == 3 && arg_is(&a->v[1], "sample") && arg_u64(&a->v[2], &v, 10) == 0 && v <= 1000000) {
        trace_every = (unsigned)v;
        rc = resp_simple(&c->out, "OK");
    } else if (a->n == 2 && arg_is(&a->v[1], "lsn")) { /* where the next commit will start */
        uint64_t lsn = s->ops->insert_lsn(s); /* the role's: local WAL (classic), redo LSN (aurora) */
        rc = resp_int(&c->out, (int64_t)lsn);
    } else if (a->n == 4 && arg_is(&a->v[1], "watch")) {
        uint64_t id = 0, lsn = 0;
        if (arg_u64(&a->v[2], &id, 16) < 0 || arg_u64(&a->v[3], &lsn, 10) < 0 || id == 0)
            rc = resp_error(&c->out, "ERR REDOUBT.TRACE WATCH ID LSN: a nonzero hex id and a decimal LSN");
        else if (trace_watch(id, lsn) < 0)
            rc = resp_error(&c->out, "ERR REDOUBT.TRACE WATCH: 64 traces are being followed already");
        else
            rc = resp_simple(&c->out, "OK");
    } else if (a->n == 2 && arg_is(&a->v[1], "last")) {
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)last_id);
        rc = last_id ? resp_bulk_str(&c->out, hex) : resp_null(&c->out);
    } else if ((a->n == 2 || a->n == 3) && arg_is(&a->v[1], "get")) {
        uint64_t id = 0;
        if (a->n == 3 && arg_u64(&a->v[2], &id, 16) < 0) {
            rc = resp_error(&c->out, "ERR REDOUBT.TRACE GET: the id is 16 hex digits (REDOUBT.TRACE LAST)");
        } else {
            struct rd_buf b = {0};
            const char *proc = s->cfg.name ? s->cfg.name : "writer";
            if (trace_format(&b, id, proc) < 0)
                rd_panic("out of memory for a trace");
            rc = resp_bulk(&c->out, b.data ? (const char *)b.data : "", b.len);
            rd_buf_free(&b);
        }
    } else {
        rc = resp_error(&c->out, "ERR usage: REDOUBT.TRACE SAMPLE N (1 in N writes; 0: off) | LAST | GET [ID] | LSN | "
                                 "WATCH ID LSN");
    }
    if (rc < 0)
        rd_panic("out of memory for a reply");
}
