/*
 * checksum.h — the one checksum of the project: XXH3 64-bit (libxxhash).
 * Stored as 8 little-endian bytes; a seed separates uses (page, WAL, frame) so
 * bytes of one kind never validate as another.
 */
#ifndef RD_CHECKSUM_H
#define RD_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

enum rd_checksum_seed {
    RD_SEED_PAGE = 0x5041474531ull,    /* "PAGE1" */
    RD_SEED_WAL = 0x57414c31ull,       /* "WAL1" */
    RD_SEED_CONTROL = 0x4354524c31ull, /* "CTRL1" */
    RD_SEED_FRAME = 0x46524d31ull,     /* "FRM1" */
    RD_SEED_SLOTS = 0x534c4f5431ull,   /* "SLOT1": the primary's replication slots file */
};

uint64_t rd_checksum64(const void *data, size_t len, uint64_t seed);
/* Checksum of two pieces, as if concatenated. */
uint64_t rd_checksum64_2(const void *a, size_t a_len, const void *b, size_t b_len, uint64_t seed);

#endif
