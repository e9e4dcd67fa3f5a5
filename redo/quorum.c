/*
 * quorum.c — the writer's view of the six storage nodes: VCL and VDL from
 * their acknowledged SCLs (invariants Q1..Q6 in redo/README.md), and the
 * recovery point a new writer computes from a read quorum (4 + 3 > 6).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/util.h"
#include "redo/redo.h"

_Static_assert(REDO_WRITE_QUORUM + REDO_READ_QUORUM > REDO_NODES, "read and write quorums must intersect");
_Static_assert(2 * REDO_WRITE_QUORUM > REDO_NODES, "two write quorums must intersect");

/* ------------------------------------------------------------ tracker */

int redo_quorum_init(struct redo_quorum *q, size_t max_pending_cpls)
{
    rd_assert(max_pending_cpls >= 1);
    memset(q, 0, sizeof(*q));
    q->cpl = calloc(max_pending_cpls, sizeof(q->cpl[0]));
    if (q->cpl == NULL)
        return -ENOMEM;
    q->cpl_cap = max_pending_cpls;
    return 0;
}

void redo_quorum_free(struct redo_quorum *q)
{
    free(q->cpl);
    memset(q, 0, sizeof(*q));
}

static uint64_t cpl_at(const struct redo_quorum *q, size_t i)
{
    return q->cpl[(q->cpl_head + i) % q->cpl_cap];
}

/* The REDO_WRITE_QUORUM-th largest SCL: held by at least 4 nodes. */
static uint64_t quorum_scl(const struct redo_quorum *q)
{
    uint64_t s[REDO_NODES];
    memcpy(s, q->scl, sizeof(s));
    for (size_t i = 1; i < REDO_NODES; i++) { /* insertion sort, descending */
        uint64_t v = s[i];
        size_t j = i;
        for (; j > 0 && s[j - 1] < v; j--)
            s[j] = s[j - 1];
        s[j] = v;
    }
    return s[REDO_WRITE_QUORUM - 1];
}

/* Raises VCL to the quorum SCL (never lowers it: Q3) and VDL to the highest
 * pending CPL at or below it, dropping those from the ring. Returns 1 if VDL moved. */
static int recompute(struct redo_quorum *q)
{
    uint64_t v = quorum_scl(q);
    if (v > q->vcl)
        q->vcl = v;
    uint64_t old_vdl = q->vdl;
    while (q->cpl_n > 0 && cpl_at(q, 0) <= q->vcl) {
        q->vdl = cpl_at(q, 0);
        q->cpl_head = (q->cpl_head + 1) % q->cpl_cap;
        q->cpl_n--;
    }
    rd_assert(q->vdl <= q->vcl && q->vdl >= old_vdl);
    return q->vdl != old_vdl;
}

int redo_quorum_add_cpl(struct redo_quorum *q, uint64_t lsn)
{
    uint64_t last = q->cpl_n > 0 ? cpl_at(q, q->cpl_n - 1) : q->vdl;
    if (lsn <= last)
        return -EINVAL; /* CPLs are registered in ascending order */
    if (lsn <= q->vcl) {
        /* Already on a write quorum (registered late): every pending CPL is
         * above VCL, so the ring is empty and this is the new VDL. */
        rd_assert(q->cpl_n == 0);
        q->vdl = lsn;
        return 1;
    }
    if (q->cpl_n == q->cpl_cap)
        return RD_EFULL;
    q->cpl[(q->cpl_head + q->cpl_n) % q->cpl_cap] = lsn;
    q->cpl_n++;
    return 0;
}

int redo_quorum_ack(struct redo_quorum *q, unsigned node, uint64_t scl)
{
    rd_assert(node < REDO_NODES);
    if (scl <= q->scl[node])
        return 0; /* a late or duplicated ack: SCLs never move backwards (Q1) */
    q->scl[node] = scl;
    return recompute(q);
}

void redo_quorum_reset_node(struct redo_quorum *q, unsigned node, uint64_t scl)
{
    rd_assert(node < REDO_NODES);
    q->scl[node] = scl;
    (void)recompute(q); /* can only raise VCL/VDL, if scl is above the old value */
}

/* ------------------------------------------------------------ recovery */

int redo_recovery_point(const struct redo_node_state *st, size_t n, uint64_t *vcl_out, uint64_t *vdl_out)
{
    if (n < REDO_READ_QUORUM)
        return RD_EQUORUM;
    if (n > REDO_NODES)
        return -EINVAL; /* more answers than nodes: the caller counted a node twice */
    uint64_t vcl = 0, vdl = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i].max_cpl > st[i].scl)
            return RD_ECORRUPT; /* a node claims a CPL above its own complete prefix */
        vcl = RD_MAX(vcl, st[i].scl);
    }
    for (size_t i = 0; i < n; i++)
        if (st[i].max_cpl <= vcl)
            vdl = RD_MAX(vdl, st[i].max_cpl);
    *vcl_out = vcl;
    *vdl_out = vdl;
    return 0;
}
