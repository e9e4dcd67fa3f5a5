/*
 * net.h — blocking TCP helpers shared by every process: one "HOST:PORT"
 * parser and one connect with a timeout (issue 11: there were five connects).
 * The event loop's own sockets (accept, multishot recv, io_uring connect)
 * stay with their owners (server.c, repl_receiver.c, the storage node).
 */
#ifndef RD_NET_H
#define RD_NET_H

#include <stddef.h>

/* "HOST:PORT" (the last ':' splits; HOST is copied, truncated to host_len - 1).
 * 0, or -1 when there is no ':' , HOST is empty or PORT is not in 1..65535. */
int rd_net_parse_hostport(const char *s, char *host, size_t host_len, int *port);

/* Resolves HOST (IPv4) and connects within timeout_ms. Returns a connected,
 * blocking, close-on-exec socket with TCP_NODELAY (the caller closes it), or a
 * negative errno: -EHOSTUNREACH when HOST does not resolve, -ETIMEDOUT, or the
 * connect's own error (-ECONNREFUSED ...). */
int rd_net_connect(const char *host, int port, int timeout_ms);

#endif
