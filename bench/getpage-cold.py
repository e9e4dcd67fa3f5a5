#!/usr/bin/env python3
"""bench/getpage-cold.py — one run of the cold-cache measurement of bench/run-getpage-cold
(issue 12, item 4): an aurora cluster from $BUILD (6 storage nodes, a writer with the default
128 MiB pool), KEYS keys of 100 bytes preloaded, the writer killed (-9) and restarted, so its
pool is empty; then redoubt-bench (SET of random keys over the keyspace: nearly every one misses
a leaf at first) for DURATION s with CLIENTS clients. Prints one JSON line: the bench's figures
and the writer's getpage_*/commands_* counters.
With a 4th argument "stop", storage node 1 is stopped (SIGSTOP) once the writer is back: one
slow node, which every GetPage must get around. With "reader", no writer restart: a reader with a
1 MiB pool is added and CLIENTS threads GET random keys on it for DURATION s while one more client
PINGs it in a loop; prints GET ops/s and latency percentiles and the PING latency (a blocking
GetPage stalls the PING too).
  BUILD=... bench/getpage-cold.py KEYS CLIENTS DURATION [stop|reader]
"""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import BENCH, AuroraCluster, Resp, check, wait_writable  # noqa: E402

keys, clients, duration = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
stop = len(sys.argv) > 4 and sys.argv[4] == "stop"
reader = len(sys.argv) > 4 and sys.argv[4] == "reader"
cl = AuroraCluster(nreaders=0).start()
w = cl.writer
c = Resp(w.port)
for b in range(0, keys, 1000):
    r = c.pipeline([("SET", f"key:{i:08d}", "x" * 100) for i in range(b, min(keys, b + 1000))])
    check(all(x == "OK" for x in r), f"preload: {r[:2]}")
c.close()
if reader:
    import random
    import threading
    import time
    cl.reader_args = ["--cache-mb", "1"]
    rd = cl.add_reader()
    cl.wait_reader_caught_up(rd)
    lat, ping, done = [], [], threading.Event()

    def getter(seed):
        rng, cc = random.Random(seed), Resp(rd.port)
        while not done.is_set():
            t = time.perf_counter()
            v = cc.call("GET", f"key:{rng.randrange(keys):08d}")
            lat.append(time.perf_counter() - t)
            check(v == b"x" * 100, f"GET: {v!r}")
        cc.close()

    def pinger():
        cc = Resp(rd.port)
        while not done.is_set():
            t = time.perf_counter()
            check(cc.call("PING") == "PONG", "PING")
            ping.append(time.perf_counter() - t)
            time.sleep(0.001)
        cc.close()

    th = [threading.Thread(target=getter, args=(i,)) for i in range(clients)] + [threading.Thread(target=pinger)]
    for t in th:
        t.start()
    time.sleep(duration)
    done.set()
    for t in th:
        t.join()
    lat.sort()
    ping.sort()
    pc = lambda a, q: round(a[min(len(a) - 1, int(len(a) * q))] * 1e6)
    j = {"ops_per_sec": len(lat) / duration, "p50_us": pc(lat, 0.5), "p99_us": pc(lat, 0.99), "p999_us": pc(lat, 0.999),
         "ping_p50_us": pc(ping, 0.5), "ping_p99_us": pc(ping, 0.99), "ping_max_us": pc(ping, 1.0)}
    d = rd.info("replication")
    j.update({k: int(v) for k, v in d.items() if k.startswith(("getpage_", "commands_")) and v.isdigit()})
    print(json.dumps(j))
    sys.exit(0)
w.kill9()
w.start()
wait_writable(w)
if stop:
    os.kill(cl.nodes[0].proc.pid, signal.SIGSTOP)
out = subprocess.run([BENCH, "--port", str(w.port), "--clients", str(clients), "--duration", str(duration),
                      "--warmup", "0", "--keyspace", str(keys), "--json"], capture_output=True, text=True, timeout=600)
j = json.loads(out.stdout.strip().splitlines()[-1])
d = w.info("replication")
j.update({k: int(v) for k, v in d.items() if k.startswith(("getpage_", "commands_")) and v.isdigit()})
if stop:
    os.kill(cl.nodes[0].proc.pid, signal.SIGCONT)
print(json.dumps(j))
