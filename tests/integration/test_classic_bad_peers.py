"""Bad replication peers: the primary rejects a bad handshake, a wrong
cluster id and corrupt frames with an error (REPL_ERROR frame or RESP error)
and/or closes, logs a clear message, and stays up; a replica pointed at a
server that is not Redoubt logs a clear error and keeps serving reads; an old
primary that comes back after a promotion refuses to start as primary
("newer timeline") and rejoins as a replica (re-cloning when it diverged).

Handshake (replica/proto.h): REDOUBT.REPLICATE <cluster-id-hex|0> <name>
<timeline> <start-lsn> STREAM|CLONE on the client port, then frames
(common/frame.h: 32-byte header "RDF1", XXH3-64 checksum with seed "FRM1").
"""
import ctypes
import ctypes.util
import random
import socket
import struct
import threading
import time

from harness import (Primary, Replica, Resp, as_primary, as_replica, check, diff_dumps, dump, fail,
                     free_port, raw_exchange, repl_info, seed, wait_converged, wait_for, wait_streaming)

rng = random.Random(seed())
t_start = time.time()
FRAME_MAGIC = b"RDF1"
REPL_HELLO, REPL_STATUS, REPL_ERROR = 1, 4, 5
SEED_FRAME = 0x46524D31

_xx = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xx.XXH3_64bits_withSeed.restype = ctypes.c_uint64
_xx.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def frame(ftype, epoch, payload, flags=0, good_checksum=True):
    hdr = FRAME_MAGIC + struct.pack("<BBHIIQ", 1, ftype, flags, len(payload), len(payload), epoch)
    cs = _xx.XXH3_64bits_withSeed(hdr + payload, len(hdr) + len(payload), SEED_FRAME)
    if not good_checksum:
        cs ^= 0x5A5A
    return hdr + struct.pack("<Q", cs) + payload


def handshake(*args):
    return Resp.encode("REDOUBT.REPLICATE", *args)


def is_rejection(reply):
    """A RESP error line, or a REPL_ERROR frame."""
    return reply.startswith(b"-") or (reply[:4] == FRAME_MAGIC and len(reply) >= 6 and reply[5] == REPL_ERROR)


def describe(reply):
    if reply[:4] == FRAME_MAGIC and len(reply) >= 32:
        return f"frame type {reply[5]} payload {reply[32:32 + 120]!r}"
    return repr(reply[:160])


def still_up(p, what):
    c = Resp(p.port, timeout=10)
    try:
        check(c.call("PING") == "PONG", f"after {what}: PING")
        check(c.call("SET", f"after:{what[:20]}", "ok") == "OK", f"after {what}: SET")
    except OSError as e:
        fail(f"after {what}: the primary is not answering ({e}):\n{p.log()}")
    finally:
        c.close()
    check(p.alive(), f"after {what}: the primary is running")


def logged(node, at, words, what):
    new = node.log_since(at)
    hit = [l for l in new.splitlines() if any(w in l.lower() for w in words)]
    check(hit, f"{what}: port {node.port} logged a message mentioning one of {words}; new log:\n{new[-2000:]}")
    print(f"  {what}: logged: {hit[0].strip()[:200]}", flush=True)


p = Primary().start()
r1 = Replica(p.port, "r1").start()
wait_streaming(p, 1)
c = Resp(p.port)
for i in range(500):
    c.call("SET", f"k:{i}", f"v{i}")
c.close()
srv = p.info("server")
system_id = int(srv.get("system_id", "0"))
tl = int(repl_info(p).get("timeline", "1"))
check(system_id != 0, f"INFO server has system_id: {srv}")
sysid_hex = f"{system_id:x}"
wrong_hex = f"{system_id ^ 0xDEADBEEF:x}"

# 1. wrong cluster id
at = p.log_size()
out, closed = raw_exchange(p.port, handshake(wrong_hex, "evil", tl, 0, "STREAM"))
check(is_rejection(out), f"wrong cluster id: expected an error, got {describe(out)}")
check(closed, "wrong cluster id: connection closed")
print(f"wrong cluster id -> {describe(out)}", flush=True)
logged(p, at, ["cluster", "system", "evil"], "wrong cluster id")
still_up(p, "wrong cluster id")

# 2. bad arguments
for args in [(), (sysid_hex,), (sysid_hex, "evil", "x", "0", "STREAM"), (sysid_hex, "evil", tl, "-5", "STREAM"),
             (sysid_hex, "evil", tl, 0, "SIDEWAYS"), ("zz-not-hex", "evil", tl, 0, "STREAM"),
             (sysid_hex, "", tl, 0, "STREAM"), (sysid_hex, "evil", 999, 0, "STREAM"),
             (sysid_hex, "evil", tl, 1 << 62, "STREAM")]:
    out, closed = raw_exchange(p.port, handshake(*args))
    check(is_rejection(out), f"REDOUBT.REPLICATE {args}: expected an error, got {describe(out)}")
    print(f"REDOUBT.REPLICATE {args} -> {describe(out)[:120]} closed={closed}", flush=True)
    still_up(p, f"bad args {args}")


# 3. a correct handshake, then garbage / corrupt frames
def after_hello(tail, what, name):
    off = int(repl_info(p).get("master_repl_offset", "0"))
    at = p.log_size()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    s.sendall(handshake(sysid_hex, name, tl, off, "STREAM"))
    got = b""
    deadline = time.time() + 5
    while len(got) < 32 and time.time() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    check(got[:4] == FRAME_MAGIC and got[5] == REPL_HELLO,
          f"{what}: a correct handshake is answered with REPL_HELLO, got {describe(got)}")
    s.sendall(tail)
    s.settimeout(3)
    closed = False
    rest = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            rest += chunk
    except socket.timeout:
        pass
    except OSError:
        closed = True
    s.close()
    check(closed, f"{what}: the primary closed the connection (got {len(rest)} bytes: {describe(rest)})")
    err = rest.find(FRAME_MAGIC + b"\x01" + bytes([REPL_ERROR]))
    print(f"{what}: closed; REPL_ERROR sent: {err >= 0}", flush=True)
    logged(p, at, ["frame", "corrupt", "checksum", "invalid", "magic", name, "protocol", "unexpected"], what)
    still_up(p, what)


after_hello(bytes(rng.randrange(256) for _ in range(4096)), "random garbage", "evil1")
after_hello(b"GET foo\r\n" * 10, "RESP after the handshake", "evil2")
after_hello(frame(REPL_STATUS, tl, bytes(56), good_checksum=False), "bad checksum", "evil3")
after_hello(frame(99, tl, b"hello"), "unknown frame type", "evil4")
after_hello(frame(REPL_STATUS, tl, bytes(13)), "STATUS of the wrong length", "evil5")
bad_hdr = bytearray(frame(REPL_STATUS, tl, bytes(56)))
bad_hdr[8:12] = struct.pack("<I", 0x7FFFFFFF)  # payload length beyond FRAME_MAX_PAYLOAD
after_hello(bytes(bad_hdr), "huge payload length", "evil6")
wait_for("the bad peers to leave the primary's replica list",
         lambda: [s.get("name") for s in repl_info(p)["slaves"]] == ["r1"], timeout=15)
wait_converged(p, [r1])
d = diff_dumps(dump(p.port), dump(r1.port), "primary", "r1")
check(not d, "r1 still converges after the bad peers:\n" + d)
print("primary up; r1 still streams and converges", flush=True)


# 4. A replica pointed at something that is not Redoubt.
class JunkServer:
    """Accepts connections; odd ones get random bytes, even ones a Redis-style error; then closes."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = False
        self.n = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.n += 1
            try:
                conn.settimeout(1)
                try:
                    conn.recv(4096)
                except socket.timeout:
                    pass
                if self.n % 2:
                    conn.sendall(bytes(random.randrange(256) for _ in range(2048)))
                else:
                    conn.sendall(b"-ERR unknown command 'REDOUBT.REPLICATE'\r\n")
                time.sleep(0.2)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.stop = True
        self.t.join(timeout=5)
        self.sock.close()


junk = JunkServer()
at = r1.log_size()
out = r1.cli("REPLICAOF", "127.0.0.1", junk.port)
check(out.strip() == "OK", f"REPLICAOF junk on r1: {out!r}")
wait_for("r1 to try the junk server twice", lambda: junk.n >= 2, timeout=30)
time.sleep(0.5)
check(r1.alive(), f"r1 stays up when its primary is not Redoubt:\n{r1.log()}")
logged(r1, at, ["not a redoubt", "handshake", "protocol", "invalid", "unexpected", "frame", "error"],
       "replica pointed at junk")
v = Resp(r1.port).call("GET", "k:7")
check(v == b"v7", f"r1 still serves reads while its primary is junk: GET k:7 -> {v!r}")
check(repl_info(r1).get("master_link_status") == "down", f"r1 link down: {repl_info(r1)}")
# an empty replica pointed at junk: cannot clone, must not crash
empty = Replica(junk.port, "r9")
empty.start(wait=False)
time.sleep(3)
print(f"empty replica pointed at junk: alive={empty.alive()}; log tail: "
      f"{empty.log().strip().splitlines()[-1:] if empty.log().strip() else '(none)'}", flush=True)
check(empty.alive() or empty.proc.returncode != 0, "an empty replica pointed at junk exits non-zero if it exits")
if empty.alive():
    empty.kill9()
out = r1.cli("REPLICAOF", "127.0.0.1", p.port)
check(out.strip() == "OK", f"REPLICAOF back to the primary: {out!r}")
r1.primary_port = p.port
wait_streaming(p, 1)
wait_converged(p, [r1])
junk.close()
print("r1 back on the primary", flush=True)

# 5. The old primary after a promotion.
out = r1.cli("REPLICAOF", "NO", "ONE")
check(out.strip() == "OK", f"promote r1: {out!r}")
wait_for("r1 to accept writes", lambda: Resp(r1.port, timeout=5).call("SET", "after:promote", "1") == "OK", 30)
check(int(repl_info(r1).get("timeline", "0")) > tl, f"r1 switched to a new timeline: {repl_info(r1)}")
# split brain: the old primary still takes a write of its own, then dies
check(Resp(p.port).call("SET", "diverged:only-on-old", "x") == "OK", "write on the old primary")
p.kill9()
old = as_primary(p, args=["--peers", f"127.0.0.1:{r1.port}"])
at = old.log_size()
old.start(wait=False)
try:
    rc = old.proc.wait(timeout=30)
except Exception:
    old.kill9()
    fail(f"the old primary with --peers of a newer timeline did not refuse to start:\n{old.log()}")
new_log = old.log_since(at)
check(rc != 0, f"old primary refused with a non-zero exit, got {rc}")
check("timeline" in new_log.lower(), f"old primary's refusal mentions the timeline:\n{new_log[-2000:]}")
print("old primary refused to start: " + next(l for l in new_log.splitlines() if "timeline" in l.lower()).strip(),
      flush=True)
back = as_replica(p, r1.port, "old")
at = back.log_size()
back.start()
wait_streaming(r1, 1)
wait_converged(r1, [back])
dr, db = dump(r1.port), dump(back.port)
d = diff_dumps(dr, db, "new primary", "old primary as replica")
check(not d, "the old primary rejoined with exactly the new primary's contents:\n" + d)
check(b"diverged:only-on-old" not in db, "the diverged write is gone")
print("old primary rejoined as a replica (" + ("re-cloned" if "clon" in back.log_since(at).lower() else "rejoined")
      + "), contents equal", flush=True)
for n in (back, r1):
    n.stop()
print(f"ok ({time.time() - t_start:.0f}s)")
