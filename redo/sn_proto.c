/*
 * sn_proto.c — encoders and decoders of the storage-node protocol
 * (redo/sn_proto.h has the message table). Decoders check the exact
 * length and that reserved bytes are zero: anything else is RD_ECORRUPT, so a
 * node never acts on a message it did not fully understand.
 */
#include "redo/sn_proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"
#include "engine/engine.h"

#define SN_ACK_SIZE 24u
#define SN_GETPAGE_SIZE 24u
#define SN_PAGE_FIXED_SIZE 24u
#define SN_FETCH_SIZE 32u
#define SN_EPOCH_SIZE 8u
#define SN_STATE_SIZE 40u
#define SN_TRUNCATE_SIZE 16u
#define SN_READPOINT_SIZE 8u
#define SN_ERROR_FIXED_SIZE 8u
#define SN_LOG_FIXED_SIZE 8u
#define SN_GOSSIP_SIZE 32u
#define SN_PAGECOPY_SIZE 16u

_Static_assert(SN_PAGE_FIXED_SIZE + ENGINE_PAGE_SIZE <= FRAME_MAX_PAYLOAD, "a page fits a frame");
_Static_assert(SN_PAGES_ENTRY_SIZE == 8u + ENGINE_PAGE_SIZE, "a PAGES entry holds one page");
_Static_assert(SN_PAGES_FIXED_SIZE + SN_PAGES_MAX * SN_PAGES_ENTRY_SIZE <= FRAME_MAX_PAYLOAD, "PAGES fits a frame");
_Static_assert(SN_ERROR_FIXED_SIZE + SN_ERROR_MAX_TEXT <= 4096u, "error text is short");

int sn_send_ack(struct rd_buf *out, uint64_t epoch, const struct sn_ack *m)
{
    uint8_t p[SN_ACK_SIZE];
    rd_put_u64le(p, m->scl);
    rd_put_u64le(p + 8, m->durable_lsn);
    rd_put_u64le(p + 16, m->epoch);
    return frame_append(out, SN_MSG_ACK, epoch, p, sizeof(p), 0);
}

int sn_parse_ack(const uint8_t *p, size_t n, struct sn_ack *m)
{
    if (n != SN_ACK_SIZE)
        return RD_ECORRUPT;
    m->scl = rd_get_u64le(p);
    m->durable_lsn = rd_get_u64le(p + 8);
    m->epoch = rd_get_u64le(p + 16);
    return 0;
}

int sn_send_getpage(struct rd_buf *out, uint64_t epoch, const struct sn_getpage *m)
{
    uint8_t p[SN_GETPAGE_SIZE] = {0};
    rd_put_u64le(p, m->req_id);
    rd_put_u32le(p + 8, m->page_id);
    rd_put_u64le(p + 16, m->read_lsn);
    return frame_append(out, SN_MSG_GETPAGE, epoch, p, sizeof(p), 0);
}

int sn_parse_getpage(const uint8_t *p, size_t n, struct sn_getpage *m)
{
    if (n != SN_GETPAGE_SIZE || rd_get_u32le(p + 12) != 0)
        return RD_ECORRUPT;
    m->req_id = rd_get_u64le(p);
    m->page_id = rd_get_u32le(p + 8);
    m->read_lsn = rd_get_u64le(p + 16);
    return 0;
}

int sn_send_page(struct rd_buf *out, uint64_t epoch, const struct sn_page *m)
{
    /* status 0 carries a page; an error status carries none. */
    rd_assert((m->status == SN_OK) == (m->page != NULL));
    size_t len = SN_PAGE_FIXED_SIZE + (m->page ? ENGINE_PAGE_SIZE : 0);
    uint8_t *p = calloc(1, len);
    if (p == NULL)
        return -ENOMEM;
    rd_put_u64le(p, m->req_id);
    rd_put_u32le(p + 8, m->status);
    rd_put_u64le(p + 16, m->page_lsn);
    if (m->page)
        memcpy(p + SN_PAGE_FIXED_SIZE, m->page, ENGINE_PAGE_SIZE);
    int rc = frame_append(out, SN_MSG_PAGE, epoch, p, len, 0);
    free(p);
    return rc;
}

int sn_parse_page(const uint8_t *p, size_t n, struct sn_page *m)
{
    if (n < SN_PAGE_FIXED_SIZE || rd_get_u32le(p + 12) != 0)
        return RD_ECORRUPT;
    uint32_t status = rd_get_u32le(p + 8);
    size_t want = SN_PAGE_FIXED_SIZE + (status == SN_OK ? ENGINE_PAGE_SIZE : 0);
    if (n != want || status > SN_ERR_PROTO)
        return RD_ECORRUPT;
    m->req_id = rd_get_u64le(p);
    m->status = status;
    m->page_lsn = rd_get_u64le(p + 16);
    m->page = status == SN_OK ? p + SN_PAGE_FIXED_SIZE : NULL;
    return 0;
}

int sn_send_fetch(struct rd_buf *out, uint64_t epoch, const struct sn_fetch *m)
{
    uint8_t p[SN_FETCH_SIZE] = {0};
    rd_put_u64le(p, m->req_id);
    rd_put_u64le(p + 8, m->from_lsn);
    rd_put_u64le(p + 16, m->to_lsn);
    rd_put_u32le(p + 24, m->max_bytes);
    return frame_append(out, SN_MSG_FETCH, epoch, p, sizeof(p), 0);
}

int sn_parse_fetch(const uint8_t *p, size_t n, struct sn_fetch *m)
{
    if (n != SN_FETCH_SIZE || rd_get_u32le(p + 28) != 0)
        return RD_ECORRUPT;
    m->req_id = rd_get_u64le(p);
    m->from_lsn = rd_get_u64le(p + 8);
    m->to_lsn = rd_get_u64le(p + 16);
    m->max_bytes = rd_get_u32le(p + 24);
    if (m->from_lsn == 0 || m->to_lsn < m->from_lsn)
        return RD_ECORRUPT;
    return 0;
}

int sn_send_epoch(struct rd_buf *out, uint64_t epoch, uint64_t new_epoch)
{
    uint8_t p[SN_EPOCH_SIZE];
    rd_put_u64le(p, new_epoch);
    return frame_append(out, SN_MSG_EPOCH, epoch, p, sizeof(p), 0);
}

int sn_parse_epoch(const uint8_t *p, size_t n, uint64_t *new_epoch)
{
    if (n != SN_EPOCH_SIZE)
        return RD_ECORRUPT;
    *new_epoch = rd_get_u64le(p);
    return 0;
}

int sn_send_state(struct rd_buf *out, uint64_t epoch, const struct sn_state *m)
{
    uint8_t p[SN_STATE_SIZE];
    rd_put_u64le(p, m->epoch);
    rd_put_u64le(p + 8, m->scl);
    rd_put_u64le(p + 16, m->max_cpl);
    rd_put_u64le(p + 24, m->max_lsn);
    rd_put_u64le(p + 32, m->truncated_above);
    return frame_append(out, SN_MSG_STATE, epoch, p, sizeof(p), 0);
}

int sn_parse_state(const uint8_t *p, size_t n, struct sn_state *m)
{
    if (n != SN_STATE_SIZE)
        return RD_ECORRUPT;
    m->epoch = rd_get_u64le(p);
    m->scl = rd_get_u64le(p + 8);
    m->max_cpl = rd_get_u64le(p + 16);
    m->max_lsn = rd_get_u64le(p + 24);
    m->truncated_above = rd_get_u64le(p + 32);
    return 0;
}

int sn_send_truncate(struct rd_buf *out, uint64_t epoch, const struct sn_truncate *m)
{
    uint8_t p[SN_TRUNCATE_SIZE];
    rd_put_u64le(p, m->epoch);
    rd_put_u64le(p + 8, m->keep_upto_lsn);
    return frame_append(out, SN_MSG_TRUNCATE, epoch, p, sizeof(p), 0);
}

int sn_parse_truncate(const uint8_t *p, size_t n, struct sn_truncate *m)
{
    if (n != SN_TRUNCATE_SIZE)
        return RD_ECORRUPT;
    m->epoch = rd_get_u64le(p);
    m->keep_upto_lsn = rd_get_u64le(p + 8);
    return 0;
}

int sn_send_readpoint(struct rd_buf *out, uint64_t epoch, uint64_t min_read_lsn)
{
    uint8_t p[SN_READPOINT_SIZE];
    rd_put_u64le(p, min_read_lsn);
    return frame_append(out, SN_MSG_READPOINT, epoch, p, sizeof(p), 0);
}

int sn_parse_readpoint(const uint8_t *p, size_t n, uint64_t *min_read_lsn)
{
    if (n != SN_READPOINT_SIZE)
        return RD_ECORRUPT;
    *min_read_lsn = rd_get_u64le(p);
    return 0;
}

int sn_send_error(struct rd_buf *out, uint64_t epoch, uint32_t code, const char *text)
{
    rd_assert(text != NULL);
    size_t k = strnlen(text, SN_ERROR_MAX_TEXT);
    uint8_t p[SN_ERROR_FIXED_SIZE + SN_ERROR_MAX_TEXT];
    rd_put_u32le(p, code);
    rd_put_u32le(p + 4, 0);
    memcpy(p + SN_ERROR_FIXED_SIZE, text, k);
    return frame_append(out, SN_MSG_ERROR, epoch, p, SN_ERROR_FIXED_SIZE + k, 0);
}

int sn_parse_error(const uint8_t *p, size_t n, uint32_t *code, char *text, size_t text_cap)
{
    rd_assert(text != NULL && text_cap > 0);
    text[0] = '\0';
    if (n < SN_ERROR_FIXED_SIZE || n > SN_ERROR_FIXED_SIZE + SN_ERROR_MAX_TEXT ||
        rd_get_u32le(p + 4) != 0)
        return RD_ECORRUPT;
    *code = rd_get_u32le(p);
    size_t k = RD_MIN(n - SN_ERROR_FIXED_SIZE, text_cap - 1);
    /* The text goes into logs: printable ASCII, one line. */
    for (size_t i = 0; i < k; i++) {
        uint8_t ch = p[SN_ERROR_FIXED_SIZE + i];
        text[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    text[k] = '\0';
    return 0;
}

int sn_send_log(struct rd_buf *out, uint64_t epoch, uint64_t req_id, const uint8_t *batch, size_t batch_len)
{
    rd_assert(batch != NULL || batch_len == 0);
    uint8_t *p = malloc(SN_LOG_FIXED_SIZE + batch_len);
    if (p == NULL)
        return -ENOMEM;
    rd_put_u64le(p, req_id);
    if (batch_len)
        memcpy(p + SN_LOG_FIXED_SIZE, batch, batch_len);
    int rc = frame_append(out, SN_MSG_LOG, epoch, p, SN_LOG_FIXED_SIZE + batch_len, 1);
    free(p);
    return rc;
}

int sn_parse_log(const uint8_t *p, size_t n, uint64_t *req_id, const uint8_t **batch, size_t *batch_len)
{
    if (n < SN_LOG_FIXED_SIZE)
        return RD_ECORRUPT;
    *req_id = rd_get_u64le(p);
    *batch = p + SN_LOG_FIXED_SIZE;
    *batch_len = n - SN_LOG_FIXED_SIZE;
    return 0;
}

int sn_send_gossip(struct rd_buf *out, uint64_t epoch, const struct sn_gossip *m)
{
    rd_assert(m->kind <= SN_GOSSIP_ANSWER);
    uint8_t p[SN_GOSSIP_SIZE];
    rd_put_u32le(p, m->node_id);
    rd_put_u32le(p + 4, m->kind);
    rd_put_u64le(p + 8, m->scl);
    rd_put_u64le(p + 16, m->coalesced_lsn);
    rd_put_u64le(p + 24, m->trimmed_lsn);
    return frame_append(out, SN_MSG_GOSSIP, epoch, p, sizeof(p), 0);
}

int sn_parse_gossip(const uint8_t *p, size_t n, struct sn_gossip *m)
{
    if (n != SN_GOSSIP_SIZE || rd_get_u32le(p + 4) > SN_GOSSIP_ANSWER)
        return RD_ECORRUPT;
    m->node_id = rd_get_u32le(p);
    m->kind = rd_get_u32le(p + 4);
    m->scl = rd_get_u64le(p + 8);
    m->coalesced_lsn = rd_get_u64le(p + 16);
    m->trimmed_lsn = rd_get_u64le(p + 24);
    return 0;
}

int sn_send_pagecopy(struct rd_buf *out, uint64_t epoch, const struct sn_pagecopy *m)
{
    rd_assert(m->max_pages >= 1 && m->max_pages <= SN_PAGES_MAX);
    uint8_t p[SN_PAGECOPY_SIZE];
    rd_put_u64le(p, m->req_id);
    rd_put_u32le(p + 8, m->from_page_id);
    rd_put_u32le(p + 12, m->max_pages);
    return frame_append(out, SN_MSG_PAGECOPY, epoch, p, sizeof(p), 0);
}

int sn_parse_pagecopy(const uint8_t *p, size_t n, struct sn_pagecopy *m)
{
    if (n != SN_PAGECOPY_SIZE)
        return RD_ECORRUPT;
    m->req_id = rd_get_u64le(p);
    m->from_page_id = rd_get_u32le(p + 8);
    m->max_pages = rd_get_u32le(p + 12);
    if (m->max_pages == 0 || m->max_pages > SN_PAGES_MAX)
        return RD_ECORRUPT;
    return 0;
}

void sn_pages_put(uint8_t *entries, uint32_t i, uint32_t page_id, const uint8_t *page)
{
    rd_assert(i < SN_PAGES_MAX && page != NULL);
    uint8_t *e = entries + (size_t)i * SN_PAGES_ENTRY_SIZE;
    rd_put_u32le(e, page_id);
    rd_put_u32le(e + 4, 0);
    memcpy(e + 8, page, ENGINE_PAGE_SIZE);
}

uint32_t sn_pages_id(const struct sn_pages *m, uint32_t i)
{
    rd_assert(i < m->npages);
    return rd_get_u32le(m->entries + (size_t)i * SN_PAGES_ENTRY_SIZE);
}

const uint8_t *sn_pages_image(const struct sn_pages *m, uint32_t i)
{
    rd_assert(i < m->npages);
    return m->entries + (size_t)i * SN_PAGES_ENTRY_SIZE + 8;
}

int sn_send_pages(struct rd_buf *out, uint64_t epoch, const struct sn_pages *m)
{
    rd_assert(m->npages <= SN_PAGES_MAX && (m->entries != NULL || m->npages == 0));
    size_t len = SN_PAGES_FIXED_SIZE + (size_t)m->npages * SN_PAGES_ENTRY_SIZE;
    uint8_t *p = malloc(len);
    if (p == NULL)
        return -ENOMEM;
    rd_put_u64le(p, m->req_id);
    rd_put_u64le(p + 8, m->coalesced_lsn);
    rd_put_u64le(p + 16, m->coalesced_cpl);
    rd_put_u32le(p + 24, m->next_page_id);
    rd_put_u32le(p + 28, m->npages);
    if (m->npages)
        memcpy(p + SN_PAGES_FIXED_SIZE, m->entries, len - SN_PAGES_FIXED_SIZE);
    int rc = frame_append(out, SN_MSG_PAGES, epoch, p, len, 1);
    free(p);
    return rc;
}

/* Exact length, npages <= SN_PAGES_MAX, cpl <= coalesced, reserved words
 * zero, page ids strictly ascending and below next_page_id. The page images
 * themselves are checked by the receiver (engine_page_verify). */
int sn_parse_pages(const uint8_t *p, size_t n, struct sn_pages *m)
{
    if (n < SN_PAGES_FIXED_SIZE)
        return RD_ECORRUPT;
    m->req_id = rd_get_u64le(p);
    m->coalesced_lsn = rd_get_u64le(p + 8);
    m->coalesced_cpl = rd_get_u64le(p + 16);
    m->next_page_id = rd_get_u32le(p + 24);
    m->npages = rd_get_u32le(p + 28);
    m->entries = p + SN_PAGES_FIXED_SIZE;
    if (m->npages > SN_PAGES_MAX || n != SN_PAGES_FIXED_SIZE + (size_t)m->npages * SN_PAGES_ENTRY_SIZE ||
        m->coalesced_cpl > m->coalesced_lsn)
        return RD_ECORRUPT;
    for (uint32_t i = 0; i < m->npages; i++) {
        const uint8_t *e = m->entries + (size_t)i * SN_PAGES_ENTRY_SIZE;
        uint32_t id = rd_get_u32le(e);
        if (rd_get_u32le(e + 4) != 0 || id >= m->next_page_id || (i > 0 && id <= sn_pages_id(m, i - 1)))
            return RD_ECORRUPT;
    }
    return 0;
}

const char *sn_msg_name(uint8_t type)
{
    switch (type) {
    case SN_MSG_WRITE: return "WRITE";
    case SN_MSG_ACK: return "ACK";
    case SN_MSG_GETPAGE: return "GETPAGE";
    case SN_MSG_PAGE: return "PAGE";
    case SN_MSG_FETCH: return "FETCH";
    case SN_MSG_LOG: return "LOG";
    case SN_MSG_EPOCH: return "EPOCH";
    case SN_MSG_STATE: return "STATE";
    case SN_MSG_TRUNCATE: return "TRUNCATE";
    case SN_MSG_READPOINT: return "READPOINT";
    case SN_MSG_ERROR: return "ERROR";
    case SN_MSG_GOSSIP: return "GOSSIP";
    case SN_MSG_PAGECOPY: return "PAGECOPY";
    case SN_MSG_PAGES: return "PAGES";
    default: return "UNKNOWN";
    }
}
