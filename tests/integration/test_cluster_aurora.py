"""scripts/cluster end to end, aurora mode, with automatic failover by redoubt-monitor.

start aurora (6 storage nodes + writer + 2 readers) in a temp dir on a free port range; status;
acked write load on the writer; kill -9 of the writer; the monitor promotes a reader (which
bumps the volume epoch: the storage nodes fence the old writer); the client finds the new writer
through `SENTINEL get-master-addr-by-name`; every acknowledged write is there; the outage
(kill -> first acknowledged write on the new writer) is printed; the old writer comes back as a
reader (`restart writer`), the other reader is restarted on the new writer (aurora readers cannot
be re-pointed at run time); `stop` leaves no process behind.
"""
import os
import signal
import time

from harness import Resp, acked_load, check, tmpdir, verify_state, wait_for
from test_cluster_classic import Cluster, first_write_after, free_range, pid_running

GOAL_S = 0.3
t_start = time.time()


def body(cl, d):
    base = free_range()
    r = cl.run("start", "aurora", "--readers", 2, "--dir", d, "--base-port", base, timeout=180)
    print(r.stderr.strip().splitlines()[-1], flush=True)
    ep = cl.endpoints()
    want = {"writer", "reader1", "reader2", "monitor1", "monitor2", "monitor3"} | {f"storage{i}" for i in range(1, 7)}
    check(set(ep) == want, f"endpoints: {sorted(ep)}")
    mport, old_port = ep["monitor1"][1], ep["writer"][1]
    check(cl.monitor_addr(mport) == ("127.0.0.1", old_port), "the monitor names the writer")
    st = cl.run("status").stdout
    print(st, flush=True)
    for n in want:
        check(any(l.split()[:1] == [n] and " yes " in l for l in st.splitlines()), f"status: {n} alive:\n{st}")

    state = os.path.join(d, "acked.txt")
    load = acked_load(old_port, "ca", state, clients=4, duration=30)
    time.sleep(1.0)
    cl.run("kill", "monitor2")  # any one monitor down changes nothing
    time.sleep(1.0)
    check(load.poll() is None, "load still runs before the kill")
    wpid = cl.endpoints()["writer"][2]
    t_kill = time.time()
    os.kill(wpid, signal.SIGKILL)  # directly: the outage must not include the script's start-up
    new_port, outage = first_write_after(cl, mport, old_port, t_kill)
    out, _ = load.communicate(timeout=60)
    acked = [l for l in out.splitlines() if l.startswith("acked")]
    print(f"load: {acked[0] if acked else out.strip()[-300:]}", flush=True)
    print(f"OUTAGE aurora (kill -9 of the writer -> first acknowledged write on the new writer :{new_port}): "
          f"{outage:.3f} s (goal < {GOAL_S} s)", flush=True)
    check(outage < 15, f"failover took {outage:.1f}s")
    lost, vout = verify_state(new_port, state)
    check(lost == 0, f"acknowledged writes lost after an aurora failover:\n{vout}")
    print("verify on the new writer: " + vout.strip().splitlines()[-1], flush=True)
    text = Resp(mport).call("INFO").decode()
    check("failovers:1" in text, f"monitor INFO counts one failover:\n{text}")
    for line in text.splitlines():
        if line.startswith("last_failover"):
            print("monitor " + line, flush=True)
    ep = cl.endpoints()
    newname = [n for n, (_, p, _) in ep.items() if p == new_port][0]
    other = ({"reader1", "reader2"} - {newname}).pop()
    check(ep[newname][0] == "writer", f"endpoints show {newname} as the writer: {ep}")

    cl.run("restart", "monitor2", timeout=60)
    # the old writer comes back as a reader of the new one; the other reader is restarted on it
    cl.run("restart", "writer", timeout=120)
    cl.run("restart", other, timeout=120)
    ep = cl.endpoints()

    def subscribed():
        r = Resp(new_port, timeout=3).call("INFO", "replication")
        return r.count(b"name=writer,") == 1 and r.count(f"name={other},".encode()) == 1
    wait_for("the old writer and the other reader subscribed to the new writer", subscribed, timeout=60)
    print(cl.run("status").stdout, flush=True)

    pids = set(cl.seen_pids)
    t0 = time.time()
    cl.run("stop", timeout=120)
    left = [p for p in pids if pid_running(p)]
    check(not left, f"processes left after stop: {left}")
    print(f"stop: {len(pids)} processes gone in {time.time() - t0:.1f}s", flush=True)
    print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)


if __name__ == "__main__":
    d = tmpdir("redoubt-cluster-")
    cl = Cluster(d)
    try:
        body(cl, d)
    finally:
        cl.kill_leftovers()
