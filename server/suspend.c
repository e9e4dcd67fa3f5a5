/*
 * suspend.c — client commands parked on a page miss (issue 12, item 4).
 *
 * With a role whose pages come from shared storage (aurora), the engine may
 * answer RD_EAGAIN: a page was requested and is not here yet, and the operation
 * changed nothing (engine E16). Instead of blocking the loop, the command is
 * parked: its reply so far is removed, its bytes stay at the head of the
 * connection's input (so the pipeline behind it waits too and replies stay in
 * order), and the connection processes nothing until the role says the page is
 * here (server_suspend_wake). Then the command runs again from its start.
 *
 * | state | event | next | function |
 * |---|---|---|---|
 * | running | the role asks whether a miss may park | yes while misses < SERVER_SUSPEND_MAX_MISSES | server_suspend_may_park |
 * | running | miss noted, command changed nothing | parked (reply removed) | server_suspend_note_miss, server_suspend_undo |
 * | running | miss noted, but the transaction changed a page | finishes with its error reply (cannot happen: E16 blocks then) | server_suspend_undo |
 * | parked | page installed | ready: runs again | server_suspend_wake |
 * | parked | page unreadable (the role's bound) | ready: answers -TRYAGAIN, next command | server_suspend_wake, server_suspend_failed_reply |
 * | running | the bound of misses reached | the rest of the command uses blocking reads | server_suspend_begin |
 * | running | it committed a transaction and goes on (FLUSHDB batches) | its later misses block | server_suspend_no_park |
 * | background cycle (expiry) | a miss | its read fails RD_EAGAIN: the cycle stops, retried next turn | server_suspend_background |
 *
 * Invariants S25, S26 (server/README.md).
 */
#include <inttypes.h>
#include <stdio.h>

#include "common/log.h"
#include "common/resp.h"
#include "common/util.h"
#include "server/server_int.h"

void server_suspend_begin(struct server *s, struct conn *c)
{
    rd_assert(s->exec_conn == NULL);
    s->exec_missed = 0;
    s->exec_nopark = 0;
    if (c->kind != CONN_CLIENT)
        return;
    if (c->park_misses >= SERVER_SUSPEND_MAX_MISSES) {
        s->susp.sync_fallbacks++; /* S26: bounded; this run may block the loop */
        return;
    }
    s->exec_conn = c;
}

int server_suspend_may_park(const struct server *s) { return (s->exec_conn != NULL && !s->exec_nopark) || s->exec_bg; }

void server_suspend_no_park(struct server *s) { s->exec_nopark = 1; }

void server_suspend_background(struct server *s, int on)
{
    rd_assert(s->exec_conn == NULL);
    s->exec_bg = on;
}

void server_suspend_note_miss(struct server *s, uint32_t page_id)
{
    if (s->exec_conn == NULL) {
        rd_assert(s->exec_bg); /* a background cycle: nothing to park; it sees RD_EAGAIN and retries */
        return;
    }
    if (!s->exec_missed)
        s->exec_miss_page = page_id; /* the first miss: the one its run stopped at */
    s->exec_missed = 1;
}

int server_suspend_undo(struct server *s, struct conn *c, size_t out_mark, int changed)
{
    if (!s->exec_missed || s->exec_conn != c)
        return 0;
    if (changed) { /* E16 makes this impossible; if it happens, the error reply stands */
        rd_warn("a command missed a page after changing one; it answers its error instead of waiting");
        s->exec_missed = 0;
        return 0;
    }
    rd_assert(c->out.len >= out_mark);
    c->out.len = out_mark; /* S25: nothing of the parked run reaches the client */
    c->parked = 1;
    return 1;
}

int server_suspend_end(struct server *s, struct conn *c)
{
    if (s->exec_conn == NULL) {
        if (c->park_misses >= SERVER_SUSPEND_MAX_MISSES)
            c->park_misses = 0; /* the fallback run finished the command */
        return 0;
    }
    rd_assert(s->exec_conn == c);
    s->exec_conn = NULL;
    s->exec_missed = 0;
    uint64_t now = rd_now_us();
    if (c->parked) {
        if (c->park_misses++ == 0)
            c->park_since_us = now;
        c->park_page = s->exec_miss_page;
        s->susp.parked++;
        return 1;
    }
    if (c->park_misses > 0) { /* a parked command finished */
        s->susp.resumed++;
        s->susp.wait_us_total += now - c->park_since_us;
        c->park_misses = 0;
    }
    return 0;
}

int server_suspend_failed_reply(struct server *s, struct conn *c)
{
    if (!c->park_failed)
        return 0;
    c->park_failed = 0;
    c->park_misses = 0;
    s->susp.failed++;
    char msg[160];
    snprintf(msg, sizeof(msg), "TRYAGAIN storage unavailable: page %u could not be read from any storage node",
             c->park_page);
    if (resp_error(&c->out, msg) < 0)
        rd_panic("out of memory for a reply");
    conn_reply_done(s, c, 0);
    return 1;
}

void server_suspend_wake(struct server *s, uint32_t page_id, int failed)
{
    for (struct conn *c = s->conns; c; c = c->next) {
        if (!c->parked || c->park_page != page_id)
            continue;
        c->parked = 0;
        c->park_failed = failed;
        conn_mark_ready(s, c);
    }
}

void server_suspend_sweep(struct server *s, int (*pending)(void *ctx, uint32_t page_id), void *ctx)
{
    for (struct conn *c = s->conns; c; c = c->next)
        if (c->parked && !pending(ctx, c->park_page)) { /* its request is gone: run again (asks anew) */
            c->parked = 0;
            conn_mark_ready(s, c);
        }
}

void server_suspend_info(const struct server *s, struct rd_buf *b)
{
    size_t parked = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
        parked += c->parked != 0;
    rd_buf_appendf(b,
                   "commands_parked_now:%zu\r\ncommands_parked:%" PRIu64 "\r\ncommands_resumed:%" PRIu64
                   "\r\ncommands_page_failed:%" PRIu64 "\r\ncommands_sync_fallbacks:%" PRIu64
                   "\r\ncommands_parked_wait_us_total:%" PRIu64 "\r\n",
                   parked, s->susp.parked, s->susp.resumed, s->susp.failed, s->susp.sync_fallbacks,
                   s->susp.wait_us_total);
}
