/*
 * sn_trace.c — the commit trace on a storage node (sn_trace.h).
 */
#include "storage-node/sn_trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "redo/redo.h"

void sn_trace_write_slow(const uint8_t *p, size_t n)
{
    struct redo_batch_hdr h;
    if (redo_batch_parse_hdr(p, n, &h) < 0 || h.nrecords == 0)
        return; /* sn_on_write refuses it */
    trace_lsn_reached(TRACE_PEER_RECEIVED, 0, h.last_lsn, h.nrecords);
}

static int arg_is(const struct resp_arg *a, const char *w)
{
    return a->len == strlen(w) && strncasecmp((const char *)a->ptr, w, a->len) == 0;
}

static void bulk(struct rd_buf *out, const void *p, size_t n)
{
    rd_buf_appendf(out, "$%zu\r\n", n);
    rd_buf_append(out, p, n);
    rd_buf_appendf(out, "\r\n");
}

void sn_trace_command(struct rd_buf *out, const struct resp_args *a, uint32_t node_id)
{
    uint64_t id = 0;
    if (a->n == 2 && arg_is(&a->v[1], "last")) {
        uint64_t ids[1];
        if (trace_recent_ids(ids, 1) == 1) {
            char hex[17];
            snprintf(hex, sizeof hex, "%016" PRIx64, ids[0]);
            bulk(out, hex, 16);
        } else {
            rd_buf_appendf(out, "$-1\r\n");
        }
        return;
    }
    if ((a->n == 2 || a->n == 3) && arg_is(&a->v[1], "get")) {
        if (a->n == 3) {
            char tmp[17];
            char *end = NULL;
            if (a->v[2].len == 0 || a->v[2].len > 16) {
                rd_buf_appendf(out, "-ERR REDOUBT.TRACE GET: the id is up to 16 hex digits\r\n");
                return;
            }
            memcpy(tmp, a->v[2].ptr, a->v[2].len);
            tmp[a->v[2].len] = 0;
            errno = 0;
            id = strtoull(tmp, &end, 16);
            if (errno || *end || id == 0) {
                rd_buf_appendf(out, "-ERR REDOUBT.TRACE GET: the id is up to 16 hex digits, not 0\r\n");
                return;
            }
        }
        char proc[32];
        snprintf(proc, sizeof proc, "storage%u", node_id + 1); /* scripts/cluster's names: --id K-1 is storageK */
        struct rd_buf b = {0};
        if (trace_format(&b, id, proc) < 0)
            rd_panic("out of memory for a trace");
        bulk(out, b.data ? b.data : (const uint8_t *)"", b.len);
        rd_buf_free(&b);
        return;
    }
    rd_buf_appendf(out, "-ERR usage: REDOUBT.TRACE GET [ID] | LAST (a storage node records the commits the "
                        "writer marks; sampling is set on the writer)\r\n");
}
