/*
 * trace.c — the per-process ring of commit-trace events (trace.h).
 *
 * Ring layout: ring[i % TRACE_RING_EVENTS] holds event number i; `next` is the number of events
 * ever recorded. Events [max(0, next - TRACE_RING_EVENTS), next) are present. One thread per
 * process (the event loop) records and reads, so no synchronization is needed (C14).
 */
#include "common/trace.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/util.h"

static struct trace_event ring[TRACE_RING_EVENTS];
static uint64_t next;       /* events recorded since start (or trace_reset) */
static uint64_t sample_n;   /* trace_sample calls */
static uint64_t id_counter; /* ids handed out */

_Static_assert(sizeof(struct trace_event) == 40, "trace_event layout");
_Static_assert((TRACE_RING_EVENTS & (TRACE_RING_EVENTS - 1)) == 0, "ring size is a power of two");

static const char *const step_names[TRACE_STEP_COUNT] = {
    [TRACE_NONE] = "none",
    [TRACE_RECEIVED] = "received",
    [TRACE_PAGES_CHANGED] = "pages_changed",
    [TRACE_WAL_WRITTEN] = "wal_written",
    [TRACE_WAL_FSYNCED] = "wal_fsynced",
    [TRACE_SHIPPED] = "shipped",
    [TRACE_PEER_RECEIVED] = "peer_received",
    [TRACE_PEER_WRITTEN] = "peer_written",
    [TRACE_PEER_FSYNCED] = "peer_fsynced",
    [TRACE_PEER_APPLIED] = "peer_applied",
    [TRACE_PEER_ACKED] = "peer_acked",
    [TRACE_ACK_RECEIVED] = "ack_received",
    [TRACE_DURABLE] = "durable",
    [TRACE_REPLY_SENT] = "reply_sent",
    [TRACE_VISIBLE] = "visible",
    [TRACE_REDO_BATCH] = "redo_batch",
    [TRACE_COALESCED] = "coalesced",
    [TRACE_FEED_SENT] = "feed_sent",
};

const char *trace_step_name(enum trace_step step)
{
    if ((unsigned)step >= TRACE_STEP_COUNT || step_names[step] == NULL)
        return "unknown";
    return step_names[step];
}

void trace_record_slow(uint64_t trace_id, enum trace_step step, uint16_t node, uint64_t a, uint64_t b,
                       uint64_t t_us)
{
    if (trace_id == 0) /* C15 */
        return;
    assert(step > TRACE_NONE && step < TRACE_STEP_COUNT);
    struct trace_event *e = &ring[next & (TRACE_RING_EVENTS - 1)];
    e->trace_id = trace_id;
    e->t_us = t_us ? t_us : rd_now_us();
    e->a = a;
    e->b = b;
    e->step = (uint16_t)step;
    e->node = node;
    e->pad = 0;
    next++; /* C14: the slot is whole before it counts */
}

uint64_t trace_sample(unsigned every)
{
    if (every == 0)
        return 0;
    if (sample_n++ % every != 0)
        return 0;
    uint64_t id = ((uint64_t)(uint32_t)getpid() << 32) | (++id_counter & 0xffffffffu);
    assert(id != 0);
    return id;
}

static uint64_t oldest(void) { return next > TRACE_RING_EVENTS ? next - TRACE_RING_EVENTS : 0; }

size_t trace_collect(uint64_t trace_id, struct trace_event *out, size_t max)
{
    size_t n = 0;
    for (uint64_t i = oldest(); i < next && n < max; i++) {
        const struct trace_event *e = &ring[i & (TRACE_RING_EVENTS - 1)];
        if (trace_id == 0 || e->trace_id == trace_id)
            out[n++] = *e;
    }
    return n;
}

size_t trace_recent_ids(uint64_t *out, size_t max)
{
    size_t n = 0;
    for (uint64_t i = next; i > oldest() && n < max; i--) {
        uint64_t id = ring[(i - 1) & (TRACE_RING_EVENTS - 1)].trace_id;
        size_t k = 0;
        while (k < n && out[k] != id)
            k++;
        if (k == n)
            out[n++] = id;
    }
    return n;
}

int trace_format(struct rd_buf *out, uint64_t trace_id, const char *proc)
{
    assert(proc != NULL);
    for (uint64_t i = oldest(); i < next; i++) {
        const struct trace_event *e = &ring[i & (TRACE_RING_EVENTS - 1)];
        if (trace_id != 0 && e->trace_id != trace_id)
            continue;
        size_t before = out->len;
        if (rd_buf_appendf(out, "%" PRIu64 " %s %u %s node=%u a=%" PRIu64 " b=%" PRIu64 " id=%016" PRIx64 "\n",
                           e->t_us, proc, (unsigned)e->step, trace_step_name((enum trace_step)e->step),
                           (unsigned)e->node, e->a, e->b, e->trace_id) < 0) {
            out->len = before; /* whole lines only */
            return -ENOMEM;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ commits in flight */

struct inflight {
    uint64_t trace_id; /* 0: free slot */
    uint64_t commit_lsn;
    uint64_t released_us; /* reply released at (0: not yet); late acks are still recorded for a while */
    uint64_t linger_us;   /* ... this long (TRACE_LINGER_US, or trace_follow's) */
    uint64_t done[(TRACE_STEP_COUNT * TRACE_MAX_NODES + 63) / 64]; /* bit step * MAX_NODES + node */
};
static struct inflight inflight[TRACE_INFLIGHT];
unsigned trace_ninflight;

static void forget(struct inflight *f)
{
    assert(f->trace_id != 0 && trace_ninflight > 0);
    f->trace_id = 0;
    trace_ninflight--;
}

/* A free slot, else the one released longest ago (its late acknowledgements are not recorded). */
static struct inflight *slot_for_new(void)
{
    struct inflight *old = NULL;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        if (inflight[i].trace_id == 0)
            return &inflight[i];
        if (inflight[i].released_us && (old == NULL || inflight[i].released_us < old->released_us))
            old = &inflight[i];
    }
    if (old)
        forget(old);
    return old;
}

int trace_commit_begin(uint64_t trace_id, uint64_t commit_lsn)
{
    if (trace_id == 0)
        return -EINVAL;
    struct inflight *f = slot_for_new();
    if (f == NULL)
        return -ENOSPC;
    memset(f, 0, sizeof *f);
    f->trace_id = trace_id;
    f->commit_lsn = commit_lsn;
    f->linger_us = TRACE_LINGER_US;
    trace_ninflight++;
    assert(trace_ninflight <= TRACE_INFLIGHT);
    return 0;
}

int trace_watch(uint64_t trace_id, uint64_t after_lsn)
{
    int rc = trace_commit_begin(trace_id, after_lsn + 1);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++)
        if (inflight[i].trace_id == trace_id && inflight[i].commit_lsn == after_lsn + 1)
            inflight[i].released_us = rd_now_us(); /* no reply here: it only lingers */
    return 0;
}

static unsigned done_bit(enum trace_step step, uint16_t node)
{
    assert(step > TRACE_NONE && step < TRACE_STEP_COUNT);
    return (unsigned)step * TRACE_MAX_NODES + (node < TRACE_MAX_NODES ? node : TRACE_MAX_NODES - 1);
}

/* f still collects events at `now` (a released one lingers linger_us, then its slot is freed). */
static int live(struct inflight *f, uint64_t now)
{
    if (f->trace_id == 0)
        return 0;
    if (f->released_us && now - f->released_us > f->linger_us) {
        forget(f);
        return 0;
    }
    return 1;
}

/* 1 the first time (f, bit) is taken, then 0. */
static int take(struct inflight *f, unsigned bit)
{
    if ((f->done[bit / 64] >> (bit % 64)) & 1)
        return 0;
    f->done[bit / 64] |= 1ull << (bit % 64);
    return 1;
}

size_t trace_lsn_reached_marks(enum trace_step step, uint16_t node, uint64_t lsn, uint64_t b,
                               struct trace_mark *out, size_t max)
{
    unsigned bit = done_bit(step, node);
    uint64_t now = rd_now_us(); /* one timestamp for every commit this LSN covers */
    size_t k = 0;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        struct inflight *f = &inflight[i];
        if (!live(f, now) || f->commit_lsn > lsn || (out != NULL && k == max) || !take(f, bit))
            continue;
        trace_record_slow(f->trace_id, step, node, lsn, b, now);
        if (out != NULL)
            out[k++] = (struct trace_mark){f->trace_id, f->commit_lsn};
        if (step == TRACE_COALESCED)
            forget(f); /* a storage node's last step: the slot is free for the next mark */
    }
    return k;
}

void trace_lsn_reached_slow(enum trace_step step, uint16_t node, uint64_t lsn, uint64_t b)
{
    (void)trace_lsn_reached_marks(step, node, lsn, b, NULL, 0);
}

void trace_lsns_hit_slow(enum trace_step step, uint16_t node, const void *arr, size_t n, size_t stride,
                         size_t lsn_off, uint64_t b)
{
    assert(arr != NULL || n == 0);
    assert(lsn_off + sizeof(uint64_t) <= stride);
    unsigned bit = done_bit(step, node);
    uint64_t now = rd_now_us();
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        struct inflight *f = &inflight[i];
        if (!live(f, now) || (f->done[bit / 64] >> (bit % 64)) & 1)
            continue;
        for (size_t j = 0; j < n; j++) {
            uint64_t lsn;
            memcpy(&lsn, (const uint8_t *)arr + j * stride + lsn_off, sizeof lsn);
            if (lsn == f->commit_lsn) {
                (void)take(f, bit);
                trace_record_slow(f->trace_id, step, node, lsn, b, now);
                break;
            }
        }
    }
}

void trace_ship_slow(struct rd_buf *out, uint64_t epoch, uint16_t node, uint64_t lsn, uint64_t bytes)
{
    struct trace_mark m[TRACE_INFLIGHT];
    size_t k = trace_lsn_reached_marks(TRACE_SHIPPED, node, lsn, bytes, m, TRACE_INFLIGHT);
    for (size_t i = 0; i < k; i++)
        if (trace_mark_append(out, epoch, &m[i]) < 0)
            rd_panic("could not frame a trace mark");
}

/* ------------------------------------------------------------ the trace mark (C22) */

int trace_mark_append(struct rd_buf *out, uint64_t epoch, const struct trace_mark *m)
{
    assert(m->trace_id != 0 && m->commit_lsn != 0);
    uint8_t p[TRACE_MARK_SIZE];
    rd_put_u64le(p, m->trace_id);
    rd_put_u64le(p + 8, m->commit_lsn);
    return frame_append(out, TRACE_MARK_FRAME_TYPE, epoch, p, sizeof p, 0);
}

int trace_mark_parse(const uint8_t *p, size_t n, struct trace_mark *m, const char **why)
{
    const char *w = NULL;
    if (n != TRACE_MARK_SIZE)
        w = "a trace mark is 16 bytes";
    else if ((m->trace_id = rd_get_u64le(p)) == 0)
        w = "trace mark with trace id 0";
    else if ((m->commit_lsn = rd_get_u64le(p + 8)) == 0)
        w = "trace mark with commit LSN 0";
    if (why != NULL)
        *why = w;
    return w ? RD_EPROTO : 0;
}

int trace_mark_follow(const uint8_t *p, size_t n, uint64_t linger_us, const char **why)
{
    struct trace_mark m;
    int rc = trace_mark_parse(p, n, &m, why);
    if (rc < 0)
        return rc;
    (void)trace_follow(m.trace_id, m.commit_lsn, linger_us); /* -ENOSPC: simply not followed here */
    return 0;
}

int trace_follow(uint64_t trace_id, uint64_t commit_lsn, uint64_t linger_us)
{
    if (trace_id == 0)
        return -EINVAL;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++)
        if (inflight[i].trace_id == trace_id)
            return 0;
    int rc = trace_commit_begin(trace_id, commit_lsn);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        if (inflight[i].trace_id == trace_id) {
            inflight[i].released_us = rd_now_us(); /* no reply here: it only lingers */
            inflight[i].linger_us = linger_us;
        }
    }
    return 0;
}

void trace_commit_end(uint64_t trace_id)
{
    if (trace_id == 0)
        return;
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        if (inflight[i].trace_id == trace_id) {
            if (!inflight[i].released_us)
                trace_record_slow(trace_id, TRACE_REPLY_SENT, 0, inflight[i].commit_lsn, 0, 0);
            forget(&inflight[i]);
            return;
        }
    }
}

void trace_commits_released_slow(uint64_t lsn)
{
    for (unsigned i = 0; i < TRACE_INFLIGHT; i++) {
        struct inflight *f = &inflight[i];
        if (f->trace_id != 0 && !f->released_us && f->commit_lsn <= lsn) {
            trace_record_slow(f->trace_id, TRACE_REPLY_SENT, 0, lsn, 0, 0);
            f->released_us = rd_now_us(); /* kept TRACE_LINGER_US for late acknowledgements */
        }
    }
}

unsigned trace_every;

void trace_reset(void)
{
    memset(ring, 0, sizeof ring);
    memset(inflight, 0, sizeof inflight);
    next = 0;
    sample_n = 0;
    trace_ninflight = 0;
}
