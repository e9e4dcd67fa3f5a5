/*
 * server.c — the instance's event loop: listener, connections, reply release
 * on durability, group commit driving, checkpoints, signals.
 *
 * One loop turn (server_turn):
 *   1. submit queued SQEs, wait for completions (or the 100 ms timer), dispatch:
 *      accepts create conns, multishot recvs append to conn.in, sends complete,
 *      WAL flush completions advance durable_lsn and release waiting replies;
 *   2. execute the complete commands of every conn with input (a bounded
 *      number per conn per turn, for fairness);
 *   3. wal_flush_async: everything appended in this turn (and while the
 *      previous flush was in flight) shares the next write + fdatasync;
 *   4. queue sends of releasable replies;
 *   5. checkpoint when due; stop on SHUTDOWN / SIGTERM.
 *
 * Durability rule: a reply that reflects state up to commit LSN X is appended
 * to conn.out with a mark (end offset, X) and is handed to send only once
 * durable_lsn >= X. Reads are tagged with last_commit_lsn, so they never
 * show a write that a crash could take back. With --commit async every mark
 * is 0 (documented: acked writes may be lost).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server_int.h"
#include "server/trace_hooks.h"

#define SERVER_BGID 7
#define SERVER_CMDS_PER_TURN 256
#define SERVER_TIMER_US 100000u
#define SERVER_REPL_INPUT_MAX_BYTES (256u << 20)

static volatile sig_atomic_t server_signal_stop;
/* The process's one instance: it lives until exit (its memory is the process's), and
 * LeakSanitizer sees it, and the role state hanging on it, as reachable. */
struct server *server_instance; /* not static: a store the compiler must keep */
char server_rejoin_primary[280];
int server_rejoin_listen_fd = -1;

static void on_signal(int sig)
{
    (void)sig;
    server_signal_stop = 1;
}

void server_config_defaults(struct server_config *c)
{
    memset(c, 0, sizeof(*c));
    c->role = SERVER_ROLE_STANDALONE;
    c->dir = NULL;
    c->bind_addr = "127.0.0.1";
    c->port = 6380;
    c->listen_fd = -1;
    c->cache_mb = 128;
    c->commit = SERVER_COMMIT_LOCAL;
    c->max_clients = 10000;
    c->max_query_buffer_bytes = 8u << 20;
    c->max_output_buffer_bytes = 64u << 20;
    c->max_txn_bytes = 8u << 20;
    c->checkpoint_wal_bytes = 256u << 20;
    c->checkpoint_interval_ms = 300000;
    c->wal_segment_bytes = WAL_SEGMENT_SIZE_DEFAULT;
    c->wal_keep_bytes = 1024u << 20;
    c->replica_timeout_ms = 10000;
    /* Finite by default (PostgreSQL waits forever): 5 s is far above a group commit, a sync
     * replica's fsync and an automatic failover (< 1 s), and short enough that an application
     * learns its write's fate is unknown instead of hanging while a quorum is lost. */
    c->commit_timeout_ms = 5000;
    /* Redo feed by default: readers apply the records to the pages they cache (~15x lower lag
     * than dropping the changed pages; docs/results.md); --reader-feed pages selects the page ids. */
    c->reader_feed_redo = 1;
    c->max_peers = 256;
}

/* ------------------------------------------------------------ connections */

static struct conn *conn_of(struct rd_conn *nc) { return (struct conn *)((char *)nc - offsetof(struct conn, nc)); }

void conn_mark_ready(struct server *s, struct conn *c)
{
    (void)s;
    rd_conn_mark_ready(&c->nc);
}

/* The connection layer's last call (common/conn.h): nothing is in flight, the fd
 * is closed, the buffers freed. */
static void conn_on_close(struct rd_conn *nc)
{
    struct conn *c = conn_of(nc);
    struct server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->is_peer)
        s->npeer_conns--;
    if (c->kind != CONN_CLIENT)
        s->ops->on_conn_closed(s, c);
    if (c->wait_active)
        s->nwaiting--;
    if (s->promote_waiter == c)
        s->promote_waiter = NULL;
    rd_buf_free(&c->multi_q);
    resp_args_free(&c->args);
    free(c->marks);
    free(c->watched);
    free(c);
}

void conn_close(struct server *s, struct conn *c)
{
    (void)s;
    rd_conn_close(&c->nc);
}

void conn_close_after_reply(struct conn *c) { c->close_after_send = 1; }

static void conn_push_mark(struct conn *c, size_t end, uint64_t lsn, uint32_t nreplies, int keep)
{
    if (c->nmarks == c->marks_cap) {
        size_t cap = c->marks_cap ? c->marks_cap * 2 : 8;
        struct conn_mark *m = realloc(c->marks, cap * sizeof(*m));
        if (m == NULL)
            rd_panic("out of memory for reply marks");
        c->marks = m;
        c->marks_cap = cap;
    }
    rd_assert(c->nmarks == 0 || (c->marks[c->nmarks - 1].lsn <= lsn && c->marks[c->nmarks - 1].end <= end));
    c->marks[c->nmarks++] =
        (struct conn_mark){.end = end, .lsn = lsn, .since_ms = rd_now_ms(), .nreplies = nreplies, .keep = keep};
}

/* Called once per whole reply appended to c->out (S2): the reply spans
 * (tail_start, out.len] when it is the newest. */
void conn_reply_done(struct server *s, struct conn *c, uint64_t lsn)
{
    if (s->cfg.commit == SERVER_COMMIT_ASYNC || server_is_follower(s) || lsn <= s->release_lsn)
        lsn = 0;
    size_t reply_start = c->tail_start;
    c->tail_start = c->out.len;
    if (lsn == 0 && c->nmarks == 0) {
        c->tail_replies++; /* everything in out is releasable */
        return;
    }
    if (c->nmarks > 0) {
        struct conn_mark *last = &c->marks[c->nmarks - 1];
        int keep = lsn == 0; /* a reply of no data must not overtake earlier ones: it waits with them */
        if (keep)
            lsn = last->lsn;
        if (last->lsn >= lsn && last->keep == keep) {
            last->end = c->out.len;
            last->nreplies++;
            return;
        }
        conn_push_mark(c, c->out.len, RD_MAX(lsn, last->lsn), 1, keep);
        s->stats.replies_delayed++;
        return;
    }
    if (c->tail_replies > 0) /* releasable replies not sent yet: a mark of their own */
        conn_push_mark(c, reply_start, 0, c->tail_replies, 1);
    c->tail_replies = 0;
    conn_push_mark(c, c->out.len, lsn, 1, 0);
    s->stats.replies_delayed++;
}

/* Bytes of c->out that may be sent now (the layer's sendable). */
static size_t conn_releasable(const struct rd_conn *nc)
{
    const struct conn *c = (const struct conn *)((const char *)nc - offsetof(struct conn, nc));
    const struct server *s = c->srv;
    if (c->nmarks == 0)
        return c->out.len;
    /* S1, read side: what is released is durable (paired with server_update_release) */
    rd_assert(s->release_lsn <= s->durable_lsn);
    size_t i = 0;
    while (i < c->nmarks && c->marks[i].lsn <= s->release_lsn)
        i++;
    /* S2: marks ascend in LSN and offset (paired with conn_push_mark) */
    rd_assert(i == 0 || i == c->nmarks || (c->marks[i - 1].lsn <= c->marks[i].lsn && c->marks[i - 1].end <= c->marks[i].end));
    return i == 0 ? 0 : c->marks[i - 1].end;
}

/* The first n bytes of out went to a send: the marks follow (the layer's taken). */
static void conn_drop_released(struct rd_conn *nc, size_t n)
{
    struct conn *c = conn_of(nc);
    if (c->out.len == 0) { /* all of it (the buffers were swapped) */
        c->nmarks = 0;
        c->tail_replies = 0;
        c->tail_start = 0;
        return;
    }
    size_t i = 0;
    while (i < c->nmarks && c->marks[i].end <= n)
        i++;
    memmove(c->marks, c->marks + i, (c->nmarks - i) * sizeof(*c->marks));
    c->nmarks -= i;
    for (size_t j = 0; j < c->nmarks; j++)
        c->marks[j].end -= n;
    rd_assert(c->tail_start >= n);
    c->tail_start -= n;
}

/* Replication links carry frames of up to FRAME_MAX_PAYLOAD; a peer that floods
 * is bounded by the same rule with a larger limit. */
static size_t conn_max_input(const struct rd_conn *nc)
{
    const struct conn *c = (const struct conn *)((const char *)nc - offsetof(struct conn, nc));
    return c->kind == CONN_CLIENT ? c->srv->cfg.max_query_buffer_bytes : SERVER_REPL_INPUT_MAX_BYTES;
}

static const struct rd_conn_ops conn_ops = {
    .max_input = conn_max_input,
    .sendable = conn_releasable,
    .taken = conn_drop_released,
    .on_close = conn_on_close,
};

static void conn_queue_send(struct server *s, struct conn *c)
{
    (void)s;
    rd_conn_flush(&c->nc);
}

static void server_on_accept(struct rd_net *n, int fd)
{
    struct server *s = (struct server *)((char *)n - offsetof(struct server, net));
    s->stats.connections_received++;
    /* Budgets: clients may hold max_clients connections; beyond that a new
     * connection is accepted only on probation (it must authenticate as a peer
     * within RD_AUTH_DEADLINE_MS), up to max_peers more, so no number of idle
     * clients keeps a replica, reader or monitor out. */
    size_t nclients = s->nconns - s->npeer_conns;
    int over = nclients >= s->cfg.max_clients;
    if ((over && (!s->auth.enabled || s->nconns >= s->cfg.max_clients + s->cfg.max_peers)) ||
        s->shutdown_requested) {
        static const char msg[] = "-ERR max number of clients reached\r\n";
        ssize_t w = send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w; /* best effort: the connection is closed either way */
        s->stats.connections_rejected++;
        if (close(fd) < 0)
            rd_warn("close failed: %s", strerror(errno));
        return;
    }
    struct conn *c = conn_new(s, fd, CONN_CLIENT);
    c->over_budget = over;
}

struct conn *conn_new(struct server *s, int fd, enum conn_kind kind)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        rd_panic("out of memory for a connection");
    c->srv = s;
    c->kind = kind;
    c->authed = s->cfg.password == NULL;
    c->peer_authed = !s->auth.enabled;
    if (kind != CONN_CLIENT) { /* our own outbound links: peers by construction */
        c->is_peer = 1;
        s->npeer_conns++;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    rd_conn_open(&s->net, &c->nc, fd, &conn_ops);
    return c;
}

/* ------------------------------------------------------------ peers and budgets */

int conn_make_peer(struct server *s, struct conn *c)
{
    if (c->is_peer)
        return 0;
    if (s->npeer_conns >= s->cfg.max_peers) {
        rd_warn("refusing peer %s: %zu peer connections open (the peer budget)", c->addr, s->npeer_conns);
        return -1;
    }
    c->is_peer = 1;
    c->over_budget = 0;
    s->npeer_conns++;
    return 0;
}

int conn_require_peer(struct server *s, struct conn *c, const char *what)
{
    if (c->peer_authed)
        return 1;
    if (rd_auth_log_once(c->addr))
        rd_warn("refused %s from %s: not an authenticated cluster peer (REDOUBT.AUTH with the cluster secret "
                "first); further refusals from this address are not logged",
                what, c->addr);
    resp_error(&c->out, "NOPEERAUTH this command needs an authenticated cluster peer (--cluster-secret-file)");
    conn_reply_done(s, c, 0);
    conn_close_after_reply(c);
    return 0;
}

/* Once a second: connections past a deadline. An over-budget connection that
 * did not become a peer, a peer handshake that did not finish, and (--timeout) an
 * idle client are closed. Peers and clients blocked in WAIT are never idle. */
static void server_check_budgets(struct server *s)
{
    uint64_t now = rd_now_ms();
    if (now - s->budget_check_ms < 1000)
        return;
    s->budget_check_ms = now;
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->is_peer)
            continue;
        const char *why = NULL;
        if ((c->over_budget || (c->hs.state != RD_AUTH_ST_NONE && !c->peer_authed)) &&
            now - c->created_ms > RD_AUTH_DEADLINE_MS)
            why = c->over_budget ? "max number of clients reached" : "peer authentication timed out";
        else if (s->cfg.password && !c->authed && now - c->created_ms > 10 * RD_AUTH_DEADLINE_MS)
            why = "no AUTH in time";
        else if (s->cfg.idle_timeout_s && !c->wait_active && c->nmarks == 0 &&
                 now - c->last_input_ms > (uint64_t)s->cfg.idle_timeout_s * 1000) {
            conn_close(s, c); /* Redis closes idle clients silently */
            continue;
        }
        if (why) {
            if (rd_auth_log_once(c->addr))
                rd_info("closing %s: %s (logged once per address)", c->addr, why);
            resp_error(&c->out, why[0] == 'm' ? "ERR max number of clients reached" : "ERR timeout");
            conn_close_after_reply(c);
        }
    }
}

/* ------------------------------------------------------------ input processing */

static void conn_process(struct server *s, struct conn *c)
{
    if (c->kind != CONN_CLIENT) {
        s->ops->process_input(s, c);
        return;
    }
    if (c->wait_active || c->parked)
        return; /* blocked in WAIT / parked on a page miss (suspend.c): input waits */
    if (s->ops->paused(s))
        return; /* aurora: LSNs too far above VDL: wait for acks (the role wakes it) */
    unsigned n = 0;
    size_t off = 0;
    while (!c->closing && !c->close_after_send && n < SERVER_CMDS_PER_TURN) {
        if (c->out.len + c->sending.len > s->cfg.max_output_buffer_bytes) {
            rd_warn("client %llu closed: output buffer over %zu bytes (client not reading)",
                    (unsigned long long)c->id, s->cfg.max_output_buffer_bytes);
            conn_close(s, c);
            return;
        }
        const char *err = NULL;
        int rc = resp_parse(c->in.data + off, c->in.len - off, &s->limits, &c->args, &err);
        if (rc == 0)
            break;
        if (rc < 0) {
            s->stats.protocol_errors++;
            rd_info("client %llu: %s; closing the connection", (unsigned long long)c->id,
                    err ? err : rd_strerror(rc));
            char msg[256];
            snprintf(msg, sizeof(msg), "ERR %s", err ? err : "Protocol error");
            resp_error(&c->out, msg);
            conn_reply_done(s, c, 0);
            conn_close_after_reply(c);
            break;
        }
        off += (size_t)rc;
        if (c->args.n == 0)
            continue;
        if (server_suspend_failed_reply(s, c)) /* its page could not be read: -TRYAGAIN */
            continue;
        n++;
        c->cmds++;
        server_suspend_begin(s, c);
        cmd_execute(s, c, &c->args);
        if (server_suspend_end(s, c)) { /* parked on a page miss: the command stays in `in` */
            rd_buf_consume(&c->in, off - (size_t)rc);
            return;
        }
        if (c->kind != CONN_CLIENT || c->wait_active) { /* became a role connection / blocked */
            rd_buf_consume(&c->in, off);
            if (c->in.len > 0)
                conn_mark_ready(s, c);
            return;
        }
    }
    rd_buf_consume(&c->in, off);
    if (n == SERVER_CMDS_PER_TURN && c->in.len > 0 && !c->closing)
        conn_mark_ready(s, c); /* more next turn */
}

static void server_process_ready(struct server *s)
{
    struct rd_conn *list = rd_net_take_ready(&s->net);
    while (list) {
        struct conn *c = conn_of(list);
        list = list->next_ready;
        rd_conn_unready(&c->nc);
        if (c->closing) {
            conn_close(s, c);
            continue;
        }
        conn_process(s, c);
        if (c->closing)
            conn_close(s, c);
    }
}

/* ------------------------------------------------------------ durability */

/* S1: the one place where replies become releasable. release_lsn only grows and
 * never passes durable_lsn (checked here, where it is written, and again where
 * marks are released: conn_queue_send). */
void server_update_release(struct server *s)
{
    /* A fenced node releases nothing more (T3, M4): replies still waiting end with
     * the commit-timeout error; so does a primary without a lease (LS2). */
    if (s->fenced || (server_lease_required(s) && !server_lease_ok(s, NULL)))
        return;
    uint64_t rel = RD_MIN(s->durable_lsn, s->ops->sync_lsn(s));
    if (rel > s->release_lsn)
        s->release_lsn = rel;
    server_trace_release(s, s->durable_lsn, s->release_lsn); /* issue 13: commit trace */
    rd_assert(s->release_lsn <= s->durable_lsn); /* S1, write side (read side: conn_releasable) */
}

void server_durable_advanced(struct server *s, uint64_t durable_lsn)
{
    if (durable_lsn > s->durable_lsn)
        s->durable_lsn = durable_lsn;
    server_update_release(s);
    /* Sends are queued at the end of the turn for every conn (server_send_all). */
}

static void server_on_flushed(void *arg, uint64_t flushed_lsn) { server_durable_advanced(arg, flushed_lsn); }

/* The instance's own log (standalone and classic roles). */
uint64_t server_wal_insert_lsn(const struct server *s) { return s->wal ? wal_insert_lsn(s->wal) : 0; }

int server_wal_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn)
{
    return wal_append_commit(s->wal, txn_id, lsn);
}

static void server_send_all(struct server *s)
{
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->out.len > 0 || c->close_after_send)
            conn_queue_send(s, c);
    }
}

/* ------------------------------------------------------------ bounded commit waits, leases */

/* --commit-timeout-ms (S20): replies that have waited longer than the timeout
 * for their LSN to be released are replaced, one for one, by an error that
 * says the outcome is unknown: the commit record is in the log and may still
 * become durable (the sync set or quorum may come back), or may be lost in a
 * failover. Replies keep their order: marks [i0, j] — the oldest unreleased
 * ones — are rewritten together. */
static const char COMMIT_TIMEOUT_ERR[] =
    "-TIMEOUT commit outcome unknown: not confirmed durable within --commit-timeout-ms; the write may still commit\r\n";

static void conn_expire_marks(struct server *s, struct conn *c, uint64_t now)
{
    size_t i0 = 0;
    while (i0 < c->nmarks && c->marks[i0].lsn <= s->release_lsn)
        i0++;
    size_t j = i0;
    while (j < c->nmarks && (c->marks[j].keep || now - c->marks[j].since_ms >= s->cfg.commit_timeout_ms))
        j++;
    while (j > i0 && c->marks[j - 1].keep) /* a timed-out region ends at a timed-out commit */
        j--;
    if (j == i0)
        return;
    size_t start = i0 > 0 ? c->marks[i0 - 1].end : 0, end = c->marks[j - 1].end;
    uint64_t n = 0;
    struct rd_buf nb = {0};
    if (rd_buf_append(&nb, c->out.data, start) < 0)
        rd_panic("out of memory for client output");
    for (size_t k = i0, from = start; k < j; from = c->marks[k].end, k++) {
        if (c->marks[k].keep) { /* PONG stays PONG */
            if (rd_buf_append(&nb, c->out.data + from, c->marks[k].end - from) < 0)
                rd_panic("out of memory for client output");
            continue;
        }
        n += c->marks[k].nreplies;
        for (uint32_t r = 0; r < c->marks[k].nreplies; r++)
            if (rd_buf_append(&nb, COMMIT_TIMEOUT_ERR, sizeof(COMMIT_TIMEOUT_ERR) - 1) < 0)
                rd_panic("out of memory for client output");
    }
    size_t new_end = nb.len;
    if (rd_buf_append(&nb, c->out.data + end, c->out.len - end) < 0)
        rd_panic("out of memory for client output");
    ssize_t delta = (ssize_t)new_end - (ssize_t)end;
    uint32_t nrep = 0;
    for (size_t k = i0; k < j; k++)
        nrep += c->marks[k].nreplies;
    c->marks[i0] = (struct conn_mark){.end = new_end, .lsn = 0, .since_ms = c->marks[i0].since_ms,
                                      .nreplies = nrep, .keep = 1};
    memmove(c->marks + i0 + 1, c->marks + j, (c->nmarks - j) * sizeof(*c->marks));
    c->nmarks -= j - i0 - 1;
    for (size_t k = i0 + 1; k < c->nmarks; k++)
        c->marks[k].end = (size_t)((ssize_t)c->marks[k].end + delta);
    /* no-data replies right behind waited only for the region: now nothing */
    for (size_t k = i0 + 1; k < c->nmarks && c->marks[k].keep; k++)
        c->marks[k].lsn = 0;
    c->tail_start = (size_t)((ssize_t)c->tail_start + delta);
    rd_buf_free(&c->out);
    c->out = nb;
    s->commit_timeouts += n;
    s->stats.errors += n;
    rd_warn("client %s: %" PRIu64 " repl%s waited more than %" PRIu64 " ms for durability (release %" PRIX64
            "/%" PRIX64 "): answered TIMEOUT, outcome unknown",
            c->addr, n, n == 1 ? "y" : "ies", s->cfg.commit_timeout_ms, s->release_lsn >> 32,
            s->release_lsn & 0xffffffffu);
}

static void server_expire_waits(struct server *s)
{
    uint64_t now = rd_now_ms();
    if (s->cfg.commit_timeout_ms == 0 || now - s->last_expire_ms < 20)
        return;
    s->last_expire_ms = now;
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_CLIENT && c->nmarks > 0 && !c->closing)
            conn_expire_marks(s, c, now);
}

void server_waits_info(const struct server *s, uint64_t *waiting, uint64_t *oldest_ms)
{
    uint64_t now = rd_now_ms(), n = 0, oldest = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
        for (size_t i = 0; i < c->nmarks; i++)
            if (c->marks[i].lsn > s->release_lsn && !c->marks[i].keep) {
                n += c->marks[i].nreplies;
                oldest = RD_MAX(oldest, now - c->marks[i].since_ms);
            }
    *waiting = n;
    *oldest_ms = oldest;
}

/* Leases (LS1-LS3 in server/README.md). */
/* LS1: every primary and aurora writer started with --lease-monitors. With local/async commits
 * the lease is what stops an isolated primary acknowledging writes; with remote_* and aurora the
 * term / epoch fence does that, and the lease is a read lease (LS4): a deposed writer stops
 * serving reads before anyone else is promoted, so reads on the writer stay linearizable. */
int server_lease_required(const struct server *s)
{
    return s->cfg.lease_monitors > 0 && server_is_leader(s);
}

int server_lease_ok(const struct server *s, unsigned *renewed)
{
    uint64_t now = rd_now_ms();
    unsigned n = 0;
    for (unsigned i = 0; i < SERVER_LEASE_MONITORS_MAX; i++)
        if (s->lease_renewed_ms[i] != 0 && s->lease_renewed_ms[i] + s->cfg.lease_ms > now)
            n++;
    if (renewed)
        *renewed = n;
    return n >= s->cfg.lease_monitors / 2 + 1;
}

void server_lease_renew(struct server *s, unsigned monitor_id, uint64_t monitor_ms)
{
    rd_assert(monitor_id < SERVER_LEASE_MONITORS_MAX);
    /* The lease runs from when the monitor sent the renewal (its CLOCK_MONOTONIC,
     * which this process shares on one machine), never from when it arrived: a
     * renewal delayed in the network does not extend it. */
    uint64_t t = RD_MIN(monitor_ms, rd_now_ms());
    if (t > s->lease_renewed_ms[monitor_id])
        s->lease_renewed_ms[monitor_id] = t;
    server_update_release(s);
}

static void server_lease_tick(struct server *s)
{
    if (!server_lease_required(s))
        return;
    unsigned n = 0;
    int ok = server_lease_ok(s, &n);
    if (ok != s->lease_was_ok) {
        if (ok)
            rd_info("lease held: %u of %u monitors renewed within %" PRIu64 " ms; acknowledging writes", n,
                    s->cfg.lease_monitors, s->cfg.lease_ms);
        else
            rd_warn("LEASE LOST: only %u of %u monitors renewed within %" PRIu64
                    " ms; no write is acknowledged until a majority renews (they may be promoting a replica)",
                    n, s->cfg.lease_monitors, s->cfg.lease_ms);
        s->lease_was_ok = ok;
        if (ok)
            server_update_release(s);
    }
}

/* ------------------------------------------------------------ timer, checkpoints */

static void server_on_timer(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct server *s = (struct server *)((char *)io - offsetof(struct server, timer_io));
    (void)cqe;
    s->timer_armed = 0;
}

static void server_arm_timer(struct server *s)
{
    static struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = SERVER_TIMER_US * 1000};
    struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &s->timer_io);
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    s->timer_armed = 1;
}

static void server_maybe_checkpoint(struct server *s)
{
    if (server_is_follower(s) || s->wal == NULL)
        return; /* a replica makes restart points at its primary's checkpoints instead */
    static uint64_t t0; /* start of the checkpoint in progress */
    int rc, done = 1;
    if (wal_checkpoint_active(s->wal)) { /* a spread checkpoint (wal W14): one slice per loop turn */
        rc = wal_checkpoint_step(s->wal, s->engine, &done);
        if (rc == 0 && done) {
            s->ops->before_checkpoint(s); /* classic: the slots, before the checkpoint removes WAL */
            rc = wal_checkpoint_end(s->wal, s->engine);
        }
    } else if (wal_needs_checkpoint(s->wal)) {
        t0 = rd_now_us();
        const char *e = getenv("REDOUBT_CHECKPOINT_SPREAD"); /* 0: one blocking step (A/B runs) */
        if (e != NULL && strcmp(e, "0") == 0) {
            s->ops->before_checkpoint(s);
            rc = wal_checkpoint(s->wal, s->engine);
        } else {
            uint64_t iv = s->cfg.checkpoint_interval_ms;
            rc = wal_checkpoint_begin(s->wal, s->engine, iv ? RD_MIN(iv / 2, 30000) : 5000);
            done = 0;
        }
    } else {
        return;
    }
    if (rc < 0)
        rd_panic("checkpoint failed: %s", rd_strerror(rc));
    s->durable_lsn = RD_MAX(s->durable_lsn, wal_flushed_lsn(s->wal));
    server_update_release(s);
    if (done)
        rd_info("checkpoint complete in %llu ms", (unsigned long long)((rd_now_us() - t0) / 1000));
}

/* ------------------------------------------------------------ start-up */

/* CR7: a listening socket inherited across a rejoin's exec (--listen-fd). It must be a listening
 * TCP socket bound to --port: anything else is refused (a stray number would otherwise make us
 * accept on someone else's socket). */
static int server_adopt_listener(struct server *s)
{
    int fd = s->cfg.listen_fd, acc = 0;
    socklen_t al = sizeof(acc);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 || sa.sin_family != AF_INET ||
        ntohs(sa.sin_port) != s->cfg.port) {
        rd_error("--listen-fd %d is not a socket listening on port %d", fd, s->cfg.port);
        return -EINVAL;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int e = errno;
        rd_error("--listen-fd %d: %s", fd, strerror(e));
        return -e;
    }
    rd_info("listening on port %d with the socket kept across the restart (CR7)", s->cfg.port);
    s->listen_fd = fd;
    return 0;
}

static int server_listen(struct server *s)
{
    if (s->cfg.listen_fd >= 0)
        return server_adopt_listener(s);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)s->cfg.port);
    if (inet_pton(AF_INET, s->cfg.bind_addr, &sa.sin_addr) != 1) {
        rd_error("invalid --bind address \"%s\" (an IPv4 address is expected)", s->cfg.bind_addr);
        return -EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    /* After a kill -9 the old process's io_uring may hold its listener for a moment (ring
     * teardown is asynchronous), and the port is now bound before recovery, with nothing in
     * between to wait: retry a busy port for 5 s, as the storage node does. */
    int rc;
    for (int tries = 0; (rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EADDRINUSE &&
                        tries < 100;
         tries++) {
        if (tries == 0)
            rd_info("port %d is busy (a previous process exiting?): retrying for 5 s", s->cfg.port);
        usleep(50000);
    }
    if (rc < 0 || listen(fd, 511) < 0) {
        int e = errno;
        rd_error("could not listen on %s:%d: %s", s->cfg.bind_addr, s->cfg.port, strerror(e));
        close(fd);
        return -e;
    }
    s->listen_fd = fd;
    return 0;
}


static int server_lock_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        rd_error("could not open lock file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        rd_error("data directory \"%s\" is in use by another redoubt process (%s)", dir, strerror(e));
        close(fd);
        return -e;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        rd_warn("could not write pid into \"%s\": %s", path, strerror(errno));
    return fd; /* kept open for the life of the process */
}

int server_open_storage(struct server *s)
{
    if (mkdir(s->cfg.dir, 0755) < 0 && errno != EEXIST) {
        rd_error("could not create data directory \"%s\": %s", s->cfg.dir, strerror(errno));
        return -errno;
    }
    static int lock = -1;
    if (lock < 0)
        lock = server_lock_dir(s->cfg.dir);
    if (lock < 0)
        return lock;
    struct wal_control ctl_before;
    s->crash_recovered = wal_control_read(s->cfg.dir, &ctl_before) == 0 && ctl_before.state != WAL_STATE_SHUT_DOWN;
    struct wal_options wo = {
        .dir = s->cfg.dir,
        .segment_size_bytes = s->cfg.wal_segment_bytes,
        .checkpoint_wal_bytes = s->cfg.checkpoint_wal_bytes,
        .checkpoint_interval_ms = s->cfg.checkpoint_interval_ms,
        .loop = &s->loop,
        .on_flushed = server_on_flushed,
        .on_flushed_arg = s,
    };
    int rc = wal_open(&wo, &s->wal);
    if (rc < 0) {
        rd_error("could not open the WAL in \"%s\": %s", s->cfg.dir, rd_strerror(rc));
        return rc;
    }
    char data_path[4096];
    snprintf(data_path, sizeof(data_path), "%s/data.rdb", s->cfg.dir);
    struct engine_options eo = {
        .data_path = data_path,
        .cache_pages = RD_MAX((size_t)64, s->cfg.cache_mb * 1024u * 1024u / ENGINE_PAGE_SIZE),
        .sink = wal_engine_sink(s->wal),
    };
    rc = engine_open(&eo, &s->engine);
    if (rc < 0) {
        rd_error("could not open data file \"%s\": %s", data_path, rd_strerror(rc));
        return rc;
    }
    uint64_t t0 = rd_now_us();
    rc = wal_recover(s->wal, s->engine);
    if (rc < 0) {
        rd_error("crash recovery failed: %s", rd_strerror(rc));
        return rc;
    }
    if ((rc = s->ops->after_recovery(s)) < 0)
        return rc; /* classic: the slots, before the end-of-recovery checkpoint removes WAL */
    if (rc == 0) {
        /* End-of-recovery checkpoint, as PostgreSQL (the role decides: a replica
         * appends nothing of its own, its log stays byte-identical to the primary's). */
        rc = wal_checkpoint(s->wal, s->engine);
        if (rc < 0) {
            rd_error("end-of-recovery checkpoint failed: %s", rd_strerror(rc));
            return rc;
        }
    }
    s->durable_lsn = wal_flushed_lsn(s->wal);
    s->last_commit_lsn = s->durable_lsn;
    s->release_lsn = s->durable_lsn;
    rd_info("recovered in %llu ms: %llu keys, log ends at %llX/%llX",
            (unsigned long long)((rd_now_us() - t0) / 1000),
            (unsigned long long)engine_key_count(s->engine),
            (unsigned long long)(s->durable_lsn >> 32), (unsigned long long)(s->durable_lsn & 0xffffffffu));
    return 0;
}

static void server_close_all(struct server *s)
{
    for (struct conn *c = s->conns; c; c = c->next)
        if (!c->closing) {
            c->closing = 1;
            if (shutdown(c->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
                rd_debug("shutdown failed: %s", strerror(errno));
        }
    /* Let the final completions arrive so no buffer is freed under the kernel. */
    for (int i = 0; i < 50 && (s->conns || s->net.accept_armed); i++) {
        rd_net_stop_listening(&s->net);
        rd_loop_run_once(&s->loop, 20000);
        for (struct conn *c = s->conns, *n; c; c = n) {
            n = c->next;
            if (c->on_ready)
                continue;
            conn_close(s, c);
        }
        for (struct rd_conn *r = rd_net_take_ready(&s->net), *n; r; r = n) {
            n = r->next_ready;
            rd_conn_unready(r);
        }
    }
}

int server_run(const struct server_config *cfg)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    server_instance = s;
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->start_ms = rd_now_ms();
    s->timer_io.on_cqe = server_on_timer;
    s->limits = (struct resp_limits){
        .max_args = 1048576,
        /* Anything that fits the query buffer is parsed, so a value over the
         * engine's limit gets the command's "value too large" at any size (and
         * the connection lives); beyond the buffer the parser says the same. */
        .max_bulk_bytes = s->cfg.max_query_buffer_bytes,
        .max_inline_bytes = 65536,
    };
    char why[256];
    int rc = rd_loop_init(&s->loop, 4096, why, sizeof(why));
    if (rc < 0) {
        rd_error("%s", why);
        return 1;
    }
    s->role = s->cfg.role;
    /* The role, once (role.h): it never changes mode while the process runs. */
    s->ops = s->role == SERVER_ROLE_WRITER || s->role == SERVER_ROLE_READER ? &role_aurora : &role_classic;
    if (rd_buf_ring_setup(&s->loop, &s->bufring, 512, 16384, SERVER_BGID) < 0)
        return 1;
    rd_net_init(&s->net, &s->loop, &s->bufring, SERVER_BGID);
    if (s->cfg.cluster_secret_file != NULL) {
        char aerr[512];
        if (rd_auth_load(&s->auth, s->cfg.cluster_secret_file, aerr, sizeof(aerr)) < 0) {
            rd_error("%s", aerr);
            return 1;
        }
        rd_info("cluster \"%s\": peers authenticate with the cluster secret", s->auth.cluster_id);
    } else {
        rd_warn("no --cluster-secret-file: cluster peers are NOT authenticated (anyone who can connect can "
                "re-point, promote, fence or shut down this node)");
    }
    long nofile = rd_raise_nofile();
    if (nofile > 0 && (size_t)nofile < s->cfg.max_clients + s->cfg.max_peers + 64)
        rd_warn("open file limit %ld is below --maxclients + peers (%zu): connections beyond it are refused",
                nofile, s->cfg.max_clients + s->cfg.max_peers);
    /* The port first: a port in use is reported before a data directory is
     * created or recovered. */
    if (server_listen(s) < 0)
        return 1;
    rd_info("role %s (%s mode)", server_role_name(s->role), s->ops->name);
    if (s->ops->start(s) < 0)
        return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        rd_warn("sigaction failed: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);

    rd_net_listen(&s->net, s->listen_fd, server_on_accept);
    rd_info("ready to accept connections on %s:%d (role %s, commit %s, dir %s)", s->cfg.bind_addr,
            s->cfg.port, server_role_name(s->role), server_commit_name(s->cfg.commit), s->cfg.dir);

    while (!s->shutdown_requested && !server_signal_stop) {
        if (!s->timer_armed)
            server_arm_timer(s);
        if (!s->net.accept_armed)
            rd_net_listen(&s->net, s->listen_fd, server_on_accept);
        rc = rd_loop_run_once(&s->loop, s->net.ready_head ? 0 : s->wake_within_us ? s->wake_within_us : SERVER_TIMER_US * 2);
        if (rc < 0)
            rd_panic("io_uring wait failed: %s", strerror(-rc));
        server_process_ready(s);
        cmd_tick(s);
        if (s->wal != NULL)
            wal_flush_async(s->wal);
        server_trace_wal_written(s); /* issue 13: the loop has seen the WAL write complete */
        s->ops->ship(s);
        s->ops->tick(s);
        server_check_budgets(s);
        server_lease_tick(s);
        server_expire_waits(s);
        server_send_all(s);
        if (s->wal != NULL && !wal_flush_in_flight(s->wal))
            server_maybe_checkpoint(s);
    }
    if (server_signal_stop)
        rd_info("received a termination signal: shutting down");
    /* Clean shutdown: everything appended becomes durable before anyone hears
     * about it, then a final checkpoint. */
    int keep_listener = server_rejoin_primary[0] != 0; /* CR7: the rejoin's exec inherits it */
    if (keep_listener)
        rd_net_stop_listening(&s->net); /* clients that connect now wait in the backlog */
    s->ops->shutdown(s);
    server_send_all(s);
    rd_loop_run_once(&s->loop, 0);
    server_close_all(s);
    if (keep_listener)
        server_rejoin_listen_fd = s->listen_fd;
    else if (close(s->listen_fd) < 0)
        rd_warn("close of listener failed: %s", strerror(errno));
    if (s->engine != NULL && (rc = engine_close(s->engine)) < 0)
        rd_error("closing the data file failed: %s", rd_strerror(rc));
    if (s->wal != NULL && (rc = wal_close(s->wal)) < 0)
        rd_error("closing the WAL failed: %s", rd_strerror(rc));
    rd_info("shut down cleanly");
    int status = s->exit_status;
    return status;
}

/* ------------------------------------------------------------ commit levels */

const char *server_role_name(enum server_role r)
{
    static const char *names[] = {"standalone", "primary", "replica", "writer", "reader"};
    return (unsigned)r < RD_ARRAY_LEN(names) ? names[r] : "?";
}

/* Clean shutdown of the local log: everything appended is flushed, a final
 * checkpoint, and what it made durable is released. */
void server_wal_shutdown(struct server *s)
{
    int rc = wal_shutdown(s->wal, s->engine);
    if (rc < 0)
        rd_panic("shutdown checkpoint failed: %s", rd_strerror(rc));
    server_durable_advanced(s, wal_flushed_lsn(s->wal));
}

const char *server_commit_name(enum server_commit c)
{
    static const char *names[] = {"local", "async", "remote_write", "remote_flush", "remote_apply"};
    return (unsigned)c < RD_ARRAY_LEN(names) ? names[c] : "?";
}

int server_parse_sync_replicas(struct server_config *c, const char *spec, char *err, size_t err_len)
{
    const char *p = spec;
    while (*p == ' ')
        p++;
    c->sync_method = SERVER_SYNC_FIRST;
    if (strncasecmp(p, "ANY", 3) == 0 && (p[3] == ' ')) {
        c->sync_method = SERVER_SYNC_ANY;
        p += 3;
    } else if (strncasecmp(p, "FIRST", 5) == 0 && (p[5] == ' ')) {
        p += 5;
    }
    char *end = NULL;
    long k = strtol(p, &end, 10);
    if (end == p || k < 1 || k > SERVER_SYNC_MAX_NAMES) {
        snprintf(err, err_len, "expected 'ANY k (name, ...)' or 'FIRST k (name, ...)' with 1 <= k <= %d",
                 SERVER_SYNC_MAX_NAMES);
        return -1;
    }
    p = end;
    while (*p == ' ')
        p++;
    if (*p != '(') {
        snprintf(err, err_len, "expected '(' after the number in \"%s\"", spec);
        return -1;
    }
    p++;
    c->sync_nnames = 0;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')')
            break;
        if (*p == 0) {
            snprintf(err, err_len, "missing ')' in \"%s\"", spec);
            return -1;
        }
        size_t n = strcspn(p, " ,)");
        if (n == 0 || n >= sizeof(c->sync_names[0]) || c->sync_nnames == SERVER_SYNC_MAX_NAMES) {
            snprintf(err, err_len, "bad or too many replica names in \"%s\"", spec);
            return -1;
        }
        memcpy(c->sync_names[c->sync_nnames], p, n);
        c->sync_names[c->sync_nnames][n] = 0;
        c->sync_nnames++;
        p += n;
    }
    if ((unsigned)k > c->sync_nnames) {
        snprintf(err, err_len, "%ld sync replicas asked for but only %u named", k, c->sync_nnames);
        return -1;
    }
    c->sync_num = (unsigned)k;
    return 0;
}
