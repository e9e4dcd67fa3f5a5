/* resp.c — RESP2 request parser, reply encoders, reply reader (see resp.h). */
#include "common/resp.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/util.h"

/* A request header line: '*' or '$', optional '-', at most 19 digits, \r\n. */
#define RESP_HDR_MAX_BYTES 32
/* The smallest complete bulk argument: "$0\r\n\r\n". */
#define RESP_MIN_BULK_BYTES 6

/* ------------------------------------------------------------ helpers */

static size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }
static size_t sat_mul(size_t a, size_t b) { return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Strict decimal int64 (Redis string2ll rules): optional '-', no '+', no
 * leading zeros except "0" itself, no "-0", no spaces. Overflow-safe.
 * Returns 0, or -1 when p[0 .. n-1] is not such a number. */
static int parse_i64(const uint8_t *p, size_t n, int64_t *v)
{
    size_t i = 0;
    int neg = 0;
    if (n == 0 || n > 20)
        return -1;
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return -1;
    }
    if (p[i] == '0') {
        if (n == 1) {
            *v = 0;
            return 0;
        }
        return -1; /* leading zero or "-0" */
    }
    uint64_t acc = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (acc > (UINT64_MAX - d) / 10)
            return -1;
        acc = acc * 10 + d;
    }
    if (neg) {
        if (acc > (uint64_t)INT64_MAX + 1)
            return -1;
        *v = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
    } else {
        if (acc > (uint64_t)INT64_MAX)
            return -1;
        *v = (int64_t)acc;
    }
    return 0;
}

/* Finds the \r\n that ends the line starting at p, looking at most max bytes.
 * Returns 1 with *cr = offset of '\r'; 0 if more bytes may complete it;
 * -1 if there is no \r within max bytes or the \r is not followed by \n. */
static int find_crlf(const uint8_t *p, size_t avail, size_t max, size_t *cr)
{
    const uint8_t *q = memchr(p, '\r', RD_MIN(avail, max));
    if (q == NULL)
        return avail >= max ? -1 : 0;
    size_t i = (size_t)(q - p);
    if (i + 1 >= avail)
        return 0;
    if (p[i + 1] != '\n')
        return -1;
    *cr = i;
    return 1;
}

/* ------------------------------------------------------------ request parser */

static _Thread_local char resp_errbuf[160];

void resp_limits_default(struct resp_limits *lim)
{
    lim->max_args = RESP_DEFAULT_MAX_ARGS;
    lim->max_bulk_bytes = RESP_DEFAULT_MAX_BULK_BYTES;
    lim->max_inline_bytes = RESP_DEFAULT_MAX_INLINE_BYTES;
}

void resp_args_free(struct resp_args *a)
{
    free(a->v);
    free(a->scratch);
    memset(a, 0, sizeof(*a));
}

static int proto_err(const char **err, const char *msg)
{
    if (err)
        *err = msg;
    return RD_EPROTO;
}

static int args_push(struct resp_args *a, const uint8_t *ptr, size_t len)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct resp_arg *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n].ptr = ptr;
    a->v[a->n].len = len;
    a->n++;
    return 0;
}

static int incomplete(struct resp_args *out, size_t len, size_t need)
{
    out->n = 0;
    out->need_bytes = RD_MAX(need, sat_add(len, 1));
    return 0;
}

static int parse_multibulk(const uint8_t *buf, size_t len, const struct resp_limits *lim,
                           struct resp_args *out, const char **err)
{
    size_t cr = 0;
    int64_t count = 0;
    int f = find_crlf(buf, len, RESP_HDR_MAX_BYTES, &cr);
    if (f == 0)
        return incomplete(out, len, len + 1);
    if (f < 0 || parse_i64(buf + 1, cr - 1, &count) < 0 ||
        (count > 0 && (uint64_t)count > lim->max_args))
        return proto_err(err, "Protocol error: invalid multibulk length");
    size_t pos = cr + 2;
    if (count <= 0)
        return (int)pos; /* *0, *-1: nothing to execute */

    for (size_t i = 0; i < (size_t)count; i++) {
        size_t left_after = sat_mul((size_t)count - i - 1, RESP_MIN_BULK_BYTES);
        if (pos >= len)
            return incomplete(out, len, sat_add(pos, sat_add(RESP_MIN_BULK_BYTES, left_after)));
        if (buf[pos] != '$') {
            uint8_t c = buf[pos];
            if (c >= 0x20 && c < 0x7f)
                snprintf(resp_errbuf, sizeof(resp_errbuf), "Protocol error: expected '$', got '%c'", c);
            else
                snprintf(resp_errbuf, sizeof(resp_errbuf), "Protocol error: expected '$', got '\\x%02x'", c);
            out->n = 0;
            return proto_err(err, resp_errbuf);
        }
        int64_t blen = 0;
        f = find_crlf(buf + pos, len - pos, RESP_HDR_MAX_BYTES, &cr);
        if (f == 0)
            return incomplete(out, len, sat_add(pos, sat_add(RESP_MIN_BULK_BYTES, left_after)));
        if (f < 0 || parse_i64(buf + pos + 1, cr - 1, &blen) < 0 || blen < 0) {
            out->n = 0;
            return proto_err(err, "Protocol error: invalid bulk length");
        }
        if ((uint64_t)blen > lim->max_bulk_bytes) { /* say why: the same words as a command's limit */
            snprintf(resp_errbuf, sizeof(resp_errbuf),
                     "Protocol error: invalid bulk length: value too large (%lld bytes; the limit is %zu)",
                     (long long)blen, lim->max_bulk_bytes);
            out->n = 0;
            return proto_err(err, resp_errbuf);
        }
        size_t data = pos + cr + 2;
        size_t end = sat_add(data, sat_add((size_t)blen, 2));
        if (end > len) /* RP2: the payload is not scanned until it is all here */
            return incomplete(out, len, sat_add(end, left_after));
        if (buf[end - 2] != '\r' || buf[end - 1] != '\n') {
            out->n = 0;
            return proto_err(err, "Protocol error: expected CRLF after bulk data");
        }
        if (end > INT_MAX) {
            out->n = 0;
            return proto_err(err, "Protocol error: request too big");
        }
        if (args_push(out, buf + data, (size_t)blen) < 0) {
            out->n = 0;
            return -ENOMEM;
        }
        pos = end;
    }
    return (int)pos;
}

/* Makes room to decode a whole line into scratch. Called before any argument
 * points into scratch, so a realloc cannot leave one dangling. */
static int scratch_reserve(struct resp_args *a, size_t n)
{
    if (a->scratch_cap >= n)
        return 0;
    uint8_t *p = realloc(a->scratch, n);
    if (p == NULL)
        return -ENOMEM;
    a->scratch = p;
    a->scratch_cap = n;
    return 0;
}

/* Decodes the quoted part of a token starting at line[*pp] (the quote) into
 * dst, appending at *dn. Returns 0 with *pp past the closing quote, or -1. */
static int decode_quoted(const uint8_t *line, size_t end, size_t *pp, uint8_t *dst, size_t *dn)
{
    size_t p = *pp;
    uint8_t q = line[p++];
    for (;;) {
        if (p >= end)
            return -1; /* unterminated */
        uint8_t c = line[p];
        if (q == '"' && c == '\\' && p + 3 < end && line[p + 1] == 'x' &&
            hex_val(line[p + 2]) >= 0 && hex_val(line[p + 3]) >= 0) {
            dst[(*dn)++] = (uint8_t)(hex_val(line[p + 2]) * 16 + hex_val(line[p + 3]));
            p += 4;
        } else if (q == '"' && c == '\\' && p + 1 < end) {
            uint8_t e = line[p + 1];
            switch (e) {
            case 'n': e = '\n'; break;
            case 'r': e = '\r'; break;
            case 't': e = '\t'; break;
            case 'b': e = '\b'; break;
            case 'a': e = '\a'; break;
            default: break;
            }
            dst[(*dn)++] = e;
            p += 2;
        } else if (q == '\'' && c == '\\' && p + 1 < end && line[p + 1] == '\'') {
            dst[(*dn)++] = '\'';
            p += 2;
        } else if (c == q) {
            /* the closing quote must end the token */
            if (p + 1 < end && !is_space(line[p + 1]))
                return -1;
            *pp = p + 1;
            return 0;
        } else {
            dst[(*dn)++] = c;
            p++;
        }
    }
}

/* Splits line[0 .. end-1] like Redis's sdssplitargs (NUL is an ordinary byte). */
static int split_inline(const uint8_t *line, size_t end, const struct resp_limits *lim,
                        struct resp_args *out, const char **err)
{
    size_t p = 0, sn = 0; /* sn: bytes used in scratch */
    for (;;) {
        while (p < end && is_space(line[p]))
            p++;
        if (p == end)
            return 0;
        if (out->n >= lim->max_args)
            return proto_err(err, "Protocol error: too many arguments in inline request");
        size_t start = p;
        while (p < end && !is_space(line[p]) && line[p] != '"' && line[p] != '\'')
            p++;
        int rc;
        if (p == end || is_space(line[p])) {
            rc = args_push(out, line + start, p - start); /* plain token: zero copy */
        } else {
            if (scratch_reserve(out, end) < 0)
                return -ENOMEM;
            size_t tok = sn;
            memcpy(out->scratch + sn, line + start, p - start);
            sn += p - start;
            if (decode_quoted(line, end, &p, out->scratch, &sn) < 0)
                return proto_err(err, "Protocol error: unbalanced quotes in request");
            rc = args_push(out, out->scratch + tok, sn - tok);
        }
        if (rc < 0)
            return rc;
    }
}

static int parse_inline(const uint8_t *buf, size_t len, const struct resp_limits *lim,
                        struct resp_args *out, const char **err)
{
    size_t scan = RD_MIN(len, sat_add(lim->max_inline_bytes, 1));
    const uint8_t *nl = memchr(buf, '\n', scan);
    if (nl == NULL) {
        if (len > lim->max_inline_bytes)
            return proto_err(err, "Protocol error: too big inline request");
        return incomplete(out, len, len + 1);
    }
    size_t line_len = (size_t)(nl - buf);
    int rc = split_inline(buf, line_len, lim, out, err);
    if (rc < 0) {
        out->n = 0;
        return rc;
    }
    return (int)(line_len + 1);
}

int resp_parse(const uint8_t *buf, size_t len, const struct resp_limits *lim,
               struct resp_args *out, const char **err)
{
    struct resp_limits def;
    if (lim == NULL) {
        resp_limits_default(&def);
        lim = &def;
    }
    out->n = 0;
    out->need_bytes = 0;
    if (len == 0)
        return incomplete(out, 0, 1);
    /* every value returned as consumed bytes must fit in int */
    if (len > INT_MAX)
        len = INT_MAX;
    if (buf[0] == '*')
        return parse_multibulk(buf, len, lim, out, err);
    return parse_inline(buf, len, lim, out, err);
}

/* ------------------------------------------------------------ reply encoders */

static int put_line(struct rd_buf *b, char type, const char *s)
{
    size_t n = strlen(s);
    int rc = rd_buf_reserve(b, n + 3);
    if (rc < 0)
        return rc;
    uint8_t *d = b->data + b->len;
    d[0] = (uint8_t)type;
    for (size_t i = 0; i < n; i++)
        d[1 + i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : (uint8_t)s[i];
    d[n + 1] = '\r';
    d[n + 2] = '\n';
    b->len += n + 3;
    return 0;
}

static int put_num(struct rd_buf *b, char type, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%c%lld\r\n", type, (long long)v);
    rd_assert(n > 0 && (size_t)n < sizeof(tmp));
    return rd_buf_append(b, tmp, (size_t)n);
}

int resp_simple(struct rd_buf *b, const char *s) { return put_line(b, '+', s); }
int resp_error(struct rd_buf *b, const char *msg) { return put_line(b, '-', msg); }

int resp_errorf(struct rd_buf *b, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap); /* long messages are cut, as Redis does */
    va_end(ap);
    return put_line(b, '-', msg);
}

int resp_int(struct rd_buf *b, int64_t v) { return put_num(b, ':', v); }
int resp_null(struct rd_buf *b) { return rd_buf_append(b, "$-1\r\n", 5); }
int resp_null_array(struct rd_buf *b) { return rd_buf_append(b, "*-1\r\n", 5); }

int resp_array_hdr(struct rd_buf *b, size_t n)
{
    rd_assert(n <= (size_t)INT64_MAX);
    return put_num(b, '*', (int64_t)n);
}

int resp_bulk(struct rd_buf *b, const void *p, size_t len)
{
    char hdr[32];
    int h = snprintf(hdr, sizeof(hdr), "$%zu\r\n", len);
    rd_assert(h > 0 && (size_t)h < sizeof(hdr));
    int rc = rd_buf_reserve(b, sat_add((size_t)h, sat_add(len, 2)));
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, hdr, (size_t)h);
    if (len > 0)
        memcpy(b->data + b->len + (size_t)h, p, len);
    memcpy(b->data + b->len + (size_t)h + len, "\r\n", 2);
    b->len += (size_t)h + len + 2;
    return 0;
}

int resp_bulk_str(struct rd_buf *b, const char *s) { return resp_bulk(b, s, strlen(s)); }

int resp_bulkf(struct rd_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    char hdr[32];
    int h = snprintf(hdr, sizeof(hdr), "$%d\r\n", n);
    int rc = rd_buf_reserve(b, (size_t)h + (size_t)n + 3); /* +1: vsnprintf's NUL */
    if (rc < 0)
        return rc;
    uint8_t *d = b->data + b->len;
    memcpy(d, hdr, (size_t)h);
    va_start(ap, fmt);
    vsnprintf((char *)d + h, (size_t)n + 1, fmt, ap);
    va_end(ap);
    memcpy(d + h + n, "\r\n", 2);
    b->len += (size_t)h + (size_t)n + 2;
    return 0;
}

int resp_command(struct rd_buf *b, size_t argc, const struct resp_arg *argv)
{
    size_t need = 24;
    for (size_t i = 0; i < argc; i++)
        need = sat_add(need, sat_add(argv[i].len, 24));
    int rc = rd_buf_reserve(b, need); /* RP4: after this nothing can fail */
    if (rc < 0)
        return rc;
    rc = resp_array_hdr(b, argc);
    for (size_t i = 0; rc == 0 && i < argc; i++)
        rc = resp_bulk(b, argv[i].ptr, argv[i].len);
    rd_assert(rc == 0);
    return 0;
}

int resp_command_str(struct rd_buf *b, size_t argc, const char *const *argv)
{
    struct resp_arg small[16] = {{0}};
    struct resp_arg *v = argc <= RD_ARRAY_LEN(small) ? small : malloc(argc * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < argc; i++) {
        v[i].ptr = (const uint8_t *)argv[i];
        v[i].len = strlen(argv[i]);
    }
    int rc = resp_command(b, argc, v);
    if (v != small)
        free(v);
    return rc;
}

/* ------------------------------------------------------------ reply reader */

void resp_reply_free(struct resp_reply *r)
{
    if (r->type == RESP_ARRAY && r->elems) {
        for (size_t i = 0; i < r->nelems; i++)
            resp_reply_free(&r->elems[i]);
        free(r->elems);
    }
    memset(r, 0, sizeof(*r));
}

int resp_reply_is_status(const struct resp_reply *r, const char *s)
{
    size_t n = strlen(s);
    return r->type == RESP_STATUS && r->len == n && memcmp(r->str, s, n) == 0;
}

/* Returns bytes taken (> 0), 0 incomplete, or a negative error; *out owns
 * nothing unless > 0 is returned. Recursion depth is bounded by
 * RESP_REPLY_MAX_DEPTH (this is the client side, not a storage path). */
static int64_t read_reply(const uint8_t *buf, size_t len, struct resp_reply *out, int depth)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return 0;
    uint8_t t = buf[0];
    if (t != '+' && t != '-' && t != ':' && t != '$' && t != '*')
        return RD_EPROTO;
    size_t cr = 0;
    int f = find_crlf(buf, len, RESP_REPLY_MAX_LINE_BYTES, &cr);
    if (f <= 0)
        return f == 0 ? 0 : RD_EPROTO;
    size_t pos = cr + 2;
    int64_t n = 0;
    if (t == '+' || t == '-') {
        out->type = t == '+' ? RESP_STATUS : RESP_ERROR;
        out->str = buf + 1;
        out->len = cr - 1;
        return (int64_t)pos;
    }
    if (parse_i64(buf + 1, cr - 1, &n) < 0)
        return RD_EPROTO;
    if (t == ':') {
        out->type = RESP_INT;
        out->integer = n;
        return (int64_t)pos;
    }
    if (t == '$') {
        if (n == -1) {
            out->type = RESP_NIL;
            return (int64_t)pos;
        }
        if (n < 0 || (uint64_t)n > RESP_REPLY_MAX_BULK_BYTES)
            return RD_EPROTO;
        if (len - pos < (size_t)n + 2)
            return 0;
        if (buf[pos + (size_t)n] != '\r' || buf[pos + (size_t)n + 1] != '\n')
            return RD_EPROTO;
        out->type = RESP_BULK;
        out->str = buf + pos;
        out->len = (size_t)n;
        return (int64_t)(pos + (size_t)n + 2);
    }
    /* '*' */
    if (n == -1) {
        out->type = RESP_NIL_ARRAY;
        return (int64_t)pos;
    }
    if (n < 0 || (uint64_t)n > RESP_REPLY_MAX_ELEMS || depth >= RESP_REPLY_MAX_DEPTH)
        return RD_EPROTO;
    if (n == 0) {
        out->type = RESP_ARRAY;
        return (int64_t)pos;
    }
    /* each element takes at least 3 bytes ("+\r\n"): do not allocate for
     * elements that cannot be in the buffer yet */
    if ((len - pos) / 3 < (size_t)n)
        return 0;
    struct resp_reply *el = calloc((size_t)n, sizeof(*el));
    if (el == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < (size_t)n; i++) {
        int64_t r = read_reply(buf + pos, len - pos, &el[i], depth + 1);
        if (r <= 0) {
            for (size_t j = 0; j < i; j++)
                resp_reply_free(&el[j]);
            free(el);
            return r;
        }
        pos += (size_t)r;
    }
    out->type = RESP_ARRAY;
    out->elems = el;
    out->nelems = (size_t)n;
    return (int64_t)pos;
}

int resp_read_reply(const uint8_t *buf, size_t len, struct resp_reply *out)
{
    int64_t r = read_reply(buf, len, out, 0);
    if (r > INT_MAX) {
        resp_reply_free(out);
        return RD_EPROTO;
    }
    return (int)r;
}

int resp_arg_eq(const struct resp_arg *a, const char *s)
{
    size_t n = strlen(s);
    return a->len == n && strncasecmp((const char *)a->ptr, s, n) == 0;
}
