/*
 * repl_sender.c — the primary side: a client connection that sent REDOUBT.REPLICATE becomes a
 * walsender (clone, stream, STATUS), and the commit levels / WAIT that its STATUS drives.
 * Part of the classic wing (replica/); see repl.c's header for the whole picture.
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
#include "server/trace_hooks.h"
#include "replica/repl_int.h"

void repl_peer_error(struct server *s, struct conn *c, const char *fmt, ...)
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
            bad_opt = repl_arg_u64(&a->v[i + 1], 10, &rterm) < 0 || rterm > REPL_TERM_MAX;
        else if (a->v[i].len == 11 && strncasecmp((const char *)a->v[i].ptr, "LISTEN-PORT", 11) == 0)
            bad_opt = repl_arg_u64(&a->v[i + 1], 10, &lport) < 0 || lport > 65535;
        else
            bad_opt = 1;
    }
    if (bad_opt || repl_arg_u64(&a->v[1], 16, &cluster) < 0 || repl_arg_u64(&a->v[3], 10, &tli) < 0 ||
        repl_arg_u64(&a->v[4], 10, &start) < 0 || a->v[2].len == 0 || a->v[2].len >= 64 ||
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
    c->role_conn = p;
    p->listen_port = (int)lport;
    repl_of(s)->npeers++;
    struct wal_stats ws;
    wal_get_stats(s->wal, &ws);
    if (cluster != 0 && cluster != ws.system_id) {
        repl_peer_error(s, c, "cluster id mismatch: this primary's is %016" PRIX64 ", replica \"%s\" has %016" PRIX64
                   " (it belongs to another cluster; re-clone it into an empty directory)",
                   ws.system_id, name, cluster);
        return;
    }
    for (struct conn *o = s->conns; o; o = o->next)
        if (o != c && o->kind == CONN_WALSENDER && repl_peer_of(o) && !o->closing && strcmp(repl_peer_of(o)->name, name) == 0) {
            repl_peer_error(s, c, "a replica named \"%s\" is already streaming from %s", name, o->addr);
            return;
        }
    /* T3/T5: a replica on a newer term proves this primary was replaced; a fenced
     * primary streams to nobody; every accepted replica is on this primary's term
     * (it adopts it from HELLO / BACKUP_BEGIN if it was behind). */
    if (rterm > repl_of(s)->term) {
        char why[500];
        snprintf(why, sizeof(why), "replica \"%s\" (%s) is at term %" PRIu64, name, c->addr, rterm);
        repl_term_fence_primary(s, rterm, why, c);
        repl_peer_error(s, c, "this primary was at an older term than replica \"%s\" (%" PRIu64 "): it has been "
                   "replaced and is fenced", name, rterm);
        return;
    }
    if (s->fenced) {
        repl_peer_error(s, c, "this primary is fenced (%s): it streams to no replica", s->fenced_by);
        return;
    }
    p->term = repl_of(s)->term;
    p->slot = repl_slot_get(s, name);
    if (p->slot == NULL) {
        repl_peer_error(s, c, "too many replicas (the limit is %d)", REPL_MAX_SLOTS);
        return;
    }
    int rc = wal_sender_open(s->wal, &p->cur);
    if (rc < 0) {
        repl_peer_error(s, c, "could not open the WAL for sending: %s", rd_strerror(rc));
        return;
    }
    char l1[32], l2[32];
    if (clone) {
        rc = wal_checkpoint(s->wal, s->engine); /* the backup's redo point */
        if (rc < 0)
            rd_panic("checkpoint for a base backup failed: %s", rd_strerror(rc));
        struct wal_control ctl;
        if ((rc = wal_control_read(s->cfg.dir, &ctl)) < 0) {
            repl_peer_error(s, c, "could not read the control file: %s", rd_strerror(rc));
            return;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/data.rdb", s->cfg.dir);
        p->data_fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (p->data_fd < 0 || fstat(p->data_fd, &st) < 0) {
            repl_peer_error(s, c, "could not open \"%s\" for a base backup: %s", path, strerror(errno));
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
                                      .term = (uint32_t)repl_of(s)->term,
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
            repl_peer_error(s, c,
                       "replica \"%s\" has diverged: it is on timeline %" PRIu64 " at %s, this primary is on "
                       "timeline %u (history ends at %s); re-clone it",
                       name, tli, l1, my_tli, l2);
            return;
        }
        if (start < wal_oldest_lsn(s->wal)) {
            lsn_str(start, l1, sizeof(l1));
            repl_peer_error(s, c, "requested WAL at %s has been removed (replica \"%s\" fell too far behind); re-clone it",
                       l1, name);
            return;
        }
        p->state = PEER_STREAMING;
        p->sent_lsn = start;
        p->write_lsn = p->flush_lsn = p->apply_lsn = start;
        p->slot->restart_lsn = start;
        struct repl_hello h = {.system_id = ws.system_id, .timeline = my_tli, .term = (uint32_t)repl_of(s)->term,
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

void repl_peer_on_status(struct server *s, struct repl_peer *p, const struct repl_status *m)
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
    trace_lsn_reached(TRACE_ACK_RECEIVED, server_trace_node(s, p->name), p->flush_lsn, p->apply_lsn); /* issue 13 */
    p->last_status_ms = rd_now_ms();
    if (p->slot && p->flush_lsn > p->slot->restart_lsn)
        p->slot->restart_lsn = p->flush_lsn;
    server_update_release(s);
}

void repl_peer_pump(struct server *s, struct repl_peer *p)
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
                    repl_peer_error(s, c, "base backup: could not read the data file: %s",
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
                repl_peer_error(s, c, "requested WAL at %s has been removed (replica \"%s\" fell too far behind); re-clone it",
                           l1, p->name);
            else
                repl_peer_error(s, c, "could not read WAL at %s: %s", l1, rd_strerror(rc));
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
        trace_ship(&c->out, tli, server_trace_node(s, p->name), next, p->wal_buf.len); /* issue 13: marks, C22 */
        size_t before = c->out.len;
        if (repl_send_wal(&c->out, tli, &m, p->wal_buf.len >= frame_compress_min_bytes()) < 0)
            rd_panic("out of memory");
        repl_of(s)->repl_bytes_sent += c->out.len - before;
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

void repl_peer_free(struct server *s, struct repl_peer *p)
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
    repl_of(s)->npeers--;
    server_update_release(s);
}

/* Keeps the WAL registered replicas still need, up to wal_keep_bytes. */

/* ================================================================ commit levels, WAIT */

int repl_name_listed(const struct server *s, const char *name)
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

/* The LSN that k sync replicas (ANY k / FIRST k of --sync-replicas) reached at the
 * commit level; UINT64_MAX when the commit level waits for no replica. The instance
 * releases replies up to min(its own durable LSN, this) (server_update_release). */
uint64_t repl_sync_lsn(const struct server *s)
{
    if (s->role != SERVER_ROLE_PRIMARY || s->cfg.commit < SERVER_COMMIT_REMOTE_WRITE || s->cfg.sync_num == 0)
        return UINT64_MAX;
    uint64_t lsns[SERVER_SYNC_MAX_NAMES];
    int prio[SERVER_SYNC_MAX_NAMES];
    unsigned n = 0;
    for (struct conn *c = s->conns; c && n < SERVER_SYNC_MAX_NAMES; c = c->next) {
        if (c->kind != CONN_WALSENDER || repl_peer_of(c) == NULL || c->closing || repl_peer_of(c)->state != PEER_STREAMING)
            continue;
        /* T5: only acknowledgements given under this primary's own term count */
        rd_assert(repl_peer_of(c)->term == repl_of(s)->term);
        int pr = repl_name_listed(s, repl_peer_of(c)->name);
        if (pr < 0)
            continue;
        lsns[n] = peer_level_lsn(s, repl_peer_of(c));
        prio[n] = pr;
        n++;
    }
    if (n < s->cfg.sync_num)
        return 0;
    if (s->cfg.sync_method == SERVER_SYNC_ANY) {
        qsort(lsns, n, sizeof(lsns[0]), cmp_desc);
        return lsns[s->cfg.sync_num - 1];
    }
    uint64_t sync = UINT64_MAX; /* FIRST k: the k connected ones listed first */
    for (unsigned taken = 0; taken < s->cfg.sync_num; taken++) {
        unsigned best = 0;
        for (unsigned i = 1; i < n; i++)
            if (prio[i] < prio[best])
                best = i;
        sync = RD_MIN(sync, lsns[best]);
        prio[best] = 1 << 30;
    }
    return sync;
}

size_t repl_count_acked(const struct server *s, uint64_t lsn)
{
    size_t n = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_WALSENDER && repl_peer_of(c) && !c->closing && repl_peer_of(c)->state == PEER_STREAMING &&
            repl_peer_of(c)->flush_lsn >= lsn)
            n++;
    return n;
}

void repl_waits_check(struct server *s)
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
