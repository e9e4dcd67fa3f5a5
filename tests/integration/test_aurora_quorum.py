"""Aurora mode: the 4-of-6 write quorum with real processes.

6 storage nodes + writer + 1 reader on loopback.
(a) Under acked load (redoubt-bench --mode acked), kill -9 two storage nodes:
    writes keep being acknowledged (the acks of the 4 live nodes and the
    writer's vdl keep growing; run-mode throughput with 6 and with 4 nodes is
    printed); restart them on their own dirs: their INFO scl reaches the
    writer's vdl within a bounded wait (recovery from their files + gap fill).
(b) Under a second acked load, kill -9 a third node (3 down): writes stall —
    a redis-cli SET gets no reply within a client-side timeout, vdl does not
    move, the writer log grows by a bounded number of lines (no error storm);
    restart one of the three: the stalled SET completes (OK, or TIMEOUT commit
    outcome unknown if that took over --commit-timeout-ms) and is readable,
    and writes resume; during the stall the writer's INFO says quorum_state:
    blocked with commits_waiting. Every acknowledged write of both loads is then verified
    (redoubt-bench --mode verify) on the writer, and on the reader once its
    read point has reached the writer's vdl.
"""
import json
import os
import random
import subprocess
import time

from harness import (AuroraCluster, _procs, acked_load, bench, check, fail, lsn, seed, tmpdir, verify_state,
                     wait_for)

rng = random.Random(seed())
T0 = time.time()
work = tmpdir()
STALL_S = 3.0          # how long the 3-down stall is observed
MAX_STALL_LOG_LINES = 40  # writer log lines allowed while 3 nodes are down

cl = AuroraCluster(nreaders=1).start()
w, rd = cl.writer, cl.readers[0]
print(f"6 storage nodes {cl.ports}, writer :{w.port}, reader :{rd.port} ({time.time() - T0:.1f}s)", flush=True)


def run_tput(label, secs=2):
    r = bench("--port", w.port, "--clients", 8, "--duration", secs, "--warmup", 0, "--keyspace", 50000,
              "--value-size", 100, "--json", timeout=60)
    j = json.loads(r.stdout)
    check(j["errors"] == 0 and j["connections_lost"] == 0 and j["ops"] > 0,
          f"run mode {label}: {j['ops']} ops, {j['errors']} errors, {j['connections_lost']} connections lost")
    print(f"  throughput {label}: {j['ops_per_sec']:.0f} ops/s, p50 {j['p50_us']} µs, p99 {j['p99_us']} µs", flush=True)
    return j


def vdl():
    return lsn(w.repl(), "vdl")


def live_acks(dead):
    st = w.repl()["storage"]
    return {i: st[i]["acks"] for i in range(6) if i not in dead}


def finish_load(p, tag):
    out, _ = p.communicate(timeout=90)
    acked = [l for l in out.splitlines() if l.startswith("acked:")]
    check(acked, f"{tag}: acked load printed no summary:\n{out}")
    print(f"  {tag}: {acked[0]}", flush=True)
    return out


# ---------------------------------------------------------------- (a) 2 down
run_tput("6 of 6 nodes up")
state_a = os.path.join(work, "a.txt")
load = acked_load(w.port, "qa:", state_a, clients=4, duration=8, seed_=rng.randrange(1 << 30))
time.sleep(1.0)
dead = sorted(rng.sample(range(6), 2))
for i in dead:
    cl.nodes[i].kill9()
t_kill = time.time()
print(f"(a) killed storage nodes {dead} (kill -9) under acked load", flush=True)
time.sleep(0.5)
acks0, vdl0 = live_acks(dead), vdl()
time.sleep(1.0)
acks1, vdl1 = live_acks(dead), vdl()
check(vdl1 > vdl0, f"(a) with 2 nodes down the vdl must keep advancing: {vdl0} -> {vdl1}\n{w.log()}")
check(all(acks1[i] > acks0[i] for i in acks1), f"(a) each live node keeps acknowledging: {acks0} -> {acks1}")
check(load.poll() is None, "(a) acked load still running")
st = w.repl()["storage"]
check(all(st[i]["state"] == "down" for i in dead), f"(a) writer INFO shows the killed nodes down: {st}")
print(f"  vdl {vdl0} -> {vdl1} in 1 s with 4 nodes; live acks {acks0} -> {acks1}", flush=True)
run_tput("4 of 6 nodes up (2 killed)")
for i in dead:
    cl.nodes[i].start()
t_back = time.time()
target = cl.wait_nodes_caught_up([cl.nodes[i] for i in dead], timeout=30)
print(f"  restarted nodes {dead} caught up to vdl {target} in {time.time() - t_back:.2f}s "
      f"(scl {[cl.nodes[i].scl() for i in dead]})", flush=True)
finish_load(load, "(a) acked load")
lost, out = verify_state(w.port, state_a)
check(lost == 0, f"(a) acknowledged writes lost with 2 nodes down:\n{out}")
# The writer re-links the restarted nodes: every node acks again.
wait_for("writer shows all 6 nodes up", lambda: all(s["state"] == "up" for s in w.repl()["storage"]), 15)
acks2 = w.repl()["storage"]
n_after = [0]


def restarted_ack():
    n_after[0] += 1
    w.cli("SET", "qa:after", "1")  # the reply comes at 4 acks; the others follow
    st = w.repl()["storage"]
    return all(st[i]["acks"] > acks2[i]["acks"] for i in dead)


wait_for(f"(a) restarted nodes {dead} acknowledge new writes", restarted_ack, 10, interval=0.1)
print(f"ok (a): 2 of 6 down: writes acknowledged; back: caught up ({time.time() - T0:.1f}s)", flush=True)

# ---------------------------------------------------------------- (b) 3 down
state_b = os.path.join(work, "b.txt")
load = acked_load(w.port, "qb:", state_b, clients=4, duration=4 + STALL_S + 4, seed_=rng.randrange(1 << 30),
                  multi=True)
time.sleep(1.0)
dead = sorted(rng.sample(range(6), 3))
log_at = w.log_size()
for i in dead:
    cl.nodes[i].kill9()
print(f"(b) killed storage nodes {dead} (kill -9): 3 of 6 down", flush=True)
time.sleep(0.5)  # frames in flight before the kill get their last acks
# While the quorum is lost the writer holds every reply behind the newest
# commit (reads too), so the stall is observed from the reader's INFO
# (writer_vdl from the feed) and from the live storage nodes.
vdl_stall = lsn(rd.repl(), "writer_vdl")
cli = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(w.port), "SET", "qb:stalled", "y"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
_procs.append(cli)
time.sleep(STALL_S)
if cli.poll() is not None:
    fail(f"(b) SET with 3 of 6 nodes down must not be answered; redis-cli exited {cli.returncode}: "
         f"{cli.stdout.read()!r}")
vdl_after = lsn(rd.repl(), "writer_vdl")
check(vdl_after == vdl_stall, f"(b) vdl moved with 3 of 6 nodes down: {vdl_stall} -> {vdl_after}")
check(w.alive() and rd.alive(), "(b) writer and reader stay up during the stall")
stall_log = w.log_since(log_at)
nlines = len(stall_log.splitlines())
check(nlines <= MAX_STALL_LOG_LINES, f"(b) error storm: {nlines} writer log lines in {STALL_S + 0.5:.1f}s of "
      f"stall (limit {MAX_STALL_LOG_LINES}):\n{stall_log[-3000:]}")
# the reader keeps serving reads at its read point during the stall
v = rd.cli("GET", "qa:after")
check(v == "1", f"(b) reader serves reads during the stall: GET qa:after = {v!r}")
live_scl = [cl.nodes[i].scl() for i in range(6) if i not in dead]
print(f"  stalled: no reply to SET for {STALL_S}s, writer_vdl (reader INFO) stays {vdl_stall}, live node scl "
      f"{live_scl}, {nlines} writer log lines", flush=True)
# Observability during the stall: INFO on the writer should answer (it reads no data).
try:
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(w.port), "INFO", "replication"],
                       capture_output=True, text=True, timeout=2)
    info_ok = "redoubt_role:writer" in r.stdout
except subprocess.TimeoutExpired:
    info_ok = False
if info_ok:
    check("quorum_state:blocked" in r.stdout and "storage_up:3" in r.stdout,
          f"(b) writer INFO says why writes wait (S20):\n{r.stdout}")
    waiting = [l for l in r.stdout.splitlines() if l.startswith(("commits_waiting", "oldest_commit_wait_ms"))]
    print(f"  writer INFO answered during the stall: quorum_state:blocked, storage_up:3, {', '.join(waiting)}",
          flush=True)
else:
    fail("(b) writer INFO gets no reply while the quorum is lost")
back = rng.choice(dead)
t_back = time.time()
cl.nodes[back].start()
try:
    out, _ = cli.communicate(timeout=30)
except subprocess.TimeoutExpired:
    cli.kill()
    fail(f"(b) the stalled SET did not complete within 30s of restarting node {back}:\n{w.log()}")
# S20: the SET is answered OK if the quorum came back within --commit-timeout-ms (5 s),
# else TIMEOUT (outcome unknown) — never an acknowledgement before the quorum.
check(out.strip() == "OK" or out.strip().startswith("TIMEOUT commit outcome unknown"),
      f"(b) stalled SET answered {out!r}")
t_resume = time.time() - t_back
v0 = vdl()
time.sleep(0.5)
check(vdl() > v0 or load.poll() is not None, "(b) writes resume after one node is back")
print(f"  restarted node {back}: the stalled SET answered {out.strip()[:40]!r} {t_resume:.2f}s later; "
      f"vdl {vdl_stall} -> {vdl()}",
      flush=True)
finish_load(load, "(b) acked load (MULTI pairs)")
check(w.cli("GET", "qb:stalled") == "y", "(b) the stalled SET is readable (committed once the quorum returned)")
for tag, state in (("a", state_a), ("b", state_b)):
    lost, out = verify_state(w.port, state)
    check(lost == 0, f"({tag}) acknowledged writes lost or torn on the writer:\n{out}\n{w.log()}")
cl.wait_reader_caught_up(rd, timeout=30)
for tag, state in (("a", state_a), ("b", state_b)):
    lost, out = verify_state(rd.port, state)
    check(lost == 0, f"({tag}) acknowledged writes missing or torn on the reader:\n{out}\n{rd.log()}")
check(rd.cli("GET", "qb:stalled") == "y", "(b) the stalled SET is readable on the reader")
print(f"ok (b): 3 of 6 down stalls without an error storm; one back: writes resume; nothing acked lost "
      f"(writer and reader) ({time.time() - T0:.1f}s)", flush=True)
# bring the other two back, then the whole cluster converges
for i in dead:
    if i != back:
        cl.nodes[i].start()
cl.wait_nodes_caught_up(cl.nodes, timeout=30)
for n in [rd, w] + cl.nodes:
    n.stop()
print(f"aurora quorum tests passed in {time.time() - T0:.1f}s", flush=True)
