/*
 * server.h — the instance process: one io_uring event-loop thread serving
 * RESP2 clients, executing commands serially against the engine, and
 * releasing each reply only when what it reflects is durable (DESIGN.md,
 * "Durability rule"). See server/README.md.
 */
#ifndef RD_SERVER_H
#define RD_SERVER_H

#include <stddef.h>
#include <stdint.h>

enum server_role { SERVER_ROLE_STANDALONE = 0 };
enum server_commit { SERVER_COMMIT_LOCAL = 0, SERVER_COMMIT_ASYNC = 1 };

struct server_config {
    enum server_role role;
    const char *dir;
    const char *bind_addr;
    int port;
    size_t cache_mb;
    enum server_commit commit;
    const char *password;              /* NULL: no AUTH required */
    size_t max_clients;
    size_t max_query_buffer_bytes;     /* per client: unparsed input */
    size_t max_output_buffer_bytes;    /* per client: replies not yet sent */
    size_t max_txn_bytes;              /* MULTI queue / MSET size limit */
    uint64_t checkpoint_wal_bytes;
    uint64_t checkpoint_interval_ms;
    uint64_t wal_segment_bytes;
};

void server_config_defaults(struct server_config *c);
/* Runs until SHUTDOWN or SIGTERM/SIGINT (clean: checkpoint) — returns the
 * process exit status. Fatal storage errors end the process in rd_panic. */
int server_run(const struct server_config *c);

#endif
