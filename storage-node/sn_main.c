/* sn_main.c — `redoubt-storage`: flags, then sn_node_run. */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "storage-node/sn_int.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redoubt-storage --dir DIR --port N --id K [--bind ADDR] [--peers H:P,...]\n"
            "                       [--hotlog-segment-mb N] [--hotlog-keep-mb N] [--no-hotlog-trim]\n"
            "                       [--cluster-secret-file F] [--timeout S] [--metrics-port N]\n"
            "\n"
            "A Redoubt storage node (aurora mode): persists redo records from the writer in a hot log,\n"
            "acknowledges them with its SCL after fdatasync, fills gaps from its peers, coalesces\n"
            "records into pages and serves GetPage@LSN. Six of them form one volume.\n"
            "\n"
            "  --dir DIR          data directory (created if missing): hotlog, pages, meta\n"
            "  --port N           port for frames (writer, readers, peers) and RESP INFO/PING\n"
            "  --id K             this node's id (0..5)\n"
            "  --bind ADDR        IPv4 address to listen on (default 127.0.0.1)\n"
            "  --peers H:P,...    the other storage nodes of the volume (gap fill)\n"
            "  --hotlog-segment-mb N  start a new hot-log segment past N MiB (default 64, 1..65536)\n"
            "  --hotlog-keep-mb N hot-log bytes kept for a lagging or unreachable peer (default 1024,\n"
            "                     0..1048576): segments are deleted once coalesced, below the min read\n"
            "                     point and below every peer's SCL (learned by gossip); past N MiB a\n"
            "                     segment goes even if a peer still needs it (logged), and that peer\n"
            "                     catches up by copying pages from a peer (storage-node/README.md N10, N11)\n"
            "  --no-hotlog-trim   keep every hot-log segment (the hot log grows with the volume's history)\n"
            "  --cluster-secret-file F  cluster id and shared secret (mode 0600): the writer, readers and\n"
            "                     peers must prove it before any frame is accepted; without it every\n"
            "                     peer is trusted (a warning at start)\n"
            "  --timeout S        close a RESP (INFO) client idle for S seconds (0, the default: never)\n"
            "  --metrics-port N   Prometheus metrics on http://bind:N/metrics (SCL, bytes, fsyncs, epoch,\n"
            "                     connections, hot log, coalescing: every INFO number; default off)\n"
            "  --hotlog-trim      accepted for older scripts: trimming is on by default\n"
            "  --help             this text\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop cleanly. SIGKILL loses nothing acknowledged.\n");
}

static long parse_num(const char *flag, const char *v, long min, long max)
{
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != 0 || n < min || n > max) {
        fprintf(stderr, "redoubt-storage: %s expects a number in [%ld, %ld], got \"%s\"\n", flag, min, max, v);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    /* The node frees and reallocates record bodies and coalescing buffers all
     * the time: keep freed memory in the heap instead of giving it back to the
     * kernel and faulting it in again (page faults were ~6 % of a loaded node). */
    if (mallopt(M_TRIM_THRESHOLD, 256 << 20) != 1 || mallopt(M_MMAP_THRESHOLD, 64 << 20) != 1)
        fprintf(stderr, "redoubt-storage: mallopt failed (memory is given back to the kernel eagerly)\n");
    struct sn_config cfg = {.bind_addr = "127.0.0.1", .port = -1, .node_id = 0, .hotlog_keep_bytes = 1024ull << 20};
    int have_id = 0;
    enum { OPT_DIR = 1000, OPT_PORT, OPT_ID, OPT_BIND, OPT_PEERS, OPT_HELP, OPT_SEGMB, OPT_TRIM, OPT_NOTRIM, OPT_KEEPMB,
           OPT_SECRET, OPT_TIMEOUT, OPT_METRICS };
    static const struct option opts[] = {
        {"dir", required_argument, NULL, OPT_DIR},     {"port", required_argument, NULL, OPT_PORT},
        {"id", required_argument, NULL, OPT_ID},       {"bind", required_argument, NULL, OPT_BIND},
        {"peers", required_argument, NULL, OPT_PEERS}, {"help", no_argument, NULL, OPT_HELP},
        {"hotlog-segment-mb", required_argument, NULL, OPT_SEGMB},
        {"hotlog-trim", no_argument, NULL, OPT_TRIM},
        {"no-hotlog-trim", no_argument, NULL, OPT_NOTRIM},
        {"hotlog-keep-mb", required_argument, NULL, OPT_KEEPMB},
        {"cluster-secret-file", required_argument, NULL, OPT_SECRET},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"metrics-port", required_argument, NULL, OPT_METRICS},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case OPT_DIR: cfg.dir = optarg; break;
        case OPT_PORT: cfg.port = (int)parse_num("--port", optarg, 1, 65535); break;
        case OPT_ID: cfg.node_id = (uint32_t)parse_num("--id", optarg, 0, 5); have_id = 1; break;
        case OPT_BIND: cfg.bind_addr = optarg; break;
        case OPT_PEERS: cfg.peers = optarg; break;
        case OPT_SEGMB:
            cfg.hotlog_segment_bytes = (uint64_t)parse_num("--hotlog-segment-mb", optarg, 1, 65536) << 20;
            break;
        case OPT_TRIM: cfg.no_hotlog_trim = 0; break;
        case OPT_NOTRIM: cfg.no_hotlog_trim = 1; break;
        case OPT_KEEPMB:
            cfg.hotlog_keep_bytes = (uint64_t)parse_num("--hotlog-keep-mb", optarg, 0, 1048576) << 20;
            break;
        case OPT_SECRET: cfg.cluster_secret_file = optarg; break;
        case OPT_TIMEOUT: cfg.idle_timeout_s = (unsigned)parse_num("--timeout", optarg, 0, 86400 * 365); break;
        case OPT_METRICS: cfg.metrics_port = (int)parse_num("--metrics-port", optarg, 1, 65535); break;
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || cfg.dir == NULL || cfg.port < 0 || !have_id) {
        fprintf(stderr, "redoubt-storage: --dir, --port and --id are required\n\n");
        usage(stderr);
        return 2;
    }
    char role[32];
    snprintf(role, sizeof(role), "storage-%u", cfg.node_id);
    rd_log_init(role, getenv("RD_DEBUG") ? RD_LOG_DEBUG : RD_LOG_INFO);
    return sn_node_run(&cfg);
}
