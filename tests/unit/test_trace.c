/* Unit tests for common/trace.{c,h}: the per-process ring of commit-trace events. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/frame.h"
#include "common/trace.h"

static void fresh(void) { trace_reset(); }

TestSuite(trace, .init = fresh);

Test(trace, untraced_id_zero_records_nothing)
{
    trace_record(0, TRACE_RECEIVED, 0, 1, 2);
    struct trace_event ev[4];
    cr_assert_eq(trace_collect(0, ev, 4), 0);
}

Test(trace, collects_one_trace_in_recording_order_with_monotonic_times)
{
    trace_record(7, TRACE_RECEIVED, 0, 0, 0);
    trace_record(9, TRACE_RECEIVED, 0, 0, 0);
    trace_record(7, TRACE_PAGES_CHANGED, 0, 3, 412);
    trace_record(7, TRACE_SHIPPED, 2, 0, 0);
    struct trace_event ev[8];
    size_t n = trace_collect(7, ev, 8);
    cr_assert_eq(n, 3);
    cr_assert_eq(ev[0].step, TRACE_RECEIVED);
    cr_assert_eq(ev[1].step, TRACE_PAGES_CHANGED);
    cr_assert_eq(ev[1].a, 3);
    cr_assert_eq(ev[1].b, 412);
    cr_assert_eq(ev[2].node, 2);
    cr_assert(ev[0].t_us <= ev[1].t_us && ev[1].t_us <= ev[2].t_us);
    cr_assert_eq(trace_collect(0, ev, 8), 4);
}

Test(trace, ring_keeps_only_the_newest_events)
{
    for (uint64_t i = 1; i <= TRACE_RING_EVENTS + 10; i++)
        trace_record_slow(i, TRACE_RECEIVED, 0, i, 0, 1000 + i);
    struct trace_event ev[4];
    cr_assert_eq(trace_collect(1, ev, 4), 0, "the oldest are overwritten");
    cr_assert_eq(trace_collect(TRACE_RING_EVENTS + 10, ev, 4), 1);
    cr_assert_eq(ev[0].t_us, 1000 + TRACE_RING_EVENTS + 10);
    uint64_t ids[3];
    cr_assert_eq(trace_recent_ids(ids, 3), 3);
    cr_assert_eq(ids[0], TRACE_RING_EVENTS + 10);
    cr_assert_eq(ids[2], TRACE_RING_EVENTS + 8);
}

Test(trace, sampling_gives_distinct_nonzero_ids_one_in_every)
{
    uint64_t got[4] = {0};
    size_t n = 0;
    for (int i = 0; i < 40; i++) {
        uint64_t id = trace_sample(10);
        if (id) {
            cr_assert_lt(n, 4);
            got[n++] = id;
        }
    }
    cr_assert_eq(n, 4);
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(got[i], got[i - 1]);
    cr_assert_eq(trace_sample(0), 0, "every 0: tracing off");
}

Test(trace, format_prints_one_line_per_event_with_step_names)
{
    trace_record_slow(5, TRACE_WAL_FSYNCED, 0, 4096, 0, 123);
    trace_record_slow(5, TRACE_ACK_RECEIVED, 1, 4096, 0, 456);
    trace_record_slow(6, TRACE_REPLY_SENT, 0, 0, 0, 789);
    struct rd_buf b = {0};
    cr_assert_eq(trace_format(&b, 5, "primary"), 0);
    cr_assert_eq(rd_buf_append(&b, "", 1), 0);
    cr_assert_str_eq((char *)b.data, "123 primary 4 wal_fsynced node=0 a=4096 b=0 id=0000000000000005\n"
                                     "456 primary 11 ack_received node=1 a=4096 b=0 id=0000000000000005\n");
    rd_buf_free(&b);
    cr_assert_str_eq(trace_step_name((enum trace_step)999), "unknown");
}

Test(trace, lsn_hooks_record_each_step_once_for_the_commits_they_cover)
{
    cr_assert_eq(trace_commit_begin(11, 100), 0);
    cr_assert_eq(trace_commit_begin(12, 200), 0);
    trace_lsn_reached(TRACE_WAL_FSYNCED, 0, 150, 0);  /* covers 11 only */
    trace_lsn_reached(TRACE_WAL_FSYNCED, 0, 250, 0);  /* 12 now; 11 already has it */
    trace_lsn_reached(TRACE_ACK_RECEIVED, 1, 250, 0); /* both, from node 1 */
    trace_lsn_reached(TRACE_ACK_RECEIVED, 2, 120, 0); /* 11, from node 2 */
    trace_lsn_reached(TRACE_ACK_RECEIVED, 1, 300, 0); /* node 1 again: nothing new */
    trace_commit_end(11);
    trace_commit_end(11); /* unknown now: no-op */
    struct trace_event ev[8];
    size_t n = trace_collect(11, ev, 8);
    cr_assert_eq(n, 4);
    cr_assert_eq(ev[0].step, TRACE_WAL_FSYNCED);
    cr_assert_eq(ev[0].a, 150);
    cr_assert_eq(ev[1].step, TRACE_ACK_RECEIVED);
    cr_assert_eq(ev[1].node, 1);
    cr_assert_eq(ev[2].node, 2);
    cr_assert_eq(ev[3].step, TRACE_REPLY_SENT);
    n = trace_collect(12, ev, 8);
    cr_assert_eq(n, 2);
    cr_assert_eq(ev[0].a, 250);
    cr_assert_eq(trace_ninflight, 1);
}

Test(trace, at_most_TRACE_INFLIGHT_commits_are_traced_at_once)
{
    for (unsigned i = 1; i <= TRACE_INFLIGHT; i++)
        cr_assert_eq(trace_commit_begin(i, i), 0);
    cr_assert_eq(trace_commit_begin(99, 99), -ENOSPC);
    cr_assert_eq(trace_commit_begin(0, 1), -EINVAL);
    trace_commit_end(1);
    cr_assert_eq(trace_commit_begin(99, 99), 0);
}

Test(trace, a_released_commit_still_records_late_acks_then_gives_its_slot_up)
{
    cr_assert_eq(trace_commit_begin(21, 50), 0);
    trace_lsn_reached(TRACE_ACK_RECEIVED, 1, 60, 0);
    trace_commits_released(60);
    trace_commits_released(70); /* once */
    trace_lsn_reached(TRACE_ACK_RECEIVED, 2, 60, 0); /* the ack that was not needed */
    struct trace_event ev[8];
    size_t n = trace_collect(21, ev, 8);
    cr_assert_eq(n, 3);
    cr_assert_eq(ev[1].step, TRACE_REPLY_SENT);
    cr_assert_eq(ev[2].node, 2);
    cr_assert_eq(trace_ninflight, 1);
    for (unsigned i = 1; i <= TRACE_INFLIGHT; i++) /* a full registry takes the released slot */
        cr_assert_eq(trace_commit_begin(100 + i, 100), 0);
    cr_assert_eq(trace_commit_begin(999, 100), -ENOSPC);
}

/* ---- trace marks (C22) */

Test(trace, a_ship_appends_one_mark_per_newly_covered_commit_before_the_data)
{
    cr_assert_eq(trace_commit_begin(31, 100), 0);
    cr_assert_eq(trace_commit_begin(32, 200), 0);
    struct rd_buf out = {0};
    trace_ship(&out, 7, 1, 150, 64); /* covers 31 only */
    trace_ship(&out, 7, 1, 250, 64); /* 32 now */
    trace_ship(&out, 7, 1, 300, 64); /* nothing new for node 1 */
    trace_ship(&out, 7, 2, 300, 64); /* both, to node 2 */
    struct rd_buf scratch = {0};
    uint64_t want[][2] = {{31, 100}, {32, 200}, {31, 100}, {32, 200}};
    size_t off = 0;
    for (size_t i = 0; i < 4; i++) {
        struct frame_hdr h;
        const uint8_t *p;
        size_t n;
        int used = frame_decode(out.data + off, out.len - off, &h, &scratch, &p, &n, NULL);
        cr_assert_gt(used, 0);
        cr_assert_eq(h.type, TRACE_MARK_FRAME_TYPE);
        cr_assert_eq(h.epoch, 7);
        struct trace_mark m;
        cr_assert_eq(trace_mark_parse(p, n, &m, NULL), 0);
        cr_assert_eq(m.trace_id, want[i][0]);
        cr_assert_eq(m.commit_lsn, want[i][1]);
        off += (size_t)used;
    }
    cr_assert_eq(off, out.len);
    struct trace_event ev[8];
    cr_assert_eq(trace_collect(31, ev, 8), 2, "shipped to node 1 and node 2");
    cr_assert_eq(ev[0].step, TRACE_SHIPPED);
    rd_buf_free(&out);
    rd_buf_free(&scratch);
}

Test(trace, a_mark_is_16_bytes_with_a_nonzero_id_and_lsn)
{
    uint8_t p[17] = {0};
    struct trace_mark m;
    const char *why = NULL;
    cr_assert_eq(trace_mark_parse(p, 16, &m, &why), RD_EPROTO);
    cr_assert_str_eq(why, "trace mark with trace id 0");
    p[0] = 1;
    cr_assert_eq(trace_mark_parse(p, 16, &m, &why), RD_EPROTO);
    cr_assert_str_eq(why, "trace mark with commit LSN 0");
    p[8] = 9;
    cr_assert_eq(trace_mark_parse(p, 15, &m, &why), RD_EPROTO);
    cr_assert_eq(trace_mark_parse(p, 17, &m, &why), RD_EPROTO);
    cr_assert_str_eq(why, "a trace mark is 16 bytes");
    cr_assert_eq(trace_mark_parse(p, 16, &m, &why), 0);
    cr_assert_null(why);
    cr_assert_eq(m.trace_id, 1);
    cr_assert_eq(m.commit_lsn, 9);
}

Test(trace, a_follower_records_its_steps_for_the_exact_commit_lsn)
{
    uint8_t p[16];
    memset(p, 0, sizeof p);
    p[0] = 0x44; /* id 0x44 */
    p[8] = 50;   /* commit LSN 50 */
    cr_assert_eq(trace_mark_follow(p, sizeof p, 5000000, NULL), 0);
    cr_assert_eq(trace_mark_follow(p, sizeof p, 5000000, NULL), 0, "the same mark twice: followed once");
    cr_assert_eq(trace_ninflight, 1);
    trace_lsn_reached(TRACE_PEER_RECEIVED, 0, 49, 0); /* not yet */
    trace_lsn_reached(TRACE_PEER_RECEIVED, 0, 52, 3);
    struct { uint64_t x, lsn; } flight[3] = {{0, 48}, {0, 51}, {0, 47}};
    trace_lsns_hit(TRACE_PEER_WRITTEN, 0, flight, 3, sizeof flight[0], 8, 100); /* 50 is not in it (a gap) */
    flight[2].lsn = 50;
    trace_lsns_hit(TRACE_PEER_WRITTEN, 0, flight, 3, sizeof flight[0], 8, 100);
    trace_lsns_hit(TRACE_PEER_WRITTEN, 0, flight, 3, sizeof flight[0], 8, 100); /* once */
    trace_visible(60);
    struct trace_event ev[8];
    size_t n = trace_collect(0x44, ev, 8);
    cr_assert_eq(n, 4);
    cr_assert_eq(ev[0].step, TRACE_PEER_RECEIVED);
    cr_assert_eq(ev[0].a, 52);
    cr_assert_eq(ev[1].step, TRACE_PEER_WRITTEN);
    cr_assert_eq(ev[1].a, 50);
    cr_assert_eq(ev[2].step, TRACE_PEER_APPLIED);
    cr_assert_eq(ev[3].step, TRACE_VISIBLE);
    cr_assert_leq(ev[2].t_us, ev[3].t_us);
    p[0] = 0;
    const char *why = NULL;
    cr_assert_eq(trace_mark_follow(p, sizeof p, 5000000, &why), RD_EPROTO);
    cr_assert_not_null(why);
}

Test(trace, fan_out_marks_are_returned_once_for_every_link)
{
    cr_assert_eq(trace_commit_begin(61, 10), 0);
    cr_assert_eq(trace_commit_begin(62, 20), 0);
    struct trace_mark m[4];
    cr_assert_eq(trace_lsn_reached_marks(TRACE_FEED_SENT, 0, 15, 2, m, 4), 1);
    cr_assert_eq(m[0].trace_id, 61);
    cr_assert_eq(trace_lsn_reached_marks(TRACE_FEED_SENT, 0, 25, 2, m, 4), 1);
    cr_assert_eq(m[0].trace_id, 62);
    cr_assert_eq(m[0].commit_lsn, 20);
    cr_assert_eq(trace_lsn_reached_marks(TRACE_FEED_SENT, 0, 30, 2, m, 4), 0);
    cr_assert_str_eq(trace_step_name(TRACE_FEED_SENT), "feed_sent");
}

Test(trace, a_storage_node_forgets_a_followed_commit_once_coalesced)
{
    cr_assert_eq(trace_follow(0x77, 5, 5000000), 0);
    trace_lsn_reached(TRACE_PEER_ACKED, 0, 5, 0);
    cr_assert_eq(trace_ninflight, 1);
    trace_lsn_reached(TRACE_COALESCED, 0, 9, 2);
    cr_assert_eq(trace_ninflight, 0, "coalesced is the last step: the slot is free");
    struct trace_event ev[4];
    cr_assert_eq(trace_collect(0x77, ev, 4), 2);
    cr_assert_eq(ev[1].step, TRACE_COALESCED);
}
