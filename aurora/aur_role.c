/*
 * aur_role.c — the aurora role (server/role.h): writer and reader. The
 * instance calls this wing only through role_aurora; the table below says
 * which file does each job.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "aurora/aur_int.h"

static void aur_ship_now(struct server *s) { aurora_ship(s); }

/* Durability is VDL (server_durable_advanced from aur_vdl_advanced): no sync set on top. */
static uint64_t aur_sync_lsn(const struct server *s)
{
    (void)s;
    return UINT64_MAX;
}

static void aur_command(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (resp_arg_eq(&a->v[0], "redoubt.reader")) {
        aurora_cmd_reader(s, c, a);
        if (c->kind == CONN_READER_FEED && conn_make_peer(s, c) < 0)
            conn_close(s, c);
    } else if (resp_arg_eq(&a->v[0], "redoubt.replicate")) {
        resp_error(&c->out, "ERR this node is not a primary (start it with --role primary to accept replicas)");
    } else if (resp_arg_eq(&a->v[0], "redoubt.term")) {
        resp_error(&c->out, "ERR terms are for classic primaries and replicas (aurora fences with epochs)");
    } else { /* REDOUBT.PROMOTE t */
        resp_error(&c->out, "ERR REDOUBT.PROMOTE is for classic primaries and replicas");
    }
}

static int aur_promote(struct server *s, struct conn *c, uint64_t term, char *err, size_t err_len)
{
    (void)c, (void)term;
    return aurora_promote(s, err, err_len) < 0 ? -1 : 0;
}

static int aur_may_write(const struct server *s, char *err, size_t err_len)
{
    if (s->role == SERVER_ROLE_WRITER && aur_of(s)->fenced) {
        snprintf(err, err_len, "ERR this writer was fenced: a newer writer holds a higher volume epoch, no write can "
                               "be acknowledged here");
        return 0;
    }
    return 1;
}

static int aur_readable(const struct server *s) { return s->engine != NULL; }

static int aur_paused(const struct server *s) { return s->role == SERVER_ROLE_WRITER && aurora_backpressure(s); }

static uint64_t aur_clock_ms(const struct server *s)
{
    return s->role == SERVER_ROLE_READER ? aur_of(s)->feed_send_us / 1000u : 0;
}

static size_t aur_followers(const struct server *s) { return aur_of(s)->nreaders; }

static size_t aur_count_acked(const struct server *s, uint64_t lsn)
{
    (void)s, (void)lsn;
    return 0; /* WAIT counts classic replicas; readers acknowledge nothing */
}

static void aur_out(int rc)
{
    if (rc < 0)
        rd_panic("out of memory for a reply");
}

/* ROLE: a writer lists its readers [ip, port of the feed connection, read point];
 * a reader names its writer and its read point. */
static void aur_role_reply(struct server *s, struct conn *c)
{
    struct rd_buf *o = &c->out;
    if (s->role == SERVER_ROLE_READER) {
        aur_out(resp_array_hdr(o, 5));
        aur_out(resp_bulk_str(o, "slave"));
        aur_out(resp_bulk_str(o, aur_of(s)->writer_host));
        aur_out(resp_int(o, aur_of(s)->writer_port));
        aur_out(resp_bulk_str(o, aur_of(s)->feed_conn ? "connected" : "connecting"));
        aur_out(resp_int(o, (int64_t)aur_of(s)->read_lsn));
        return;
    }
    aur_out(resp_array_hdr(o, 3));
    aur_out(resp_bulk_str(o, "master"));
    aur_out(resp_int(o, (int64_t)aur_of(s)->q.vdl));
    size_t n = 0;
    for (struct conn *x = s->conns; x; x = x->next)
        n += x->kind == CONN_READER_FEED && !x->closing;
    aur_out(resp_array_hdr(o, n));
    for (struct conn *x = s->conns; x; x = x->next) {
        if (x->kind != CONN_READER_FEED || x->closing)
            continue;
        char ip[300];
        snprintf(ip, sizeof(ip), "%s", x->addr);
        char *colon = strrchr(ip, ':');
        if (colon)
            *colon = 0;
        aur_out(resp_array_hdr(o, 3));
        aur_out(resp_bulk_str(o, ip));
        if (x->follower_port) /* the port it listens on, as announced in REDOUBT.READER */
            aur_out(resp_bulkf(o, "%d", x->follower_port));
        else
            aur_out(resp_bulk_str(o, colon ? colon + 1 : "0"));
        aur_out(resp_bulkf(o, "%" PRIu64, x->follower_lsn));
    }
}

static const char *aur_conn_kind_name(const struct conn *c)
{
    return c->kind == CONN_READER_FEED ? "reader-feed" : c->kind == CONN_FEED_UP ? "feed" : "storage";
}

static int aur_after_recovery(struct server *s)
{
    (void)s;
    rd_assert(!"an aurora node has no local storage to recover");
    return -1;
}

static void aur_before_checkpoint(struct server *s) { (void)s; }

/* Nothing local to flush: what is acknowledged is on a write quorum. */
static void aur_stop(struct server *s) { aurora_ship(s); }

static uint64_t aur_fence_rank(const struct server *s) { return aur_of(s)->epoch; }

const struct role_ops role_aurora = {
    .name = "aurora",
    .start = aurora_init,                  /* aur_become.c */
    .insert_lsn = aurora_insert_lsn,       /* aur_writer.c */
    .append_commit = aurora_append_commit,
    .ship = aur_ship_now,                  /* aur_writer.c: aurora_ship */
    .tick = aurora_tick,                   /* aurora.c */
    .sync_lsn = aur_sync_lsn,
    .process_input = aurora_process_input, /* aurora.c */
    .on_conn_closed = aurora_on_conn_closed,
    .command = aur_command,                /* here -> aur_feed.c */
    .promote = aur_promote,                /* aur_become.c */
    .repoint = aurora_repoint,
    .may_write = aur_may_write,
    .readable = aur_readable,
    .paused = aur_paused,
    .clock_ms = aur_clock_ms,
    .followers = aur_followers,
    .count_acked = aur_count_acked,
    .fence_rank = aur_fence_rank,
    .info = aurora_info,                   /* aurora.c */
    .role_reply = aur_role_reply,
    .conn_kind_name = aur_conn_kind_name,
    .after_recovery = aur_after_recovery,
    .before_checkpoint = aur_before_checkpoint,
    .shutdown = aur_stop,
};
