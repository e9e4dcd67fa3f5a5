/*
 * conn.h — the connection layer of every io_uring process (the redoubt
 * instance, the storage node): accept, multishot recv into the provided-buffer
 * ring, batched sends (one send in flight per connection, short sends resumed,
 * more queued once it completes), close once no operation is in flight, and a
 * ready list of connections with unparsed input. Parsing and replies are the
 * owner's: it is called back per connection (struct rd_conn_ops).
 *
 * Embedding: the owner's connection struct starts with
 *     union { struct rd_conn nc; struct { RD_CONN_FIELDS }; };
 * so the owner keeps writing c->in, c->out, c->closing ... and hands &c->nc to
 * this layer (the layout is the same struct twice: the Linux kernel's
 * struct_group idiom; the build uses -fno-strict-aliasing). rd_conn_of() and
 * the owner's container_of go back and forth.
 *
 * Invariants: common/README.md C11 (sends own `sending`), C12 (freed once, when
 * idle), C13 (input bounded by ops->max_input).
 */
#ifndef RD_CONN_H
#define RD_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/loop.h"

struct rd_conn;
struct rd_net;

struct rd_conn_ops {
    /* Most unparsed input this connection may hold (bytes). */
    size_t (*max_input)(const struct rd_conn *c);
    /* Bytes at the start of `out` that may be sent now (the owner's reply release);
     * NULL: all of them. */
    size_t (*sendable)(const struct rd_conn *c);
    /* The first n bytes of `out` were handed to a send (were removed from `out`):
     * the owner shifts what it keeps about `out`. NULL: nothing to do. */
    void (*taken)(struct rd_conn *c, size_t n);
    /* Last call, once: no operation is in flight, the fd is closed and the buffers
     * freed. The owner releases what it hung on the connection and frees it. */
    void (*on_close)(struct rd_conn *c);
};

#define RD_CONN_FIELDS                                                                     \
    const struct rd_conn_ops *ops;                                                         \
    struct rd_net *net;                                                                    \
    uint64_t id;                                                                           \
    int fd;                                                                                \
    char addr[300];          /* peer ip:port */                                            \
    struct rd_io recv_io, send_io;                                                         \
    int recv_armed, send_in_flight;                                                        \
    int closing;             /* no more input is processed; freed when nothing is in flight */ \
    int close_after_send;    /* close once `out` is sent (QUIT, protocol error)  */         \
    int keep_on_eof;         /* the peer's EOF with input left: process it, answer, close */ \
    int eof;                 /* that EOF came */                                            \
    int on_ready;            /* on the ready list */                                        \
    struct rd_conn *next_ready;                                                            \
    struct rd_buf in;        /* unparsed input */                                           \
    struct rd_buf out;       /* output not yet handed to send */                           \
    struct rd_buf sending;   /* bytes owned by the in-flight send (L1) */                  \
    size_t sending_off;                                                                    \
    uint64_t created_ms, last_input_ms;

struct rd_conn {
    RD_CONN_FIELDS
};

/* Per process: the loop, the provided-buffer ring recvs use, the listener. */
struct rd_net {
    struct rd_loop *loop;
    struct rd_buf_ring *ring;
    unsigned bgid;
    struct rd_conn *ready_head;
    uint64_t next_id;
    uint64_t in_bytes, out_bytes;
    /* listener (rd_net_listen) */
    int listen_fd;
    int accept_armed;
    struct rd_io accept_io;
    /* A new connection's fd: the owner checks its budgets, then rd_conn_open (or closes fd). */
    void (*on_accept)(struct rd_net *n, int fd);
};

void rd_net_init(struct rd_net *n, struct rd_loop *loop, struct rd_buf_ring *ring, unsigned bgid);
/* Arms the multishot accept on listen_fd (again, if it ended). */
void rd_net_listen(struct rd_net *n, int listen_fd, void (*on_accept)(struct rd_net *n, int fd));
/* Cancels the accept (shutdown); its last completion may still arrive. */
void rd_net_stop_listening(struct rd_net *n);

/* Starts a connection on fd (accepted or connected; c zeroed by the owner, except
 * its own fields): TCP_NODELAY, the peer address, the multishot recv. */
void rd_conn_open(struct rd_net *n, struct rd_conn *c, int fd, const struct rd_conn_ops *ops);
/* Starts sending what ops->sendable allows, if no send is in flight. */
void rd_conn_flush(struct rd_conn *c);
/* Closes: shuts the socket down (ending the recv) and frees the connection once
 * nothing is in flight (at once if nothing is). c may be gone on return. */
void rd_conn_close(struct rd_conn *c);
/* Puts c on the ready list (unless closing or already there). */
void rd_conn_mark_ready(struct rd_conn *c);
/* Takes the whole ready list. For each connection (next_ready first), the owner
 * calls rd_conn_unready, then processes its input (which may mark it ready again
 * for the next turn), then rd_conn_close if it is closing. */
struct rd_conn *rd_net_take_ready(struct rd_net *n);
void rd_conn_unready(struct rd_conn *c);

#endif
