/*
 * engine.h — the storage engine: 8 KiB pages, a bounded buffer pool, a B+tree
 * over byte-string keys, mini-transactions, and the one function that applies
 * a page-change record to a page. This header is the manual; see
 * engine/README.md for invariants and the page format.
 *
 * The engine knows nothing of WAL files, redo shipping or sockets. Every change
 * it makes to a page is emitted, at the end of the mini-transaction that made
 * it, as a page-change record into a sink supplied by the owner (the WAL in
 * classic/standalone mode, the redo shipper in aurora mode). The sink assigns
 * the record's LSN; the engine stamps that LSN into the page header.
 *
 * Threading: single-threaded. All calls come from one thread.
 */
#ifndef RD_ENGINE_H
#define RD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define ENGINE_PAGE_SIZE 8192u
#define ENGINE_KEY_MAX 1024u                 /* bytes; longer keys get RD_ETOOBIG */
#define ENGINE_VALUE_MAX (1024u * 1024u)     /* bytes; longer values get RD_ETOOBIG */
#define ENGINE_PAGE_NONE 0xFFFFFFFFu

/* Page-change record types. The numeric values are part of the WAL and redo
 * formats: never renumber. */
enum engine_rec_type {
    /* body: u16 nranges, then nranges × { u16 offset, u16 len, len bytes }.
     * Ranges lie within [ENGINE_PAGE_HDR_APPLY_FROM, ENGINE_PAGE_SIZE). */
    ENGINE_REC_PAGE_DELTA = 1,
    /* body: u16 lower, u16 upper, bytes [HDR_APPLY_FROM, lower), bytes [upper, PAGE_SIZE).
     * The hole [lower, upper) is zero. A full-page image ("FPI"). */
    ENGINE_REC_PAGE_IMAGE = 2,
};

/* Flag on the last record of a mini-transaction: a consistency point. */
#define ENGINE_REC_FLAG_MTR_END 0x01u

/* Page header bytes [0, ENGINE_PAGE_HDR_APPLY_FROM) — checksum and page LSN —
 * are never carried by records: apply sets the LSN, sealing sets the checksum. */
#define ENGINE_PAGE_HDR_APPLY_FROM 16u

struct engine_sink {
    void *ctx;
    /*
     * Appends one page-change record. body is valid only during the call.
     * On success returns 0 and sets *end_lsn to the LSN just past the record
     * (the value the engine stamps into the page). A negative return aborts the
     * mini-transaction's remaining emission; the engine returns that error to
     * its caller and the owner must treat the instance as failed (the in-memory
     * pages are ahead of the log).
     */
    int (*emit)(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body,
                size_t body_len, uint64_t *end_lsn);
    /*
     * WAL rule: called before a dirty page whose LSN is `lsn` is written to the
     * data file; must return only once the log is durable up to lsn (0), or
     * fail (negative: the page is not written). May be NULL when there is no
     * data file.
     */
    int (*flush_to)(void *ctx, uint64_t lsn);
    /*
     * No data file (aurora): where pages come from and when they may leave.
     * read_page fills one page (sealed, or all zeros for a page never written)
     * from shared storage at the owner's read point; 0 or a negative error.
     * durable_lsn returns the LSN up to which the owner's changes are durable
     * elsewhere (VDL): a dirty page with LSN <= it may be dropped from the
     * pool. Both may be NULL (then missing pages read as zeros and dirty pages
     * stay in the pool).
     */
    int (*read_page)(void *ctx, uint32_t page_id, uint8_t *page);
    uint64_t (*durable_lsn)(void *ctx);
    /*
     * Optional (aurora): the non-blocking form of read_page. The engine calls it
     * instead of read_page only where a miss changes nothing (E16): inside
     * engine_get / engine_exists / engine_scan, and inside the one mini-transaction
     * of an engine_put (inline value) or engine_delete while the running
     * transaction has changed no page yet. It returns 0 with the page, a negative
     * error, or RD_EAGAIN: the page was requested and is not here yet; the
     * operation then returns RD_EAGAIN having changed no page, emitted no record
     * and held no pin (engine_scan may already have called its callback for some
     * keys: the caller discards them). The owner installs the page when it
     * arrives (engine_install_page) and runs the operation (and its transaction)
     * again. NULL: read_page everywhere.
     */
    int (*read_page_nb)(void *ctx, uint32_t page_id, uint8_t *page);
};

struct engine_options {
    /* Data file path; created (with an initial meta page, fsynced) if missing
     * or empty. NULL: no data file — pages come from sink.read_page and live
     * in the pool (aurora); a volume whose meta page reads as zeros is
     * initialised by emitting page images of the meta and root pages. */
    const char *data_path;
    size_t cache_pages; /* buffer pool frames; minimum 64 */
    struct engine_sink sink;
};

struct engine;

struct engine_stats {
    uint64_t pages_total;      /* pages in the data file (incl. meta and free) */
    uint64_t pages_free;       /* on the free list */
    uint64_t cache_pages;      /* pool size */
    uint64_t cache_hits, cache_misses, evictions, dirty_writes;
    uint64_t records_emitted, image_records, delta_records, record_bytes;
    uint64_t splits;
    uint64_t read_waits;       /* misses answered RD_EAGAIN by sink.read_page_nb (E16) */
    uint64_t pages_installed;  /* engine_install_page */
    uint64_t keys;             /* DBSIZE */
    uint32_t height;
};

/* Opens the engine. On error returns negative and *out is untouched; a data
 * file whose meta page fails its checksum gives RD_ECORRUPT (logged with the
 * path). */
int engine_open(const struct engine_options *opt, struct engine **out);
/* Frees memory and closes the file. Does not write dirty pages (callers
 * checkpoint first). Returns 0 or the close error. */
int engine_close(struct engine *e);

/* ---- key/value operations; each is one or more mini-transactions ---- */

/* 0 and the value appended to *out (out->len grows by the value length), or RD_ENOTFOUND. */
int engine_get(struct engine *e, const uint8_t *key, size_t key_len, struct rd_buf *out);
/* Insert or overwrite. RD_ETOOBIG for key_len == 0 or > ENGINE_KEY_MAX or
 * value_len > ENGINE_VALUE_MAX (nothing changed). */
int engine_put(struct engine *e, const uint8_t *key, size_t key_len, const uint8_t *val,
               size_t val_len);
/* 0, or RD_ENOTFOUND (nothing changed). */
int engine_delete(struct engine *e, const uint8_t *key, size_t key_len);
/* 1 if the key exists, 0 if not, negative on error. */
int engine_exists(struct engine *e, const uint8_t *key, size_t key_len);

/*
 * Range scan in key order over keys >= start (start_len 0 = from the first).
 * Calls fn for at most max_keys keys (fn's pointers are valid only during the
 * call; a nonzero return from fn stops the scan and is returned). If more keys
 * remain, copies the next key into *next (else next->len is left 0).
 * with_values=0 skips reading overflow values (fn gets val=NULL, val_len=real length).
 */
typedef int (*engine_scan_fn)(void *arg, const uint8_t *key, size_t key_len, const uint8_t *val,
                              size_t val_len);
int engine_scan(struct engine *e, const uint8_t *start, size_t start_len, size_t max_keys,
                int with_values, engine_scan_fn fn, void *arg, struct rd_buf *next);

uint64_t engine_key_count(const struct engine *e);

/* Aurora readers: forget a cached page (its next use reads it again through
 * sink.read_page); page 0 (meta) is re-read at once. Pinned or dirty pages
 * are not touched (returns RD_ESTATE). 0 if dropped or not cached. */
int engine_invalidate_page(struct engine *e, uint32_t page_id);
/* Aurora (non-blocking GetPage): puts a page fetched from shared storage into
 * the pool, clean and unpinned, if page_id is not cached (a cached page is never
 * replaced: it is at least as new). page must verify (checksum, or all zeros),
 * carry page_id and pass the layout check (else RD_ECORRUPT, nothing changed), and
 * its LSN must be <= max_lsn, the owner's read point (else RD_ESTALE: a page from
 * above the read point would show part of the future). 1 installed, 0 already
 * cached or no frame could be freed (the next read asks again). E17. */
int engine_install_page(struct engine *e, uint32_t page_id, const uint8_t *page, uint64_t max_lsn);
/* Aurora readers fed with redo: applies a record to the page only if it is
 * cached (a page not cached is read at the read point when needed); the page
 * stays clean. 1 applied, 0 not cached or already newer, RD_ECORRUPT (a
 * malformed body: nothing changed; a body that breaks the page: the page is
 * dropped from the cache, except the meta page, which is left unchanged),
 * RD_ESTATE (pinned or dirty: nothing changed). After an error the caller
 * must drop the page (engine_invalidate_page) or its whole cache. */
int engine_redo_if_cached(struct engine *e, uint32_t page_id, uint8_t rec_type, const uint8_t *body,
                          size_t body_len, uint64_t end_lsn);

/*
 * Transactions (no-steal): between txn_begin and txn_end, every page the
 * transaction dirties stays in the pool (cannot be evicted and written to the
 * data file), so a crash can never leave a data page holding part of a
 * transaction whose commit record is not durable. If a transaction would need
 * more pages than the pool can spare, the operation fails with RD_ETOOBIG and
 * the instance must treat itself as failed (the caller limits transaction
 * sizes so this cannot happen in practice). Nesting is not allowed.
 */
void engine_txn_begin(struct engine *e);
void engine_txn_end(struct engine *e);
/* Whether the running transaction changed any page so far (or the engine has
 * failed, E11). A failed operation rolls its own mini-transaction back (E4), so
 * after a failure with no change the engine is exactly as before the
 * transaction: the caller may report the error instead of stopping. */
int engine_txn_changed(const struct engine *e);

/* ---- checkpoints and recovery ---- */

/* First change to a page whose LSN is below this threshold is logged as a
 * full-page image (ENGINE_REC_PAGE_IMAGE); later ones as deltas. 0 = never. */
void engine_set_fpi_threshold(struct engine *e, uint64_t redo_lsn);

/* Writes every dirty page (after sink.flush_to for its LSN) and fdatasyncs the
 * data file. Returns 0, or a negative error (the caller panics). */
int engine_flush_dirty(struct engine *e);

/* A slice of a spread checkpoint (wal_checkpoint_step): looks at up to
 * max_scan buffer frames from *cursor on (advancing it) and writes each dirty
 * page whose page LSN is <= max_lsn (after sink.flush_to), at most max_writes
 * of them, starting each one's writeback (sync_file_range; not durable: the
 * checkpoint ends with engine_sync). A page changed
 * after max_lsn is skipped: its first change after the redo point logged a
 * full-page image. Inside a transaction or mini-transaction nothing is done.
 * Returns pages written, or a negative error. */
int engine_flush_dirty_slice(struct engine *e, size_t *cursor, uint64_t max_lsn, size_t max_writes,
                             size_t max_scan);
/* fdatasync of the data file (0 or a negative error). */
int engine_sync(struct engine *e);
/* Number of buffer frames (the range of a slice cursor). */
size_t engine_frame_count(const struct engine *e);

/* Applies one record during recovery or replication: fetches the page (for a
 * PAGE_IMAGE without reading it from disk), applies it if the page LSN <
 * end_lsn (idempotent), marks the page dirty. RD_ECORRUPT on a malformed body
 * or a page that fails its checksum. Extends the data file as needed. */
int engine_redo(struct engine *e, uint32_t page_id, uint8_t rec_type, const uint8_t *body,
                size_t body_len, uint64_t end_lsn);
/* After recovery or a batch of redo: re-reads the meta page (root, counts). */
int engine_reload_meta(struct engine *e);

/* ---- pure page functions (shared with replicas, storage nodes, tools) ---- */

/* Applies a record to an 8 KiB page image in memory and sets its LSN to
 * end_lsn. Validates the body completely before changing anything: RD_ECORRUPT
 * for any malformed body (never an assert). Does not check the page LSN. */
int engine_page_apply(uint8_t *page, uint8_t rec_type, const uint8_t *body, size_t body_len,
                      uint64_t end_lsn);
/* Computes and stores the checksum of a page (before writing it anywhere). */
void engine_page_seal(uint8_t *page);
/* 0 if the checksum matches or the page is all zeros (never written), else RD_ECORRUPT. */
int engine_page_verify(const uint8_t *page);
uint64_t engine_page_lsn(const uint8_t *page);
uint32_t engine_page_id(const uint8_t *page);
uint8_t engine_page_type(const uint8_t *page);
/* Writes a human description of a page (header, slots, keys) to f (FILE *). */
void engine_page_describe(const uint8_t *page, void *f);
const char *engine_rec_type_name(uint8_t rec_type);

void engine_get_stats(const struct engine *e, struct engine_stats *out);

#endif
