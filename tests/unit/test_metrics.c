/* Unit tests for common/metrics.c: LSNs in both forms (C21), INFO rewritten to X/Y,
 * INFO turned into gauges with every family written once (C20), histograms, escaping. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/metrics.h"
#include "common/util.h"

static uint64_t lsn(const char *s)
{
    uint64_t v = 0;
    cr_assert_eq(rd_lsn_parse(s, strlen(s), &v), 0, "%s", s);
    return v;
}

Test(metrics, lsn_parses_both_forms)
{
    cr_assert_eq(lsn("0/158"), 0x158);
    cr_assert_eq(lsn("344"), 344);
    cr_assert_eq(lsn("1/0"), 1ull << 32);
    cr_assert_eq(lsn("FFFFFFFF/ffffffff"), UINT64_MAX);
    cr_assert_eq(lsn("18446744073709551615"), UINT64_MAX);
    uint64_t v;
    const char *bad[] = {"", "/", "1/", "/1", "x", "1/g", "123456789/0", "0/123456789", "-1", "1 ", "1/2/3",
                         "18446744073709551616"};
    for (size_t i = 0; i < RD_ARRAY_LEN(bad); i++)
        cr_assert_lt(rd_lsn_parse(bad[i], strlen(bad[i]), &v), 0, "%s", bad[i]);
}

Test(metrics, lsn_format_round_trips)
{
    uint64_t vals[] = {0, 1, 0x158, 1ull << 32, 0x123456789abcull, UINT64_MAX};
    for (size_t i = 0; i < RD_ARRAY_LEN(vals); i++) {
        char s[20];
        rd_lsn_fmt(s, sizeof(s), vals[i]);
        cr_assert_eq(lsn(s), vals[i]);
        cr_assert_str_eq(rd_lsn_str(vals[i]), s);
    }
}

Test(metrics, which_fields_are_lsns)
{
    const char *yes[] = {"wal_insert_lsn", "apply_lsn", "scl", "vdl", "vcl", "read_point", "min_read_point",
                         "writer_vdl", "vdl_seen", "max_cpl", "coalesced", "trimmed", "truncated_above",
                         "hotlog_trim_point", "lsn", "chosen_lsn"};
    const char *no[] = {"master_repl_offset", "slave_repl_offset", "offset", "lag_lsn", "lag_bytes", "records_trimmed",
                        "fetch_trimmed_answers", "epoch", "term", "timeline", "wal_bytes", "oldest_commit_wait_ms",
                        "trim_gave_up", "port"};
    for (size_t i = 0; i < RD_ARRAY_LEN(yes); i++)
        cr_assert(rd_info_field_is_lsn(yes[i], strlen(yes[i])), "%s", yes[i]);
    for (size_t i = 0; i < RD_ARRAY_LEN(no); i++)
        cr_assert(!rd_info_field_is_lsn(no[i], strlen(no[i])), "%s", no[i]);
}

Test(metrics, info_lsns_become_xy_and_nothing_else_changes)
{
    const char *in = "# Replication\r\nrole:master\r\nflush_lsn:344\r\nmaster_repl_offset:344\r\n"
                     "slave0:name=r1,port=7402,flush_lsn=4294967296,offset=12,lag_lsn=5\r\nlag_lsn:7\r\n"
                     "already:0/1\r\nscl:0/6\r\n\r\n";
    const char *want = "# Replication\r\nrole:master\r\nflush_lsn:0/158\r\nmaster_repl_offset:344\r\n"
                       "slave0:name=r1,port=7402,flush_lsn=1/0,offset=12,lag_lsn=5\r\nlag_lsn:7\r\n"
                       "already:0/1\r\nscl:0/6\r\n\r\n";
    struct rd_buf b = {0};
    cr_assert_eq(rd_buf_append(&b, in, strlen(in)), 0);
    rd_info_lsns_xy(&b);
    cr_assert_eq(b.len, strlen(want));
    cr_assert(memcmp(b.data, want, b.len) == 0, "%.*s", (int)b.len, (const char *)b.data);
    rd_buf_free(&b);
}

/* Each "# TYPE name" appears once and all samples of name follow it without another family between. */
static void assert_contiguous(const char *text)
{
    char last[160] = "";
    char seen[64][160];
    size_t nseen = 0;
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        if (strncmp(l, "# TYPE ", 7) == 0) {
            char name[160];
            size_t k = strcspn(l + 7, " ");
            snprintf(name, sizeof(name), "%.*s", (int)k, l + 7);
            for (size_t i = 0; i < nseen; i++)
                cr_assert_str_neq(seen[i], name, "family %s twice:\n%s", name, text);
            if (nseen < 64)
                snprintf(seen[nseen++], sizeof(seen[0]), "%s", name);
            snprintf(last, sizeof(last), "%s", name);
        } else if (l[0] != '#' && n > 0) {
            cr_assert(strncmp(l, last, strlen(last)) == 0, "sample outside its family %s: %.*s", last, (int)n, l);
        }
        l = e ? e + 1 : l + n;
    }
}

Test(metrics, info_becomes_contiguous_gauges)
{
    const char *info = "# Replication\r\nrole:master\r\nflush_lsn:0/158\r\nmaster_repl_offset:344\r\nconnected_slaves:2\r\n"
                       "slave0:name=r1,state=online,port=7402,flush_lsn=0/10,lag_bytes=3\r\n"
                       "slave1:name=r\"2,state=online,port=7403,flush_lsn=0/20,lag_bytes=4\r\n"
                       "# Persistence\r\nflush_lsn:999\r\nratio:1.5\r\nwords:a b\r\ndb0:keys=5,expires=0\r\n";
    static const struct rd_metrics_list lists[] = {{"slave", "replica", "replica"}, {"db", "keyspace", "db"}};
    struct rd_buf out = {0};
    rd_metrics_from_info(&out, "x_", info, strlen(info), lists, RD_ARRAY_LEN(lists));
    cr_assert_eq(rd_buf_append(&out, "", 1), 0);
    const char *t = (const char *)out.data;
    cr_assert(strstr(t, "x_flush_lsn 344\n") != NULL, "%s", t); /* the first section's wins, X/Y as a number */
    cr_assert(strstr(t, "x_master_repl_offset 344\n") != NULL, "%s", t);
    cr_assert(strstr(t, "x_ratio 1.5\n") != NULL, "%s", t);
    cr_assert(strstr(t, "x_replica_flush_lsn{replica=\"r1\"} 16\n") != NULL, "%s", t);
    cr_assert(strstr(t, "x_replica_flush_lsn{replica=\"r\\\"2\"} 32\n") != NULL, "%s", t);
    /* a port is an identifier, not a quantity: a label of the _info series */
    cr_assert(strstr(t, "x_replica_info{replica=\"r1\",state=\"online\",port=\"7402\"} 1\n") != NULL, "%s", t);
    cr_assert(strstr(t, "x_keyspace_keys{db=\"db0\"} 5\n") != NULL, "%s", t);
    cr_assert(strstr(t, "x_replica_port") == NULL && strstr(t, "words") == NULL && strstr(t, "x_role") == NULL, "%s", t);
    assert_contiguous(t);
    rd_buf_free(&out);
}

Test(metrics, histogram_is_cumulative)
{
    static const double le[] = {1, 2, 4};
    struct rd_metrics_hist h;
    rd_metrics_hist_init(&h, le, RD_ARRAY_LEN(le));
    double v[] = {0.5, 1, 3, 9, 9};
    for (size_t i = 0; i < RD_ARRAY_LEN(v); i++)
        rd_metrics_hist_observe(&h, v[i]);
    struct rd_buf out = {0};
    rd_metrics_hist_write(&out, "h", "help", &h);
    cr_assert_eq(rd_buf_append(&out, "", 1), 0);
    const char *t = (const char *)out.data;
    cr_assert(strstr(t, "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"4\"} 3\n"
                        "h_bucket{le=\"+Inf\"} 5\nh_sum 22.5\nh_count 5\n") != NULL, "%s", t);
    rd_buf_free(&out);
}

Test(metrics, label_values_are_escaped)
{
    char out[32];
    rd_metrics_label_escape(out, sizeof(out), "a\"b\\c\nd\x01", 8);
    cr_assert_str_eq(out, "a\\\"b\\\\c\\nd");
    rd_metrics_label_escape(out, 4, "abcdef", 6);
    cr_assert_eq(strlen(out), 1); /* truncated, never past the buffer */
}
