/* metrics.c — the Prometheus endpoint and text exposition (metrics.h). */
#include "common/metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* ------------------------------------------------------------ the endpoint */

void rd_metrics_init(struct rd_metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->fd = -1;
    for (int i = 0; i < RD_METRICS_CONNS; i++)
        m->c[i].fd = -1;
}

int rd_metrics_listen(struct rd_metrics *m, const char *bind_addr, int port)
{
    rd_assert(m->fd < 0 && port > 0 && port < 65536);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1)
        return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(fd, 16) < 0) {
        int e = errno;
        if (close(fd) < 0)
            rd_warn("metrics: close: %s", strerror(errno));
        return -e;
    }
    m->fd = fd;
    return 0;
}

static void conn_close(struct rd_metrics_conn *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        rd_debug("metrics: close: %s", strerror(errno));
    c->fd = -1;
    c->len = 0;
}

static void answer(struct rd_metrics *m, struct rd_metrics_conn *c, rd_metrics_body_fn fn, void *arg)
{
    struct rd_buf body = {0}, msg = {0};
    int ok = strncmp(c->req, "GET /metrics", 12) == 0 && (c->req[12] == ' ' || c->req[12] == '?');
    if (ok) {
        fn(arg, &body);
        m->scrapes++;
        rd_metrics_counter(&body, "redoubt_metrics_scrapes_total", "scrapes of this endpoint answered before this one",
                           (double)(m->scrapes - 1));
    } else if (rd_buf_appendf(&body, "not found: this endpoint answers GET /metrics\n") < 0) {
        rd_panic("out of memory for a metrics reply");
    }
    if (rd_buf_appendf(&msg,
                       "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                       "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                       ok ? "200 OK" : "404 Not Found", body.len) < 0 ||
        rd_buf_append(&msg, body.data, body.len) < 0)
        rd_panic("out of memory for a metrics reply");
    /* A reply of a few KiB on a fresh socket: blocking, each send bounded by 100 ms. */
    int fl = fcntl(c->fd, F_GETFL);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        rd_debug("metrics: socket setup: %s", strerror(errno));
    } else {
        for (size_t off = 0; off < msg.len;) {
            ssize_t n = send(c->fd, msg.data + off, msg.len - off, MSG_NOSIGNAL);
            if (n <= 0)
                break; /* the scraper went away or is too slow: its problem, not ours */
            off += (size_t)n;
        }
    }
    rd_buf_free(&body);
    rd_buf_free(&msg);
}

void rd_metrics_poll(struct rd_metrics *m, rd_metrics_body_fn fn, void *arg)
{
    if (m->fd < 0)
        return;
    uint64_t now = rd_now_ms();
    for (int i = 0; i < RD_METRICS_CONNS; i++) {
        struct rd_metrics_conn *c = &m->c[i];
        if (c->fd < 0) {
            int fd = accept4(m->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                continue; /* EAGAIN: nobody waiting (other errors: try again next turn) */
            c->fd = fd, c->len = 0, c->deadline_ms = now + RD_METRICS_DEADLINE_MS;
        }
        ssize_t n = recv(c->fd, c->req + c->len, sizeof(c->req) - 1 - c->len, MSG_DONTWAIT);
        if (n > 0)
            c->len += (size_t)n;
        c->req[c->len] = 0;
        int done = strstr(c->req, "\r\n\r\n") != NULL || strstr(c->req, "\n\n") != NULL || c->len == sizeof(c->req) - 1;
        if (done)
            answer(m, c, fn, arg);
        if (done || n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || now > c->deadline_ms)
            conn_close(c);
    }
}

void rd_metrics_close(struct rd_metrics *m)
{
    for (int i = 0; i < RD_METRICS_CONNS; i++)
        conn_close(&m->c[i]);
    if (m->fd >= 0 && close(m->fd) < 0)
        rd_warn("metrics: close: %s", strerror(errno));
    m->fd = -1;
}

/* ------------------------------------------------------------ exposition */

static void put(struct rd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct rd_buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    rd_assert(n >= 0 && (size_t)n < sizeof(tmp)); /* names and labels are bounded by their callers */
    if (rd_buf_append(b, tmp, (size_t)n) < 0)
        rd_panic("out of memory for metrics");
}

void rd_metrics_family(struct rd_buf *b, const char *name, const char *type, const char *help)
{
    if (help != NULL && help[0])
        put(b, "# HELP %s %s\n", name, help);
    put(b, "# TYPE %s %s\n", name, type);
}

void rd_metrics_sample(struct rd_buf *b, const char *name, const char *labels, double v)
{
    const char *open = labels && labels[0] ? "{" : "", *close_ = labels && labels[0] ? "}" : "";
    if (isnan(v))
        put(b, "%s%s%s%s NaN\n", name, open, labels ? labels : "", close_);
    else if (v == floor(v) && fabs(v) < 1e15)
        put(b, "%s%s%s%s %.0f\n", name, open, labels ? labels : "", close_, v);
    else
        put(b, "%s%s%s%s %.15g\n", name, open, labels ? labels : "", close_, v);
}

void rd_metrics_gauge(struct rd_buf *b, const char *name, const char *help, double v)
{
    rd_metrics_family(b, name, "gauge", help);
    rd_metrics_sample(b, name, "", v);
}

void rd_metrics_counter(struct rd_buf *b, const char *name, const char *help, double v)
{
    rd_metrics_family(b, name, "counter", help);
    rd_metrics_sample(b, name, "", v);
}

void rd_metrics_label_escape(char *out, size_t out_len, const char *v, size_t len)
{
    rd_assert(out_len > 0);
    size_t o = 0;
    for (size_t i = 0; i < len && o + 3 < out_len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '\\' || ch == '"')
            out[o++] = '\\', out[o++] = (char)ch;
        else if (ch == '\n')
            out[o++] = '\\', out[o++] = 'n';
        else if (ch >= 0x20 && ch != 0x7f)
            out[o++] = (char)ch;
    }
    out[o] = 0;
}

void rd_metrics_hist_init(struct rd_metrics_hist *h, const double *le, size_t n)
{
    rd_assert(n > 0 && n <= RD_METRICS_HIST_MAX);
    for (size_t i = 1; i < n; i++)
        rd_assert(le[i - 1] < le[i]);
    memset(h, 0, sizeof(*h));
    h->le = le;
    h->n = n;
}

void rd_metrics_hist_observe(struct rd_metrics_hist *h, double v)
{
    size_t b = 0;
    while (b < h->n && v > h->le[b])
        b++;
    h->bucket[b]++;
    h->count++;
    h->sum += v;
}

void rd_metrics_hist_write(struct rd_buf *b, const char *name, const char *help, const struct rd_metrics_hist *h)
{
    rd_assert(h->le != NULL);
    rd_metrics_family(b, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->n; i++) {
        cum += h->bucket[i];
        put(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, h->le[i], cum);
    }
    cum += h->bucket[h->n];
    rd_assert(cum == h->count);
    put(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.9g\n%s_count %" PRIu64 "\n", name, cum, name, h->sum, name,
        h->count);
}

/* ------------------------------------------------------------ INFO as gauges */

struct mrec {
    char name[128];
    char labels[400];
    double v;
    size_t seq; /* order of appearance: families keep it */
};

struct mrecs {
    struct mrec *v;
    size_t n, cap;
};

static void mrecs_add(struct mrecs *r, const char *name, const char *labels, double v)
{
    if (labels[0] == 0) /* a field in two sections: the first wins */
        for (size_t i = 0; i < r->n; i++)
            if (r->v[i].labels[0] == 0 && strcmp(r->v[i].name, name) == 0)
                return;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 128;
        struct mrec *nv = realloc(r->v, cap * sizeof(*nv));
        if (nv == NULL)
            rd_panic("out of memory for metrics");
        r->v = nv, r->cap = cap;
    }
    struct mrec *x = &r->v[r->n];
    snprintf(x->name, sizeof(x->name), "%s", name);
    snprintf(x->labels, sizeof(x->labels), "%s", labels);
    x->v = v;
    x->seq = r->n++;
}

/* Sorted by name (a family's samples together), then by appearance. */
static int mrec_cmp(const void *a, const void *b)
{
    const struct mrec *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void metric_name(char *out, size_t n, const char *prefix, const char *k, size_t klen)
{
    size_t o = (size_t)snprintf(out, n, "%s", prefix);
    for (size_t i = 0; i < klen && o + 1 < n; i++)
        out[o++] = isalnum((unsigned char)k[i]) ? (char)tolower((unsigned char)k[i]) : '_';
    out[o] = 0;
}

static int value_number(const char *k, size_t kl, const char *v, size_t vl, double *out)
{
    char tmp[64];
    if (vl == 0 || vl >= sizeof(tmp))
        return 0;
    if (memchr(v, '/', vl) != NULL) {
        uint64_t l;
        if (!rd_info_field_is_lsn(k, kl) || rd_lsn_parse(v, vl, &l) < 0)
            return 0;
        *out = (double)l;
        return 1;
    }
    memcpy(tmp, v, vl);
    tmp[vl] = 0;
    if (!(isdigit((unsigned char)tmp[0]) || ((tmp[0] == '-' || tmp[0] == '.') && vl > 1)))
        return 0; /* "inf", "nan", "0x" words are not INFO numbers */
    char *end;
    *out = strtod(tmp, &end);
    return end == tmp + vl && !isnan(*out);
}

static void from_list(struct mrecs *r, const char *prefix, const struct rd_metrics_list *l, const char *key, size_t kl,
                      const char *v, size_t vl)
{
    char who[96] = "";
    const char *addr = NULL;
    size_t addr_len = 0;
    for (const char *p = v; p < v + vl;) { /* the label value first */
        const char *comma = memchr(p, ',', (size_t)(v + vl - p));
        size_t pl = comma ? (size_t)(comma - p) : (size_t)(v + vl - p);
        if (pl > 5 && strncmp(p, "name=", 5) == 0)
            rd_metrics_label_escape(who, sizeof(who), p + 5, pl - 5);
        else if (pl > 5 && strncmp(p, "addr=", 5) == 0)
            addr = p + 5, addr_len = pl - 5;
        p += pl + 1;
    }
    if (!who[0] && addr)
        rd_metrics_label_escape(who, sizeof(who), addr, addr_len);
    if (!who[0])
        rd_metrics_label_escape(who, sizeof(who), key, kl);
    char base[300], info[400], name[128];
    snprintf(base, sizeof(base), "%s=\"%s\"", l->label, who);
    snprintf(info, sizeof(info), "%s", base);
    for (const char *p = v; p < v + vl;) {
        const char *comma = memchr(p, ',', (size_t)(v + vl - p));
        size_t pl = comma ? (size_t)(comma - p) : (size_t)(v + vl - p);
        const char *eq = memchr(p, '=', pl);
        p += pl + 1;
        if (eq == NULL)
            continue;
        const char *f = p - pl - 1, *fv = eq + 1;
        size_t fl = (size_t)(eq - f), fvl = pl - fl - 1;
        double x;
        if (fl == 4 && strncmp(f, "name", 4) == 0)
            continue;
        char fam[64];
        snprintf(fam, sizeof(fam), "%s%s_", prefix, l->family);
        if (!(fl == 4 && strncmp(f, "port", 4) == 0) && value_number(f, fl, fv, fvl, &x)) {
            metric_name(name, sizeof(name), fam, f, fl);
            mrecs_add(r, name, base, x);
        } else if (fvl > 0 && strlen(info) + fl + fvl + 8 < sizeof(info)) {
            char lk[64], lv[160];
            metric_name(lk, sizeof(lk), "", f, RD_MIN(fl, 60));
            rd_metrics_label_escape(lv, sizeof(lv), fv, fvl);
            size_t o = strlen(info);
            snprintf(info + o, sizeof(info) - o, ",%s=\"%s\"", lk, lv);
        }
    }
    snprintf(name, sizeof(name), "%s%s_info", prefix, l->family);
    mrecs_add(r, name, info, 1);
}

void rd_metrics_from_info(struct rd_buf *out, const char *prefix, const char *info, size_t len,
                          const struct rd_metrics_list *lists, size_t nlists)
{
    struct mrecs r = {0};
    for (size_t off = 0; off < len;) {
        const char *line = info + off;
        const char *eol = memchr(line, '\n', len - off);
        size_t ll = eol ? (size_t)(eol - line) : len - off;
        off += ll + 1;
        if (ll && line[ll - 1] == '\r')
            ll--;
        const char *colon = memchr(line, ':', ll);
        if (ll == 0 || line[0] == '#' || colon == NULL || colon == line)
            continue;
        size_t kl = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vl = ll - kl - 1;
        const struct rd_metrics_list *l = NULL;
        for (size_t i = 0; i < nlists && l == NULL; i++) {
            size_t pl = strlen(lists[i].key);
            if (kl > pl && strncmp(line, lists[i].key, pl) == 0) {
                size_t j = pl;
                while (j < kl && isdigit((unsigned char)line[j]))
                    j++;
                if (j == kl)
                    l = &lists[i];
            }
        }
        if (l != NULL) {
            from_list(&r, prefix, l, line, kl, v, vl);
            continue;
        }
        double x;
        char name[128];
        if (memchr(v, '=', vl) == NULL && value_number(line, kl, v, vl, &x)) {
            metric_name(name, sizeof(name), prefix, line, kl);
            mrecs_add(&r, name, "", x);
        }
    }
    if (r.n > 0)
        qsort(r.v, r.n, sizeof(*r.v), mrec_cmp);
    for (size_t i = 0; i < r.n; i++) {
        if (i == 0 || strcmp(r.v[i].name, r.v[i - 1].name) != 0)
            rd_metrics_family(out, r.v[i].name, "gauge", NULL);
        rd_metrics_sample(out, r.v[i].name, r.v[i].labels, r.v[i].v);
    }
    free(r.v);
}

/* ------------------------------------------------------------ LSNs (C21) */

int rd_lsn_parse(const char *s, size_t len, uint64_t *out)
{
    uint64_t hi = 0, lo = 0;
    size_t i = 0;
    const char *slash = memchr(s, '/', len);
    if (slash == NULL) {
        if (len == 0 || len > 20)
            return -EINVAL;
        for (; i < len; i++) {
            uint64_t d = (uint64_t)(s[i] - '0');
            if (!isdigit((unsigned char)s[i]) || lo > UINT64_MAX / 10 || (lo == UINT64_MAX / 10 && d > UINT64_MAX % 10))
                return -EINVAL;
            lo = lo * 10 + d;
        }
        *out = lo;
        return 0;
    }
    size_t hl = (size_t)(slash - s), ll = len - hl - 1;
    if (hl == 0 || hl > 8 || ll == 0 || ll > 8)
        return -EINVAL;
    for (i = 0; i < len; i++) {
        if (s + i == slash)
            continue;
        int c = tolower((unsigned char)s[i]);
        uint64_t d = isdigit(c) ? (uint64_t)(c - '0') : (c >= 'a' && c <= 'f') ? (uint64_t)(c - 'a' + 10) : 99;
        if (d == 99)
            return -EINVAL;
        if (s + i < slash)
            hi = hi * 16 + d;
        else
            lo = lo * 16 + d;
    }
    *out = hi << 32 | lo;
    return 0;
}

void rd_lsn_fmt(char *dst, size_t dst_len, uint64_t lsn)
{
    snprintf(dst, dst_len, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

const char *rd_lsn_str(uint64_t lsn)
{
    static char ring[8][20];
    static unsigned next;
    char *s = ring[next++ % 8];
    rd_lsn_fmt(s, sizeof(ring[0]), lsn);
    return s;
}

static int has(const char *k, size_t kl, const char *w)
{
    size_t wl = strlen(w);
    for (size_t j = 0; j + wl <= kl; j++)
        if (memcmp(k + j, w, wl) == 0)
            return 1;
    return 0;
}

static int ends(const char *k, size_t kl, const char *w)
{
    size_t wl = strlen(w);
    return kl >= wl && memcmp(k + kl - wl, w, wl) == 0;
}

int rd_info_field_is_lsn(const char *k, size_t kl)
{
    static const char *const not_lsn[] = {"offset", "bytes", "_ms", "lag", "records", "segments", "answers", "gave_up"};
    static const char *const exact[] = {"scl", "vcl", "vdl", "max_cpl", "coalesced", "trimmed", "truncated_above"};
    for (size_t i = 0; i < RD_ARRAY_LEN(not_lsn); i++)
        if (has(k, kl, not_lsn[i]))
            return 0;
    if (has(k, kl, "lsn"))
        return 1;
    for (size_t i = 0; i < RD_ARRAY_LEN(exact); i++)
        if (kl == strlen(exact[i]) && memcmp(k, exact[i], kl) == 0)
            return 1;
    return ends(k, kl, "_scl") || ends(k, kl, "_vcl") || ends(k, kl, "_vdl") || ends(k, kl, "_point") ||
           (kl > 4 && memcmp(k, "vdl_", 4) == 0);
}

/* Appends "k:v" or "k=v" (sep) with v rewritten to X/Y when k names an LSN and v is decimal. */
static void put_field(struct rd_buf *o, const char *k, size_t kl, char sep, const char *v, size_t vl)
{
    uint64_t l;
    char xy[20];
    if (rd_info_field_is_lsn(k, kl) && memchr(v, '/', vl) == NULL && rd_lsn_parse(v, vl, &l) == 0) {
        rd_lsn_fmt(xy, sizeof(xy), l);
        v = xy, vl = strlen(xy);
    }
    if (rd_buf_append(o, k, kl) < 0 || rd_buf_append(o, &sep, 1) < 0 || rd_buf_append(o, v, vl) < 0)
        rd_panic("out of memory for INFO");
}

void rd_info_lsns_xy(struct rd_buf *info)
{
    struct rd_buf o = {0};
    const char *s = (const char *)info->data;
    size_t len = info->len;
    for (size_t off = 0; off < len;) {
        const char *line = s + off;
        const char *eol = memchr(line, '\n', len - off);
        size_t ll = eol ? (size_t)(eol - line) + 1 : len - off; /* with its newline */
        off += ll;
        size_t body = ll;
        while (body && (line[body - 1] == '\n' || line[body - 1] == '\r'))
            body--;
        const char *colon = memchr(line, ':', body);
        if (line[0] == '#' || colon == NULL) {
            if (rd_buf_append(&o, line, ll) < 0)
                rd_panic("out of memory for INFO");
            continue;
        }
        size_t kl = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vl = body - kl - 1;
        if (memchr(v, '=', vl) == NULL) {
            put_field(&o, line, kl, ':', v, vl);
        } else { /* a list line: name=...,k=v,... */
            if (rd_buf_append(&o, line, kl + 1) < 0)
                rd_panic("out of memory for INFO");
            for (const char *p = v;;) { /* every item, empty ones and a trailing comma included */
                const char *comma = memchr(p, ',', (size_t)(v + vl - p));
                size_t pl = comma ? (size_t)(comma - p) : (size_t)(v + vl - p);
                const char *eq = memchr(p, '=', pl);
                if (eq == NULL) {
                    if (rd_buf_append(&o, p, pl) < 0)
                        rd_panic("out of memory for INFO");
                } else {
                    put_field(&o, p, (size_t)(eq - p), '=', eq + 1, pl - (size_t)(eq - p) - 1);
                }
                if (comma == NULL)
                    break;
                if (rd_buf_append(&o, ",", 1) < 0)
                    rd_panic("out of memory for INFO");
                p = comma + 1;
            }
        }
        if (rd_buf_append(&o, line + body, ll - body) < 0)
            rd_panic("out of memory for INFO");
    }
    rd_buf_free(info);
    *info = o;
}
