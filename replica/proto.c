/*
 * proto.c — encoders and decoders of the classic replication messages
 * (replica/proto.h; layouts as offset/size tables in replica/README.md).
 *
 * Every decoder checks the exact payload length first, then reads fixed
 * fields with rd_get_*; reserved bytes must be zero (P3) so a payload has one
 * encoding and a future use of them needs a new frame version.
 */
#include "replica/proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/checksum.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"
#include "engine/engine.h"

#define REPL_HELLO_SIZE 48u
#define REPL_WAL_FIXED_SIZE 32u
#define REPL_KEEPALIVE_SIZE 24u
#define REPL_STATUS_SIZE 56u
#define REPL_BACKUP_BEGIN_SIZE 48u
#define REPL_BACKUP_PAGES_FIXED_SIZE 8u
#define REPL_BACKUP_END_SIZE 8u
#define REPL_PAGE_SIZE 8192u
/* Longest REPL_ERROR text; the encoder truncates, the decoder rejects longer. */
#define REPL_ERROR_MAX_BYTES 1024u

_Static_assert(REPL_PAGE_SIZE == ENGINE_PAGE_SIZE, "base backup ships engine pages");
_Static_assert(REPL_HELLO_SIZE == 6 * 8, "hello: 4 u64 + 4 u32");
_Static_assert(REPL_BACKUP_BEGIN_SIZE == 6 * 8, "backup begin: 4 u64 + 4 u32");
_Static_assert(REPL_STATUS_SIZE == 7 * 8, "status: 7 u64");
_Static_assert(REPL_KEEPALIVE_SIZE == 2 * 8 + 8, "keepalive: 2 u64 + u8 + 7 zero");
_Static_assert(REPL_WAL_FIXED_SIZE == 4 * 8, "wal: 4 u64 then records");
_Static_assert(REPL_BACKUP_PAGES_FIXED_SIZE + 1023u * REPL_PAGE_SIZE <= FRAME_MAX_PAYLOAD,
               "a frame holds 1023 pages");

/* ---------------------------------------------------------------- helpers */

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

/* Frames fixed || tail (the tail may be large: WAL records, pages). The
 * payload is staged in one heap block because frame_append takes one piece. */
static int send_parts(struct rd_buf *out, uint8_t type, uint64_t epoch, const uint8_t *fixed,
                      size_t fixed_len, const uint8_t *tail, size_t tail_len, int compress)
{
    rd_assert(tail != NULL || tail_len == 0);
    if (tail_len > FRAME_MAX_PAYLOAD - fixed_len)
        return RD_ETOOBIG;
    if (tail_len == 0)
        return frame_append(out, type, epoch, fixed, fixed_len, compress);
    uint8_t *stage = malloc(fixed_len + tail_len);
    if (stage == NULL)
        return -ENOMEM;
    memcpy(stage, fixed, fixed_len);
    memcpy(stage + fixed_len, tail, tail_len);
    int rc = frame_append(out, type, epoch, stage, fixed_len + tail_len, compress);
    free(stage);
    return rc;
}

/* ---------------------------------------------------------------- REPL_HELLO */

int repl_send_hello(struct rd_buf *out, uint64_t epoch, const struct repl_hello *m)
{
    uint8_t p[REPL_HELLO_SIZE] = {0};
    rd_put_u64le(p + 0, m->system_id);
    rd_put_u32le(p + 8, m->timeline);
    rd_put_u32le(p + 12, m->term);
    rd_put_u64le(p + 16, m->start_lsn);
    rd_put_u64le(p + 24, m->primary_flush_lsn);
    rd_put_u64le(p + 32, m->switch_lsn);
    rd_put_u32le(p + 40, m->prev_timeline);
    return frame_append(out, REPL_HELLO, epoch, p, sizeof(p), 0);
}

int repl_parse_hello(const uint8_t *p, size_t n, struct repl_hello *m)
{
    if (n != REPL_HELLO_SIZE || !all_zero(p + 44, 4))
        return RD_ECORRUPT;
    m->system_id = rd_get_u64le(p + 0);
    m->timeline = rd_get_u32le(p + 8);
    m->term = rd_get_u32le(p + 12);
    m->start_lsn = rd_get_u64le(p + 16);
    m->primary_flush_lsn = rd_get_u64le(p + 24);
    m->switch_lsn = rd_get_u64le(p + 32);
    m->prev_timeline = rd_get_u32le(p + 40);
    return 0;
}

/* ---------------------------------------------------------------- REPL_WAL */

int repl_send_wal(struct rd_buf *out, uint64_t epoch, const struct repl_wal *m, int compress)
{
    rd_assert(m->start_lsn <= m->end_lsn);
    uint8_t p[REPL_WAL_FIXED_SIZE];
    rd_put_u64le(p + 0, m->start_lsn);
    rd_put_u64le(p + 8, m->end_lsn);
    rd_put_u64le(p + 16, m->primary_flush_lsn);
    rd_put_u64le(p + 24, m->send_time_us);
    return send_parts(out, REPL_WAL, epoch, p, sizeof(p), m->records, m->records_len, compress);
}

int repl_parse_wal(const uint8_t *p, size_t n, struct repl_wal *m)
{
    if (n < REPL_WAL_FIXED_SIZE)
        return RD_ECORRUPT;
    uint64_t start = rd_get_u64le(p + 0), end = rd_get_u64le(p + 8);
    if (start > end)
        return RD_ECORRUPT;
    m->start_lsn = start;
    m->end_lsn = end;
    m->primary_flush_lsn = rd_get_u64le(p + 16);
    m->send_time_us = rd_get_u64le(p + 24);
    m->records = p + REPL_WAL_FIXED_SIZE;
    m->records_len = n - REPL_WAL_FIXED_SIZE;
    return 0;
}

/* ---------------------------------------------------------------- REPL_KEEPALIVE */

int repl_send_keepalive(struct rd_buf *out, uint64_t epoch, const struct repl_keepalive *m)
{
    uint8_t p[REPL_KEEPALIVE_SIZE] = {0};
    rd_put_u64le(p + 0, m->primary_flush_lsn);
    rd_put_u64le(p + 8, m->send_time_us);
    p[16] = m->reply_requested ? 1 : 0;
    return frame_append(out, REPL_KEEPALIVE, epoch, p, sizeof(p), 0);
}

int repl_parse_keepalive(const uint8_t *p, size_t n, struct repl_keepalive *m)
{
    if (n != REPL_KEEPALIVE_SIZE || p[16] > 1 || !all_zero(p + 17, 7))
        return RD_ECORRUPT;
    m->primary_flush_lsn = rd_get_u64le(p + 0);
    m->send_time_us = rd_get_u64le(p + 8);
    m->reply_requested = p[16];
    return 0;
}

/* ---------------------------------------------------------------- REPL_STATUS */

int repl_send_status(struct rd_buf *out, uint64_t epoch, const struct repl_status *m)
{
    uint8_t p[REPL_STATUS_SIZE];
    rd_put_u64le(p + 0, m->write_lsn);
    rd_put_u64le(p + 8, m->flush_lsn);
    rd_put_u64le(p + 16, m->apply_lsn);
    rd_put_u64le(p + 24, m->write_echo_us);
    rd_put_u64le(p + 32, m->flush_echo_us);
    rd_put_u64le(p + 40, m->apply_echo_us);
    rd_put_u64le(p + 48, m->reply_time_us);
    return frame_append(out, REPL_STATUS, epoch, p, sizeof(p), 0);
}

int repl_parse_status(const uint8_t *p, size_t n, struct repl_status *m)
{
    if (n != REPL_STATUS_SIZE)
        return RD_ECORRUPT;
    m->write_lsn = rd_get_u64le(p + 0);
    m->flush_lsn = rd_get_u64le(p + 8);
    m->apply_lsn = rd_get_u64le(p + 16);
    m->write_echo_us = rd_get_u64le(p + 24);
    m->flush_echo_us = rd_get_u64le(p + 32);
    m->apply_echo_us = rd_get_u64le(p + 40);
    m->reply_time_us = rd_get_u64le(p + 48);
    return 0;
}

/* ---------------------------------------------------------------- REPL_ERROR */

int repl_send_error(struct rd_buf *out, uint64_t epoch, const char *msg)
{
    rd_assert(msg != NULL);
    size_t len = strnlen(msg, REPL_ERROR_MAX_BYTES);
    return frame_append(out, REPL_ERROR, epoch, msg, len, 0);
}

int repl_parse_error(const uint8_t *p, size_t n, char *msg, size_t msg_cap)
{
    rd_assert(msg != NULL && msg_cap > 0);
    msg[0] = '\0';
    if (n > REPL_ERROR_MAX_BYTES)
        return RD_ECORRUPT;
    size_t k = RD_MIN(n, msg_cap - 1);
    /* The text goes into logs: keep it printable ASCII, one line. */
    for (size_t i = 0; i < k; i++)
        msg[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    msg[k] = '\0';
    return 0;
}

/* ---------------------------------------------------------------- REPL_BACKUP_BEGIN */

int repl_send_backup_begin(struct rd_buf *out, uint64_t epoch, const struct repl_backup_begin *m)
{
    uint8_t p[REPL_BACKUP_BEGIN_SIZE] = {0};
    rd_put_u64le(p + 0, m->system_id);
    rd_put_u32le(p + 8, m->timeline);
    rd_put_u32le(p + 12, m->term);
    rd_put_u64le(p + 16, m->redo_lsn);
    rd_put_u64le(p + 24, m->checkpoint_lsn);
    rd_put_u64le(p + 32, m->segment_size_bytes);
    rd_put_u32le(p + 40, m->npages);
    return frame_append(out, REPL_BACKUP_BEGIN, epoch, p, sizeof(p), 0);
}

int repl_parse_backup_begin(const uint8_t *p, size_t n, struct repl_backup_begin *m)
{
    if (n != REPL_BACKUP_BEGIN_SIZE || !all_zero(p + 44, 4))
        return RD_ECORRUPT;
    m->system_id = rd_get_u64le(p + 0);
    m->timeline = rd_get_u32le(p + 8);
    m->term = rd_get_u32le(p + 12);
    m->redo_lsn = rd_get_u64le(p + 16);
    m->checkpoint_lsn = rd_get_u64le(p + 24);
    m->segment_size_bytes = rd_get_u64le(p + 32);
    m->npages = rd_get_u32le(p + 40);
    return 0;
}

/* ---------------------------------------------------------------- REPL_BACKUP_PAGES */

int repl_send_backup_pages(struct rd_buf *out, uint64_t epoch, uint32_t first_page, uint32_t count,
                           const uint8_t *pages)
{
    rd_assert(pages != NULL || count == 0);
    rd_assert((uint64_t)first_page + count <= (uint64_t)UINT32_MAX + 1u);
    uint64_t bytes = (uint64_t)count * REPL_PAGE_SIZE;
    if (bytes > FRAME_MAX_PAYLOAD - REPL_BACKUP_PAGES_FIXED_SIZE)
        return RD_ETOOBIG;
    uint8_t p[REPL_BACKUP_PAGES_FIXED_SIZE];
    rd_put_u32le(p + 0, first_page);
    rd_put_u32le(p + 4, count);
    /* Pages are sent raw: a frame of pages is near the limit and lz4 on
     * mostly-full pages rarely pays; the caller cannot ask otherwise. */
    return send_parts(out, REPL_BACKUP_PAGES, epoch, p, sizeof(p), pages, (size_t)bytes, 0);
}

int repl_parse_backup_pages(const uint8_t *p, size_t n, struct repl_backup_pages *m)
{
    if (n < REPL_BACKUP_PAGES_FIXED_SIZE)
        return RD_ECORRUPT;
    uint32_t first = rd_get_u32le(p + 0), count = rd_get_u32le(p + 4);
    if ((uint64_t)n - REPL_BACKUP_PAGES_FIXED_SIZE != (uint64_t)count * REPL_PAGE_SIZE)
        return RD_ECORRUPT;
    if ((uint64_t)first + count > (uint64_t)UINT32_MAX + 1u)
        return RD_ECORRUPT;
    m->first_page = first;
    m->count = count;
    m->pages = p + REPL_BACKUP_PAGES_FIXED_SIZE;
    return 0;
}

/* ---------------------------------------------------------------- REPL_BACKUP_END */

int repl_send_backup_end(struct rd_buf *out, uint64_t epoch, uint64_t consistent_lsn)
{
    uint8_t p[REPL_BACKUP_END_SIZE];
    rd_put_u64le(p, consistent_lsn);
    return frame_append(out, REPL_BACKUP_END, epoch, p, sizeof(p), 0);
}

int repl_parse_backup_end(const uint8_t *p, size_t n, uint64_t *consistent_lsn)
{
    if (n != REPL_BACKUP_END_SIZE)
        return RD_ECORRUPT;
    *consistent_lsn = rd_get_u64le(p);
    return 0;
}

/* ---------------------------------------------------------------- names */

const char *repl_msg_name(uint8_t type)
{
    switch (type) {
    case REPL_HELLO: return "HELLO";
    case REPL_WAL: return "WAL";
    case REPL_KEEPALIVE: return "KEEPALIVE";
    case REPL_STATUS: return "STATUS";
    case REPL_ERROR: return "ERROR";
    case REPL_BACKUP_BEGIN: return "BACKUP_BEGIN";
    case REPL_BACKUP_PAGES: return "BACKUP_PAGES";
    case REPL_BACKUP_END: return "BACKUP_END";
    default: return "UNKNOWN";
    }
}

/* ---------------------------------------------------------------- slots file */

#define SLOTS_MAGIC "RDSLOTS1"
#define SLOTS_HDR 16u
#define SLOTS_ENTRY (REPL_SLOT_NAME_BYTES + 8u)

int repl_slots_encode(struct rd_buf *out, const struct repl_slot_rec *v, size_t n)
{
    rd_assert(n <= REPL_SLOTS_MAX);
    size_t start = out->len, len = SLOTS_HDR + n * SLOTS_ENTRY + 8;
    if (rd_buf_reserve(out, len) < 0)
        return -ENOMEM;
    uint8_t *p = out->data + start;
    memset(p, 0, len);
    memcpy(p, SLOTS_MAGIC, 8);
    rd_put_u32le(p + 8, 1);
    rd_put_u32le(p + 12, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = p + SLOTS_HDR + i * SLOTS_ENTRY;
        size_t nl = strnlen(v[i].name, REPL_SLOT_NAME_BYTES - 1);
        memcpy(e, v[i].name, nl);
        rd_put_u64le(e + REPL_SLOT_NAME_BYTES, v[i].restart_lsn);
    }
    rd_put_u64le(p + len - 8, rd_checksum64(p, len - 8, RD_SEED_SLOTS));
    out->len += len;
    return 0;
}

int repl_slots_decode(const uint8_t *p, size_t len, struct repl_slot_rec *v, size_t cap, size_t *n)
{
    if (len < SLOTS_HDR + 8 || memcmp(p, SLOTS_MAGIC, 8) != 0 || rd_get_u32le(p + 8) != 1)
        return RD_ECORRUPT;
    uint32_t count = rd_get_u32le(p + 12);
    if (count > REPL_SLOTS_MAX || count > cap || len != SLOTS_HDR + (size_t)count * SLOTS_ENTRY + 8)
        return RD_ECORRUPT;
    if (rd_get_u64le(p + len - 8) != rd_checksum64(p, len - 8, RD_SEED_SLOTS))
        return RD_ECORRUPT;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + SLOTS_HDR + (size_t)i * SLOTS_ENTRY;
        if (e[0] == 0 || memchr(e, 0, REPL_SLOT_NAME_BYTES) == NULL)
            return RD_ECORRUPT;
        memcpy(v[i].name, e, REPL_SLOT_NAME_BYTES);
        v[i].restart_lsn = rd_get_u64le(e + REPL_SLOT_NAME_BYTES);
    }
    *n = count;
    return 0;
}

/* ---------------------------------------------------------------- term file */

#define TERM_MAGIC "RDTERM01"
#define TERM_SEED (RD_SEED_SLOTS ^ 0x7465726dull)

void repl_term_encode(uint8_t out[REPL_TERM_FILE_BYTES], uint64_t term)
{
    rd_assert(term <= REPL_TERM_MAX);
    memset(out, 0, REPL_TERM_FILE_BYTES);
    memcpy(out, TERM_MAGIC, 8);
    rd_put_u32le(out + 8, 1);
    rd_put_u64le(out + 16, term);
    rd_put_u64le(out + 24, rd_checksum64(out, 24, TERM_SEED));
}

int repl_term_decode(const uint8_t *p, size_t len, uint64_t *term)
{
    if (len != REPL_TERM_FILE_BYTES || memcmp(p, TERM_MAGIC, 8) != 0 || rd_get_u32le(p + 8) != 1 ||
        !all_zero(p + 12, 4) || rd_get_u64le(p + 24) != rd_checksum64(p, 24, TERM_SEED) ||
        rd_get_u64le(p + 16) > REPL_TERM_MAX)
        return RD_ECORRUPT;
    *term = rd_get_u64le(p + 16);
    return 0;
}

/* ---------------------------------------------------------------- pending entries */

int repl_pending_append(struct rd_buf *out, const struct repl_pending *e)
{
    uint8_t h[REPL_PENDING_HDR_BYTES];
    rd_put_u64le(h, e->end_lsn);
    h[8] = e->type;
    rd_put_u32le(h + 9, e->page_id);
    rd_put_u32le(h + 13, e->body_len);
    if (rd_buf_append(out, h, sizeof(h)) < 0 || rd_buf_append(out, e->body, e->body_len) < 0)
        return -ENOMEM;
    return 0;
}

int repl_pending_read(const uint8_t *p, size_t n, struct repl_pending *e)
{
    if (n < REPL_PENDING_HDR_BYTES)
        return RD_ECORRUPT;
    e->end_lsn = rd_get_u64le(p);
    e->type = p[8];
    e->page_id = rd_get_u32le(p + 9);
    e->body_len = rd_get_u32le(p + 13);
    if (e->body_len > n - REPL_PENDING_HDR_BYTES)
        return RD_ECORRUPT;
    e->body = p + REPL_PENDING_HDR_BYTES;
    return (int)(REPL_PENDING_HDR_BYTES + e->body_len);
}
