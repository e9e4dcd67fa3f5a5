"""Storage nodes (aurora mode): six real redoubt-storage processes on loopback
ports with --peers, driven by a small Python writer/reader speaking frames
(common/frame.h; XXH3-64 via ctypes on libxxhash, seed "FRM1") and redo
batches (redo/redo.h). Checks: ACK SCLs (out of order, duplicates), gap fill
for the two nodes the writer skips, kill -9 + restart (recovery, catch-up),
stale epochs refused after EPOCH, TRUNCATE, GETPAGE@LSN against pages built
here from PAGE_IMAGE records, corruption of the hot log and of the page store
detected and never served, INFO through redis-cli, a bad frame checksum closes
the connection with a clear log line.
"""
import ctypes
import ctypes.util
import os
import random
import signal
import socket
import struct
import subprocess
import time

from harness import BIN, _procs, check, fail, free_port, info_dict, seed, tmpdir, wait_for

STORAGE = os.path.join(BIN, "redoubt-storage")
rng = random.Random(seed())
T0 = time.time()

SEED_FRAME = 0x46524D31
SEED_PAGE = 0x5041474531
WRITE, ACK, GETPAGE, PAGE, FETCH, LOG, EPOCH, STATE, TRUNCATE, READPOINT, ERROR = range(32, 43)
ERR_STALE, ERR_NOT_YET, ERR_TOO_OLD, ERR_CORRUPT = 1, 2, 3, 4
PAGE_SIZE = 8192
REC_IMAGE, REC_COMMIT, FLAG_CPL = 2, 16, 1

_xx = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xx.XXH3_64bits_withSeed.restype = ctypes.c_uint64
_xx.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def xxh(data, s):
    return _xx.XXH3_64bits_withSeed(data, len(data), s)


def frame(ftype, epoch, payload, good=True):
    hdr = b"RDF1" + struct.pack("<BBHIIQ", 1, ftype, 0, len(payload), len(payload), epoch)
    cs = xxh(hdr + payload, SEED_FRAME)
    if not good:
        cs ^= 0x5A5A
    return hdr + struct.pack("<Q", cs) + payload


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


# ---- records: every page change is a PAGE_IMAGE, so the expected page is known here
def image_body(page_id, lsn):
    """A page image whose content depends on (page, lsn): lower=64, upper=8000."""
    lower, upper = 64, 8000
    r = random.Random(page_id * 1000003 + lsn)
    head = bytes(r.getrandbits(8) for _ in range(lower - 16))
    tail = bytes(r.getrandbits(8) for _ in range(PAGE_SIZE - upper))
    return struct.pack("<HH", lower, upper) + head + tail


def page_of(page_id, lsn):
    """The page a node must return after applying image_body(page_id, lsn) (bytes [8:])."""
    body = image_body(page_id, lsn)
    lower, upper = struct.unpack_from("<HH", body)
    p = bytearray(PAGE_SIZE)
    p[16:lower] = body[4:4 + lower - 16]
    p[upper:] = body[4 + lower - 16:]
    struct.pack_into("<Q", p, 8, lsn)
    struct.pack_into("<Q", p, 0, xxh(bytes(p[8:]), SEED_PAGE))
    return bytes(p)


NPAGES = 8


def rec_for(lsn):
    """LSN -> (page_id or None for a commit, type, flags, body). Deterministic."""
    if lsn % 5 == 0:
        return None, REC_COMMIT, FLAG_CPL, struct.pack("<Q", lsn)
    return (lsn * 7) % NPAGES, REC_IMAGE, 0, image_body((lsn * 7) % NPAGES, lsn)


def batch(first, last, vdl=None):
    out = bytearray(struct.pack("<QQIIQ", first, last, last - first + 1, 0, last if vdl is None else vdl))
    for lsn in range(first, last + 1):
        page, typ, flags, body = rec_for(lsn)
        out += varint(1) + varint(1 if lsn > 1 else 0) + varint(0 if page is None else page + 1)
        out += bytes([typ, flags]) + varint(len(body)) + body
    return bytes(out)


def expected_page(page_id, read_lsn, base=1):
    """Newest image of page_id with lsn <= read_lsn (all records are images)."""
    for lsn in range(read_lsn, 0, -1):
        pg, _, _, _ = rec_for(lsn)
        if pg == page_id:
            return lsn, page_of(page_id, lsn)
    return 0, bytes(PAGE_SIZE)


# ---- client
class Conn:
    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
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


def ack_of(reply, what):
    t, _, p = reply
    if t == ERROR:
        fail(f"{what}: ERROR {struct.unpack_from('<I', p)[0]} {p[8:]!r}")
    check(t == ACK, f"{what}: expected ACK, got type {t}")
    return struct.unpack("<QQQ", p)


def state_of(reply):
    t, _, p = reply
    check(t == STATE, f"expected STATE, got type {t} {p[8:]!r}")
    return dict(zip(("epoch", "scl", "max_cpl", "max_lsn", "truncated_above"), struct.unpack("<5Q", p)))


def getpage(port, page_id, read_lsn, epoch=1):
    c = Conn(port)
    t, _, p = c.call(GETPAGE, epoch, struct.pack("<QIIQ", 77, page_id, 0, read_lsn))
    c.close()
    check(t == PAGE, f"GETPAGE answered type {t}")
    req, status, _, lsn = struct.unpack_from("<QIIQ", p)
    check(req == 77, "GETPAGE req_id echoed")
    return status, lsn, p[24:]


# ---- processes
class Node:
    def __init__(self, idx, port, peers, args=()):
        self.idx, self.port, self.peers, self.args = idx, port, peers, list(args)
        self.dir = os.path.join(tmpdir("redoubt-sn-"), "data")
        self.log_path = self.dir + ".log"
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        cmd = [STORAGE, "--dir", self.dir, "--port", str(self.port), "--id", str(self.idx),
               "--bind", "127.0.0.1", "--peers", ",".join(f"127.0.0.1:{p}" for p in self.peers)] + self.args
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _procs.append(self.proc)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"node {self.idx} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        fail(f"node {self.idx} did not answer PING:\n{self.log()}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail(f"node {self.idx} did not stop on SIGTERM")
        check(self.proc.returncode == 0, f"node {self.idx} exit status {self.proc.returncode} after SIGTERM")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def info(self):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "INFO"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 0, f"redis-cli INFO on node {self.idx}: {r.stderr}")
        return info_dict(r.stdout)


def wait_scl(node, want, timeout=20, what=""):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = node.info()
        if int(last["scl"]) >= want:
            return last
        time.sleep(0.1)
    fail(f"{what}: node {node.idx} scl {last and last.get('scl')} did not reach {want} in {timeout}s:\n"
         f"{node.log()[-3000:]}")


ports = [free_port() for _ in range(6)]
nodes = [Node(i, ports[i], [p for p in ports if p != ports[i]]) for i in range(6)]
for n in nodes:
    n.start()
print(f"6 storage nodes up on {ports}", flush=True)

# ---- 1. writes to 4 of 6: ACK after flush with the SCL; out of order; duplicates
EPOCH1 = 1
w = [Conn(nodes[i].port) for i in range(4)]
for first in range(1, 201, 20):
    for i, c in enumerate(w):
        scl, durable, ep = ack_of(c.call(WRITE, EPOCH1, batch(first, first + 19)), f"write {first} to node {i}")
        check(scl == first + 19 and durable == first + 19, f"node {i}: ACK scl {scl} durable {durable} after {first + 19}")
        check(ep == EPOCH1, "ACK carries the node's epoch")
print("ok: ACKs carry SCL = last LSN on 4 nodes", flush=True)

c = w[0]
scl, durable, _ = ack_of(c.call(WRITE, EPOCH1, batch(221, 240)), "out of order")
check(scl == 200 and durable == 240, f"a gap: SCL must stay at 200 (got {scl}), durable 240 (got {durable})")
scl, durable, _ = ack_of(c.call(WRITE, EPOCH1, batch(201, 220)), "gap filled")
check(scl == 240, f"gap closed: SCL 240 (got {scl})")
scl, _, _ = ack_of(c.call(WRITE, EPOCH1, batch(201, 240)), "duplicate")
check(scl == 240, "duplicates: SCL unchanged")
check(int(nodes[0].info()["records"]) == 240, "each LSN stored once")
for i in range(1, 4):
    ack_of(w[i].call(WRITE, EPOCH1, batch(201, 240)), f"node {i} 201..240")
print("ok: out-of-order arrival keeps SCL below the gap; duplicates stored once", flush=True)

# ---- 2. the two skipped nodes catch up by gap fill
for i in (4, 5):
    inf = wait_scl(nodes[i], 240, what="gap fill")
    check(int(inf["gaps_filled"]) >= 240, f"node {i} gaps_filled {inf['gaps_filled']}")
print(f"ok: nodes 4 and 5 caught up by gap fill ({time.time() - T0:.1f}s)", flush=True)

# ---- 3. GETPAGE at LSN, on a gap-filled node
for read_lsn in (1, 37, 100, 199, 240):
    for pg in range(NPAGES):
        status, lsn, body = getpage(nodes[5].port, pg, read_lsn)
        want_lsn, want = expected_page(pg, read_lsn)
        check(status == 0, f"GETPAGE {pg}@{read_lsn}: status {status}")
        check(lsn == want_lsn, f"GETPAGE {pg}@{read_lsn}: page_lsn {lsn}, want {want_lsn}")
        check(body == want, f"GETPAGE {pg}@{read_lsn}: wrong page bytes")
status, _, _ = getpage(nodes[5].port, 1, 10 ** 6)
check(status == ERR_NOT_YET, f"GETPAGE above SCL: NOT_YET (got {status})")
status, lsn, body = getpage(nodes[5].port, 4000, 100)
check(status == 0 and lsn == 0 and body == bytes(PAGE_SIZE), "a page never written is all zeros, lsn 0")
print("ok: GETPAGE@LSN returns the page as of that LSN; NOT_YET above SCL", flush=True)

# ---- 4. kill -9 and restart: recovers from the hot log, catches up
nodes[1].kill9()
w[1].close()
for i in (0, 2, 3):
    ack_of(w[i].call(WRITE, EPOCH1, batch(241, 300)), f"node {i} 241..300")
nodes[1].start()
inf = nodes[1].info()
check(int(inf["scl"]) >= 240, f"restarted node recovered SCL {inf['scl']} >= 240 from its hot log")
wait_scl(nodes[1], 300, what="catch-up after restart")
for i in (4, 5):
    wait_scl(nodes[i], 300, what="gap fill 241..300")
status, lsn, body = getpage(nodes[1].port, 3, 300)
want_lsn, want = expected_page(3, 300)
check(status == 0 and lsn == want_lsn and body == want, "restarted node serves the right page")
w[1] = Conn(nodes[1].port)
print(f"ok: kill -9 + restart recovered and caught up ({time.time() - T0:.1f}s)", flush=True)

# ---- 5. a bad frame checksum closes the connection with a clear log line
bad = Conn(nodes[2].port)
bad.send(frame(WRITE, EPOCH1, batch(301, 301), good=False))
try:
    bad.recv_frame()
    fail("a frame with a bad checksum was answered")
except (EOFError, ConnectionResetError, socket.timeout):
    pass
bad.close()
time.sleep(0.2)
check("failed its checksum; closing" in nodes[2].log(), "bad checksum logged")
print("ok: bad frame checksum: connection closed, logged", flush=True)

# ---- 6. epochs: EPOCH persists a higher epoch; older writes refused; restart keeps it
EPOCH2 = 5
for i in range(6):
    c = Conn(nodes[i].port)
    st = state_of(c.call(EPOCH, EPOCH2, struct.pack("<Q", EPOCH2)))
    check(st["epoch"] == EPOCH2 and st["scl"] == 300, f"node {i} STATE after EPOCH: {st}")
    c.close()
t, _, p = w[0].call(WRITE, EPOCH1, batch(301, 310))
check(t == ERROR and struct.unpack_from("<I", p)[0] == ERR_STALE, f"stale write refused (type {t})")
check(int(nodes[0].info()["scl"]) == 300, "nothing stored from the stale writer")
check("refusing a write from epoch 1: this node holds epoch 5" in nodes[0].log(), "stale refusal logged")
nodes[0].kill9()
nodes[0].start()
check(int(nodes[0].info()["epoch"]) == EPOCH2, "epoch survives kill -9")
w[0] = Conn(nodes[0].port)
t, _, _ = w[0].call(WRITE, EPOCH1, batch(301, 310))
check(t == ERROR, "stale write refused after restart")
for i in range(4):
    scl, _, ep = ack_of(w[i].call(WRITE, EPOCH2, batch(301, 320)), f"epoch {EPOCH2} write node {i}")
    check(scl == 320 and ep == EPOCH2, f"node {i} ack {scl} {ep}")
print("ok: stale epochs refused (also after kill -9), new epoch accepted", flush=True)

# ---- 7. READPOINT: coalesce into the page store; older reads TOO_OLD
for i in range(6):
    wait_scl(nodes[i], 320, what="before read point")
    c = Conn(nodes[i].port)
    c.send(frame(READPOINT, EPOCH2, struct.pack("<Q", 250)))
    c.close()
for i in range(6):
    deadline = time.time() + 10
    while int(nodes[i].info()["coalesced_lsn"]) < 250:
        check(time.time() < deadline, f"node {i} coalesced to the read point: {nodes[i].info()}")
        time.sleep(0.1)
status, _, _ = getpage(nodes[4].port, 2, 100)
check(status == ERR_TOO_OLD, f"GETPAGE below the GC'd history: TOO_OLD (got {status})")
for read_lsn in (250, 260, 320):
    for pg in range(NPAGES):
        status, lsn, body = getpage(nodes[4].port, pg, read_lsn)
        want_lsn, want = expected_page(pg, read_lsn)
        check(status == 0 and lsn == want_lsn and body == want, f"coalesced GETPAGE {pg}@{read_lsn}: {status} {lsn}")
print("ok: coalesced to the read point; history below it answers TOO_OLD", flush=True)

# ---- 8. corruption: hot log and page store of stopped nodes
nodes[2].stop()
hl = os.path.join(nodes[2].dir, "hotlog")
size = os.path.getsize(hl)
with open(hl, "r+b") as f:
    f.seek(size // 2)
    b = f.read(1)
    f.seek(size // 2)
    f.write(bytes([b[0] ^ 0x40]))
nodes[2].start()
inf = nodes[2].info()
check(int(inf["corrupt_detected"]) >= 1, f"hot-log corruption detected: {inf}")
check("hot log" in nodes[2].log() and "corrupt" in nodes[2].log(), "hot-log corruption logged")
inf = wait_scl(nodes[2], 320, what="refetch after hot-log corruption")
check(int(inf["repaired"]) > 0, f"records refetched after the corruption counted as repaired: {inf}")
for pg in range(NPAGES):
    status, lsn, body = getpage(nodes[2].port, pg, 320)
    want_lsn, want = expected_page(pg, 320)
    check(status == 0 and lsn == want_lsn and body == want, f"after hot-log repair GETPAGE {pg}@320")
print("ok: hot-log corruption detected, refetched from peers, pages right", flush=True)

nodes[3].stop()
pages = os.path.join(nodes[3].dir, "pages")
with open(pages, "r+b") as f:
    f.seek(5 * PAGE_SIZE + 100)
    b = f.read(1)
    f.seek(5 * PAGE_SIZE + 100)
    f.write(bytes([b[0] ^ 0x01]))
nodes[3].start()
inf = nodes[3].info()
check(int(inf["corrupt_detected"]) >= 1, f"page-store corruption detected: {inf}")
status, lsn, body = getpage(nodes[3].port, 5, 320)
want_lsn, want = expected_page(5, 320)
check(status in (0, ERR_CORRUPT), f"corrupt page: served right or CORRUPT (got {status})")
if status == 0:
    check(lsn == want_lsn and body == want, "a repaired page has the right bytes")
print(f"ok: page-store corruption detected (status {status}, repaired {inf['repaired']})", flush=True)

# ---- 9. TRUNCATE: records above the point dropped; old-epoch copies never come back
EPOCH3 = 7
c = Conn(nodes[5].port)
st = state_of(c.call(TRUNCATE, EPOCH3, struct.pack("<QQ", EPOCH3, 310)))
check(st["scl"] == 310 and st["truncated_above"] == 310 and st["epoch"] == EPOCH3, f"STATE after TRUNCATE: {st}")
time.sleep(1.0)  # several gap-fill rounds: peers still hold 311..320 from epoch 5
check(int(nodes[5].info()["scl"]) == 310, "truncated records from an older epoch are refused by gap fill")
scl, _, _ = ack_of(c.call(WRITE, EPOCH3, batch(311, 315)), "new-epoch write above the truncation")
check(scl == 315, f"new-epoch records accepted above the truncation point (scl {scl})")
c.close()
nodes[5].kill9()
nodes[5].start()
inf = nodes[5].info()
check(int(inf["scl"]) == 315 and int(inf["epoch"]) == EPOCH3, f"truncation survives restart: {inf}")
print("ok: TRUNCATE persists, refuses old-epoch records, accepts new ones", flush=True)

# ---- 10. INFO fields, clean SIGTERM
inf = nodes[0].info()
for k in ("role", "node_id", "epoch", "scl", "durable_lsn", "hot_log_bytes", "coalesced_lsn", "min_read_point",
          "gaps_filled", "records", "pages", "getpage_requests", "corrupt_detected", "repaired"):
    check(k in inf, f"INFO has {k}")
check(inf["role"] == "storage", "role:storage")
for c in w:
    c.close()
for n in nodes:
    n.stop()


# ---- 11. bounded hot log: 1 MiB segments, READPOINT advancing, sustained writes
def big_body(page_id, lsn):
    """A half-page image (~8 KiB record), cheap to build and to check."""
    head = struct.pack("<QI", lsn, page_id) + bytes([lsn % 251]) * (4096 - 16 - 12)
    return struct.pack("<HH", 4096, 4096) + head + bytes([(lsn * 3) % 251]) * 4096


def big_page(page_id, lsn):
    body = big_body(page_id, lsn)
    p = bytearray(PAGE_SIZE)
    p[16:4096] = body[4:4096 - 12]
    p[4096:] = body[4096 - 12:]
    struct.pack_into("<Q", p, 8, lsn)
    struct.pack_into("<Q", p, 0, xxh(bytes(p[8:]), SEED_PAGE))
    return bytes(p)


BIGPAGES = 16


def big_rec(lsn):
    if lsn % 10 == 0:
        return None, REC_COMMIT, FLAG_CPL, struct.pack("<Q", lsn)
    return lsn % BIGPAGES, REC_IMAGE, 0, big_body(lsn % BIGPAGES, lsn)


def big_batch(first, last):
    out = bytearray(struct.pack("<QQIIQ", first, last, last - first + 1, 0, last))
    for lsn in range(first, last + 1):
        page, typ, flags, body = big_rec(lsn)
        out += varint(1) + varint(1 if lsn > 1 else 0) + varint(0 if page is None else page + 1)
        out += bytes([typ, flags]) + varint(len(body)) + body
    return bytes(out)


def big_expected(page_id, read_lsn):
    for lsn in range(read_lsn, 0, -1):
        if lsn % 10 and lsn % BIGPAGES == page_id:
            return lsn, big_page(page_id, lsn)
    return 0, bytes(PAGE_SIZE)


def seg_files(n):
    return sorted(f for f in os.listdir(n.dir) if f.startswith("hotlog"))


tports = [free_port() for _ in range(3)]
# trimming is on by default; --hotlog-keep-mb 8: past 8 MiB a node stops waiting for a lagging peer
tn = [Node(i, tports[i], [p for p in tports if p != tports[i]], ["--hotlog-segment-mb", "1", "--hotlog-keep-mb", "8"])
      for i in range(3)]
for n in tn:
    n.start()
tw = {n.idx: Conn(n.port) for n in tn}
last = 0
max_bytes = 0


def write_round(targets, count, rp_lag):
    """Writes count records in batches of 50 to targets; READPOINT = last - rp_lag (None: unchanged)."""
    global last, max_bytes
    for _ in range(count // 50):
        b = big_batch(last + 1, last + 50)
        for n in targets:
            scl, _, _ = ack_of(tw[n.idx].call(WRITE, 1, b), f"bounded: write {last + 1} to node {n.idx}")
            check(scl == last + 50, f"bounded: node {n.idx} ACK scl {scl}, want {last + 50}")
        last += 50
        if rp_lag is not None:
            for n in targets:
                tw[n.idx].send(frame(READPOINT, 1, struct.pack("<Q", max(1, last - rp_lag))))
        if last % 500 == 0:
            for n in targets:
                max_bytes = max(max_bytes, int(n.info()["hot_log_bytes"]))


write_round(tn, 6000, 200)  # ~48 MiB per node
# Coalescing (and so trimming) runs every second or after 8 MiB of hot log (SN_COALESCE_*): wait for
# the last round instead of a fixed sleep.
wait_for("every node to coalesce and trim its hot log", lambda: all(len(seg_files(n)) <= 8 for n in tn),
         timeout=20, interval=0.2)
for n in tn:
    inf = n.info()
    max_bytes = max(max_bytes, int(inf["hot_log_bytes"]))
    check(int(inf["segments_deleted"]) >= 10, f"node {n.idx}: old segments deleted: {inf}")
    check(len(seg_files(n)) <= 8, f"node {n.idx}: few segment files left: {seg_files(n)}")
    check(int(inf["hot_log_first_segment"]) > 0 and int(inf["records"]) < 1500,
          f"node {n.idx}: trimmed records left memory too: {inf}")
# The hot log holds what arrived since the last coalesce round (a round runs every second or after
# SN_COALESCE_DUE_BYTES = 8 MiB), plus the read point's lag and a segment: bounded well below what
# was written.
check(max_bytes <= 20 << 20, f"hot log bounded under sustained writes: max {max_bytes} bytes for ~48 MiB written")
print(f"ok: hot log bounded: {last} records (~{last * 8 // 1024} MiB) written, at most {max_bytes} bytes held, "
      f"{seg_files(tn[0])} left on node 0", flush=True)

# kill -9 a node; the others keep its missing records although the read point moves on (its SCL, learned
# by gossip, holds their trimming back; ~3 MiB is within --hotlog-keep-mb); restart: it recovers from its
# trimmed segments and catches up by gap fill
scl_c = int(tn[2].info()["scl"])
tn[2].kill9()
write_round(tn[:2], 400, 200)
for n in tn[:2]:
    # coalescing runs every 1 s (or per 2 MiB): until it passes scl_c the coalesced point holds the
    # trim point; then the dead peer's scl must. Never trimmed past it meanwhile.
    deadline = time.time() + 5
    while True:
        inf = n.info()
        check(int(inf["hot_log_trimmed_lsn"]) <= scl_c,
              f"node {n.idx} trimmed past the dead node's scl {scl_c}: {inf['hot_log_trimmed_lsn']}")
        ok = f":{tn[2].port}" in inf["hotlog_trim_held_by"] and int(inf["hotlog_trim_point"]) == scl_c
        if ok or time.time() > deadline:
            break
        time.sleep(0.1)
    check(ok, f"node {n.idx} waits for the dead node's scl {scl_c}: trimmed {inf['hot_log_trimmed_lsn']}, "
          f"point {inf['hotlog_trim_point']} held by {inf['hotlog_trim_held_by']}")
print(f"ok: trimming waits for a dead peer's scl {scl_c} ({tn[0].info()['hotlog_trim_held_by']})", flush=True)
tn[2].start()
inf = tn[2].info()
check(int(inf["scl"]) >= scl_c and int(inf["hot_log_first_segment"]) > 0,
      f"restarted node recovered scl {inf['scl']} >= {scl_c} from trimmed segments: {inf}")
tw[2] = Conn(tn[2].port)
wait_scl(tn[2], last, what="catch-up after restart with a trimmed hot log")
for pg in range(BIGPAGES):
    status, lsn, body = getpage(tn[2].port, pg, last)
    want_lsn, want = big_expected(pg, last)
    check(status == 0 and lsn == want_lsn and body == want, f"after restart GETPAGE {pg}@{last}: {status} {lsn}")
write_round(tn, 500, 200)
print(f"ok: kill -9 + restart with trimmed segments recovered scl {inf['scl']} and caught up to {last}", flush=True)

# past --hotlog-keep-mb the others give up on a dead node (logged) and trim past its SCL; when it returns it
# finds every peer trimmed what it needs, says so, and catches up by copying a peer's page store
scl_c = int(tn[2].info()["scl"])
tn[2].kill9()
at0 = [len(n.log()) for n in tn[:2]]
write_round(tn[:2], 1500, 100)
deadline = time.time() + 10
while not all(int(n.info()["hot_log_trimmed_lsn"]) > scl_c + 1 for n in tn[:2]):
    check(time.time() < deadline, f"peers trimmed past {scl_c} beyond --hotlog-keep-mb: {[n.info() for n in tn[:2]]}")
    time.sleep(0.1)
for n, a in zip(tn[:2], at0):
    inf = n.info()
    check(int(inf["trim_gave_up"]) >= 1 and int(inf["peers_given_up"]) == 1, f"node {n.idx} gave up: {inf}")
    check("giving up on it" in n.log()[a:] and f":{tn[2].port}" in n.log()[a:], f"node {n.idx} logs the give-up")
    check(int(inf["hot_log_bytes"]) <= 12 << 20, f"node {n.idx} holds about --hotlog-keep-mb: {inf['hot_log_bytes']}")
at = len(tn[2].log())
tn[2].start()
inf = wait_scl(tn[2], last, what="catch-up by page copy")
check(int(inf["page_copies"]) >= 1 and int(inf["pages_copied"]) >= 1, f"caught up by a page copy: {inf}")
copied = int(inf["pages_copied"])
lg = tn[2].log()[at:]
check("cannot catch up" in lg and "page copy from peer" in lg and "done" in lg, f"page copy logged:\n{lg[-2000:]}")
for pg in range(BIGPAGES):
    status, lsn, body = getpage(tn[2].port, pg, last)
    want_lsn, want = big_expected(pg, last)
    check(status == 0 and lsn == want_lsn and body == want, f"after page copy GETPAGE {pg}@{last}: {status} {lsn}")
tw[2] = Conn(tn[2].port)
write_round(tn, 300, 100)
deadline = time.time() + 10
while any(int(n.info()["peers_given_up"]) for n in tn[:2]):
    check(time.time() < deadline, f"peers wait for the copied node again: {[n.info() for n in tn[:2]]}")
    time.sleep(0.1)
# a restart right after the copy (its hot log never held the copied lsns) starts at the copied point
tn[2].kill9()
tn[2].start()
inf = tn[2].info()
check(int(inf["scl"]) >= int(inf["coalesced_lsn"]) > scl_c, f"restart after a page copy: {inf}")
wait_scl(tn[2], last, what="after restart following a page copy")
print(f"ok: past --hotlog-keep-mb peers gave up on a dead node; it caught up by page copy "
      f"({copied} pages) and the peers wait for it again", flush=True)

# redoubt-dump reads the segments of a trimmed node like the node does
inf = tn[0].info()
tn[0].stop()
r = subprocess.run([os.path.join(BIN, "redoubt-dump"), "sn-hotlog", tn[0].dir], capture_output=True, text=True,
                   timeout=60)
check(r.returncode == 0, f"sn-hotlog on a trimmed node: rc {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr}")
import re
m = re.search(r"recovered at restart: (\d+) records, scl (\d+)", r.stdout)
check(m and int(m.group(2)) == int(inf["scl"]) and int(m.group(1)) == int(inf["records"]),
      f"sn-hotlog recovers scl {inf['scl']}, {inf['records']} records:\n{r.stdout[-800:]}")
check("older segments were trimmed" in r.stdout, "sn-hotlog says older segments were trimmed")
tn[0].start()
check(int(tn[0].info()["scl"]) == int(inf["scl"]), "restart of a trimmed node recovers the same scl")
for c in tw.values():
    c.close()
for n in tn:
    n.stop()
print(f"storage node tests passed in {time.time() - T0:.1f}s", flush=True)
