/* main.c — `redoubt`: flags, then server_run. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt --dir DIR [options]\n"
            "\n"
            "A Redoubt database instance: a B+tree engine with a write-ahead log,\n"
            "speaking the Redis protocol (RESP2) so redis-cli and redis-benchmark work.\n"
            "\n"
            "  --role ROLE           standalone (one node, local WAL), primary (classic: ships its\n"
            "                        WAL to replicas) or replica (classic: streams from --primary)\n"
            "  --dir DIR             data directory (created if missing): control, wal/, data.rdb\n"
            "  --port N              client port (default 6380)\n"
            "  --listen-fd N         (set by a rejoin, CR7) adopt this listening socket for --port\n"
            "  --metrics-port N      Prometheus metrics on http://bind:N/metrics (default off)\n"
            "  --bind ADDR           IPv4 address to listen on (default 127.0.0.1)\n"
            "  --cache-mb N          buffer pool size in MiB (default 128)\n"
            "  --commit LEVEL        as PostgreSQL's synchronous_commit; a reply waits until its\n"
            "                        commit is: local: fsynced here (default); remote_write /\n"
            "                        remote_flush / remote_apply: also written / fsynced / applied\n"
            "                        by the --sync-replicas; async: nothing (replies at once, can\n"
            "                        lose acknowledged writes on a crash; kept for measurement)\n"
            "  --sync-replicas SPEC  'ANY k (r1,r2,...)' or 'FIRST k (r1,r2,...)': which replicas\n"
            "                        a remote_* commit waits for (none connected: commits wait)\n"
            "  --primary HOST:PORT   replica: the primary to stream from (an empty --dir clones it)\n"
            "  --name NAME           replica: its name (sync-replicas, INFO; default the port)\n"
            "  --wal-keep-mb N       primary: most WAL kept for a disconnected replica (default 1024);\n"
            "                        beyond it the replica must re-clone\n"
            "  --peers H:P,...       primary: refuse to start if one of these is a primary on a\n"
            "                        newer timeline (this node was failed over)\n"
            "  --repl-send WHEN      primary: ship WAL to replicas when it is written (default:\n"
            "                        the replicas' fsync overlaps ours; replicas apply only what\n"
            "                        the primary reports flushed) or flushed (PostgreSQL's way)\n"
            "  --replica-timeout-ms N  drop a replication link silent for N ms (default 10000)\n"
            "  --storage H:P,...     aurora writer/reader: the six storage nodes (redoubt-storage)\n"
            "  --writer HOST:PORT    aurora reader: the writer whose feed it follows\n"
            "  --reader-feed MODE    aurora writer: what readers get at each VDL: redo (the records,\n"
            "                        applied to the pages they cache; the default) or pages (the\n"
            "                        ids of changed pages, which they drop and re-read from\n"
            "                        storage: ~15x more reader lag, see docs/results.md)\n"
            "                        (aurora roles keep no local files; --dir is not needed)\n"
            "  --commit-timeout-ms N a reply that waited N ms for durability (sync replicas, storage\n"
            "                        quorum) is answered -TIMEOUT commit outcome unknown instead\n"
            "                        (the write may still commit); 0 waits forever (default 5000)\n"
            "  --lease-ms N          primary with --commit local|async: acknowledge writes only\n"
            "  --lease-monitors M    while a majority of the M monitors renewed the lease\n"
            "                        (REDOUBT.LEASE) within N ms, so a primary cut off from them\n"
            "                        stops before they may promote anyone (default off)\n"
            "  --requirepass PASS    require AUTH PASS before other commands\n"
            "  --maxclients N        refuse connections beyond N (default 10000)\n"
            "  --max-peers N         a separate budget of N connections for authenticated cluster\n"
            "                        peers (replicas, readers, monitors; default 256)\n"
            "  --timeout S           close a client idle for S seconds (0, the default: never)\n"
            "  --cluster-secret-file F  cluster id and shared secret (mode 0600, made by\n"
            "                        scripts/cluster): replication, the reader feed, storage links\n"
            "                        and admin commands (REPLICAOF, PROMOTE, SHUTDOWN, CONFIG SET,\n"
            "                        REDOUBT.*) need a peer that proved it; without it peers are\n"
            "                        trusted (a warning at start)\n"
            "  --max-query-buffer-mb N   per-client unparsed input limit (default 8)\n"
            "  --max-output-buffer-mb N  per-client unsent reply limit (default 64)\n"
            "  --checkpoint-wal-mb N     checkpoint after N MiB of WAL (default 256)\n"
            "  --checkpoint-interval-s N checkpoint at least every N seconds (default 300)\n"
            "  --wal-segment-mb N        WAL segment size for a new data dir (default 16)\n"
            "  --help                this text\n"
            "\n"
            "Signals: SIGTERM/SIGINT shut down cleanly (checkpoint). SIGKILL loses nothing\n"
            "acknowledged with --commit local.\n");
}

static long parse_num(const char *flag, const char *v, long min, long max)
{
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != 0 || n < min || n > max) {
        fprintf(stderr, "redoubt: %s expects a number in [%ld, %ld], got \"%s\"\n", flag, min, max, v);
        exit(2);
    }
    return n;
}

/* CR6: execute this binary again as a replica (aurora: a reader) of
 * server_rejoin_primary, with the same arguments otherwise (--role becomes
 * replica or reader, any --primary / --writer is replaced). Returns only on
 * failure. */
static int rejoin_as_replica(int argc, char **argv, int aurora)
{
    const char *up_flag = aurora ? "--writer" : "--primary";
    size_t up_len = strlen(up_flag);
    char **nv = calloc((size_t)argc + 7, sizeof(*nv));
    static char fd_arg[16];
    if (nv == NULL)
        return -1;
    int n = 0;
    nv[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--role") == 0 || strcmp(argv[i], up_flag) == 0 || strcmp(argv[i], "--listen-fd") == 0) &&
            i + 1 < argc) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--role=", 7) == 0 || strncmp(argv[i], "--listen-fd=", 12) == 0 ||
            (strncmp(argv[i], up_flag, up_len) == 0 && argv[i][up_len] == '='))
            continue;
        nv[n++] = argv[i];
    }
    nv[n++] = "--role";
    nv[n++] = aurora ? "reader" : "replica";
    nv[n++] = (char *)up_flag;
    nv[n++] = server_rejoin_primary;
    /* CR7: the listener crosses the exec, so the port is never free for someone else to take
     * and clients that connect meanwhile wait in its backlog instead of being refused. */
    if (server_rejoin_listen_fd >= 0) {
        snprintf(fd_arg, sizeof(fd_arg), "%d", server_rejoin_listen_fd);
        nv[n++] = "--listen-fd";
        nv[n++] = fd_arg;
    }
    nv[n] = NULL;
    fflush(NULL);
    /* Nothing but stdin/stdout/stderr and the listener crosses the exec (the data directory's
     * LOCK, the other sockets and the ring are closed by now, or at exec). */
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0)
        rd_warn("close_range failed: %s", strerror(errno));
    if (server_rejoin_listen_fd >= 0 && fcntl(server_rejoin_listen_fd, F_SETFD, 0) < 0) {
        rd_warn("keeping the listener across the exec failed (%s): the port is free for a moment",
                strerror(errno));
        nv[n - 2] = NULL;
    }
    execv("/proc/self/exe", nv);
    rd_error("could not restart as a replica (exec /proc/self/exe): %s", strerror(errno));
    free(nv);
    return -1;
}

int main(int argc, char **argv)
{
    struct server_config cfg;
    server_config_defaults(&cfg);
    enum {
        OPT_ROLE = 1000, OPT_DIR, OPT_PORT, OPT_BIND, OPT_CACHE, OPT_COMMIT, OPT_PASS, OPT_MAXCLIENTS,
        OPT_QBUF, OPT_OBUF, OPT_CKPT_WAL, OPT_CKPT_INT, OPT_SEG, OPT_HELP, OPT_SYNC, OPT_PRIMARY,
        OPT_NAME, OPT_KEEP, OPT_PEERS, OPT_RTIMEOUT, OPT_STORAGE, OPT_WRITER, OPT_FEED, OPT_REPL_SEND,
        OPT_SECRET, OPT_TIMEOUT, OPT_MAXPEERS,
        OPT_CTIMEOUT, OPT_LEASE_MS, OPT_LEASE_MON, OPT_METRICS, OPT_LISTEN_FD,
    };
    static const struct option opts[] = {
        {"role", required_argument, NULL, OPT_ROLE},
        {"dir", required_argument, NULL, OPT_DIR},
        {"port", required_argument, NULL, OPT_PORT},
        {"listen-fd", required_argument, NULL, OPT_LISTEN_FD},
        {"metrics-port", required_argument, NULL, OPT_METRICS},
        {"bind", required_argument, NULL, OPT_BIND},
        {"cache-mb", required_argument, NULL, OPT_CACHE},
        {"commit", required_argument, NULL, OPT_COMMIT},
        {"requirepass", required_argument, NULL, OPT_PASS},
        {"maxclients", required_argument, NULL, OPT_MAXCLIENTS},
        {"max-query-buffer-mb", required_argument, NULL, OPT_QBUF},
        {"max-output-buffer-mb", required_argument, NULL, OPT_OBUF},
        {"checkpoint-wal-mb", required_argument, NULL, OPT_CKPT_WAL},
        {"checkpoint-interval-s", required_argument, NULL, OPT_CKPT_INT},
        {"wal-segment-mb", required_argument, NULL, OPT_SEG},
        {"help", no_argument, NULL, OPT_HELP},
        {"sync-replicas", required_argument, NULL, OPT_SYNC},
        {"primary", required_argument, NULL, OPT_PRIMARY},
        {"name", required_argument, NULL, OPT_NAME},
        {"wal-keep-mb", required_argument, NULL, OPT_KEEP},
        {"peers", required_argument, NULL, OPT_PEERS},
        {"replica-timeout-ms", required_argument, NULL, OPT_RTIMEOUT},
        {"storage", required_argument, NULL, OPT_STORAGE},
        {"writer", required_argument, NULL, OPT_WRITER},
        {"reader-feed", required_argument, NULL, OPT_FEED},
        {"repl-send", required_argument, NULL, OPT_REPL_SEND},
        {"cluster-secret-file", required_argument, NULL, OPT_SECRET},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"max-peers", required_argument, NULL, OPT_MAXPEERS},
        {"commit-timeout-ms", required_argument, NULL, OPT_CTIMEOUT},
        {"lease-ms", required_argument, NULL, OPT_LEASE_MS},
        {"lease-monitors", required_argument, NULL, OPT_LEASE_MON},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case OPT_ROLE:
            if (strcmp(optarg, "standalone") == 0)
                cfg.role = SERVER_ROLE_STANDALONE;
            else if (strcmp(optarg, "primary") == 0)
                cfg.role = SERVER_ROLE_PRIMARY;
            else if (strcmp(optarg, "replica") == 0)
                cfg.role = SERVER_ROLE_REPLICA;
            else if (strcmp(optarg, "writer") == 0)
                cfg.role = SERVER_ROLE_WRITER;
            else if (strcmp(optarg, "reader") == 0)
                cfg.role = SERVER_ROLE_READER;
            else {
                fprintf(stderr, "redoubt: --role must be standalone, primary, replica, writer or reader "
                                "(got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case OPT_SYNC: {
            char err[256];
            if (server_parse_sync_replicas(&cfg, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "redoubt: --sync-replicas: %s\n", err);
                return 2;
            }
            break;
        }
        case OPT_PRIMARY:
            if (strchr(optarg, ':') == NULL) {
                fprintf(stderr, "redoubt: --primary expects HOST:PORT, got \"%s\"\n", optarg);
                return 2;
            }
            cfg.primary_addr = optarg;
            break;
        case OPT_NAME: cfg.name = optarg; break;
        case OPT_KEEP: cfg.wal_keep_bytes = (uint64_t)parse_num("--wal-keep-mb", optarg, 1, 1 << 20) << 20; break;
        case OPT_PEERS: cfg.peers = optarg; break;
        case OPT_STORAGE: cfg.storage = optarg; break;
        case OPT_WRITER: cfg.writer_addr = optarg; break;
        case OPT_FEED:
            if (strcmp(optarg, "redo") == 0)
                cfg.reader_feed_redo = 1;
            else if (strcmp(optarg, "pages") == 0)
                cfg.reader_feed_redo = 0;
            else {
                fprintf(stderr, "redoubt: --reader-feed must be pages or redo\n");
                return 2;
            }
            break;
        case OPT_REPL_SEND:
            if (strcmp(optarg, "written") == 0)
                cfg.repl_send_flushed = 0;
            else if (strcmp(optarg, "flushed") == 0)
                cfg.repl_send_flushed = 1;
            else {
                fprintf(stderr, "redoubt: --repl-send must be written or flushed\n");
                return 2;
            }
            break;
        case OPT_CTIMEOUT: cfg.commit_timeout_ms = (uint64_t)parse_num("--commit-timeout-ms", optarg, 0, 86400000); break;
        case OPT_LEASE_MS: cfg.lease_ms = (uint64_t)parse_num("--lease-ms", optarg, 0, 600000); break;
        case OPT_LEASE_MON: cfg.lease_monitors = (unsigned)parse_num("--lease-monitors", optarg, 0, 15); break;
        case OPT_RTIMEOUT: cfg.replica_timeout_ms = (uint64_t)parse_num("--replica-timeout-ms", optarg, 0, 86400000); break;
        case OPT_DIR: cfg.dir = optarg; break;
        case OPT_PORT: cfg.port = (int)parse_num("--port", optarg, 1, 65535); break;
        case OPT_LISTEN_FD: cfg.listen_fd = (int)parse_num("--listen-fd", optarg, 3, 1 << 20); break;
        case OPT_METRICS: cfg.metrics_port = (int)parse_num("--metrics-port", optarg, 1, 65535); break;
        case OPT_BIND: cfg.bind_addr = optarg; break;
        case OPT_CACHE: cfg.cache_mb = (size_t)parse_num("--cache-mb", optarg, 1, 1 << 20); break;
        case OPT_COMMIT:
            if (strcmp(optarg, "local") == 0 || strcmp(optarg, "on") == 0)
                cfg.commit = SERVER_COMMIT_LOCAL;
            else if (strcmp(optarg, "async") == 0 || strcmp(optarg, "off") == 0)
                cfg.commit = SERVER_COMMIT_ASYNC;
            else if (strcmp(optarg, "remote_write") == 0)
                cfg.commit = SERVER_COMMIT_REMOTE_WRITE;
            else if (strcmp(optarg, "remote_flush") == 0)
                cfg.commit = SERVER_COMMIT_REMOTE_FLUSH;
            else if (strcmp(optarg, "remote_apply") == 0)
                cfg.commit = SERVER_COMMIT_REMOTE_APPLY;
            else {
                fprintf(stderr, "redoubt: --commit must be async, local, remote_write, remote_flush or "
                                "remote_apply (got \"%s\")\n", optarg);
                return 2;
            }
            break;
        case OPT_PASS: cfg.password = optarg; break;
        case OPT_SECRET: cfg.cluster_secret_file = optarg; break;
        case OPT_TIMEOUT: cfg.idle_timeout_s = (unsigned)parse_num("--timeout", optarg, 0, 86400 * 365); break;
        case OPT_MAXPEERS: cfg.max_peers = (size_t)parse_num("--max-peers", optarg, 1, 100000); break;
        case OPT_MAXCLIENTS: cfg.max_clients = (size_t)parse_num("--maxclients", optarg, 1, 1000000); break;
        case OPT_QBUF:
            cfg.max_query_buffer_bytes = (size_t)parse_num("--max-query-buffer-mb", optarg, 2, 4096) << 20;
            break;
        case OPT_OBUF:
            cfg.max_output_buffer_bytes = (size_t)parse_num("--max-output-buffer-mb", optarg, 1, 4096) << 20;
            break;
        case OPT_CKPT_WAL:
            cfg.checkpoint_wal_bytes = (uint64_t)parse_num("--checkpoint-wal-mb", optarg, 1, 1 << 20) << 20;
            break;
        case OPT_CKPT_INT:
            cfg.checkpoint_interval_ms = (uint64_t)parse_num("--checkpoint-interval-s", optarg, 1, 86400) * 1000;
            break;
        case OPT_SEG: {
            long mb = parse_num("--wal-segment-mb", optarg, 1, 1024);
            if (mb & (mb - 1)) {
                fprintf(stderr, "redoubt: --wal-segment-mb must be a power of two\n");
                return 2;
            }
            cfg.wal_segment_bytes = (uint64_t)mb << 20;
            break;
        }
        case OPT_HELP:
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "redoubt: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return 2;
    }
    int aurora = cfg.role == SERVER_ROLE_WRITER || cfg.role == SERVER_ROLE_READER;
    if (aurora && cfg.storage == NULL) {
        fprintf(stderr, "redoubt: --role writer/reader needs --storage H:P,H:P,H:P,H:P,H:P,H:P (six nodes)\n");
        return 2;
    }
    if (cfg.role == SERVER_ROLE_READER && cfg.writer_addr == NULL) {
        fprintf(stderr, "redoubt: --role reader needs --writer HOST:PORT\n");
        return 2;
    }
    if (cfg.dir == NULL && !aurora) {
        fprintf(stderr, "redoubt: --dir is required (see --help)\n");
        return 2;
    }
    if ((cfg.lease_ms == 0) != (cfg.lease_monitors == 0)) {
        fprintf(stderr, "redoubt: --lease-ms and --lease-monitors go together (both 0: no lease)\n");
        return 2;
    }
    if (cfg.role == SERVER_ROLE_REPLICA && cfg.primary_addr == NULL) {
        fprintf(stderr, "redoubt: --role replica needs --primary HOST:PORT\n");
        return 2;
    }
    if (cfg.role != SERVER_ROLE_REPLICA && cfg.primary_addr != NULL) {
        fprintf(stderr, "redoubt: --primary is for --role replica\n");
        return 2;
    }
    static char default_name[32];
    if (cfg.name == NULL) {
        snprintf(default_name, sizeof(default_name), "replica%d", cfg.port);
        cfg.name = default_name;
    }
    static const char *roles[] = {"standalone", "primary", "replica", "writer", "reader"};
    rd_log_init(roles[cfg.role], RD_LOG_INFO);
    int status = server_run(&cfg);
    if (server_rejoin_primary[0] != 0 && status == 0) {
        rd_info("restarting as a replica of %s", server_rejoin_primary);
        if (rejoin_as_replica(argc, argv, aurora) < 0)
            return 1;
    }
    return status;
}
