#!/usr/bin/env python3
"""test_peer_auth.py — issue 10: peer authentication and limits under abuse,
both modes, every port.

The test speaks the handshake itself (common/auth.h: BLAKE2b key, HMAC-SHA-512-256,
both computed with Python's hashlib/hmac), so it is an independent implementation:
a legitimate peer it builds is accepted, and a recorded one replayed is not.

Aurora (6 storage nodes, writer, reader, all with --cluster-secret-file):
  * forged EPOCH and TRUNCATE frames on unauthenticated connections to a storage
    node are refused with an ERROR and the connection closed; epoch, SCL and
    truncated_above stay; the writer is not fenced and keeps committing;
  * a replayed handshake (recorded HELLO + PROOF) is refused; a fresh one works;
  * REDOUBT.READER, REPLICAOF NO ONE, SHUTDOWN, CONFIG SET, REDOUBT.FENCE from an
    unauthenticated client: -NOPEERAUTH, nothing changes;
  * random bytes and a slowloris on every port change nothing;
  * 2,000 idle connections to every port: commits continue, and a failover (the
    reader promoted over an authenticated admin connection) works, its new links
    to the storage nodes getting past the idle connections.
Classic (primary + replica, secret): the replica streams (its handshake works);
forged REDOUBT.REPLICATE and admin commands are refused; a replica with the wrong
secret never streams; 2,000 idle connections to both ports: commits continue
and a promotion works. A secret file readable by others is refused at start.
"""
import hashlib
import hmac
import os
import random
import resource
import socket
import struct
import time
import ctypes

from harness import (AuroraCluster, Primary, Replica, Resp, bench, check, fail, raw_exchange, seed,
                     tmpdir, wait_for, wait_streaming, wait_writable, StorageNode)

SECRET = os.urandom(32)
CLUSTER = "itest"

# ---------------------------------------------------------------- the handshake (common/auth.h)

KEY = hashlib.blake2b(SECRET, digest_size=32, key=CLUSTER.encode().ljust(16, b"\0")).digest()
TAG = hashlib.blake2b(CLUSTER.encode(), digest_size=32).digest()[:8]


def mac(label, cn, sn):
    return hmac.new(KEY, label + TAG + cn + sn, hashlib.sha512).digest()[:32]


def hdr(t):
    return b"RDA1" + bytes([1, t, 0, 0])


def hello(cn):
    return hdr(1) + TAG + cn


def proof(cn, sn):
    return hdr(3) + mac(b"redoubt-auth-cli", cn, sn)


def verify_challenge(ch, cn):
    check(len(ch) == 72 and ch[:8] == hdr(2), f"bad CHALLENGE {ch!r}")
    sn = ch[8:40]
    check(hmac.compare_digest(ch[40:72], mac(b"redoubt-auth-srv", cn, sn)), "the server's MAC does not verify")
    return sn


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_line(s):
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = s.recv(1)
        if not c:
            raise ConnectionError("closed")
        buf += c
    return buf[:-2]


def read_reply(s):
    line = read_line(s)
    if line[:1] == b"$":
        n = int(line[1:])
        data = b""
        while len(data) < n + 2:
            data += s.recv(n + 2 - len(data))
        return data[:-2]
    return line


def resp_peer(port):
    """An authenticated RESP connection to a redoubt (the monitor's way)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    cn = os.urandom(32)
    s.sendall(resp_cmd("REDOUBT.AUTH", hello(cn).hex()))
    ch = read_reply(s)
    check(not ch.startswith(b"-"), f"REDOUBT.AUTH HELLO refused on :{port}: {ch!r}")
    sn = verify_challenge(bytes.fromhex(ch.decode()), cn)
    s.sendall(resp_cmd("REDOUBT.AUTH", proof(cn, sn).hex()))
    r = read_reply(s)
    check(r == b"+OK", f"proof refused on :{port}: {r!r}")
    return s


def resp_call(s, *args):
    s.sendall(resp_cmd(*args))
    return read_reply(s)


# ---------------------------------------------------------------- frames (common/frame.h)

_xx = ctypes.CDLL("libxxhash.so.0")
_xx.XXH3_64bits_withSeed.restype = ctypes.c_uint64
_xx.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
RD_SEED_FRAME = 0x46524d31


def frame(t, payload, epoch=0):
    h = struct.pack("<IBBHIIQ", 0x31464452, 1, t, 0, len(payload), len(payload), epoch)
    body = h + payload
    return h + struct.pack("<Q", _xx.XXH3_64bits_withSeed(body, len(body), RD_SEED_FRAME)) + payload


def read_frame(s):
    h = b""
    while len(h) < 32:
        c = s.recv(32 - len(h))
        if not c:
            raise ConnectionError("closed")
        h += c
    n = struct.unpack_from("<I", h, 8)[0]
    p = b""
    while len(p) < n:
        c = s.recv(n - len(p))
        if not c:
            raise ConnectionError("closed")
        p += c
    return h[5], p


def closed_after(s, timeout=3):
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


SN_EPOCH, SN_TRUNCATE, SN_ERROR, SN_STATE, AUTH = 38, 40, 42, 39, 60


def sn_handshake(port, cn=None):
    """Authenticates a frame connection to a storage node; returns (socket, hello, proof)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    cn = cn or os.urandom(32)
    h = hello(cn)
    s.sendall(frame(AUTH, h))
    t, ch = read_frame(s)
    check(t == AUTH, f"storage node :{port} answered HELLO with type {t}: {ch!r}")
    sn = verify_challenge(ch, cn)
    pr = proof(cn, sn)
    s.sendall(frame(AUTH, pr))
    return s, h, pr


# ---------------------------------------------------------------- helpers

def secret_file(mode=0o600, secret=SECRET):
    d = tmpdir("redoubt-secret-")
    p = os.path.join(d, "cluster.secret")
    with open(p, "w") as f:
        f.write(f"# test\ncluster_id={CLUSTER}\nsecret={secret.hex()}\n")
    os.chmod(p, mode)
    return p


def garbage(ports, rnd):
    for p in ports:
        for _ in range(3):
            raw_exchange(p, bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 3000))), read_timeout=0.3)
        raw_exchange(p, b"RDF1" + bytes(rnd.getrandbits(8) for _ in range(100)), read_timeout=0.3)


def slowloris(ports):
    socks = []
    for p in ports:
        s = socket.create_connection(("127.0.0.1", p), timeout=5)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\n")
        socks.append(s)
    return socks


def idle(ports, n):
    socks = []
    for p in ports:
        for _ in range(n):
            try:
                socks.append(socket.create_connection(("127.0.0.1", p), timeout=5))
            except OSError:
                pass  # refused at the budget: fine
    return socks


def acked(port, secs=3):
    """Writes for secs seconds (redoubt-bench run mode, SET 50%); returns ops/s (> 0 required)."""
    import re
    r = bench("--port", str(port), "--clients", "4", "--duration", str(secs), "--warmup", "0", "--keyspace", "500",
              "--value-size", "50", check_rc=False)
    m = re.search(r"throughput (\d+) ops/s", r.stdout)
    check(r.returncode == 0 and m and int(m.group(1)) > 0, f"no throughput on :{port}:\n{r.stdout}{r.stderr}")
    return int(m.group(1))


def refused_admin(port, cmds):
    for cmd in cmds:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(resp_cmd(*cmd))
        r = read_reply(s)
        check(r.startswith(b"-NOPEERAUTH"), f"{cmd} on :{port} from an unauthenticated client: {r!r}")
        check(closed_after(s), f"{cmd} on :{port}: the connection stays open after the refusal")
        s.close()


# ---------------------------------------------------------------- main

def main():
    rnd = random.Random(seed())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nidle = int(os.environ.get("IDLE", "2000"))
    secret = secret_file()
    errors_part()
    if os.environ.get("PART") == "monitor":  # one part alone, when debugging
        monitor_part(nidle)
        print("ok")
        return

    # A secret readable by others is refused, like ssh's keys.
    bad = StorageNode(0)
    bad.args = ["--cluster-secret-file", secret_file(0o644)]
    bad.start(wait=False)
    bad.proc.wait(timeout=20)
    check(bad.proc.returncode != 0 and "chmod 600" in bad.log(), f"a 0644 secret was accepted:\n{bad.log()}")
    # --id outside 0..5
    bad = StorageNode(6)
    bad.start(wait=False)
    bad.proc.wait(timeout=20)
    check(bad.proc.returncode == 2, "--id 6 accepted")
    print("ok secret file checks", flush=True)

    # ------------------------------------------------------------ aurora
    sa = ["--cluster-secret-file", secret]
    cl = AuroraCluster(nreaders=1, writer_args=sa, reader_args=sa, node_args=sa).start()
    w, r = cl.writer, cl.readers[0]
    wait_writable(w)
    acked(w.port, 2)
    n0 = cl.nodes[0]
    before = n0.info()
    check("NOT authenticated" not in w.log() and "NOT authenticated" not in n0.log(), "auth warning with a secret")

    # forged EPOCH and TRUNCATE from unauthenticated connections
    for t, payload in ((SN_EPOCH, struct.pack("<Q", 1000)), (SN_TRUNCATE, struct.pack("<QQ", 1000, 0))):
        s = socket.create_connection(("127.0.0.1", n0.port), timeout=5)
        s.sendall(frame(t, payload, epoch=1000))
        typ, p = read_frame(s)
        check(typ == SN_ERROR and b"authentication" in p, f"forged {t} answered {typ} {p!r}")
        check(closed_after(s), f"forged {t}: connection not closed")
    after = n0.info()
    for k in ("epoch", "truncated_above"):
        check(after.get(k) == before.get(k), f"forged messages changed {k}: {before.get(k)} -> {after.get(k)}")
    check(int(after["scl"]) >= int(before["scl"]), "scl went back")
    check(n0.log().count("refusing 127.0.0.1") <= 1, "refusal logged more than once per address")
    # replayed handshake: same HELLO and PROOF on a new connection
    s, h, pr = sn_handshake(n0.port)
    s.sendall(frame(SN_EPOCH, struct.pack("<Q", 0)))  # authenticated: an epoch not above ours changes nothing
    t, p = read_frame(s)
    check(t == SN_STATE, f"authenticated EPOCH answered with {t}")
    s.close()
    s2 = socket.create_connection(("127.0.0.1", n0.port), timeout=5)
    s2.sendall(frame(AUTH, h))
    t, ch = read_frame(s2)
    check(t == AUTH, "no challenge on the replay connection")
    s2.sendall(frame(AUTH, pr) + frame(SN_EPOCH, struct.pack("<Q", 1000), epoch=1000))
    t, p = read_frame(s2)
    check(t == SN_ERROR, f"a replayed proof was accepted (answer type {t})")
    check(closed_after(s2), "replayed proof: connection not closed")
    check(n0.info()["epoch"] == before["epoch"], "a replayed handshake changed the epoch")
    print("ok aurora: forged EPOCH/TRUNCATE and a replayed handshake refused, nothing changed", flush=True)

    # the reader feed and admin commands
    nreaders = len(w.repl()["readers"])
    refused_admin(w.port, [("REDOUBT.READER", "evil"), ("SHUTDOWN",), ("CONFIG", "SET", "x", "y"),
                           ("REDOUBT.FENCE", "evil"), ("REDOUBT.TERM", "99"), ("REDOUBT.PROMOTE", "99"),
                           ("REDOUBT.LEASE", "1", "1")])
    refused_admin(r.port, [("REPLICAOF", "NO", "ONE"), ("PROMOTE",), ("SHUTDOWN", "NOSAVE")])
    check(len(w.repl()["readers"]) == nreaders, "an unauthenticated REDOUBT.READER subscribed")
    check(w.alive() and r.alive(), "SHUTDOWN from an unauthenticated client stopped a node")
    check(r.info("replication").get("role") in ("slave", "replica", "reader"), "the reader was promoted")
    acked(w.port, 2)
    print("ok aurora: reader feed and admin commands refused", flush=True)

    allports = [n.port for n in cl.nodes] + [w.port, r.port]
    garbage(allports, rnd)
    loris = slowloris(allports)
    socks = idle(allports, nidle)
    print(f"holding {len(socks)} idle connections to {len(allports)} ports", flush=True)
    t0 = time.time()
    acked(w.port, 3)
    check(all(p.alive() for p in cl.nodes + [w, r]), "a process died under garbage / idle connections")
    # failover: promote the reader over an authenticated admin connection
    adm = resp_peer(r.port)
    out = resp_call(adm, "REPLICAOF", "NO", "ONE")
    check(out == b"+OK", f"authenticated promotion refused: {out!r}\n{r.log()[-3000:]}")
    adm.close()
    cl.writer = r
    took = wait_writable(r, timeout=60)
    acked(r.port, 2)
    print(f"ok aurora: 2,000 idle connections per port: commits go on, failover in {took:.2f}s "
          f"(started {time.time() - t0:.1f}s after the flood)", flush=True)
    for s in socks + loris:
        s.close()
    for p in cl.nodes + [w, r]:
        p.kill9()

    # ------------------------------------------------------------ classic
    p = Primary(args=sa + ["--commit", "local"]).start()
    rep = Replica(p.port, "r1", args=sa).start()
    wait_streaming(p, 1)
    wrong = Replica(p.port, "r2", args=["--cluster-secret-file", secret_file(secret=os.urandom(32))])
    wrong.start(wait=False)
    refused_admin(p.port, [("REDOUBT.REPLICATE", "0", "evil", "0", "0", "CLONE"), ("SHUTDOWN",),
                           ("REDOUBT.FENCE", "evil"), ("CONFIG", "SET", "a", "b"), ("REDOUBT.TERM", "99")])
    refused_admin(rep.port, [("REPLICAOF", "NO", "ONE"), ("REPLICAOF", "127.0.0.1", "1"), ("PROMOTE",)])
    check(p.info("replication").get("fenced", "0") in ("0", None) and p.alive(), "the primary changed")
    time.sleep(2)
    check(p.info("replication").get("connected_slaves") == "1", "a replica with the wrong secret connected")
    check("failed peer authentication" in wrong.log(), f"wrong secret not reported:\n{wrong.log()[-2000:]}")
    wrong.kill9()
    print("ok classic: replica handshake works; forged REPLICATE/admin and a wrong secret refused", flush=True)
    garbage([p.port, rep.port], rnd)
    socks = idle([p.port, rep.port], nidle) + slowloris([p.port, rep.port])
    acked(p.port, 3)
    adm = resp_peer(rep.port)
    out = resp_call(adm, "REPLICAOF", "NO", "ONE")
    check(out == b"+OK", f"authenticated promotion refused: {out!r}")
    took = wait_writable(rep, timeout=60)
    print(f"ok classic: 2,000 idle connections per port: commits go on, promotion in {took:.2f}s", flush=True)
    for s in socks:
        s.close()
    p.kill9()
    rep.kill9()
    monitor_part(nidle)
    print("ok")


def errors_part():
    """Issue 10 item 3: consistent errors."""
    from harness import Server
    a = Server().start()
    for mib in (2, 3, 7):
        c = socket.create_connection(("127.0.0.1", a.port), timeout=20)
        c.sendall(resp_cmd("SET", "big", b"x" * (mib << 20)) + resp_cmd("PING"))
        r = read_reply(c)
        check(b"value too large" in r, f"{mib} MiB value: {r!r}")
        check(read_reply(c) == b"+PONG", f"{mib} MiB value: the connection did not survive")
        c.close()
    c = socket.create_connection(("127.0.0.1", a.port), timeout=20)
    c.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % (64 << 20))
    r = read_reply(c)
    check(b"value too large" in r and closed_after(c), f"64 MiB value: {r!r}")
    # a port in use: refused before the data directory exists
    d = os.path.join(tmpdir(), "never")
    b = Server(dir=d, port=a.port)
    b.start(wait=False)
    b.proc.wait(timeout=20)
    check(b.proc.returncode != 0 and not os.path.exists(d), f"port in use: rc {b.proc.returncode}, dir made: "
          f"{os.path.exists(d)}\n{b.log()}")
    a.stop()
    sn = StorageNode(0).start()
    sn.stop()
    sn2 = StorageNode(1, dir=sn.dir)
    sn2.start(wait=False)
    sn2.proc.wait(timeout=20)
    check(sn2.proc.returncode != 0 and "refusing to start" in sn2.log(), f"id mismatch accepted:\n{sn2.log()}")
    sport = StorageNode(2, dir=os.path.join(tmpdir(), "sn-never"), port=sn.port)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", sn.port))
    blocker.listen(1)
    sport.start(wait=False)
    sport.proc.wait(timeout=20)
    blocker.close()
    check(sport.proc.returncode != 0 and not os.path.exists(sport.dir), "storage: port in use made the dir")
    print("ok errors: value too large at 2/3/7/64 MiB, port in use before any dir, storage id mismatch", flush=True)


def monitor_part(nidle):
    """scripts/cluster (secret made and passed by it): 10,000 idle connections to the
    monitor and nidle to every node; the monitor still answers at once, misses no
    heartbeat, and fails over when the primary is killed."""
    from test_cluster_classic import Cluster, free_range
    d = tmpdir("redoubt-pa-cluster-")
    cl = Cluster(d)
    try:
        cl.run("start", "classic", "--commit", "local", "--dir", d, "--base-port", free_range(), timeout=180)
        sec = os.stat(os.path.join(d, "cluster.secret"))
        check(sec.st_mode & 0o077 == 0, f"scripts/cluster made a secret with mode {oct(sec.st_mode)}")
        ep = cl.endpoints()
        mport, pport, ppid = ep["monitor1"][1], ep["primary"][1], ep["primary"][2]
        nodeports = [v[1] for k, v in ep.items() if not k.startswith("monitor")]
        socks = idle([mport], 10000) + idle(nodeports, nidle)
        print(f"holding {len(socks)} idle connections (10,000 to the monitor)", flush=True)
        t0 = time.time()
        c = Resp(mport, timeout=5)
        check(c.call("PING") == "PONG", "the monitor does not answer PING")
        took = time.time() - t0
        time.sleep(2)
        info = c.call("INFO").decode()
        check("failovers:0" in info, f"the monitor failed over under idle connections:\n{info}")
        before = c.call("INFO").decode()
        # M18: a forged vote request (a huge epoch, candidate id 7) and a forged hello naming a
        # replica as the writer at a huge config epoch are refused, and change nothing.
        rname = next(k for k in ep if k.startswith("replica"))
        refused_admin(mport, [("SENTINEL", "FAILOVER", "redoubt"),
                              ("SENTINEL", "is-master-down-by-addr", "127.0.0.1", str(pport), "999999", "7"),
                              ("SENTINEL", "redoubt-hello", "7", "999999", rname, "999999", "999999", "0", "0")])
        after = c.call("INFO").decode()
        check("failovers:0" in after, "an unauthenticated SENTINEL command started a failover")
        field = lambda t, k: next((l.split(":", 1)[1].strip() for l in t.splitlines() if l.startswith(k + ":")), None)
        for k in ("current_epoch", "config_epoch", "voted", "max_term"):
            check(field(before, k) == field(after, k),
                  f"an unauthenticated peer message moved {k}: {field(before, k)} -> {field(after, k)}")
        check(field(after, "monitors_up") == field(after, "monitors") == "3",
              f"the monitors do not see each other through authenticated channels:\n{after}")
        os.kill(ppid, 9)
        _, newp = wait_for("the monitor to promote a replica",
                           lambda: (lambda a: a if a[1] != pport else None)(cl.monitor_addr(mport)), timeout=30)
        wait_writable(type("N", (), {"port": newp})(), timeout=30)
        print(f"ok monitor: PING in {took * 1000:.0f} ms with 10,000 idle clients; forged votes and hellos refused; "
              f"failover (by authenticated votes) to :{newp}", flush=True)
        for s in socks:
            s.close()
    finally:
        cl.run("stop", check_rc=False)


if __name__ == "__main__":
    main()
