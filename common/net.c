/* net.c — blocking TCP helpers (net.h). */
#include "common/net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

int rd_net_parse_hostport(const char *s, char *host, size_t host_len, int *port)
{
    rd_assert(host_len > 0);
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return -1;
    size_t hl = RD_MIN((size_t)(colon - s), host_len - 1);
    memcpy(host, s, hl);
    host[hl] = 0;
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != 0 || p < 1 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

int rd_net_connect(const char *host, int port, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0 || res == NULL)
        return -EHOSTUNREACH;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = errno;
        freeaddrinfo(res);
        return -e;
    }
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    int err = rc < 0 ? errno : 0;
    freeaddrinfo(res);
    if (rc < 0 && err != EINPROGRESS) {
        close(fd);
        return -err;
    }
    if (rc < 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        socklen_t el = sizeof(err);
        int pr = poll(&p, 1, timeout_ms);
        if (pr != 1) {
            err = pr == 0 ? ETIMEDOUT : errno;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) {
            err = errno;
        }
        if (err != 0) {
            close(fd);
            return -err;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    return fd;
}
