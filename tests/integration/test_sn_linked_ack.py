"""The ACK linked to the durable hot-log write (storage-node/README.md N19).

A storage node sends a writer's ACK as a send linked (IOSQE_IO_LINK) to the
O_DIRECT + RWF_DSYNC write of the records (N12). Two rules must survive that:

1. N5, no late ACK to an older epoch: while a linked ACK may still go out, a
   frame that raises the epoch waits. Checked black-box, 150 rounds: writer A
   (epoch E) sends a WRITE of new records; after a random 0-400 us, writer B
   sends EPOCH E+1 on another connection and gets STATE{epoch E+1, scl S}.
   Then A's answer is either an ACK of epoch E or STALE_EPOCH, and an ACK of
   epoch E must carry scl <= S: an ACK that went out after the node answered
   the new epoch would report records made durable after that answer (S is
   taken when the node answers). Next round A writes at E+1, B raises to E+2.
2. N1, a failed write is never acknowledged: with RD_FAULT=sn_fsync:K the Kth
   durable write really fails (it is submitted on a bad descriptor) and the
   kernel cancels the ACK send linked to it: writes 1..K-1 are acknowledged,
   the Kth never is, and the node exits 70 logging the failed write.

Also: INFO link_acks:on and linked_acks > 0 (the linked path ran), and with
REDOUBT_SN_LINK_ACK=0 the same writes are acknowledged the old way.
"""
import os
import random
import socket
import struct
import subprocess
import time

from harness import BIN, _procs, check, fail, free_port, info_dict, seed, tmpdir

STORAGE = os.path.join(BIN, "redoubt-storage")
rng = random.Random(seed())
WRITE, ACK, EPOCH, STATE, ERROR = 32, 33, 38, 39, 42
ERR_STALE = 1
REC_COMMIT, FLAG_CPL = 16, 1
SEED_FRAME = 0x46524D31

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402

_xx = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xx.XXH3_64bits_withSeed.restype = ctypes.c_uint64
_xx.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def frame(ftype, epoch, payload):
    hdr = b"RDF1" + struct.pack("<BBHIIQ", 1, ftype, 0, len(payload), len(payload), epoch)
    return hdr + struct.pack("<Q", _xx.XXH3_64bits_withSeed(hdr + payload, len(hdr + payload), SEED_FRAME)) + payload


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def batch(first, last):
    """Commit records only (no page): cheap to build, valid for the node."""
    out = bytearray(struct.pack("<QQIIQ", first, last, last - first + 1, 0, last))
    for lsn in range(first, last + 1):
        body = struct.pack("<Q", lsn)
        out += varint(1) + varint(1 if lsn > 1 else 0) + varint(0) + bytes([REC_COMMIT, FLAG_CPL])
        out += varint(len(body)) + body
    return bytes(out)


class Conn:
    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv_frame(self):
        while True:
            if len(self.buf) >= 32:
                ftype = self.buf[5]
                ln = struct.unpack_from("<I", self.buf, 8)[0]
                epoch = struct.unpack_from("<Q", self.buf, 16)[0]
                if len(self.buf) >= 32 + ln:
                    p = self.buf[32:32 + ln]
                    self.buf = self.buf[32 + ln:]
                    return ftype, epoch, p
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def call(self, ftype, epoch, payload):
        self.send(frame(ftype, epoch, payload))
        return self.recv_frame()

    def close(self):
        self.s.close()


class Node:
    def __init__(self, env=None):
        self.port = free_port()
        self.dir = os.path.join(tmpdir("redoubt-snla-"), "data")
        self.log_path = self.dir + ".log"
        self.env = dict(os.environ, **(env or {}))

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([STORAGE, "--dir", self.dir, "--port", str(self.port), "--id", "0", "--bind",
                                      "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        _procs.append(self.proc)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        fail(f"node did not answer PING:\n{self.log()}")

    def info(self):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "INFO"], capture_output=True,
                           text=True, timeout=20)
        check(r.returncode == 0, f"redis-cli INFO: {r.stderr}")
        return info_dict(r.stdout)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        check(self.proc.returncode == 0, f"exit status {self.proc.returncode} after SIGTERM:\n{self.log()[-2000:]}")


def state_of(reply):
    t, _, p = reply
    check(t == STATE, f"expected STATE, got type {t} {p[8:]!r}")
    return dict(zip(("epoch", "scl", "max_cpl", "max_lsn", "truncated_above"), struct.unpack("<5Q", p)))


# ---- 1. N5 with linked ACKs: an epoch raise never lets an older ACK out after its answer
node = Node().start()
inf = node.info()
check(inf.get("hotlog_io") == "direct" and inf.get("link_acks") == "on",
      f"the node must use O_DIRECT writes with linked ACKs here: {inf.get('hotlog_io')}, {inf.get('link_acks')}")
a, b = Conn(node.port), Conn(node.port)
epoch = 1
state_of(b.call(EPOCH, epoch, struct.pack("<Q", epoch)))
t, e, p = a.call(WRITE, epoch, batch(1, 4))
check(t == ACK and struct.unpack("<QQQ", p)[2] == epoch and struct.unpack("<QQQ", p)[0] == 4,
      f"first write acknowledged with scl 4 (type {t})")
check(int(node.info()["linked_acks"]) >= 1, "the ACK of a lone write went out linked to its write")
nxt = 5
acks = stale_n5 = stale_refused = 0
ROUNDS = 150
for rnd in range(ROUNDS):
    k = rng.randrange(1, 6)
    a.send(frame(WRITE, epoch, batch(nxt, nxt + k - 1)))
    delay = rng.random() * 0.0004
    if delay > 0.00005:
        time.sleep(delay)
    st = state_of(b.call(EPOCH, epoch + 1, struct.pack("<Q", epoch + 1)))
    check(st["epoch"] == epoch + 1, f"round {rnd}: STATE of the new epoch {epoch + 1}: {st}")
    t, fe, p = a.recv_frame()
    if t == ACK:
        scl, durable, ack_epoch = struct.unpack("<QQQ", p)
        check(ack_epoch == epoch, f"round {rnd}: an ACK to a write of epoch {epoch} says epoch {ack_epoch}")
        check(scl <= st["scl"],
              f"round {rnd}: N5 broken: an ACK of epoch {epoch} with scl {scl} went out after the node answered "
              f"epoch {epoch + 1} with scl {st['scl']}")
        acks += 1
        nxt += k
    elif t == ERROR:
        code = struct.unpack_from("<I", p)[0]
        text = p[8:].decode(errors="replace")
        check(code == ERR_STALE, f"round {rnd}: error {code} {text}")
        if "epoch changed before the write was acknowledged" in text:
            stale_n5 += 1  # stored, flushed, not acknowledged (N5's old path)
            nxt += k
        else:
            stale_refused += 1  # the EPOCH was processed first: nothing stored, write them again
    else:
        fail(f"round {rnd}: unexpected answer type {t}")
    epoch += 1
# every record stored is durable and counted: the SCL is exactly what was written
t, e, p = a.call(WRITE, epoch, batch(nxt, nxt))
scl = struct.unpack("<QQQ", p)[0] if t == ACK else -1
check(t == ACK and scl == nxt, f"final write acknowledged with scl {nxt} (type {t}, scl {scl})")
inf = node.info()
print(f"{ROUNDS} epoch raises racing writes: {acks} ACKs of the old epoch (each at or below the new epoch's SCL), "
      f"{stale_n5} STALE after the flush, {stale_refused} writes refused as stale; linked_acks "
      f"{inf['linked_acks']}, frames parked behind a linked ACK {inf['parked_frames']}", flush=True)
a.close()
b.close()
node.stop()

# ---- 2. the old path still works (A/B switch)
node = Node({"REDOUBT_SN_LINK_ACK": "0"}).start()
a = Conn(node.port)
state_of(a.call(EPOCH, 1, struct.pack("<Q", 1)))
for i in range(5):
    t, e, p = a.call(WRITE, 1, batch(1 + 3 * i, 3 + 3 * i))
    check(t == ACK and struct.unpack("<QQQ", p)[0] == 3 + 3 * i, f"unlinked ACK {i}")
inf = node.info()
check(inf["link_acks"] == "off" and int(inf["linked_acks"]) == 0, f"REDOUBT_SN_LINK_ACK=0: {inf['linked_acks']}")
a.close()
node.stop()
print("REDOUBT_SN_LINK_ACK=0: acknowledged after the write completes, as before", flush=True)

# ---- 3. N1: the failed write's linked ACK is cancelled by the kernel
K = rng.randrange(3, 12)
node = Node({"RD_FAULT": f"sn_fsync:{K}"}).start()
a = Conn(node.port)
state_of(a.call(EPOCH, 1, struct.pack("<Q", 1)))
for i in range(1, K):
    t, e, p = a.call(WRITE, 1, batch(i, i))
    check(t == ACK and struct.unpack("<QQQ", p)[0] == i, f"write {i} of {K - 1} before the fault acknowledged")
check(int(node.info()["linked_acks"]) >= K - 1, "those ACKs were linked to their writes")
a.send(frame(WRITE, 1, batch(K, K)))
try:
    t, e, p = a.recv_frame()
    fail(f"the write whose durable write failed got an answer of type {t}: {p!r}")
except (EOFError, ConnectionResetError):
    pass
rc = node.proc.wait(timeout=20)
check(rc == 70 and "could not fdatasync the hot log" in node.log(),
      f"the node must PANIC (exit 70) on the failed write, got {rc}:\n{node.log()[-2000:]}")
print(f"write {K} failed (RD_FAULT=sn_fsync:{K}): no ACK came, the node exited 70", flush=True)
print("ok")
