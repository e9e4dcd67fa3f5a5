/* server_int.h — internals shared by server.c (loop, connections) and
 * commands.c (command table and handlers). Not a public interface. */
#ifndef RD_SERVER_INT_H
#define RD_SERVER_INT_H

#include <stdint.h>

#include "common/auth.h"
#include "common/buf.h"
#include "common/loop.h"
#include "engine/engine.h"
#include "common/resp.h"
#include "server/server.h"
#include "wal/wal.h"

enum conn_kind {
    CONN_CLIENT = 0,    /* a RESP client */
    CONN_WALSENDER = 1, /* primary side of a replica's connection: frames */
    CONN_UPSTREAM = 2,  /* replica side of its connection to the primary: frames */
    CONN_STORAGE = 3,   /* aurora writer -> storage node link: frames */
    CONN_READER_FEED = 4, /* aurora writer side of a reader's feed: frames */
    CONN_FEED_UP = 5,   /* aurora reader side of its feed from the writer: frames */
};

#include "redo/redo.h"

/* ---- aurora (aurora.c) ---- */
struct aur_ctl { /* blocking control socket to a storage node (epochs, GetPage) */
    int fd;
    struct rd_buf in, scratch;
    uint64_t retry_ms;
};
#define AUR_SENT_RING 4096
struct aur_node {
    char host[256];
    int port;
    struct conn *conn; /* async redo link (writer) */
    uint64_t retry_ms;
    int down_logged, ever_up;
    uint64_t scl, acks, last_ack_ms, ack_lat_us;
    struct rd_buf held;  /* WRITE frames shipped while the link authenticates (sent after PROOF, EPOCH) */
    struct { uint64_t last_lsn, send_us; } sent[AUR_SENT_RING];
    size_t sent_head, nsent;
};
struct aurora {
    struct aur_node node[REDO_NODES];
    struct aur_ctl ctl[REDO_NODES];
    uint64_t epoch;
    int role_writer, fenced;
    uint64_t last_lsn;     /* last LSN assigned */
    uint64_t read_lsn;     /* GetPage read point */
    uint64_t recovered_vdl;
    struct redo_batch batch;
    int batch_open;
    struct redo_quorum q;
    struct rd_buf frame, feed, scratch;
    struct rd_buf feedrec; /* redo feed: records above VDL: u64 lsn, u32 page, u8 type, u32 len, body */
    struct { uint64_t lsn; uint32_t page_id; } *changed; /* pages changed above VDL, for the feed */
    size_t nchanged, changed_cap;
    size_t nreaders;
    uint64_t req_id, getpage_requests, getpage_hedged;
    uint64_t redo_records, commits, redo_bytes_raw, redo_bytes_batch, redo_bytes_wire, net_bytes_sent, frames_sent;
    uint64_t readpoint_ms, min_read_point, status_ms, scl_poll_ms;
    /* reader */
    char writer_host[256];
    int writer_port;
    struct conn *feed_conn;
    uint64_t feed_retry_ms, writer_vdl, feed_send_us, lag_us, feed_msgs;
    int meta_stale;
    int feed_fresh; /* no FEED yet on the current subscription */
};

struct repl_peer; /* repl.c */

struct repl_peer; /* repl.c */

/* A reply byte range that may be sent only once lsn is durable. */
struct conn_mark {
    size_t end;        /* offset in conn.out just past the replies that need lsn */
    uint64_t lsn;
    uint64_t since_ms; /* when the first reply of this mark was queued (--commit-timeout-ms) */
    uint32_t nreplies; /* whole replies in (previous mark's end, end] */
    int keep;          /* replies that reflect no data (PING, INFO ...): they only wait for
                        * their turn, and a commit timeout leaves them as they are */
};

struct conn {
    uint64_t id;
    enum conn_kind kind;
    struct repl_peer *peer; /* CONN_WALSENDER */
    char addr[300];         /* peer ip:port */
    uint64_t last_write_lsn; /* commit LSN of this client's newest write (WAIT) */
    int sn_idx;             /* CONN_STORAGE: node index */
    char reader_name[64];   /* CONN_READER_FEED */
    uint64_t reader_point;  /* CONN_READER_FEED: the reader's read point */
    int reader_port;        /* CONN_READER_FEED: the client port it listens on (0: not announced) */
    int wait_active;        /* blocked in WAIT */
    uint64_t wait_deadline_ms;
    int64_t wait_num;
    int fd;
    struct server *srv;
    struct rd_io recv_io;
    struct rd_io send_io;
    int recv_armed;
    int send_in_flight;
    int closing;            /* no more input is processed; freed when no op is in flight */
    int close_after_send;   /* QUIT / protocol error: close once the output is sent */
    int authed;
    char name[64];          /* CLIENT SETNAME / HELLO SETNAME */
    struct cmd_watch *watched; /* WATCH (commands.c); freed with the conn */
    size_t nwatched;
    uint64_t watch_flush_ver;
    uint64_t last_cmd_ms;   /* CLIENT LIST idle */
    struct rd_buf in;       /* unparsed input */
    struct rd_buf out;      /* replies not yet handed to send */
    struct rd_buf sending;  /* bytes owned by the in-flight send (invariant L1) */
    size_t sending_off;
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
    struct conn *next_ready; /* list of conns with unprocessed input */
    int on_ready_list;
    struct conn *prev, *next; /* all conns */
    uint64_t created_ms;
    uint64_t cmds;
    /* peers (server.c "Peers and budgets") */
    struct rd_auth_hs hs;   /* REDOUBT.AUTH on this connection (or our HELLO on an outbound link) */
    int peer_authed;        /* both ends proved the cluster secret (or no secret is configured) */
    int is_peer;            /* counted in server.npeer_conns, not against --maxclients */
    int over_budget;        /* accepted beyond --maxclients: must become a peer within the deadline */
    uint64_t last_input_ms; /* --timeout */
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
    uint64_t net_in_bytes, net_out_bytes;
};

/* Replica side: the link to the primary and the apply state. */
enum upstream_state {
    UP_IDLE = 0,       /* not a replica, or promoted */
    UP_DISCONNECTED,   /* waiting to reconnect */
    UP_CONNECTING,
    UP_HANDSHAKE,      /* REDOUBT.REPLICATE sent, waiting for HELLO / BACKUP_BEGIN */
    UP_CLONING,        /* receiving a base backup */
    UP_STREAMING,
};

#define UPSTREAM_ECHO_RING 1024

struct upstream {
    enum upstream_state state;
    char host[256];
    int port;
    struct conn *conn;
    int fd;                    /* connecting socket */
    struct rd_io connect_io, timeout_io;
    int connect_in_flight, timeout_in_flight;
    struct __kernel_timespec connect_timeout;
    uint64_t next_attempt_ms;
    uint64_t last_msg_ms;      /* last frame received */
    uint64_t primary_flush_lsn;
    uint64_t primary_send_us;  /* send time of the newest WAL/keepalive */
    uint64_t system_id;
    uint64_t apply_lsn;        /* end of the last applied commit/checkpoint/timeline record */
    uint64_t apply_time_us;    /* primary send time of the message holding it */
    uint64_t consistent_lsn;   /* reads are served once apply_lsn >= this (after a clone) */
    uint64_t last_ckpt_lsn, last_ckpt_redo; /* newest CHECKPOINT record applied */
    uint64_t last_restartpoint_ms;
    struct rd_buf pending;     /* records since the last commit, not applied yet */
    /* primary send times of received messages, to echo per LSN (lag measurement) */
    struct { uint64_t end_lsn, send_us; } echo[UPSTREAM_ECHO_RING];
    size_t echo_head, echo_n;
    uint64_t write_echo_us, flush_echo_us, apply_echo_us;
    uint64_t sent_write, sent_flush, sent_apply; /* last status sent */
    uint64_t status_sent_ms;
    /* clone */
    int clone_fd;
    uint32_t clone_npages, clone_pages_done;
    uint64_t clone_redo_lsn, clone_ckpt_lsn, clone_seg_size;
    uint32_t clone_timeline;
    int reclone_requested;
    char last_error[512];
    uint64_t bytes_received, msgs_received;
    struct rd_buf pending_scratch; /* decompressed frames */
};

/* Primary side: replication slots, one per replica name (in memory). */
#define SERVER_MAX_SLOTS 32
struct repl_slot {
    char name[64];
    int in_use;
    int active;            /* a connection streams to it now */
    uint64_t restart_lsn;  /* the replica's confirmed flush LSN: WAL from here is kept */
    int created;           /* new: not in DIR/slots yet */
};

struct server {
    struct server_config cfg;
    enum server_role role;
    uint64_t release_lsn;  /* replies tagged <= this may be sent (local + sync replicas) */
    struct upstream up;
    struct aurora aur;
    struct repl_slot slots[SERVER_MAX_SLOTS];
    size_t npeers;
    size_t nwaiting;       /* conns blocked in WAIT (or waiting for a promotion) */
    int promote_pending;
    int crash_recovered;       /* the control file said IN_PRODUCTION at start: not shut down cleanly */
    int fenced;            /* REDOUBT.FENCE or a newer term: writes refused, nothing more released */
    char fenced_by[128];
    uint64_t term;         /* classic: persisted in DIR/term (replica/README.md T1-T6) */
    int term_fenced;       /* primary: fenced because a newer term was seen (REDOUBT.PROMOTE lifts it) */
    /* leases (--lease-ms, LS1-LS3): the CLOCK_MONOTONIC ms of each monitor's newest renewal */
    uint64_t lease_renewed_ms[SERVER_LEASE_MONITORS_MAX];
    int lease_was_ok;
    uint64_t commit_timeouts;  /* replies replaced by the commit-timeout error */
    uint64_t last_expire_ms;
    struct conn *promote_waiter;
    uint64_t repl_bytes_sent;
    struct rd_loop loop;
    struct wal *wal;
    struct engine *engine;
    int listen_fd;
    struct rd_io accept_io;
    int accept_armed;
    struct rd_buf_ring bufring; /* provided buffers for multishot recv */
    struct conn *conns;       /* doubly linked list */
    size_t nconns;
    struct conn *ready_head;  /* conns with unprocessed input */
    uint64_t next_conn_id;
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
int server_open_storage(struct server *s);

/* aurora.c — the reader feed's decoders (pure; fuzz_feed). FEED: 0 or RD_EPROTO.
 * FEED_REDO: NULL if the frame is whole and valid for a reader at read_lsn
 * (records in (.., vdl], LSNs ascending, lengths exact), else what is wrong. */
int aur_feed_check(const uint8_t *p, size_t n);
const char *aur_feed_redo_check(const uint8_t *p, size_t n, uint64_t read_lsn);

/* repl.c — both sides of classic replication. */
void repl_process_input(struct server *s, struct conn *c); /* frames on a WALSENDER/UPSTREAM conn */
void repl_on_conn_closed(struct server *s, struct conn *c);
void repl_tick(struct server *s);                          /* once per loop turn */
/* REDOUBT.REPLICATE on a client connection: turns it into a walsender. */
void repl_cmd_replicate(struct server *s, struct conn *c, const struct resp_args *a);
/* 0 promoted, 1 in progress (c is answered when done), -1 refused (err). */
/* term: the term this node was fenced for (REDOUBT.PROMOTE), or 0 for a manual promotion. */
int repl_promote(struct server *s, struct conn *c, uint64_t term, char *err, size_t err_len);
int repl_repoint(struct server *s, const char *host, int port, char *err, size_t err_len);
void repl_start_replica(struct server *s);
int repl_check_peers(struct server *s);
/* CR3: a primary restarting after a crash begins a new timeline at its
 * recovered end (the run that crashed may have shipped WAL it never flushed,
 * --repl-send written), so a replica that received WAL this node lost cannot
 * continue on the old history. */
int repl_after_crash(struct server *s);
/* DIR/slots: saved when a slot is created or dropped and before each checkpoint
 * (the checkpoint removes WAL below every slot's restart LSN); loaded at start. */
int repl_slots_save(struct server *s);
int repl_slots_load(struct server *s);
void repl_info(struct server *s, struct rd_buf *b);
void repl_role_reply(struct server *s, struct conn *c);
size_t repl_count_acked(const struct server *s, uint64_t lsn); /* WAIT */
int repl_replica_readable(const struct server *s);          /* hot standby consistent */
void repl_shutdown(struct server *s);
/* Terms (replica/README.md T1-T6). */
int repl_term_load(struct server *s);                        /* at start: DIR/term, 0 if absent */
void repl_cmd_term(struct server *s, struct conn *c, const struct resp_args *a);    /* REDOUBT.TERM t */
void repl_cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a); /* REDOUBT.PROMOTE t */

/* server.c: leases (--lease-ms) and bounded commit waits (--commit-timeout-ms) */
int server_lease_required(const struct server *s);
int server_lease_ok(const struct server *s, unsigned *renewed);
void server_lease_renew(struct server *s, unsigned monitor_id, uint64_t monitor_ms);
void server_waits_info(const struct server *s, uint64_t *waiting, uint64_t *oldest_ms);

/* aurora.c */
int aurora_init(struct server *s);
void aurora_ship(struct server *s);
void aurora_tick(struct server *s);
void aurora_process_input(struct server *s, struct conn *c);
void aurora_on_conn_closed(struct server *s, struct conn *c);
void aurora_cmd_reader(struct server *s, struct conn *c, const struct resp_args *a);
int aurora_promote(struct server *s, char *err, size_t err_len);
int aurora_repoint(struct server *s, const char *host, int port, char *err, size_t err_len);
void aurora_info(struct server *s, struct rd_buf *b);
uint64_t aurora_insert_lsn(const struct server *s);
int aurora_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn);
int aurora_backpressure(const struct server *s);
int aurora_become_writer(struct server *s);
static inline int server_is_aurora(const struct server *s)
{
    return s->role == SERVER_ROLE_WRITER || s->role == SERVER_ROLE_READER;
}

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
