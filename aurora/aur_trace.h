/*
 * aur_trace.h — the commit trace's aurora links (issue 13; common/trace.h C22): trace marks from
 * the writer to its readers' feed, and a reader following them. (Writer -> storage node marks go
 * through trace_ship in aurora_ship; the storage node's side is storage-node/sn_trace.c.)
 */
#ifndef RD_AUR_TRACE_H
#define RD_AUR_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "common/trace.h"

struct server;
struct conn;

/* Writer, before the feed frames covering vdl go out: TRACE_FEED_SENT (a = vdl) and one trace
 * mark to every subscribed reader for each traced commit newly covered. */
void aur_trace_feed_slow(struct server *s, uint64_t vdl);
static inline void aur_trace_feed(struct server *s, uint64_t vdl)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    aur_trace_feed_slow(s, vdl);
#else
    (void)s, (void)vdl;
#endif
}

/* Reader: a trace mark on the feed (the next feed frames carry that commit): follows it; a
 * malformed one closes the feed connection (it reconnects), logged. */
void aur_trace_on_mark(struct server *s, struct conn *c, const uint8_t *p, size_t n);

#endif
