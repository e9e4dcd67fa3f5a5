/*
 * fuzz_frame.c — libFuzzer target for the frame decoder and the classic
 * replication message decoders: frame_decode repeatedly over the input (as a
 * connection's receive loop does), and for each frame the repl_parse_* of its
 * type. Nothing may crash or read out of bounds; a decoded frame must fit in
 * the input, and a parsed message must re-encode to the same frame payload.
 *
 * Mutated bytes almost never keep a valid XXH3, so the input is decoded twice:
 * as it is (the checksum gate), and from a copy whose frames have their
 * checksums recomputed (what lies behind the gate: lz4 and the parsers).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <stdlib.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/frame.h"
#include "common/util.h"
#include "replica/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Re-encodes through the matching repl_send_* and checks the payload is the same bytes. */
static void check_reencodes(uint8_t type, uint64_t epoch, const uint8_t *p, size_t n,
                            struct rd_buf *out, struct rd_buf *scratch, int sent)
{
    if (sent != 0)
        return;
    struct frame_hdr h;
    const uint8_t *q;
    size_t qn;
    int rc = frame_decode(out->data, out->len, &h, scratch, &q, &qn, NULL);
    rd_assert(rc == (int)out->len);
    rd_assert(h.type == type && h.epoch == epoch);
    rd_assert(qn == n && (n == 0 || memcmp(q, p, n) == 0));
}

static void parse_message(uint8_t type, uint64_t epoch, const uint8_t *p, size_t n)
{
    struct rd_buf out = {0}, scratch = {0};
    int sent = -1;
    switch (type) {
    case REPL_HELLO: {
        struct repl_hello m;
        if (repl_parse_hello(p, n, &m) == 0)
            sent = repl_send_hello(&out, epoch, &m);
        break;
    }
    case REPL_WAL: {
        struct repl_wal m;
        if (repl_parse_wal(p, n, &m) == 0) {
            rd_assert(m.records == p + 32 && m.records_len == n - 32);
            sent = repl_send_wal(&out, epoch, &m, 0);
        }
        break;
    }
    case REPL_KEEPALIVE: {
        struct repl_keepalive m;
        if (repl_parse_keepalive(p, n, &m) == 0)
            sent = repl_send_keepalive(&out, epoch, &m);
        break;
    }
    case REPL_STATUS: {
        struct repl_status m;
        if (repl_parse_status(p, n, &m) == 0)
            sent = repl_send_status(&out, epoch, &m);
        break;
    }
    case REPL_ERROR: {
        char msg[256];
        if (repl_parse_error(p, n, msg, sizeof(msg)) == 0) {
            size_t k = strlen(msg);
            rd_assert(k <= n && k < sizeof(msg));
            for (size_t i = 0; i < k; i++)
                rd_assert(msg[i] >= 0x20 && msg[i] < 0x7f);
        }
        break;
    }
    case REPL_BACKUP_BEGIN: {
        struct repl_backup_begin m;
        if (repl_parse_backup_begin(p, n, &m) == 0)
            sent = repl_send_backup_begin(&out, epoch, &m);
        break;
    }
    case REPL_BACKUP_PAGES: {
        struct repl_backup_pages m;
        if (repl_parse_backup_pages(p, n, &m) == 0) {
            rd_assert(8 + (size_t)m.count * 8192u == n);
            sent = repl_send_backup_pages(&out, epoch, m.first_page, m.count, m.pages);
        }
        break;
    }
    case REPL_BACKUP_END: {
        uint64_t lsn;
        if (repl_parse_backup_end(p, n, &lsn) == 0)
            sent = repl_send_backup_end(&out, epoch, lsn);
        break;
    }
    default:
        (void)repl_msg_name(type);
        break;
    }
    check_reencodes(type, epoch, p, n, &out, &scratch, sent);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

static void decode_all(const uint8_t *data, size_t size)
{
    struct rd_buf scratch = {0};
    size_t off = 0;
    /* Bounded: each frame consumes at least FRAME_HDR_SIZE bytes. */
    while (off < size) {
        struct frame_hdr h;
        const uint8_t *p = NULL;
        size_t n = 0;
        const char *why = NULL;
        int rc = frame_decode(data + off, size - off, &h, &scratch, &p, &n, &why);
        if (rc <= 0) {
            rd_assert(rc == 0 || why != NULL);
            break;
        }
        rd_assert((size_t)rc >= FRAME_HDR_SIZE && (size_t)rc <= size - off);
        rd_assert((size_t)rc == FRAME_HDR_SIZE + h.wire_len);
        rd_assert(n == h.raw_len && n <= FRAME_MAX_PAYLOAD);
        /* Both arms: an uncompressed payload lies inside the input, a
         * compressed one inside scratch. */
        if (h.flags & FRAME_FLAG_LZ4)
            rd_assert(p == scratch.data && scratch.len == n);
        else
            rd_assert(p == data + off + FRAME_HDR_SIZE);
        parse_message(h.type, h.epoch, p, n);
        off += (size_t)rc;
    }
    rd_buf_free(&scratch);
}

/* Recomputes the checksum of every whole frame in d (walking by wire length). */
static void reseal_all(uint8_t *d, size_t size)
{
    size_t off = 0;
    while (size - off >= FRAME_HDR_SIZE) {
        uint32_t wire_len = rd_get_u32le(d + off + 8);
        if (wire_len > size - off - FRAME_HDR_SIZE)
            break;
        uint64_t c = rd_checksum64_2(d + off, 24, d + off + FRAME_HDR_SIZE, wire_len, RD_SEED_FRAME);
        rd_put_u64le(d + off + 24, c);
        off += FRAME_HDR_SIZE + wire_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_all(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    rd_assert(copy != NULL);
    if (size > 0)
        memcpy(copy, data, size);
    reseal_all(copy, size);
    decode_all(copy, size);
    free(copy);
    return 0;
}
