/*
 * repl.c — classic (PostgreSQL-style) streaming replication, both sides.
 *
 * Primary side ("WAL sender", one struct repl_peer per replica connection):
 *   a client connection that sends REDOUBT.REPLICATE becomes a CONN_WALSENDER.
 *   CLONE: checkpoint, then BACKUP_BEGIN, the data file in BACKUP_PAGES frames,
 *   BACKUP_END (consistent LSN), then WAL from the checkpoint's redo point.
 *   STREAM: HELLO, then WAL from the LSN asked for. Only durable WAL is
 *   shipped (records below the local flushed LSN), read from the segment
 *   files, at most REPL_WINDOW_BYTES queued per replica. STATUS frames carry
 *   the replica's write/flush/apply LSNs; they drive synchronous commit
 *   (server_update_release), WAIT, the slots that keep WAL, and lag figures.
 *
 * Replica side (struct upstream): connects to the primary (io_uring connect
 *   with a linked timeout), handshakes, clones if its data dir is empty,
 *   appends every received record to its own WAL (wal_append_encoded: the two
 *   logs are byte-identical), applies records with engine_redo one whole
 *   transaction at a time (at its COMMIT, so readers never see part of one),
 *   makes restart points at the primary's CHECKPOINT records, follows timeline
 *   switches, and reports LSNs back after every change (at most once a turn).
 *
 * Promotion (REPLICAOF NO ONE / PROMOTE): drop the link, cut the log after
 * the last applied commit, switch to a new timeline, checkpoint, accept writes.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/proto.h"
#include "server/server_int.h"

#define REPL_WINDOW_BYTES (4u << 20)     /* unsent bytes queued per replica */
#define REPL_MSG_BYTES (512u << 10)      /* WAL bytes per REPL_WAL frame */
#define REPL_COMPRESS_MIN_BYTES 4096u    /* smaller WAL frames are not worth lz4 */
#define REPL_BACKUP_PAGES_PER_FRAME 64u
#define REPL_KEEPALIVE_MS 100u
#define REPL_STATUS_MS 100u
#define REPL_RECONNECT_MS 200u
#define REPL_RESTARTPOINT_MS 30000u

struct repl_peer {
    struct conn *c;
    char name[64];
    struct repl_slot *slot;
    enum { PEER_BACKUP, PEER_STREAMING } state;
    uint64_t sent_lsn; /* next LSN to send */
    uint64_t told_flush_lsn; /* the primary flush LSN this replica was last told */
    uint64_t term; /* the primary's term when the handshake was accepted (T5) */
    int listen_port; /* the replica's client port (LISTEN-PORT), 0 if not announced */
    uint64_t write_lsn, flush_lsn, apply_lsn;
    uint64_t write_lag_us, flush_lag_us, apply_lag_us;
    uint64_t last_status_ms, last_send_ms, connected_ms;
    struct wal_sender_cursor *cur;
    int data_fd;
    uint32_t backup_next, backup_npages;
    struct rd_buf scratch;
    struct rd_buf wal_buf;
    uint8_t *page_buf;
};

static uint64_t tli_of(const struct server *s) { return s->wal ? wal_timeline(s->wal) : 0; }

static void lsn_str(uint64_t lsn, char *buf, size_t n)
{
    snprintf(buf, n, "%" PRIX64 "/%" PRIX64, lsn >> 32, lsn & 0xffffffffu);
}

/* ================================================================ primary side */

/* Writes DIR/slots (replica/proto.h); a failure is logged and returned. */
int repl_slots_save(struct server *s)
{
    if (s->role != SERVER_ROLE_PRIMARY || s->cfg.dir == NULL)
        return 0;
    struct repl_slot_rec v[SERVER_MAX_SLOTS];
    size_t n = 0;
    for (size_t i = 0; i < SERVER_MAX_SLOTS; i++)
        if (s->slots[i].in_use) {
            memset(&v[n], 0, sizeof(v[n]));
            snprintf(v[n].name, sizeof(v[n].name), "%s", s->slots[i].name);
            v[n++].restart_lsn = s->slots[i].restart_lsn;
        }
    struct rd_buf b = {0};
    int rc = repl_slots_encode(&b, v, n);
    if (rc == 0)
        rc = rd_write_file_atomic(s->cfg.dir, "slots", b.data, b.len);
    rd_buf_free(&b);
    if (rc < 0)
        rd_error("could not write the replication slots file \"%s/slots\": %s", s->cfg.dir, rd_strerror(rc));
    return rc;
}

static void slots_update_keep(struct server *s);

int repl_slots_load(struct server *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/slots", s->cfg.dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        rd_error("could not open the replication slots file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    uint8_t buf[16 + REPL_SLOTS_MAX * 72 + 8 + 1];
    ssize_t got = read(fd, buf, sizeof(buf));
    int err = got < 0 ? errno : 0;
    close(fd);
    struct repl_slot_rec v[REPL_SLOTS_MAX];
    size_t n = 0;
    int rc = got < 0 ? -err : repl_slots_decode(buf, (size_t)got, v, RD_ARRAY_LEN(v), &n);
    if (rc < 0) {
        rd_error("the replication slots file \"%s\" is unreadable (%s): remove it to start without slots "
                 "(replicas that fell behind may then have to re-clone)",
                 path, rd_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n && i < SERVER_MAX_SLOTS; i++) {
        struct repl_slot *sl = &s->slots[i];
        memset(sl, 0, sizeof(*sl));
        _Static_assert(sizeof(sl->name) == sizeof(v[i].name), "slot names");
        memcpy(sl->name, v[i].name, sizeof(sl->name)); /* NUL-terminated: checked by the decoder */
        sl->restart_lsn = v[i].restart_lsn;
        sl->in_use = 1;
        char l1[32];
        lsn_str(sl->restart_lsn, l1, sizeof(l1));
        rd_info("replication slot \"%s\" restored: WAL from %s is kept for it", sl->name, l1);
    }
    slots_update_keep(s);
    return 0;
}

static struct repl_slot *slot_get(struct server *s, const char *name)
{
    struct repl_slot *free_slot = NULL;
    for (size_t i = 0; i < SERVER_MAX_SLOTS; i++) {
        if (s->slots[i].in_use && strcmp(s->slots[i].name, name) == 0)
            return &s->slots[i];
        if (!s->slots[i].in_use && free_slot == NULL)
            free_slot = &s->slots[i];
    }
    if (free_slot) {
        memset(free_slot, 0, sizeof(*free_slot));
        snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
        free_slot->in_use = 1;
        free_slot->created = 1; /* saved once its restart LSN is set (repl_cmd_replicate) */
    }
    return free_slot;
}

static void peer_error(struct server *s, struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void peer_error(struct server *s, struct conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rd_warn("replication from %s refused: %s", c->addr, msg);
    if (repl_send_error(&c->out, tli_of(s), msg) < 0)
        rd_panic("out of memory for a replication error");
    conn_close_after_reply(c);
}

static int promote_finish(struct server *s);

/* ================================================================ terms (replica/README.md T1-T6) */

static void term_save(struct server *s, uint64_t term, const char *why)
{
    rd_assert(term > s->term && term <= REPL_TERM_MAX);
    uint8_t f[REPL_TERM_FILE_BYTES];
    repl_term_encode(f, term);
    int rc = rd_write_file_atomic(s->cfg.dir, "term", f, sizeof(f));
    if (rc < 0) /* T1: a term is acted on only once it is durable; never retried */
        rd_panic("could not write \"%s/term\": %s", s->cfg.dir, rd_strerror(rc));
    rd_info("term %" PRIu64 " -> %" PRIu64 " (%s)", s->term, term, why);
    s->term = term;
}

int repl_term_load(struct server *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/term", s->cfg.dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            s->term = 0;
            return 0;
        }
        rd_error("could not open \"%s\": %s", path, strerror(errno));
        return -1;
    }
    uint8_t buf[REPL_TERM_FILE_BYTES + 1];
    ssize_t n = read(fd, buf, sizeof(buf));
    int err = errno;
    if (close(fd) < 0)
        rd_warn("close of \"%s\" failed: %s", path, strerror(errno));
    if (n < 0) {
        rd_error("could not read \"%s\": %s", path, strerror(err));
        return -1;
    }
    if (repl_term_decode(buf, (size_t)n, &s->term) < 0) {
        rd_error("\"%s\" is corrupt (%zd bytes; bad magic, version, length or checksum): refusing to start, "
                 "since a forgotten term could let a replaced primary's WAL be acknowledged again; restore it "
                 "or re-clone this node",
                 path, n);
        return -1;
    }
    if (s->term)
        rd_info("term %" PRIu64 " (from %s)", s->term, path);
    return 0;
}

/* T3: a primary that learns of a newer term has been replaced: it fences
 * itself (nothing more is released: server_update_release) and drops its
 * replicas (their acknowledgements were given under the old term). */
static void term_fence_primary(struct server *s, uint64_t term, const char *why, const struct conn *keep)
{
    term_save(s, term, why);
    s->fenced = 1;
    s->term_fenced = 1;
    snprintf(s->fenced_by, sizeof(s->fenced_by), "term %" PRIu64 ": %s", term, why);
    rd_error("FENCED: %s; a newer primary may exist, this node acknowledges nothing more", s->fenced_by);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c != keep && c->kind == CONN_WALSENDER && !c->closing)
            conn_close(s, c);
    }
}

static int term_arg(const struct resp_arg *a, uint64_t *t);

static void reply_term_state(struct server *s, struct conn *c)
{
    int replica = s->role == SERVER_ROLE_REPLICA;
    uint64_t ins = s->wal ? wal_insert_lsn(s->wal) : 0, fl = s->wal ? wal_flushed_lsn(s->wal) : 0;
    int rc = resp_array_hdr(&c->out, 6);
    rc |= resp_int(&c->out, (int64_t)s->term);
    rc |= resp_bulk_str(&c->out, replica ? "replica" : "primary");
    rc |= resp_int(&c->out, s->wal ? (int64_t)wal_timeline(s->wal) : 0);
    rc |= resp_int(&c->out, (int64_t)ins);
    rc |= resp_int(&c->out, (int64_t)fl);
    rc |= resp_int(&c->out, (int64_t)(replica ? s->up.apply_lsn : fl));
    if (rc < 0)
        rd_panic("out of memory for a reply");
}

/* REDOUBT.TERM t (T2, T3): persist t, then stop acknowledging anything of an
 * older term; answers what this node holds now. */
void repl_cmd_term(struct server *s, struct conn *c, const struct resp_args *a)
{
    uint64_t t;
    if (s->role != SERVER_ROLE_PRIMARY && s->role != SERVER_ROLE_REPLICA) {
        resp_error(&c->out, "ERR terms are for classic primaries and replicas (aurora fences with epochs)");
        return;
    }
    if (term_arg(&a->v[1], &t) < 0) {
        resp_error(&c->out, "ERR REDOUBT.TERM expects a term in [1, 4294967295]");
        return;
    }
    if (t < s->term) {
        char msg[160];
        snprintf(msg, sizeof(msg), "STALETERM current term is %" PRIu64, s->term);
        resp_error(&c->out, msg);
        return;
    }
    if (t > s->term) {
        char why[400];
        snprintf(why, sizeof(why), "REDOUBT.TERM from %s", c->addr);
        if (s->role == SERVER_ROLE_PRIMARY) {
            term_fence_primary(s, t, why, NULL);
        } else {
            term_save(s, t, why);
            if (s->up.conn) { /* T2: not one more byte from, or status to, the old primary */
                rd_info("dropping the link to %s:%d: it is on an older term", s->up.host, s->up.port);
                conn_close(s, s->up.conn);
            }
        }
    }
    reply_term_state(s, c);
}

/* REDOUBT.PROMOTE t (T4): promote this replica — or lift a primary's term
 * fence — only if t is the term it was fenced for. */
void repl_cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a)
{
    uint64_t t;
    char err[512];
    if (term_arg(&a->v[1], &t) < 0) {
        resp_error(&c->out, "ERR REDOUBT.PROMOTE expects a term in [1, 4294967295]");
        return;
    }
    if (s->role != SERVER_ROLE_PRIMARY && s->role != SERVER_ROLE_REPLICA) {
        resp_error(&c->out, "ERR REDOUBT.PROMOTE is for classic primaries and replicas");
        return;
    }
    if (t != s->term) {
        snprintf(err, sizeof(err), "STALETERM this node is at term %" PRIu64 ", not %" PRIu64, s->term, t);
        resp_error(&c->out, err);
        return;
    }
    if (s->role == SERVER_ROLE_PRIMARY) {
        if (s->fenced && !s->term_fenced) {
            snprintf(err, sizeof(err), "ERR this primary was fenced by REDOUBT.FENCE (%s); restart it as a replica",
                     s->fenced_by);
            resp_error(&c->out, err);
            return;
        }
        if (s->term_fenced) {
            rd_info("REDOUBT.PROMOTE %" PRIu64 " from %s: primary again at this term (fence lifted)", t, c->addr);
            s->fenced = s->term_fenced = 0;
            s->fenced_by[0] = 0;
            server_update_release(s);
        }
        if (resp_simple(&c->out, "OK") < 0)
            rd_panic("out of memory for a reply");
        return;
    }
    int rc = repl_promote(s, c, t, err, sizeof(err));
    if (rc < 0)
        resp_error(&c->out, err);
    else if (rc == 0 && resp_simple(&c->out, "OK") < 0)
        rd_panic("out of memory for a reply");
}

static int arg_u64(const struct resp_arg *a, int base, uint64_t *out)
{
    char tmp[40];
    if (a->len == 0 || a->len >= sizeof(tmp))
        return -1;
    memcpy(tmp, a->ptr, a->len);
    tmp[a->len] = 0;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, base);
    if (errno || *end || tmp[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int term_arg(const struct resp_arg *a, uint64_t *t)
{
    return arg_u64(a, 10, t) < 0 || *t == 0 || *t > REPL_TERM_MAX ? -1 : 0;
}

/* REDOUBT.REPLICATE <cluster-id-hex|0> <name> <timeline> <start-lsn> <STREAM|CLONE> [TERM t] [LISTEN-PORT p] */
void repl_cmd_replicate(struct server *s, struct conn *c, const struct resp_args *a)
{
    char err[256];
    if (s->role != SERVER_ROLE_PRIMARY) {
        snprintf(err, sizeof(err), "ERR this node is not a primary (start it with --role primary to accept replicas)");
        resp_error(&c->out, err);
        conn_reply_done(s, c, 0);
        return;
    }
    uint64_t cluster, tli, start, rterm = 0, lport = 0;
    int bad_opt = a->n < 6 || (a->n - 6) % 2 != 0;
    for (size_t i = 6; !bad_opt && i + 1 < a->n; i += 2) {
        if (a->v[i].len == 4 && strncasecmp((const char *)a->v[i].ptr, "TERM", 4) == 0)
            bad_opt = arg_u64(&a->v[i + 1], 10, &rterm) < 0 || rterm > REPL_TERM_MAX;
        else if (a->v[i].len == 11 && strncasecmp((const char *)a->v[i].ptr, "LISTEN-PORT", 11) == 0)
            bad_opt = arg_u64(&a->v[i + 1], 10, &lport) < 0 || lport > 65535;
        else
            bad_opt = 1;
    }
    if (bad_opt || arg_u64(&a->v[1], 16, &cluster) < 0 || arg_u64(&a->v[3], 10, &tli) < 0 ||
        arg_u64(&a->v[4], 10, &start) < 0 || a->v[2].len == 0 || a->v[2].len >= 64 ||
        !((a->v[5].len == 5 && strncasecmp((const char *)a->v[5].ptr, "CLONE", 5) == 0) ||
          (a->v[5].len == 6 && strncasecmp((const char *)a->v[5].ptr, "STREAM", 6) == 0)) ||
        tli > UINT32_MAX) {
        rd_warn("client %s sent a malformed REDOUBT.REPLICATE", c->addr);
        resp_error(&c->out, "ERR syntax: REDOUBT.REPLICATE <cluster-id-hex|0> <name> <timeline> <start-lsn> "
                            "<STREAM|CLONE> [TERM t] [LISTEN-PORT p]");
        conn_reply_done(s, c, 0);
        return;
    }
    int clone = strncasecmp((const char *)a->v[5].ptr, "CLONE", 5) == 0;
    char name[64];
    memcpy(name, a->v[2].ptr, a->v[2].len);
    name[a->v[2].len] = 0;
    for (char *p = name; *p; p++)
        if (*p <= ' ' || *p > '~' || *p == ',' || *p == '=')
            *p = '_';
    /* From here on the connection carries frames. */
    c->kind = CONN_WALSENDER;
    struct repl_peer *p = calloc(1, sizeof(*p));
    if (p == NULL)
        rd_panic("out of memory for a replica");
    p->c = c;
    p->data_fd = -1;
    p->connected_ms = p->last_status_ms = p->last_send_ms = rd_now_ms();
    snprintf(p->name, sizeof(p->name), "%s", name);
    c->peer = p;
    p->listen_port = (int)lport;
    s->npeers++;
    struct wal_stats ws;
    wal_get_stats(s->wal, &ws);
    if (cluster != 0 && cluster != ws.system_id) {
        peer_error(s, c, "cluster id mismatch: this primary's is %016" PRIX64 ", replica \"%s\" has %016" PRIX64
                   " (it belongs to another cluster; re-clone it into an empty directory)",
                   ws.system_id, name, cluster);
        return;
    }
    for (struct conn *o = s->conns; o; o = o->next)
        if (o != c && o->kind == CONN_WALSENDER && o->peer && !o->closing && strcmp(o->peer->name, name) == 0) {
            peer_error(s, c, "a replica named \"%s\" is already streaming from %s", name, o->addr);
            return;
        }
    /* T3/T5: a replica on a newer term proves this primary was replaced; a fenced
     * primary streams to nobody; every accepted replica is on this primary's term
     * (it adopts it from HELLO / BACKUP_BEGIN if it was behind). */
    if (rterm > s->term) {
        char why[500];
        snprintf(why, sizeof(why), "replica \"%s\" (%s) is at term %" PRIu64, name, c->addr, rterm);
        term_fence_primary(s, rterm, why, c);
        peer_error(s, c, "this primary was at an older term than replica \"%s\" (%" PRIu64 "): it has been "
                   "replaced and is fenced", name, rterm);
        return;
    }
    if (s->fenced) {
        peer_error(s, c, "this primary is fenced (%s): it streams to no replica", s->fenced_by);
        return;
    }
    p->term = s->term;
    p->slot = slot_get(s, name);
    if (p->slot == NULL) {
        peer_error(s, c, "too many replicas (the limit is %d)", SERVER_MAX_SLOTS);
        return;
    }
    int rc = wal_sender_open(s->wal, &p->cur);
    if (rc < 0) {
        peer_error(s, c, "could not open the WAL for sending: %s", rd_strerror(rc));
        return;
    }
    char l1[32], l2[32];
    if (clone) {
        rc = wal_checkpoint(s->wal, s->engine); /* the backup's redo point */
        if (rc < 0)
            rd_panic("checkpoint for a base backup failed: %s", rd_strerror(rc));
        struct wal_control ctl;
        if ((rc = wal_control_read(s->cfg.dir, &ctl)) < 0) {
            peer_error(s, c, "could not read the control file: %s", rd_strerror(rc));
            return;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/data.rdb", s->cfg.dir);
        p->data_fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (p->data_fd < 0 || fstat(p->data_fd, &st) < 0) {
            peer_error(s, c, "could not open \"%s\" for a base backup: %s", path, strerror(errno));
            return;
        }
        p->page_buf = malloc((size_t)REPL_BACKUP_PAGES_PER_FRAME * ENGINE_PAGE_SIZE);
        if (p->page_buf == NULL)
            rd_panic("out of memory for a base backup");
        p->backup_npages = (uint32_t)((uint64_t)st.st_size / ENGINE_PAGE_SIZE);
        p->state = PEER_BACKUP;
        p->sent_lsn = ctl.redo_lsn;
        p->slot->restart_lsn = ctl.redo_lsn;
        struct repl_backup_begin m = {.system_id = ws.system_id, .timeline = wal_timeline(s->wal),
                                      .term = (uint32_t)s->term,
                                      .redo_lsn = ctl.redo_lsn, .checkpoint_lsn = ctl.checkpoint_lsn,
                                      .segment_size_bytes = ctl.segment_size_bytes, .npages = p->backup_npages};
        if (repl_send_backup_begin(&c->out, tli_of(s), &m) < 0)
            rd_panic("out of memory");
        lsn_str(ctl.redo_lsn, l1, sizeof(l1));
        rd_info("replica \"%s\" (%s) is cloning: base backup of %u pages, WAL from %s", name, c->addr,
                p->backup_npages, l1);
    } else {
        uint32_t my_tli = wal_timeline(s->wal);
        uint64_t flushed = wal_flushed_lsn(s->wal);
        /* What this primary may already have shipped: a replica can hold up to it. */
        uint64_t have = s->cfg.repl_send_flushed ? flushed : wal_written_lsn(s->wal);
        uint64_t switch_lsn = wal_timeline_switch_lsn(s->wal);
        int on_parent = (uint32_t)tli == wal_timeline_parent(s->wal) && my_tli != (uint32_t)tli;
        int ok = ((uint32_t)tli == my_tli && start <= have) || (on_parent && start <= switch_lsn);
        if (on_parent && start > switch_lsn) {
            /* CR4: the replica received WAL of the parent timeline past our fork
             * (a promotion, or our own crash restart). Stream from the fork: the
             * replica cuts its log there if it applied nothing beyond it, or re-clones. */
            lsn_str(start, l1, sizeof(l1));
            lsn_str(switch_lsn, l2, sizeof(l2));
            rd_info("replica \"%s\" is at %s on timeline %" PRIu64 ", past where timeline %u forks (%s): "
                    "it must cut its log there",
                    name, l1, tli, my_tli, l2);
            start = switch_lsn;
            ok = 1;
        }
        if (!ok) {
            lsn_str(start, l1, sizeof(l1));
            lsn_str((uint32_t)tli == my_tli ? have : switch_lsn, l2, sizeof(l2));
            peer_error(s, c,
                       "replica \"%s\" has diverged: it is on timeline %" PRIu64 " at %s, this primary is on "
                       "timeline %u (history ends at %s); re-clone it",
                       name, tli, l1, my_tli, l2);
            return;
        }
        if (start < wal_oldest_lsn(s->wal)) {
            lsn_str(start, l1, sizeof(l1));
            peer_error(s, c, "requested WAL at %s has been removed (replica \"%s\" fell too far behind); re-clone it",
                       l1, name);
            return;
        }
        p->state = PEER_STREAMING;
        p->sent_lsn = start;
        p->write_lsn = p->flush_lsn = p->apply_lsn = start;
        p->slot->restart_lsn = start;
        struct repl_hello h = {.system_id = ws.system_id, .timeline = my_tli, .term = (uint32_t)s->term,
                               .start_lsn = start,
                               .primary_flush_lsn = flushed, .switch_lsn = wal_timeline_switch_lsn(s->wal),
                               .prev_timeline = wal_timeline_parent(s->wal)};
        if (repl_send_hello(&c->out, tli_of(s), &h) < 0)
            rd_panic("out of memory");
        lsn_str(start, l1, sizeof(l1));
        rd_info("replica \"%s\" (%s) streams from %s on timeline %u", name, c->addr, l1, my_tli);
    }
    p->slot->active = 1;
    if (p->slot->created) {
        p->slot->created = 0;
        repl_slots_save(s); /* a failure is logged; the slot still works in memory */
    }
}

static void peer_on_status(struct server *s, struct repl_peer *p, const struct repl_status *m)
{
    uint64_t now = rd_wall_us();
    if (m->write_lsn > p->write_lsn && m->write_echo_us)
        p->write_lag_us = now > m->write_echo_us ? now - m->write_echo_us : 0;
    if (m->flush_lsn > p->flush_lsn && m->flush_echo_us)
        p->flush_lag_us = now > m->flush_echo_us ? now - m->flush_echo_us : 0;
    if (m->apply_lsn > p->apply_lsn && m->apply_echo_us)
        p->apply_lag_us = now > m->apply_echo_us ? now - m->apply_echo_us : 0;
    p->write_lsn = RD_MAX(p->write_lsn, m->write_lsn);
    p->flush_lsn = RD_MAX(p->flush_lsn, m->flush_lsn);
    p->apply_lsn = RD_MAX(p->apply_lsn, m->apply_lsn);
    p->last_status_ms = rd_now_ms();
    if (p->slot && p->flush_lsn > p->slot->restart_lsn)
        p->slot->restart_lsn = p->flush_lsn;
    server_update_release(s);
}

static void peer_pump(struct server *s, struct repl_peer *p)
{
    struct conn *c = p->c;
    uint64_t tli = tli_of(s);
    while (!c->closing && !c->close_after_send && c->out.len + c->sending.len < REPL_WINDOW_BYTES) {
        if (p->state == PEER_BACKUP) {
            uint32_t n = RD_MIN(REPL_BACKUP_PAGES_PER_FRAME, p->backup_npages - p->backup_next);
            if (n > 0) {
                size_t want = (size_t)n * ENGINE_PAGE_SIZE;
                ssize_t r = pread(p->data_fd, p->page_buf, want, (off_t)p->backup_next * ENGINE_PAGE_SIZE);
                if (r != (ssize_t)want) {
                    peer_error(s, c, "base backup: could not read the data file: %s",
                               r < 0 ? strerror(errno) : "short read");
                    return;
                }
                if (repl_send_backup_pages(&c->out, tli, p->backup_next, n, p->page_buf) < 0)
                    rd_panic("out of memory");
                p->backup_next += n;
                continue;
            }
            uint64_t consistent = wal_flushed_lsn(s->wal);
            if (repl_send_backup_end(&c->out, tli, consistent) < 0)
                rd_panic("out of memory");
            close(p->data_fd);
            p->data_fd = -1;
            free(p->page_buf);
            p->page_buf = NULL;
            p->state = PEER_STREAMING;
            char l1[32];
            lsn_str(consistent, l1, sizeof(l1));
            rd_info("replica \"%s\": base backup sent (%u pages), consistent at %s", p->name, p->backup_npages, l1);
            continue;
        }
        /* --repl-send written (default): WAL leaves as soon as its write completed, so the
         * replica's fsync runs while ours does (CR1 in the README); flushed: PostgreSQL's rule. */
        uint64_t flushed = wal_flushed_lsn(s->wal);
        uint64_t upto = s->cfg.repl_send_flushed ? flushed : wal_written_lsn(s->wal);
        if (p->sent_lsn >= upto)
            break;
        rd_buf_reset(&p->wal_buf);
        uint64_t first = 0, next = 0;
        int rc = wal_sender_read(p->cur, p->sent_lsn, upto, REPL_MSG_BYTES, &p->wal_buf, &first, &next);
        if (rc < 0) {
            char l1[32];
            lsn_str(p->sent_lsn, l1, sizeof(l1));
            if (rc == RD_ENOTFOUND)
                peer_error(s, c, "requested WAL at %s has been removed (replica \"%s\" fell too far behind); re-clone it",
                           l1, p->name);
            else
                peer_error(s, c, "could not read WAL at %s: %s", l1, rd_strerror(rc));
            return;
        }
        if (rc == 0) {
            if (next > p->sent_lsn)
                p->sent_lsn = next; /* skipped the unused end of a segment */
            else
                break;
            continue;
        }
        struct repl_wal m = {.start_lsn = first, .end_lsn = next, .primary_flush_lsn = flushed,
                             .send_time_us = rd_wall_us(), .records = p->wal_buf.data,
                             .records_len = p->wal_buf.len};
        size_t before = c->out.len;
        if (repl_send_wal(&c->out, tli, &m, p->wal_buf.len >= REPL_COMPRESS_MIN_BYTES) < 0)
            rd_panic("out of memory");
        s->repl_bytes_sent += c->out.len - before;
        p->sent_lsn = next;
        p->told_flush_lsn = flushed;
        p->last_send_ms = rd_now_ms();
    }
    /* CR2: a replica applies only what the primary has flushed; tell it as soon as our flush
     * covers more of what it received (a 40-byte frame per group commit). */
    uint64_t flushed_now = wal_flushed_lsn(s->wal);
    if (!c->closing && p->state == PEER_STREAMING && flushed_now > p->told_flush_lsn &&
        p->sent_lsn > p->told_flush_lsn) {
        struct repl_keepalive k = {.primary_flush_lsn = flushed_now, .send_time_us = rd_wall_us(),
                                   .reply_requested = 0};
        if (repl_send_keepalive(&c->out, tli, &k) < 0)
            rd_panic("out of memory");
        p->told_flush_lsn = flushed_now;
    }
    uint64_t now = rd_now_ms();
    if (!c->closing && now - p->last_send_ms >= REPL_KEEPALIVE_MS && p->state == PEER_STREAMING) {
        struct repl_keepalive k = {.primary_flush_lsn = flushed_now, .send_time_us = rd_wall_us(),
                                   .reply_requested = 1};
        if (repl_send_keepalive(&c->out, tli, &k) < 0)
            rd_panic("out of memory");
        p->told_flush_lsn = RD_MAX(p->told_flush_lsn, flushed_now);
        p->last_send_ms = now;
    }
    if (!c->closing && s->cfg.replica_timeout_ms && now - p->last_status_ms > s->cfg.replica_timeout_ms) {
        rd_warn("replica \"%s\" (%s) sent nothing for %" PRIu64 " ms: closing its connection", p->name, c->addr,
                now - p->last_status_ms);
        conn_close(s, c);
    }
}

static void peer_free(struct server *s, struct repl_peer *p)
{
    if (p->slot)
        p->slot->active = 0;
    if (p->cur)
        wal_sender_close(p->cur);
    if (p->data_fd >= 0)
        close(p->data_fd);
    free(p->page_buf);
    rd_buf_free(&p->scratch);
    rd_buf_free(&p->wal_buf);
    rd_info("replica \"%s\" (%s) disconnected", p->name, p->c->addr);
    free(p);
    s->npeers--;
    server_update_release(s);
}

/* Keeps the WAL registered replicas still need, up to wal_keep_bytes. */
static void slots_update_keep(struct server *s)
{
    if (s->wal == NULL || s->role != SERVER_ROLE_PRIMARY)
        return;
    uint64_t insert = wal_insert_lsn(s->wal), keep = insert;
    for (size_t i = 0; i < SERVER_MAX_SLOTS; i++) {
        struct repl_slot *sl = &s->slots[i];
        if (!sl->in_use)
            continue;
        if (sl->restart_lsn > insert) /* the replica holds WAL we lost in a crash (CR3/CR4): keep from here */
            sl->restart_lsn = insert;
        if (s->cfg.wal_keep_bytes && insert - sl->restart_lsn > s->cfg.wal_keep_bytes) {
            rd_warn("replica \"%s\" is more than %" PRIu64 " MB behind (--wal-keep-mb): its WAL is no longer kept; "
                    "it must re-clone", sl->name, s->cfg.wal_keep_bytes >> 20);
            sl->in_use = 0;
            repl_slots_save(s);
            continue;
        }
        keep = RD_MIN(keep, sl->restart_lsn);
    }
    wal_set_keep_lsn(s->wal, keep);
}

/* ================================================================ commit levels, WAIT */

static int name_listed(const struct server *s, const char *name)
{
    for (unsigned i = 0; i < s->cfg.sync_nnames; i++)
        if (strcmp(s->cfg.sync_names[i], name) == 0 || strcmp(s->cfg.sync_names[i], "*") == 0)
            return (int)i;
    return -1;
}

static uint64_t peer_level_lsn(const struct server *s, const struct repl_peer *p)
{
    switch (s->cfg.commit) {
    case SERVER_COMMIT_REMOTE_WRITE: return p->write_lsn;
    case SERVER_COMMIT_REMOTE_APPLY: return p->apply_lsn;
    default: return p->flush_lsn;
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

void server_update_release(struct server *s)
{
    /* A fenced node releases nothing more (T3, M4): replies still waiting end with
     * the commit-timeout error; so does a primary without a lease (LS2). */
    if (s->fenced || (server_lease_required(s) && !server_lease_ok(s, NULL)))
        return;
    uint64_t rel = s->durable_lsn;
    if (s->role == SERVER_ROLE_PRIMARY && s->cfg.commit >= SERVER_COMMIT_REMOTE_WRITE && s->cfg.sync_num > 0) {
        uint64_t lsns[SERVER_SYNC_MAX_NAMES];
        int prio[SERVER_SYNC_MAX_NAMES];
        unsigned n = 0;
        for (struct conn *c = s->conns; c && n < SERVER_SYNC_MAX_NAMES; c = c->next) {
            if (c->kind != CONN_WALSENDER || c->peer == NULL || c->closing || c->peer->state != PEER_STREAMING)
                continue;
            /* T5: only acknowledgements given under this primary's own term count */
            rd_assert(c->peer->term == s->term);
            int pr = name_listed(s, c->peer->name);
            if (pr < 0)
                continue;
            lsns[n] = peer_level_lsn(s, c->peer);
            prio[n] = pr;
            n++;
        }
        uint64_t sync = 0;
        if (n >= s->cfg.sync_num) {
            if (s->cfg.sync_method == SERVER_SYNC_ANY) {
                qsort(lsns, n, sizeof(lsns[0]), cmp_desc);
                sync = lsns[s->cfg.sync_num - 1];
            } else { /* FIRST k: the k connected ones listed first */
                sync = UINT64_MAX;
                for (unsigned taken = 0; taken < s->cfg.sync_num; taken++) {
                    unsigned best = 0;
                    for (unsigned i = 1; i < n; i++)
                        if (prio[i] < prio[best])
                            best = i;
                    sync = RD_MIN(sync, lsns[best]);
                    prio[best] = 1 << 30;
                }
            }
        }
        rel = RD_MIN(rel, sync);
    }
    if (rel > s->release_lsn)
        s->release_lsn = rel;
}

size_t repl_count_acked(const struct server *s, uint64_t lsn)
{
    size_t n = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_WALSENDER && c->peer && !c->closing && c->peer->state == PEER_STREAMING &&
            c->peer->flush_lsn >= lsn)
            n++;
    return n;
}

static void waits_check(struct server *s)
{
    uint64_t now = rd_now_ms();
    for (struct conn *c = s->conns; c && s->nwaiting > 0; c = c->next) {
        if (!c->wait_active || c == s->promote_waiter)
            continue;
        size_t n = repl_count_acked(s, c->last_write_lsn);
        if ((int64_t)n >= c->wait_num || now >= c->wait_deadline_ms || c->closing) {
            c->wait_active = 0;
            s->nwaiting--;
            if (resp_int(&c->out, (int64_t)n) < 0)
                rd_panic("out of memory");
            conn_reply_done(s, c, 0);
            if (c->in.len > 0)
                conn_mark_ready(s, c);
        }
    }
}

/* ================================================================ replica side */

static void up_schedule_reconnect(struct server *s, uint64_t delay_ms)
{
    s->up.state = UP_DISCONNECTED;
    s->up.next_attempt_ms = rd_now_ms() + delay_ms;
}

static void up_on_timeout(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct upstream *u = (struct upstream *)((char *)io - offsetof(struct upstream, timeout_io));
    (void)cqe;
    u->timeout_in_flight = 0;
}

static void up_send_handshake(struct server *s)
{
    struct upstream *u = &s->up;
    char cluster[32], tli[16], start[32];
    int clone = s->wal == NULL;
    if (clone) {
        snprintf(cluster, sizeof(cluster), "0");
        snprintf(tli, sizeof(tli), "0");
        snprintf(start, sizeof(start), "0");
    } else {
        struct wal_stats ws;
        wal_get_stats(s->wal, &ws);
        snprintf(cluster, sizeof(cluster), "%016" PRIX64, ws.system_id);
        snprintf(tli, sizeof(tli), "%u", wal_timeline(s->wal));
        snprintf(start, sizeof(start), "%" PRIu64, wal_insert_lsn(s->wal));
    }
    char term[24], lport[16];
    snprintf(term, sizeof(term), "%" PRIu64, s->term);
    snprintf(lport, sizeof(lport), "%d", s->cfg.port);
    const char *argv[] = {"REDOUBT.REPLICATE", cluster, s->cfg.name, tli, start, clone ? "CLONE" : "STREAM",
                          "TERM", term, "LISTEN-PORT", lport};
    if (resp_command_str(&u->conn->out, 10, argv) < 0)
        rd_panic("out of memory");
    u->state = UP_HANDSHAKE;
    u->last_msg_ms = rd_now_ms();
}

static void up_on_connect(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct upstream *u = (struct upstream *)((char *)io - offsetof(struct upstream, connect_io));
    struct server *s = (struct server *)((char *)u - offsetof(struct server, up));
    u->connect_in_flight = 0;
    if (u->state != UP_CONNECTING) { /* promoted or re-pointed meanwhile */
        close(u->fd);
        u->fd = -1;
        return;
    }
    if (cqe->res < 0) {
        const char *why = cqe->res == -ECANCELED ? "timed out" : strerror(-cqe->res);
        if (strcmp(u->last_error, why) != 0)
            rd_warn("could not connect to the primary %s:%d: %s (retrying every %u ms)", u->host, u->port, why,
                    REPL_RECONNECT_MS);
        snprintf(u->last_error, sizeof(u->last_error), "%s", why);
        close(u->fd);
        u->fd = -1;
        up_schedule_reconnect(s, REPL_RECONNECT_MS);
        return;
    }
    char aerr[256];
    if (s->auth.enabled && rd_auth_client_resp(&s->auth, u->fd, 1000, aerr, sizeof(aerr)) < 0) {
        /* Peer authentication (common/auth.h): a primary that cannot prove the
         * cluster secret is never followed. Blocking, bounded by 1 s. */
        if (strcmp(u->last_error, aerr) != 0)
            rd_warn("primary %s:%d failed peer authentication: %s (retrying)", u->host, u->port, aerr);
        snprintf(u->last_error, sizeof(u->last_error), "%s", aerr);
        close(u->fd);
        u->fd = -1;
        up_schedule_reconnect(s, REPL_RECONNECT_MS);
        return;
    }
    u->conn = conn_new(s, u->fd, CONN_UPSTREAM);
    u->conn->peer_authed = 1;
    snprintf(u->conn->addr, sizeof(u->conn->addr), "%s:%d", u->host, u->port);
    u->fd = -1;
    u->last_error[0] = 0;
    rd_info("connected to the primary %s:%d", u->host, u->port);
    up_send_handshake(s);
}

static void up_connect(struct server *s)
{
    struct upstream *u = &s->up;
    static struct sockaddr_storage addr;
    static socklen_t addr_len;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        rd_warn("could not resolve the primary's host \"%s\": %s", u->host, gai_strerror(rc));
        up_schedule_reconnect(s, 1000);
        return;
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    u->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (u->fd < 0) {
        rd_warn("socket failed: %s", strerror(errno));
        up_schedule_reconnect(s, 1000);
        return;
    }
    u->connect_io.on_cqe = up_on_connect;
    u->timeout_io.on_cqe = up_on_timeout;
    u->connect_timeout.tv_sec = 2;
    u->connect_timeout.tv_nsec = 0;
    struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &u->connect_io);
    io_uring_prep_connect(sqe, u->fd, (struct sockaddr *)&addr, addr_len);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = rd_loop_sqe(&s->loop, &u->timeout_io);
    io_uring_prep_link_timeout(sqe, &u->connect_timeout, 0);
    u->connect_in_flight = u->timeout_in_flight = 1;
    u->state = UP_CONNECTING;
}

void repl_start_replica(struct server *s)
{
    struct upstream *u = &s->up;
    const char *colon = strrchr(s->cfg.primary_addr, ':');
    rd_assert(colon != NULL); /* checked in main */
    size_t hl = RD_MIN((size_t)(colon - s->cfg.primary_addr), sizeof(u->host) - 1);
    memcpy(u->host, s->cfg.primary_addr, hl);
    u->host[hl] = 0;
    u->port = atoi(colon + 1);
    u->fd = -1;
    u->clone_fd = -1;
    if (s->wal != NULL) {
        u->apply_lsn = wal_insert_lsn(s->wal); /* recovery replayed up to the last commit */
        u->consistent_lsn = 0;
    }
    up_schedule_reconnect(s, 0);
}

int repl_replica_readable(const struct server *s)
{
    return s->engine != NULL && s->up.apply_lsn >= s->up.consistent_lsn;
}

static void up_fail(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void up_fail(struct server *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, s->up.last_error) != 0) /* once, not at every reconnect */
        rd_error("replication from %s:%d: %s", s->up.host, s->up.port, msg);
    snprintf(s->up.last_error, sizeof(s->up.last_error), "%s", msg);
    if (s->up.conn)
        conn_close(s, s->up.conn);
}

/* Received records not applied yet: replica/proto.h struct repl_pending. */
static void up_pending_push(struct upstream *u, uint64_t end, uint8_t type, uint32_t page, const void *body,
                            uint32_t len)
{
    struct repl_pending e = {.end_lsn = end, .type = type, .page_id = page, .body_len = len, .body = body};
    if (repl_pending_append(&u->pending, &e) < 0)
        rd_panic("out of memory for replay");
}

/* The entry at off of pending, which this replica wrote itself (a bad one is a bug). */
static size_t up_pending_at(const struct upstream *u, size_t off, struct repl_pending *e)
{
    int used = repl_pending_read(u->pending.data + off, u->pending.len - off, e);
    rd_assert(used > 0);
    return off + (size_t)used;
}

/* Applies one whole transaction (the page records in [from, to) of pending). */
static void up_apply_range(struct server *s, size_t from, size_t to)
{
    struct upstream *u = &s->up;
    for (size_t off = from; off < to;) {
        struct repl_pending e;
        off = up_pending_at(u, off, &e);
        int rc = engine_redo(s->engine, e.page_id, e.type, e.body, e.body_len, e.end_lsn);
        if (rc < 0)
            rd_panic("replay of the record ending at %" PRIX64 "/%" PRIX64 " (page %u) failed: %s",
                     e.end_lsn >> 32, e.end_lsn & 0xffffffffu, e.page_id, rd_strerror(rc));
    }
    if (to > from) {
        int rc = engine_reload_meta(s->engine);
        if (rc < 0)
            rd_panic("could not reload the meta page after replay: %s", rd_strerror(rc));
    }
}

/* CR2: applies every whole transaction whose COMMIT (or CHECKPOINT / TIMELINE
 * record) ends at or below limit_lsn — the primary's flush LSN, so a hot
 * standby never shows a transaction the primary could still lose in a crash;
 * UINT64_MAX at promotion. Each transaction is applied in this one call. */
static void up_apply_ready(struct server *s, uint64_t limit_lsn)
{
    struct upstream *u = &s->up;
    size_t txn_start = 0, off = 0;
    while (off < u->pending.len) {
        struct repl_pending e;
        size_t next = up_pending_at(u, off, &e);
        uint64_t end = e.end_lsn;
        uint8_t type = e.type;
        if (type != WAL_REC_COMMIT && type != WAL_REC_CHECKPOINT && type != WAL_REC_TIMELINE) {
            off = next;
            continue;
        }
        if (end > limit_lsn)
            break;
        up_apply_range(s, txn_start, off);
        const uint8_t *body = e.body;
        rd_assert(e.body_len >= (type == WAL_REC_CHECKPOINT ? 24u : 8u)); /* markers as pushed by up_on_wal */
        u->apply_lsn = end;
        u->apply_echo_us = rd_get_u64le(body);
        if (type == WAL_REC_CHECKPOINT) {
            u->last_ckpt_lsn = rd_get_u64le(body + 8);
            u->last_ckpt_redo = rd_get_u64le(body + 16);
            if (rd_now_ms() - u->last_restartpoint_ms >= REPL_RESTARTPOINT_MS) {
                int rc = wal_restartpoint(s->wal, s->engine, u->last_ckpt_lsn, u->last_ckpt_redo);
                if (rc < 0)
                    rd_panic("restart point failed: %s", rd_strerror(rc));
                u->last_restartpoint_ms = rd_now_ms();
            }
        }
        off = txn_start = next;
    }
    if (txn_start > 0) {
        memmove(u->pending.data, u->pending.data + txn_start, u->pending.len - txn_start);
        u->pending.len -= txn_start;
    }
}

static void up_on_wal(struct server *s, const struct repl_wal *m)
{
    struct upstream *u = &s->up;
    uint64_t expected = m->start_lsn;
    size_t off = 0;
    while (off < m->records_len) {
        uint64_t end = 0;
        size_t used = 0;
        int rc = wal_append_encoded(s->wal, m->records + off, m->records_len - off, expected, &end, &used);
        if (rc < 0 || used == 0) {
            char l1[32];
            lsn_str(expected, l1, sizeof(l1));
            up_fail(s, "invalid WAL record from the primary at %s: %s; reconnecting", l1, rd_strerror(rc));
            return;
        }
        struct wal_record r;
        if (wal_record_decode(m->records + off, used, &r) < 0)
            rd_panic("a record accepted by the WAL failed to decode");
        uint8_t marker[24];
        rd_put_u64le(marker, m->send_time_us);
        if (r.type == WAL_REC_PAGE_DELTA || r.type == WAL_REC_PAGE_IMAGE) {
            up_pending_push(u, end, r.type, r.page_id, r.body, r.body_len);
        } else if (r.type == WAL_REC_COMMIT) {
            up_pending_push(u, end, r.type, 0, marker, 8);
        } else if (r.type == WAL_REC_CHECKPOINT) {
            rd_put_u64le(marker + 8, expected);
            rd_put_u64le(marker + 16, r.body_len >= 8 ? rd_get_u64le(r.body) : expected);
            up_pending_push(u, end, r.type, 0, marker, 24);
        } else if (r.type == WAL_REC_TIMELINE) {
            up_pending_push(u, end, r.type, 0, marker, 8);
            uint32_t tli = r.body_len >= 4 ? rd_get_u32le(r.body) : 0;
            rc = wal_follow_timeline(s->wal, tli, expected);
            if (rc < 0)
                rd_panic("could not follow the primary to timeline %u: %s", tli, rd_strerror(rc));
            rd_info("following the primary to timeline %u", tli);
        }
        expected = end;
        off += used;
    }
    if (expected != m->end_lsn) {
        up_fail(s, "WAL message ended at %" PRIX64 " but said %" PRIX64 "; reconnecting", expected, m->end_lsn);
        return;
    }
    if (u->echo_n == UPSTREAM_ECHO_RING) { /* drop the oldest */
        u->echo_head = (u->echo_head + 1) % UPSTREAM_ECHO_RING;
        u->echo_n--;
    }
    size_t slot = (u->echo_head + u->echo_n) % UPSTREAM_ECHO_RING;
    u->echo[slot].end_lsn = m->end_lsn;
    u->echo[slot].send_us = m->send_time_us;
    u->echo_n++;
    u->primary_flush_lsn = RD_MAX(u->primary_flush_lsn, m->primary_flush_lsn);
    u->primary_send_us = m->send_time_us;
    up_apply_ready(s, u->primary_flush_lsn);
}

static int up_wipe_dir(struct server *s)
{
    if (s->engine) {
        engine_close(s->engine);
        s->engine = NULL;
    }
    if (s->wal) {
        wal_close(s->wal);
        s->wal = NULL;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/wal", s->cfg.dir);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char f[4400];
            snprintf(f, sizeof(f), "%s/%s", path, de->d_name);
            if (unlink(f) < 0)
                rd_warn("could not remove \"%s\": %s", f, strerror(errno));
        }
        closedir(d);
    }
    const char *files[] = {"control", "control.tmp", "data.rdb", "slots", "slots.tmp"};
    for (size_t i = 0; i < RD_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof(path), "%s/%s", s->cfg.dir, files[i]);
        if (unlink(path) < 0 && errno != ENOENT)
            rd_warn("could not remove \"%s\": %s", path, strerror(errno));
    }
    rd_buf_reset(&s->up.pending);
    s->up.apply_lsn = s->up.consistent_lsn = 0;
    s->up.echo_n = 0;
    return 0;
}

static void up_on_frame(struct server *s, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct upstream *u = &s->up;
    int rc = 0;
    u->last_msg_ms = rd_now_ms();
    u->msgs_received++;
    switch (h->type) {
    case REPL_HELLO: {
        struct repl_hello m;
        if ((rc = repl_parse_hello(p, n, &m)) < 0)
            break;
        if (s->wal == NULL || u->state != UP_HANDSHAKE) {
            up_fail(s, "unexpected HELLO");
            return;
        }
        if (m.term < s->term) { /* T2: a replaced primary is never followed again */
            up_fail(s, "the primary is at term %u, older than this replica's %" PRIu64 ": it has been replaced; "
                    "not following it (waiting to be re-pointed)", m.term, s->term);
            return;
        }
        if (m.term > s->term)
            term_save(s, m.term, "the primary's, from its handshake");
        struct wal_stats ws;
        wal_get_stats(s->wal, &ws);
        if (m.system_id != ws.system_id) {
            up_fail(s, "the primary belongs to another cluster (%016" PRIX64 " vs ours %016" PRIX64 ")", m.system_id,
                    ws.system_id);
            return;
        }
        if (m.start_lsn < wal_insert_lsn(s->wal)) { /* CR4: the primary's history forks below our end */
            char f[32], a[32];
            lsn_str(m.start_lsn, f, sizeof(f));
            lsn_str(u->apply_lsn, a, sizeof(a));
            if (u->apply_lsn > m.start_lsn) {
                rd_warn("re-cloning: this replica applied WAL up to %s but the primary's timeline %u forks at %s",
                        a, m.timeline, f);
                u->reclone_requested = 1;
                up_fail(s, "history diverged at %s (applied up to %s): re-cloning", f, a);
                return;
            }
            if (wal_flush_in_flight(s->wal)) {
                up_fail(s, "the primary's history forks at %s: waiting for a WAL write to land before cutting", f);
                return;
            }
            uint64_t cut_bytes = wal_insert_lsn(s->wal) - m.start_lsn;
            int trc = wal_truncate(s->wal, m.start_lsn);
            if (trc < 0) {
                u->reclone_requested = 1;
                up_fail(s, "could not cut the log at %s (%s): re-cloning", f, rd_strerror(trc));
                return;
            }
            size_t keep = 0; /* pending entries (whole transactions) that end at or before the cut */
            struct repl_pending e;
            for (size_t next; keep < u->pending.len; keep = next) {
                next = up_pending_at(u, keep, &e);
                if (e.end_lsn > m.start_lsn)
                    break;
            }
            u->pending.len = keep;
            rd_info("cut %" PRIu64 " bytes of received WAL past %s, where the primary's timeline %u forks "
                    "(applied up to %s: nothing to undo)",
                    cut_bytes, f, m.timeline, a);
        }
        u->state = UP_STREAMING;
        u->primary_flush_lsn = m.primary_flush_lsn;
        up_apply_ready(s, u->primary_flush_lsn);
        char l1[32];
        lsn_str(m.start_lsn, l1, sizeof(l1));
        rd_info("streaming from the primary %s:%d at %s on timeline %u", u->host, u->port, l1, m.timeline);
        return;
    }
    case REPL_BACKUP_BEGIN: {
        struct repl_backup_begin m;
        if ((rc = repl_parse_backup_begin(p, n, &m)) < 0)
            break;
        if (s->wal != NULL || u->state != UP_HANDSHAKE) {
            up_fail(s, "unexpected BACKUP_BEGIN");
            return;
        }
        if (m.term < s->term) { /* T2: a replaced primary is never followed again */
            up_fail(s, "the primary is at term %u, older than this replica's %" PRIu64 ": it has been replaced; "
                    "not following it (waiting to be re-pointed)", m.term, s->term);
            return;
        }
        if (m.term > s->term)
            term_save(s, m.term, "the primary's, from its handshake");
        rc = wal_init_from_backup(s->cfg.dir, m.system_id, m.timeline, m.redo_lsn, m.checkpoint_lsn,
                                  m.segment_size_bytes);
        if (rc < 0) {
            up_fail(s, "could not initialise the WAL from the base backup: %s", rd_strerror(rc));
            return;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/data.rdb", s->cfg.dir);
        u->clone_fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
        if (u->clone_fd < 0) {
            up_fail(s, "could not create \"%s\": %s", path, strerror(errno));
            return;
        }
        u->clone_npages = m.npages;
        u->clone_pages_done = 0;
        u->state = UP_CLONING;
        rd_info("cloning from the primary: %u pages, WAL from %" PRIX64 "/%" PRIX64, m.npages, m.redo_lsn >> 32,
                m.redo_lsn & 0xffffffffu);
        return;
    }
    case REPL_BACKUP_PAGES: {
        struct repl_backup_pages m;
        if ((rc = repl_parse_backup_pages(p, n, &m)) < 0)
            break;
        if (u->state != UP_CLONING || m.first_page != u->clone_pages_done ||
            m.first_page + m.count > u->clone_npages) {
            up_fail(s, "unexpected BACKUP_PAGES (pages %u..%u)", m.first_page, m.first_page + m.count);
            return;
        }
        size_t len = (size_t)m.count * ENGINE_PAGE_SIZE;
        for (size_t done = 0; done < len;) {
            ssize_t w = pwrite(u->clone_fd, m.pages + done, len - done,
                               (off_t)m.first_page * ENGINE_PAGE_SIZE + (off_t)done);
            if (w <= 0) {
                up_fail(s, "writing the base backup failed: %s", w < 0 ? strerror(errno) : "no progress");
                return;
            }
            done += (size_t)w;
        }
        u->clone_pages_done += m.count;
        return;
    }
    case REPL_BACKUP_END: {
        uint64_t consistent;
        if ((rc = repl_parse_backup_end(p, n, &consistent)) < 0)
            break;
        if (u->state != UP_CLONING || u->clone_pages_done != u->clone_npages) {
            up_fail(s, "unexpected BACKUP_END");
            return;
        }
        if (fdatasync(u->clone_fd) < 0)
            rd_panic("could not fdatasync the cloned data file: %s", strerror(errno));
        if (close(u->clone_fd) < 0)
            rd_panic("could not close the cloned data file: %s", strerror(errno));
        u->clone_fd = -1;
        if (server_open_storage(s) < 0)
            rd_panic("could not open the cloned data directory \"%s\"", s->cfg.dir);
        u->apply_lsn = wal_insert_lsn(s->wal);
        u->consistent_lsn = consistent;
        u->state = UP_STREAMING;
        rd_info("base backup received (%u pages); serving reads once replay reaches %" PRIX64 "/%" PRIX64,
                u->clone_npages, consistent >> 32, consistent & 0xffffffffu);
        return;
    }
    case REPL_WAL: {
        struct repl_wal m;
        if ((rc = repl_parse_wal(p, n, &m)) < 0)
            break;
        if (u->state != UP_STREAMING || s->wal == NULL) {
            up_fail(s, "WAL before the handshake finished");
            return;
        }
        u->bytes_received += n;
        up_on_wal(s, &m);
        return;
    }
    case REPL_KEEPALIVE: {
        struct repl_keepalive m;
        if ((rc = repl_parse_keepalive(p, n, &m)) < 0)
            break;
        u->primary_flush_lsn = RD_MAX(u->primary_flush_lsn, m.primary_flush_lsn);
        u->primary_send_us = m.send_time_us;
        up_apply_ready(s, u->primary_flush_lsn);
        if (m.reply_requested)
            u->status_sent_ms = 0;
        return;
    }
    case REPL_ERROR: {
        char msg[512];
        repl_parse_error(p, n, msg, sizeof(msg));
        if (strcmp(msg, u->last_error) != 0) /* once, not at every reconnect */
            rd_error("the primary %s:%d refused replication: %s", u->host, u->port, msg);
        snprintf(u->last_error, sizeof(u->last_error), "%s", msg);
        if (strstr(msg, "re-clone") != NULL && u->state != UP_CLONING) {
            rd_warn("re-cloning from the primary: %s", msg);
            u->reclone_requested = 1;
        }
        if (u->conn)
            conn_close(s, u->conn);
        return;
    }
    default:
        up_fail(s, "unknown message type %u from the primary", h->type);
        return;
    }
    up_fail(s, "malformed %s message from the primary", repl_msg_name(h->type));
}

static void up_send_status(struct server *s)
{
    struct upstream *u = &s->up;
    if (u->conn == NULL || u->conn->closing || u->state != UP_STREAMING || s->wal == NULL)
        return;
    uint64_t w = wal_written_lsn(s->wal), f = wal_flushed_lsn(s->wal), a = u->apply_lsn;
    uint64_t now = rd_now_ms();
    if (w == u->sent_write && f == u->sent_flush && a == u->sent_apply && now - u->status_sent_ms < REPL_STATUS_MS)
        return;
    /* echo the primary's send time of the newest message each LSN covers */
    size_t drop = 0;
    for (size_t i = 0; i < u->echo_n; i++) {
        size_t k = (u->echo_head + i) % UPSTREAM_ECHO_RING;
        if (u->echo[k].end_lsn <= w)
            u->write_echo_us = u->echo[k].send_us;
        if (u->echo[k].end_lsn <= f)
            u->flush_echo_us = u->echo[k].send_us;
        if (u->echo[k].end_lsn <= RD_MIN(w, f))
            drop = i + 1;
    }
    u->echo_head = (u->echo_head + drop) % UPSTREAM_ECHO_RING;
    u->echo_n -= drop;
    struct repl_status m = {.write_lsn = w, .flush_lsn = f, .apply_lsn = a,
                            .write_echo_us = w > u->sent_write ? u->write_echo_us : 0,
                            .flush_echo_us = f > u->sent_flush ? u->flush_echo_us : 0,
                            .apply_echo_us = a > u->sent_apply ? u->apply_echo_us : 0,
                            .reply_time_us = rd_wall_us()};
    if (repl_send_status(&u->conn->out, tli_of(s), &m) < 0)
        rd_panic("out of memory");
    u->sent_write = w;
    u->sent_flush = f;
    u->sent_apply = a;
    u->status_sent_ms = now;
}

/* ================================================================ shared */

void repl_process_input(struct server *s, struct conn *c)
{
    struct rd_buf *scratch = c->kind == CONN_WALSENDER ? &c->peer->scratch : &s->up.pending_scratch;
    size_t off = 0;
    while (!c->closing && off < c->in.len) {
        struct frame_hdr h;
        const uint8_t *payload;
        size_t plen;
        const char *why = NULL;
        int rc = frame_decode(c->in.data + off, c->in.len - off, &h, scratch, &payload, &plen, &why);
        if (rc == 0)
            break;
        if (rc < 0) {
            if (c->kind == CONN_WALSENDER) {
                rd_warn("replica \"%s\" (%s) sent a corrupt frame: %s; closing its connection", c->peer->name,
                        c->addr, why ? why : rd_strerror(rc));
                conn_close(s, c);
            } else {
                up_fail(s, "corrupt frame from the primary: %s; reconnecting", why ? why : rd_strerror(rc));
            }
            return;
        }
        off += (size_t)rc;
        if (c->kind == CONN_WALSENDER) {
            struct repl_peer *p = c->peer;
            if (h.type == REPL_STATUS) {
                struct repl_status m;
                if (repl_parse_status(payload, plen, &m) < 0) {
                    rd_warn("replica \"%s\" sent a malformed STATUS; closing its connection", p->name);
                    conn_close(s, c);
                    return;
                }
                peer_on_status(s, p, &m);
            } else if (h.type == REPL_ERROR) {
                char msg[512];
                repl_parse_error(payload, plen, msg, sizeof(msg));
                rd_warn("replica \"%s\" reports: %s", p->name, msg);
                conn_close(s, c);
                return;
            } else {
                rd_warn("replica \"%s\" sent an unexpected %s message; closing its connection", p->name,
                        repl_msg_name(h.type));
                conn_close(s, c);
                return;
            }
        } else {
            up_on_frame(s, &h, payload, plen);
            if (s->up.conn != c) /* closed inside */
                return;
        }
    }
    rd_buf_consume(&c->in, off);
}

void repl_on_conn_closed(struct server *s, struct conn *c)
{
    if (c->kind == CONN_WALSENDER && c->peer) {
        peer_free(s, c->peer);
        c->peer = NULL;
        return;
    }
    if (c->kind == CONN_UPSTREAM && s->up.conn == c) {
        struct upstream *u = &s->up;
        u->conn = NULL;
        if (u->clone_fd >= 0) { /* a half-received base backup is useless */
            close(u->clone_fd);
            u->clone_fd = -1;
            up_wipe_dir(s);
            rd_warn("base backup interrupted: the clone starts over");
        }
        if (u->state != UP_IDLE) {
            rd_warn("lost the connection to the primary %s:%d; reconnecting", u->host, u->port);
            up_schedule_reconnect(s, REPL_RECONNECT_MS);
        }
    }
}

void repl_tick(struct server *s)
{
    if (s->role == SERVER_ROLE_PRIMARY) {
        for (struct conn *c = s->conns, *next; c; c = next) {
            next = c->next;
            if (c->kind == CONN_WALSENDER && c->peer && !c->closing)
                peer_pump(s, c->peer);
        }
        static uint64_t last_keep_ms;
        if (rd_now_ms() - last_keep_ms >= 1000) {
            slots_update_keep(s);
            last_keep_ms = rd_now_ms();
        }
    }
    if (s->promote_pending && !wal_flush_in_flight(s->wal))
        promote_finish(s);
    if (s->nwaiting > 0)
        waits_check(s);
    if (s->role != SERVER_ROLE_REPLICA)
        return;
    struct upstream *u = &s->up;
    if (u->reclone_requested && u->conn == NULL && !u->connect_in_flight) {
        u->reclone_requested = 0;
        up_wipe_dir(s);
        up_schedule_reconnect(s, 0);
    }
    if (u->state == UP_DISCONNECTED && rd_now_ms() >= u->next_attempt_ms && !u->connect_in_flight &&
        !u->timeout_in_flight)
        up_connect(s);
    if (u->conn && !u->conn->closing && s->cfg.replica_timeout_ms &&
        rd_now_ms() - u->last_msg_ms > s->cfg.replica_timeout_ms) {
        up_fail(s, "no message from the primary for %" PRIu64 " ms; reconnecting", rd_now_ms() - u->last_msg_ms);
        return;
    }
    up_send_status(s);
}

/* ================================================================ promotion, re-pointing */

/* Promotion runs in two steps because an asynchronous WAL write may still be
 * in flight: it must land before the log is cut and a TIMELINE record is
 * written at the same place. repl_promote stops replication; the finish step
 * runs once no flush is in flight (at once, or from repl_tick). */
static int promote_finish(struct server *s)
{
    struct upstream *u = &s->up;
    /* Everything received and whole is applied (the primary is gone: what it had not
     * flushed yet is ours to keep); records of a transaction whose COMMIT never
     * arrived are dropped. */
    up_apply_ready(s, UINT64_MAX);
    rd_buf_reset(&u->pending);
    int rc;
    if (wal_insert_lsn(s->wal) > u->apply_lsn && (rc = wal_truncate(s->wal, u->apply_lsn)) < 0)
        rd_panic("promotion: could not cut the log at the last commit: %s", rd_strerror(rc));
    if ((rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal))) < 0)
        rd_panic("promotion: WAL flush failed: %s", rd_strerror(rc));
    uint64_t switch_lsn;
    /* W15: the new timeline is at least the promotion's term (unique per failover: T1-T6), so a
     * replica that never heard of another node's promotion cannot reuse its timeline number. */
    uint32_t min_tli = s->term <= UINT32_MAX ? (uint32_t)s->term : 0;
    if ((rc = wal_switch_timeline_min(s->wal, min_tli, &switch_lsn)) < 0)
        rd_panic("promotion: could not switch timelines: %s", rd_strerror(rc));
    s->role = SERVER_ROLE_PRIMARY;
    rd_log_set_role("primary");
    /* S10: no checkpoint here (it flushed every dirty page: 70-140 ms under load, all of
     * it client-visible outage); the FPI threshold goes to the last restart point's redo
     * LSN instead, as PostgreSQL's fast promotion does (wal_promote_fast). */
    wal_promote_fast(s->wal, s->engine);
    s->durable_lsn = wal_flushed_lsn(s->wal);
    s->last_commit_lsn = s->durable_lsn;
    s->release_lsn = s->durable_lsn;
    s->promote_pending = 0;
    char l1[32];
    lsn_str(switch_lsn, l1, sizeof(l1));
    rd_info("promoted: primary on timeline %u (switched at %s); accepting writes", wal_timeline(s->wal), l1);
    if (s->promote_waiter) {
        struct conn *c = s->promote_waiter;
        s->promote_waiter = NULL;
        c->wait_active = 0;
        s->nwaiting--;
        if (resp_simple(&c->out, "OK") < 0)
            rd_panic("out of memory");
        conn_reply_done(s, c, 0);
        if (c->in.len > 0)
            conn_mark_ready(s, c);
    }
    return 0;
}

int repl_promote(struct server *s, struct conn *c, uint64_t term, char *err, size_t err_len)
{
    struct upstream *u = &s->up;
    if (s->role != SERVER_ROLE_REPLICA) {
        snprintf(err, err_len, "ERR this node is already a primary");
        return -1;
    }
    if (s->promote_pending) {
        snprintf(err, err_len, "ERR a promotion is already in progress");
        return -1;
    }
    if (s->engine == NULL || u->state == UP_CLONING) {
        snprintf(err, err_len, "ERR cannot promote: the base backup has not finished");
        return -1;
    }
    if (u->apply_lsn < u->consistent_lsn) {
        snprintf(err, err_len, "ERR cannot promote: replay has not reached the consistent point yet");
        return -1;
    }
    if (term == 0) { /* manual (REPLICAOF NO ONE): a term of its own, fencing nobody (T6) */
        if (s->term >= REPL_TERM_MAX) {
            snprintf(err, err_len, "ERR the term space is exhausted");
            return -1;
        }
        term_save(s, s->term + 1, "manual promotion (REPLICAOF NO ONE): no quorum was fenced");
    } else {
        rd_assert(term == s->term);
    }
    rd_info("promotion requested: stopping replication from %s:%d", u->host, u->port);
    u->state = UP_IDLE;
    if (u->conn)
        conn_close(s, u->conn);
    u->conn = NULL;
    s->promote_pending = 1;
    if (!wal_flush_in_flight(s->wal)) {
        promote_finish(s);
        return 0;
    }
    /* The client waits (like WAIT) until repl_tick finishes the promotion. */
    s->promote_waiter = c;
    c->wait_active = 1;
    c->wait_num = -1;
    c->wait_deadline_ms = UINT64_MAX;
    s->nwaiting++;
    return 1;
}

int repl_repoint(struct server *s, const char *host, int port, char *err, size_t err_len)
{
    struct upstream *u = &s->up;
    if (s->role == SERVER_ROLE_PRIMARY && s->fenced) {
        /* CR6: a fenced primary acknowledges nothing more, so rejoining loses
         * nothing it did not already lose: restart in place as a replica. */
        snprintf(server_rejoin_primary, sizeof(server_rejoin_primary), "%s:%d", host, port);
        s->shutdown_requested = 1;
        rd_warn("REPLICAOF %s %d on a fenced primary (%s): shutting down to restart as its replica "
                "(same process, --role replica --primary %s)",
                host, port, s->fenced_by, server_rejoin_primary);
        return 0;
    }
    if (s->role != SERVER_ROLE_REPLICA) {
        snprintf(err, err_len,
                 "ERR a primary that is not fenced cannot become a replica (that could drop acknowledged "
                 "writes): fence it first (REDOUBT.TERM or REDOUBT.FENCE), or restart it with --role replica "
                 "--primary HOST:PORT");
        return -1;
    }
    snprintf(u->host, sizeof(u->host), "%s", host);
    u->port = port;
    if (u->conn)
        conn_close(s, u->conn);
    if (u->state != UP_CONNECTING)
        up_schedule_reconnect(s, 0);
    rd_info("replicating from %s:%d from now on", host, port);
    return 0;
}

void repl_shutdown(struct server *s)
{
    struct upstream *u = &s->up;
    u->state = UP_IDLE;
    if (s->wal == NULL)
        return;
    int rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal));
    if (rc < 0)
        rd_panic("WAL flush at shutdown failed: %s", rd_strerror(rc));
    if (u->last_ckpt_lsn != 0 && (rc = wal_restartpoint(s->wal, s->engine, u->last_ckpt_lsn, u->last_ckpt_redo)) < 0)
        rd_panic("restart point at shutdown failed: %s", rd_strerror(rc));
}

/* ================================================================ fencing at start-up */

/* A primary refuses to start when one of --peers is a primary on a newer
 * timeline: this node was failed over and must rejoin as a replica. */
int repl_check_peers(struct server *s)
{
    if (s->cfg.peers == NULL || s->wal == NULL)
        return 0;
    char list[1024];
    snprintf(list, sizeof(list), "%s", s->cfg.peers);
    uint32_t mine = wal_timeline(s->wal);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (colon == NULL)
            continue;
        *colon = 0;
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        if (getaddrinfo(tok, colon + 1, &hints, &res) != 0 || res == NULL)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        int ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0;
        freeaddrinfo(res);
        char buf[8192];
        size_t got = 0;
        if (ok && write(fd, "INFO replication\r\n", 18) == 18) {
            ssize_t r;
            while (got < sizeof(buf) - 1 && (r = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0) {
                got += (size_t)r;
                if (memmem(buf, got, "\r\n\r\n", 4) != NULL && got > 16)
                    break;
            }
        }
        if (fd >= 0)
            close(fd);
        buf[got] = 0;
        const char *tl = strstr(buf, "\ntimeline:");
        if (strstr(buf, "redoubt_role:primary") && tl) {
            unsigned long theirs = strtoul(tl + 10, NULL, 10);
            if (theirs > mine) {
                rd_error("a newer timeline %lu exists at %s:%s (a primary); this node is on timeline %u and must "
                         "not accept writes: restart it as a replica with --role replica --primary %s:%s "
                         "(it re-clones if its history has diverged)",
                         theirs, tok, colon + 1, mine, tok, colon + 1);
                return -1;
            }
        }
    }
    return 0;
}

int repl_after_crash(struct server *s)
{
    /* Whatever --repl-send says now: the run that crashed may have shipped WAL it never flushed. */
    if (s->wal == NULL)
        return 0;
    uint64_t switch_lsn;
    int rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal));
    if (rc == 0)
        rc = wal_switch_timeline(s->wal, &switch_lsn);
    if (rc == 0)
        rc = wal_checkpoint(s->wal, s->engine);
    if (rc < 0) {
        rd_error("could not start a new timeline after crash recovery: %s", rd_strerror(rc));
        return rc;
    }
    s->durable_lsn = s->last_commit_lsn = s->release_lsn = wal_flushed_lsn(s->wal);
    char l1[32];
    lsn_str(switch_lsn, l1, sizeof(l1));
    rd_info("crash recovery ended at %s: timeline %u starts there (a primary may ship WAL before flushing "
            "it, so a replica may hold WAL past this point: it cuts its log there, or re-clones)",
            l1, wal_timeline(s->wal));
    return 0;
}

/* ================================================================ INFO, ROLE */

static void sync_spec_str(const struct server *s, char *spec, size_t n)
{
    size_t off = 0;
    spec[0] = 0;
    if (s->cfg.sync_num == 0)
        return;
    off += (size_t)snprintf(spec, n, "%s %u (", s->cfg.sync_method == SERVER_SYNC_ANY ? "ANY" : "FIRST",
                            s->cfg.sync_num);
    for (unsigned k = 0; k < s->cfg.sync_nnames && off < n - 80; k++)
        off += (size_t)snprintf(spec + off, n - off, "%s%s", k ? "," : "", s->cfg.sync_names[k]);
    snprintf(spec + off, n - off, ")");
}

/* Listed replicas on this primary's term that are streaming and were heard from
 * lately: the sync set's candidates as INFO sync_state reports them. A replica
 * answers every keepalive (REPL_KEEPALIVE_MS), so one silent for
 * REPL_SYNC_SILENT_MS is cut off even while its TCP connection looks open (a
 * partition), and a monitor may fail over to the side that can commit (M11). */
#define REPL_SYNC_SILENT_MS 1000u
static unsigned sync_connected(const struct server *s)
{
    unsigned n = 0;
    uint64_t now = rd_now_ms();
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_WALSENDER && c->peer && !c->closing && c->peer->state == PEER_STREAMING &&
            c->peer->term == s->term && name_listed(s, c->peer->name) >= 0 &&
            now - c->peer->last_status_ms < REPL_SYNC_SILENT_MS)
            n++;
    return n;
}

/* Fields every classic node shows: what a monitor needs to fence and choose (T1-T6, LS1-LS3, S20). */
static void info_fencing(struct server *s, struct rd_buf *b)
{
    char spec[1100];
    sync_spec_str(s, spec, sizeof(spec));
    uint64_t waiting = 0, oldest = 0;
    server_waits_info(s, &waiting, &oldest);
    unsigned renewed = 0;
    const char *lease = !server_lease_required(s) ? "off" : server_lease_ok(s, &renewed) ? "ok" : "lost";
    int sync_wanted = s->role == SERVER_ROLE_PRIMARY && s->cfg.commit >= SERVER_COMMIT_REMOTE_WRITE && s->cfg.sync_num > 0;
    unsigned have = sync_wanted ? sync_connected(s) : 0;
    char sync_state[64];
    if (!sync_wanted || have >= s->cfg.sync_num)
        snprintf(sync_state, sizeof(sync_state), sync_wanted ? "ok" : "none");
    else
        snprintf(sync_state, sizeof(sync_state), "waiting (%u/%u)", have, s->cfg.sync_num);
    rd_buf_appendf(b,
                   "term:%" PRIu64 "\r\nfenced:%d\r\nfenced_by:%s\r\ncommit_level:%s\r\nsync_replicas:%s\r\n"
                   "sync_state:%s\r\nrepl_name:%s\r\nlease:%s\r\nlease_monitors_renewed:%u\r\n"
                   "commits_waiting:%" PRIu64 "\r\noldest_commit_wait_ms:%" PRIu64 "\r\ncommit_timeout_ms:%" PRIu64
                   "\r\ncommit_timeouts:%" PRIu64 "\r\n",
                   s->term, s->fenced, s->fenced_by, server_commit_name(s->cfg.commit), spec, sync_state,
                   s->role == SERVER_ROLE_REPLICA ? s->cfg.name : "", lease, renewed, waiting, oldest,
                   s->cfg.commit_timeout_ms, s->commit_timeouts);
}

void repl_info(struct server *s, struct rd_buf *b)
{
    uint64_t now_us = rd_wall_us();
    if (s->role == SERVER_ROLE_REPLICA) {
        struct upstream *u = &s->up;
        static const char *states[] = {"idle", "disconnected", "connecting", "handshake", "cloning", "streaming"};
        uint64_t recv = s->wal ? wal_insert_lsn(s->wal) : 0;
        uint64_t lag_ms = u->apply_lsn >= u->primary_flush_lsn || u->apply_echo_us == 0
                              ? 0
                              : (now_us > u->apply_echo_us ? (now_us - u->apply_echo_us) / 1000 : 0);
        rd_buf_appendf(b,
                       "# Replication\r\nrole:slave\r\nredoubt_role:replica\r\nmaster_host:%s\r\nmaster_port:%d\r\n"
                       "master_link_status:%s\r\nreplication_state:%s\r\nmaster_sync_in_progress:%d\r\n"
                       "timeline:%u\r\nreceive_lsn:%" PRIu64 "\r\nwrite_lsn:%" PRIu64 "\r\nflush_lsn:%" PRIu64
                       "\r\napply_lsn:%" PRIu64 "\r\nconsistent_lsn:%" PRIu64 "\r\nprimary_flush_lsn:%" PRIu64
                       "\r\nlag_bytes:%" PRIu64 "\r\nlag_ms:%" PRIu64 "\r\nslave_repl_offset:%" PRIu64
                       "\r\nslave_read_only:1\r\nrepl_bytes_received:%" PRIu64 "\r\nlast_error:%s\r\n",
                       u->host, u->port, u->state == UP_STREAMING ? "up" : "down", states[u->state],
                       /* no finished base backup counts as syncing, whatever the link does now: such a
                        * replica can neither acknowledge nor be promoted (monitor M11, M13) */
                       u->state == UP_CLONING || s->engine == NULL, s->wal ? wal_timeline(s->wal) : 0, recv,
                       s->wal ? wal_written_lsn(s->wal) : 0, s->wal ? wal_flushed_lsn(s->wal) : 0, u->apply_lsn,
                       u->consistent_lsn, u->primary_flush_lsn,
                       u->primary_flush_lsn > u->apply_lsn ? u->primary_flush_lsn - u->apply_lsn : 0, lag_ms,
                       u->apply_lsn, u->bytes_received, u->last_error);
        info_fencing(s, b);
        rd_buf_appendf(b, "\r\n");
        return;
    }
    rd_buf_appendf(b, "# Replication\r\nrole:master\r\nredoubt_role:%s\r\ntimeline:%u\r\nconnected_slaves:%zu\r\n",
                   s->role == SERVER_ROLE_PRIMARY ? "primary" : "standalone", s->wal ? wal_timeline(s->wal) : 0,
                   s->npeers);
    info_fencing(s, b);
    size_t i = 0;
    uint64_t flushed = s->wal ? wal_flushed_lsn(s->wal) : 0;
    for (struct conn *c = s->conns; c; c = c->next) {
        if (c->kind != CONN_WALSENDER || c->peer == NULL)
            continue;
        struct repl_peer *p = c->peer;
        char ip[300];
        snprintf(ip, sizeof(ip), "%s", c->addr);
        char *colon = strrchr(ip, ':');
        int port = 0;
        if (colon) {
            *colon = 0;
            port = p->listen_port ? p->listen_port : atoi(colon + 1); /* the port it listens on, if announced */
        }
        rd_buf_appendf(b,
                       "slave%zu:name=%s,ip=%s,port=%d,state=%s,offset=%" PRIu64 ",lag=%" PRIu64 ",sent_lsn=%" PRIu64
                       ",write_lsn=%" PRIu64 ",flush_lsn=%" PRIu64 ",apply_lsn=%" PRIu64 ",lag_bytes=%" PRIu64
                       ",write_lag_ms=%.3f,flush_lag_ms=%.3f,replay_lag_ms=%.3f,sync=%s\r\n",
                       i++, p->name, ip, port, p->state == PEER_BACKUP ? "backup" : "streaming", p->flush_lsn,
                       (rd_now_ms() - p->last_status_ms) / 1000, p->sent_lsn, p->write_lsn, p->flush_lsn,
                       p->apply_lsn, flushed > p->apply_lsn ? flushed - p->apply_lsn : 0, p->write_lag_us / 1000.0,
                       p->flush_lag_us / 1000.0, p->apply_lag_us / 1000.0,
                       name_listed(s, p->name) >= 0 && s->cfg.sync_num > 0 ? "sync" : "async");
    }
    rd_buf_appendf(b, "master_repl_offset:%" PRIu64 "\r\nrelease_lsn:%" PRIu64 "\r\nrepl_bytes_sent:%" PRIu64 "\r\n\r\n",
                   flushed, s->release_lsn, s->repl_bytes_sent);
}

void repl_role_reply(struct server *s, struct conn *c)
{
    int rc = 0;
    if (s->role == SERVER_ROLE_REPLICA) {
        struct upstream *u = &s->up;
        rc |= resp_array_hdr(&c->out, 5);
        rc |= resp_bulk_str(&c->out, "slave");
        rc |= resp_bulk_str(&c->out, u->host);
        rc |= resp_int(&c->out, u->port);
        rc |= resp_bulk_str(&c->out, u->state == UP_STREAMING ? "connected"
                                     : u->state == UP_CLONING ? "sync"
                                                              : "connecting");
        rc |= resp_int(&c->out, (int64_t)u->apply_lsn);
    } else {
        rc |= resp_array_hdr(&c->out, 3);
        rc |= resp_bulk_str(&c->out, "master");
        rc |= resp_int(&c->out, s->wal ? (int64_t)wal_flushed_lsn(s->wal) : 0);
        rc |= resp_array_hdr(&c->out, s->npeers);
        for (struct conn *o = s->conns; o; o = o->next) {
            if (o->kind != CONN_WALSENDER || o->peer == NULL)
                continue;
            char ip[300];
            snprintf(ip, sizeof(ip), "%s", o->addr);
            char *colon = strrchr(ip, ':');
            if (colon)
                *colon = 0;
            char port[16], off[32];
            if (o->peer->listen_port) /* the port it listens on, if announced */
                snprintf(port, sizeof(port), "%d", o->peer->listen_port);
            else
                snprintf(port, sizeof(port), "%s", colon ? colon + 1 : "0");
            snprintf(off, sizeof(off), "%" PRIu64, o->peer->flush_lsn);
            rc |= resp_array_hdr(&c->out, 3);
            rc |= resp_bulk_str(&c->out, ip);
            rc |= resp_bulk_str(&c->out, port);
            rc |= resp_bulk_str(&c->out, off);
        }
    }
    if (rc < 0)
        rd_panic("out of memory for a reply");
}
