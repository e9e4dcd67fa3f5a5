/*
 * fuzz_resp.c — libFuzzer target for the RESP2 request parser and the reply
 * reader. Parses every command in the input (as a server would, including
 * re-parsing each prefix to exercise the incomplete path) and checks the
 * parser's promises: consumed bytes are within the input, arguments point
 * inside the input or the scratch buffer, an incomplete parse asks for more
 * bytes than it was given, and the result does not depend on how the bytes
 * were split.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/resp.h"

#define FUZZ_CHECK(x) \
    do {              \
        if (!(x))     \
            abort();  \
    } while (0)

static int arg_inside(const struct resp_args *a, const struct resp_arg *v, const uint8_t *buf, size_t len)
{
    if (v->ptr >= buf && v->ptr + v->len <= buf + len)
        return 1;
    return a->scratch && v->ptr >= a->scratch && v->ptr + v->len <= a->scratch + a->scratch_cap;
}

/* Parses all commands; returns a hash of the argument bytes and structure. */
static uint64_t parse_all(const uint8_t *data, size_t size, const struct resp_limits *lim, int *final_rc)
{
    struct resp_args a = {0};
    uint64_t h = 1469598103934665603ull;
    size_t off = 0;
    int rc = 0;
    for (;;) {
        const char *err = NULL;
        rc = resp_parse(data + off, size - off, lim, &a, &err);
        if (rc <= 0) {
            if (rc == 0)
                FUZZ_CHECK(a.need_bytes > size - off);
            else
                FUZZ_CHECK(rc == -ENOMEM || (rc == RD_EPROTO && err != NULL && strlen(err) > 0));
            break;
        }
        FUZZ_CHECK((size_t)rc <= size - off);
        for (size_t i = 0; i < a.n; i++) {
            FUZZ_CHECK(arg_inside(&a, &a.v[i], data + off, (size_t)rc));
            for (size_t j = 0; j < a.v[i].len; j++)
                h = (h ^ a.v[i].ptr[j]) * 1099511628211ull;
            h = (h ^ 0x100) * 1099511628211ull;
        }
        h = (h ^ 0x200) * 1099511628211ull;
        off += (size_t)rc;
    }
    resp_args_free(&a);
    *final_rc = rc;
    return h;
}

/* Feeds the input in two pieces, as a server receiving two packets would. */
static uint64_t parse_split(const uint8_t *data, size_t size, size_t cut, const struct resp_limits *lim, int *final_rc)
{
    struct resp_args a = {0};
    uint64_t h = 1469598103934665603ull;
    size_t off = 0;
    size_t avail = cut;
    int rc = 0;
    for (;;) {
        const char *err = NULL;
        rc = resp_parse(data + off, avail - off, lim, &a, &err);
        if (rc == 0 && avail < size) {
            avail = size;
            continue;
        }
        if (rc <= 0)
            break;
        for (size_t i = 0; i < a.n; i++) {
            for (size_t j = 0; j < a.v[i].len; j++)
                h = (h ^ a.v[i].ptr[j]) * 1099511628211ull;
            h = (h ^ 0x100) * 1099511628211ull;
        }
        h = (h ^ 0x200) * 1099511628211ull;
        off += (size_t)rc;
    }
    resp_args_free(&a);
    *final_rc = rc;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* small limits so the fuzzer reaches them; the first byte picks a set */
    struct resp_limits lims[2];
    resp_limits_default(&lims[0]);
    lims[1] = (struct resp_limits){.max_args = 4, .max_bulk_bytes = 16, .max_inline_bytes = 32};
    const struct resp_limits *lim = &lims[size > 0 ? data[0] & 1 : 0];

    /* copy so that ASan catches any read past size */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);

    int rc_whole = 0, rc_split = 0;
    uint64_t h_whole = parse_all(copy, size, lim, &rc_whole);
    size_t cut = size ? (size_t)data[size - 1] * size / 256 : 0;
    uint64_t h_split = parse_split(copy, size, cut, lim, &rc_split);
    if (rc_whole != -ENOMEM && rc_split != -ENOMEM) {
        FUZZ_CHECK(h_whole == h_split);
        FUZZ_CHECK(rc_whole == rc_split);
    }

    /* the reply reader over the same bytes, reply after reply */
    size_t off = 0;
    for (int n = 0; n < 100000; n++) {
        struct resp_reply r;
        int rc = resp_read_reply(copy + off, size - off, &r);
        if (rc <= 0) {
            resp_reply_free(&r);
            break;
        }
        FUZZ_CHECK((size_t)rc <= size - off);
        if (r.type == RESP_BULK || r.type == RESP_STATUS || r.type == RESP_ERROR)
            FUZZ_CHECK(r.str >= copy + off && r.str + r.len <= copy + off + (size_t)rc);
        resp_reply_free(&r);
        off += (size_t)rc;
    }
    free(copy);
    return 0;
}
