/*
 * sn_proto.h — the storage-node protocol (aurora mode, issue 4): the writer↔storage
 * wire contract, in redo/ because both sides use it (storage-node/ and aurora/). Every message
 * is one frame (common/frame.h); the frame's epoch is the volume epoch of the
 * sender (writer, reader, or peer node). A node refuses (SN_MSG_ERROR with
 * SN_ERR_STALE_EPOCH) every write from an epoch lower than the one it holds.
 *
 * Connections: writers, readers and peer nodes connect to the node's port and
 * send frames directly (no RESP handshake on this port). INFO is served on the
 * same port to RESP clients: a connection whose first byte is not the frame
 * magic's first byte ('R' of "RDF1" is 0x52; RESP starts with '*' or a letter
 * other than 'R' for INFO/PING) is treated as RESP. (Implementation detail of
 * storage-node/; documented in its README.)
 *
 * Messages (payload layouts, little-endian):
 *  SN_MSG_WRITE      writer -> node: a redo batch (redo/redo.h batch payload)
 *  SN_MSG_ACK        node -> writer: u64 scl, u64 durable_lsn (highest LSN
 *                    persisted, possibly with gaps), u64 epoch held. 24 bytes.
 *  SN_MSG_GETPAGE    reader/writer -> node: u64 req_id, u32 page_id, u32 0, u64 read_lsn. 24 bytes.
 *  SN_MSG_PAGE       node -> requester: u64 req_id, u32 status (0 ok, else SN_ERR_*),
 *                    u32 0, u64 page_lsn, then 8192 page bytes if ok. 24 (+8192) bytes.
 *  SN_MSG_FETCH      peer/writer -> node: u64 req_id, u64 from_lsn, u64 to_lsn
 *                    (inclusive), u32 max_bytes, u32 0. 32 bytes.
 *  SN_MSG_LOG        node -> requester: u64 req_id, then a redo batch payload
 *                    of the records it holds in the range (may be empty: nrecords 0).
 *  SN_MSG_EPOCH      new writer -> node: u64 new_epoch. 8 bytes. The node
 *                    persists it (fsync) if higher, then answers SN_MSG_STATE.
 *  SN_MSG_STATE      node -> requester: u64 epoch, u64 scl, u64 max_cpl (highest
 *                    CPL <= scl), u64 max_lsn (highest held), u64 truncated_above
 *                    (or 0). 40 bytes.
 *  SN_MSG_TRUNCATE   writer -> node: u64 epoch, u64 keep_upto_lsn: records above
 *                    are discarded and never accepted again for this epoch range
 *                    (persisted as a truncation range). 16 bytes. Answered with STATE.
 *  SN_MSG_READPOINT  writer -> node: u64 min_read_lsn (oldest read point of
 *                    writer and readers): page history below may be GC'd. 8 bytes.
 *  SN_MSG_ERROR      node -> anyone: u32 code (SN_ERR_*), u32 0, text. Then the
 *                    node keeps the connection (stale epoch) or closes (protocol error).
 *  SN_MSG_GOSSIP     node -> peer and back: u32 node_id, u32 kind (0 ask: answer with
 *                    yours; 1 answer), u64 scl, u64 coalesced_lsn, u64 trimmed_lsn
 *                    (LSNs <= it may be gone from the sender's hot log). 32 bytes.
 *                    A node asks each peer over its own link; the answer tells it
 *                    the peer's SCL, which holds back its hot-log trimming.
 *  SN_MSG_PAGECOPY   lagging node -> peer: u64 req_id, u32 from_page_id, u32
 *                    max_pages (1..SN_PAGES_MAX). 16 bytes. Answered with PAGES.
 *  SN_MSG_PAGES      peer -> requester: u64 req_id, u64 coalesced_lsn, u64
 *                    coalesced_cpl (<= coalesced_lsn), u32 next_page_id (where to
 *                    continue; SN_PAGES_DONE: nothing is left), u32 npages
 *                    (<= SN_PAGES_MAX), then npages entries {u32 page_id, u32 0,
 *                    8192-byte sealed page-store image}, page ids ascending and
 *                    below next_page_id. 32 + npages * 8200 bytes.
 *  (type 61)         writer -> node: a commit-trace mark right before the WRITE carrying a
 *                    sampled commit (TRACE_MARK_FRAME_TYPE, common/trace.h, C22). 16 bytes.
 */
#ifndef RD_SN_PROTO_H
#define RD_SN_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum sn_msg_type {
    SN_MSG_WRITE = 32,
    SN_MSG_ACK = 33,
    SN_MSG_GETPAGE = 34,
    SN_MSG_PAGE = 35,
    SN_MSG_FETCH = 36,
    SN_MSG_LOG = 37,
    SN_MSG_EPOCH = 38,
    SN_MSG_STATE = 39,
    SN_MSG_TRUNCATE = 40,
    SN_MSG_READPOINT = 41,
    SN_MSG_ERROR = 42,
    SN_MSG_GOSSIP = 43,
    SN_MSG_PAGECOPY = 44,
    SN_MSG_PAGES = 45,
};

enum sn_err {
    SN_OK = 0,
    SN_ERR_STALE_EPOCH = 1,   /* the sender's epoch is older than the node's */
    SN_ERR_NOT_YET = 2,       /* read_lsn above the node's SCL */
    SN_ERR_TOO_OLD = 3,       /* read_lsn below the garbage-collected history */
    SN_ERR_CORRUPT = 4,       /* the page or log failed its checksum and could not be repaired */
    SN_ERR_PROTO = 5,
};

struct sn_ack { uint64_t scl, durable_lsn, epoch; };
struct sn_getpage { uint64_t req_id; uint32_t page_id; uint64_t read_lsn; };
struct sn_page { uint64_t req_id; uint32_t status; uint64_t page_lsn; const uint8_t *page; };
struct sn_fetch { uint64_t req_id, from_lsn, to_lsn; uint32_t max_bytes; };
struct sn_state { uint64_t epoch, scl, max_cpl, max_lsn, truncated_above; };
struct sn_truncate { uint64_t epoch, keep_upto_lsn; };
enum sn_gossip_kind { SN_GOSSIP_ASK = 0, SN_GOSSIP_ANSWER = 1 };
struct sn_gossip { uint32_t node_id, kind; uint64_t scl, coalesced_lsn, trimmed_lsn; };
struct sn_pagecopy { uint64_t req_id; uint32_t from_page_id, max_pages; };
#define SN_PAGES_MAX 64u                 /* pages in one PAGES answer */
#define SN_PAGES_DONE 0xffffffffu        /* next_page_id: the page store has nothing further */
#define SN_PAGES_FIXED_SIZE 32u
#define SN_PAGES_ENTRY_SIZE (8u + 8192u) /* u32 page_id, u32 0, the page */
/* entries: npages * SN_PAGES_ENTRY_SIZE bytes in wire layout (sn_pages_put
 * writes one); a parsed message points into the frame payload (valid as
 * long as it is). */
struct sn_pages {
    uint64_t req_id, coalesced_lsn, coalesced_cpl;
    uint32_t next_page_id, npages;
    const uint8_t *entries;
};

/* Encoders append a whole frame (frame_append) with the given epoch. */
int sn_send_ack(struct rd_buf *out, uint64_t epoch, const struct sn_ack *m);
int sn_send_getpage(struct rd_buf *out, uint64_t epoch, const struct sn_getpage *m);
int sn_send_page(struct rd_buf *out, uint64_t epoch, const struct sn_page *m);
int sn_send_fetch(struct rd_buf *out, uint64_t epoch, const struct sn_fetch *m);
int sn_send_epoch(struct rd_buf *out, uint64_t epoch, uint64_t new_epoch);
int sn_send_state(struct rd_buf *out, uint64_t epoch, const struct sn_state *m);
int sn_send_truncate(struct rd_buf *out, uint64_t epoch, const struct sn_truncate *m);
int sn_send_readpoint(struct rd_buf *out, uint64_t epoch, uint64_t min_read_lsn);
int sn_send_error(struct rd_buf *out, uint64_t epoch, uint32_t code, const char *text);
/* SN_MSG_LOG: u64 req_id + batch payload. */
int sn_send_log(struct rd_buf *out, uint64_t epoch, uint64_t req_id, const uint8_t *batch, size_t batch_len);
int sn_send_gossip(struct rd_buf *out, uint64_t epoch, const struct sn_gossip *m);
int sn_send_pagecopy(struct rd_buf *out, uint64_t epoch, const struct sn_pagecopy *m);
int sn_send_pages(struct rd_buf *out, uint64_t epoch, const struct sn_pages *m);
/* Writes entry i of a PAGES entries buffer: page_id and its 8192-byte image. */
void sn_pages_put(uint8_t *entries, uint32_t i, uint32_t page_id, const uint8_t *page);
/* Entry i of a parsed PAGES message (i < npages): its page id and image. */
uint32_t sn_pages_id(const struct sn_pages *m, uint32_t i);
const uint8_t *sn_pages_image(const struct sn_pages *m, uint32_t i);

int sn_parse_ack(const uint8_t *p, size_t n, struct sn_ack *m);
int sn_parse_getpage(const uint8_t *p, size_t n, struct sn_getpage *m);
int sn_parse_page(const uint8_t *p, size_t n, struct sn_page *m);
int sn_parse_fetch(const uint8_t *p, size_t n, struct sn_fetch *m);
int sn_parse_epoch(const uint8_t *p, size_t n, uint64_t *new_epoch);
int sn_parse_state(const uint8_t *p, size_t n, struct sn_state *m);
int sn_parse_truncate(const uint8_t *p, size_t n, struct sn_truncate *m);
int sn_parse_readpoint(const uint8_t *p, size_t n, uint64_t *min_read_lsn);
int sn_parse_error(const uint8_t *p, size_t n, uint32_t *code, char *text, size_t text_cap);
int sn_parse_log(const uint8_t *p, size_t n, uint64_t *req_id, const uint8_t **batch, size_t *batch_len);
int sn_parse_gossip(const uint8_t *p, size_t n, struct sn_gossip *m);
int sn_parse_pagecopy(const uint8_t *p, size_t n, struct sn_pagecopy *m);
int sn_parse_pages(const uint8_t *p, size_t n, struct sn_pages *m);

/* Additions (storage-node/): longest SN_MSG_ERROR text (the encoder
 * truncates, the decoder refuses longer), and a name for logs. */
#define SN_ERROR_MAX_TEXT 512u
const char *sn_msg_name(uint8_t type);

#endif
