"""A fenced old primary rejoins as a replica, so repeated failovers keep a synchronous set
(issue 9; monitor/README.md M14, server/README.md CR6).

Three classic nodes, each listing the two others as its synchronous replicas
(`ANY 1 (...)`, as PostgreSQL's synchronous_standby_names per node), and three monitors.
ROUNDS times (default 3, so every node has been replaced at least once): under acknowledged
load on the current primary, SIGSTOP it; the monitors fence it by term on the two others and
promote the most advanced; on SIGCONT the old primary finds itself fenced, the monitors send it
REPLICAOF, and it restarts in place (same PID) as a replica of the new primary. Checked each round:
the new primary acknowledges writes, the old primary comes back as a streaming replica under the
same PID, and at the end every write acknowledged in any round is on the last primary, key by key.
Without the rejoin, the second failover leaves a primary whose listed replicas are both fenced old
primaries: it can never assemble its synchronous set (chaos schedule classic 48 found it).
"""
import os
import signal
import subprocess
import time

from harness import (BUILD, Primary, Resp, _procs, acked_load, check, free_port, seed, tmpdir, try_info,
                     verify_state, wait_for)

seed()
t0 = time.time()
ROUNDS = int(os.environ.get("ROUNDS", "3"))
d = tmpdir("redoubt-rejoin-")
names = ["node1", "node2", "node3"]
ports = {n: free_port() for n in names}


def spec(n):
    return "ANY 1 (%s)" % ",".join(x for x in names if x != n)


def node_args(n, role, upstream=None):
    a = [os.path.join(BUILD, "bin", "redoubt"), "--role", role, "--dir", os.path.join(d, n), "--port",
         str(ports[n]), "--commit", "remote_flush", "--sync-replicas", spec(n), "--name", n,
         "--commit-timeout-ms", "2000"]
    if upstream:
        a += ["--primary", f"127.0.0.1:{ports[upstream]}"]
    return a


procs = {}


def launch(n, role, upstream=None):
    log = open(os.path.join(d, n + ".log"), "ab")
    p = subprocess.Popen(node_args(n, role, upstream), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    _procs.append(p)
    procs[n] = p


def info(n):
    return try_info(ports[n], "replication") or {}


launch("node1", "primary")
wait_for("node1 to answer", lambda: info("node1").get("redoubt_role") == "primary", timeout=30)
for n in ("node2", "node3"):
    launch(n, "replica", "node1")
wait_for("both replicas streaming", lambda: info("node1").get("connected_slaves") == "2", timeout=120)

mports = [free_port() for _ in range(3)]
for i in range(3):
    args = [os.path.join(BUILD, "bin", "redoubt-monitor"), "--cluster", "redoubt", "--mode", "classic",
            "--port", str(mports[i]), "--id", str(i + 1), "--dir", os.path.join(d, f"mon{i + 1}"),
            "--log-file", os.path.join(d, f"mon{i + 1}.log"), "--interval-ms", "100", "--misses", "5"]
    args += ["--node", f"node1=primary@127.0.0.1:{ports['node1']}"]
    for n in ("node2", "node3"):
        args += ["--node", f"{n}=replica@127.0.0.1:{ports[n]}"]
    for j in range(3):
        if j != i:
            args += ["--monitor", f"127.0.0.1:{mports[j]}"]
    m = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _procs.append(m)
wait_for("the monitors to see the primary",
         lambda: all(b"writer_alive:1" in Resp(mp, timeout=2).call("INFO") for mp in mports), timeout=20)


def monitors_writer():
    for mp in mports:
        try:
            r = Resp(mp, timeout=2).call("SENTINEL", "get-master-addr-by-name", "redoubt")
            if isinstance(r, list):
                port = int(r[1])
                return next(n for n in names if ports[n] == port)
        except (OSError, ConnectionError, ValueError, StopIteration):
            pass
    return None


writer = "node1"
states = []
for rnd in range(1, ROUNDS + 1):
    state = os.path.join(d, f"acked{rnd}.txt")
    states.append(state)
    load = acked_load(ports[writer], f"rj{rnd}:", state, clients=4, duration=3, seed_=rnd)
    time.sleep(1.0)
    old, pid = writer, procs[writer].pid
    procs[old].send_signal(signal.SIGSTOP)
    t_stop = time.time()
    new = wait_for(f"round {rnd}: the monitors to fail over from {old}",
                   lambda: next((w for w in [monitors_writer()] if w and w != old), None), timeout=30)
    c = Resp(ports[new], timeout=10)
    wait_for(f"round {rnd}: {new} to acknowledge a write", lambda: c.call("SET", f"rj{rnd}:probe", "1") == "OK",
             timeout=30, interval=0.05)
    t_ack = time.time() - t_stop
    procs[old].send_signal(signal.SIGCONT)
    out, _ = load.communicate(timeout=60)
    acked = " | ".join(l for l in out.splitlines() if l.startswith("acked"))
    wait_for(f"round {rnd}: the old primary {old} to rejoin as a streaming replica of {new}",
             lambda: info(old).get("redoubt_role") == "replica" and info(old).get("master_port") == str(ports[new])
             and info(old).get("master_link_status") == "up", timeout=60)
    check(procs[old].poll() is None and procs[old].pid == pid, f"{old} rejoined in place (same PID {pid})")
    wait_for(f"round {rnd}: {new} to have both replicas streaming",
             lambda: info(new).get("connected_slaves") == "2" and info(new).get("sync_state", "ok").startswith("ok"),
             timeout=60)
    print(f"round {rnd}: {old} paused -> {new} acknowledged {t_ack:.2f}s later; {old} rejoined as its replica "
          f"(pid {pid}); load on {old}: {acked}", flush=True)
    writer = new

for rnd, state in enumerate(states, 1):
    lost, vout = verify_state(ports[writer], state)
    check(lost == 0, f"round {rnd}: acknowledged writes lost on the final primary {writer}:\n{vout}")
print(f"every acknowledged write of {ROUNDS} rounds is on the final primary {writer}", flush=True)
print(f"PASS ({time.time() - t0:.1f}s)", flush=True)
