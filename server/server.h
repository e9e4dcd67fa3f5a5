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

enum server_role {
    SERVER_ROLE_STANDALONE = 0,
    SERVER_ROLE_PRIMARY = 1, /* classic */
    SERVER_ROLE_REPLICA = 2, /* classic */
    SERVER_ROLE_WRITER = 3,  /* aurora */
    SERVER_ROLE_READER = 4,  /* aurora */
};
/* PostgreSQL's synchronous_commit levels. */
enum server_commit {
    SERVER_COMMIT_LOCAL = 0,        /* local WAL fdatasync */
    SERVER_COMMIT_ASYNC = 1,        /* no wait at all (can lose acked writes) */
    SERVER_COMMIT_REMOTE_WRITE = 2, /* + sync replicas wrote it (OS cache) */
    SERVER_COMMIT_REMOTE_FLUSH = 3, /* + sync replicas fdatasynced it */
    SERVER_COMMIT_REMOTE_APPLY = 4, /* + sync replicas applied it (visible there) */
};
enum server_sync_method { SERVER_SYNC_ANY = 0, SERVER_SYNC_FIRST = 1 };
#define SERVER_SYNC_MAX_NAMES 16

struct server_config {
    enum server_role role;
    const char *dir;
    const char *bind_addr;
    int port;
    int listen_fd;                     /* >= 0: an inherited listening socket for port (CR7, --listen-fd) */
    int metrics_port;                  /* 0: no Prometheus endpoint (--metrics-port) */
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
    /* replication */
    const char *name;                  /* replica name (application_name) */
    const char *primary_addr;          /* replica: HOST:PORT of the primary */
    enum server_sync_method sync_method;
    unsigned sync_num;                 /* k of ANY/FIRST k (...); 0: no sync replicas */
    unsigned sync_nnames;
    char sync_names[SERVER_SYNC_MAX_NAMES][64];
    uint64_t wal_keep_bytes;           /* most WAL kept for registered replicas */
    const char *peers;                 /* primary: h:p,... checked for a newer timeline at start */
    uint64_t replica_timeout_ms;       /* no traffic for this long: the link is dead */
    const char *storage;               /* aurora: the six storage nodes, h:p,... */
    const char *writer_addr;           /* aurora reader: HOST:PORT of the writer */
    int reader_feed_redo;              /* aurora writer: feed readers redo records (1) or page ids (0) */
    uint64_t commit_timeout_ms;        /* a reply waiting longer for durability gets -TIMEOUT (0: never) */
    uint64_t lease_ms;                 /* primary, --commit local|async: acknowledge only while a majority */
    unsigned lease_monitors;           /*   of lease_monitors monitors renewed within lease_ms (0: off) */
    int repl_send_flushed;             /* primary: ship WAL only once flushed here (PostgreSQL's way);
                                        * 0 (default): as soon as written, overlapping both fsyncs */
    const char *cluster_secret_file;   /* NULL: peers are not authenticated (a warning at start) */
    unsigned idle_timeout_s;           /* --timeout: close a client idle this long (0: never, Redis) */
    size_t max_peers;                  /* connection budget of authenticated peers, on top of max_clients */
};

/* Parses 'ANY k (a,b)' / 'FIRST k (a,b)' / 'k (a,b)' (= FIRST) into c.
 * Returns 0, or -1 with a message in err. */
int server_parse_sync_replicas(struct server_config *c, const char *spec, char *err, size_t err_len);
const char *server_commit_name(enum server_commit c);

void server_config_defaults(struct server_config *c);
/* Runs until SHUTDOWN or SIGTERM/SIGINT (clean: checkpoint) — returns the
 * process exit status. Fatal storage errors end the process in rd_panic. */
int server_run(const struct server_config *c);

/* Set by REPLICAOF HOST PORT on a fenced primary (CR6): "HOST:PORT" of the
 * primary to rejoin. server_run() then shuts down cleanly and main() executes
 * the same binary again, same PID, as --role replica --primary HOST:PORT (as
 * Patroni rewinds and restarts an old primary; the replica start cuts or
 * re-clones a diverged history: CR4). Empty otherwise. */
extern char server_rejoin_primary[280];
/* CR7: the listener kept open across the rejoin's exec (-1: none); set by server_run. */
extern int server_rejoin_listen_fd;

#endif
