/*
 * fuzz_feed.c — libFuzzer target for the aurora reader feed's decoders
 * (aurora/aur_feed.c: aur_feed_check for FEED, aur_feed_redo_check for
 * FEED_REDO). The first 8 input bytes are the reader's read point, the rest
 * the frame payload. Nothing may crash or read out of bounds; a payload the
 * checker accepts must walk record by record to exactly its end, with LSNs
 * ascending and at most the frame's vdl (what reader_on_feed_redo relies on).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/util.h"
#include "aurora/aur_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t read_lsn = rd_get_u64le(data);
    const uint8_t *p = data + 8;
    size_t n = size - 8;
    if (aur_feed_check(p, n) == 0)
        rd_assert(20 + 4 * (size_t)rd_get_u32le(p + 16) == n);
    if (aur_feed_redo_check(p, n, read_lsn) == NULL) {
        uint64_t vdl = rd_get_u64le(p), prev = 0;
        uint32_t cnt = rd_get_u32le(p + 16);
        rd_assert(vdl >= read_lsn);
        size_t off = 20;
        for (uint32_t i = 0; i < cnt; i++) {
            rd_assert(off + 17 <= n);
            uint64_t lsn = rd_get_u64le(p + off);
            rd_assert(lsn > prev && lsn <= vdl);
            prev = lsn;
            off += 17 + rd_get_u32le(p + off + 13);
            rd_assert(off <= n);
        }
        rd_assert(off == n);
    }
    return 0;
}
