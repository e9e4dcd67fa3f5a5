/*
 * repl_receiver.c — the replica side: the link to the primary (connect, handshake, clone),
 * records appended to its own WAL and applied one whole transaction at a time, status back.
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

/* ================================================================ replica side */

void repl_up_schedule_reconnect(struct server *s, uint64_t delay_ms)
{
    repl_of(s)->up.state = UP_DISCONNECTED;
    repl_of(s)->up.next_attempt_ms = rd_now_ms() + delay_ms;
}

static void up_on_timeout(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct upstream *u = (struct upstream *)((char *)io - offsetof(struct upstream, timeout_io));
    (void)cqe;
    u->timeout_in_flight = 0;
}

static void up_send_handshake(struct server *s)
{
    struct upstream *u = &repl_of(s)->up;
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
    snprintf(term, sizeof(term), "%" PRIu64, repl_of(s)->term);
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
    struct server *s = u->srv;
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
        repl_up_schedule_reconnect(s, REPL_RECONNECT_MS);
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
        repl_up_schedule_reconnect(s, REPL_RECONNECT_MS);
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

void repl_up_connect(struct server *s)
{
    struct upstream *u = &repl_of(s)->up;
    static struct sockaddr_storage addr;
    static socklen_t addr_len;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        rd_warn("could not resolve the primary's host \"%s\": %s", u->host, gai_strerror(rc));
        repl_up_schedule_reconnect(s, 1000);
        return;
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    u->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (u->fd < 0) {
        rd_warn("socket failed: %s", strerror(errno));
        repl_up_schedule_reconnect(s, 1000);
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
    struct upstream *u = &repl_of(s)->up;
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
    repl_up_schedule_reconnect(s, 0);
}

int repl_replica_readable(const struct server *s)
{
    return s->engine != NULL && repl_of(s)->up.apply_lsn >= repl_of(s)->up.consistent_lsn;
}

void repl_up_fail(struct server *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, repl_of(s)->up.last_error) != 0) /* once, not at every reconnect */
        rd_error("replication from %s:%d: %s", repl_of(s)->up.host, repl_of(s)->up.port, msg);
    snprintf(repl_of(s)->up.last_error, sizeof(repl_of(s)->up.last_error), "%s", msg);
    if (repl_of(s)->up.conn)
        conn_close(s, repl_of(s)->up.conn);
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
    struct upstream *u = &repl_of(s)->up;
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
void repl_up_apply_ready(struct server *s, uint64_t limit_lsn)
{
    struct upstream *u = &repl_of(s)->up;
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
        trace_visible(end); /* issue 13: applied, readable here from now on */
        u->apply_echo_us = rd_get_u64le(body);
        if (type == WAL_REC_CHECKPOINT) {
            u->last_ckpt_lsn = rd_get_u64le(body + 8);
            u->last_ckpt_redo = rd_get_u64le(body + 16);
            if (rd_now_ms() - u->last_restartpoint_ms >= REPL_RESTARTPOINT_MS && !wal_checkpoint_active(s->wal)) {
                int rc = repl_restartpoint_begin(s, u->last_ckpt_lsn, u->last_ckpt_redo); /* W17 */
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
    struct upstream *u = &repl_of(s)->up;
    uint64_t expected = m->start_lsn;
    size_t off = 0;
    while (off < m->records_len) {
        uint64_t end = 0;
        size_t used = 0;
        int rc = wal_append_encoded(s->wal, m->records + off, m->records_len - off, expected, &end, &used);
        if (rc < 0 || used == 0) {
            char l1[32];
            lsn_str(expected, l1, sizeof(l1));
            repl_up_fail(s, "invalid WAL record from the primary at %s: %s; reconnecting", l1, rd_strerror(rc));
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
        repl_up_fail(s, "WAL message ended at %" PRIX64 " but said %" PRIX64 "; reconnecting", expected, m->end_lsn);
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
    trace_lsn_reached(TRACE_PEER_RECEIVED, 0, m->end_lsn, m->records_len); /* issue 13 */
    repl_up_apply_ready(s, u->primary_flush_lsn);
}

int repl_up_wipe_dir(struct server *s)
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
    rd_buf_reset(&repl_of(s)->up.pending);
    repl_of(s)->up.apply_lsn = repl_of(s)->up.consistent_lsn = 0;
    repl_of(s)->up.echo_n = 0;
    return 0;
}

void repl_up_on_frame(struct server *s, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct upstream *u = &repl_of(s)->up;
    int rc = 0;
    u->last_msg_ms = rd_now_ms();
    u->msgs_received++;
    switch (h->type) {
    case REPL_HELLO: {
        struct repl_hello m;
        if ((rc = repl_parse_hello(p, n, &m)) < 0)
            break;
        if (s->wal == NULL || u->state != UP_HANDSHAKE) {
            repl_up_fail(s, "unexpected HELLO");
            return;
        }
        if (m.term < repl_of(s)->term) { /* T2: a replaced primary is never followed again */
            repl_up_fail(s, "the primary is at term %u, older than this replica's %" PRIu64 ": it has been replaced; "
                    "not following it (waiting to be re-pointed)", m.term, repl_of(s)->term);
            return;
        }
        if (m.term > repl_of(s)->term)
            repl_term_save(s, m.term, "the primary's, from its handshake");
        struct wal_stats ws;
        wal_get_stats(s->wal, &ws);
        if (m.system_id != ws.system_id) {
            repl_up_fail(s, "the primary belongs to another cluster (%016" PRIX64 " vs ours %016" PRIX64 ")", m.system_id,
                    ws.system_id);
            return;
        }
        if (m.timeline == wal_timeline(s->wal) && m.prev_timeline != 0 && wal_timeline_parent(s->wal) != 0 &&
            (m.prev_timeline != wal_timeline_parent(s->wal) || m.switch_lsn != wal_timeline_switch_lsn(s->wal))) {
            /* CR8: the same timeline number, another history (a crash timeline, CR3, that met a
             * promotion's number): streaming "our" timeline from there would mix two histories. */
            char a[32], b[32];
            lsn_str(m.switch_lsn, a, sizeof(a));
            lsn_str(wal_timeline_switch_lsn(s->wal), b, sizeof(b));
            u->reclone_requested = 1;
            repl_up_fail(s, "the primary's timeline %u forks from timeline %u at %s, ours from timeline %u at %s: "
                         "two histories with one number; re-cloning", m.timeline, m.prev_timeline, a,
                         wal_timeline_parent(s->wal), b);
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
                repl_up_fail(s, "history diverged at %s (applied up to %s): re-cloning", f, a);
                return;
            }
            if (wal_flush_in_flight(s->wal)) {
                repl_up_fail(s, "the primary's history forks at %s: waiting for a WAL write to land before cutting", f);
                return;
            }
            uint64_t cut_bytes = wal_insert_lsn(s->wal) - m.start_lsn;
            int trc = wal_truncate(s->wal, m.start_lsn);
            if (trc < 0) {
                u->reclone_requested = 1;
                repl_up_fail(s, "could not cut the log at %s (%s): re-cloning", f, rd_strerror(trc));
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
        repl_up_apply_ready(s, u->primary_flush_lsn);
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
            repl_up_fail(s, "unexpected BACKUP_BEGIN");
            return;
        }
        if (m.term < repl_of(s)->term) { /* T2: a replaced primary is never followed again */
            repl_up_fail(s, "the primary is at term %u, older than this replica's %" PRIu64 ": it has been replaced; "
                    "not following it (waiting to be re-pointed)", m.term, repl_of(s)->term);
            return;
        }
        if (m.term > repl_of(s)->term)
            repl_term_save(s, m.term, "the primary's, from its handshake");
        rc = wal_init_from_backup(s->cfg.dir, m.system_id, m.timeline, m.redo_lsn, m.checkpoint_lsn,
                                  m.segment_size_bytes);
        if (rc < 0) {
            repl_up_fail(s, "could not initialise the WAL from the base backup: %s", rd_strerror(rc));
            return;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/data.rdb", s->cfg.dir);
        u->clone_fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
        if (u->clone_fd < 0) {
            repl_up_fail(s, "could not create \"%s\": %s", path, strerror(errno));
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
            repl_up_fail(s, "unexpected BACKUP_PAGES (pages %u..%u)", m.first_page, m.first_page + m.count);
            return;
        }
        size_t len = (size_t)m.count * ENGINE_PAGE_SIZE;
        for (size_t done = 0; done < len;) {
            ssize_t w = pwrite(u->clone_fd, m.pages + done, len - done,
                               (off_t)m.first_page * ENGINE_PAGE_SIZE + (off_t)done);
            if (w <= 0) {
                repl_up_fail(s, "writing the base backup failed: %s", w < 0 ? strerror(errno) : "no progress");
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
            repl_up_fail(s, "unexpected BACKUP_END");
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
            repl_up_fail(s, "WAL before the handshake finished");
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
        repl_up_apply_ready(s, u->primary_flush_lsn);
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
    case TRACE_MARK_FRAME_TYPE: { /* issue 13: the next WAL message carries a sampled commit (C22) */
        const char *why = NULL;
        if (trace_mark_follow(p, n, TRACE_LINGER_US, &why) < 0)
            repl_up_fail(s, "malformed trace mark from the primary (%s); reconnecting", why);
        return;
    }
    default:
        repl_up_fail(s, "unknown message type %u from the primary", h->type);
        return;
    }
    repl_up_fail(s, "malformed %s message from the primary", repl_msg_name(h->type));
}

void repl_up_send_status(struct server *s)
{
    struct upstream *u = &repl_of(s)->up;
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
    server_trace_replica_status(w, f, a); /* issue 13 */
    u->sent_write = w;
    u->sent_flush = f;
    u->sent_apply = a;
    u->status_sent_ms = now;
}
