/*
 * aur_getpage.c — non-blocking GetPage@LSN with hedging (issue 12, item 4).
 *
 * A client command that misses the buffer pool does not wait: the engine calls
 * sink.read_page_nb (aur_read_page_nb), which asks a storage node for the page
 * on a non-blocking link of this loop, tells the instance to park the command
 * (server/suspend.c), and answers RD_EAGAIN; the engine returns it having changed
 * nothing (engine E16). When a valid answer arrives the page is installed in the
 * pool (engine_install_page, E17) and every command parked on it runs again from
 * its start. A command may miss several times (one per tree level); the instance
 * bounds that (SERVER_SUSPEND_MAX_MISSES) and then lets it finish with blocking
 * reads.
 *
 * One request per page in flight (AUR_GP_MAX at most; a command that would need
 * more answers an error). Per request:
 *
 * | state | event | next | function |
 * |---|---|---|---|
 * | — | miss | asked (best node: covers the LSN on a writer, lowest latency) | aur_read_page_nb → gp_send |
 * | asked | no answer within the hedge delay | asked one more node (getpage_hedged) | aur_gp_tick |
 * | asked | a node answers NOT_YET / CORRUPT / garbage / above the read point, or stays silent AUR_GP_NODE_TIMEOUT_MS, or its link drops | that node skipped, the next asked at once | gp_on_page, aur_gp_tick, aur_gp_conn_closed |
 * | asked | every node skipped | all asked again after AUR_GP_RETRY_MS | aur_gp_tick |
 * | asked | a page changed (feed record, cache drop, blocking read) | stale: asked again at the current read point | aur_gp_touched |
 * | asked | first valid answer | installed, waiters resumed, request freed; later answers dropped (unknown req_id) | gp_on_page |
 * | asked | AUR_GETPAGE_TIMEOUT_MS since the miss | failed: waiters answer -TRYAGAIN | aur_gp_tick |
 *
 * A page is installed only if it is still the page at the read point: its LSN
 * is at most the LSN asked (checked by the engine against the read point), and
 * no record for it has been applied or skipped since it was asked (aurora/README
 * S22). Part of the aurora wing (aurora/); see aurora.c's header for the rest.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/net.h"
#include "common/util.h"
#include "redo/sn_proto.h"
#include "server/server_int.h"
#include "aurora/aur_int.h"

struct aur_gp_req {
    int used, stale;
    uint32_t page_id;
    uint64_t lsn;                    /* read point asked at */
    uint64_t start_us, deadline_us;  /* the miss; AUR_GETPAGE_TIMEOUT_MS after it */
    uint64_t next_hedge_us;          /* ask one more node then */
    uint64_t retry_us;               /* every node skipped: all asked again then (0: not waiting) */
    struct aur_gp_try tries[REDO_NODES];
    unsigned nasked;
    int first;                       /* the node asked first (a hedge that wins is counted) */
};

struct aur_gp {
    struct aur_gp_link link[REDO_NODES];
    struct aur_gp_req req[AUR_GP_MAX];
    unsigned nreq;
    uint8_t page[ENGINE_PAGE_SIZE];
};

/* ------------------------------------------------------------ pure choices (tested: tests/unit/test_aur_getpage.c) */

uint64_t aur_gp_hedge_delay_us(uint64_t best_lat_us)
{
    uint64_t d = 2 * best_lat_us;
    return RD_MAX((uint64_t)AUR_GP_HEDGE_MIN_US, RD_MIN(d, (uint64_t)AUR_GP_HEDGE_MAX_US));
}

int aur_gp_pick(const struct aur_gp_try tries[REDO_NODES], const struct aur_gp_nodeinfo nodes[REDO_NODES],
                uint64_t lsn, unsigned rotate)
{
    int best = -1, best_covers = 0;
    uint64_t best_lat = UINT64_MAX;
    for (unsigned k = 0; k < REDO_NODES; k++) {
        unsigned i = (k + rotate) % REDO_NODES;
        if (!nodes[i].usable || tries[i].asked || tries[i].skipped)
            continue;
        int covers = !nodes[i].scl_known || nodes[i].scl >= lsn;
        /* a node known to cover the LSN first; then the lowest recent latency */
        if (best < 0 || covers > best_covers || (covers == best_covers && nodes[i].lat_us < best_lat)) {
            best = (int)i;
            best_covers = covers;
            best_lat = nodes[i].lat_us;
        }
    }
    return best;
}

/* ------------------------------------------------------------ links */

static struct aur_gp *gp_of(struct aurora *a)
{
    if (a->gp == NULL) {
        a->gp = calloc(1, sizeof(*a->gp));
        if (a->gp == NULL)
            rd_panic("out of memory for GetPage state");
    }
    return a->gp;
}

static void gp_link_connect(struct server *s, struct aurora *a, unsigned i)
{
    struct aur_gp_link *l = &gp_of(a)->link[i];
    uint64_t now = aur_now_ms();
    if (l->conn != NULL || now < l->retry_ms)
        return;
    int fd = rd_net_connect(a->node[i].host, a->node[i].port, AUR_CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        l->retry_ms = now + AUR_RECONNECT_MS;
        return;
    }
    struct conn *c = conn_new(s, fd, CONN_STORAGE);
    c->role_idx = (int)i;
    c->role_conn = l; /* marks a GetPage link (aurora_process_input) */
    snprintf(c->addr, sizeof(c->addr), "%s:%d", a->node[i].host, a->node[i].port);
    l->conn = c;
    if (s->auth.enabled) { /* HELLO; the node's CHALLENGE is answered in aur_gp_on_frame */
        uint8_t hello[RD_AUTH_HELLO_LEN];
        c->peer_authed = 0;
        rd_auth_client_hello(&s->auth, &c->hs, NULL, hello);
        if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, hello, sizeof(hello), 0) < 0)
            rd_panic("out of memory");
    }
}

/* What the choice needs to know of each node. Its latency is the EWMA of its answers or, if
 * larger, the age of its oldest unanswered request (also of requests a hedge already finished):
 * a node that stopped answering is not asked first again. */
static void gp_nodes(struct aurora *a, struct aur_gp_nodeinfo nodes[REDO_NODES])
{
    struct aur_gp *g = gp_of(a);
    uint64_t now = rd_now_us();
    for (unsigned i = 0; i < REDO_NODES; i++) {
        struct conn *c = g->link[i].conn;
        nodes[i].usable = c != NULL && !c->closing && c->peer_authed;
        nodes[i].scl_known = a->role_writer;
        nodes[i].scl = a->node[i].scl;
        nodes[i].lat_us = g->link[i].lat_us;
    }
    for (unsigned i = 0; i < REDO_NODES; i++)
        for (unsigned k = 0; k < AUR_GP_SENT_RING; k++)
            if (g->link[i].sent[k].req_id != 0 && !g->link[i].sent[k].answered)
                nodes[i].lat_us = RD_MAX(nodes[i].lat_us, now - g->link[i].sent[k].sent_us);
}

/* Asks one more node for r's page (hedge: because the last one is slow, else because it was
 * skipped or this is the first). 0 sent, -1 no node left to ask. */
static int gp_send(struct server *s, struct aurora *a, struct aur_gp_req *r, int hedge)
{
    struct aur_gp *g = gp_of(a);
    struct aur_gp_nodeinfo nodes[REDO_NODES];
    gp_nodes(a, nodes);
    int i = aur_gp_pick(r->tries, nodes, r->lsn, (unsigned)(r->page_id + a->getpage_requests));
    if (i < 0)
        return -1;
    struct aur_gp_try *t = &r->tries[i];
    t->asked = 1;
    t->req_id = ++a->req_id;
    t->sent_us = rd_now_us();
    struct aur_gp_link *l = &g->link[i];
    l->sent[t->req_id % AUR_GP_SENT_RING].req_id = t->req_id;
    l->sent[t->req_id % AUR_GP_SENT_RING].sent_us = t->sent_us;
    l->sent[t->req_id % AUR_GP_SENT_RING].answered = 0;
    struct sn_getpage m = {.req_id = t->req_id, .page_id = r->page_id, .read_lsn = r->lsn};
    if (sn_send_getpage(&g->link[i].conn->out, a->epoch, &m) < 0)
        rd_panic("out of memory");
    /* Out now, not at the end of the turn (after every other command of it): the node starts on
     * it while this turn goes on. One submit per request, as the blocking send() was. */
    rd_conn_flush(&g->link[i].conn->nc);
    int rc = rd_loop_submit(&s->loop);
    if (rc < 0)
        rd_warn("io_uring submit for a GetPage: %s (sent with the turn's other sends)", rd_strerror(rc));
    if (r->nasked++ == 0)
        r->first = i;
    else if (hedge)
        a->getpage_hedged++;
    else
        a->getpage_retries++;
    r->next_hedge_us = t->sent_us + aur_gp_hedge_delay_us(g->link[i].lat_us);
    return 0;
}

/* (Re)starts r at the current read point: every node may be asked again. */
static void gp_restart(struct server *s, struct aurora *a, struct aur_gp_req *r)
{
    memset(r->tries, 0, sizeof(r->tries));
    r->stale = 0;
    r->nasked = 0;
    r->retry_us = 0;
    r->lsn = a->read_lsn;
    if (gp_send(s, a, r, 0) < 0)
        r->retry_us = rd_now_us() + AUR_GP_RETRY_MS * 1000u; /* no link up yet */
}

static void gp_free(struct aur_gp *g, struct aur_gp_req *r)
{
    rd_assert(r->used && g->nreq > 0);
    r->used = 0;
    g->nreq--;
}

static void gp_finish(struct server *s, struct aurora *a, struct aur_gp_req *r, int failed)
{
    uint32_t pid = r->page_id;
    uint64_t waited = rd_now_us() - r->start_us;
    a->getpage_wait_us_total += waited;
    a->getpage_wait_us_max = RD_MAX(a->getpage_wait_us_max, waited);
    if (failed)
        a->getpage_failed++;
    gp_free(gp_of(a), r);
    server_suspend_wake(s, pid, failed);
}

/* ------------------------------------------------------------ the engine's non-blocking read */

int aur_read_page_nb(void *ctx, uint32_t page_id, uint8_t *page)
{
    struct server *s = ctx;
    struct aurora *a = aur_of(s);
    if (!server_suspend_may_park(s))
        return aur_read_page(ctx, page_id, page); /* no command to park (or over its bound): block */
    struct aur_gp *g = gp_of(a);
    struct aur_gp_req *r = NULL, *free_slot = NULL;
    for (unsigned k = 0; k < AUR_GP_MAX && r == NULL; k++) {
        if (g->req[k].used && g->req[k].page_id == page_id)
            r = &g->req[k];
        else if (!g->req[k].used && free_slot == NULL)
            free_slot = &g->req[k];
    }
    if (r == NULL && free_slot == NULL) {
        a->getpage_full++;
        return -EBUSY; /* bounded: the command answers an error */
    }
    a->getpage_misses++;
    if (r == NULL) { /* a new request; one already in flight is joined */
        r = free_slot;
        memset(r, 0, sizeof(*r));
        r->used = 1;
        r->page_id = page_id;
        r->start_us = rd_now_us();
        r->deadline_us = r->start_us + AUR_GETPAGE_TIMEOUT_MS * 1000u;
        g->nreq++;
        a->getpage_requests++;
        for (unsigned i = 0; i < REDO_NODES; i++)
            gp_link_connect(s, a, i);
        gp_restart(s, a, r);
    }
    server_suspend_note_miss(s, page_id);
    return RD_EAGAIN;
}

/* ------------------------------------------------------------ answers */

static struct aur_gp_req *gp_find(struct aur_gp *g, uint64_t req_id, unsigned node)
{
    for (unsigned k = 0; k < AUR_GP_MAX; k++)
        if (g->req[k].used && g->req[k].tries[node].asked && g->req[k].tries[node].req_id == req_id)
            return &g->req[k];
    return NULL;
}

static void gp_skip(struct server *s, struct aurora *a, struct aur_gp_req *r, unsigned node)
{
    r->tries[node].skipped = 1;
    if (gp_send(s, a, r, 0) < 0 && r->retry_us == 0) {
        int waiting = 0; /* a node asked and not yet skipped may still answer */
        for (unsigned i = 0; i < REDO_NODES; i++)
            waiting |= r->tries[i].asked && !r->tries[i].skipped;
        if (!waiting)
            r->retry_us = rd_now_us() + AUR_GP_RETRY_MS * 1000u;
    }
}

static void gp_on_page(struct server *s, struct aurora *a, unsigned node, const uint8_t *p, size_t n)
{
    struct aur_gp *g = gp_of(a);
    struct sn_page m;
    if (sn_parse_page(p, n, &m) < 0) {
        rd_warn("storage node %u sent a malformed PAGE answer; closing its GetPage link", node + 1);
        conn_close(s, g->link[node].conn);
        return;
    }
    struct aur_gp_link *l = &g->link[node];
    if (l->sent[m.req_id % AUR_GP_SENT_RING].req_id == m.req_id) { /* late answers count too: a slow node */
        l->sent[m.req_id % AUR_GP_SENT_RING].answered = 1;
        uint64_t lat = rd_now_us() - l->sent[m.req_id % AUR_GP_SENT_RING].sent_us;
        l->lat_us = l->lat_us == 0 ? lat : (l->lat_us * 7 + lat) / 8;
    }
    struct aur_gp_req *r = gp_find(g, m.req_id, node);
    if (r == NULL) {
        a->getpage_late++; /* a hedge lost the race, or the request ended */
        return;
    }
    if (m.status != SN_OK) {
        if (m.status == SN_ERR_CORRUPT)
            rd_warn("storage node %u reports page %u corrupt; asking another", node + 1, r->page_id);
        gp_skip(s, a, r, node);
        return;
    }
    if (r->stale) { /* the page changed while we asked: ask again at the new read point */
        a->getpage_stale++;
        gp_restart(s, a, r);
        return;
    }
    if (s->engine == NULL) { /* the reader's cache was dropped: its commands run again (and ask anew) */
        gp_finish(s, a, r, 0);
        return;
    }
    /* The engine checks checksum, layout and that the page is not above the read point. */
    int rc = engine_install_page(s->engine, r->page_id, m.page, r->lsn);
    if (rc < 0) {
        rd_warn("storage node %u sent page %u %s; asking another", node + 1, r->page_id,
                rc == RD_ESTALE ? "from above the read point" : "that fails its checks");
        gp_skip(s, a, r, node);
        return;
    }
    if (r->nasked > 1 && (int)node != r->first)
        a->getpage_hedge_wins++;
    gp_finish(s, a, r, 0);
}

static void gp_on_auth(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    uint8_t proof[RD_AUTH_PROOF_LEN];
    if (h->type != RD_AUTH_FRAME_TYPE || rd_auth_client_challenge(&s->auth, &c->hs, p, n, proof) < 0) {
        rd_warn("storage node %d (%s) failed peer authentication on the GetPage link; closing it", c->role_idx + 1,
                c->addr);
        conn_close(s, c);
        return;
    }
    c->peer_authed = 1;
    if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, proof, sizeof(proof), 0) < 0)
        rd_panic("out of memory");
}

void aur_gp_on_frame(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    struct aurora *a = aur_of(s);
    rd_assert(c->role_idx >= 0 && c->role_idx < (int)REDO_NODES);
    if (!c->peer_authed) {
        gp_on_auth(s, c, h, p, n);
        return;
    }
    if (h->type == SN_MSG_PAGE)
        gp_on_page(s, a, (unsigned)c->role_idx, p, n);
    /* anything else (an ERROR about our epoch ...) is left to the requests' timeouts */
}

void aur_gp_conn_closed(struct server *s, struct conn *c)
{
    struct aurora *a = aur_of(s);
    struct aur_gp *g = gp_of(a);
    unsigned i = (unsigned)c->role_idx;
    if (g->link[i].conn != c)
        return;
    g->link[i].conn = NULL;
    g->link[i].retry_ms = aur_now_ms() + AUR_RECONNECT_MS;
    memset(g->link[i].sent, 0, sizeof(g->link[i].sent)); /* no answer will come on this connection */
    for (unsigned k = 0; k < AUR_GP_MAX; k++)
        if (g->req[k].used && g->req[k].tries[i].asked && !g->req[k].tries[i].skipped)
            gp_skip(s, a, &g->req[k], i);
}

/* ------------------------------------------------------------ staleness, timers */

void aur_gp_touched(struct aurora *a, uint32_t page_id)
{
    if (a->gp == NULL || a->gp->nreq == 0)
        return;
    for (unsigned k = 0; k < AUR_GP_MAX; k++)
        if (a->gp->req[k].used && (a->gp->req[k].page_id == page_id || page_id == ENGINE_PAGE_NONE))
            a->gp->req[k].stale = 1;
}

static int gp_pending(void *ctx, uint32_t page_id)
{
    struct aur_gp *g = ctx;
    for (unsigned k = 0; k < AUR_GP_MAX; k++)
        if (g->req[k].used && g->req[k].page_id == page_id)
            return 1;
    return 0;
}

void aur_gp_tick(struct server *s)
{
    struct aurora *a = aur_of(s);
    if (a->gp == NULL)
        return;
    uint64_t now_ms = aur_now_ms();
    if (now_ms - a->gp_sweep_ms >= 100) { /* S26: no parked command without a request, ever */
        a->gp_sweep_ms = now_ms;
        server_suspend_sweep(s, gp_pending, a->gp);
    }
    if (a->gp->nreq == 0) {
        s->wake_within_us = 0;
        return;
    }
    struct aur_gp *g = a->gp;
    uint64_t now = rd_now_us();
    for (unsigned i = 0; i < REDO_NODES; i++) {
        gp_link_connect(s, a, i);
        for (unsigned k = 0; k < AUR_GP_SENT_RING; k++) /* a send unanswered this long counts as one timeout */
            if (g->link[i].sent[k].req_id != 0 && !g->link[i].sent[k].answered &&
                now - g->link[i].sent[k].sent_us >= AUR_GP_NODE_TIMEOUT_MS * 1000u) {
                g->link[i].sent[k].answered = 1;
                g->link[i].lat_us = RD_MAX(g->link[i].lat_us, (uint64_t)AUR_GP_NODE_TIMEOUT_MS * 1000u);
            }
    }
    for (unsigned k = 0; k < AUR_GP_MAX; k++) {
        struct aur_gp_req *r = &g->req[k];
        if (!r->used)
            continue;
        if (now >= r->deadline_us) {
            rd_warn("GetPage(%u @ %" PRIu64 "): no storage node answered within %d ms", r->page_id, r->lsn,
                    AUR_GETPAGE_TIMEOUT_MS);
            gp_finish(s, a, r, 1);
            continue;
        }
        for (unsigned i = 0; i < REDO_NODES; i++) /* silent too long: skipped (a late answer still counts) */
            if (r->tries[i].asked && !r->tries[i].skipped && now - r->tries[i].sent_us >= AUR_GP_NODE_TIMEOUT_MS * 1000u) {
                g->link[i].lat_us = RD_MAX(g->link[i].lat_us, (uint64_t)AUR_GP_NODE_TIMEOUT_MS * 1000u);
                gp_skip(s, a, r, i);
            }
        if (r->retry_us != 0 && now >= r->retry_us) {
            gp_restart(s, a, r);
        } else if (r->retry_us == 0 && now >= r->next_hedge_us && gp_send(s, a, r, 1) < 0) {
            r->next_hedge_us = UINT64_MAX; /* every node asked: wait for answers or timeouts */
        }
    }
    s->wake_within_us = g->nreq > 0 ? AUR_GP_HEDGE_MIN_US / 2 : 0;
}

void aur_gp_info(struct aurora *a, struct rd_buf *b)
{
    server_suspend_info(a->srv, b);
    rd_buf_appendf(b,
                   "getpage_requests:%" PRIu64 "\r\ngetpage_misses:%" PRIu64 "\r\ngetpage_hedged:%" PRIu64
                   "\r\ngetpage_hedge_wins:%" PRIu64 "\r\ngetpage_retries:%" PRIu64 "\r\ngetpage_late_answers:%" PRIu64 "\r\ngetpage_stale:%" PRIu64
                   "\r\ngetpage_failed:%" PRIu64 "\r\ngetpage_full:%" PRIu64 "\r\ngetpage_sync:%" PRIu64
                   "\r\ngetpage_inflight:%u\r\ngetpage_wait_us_total:%" PRIu64 "\r\ngetpage_wait_us_max:%" PRIu64 "\r\n",
                   a->getpage_requests, a->getpage_misses, a->getpage_hedged, a->getpage_hedge_wins, a->getpage_retries, a->getpage_late,
                   a->getpage_stale, a->getpage_failed, a->getpage_full, a->getpage_sync, a->gp ? a->gp->nreq : 0,
                   a->getpage_wait_us_total, a->getpage_wait_us_max);
    if (a->gp != NULL) {
        rd_buf_appendf(b, "getpage_node_latency_us:");
        for (unsigned i = 0; i < REDO_NODES; i++)
            rd_buf_appendf(b, "%sn%u=%" PRIu64, i ? "," : "", i + 1, a->gp->link[i].lat_us);
        rd_buf_appendf(b, "\r\n");
    }
}
