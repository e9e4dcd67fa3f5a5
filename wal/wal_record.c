/*
 * wal_record.c — the segment-file and record formats of the WAL: encoding and
 * decoding (with the validity rule), segment names, the placement rule of the
 * next record, and the pread/pwrite helpers every reader and writer uses.
 * Lowest layer of wal/: it calls nothing else in the module (see README.md,
 * "Source files").
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

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/util.h"
#include "wal/wal_int.h"

#define WAL_SEG_SEED (RD_SEED_WAL ^ 0x5345474844520000ull)

_Static_assert(WAL_RECORD_HDR_SIZE == 32, "record header is 32 bytes");
_Static_assert(WAL_SEG_HDR_SIZE == 64, "segment header is 64 bytes");
_Static_assert((int)WAL_REC_PAGE_DELTA == (int)ENGINE_REC_PAGE_DELTA, "type 1 is the engine's");
_Static_assert((int)WAL_REC_PAGE_IMAGE == (int)ENGINE_REC_PAGE_IMAGE, "type 2 is the engine's");
_Static_assert((int)WAL_REC_CELL_INSERT == (int)ENGINE_REC_CELL_INSERT, "type 3 is the engine's");
_Static_assert((int)WAL_REC_PAGE_SPLIT == (int)ENGINE_REC_PAGE_SPLIT, "type 4 is the engine's");
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

int wal_seg_size_ok(uint64_t s)
{
    return s >= WAL_SEG_SIZE_MIN && s <= WAL_SEG_SIZE_MAX && (s & (s - 1)) == 0;
}

/* ================================================================ record encode/decode */

const char *wal_rec_type_name(uint8_t type)
{
    switch (type) {
    case WAL_REC_PAGE_DELTA: return "PAGE_DELTA";
    case WAL_REC_PAGE_IMAGE: return "PAGE_IMAGE";
    case WAL_REC_CELL_INSERT: return "CELL_INSERT";
    case WAL_REC_PAGE_SPLIT: return "PAGE_SPLIT";
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
    case WAL_REC_PAGE_IMAGE:
    case WAL_REC_CELL_INSERT:
    case WAL_REC_PAGE_SPLIT: return page_id != ENGINE_PAGE_NONE && body_len > 0;
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
    if (!wal_seg_size_ok(h->segment_size_bytes)) {
        *why = "implausible segment size in the segment header";
        return RD_ECORRUPT;
    }
    *why = NULL;
    return 0;
}

/* The LSN where the next record goes when the log ends at lsn: past a segment
 * header, or past a segment tail shorter than a record header (the reader
 * moves on to the next segment implicitly there). */
uint64_t wal_next_record_lsn(uint64_t lsn, uint64_t seg_size)
{
    uint64_t off = lsn % seg_size;
    if (off < WAL_SEG_HDR_SIZE)
        return lsn - off + WAL_SEG_HDR_SIZE;
    if (seg_size - off < WAL_RECORD_HDR_SIZE)
        return lsn - off + seg_size + WAL_SEG_HDR_SIZE;
    return lsn;
}

void wal_fmt_lsn(char *dst, size_t len, uint64_t lsn)
{
    snprintf(dst, len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}
