/* test_conn.c — common/conn.h: the connection layer on a real io_uring loop and a
 * socketpair (one end a connection of the layer, the other a plain socket). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/conn.h"
#include "common/util.h"

struct tconn {
    union {
        struct rd_conn nc;
        struct { RD_CONN_FIELDS };
    };
    int closed; /* on_close calls */
    size_t limit;
    size_t allow; /* sendable: bytes of out that may go */
    size_t taken_total;
};

static int freed_count;

static size_t t_max_input(const struct rd_conn *c) { return ((const struct tconn *)(const void *)c)->limit; }
static size_t t_sendable(const struct rd_conn *c)
{
    const struct tconn *t = (const struct tconn *)(const void *)c;
    return RD_MIN(t->allow, c->out.len);
}
static void t_taken(struct rd_conn *c, size_t n)
{
    struct tconn *t = (struct tconn *)(void *)c;
    t->taken_total += n;
    t->allow -= n;
}
static void t_on_close(struct rd_conn *c)
{
    struct tconn *t = (struct tconn *)(void *)c;
    t->closed++;
    freed_count++;
}

static const struct rd_conn_ops t_ops = {
    .max_input = t_max_input, .sendable = t_sendable, .taken = t_taken, .on_close = t_on_close};

struct fixture {
    struct rd_loop loop;
    struct rd_buf_ring ring;
    struct rd_net net;
    int other; /* the plain end */
};

static void setup_pair(struct fixture *f, struct tconn *t)
{
    char why[256];
    cr_assert_eq(rd_loop_init(&f->loop, 64, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(rd_buf_ring_setup(&f->loop, &f->ring, 8, 4096, 3), 0);
    rd_net_init(&f->net, &f->loop, &f->ring, 3);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    memset(t, 0, sizeof(*t));
    t->limit = 1 << 20;
    rd_conn_open(&f->net, &t->nc, sv[0], &t_ops);
    f->other = sv[1];
    freed_count = 0;
}

static void teardown(struct fixture *f)
{
    close(f->other);
    rd_loop_destroy(&f->loop);
    rd_buf_ring_free(&f->ring); /* after the ring: the kernel no longer uses it */
}

static void turn(struct fixture *f)
{
    for (int i = 0; i < 5; i++)
        cr_assert_geq(rd_loop_run_once(&f->loop, 20000), 0);
}

Test(conn, input_lands_in_in_and_the_connection_is_ready)
{
    struct fixture f;
    struct tconn t;
    setup_pair(&f, &t);
    cr_assert_eq(write(f.other, "hello", 5), 5);
    turn(&f);
    cr_assert_eq(t.in.len, 5);
    cr_assert_eq(memcmp(t.in.data, "hello", 5), 0);
    struct rd_conn *list = rd_net_take_ready(&f.net);
    cr_assert_eq(list, &t.nc);
    cr_assert_null(list->next_ready);
    rd_conn_unready(list);
    rd_conn_close(&t.nc);
    turn(&f);
    cr_assert_eq(t.closed, 1, "freed exactly once (C12)");
    teardown(&f);
}

Test(conn, sends_only_what_the_owner_releases_in_order)
{
    struct fixture f;
    struct tconn t;
    setup_pair(&f, &t);
    rd_buf_append(&t.out, "abcdef", 6);
    t.allow = 0;
    rd_conn_flush(&t.nc); /* nothing released: nothing sent */
    cr_assert_eq(t.send_in_flight, 0);
    t.allow = 2;
    rd_conn_flush(&t.nc); /* a prefix: copied (C11) */
    turn(&f);
    t.allow = 4;
    rd_conn_flush(&t.nc); /* the rest: swapped */
    turn(&f);
    char buf[16];
    ssize_t n = read(f.other, buf, sizeof(buf));
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(buf, "abcdef", 6), 0);
    cr_assert_eq(t.taken_total, 6);
    cr_assert_eq(t.out.len, 0);
    rd_conn_close(&t.nc);
    turn(&f);
    cr_assert_eq(t.closed, 1);
    teardown(&f);
}

Test(conn, input_over_the_limit_closes_the_connection)
{
    struct fixture f;
    struct tconn t;
    setup_pair(&f, &t);
    t.limit = 4;
    cr_assert_eq(write(f.other, "too long", 8), 8);
    turn(&f);
    cr_assert_eq(t.closed, 1, "closed and freed once (C13, C12)");
    char c;
    cr_assert_eq(read(f.other, &c, 1), 0, "the other end sees EOF");
    teardown(&f);
}

Test(conn, eof_with_input_left_is_kept_when_asked)
{
    struct fixture f;
    struct tconn t;
    setup_pair(&f, &t);
    t.keep_on_eof = 1;
    cr_assert_eq(write(f.other, "req", 3), 3);
    cr_assert_eq(shutdown(f.other, SHUT_WR), 0);
    turn(&f);
    cr_assert_eq(t.eof, 1);
    cr_assert_eq(t.closed, 0);
    struct rd_conn *list = rd_net_take_ready(&f.net);
    cr_assert_eq(list, &t.nc);
    rd_conn_unready(list);
    t.allow = 2;
    rd_buf_append(&t.out, "ok", 2);
    t.close_after_send = 1;
    rd_conn_flush(&t.nc);
    turn(&f);
    cr_assert_eq(t.closed, 1, "answered, then closed");
    char buf[4];
    cr_assert_eq(read(f.other, buf, sizeof(buf)), 2);
    teardown(&f);
}
