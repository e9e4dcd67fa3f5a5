/*
 * redo.h — aurora mode's compact redo (issue 4): the writer encodes each
 * engine page-change record as a redo record, batches records from many
 * transactions into one frame per send, and tracks the storage nodes'
 * acknowledgements to compute VCL and VDL (SIGMOD 2017/2018 Aurora papers).
 *
 * LSNs here are record sequence numbers: each record's LSN is the previous
 * record's + 1 (no byte positions: there is no log file on the writer).
 *
 * Record encoding, REDO_FMT_COMPACT (what the writer sends; redo/README.md):
 *   u8 tag        bits 0-4 type, bit 5 CPL, bit 6 back-link = lsn - 1; bit 7 commit body u64
 *   [prev_pg_delta] varint, only without bit 6 (0 = no back-link; never 1)
 *   page records: varint page_id, varint body_len, body; a commit: its body, a varint
 *   (tag bit 7 clear) or, with bit 7, 8 bytes u64 (redo_commit_body)
 *   (the LSN is implied: first_lsn + index; R2)
 *
 * Record encoding, REDO_FMT_V1 (older batches; and the storage nodes' hot log,
 * with the absolute lsn first); all integers are LEB128 varints unless noted:
 *   lsn_delta     lsn - (previous record's lsn in this batch, or batch.first_lsn - 1)
 *   prev_pg_delta lsn - (LSN of the previous record of the same protection
 *                 group: the back-link; 0 for the first record ever)
 *   page_id       (ENGINE_PAGE_NONE + 1 wraps to 0: encoded as page_id + 1, 0 = no page)
 *   u8 type       ENGINE_REC_PAGE_DELTA / ENGINE_REC_PAGE_IMAGE, or REDO_REC_COMMIT
 *   u8 flags      bit 0: consistency point (end of a mini-transaction / commit: CPL)
 *   body_len, then body bytes (the engine's record body, unchanged)
 *
 * Batch payload (what goes in one frame to a storage node; frame type
 * SN_MSG_WRITE, frame epoch = volume epoch):
 *   u64 first_lsn, u64 last_lsn, u32 nrecords, u16 pg (protection group, 0),
 *   u8 format (REDO_FMT_*: a reader of the first form only sees a nonzero u32 "pg" and refuses), u8 0,
 *   u64 vdl (writer's VDL when sent: lets nodes garbage-collect and readers
 *   know), then the records. Decoders validate every length and that the LSNs
 *   run first_lsn..last_lsn without holes; RD_ECORRUPT otherwise.
 */
#ifndef RD_REDO_H
#define RD_REDO_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define REDO_REC_COMMIT 16u     /* a transaction's commit: body the txn id (redo_commit_body) */
#define REDO_FLAG_CPL 0x01u     /* consistency point */
/* Batch formats (header bytes 20..23; redo/README.md "Formats", R5): */
#define REDO_FMT_V1 0u          /* the first form: every record as lsn_delta, prev_pg_delta, page, type, flags, len */
#define REDO_FMT_COMPACT 1u     /* one tag byte (type, CPL, back-link = previous LSN); what redo_batch_begin writes */
#define REDO_BATCH_HDR_SIZE 32u
#define REDO_MAX_BODY (16u * 1024u)
#define REDO_NODES 6u
#define REDO_WRITE_QUORUM 4u
#define REDO_READ_QUORUM 3u

struct redo_rec {
    uint64_t lsn;
    uint64_t prev_pg_lsn; /* back-link */
    uint32_t page_id;     /* ENGINE_PAGE_NONE for a commit */
    uint8_t type;
    uint8_t flags;
    const uint8_t *body;  /* points into the decoded buffer */
    uint32_t body_len;
};

struct redo_batch_hdr {
    uint64_t first_lsn, last_lsn;
    uint32_t nrecords;
    uint32_t pg;
    uint64_t vdl;
    uint8_t format; /* REDO_FMT_V1 or REDO_FMT_COMPACT */
};

/* Batch builder: redo_batch_begin, then redo_batch_add for each record (in
 * LSN order, consecutive), then redo_batch_finish writes the header. */
struct redo_batch {
    struct rd_buf buf;
    struct redo_batch_hdr hdr;
    uint64_t last_lsn;
};
/* Starts a REDO_FMT_COMPACT batch. */
void redo_batch_begin(struct redo_batch *b, uint64_t first_lsn);
/* The same in a given format (tests, and re-encoding what was decoded). */
void redo_batch_begin_format(struct redo_batch *b, uint64_t first_lsn, uint8_t format);
int redo_batch_add(struct redo_batch *b, const struct redo_rec *r);
/* Completes the header (vdl) and returns the payload (b->buf) ready for frame_append. */
void redo_batch_finish(struct redo_batch *b, uint64_t vdl);
void redo_batch_free(struct redo_batch *b);

/* Batch reader: validates the header and iterates the records. */
int redo_batch_parse_hdr(const uint8_t *p, size_t n, struct redo_batch_hdr *h);
/* *off starts at REDO_BATCH_HDR_SIZE; returns 1 and fills r, 0 at the end, RD_ECORRUPT. */
int redo_batch_next(const uint8_t *p, size_t n, size_t *off, uint64_t *prev_lsn, struct redo_rec *r);

/* A commit's body: the txn id as a canonical varint of 1..7 bytes (txn < 2^49; what the
 * writer sends since the compact format), or 8 bytes u64 LE (older writers, txn >= 2^49).
 * The length tells which. redo_commit_body writes it (out: 8 bytes) and returns its length;
 * redo_commit_txn reads it back: 0, or RD_ECORRUPT. */
#define REDO_COMMIT_BODY_MAX 8u
size_t redo_commit_body(uint8_t *out, uint64_t txn_id);
int redo_commit_txn(const uint8_t *body, size_t body_len, uint64_t *txn_id);

/* Encodes one record alone (storage nodes keep records in this form in their
 * hot log; the lsn is absolute there). Returns bytes written or RD_ETOOBIG. */
size_t redo_rec_encode_abs(uint8_t *dst, size_t cap, const struct redo_rec *r);
int redo_rec_decode_abs(const uint8_t *src, size_t n, struct redo_rec *r, size_t *used);

/* ---- quorum tracking on the writer ---- */
struct redo_quorum {
    uint64_t scl[REDO_NODES]; /* each node's segment-complete LSN as last acknowledged */
    uint64_t vcl, vdl;
    /* consistency points not yet below VDL, ascending (bounded ring) */
    uint64_t *cpl;
    size_t cpl_head, cpl_n, cpl_cap;
};
int redo_quorum_init(struct redo_quorum *q, size_t max_pending_cpls);
void redo_quorum_free(struct redo_quorum *q);
/* Registers a consistency point (LSN of a record with REDO_FLAG_CPL), in ascending order. */
int redo_quorum_add_cpl(struct redo_quorum *q, uint64_t lsn);
/* A node acknowledged SCL scl (never moves backwards). Recomputes VCL (the
 * highest LSN held by >= 4 of 6 nodes: the 4th largest SCL) and VDL (the
 * highest registered CPL <= VCL). Returns 1 if VDL advanced. */
int redo_quorum_ack(struct redo_quorum *q, unsigned node, uint64_t scl);
/* Resets a node's SCL (node restarted / truncated). */
void redo_quorum_reset_node(struct redo_quorum *q, unsigned node, uint64_t scl);

/* ---- recovery ---- */
/* Given the (SCL, highest CPL <= SCL) answers of at least REDO_READ_QUORUM
 * nodes after a crash, returns the recovery point: the highest LSN that could
 * have been acknowledged to a client is <= the max SCL among them (any write
 * quorum of 4 intersects any read quorum of 3); the new VDL is the highest
 * consistency point that is complete on the read quorum after repair: here,
 * the largest cpl[i] such that the records up to it exist on some responder.
 * Returns RD_EQUORUM with fewer than 3 answers. */
struct redo_node_state {
    uint64_t scl;      /* node's SCL */
    uint64_t max_cpl;  /* highest CPL it holds at or below its SCL */
};
int redo_recovery_point(const struct redo_node_state *st, size_t n, uint64_t *vcl_out, uint64_t *vdl_out);

#endif
