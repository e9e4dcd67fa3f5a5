"""Monitors cut off from a live writer: no acknowledged write is lost (issue 9, "done when").

scripts/cluster starts the cluster without monitors (classic: primary + 2 replicas, --commit
remote_flush, ANY 1; aurora: 6 storage nodes, writer, reader); the test starts three
redoubt-monitors itself whose only way to the writer is a loopback TCP proxy (replicas, readers and
storage nodes reach the writer directly). Two loads run: clients writing straight to the old
writer (redoubt-bench --mode acked), and clients that find the writer through the monitors'
Sentinel protocol (--mode failover: they reconnect to whatever writer the monitors name). Under
that load the proxy turns into a black hole (connections stay open, nothing passes: a partition,
not a crash). The monitors declare the writer down, agree, and fail over: classic raises the term
on both replicas (n-k+1 = 2 of 2) -- from then on the old primary cannot assemble its sync set --
and promotes the most advanced; aurora records a new volume epoch on the storage quorum and
promotes the reader. The old writer keeps serving its direct clients but acknowledges nothing
more (TIMEOUT outcome unknown / fenced); every write either load saw acknowledged is on the new
writer. MODES="classic aurora" (default both) and ROUNDS=N (default 1; `make chaos` runs 10).
"""
import os
import select
import signal
import socket
import subprocess
import threading
import time

from harness import (BENCH, BUILD, Resp, _procs, acked_load, check, free_port, tmpdir, verify_state, wait_for)
from test_cluster_classic import Cluster, free_range

t_start = time.time()


class BlackholeProxy:
    """Forwards 127.0.0.1:port -> 127.0.0.1:target until cut(); then passes nothing, closes nothing."""

    def __init__(self, target):
        self.target = target
        self.cut_flag = False
        self.stop_flag = False
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop_flag:
            try:
                r, _, _ = select.select([self.ls], [], [], 0.1)
                if not r:
                    continue
                c, _ = self.ls.accept()
            except (OSError, ValueError):
                return  # closed
            self.socks.append(c)
            if self.cut_flag:
                continue  # accepted, never forwarded
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                c.close()
                continue
            self.socks.append(u)
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        while not self.stop_flag:
            try:
                r, _, _ = select.select([a, b], [], [], 0.1)
            except (OSError, ValueError):
                return
            if self.cut_flag:
                continue  # hold the bytes: a partition, the peers see silence
            for s in r:
                try:
                    d = s.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    a.close(), b.close()
                    return
                (b if s is a else a).sendall(d)

    def cut(self):
        self.cut_flag = True

    def close(self):
        self.stop_flag = True
        for s in self.socks + [self.ls]:
            try:
                s.close()
            except OSError:
                pass


def start_monitors(d, ep, proxy_port, n=3, mode="classic"):
    ports = [free_port() for _ in range(n)]
    procs = []
    wname = "primary" if mode == "classic" else "writer"
    for i in range(n):
        args = [os.path.join(BUILD, "bin", "redoubt-monitor"), "--cluster", "redoubt", "--mode", mode,
                "--port", str(ports[i]), "--id", str(i + 1), "--dir", os.path.join(d, f"pmon{i + 1}"),
                "--log-file", os.path.join(d, f"pmon{i + 1}.log"),
                "--node", f"{wname}={wname}@127.0.0.1:{proxy_port}"]
        secret = os.path.join(d, "cluster.secret")  # scripts/cluster made it (peer authentication)
        if os.path.exists(secret):
            args += ["--cluster-secret-file", secret]
        for name, (role, port, _pid) in sorted(ep.items()):
            if name != wname and not name.startswith("monitor"):
                args += ["--node", f"{name}={role}@127.0.0.1:{port}"]
        for j in range(n):
            if j != i:
                args += ["--monitor", f"127.0.0.1:{ports[j]}"]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _procs.append(p)  # the harness kills it at exit (by this Popen, never by name)
        procs.append(p)
    return ports, procs


def writer_of(mport):
    try:
        r = Resp(mport, timeout=2).call("SENTINEL", "get-master-addr-by-name", "redoubt")
        return int(r[1])
    except (OSError, ConnectionError, TypeError, IndexError):
        return None


def one_round(mode, k):
    d = tmpdir("redoubt-part-")
    cl = Cluster(d)
    proxy = None
    procs = []
    wname = "primary" if mode == "classic" else "writer"
    try:
        cl.run("start", mode, "--dir", d, "--base-port", free_range(), "--monitors", 0, timeout=180)
        ep = cl.endpoints()
        pport = ep[wname][1]
        proxy = BlackholeProxy(pport)
        mports, procs = start_monitors(d, ep, proxy.port, mode=mode)
        wait_for("the monitors to see the writer",
                 lambda: all(b"writer_alive:1" in Resp(p, timeout=2).call("INFO") for p in mports), timeout=20)
        state = os.path.join(d, "acked.txt")
        load = acked_load(pport, f"p{k}", state, clients=4, duration=6)
        fstate = os.path.join(d, "failover.txt")
        sentinel = subprocess.Popen([BENCH, "--mode", "failover", "--sentinel", f"127.0.0.1:{mports[k % 3]}",
                                     "--cluster", "redoubt", "--clients", "4", "--duration", "8", "--keyspace", "4000",
                                     "--key-prefix", f"s{k}", "--state", fstate, "--stall-ms", "500"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _procs.append(sentinel)
        time.sleep(1.5)
        t_cut = time.time()
        proxy.cut()
        new_port = wait_for("a new writer named by the monitors",
                            lambda: next((w for w in map(writer_of, mports) if w and w != proxy.port), None),
                            timeout=20)
        print(f"{mode} round {k}: partition -> new writer :{new_port} named after {time.time() - t_cut:.2f}s",
              flush=True)
        out, _ = load.communicate(timeout=60)
        acked = [l for l in out.splitlines() if l.startswith("acked")]
        print(f"{mode} round {k}: direct load on the old writer: {acked[0] if acked else out.strip()[-300:]}",
              flush=True)
        sout, _ = sentinel.communicate(timeout=90)
        print(f"{mode} round {k}: sentinel load: " + " | ".join(
            l for l in sout.splitlines() if l.startswith(("acked", "failover:"))), flush=True)
        for what, st in (("direct", state), ("sentinel", fstate)):
            lost, vout = verify_state(new_port, st)
            check(lost == 0, f"{mode} round {k}: {what} clients' acknowledged writes lost after a "
                             f"monitor<->writer partition:\n{vout}")
            print(f"{mode} round {k}: verify {what} on the new writer: " + vout.strip().splitlines()[-1], flush=True)
        old = Resp(pport, timeout=3).call("INFO", "replication").decode()
        fenced = [l for l in old.splitlines() if l.startswith(("term:", "epoch:", "fenced:", "sync_state:",
                                                              "quorum_state:"))]
        print(f"{mode} round {k}: old writer after the partition: {', '.join(fenced)}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        if proxy:
            proxy.close()
        cl.kill_leftovers()


if __name__ == "__main__":
    for mode in os.environ.get("MODES", "classic aurora").split():
        for k in range(int(os.environ.get("ROUNDS", "1"))):
            one_round(mode, k + 1)
    print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)
