/*
 * repl.c — classic (PostgreSQL-style) streaming replication, both sides: the
 * frame dispatch of both connection kinds and the per-turn tick. The wing's
 * files, one job each: repl_role.c (role_classic, start-up), repl_sender.c,
 * repl_receiver.c, repl_slots.c, repl_term.c, repl_promote.c, repl_info.c.
 *
 * Primary side ("WAL sender", one struct repl_peer per replica connection,
 * repl_sender.c): a client connection that sends REDOUBT.REPLICATE becomes a
 *   CONN_WALSENDER.
 *   CLONE: checkpoint, then BACKUP_BEGIN, the data file in BACKUP_PAGES frames,
 *   BACKUP_END (consistent LSN), then WAL from the checkpoint's redo point.
 *   STREAM: HELLO, then WAL from the LSN asked for. WAL is shipped as soon as
 *   its write completed (--repl-send written, the default: the replica's
 *   fdatasync overlaps ours; it applies only up to the flush LSN we report in
 *   KEEPALIVEs, CR2) or, with --repl-send flushed, once our fdatasync is done
 *   (PostgreSQL's rule); read from the segment files (wal_sender.c), at most
 *   REPL_WINDOW_BYTES queued per replica. STATUS frames carry the replica's
 *   write/flush/apply LSNs; they drive synchronous commit (repl_sync_lsn, read
 *   by the instance's server_update_release), WAIT, the slots that keep WAL,
 *   and lag figures.
 *
 * Replica side (struct upstream): connects to the primary (io_uring connect
 *   with a linked timeout), handshakes, clones if its data dir is empty,
 *   appends every received record to its own WAL (wal_append_encoded: the two
 *   logs are byte-identical), applies records with engine_redo one whole
 *   transaction at a time (at its COMMIT, so readers never see part of one),
 *   makes restart points at the primary's CHECKPOINT records, follows timeline
 *   switches, and reports LSNs back after every change (at most once a turn).
 *
 * Promotion (REPLICAOF NO ONE / PROMOTE, repl_promote.c): drop the link, cut
 * the log after the last applied commit, switch to a new timeline, accept
 * writes (no checkpoint: PostgreSQL's fast promotion).
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
#include "replica/repl_int.h"

/* ================================================================ shared */

void repl_process_input(struct server *s, struct conn *c)
{
    struct rd_buf *scratch = c->kind == CONN_WALSENDER ? &repl_peer_of(c)->scratch : &repl_of(s)->up.pending_scratch;
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
                rd_warn("replica \"%s\" (%s) sent a corrupt frame: %s; closing its connection", repl_peer_of(c)->name,
                        c->addr, why ? why : rd_strerror(rc));
                conn_close(s, c);
            } else {
                repl_up_fail(s, "corrupt frame from the primary: %s; reconnecting", why ? why : rd_strerror(rc));
            }
            return;
        }
        off += (size_t)rc;
        if (c->kind == CONN_WALSENDER) {
            struct repl_peer *p = repl_peer_of(c);
            if (h.type == REPL_STATUS) {
                struct repl_status m;
                if (repl_parse_status(payload, plen, &m) < 0) {
                    rd_warn("replica \"%s\" sent a malformed STATUS; closing its connection", p->name);
                    conn_close(s, c);
                    return;
                }
                repl_peer_on_status(s, p, &m);
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
            repl_up_on_frame(s, &h, payload, plen);
            if (repl_of(s)->up.conn != c) /* closed inside */
                return;
        }
    }
    rd_buf_consume(&c->in, off);
}

void repl_on_conn_closed(struct server *s, struct conn *c)
{
    if (c->kind == CONN_WALSENDER && repl_peer_of(c)) {
        repl_peer_free(s, repl_peer_of(c));
        c->role_conn = NULL;
        return;
    }
    if (c->kind == CONN_UPSTREAM && repl_of(s)->up.conn == c) {
        struct upstream *u = &repl_of(s)->up;
        u->conn = NULL;
        if (u->clone_fd >= 0) { /* a half-received base backup is useless */
            close(u->clone_fd);
            u->clone_fd = -1;
            repl_up_wipe_dir(s);
            rd_warn("base backup interrupted: the clone starts over");
        }
        if (u->state != UP_IDLE) {
            rd_warn("lost the connection to the primary %s:%d; reconnecting", u->host, u->port);
            repl_up_schedule_reconnect(s, REPL_RECONNECT_MS);
        }
    }
}

void repl_tick(struct server *s)
{
    if (s->role == SERVER_ROLE_PRIMARY) {
        for (struct conn *c = s->conns, *next; c; c = next) {
            next = c->next;
            if (c->kind == CONN_WALSENDER && repl_peer_of(c) && !c->closing)
                repl_peer_pump(s, repl_peer_of(c));
        }
        static uint64_t last_keep_ms;
        if (rd_now_ms() - last_keep_ms >= 1000) {
            repl_slots_update_keep(s);
            last_keep_ms = rd_now_ms();
        }
    }
    if (repl_of(s)->promote_pending && !wal_flush_in_flight(s->wal))
        repl_promote_finish(s);
    if (s->nwaiting > 0)
        repl_waits_check(s);
    if (s->role != SERVER_ROLE_REPLICA)
        return;
    repl_restartpoint_step(s);
    struct upstream *u = &repl_of(s)->up;
    if (u->reclone_requested && u->conn == NULL && !u->connect_in_flight) {
        u->reclone_requested = 0;
        repl_up_wipe_dir(s);
        repl_up_schedule_reconnect(s, 0);
    }
    if (u->state == UP_DISCONNECTED && rd_now_ms() >= u->next_attempt_ms && !u->connect_in_flight &&
        !u->timeout_in_flight)
        repl_up_connect(s);
    if (u->conn && !u->conn->closing && s->cfg.replica_timeout_ms &&
        rd_now_ms() - u->last_msg_ms > s->cfg.replica_timeout_ms) {
        repl_up_fail(s, "no message from the primary for %" PRIu64 " ms; reconnecting", rd_now_ms() - u->last_msg_ms);
        return;
    }
    repl_up_send_status(s);
}
