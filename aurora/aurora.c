/*
 * aurora.c — the instance side of aurora mode: the writer ships compact redo
 * to six storage nodes and commits at a 4-of-6 quorum; readers serve reads
 * from pages fetched from the same storage at a read point fed by the writer.
 *
 * Writer, per loop turn: the engine's page-change records (engine sink) and
 * each transaction's commit record become redo records with consecutive LSNs
 * (redo_batch_add); at the end of the turn the batch is sealed into one frame
 * and appended to every live storage link (aurora_ship). Each node acks with
 * its SCL after its own fdatasync; redo_quorum computes VCL (4th highest SCL)
 * and VDL (highest consistency point <= VCL); durable_lsn = VDL releases the
 * replies (server_update_release). No data file, no local log.
 *
 * Start-up and promotion (aurora_become_writer): learn the nodes' epochs from a
 * read quorum (3), write epoch+1 to them (nodes refuse older epochs from then
 * on: 3 + 4 > 6, a stale writer can never gather 4 acks), compute the recovery
 * point (redo_recovery_point), truncate every node above VDL, wait until 4
 * nodes hold VDL (peers fill gaps by gossip), and continue at VDL + 1.
 *
 * Reader: follows the writer's feed on the writer's client port. With the
 * redo feed (FEED_REDO, the default) each frame carries the redo records up to
 * the new VDL; the reader applies them to the pages it has cached (a page not
 * cached is skipped: it is fetched later at a read point that includes them).
 * With the page-id feed (FEED, --reader-feed pages) it drops the pages changed
 * up to VDL instead. Either way it then advances its read point to VDL (whole
 * mini-transactions only: VDL is always a consistency point) and reads missing
 * pages with GetPage@read-point; every cached page is the page at the read
 * point.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "redo/redo.h"
#include "server/server_int.h"
#include "aurora/aur_trace.h"
#include "redo/sn_proto.h"
#include "aurora/aur_int.h"

/* ------------------------------------------------------------ frames in */

void aurora_process_input(struct server *s, struct conn *c)
{
    struct aurora *a = aur_of(s);
    size_t off = 0;
    while (!c->closing && off < c->in.len) {
        struct frame_hdr h;
        const uint8_t *p;
        size_t n;
        const char *why = NULL;
        int rc = frame_decode(c->in.data + off, c->in.len - off, &h, &a->scratch, &p, &n, &why);
        if (rc == 0)
            break;
        if (rc < 0) {
            rd_warn("corrupt frame from %s: %s; closing the connection", c->addr, why ? why : rd_strerror(rc));
            conn_close(s, c);
            return;
        }
        off += (size_t)rc;
        if (c->kind == CONN_STORAGE && c->role_conn != NULL) /* a GetPage link (aur_getpage.c) */
            aur_gp_on_frame(s, c, &h, p, n);
        else if (c->kind == CONN_STORAGE)
            aur_link_on_frame(s, c, &h, p, n);
        else if (c->kind == CONN_FEED_UP && h.type == AUR_MSG_FEED)
            aur_reader_on_feed(s, p, n);
        else if (c->kind == CONN_FEED_UP && h.type == AUR_MSG_FEED_REDO)
            aur_reader_on_feed_redo(s, p, n);
        else if (c->kind == CONN_FEED_UP && h.type == TRACE_MARK_FRAME_TYPE) /* issue 13: C22 */
            aur_trace_on_mark(s, c, p, n);
        else if (c->kind == CONN_READER_FEED && h.type == AUR_MSG_READPOINT && n == 8)
            c->follower_lsn = rd_get_u64le(p);
        else {
            rd_warn("unexpected message type %u from %s; closing the connection", h.type, c->addr);
            conn_close(s, c);
            return;
        }
    }
    rd_buf_consume(&c->in, off);
    aur_reader_reread_meta(s);
}

void aurora_on_conn_closed(struct server *s, struct conn *c)
{
    struct aurora *a = aur_of(s);
    if (c->kind == CONN_STORAGE && c->role_conn != NULL) {
        aur_gp_conn_closed(s, c);
    } else if (c->kind == CONN_STORAGE && c->role_idx >= 0 && a->node[c->role_idx].conn == c) {
        struct aur_node *nd = &a->node[c->role_idx];
        nd->conn = NULL;
        nd->retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        if (a->role_writer)
            rd_warn("lost the link to storage node %d (%s)", c->role_idx + 1, c->addr);
    } else if (c->kind == CONN_READER_FEED) {
        a->nreaders--;
        rd_info("reader \"%s\" (%s) left", c->follower_name, c->addr);
    } else if (c->kind == CONN_FEED_UP && a->feed_conn == c) {
        a->feed_conn = NULL;
        a->feed_retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        if (s->role == SERVER_ROLE_READER)
            rd_warn("lost the feed from the writer %s:%d; reconnecting", a->writer_host, a->writer_port);
    }
}

void aurora_tick(struct server *s)
{
    struct aurora *a = aur_of(s);
    uint64_t now = aur_now_ms();
    aur_gp_tick(s); /* GetPage requests: hedges, timeouts */
    if (s->role == SERVER_ROLE_READER) {
        if (a->feed_conn == NULL && now >= a->feed_retry_ms)
            aur_reader_connect(s);
        if (a->feed_conn && now - a->status_ms >= 100) {
            aur_reader_reread_meta(s); /* only if a re-read failed: retried every 100 ms */
            uint8_t b[8];
            rd_put_u64le(b, a->read_lsn);
            if (frame_append(&a->feed_conn->out, AUR_MSG_READPOINT, a->epoch, b, 8, 0) < 0)
                rd_panic("out of memory");
            a->status_ms = now;
        }
        return;
    }
    if (s->role != SERVER_ROLE_WRITER)
        return;
    if (a->q.vdl < a->last_lsn && now - a->scl_poll_ms >= 100) {
        /* Records wait for a quorum: ask every node for its SCL. A node that
         * filled its gaps from peers (after a restart) acks nothing by itself
         * until new writes arrive; its STATE answer lets VDL move on. */
        for (unsigned i = 0; i < REDO_NODES; i++)
            if (a->node[i].conn && !a->node[i].conn->closing && a->node[i].conn->peer_authed &&
                sn_send_epoch(&a->node[i].conn->out, a->epoch, a->epoch) < 0)
                rd_panic("out of memory");
        a->scl_poll_ms = now;
    }
    if (now - a->readpoint_ms >= 1000) { /* the oldest read point, for the nodes' GC */
        uint64_t min = a->q.vdl;
        for (struct conn *c = s->conns; c; c = c->next)
            if (c->kind == CONN_READER_FEED && c->follower_lsn)
                min = RD_MIN(min, c->follower_lsn);
        for (unsigned i = 0; i < REDO_NODES; i++)
            if (a->node[i].conn && a->node[i].conn->peer_authed &&
                sn_send_readpoint(&a->node[i].conn->out, a->epoch, min) < 0)
                rd_panic("out of memory");
        a->min_read_point = min;
        a->readpoint_ms = now;
    }
}


/* ------------------------------------------------------------ INFO */

void aurora_info(struct server *s, struct rd_buf *b)
{
    struct aurora *a = aur_of(s);
    if (s->role == SERVER_ROLE_READER) {
        rd_buf_appendf(b,
                       "# Replication\r\nrole:slave\r\nredoubt_role:reader\r\nmaster_host:%s\r\nmaster_port:%d\r\n"
                       "master_link_status:%s\r\nread_point:%" PRIu64 "\r\nwriter_vdl:%" PRIu64
                       "\r\nlag_lsn:%" PRIu64 "\r\nlag_ms:%.3f\r\nfeed_messages:%" PRIu64 "\r\n",
                       a->writer_host, a->writer_port, a->feed_conn ? "up" : "down", a->read_lsn, a->writer_vdl,
                       a->writer_vdl > a->read_lsn ? a->writer_vdl - a->read_lsn : 0, a->lag_us / 1000.0,
                       a->feed_msgs);
        aur_gp_info(a, b);
        rd_buf_appendf(b, "\r\n");
        return;
    }
    uint64_t commits = a->commits ? a->commits : 1;
    rd_buf_appendf(b,
                   "# Replication\r\nrole:master\r\nredoubt_role:writer\r\nepoch:%" PRIu64 "\r\nfenced:%d\r\n"
                   "last_lsn:%" PRIu64 "\r\nvcl:%" PRIu64 "\r\nvdl:%" PRIu64 "\r\nrecovered_vdl:%" PRIu64
                   "\r\nmaster_repl_offset:%" PRIu64 "\r\nconnected_slaves:%zu\r\n",
                   a->epoch, a->fenced || s->fenced, a->last_lsn, a->q.vcl, a->q.vdl, a->recovered_vdl, a->q.vdl, a->nreaders);
    for (unsigned i = 0; i < REDO_NODES; i++) {
        const struct aur_node *nd = &a->node[i];
        rd_buf_appendf(b, "storage%u:addr=%s:%d,state=%s,scl=%" PRIu64 ",acks=%" PRIu64 ",ack_latency_ms=%.3f\r\n",
                       i + 1, nd->host, nd->port, nd->conn ? "up" : "down", nd->scl, nd->acks, nd->ack_lat_us / 1000.0);
    }
    /* S20: what a stalled quorum looks like from here (writes wait, then -TIMEOUT) */
    unsigned up = 0;
    for (unsigned i = 0; i < REDO_NODES; i++)
        up += a->node[i].conn != NULL;
    uint64_t waiting = 0, oldest = 0;
    server_waits_info(s, &waiting, &oldest);
    unsigned renewed = 0;
    rd_buf_appendf(b, "lease:%s\r\nlease_monitors_renewed:%u\r\n",
                   !server_lease_required(s) ? "off" : server_lease_ok(s, &renewed) ? "ok" : "lost", renewed);
    rd_buf_appendf(b,
                   "storage_up:%u\r\nquorum_state:%s\r\ncommits_waiting:%" PRIu64 "\r\noldest_commit_wait_ms:%" PRIu64
                   "\r\ncommit_timeout_ms:%" PRIu64 "\r\ncommit_timeouts:%" PRIu64 "\r\n",
                   up, up >= REDO_WRITE_QUORUM ? "ok" : "blocked (writes wait: fewer than 4 of 6 storage nodes up)",
                   waiting, oldest, s->cfg.commit_timeout_ms, s->commit_timeouts);
    size_t k = 0;
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_READER_FEED)
            rd_buf_appendf(b, "reader%zu:name=%s,addr=%s,port=%d,read_point=%" PRIu64 ",lag_lsn=%" PRIu64 "\r\n",
                           k++, c->follower_name, c->addr, c->follower_port, c->follower_lsn,
                           a->q.vdl > c->follower_lsn ? a->q.vdl - c->follower_lsn : 0);
    rd_buf_appendf(b,
                   "redo_records:%" PRIu64 "\r\ncommits:%" PRIu64 "\r\nredo_bytes_per_commit:%.1f\r\n"
                   "redo_batch_bytes_per_commit:%.1f\r\nredo_wire_bytes_per_commit:%.1f\r\n"
                   "net_bytes_per_commit:%.1f\r\nframes_sent:%" PRIu64 "\r\nmin_read_point:%" PRIu64 "\r\n",
                   a->redo_records, a->commits, (double)a->redo_bytes_raw / (double)commits,
                   (double)a->redo_bytes_batch / (double)commits, (double)a->redo_bytes_wire / (double)commits,
                   (double)a->net_bytes_sent / (double)commits, a->frames_sent, a->min_read_point);
    aur_gp_info(a, b);
    rd_buf_appendf(b, "\r\n");
}
