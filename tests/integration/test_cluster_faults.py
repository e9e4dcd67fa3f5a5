"""scripts/cluster fault injection (slow / partition / heal) and availability zones, both modes.

classic (`start classic --faults`, primary + 2 replicas, remote_flush, ANY 1 (replica1,replica2), three
monitors, every peer link through the fault proxy, clients direct):
  * `partition primary replica1`: writes are still acknowledged (ANY 1 falls back on replica2) and
    replica1 does not get them while cut off; `faults` names the cut; `heal`: replica1 catches up;
    the same with `--one-way` (only primary -> replica1 cut);
  * `slow replica2 300 50`: writes still acknowledged; `slow replica2 0`: replica2 has them all;
  * `partition primary all`: the primary cannot reach its sync set: a write is never acknowledged
    (-TIMEOUT after --commit-timeout-ms, or READONLY once the monitors fenced it for a lost sync set);
    `heal`: a write through the monitors' answer (Sentinel) is acknowledged again and every write
    acknowledged before is on that writer.
aurora (`start aurora --azs 3 --az-latency-ms 1`): status shows two storage nodes per AZ and every
process's AZ; each AZ has its own addresses (127.0.AZ.x; clients connect there directly);
  * `slow storage3 300` and `slow az2 300` (two storage nodes): writes acknowledged (4 fast nodes);
  * `partition writer az3` (2 of 6 cut): writes acknowledged; `partition writer storage4` (3 of 6):
    a write is answered with the commit-timeout error, never OK; `heal`: writes acknowledged again,
    the reader serves the newest value, the timed-out write is absent or has its value;
  * `kill storage1` with a proxy in front: writes go on; `restart storage1`: it catches up;
  * `stop` leaves no process behind (the proxy included).
`scripts/cluster trace` in both modes: every writer-side step present, in causal order (the quorum:
4 acknowledgements before durable in aurora); classic: each replica's received/flushed/acked/applied;
aurora: each storage node's received/hot-logged/fsynced/acked (tests/integration/test_trace.py checks
every step of every process and the order). No timing assertions: every wait is a bounded poll.
"""
import os
import time

from harness import Resp, RespError, check, fail, tmpdir, wait_for
from test_cluster_classic import Cluster, free_range, pid_running

CTIMEOUT_MS = 1000
t_start = time.time()


def endpoints(cl):
    out = {}
    for line in cl.run("endpoints").stdout.splitlines():
        name, role, addr, pid = line.split()
        host, port = addr.rsplit(":", 1)
        out[name] = (role, host, int(port), None if pid == "-" else int(pid))
        if pid != "-":
            cl.seen_pids.add(int(pid))
    return out


def call(host, port, *args, timeout=10):
    c = Resp(port, host=host, timeout=timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def must_ack(host, port, key, value):
    r = call(host, port, "SET", key, value)
    check(r == "OK", f"SET {key} on {host}:{port}: {r!r}")


def get(host, port, key):
    """GET; an error reply (a new writer answers NOLEASE until its read lease is granted, LS4) is
    retried for up to 10 s, as a client would, then returned."""
    deadline = time.time() + 10
    while True:
        r = call(host, port, "GET", key, timeout=5)
        if not isinstance(r, RespError) or time.time() > deadline:
            return r
        time.sleep(0.02)


def proxy_pid(d):
    try:
        return int(open(os.path.join(d, "netproxy.pid")).read())
    except (OSError, ValueError):
        return None


def check_trace(cl, mode):
    """`scripts/cluster trace`: every writer-side step of the mode's diagram, in causal order."""
    out = cl.run("trace").stdout
    print(out, flush=True)
    steps = [l.split()[3] for l in out.splitlines() if l.strip().startswith(("+", "-")) and " us " in l]
    want = ["received", "pages_changed"] + (["redo_batch"] if mode == "aurora" else []) + ["shipped"]
    for w in want + ["ack_received", "durable", "reply_sent"]:
        check(w in steps, f"trace has {w}: {steps}")
    first = {w: steps.index(w) for w in set(steps)}
    check(first["received"] < first["pages_changed"] < first["shipped"] < first["ack_received"]
          < first["durable"] <= first["reply_sent"], f"causal order: {steps}")
    need = 4 if mode == "aurora" else 1  # acknowledgements before the commit is durable
    check(steps[:first["durable"]].count("ack_received") >= need, f"{need} ack(s) before durable: {steps}")
    check(steps.count("shipped") == (6 if mode == "aurora" else 2), f"shipped to every peer: {steps}")
    lines = [l.split() for l in out.splitlines() if l.strip().startswith(("+", "-")) and " us " in l]
    if mode == "aurora":  # each storage node's own steps (trace marks pass the fault proxy too)
        for k in range(1, 7):
            mine = [x[3] for x in lines if x[2] == f"storage{k}"]
            for w in ("peer_received", "peer_written", "peer_fsynced", "peer_acked"):
                check(w in mine, f"storage{k}'s trace has {w}: {mine}")
    if mode == "classic":  # each replica's own steps (under the primary's id: trace marks), after it shipped
        lines = [l.split() for l in out.splitlines() if l.strip().startswith(("+", "-")) and " us " in l]
        for r in ("replica1", "replica2"):
            mine = [x[3] for x in lines if x[2] == r]
            for w in ("peer_received", "peer_fsynced", "peer_acked", "peer_applied"):
                check(w in mine, f"{r}'s trace has {w}: {mine}")
            check(lines.index(next(x for x in lines if x[2] == r)) > first["shipped"],
                  f"{r} receives after the primary shipped: {steps}")


def classic(cl, d):
    base = free_range()
    cl.run("start", "classic", "--faults", "--dir", d, "--base-port", base,
           "--commit-timeout-ms", CTIMEOUT_MS, timeout=180)
    ep = endpoints(cl)
    _, ph, pp, _ = ep["primary"]
    _, r1h, r1p, _ = ep["replica1"]
    _, r2h, r2p, _ = ep["replica2"]
    check(pid_running(proxy_pid(d)), "the fault proxy runs")
    net = open(os.path.join(d, "net")).read()
    check(f"primary - {ph}:{pp} " in net and f" {ph}:{pp}\n" not in net,
          f"the primary's peers get a proxy address, not its own:\n{net}")
    check_trace(cl, "classic")
    acked = {}
    for i in range(5):
        must_ack(ph, pp, f"c:pre:{i}", i)
        acked[f"c:pre:{i}"] = str(i)

    # one sync replica cut off: ANY 1 goes on with the other
    cl.run("partition", "primary", "replica1")
    check("cut primary<->replica1" in cl.run("faults").stdout, "faults names the cut")
    for i in range(20):
        must_ack(ph, pp, f"c:cut:{i}", i)
        acked[f"c:cut:{i}"] = str(i)
    wait_for("replica2 has the writes made while replica1 was cut off",
             lambda: get(r2h, r2p, "c:cut:19") == b"19", timeout=30)
    check(get(r1h, r1p, "c:cut:19") is None, "replica1 got nothing while cut off")
    st = cl.run("status").stdout
    print(st, flush=True)
    check("faults: cut primary<->replica1" in st, f"status shows the fault:\n{st}")
    cl.run("heal")
    check("faults: none" in cl.run("faults").stdout, "heal removed the cut")
    wait_for("replica1 catches up after heal", lambda: get(r1h, r1p, "c:cut:19") == b"19", timeout=60)

    # one way: the primary's bytes to replica1 held, replica1's to the primary pass
    cl.run("partition", "primary", "replica1", "--one-way")
    f = cl.run("faults").stdout
    check("cut primary->replica1" in f and "replica1->primary" not in f and "<->" not in f, f"faults: {f}")
    for i in range(5):
        must_ack(ph, pp, f"c:oneway:{i}", i)
        acked[f"c:oneway:{i}"] = str(i)
    check(get(r1h, r1p, "c:oneway:4") is None, "replica1 gets nothing over the cut direction")
    cl.run("heal")
    wait_for("replica1 catches up after a one-way cut", lambda: get(r1h, r1p, "c:oneway:4") == b"4", timeout=60)

    # a slow sync replica: ANY 1 does not wait for it
    cl.run("slow", "replica2", 300, 50)
    check("slow replica2 +300ms" in cl.run("faults").stdout, "faults shows the slow replica")
    for i in range(10):
        must_ack(ph, pp, f"c:slow:{i}", i)
        acked[f"c:slow:{i}"] = str(i)
    cl.run("slow", "replica2", 0)
    wait_for("replica2 has every write once no longer slow", lambda: get(r2h, r2p, "c:slow:9") == b"9", timeout=60)

    # the whole sync set cut off: never acknowledged
    cl.run("partition", "primary", "all")
    r = call(ph, pp, "SET", "c:nosync", "x", timeout=30)
    print(f"write with the primary cut off from its sync set: {r!r}", flush=True)
    check(isinstance(r, RespError) and (str(r).startswith("TIMEOUT") or str(r).startswith("READONLY")),
          f"a write the sync set could not confirm: -TIMEOUT or -READONLY, got {r!r}")
    cl.run("heal")

    mport = ep["monitor1"][2]

    def write_via_sentinel():
        h, p = [x.decode() for x in call("127.0.0.1", mport, "SENTINEL", "get-master-addr-by-name", "redoubt")]
        return call(h, int(p), "SET", "c:after-heal", "1", timeout=3) == "OK" and (h, int(p))
    h, p = wait_for("a write acknowledged through the monitors' answer after heal", write_via_sentinel, timeout=60)
    got = {k: get(h, p, k) for k in acked}
    lost = [(k, got[k]) for k, v in acked.items() if got[k] != v.encode()]
    check(not lost, f"acknowledged writes missing on the writer after heal ({len(lost)} of {len(acked)}): {lost[:5]}")
    print(f"classic: {len(acked)} acknowledged writes all on the writer after heal ({h}:{p})", flush=True)
    stop(cl, d)


def aurora(cl, d):
    base = free_range()
    cl.run("start", "aurora", "--azs", 3, "--az-latency-ms", 1, "--dir", d, "--base-port", base,
           "--commit-timeout-ms", CTIMEOUT_MS, timeout=180)
    ep = endpoints(cl)
    st = cl.run("status").stdout
    print(st, flush=True)
    az = {l.split()[0]: l.split()[1] for l in st.splitlines()[2:] if len(l.split()) > 2}
    for k, want in zip(range(1, 7), ("az1", "az1", "az2", "az2", "az3", "az3")):
        check(az.get(f"storage{k}") == want, f"storage{k} in {want}: {az}")
        check(ep[f"storage{k}"][1].startswith(f"127.0.{want[2]}."), f"storage{k}'s address is in {want}: {ep}")
    check(az.get("writer") == "az1" and az.get("reader1") == "az2", f"writer az1, reader1 az2: {az}")
    check("3 AZs, 1 ms between them" in st, f"status names the AZ latency:\n{st}")
    _, wh, wp, _ = ep["writer"]
    _, rh, rp, _ = ep["reader1"]
    must_ack(wh, wp, "a:pre", "0")
    check_trace(cl, "aurora")

    for what in ("storage3", "az2"):
        cl.run("slow", what, 300)
        for i in range(5):
            must_ack(wh, wp, f"a:slow:{what}:{i}", i)
        cl.run("heal")

    cl.run("partition", "writer", "az3")
    for i in range(10):
        must_ack(wh, wp, f"a:cut2:{i}", i)
    cl.run("partition", "writer", "storage4")
    f = cl.run("faults").stdout
    check(all(f"cut storage{k}<->writer" in f for k in (4, 5, 6)), f"faults: {f}")
    r = call(wh, wp, "SET", "a:cut3", "x", timeout=30)
    print(f"write with 3 of 6 storage nodes cut off: {r!r}", flush=True)
    check(isinstance(r, RespError) and str(r).startswith("TIMEOUT"),
          f"3 of 6 cut off: the commit-timeout error, got {r!r}")
    cl.run("heal")
    wait_for("a write acknowledged after heal",
             lambda: call(wh, wp, "SET", "a:healed", "1", timeout=3) == "OK", timeout=60)
    v = get(wh, wp, "a:cut3")
    check(v in (None, b"x"), f"the timed-out write is absent or has its value: {v!r}")
    wait_for("the reader serves the newest value", lambda: get(rh, rp, "a:healed") == b"1", timeout=30)
    check(get(rh, rp, "a:cut2:9") == b"9", "the reader has the writes made with 2 of 6 cut off")

    cl.run("kill", "storage1")
    for i in range(5):
        must_ack(wh, wp, f"a:sn1down:{i}", i)
    cl.run("restart", "storage1", timeout=60)
    must_ack(wh, wp, "a:sn1back", "1")
    stop(cl, d)


def stop(cl, d):
    ppid = proxy_pid(d)
    pids = set(cl.seen_pids) | {ppid}
    cl.run("stop", timeout=120)
    left = [p for p in pids if p and pid_running(p)]
    check(not left, f"processes left after stop: {left}")
    cl.seen_pids.clear()


def main():
    for name, body in (("classic", classic), ("aurora", aurora)):
        d = tmpdir(f"redoubt-faults-{name}-")
        cl = Cluster(d)
        try:
            body(cl, d)
        finally:
            cl.kill_leftovers()
        print(f"{name}: ok ({time.time() - t_start:.0f}s)", flush=True)
    print(f"test_cluster_faults: ok ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
