/*
 * fuzz_slots.c — libFuzzer target for the replication slots file decoder
 * (repl_slots_decode, replica/proto.h). The input is decoded as it is (the
 * checksum gate) and again with its trailing checksum recomputed (what lies
 * behind the gate: magic, version, count, names). A decoded file must
 * re-encode to the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/util.h"
#include "replica/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_one(const uint8_t *p, size_t n)
{
    struct repl_slot_rec v[REPL_SLOTS_MAX];
    size_t count = 0;
    if (repl_slots_decode(p, n, v, REPL_SLOTS_MAX, &count) != 0)
        return;
    rd_assert(count <= REPL_SLOTS_MAX);
    struct rd_buf out = {0};
    rd_assert(repl_slots_encode(&out, v, count) == 0);
    /* Names are NUL-padded by the encoder: equal bytes unless the input had
     * bytes after a name's NUL, which the decoder ignores. */
    rd_assert(out.len == n);
    struct repl_slot_rec w[REPL_SLOTS_MAX];
    size_t count2 = 0;
    rd_assert(repl_slots_decode(out.data, out.len, w, REPL_SLOTS_MAX, &count2) == 0 && count2 == count);
    for (size_t i = 0; i < count; i++)
        rd_assert(strcmp(v[i].name, w[i].name) == 0 && v[i].restart_lsn == w[i].restart_lsn);
    rd_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_one(data, size);
    if (size >= 8) {
        uint8_t *copy = malloc(size);
        if (copy == NULL)
            return 0;
        memcpy(copy, data, size);
        rd_put_u64le(copy + size - 8, rd_checksum64(copy, size - 8, RD_SEED_SLOTS));
        decode_one(copy, size);
        free(copy);
    }
    return 0;
}
