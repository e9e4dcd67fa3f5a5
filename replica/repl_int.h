/* repl_int.h — internals shared by the files of the classic wing (replica/repl*.c).
 * Not a public interface. */
#ifndef RD_REPL_INT_H
#define RD_REPL_INT_H

#include <inttypes.h>
#include <stdio.h>

#include "common/frame.h"
#include "common/util.h"
#include "replica/proto.h"
#include "server/server_int.h"

/* The classic wing's names for the instance's connection kinds. */
#define CONN_WALSENDER CONN_DOWNSTREAM /* primary side of a replica's connection */
                                       /* CONN_UPSTREAM: replica side, to the primary */

#define REPL_WINDOW_BYTES (4u << 20)     /* unsent bytes queued per replica */
#define REPL_MSG_BYTES (512u << 10)      /* WAL bytes per REPL_WAL frame */
#define REPL_BACKUP_PAGES_PER_FRAME 64u
#define REPL_KEEPALIVE_MS 100u
#define REPL_STATUS_MS 100u
#define REPL_RECONNECT_MS 200u
#define REPL_RESTARTPOINT_MS 30000u

struct repl_peer {
    struct conn *c;
    char name[64];
    struct repl_slot *slot;
    enum { PEER_BACKUP, PEER_STREAMING } state;
    uint64_t sent_lsn; /* next LSN to send */
    uint64_t told_flush_lsn; /* the primary flush LSN this replica was last told */
    uint64_t term; /* the primary's term when the handshake was accepted (T5) */
    int listen_port; /* the replica's client port (LISTEN-PORT), 0 if not announced */
    uint64_t write_lsn, flush_lsn, apply_lsn;
    uint64_t write_lag_us, flush_lag_us, apply_lag_us;
    uint64_t last_status_ms, last_send_ms, connected_ms;
    struct wal_sender_cursor *cur;
    int data_fd;
    uint32_t backup_next, backup_npages;
    struct rd_buf scratch;
    struct rd_buf wal_buf;
    uint8_t *page_buf;
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
    struct server *srv;        /* the instance (io completions find it from here) */
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
#define REPL_MAX_SLOTS 32
struct repl_slot {
    char name[64];
    int in_use;
    int active;            /* a connection streams to it now */
    uint64_t restart_lsn;  /* the replica's confirmed flush LSN: WAL from here is kept */
    int created;           /* new: not in DIR/slots yet */
};

/* A walsender connection's replica (conn.role_conn). */
static inline struct repl_peer *repl_peer_of(const struct conn *c)
{
    return c->kind == CONN_WALSENDER ? c->role_conn : NULL;
}

/* The classic role's state (server.role_state). */
struct repl_state {
    struct upstream up;                  /* replica: the link to the primary, apply state */
    struct repl_slot slots[REPL_MAX_SLOTS]; /* primary: one per replica name */
    size_t npeers;                       /* walsenders */
    int promote_pending;                 /* waiting for an in-flight flush (repl_promote_finish) */
    uint64_t term;                       /* persisted in DIR/term (replica/README.md T1-T6) */
    int term_fenced;                     /* primary: fenced because a newer term was seen (REDOUBT.PROMOTE lifts it) */
    uint64_t repl_bytes_sent;
};

static inline struct repl_state *repl_of(const struct server *s)
{
    rd_assert(s->role_state != NULL);
    return s->role_state;
}

static inline uint64_t tli_of(const struct server *s) { return s->wal ? wal_timeline(s->wal) : 0; }

static inline void lsn_str(uint64_t lsn, char *buf, size_t n)
{
    snprintf(buf, n, "%" PRIX64 "/%" PRIX64, lsn >> 32, lsn & 0xffffffffu);
}

/* The classic role (the public face of this wing is role_classic, server/role.h). */
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
/* W17: a spread restart point (repl_restartpoint.c): begun at a CHECKPOINT record, stepped per turn. */
int repl_restartpoint_begin(struct server *s, uint64_t checkpoint_lsn, uint64_t redo_lsn);
void repl_restartpoint_step(struct server *s);
/* Terms (replica/README.md T1-T6). */
int repl_term_load(struct server *s);                        /* at start: DIR/term, 0 if absent */
void repl_cmd_term(struct server *s, struct conn *c, const struct resp_args *a);    /* REDOUBT.TERM t */
void repl_cmd_promote_term(struct server *s, struct conn *c, const struct resp_args *a); /* REDOUBT.PROMOTE t */

int repl_start(struct server *s); /* repl_promote.c: start-up of a standalone, primary or replica */
uint64_t repl_sync_lsn(const struct server *s); /* repl_sender.c: the k-th sync replica at the commit level */

/* repl_slots.c */
struct repl_slot *repl_slot_get(struct server *s, const char *name);
void repl_slots_update_keep(struct server *s);

/* repl_term.c */
int repl_arg_u64(const struct resp_arg *a, int base, uint64_t *out);
int repl_term_arg(const struct resp_arg *a, uint64_t *t);
void repl_term_save(struct server *s, uint64_t term, const char *why);
void repl_term_fence_primary(struct server *s, uint64_t term, const char *why, const struct conn *keep);

/* repl_sender.c */
int repl_name_listed(const struct server *s, const char *name);
void repl_peer_error(struct server *s, struct conn *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void repl_peer_on_status(struct server *s, struct repl_peer *p, const struct repl_status *m);
void repl_peer_pump(struct server *s, struct repl_peer *p);
void repl_peer_free(struct server *s, struct repl_peer *p);
void repl_waits_check(struct server *s);

/* repl_receiver.c */
void repl_up_apply_ready(struct server *s, uint64_t limit_lsn);
void repl_up_schedule_reconnect(struct server *s, uint64_t delay_ms);
void repl_up_connect(struct server *s);
void repl_up_fail(struct server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int repl_up_wipe_dir(struct server *s);
void repl_up_on_frame(struct server *s, const struct frame_hdr *h, const uint8_t *p, size_t n);
void repl_up_send_status(struct server *s);

/* repl_promote.c */
int repl_promote_finish(struct server *s);

#endif
