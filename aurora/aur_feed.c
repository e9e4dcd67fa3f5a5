/*
 * aur_feed.c — the reader feed: the writer side (FEED / FEED_REDO at each new VDL,
 * REDOUBT.READER) and the reader side (apply or drop, read point, the feed decoders).
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
#include "aurora/aur_trace.h"
#include "common/net.h"

/* ------------------------------------------------------------ writer: readers feed */

void aur_vdl_advanced(struct server *s)
{
    struct aurora *a = aur_of(s);
    a->read_lsn = a->q.vdl;
    server_durable_advanced(s, a->q.vdl); /* VDL is the writer's durable point: replies up to it go */
    aur_trace_feed(s, a->q.vdl); /* issue 13: trace marks ahead of the feed frames (C22) */
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
            rd_buf_append(&a->feed, hdr, 20);
            for (size_t o = 0; o < off; o += 17 + rd_get_u32le(a->feedrec.data + o + 13))
                rd_buf_append(&a->feed, a->feedrec.data + o + 8, 4);
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
            rd_buf_append(&a->feed, hdr, 20);
            rd_buf_append(&a->feed, a->feedrec.data, off);
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
        rd_buf_append(&a->feed, hdr, 20);
        for (size_t i = 0; i < n; i++) {
            uint8_t b[4];
            rd_put_u32le(b, a->changed[i].page_id);
            rd_buf_append(&a->feed, b, 4);
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
    aur_of(s)->nreaders++;
    snprintf(c->follower_name, sizeof(c->follower_name), "%.*s", (int)RD_MIN(args->v[1].len, 60),
             (const char *)args->v[1].ptr);
    c->follower_port = args->n >= 3 ? RD_MAX(0, RD_MIN(65535, atoi((const char *)args->v[2].ptr))) : 0; /* listens on */
    rd_info("reader \"%s\" (%s) subscribed to the feed", c->follower_name, c->addr);
    /* First message: the current VDL (nothing to drop: a new reader has no cache). */
    uint8_t hdr[20];
    rd_put_u64le(hdr, aur_of(s)->q.vdl);
    rd_put_u64le(hdr + 8, rd_wall_us());
    rd_put_u32le(hdr + 16, 0);
    if (frame_append(&c->out, AUR_MSG_FEED, aur_of(s)->epoch, hdr, 20, 0) < 0)
        rd_panic("out of memory");
}

/* ------------------------------------------------------------ reader side */

/* Opens the volume at read point vdl with an empty page cache. 0, or the
 * engine stays NULL (the next feed message retries). */
int aur_reader_open_at(struct server *s, uint64_t vdl)
{
    struct aurora *a = aur_of(s);
    rd_assert(s->engine == NULL);
    a->read_lsn = vdl;
    a->meta_stale = 0;
    struct engine_options eo = {.data_path = NULL,
                                .cache_pages = RD_MAX((size_t)64, s->cfg.cache_mb * 1024u * 1024u / ENGINE_PAGE_SIZE),
                                .sink = {.ctx = s, .emit = aur_emit, .read_page = aur_read_page,
                                         .read_page_nb = aur_read_page_nb}};
    int rc = engine_open(&eo, &s->engine);
    if (rc < 0) {
        rd_warn("could not open the volume at read point %" PRIu64 ": %s; retrying", vdl, rd_strerror(rc));
        s->engine = NULL;
        return rc;
    }
    rd_info("reading the volume at read point %" PRIu64 " (%" PRIu64 " keys)", vdl, engine_key_count(s->engine));
    return 0;
}

void aur_reader_drop_cache(struct server *s)
{
    int rc = engine_close(s->engine);
    s->engine = NULL;
    aur_gp_touched(aur_of(s), ENGINE_PAGE_NONE); /* S22: no GetPage in flight may fill the new cache */
    if (rc < 0)
        rd_warn("closing the reader's engine: %s", rd_strerror(rc));
}

static void reader_feed_malformed(struct server *s, const char *what)
{
    struct aurora *a = aur_of(s);
    rd_warn("malformed %s from the writer; reconnecting", what);
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
}

static void reader_feed_seen(struct aurora *a, uint64_t vdl, const uint8_t *p)
{
    trace_visible(vdl); /* issue 13: applied (pages replayed or dropped), read point moved */
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

void aur_reader_on_feed(struct server *s, const uint8_t *p, size_t n)
{
    struct aurora *a = aur_of(s);
    if (aur_feed_check(p, n) < 0) {
        reader_feed_malformed(s, "FEED");
        return;
    }
    uint64_t vdl = rd_get_u64le(p);
    uint32_t cnt = rd_get_u32le(p + 16);
    if (a->feed_fresh && s->engine != NULL) {
        /* A new subscription (reconnect, or a new writer): the invalidations
         * sent while we were away are lost, so the whole cache goes. */
        aur_reader_drop_cache(s);
        rd_info("new feed subscription: dropping the page cache");
    }
    a->feed_fresh = 0;
    if (s->engine == NULL) {
        a->writer_vdl = RD_MAX(a->writer_vdl, vdl);
        if (vdl == 0 || aur_reader_open_at(s, vdl) < 0)
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
            aur_gp_touched(a, pid); /* S22 */
            if (pid == 0) { /* the meta page is re-read once, after the whole batch of feeds */
                a->meta_stale = 1;
                continue;
            }
            int rc = engine_invalidate_page(s->engine, pid);
            if (rc < 0) { /* cannot happen between commands (nothing is pinned): never keep a stale page */
                rd_warn("could not drop page %u from the cache (%s): dropping the whole cache", pid, rd_strerror(rc));
                aur_reader_drop_cache(s);
                if (aur_reader_open_at(s, vdl) < 0)
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
void aur_reader_on_feed_redo(struct server *s, const uint8_t *p, size_t n)
{
    struct aurora *a = aur_of(s);
    if (n < 20) {
        reader_feed_malformed(s, "FEED_REDO");
        return;
    }
    if (s->engine == NULL || a->feed_fresh) { /* first message: open (or reopen) at its VDL */
        uint8_t hdr[20];
        memcpy(hdr, p, 16);
        rd_put_u32le(hdr + 16, 0);
        aur_reader_on_feed(s, hdr, 20);
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
        aur_gp_touched(a, pid); /* S22: a GetPage in flight for it would miss this record */
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
        aur_reader_drop_cache(s);
        if (aur_reader_open_at(s, vdl) < 0)
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
void aur_reader_reread_meta(struct server *s)
{
    struct aurora *a = aur_of(s);
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

void aur_reader_connect(struct server *s)
{
    struct aurora *a = aur_of(s);
    int fd = rd_net_connect(a->writer_host, a->writer_port, AUR_CONNECT_TIMEOUT_MS);
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
