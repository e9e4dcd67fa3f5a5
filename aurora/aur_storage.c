/*
 * aur_storage.c — blocking control sockets to the storage nodes: epochs, truncation, and
 * GetPage@LSN (tried node after node within AUR_GETPAGE_TIMEOUT_MS).
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
#include "redo/sn_proto.h"
#include "aurora/aur_int.h"
#include "common/net.h"

/* ------------------------------------------------------------ blocking control sockets */

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

void aur_ctl_close(struct aur_ctl *c)
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
    c->fd = rd_net_connect(a->node[i].host, a->node[i].port, AUR_CONNECT_TIMEOUT_MS);
    if (c->fd < 0) {
        c->retry_ms = aur_now_ms() + 200;
        return -1;
    }
    struct server *s = a->srv;
    char aerr[256];
    if (s->auth.enabled && rd_auth_client_frames(&s->auth, c->fd, 1000, aerr, sizeof(aerr)) < 0) {
        rd_warn("storage node %u (%s:%d) failed peer authentication: %s", i + 1, a->node[i].host, a->node[i].port,
                aerr);
        aur_ctl_close(c);
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
        aur_ctl_close(c);
        return -ECONNRESET;
    }
    int rc = ctl_read_frame(c, want, aur_now_ms() + (uint64_t)timeout_ms, h, out);
    if (rc < 0)
        aur_ctl_close(c);
    return rc;
}

/* The same request to several nodes at once (issue 12, promotion): every
 * request goes out first, then the STATE answers are collected, so the nodes
 * persist (fsync) at the same time instead of one after the other. ok[i] is
 * set for each node that answered STATE within timeout_ms. */
void aur_nodes_state_all(struct aurora *a, struct rd_buf req[REDO_NODES], const int ask[REDO_NODES], int timeout_ms,
                         int ok[REDO_NODES], struct sn_state st[REDO_NODES])
{
    int sent[REDO_NODES];
    for (unsigned i = 0; i < REDO_NODES; i++) {
        ok[i] = sent[i] = 0;
        if (!ask[i] || ctl_ensure(a, i) < 0)
            continue;
        if (write_all_fd(a->ctl[i].fd, req[i].data, req[i].len) < 0) {
            aur_ctl_close(&a->ctl[i]);
            continue;
        }
        sent[i] = 1;
    }
    uint64_t deadline = aur_now_ms() + (uint64_t)timeout_ms;
    struct rd_buf out = {0};
    for (unsigned i = 0; i < REDO_NODES; i++) {
        struct frame_hdr h;
        if (!sent[i])
            continue;
        if (ctl_read_frame(&a->ctl[i], SN_MSG_STATE, deadline, &h, &out) < 0) {
            aur_ctl_close(&a->ctl[i]);
            continue;
        }
        ok[i] = h.type == SN_MSG_STATE && sn_parse_state(out.data, out.len, &st[i]) == 0;
    }
    rd_buf_free(&out);
}

/* EPOCH(e) to node i; fills its STATE. */
int aur_node_epoch(struct aurora *a, unsigned i, uint64_t epoch, struct sn_state *st)
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

int aur_node_truncate(struct aurora *a, unsigned i, uint64_t epoch, uint64_t keep, struct sn_state *st)
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

/* GetPage@LSN, hedged across nodes: first round, only nodes whose SCL covers the
 * read point (on the writer), 200 ms each; then every node, 1 s each; a node that
 * fails, times out, says not yet / corrupt, or sends a page above the read point
 * is passed over for the next; AUR_GETPAGE_TIMEOUT_MS bounds the whole read (S14).
 * One request at a time (blocking control socket). */
int aur_read_page(void *ctx, uint32_t page_id, uint8_t *page)
{
    struct server *s = ctx;
    struct aurora *a = aur_of(s);
    uint64_t lsn = a->read_lsn;
    a->getpage_requests++;
    a->getpage_sync++;
    aur_gp_touched(a, page_id); /* S22: an answer in flight may be older than the page read here */
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
