/*
 * sn_trace.h — the commit trace on a storage node (issue 13; common/trace.h, README "Commit trace").
 *
 * The writer sends a trace mark (C22) right before the WRITE frame carrying a sampled commit; the
 * node follows that commit LSN under the writer's trace id for SN_TRACE_LINGER_US and records:
 *   peer_received  the WRITE frame carrying it was taken (a: the batch's last LSN, b: records)
 *   peer_written   its hot-log group write was submitted (a: its LSN, b: bytes of that write)
 *   peer_fsynced   that write is durable: its O_DIRECT|RWF_DSYNC write or its fdatasync completed
 *   peer_acked     an ACK whose SCL covers it was queued (a: SCL, b: highest durable LSN)
 *   coalesced      a coalescing round applied it to its page in the page store (a: coalesced LSN,
 *                  b: pages written in that round)
 * Each sn_node.c hook is one line; the RESP port answers REDOUBT.TRACE GET [ID] | LAST.
 */
#ifndef RD_SN_TRACE_H
#define RD_SN_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/resp.h"
#include "common/trace.h"

/* A followed commit is coalesced within about a second (the coalescing round) once the VDL the
 * writer sends with its next batch covers it: followed this long after its mark. */
#define SN_TRACE_LINGER_US 5000000u

/* A WRITE frame's redo batch payload p[0..n) was taken: peer_received for the commits it covers. */
void sn_trace_write_slow(const uint8_t *p, size_t n);
static inline void sn_trace_write(const uint8_t *p, size_t n)
{
#ifndef RD_TRACE_OFF
    if (__builtin_expect(trace_ninflight == 0, 1))
        return;
    sn_trace_write_slow(p, n);
#else
    (void)p, (void)n;
#endif
}

/* REDOUBT.TRACE on the node's RESP port: GET [ID] (the events, one line each, proc "storageN", N = node id + 1;
 * no id: every event in the ring) | LAST (the newest id followed, or nil). Appends the reply. */
void sn_trace_command(struct rd_buf *out, const struct resp_args *a, uint32_t node_id);

#endif
