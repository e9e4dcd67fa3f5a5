/*
 * repl_info.c — INFO replication and ROLE of a classic node.
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
#include "replica/repl_int.h"

/* ================================================================ INFO, ROLE */

static void sync_spec_str(const struct server *s, char *spec, size_t n)
{
    size_t off = 0;
    spec[0] = 0;
    if (s->cfg.sync_num == 0)
        return;
    off += (size_t)snprintf(spec, n, "%s %u (", s->cfg.sync_method == SERVER_SYNC_ANY ? "ANY" : "FIRST",
                            s->cfg.sync_num);
    for (unsigned k = 0; k < s->cfg.sync_nnames && off < n - 80; k++)
        off += (size_t)snprintf(spec + off, n - off, "%s%s", k ? "," : "", s->cfg.sync_names[k]);
    snprintf(spec + off, n - off, ")");
}

/* Listed replicas on this primary's term that are streaming and were heard from
 * lately: the sync set's candidates as INFO sync_state reports them. A replica
 * answers every keepalive (REPL_KEEPALIVE_MS), so one silent for
 * REPL_SYNC_SILENT_MS is cut off even while its TCP connection looks open (a
 * partition), and a monitor may fail over to the side that can commit (M11). */
#define REPL_SYNC_SILENT_MS 1000u
static unsigned sync_connected(const struct server *s)
{
    unsigned n = 0;
    uint64_t now = rd_now_ms();
    for (const struct conn *c = s->conns; c; c = c->next)
        if (c->kind == CONN_WALSENDER && repl_peer_of(c) && !c->closing && repl_peer_of(c)->state == PEER_STREAMING &&
            repl_peer_of(c)->term == repl_of(s)->term && repl_name_listed(s, repl_peer_of(c)->name) >= 0 &&
            now - repl_peer_of(c)->last_status_ms < REPL_SYNC_SILENT_MS)
            n++;
    return n;
}

/* Fields every classic node shows: what a monitor needs to fence and choose (T1-T6, LS1-LS3, S20). */
static void info_fencing(struct server *s, struct rd_buf *b)
{
    char spec[1100];
    sync_spec_str(s, spec, sizeof(spec));
    uint64_t waiting = 0, oldest = 0;
    server_waits_info(s, &waiting, &oldest);
    unsigned renewed = 0;
    const char *lease = !server_lease_required(s) ? "off" : server_lease_ok(s, &renewed) ? "ok" : "lost";
    int sync_wanted = s->role == SERVER_ROLE_PRIMARY && s->cfg.commit >= SERVER_COMMIT_REMOTE_WRITE && s->cfg.sync_num > 0;
    unsigned have = sync_wanted ? sync_connected(s) : 0;
    char sync_state[64];
    if (!sync_wanted || have >= s->cfg.sync_num)
        snprintf(sync_state, sizeof(sync_state), sync_wanted ? "ok" : "none");
    else
        snprintf(sync_state, sizeof(sync_state), "waiting (%u/%u)", have, s->cfg.sync_num);
    rd_buf_appendf(b,
                   "term:%" PRIu64 "\r\nfenced:%d\r\nfenced_by:%s\r\ncommit_level:%s\r\nsync_replicas:%s\r\n"
                   "sync_state:%s\r\nrepl_name:%s\r\nlease:%s\r\nlease_monitors_renewed:%u\r\n"
                   "commits_waiting:%" PRIu64 "\r\noldest_commit_wait_ms:%" PRIu64 "\r\ncommit_timeout_ms:%" PRIu64
                   "\r\ncommit_timeouts:%" PRIu64 "\r\n",
                   repl_of(s)->term, s->fenced, s->fenced_by, server_commit_name(s->cfg.commit), spec, sync_state,
                   s->role == SERVER_ROLE_REPLICA ? s->cfg.name : "", lease, renewed, waiting, oldest,
                   s->cfg.commit_timeout_ms, s->commit_timeouts);
}

void repl_info(struct server *s, struct rd_buf *b)
{
    uint64_t now_us = rd_wall_us();
    if (s->role == SERVER_ROLE_REPLICA) {
        struct upstream *u = &repl_of(s)->up;
        static const char *states[] = {"idle", "disconnected", "connecting", "handshake", "cloning", "streaming"};
        uint64_t recv = s->wal ? wal_insert_lsn(s->wal) : 0;
        uint64_t lag_ms = u->apply_lsn >= u->primary_flush_lsn || u->apply_echo_us == 0
                              ? 0
                              : (now_us > u->apply_echo_us ? (now_us - u->apply_echo_us) / 1000 : 0);
        rd_buf_appendf(b,
                       "# Replication\r\nrole:slave\r\nredoubt_role:replica\r\nmaster_host:%s\r\nmaster_port:%d\r\n"
                       "master_link_status:%s\r\nreplication_state:%s\r\nmaster_sync_in_progress:%d\r\n"
                       "timeline:%u\r\nreceive_lsn:%" PRIu64 "\r\nwrite_lsn:%" PRIu64 "\r\nflush_lsn:%" PRIu64
                       "\r\napply_lsn:%" PRIu64 "\r\nconsistent_lsn:%" PRIu64 "\r\nprimary_flush_lsn:%" PRIu64
                       "\r\nlag_bytes:%" PRIu64 "\r\nlag_ms:%" PRIu64 "\r\nslave_repl_offset:%" PRIu64
                       "\r\nslave_read_only:1\r\nrepl_bytes_received:%" PRIu64 "\r\nlast_error:%s\r\n",
                       u->host, u->port, u->state == UP_STREAMING ? "up" : "down", states[u->state],
                       /* no finished base backup counts as syncing, whatever the link does now: such a
                        * replica can neither acknowledge nor be promoted (monitor M11, M13) */
                       u->state == UP_CLONING || s->engine == NULL, s->wal ? wal_timeline(s->wal) : 0, recv,
                       s->wal ? wal_written_lsn(s->wal) : 0, s->wal ? wal_flushed_lsn(s->wal) : 0, u->apply_lsn,
                       u->consistent_lsn, u->primary_flush_lsn,
                       u->primary_flush_lsn > u->apply_lsn ? u->primary_flush_lsn - u->apply_lsn : 0, lag_ms,
                       u->apply_lsn, u->bytes_received, u->last_error);
        info_fencing(s, b);
        rd_buf_appendf(b, "\r\n");
        return;
    }
    rd_buf_appendf(b, "# Replication\r\nrole:master\r\nredoubt_role:%s\r\ntimeline:%u\r\nconnected_slaves:%zu\r\n",
                   s->role == SERVER_ROLE_PRIMARY ? "primary" : "standalone", s->wal ? wal_timeline(s->wal) : 0,
                   repl_of(s)->npeers);
    info_fencing(s, b);
    size_t i = 0;
    uint64_t flushed = s->wal ? wal_flushed_lsn(s->wal) : 0;
    for (struct conn *c = s->conns; c; c = c->next) {
        if (c->kind != CONN_WALSENDER || repl_peer_of(c) == NULL)
            continue;
        struct repl_peer *p = repl_peer_of(c);
        char ip[300];
        snprintf(ip, sizeof(ip), "%s", c->addr);
        char *colon = strrchr(ip, ':');
        int port = 0;
        if (colon) {
            *colon = 0;
            port = p->listen_port ? p->listen_port : atoi(colon + 1); /* the port it listens on, if announced */
        }
        rd_buf_appendf(b,
                       "slave%zu:name=%s,ip=%s,port=%d,state=%s,offset=%" PRIu64 ",lag=%" PRIu64 ",sent_lsn=%" PRIu64
                       ",write_lsn=%" PRIu64 ",flush_lsn=%" PRIu64 ",apply_lsn=%" PRIu64 ",lag_bytes=%" PRIu64
                       ",write_lag_ms=%.3f,flush_lag_ms=%.3f,replay_lag_ms=%.3f,sync=%s\r\n",
                       i++, p->name, ip, port, p->state == PEER_BACKUP ? "backup" : "streaming", p->flush_lsn,
                       (rd_now_ms() - p->last_status_ms) / 1000, p->sent_lsn, p->write_lsn, p->flush_lsn,
                       p->apply_lsn, flushed > p->apply_lsn ? flushed - p->apply_lsn : 0, p->write_lag_us / 1000.0,
                       p->flush_lag_us / 1000.0, p->apply_lag_us / 1000.0,
                       repl_name_listed(s, p->name) >= 0 && s->cfg.sync_num > 0 ? "sync" : "async");
    }
    rd_buf_appendf(b, "master_repl_offset:%" PRIu64 "\r\nrelease_lsn:%" PRIu64 "\r\nrepl_bytes_sent:%" PRIu64 "\r\n\r\n",
                   flushed, s->release_lsn, repl_of(s)->repl_bytes_sent);
}

void repl_role_reply(struct server *s, struct conn *c)
{
    int rc = 0;
    if (s->role == SERVER_ROLE_REPLICA) {
        struct upstream *u = &repl_of(s)->up;
        rc |= resp_array_hdr(&c->out, 5);
        rc |= resp_bulk_str(&c->out, "slave");
        rc |= resp_bulk_str(&c->out, u->host);
        rc |= resp_int(&c->out, u->port);
        rc |= resp_bulk_str(&c->out, u->state == UP_STREAMING ? "connected"
                                     : u->state == UP_CLONING ? "sync"
                                                              : "connecting");
        rc |= resp_int(&c->out, (int64_t)u->apply_lsn);
    } else {
        rc |= resp_array_hdr(&c->out, 3);
        rc |= resp_bulk_str(&c->out, "master");
        rc |= resp_int(&c->out, s->wal ? (int64_t)wal_flushed_lsn(s->wal) : 0);
        rc |= resp_array_hdr(&c->out, repl_of(s)->npeers);
        for (struct conn *o = s->conns; o; o = o->next) {
            if (o->kind != CONN_WALSENDER || repl_peer_of(o) == NULL)
                continue;
            char ip[300];
            snprintf(ip, sizeof(ip), "%s", o->addr);
            char *colon = strrchr(ip, ':');
            if (colon)
                *colon = 0;
            char port[16], off[32];
            if (repl_peer_of(o)->listen_port) /* the port it listens on, if announced */
                snprintf(port, sizeof(port), "%d", repl_peer_of(o)->listen_port);
            else
                snprintf(port, sizeof(port), "%s", colon ? colon + 1 : "0");
            snprintf(off, sizeof(off), "%" PRIu64, repl_peer_of(o)->flush_lsn);
            rc |= resp_array_hdr(&c->out, 3);
            rc |= resp_bulk_str(&c->out, ip);
            rc |= resp_bulk_str(&c->out, port);
            rc |= resp_bulk_str(&c->out, off);
        }
    }
    if (rc < 0)
        rd_panic("out of memory for a reply");
}
