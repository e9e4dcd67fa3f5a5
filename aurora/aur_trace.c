/*
 * aur_trace.c — the commit trace on the aurora feed (aur_trace.h, common/trace.h C22).
 */
#include "aurora/aur_trace.h"

#include "aurora/aur_int.h"
#include "common/log.h"
#include "server/server_int.h"

void aur_trace_feed_slow(struct server *s, uint64_t vdl)
{
    struct aurora *a = aur_of(s);
    if (!a->role_writer || a->nreaders == 0)
        return;
    struct trace_mark m[TRACE_INFLIGHT];
    size_t k = trace_lsn_reached_marks(TRACE_FEED_SENT, 0, vdl, a->nreaders, m, TRACE_INFLIGHT);
    for (struct conn *c = s->conns; c && k > 0; c = c->next)
        if (c->kind == CONN_READER_FEED && !c->closing)
            for (size_t i = 0; i < k; i++)
                if (trace_mark_append(&c->out, a->epoch, &m[i]) < 0)
                    rd_panic("out of memory for a trace mark");
}

void aur_trace_on_mark(struct server *s, struct conn *c, const uint8_t *p, size_t n)
{
    const char *why = NULL;
    if (trace_mark_follow(p, n, TRACE_LINGER_US, &why) < 0) {
        rd_warn("malformed trace mark from the writer %s (%s); reconnecting", c->addr, why);
        conn_close(s, c);
    }
}
