/*
 * fuzz_page.c — libFuzzer target for the engine's record bodies
 * (engine_page_apply, engine/README.md E7 and E18), the logical records above
 * all: their apply reads the page as well as the body.
 *
 * Input: byte 0 picks the record type (low 3 bits: 1..4 the engine's types,
 * others unknown), byte 1 the page builder's shape, then the body. Each input
 * is applied to
 *   (a) a well-formed leaf or internal page built from the input's bytes
 *       (cells inserted and removed with the engine's own functions), and
 *   (b) the body bytes themselves read as a page (garbage page);
 * nothing may crash or read outside the page and the body; a refused record
 * leaves the page unchanged (validate first); an accepted logical record on a
 * well-formed page leaves a page that passes the structure check.
 * Then the builder property E8/E18: a random change of page (a) (an insert, a
 * split's left half, a same-size overwrite) turned into a record by
 * pg_build_change and applied to the before-image gives the after-image byte
 * for byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "engine/engine_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t page[ENGINE_PAGE_SIZE], copy[ENGINE_PAGE_SIZE], after[ENGINE_PAGE_SIZE],
    body[PG_DELTA_MAX];

/* A cell for the page type: key "k" + 2 bytes from x, value of vlen bytes. */
static unsigned make_cell(uint8_t type, uint32_t x, unsigned vlen, uint8_t *c)
{
    unsigned klen = 3;
    rd_put_u16le(c, (uint16_t)klen);
    if (type == PG_INTERNAL) {
        rd_put_u32le(c + 2, x);
        c[6] = 'k';
        c[7] = (uint8_t)(x >> 8);
        c[8] = (uint8_t)x;
        return INT_CELL_HDR + klen;
    }
    rd_put_u32le(c + 2, vlen);
    c[6] = 0;
    c[7] = 'k';
    c[8] = (uint8_t)(x >> 8);
    c[9] = (uint8_t)x;
    memset(c + 10, (int)(x & 0xff), vlen);
    return LEAF_CELL_HDR + klen + vlen;
}

/* A well-formed page: n cells with keys in order, some removed (fragmentation). */
static void build_page(uint8_t shape, const uint8_t *d, size_t n)
{
    uint8_t type = (shape & 1) ? PG_INTERNAL : PG_LEAF;
    memset(page, 0, sizeof(page));
    pg_init(page, 7, type);
    if (type == PG_INTERNAL)
        pg_set_link(page, 3);
    unsigned ncells = (shape >> 1) & 0x3f, vlen = n > 0 ? 1u + (d[0] & 0x7fu) : 1u;
    uint8_t cell[LEAF_CELL_HDR + 3 + 256];
    for (unsigned i = 0; i < ncells; i++) {
        unsigned sz = make_cell(type, i * 4 + 1, vlen, cell);
        if (!pg_insert_cell(page, i, cell, sz))
            break;
    }
    for (size_t i = 1; i < n && i < 6 && pg_nslots(page) > 1; i++)
        if (d[i] & 1)
            pg_remove_cell(page, d[i] % pg_nslots(page));
    rd_assert(pg_check(page, 7) == 0);
}

static void apply_checked(const uint8_t *b, size_t n, uint8_t type, int well_formed)
{
    memcpy(copy, page, sizeof(page));
    int rc = engine_page_apply(page, type, b, n, 99);
    if (rc < 0) {
        rd_assert(rc == RD_ECORRUPT);
        rd_assert(memcmp(copy, page, sizeof(page)) == 0); /* validate first (E7) */
    } else if (well_formed && (type == ENGINE_REC_CELL_INSERT || type == ENGINE_REC_PAGE_SPLIT)) {
        rd_assert(pg_check(page, 7) == 0);
    }
}

/* E8/E18: a change made by the engine's page functions, logged by pg_build_change,
 * replays exactly. */
static void builder_round_trip(const uint8_t *d, size_t n)
{
    if (n < 4 || pg_nslots(page) == 0)
        return;
    memcpy(after, page, sizeof(page));
    uint8_t type = after[PG_OFF_TYPE], cell[LEAF_CELL_HDR + 3 + 256];
    unsigned ns = pg_nslots(after);
    switch (d[0] % 3) {
    case 0: { /* insert between two keys (odd key ids; new ones even) */
        unsigned pos = d[1] % (ns + 1), sz = make_cell(type, pos * 4, 1 + d[2], cell);
        if (!pg_insert_cell(after, pos, cell, sz))
            return;
        break;
    }
    case 1: { /* a split's left half: the first keep cells, maybe with a new one */
        static uint8_t old[ENGINE_PAGE_SIZE];
        memcpy(old, after, sizeof(old));
        unsigned keep = 1 + d[1] % ns, pos = d[2] % (keep + 1), sz = make_cell(type, pos * 4, 1 + d[3], cell);
        pg_init(after, 7, type);
        if (type == PG_INTERNAL)
            pg_set_link(after, pg_link(old));
        for (unsigned i = 0, j = 0; i < keep; i++) {
            const uint8_t *c = i == pos ? cell : pg_cell(old, j);
            unsigned csz = i == pos ? sz : pg_cell_size(old, c);
            if (i != pos)
                j++;
            if (!pg_insert_cell(after, i, c, csz))
                return;
        }
        break;
    }
    default: { /* same-size overwrite in place (E13) */
        uint8_t *c = after + pg_slot(after, d[1] % ns);
        c[pg_cell_size(after, c) - 1] ^= (uint8_t)(d[2] | 1);
        break;
    }
    }
    uint8_t rtype = 0;
    size_t len = pg_build_change(page, after, body, &rtype);
    if (len == 0)
        return;
    memcpy(copy, page, sizeof(page));
    rd_assert(engine_page_apply(copy, rtype, body, len, 5) == 0);
    rd_assert(memcmp(copy + ENGINE_PAGE_HDR_APPLY_FROM, after + ENGINE_PAGE_HDR_APPLY_FROM,
                     ENGINE_PAGE_SIZE - ENGINE_PAGE_HDR_APPLY_FROM) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t type = data[0] & 7, shape = data[1];
    const uint8_t *b = data + 2;
    size_t n = size - 2;
    /* exact-size copy of the body: ASan sees any read past it */
    uint8_t *exact = malloc(n ? n : 1);
    if (exact == NULL)
        return 0;
    memcpy(exact, b, n);
    build_page(shape, b, n);
    builder_round_trip(b, n);
    apply_checked(exact, n, type, 1);
    /* the body bytes as a page, whatever they hold */
    memset(page, 0, sizeof(page));
    memcpy(page, b, RD_MIN(n, sizeof(page)));
    apply_checked(exact, n, type, 0);
    free(exact);
    return 0;
}
