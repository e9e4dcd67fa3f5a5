/*
 * fuzz_metrics.c — libFuzzer target for common/metrics.c's text decoders: the
 * LSN parser (both forms must round-trip through rd_lsn_fmt), the INFO rewrite
 * to X/Y (idempotent: a second pass changes nothing) and INFO → gauges (C20:
 * never two "# TYPE" lines for one family).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/metrics.h"
#include "common/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t v;
    if (rd_lsn_parse((const char *)data, size, &v) == 0) {
        char s[20];
        uint64_t w;
        rd_lsn_fmt(s, sizeof(s), v);
        rd_assert(rd_lsn_parse(s, strlen(s), &w) == 0 && w == v);
    }
    struct rd_buf a = {0}, b = {0}, g = {0};
    rd_assert(rd_buf_append(&a, data, size) == 0);
    rd_info_lsns_xy(&a);
    rd_assert(rd_buf_append(&b, a.data, a.len) == 0);
    rd_info_lsns_xy(&b);
    rd_assert(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
    static const struct rd_metrics_list lists[] = {{"slave", "replica", "replica"}, {"peer", "peer", "peer"}};
    rd_metrics_from_info(&g, "f_", (const char *)data, size, lists, RD_ARRAY_LEN(lists));
    rd_assert(rd_buf_append(&g, "", 1) == 0);
    /* every family once: "# TYPE name" lines (label values may hold any text, so only line starts count) */
    for (const char *p = (const char *)g.data; *p;) {
        const char *eol = strchr(p, '\n');
        rd_assert(eol != NULL); /* every line ends with a newline */
        if (strncmp(p, "# TYPE ", 7) == 0) {
            const char *e = memchr(p + 7, ' ', (size_t)(eol - p - 7));
            rd_assert(e != NULL);
            for (const char *q = eol + 1; *q;) {
                const char *qe = strchr(q, '\n');
                rd_assert(qe != NULL);
                rd_assert(!(strncmp(q, "# TYPE ", 7) == 0 && qe - q == eol - p && memcmp(q, p, (size_t)(eol - p)) == 0));
                q = qe + 1;
            }
        }
        p = eol + 1;
    }
    rd_buf_free(&a);
    rd_buf_free(&b);
    rd_buf_free(&g);
    return 0;
}
