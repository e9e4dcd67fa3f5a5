/*
 * wal_append.c — appending records: the engine's page records (the sink), the
 * server's COMMIT records, and a replica's records shipped by its primary
 * (wal_append_encoded, W11). Records go into the active buffer; wal_flush.c
 * makes them durable.
 */
#include "wal/wal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/log.h"
#include "common/util.h"
#include "wal/wal_int.h"
#include "wal/wal_writer.h"

/* ---------------------------------------------------------------- appending */

static uint8_t *buf_grow(struct wal *w, size_t n)
{
    struct wal_buf *b = &w->bufs[w->active];
    if (b->pre + b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : WAL_BUF_INITIAL;
        while (cap < b->pre + b->len + n)
            cap *= 2;
        if (cap > WAL_BUF_MAX)
            return NULL;
        /* Never the in-flight buffer (W5). Aligned for direct I/O; cap stays a
         * multiple of WAL_DIO_ALIGN, so a write rounded up to a block fits. */
        uint8_t *p = aligned_alloc(WAL_DIO_ALIGN, cap);
        if (p == NULL)
            return NULL;
        if (b->mem != NULL)
            memcpy(p, b->mem, b->pre + b->len);
        free(b->mem);
        b->mem = p;
        b->data = p + b->pre;
        b->cap = cap;
    }
    uint8_t *dst = b->data + b->len;
    b->len += n;
    w->insert_lsn += n;
    return dst;
}

/* Starts the segment that insert_lsn is at the beginning of: the header bytes
 * go into the buffer too (identical to the file's), so the buffer is one
 * contiguous LSN range. */
static int begin_segment(struct wal *w)
{
    uint64_t segno = w->insert_lsn / w->seg_size;
    rd_assert(w->insert_lsn % w->seg_size == 0);
    int rc = wal_seg_prepare(w, segno);
    if (rc < 0)
        return rc;
    uint8_t *dst = buf_grow(w, WAL_SEG_HDR_SIZE);
    if (dst == NULL)
        return RD_EFULL;
    char path[PATH_MAX];
    int exists;
    uint32_t tli = wal_seg_path_ex(w, segno, path, sizeof(path), &exists);
    struct wal_seg_header h = {WAL_FORMAT_VERSION, tli, segno, w->seg_size, w->system_id};
    wal_seg_header_encode(dst, &h);
    return 0;
}

/* Appends one record; *start_lsn / *end_lsn its position. */
int wal_append_record(struct wal *w, uint8_t type, uint8_t flags, uint32_t page_id,
                         const uint8_t *body, size_t body_len, uint64_t *start_lsn, uint64_t *end_lsn)
{
    rd_assert(w->recovered);
    if (body_len > WAL_BODY_MAX)
        return RD_ETOOBIG;
    size_t aligned = RD_ALIGN_UP(WAL_RECORD_HDR_SIZE + body_len, WAL_RECORD_ALIGN);
    int rc;
    if (w->insert_lsn % w->seg_size == 0 && (rc = begin_segment(w)) < 0)
        return rc;
    uint64_t rest = w->seg_size - w->insert_lsn % w->seg_size;
    if (aligned > rest) {
        uint8_t *dst = buf_grow(w, rest);
        if (dst == NULL)
            return RD_EFULL;
        memset(dst, 0, rest);
        if (rest >= WAL_RECORD_HDR_SIZE) {
            wal_record_encode(dst, rest, w->prev_lsn, WAL_REC_SWITCH, 0, ENGINE_PAGE_NONE, NULL, 0);
            w->prev_lsn = w->insert_lsn - rest;
        }
        if ((rc = begin_segment(w)) < 0)
            return rc;
    }
    uint64_t start = w->insert_lsn;
    uint8_t *dst = buf_grow(w, aligned);
    if (dst == NULL)
        return RD_EFULL;
    wal_record_encode(dst, aligned, w->prev_lsn, type, flags, page_id, body, body_len);
    w->prev_lsn = start;
    w->st.records++;
    w->st.record_bytes += aligned;
    if (type == WAL_REC_PAGE_IMAGE) {
        w->st.image_records++;
        w->st.image_bytes += aligned;
    }
    if (type == WAL_REC_COMMIT) {
        w->st.commits++;
        w->bufs[w->active].commits++;
    }
    *start_lsn = start;
    *end_lsn = w->insert_lsn;
    /* Prepare the next segment ahead of need (W6). */
    if (w->insert_lsn % w->seg_size != 0 &&
        (rc = wal_prepare_next(w, start / w->seg_size, w->insert_lsn % w->seg_size)) < 0)
        return rc;
    return 0;
}

static int sink_emit(void *ctx, uint32_t page_id, uint8_t rec_type, uint8_t flags, const uint8_t *body,
                     size_t body_len, uint64_t *end_lsn)
{
    struct wal *w = ctx;
    if (!ENGINE_REC_IS_PAGE(rec_type))
        return RD_EPROTO;
    if (page_id == ENGINE_PAGE_NONE || body_len == 0)
        return RD_EPROTO;
    uint64_t start;
    return wal_append_record(w, rec_type, flags, page_id, body, body_len, &start, end_lsn);
}

static int sink_flush_to(void *ctx, uint64_t lsn) { return wal_flush_sync(ctx, lsn); }

struct engine_sink wal_engine_sink(struct wal *w)
{
    return (struct engine_sink){.ctx = w, .emit = sink_emit, .flush_to = sink_flush_to};
}

int wal_append_commit(struct wal *w, uint64_t txn_id, uint64_t *end_lsn)
{
    uint8_t body[WAL_COMMIT_BODY];
    rd_put_u64le(body, rd_wall_us());
    rd_put_u64le(body + 8, txn_id);
    uint64_t start;
    return wal_append_record(w, WAL_REC_COMMIT, 0, ENGINE_PAGE_NONE, body, sizeof(body), &start, end_lsn);
}

uint64_t wal_insert_lsn(const struct wal *w) { return w->insert_lsn; }

/* ---------------------------------------------------------------- records shipped by the primary */

int wal_append_encoded(struct wal *w, const uint8_t *rec, size_t avail, uint64_t expected_lsn,
                       uint64_t *end_lsn, size_t *consumed)
{
    rd_assert(w->recovered);
    struct wal_record r;
    const char *why;
    char exp[32], at_s[32]; /* formatted only for a message: this runs once per replicated record */
    int n = wal_record_decode_why(rec, avail, &r, &why);
    if (n < 0) {
        wal_fmt_lsn(exp, sizeof(exp), expected_lsn);
        rd_error("replicated WAL record for lsn %s is invalid: %s", exp, why);
        return RD_ECORRUPT;
    }
    size_t aligned = (size_t)n;
    /* The same placement rule as wal_append_record, but a SWITCH is never made up
     * here: the primary's own SWITCH records arrive in the stream. */
    uint64_t at = wal_next_record_lsn(w->insert_lsn, w->seg_size);
    if (r.type != WAL_REC_SWITCH && aligned > w->seg_size - at % w->seg_size) {
        wal_fmt_lsn(exp, sizeof(exp), expected_lsn);
        wal_fmt_lsn(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record for lsn %s (%zu bytes) does not fit in the rest of the segment "
                 "at %s, and no SWITCH record preceded it",
                 exp, aligned, at_s);
        return RD_ECORRUPT;
    }
    if (wal_next_record_lsn(expected_lsn, w->seg_size) != at) {
        wal_fmt_lsn(exp, sizeof(exp), expected_lsn);
        wal_fmt_lsn(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record for lsn %s would land at %s", exp, at_s);
        return RD_ECORRUPT;
    }
    if (!w->prev_unknown && r.prev_lsn != w->prev_lsn) {
        char a[32], b[32];
        wal_fmt_lsn(a, sizeof(a), r.prev_lsn);
        wal_fmt_lsn(b, sizeof(b), w->prev_lsn);
        wal_fmt_lsn(at_s, sizeof(at_s), at);
        rd_error("replicated WAL record at %s has prev lsn %s, but the previous record is at %s", at_s, a,
                 b);
        return RD_ECORRUPT;
    }
    int rc;
    uint64_t off = w->insert_lsn % w->seg_size;
    if (off != 0 && at != w->insert_lsn) { /* < 32 bytes left: implicit move to the next segment */
        uint8_t *dst = buf_grow(w, w->seg_size - off);
        if (dst == NULL)
            return RD_EFULL;
        memset(dst, 0, w->seg_size - off);
        off = 0;
    }
    if (off == 0 && (rc = begin_segment(w)) < 0)
        return rc;
    rd_assert(w->insert_lsn == at);
    uint8_t *dst = buf_grow(w, aligned);
    if (dst == NULL)
        return RD_EFULL;
    size_t total = WAL_RECORD_HDR_SIZE + r.body_len;
    memcpy(dst, rec, total);
    memset(dst + total, 0, aligned - total);
    w->prev_lsn = at;
    w->prev_unknown = 0;
    if (r.type == WAL_REC_SWITCH) { /* the rest of the segment is unused */
        uint64_t rest = w->seg_size - w->insert_lsn % w->seg_size;
        if (rest != w->seg_size) {
            if ((dst = buf_grow(w, rest)) == NULL)
                return RD_EFULL;
            memset(dst, 0, rest);
        }
    }
    w->st.records++;
    w->st.record_bytes += aligned;
    if (r.type == WAL_REC_PAGE_IMAGE) {
        w->st.image_records++;
        w->st.image_bytes += aligned;
    }
    if (r.type == WAL_REC_COMMIT) {
        w->st.commits++;
        w->bufs[w->active].commits++;
    }
    *end_lsn = w->insert_lsn;
    *consumed = aligned;
    uint64_t segno = at / w->seg_size;
    if (w->insert_lsn % w->seg_size == 0)
        rc = wal_seg_prepare(w, segno + 1);
    else
        rc = wal_prepare_next(w, segno, w->insert_lsn % w->seg_size);
    return rc < 0 ? rc : 0;
}
