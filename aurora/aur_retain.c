/*
 * aur_retain.c — the writer keeps the WRITE frames above VDL and resends them to a
 * node whose SCL is stuck below them (aurora/README S27).
 *
 * Storage nodes fill gaps from each other (gossip), which covers a node that missed
 * frames its peers received. It cannot cover frames that no node received: shipped
 * into links that were all broken or partitioned at that moment. Their records exist
 * only in the writer, so every node's SCL stops below them, VDL never passes them and
 * the writer can never acknowledge a write again — while it looks alive to the
 * monitors (chaos: isolate_writer with a reset then a drop partition). Aurora's writer
 * keeps redo until it is durable for the same reason.
 *
 * A node counts as stuck when its SCL (from its ACKs and its STATE answers to the
 * writer's 100 ms polls) has not risen for AUR_RESEND_STUCK_MS while retained frames
 * end above it; then every retained frame ending above its SCL is resent, at most once
 * per AUR_RESEND_STUCK_MS. Nodes skip records they hold (and every LSN ≤ their SCL),
 * so a resend is idempotent. Frames leave the buffer once VDL covers them (records at
 * or below VDL are on ≥ 4 nodes, and gossip reaches the others).
 */
#include <inttypes.h>
#include <string.h>

#include "aurora/aur_int.h"
#include "common/log.h"
#include "common/util.h"

void aur_retain_add(struct aurora *a, const uint8_t *frame, size_t len, uint64_t last_lsn)
{
    struct aur_retain *r = &a->retain;
    aur_retain_trim(a);
    while (r->n > 0 && (r->n == AUR_RETAIN_MAX || r->buf.len + len > AUR_RETAIN_MAX_BYTES)) {
        if (!r->overflow_logged)
            rd_warn("more than %u frames / %u MiB of redo above VDL: the oldest are no longer kept for "
                    "resending (S27); nodes that miss them rely on their peers", AUR_RETAIN_MAX,
                    AUR_RETAIN_MAX_BYTES >> 20);
        r->overflow_logged = 1;
        rd_buf_consume(&r->buf, r->ent[r->head].len);
        r->head = (r->head + 1) % AUR_RETAIN_MAX;
        r->n--;
    }
    if (rd_buf_append(&r->buf, frame, len) < 0)
        rd_panic("out of memory keeping a redo frame");
    size_t k = (r->head + r->n) % AUR_RETAIN_MAX;
    r->ent[k].last_lsn = last_lsn;
    r->ent[k].len = len;
    r->n++;
}

void aur_retain_trim(struct aurora *a)
{
    struct aur_retain *r = &a->retain;
    size_t drop = 0;
    while (r->n > 0 && r->ent[r->head].last_lsn <= a->q.vdl) {
        drop += r->ent[r->head].len;
        r->head = (r->head + 1) % AUR_RETAIN_MAX;
        r->n--;
    }
    if (drop > 0)
        rd_buf_consume(&r->buf, drop);
    if (r->n == 0)
        r->overflow_logged = 0;
}

void aur_retain_check(struct server *s, unsigned i, uint64_t node_scl)
{
    struct aurora *a = aur_of(s);
    struct aur_node *nd = &a->node[i];
    struct aur_retain *r = &a->retain;
    struct conn *c = nd->conn;
    uint64_t now = aur_now_ms();
    if (c == NULL || c->closing || !c->peer_authed || a->fenced)
        return;
    aur_retain_trim(a);
    if (r->n == 0 || node_scl >= a->last_lsn || now < nd->scl_moved_ms + AUR_RESEND_STUCK_MS)
        return;
    size_t off = 0, nframes = 0, bytes = 0;
    for (size_t j = 0; j < r->n; j++) {
        size_t k = (r->head + j) % AUR_RETAIN_MAX;
        if (r->ent[k].last_lsn > node_scl) {
            if (rd_buf_append(&c->out, r->buf.data + off, r->ent[k].len) < 0)
                rd_panic("out of memory resending redo");
            nframes++;
            bytes += r->ent[k].len;
        }
        off += r->ent[k].len;
    }
    nd->scl_moved_ms = now;
    nd->resends += nframes;
    if (nframes > 0 && !nd->resend_logged++)
        rd_warn("storage node %u: SCL stuck at %" PRIu64 " below LSN %" PRIu64 " for %d ms: resending %zu "
                "retained frame(s), %zu bytes (S27; logged once until it moves)", i + 1, node_scl, a->last_lsn, AUR_RESEND_STUCK_MS, nframes,
                bytes);
}
