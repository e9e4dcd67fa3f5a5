"""Failover to the side that can commit (issue 9 item 4, monitor/README.md M11).

A classic primary (--commit remote_flush, ANY 1 (replica1,replica2)) known to everyone by one
address, a loopback proxy in front of it. Under acked load the proxy stops passing the replication
streams (the connections that began with REDOUBT.REPLICATE: a partition between the primary and
its replicas) while the monitors' connections through the same address keep working, as they would
over another network path: the primary is alive and answers the monitors, but cannot assemble its
synchronous set (INFO sync_state:waiting), while both replicas still reach the monitors. The
monitors fail over to the replicas (term raised on n-k+1 = 2 of them, the most advanced promoted,
the old primary fenced by the term), so writes are acknowledged again within a few seconds instead
of stalling for the whole partition. Every write the old primary acknowledged is on the new one.
"""
import os
import signal
import subprocess
import time

from harness import (BUILD, Primary, Replica, Resp, RespError, _procs, acked_load, check, free_port, seed,
                     tmpdir, try_info, verify_state, wait_for, wait_streaming)
from test_monitor_partition import BlackholeProxy


class ReplicationCut(BlackholeProxy):
    """Cuts only the connections whose first bytes are a REDOUBT.REPLICATE handshake; new
    connections are always accepted and forwarded (the pump decides what to hold)."""

    def __init__(self, target):
        super().__init__(target)
        self.cut_repl = False

    def cut(self):
        self.cut_repl = True

    def _pump(self, a, b):
        import select
        repl = None
        while not self.stop_flag:
            try:
                r, _, _ = select.select([a, b], [], [], 0.1)
            except (OSError, ValueError):
                return
            if self.cut_repl and repl:
                continue  # hold the bytes: the replicas see silence, nothing is closed
            for sk in r:
                try:
                    data = sk.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    a.close(), b.close()
                    return
                if repl is None and sk is a:
                    repl = b"REDOUBT.REPLICATE" in data.upper()
                (b if sk is a else a).sendall(data)

seed()
t0 = time.time()
d = tmpdir("redoubt-lostsync-")
SYNC = ["--commit", "remote_flush", "--sync-replicas", "ANY 1 (replica1,replica2)"]
p = Primary(args=SYNC).start()
proxy = ReplicationCut(p.port)  # the primary's address for replicas and monitors alike
reps = [Replica(proxy.port, f"replica{i}", args=SYNC).start() for i in (1, 2)]
wait_streaming(p, 2)

mports = [free_port() for _ in range(3)]
mons = []
for i in range(3):
    args = [os.path.join(BUILD, "bin", "redoubt-monitor"), "--cluster", "redoubt", "--mode", "classic",
            "--port", str(mports[i]), "--id", str(i + 1), "--dir", os.path.join(d, f"mon{i + 1}"),
            "--log-file", os.path.join(d, f"mon{i + 1}.log"),
            "--node", f"primary=primary@127.0.0.1:{proxy.port}",
            "--node", f"replica1=replica@127.0.0.1:{reps[0].port}",
            "--node", f"replica2=replica@127.0.0.1:{reps[1].port}"]
    for j in range(3):
        if j != i:
            args += ["--monitor", f"127.0.0.1:{mports[j]}"]
    m = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _procs.append(m)
    mons.append(m)
wait_for("the monitors to see the primary",
         lambda: all(b"writer_alive:1" in Resp(mp, timeout=2).call("INFO") for mp in mports), timeout=20)


def writer_port():
    for mp in mports:
        try:
            r = Resp(mp, timeout=2).call("SENTINEL", "get-master-addr-by-name", "redoubt")
            if isinstance(r, list):
                return int(r[1])
        except (OSError, ConnectionError, ValueError):
            pass
    return None


state = os.path.join(d, "acked.txt")
load = acked_load(p.port, "ls", state, clients=4, duration=8)
time.sleep(1.5)
t_cut = time.time()
proxy.cut()
print(f"primary <-> replicas (replication streams) cut at {t_cut - t0:.1f}s (monitors still reach every node)", flush=True)
def sync_lost():
    d = try_info(p.port) or {}  # None while it restarts as a replica (M14, CR6)
    return "waiting" in d.get("sync_state", "") or d.get("fenced") == "1" or d.get("redoubt_role") == "replica"


wait_for("the primary to report its sync set lost (or to be fenced already)", sync_lost, timeout=20)
new = wait_for("the monitors to fail over to a replica",
               lambda: next((w for w in [writer_port()] if w and w not in (p.port, proxy.port)), None), timeout=30)
t_new = time.time() - t_cut
c = Resp(new, timeout=10)
wait_for("the new primary to acknowledge a write",
         lambda: c.call("SET", "lostsync:probe", "1") == "OK", timeout=30, interval=0.05)
t_write = time.time() - t_cut
print(f"new primary :{new} named {t_new:.2f}s after the cut; first acknowledged write {t_write:.2f}s after it",
      flush=True)
out, _ = load.communicate(timeout=60)
print("load on the old primary: " + " | ".join(l for l in out.splitlines() if l.startswith("acked")), flush=True)
lost, vout = verify_state(new, state)
check(lost == 0, f"acknowledged writes lost after failing over from a primary without its sync set:\n{vout}")
old = wait_for("the old primary to answer INFO", lambda: try_info(p.port), timeout=30)
check(old.get("fenced") == "1" or old.get("term", "0") != "0",
      f"the old primary knows it was replaced (term/fenced): {old.get('term')}/{old.get('fenced')}")


def old_answers():
    try:
        return Resp(p.port, timeout=10).call("SET", "lostsync:old", "x")
    except (OSError, ConnectionError, EOFError):
        return None  # restarting as a replica (M14, CR6)


r = wait_for("the old primary to answer a write", old_answers, timeout=30)
check(isinstance(r, RespError), f"the old primary does not acknowledge a write after the failover: {r!r}")
print(f"old primary: term {old.get('term')}, fenced {old.get('fenced')}, role {old.get('redoubt_role')}, "
      f"a new write answers: {str(r)[:60]}", flush=True)
for m in mons:
    if m.poll() is None:
        m.send_signal(signal.SIGKILL)
        m.wait(timeout=10)
proxy.close()
print(f"PASS ({time.time() - t0:.1f}s)", flush=True)
