/*
 * fuzz_trace.c — libFuzzer target for the commit trace's one decoder, the trace mark (common/trace.c
 * trace_mark_parse / trace_mark_follow, C22), which every receiving link runs (classic replica,
 * storage node, aurora reader). Nothing may crash or read out of bounds; an accepted payload is
 * exactly 16 bytes with a nonzero id and LSN and re-encodes to the same bytes; a refused one
 * comes with a reason; following never registers more than TRACE_INFLIGHT commits.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/trace.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace_mark m;
    const char *why = NULL;
    if (trace_mark_parse(data, size, &m, &why) == 0) {
        rd_assert(why == NULL && size == TRACE_MARK_SIZE && m.trace_id != 0 && m.commit_lsn != 0);
        struct rd_buf out = {0}, scratch = {0};
        rd_assert(trace_mark_append(&out, 3, &m) == 0);
        struct frame_hdr h;
        const uint8_t *p;
        size_t n;
        rd_assert(frame_decode(out.data, out.len, &h, &scratch, &p, &n, NULL) == (int)out.len);
        rd_assert(h.type == TRACE_MARK_FRAME_TYPE && n == size && memcmp(p, data, n) == 0);
        rd_buf_free(&out);
        rd_buf_free(&scratch);
    } else {
        rd_assert(why != NULL);
    }
    int rc = trace_mark_follow(data, size, 1000, NULL);
    rd_assert(rc == (why == NULL ? 0 : RD_EPROTO));
    rd_assert(trace_ninflight <= TRACE_INFLIGHT);
    return 0;
}
