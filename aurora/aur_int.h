/* aur_int.h — internals shared by the files of the aurora wing (aurora/aur*.c).
 * Not a public interface. */
#ifndef RD_AUR_INT_H
#define RD_AUR_INT_H

#include "common/frame.h"
#include "common/util.h"
#include "redo/redo.h"
#include "redo/sn_proto.h"
#include "server/server_int.h"

/* The aurora role's state (server.role_state). */
struct aur_ctl { /* blocking control socket to a storage node (epochs, GetPage) */
    int fd;
    struct rd_buf in, scratch;
    uint64_t retry_ms;
};
/* aur_getpage.c: non-blocking GetPage */
struct aur_gp_try { int asked, skipped; uint64_t req_id, sent_us; }; /* one node, one request */
struct aur_gp_nodeinfo { int usable, scl_known; uint64_t scl, lat_us; };
#define AUR_GP_SENT_RING 64
struct aur_gp_link { /* lat_us: EWMA of its GetPage answer times, late ones included */
    struct conn *conn;
    uint64_t retry_ms, lat_us;
    struct { uint64_t req_id, sent_us; int answered; } sent[AUR_GP_SENT_RING]; /* recent requests, by req_id % ring */
};
struct aur_gp;
#define AUR_GP_MAX 256               /* GetPage requests in flight (one per page) */
#define AUR_GP_HEDGE_MIN_US 2000u    /* ask a second node after max(this, 2 x the node's latency) ... */
#define AUR_GP_HEDGE_MAX_US 50000u   /* ... capped here */
#define AUR_GP_NODE_TIMEOUT_MS 500u  /* a node silent this long is skipped for the request */
#define AUR_GP_RETRY_MS 20u          /* every node skipped: ask all again after this */
#define AUR_SENT_RING 4096
struct aur_node {
    char host[256];
    int port;
    struct conn *conn; /* async redo link (writer) */
    uint64_t retry_ms;
    int down_logged, ever_up;
    uint64_t scl, acks, last_ack_ms, ack_lat_us;
    struct rd_buf held;  /* WRITE frames shipped while the link authenticates (sent after PROOF, EPOCH) */
    struct { uint64_t last_lsn, send_us; } sent[AUR_SENT_RING];
    size_t sent_head, nsent;
    uint64_t scl_moved_ms;   /* S27: when this node's SCL last rose (or we last resent to it) */
    uint64_t resends;        /* S27: frames resent to it */
    int resend_logged;       /* S27: logged since its SCL last rose */
};
/* S27: the WRITE frames not yet under VDL, kept to resend to a node whose SCL is stuck below
 * them (frames lost with a link: no node may have those records, and gossip cannot fill them). */
#define AUR_RETAIN_MAX 8192
#define AUR_RETAIN_MAX_BYTES (64u << 20)
#define AUR_RESEND_STUCK_MS 500
struct aur_retain {
    struct rd_buf buf;                                  /* the frames, back to back */
    struct { uint64_t last_lsn; size_t len; } ent[AUR_RETAIN_MAX];
    size_t head, n;
    int overflow_logged;
};
struct aurora;
void aur_retain_add(struct aurora *a, const uint8_t *frame, size_t len, uint64_t last_lsn);
void aur_retain_trim(struct aurora *a);
void aur_retain_check(struct server *s, unsigned i, uint64_t node_scl);
struct aurora {
    struct server *srv;    /* the instance */
    struct aur_node node[REDO_NODES];
    struct aur_retain retain; /* S27 */
    struct aur_ctl ctl[REDO_NODES];
    uint64_t epoch;
    int role_writer, fenced;
    uint64_t last_lsn;     /* last LSN assigned */
    uint64_t read_lsn;     /* GetPage read point */
    uint64_t recovered_vdl;
    struct redo_batch batch;
    int batch_open;
    struct redo_quorum q;
    struct rd_buf frame, feed, scratch;
    struct rd_buf feedrec; /* redo feed: records above VDL: u64 lsn, u32 page, u8 type, u32 len, body */
    struct { uint64_t lsn; uint32_t page_id; } *changed; /* pages changed above VDL, for the feed */
    size_t nchanged, changed_cap;
    size_t nreaders;
    uint64_t req_id, getpage_requests, getpage_hedged;
    struct aur_gp *gp; /* aur_getpage.c (allocated on first use) */
    uint64_t gp_sweep_ms;
    uint64_t getpage_misses, getpage_hedge_wins, getpage_retries, getpage_late, getpage_stale, getpage_failed, getpage_full,
        getpage_sync, getpage_wait_us_total, getpage_wait_us_max;
    uint64_t redo_records, commits, redo_bytes_raw, redo_bytes_batch, redo_bytes_wire, net_bytes_sent, frames_sent;
    uint64_t readpoint_ms, min_read_point, status_ms, scl_poll_ms;
    /* reader */
    char writer_host[256];
    int writer_port;
    struct conn *feed_conn;
    uint64_t feed_retry_ms, writer_vdl, feed_send_us, lag_us, feed_msgs;
    int meta_stale;
    int feed_fresh; /* no FEED yet on the current subscription */
};

static inline struct aurora *aur_of(const struct server *s)
{
    rd_assert(s->role_state != NULL);
    return s->role_state;
}

/* The aurora wing's names for the instance's connection kinds. */
#define CONN_READER_FEED CONN_DOWNSTREAM /* writer side of a reader's feed */
#define CONN_FEED_UP CONN_UPSTREAM       /* reader side of its feed from the writer */
#define CONN_STORAGE CONN_LINK           /* writer -> storage node redo link */

#define AUR_MSG_FEED 50        /* writer -> reader: u64 vdl, u64 send_us, u32 n, n x u32 page ids */
#define AUR_MSG_READPOINT 51   /* reader -> writer: u64 read point */
#define AUR_MSG_FEED_REDO 52   /* writer -> reader: u64 vdl, u64 send_us, u32 n, n x {u64 lsn, u32 page, u8 type, u32 len, body} */
#define AUR_MAX_INFLIGHT_LSNS 200000u /* back-pressure: LSNs allocated above VDL */
#define AUR_FEED_REDO_MAX_BYTES (4u << 20) /* more records than this at one VDL: a page-id FEED instead */
#define AUR_LINK_MAX_QUEUED (64u << 20)
#define AUR_CONNECT_TIMEOUT_MS 300
#define AUR_RECONNECT_MS 300u
#define AUR_GETPAGE_TIMEOUT_MS 2000

static inline uint64_t aur_now_ms(void) { return rd_now_ms(); }

/* The aurora role (the public face of this wing is role_aurora, server/role.h). */
/* aurora.c */
int aurora_init(struct server *s);
void aurora_ship(struct server *s);
void aurora_tick(struct server *s);
void aurora_process_input(struct server *s, struct conn *c);
void aurora_on_conn_closed(struct server *s, struct conn *c);
void aurora_cmd_reader(struct server *s, struct conn *c, const struct resp_args *a);
int aurora_promote(struct server *s, char *err, size_t err_len);
int aurora_repoint(struct server *s, const char *host, int port, char *err, size_t err_len);
void aurora_info(struct server *s, struct rd_buf *b);
uint64_t aurora_insert_lsn(const struct server *s);
int aurora_append_commit(struct server *s, uint64_t txn_id, uint64_t *lsn);
int aurora_backpressure(const struct server *s);
int aurora_become_writer(struct server *s);

/* aurora.c — the reader feed's decoders (pure; fuzz_feed). FEED: 0 or RD_EPROTO.
 * FEED_REDO: NULL if the frame is whole and valid for a reader at read_lsn
 * (records in (.., vdl], LSNs ascending, lengths exact), else what is wrong. */
int aur_feed_check(const uint8_t *p, size_t n);
const char *aur_feed_redo_check(const uint8_t *p, size_t n, uint64_t read_lsn);


/* aur_storage.c */
int aur_node_epoch(struct aurora *a, unsigned i, uint64_t epoch, struct sn_state *st);
int aur_node_truncate(struct aurora *a, unsigned i, uint64_t epoch, uint64_t keep, struct sn_state *st);
void aur_nodes_state_all(struct aurora *a, struct rd_buf req[REDO_NODES], const int ask[REDO_NODES], int timeout_ms,
                         int ok[REDO_NODES], struct sn_state st[REDO_NODES]);
int aur_read_page(void *ctx, uint32_t page_id, uint8_t *page);
void aur_ctl_close(struct aur_ctl *c);

/* aur_getpage.c (its header comment has the request state table) */
int aur_read_page_nb(void *ctx, uint32_t page_id, uint8_t *page); /* engine sink.read_page_nb */
void aur_gp_on_frame(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n);
void aur_gp_conn_closed(struct server *s, struct conn *c);
/* A page changed or was read another way while it may be asked for (ENGINE_PAGE_NONE: every page):
 * an answer to a request already sent is not installed; the page is asked again (S22). */
void aur_gp_touched(struct aurora *a, uint32_t page_id);
void aur_gp_tick(struct server *s);
void aur_gp_info(struct aurora *a, struct rd_buf *b);
/* Pure (unit-tested): the node to ask next (-1: none left), and the hedge delay. */
int aur_gp_pick(const struct aur_gp_try tries[REDO_NODES], const struct aur_gp_nodeinfo nodes[REDO_NODES],
                uint64_t lsn, unsigned rotate);
uint64_t aur_gp_hedge_delay_us(uint64_t best_lat_us);

/* aur_writer.c */
int aur_emit(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body, size_t body_len,
             uint64_t *end_lsn);
uint64_t aur_durable(void *ctx);
void aur_link_on_frame(struct server *s, struct conn *c, const struct frame_hdr *h, const uint8_t *p, size_t n);
void aur_link_connect(struct server *s, unsigned i);

/* aur_feed.c */
void aur_vdl_advanced(struct server *s);
void aur_reader_on_feed(struct server *s, const uint8_t *p, size_t n);
void aur_reader_on_feed_redo(struct server *s, const uint8_t *p, size_t n);
void aur_reader_reread_meta(struct server *s);
void aur_reader_connect(struct server *s);
int aur_reader_open_at(struct server *s, uint64_t vdl);
void aur_reader_drop_cache(struct server *s);

#endif
