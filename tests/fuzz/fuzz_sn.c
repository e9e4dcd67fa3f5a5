/*
 * fuzz_sn.c — libFuzzer target for the storage node's decoders: the hot-log
 * record decoder and scanner (storage-node/sn_hotlog.c) and every sn_parse_*
 * (storage-node/sn_proto.c), GOSSIP, PAGECOPY and PAGES included, and the trace mark the node
 * follows (common/trace.c). Nothing may crash or read out of bounds; a
 * decoded hot-log record must re-encode to the same bytes; a parsed message
 * must re-encode to the same payload.
 *
 * The first input byte selects what the rest is fed to. Mutated bytes rarely
 * keep a valid XXH3, so selector 0 also re-checksums the record under test.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/frame.h"
#include "common/trace.h"
#include "common/util.h"
#include "storage-node/sn_int.h"
#include "redo/sn_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_payload(struct rd_buf *out, const uint8_t *p, size_t n)
{
    struct rd_buf scratch = {0};
    struct frame_hdr h;
    const uint8_t *q;
    size_t qn;
    int rc = frame_decode(out->data, out->len, &h, &scratch, &q, &qn, NULL);
    rd_assert(rc == (int)out->len);
    rd_assert(qn == n && (n == 0 || memcmp(q, p, n) == 0));
    rd_buf_free(&scratch);
}

static void fuzz_hotlog(const uint8_t *d, size_t n, int fix_checksum)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, d, n);
    if (fix_checksum && n >= SN_HOTLOG_REC_HDR_SIZE) {
        uint32_t len = rd_get_u32le(copy);
        if (len <= n - SN_HOTLOG_REC_HDR_SIZE)
            rd_put_u64le(copy + 16, rd_checksum64_2(copy, 16, copy + SN_HOTLOG_REC_HDR_SIZE, len, SN_SEED_HOTLOG));
    }
    struct redo_rec r;
    uint64_t epoch;
    size_t used;
    if (sn_hotlog_rec_decode(copy, n, &epoch, &r, &used) == 1) {
        rd_assert(used <= n);
        struct rd_buf out = {0};
        int k = sn_hotlog_rec_append(&out, epoch, &r);
        rd_assert(k == (int)used && memcmp(out.data, copy, used) == 0);
        rd_buf_free(&out);
    }
    struct sn_scan_result res;
    sn_hotlog_scan(copy, n, NULL, NULL, &res);
    rd_assert(res.valid_end <= RD_MAX(n, (size_t)SN_HOTLOG_FILE_HDR_SIZE));
    uint32_t id;
    sn_hotlog_check_file_hdr(copy, n, &id);
    free(copy);
}

static void fuzz_msgs(const uint8_t *p, size_t n)
{
    struct rd_buf out = {0};
    struct sn_ack a;
    if (sn_parse_ack(p, n, &a) == 0 && sn_send_ack(&out, 1, &a) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_getpage g;
    if (sn_parse_getpage(p, n, &g) == 0 && sn_send_getpage(&out, 1, &g) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_page pg;
    if (sn_parse_page(p, n, &pg) == 0 && sn_send_page(&out, 1, &pg) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_fetch f;
    if (sn_parse_fetch(p, n, &f) == 0 && sn_send_fetch(&out, 1, &f) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    uint64_t v;
    if (sn_parse_epoch(p, n, &v) == 0 && sn_send_epoch(&out, 1, v) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_state st;
    if (sn_parse_state(p, n, &st) == 0 && sn_send_state(&out, 1, &st) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_truncate t;
    if (sn_parse_truncate(p, n, &t) == 0 && sn_send_truncate(&out, 1, &t) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    if (sn_parse_readpoint(p, n, &v) == 0 && sn_send_readpoint(&out, 1, v) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_gossip go;
    if (sn_parse_gossip(p, n, &go) == 0 && sn_send_gossip(&out, 1, &go) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_pagecopy pc;
    if (sn_parse_pagecopy(p, n, &pc) == 0 && sn_send_pagecopy(&out, 1, &pc) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    struct sn_pages ps;
    if (sn_parse_pages(p, n, &ps) == 0) {
        for (uint32_t i = 0; i < ps.npages; i++) /* inside the payload, ascending */
            rd_assert(sn_pages_image(&ps, i) + 8192 <= p + n && (i == 0 || sn_pages_id(&ps, i) > sn_pages_id(&ps, i - 1)));
        if (sn_send_pages(&out, 1, &ps) == 0)
            same_payload(&out, p, n);
    }
    struct trace_mark tm; /* the trace mark a storage node follows (issue 13, C22) */
    if (trace_mark_parse(p, n, &tm, NULL) == 0 && trace_mark_append(&out, 1, &tm) == 0)
        same_payload(&out, p, n);
    rd_buf_reset(&out);
    uint32_t code;
    char text[64];
    if (sn_parse_error(p, n, &code, text, sizeof(text)) == 0)
        rd_assert(strlen(text) < sizeof(text));
    uint64_t req;
    const uint8_t *b;
    size_t bl;
    if (sn_parse_log(p, n, &req, &b, &bl) == 0)
        rd_assert(b + bl == p + n);
    rd_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: fuzz_hotlog(p, n, 1); break;
    case 1: fuzz_hotlog(p, n, 0); break;
    default: fuzz_msgs(p, n); break;
    }
    return 0;
}
