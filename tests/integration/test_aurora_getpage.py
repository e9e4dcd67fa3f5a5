"""Non-blocking, hedged GetPage on an aurora writer and reader (issue 12, item 4).

A writer and a reader run with a 1 MiB buffer pool over 30000 keys, so most
reads and writes of a random key miss the cache and need a GetPage. A miss
parks only the command that missed (aurora/README S22-S24, server/README S25-S26):

  (a) while all six storage nodes are stopped (SIGSTOP) and one client waits on
      a cold key, other clients of the same reader and writer are served (PING,
      INFO, a cached key), and a pipeline's replies stay in order;
  (b) with one storage node stopped, reads of cold keys on the reader and
      writes on the writer succeed (the GetPage is hedged to a second node:
      getpage_hedged > 0), and every value read is the one written;
  (c) with every node stopped the waiting client gets `-TRYAGAIN storage
      unavailable` after the bound (2 s) instead of hanging;
  (d) an acknowledged load runs on the writer throughout; every acknowledged
      write reads back at the end.
No timing assertions: only order, answers and counters.
"""
import os
import random
import select
import signal
import time

from harness import AuroraCluster, Resp, RespError, acked_load, check, seed, tmpdir, verify_state

rng = random.Random(seed())
work = tmpdir()
NKEYS = 30000
cl = AuroraCluster(nreaders=1, writer_args=["--cache-mb", "1"], reader_args=["--cache-mb", "1"]).start()
w, rd = cl.writer, cl.readers[0]


def val(i):
    return f"v{i:06d}-" + "x" * 90


c = Resp(w.port)
for b in range(0, NKEYS, 500):
    replies = c.pipeline([("SET", f"k:{i:06d}", val(i)) for i in range(b, b + 500)])
    check(all(r == "OK" for r in replies), f"preload: {replies[:3]}")
c.close()
cl.wait_reader_caught_up(rd)
print(f"preloaded {NKEYS} keys; writer and reader run with a 1 MiB cache (128 pages)", flush=True)

state = os.path.join(work, "acked.txt")
load = acked_load(w.port, "ack", state, clients=2, duration=25, keyspace=5000, seed_=rng.randrange(1 << 30))


def info(node):
    d = node.info("replication")
    return {k: int(v) for k, v in d.items() if k.startswith(("getpage_", "commands_")) and v.lstrip("-").isdigit()}


def read_cold(n, port):
    """n GETs of random keys (mostly not cached) on port; all must answer the value written."""
    cc = Resp(port, timeout=60)
    for _ in range(n):
        i = rng.randrange(NKEYS)
        v = cc.call("GET", f"k:{i:06d}")
        check(v == val(i).encode(), f"GET k:{i:06d} on :{port}: {v!r}")
    cc.close()


# ---------------------------------------------------------------- (b) one node stopped: hedged reads and writes
before = info(rd)
slow = cl.nodes[rng.randrange(6)]
os.kill(slow.proc.pid, signal.SIGSTOP)
read_cold(400, rd.port)
cw = Resp(w.port, timeout=60)
for _ in range(200):  # overwrite cold keys with their own value (the model stays valid)
    i = rng.randrange(NKEYS)
    r = cw.call("SET", f"k:{i:06d}", val(i))
    check(r == "OK", f"SET k:{i:06d} on the writer with node {slow.idx} stopped: {r!r}")
cw.close()
os.kill(slow.proc.pid, signal.SIGCONT)
after = info(rd)
winfo = info(w)
check(after["getpage_requests"] > before["getpage_requests"], f"the reader sent no GetPage: {after}")
check(after["getpage_hedged"] > before["getpage_hedged"],
      f"with storage node {slow.idx} stopped no GetPage was hedged to a second node: {after}")
check(after["commands_parked"] > before["commands_parked"], f"no command was parked on a miss: {after}")
print(f"(b) storage node {slow.idx} stopped: 400 cold GETs on the reader and 200 cold SETs on the writer answered "
      f"right; reader getpage requests +{after['getpage_requests'] - before['getpage_requests']}, hedged "
      f"+{after['getpage_hedged'] - before['getpage_hedged']}, hedge wins +"
      f"{after['getpage_hedge_wins'] - before['getpage_hedge_wins']}; writer parked {winfo['commands_parked']} "
      f"commands, hedged {winfo['getpage_hedged']}", flush=True)

# ---------------------------------------------------------------- MULTI/EXEC over cold keys: parked and re-run whole
w0, r0 = info(w), info(rd)
cw, cr = Resp(w.port, timeout=60), Resp(rd.port, timeout=60)
for _ in range(30):
    a_, b_, c_ = (rng.randrange(NKEYS) for _ in range(3))
    got = cw.pipeline([("MULTI",), ("SET", f"k:{a_:06d}", val(a_)), ("GET", f"k:{b_:06d}"), ("SET", f"k:{c_:06d}", val(c_)),
                       ("EXEC",)])
    check(got == ["OK", "QUEUED", "QUEUED", "QUEUED", ["OK", val(b_).encode(), "OK"]], f"writer MULTI/EXEC: {got!r}")
    got = cr.pipeline([("MULTI",), ("GET", f"k:{a_:06d}"), ("GET", f"k:{c_:06d}"), ("EXEC",)])
    check(got == ["OK", "QUEUED", "QUEUED", [val(a_).encode(), val(c_).encode()]], f"reader MULTI/EXEC: {got!r}")
cw.close()
cr.close()
w1, r1 = info(w), info(rd)
print(f"    30 MULTI/EXEC blocks of cold keys on the writer and the reader answered right (parked "
      f"{w1['commands_parked'] - w0['commands_parked']} / {r1['commands_parked'] - r0['commands_parked']} times)",
      flush=True)

# ---------------------------------------------------------------- (a) + (c) every node stopped
hot = rng.randrange(NKEYS)
ch = Resp(rd.port, timeout=60)
check(ch.call("GET", f"k:{hot:06d}") == val(hot).encode(), "hot key")  # now cached on the reader
for n in cl.nodes:
    os.kill(n.proc.pid, signal.SIGSTOP)
try:
    # A cold key not cached (find one: a GET that does not answer at once is parked)
    waiter = Resp(rd.port, timeout=60)
    cold = None
    for _ in range(50):
        i = rng.randrange(NKEYS)
        waiter.send("GET", f"k:{i:06d}")
        r, _, _ = select.select([waiter.sock], [], [], 0.2)
        if not r:
            cold = i
            break
        v = waiter.read()
        check(v == val(i).encode(), f"GET k:{i:06d} (cached) with storage stopped: {v!r}")
    check(cold is not None, "every key tried was cached: cannot test a parked read")
    # The same connection pipelines a cached key behind it: its reply must come after the parked one.
    waiter.send("GET", f"k:{hot:06d}")
    # Other clients are served meanwhile.
    t0 = time.time()
    check(ch.call("PING") == "PONG", "PING on the reader while another client waits for a page")
    check(ch.call("GET", f"k:{hot:06d}") == val(hot).encode(), "a cached key on the reader while another waits")
    inf = rd.info("replication")
    check(int(inf.get("commands_parked_now", 0)) >= 1, f"the waiting GET is not parked: {inf}")
    served_while_waiting = select.select([waiter.sock], [], [], 0)[0] == []
    check(served_while_waiting, "the parked GET answered before the other client was served (did the loop block?)")
    # Writer: a client waiting on a cold write does not stop INFO/PING of another.
    ww = Resp(w.port, timeout=60)
    wcold = rng.randrange(NKEYS)
    ww.send("SET", f"k:{wcold:06d}", val(wcold))
    wo = Resp(w.port, timeout=60)
    check(wo.call("PING") == "PONG", "PING on the writer while another client waits")
    check(isinstance(wo.call("INFO", "replication"), bytes), "INFO on the writer while another client waits")
    wo.close()
    # (c) the parked GET ends with an error, not a hang; then the pipelined one answers, in order.
    v = waiter.read()
    waited = time.time() - t0
    check(isinstance(v, RespError) and str(v).startswith("TRYAGAIN storage unavailable"),
          f"a read whose page no node can serve must answer -TRYAGAIN: {v!r}")
    v2 = waiter.read()
    check(v2 == val(hot).encode(), f"the pipelined GET after the parked one: {v2!r}")
    print(f"(a) all 6 storage nodes stopped: while GET k:{cold:06d} waited on the reader, another client got PING "
          f"and a cached key, and the writer answered PING/INFO during a parked cold SET", flush=True)
    print(f"(c) the parked GET answered {str(v)!r} after {waited:.1f} s; the GET pipelined behind it answered "
          f"after it, right", flush=True)
finally:
    for n in cl.nodes:
        os.kill(n.proc.pid, signal.SIGCONT)
r = ww.read()  # the cold SET: acknowledged after the nodes return, or TRYAGAIN (nothing changed)
check(r == "OK" or (isinstance(r, RespError) and str(r).startswith(("TRYAGAIN storage unavailable",
                                                                      "ERR write failed, nothing changed"))),
      f"cold SET during the stall: {r!r}")
ww.close()
waiter.close()
ch.close()
print(f"    the cold SET sent during the stall answered {r!r}", flush=True)

# ---------------------------------------------------------------- (d) acknowledged writes read back
read_cold(200, rd.port)
out, _ = load.communicate(timeout=120)
acked = next((l for l in out.splitlines() if l.startswith("acked:")), out.strip()[-300:])
lost, vout = verify_state(w.port, state)
check(lost == 0, f"acknowledged writes lost:\n{vout}")
cl.wait_reader_caught_up(rd, timeout=60)
lost_r, vout_r = verify_state(rd.port, state)
check(lost_r == 0, f"acknowledged writes missing on the reader:\n{vout_r}")
check(w.alive() and rd.alive(), "writer and reader alive")
fin = info(rd)
print(f"(d) acked load on the writer: {acked}; every acknowledged write reads back on the writer and the reader; "
      f"reader totals: {fin}", flush=True)
print("ok")
