"""history.py — client workers that record a history, and the checker.

Workers (threads of the test process) run a mix of operations, each recorded with its
invocation and response times (time.monotonic), the node and connection that served it, and
its outcome:
  ok    acknowledged (a +OK, an integer, a bulk reply)
  fail  a definite refusal: the write did not happen (READONLY, NOLEASE, LOADING, the fenced
        aurora writer's refusal, too many clients)
  info  indeterminate: -TIMEOUT commit outcome unknown, any other error, a connection lost or a
        reply that never came (socket timeout). The write may or may not have happened.

Keys (per schedule namespace NS):
  NS:u:W:N   unique keys, written once (SET, value unique)
  NS:r:I     registers: SET with globally unique values, GET
  NS:c:I     counters: INCR, GET

Invariants checked (check()):
  1 every acknowledged unique-key SET is on the final writer with its value (else: LOST);
    a definitely failed one is absent; an indeterminate one is absent or has its value;
  2 observed => durable: a value any client read (on a writer, replica or reader) is never
    lost: unique keys read must be on the final writer, a counter never ends below a value read,
    a register never ends on a write that precedes (in real time) a write whose value was read;
  3 registers, linearizability of writer reads (per key): a read returns nil or the value of a
    write that was invoked before the read returned and was not refused; no acknowledged write
    that follows the read's write in real time completed before the read began (stale read);
    the final value is not overwritten-in-real-time by an acknowledged write (lost overwrite);
  4 counters: acknowledged INCR results are distinct, increase in real time order, and the
    final value lies in [acked, acked + indeterminate] and >= every acked result;
  5 no connection goes backwards: on one connection, a later read never returns a register
    value that precedes (in real time) the value of an earlier read, nor a smaller counter;
  6 (checked by run.py) followers converge to the writer's state for every key of the schedule,
    and the cluster accepts a write within 5 s of the heal.
"""
import random
import threading
import time

from cluster import CLUSTER_NAME, Resp, RespError

DEFINITE = ("READONLY", "NOLEASE", "LOADING", "ERR this writer was fenced", "ERR max number of clients")
NIL = None


def now():
    return time.monotonic()


class Op:
    __slots__ = ("wid", "conn", "node", "kind", "key", "arg", "t_inv", "t_ret", "status", "result")

    def __init__(self, wid, conn, node, kind, key, arg, t_inv):
        self.wid, self.conn, self.node, self.kind, self.key, self.arg = wid, conn, node, kind, key, arg
        self.t_inv, self.t_ret, self.status, self.result = t_inv, None, None, None

    def __repr__(self):
        r = self.result
        if isinstance(r, bytes):
            r = r.decode(errors="replace")
        tr = "-" if self.t_ret is None else "%.3f" % self.t_ret
        return f"[w{self.wid} c{self.conn} {self.node}] {self.kind} {self.key} {self.arg or ''} " \
               f"inv={self.t_inv:.3f} ret={tr} {self.status} {r!r}"


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.recent_unique = []  # unique keys written (for reads of others' keys)
        self.nconn = 0
        self.follower_conns = set()  # connections served by a replica/reader (reads may be stale)

    def add(self, op):
        with self.lock:
            self.ops.append(op)

    def new_conn(self):
        with self.lock:
            self.nconn += 1
            return self.nconn


class Worker(threading.Thread):
    """kind: 'discover' (writer via SENTINEL, through the proxy), 'pinned' (one node's real port:
    keeps writing to an old writer after a failover) or 'follower' (reads only, one node)."""

    def __init__(self, wid, kind, cl, hist, ns, rng, stop, node=None, nregs=4, ncounters=2, timeout=3.0):
        super().__init__(daemon=True)
        self.wid, self.kind, self.cl, self.hist, self.ns, self.rng, self.stop_ev = wid, kind, cl, hist, ns, rng, stop
        self.node = node
        self.nregs, self.ncounters, self.timeout = nregs, ncounters, timeout
        self.c = None
        self.conn = 0
        self.cnode = None
        self.seq = 0

    def connect(self):
        if self.kind == "discover":
            mons = [m for m in self.cl.monitors if m.alive() and not m.paused]
            self.rng.shuffle(mons)
            port = None
            for m in mons:
                try:
                    c = Resp(m.port, timeout=1.0)
                    try:
                        r = c.call("SENTINEL", "get-master-addr-by-name", CLUSTER_NAME)
                    finally:
                        c.close()
                    if isinstance(r, list) and r[1] is not None:
                        port = int(r[1])
                        break
                except (OSError, ConnectionError, ValueError):
                    continue
            if port is None:
                return False
            n = self.cl.by_pport(port)
            self.cnode = n.name if n else str(port)
        else:
            port = self.node.port
            self.cnode = self.node.name
        try:
            self.c = Resp(port, timeout=self.timeout)
        except OSError:
            self.c = None
            return False
        self.conn = self.hist.new_conn()
        follower = self.kind == "follower"
        if self.kind == "pinned":  # the pinned node may have come back as a replica/reader
            try:
                r = self.c.call("INFO", "replication")
                follower = isinstance(r, bytes) and any(
                    x in r for x in (b"redoubt_role:replica", b"redoubt_role:reader"))
            except (OSError, ConnectionError, ValueError):
                self.drop()
                return False
        if follower:
            with self.hist.lock:
                self.hist.follower_conns.add(self.conn)
        return True

    def drop(self):
        if self.c:
            self.c.close()
        self.c = None

    def pick(self):
        r = self.rng.random()
        ns = self.ns
        if self.kind == "follower":
            if r < 0.5:
                return "get", f"{ns}:c:{self.rng.randrange(self.ncounters)}", None
            if r < 0.8:
                return "get", f"{ns}:r:{self.rng.randrange(self.nregs)}", None
            return self.unique_read()
        if r < 0.35:
            self.seq += 1
            return "set", f"{ns}:u:{self.wid}:{self.seq}", f"v{self.wid}.{self.seq}"
        if r < 0.55:
            self.seq += 1
            return "set", f"{ns}:r:{self.rng.randrange(self.nregs)}", f"w{self.wid}.{self.seq}"
        if r < 0.75:
            return "get", f"{ns}:r:{self.rng.randrange(self.nregs)}", None
        if r < 0.90:
            return "incr", f"{ns}:c:{self.rng.randrange(self.ncounters)}", None
        if r < 0.95:
            return "get", f"{ns}:c:{self.rng.randrange(self.ncounters)}", None
        return self.unique_read()

    def unique_read(self):
        with self.hist.lock:
            ks = self.hist.recent_unique[-50:]
        if not ks:
            return "get", f"{self.ns}:r:0", None
        return "get", self.rng.choice(ks), None

    def run(self):
        while not self.stop_ev.is_set():
            if self.c is None and not self.connect():
                time.sleep(0.05)
                continue
            kind, key, arg = self.pick()
            op = Op(self.wid, self.conn, self.cnode, kind, key, arg, now())
            if kind == "set" and ":u:" in key:
                with self.hist.lock:
                    self.hist.recent_unique.append(key)
            try:
                if kind == "set":
                    r = self.c.call("SET", key, arg)
                elif kind == "incr":
                    r = self.c.call("INCR", key)
                else:
                    r = self.c.call("GET", key)
                op.t_ret = now()
                if isinstance(r, RespError):
                    op.result = str(r)
                    op.status = "fail" if str(r).startswith(DEFINITE) else "info"
                else:
                    op.result = r
                    op.status = "ok"
                    if kind == "set" and r != "OK":
                        op.status = "info"
            except (OSError, ConnectionError, ValueError) as e:
                op.status, op.result = "info", "conn: %s" % e.__class__.__name__
                self.drop()
            self.hist.add(op)
            time.sleep(0.01 if self.kind == "follower" else 0.002)
            if op.status != "ok":
                # a failover or a refusal: find the writer again (pinned: same node)
                self.drop()
                time.sleep(0.02)


# ---------------------------------------------------------------- checker

def _val(b):
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def check(ops, final, follower_conns=()):
    """ops: the history; final: {key: value-or-None} read on the final writer after settling (every
    key of the namespace); follower_conns: connections served by replicas/readers (their reads may be
    stale; every other check applies). Returns (errors, stale_reads, stats): lists of (kind, text)."""
    errors = []
    stale = []
    stats = dict(ops=len(ops), acked_writes=0, info_writes=0, failed_writes=0, reads=0, lost=0)

    def err(kind, msg):
        errors.append((kind, msg))

    writes = [o for o in ops if o.kind in ("set", "incr")]
    for o in writes:
        stats[{"ok": "acked_writes", "info": "info_writes", "fail": "failed_writes"}[o.status]] += 1
    stats["reads"] = sum(1 for o in ops if o.kind == "get" and o.status == "ok")

    # 1 unique keys
    for o in ops:
        if o.kind != "set" or ":u:" not in o.key:
            continue
        v = _val(final.get(o.key))
        if o.status == "ok" and v != o.arg:
            stats["lost"] += 1
            err("lost", f"acknowledged write lost: {o} final={v!r}")
        elif o.status == "fail" and v is not None:
            err("phantom", f"refused write present: {o} final={v!r}")
        elif o.status == "info" and v is not None and v != o.arg:
            err("corrupt", f"unique key with another value: {o} final={v!r}")
    # 2 observed => durable (unique keys)
    uwrite = {o.key: o for o in ops if o.kind == "set" and ":u:" in o.key}
    for o in ops:
        if o.kind == "get" and o.status == "ok" and ":u:" in o.key and o.result is not None:
            w = uwrite.get(o.key)
            if w is None or _val(o.result) != w.arg:
                err("phantom", f"read a unique-key value never written: {o}")
            elif _val(final.get(o.key)) != w.arg:
                err("observed-lost", f"a value read was lost: {o} (write {w}) final={_val(final.get(o.key))!r}")

    # 3 registers
    regs = sorted({o.key for o in ops if ":r:" in o.key})
    for key in regs:
        kops = [o for o in ops if o.key == key]
        wr = {o.arg: o for o in kops if o.kind == "set"}
        acked = [o for o in kops if o.kind == "set" and o.status == "ok"]

        def before(a, b):
            """write a precedes write b in real time (a acknowledged before b was invoked)."""
            return a.status == "ok" and a.t_ret < b.t_inv

        def check_read(r, v, what, final_read=False):
            if v is None:
                # nil: stale if any acknowledged write completed before the read began
                done = [w for w in acked if w.t_ret < r.t_inv]
                if done and (final_read or r.conn not in follower_conns):
                    (stale if not final_read else errors).append(
                        ("lost-overwrite" if final_read else "stale",
                         f"{what} {key}: nil although {done[0]} was acknowledged before it: {r}"))
                return None
            w = wr.get(v)
            if w is None:
                err("phantom", f"{what} {key}: value {v!r} never written: {r}")
                return None
            if w.status == "fail":
                err("phantom", f"{what} {key}: value of a refused write {w}: {r}")
                return w
            if r.t_ret is not None and w.t_inv > r.t_ret:
                err("future", f"{what} {key}: value of a write invoked after the read returned {w}: {r}")
                return w
            newer = [x for x in acked if x is not w and before(w, x) and x.t_ret < r.t_inv]
            if newer and (final_read or r.conn not in follower_conns):
                (errors if final_read else stale).append(
                    ("lost-overwrite" if final_read else "stale",
                     f"{what} {key}: value of {w} but {newer[0]} (later in real time) was acknowledged before "
                     f"the read began: {r}"))
            return w

        reads = [o for o in kops if o.kind == "get" and o.status == "ok"]
        seen_writes = []
        for r in reads:
            w = check_read(r, _val(r.result), "read")
            if w is not None:
                seen_writes.append((r, w))
        fr = Op(-1, -1, "final", "get", key, None, float("inf"))
        fr.t_ret = float("inf")
        fw = check_read(fr, _val(final.get(key)), "final value", final_read=True)
        # observed => durable: the final write must not precede (in real time) a write that was read
        for r, w in seen_writes:
            if fw is None:
                if w is not None:
                    err("observed-lost", f"{key}: final nil but {r} read {w}")
                continue
            if fw is not w and before(fw, w):
                err("observed-lost", f"{key}: final value from {fw} precedes {w}, which {r} read")
        # 5 per connection, never backwards
        byconn = {}
        for r, w in seen_writes:
            byconn.setdefault(r.conn, []).append((r, w))
        for conn, lst in byconn.items():
            lst.sort(key=lambda rw: rw[0].t_inv)
            for (r1, w1), (r2, w2) in zip(lst, lst[1:]):
                if w1 is not w2 and before(w2, w1):
                    err("backwards", f"{key} conn {conn}: {r2} returned {w2.arg} which precedes {w1.arg} read earlier by {r1}")

    # 4 counters
    ctrs = sorted({o.key for o in ops if ":c:" in o.key})
    for key in ctrs:
        kops = [o for o in ops if o.key == key]
        inc = [o for o in kops if o.kind == "incr"]
        ok = [o for o in inc if o.status == "ok"]
        nfo = [o for o in inc if o.status == "info"]
        fv = final.get(key)
        f = int(fv) if fv is not None else 0
        res = [o.result for o in ok]
        if len(set(res)) != len(res):
            dup = sorted({x for x in res if res.count(x) > 1})[:5]
            err("lost-update", f"{key}: acknowledged INCRs returned the same value twice: {dup}")
        if res and max(res) > f:
            err("lost", f"{key}: final {f} below an acknowledged INCR result {max(res)}")
        if not (len(ok) <= f <= len(ok) + len(nfo)):
            err("lost" if f < len(ok) else "phantom",
                f"{key}: final {f} outside [acked {len(ok)}, acked+indeterminate {len(ok) + len(nfo)}]")
        oks = sorted(ok, key=lambda o: o.t_inv)
        by_ret = sorted(ok, key=lambda o: o.t_ret)
        # real-time order: a completed before b began => result(a) < result(b)
        j, best = 0, None
        for b in oks:
            while j < len(by_ret) and by_ret[j].t_ret < b.t_inv:
                if best is None or by_ret[j].result > best.result:
                    best = by_ret[j]
                j += 1
            if best is not None and b.result <= best.result:
                err("nonlinear", f"{key}: {b} returned {b.result} although {best} returned {best.result} before it began")
                break
        reads = [o for o in kops if o.kind == "get" and o.status == "ok"]
        for r in reads:
            v = int(r.result) if r.result is not None else 0
            if v > f:
                err("observed-lost", f"{key}: read {v} but the final value is {f}: {r}")
            done = [o.result for o in ok if o.t_ret < r.t_inv]
            if done and v < max(done) and r.conn not in follower_conns:
                stale.append(("stale", f"{key}: read {v} although an INCR returning {max(done)} was acknowledged before: {r}"))
        byconn = {}
        for r in reads:
            byconn.setdefault(r.conn, []).append(r)
        for conn, lst in byconn.items():
            lst.sort(key=lambda o: o.t_inv)
            for a, b in zip(lst, lst[1:]):
                va = int(a.result) if a.result is not None else 0
                vb = int(b.result) if b.result is not None else 0
                if vb < va:
                    err("backwards", f"{key} conn {conn}: read {vb} after {va}: {a} then {b}")
                    break
    return errors, stale, stats


def summarize(errors, limit=8):
    kinds = {}
    for k, _ in errors:
        kinds[k] = kinds.get(k, 0) + 1
    lines = [", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))]
    lines += ["  " + m for _, m in errors[:limit]]
    return "\n".join(lines)
