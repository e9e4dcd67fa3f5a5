/*
 * monitor.c — `redoubt-monitor`: heartbeats every node of one cluster, agrees
 * with its peer monitors (a majority) that the writer is down, fails it over
 * under a failover epoch when it leads, fences the old one, renews the
 * primary's lease, and tells clients where the writer is (a subset of Redis
 * Sentinel over RESP2).
 *
 * One thread, one poll loop. Every outbound link is a non-blocking RESP
 * connection (struct mon_chan) with at most one request outstanding; every
 * node has three: `hb` for heartbeats (INFO replication every --interval-ms),
 * `ctl` for actions (term, promote, re-point, fence, write probe) and `ls`
 * for lease renewals; every peer monitor has one (hello, down queries, votes).
 * A node is down for this monitor (subjectively) when --misses consecutive
 * heartbeats went unanswered, or at once when its connection closed and a
 * new one was refused twice (a crashed process). See monitor/README.md for
 * the invariants (M1 ...) and the failover state machine.
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
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/buf.h"
#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/resp.h"

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
#define MON_MAX_PEERS 15
#define MON_TERM_TIMEOUT_MS 2000     /* REDOUBT.TERM answers from enough replicas */
#define MON_TERM_GRACE_MS 50         /* after the quorum answered, wait this long for the rest */
#define MON_ELECT_TIMEOUT_MS 300     /* collect a majority of votes within this */
#define MON_VOTE_HOLD_MS 1500        /* after voting for a peer, start no election of our own */
#define MON_UNBAN_MS 2500            /* ML5: a vote's failover is over after this (+ the lease) */
#define MON_RANK_DELAY_MS 25         /* per live peer with a lower id: lets the lowest id ask first */
#define MON_FAST_MS 5                /* poll step while something is being confirmed or decided */
#define MON_REFUSALS_DEAD 2          /* refused connects (after a close) that make a node down */
#define MON_STATE_FILE "monitor.state"
#define MON_STATE_MAGIC "redoubt-monitor-state"
#define MON_STATE_VERSION 1
#define MON_STATE_SEED 0x4d4f4e5331ull /* "MONS1": checksum seed of the state file */

enum mon_mode { MODE_CLASSIC, MODE_AURORA };
enum mon_role { ROLE_PRIMARY, ROLE_REPLICA, ROLE_WRITER, ROLE_READER, ROLE_STORAGE, ROLE_OLD_WRITER };
static const char *const role_names[] = {"primary", "replica", "writer", "reader", "storage", "old-writer"};

/* What an outstanding request on a channel is for. */
enum mon_op {
    OP_NONE, OP_HB, OP_PROMOTE, OP_REPOINT, OP_FENCE, OP_PLANNED_FENCE, OP_PROBE,
    OP_TERM,       /* REDOUBT.TERM T to a replica during a failover */
    OP_TERM_OLD,   /* REDOUBT.TERM T to the old primary (no deadline: it is the fence) */
    OP_LEASE,      /* REDOUBT.LEASE id now */
    OP_HELLO,      /* peer: SENTINEL redoubt-hello ... */
    OP_ASK_DOWN,   /* peer: SENTINEL is-master-down-by-addr ip port epoch * */
    OP_ASK_VOTE,   /* peer: SENTINEL is-master-down-by-addr ip port epoch <my id> */
    OP_PEER_AUTH1, /* peer: REDOUBT.AUTH <hello> (M18: the handshake runs inside the channel) */
    OP_PEER_AUTH2, /* peer: REDOUBT.AUTH <proof> */
};

struct mon_chan {
    int fd;              /* -1: closed */
    int connecting;      /* non-blocking connect in progress */
    enum mon_op op;      /* OP_NONE: idle */
    uint64_t deadline_ms; /* 0: none */
    unsigned gen;         /* +1 at every close: a handler that closed (and maybe reopened) the channel */
    struct rd_buf out, in;
    /* Peer-monitor channels only (M18): the non-blocking REDOUBT.AUTH handshake. Until it is done
     * the command asked for waits in held (its op in held_op); chan_close forgets both. */
    int authed;
    struct rd_auth_hs hs;
    enum mon_op held_op;
    struct rd_buf held;
};

struct mon_node {
    char name[64];
    char host[64];
    int port;
    enum mon_role role;     /* the monitor's view; starts from --node, follows INFO */
    struct mon_chan hb, ctl, ls;
    unsigned misses;        /* consecutive heartbeats missed */
    unsigned refusals;      /* connects refused since its last answer (M1b) */
    uint64_t hb_retry_ms;   /* reconnect the heartbeat at once after a close (0: none) */
    uint64_t last_lease_ms; /* CLOCK_MONOTONIC ms of our last REDOUBT.LEASE sent to it (0: never) */
    int lease_banned;       /* we voted it down: renew it no more (ML2), until ML5 lifts it */
    uint64_t lease_banned_ms; /* when lease_banned was set */
    uint64_t lease_quiet_until_ms; /* the server does not know REDOUBT.LEASE: do not ask again before */
    uint64_t sync_lost_since_ms;   /* its INFO said sync_state:waiting since (0: not) */
    /* the current failover's REDOUBT.TERM exchange */
    int t_state;            /* 0 not asked, 1 sent, 2 answered, 3 failed */
    int t_old_ok;           /* the old primary answered this failover's term (M16) */
    uint64_t t_write_lsn, t_flush_lsn, t_timeline;
    char t_role[16];
    int answered;           /* a heartbeat reply arrived since the last tick */
    int ever_seen;          /* answered at least once (M2) */
    int dead;               /* misses >= --misses (logged once per death) */
    uint64_t last_ok_ms, hb_replies;
    int fence_pending;      /* keep sending REDOUBT.FENCE until it answers (M5) */
    int excluded;           /* a promotion of this node failed during the current failover */
    uint64_t repoint_after_ms;
    /* from its last INFO */
    char rep_role[16];
    char master_host[64];
    int master_port, link_up, syncing, fenced, has_spec;
    char sync_spec[160], repl_name[64], sync_state[32], commit_level[24], lease_state[8];
    uint64_t term, write_lsn, commits_waiting, oldest_wait_ms;
    uint64_t flush_lsn, receive_lsn, apply_lsn, read_point, epoch, timeline, offset, lag_ms, lag_bytes;
};

enum fo_state { FO_IDLE, FO_FENCE_OLD, FO_QUERY, FO_TERM, FO_LEASE_WAIT, FO_PROMOTE, FO_PROBE };
static const char *const fo_names[] = {"idle", "fence-old", "query", "term", "lease-wait", "promote", "probe"};

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
    uint64_t epoch;           /* the failover epoch this monitor was elected in */
    uint64_t term;            /* classic: the term raised on the replicas (0: legacy, no terms) */
    int legacy;               /* the nodes do not know REDOUBT.TERM: REPLICAOF NO ONE as before */
    unsigned term_need;       /* listed replicas that must answer REDOUBT.TERM (n-k+1) */
    uint64_t t_quorum_ms;     /* when term_need was reached */
    uint64_t lease_until_ms;  /* monotonic: no promotion before (leases, ML3) */
    uint64_t t_term_sent;
    unsigned no_cand_rounds;  /* rounds that found no live candidate */
};

/* A peer monitor. */
struct mon_peer {
    char host[64];
    int port;
    int id;                   /* from its hello (0: unknown yet) */
    struct mon_chan ch;
    uint64_t last_ok_ms;      /* monotonic ms of its last answer */
    uint64_t asked_ms;        /* last down query sent */
    int says_down;            /* its last answer about the writer */
    uint64_t says_down_ms;    /* when that answer arrived */
    uint64_t down_lease_ms;   /* its last renewal of the writer, from that answer */
    uint64_t vote_asked_epoch;
    uint64_t config_epoch, current_epoch, max_term;
    char writer[64];
    int writer_sdown;
    int leading;              /* its last hello: it runs an election or a failover (ML5) */
    uint64_t hello_ms;        /* when that hello answer arrived */
};

/* What survives a restart (MON_STATE_FILE in --dir; format in monitor/README.md). */
struct mon_state {
    uint64_t current_epoch;   /* highest failover epoch seen */
    uint64_t voted_epoch;     /* the epoch of our last vote */
    unsigned voted_for;       /* monitor id we voted for in voted_epoch */
    uint64_t config_epoch;    /* the epoch under which the current writer was installed */
    uint64_t max_term;        /* highest classic term seen or raised */
    unsigned failovers;
    char writer[64];
};

struct mon_election {
    int active, planned;
    uint64_t epoch, deadline_ms;
    unsigned votes;           /* including ours */
    uint64_t lease_last_ms;   /* latest renewal of the writer by any voter (monotonic ms) */
};

struct mon_client {
    int fd;
    struct rd_buf in, out;
    int close_after;
    struct rd_auth_hs hs;   /* REDOUBT.AUTH (a peer monitor, or an operator's --call) */
    int peer_authed;
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
    /* the monitors' quorum */
    unsigned id;              /* 1..15 */
    char dir[512];            /* state directory ("" : no state kept) */
    struct mon_peer peer[MON_MAX_PEERS];
    unsigned npeers, quorum;  /* quorum = (npeers + 1) / 2 + 1 */
    struct mon_state st;
    struct mon_election el;
    uint64_t sdown_since_ms, odown_since_ms, hold_until_ms, hello_now;
    uint64_t voted_peer_at_ms; /* when we last voted for another monitor (M15; not persisted) */
    int renewed_writer;       /* the node our last lease renewal went to (ML4) */
    unsigned lease_ms;        /* the primary's --lease-ms (0: no leases, no waiting) */
    int terms;                /* 1 the nodes know REDOUBT.TERM, -1 they do not, 0 unknown */
};

static volatile sig_atomic_t stop_flag;
/* --metrics-port: the endpoint and the counters INFO does not carry (mon_metrics_body). */
static struct { struct rd_metrics ep; int port; uint64_t fo_started, fo_completed, fo_aborted, fences_sent; } mon_met;
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
    c->gen++;
    c->connecting = 0;
    c->op = OP_NONE;
    c->deadline_ms = 0;
    c->authed = 0;
    c->hs.state = RD_AUTH_ST_NONE;
    c->held_op = OP_NONE;
    rd_buf_reset(&c->in);
    rd_buf_reset(&c->out);
    rd_buf_reset(&c->held);
}

/* Starts a non-blocking connect. 0 (in progress or done) or -1 (errno set;
 * ECONNREFUSED: nobody listens there). This is the one place every outbound
 * connection of the monitor (nodes and peer monitors) is set up: a peer
 * authentication handshake (--cluster-secret-file) is queued here, ahead of
 * the first command, so every channel carries it. */
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
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->fd = fd;
    c->connecting = 1; /* finished (or failed) when POLLOUT fires */
    return 0;
}

/* Peer authentication (common/auth.h) of a node channel that just connected:
 * REDOUBT.AUTH both ways, before any command is sent, so admin commands
 * (REPLICAOF, PROMOTE, REDOUBT.*, SHUTDOWN) are accepted and the answers come
 * from a holder of the secret. Blocking,
 * bounded by two heartbeat intervals (100..250 ms); storage nodes answer INFO
 * without it. 0, or -1 (the caller drops the channel and retries). */
static struct rd_auth mon_auth;
static int mon_auth_chan(const struct mon *m, const char *name, const char *host, int port, struct mon_chan *c)
{
    if (!mon_auth.enabled)
        return 0;
    char err[256];
    int rc = rd_auth_client_resp(&mon_auth, c->fd, (int)RD_MAX(100u, RD_MIN(2u * m->interval_ms, 250u)), err, sizeof(err));
    if (rc < 0 && rd_auth_log_once(name))
        rd_warn("%s (%s:%d) failed peer authentication: %s (logged once)", name, host, port, err);
    return rc < 0 ? -1 : 0;
}

static int mon_chan_auth(const struct mon *m, const struct mon_node *n, struct mon_chan *c)
{
    return n->role == ROLE_STORAGE ? 0 : mon_auth_chan(m, n->name, n->host, n->port, c);
}

/* Queues one command on c (connecting first if needed). -1 if host:port cannot be reached. */
static int chan_call_addr(const char *host, int port, struct mon_chan *c, enum mon_op op, uint64_t deadline_ms,
                          size_t argc, const char *const *argv)
{
    rd_assert(c->op == OP_NONE);
    if (c->fd < 0 && chan_connect(c, host, port) < 0)
        return -1;
    if (resp_command_str(&c->out, argc, argv) < 0) {
        chan_close(c);
        return -1;
    }
    c->op = op;
    c->deadline_ms = deadline_ms;
    return 0;
}

static int chan_call(struct mon_node *n, struct mon_chan *c, enum mon_op op, uint64_t deadline_ms, size_t argc,
                     const char *const *argv)
{
    return chan_call_addr(n->host, n->port, c, op, deadline_ms, argc, argv);
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
    uint64_t x;
    if (info_str(s, len, key, v, sizeof(v)) < 0)
        return 0;
    return rd_lsn_parse(v, strlen(v), &x) == 0 ? x : strtoull(v, NULL, 10); /* LSNs come as X/Y */
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
    n->term = info_u64(s, len, "term");
    n->write_lsn = info_u64(s, len, "write_lsn");
    n->has_spec = info_str(s, len, "sync_replicas", n->sync_spec, sizeof(n->sync_spec)) == 0;
    info_str(s, len, "repl_name", n->repl_name, sizeof(n->repl_name));
    info_str(s, len, "sync_state", n->sync_state, sizeof(n->sync_state));
    info_str(s, len, "commit_level", n->commit_level, sizeof(n->commit_level));
    info_str(s, len, "lease", n->lease_state, sizeof(n->lease_state));
    n->commits_waiting = info_u64(s, len, "commits_waiting");
    n->oldest_wait_ms = info_u64(s, len, "oldest_commit_wait_ms");
    n->lag_ms = info_u64(s, len, "lag_ms");
    n->lag_bytes = info_u64(s, len, "lag_bytes");
    if (n->lag_bytes == 0)
        n->lag_bytes = info_u64(s, len, "lag_lsn");
}

/* ------------------------------------------------------------ state file */

/*
 * MON_STATE_FILE: text, one `key=value` a line, in this order; the last line
 * is `checksum=` + 16 hex digits of XXH3-64 (seed MON_STATE_SEED) over every
 * byte before it. Written with rd_write_file_atomic (tmp, fsync, rename,
 * fsync dir) before the monitor acts on a new value: a vote is on disk before
 * its reply leaves, a term before REDOUBT.TERM is sent (M10).
 *
 *   redoubt-monitor-state 1        magic and version
 *   id=I cluster=NAME              must match the command line
 *   current_epoch= voted_epoch= voted_for= config_epoch= max_term= failovers= writer=
 */
static void state_save(struct mon *m)
{
    if (m->dir[0] == 0)
        return;
    char buf[1024];
    int len = snprintf(buf, sizeof(buf),
                       "%s %d\nid=%u\ncluster=%s\ncurrent_epoch=%" PRIu64 "\nvoted_epoch=%" PRIu64
                       "\nvoted_for=%u\nconfig_epoch=%" PRIu64 "\nmax_term=%" PRIu64 "\nfailovers=%u\nwriter=%s\n",
                       MON_STATE_MAGIC, MON_STATE_VERSION, m->id, m->cluster, m->st.current_epoch,
                       m->st.voted_epoch, m->st.voted_for, m->st.config_epoch, m->st.max_term, m->st.failovers,
                       m->node[m->writer].name);
    rd_assert(len > 0 && (size_t)len < sizeof(buf) - 40);
    len += snprintf(buf + len, sizeof(buf) - (size_t)len, "checksum=%016" PRIx64 "\n",
                    rd_checksum64(buf, (size_t)len, MON_STATE_SEED));
    int rc = rd_write_file_atomic(m->dir, MON_STATE_FILE, buf, (size_t)len);
    if (rc < 0) /* a vote or a term we cannot keep must not be acted on (PostgreSQL: fsync failure = PANIC) */
        rd_panic("could not write \"%s/%s\": %s", m->dir, MON_STATE_FILE, strerror(-rc));
    snprintf(m->st.writer, sizeof(m->st.writer), "%s", m->node[m->writer].name);
}

static int state_u64(const char *text, const char *key, uint64_t *out)
{
    char pat[40];
    snprintf(pat, sizeof(pat), "\n%s=", key);
    const char *p = strstr(text, pat);
    if (p == NULL)
        return -1;
    *out = strtoull(p + strlen(pat), NULL, 10);
    return 0;
}

/* Loads the state file if there is one. 0 (loaded or none), -1 (bad file: refuse to start). */
static int state_load(struct mon *m)
{
    if (m->dir[0] == 0)
        return 0;
    char path[600], buf[2048];
    snprintf(path, sizeof(path), "%s/%s", m->dir, MON_STATE_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, "redoubt-monitor: could not open \"%s\": %s\n", path, strerror(errno));
        return -1;
    }
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = 0;
    char *ck = strstr(buf, "checksum=");
    char magic[64];
    snprintf(magic, sizeof(magic), "%s %d\n", MON_STATE_MAGIC, MON_STATE_VERSION);
    if (strncmp(buf, magic, strlen(magic)) != 0 || ck == NULL ||
        strtoull(ck + 9, NULL, 16) != rd_checksum64(buf, (size_t)(ck - buf), MON_STATE_SEED)) {
        fprintf(stderr, "redoubt-monitor: \"%s\" is corrupt (bad magic, version or checksum); move it away to "
                        "start without history\n", path);
        return -1;
    }
    *ck = 0;
    uint64_t id = 0, vf = 0, fo = 0;
    char cl[80] = "", wr[80] = "";
    const char *p = strstr(buf, "\ncluster=");
    if (p)
        sscanf(p + 9, "%63[^\n]", cl);
    p = strstr(buf, "\nwriter=");
    if (p)
        sscanf(p + 8, "%63[^\n]", wr);
    if (state_u64(buf, "id", &id) < 0 || id != m->id || strcmp(cl, m->cluster) != 0) {
        fprintf(stderr, "redoubt-monitor: \"%s\" belongs to monitor %" PRIu64 " of cluster \"%s\", not %u of \"%s\"\n",
                path, id, cl, m->id, m->cluster);
        return -1;
    }
    state_u64(buf, "current_epoch", &m->st.current_epoch);
    state_u64(buf, "voted_epoch", &m->st.voted_epoch);
    state_u64(buf, "voted_for", &vf);
    state_u64(buf, "config_epoch", &m->st.config_epoch);
    state_u64(buf, "max_term", &m->st.max_term);
    state_u64(buf, "failovers", &fo);
    m->st.voted_for = (unsigned)vf;
    m->st.failovers = (unsigned)fo;
    m->failovers = m->st.failovers;
    for (unsigned i = 0; i < m->nnodes; i++)
        if (strcmp(m->node[i].name, wr) == 0 && (int)i != m->writer) {
            rd_info("state file: the writer is %s (not %s as --node says)", wr, m->node[m->writer].name);
            m->node[m->writer].role = m->mode == MODE_CLASSIC ? ROLE_REPLICA : ROLE_READER;
            m->writer = (int)i;
            m->node[i].role = m->mode == MODE_CLASSIC ? ROLE_PRIMARY : ROLE_WRITER;
        }
    rd_info("state loaded: current_epoch %" PRIu64 ", voted %u in epoch %" PRIu64 ", config_epoch %" PRIu64
            ", max_term %" PRIu64 ", writer %s",
            m->st.current_epoch, m->st.voted_for, m->st.voted_epoch, m->st.config_epoch, m->st.max_term,
            m->node[m->writer].name);
    return 0;
}

static void note_term(struct mon *m, uint64_t t)
{
    if (t > m->st.max_term) {
        m->st.max_term = t;
        state_save(m);
    }
}

/* ------------------------------------------------------------ sync spec */

/* "ANY k (a,b,c)" / "FIRST k (a,b)" -> k and the names. 0, or -1 if empty/unparsable. */
struct mon_spec {
    unsigned k, n;
    char names[MON_MAX_NODES][64];
};

static int spec_parse(const char *s, struct mon_spec *sp)
{
    memset(sp, 0, sizeof(*sp));
    char kind[16];
    int off = 0;
    if (sscanf(s, "%15s %u (%n", kind, &sp->k, &off) < 2 || off == 0)
        return -1;
    if (strcasecmp(kind, "ANY") != 0 && strcasecmp(kind, "FIRST") != 0)
        return -1;
    const char *p = s + off;
    while (*p && *p != ')' && sp->n < MON_MAX_NODES) {
        size_t l = strcspn(p, ",)");
        while (l > 0 && p[l - 1] == ' ')
            l--;
        if (l > 0 && l < 64) {
            memcpy(sp->names[sp->n], p, l);
            sp->names[sp->n][l] = 0;
            sp->n++;
        }
        p += strcspn(p, ",)");
        if (*p == ',')
            p++;
        while (*p == ' ')
            p++;
    }
    return sp->k >= 1 && sp->k <= sp->n ? 0 : -1;
}

static int spec_lists(const struct mon_spec *sp, const struct mon_node *n)
{
    for (unsigned i = 0; i < sp->n; i++)
        if (strcmp(sp->names[i], n->name) == 0 || (n->repl_name[0] && strcmp(sp->names[i], n->repl_name) == 0))
            return 1;
    return 0;
}

/* n of the spec as the primary w sees it: the listed names other than w's own (a primary is never
 * its own synchronous replica), so after a failover to a listed replica the fence needs one fewer. */
static unsigned spec_n_without(const struct mon_spec *sp, const struct mon_node *w)
{
    unsigned n = sp->n;
    if (spec_lists(sp, w) && n > sp->k)
        n--;
    return n;
}

/* The spec the cluster runs with: the writer's INFO, else any node's. NULL if no node reports one. */
static const char *cluster_spec(const struct mon *m)
{
    const struct mon_node *w = &m->node[m->writer];
    if (w->has_spec)
        return w->sync_spec;
    for (unsigned i = 0; i < m->nnodes; i++)
        if (m->node[i].has_spec)
            return m->node[i].sync_spec;
    return NULL;
}

/* ------------------------------------------------------------ failover */

static void fo_finish(struct mon *m, const char *why)
{
    *(strncmp(why, "done", 4) == 0 ? &mon_met.fo_completed : &mon_met.fo_aborted) += 1;
    rd_info("failover %s -> %s: %s", m->fo.old_name, m->fo.new_name[0] ? m->fo.new_name : "-", why);
    m->fo.state = FO_IDLE;
    for (unsigned i = 0; i < m->nnodes; i++)
        m->node[i].excluded = 0, m->node[i].t_state = 0, m->node[i].t_old_ok = 0;
}

/* A failover that must not go on (too few replicas fenced, a newer term exists): give up, retry later
 * under a new election (availability may suffer, safety does not). */
static void fo_abort(struct mon *m, uint64_t now, const char *why)
{
    rd_error("failover aborted: %s", why);
    fo_finish(m, "aborted");
    m->cooldown_until_ms = now + 500;
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

static void hb_send(struct mon *m, struct mon_node *n, uint64_t now);

static void fo_query_start(struct mon *m, uint64_t now)
{
    m->fo.state = FO_QUERY;
    m->fo.deadline_ms = now + RD_MAX(500u, 3u * m->interval_ms);
    for (unsigned i = 0; i < m->nnodes; i++) {
        m->fo.want_replies[i] = m->node[i].hb_replies + 1;
        if (m->node[i].hb.op == OP_NONE && !m->node[i].dead) /* a fresh answer now, not at the next tick */
            hb_send(m, &m->node[i], now);
    }
    if (m->fo.planned && m->mode == MODE_CLASSIC)
        m->fo.deadline_ms = now + MON_PLANNED_CATCHUP_MS;
}

static void fo_term_start(struct mon *m, uint64_t now);

static void fo_start(struct mon *m, int planned, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    memset(f, 0, sizeof(*f));
    mon_met.fo_started++;
    f->planned = planned;
    f->old = m->writer;
    f->cand = -1;
    f->epoch = m->el.epoch;
    f->legacy = m->mode == MODE_AURORA || m->terms < 0;
    snprintf(f->old_name, sizeof(f->old_name), "%s", m->node[m->writer].name);
    f->t_detect = wall_ms();
    f->t_last_ok = m->node[m->writer].last_ok_ms;
    for (unsigned i = 0; i < m->nnodes; i++)
        m->node[i].t_state = 0;
    if (planned) {
        struct mon_node *o = &m->node[f->old];
        rd_info("planned switchover (epoch %" PRIu64 "): fencing %s (%s:%d) first", f->epoch, f->old_name, o->host,
                o->port);
        chan_close(&o->ctl);
        f->state = FO_FENCE_OLD;
        f->deadline_ms = now + 2000;
        int rc;
        if (!f->legacy) { /* the term rule: the old primary gets the new term first (CONTRACT.md) */
            f->term = (m->st.max_term / 16 + 1) * 16 + m->id;
            note_term(m, f->term);
            char t[32];
            snprintf(t, sizeof(t), "%" PRIu64, f->term);
            const char *argv[] = {"REDOUBT.TERM", t};
            rc = chan_call(o, &o->ctl, OP_PLANNED_FENCE, f->deadline_ms, 2, argv);
        } else {
            char reason[160];
            snprintf(reason, sizeof(reason), "planned switchover by monitor of %s", m->cluster);
            const char *argv[] = {"REDOUBT.FENCE", reason};
            rc = chan_call(o, &o->ctl, OP_PLANNED_FENCE, f->deadline_ms, 2, argv);
        }
        if (rc < 0) {
            rd_warn("planned switchover: cannot reach %s to fence it; promoting anyway", f->old_name);
            fo_query_start(m, now);
        }
        return;
    }
    struct mon_node *o = &m->node[f->old];
    rd_warn("FAILOVER started (epoch %" PRIu64 "): writer %s (%s:%d) down: %s (last answer %" PRIu64 " ms ago)",
            f->epoch, f->old_name, o->host, o->port,
            o->refusals >= MON_REFUSALS_DEAD ? "its port refuses connections"
            : o->dead                        ? "heartbeats missed"
                                             : "it lost its synchronous replicas, which the monitors reach",
            f->t_last_ok ? f->t_detect - f->t_last_ok : 0);
    if (f->legacy)
        fo_query_start(m, now);
    else
        fo_term_start(m, now);
}

/* Sends the promotion to node `best` (REDOUBT.PROMOTE T, or REPLICAOF NO ONE without terms). */
static void fo_promote_send(struct mon *m, int best, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    struct mon_node *c = &m->node[best];
    f->cand = best;
    snprintf(f->new_name, sizeof(f->new_name), "%s", c->name);
    chan_close(&c->ctl);
    f->state = FO_PROMOTE;
    f->deadline_ms = now + MON_PROMOTE_TIMEOUT_MS;
    f->t_promote_sent = wall_ms();
    int rc;
    char t[32];
    snprintf(t, sizeof(t), "%" PRIu64, f->term);
    if (f->legacy) {
        const char *argv[] = {"REPLICAOF", "NO", "ONE"};
        rc = chan_call(c, &c->ctl, OP_PROMOTE, f->deadline_ms, 3, argv);
    } else {
        const char *argv[] = {"REDOUBT.PROMOTE", t};
        rc = chan_call(c, &c->ctl, OP_PROMOTE, f->deadline_ms, 2, argv);
    }
    if (rc < 0) {
        rd_error("failover: cannot connect to %s to promote it", c->name);
        c->excluded = 1;
        if (f->legacy)
            fo_query_start(m, now);
        else
            fo_abort(m, now, "the chosen replica is unreachable");
        return;
    }
    rd_info("promotion sent: %s to %s (%s:%d), %s %" PRIu64 " (+%" PRIu64 " ms after detection)",
            f->legacy ? "REPLICAOF NO ONE" : "REDOUBT.PROMOTE", c->name, c->host, c->port,
            m->mode == MODE_CLASSIC ? (f->legacy ? "flush_lsn" : "write_lsn") : "read_point", f->chosen_lsn,
            f->t_promote_sent - f->t_detect);
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
            if (++f->no_cand_rounds > 6) { /* ~3 s: give up, so that views are adopted again (M9) */
                fo_abort(m, now, "no live candidate to promote");
                return;
            }
            rd_error("failover: no live %s to promote; retrying at each heartbeat",
                     m->mode == MODE_CLASSIC ? "replica" : "reader");
            f->deadline_ms = now + RD_MAX(500u, 3u * m->interval_ms);
            for (unsigned i = 0; i < m->nnodes; i++)
                m->node[i].excluded = 0;
        }
        return;
    }
    if (!f->legacy) { /* planned, with terms: the replicas caught up; now fence them and choose (FO_TERM) */
        fo_term_start(m, now);
        return;
    }
    f->chosen_lsn = candidate_lsn(m, &m->node[best]);
    if (!f->planned && m->lease_ms > 0 && now < f->lease_until_ms) { /* ML3, aurora: the read lease (LS4) */
        f->cand = best;
        rd_info("waiting %" PRIu64 " ms for the old writer's lease to expire", f->lease_until_ms - now);
        f->state = FO_LEASE_WAIT;
        return;
    }
    fo_promote_send(m, best, now);
}

/*
 * The term rule (README "Classic failover by terms", CONTRACT.md): raise term T on every replica (and,
 * best effort, on the old primary), wait until n-k+1 of the listed replicas answered, then promote the
 * one with the highest write_lsn (ties: flush_lsn) among those that answered.
 */
static void fo_term_start(struct mon *m, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    if (f->term == 0 || !f->planned) {
        f->term = (m->st.max_term / 16 + 1) * 16 + m->id;
        note_term(m, f->term); /* on disk before any node sees it (M10) */
    }
    struct mon_spec sp;
    const char *spec = cluster_spec(m);
    unsigned nrep = 0;
    for (unsigned i = 0; i < m->nnodes; i++)
        nrep += (int)i != f->old && m->node[i].role == ROLE_REPLICA;
    if (spec == NULL)
        f->term_need = nrep; /* spec unknown: fence every known replica */
    else if (spec[0] == 0 || spec_parse(spec, &sp) < 0)
        f->term_need = 1; /* local/async: no synchronous set to break; leases fence the old primary */
    else /* the old primary's own name, if listed, is not in its sync set: it never acks itself */
        f->term_need = spec_n_without(&sp, &m->node[f->old]) - sp.k + 1;
    if (f->term_need == 0 || f->term_need > MON_MAX_NODES)
        f->term_need = 1;
    char t[32];
    snprintf(t, sizeof(t), "%" PRIu64, f->term);
    const char *argv[] = {"REDOUBT.TERM", t};
    f->state = FO_TERM;
    f->deadline_ms = now + MON_TERM_TIMEOUT_MS;
    f->t_term_sent = wall_ms();
    f->t_quorum_ms = 0;
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_node *n = &m->node[i];
        n->t_state = 0;
        if ((int)i == f->old) {
            if (!f->planned) { /* best effort: a paused one reads it first thing after SIGCONT */
                chan_close(&n->ctl);
                if (chan_call(n, &n->ctl, OP_TERM_OLD, 0, 2, argv) < 0)
                    rd_debug("term: old primary %s unreachable", n->name);
            }
            continue;
        }
        /* Replicas, and listed nodes running as (old, fenced) primaries: once at term T none of them
         * acknowledges anything of an older term, so each counts toward n-k+1 (M13). */
        if (n->role != ROLE_REPLICA && !(spec && spec[0] && spec_parse(spec, &sp) == 0 && spec_lists(&sp, n) &&
                                         (n->role == ROLE_PRIMARY || n->role == ROLE_OLD_WRITER)))
            continue;
        chan_close(&n->ctl);
        n->t_state = chan_call(n, &n->ctl, OP_TERM, f->deadline_ms, 2, argv) == 0 ? 1 : 3;
    }
    rd_info("term %" PRIu64 " sent to the replicas (sync spec \"%s\": %u listed replica(s) must answer)", f->term,
            spec ? spec : "unknown", f->term_need);
}

static void fo_term_step(struct mon *m, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    struct mon_spec sp;
    const char *spec = cluster_spec(m);
    int listed_only = spec && spec[0] && spec_parse(spec, &sp) == 0;
    unsigned answered = 0, pending = 0;
    int best = -1;
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_node *n = &m->node[i];
        if (n->t_state == 1)
            pending++;
        if (n->t_state != 2)
            continue;
        if (!listed_only || spec_lists(&sp, n))
            answered++;
        if (n->syncing || n->excluded || (n->t_timeline == 0 && n->t_write_lsn == 0))
            continue; /* no finished base backup: it cannot be promoted (server refuses) */
        /* the newest history first: (timeline, write_lsn, flush_lsn) (replica/README.md); a fenced
         * old primary may be chosen too (REDOUBT.PROMOTE T lifts its term fence) */
        const struct mon_node *b = best >= 0 ? &m->node[best] : NULL;
        if (b == NULL || n->t_timeline > b->t_timeline ||
            (n->t_timeline == b->t_timeline && (n->t_write_lsn > b->t_write_lsn ||
                                                (n->t_write_lsn == b->t_write_lsn && n->t_flush_lsn > b->t_flush_lsn))))
            best = (int)i;
    }
    if (answered < f->term_need) {
        if (now >= f->deadline_ms || pending == 0) {
            char why[160];
            snprintf(why, sizeof(why), "term %" PRIu64 " reached %u of the %u listed replicas needed; promoting "
                     "nobody (the old primary might still complete commits)", f->term, answered, f->term_need);
            fo_abort(m, now, why);
        }
        return;
    }
    if (f->t_quorum_ms == 0)
        f->t_quorum_ms = now;
    if (pending > 0 && now < f->t_quorum_ms + MON_TERM_GRACE_MS)
        return;
    if (best < 0 && f->old >= 0 && m->node[f->old].t_old_ok && !f->planned) {
        /* M16: no replica holds data it could serve (all re-cloning from the old primary): lift
         * the old primary's own term fence rather than leave the cluster with no writer at all. */
        rd_warn("no replica that answered term %" PRIu64 " can be promoted (cloning, or no data): the old primary "
                "%s is the newest history (write_lsn %" PRIu64 "), promoting it again",
                f->term, m->node[f->old].name, m->node[f->old].t_write_lsn);
        best = f->old;
    }
    if (best < 0) {
        fo_abort(m, now, "no replica that answered the term can be promoted");
        return;
    }
    f->cand = best;
    f->chosen_lsn = m->node[best].t_write_lsn;
    if (!f->planned && m->lease_ms > 0 && now < f->lease_until_ms) {
        rd_info("term %" PRIu64 " on %u replica(s); waiting %" PRIu64 " ms for the old primary's lease to expire",
                f->term, answered, f->lease_until_ms - now);
        f->state = FO_LEASE_WAIT;
        return;
    }
    fo_promote_send(m, best, now);
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
    /* M17: with the installed writer's rank (classic term, aurora volume epoch): a node that has
     * since become newer (a writer restarted as a writer took the volume over) refuses the fence. */
    const struct mon_node *w = &m->node[m->writer];
    char rank[32];
    snprintf(rank, sizeof(rank), "%" PRIu64, m->mode == MODE_CLASSIC ? w->term : w->epoch);
    const char *argv[] = {"REDOUBT.FENCE", reason, rank};
    size_t argc = strcmp(rank, "0") == 0 ? 2 : 3; /* rank not known yet: an unconditional fence */
    /* No deadline (M5): a paused process reads the queued FENCE first thing after SIGCONT. */
    mon_met.fences_sent++;
    if (chan_call(n, &n->ctl, OP_FENCE, 0, argc, argv) < 0)
        rd_debug("fence: %s unreachable, retrying", n->name);
}

static void fo_promoted(struct mon *m, uint64_t now)
{
    struct mon_failover *f = &m->fo;
    struct mon_node *c = &m->node[f->cand], *o = &m->node[f->old];
    f->t_promote_done = wall_ms();
    m->writer = f->cand;
    c->role = m->mode == MODE_CLASSIC ? ROLE_PRIMARY : ROLE_WRITER;
    c->lease_banned = 0;
    c->dead = 0, c->misses = 0, c->refusals = 0;
    if (c != o) {
        o->role = ROLE_OLD_WRITER;
        if (!f->planned || !o->fenced)
            o->fence_pending = 1;
    } else {
        c->fenced = 0, c->fence_pending = 0; /* M16: the old primary, its term fence lifted */
    }
    m->failovers++;
    m->st.failovers = m->failovers;
    if (f->epoch > m->st.config_epoch)
        m->st.config_epoch = f->epoch;
    if (f->term)
        c->term = f->term;
    state_save(m);
    m->hello_now = 1; /* tell the peers at once (M9) */
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
        if (m->mode == MODE_AURORA && n->role == ROLE_READER && !n->dead)
            send_repoint(m, n, now);
    }
    if (c != o)
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

static int is_unknown_command(const struct resp_reply *r)
{
    return r->type == RESP_ERROR && r->len >= 19 && memcmp(r->str, "ERR unknown command", 19) == 0;
}

/* N from "-STALETERM current term is N" (0 for any other reply). */
static uint64_t staleterm_of(const struct resp_reply *r)
{
    static const char key[] = "current term is ";
    if (r->type != RESP_ERROR || r->len < 10 || memcmp(r->str, "STALETERM", 9) != 0)
        return 0;
    char t[128];
    snprintf(t, sizeof(t), "%.*s", (int)RD_MIN(r->len, sizeof(t) - 1), (const char *)r->str);
    const char *p = strstr(t, key);
    return p ? strtoull(p + sizeof(key) - 1, NULL, 10) : 0;
}

static int64_t reply_int(const struct resp_reply *r)
{
    if (r->type == RESP_INT)
        return r->integer;
    if (r->type == RESP_BULK || r->type == RESP_STATUS) {
        char t[32];
        snprintf(t, sizeof(t), "%.*s", (int)RD_MIN(r->len, sizeof(t) - 1), (const char *)r->str);
        return strtoll(t, NULL, 10);
    }
    return -1;
}

/* REDOUBT.TERM's reply [term, role, timeline, write_lsn, flush_lsn, apply_lsn] into n->t_*. 0 or -1. */
static int term_reply_parse(const struct resp_reply *r, struct mon_node *n)
{
    if (r->type != RESP_ARRAY || r->nelems < 6 || r->elems[1].type != RESP_BULK)
        return -1;
    n->term = (uint64_t)reply_int(&r->elems[0]);
    snprintf(n->t_role, sizeof(n->t_role), "%.*s", (int)RD_MIN(r->elems[1].len, sizeof(n->t_role) - 1),
             (const char *)r->elems[1].str);
    n->t_timeline = (uint64_t)reply_int(&r->elems[2]);
    n->t_write_lsn = (uint64_t)reply_int(&r->elems[3]);
    n->t_flush_lsn = (uint64_t)reply_int(&r->elems[4]);
    return 0;
}

/* Which of two writers is newer: classic by (term, timeline), aurora by volume epoch. <0, 0, >0. */
static int node_rank_cmp(const struct mon *m, const struct mon_node *a, const struct mon_node *b)
{
    if (m->mode == MODE_CLASSIC) {
        if (a->term != b->term)
            return a->term > b->term ? 1 : -1;
        return a->timeline == b->timeline ? 0 : a->timeline > b->timeline ? 1 : -1;
    }
    return a->epoch == b->epoch ? 0 : a->epoch > b->epoch ? 1 : -1;
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
    n->refusals = 0;
    n->hb_retry_ms = 0;
    node_parse_info(n, r->str, r->len);
    note_term(m, n->term);
    int idx = (int)(n - m->node);
    int promoting = m->fo.state == FO_PROMOTE && m->fo.cand == idx;
    if (idx == m->writer) { /* M11: a primary that cannot reach its synchronous set */
        if (strncmp(n->sync_state, "waiting", 7) != 0)
            n->sync_lost_since_ms = 0;
        else if (n->sync_lost_since_ms == 0)
            n->sync_lost_since_ms = now;
    }
    /* Follow what the node says it is (a restarted old primary comes back as a replica). */
    if (strcmp(n->rep_role, "replica") == 0 && idx != m->writer)
        n->role = ROLE_REPLICA, n->fence_pending = 0;
    else if (strcmp(n->rep_role, "reader") == 0 && idx != m->writer)
        n->role = ROLE_READER, n->fence_pending = 0;
    int claims = strcmp(n->rep_role, "primary") == 0 || strcmp(n->rep_role, "writer") == 0;
    struct mon_node *cw = &m->node[m->writer];
    /* M9: an unfenced writer newer than ours (higher term, then timeline / epoch) was installed by
     * another monitor: it is the writer now. */
    if (claims && idx != m->writer && !n->fenced && !promoting && node_rank_cmp(m, n, cw) > 0) {
        if (m->fo.state != FO_IDLE) /* ours is moot: another monitor already installed a newer writer */
            fo_abort(m, now, "another monitor installed a newer writer");
        rd_warn("node %s (%s:%d) is a %s newer than %s (term %" PRIu64 ", timeline/epoch %" PRIu64
                "): following it as the writer",
                n->name, n->host, n->port, n->rep_role, cw->name, n->term,
                m->mode == MODE_CLASSIC ? n->timeline : n->epoch);
        cw->role = ROLE_OLD_WRITER;
        m->writer = idx;
        n->role = m->mode == MODE_CLASSIC ? ROLE_PRIMARY : ROLE_WRITER;
        n->lease_banned = 0, n->fence_pending = 0;
        m->failovers++;
        m->st.failovers = m->failovers;
        m->cooldown_until_ms = now + m->cooldown_ms;
        state_save(m);
        return;
    }
    /* M4: a second writer that is not fenced (and not newer) gets fenced. */
    /* Classic: only a strictly older one (a primary half-way through its promotion already says
     * "primary" on the old timeline: fencing it would undo another monitor's failover). */
    if (claims && idx != m->writer && !promoting && !n->fenced && !n->fence_pending &&
        (node_rank_cmp(m, n, cw) < 0 || (m->mode == MODE_CLASSIC && cw->term == 0 && n->term == 0))) {
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
    /* M14: a fenced old primary rejoins as a replica of the current primary (REPLICAOF on a fenced
     * primary restarts it in place as a replica: server CR6), so that after repeated failovers the
     * primary still finds its synchronous replicas. Fenced, it acknowledges nothing more, so nothing
     * acknowledged is lost by the rejoin; its unacknowledged tail is cut at the fork (CR4). */
    const char *wrole = m->mode == MODE_CLASSIC ? "primary" : "writer";
    if (n->role == ROLE_OLD_WRITER && n->fenced && strcmp(n->rep_role, wrole) == 0 && idx != m->writer &&
        m->fo.state == FO_IDLE && !w->dead && w->ever_seen && !w->fenced && strcmp(w->rep_role, wrole) == 0 &&
        now >= n->repoint_after_ms) {
        rd_warn("old %s %s (%s:%d) is fenced: asking it to rejoin as a %s of %s", wrole, n->name, n->host, n->port,
                m->mode == MODE_CLASSIC ? "replica" : "reader", w->name);
        send_repoint(m, n, now);
    }
    /* M6 for aurora: a reader re-pointed at run time drops its page cache on the new subscription
     * (it never serves a page of the old writer's that the new one did not keep). */
    if (m->mode == MODE_AURORA && n->role == ROLE_READER && m->fo.state == FO_IDLE && !w->dead && w->ever_seen &&
        strcmp(w->rep_role, "writer") == 0 && n->master_port != 0 &&
        (n->master_port != w->port || strcmp(n->master_host, w->host) != 0) && now >= n->repoint_after_ms)
        send_repoint(m, n, now);
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
            note_term(m, staleterm_of(r));
            if (m->fo.legacy)
                fo_query_start(m, now);
            else
                fo_abort(m, now, "the promotion was refused (a newer term exists, or the node changed)");
            return;
        }
        fo_promoted(m, now);
        return;
    case OP_TERM:
        if (m->fo.state != FO_TERM || n->t_state != 1)
            return;
        if (is_unknown_command(r)) {
            rd_warn("%s does not know REDOUBT.TERM: failing over without terms (REPLICAOF NO ONE)", n->name);
            m->terms = -1;
            m->fo.legacy = 1;
            for (unsigned i = 0; i < m->nnodes; i++)
                m->node[i].t_state = 0;
            fo_query_start(m, now);
            return;
        }
        if (term_reply_parse(r, n) < 0) {
            rd_error("REDOUBT.TERM %" PRIu64 " on %s answered: %s", m->fo.term, n->name, text);
            n->t_state = 3;
            uint64_t st = staleterm_of(r);
            if (st > m->fo.term) {
                note_term(m, st);
                fo_abort(m, now, "a replica already holds a newer term (another monitor leads)");
                return;
            }
        } else {
            m->terms = 1;
            n->t_state = 2;
            rd_info("term %" PRIu64 " on %s: %s, write_lsn %" PRIu64 ", flush_lsn %" PRIu64 " (+%" PRIu64 " ms)",
                    m->fo.term, n->name, n->t_role, n->t_write_lsn, n->t_flush_lsn, wall_ms() - m->fo.t_term_sent);
        }
        fo_term_step(m, now);
        return;
    case OP_TERM_OLD:
        if (term_reply_parse(r, n) == 0) {
            n->t_old_ok = 1;
            rd_warn("term %" PRIu64 " on the old primary %s: it is fenced (write_lsn %" PRIu64 ")", m->fo.term,
                    n->name, n->t_write_lsn);
        }
        else
            rd_info("REDOUBT.TERM on the old primary %s answered: %s", n->name, text);
        return;
    case OP_LEASE:
        if (is_unknown_command(r)) {
            n->lease_quiet_until_ms = now + 10000;
            rd_debug("%s does not know REDOUBT.LEASE", n->name);
        } else if (!reply_is_ok(r)) {
            rd_warn("lease renewal on %s answered: %s", n->name, text);
        }
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
            rd_info("fence of %s answered: %s (it is no writer any more, or newer than ours: M9 follows it)",
                    n->name, text);
        }
        n->fence_pending = 0;
        return;
    case OP_PLANNED_FENCE:
        if (m->fo.state != FO_FENCE_OLD)
            return;
        if (!m->fo.legacy && is_unknown_command(r)) { /* no terms: the old REDOUBT.FENCE way */
            m->terms = -1;
            fo_start(m, 1, now);
            return;
        }
        if (!m->fo.legacy) {
            if (term_reply_parse(r, n) < 0) {
                note_term(m, staleterm_of(r));
                fo_abort(m, now, "the old primary refused the switchover's term");
                return;
            }
            n->fenced = 1;
            m->terms = 1;
            rd_info("planned switchover: %s holds term %" PRIu64 " (fenced), write_lsn %" PRIu64
                    "; waiting for a replica to reach it", n->name, m->fo.term, n->t_write_lsn);
            fo_query_start(m, now);
            m->fo.target_lsn = n->t_write_lsn;
            m->fo.target_known = 1;
            return;
        }
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

/* M1b: the heartbeat link closed or a connect failed. A crashed process closes its connections and
 * refuses new ones at once: reconnect now; MON_REFUSALS_DEAD refused connects in a row (no answer in
 * between) make the node dead without waiting for --misses. A hang or a partition refuses nothing. */
static void hb_failed(struct mon *m, struct mon_node *n, int refused, uint64_t now)
{
    (void)m;
    if (refused)
        n->refusals++;
    if (n->ever_seen && !n->dead && n->refusals >= MON_REFUSALS_DEAD) {
        n->dead = 1;
        rd_warn("node %s (%s:%d, %s) declared dead: its connection closed and %u connects were refused", n->name,
                n->host, n->port, role_names[n->role], n->refusals);
    }
    n->hb_retry_ms = n->ever_seen && n->refusals < MON_REFUSALS_DEAD ? now + (refused ? MON_FAST_MS : 0) : 0;
}

static void on_chan_failed(struct mon *m, struct mon_node *n, struct mon_chan *c, const char *why, uint64_t now)
{
    enum mon_op op = c->op;
    chan_close(c);
    int idx = (int)(n - m->node);
    if (c == &n->hb) {
        hb_failed(m, n, strcmp(why, strerror(ECONNREFUSED)) == 0, now);
        return;
    }
    switch (op) {
    case OP_TERM:
        if (m->fo.state == FO_TERM && n->t_state == 1) {
            rd_warn("REDOUBT.TERM to %s failed: %s", n->name, why);
            n->t_state = 3;
            fo_term_step(m, now);
        }
        return;
    case OP_PROMOTE:
        if (m->fo.state == FO_PROMOTE && m->fo.cand == idx) {
            rd_error("promotion of %s failed (%s); fencing it in case it finishes later, trying another", n->name,
                     why);
            n->excluded = 1;
            n->fence_pending = 1;
            if (m->fo.legacy)
                fo_query_start(m, now);
            else
                fo_abort(m, now, "the promotion failed");
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
    unsigned gen = c->gen;
    c->op = OP_NONE;
    c->deadline_ms = 0;
    if (op == OP_HB)
        on_hb_reply(m, n, &rep, now);
    else
        on_ctl_reply(m, n, op, &rep, now);
    resp_reply_free(&rep);
    if (c->gen == gen) /* not closed (and its buffer reset) by the handler */
        rd_buf_consume(&c->in, (size_t)used);
}

/* ------------------------------------------------------------ heartbeat tick */

static void hb_send(struct mon *m, struct mon_node *n, uint64_t now)
{
    const char *argv[] = {"INFO", "replication"};
    uint64_t dl = now + RD_MAX(2000u, 2u * m->misses * m->interval_ms);
    if (chan_call(n, &n->hb, OP_HB, dl, 2, argv) < 0) {
        int refused = errno == ECONNREFUSED;
        chan_close(&n->hb);
        hb_failed(m, n, refused, now);
    }
}

/* The writer is down for this monitor (subjectively): dead (M1, M1b), or (classic) it has waited for its
 * synchronous set for a whole detection time while enough listed replicas answer us without it (M11). */
static int writer_sdown(const struct mon *m, uint64_t now)
{
    const struct mon_node *w = &m->node[m->writer];
    if (!w->ever_seen)
        return 0; /* M2 */
    if (w->dead)
        return 1;
    if (w->fenced)
        return 1; /* a writer fenced by a newer term (an aborted failover) or, in aurora, by a newer volume
                   * epoch on the storage nodes accepts no write: fail over again (M12) */
    if (m->mode != MODE_CLASSIC || w->sync_lost_since_ms == 0 ||
        now < w->sync_lost_since_ms + (uint64_t)m->misses * m->interval_ms)
        return 0;
    struct mon_spec sp;
    const char *spec = cluster_spec(m);
    if (spec == NULL || spec_parse(spec, &sp) < 0)
        return 0;
    unsigned ok = 0;
    for (unsigned i = 0; i < m->nnodes; i++) {
        const struct mon_node *n = &m->node[i];
        /* Alive to us and not cloning; what the replica thinks of its link does not matter: the
         * primary already says it hears from too few of them (a replica's receive timeout is 10 s). */
        ok += (int)i != m->writer && n->role == ROLE_REPLICA && n->ever_seen && !n->dead && !n->syncing &&
              spec_lists(&sp, n);
    }
    return ok >= spec_n_without(&sp, w) - sp.k + 1;
}

static int peer_up(const struct mon *m, const struct mon_peer *p, uint64_t now);

/* M15: the monitor we last voted for says (in a hello since our vote) that it still leads an election
 * or a failover, and we hear from it. */
static int voted_leader_busy(const struct mon *m, uint64_t now)
{
    if (m->voted_peer_at_ms == 0 || m->st.voted_for == m->id)
        return 0;
    for (unsigned i = 0; i < m->npeers; i++) {
        const struct mon_peer *p = &m->peer[i];
        if (p->id > 0 && (unsigned)p->id == m->st.voted_for)
            return p->leading && p->hello_ms >= m->voted_peer_at_ms && peer_up(m, p, now) &&
                   now < m->voted_peer_at_ms + MON_PROMOTE_TIMEOUT_MS;
    }
    return 0;
}

/* ML5: the failovers that a vote of ours could have enabled are over (a majority of monitors,
 * ourselves included, said since the ban that they lead none; none we hear from leads one), the
 * writer is still the writer and answers us: renew its lease again. Without it a failed or split
 * election left a live writer without a lease for good: unable to serve anything (chaos aurora 4). */
static void lease_maybe_unban(struct mon *m, struct mon_node *n, uint64_t now)
{
    if (!n->lease_banned || (int)(n - m->node) != m->writer || n->misses > 0 || n->refusals > 0 ||
        m->sdown_since_ms || m->odown_since_ms || m->el.active || m->fo.state != FO_IDLE ||
        now < n->lease_banned_ms + MON_UNBAN_MS + m->lease_ms)
        return;
    unsigned idle = 1;
    for (unsigned i = 0; i < m->npeers; i++) {
        const struct mon_peer *p = &m->peer[i];
        if (p->hello_ms <= n->lease_banned_ms || !peer_up(m, p, now))
            continue;
        if (p->leading || p->writer_sdown || strcmp(p->writer, n->name) != 0)
            return;
        idle++;
    }
    if (idle < m->quorum)
        return;
    n->lease_banned = 0;
    rd_warn("renewing the lease of %s again: it answers, and %u monitors (a majority) lead no failover since "
            "we voted it down %" PRIu64 " ms ago (ML5)",
            n->name, idle, now - n->lease_banned_ms);
}

/* ML1, ML2: renew the writer's lease with every heartbeat, unless we suspect it or voted it down. */
static void lease_renew(struct mon *m, struct mon_node *n, uint64_t now)
{
    lease_maybe_unban(m, n, now);
    if (m->lease_ms == 0 || !n->ever_seen || n->lease_banned || n->misses >= 2 || n->refusals > 0 || n->ls.op != OP_NONE ||
        now < n->lease_quiet_until_ms || m->sdown_since_ms || (m->fo.state != FO_IDLE && m->fo.state != FO_PROBE))
        return;
    char id[16], ms[32];
    snprintf(id, sizeof(id), "%u", m->id);
    snprintf(ms, sizeof(ms), "%" PRIu64, now);
    const char *argv[] = {"REDOUBT.LEASE", id, ms};
    if (chan_call(n, &n->ls, OP_LEASE, now + 2u * m->interval_ms, 3, argv) == 0) {
        n->last_lease_ms = now;
        m->renewed_writer = (int)(n - m->node);
    }
    else
        chan_close(&n->ls);
}

/* ------------------------------------------------------------ peer monitors */

/* M18: with a cluster secret, a channel to a peer monitor authenticates before its first command,
 * without blocking: REDOUBT.AUTH <hello> goes out first and the command waits in c->held; the
 * challenge's answer is checked and the proof sent from peer_on_readable, and the +OK releases the
 * held command. Two monitors that connect to each other at the same moment each wait in their own
 * loop, never on each other (the blocking handshake node channels use would deadlock here). */
static int peer_auth_start(struct mon_chan *c, enum mon_op op, size_t argc, const char *const *argv)
{
    uint8_t hello[RD_AUTH_HELLO_LEN];
    char hex[2 * RD_AUTH_MSG_MAX + 1];
    rd_auth_client_hello(&mon_auth, &c->hs, NULL, hello);
    rd_auth_hex(hello, sizeof(hello), hex);
    const char *av[] = {"REDOUBT.AUTH", hex};
    rd_buf_reset(&c->held);
    if (resp_command_str(&c->out, 2, av) < 0 || resp_command_str(&c->held, argc, argv) < 0)
        return -1;
    c->held_op = op;
    c->op = OP_PEER_AUTH1;
    return 0;
}

static void peer_call(struct mon *m, struct mon_peer *p, enum mon_op op, size_t argc, const char *const *argv,
                      uint64_t now)
{
    struct mon_chan *c = &p->ch;
    uint64_t deadline_ms = now + RD_MAX(200u, 2u * m->interval_ms);
    if (!mon_auth.enabled || (c->fd >= 0 && c->authed)) {
        if (chan_call_addr(p->host, p->port, c, op, deadline_ms, argc, argv) < 0)
            chan_close(c);
        return;
    }
    rd_assert(c->op == OP_NONE);
    if (c->fd >= 0) /* a connection that never finished its handshake: start over */
        chan_close(c);
    if (chan_connect(c, p->host, p->port) < 0 || peer_auth_start(c, op, argc, argv) < 0) {
        chan_close(c);
        return;
    }
    c->deadline_ms = deadline_ms + RD_MAX(200u, 2u * m->interval_ms); /* two round trips more */
}

/* M18: the handshake's replies on a peer channel. 0: consumed (the channel goes on), -1: close it. */
static int peer_auth_reply(struct mon_peer *p, enum mon_op op, const struct resp_reply *r)
{
    struct mon_chan *c = &p->ch;
    char addr[96];
    snprintf(addr, sizeof(addr), "monitor %s:%d", p->host, p->port);
    if (op == OP_PEER_AUTH1) {
        uint8_t msg[RD_AUTH_MSG_MAX], proof[RD_AUTH_PROOF_LEN];
        char hex[2 * RD_AUTH_MSG_MAX + 1];
        int n = r->type == RESP_BULK ? rd_auth_unhex((const char *)r->str, r->len, msg, sizeof(msg)) : -1;
        if (n < 0 || rd_auth_client_challenge(&mon_auth, &c->hs, msg, (size_t)n, proof) != 0) {
            if (rd_auth_log_once(addr))
                rd_warn("peer %s failed peer authentication: its challenge is not from a holder of the secret "
                        "(logged once)", addr);
            return -1;
        }
        rd_auth_hex(proof, sizeof(proof), hex);
        const char *av[] = {"REDOUBT.AUTH", hex};
        if (resp_command_str(&c->out, 2, av) < 0)
            return -1;
        c->op = OP_PEER_AUTH2;
        return 0;
    }
    if (r->type != RESP_STATUS) {
        char t[200];
        reply_text(r, t, sizeof(t));
        if (rd_auth_log_once(addr))
            rd_warn("peer %s refused our proof: %s (logged once)", addr, t);
        return -1;
    }
    c->authed = 1;
    if (rd_buf_append(&c->out, c->held.data, c->held.len) < 0)
        return -1;
    rd_buf_reset(&c->held);
    c->op = c->held_op;
    c->held_op = OP_NONE;
    return 0;
}

static int peer_up(const struct mon *m, const struct mon_peer *p, uint64_t now)
{
    return p->last_ok_ms && now - p->last_ok_ms <= 3u * m->interval_ms + 50u;
}

/* M9: a peer's view newer than ours (higher config epoch) is adopted; epochs and terms only grow. */
static void adopt_view(struct mon *m, uint64_t config_epoch, const char *writer, uint64_t max_term,
                       uint64_t current_epoch)
{
    int changed = 0;
    if (current_epoch > m->st.current_epoch)
        m->st.current_epoch = current_epoch, changed = 1;
    if (max_term > m->st.max_term)
        m->st.max_term = max_term, changed = 1;
    if (config_epoch > m->st.config_epoch && m->fo.state == FO_IDLE && !m->el.active) {
        for (unsigned i = 0; i < m->nnodes; i++) {
            if (strcmp(m->node[i].name, writer) != 0)
                continue;
            if ((int)i != m->writer) {
                rd_warn("a peer monitor installed %s as the writer (config epoch %" PRIu64 "): following it", writer,
                        config_epoch);
                m->node[m->writer].role = ROLE_OLD_WRITER;
                m->writer = (int)i;
                m->node[i].role = m->mode == MODE_CLASSIC ? ROLE_PRIMARY : ROLE_WRITER;
                m->node[i].lease_banned = 0;
                m->node[i].fence_pending = 0;
                m->failovers++;
                m->st.failovers = m->failovers;
                m->cooldown_until_ms = rd_now_ms() + m->cooldown_ms;
            }
            m->st.config_epoch = config_epoch;
            changed = 1;
        }
    }
    if (changed)
        state_save(m);
}

static void peers_hello(struct mon *m, uint64_t now)
{
    char id[16], ce[32], mt[32], cu[32];
    snprintf(id, sizeof(id), "%u", m->id);
    snprintf(ce, sizeof(ce), "%" PRIu64, m->st.config_epoch);
    snprintf(mt, sizeof(mt), "%" PRIu64, m->st.max_term);
    snprintf(cu, sizeof(cu), "%" PRIu64, m->st.current_epoch);
    const char *argv[] = {"SENTINEL", "redoubt-hello", id, ce, m->node[m->writer].name, mt, cu};
    for (unsigned i = 0; i < m->npeers; i++)
        if (m->peer[i].ch.op == OP_NONE)
            peer_call(m, &m->peer[i], OP_HELLO, 7, argv, now);
    m->hello_now = 0;
}

static void election_start(struct mon *m, int planned, uint64_t now)
{
    struct mon_node *w = &m->node[m->writer];
    m->st.current_epoch++;
    m->st.voted_epoch = m->st.current_epoch;
    m->st.voted_for = m->id;
    state_save(m); /* M10: our vote is on disk before anyone hears of the epoch */
    memset(&m->el, 0, sizeof(m->el));
    m->el.active = 1;
    m->el.planned = planned;
    m->el.epoch = m->st.current_epoch;
    m->el.deadline_ms = now + MON_ELECT_TIMEOUT_MS;
    m->el.votes = 1;
    m->el.lease_last_ms = w->last_lease_ms;
    if (!planned)
        w->lease_banned = 1, w->lease_banned_ms = now; /* ML2 */
    rd_info("election for failover epoch %" PRIu64 " (%s): asking %u peer(s) for votes, %u needed", m->el.epoch,
            planned ? "planned switchover" : "writer down", m->npeers, m->quorum);
}

static void election_won(struct mon *m, uint64_t now)
{
    m->el.active = 0;
    rd_warn("elected leader of failover epoch %" PRIu64 " with %u of %u votes", m->el.epoch, m->el.votes,
            m->npeers + 1);
    if (!m->el.planned && !writer_sdown(m, now)) {
        rd_warn("the writer %s answers again: no failover", m->node[m->writer].name);
        return;
    }
    fo_start(m, m->el.planned, now);
    m->fo.lease_until_ms = m->el.lease_last_ms ? m->el.lease_last_ms + m->lease_ms + 1 : 0;
    if (m->node[m->fo.old].refusals >= 2) /* its port refuses connections: no process there holds a lease */
        m->fo.lease_until_ms = 0;
}

/* The monitors' agreement, run every loop turn (MON_FAST_MS while something is being decided):
 * subjective down -> ask peers -> objective down (a majority) -> election -> failover (M8). */
static void quorum_step(struct mon *m, uint64_t now)
{
    int sd = writer_sdown(m, now);
    struct mon_node *w = &m->node[m->writer];
    if (sd && m->sdown_since_ms == 0) {
        m->sdown_since_ms = now;
        rd_warn("writer %s is down for this monitor; asking %u peer(s)", w->name, m->npeers);
    } else if (!sd) {
        if (m->odown_since_ms)
            rd_info("writer %s is no longer down", w->name);
        m->sdown_since_ms = m->odown_since_ms = 0;
    }
    unsigned agree = (unsigned)sd;
    char port[16], ep[32], id[16];
    snprintf(port, sizeof(port), "%d", w->port);
    snprintf(ep, sizeof(ep), "%" PRIu64, m->el.active ? m->el.epoch : m->st.current_epoch);
    snprintf(id, sizeof(id), "%u", m->id);
    for (unsigned i = 0; i < m->npeers; i++) {
        struct mon_peer *p = &m->peer[i];
        if (sd && p->says_down && p->says_down_ms >= m->sdown_since_ms)
            agree++;
        if (p->ch.op != OP_NONE)
            continue;
        if (m->el.active && p->vote_asked_epoch != m->el.epoch) {
            const char *argv[] = {"SENTINEL", "is-master-down-by-addr", w->host, port, ep, id};
            p->vote_asked_epoch = m->el.epoch;
            peer_call(m, p, OP_ASK_VOTE, 6, argv, now);
        } else if (sd && m->fo.state == FO_IDLE && now >= p->asked_ms + MON_FAST_MS) {
            const char *argv[] = {"SENTINEL", "is-master-down-by-addr", w->host, port, ep, "*"};
            p->asked_ms = now;
            peer_call(m, p, OP_ASK_DOWN, 6, argv, now);
        }
    }
    if (sd && agree >= m->quorum && m->odown_since_ms == 0) {
        m->odown_since_ms = now;
        rd_warn("writer %s is down for %u of %u monitors (quorum %u)", w->name, agree, m->npeers + 1, m->quorum);
    }
    if (m->el.active) {
        if (m->el.votes >= m->quorum)
            election_won(m, now);
        else if (now >= m->el.deadline_ms) {
            rd_warn("election for epoch %" PRIu64 " failed: %u of %u votes; retrying later", m->el.epoch, m->el.votes,
                    m->quorum);
            m->el.active = 0;
            m->hold_until_ms = now + 100 + (uint64_t)(rand() % 300);
        }
        return;
    }
    if (m->fo.state != FO_IDLE || now < m->cooldown_until_ms || now < m->hold_until_ms)
        return;
    if (voted_leader_busy(m, now)) /* M15: the leader we voted for is still at it */
        return;
    if (m->odown_since_ms) {
        unsigned lower = 0;
        for (unsigned i = 0; i < m->npeers; i++)
            lower += m->peer[i].id && (unsigned)m->peer[i].id < m->id && peer_up(m, &m->peer[i], now);
        /* Staggered from the later of the detection and the end of the cooldown: monitors leave a
         * cooldown together (they learnt of the last failover at once, M9), and starting together
         * splits the vote. */
        uint64_t from_ms = RD_MAX(m->odown_since_ms, m->cooldown_until_ms);
        if (now >= from_ms + lower * MON_RANK_DELAY_MS)
            election_start(m, 0, now);
    } else if (m->pending_planned) {
        m->pending_planned = 0;
        if (!sd)
            election_start(m, 1, now);
    }
    if (m->el.active && m->el.votes >= m->quorum) /* alone (no peers) */
        election_won(m, now);
}

static void on_peer_reply(struct mon *m, struct mon_peer *p, enum mon_op op, const struct resp_reply *r,
                          uint64_t now)
{
    if (r->type != RESP_ARRAY) {
        char t[200];
        reply_text(r, t, sizeof(t));
        rd_warn("peer monitor %s:%d answered: %s", p->host, p->port, t);
        return;
    }
    p->last_ok_ms = now;
    if (op == OP_HELLO && r->nelems >= 6) {
        char wr[64];
        p->id = (int)reply_int(&r->elems[0]);
        p->config_epoch = (uint64_t)reply_int(&r->elems[1]);
        snprintf(wr, sizeof(wr), "%.*s", (int)RD_MIN(r->elems[2].len, sizeof(wr) - 1), (const char *)r->elems[2].str);
        snprintf(p->writer, sizeof(p->writer), "%s", wr);
        p->max_term = (uint64_t)reply_int(&r->elems[3]);
        p->current_epoch = (uint64_t)reply_int(&r->elems[4]);
        p->writer_sdown = (int)reply_int(&r->elems[5]);
        p->leading = r->nelems >= 7 ? (int)reply_int(&r->elems[6]) : 1; /* an old peer: assume the worst */
        p->hello_ms = now;
        adopt_view(m, p->config_epoch, wr, p->max_term, p->current_epoch);
        return;
    }
    if ((op != OP_ASK_DOWN && op != OP_ASK_VOTE) || r->nelems < 4)
        return;
    int down = reply_int(&r->elems[0]) == 1;
    p->says_down = down;
    p->says_down_ms = now;
    p->down_lease_ms = (uint64_t)reply_int(&r->elems[3]);
    uint64_t le = (uint64_t)reply_int(&r->elems[2]);
    if (le > m->st.current_epoch) {
        m->st.current_epoch = le;
        state_save(m);
    }
    if (op == OP_ASK_VOTE && m->el.active && le == m->el.epoch && (uint64_t)reply_int(&r->elems[1]) == m->id &&
        r->elems[1].type == RESP_BULK && (m->el.planned || down)) {
        m->el.votes++;
        m->el.lease_last_ms = RD_MAX(m->el.lease_last_ms, p->down_lease_ms);
        rd_info("vote from monitor %d for epoch %" PRIu64 " (%u of %u)", p->id, le, m->el.votes, m->quorum);
        if (m->el.votes >= m->quorum)
            election_won(m, now);
    }
}

static void peer_on_readable(struct mon *m, struct mon_peer *p, uint64_t now)
{
    struct mon_chan *c = &p->ch;
    if (rd_buf_reserve(&c->in, 16384) < 0) {
        chan_close(c);
        return;
    }
    ssize_t r = recv(c->fd, c->in.data + c->in.len, 16384, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0 || c->in.len + (size_t)r > 65536) {
        chan_close(c);
        return;
    }
    c->in.len += (size_t)r;
    struct resp_reply rep;
    int used = resp_read_reply(c->in.data, c->in.len, &rep);
    if (used == 0)
        return;
    if (used < 0) {
        chan_close(c);
        return;
    }
    enum mon_op op = c->op;
    if (op == OP_PEER_AUTH1 || op == OP_PEER_AUTH2) {
        int rc = peer_auth_reply(p, op, &rep); /* before the consume: rep points into c->in */
        resp_reply_free(&rep);
        if (rc < 0)
            chan_close(c);
        else
            rd_buf_consume(&c->in, (size_t)used);
        return;
    }
    c->op = OP_NONE;
    c->deadline_ms = 0;
    unsigned gen = c->gen;
    on_peer_reply(m, p, op, &rep, now); /* rep points into c->in: consume after */
    resp_reply_free(&rep);
    if (c->gen == gen)
        rd_buf_consume(&c->in, (size_t)used);
}

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
        if (n->hb.op == OP_NONE)
            hb_send(m, n, now);
        if (n->misses >= m->misses && n->ever_seen && !n->dead) {
            n->dead = 1;
            rd_warn("node %s (%s:%d, %s) declared dead: %u consecutive heartbeats missed", n->name, n->host, n->port,
                    role_names[n->role], n->misses);
        }
        if (n->fence_pending && (n->ctl.op == OP_NONE))
            fence_send(m, n);
        if ((int)i == m->writer)
            lease_renew(m, n, now);
    }
    peers_hello(m, now);
}

/* Deadlines of outstanding requests and of the failover steps. */
static void check_deadlines(struct mon *m, uint64_t now)
{
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_chan *c = &m->node[i].ctl;
        if (c->op != OP_NONE && c->deadline_ms && now >= c->deadline_ms)
            on_chan_failed(m, &m->node[i], c, "timed out", now);
    }
    for (unsigned i = 0; i < m->nnodes; i++) {
        struct mon_node *n = &m->node[i];
        if (n->ls.op != OP_NONE && now >= n->ls.deadline_ms)
            chan_close(&n->ls);
        if (n->hb_retry_ms && now >= n->hb_retry_ms && n->hb.op == OP_NONE) {
            n->hb_retry_ms = 0;
            hb_send(m, n, now);
        }
    }
    for (unsigned i = 0; i < m->npeers; i++) {
        struct mon_chan *c = &m->peer[i].ch;
        if (c->op != OP_NONE && now >= c->deadline_ms)
            chan_close(c); /* a paused or cut-off peer: reconnect later */
    }
    if (m->hello_now)
        peers_hello(m, now);
    if (m->renewed_writer != m->writer) /* ML4: a new writer gets its lease now, not at the next heartbeat */
        lease_renew(m, &m->node[m->writer], now);
    quorum_step(m, now);
    if (m->fo.state == FO_QUERY)
        fo_query_step(m, now);
    if (m->fo.state == FO_TERM)
        fo_term_step(m, now);
    if (m->fo.state == FO_LEASE_WAIT && now >= m->fo.lease_until_ms)
        fo_promote_send(m, m->fo.cand, now);
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
    put_kvi(b, "num-other-sentinels", m->npeers);
    put_kvi(b, "quorum", m->quorum);
    put_kvi(b, "config-epoch", (int64_t)m->st.config_epoch);
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
    uint64_t now = rd_now_ms();
    unsigned up = 1;
    for (unsigned i = 0; i < m->npeers; i++)
        up += peer_up(m, &m->peer[i], now);
    rd_buf_appendf(&b,
                   "monitor_id:%u\r\nmonitors:%u\r\nmonitors_up:%u\r\nquorum:%u\r\ncurrent_epoch:%" PRIu64
                   "\r\nconfig_epoch:%" PRIu64 "\r\nvoted:%u@%" PRIu64 "\r\nmax_term:%" PRIu64
                   "\r\nwriter_sdown:%d\r\nwriter_odown:%d\r\nelection:%s\r\nlease_ms:%u\r\nlease_renewing:%d\r\n",
                   m->id, m->npeers + 1, up, m->quorum, m->st.current_epoch, m->st.config_epoch, m->st.voted_for,
                   m->st.voted_epoch, m->st.max_term, m->sdown_since_ms != 0, m->odown_since_ms != 0,
                   m->el.active ? "active" : "none", m->lease_ms,
                   !w->lease_banned && w->last_lease_ms && now - w->last_lease_ms <= 2u * m->interval_ms);
    rd_buf_appendf(&b, "master0:name=%s,status=%s,address=%s:%d,slaves=%zu,sentinels=%u\r\n\r\n# Nodes\r\n",
                   m->cluster, m->odown_since_ms ? "odown" : w->dead ? "sdown" : "ok", w->host, w->port,
                   nreplicas(m), m->npeers + 1);
    for (unsigned i = 0; i < m->nnodes; i++) {
        const struct mon_node *n = &m->node[i];
        rd_buf_appendf(&b,
                       "node%u:name=%s,role=%s,addr=%s:%d,alive=%d,misses=%u,reported=%s,fenced=%d,epoch=%" PRIu64
                       ",term=%" PRIu64 ",timeline=%" PRIu64 ",lsn=%" PRIu64 ",lag_ms=%" PRIu64 ",lag_bytes=%" PRIu64 "\r\n",
                       i, n->name, (int)i == m->writer ? (m->mode == MODE_CLASSIC ? "primary" : "writer")
                                                       : role_names[n->role],
                       n->host, n->port, n->ever_seen && !n->dead, n->misses, n->rep_role, n->fenced, n->epoch,
                       n->term, n->timeline,
                       n->role == ROLE_REPLICA ? n->flush_lsn : n->role == ROLE_READER ? n->read_point : n->offset,
                       n->lag_ms, n->lag_bytes);
    }
    rd_info_lsns_xy(&b);
    resp_bulk(out, b.data, b.len);
    rd_buf_free(&b);
}

static uint64_t arg_u64(const struct resp_arg *a)
{
    char t[32];
    snprintf(t, sizeof(t), "%.*s", (int)RD_MIN(a->len, sizeof(t) - 1), (const char *)a->ptr);
    return strtoull(t, NULL, 10);
}

static void put_sentinels(const struct mon *m, struct rd_buf *o)
{
    uint64_t now = rd_now_ms();
    resp_array_hdr(o, m->npeers);
    for (unsigned i = 0; i < m->npeers; i++) {
        const struct mon_peer *p = &m->peer[i];
        char name[96];
        snprintf(name, sizeof(name), "%s:%d", p->host, p->port);
        resp_array_hdr(o, 16);
        put_kv(o, "name", name);
        put_kv(o, "ip", p->host);
        put_kvi(o, "port", p->port);
        put_kvi(o, "runid", p->id);
        put_kv(o, "flags", peer_up(m, p, now) ? "sentinel" : "s_down,sentinel");
        put_kvi(o, "last-ok-ping-reply", p->last_ok_ms ? (int64_t)(now - p->last_ok_ms) : -1);
        put_kvi(o, "config-epoch", (int64_t)p->config_epoch);
        put_kv(o, "writer", p->writer);
    }
}

/*
 * SENTINEL is-master-down-by-addr <ip> <port> <epoch> <runid|*> (Sentinel's peer query).
 * Reply [down 0|1, leader, leader_epoch, last_lease_ms]: leader "*" for a plain query; for a vote
 * request the monitor votes for the first requester of an epoch above its last vote (on disk first,
 * M10) and answers whom it voted for in that epoch. last_lease_ms is our last renewal of that writer
 * (CLOCK_MONOTONIC ms, one machine): the leader waits it out (ML3).
 */
static void cmd_is_master_down(struct mon *m, struct rd_buf *o, const struct resp_args *a)
{
    if (a->n != 6) {
        resp_error(o, "ERR syntax: SENTINEL is-master-down-by-addr <ip> <port> <current-epoch> <runid>");
        return;
    }
    uint64_t now = rd_now_ms();
    struct mon_node *w = &m->node[m->writer];
    int ours = a->v[2].len == strlen(w->host) && memcmp(a->v[2].ptr, w->host, a->v[2].len) == 0 &&
               (int)arg_u64(&a->v[3]) == w->port;
    int down = ours && writer_sdown(m, now);
    uint64_t req = arg_u64(&a->v[4]);
    char leader[16] = "*";
    uint64_t leader_epoch = 0;
    if (!(a->v[5].len == 1 && a->v[5].ptr[0] == '*')) {
        unsigned cand = (unsigned)arg_u64(&a->v[5]);
        /* M15: the leader we voted for may be half-way through its failover: no vote for a third
         * monitor until MON_VOTE_HOLD_MS passed (as Sentinel waits out a failover it voted for). */
        int leading = m->fo.state != FO_IDLE && cand != m->id; /* we run a failover: no second one */
        int held = leading || (cand != m->st.voted_for && m->st.voted_for != m->id && m->voted_peer_at_ms != 0 &&
                               (now < m->voted_peer_at_ms + MON_VOTE_HOLD_MS || voted_leader_busy(m, now)));
        if (held && req > m->st.voted_epoch)
            rd_info("no vote for monitor %u in failover epoch %" PRIu64 ": %s", cand, req,
                    leading ? "we are leading a failover" : "we voted for another monitor lately (its failover may be under way)");
        if (!held && req > m->st.voted_epoch && cand >= 1 && cand <= 15) {
            m->st.voted_epoch = req;
            m->st.voted_for = cand;
            if (req > m->st.current_epoch)
                m->st.current_epoch = req;
            state_save(m);
            if (cand != m->id) {
                m->voted_peer_at_ms = now;
                m->hold_until_ms = now + MON_VOTE_HOLD_MS;
                if (m->el.active && m->el.epoch < req)
                    m->el.active = 0; /* a newer election: ours is moot */
            }
            rd_info("voted for monitor %u in failover epoch %" PRIu64 " (writer %s down for us: %d)", cand, req,
                    w->name, down);
        }
        if (down && ours)
            w->lease_banned = 1, w->lease_banned_ms = now; /* ML2: renew no more a primary we voted down */
        snprintf(leader, sizeof(leader), "%u", m->st.voted_for);
        leader_epoch = m->st.voted_epoch;
    }
    resp_array_hdr(o, 4);
    resp_int(o, down);
    resp_bulk_str(o, leader);
    resp_int(o, (int64_t)leader_epoch);
    resp_int(o, ours ? (int64_t)w->last_lease_ms : 0);
}

/* SENTINEL redoubt-hello <id> <config_epoch> <writer> <max_term> <current_epoch>: peers exchange views
 * every heartbeat; each side adopts the newer one (M9). Reply: the same fields of ours + writer_sdown. */
static void cmd_hello(struct mon *m, struct rd_buf *o, const struct resp_args *a)
{
    if (a->n != 7) {
        resp_error(o, "ERR syntax: SENTINEL redoubt-hello <id> <config_epoch> <writer> <max_term> <current_epoch>");
        return;
    }
    char wr[64];
    snprintf(wr, sizeof(wr), "%.*s", (int)RD_MIN(a->v[4].len, sizeof(wr) - 1), (const char *)a->v[4].ptr);
    adopt_view(m, arg_u64(&a->v[3]), wr, arg_u64(&a->v[5]), arg_u64(&a->v[6]));
    resp_array_hdr(o, 7);
    resp_int(o, m->id);
    resp_int(o, (int64_t)m->st.config_epoch);
    resp_bulk_str(o, m->node[m->writer].name);
    resp_int(o, (int64_t)m->st.max_term);
    resp_int(o, (int64_t)m->st.current_epoch);
    resp_int(o, writer_sdown(m, rd_now_ms()));
    resp_int(o, m->el.active || m->fo.state != FO_IDLE); /* ML5 */
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
        if (!named) {
            resp_error(o, "ERR No such master with that name");
            return;
        }
        put_sentinels(m, o);
    } else if (arg_is(sub, "is-master-down-by-addr")) {
        cmd_is_master_down(m, o, a);
    } else if (arg_is(sub, "redoubt-hello")) {
        cmd_hello(m, o, a);
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

/* REDOUBT.AUTH on the monitor's port, and the gate: with a secret, SENTINEL
 * FAILOVER needs an authenticated connection. 1 if the command was handled here. */
static int client_peer_gate(struct mon_client *c, const struct resp_args *a)
{
    struct rd_buf *o = &c->out;
    if (arg_is(&a->v[0], "redoubt.auth")) {
        uint8_t msg[RD_AUTH_MSG_MAX], out[RD_AUTH_MSG_MAX];
        int n = a->n == 2 && mon_auth.enabled ? rd_auth_unhex((const char *)a->v[1].ptr, a->v[1].len, msg, sizeof(msg))
                                              : -1;
        int t = n < 0 ? -1 : rd_auth_msg_type(msg, (size_t)n);
        if (t == RD_AUTH_HELLO && c->hs.state == RD_AUTH_ST_NONE &&
            rd_auth_server_hello(&mon_auth, &c->hs, msg, (size_t)n, NULL, out) == 0) {
            char hex[2 * RD_AUTH_MSG_MAX + 1];
            rd_auth_hex(out, RD_AUTH_CHALLENGE_LEN, hex);
            resp_bulk_str(o, hex);
        } else if (t == RD_AUTH_PROOF && rd_auth_server_proof(&mon_auth, &c->hs, msg, (size_t)n) == 0) {
            c->peer_authed = 1;
            resp_simple(o, "OK");
        } else {
            resp_error(o, mon_auth.enabled ? "NOPEERAUTH peer authentication failed" : "ERR no --cluster-secret-file");
            c->close_after = 1;
        }
        return 1;
    }
    if (!mon_auth.enabled || c->peer_authed || !arg_is(&a->v[0], "sentinel") || a->n < 2)
        return 0;
    const struct resp_arg *sub = &a->v[1];
    /* M18: what changes a monitor's state needs an authenticated peer: the operator's FAILOVER, and
     * the monitors' own votes and down queries (is-master-down-by-addr) and hellos (redoubt-hello,
     * whose views are adopted, M9). The read-only queries Sentinel clients use stay open. */
    if (!arg_is(sub, "failover") && !arg_is(sub, "is-master-down-by-addr") && !arg_is(sub, "redoubt-hello"))
        return 0;
    if (rd_auth_log_once("monitor-gate"))
        rd_warn("refused SENTINEL %.*s from an unauthenticated client (logged once)", (int)RD_MIN(sub->len, 40),
                (const char *)sub->ptr);
    resp_error(o, "NOPEERAUTH this command needs an authenticated cluster peer (--cluster-secret-file)");
    c->close_after = 1;
    return 1;
}

/* redoubt-monitor [--cluster-secret-file F] --call HOST:PORT CMD ARG...: one
 * command over an authenticated connection (what redis-cli cannot do), for
 * scripts/cluster's admin commands (SENTINEL FAILOVER). Prints the reply as
 * redis-cli would; exit 0, or 1 on an error reply or failure. */
static int mon_call_once(const char *addr, int argc, char **argv)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || argc < 1) {
        fprintf(stderr, "redoubt-monitor: --call HOST:PORT CMD [ARG...]\n");
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct mon_chan c;
    chan_init(&c);
    struct pollfd pf;
    int rc = chan_connect(&c, host, atoi(colon + 1));
    if (rc == 0) {
        pf = (struct pollfd){.fd = c.fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof(err);
        rc = poll(&pf, 1, 2000) == 1 && getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0 ? 0 : -1;
    }
    char aerr[256] = "";
    if (rc == 0 && mon_auth.enabled)
        rc = rd_auth_client_resp(&mon_auth, c.fd, 2000, aerr, sizeof(aerr));
    if (rc == 0 && resp_command_str(&c.out, (size_t)argc, (const char *const *)argv) == 0) {
        uint64_t deadline = rd_now_ms() + 5000;
        while (rc == 0 && c.out.len > 0)
            rc = chan_flush(&c);
        struct resp_reply r;
        int used = 0;
        while (rc == 0 && used == 0 && rd_now_ms() < deadline) {
            pf = (struct pollfd){.fd = c.fd, .events = POLLIN};
            if (poll(&pf, 1, 100) == 1) {
                ssize_t n = rd_buf_reserve(&c.in, 4096) < 0 ? -1 : recv(c.fd, c.in.data + c.in.len, 4096, 0);
                if (n <= 0)
                    rc = -1;
                else
                    c.in.len += (size_t)n;
            }
            if (rc == 0)
                used = resp_read_reply(c.in.data, c.in.len, &r);
        }
        if (used > 0) {
            int is_err = r.type == RESP_ERROR;
            if (r.type == RESP_INT)
                printf("%lld\n", (long long)r.integer);
            else if (r.str)
                printf("%s%.*s\n", is_err ? "(error) " : "", (int)r.len, (const char *)r.str);
            resp_reply_free(&r);
            chan_close(&c);
            return is_err;
        }
    }
    fprintf(stderr, "redoubt-monitor: --call %s failed%s%s\n", addr, aerr[0] ? ": " : "", aerr);
    chan_close(&c);
    return 1;
}

static void client_exec(struct mon *m, struct mon_client *c, const struct resp_args *a)
{
    struct rd_buf *o = &c->out;
    const struct resp_arg *cmd = &a->v[0];
    if (client_peer_gate(c, a))
        return;
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

/* ------------------------------------------------------------ Prometheus metrics
 * --metrics-port N (common/metrics.h), polled once per turn of run(): every INFO
 * number as redoubt_monitor_<field> (current_epoch, config_epoch, max_term,
 * monitors_up, quorum, failovers, writer_alive, ...), each node's as
 * redoubt_monitor_node_<field>{node="name"} (alive = up/down, misses, epoch,
 * term, timeline, lsn, lag), plus the failover counters and the writer. */
static void mon_metrics_body(void *arg, struct rd_buf *out)
{
    const struct mon *m = arg;
    static const struct rd_metrics_list lists[] = {{"node", "node", "node"}, {"master", "master", "master"}};
    struct rd_buf info = {0};
    put_info(m, &info); /* a RESP bulk: skip its "$N\r\n" */
    const uint8_t *crlf = memmem(info.data, info.len, "\r\n", 2);
    size_t skip = crlf ? (size_t)(crlf - info.data) + 2 : 0;
    rd_metrics_from_info(out, "redoubt_monitor_", (const char *)info.data + skip, info.len - skip, lists,
                         RD_ARRAY_LEN(lists));
    rd_buf_free(&info);
    rd_metrics_counter(out, "redoubt_monitor_failovers_started_total", "failovers this monitor led (started)",
                       (double)mon_met.fo_started);
    rd_metrics_counter(out, "redoubt_monitor_failovers_completed_total", "failovers this monitor led to the end",
                       (double)mon_met.fo_completed);
    rd_metrics_counter(out, "redoubt_monitor_failovers_aborted_total", "failovers this monitor led and gave up",
                       (double)mon_met.fo_aborted);
    rd_metrics_counter(out, "redoubt_monitor_fences_sent_total", "REDOUBT.FENCE requests sent to old writers",
                       (double)mon_met.fences_sent);
    rd_metrics_gauge(out, "redoubt_monitor_leading", "1 while this monitor runs an election or leads a failover",
                     m->el.active || m->fo.state != FO_IDLE);
    char lab[160], name[96];
    rd_metrics_label_escape(name, sizeof(name), m->node[m->writer].name, strlen(m->node[m->writer].name));
    snprintf(lab, sizeof(lab), "writer=\"%s\"", name);
    rd_metrics_family(out, "redoubt_monitor_writer", "gauge", "the writer as this monitor sees it");
    rd_metrics_sample(out, "redoubt_monitor_writer", lab, 1);
}

static void mon_metrics_start(const struct mon *m)
{
    rd_metrics_init(&mon_met.ep);
    if (mon_met.port == 0)
        return;
    int rc = rd_metrics_listen(&mon_met.ep, m->bind, mon_met.port);
    if (rc < 0)
        rd_error("metrics: could not listen on %s:%d: %s; no metrics endpoint", m->bind, mon_met.port, rd_strerror(rc));
    else
        rd_info("metrics: Prometheus endpoint on http://%s:%d/metrics", m->bind, mon_met.port);
}

/* ------------------------------------------------------------ loop */

static void run(struct mon *m)
{
    struct pollfd pfd[1 + MON_MAX_CLIENTS + 3 * MON_MAX_NODES + MON_MAX_PEERS];
    struct resp_args args = {0};
    m->next_tick_ms = rd_now_ms();
    mon_metrics_start(m);
    while (!stop_flag) {
        rd_metrics_poll(&mon_met.ep, mon_metrics_body, m);
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
        int fast = m->fo.state != FO_IDLE || m->el.active || m->sdown_since_ms || m->pending_planned;
        for (unsigned i = 0; i < m->nnodes; i++) {
            struct mon_chan *cs[3] = {&m->node[i].hb, &m->node[i].ctl, &m->node[i].ls};
            fast |= m->node[i].hb_retry_ms != 0;
            for (int k = 0; k < 3; k++)
                if (cs[k]->fd >= 0)
                    pfd[np++] = (struct pollfd){
                        .fd = cs[k]->fd,
                        .events = (short)(POLLIN | (cs[k]->connecting || cs[k]->out.len ? POLLOUT : 0))};
        }
        for (unsigned i = 0; i < m->npeers; i++) {
            struct mon_chan *c = &m->peer[i].ch;
            if (c->fd >= 0)
                pfd[np++] = (struct pollfd){.fd = c->fd,
                                            .events = (short)(POLLIN | (c->connecting || c->out.len ? POLLOUT : 0))};
        }
        now = rd_now_ms();
        int timeout = m->next_tick_ms > now ? (int)(m->next_tick_ms - now) : 0;
        if (fast)
            timeout = RD_MIN(timeout, MON_FAST_MS);
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
            for (unsigned i = 0; i < m->npeers && !done; i++) {
                struct mon_chan *c = &m->peer[i].ch;
                if (c->fd != fd)
                    continue;
                done = 1;
                if (c->connecting && (pfd[k].revents & (POLLOUT | POLLERR | POLLHUP))) {
                    int err = 0;
                    socklen_t el = sizeof(err);
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
                        chan_close(c);
                        continue;
                    }
                    c->connecting = 0;
                }
                if (!c->connecting && c->out.len > 0 && chan_flush(c) < 0) {
                    chan_close(c);
                    continue;
                }
                if (!c->connecting && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                    peer_on_readable(m, &m->peer[i], now);
            }
            for (unsigned i = 0; i < m->nnodes && !done; i++) {
                struct mon_node *n = &m->node[i];
                struct mon_chan *cs[3] = {&n->hb, &n->ctl, &n->ls};
                for (int j = 0; j < 3 && !done; j++) {
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
            "  --id I              this monitor's id, 1..15 (default 1); unique among the monitors\n"
            "  --monitor HOST:PORT a peer monitor; repeat for every other monitor of the cluster.\n"
            "                      A writer is failed over only when a majority of all monitors\n"
            "                      agree it is down; one elected monitor leads each failover\n"
            "  --dir D             state directory: the failover epoch, votes, terms and the writer\n"
            "                      survive a restart (D/" MON_STATE_FILE ")\n"
            "  --lease-ms N        the primaries' --lease-ms (classic local/async): renew leases with\n"
            "                      every heartbeat and wait them out before a promotion (default 0)\n"
            "  --no-write-probe    do not SET %s on the new writer after a promotion\n"
            "  --log-file F        append the log to F instead of stderr\n"
            "  --metrics-port N    Prometheus metrics on http://bind:N/metrics (failovers started/\n"
            "                      completed/aborted, epochs, monitors up, each node up/down)\n"
            "  --cluster-secret-file F  authenticate to the nodes with the cluster secret (mode 0600);\n"
            "                      SENTINEL FAILOVER then needs an authenticated connection (--call)\n"
            "  --call HOST:PORT CMD ARG...  send one command over an authenticated connection, print the\n"
            "                      reply (scripts/cluster failover uses it)\n"
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
    chan_init(&n->ls);
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
    m->renewed_writer = -1;
    const char *log_file = NULL, *call_addr = NULL;
    static const struct option opts[] = {
        {"cluster", required_argument, 0, 'c'},  {"mode", required_argument, 0, 'm'},
        {"port", required_argument, 0, 'p'},     {"bind", required_argument, 0, 'b'},
        {"node", required_argument, 0, 'n'},     {"interval-ms", required_argument, 0, 'i'},
        {"misses", required_argument, 0, 'x'},   {"cooldown-ms", required_argument, 0, 'k'},
        {"log-file", required_argument, 0, 'l'}, {"no-write-probe", no_argument, 0, 'W'},
        {"id", required_argument, 0, 'I'},       {"monitor", required_argument, 0, 'M'},
        {"dir", required_argument, 0, 'd'},      {"lease-ms", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},           {"cluster-secret-file", required_argument, 0, 'S'}, {"call", required_argument, 0, 'C'},
        {"metrics-port", required_argument, 0, 'P'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
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
        case 'C': call_addr = optarg; break;
        case 'S': {
            char err[512];
            if (rd_auth_load(&mon_auth, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "redoubt-monitor: %s\n", err);
                return 2;
            }
            break;
        }
        case 'I': m->id = (unsigned)parse_num("--id", optarg, 1, 15); break;
        case 'P': mon_met.port = (int)parse_num("--metrics-port", optarg, 1, 65535); break;
        case 'L': m->lease_ms = (unsigned)parse_num("--lease-ms", optarg, 0, 600000); break;
        case 'd':
            if (strlen(optarg) >= sizeof(m->dir)) {
                fprintf(stderr, "redoubt-monitor: --dir too long\n");
                return 2;
            }
            snprintf(m->dir, sizeof(m->dir), "%s", optarg);
            break;
        case 'M': {
            const char *colon = strrchr(optarg, ':');
            struct mon_peer *pe = &m->peer[m->npeers];
            if (m->npeers >= MON_MAX_PEERS || colon == NULL || colon == optarg ||
                (size_t)(colon - optarg) >= sizeof(pe->host)) {
                fprintf(stderr, "redoubt-monitor: bad --monitor \"%s\" (want host:port, at most %d)\n", optarg,
                        MON_MAX_PEERS);
                return 2;
            }
            memcpy(pe->host, optarg, (size_t)(colon - optarg));
            pe->port = (int)parse_num("--monitor port", colon + 1, 1, 65535);
            chan_init(&pe->ch);
            m->npeers++;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (call_addr != NULL)
        return mon_call_once(call_addr, argc - optind, argv + optind);
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
    if (m->id == 0)
        m->id = 1;
    m->quorum = (m->npeers + 1) / 2 + 1;
    for (unsigned i = 0; i < m->npeers; i++)
        if (m->peer[i].port == m->port && strcmp(m->peer[i].host, m->bind) == 0) {
            fprintf(stderr, "redoubt-monitor: --monitor %s:%d is this monitor itself; list only the others\n",
                    m->peer[i].host, m->peer[i].port);
            return 2;
        }
    if (m->dir[0] && mkdir(m->dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "redoubt-monitor: could not create --dir \"%s\": %s\n", m->dir, strerror(errno));
        return 1;
    }
    if (state_load(m) < 0)
        return 1;
    srand((unsigned)(getpid() ^ rd_now_ns()));
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
    rd_info("monitor %u of %s (%s) on %s:%d: %u nodes, writer %s, %u peer monitor(s), quorum %u, heartbeat every "
            "%u ms, dead after %u misses or %d refused connects, cooldown %u ms, lease %u ms",
            m->id, m->cluster, m->mode == MODE_CLASSIC ? "classic" : "aurora", m->bind, m->port, m->nnodes,
            m->node[m->writer].name, m->npeers, m->quorum, m->interval_ms, m->misses, MON_REFUSALS_DEAD,
            m->cooldown_ms, m->lease_ms);
    run(m);
    rd_info("stopping (signal)");
    for (unsigned i = 0; i < m->npeers; i++) {
        chan_close(&m->peer[i].ch);
        rd_buf_free(&m->peer[i].ch.in), rd_buf_free(&m->peer[i].ch.out), rd_buf_free(&m->peer[i].ch.held);
    }
    for (unsigned i = 0; i < m->nnodes; i++) {
        chan_close(&m->node[i].hb);
        chan_close(&m->node[i].ctl);
        chan_close(&m->node[i].ls);
        rd_buf_free(&m->node[i].ls.in), rd_buf_free(&m->node[i].ls.out);
        rd_buf_free(&m->node[i].hb.in), rd_buf_free(&m->node[i].hb.out);
        rd_buf_free(&m->node[i].ctl.in), rd_buf_free(&m->node[i].ctl.out);
    }
    for (unsigned i = 0; i < MON_MAX_CLIENTS; i++)
        if (m->client[i].fd >= 0)
            client_close(&m->client[i]);
    close(m->listen_fd);
    return 0;
}
