/* Unit tests for replica/proto.c: every message round trips through a real
 * frame, decoders refuse wrong lengths and non-zero reserved bytes, and the
 * error text is sanitised. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/util.h"
#include "replica/proto.h"

#define PAGE 8192u

struct rx {
    struct rd_buf scratch;
    struct frame_hdr h;
    const uint8_t *p;
    size_t n;
};

/* Decodes the single frame in out and checks it fills out exactly. */
static void rx_frame(struct rd_buf *out, struct rx *rx, uint8_t want_type, uint64_t want_epoch)
{
    const char *why = NULL;
    int rc = frame_decode(out->data, out->len, &rx->h, &rx->scratch, &rx->p, &rx->n, &why);
    cr_assert_eq(rc, (int)out->len, "frame_decode: %d %s", rc, why ? why : "");
    cr_assert_eq(rx->h.type, want_type, "type %s", repl_msg_name(rx->h.type));
    cr_assert_eq(rx->h.epoch, want_epoch);
}

/* Every length other than the right one (a window around it) is refused. */
typedef int (*parse_fn)(const uint8_t *p, size_t n, void *m);

static void wrong_lengths_rejected(const uint8_t *good, size_t good_len, parse_fn parse, void *m)
{
    uint8_t buf[256] = {0};
    cr_assert_leq(good_len + 16, sizeof(buf));
    memcpy(buf, good, good_len);
    for (size_t n = 0; n < good_len + 16; n++) {
        if (n == good_len)
            continue;
        /* An exact-size copy so ASan sees any read past n. */
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        cr_assert_eq(parse(copy, n, m), RD_ECORRUPT, "length %zu accepted (right is %zu)", n,
                     good_len);
        free(copy);
    }
    cr_assert_eq(parse(buf, good_len, m), 0);
}

static int parse_hello_v(const uint8_t *p, size_t n, void *m) { return repl_parse_hello(p, n, m); }
static int parse_keepalive_v(const uint8_t *p, size_t n, void *m) { return repl_parse_keepalive(p, n, m); }
static int parse_status_v(const uint8_t *p, size_t n, void *m) { return repl_parse_status(p, n, m); }
static int parse_begin_v(const uint8_t *p, size_t n, void *m) { return repl_parse_backup_begin(p, n, m); }
static int parse_end_v(const uint8_t *p, size_t n, void *m) { return repl_parse_backup_end(p, n, m); }

static void reserved_rejected(const uint8_t *good, size_t len, const size_t *offs, size_t noffs,
                              parse_fn parse, void *m)
{
    uint8_t buf[64];
    for (size_t i = 0; i < noffs; i++) {
        memcpy(buf, good, len);
        buf[offs[i]] = 1;
        cr_assert_eq(parse(buf, len, m), RD_ECORRUPT, "non-zero byte %zu accepted", offs[i]);
    }
}

Test(repl_proto, hello_round_trips_and_zeroes_reserved_fields)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct repl_hello m = {.system_id = 0xA1B2C3D4E5F60718ull, .timeline = 3, .term = 0x81, .start_lsn = 4096,
                           .primary_flush_lsn = 8192, .switch_lsn = 1000, .prev_timeline = 2};
    cr_assert_eq(repl_send_hello(&out, 3, &m), 0);
    rx_frame(&out, &rx, REPL_HELLO, 3);
    cr_assert_eq(rx.n, 48);
    cr_assert_eq(rd_get_u32le(rx.p + 12), 0x81, "the term is the u32 at offset 12");
    for (size_t off = 44; off < 48; off++)
        cr_assert_eq(rx.p[off], 0);
    struct repl_hello g;
    memset(&g, 0xEE, sizeof(g));
    cr_assert_eq(repl_parse_hello(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.system_id, m.system_id);
    cr_assert_eq(g.timeline, 3);
    cr_assert_eq(g.start_lsn, 4096);
    cr_assert_eq(g.primary_flush_lsn, 8192);
    cr_assert_eq(g.switch_lsn, 1000);
    cr_assert_eq(g.prev_timeline, 2);
    cr_assert_eq(g.term, 0x81);
    wrong_lengths_rejected(rx.p, rx.n, parse_hello_v, &g);
    size_t res[] = {44, 45, 46, 47};
    reserved_rejected(rx.p, rx.n, res, RD_ARRAY_LEN(res), parse_hello_v, &g);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, wal_round_trips_records_compressed_and_not)
{
    uint8_t records[6000];
    for (size_t i = 0; i < sizeof(records); i++)
        records[i] = (uint8_t)(i % 13);
    for (int compress = 0; compress <= 1; compress++) {
        struct rd_buf out = {0};
        struct rx rx = {0};
        struct repl_wal m = {.start_lsn = 100, .end_lsn = 6100, .primary_flush_lsn = 6100,
                             .send_time_us = 1700000000000000ull, .records = records,
                             .records_len = sizeof(records)};
        cr_assert_eq(repl_send_wal(&out, 5, &m, compress), 0);
        rx_frame(&out, &rx, REPL_WAL, 5);
        cr_assert_eq(!!(rx.h.flags & FRAME_FLAG_LZ4), compress);
        cr_assert_eq(rx.n, 32 + sizeof(records));
        struct repl_wal g;
        cr_assert_eq(repl_parse_wal(rx.p, rx.n, &g), 0);
        cr_assert_eq(g.start_lsn, 100);
        cr_assert_eq(g.end_lsn, 6100);
        cr_assert_eq(g.primary_flush_lsn, 6100);
        cr_assert_eq(g.send_time_us, 1700000000000000ull);
        cr_assert_eq(g.records, rx.p + 32);
        cr_assert_eq(g.records_len, sizeof(records));
        cr_assert(memcmp(g.records, records, sizeof(records)) == 0);
        rd_buf_free(&out);
        rd_buf_free(&rx.scratch);
    }
}

Test(repl_proto, wal_with_no_records_round_trips_and_short_or_backwards_is_rejected)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct repl_wal m = {.start_lsn = 7, .end_lsn = 7, .primary_flush_lsn = 9, .send_time_us = 1};
    cr_assert_eq(repl_send_wal(&out, 1, &m, 1), 0);
    rx_frame(&out, &rx, REPL_WAL, 1);
    struct repl_wal g;
    cr_assert_eq(repl_parse_wal(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.records_len, 0);
    for (size_t n = 0; n < 32; n++)
        cr_assert_eq(repl_parse_wal(rx.p, n, &g), RD_ECORRUPT, "length %zu", n);
    uint8_t back[32];
    memcpy(back, rx.p, 32);
    rd_put_u64le(back, 8); /* start 8 > end 7 */
    cr_assert_eq(repl_parse_wal(back, 32, &g), RD_ECORRUPT);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, wal_larger_than_a_frame_is_too_big)
{
    struct rd_buf out = {0};
    size_t n = FRAME_MAX_PAYLOAD - 32 + 1;
    uint8_t *records = calloc(1, n);
    struct repl_wal m = {.start_lsn = 0, .end_lsn = n, .records = records, .records_len = n};
    cr_assert_eq(repl_send_wal(&out, 1, &m, 0), RD_ETOOBIG);
    cr_assert_eq(out.len, 0);
    m.records_len = n - 1;
    cr_assert_eq(repl_send_wal(&out, 1, &m, 0), 0);
    cr_assert_eq(out.len, FRAME_HDR_SIZE + FRAME_MAX_PAYLOAD);
    free(records);
    rd_buf_free(&out);
}

Test(repl_proto, keepalive_round_trips_and_rejects_bad_flag_or_padding)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct repl_keepalive m = {.primary_flush_lsn = 123456, .send_time_us = 42, .reply_requested = 1};
    cr_assert_eq(repl_send_keepalive(&out, 2, &m), 0);
    rx_frame(&out, &rx, REPL_KEEPALIVE, 2);
    cr_assert_eq(rx.n, 24);
    struct repl_keepalive g;
    cr_assert_eq(repl_parse_keepalive(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.primary_flush_lsn, 123456);
    cr_assert_eq(g.send_time_us, 42);
    cr_assert_eq(g.reply_requested, 1);
    wrong_lengths_rejected(rx.p, rx.n, parse_keepalive_v, &g);
    size_t res[] = {17, 18, 19, 20, 21, 22, 23};
    reserved_rejected(rx.p, rx.n, res, RD_ARRAY_LEN(res), parse_keepalive_v, &g);
    uint8_t bad[24];
    memcpy(bad, rx.p, 24);
    bad[16] = 2;
    cr_assert_eq(repl_parse_keepalive(bad, 24, &g), RD_ECORRUPT, "reply_requested is 0 or 1");

    /* Any non-zero reply_requested is sent as 1. */
    rd_buf_reset(&out);
    m.reply_requested = 9;
    cr_assert_eq(repl_send_keepalive(&out, 2, &m), 0);
    rx_frame(&out, &rx, REPL_KEEPALIVE, 2);
    cr_assert_eq(rx.p[16], 1);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, status_round_trips)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct repl_status m = {.write_lsn = 1, .flush_lsn = 2, .apply_lsn = 3, .write_echo_us = 4,
                            .flush_echo_us = 5, .apply_echo_us = 6, .reply_time_us = UINT64_MAX};
    cr_assert_eq(repl_send_status(&out, 8, &m), 0);
    rx_frame(&out, &rx, REPL_STATUS, 8);
    cr_assert_eq(rx.n, 56);
    struct repl_status g;
    cr_assert_eq(repl_parse_status(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.write_lsn, 1);
    cr_assert_eq(g.flush_lsn, 2);
    cr_assert_eq(g.apply_lsn, 3);
    cr_assert_eq(g.write_echo_us, 4);
    cr_assert_eq(g.flush_echo_us, 5);
    cr_assert_eq(g.apply_echo_us, 6);
    cr_assert_eq(g.reply_time_us, UINT64_MAX);
    wrong_lengths_rejected(rx.p, rx.n, parse_status_v, &g);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, error_round_trips)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    cr_assert_eq(repl_send_error(&out, 1, "timeline 3 diverged from primary at lsn 4096"), 0);
    rx_frame(&out, &rx, REPL_ERROR, 1);
    char msg[128];
    cr_assert_eq(repl_parse_error(rx.p, rx.n, msg, sizeof(msg)), 0);
    cr_assert_str_eq(msg, "timeline 3 diverged from primary at lsn 4096");
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, error_message_is_sanitised_and_truncated_to_the_callers_buffer)
{
    const uint8_t raw[] = {'b', 'a', 'd', '\n', '\x1b', '[', '3', '1', 'm', 0x00, 0xff, 'x'};
    char msg[64];
    cr_assert_eq(repl_parse_error(raw, sizeof(raw), msg, sizeof(msg)), 0);
    cr_assert_str_eq(msg, "bad??[31m??x");
    char small[4];
    cr_assert_eq(repl_parse_error(raw, sizeof(raw), small, sizeof(small)), 0);
    cr_assert_str_eq(small, "bad");
    char one[1];
    cr_assert_eq(repl_parse_error(raw, sizeof(raw), one, sizeof(one)), 0);
    cr_assert_str_eq(one, "");
    cr_assert_eq(repl_parse_error(NULL, 0, msg, sizeof(msg)), 0);
    cr_assert_str_eq(msg, "");
}

Test(repl_proto, overlong_error_is_truncated_by_sender_and_rejected_by_receiver)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    char *longmsg = malloc(5000);
    memset(longmsg, 'e', 4999);
    longmsg[4999] = '\0';
    cr_assert_eq(repl_send_error(&out, 1, longmsg), 0);
    rx_frame(&out, &rx, REPL_ERROR, 1);
    cr_assert_eq(rx.n, 1024);
    char msg[2048];
    cr_assert_eq(repl_parse_error(rx.p, rx.n, msg, sizeof(msg)), 0);
    cr_assert_eq(strlen(msg), 1024);
    cr_assert_eq(repl_parse_error((const uint8_t *)longmsg, 1025, msg, sizeof(msg)), RD_ECORRUPT);
    cr_assert_str_eq(msg, "", "output is an empty string on error");
    free(longmsg);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, backup_begin_round_trips_and_zeroes_reserved_fields)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    struct repl_backup_begin m = {.system_id = 77, .timeline = 4, .term = 33, .redo_lsn = 1 << 20,
                                  .checkpoint_lsn = (1 << 20) + 64,
                                  .segment_size_bytes = 16u << 20, .npages = 12345};
    cr_assert_eq(repl_send_backup_begin(&out, 4, &m), 0);
    rx_frame(&out, &rx, REPL_BACKUP_BEGIN, 4);
    cr_assert_eq(rx.n, 48);
    struct repl_backup_begin g;
    cr_assert_eq(repl_parse_backup_begin(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.system_id, 77);
    cr_assert_eq(g.timeline, 4);
    cr_assert_eq(g.redo_lsn, 1 << 20);
    cr_assert_eq(g.checkpoint_lsn, (1 << 20) + 64);
    cr_assert_eq(g.segment_size_bytes, 16u << 20);
    cr_assert_eq(g.npages, 12345);
    cr_assert_eq(g.term, 33);
    wrong_lengths_rejected(rx.p, rx.n, parse_begin_v, &g);
    size_t res[] = {44, 45, 46, 47};
    reserved_rejected(rx.p, rx.n, res, RD_ARRAY_LEN(res), parse_begin_v, &g);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, backup_pages_round_trip_and_length_must_match_count)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    uint32_t count = 3;
    uint8_t *pages = malloc(count * PAGE);
    for (size_t i = 0; i < count * PAGE; i++)
        pages[i] = (uint8_t)(i * 31 + i / PAGE);
    cr_assert_eq(repl_send_backup_pages(&out, 6, 100, count, pages), 0);
    rx_frame(&out, &rx, REPL_BACKUP_PAGES, 6);
    cr_assert_eq(rx.n, 8 + count * PAGE);
    struct repl_backup_pages g;
    cr_assert_eq(repl_parse_backup_pages(rx.p, rx.n, &g), 0);
    cr_assert_eq(g.first_page, 100);
    cr_assert_eq(g.count, count);
    cr_assert_eq(g.pages, rx.p + 8);
    cr_assert(memcmp(g.pages, pages, count * PAGE) == 0);

    cr_assert_eq(repl_parse_backup_pages(rx.p, rx.n - 1, &g), RD_ECORRUPT);
    cr_assert_eq(repl_parse_backup_pages(rx.p, rx.n - PAGE, &g), RD_ECORRUPT);
    for (size_t n = 0; n < 8; n++)
        cr_assert_eq(repl_parse_backup_pages(rx.p, n, &g), RD_ECORRUPT);

    uint8_t hdr[8];
    rd_put_u32le(hdr, 0);
    rd_put_u32le(hdr + 4, 0x80000000u); /* count * 8192 overflows 32 bits */
    cr_assert_eq(repl_parse_backup_pages(hdr, 8, &g), RD_ECORRUPT);
    rd_put_u32le(hdr + 4, 0);
    cr_assert_eq(repl_parse_backup_pages(hdr, 8, &g), 0, "zero pages is well formed");
    cr_assert_eq(g.count, 0);
    free(pages);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, backup_pages_past_the_last_page_number_are_rejected)
{
    uint8_t *msg = calloc(1, 8 + 2 * PAGE);
    struct repl_backup_pages g;
    rd_put_u32le(msg, UINT32_MAX);
    rd_put_u32le(msg + 4, 2);
    cr_assert_eq(repl_parse_backup_pages(msg, 8 + 2 * PAGE, &g), RD_ECORRUPT);
    rd_put_u32le(msg, UINT32_MAX - 1);
    cr_assert_eq(repl_parse_backup_pages(msg, 8 + 2 * PAGE, &g), 0);
    free(msg);
}

Test(repl_proto, backup_pages_beyond_one_frame_are_too_big)
{
    struct rd_buf out = {0};
    uint32_t max = (FRAME_MAX_PAYLOAD - 8) / PAGE;
    uint8_t *pages = calloc(max + 1, PAGE);
    cr_assert_eq(repl_send_backup_pages(&out, 1, 0, max + 1, pages), RD_ETOOBIG);
    cr_assert_eq(out.len, 0);
    cr_assert_eq(repl_send_backup_pages(&out, 1, 0, max, pages), 0);
    free(pages);
    rd_buf_free(&out);
}

Test(repl_proto, backup_end_round_trips)
{
    struct rd_buf out = {0};
    struct rx rx = {0};
    cr_assert_eq(repl_send_backup_end(&out, 9, 0xDEADBEEF00ull), 0);
    rx_frame(&out, &rx, REPL_BACKUP_END, 9);
    uint64_t lsn = 0;
    cr_assert_eq(repl_parse_backup_end(rx.p, rx.n, &lsn), 0);
    cr_assert_eq(lsn, 0xDEADBEEF00ull);
    wrong_lengths_rejected(rx.p, rx.n, parse_end_v, &lsn);
    rd_buf_free(&out);
    rd_buf_free(&rx.scratch);
}

Test(repl_proto, message_names_cover_every_type)
{
    cr_assert_str_eq(repl_msg_name(REPL_HELLO), "HELLO");
    cr_assert_str_eq(repl_msg_name(REPL_WAL), "WAL");
    cr_assert_str_eq(repl_msg_name(REPL_KEEPALIVE), "KEEPALIVE");
    cr_assert_str_eq(repl_msg_name(REPL_STATUS), "STATUS");
    cr_assert_str_eq(repl_msg_name(REPL_ERROR), "ERROR");
    cr_assert_str_eq(repl_msg_name(REPL_BACKUP_BEGIN), "BACKUP_BEGIN");
    cr_assert_str_eq(repl_msg_name(REPL_BACKUP_PAGES), "BACKUP_PAGES");
    cr_assert_str_eq(repl_msg_name(REPL_BACKUP_END), "BACKUP_END");
    cr_assert_str_eq(repl_msg_name(0), "UNKNOWN");
    cr_assert_str_eq(repl_msg_name(200), "UNKNOWN");
}

/* ---- the replication slots file (DIR/slots) */

Test(repl_slots, round_trip_and_every_corruption_is_refused)
{
    struct repl_slot_rec v[3] = {{.name = "r1", .restart_lsn = 0x1234},
                                 {.name = "replica-two", .restart_lsn = 0},
                                 {.restart_lsn = UINT64_MAX}};
    memset(v[2].name, 'x', REPL_SLOT_NAME_BYTES - 1); /* the longest name: 63 bytes + NUL */
    struct rd_buf b = {0};
    cr_assert_eq(repl_slots_encode(&b, v, 3), 0);
    cr_assert_eq(b.len, 16 + 3 * 72 + 8);
    struct repl_slot_rec w[REPL_SLOTS_MAX];
    size_t n = 0;
    cr_assert_eq(repl_slots_decode(b.data, b.len, w, REPL_SLOTS_MAX, &n), 0);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(w[i].name, v[i].name);
        cr_assert_eq(w[i].restart_lsn, v[i].restart_lsn);
    }
    /* every single-bit flip anywhere is caught (checksum, or the checks behind it) */
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x10;
        cr_assert_eq(repl_slots_decode(b.data, b.len, w, REPL_SLOTS_MAX, &n), RD_ECORRUPT, "flip at %zu", i);
        b.data[i] ^= 0x10;
    }
    /* truncated, or longer than its count says */
    cr_assert_eq(repl_slots_decode(b.data, b.len - 1, w, REPL_SLOTS_MAX, &n), RD_ECORRUPT);
    cr_assert_eq(repl_slots_decode(b.data, 10, w, REPL_SLOTS_MAX, &n), RD_ECORRUPT);
    /* more slots than the caller has room for */
    cr_assert_eq(repl_slots_decode(b.data, b.len, w, 2, &n), RD_ECORRUPT);
    rd_buf_free(&b);
    /* no slots at all is a valid file */
    cr_assert_eq(repl_slots_encode(&b, v, 0), 0);
    cr_assert_eq(repl_slots_decode(b.data, b.len, w, REPL_SLOTS_MAX, &n), 0);
    cr_assert_eq(n, 0);
    rd_buf_free(&b);
}

Test(repl_proto, term_file_round_trips_and_rejects_every_damage)
{
    uint8_t f[REPL_TERM_FILE_BYTES];
    repl_term_encode(f, 0x12345);
    uint64_t t = 0;
    cr_assert_eq(repl_term_decode(f, sizeof(f), &t), 0);
    cr_assert_eq(t, 0x12345);
    for (size_t len = 0; len < sizeof(f) + 2; len++)
        if (len != sizeof(f))
            cr_assert_eq(repl_term_decode(f, len, &t), RD_ECORRUPT, "length %zu accepted", len);
    for (size_t i = 0; i < sizeof(f) * 8; i++) {
        uint8_t g[REPL_TERM_FILE_BYTES];
        memcpy(g, f, sizeof(g));
        g[i / 8] ^= (uint8_t)(1u << (i % 8));
        cr_assert_eq(repl_term_decode(g, sizeof(g), &t), RD_ECORRUPT, "bit flip %zu accepted", i);
    }
}

Test(repl_proto, pending_entries_round_trip_and_refuse_overruns)
{
    struct rd_buf b = {0};
    const uint8_t body[5] = {1, 2, 3, 4, 5};
    struct repl_pending in[2] = {{.end_lsn = 0x1122334455667788ull, .type = 7, .page_id = 42, .body_len = 5, .body = body},
                                 {.end_lsn = 9, .type = 3, .page_id = 0xffffffffu, .body_len = 0, .body = body}};
    cr_assert_eq(repl_pending_append(&b, &in[0]), 0);
    cr_assert_eq(repl_pending_append(&b, &in[1]), 0);
    cr_assert_eq(b.len, 2 * REPL_PENDING_HDR_BYTES + 5);
    struct repl_pending e;
    int used = repl_pending_read(b.data, b.len, &e);
    cr_assert_eq(used, (int)REPL_PENDING_HDR_BYTES + 5);
    cr_assert(e.end_lsn == in[0].end_lsn && e.type == 7 && e.page_id == 42 && e.body_len == 5);
    cr_assert_eq(memcmp(e.body, body, 5), 0);
    cr_assert_eq(repl_pending_read(b.data + used, b.len - (size_t)used, &e), (int)REPL_PENDING_HDR_BYTES);
    cr_assert(e.page_id == 0xffffffffu && e.body_len == 0);
    for (size_t n = 0; n < REPL_PENDING_HDR_BYTES + 5; n++)
        cr_assert_eq(repl_pending_read(b.data, n, &e), RD_ECORRUPT, "a %zu-byte prefix was accepted", n);
    rd_buf_free(&b);
}
