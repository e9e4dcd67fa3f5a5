/*
 * sn_node.c — the storage-node daemon (aurora mode): io_uring loop,
 * connections, the foreground write path, and the background work (gap fill,
 * coalesce, GC, gossip of peers' SCLs, hot-log trimming, page-copy catch-up).
 * Formats, invariants (N1..) and failure behaviour are in
 * storage-node/README.md.
 *
 * Foreground (one loop turn, sn_node_run):
 *   1. submit, wait for completions (or the 50 ms timer), dispatch: accepts
 *      make conns, multishot recvs append to conn.in, the hot-log write
 *      completes (O_DIRECT + RWF_DSYNC, N12; or write + linked fdatasync in
 *      buffered mode) and sn_flight_durable makes its records durable, the
 *      SCL advances, waiting writers get their ACK;
 *   2. process every conn with input: frames (WRITE → validate → append to
 *      the pending hot-log buffer; GETPAGE, FETCH, EPOCH …) or RESP;
 *   3. sn_flush_kick: everything appended in this turn (and while the last
 *      flush was in flight) shares the next durable write; zeros are kept
 *      written ahead of it (sn_zfill_kick);
 *   4. background work when due; queue sends.
 *
 * N1: an ACK is queued only in sn_send_acks, called when the flush holding
 * every record its writer sent is durable (its RWF_DSYNC write or its
 * fdatasync completed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/buf.h"
#include "common/checksum.h"
#include "common/conn.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/metrics.h"
#include "common/util.h"
#include "common/resp.h"
#include "engine/engine.h"
#include "redo/redo.h"
#include "storage-node/sn_int.h"
#include "storage-node/sn_trace.h"
#include "redo/sn_proto.h"

#define SN_BGID 11
#define SN_TIMER_US 50000u
#define SN_FRAMES_PER_TURN 64u
#define SN_CONN_INPUT_MAX_BYTES (FRAME_MAX_PAYLOAD + 2u * FRAME_HDR_SIZE + (1u << 20))
#define SN_CONN_OUTPUT_MAX_BYTES (256u << 20)
#define SN_MAX_CLIENTS 1024u              /* RESP clients and connections not yet authenticated */
#define SN_MAX_PEER_CONNS 256u           /* authenticated writers, readers and peers, on top */
#define SN_MAX_PEERS 16u
#define SN_FETCH_MAX_BYTES (4u << 20)      /* cap on one LOG answer */
#define SN_FETCH_ASK_BYTES (1u << 20)      /* what gap fill asks for */
#define SN_FETCH_TIMEOUT_MS 2000u
#define SN_PROBE_INTERVAL_MS 250u          /* ask a peer even without a known gap */
#define SN_COALESCE_INTERVAL_MS 1000u   /* rarer rounds: a hot page is written once per round, not per 100 ms */
#define SN_COALESCE_BUSY_MS 4000u          /* ... while records keep arriving (REDOUBT_SN_COALESCE_BUSY_MS) */
#define SN_COALESCE_QUIET_MS 250u          /* no record appended for this long: the 1 s interval applies */
#define SN_COALESCE_DUE_RECORDS 65536u     /* ... or sooner, once this many records can be coalesced */
#define SN_COALESCE_BATCH 131072u          /* records applied per coalesce round */
#define SN_COALESCE_MAX_PAGES 2048u        /* pages touched per round (16 MiB of images): bounds the loop turn */
#define SN_COALESCE_DUE_BYTES (8u << 20)   /* ... or sooner, once this much hot log arrived since the last round */
#define SN_HISTORY_RECORDS 10000u          /* kept above the page store without a read point */
#define SN_MAX_HOT_RECORDS (1u << 20)      /* beyond: coalesce past the read point (logged) */
#define SN_PENDING_MAX_BYTES (64u << 20)   /* stop reading writers beyond this, until a flush */
#define SN_GOSSIP_INTERVAL_MS 200u         /* ask each peer for its SCL (N10) */
#define SN_COPY_TIMEOUT_MS 5000u           /* a PAGECOPY unanswered this long: give up on that peer */
#define SN_COPY_RETRY_MS 1000u             /* after a failed page copy, try again (maybe another peer) */
#define SN_COPY_SCAN_PAGES 4096u           /* page-store slots read for one PAGES answer (bounded work) */
#define SN_DIO_ALIGN 4096u                 /* O_DIRECT hot-log writes: offset and length (the fs block size) */
#define SN_ZFILL_CHUNK (1u << 20)          /* zeros written ahead of the appends at a time (N12) */
#define SN_ZFILL_AHEAD (2u << 20)          /* keep this much zeroed room ahead of the pending end */
#define SN_PCACHE_PAGES 4096u              /* page cache slots (N18): 32 MiB mapped, touched as used */
#define SN_LACK_PARK_MAX_MS 200u           /* a frame parked this long behind a linked ACK send cancels it (N19) */

/* The meta file format (DIR/meta), SN_MAX_TRUNC and struct sn_trunc are in
 * sn_files.c / sn_int.h (shared with redoubt-dump). */

/* ------------------------------------------------------------ state */

enum sn_proto_kind { SN_PROTO_UNKNOWN = 0, SN_PROTO_FRAMES, SN_PROTO_RESP };

struct sn_node;

/* A connection: the connection layer's part (common/conn.h: fd, addr, in, out,
 * closing, eof ... named directly through the anonymous struct) and the node's. */
struct sn_conn {
    union {
        struct rd_conn nc;
        struct { RD_CONN_FIELDS };
    };
    struct sn_node *node;
    enum sn_proto_kind proto;
    int peer;               /* index in node.peers for our outbound link, else -1 */
    struct rd_buf scratch;
    int ack_wait;           /* sent WRITE data: ACK due when done_gen >= ack_gen */
    uint64_t ack_gen;
    uint64_t ack_epoch;     /* epoch of its newest WRITE frame */
    uint64_t stale_logged;  /* last refused epoch logged for this conn */
    struct rd_auth_hs hs;   /* peer handshake (README "Peers") */
    int peer_authed;        /* proved the cluster secret (or none is configured) */
    int is_peer;            /* counted in sn_node.npeer_conns */
    int over_budget;        /* accepted beyond SN_MAX_CLIENTS: must authenticate within the deadline */
    int parked;             /* N19: its next frame waits for the linked ACK send in flight */
    void (*lack_saved)(struct rd_io *io, const struct io_uring_cqe *cqe); /* send_io's handler, restored */
    struct sn_conn *prev, *next;
};

enum sn_peer_state { SN_PEER_IDLE = 0, SN_PEER_CONNECTING, SN_PEER_UP };

struct sn_peer {
    struct sn_node *node;
    int idx;
    char name[280];
    struct sockaddr_in sa;
    enum sn_peer_state state;
    int fd;
    struct sn_conn *conn;
    struct rd_io connect_io;
    uint64_t next_attempt_ms;
    int down_logged;
    uint64_t trimmed_for;   /* its last FETCH answer said it no longer holds this LSN (0: none) */
    uint64_t holds_from;    /* ... and the lowest LSN it offered instead */
    /* What gossip last told about it (kept while it is unreachable: N10). */
    int heard;              /* it answered a GOSSIP since this process started */
    uint64_t scl, coalesced_lsn, trimmed_lsn, epoch, heard_ms;
    int given_up;           /* this node trimmed past its SCL (over --hotlog-keep-mb); logged once */
};

/* Page-copy catch-up (N11): the requester's state. */
struct sn_copy {
    int active;
    int peer;               /* index in peers: the one being copied from */
    uint64_t req_id, sent_ms, started_ms, retry_ms;
    uint32_t next_page;     /* the next PAGECOPY asks from here */
    uint64_t base, cpl;     /* min coalesced_lsn over every answer of this copy, and its CPL */
    uint64_t pages;         /* pages written so far */
};

/* One hot-log segment file (README "Files"); segs[nsegs-1] takes appends. */
struct sn_seg {
    uint64_t no;
    int fd;
    uint64_t size;      /* bytes written and fdatasynced (or recovered) */
    uint64_t max_lsn;   /* highest LSN ever appended to it (0: none) */
    int sealed;         /* renamed DIR/hotlog.N; else it is DIR/hotlog (the last one) */
    int dfd;            /* O_DIRECT descriptor for appends (N12), -1 if none */
    uint64_t zeroed;    /* file offset up to which the file durably holds records or zeros (N12) */
};

struct sn_pend { uint64_t lsn, off; uint32_t idx; }; /* idx: where sn_store_add put it (a hint) */

struct sn_stats {
    uint64_t gaps_filled, getpage_requests, corrupt_detected, repaired;
    uint64_t writes, stale_refused, records_received, duplicates, flushes;
    uint64_t fsyncs;        /* fdatasync/fsync calls (hot log, pages, meta, directory), for cost per commit */
    uint64_t dsync_writes;  /* hot-log O_DIRECT|RWF_DSYNC writes (durable without an fsync, N12) */
    uint64_t zfill_bytes;   /* zeros written ahead of the appends */
    uint64_t fetches_served, truncated_refused;
    uint64_t segments_deleted, records_trimmed, fetch_trimmed_answers;
    uint64_t gossip_answers, trim_gave_up, page_copies, pages_copied, pagecopy_served;
    uint64_t linked_acks;   /* ACKs sent by a send linked to their durable write (N19) */
    uint64_t parked_frames; /* frames (epoch raise, TRUNCATE) that waited for a linked ACK (N19) */
    uint64_t coalesce_cpu_us; /* CPU time of coalescing rounds and trimming (cost per commit) */
};

struct sn_node {
    struct sn_config cfg;
    char dir[4096];
    struct rd_loop loop;
    int listen_fd;
    struct rd_io timer_io;
    int timer_armed;
    struct rd_net net;          /* the connection layer: listener, recv ring, ready list */
    struct rd_buf_ring bufring; /* provided buffers for multishot recv */
    struct sn_conn *conns;
    size_t nconns, npeer_conns;
    struct rd_auth auth;    /* --cluster-secret-file (auth.enabled 0: none) */
    uint64_t budget_check_ms;
    /* durable state */
    uint64_t epoch;
    struct sn_trunc trunc[SN_MAX_TRUNC];
    uint32_t ntrunc;
    struct sn_store st;
    int pages_fd, meta_dir_fd;
    struct sn_seg *segs;    /* live hot-log segments, ascending */
    size_t nsegs, segs_cap;
    uint64_t seg_limit;     /* start a new segment once the current one holds this many bytes */
    int trim_enabled;       /* not --no-hotlog-trim: delete segments below the trim point (N10) */
    uint64_t keep_bytes;    /* --hotlog-keep-mb: beyond, trim past lagging peers */
    uint64_t trim_point;    /* last computed: min(coalesced, min read point, every peer's SCL) */
    uint64_t trim_local;    /* ... without the peers: min(coalesced, min read point) */
    char trim_held_by[320]; /* what sets trim_point (INFO) */
    uint64_t hl_end;        /* virtual hot-log offset of the next appended record (SN_HL_VOFF) */
    uint64_t coalesced_cpl; /* newest CPL <= coalesced_lsn (persisted in meta) */
    uint64_t blocked_lsn;   /* every reachable peer trimmed scl + 1: gap fill cannot bring it (0: no) */
    /* flush pipeline */
    struct rd_buf hl_pending, hl_flight;
    struct sn_pend *pend, *flight;
    size_t npend, pend_cap, nflight, flight_cap;
    struct redo_rec *dec; /* sn_accept_batch: the decoded records of one batch */
    size_t dec_cap;
    uint64_t pend_off;      /* virtual offset where hl_pending goes */
    uint64_t flight_off;    /* virtual offset of hl_flight */
    int flight_fd;
    int flight_active;
    struct rd_io write_io, sync_io;
    uint64_t next_gen, flight_gen, done_gen;
    /* durable appends without fdatasync (N12): O_DIRECT + RWF_DSYNC of whole
     * SN_DIO_ALIGN blocks into zeroed room; the partial last block is rewritten */
    int direct;             /* 1: the active segment takes O_DIRECT|RWF_DSYNC writes */
    int flight_direct;      /* the flight in flight is one */
    uint8_t *dio;           /* aligned buffer of the flight: tail block + records + zero padding */
    size_t dio_cap;
    uint64_t flight_woff, flight_wlen; /* file offset and length of that write */
    uint8_t tail[SN_DIO_ALIGN]; /* the durable bytes of the active segment's last partial block */
    uint64_t tail_seg, tail_off; /* ... which segment, and the file offset of that block */
    uint32_t tail_len;
    uint8_t *zeros;         /* SN_ZFILL_CHUNK zero bytes, aligned */
    struct rd_io zfill_io;
    int zfill_active;
    uint64_t zfill_seg, zfill_off, zfill_len;
    /* background */
    uint64_t vdl_seen, min_read_point;
    struct sn_peer peers[SN_MAX_PEERS];
    size_t npeers, peer_rr;
    uint64_t fetch_req_id, fetch_from, fetch_sent_ms, last_probe_ms, last_coalesce_ms;
    int fetch_outstanding, fetch_more, coalesce_blocked;
    uint64_t hl_since_coalesce; /* hot-log bytes appended since the last coalesce round */
    uint64_t last_append_ms;    /* when the last record was appended (busy vs quiet coalescing interval) */
    uint64_t coalesce_busy_ms;  /* SN_COALESCE_BUSY_MS, or REDOUBT_SN_COALESCE_BUSY_MS (A/B) */
    int hl_repair_pending;  /* the hot log lost records to corruption: count refetched ones */
    uint64_t last_gossip_ms;
    struct sn_copy copy;
    struct sn_stats stats;
    struct sn_pcache pcache;    /* N18: page-store images kept between coalescing rounds */
    /* N19: the ACK linked (IOSQE_IO_LINK) to the durable write of the flight */
    int link_acks;              /* on unless REDOUBT_SN_LINK_ACK=0 (A/B) */
    struct sn_conn *lack_conn;  /* the connection whose linked ACK send has not completed (NULL: none) */
    int flight_fault;           /* RD_FAULT=sn_fsync fired for this flight: it is submitted to fail (EBADF) */
    uint64_t lack_ms;           /* when that linked ACK was submitted */
    uint64_t lack_scl;          /* the SCL it carries: the flight must reach it (asserted) */
    uint64_t lack_dmax;         /* ... and its durable_lsn */
    uint64_t lack_gen;          /* the flight it is linked to (0: none) */
    uint8_t *co_imgs;           /* SN_COALESCE_MAX_PAGES images for a coalescing round (kept, mmap'ed) */
};

static volatile sig_atomic_t sn_stop;
static void sn_on_signal(int sig) { (void)sig; sn_stop = 1; }

static void sn_path(const struct sn_node *s, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", s->dir, name);
}

/* ------------------------------------------------------------ hot-log segments */

static struct sn_seg *sn_seg_find(struct sn_node *s, uint64_t no)
{
    for (size_t i = s->nsegs; i-- > 0;)
        if (s->segs[i].no == no)
            return &s->segs[i];
    return NULL;
}

static struct sn_seg *sn_seg_push(struct sn_node *s, uint64_t no, int fd)
{
    if (s->nsegs == s->segs_cap) {
        size_t cap = s->segs_cap ? s->segs_cap * 2 : 16;
        struct sn_seg *p = realloc(s->segs, cap * sizeof(*p));
        if (p == NULL)
            rd_panic("out of memory for hot-log segments");
        s->segs = p;
        s->segs_cap = cap;
    }
    rd_assert(s->nsegs == 0 || s->segs[s->nsegs - 1].no < no);
    s->segs[s->nsegs] = (struct sn_seg){.no = no, .fd = fd, .size = SN_HOTLOG_FILE_HDR_SIZE, .dfd = -1};
    return &s->segs[s->nsegs++];
}

static uint64_t sn_dio_up(uint64_t n) { return (n + SN_DIO_ALIGN - 1) / SN_DIO_ALIGN * SN_DIO_ALIGN; }

/* N12: opens the O_DIRECT descriptor of the active segment g (at path) and
 * loads the durable bytes of its partial last block, which every direct
 * write rewrites. Where the file system refuses O_DIRECT, every segment
 * keeps the buffered write + fdatasync path (logged once). */
static void sn_seg_direct_open(struct sn_node *s, struct sn_seg *g, const char *path)
{
    if (!s->direct)
        return;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
    if (fd < 0) {
        rd_info("hot log: O_DIRECT is not available for \"%s\" (%s): buffered writes and fdatasync", path,
                strerror(errno));
        s->direct = 0;
        return;
    }
    uint32_t tl = (uint32_t)(g->size % SN_DIO_ALIGN);
    ssize_t got = tl ? pread(g->fd, s->tail, tl, (off_t)(g->size - tl)) : 0;
    if (got != (ssize_t)tl)
        rd_panic("could not read the last block of the hot log \"%s\": %s", path,
                 got < 0 ? strerror(errno) : "short read");
    g->dfd = fd;
    g->zeroed = RD_MAX(g->zeroed, g->size);
    s->tail_seg = g->no;
    s->tail_off = g->size - tl;
    s->tail_len = tl;
}

/* A sealed segment with no write in flight gives up its O_DIRECT descriptor
 * and the zeros past its records (N12). The truncation is not fsynced: zeros
 * after the last record are a torn tail to recovery anyway. */
static void sn_seg_settle(struct sn_node *s, struct sn_seg *g)
{
    if (!g->sealed || g->dfd < 0)
        return;
    if ((s->flight_active && SN_HL_VSEG(s->flight_off) == g->no) || (s->zfill_active && s->zfill_seg == g->no))
        return;
    if (ftruncate(g->fd, (off_t)g->size) < 0)
        rd_warn("could not cut the zeros after hot-log segment %llu: %s", (unsigned long long)g->no, strerror(errno));
    if (close(g->dfd) < 0)
        rd_warn("close of a hot-log segment failed: %s", strerror(errno));
    g->dfd = -1;
}

/* Writes DIR/hotlog.new holding the file header of segment no, durable.
 * Returns its fd. */
static int sn_seg_prepare(struct sn_node *s, uint64_t no, char *path, size_t cap)
{
    snprintf(path, cap, "%s/hotlog.new", s->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        rd_panic("could not create hot-log segment \"%s\": %s", path, strerror(errno));
    uint8_t h[SN_HOTLOG_FILE_HDR_SIZE];
    sn_hotlog_file_hdr_seg(h, s->cfg.node_id, no);
    if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
        rd_panic("could not initialise \"%s\": %s", path, strerror(errno));
    s->stats.fsyncs++;
    if (fdatasync(fd) < 0)
        rd_panic("could not fdatasync \"%s\": %s", path, strerror(errno));
    return fd;
}

static void sn_rename_durable(struct sn_node *s, const char *from, const char *to)
{
    if (rename(from, to) < 0)
        rd_panic("could not rename \"%s\" to \"%s\": %s", from, to, strerror(errno));
    s->stats.fsyncs++;
    if (fsync(s->meta_dir_fd) < 0)
        rd_panic("could not fsync directory \"%s\": %s", s->dir, strerror(errno));
}

/*
 * Seals DIR/hotlog as DIR/hotlog.N and puts a new, empty DIR/hotlog (segment
 * N+1) in its place; appends go there from now on (hl_pending is empty; a
 * flush in flight still completes into the old file through its fd). Order:
 * hotlog.new written and fdatasynced, rename hotlog -> hotlog.N, fsync the
 * directory, rename hotlog.new -> hotlog, fsync the directory. A crash in
 * between leaves no DIR/hotlog: start-up creates it (sn_open_hotlog).
 */
static void sn_seg_rotate(struct sn_node *s)
{
    rd_assert(s->hl_pending.len == 0 && s->pend_off == s->hl_end);
    struct sn_seg *cur = &s->segs[s->nsegs - 1];
    uint64_t no = cur->no + 1;
    if (no > SN_HL_MAX_SEG)
        rd_panic("hot-log segment numbers are exhausted in \"%s\"", s->dir);
    char tmp[4200], active[4200], sealed[4200];
    int fd = sn_seg_prepare(s, no, tmp, sizeof(tmp));
    sn_hotlog_seg_path(active, sizeof(active), s->dir, 0, 0);
    sn_hotlog_seg_path(sealed, sizeof(sealed), s->dir, cur->no, 1);
    sn_rename_durable(s, active, sealed);
    cur->sealed = 1;
    sn_rename_durable(s, tmp, active);
    struct sn_seg *g = sn_seg_push(s, no, fd);
    sn_seg_direct_open(s, g, active);
    sn_seg_settle(s, &s->segs[s->nsegs - 2]);
    s->hl_end = s->pend_off = SN_HL_VOFF(no, SN_HOTLOG_FILE_HDR_SIZE);
    rd_debug("hot log: sealed segment %llu, now appending to segment %llu", (unsigned long long)(no - 1),
             (unsigned long long)no);
}

static uint64_t sn_hl_bytes(const struct sn_node *s)
{
    uint64_t b = 0;
    for (size_t i = 0; i < s->nsegs; i++)
        b += s->segs[i].size;
    return b;
}

/* ------------------------------------------------------------ meta */

static int sn_meta_write(struct sn_node *s)
{
    uint8_t m[SN_META_SIZE];
    struct sn_meta mt;
    memset(&mt, 0, sizeof(mt));
    mt.node_id = s->cfg.node_id;
    mt.ntrunc = s->ntrunc;
    mt.epoch = s->epoch;
    mt.coalesced_lsn = s->st.coalesced_lsn;
    mt.scl = s->st.scl;
    mt.coalesced_cpl = s->coalesced_cpl;
    memcpy(mt.trunc, s->trunc, sizeof(mt.trunc));
    sn_meta_encode(m, &mt);
    /* meta.tmp, fsync, rename, fsync of the dir: a crash leaves the old or the new file. */
    s->stats.fsyncs += 2; /* meta.tmp and the directory */
    int rc = rd_write_file_atomic(s->dir, "meta", m, sizeof(m));
    if (rc < 0)
        rd_error("could not write \"%s/meta\": %s", s->dir, rd_strerror(rc));
    return rc;
}

/* Persists the meta file or stops the process: a node that cannot record its
 * epoch or truncation must not answer as if it had. */
static void sn_meta_persist(struct sn_node *s)
{
    int rc = sn_meta_write(s);
    if (rc < 0)
        rd_panic("could not persist the meta file in \"%s\": %s", s->dir, rd_strerror(rc));
}

static int sn_meta_read(struct sn_node *s)
{
    char path[4200];
    sn_path(s, "meta", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* a new node: epoch 0, nothing coalesced */
        rd_error("could not open \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    uint8_t m[SN_META_SIZE];
    ssize_t r = read(fd, m, sizeof(m));
    close(fd);
    struct sn_meta mt;
    int rc = sn_meta_decode(m, r < 0 ? 0 : (size_t)r, &mt);
    if (!mt.size_ok || !mt.magic_ok || !mt.checksum_ok) {
        rd_error("meta file \"%s\" is corrupt (size %zd, bad magic or checksum): refusing to start, "
                 "the node's epoch is unknown",
                 path, r);
        return RD_ECORRUPT;
    }
    if (rc == RD_EVERSION) {
        rd_error("meta file \"%s\" has unknown version %u", path, mt.version);
        return RD_EVERSION;
    }
    s->ntrunc = mt.ntrunc;
    if (rc < 0) {
        rd_error("meta file \"%s\" lists %u truncation ranges (max %u)", path, s->ntrunc, SN_MAX_TRUNC);
        return RD_ECORRUPT;
    }
    if (mt.node_id != s->cfg.node_id) {
        rd_error("meta file \"%s\" belongs to node %u, this is node %u: refusing to start (the wrong --id or --dir)",
                 path, mt.node_id, s->cfg.node_id);
        return RD_ESTATE;
    }
    s->epoch = mt.epoch;
    s->st.coalesced_lsn = mt.coalesced_lsn;
    s->coalesced_cpl = mt.coalesced_cpl <= mt.coalesced_lsn ? mt.coalesced_cpl : 0;
    memcpy(s->trunc, mt.trunc, sizeof(s->trunc));
    return 0;
}

static uint64_t sn_truncated_above(const struct sn_node *s)
{
    return s->ntrunc ? s->trunc[s->ntrunc - 1].keep_upto : 0;
}

/* N6 (sn_files.c). */
static int sn_node_trunc_refuses(const struct sn_node *s, uint64_t epoch, uint64_t lsn)
{
    return sn_trunc_refuses(s->trunc, s->ntrunc, epoch, lsn);
}

/* ------------------------------------------------------------ connections */

static void sn_copy_abort(struct sn_node *s, const char *why);

static struct sn_conn *sn_conn_of(struct rd_conn *nc)
{
    return (struct sn_conn *)((char *)nc - offsetof(struct sn_conn, nc));
}

static void sn_mark_ready(struct sn_node *s, struct sn_conn *c)
{
    (void)s;
    rd_conn_mark_ready(&c->nc);
}

/* The connection layer's last call (common/conn.h): nothing in flight, fd closed. */
static void sn_conn_on_close(struct rd_conn *nc)
{
    struct sn_conn *c = sn_conn_of(nc);
    struct sn_node *s = c->node;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->is_peer)
        s->npeer_conns--;
    if (c->peer >= 0) {
        struct sn_peer *p = &s->peers[c->peer];
        p->state = SN_PEER_IDLE;
        p->conn = NULL;
        p->next_attempt_ms = rd_now_ms() + 200;
        rd_info("link to peer %s closed", p->name);
        if (s->copy.active && s->copy.peer == c->peer)
            sn_copy_abort(s, "the link to the peer closed");
    }
    rd_buf_free(&c->scratch);
    free(c);
}

static void sn_conn_close(struct sn_node *s, struct sn_conn *c)
{
    (void)s;
    if (!c->closing)
        c->ack_wait = 0;
    rd_conn_close(&c->nc);
}

static size_t sn_conn_max_input(const struct rd_conn *c)
{
    (void)c;
    return SN_CONN_INPUT_MAX_BYTES;
}

static const struct rd_conn_ops sn_conn_ops = {
    .max_input = sn_conn_max_input,
    .on_close = sn_conn_on_close,
};

static struct sn_conn *sn_conn_new(struct sn_node *s, int fd, int peer)
{
    struct sn_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        rd_panic("out of memory for a connection");
    c->node = s;
    c->peer = peer;
    c->proto = peer >= 0 ? SN_PROTO_FRAMES : SN_PROTO_UNKNOWN;
    c->peer_authed = !s->auth.enabled;
    c->keep_on_eof = 1; /* a client that sends a request and closes its side still gets the answer */
    if (peer >= 0) { /* our own link to a peer */
        c->is_peer = 1;
        s->npeer_conns++;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    rd_conn_open(&s->net, &c->nc, fd, &sn_conn_ops);
    return c;
}

static void sn_queue_send(struct sn_node *s, struct sn_conn *c)
{
    (void)s;
    rd_conn_flush(&c->nc);
}

static void sn_on_accept(struct rd_net *n, int fd)
{
    struct sn_node *s = (struct sn_node *)((char *)n - offsetof(struct sn_node, net));
    /* Budgets: clients (and connections that did not authenticate yet) hold at
     * most SN_MAX_CLIENTS; beyond, up to SN_MAX_PEER_CONNS more are accepted on
     * probation: they must become peers within RD_AUTH_DEADLINE_MS. Idle or
     * hostile connections therefore never keep a writer or peer out. */
    size_t nclients = s->nconns - s->npeer_conns;
    int over = nclients >= SN_MAX_CLIENTS;
    if (over && s->nconns >= SN_MAX_CLIENTS + SN_MAX_PEER_CONNS) {
        if (rd_auth_log_once("budget"))
            rd_warn("refusing connections: %zu open (%zu peers); logged once", s->nconns, s->npeer_conns);
        if (close(fd) < 0)
            rd_warn("close failed: %s", strerror(errno));
        return;
    }
    struct sn_conn *c = sn_conn_new(s, fd, -1);
    c->over_budget = over;
}

static int sn_make_peer(struct sn_node *s, struct sn_conn *c)
{
    if (c->is_peer)
        return 0;
    if (s->npeer_conns >= SN_MAX_PEER_CONNS)
        return -1;
    c->is_peer = 1;
    c->over_budget = 0;
    s->npeer_conns++;
    return 0;
}

/* Once a second: close connections past their deadline (README "Peers"). */
static void sn_check_budgets(struct sn_node *s, uint64_t now)
{
    if (now - s->budget_check_ms < 1000)
        return;
    s->budget_check_ms = now;
    for (struct sn_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->closing || c->is_peer)
            continue;
        int late = now - c->created_ms > RD_AUTH_DEADLINE_MS;
        int idle = s->cfg.idle_timeout_s && now - c->last_input_ms > (uint64_t)s->cfg.idle_timeout_s * 1000;
        /* frames without authentication, a connection that never said anything,
         * or one accepted over the client budget: the deadline; RESP clients: --timeout */
        int unauth_frames = c->proto != SN_PROTO_RESP && !c->peer_authed;
        if ((late && (unauth_frames || c->over_budget)) || idle) {
            if (rd_auth_log_once(c->addr))
                rd_info("closing %s: %s (logged once per address)", c->addr,
                        idle ? "idle past --timeout" : "did not authenticate in time");
            sn_conn_close(s, c);
        }
    }
}

static void sn_reply_error(struct sn_node *s, struct sn_conn *c, uint32_t code, const char *text)
{
    if (sn_send_error(&c->out, s->epoch, code, text) < 0)
        rd_panic("out of memory for a reply");
}

/* ------------------------------------------------------------ hot log flush */

static void sn_send_acks(struct sn_node *s)
{
    for (struct sn_conn *c = s->conns; c; c = c->next) {
        if (!c->ack_wait || c->ack_gen > s->done_gen || c->closing)
            continue;
        c->ack_wait = 0;
        if (c->ack_epoch < s->epoch) {
            /* N5: the epoch moved on while these records were being flushed: an
             * old writer must not count this node toward its quorum. */
            sn_reply_error(s, c, SN_ERR_STALE_EPOCH, "epoch changed before the write was acknowledged");
            continue;
        }
        struct sn_ack a = {.scl = s->st.scl, .durable_lsn = s->st.durable_max, .epoch = s->epoch};
        if (sn_send_ack(&c->out, s->epoch, &a) < 0)
            rd_panic("out of memory for an ACK");
        trace_lsn_reached(TRACE_PEER_ACKED, 0, a.scl, a.durable_lsn); /* issue 13 */
    }
}

/*
 * N19: the ACK linked to the durable write. When a flight starts, the one
 * writer connection whose ACK is due exactly at that flight, with nothing
 * else queued or in flight on it, gets its ACK now, as a send linked to the
 * write (IOSQE_IO_LINK): the kernel issues it only if the write succeeds (a
 * failed or short write cancels it: N1), and the ACK goes out in the same
 * wake-up as the write's completion. Its SCL is the one the flight reaches
 * (every record held now that is not durable is in this flight), its
 * epoch the node's. Until its send completes, a frame that could raise the
 * epoch or truncate (EPOCH, TRUNCATE, any frame of a newer epoch) is not
 * processed: its connection is parked (N5: no ACK of an older epoch goes
 * out after the node answered or persisted a newer one). The send runs on
 * the connection's own send_io (one send per connection, C11), with this
 * node's handler in front of the connection layer's.
 */
static void sn_on_lack_sent(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_conn *c = (struct sn_conn *)((char *)io - offsetof(struct sn_conn, send_io));
    struct sn_node *s = c->node;
    rd_assert(s->lack_conn == c && c->lack_saved != NULL);
    io->on_cqe = c->lack_saved;
    c->lack_saved = NULL;
    s->lack_conn = NULL;
    for (struct sn_conn *p = s->conns; p; p = p->next)
        if (p->parked) {
            p->parked = 0;
            sn_mark_ready(s, p);
        }
    struct io_uring_cqe r = *cqe;
    if (r.res >= 0 && (size_t)r.res < c->sending.len)
        r.res = -EPIPE; /* never finish an old ACK after unparking: the link closes (the writer reconnects) */
    if (r.res > 0)
        trace_lsn_reached(TRACE_PEER_ACKED, 0, s->lack_scl, s->lack_dmax); /* issue 13: the linked ACK went out */
    io->on_cqe(io, &r); /* the connection layer: next send, or close on an error (-ECANCELED: the write failed) */
}

/* The connection that gets this flight's ACK linked to its write, or NULL. */
static struct sn_conn *sn_lack_pick(struct sn_node *s)
{
    if (!s->link_acks || s->lack_conn != NULL)
        return NULL;
    for (struct sn_conn *c = s->conns; c; c = c->next)
        if (c->ack_wait && c->ack_gen == s->flight_gen && c->ack_epoch == s->epoch && !c->closing &&
            !c->close_after_send && !c->send_in_flight && c->out.len == 0 && c->fd >= 0)
            return c;
    return NULL;
}

/* Queues c's ACK as a send linked to the write SQE just prepared. */
static void sn_lack_prep(struct sn_node *s, struct sn_conn *c)
{
    uint64_t dmax = s->st.durable_max;
    for (size_t i = 0; i < s->nflight; i++)
        dmax = RD_MAX(dmax, s->flight[i].lsn);
    struct sn_ack a = {.scl = sn_store_scl_if_held_durable(&s->st), .durable_lsn = dmax, .epoch = s->epoch};
    s->lack_scl = a.scl;
    s->lack_dmax = a.durable_lsn;
    s->lack_gen = s->flight_gen;
    if (sn_send_ack(&c->out, s->epoch, &a) < 0)
        rd_panic("out of memory for an ACK");
    struct rd_buf t = c->sending; /* as rd_conn_flush does (C11): out becomes the in-flight send */
    c->sending = c->out;
    c->out = t;
    c->out.len = 0;
    c->sending_off = 0;
    c->lack_saved = c->send_io.on_cqe;
    c->send_io.on_cqe = sn_on_lack_sent;
    struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &c->send_io);
    io_uring_prep_send(sqe, c->fd, c->sending.data, c->sending.len, MSG_NOSIGNAL);
    c->send_in_flight = 1;
    c->ack_wait = 0; /* sn_send_acks has nothing more to send it for this flight */
    s->lack_conn = c;
    s->lack_ms = rd_now_ms();
    s->stats.linked_acks++;
}

/* A frame parked behind a linked ACK whose send does not complete (the
 * writer stopped reading and its socket is full): cancel that send (the
 * connection then closes), so an epoch change never waits for long. */
static void sn_lack_tick(struct sn_node *s, uint64_t now)
{
    if (s->lack_conn == NULL || s->flight_active || now - s->lack_ms < SN_LACK_PARK_MAX_MS)
        return;
    int parked = 0;
    for (struct sn_conn *c = s->conns; c && !parked; c = c->next)
        parked = c->parked;
    if (!parked)
        return;
    rd_warn("the linked ACK to %s has not gone out for %llu ms while an epoch change waits: cancelling it",
            s->lack_conn->addr, (unsigned long long)(now - s->lack_ms));
    struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, NULL);
    io_uring_prep_cancel(sqe, &s->lack_conn->send_io, 0);
    s->lack_ms = now; /* again after another bound, if the send is still there */
}

/* The flight's bytes are durable (its fdatasync, or its RWF_DSYNC write,
 * completed): its records become durable, the SCL advances, ACKs go out (N1). */
static void sn_flight_durable(struct sn_node *s)
{
    trace_lsns_hit(TRACE_PEER_FSYNCED, 0, s->flight, s->nflight, sizeof(*s->flight), offsetof(struct sn_pend, lsn), s->hl_flight.len); /* issue 13 */
    uint64_t max = s->st.durable_max;
    for (size_t i = 0; i < s->nflight; i++) {
        struct sn_rec *x = sn_store_at(&s->st, s->flight[i].idx, s->flight[i].lsn);
        if (x == NULL || x->hl_off != s->flight[i].off)
            continue; /* truncated while in flight */
        x->durable = 1;
        max = RD_MAX(max, x->lsn);
    }
    s->st.durable_max = max;
    struct sn_seg *g = sn_seg_find(s, SN_HL_VSEG(s->flight_off));
    rd_assert(g != NULL); /* a segment is deleted only when it holds no record in flight */
    g->size = SN_HL_FOFF(s->flight_off) + s->hl_flight.len;
    if (s->flight_direct) {
        g->zeroed = RD_MAX(g->zeroed, s->flight_woff + s->flight_wlen);
        if (s->tail_seg == g->no) { /* still the active segment: its new partial last block */
            uint32_t tl = (uint32_t)(g->size % SN_DIO_ALIGN);
            uint64_t toff = g->size - tl;
            rd_assert(toff >= s->flight_woff && g->size <= s->flight_woff + s->flight_wlen);
            memcpy(s->tail, s->dio + (toff - s->flight_woff), tl);
            s->tail_off = toff;
            s->tail_len = tl;
        }
    }
    s->stats.flushes++;
    s->stats.fsyncs++;
    s->nflight = 0;
    rd_buf_reset(&s->hl_flight);
    s->flight_active = 0;
    s->done_gen = s->flight_gen;
    sn_seg_settle(s, g);
    sn_store_advance(&s->st);
    if (s->lack_gen == s->done_gen) { /* N19: the linked ACK's SCL is reached (N1, N3) */
        rd_assert(s->st.scl >= s->lack_scl);
        s->lack_gen = 0;
    }
    sn_send_acks(s);
}

static void sn_on_write_done(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_node *s = (struct sn_node *)((char *)io - offsetof(struct sn_node, write_io));
    if (s->flight_direct) {
        /* N12: this write is the durability point (RWF_DSYNC): it stands for the fdatasync.
         * RD_FAULT=sn_fsync:N made the Nth fail for real (sn_flush_kick): its linked ACK was cancelled. */
        int res = s->flight_fault ? -EIO : cqe->res;
        if (res < 0) /* never retried, never acknowledged */
            rd_panic("could not fdatasync the hot log in \"%s\": its O_DIRECT|RWF_DSYNC write at offset %llu "
                     "failed: %s",
                     s->dir, (unsigned long long)s->flight_woff, strerror(-res));
        if ((uint64_t)res != s->flight_wlen)
            rd_panic("short write to the hot log in \"%s\" (%d of %llu bytes at offset %llu)", s->dir, res,
                     (unsigned long long)s->flight_wlen, (unsigned long long)s->flight_woff);
        s->stats.dsync_writes++;
        sn_flight_durable(s);
        return;
    }
    if (cqe->res < 0)
        rd_panic("could not write the hot log in \"%s\" at offset %llu: %s", s->dir,
                 (unsigned long long)s->flight_off, strerror(-cqe->res));
    if ((size_t)cqe->res != s->hl_flight.len)
        rd_panic("short write to the hot log in \"%s\" (%d of %zu bytes at offset %llu)", s->dir, cqe->res,
                 s->hl_flight.len, (unsigned long long)s->flight_off);
}

static void sn_on_sync_done(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_node *s = (struct sn_node *)((char *)io - offsetof(struct sn_node, sync_io));
    int res = cqe->res >= 0 && rd_fault("sn_fsync") ? -EIO : cqe->res; /* tests: RD_FAULT=sn_fsync:N */
    if (res < 0) /* PostgreSQL's rule: never retry an fsync, never ack */
        rd_panic("could not fdatasync the hot log in \"%s\": %s", s->dir, strerror(-res));
    sn_flight_durable(s);
}

/* N12: keeps SN_ZFILL_AHEAD bytes of zeros, written and durable, ahead of the
 * appends of the active segment (up to just past its sealing size), so an
 * append is an overwrite of allocated blocks: no block allocation, no size
 * change, nothing for the journal, and io_uring issues it inline. Never over
 * a range a flight is writing; a flight into a range being zeroed waits. */
static void sn_zfill_kick(struct sn_node *s)
{
    if (!s->direct || s->zfill_active || s->nsegs == 0)
        return;
    struct sn_seg *g = &s->segs[s->nsegs - 1];
    if (g->dfd < 0)
        return;
    uint64_t want = RD_MIN(sn_dio_up(SN_HL_FOFF(s->hl_end)) + SN_ZFILL_AHEAD,
                           sn_dio_up(s->seg_limit + (64u << 10)));
    uint64_t from = sn_dio_up(g->zeroed);
    if (s->flight_active && SN_HL_VSEG(s->flight_off) == g->no)
        from = RD_MAX(from, s->flight_woff + s->flight_wlen);
    if (from >= want)
        return;
    s->zfill_seg = g->no;
    s->zfill_off = from;
    s->zfill_len = SN_ZFILL_CHUNK;
    s->zfill_active = 1;
    struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &s->zfill_io);
    io_uring_prep_write(sqe, g->dfd, s->zeros, SN_ZFILL_CHUNK, from);
    sqe->rw_flags = RWF_DSYNC;
}

static void sn_on_zfill_done(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_node *s = (struct sn_node *)((char *)io - offsetof(struct sn_node, zfill_io));
    s->zfill_active = 0;
    if (cqe->res < 0 || (uint64_t)cqe->res != s->zfill_len)
        rd_panic("could not write zeros ahead of the hot log in \"%s\" (segment %llu, offset %llu): %s", s->dir,
                 (unsigned long long)s->zfill_seg, (unsigned long long)s->zfill_off,
                 cqe->res < 0 ? strerror(-cqe->res) : "short write");
    s->stats.zfill_bytes += s->zfill_len;
    struct sn_seg *g = sn_seg_find(s, s->zfill_seg);
    if (g != NULL) { /* else trimmed meanwhile */
        g->zeroed = RD_MAX(g->zeroed, s->zfill_off + s->zfill_len);
        sn_seg_settle(s, g);
    }
}

/* Starts the next group flush if none is in flight (one per loop turn). */
static void sn_flush_kick(struct sn_node *s)
{
    if (s->flight_active) {
        sn_zfill_kick(s);
        return;
    }
    if (s->hl_pending.len == 0) {
        /* Nothing new: everything before is durable, so the pending generation is done. */
        s->done_gen = s->next_gen++;
        sn_send_acks(s);
        sn_zfill_kick(s);
        return;
    }
    struct sn_seg *g = sn_seg_find(s, SN_HL_VSEG(s->pend_off));
    rd_assert(g != NULL);
    uint64_t woff = 0, wlen = 0;
    if (g->dfd >= 0) {
        /* N12: whole blocks from the start of the partial last one, zero padded. */
        rd_assert(s->tail_seg == g->no && s->tail_off + s->tail_len == SN_HL_FOFF(s->pend_off));
        woff = s->tail_off;
        wlen = sn_dio_up(s->tail_len + s->hl_pending.len);
        if (s->zfill_active && s->zfill_seg == g->no && woff < s->zfill_off + s->zfill_len &&
            s->zfill_off < woff + wlen)
            return; /* the zeros being written there land first; the loop kicks again */
    }
    struct rd_buf tb = s->hl_flight;
    s->hl_flight = s->hl_pending;
    s->hl_pending = tb;
    rd_buf_reset(&s->hl_pending);
    struct sn_pend *tp = s->flight;
    size_t tc = s->flight_cap;
    s->flight = s->pend;
    s->flight_cap = s->pend_cap;
    s->nflight = s->npend;
    s->pend = tp;
    s->pend_cap = tc;
    s->npend = 0;
    s->flight_off = s->pend_off;
    rd_assert(s->flight_off + s->hl_flight.len == s->hl_end);
    s->pend_off = s->hl_end;
    s->flight_fd = g->fd;
    s->flight_gen = s->next_gen++;
    s->flight_active = 1;
    s->flight_direct = g->dfd >= 0;
    trace_lsns_hit(TRACE_PEER_WRITTEN, 0, s->flight, s->nflight, sizeof(*s->flight), offsetof(struct sn_pend, lsn), s->hl_flight.len); /* issue 13 */
    if (s->flight_direct) {
        if (wlen > s->dio_cap) {
            size_t cap = s->dio_cap ? s->dio_cap : (1u << 20);
            while (cap < wlen)
                cap *= 2;
            void *p = NULL;
            if (posix_memalign(&p, SN_DIO_ALIGN, cap) != 0)
                rd_panic("out of memory for the hot-log write buffer (%zu bytes)", cap);
            free(s->dio);
            s->dio = p;
            s->dio_cap = cap;
        }
        memcpy(s->dio, s->tail, s->tail_len);
        memcpy(s->dio + s->tail_len, s->hl_flight.data, s->hl_flight.len);
        memset(s->dio + s->tail_len + s->hl_flight.len, 0, wlen - s->tail_len - s->hl_flight.len);
        s->flight_woff = woff;
        s->flight_wlen = wlen;
        /* tests: RD_FAULT=sn_fsync:N fails the Nth durable write for real (a bad descriptor), so the
         * kernel cancels what is linked to it (N1, N19) */
        s->flight_fault = rd_fault("sn_fsync");
        struct sn_conn *lc = sn_lack_pick(s);
        if (lc != NULL && io_uring_sq_space_left(&s->loop.ring) < 2)
            rd_loop_submit(&s->loop); /* the write and its linked send go in one submission */
        struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &s->write_io);
        io_uring_prep_write(sqe, s->flight_fault ? -1 : g->dfd, s->dio, (unsigned)wlen, woff);
        sqe->rw_flags = RWF_DSYNC;
        if (lc != NULL) {
            sqe->flags |= IOSQE_IO_LINK;
            sn_lack_prep(s, lc);
        }
    } else {
        struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &s->write_io);
        io_uring_prep_write(sqe, s->flight_fd, s->hl_flight.data, (unsigned)s->hl_flight.len,
                            SN_HL_FOFF(s->flight_off));
        sqe->flags |= IOSQE_IO_LINK;
        sqe = rd_loop_sqe(&s->loop, &s->sync_io);
        io_uring_prep_fsync(sqe, s->flight_fd, IORING_FSYNC_DATASYNC);
    }
    sn_zfill_kick(s);
}

/* ------------------------------------------------------------ accepting records */

static int sn_rec_valid(const struct redo_rec *r)
{
    if (r->lsn == 0 || r->body_len > REDO_MAX_BODY)
        return 0;
    if (r->type == REDO_REC_COMMIT)
        return r->page_id == ENGINE_PAGE_NONE;
    if (r->page_id > SN_MAX_PAGE_ID)
        return 0;
    /* What can be checked without the page; applying checks the rest (logical records, E18). */
    return engine_rec_validate(r->type, r->body, r->body_len) == 0;
}

/*
 * Validates a whole batch, then appends each record not held yet to the
 * pending hot-log buffer (N2: each LSN once). src_epoch is the epoch the
 * records were delivered under (stored with each). Returns the number of new
 * records, or RD_ECORRUPT (nothing stored) with *why set.
 */
static int sn_accept_batch(struct sn_node *s, uint64_t src_epoch, const uint8_t *p, size_t n, uint64_t *vdl,
                           const char **why)
{
    struct redo_batch_hdr h;
    if (redo_batch_parse_hdr(p, n, &h) < 0) {
        *why = "redo batch header is invalid";
        return RD_ECORRUPT;
    }
    *vdl = h.vdl;
    if (h.nrecords == 0)
        return 0;
    size_t off = REDO_BATCH_HDR_SIZE;
    uint64_t prev = h.first_lsn - 1;
    struct redo_rec r;
    uint32_t count = 0;
    int rc;
    /* One decoding pass: the records (bodies point into p) are kept for the
     * append pass, which runs only if every one of them is valid. */
    if (h.nrecords > s->dec_cap) {
        size_t cap = s->dec_cap ? s->dec_cap : 256;
        while (cap < h.nrecords)
            cap *= 2;
        struct redo_rec *nd = realloc(s->dec, cap * sizeof(*nd));
        if (nd == NULL)
            rd_panic("out of memory for decoding a redo batch (%u records)", h.nrecords);
        s->dec = nd;
        s->dec_cap = cap;
    }
    while ((rc = redo_batch_next(p, n, &off, &prev, &r)) == 1) {
        if (count >= h.nrecords)
            break; /* more records than the header says */
        if (!sn_rec_valid(&r)) {
            *why = "redo record has an invalid page id, type or body";
            return RD_ECORRUPT;
        }
        s->dec[count++] = r;
    }
    if (rc != 0 || count != h.nrecords) {
        *why = "redo batch records do not decode";
        return RD_ECORRUPT;
    }
    int added = 0;
    for (uint32_t i = 0; i < count; i++) {
        r = s->dec[i];
        if (sn_node_trunc_refuses(s, src_epoch, r.lsn)) {
            s->stats.truncated_refused++;
            continue;
        }
        if (r.lsn <= s->st.scl || sn_store_get(&s->st, r.lsn) != NULL) { /* held (ST2), maybe trimmed */
            s->stats.duplicates++;
            continue;
        }
        if (s->hl_pending.len == 0 && SN_HL_FOFF(s->hl_end) >= s->seg_limit)
            sn_seg_rotate(s);
        uint64_t at = s->hl_end;
        int len = sn_hotlog_rec_append(&s->hl_pending, src_epoch, &r);
        if (len < 0)
            rd_panic("could not encode a hot-log record (lsn %llu): %s", (unsigned long long)r.lsn,
                     rd_strerror(len));
        if (sn_store_add(&s->st, &r, src_epoch, at, (uint32_t)len, 0) < 0)
            rd_panic("out of memory for records");
        if (s->npend == s->pend_cap) {
            size_t cap = s->pend_cap ? s->pend_cap * 2 : 1024;
            struct sn_pend *np = realloc(s->pend, cap * sizeof(*np));
            if (np == NULL)
                rd_panic("out of memory for the flush queue");
            s->pend = np;
            s->pend_cap = cap;
        }
        s->pend[s->npend++] = (struct sn_pend){r.lsn, at, (uint32_t)(s->st.nrecs - 1)};
        s->hl_end += (uint64_t)len;
        s->hl_since_coalesce += (uint64_t)len;
        s->last_append_ms = rd_now_ms();
        struct sn_seg *g = &s->segs[s->nsegs - 1];
        if (r.lsn > g->max_lsn)
            g->max_lsn = r.lsn;
        added++;
    }
    s->stats.records_received += count;
    return added;
}

/* Adopts a higher epoch from a writer (persisted before anything else). */
static void sn_adopt_epoch(struct sn_node *s, uint64_t epoch, const char *why)
{
    if (epoch <= s->epoch)
        return;
    rd_assert(s->lack_conn == NULL); /* N19: frames that raise the epoch wait for the linked ACK */
    rd_info("adopting epoch %llu (was %llu): %s", (unsigned long long)epoch, (unsigned long long)s->epoch, why);
    s->epoch = epoch;
    sn_meta_persist(s);
}

static int sn_refuse_stale(struct sn_node *s, struct sn_conn *c, uint64_t epoch, const char *what)
{
    if (epoch >= s->epoch)
        return 0;
    s->stats.stale_refused++;
    if (c->stale_logged != epoch) {
        rd_warn("refusing a %s from epoch %llu: this node holds epoch %llu (%s)", what,
                (unsigned long long)epoch, (unsigned long long)s->epoch, c->addr);
        c->stale_logged = epoch;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "stale epoch %llu: this node holds epoch %llu", (unsigned long long)epoch,
             (unsigned long long)s->epoch);
    sn_reply_error(s, c, SN_ERR_STALE_EPOCH, msg);
    return 1;
}

static void sn_on_write(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *fh, const uint8_t *p,
                        size_t n)
{
    s->stats.writes++;
    if (sn_refuse_stale(s, c, fh->epoch, "write")) /* N4 */
        return;
    sn_adopt_epoch(s, fh->epoch, "a write from a newer writer");
    sn_trace_write(p, n); /* issue 13 */
    const char *why = NULL;
    uint64_t vdl = 0;
    int rc = sn_accept_batch(s, fh->epoch, p, n, &vdl, &why);
    if (rc < 0) {
        rd_warn("write from %s refused: %s; closing", c->addr, why);
        sn_reply_error(s, c, SN_ERR_PROTO, why);
        c->close_after_send = 1;
        return;
    }
    if (vdl > s->vdl_seen)
        s->vdl_seen = vdl;
    c->ack_wait = 1;
    c->ack_gen = s->next_gen; /* the flush that takes the pending buffer */
    c->ack_epoch = fh->epoch;
}

/* ------------------------------------------------------------ page store */

/* Reads one record's bytes back from the hot log and checks them (N7). */
static int sn_read_rec(struct sn_node *s, const struct sn_rec *x, uint8_t *buf, struct redo_rec *r)
{
    struct sn_seg *g = sn_seg_find(s, SN_HL_VSEG(x->hl_off));
    ssize_t got = g ? pread(g->fd, buf, x->hl_len, (off_t)SN_HL_FOFF(x->hl_off)) : -1;
    if (g == NULL)
        errno = ENOENT; /* not expected: trimmed records leave the store with their segment */
    if (got != (ssize_t)x->hl_len) {
        rd_error("could not read the hot-log record of lsn %llu at offset %llu: %s", (unsigned long long)x->lsn,
                 (unsigned long long)x->hl_off, got < 0 ? strerror(errno) : "short read");
        return got < 0 ? -errno : RD_ECORRUPT;
    }
    uint64_t epoch;
    size_t used;
    if (sn_hotlog_rec_decode(buf, x->hl_len, &epoch, r, &used) != 1 || r->lsn != x->lsn) {
        s->stats.corrupt_detected++;
        rd_error("hot-log record of lsn %llu at offset %llu failed its checksum: not served",
                 (unsigned long long)x->lsn, (unsigned long long)x->hl_off);
        return RD_ECORRUPT;
    }
    return 0;
}

static int sn_lsn_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sn_page_write(struct sn_node *s, uint32_t page_id, uint8_t *page)
{
    engine_page_seal(page);
    ssize_t w = pwrite(s->pages_fd, page, ENGINE_PAGE_SIZE, (off_t)page_id * ENGINE_PAGE_SIZE);
    if (w != (ssize_t)ENGINE_PAGE_SIZE)
        rd_panic("could not write page %u to the page store in \"%s\": %s", page_id, s->dir,
                 w < 0 ? strerror(errno) : "short write");
    sn_pcache_put(&s->pcache, page_id, page); /* N18: what the store now holds */
}

/* Rebuilds a corrupt page-store image from the hot log: possible only while
 * the node holds every record 1..coalesced_lsn (nothing trimmed yet). */
static int sn_page_repair(struct sn_node *s, uint32_t page_id, uint8_t *page)
{
    if (s->st.scl < s->st.coalesced_lsn || s->st.trimmed_lsn > 0)
        return RD_ECORRUPT;
    size_t n = 0, cap = 64;
    uint64_t *lsns = malloc(cap * sizeof(*lsns));
    uint8_t *buf = malloc(SN_HOTLOG_MAX_REC);
    if (lsns == NULL || buf == NULL)
        rd_panic("out of memory for a page repair");
    for (size_t i = 0; i < s->st.nrecs; i++) {
        const struct sn_rec *x = &s->st.recs[i];
        if (x->page_id != page_id || x->lsn > s->st.coalesced_lsn)
            continue;
        if (n == cap) {
            cap *= 2;
            lsns = realloc(lsns, cap * sizeof(*lsns));
            if (lsns == NULL)
                rd_panic("out of memory for a page repair");
        }
        lsns[n++] = x->lsn;
    }
    qsort(lsns, n, sizeof(*lsns), sn_lsn_cmp);
    memset(page, 0, ENGINE_PAGE_SIZE);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct redo_rec r;
        rc = sn_read_rec(s, sn_store_get(&s->st, lsns[i]), buf, &r);
        if (rc == 0)
            rc = engine_page_apply(page, r.type, r.body, r.body_len, r.lsn);
    }
    free(lsns);
    free(buf);
    if (rc < 0)
        return rc;
    if (n > 0)
        sn_page_write(s, page_id, page);
    if (fdatasync(s->pages_fd) < 0)
        rd_panic("could not fdatasync the page store in \"%s\": %s", s->dir, strerror(errno));
    s->stats.repaired++;
    rd_warn("page %u rebuilt from %zu hot-log records (its page-store image was corrupt)", page_id, n);
    return 0;
}

/* Loads a page-store image, verified (N7); repairs it from the hot log when
 * it fails. RD_ECORRUPT if it can be neither read nor repaired. */
static int sn_page_load(struct sn_node *s, uint32_t page_id, uint8_t *page)
{
    struct sn_page_hist *h = sn_store_page(&s->st, page_id);
    if (h && h->corrupt)
        return RD_ECORRUPT;
    if (sn_pcache_get(&s->pcache, page_id, page)) /* N18: written or verified by this process */
        return 0;
    ssize_t got = pread(s->pages_fd, page, ENGINE_PAGE_SIZE, (off_t)page_id * ENGINE_PAGE_SIZE);
    if (got < 0)
        rd_panic("could not read page %u from the page store in \"%s\": %s", page_id, s->dir, strerror(errno));
    if (got < (ssize_t)ENGINE_PAGE_SIZE)
        memset(page + got, 0, ENGINE_PAGE_SIZE - (size_t)got); /* never written */
    if (engine_page_verify(page) == 0) {
        sn_pcache_put(&s->pcache, page_id, page);
        return 0;
    }
    s->stats.corrupt_detected++;
    rd_error("page %u in the page store of \"%s\" failed its checksum: rebuilding it from the hot log", page_id,
             s->dir);
    if (sn_page_repair(s, page_id, page) == 0)
        return 0;
    rd_error("page %u cannot be rebuilt (records below lsn %llu are missing): it will answer CORRUPT", page_id,
             (unsigned long long)s->st.coalesced_lsn);
    h = sn_store_page(&s->st, page_id);
    if (h)
        h->corrupt = 1;
    return RD_ECORRUPT;
}

/* Checks every page of the page store at start-up (bounded: 1 GiB). */
static void sn_pages_verify_all(struct sn_node *s)
{
    struct stat sb;
    if (fstat(s->pages_fd, &sb) < 0)
        rd_panic("could not stat the page store: %s", strerror(errno));
    uint64_t npages = (uint64_t)sb.st_size / ENGINE_PAGE_SIZE;
    if (npages > (1u << 17))
        npages = 1u << 17;
    uint8_t *page = malloc(ENGINE_PAGE_SIZE);
    if (page == NULL)
        rd_panic("out of memory");
    for (uint64_t i = 0; i < npages; i++) {
        if (pread(s->pages_fd, page, ENGINE_PAGE_SIZE, (off_t)(i * ENGINE_PAGE_SIZE)) != (ssize_t)ENGINE_PAGE_SIZE)
            break;
        if (engine_page_verify(page) != 0)
            sn_page_load(s, (uint32_t)i, page); /* logs, counts, repairs or marks */
    }
    free(page);
}

/* ------------------------------------------------------------ coalesce and GC */

static uint64_t sn_coalesce_target(const struct sn_node *s)
{
    uint64_t t = RD_MIN(s->st.scl, s->vdl_seen); /* N8: never above VDL: truncation cannot undo it */
    uint64_t rp = s->min_read_point;
    if (rp == 0) /* no read point received: keep a window of history */
        rp = s->st.scl > SN_HISTORY_RECORDS ? s->st.scl - SN_HISTORY_RECORDS : 0;
    if (s->st.hot_records < SN_MAX_HOT_RECORDS)
        t = RD_MIN(t, rp);
    return RD_MIN(t, s->st.coalesced_lsn + SN_COALESCE_BATCH);
}

/* Whether a coalescing round is due: every SN_COALESCE_INTERVAL_MS when no
 * record arrived for SN_COALESCE_QUIET_MS, every coalesce_busy_ms while they
 * keep arriving (a round's cost is mostly per page, and a hot page is read,
 * changed and written once per round), and sooner once 8 MiB of hot log
 * arrived or SN_COALESCE_DUE_RECORDS records can be coalesced. */
static int sn_coalesce_due(const struct sn_node *s, uint64_t now)
{
    uint64_t since = now - s->last_coalesce_ms;
    int quiet = now - s->last_append_ms >= SN_COALESCE_QUIET_MS;
    if (since >= (quiet ? SN_COALESCE_INTERVAL_MS : s->coalesce_busy_ms) || s->hl_since_coalesce >= SN_COALESCE_DUE_BYTES)
        return 1;
    uint64_t t = sn_coalesce_target(s);
    return t > s->st.coalesced_lsn && t - s->st.coalesced_lsn >= SN_COALESCE_DUE_RECORDS && !s->coalesce_blocked;
}

struct sn_touched { uint32_t page_id; uint8_t *img; };

static void sn_coalesce(struct sn_node *s)
{
    uint64_t from = s->st.coalesced_lsn, to = sn_coalesce_target(s);
    if (to <= from || s->coalesce_blocked)
        return;
    if (s->st.hot_records >= SN_MAX_HOT_RECORDS && to > s->min_read_point && s->min_read_point)
        rd_warn("coalescing past the min read point %llu: %llu records in memory",
                (unsigned long long)s->min_read_point, (unsigned long long)s->st.hot_records);
    struct sn_touched *t = calloc(SN_COALESCE_MAX_PAGES, sizeof(*t));
    /* page id -> index in t, open addressing (2x the most pages a round can touch) */
    enum { SLOTS = 2 * SN_COALESCE_MAX_PAGES };
    _Static_assert((SLOTS & (SLOTS - 1)) == 0, "a power of two");
    int32_t *slot = malloc(SLOTS * sizeof(*slot));
    size_t nt = 0;
    if (t == NULL || slot == NULL)
        rd_panic("out of memory for coalescing");
    if (s->co_imgs == NULL) { /* kept for every later round: no malloc/free (and page faults) per page */
        void *m = mmap(NULL, (size_t)SN_COALESCE_MAX_PAGES * ENGINE_PAGE_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            rd_panic("out of memory for coalescing: %s", strerror(errno));
        s->co_imgs = m;
    }
    memset(slot, 0xff, SLOTS * sizeof(*slot)); /* -1: empty */
    int failed = 0;
    uint64_t cpl = s->coalesced_cpl;
    for (uint64_t lsn = from + 1; lsn <= to && !failed; lsn++) {
        struct sn_rec *x = sn_store_get(&s->st, lsn);
        rd_assert(x != NULL && x->durable && x->body != NULL); /* ST2, ST4 */
        if (x->page_id == ENGINE_PAGE_NONE) {
            if (x->flags & REDO_FLAG_CPL)
                cpl = x->lsn;
            continue;
        }
        size_t h = (x->page_id * 2654435761u) & (SLOTS - 1);
        while (slot[h] >= 0 && t[slot[h]].page_id != x->page_id)
            h = (h + 1) & (SLOTS - 1);
        size_t k = slot[h] >= 0 ? (size_t)slot[h] : nt;
        if (k == nt) {
            if (nt == SN_COALESCE_MAX_PAGES) { /* the rest waits for the next round */
                to = lsn - 1;
                break;
            }
            slot[h] = (int32_t)nt;
            t[nt].page_id = x->page_id;
            t[nt].img = s->co_imgs + (size_t)nt * ENGINE_PAGE_SIZE;
            nt++;
            if (sn_page_load(s, x->page_id, t[k].img) < 0) {
                failed = 1;
                break;
            }
        }
        if (x->flags & REDO_FLAG_CPL)
            cpl = x->lsn;
        if (x->lsn <= engine_page_lsn(t[k].img))
            continue; /* already applied (a coalesce that outran the meta file) */
        if (engine_page_apply(t[k].img, x->type, x->body, x->body_len, x->lsn) < 0) {
            rd_error("record lsn %llu does not apply to page %u: coalescing stops", (unsigned long long)lsn,
                     x->page_id);
            failed = 1;
        }
    }
    if (failed) {
        s->coalesce_blocked = 1;
        rd_error("coalescing is blocked at lsn %llu (a corrupt page); GetPage of other pages still works",
                 (unsigned long long)from);
    } else {
        for (size_t k = 0; k < nt; k++)
            sn_page_write(s, t[k].page_id, t[k].img);
        s->stats.fsyncs += nt ? 1 : 0;
        if (nt && fdatasync(s->pages_fd) < 0)
            rd_panic("could not fdatasync the page store in \"%s\": %s", s->dir, strerror(errno));
        sn_store_gc(&s->st, to); /* pages are durable; now the meta file may say so */
        trace_lsn_reached(TRACE_COALESCED, 0, to, nt); /* issue 13 */
        s->coalesced_cpl = cpl;
        sn_meta_persist(s);
    }
    free(t);
    free(slot);
}

/*
 * The trim point (N10): min(coalesced_lsn, min read point, the SCL of every
 * peer as last learned by gossip). A peer never heard from since this process
 * started counts as SCL 0: it holds back everything until it answers or the
 * hot log outgrows --hotlog-keep-mb. Also records, for INFO, what holds it.
 */
static uint64_t sn_trim_point(struct sn_node *s)
{
    if (s->min_read_point == 0) {
        s->trim_local = s->trim_point = 0;
        snprintf(s->trim_held_by, sizeof(s->trim_held_by), "no_read_point");
        return 0;
    }
    uint64_t t = s->st.coalesced_lsn;
    const char *why = "coalesced_lsn";
    if (s->min_read_point < t) {
        t = s->min_read_point;
        why = "min_read_point";
    }
    s->trim_local = t;
    int held = -1;
    for (size_t i = 0; i < s->npeers; i++) {
        const struct sn_peer *p = &s->peers[i];
        uint64_t ps = p->heard ? p->scl : 0;
        if (ps < t) {
            t = ps;
            held = (int)i;
        }
    }
    if (held >= 0)
        snprintf(s->trim_held_by, sizeof(s->trim_held_by), "peer %s (%s)", s->peers[held].name,
                 s->peers[held].heard ? "its scl" : "never heard from");
    else
        snprintf(s->trim_held_by, sizeof(s->trim_held_by), "%s", why);
    s->trim_point = t;
    return t;
}

/* Deleting records up to upto leaves behind every peer whose SCL is below
 * it: say so once per peer (INFO peers_given_up, trim_gave_up). */
static void sn_give_up_peers(struct sn_node *s, uint64_t seg_no, uint64_t upto, uint64_t now)
{
    for (size_t i = 0; i < s->npeers; i++) {
        struct sn_peer *p = &s->peers[i];
        uint64_t ps = p->heard ? p->scl : 0;
        if (ps >= upto || p->given_up)
            continue;
        p->given_up = 1;
        s->stats.trim_gave_up++;
        char seen[96];
        if (p->heard)
            snprintf(seen, sizeof(seen), "has scl %llu (last heard %llu ms ago)", (unsigned long long)p->scl,
                     (unsigned long long)(now - p->heard_ms));
        else
            snprintf(seen, sizeof(seen), "was never heard from");
        rd_warn("hot log: %llu bytes held, more than --hotlog-keep-mb allows (%llu MiB): deleting segment %llu "
                "(lsns up to %llu) although peer %s %s; giving up on it: it will catch up by copying pages "
                "from a peer",
                (unsigned long long)sn_hl_bytes(s), (unsigned long long)(s->keep_bytes >> 20),
                (unsigned long long)seg_no, (unsigned long long)upto, p->name, seen);
    }
}

/*
 * Hot-log trimming (N10): deletes whole segments, oldest first, while every
 * record ever appended to the oldest one is <= the trim point. coalesced_lsn
 * in memory is only ever set together with the page-store fdatasync and the
 * meta write that records it (sn_coalesce and sn_copy_finish, synchronous,
 * rd_panic on failure), so those pages are durable and meta says so before a
 * record leaves the log. The segment taking appends is never deleted. Without
 * a read point (none received since the start) nothing is trimmed. A peer's
 * SCL holds trimming back only while the live segments hold at most
 * keep_bytes; beyond, segments below min(coalesced, read point) go anyway
 * (oldest first, until the log is back under keep_bytes) and the peers left
 * behind are logged.
 */
static void sn_hl_trim(struct sn_node *s)
{
    uint64_t point = sn_trim_point(s);
    if (!s->trim_enabled || s->min_read_point == 0)
        return;
    uint64_t now = rd_now_ms();
    while (s->nsegs > 1 && s->segs[0].max_lsn <= s->trim_local) {
        struct sn_seg *g = &s->segs[0];
        if (s->flight_active && SN_HL_VSEG(s->flight_off) == g->no)
            break; /* records in flight are above scl, so not expected; wait anyway */
        if (g->max_lsn > point) { /* a peer still needs some of it */
            if (sn_hl_bytes(s) <= s->keep_bytes)
                break;
            sn_give_up_peers(s, g->no, g->max_lsn, now);
        }
        size_t n = sn_store_trim(&s->st, SN_HL_VOFF(s->segs[1].no, 0), RD_MAX(g->max_lsn, s->st.trimmed_lsn));
        /* CPL records may leave with it: max_cpl must not fall below the coalesced one (truncation). */
        s->st.trimmed_cpl = RD_MAX(s->st.trimmed_cpl, s->coalesced_cpl);
        char path[4200];
        rd_assert(g->sealed);
        sn_hotlog_seg_path(path, sizeof(path), s->dir, g->no, 1);
        if (close(g->fd) < 0 || (g->dfd >= 0 && close(g->dfd) < 0))
            rd_warn("close of \"%s\" failed: %s", path, strerror(errno));
        if (unlink(path) < 0)
            rd_panic("could not delete hot-log segment \"%s\": %s", path, strerror(errno));
        s->stats.fsyncs++;
        if (fsync(s->meta_dir_fd) < 0)
            rd_panic("could not fsync directory \"%s\": %s", s->dir, strerror(errno));
        rd_info("hot log: deleted segment %s (%llu bytes, %zu records, all <= lsn %llu; coalesced %llu, "
                "min read point %llu, trim point %llu held by %s)",
                path, (unsigned long long)g->size, n, (unsigned long long)g->max_lsn,
                (unsigned long long)s->st.coalesced_lsn, (unsigned long long)s->min_read_point,
                (unsigned long long)point, s->trim_held_by);
        s->stats.segments_deleted++;
        s->stats.records_trimmed += n;
        memmove(s->segs, s->segs + 1, (s->nsegs - 1) * sizeof(*s->segs));
        s->nsegs--;
    }
}

/* ------------------------------------------------------------ requests */

static void sn_on_getpage(struct sn_node *s, struct sn_conn *c, const uint8_t *p, size_t n)
{
    struct sn_getpage g;
    if (sn_parse_getpage(p, n, &g) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "GETPAGE payload is malformed");
        c->close_after_send = 1;
        return;
    }
    s->stats.getpage_requests++;
    struct sn_page a = {.req_id = g.req_id, .status = SN_OK};
    static uint8_t page[ENGINE_PAGE_SIZE];
    if (g.read_lsn > s->st.scl) {
        a.status = SN_ERR_NOT_YET;
    } else if (g.read_lsn < s->st.coalesced_lsn) {
        a.status = SN_ERR_TOO_OLD;
    } else if (g.page_id > SN_MAX_PAGE_ID) {
        memset(page, 0, sizeof(page)); /* never written: no record may name it */
        a.page = page;
    } else if (sn_page_load(s, g.page_id, page) < 0) {
        a.status = SN_ERR_CORRUPT;
    } else {
        int rc = sn_store_materialise(&s->st, g.page_id, g.read_lsn, page);
        if (rc == RD_ESTALE) {
            a.status = SN_ERR_TOO_OLD;
        } else if (rc < 0) {
            s->stats.corrupt_detected++;
            rd_error("page %u cannot be built at lsn %llu: %s", g.page_id, (unsigned long long)g.read_lsn,
                     rd_strerror(rc));
            a.status = SN_ERR_CORRUPT;
        } else {
            a.page_lsn = engine_page_lsn(page);
            if (a.page_lsn != 0)
                engine_page_seal(page);
            a.page = page;
        }
    }
    if (sn_send_page(&c->out, s->epoch, &a) < 0)
        rd_panic("out of memory for a reply");
}

static void sn_on_fetch(struct sn_node *s, struct sn_conn *c, const uint8_t *p, size_t n)
{
    struct sn_fetch f;
    if (sn_parse_fetch(p, n, &f) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "FETCH payload is malformed");
        c->close_after_send = 1;
        return;
    }
    s->stats.fetches_served++;
    size_t max_bytes = RD_MIN(RD_MAX(f.max_bytes, 1u), SN_FETCH_MAX_BYTES);
    struct redo_batch b;
    memset(&b, 0, sizeof(b)); /* begin keeps the buffer of a reused batch: start empty */
    redo_batch_begin(&b, f.from_lsn);
    uint8_t *buf = malloc(SN_HOTLOG_MAX_REC);
    if (buf == NULL)
        rd_panic("out of memory");
    uint64_t min_epoch = UINT64_MAX;
    size_t bytes = 0;
    /* A batch is one run of consecutive LSNs: serve the held run from
     * from_lsn. If from_lsn was trimmed from this node's hot log, the run
     * starts above the trimmed LSNs instead: the batch's first LSN tells the
     * requester what this node no longer holds (it only answers what it holds). */
    uint64_t start = f.from_lsn;
    if (start != 0 && start <= s->st.trimmed_lsn && sn_store_get(&s->st, start) == NULL) {
        start = s->st.trimmed_lsn + 1;
        s->stats.fetch_trimmed_answers++;
        redo_batch_begin(&b, start);
    }
    for (uint64_t lsn = start; lsn <= f.to_lsn && lsn != 0; lsn++) {
        struct sn_rec *x = sn_store_get(&s->st, lsn);
        if (x == NULL || !x->durable)
            break;
        if (bytes > 0 && bytes + x->body_len + 32 > max_bytes)
            break;
        struct redo_rec r = {.lsn = x->lsn, .prev_pg_lsn = x->prev_pg_lsn, .page_id = x->page_id,
                             .type = x->type, .flags = x->flags, .body = x->body, .body_len = x->body_len};
        if (x->body == NULL && sn_read_rec(s, x, buf, &r) < 0)
            break; /* N7: a corrupt record is never served */
        if (redo_batch_add(&b, &r) < 0)
            rd_panic("could not build a LOG batch");
        bytes += x->body_len + 32;
        min_epoch = RD_MIN(min_epoch, x->epoch);
    }
    redo_batch_finish(&b, s->vdl_seen);
    /* The LOG frame's epoch is the oldest epoch its records were received
     * under, so the requester can apply its truncation ranges (N6). */
    uint64_t epoch = min_epoch == UINT64_MAX ? s->epoch : min_epoch;
    if (sn_send_log(&c->out, epoch, f.req_id, b.buf.data, b.buf.len) < 0)
        rd_panic("out of memory for a LOG reply");
    redo_batch_free(&b);
    free(buf);
}

static void sn_reply_state(struct sn_node *s, struct sn_conn *c)
{
    struct sn_state st = {.epoch = s->epoch, .scl = s->st.scl, .max_cpl = s->st.max_cpl,
                          .max_lsn = s->st.durable_max, .truncated_above = sn_truncated_above(s)};
    if (sn_send_state(&c->out, s->epoch, &st) < 0)
        rd_panic("out of memory for a reply");
}

static void sn_on_epoch(struct sn_node *s, struct sn_conn *c, const uint8_t *p, size_t n)
{
    uint64_t e;
    if (sn_parse_epoch(p, n, &e) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "EPOCH payload is malformed");
        c->close_after_send = 1;
        return;
    }
    sn_adopt_epoch(s, e, "EPOCH from a new writer"); /* N3: persisted before the answer */
    sn_reply_state(s, c);
}

static void sn_on_truncate(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *fh, const uint8_t *p,
                           size_t n)
{
    struct sn_truncate t;
    if (sn_parse_truncate(p, n, &t) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "TRUNCATE payload is malformed");
        c->close_after_send = 1;
        return;
    }
    if (sn_refuse_stale(s, c, RD_MIN(t.epoch, fh->epoch), "truncation"))
        return;
    if (t.keep_upto_lsn < s->st.coalesced_lsn) {
        rd_error("refusing to truncate above lsn %llu: records up to %llu are already coalesced into pages",
                 (unsigned long long)t.keep_upto_lsn, (unsigned long long)s->st.coalesced_lsn);
        sn_reply_error(s, c, SN_ERR_PROTO, "truncation point is below the coalesced point");
        return;
    }
    if (s->ntrunc == SN_MAX_TRUNC) {
        rd_error("refusing a truncation: %u truncation ranges recorded already", SN_MAX_TRUNC);
        sn_reply_error(s, c, SN_ERR_PROTO, "too many truncation ranges");
        return;
    }
    rd_assert(s->lack_conn == NULL); /* N19: a TRUNCATE waits for the linked ACK (its SCL was foretold) */
    s->epoch = RD_MAX(s->epoch, t.epoch);
    /* Records at hot-log offsets below hl_end with lsn > keep_upto are
     * dropped now and at every restart; later ones are refused if older. */
    s->trunc[s->ntrunc++] = (struct sn_trunc){t.epoch, t.keep_upto_lsn, s->hl_end};
    sn_meta_persist(s);
    uint64_t before = s->st.nrecs;
    sn_store_truncate(&s->st, t.keep_upto_lsn);
    rd_info("truncated above lsn %llu for epoch %llu: %llu records dropped", (unsigned long long)t.keep_upto_lsn,
            (unsigned long long)t.epoch, (unsigned long long)(before - s->st.nrecs));
    sn_reply_state(s, c);
}

static void sn_on_readpoint(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *fh, const uint8_t *p,
                            size_t n)
{
    uint64_t rp;
    if (sn_parse_readpoint(p, n, &rp) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "READPOINT payload is malformed");
        c->close_after_send = 1;
        return;
    }
    if (sn_refuse_stale(s, c, fh->epoch, "read point"))
        return;
    s->min_read_point = rp;
}

/* A lagging node whose next LSN every reachable peer has trimmed cannot catch
 * up by gap fill: say so (log once per LSN, INFO catchup_blocked_lsn). */
static void sn_check_blocked(struct sn_node *s)
{
    uint64_t need = s->st.scl + 1;
    size_t up = 0, trimmed = 0;
    uint64_t lowest = UINT64_MAX;
    for (size_t i = 0; i < s->npeers; i++) {
        const struct sn_peer *p = &s->peers[i];
        if (p->state != SN_PEER_UP)
            continue;
        up++;
        if (p->trimmed_for == need) {
            trimmed++;
            lowest = RD_MIN(lowest, p->holds_from);
        }
    }
    if (up == 0 || trimmed < up) {
        if (s->blocked_lsn && s->blocked_lsn != need)
            rd_info("gap fill: lsn %llu is no longer blocked", (unsigned long long)s->blocked_lsn);
        if (s->blocked_lsn != need)
            s->blocked_lsn = 0;
        return;
    }
    if (s->blocked_lsn == need)
        return;
    s->blocked_lsn = need;
    rd_error("cannot catch up: this node needs lsn %llu but every reachable peer (%zu of %zu) has trimmed it "
             "from its hot log (the lowest they offer is %llu); gap fill cannot bring lsns %llu..%llu, the SCL "
             "stays at %llu. Rebuild this node from a peer's directory (no page copy from peers yet)",
             (unsigned long long)need, up, s->npeers, (unsigned long long)lowest, (unsigned long long)need,
             (unsigned long long)(lowest - 1), (unsigned long long)s->st.scl);
}

static void sn_on_log(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *fh, const uint8_t *p, size_t n)
{
    uint64_t req_id;
    const uint8_t *batch;
    size_t blen;
    if (sn_parse_log(p, n, &req_id, &batch, &blen) < 0) {
        rd_warn("LOG from %s is malformed; closing", c->addr);
        sn_conn_close(s, c);
        return;
    }
    if (!s->fetch_outstanding || req_id != s->fetch_req_id)
        return; /* an answer we gave up on */
    s->fetch_outstanding = 0;
    struct redo_batch_hdr bh;
    if (c->peer >= 0 && redo_batch_parse_hdr(batch, blen, &bh) == 0) {
        struct sn_peer *pe = &s->peers[c->peer];
        if (bh.first_lsn > s->fetch_from) { /* it trimmed [fetch_from, first_lsn) */
            pe->trimmed_for = s->fetch_from;
            pe->holds_from = bh.first_lsn;
        } else {
            pe->trimmed_for = 0;
        }
    }
    const char *why = NULL;
    uint64_t vdl = 0;
    int rc = sn_accept_batch(s, fh->epoch, batch, blen, &vdl, &why);
    if (rc < 0) {
        rd_warn("LOG from peer %s refused: %s; closing", c->addr, why);
        sn_conn_close(s, c);
        return;
    }
    if (fh->epoch >= s->epoch && vdl > s->vdl_seen)
        s->vdl_seen = vdl;
    s->stats.gaps_filled += (uint64_t)rc;
    if (s->hl_repair_pending)
        s->stats.repaired += (uint64_t)rc;
    s->fetch_more = rc > 0;
    if (rc > 0)
        rd_debug("gap fill: %d records from %s", rc, c->addr);
    sn_check_blocked(s);
}

/* ------------------------------------------------------------ gossip (N10) */

static void sn_gossip_fill(const struct sn_node *s, struct sn_gossip *g, uint32_t kind)
{
    *g = (struct sn_gossip){.node_id = s->cfg.node_id, .kind = kind, .scl = s->st.scl,
                            .coalesced_lsn = s->st.coalesced_lsn, .trimmed_lsn = s->st.trimmed_lsn};
}

/* Every SN_GOSSIP_INTERVAL_MS, asks each connected peer for its SCL over
 * this node's own link to it (so the answer names the peer). */
static void sn_gossip_send(struct sn_node *s, uint64_t now)
{
    if (now - s->last_gossip_ms < SN_GOSSIP_INTERVAL_MS)
        return;
    s->last_gossip_ms = now;
    struct sn_gossip g;
    sn_gossip_fill(s, &g, SN_GOSSIP_ASK);
    for (size_t i = 0; i < s->npeers; i++) {
        struct sn_peer *p = &s->peers[i];
        if (p->state != SN_PEER_UP || p->conn == NULL || p->conn->closing)
            continue;
        if (sn_send_gossip(&p->conn->out, s->epoch, &g) < 0)
            rd_panic("out of memory for a GOSSIP");
    }
}

/*
 * GOSSIP. An ask, from any connection, is answered with this node's state;
 * like FETCH it is a read and is answered whatever the asker's epoch. An
 * answer on this node's link to a peer records that peer's SCL (the frame
 * epoch is the peer's). A peer's SCL from any epoch is a safe floor: the trim
 * point is also <= coalesced_lsn, which never passes a VDL, and truncation
 * never goes below the coalesced point (sn_on_truncate refuses it), so
 * records a newer epoch discards are never what holds trimming back. No
 * epoch is adopted from a peer (only writers move epochs, N4).
 */
static void sn_on_gossip(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *fh, const uint8_t *p,
                         size_t n)
{
    struct sn_gossip g;
    if (sn_parse_gossip(p, n, &g) < 0) {
        rd_warn("GOSSIP from %s is malformed; closing", c->addr);
        sn_reply_error(s, c, SN_ERR_PROTO, "GOSSIP payload is malformed");
        c->close_after_send = 1;
        return;
    }
    if (g.kind == SN_GOSSIP_ASK) {
        struct sn_gossip a;
        sn_gossip_fill(s, &a, SN_GOSSIP_ANSWER);
        if (sn_send_gossip(&c->out, s->epoch, &a) < 0)
            rd_panic("out of memory for a GOSSIP answer");
        return;
    }
    if (c->peer < 0)
        return; /* an answer we did not ask for */
    struct sn_peer *pe = &s->peers[c->peer];
    if (!pe->heard)
        rd_info("gossip: peer %s is node %u with scl %llu, coalesced %llu, trimmed %llu (epoch %llu)", pe->name,
                g.node_id, (unsigned long long)g.scl, (unsigned long long)g.coalesced_lsn,
                (unsigned long long)g.trimmed_lsn, (unsigned long long)fh->epoch);
    pe->heard = 1;
    pe->scl = g.scl;
    pe->coalesced_lsn = g.coalesced_lsn;
    pe->trimmed_lsn = g.trimmed_lsn;
    pe->epoch = fh->epoch;
    pe->heard_ms = rd_now_ms();
    s->stats.gossip_answers++;
    if (pe->given_up && g.scl >= s->st.trimmed_lsn) {
        pe->given_up = 0;
        rd_info("gossip: peer %s is past this node's trimmed point again (scl %llu >= %llu): trimming waits for "
                "it again",
                pe->name, (unsigned long long)g.scl, (unsigned long long)s->st.trimmed_lsn);
    }
}

/* ------------------------------------------------------------ page copy (N11) */

/* PAGECOPY: the written pages of the page store from from_page_id on, as
 * of coalesced_lsn (coalescing runs whole within a loop turn, so between
 * turns the page store is exactly that, bar pages a crash left newer, which
 * the requester handles like its own). Each is verified (N7) before it goes;
 * a page that fails and cannot be repaired answers SN_ERR_CORRUPT. Bounded:
 * SN_PAGES_MAX pages and SN_COPY_SCAN_PAGES slots read per answer. */
static void sn_on_pagecopy(struct sn_node *s, struct sn_conn *c, const uint8_t *p, size_t n)
{
    struct sn_pagecopy pc;
    if (sn_parse_pagecopy(p, n, &pc) < 0) {
        sn_reply_error(s, c, SN_ERR_PROTO, "PAGECOPY payload is malformed");
        c->close_after_send = 1;
        return;
    }
    s->stats.pagecopy_served++;
    struct stat sb;
    if (fstat(s->pages_fd, &sb) < 0)
        rd_panic("could not stat the page store in \"%s\": %s", s->dir, strerror(errno));
    uint64_t end = RD_MIN((uint64_t)sb.st_size / ENGINE_PAGE_SIZE, (uint64_t)SN_MAX_PAGE_ID + 1);
    uint8_t *entries = malloc((size_t)SN_PAGES_MAX * SN_PAGES_ENTRY_SIZE);
    uint8_t *page = malloc(ENGINE_PAGE_SIZE);
    if (entries == NULL || page == NULL)
        rd_panic("out of memory for a PAGES answer");
    uint32_t np = 0, scanned = 0;
    uint64_t id = pc.from_page_id;
    static const uint8_t zero[ENGINE_PAGE_SIZE];
    for (; id < end && np < pc.max_pages && scanned < SN_COPY_SCAN_PAGES; id++, scanned++) {
        ssize_t got = pread(s->pages_fd, page, ENGINE_PAGE_SIZE, (off_t)(id * ENGINE_PAGE_SIZE));
        if (got < 0)
            rd_panic("could not read page %llu from the page store in \"%s\": %s", (unsigned long long)id, s->dir,
                     strerror(errno));
        if (got < (ssize_t)ENGINE_PAGE_SIZE || memcmp(page, zero, ENGINE_PAGE_SIZE) == 0)
            continue; /* never written */
        if (engine_page_verify(page) != 0 && sn_page_load(s, (uint32_t)id, page) < 0) {
            char msg[96];
            snprintf(msg, sizeof(msg), "page %llu is corrupt on this node", (unsigned long long)id);
            sn_reply_error(s, c, SN_ERR_CORRUPT, msg);
            free(entries);
            free(page);
            return;
        }
        sn_pages_put(entries, np++, (uint32_t)id, page);
    }
    struct sn_pages a = {.req_id = pc.req_id, .coalesced_lsn = s->st.coalesced_lsn,
                         .coalesced_cpl = RD_MIN(s->coalesced_cpl, s->st.coalesced_lsn),
                         .next_page_id = id < end ? (uint32_t)id : SN_PAGES_DONE, .npages = np, .entries = entries};
    if (sn_send_pages(&c->out, s->epoch, &a) < 0)
        rd_panic("out of memory for a PAGES answer");
    free(entries);
    free(page);
}

static void sn_copy_ask(struct sn_node *s)
{
    struct sn_peer *p = &s->peers[s->copy.peer];
    rd_assert(s->copy.active && p->conn != NULL);
    struct sn_pagecopy pc = {.req_id = ++s->copy.req_id, .from_page_id = s->copy.next_page,
                             .max_pages = SN_PAGES_MAX};
    if (sn_send_pagecopy(&p->conn->out, s->epoch, &pc) < 0)
        rd_panic("out of memory for a PAGECOPY");
    s->copy.sent_ms = rd_now_ms();
}

static void sn_copy_abort(struct sn_node *s, const char *why)
{
    if (!s->copy.active)
        return;
    rd_warn("page copy from peer %s stopped after %llu pages: %s; retrying in %u ms",
            s->peers[s->copy.peer].name, (unsigned long long)s->copy.pages, why, SN_COPY_RETRY_MS);
    s->copy.active = 0;
    s->copy.retry_ms = rd_now_ms() + SN_COPY_RETRY_MS;
}

/* A blocked node (every reachable peer trimmed scl + 1) copies the page
 * store of one of them. Pages already copied by an earlier attempt stay:
 * each is a correct image (README N11), only the base is recomputed. */
static void sn_copy_start(struct sn_node *s, uint64_t now)
{
    if (s->copy.active || s->blocked_lsn == 0 || s->blocked_lsn != s->st.scl + 1 || now < s->copy.retry_ms)
        return;
    for (size_t k = 0; k < s->npeers; k++) {
        struct sn_peer *p = &s->peers[(s->peer_rr + k) % s->npeers];
        if (p->state != SN_PEER_UP || p->conn == NULL || p->conn->closing || p->trimmed_for != s->blocked_lsn)
            continue;
        s->copy = (struct sn_copy){.active = 1, .peer = p->idx, .req_id = s->copy.req_id, .started_ms = now,
                                   .base = UINT64_MAX};
        rd_info("page copy: catching up from peer %s, which holds lsns from %llu only (this node needs %llu): "
                "copying its page store",
                p->name, (unsigned long long)p->holds_from, (unsigned long long)s->blocked_lsn);
        sn_copy_ask(s);
        return;
    }
}

/* The last PAGES came: the page store now holds every record <= base. Order:
 * pages fdatasynced, then the store rebased and meta written with
 * coalesced_lsn = base (N10's rule: pages durable before meta says so). */
static void sn_copy_finish(struct sn_node *s)
{
    struct sn_peer *p = &s->peers[s->copy.peer];
    if (s->copy.base == UINT64_MAX || s->copy.base <= s->st.coalesced_lsn) {
        char why[128];
        snprintf(why, sizeof(why), "its page store (coalesced %llu) is not ahead of this node's (%llu)",
                 (unsigned long long)(s->copy.base == UINT64_MAX ? 0 : s->copy.base),
                 (unsigned long long)s->st.coalesced_lsn);
        sn_copy_abort(s, why);
        return;
    }
    if (fdatasync(s->pages_fd) < 0)
        rd_panic("could not fdatasync the page store in \"%s\": %s", s->dir, strerror(errno));
    uint64_t old_scl = s->st.scl;
    size_t dropped = sn_store_rebase(&s->st, s->copy.base, s->copy.cpl);
    s->coalesced_cpl = RD_MAX(s->coalesced_cpl, s->copy.cpl);
    sn_meta_persist(s);
    s->coalesce_blocked = 0;
    sn_store_advance(&s->st);
    s->stats.page_copies++;
    s->stats.pages_copied += s->copy.pages;
    rd_info("page copy from peer %s done in %llu ms: %llu pages, the page store now holds every lsn <= %llu "
            "(%zu records below it dropped here); scl %llu -> %llu, gap fill continues from %llu",
            p->name, (unsigned long long)(rd_now_ms() - s->copy.started_ms), (unsigned long long)s->copy.pages,
            (unsigned long long)s->copy.base, dropped, (unsigned long long)old_scl,
            (unsigned long long)s->st.scl, (unsigned long long)(s->st.scl + 1));
    s->copy.active = 0;
    s->blocked_lsn = 0;
    s->fetch_more = 1;
    for (size_t i = 0; i < s->npeers; i++)
        s->peers[i].trimmed_for = 0;
}

static void sn_on_pages(struct sn_node *s, struct sn_conn *c, const uint8_t *p, size_t n)
{
    struct sn_pages m;
    if (sn_parse_pages(p, n, &m) < 0) {
        rd_warn("PAGES from %s is malformed; closing", c->addr);
        if (s->copy.active && s->copy.peer == c->peer)
            sn_copy_abort(s, "a malformed PAGES answer");
        sn_conn_close(s, c);
        return;
    }
    if (!s->copy.active || c->peer != s->copy.peer || m.req_id != s->copy.req_id)
        return; /* an answer we gave up on */
    if (m.next_page_id <= s->copy.next_page && m.next_page_id != SN_PAGES_DONE) {
        sn_copy_abort(s, "the peer's answer does not move forward");
        return;
    }
    for (uint32_t i = 0; i < m.npages; i++) {
        uint32_t id = sn_pages_id(&m, i);
        const uint8_t *img = sn_pages_image(&m, i);
        if (id > SN_MAX_PAGE_ID || id < s->copy.next_page || engine_page_verify(img) != 0) {
            s->stats.corrupt_detected++;
            char why[96];
            snprintf(why, sizeof(why), "page %u failed its checks (id out of range or bad checksum)", id);
            sn_copy_abort(s, why); /* N7: never stored */
            return;
        }
    }
    for (uint32_t i = 0; i < m.npages; i++) {
        uint32_t id = sn_pages_id(&m, i);
        ssize_t w = pwrite(s->pages_fd, sn_pages_image(&m, i), ENGINE_PAGE_SIZE, (off_t)id * ENGINE_PAGE_SIZE);
        if (w != (ssize_t)ENGINE_PAGE_SIZE)
            rd_panic("could not write page %u to the page store in \"%s\": %s", id, s->dir,
                     w < 0 ? strerror(errno) : "short write");
        sn_pcache_put(&s->pcache, id, sn_pages_image(&m, i)); /* N18: verified above */
    }
    s->copy.pages += m.npages;
    if (m.coalesced_lsn < s->copy.base) {
        s->copy.base = m.coalesced_lsn;
        s->copy.cpl = m.coalesced_cpl;
    }
    if (m.next_page_id == SN_PAGES_DONE) {
        sn_copy_finish(s);
        return;
    }
    s->copy.next_page = m.next_page_id;
    sn_copy_ask(s);
}

/* Background: start a copy when blocked; give up on a silent peer. */
static void sn_copy_tick(struct sn_node *s, uint64_t now)
{
    if (s->copy.active && now - s->copy.sent_ms >= SN_COPY_TIMEOUT_MS)
        sn_copy_abort(s, "no answer");
    sn_copy_start(s, now);
}

/* ------------------------------------------------------------ frames */

/* The peer handshake on a frame connection (common/auth.h). Inbound: HELLO ->
 * CHALLENGE, PROOF -> authenticated. Outbound (our link to a peer): its
 * CHALLENGE -> our PROOF, and the link is up. Anything else before that is
 * refused with an ERROR and the connection closed (logged once per address):
 * no EPOCH, TRUNCATE, WRITE or GOSSIP from a connection that did not prove
 * the cluster secret ever reaches the node's state. */
static void sn_on_auth(struct sn_node *s, struct sn_conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n)
{
    uint8_t out[RD_AUTH_MSG_MAX];
    int rc = RD_EPROTO;
    const char *why = "a peer message before authentication";
    if (!s->auth.enabled) {
        why = "an authentication message, but this node has no --cluster-secret-file";
    } else if (h->type != RD_AUTH_FRAME_TYPE) {
        if (h->type == SN_MSG_ERROR && c->peer >= 0) {
            uint32_t code = 0;
            char text[SN_ERROR_MAX_TEXT + 1] = "";
            sn_parse_error(p, n, &code, text, sizeof(text));
            rd_warn("peer %s refused our authentication: %s", c->addr, text);
            sn_conn_close(s, c);
            return;
        }
    } else if (c->peer_authed) {
        why = "a second handshake";
    } else if (c->peer >= 0) {
        rc = rd_auth_client_challenge(&s->auth, &c->hs, p, n, out);
        if (rc == 0) {
            if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, out, RD_AUTH_PROOF_LEN, 0) < 0)
                rd_panic("out of memory");
            c->peer_authed = 1;
            s->peers[c->peer].state = SN_PEER_UP;
            rd_info("peer %s authenticated", s->peers[c->peer].name);
            return;
        }
        why = "a challenge whose MAC does not verify (wrong cluster id or secret)";
    } else if (rd_auth_msg_type(p, n) == RD_AUTH_HELLO && c->hs.state == RD_AUTH_ST_NONE) {
        rc = rd_auth_server_hello(&s->auth, &c->hs, p, n, NULL, out);
        if (rc == 0) {
            if (frame_append(&c->out, RD_AUTH_FRAME_TYPE, 0, out, RD_AUTH_CHALLENGE_LEN, 0) < 0)
                rd_panic("out of memory");
            return;
        }
        why = "a HELLO for another cluster";
    } else {
        rc = rd_auth_server_proof(&s->auth, &c->hs, p, n);
        if (rc == 0) {
            if (sn_make_peer(s, c) < 0) {
                sn_reply_error(s, c, SN_ERR_PROTO, "max number of peer connections reached");
                c->close_after_send = 1;
                return;
            }
            c->peer_authed = 1;
            return;
        }
        why = rc == RD_EAUTH ? "a proof that does not verify (wrong secret or a replayed handshake)"
                             : "a malformed or out-of-order authentication message";
    }
    if (rd_auth_log_once(c->addr))
        rd_warn("refusing %s: it sent %s (%s); closing. Further refusals from this address are not logged", c->addr,
                why, sn_msg_name(h->type));
    c->hs.state = RD_AUTH_ST_FAILED;
    sn_reply_error(s, c, SN_ERR_PROTO, "peer authentication required: connect with the cluster secret "
                                       "(--cluster-secret-file)");
    c->close_after_send = 1;
}

static void sn_process_frames(struct sn_node *s, struct sn_conn *c)
{
    size_t off = 0;
    unsigned nframes = 0;
    while (!c->closing && !c->close_after_send && nframes < SN_FRAMES_PER_TURN) {
        if (c->out.len + c->sending.len > SN_CONN_OUTPUT_MAX_BYTES) {
            rd_warn("connection %s closed: it does not read its replies", c->addr);
            sn_conn_close(s, c);
            return;
        }
        if (c->peer < 0 && s->hl_pending.len > SN_PENDING_MAX_BYTES) {
            nframes = SN_FRAMES_PER_TURN; /* back-pressure: let the flush catch up, retry */
            break;
        }
        struct frame_hdr h;
        const uint8_t *p;
        size_t n;
        const char *why = NULL;
        int rc = frame_decode(c->in.data + off, c->in.len - off, &h, &c->scratch, &p, &n, &why);
        if (rc == 0)
            break;
        if (rc < 0) {
            if (why && strstr(why, "checksum"))
                rd_warn("frame from %s failed its checksum; closing", c->addr);
            else
                rd_warn("frame from %s is invalid (%s); closing", c->addr, why ? why : rd_strerror(rc));
            sn_conn_close(s, c);
            return;
        }
        if (s->lack_conn != NULL && c->peer_authed && h.type != RD_AUTH_FRAME_TYPE &&
            (h.type == SN_MSG_EPOCH || h.type == SN_MSG_TRUNCATE || h.epoch > s->epoch)) {
            c->parked = 1; /* N19: until the linked ACK's send completes (sn_on_lack_sent) */
            s->stats.parked_frames++;
            break;
        }
        off += (size_t)rc;
        nframes++;
        if (!c->peer_authed || h.type == RD_AUTH_FRAME_TYPE) {
            sn_on_auth(s, c, &h, p, n);
            continue;
        }
        if (!c->is_peer && sn_make_peer(s, c) < 0) {
            sn_reply_error(s, c, SN_ERR_PROTO, "max number of peer connections reached");
            c->close_after_send = 1;
            break;
        }
        switch (h.type) {
        case SN_MSG_WRITE: sn_on_write(s, c, &h, p, n); break;
        case SN_MSG_GETPAGE: sn_on_getpage(s, c, p, n); break;
        case SN_MSG_FETCH: sn_on_fetch(s, c, p, n); break;
        case SN_MSG_LOG: sn_on_log(s, c, &h, p, n); break;
        case SN_MSG_EPOCH: sn_on_epoch(s, c, p, n); break;
        case SN_MSG_TRUNCATE: sn_on_truncate(s, c, &h, p, n); break;
        case SN_MSG_READPOINT: sn_on_readpoint(s, c, &h, p, n); break;
        case SN_MSG_GOSSIP: sn_on_gossip(s, c, &h, p, n); break;
        case SN_MSG_PAGECOPY: sn_on_pagecopy(s, c, p, n); break;
        case SN_MSG_PAGES: sn_on_pages(s, c, p, n); break;
        case TRACE_MARK_FRAME_TYPE: /* issue 13: the next WRITE carries a sampled commit (C22) */
            if (trace_mark_follow(p, n, SN_TRACE_LINGER_US, &why) < 0) {
                rd_warn("malformed trace mark from %s (%s); closing", c->addr, why);
                sn_reply_error(s, c, SN_ERR_PROTO, why);
                c->close_after_send = 1;
            }
            break;
        case SN_MSG_ERROR: {
            uint32_t code = 0;
            char text[SN_ERROR_MAX_TEXT + 1];
            if (sn_parse_error(p, n, &code, text, sizeof(text)) == 0)
                rd_warn("%s reported error %u: %s", c->addr, code, text);
            if (s->copy.active && c->peer >= 0 && c->peer == s->copy.peer)
                sn_copy_abort(s, "the peer answered with an error");
            break;
        }
        default:
            rd_warn("frame of unexpected type %u (%s) from %s; closing", h.type, sn_msg_name(h.type), c->addr);
            sn_reply_error(s, c, SN_ERR_PROTO, "unexpected message type");
            c->close_after_send = 1;
            break;
        }
    }
    rd_buf_consume(&c->in, off);
    if (c->in.len > 0 && !c->closing && !c->close_after_send && nframes == SN_FRAMES_PER_TURN)
        sn_mark_ready(s, c);
}

/* ------------------------------------------------------------ RESP (INFO, PING) */

static void sn_info(struct sn_node *s, struct rd_buf *b)
{
    size_t up = 0, given_up = 0;
    for (size_t i = 0; i < s->npeers; i++) {
        up += s->peers[i].state == SN_PEER_UP;
        given_up += s->peers[i].given_up != 0;
    }
    sn_trim_point(s);
    rd_buf_appendf(b,
                   "# Storage\r\nrole:storage\r\nnode_id:%u\r\nepoch:%llu\r\nscl:%llu\r\ndurable_lsn:%llu\r\n"
                   "max_cpl:%llu\r\nhot_log_bytes:%llu\r\ncoalesced_lsn:%llu\r\nmin_read_point:%llu\r\n"
                   "vdl_seen:%llu\r\ntruncated_above:%llu\r\ngaps_filled:%llu\r\nrecords:%llu\r\n"
                   "hot_records:%llu\r\npages:%llu\r\ngetpage_requests:%llu\r\ncorrupt_detected:%llu\r\n"
                   "repaired:%llu\r\nwrites:%llu\r\nstale_refused:%llu\r\nduplicates:%llu\r\nflushes:%llu\r\n"
                   "fetches_served:%llu\r\nconnected_peers:%zu\r\nhot_log_segments:%zu\r\n"
                   "hot_log_first_segment:%llu\r\nhot_log_trimmed_lsn:%llu\r\nsegments_deleted:%llu\r\n"
                   "records_trimmed:%llu\r\nfetch_trimmed_answers:%llu\r\ncatchup_blocked_lsn:%llu\r\n",
                   s->cfg.node_id, (unsigned long long)s->epoch, (unsigned long long)s->st.scl,
                   (unsigned long long)s->st.durable_max, (unsigned long long)s->st.max_cpl,
                   (unsigned long long)sn_hl_bytes(s), (unsigned long long)s->st.coalesced_lsn,
                   (unsigned long long)s->min_read_point, (unsigned long long)s->vdl_seen,
                   (unsigned long long)sn_truncated_above(s), (unsigned long long)s->stats.gaps_filled,
                   (unsigned long long)s->st.nrecs, (unsigned long long)s->st.hot_records,
                   (unsigned long long)s->st.npages, (unsigned long long)s->stats.getpage_requests,
                   (unsigned long long)s->stats.corrupt_detected, (unsigned long long)s->stats.repaired,
                   (unsigned long long)s->stats.writes, (unsigned long long)s->stats.stale_refused,
                   (unsigned long long)s->stats.duplicates, (unsigned long long)s->stats.flushes,
                   (unsigned long long)s->stats.fetches_served, up, s->nsegs,
                   (unsigned long long)(s->nsegs ? s->segs[0].no : 0), (unsigned long long)s->st.trimmed_lsn,
                   (unsigned long long)s->stats.segments_deleted, (unsigned long long)s->stats.records_trimmed,
                   (unsigned long long)s->stats.fetch_trimmed_answers, (unsigned long long)s->blocked_lsn);
    rd_buf_appendf(b, "fsyncs:%llu\r\nhotlog_io:%s\r\ndsync_writes:%llu\r\nzfill_bytes:%llu\r\n",
                   (unsigned long long)s->stats.fsyncs, s->direct ? "direct" : "buffered",
                   (unsigned long long)s->stats.dsync_writes, (unsigned long long)s->stats.zfill_bytes);
    rd_buf_appendf(b, "page_cache_slots:%u\r\npage_cache_hits:%llu\r\npage_cache_misses:%llu\r\n",
                   s->pcache.nslots, (unsigned long long)s->pcache.hits, (unsigned long long)s->pcache.misses);
    rd_buf_appendf(b, "link_acks:%s\r\nlinked_acks:%llu\r\nparked_frames:%llu\r\ncoalesce_cpu_us:%llu\r\n",
                   s->link_acks ? "on" : "off", (unsigned long long)s->stats.linked_acks,
                   (unsigned long long)s->stats.parked_frames, (unsigned long long)s->stats.coalesce_cpu_us);
    rd_buf_appendf(b,
                   "hotlog_trim:%s\r\nhotlog_keep_bytes:%llu\r\nhotlog_trim_point:%llu\r\n"
                   "hotlog_trim_local_point:%llu\r\nhotlog_trim_held_by:%s\r\npeers_given_up:%zu\r\n"
                   "trim_gave_up:%llu\r\ngossip_answers:%llu\r\npage_copy_active:%d\r\npage_copies:%llu\r\n"
                   "pages_copied:%llu\r\npagecopy_served:%llu\r\n",
                   s->trim_enabled ? "on" : "off", (unsigned long long)s->keep_bytes,
                   (unsigned long long)s->trim_point, (unsigned long long)s->trim_local, s->trim_held_by, given_up,
                   (unsigned long long)s->stats.trim_gave_up, (unsigned long long)s->stats.gossip_answers,
                   s->copy.active, (unsigned long long)s->stats.page_copies,
                   (unsigned long long)(s->stats.pages_copied + (s->copy.active ? s->copy.pages : 0)),
                   (unsigned long long)s->stats.pagecopy_served);
    uint64_t now = rd_now_ms();
    for (size_t i = 0; i < s->npeers; i++) {
        const struct sn_peer *p = &s->peers[i];
        rd_buf_appendf(b, "peer%zu:addr=%s,state=%s,heard=%d,scl=%llu,coalesced=%llu,trimmed=%llu,epoch=%llu,"
                          "heard_ms_ago=%lld,given_up=%d\r\n",
                       i, p->name, p->state == SN_PEER_UP ? "up" : "down", p->heard, (unsigned long long)p->scl,
                       (unsigned long long)p->coalesced_lsn, (unsigned long long)p->trimmed_lsn,
                       (unsigned long long)p->epoch, p->heard ? (long long)(now - p->heard_ms) : -1LL,
                       p->given_up);
    }
}

/* --metrics-port: every INFO number as a gauge redoubt_storage_<field> (LSNs
 * as numbers), each peer's as redoubt_storage_peer_<field>{peer="addr"}, and
 * the node's connections (common/metrics.h; polled once per loop turn). */
static struct rd_metrics sn_met;

static void sn_metrics_body(void *arg, struct rd_buf *out)
{
    struct sn_node *s = arg;
    static const struct rd_metrics_list lists[] = {{"peer", "peer", "peer"}};
    struct rd_buf b = {0};
    sn_info(s, &b);
    rd_metrics_from_info(out, "redoubt_storage_", (const char *)b.data, b.len, lists, RD_ARRAY_LEN(lists));
    rd_buf_free(&b);
    rd_metrics_gauge(out, "redoubt_storage_connections", "open connections (writer, readers, peers, RESP clients)",
                     (double)s->nconns);
    rd_metrics_gauge(out, "redoubt_storage_peer_connections", "open connections of authenticated peers",
                     (double)s->npeer_conns);
}

static void sn_metrics_start(struct sn_node *s)
{
    rd_metrics_init(&sn_met);
    if (s->cfg.metrics_port == 0)
        return;
    int rc = rd_metrics_listen(&sn_met, s->cfg.bind_addr, s->cfg.metrics_port);
    if (rc < 0)
        rd_error("metrics: could not listen on %s:%d: %s; no metrics endpoint", s->cfg.bind_addr, s->cfg.metrics_port,
                 rd_strerror(rc));
    else
        rd_info("metrics: Prometheus endpoint on http://%s:%d/metrics", s->cfg.bind_addr, s->cfg.metrics_port);
}

/* RESP on the node's port is parsed by the one RESP parser (common/resp.c,
 * fuzzed by fuzz_resp), with small limits: the node answers PING, INFO, QUIT and
 * COMMAND, whose arguments are short. */
static int sn_arg_is(const struct resp_arg *a, const char *w)
{
    return a->len == strlen(w) && strncasecmp((const char *)a->ptr, w, a->len) == 0;
}

static void sn_process_resp(struct sn_node *s, struct sn_conn *c)
{
    static const struct resp_limits lim = {.max_args = 16, .max_bulk_bytes = 4096, .max_inline_bytes = 4096};
    static struct resp_args args; /* one loop thread; points into c->in until consumed */
    size_t off = 0;
    for (unsigned i = 0; i < 64 && !c->close_after_send; i++) {
        const char *err = NULL;
        int used = resp_parse(c->in.data + off, c->in.len - off, &lim, &args, &err);
        if (used == 0)
            break;
        if (used < 0) {
            rd_info("RESP client %s sent a malformed request (%s); closing", c->addr, err ? err : "protocol error");
            rd_buf_appendf(&c->out, "-ERR %s\r\n", err ? err : "Protocol error");
            c->close_after_send = 1;
            break;
        }
        off += (size_t)used;
        if (args.n == 0)
            continue;
        const struct resp_arg *cmd = &args.v[0];
        if (sn_arg_is(cmd, "PING")) {
            rd_buf_appendf(&c->out, "+PONG\r\n");
        } else if (sn_arg_is(cmd, "INFO")) {
            struct rd_buf b = {0};
            sn_info(s, &b);
            rd_info_lsns_xy(&b); /* LSNs as X/Y (common/metrics.h C21) */
            rd_buf_appendf(&c->out, "$%zu\r\n", b.len);
            rd_buf_append(&c->out, b.data, b.len);
            rd_buf_appendf(&c->out, "\r\n");
            rd_buf_free(&b);
        } else if (sn_arg_is(cmd, "REDOUBT.TRACE")) { /* issue 13: storage-node/sn_trace.h */
            sn_trace_command(&c->out, &args, s->cfg.node_id);
        } else if (sn_arg_is(cmd, "QUIT")) {
            rd_buf_appendf(&c->out, "+OK\r\n");
            c->close_after_send = 1;
        } else if (sn_arg_is(cmd, "COMMAND")) {
            rd_buf_appendf(&c->out, "*0\r\n");
        } else {
            char name[65];
            size_t k = RD_MIN(cmd->len, sizeof(name) - 1);
            for (size_t j = 0; j < k; j++) /* never echo control bytes into the reply line */
                name[j] = cmd->ptr[j] >= 0x20 && cmd->ptr[j] < 0x7f ? (char)cmd->ptr[j] : '?';
            name[k] = 0;
            rd_buf_appendf(&c->out, "-ERR unknown command '%s': a storage node answers INFO, PING and REDOUBT.TRACE\r\n", name);
        }
    }
    rd_buf_consume(&c->in, off);
    if (c->in.len > 0 && !c->close_after_send)
        sn_mark_ready(s, c);
}

static void sn_process_ready(struct sn_node *s)
{
    struct rd_conn *list = rd_net_take_ready(&s->net);
    while (list) {
        struct sn_conn *c = sn_conn_of(list);
        list = list->next_ready;
        rd_conn_unready(&c->nc);
        if (!c->closing && c->in.len > 0) {
            if (c->proto == SN_PROTO_UNKNOWN) /* the first byte decides (README) */
                c->proto = c->in.data[0] == 0x52 ? SN_PROTO_FRAMES : SN_PROTO_RESP;
            if (c->proto == SN_PROTO_FRAMES)
                sn_process_frames(s, c);
            else
                sn_process_resp(s, c);
        }
        if (c->eof && !c->on_ready && !c->closing && !c->parked) {
            c->close_after_send = 1; /* sn_queue_send closes once the replies are out */
            c->ack_wait = 0;
        }
        if (c->closing)
            sn_conn_close(s, c);
    }
}

/* ------------------------------------------------------------ peers, gap fill */

static void sn_on_connect(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_peer *p = (struct sn_peer *)((char *)io - offsetof(struct sn_peer, connect_io));
    struct sn_node *s = p->node;
    if (cqe->res < 0) {
        if (!p->down_logged)
            rd_info("peer %s is not reachable (%s); retrying", p->name, strerror(-cqe->res));
        p->down_logged = 1;
        if (close(p->fd) < 0)
            rd_warn("close failed: %s", strerror(errno));
        p->fd = -1;
        p->state = SN_PEER_IDLE;
        p->next_attempt_ms = rd_now_ms() + 500;
        return;
    }
    p->down_logged = 0;
    p->conn = sn_conn_new(s, p->fd, p->idx);
    if (s->auth.enabled) { /* up once its CHALLENGE verifies (sn_on_auth) */
        uint8_t hello[RD_AUTH_HELLO_LEN];
        rd_auth_client_hello(&s->auth, &p->conn->hs, NULL, hello);
        if (frame_append(&p->conn->out, RD_AUTH_FRAME_TYPE, 0, hello, sizeof(hello), 0) < 0)
            rd_panic("out of memory");
        rd_info("connected to peer %s; authenticating", p->name);
        return;
    }
    p->state = SN_PEER_UP;
    rd_info("connected to peer %s", p->name);
}

static void sn_peers_connect(struct sn_node *s, uint64_t now)
{
    for (size_t i = 0; i < s->npeers; i++) {
        struct sn_peer *p = &s->peers[i];
        if (p->state != SN_PEER_IDLE || now < p->next_attempt_ms)
            continue;
        p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (p->fd < 0) {
            rd_warn("socket failed: %s", strerror(errno));
            p->next_attempt_ms = now + 1000;
            continue;
        }
        p->state = SN_PEER_CONNECTING;
        struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &p->connect_io);
        io_uring_prep_connect(sqe, p->fd, (struct sockaddr *)&p->sa, sizeof(p->sa));
        sqe->flags |= IOSQE_IO_LINK;
        static struct __kernel_timespec connect_timeout = {.tv_sec = 1, .tv_nsec = 0};
        sqe = rd_loop_sqe(&s->loop, NULL); /* L2: nobody waits for the link timeout */
        io_uring_prep_link_timeout(sqe, &connect_timeout, 0);
    }
}

/* N9: one FETCH in flight; ask when a gap is known, when the last answer
 * brought records, or every SN_PROBE_INTERVAL_MS (a peer may be ahead). */
static void sn_gap_fill(struct sn_node *s, uint64_t now)
{
    if (s->fetch_outstanding && now - s->fetch_sent_ms < SN_FETCH_TIMEOUT_MS)
        return;
    s->fetch_outstanding = 0;
    int gap = s->st.durable_max > s->st.scl && s->blocked_lsn != s->st.scl + 1; /* blocked: probe only */
    if (!gap && !s->fetch_more && now - s->last_probe_ms < SN_PROBE_INTERVAL_MS)
        return;
    for (size_t k = 0; k < s->npeers; k++) {
        struct sn_peer *p = &s->peers[(s->peer_rr + k) % s->npeers];
        if (p->state != SN_PEER_UP || p->conn == NULL || p->conn->closing)
            continue;
        s->peer_rr = (s->peer_rr + k + 1) % s->npeers;
        struct sn_fetch f = {.req_id = ++s->fetch_req_id, .from_lsn = s->st.scl + 1, .to_lsn = UINT64_MAX,
                             .max_bytes = SN_FETCH_ASK_BYTES};
        s->fetch_from = f.from_lsn;
        if (sn_send_fetch(&p->conn->out, s->epoch, &f) < 0)
            rd_panic("out of memory for a FETCH");
        s->fetch_outstanding = 1;
        s->fetch_more = 0;
        s->fetch_sent_ms = now;
        s->last_probe_ms = now;
        return;
    }
}

static int sn_parse_peers(struct sn_node *s, const char *spec)
{
    if (spec == NULL || *spec == 0)
        return 0;
    char *dup = strdup(spec), *save = NULL;
    if (dup == NULL)
        return -ENOMEM;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (colon == NULL || s->npeers == SN_MAX_PEERS) {
            rd_error("--peers: \"%s\" is not host:port (or more than %u peers)", tok, SN_MAX_PEERS);
            free(dup);
            return -EINVAL;
        }
        *colon = 0;
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int rc = getaddrinfo(tok, colon + 1, &hints, &ai);
        if (rc != 0 || ai == NULL) {
            rd_error("--peers: cannot resolve \"%s:%s\": %s", tok, colon + 1, gai_strerror(rc));
            free(dup);
            return -EINVAL;
        }
        struct sn_peer *p = &s->peers[s->npeers];
        memcpy(&p->sa, ai->ai_addr, sizeof(p->sa));
        freeaddrinfo(ai);
        snprintf(p->name, sizeof(p->name), "%s:%s", tok, colon + 1);
        p->connect_io.on_cqe = sn_on_connect;
        p->node = s;
        p->idx = (int)s->npeers;
        p->fd = -1;
        s->npeers++;
    }
    free(dup);
    return 0;
}

/* ------------------------------------------------------------ start-up */

static int sn_lock_dir(struct sn_node *s)
{
    char path[4200];
    sn_path(s, "LOCK", path, sizeof(path));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        rd_error("could not open lock file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        rd_error("data directory \"%s\" is in use by another process (%s)", s->dir, strerror(errno));
        close(fd);
        return -EBUSY;
    }
    return fd; /* held for the life of the process */
}

static int sn_scan_cb(void *arg, uint64_t off, uint32_t len, uint64_t epoch, const struct redo_rec *r)
{
    struct sn_node *s = arg;
    struct sn_seg *g = &s->segs[s->nsegs - 1]; /* the segment being scanned */
    uint64_t voff = SN_HL_VOFF(g->no, off);
    if (r->lsn > g->max_lsn)
        g->max_lsn = r->lsn;
    if (sn_trunc_drops(s->trunc, s->ntrunc, voff, epoch, r->lsn) || sn_store_get(&s->st, r->lsn) != NULL)
        return 0;
    return sn_store_add(&s->st, r, epoch, voff, len, 1);
}

/* Opens and scans one segment (pushed onto segs): sealed DIR/hotlog.no, or
 * DIR/hotlog (no = UINT64_MAX: its number is in its header). */
static int sn_open_segment(struct sn_node *s, uint64_t no, int sealed, uint64_t min_no)
{
    char path[4200];
    sn_hotlog_seg_path(path, sizeof(path), s->dir, no, sealed);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        rd_error("could not open \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        close(fd);
        return -errno;
    }
    size_t len = (size_t)sb.st_size;
    if (len < SN_HOTLOG_FILE_HDR_SIZE) {
        if (sealed) {
            rd_error("hot-log segment \"%s\" is shorter than its header: refusing to start", path);
            close(fd);
            return RD_ECORRUPT;
        }
        /* DIR/hotlog new, or torn at creation (older versions): start it afresh. */
        close(fd);
        return 1;
    }
    if ((uint64_t)len >= (1ull << SN_HL_SEG_SHIFT)) {
        rd_error("hot-log segment \"%s\" is larger than 1 TiB: refusing to start", path);
        close(fd);
        return RD_ECORRUPT;
    }
    uint8_t *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rd_error("could not map \"%s\": %s", path, strerror(errno));
        close(fd);
        return -errno;
    }
    uint32_t id = 0;
    int rc = sn_hotlog_check_file_hdr(map, len, &id);
    uint64_t hno = rc == 0 ? sn_hotlog_hdr_seg(map) : 0;
    if (rc == 0 && ((sealed && hno != no) || hno < min_no || hno > SN_HL_MAX_SEG)) {
        rd_error("hot log \"%s\" says it is segment %llu (expected %s%llu): refusing to start", path,
                 (unsigned long long)hno, sealed ? "" : "at least ", (unsigned long long)(sealed ? no : min_no));
        rc = RD_ECORRUPT;
    } else if (rc < 0) {
        rd_error("hot log \"%s\" has a bad header (%s): refusing to start", path, rd_strerror(rc));
    }
    if (rc < 0) {
        munmap(map, len);
        close(fd);
        return rc;
    }
    if (id != s->cfg.node_id) {
        rd_error("hot log \"%s\" was created by node %u, this is node %u: refusing to start (the wrong --id or "
                 "--dir; each node's records and epochs are its own)",
                 path, id, s->cfg.node_id);
        munmap(map, len);
        close(fd);
        return RD_ESTATE;
    }
    struct sn_seg *g = sn_seg_push(s, hno, fd);
    g->sealed = sealed;
    struct sn_scan_result res;
    rc = sn_hotlog_scan(map, len, sn_scan_cb, s, &res);
    munmap(map, len);
    if (rc < 0)
        return rc;
    if (res.corrupt) {
        s->stats.corrupt_detected++;
        s->hl_repair_pending = 1;
        rd_error("hot log \"%s\" is corrupt at offset %llu (a record failed its checksum with %llu bytes after "
                 "it): keeping the %llu records before it and fetching the rest from peers",
                 path, (unsigned long long)res.valid_end, (unsigned long long)(len - res.valid_end),
                 (unsigned long long)res.records);
    } else if (res.torn) {
        rd_info("hot log \"%s\": torn tail of %llu bytes at offset %llu removed (never acknowledged)", path,
                (unsigned long long)(len - res.valid_end), (unsigned long long)res.valid_end);
    }
    if (res.valid_end < len) {
        if (ftruncate(fd, (off_t)res.valid_end) < 0 || fdatasync(fd) < 0)
            rd_panic("could not truncate \"%s\": %s", path, strerror(errno));
    }
    g->size = res.valid_end;
    return 0;
}

/* Recovery reads the sealed segments DIR/hotlog.N in order, then DIR/hotlog,
 * which takes appends (README "Files"). A missing or headerless DIR/hotlog
 * (a new node, or a crash during a rotation) is created with the next
 * segment number. */
static int sn_open_hotlog(struct sn_node *s)
{
    uint64_t *nos = NULL;
    size_t n = 0;
    int active = 0;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s/hotlog.new", s->dir);
    if (unlink(tmp) == 0)
        rd_info("removed \"%s\" left by a segment rotation that did not finish", tmp);
    int rc = sn_hotlog_segments(s->dir, &nos, &n, &active);
    if (rc < 0) {
        rd_error("could not list \"%s\": %s", s->dir, rd_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i > 0 && nos[i] != nos[i - 1] + 1) {
            s->stats.corrupt_detected++;
            s->hl_repair_pending = 1;
            rd_error("hot-log segments %llu..%llu of \"%s\" are missing: their records are lost here and are "
                     "fetched again from peers",
                     (unsigned long long)(nos[i - 1] + 1), (unsigned long long)(nos[i] - 1), s->dir);
        }
        rc = sn_open_segment(s, nos[i], 1, i ? nos[i - 1] + 1 : 0);
    }
    free(nos);
    uint64_t next = s->nsegs ? s->segs[s->nsegs - 1].no + 1 : 0;
    if (rc == 0 && active)
        rc = sn_open_segment(s, UINT64_MAX, 0, next);
    if (rc < 0)
        return rc;
    if (!active || rc == 1) { /* create DIR/hotlog: segment `next` */
        char path[4200];
        sn_hotlog_seg_path(path, sizeof(path), s->dir, 0, 0);
        int fd = sn_seg_prepare(s, next, tmp, sizeof(tmp));
        sn_rename_durable(s, tmp, path);
        sn_seg_push(s, next, fd);
    }
    if (s->segs[0].no > 0) {
        /* Older segments were deleted: every LSN <= coalesced_lsn is in the
         * page store (a segment is deleted only below it); the log may not
         * hold them. */
        sn_store_trimmed_floor(&s->st, s->st.coalesced_lsn, s->coalesced_cpl);
        rd_info("hot log: %zu segments from %llu (older ones trimmed: lsns <= %llu are only in the page store)",
                s->nsegs, (unsigned long long)s->segs[0].no, (unsigned long long)s->st.coalesced_lsn);
    }
    struct sn_seg *g = &s->segs[s->nsegs - 1];
    s->hl_end = s->pend_off = SN_HL_VOFF(g->no, g->size);
    char active_path[4200];
    sn_hotlog_seg_path(active_path, sizeof(active_path), s->dir, 0, 0);
    sn_seg_direct_open(s, g, active_path);
    return 0;
}

static int sn_listen(struct sn_node *s)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)s->cfg.port);
    if (inet_pton(AF_INET, s->cfg.bind_addr, &sa.sin_addr) != 1) {
        rd_error("invalid --bind address \"%s\" (an IPv4 address is expected)", s->cfg.bind_addr);
        return -EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, rc;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        close(fd);
        return -EINVAL;
    }
    /* After a kill -9 the old process's io_uring may hold its listener for a
     * moment (ring teardown is asynchronous): retry a busy port for 5 s. */
    for (int tries = 0; (rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EADDRINUSE &&
                        tries < 100;
         tries++) {
        if (tries == 0)
            rd_info("port %d is busy (a previous process exiting?): retrying for 5 s", s->cfg.port);
        usleep(50000);
    }
    if (rc < 0 || listen(fd, 511) < 0) {
        int e = errno;
        rd_error("could not listen on %s:%d: %s", s->cfg.bind_addr, s->cfg.port, strerror(e));
        close(fd);
        return -e;
    }
    s->listen_fd = fd;
    return 0;
}


static int sn_open_storage(struct sn_node *s)
{
    if (mkdir(s->dir, 0755) < 0 && errno != EEXIST) {
        rd_error("could not create data directory \"%s\": %s", s->dir, strerror(errno));
        return -errno;
    }
    if (sn_lock_dir(s) < 0)
        return -EBUSY;
    s->meta_dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->meta_dir_fd < 0) {
        rd_error("could not open directory \"%s\": %s", s->dir, strerror(errno));
        return -errno;
    }
    int rc = sn_meta_read(s);
    if (rc < 0)
        return rc;
    s->st.coalesced_lsn = s->st.coalesced_lsn; /* set by sn_meta_read, before the scan (ST4) */
    if ((rc = sn_open_hotlog(s)) < 0)
        return rc;
    sn_store_advance(&s->st);
    if (s->st.scl < s->st.coalesced_lsn && !s->hl_repair_pending) {
        /* A page copy (N11) put lsns up to coalesced_lsn in the page store that
         * the hot log never held: the SCL starts there (meta says the page
         * store holds every record <= it). After hot-log corruption the lost
         * records are refetched instead, as before. */
        rd_info("hot log holds lsns up to %llu only; the page store holds every lsn <= %llu (a page copy): the "
                "scl starts there",
                (unsigned long long)s->st.scl, (unsigned long long)s->st.coalesced_lsn);
        sn_store_trimmed_floor(&s->st, s->st.coalesced_lsn, s->coalesced_cpl);
        sn_store_advance(&s->st);
    }
    char path[4200];
    sn_path(s, "pages", path, sizeof(path));
    s->pages_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->pages_fd < 0) {
        rd_error("could not open \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    sn_pages_verify_all(s);
    rd_info("recovered: epoch %llu, %zu records, scl %llu, durable %llu, coalesced %llu, hot log %llu bytes",
            (unsigned long long)s->epoch, s->st.nrecs, (unsigned long long)s->st.scl,
            (unsigned long long)s->st.durable_max, (unsigned long long)s->st.coalesced_lsn,
            (unsigned long long)sn_hl_bytes(s));
    return 0;
}

static void sn_on_timer(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct sn_node *s = (struct sn_node *)((char *)io - offsetof(struct sn_node, timer_io));
    (void)cqe;
    s->timer_armed = 0;
}

static void sn_send_all(struct sn_node *s)
{
    for (struct sn_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->out.len > 0 || c->close_after_send)
            sn_queue_send(s, c);
    }
}

/* Clean stop: closes every connection (waiting, bounded, for their
 * in-flight operations to end: L1), then frees everything. */
static void sn_shutdown(struct sn_node *s)
{
    rd_net_stop_listening(&s->net);
    rd_net_take_ready(&s->net);
    for (struct sn_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        c->on_ready = 0;
        c->next_ready = NULL;
        sn_conn_close(s, c);
    }
    for (int i = 0; i < 100 && (s->conns || s->net.accept_armed || s->timer_armed); i++) {
        if (rd_loop_run_once(&s->loop, 20000) < 0)
            break;
        rd_net_take_ready(&s->net);
        for (struct sn_conn *c = s->conns, *n; c; c = n) {
            n = c->next;
            c->on_ready = 0;
            c->next_ready = NULL;
            sn_conn_close(s, c);
        }
    }
    if (s->conns)
        rd_warn("%zu connections still had operations in flight at exit", s->nconns);
    for (size_t i = 0; i < s->npeers; i++)
        if (s->peers[i].state == SN_PEER_CONNECTING && s->peers[i].fd >= 0)
            close(s->peers[i].fd);
    for (size_t i = 0; i < s->nsegs; i++) {
        struct sn_seg *g = &s->segs[i];
        /* N12: the zeros past the records go (not fsynced: a zero tail is cut at start-up anyway) */
        if (g->dfd >= 0 && (ftruncate(g->fd, (off_t)g->size) < 0 || close(g->dfd) < 0))
            rd_error("cutting the zeros after hot-log segment %llu failed: %s", (unsigned long long)g->no,
                     strerror(errno));
        if (close(g->fd) < 0)
            rd_error("closing a hot-log segment failed: %s", strerror(errno));
    }
    free(s->segs);
    if (close(s->pages_fd) < 0 || close(s->listen_fd) < 0 || close(s->meta_dir_fd) < 0)
        rd_error("closing the data files failed: %s", strerror(errno));
    rd_loop_destroy(&s->loop);
    rd_buf_ring_free(&s->bufring);
    sn_store_free(&s->st);
    rd_buf_free(&s->hl_pending);
    rd_buf_free(&s->hl_flight);
    free(s->pend);
    free(s->flight);
    free(s->dec);
    free(s->dio);
    free(s->zeros);
    sn_pcache_free(&s->pcache);
    if (s->co_imgs)
        munmap(s->co_imgs, (size_t)SN_COALESCE_MAX_PAGES * ENGINE_PAGE_SIZE);
    free(s);
}

int sn_node_run(const struct sn_config *cfg)
{
    struct sn_node *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    s->cfg = *cfg;
    snprintf(s->dir, sizeof(s->dir), "%s", cfg->dir);
    s->listen_fd = s->pages_fd = s->meta_dir_fd = -1;
    s->seg_limit = cfg->hotlog_segment_bytes ? cfg->hotlog_segment_bytes : (64ull << 20);
    s->trim_enabled = !cfg->no_hotlog_trim;
    s->keep_bytes = cfg->hotlog_keep_bytes;
    /* N12: durable O_DIRECT appends unless the file system refuses them, or
     * REDOUBT_SN_HOTLOG_IO=buffered asks for write + fdatasync (A/B, tests). */
    const char *hio = getenv("REDOUBT_SN_HOTLOG_IO");
    s->direct = !(hio && strcmp(hio, "buffered") == 0);
    if (posix_memalign((void **)&s->zeros, SN_DIO_ALIGN, SN_ZFILL_CHUNK) != 0)
        rd_panic("out of memory for the hot-log zero buffer");
    memset(s->zeros, 0, SN_ZFILL_CHUNK);
    s->timer_io.on_cqe = sn_on_timer;
    s->write_io.on_cqe = sn_on_write_done;
    s->sync_io.on_cqe = sn_on_sync_done;
    s->zfill_io.on_cqe = sn_on_zfill_done;
    /* N18: page cache slots (REDOUBT_SN_PAGE_CACHE=N pages; 0: off, for A/B) */
    const char *cbe = getenv("REDOUBT_SN_COALESCE_BUSY_MS"); /* A/B of the busy interval */
    s->coalesce_busy_ms = cbe ? strtoull(cbe, NULL, 10) : SN_COALESCE_BUSY_MS;
    if (s->coalesce_busy_ms < SN_COALESCE_INTERVAL_MS)
        s->coalesce_busy_ms = SN_COALESCE_INTERVAL_MS;
    const char *lae = getenv("REDOUBT_SN_LINK_ACK"); /* N19, on by default; 0: off (A/B) */
    s->link_acks = !(lae && strcmp(lae, "0") == 0);
    const char *pce = getenv("REDOUBT_SN_PAGE_CACHE");
    unsigned long pcn = pce ? strtoul(pce, NULL, 10) : SN_PCACHE_PAGES;
    if (sn_pcache_init(&s->pcache, (uint32_t)RD_MIN(pcn, 1ul << 20)) < 0)
        rd_panic("out of memory for the page cache (%lu pages)", pcn);
    s->next_gen = 1;
    sn_store_init(&s->st);
    char why[256];
    int rc = rd_loop_init(&s->loop, 1024, why, sizeof(why));
    if (rc < 0) {
        rd_error("%s", why);
        return 1;
    }
    if (cfg->cluster_secret_file != NULL) {
        char aerr[512];
        if (rd_auth_load(&s->auth, cfg->cluster_secret_file, aerr, sizeof(aerr)) < 0) {
            rd_error("%s", aerr);
            return 1;
        }
        rd_info("cluster \"%s\": writers, readers and peers authenticate with the cluster secret", s->auth.cluster_id);
    } else {
        rd_warn("no --cluster-secret-file: peers are NOT authenticated (anyone who can connect can move this "
                "node's epoch or truncate its log)");
    }
    rd_raise_nofile();
    /* The port before the data directory: a port in use leaves nothing behind. */
    if (rd_buf_ring_setup(&s->loop, &s->bufring, 256, 65536, SN_BGID) < 0 || sn_parse_peers(s, cfg->peers) < 0 ||
        sn_listen(s) < 0 || sn_open_storage(s) < 0)
        return 1;
    rd_net_init(&s->net, &s->loop, &s->bufring, SN_BGID);
    sn_metrics_start(s);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sn_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        rd_warn("sigaction failed: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    rd_info("storage node %u ready on %s:%d (dir %s, %zu peers, io_uring with multishot recv)", cfg->node_id,
            cfg->bind_addr, cfg->port, s->dir, s->npeers);

    static struct __kernel_timespec tick = {.tv_sec = 0, .tv_nsec = SN_TIMER_US * 1000};
    uint64_t last_bg_ms = 0;
    while (!sn_stop) {
        if (!s->timer_armed) {
            struct io_uring_sqe *sqe = rd_loop_sqe(&s->loop, &s->timer_io);
            io_uring_prep_timeout(sqe, &tick, 0, 0);
            s->timer_armed = 1;
        }
        if (!s->net.accept_armed)
            rd_net_listen(&s->net, s->listen_fd, sn_on_accept);
        rc = rd_loop_run_once(&s->loop, s->net.ready_head ? 0 : SN_TIMER_US * 2);
        if (rc < 0)
            rd_panic("io_uring wait failed: %s", strerror(-rc));
        sn_process_ready(s);
        sn_flush_kick(s);
        uint64_t now = rd_now_ms();
        if (now - last_bg_ms >= SN_TIMER_US / 1000) {
            last_bg_ms = now;
            sn_peers_connect(s, now);
            sn_check_budgets(s, now);
            sn_gossip_send(s, now);
            sn_gap_fill(s, now);
            sn_copy_tick(s, now);
            sn_lack_tick(s, now);
            if (sn_coalesce_due(s, now)) {
                s->last_coalesce_ms = now;
                s->hl_since_coalesce = 0;
                struct timespec c0, c1;
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
                sn_coalesce(s);
                sn_hl_trim(s);
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
                s->stats.coalesce_cpu_us += (uint64_t)((c1.tv_sec - c0.tv_sec) * 1000000 + (c1.tv_nsec - c0.tv_nsec) / 1000);
            }
        }
        sn_send_all(s);
        rd_metrics_poll(&sn_met, sn_metrics_body, s);
    }
    rd_metrics_close(&sn_met);
    rd_info("received a termination signal: finishing the flush in flight and stopping");
    /* What is pending becomes durable (nobody is acknowledged for it now). */
    for (int i = 0; i < 2 && (s->flight_active || s->hl_pending.len); i++) {
        sn_flush_kick(s);
        while (s->flight_active || s->zfill_active)
            if ((rc = rd_loop_run_once(&s->loop, 100000)) < 0)
                rd_panic("io_uring wait failed: %s", strerror(-rc));
    }
    sn_shutdown(s);
    rd_info("stopped cleanly");
    return 0;
}
