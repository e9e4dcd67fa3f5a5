/*
 * fuzz_term.c — libFuzzer target for the term file decoder (repl_term_decode,
 * replica/proto.h). The input is decoded as it is, and again with its
 * checksum recomputed so the fields behind the gate are reached. A decoded
 * file must re-encode to the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/checksum.h"
#include "common/util.h"
#include "replica/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_one(const uint8_t *p, size_t n)
{
    uint64_t term = 0;
    if (repl_term_decode(p, n, &term) != 0)
        return;
    rd_assert(term <= REPL_TERM_MAX && n == REPL_TERM_FILE_BYTES);
    uint8_t out[REPL_TERM_FILE_BYTES];
    repl_term_encode(out, term);
    rd_assert(memcmp(out, p, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_one(data, size);
    if (size == REPL_TERM_FILE_BYTES) {
        uint8_t copy[REPL_TERM_FILE_BYTES];
        memcpy(copy, data, size);
        rd_put_u64le(copy + 24, rd_checksum64(copy, 24, RD_SEED_SLOTS ^ 0x7465726dull));
        decode_one(copy, size);
    }
    return 0;
}
