/*
 * redo_int.h — internals shared by redo.c, quorum.c and the tests: LEB128
 * varints and the record validity rule. Not part of the public interface.
 */
#ifndef RD_REDO_INT_H
#define RD_REDO_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define REDO_VARINT_MAX 10u /* bytes: ceil(64 / 7) */
/* Smallest encoded record: five 1-byte fields (lsn_delta, prev_pg_delta,
 * page_id, body_len are varints; type, flags are u8) with an empty body. */
#define REDO_REC_MIN_SIZE 6u
/* REDO_FMT_COMPACT: tag, page_id, body_len with an empty body (a commit is 2 to 9 bytes). */
#define REDO_REC_MIN_SIZE_COMPACT 2u
/* Largest record header before the body: 3 varints of up to 10 bytes
 * (lsn, prev_pg_delta) / 5 bytes (page_id), 2 u8, body_len (3 bytes for 16 KiB). */
#define REDO_REC_HDR_MAX (REDO_VARINT_MAX * 2u + 5u + 2u + REDO_VARINT_MAX)

/* Writes v as unsigned LEB128; dst must have REDO_VARINT_MAX bytes. Returns bytes written. */
static inline size_t redo_varint_put(uint8_t *dst, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80u) {
        dst[i++] = (uint8_t)(v | 0x80u);
        v >>= 7;
    }
    dst[i++] = (uint8_t)v;
    return i;
}

/* Reads one canonical LEB128 varint from p[0..n). Returns bytes used, or
 * RD_ECORRUPT if it runs past n, is longer than 10 bytes, overflows 64 bits,
 * or is not the shortest encoding (a final 0x00 byte after the first). */
static inline int redo_varint_get(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < REDO_VARINT_MAX; i++) {
        if (i >= n)
            return RD_ECORRUPT;
        uint8_t b = p[i];
        if (i == REDO_VARINT_MAX - 1 && b > 1u)
            return RD_ECORRUPT; /* bits beyond 63, or a continuation past 10 bytes */
        v |= (uint64_t)(b & 0x7fu) << (7u * i);
        if ((b & 0x80u) == 0) {
            if (b == 0 && i > 0)
                return RD_ECORRUPT; /* overlong: not the shortest form */
            *out = v;
            return (int)(i + 1);
        }
    }
    return RD_ECORRUPT; /* unreachable: the 10th byte is checked above */
}

struct redo_rec;
/* 0 if r may be encoded (the writer's side of the decode rules), -EINVAL for
 * a malformed record, RD_ETOOBIG for a body over REDO_MAX_BODY. */
int redo_rec_check(const struct redo_rec *r);

#endif
