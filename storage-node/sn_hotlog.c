/*
 * sn_hotlog.c — the storage node's hot log format (DIR/hotlog).
 *
 * File header (32 bytes):
 *   offset size meaning
 *    0      4   magic "RDHL" (0x4c484452 little-endian)
 *    4      4   version (1)
 *    8      4   node id that created it
 *   12      8   segment number (0 in the single file of older versions)
 *   20      4   zero
 *   24      8   XXH3-64 of bytes [0,24), seed SN_SEED_HOTLOG
 *
 * Record (24-byte header + payload), appended in arrival order:
 *    0      4   payload length (1 .. SN_HOTLOG_MAX_PAYLOAD)
 *    4      4   zero
 *    8      8   epoch of the frame that delivered the record
 *   16      8   XXH3-64 of header bytes [0,16) followed by the payload, seed SN_SEED_HOTLOG
 *   24      n   payload: the record in redo_rec_encode_abs form (absolute LSN)
 *
 * A record is valid iff its length is in range, the reserved word is zero,
 * the checksum matches and the payload decodes to exactly its length with a
 * nonzero LSN. Recovery keeps the longest valid prefix; see sn_hotlog_scan.
 */
#include <errno.h>
#include <string.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/err.h"
#include "common/util.h"
#include "storage-node/sn_int.h"

void sn_hotlog_file_hdr_seg(uint8_t *dst, uint32_t node_id, uint64_t seg)
{
    memset(dst, 0, SN_HOTLOG_FILE_HDR_SIZE);
    rd_put_u32le(dst, SN_HOTLOG_MAGIC);
    rd_put_u32le(dst + 4, SN_HOTLOG_VERSION);
    rd_put_u32le(dst + 8, node_id);
    rd_put_u64le(dst + 12, seg);
    rd_put_u64le(dst + 24, rd_checksum64(dst, 24, SN_SEED_HOTLOG));
}

void sn_hotlog_file_hdr(uint8_t *dst, uint32_t node_id) { sn_hotlog_file_hdr_seg(dst, node_id, 0); }

uint64_t sn_hotlog_hdr_seg(const uint8_t *src) { return rd_get_u64le(src + 12); }

int sn_hotlog_check_file_hdr(const uint8_t *src, size_t n, uint32_t *node_id)
{
    if (n < SN_HOTLOG_FILE_HDR_SIZE || rd_get_u32le(src) != SN_HOTLOG_MAGIC)
        return RD_ECORRUPT;
    if (rd_get_u64le(src + 24) != rd_checksum64(src, 24, SN_SEED_HOTLOG))
        return RD_ECORRUPT;
    if (rd_get_u32le(src + 4) != SN_HOTLOG_VERSION)
        return RD_EVERSION;
    *node_id = rd_get_u32le(src + 8);
    return 0;
}

int sn_hotlog_rec_append(struct rd_buf *out, uint64_t epoch, const struct redo_rec *r)
{
    int rc = rd_buf_reserve(out, SN_HOTLOG_MAX_REC);
    if (rc < 0)
        return rc;
    uint8_t *h = out->data + out->len;
    size_t n = redo_rec_encode_abs(h + SN_HOTLOG_REC_HDR_SIZE, SN_HOTLOG_MAX_PAYLOAD, r);
    if (n == 0 || n > SN_HOTLOG_MAX_PAYLOAD)
        return RD_ETOOBIG;
    rd_put_u32le(h, (uint32_t)n);
    rd_put_u32le(h + 4, 0);
    rd_put_u64le(h + 8, epoch);
    rd_put_u64le(h + 16, rd_checksum64_2(h, 16, h + SN_HOTLOG_REC_HDR_SIZE, n, SN_SEED_HOTLOG));
    out->len += SN_HOTLOG_REC_HDR_SIZE + n;
    return (int)(SN_HOTLOG_REC_HDR_SIZE + n);
}

int sn_hotlog_rec_decode(const uint8_t *src, size_t n, uint64_t *epoch, struct redo_rec *r, size_t *used)
{
    if (n < SN_HOTLOG_REC_HDR_SIZE)
        return 0;
    uint32_t len = rd_get_u32le(src);
    if (len == 0 || len > SN_HOTLOG_MAX_PAYLOAD || rd_get_u32le(src + 4) != 0)
        return RD_ECORRUPT;
    if (n - SN_HOTLOG_REC_HDR_SIZE < len)
        return 0;
    const uint8_t *pl = src + SN_HOTLOG_REC_HDR_SIZE;
    if (rd_get_u64le(src + 16) != rd_checksum64_2(src, 16, pl, len, SN_SEED_HOTLOG))
        return RD_ECORRUPT;
    size_t k = 0;
    if (redo_rec_decode_abs(pl, len, r, &k) < 0 || k != len || r->lsn == 0)
        return RD_ECORRUPT;
    *epoch = rd_get_u64le(src + 8);
    *used = SN_HOTLOG_REC_HDR_SIZE + len;
    return 1;
}

int sn_hotlog_scan(const uint8_t *file, size_t file_len, sn_scan_fn fn, void *arg, struct sn_scan_result *res)
{
    memset(res, 0, sizeof(*res));
    size_t off = SN_HOTLOG_FILE_HDR_SIZE;
    res->valid_end = off;
    while (off < file_len) {
        struct redo_rec r;
        uint64_t epoch = 0;
        size_t used = 0;
        int rc = sn_hotlog_rec_decode(file + off, file_len - off, &epoch, &r, &used);
        if (rc == 1) {
            int frc = fn ? fn(arg, off, (uint32_t)used, epoch, &r) : 0;
            if (frc < 0)
                return frc;
            off += used;
            res->valid_end = off;
            res->records++;
            continue;
        }
        /* A record cut short by the end of the file, or a bad record that is
         * the last thing in the file (or is followed only by zeros), is a
         * torn tail: a write interrupted by a crash, never acknowledged. A bad
         * record with other bytes behind it is corruption. Both end the log
         * there; the caller refetches what was lost from peers. */
        size_t rest = file_len - off;
        uint32_t len = rest >= 4 ? rd_get_u32le(file + off) : 0;
        if (rc == 0) {
            res->torn = 1;
        } else if (len >= 1 && len <= SN_HOTLOG_MAX_PAYLOAD) {
            if ((size_t)len + SN_HOTLOG_REC_HDR_SIZE >= rest)
                res->torn = 1;
            else
                res->corrupt = 1;
        } else {
            int zero = 1;
            for (size_t i = 0; i < rest && zero; i++)
                zero = file[off + i] == 0;
            if (zero || rest <= SN_HOTLOG_MAX_REC)
                res->torn = 1;
            else
                res->corrupt = 1;
        }
        break;
    }
    return 0;
}
