"""Classic terms: a quorum of replicas fenced before promotion (replica/README.md T1-T6),
bounded commit waits (server/README.md S20) and leases (LS1-LS3).

Part 1 — the partition the monitor cannot see: a primary with --commit remote_flush
  --sync-replicas 'ANY 1 (r1,r2)' keeps serving clients that write straight to it
  (acked load, redoubt-bench --mode acked) while a failover happens *without* it:
  REDOUBT.TERM T on both replicas (n-k+1 = 2), then REDOUBT.PROMOTE T on the most
  advanced by (timeline, write_lsn), the other re-pointed. From the moment both
  replicas hold T, the old primary can no longer assemble its sync set: its clients
  get -TIMEOUT (outcome unknown), never +OK, and every write it acknowledged is on the
  new primary (redoubt-bench --mode verify: 0 lost). The old primary learns the newer
  term from a replica's handshake and fences itself (INFO fenced:1).
Part 2 — a partial fence (one replica at a newer term): the primary learns of it when that
  replica reconnects and fences itself; an aborted failover is undone by REDOUBT.PROMOTE T
  on the old primary (the other replica adopts T from its handshake); stale terms and a
  PROMOTE for the wrong term are refused with STALETERM; a term survives kill -9.
Part 3 — bounded waits: with no sync replica, pipelined SET/GET/PING answer -TIMEOUT,
  -TIMEOUT, PONG in order after --commit-timeout-ms; INFO shows commits_waiting.
Part 4 — leases: a --commit local primary with --lease-ms 400 --lease-monitors 3
  refuses writes (NOLEASE) until 2 of 3 monitors renew, acknowledges while they do, and
  refuses again once they stop.
"""
import os
import random
import time

from harness import (Primary, Replica, RespError, Resp, acked_load, check, fail, lsn, repl_info, seed,
                     tmpdir, verify_state, wait_for, wait_streaming)

rng = random.Random(seed())
work = tmpdir()
SYNC = ["--commit", "remote_flush", "--sync-replicas", "ANY 1 (r1,r2,r3)", "--commit-timeout-ms", "1000"]


def call(node, *args, timeout=10):
    c = Resp(node.port, timeout=timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def term_of(node):
    return int(node.info("replication").get("term", "-1"))


# ---------------------------------------------------------------- part 1
print("== part 1: fence a quorum of replicas under live load on the old primary", flush=True)
p = Primary(args=SYNC).start()
r1 = Replica(p.port, "r1", args=SYNC).start()
r2 = Replica(p.port, "r2", args=SYNC).start()
wait_streaming(p, 2)
wait_for("a write before the failover (the first may time out while the replicas settle on a loaded machine)",
         lambda: call(p, "SET", "before", "1") == "OK", timeout=30, interval=0.1)
state = os.path.join(work, "state1")
load = acked_load(p.port, "t1:", state, clients=8, duration=4, keyspace=4000, seed_=rng.randrange(1 << 30))
time.sleep(1.0 + rng.random())
T = 17
t_fence = time.time()
answers = {}
for r in (r1, r2):
    a = call(r, "REDOUBT.TERM", T)
    check(isinstance(a, list) and a[0] == T and a[1] == b"replica", f"REDOUBT.TERM answer: {a!r}")
    answers[r.name] = a
print(f"  both replicas at term {T}: {answers}", flush=True)
# Writes the old primary answers from now on can only be errors: probe it directly.
probe = Resp(p.port, timeout=10)
r = probe.call("SET", "after-fence", "x")
check(isinstance(r, RespError) and str(r).startswith("TIMEOUT"),
      f"the old primary acknowledged a write after both replicas were fenced: {r!r}")
print(f"  old primary answers a new write with: {r}", flush=True)
probe.close()
best = max((r1, r2), key=lambda n: (answers[n.name][2], answers[n.name][3], answers[n.name][4]))
other = r2 if best is r1 else r1
check(call(best, "REDOUBT.PROMOTE", T + 1).__class__ is RespError, "PROMOTE for another term refused")
check(call(best, "REDOUBT.PROMOTE", T) == "OK", "REDOUBT.PROMOTE T on the best replica")
check(call(other, "REPLICAOF", "127.0.0.1", best.port) == "OK", "re-point the other replica")
out, _ = load.communicate(timeout=120)
print("  " + "\n  ".join(l for l in out.splitlines() if "acked" in l or "error" in l.lower())[:600], flush=True)
lost, vout = verify_state(best.port, state)
check(lost == 0, f"acknowledged writes lost on the new primary: {lost}\n{vout}")
check(call(best, "GET", "before") == b"1", "the write from before the failover is on the new primary")
wait_for("the other replica to stream from the new primary", lambda: len(
    [s for s in repl_info(best)["slaves"] if s.get("state") == "streaming"]) >= 1, 60)
check(call(best, "SET", "on-new", "1") == "OK", "the new primary commits through the re-pointed replica")
# The old primary is told about the new term by a replica that reconnects to it.
old_as_replica_view = Replica(p.port, "r3", args=SYNC, dir=os.path.join(work, "r3"))
os.makedirs(old_as_replica_view.dir, exist_ok=True)
with open(os.path.join(old_as_replica_view.dir, "term"), "wb") as f:  # a replica that knows term T
    import shutil
    shutil.copyfile(os.path.join(best.dir, "term"), f.name)
old_as_replica_view.start(wait=False)
wait_for("the old primary to fence itself after seeing a newer term",
         lambda: p.info("replication").get("fenced") == "1", 30)
check(term_of(p) == T, f"the old primary adopted term {T}: {term_of(p)}")
r = call(p, "SET", "k", "v")
check(isinstance(r, RespError) and "fenced" in str(r), f"fenced old primary refuses writes: {r!r}")
print(f"  0 lost; old primary fenced at term {T} ({time.time() - t_fence:.1f}s after the fence)", flush=True)
old_as_replica_view.kill9()
for n in (p, r1, r2):
    n.kill9()

# ---------------------------------------------------------------- part 2
print("== part 2: partial fence, stale terms, persistence", flush=True)
p = Primary(args=SYNC).start()
r1 = Replica(p.port, "r1", args=SYNC).start()
r2 = Replica(p.port, "r2", args=SYNC).start()
wait_streaming(p, 2)
a = call(r1, "REDOUBT.TERM", 33)
check(isinstance(a, list) and a[0] == 33, f"term 33 on r1: {a!r}")
# r1 reconnects with term 33: the primary learns a newer term exists and fences itself (T3),
# although a failover for 33 may never finish: that costs availability, never a write.
wait_for("the primary to fence itself on r1's newer term", lambda: p.info("replication").get("fenced") == "1", 30)
r = call(p, "SET", "partial", "1")
check(isinstance(r, RespError) and "fenced" in str(r), f"a term-fenced primary refuses writes: {r!r}")
check(str(call(r1, "REDOUBT.TERM", 20)).startswith("STALETERM"), "a lower term is refused")
check(isinstance(call(r1, "REDOUBT.TERM", 33), list), "the same term again is idempotent")
check(str(call(r2, "REDOUBT.PROMOTE", 33)).startswith("STALETERM"), "PROMOTE for a term r2 was not fenced for")
# An aborted failover: the monitor makes the old primary the primary of term 33 instead.
check(call(p, "REDOUBT.PROMOTE", 33) == "OK", "REDOUBT.PROMOTE 33 lifts the old primary's term fence")
wait_streaming(p, 2)
check(call(p, "SET", "partial", "2") == "OK", "primary of term 33 commits again (r2 adopted 33 from HELLO)")
check(term_of(r2) == 33, f"r2 adopted term 33 from the primary's handshake: {term_of(r2)}")
r1.kill9()
r1.start()
wait_for("r1 back after kill -9", lambda: term_of(r1) == 33, 60)
print("  partial fence fences the primary; PROMOTE 33 restores it; r1 keeps term 33 across kill -9", flush=True)
check(call(p, "INFO", "replication").__class__ is bytes, "INFO answers at once")
for n in (p, r1, r2):
    n.kill9()

# ---------------------------------------------------------------- part 3
print("== part 3: bounded commit waits", flush=True)
p = Primary(args=["--commit", "remote_flush", "--sync-replicas", "ANY 1 (r1)", "--commit-timeout-ms", "700"]).start()
c = Resp(p.port, timeout=10)
t0 = time.time()
c.send("SET", "a", "1")
c.send("GET", "a")
c.send("PING")
time.sleep(0.2)
info = call(p, "INFO", "replication").decode()
check("commits_waiting:2" in info and "sync_state:waiting (0/1)" in info, f"INFO while waiting:\n{info}")
replies = [c.read(), c.read(), c.read()]
waited = time.time() - t0
check(isinstance(replies[0], RespError) and str(replies[0]).startswith("TIMEOUT commit outcome unknown"),
      f"SET reply {replies[0]!r}")
check(isinstance(replies[1], RespError) and str(replies[1]).startswith("TIMEOUT"), f"GET reply {replies[1]!r}")
check(replies[2] == "PONG", f"PING reply {replies[2]!r} (order kept)")
print(f"  SET/GET/PING -> TIMEOUT, TIMEOUT, PONG after {waited:.2f}s", flush=True)
r1 = Replica(p.port, "r1", args=SYNC).start()
wait_streaming(p, 1)
# (each GET may itself time out while the replica catches up on a loaded machine: retry, as a client would)
wait_for("the timed-out write to be committed once the sync replica came (its outcome was unknown)",
         lambda: c.call("GET", "a") == b"1", timeout=30, interval=0.1)
c.close()
p.kill9()
r1.kill9()

# ---------------------------------------------------------------- part 4
print("== part 4: leases (--commit local)", flush=True)
p = Primary(args=["--commit", "local", "--lease-ms", "400", "--lease-monitors", "3"]).start()
r = call(p, "SET", "x", "1")
check(isinstance(r, RespError) and str(r).startswith("NOLEASE"), f"no lease yet: {r!r}")


def renew(ids):
    now_ms = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)
    for i in ids:
        check(call(p, "REDOUBT.LEASE", i, now_ms) == "OK", "lease renewal")


renew([1])
check(str(call(p, "SET", "x", "1")).startswith("NOLEASE"), "1 of 3 monitors is not a majority")
renew([1, 2])
check(call(p, "SET", "x", "2") == "OK", "2 of 3 monitors: writes acknowledged")
check(p.info("replication").get("lease") == "ok", "INFO lease:ok")
time.sleep(0.6)
r = call(p, "SET", "x", "3")
check(isinstance(r, RespError) and str(r).startswith("NOLEASE"), f"lease expired: {r!r}")
check(p.info("replication").get("lease") == "lost", "INFO lease:lost")
stale = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000) - 1000
for i in (1, 2, 3):
    call(p, "REDOUBT.LEASE", i, stale)
check(str(call(p, "SET", "x", "4")).startswith("NOLEASE"), "a renewal sent long ago does not extend the lease")
print("  NOLEASE without a majority, OK with 2 of 3, NOLEASE 400 ms after the last renewal", flush=True)
p.kill9()
print("test_classic_terms: ok", flush=True)
