/*
 * fuzz_pending.c — libFuzzer target for the replica's pending-entry codec
 * (repl_pending_read / repl_pending_append, replica/proto.h). The input is
 * read as a sequence of entries; reading never goes past the input, and the
 * entries read re-encode to exactly the bytes they came from.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/util.h"
#include "replica/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd_buf out = {0};
    size_t off = 0;
    while (off < size) {
        struct repl_pending e;
        int used = repl_pending_read(data + off, size - off, &e);
        if (used < 0) {
            rd_assert(used == RD_ECORRUPT);
            break;
        }
        rd_assert((size_t)used == REPL_PENDING_HDR_BYTES + e.body_len && (size_t)used <= size - off);
        rd_assert(e.body == data + off + REPL_PENDING_HDR_BYTES);
        rd_assert(repl_pending_append(&out, &e) == 0);
        off += (size_t)used;
    }
    rd_assert(out.len == off && (off == 0 || memcmp(out.data, data, off) == 0));
    rd_buf_free(&out);
    return 0;
}
