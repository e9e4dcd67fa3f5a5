"""scripts/cluster trace (issue 13): one sampled commit, every step of the seed's diagram, on every process.

For each mode a cluster is started with scripts/cluster (no monitors), `scripts/cluster trace` is run
twice (two different sampled commits), and its lines ("+<µs> us <proc> <step> ...", one per step and
process, time order) are checked:
  classic (primary + replica1, replica2, remote_flush, ANY 1 (replica1,replica2); and once with
  --commit local, no sync replica: each replica still has its own steps):
    primary: received, pages_changed, wal_written, wal_fsynced, shipped to each replica, ack_received,
    durable, reply_sent; each replica: peer_received, peer_written, peer_fsynced, peer_acked,
    peer_applied, visible;
  aurora (6 storage nodes, writer, reader1): writer: received, pages_changed, redo_batch, shipped to
    each of the 6 nodes, at least 4 ack_received before durable, reply_sent, feed_sent; each of the 6
    storage nodes: peer_received, peer_written (hot-logged), peer_fsynced, peer_acked, coalesced;
    reader1: peer_applied, visible.
Order (no timing assertion beyond it): within each process the steps come in causal order (received <=
written <= fsynced <= acked <= coalesced, applied <= visible, received <= pages changed <= ... <=
durable <= reply sent), and across processes on this one machine (one CLOCK_MONOTONIC): the
writer's shipped to a peer <= that peer's received, a peer's acked <= the writer's ack from it, and the
writer's feed_sent <= the reader's applied. The trace id travels in trace marks (common/trace.h C22):
every process answers REDOUBT.TRACE GET with the writer's id.
"""
import time

from harness import check, tmpdir
from test_cluster_classic import Cluster, free_range

t_start = time.time()


def parse(out):
    """[(offset_us, proc, step, text)] from `scripts/cluster trace`."""
    rows = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == "us" and f[0].lstrip("+-").isdigit():
            rows.append((int(f[0]), f[2], f[3], " ".join(f[4:])))
    return rows


def first(rows, proc, step, contains=""):
    for t, p, s, txt in rows:
        if p == proc and s == step and contains in txt:
            return t
    return None


def in_order(rows, proc, steps):
    ts = [first(rows, proc, s) for s in steps]
    for s, t in zip(steps, ts):
        check(t is not None, f"{proc} has {s}: {[r for r in rows if r[1] == proc]}")
    for (s1, t1), (s2, t2) in zip(zip(steps, ts), zip(steps[1:], ts[1:])):
        check(t1 <= t2, f"{proc}: {s1} ({t1} us) <= {s2} ({t2} us)")


def classic(cl):
    cl.run("start", "classic", "--monitors", 0, "--dir", cl.dir, "--base-port", free_range(), timeout=180)
    ids = set()
    for _ in range(2):
        out = cl.run("trace", timeout=60).stdout
        print(out, flush=True)
        ids.add(out.splitlines()[0].split()[2])
        rows = parse(out)
        check(rows and rows[0][1:3] == ("primary", "received") and rows[0][0] == 0, f"starts at the receipt: {rows[:1]}")
        in_order(rows, "primary", ["received", "pages_changed", "wal_written", "wal_fsynced", "durable", "reply_sent"])
        in_order(rows, "primary", ["pages_changed", "shipped"])
        for r in ("replica1", "replica2"):
            shipped = first(rows, "primary", "shipped", f"to {r}:")
            check(shipped is not None, f"the primary shipped to {r}: {rows}")
            in_order(rows, r, ["peer_received", "peer_written", "peer_fsynced", "peer_acked"])
            in_order(rows, r, ["peer_received", "peer_applied", "visible"])
            check(shipped <= first(rows, r, "peer_received"), f"shipped to {r} <= {r} received")
            ack = first(rows, "primary", "ack_received", f"from {r}:")
            if ack is not None:  # the ack that was not needed may come after the trace was read
                check(first(rows, r, "peer_acked") <= ack, f"{r} acked <= the primary's ack from {r}")
        check(any(s == "ack_received" for _, p, s, _ in rows if p == "primary"), "an acknowledgement")
    check(len(ids) == 2, f"two different sampled commits: {ids}")
    cl.run("stop", timeout=60)


def classic_local(cl):
    """--commit local (no sync replica): each replica still gets its own trace mark (its number from its name)."""
    cl.run("start", "classic", "--commit", "local", "--monitors", 0, "--dir", cl.dir, "--base-port", free_range(),
           timeout=180)
    out = cl.run("trace", timeout=60).stdout
    print(out, flush=True)
    rows = parse(out)
    in_order(rows, "primary", ["received", "pages_changed", "wal_written", "wal_fsynced", "durable", "reply_sent"])
    for r in ("replica1", "replica2"):
        check(first(rows, "primary", "shipped", f"to {r}:") is not None, f"the primary shipped to {r}: {rows}")
        in_order(rows, r, ["peer_received", "peer_written", "peer_fsynced", "peer_acked"])
        in_order(rows, r, ["peer_received", "peer_applied", "visible"])
    cl.run("stop", timeout=60)


def aurora(cl):
    cl.run("start", "aurora", "--readers", 1, "--monitors", 0, "--dir", cl.dir, "--base-port", free_range(),
           timeout=180)
    for _ in range(2):
        out = cl.run("trace", timeout=60).stdout
        print(out, flush=True)
        rows = parse(out)
        w = "writer"
        check(rows and rows[0][1:3] == (w, "received") and rows[0][0] == 0, f"starts at the receipt: {rows[:1]}")
        in_order(rows, w, ["received", "pages_changed", "redo_batch", "shipped", "ack_received", "durable",
                           "reply_sent"])
        in_order(rows, w, ["durable", "feed_sent"])
        mine = [s for _, p, s, _ in rows if p == w]
        check(mine.count("shipped") == 6, f"shipped to the 6 nodes: {mine}")
        check(mine[:mine.index("durable")].count("ack_received") >= 4, f"4 acks before durable: {mine}")
        for k in range(1, 7):
            n = f"storage{k}"
            in_order(rows, n, ["peer_received", "peer_written", "peer_fsynced", "peer_acked", "coalesced"])
            shipped = first(rows, w, "shipped", f"to {n}:")
            check(shipped is not None and shipped <= first(rows, n, "peer_received"), f"shipped to {n} <= {n} received")
            ack = first(rows, w, "ack_received", f"from {n}:")
            if ack is not None:
                check(first(rows, n, "peer_acked") <= ack, f"{n} acked <= the writer's ack from {n}")
        in_order(rows, "reader1", ["peer_applied", "visible"])
        check(first(rows, w, "feed_sent") <= first(rows, "reader1", "peer_applied"), "feed sent <= reader applied")
    cl.run("stop", timeout=60)


def main():
    for name, body in (("classic", classic), ("classic-local", classic_local), ("aurora", aurora)):
        cl = Cluster(tmpdir(f"redoubt-trace-{name}-"))
        try:
            body(cl)
        finally:
            cl.kill_leftovers()
        print(f"{name}: ok ({time.time() - t_start:.0f}s)", flush=True)
    print(f"test_trace: ok ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
