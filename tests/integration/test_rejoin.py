"""A fenced old primary (writer) rejoins as a replica (reader), so repeated failovers keep a
synchronous set (issue 9; monitor/README.md M14, server/README.md CR6). Both modes in turn
(MODES=classic,aurora).

Classic: three nodes, each listing the two others as its synchronous replicas
(`ANY 1 (...)`, as PostgreSQL's synchronous_standby_names per node), and three monitors.
ROUNDS times (default 3, so every node has been replaced at least once): under acknowledged
load on the current primary, SIGSTOP it; the monitors fence it by term on the two others and
promote the most advanced; on SIGCONT the old primary finds itself fenced, the monitors send it
REPLICAOF, and it restarts in place (same PID) as a replica of the new primary. Checked each round:
the new primary acknowledges writes, the old primary comes back as a streaming replica under the
same PID, and at the end every write acknowledged in any round is on the last primary, key by key.
Without the rejoin, the second failover leaves a primary whose listed replicas are both fenced old
primaries: it can never assemble its synchronous set (chaos schedule classic 48 found it).
Aurora: six storage nodes, a writer and two readers; the same rounds; the old writer comes back
as a reader of the new one (same PID) and the other reader is re-pointed at run time.
"""
import os
import signal
import socket
import subprocess
import threading
import time

from harness import (BUILD, StorageNode, Resp, _procs, acked_load, check, free_port, seed, tmpdir, try_info,
                     verify_state, wait_for)

seed()
ROUNDS = int(os.environ.get("ROUNDS", "3"))
NAMES = ["node1", "node2", "node3"]


def run(mode):
    t0 = time.time()
    d = tmpdir(f"redoubt-rejoin-{mode}-")
    ports = {n: free_port() for n in NAMES}
    procs = {}
    storage = []
    if mode == "aurora":
        sports = [free_port() for _ in range(6)]
        for i in range(6):
            sn = StorageNode(i, port=sports[i])
            sn.peers = [p for p in sports if p != sports[i]]
            storage.append(sn.start())
    wrole, frole = ("primary", "replica") if mode == "classic" else ("writer", "reader")

    def node_args(n, role, upstream=None):
        a = [os.path.join(BUILD, "bin", "redoubt"), "--role", role, "--port", str(ports[n]), "--name", n,
             "--commit-timeout-ms", "2000"]
        if mode == "classic":
            spec = "ANY 1 (%s)" % ",".join(x for x in NAMES if x != n)
            a += ["--dir", os.path.join(d, n), "--commit", "remote_flush", "--sync-replicas", spec]
            if upstream:
                a += ["--primary", f"127.0.0.1:{ports[upstream]}"]
        else:
            a += ["--storage", ",".join(f"127.0.0.1:{p}" for p in sports)]
            if upstream:
                a += ["--writer", f"127.0.0.1:{ports[upstream]}"]
        return a

    def launch(n, role, upstream=None):
        log = open(os.path.join(d, n + ".log"), "ab")
        p = subprocess.Popen(node_args(n, role, upstream), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _procs.append(p)
        procs[n] = p

    def info(n):
        return try_info(ports[n], "replication") or {}

    def followers(n):
        i = info(n)
        return int(i.get("connected_slaves", "0")) if mode == "classic" else \
            sum(1 for k in i if k.startswith("reader") and k[6:].isdigit())

    launch("node1", wrole)
    wait_for("node1 to answer", lambda: info("node1").get("redoubt_role") == wrole, timeout=60)
    for n in ("node2", "node3"):
        launch(n, frole, "node1")
    wait_for(f"both {frole}s following node1", lambda: followers("node1") == 2, timeout=120)

    mports = [free_port() for _ in range(3)]
    mons = []
    for i in range(3):
        args = [os.path.join(BUILD, "bin", "redoubt-monitor"), "--cluster", "redoubt", "--mode", mode,
                "--port", str(mports[i]), "--id", str(i + 1), "--dir", os.path.join(d, f"mon{i + 1}"),
                "--log-file", os.path.join(d, f"mon{i + 1}.log"), "--interval-ms", "100", "--misses", "5",
                "--node", f"node1={wrole}@127.0.0.1:{ports['node1']}"]
        for n in ("node2", "node3"):
            args += ["--node", f"{n}={frole}@127.0.0.1:{ports[n]}"]
        for k, sn in enumerate(storage):
            args += ["--node", f"storage{k + 1}=storage@127.0.0.1:{sn.port}"]
        for j in range(3):
            if j != i:
                args += ["--monitor", f"127.0.0.1:{mports[j]}"]
        m = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _procs.append(m)
        mons.append(m)
    wait_for("the monitors to see the writer",
             lambda: all(b"writer_alive:1" in Resp(mp, timeout=2).call("INFO") for mp in mports), timeout=20)

    def monitors_writer():
        for mp in mports:
            try:
                r = Resp(mp, timeout=2).call("SENTINEL", "get-master-addr-by-name", "redoubt")
                if isinstance(r, list):
                    port = int(r[1])
                    return next(n for n in NAMES if ports[n] == port)
            except (OSError, ConnectionError, ValueError, StopIteration):
                pass
        return None

    def follows(n, w):
        i = info(n)
        up = i.get("master_link_status") == "up" if mode == "classic" else True
        return i.get("redoubt_role") == frole and i.get("master_port") == str(ports[w]) and up

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
        def acked_by_new():
            # the writer the monitors name (it may change while they settle) acknowledges a write
            w = monitors_writer()
            if not w or w == old:
                return None
            try:
                return w if Resp(ports[w], timeout=2).call("SET", f"rj{rnd}:probe", "1") == "OK" else None
            except Exception:  # noqa: BLE001 -- NOLEASE/TIMEOUT for a few ms after a promotion
                return None
        new = wait_for(f"{mode} round {rnd}: a new writer named by the monitors to acknowledge a write",
                       acked_by_new, timeout=30, interval=0.05)
        t_ack = time.time() - t_stop
        # CR7: while the old writer restarts in place its port stays bound (the listener crosses
        # the exec): a client that connects meanwhile waits in the backlog and is never refused.
        probe = {"n": 0, "refused": 0, "stop": False}
        def prober():
            while not probe["stop"]:
                try:
                    socket.create_connection(("127.0.0.1", ports[old]), timeout=2).close()
                    probe["n"] += 1
                except ConnectionRefusedError:
                    probe["refused"] += 1
                except OSError:
                    pass
                time.sleep(0.002)
        th = threading.Thread(target=prober, daemon=True)
        th.start()
        procs[old].send_signal(signal.SIGCONT)
        out, _ = load.communicate(timeout=60)
        acked = " | ".join(l for l in out.splitlines() if l.startswith("acked"))
        wait_for(f"{mode} round {rnd}: the old {wrole} {old} to rejoin as a {frole} of {new}",
                 lambda: follows(old, new), timeout=60)
        probe["stop"] = True
        th.join(timeout=10)
        check(procs[old].poll() is None and procs[old].pid == pid, f"{old} rejoined in place (same PID {pid})")
        check(probe["refused"] == 0 and probe["n"] > 0,
              f"{old}'s port refused {probe['refused']} of {probe['n'] + probe['refused']} connects while it rejoined")
        third = next(n for n in NAMES if n not in (old, new))
        wait_for(f"{mode} round {rnd}: {third} to follow {new}", lambda: follows(third, new), timeout=60)
        wait_for(f"{mode} round {rnd}: {new} to have both {frole}s",
                 lambda: followers(new) == 2 and info(new).get("sync_state", "ok").startswith("ok"), timeout=60)
        print(f"{mode} round {rnd}: {old} paused -> {new} acknowledged {t_ack:.2f}s later; {old} rejoined as its "
              f"{frole} (pid {pid}; {probe['n']} connects during the rejoin, 0 refused); load on {old}: {acked}",
              flush=True)
        writer = new

    for rnd, state in enumerate(states, 1):
        lost, vout = verify_state(ports[writer], state)
        check(lost == 0, f"{mode} round {rnd}: acknowledged writes lost on the final {wrole} {writer}:\n{vout}")
    print(f"{mode}: every acknowledged write of {ROUNDS} rounds is on the final {wrole} {writer} "
          f"({time.time() - t0:.1f}s)", flush=True)
    for p in mons + [procs[n] for n in NAMES]:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
    for sn in storage:
        sn.kill9()


t_all = time.time()
for m in os.environ.get("MODES", "classic,aurora").split(","):
    run(m)
print(f"PASS ({time.time() - t_all:.1f}s)", flush=True)
