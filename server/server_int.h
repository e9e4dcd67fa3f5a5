/* server_int.h — internals shared by server.c (loop, connections) and
 * commands.c (command table and handlers). Not a public interface. */
#ifndef RD_SERVER_INT_H
#define RD_SERVER_INT_H

#include <stdint.h>

#include "common/auth.h"
#include "common/buf.h"
#include "common/conn.h"
#include "common/loop.h"
#include "engine/engine.h"
#include "common/resp.h"
#include "server/role.h"
#include "server/server.h"
#include "wal/wal.h"

enum conn_kind {
    CONN_CLIENT = 0,     /* a RESP client */
    CONN_DOWNSTREAM = 1, /* a follower attached to us (classic walsender, aurora reader feed): frames */
    CONN_UPSTREAM = 2,   /* our link to the leader (classic primary, aurora writer's feed): frames */
    CONN_LINK = 3,       /* another link of the role (aurora: a storage node): frames */
};


/* A reply byte range that may be sent only once lsn is durable. */
struct conn_mark {
    size_t end;        /* offset in conn.out just past the replies that need lsn */
    uint64_t lsn;
    uint64_t since_ms; /* when the first reply of this mark was queued (--commit-timeout-ms) */
    uint32_t nreplies; /* whole replies in (previous mark's end, end] */
    int keep;          /* replies that reflect no data (PING, INFO ...): they only wait for
                        * their turn, and a commit timeout leaves them as they are */
};

/* A connection: the connection layer's part (common/conn.h: fd, addr, in, out,
 * closing ... named directly through the anonymous struct) and the instance's. */
struct conn {
    union {
        struct rd_conn nc;
        struct { RD_CONN_FIELDS };
    };
    struct server *srv;
    enum conn_kind kind;
    uint64_t last_write_lsn; /* commit LSN of this client's newest write (WAIT) */
    /* Owned by the role (role.h) on a role connection (kind != CONN_CLIENT): */
    void *role_conn;          /* the role's state of this connection (classic: struct repl_peer) */
    int role_idx;             /* an index the role gives it (aurora: the storage node) */
    char follower_name[64];   /* CONN_DOWNSTREAM: the follower's name */
    uint64_t follower_lsn;    /* CONN_DOWNSTREAM: the position it reported (aurora: read point) */
    int follower_port;        /* CONN_DOWNSTREAM: the client port it listens on (aurora reader; 0: not announced) */
    int wait_active;        /* blocked in WAIT */
    uint64_t wait_deadline_ms;
    int64_t wait_num;
    int authed;
    char name[64];          /* CLIENT SETNAME / HELLO SETNAME */
    struct cmd_watch *watched; /* WATCH (commands.c); freed with the conn */
    size_t nwatched;
    uint64_t watch_flush_ver;
    uint64_t last_cmd_ms;   /* CLIENT LIST idle */
    struct conn_mark *marks; /* ascending lsn; replies in out beyond marks[0].end wait */
    size_t nmarks, marks_cap;
    uint32_t tail_replies;   /* replies in out after the last mark (nmarks == 0 only) */
    size_t tail_start;       /* where those replies start in out */
    /* MULTI state */
    int in_multi;
    int multi_dirty;        /* a queued command was rejected: EXEC aborts */
    struct rd_buf multi_q;  /* queued commands: u32 argc, then u32 len + bytes per arg */
    size_t multi_count;
    struct resp_args args;
    struct conn *prev, *next; /* all conns */
    uint64_t cmds;
    /* peers (server.c "Peers and budgets") */
    struct rd_auth_hs hs;   /* REDOUBT.AUTH on this connection (or our HELLO on an outbound link) */
    int peer_authed;        /* both ends proved the cluster secret (or no secret is configured) */
    int is_peer;            /* counted in server.npeer_conns, not against --maxclients */
    int over_budget;        /* accepted beyond --maxclients: must become a peer within the deadline */
    /* parked on a page miss (server/suspend.c): the command at the head of `in` runs again later */
    int parked;
    uint32_t park_page;      /* the page it waits for */
    uint32_t park_misses;    /* misses of the current command (S26: bounded) */
    int park_failed;         /* the page could not be read: the command answers -TRYAGAIN */
    uint64_t park_since_us;  /* the command's first miss */
};

struct scan_cursor {
    uint64_t id;
    struct rd_buf next_key;
    uint64_t used_ms;
};

#define SERVER_SCAN_CURSORS 256
#define SERVER_LEASE_MONITORS_MAX 16

struct server_stats {
    uint64_t connections_received, connections_rejected;
    uint64_t commands, write_commands, read_commands, errors, protocol_errors;
    uint64_t txns, replies_delayed;
};

struct server {
    struct server_config cfg;
    enum server_role role;
    const struct role_ops *ops; /* chosen once at start-up (role.h) */
    void *role_state;           /* the role's own state, allocated by ops->start; opaque here */
    uint64_t release_lsn;  /* replies tagged <= this may be sent (local + sync replicas) */
    size_t nwaiting;       /* conns blocked in WAIT (or waiting for a promotion) */
    int crash_recovered;       /* the control file said IN_PRODUCTION at start: not shut down cleanly */
    int fenced;            /* REDOUBT.FENCE or a newer term: writes refused, nothing more released */
    char fenced_by[128];
    /* leases (--lease-ms, LS1-LS3): the CLOCK_MONOTONIC ms of each monitor's newest renewal */
    uint64_t lease_renewed_ms[SERVER_LEASE_MONITORS_MAX];
    int lease_was_ok;
    uint64_t commit_timeouts;  /* replies replaced by the commit-timeout error */
    uint64_t last_expire_ms;
    struct conn *promote_waiter;
    struct rd_loop loop;
    struct wal *wal;
    struct engine *engine;
    int listen_fd;
    struct rd_net net;          /* the connection layer: listener, recv ring, ready list */
    struct rd_buf_ring bufring; /* provided buffers for multishot recv */
    struct conn *conns;       /* doubly linked list */
    size_t nconns;
    uint64_t next_txn_id;
    uint64_t last_commit_lsn; /* end LSN of the newest commit appended */
    uint64_t durable_lsn;
    struct rd_io timer_io;
    int timer_armed;
    struct server_stats stats;
    struct scan_cursor cursors[SERVER_SCAN_CURSORS];
    uint64_t next_cursor_id;
    uint64_t start_ms;
    int shutdown_requested;
    int exit_status;
    struct resp_limits limits;
    struct rd_auth auth;       /* the cluster secret (auth.enabled 0: none configured) */
    size_t npeer_conns;        /* conns with is_peer set */
    uint64_t budget_check_ms;  /* last pass over the conns for deadlines and --timeout */
    /* suspend.c: the client command running now, if a page miss may park it */
    struct conn *exec_conn;
    int exec_bg;               /* a background cycle runs (the writer's expiry): a miss skips it */
    int exec_nopark;           /* the running command committed a transaction: its misses block */
    int exec_missed;
    uint32_t exec_miss_page;
    uint64_t wake_within_us;   /* the role wants the loop to wake this soon (0: the default timer) */
    struct { uint64_t parked, resumed, failed, sync_fallbacks, wait_us_total; } susp;
};

/* server.c */
void server_update_release(struct server *s);
void conn_close(struct server *s, struct conn *c);
void conn_mark_ready(struct server *s, struct conn *c);
struct conn *conn_new(struct server *s, int fd, enum conn_kind kind);
/* The connection becomes a cluster peer (after REDOUBT.AUTH, or a replication /
 * feed handshake when no secret is configured): it leaves the client budget. 0,
 * or -1 if the peer budget is full (the caller answers and closes). */
int conn_make_peer(struct server *s, struct conn *c);
/* 1 if c may send peer/admin commands; else answers -NOPEERAUTH, logs once per
 * source address, closes c after the reply, returns 0. */
int conn_require_peer(struct server *s, struct conn *c, const char *what);
/* Opens the local WAL and data file in --dir and recovers; then the role's
 * after_recovery, and the end-of-recovery checkpoint unless it said to skip it. */
int server_open_storage(struct server *s);

/* server.c: leases (--lease-ms) and bounded commit waits (--commit-timeout-ms) */
int server_lease_required(const struct server *s);
int server_lease_ok(const struct server *s, unsigned *renewed);
void server_lease_renew(struct server *s, unsigned monitor_id, uint64_t monitor_ms);
void server_waits_info(const struct server *s, uint64_t *waiting, uint64_t *oldest_ms);

/* server.c: the instance's services to its role */
/* Durability advanced (a local flush completed, or aurora's VDL moved): releases replies (S1). */
void server_durable_advanced(struct server *s, uint64_t durable_lsn);
/* The local log (standalone and classic roles). */
uint64_t server_wal_insert_lsn(const struct server *s);
int server_wal_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn);
void server_wal_shutdown(struct server *s);
const char *server_role_name(enum server_role r);
/* A follower (replica, reader) serves reads at its own point and writes nothing of its own. */
static inline int server_is_follower(const struct server *s)
{
    return s->role == SERVER_ROLE_REPLICA || s->role == SERVER_ROLE_READER;
}
/* A leader that followers and monitors answer to (primary, writer): leases apply (LS1, LS4). */
static inline int server_is_leader(const struct server *s)
{
    return s->role == SERVER_ROLE_PRIMARY || s->role == SERVER_ROLE_WRITER;
}

/* suspend.c: commands parked on a page miss (non-blocking GetPage; server/README S25, S26) */
#define SERVER_SUSPEND_MAX_MISSES 64 /* then the command finishes with blocking reads */
/* Around cmd_execute (conn_process): a miss in the command may park it. */
void server_suspend_begin(struct server *s, struct conn *c);
/* After cmd_execute: 1 if the command was parked (its bytes stay at the head of c->in). */
int server_suspend_end(struct server *s, struct conn *c);
/* In cmd_execute / EXEC, before the reply is tagged: 1 if the command missed a page and
 * changed nothing (changed == 0): its partial reply (c->out beyond out_mark) is removed
 * and it runs again once the page is here. */
int server_suspend_undo(struct server *s, struct conn *c, size_t out_mark, int changed);
/* Before running a command of c: 1 if its page could not be read (answered -TRYAGAIN). */
int server_suspend_failed_reply(struct server *s, struct conn *c);
/* Around a background cycle (cmd_tick: the writer's expiry index build and deletes): a page
 * miss requests the page and fails the cycle's read with RD_EAGAIN; the cycle retries later. */
void server_suspend_background(struct server *s, int on);
/* The running command committed part of its work (FLUSHDB's batches): from here its misses
 * block, since it could not be run again from its start. */
void server_suspend_no_park(struct server *s);
/* The role: whether the running command (or background cycle) may take a miss without blocking;
 * and that it missed page_id. */
int server_suspend_may_park(const struct server *s);
void server_suspend_note_miss(struct server *s, uint32_t page_id);
/* The role: page_id is installed (failed 0) or could not be read (1): its commands run again. */
void server_suspend_wake(struct server *s, uint32_t page_id, int failed);
void server_suspend_info(const struct server *s, struct rd_buf *b);
/* The role, every turn while commands are parked: a parked command whose page has no
 * request pending (pending() == 0) runs again, so none waits forever. */
void server_suspend_sweep(struct server *s, int (*pending)(void *ctx, uint32_t page_id), void *ctx);

/* commands.c */
void cmd_execute(struct server *s, struct conn *c, const struct resp_args *args);
/* Once per loop turn: the writer's expiry (deletes of expired keys, logged) and
 * the build of its expiry index; nothing on replicas and readers. */
void cmd_tick(struct server *s);
/* Replies: append to c->out. A reply must be tagged with the LSN it depends on
 * (conn_reply_done) before the next command runs. */
void conn_reply_done(struct server *s, struct conn *c, uint64_t lsn);
void conn_close_after_reply(struct conn *c);

#endif
