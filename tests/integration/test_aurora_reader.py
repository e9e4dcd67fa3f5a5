"""Aurora mode: what readers see, with each reader feed.

For each feed (redo: the default; pages: --reader-feed pages; READER_FEED=redo
or =pages runs only that one): 6 storage nodes + a writer started with that
feed + 2 readers (rd1 with a 1 MiB page cache, so most reads are
GetPage@read-point from storage; rd2 with the default cache, so most reads hit
pages the feed keeps current: records applied to them, or dropped page ids).

1. (first feed only) Visibility lag: redoubt-bench --mode lag (probe SET
   acknowledged by the writer -> first GET on rd1 returning it; bench fails if
   a probe is not visible within 30 s) over a few hundred probes under light
   run-mode load. p50/p99/max are printed; no timing assertion.
2. No half splits, no torn transactions: one writer connection inserts
   seq:000000, seq:000001, ... in order, each after the previous one's ack
   (NSEQ keys per feed, 200-byte values, keys padded with KEY_PAD bytes so
   internal nodes split too; page_splits and btree_height are printed), while
   another connection runs MULTI/EXEC blocks that SET the same value to three
   keys far apart in the key space (a:tx:i, m:tx:i, z:tx:i). A checker per
   reader repeatedly (a) MGETs the range just above the known visible prefix:
   the visible keys must be a prefix (seq:N visible => every key below N
   visible) with the right values, (b) re-reads a range below the prefix
   (keys never vanish after a split), (c) MGETs every transaction's three
   keys: they are all equal (or all missing). One MGET runs at one read point.
   With the first feed, all six storage nodes are SIGSTOPped for 2.5 s once
   a third of the keys are in: a read that cannot fetch its page must answer
   "TRYAGAIN storage unavailable" (non-blocking GetPage, aurora/README S22-S23;
   "ERR read failed: Input/output error" from the blocking path) (counted, the round is retried),
   never a missing key (before, MGET answered nil for it: the "vanished key"
   seen once in CI during a storage stall). Any other error is a violation.
   At the end every reader shows every key. Stress: SMALL_READERS=n (default 1)
   readers with a 1 MiB cache, NSEQ, SEED, READER_FEED.
3. (first feed only) Corruption: after acked load, one stopped storage node
   gets a flipped byte in its hot log and another in its page store; on
   restart each reports it (INFO corrupt_detected > 0 or a log line), and
   reads through the writer and through a fresh reader (empty cache: every
   page comes from storage, round robin over the nodes) return every
   acknowledged value and every seq key.
"""
import json
import os
import random
import signal
import threading
import time

from harness import (AuroraCluster, Resp, RespError, acked_load, bench, check, fail, lsn, seed, tmpdir, verify_state,
                     wait_for)

NSEQ = int(os.environ.get("NSEQ", "8000"))  # per feed
FEEDS = [os.environ["READER_FEED"]] if os.environ.get("READER_FEED") else ["redo", "pages"]
STALL_S = 2.5
SMALL_READERS = int(os.environ.get("SMALL_READERS", "1"))  # stress: more readers with a 1 MiB cache
KEY_PAD = int(os.environ.get("KEY_PAD", "100"))
NTX = 200
VALUE = 200
rng = random.Random(seed())
T0 = time.time()
work = tmpdir()


def seq_key(n):
    return f"seq:{n:06d}:" + "k" * KEY_PAD


def seq_val(n):
    return (f"{n:06d}:".ljust(VALUE, "v")).encode()


def tx_val(g):
    return (f"g{g}:".ljust(VALUE, "t")).encode()


def start_cluster(feed):
    """Writer with that feed; SMALL_READERS readers with a 1 MiB cache (rd1 ...), then one with the default."""
    c = AuroraCluster(nreaders=0, writer_args=["--reader-feed", feed]).start()
    c.reader_args = ["--cache-mb", "1"]
    small = [c.add_reader() for _ in range(SMALL_READERS)]
    c.reader_args = []
    big = c.add_reader()
    print(f"[{feed} feed] 6 storage nodes {c.ports}, writer :{c.writer.port}, readers "
          f"{', '.join(f'{r.name} :{r.port}' for r in small)} (1 MiB cache), {big.name} :{big.port} "
          f"({time.time() - T0:.1f}s)", flush=True)
    return c, small + [big]


# ---------------------------------------------------------------- 1. visibility lag
def visibility_lag(feed, w, rd1):
    r = bench("--mode", "lag", "--port", w.port, "--replica-port", rd1.port, "--clients", 2, "--samples", 300,
              "--duration", 4, "--warmup", 1, "--keyspace", 50000, "--value-size", 100, "--json", timeout=120)
    j = json.loads(r.stdout)
    check(j["samples"] >= 100, f"lag: only {j['samples']} probes")
    print(f"1. [{feed} feed] visibility lag on {rd1.name} (writer ack -> readable), {j['samples']} probes under "
          f"{j['ops_per_sec']:.0f} ops/s of load: p50 {j['lag_p50_us']} µs, p99 {j['lag_p99_us']} µs, max "
          f"{j['lag_max_us']} µs (SET sent -> visible p50 {j['set_to_visible_p50_us']} µs); "
          f"{j['lag_error_replies']} error replies ({time.time() - T0:.1f}s)", flush=True)


# ---------------------------------------------------------------- 2. splits and transactions
def read_error(v):
    """An MGET that could not fetch a page (GetPage failed on every node: storage stopped): retried. Any other
    error (e.g. "data corruption": a tree page of the wrong type, as a stale page could cause) is a violation."""
    return isinstance(v, RespError) and (str(v).startswith("ERR read failed: Input/output error")
                                         or str(v).startswith("TRYAGAIN storage unavailable"))


def splits_and_transactions(feed, cl, readers, stall):
    w = cl.writer
    stop = threading.Event()
    errors = []          # first violations (any thread)
    progress = {"seq": 0, "tx": 0}
    stats = {}
    stalled = {}

    def violation(msg):
        errors.append(msg)
        stop.set()

    def seq_writer():
        c = Resp(w.port, timeout=30)
        try:
            for n in range(NSEQ):
                if stop.is_set():
                    return
                if stall and n == NSEQ // 3:
                    for node in cl.nodes:
                        node.proc.send_signal(signal.SIGSTOP)
                    stalled["at"] = time.time()
                    time.sleep(STALL_S)
                    for node in cl.nodes:
                        node.proc.send_signal(signal.SIGCONT)
                rep = c.call("SET", seq_key(n), seq_val(n))
                if rep != "OK":
                    return violation(f"writer: SET {seq_key(n)[:12]} answered {rep!r}")
                progress["seq"] = n + 1
        except OSError as e:
            violation(f"seq writer: {e}")
        finally:
            c.close()

    def tx_writer(done):
        c = Resp(w.port, timeout=30)
        g = 0
        try:
            while not done.is_set() and not stop.is_set():
                i = rng.randrange(NTX)
                g += 1
                v = tx_val(g)
                rep = c.pipeline([("MULTI",), ("SET", f"a:tx:{i}", v), ("SET", f"m:tx:{i}", v),
                                  ("SET", f"z:tx:{i}", v), ("EXEC",)])
                if rep[-1] != ["OK", "OK", "OK"]:
                    return violation(f"tx writer: EXEC answered {rep!r}")
                progress["tx"] = g
        except OSError as e:
            violation(f"tx writer: {e}")
        finally:
            c.close()

    def checker(reader, done):
        c = Resp(reader.port, timeout=30)
        st = {"rounds": 0, "prefix": 0, "recheck_keys": 0, "tx_checks": 0, "max_tx_seen": 0, "read_errors": 0}
        stats[reader.name] = st
        K = 400
        txkeys = [f"{p}:tx:{i}" for i in range(NTX) for p in ("a", "m", "z")]

        def mget(keys):
            vals = c.call("MGET", *keys)
            if read_error(vals):
                st["read_errors"] += 1
                time.sleep(0.05)
                return None
            if isinstance(vals, RespError):
                violation(f"{reader.name}: MGET: {vals}")
                return None
            return vals

        try:
            while not stop.is_set():
                final = done.is_set()  # read before the round: a round after done sees everything once caught up
                P = st["prefix"]
                # (a) the range above the known prefix
                hi = min(NSEQ, P + K)
                if hi > P:
                    vals = mget([seq_key(n) for n in range(P, hi)])
                    if vals is None:
                        continue
                    seen = 0
                    while seen < len(vals) and vals[seen] is not None:
                        seen += 1
                    for k in range(seen, len(vals)):
                        if vals[k] is not None:
                            return violation(f"{reader.name}: seq:{P + k:06d} visible but seq:{P + seen:06d} is "
                                             f"not (known prefix {P}): half of a split or a reordered commit is "
                                             f"visible")
                    for k in range(seen):
                        if vals[k] != seq_val(P + k):
                            return violation(f"{reader.name}: seq:{P + k:06d} = {vals[k][:20]!r}, want "
                                             f"{seq_val(P + k)[:20]!r}")
                    st["prefix"] = P + seen
                # (b) a range below the prefix: keys never vanish (recent splits most likely)
                P = st["prefix"]
                if P > 0:
                    lo = max(0, P - rng.choice([K, 3 * K])) if rng.random() < 0.7 else rng.randrange(P)
                    hi2 = min(P, lo + K)
                    vals = mget([seq_key(n) for n in range(lo, hi2)])
                    if vals is None:
                        continue
                    for k, v in enumerate(vals):
                        if v != seq_val(lo + k):
                            return violation(f"{reader.name}: seq:{lo + k:06d} below the visible prefix {P} reads "
                                             f"{None if v is None else v[:20]!r}: a key vanished (half of a split)")
                    st["recheck_keys"] += len(vals)
                # (c) transactions: all three keys equal
                vals = mget(txkeys)
                if vals is None:
                    continue
                for i in range(NTX):
                    a, m, z = vals[3 * i:3 * i + 3]
                    if not (a == m == z):
                        return violation(f"{reader.name}: torn transaction {i}: a={a and a[:12]!r} "
                                         f"m={m and m[:12]!r} z={z and z[:12]!r}")
                    if a is not None:
                        st["max_tx_seen"] = max(st["max_tx_seen"], int(a[1:a.index(b":")]))
                st["tx_checks"] += NTX
                st["rounds"] += 1
                if final and st["prefix"] >= NSEQ:
                    return
        except OSError as e:
            violation(f"{reader.name} checker: {e}")
        finally:
            c.close()

    pers0 = w.info("persistence")
    t2 = time.time()
    wdone = threading.Event()
    cdone = threading.Event()
    threads = [threading.Thread(target=seq_writer), threading.Thread(target=tx_writer, args=(wdone,))]
    checkers = [threading.Thread(target=checker, args=(rd, cdone)) for rd in readers]
    for t in threads + checkers:
        t.start()
    threads[0].join(timeout=150)
    wdone.set()
    threads[1].join(timeout=30)
    if threads[0].is_alive():
        stop.set()
        fail(f"[{feed} feed] the seq writer did not finish {NSEQ} keys within 150s (at {progress['seq']})")
    t_write = time.time() - t2
    if not errors:
        for rd in readers:
            cl.wait_reader_caught_up(rd, timeout=30)
    cdone.set()
    for t in checkers:
        t.join(timeout=60)
        if t.is_alive():
            stop.set()
            fail(f"[{feed} feed] a checker did not finish within 60s: {stats}")
    if errors:
        fail(f"[{feed} feed] " + "\n".join(errors[:5]) + f"\nprogress {progress}, checkers {stats}")
    pers1 = w.info("persistence")
    splits = int(pers1.get("page_splits", 0)) - int(pers0.get("page_splits", 0))
    print(f"2. [{feed} feed] {NSEQ} seq keys ({KEY_PAD + 12}-byte keys, {VALUE}-byte values) + {progress['tx']} "
          f"MULTI/EXEC blocks of 3 keys in {t_write:.1f}s; writer page_splits +{splits}, btree_height "
          f"{pers1.get('btree_height')}" + (f"; all 6 storage nodes stopped for {STALL_S} s at seq {NSEQ // 3}"
                                            if stall else ""), flush=True)
    for name, st in stats.items():
        print(f"   {name}: {st['rounds']} check rounds, final prefix {st['prefix']}, {st['recheck_keys']} keys "
              f"re-read below the prefix, {st['tx_checks']} transaction checks (newest block seen "
              f"g{st['max_tx_seen']}), {st['read_errors']} read errors (retried): no half split, no torn "
              f"transaction, no vanished key", flush=True)
    check(splits >= NSEQ // 40, f"expected many page splits, got {splits}")
    check(int(pers1.get("btree_height", "0")) >= 3, f"expected internal splits (btree_height >= 3): {pers1}")
    for st in stats.values():
        check(st["rounds"] >= 10, f"checker made too few rounds: {stats}")
    for rd in readers:
        full_check(rd, f"[{feed} feed] reader {rd.name} after the writers finished")
    print(f"ok 2 [{feed} feed]: every reader shows all {NSEQ} keys ({time.time() - T0:.1f}s)", flush=True)


def full_check(node, what):
    c = Resp(node.port, timeout=60)
    try:
        for lo in range(0, NSEQ, 1000):
            vals = c.call("MGET", *[seq_key(n) for n in range(lo, min(NSEQ, lo + 1000))])
            check(not isinstance(vals, RespError), f"{what}: MGET: {vals}")
            for k, v in enumerate(vals):
                if v != seq_val(lo + k):
                    fail(f"{what}: seq:{lo + k:06d} = {None if v is None else v[:20]!r}\n{node.log()}")
    finally:
        c.close()


# ---------------------------------------------------------------- 3. corruption
def flip(path, off, what):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x20]))
    print(f"   flipped a bit of byte {off} of {what} ({path}, {os.path.getsize(path)} bytes)", flush=True)


def corruption(cl):
    w = cl.writer
    state = os.path.join(work, "cor.txt")
    load = acked_load(w.port, "cor:", state, clients=4, duration=3, seed_=rng.randrange(1 << 30), multi=True)
    out, _ = load.communicate(timeout=60)
    acked = [l for l in out.splitlines() if l.startswith("acked:")]
    check(acked, f"corruption load: no summary:\n{out}")
    cl.wait_nodes_caught_up(cl.nodes, timeout=30)
    time.sleep(1.5)  # a read-point round (1 s) lets the nodes coalesce into their page stores
    hl_node, pg_node = [cl.nodes[i] for i in rng.sample(range(6), 2)]
    before = {n.idx: n.info() for n in (hl_node, pg_node)}
    hl_node.stop()
    pg_node.stop()

    hl = os.path.join(hl_node.dir, "hotlog")
    check(os.path.exists(hl) and os.path.getsize(hl) > 64,
          f"node {hl_node.idx} has a hot log: {os.listdir(hl_node.dir)}")
    flip(hl, os.path.getsize(hl) // 2 + rng.randrange(-16, 16), f"node {hl_node.idx}'s hot log")
    pages = os.path.join(pg_node.dir, "pages")
    check(os.path.exists(pages), f"node {pg_node.idx} has a page store: {os.listdir(pg_node.dir)}")
    with open(pages, "rb") as f:
        data = f.read()
    used = [i for i in range(len(data) // 8192) if any(data[i * 8192 + 16:(i + 1) * 8192])]
    check(used, f"node {pg_node.idx}'s page store holds coalesced pages (coalesced_lsn "
          f"{before[pg_node.idx].get('coalesced_lsn')}, {len(data)} bytes)")
    victim = rng.choice(used)
    flip(pages, victim * 8192 + rng.randrange(16, 8192), f"node {pg_node.idx}'s page store (page {victim} of "
         f"{len(used)} used)")
    hl_log, pg_log = hl_node.log_size(), pg_node.log_size()
    hl_node.start()
    pg_node.start()
    for n, at, what in ((hl_node, hl_log, "hot log"), (pg_node, pg_log, "page store")):
        inf = n.info()
        logged = [l for l in n.log_since(at).splitlines() if "corrupt" in l.lower()]
        check(int(inf.get("corrupt_detected", 0)) > 0 or logged,
              f"node {n.idx}: {what} corruption not detected on restart: corrupt_detected "
              f"{inf.get('corrupt_detected')}, log:\n{n.log_since(at)[-2000:]}")
        print(f"   node {n.idx} ({what}): corrupt_detected {inf.get('corrupt_detected')}, repaired "
              f"{inf.get('repaired')}; "
              f"{logged[0].split(' ', 3)[-1][:150] if logged else 'no log line'}", flush=True)
    cl.wait_nodes_caught_up(cl.nodes, timeout=30)
    lost, vout = verify_state(w.port, state)
    check(lost == 0, f"corruption: acknowledged writes wrong on the writer:\n{vout}")
    rd3 = cl.add_reader()
    cl.wait_reader_caught_up(rd3)
    lost, vout = verify_state(rd3.port, state)
    check(lost == 0, f"corruption: acknowledged writes wrong on a fresh reader:\n{vout}\n{rd3.log()}")
    full_check(rd3, f"fresh reader {rd3.name} after the corruption")
    gp = rd3.repl()
    print(f"   fresh reader {rd3.name}: {gp.get('getpage_requests')} GetPage requests "
          f"({gp.get('getpage_hedged')} hedged), "
          f"every value right; load {acked[0]}", flush=True)
    print(f"ok 3: hot-log and page-store corruption detected; reads through the writer and a fresh reader correct "
          f"({time.time() - T0:.1f}s)", flush=True)


for i, feed in enumerate(FEEDS):
    cl, readers = start_cluster(feed)
    if i == 0:
        visibility_lag(feed, cl.writer, readers[0])
    splits_and_transactions(feed, cl, readers, stall=i == 0)
    if i == 0:
        corruption(cl)
    for n in cl.readers + [cl.writer] + cl.nodes:
        n.stop()
print(f"aurora reader tests passed in {time.time() - T0:.1f}s (feeds: {', '.join(FEEDS)})", flush=True)
