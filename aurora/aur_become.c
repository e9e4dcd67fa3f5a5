/*
 * aur_become.c — becoming the writer (start-up and promotion: epochs, recovery point,
 * truncation), aurora start-up, re-pointing and promotion of a reader.
 * Part of the aurora wing (aurora/); see aurora.c's header for the whole picture.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"
#include "redo/redo.h"
#include "server/server_int.h"
#include "redo/sn_proto.h"
#include "aurora/aur_int.h"
#include "common/net.h"

/* ------------------------------------------------------------ becoming the writer */

int aurora_become_writer(struct server *s)
{
    struct aurora *a = aur_of(s);
    struct sn_state st[REDO_NODES];
    int have[REDO_NODES];
    uint64_t t0 = aur_now_ms(), max_epoch = 0;
    unsigned nok = 0;
    /* 1. Learn the epochs of a read quorum. */
    while (aur_now_ms() - t0 < 30000) {
        nok = 0;
        for (unsigned i = 0; i < REDO_NODES; i++) {
            have[i] = aur_node_epoch(a, i, 0, &st[i]) == 0;
            if (have[i]) {
                nok++;
                max_epoch = RD_MAX(max_epoch, st[i].epoch);
            }
        }
        if (nok >= REDO_READ_QUORUM)
            break;
        rd_warn("only %u of 6 storage nodes answer; need %u to recover: retrying", nok, REDO_READ_QUORUM);
        usleep(300000);
    }
    if (nok < REDO_READ_QUORUM) {
        rd_error("cannot become the writer: fewer than %u storage nodes reachable", REDO_READ_QUORUM);
        return RD_EQUORUM;
    }
    /* 2. Our epoch, recorded on at least 3 nodes: older writers are fenced from here on. */
    uint64_t t_read_ms = aur_now_ms(); /* phase ends, for the log line (issue 12: where promotion spends time) */
    a->epoch = max_epoch + 1;
    nok = 0;
    struct redo_node_state rs[REDO_NODES];
    uint64_t max_lsn = 0;
    struct rd_buf req[REDO_NODES];
    int all[REDO_NODES], ok[REDO_NODES];
    memset(req, 0, sizeof(req));
    for (unsigned i = 0; i < REDO_NODES; i++)
        all[i] = sn_send_epoch(&req[i], a->epoch, a->epoch) == 0;
    aur_nodes_state_all(a, req, all, 1000, ok, st); /* all six at once */
    for (unsigned i = 0; i < REDO_NODES; i++)
        rd_buf_free(&req[i]);
    for (unsigned i = 0; i < REDO_NODES; i++) {
        have[i] = ok[i] && st[i].epoch == a->epoch;
        if (have[i]) {
            rs[nok].scl = st[i].scl;
            rs[nok].max_cpl = st[i].max_cpl;
            nok++;
            max_lsn = RD_MAX(max_lsn, st[i].max_lsn);
        }
    }
    if (nok < REDO_READ_QUORUM) {
        rd_error("cannot become the writer: epoch %" PRIu64 " accepted by only %u nodes", a->epoch, nok);
        return RD_EQUORUM;
    }
    /* 3. Recovery point from the read quorum; truncate above VDL everywhere. */
    uint64_t vcl = 0, vdl = 0;
    int rc = redo_recovery_point(rs, nok, &vcl, &vdl);
    if (rc < 0) {
        rd_error("recovery point: %s", rd_strerror(rc));
        return rc;
    }
    uint64_t t_epoch_ms = aur_now_ms();
    unsigned truncated = 0;
    struct sn_truncate tr = {.epoch = a->epoch, .keep_upto_lsn = vdl};
    for (unsigned i = 0; i < REDO_NODES; i++)
        all[i] = have[i] && sn_send_truncate(&req[i], a->epoch, &tr) == 0;
    aur_nodes_state_all(a, req, all, 2000, ok, st); /* all six at once */
    for (unsigned i = 0; i < REDO_NODES; i++) {
        truncated += ok[i] ? 1u : 0u;
        rd_buf_free(&req[i]);
    }
    /* 4. Wait (bounded) until a write quorum holds everything up to VDL:
     * the nodes fill their gaps from each other. */
    unsigned holding = 0;
    uint64_t t1 = aur_now_ms();
    uint64_t t_trunc_ms = t1;
    do {
        holding = 0;
        for (unsigned i = 0; i < REDO_NODES; i++) {
            struct sn_state x;
            if (aur_node_epoch(a, i, a->epoch, &x) == 0 && x.epoch == a->epoch) {
                st[i] = x;
                have[i] = 1;
                if (x.scl >= vdl)
                    holding++;
            }
        }
        if (holding >= REDO_WRITE_QUORUM)
            break;
        usleep(50000);
    } while (aur_now_ms() - t1 < 10000);
    uint64_t t_end_ms = aur_now_ms();
    rd_info("epoch %" PRIu64 ": recovered VCL %" PRIu64 ", VDL %" PRIu64 " (highest LSN seen %" PRIu64
            "); truncated above VDL on %u nodes; %u nodes hold VDL; in %" PRIu64 " ms (epochs read %" PRIu64
            ", epoch written %" PRIu64 ", truncate %" PRIu64 ", wait for VDL %" PRIu64 " ms)",
            a->epoch, vcl, vdl, max_lsn, truncated, holding, t_end_ms - t0, t_read_ms - t0, t_epoch_ms - t_read_ms,
            t_trunc_ms - t_epoch_ms, t_end_ms - t_trunc_ms);
    if (holding < REDO_WRITE_QUORUM)
        rd_warn("only %u nodes hold VDL yet: writes wait until a write quorum catches up", holding);
    /* 5. Continue at VDL + 1 with a fresh quorum state. */
    redo_quorum_free(&a->q);
    if (redo_quorum_init(&a->q, 1u << 20) < 0)
        rd_panic("out of memory");
    if (vdl > 0 && redo_quorum_add_cpl(&a->q, vdl) < 0) /* no acks yet: VDL cannot move here */
        rd_panic("out of memory for the quorum tracker");
    for (unsigned i = 0; i < REDO_NODES; i++) {
        a->node[i].scl = have[i] ? RD_MIN(st[i].scl, vdl) : 0;
        if (have[i])
            redo_quorum_ack(&a->q, i, RD_MIN(st[i].scl, vdl));
    }
    a->last_lsn = vdl;
    a->read_lsn = vdl;
    a->recovered_vdl = vdl;
    a->nchanged = 0;
    rd_buf_reset(&a->feedrec);
    a->role_writer = 1;
    a->fenced = 0;
    s->durable_lsn = s->last_commit_lsn = s->release_lsn = a->q.vdl;
    if (s->engine) {
        engine_close(s->engine);
        s->engine = NULL;
    }
    aur_gp_touched(a, ENGINE_PAGE_NONE); /* S22: GetPages in flight were for the reader's cache */
    struct engine_options eo = {.data_path = NULL,
                                .cache_pages = RD_MAX((size_t)64, s->cfg.cache_mb * 1024u * 1024u / ENGINE_PAGE_SIZE),
                                .sink = {.ctx = s, .emit = aur_emit, .read_page = aur_read_page,
                                         .durable_lsn = aur_durable, .read_page_nb = aur_read_page_nb}};
    rc = engine_open(&eo, &s->engine);
    if (rc < 0) {
        rd_error("could not open the volume: %s", rd_strerror(rc));
        return rc;
    }
    engine_set_fpi_threshold(s->engine, 0); /* redo never carries full-page images */
    /* A fresh volume: the engine just emitted the meta and root pages; a commit makes them a unit. */
    if (a->batch_open) {
        uint64_t lsn;
        aurora_append_commit(s, 0, &lsn);
        s->last_commit_lsn = lsn;
    }
    return 0;
}

int aurora_init(struct server *s)
{
    rd_assert(s->role_state == NULL);
    s->role_state = calloc(1, sizeof(struct aurora));
    if (s->role_state == NULL)
        rd_panic("out of memory for the aurora role's state");
    aur_of(s)->srv = s;
    struct aurora *a = aur_of(s);
    for (unsigned i = 0; i < REDO_NODES; i++) {
        a->ctl[i].fd = -1;
        a->node[i].conn = NULL;
    }
    char list[2048];
    snprintf(list, sizeof(list), "%s", s->cfg.storage ? s->cfg.storage : "");
    unsigned n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == REDO_NODES || rd_net_parse_hostport(tok, a->node[n].host, sizeof(a->node[n].host), &a->node[n].port) < 0) {
            rd_error("--storage needs exactly 6 HOST:PORT entries (bad or extra \"%s\")", tok);
            return -EINVAL;
        }
        n++;
    }
    if (n != REDO_NODES) {
        rd_error("--storage needs exactly 6 HOST:PORT entries, got %u", n);
        return -EINVAL;
    }
    if (redo_quorum_init(&a->q, 1u << 20) < 0)
        return -ENOMEM;
    if (s->role == SERVER_ROLE_READER) {
        if (rd_net_parse_hostport(s->cfg.writer_addr ? s->cfg.writer_addr : "", a->writer_host, sizeof(a->writer_host),
                           &a->writer_port) < 0) {
            rd_error("--role reader needs --writer HOST:PORT");
            return -EINVAL;
        }
        return 0;
    }
    return aurora_become_writer(s);
}

/* REPLICAOF host port on a reader: follow another writer (after a failover). */
int aurora_repoint(struct server *s, const char *host, int port, char *err, size_t err_len)
{
    struct aurora *a = aur_of(s);
    if (s->role == SERVER_ROLE_WRITER && s->fenced) { /* CR6: rejoin in place as a reader */
        snprintf(server_rejoin_primary, sizeof(server_rejoin_primary), "%s:%d", host, port);
        s->shutdown_requested = 1;
        rd_warn("REPLICAOF %s %d on a fenced writer (%s): shutting down to restart as its reader", host, port,
                s->fenced_by);
        return 0;
    }
    if (s->role != SERVER_ROLE_READER) {
        snprintf(err, err_len, "ERR an aurora writer that is not fenced cannot follow another writer: fence it "
                               "first (REDOUBT.FENCE), or promote a reader instead");
        return -1;
    }
    snprintf(a->writer_host, sizeof(a->writer_host), "%s", host);
    a->writer_port = port;
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
    a->feed_conn = NULL;
    a->feed_retry_ms = 0;
    rd_info("following the writer %s:%d from now on", host, port);
    return 0;
}

int aurora_promote(struct server *s, char *err, size_t err_len)
{
    struct aurora *a = aur_of(s);
    if (s->role != SERVER_ROLE_READER) {
        snprintf(err, err_len, "ERR only an aurora reader can be promoted to writer");
        return -1;
    }
    rd_info("promotion requested: this reader becomes the writer");
    if (a->feed_conn)
        conn_close(s, a->feed_conn);
    a->feed_conn = NULL;
    int rc = aurora_become_writer(s);
    if (rc < 0) {
        snprintf(err, err_len, "ERR promotion failed: %s", rd_strerror(rc));
        return -1;
    }
    s->role = SERVER_ROLE_WRITER;
    rd_log_set_role("writer");
    rd_info("promoted: writer at epoch %" PRIu64 ", continuing at LSN %" PRIu64, a->epoch, a->last_lsn + 1);
    return 0;
}
