/*
 * sn_int.h — internals of the storage-node daemon shared by its files and
 * its unit tests: the hot-log record format (sn_hotlog.c), the in-memory
 * record store with SCL and per-page history (sn_store.c), and the daemon
 * entry point (sn_node.c). Formats and invariants: storage-node/README.md.
 */
#ifndef RD_SN_INT_H
#define RD_SN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "redo/redo.h"

/* ------------------------------------------------------------ hot log */

/* Seed of every hot-log checksum (file header and records): "HLOG1". */
#define SN_SEED_HOTLOG 0x484c4f4731ull
/* Seed of the meta file checksum: "SMETA". */
#define SN_SEED_META 0x534d455441ull

#define SN_HOTLOG_MAGIC 0x4c484452u /* "RDHL" little-endian */
#define SN_HOTLOG_VERSION 1u
#define SN_HOTLOG_FILE_HDR_SIZE 32u
#define SN_HOTLOG_REC_HDR_SIZE 24u
/* Largest encoded redo record: a REDO_MAX_BODY body plus its varints. */
#define SN_HOTLOG_MAX_PAYLOAD (REDO_MAX_BODY + 64u)
#define SN_HOTLOG_MAX_REC (SN_HOTLOG_REC_HDR_SIZE + SN_HOTLOG_MAX_PAYLOAD)
/* Page ids above this are refused (the page store is a sparse file of
 * page_id * 8 KiB: 2^24 pages = 128 GiB). */
#define SN_MAX_PAGE_ID ((1u << 24) - 1u)

/* Writes the 32-byte file header. */
void sn_hotlog_file_hdr(uint8_t *dst, uint32_t node_id);
/* 0, RD_EVERSION (known magic, other version) or RD_ECORRUPT. */
int sn_hotlog_check_file_hdr(const uint8_t *src, size_t n, uint32_t *node_id);

/* Appends one record (header + redo_rec_encode_abs payload) to out.
 * Returns the bytes appended (> 0), RD_ETOOBIG or -ENOMEM. */
int sn_hotlog_rec_append(struct rd_buf *out, uint64_t epoch, const struct redo_rec *r);
/* Decodes the record at src[0..n): 1 and *used (r->body points into src),
 * 0 if src holds only part of it, RD_ECORRUPT if it is invalid. */
int sn_hotlog_rec_decode(const uint8_t *src, size_t n, uint64_t *epoch, struct redo_rec *r, size_t *used);

/* Scans a whole hot-log image (after the file header) at base offset
 * SN_HOTLOG_FILE_HDR_SIZE. fn is called for each valid record in order
 * (off = its file offset). Stops at the first invalid or partial record. */
struct sn_scan_result {
    uint64_t valid_end;   /* file offset just past the last valid record */
    uint64_t records;
    int corrupt;          /* 1: a bad record with more bytes after it (not a torn tail) */
    int torn;             /* 1: a partial or bad last record (cut at valid_end) */
};
typedef int (*sn_scan_fn)(void *arg, uint64_t off, uint32_t len, uint64_t epoch, const struct redo_rec *r);
int sn_hotlog_scan(const uint8_t *file, size_t file_len, sn_scan_fn fn, void *arg, struct sn_scan_result *res);

/* Hot-log segments (README "Files"): DIR/hotlog is the segment taking
 * appends; when it is full it is renamed DIR/hotlog.N (N = its segment
 * number, also in its file header at [12,20)) and a new DIR/hotlog with
 * number N+1 replaces it. The single DIR/hotlog of older versions is segment
 * 0 (its header holds zero there). A record's hot-log offset is virtual:
 * segment number << SN_HL_SEG_SHIFT | offset in its file, so offsets grow
 * with arrival order across segments and, in segment 0, equal the file
 * offsets of older versions (meta truncation ranges stay valid). */
#define SN_HL_SEG_SHIFT 40u
#define SN_HL_VOFF(seg, off) (((uint64_t)(seg) << SN_HL_SEG_SHIFT) | (uint64_t)(off))
#define SN_HL_VSEG(v) ((uint64_t)(v) >> SN_HL_SEG_SHIFT)
#define SN_HL_FOFF(v) ((uint64_t)(v) & ((1ull << SN_HL_SEG_SHIFT) - 1u))
/* Largest segment number. */
#define SN_HL_MAX_SEG ((1ull << 23) - 1u)
/* The file header of segment seg. */
void sn_hotlog_file_hdr_seg(uint8_t *dst, uint32_t node_id, uint64_t seg);
/* The segment number in a (checked) file header. */
uint64_t sn_hotlog_hdr_seg(const uint8_t *src);
/* The path of a sealed segment (DIR/hotlog.N), or of DIR/hotlog if !sealed. */
void sn_hotlog_seg_path(char *out, size_t cap, const char *dir, uint64_t no, int sealed);
/* 1 and *no if name is "hotlog.N" (N decimal, 0 <= N <= SN_HL_MAX_SEG, no
 * leading zero), else 0. */
int sn_hotlog_seg_name(const char *name, uint64_t *no);
/* Lists the sealed segments (DIR/hotlog.N) of dir, ascending, into a
 * malloc'ed array (*nos, *n; NULL and 0 if none); *active: DIR/hotlog
 * exists. 0 or -errno (opendir failed). */
int sn_hotlog_segments(const char *dir, uint64_t **nos, size_t *n, int *active);

/* ------------------------------------------------------------ record store */

struct sn_rec {
    uint64_t lsn, prev_pg_lsn;
    uint64_t epoch;     /* frame epoch under which the record was received */
    uint64_t hl_off;    /* offset of its hot-log record */
    uint32_t hl_len;    /* bytes of its hot-log record (header + payload) */
    uint32_t page_id;
    uint32_t body_len;
    uint8_t type, flags;
    uint8_t durable;    /* its hot-log bytes are fdatasynced */
    uint8_t *body;      /* owned copy while lsn > coalesced_lsn, else NULL (read from the hot log) */
};

struct sn_tab_ent { uint64_t key; uint32_t val; };
struct sn_tab { struct sn_tab_ent *e; size_t cap, n; }; /* key 0 = empty slot */
struct sn_lsnidx { uint32_t *v; uint64_t lo; size_t cap; };  /* v[lsn - lo] = index + 1, 0: none */

struct sn_page_hist {
    uint32_t page_id;
    int corrupt;        /* its page-store image failed verification and was not repaired */
    uint64_t *lsn;      /* records of this page with coalesced_lsn < lsn <= scl, ascending */
    uint32_t n, cap;
};

struct sn_store {
    struct sn_rec *recs;
    size_t nrecs, recs_cap;
    struct sn_lsnidx by_lsn;       /* lsn -> index in recs (dense array, sn_store.c) */
    struct sn_tab far;             /* ... for LSNs too far from the others for the array (not expected) */
    struct sn_page_hist *pages;
    size_t npages, pages_cap;
    struct sn_tab by_page;         /* page_id + 1 -> index in pages */
    uint64_t scl;                  /* every LSN in [1, scl] is held and durable */
    uint64_t durable_max;          /* highest durable LSN held (maybe above a gap) */
    uint64_t max_cpl;              /* highest consistency point <= scl */
    uint64_t coalesced_lsn;        /* page store holds every record <= this */
    uint64_t hot_records;          /* records with an in-memory body */
    uint64_t trimmed_lsn;          /* LSNs <= this may be gone from the hot log (trimmed; in the page store) */
    uint64_t trimmed_cpl;          /* a consistency point <= coalesced_lsn known held (max_cpl never drops below) */
    uint32_t adv_idx;              /* index of the record sn_store_advance last passed (a hint only) */
};

void sn_store_init(struct sn_store *st);
void sn_store_free(struct sn_store *st);
/* The record with this LSN, or NULL. Valid until the next add/truncate. */
struct sn_rec *sn_store_get(struct sn_store *st, uint64_t lsn);
/* The same, trying recs[idx] first (a hint, e.g. where sn_store_add put it:
 * indices move when records are dropped, then the index is used). */
struct sn_rec *sn_store_at(struct sn_store *st, uint32_t idx, uint64_t lsn);
/* Adds a record not held yet (asserted). Copies the body when
 * r->lsn > coalesced_lsn. Returns 0 or -ENOMEM. */
int sn_store_add(struct sn_store *st, const struct redo_rec *r, uint64_t epoch, uint64_t hl_off,
                 uint32_t hl_len, int durable);
/* Advances scl over durable consecutive LSNs; returns how far it moved. */
uint64_t sn_store_advance(struct sn_store *st);
/* The SCL sn_store_advance would reach if every record held now were durable
 * (nothing is changed): the SCL a flush will reach when every held record
 * that is not durable is in it (the linked ACK of N19). */
uint64_t sn_store_scl_if_held_durable(struct sn_store *st);
/* Drops every record above keep_upto (keep_upto >= coalesced_lsn). */
void sn_store_truncate(struct sn_store *st, uint64_t keep_upto);
/* Hot-log trimming: drops every record whose hot-log offset is below
 * min_hl_off (all of them <= upto <= coalesced_lsn) and notes that LSNs
 * <= upto may be gone. Returns the number dropped. */
size_t sn_store_trim(struct sn_store *st, uint64_t min_hl_off, uint64_t upto);
/* Recovery of a trimmed hot log: every LSN <= lsn (<= coalesced_lsn) is in
 * the page store, so scl starts there; cpl is the newest consistency point
 * <= lsn (from meta). Call before sn_store_advance. */
void sn_store_trimmed_floor(struct sn_store *st, uint64_t lsn, uint64_t cpl);
/* Page-copy catch-up (README N11): the page store now holds every record
 * <= base (> coalesced_lsn), copied from a peer; cpl is the newest
 * consistency point <= base. Drops every record <= base and its history,
 * sets coalesced_lsn = base, and floors scl, max_cpl and the trimmed point
 * there. Returns the number of records dropped. Call sn_store_advance after. */
size_t sn_store_rebase(struct sn_store *st, uint64_t base, uint64_t cpl);
/* The page store now holds every record <= upto (<= scl): drops history and bodies. */
void sn_store_gc(struct sn_store *st, uint64_t upto);
struct sn_page_hist *sn_store_page(struct sn_store *st, uint32_t page_id);
/* page holds the page-store image of page_id (as of coalesced_lsn or a
 * little later, see README); applies the page's records with
 * page_lsn < lsn <= read_lsn. 0, RD_ESTALE if the image is already newer
 * than read_lsn, RD_ECORRUPT if a record does not apply. */
int sn_store_materialise(struct sn_store *st, uint32_t page_id, uint64_t read_lsn, uint8_t *page);

/* ------------------------------------------------------------ meta file, recovery rules (sn_files.c) */

/* DIR/meta, written whole (layout in sn_files.c and README). */
#define SN_MAX_TRUNC 64u
#define SN_META_MAGIC 0x4d534452u /* "RDSM" little-endian */
#define SN_META_VERSION 1u
#define SN_META_TRUNC_OFF 48u
#define SN_META_SIZE (SN_META_TRUNC_OFF + SN_MAX_TRUNC * 24u + 8u)

struct sn_trunc { uint64_t epoch, keep_upto, hl_off; };

struct sn_meta {
    uint32_t version, node_id, ntrunc;
    uint64_t epoch, coalesced_lsn;
    uint64_t scl;                          /* when written (informative) */
    uint64_t coalesced_cpl;                /* newest consistency point <= coalesced_lsn (0: unknown) */
    struct sn_trunc trunc[SN_MAX_TRUNC];   /* the first min(ntrunc, SN_MAX_TRUNC) */
    int size_ok, magic_ok, checksum_ok;    /* set by sn_meta_decode */
};

/* Writes the SN_META_SIZE-byte image of m (version SN_META_VERSION) to dst. */
void sn_meta_encode(uint8_t *dst, const struct sn_meta *m);
/* Decodes a meta image src[0..n) (n as read: it must be SN_META_SIZE). Fills
 * every field it can read, also on failure (for tools). 0; RD_ECORRUPT for a
 * wrong size, magic or checksum (size_ok/magic_ok/checksum_ok tell which) or,
 * with all three ok, more than SN_MAX_TRUNC ranges; RD_EVERSION for another
 * version (checked after the checksum). */
int sn_meta_decode(const uint8_t *src, size_t n, struct sn_meta *m);

/* N6: a record delivered under `epoch` with this LSN lies in a range a later
 * epoch truncated. */
int sn_trunc_refuses(const struct sn_trunc *t, uint32_t ntrunc, uint64_t epoch, uint64_t lsn);
/* Recovery (N6): 1 if the hot-log record at file offset hl_off is dropped at
 * start-up because a truncation covers it (then or by its epoch). */
int sn_trunc_drops(const struct sn_trunc *t, uint32_t ntrunc, uint64_t hl_off, uint64_t epoch, uint64_t lsn);

/* Why the hot-log record at src[0..n) is not valid: a static string, or NULL
 * if sn_hotlog_rec_decode accepts it. *len is its payload length field (0 if
 * unreadable), *epoch its epoch field, *checksum_ok whether its checksum
 * matches (-1 if the record is cut short before it can be checked). */
const char *sn_hotlog_rec_why(const uint8_t *src, size_t n, uint32_t *len, uint64_t *epoch, int *checksum_ok);

/* ------------------------------------------------------------ page cache (N18) */

/* The last image written to (or read and verified from) the page store, per
 * page, for coalescing and GetPage: a direct-mapped table of nslots 8 KiB
 * images (a slot holds one page id; another page with the same slot evicts
 * it). Holds only images the page store holds too (every page-store write
 * goes through sn_pcache_put or sn_pcache_drop). Memory is mapped on demand. */
struct sn_pcache {
    uint32_t nslots;   /* 0: disabled */
    uint32_t *ids;     /* UINT32_MAX: empty */
    uint8_t *imgs;     /* nslots x ENGINE_PAGE_SIZE, mmap'ed */
    uint64_t hits, misses;
};
/* nslots 0 disables it (every call then does nothing / misses). 0 or -ENOMEM. */
int sn_pcache_init(struct sn_pcache *c, uint32_t nslots);
void sn_pcache_free(struct sn_pcache *c);
/* 1 and the image copied to out if page_id is cached, else 0. */
int sn_pcache_get(struct sn_pcache *c, uint32_t page_id, uint8_t *out);
void sn_pcache_put(struct sn_pcache *c, uint32_t page_id, const uint8_t *img);
void sn_pcache_drop(struct sn_pcache *c, uint32_t page_id);

/* ------------------------------------------------------------ daemon */

struct sn_config {
    const char *dir;
    const char *bind_addr;
    int port;
    uint32_t node_id;
    const char *peers; /* "h:p,h:p" or NULL */
    uint64_t hotlog_segment_bytes; /* start a new hot-log segment past this size (0: 64 MiB) */
    int no_hotlog_trim;            /* --no-hotlog-trim: keep every segment (trimming is on by default) */
    uint64_t hotlog_keep_bytes;    /* past this, trim even below a lagging peer's SCL (N10); 0: never wait */
    const char *cluster_secret_file; /* NULL: peers are not authenticated (warning at start) */
    unsigned idle_timeout_s;       /* --timeout: close an idle RESP client (0: never) */
    int metrics_port;              /* --metrics-port: Prometheus endpoint (0: none) */
};
int sn_node_run(const struct sn_config *cfg);

#endif
