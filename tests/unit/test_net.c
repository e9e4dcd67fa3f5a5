/* test_net.c — common/net.h: the one HOST:PORT parser and the one blocking connect. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/net.h"

Test(net, parses_host_and_port_at_the_last_colon)
{
    char host[64];
    int port = 0;
    cr_assert_eq(rd_net_parse_hostport("127.0.0.1:6379", host, sizeof(host), &port), 0);
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 6379);
    cr_assert_eq(rd_net_parse_hostport("a:b:7", host, sizeof(host), &port), 0);
    cr_assert_str_eq(host, "a:b");
    cr_assert_eq(port, 7);
}

Test(net, refuses_a_missing_host_or_a_bad_port)
{
    char host[64];
    int port = 0;
    cr_assert_lt(rd_net_parse_hostport("6379", host, sizeof(host), &port), 0);
    cr_assert_lt(rd_net_parse_hostport(":6379", host, sizeof(host), &port), 0);
    cr_assert_lt(rd_net_parse_hostport("h:0", host, sizeof(host), &port), 0);
    cr_assert_lt(rd_net_parse_hostport("h:65536", host, sizeof(host), &port), 0);
    cr_assert_lt(rd_net_parse_hostport("h:12x", host, sizeof(host), &port), 0);
    cr_assert_lt(rd_net_parse_hostport("h:", host, sizeof(host), &port), 0);
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t len = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

Test(net, connects_to_a_listener_and_reports_a_refused_port)
{
    int port = 0;
    int lfd = listen_any(&port);
    int fd = rd_net_connect("127.0.0.1", port, 1000);
    cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
    cr_assert_eq(write(fd, "x", 1), 1); /* blocking, connected */
    cr_assert_eq(close(fd), 0);
    cr_assert_eq(close(lfd), 0); /* the port is free again: nobody listens */
    fd = rd_net_connect("127.0.0.1", port, 1000);
    cr_assert_eq(fd, -ECONNREFUSED, "got %d", fd);
}

Test(net, reports_a_host_that_does_not_resolve)
{
    cr_assert_eq(rd_net_connect("no-such-host.invalid", 80, 200), -EHOSTUNREACH);
}
