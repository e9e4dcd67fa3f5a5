/*
 * frame.h — the one framing of all inter-node traffic (classic replication
 * now, aurora redo shipping later): a fixed 32-byte header and a payload,
 * optionally lz4-compressed, checksummed with XXH3 (RD_SEED_FRAME).
 *
 *  offset size  field
 *   0      4    magic "RDF1" (0x31464452 little-endian)
 *   4      1    version (1)
 *   5      1    type (the protocol's message type)
 *   6      2    flags: bit 0 = payload is an lz4 block
 *   8      4    payload length on the wire (≤ FRAME_MAX_PAYLOAD)
 *  12      4    raw length: uncompressed payload length (= wire length if not compressed)
 *  16      8    epoch: the sender's timeline (classic) or volume epoch (aurora)
 *  24      8    checksum: XXH3-64 of header bytes [0,24) followed by the wire payload
 *
 * A frame is valid iff magic, version, flags (no unknown bits), lengths
 * (≤ limits; raw = wire when uncompressed) and checksum all check, and an
 * lz4 payload decompresses to exactly raw length.
 */
#ifndef RD_FRAME_H
#define RD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define FRAME_MAGIC 0x31464452u /* "RDF1" */
#define FRAME_VERSION 1u
#define FRAME_HDR_SIZE 32u
#define FRAME_MAX_PAYLOAD (8u * 1024u * 1024u)
#define FRAME_FLAG_LZ4 0x0001u

struct frame_hdr {
    uint8_t type;
    uint16_t flags;
    uint32_t wire_len;
    uint32_t raw_len;
    uint64_t epoch;
};

/* Appends one frame to out. compress: try lz4 and keep it only if it saves
 * at least 1/8 of the bytes. RD_ETOOBIG if len > FRAME_MAX_PAYLOAD, -ENOMEM. */
/* The smallest log payload worth lz4 (the classic WAL stream and the aurora redo batch use the
 * same threshold, so their bytes on the wire compare fairly): 256 bytes, or
 * REDOUBT_LZ4_MIN_BYTES from the environment (A/B runs; read once). */
#define FRAME_COMPRESS_MIN_BYTES 256u
size_t frame_compress_min_bytes(void);
int frame_append(struct rd_buf *out, uint8_t type, uint64_t epoch, const void *payload, size_t len,
                 int compress);

/* Decodes the frame at buf[0..len): returns the bytes it occupies (> 0), 0 if
 * incomplete, or RD_ECORRUPT (with *why a static sentence) for an invalid
 * frame. On success *payload and *payload_len are the raw payload: pointing into
 * buf, or into scratch when it was compressed (valid until scratch changes). */
int frame_decode(const uint8_t *buf, size_t len, struct frame_hdr *h, struct rd_buf *scratch,
                 const uint8_t **payload, size_t *payload_len, const char **why);

#endif
