"""Failover without losing acknowledged writes (classic, synchronous).

Primary with --commit remote_flush --sync-replicas 'ANY 1 (...)' and 2
replicas. Each round: acked-mode load (redoubt-bench --mode acked) on the
primary, kill -9 of the primary at a random moment, promotion of the replica
with the highest receive_lsn (REPLICAOF NO ONE), the other replica re-pointed
to it (REPLICAOF 127.0.0.1 PORT), then redoubt-bench --mode verify against the
new primary for this round's and every earlier round's state: zero lost.
The next round keeps 2 replicas: even rounds restart the dead old primary as a
replica of the new one (same dir: it must re-clone if it diverged), odd rounds
clone a fresh replica into a new dir.

Then one round with --commit async: the acknowledged writes lost are counted
and printed (the documented trade-off of async, not a failure).

Assumption: every node is started with the same --commit/--sync-replicas
(a replica keeps them and applies them once promoted, like a PostgreSQL
standby's synchronous_standby_names); the sync list names every node name
this test may use.
"""
import os
import random
import re
import subprocess
import time

from harness import (BENCH, Primary, Replica, Resp, as_replica, bench, check, fail, lsn, repl_info,
                     seed, tmpdir, wait_converged, wait_for, wait_streaming)

ROUNDS = int(os.environ.get("ROUNDS", "5"))
rng = random.Random(seed())
t_start = time.time()
work = tmpdir()
NAMES = [f"n{i}" for i in range(2 * ROUNDS + 4)]
common = ["--checkpoint-wal-mb", "8", "--wal-segment-mb", "4"]


def sync_args(level):
    if level == "async":
        return ["--commit", "async"]
    return ["--commit", level, "--sync-replicas", "ANY 1 (" + ",".join(NAMES) + ")"]


def wait_writable(node, timeout=60):
    """Until a SET on node answers +OK (a promoted replica accepts writes)."""
    def ok():
        c = Resp(node.port, timeout=10)
        try:
            return c.call("SET", "failover:probe", str(time.time())) == "OK"
        finally:
            c.close()
    wait_for(f"port {node.port} to accept writes after promotion", ok, timeout, interval=0.1)


def promote_best(replicas):
    """Promotes the replica with the highest receive_lsn; returns (new primary, others)."""
    lsns = [(lsn(repl_info(r), "receive_lsn"), i) for i, r in enumerate(replicas)]
    best_lsn, bi = max(lsns)
    best = replicas[bi]
    others = [r for i, r in enumerate(replicas) if i != bi]
    out = best.cli("REPLICAOF", "NO", "ONE")
    check(out.strip() == "OK", f"REPLICAOF NO ONE on {best.name}: {out!r}\n{best.log()}")
    for o in others:
        out = o.cli("REPLICAOF", "127.0.0.1", best.port)
        check(out.strip() == "OK", f"REPLICAOF 127.0.0.1 {best.port} on {o.name}: {out!r}")
        o.primary_port = best.port  # so a restart of o follows the new primary
    print(f"  promoted {best.name} (:{best.port}, receive_lsn {best_lsn}; others "
          f"{[(r.name, l) for (l, i), r in zip(lsns, replicas)]})", flush=True)
    return best, others


def verify(node, state):
    """(lost, output) of redoubt-bench --mode verify; lost = -1 if it could not run."""
    v = bench("--mode", "verify", "--port", node.port, "--state", state, check_rc=False)
    m = re.search(r"(\d+) lost \((\d+) missing, (\d+) older, (\d+) unexpected\), (\d+) torn", v.stdout)
    if v.returncode == 2 or not m:
        return -1, v.stdout + v.stderr
    return int(m.group(1)) + int(m.group(5)), v.stdout


def acked_round(primary, tag, state):
    """Acked load on primary, kill -9 of primary at a random moment; returns the bench output."""
    clients = rng.choice([1, 4, 16])
    multi = ["--multi"] if rng.random() < 0.5 else []
    load = subprocess.Popen([BENCH, "--mode", "acked", "--port", str(primary.port), "--clients", str(clients),
                             "--duration", "30", "--keyspace", "20000", "--value-size",
                             str(rng.choice([20, 100, 2000])), "--key-prefix", tag,
                             "--seed", str(rng.randrange(1 << 30)), "--state", state] + multi,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    delay = rng.uniform(0.5, 3.0)
    time.sleep(delay)
    if load.poll() is not None:
        fail(f"{tag}: load ended before the kill:\n{load.stdout.read()}")
    primary.kill9()
    out, _ = load.communicate(timeout=60)
    check(os.path.exists(state), f"{tag}: bench wrote its state file:\n{out}")
    acked = [l for l in out.splitlines() if l.startswith("acked:")]
    print(f"  {tag}: clients={clients} multi={bool(multi)} primary :{primary.port} killed after {delay:.2f}s; "
          f"{acked[0] if acked else out.strip()[-200:]}", flush=True)
    return out


def new_cluster(level):
    names = iter(NAMES)
    p = Primary(args=common + sync_args(level))
    p.name = next(names)
    p.start()
    reps = []
    for _ in range(2):
        r = Replica(p.port, next(names), args=common + sync_args(level)).start()
        reps.append(r)
    wait_streaming(p, 2)
    return p, reps, names


# ---- synchronous rounds: zero acknowledged writes lost
primary, replicas, names = new_cluster("remote_flush")
states = []
dead = None
for rnd in range(ROUNDS):
    print(f"round {rnd}: primary {primary.name} :{primary.port}, replicas "
          f"{[(r.name, r.port) for r in replicas]}", flush=True)
    state = os.path.join(work, f"sync-{rnd}.txt")
    acked_round(primary, f"s{rnd}", state)
    states.append(state)
    dead = primary
    primary, others = promote_best(replicas)
    wait_writable(primary)
    for i, st in enumerate(states):
        lost, out = verify(primary, st)
        if lost != 0:
            fail(f"round {rnd}: state of round {i}: acknowledged writes lost after failover to {primary.name} "
                 f"(remote_flush, ANY 1):\n{out}\nnew primary log:\n{primary.log()}")
    print(f"  verify on {primary.name}: rounds 0..{rnd} PASS", flush=True)
    # back to 2 replicas
    if rnd % 2 == 0:
        back = as_replica(dead, primary.port, dead.name)
        log_at = back.log_size()
        back.start()
        how = "re-cloned" if re.search(r"clon|base backup", back.log_since(log_at), re.I) else "rejoined"
        print(f"  old primary {dead.name} restarted as a replica of {primary.name} ({how})", flush=True)
    else:
        back = Replica(primary.port, next(names), args=common + sync_args("remote_flush")).start()
        print(f"  fresh replica {back.name} cloned from {primary.name}", flush=True)
    replicas = others + [back]
    wait_streaming(primary, 2)
# the replicas of the last primary hold every acknowledged write too (hot-standby reads)
wait_converged(primary, replicas)
for r in replicas:
    for i, st in enumerate(states):
        lost, out = verify(r, st)
        check(lost == 0, f"replica {r.name}: state of round {i} after converging:\n{out}")
print(f"synchronous: {ROUNDS} rounds, 0 acknowledged writes lost", flush=True)
for n in replicas + [primary]:
    n.stop()

# ---- async: count what is lost (the documented trade-off)
primary, replicas, names = new_cluster("async")
state = os.path.join(work, "async.txt")
out = acked_round(primary, "a0", state)
primary, others = promote_best(replicas)
wait_writable(primary)
lost, vout = verify(primary, state)
check(lost >= 0, f"async: verify could not run:\n{vout}")
m = re.search(r"acked: (\d+) acknowledged writes", out)
print(f"async: {lost} of {m.group(1) if m else '?'} acknowledged writes lost after kill -9 of the primary "
      f"and promotion (documented trade-off of --commit async, not a failure)", flush=True)
if lost:
    print("  " + "\n  ".join(l for l in vout.splitlines() if l.startswith(("  LOST", "verify:")))[:2000], flush=True)
for n in replicas:
    if n.alive():
        n.stop()
print(f"ok ({time.time() - t_start:.0f}s)")
