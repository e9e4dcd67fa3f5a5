/* Unit tests for storage-node/sn_proto.c: every message round trips through a
 * real frame; decoders refuse wrong lengths and non-zero reserved bytes. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"
#include "engine/engine.h"
#include "redo/sn_proto.h"

struct rx {
    struct rd_buf scratch;
    struct frame_hdr h;
    const uint8_t *p;
    size_t n;
};

static void rx_frame(struct rd_buf *out, struct rx *rx, uint8_t type, uint64_t epoch)
{
    const char *why = NULL;
    int rc = frame_decode(out->data, out->len, &rx->h, &rx->scratch, &rx->p, &rx->n, &why);
    cr_assert_eq(rc, (int)out->len, "frame_decode: %d %s", rc, why ? why : "");
    cr_assert_eq(rx->h.type, type, "type %s", sn_msg_name(rx->h.type));
    cr_assert_eq(rx->h.epoch, epoch);
}

typedef int (*parse_fn)(const uint8_t *p, size_t n, void *m);

static void wrong_lengths_rejected(const uint8_t *good, size_t good_len, parse_fn parse, void *m)
{
    uint8_t buf[64] = {0};
    cr_assert_leq(good_len + 16, sizeof(buf));
    memcpy(buf, good, good_len);
    for (size_t n = 0; n < good_len + 16; n++) {
        if (n == good_len)
            continue;
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees reads past n */
        memcpy(copy, buf, n);
        cr_assert_eq(parse(copy, n, m), RD_ECORRUPT, "length %zu accepted (right is %zu)", n, good_len);
        free(copy);
    }
    cr_assert_eq(parse(buf, good_len, m), 0);
}

static int p_ack(const uint8_t *p, size_t n, void *m) { return sn_parse_ack(p, n, m); }
static int p_getpage(const uint8_t *p, size_t n, void *m) { return sn_parse_getpage(p, n, m); }
static int p_fetch(const uint8_t *p, size_t n, void *m) { return sn_parse_fetch(p, n, m); }
static int p_epoch(const uint8_t *p, size_t n, void *m) { return sn_parse_epoch(p, n, m); }
static int p_state(const uint8_t *p, size_t n, void *m) { return sn_parse_state(p, n, m); }
static int p_trunc(const uint8_t *p, size_t n, void *m) { return sn_parse_truncate(p, n, m); }
static int p_rp(const uint8_t *p, size_t n, void *m) { return sn_parse_readpoint(p, n, m); }

Test(sn_proto, ack_round_trips_and_rejects_wrong_lengths)
{
    struct rd_buf out = {0};
    struct sn_ack a = {.scl = 41, .durable_lsn = 99, .epoch = 7}, b;
    cr_assert_eq(sn_send_ack(&out, 7, &a), 0);
    struct rx rx = {0};
    rx_frame(&out, &rx, SN_MSG_ACK, 7);
    cr_assert_eq(sn_parse_ack(rx.p, rx.n, &b), 0);
    cr_assert(b.scl == 41 && b.durable_lsn == 99 && b.epoch == 7);
    wrong_lengths_rejected(rx.p, rx.n, p_ack, &b);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, getpage_round_trips_and_rejects_reserved_bytes)
{
    struct rd_buf out = {0};
    struct sn_getpage g = {.req_id = 5, .page_id = 12345, .read_lsn = 1ull << 40}, h;
    cr_assert_eq(sn_send_getpage(&out, 3, &g), 0);
    struct rx rx = {0};
    rx_frame(&out, &rx, SN_MSG_GETPAGE, 3);
    cr_assert_eq(sn_parse_getpage(rx.p, rx.n, &h), 0);
    cr_assert(h.req_id == 5 && h.page_id == 12345 && h.read_lsn == 1ull << 40);
    wrong_lengths_rejected(rx.p, rx.n, p_getpage, &h);
    uint8_t bad[24];
    memcpy(bad, rx.p, 24);
    bad[13] = 1;
    cr_assert_eq(sn_parse_getpage(bad, 24, &h), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, page_round_trips_with_and_without_a_page)
{
    uint8_t *page = malloc(ENGINE_PAGE_SIZE);
    for (size_t i = 0; i < ENGINE_PAGE_SIZE; i++)
        page[i] = (uint8_t)(i * 13);
    struct rd_buf out = {0};
    struct sn_page a = {.req_id = 9, .status = SN_OK, .page_lsn = 77, .page = page}, b;
    cr_assert_eq(sn_send_page(&out, 1, &a), 0);
    struct rx rx = {0};
    rx_frame(&out, &rx, SN_MSG_PAGE, 1);
    cr_assert_eq(sn_parse_page(rx.p, rx.n, &b), 0);
    cr_assert(b.req_id == 9 && b.status == SN_OK && b.page_lsn == 77);
    cr_assert_eq(memcmp(b.page, page, ENGINE_PAGE_SIZE), 0);
    cr_assert_eq(sn_parse_page(rx.p, rx.n - 1, &b), RD_ECORRUPT);
    cr_assert_eq(sn_parse_page(rx.p, 24, &b), RD_ECORRUPT); /* ok status needs the page */
    rd_buf_reset(&out);
    struct sn_page e = {.req_id = 10, .status = SN_ERR_NOT_YET};
    cr_assert_eq(sn_send_page(&out, 1, &e), 0);
    rx_frame(&out, &rx, SN_MSG_PAGE, 1);
    cr_assert_eq(rx.n, 24);
    cr_assert_eq(sn_parse_page(rx.p, rx.n, &b), 0);
    cr_assert(b.status == SN_ERR_NOT_YET && b.page == NULL);
    free(page);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, fetch_round_trips_and_rejects_empty_ranges)
{
    struct rd_buf out = {0};
    struct sn_fetch f = {.req_id = 1, .from_lsn = 10, .to_lsn = UINT64_MAX, .max_bytes = 1 << 20}, g;
    cr_assert_eq(sn_send_fetch(&out, 2, &f), 0);
    struct rx rx = {0};
    rx_frame(&out, &rx, SN_MSG_FETCH, 2);
    cr_assert_eq(sn_parse_fetch(rx.p, rx.n, &g), 0);
    cr_assert(g.from_lsn == 10 && g.to_lsn == UINT64_MAX && g.max_bytes == 1u << 20);
    wrong_lengths_rejected(rx.p, rx.n, p_fetch, &g);
    uint8_t bad[32];
    memcpy(bad, rx.p, 32);
    rd_put_u64le(bad + 16, 9); /* to < from */
    cr_assert_eq(sn_parse_fetch(bad, 32, &g), RD_ECORRUPT);
    rd_put_u64le(bad + 8, 0); /* from 0 */
    cr_assert_eq(sn_parse_fetch(bad, 32, &g), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, epoch_state_truncate_readpoint_round_trip)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    uint64_t v = 0;
    cr_assert_eq(sn_send_epoch(&out, 4, 5), 0);
    rx_frame(&out, &rx, SN_MSG_EPOCH, 4);
    cr_assert_eq(sn_parse_epoch(rx.p, rx.n, &v), 0);
    cr_assert_eq(v, 5);
    wrong_lengths_rejected(rx.p, rx.n, p_epoch, &v);
    rd_buf_reset(&out);
    struct sn_state s = {6, 100, 95, 120, 90}, t;
    cr_assert_eq(sn_send_state(&out, 6, &s), 0);
    rx_frame(&out, &rx, SN_MSG_STATE, 6);
    cr_assert_eq(sn_parse_state(rx.p, rx.n, &t), 0);
    cr_assert(t.epoch == 6 && t.scl == 100 && t.max_cpl == 95 && t.max_lsn == 120 && t.truncated_above == 90);
    wrong_lengths_rejected(rx.p, rx.n, p_state, &t);
    rd_buf_reset(&out);
    struct sn_truncate tr = {7, 300}, tr2;
    cr_assert_eq(sn_send_truncate(&out, 7, &tr), 0);
    rx_frame(&out, &rx, SN_MSG_TRUNCATE, 7);
    cr_assert_eq(sn_parse_truncate(rx.p, rx.n, &tr2), 0);
    cr_assert(tr2.epoch == 7 && tr2.keep_upto_lsn == 300);
    wrong_lengths_rejected(rx.p, rx.n, p_trunc, &tr2);
    rd_buf_reset(&out);
    cr_assert_eq(sn_send_readpoint(&out, 7, 250), 0);
    rx_frame(&out, &rx, SN_MSG_READPOINT, 7);
    cr_assert_eq(sn_parse_readpoint(rx.p, rx.n, &v), 0);
    cr_assert_eq(v, 250);
    wrong_lengths_rejected(rx.p, rx.n, p_rp, &v);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, error_text_is_bounded_and_sanitised)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    cr_assert_eq(sn_send_error(&out, 1, SN_ERR_STALE_EPOCH, "stale\nepoch"), 0);
    rx_frame(&out, &rx, SN_MSG_ERROR, 1);
    uint32_t code = 0;
    char text[64];
    cr_assert_eq(sn_parse_error(rx.p, rx.n, &code, text, sizeof(text)), 0);
    cr_assert_eq(code, SN_ERR_STALE_EPOCH);
    cr_assert_str_eq(text, "stale?epoch");
    cr_assert_eq(sn_parse_error(rx.p, 7, &code, text, sizeof(text)), RD_ECORRUPT);
    uint8_t big[8 + SN_ERROR_MAX_TEXT + 1] = {0};
    cr_assert_eq(sn_parse_error(big, sizeof(big), &code, text, sizeof(text)), RD_ECORRUPT);
    char *longtext = malloc(4000);
    memset(longtext, 'x', 3999);
    longtext[3999] = 0;
    rd_buf_reset(&out);
    cr_assert_eq(sn_send_error(&out, 1, SN_ERR_PROTO, longtext), 0);
    rx_frame(&out, &rx, SN_MSG_ERROR, 1);
    cr_assert_eq(rx.n, 8 + SN_ERROR_MAX_TEXT);
    free(longtext);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, log_round_trips_its_batch)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    uint8_t batch[100];
    for (int i = 0; i < 100; i++)
        batch[i] = (uint8_t)i;
    cr_assert_eq(sn_send_log(&out, 3, 42, batch, sizeof(batch)), 0);
    rx_frame(&out, &rx, SN_MSG_LOG, 3);
    uint64_t req = 0;
    const uint8_t *b;
    size_t bl;
    cr_assert_eq(sn_parse_log(rx.p, rx.n, &req, &b, &bl), 0);
    cr_assert(req == 42 && bl == 100 && memcmp(b, batch, 100) == 0);
    cr_assert_eq(sn_parse_log(rx.p, 7, &req, &b, &bl), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

static int p_gossip(const uint8_t *p, size_t n, void *m) { return sn_parse_gossip(p, n, m); }
static int p_pagecopy(const uint8_t *p, size_t n, void *m) { return sn_parse_pagecopy(p, n, m); }

Test(sn_proto, gossip_round_trips_and_rejects_unknown_kinds)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct sn_gossip g = {.node_id = 3, .kind = SN_GOSSIP_ANSWER, .scl = 900, .coalesced_lsn = 800,
                          .trimmed_lsn = 700}, h;
    cr_assert_eq(sn_send_gossip(&out, 9, &g), 0);
    rx_frame(&out, &rx, SN_MSG_GOSSIP, 9);
    cr_assert_eq(sn_parse_gossip(rx.p, rx.n, &h), 0);
    cr_assert(h.node_id == 3 && h.kind == SN_GOSSIP_ANSWER && h.scl == 900 && h.coalesced_lsn == 800 &&
              h.trimmed_lsn == 700);
    wrong_lengths_rejected(rx.p, rx.n, p_gossip, &h);
    uint8_t bad[32];
    memcpy(bad, rx.p, sizeof(bad));
    rd_put_u32le(bad + 4, 2);
    cr_assert_eq(sn_parse_gossip(bad, sizeof(bad), &h), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, pagecopy_round_trips_and_bounds_max_pages)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct sn_pagecopy pc = {.req_id = 11, .from_page_id = 4096, .max_pages = SN_PAGES_MAX}, q;
    cr_assert_eq(sn_send_pagecopy(&out, 2, &pc), 0);
    rx_frame(&out, &rx, SN_MSG_PAGECOPY, 2);
    cr_assert_eq(sn_parse_pagecopy(rx.p, rx.n, &q), 0);
    cr_assert(q.req_id == 11 && q.from_page_id == 4096 && q.max_pages == SN_PAGES_MAX);
    wrong_lengths_rejected(rx.p, rx.n, p_pagecopy, &q);
    uint8_t bad[16];
    memcpy(bad, rx.p, sizeof(bad));
    rd_put_u32le(bad + 12, 0);
    cr_assert_eq(sn_parse_pagecopy(bad, sizeof(bad), &q), RD_ECORRUPT);
    rd_put_u32le(bad + 12, SN_PAGES_MAX + 1);
    cr_assert_eq(sn_parse_pagecopy(bad, sizeof(bad), &q), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(sn_proto, pages_round_trip_and_reject_bad_order_lengths_and_reserved)
{
    uint8_t *entries = calloc(3, SN_PAGES_ENTRY_SIZE);
    uint8_t page[ENGINE_PAGE_SIZE];
    for (uint32_t i = 0; i < 3; i++) {
        memset(page, (int)(0x10 + i), sizeof(page));
        sn_pages_put(entries, i, 5 + i * 7, page);
    }
    struct sn_pages m = {.req_id = 8, .coalesced_lsn = 500, .coalesced_cpl = 490, .next_page_id = 100,
                         .npages = 3, .entries = entries}, q;
    struct rd_buf out = {0};
    struct rx rx = {0};
    cr_assert_eq(sn_send_pages(&out, 4, &m), 0);
    rx_frame(&out, &rx, SN_MSG_PAGES, 4);
    cr_assert_eq(sn_parse_pages(rx.p, rx.n, &q), 0);
    cr_assert(q.req_id == 8 && q.coalesced_lsn == 500 && q.coalesced_cpl == 490 && q.next_page_id == 100 &&
              q.npages == 3);
    for (uint32_t i = 0; i < 3; i++) {
        cr_assert_eq(sn_pages_id(&q, i), 5 + i * 7);
        cr_assert_eq(sn_pages_image(&q, i)[100], 0x10 + i);
    }
    size_t n = rx.n;
    uint8_t *bad = malloc(n);
    memcpy(bad, rx.p, n);
    cr_assert_eq(sn_parse_pages(bad, n - 1, &q), RD_ECORRUPT);           /* length */
    cr_assert_eq(sn_parse_pages(bad, 31, &q), RD_ECORRUPT);
    rd_put_u32le(bad + 32 + SN_PAGES_ENTRY_SIZE, 5);                      /* ids not ascending */
    cr_assert_eq(sn_parse_pages(bad, n, &q), RD_ECORRUPT);
    memcpy(bad, rx.p, n);
    rd_put_u32le(bad + 24, 19);                                            /* an id at or past next */
    cr_assert_eq(sn_parse_pages(bad, n, &q), RD_ECORRUPT);
    memcpy(bad, rx.p, n);
    rd_put_u32le(bad + 32 + 4, 1);                                         /* reserved word */
    cr_assert_eq(sn_parse_pages(bad, n, &q), RD_ECORRUPT);
    memcpy(bad, rx.p, n);
    rd_put_u64le(bad + 16, 501);                                           /* cpl above coalesced */
    cr_assert_eq(sn_parse_pages(bad, n, &q), RD_ECORRUPT);
    memcpy(bad, rx.p, n);
    rd_put_u32le(bad + 28, SN_PAGES_MAX + 1);                              /* too many pages */
    cr_assert_eq(sn_parse_pages(bad, n, &q), RD_ECORRUPT);
    free(bad);
    /* An empty last answer. */
    rd_buf_reset(&out);
    struct sn_pages e = {.req_id = 9, .coalesced_lsn = 7, .next_page_id = SN_PAGES_DONE};
    cr_assert_eq(sn_send_pages(&out, 4, &e), 0);
    rx_frame(&out, &rx, SN_MSG_PAGES, 4);
    cr_assert_eq(sn_parse_pages(rx.p, rx.n, &q), 0);
    cr_assert(q.npages == 0 && q.next_page_id == SN_PAGES_DONE);
    free(entries);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}
