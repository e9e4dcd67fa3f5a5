"""A failed fdatasync stops the process; nothing it was flushing is acknowledged.

PostgreSQL learned in 2018 ("fsyncgate") that retrying a failed fsync can
report success for data the kernel already dropped; Redoubt PANICs instead
(wal/README.md W9, common/README.md C5). A real EIO from a disk is hard to
produce in a test, so the WAL's fdatasync reports EIO through the fault
injection point wal_fsync (RD_FAULT=wal_fsync:N: the Nth WAL fdatasync fails).

1. standalone, acked load (redoubt-bench --mode acked), RD_FAULT=wal_fsync:N:
   the server exits with status 70 and logs the failed fdatasync with the file;
   restarted without the fault, every acknowledged write is there (and no
   write whose batch failed was acknowledged: the bench counts an unanswered
   request as in flight, not acked).
2. primary + 2 replicas, --commit remote_flush ANY 1 (r1,r2); r1 runs with the
   fault: r1 exits 70, the primary keeps committing through r2, and after r1
   restarts (without the fault) it resumes and converges; every acknowledged
   write is on the primary and on r1.
4. (section 2b) the primary's own fdatasync fails (primary + r1, remote_flush): the primary
   exits 70; r1 may hold WAL of the failed batch (shipped once written, CR1) but has applied
   nothing past the flush LSN the primary reported (CR2); promoted, r1 has every acknowledged
   write.
3. aurora: writer + 6 storage nodes, node 2 runs with RD_FAULT=sn_fsync:N (its
   hot-log fdatasync fails): it exits 70 without acknowledging, the writer keeps
   committing on the other five; restarted without the fault it catches up, and
   every acknowledged write reads back through the writer.
"""
import os
import random
import re
import subprocess
import time

from harness import (AuroraCluster, Primary, Replica, Server, acked_load, check, diff_dumps, dump, fail, seed, tmpdir,
                     verify_state, wait_converged, wait_for, wait_streaming)

rng = random.Random(seed())
work = tmpdir()


def acked(port, tag, state, duration, clients=4):
    return acked_load(port, tag, state, clients=clients, duration=duration, seed_=rng.randrange(1 << 30))


def wait_exit(node, what):
    """The exit status of node, which must stop by itself within 60 s (it was given a failing fsync)."""
    try:
        return node.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        fail(f"{what} did not stop after its injected fdatasync failure:\n{node.log()}")


# ---- 1. standalone
n = rng.randrange(50, 400)
s = Server()
s.env = {"RD_FAULT": f"wal_fsync:{n}"}
s.start()
state = os.path.join(work, "standalone.txt")
load = acked(s.port, "s", state, 30)
rc = wait_exit(s, "the server")
out, _ = load.communicate(timeout=60)
log = s.log()
check(rc == 70, f"a failed fdatasync must end the process with status 70 (PANIC), got {rc}:\n{log}")
m = re.search(r"could not fdatasync WAL segment \"[^\"]+\": .*", log)
check(m is not None, f"the log must name the failed fdatasync and the file:\n{log}")
print(f"standalone: fdatasync #{n} failed -> exit {rc}: {m.group(0)}", flush=True)
print("  " + next((l for l in out.splitlines() if l.startswith("acked:")), out.strip()[-200:]), flush=True)
s.env = {}
s.start()
lost, vout = verify_state(s.port, state)
check(lost == 0, f"acknowledged writes lost after the failed fdatasync:\n{vout}")
print("  restarted without the fault: " + next(l for l in vout.splitlines() if "keys checked" in l).strip(), flush=True)
s.stop()

# ---- 2. a replica's fdatasync fails
sync = ["--commit", "remote_flush", "--sync-replicas", "ANY 1 (r1,r2)"]
p = Primary(args=sync).start()
r1 = Replica(p.port, "r1")
r1.env = {"RD_FAULT": f"wal_fsync:{rng.randrange(50, 300)}"}
r1.start()
r2 = Replica(p.port, "r2").start()
wait_streaming(p, 2)
state = os.path.join(work, "replica.txt")
load = acked(p.port, "r", state, 4)
rc = wait_exit(r1, "r1")
check(rc == 70 and "could not fdatasync WAL segment" in r1.log(),
      f"r1 must PANIC (exit 70) on its failed fdatasync, got {rc}:\n{r1.log()}")
out, _ = load.communicate(timeout=60)
acked_line = next((l for l in out.splitlines() if l.startswith("acked:")), out.strip()[-200:])
print(f"replica r1: fdatasync failed -> exit {rc}; the load went on through r2: {acked_line}", flush=True)
check(p.alive(), "the primary stays up when a replica fails")
m = re.search(r"acked: (\d+) acknowledged", out)
check(m is not None and int(m.group(1)) > 0, f"writes must keep being acknowledged via r2:\n{out}")
r1.env = {}
r1.start()
wait_streaming(p, 2)
wait_converged(p, [r1, r2])
for node in (p, r1):
    lost, vout = verify_state(node.port, state)
    check(lost == 0, f"acknowledged writes missing on {getattr(node, 'name', 'primary')}:\n{vout}")
d = diff_dumps(dump(p.port), dump(r1.port), "primary", "r1")
check(not d, f"r1 differs from the primary after its restart:\n{d}")
print("  r1 restarted without the fault, resumed and converged; every acknowledged write on the primary and r1",
      flush=True)

# ---- 2b. the primary's fdatasync fails: its replica received the batch but never applied it
p = Primary(args=["--commit", "remote_flush", "--sync-replicas", "ANY 1 (r1)"])
p.env = {"RD_FAULT": f"wal_fsync:{rng.randrange(200, 600)}"}
p.start()
r1 = Replica(p.port, "r1").start()  # promoted, it commits locally (no replica of its own to wait for)
wait_streaming(p, 1)
state = os.path.join(work, "primary.txt")
load = acked(p.port, "p", state, 30, clients=rng.choice([1, 4, 8]))
rc = wait_exit(p, "the primary")
out, _ = load.communicate(timeout=60)
check(rc == 70, f"the primary must PANIC (exit 70) on its failed fdatasync, got {rc}:\n{p.log()}")
time.sleep(0.3)  # r1 has everything the dead primary sent
ri = r1.info("replication")
flush, apply_, pflush = (int(ri.get(k, "0")) for k in ("flush_lsn", "apply_lsn", "primary_flush_lsn"))
check(apply_ <= pflush, f"CR2: r1 applied up to {apply_}, past the primary's reported flush {pflush}: {ri}")
print(f"primary: fdatasync failed -> exit {rc}; r1 holds WAL to {flush}, the primary reported {pflush} flushed, "
      f"r1 applied to {apply_} ({'it held WAL of the failed batch, not applied' if flush > pflush else 'no WAL past the reported flush'})",
      flush=True)
check(r1.cli("REPLICAOF", "NO", "ONE").strip() == "OK", "promote r1")
wait_for("r1 accepts writes", lambda: r1.cli("SET", "after:promotion", "1").strip() == "OK", 30, interval=0.1)
lost, vout = verify_state(r1.port, state)
check(lost == 0, f"acknowledged writes lost after the primary's failed fdatasync and promotion:\n{vout}")
print("  r1 promoted: every acknowledged write is there; " +
      next((l for l in out.splitlines() if l.startswith("acked:")), "").strip(), flush=True)

# ---- 3. a storage node's hot-log fdatasync fails
cl = AuroraCluster(nreaders=0)
bad = cl.nodes[2]
bad.env = {"RD_FAULT": f"sn_fsync:{rng.randrange(50, 300)}"}
cl.start()
state = os.path.join(work, "aurora.txt")
load = acked(cl.writer.port, "a", state, 4)
rc = wait_exit(bad, "storage node 2")
check(rc == 70 and "could not fdatasync the hot log" in bad.log(),
      f"storage node 2 must PANIC (exit 70) on its failed fdatasync, got {rc}:\n{bad.log()}")
out, _ = load.communicate(timeout=60)
m = re.search(r"acked: (\d+) acknowledged", out)
check(m is not None and int(m.group(1)) > 0, f"writes must keep being acknowledged by 5 nodes:\n{out}")
print(f"storage node 2: hot-log fdatasync failed -> exit {rc}; the writer went on with 5 nodes: {m.group(0)} writes",
      flush=True)
bad.env = {}
bad.start()
cl.wait_nodes_caught_up([bad], timeout=60)
lost, vout = verify_state(cl.writer.port, state)
check(lost == 0, f"acknowledged writes lost:\n{vout}")
print("  node 2 restarted without the fault and caught up; every acknowledged write reads back", flush=True)
print("ok")
