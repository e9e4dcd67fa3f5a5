/*
 * proto.h — the classic replication protocol (primary <-> replica), carried
 * in frames (common/frame.h) whose epoch field is the sender's timeline.
 *
 * Handshake: the replica connects to the primary's client port and sends the
 * RESP command
 *     REDOUBT.REPLICATE <cluster-id-hex|0> <name> <timeline> <start-lsn> <mode>
 * mode = STREAM (resume from start-lsn) or CLONE (empty replica: base backup).
 * From then on both directions carry frames only. The primary answers with
 * REPL_HELLO, or REPL_ERROR and closes.
 *
 * Every payload is little-endian, fixed fields first; decoders check exact
 * lengths and return RD_ECORRUPT for anything else (never assert).
 */
#ifndef RD_REPL_PROTO_H
#define RD_REPL_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

enum repl_msg_type {
    REPL_HELLO = 1,        /* P->R: accepted; how streaming starts */
    REPL_WAL = 2,          /* P->R: WAL records */
    REPL_KEEPALIVE = 3,    /* P->R: flushed LSN and time, when idle */
    REPL_STATUS = 4,       /* R->P: write/flush/apply LSNs */
    REPL_ERROR = 5,        /* either: a message, then the sender closes */
    REPL_BACKUP_BEGIN = 6, /* P->R: base backup starts */
    REPL_BACKUP_PAGES = 7, /* P->R: consecutive data pages */
    REPL_BACKUP_END = 8,   /* P->R: base backup done; WAL follows from redo lsn */
};

/* REPL_HELLO: u64 system_id, u32 timeline, u32 reserved 0, u64 start_lsn,
 * u64 primary_flush_lsn, u64 switch_lsn (where the primary's timeline began;
 * a replica on an older timeline past it has diverged), u32 prev_timeline,
 * u32 reserved 0. 48 bytes. */
struct repl_hello {
    uint64_t system_id;
    uint32_t timeline;
    uint32_t term;        /* the primary's term (replica/README.md T1-T6) */
    uint64_t start_lsn;
    uint64_t primary_flush_lsn;
    uint64_t switch_lsn;
    uint32_t prev_timeline;
};

/* REPL_WAL: u64 start_lsn (of the first record), u64 end_lsn (after the last),
 * u64 primary_flush_lsn, u64 send_time_us (primary wall clock), then the
 * records exactly as encoded in the primary's WAL (header + body + padding,
 * back to back). 32-byte fixed part. */
struct repl_wal {
    uint64_t start_lsn;
    uint64_t end_lsn;
    uint64_t primary_flush_lsn;
    uint64_t send_time_us;
    const uint8_t *records; /* points into the decoded payload */
    size_t records_len;
};

/* REPL_KEEPALIVE: u64 primary_flush_lsn, u64 send_time_us, u8 reply_requested, 7 zero. 24 bytes. */
struct repl_keepalive {
    uint64_t primary_flush_lsn;
    uint64_t send_time_us;
    uint8_t reply_requested;
};

/* REPL_STATUS: u64 write_lsn, flush_lsn, apply_lsn, then the primary send
 * times (echoed) of the newest WAL message written / flushed / applied, then
 * u64 reply_time_us (replica wall clock). 56 bytes. */
struct repl_status {
    uint64_t write_lsn, flush_lsn, apply_lsn;
    uint64_t write_echo_us, flush_echo_us, apply_echo_us;
    uint64_t reply_time_us;
};

/* REPL_BACKUP_BEGIN: u64 system_id, u32 timeline, u32 reserved, u64 redo_lsn,
 * u64 checkpoint_lsn, u64 segment_size_bytes, u32 npages, u32 reserved. 48 bytes. */
struct repl_backup_begin {
    uint64_t system_id;
    uint32_t timeline;
    uint32_t term;        /* the primary's term */
    uint64_t redo_lsn;
    uint64_t checkpoint_lsn;
    uint64_t segment_size_bytes;
    uint32_t npages;
};

/* REPL_BACKUP_PAGES: u32 first_page, u32 count, then count × 8192 bytes. */
struct repl_backup_pages {
    uint32_t first_page;
    uint32_t count;
    const uint8_t *pages;
};

/* REPL_BACKUP_END: u64 consistent_lsn: the replica may serve reads only after
 * applying WAL up to here (PostgreSQL's minimum recovery point). 8 bytes. */

/* Encoders append one complete frame (header + payload) to out; 0 or -ENOMEM/RD_ETOOBIG. */
int repl_send_hello(struct rd_buf *out, uint64_t epoch, const struct repl_hello *m);
int repl_send_wal(struct rd_buf *out, uint64_t epoch, const struct repl_wal *m, int compress);
int repl_send_keepalive(struct rd_buf *out, uint64_t epoch, const struct repl_keepalive *m);
int repl_send_status(struct rd_buf *out, uint64_t epoch, const struct repl_status *m);
int repl_send_error(struct rd_buf *out, uint64_t epoch, const char *msg);
int repl_send_backup_begin(struct rd_buf *out, uint64_t epoch, const struct repl_backup_begin *m);
int repl_send_backup_pages(struct rd_buf *out, uint64_t epoch, uint32_t first_page, uint32_t count,
                           const uint8_t *pages);
int repl_send_backup_end(struct rd_buf *out, uint64_t epoch, uint64_t consistent_lsn);

/* Decoders of a frame payload (after frame_decode). 0 or RD_ECORRUPT. */
int repl_parse_hello(const uint8_t *p, size_t n, struct repl_hello *m);
int repl_parse_wal(const uint8_t *p, size_t n, struct repl_wal *m);
int repl_parse_keepalive(const uint8_t *p, size_t n, struct repl_keepalive *m);
int repl_parse_status(const uint8_t *p, size_t n, struct repl_status *m);
/* Copies the message (NUL-terminated, non-printable bytes replaced) into msg. */
int repl_parse_error(const uint8_t *p, size_t n, char *msg, size_t msg_cap);
int repl_parse_backup_begin(const uint8_t *p, size_t n, struct repl_backup_begin *m);
int repl_parse_backup_pages(const uint8_t *p, size_t n, struct repl_backup_pages *m);
int repl_parse_backup_end(const uint8_t *p, size_t n, uint64_t *consistent_lsn);

const char *repl_msg_name(uint8_t type);

/* The primary's replication slots file, DIR/slots (written atomically when a
 * slot is created or dropped and before every checkpoint, so WAL a registered
 * replica needs survives a primary restart — PostgreSQL's pg_replslot):
 *   8 bytes magic "RDSLOTS1", u32 version = 1, u32 count (<= REPL_SLOTS_MAX),
 *   count x { 64 bytes name (NUL-padded, at least one NUL), u64 restart_lsn },
 *   u64 XXH3-64 (seed RD_SEED_SLOTS) of everything before it.            */
#define REPL_SLOTS_MAX 32
#define REPL_SLOT_NAME_BYTES 64
struct repl_slot_rec {
    char name[REPL_SLOT_NAME_BYTES];
    uint64_t restart_lsn;
};
_Static_assert(REPL_SLOT_NAME_BYTES + 8 == 72, "slot entry is 72 bytes on disk");
int repl_slots_encode(struct rd_buf *out, const struct repl_slot_rec *v, size_t n);
/* 0 and *n filled, or RD_ECORRUPT (bad magic, version, length, checksum, name). */
int repl_slots_decode(const uint8_t *p, size_t len, struct repl_slot_rec *v, size_t cap, size_t *n);

/* A replica's pending entry (in memory, struct upstream.pending): a received
 * record not applied yet, kept until its transaction's COMMIT is at or below the
 * primary's flush LSN (CR2). Page records carry their body; COMMIT / CHECKPOINT /
 * TIMELINE markers carry { u64 primary send time [, u64 checkpoint lsn, u64 redo lsn] }.
 *   offset size field
 *    0      8   end_lsn of the record
 *    8      1   record type (WAL_REC_*)
 *    9      4   page id (ENGINE_PAGE_NONE for markers)
 *   13      4   body length
 *   17      n   body                                                        */
#define REPL_PENDING_HDR_BYTES 17u
struct repl_pending {
    uint64_t end_lsn;
    uint8_t type;
    uint32_t page_id;
    uint32_t body_len;
    const uint8_t *body; /* points into the buffer it was read from */
};
_Static_assert(REPL_PENDING_HDR_BYTES == 8 + 1 + 4 + 4, "pending entry header: u64 + u8 + u32 + u32");
/* Appends one entry; -ENOMEM. */
int repl_pending_append(struct rd_buf *out, const struct repl_pending *e);
/* Reads the entry at p (n bytes available): bytes used, or RD_ECORRUPT if it
 * does not fit (the buffer is ours, so that is a programmer error for callers
 * that only read what they wrote; the fuzz target checks the bound). */
int repl_pending_read(const uint8_t *p, size_t n, struct repl_pending *e);

/* The node's term file, DIR/term (classic fencing, replica/README.md T1-T6),
 * written atomically (rd_write_file_atomic) before a new term is acted on:
 *   8 bytes magic "RDTERM01", u32 version = 1, u32 reserved = 0,
 *   u64 term (< 2^32: it travels as a u32 in HELLO / BACKUP_BEGIN),
 *   u64 XXH3-64 (seed RD_SEED_SLOTS ^ 0x7465726d) of the 24 bytes before it. */
#define REPL_TERM_FILE_BYTES 32u
#define REPL_TERM_MAX 0xffffffffull
void repl_term_encode(uint8_t out[REPL_TERM_FILE_BYTES], uint64_t term);
/* 0 and *term, or RD_ECORRUPT (length, magic, version, reserved, checksum, range). */
int repl_term_decode(const uint8_t *p, size_t len, uint64_t *term);

#endif
