/* conn.c — the connection layer (conn.h): accept, recv, send, close. */
#include "common/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define RD_CONN_OF(io, member) ((struct rd_conn *)((char *)(io) - offsetof(struct rd_conn, member)))

void rd_net_init(struct rd_net *n, struct rd_loop *loop, struct rd_buf_ring *ring, unsigned bgid)
{
    memset(n, 0, sizeof(*n));
    n->loop = loop;
    n->ring = ring;
    n->bgid = bgid;
    n->listen_fd = -1;
}

/* ------------------------------------------------------------ accept */

static void net_on_accept(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct rd_net *n = (struct rd_net *)((char *)io - offsetof(struct rd_net, accept_io));
    if (!(cqe->flags & IORING_CQE_F_MORE))
        n->accept_armed = 0;
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED)
            rd_warn("accept failed: %s", strerror(-cqe->res));
        return;
    }
    n->on_accept(n, cqe->res);
}

void rd_net_listen(struct rd_net *n, int listen_fd, void (*on_accept)(struct rd_net *n, int fd))
{
    rd_assert(listen_fd >= 0 && on_accept != NULL);
    n->listen_fd = listen_fd;
    n->on_accept = on_accept;
    n->accept_io.on_cqe = net_on_accept;
    if (n->accept_armed)
        return;
    struct io_uring_sqe *sqe = rd_loop_sqe(n->loop, &n->accept_io);
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, 0);
    n->accept_armed = 1;
}

void rd_net_stop_listening(struct rd_net *n)
{
    if (!n->accept_armed)
        return;
    struct io_uring_sqe *sqe = rd_loop_sqe(n->loop, NULL);
    io_uring_prep_cancel(sqe, &n->accept_io, 0);
    n->accept_armed = 0; /* its final CQE may still come; accept_io lives in n */
}

/* ------------------------------------------------------------ recv */

static void conn_on_recv(struct rd_io *io, const struct io_uring_cqe *cqe);
static void conn_on_send(struct rd_io *io, const struct io_uring_cqe *cqe);

static void conn_arm_recv(struct rd_conn *c)
{
    struct io_uring_sqe *sqe = rd_loop_sqe(c->net->loop, &c->recv_io);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)c->net->bgid;
    c->recv_armed = 1;
}

void rd_conn_open(struct rd_net *n, struct rd_conn *c, int fd, const struct rd_conn_ops *ops)
{
    rd_assert(fd >= 0 && ops != NULL && ops->max_input != NULL && ops->on_close != NULL);
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        rd_debug("TCP_NODELAY failed: %s", strerror(errno)); /* unix sockets etc. */
    c->ops = ops;
    c->net = n;
    c->id = ++n->next_id;
    c->fd = fd;
    c->recv_io.on_cqe = conn_on_recv;
    c->send_io.on_cqe = conn_on_send;
    c->created_ms = c->last_input_ms = rd_now_ms();
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    snprintf(c->addr, sizeof(c->addr), "fd %d", fd);
    if (getpeername(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sin_family == AF_INET) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
        snprintf(c->addr, sizeof(c->addr), "%s:%d", ip, ntohs(sa.sin_port));
    }
    conn_arm_recv(c);
}

static void conn_on_recv(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct rd_conn *c = RD_CONN_OF(io, recv_io);
    struct rd_net *n = c->net;
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0 && !c->closing) {
            n->in_bytes += (uint64_t)cqe->res;
            size_t limit = c->ops->max_input(c);
            if (c->in.len + (size_t)cqe->res > limit) {
                rd_warn("connection %llu (%s) closed: input buffer over %zu bytes", (unsigned long long)c->id,
                        c->addr, limit);
                rd_conn_close(c);
            } else {
                rd_buf_append(&c->in, rd_buf_ring_data(n->ring, bid), (size_t)cqe->res); /* C10 */
                c->last_input_ms = rd_now_ms();
                rd_conn_mark_ready(c);
            }
        }
        rd_buf_ring_return(n->ring, bid); /* C7: at once */
    }
    if (more)
        return;
    c->recv_armed = 0;
    if (cqe->res == -ENOBUFS && !c->closing) { /* back-pressure: buffers exhausted, re-arm */
        conn_arm_recv(c);
        return;
    }
    if (cqe->res == 0 && !c->closing && c->keep_on_eof && c->in.len > 0) { /* EOF after a last request */
        c->eof = 1;
        rd_conn_mark_ready(c);
        return;
    }
    if (cqe->res <= 0 || c->closing) { /* EOF, error, or shut down by us */
        rd_conn_close(c);
        return;
    }
    conn_arm_recv(c); /* multishot ended for another reason: re-arm */
}

/* ------------------------------------------------------------ send */

void rd_conn_flush(struct rd_conn *c)
{
    if (c->send_in_flight || c->fd < 0 || (c->closing && !c->close_after_send))
        return;
    size_t n = c->ops->sendable ? c->ops->sendable(c) : c->out.len;
    rd_assert(n <= c->out.len);
    if (n == 0) {
        if (c->close_after_send && c->out.len == 0 && !c->closing)
            rd_conn_close(c);
        return;
    }
    if (n == c->out.len) { /* the common case: swap buffers, no copy */
        struct rd_buf t = c->sending;
        c->sending = c->out;
        c->out = t;
        c->out.len = 0;
    } else {
        rd_buf_reset(&c->sending);
        rd_buf_append(&c->sending, c->out.data, n); /* C10 */
        rd_buf_consume(&c->out, n);
    }
    if (c->ops->taken)
        c->ops->taken(c, n);
    c->sending_off = 0;
    struct io_uring_sqe *sqe = rd_loop_sqe(c->net->loop, &c->send_io);
    io_uring_prep_send(sqe, c->fd, c->sending.data, c->sending.len, MSG_NOSIGNAL);
    c->send_in_flight = 1;
}

static void conn_on_send(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct rd_conn *c = RD_CONN_OF(io, send_io);
    c->send_in_flight = 0;
    if (cqe->res < 0) {
        if (!c->closing)
            rd_debug("send to connection %llu (%s) failed: %s", (unsigned long long)c->id, c->addr,
                     strerror(-cqe->res));
        c->close_after_send = 0;
        rd_conn_close(c);
        return;
    }
    c->net->out_bytes += (uint64_t)cqe->res;
    c->sending_off += (size_t)cqe->res;
    if (c->sending_off < c->sending.len) { /* short send: send the rest */
        struct io_uring_sqe *sqe = rd_loop_sqe(c->net->loop, &c->send_io);
        io_uring_prep_send(sqe, c->fd, c->sending.data + c->sending_off, c->sending.len - c->sending_off,
                           MSG_NOSIGNAL);
        c->send_in_flight = 1;
        return;
    }
    rd_buf_reset(&c->sending);
    if (c->closing || (c->close_after_send && c->out.len == 0)) {
        rd_conn_close(c);
        return;
    }
    rd_conn_flush(c);
}

/* ------------------------------------------------------------ close, ready list */

static void conn_free(struct rd_conn *c)
{
    rd_assert(!c->recv_armed && !c->send_in_flight && !c->on_ready);
    if (close(c->fd) < 0)
        rd_warn("close of connection %llu (%s) failed: %s", (unsigned long long)c->id, c->addr, strerror(errno));
    c->fd = -1;
    rd_buf_free(&c->in);
    rd_buf_free(&c->out);
    rd_buf_free(&c->sending);
    c->ops->on_close(c); /* the owner frees c */
}

void rd_conn_close(struct rd_conn *c)
{
    if (!c->closing) {
        c->closing = 1;
        /* Ends the multishot recv (and any send) with a final completion. */
        if (shutdown(c->fd, SHUT_RDWR) < 0 && errno != ENOTCONN)
            rd_debug("shutdown of connection %llu (%s) failed: %s", (unsigned long long)c->id, c->addr,
                     strerror(errno));
    }
    if (!c->recv_armed && !c->send_in_flight && !c->on_ready)
        conn_free(c);
}

void rd_conn_mark_ready(struct rd_conn *c)
{
    if (c->on_ready || c->closing)
        return;
    c->on_ready = 1;
    c->next_ready = c->net->ready_head;
    c->net->ready_head = c;
}

struct rd_conn *rd_net_take_ready(struct rd_net *n)
{
    struct rd_conn *list = n->ready_head;
    n->ready_head = NULL;
    return list;
}

void rd_conn_unready(struct rd_conn *c)
{
    rd_assert(c->on_ready);
    c->on_ready = 0;
    c->next_ready = NULL;
}
