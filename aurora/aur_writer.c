/*
 * aur_writer.c — the writer: the engine sink that turns page changes into redo records,
 * commit records, back-pressure, and the six asynchronous redo links (ship, acks, quorum).
 * Part of the aurora wing (aurora/); see aurora.c's header for the whole picture.
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
#include "server/trace_hooks.h"
#include "redo/sn_proto.h"
#include "aurora/aur_int.h"
#include "common/net.h"

/* ------------------------------------------------------------ writer: sink */

int aur_emit(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body, size_t body_len,
                    uint64_t *end_lsn)
{
    struct server *s = ctx;
    struct aurora *a = aur_of(s);
    if (!a->role_writer)
        return RD_ESTATE; /* a reader never changes pages */
    uint64_t lsn = a->last_lsn + 1;
    struct redo_rec r = {.lsn = lsn, .prev_pg_lsn = a->last_lsn, .page_id = page_id, .type = rec_type,
                         .flags = (flags & ENGINE_REC_FLAG_MTR_END) ? REDO_FLAG_CPL : 0, .body = body,
                         .body_len = (uint32_t)body_len};
    if (!a->batch_open) {
        redo_batch_begin(&a->batch, lsn);
        a->batch_open = 1;
    }
    int rc = redo_batch_add(&a->batch, &r);
    if (rc == RD_ETOOBIG && a->batch.hdr.nrecords > 0) {
        /* The batch must fit in one frame: send it now and start another
         * (big MSETs, or several in one turn). */
        aurora_ship(s);
        redo_batch_begin(&a->batch, lsn);
        a->batch_open = 1;
        rc = redo_batch_add(&a->batch, &r);
    }
    if (rc < 0)
        return rc;
    if (r.flags & REDO_FLAG_CPL) {
        rc = redo_quorum_add_cpl(&a->q, lsn);
        if (rc < 0)
            return rc;
        /* 1 would mean VDL moved at once: impossible for a new LSN, which no node holds yet. */
        rd_assert(rc == 0);
    }
    a->last_lsn = lsn;
    a->redo_records++;
    a->redo_bytes_raw += body_len + 12;
    if (page_id != ENGINE_PAGE_NONE && s->cfg.reader_feed_redo) {
        uint8_t h[17];
        rd_put_u64le(h, lsn);
        rd_put_u32le(h + 8, page_id);
        h[12] = rec_type;
        rd_put_u32le(h + 13, (uint32_t)body_len);
        if (rd_buf_append(&a->feedrec, h, 17) < 0 || rd_buf_append(&a->feedrec, body, body_len) < 0)
            return -ENOMEM;
    } else if (page_id != ENGINE_PAGE_NONE) {
        if (a->nchanged == a->changed_cap) {
            size_t cap = a->changed_cap ? a->changed_cap * 2 : 4096;
            void *p = realloc(a->changed, cap * sizeof(*a->changed));
            if (p == NULL)
                return -ENOMEM;
            a->changed = p;
            a->changed_cap = cap;
        }
        a->changed[a->nchanged].lsn = lsn;
        a->changed[a->nchanged].page_id = page_id;
        a->nchanged++;
    }
    *end_lsn = lsn;
    return 0;
}

uint64_t aur_durable(void *ctx)
{
    struct server *s = ctx;
    return aur_of(s)->q.vdl;
}

uint64_t aurora_insert_lsn(const struct server *s) { return aur_of(s)->last_lsn; }

int aurora_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn)
{
    uint8_t body[REDO_COMMIT_BODY_MAX];
    size_t n = redo_commit_body(body, txn_id); /* a varint: 1-3 bytes in practice (redo/README.md) */
    int rc = aur_emit(s, ENGINE_PAGE_NONE, REDO_REC_COMMIT, ENGINE_REC_FLAG_MTR_END, body, n, lsn);
    if (rc == 0)
        aur_of(s)->commits++;
    return rc;
}

int aurora_backpressure(const struct server *s)
{
    const struct aurora *a = aur_of(s);
    /* (a fenced writer is not paused: its clients get the fenced error) */
    return a->last_lsn - a->q.vdl > AUR_MAX_INFLIGHT_LSNS || a->q.cpl_n + 1024 >= a->q.cpl_cap;
}

/* ------------------------------------------------------------ writer: links */

void aur_vdl_advanced(struct server *s);

/* A node that holds a newer epoch than ours: a newer writer took over. Its
 * SCL covers the new writer's records, never ours: it must not count. */
static void writer_fenced(struct server *s, unsigned node, uint64_t their_epoch)
{
    struct aurora *a = aur_of(s);
    if (!a->fenced)
        rd_error("FENCED: storage node %u holds volume epoch %" PRIu64 ", newer than ours (%" PRIu64
                 "): a newer writer took over; this writer can no longer get any write acknowledged",
                 node + 1, their_epoch, a->epoch);
    a->fenced = 1;
}

/* Before a link is authenticated only the node's CHALLENGE is accepted: a
 * writer fences itself only on what an authenticated node says (README
 * "Peers"). On success our PROOF goes out, then the EPOCH that starts the link. */
static void link_on_auth(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct aurora *a = aur_of(s);
    uint8_t proof[RD_AUTH_PROOF_LEN];
    if (h->type != RD_AUTH_FRAME_TYPE || rd_auth_client_challenge(&s->auth, &c->hs, p, n, proof) < 0) {
        char text[256] = "";
        uint32_t code = 0;
        if (h->type == SN_MSG_ERROR)
            sn_parse_error(p, n, &code, text, sizeof(text));
        rd_warn("storage node %d (%s) failed peer authentication (%s%s); closing the link", c->role_idx + 1, c->addr,
                h->type == SN_MSG_ERROR ? "it says: " : "", h->type == SN_MSG_ERROR ? text : "its proof does not verify");
        conn_close(s, c);
        return;
    }
    c->peer_authed = 1;
    struct aur_node *nd = &a->node[c->role_idx];
    if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, proof, sizeof(proof), 0) < 0 ||
        sn_send_epoch(&c->out, a->epoch, a->epoch) < 0 || rd_buf_append(&c->out, nd->held.data, nd->held.len) < 0)
        rd_panic("out of memory");
    rd_buf_reset(&nd->held);
}

void aur_link_on_frame(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct aurora *a = aur_of(s);
    struct aur_node *nd = &a->node[c->role_idx];
    if (!c->peer_authed) {
        link_on_auth(s, c, h, p, n);
        return;
    }
    if (h->type == SN_MSG_ACK) {
        struct sn_ack m;
        if (sn_parse_ack(p, n, &m) < 0) {
            rd_warn("storage node %d sent a malformed ACK; closing the link", c->role_idx + 1);
            conn_close(s, c);
            return;
        }
        if (m.epoch != a->epoch) { /* only acks under our own epoch count */
            if (m.epoch > a->epoch)
                writer_fenced(s, (unsigned)c->role_idx, m.epoch);
            return;
        }
        uint64_t now = rd_now_us();
        while (nd->nsent > 0 && nd->sent[nd->sent_head].last_lsn <= m.scl) {
            nd->ack_lat_us = now - nd->sent[nd->sent_head].send_us;
            nd->sent_head = (nd->sent_head + 1) % AUR_SENT_RING;
            nd->nsent--;
        }
        if (m.scl > nd->scl)
            nd->scl_moved_ms = aur_now_ms(), nd->resend_logged = 0; /* S27 */
        nd->scl = RD_MAX(nd->scl, m.scl);
        trace_lsn_reached(TRACE_ACK_RECEIVED, (uint16_t)(c->role_idx + 1), m.scl, 0); /* issue 13 */
        nd->acks++;
        nd->last_ack_ms = aur_now_ms();
        if (redo_quorum_ack(&a->q, (unsigned)c->role_idx, m.scl) > 0)
            aur_vdl_advanced(s);
    } else if (h->type == SN_MSG_STATE) {
        struct sn_state st;
        if (sn_parse_state(p, n, &st) == 0) {
            if (st.epoch != a->epoch) {
                if (st.epoch > a->epoch)
                    writer_fenced(s, (unsigned)c->role_idx, st.epoch);
                return;
            }
            if (st.scl > nd->scl)
                nd->scl_moved_ms = aur_now_ms(), nd->resend_logged = 0; /* S27 */
            nd->scl = RD_MAX(nd->scl, st.scl);
            if (redo_quorum_ack(&a->q, (unsigned)c->role_idx, RD_MIN(st.scl, a->last_lsn)) > 0)
                aur_vdl_advanced(s);
            aur_retain_check(s, (unsigned)c->role_idx, st.scl); /* S27: frames no node received */
        }
    } else if (h->type == SN_MSG_ERROR) {
        uint32_t code = 0;
        char text[512];
        sn_parse_error(p, n, &code, text, sizeof(text));
        if (code == SN_ERR_STALE_EPOCH) {
            if (!a->fenced)
                rd_error("FENCED: storage node %d refuses our writes (%s): a newer writer holds a higher volume "
                         "epoch than ours (%" PRIu64 "); this writer can no longer get any write acknowledged",
                         c->role_idx + 1, text, a->epoch);
            a->fenced = 1;
        } else {
            rd_warn("storage node %d: error %u: %s", c->role_idx + 1, code, text);
        }
    }
}

void aur_link_connect(struct server *s, unsigned i)
{
    struct aurora *a = aur_of(s);
    struct aur_node *nd = &a->node[i];
    int fd = rd_net_connect(nd->host, nd->port, AUR_CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        if (!nd->down_logged)
            rd_warn("storage node %u (%s:%d) is unreachable; retrying", i + 1, nd->host, nd->port);
        nd->down_logged = 1;
        nd->retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        return;
    }
    struct conn *c = conn_new(s, fd, CONN_STORAGE);
    c->role_idx = (int)i;
    snprintf(c->addr, sizeof(c->addr), "%s:%d", nd->host, nd->port);
    nd->conn = c;
    nd->nsent = 0;
    nd->scl_moved_ms = aur_now_ms(); /* S27: a new link gets time before it counts as stuck */
    if (nd->down_logged || nd->ever_up)
        rd_info("storage node %u (%s:%d) is back", i + 1, nd->host, nd->port);
    nd->down_logged = 0;
    nd->ever_up = 1;
    rd_buf_reset(&nd->held);
    if (s->auth.enabled) { /* HELLO first; link_on_auth sends PROOF and EPOCH */
        uint8_t hello[RD_AUTH_HELLO_LEN];
        c->peer_authed = 0;
        rd_auth_client_hello(&s->auth, &c->hs, NULL, hello);
        if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, hello, sizeof(hello), 0) < 0)
            rd_panic("out of memory");
        return;
    }
    /* The node may have restarted: make it hold our epoch before any write. */
    if (sn_send_epoch(&c->out, a->epoch, a->epoch) < 0)
        rd_panic("out of memory");
}

void aurora_ship(struct server *s)
{
    struct aurora *a = aur_of(s);
    uint64_t now = aur_now_ms();
    if (a->role_writer)
        for (unsigned i = 0; i < REDO_NODES; i++)
            if (a->node[i].conn == NULL && now >= a->node[i].retry_ms)
                aur_link_connect(s, i);
    if (!a->role_writer || !a->batch_open)
        return;
    redo_batch_finish(&a->batch, a->q.vdl);
    rd_buf_reset(&a->frame);
    int compress = a->batch.buf.len >= frame_compress_min_bytes();
    if (frame_append(&a->frame, SN_MSG_WRITE, a->epoch, a->batch.buf.data, a->batch.buf.len, compress) < 0)
        rd_panic("could not frame a redo batch of %zu bytes", a->batch.buf.len);
    a->batch_open = 0;
    a->frames_sent++;
    a->redo_bytes_batch += a->batch.buf.len;
    a->redo_bytes_wire += a->frame.len;
    trace_lsn_reached(TRACE_REDO_BATCH, 0, a->last_lsn, a->batch.buf.len); /* issue 13: b = bytes before lz4 */
    aur_retain_add(a, a->frame.data, a->frame.len, a->last_lsn); /* S27 */
    uint64_t us = rd_now_us();
    for (unsigned i = 0; i < REDO_NODES; i++) {
        struct aur_node *nd = &a->node[i];
        struct conn *c = nd->conn;
        if (c == NULL || c->closing)
            continue;
        if (c->out.len + c->sending.len + nd->held.len > AUR_LINK_MAX_QUEUED) {
            rd_warn("storage node %u is not keeping up (%zu bytes queued): dropping the link; it catches up "
                    "from its peers", i + 1, c->out.len + c->sending.len + nd->held.len);
            conn_close(s, c);
            continue;
        }
        /* A link still authenticating holds the frames until its PROOF is out. */
        trace_ship(c->peer_authed ? &c->out : &nd->held, a->epoch, (uint16_t)(i + 1), a->last_lsn, a->frame.len); /* issue 13: C22 */
        rd_buf_append(c->peer_authed ? &c->out : &nd->held, a->frame.data, a->frame.len);
        a->net_bytes_sent += a->frame.len;
        if (nd->nsent == AUR_SENT_RING) {
            nd->sent_head = (nd->sent_head + 1) % AUR_SENT_RING;
            nd->nsent--;
        }
        size_t k = (nd->sent_head + nd->nsent) % AUR_SENT_RING;
        nd->sent[k].last_lsn = a->last_lsn;
        nd->sent[k].send_us = us;
        nd->nsent++;
    }
}
