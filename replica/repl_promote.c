/*
 * repl_promote.c — promotion, re-pointing, shutdown of a replica, and fencing at start-up
 * (a failed-over primary refuses to start; a crashed primary starts a new timeline).
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
#include "common/net.h"
#include "replica/repl_int.h"

/* ================================================================ promotion, re-pointing */

/* Promotion runs in two steps because an asynchronous WAL write may still be
 * in flight: it must land before the log is cut and a TIMELINE record is
 * written at the same place. repl_promote stops replication; the finish step
 * runs once no flush is in flight (at once, or from repl_tick). */
int repl_promote_finish(struct server *s)
{
    struct upstream *u = &repl_of(s)->up;
    /* Everything received and whole is applied (the primary is gone: what it had not
     * flushed yet is ours to keep); records of a transaction whose COMMIT never
     * arrived are dropped. */
    repl_up_apply_ready(s, UINT64_MAX);
    rd_buf_reset(&u->pending);
    int rc;
    if (wal_insert_lsn(s->wal) > u->apply_lsn && (rc = wal_truncate(s->wal, u->apply_lsn)) < 0)
        rd_panic("promotion: could not cut the log at the last commit: %s", rd_strerror(rc));
    if ((rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal))) < 0)
        rd_panic("promotion: WAL flush failed: %s", rd_strerror(rc));
    uint64_t switch_lsn;
    /* W15, W16: the new timeline is the promotion term's block (terms are unique per failover:
     * T1-T6), so a replica that never heard of another node's promotion, or a crash restart on
     * another history, cannot reuse its timeline number. */
    uint32_t new_tli;
    if ((rc = wal_promotion_timeline(wal_timeline(s->wal), repl_of(s)->term, &new_tli)) < 0)
        rd_panic("promotion: term %" PRIu64 " on timeline %u does not fit a timeline number (W16)", repl_of(s)->term,
                 wal_timeline(s->wal));
    if ((rc = wal_switch_timeline_min(s->wal, new_tli, &switch_lsn)) < 0)
        rd_panic("promotion: could not switch timelines: %s", rd_strerror(rc));
    s->role = SERVER_ROLE_PRIMARY;
    rd_log_set_role("primary");
    /* S10: no checkpoint here (it flushed every dirty page: 70-140 ms under load, all of
     * it client-visible outage); the FPI threshold goes to the last restart point's redo
     * LSN instead, as PostgreSQL's fast promotion does (wal_promote_fast). */
    wal_promote_fast(s->wal, s->engine);
    s->durable_lsn = wal_flushed_lsn(s->wal);
    s->last_commit_lsn = s->durable_lsn;
    s->release_lsn = s->durable_lsn;
    repl_of(s)->promote_pending = 0;
    char l1[32];
    lsn_str(switch_lsn, l1, sizeof(l1));
    rd_info("promoted: primary on timeline %u (switched at %s); accepting writes", wal_timeline(s->wal), l1);
    if (s->promote_waiter) {
        struct conn *c = s->promote_waiter;
        s->promote_waiter = NULL;
        c->wait_active = 0;
        s->nwaiting--;
        if (resp_simple(&c->out, "OK") < 0)
            rd_panic("out of memory");
        conn_reply_done(s, c, 0);
        if (c->in.len > 0)
            conn_mark_ready(s, c);
    }
    return 0;
}

int repl_promote(struct server *s, struct conn *c, uint64_t term, char *err, size_t err_len)
{
    struct upstream *u = &repl_of(s)->up;
    if (s->role != SERVER_ROLE_REPLICA) {
        snprintf(err, err_len, "ERR this node is already a primary");
        return -1;
    }
    if (repl_of(s)->promote_pending) {
        snprintf(err, err_len, "ERR a promotion is already in progress");
        return -1;
    }
    if (s->engine == NULL || u->state == UP_CLONING) {
        snprintf(err, err_len, "ERR cannot promote: the base backup has not finished");
        return -1;
    }
    if (u->apply_lsn < u->consistent_lsn) {
        snprintf(err, err_len, "ERR cannot promote: replay has not reached the consistent point yet");
        return -1;
    }
    uint32_t tli_check;
    if (s->wal != NULL && wal_promotion_timeline(wal_timeline(s->wal), term ? term : repl_of(s)->term + 1, &tli_check) < 0) {
        snprintf(err, err_len, "ERR cannot promote: term %" PRIu64 " on timeline %u does not fit a timeline number (W16)",
                 term ? term : repl_of(s)->term + 1, wal_timeline(s->wal));
        return -1;
    }
    if (term == 0) { /* manual (REPLICAOF NO ONE): a term of its own, fencing nobody (T6) */
        if (repl_of(s)->term >= REPL_TERM_MAX) {
            snprintf(err, err_len, "ERR the term space is exhausted");
            return -1;
        }
        repl_term_save(s, repl_of(s)->term + 1, "manual promotion (REPLICAOF NO ONE): no quorum was fenced");
    } else {
        rd_assert(term == repl_of(s)->term);
    }
    rd_info("promotion requested: stopping replication from %s:%d", u->host, u->port);
    u->state = UP_IDLE;
    if (u->conn)
        conn_close(s, u->conn);
    u->conn = NULL;
    repl_of(s)->promote_pending = 1;
    if (!wal_flush_in_flight(s->wal)) {
        repl_promote_finish(s);
        return 0;
    }
    /* The client waits (like WAIT) until repl_tick finishes the promotion. */
    s->promote_waiter = c;
    c->wait_active = 1;
    c->wait_num = -1;
    c->wait_deadline_ms = UINT64_MAX;
    s->nwaiting++;
    return 1;
}

int repl_repoint(struct server *s, const char *host, int port, char *err, size_t err_len)
{
    struct upstream *u = &repl_of(s)->up;
    if (s->role == SERVER_ROLE_PRIMARY && s->fenced) {
        /* CR6: a fenced primary acknowledges nothing more, so rejoining loses
         * nothing it did not already lose: restart in place as a replica. */
        snprintf(server_rejoin_primary, sizeof(server_rejoin_primary), "%s:%d", host, port);
        s->shutdown_requested = 1;
        rd_warn("REPLICAOF %s %d on a fenced primary (%s): shutting down to restart as its replica "
                "(same process, --role replica --primary %s)",
                host, port, s->fenced_by, server_rejoin_primary);
        return 0;
    }
    if (s->role != SERVER_ROLE_REPLICA) {
        snprintf(err, err_len,
                 "ERR a primary that is not fenced cannot become a replica (that could drop acknowledged "
                 "writes): fence it first (REDOUBT.TERM or REDOUBT.FENCE), or restart it with --role replica "
                 "--primary HOST:PORT");
        return -1;
    }
    snprintf(u->host, sizeof(u->host), "%s", host);
    u->port = port;
    if (u->conn)
        conn_close(s, u->conn);
    if (u->state != UP_CONNECTING)
        repl_up_schedule_reconnect(s, 0);
    rd_info("replicating from %s:%d from now on", host, port);
    return 0;
}

void repl_shutdown(struct server *s)
{
    struct upstream *u = &repl_of(s)->up;
    u->state = UP_IDLE;
    if (s->wal == NULL)
        return;
    int rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal));
    if (rc < 0)
        rd_panic("WAL flush at shutdown failed: %s", rd_strerror(rc));
    if (u->last_ckpt_lsn != 0 && (rc = wal_restartpoint(s->wal, s->engine, u->last_ckpt_lsn, u->last_ckpt_redo)) < 0)
        rd_panic("restart point at shutdown failed: %s", rd_strerror(rc));
}

/* ================================================================ fencing at start-up */

/* A primary refuses to start when one of --peers is a primary on a newer
 * timeline: this node was failed over and must rejoin as a replica. */
int repl_check_peers(struct server *s)
{
    if (s->cfg.peers == NULL || s->wal == NULL)
        return 0;
    char list[1024];
    snprintf(list, sizeof(list), "%s", s->cfg.peers);
    uint32_t mine = wal_timeline(s->wal);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (colon == NULL)
            continue;
        *colon = 0;
        int fd = rd_net_connect(tok, atoi(colon + 1), 1000);
        struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
        int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
                 setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0;
        char buf[8192];
        size_t got = 0;
        if (ok && write(fd, "INFO replication\r\n", 18) == 18) {
            ssize_t r;
            while (got < sizeof(buf) - 1 && (r = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0) {
                got += (size_t)r;
                if (memmem(buf, got, "\r\n\r\n", 4) != NULL && got > 16)
                    break;
            }
        }
        if (fd >= 0)
            close(fd);
        buf[got] = 0;
        const char *tl = strstr(buf, "\ntimeline:");
        if (strstr(buf, "redoubt_role:primary") && tl) {
            unsigned long theirs = strtoul(tl + 10, NULL, 10);
            if (theirs > mine) {
                rd_error("a newer timeline %lu exists at %s:%s (a primary); this node is on timeline %u and must "
                         "not accept writes: restart it as a replica with --role replica --primary %s:%s "
                         "(it re-clones if its history has diverged)",
                         theirs, tok, colon + 1, mine, tok, colon + 1);
                return -1;
            }
        }
    }
    return 0;
}

int repl_after_crash(struct server *s)
{
    /* Whatever --repl-send says now: the run that crashed may have shipped WAL it never flushed. */
    if (s->wal == NULL)
        return 0;
    uint64_t switch_lsn;
    uint32_t new_tli;
    if (wal_crash_timeline(wal_timeline(s->wal), &new_tli) < 0) { /* W16 */
        rd_error("timeline %u has had 4095 crash restarts: another would take the next promotion's number; "
                 "promote a replica (or re-clone this node) instead", wal_timeline(s->wal));
        return -ERANGE;
    }
    int rc = wal_flush_sync(s->wal, wal_insert_lsn(s->wal));
    if (rc == 0)
        rc = wal_switch_timeline_min(s->wal, new_tli, &switch_lsn);
    if (rc == 0)
        rc = wal_checkpoint(s->wal, s->engine);
    if (rc < 0) {
        rd_error("could not start a new timeline after crash recovery: %s", rd_strerror(rc));
        return rc;
    }
    s->durable_lsn = s->last_commit_lsn = s->release_lsn = wal_flushed_lsn(s->wal);
    char l1[32];
    lsn_str(switch_lsn, l1, sizeof(l1));
    rd_info("crash recovery ended at %s: timeline %u starts there (a primary may ship WAL before flushing "
            "it, so a replica may hold WAL past this point: it cuts its log there, or re-clones)",
            l1, wal_timeline(s->wal));
    return 0;
}
