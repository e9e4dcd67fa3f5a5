/*
 * repl_role.c — the classic role (server/role.h): standalone, primary and
 * replica. The instance calls this wing only through role_classic; the table
 * below says which file does each job.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "replica/repl_int.h"

/* Start-up after the port is bound: the local storage (or an empty replica
 * directory, filled by the base backup), the term, the start-up fences. */
int repl_start(struct server *s)
{
    rd_assert(s->role_state == NULL);
    s->role_state = calloc(1, sizeof(struct repl_state));
    if (s->role_state == NULL)
        rd_panic("out of memory for the classic role's state");
    repl_of(s)->up.srv = s;
    char control[4096];
    snprintf(control, sizeof(control), "%s/control", s->cfg.dir ? s->cfg.dir : ".");
    if (s->role == SERVER_ROLE_REPLICA && access(control, F_OK) != 0) {
        /* Empty replica: storage is created by the base backup (repl_receiver.c). */
        if (mkdir(s->cfg.dir, 0755) < 0 && errno != EEXIST) {
            rd_error("could not create data directory \"%s\": %s", s->cfg.dir, strerror(errno));
            return -errno;
        }
        rd_info("data directory \"%s\" has no control file: cloning from the primary", s->cfg.dir);
    } else if (server_open_storage(s) < 0) {
        return -1;
    }
    if (repl_term_load(s) < 0)
        return -1;
    /* A failed-over primary must not accept writes on its old timeline. */
    if (s->role == SERVER_ROLE_PRIMARY && repl_check_peers(s) < 0)
        return -1;
    if (s->role == SERVER_ROLE_PRIMARY && s->crash_recovered && repl_after_crash(s) < 0)
        return -1;
    if (s->role == SERVER_ROLE_REPLICA)
        repl_start_replica(s);
    return 0;
}

static int repl_after_recovery(struct server *s)
{
    int rc;
    if (s->role == SERVER_ROLE_PRIMARY && (rc = repl_slots_load(s)) < 0)
        return rc; /* before the end-of-recovery checkpoint removes WAL */
    /* A replica appends nothing of its own: its log stays byte-identical to the
     * primary's. A primary that starts a new timeline after a crash
     * (repl_after_crash) checkpoints there, on the new timeline: the fork must be
     * the end of the recovered log, which a replica holding more of the old
     * timeline can cut its log at. */
    if (s->role == SERVER_ROLE_REPLICA || (s->role == SERVER_ROLE_PRIMARY && s->crash_recovered))
        return 1;
    return 0;
}

static void repl_ship(struct server *s) { (void)s; /* walsenders pump in repl_tick */ }

static void repl_command(struct server *s, struct conn *c, const struct resp_args *a)
{
    if (resp_arg_eq(&a->v[0], "redoubt.replicate")) {
        repl_cmd_replicate(s, c, a);
        if (c->kind == CONN_WALSENDER && conn_make_peer(s, c) < 0)
            conn_close(s, c);
    } else if (resp_arg_eq(&a->v[0], "redoubt.term")) {
        repl_cmd_term(s, c, a);
    } else if (resp_arg_eq(&a->v[0], "redoubt.promote")) {
        repl_cmd_promote_term(s, c, a);
    } else { /* REDOUBT.READER */
        resp_error(&c->out, "ERR this node is not an aurora writer");
    }
}

static int repl_may_write(const struct server *s, char *err, size_t err_len)
{
    (void)s, (void)err, (void)err_len;
    return 1;
}

static int repl_readable(const struct server *s)
{
    return s->engine != NULL && (s->role != SERVER_ROLE_REPLICA || repl_replica_readable(s));
}

static int repl_paused(const struct server *s) { (void)s; return 0; }

static uint64_t repl_clock_ms(const struct server *s)
{
    return s->role == SERVER_ROLE_REPLICA ? repl_of(s)->up.apply_echo_us / 1000u : 0;
}

static size_t repl_followers(const struct server *s) { return repl_of(s)->npeers; }

static const char *repl_conn_kind_name(const struct conn *c)
{
    return c->kind == CONN_WALSENDER ? "walsender" : "upstream";
}

static void repl_before_checkpoint(struct server *s) { repl_slots_save(s); /* a failure is logged */ }

static void repl_stop(struct server *s)
{
    if (s->role == SERVER_ROLE_REPLICA) {
        repl_shutdown(s); /* restart point, nothing appended */
        return;
    }
    repl_slots_save(s);
    server_wal_shutdown(s);
}

static uint64_t repl_fence_rank(const struct server *s) { return repl_of(s)->term; }

const struct role_ops role_classic = {
    .name = "classic",
    .start = repl_start,                       /* here */
    .insert_lsn = server_wal_insert_lsn,       /* the instance's local WAL */
    .append_commit = server_wal_append_commit,
    .ship = repl_ship,
    .tick = repl_tick,                         /* repl.c */
    .sync_lsn = repl_sync_lsn,                 /* repl_sender.c */
    .process_input = repl_process_input,       /* repl.c */
    .on_conn_closed = repl_on_conn_closed,
    .command = repl_command,                   /* here -> repl_sender.c, repl_term.c */
    .promote = repl_promote,                   /* repl_promote.c */
    .repoint = repl_repoint,
    .may_write = repl_may_write,
    .readable = repl_readable,
    .paused = repl_paused,
    .clock_ms = repl_clock_ms,
    .followers = repl_followers,
    .count_acked = repl_count_acked,           /* repl_sender.c */
    .fence_rank = repl_fence_rank,
    .info = repl_info,                         /* repl_info.c */
    .role_reply = repl_role_reply,
    .conn_kind_name = repl_conn_kind_name,
    .after_recovery = repl_after_recovery,
    .before_checkpoint = repl_before_checkpoint,
    .shutdown = repl_stop,
};
