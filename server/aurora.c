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
#include "storage-node/sn_proto.h"

#define AUR_MSG_FEED 50        /* writer -> reader: u64 vdl, u64 send_us, u32 n, n x u32 page ids */
#define AUR_MSG_READPOINT 51   /* reader -> writer: u64 read point */
#define AUR_MSG_FEED_REDO 52   /* writer -> reader: u64 vdl, u64 send_us, u32 n, n x {u64 lsn, u32 page, u8 type, u32 len, body} */
#define AUR_MAX_INFLIGHT_LSNS 200000u /* back-pressure: LSNs allocated above VDL */
#define AUR_FEED_REDO_MAX_BYTES (4u << 20) /* more records than this at one VDL: a page-id FEED instead */
#define AUR_LINK_MAX_QUEUED (64u << 20)
#define AUR_CONNECT_TIMEOUT_MS 300
#define AUR_RECONNECT_MS 300u
#define AUR_GETPAGE_HEDGE_MS 20
#define AUR_GETPAGE_TIMEOUT_MS 2000

static uint64_t aur_now_ms(void) { return rd_now_ms(); }

/* ------------------------------------------------------------ blocking control sockets */

static int parse_hostport(const char *s, char *host, size_t host_len, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return -1;
    size_t hl = RD_MIN((size_t)(colon - s), host_len - 1);
    memcpy(host, s, hl);
    host[hl] = 0;
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

/* Non-blocking connect with a timeout; returns a connected blocking fd or -1. */
static int connect_timeout(const char *host, int port, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0 || res == NULL)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return -1;
    }
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    if (rc < 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof(err);
        if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
            close(fd);
            return -1;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int write_all_fd(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads frames from a blocking control socket until one of type want (or
 * SN_MSG_ERROR) arrives or the deadline passes. The payload is copied into out. */
static int ctl_read_frame(struct aur_ctl *c, uint8_t want, uint64_t deadline_ms, struct frame_hdr *h,
                          struct rd_buf *out)
{
    for (;;) {
        const uint8_t *payload;
        size_t plen;
        const char *why = NULL;
        while (c->in.len > 0) {
            int rc = frame_decode(c->in.data, c->in.len, h, &c->scratch, &payload, &plen, &why);
            if (rc == 0)
                break;
            if (rc < 0)
                return RD_ECORRUPT;
            rd_buf_reset(out);
            int match = h->type == want || h->type == SN_MSG_ERROR;
            if (match && rd_buf_append(out, payload, plen) < 0)
                return -ENOMEM;
            rd_buf_consume(&c->in, (size_t)rc);
            if (match)
                return 0;
        }
        uint64_t now = aur_now_ms();
        if (now >= deadline_ms)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline_ms - now));
        if (pr <= 0)
            return pr == 0 ? -ETIMEDOUT : -errno;
        if (rd_buf_reserve(&c->in, 65536) < 0)
            return -ENOMEM;
        ssize_t r = recv(c->fd, c->in.data + c->in.len, 65536, 0);
        if (r <= 0)
            return r == 0 ? -ECONNRESET : -errno;
        c->in.len += (size_t)r;
    }
}

static void ctl_close(struct aur_ctl *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    rd_buf_reset(&c->in);
}

static int ctl_ensure(struct aurora *a, unsigned i)
{
    struct aur_ctl *c = &a->ctl[i];
    if (c->fd >= 0)
        return 0;
    if (aur_now_ms() < c->retry_ms)
        return -1;
    c->fd = connect_timeout(a->node[i].host, a->node[i].port, AUR_CONNECT_TIMEOUT_MS);
    if (c->fd < 0) {
        c->retry_ms = aur_now_ms() + 200;
        return -1;
    }
    struct server *s = (struct server *)((char *)a - offsetof(struct server, aur));
    char aerr[256];
    if (s->auth.enabled && rd_auth_client_frames(&s->auth, c->fd, 1000, aerr, sizeof(aerr)) < 0) {
        rd_warn("storage node %u (%s:%d) failed peer authentication: %s", i + 1, a->node[i].host, a->node[i].port,
                aerr);
        ctl_close(c);
        c->retry_ms = aur_now_ms() + 1000;
        return -1;
    }
    return 0;
}

/* One request/answer on node i's control socket. */
static int ctl_call(struct aurora *a, unsigned i, const struct rd_buf *req, uint8_t want, int timeout_ms,
                    struct frame_hdr *h, struct rd_buf *out)
{
    if (ctl_ensure(a, i) < 0)
        return -ENOTCONN;
    struct aur_ctl *c = &a->ctl[i];
    if (write_all_fd(c->fd, req->data, req->len) < 0) {
        ctl_close(c);
        return -ECONNRESET;
    }
    int rc = ctl_read_frame(c, want, aur_now_ms() + (uint64_t)timeout_ms, h, out);
    if (rc < 0)
        ctl_close(c);
    return rc;
}

/* EPOCH(e) to node i; fills its STATE. */
static int node_epoch(struct aurora *a, unsigned i, uint64_t epoch, struct sn_state *st)
{
    struct rd_buf req = {0}, out = {0};
    struct frame_hdr h;
    int rc = sn_send_epoch(&req, epoch, epoch);
    if (rc == 0)
        rc = ctl_call(a, i, &req, SN_MSG_STATE, 1000, &h, &out);
    if (rc == 0)
        rc = h.type == SN_MSG_STATE ? sn_parse_state(out.data, out.len, st) : RD_ESTALE;
    rd_buf_free(&req);
    rd_buf_free(&out);
    return rc;
}

static int node_truncate(struct aurora *a, unsigned i, uint64_t epoch, uint64_t keep, struct sn_state *st)
{
    struct rd_buf req = {0}, out = {0};
    struct frame_hdr h;
    struct sn_truncate t = {.epoch = epoch, .keep_upto_lsn = keep};
    int rc = sn_send_truncate(&req, epoch, &t);
    if (rc == 0)
        rc = ctl_call(a, i, &req, SN_MSG_STATE, 2000, &h, &out);
    if (rc == 0)
        rc = h.type == SN_MSG_STATE ? sn_parse_state(out.data, out.len, st) : RD_ESTALE;
    rd_buf_free(&req);
    rd_buf_free(&out);
    return rc;
}

/* GetPage@LSN with hedging: ask the node most likely to have it; if it has not
 * answered within AUR_GETPAGE_HEDGE_MS (or says not yet / corrupt), ask the next. */
static int aur_read_page(void *ctx, uint32_t page_id, uint8_t *page)
{
    struct server *s = ctx;
    struct aurora *a = &s->aur;
    uint64_t lsn = a->read_lsn;
    a->getpage_requests++;
    uint64_t deadline = aur_now_ms() + AUR_GETPAGE_TIMEOUT_MS;
    unsigned start = (unsigned)(a->getpage_requests % REDO_NODES);
    struct rd_buf req = {0}, out = {0};
    int result = -EIO;
    for (unsigned k = 0; k < REDO_NODES * 2 && aur_now_ms() < deadline; k++) {
        unsigned i = (start + k) % REDO_NODES;
        if (a->node[i].scl < lsn && a->role_writer && k < REDO_NODES)
            continue; /* first round: only nodes known to cover the read point */
        rd_buf_reset(&req);
        struct sn_getpage g = {.req_id = ++a->req_id, .page_id = page_id, .read_lsn = lsn};
        if (sn_send_getpage(&req, a->epoch, &g) < 0)
            break;
        struct frame_hdr h;
        int rc = ctl_call(a, i, &req, SN_MSG_PAGE, k < REDO_NODES ? 200 : 1000, &h, &out);
        if (rc < 0 || h.type != SN_MSG_PAGE)
            continue;
        struct sn_page p;
        if (sn_parse_page(out.data, out.len, &p) < 0 || p.req_id != g.req_id)
            continue;
        if (p.status != SN_OK) {
            if (p.status == SN_ERR_CORRUPT)
                rd_warn("storage node %u reports page %u corrupt; asking another", i + 1, page_id);
            continue;
        }
        if (engine_page_lsn(p.page) > lsn) {
            /* A page from above the read point would show part of the future
             * (and, on a reader, get no feed records it already has). */
            rd_warn("storage node %u sent page %u at lsn %" PRIu64 ", above the read point %" PRIu64
                    "; asking another", i + 1, page_id, engine_page_lsn(p.page), lsn);
            continue;
        }
        memcpy(page, p.page, ENGINE_PAGE_SIZE);
        result = 0;
        if (k > 0)
            a->getpage_hedged++;
        break;
    }
    rd_buf_free(&req);
    rd_buf_free(&out);
    if (result < 0)
        rd_error("GetPage(%u @ %" PRIu64 ") failed on every storage node", page_id, lsn);
    return result;
}

/* ------------------------------------------------------------ writer: sink */

static int aur_emit(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body, size_t body_len,
                    uint64_t *end_lsn)
{
    struct server *s = ctx;
    struct aurora *a = &s->aur;
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

static uint64_t aur_durable(void *ctx)
{
    struct server *s = ctx;
    return s->aur.q.vdl;
}

uint64_t aurora_insert_lsn(const struct server *s) { return s->aur.last_lsn; }

int aurora_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn)
{
    uint8_t body[8];
    rd_put_u64le(body, txn_id);
    int rc = aur_emit(s, ENGINE_PAGE_NONE, REDO_REC_COMMIT, ENGINE_REC_FLAG_MTR_END, body, 8, lsn);
    if (rc == 0)
        s->aur.commits++;
    return rc;
}

int aurora_backpressure(const struct server *s)
{
    const struct aurora *a = &s->aur;
    /* (a fenced writer is not paused: its clients get the fenced error) */
    return a->last_lsn - a->q.vdl > AUR_MAX_INFLIGHT_LSNS || a->q.cpl_n + 1024 >= a->q.cpl_cap;
}

/* ------------------------------------------------------------ writer: links */

static void vdl_advanced(struct server *s);

/* A node that holds a newer epoch than ours: a newer writer took over. Its
 * SCL covers the new writer's records, never ours: it must not count. */
static void writer_fenced(struct server *s, unsigned node, uint64_t their_epoch)
{
    struct aurora *a = &s->aur;
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
    struct aurora *a = &s->aur;
    uint8_t proof[RD_AUTH_PROOF_LEN];
    if (h->type != RD_AUTH_FRAME_TYPE || rd_auth_client_challenge(&s->auth, &c->hs, p, n, proof) < 0) {
        char text[256] = "";
        uint32_t code = 0;
        if (h->type == SN_MSG_ERROR)
            sn_parse_error(p, n, &code, text, sizeof(text));
        rd_warn("storage node %d (%s) failed peer authentication (%s%s); closing the link", c->sn_idx + 1, c->addr,
                h->type == SN_MSG_ERROR ? "it says: " : "", h->type == SN_MSG_ERROR ? text : "its proof does not verify");
        conn_close(s, c);
        return;
    }
    c->peer_authed = 1;
    struct aur_node *nd = &a->node[c->sn_idx];
    if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, proof, sizeof(proof), 0) < 0 ||
        sn_send_epoch(&c->out, a->epoch, a->epoch) < 0 || rd_buf_append(&c->out, nd->held.data, nd->held.len) < 0)
        rd_panic("out of memory");
    rd_buf_reset(&nd->held);
}

static void link_on_frame(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct aurora *a = &s->aur;
    struct aur_node *nd = &a->node[c->sn_idx];
    if (!c->peer_authed) {
        link_on_auth(s, c, h, p, n);
        return;
    }
    if (h->type == SN_MSG_ACK) {
        struct sn_ack m;
        if (sn_parse_ack(p, n, &m) < 0) {
            rd_warn("storage node %d sent a malformed ACK; closing the link", c->sn_idx + 1);
            conn_close(s, c);
            return;
        }
        if (m.epoch != a->epoch) { /* only acks under our own epoch count */
            if (m.epoch > a->epoch)
                writer_fenced(s, (unsigned)c->sn_idx, m.epoch);
            return;
        }
        uint64_t now = rd_now_us();
        while (nd->nsent > 0 && nd->sent[nd->sent_head].last_lsn <= m.scl) {
            nd->ack_lat_us = now - nd->sent[nd->sent_head].send_us;
            nd->sent_head = (nd->sent_head + 1) % AUR_SENT_RING;
            nd->nsent--;
        }
        nd->scl = RD_MAX(nd->scl, m.scl);
        nd->acks++;
        nd->last_ack_ms = aur_now_ms();
        if (redo_quorum_ack(&a->q, (unsigned)c->sn_idx, m.scl) > 0)
            vdl_advanced(s);
    } else if (h->type == SN_MSG_STATE) {
        struct sn_state st;
        if (sn_parse_state(p, n, &st) == 0) {
            if (st.epoch != a->epoch) {
                if (st.epoch > a->epoch)
                    writer_fenced(s, (unsigned)c->sn_idx, st.epoch);
                return;
            }
            nd->scl = RD_MAX(nd->scl, st.scl);
            if (redo_quorum_ack(&a->q, (unsigned)c->sn_idx, RD_MIN(st.scl, a->last_lsn)) > 0)
                vdl_advanced(s);
        }
    } else if (h->type == SN_MSG_ERROR) {
        uint32_t code = 0;
        char text[512];
        sn_parse_error(p, n, &code, text, sizeof(text));
        if (code == SN_ERR_STALE_EPOCH) {
            if (!a->fenced)
                rd_error("FENCED: storage node %d refuses our writes (%s): a newer writer holds a higher volume "
                         "epoch than ours (%" PRIu64 "); this writer can no longer get any write acknowledged",
                         c->sn_idx + 1, text, a->epoch);
            a->fenced = 1;
        } else {
            rd_warn("storage node %d: error %u: %s", c->sn_idx + 1, code, text);
        }
    }
}

static void link_connect(struct server *s, unsigned i)
{
    struct aurora *a = &s->aur;
    struct aur_node *nd = &a->node[i];
    int fd = connect_timeout(nd->host, nd->port, AUR_CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        if (!nd->down_logged)
            rd_warn("storage node %u (%s:%d) is unreachable; retrying", i + 1, nd->host, nd->port);
        nd->down_logged = 1;
        nd->retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        return;
    }
    struct conn *c = conn_new(s, fd, CONN_STORAGE);
    c->sn_idx = (int)i;
    snprintf(c->addr, sizeof(c->addr), "%s:%d", nd->host, nd->port);
    nd->conn = c;
    nd->nsent = 0;
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
    struct aurora *a = &s->aur;
    uint64_t now = aur_now_ms();
    if (a->role_writer)
        for (unsigned i = 0; i < REDO_NODES; i++)
            if (a->node[i].conn == NULL && now >= a->node[i].retry_ms)
                link_connect(s, i);
    if (!a->role_writer || !a->batch_open)
        return;
    redo_batch_finish(&a->batch, a->q.vdl);
    rd_buf_reset(&a->frame);
    int compress = a->batch.buf.len >= 4096;
    if (frame_append(&a->frame, SN_MSG_WRITE, a->epoch, a->batch.buf.data, a->batch.buf.len, compress) < 0)
        rd_panic("could not frame a redo batch of %zu bytes", a->batch.buf.len);
    a->batch_open = 0;
    a->frames_sent++;
    a->redo_bytes_batch += a->batch.buf.len;
    a->redo_bytes_wire += a->frame.len;
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
        if (rd_buf_append(c->peer_authed ? &c->out : &nd->held, a->frame.data, a->frame.len) < 0)
            rd_panic("out of memory");
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

/* ------------------------------------------------------------ writer: readers feed */

static void vdl_advanced(struct server *s)
{
    struct aurora *a = &s->aur;
    s->durable_lsn = a->q.vdl;
    a->read_lsn = a->q.vdl;
    server_update_release(s);
    if (s->cfg.reader_feed_redo) {
        /* The redo records up to VDL go to the readers, which apply them to
         * the pages they have cached. */
        size_t off = 0;
        uint32_t nrec = 0;
        while (off < a->feedrec.len && rd_get_u64le(a->feedrec.data + off) <= a->q.vdl) {
            off += 17 + rd_get_u32le(a->feedrec.data + off + 13);
            nrec++;
        }
        if (a->nreaders > 0 && off > AUR_FEED_REDO_MAX_BYTES) {
            /* Too much for one frame (VDL jumped over many batches, e.g. after
             * a storage stall): the ids of those pages instead (a FEED, which
             * readers drop them for) — 4 bytes per record, at most
             * AUR_MAX_INFLIGHT_LSNS + one transaction of them. */
            rd_buf_reset(&a->feed);
            uint8_t hdr[20];
            rd_put_u64le(hdr, a->q.vdl);
            rd_put_u64le(hdr + 8, rd_wall_us());
            rd_put_u32le(hdr + 16, nrec);
            if (rd_buf_append(&a->feed, hdr, 20) < 0)
                rd_panic("out of memory");
            for (size_t o = 0; o < off; o += 17 + rd_get_u32le(a->feedrec.data + o + 13))
                if (rd_buf_append(&a->feed, a->feedrec.data + o + 8, 4) < 0)
                    rd_panic("out of memory");
            rd_info("reader feed: %u records (%zu bytes) up to vdl %" PRIu64 " exceed one frame: sending their page "
                    "ids instead", nrec, off, a->q.vdl);
            for (struct conn *c = s->conns; c; c = c->next)
                if (c->kind == CONN_READER_FEED && !c->closing &&
                    frame_append(&c->out, AUR_MSG_FEED, a->epoch, a->feed.data, a->feed.len, 1) < 0)
                    rd_panic("out of memory");
        } else if (a->nreaders > 0) {
            rd_buf_reset(&a->feed);
            uint8_t hdr[20];
            rd_put_u64le(hdr, a->q.vdl);
            rd_put_u64le(hdr + 8, rd_wall_us());
            rd_put_u32le(hdr + 16, nrec);
            if (rd_buf_append(&a->feed, hdr, 20) < 0 || rd_buf_append(&a->feed, a->feedrec.data, off) < 0)
                rd_panic("out of memory");
            for (struct conn *c = s->conns; c; c = c->next)
                if (c->kind == CONN_READER_FEED && !c->closing &&
                    frame_append(&c->out, AUR_MSG_FEED_REDO, a->epoch, a->feed.data, a->feed.len,
                                 a->feed.len >= 4096) < 0)
                    rd_panic("out of memory");
        }
        rd_buf_consume(&a->feedrec, off);
        for (struct conn *c = s->conns; c; c = c->next)
            if (c->kind == CONN_CLIENT && c->in.len > 0)
                conn_mark_ready(s, c);
        return;
    }
    /* Pages changed up to VDL go to the readers, in one FEED frame each. */
    size_t n = 0;
    while (n < a->nchanged && a->changed[n].lsn <= a->q.vdl)
        n++;
    if (a->nreaders > 0) {
        rd_buf_reset(&a->feed);
        uint8_t hdr[20];
        rd_put_u64le(hdr, a->q.vdl);
        rd_put_u64le(hdr + 8, rd_wall_us());
        rd_put_u32le(hdr + 16, (uint32_t)n);
        if (rd_buf_append(&a->feed, hdr, 20) < 0)
            rd_panic("out of memory");
        for (size_t i = 0; i < n; i++) {
            uint8_t b[4];
            rd_put_u32le(b, a->changed[i].page_id);
            if (rd_buf_append(&a->feed, b, 4) < 0)
                rd_panic("out of memory");
        }
        for (struct conn *c = s->conns; c; c = c->next)
            if (c->kind == CONN_READER_FEED && !c->closing &&
                frame_append(&c->out, AUR_MSG_FEED, a->epoch, a->feed.data, a->feed.len, a->feed.len >= 4096) < 0)
                rd_panic("out of memory");
    }
    memmove(a->changed, a->changed + n, (a->nchanged - n) * sizeof(*a->changed));
    a->nchanged -= n;
    /* Clients paused by back-pressure may go on. */
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_CLIENT && c->in.len > 0)
            conn_mark_ready(s, c);
}

/* REDOUBT.READER <name>: a reader subscribes to the feed. */
void aurora_cmd_reader(struct server *s, struct conn *c, const struct resp_args *args)
{
    if (s->role != SERVER_ROLE_WRITER) {
        resp_error(&c->out, "ERR this node is not an aurora writer");
        return;
    }
    c->kind = CONN_READER_FEED;
    s->aur.nreaders++;
    snprintf(c->reader_name, sizeof(c->reader_name), "%.*s", (int)RD_MIN(args->v[1].len, 60),
             (const char *)args->v[1].ptr);
    c->reader_port = args->n >= 3 ? RD_MAX(0, RD_MIN(65535, atoi((const char *)args->v[2].ptr))) : 0; /* listens on */
    rd_info("reader \"%s\" (%s) subscribed to the feed", c->reader_name, c->addr);
    /* First message: the current VDL (nothing to drop: a new reader has no cache). */
    uint8_t hdr[20];
    rd_put_u64le(hdr, s->aur.q.vdl);
    rd_put_u64le(hdr + 8, rd_wall_us());
    rd_put_u32le(hdr + 16, 0);
    if (frame_append(&c->out, AUR_MSG_FEED, s->aur.epoch, hdr, 20, 0) < 0)
        rd_panic("out of memory");
}

/* ------------------------------------------------------------ reader side */

/* Opens the volume at read point vdl with an empty page cache. 0, or the
 * engine stays NULL (the next feed message retries). */
static int reader_open_at(struct server *s, uint64_t vdl)
{
    struct aurora *a = &s->aur;
    rd_assert(s->engine == NULL);
    a->read_lsn = vdl;
    a->meta_stale = 0;
    struct engine_options eo = {.data_path = NULL,
                                .cache_pages = RD_MAX((size_t)64, s->cfg.cache_mb * 1024u * 1024u / ENGINE_PAGE_SIZE),
                                .sink = {.ctx = s, .emit = aur_emit, .read_page = aur_read_page}};
    int rc = engine_open(&eo, &s->engine);
    if (rc < 0) {
        rd_warn("could not open the volume at read point %" PRIu64 ": %s; retrying", vdl, rd_strerror(rc));
        s->engine = NULL;
        return rc;
    }
    rd_info("reading the volume at read point %" PRIu64 " (%" PRIu64 " keys)", vdl, engine_key_count(s->engine));
    return 0;
}

static void reader_drop_cache(struct server *s)
{
    int rc = engine_close(s->engine);
    s->engine = NULL;
    if (rc < 0)
        rd_warn("closing the reader's engine: %s", rd_strerror(rc));
}

static void reader_feed_malformed(struct server *s, const char *what)
{
    struct aurora *a = &s->aur;
    rd_warn("malformed %s from the writer; reconnecting", what);
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
}

static void reader_feed_seen(struct aurora *a, uint64_t vdl, const uint8_t *p)
{
    a->writer_vdl = RD_MAX(a->writer_vdl, vdl);
    a->feed_send_us = rd_get_u64le(p + 8);
    a->feed_msgs++;
    a->lag_us = rd_wall_us() > a->feed_send_us ? rd_wall_us() - a->feed_send_us : 0;
}

/* ---- the feed decoders (pure: fuzz_feed) ---- */

int aur_feed_check(const uint8_t *p, size_t n)
{
    return n < 20 || (n - 20) % 4 != 0 || rd_get_u32le(p + 16) != (n - 20) / 4 ? RD_EPROTO : 0;
}

const char *aur_feed_redo_check(const uint8_t *p, size_t n, uint64_t read_lsn)
{
    if (n < 20)
        return "FEED_REDO";
    uint64_t vdl = rd_get_u64le(p);
    uint32_t cnt = rd_get_u32le(p + 16);
    if (vdl < read_lsn)
        return "FEED_REDO (its vdl is below the read point)";
    /* (A record at or below the read point is possible only in the first
     * frames after a subscription, whose pages were fetched at a read point
     * that includes it: engine_redo_if_cached skips it by the page LSN.) */
    size_t off = 20;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        if (off + 17 > n || rd_get_u32le(p + off + 13) > n - off - 17)
            return "FEED_REDO record";
        uint64_t lsn = rd_get_u64le(p + off);
        if (lsn <= prev || lsn > vdl)
            return "FEED_REDO (record LSNs out of order or above the frame's vdl)";
        prev = lsn;
        off += 17 + rd_get_u32le(p + off + 13);
    }
    return off != n ? "FEED_REDO (bytes after the last record)" : NULL;
}

static void reader_on_feed(struct server *s, const uint8_t *p, size_t n)
{
    struct aurora *a = &s->aur;
    if (aur_feed_check(p, n) < 0) {
        reader_feed_malformed(s, "FEED");
        return;
    }
    uint64_t vdl = rd_get_u64le(p);
    uint32_t cnt = rd_get_u32le(p + 16);
    if (a->feed_fresh && s->engine != NULL) {
        /* A new subscription (reconnect, or a new writer): the invalidations
         * sent while we were away are lost, so the whole cache goes. */
        reader_drop_cache(s);
        rd_info("new feed subscription: dropping the page cache");
    }
    a->feed_fresh = 0;
    if (s->engine == NULL) {
        a->writer_vdl = RD_MAX(a->writer_vdl, vdl);
        if (vdl == 0 || reader_open_at(s, vdl) < 0)
            return; /* not initialised yet, or storage unreachable: the next feed retries */
    } else {
        if (vdl < a->read_lsn) {
            reader_feed_malformed(s, "FEED (its vdl is below the read point)");
            return;
        }
        /* Drop every page changed up to vdl, then move the read point: together,
         * in one step of the loop, so no read sees half of a mini-transaction. */
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t pid = rd_get_u32le(p + 20 + 4 * (size_t)i);
            if (pid == 0) { /* the meta page is re-read once, after the whole batch of feeds */
                a->meta_stale = 1;
                continue;
            }
            int rc = engine_invalidate_page(s->engine, pid);
            if (rc < 0) { /* cannot happen between commands (nothing is pinned): never keep a stale page */
                rd_warn("could not drop page %u from the cache (%s): dropping the whole cache", pid, rd_strerror(rc));
                reader_drop_cache(s);
                if (reader_open_at(s, vdl) < 0)
                    return;
                break;
            }
        }
        a->read_lsn = vdl;
    }
    reader_feed_seen(a, vdl, p);
}

/*
 * FEED_REDO: apply the records to cached pages, then move the read point.
 * Every page in the cache is the page at the read point (fetched at it, or
 * brought to it by every record since): records arrive in LSN order, each
 * frame exactly those in (previous vdl, vdl], and a page not cached when its
 * record arrives is fetched later at a read point that includes it. A record
 * that can be neither applied nor dropped would leave a stale page: then the
 * whole cache goes instead.
 */
static void reader_on_feed_redo(struct server *s, const uint8_t *p, size_t n)
{
    struct aurora *a = &s->aur;
    if (n < 20) {
        reader_feed_malformed(s, "FEED_REDO");
        return;
    }
    if (s->engine == NULL || a->feed_fresh) { /* first message: open (or reopen) at its VDL */
        uint8_t hdr[20];
        memcpy(hdr, p, 16);
        rd_put_u32le(hdr + 16, 0);
        reader_on_feed(s, hdr, 20);
        return;
    }
    uint64_t vdl = rd_get_u64le(p);
    uint32_t cnt = rd_get_u32le(p + 16);
    /* Validate the whole frame before applying anything. */
    const char *bad = aur_feed_redo_check(p, n, a->read_lsn);
    if (bad != NULL) {
        reader_feed_malformed(s, bad);
        return;
    }
    size_t off = 20;
    int meta = 0, reset = 0;
    for (uint32_t i = 0; i < cnt && !reset; i++) {
        uint64_t lsn = rd_get_u64le(p + off);
        uint32_t pid = rd_get_u32le(p + off + 8);
        uint8_t type = p[off + 12];
        uint32_t len = rd_get_u32le(p + off + 13);
        int rc = engine_redo_if_cached(s->engine, pid, type, p + off + 17, len, lsn);
        if (rc < 0 && pid == 0) {
            a->meta_stale = 1; /* re-read at the new read point (aurora_process_input) */
        } else if (rc < 0) {
            int drc = engine_invalidate_page(s->engine, pid);
            if (drc < 0) {
                rd_warn("could not apply or drop page %u (%s, then %s): dropping the whole cache", pid,
                        rd_strerror(rc), rd_strerror(drc));
                reset = 1;
            }
        }
        if (pid == 0)
            meta = 1;
        off += 17 + len;
    }
    if (reset) {
        reader_drop_cache(s);
        if (reader_open_at(s, vdl) < 0)
            return;
    } else {
        a->read_lsn = vdl;
        if (meta && !a->meta_stale && engine_reload_meta(s->engine) < 0)
            a->meta_stale = 1;
    }
    reader_feed_seen(a, vdl, p);
}

/* The meta page is re-read at the read point after a batch of feed frames
 * that changed it (FEED) or could not apply to it (FEED_REDO). A failed read
 * leaves it unusable (reads answer errors, never stale data) and is retried
 * after the next frame and every 100 ms (aurora_tick). */
static void reader_reread_meta(struct server *s)
{
    struct aurora *a = &s->aur;
    if (!a->meta_stale || s->engine == NULL)
        return;
    int rc = engine_invalidate_page(s->engine, 0);
    if (rc == 0)
        rc = engine_reload_meta(s->engine);
    a->meta_stale = rc < 0;
    if (rc < 0)
        rd_warn("could not re-read the meta page at read point %" PRIu64 ": %s; retrying", a->read_lsn,
                rd_strerror(rc));
}

static void reader_connect(struct server *s)
{
    struct aurora *a = &s->aur;
    int fd = connect_timeout(a->writer_host, a->writer_port, AUR_CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        a->feed_retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        return;
    }
    char aerr[256];
    if (s->auth.enabled && rd_auth_client_resp(&s->auth, fd, 1000, aerr, sizeof(aerr)) < 0) {
        rd_warn("the writer %s:%d failed peer authentication: %s", a->writer_host, a->writer_port, aerr);
        close(fd);
        a->feed_retry_ms = aur_now_ms() + 1000;
        return;
    }
    struct conn *c = conn_new(s, fd, CONN_FEED_UP);
    snprintf(c->addr, sizeof(c->addr), "%s:%d", a->writer_host, a->writer_port);
    a->feed_conn = c;
    a->feed_fresh = 1;
    char lport[16];
    snprintf(lport, sizeof(lport), "%d", s->cfg.port);
    const char *argv[] = {"REDOUBT.READER", s->cfg.name, lport}; /* announces where it listens */
    if (resp_command_str(&c->out, 3, argv) < 0)
        rd_panic("out of memory");
    rd_info("subscribed to the writer %s:%d", a->writer_host, a->writer_port);
}

/* ------------------------------------------------------------ frames in */

void aurora_process_input(struct server *s, struct conn *c)
{
    struct aurora *a = &s->aur;
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
        if (c->kind == CONN_STORAGE)
            link_on_frame(s, c, &h, p, n);
        else if (c->kind == CONN_FEED_UP && h.type == AUR_MSG_FEED)
            reader_on_feed(s, p, n);
        else if (c->kind == CONN_FEED_UP && h.type == AUR_MSG_FEED_REDO)
            reader_on_feed_redo(s, p, n);
        else if (c->kind == CONN_READER_FEED && h.type == AUR_MSG_READPOINT && n == 8)
            c->reader_point = rd_get_u64le(p);
        else {
            rd_warn("unexpected message type %u from %s; closing the connection", h.type, c->addr);
            conn_close(s, c);
            return;
        }
    }
    rd_buf_consume(&c->in, off);
    reader_reread_meta(s);
}

void aurora_on_conn_closed(struct server *s, struct conn *c)
{
    struct aurora *a = &s->aur;
    if (c->kind == CONN_STORAGE && c->sn_idx >= 0 && a->node[c->sn_idx].conn == c) {
        struct aur_node *nd = &a->node[c->sn_idx];
        nd->conn = NULL;
        nd->retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        if (a->role_writer)
            rd_warn("lost the link to storage node %d (%s)", c->sn_idx + 1, c->addr);
    } else if (c->kind == CONN_READER_FEED) {
        a->nreaders--;
        rd_info("reader \"%s\" (%s) left", c->reader_name, c->addr);
    } else if (c->kind == CONN_FEED_UP && a->feed_conn == c) {
        a->feed_conn = NULL;
        a->feed_retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
        if (s->role == SERVER_ROLE_READER)
            rd_warn("lost the feed from the writer %s:%d; reconnecting", a->writer_host, a->writer_port);
    }
}

void aurora_tick(struct server *s)
{
    struct aurora *a = &s->aur;
    uint64_t now = aur_now_ms();
    if (s->role == SERVER_ROLE_READER) {
        if (a->feed_conn == NULL && now >= a->feed_retry_ms)
            reader_connect(s);
        if (a->feed_conn && now - a->status_ms >= 100) {
            reader_reread_meta(s); /* only if a re-read failed: retried every 100 ms */
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
            if (c->kind == CONN_READER_FEED && c->reader_point)
                min = RD_MIN(min, c->reader_point);
        for (unsigned i = 0; i < REDO_NODES; i++)
            if (a->node[i].conn && a->node[i].conn->peer_authed &&
                sn_send_readpoint(&a->node[i].conn->out, a->epoch, min) < 0)
                rd_panic("out of memory");
        a->min_read_point = min;
        a->readpoint_ms = now;
    }
}

/* ------------------------------------------------------------ becoming the writer */

int aurora_become_writer(struct server *s)
{
    struct aurora *a = &s->aur;
    struct sn_state st[REDO_NODES];
    int have[REDO_NODES];
    uint64_t t0 = aur_now_ms(), max_epoch = 0;
    unsigned nok = 0;
    /* 1. Learn the epochs of a read quorum. */
    while (aur_now_ms() - t0 < 30000) {
        nok = 0;
        for (unsigned i = 0; i < REDO_NODES; i++) {
            have[i] = node_epoch(a, i, 0, &st[i]) == 0;
            if (have[i]) {
                nok++;
                max_epoch = RD_MAX(max_epoch, st[i].epoch);
            }
        }
        if (nok >= REDO_READ_QUORUM)
            break;
        rd_warn("only %u of 6 storage nodes answer; need %u to recover: retrying", nok, REDO_READ_QUORUM);
        usleep(300000);
    }
    if (nok < REDO_READ_QUORUM) {
        rd_error("cannot become the writer: fewer than %u storage nodes reachable", REDO_READ_QUORUM);
        return RD_EQUORUM;
    }
    /* 2. Our epoch, recorded on at least 3 nodes: older writers are fenced from here on. */
    a->epoch = max_epoch + 1;
    nok = 0;
    struct redo_node_state rs[REDO_NODES];
    uint64_t max_lsn = 0;
    for (unsigned i = 0; i < REDO_NODES; i++) {
        have[i] = node_epoch(a, i, a->epoch, &st[i]) == 0 && st[i].epoch == a->epoch;
        if (have[i]) {
            rs[nok].scl = st[i].scl;
            rs[nok].max_cpl = st[i].max_cpl;
            nok++;
            max_lsn = RD_MAX(max_lsn, st[i].max_lsn);
        }
    }
    if (nok < REDO_READ_QUORUM) {
        rd_error("cannot become the writer: epoch %" PRIu64 " accepted by only %u nodes", a->epoch, nok);
        return RD_EQUORUM;
    }
    /* 3. Recovery point from the read quorum; truncate above VDL everywhere. */
    uint64_t vcl = 0, vdl = 0;
    int rc = redo_recovery_point(rs, nok, &vcl, &vdl);
    if (rc < 0) {
        rd_error("recovery point: %s", rd_strerror(rc));
        return rc;
    }
    unsigned truncated = 0;
    for (unsigned i = 0; i < REDO_NODES; i++)
        if (have[i] && node_truncate(a, i, a->epoch, vdl, &st[i]) == 0)
            truncated++;
    /* 4. Wait (bounded) until a write quorum holds everything up to VDL:
     * the nodes fill their gaps from each other. */
    unsigned holding = 0;
    uint64_t t1 = aur_now_ms();
    do {
        holding = 0;
        for (unsigned i = 0; i < REDO_NODES; i++) {
            struct sn_state x;
            if (node_epoch(a, i, a->epoch, &x) == 0 && x.epoch == a->epoch) {
                st[i] = x;
                have[i] = 1;
                if (x.scl >= vdl)
                    holding++;
            }
        }
        if (holding >= REDO_WRITE_QUORUM)
            break;
        usleep(50000);
    } while (aur_now_ms() - t1 < 10000);
    rd_info("epoch %" PRIu64 ": recovered VCL %" PRIu64 ", VDL %" PRIu64 " (highest LSN seen %" PRIu64
            "); truncated above VDL on %u nodes; %u nodes hold VDL; in %" PRIu64 " ms",
            a->epoch, vcl, vdl, max_lsn, truncated, holding, aur_now_ms() - t0);
    if (holding < REDO_WRITE_QUORUM)
        rd_warn("only %u nodes hold VDL yet: writes wait until a write quorum catches up", holding);
    /* 5. Continue at VDL + 1 with a fresh quorum state. */
    redo_quorum_free(&a->q);
    if (redo_quorum_init(&a->q, 1u << 20) < 0)
        rd_panic("out of memory");
    if (vdl > 0 && redo_quorum_add_cpl(&a->q, vdl) < 0) /* no acks yet: VDL cannot move here */
        rd_panic("out of memory for the quorum tracker");
    for (unsigned i = 0; i < REDO_NODES; i++) {
        a->node[i].scl = have[i] ? RD_MIN(st[i].scl, vdl) : 0;
        if (have[i])
            redo_quorum_ack(&a->q, i, RD_MIN(st[i].scl, vdl));
    }
    a->last_lsn = vdl;
    a->read_lsn = vdl;
    a->recovered_vdl = vdl;
    a->nchanged = 0;
    rd_buf_reset(&a->feedrec);
    a->role_writer = 1;
    a->fenced = 0;
    s->durable_lsn = s->last_commit_lsn = s->release_lsn = a->q.vdl;
    if (s->engine) {
        engine_close(s->engine);
        s->engine = NULL;
    }
    struct engine_options eo = {.data_path = NULL,
                                .cache_pages = RD_MAX((size_t)64, s->cfg.cache_mb * 1024u * 1024u / ENGINE_PAGE_SIZE),
                                .sink = {.ctx = s, .emit = aur_emit, .read_page = aur_read_page,
                                         .durable_lsn = aur_durable}};
    rc = engine_open(&eo, &s->engine);
    if (rc < 0) {
        rd_error("could not open the volume: %s", rd_strerror(rc));
        return rc;
    }
    engine_set_fpi_threshold(s->engine, 0); /* redo never carries full-page images */
    /* A fresh volume: the engine just emitted the meta and root pages; a commit makes them a unit. */
    if (a->batch_open) {
        uint64_t lsn;
        aurora_append_commit(s, 0, &lsn);
        s->last_commit_lsn = lsn;
    }
    return 0;
}

int aurora_init(struct server *s)
{
    struct aurora *a = &s->aur;
    for (unsigned i = 0; i < REDO_NODES; i++) {
        a->ctl[i].fd = -1;
        a->node[i].conn = NULL;
    }
    char list[2048];
    snprintf(list, sizeof(list), "%s", s->cfg.storage ? s->cfg.storage : "");
    unsigned n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == REDO_NODES || parse_hostport(tok, a->node[n].host, sizeof(a->node[n].host), &a->node[n].port) < 0) {
            rd_error("--storage needs exactly 6 HOST:PORT entries (bad or extra \"%s\")", tok);
            return -EINVAL;
        }
        n++;
    }
    if (n != REDO_NODES) {
        rd_error("--storage needs exactly 6 HOST:PORT entries, got %u", n);
        return -EINVAL;
    }
    if (redo_quorum_init(&a->q, 1u << 20) < 0)
        return -ENOMEM;
    if (s->role == SERVER_ROLE_READER) {
        if (parse_hostport(s->cfg.writer_addr ? s->cfg.writer_addr : "", a->writer_host, sizeof(a->writer_host),
                           &a->writer_port) < 0) {
            rd_error("--role reader needs --writer HOST:PORT");
            return -EINVAL;
        }
        return 0;
    }
    return aurora_become_writer(s);
}

/* REPLICAOF host port on a reader: follow another writer (after a failover). */
int aurora_repoint(struct server *s, const char *host, int port, char *err, size_t err_len)
{
    struct aurora *a = &s->aur;
    if (s->role == SERVER_ROLE_WRITER && s->fenced) { /* CR6: rejoin in place as a reader */
        snprintf(server_rejoin_primary, sizeof(server_rejoin_primary), "%s:%d", host, port);
        s->shutdown_requested = 1;
        rd_warn("REPLICAOF %s %d on a fenced writer (%s): shutting down to restart as its reader", host, port,
                s->fenced_by);
        return 0;
    }
    if (s->role != SERVER_ROLE_READER) {
        snprintf(err, err_len, "ERR an aurora writer that is not fenced cannot follow another writer: fence it "
                               "first (REDOUBT.FENCE), or promote a reader instead");
        return -1;
    }
    snprintf(a->writer_host, sizeof(a->writer_host), "%s", host);
    a->writer_port = port;
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
    a->feed_conn = NULL;
    a->feed_retry_ms = 0;
    rd_info("following the writer %s:%d from now on", host, port);
    return 0;
}

int aurora_promote(struct server *s, char *err, size_t err_len)
{
    struct aurora *a = &s->aur;
    if (s->role != SERVER_ROLE_READER) {
        snprintf(err, err_len, "ERR only an aurora reader can be promoted to writer");
        return -1;
    }
    rd_info("promotion requested: this reader becomes the writer");
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
    a->feed_conn = NULL;
    int rc = aurora_become_writer(s);
    if (rc < 0) {
        snprintf(err, err_len, "ERR promotion failed: %s", rd_strerror(rc));
        return -1;
    }
    s->role = SERVER_ROLE_WRITER;
    rd_log_set_role("writer");
    rd_info("promoted: writer at epoch %" PRIu64 ", continuing at LSN %" PRIu64, a->epoch, a->last_lsn + 1);
    return 0;
}

/* ------------------------------------------------------------ INFO */

void aurora_info(struct server *s, struct rd_buf *b)
{
    struct aurora *a = &s->aur;
    if (s->role == SERVER_ROLE_READER) {
        rd_buf_appendf(b,
                       "# Replication\r\nrole:slave\r\nredoubt_role:reader\r\nmaster_host:%s\r\nmaster_port:%d\r\n"
                       "master_link_status:%s\r\nread_point:%" PRIu64 "\r\nwriter_vdl:%" PRIu64
                       "\r\nlag_lsn:%" PRIu64 "\r\nlag_ms:%.3f\r\nfeed_messages:%" PRIu64
                       "\r\ngetpage_requests:%" PRIu64 "\r\ngetpage_hedged:%" PRIu64 "\r\n\r\n",
                       a->writer_host, a->writer_port, a->feed_conn ? "up" : "down", a->read_lsn, a->writer_vdl,
                       a->writer_vdl > a->read_lsn ? a->writer_vdl - a->read_lsn : 0, a->lag_us / 1000.0,
                       a->feed_msgs, a->getpage_requests, a->getpage_hedged);
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
                           k++, c->reader_name, c->addr, c->reader_port, c->reader_point,
                           a->q.vdl > c->reader_point ? a->q.vdl - c->reader_point : 0);
    rd_buf_appendf(b,
                   "redo_records:%" PRIu64 "\r\ncommits:%" PRIu64 "\r\nredo_bytes_per_commit:%.1f\r\n"
                   "redo_batch_bytes_per_commit:%.1f\r\nredo_wire_bytes_per_commit:%.1f\r\n"
                   "net_bytes_per_commit:%.1f\r\nframes_sent:%" PRIu64 "\r\nmin_read_point:%" PRIu64
                   "\r\ngetpage_requests:%" PRIu64 "\r\n\r\n",
                   a->redo_records, a->commits, (double)a->redo_bytes_raw / (double)commits,
                   (double)a->redo_bytes_batch / (double)commits, (double)a->redo_bytes_wire / (double)commits,
                   (double)a->net_bytes_sent / (double)commits, a->frames_sent, a->min_read_point,
                   a->getpage_requests);
}
