/*
 * wal.h — the classic write-ahead log (PostgreSQL style): segment files,
 * LSN = byte position in the log stream, every record checksummed, commit
 * records, group commit with one write + fdatasync per batch issued through
 * io_uring, checkpoints with a control file written atomically, full-page
 * images on the first change to a page after a checkpoint, crash recovery
 * from the checkpoint's redo point. See wal/README.md for formats/invariants.
 *
 * Threading: single-threaded; the async flush runs on the caller's rd_loop.
 */
#ifndef RD_WAL_H
#define RD_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/loop.h"
#include "engine/engine.h"

#define WAL_SEGMENT_SIZE_DEFAULT (16u * 1024u * 1024u)
#define WAL_RECORD_HDR_SIZE 32u
#define WAL_RECORD_ALIGN 8u
#define WAL_SEG_HDR_SIZE 64u

/* WAL record types. Values 1 and 2 are the engine's page-change records
 * (engine_rec_type); the rest are the WAL's own. Never renumber. */
enum wal_rec_type {
    WAL_REC_PAGE_DELTA = 1, /* = ENGINE_REC_PAGE_DELTA */
    WAL_REC_PAGE_IMAGE = 2, /* = ENGINE_REC_PAGE_IMAGE */
    WAL_REC_COMMIT = 16,    /* body: u64 commit wall time (µs since epoch), u64 txn id */
    WAL_REC_CHECKPOINT = 17,/* body: u64 redo lsn, u32 timeline, u64 wall time µs */
    WAL_REC_SWITCH = 18,    /* no body: the rest of this segment is unused */
    WAL_REC_TIMELINE = 19,  /* body: u32 new timeline, u32 previous, u64 switch lsn (issue 3) */
};

/* How WAL writes are made durable (wal/README.md, "Sync methods"). */
enum wal_sync_method {
    WAL_SYNC_AUTO = 0,          /* RD_WAL_SYNC_METHOD from the environment, else the default */
    WAL_SYNC_FDATASYNC = 1,     /* buffered write + linked fdatasync (the default) */
    WAL_SYNC_OPEN_DATASYNC = 2, /* O_DIRECT|O_DSYNC writes of whole 4 KiB blocks, no fsync;
                                   falls back to fdatasync where O_DIRECT is refused (tmpfs) */
};
const char *wal_sync_method_name(int method);

struct wal_options {
    const char *dir;                /* instance dir: holds control and wal/ (created if missing) */
    uint64_t segment_size_bytes;    /* power of two, >= 1 MiB; fixed at init, stored in control */
    uint64_t checkpoint_wal_bytes;  /* wal_needs_checkpoint() after this much WAL since the last */
    uint64_t checkpoint_interval_ms;/* ... or after this much time */
    struct rd_loop *loop;           /* for async flushes; NULL = wal_flush_sync only */
    /* Called (from the loop) each time the durable LSN advances. */
    void (*on_flushed)(void *arg, uint64_t flushed_lsn);
    void *on_flushed_arg;
    enum wal_sync_method sync_method; /* WAL_SYNC_AUTO (0) unless forced */
};

#define WAL_GROUP_HIST 12 /* buckets of wal_stats.group_hist: <=1, <=2, <=4 ... <=1024, more */

struct wal_stats {
    uint64_t records, record_bytes;       /* appended */
    uint64_t image_records, image_bytes;  /* full-page images among them */
    uint64_t commits;
    uint64_t flushes, fsyncs, flush_bytes;/* write+fdatasync batches */
    uint64_t group_commits_max;           /* most commits in one flush */
    uint64_t group_hist[WAL_GROUP_HIST];  /* flushes by their commits: [i] holds n <= 2^i (n = 0 in [0]), last: more */
    uint64_t group_hist_commits;          /* commits counted in group_hist */
    uint64_t checkpoints;
    uint64_t spread_checkpoints;          /* of them, spread (wal_checkpoint_begin/_step) */
    uint64_t flush_lat_us_total;
    uint64_t insert_lsn, flushed_lsn, redo_lsn;
    uint32_t timeline;
    uint64_t system_id;
    uint32_t sync_method;            /* the method in use: WAL_SYNC_FDATASYNC or _OPEN_DATASYNC */
    uint64_t segments_prepared_async;/* next segments made ready in the background */
    uint64_t segments_created_sync;  /* ... created on the append path (fallback or no loop) */
};

struct wal;

/* Counts one flush of `commits` commits in st->group_hist (the metrics' group-commit histogram). */
static inline void wal_group_hist_note(struct wal_stats *st, uint64_t commits)
{
    unsigned i = 0;
    while (i + 1 < WAL_GROUP_HIST && commits > (1ull << i))
        i++;
    st->group_hist[i]++;
    st->group_hist_commits += commits;
}

/* Opens the log in opt->dir; initialises a new one (random system id, timeline
 * 1, empty first segment, control file) if the dir holds none. Does not replay:
 * call wal_recover next. RD_ECORRUPT / RD_EVERSION with a logged message naming
 * the file for a bad control file. */
int wal_open(const struct wal_options *opt, struct wal **out);

/* Crash recovery: replays every record from the control file's redo point
 * into the engine (engine_redo), stopping at the end of valid log. A torn tail
 * (an invalid record with nothing valid after it) is truncated; an invalid
 * record followed by valid ones is corruption: returns RD_ECORRUPT after logging
 * the segment file and offset. Afterwards the engine's dirty pages hold the
 * recovered state, insert and flushed LSN are set to the end of valid log, and
 * the engine's FPI threshold is set to the redo point. */
int wal_recover(struct wal *w, struct engine *e);

/* The sink to give the engine (engine_options.sink). */
struct engine_sink wal_engine_sink(struct wal *w);

/* Appends a commit record; *end_lsn is the LSN a client must wait for. */
int wal_append_commit(struct wal *w, uint64_t txn_id, uint64_t *end_lsn);

uint64_t wal_insert_lsn(const struct wal *w);  /* end of the last appended record */
uint64_t wal_flushed_lsn(const struct wal *w); /* everything below is durable */
int wal_flush_in_flight(const struct wal *w);
/* Bytes appended but not yet handed to a write: the server stops reading
 * client input while this is above its limit (back-pressure). */
uint64_t wal_unflushed_bytes(const struct wal *w);

/* Group commit: if there are unflushed bytes and no flush is in flight, queues
 * the write(s) and a linked fdatasync on the loop; everything appended until
 * the completion shares the next flush. A failed or short write or fsync is
 * fatal: rd_panic (never retried, never acknowledged). */
void wal_flush_async(struct wal *w);

/* Blocking: makes the log durable up to at least lsn with pwrite+fdatasync.
 * Used by eviction (engine flush_to), checkpoints and shutdown. */
int wal_flush_sync(struct wal *w, uint64_t lsn);

/* Checkpoint: redo = insert LSN; flush WAL; engine_flush_dirty; append and
 * flush a CHECKPOINT record; write the control file atomically (tmp, fsync,
 * rename, fsync dir); set the engine's FPI threshold to redo; remove segments
 * wholly below redo (and below wal_set_keep_lsn's value). Blocking. */
/* Fast promotion (PostgreSQL's fast_promote): a promoted replica starts writing
 * without a checkpoint. Its control file's redo point stays at the last restart
 * point, which is the redo point of one of the old primary's checkpoints, and the
 * WAL after it holds a full-page image for the first change of every page changed
 * since (the old primary's rule); so setting the FPI threshold there keeps torn-page
 * protection (W-FPI), and crash recovery replays from there across the TIMELINE
 * record. The next checkpoint comes on the usual schedule (WAL size or interval). */
void wal_promote_fast(struct wal *w, struct engine *e);
int wal_checkpoint(struct wal *w, struct engine *e);
int wal_needs_checkpoint(const struct wal *w);
/* Spread checkpoint (wal_checkpoint.c): _begin sets the redo point (flushing
 * the WAL to it) and the full-page-image threshold; each _step writes one slice
 * of the dirty pages, paced so the sweep ends about spread_ms after _begin,
 * and sets *done once the sweep is complete; then _end fdatasyncs the data
 * file, logs the CHECKPOINT record, writes the control file and removes old
 * segments (save replication slots before it, as before wal_checkpoint).
 * Call them only between transactions, with no WAL flush in flight. A
 * wal_checkpoint or wal_shutdown meanwhile supersedes it. Errors: as
 * wal_checkpoint (the caller panics). */
int wal_checkpoint_begin(struct wal *w, struct engine *e, uint64_t spread_ms);
int wal_checkpoint_step(struct wal *w, struct engine *e, int *done);
int wal_checkpoint_end(struct wal *w, struct engine *e);
int wal_checkpoint_active(const struct wal *w);
/* W17: a replica's spread restart point at the primary's CHECKPOINT record (checkpoint_lsn,
 * redo_lsn), stepped with wal_checkpoint_step and finished with wal_restartpoint_end (engine_sync,
 * control file, segment removal). wal_restartpoint (blocking) and wal_promote_fast supersede it. */
int wal_restartpoint_begin(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn,
                           uint64_t spread_ms);
int wal_restartpoint_end(struct wal *w, struct engine *e);
/* 1 while the spread sweep in progress is a restart point. */
int wal_restartpoint_active(const struct wal *w);
/* Clean shutdown: checkpoint and mark the control file "shut down". */
int wal_shutdown(struct wal *w, struct engine *e);
/* Frees memory and closes files (no flush). */
int wal_close(struct wal *w);

/* Segments at or above this LSN are kept by checkpoints (replication slots). */
void wal_set_keep_lsn(struct wal *w, uint64_t lsn);

void wal_get_stats(const struct wal *w, struct wal_stats *out);

/* ---- reading the log (recovery, redoubt-dump, WAL sender) ---- */

struct wal_record {
    uint64_t lsn;      /* start */
    uint64_t end_lsn;  /* start + aligned total length */
    uint64_t prev_lsn;
    uint8_t type;
    uint8_t flags;     /* ENGINE_REC_FLAG_MTR_END ... */
    uint32_t page_id;  /* ENGINE_PAGE_NONE for non-page records */
    const uint8_t *body; /* valid until the next wal_reader call */
    uint32_t body_len;
};

struct wal_reader;
/* Reads the log in dir (the instance dir) from start_lsn (0 = the oldest segment's first record). */
int wal_reader_open(const char *dir, uint64_t start_lsn, struct wal_reader **out);
/* The same along timeline's history (0: the control file's timeline). A replica
 * that followed its primary to a new timeline is on it before its control file
 * says so (that changes at its next restart point). */
int wal_reader_open_timeline(const char *dir, uint64_t start_lsn, uint32_t timeline, struct wal_reader **out);
/* 1 and *rec filled, 0 at the end of valid log, or a negative error
 * (RD_ECORRUPT: invalid record; wal_reader_position says where). */
int wal_reader_next(struct wal_reader *r, struct wal_record *rec);
/* Segment file path and offset of the reader's current position (for messages). */
void wal_reader_position(const struct wal_reader *r, char *path, size_t path_len, uint64_t *offset);
void wal_reader_close(struct wal_reader *r);

/* Encodes/decodes one record (header + body) — pure functions, fuzzed. */
size_t wal_record_encode(uint8_t *dst, size_t dst_cap, uint64_t prev_lsn, uint8_t type, uint8_t flags,
                         uint32_t page_id, const uint8_t *body, size_t body_len);
/* Validates and decodes the record at src (avail bytes available). Returns the
 * aligned total length (>0), or RD_ECORRUPT. rec->lsn/end_lsn are left to the caller. */
int wal_record_decode(const uint8_t *src, size_t avail, struct wal_record *rec);
const char *wal_rec_type_name(uint8_t type);

/* ---- control file ---- */
struct wal_control {
    uint64_t system_id;
    uint32_t timeline;
    uint32_t state;          /* WAL_STATE_* */
    uint64_t checkpoint_lsn; /* start of the last CHECKPOINT record */
    uint64_t redo_lsn;       /* replay starts here */
    uint64_t segment_size_bytes;
    uint64_t time_us;        /* wall time of the last update */
};
enum { WAL_STATE_IN_PRODUCTION = 1, WAL_STATE_SHUT_DOWN = 2 };
int wal_control_read(const char *dir, struct wal_control *out);  /* RD_ECORRUPT, RD_EVERSION, -ENOENT */
int wal_control_write(const char *dir, const struct wal_control *c); /* atomic */

/* ---- replication (classic mode, issue 3) ---- */

/* Replica: appends one record exactly as encoded by the primary (header +
 * body, as carried in REPL_WAL). Validates it (wal_record_decode, then the
 * prev-LSN chain against this log) and places it with the same layout rule as
 * the primary (segment switch included), so both logs are byte-identical;
 * returns RD_ECORRUPT if the record is invalid or lands anywhere but at
 * expected_lsn. *end_lsn is the LSN after it. */
int wal_append_encoded(struct wal *w, const uint8_t *rec, size_t avail, uint64_t expected_lsn,
                       uint64_t *end_lsn, size_t *consumed);

/* LSN everything below which has been handed to write() and completed (the
 * write CQE of a flush batch), i.e. in the OS page cache: remote_write. */
uint64_t wal_written_lsn(const struct wal *w);

/* Sender: sequential reader over this log's segment files for one replica.
 * wal_sender_read copies whole encoded records whose start LSN lies in
 * [from_lsn, upto_lsn) — clamped to wal_written_lsn: a caller that ships only
 * durable WAL passes wal_flushed_lsn — appending at
 * most max_bytes (but at least one record if any) to out. Sets *first_lsn (the
 * LSN of the first record copied, which is from_lsn or, if from_lsn was the
 * end of a segment's usable space, the next segment's first record) and
 * *next_lsn (after the last copied). Returns the number of records copied,
 * 0 if none, RD_ENOTFOUND if from_lsn is in a segment already removed (the
 * replica must re-clone), RD_ECORRUPT. */
struct wal_sender_cursor;
int wal_sender_open(struct wal *w, struct wal_sender_cursor **out);
int wal_sender_read(struct wal_sender_cursor *c, uint64_t from_lsn, uint64_t upto_lsn, size_t max_bytes,
                    struct rd_buf *out, uint64_t *first_lsn, uint64_t *next_lsn);
void wal_sender_close(struct wal_sender_cursor *c);

/* Oldest LSN still present in the segment files. */
uint64_t wal_oldest_lsn(const struct wal *w);

/* Cuts the log at lsn (a record boundary <= insert LSN): drops what follows
 * in memory and on disk (zeroed, fdatasynced; later segments removed). Used by
 * a replica being promoted to drop a transaction whose commit never arrived. */
int wal_truncate(struct wal *w, uint64_t lsn);

/* Promotion (PostgreSQL timelines): appends a WAL_REC_TIMELINE record
 * (new = current + 1) at the insert LSN, flushes it, writes the history file
 * wal/<TTTTTTTT>.history (one line per ancestor: "<tli> <switch lsn hex>"),
 * updates the control file; from then on new segments carry the new timeline
 * in their name and header; the segment in which the switch happens is copied
 * to the new timeline's name (PostgreSQL does the same). *switch_lsn = the
 * LSN of the TIMELINE record. */
int wal_switch_timeline(struct wal *w, uint64_t *switch_lsn);
/* The same with new = max(current + 1, min_tli) (W15): a promotion under term T
 * passes T, so two promotions never create the same timeline number from
 * different parents (PostgreSQL consults the archive's history files instead). */
int wal_switch_timeline_min(struct wal *w, uint32_t min_tli, uint64_t *switch_lsn);
/* W16: timeline numbers are (promotion term << WAL_TLI_CRASH_BITS) + crash restarts. A promotion
 * under term T starts block T (the next block if T is 0 or not above the current one), so every
 * failover's history has numbers of its own; a crash restart (CR3) takes current + 1 inside the
 * block, which only the node promoted with that block's term ever extends. */
#define WAL_TLI_CRASH_BITS 12u
#define WAL_TLI_CRASH_MASK ((1u << WAL_TLI_CRASH_BITS) - 1u)
/* The timeline a promotion under term (0: none) switches to from cur: 0, or -ERANGE (the term or
 * the number does not fit 32 bits). */
int wal_promotion_timeline(uint32_t cur, uint64_t term, uint32_t *out);
/* The timeline a crash restart switches to from cur: 0, or -ERANGE (4095 crash restarts on one
 * block: the next number would be another promotion's). */
int wal_crash_timeline(uint32_t cur, uint32_t *out);
/* The timeline and where it began (0 for timeline 1), and its parent. */
uint32_t wal_timeline(const struct wal *w);
uint64_t wal_timeline_switch_lsn(const struct wal *w);
uint32_t wal_timeline_parent(const struct wal *w);

/* Replica: follows a primary's timeline switch seen in the stream (a
 * WAL_REC_TIMELINE record was appended with wal_append_encoded): records the
 * new timeline in the control file and history like wal_switch_timeline. */
int wal_follow_timeline(struct wal *w, uint32_t new_timeline, uint64_t switch_lsn);

/* Replica restart point: like a checkpoint but at the primary's CHECKPOINT
 * record: flushes the engine's dirty pages, writes the control file with
 * redo = redo_lsn (taken from that record) and checkpoint = its LSN, and removes
 * segments below redo (and below the keep LSN). Appends nothing to the log. */
int wal_restartpoint(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn);

/* Cloning: creates a new instance dir from a base backup: control file with
 * system_id, timeline, redo/checkpoint LSN and segment size, and an empty WAL
 * whose insert LSN is redo_lsn (the segment holding it created with the
 * primary's header). Records then arrive with wal_append_encoded from redo_lsn. */
int wal_init_from_backup(const char *dir, uint64_t system_id, uint32_t timeline, uint64_t redo_lsn,
                         uint64_t checkpoint_lsn, uint64_t segment_size_bytes);

#endif
