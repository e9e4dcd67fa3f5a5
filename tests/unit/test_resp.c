/* test_resp.c — RESP2 request parser, encoders and reply reader. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "server/resp.h"

/* ------------------------------------------------------------ helpers */

/* Renders parsed commands as "[a|b|c]" per command (non-printable bytes as
 * \xHH), or "<ERR message>" / "<NOMEM>" and stops; "<INCOMPLETE>" if bytes
 * remain unparsed at the end. */
struct render {
    char s[8192];
    size_t n;
};

static void rput(struct render *r, const char *fmt, const void *a, size_t alen)
{
    char tmp[512];
    if (a) {
        const uint8_t *p = a;
        for (size_t i = 0; i < alen; i++) {
            int k = (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '|' && p[i] != '\\')
                        ? snprintf(tmp, sizeof(tmp), "%c", p[i])
                        : snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
            cr_assert(r->n + (size_t)k < sizeof(r->s));
            memcpy(r->s + r->n, tmp, (size_t)k);
            r->n += (size_t)k;
        }
    } else {
        int k = snprintf(tmp, sizeof(tmp), "%s", fmt);
        cr_assert(r->n + (size_t)k < sizeof(r->s));
        memcpy(r->s + r->n, tmp, (size_t)k);
        r->n += (size_t)k;
    }
    r->s[r->n] = 0;
}

static void render_cmd(struct render *r, const struct resp_args *a)
{
    rput(r, "[", NULL, 0);
    for (size_t i = 0; i < a->n; i++) {
        if (i)
            rput(r, "|", NULL, 0);
        rput(r, NULL, a->v[i].ptr, a->v[i].len);
    }
    rput(r, "]", NULL, 0);
}

static void render_result(struct render *r, int rc, const char *err)
{
    if (rc == RD_EPROTO) {
        rput(r, "<ERR ", NULL, 0);
        rput(r, err, NULL, 0);
        rput(r, ">", NULL, 0);
    } else {
        cr_assert_eq(rc, -ENOMEM);
        rput(r, "<NOMEM>", NULL, 0);
    }
}

/* Parses everything in one buffer. */
static void parse_whole(const void *data, size_t len, const struct resp_limits *lim, struct render *r)
{
    struct resp_args a = {0};
    const uint8_t *buf = data;
    size_t off = 0;
    memset(r, 0, sizeof(*r));
    for (;;) {
        const char *err = NULL;
        int rc = resp_parse(buf + off, len - off, lim, &a, &err);
        if (rc == 0) {
            cr_assert_gt(a.need_bytes, len - off);
            if (off < len)
                rput(r, "<INCOMPLETE>", NULL, 0);
            break;
        }
        if (rc < 0) {
            render_result(r, rc, err);
            break;
        }
        cr_assert_leq((size_t)rc, len - off);
        off += (size_t)rc;
        render_cmd(r, &a);
    }
    resp_args_free(&a);
}

/* Feeds the bytes one at a time into a growing buffer, as a server would. */
static void parse_bytewise(const void *data, size_t len, const struct resp_limits *lim, struct render *r)
{
    struct resp_args a = {0};
    struct rd_buf in = {0};
    memset(r, 0, sizeof(*r));
    int stop = 0;
    for (size_t i = 0; i < len && !stop; i++) {
        cr_assert_eq(rd_buf_append(&in, (const uint8_t *)data + i, 1), 0);
        size_t off = 0;
        for (;;) {
            const char *err = NULL;
            int rc = resp_parse(in.data + off, in.len - off, lim, &a, &err);
            if (rc == 0)
                break;
            if (rc < 0) {
                render_result(r, rc, err);
                stop = 1;
                break;
            }
            off += (size_t)rc;
            render_cmd(r, &a);
        }
        rd_buf_consume(&in, off);
    }
    if (!stop && in.len > 0)
        rput(r, "<INCOMPLETE>", NULL, 0);
    rd_buf_free(&in);
    resp_args_free(&a);
}

/* Both ways must give `want`. */
static void check(const char *input, size_t len, const struct resp_limits *lim, const char *want)
{
    struct render w, b;
    parse_whole(input, len, lim, &w);
    parse_bytewise(input, len, lim, &b);
    cr_assert_str_eq(w.s, want, "whole-buffer parse of %zu bytes", len);
    cr_assert_str_eq(b.s, want, "byte-by-byte parse of %zu bytes", len);
}
#define CHECK(lit, want) check(lit, sizeof(lit) - 1, NULL, want)

static int parse1(const char *s, struct resp_args *a, const char **err)
{
    return resp_parse((const uint8_t *)s, strlen(s), NULL, a, err);
}

/* ------------------------------------------------------------ multibulk */

Test(resp, parses_multibulk_command)
{
    CHECK("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", "[SET|k|hello]");
}

Test(resp, multibulk_is_binary_safe)
{
    CHECK("*2\r\n$3\r\nGET\r\n$6\r\na\r\n\0b\n\r\n", "[GET|a\\x0d\\x0a\\x00b\\x0a]");
    CHECK("*1\r\n$0\r\n\r\n", "[]");
}

Test(resp, returns_bytes_consumed_and_points_into_input)
{
    const char *in = "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n+extra";
    struct resp_args a = {0};
    const char *err = NULL;
    int rc = parse1(in, &a, &err);
    cr_assert_eq(rc, 22);
    cr_assert_eq(a.n, 2);
    cr_assert_eq((const char *)a.v[1].ptr, in + 18);
    cr_assert_eq(a.v[1].len, 2);
    resp_args_free(&a);
}

Test(resp, empty_and_null_multibulk_are_consumed_with_zero_args)
{
    CHECK("*0\r\n", "[]");
    CHECK("*-1\r\n", "[]");
    CHECK("*0\r\n*1\r\n$4\r\nPING\r\n", "[][PING]");
}

Test(resp, pipelined_commands_in_one_buffer)
{
    CHECK("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\nECHO x\r\n*1\r\n$4\r\nPING\r\n",
          "[PING][GET|a][ECHO|x][PING]");
}

Test(resp, incomplete_input_returns_zero_everywhere)
{
    const char *full = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
    size_t n = strlen(full);
    struct resp_args a = {0};
    for (size_t i = 0; i < n; i++) {
        const char *err = NULL;
        int rc = resp_parse((const uint8_t *)full, i, NULL, &a, &err);
        cr_assert_eq(rc, 0, "prefix of %zu bytes gave %d", i, rc);
        cr_assert_gt(a.need_bytes, i);
        cr_assert_leq(a.need_bytes, n, "need %zu > %zu at %zu", a.need_bytes, n, i);
    }
    resp_args_free(&a);
}

Test(resp, need_bytes_covers_a_partial_bulk)
{
    char hdr[] = "*2\r\n$3\r\nSET\r\n$1000000\r\nabc";
    struct resp_args a = {0};
    const char *err = NULL;
    cr_assert_eq(resp_parse((const uint8_t *)hdr, strlen(hdr), NULL, &a, &err), 0);
    cr_assert_eq(a.need_bytes, 13 + 10 + 1000000 + 2);
    resp_args_free(&a);
}

Test(resp, huge_incomplete_bulk_is_not_scanned)
{
    /* a 2 MiB bulk one byte short, payload full of \r: 100k calls finish in
     * milliseconds only if the parser never scans the payload (RP2). */
    size_t n = 2 * 1024 * 1024;
    uint8_t *buf = malloc(n);
    cr_assert_not_null(buf);
    memset(buf, '\r', n);
    int h = snprintf((char *)buf, 64, "*1\r\n$%zu\r\n", n);
    buf[h] = 'x';
    struct resp_args a = {0};
    const char *err = NULL;
    for (int i = 0; i < 100000; i++)
        cr_assert_eq(resp_parse(buf, n - 1, NULL, &a, &err), 0);
    resp_args_free(&a);
    free(buf);
}

/* ------------------------------------------------------------ errors */

Test(resp, rejects_bad_multibulk_length)
{
    CHECK("*x\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*1x\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*01\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*+1\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*1\rX", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*99999999999999999999999\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*1048577\r\n", "<ERR Protocol error: invalid multibulk length>");
    CHECK("*11111111111111111111111111111111111111111111", "<ERR Protocol error: invalid multibulk length>");
}

Test(resp, rejects_bad_bulk_length)
{
    CHECK("*1\r\n$x\r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$-1\r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$\r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$3 \r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$9223372036854775808\r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$2097153\r\n", "<ERR Protocol error: invalid bulk length>");
    CHECK("*1\r\n$1111111111111111111111111111111111111", "<ERR Protocol error: invalid bulk length>");
}

Test(resp, rejects_missing_dollar)
{
    CHECK("*2\r\n$1\r\na\r\nxyz\r\n", "<ERR Protocol error: expected '$', got 'x'>");
    CHECK("*1\r\n:1\r\n", "<ERR Protocol error: expected '$', got ':'>");
    check("*1\r\n\0", 5, NULL, "<ERR Protocol error: expected '$', got '\\x00'>");
}

Test(resp, rejects_bulk_without_crlf)
{
    CHECK("*1\r\n$1\r\nabc\r\n", "<ERR Protocol error: expected CRLF after bulk data>");
}

Test(resp, rejects_too_big_inline)
{
    struct resp_limits lim;
    resp_limits_default(&lim);
    lim.max_inline_bytes = 8;
    check("12345678\n", 9, &lim, "[12345678]");
    check("123456789", 9, &lim, "<ERR Protocol error: too big inline request>");
    check("123456789\n", 10, &lim, "<ERR Protocol error: too big inline request>");
    check("1234567", 7, &lim, "<INCOMPLETE>");

    size_t n = 70 * 1024;
    char *big = malloc(n);
    memset(big, 'a', n);
    struct resp_args a = {0};
    const char *err = NULL;
    cr_assert_eq(resp_parse((const uint8_t *)big, n, NULL, &a, &err), RD_EPROTO);
    cr_assert_str_eq(err, "Protocol error: too big inline request");
    resp_args_free(&a);
    free(big);
}

Test(resp, rejects_unbalanced_quotes)
{
    CHECK("SET \"a b\n", "<ERR Protocol error: unbalanced quotes in request>");
    CHECK("SET 'a b\n", "<ERR Protocol error: unbalanced quotes in request>");
    CHECK("SET \"a\"b\n", "<ERR Protocol error: unbalanced quotes in request>");
    CHECK("SET 'a'b\n", "<ERR Protocol error: unbalanced quotes in request>");
    CHECK("SET \"a\\\"\n", "<ERR Protocol error: unbalanced quotes in request>");
}

Test(resp, limits_apply)
{
    struct resp_limits lim = {.max_args = 2, .max_bulk_bytes = 3, .max_inline_bytes = 100};
    check("*2\r\n$3\r\nabc\r\n$3\r\ndef\r\n", 22, &lim, "[abc|def]");
    check("*3\r\n", 4, &lim, "<ERR Protocol error: invalid multibulk length>");
    check("*1\r\n$4\r\n", 8, &lim, "<ERR Protocol error: invalid bulk length>");
    check("a b\n", 4, &lim, "[a|b]");
    check("a b c\n", 6, &lim, "<ERR Protocol error: too many arguments in inline request>");
}

/* ------------------------------------------------------------ inline */

Test(resp, parses_inline_commands)
{
    CHECK("PING\r\n", "[PING]");
    CHECK("PING\n", "[PING]");
    CHECK("  SET   k\tv  \r\n", "[SET|k|v]");
    CHECK("GET a\r\nGET b\n", "[GET|a][GET|b]");
}

Test(resp, empty_inline_lines_are_consumed_with_zero_args)
{
    CHECK("\r\n", "[]");
    CHECK("\n", "[]");
    CHECK("   \t \r\n", "[]");
    CHECK("\r\n\r\nPING\r\n", "[][][PING]");
}

Test(resp, inline_quotes_like_redis)
{
    CHECK("SET \"a b\" 'c d'\r\n", "[SET|a b|c d]");
    CHECK("SET \"\\x41\\x7a\\n\\r\\t\\\\\\\"\"\n", "[SET|Az\\x0a\\x0d\\x09\\x5c\"]");
    CHECK("SET \"\\xZZ\" \"\\q\"\n", "[SET|xZZ|q]");
    CHECK("SET 'it\\'s' 'a\\nb'\n", "[SET|it's|a\\x5cnb]");
    CHECK("SET \"\" ''\n", "[SET||]");
    CHECK("SET pre\"fix x\"\n", "[SET|prefix x]");
    CHECK("SET \"a\" \"b\"\r\n", "[SET|a|b]");
}

Test(resp, quoted_args_survive_many_tokens)
{
    /* scratch is sized once per line, so earlier args stay valid */
    CHECK("\"a\" \"b\" \"c\" plain \"d e\" 'f'\n", "[a|b|c|plain|d e|f]");
}

/* ------------------------------------------------------------ encoders */

static void expect_buf(struct rd_buf *b, const char *want, size_t want_len)
{
    cr_assert_eq(b->len, want_len, "got %zu bytes: %.*s", b->len, (int)b->len, (const char *)b->data);
    cr_assert(memcmp(b->data, want, want_len) == 0, "got %.*s", (int)b->len, (const char *)b->data);
    rd_buf_reset(b);
}
#define EXPECT(b, lit) expect_buf(b, lit, sizeof(lit) - 1)

Test(resp, encodes_every_reply_type)
{
    struct rd_buf b = {0};
    cr_assert_eq(resp_simple(&b, "OK"), 0);
    EXPECT(&b, "+OK\r\n");
    cr_assert_eq(resp_error(&b, "ERR bad\r\nthing"), 0);
    EXPECT(&b, "-ERR bad  thing\r\n");
    cr_assert_eq(resp_errorf(&b, "ERR %s %d", "x", 7), 0);
    EXPECT(&b, "-ERR x 7\r\n");
    cr_assert_eq(resp_int(&b, -9223372036854775807LL - 1), 0);
    EXPECT(&b, ":-9223372036854775808\r\n");
    cr_assert_eq(resp_int(&b, 42), 0);
    EXPECT(&b, ":42\r\n");
    cr_assert_eq(resp_bulk(&b, "a\0b", 3), 0);
    EXPECT(&b, "$3\r\na\0b\r\n");
    cr_assert_eq(resp_bulk(&b, NULL, 0), 0);
    EXPECT(&b, "$0\r\n\r\n");
    cr_assert_eq(resp_bulk_str(&b, "hey"), 0);
    EXPECT(&b, "$3\r\nhey\r\n");
    cr_assert_eq(resp_bulkf(&b, "n=%d", 12345), 0);
    EXPECT(&b, "$7\r\nn=12345\r\n");
    cr_assert_eq(resp_null(&b), 0);
    EXPECT(&b, "$-1\r\n");
    cr_assert_eq(resp_array_hdr(&b, 3), 0);
    EXPECT(&b, "*3\r\n");
    cr_assert_eq(resp_null_array(&b), 0);
    EXPECT(&b, "*-1\r\n");
    rd_buf_free(&b);
}

Test(resp, command_encoder_round_trips_through_parser)
{
    struct rd_buf b = {0};
    const char *argv[] = {"SET", "key with space", "", "\r\n"};
    cr_assert_eq(resp_command_str(&b, 4, argv), 0);
    struct resp_args a = {0};
    const char *err = NULL;
    int rc = resp_parse(b.data, b.len, NULL, &a, &err);
    cr_assert_eq((size_t)rc, b.len);
    cr_assert_eq(a.n, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(a.v[i].len, strlen(argv[i]));
        cr_assert(memcmp(a.v[i].ptr, argv[i], a.v[i].len) == 0);
    }
    resp_args_free(&a);
    rd_buf_free(&b);
}

Test(resp, random_commands_round_trip_whole_and_split)
{
    unsigned seed = getenv("SEED") ? (unsigned)strtoul(getenv("SEED"), NULL, 0) : 12345u;
    printf("test_resp random round trip: SEED=%u\n", seed);
    srand(seed);
    for (int iter = 0; iter < 200; iter++) {
        struct rd_buf b = {0};
        struct render want = {0};
        int ncmd = 1 + rand() % 4;
        for (int c = 0; c < ncmd; c++) {
            struct resp_arg av[6];
            uint8_t store[6][20];
            size_t argc = (size_t)(1 + rand() % 5);
            for (size_t i = 0; i < argc; i++) {
                av[i].len = (size_t)(rand() % 20);
                for (size_t j = 0; j < av[i].len; j++)
                    store[i][j] = (uint8_t)rand();
                av[i].ptr = store[i];
            }
            cr_assert_eq(resp_command(&b, argc, av), 0);
            struct resp_args tmp = {.v = av, .n = argc};
            render_cmd(&want, &tmp);
        }
        struct render w, s;
        parse_whole(b.data, b.len, NULL, &w);
        parse_bytewise(b.data, b.len, NULL, &s);
        cr_assert_str_eq(w.s, want.s, "SEED=%u iter %d", seed, iter);
        cr_assert_str_eq(s.s, want.s, "SEED=%u iter %d", seed, iter);
        rd_buf_free(&b);
    }
}

/* ------------------------------------------------------------ reply reader */

static int read1(const char *s, size_t n, struct resp_reply *r) { return resp_read_reply((const uint8_t *)s, n, r); }
#define READ(lit, r) read1(lit, sizeof(lit) - 1, r)

Test(resp, reads_scalar_replies)
{
    struct resp_reply r;
    cr_assert_eq(READ("+OK\r\n", &r), 5);
    cr_assert_eq(r.type, RESP_STATUS);
    cr_assert(resp_reply_is_status(&r, "OK"));
    cr_assert_eq(READ("-ERR no\r\n", &r), 9);
    cr_assert_eq(r.type, RESP_ERROR);
    cr_assert_eq(r.len, 6);
    cr_assert_eq(READ(":-12\r\n", &r), 6);
    cr_assert_eq(r.type, RESP_INT);
    cr_assert_eq(r.integer, -12);
    cr_assert_eq(READ("$3\r\na\rb\r\n", &r), 9);
    cr_assert_eq(r.type, RESP_BULK);
    cr_assert_eq(r.len, 3);
    cr_assert(memcmp(r.str, "a\rb", 3) == 0);
    cr_assert_eq(READ("$-1\r\n", &r), 5);
    cr_assert_eq(r.type, RESP_NIL);
    cr_assert_eq(READ("*-1\r\n", &r), 5);
    cr_assert_eq(r.type, RESP_NIL_ARRAY);
    cr_assert_eq(READ("*0\r\n", &r), 4);
    cr_assert_eq(r.type, RESP_ARRAY);
    cr_assert_eq(r.nelems, 0);
    resp_reply_free(&r);
}

Test(resp, reads_nested_arrays)
{
    const char *in = "*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+OK\r\n";
    struct resp_reply r;
    int n = (int)strlen(in);
    cr_assert_eq(read1(in, (size_t)n, &r), n);
    cr_assert_eq(r.type, RESP_ARRAY);
    cr_assert_eq(r.nelems, 3);
    cr_assert_eq(r.elems[0].integer, 1);
    cr_assert_eq(r.elems[1].type, RESP_ARRAY);
    cr_assert_eq(r.elems[1].elems[0].type, RESP_BULK);
    cr_assert_eq(r.elems[1].elems[1].type, RESP_NIL);
    cr_assert(resp_reply_is_status(&r.elems[2], "OK"));
    resp_reply_free(&r);
    /* every strict prefix is incomplete */
    for (int i = 0; i < n; i++) {
        cr_assert_eq(read1(in, (size_t)i, &r), 0, "prefix %d", i);
        resp_reply_free(&r);
    }
}

Test(resp, reply_reader_rejects_garbage)
{
    struct resp_reply r;
    cr_assert_eq(READ("hello\r\n", &r), RD_EPROTO);
    cr_assert_eq(READ(":abc\r\n", &r), RD_EPROTO);
    cr_assert_eq(READ("$-2\r\n", &r), RD_EPROTO);
    cr_assert_eq(READ("$1\r\nab\r\n", &r), RD_EPROTO);
    cr_assert_eq(READ("*2\r\n:1\r\n?\r\n", &r), RD_EPROTO);
    cr_assert_eq(READ("+OK\rX", &r), RD_EPROTO);
    /* nesting deeper than the limit */
    char deep[256] = {0};
    for (int i = 0; i <= RESP_REPLY_MAX_DEPTH; i++)
        strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    cr_assert_eq(read1(deep, strlen(deep), &r), RD_EPROTO);
    resp_reply_free(&r);
}

Test(resp, reply_reader_does_not_allocate_for_declared_count)
{
    struct resp_reply r;
    /* declares 64M elements but only a few bytes follow: incomplete, no allocation */
    cr_assert_eq(READ("*67108864\r\n:1\r\n", &r), 0);
    cr_assert_eq(READ("*67108865\r\n", &r), RD_EPROTO);
}
