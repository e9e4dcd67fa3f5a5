/* Unit tests for common/: byte helpers, checksums, buffers, histogram. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/checksum.h"
#include "common/err.h"
#include "common/hist.h"
#include "common/util.h"

Test(common, little_endian_round_trip)
{
    uint8_t b[8];
    rd_put_u16le(b, 0xBEEF);
    cr_assert_eq(b[0], 0xEF);
    cr_assert_eq(rd_get_u16le(b), 0xBEEF);
    rd_put_u32le(b, 0xDEADBEEFu);
    cr_assert_eq(b[0], 0xEF);
    cr_assert_eq(b[3], 0xDE);
    cr_assert_eq(rd_get_u32le(b), 0xDEADBEEFu);
    rd_put_u64le(b, 0x0123456789ABCDEFull);
    cr_assert_eq(b[0], 0xEF);
    cr_assert_eq(b[7], 0x01);
    cr_assert_eq(rd_get_u64le(b), 0x0123456789ABCDEFull);
}

Test(common, checksum_depends_on_seed_and_every_byte)
{
    uint8_t data[100];
    memset(data, 7, sizeof(data));
    uint64_t a = rd_checksum64(data, sizeof(data), RD_SEED_PAGE);
    cr_assert_neq(a, rd_checksum64(data, sizeof(data), RD_SEED_WAL));
    data[99] ^= 1;
    cr_assert_neq(a, rd_checksum64(data, sizeof(data), RD_SEED_PAGE));
    data[99] ^= 1;
    cr_assert_eq(a, rd_checksum64_2(data, 40, data + 40, 60, RD_SEED_PAGE));
}

Test(common, buffer_grows_and_consumes)
{
    struct rd_buf b = {0};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(rd_buf_appendf(&b, "%04d", i), 0);
    cr_assert_eq(b.len, 4000);
    cr_assert(memcmp(b.data, "00000001", 8) == 0);
    rd_buf_consume(&b, 3996);
    cr_assert_eq(b.len, 4);
    cr_assert(memcmp(b.data, "0999", 4) == 0);
    rd_buf_free(&b);
    cr_assert_null(b.data);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(common, histogram_percentiles_within_bucket_error)
{
    static struct rd_hist h;
    rd_hist_init(&h);
    enum { N = 100000 };
    uint64_t *v = malloc(N * sizeof(*v));
    srand(42);
    for (int i = 0; i < N; i++) {
        v[i] = (uint64_t)(rand() % 100000) * (uint64_t)(rand() % 100 + 1);
        rd_hist_record(&h, v[i]);
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < 4; i++) {
        uint64_t exact = v[(size_t)(ps[i] / 100.0 * N) - 1];
        uint64_t got = rd_hist_percentile(&h, ps[i]);
        cr_assert(got >= exact, "p%.1f: got %lu < exact %lu", ps[i], (unsigned long)got, (unsigned long)exact);
        cr_assert(got <= exact + exact / 8 + 1, "p%.1f: got %lu, exact %lu", ps[i], (unsigned long)got,
                  (unsigned long)exact);
    }
    cr_assert_eq(rd_hist_percentile(&h, 100), v[N - 1]);
    cr_assert_eq(h.total, N);
    free(v);
}

Test(common, strerror_names_project_and_system_errors)
{
    cr_assert_str_eq(rd_strerror(RD_ENOTFOUND), "not found");
    cr_assert(strstr(rd_strerror(-2), "No such file") != NULL);
}
