/*
 * wal.c — the classic write-ahead log: record format, control file, segment
 * files, appending, group commit, checkpoints and crash recovery.
 * The reader (recovery, redoubt-dump, WAL sender) is in wal_reader.c.
 *
 * THE CORE RULE: a change is logged before the data page that holds it is
 * written (engine sink flush_to), and a commit is acknowledged only after its
 * commit record is durable (wal_flushed_lsn >= its end LSN).
 *
 * ---------------------------------------------------------------- formats
 * All integers little-endian. LSN = segno * segment_size + offset in segment.
 *
 * Segment file DIR/wal/TTTTTTTTSSSSSSSSSSSSSSSS (timeline, segno; hex),
 * exactly segment_size bytes, created zero-filled before it is needed:
 *
 *   offset size  meaning
 *   0      8     magic "RDWALSEG"
 *   8      4     format version (1)
 *   12     4     timeline
 *   16     8     segment number
 *   24     8     segment size in bytes
 *   32     8     system id
 *   40     16    reserved, zero
 *   56     8     checksum: rd_checksum64(bytes [0,56), RD_SEED_WAL ^ 0x5345474844520000 "SEGHDR")
 *   64     ...   records, each 8-byte aligned, then zeros
 *
 * Record (32-byte header + body, padded with zeros to a multiple of 8):
 *
 *   offset size  meaning
 *   0      4     total length: header + body, unaligned (>= 32)
 *   4      1     type (enum wal_rec_type)
 *   5      1     flags (ENGINE_REC_FLAG_MTR_END)
 *   6      2     reserved, zero
 *   8      4     page id (ENGINE_PAGE_NONE for non-page records)
 *   12     4     reserved, zero
 *   16     8     prev LSN: start of the previous record
 *   24     8     checksum: rd_checksum64_2(header [0,24), body, RD_SEED_WAL)
 *   32     ...   body
 *
 * A record never spans segments. If it does not fit in the rest of the
 * segment, a SWITCH record (no body) is written when at least 32 bytes remain,
 * and the record goes at offset 64 of the next segment. When fewer than 32
 * bytes remain the reader moves to the next segment implicitly.
 *
 * Control file DIR/control, 512 bytes, replaced atomically (control.tmp,
 * fdatasync, rename, fsync dir):
 *
 *   offset size  meaning
 *   0      8     magic "RDCONTRL"
 *   8      4     format version (1)
 *   12     4     state (1 in production, 2 shut down)
 *   16     8     system id
 *   24     4     timeline
 *   28     4     reserved, zero
 *   32     8     checkpoint LSN (start of the last CHECKPOINT record)
 *   40     8     redo LSN (replay starts here)
 *   48     8     segment size in bytes
 *   56     8     wall time of the update, µs since the epoch
 *   64     440   zero
 *   504    8     checksum: rd_checksum64(bytes [0,504), RD_SEED_CONTROL)
 *
 * ---------------------------------------------------------------- validity
 * A record is valid if and only if: its total length is >= 32 and, aligned,
 * fits in the rest of its segment; its type is known and its body length fits
 * the type; its reserved fields are zero; the checksum matches; and its prev
 * LSN equals the start of the record before it (not checked for the first
 * record a reader returns). The end of the log is the first invalid record.
 *
 * Torn tail or corruption? After the first invalid record at P the reader
 * scans forward, in 8-byte steps, the rest of P's segment and every later
 * segment file, for any record whose checksum is valid. None: P is a torn tail
 * (a write cut short by a crash) — recovery zeroes from the end of the last
 * complete transaction to the end of that segment and deletes later segments.
 * One exists: the log is corrupt in the middle — start-up is refused with
 *   WAL corruption at segment file "PATH" offset N (lsn X/Y): REASON;
 *   valid records follow at offset M — refusing to start
 * Segments are never recycled (old ones are deleted, new ones zero-filled), so
 * stale records from an earlier life of a file can never appear after the end.
 */
#include "wal/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"

#define WAL_SEG_SEED (RD_SEED_WAL ^ 0x5345474844520000ull)
#define WAL_BUF_INITIAL (1024u * 1024u)
/* Hard limit on one in-memory buffer: appends beyond it fail with RD_EFULL
 * (the server keeps wal_unflushed_bytes far below this by back-pressure). */
#define WAL_BUF_MAX (256u * 1024u * 1024u)

_Static_assert(WAL_RECORD_HDR_SIZE == 32, "record header is 32 bytes");
_Static_assert(WAL_SEG_HDR_SIZE == 64, "segment header is 64 bytes");
_Static_assert((int)WAL_REC_PAGE_DELTA == (int)ENGINE_REC_PAGE_DELTA, "type 1 is the engine's");
_Static_assert((int)WAL_REC_PAGE_IMAGE == (int)ENGINE_REC_PAGE_IMAGE, "type 2 is the engine's");
_Static_assert(WAL_BODY_MAX + WAL_RECORD_HDR_SIZE + WAL_SEG_HDR_SIZE < WAL_SEG_SIZE_MIN / 2,
               "a record fits in half a segment");

/* ================================================================ helpers */

int wal_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

long wal_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (long)done;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

void wal_seg_name(char *dst, size_t len, uint32_t timeline, uint64_t segno)
{
    snprintf(dst, len, "%08" PRIX32 "%016" PRIX64, timeline, segno);
}

int wal_seg_name_parse(const char *name, uint32_t *timeline, uint64_t *segno)
{
    if (strlen(name) != 24)
        return -1;
    for (int i = 0; i < 24; i++) {
        char c = name[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return -1;
    }
    char tl[9];
    memcpy(tl, name, 8);
    tl[8] = 0;
    *timeline = (uint32_t)strtoul(tl, NULL, 16);
    *segno = strtoull(name + 8, NULL, 16);
    return 0;
}

static int seg_size_ok(uint64_t s)
{
    return s >= WAL_SEG_SIZE_MIN && s <= WAL_SEG_SIZE_MAX && (s & (s - 1)) == 0;
}

/* ================================================================ record encode/decode */

const char *wal_rec_type_name(uint8_t type)
{
    switch (type) {
    case WAL_REC_PAGE_DELTA: return "PAGE_DELTA";
    case WAL_REC_PAGE_IMAGE: return "PAGE_IMAGE";
    case WAL_REC_COMMIT: return "COMMIT";
    case WAL_REC_CHECKPOINT: return "CHECKPOINT";
    case WAL_REC_SWITCH: return "SWITCH";
    case WAL_REC_TIMELINE: return "TIMELINE";
    default: return "UNKNOWN";
    }
}

/* Body length rule per type: -1 unknown type, else 1 if len is acceptable. */
static int type_body_ok(uint8_t type, uint32_t page_id, size_t body_len)
{
    switch (type) {
    case WAL_REC_PAGE_DELTA:
    case WAL_REC_PAGE_IMAGE: return page_id != ENGINE_PAGE_NONE && body_len > 0;
    case WAL_REC_COMMIT: return page_id == ENGINE_PAGE_NONE && body_len == WAL_COMMIT_BODY;
    case WAL_REC_CHECKPOINT: return page_id == ENGINE_PAGE_NONE && body_len == WAL_CHECKPOINT_BODY;
    case WAL_REC_SWITCH: return page_id == ENGINE_PAGE_NONE && body_len == 0;
    case WAL_REC_TIMELINE: return page_id == ENGINE_PAGE_NONE && body_len == WAL_TIMELINE_BODY;
    default: return -1;
    }
}

size_t wal_record_encode(uint8_t *dst, size_t dst_cap, uint64_t prev_lsn, uint8_t type, uint8_t flags,
                         uint32_t page_id, const uint8_t *body, size_t body_len)
{
    rd_assert(body_len <= WAL_BODY_MAX);
    size_t total = WAL_RECORD_HDR_SIZE + body_len;
    size_t aligned = RD_ALIGN_UP(total, WAL_RECORD_ALIGN);
    rd_assert(aligned <= dst_cap);
    memset(dst, 0, WAL_RECORD_HDR_SIZE);
    rd_put_u32le(dst + WAL_RH_TOTAL, (uint32_t)total);
    dst[WAL_RH_TYPE] = type;
    dst[WAL_RH_FLAGS] = flags;
    rd_put_u32le(dst + WAL_RH_PAGE, page_id);
    rd_put_u64le(dst + WAL_RH_PREV, prev_lsn);
    if (body_len > 0)
        memcpy(dst + WAL_RECORD_HDR_SIZE, body, body_len);
    memset(dst + total, 0, aligned - total);
    rd_put_u64le(dst + WAL_RH_CSUM,
                 rd_checksum64_2(dst, WAL_RH_CSUM, dst + WAL_RECORD_HDR_SIZE, body_len, RD_SEED_WAL));
    return aligned;
}

int wal_record_decode_why(const uint8_t *src, size_t avail, struct wal_record *rec, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    if (avail < WAL_RECORD_HDR_SIZE) {
        *why = "no room for a record header";
        return RD_ECORRUPT;
    }
    uint32_t total = rd_get_u32le(src + WAL_RH_TOTAL);
    if (total == 0) {
        *why = "zero record length (end of written log)";
        return RD_ECORRUPT;
    }
    if (total < WAL_RECORD_HDR_SIZE) {
        *why = "record length below the header size";
        return RD_ECORRUPT;
    }
    size_t aligned = RD_ALIGN_UP((size_t)total, WAL_RECORD_ALIGN);
    if (total - WAL_RECORD_HDR_SIZE > WAL_BODY_MAX || aligned > avail) {
        *why = "record length exceeds the segment or the body limit";
        return RD_ECORRUPT;
    }
    uint8_t type = src[WAL_RH_TYPE];
    uint32_t page_id = rd_get_u32le(src + WAL_RH_PAGE);
    uint32_t body_len = total - WAL_RECORD_HDR_SIZE;
    int ok = type_body_ok(type, page_id, body_len);
    if (ok < 0) {
        *why = "unknown record type";
        return RD_ECORRUPT;
    }
    if (rd_get_u16le(src + WAL_RH_RSV1) != 0 || rd_get_u32le(src + WAL_RH_RSV2) != 0 ||
        (src[WAL_RH_FLAGS] & ~ENGINE_REC_FLAG_MTR_END) != 0) {
        *why = "reserved header bits are not zero";
        return RD_ECORRUPT;
    }
    if (!ok) {
        *why = "body length or page id does not fit the record type";
        return RD_ECORRUPT;
    }
    uint64_t want = rd_checksum64_2(src, WAL_RH_CSUM, src + WAL_RECORD_HDR_SIZE, body_len, RD_SEED_WAL);
    if (want != rd_get_u64le(src + WAL_RH_CSUM)) {
        *why = "record checksum mismatch";
        return RD_ECORRUPT;
    }
    rec->prev_lsn = rd_get_u64le(src + WAL_RH_PREV);
    rec->type = type;
    rec->flags = src[WAL_RH_FLAGS];
    rec->page_id = page_id;
    rec->body = src + WAL_RECORD_HDR_SIZE;
    rec->body_len = body_len;
    *why = NULL;
    return (int)aligned;
}

int wal_record_decode(const uint8_t *src, size_t avail, struct wal_record *rec)
{
    return wal_record_decode_why(src, avail, rec, NULL);
}

/* ================================================================ segment header */

void wal_seg_header_encode(uint8_t dst[WAL_SEG_HDR_SIZE], const struct wal_seg_header *h)
{
    memset(dst, 0, WAL_SEG_HDR_SIZE);
    memcpy(dst, WAL_SEG_MAGIC, 8);
    rd_put_u32le(dst + 8, h->version);
    rd_put_u32le(dst + 12, h->timeline);
    rd_put_u64le(dst + 16, h->segno);
    rd_put_u64le(dst + 24, h->segment_size_bytes);
    rd_put_u64le(dst + 32, h->system_id);
    rd_put_u64le(dst + 56, rd_checksum64(dst, 56, WAL_SEG_SEED));
}

int wal_seg_header_decode(const uint8_t *src, size_t avail, struct wal_seg_header *h, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    if (avail < WAL_SEG_HDR_SIZE) {
        *why = "segment file shorter than its header";
        return RD_ECORRUPT;
    }
    if (memcmp(src, WAL_SEG_MAGIC, 8) != 0) {
        *why = "bad segment magic";
        return RD_ECORRUPT;
    }
    if (rd_get_u64le(src + 56) != rd_checksum64(src, 56, WAL_SEG_SEED)) {
        *why = "segment header checksum mismatch";
        return RD_ECORRUPT;
    }
    h->version = rd_get_u32le(src + 8);
    if (h->version != WAL_FORMAT_VERSION) {
        *why = "unsupported segment format version";
        return RD_EVERSION;
    }
    for (int i = 40; i < 56; i++) {
        if (src[i] != 0) {
            *why = "segment header reserved bytes are not zero";
            return RD_ECORRUPT;
        }
    }
    h->timeline = rd_get_u32le(src + 12);
    h->segno = rd_get_u64le(src + 16);
    h->segment_size_bytes = rd_get_u64le(src + 24);
    h->system_id = rd_get_u64le(src + 32);
    if (!seg_size_ok(h->segment_size_bytes)) {
        *why = "implausible segment size in the segment header";
        return RD_ECORRUPT;
    }
    *why = NULL;
    return 0;
}

/* ================================================================ control file */

int wal_control_read(const char *dir, struct wal_control *out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/control", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t b[WAL_CONTROL_SIZE + 1];
    long n = wal_pread_all(fd, b, sizeof(b), 0);
    int rc = n < 0 ? (int)n : 0;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        rd_error("could not read control file \"%s\": %s", path, rd_strerror(rc));
        return rc;
    }
    const char *why = NULL;
    if (n != WAL_CONTROL_SIZE)
        why = "wrong file size (expected 512 bytes)";
    else if (memcmp(b, WAL_CONTROL_MAGIC, 8) != 0)
        why = "bad magic";
    else if (rd_get_u32le(b + 8) != WAL_FORMAT_VERSION) {
        rd_error("control file \"%s\" has format version %" PRIu32 ", this build reads %u", path,
                 rd_get_u32le(b + 8), WAL_FORMAT_VERSION);
        return RD_EVERSION;
    } else if (rd_get_u64le(b + 504) != rd_checksum64(b, 504, RD_SEED_CONTROL))
        why = "checksum mismatch";
    else if (!seg_size_ok(rd_get_u64le(b + 48)))
        why = "implausible segment size";
    if (why != NULL) {
        rd_error("control file \"%s\" is corrupt: %s", path, why);
        return RD_ECORRUPT;
    }
    out->state = rd_get_u32le(b + 12);
    out->system_id = rd_get_u64le(b + 16);
    out->timeline = rd_get_u32le(b + 24);
    out->checkpoint_lsn = rd_get_u64le(b + 32);
    out->redo_lsn = rd_get_u64le(b + 40);
    out->segment_size_bytes = rd_get_u64le(b + 48);
    out->time_us = rd_get_u64le(b + 56);
    return 0;
}

int wal_control_write(const char *dir, const struct wal_control *c)
{
    uint8_t b[WAL_CONTROL_SIZE];
    memset(b, 0, sizeof(b));
    memcpy(b, WAL_CONTROL_MAGIC, 8);
    rd_put_u32le(b + 8, WAL_FORMAT_VERSION);
    rd_put_u32le(b + 12, c->state);
    rd_put_u64le(b + 16, c->system_id);
    rd_put_u32le(b + 24, c->timeline);
    rd_put_u64le(b + 32, c->checkpoint_lsn);
    rd_put_u64le(b + 40, c->redo_lsn);
    rd_put_u64le(b + 48, c->segment_size_bytes);
    rd_put_u64le(b + 56, c->time_us);
    rd_put_u64le(b + 504, rd_checksum64(b, 504, RD_SEED_CONTROL));

    /* control.tmp, fsync, rename, fsync dir: a crash leaves the old or the new file (W8). */
    int rc = rd_write_file_atomic(dir, "control", b, sizeof(b));
    if (rc < 0)
        rd_error("could not write the control file \"%s/control\": %s", dir, rd_strerror(rc));
    return rc;
}

/* ================================================================ the log writer */

/* In direct mode (open_datasync) a buffer starts on a block boundary: the
 * `pre` bytes before start_lsn are a copy of the log's partial last block,
 * already durable, rewritten (identical) by the next write of that block. */
struct wal_buf {
    uint8_t *mem;       /* WAL_DIO_ALIGN-aligned allocation of cap bytes */
    uint8_t *data;      /* mem + pre: the byte at start_lsn */
    size_t pre, len, cap;
    uint64_t start_lsn; /* LSN of data[0] */
    uint64_t commits;   /* commit records in it */
};

/* Asynchronous preparation of the next segment file through the loop: one
 * operation in flight at a time — header block, zero chunks, fdatasync — then
 * (in the completion) rename and fsync of the dir. Allocated on its own: an
 * abandoned preparation (prep->w == NULL) lives until its last completion. */
struct wal_prep {
    struct rd_io io;
    struct wal *w;      /* NULL once abandoned */
    struct wal_prep *next_orphan;
    uint64_t segno;
    uint32_t tli;
    int fd;
    int stage;          /* 0 header block, 1 zero chunks, 2 fdatasync */
    uint64_t off;       /* next chunk offset */
    size_t expect;
    uint8_t *chunk;     /* WAL_PREP_CHUNK zero bytes, aligned; the first block carries the header */
    char tmp[PATH_MAX];
};

struct wal_fd {
    uint64_t segno;
    int fd;
};

struct wal_flush_io {
    struct rd_io io;
    struct wal *w;
    int is_fsync;
    size_t expect; /* bytes for a write */
    uint64_t segno;
};

struct wal {
    char dir[WAL_DIR_MAX];
    char wal_dir[WAL_DIR_MAX + 8];
    struct wal_options opt;
    uint64_t seg_size;
    struct wal_control ctl; /* as last written */
    uint32_t timeline;
    uint64_t system_id;
    struct wal_chain chain; /* current timeline and its ancestors (wal_timeline.c) */
    int recovered;
    int prev_unknown;     /* no record before insert_lsn is known (new log, fresh backup):
                             wal_append_encoded accepts the first record's prev as is */

    uint64_t insert_lsn;  /* end of the last record */
    uint64_t prev_lsn;    /* start of the last record */
    uint64_t flushed_lsn; /* durable below this */
    uint64_t written_lsn; /* written (write CQEs done, or pwrite) below this; >= flushed_lsn */
    uint64_t ckpt_end_lsn;/* end of the last CHECKPOINT record (0 = none this run) */
    uint64_t last_ckpt_ms;
    uint64_t keep_lsn;
    uint64_t prepared_segno; /* highest segment file known to exist, zero-filled and synced */
    int have_prepared;
    int direct;              /* WAL_SYNC_OPEN_DATASYNC in use: O_DIRECT|O_DSYNC segment fds */
    struct wal_prep *prep;   /* asynchronous preparation of the next segment, or NULL */
    uint64_t prep_failed_segno; /* + 1: an asynchronous preparation of it failed: do not retry */

    struct wal_buf bufs[2];
    int active; /* index of the buffer appends go to */
    int in_flight;
    int closed;         /* wal_close ran while a flush was in flight: free at its completion */
    int notify_pending; /* flushed_lsn advanced outside the loop: tell on_flushed */
    struct wal_flush_io *ios;
    size_t ios_total, ios_done, writes_total, writes_done;
    uint64_t flush_started_us;

    struct wal_fd *fds;
    size_t nfds, fds_cap;
    /* fds replaced by a timeline switch while a flush was in flight (the
     * kernel may still use them, W5): closed once no flush is in flight */
    int *retired;
    size_t nretired;

    struct wal_stats st;
};

/* ---------------------------------------------------------------- segment files */

/* The file of segment segno: an existing one of the newest chain timeline that
 * touches the segment, else the name to create it under. Returns its timeline. */
static uint32_t seg_path_ex(const struct wal *w, uint64_t segno, char *dst, size_t len, int *exists)
{
    return wal_chain_seg_path(w->wal_dir, &w->chain, w->seg_size, segno, dst, len, exists);
}

static void seg_path(const struct wal *w, uint64_t segno, char *dst, size_t len)
{
    int exists;
    seg_path_ex(w, segno, dst, len, &exists);
}

/*
 * Creates segment segno zero-filled to full size with its header, under a
 * temporary name, fdatasynced, renamed into place, directory fsynced — so a
 * segment file either does not exist or is complete. Called ahead of need
 * (when the current segment is half full), so the commit path never pays.
 */
static int seg_create(struct wal *w, uint64_t segno)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int exists;
    uint32_t tli = seg_path_ex(w, segno, path, sizeof(path), &exists);
    if (exists)
        return 0; /* exists already (after a restart): never replace a segment */
    snprintf(tmp, sizeof(tmp), "%s/segtemp.%d", w->wal_dir, (int)getpid());
    uint64_t t0 = rd_now_us();
    const char *what = "create";
    int rc = 0;
    uint8_t *zero = calloc(1, WAL_SEG_SIZE_MIN);
    if (zero == NULL)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    what = "write";
    for (uint64_t off = 0; off < w->seg_size && rc == 0; off += WAL_SEG_SIZE_MIN)
        rc = wal_pwrite_all(fd, zero, WAL_SEG_SIZE_MIN, off);
    if (rc == 0) {
        struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
        uint8_t hb[WAL_SEG_HDR_SIZE];
        wal_seg_header_encode(hb, &h);
        rc = wal_pwrite_all(fd, hb, sizeof(hb), 0);
    }
    if (rc == 0) {
        what = "fdatasync";
        if (fdatasync(fd) < 0)
            rc = -errno;
    }
    if (close(fd) < 0 && rc == 0) {
        what = "close";
        rc = -errno;
    }
    if (rc < 0)
        goto fail;
    what = "rename";
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto fail;
    }
    what = "fsync the directory of";
    rc = fsync_dir(w->wal_dir);
    if (rc < 0)
        goto fail;
    free(zero);
    w->st.segments_created_sync++;
    rd_debug("created WAL segment \"%s\" synchronously in %" PRIu64 " us", path, rd_now_us() - t0);
    return 1;
fail:
    free(zero);
    rd_error("could not %s WAL segment \"%s\": %s", what, tmp, rd_strerror(rc));
    return rc;
}

static void prep_abandon(struct wal *w, int wait);

/* Makes sure segment segno exists (creating it and any missing before it),
 * synchronously. An asynchronous preparation of it (or of an earlier one)
 * that has not completed is abandoned: its temp file is removed. */
static int seg_prepare(struct wal *w, uint64_t segno)
{
    if (w->have_prepared && w->prepared_segno >= segno)
        return 0;
    if (w->prep != NULL && w->prep->segno <= segno) {
        rd_info("WAL segment %" PRIu64 " is not ready yet (background preparation at stage %d, %" PRIu64
                " of %" PRIu64 " bytes): creating it synchronously",
                w->prep->segno, w->prep->stage, w->prep->off, w->seg_size);
        prep_abandon(w, 0);
    }
    uint64_t from = w->have_prepared ? w->prepared_segno + 1 : segno;
    for (uint64_t s = from; s <= segno; s++) {
        int rc = seg_create(w, s);
        if (rc < 0)
            return rc;
        w->prepared_segno = s;
        w->have_prepared = 1;
    }
    return 0;
}

/* Returns an open fd for segment segno (kept open until pruned). */
static int seg_fd(struct wal *w, uint64_t segno)
{
    for (size_t i = 0; i < w->nfds; i++)
        if (w->fds[i].segno == segno)
            return w->fds[i].fd;
    if (w->nfds == w->fds_cap) {
        size_t cap = w->fds_cap ? w->fds_cap * 2 : 8;
        struct wal_fd *p = realloc(w->fds, cap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        w->fds = p;
        w->fds_cap = cap;
    }
    char path[PATH_MAX];
    seg_path(w, segno, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CLOEXEC | (w->direct ? O_DIRECT | O_DSYNC : 0));
    if (fd < 0) {
        int rc = -errno;
        rd_error("could not open WAL segment \"%s\": %s", path, rd_strerror(rc));
        return rc;
    }
    w->fds[w->nfds++] = (struct wal_fd){segno, fd};
    return fd;
}

/* Closes fds of segments below segno. A failed close of a WAL file whose
 * writes were already fdatasynced loses nothing, but is logged. */
static void seg_fds_prune(struct wal *w, uint64_t below_segno)
{
    size_t j = 0;
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->fds[i].segno < below_segno) {
            if (close(w->fds[i].fd) < 0)
                rd_warn("could not close WAL segment %" PRIu64 ": %s", w->fds[i].segno,
                        strerror(errno));
        } else {
            w->fds[j++] = w->fds[i];
        }
    }
    w->nfds = j;
}

static void close_retired(struct wal *w)
{
    for (size_t i = 0; i < w->nretired; i++)
        if (close(w->retired[i]) < 0)
            rd_warn("could not close a replaced WAL segment: %s", strerror(errno));
    w->nretired = 0;
}

/* Drops the cached fd of segment segno (its file is being removed or replaced). */
static void seg_fd_forget(struct wal *w, uint64_t segno)
{
    for (size_t i = 0; i < w->nfds; i++) {
        if (w->fds[i].segno != segno)
            continue;
        int fd = w->fds[i].fd;
        w->fds[i] = w->fds[--w->nfds];
        int *p = w->in_flight ? realloc(w->retired, (w->nretired + 1) * sizeof(*p)) : NULL;
        if (p != NULL) {
            w->retired = p;
            w->retired[w->nretired++] = fd;
        } else {
            if (w->in_flight)
                rd_panic("could not retire a WAL segment fd: out of memory");
            if (close(fd) < 0)
                rd_warn("could not close WAL segment %" PRIu64 ": %s", segno, strerror(errno));
        }
        return;
    }
}

static void prune_fds(struct wal *w)
{
    if (!w->in_flight)
        close_retired(w);
    uint64_t need = w->bufs[w->active].start_lsn;
    if (w->in_flight)
        need = RD_MIN(need, w->bufs[!w->active].start_lsn);
    seg_fds_prune(w, RD_MIN(need, w->flushed_lsn) / w->seg_size);
}

/* ---------------------------------------------------------------- waiting for own completions */

/* Waits until `need` completions matched by `match` are in the CQ ring,
 * WITHOUT consuming anything: the loop dispatches them (and everything else)
 * later as usual. Used where a blocking caller (wal_flush_sync, wal_close)
 * must know that an operation of ours finished, from inside an engine call
 * where running the loop's dispatch would be re-entrant. */
static void wait_cqes_peek(struct rd_loop *l, int (*match)(void *ctx, const struct io_uring_cqe *cqe),
                           void *ctx, size_t need, const char *what)
{
    struct io_uring *ring = &l->ring;
    for (;;) {
        size_t found = 0;
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(ring, head, cqe)
        {
            seen++;
            if (match(ctx, cqe))
                found++;
        }
        if (found >= need)
            return;
        if (seen >= ring->cq.ring_entries)
            rd_panic("could not wait for %s: the completion queue is full", what);
        int rc = io_uring_submit_and_wait(ring, seen + 1);
        if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY)
            rd_panic("could not wait for %s: %s", what, strerror(-rc));
    }
}

/* ---------------------------------------------------------------- asynchronous segment preparation */

/* Abandoned preparations still waiting for their last completion (reachable,
 * so leak checkers do not flag a loop destroyed before it arrived). */
static struct wal_prep *prep_orphans;

static void prep_free(struct wal_prep *p)
{
    if (p->fd >= 0 && close(p->fd) < 0)
        rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
    free(p->chunk);
    free(p);
}

static void prep_submit(struct wal_prep *p)
{
    struct wal *w = p->w;
    struct io_uring_sqe *sqe = rd_loop_sqe(w->opt.loop, &p->io);
    if (p->stage == 2) {
        io_uring_prep_fsync(sqe, p->fd, IORING_FSYNC_DATASYNC);
        p->expect = 0;
    } else {
        p->expect = (size_t)RD_MIN((uint64_t)WAL_PREP_CHUNK, w->seg_size - p->off);
        io_uring_prep_write(sqe, p->fd, p->chunk, (unsigned)p->expect, p->off);
    }
    io_uring_sqe_set_data(sqe, &p->io);
}

static void prep_cqe(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct wal_prep *p = (struct wal_prep *)io;
    struct wal *w = p->w;
    if (w == NULL) { /* abandoned: its temp file is already unlinked */
        for (struct wal_prep **pp = &prep_orphans; *pp != NULL; pp = &(*pp)->next_orphan)
            if (*pp == p) {
                *pp = p->next_orphan;
                break;
            }
        prep_free(p);
        return;
    }
    if (cqe->res < 0 || (p->stage < 2 && (size_t)cqe->res != p->expect)) {
        rd_warn("background preparation of WAL segment \"%s\" failed (%s): it will be created "
                "synchronously when needed",
                p->tmp, cqe->res < 0 ? strerror(-cqe->res) : "short write");
        w->prep_failed_segno = p->segno + 1;
        w->prep = NULL;
        if (unlink(p->tmp) < 0)
            rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
        prep_free(p);
        return;
    }
    if (p->stage < 2) {
        if (p->stage == 0)
            memset(p->chunk, 0, WAL_SEG_HDR_SIZE); /* from now on a chunk of zeros */
        p->stage = 1;
        p->off += p->expect;
        if (p->off >= w->seg_size)
            p->stage = 2;
        prep_submit(p);
        return;
    }
    /* Zero-filled with its header and fdatasynced: rename it into place. */
    w->prep = NULL;
    int fd = p->fd;
    p->fd = -1;
    if (close(fd) < 0)
        rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
    char path[PATH_MAX];
    int exists;
    uint32_t tli = seg_path_ex(w, p->segno, path, sizeof(path), &exists);
    if (exists || tli != p->tli) { /* made meanwhile (synchronously), or the timeline moved on */
        if (unlink(p->tmp) < 0)
            rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
        prep_free(p);
        return;
    }
    if (rename(p->tmp, path) < 0) {
        rd_warn("could not rename \"%s\" to \"%s\": %s (the segment will be created synchronously)", p->tmp,
                path, strerror(errno));
        w->prep_failed_segno = p->segno + 1;
        unlink(p->tmp);
        prep_free(p);
        return;
    }
    int rc = fsync_dir(w->wal_dir);
    if (rc < 0) /* the segment's name might not survive a crash: never write records into it */
        rd_panic("could not fsync WAL directory \"%s\": %s", w->wal_dir, rd_strerror(rc));
    if (w->have_prepared && w->prepared_segno + 1 == p->segno)
        w->prepared_segno = p->segno;
    w->st.segments_prepared_async++;
    rd_debug("prepared WAL segment \"%s\" in the background", path);
    prep_free(p);
}

/* Starts preparing segment segno in the background (needs the loop). Any
 * failure just leaves the work to the synchronous path. */
static void prep_start(struct wal *w, uint64_t segno)
{
    char path[PATH_MAX];
    int exists;
    uint32_t tli = seg_path_ex(w, segno, path, sizeof(path), &exists);
    if (exists)
        return;
    struct wal_prep *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return;
    p->io.on_cqe = prep_cqe;
    p->w = w;
    p->segno = segno;
    p->tli = tli;
    p->fd = -1;
    snprintf(p->tmp, sizeof(p->tmp), "%s/segtemp.%d.%" PRIu64, w->wal_dir, (int)getpid(), segno);
    p->chunk = aligned_alloc(WAL_DIO_ALIGN, WAL_PREP_CHUNK);
    if (p->chunk == NULL) {
        prep_free(p);
        return;
    }
    memset(p->chunk, 0, WAL_PREP_CHUNK);
    struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(p->chunk, &h);
    /* Direct writes when the WAL uses them: the zeros go to the device chunk
     * by chunk instead of in one burst at the fdatasync. */
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    p->fd = w->direct ? open(p->tmp, flags | O_DIRECT, 0600) : -1;
    if (p->fd < 0)
        p->fd = open(p->tmp, flags, 0600);
    if (p->fd < 0) {
        rd_warn("could not create \"%s\": %s (the segment will be created synchronously)", p->tmp,
                strerror(errno));
        w->prep_failed_segno = segno + 1;
        prep_free(p);
        return;
    }
    w->prep = p;
    prep_submit(p);
}

static int prep_match(void *ctx, const struct io_uring_cqe *cqe)
{
    return io_uring_cqe_get_data(cqe) == ctx;
}

/* Gives up the current preparation: its temp file is removed now; the
 * struct lives until its in-flight operation completes. With wait, blocks
 * until that operation finished (wal_close), and releases the fd and buffer. */
static void prep_abandon(struct wal *w, int wait)
{
    struct wal_prep *p = w->prep;
    if (p == NULL)
        return;
    w->prep = NULL;
    p->w = NULL;
    if (unlink(p->tmp) < 0 && errno != ENOENT)
        rd_warn("could not remove \"%s\": %s", p->tmp, strerror(errno));
    if (wait) {
        wait_cqes_peek(w->opt.loop, prep_match, &p->io, 1, "a WAL segment preparation");
        if (p->fd >= 0 && close(p->fd) < 0)
            rd_warn("could not close \"%s\": %s", p->tmp, strerror(errno));
        p->fd = -1;
        free(p->chunk);
        p->chunk = NULL;
    }
    p->next_orphan = prep_orphans;
    prep_orphans = p;
}

/* After an append that left the current segment segno filled to off: makes
 * sure segment segno + 1 is (being) prepared. With a loop, in the background
 * from a quarter on; without, synchronously at half (W6). */
static int prepare_next(struct wal *w, uint64_t segno, uint64_t off)
{
    if (w->have_prepared && w->prepared_segno > segno)
        return 0;
    if (w->opt.loop == NULL)
        return off >= w->seg_size / 2 ? seg_prepare(w, segno + 1) : 0;
    if (off >= w->seg_size / WAL_PREP_START_DIV && w->prep == NULL && w->prep_failed_segno != segno + 2)
        prep_start(w, segno + 1);
    return 0;
}

int wal_prep_in_flight(const struct wal *w) { return w->prep != NULL; }
uint64_t wal_prep_segno(const struct wal *w) { return w->prep != NULL ? w->prep->segno : UINT64_MAX; }

/* ---------------------------------------------------------------- appending */

static uint8_t *buf_grow(struct wal *w, size_t n)
{
    struct wal_buf *b = &w->bufs[w->active];
    if (b->pre + b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : WAL_BUF_INITIAL;
        while (cap < b->pre + b->len + n)
            cap *= 2;
        if (cap > WAL_BUF_MAX)
            return NULL;
        /* Never the in-flight buffer (W5). Aligned for direct I/O; cap stays a
         * multiple of WAL_DIO_ALIGN, so a write rounded up to a block fits. */
        uint8_t *p = aligned_alloc(WAL_DIO_ALIGN, cap);
        if (p == NULL)
            return NULL;
        if (b->mem != NULL)
            memcpy(p, b->mem, b->pre + b->len);
        free(b->mem);
        b->mem = p;
        b->data = p + b->pre;
        b->cap = cap;
    }
    uint8_t *dst = b->data + b->len;
    b->len += n;
    w->insert_lsn += n;
    return dst;
}

/* Starts the segment that insert_lsn is at the beginning of: the header bytes
 * go into the buffer too (identical to the file's), so the buffer is one
 * contiguous LSN range. */
static int begin_segment(struct wal *w)
{
    uint64_t segno = w->insert_lsn / w->seg_size;
    rd_assert(w->insert_lsn % w->seg_size == 0);
    int rc = seg_prepare(w, segno);
    if (rc < 0)
        return rc;
    uint8_t *dst = buf_grow(w, WAL_SEG_HDR_SIZE);
    if (dst == NULL)
        return RD_EFULL;
    char path[PATH_MAX];
    int exists;
    uint32_t tli = seg_path_ex(w, segno, path, sizeof(path), &exists);
    struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(dst, &h);
    return 0;
}

/* Appends one record; *start_lsn / *end_lsn its position. */
static int append_record(struct wal *w, uint8_t type, uint8_t flags, uint32_t page_id,
                         const uint8_t *body, size_t body_len, uint64_t *start_lsn, uint64_t *end_lsn)
{
    rd_assert(w->recovered);
    if (body_len > WAL_BODY_MAX)
        return RD_ETOOBIG;
    size_t aligned = RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + body_len, WAL_RECORD_ALIGN);
    int rc;
    if (w->insert_lsn % w->seg_size == 0 && (rc = begin_segment(w)) < 0)
        return rc;
    uint64_t rest = w->seg_size - w->insert_lsn % w->seg_size;
    if (aligned > rest) {
        uint8_t *dst = buf_grow(w, rest);
        if (dst == NULL)
            return RD_EFULL;
        memset(dst, 0, rest);
        if (rest >= WAL_RECORD_HDR_SIZE) {
            wal_record_encode(dst, rest, w->prev_lsn, WAL_REC_SWITCH, 0, ENGINE_PAGE_NONE, NULL, 0);
            w->prev_lsn = w->insert_lsn - rest;
        }
        if ((rc = begin_segment(w)) < 0)
            return rc;
    }
    uint64_t start = w->insert_lsn;
    uint8_t *dst = buf_grow(w, aligned);
    if (dst == NULL)
        return RD_EFULL;
    wal_record_encode(dst, aligned, w->prev_lsn, type, flags, page_id, body, body_len);
    w->prev_lsn = start;
    w->st.records++;
    w->st.record_bytes += aligned;
    if (type == WAL_REC_PAGE_IMAGE) {
        w->st.image_records++;
        w->st.image_bytes += aligned;
    }
    if (type == WAL_REC_COMMIT) {
        w->st.commits++;
        w->bufs[w->active].commits++;
    }
    *start_lsn = start;
    *end_lsn = w->insert_lsn;
    /* Prepare the next segment ahead of need (W6). */
    if (w->insert_lsn % w->seg_size != 0 &&
        (rc = prepare_next(w, start / w->seg_size, w->insert_lsn % w->seg_size)) < 0)
        return rc;
    return 0;
}

static int sink_emit(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body,
                     size_t body_len, uint64_t *end_lsn)
{
    struct wal *w = ctx;
    if (rec_type != WAL_REC_PAGE_DELTA && rec_type != WAL_REC_PAGE_IMAGE)
        return RD_EPROTO;
    if (page_id == ENGINE_PAGE_NONE || body_len == 0)
        return RD_EPROTO;
    uint64_t start;
    return append_record(w, rec_type, flags, page_id, body, body_len, &start, end_lsn);
}

static int sink_flush_to(void *ctx, uint64_t lsn) { return wal_flush_sync(ctx, lsn); }

struct engine_sink wal_engine_sink(struct wal *w)
{
    return (struct engine_sink){.ctx = w, .emit = sink_emit, .flush_to = sink_flush_to};
}

int wal_append_commit(struct wal *w, uint64_t txn_id, uint64_t *end_lsn)
{
    uint8_t body[WAL_COMMIT_BODY];
    rd_put_u64le(body, rd_wall_us());
    rd_put_u64le(body + 8, txn_id);
    uint64_t start;
    return append_record(w, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start, end_lsn);
}

uint64_t wal_insert_lsn(const struct wal *w) { return w->insert_lsn; }
uint64_t wal_flushed_lsn(const struct wal *w) { return w->flushed_lsn; }
int wal_flush_in_flight(const struct wal *w) { return w->in_flight; }
uint64_t wal_unflushed_bytes(const struct wal *w) { return w->bufs[w->active].len; }
void wal_set_keep_lsn(struct wal *w, uint64_t lsn) { w->keep_lsn = lsn; }

/* ---------------------------------------------------------------- flushing */

static void flush_advanced(struct wal *w, uint64_t lsn)
{
    if (lsn > w->flushed_lsn)
        w->flushed_lsn = lsn;
    if (lsn > w->written_lsn)
        w->written_lsn = lsn;
}

/* Empties buffer b to start at lsn. In direct mode its first `lsn % block`
 * bytes get a copy of the log's partial last block, from tail (which may
 * point into b itself). */
static void buf_restart(struct wal *w, struct wal_buf *b, uint64_t lsn, const uint8_t *tail)
{
    b->start_lsn = lsn;
    b->len = 0;
    b->commits = 0;
    b->pre = w->direct ? (size_t)(lsn % WAL_DIO_ALIGN) : 0;
    if (b->pre > 0)
        memmove(b->mem, tail, b->pre);
    b->data = b->mem + b->pre;
}

/* The bytes [lsn - lsn % block, lsn) of buffer b, which ends at lsn. */
static const uint8_t *buf_tail(const struct wal *w, const struct wal_buf *b)
{
    size_t pre = w->direct ? (size_t)((b->start_lsn + b->len) % WAL_DIO_ALIGN) : 0;
    return b->mem + b->pre + b->len - pre;
}

/* Both buffers empty at lsn (recovery, truncation); in direct mode the
 * partial block before lsn is read back from its segment file. */
static int bufs_reset_at(struct wal *w, uint64_t lsn)
{
    for (int i = 0; i < 2; i++)
        buf_restart(w, &w->bufs[i], lsn, w->bufs[i].mem); /* pre is filled below */
    struct wal_buf *a = &w->bufs[w->active];
    if (a->pre == 0)
        return 0;
    char path[PATH_MAX];
    seg_path(w, lsn / w->seg_size, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    long n = fd < 0 ? -errno : wal_pread_all(fd, a->mem, a->pre, lsn % w->seg_size - a->pre);
    if (fd >= 0)
        close(fd);
    if (n >= 0 && (size_t)n != a->pre)
        n = -EIO;
    if (n < 0) {
        rd_error("could not read WAL segment \"%s\": %s", path, rd_strerror((int)n));
        return (int)n;
    }
    return 0;
}

/* Where a write of buffer bytes [from, piece_end) (within one segment) goes:
 * in direct mode widened to whole blocks (the zero padding after the buffer's
 * end is set by buf_pad). Sets *ptr and *len; returns the file offset. */
static uint64_t write_range(const struct wal *w, const struct wal_buf *b, uint64_t from, uint64_t piece_end,
                            const uint8_t **ptr, size_t *len)
{
    if (w->direct) {
        uint64_t wfrom = from - from % WAL_DIO_ALIGN;
        uint64_t wend = RD_ALIGN_UP(piece_end, (uint64_t)WAL_DIO_ALIGN);
        *ptr = b->mem + (wfrom - (b->start_lsn - b->pre));
        *len = (size_t)(wend - wfrom);
        return wfrom % w->seg_size;
    }
    *ptr = b->data + (from - b->start_lsn);
    *len = (size_t)(piece_end - from);
    return from % w->seg_size;
}

/* Direct mode: zeroes the buffer from its end to the next block boundary. */
static void buf_pad(const struct wal *w, struct wal_buf *b)
{
    if (!w->direct)
        return;
    size_t used = b->pre + b->len;
    memset(b->mem + used, 0, RD_ALIGN_UP(used, (size_t)WAL_DIO_ALIGN) - used);
}

/* Writes buffer bytes [from, b end) with pwrite, one piece per segment;
 * records the first and last segment touched. */
static void sync_write_buf(struct wal *w, struct wal_buf *b, uint64_t from, uint64_t *seg_lo,
                           uint64_t *seg_hi)
{
    uint64_t end = b->start_lsn + b->len;
    from = RD_MAX(from, b->start_lsn);
    buf_pad(w, b);
    while (from < end) {
        uint64_t segno = from / w->seg_size;
        uint64_t piece_end = RD_MIN(end, (segno + 1) * w->seg_size);
        const uint8_t *ptr;
        size_t len;
        uint64_t off = write_range(w, b, from, piece_end, &ptr, &len);
        int fd = seg_fd(w, segno);
        int rc = fd < 0 ? fd : wal_pwrite_all(fd, ptr, len, off);
        if (rc < 0) {
            char path[PATH_MAX];
            seg_path(w, segno, path, sizeof(path));
            rd_panic("could not write WAL segment \"%s\": %s", path, rd_strerror(rc));
        }
        *seg_lo = RD_MIN(*seg_lo, segno);
        *seg_hi = RD_MAX(*seg_hi, segno);
        from = piece_end;
    }
}

static void flush_io_check(struct wal *w, const struct wal_flush_io *fio, int res)
{
    if (fio->is_fsync && res >= 0 && rd_fault("wal_fsync"))
        res = -EIO; /* tests: RD_FAULT=wal_fsync:N */
    if (res < 0 || (!fio->is_fsync && (size_t)res != fio->expect)) {
        char path[PATH_MAX];
        seg_path(w, fio->segno, path, sizeof(path));
        rd_panic("could not %s WAL segment \"%s\": %s", fio->is_fsync ? "fdatasync" : "write", path,
                 res < 0 ? strerror(-res) : "short write");
    }
}

static int flush_match(void *ctx, const struct io_uring_cqe *cqe)
{
    struct wal *w = ctx;
    const void *d = io_uring_cqe_get_data(cqe);
    for (size_t i = 0; i < w->ios_total; i++) {
        if (d == &w->ios[i].io) {
            flush_io_check(w, &w->ios[i], cqe->res); /* a failure is fatal now, not later */
            return 1;
        }
    }
    return 0;
}

int wal_flush_sync(struct wal *w, uint64_t lsn)
{
    if (w->flushed_lsn >= lsn)
        return 0;
    if (lsn > w->insert_lsn) {
        rd_error("asked to flush WAL up to %X/%X, beyond its end %X/%X", (unsigned)(lsn >> 32),
                 (unsigned)lsn, (unsigned)(w->insert_lsn >> 32), (unsigned)w->insert_lsn);
        return RD_ESTATE;
    }
    uint64_t t0 = rd_now_us();
    uint64_t seg_lo = UINT64_MAX, seg_hi = 0;
    uint64_t from = w->flushed_lsn;
    if (w->in_flight && w->direct) {
        /* The in-flight write carries zero padding after its end in the block
         * the active buffer starts in: writing that block now could be undone
         * by the in-flight write landing later. Wait until it completed (its
         * O_DSYNC write is then durable); the loop dispatches it as usual. */
        wait_cqes_peek(w->opt.loop, flush_match, w, w->ios_total - w->ios_done, "a WAL write");
    } else if (w->in_flight) {
        /* Rewriting bytes an in-flight write also carries is harmless: identical. */
        sync_write_buf(w, &w->bufs[!w->active], from, &seg_lo, &seg_hi);
    }
    sync_write_buf(w, &w->bufs[w->active], from, &seg_lo, &seg_hi);
    for (uint64_t s = seg_lo; !w->direct && s <= seg_hi && seg_lo != UINT64_MAX; s++) {
        int fd = seg_fd(w, s);
        int frc = fd < 0 ? fd : fdatasync(fd) < 0 ? -errno : rd_fault("wal_fsync") ? -EIO : 0;
        if (frc < 0) {
            char path[PATH_MAX];
            seg_path(w, s, path, sizeof(path));
            rd_panic("could not fdatasync WAL segment \"%s\": %s", path, rd_strerror(frc));
        }
        w->st.fsyncs++;
    }
    w->st.flushes++;
    w->st.flush_bytes += w->insert_lsn - from;
    w->st.flush_lat_us_total += rd_now_us() - t0;
    struct wal_buf *a = &w->bufs[w->active];
    w->st.group_commits_max = RD_MAX(w->st.group_commits_max, a->commits);
    flush_advanced(w, w->insert_lsn);
    w->notify_pending = 1;
    /* Everything in the active buffer is durable: drop it. */
    buf_restart(w, a, w->insert_lsn, buf_tail(w, a));
    if (!w->in_flight)
        prune_fds(w);
    return 0;
}

static int wal_free(struct wal *w);

static void flush_io_done(struct rd_io *io, const struct io_uring_cqe *cqe)
{
    struct wal_flush_io *fio = (struct wal_flush_io *)io;
    struct wal *w = fio->w;
    flush_io_check(w, fio, cqe->res);
    if (!fio->is_fsync && !w->closed && ++w->writes_done == w->writes_total) {
        /* Every write of the batch completed: its bytes are in the page cache
         * (direct mode: on stable storage). */
        const struct wal_buf *wb = &w->bufs[!w->active];
        if (wb->start_lsn + wb->len > w->written_lsn)
            w->written_lsn = wb->start_lsn + wb->len;
    }
    if (++w->ios_done < w->ios_total)
        return;
    if (w->closed) { /* the owner is gone: release what the kernel held (W5) */
        w->in_flight = 0;
        wal_free(w);
        return;
    }
    /* The whole batch is durable. */
    struct wal_buf *b = &w->bufs[!w->active];
    uint64_t end = b->start_lsn + b->len;
    w->st.flushes++;
    w->st.flush_bytes += b->len;
    w->st.flush_lat_us_total += rd_now_us() - w->flush_started_us;
    w->st.group_commits_max = RD_MAX(w->st.group_commits_max, b->commits);
    w->in_flight = 0;
    free(w->ios);
    w->ios = NULL;
    b->len = 0;
    b->commits = 0;
    flush_advanced(w, end);
    w->notify_pending = 0;
    prune_fds(w);
    if (w->opt.on_flushed != NULL)
        w->opt.on_flushed(w->opt.on_flushed_arg, w->flushed_lsn);
}

void wal_flush_async(struct wal *w)
{
    rd_assert(w->opt.loop != NULL);
    if (w->in_flight)
        return;
    struct wal_buf *a = &w->bufs[w->active];
    if (a->len == 0) {
        if (w->notify_pending && w->opt.on_flushed != NULL) {
            w->notify_pending = 0;
            w->opt.on_flushed(w->opt.on_flushed_arg, w->flushed_lsn);
        }
        return;
    }
    /* Swap: the full buffer goes in flight, appends continue in the other
     * (which in direct mode starts with a copy of the partial last block). */
    struct wal_buf *b = a;
    w->active = !w->active;
    a = &w->bufs[w->active];
    buf_restart(w, a, b->start_lsn + b->len, buf_tail(w, b));
    rd_assert(a->start_lsn == w->insert_lsn);
    buf_pad(w, b);

    uint64_t end = b->start_lsn + b->len;
    uint64_t seg_lo = b->start_lsn / w->seg_size, seg_hi = (end - 1) / w->seg_size;
    size_t nseg = (size_t)(seg_hi - seg_lo + 1);
    size_t per_seg = w->direct ? 1 : 2; /* write [+ linked fdatasync] */
    w->ios = calloc(per_seg * nseg, sizeof(*w->ios));
    if (w->ios == NULL)
        rd_panic("could not write WAL: out of memory for %zu flush operations", per_seg * nseg);
    w->ios_total = per_seg * nseg;
    w->writes_total = nseg;
    w->ios_done = 0;
    w->writes_done = 0;
    w->in_flight = 1;
    w->flush_started_us = rd_now_us();
    struct io_uring *ring = &w->opt.loop->ring;
    uint64_t from = b->start_lsn;
    for (size_t i = 0; i < nseg; i++) {
        uint64_t segno = seg_lo + i;
        uint64_t piece_end = RD_MIN(end, (segno + 1) * w->seg_size);
        int fd = seg_fd(w, segno);
        if (fd < 0) {
            char path[PATH_MAX];
            seg_path(w, segno, path, sizeof(path));
            rd_panic("could not write WAL segment \"%s\": %s", path, rd_strerror(fd));
        }
        /* A write and its fsync must be in one submission to stay linked. */
        if (io_uring_sq_space_left(ring) < per_seg) {
            int rc = rd_loop_submit(w->opt.loop);
            if (rc < 0)
                rd_panic("could not submit WAL write: %s", strerror(-rc));
        }
        const uint8_t *ptr;
        size_t len;
        uint64_t off = write_range(w, b, from, piece_end, &ptr, &len);
        struct wal_flush_io *wio = &w->ios[per_seg * i];
        *wio = (struct wal_flush_io){{flush_io_done}, w, 0, len, segno};
        struct io_uring_sqe *sqe = rd_loop_sqe(w->opt.loop, &wio->io);
        io_uring_prep_write(sqe, fd, ptr, (unsigned)len, off);
        io_uring_sqe_set_data(sqe, &wio->io);
        if (!w->direct) {
            struct wal_flush_io *sio = &w->ios[per_seg * i + 1];
            *sio = (struct wal_flush_io){{flush_io_done}, w, 1, 0, segno};
            sqe->flags |= IOSQE_IO_LINK;
            sqe = rd_loop_sqe(w->opt.loop, &sio->io);
            io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
            io_uring_sqe_set_data(sqe, &sio->io);
            w->st.fsyncs++;
        }
        from = piece_end;
    }
}

/* ---------------------------------------------------------------- open / close */

static int mkdir_p(const char *path)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        int rc = -errno;
        rd_error("could not create directory \"%s\": %s", path, strerror(errno));
        return rc;
    }
    return 0;
}

/* Deletes the segment files with segno in [lo, hi] of every timeline of the
 * chain (including an ancestor's copy of a switch segment, and leftovers past
 * an ancestor's end); fsyncs the dir. */
static int seg_remove_range(struct wal *w, uint64_t lo, uint64_t hi)
{
    DIR *d = opendir(w->wal_dir);
    if (d == NULL)
        return -errno;
    int removed = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t s;
        if (wal_seg_name_parse(de->d_name, &tl, &s) != 0 || s < lo || s > hi ||
            wal_chain_find(&w->chain, tl) < 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        seg_fd_forget(w, s);
        if (unlink(path) < 0) {
            if (errno == ENOENT)
                continue;
            rc = -errno;
            rd_error("could not remove WAL segment \"%s\": %s", path, strerror(errno));
            break;
        }
        removed++;
    }
    closedir(d);
    if (rc == 0 && removed)
        rc = fsync_dir(w->wal_dir);
    return rc;
}

/* A crash during seg_create leaves segtemp.PID behind: never a segment, just delete it. */
static void remove_temp_segments(const struct wal *w)
{
    DIR *d = opendir(w->wal_dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "segtemp.", 8) != 0 && strncmp(de->d_name, "directprobe.", 12) != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        if (unlink(path) < 0)
            rd_warn("could not remove leftover \"%s\": %s", path, strerror(errno));
    }
    if (d != NULL)
        closedir(d);
}

/* The default when neither the option nor RD_WAL_SYNC_METHOD chooses. */
#define WAL_SYNC_DEFAULT WAL_SYNC_FDATASYNC

const char *wal_sync_method_name(int method)
{
    switch (method) {
    case WAL_SYNC_AUTO: return "auto";
    case WAL_SYNC_FDATASYNC: return "fdatasync";
    case WAL_SYNC_OPEN_DATASYNC: return "open_datasync";
    default: return "unknown";
    }
}

/* Can this file system take O_DIRECT|O_DSYNC writes of WAL_DIO_ALIGN blocks?
 * 0 or -errno (tmpfs: EINVAL at open). */
static int probe_direct(const char *wal_dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/directprobe.%d", wal_dir, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT | O_DSYNC, 0600);
    if (fd < 0) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    int rc = 0;
    void *b = aligned_alloc(WAL_DIO_ALIGN, WAL_DIO_ALIGN);
    if (b == NULL) {
        rc = -ENOMEM;
    } else {
        memset(b, 0, WAL_DIO_ALIGN);
        ssize_t n = pwrite(fd, b, WAL_DIO_ALIGN, 0);
        rc = n < 0 ? -errno : n != (ssize_t)WAL_DIO_ALIGN ? -EIO : 0;
        free(b);
    }
    close(fd);
    unlink(tmp);
    return rc;
}

/* Chooses the sync method: the option, else RD_WAL_SYNC_METHOD, else the
 * default; open_datasync only if the probe succeeds. */
static void choose_sync_method(struct wal *w)
{
    int m = w->opt.sync_method;
    const char *src = "wal option";
    if (m == WAL_SYNC_AUTO) {
        const char *env = getenv("RD_WAL_SYNC_METHOD");
        src = "RD_WAL_SYNC_METHOD";
        if (env != NULL && strcmp(env, "fdatasync") == 0)
            m = WAL_SYNC_FDATASYNC;
        else if (env != NULL && strcmp(env, "open_datasync") == 0)
            m = WAL_SYNC_OPEN_DATASYNC;
        else if (env != NULL && env[0] != 0)
            rd_warn("RD_WAL_SYNC_METHOD=\"%s\" is not fdatasync or open_datasync: ignored", env);
    }
    if (m == WAL_SYNC_AUTO) {
        m = WAL_SYNC_DEFAULT;
        src = "default";
    }
    if (m == WAL_SYNC_OPEN_DATASYNC) {
        int rc = probe_direct(w->wal_dir);
        if (rc < 0) {
            rd_warn("O_DIRECT|O_DSYNC writes are not possible in \"%s\" (%s): WAL sync method fdatasync",
                    w->wal_dir, rd_strerror(rc));
            m = WAL_SYNC_FDATASYNC;
            src = "fallback";
        }
    }
    w->direct = m == WAL_SYNC_OPEN_DATASYNC;
    w->st.sync_method = (uint32_t)m;
    rd_info("WAL sync method %s (%s) in \"%s\"", wal_sync_method_name(m), src, w->wal_dir);
}

int wal_open(const struct wal_options *opt, struct wal **out)
{
    rd_assert(opt->dir != NULL);
    if (strlen(opt->dir) >= WAL_DIR_MAX) {
        rd_error("instance dir path is too long (%zu bytes, at most %u)", strlen(opt->dir), WAL_DIR_MAX - 1);
        return -ENAMETOOLONG;
    }
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->opt = *opt;
    snprintf(w->dir, sizeof(w->dir), "%s", opt->dir);
    snprintf(w->wal_dir, sizeof(w->wal_dir), "%s/wal", opt->dir);
    w->opt.dir = w->dir;
    int rc;
    if ((rc = mkdir_p(w->dir)) < 0 || (rc = mkdir_p(w->wal_dir)) < 0)
        goto fail;
    for (int i = 0; i < 2; i++) {
        struct wal_buf *b = &w->bufs[i];
        if ((b->mem = aligned_alloc(WAL_DIO_ALIGN, WAL_BUF_INITIAL)) == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        b->data = b->mem;
        b->cap = WAL_BUF_INITIAL;
    }
    choose_sync_method(w);
    rc = wal_control_read(w->dir, &w->ctl);
    if (rc == -ENOENT) {
        DIR *d = opendir(w->wal_dir);
        int any = d == NULL;
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            uint32_t tl;
            uint64_t s;
            any |= wal_seg_name_parse(de->d_name, &tl, &s) == 0;
        }
        if (d != NULL)
            closedir(d);
        if (any) {
            rd_error("control file \"%s/control\" is missing but WAL segments exist in \"%s\": "
                     "refusing to initialise over them",
                     w->dir, w->wal_dir);
            rc = RD_ECORRUPT;
            goto fail;
        }
        /* A new log. */
        uint64_t sysid = 0;
        if (getrandom(&sysid, sizeof(sysid), 0) != (ssize_t)sizeof(sysid)) {
            rc = -errno;
            rd_error("could not get random bytes for the system id: %s", strerror(errno));
            goto fail;
        }
        w->ctl = (struct wal_control){
            .system_id = sysid,
            .timeline = 1,
            .state = WAL_STATE_IN_PRODUCTION,
            .checkpoint_lsn = 0,
            .redo_lsn = WAL_SEG_HDR_SIZE,
            .segment_size_bytes = opt->segment_size_bytes ? opt->segment_size_bytes
                                                          : WAL_SEGMENT_SIZE_DEFAULT,
            .time_us = rd_wall_us(),
        };
        if (!seg_size_ok(w->ctl.segment_size_bytes)) {
            rd_error("WAL segment size %" PRIu64 " is invalid: a power of two from 1 MiB to 1 GiB",
                     w->ctl.segment_size_bytes);
            rc = -EINVAL;
            goto fail;
        }
        w->seg_size = w->ctl.segment_size_bytes;
        w->timeline = 1;
        w->system_id = sysid;
        if ((rc = wal_chain_load(w->wal_dir, 1, &w->chain)) < 0)
            goto fail;
        if ((rc = seg_prepare(w, 0)) < 0 || (rc = wal_control_write(w->dir, &w->ctl)) < 0)
            goto fail;
        rd_info("initialised a new WAL in \"%s\" (system id %016" PRIX64 ", segment size %" PRIu64
                " bytes)",
                w->dir, sysid, w->seg_size);
    } else if (rc < 0) {
        goto fail;
    } else {
        w->seg_size = w->ctl.segment_size_bytes;
        w->timeline = w->ctl.timeline;
        w->system_id = w->ctl.system_id;
        if ((rc = wal_chain_load(w->wal_dir, w->timeline, &w->chain)) < 0)
            goto fail;
        remove_temp_segments(w);
        if (opt->segment_size_bytes != 0 && opt->segment_size_bytes != w->seg_size)
            rd_warn("WAL segment size %" PRIu64 " requested, but \"%s\" was created with %" PRIu64
                    "; using the latter",
                    opt->segment_size_bytes, w->dir, w->seg_size);
    }
    w->insert_lsn = w->flushed_lsn = w->written_lsn = w->ctl.redo_lsn;
    w->last_ckpt_ms = rd_now_ms();
    *out = w;
    return 0;
fail:
    wal_chain_free(&w->chain);
    free(w->bufs[0].mem);
    free(w->bufs[1].mem);
    free(w);
    return rc;
}

static int wal_free(struct wal *w)
{
    rd_assert(!w->in_flight);
    if (w->prep != NULL)
        prep_abandon(w, 1);
    int rc = 0;
    for (size_t i = 0; i < w->nfds; i++)
        if (close(w->fds[i].fd) < 0 && rc == 0)
            rc = -errno;
    free(w->fds);
    close_retired(w);
    free(w->retired);
    wal_chain_free(&w->chain);
    free(w->bufs[0].mem);
    free(w->bufs[1].mem);
    free(w->ios);
    free(w);
    return rc;
}

int wal_close(struct wal *w)
{
    if (w == NULL)
        return 0;
    if (w->prep != NULL)
        prep_abandon(w, 1); /* before the loop may be destroyed */
    if (w->in_flight) {
        /* The kernel still owns the in-flight buffer and its fds (L1): the last
         * completion frees everything. If the loop never runs again, the memory
         * is left to the process exit. */
        rd_warn("WAL closed with a flush in flight: released when it completes");
        w->closed = 1;
        return 0;
    }
    return wal_free(w);
}

void wal_get_stats(const struct wal *w, struct wal_stats *out)
{
    *out = w->st;
    out->insert_lsn = w->insert_lsn;
    out->flushed_lsn = w->flushed_lsn;
    out->redo_lsn = w->ctl.redo_lsn;
    out->timeline = w->timeline;
    out->system_id = w->system_id;
    out->sync_method = w->direct ? WAL_SYNC_OPEN_DATASYNC : WAL_SYNC_FDATASYNC;
}

/* ---------------------------------------------------------------- recovery */

static int finish_switch(struct wal *w, uint32_t new_tli, uint64_t switch_lsn);

static void log_corruption(struct wal_reader *r)
{
    struct wal_reader_stop s;
    wal_reader_stop_info(r, &s);
    if (strcmp(s.path, s.valid_path) == 0)
        rd_error("WAL corruption at segment file \"%s\" offset %" PRIu64 " (lsn %X/%X): %s; valid "
                 "records follow at offset %" PRIu64 " — refusing to start",
                 s.path, s.offset, (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason, s.valid_offset);
    else
        rd_error("WAL corruption at segment file \"%s\" offset %" PRIu64 " (lsn %X/%X): %s; valid "
                 "records follow in segment file \"%s\" at offset %" PRIu64 " — refusing to start",
                 s.path, s.offset, (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason, s.valid_path,
                 s.valid_offset);
}

/*
 * Pass 1: finds the end of the valid log and the cut point — the end of the
 * last COMMIT, CHECKPOINT or TIMELINE record (or the redo point if there is none).
 * *prev_at_cut is the start of the record that ends at the cut.
 */
struct pending_tl {
    uint32_t new_tli, prev_tli;
    uint64_t lsn;
};

static int recover_scan(struct wal *w, uint64_t *cut, uint64_t *prev_at_cut, uint64_t *end,
                        uint64_t *nrecords, struct pending_tl *tl)
{
    struct wal_reader *r;
    int rc = wal_reader_open(w->dir, w->ctl.redo_lsn, &r);
    if (rc < 0)
        return rc;
    *cut = *end = w->ctl.redo_lsn;
    *prev_at_cut = 0;
    *nrecords = 0;
    int first = 1;
    struct wal_record rec;
    while ((rc = wal_reader_next(r, &rec)) == 1) {
        if (first) {
            *prev_at_cut = rec.prev_lsn; /* the record before redo */
            first = 0;
        }
        (*nrecords)++;
        *end = rec.end_lsn;
        /* COMMIT, CHECKPOINT and TIMELINE are consistency points (W7). */
        if (rec.type == WAL_REC_COMMIT || rec.type == WAL_REC_CHECKPOINT || rec.type == WAL_REC_TIMELINE) {
            *cut = rec.end_lsn;
            *prev_at_cut = rec.lsn;
        }
        if (rec.type == WAL_REC_TIMELINE && rd_get_u32le(rec.body) > tl->new_tli) {
            tl->new_tli = rd_get_u32le(rec.body);
            tl->prev_tli = rd_get_u32le(rec.body + 4);
            tl->lsn = rec.lsn;
        }
    }
    if (rc == RD_ECORRUPT)
        log_corruption(r);
    else if (rc == 0) {
        struct wal_reader_stop s;
        wal_reader_stop_info(r, &s);
        if (s.reason != NULL)
            rd_info("end of WAL at lsn %X/%X: %s", (unsigned)(s.lsn >> 32), (unsigned)s.lsn, s.reason);
    }
    wal_reader_close(r);
    return rc;
}

/* Zeroes the log from cut to the end of its segment, deletes later segments,
 * fdatasyncs every segment from the redo point up to the cut. */
static int recover_truncate(struct wal *w, uint64_t cut)
{
    uint64_t segno = cut / w->seg_size, off = cut % w->seg_size;
    int rc;
    prep_abandon(w, 0); /* it could land past the cut */
    if (off == 0) {
        /* The cut is a segment boundary: segment segno starts afresh. */
        if ((rc = seg_remove_range(w, segno, UINT64_MAX)) < 0)
            return rc;
    } else {
        if ((rc = seg_remove_range(w, segno + 1, UINT64_MAX)) < 0)
            return rc;
        w->have_prepared = 0;
        if ((rc = seg_prepare(w, segno)) < 0) /* redo may sit in a segment never created */
            return rc;
        char path[PATH_MAX];
        seg_path(w, segno, path, sizeof(path));
        /* A buffered fd of its own: the writer's may be O_DIRECT (unaligned here). */
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
            rd_error("could not open WAL segment \"%s\": %s", path, rd_strerror(rc));
            return rc;
        }
        /* Zero the rest of the segment, unless it already is (a clean restart). */
        uint64_t len = w->seg_size - off;
        uint8_t *tail = malloc(len);
        if (tail == NULL) {
            close(fd);
            return -ENOMEM;
        }
        long n = wal_pread_all(fd, tail, len, off);
        rc = n < 0 ? (int)n : 0;
        int dirty = rc < 0 || (uint64_t)n != len;
        for (uint64_t i = 0; !dirty && i < len; i++)
            dirty = tail[i] != 0;
        if (dirty) {
            memset(tail, 0, len);
            rc = wal_pwrite_all(fd, tail, len, off);
            if (rc == 0 && fdatasync(fd) < 0)
                rd_panic("could not fdatasync WAL segment \"%s\": %s", path, strerror(errno));
        }
        free(tail);
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc < 0) {
            rd_error("could not write WAL segment \"%s\": %s", path, rd_strerror(rc));
            return rc;
        }
    }
    /* Bytes read during recovery may exist only in the page cache (the last
     * process died before its fdatasync): make them durable before any data
     * page derived from them can be written. */
    uint64_t last = off == 0 ? segno : segno + 1;
    for (uint64_t s = w->ctl.redo_lsn / w->seg_size; s < last; s++) {
        int fd = seg_fd(w, s);
        if (fd < 0)
            return fd;
        if (fdatasync(fd) < 0) {
            char path[PATH_MAX];
            seg_path(w, s, path, sizeof(path));
            rd_panic("could not fdatasync WAL segment \"%s\": %s", path, strerror(errno));
        }
    }
    w->have_prepared = 0;
    if (off != 0) {
        w->prepared_segno = segno;
        w->have_prepared = 1;
    } else if (segno > 0) {
        w->prepared_segno = segno - 1;
        w->have_prepared = 1;
    }
    return 0;
}

/* Pass 2: applies every page record that ends at or before the cut. */
static int recover_replay(struct wal *w, struct engine *e, uint64_t cut, uint64_t *applied)
{
    struct wal_reader *r;
    int rc = wal_reader_open(w->dir, w->ctl.redo_lsn, &r);
    if (rc < 0)
        return rc;
    struct wal_record rec;
    *applied = 0;
    while ((rc = wal_reader_next(r, &rec)) == 1 && rec.end_lsn <= cut) {
        if (rec.type != WAL_REC_PAGE_DELTA && rec.type != WAL_REC_PAGE_IMAGE)
            continue;
        rc = engine_redo(e, rec.page_id, rec.type, rec.body, rec.body_len, rec.end_lsn);
        if (rc < 0) {
            rd_error("could not replay WAL record at lsn %X/%X (page %" PRIu32 ", %s): %s",
                     (unsigned)(rec.lsn >> 32), (unsigned)rec.lsn, rec.page_id,
                     wal_rec_type_name(rec.type), rd_strerror(rc));
            break;
        }
        (*applied)++;
    }
    wal_reader_close(r);
    return rc < 0 ? rc : 0;
}

int wal_recover(struct wal *w, struct engine *e)
{
    rd_assert(!w->recovered);
    uint64_t t0 = rd_now_us();
    uint64_t cut, prev, end, nrec, applied;
    struct pending_tl tl = {0, 0, 0};
    int rc = recover_scan(w, &cut, &prev, &end, &nrec, &tl);
    if (rc < 0)
        return rc;
    if (end > cut)
        rd_info("discarding %" PRIu64 " bytes of WAL after the last commit at %X/%X (transaction "
                "without a commit record)",
                end - cut, (unsigned)(cut >> 32), (unsigned)cut);
    if ((rc = recover_truncate(w, cut)) < 0)
        return rc;
    w->insert_lsn = w->flushed_lsn = w->written_lsn = cut;
    w->prev_lsn = prev;
    w->prev_unknown = nrec == 0;
    w->recovered = 1;
    if (cut % w->seg_size != 0 && (rc = seg_prepare(w, cut / w->seg_size)) < 0)
        return rc;
    if ((rc = bufs_reset_at(w, cut)) < 0)
        return rc;
    if ((rc = recover_replay(w, e, cut, &applied)) < 0)
        return rc;
    if ((rc = engine_reload_meta(e)) < 0) {
        rd_error("could not reload the engine's meta page after recovery: %s", rd_strerror(rc));
        return rc;
    }
    engine_set_fpi_threshold(e, w->ctl.redo_lsn);
    if (tl.new_tli > w->timeline) {
        /* A TIMELINE record whose switch did not complete (crash between the
         * record and the control file update): complete it now. */
        if (tl.prev_tli != w->timeline) {
            rd_error("WAL holds a switch from timeline %" PRIu32 " to %" PRIu32 " at %X/%X, but this "
                     "log is on timeline %" PRIu32,
                     tl.prev_tli, tl.new_tli, (unsigned)(tl.lsn >> 32), (unsigned)tl.lsn, w->timeline);
            return RD_ECORRUPT;
        }
        rd_info("completing the switch to timeline %" PRIu32 " at %X/%X", tl.new_tli,
                (unsigned)(tl.lsn >> 32), (unsigned)tl.lsn);
        if ((rc = finish_switch(w, tl.new_tli, tl.lsn)) < 0)
            return rc;
    }
    w->ctl.state = WAL_STATE_IN_PRODUCTION;
    w->ctl.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &w->ctl)) < 0)
        return rc;
    rd_info("recovery: replayed %" PRIu64 " page records of %" PRIu64 " from redo %X/%X to %X/%X in "
            "%" PRIu64 " ms",
            applied, nrec, (unsigned)(w->ctl.redo_lsn >> 32), (unsigned)w->ctl.redo_lsn,
            (unsigned)(cut >> 32), (unsigned)cut, (rd_now_us() - t0) / 1000);
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */

static int checkpoint(struct wal *w, struct engine *e, uint32_t state)
{
    rd_assert(w->recovered);
    uint64_t redo = w->insert_lsn;
    int rc = wal_flush_sync(w, w->insert_lsn);
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("checkpoint: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
    uint8_t body[WAL_CHECKPOINT_BODY];
    uint64_t now = rd_wall_us();
    rd_put_u64le(body, redo);
    rd_put_u32le(body + 8, w->timeline);
    rd_put_u64le(body + 12, now);
    uint64_t start, end;
    if ((rc = append_record(w, WAL_REC_CHECKPOINT, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start,
                            &end)) < 0)
        return rc;
    if ((rc = wal_flush_sync(w, end)) < 0)
        return rc;
    struct wal_control c = w->ctl;
    c.state = state;
    c.checkpoint_lsn = start;
    c.redo_lsn = redo;
    c.time_us = now;
    if ((rc = wal_control_write(w->dir, &c)) < 0)
        return rc;
    w->ctl = c;
    engine_set_fpi_threshold(e, redo);
    w->ckpt_end_lsn = end;
    w->last_ckpt_ms = rd_now_ms();
    w->st.checkpoints++;
    /* Remove segments wholly below the redo point and the keep LSN. */
    uint64_t keep = redo;
    if (w->keep_lsn != 0)
        keep = RD_MIN(keep, w->keep_lsn);
    uint64_t keep_seg = keep / w->seg_size;
    if (keep_seg > 0) {
        prune_fds(w);
        if ((rc = seg_remove_range(w, 0, keep_seg - 1)) < 0)
            return rc;
    }
    return 0;
}

int wal_checkpoint(struct wal *w, struct engine *e) { return checkpoint(w, e, WAL_STATE_IN_PRODUCTION); }

void wal_promote_fast(struct wal *w, struct engine *e)
{
    rd_assert(w->recovered && w->ctl.redo_lsn <= w->insert_lsn);
    engine_set_fpi_threshold(e, w->ctl.redo_lsn);
}

int wal_needs_checkpoint(const struct wal *w)
{
    if (!w->recovered || w->insert_lsn == w->ckpt_end_lsn || w->insert_lsn == w->ctl.redo_lsn)
        return 0; /* nothing logged since the last checkpoint */
    if (w->opt.checkpoint_wal_bytes != 0 && w->insert_lsn - w->ctl.redo_lsn > w->opt.checkpoint_wal_bytes)
        return 1;
    if (w->opt.checkpoint_interval_ms != 0 &&
        rd_now_ms() - w->last_ckpt_ms > w->opt.checkpoint_interval_ms)
        return 1;
    return 0;
}

int wal_shutdown(struct wal *w, struct engine *e)
{
    int rc = checkpoint(w, e, WAL_STATE_SHUT_DOWN);
    if (rc == 0)
        rd_info("WAL shut down cleanly at %X/%X", (unsigned)(w->insert_lsn >> 32),
                (unsigned)w->insert_lsn);
    return rc;
}

/* ================================================================ replication (classic mode) */

uint64_t wal_written_lsn(const struct wal *w) { return w->written_lsn; }

uint32_t wal_timeline(const struct wal *w) { return w->timeline; }
uint64_t wal_timeline_switch_lsn(const struct wal *w) { return w->chain.v[w->chain.n - 1].begin_lsn; }
uint32_t wal_timeline_parent(const struct wal *w)
{
    return w->chain.n >= 2 ? w->chain.v[w->chain.n - 2].tli : 0;
}

static void fmt_lsn2(char *dst, size_t len, uint64_t lsn)
{
    snprintf(dst, len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

/* Where append_record would put a record of aligned size `aligned` now. */
static uint64_t landing_lsn(const struct wal *w, size_t aligned)
{
    uint64_t at = w->insert_lsn;
    if (at % w->seg_size == 0)
        at += WAL_SEG_HDR_SIZE;
    if (aligned > w->seg_size - at % w->seg_size)
        at = at - at % w->seg_size + w->seg_size + WAL_SEG_HDR_SIZE;
    return at;
}

int wal_append_encoded(struct wal *w, const uint8_t *rec, size_t avail, uint64_t expected_lsn,
                       uint64_t *end_lsn, size_t *consumed)
{
    rd_assert(w->recovered);
    struct wal_record r;
    const char *why;
    char exp[32], at_s[32]; /* formatted only for a message: this runs once per replicated record */
    int n = wal_record_decode_why(rec, avail, &r, &why);
    if (n < 0) {
        fmt_lsn2(exp, sizeof(exp), expected_lsn);
        rd_error("replicated WAL record for lsn %s is invalid: %s", exp, why);
        return RD_ECORRUPT;
    }
    size_t aligned = (size_t)n;
    /* The same placement rule as append_record, but a SWITCH is never made up
     * here: the primary's own SWITCH records arrive in the stream. */
    uint64_t at = wal_next_record_lsn(w->insert_lsn, w->seg_size);
    if (r.type != WAL_REC_SWITCH && aligned > w->seg_size - at % w->seg_size) {
        fmt_lsn2(exp, sizeof(exp), expected_lsn);
        fmt_lsn2(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record for lsn %s (%zu bytes) does not fit in the rest of the segment "
                 "at %s, and no SWITCH record preceded it",
                 exp, aligned, at_s);
        return RD_ECORRUPT;
    }
    if (wal_next_record_lsn(expected_lsn, w->seg_size) != at) {
        fmt_lsn2(exp, sizeof(exp), expected_lsn);
        fmt_lsn2(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record for lsn %s would land at %s", exp, at_s);
        return RD_ECORRUPT;
    }
    if (!w->prev_unknown && r.prev_lsn != w->prev_lsn) {
        char a[32], b[32];
        fmt_lsn2(a, sizeof(a), r.prev_lsn);
        fmt_lsn2(b, sizeof(b), w->prev_lsn);
        fmt_lsn2(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record at %s has prev lsn %s, but the previous record is at %s", at_s, a,
                 b);
        return RD_ECORRUPT;
    }
    int rc;
    uint64_t off = w->insert_lsn % w->seg_size;
    if (off != 0 && at != w->insert_lsn) { /* < 32 bytes left: implicit move to the next segment */
        uint8_t *dst = buf_grow(w, w->seg_size - off);
        if (dst == NULL)
            return RD_EFULL;
        memset(dst, 0, w->seg_size - off);
        off = 0;
    }
    if (off == 0 && (rc = begin_segment(w)) < 0)
        return rc;
    rd_assert(w->insert_lsn == at);
    uint8_t *dst = buf_grow(w, aligned);
    if (dst == NULL)
        return RD_EFULL;
    size_t total = WAL_RECORD_HDR_SIZE + r.body_len;
    memcpy(dst, rec, total);
    memset(dst + total, 0, aligned - total);
    w->prev_lsn = at;
    w->prev_unknown = 0;
    if (r.type == WAL_REC_SWITCH) { /* the rest of the segment is unused */
        uint64_t rest = w->seg_size - w->insert_lsn % w->seg_size;
        if (rest != w->seg_size) {
            if ((dst = buf_grow(w, rest)) == NULL)
                return RD_EFULL;
            memset(dst, 0, rest);
        }
    }
    w->st.records++;
    w->st.record_bytes += aligned;
    if (r.type == WAL_REC_PAGE_IMAGE) {
        w->st.image_records++;
        w->st.image_bytes += aligned;
    }
    if (r.type == WAL_REC_COMMIT) {
        w->st.commits++;
        w->bufs[w->active].commits++;
    }
    *end_lsn = w->insert_lsn;
    *consumed = aligned;
    uint64_t segno = at / w->seg_size;
    if (w->insert_lsn % w->seg_size == 0)
        rc = seg_prepare(w, segno + 1);
    else
        rc = prepare_next(w, segno, w->insert_lsn % w->seg_size);
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------- WAL sender */

#define WAL_REC_MAX_ALIGNED RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_BODY_MAX, WAL_RECORD_ALIGN)

struct wal_sender_cursor {
    struct wal *w;
    uint8_t *buf;
    size_t cap;
    uint64_t next_lsn; /* after the last record returned (0: none yet) */
    uint64_t last_lsn; /* start of the last record returned */
};

int wal_sender_open(struct wal *w, struct wal_sender_cursor **out)
{
    struct wal_sender_cursor *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->w = w;
    *out = c;
    return 0;
}

void wal_sender_close(struct wal_sender_cursor *c)
{
    if (c == NULL)
        return;
    free(c->buf);
    free(c);
}

int wal_sender_read(struct wal_sender_cursor *c, uint64_t from_lsn, uint64_t upto_lsn, size_t max_bytes,
                    struct rd_buf *out, uint64_t *first_lsn, uint64_t *next_lsn)
{
    struct wal *w = c->w;
    uint64_t seg = w->seg_size;
    uint64_t pos = wal_next_record_lsn(from_lsn, seg);
    if (upto_lsn > w->written_lsn)
        upto_lsn = w->written_lsn; /* only records whose write completed (in the page cache) */
    *first_lsn = *next_lsn = pos;
    /* Continuing where the last call stopped: check the prev chain across calls too. */
    int check_prev = c->next_lsn != 0 && wal_next_record_lsn(c->next_lsn, seg) == pos;
    int count = 0, stop = 0;
    size_t bytes = 0;
    while (!stop && pos < upto_lsn) {
        uint64_t segno = pos / seg, off = pos % seg;
        char path[PATH_MAX];
        int exists = 1, borrowed = 0, fd = -1;
        path[0] = 0;
        /* The log's own fd for this segment when it has one open (buffered mode only: direct-mode
         * fds need aligned buffers): no path lookup, open or close per call. pread leaves it as it was. */
        for (size_t i = 0; !w->direct && i < w->nfds && !borrowed; i++)
            if (w->fds[i].segno == segno) {
                fd = w->fds[i].fd;
                borrowed = 1;
            }
        if (!borrowed) {
            seg_path_ex(w, segno, path, sizeof(path), &exists);
            fd = exists ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        }
        if (fd < 0) {
            if (count > 0)
                break;
            if (!exists || errno == ENOENT) {
                rd_warn("WAL sender: segment file \"%s\" for lsn %X/%X was removed", path,
                        (unsigned)(pos >> 32), (unsigned)pos);
                return RD_ENOTFOUND;
            }
            int rc = -errno;
            rd_error("WAL sender: could not open \"%s\": %s", path, strerror(errno));
            return rc;
        }
        /* The durable bytes of this segment from pos, but at most what this
         * call may still send plus one largest record: a window never cuts a
         * record that could still be sent. */
        uint64_t lim = RD_MIN(seg, w->written_lsn - segno * seg);
        size_t budget = max_bytes > bytes ? max_bytes - bytes : 0;
        size_t want = (size_t)RD_MIN(lim - off, (uint64_t)budget + WAL_REC_MAX_ALIGNED);
        if (want > c->cap) {
            uint8_t *np = realloc(c->buf, want);
            if (np == NULL) {
                if (!borrowed)
                    close(fd);
                return -ENOMEM;
            }
            c->buf = np;
            c->cap = want;
        }
        long got = wal_pread_all(fd, c->buf, want, off);
        int err = got < 0 ? (int)-got : 0;
        if (!borrowed)
            close(fd);
        if (got < 0) {
            if (path[0] == 0)
                seg_path(w, segno, path, sizeof(path));
            rd_error("WAL sender: could not read \"%s\": %s", path, strerror(err));
            return -err;
        }
        size_t p = 0;
        for (;;) {
            if (pos >= upto_lsn) {
                stop = 1;
                break;
            }
            if (wal_next_record_lsn(pos, seg) != pos) { /* segment end or a tail < 32 bytes */
                pos = wal_next_record_lsn(pos, seg);
                break;
            }
            if (count > 0 && p + 4 <= (size_t)got) { /* message full? (before the window may cut it) */
                uint64_t len = RD_ALIGN_UP((uint64_t)rd_get_u32le(c->buf + p), WAL_RECORD_ALIGN);
                if (bytes + len > max_bytes) {
                    stop = 1;
                    break;
                }
            }
            struct wal_record r;
            const char *why = "the written part of the segment ends inside a record";
            int n = p < (size_t)got ? wal_record_decode_why(c->buf + p, (size_t)got - p, &r, &why) : RD_ECORRUPT;
            if (n > 0 && check_prev && r.prev_lsn != c->last_lsn) {
                n = RD_ECORRUPT;
                why = "prev LSN does not point at the previous record";
            }
            if (n < 0) {
                if (path[0] == 0)
                    seg_path(w, segno, path, sizeof(path));
                rd_error("WAL sender: invalid record in \"%s\" at offset %" PRIu64 " (lsn %X/%X): %s", path,
                         off + p, (unsigned)(pos >> 32), (unsigned)pos, why);
                return RD_ECORRUPT;
            }
            if (count > 0 && bytes + (size_t)n > max_bytes) {
                stop = 1;
                break;
            }
            if (rd_buf_append(out, c->buf + p, (size_t)n) < 0)
                return -ENOMEM;
            if (count == 0)
                *first_lsn = pos;
            count++;
            bytes += (size_t)n;
            c->last_lsn = pos;
            check_prev = 1;
            p += (size_t)n;
            pos = r.type == WAL_REC_SWITCH ? (segno + 1) * seg : pos + (uint64_t)n;
            c->next_lsn = *next_lsn = pos;
        }
    }
    return count;
}

uint64_t wal_oldest_lsn(const struct wal *w)
{
    uint64_t *segs = NULL;
    long n = wal_chain_list(w->wal_dir, &w->chain, w->seg_size, &segs);
    uint64_t lsn = n > 0 ? segs[0] * w->seg_size : w->insert_lsn;
    free(segs);
    return lsn;
}

/* ---------------------------------------------------------------- truncation */

int wal_truncate(struct wal *w, uint64_t lsn)
{
    rd_assert(w->recovered);
    char s[32];
    fmt_lsn2(s, sizeof(s), lsn);
    if (w->in_flight) {
        rd_error("cannot truncate the WAL at %s with a flush in flight", s);
        return RD_ESTATE;
    }
    if (lsn > w->insert_lsn || lsn < w->ctl.redo_lsn || (w->chain.n > 1 && lsn <= wal_timeline_switch_lsn(w))) {
        rd_error("cannot truncate the WAL at %s: outside [redo, end] of the current timeline", s);
        return -EINVAL;
    }
    if (lsn == w->insert_lsn)
        return 0;
    int rc = wal_flush_sync(w, w->insert_lsn); /* the reader below reads the files */
    if (rc < 0)
        return rc;
    struct wal_reader *r;
    if ((rc = wal_reader_open_timeline(w->dir, w->ctl.redo_lsn, wal_timeline(w), &r)) < 0)
        return rc;
    uint64_t target = wal_next_record_lsn(lsn, w->seg_size);
    int found = wal_next_record_lsn(w->ctl.redo_lsn, w->seg_size) == target, any = 0;
    uint64_t prev = 0;
    struct wal_record rec;
    while (!found && (rc = wal_reader_next(r, &rec)) == 1) {
        if (!any)
            prev = rec.prev_lsn;
        any = 1;
        uint64_t end = rec.type == WAL_REC_SWITCH ? rec.lsn - rec.lsn % w->seg_size + w->seg_size : rec.end_lsn;
        if (rec.lsn >= target)
            break;
        if (wal_next_record_lsn(end, w->seg_size) == target) {
            found = 1;
            prev = rec.lsn;
        }
    }
    if (!found) {
        char where[PATH_MAX];
        uint64_t where_off = 0;
        wal_reader_position(r, where, sizeof(where), &where_off);
        rd_error("cannot truncate the WAL at %s: not a record boundary (the log read from %X/%X along "
                 "timeline %u stops at \"%s\" offset %" PRIu64 ", rc %d)",
                 s, (unsigned)(w->ctl.redo_lsn >> 32), (unsigned)w->ctl.redo_lsn, wal_timeline(w), where,
                 where_off, rc);
    }
    wal_reader_close(r);
    if (!found) {
        return rc < 0 ? rc : -EINVAL;
    }
    if ((rc = recover_truncate(w, lsn)) < 0)
        return rc;
    prune_fds(w);
    w->insert_lsn = w->flushed_lsn = w->written_lsn = lsn;
    w->prev_lsn = prev;
    w->prev_unknown = !any && w->prev_unknown;
    if (lsn % w->seg_size != 0 && (rc = seg_prepare(w, lsn / w->seg_size)) < 0)
        return rc;
    if ((rc = bufs_reset_at(w, lsn)) < 0)
        return rc;
    rd_info("WAL truncated at %s", s);
    return 0;
}

/* ---------------------------------------------------------------- timelines */

/* Copies segment segno to the new timeline's name with a new header (tmp,
 * fdatasync, rename; the caller fsyncs the dir). Replaces an earlier copy. */
static int seg_copy_to_timeline(struct wal *w, uint64_t segno, uint32_t new_tli)
{
    char src[PATH_MAX], dst[PATH_MAX], tmp[PATH_MAX], name[32];
    int exists;
    seg_path_ex(w, segno, src, sizeof(src), &exists);
    wal_seg_name(name, sizeof(name), new_tli, segno);
    snprintf(dst, sizeof(dst), "%s/%s", w->wal_dir, name);
    snprintf(tmp, sizeof(tmp), "%s/segtemp.%d", w->wal_dir, (int)getpid());
    uint8_t *data = calloc(1, w->seg_size);
    if (data == NULL)
        return -ENOMEM;
    const char *what = "read";
    int rc = 0, fd = -1;
    if (exists) {
        fd = open(src, O_RDONLY | O_CLOEXEC);
        long got = fd < 0 ? -errno : wal_pread_all(fd, data, w->seg_size, 0);
        if (fd >= 0)
            close(fd);
        if (got < 0) {
            rc = (int)got;
            goto fail;
        }
    }
    struct wal_seg_header h = {WAL_FORMAT_VERSION, new_tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(data, &h);
    what = "create";
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        rc = -errno;
        goto fail;
    }
    what = "write";
    /* Only the bytes in use are copied (a promotion's outage: a 16 MiB write + fsync is
     * ~100 ms); the rest is allocated as zeros (it must read as zeros: the end of the log
     * is found by the first invalid record). Without fallocate, zeros are written. */
    size_t used = w->seg_size;
    if (segno == (w->insert_lsn - 1) / w->seg_size || w->insert_lsn <= segno * w->seg_size)
        used = RD_MIN(w->seg_size, RD_ALIGN_UP((size_t)(w->insert_lsn > segno * w->seg_size
                                                            ? w->insert_lsn - segno * w->seg_size
                                                            : 0) + WAL_SEG_HDR_SIZE,
                                               (size_t)4096));
    rc = wal_pwrite_all(fd, data, used, 0);
    if (rc == 0 && used < w->seg_size && fallocate(fd, 0, 0, (off_t)w->seg_size) < 0) {
        if (errno != EOPNOTSUPP) {
            what = "fallocate";
            rc = -errno;
        } else {
            rc = wal_pwrite_all(fd, data + used, w->seg_size - used, (off_t)used);
        }
    }
    if (rc == 0 && fdatasync(fd) < 0) {
        what = "fdatasync";
        rc = -errno;
    }
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, dst) < 0) {
        what = "rename";
        rc = -errno;
    }
    if (rc < 0)
        goto fail;
    free(data);
    return 0;
fail:
    free(data);
    rd_error("could not %s WAL segment \"%s\" (copy of \"%s\" for timeline %" PRIu32 "): %s", what, tmp, src,
             new_tli, rd_strerror(rc));
    return rc;
}

/*
 * The TIMELINE record at switch_lsn is durable in the current timeline's
 * files: copies the segments from the switch one to the end of the log under
 * the new timeline's name (new header, same records), writes the history file,
 * then the control file (the commit point), then removes the old timeline's
 * files past the switch segment. Idempotent (recovery completes a switch cut
 * short by a crash with it).
 */
static int finish_switch(struct wal *w, uint32_t new_tli, uint64_t switch_lsn)
{
    uint64_t first = switch_lsn / w->seg_size;
    uint64_t last = RD_MAX(first, (w->insert_lsn - 1) / w->seg_size);
    int rc;
    prep_abandon(w, 0); /* it would carry the old timeline's name and header */
    for (uint64_t s = first; s <= last; s++)
        if ((rc = seg_copy_to_timeline(w, s, new_tli)) < 0)
            return rc;
    if ((rc = fsync_dir(w->wal_dir)) < 0)
        return rc;
    struct wal_chain nc = {NULL, 0};
    nc.v = malloc((w->chain.n + 1) * sizeof(*nc.v));
    if (nc.v == NULL)
        return -ENOMEM;
    memcpy(nc.v, w->chain.v, w->chain.n * sizeof(*nc.v));
    nc.n = w->chain.n;
    if ((rc = wal_chain_push(&nc, new_tli, switch_lsn)) < 0 || (rc = wal_history_write(w->wal_dir, &nc)) < 0) {
        wal_chain_free(&nc);
        return rc;
    }
    struct wal_control c = w->ctl;
    c.timeline = new_tli;
    c.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &c)) < 0) {
        wal_chain_free(&nc);
        return rc;
    }
    w->ctl = c;
    uint32_t old_tli = w->timeline;
    wal_chain_free(&w->chain);
    w->chain = nc;
    w->timeline = new_tli;
    /* Cached fds of the switch segment and later name the old files. */
    for (size_t i = 0; i < w->nfds;) {
        if (w->fds[i].segno >= first)
            seg_fd_forget(w, w->fds[i].segno);
        else
            i++;
    }
    /* The old timeline's files past the switch segment (prepared, empty, or
     * copied above) are no longer part of this log. */
    DIR *d = opendir(w->wal_dir);
    struct dirent *de;
    int removed = 0;
    while (d != NULL && (de = readdir(d)) != NULL) {
        uint32_t tl;
        uint64_t sn;
        if (wal_seg_name_parse(de->d_name, &tl, &sn) != 0 || tl != old_tli || sn <= first)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%.64s", w->wal_dir, de->d_name);
        if (unlink(path) == 0)
            removed++;
        else
            rd_warn("could not remove WAL segment \"%s\": %s", path, strerror(errno));
    }
    if (d != NULL)
        closedir(d);
    if (removed && (rc = fsync_dir(w->wal_dir)) < 0)
        return rc;
    w->prepared_segno = last;
    w->have_prepared = 1;
    rd_info("now on timeline %" PRIu32 " (from %" PRIu32 " at %X/%X)", new_tli, old_tli,
            (unsigned)(switch_lsn >> 32), (unsigned)switch_lsn);
    return 0;
}

int wal_switch_timeline(struct wal *w, uint64_t *switch_lsn)
{
    rd_assert(w->recovered);
    uint32_t new_tli = w->timeline + 1;
    uint64_t at = landing_lsn(w, RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_TIMELINE_BODY, WAL_RECORD_ALIGN));
    uint8_t body[WAL_TIMELINE_BODY];
    rd_put_u32le(body, new_tli);
    rd_put_u32le(body + 4, w->timeline);
    rd_put_u64le(body + 8, at);
    uint64_t start, end;
    int rc = append_record(w, WAL_REC_TIMELINE, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start, &end);
    if (rc < 0)
        return rc;
    rd_assert(start == at);
    if ((rc = wal_flush_sync(w, end)) < 0 || (rc = finish_switch(w, new_tli, at)) < 0)
        return rc;
    *switch_lsn = at;
    return 0;
}

int wal_follow_timeline(struct wal *w, uint32_t new_timeline, uint64_t switch_lsn)
{
    rd_assert(w->recovered);
    /* The end of the record before it is accepted too (as by wal_append_encoded). */
    switch_lsn = wal_next_record_lsn(switch_lsn, w->seg_size);
    char s[32];
    fmt_lsn2(s, sizeof(s), switch_lsn);
    if (new_timeline <= w->timeline || switch_lsn >= w->insert_lsn ||
        switch_lsn <= wal_timeline_switch_lsn(w)) {
        rd_error("cannot follow timeline %" PRIu32 " at %s from timeline %" PRIu32 " (log ends at %X/%X)",
                 new_timeline, s, w->timeline, (unsigned)(w->insert_lsn >> 32), (unsigned)w->insert_lsn);
        return -EINVAL;
    }
    int rc = wal_flush_sync(w, w->insert_lsn);
    if (rc < 0)
        return rc;
    /* The TIMELINE record must be in this log, at switch_lsn. */
    uint8_t b[RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + WAL_TIMELINE_BODY, WAL_RECORD_ALIGN)];
    char path[PATH_MAX];
    seg_path(w, switch_lsn / w->seg_size, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* buffered: the writer's fd may be O_DIRECT */
    long got = fd < 0 ? -errno : wal_pread_all(fd, b, sizeof(b), switch_lsn % w->seg_size);
    if (fd >= 0)
        close(fd);
    struct wal_record r;
    if (got < 0)
        return (int)got;
    if (wal_record_decode(b, (size_t)got, &r) < 0 || r.type != WAL_REC_TIMELINE ||
        rd_get_u32le(r.body) != new_timeline || rd_get_u32le(r.body + 4) != w->timeline ||
        rd_get_u64le(r.body + 8) != switch_lsn) {
        rd_error("cannot follow timeline %" PRIu32 ": no matching TIMELINE record at %s", new_timeline, s);
        return RD_ECORRUPT;
    }
    return finish_switch(w, new_timeline, switch_lsn);
}

/* ---------------------------------------------------------------- restart points, cloning */

int wal_restartpoint(struct wal *w, struct engine *e, uint64_t checkpoint_lsn, uint64_t redo_lsn)
{
    rd_assert(w->recovered);
    checkpoint_lsn = wal_next_record_lsn(checkpoint_lsn, w->seg_size); /* as wal_append_encoded */
    if (redo_lsn > checkpoint_lsn || checkpoint_lsn >= w->insert_lsn || redo_lsn < w->ctl.redo_lsn) {
        rd_error("restart point: checkpoint %X/%X redo %X/%X is not within this log", (unsigned)(checkpoint_lsn >> 32),
                 (unsigned)checkpoint_lsn, (unsigned)(redo_lsn >> 32), (unsigned)redo_lsn);
        return -EINVAL;
    }
    int rc = wal_flush_sync(w, w->insert_lsn); /* W8: the CHECKPOINT record is durable */
    if (rc < 0)
        return rc;
    if ((rc = engine_flush_dirty(e)) < 0) {
        rd_error("restart point: could not flush dirty pages: %s", rd_strerror(rc));
        return rc;
    }
    struct wal_control c = w->ctl;
    c.state = WAL_STATE_IN_PRODUCTION;
    c.checkpoint_lsn = checkpoint_lsn;
    c.redo_lsn = redo_lsn;
    c.time_us = rd_wall_us();
    if ((rc = wal_control_write(w->dir, &c)) < 0)
        return rc;
    w->ctl = c;
    w->last_ckpt_ms = rd_now_ms();
    w->st.checkpoints++;
    uint64_t keep = redo_lsn;
    if (w->keep_lsn != 0)
        keep = RD_MIN(keep, w->keep_lsn);
    uint64_t keep_seg = keep / w->seg_size;
    if (keep_seg > 0) {
        prune_fds(w);
        if ((rc = seg_remove_range(w, 0, keep_seg - 1)) < 0)
            return rc;
    }
    return 0;
}

int wal_init_from_backup(const char *dir, uint64_t system_id, uint32_t timeline, uint64_t redo_lsn,
                         uint64_t checkpoint_lsn, uint64_t segment_size_bytes)
{
    if (strlen(dir) >= WAL_DIR_MAX)
        return -ENAMETOOLONG;
    if (!seg_size_ok(segment_size_bytes) || timeline == 0 || redo_lsn % segment_size_bytes < WAL_SEG_HDR_SIZE ||
        (checkpoint_lsn != 0 && checkpoint_lsn < redo_lsn)) {
        rd_error("init from backup: invalid segment size, timeline or redo/checkpoint LSN");
        return -EINVAL;
    }
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    snprintf(w->wal_dir, sizeof(w->wal_dir), "%s/wal", dir);
    w->seg_size = segment_size_bytes;
    w->timeline = timeline;
    w->system_id = system_id;
    struct wal_control old;
    int rc;
    if ((rc = mkdir_p(w->dir)) < 0 || (rc = mkdir_p(w->wal_dir)) < 0)
        goto out;
    if ((rc = wal_control_read(w->dir, &old)) != -ENOENT) {
        rd_error("init from backup: \"%s\" already holds a control file", dir);
        rc = -EEXIST;
        goto out;
    }
    /* A history file copied from the primary beforehand names the segments of
     * earlier timelines like the primary's. */
    if ((rc = wal_chain_load(w->wal_dir, timeline, &w->chain)) < 0)
        goto out;
    if ((rc = seg_prepare(w, redo_lsn / segment_size_bytes)) < 0)
        goto out;
    w->ctl = (struct wal_control){
        .system_id = system_id,
        .timeline = timeline,
        .state = WAL_STATE_IN_PRODUCTION,
        .checkpoint_lsn = checkpoint_lsn,
        .redo_lsn = redo_lsn,
        .segment_size_bytes = segment_size_bytes,
        .time_us = rd_wall_us(),
    };
    rc = wal_control_write(w->dir, &w->ctl);
out:
    wal_free(w);
    return rc < 0 ? rc : 0;
}
