/*
 * frame.c — encode and decode the inter-node frame (layout and validity rule
 * in common/frame.h).
 *
 * Decoding order, cheapest and most telling first: magic, version, flags,
 * lengths (all from the fixed header, so a stream that is not ours is refused
 * after 32 bytes, before waiting for a payload), then completeness, then the
 * checksum over header and wire payload, and only then lz4 — unverified bytes
 * never reach the decompressor.
 */
#include "common/frame.h"

#include <errno.h>
#include <limits.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/util.h"

/* Header field offsets (frame.h table). */
#define FRAME_OFF_MAGIC 0u
#define FRAME_OFF_VERSION 4u
#define FRAME_OFF_TYPE 5u
#define FRAME_OFF_FLAGS 6u
#define FRAME_OFF_WIRE_LEN 8u
#define FRAME_OFF_RAW_LEN 12u
#define FRAME_OFF_EPOCH 16u
#define FRAME_OFF_CKSUM 24u

_Static_assert(FRAME_OFF_CKSUM + 8u == FRAME_HDR_SIZE, "checksum is the last header field");
_Static_assert(FRAME_HDR_SIZE + FRAME_MAX_PAYLOAD <= (size_t)INT_MAX,
               "frame_decode returns the frame size as an int");
_Static_assert(FRAME_MAX_PAYLOAD <= (size_t)LZ4_MAX_INPUT_SIZE, "lz4 takes int lengths");

static uint64_t frame_checksum(const uint8_t *hdr, const uint8_t *wire, size_t wire_len)
{
    return rd_checksum64_2(hdr, FRAME_OFF_CKSUM, wire, wire_len, RD_SEED_FRAME);
}

static void frame_put_hdr(uint8_t *p, uint8_t type, uint16_t flags, uint32_t wire_len,
                          uint32_t raw_len, uint64_t epoch)
{
    rd_put_u32le(p + FRAME_OFF_MAGIC, FRAME_MAGIC);
    p[FRAME_OFF_VERSION] = (uint8_t)FRAME_VERSION;
    p[FRAME_OFF_TYPE] = type;
    rd_put_u16le(p + FRAME_OFF_FLAGS, flags);
    rd_put_u32le(p + FRAME_OFF_WIRE_LEN, wire_len);
    rd_put_u32le(p + FRAME_OFF_RAW_LEN, raw_len);
    rd_put_u64le(p + FRAME_OFF_EPOCH, epoch);
    rd_put_u64le(p + FRAME_OFF_CKSUM, 0);
}

size_t frame_compress_min_bytes(void)
{
    static size_t min_bytes;
    if (min_bytes == 0) {
        const char *e = getenv("REDOUBT_LZ4_MIN_BYTES");
        char *end = NULL;
        unsigned long v = e != NULL ? strtoul(e, &end, 10) : 0;
        min_bytes = e != NULL && end != e && *end == 0 && v > 0 ? (size_t)v : FRAME_COMPRESS_MIN_BYTES;
    }
    return min_bytes;
}

/* Compresses src into dst (capacity dst_cap); returns the compressed size if
 * it saves at least 1/8 of len, else 0 (send raw: not worth the receiver's CPU). */
static size_t frame_try_lz4(const uint8_t *src, size_t len, uint8_t *dst, size_t dst_cap)
{
    if (len == 0)
        return 0;
    int c = LZ4_compress_default((const char *)src, (char *)dst, (int)len, (int)dst_cap);
    if (c <= 0)
        return 0;
    if ((uint64_t)c * 8u > (uint64_t)len * 7u)
        return 0;
    return (size_t)c;
}

int frame_append(struct rd_buf *out, uint8_t type, uint64_t epoch, const void *payload, size_t len,
                 int compress)
{
    rd_assert(out != NULL);
    rd_assert(payload != NULL || len == 0);
    if (len > FRAME_MAX_PAYLOAD)
        return RD_ETOOBIG;

    size_t room = compress ? RD_MAX(len, (size_t)LZ4_compressBound((int)len)) : len;
    int rc = rd_buf_reserve(out, FRAME_HDR_SIZE + room);
    if (rc < 0)
        return rc;

    uint8_t *hdr = out->data + out->len;
    uint8_t *wire = hdr + FRAME_HDR_SIZE;
    uint16_t flags = 0;
    size_t wire_len = compress ? frame_try_lz4(payload, len, wire, room) : 0;
    if (wire_len > 0) {
        flags |= FRAME_FLAG_LZ4;
    } else {
        if (len > 0)
            memcpy(wire, payload, len);
        wire_len = len;
    }
    rd_assert(wire_len <= len);

    frame_put_hdr(hdr, type, flags, (uint32_t)wire_len, (uint32_t)len, epoch);
    rd_put_u64le(hdr + FRAME_OFF_CKSUM, frame_checksum(hdr, wire, wire_len));
    out->len += FRAME_HDR_SIZE + wire_len;
    return 0;
}

/* Checks the fixed header fields that need no payload. 0 or RD_ECORRUPT with *why. */
static int frame_check_hdr(const uint8_t *p, struct frame_hdr *h, const char **why)
{
    if (rd_get_u32le(p + FRAME_OFF_MAGIC) != FRAME_MAGIC) {
        *why = "frame has a bad magic number (the peer does not speak the Redoubt frame protocol)";
        return RD_ECORRUPT;
    }
    if (p[FRAME_OFF_VERSION] != FRAME_VERSION) {
        *why = "frame has an unknown version";
        return RD_ECORRUPT;
    }
    h->type = p[FRAME_OFF_TYPE];
    h->flags = rd_get_u16le(p + FRAME_OFF_FLAGS);
    h->wire_len = rd_get_u32le(p + FRAME_OFF_WIRE_LEN);
    h->raw_len = rd_get_u32le(p + FRAME_OFF_RAW_LEN);
    h->epoch = rd_get_u64le(p + FRAME_OFF_EPOCH);
    if ((h->flags & ~FRAME_FLAG_LZ4) != 0) {
        *why = "frame has unknown flag bits set";
        return RD_ECORRUPT;
    }
    if (h->wire_len > FRAME_MAX_PAYLOAD || h->raw_len > FRAME_MAX_PAYLOAD) {
        *why = "frame payload length exceeds the 8 MiB limit";
        return RD_ECORRUPT;
    }
    if (!(h->flags & FRAME_FLAG_LZ4) && h->raw_len != h->wire_len) {
        *why = "uncompressed frame has raw length different from wire length";
        return RD_ECORRUPT;
    }
    return 0;
}

int frame_decode(const uint8_t *buf, size_t len, struct frame_hdr *h, struct rd_buf *scratch,
                 const uint8_t **payload, size_t *payload_len, const char **why)
{
    rd_assert(buf != NULL || len == 0);
    rd_assert(h != NULL && scratch != NULL && payload != NULL && payload_len != NULL);
    const char *why_local;
    if (why == NULL)
        why = &why_local;
    *why = NULL;

    /* A wrong magic is refused as soon as it is visible. */
    if (len >= 4 && rd_get_u32le(buf + FRAME_OFF_MAGIC) != FRAME_MAGIC) {
        *why = "frame has a bad magic number (the peer does not speak the Redoubt frame protocol)";
        return RD_ECORRUPT;
    }
    if (len < FRAME_HDR_SIZE)
        return 0;
    int rc = frame_check_hdr(buf, h, why);
    if (rc < 0)
        return rc;
    size_t total = FRAME_HDR_SIZE + (size_t)h->wire_len;
    if (len < total)
        return 0;

    const uint8_t *wire = buf + FRAME_HDR_SIZE;
    if (frame_checksum(buf, wire, h->wire_len) != rd_get_u64le(buf + FRAME_OFF_CKSUM)) {
        *why = "frame checksum mismatch";
        return RD_ECORRUPT;
    }

    if (!(h->flags & FRAME_FLAG_LZ4)) {
        *payload = wire;
        *payload_len = h->wire_len;
        return (int)total;
    }

    /* At least 1 byte so lz4 never gets a NULL destination. */
    rd_buf_reset(scratch);
    rc = rd_buf_reserve(scratch, RD_MAX((size_t)h->raw_len, 1u));
    if (rc < 0)
        return rc;
    int n = LZ4_decompress_safe((const char *)wire, (char *)scratch->data, (int)h->wire_len,
                                (int)h->raw_len);
    if (n < 0 || (uint32_t)n != h->raw_len) {
        *why = "frame lz4 payload does not decompress to its raw length";
        return RD_ECORRUPT;
    }
    scratch->len = h->raw_len;
    *payload = scratch->data;
    *payload_len = h->raw_len;
    return (int)total;
}
