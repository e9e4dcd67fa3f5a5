"""redoubt-monitor: a paused writer is fenced, and a flapping writer causes no promotion.

1. classic, --commit local (so nothing but the fence keeps a resumed old primary from
   acknowledging writes): SIGSTOP of the primary -> the monitor promotes a replica -> SIGCONT
   -> the old primary refuses every write (READONLY ... fenced) from its first command on, then
   rejoins as a replica of the new primary in place (same PID; monitor M14, server CR6).
2. flapping: the new primary is paused for 2 x the heartbeat interval, resumed, 10 times in a
   row -> no second failover (consecutive misses are required; the writer stays the same).
3. aurora: SIGSTOP of the writer -> a reader is promoted (volume epoch + 1) -> SIGCONT -> a
   write sent to the old writer is never acknowledged.
"""
import os
import re
import signal
import time

from harness import Resp, RespError, check, tmpdir, wait_for
from test_cluster_classic import Cluster, free_range


def _bytes(x):
    return x if isinstance(x, bytes) else b""


def _quiet(f):
    try:
        return f()
    except (OSError, ConnectionError, EOFError):
        return False


INTERVAL_MS = 100
t_start = time.time()


def monitor_info(mport):
    return Resp(mport, timeout=3).call("INFO").decode()


def wait_new_writer(cl, mport, old_port, timeout=20):
    def moved():
        text = monitor_info(mport)
        _, p = cl.monitor_addr(mport)
        return p if p != old_port and "failover_state:idle" in text else None
    return wait_for("the monitor to promote a new writer", moved, timeout=timeout)


def classic_part():
    d = tmpdir("redoubt-fence-")
    cl = Cluster(d)
    try:
        cl.run("start", "classic", "--commit", "local", "--dir", d, "--base-port", free_range(),
               "--interval-ms", INTERVAL_MS, timeout=180)
        ep = cl.endpoints()
        mport, pport, ppid = ep["monitor1"][1], ep["primary"][1], ep["primary"][2]
        c = Resp(pport)
        check(c.call("SET", "before", "1") == "OK", "primary takes writes")
        c.close()
        t0 = time.time()
        cl.run("pause", "primary")
        new_port = wait_new_writer(cl, mport, pport)
        print(f"paused primary: new writer :{new_port} after {time.time() - t0:.2f}s", flush=True)
        time.sleep(0.5)  # the monitor has queued its FENCE on the paused process by now
        cl.run("resume", "primary")
        # Fenced, it refuses every write; the monitors then ask it to rejoin (M14) and it restarts in
        # place as a replica (CR6): the connection may close under us, never with a write acknowledged.
        answers = []
        try:
            c = Resp(pport, timeout=10)
            for i in range(20):
                r = c.call("SET", f"after-resume-{i}", "x")
                check(isinstance(r, RespError), f"write {i} on the fenced old primary answered {r!r}")
                answers.append(str(r))
            c.close()
        except (OSError, ConnectionError, EOFError):
            answers.append("(connection closed: restarting as a replica)")
        check(not answers[0].startswith("(") or len(answers) == 1, f"answers: {answers}")
        check(all("fenced" in a or "NOLEASE" in a or "max number of clients" in a or a.startswith("(")
                  for a in answers),
              f"the resumed old primary refuses (fenced, its lease lapsed, or restarting): {answers[:3]}")
        print(f"resumed old primary refuses writes: {answers[0]}", flush=True)

        def rejoined():
            d = Resp(pport, timeout=2).call("INFO", "replication")
            # an error reply (e.g. refused while it shuts down to restart) is "not yet"
            return isinstance(d, bytes) and b"redoubt_role:replica" in d and b"master_link_status:up" in d
        wait_for("the old primary to rejoin as a streaming replica (M14, CR6)",
                 lambda: _quiet(rejoined), timeout=60)
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        check(b"replica" in argv, f"pid {ppid} is the same process, now a replica: {argv}")
        r = Resp(pport).call("SET", "after-rejoin", "x")
        check(isinstance(r, RespError) and "READONLY" in str(r), f"the rejoined replica refuses writes: {r!r}")
        print(f"old primary rejoined as a replica (same pid {ppid}): {r}", flush=True)
        # a new writer refuses reads until a majority of monitors renewed its lease (LS4, ML4: a few ms)
        wait_for("the new primary to serve the write made before the pause",
                 lambda: Resp(new_port).call("GET", "before") == b"1", timeout=10)

        # flapping writer: short pauses never add up to --misses consecutive misses
        ep = cl.endpoints()
        wname = [n for n, (_, p, _) in ep.items() if p == new_port][0]
        wpid = ep[wname][2]
        before = monitor_info(mport)
        n_fo = int(re.search(r"failovers:(\d+)", before).group(1))
        for _ in range(10):
            os.kill(wpid, signal.SIGSTOP)
            time.sleep(2 * INTERVAL_MS / 1000)
            os.kill(wpid, signal.SIGCONT)
            time.sleep(3 * INTERVAL_MS / 1000)
        time.sleep(1.0)
        after = monitor_info(mport)
        check(f"failovers:{n_fo}" in after, f"flapping caused a failover:\n{after}")
        check(cl.monitor_addr(mport)[1] == new_port, "the writer did not change while flapping")
        print(f"flapping writer {wname}: 10 pauses of {2 * INTERVAL_MS} ms, no promotion", flush=True)
        cl.run("stop", timeout=120)
    finally:
        cl.kill_leftovers()


def aurora_part():
    d = tmpdir("redoubt-fence-")
    cl = Cluster(d)
    try:
        cl.run("start", "aurora", "--dir", d, "--base-port", free_range(), "--interval-ms", INTERVAL_MS, timeout=180)
        ep = cl.endpoints()
        mport, wport = ep["monitor1"][1], ep["writer"][1]
        check(Resp(wport).call("SET", "before", "1") == "OK", "writer takes writes")
        t0 = time.time()
        cl.run("pause", "writer")
        new_port = wait_new_writer(cl, mport, wport)
        print(f"paused writer: reader :{new_port} promoted after {time.time() - t0:.2f}s", flush=True)
        cl.run("resume", "writer")
        acked = False
        try:
            c = Resp(wport, timeout=3)
            r = c.call("SET", "after-resume", "x")
            acked = r == "OK"
            print(f"write on the resumed old writer answered: {r!r}", flush=True)
        except (OSError, ConnectionError, EOFError):
            print("write on the resumed old writer: never answered (fenced by the volume epoch)", flush=True)
        check(not acked, "the old aurora writer acknowledged a write after a newer writer was promoted")
        wait_for("the old writer to rejoin as a reader of the new one (M14, CR6)",
                 lambda: _quiet(lambda: b"redoubt_role:reader" in _bytes(Resp(wport, timeout=2).call("INFO", "replication"))),
                 timeout=60)
        print("the old writer rejoined as a reader", flush=True)
        wait_for("the new writer to serve the write made before the pause (after its lease, LS4)",
                 lambda: Resp(new_port).call("GET", "before") == b"1", timeout=10)
        check(Resp(new_port).call("GET", "after-resume") is None, "the old writer's write is not on the volume")
        cl.run("stop", timeout=120)
    finally:
        cl.kill_leftovers()


classic_part()
aurora_part()
print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)
