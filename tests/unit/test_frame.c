/* Unit tests for common/frame.c: round trips, incremental decoding, and
 * rejection of every kind of bad frame. Randomized data uses a fixed seed,
 * overridable with SEED=. */
#include <criterion/criterion.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"

static uint64_t rng_state;

static void rng_seed(void)
{
    const char *s = getenv("SEED");
    rng_state = s ? strtoull(s, NULL, 0) : 0x5EED1234ull;
    fprintf(stderr, "test_frame: SEED=%llu\n", (unsigned long long)rng_state);
}

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next();
}

/* Text-like, compressible: a few words repeated. */
static void fill_compressible(uint8_t *p, size_t n)
{
    static const char words[] = "redoubt wal frame lsn page replica primary ";
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)words[i % (sizeof(words) - 1)];
}

struct decoded {
    int rc;
    struct frame_hdr h;
    const uint8_t *payload;
    size_t payload_len;
    const char *why;
};

static struct decoded decode(const uint8_t *buf, size_t len, struct rd_buf *scratch)
{
    struct decoded d;
    memset(&d, 0, sizeof(d));
    d.rc = frame_decode(buf, len, &d.h, scratch, &d.payload, &d.payload_len, &d.why);
    return d;
}

/* Rewrites the checksum of the frame at f so a deliberately wrong field is
 * seen by its own check, not by the checksum. */
static void reseal(uint8_t *f)
{
    uint32_t wire_len = rd_get_u32le(f + 8);
    rd_put_u64le(f + 24, rd_checksum64_2(f, 24, f + 32, wire_len, RD_SEED_FRAME));
}

Test(frame, uncompressed_round_trip_keeps_type_epoch_and_payload)
{
    struct rd_buf out = {0}, scratch = {0};
    uint8_t payload[300];
    rng_seed();
    fill_random(payload, sizeof(payload));
    cr_assert_eq(frame_append(&out, 7, 0x1122334455667788ull, payload, sizeof(payload), 0), 0);
    cr_assert_eq(out.len, FRAME_HDR_SIZE + sizeof(payload));
    cr_assert_eq(rd_get_u32le(out.data), FRAME_MAGIC);
    cr_assert(memcmp(out.data, "RDF1", 4) == 0);

    struct decoded d = decode(out.data, out.len, &scratch);
    cr_assert_eq(d.rc, (int)out.len);
    cr_assert_eq(d.h.type, 7);
    cr_assert_eq(d.h.flags, 0);
    cr_assert_eq(d.h.epoch, 0x1122334455667788ull);
    cr_assert_eq(d.h.wire_len, sizeof(payload));
    cr_assert_eq(d.h.raw_len, sizeof(payload));
    cr_assert_eq(d.payload, out.data + FRAME_HDR_SIZE, "uncompressed payload points into buf");
    cr_assert_eq(d.payload_len, sizeof(payload));
    cr_assert(memcmp(d.payload, payload, sizeof(payload)) == 0);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, compressed_round_trip_decodes_into_scratch)
{
    struct rd_buf out = {0}, scratch = {0};
    size_t n = 64 * 1024;
    uint8_t *payload = malloc(n);
    fill_compressible(payload, n);
    cr_assert_eq(frame_append(&out, 2, 9, payload, n, 1), 0);
    cr_assert_lt(out.len, FRAME_HDR_SIZE + n / 2, "repetitive text compresses well");

    struct decoded d = decode(out.data, out.len, &scratch);
    cr_assert_eq(d.rc, (int)out.len);
    cr_assert_eq(d.h.flags, FRAME_FLAG_LZ4);
    cr_assert_eq(d.h.raw_len, n);
    cr_assert_eq(d.h.wire_len, out.len - FRAME_HDR_SIZE);
    cr_assert_eq(d.payload, scratch.data);
    cr_assert_eq(d.payload_len, n);
    cr_assert(memcmp(d.payload, payload, n) == 0);
    free(payload);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, empty_payload_round_trips_with_and_without_compression)
{
    struct rd_buf out = {0}, scratch = {0};
    for (int c = 0; c <= 1; c++) {
        rd_buf_reset(&out);
        cr_assert_eq(frame_append(&out, 3, 1, NULL, 0, c), 0);
        cr_assert_eq(out.len, FRAME_HDR_SIZE);
        struct decoded d = decode(out.data, out.len, &scratch);
        cr_assert_eq(d.rc, (int)FRAME_HDR_SIZE);
        cr_assert_eq(d.h.flags, 0);
        cr_assert_eq(d.payload_len, 0);
    }
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, incompressible_data_stays_uncompressed)
{
    struct rd_buf out = {0}, scratch = {0};
    uint8_t payload[4096];
    rng_seed();
    fill_random(payload, sizeof(payload));
    cr_assert_eq(frame_append(&out, 2, 1, payload, sizeof(payload), 1), 0);
    cr_assert_eq(rd_get_u16le(out.data + 6), 0, "no lz4 flag");
    cr_assert_eq(out.len, FRAME_HDR_SIZE + sizeof(payload));
    struct decoded d = decode(out.data, out.len, &scratch);
    cr_assert_eq(d.rc, (int)out.len);
    cr_assert(memcmp(d.payload, payload, sizeof(payload)) == 0);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, frames_appended_back_to_back_decode_one_after_another)
{
    struct rd_buf out = {0}, scratch = {0};
    uint8_t big[10000];
    fill_compressible(big, sizeof(big));
    cr_assert_eq(frame_append(&out, 1, 5, "abc", 3, 0), 0);
    cr_assert_eq(frame_append(&out, 2, 5, big, sizeof(big), 1), 0);
    cr_assert_eq(frame_append(&out, 3, 6, "xyz!", 4, 1), 0);
    size_t off = 0;
    uint8_t want_type[] = {1, 2, 3};
    size_t want_len[] = {3, sizeof(big), 4};
    for (int i = 0; i < 3; i++) {
        struct decoded d = decode(out.data + off, out.len - off, &scratch);
        cr_assert_gt(d.rc, 0);
        cr_assert_eq(d.h.type, want_type[i]);
        cr_assert_eq(d.payload_len, want_len[i]);
        off += (size_t)d.rc;
    }
    cr_assert_eq(off, out.len);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, every_prefix_shorter_than_the_frame_is_incomplete)
{
    struct rd_buf out = {0}, scratch = {0};
    uint8_t payload[2000];
    fill_compressible(payload, sizeof(payload));
    for (int c = 0; c <= 1; c++) {
        rd_buf_reset(&out);
        cr_assert_eq(frame_append(&out, 2, 77, payload, sizeof(payload), c), 0);
        for (size_t len = 0; len < out.len; len++) {
            /* A copy of exactly len bytes so ASan sees any read past it. */
            uint8_t *copy = malloc(len ? len : 1);
            memcpy(copy, out.data, len);
            struct decoded d = decode(copy, len, &scratch);
            cr_assert_eq(d.rc, 0, "prefix of %zu of %zu bytes (compress=%d)", len, out.len, c);
            free(copy);
        }
        cr_assert_eq(decode(out.data, out.len, &scratch).rc, (int)out.len);
    }
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, bad_magic_is_rejected_as_soon_as_four_bytes_arrive)
{
    struct rd_buf scratch = {0};
    const uint8_t http[] = "GET / HTTP/1.1\r\n";
    struct decoded d = decode(http, 4, &scratch);
    cr_assert_eq(d.rc, RD_ECORRUPT);
    cr_assert_not_null(d.why);
    cr_assert_eq(decode(http, 3, &scratch).rc, 0);
    rd_buf_free(&scratch);
}

Test(frame, bad_version_flags_and_lengths_are_rejected_even_with_a_good_checksum)
{
    struct rd_buf out = {0}, scratch = {0};
    cr_assert_eq(frame_append(&out, 1, 1, "hello", 5, 0), 0);
    uint8_t f[FRAME_HDR_SIZE + 5];
    cr_assert_eq(out.len, sizeof(f));

    struct {
        const char *what;
        size_t off;
        unsigned width;
        uint32_t value;
    } cases[] = {
        {"version 2", 4, 1, 2},
        {"version 0", 4, 1, 0},
        {"unknown flag bit 1", 6, 2, 0x0002},
        {"unknown flag bit 15", 6, 2, 0x8000},
        {"raw length != wire length when uncompressed", 12, 4, 6},
        {"wire length over the limit", 8, 4, FRAME_MAX_PAYLOAD + 1},
        {"raw length over the limit", 12, 4, FRAME_MAX_PAYLOAD + 1},
    };
    for (size_t i = 0; i < RD_ARRAY_LEN(cases); i++) {
        memcpy(f, out.data, sizeof(f));
        if (cases[i].width == 1)
            f[cases[i].off] = (uint8_t)cases[i].value;
        else if (cases[i].width == 2)
            rd_put_u16le(f + cases[i].off, (uint16_t)cases[i].value);
        else
            rd_put_u32le(f + cases[i].off, cases[i].value);
        if (rd_get_u32le(f + 8) <= 5)
            reseal(f);
        struct decoded d = decode(f, sizeof(f), &scratch);
        cr_assert_eq(d.rc, RD_ECORRUPT, "%s", cases[i].what);
        cr_assert_not_null(d.why, "%s", cases[i].what);
    }
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

/* Flips every bit of every byte of the frame, one at a time. The decoder must
 * reject each (a header field check or the checksum), except that a larger
 * wire length may instead read as "incomplete" when the header is still
 * self-consistent (compressed frames: wire != raw is allowed). */
static void flip_every_bit(const uint8_t *frame, size_t len, int compressed)
{
    struct rd_buf scratch = {0};
    uint8_t *f = malloc(len);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(f, frame, len);
            f[i] ^= (uint8_t)(1u << bit);
            struct decoded d = decode(f, len, &scratch);
            if (compressed && i >= 8 && i < 12 && d.rc == 0)
                continue;
            cr_assert_eq(d.rc, RD_ECORRUPT, "byte %zu bit %d of %zu accepted (rc %d)", i, bit, len,
                         d.rc);
            cr_assert_not_null(d.why);
            if (i >= FRAME_HDR_SIZE)
                cr_assert_str_eq(d.why, "frame checksum mismatch", "payload byte %zu", i);
        }
    }
    free(f);
    rd_buf_free(&scratch);
}

Test(frame, flipping_any_bit_of_an_uncompressed_frame_is_rejected)
{
    struct rd_buf out = {0};
    uint8_t payload[100];
    rng_seed();
    fill_random(payload, sizeof(payload));
    cr_assert_eq(frame_append(&out, 4, 42, payload, sizeof(payload), 0), 0);
    flip_every_bit(out.data, out.len, 0);
    rd_buf_free(&out);
}

Test(frame, flipping_any_bit_of_a_compressed_frame_is_rejected)
{
    struct rd_buf out = {0};
    uint8_t payload[1000];
    fill_compressible(payload, sizeof(payload));
    cr_assert_eq(frame_append(&out, 2, 42, payload, sizeof(payload), 1), 0);
    cr_assert_eq(rd_get_u16le(out.data + 6), FRAME_FLAG_LZ4);
    flip_every_bit(out.data, out.len, 1);
    rd_buf_free(&out);
}

/* Builds a correctly checksummed compressed frame by hand with a chosen raw length. */
static size_t forge_lz4_frame(uint8_t *f, size_t cap, const uint8_t *raw, size_t raw_len,
                              uint32_t claimed_raw_len)
{
    int c = LZ4_compress_default((const char *)raw, (char *)f + FRAME_HDR_SIZE, (int)raw_len,
                                 (int)(cap - FRAME_HDR_SIZE));
    cr_assert_gt(c, 0);
    memset(f, 0, FRAME_HDR_SIZE);
    rd_put_u32le(f, FRAME_MAGIC);
    f[4] = FRAME_VERSION;
    f[5] = 2;
    rd_put_u16le(f + 6, FRAME_FLAG_LZ4);
    rd_put_u32le(f + 8, (uint32_t)c);
    rd_put_u32le(f + 12, claimed_raw_len);
    reseal(f);
    return FRAME_HDR_SIZE + (size_t)c;
}

Test(frame, lz4_payload_that_decodes_to_the_wrong_length_is_rejected)
{
    struct rd_buf scratch = {0};
    uint8_t raw[4096], f[FRAME_HDR_SIZE + 8192];
    fill_compressible(raw, sizeof(raw));

    size_t n = forge_lz4_frame(f, sizeof(f), raw, sizeof(raw), sizeof(raw));
    struct decoded d = decode(f, n, &scratch);
    cr_assert_eq(d.rc, (int)n, "the forged frame is valid with the true length");
    cr_assert(memcmp(d.payload, raw, sizeof(raw)) == 0);

    uint32_t wrong[] = {sizeof(raw) - 1, sizeof(raw) + 1, 1, 0, FRAME_MAX_PAYLOAD};
    for (size_t i = 0; i < RD_ARRAY_LEN(wrong); i++) {
        n = forge_lz4_frame(f, sizeof(f), raw, sizeof(raw), wrong[i]);
        d = decode(f, n, &scratch);
        cr_assert_eq(d.rc, RD_ECORRUPT, "claimed raw length %u", wrong[i]);
        cr_assert_str_eq(d.why, "frame lz4 payload does not decompress to its raw length");
    }
    rd_buf_free(&scratch);
}

Test(frame, garbage_lz4_payload_with_a_good_checksum_is_rejected)
{
    struct rd_buf scratch = {0};
    uint8_t f[FRAME_HDR_SIZE + 64];
    rng_seed();
    for (int iter = 0; iter < 200; iter++) {
        memset(f, 0, FRAME_HDR_SIZE);
        rd_put_u32le(f, FRAME_MAGIC);
        f[4] = FRAME_VERSION;
        rd_put_u16le(f + 6, FRAME_FLAG_LZ4);
        rd_put_u32le(f + 8, 64);
        rd_put_u32le(f + 12, 1000);
        fill_random(f + FRAME_HDR_SIZE, 64);
        reseal(f);
        int rc = decode(f, sizeof(f), &scratch).rc;
        cr_assert(rc == RD_ECORRUPT || rc == (int)sizeof(f));
    }
    rd_buf_free(&scratch);
}

Test(frame, payload_over_the_limit_is_refused_by_the_encoder_and_decoder)
{
    struct rd_buf out = {0}, scratch = {0};
    size_t n = FRAME_MAX_PAYLOAD + 1;
    uint8_t *payload = calloc(1, n);
    cr_assert_eq(frame_append(&out, 2, 1, payload, n, 0), RD_ETOOBIG);
    cr_assert_eq(frame_append(&out, 2, 1, payload, n, 1), RD_ETOOBIG);
    cr_assert_eq(out.len, 0, "nothing appended on error");

    /* Exactly the limit is fine. */
    cr_assert_eq(frame_append(&out, 2, 1, payload, FRAME_MAX_PAYLOAD, 0), 0);
    cr_assert_eq(decode(out.data, out.len, &scratch).rc, (int)(FRAME_HDR_SIZE + FRAME_MAX_PAYLOAD));

    /* A header claiming one more byte is refused before the payload arrives. */
    rd_put_u32le(out.data + 8, FRAME_MAX_PAYLOAD + 1);
    rd_put_u32le(out.data + 12, FRAME_MAX_PAYLOAD + 1);
    struct decoded d = decode(out.data, FRAME_HDR_SIZE, &scratch);
    cr_assert_eq(d.rc, RD_ECORRUPT);
    cr_assert_str_eq(d.why, "frame payload length exceeds the 8 MiB limit");
    free(payload);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, encoder_appends_after_existing_bytes)
{
    struct rd_buf out = {0}, scratch = {0};
    cr_assert_eq(rd_buf_append(&out, "prefix", 6), 0);
    cr_assert_eq(frame_append(&out, 1, 2, "body", 4, 0), 0);
    cr_assert(memcmp(out.data, "prefix", 6) == 0);
    struct decoded d = decode(out.data + 6, out.len - 6, &scratch);
    cr_assert_eq(d.rc, (int)(out.len - 6));
    cr_assert(memcmp(d.payload, "body", 4) == 0);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(frame, random_frames_round_trip)
{
    struct rd_buf out = {0}, scratch = {0};
    uint8_t *payload = malloc(70000);
    rng_seed();
    for (int iter = 0; iter < 300; iter++) {
        size_t n = rng_next() % 70000;
        if (rng_next() & 1)
            fill_random(payload, n);
        else
            fill_compressible(payload, n);
        uint8_t type = (uint8_t)rng_next();
        uint64_t epoch = rng_next();
        rd_buf_reset(&out);
        cr_assert_eq(frame_append(&out, type, epoch, payload, n, (int)(rng_next() & 1)), 0);
        struct decoded d = decode(out.data, out.len, &scratch);
        cr_assert_eq(d.rc, (int)out.len, "iter %d", iter);
        cr_assert_eq(d.h.type, type);
        cr_assert_eq(d.h.epoch, epoch);
        cr_assert_eq(d.payload_len, n);
        cr_assert(n == 0 || memcmp(d.payload, payload, n) == 0, "iter %d", iter);
    }
    free(payload);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}
