"""redoubt-bench through a sentinel: --sentinel/--cluster and --mode failover.

1. A standalone redoubt and a fake sentinel (a tiny RESP server in this
   process answering SENTINEL get-master-addr-by-name with the server's
   address): run mode through the sentinel works and reports no lost
   connection; an unknown cluster name is a clear error.
2. A classic primary (remote_flush ANY 1 (r1,r2)) + 2 replicas; the fake
   sentinel names the primary; --mode failover with 4 clients; kill -9 of the
   primary mid-run, REPLICAOF NO ONE on the most advanced replica (the other
   re-pointed to it, so synchronous commits go on), the sentinel's answer
   switched to it. The bench must reconnect, report an outage (outage_ms > 0, acks on both
   writers, reconnects >= clients) and --mode verify must pass on the new
   primary (zero acknowledged writes lost: ANY 1 of the replicas was synchronous).
Bounded (about 20 s); every process is killed by PID at exit (harness).
"""
import json
import os
import socket
import subprocess
import threading
import time

from harness import (BENCH, Primary, Replica, Server, bench, check, fail, lsn, repl_info, tmpdir,
                     wait_streaming)


class FakeSentinel:
    """Answers SENTINEL get-master-addr-by-name <cluster> with self.addr
    (host, port), or nil for another cluster name; PING with PONG."""

    def __init__(self, cluster, addr):
        self.cluster = cluster
        self.addr = addr
        self.asked = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_cmd(f):
        line = f.readline()
        if not line:
            return None
        if not line.startswith(b"*"):
            return line.split()
        args = []
        for _ in range(int(line[1:])):
            n = int(f.readline()[1:])
            args.append(f.read(n + 2)[:n])
        return args

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                cmd = self._read_cmd(f)
                if cmd is None:
                    return
                words = [a.decode().lower() for a in cmd]
                if words[:2] == ["sentinel", "get-master-addr-by-name"] and len(words) == 3:
                    self.asked += 1
                    if cmd[2].decode() != self.cluster:
                        c.sendall(b"*-1\r\n")
                        continue
                    host, port = self.addr
                    h, p = host.encode(), str(port).encode()
                    c.sendall(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p))
                elif words[:1] == ["ping"]:
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"-ERR unknown command\r\n")
        except OSError:
            pass
        finally:
            c.close()


t0 = time.time()

# ---- 1. run mode through the sentinel
srv = Server().start()
sen = FakeSentinel("x", ("127.0.0.1", srv.port))
r = bench("--sentinel", f"127.0.0.1:{sen.port}", "--cluster", "x", "--clients", "4", "--duration", "1",
          "--warmup", "0.2", "--json", timeout=60)
j = json.loads(r.stdout)
check(j["mode"] == "run" and j["ops"] > 0 and j["errors"] == 0 and j["connections_lost"] == 0,
      f"run mode through the sentinel: {r.stdout}")
check(str(j["port"]) == str(srv.port) and j["old_writer"] == f"127.0.0.1:{srv.port}",
      f"the bench did not use the sentinel's writer: {r.stdout}")
check(sen.asked >= 1, "the sentinel was never asked")
print(f"ok: run mode via the sentinel: {j['ops_per_sec']:.0f} ops/s against port {j['port']}", flush=True)
r = bench("--sentinel", f"127.0.0.1:{sen.port}", "--cluster", "nope", "--reconnect-s", "0.2", "--duration", "1",
          check_rc=False, timeout=30)
check(r.returncode == 2 and "knows no writer" in r.stderr, f"unknown cluster: rc {r.returncode} {r.stderr}")
print("ok: an unknown cluster name is refused", flush=True)
srv.stop()

# ---- 2. failover mode: kill -9 of the primary, promotion by hand, sentinel switched
work = tmpdir()
sync = ["--commit", "remote_flush", "--sync-replicas", "ANY 1 (r1,r2)"]
primary = Primary(args=sync).start()
replicas = [Replica(primary.port, n, args=sync).start() for n in ("r1", "r2")]
wait_streaming(primary, 2)
sen = FakeSentinel("demo", ("127.0.0.1", primary.port))
state = os.path.join(work, "failover.state")
proc = subprocess.Popen([BENCH, "--mode", "failover", "--sentinel", f"127.0.0.1:{sen.port}", "--cluster", "demo",
                         "--clients", "4", "--duration", "6", "--keyspace", "4000", "--state", state,
                         "--reconnect-s", "20", "--json"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    time.sleep(1.5)
    t_kill = time.time()
    primary.kill9()
    time.sleep(0.3)  # as if a monitor needed a few heartbeats to notice
    # promote the most advanced replica (it holds every acknowledged write), re-point the other
    best = max(replicas, key=lambda n: lsn(repl_info(n), "receive_lsn"))
    other = [n for n in replicas if n is not best][0]
    check(best.cli("REPLICAOF", "NO", "ONE") == "OK", "REPLICAOF NO ONE failed")
    check(other.cli("REPLICAOF", "127.0.0.1", str(best.port)) == "OK", "re-pointing the other replica failed")
    sen.addr = ("127.0.0.1", best.port)
    out, err = proc.communicate(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    fail("redoubt-bench --mode failover did not finish within 60 s")
check(proc.returncode == 0, f"failover mode exited {proc.returncode}:\n{out}\n{err}")
j = json.loads(out)
check(j["mode"] == "failover", f"mode: {out}")
check(j["outage_ms"] is not None and j["outage_ms"] > 250, f"no plausible outage (>= the 300 ms pause): {out}")
check(j["outage_ms"] < 10000, f"outage too long: {out}")
check(j["acked_old"] > 0 and j["acked_new"] > 0, f"acks on both writers expected: {out}")
check(j["reconnects"] >= 4 and j["gave_up"] == 0, f"every client should reconnect once: {out}")
check(j["old_writer"] == f"127.0.0.1:{primary.port}" and j["new_writer"] == f"127.0.0.1:{best.port}",
      f"writers: {out}")
check(j["first_new_ack_unix_ms"] / 1000 > t_kill, f"first new ack before the kill: {out}")
print(f"ok: failover mode: outage {j['outage_ms']} ms, {j['acked']} acked ({j['acked_old']} old, "
      f"{j['acked_new']} new), {j['reconnects']} reconnects", flush=True)
r = bench("--mode", "verify", "--sentinel", f"127.0.0.1:{sen.port}", "--cluster", "demo", "--state", state,
          timeout=60)
check("verify: PASS" in r.stdout, f"verify on the new primary:\n{r.stdout}")
print(f"ok: {r.stdout.splitlines()[0]}", flush=True)
for n in replicas:
    n.stop()
print(f"test_bench_modes: passed in {time.time() - t0:.1f}s", flush=True)
