"""Monitors cut off from a live classic primary: no acknowledged write is lost.

scripts/cluster starts primary + 2 replicas (--commit remote_flush, ANY 1) without monitors; the
test starts three redoubt-monitors itself whose only way to the primary is a loopback TCP proxy
(the replicas stream from the primary directly, clients write to it directly). Under acked load
the proxy turns into a black hole (connections stay open, nothing passes: a partition, not a
crash). The monitors declare the primary down by missed heartbeats, agree, one of them raises the
term on both replicas (n-k+1 = 2 of 2) -- from then on the old primary cannot assemble its sync
set and acknowledges nothing more -- and promotes the most advanced. Clients still writing to the
old primary get no acknowledgement (TIMEOUT, outcome unknown); every acknowledged write is on the
new primary. ROUNDS=N repeats it (default 1).
"""
import os
import select
import signal
import socket
import subprocess
import threading
import time

from harness import BUILD, Resp, _procs, acked_load, check, free_port, tmpdir, verify_state, wait_for
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


def start_monitors(d, ep, proxy_port, n=3):
    ports = [free_port() for _ in range(n)]
    procs = []
    for i in range(n):
        args = [os.path.join(BUILD, "bin", "redoubt-monitor"), "--cluster", "redoubt", "--mode", "classic",
                "--port", str(ports[i]), "--id", str(i + 1), "--dir", os.path.join(d, f"pmon{i + 1}"),
                "--log-file", os.path.join(d, f"pmon{i + 1}.log"),
                "--node", f"primary=primary@127.0.0.1:{proxy_port}",
                "--node", f"replica1=replica@127.0.0.1:{ep['replica1'][1]}",
                "--node", f"replica2=replica@127.0.0.1:{ep['replica2'][1]}"]
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


def one_round(k):
    d = tmpdir("redoubt-part-")
    cl = Cluster(d)
    proxy = None
    procs = []
    try:
        cl.run("start", "classic", "--dir", d, "--base-port", free_range(), "--monitors", 0, timeout=180)
        ep = cl.endpoints()
        pport = ep["primary"][1]
        proxy = BlackholeProxy(pport)
        mports, procs = start_monitors(d, ep, proxy.port)
        wait_for("the monitors to see the primary",
                 lambda: all(b"writer_alive:1" in Resp(p, timeout=2).call("INFO") for p in mports), timeout=20)
        state = os.path.join(d, "acked.txt")
        load = acked_load(pport, f"p{k}", state, clients=4, duration=6)
        time.sleep(1.5)
        t_cut = time.time()
        proxy.cut()
        new_port = wait_for("a new writer named by the monitors",
                            lambda: next((w for w in map(writer_of, mports) if w and w != proxy.port), None),
                            timeout=20)
        print(f"round {k}: partition -> new writer :{new_port} named after {time.time() - t_cut:.2f}s", flush=True)
        out, _ = load.communicate(timeout=60)
        acked = [l for l in out.splitlines() if l.startswith("acked")]
        print(f"round {k}: load on the old primary: {acked[0] if acked else out.strip()[-300:]}", flush=True)
        lost, vout = verify_state(new_port, state)
        check(lost == 0, f"round {k}: acknowledged writes lost after a monitor<->primary partition:\n{vout}")
        print(f"round {k}: verify on the new primary: " + vout.strip().splitlines()[-1], flush=True)
        old = Resp(pport, timeout=3).call("INFO", "replication").decode()
        fenced = [l for l in old.splitlines() if l.startswith(("term:", "fenced:", "sync_state:"))]
        print(f"round {k}: old primary after the partition: {', '.join(fenced)}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        if proxy:
            proxy.close()
        cl.kill_leftovers()


if __name__ == "__main__":
    for k in range(int(os.environ.get("ROUNDS", "1"))):
        one_round(k + 1)
    print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)
