/*
 * metrics.h — Prometheus metrics for every Redoubt process: a tiny HTTP/1.0
 * endpoint (`GET /metrics`) and the text exposition format 0.0.4, shared by
 * redoubt, redoubt-storage and redoubt-monitor (`--metrics-port N`).
 *
 * The endpoint never blocks its caller's loop: `rd_metrics_poll` accepts and
 * reads without waiting, holds at most RD_METRICS_CONNS requests (each dropped
 * after RD_METRICS_DEADLINE_MS), and answers a complete request at once with a
 * body built by the caller's callback (send bounded by 100 ms: a scrape body is
 * a few KiB on a fresh socket). A scrape is answered within one turn of the
 * caller's loop, whatever that loop is (io_uring or poll).
 *
 * The body is built with the helpers below: families (one `# HELP`/`# TYPE` and
 * all their samples together, as the format requires), histograms, and
 * `rd_metrics_from_info`, which turns a Redis-style INFO text into gauges, so
 * that every number a person reads in INFO is also a metric under one name.
 *
 * Invariants (common/README.md): C20 every family is written once, its
 * samples contiguous; label values are escaped (`\\`, `"`, newline). C21 an
 * LSN is read by `rd_lsn_parse` in either form it is printed in (`X/Y`,
 * PostgreSQL style, or decimal) and printed by `rd_lsn_fmt` as `X/Y`.
 */
#ifndef RD_METRICS_H
#define RD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define RD_METRICS_CONNS 8
#define RD_METRICS_DEADLINE_MS 2000
#define RD_METRICS_HIST_MAX 24

struct rd_metrics_conn {
    int fd;               /* -1: free */
    uint64_t deadline_ms; /* closed unanswered after this (monotonic) */
    size_t len;
    char req[512];
};

struct rd_metrics {
    int fd;      /* listening socket; -1: no endpoint */
    uint64_t scrapes;
    struct rd_metrics_conn c[RD_METRICS_CONNS];
};

/* Builds the body of one scrape into out (appended; out is empty on entry). */
typedef void (*rd_metrics_body_fn)(void *arg, struct rd_buf *out);

void rd_metrics_init(struct rd_metrics *m);
/* Listens on bind_addr:port (IPv4, non-blocking). Returns 0 or -errno (-EINVAL
 * for a bad address); on failure m stays without an endpoint. */
int rd_metrics_listen(struct rd_metrics *m, const char *bind_addr, int port);
/* Accepts, reads and answers what is ready; never waits for input. fn is called
 * once per complete `GET /metrics` request; other paths get 404. A no-op
 * without an endpoint. */
void rd_metrics_poll(struct rd_metrics *m, rd_metrics_body_fn fn, void *arg);
void rd_metrics_close(struct rd_metrics *m);

/* ---- exposition helpers: all append to b; a failed append (out of memory)
 * panics, as every reply buffer does. */

/* `# HELP name help` and `# TYPE name type` (type: gauge, counter, histogram). */
void rd_metrics_family(struct rd_buf *b, const char *name, const char *type, const char *help);
/* `name{labels} value`; labels is "" or `k="v",...` without braces (already escaped). */
void rd_metrics_sample(struct rd_buf *b, const char *name, const char *labels, double v);
/* A family with one sample, no labels. */
void rd_metrics_gauge(struct rd_buf *b, const char *name, const char *help, double v);
void rd_metrics_counter(struct rd_buf *b, const char *name, const char *help, double v);
/* Copies v (len bytes) into out as a label value: `\`, `"` and newline escaped,
 * control bytes dropped, truncated to fit (always NUL-terminated). */
void rd_metrics_label_escape(char *out, size_t out_len, const char *v, size_t len);

struct rd_metrics_hist {
    const double *le; /* upper bounds, ascending; not owned (static tables) */
    size_t n;         /* <= RD_METRICS_HIST_MAX */
    uint64_t bucket[RD_METRICS_HIST_MAX + 1]; /* [n]: above the last bound */
    uint64_t count;
    double sum;
};
void rd_metrics_hist_init(struct rd_metrics_hist *h, const double *le, size_t n);
void rd_metrics_hist_observe(struct rd_metrics_hist *h, double v);
/* The whole family: cumulative _bucket{le=...} lines, +Inf, _sum, _count. */
void rd_metrics_hist_write(struct rd_buf *b, const char *name, const char *help, const struct rd_metrics_hist *h);

/* A list line of INFO (`slave0:name=r1,state=online,...`): lines whose key is
 * `key` followed by digits become labelled series `<prefix><family>_<field>`
 * with label `label="<the name= field, else addr=, else the whole key>"`; their
 * non-numeric fields become labels of one `<prefix><family>_info ... 1` series. */
struct rd_metrics_list {
    const char *key;    /* "slave" */
    const char *family; /* "replica" */
    const char *label;  /* "replica" */
};

/* Every `field:value` line of an INFO text whose value is a number (or an LSN
 * `X/Y` in a field rd_info_field_is_lsn names) becomes the gauge `<prefix><field>` (the first wins when two
 * sections carry one field); list lines as described above; lines of other
 * lists and non-numeric fields are skipped. Families come out contiguous. */
void rd_metrics_from_info(struct rd_buf *out, const char *prefix, const char *info, size_t len,
                          const struct rd_metrics_list *lists, size_t nlists);

/* ---- LSNs as people read them (C21) */

/* "X/Y" (two hex halves of at most 8 digits) or a decimal number, exactly len
 * bytes. Returns 0 or -EINVAL. */
int rd_lsn_parse(const char *s, size_t len, uint64_t *out);
/* Whether an INFO field (or a `k=v` item of a list line) holds an LSN: its name
 * contains "lsn", or is scl/vcl/vdl/max_cpl/coalesced/trimmed/truncated_above,
 * or ends in _scl/_vcl/_vdl/_point, or starts with vdl_ — and says nothing of
 * offset, bytes, _ms, lag, records, segments, answers, gave_up (counts and
 * Redis's byte offsets stay decimal). tests/integration/harness.py mirrors it. */
int rd_info_field_is_lsn(const char *k, size_t kl);
/* Rewrites, in place, every decimal LSN field of an INFO text (top-level and
 * inside list lines) as X/Y; everything else is copied unchanged. */
void rd_info_lsns_xy(struct rd_buf *info);
/* "X/Y", PostgreSQL's way; dst_len >= 18 always suffices. */
void rd_lsn_fmt(char *dst, size_t dst_len, uint64_t lsn);
/* The same into a static ring of 8 buffers, for printf arguments (one thread). */
const char *rd_lsn_str(uint64_t lsn);

#endif
