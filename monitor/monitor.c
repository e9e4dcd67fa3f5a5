/*
 * monitor.c — `redoubt-monitor`: heartbeats every node of one cluster, fails
 * the writer over when it dies, fences the old one, and tells clients where
 * the writer is (a subset of Redis Sentinel over RESP2).
 *
 * One thread, one poll loop. Every outbound link is a non-blocking RESP
 * connection (struct mon_chan) with at most one request outstanding; every
 * node has two: `hb` for heartbeats (INFO replication every --interval-ms)
 * and `ctl` for actions (promote, re-point, fence, write probe). A node that
 * does not answer a heartbeat within one interval misses it; --misses
 * consecutive misses declare it dead. See monitor/README.md for the
 * invariants (M1 ...) and the failover state machine.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "server/resp.h"

#define MON_MAX_NODES 32
#define MON_MAX_CLIENTS 16384 /* >= 10,000 idle clients must not cost a heartbeat */
#define MON_CLIENT_MAX_IN_BYTES (64u * 1024u)
#define MON_CLIENT_MAX_OUT_BYTES (4u * 1024u * 1024u)
#define MON_CHAN_MAX_IN_BYTES (4u * 1024u * 1024u)
#define MON_PROMOTE_TIMEOUT_MS 30000
#define MON_REPOINT_TIMEOUT_MS 5000
#define MON_PROBE_TIMEOUT_MS 30000
#define MON_PLANNED_CATCHUP_MS 5000
#define MON_REPOINT_RETRY_MS 1000
#define MON_PROBE_KEY "__redoubt_monitor_probe"

enum mon_mode { MODE_CLASSIC, MODE_AURORA };
enum mon_role { ROLE_PRIMARY, ROLE_REPLICA, ROLE_WRITER, ROLE_READER, ROLE_STORAGE, ROLE_OLD_WRITER };
static const char *const role_names[] = {"primary", "replica", "writer", "reader", "storage", "old-writer"};

/* What an outstanding request on a channel is for. */
enum mon_op { OP_NONE, OP_HB, OP_PROMOTE, OP_REPOINT, OP_FENCE, OP_PLANNED_FENCE, OP_PROBE };

struct mon_chan {
    int fd;              /* -1: closed */
    int connecting;      /* non-blocking connect in progress */
    enum mon_op op;      /* OP_NONE: idle */
    uint64_t deadline_ms; /* 0: none */
    struct rd_buf out, in;
};

struct mon_node {
    char name[64];
    char host[64];
    int port;
    enum mon_role role;     /* the monitor's view; starts from --node, follows INFO */
    struct mon_chan hb, ctl;
    unsigned misses;        /* consecutive heartbeats missed */
    int answered;           /* a heartbeat reply arrived since the last tick */
    int ever_seen;          /* answered at least once (M2) */
    int dead;               /* misses >= --misses (logged once per death) */
    uint64_t last_ok_ms, hb_replies;
    int fence_pending;      /* keep sending REDOUBT.FENCE until it answers (M5) */
    int excluded;           /* a promotion of this node failed during the current failover */
    uint64_t repoint_after_ms;
    int reader_warned;
    /* from its last INFO */
    char rep_role[16];
    char master_host[64];
    int master_port, link_up, syncing, fenced;
    uint64_t flush_lsn, receive_lsn, apply_lsn, read_point, epoch, timeline, offset, lag_ms, lag_bytes;
};

enum fo_state { FO_IDLE, FO_FENCE_OLD, FO_QUERY, FO_PROMOTE, FO_PROBE };
static const char *const fo_names[] = {"idle", "fence-old", "query", "promote", "probe"};

struct mon_failover {
    enum fo_state state;
    int planned;
    int old, cand;            /* node indexes */
    uint64_t want_replies[MON_MAX_NODES];
    uint64_t deadline_ms;
    uint64_t target_lsn;      /* planned classic switchover: the old primary's flushed LSN */
    int target_known;
    /* wall-clock milliseconds of each step (0: not reached) */
    uint64_t t_last_ok, t_detect, t_promote_sent, t_promote_done, t_first_write;
    uint64_t chosen_lsn;
    char old_name[64], new_name[64];
};

struct mon_client {
    int fd;
    struct rd_buf in, out;
    int close_after;
};

struct mon {
    char cluster[64];
    enum mon_mode mode;
    char bind[64];
    int port;
    unsigned interval_ms, misses, cooldown_ms;
    int write_probe;
    struct mon_node node[MON_MAX_NODES];
    unsigned nnodes;
    int writer;               /* index of the current writer/primary */
    int listen_fd;
    struct mon_client client[MON_MAX_CLIENTS];
    uint64_t next_tick_ms, cooldown_until_ms, ticks;
    struct mon_failover fo;
    struct mon_failover last; /* the last finished failover (t_detect == 0: none) */
    unsigned failovers;
    int pending_planned;      /* SENTINEL FAILOVER asked; starts at the next tick */
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static uint64_t wall_ms(void) { return rd_wall_us() / 1000u; }

static int is_writer_role(enum mon_role r) { return r == ROLE_PRIMARY || r == ROLE_WRITER; }

/* ------------------------------------------------------------ channels */

static void chan_init(struct mon_chan *c) { memset(c, 0, sizeof(*c)), c->fd = -1; }

static void chan_close(struct mon_chan *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        rd_debug("close: %s", strerror(errno));
    c->fd = -1;
    c->connecting = 0;
    c->op = OP_NONE;
    c->deadline_ms = 0;
    rd_buf_reset(&c->in);
    rd_buf_reset(&c->out);
}

/* Starts a non-blocking connect. 0 (in progress or done) or -1. */
static int chan_connect(struct mon_chan *c, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
            return -1;
        sa.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        rd_debug("TCP_NODELAY: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = 1; /* finished (or failed) when POLLOUT fires */
    return 0;
}

/* Peer authentication (common/auth.h) of a node connection that just
 * connected: REDOUBT.AUTH both ways, before any command is sent, so admin
 * commands (REPLICAOF, PROMOTE, REDOUBT.*, SHUTDOWN) are accepted. Blocking,
 * bounded by the heartbeat interval (at most 200 ms); storage nodes answer
 * INFO without it. 0, or -1 (the caller drops the channel and retries). */
static struct rd_auth mon_auth;
static int mon_chan_auth(const struct mon *m, const struct mon_node *n, struct mon_chan *c)
{
    if (!mon_auth.enabled || n->role == ROLE_STORAGE)
        return 0;
    char err[256];
    int rc = rd_auth_client_resp(&mon_auth, c->fd, (int)RD_MIN(m->interval_ms, 200u), err, sizeof(err));
    if (rc < 0 && rd_auth_log_once(n->name))
        rd_warn("node %s (%s:%d) failed peer authentication: %s (logged once per node)", n->name, n->host, n->port,
                err);
    return rc < 0 ? -1 : 0;
}

/* Queues one command on c (connecting first if needed). -1 if the node cannot be reached. */
static int chan_call(struct mon_node *n, struct mon_chan *c, enum mon_op op, uint64_t deadline_ms, size_t argc,
                     const char *const *argv)
{
    rd_assert(c->op == OP_NONE);
    if (c->fd < 0 && chan_connect(c, n->host, n->port) < 0)
        return -1;
    if (resp_command_str(&c->out, argc, argv) < 0) {
        chan_close(c);
        return -1;
    }
    c->op = op;
    c->deadline_ms = deadline_ms;
    return 0;
}

static int chan_flush(struct mon_chan *c)
{
    while (c->out.len > 0) {
        ssize_t w = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (w <= 0)
            return -1;
        rd_buf_consume(&c->out, (size_t)w);
    }
    return 0;
}

/* ------------------------------------------------------------ INFO parsing */

/* Copies the value of "key:" from an INFO text into out; 0 if found. */
static int info_str(const uint8_t *s, size_t len, const char *key, char *out, size_t out_len)
{
    size_t kl = strlen(key);
    size_t i = 0;
    while (i < len) {
        const uint8_t *nl = memchr(s + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - s) : len;
        size_t ll = end - i;
        if (ll > kl && memcmp(s + i, key, kl) == 0 && s[i + kl] == ':') {
            size_t vl = ll - kl - 1;
            if (vl > 0 && s[i + kl + 1 + vl - 1] == '\r')
                vl--;
            vl = RD_MIN(vl, out_len - 1);
            memcpy(out, s + i + kl + 1, vl);
            out[vl] = 0;
            return 0;
        }
        i = end + 1;
    }
    out[0] = 0;
    return -1;
}

static uint64_t info_u64(const uint8_t *s, size_t len, const char *key)
{
    char v[32];
    if (info_str(s, len, key, v, sizeof(v)) < 0)
        return 0;
    return strtoull(v, NULL, 10);
}

static void node_parse_info(struct mon_node *n, const uint8_t *s, size_t len)
{
    char v[64];
    if (info_str(s, len, "redoubt_role", n->rep_role, sizeof(n->rep_role)) < 0)
        info_str(s, len, "role", n->rep_role, sizeof(n->rep_role));
    info_str(s, len, "master_host", n->master_host, sizeof(n->master_host));
    n->master_port = (int)info_u64(s, len, "master_port");
    n->link_up = info_str(s, len, "master_link_status", v, sizeof(v)) == 0 && strcmp(v, "up") == 0;
    n->syncing = (int)info_u64(s, len, "master_sync_in_progress");
    n->fenced = (int)info_u64(s, len, "fenced");
    n->flush_lsn = info_u64(s, len, "flush_lsn");
    n->receive_lsn = info_u64(s, len, "receive_lsn");
    n->apply_lsn = info_u64(s, len, "apply_lsn");
    n->read_point = info_u64(s, len, "read_point");
    n->epoch = info_u64(s, len, "epoch");
    n->timeline = info_u64(s, len, "timeline");
    n->offset = info_u64(s, len, "master_repl_offset");
    if (n->offset == 0)
        n->offset = info_u64(s, len, "scl");
    n->lag_ms = info_u64(s, len, "lag_ms");
    n->lag_bytes = info_u64(s, len, "lag_bytes");
    if (n->lag_bytes == 0)
        n->lag_bytes = info_u64(s, len, "lag_lsn");
}

/* ------------------------------------------------------------ failover */

static void fo_finish(struct mon *m, const char *why)
{
    rd_info("failover %s -> %s: %s", m->fo.old_name, m->fo.new_name[0] ? m->fo.new_name : "-", why);
    m->fo.state = FO_IDLE;
    for (unsigned i = 0; i < m->nnodes; i++)
        m->node[i].excluded = 0;
}

static int candidate_ok(struct mon *m, int i)
{
    struct mon_node *n = &m->node[i];
    if (i == m->fo.old || n->dead || !n->ever_seen || n->excluded)
        return 0;
    if (m->mode == MODE_CLASSIC)
        return n->role == ROLE_REPLICA && strcmp(n->rep_role, "replica") == 0 && !n->syncing;
    return n->role == ROLE_READER && strcmp(n->rep_role, "reader") == 0;
}

static uint64_t candidate_lsn(struct mon *m, const struct mon_node *n)
{
    return m->mode == MODE_CLASSIC ? n->flush_lsn : n->read_point;
}

static void fo_query_start(struct mon *m, uint64_t now)
{
    m->fo.state = FO_QUERY;
    m->fo.deadline_ms = now + RD_MAX(500u, 3u * m->interval_ms);
    for (unsigned i = 0; i < m->nnodes; i++)
        m->fo.want_replies[i] = m->node[i].hb_replies + 1;
    if (m->fo.planned && m->mode == MODE_CLASSIC)
        m->fo.deadline_ms = now + MON_PLANNED_CATCHUP_MS;
}

static void fo_start(struct mon *m, int planned, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    memset(f, 0, sizeof(*f));
    f->planned = planned;
    f->old = m->writer;
    f->cand = -1;
    snprintf(f->old_name, sizeof(f->old_name), "%s", m->node[m->writer].name);
    f->t_detect = wall_ms();
    f->t_last_ok = m->node[m->writer].last_ok_ms;
    if (planned) {
        rd_info("planned switchover requested: fencing %s (%s:%d) first", f->old_name, m->node[f->old].host,
                m->node[f->old].port);
        struct mon_node *o = &m->node[f->old];
        chan_close(&o->ctl);
        char reason[160];
        snprintf(reason, sizeof(reason), "planned switchover by monitor of %s", m->cluster);
        const char *argv[] = {"REDOUBT.FENCE", reason};
        f->state = FO_FENCE_OLD;
        f->deadline_ms = now + 2000;
        if (chan_call(o, &o->ctl, OP_PLANNED_FENCE, f->deadline_ms, 2, argv) < 0) {
            rd_warn("planned switchover: cannot reach %s to fence it; promoting anyway", f->old_name);
            fo_query_start(m, now);
        }
        return;
    }
    rd_warn("FAILOVER started: writer %s (%s:%d) dead after %u missed heartbeats (last answer %" PRIu64
            " ms ago)",
            f->old_name, m->node[f->old].host, m->node[f->old].port, m->node[f->old].misses,
            f->t_last_ok ? f->t_detect - f->t_last_ok : 0);
    fo_query_start(m, now);
}

/* In FO_QUERY: have all live candidates answered a fresh heartbeat? Then promote the best. */
static void fo_query_step(struct mon *m, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    int waiting = 0, best = -1;
    if (f->planned && m->mode == MODE_CLASSIC && !f->target_known) {
        struct mon_node *o = &m->node[f->old];
        if (o->hb_replies < f->want_replies[f->old] && now < f->deadline_ms && !o->dead)
            return;
        f->target_lsn = o->offset;
        f->target_known = 1;
        rd_info("planned switchover: %s flushed up to LSN %" PRIu64 "; waiting for a replica to reach it", o->name,
                f->target_lsn);
    }
    for (unsigned i = 0; i < m->nnodes; i++) {
        if (!candidate_ok(m, (int)i))
            continue;
        if (m->node[i].hb_replies < f->want_replies[i]) {
            waiting = 1;
            continue;
        }
        struct mon_node *n = &m->node[i];
        if (best < 0 || candidate_lsn(m, n) > candidate_lsn(m, &m->node[best]) ||
            (candidate_lsn(m, n) == candidate_lsn(m, &m->node[best]) && n->receive_lsn > m->node[best].receive_lsn))
            best = (int)i;
    }
    if (f->planned && m->mode == MODE_CLASSIC && best >= 0 && candidate_lsn(m, &m->node[best]) < f->target_lsn) {
        if (now < f->deadline_ms) {
            for (unsigned i = 0; i < m->nnodes; i++) /* wait for the next round of heartbeats */
                f->want_replies[i] = m->node[i].hb_replies + 1;
            return;
        }
        rd_warn("planned switchover: no replica reached the old primary's flushed LSN %" PRIu64
                " within %d ms; promoting the best one (%" PRIu64 ")",
                f->target_lsn, MON_PLANNED_CATCHUP_MS, candidate_lsn(m, &m->node[best]));
    } else if (waiting && now < f->deadline_ms) {
        return;
    }
    if (best < 0) {
        if (now >= f->deadline_ms) {
            rd_error("failover: no live %s to promote; retrying at each heartbeat",
                     m->mode == MODE_CLASSIC ? "replica" : "reader");
            f->deadline_ms = now + RD_MAX(500u, 3u * m->interval_ms);
            for (unsigned i = 0; i < m->nnodes; i++)
                m->node[i].excluded = 0;
        }
        return;
    }
    struct mon_node *c = &m->node[best];
    f->cand = best;
    f->chosen_lsn = candidate_lsn(m, c);
    snprintf(f->new_name, sizeof(f->new_name), "%s", c->name);
    chan_close(&c->ctl);
    const char *argv[] = {"REPLICAOF", "NO", "ONE"};
    f->state = FO_PROMOTE;
    f->deadline_ms = now + MON_PROMOTE_TIMEOUT_MS;
    f->t_promote_sent = wall_ms();
    if (chan_call(c, &c->ctl, OP_PROMOTE, f->deadline_ms, 3, argv) < 0) {
        rd_error("failover: cannot connect to %s to promote it", c->name);
        c->excluded = 1;
        fo_query_start(m, now);
        return;
    }
    rd_info("promotion sent: REPLICAOF NO ONE to %s (%s:%d), %s %" PRIu64 " (+%" PRIu64 " ms after detection)",
            c->name, c->host, c->port, m->mode == MODE_CLASSIC ? "flush_lsn" : "read_point", f->chosen_lsn,
            f->t_promote_sent - f->t_detect);
}

static void send_repoint(struct mon *m, struct mon_node *n, uint64_t now)
{
    struct mon_node *w = &m->node[m->writer];
    char port[16];
    snprintf(port, sizeof(port), "%d", w->port);
    const char *argv[] = {"REPLICAOF", w->host, port};
    if (n->ctl.op != OP_NONE)
        return;
    n->repoint_after_ms = now + MON_REPOINT_RETRY_MS;
    if (chan_call(n, &n->ctl, OP_REPOINT, now + MON_REPOINT_TIMEOUT_MS, 3, argv) == 0)
        rd_info("re-point sent: REPLICAOF %s %s to %s", w->host, port, n->name);
}

static void fence_send(struct mon *m, struct mon_node *n)
{
    if (n->ctl.op != OP_NONE)
        return;
    char reason[200];
    snprintf(reason, sizeof(reason), "monitor of %s: %s is the writer now", m->cluster, m->node[m->writer].name);
    const char *argv[] = {"REDOUBT.FENCE", reason};
    /* No deadline (M5): a paused process reads the queued FENCE first thing after SIGCONT. */
    if (chan_call(n, &n->ctl, OP_FENCE, 0, 2, argv) < 0)
        rd_debug("fence: %s unreachable, retrying", n->name);
}

static void fo_promoted(struct mon *m, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    struct mon_node *c = &m->node[f->cand], *o = &m->node[f->old];
    f->t_promote_done = wall_ms();
    m->writer = f->cand;
    c->role = m->mode == MODE_CLASSIC ? ROLE_PRIMARY : ROLE_WRITER;
    o->role = ROLE_OLD_WRITER;
    if (!f->planned || !o->fenced)
        o->fence_pending = 1;
    m->failovers++;
    m->cooldown_until_ms = now + m->cooldown_ms;
    rd_warn("promotion done: %s (%s:%d) is the writer (%" PRIu64 " ms after detection, promotion took %" PRIu64
            " ms); fencing %s until it answers",
            c->name, c->host, c->port, f->t_promote_done - f->t_detect, f->t_promote_done - f->t_promote_sent,
            o->name);
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_node *n = &m->node[i];
        if ((int)i == f->cand || (int)i == f->old)
            continue;
        if (m->mode == MODE_CLASSIC && n->role == ROLE_REPLICA && !n->dead)
            send_repoint(m, n, now);
        if (m->mode == MODE_AURORA && n->role == ROLE_READER) {
            rd_warn("reader %s still follows %s: an aurora reader cannot be re-pointed at run time "
                    "(REPLICAOF host port is refused); restart it with --writer %s:%d",
                    n->name, o->name, c->host, c->port);
            n->reader_warned = 1;
        }
    }
    fence_send(m, o);
    if (m->write_probe) {
        char v[32];
        snprintf(v, sizeof(v), "%" PRIu64, wall_ms());
        const char *argv[] = {"SET", MON_PROBE_KEY, v};
        f->state = FO_PROBE;
        f->deadline_ms = now + MON_PROBE_TIMEOUT_MS;
        if (chan_call(c, &c->ctl, OP_PROBE, f->deadline_ms, 3, argv) == 0)
            return;
    }
    m->last = *f;
    fo_finish(m, "done");
}

/* ------------------------------------------------------------ replies */

static int reply_is_ok(const struct resp_reply *r) { return r->type == RESP_STATUS; }

static void reply_text(const struct resp_reply *r, char *out, size_t out_len)
{
    if (r->type == RESP_STATUS || r->type == RESP_ERROR || r->type == RESP_BULK)
        snprintf(out, out_len, "%.*s", (int)RD_MIN(r->len, out_len - 1), (const char *)r->str);
    else
        snprintf(out, out_len, "(reply type %d)", (int)r->type);
}

static void on_hb_reply(struct mon *m, struct mon_node *n, const struct resp_reply *r, uint64_t now)
{
    if (r->type != RESP_BULK)
        return;
    n->answered = 1;
    n->last_ok_ms = wall_ms();
    n->hb_replies++;
    if (n->dead)
        rd_warn("node %s (%s:%d) answers again after %u missed heartbeats", n->name, n->host, n->port, n->misses);
    else if (!n->ever_seen)
        rd_info("node %s (%s:%d) is up", n->name, n->host, n->port);
    n->ever_seen = 1;
    n->misses = 0;
    n->dead = 0;
    node_parse_info(n, r->str, r->len);
    int idx = (int)(n - m->node);
    int promoting = m->fo.state == FO_PROMOTE && m->fo.cand == idx;
    /* Follow what the node says it is (a restarted old primary comes back as a replica). */
    if (strcmp(n->rep_role, "replica") == 0 && idx != m->writer)
        n->role = ROLE_REPLICA, n->fence_pending = 0;
    else if (strcmp(n->rep_role, "reader") == 0 && idx != m->writer)
        n->role = ROLE_READER, n->fence_pending = 0;
    /* M4: a second writer that is not fenced gets fenced. */
    if ((strcmp(n->rep_role, "primary") == 0 || strcmp(n->rep_role, "writer") == 0) && idx != m->writer &&
        !promoting && !n->fenced && !n->fence_pending) {
        rd_warn("node %s (%s:%d) reports itself %s but %s is the writer: fencing it", n->name, n->host, n->port,
                n->rep_role, m->node[m->writer].name);
        n->role = ROLE_OLD_WRITER;
        n->fence_pending = 1;
    }
    if (n->fence_pending)
        fence_send(m, n);
    /* Classic replicas follow the current primary (M6). */
    struct mon_node *w = &m->node[m->writer];
    if (m->mode == MODE_CLASSIC && n->role == ROLE_REPLICA && m->fo.state == FO_IDLE && !w->dead &&
        w->ever_seen && strcmp(w->rep_role, "primary") == 0 &&
        (n->master_port != w->port || strcmp(n->master_host, w->host) != 0) && now >= n->repoint_after_ms)
        send_repoint(m, n, now);
    if (m->mode == MODE_AURORA && n->role == ROLE_READER && n->master_port == w->port)
        n->reader_warned = 0;
    if (m->mode == MODE_AURORA && n->role == ROLE_READER && !n->reader_warned && m->fo.state == FO_IDLE &&
        n->master_port != 0 && n->master_port != w->port) {
        rd_warn("reader %s follows %s:%d, not the writer %s (%s:%d): restart it with --writer %s:%d", n->name,
                n->master_host, n->master_port, w->name, w->host, w->port, w->host, w->port);
        n->reader_warned = 1;
    }
}

static void on_ctl_reply(struct mon *m, struct mon_node *n, enum mon_op op, const struct resp_reply *r,
                         uint64_t now)
{
    char text[256];
    reply_text(r, text, sizeof(text));
    int idx = (int)(n - m->node);
    switch (op) {
    case OP_PROMOTE:
        if (m->fo.state != FO_PROMOTE || m->fo.cand != idx)
            return;
        if (!reply_is_ok(r)) {
            rd_error("promotion of %s refused: %s", n->name, text);
            n->excluded = 1;
            fo_query_start(m, now);
            return;
        }
        fo_promoted(m, now);
        return;
    case OP_REPOINT:
        if (reply_is_ok(r))
            rd_info("re-point done: %s follows %s", n->name, m->node[m->writer].name);
        else
            rd_warn("re-point of %s refused: %s", n->name, text);
        return;
    case OP_FENCE:
        if (reply_is_ok(r)) {
            rd_warn("fenced %s (%s:%d): it refuses writes from now on", n->name, n->host, n->port);
            n->fenced = 1;
        } else {
            rd_info("fence of %s answered: %s (it is no writer any more)", n->name, text);
        }
        n->fence_pending = 0;
        return;
    case OP_PLANNED_FENCE:
        if (m->fo.state != FO_FENCE_OLD)
            return;
        if (reply_is_ok(r)) {
            n->fenced = 1;
            rd_info("planned switchover: %s fenced", n->name);
        } else {
            rd_warn("planned switchover: fence of %s answered %s", n->name, text);
        }
        /* Its flushed LSN, read after the fence: what the candidate must reach. */
        fo_query_start(m, now);
        m->fo.want_replies[idx] = n->hb_replies + 2; /* a heartbeat sent after the fence took effect */
        return;
    case OP_PROBE:
        if (m->fo.state != FO_PROBE)
            return;
        if (r->type == RESP_STATUS) {
            m->fo.t_first_write = wall_ms();
            rd_warn("first write acknowledged by the new writer %s: %" PRIu64 " ms after detection", n->name,
                    m->fo.t_first_write - m->fo.t_detect);
        } else {
            rd_warn("write probe on %s refused: %s", n->name, text);
        }
        m->last = m->fo;
        fo_finish(m, "done");
        return;
    default:
        return;
    }
}

static void on_chan_failed(struct mon *m, struct mon_node *n, struct mon_chan *c, const char *why, uint64_t now)
{
    enum mon_op op = c->op;
    chan_close(c);
    int idx = (int)(n - m->node);
    switch (op) {
    case OP_PROMOTE:
        if (m->fo.state == FO_PROMOTE && m->fo.cand == idx) {
            rd_error("promotion of %s failed (%s); fencing it in case it finishes later, trying another", n->name,
                     why);
            n->excluded = 1;
            n->fence_pending = 1;
            fo_query_start(m, now);
        }
        return;
    case OP_PLANNED_FENCE:
        if (m->fo.state == FO_FENCE_OLD) {
            rd_warn("planned switchover: fence of %s failed (%s); promoting anyway, fencing it later", n->name, why);
            n->fence_pending = 1;
            fo_query_start(m, now);
        }
        return;
    case OP_PROBE:
        if (m->fo.state == FO_PROBE) {
            rd_warn("write probe on %s failed: %s", n->name, why);
            m->last = m->fo;
            fo_finish(m, "done (no write probe)");
        }
        return;
    case OP_REPOINT:
        rd_warn("re-point of %s failed: %s", n->name, why);
        return;
    default:
        return;
    }
}

/* Reads what arrived on c and handles complete replies. */
static void chan_on_readable(struct mon *m, struct mon_node *n, struct mon_chan *c, uint64_t now)
{
    if (rd_buf_reserve(&c->in, 65536) < 0) {
        on_chan_failed(m, n, c, "out of memory", now);
        return;
    }
    ssize_t r = recv(c->fd, c->in.data + c->in.len, 65536, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        on_chan_failed(m, n, c, r == 0 ? "connection closed" : strerror(errno), now);
        return;
    }
    c->in.len += (size_t)r;
    if (c->in.len > MON_CHAN_MAX_IN_BYTES) {
        on_chan_failed(m, n, c, "reply too large", now);
        return;
    }
    struct resp_reply rep;
    int used = resp_read_reply(c->in.data, c->in.len, &rep);
    if (used == 0)
        return;
    if (used < 0) {
        on_chan_failed(m, n, c, "protocol error", now);
        return;
    }
    enum mon_op op = c->op;
    c->op = OP_NONE;
    c->deadline_ms = 0;
    if (op == OP_HB)
        on_hb_reply(m, n, &rep, now);
    else
        on_ctl_reply(m, n, op, &rep, now);
    resp_reply_free(&rep);
    if (c->fd >= 0)
        rd_buf_consume(&c->in, (size_t)used);
}

/* ------------------------------------------------------------ heartbeat tick */

static void tick(struct mon *m, uint64_t now)
{
    m->ticks++;
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_node *n = &m->node[i];
        if (!n->answered)
            n->misses++;
        n->answered = 0;
        if (n->hb.op == OP_HB && n->hb.deadline_ms && now >= n->hb.deadline_ms)
            chan_close(&n->hb); /* long silent: reconnect (a half-open link never answers) */
        if (n->hb.op == OP_NONE) {
            const char *argv[] = {"INFO", "replication"};
            uint64_t dl = now + RD_MAX(2000u, 2u * m->misses * m->interval_ms);
            if (chan_call(n, &n->hb, OP_HB, dl, 2, argv) < 0)
                chan_close(&n->hb);
        }
        if (n->misses >= m->misses && n->ever_seen && !n->dead) {
            n->dead = 1;
            rd_warn("node %s (%s:%d, %s) declared dead: %u consecutive heartbeats missed", n->name, n->host, n->port,
                    role_names[n->role], n->misses);
        }
        if (n->fence_pending && (n->ctl.op == OP_NONE))
            fence_send(m, n);
    }
    struct mon_node *w = &m->node[m->writer];
    if (m->fo.state == FO_IDLE && now >= m->cooldown_until_ms) {
        if (w->dead)
            fo_start(m, 0, now);
        else if (m->pending_planned)
            fo_start(m, 1, now);
        m->pending_planned = 0;
    }
}

/* Deadlines of outstanding requests and of the failover steps. */
static void check_deadlines(struct mon *m, uint64_t now)
{
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_chan *c = &m->node[i].ctl;
        if (c->op != OP_NONE && c->deadline_ms && now >= c->deadline_ms)
            on_chan_failed(m, &m->node[i], c, "timed out", now);
    }
    if (m->fo.state == FO_QUERY)
        fo_query_step(m, now);
}

/* ------------------------------------------------------------ RESP server */

static void client_close(struct mon_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    rd_buf_free(&c->in);
    rd_buf_free(&c->out);
    c->close_after = 0;
}

static int arg_is(const struct resp_arg *a, const char *s)
{
    return a->len == strlen(s) && strncasecmp((const char *)a->ptr, s, a->len) == 0;
}

static void put_kv(struct rd_buf *b, const char *k, const char *v)
{
    resp_bulk_str(b, k);
    resp_bulk_str(b, v);
}

static void put_kvi(struct rd_buf *b, const char *k, int64_t v)
{
    resp_bulk_str(b, k);
    resp_bulkf(b, "%" PRId64, v);
}

static void node_flags(const struct mon *m, const struct mon_node *n, char *out, size_t len, int writer)
{
    snprintf(out, len, "%s%s%s%s", writer ? "master" : "slave", n->dead || !n->ever_seen ? ",s_down" : "",
             n->fenced ? ",fenced" : "", writer && m->fo.state != FO_IDLE ? ",failover_in_progress" : "");
}

static size_t nreplicas(const struct mon *m)
{
    size_t k = 0;
    for (unsigned i = 0; i < m->nnodes; i++)
        k += (int)i != m->writer && m->node[i].role != ROLE_STORAGE;
    return k;
}

static void put_master(const struct mon *m, struct rd_buf *b)
{
    const struct mon_node *w = &m->node[m->writer];
    char flags[96];
    node_flags(m, w, flags, sizeof(flags), 1);
    resp_array_hdr(b, 20);
    put_kv(b, "name", m->cluster);
    put_kv(b, "ip", w->host);
    put_kvi(b, "port", w->port);
    put_kv(b, "runid", w->name);
    put_kv(b, "flags", flags);
    put_kvi(b, "num-slaves", (int64_t)nreplicas(m));
    put_kvi(b, "num-other-sentinels", 0);
    put_kvi(b, "quorum", 1);
    put_kvi(b, "config-epoch", m->failovers);
    put_kv(b, "role-reported", w->rep_role[0] ? w->rep_role : role_names[w->role]);
}

static void put_replicas(const struct mon *m, struct rd_buf *b)
{
    resp_array_hdr(b, nreplicas(m));
    for (unsigned i = 0; i < m->nnodes; i++) {
        const struct mon_node *n = &m->node[i];
        if ((int)i == m->writer || n->role == ROLE_STORAGE)
            continue;
        char flags[96];
        node_flags(m, n, flags, sizeof(flags), 0);
        resp_array_hdr(b, 20);
        put_kv(b, "name", n->name);
        put_kv(b, "ip", n->host);
        put_kvi(b, "port", n->port);
        put_kv(b, "flags", flags);
        put_kv(b, "role-reported", n->rep_role[0] ? n->rep_role : role_names[n->role]);
        put_kv(b, "master-host", n->master_host);
        put_kvi(b, "master-port", n->master_port);
        put_kv(b, "master-link-status", n->link_up ? "ok" : "err");
        put_kvi(b, "slave-repl-offset", (int64_t)(m->mode == MODE_CLASSIC ? n->apply_lsn : n->read_point));
        put_kvi(b, "missed-heartbeats", n->misses);
    }
}

static void put_info(const struct mon *m, struct rd_buf *out)
{
    struct rd_buf b = {0};
    const struct mon_node *w = &m->node[m->writer];
    rd_buf_appendf(&b,
                   "# Monitor\r\ncluster:%s\r\nmode:%s\r\nwriter:%s\r\nwriter_addr:%s:%d\r\nwriter_alive:%d\r\n"
                   "failover_state:%s\r\nfailovers:%u\r\ninterval_ms:%u\r\nmisses:%u\r\ncooldown_ms:%u\r\n"
                   "process_id:%d\r\n",
                   m->cluster, m->mode == MODE_CLASSIC ? "classic" : "aurora", w->name, w->host, w->port,
                   !w->dead && w->ever_seen, fo_names[m->fo.state], m->failovers, m->interval_ms, m->misses,
                   m->cooldown_ms, (int)getpid());
    const struct mon_failover *f = &m->last;
    if (f->t_detect) {
        rd_buf_appendf(&b,
                       "last_failover:old=%s,new=%s,planned=%d,chosen_lsn=%" PRIu64 "\r\n"
                       "last_failover_timeline:last_answer_ms=%" PRIu64 ",detect_ms=%" PRIu64
                       ",promote_sent_ms=%" PRIu64 ",promote_done_ms=%" PRIu64 ",first_write_ms=%" PRIu64 "\r\n"
                       "last_failover_detect_to_promoted_ms:%" PRIu64 "\r\nlast_failover_detect_to_write_ms:%" PRId64
                       "\r\n",
                       f->old_name, f->new_name, f->planned, f->chosen_lsn, f->t_last_ok, f->t_detect,
                       f->t_promote_sent, f->t_promote_done, f->t_first_write, f->t_promote_done - f->t_detect,
                       f->t_first_write ? (int64_t)(f->t_first_write - f->t_detect) : -1);
    }
    rd_buf_appendf(&b, "master0:name=%s,status=%s,address=%s:%d,slaves=%zu,sentinels=1\r\n\r\n# Nodes\r\n",
                   m->cluster, w->dead ? "sdown" : "ok", w->host, w->port, nreplicas(m));
    for (unsigned i = 0; i < m->nnodes; i++) {
        const struct mon_node *n = &m->node[i];
        rd_buf_appendf(&b,
                       "node%u:name=%s,role=%s,addr=%s:%d,alive=%d,misses=%u,reported=%s,fenced=%d,epoch=%" PRIu64
                       ",timeline=%" PRIu64 ",lsn=%" PRIu64 ",lag_ms=%" PRIu64 ",lag_bytes=%" PRIu64 "\r\n",
                       i, n->name, (int)i == m->writer ? (m->mode == MODE_CLASSIC ? "primary" : "writer")
                                                       : role_names[n->role],
                       n->host, n->port, n->ever_seen && !n->dead, n->misses, n->rep_role, n->fenced, n->epoch,
                       n->timeline,
                       n->role == ROLE_REPLICA ? n->flush_lsn : n->role == ROLE_READER ? n->read_point : n->offset,
                       n->lag_ms, n->lag_bytes);
    }
    resp_bulk(out, b.data, b.len);
    rd_buf_free(&b);
}

static void cmd_sentinel(struct mon *m, struct rd_buf *o, const struct resp_args *a)
{
    if (a->n < 2) {
        resp_error(o, "ERR wrong number of arguments for 'sentinel' command");
        return;
    }
    const struct resp_arg *sub = &a->v[1];
    int named = a->n >= 3 && a->v[2].len == strlen(m->cluster) && memcmp(a->v[2].ptr, m->cluster, a->v[2].len) == 0;
    if (arg_is(sub, "get-master-addr-by-name")) {
        if (!named) {
            resp_null_array(o);
            return;
        }
        resp_array_hdr(o, 2);
        resp_bulk_str(o, m->node[m->writer].host);
        resp_bulkf(o, "%d", m->node[m->writer].port);
    } else if (arg_is(sub, "masters")) {
        resp_array_hdr(o, 1);
        put_master(m, o);
    } else if (arg_is(sub, "master")) {
        if (named)
            put_master(m, o);
        else
            resp_error(o, "ERR No such master with that name");
    } else if (arg_is(sub, "replicas") || arg_is(sub, "slaves")) {
        if (named)
            put_replicas(m, o);
        else
            resp_error(o, "ERR No such master with that name");
    } else if (arg_is(sub, "sentinels")) {
        resp_array_hdr(o, 0);
    } else if (arg_is(sub, "failover")) {
        if (!named)
            resp_error(o, "ERR No such master with that name");
        else if (m->fo.state != FO_IDLE || m->pending_planned)
            resp_error(o, "INPROG Failover already in progress");
        else if (m->node[m->writer].dead)
            resp_error(o, "ERR the writer is dead: an automatic failover follows");
        else
            m->pending_planned = 1, resp_simple(o, "OK");
    } else {
        resp_error(o, "ERR unknown SENTINEL subcommand: get-master-addr-by-name, masters, master, replicas, "
                      "sentinels, failover");
    }
}

static void client_exec(struct mon *m, struct mon_client *c, const struct resp_args *a)
{
    struct rd_buf *o = &c->out;
    const struct resp_arg *cmd = &a->v[0];
    if (arg_is(cmd, "ping"))
        a->n > 1 ? resp_bulk(o, a->v[1].ptr, a->v[1].len) : resp_simple(o, "PONG");
    else if (arg_is(cmd, "sentinel"))
        cmd_sentinel(m, o, a);
    else if (arg_is(cmd, "info"))
        put_info(m, o);
    else if (arg_is(cmd, "role")) {
        resp_array_hdr(o, 2);
        resp_bulk_str(o, "sentinel");
        resp_array_hdr(o, 1);
        resp_bulk_str(o, m->cluster);
    } else if (arg_is(cmd, "command"))
        resp_array_hdr(o, 0);
    else if (arg_is(cmd, "client") || arg_is(cmd, "auth"))
        resp_simple(o, "OK");
    else if (arg_is(cmd, "quit"))
        resp_simple(o, "OK"), c->close_after = 1;
    else
        resp_errorf(o, "ERR unknown command '%.*s': the monitor answers PING, INFO, ROLE and SENTINEL",
                    (int)RD_MIN(cmd->len, 64), (const char *)cmd->ptr);
}

static void client_on_readable(struct mon *m, struct mon_client *c, struct resp_args *args)
{
    if (rd_buf_reserve(&c->in, 16384) < 0) {
        client_close(c);
        return;
    }
    ssize_t r = recv(c->fd, c->in.data + c->in.len, 16384, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        client_close(c);
        return;
    }
    c->in.len += (size_t)r;
    size_t off = 0;
    struct resp_limits lim;
    resp_limits_default(&lim);
    lim.max_args = 64;
    lim.max_bulk_bytes = MON_CLIENT_MAX_IN_BYTES;
    for (unsigned k = 0; k < 256 && !c->close_after; k++) {
        const char *err = NULL;
        int used = resp_parse(c->in.data + off, c->in.len - off, &lim, args, &err);
        if (used == 0)
            break;
        if (used < 0) {
            resp_errorf(&c->out, "ERR %s", err ? err : "Protocol error");
            c->close_after = 1;
            break;
        }
        off += (size_t)used;
        if (args->n > 0)
            client_exec(m, c, args);
    }
    rd_buf_consume(&c->in, off);
    if (c->in.len > MON_CLIENT_MAX_IN_BYTES || c->out.len > MON_CLIENT_MAX_OUT_BYTES)
        client_close(c);
}

static void client_flush(struct mon_client *c)
{
    while (c->out.len > 0) {
        ssize_t w = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w <= 0) {
            client_close(c);
            return;
        }
        rd_buf_consume(&c->out, (size_t)w);
    }
    if (c->close_after)
        client_close(c);
}

static void on_accept(struct mon *m)
{
    for (int k = 0; k < 16; k++) {
        int fd = accept4(m->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct mon_client *c = NULL;
        for (unsigned i = 0; i < MON_MAX_CLIENTS && c == NULL; i++)
            if (m->client[i].fd < 0)
                c = &m->client[i];
        if (c == NULL) {
            static const char full[] = "-ERR max number of clients reached\r\n";
            ssize_t w = send(fd, full, sizeof(full) - 1, MSG_NOSIGNAL);
            (void)w;
            close(fd);
            continue;
        }
        memset(c, 0, sizeof(*c));
        c->fd = fd;
    }
}

static int listen_on(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        rd_error("--bind %s is not an IPv4 address", addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        rd_error("could not listen on %s:%d: %s", addr, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ------------------------------------------------------------ loop */

static void run(struct mon *m)
{
    struct pollfd pfd[1 + MON_MAX_CLIENTS + 2 * MON_MAX_NODES];
    struct resp_args args = {0};
    m->next_tick_ms = rd_now_ms();
    while (!stop_flag) {
        uint64_t now = rd_now_ms();
        if (now >= m->next_tick_ms) {
            tick(m, now);
            m->next_tick_ms += m->interval_ms;
            if (m->next_tick_ms <= now) /* we fell behind: do not burst ticks (that would be misses too fast) */
                m->next_tick_ms = now + m->interval_ms;
        }
        check_deadlines(m, now);
        nfds_t np = 0;
        pfd[np++] = (struct pollfd){.fd = m->listen_fd, .events = POLLIN};
        for (unsigned i = 0; i < MON_MAX_CLIENTS; i++) {
            struct mon_client *c = &m->client[i];
            if (c->fd >= 0)
                pfd[np++] = (struct pollfd){.fd = c->fd, .events = (short)(POLLIN | (c->out.len ? POLLOUT : 0))};
        }
        for (unsigned i = 0; i < m->nnodes; i++) {
            struct mon_chan *cs[2] = {&m->node[i].hb, &m->node[i].ctl};
            for (int k = 0; k < 2; k++)
                if (cs[k]->fd >= 0)
                    pfd[np++] = (struct pollfd){
                        .fd = cs[k]->fd,
                        .events = (short)(POLLIN | (cs[k]->connecting || cs[k]->out.len ? POLLOUT : 0))};
        }
        now = rd_now_ms();
        int timeout = m->next_tick_ms > now ? (int)(m->next_tick_ms - now) : 0;
        if (m->fo.state == FO_QUERY)
            timeout = RD_MIN(timeout, 5);
        int pr = poll(pfd, np, timeout);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            rd_panic("poll: %s", strerror(errno));
        }
        now = rd_now_ms();
        /* Match results by fd (sets may have changed while handling earlier entries). */
        for (nfds_t k = 0; k < np; k++) {
            if (pfd[k].revents == 0)
                continue;
            int fd = pfd[k].fd;
            if (fd == m->listen_fd) {
                on_accept(m);
                continue;
            }
            int done = 0;
            for (unsigned i = 0; i < MON_MAX_CLIENTS && !done; i++) {
                struct mon_client *c = &m->client[i];
                if (c->fd != fd)
                    continue;
                done = 1;
                if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
                    client_on_readable(m, c, &args);
                if (c->fd >= 0)
                    client_flush(c);
            }
            for (unsigned i = 0; i < m->nnodes && !done; i++) {
                struct mon_node *n = &m->node[i];
                struct mon_chan *cs[2] = {&n->hb, &n->ctl};
                for (int j = 0; j < 2 && !done; j++) {
                    struct mon_chan *c = cs[j];
                    if (c->fd != fd)
                        continue;
                    done = 1;
                    if (c->connecting && (pfd[k].revents & (POLLOUT | POLLERR | POLLHUP))) {
                        int err = 0;
                        socklen_t el = sizeof(err);
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
                            on_chan_failed(m, n, c, err ? strerror(err) : "connect failed", now);
                            continue;
                        }
                        c->connecting = 0;
                        if (mon_chan_auth(m, n, c) < 0) {
                            on_chan_failed(m, n, c, "peer authentication failed", now);
                            continue;
                        }
                    }
                    if (!c->connecting && c->out.len > 0 && chan_flush(c) < 0) {
                        on_chan_failed(m, n, c, "send failed", now);
                        continue;
                    }
                    if (!c->connecting && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                        chan_on_readable(m, n, c, now);
                }
            }
        }
    }
    resp_args_free(&args);
}

/* ------------------------------------------------------------ flags */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt-monitor --cluster NAME --mode classic|aurora --port P --node name=role@host:port ...\n"
            "\n"
            "Heartbeats every node of one Redoubt cluster, fails over when the writer dies\n"
            "(classic: promotes the replica with the highest flush LSN and re-points the others;\n"
            "aurora: promotes a reader), fences the old writer, and answers Redis Sentinel\n"
            "discovery (SENTINEL get-master-addr-by-name NAME) on --port.\n"
            "\n"
            "  --cluster NAME      the cluster (master) name clients ask for\n"
            "  --mode M            classic or aurora\n"
            "  --port P            RESP port of the monitor\n"
            "  --bind ADDR         IPv4 address to listen on (default 127.0.0.1)\n"
            "  --node SPEC         name=role@host:port, role primary|replica|writer|reader|storage;\n"
            "                      repeat for every node (exactly one primary or writer)\n"
            "  --interval-ms N     heartbeat interval (default 100)\n"
            "  --misses N          consecutive missed heartbeats that declare a node dead (default 5)\n"
            "  --cooldown-ms N     no new failover within N ms of the last one (default 3000)\n"
            "  --no-write-probe    do not SET %s on the new writer after a promotion\n"
            "  --log-file F        append the log to F instead of stderr\n"
            "  --cluster-secret-file F  authenticate to the nodes with the cluster secret (mode 0600)\n"
            "  --help              this text\n",
            MON_PROBE_KEY);
}

static long parse_num(const char *flag, const char *v, long min, long max)
{
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != 0 || n < min || n > max) {
        fprintf(stderr, "redoubt-monitor: %s expects a number in [%ld, %ld], got \"%s\"\n", flag, min, max, v);
        exit(2);
    }
    return n;
}

static int parse_node(struct mon *m, const char *spec)
{
    if (m->nnodes >= MON_MAX_NODES) {
        fprintf(stderr, "redoubt-monitor: at most %d nodes\n", MON_MAX_NODES);
        return -1;
    }
    struct mon_node *n = &m->node[m->nnodes];
    const char *eq = strchr(spec, '='), *at = strchr(spec, '@'), *colon = strrchr(spec, ':');
    if (!eq || !at || !colon || !(eq < at && at < colon) || eq == spec || (size_t)(eq - spec) >= sizeof(n->name) ||
        (size_t)(colon - at - 1) >= sizeof(n->host) || colon == at + 1)
        goto bad;
    memcpy(n->name, spec, (size_t)(eq - spec));
    char role[16];
    size_t rl = (size_t)(at - eq - 1);
    if (rl >= sizeof(role))
        goto bad;
    memcpy(role, eq + 1, rl);
    role[rl] = 0;
    unsigned r;
    for (r = 0; r < ROLE_OLD_WRITER; r++)
        if (strcmp(role, role_names[r]) == 0)
            break;
    if (r == ROLE_OLD_WRITER)
        goto bad;
    n->role = (enum mon_role)r;
    memcpy(n->host, at + 1, (size_t)(colon - at - 1));
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != 0 || port < 1 || port > 65535)
        goto bad;
    n->port = (int)port;
    chan_init(&n->hb);
    chan_init(&n->ctl);
    m->nnodes++;
    return 0;
bad:
    fprintf(stderr, "redoubt-monitor: bad --node \"%s\" (want name=role@host:port, role primary|replica|writer|"
                    "reader|storage)\n", spec);
    return -1;
}

int main(int argc, char **argv)
{
    static struct mon mon;
    struct mon *m = &mon;
    snprintf(m->bind, sizeof(m->bind), "127.0.0.1");
    m->interval_ms = 100;
    m->misses = 5;
    m->cooldown_ms = 3000;
    m->write_probe = 1;
    m->mode = (enum mon_mode)-1;
    m->writer = -1;
    const char *log_file = NULL;
    static const struct option opts[] = {
        {"cluster", required_argument, 0, 'c'},  {"mode", required_argument, 0, 'm'},
        {"port", required_argument, 0, 'p'},     {"bind", required_argument, 0, 'b'},
        {"node", required_argument, 0, 'n'},     {"interval-ms", required_argument, 0, 'i'},
        {"misses", required_argument, 0, 'x'},   {"cooldown-ms", required_argument, 0, 'k'},
        {"log-file", required_argument, 0, 'l'}, {"no-write-probe", no_argument, 0, 'W'},
        {"help", no_argument, 0, 'h'},           {"cluster-secret-file", required_argument, 0, 'S'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': snprintf(m->cluster, sizeof(m->cluster), "%s", optarg); break;
        case 'm':
            if (strcmp(optarg, "classic") == 0)
                m->mode = MODE_CLASSIC;
            else if (strcmp(optarg, "aurora") == 0)
                m->mode = MODE_AURORA;
            else {
                fprintf(stderr, "redoubt-monitor: --mode classic|aurora, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'p': m->port = (int)parse_num("--port", optarg, 1, 65535); break;
        case 'b': snprintf(m->bind, sizeof(m->bind), "%s", optarg); break;
        case 'n':
            if (parse_node(m, optarg) < 0)
                return 2;
            break;
        case 'i': m->interval_ms = (unsigned)parse_num("--interval-ms", optarg, 10, 60000); break;
        case 'x': m->misses = (unsigned)parse_num("--misses", optarg, 1, 1000); break;
        case 'k': m->cooldown_ms = (unsigned)parse_num("--cooldown-ms", optarg, 0, 3600000); break;
        case 'l': log_file = optarg; break;
        case 'W': m->write_probe = 0; break;
        case 'S': {
            char err[512];
            if (rd_auth_load(&mon_auth, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "redoubt-monitor: %s\n", err);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (m->cluster[0] == 0 || (int)m->mode < 0 || m->port == 0 || m->nnodes == 0) {
        fprintf(stderr, "redoubt-monitor: --cluster, --mode, --port and --node are required\n");
        usage(stderr);
        return 2;
    }
    for (unsigned i = 0; i < m->nnodes; i++) {
        enum mon_role r = m->node[i].role;
        int ok = m->mode == MODE_CLASSIC ? (r == ROLE_PRIMARY || r == ROLE_REPLICA)
                                          : (r == ROLE_WRITER || r == ROLE_READER || r == ROLE_STORAGE);
        if (!ok) {
            fprintf(stderr, "redoubt-monitor: node %s: role %s does not exist in %s mode\n", m->node[i].name,
                    role_names[r], m->mode == MODE_CLASSIC ? "classic" : "aurora");
            return 2;
        }
        if (is_writer_role(r)) {
            if (m->writer >= 0) {
                fprintf(stderr, "redoubt-monitor: more than one primary/writer given\n");
                return 2;
            }
            m->writer = (int)i;
        }
    }
    if (m->writer < 0) {
        fprintf(stderr, "redoubt-monitor: no --node with role primary or writer\n");
        return 2;
    }
    if (log_file != NULL) {
        int fd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
            fprintf(stderr, "redoubt-monitor: could not open log file \"%s\": %s\n", log_file, strerror(errno));
            return 1;
        }
        close(fd);
    }
    rd_log_init("monitor", RD_LOG_INFO);
    if (!mon_auth.enabled)
        rd_warn("no --cluster-secret-file: node connections are not authenticated");
    if (rd_raise_nofile() < MON_MAX_CLIENTS + 2 * MON_MAX_NODES + 16)
        rd_warn("open file limit below %d: fewer clients can connect", MON_MAX_CLIENTS);
    for (unsigned i = 0; i < MON_MAX_CLIENTS; i++)
        m->client[i].fd = -1;
    m->listen_fd = listen_on(m->bind, m->port);
    if (m->listen_fd < 0)
        return 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rd_info("monitor of %s (%s) on %s:%d: %u nodes, writer %s, heartbeat every %u ms, dead after %u misses, "
            "cooldown %u ms",
            m->cluster, m->mode == MODE_CLASSIC ? "classic" : "aurora", m->bind, m->port, m->nnodes,
            m->node[m->writer].name, m->interval_ms, m->misses, m->cooldown_ms);
    run(m);
    rd_info("stopping (signal)");
    for (unsigned i = 0; i < m->nnodes; i++) {
        chan_close(&m->node[i].hb);
        chan_close(&m->node[i].ctl);
        rd_buf_free(&m->node[i].hb.in), rd_buf_free(&m->node[i].hb.out);
        rd_buf_free(&m->node[i].ctl.in), rd_buf_free(&m->node[i].ctl.out);
    }
    for (unsigned i = 0; i < MON_MAX_CLIENTS; i++)
        if (m->client[i].fd >= 0)
            client_close(&m->client[i]);
    close(m->listen_fd);
    return 0;
}
