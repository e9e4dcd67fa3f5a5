"""scripts/cluster end to end, classic mode, with automatic failover by redoubt-monitor.

start classic (primary + 2 replicas, --commit remote_flush, ANY 1) in a temp dir on a free
port range; status; acked write load on the primary (redoubt-bench --mode acked); kill -9 of the
primary; the monitor promotes a replica on its own; the client finds the new primary through
`SENTINEL get-master-addr-by-name`; every acknowledged write is there (redoubt-bench --mode
verify); the outage (kill -> first acknowledged write on the new primary) is printed; the old
primary is restarted as a replica (`restart primary`); `stop` leaves no process behind.
Monitors: three; monitor1 is killed before the primary (the other two still fail over), then
all three are killed and `status`, `endpoints`, `writer` and `restart` work from the nodes alone.
"""
import os
import signal
import subprocess
import time

from harness import ROOT, BUILD, Resp, RespError, acked_load, check, fail, tmpdir, verify_state, wait_for
import socket

SCRIPT = os.path.join(ROOT, "scripts", "cluster")
GOAL_S = 0.3
MONITORS = {"monitor1", "monitor2", "monitor3"}
t_start = time.time()


def free_range(n=24):
    """A base port with n free consecutive ports after it."""
    import random
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 32700 - n)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    fail("no free port range")


class Cluster:
    def __init__(self, d):
        self.dir = d
        self.env = dict(os.environ, REDOUBT_CLUSTER_DIR=d, BUILD=BUILD)
        self.seen_pids = set()

    def run(self, *args, timeout=150, check_rc=True):
        r = subprocess.run([SCRIPT] + [str(a) for a in args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check_rc and r.returncode != 0:
            fail(f"scripts/cluster {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def endpoints(self):
        out = {}
        for line in self.run("endpoints").stdout.splitlines():
            name, role, addr, pid = line.split()
            out[name] = (role, int(addr.split(":")[1]), None if pid == "-" else int(pid))
            if pid != "-":
                self.seen_pids.add(int(pid))
        return out

    def monitor_addr(self, mport, name="redoubt"):
        c = Resp(mport, timeout=3)
        try:
            r = c.call("SENTINEL", "get-master-addr-by-name", name)
            return r[0].decode(), int(r[1])
        finally:
            c.close()

    def kill_leftovers(self):
        """Cleanup by PID (never by name): SIGKILL whatever the cluster dir's PID files still name."""
        for f in os.listdir(self.dir):
            if f.endswith(".pid"):
                try:
                    pid = int(open(os.path.join(self.dir, f)).read())
                    if self.dir in open(f"/proc/{pid}/cmdline").read().replace("\0", " "):
                        os.kill(pid, signal.SIGCONT)
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def pid_running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def first_write_after(cl, mport, old_port, t_kill, timeout=30):
    """Polls the monitor for the writer and SETs on it; returns (port, seconds since t_kill)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            _, port = cl.monitor_addr(mport)
            if port != old_port:
                c = Resp(port, timeout=2)
                try:
                    if c.call("SET", "outage:probe", str(time.time())) == "OK":
                        return port, time.time() - t_kill
                finally:
                    c.close()
        except (OSError, ConnectionError, TypeError, IndexError):
            pass
        time.sleep(0.01)
    fail(f"no acknowledged write on a new writer within {timeout}s of the kill")


def main():
    d = tmpdir("redoubt-cluster-")
    cl = Cluster(d)
    try:
        body(cl, d)
    finally:
        cl.kill_leftovers()


def body(cl, d):
    base = free_range()
    r = cl.run("start", "classic", "--dir", d, "--base-port", base, timeout=180)
    print(r.stderr.strip().splitlines()[-1], flush=True)
    ep = cl.endpoints()
    check(set(ep) == {"primary", "replica1", "replica2"} | MONITORS, f"endpoints: {ep}")
    check(all(pid for _, _, pid in ep.values()), f"every process runs: {ep}")
    mport = ep["monitor2"][1]
    old_port = ep["primary"][1]
    check(cl.monitor_addr(mport) == ("127.0.0.1", old_port), "the monitor names the primary as the writer")
    st = cl.run("status").stdout
    print(st, flush=True)
    check("monitors: 3 of 3 up" in st, f"status counts the monitors:\n{st}")
    for n in ("primary", "replica1", "replica2", *MONITORS):
        check(any(l.split()[:1] == [n] and " yes " in l for l in st.splitlines()), f"status: {n} alive:\n{st}")

    # the port-taken check
    r = cl.run("start", "classic", "--dir", tmpdir("redoubt-cluster-"), "--base-port", base, check_rc=False)
    check(r.returncode != 0 and "taken" in r.stderr, f"start on a taken port fails clearly: {r.stderr}")

    state = os.path.join(d, "acked.txt")
    load = acked_load(old_port, "cc", state, clients=4, duration=30)
    time.sleep(1.0)
    cl.run("kill", "monitor1")  # the lowest id, the one that would lead: the other two must do without it
    time.sleep(1.0)
    check(load.poll() is None, "load still runs before the kill")
    wpid = cl.endpoints()["primary"][2]
    t_kill = time.time()
    os.kill(wpid, signal.SIGKILL)  # directly: the outage must not include the script's start-up
    new_port, outage = first_write_after(cl, mport, old_port, t_kill)
    out, _ = load.communicate(timeout=60)
    acked = [l for l in out.splitlines() if l.startswith("acked")]
    print(f"load: {acked[0] if acked else out.strip()[-300:]}", flush=True)
    print(f"OUTAGE classic (kill -9 of the primary -> first acknowledged write on the new primary :{new_port}): "
          f"{outage:.3f} s (goal < {GOAL_S} s)", flush=True)
    check(outage < 15, f"failover took {outage:.1f}s")
    lost, vout = verify_state(new_port, state)
    check(lost == 0, f"acknowledged writes lost after failover (remote_flush, ANY 1):\n{vout}")
    print("verify on the new primary: " + vout.strip().splitlines()[-1], flush=True)

    info = Resp(mport).call("INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    check("failovers:1" in text, f"monitor INFO counts one failover:\n{text}")
    for line in text.splitlines():
        if line.startswith("last_failover"):
            print("monitor " + line, flush=True)
    ep = cl.endpoints()
    newname = [n for n, (_, p, _) in ep.items() if p == new_port][0]
    check(ep[newname][0] == "primary", f"endpoints show {newname} as primary: {ep}")

    # every monitor down: the operator view asks the nodes
    for mn in ("monitor2", "monitor3"):
        cl.run("kill", mn)
    st = cl.run("status").stdout
    print(st, flush=True)
    check("monitors: 0 of 3 up" in st and "no automatic failover" in st, f"status says the monitors are down:\n{st}")
    check(cl.run("writer").stdout.split() == ["127.0.0.1", str(new_port)], "writer from the nodes")
    ep = cl.endpoints()
    check(ep[newname][0] == "primary", f"endpoints without monitors: {ep}")
    for mn in sorted(MONITORS):
        cl.run("restart", mn, timeout=60)
    check(cl.monitor_addr(ep["monitor1"][1]) == ("127.0.0.1", new_port),
          "a restarted monitor names the new primary (its state file and its peers)")

    # the old primary rejoins as a replica of the new one
    cl.run("restart", "primary", timeout=180)
    ep = cl.endpoints()

    def rejoined():
        c = Resp(ep["primary"][1], timeout=3)
        try:
            r = c.call("INFO", "replication")
            return isinstance(r, bytes) and b"master_link_status:up" in r and f"master_port:{new_port}".encode() in r
        finally:
            c.close()
    wait_for("the old primary streaming from the new primary", rejoined, timeout=60)
    print("old primary restarted as a replica of the new one", flush=True)
    print(cl.run("status").stdout, flush=True)

    pids = set(cl.seen_pids)
    t0 = time.time()
    cl.run("stop", timeout=120)
    left = [p for p in pids if pid_running(p)]
    check(not left, f"processes left after stop: {left}")
    print(f"stop: {len(pids)} processes gone in {time.time() - t0:.1f}s", flush=True)
    print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
