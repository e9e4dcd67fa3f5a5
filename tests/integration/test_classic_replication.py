"""Classic streaming replication: a primary and 2 replicas on loopback.

* r1 clones the empty primary at start; r2 clones it after writes (a
  non-empty base backup); both stream.
* Write load (redoubt-bench run mode, redis-cli SETs, MULTI/EXEC, DEL, INCR);
  once every replica's apply_lsn reaches the primary's master_repl_offset,
  full dumps (SCAN + MGET) of all three are exactly equal.
* Writes on a replica answer -READONLY; ROLE and INFO replication answer as
  specified.
* kill -9 of a replica under write load; restarted on the same dir it resumes
  from its own files and WAL (no new base backup) and converges again.
* WAIT 2 answers 2 with both replicas up.
* A write on the primary becomes readable on a replica: visibility lag of
  write+poll probes (p50/p99/max printed; no timing assertion), and
  redoubt-bench --mode lag.
"""
import os
import random
import re
import subprocess
import time

from harness import (BENCH, Primary, Replica, Resp, RespError, bench, check, diff_dumps, dump, fail,
                     percentiles, repl_info, seed, wait_converged, wait_streaming)

rng = random.Random(seed())
t_start = time.time()
# Small checkpoints and segments so replicas cross checkpoints (restart points), FPIs and segment switches.
common = ["--checkpoint-wal-mb", "8", "--wal-segment-mb", "4"]
p = Primary(args=common).start()
r1 = Replica(p.port, "r1", args=common).start()
wait_streaming(p, 1)
print(f"primary :{p.port}, r1 :{r1.port} streaming", flush=True)


def load(seconds, clients=8, keyspace=20000, value_size=None):
    return subprocess.Popen([BENCH, "--port", str(p.port), "--clients", str(clients), "--duration", str(seconds),
                             "--warmup", "0", "--keyspace", str(keyspace), "--value-size",
                             str(value_size or rng.choice([20, 100, 1500])), "--seed", str(rng.randrange(1 << 40))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, what):
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        fail(f"{what}: redoubt-bench exited {proc.returncode}:\n{out}")
    tail = [l for l in out.splitlines() if l.startswith("throughput")]
    print(f"  {what}: {tail[0] if tail else out.strip()[-200:]}", flush=True)


def client_writes(tag):
    """SET/INCR/DEL/MULTI through redis-cli and the harness client."""
    for i in range(50):
        p.cli("SET", f"cli:{tag}:{i}", f"value-{tag}-{i}-" + "z" * rng.randrange(0, 300))
    p.cli("INCR", f"cli:{tag}:counter")
    p.cli("INCR", f"cli:{tag}:counter")
    c = Resp(p.port)
    replies = c.pipeline([("MULTI",), ("SET", f"tx:{tag}:a", "1"), ("SET", f"tx:{tag}:b", "2"),
                          ("DEL", f"cli:{tag}:0"), ("EXEC",)])
    check(replies[0] == "OK" and isinstance(replies[-1], list) and len(replies[-1]) == 3,
          f"MULTI/EXEC on the primary: {replies}")
    # DEL some bench keys (key:%08d) and some missing ones
    dels = [f"key:{rng.randrange(20000):08d}" for _ in range(200)]
    n = c.call("DEL", *dels)
    check(isinstance(n, int), f"DEL answers an integer: {n!r}")
    c.close()


def compare_all(replicas, what):
    off = wait_converged(p, replicas, timeout=120)
    dp = dump(p.port)
    for r in replicas:
        dr = dump(r.port)
        d = diff_dumps(dp, dr, f"primary:{p.port}", f"{r.name}:{r.port}")
        if d:
            fail(f"{what}: {r.name} differs from the primary after converging at lsn {off}:\n{d}\n"
                 f"{r.name} log:\n{r.log()}")
    print(f"{what}: converged at lsn {off}; {len(dp)} keys, dumps of primary and "
          f"{', '.join(r.name for r in replicas)} are equal", flush=True)


# 1. Writes with r1 streaming, then r2 clones a non-empty primary while load runs.
ld = load(3)
client_writes("a")
finish(ld, "load 1 (r1 streaming)")
r2 = Replica(p.port, "r2", args=common)
ld = load(4)
time.sleep(0.5)
r2.start()
client_writes("b")
finish(ld, "load 2 (r2 cloning during load)")
wait_streaming(p, 2)
compare_all([r1, r2], "after clone + load")

# 2. Roles, INFO and READONLY.
role = Resp(p.port).call("ROLE")
check(isinstance(role, list) and role[0] == b"master" and isinstance(role[1], int) and len(role[2]) == 2,
      f"ROLE on the primary: {role!r}")
for r in (r1, r2):
    rr = Resp(r.port).call("ROLE")
    check(isinstance(rr, list) and rr[0] == b"slave" and int(rr[2]) == p.port and rr[3] == b"connected",
          f"ROLE on {r.name}: {rr!r}")
    d = repl_info(r)
    check(d.get("role") == "slave" and d.get("redoubt_role") == "replica" and d.get("master_link_status") == "up",
          f"INFO replication on {r.name}: {d}")
    res = Resp(r.port).call("SET", "must-not", "exist")
    check(isinstance(res, RespError) and str(res).startswith("READONLY"), f"SET on {r.name}: {res!r}")
    out = r.cli("DEL", "cli:a:1")
    check("READONLY" in out, f"DEL via redis-cli on {r.name}: {out!r}")
d = repl_info(p)
check(d.get("role") == "master" and d.get("redoubt_role") == "primary" and d.get("connected_slaves") == "2",
      f"INFO replication on the primary: {d}")
names = sorted(s.get("name", "") for s in d["slaves"])
check(names == ["r1", "r2"], f"slave lines name r1 and r2: {d['slaves']}")
for s in d["slaves"]:
    for f in ("sent_lsn", "write_lsn", "flush_lsn", "apply_lsn", "lag_bytes", "replay_lag_ms"):
        check(f in s, f"slave line has {f}: {s}")
check(dump(r1.port).get(b"must-not") is None, "the READONLY write did not happen")

# 3. kill -9 r1 under load; it resumes from its own files without re-cloning.
ld = load(6, clients=16)
time.sleep(rng.uniform(0.5, 2.0))
r1.kill9()
print("killed r1 under load", flush=True)
time.sleep(rng.uniform(0.2, 1.5))
log_at = r1.log_size()
r1.start()
finish(ld, "load 3 (r1 killed and restarted)")
wait_streaming(p, 2)
compare_all([r1, r2], "after kill -9 of r1")
restart_log = r1.log_since(log_at)
cloned = re.findall(r".*(?:base backup|cloning|clone from|BACKUP_BEGIN).*", restart_log, re.I)
resumed = re.findall(r".*(?:resum|recover|restart point|from its own|redo).*", restart_log, re.I)
print("r1 restart log (resume evidence): " + (" | ".join(l.strip() for l in resumed[:3]) or "(none)"), flush=True)
check(not cloned, "r1 restarted after kill -9 must resume from its own files, not re-clone; its log says:\n"
      + "\n".join(cloned[:5]))

# 4. WAIT: both replicas flush the client's last write.
c = Resp(p.port)
check(c.call("SET", "wait:key", "1") == "OK", "SET before WAIT")
n = c.call("WAIT", 2, 5000)
check(n == 2, f"WAIT 2 5000 with both replicas up answers 2, got {n!r}")
n = c.call("WAIT", 3, 300)
check(n == 2, f"WAIT 3 300 with 2 replicas times out with 2, got {n!r}")
c.close()

# 5. Visibility lag: write on the primary, poll the replica until readable.
pc, rc = Resp(p.port), Resp(r2.port)
lags_us = []
for i in range(300):
    v = f"vis-{i}-{rng.randrange(1 << 30)}"
    check(pc.call("SET", "vis:key", v) == "OK", "probe SET on the primary")
    t0 = time.perf_counter()
    deadline = t0 + 10
    while rc.call("GET", "vis:key") != v.encode():
        if time.perf_counter() > deadline:
            fail(f"probe {i} not visible on r2 after 10 s; r2: {repl_info(r2)}")
    lags_us.append((time.perf_counter() - t0) * 1e6)
p50, p99, mx = percentiles(lags_us)
print(f"visibility lag primary ack -> readable on r2 (python client, idle primary, {len(lags_us)} probes): "
      f"p50 {p50:.0f} us  p99 {p99:.0f} us  max {mx:.0f} us", flush=True)
r = bench("--mode", "lag", "--port", p.port, "--replica-port", r1.port, "--duration", 3, "--warmup", 0.5,
          "--clients", 8, "--keyspace", 20000)
print("redoubt-bench --mode lag under 8-client load:\n  " + "\n  ".join(
    l for l in r.stdout.splitlines() if l.startswith(("lag:", "visibility", "set_to", "throughput"))), flush=True)
compare_all([r1, r2], "final")

for s in (r1, r2, p):
    rc_ = s.stop()
    check(rc_ == 0, f"clean stop of port {s.port}: exit {rc_}\n{s.log()}")
print(f"ok ({time.time() - t_start:.0f}s)")
