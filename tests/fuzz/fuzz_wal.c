/*
 * fuzz_wal.c — libFuzzer target for the WAL decoders: wal_record_decode at
 * every 8-byte offset (as the reader's forward scan does) and the segment
 * header check. Neither may crash, read out of bounds, or accept a record
 * that does not fit in the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/util.h"
#include "wal/wal.h"
#include "wal/wal_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wal_record rec;
    for (size_t off = 0; off < size; off += WAL_RECORD_ALIGN) {
        int n = wal_record_decode(data + off, size - off, &rec);
        if (n > 0) {
            rd_assert((size_t)n <= size - off);
            rd_assert(n % (int)WAL_RECORD_ALIGN == 0);
            rd_assert(rec.body == data + off + WAL_RECORD_HDR_SIZE);
            rd_assert(WAL_RECORD_HDR_SIZE + (size_t)rec.body_len <= (size_t)n);
            /* Re-encoding a valid record gives the same header and body. */
            uint8_t buf[WAL_RECORD_HDR_SIZE + WAL_BODY_MAX + WAL_RECORD_ALIGN];
            size_t m = wal_record_encode(buf, sizeof(buf), rec.prev_lsn, rec.type, rec.flags,
                                         rec.page_id, rec.body, rec.body_len);
            rd_assert(memcmp(buf, data + off, WAL_RECORD_HDR_SIZE + rec.body_len) == 0);
            rd_assert(m == (size_t)n);
        }
    }
    struct wal_seg_header h;
    (void)wal_seg_header_decode(data, size, &h, NULL);
    return 0;
}
