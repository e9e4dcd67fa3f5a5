/*
 * wal_int.h — internals shared by the wal module's .c files, redoubt-dump and the WAL tests.
 * Not part of the public interface (wal.h): may change without notice.
 */
#ifndef RD_WAL_INT_H
#define RD_WAL_INT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "wal/wal.h"

/* Largest record body: a full-page image (4 + 8176 bytes) plus slack for a
 * delta with many ranges. Larger bodies get RD_ETOOBIG. */
#define WAL_BODY_MAX (ENGINE_PAGE_SIZE + 1024u)
#define WAL_SEG_SIZE_MIN (1024u * 1024u)
#define WAL_SEG_SIZE_MAX (1024u * 1024u * 1024u)
#define WAL_CONTROL_SIZE 512u
#define WAL_SEG_MAGIC "RDWALSEG"
#define WAL_CONTROL_MAGIC "RDCONTRL"
#define WAL_FORMAT_VERSION 1u
/* Direct I/O (WAL_SYNC_OPEN_DATASYNC): block size of every write's offset,
 * length and buffer address. */
#define WAL_DIO_ALIGN 4096u
/* Asynchronous segment preparation: zero-fill write size, and the fill level
 * of the current segment (1/WAL_PREP_START_DIV) at which the next one is started. */
#define WAL_PREP_CHUNK (1024u * 1024u)
#define WAL_PREP_START_DIV 4u

/* Longest instance dir path accepted (so every derived path fits PATH_MAX). */
#define WAL_DIR_MAX 3800u

/* Record header field offsets (see the table at the top of wal_record.c). */
#define WAL_RH_TOTAL 0
#define WAL_RH_TYPE 4
#define WAL_RH_FLAGS 5
#define WAL_RH_RSV1 6
#define WAL_RH_PAGE 8
#define WAL_RH_RSV2 12
#define WAL_RH_PREV 16
#define WAL_RH_CSUM 24

/* Body sizes of the WAL's own records. */
#define WAL_COMMIT_BODY 16u
#define WAL_CHECKPOINT_BODY 20u
#define WAL_TIMELINE_BODY 16u

struct wal_seg_header {
    uint32_t version;
    uint32_t timeline;
    uint64_t segno;
    uint64_t segment_size_bytes;
    uint64_t system_id;
};

/* Fills a 64-byte segment header. */
void wal_seg_header_encode(uint8_t dst[WAL_SEG_HDR_SIZE], const struct wal_seg_header *h);
/* Validates and decodes a segment header (magic, version, reserved zero,
 * checksum, plausible size). Returns 0, RD_ECORRUPT or RD_EVERSION; *why gets a
 * static reason. */
int wal_seg_header_decode(const uint8_t *src, size_t avail, struct wal_seg_header *h,
                          const char **why);

/* Like wal_record_decode, but also says why a record is invalid (static string). */
int wal_record_decode_why(const uint8_t *src, size_t avail, struct wal_record *rec, const char **why);

/* "%08X%016X" into dst (at least 25 bytes). */
void wal_seg_name(char *dst, size_t len, uint32_t timeline, uint64_t segno);
/* Parses a 24-hex-digit segment name; 0 on success. */
int wal_seg_name_parse(const char *name, uint32_t *timeline, uint64_t *segno);

/* Why the reader stopped (after wal_reader_next returned 0 or RD_ECORRUPT):
 * a static reason, the LSN of the first invalid record, and — for corruption —
 * the file and offset of the first valid record found after it. */
struct wal_reader_stop {
    const char *reason;
    uint64_t lsn;
    char path[PATH_MAX];
    uint64_t offset;
    int corrupt;             /* valid records follow */
    char valid_path[PATH_MAX];
    uint64_t valid_offset;
};
void wal_reader_stop_info(const struct wal_reader *r, struct wal_reader_stop *out);
uint64_t wal_reader_segment_size(const struct wal_reader *r);
uint32_t wal_reader_timeline(const struct wal_reader *r);

/* The LSN where the next record goes when the log ends at lsn: skips a segment
 * header and a segment tail shorter than a record header. */
uint64_t wal_next_record_lsn(uint64_t lsn, uint64_t seg_size);
/* 1 if s is a valid segment size (a power of two, WAL_SEG_SIZE_MIN … MAX). */
int wal_seg_size_ok(uint64_t s);
/* "X/Y" (high/low 32 bits in hex, like PostgreSQL) into dst. */
void wal_fmt_lsn(char *dst, size_t len, uint64_t lsn);

/* Writes all of buf at off (retrying short writes). 0 or -errno. */
int wal_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Reads up to len bytes at off; returns bytes read (short only at EOF) or -errno. */
long wal_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* ---- timelines (wal_timeline.c) ----
 * A chain is the current timeline and its ancestors, oldest first: timeline
 * v[i].tli covers the LSNs [v[i].begin_lsn, v[i].end_lsn) (end UINT64_MAX for
 * the newest, v[n-1]). It comes from wal/<TTTTTTTT>.history of the current
 * timeline (one line per ancestor, "<tli> <X/Y>": that ancestor ended at X/Y,
 * where the next one in the file, or the current one, begins). */
struct wal_tl {
    uint32_t tli;
    uint64_t begin_lsn, end_lsn;
};
struct wal_chain {
    struct wal_tl *v;
    size_t n;
};
/* Loads the chain of timeline tli from wal_dir/TTTTTTTT.history (a missing file
 * gives the chain {tli} alone). RD_ECORRUPT for a malformed file. */
int wal_chain_load(const char *wal_dir, uint32_t tli, struct wal_chain *out);
void wal_chain_free(struct wal_chain *c);
/* Ends the current timeline at switch_lsn and appends new_tli (in memory). */
int wal_chain_push(struct wal_chain *c, uint32_t new_tli, uint64_t switch_lsn);
/* Writes wal_dir/<current>.history atomically (tmp, fdatasync, rename, fsync dir). */
int wal_history_write(const char *wal_dir, const struct wal_chain *c);
void wal_history_name(char *dst, size_t len, uint32_t tli);
/* The timeline whose file holds segment segno: the newest chain timeline whose
 * LSN range touches the segment and whose file exists; if none exists, the
 * newest whose range touches it (the one to create it under). Fills path
 * (wal_dir/name) and *exists. */
uint32_t wal_chain_seg_path(const char *wal_dir, const struct wal_chain *c, uint64_t seg_size,
                            uint64_t segno, char *path, size_t len, int *exists);
/* Index of tli in the chain, or -1. */
int wal_chain_find(const struct wal_chain *c, uint32_t tli);
/* Sorted, distinct segment numbers that have a file of a chain timeline whose
 * range touches them. Returns the count (and *out, to free) or -errno. */
long wal_chain_list(const char *wal_dir, const struct wal_chain *c, uint64_t seg_size, uint64_t **out);

/* Tests: 1 while an asynchronous segment preparation has an operation in flight. */
int wal_prep_in_flight(const struct wal *w);
/* Tests: segment number being prepared asynchronously, or UINT64_MAX. */
uint64_t wal_prep_segno(const struct wal *w);

#endif
