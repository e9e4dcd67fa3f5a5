/*
 * fuzz_redo.c — libFuzzer target for the redo decoders: the input parsed as a
 * batch payload (redo_batch_parse_hdr, then redo_batch_next over every
 * record), and as one absolute record (redo_rec_decode_abs). Nothing may
 * crash or read out of bounds. Varints are canonical, so whatever decodes must
 * re-encode to exactly the same bytes: a batch through redo_batch_add /
 * redo_batch_finish, a record through redo_rec_encode_abs.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "redo/redo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_batch(const uint8_t *data, size_t size)
{
    struct redo_batch_hdr h;
    if (redo_batch_parse_hdr(data, size, &h) != 0)
        return;
    rd_assert(h.last_lsn - h.first_lsn + 1 == h.nrecords);
    struct redo_batch b = {0};
    redo_batch_begin_format(&b, h.first_lsn, h.format); /* re-encode in the form decoded */
    size_t off = REDO_BATCH_HDR_SIZE;
    uint64_t prev = 0, count = 0;
    struct redo_rec r;
    int rc;
    while ((rc = redo_batch_next(data, size, &off, &prev, &r)) == 1) {
        rd_assert(off <= size);
        rd_assert(r.lsn == h.first_lsn + count);
        rd_assert(r.body_len == 0 || (r.body >= data && r.body + r.body_len <= data + off));
        rd_assert(redo_batch_add(&b, &r) == 0); /* what decodes is a valid record */
        count++;
    }
    if (rc == 0) {
        rd_assert(count == h.nrecords && off == size);
        redo_batch_finish(&b, h.vdl);
        rd_assert(b.buf.len == size && memcmp(b.buf.data, data, size) == 0);
    } else {
        rd_assert(rc == RD_ECORRUPT);
    }
    redo_batch_free(&b);
}

static void fuzz_abs(const uint8_t *data, size_t size)
{
    struct redo_rec r;
    size_t used = 0;
    int rc = redo_rec_decode_abs(data, size, &r, &used);
    if (rc != 0) {
        rd_assert(rc == RD_ECORRUPT);
        return;
    }
    rd_assert(used > 0 && used <= size);
    rd_assert(r.body_len == 0 || (r.body >= data && r.body + r.body_len <= data + used));
    uint8_t *out = malloc(used);
    rd_assert(out != NULL);
    rd_assert(redo_rec_encode_abs(out, used, &r) == used);
    rd_assert(memcmp(out, data, used) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_batch(data, size);
    fuzz_abs(data, size);
    return 0;
}
