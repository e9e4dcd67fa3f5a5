/*
 * page.c — the 8 KiB page: header, slotted cells, seal/verify, and the
 * page-change records (build a delta or an image, validate, apply).
 * Formats are tables in engine/README.md; offsets live in engine_int.h.
 *
 * engine_page_apply is shared by replicas, storage nodes and tools: it must
 * never trust its input. It validates the whole body before touching the page.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/checksum.h"
#include "common/err.h"
#include "engine/engine_int.h"

/* Two equal-byte runs shorter than this are merged into one delta range. */
#define DELTA_MERGE_GAP 8u

/* ---------------------------------------------------------------- header */

uint64_t engine_page_lsn(const uint8_t *page) { return rd_get_u64le(page + PG_OFF_LSN); }
uint32_t engine_page_id(const uint8_t *page) { return rd_get_u32le(page + PG_OFF_ID); }
uint8_t engine_page_type(const uint8_t *page) { return page[PG_OFF_TYPE]; }

void engine_page_seal(uint8_t *page)
{
    uint64_t c = rd_checksum64(page + 8, ENGINE_PAGE_SIZE - 8, RD_SEED_PAGE);
    rd_put_u64le(page + PG_OFF_CKSUM, c);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

int engine_page_verify(const uint8_t *page)
{
    uint64_t c = rd_checksum64(page + 8, ENGINE_PAGE_SIZE - 8, RD_SEED_PAGE);
    if (c == rd_get_u64le(page + PG_OFF_CKSUM))
        return 0;
    return all_zero(page, ENGINE_PAGE_SIZE) ? 0 : RD_ECORRUPT;
}

void pg_init(uint8_t *p, uint32_t id, uint8_t type)
{
    memset(p + ENGINE_PAGE_HDR_APPLY_FROM, 0, ENGINE_PAGE_SIZE - ENGINE_PAGE_HDR_APPLY_FROM);
    pg_set_u32(p, PG_OFF_ID, id);
    p[PG_OFF_TYPE] = type;
    pg_set_u16(p, PG_OFF_LOWER, PG_HDR_SIZE);
    pg_set_u16(p, PG_OFF_UPPER, ENGINE_PAGE_SIZE);
    pg_set_link(p, ENGINE_PAGE_NONE);
}

/* ---------------------------------------------------------------- cells */

unsigned pg_cell_size(const uint8_t *p, const uint8_t *cell)
{
    unsigned klen = rd_get_u16le(cell);
    if (p[PG_OFF_TYPE] == PG_INTERNAL)
        return INT_CELL_HDR + klen;
    if (cell[6] & LEAF_FLAG_OVERFLOW)
        return LEAF_CELL_HDR + klen + 4;
    return LEAF_CELL_HDR + klen + rd_get_u32le(cell + 2);
}

const uint8_t *pg_key(const uint8_t *p, unsigned i, unsigned *key_len)
{
    const uint8_t *c = pg_cell(p, i);
    *key_len = rd_get_u16le(c);
    return c + (p[PG_OFF_TYPE] == PG_INTERNAL ? INT_CELL_HDR : LEAF_CELL_HDR);
}

int pg_key_cmp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

unsigned pg_search(const uint8_t *p, const uint8_t *key, size_t key_len, bool *found)
{
    unsigned lo = 0, hi = pg_nslots(p);
    *found = false;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2, klen;
        const uint8_t *k = pg_key(p, mid, &klen);
        int c = pg_key_cmp(k, klen, key, key_len);
        if (c < 0) {
            lo = mid + 1;
        } else {
            if (c == 0)
                *found = true;
            hi = mid;
        }
    }
    return lo;
}

unsigned pg_free_total(const uint8_t *p) { return pg_upper(p) - pg_lower(p) + pg_frag(p); }

/* Rewrites the cell area contiguously at the end of the page; the gap
 * [lower, upper) is zeroed (image records elide it and rebuild it as zeros). */
void pg_compact(uint8_t *p)
{
    static _Thread_local uint8_t tmp[ENGINE_PAGE_SIZE];
    memcpy(tmp, p, ENGINE_PAGE_SIZE);
    unsigned n = pg_nslots(p), upper = ENGINE_PAGE_SIZE;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *c = tmp + pg_slot(tmp, i);
        unsigned sz = pg_cell_size(tmp, c);
        upper -= sz;
        memcpy(p + upper, c, sz);
        pg_set_u16(p, PG_HDR_SIZE + 2 * i, upper);
    }
    memset(p + pg_lower(p), 0, upper - pg_lower(p));
    pg_set_u16(p, PG_OFF_UPPER, upper);
    pg_set_u16(p, PG_OFF_FRAG, 0);
}

bool pg_insert_cell(uint8_t *p, unsigned idx, const uint8_t *cell, unsigned size)
{
    unsigned n = pg_nslots(p);
    rd_assert(idx <= n);
    if (pg_free_total(p) < size + 2)
        return false;
    if (pg_upper(p) - pg_lower(p) < size + 2)
        pg_compact(p);
    unsigned upper = pg_upper(p) - size;
    memcpy(p + upper, cell, size);
    uint8_t *slots = p + PG_HDR_SIZE;
    memmove(slots + 2 * (idx + 1), slots + 2 * idx, 2 * (n - idx));
    rd_put_u16le(slots + 2 * idx, (uint16_t)upper);
    pg_set_u16(p, PG_OFF_NSLOTS, n + 1);
    pg_set_u16(p, PG_OFF_LOWER, pg_lower(p) + 2);
    pg_set_u16(p, PG_OFF_UPPER, upper);
    return true;
}

void pg_remove_cell(uint8_t *p, unsigned idx)
{
    unsigned n = pg_nslots(p);
    rd_assert(idx < n);
    unsigned off = pg_slot(p, idx), sz = pg_cell_size(p, p + off);
    memset(p + off, 0, sz);
    if (off == pg_upper(p))
        pg_set_u16(p, PG_OFF_UPPER, off + sz);
    else
        pg_set_u16(p, PG_OFF_FRAG, pg_frag(p) + sz);
    uint8_t *slots = p + PG_HDR_SIZE;
    memmove(slots + 2 * idx, slots + 2 * (idx + 1), 2 * (n - idx - 1));
    rd_put_u16le(slots + 2 * (n - 1), 0);
    pg_set_u16(p, PG_OFF_NSLOTS, n - 1);
    pg_set_u16(p, PG_OFF_LOWER, pg_lower(p) - 2);
    if (n == 1) { /* empty: reset the cell area so the page is canonical */
        memset(p + pg_upper(p), 0, ENGINE_PAGE_SIZE - pg_upper(p));
        pg_set_u16(p, PG_OFF_UPPER, ENGINE_PAGE_SIZE);
        pg_set_u16(p, PG_OFF_FRAG, 0);
    }
}

/* ---------------------------------------------------------------- structural check */

int pg_check(const uint8_t *p, uint32_t page_id)
{
    uint8_t type = p[PG_OFF_TYPE];
    if (type == PG_NONE)
        return 0; /* zero page (verify already accepted it) */
    if (type > PG_FREE || engine_page_id(p) != page_id)
        return RD_ECORRUPT;
    if (type == PG_OVERFLOW)
        return pg_u32(p, OVF_OFF_USED) <= OVF_CAP ? 0 : RD_ECORRUPT;
    if (type != PG_LEAF && type != PG_INTERNAL)
        return 0;
    unsigned n = pg_nslots(p), lower = pg_lower(p), upper = pg_upper(p);
    if (lower != PG_HDR_SIZE + 2 * n || lower > upper || upper > ENGINE_PAGE_SIZE)
        return RD_ECORRUPT;
    unsigned hdr = type == PG_LEAF ? LEAF_CELL_HDR : INT_CELL_HDR;
    for (unsigned i = 0; i < n; i++) {
        unsigned off = pg_slot(p, i);
        if (off < upper || off + hdr > ENGINE_PAGE_SIZE)
            return RD_ECORRUPT;
        const uint8_t *c = p + off;
        if (rd_get_u16le(c) > ENGINE_KEY_MAX || rd_get_u16le(c) == 0)
            return RD_ECORRUPT;
        if (type == PG_LEAF && !(c[6] & LEAF_FLAG_OVERFLOW) && rd_get_u32le(c + 2) > ENGINE_PAGE_SIZE)
            return RD_ECORRUPT;
        if (off + pg_cell_size(p, c) > ENGINE_PAGE_SIZE)
            return RD_ECORRUPT;
    }
    return 0;
}

/* ---------------------------------------------------------------- records */

const char *engine_rec_type_name(uint8_t rec_type)
{
    switch (rec_type) {
    case ENGINE_REC_PAGE_DELTA: return "PAGE_DELTA";
    case ENGINE_REC_PAGE_IMAGE: return "PAGE_IMAGE";
    case ENGINE_REC_CELL_INSERT: return "CELL_INSERT";
    case ENGINE_REC_PAGE_SPLIT: return "PAGE_SPLIT";
    default: return "UNKNOWN";
    }
}

/* Smallest cell (an internal cell with a 1-byte key) and largest (a cell with its slot
 * must fit an empty page). */
#define LOGICAL_CELL_MIN (INT_CELL_HDR + 1u)
#define LOGICAL_CELL_MAX (ENGINE_PAGE_SIZE - PG_HDR_SIZE - 2u)
#define LOGICAL_SLOT_MAX ((ENGINE_PAGE_SIZE - PG_HDR_SIZE) / 2u)

/* The page-independent part of a logical record's check (E18). */
static int validate_logical(uint8_t rec_type, const uint8_t *body, size_t body_len)
{
    if (body_len < 2 || rd_get_u16le(body) > LOGICAL_SLOT_MAX)
        return RD_ECORRUPT;
    size_t cell_off = rec_type == ENGINE_REC_CELL_INSERT ? 2 : 4;
    if (rec_type == ENGINE_REC_PAGE_SPLIT && body_len == 2)
        return 0; /* keep only: no cell */
    if (body_len < cell_off + LOGICAL_CELL_MIN || body_len - cell_off > LOGICAL_CELL_MAX)
        return RD_ECORRUPT;
    if (rec_type == ENGINE_REC_PAGE_SPLIT && rd_get_u16le(body + 2) >= rd_get_u16le(body))
        return RD_ECORRUPT; /* the cell must land in the kept prefix (pos < keep) */
    unsigned klen = rd_get_u16le(body + cell_off);
    return klen >= 1 && klen <= ENGINE_KEY_MAX ? 0 : RD_ECORRUPT;
}

int engine_rec_validate(uint8_t rec_type, const uint8_t *body, size_t body_len)
{
    return pg_validate_record(rec_type, body, body_len);
}

int pg_validate_record(uint8_t rec_type, const uint8_t *body, size_t body_len)
{
    const size_t from = ENGINE_PAGE_HDR_APPLY_FROM;
    if (body == NULL && body_len > 0)
        return RD_ECORRUPT;
    if (rec_type == ENGINE_REC_CELL_INSERT || rec_type == ENGINE_REC_PAGE_SPLIT)
        return validate_logical(rec_type, body, body_len);
    if (rec_type == ENGINE_REC_PAGE_IMAGE) {
        if (body_len < 4)
            return RD_ECORRUPT;
        size_t lower = rd_get_u16le(body), upper = rd_get_u16le(body + 2);
        if (lower < from || lower > upper || upper > ENGINE_PAGE_SIZE)
            return RD_ECORRUPT;
        if (body_len != 4 + (lower - from) + (ENGINE_PAGE_SIZE - upper))
            return RD_ECORRUPT;
        return 0;
    }
    if (rec_type != ENGINE_REC_PAGE_DELTA || body_len < 2)
        return RD_ECORRUPT;
    size_t n = rd_get_u16le(body), pos = 2;
    if (n == 0)
        return RD_ECORRUPT;
    for (size_t i = 0; i < n; i++) {
        if (body_len - pos < 4)
            return RD_ECORRUPT;
        size_t off = rd_get_u16le(body + pos), len = rd_get_u16le(body + pos + 2);
        pos += 4;
        if (len == 0 || off < from || off + len > ENGINE_PAGE_SIZE || body_len - pos < len)
            return RD_ECORRUPT;
        pos += len;
    }
    return pos == body_len ? 0 : RD_ECORRUPT;
}

/* ---------------------------------------------------------------- logical records (E18) */

/* A page a logical record may change: a leaf or internal page that passes the structure
 * check, whose cells do not overlap the slot array, and whose cell area is exactly its live
 * cells plus the fragmented bytes (so compaction cannot run past the slot array). */
static bool logical_page_ok(const uint8_t *p)
{
    uint8_t t = p[PG_OFF_TYPE];
    if ((t != PG_LEAF && t != PG_INTERNAL) || pg_check(p, engine_page_id(p)) < 0)
        return false;
    size_t live = 0;
    for (unsigned i = 0; i < pg_nslots(p); i++)
        live += pg_cell_size(p, pg_cell(p, i));
    return live + pg_frag(p) == (size_t)(ENGINE_PAGE_SIZE - pg_upper(p));
}

/* A cell from a record is well formed for page p's type and exactly size bytes long. */
static bool logical_cell_ok(const uint8_t *p, const uint8_t *cell, size_t size)
{
    if (size < LOGICAL_CELL_MIN || size > LOGICAL_CELL_MAX)
        return false;
    unsigned klen = rd_get_u16le(cell);
    if (klen == 0 || klen > ENGINE_KEY_MAX)
        return false;
    if (p[PG_OFF_TYPE] == PG_INTERNAL)
        return size == INT_CELL_HDR + klen;
    if (size < LEAF_CELL_HDR)
        return false;
    if (!(cell[6] & LEAF_FLAG_OVERFLOW) && rd_get_u32le(cell + 2) > ENGINE_PAGE_SIZE)
        return false; /* pg_check's rule for inline values */
    return size == pg_cell_size(p, cell);
}

/* CELL_INSERT: u16 slot, cell. Checks everything first, then inserts as the writer did. */
static int apply_cell_insert(uint8_t *p, const uint8_t *body, size_t body_len)
{
    unsigned slot = rd_get_u16le(body), size = (unsigned)(body_len - 2);
    const uint8_t *cell = body + 2;
    if (!logical_page_ok(p) || slot > pg_nslots(p) || !logical_cell_ok(p, cell, size) ||
        pg_free_total(p) < size + 2)
        return RD_ECORRUPT;
    bool ok = pg_insert_cell(p, slot, cell, size);
    rd_assert(ok); /* room checked above */
    return 0;
}

/* PAGE_SPLIT: u16 keep [, u16 pos, cell]. The page is re-initialised and receives the
 * first `keep` cells of (its cells, with the cell inserted at pos), in order — what
 * btree.c's split leaves in the left page. */
static int apply_page_split(uint8_t *p, const uint8_t *body, size_t body_len)
{
    static _Thread_local uint8_t old[ENGINE_PAGE_SIZE];
    unsigned keep = rd_get_u16le(body), n = pg_nslots(p), pos = 0, size = 0;
    const uint8_t *cell = NULL;
    if (body_len > 2) {
        pos = rd_get_u16le(body + 2);
        cell = body + 4;
        size = (unsigned)(body_len - 4);
    }
    if (!logical_page_ok(p) || keep > n + (cell != NULL) || (cell != NULL && (pos > n || pos >= keep)) ||
        (cell != NULL && !logical_cell_ok(p, cell, size)))
        return RD_ECORRUPT;
    size_t need = 0;
    for (unsigned i = 0, j = 0; i < keep; i++)
        need += 2u + (cell != NULL && i == pos ? size : pg_cell_size(p, pg_cell(p, j++)));
    if (need > ENGINE_PAGE_SIZE - PG_HDR_SIZE)
        return RD_ECORRUPT;
    memcpy(old, p, ENGINE_PAGE_SIZE);
    uint8_t type = old[PG_OFF_TYPE];
    pg_init(p, engine_page_id(old), type);
    if (type == PG_INTERNAL)
        pg_set_link(p, pg_link(old));
    for (unsigned i = 0, j = 0; i < keep; i++) {
        bool ok;
        if (cell != NULL && i == pos) {
            ok = pg_insert_cell(p, i, cell, size);
        } else {
            const uint8_t *c = pg_cell(old, j++);
            ok = pg_insert_cell(p, i, c, pg_cell_size(old, c));
        }
        rd_assert(ok); /* room checked above */
    }
    return 0;
}

int engine_page_apply(uint8_t *page, uint8_t rec_type, const uint8_t *body, size_t body_len,
                      uint64_t end_lsn)
{
    int rc = pg_validate_record(rec_type, body, body_len);
    if (rc < 0)
        return rc;
    const size_t from = ENGINE_PAGE_HDR_APPLY_FROM;
    if (rec_type == ENGINE_REC_CELL_INSERT || rec_type == ENGINE_REC_PAGE_SPLIT) {
        rc = rec_type == ENGINE_REC_CELL_INSERT ? apply_cell_insert(page, body, body_len)
                                                 : apply_page_split(page, body, body_len);
        if (rc < 0)
            return rc;
    } else if (rec_type == ENGINE_REC_PAGE_IMAGE) {
        size_t lower = rd_get_u16le(body), upper = rd_get_u16le(body + 2);
        memcpy(page + from, body + 4, lower - from);
        memset(page + lower, 0, upper - lower);
        memcpy(page + upper, body + 4 + (lower - from), ENGINE_PAGE_SIZE - upper);
    } else {
        size_t n = rd_get_u16le(body), pos = 2;
        for (size_t i = 0; i < n; i++) {
            size_t off = rd_get_u16le(body + pos), len = rd_get_u16le(body + pos + 2);
            memcpy(page + off, body + pos + 4, len);
            pos += 4 + len;
        }
    }
    rd_put_u64le(page + PG_OFF_LSN, end_lsn);
    return 0;
}

size_t pg_build_image(const uint8_t *p, uint8_t *out)
{
    const unsigned from = ENGINE_PAGE_HDR_APPLY_FROM;
    unsigned lower = ENGINE_PAGE_SIZE, upper = ENGINE_PAGE_SIZE;
    uint8_t type = p[PG_OFF_TYPE];
    if (type == PG_LEAF || type == PG_INTERNAL) {
        lower = pg_lower(p);
        upper = pg_upper(p);
    } else if (type == PG_OVERFLOW && pg_u32(p, OVF_OFF_USED) <= OVF_CAP) {
        lower = OVF_OFF_DATA + pg_u32(p, OVF_OFF_USED);
    } else if (type == PG_META || type == PG_FREE) {
        lower = type == PG_META ? META_END : PG_HDR_SIZE;
    }
    /* The hole is elided only if it really is zero (apply rebuilds zeros). */
    if (lower < from || lower > upper || upper > ENGINE_PAGE_SIZE || !all_zero(p + lower, upper - lower))
        lower = upper = ENGINE_PAGE_SIZE;
    rd_put_u16le(out, (uint16_t)lower);
    rd_put_u16le(out + 2, (uint16_t)upper);
    memcpy(out + 4, p + from, lower - from);
    memcpy(out + 4 + (lower - from), p + upper, ENGINE_PAGE_SIZE - upper);
    return 4 + (lower - from) + (ENGINE_PAGE_SIZE - upper);
}

size_t pg_build_delta(const uint8_t *before, const uint8_t *after, uint8_t *out)
{
    size_t pos = 2, n = 0, i = ENGINE_PAGE_HDR_APPLY_FROM;
    while (i < ENGINE_PAGE_SIZE) {
        /* Skip equal bytes a word at a time (the hot path: most of a page is unchanged). */
        while (i + 8 <= ENGINE_PAGE_SIZE) {
            uint64_t a, b;
            memcpy(&a, before + i, 8);
            memcpy(&b, after + i, 8);
            if (a != b)
                break;
            i += 8;
        }
        if (i >= ENGINE_PAGE_SIZE)
            break;
        if (before[i] == after[i]) {
            i++;
            continue;
        }
        size_t start = i, end = i + 1; /* [start, end) differs */
        /* extend through equal runs shorter than the merge gap */
        for (size_t j = end; j < ENGINE_PAGE_SIZE && j < end + DELTA_MERGE_GAP; j++)
            if (before[j] != after[j])
                end = j + 1;
        rd_put_u16le(out + pos, (uint16_t)start);
        rd_put_u16le(out + pos + 2, (uint16_t)(end - start));
        memcpy(out + pos + 4, after + start, end - start);
        pos += 4 + (end - start);
        n++;
        i = end;
    }
    if (n == 0)
        return 0;
    rd_assert(pos <= PG_DELTA_MAX && n <= 0xFFFF);
    rd_put_u16le(out, (uint16_t)n);
    return pos;
}

/* 1 if slot i of a and slot j of b hold the same cell bytes. */
static bool same_cell(const uint8_t *a, unsigned i, const uint8_t *b, unsigned j)
{
    const uint8_t *ca = pg_cell(a, i), *cb = pg_cell(b, j);
    unsigned sa = pg_cell_size(a, ca);
    return sa == pg_cell_size(b, cb) && memcmp(ca, cb, sa) == 0;
}

/* A logical record (E18) for the change before -> after, verified: applying it to before
 * must give after byte for byte (bytes [16, 8192)), else 0 (the caller logs a delta). */
static size_t build_logical(const uint8_t *before, const uint8_t *after, uint8_t *out, uint8_t *type)
{
    static _Thread_local uint8_t check[ENGINE_PAGE_SIZE];
    uint8_t t = after[PG_OFF_TYPE];
    if ((t != PG_LEAF && t != PG_INTERNAL) || before[PG_OFF_TYPE] != t ||
        engine_page_id(before) != engine_page_id(after) || pg_check(after, engine_page_id(after)) < 0 ||
        !logical_page_ok(before))
        return 0;
    unsigned nb = pg_nslots(before), na = pg_nslots(after), i = 0;
    size_t len;
    if (na == nb + 1) { /* one cell inserted */
        while (i < nb && same_cell(before, i, after, i))
            i++;
        const uint8_t *c = pg_cell(after, i);
        unsigned size = pg_cell_size(after, c);
        rd_put_u16le(out, (uint16_t)i);
        memcpy(out + 2, c, size);
        len = 2 + size;
        *type = ENGINE_REC_CELL_INSERT;
    } else if (na >= 1 && na <= nb && pg_frag(after) == 0 &&
               pg_slot(after, 0) + pg_cell_size(after, pg_cell(after, 0)) == ENGINE_PAGE_SIZE) {
        /* rebuilt from a prefix of its cells (a split's left half), perhaps with one new cell */
        while (i < na && same_cell(before, i, after, i))
            i++;
        rd_put_u16le(out, (uint16_t)na);
        len = 2;
        if (i < na) {
            const uint8_t *c = pg_cell(after, i);
            unsigned size = pg_cell_size(after, c);
            rd_put_u16le(out + 2, (uint16_t)i);
            memcpy(out + 4, c, size);
            len = 4 + size;
        }
        *type = ENGINE_REC_PAGE_SPLIT;
    } else {
        return 0;
    }
    memcpy(check, before, ENGINE_PAGE_SIZE);
    if (engine_page_apply(check, *type, out, len, 0) < 0)
        return 0;
    const unsigned from = ENGINE_PAGE_HDR_APPLY_FROM;
    return memcmp(check + from, after + from, ENGINE_PAGE_SIZE - from) == 0 ? len : 0;
}

size_t pg_build_change(const uint8_t *before, const uint8_t *after, uint8_t *out, uint8_t *type)
{
    size_t len = build_logical(before, after, out, type);
    if (len > 0)
        return len;
    *type = ENGINE_REC_PAGE_DELTA;
    return pg_build_delta(before, after, out);
}

/* ---------------------------------------------------------------- describe */

static void put_key(FILE *f, const uint8_t *k, unsigned len)
{
    unsigned show = len < 48 ? len : 48;
    fputc('"', f);
    for (unsigned i = 0; i < show; i++) {
        if (isprint(k[i]) && k[i] != '"' && k[i] != '\\')
            fputc(k[i], f);
        else
            fprintf(f, "\\x%02x", k[i]);
    }
    fputc('"', f);
    if (show < len)
        fprintf(f, "...(%u bytes)", len);
}

static const char *type_name(uint8_t t)
{
    static const char *names[] = {"NONE", "META", "LEAF", "INTERNAL", "OVERFLOW", "FREE"};
    return t <= PG_FREE ? names[t] : "UNKNOWN";
}

void engine_page_describe(const uint8_t *page, void *fp)
{
    FILE *f = fp;
    uint8_t t = page[PG_OFF_TYPE];
    fprintf(f, "page %u type=%s lsn=%llu checksum=%s nslots=%u lower=%u upper=%u frag=%u link=",
            engine_page_id(page), type_name(t), (unsigned long long)engine_page_lsn(page),
            engine_page_verify(page) == 0 ? "ok" : "BAD", pg_nslots(page), pg_lower(page),
            pg_upper(page), pg_frag(page));
    if (pg_link(page) == ENGINE_PAGE_NONE)
        fprintf(f, "none\n");
    else
        fprintf(f, "%u\n", pg_link(page));
    if (t == PG_META) {
        fprintf(f, "  magic=%.8s version=%u root=%u pages=%u free_head=%d free_pages=%u keys=%llu "
                   "height=%u\n",
                (const char *)page + META_OFF_MAGIC, pg_u32(page, META_OFF_VERSION),
                pg_u32(page, META_OFF_ROOT), pg_u32(page, META_OFF_PAGES),
                (int)pg_u32(page, META_OFF_FREE), pg_u32(page, META_OFF_NFREE),
                (unsigned long long)rd_get_u64le(page + META_OFF_KEYS), pg_u32(page, META_OFF_HEIGHT));
        return;
    }
    if (t == PG_OVERFLOW) {
        fprintf(f, "  overflow used=%u\n", pg_u32(page, OVF_OFF_USED));
        return;
    }
    if ((t != PG_LEAF && t != PG_INTERNAL) || pg_check(page, engine_page_id(page)) < 0) {
        if (t == PG_LEAF || t == PG_INTERNAL)
            fprintf(f, "  (cells not shown: structure check failed)\n");
        return;
    }
    for (unsigned i = 0; i < pg_nslots(page); i++) {
        const uint8_t *c = pg_cell(page, i);
        unsigned klen;
        const uint8_t *k = pg_key(page, i, &klen);
        fprintf(f, "  [%u] off=%u ", i, pg_slot(page, i));
        put_key(f, k, klen);
        if (t == PG_INTERNAL)
            fprintf(f, " -> %u\n", rd_get_u32le(c + 2));
        else if (c[6] & LEAF_FLAG_OVERFLOW)
            fprintf(f, " value=%u bytes in overflow from %u\n", rd_get_u32le(c + 2),
                    rd_get_u32le(c + LEAF_CELL_HDR + klen));
        else
            fprintf(f, " value=%u bytes\n", rd_get_u32le(c + 2));
    }
}
