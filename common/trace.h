/*
 * trace.h — commit trace: a small per-process ring of trace events (issue 13).
 *
 * A sampled commit gets a nonzero 64-bit trace id where it enters the system (the writer's
 * command dispatch, trace_new_id). Every process that works on that commit records each step it
 * performs as one event: (trace id, step, CLOCK_MONOTONIC µs, two step-specific numbers, the peer
 * index it concerns). Events go into a fixed ring of TRACE_RING_EVENTS entries allocated once
 * (no allocation, no lock: each process has one event-loop thread); the oldest are overwritten.
 * A command returns the events of one trace id (trace_format), and `scripts/cluster trace` merges
 * them across processes by timestamp.
 *
 * Clocks: CLOCK_MONOTONIC is one clock for every process of one machine (it counts from boot),
 * so offsets between events of different processes are exact there. Across machines they are not
 * comparable: there, each process's events must be shifted by its clock offset to the writer,
 * measured as NTP does from a request/response pair (not done yet: a local cluster only).
 *
 * Cost when off: trace_record on id 0 is one predictable branch in an inline function (every
 * untraced commit carries id 0); the LSN hooks test one global (no traced commit in flight).
 * Building with -DRD_TRACE_OFF empties every inline hook (the A/B of docs/results.md, issue 13).
 *
 * How the id travels (the trace mark, C22): the sender of a link (primary -> replica, writer ->
 * storage node, writer -> reader feed) appends one small frame of type TRACE_MARK_FRAME_TYPE
 * {trace id, commit LSN} right before the data frame that carries a sampled commit; the receiver
 * follows that exact LSN under the sender's id (trace_follow) and records its own steps under it,
 * so `REDOUBT.TRACE GET ID` returns the same commit's events on every process. No existing frame
 * changes, and untraced traffic carries nothing. A peer built before the mark closes the link on
 * the unknown frame type (as for any protocol error) and reconnects: do not sample while such
 * peers run (a rolling upgrade).
 *
 * Invariants (common/README.md):
 *   C14 a recorded event is never torn: the ring slot is written whole before the write index
 *       moves past it, and a reader copies only slots below the index (single thread);
 *   C15 trace id 0 means "not traced" and is never recorded.
 *
 * Ownership: the ring is static storage of this process; trace_collect copies out.
 */
#ifndef RD_TRACE_H
#define RD_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define TRACE_RING_EVENTS 4096u

/* The steps of the seed's two diagrams, in causal order within each mode. The numbering is part
 * of the trace command's output (name and number both printed): append, never renumber. */
enum trace_step {
    TRACE_NONE = 0,
    TRACE_RECEIVED = 1,          /* writer: command read from the client */
    TRACE_PAGES_CHANGED = 2,     /* a: pages changed, b: log bytes (WAL or redo) */
    TRACE_WAL_WRITTEN = 3,       /* classic primary: WAL write done; a: end LSN */
    TRACE_WAL_FSYNCED = 4,       /* classic primary: fdatasync done; a: flush LSN */
    TRACE_SHIPPED = 5,           /* primary/writer: handed to peer `node` (replica / storage node) */
    TRACE_PEER_RECEIVED = 6,     /* replica / storage node: frame received; a: LSN */
    TRACE_PEER_WRITTEN = 7,      /* replica: WAL written; storage node: appended to the hot log */
    TRACE_PEER_FSYNCED = 8,      /* replica / storage node: durable; a: flush LSN or SCL */
    TRACE_PEER_APPLIED = 9,      /* replica: replayed into its pages; a: apply LSN */
    TRACE_PEER_ACKED = 10,       /* replica / storage node: acknowledgement sent; a: LSN or SCL */
    TRACE_ACK_RECEIVED = 11,     /* primary/writer: ack from peer `node`; a: its LSN or SCL */
    TRACE_DURABLE = 12,          /* classic: sync set reached; aurora: 4th ack (a: VCL, b: VDL) */
    TRACE_REPLY_SENT = 13,       /* writer: reply written to the client */
    TRACE_VISIBLE = 14,          /* replica / reader: readable there; a: its read point */
    TRACE_REDO_BATCH = 15,       /* aurora writer: a: batch bytes before lz4, b: after */
    TRACE_COALESCED = 16,        /* storage node: applied into its page image; a: coalesced LSN */
    TRACE_FEED_SENT = 17,        /* aurora writer: the reader feed covering it sent; a: VDL */
    TRACE_STEP_COUNT
};

struct trace_event {
    uint64_t trace_id;
    uint64_t t_us;  /* CLOCK_MONOTONIC */
    uint64_t a, b;  /* step-specific (see enum trace_step) */
    uint16_t step;  /* enum trace_step */
    uint16_t node;  /* the peer it concerns (replica / storage node index + 1), 0: none */
    uint32_t pad;   /* zero */
};

/* Records one event; id 0 (untraced) returns at once (C15). t_us 0: now. */
void trace_record_slow(uint64_t trace_id, enum trace_step step, uint16_t node, uint64_t a, uint64_t b,
                       uint64_t t_us);
static inline void trace_record(uint64_t trace_id, enum trace_step step, uint16_t node, uint64_t a, uint64_t b)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_id == 0, 1))
        return;
    trace_record_slow(trace_id, step, node, a, b, 0);
#else
    (void)trace_id, (void)step, (void)node, (void)a, (void)b;
#endif
}

/* A fresh nonzero trace id if this is the 1-in-`every` sampled call (every 0: never), else 0.
 * Ids are unique across the processes of a machine: pid in the high bits, a counter below. */
uint64_t trace_sample(unsigned every);

/* Copies the events of trace_id (0: every event) still in the ring, oldest first, into out[0..max).
 * Returns how many. */
size_t trace_collect(uint64_t trace_id, struct trace_event *out, size_t max);

/* Appends one line per event of trace_id: "<t_us> <proc> <step number> <step name> node=<n> a=<a> b=<b>\n".
 * proc names this process (e.g. "primary", "storage3"; not NULL). Returns 0, or -ENOMEM (C10: the
 * buffer then holds a prefix of whole lines). */
int trace_format(struct rd_buf *out, uint64_t trace_id, const char *proc);

/* The newest traced ids (most recent first, distinct), at most max. Returns how many. */
size_t trace_recent_ids(uint64_t *out, size_t max);

/* ---- Commits in flight, by LSN: lets a hook that knows only an LSN (WAL written/fsynced up to L,
 * shipped to replica i up to L, ack from node i with SCL L, VDL reached L) record the step for every
 * traced commit it covers, with one line and no trace id in hand. At most TRACE_INFLIGHT traced
 * commits at once (trace_commit_begin refuses more: that commit is simply not traced). */
#define TRACE_INFLIGHT 64u
#define TRACE_MAX_NODES 8u /* node index 0..7 in the per-commit "done" bitmap */
#define TRACE_LINGER_US 1000000u /* a released commit still collects late acks this long */

extern unsigned trace_ninflight; /* read by the inline fast path only */

/* trace_id's commit ends at commit_lsn (its last log byte or record). Returns 0, -ENOSPC when
 * TRACE_INFLIGHT commits are already traced, -EINVAL for id 0. */
int trace_commit_begin(uint64_t trace_id, uint64_t commit_lsn);

/* Records `step` (with node, a = lsn, b) once for each traced commit with commit_lsn <= lsn that has
 * not had (step, node) yet; also after its reply, for TRACE_LINGER_US (acks of the peers that were
 * not needed). No traced commit in flight: one branch. */
void trace_lsn_reached_slow(enum trace_step step, uint16_t node, uint64_t lsn, uint64_t b);
static inline void trace_lsn_reached(enum trace_step step, uint16_t node, uint64_t lsn, uint64_t b)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_lsn_reached_slow(step, node, lsn, b);
#else
    (void)step, (void)node, (void)lsn, (void)b;
#endif
}

/* Like trace_lsn_reached, for a set of LSNs that need not be consecutive or complete (a storage
 * node's group flush: records in arrival order, gaps possible): records `step` (a = commit LSN,
 * b) for each traced commit whose commit_lsn is the u64 at byte lsn_off of one of the n
 * elements of arr (stride bytes apart; arr may be NULL when n is 0). */
void trace_lsns_hit_slow(enum trace_step step, uint16_t node, const void *arr, size_t n, size_t stride,
                         size_t lsn_off, uint64_t b);
static inline void trace_lsns_hit(enum trace_step step, uint16_t node, const void *arr, size_t n, size_t stride,
                                  size_t lsn_off, uint64_t b)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_lsns_hit_slow(step, node, arr, n, stride, lsn_off, b);
#else
    (void)step, (void)node, (void)arr, (void)n, (void)stride, (void)lsn_off, (void)b;
#endif
}

/* ---- The trace mark (C22): {u64 trace id != 0, u64 commit LSN != 0}, little-endian, 16 bytes,
 * in a frame of type TRACE_MARK_FRAME_TYPE (common/frame.h) on the link's own epoch. */
#define TRACE_MARK_FRAME_TYPE 61u /* next to RD_AUTH_FRAME_TYPE 60: no protocol uses 61 */
#define TRACE_MARK_SIZE 16u
struct trace_mark { uint64_t trace_id, commit_lsn; };

/* Appends one trace-mark frame to out. 0, or what frame_append returns. */
int trace_mark_append(struct rd_buf *out, uint64_t epoch, const struct trace_mark *m);
/* Decodes a trace-mark payload: 0, or RD_EPROTO with *why (a static sentence; why may be NULL)
 * for a wrong length, id 0 or LSN 0. */
int trace_mark_parse(const uint8_t *p, size_t n, struct trace_mark *m, const char **why);
/* Receiver: decodes the payload and follows the commit (trace_follow). 0 (also when the registry
 * is full: then that commit is not followed here), or RD_EPROTO with *why. */
int trace_mark_follow(const uint8_t *p, size_t n, uint64_t linger_us, const char **why);

/* The commits newly covered by lsn on a fan-out link: records `step` (node, a = lsn, b) once per
 * traced commit with commit_lsn <= lsn that has not had (step, node) yet, and returns up to max of
 * them in out (the caller appends a mark for each to every link of the fan-out). */
size_t trace_lsn_reached_marks(enum trace_step step, uint16_t node, uint64_t lsn, uint64_t b,
                               struct trace_mark *out, size_t max);

/* Sender of a link to peer `node` (1..TRACE_MAX_NODES-1), right before appending the data frame
 * that carries everything up to lsn: records TRACE_SHIPPED (a = lsn, b = bytes) once per traced
 * commit it newly covers for that node and appends a trace mark for each to out. */
void trace_ship_slow(struct rd_buf *out, uint64_t epoch, uint16_t node, uint64_t lsn, uint64_t bytes);
static inline void trace_ship(struct rd_buf *out, uint64_t epoch, uint16_t node, uint64_t lsn, uint64_t bytes)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_ship_slow(out, epoch, node, lsn, bytes);
#else
    (void)out, (void)epoch, (void)node, (void)lsn, (void)bytes;
#endif
}

/* A hot standby / aurora reader made everything up to lsn readable (its pages replayed or
 * dropped, its read point moved, in one event-loop turn): TRACE_PEER_APPLIED then TRACE_VISIBLE
 * (a = lsn) for each followed commit it covers. */
static inline void trace_visible(uint64_t lsn)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_lsn_reached_slow(TRACE_PEER_APPLIED, 0, lsn, 0);
    trace_lsn_reached_slow(TRACE_VISIBLE, 0, lsn, 0);
#else
    (void)lsn;
#endif
}

/* A peer (replica) follows trace_id, whose commit ends above after_lsn: the steps it reaches past
 * after_lsn are recorded (each once) for TRACE_LINGER_US. Returns as trace_commit_begin.
 * (REDOUBT.TRACE WATCH: approximate under concurrent writes; the trace mark replaced it.) */
int trace_watch(uint64_t trace_id, uint64_t after_lsn);

/* A peer follows trace_id, whose commit is exactly commit_lsn (from a trace mark): the steps it
 * reaches at or past commit_lsn are recorded, each once, for linger_us (a storage node: long
 * enough for the coalescing round; TRACE_COALESCED, its last step, forgets the commit at once). Following an id already followed is a no-op. Returns as
 * trace_commit_begin (-ENOSPC: the registry holds TRACE_INFLIGHT commits, none released). */
int trace_follow(uint64_t trace_id, uint64_t commit_lsn, uint64_t linger_us);

/* trace_id's reply was sent: records TRACE_REPLY_SENT and forgets the commit (no-op for 0 or an
 * unknown id). */
void trace_commit_end(uint64_t trace_id);

/* Replies up to lsn were released: TRACE_REPLY_SENT for every traced commit with commit_lsn <= lsn
 * (the reply bytes leave in the same event-loop turn); they are forgotten TRACE_LINGER_US later or
 * when their slot is needed. */
void trace_commits_released_slow(uint64_t lsn);
static inline void trace_commits_released(uint64_t lsn)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    trace_commits_released_slow(lsn);
#else
    (void)lsn;
#endif
}

/* Sampling: 1 in trace_every writes is traced (0: off, the default). Set by the trace command. */
extern unsigned trace_every;

const char *trace_step_name(enum trace_step step);

/* Empties the ring (tests). */
void trace_reset(void);

#endif
