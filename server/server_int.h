/* server_int.h — internals shared by server.c (loop, connections) and
 * commands.c (command table and handlers). Not a public interface. */
#ifndef RD_SERVER_INT_H
#define RD_SERVER_INT_H

#include <stdint.h>

#include "common/buf.h"
#include "common/loop.h"
#include "engine/engine.h"
#include "server/resp.h"
#include "server/server.h"
#include "wal/wal.h"

/* A reply byte range that may be sent only once lsn is durable. */
struct conn_mark {
    size_t end; /* offset in conn.out just past the replies that need lsn */
    uint64_t lsn;
};

struct conn {
    uint64_t id;
    int fd;
    struct server *srv;
    struct rd_io recv_io;
    struct rd_io send_io;
    int recv_armed;
    int send_in_flight;
    int closing;            /* no more input is processed; freed when no op is in flight */
    int close_after_send;   /* QUIT / protocol error: close once the output is sent */
    int authed;
    struct rd_buf in;       /* unparsed input */
    struct rd_buf out;      /* replies not yet handed to send */
    struct rd_buf sending;  /* bytes owned by the in-flight send (invariant L1) */
    size_t sending_off;
    struct conn_mark *marks; /* ascending lsn; replies in out beyond marks[0].end wait */
    size_t nmarks, marks_cap;
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
};

struct scan_cursor {
    uint64_t id;
    struct rd_buf next_key;
    uint64_t used_ms;
};

#define SERVER_SCAN_CURSORS 256

struct server_stats {
    uint64_t connections_received, connections_rejected;
    uint64_t commands, write_commands, read_commands, errors, protocol_errors;
    uint64_t txns, replies_delayed;
    uint64_t net_in_bytes, net_out_bytes;
};

struct server {
    struct server_config cfg;
    struct rd_loop loop;
    struct wal *wal;
    struct engine *engine;
    int listen_fd;
    struct rd_io accept_io;
    int accept_armed;
    /* provided buffer ring for multishot recv */
    struct io_uring_buf_ring *br;
    uint8_t *br_bufs;
    unsigned br_entries;
    size_t br_buf_size;
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
};

/* commands.c */
void cmd_execute(struct server *s, struct conn *c, const struct resp_args *args);
/* Replies: append to c->out. A reply must be tagged with the LSN it depends on
 * (conn_reply_done) before the next command runs. */
void conn_reply_done(struct server *s, struct conn *c, uint64_t lsn);
void conn_close_after_reply(struct conn *c);

#endif
