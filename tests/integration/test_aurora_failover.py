"""Aurora mode: writer failover by promoting a reader, and fencing of a stale writer.

6 storage nodes + writer + 1 reader on loopback.

Rounds (ROUNDS, default 3): acked load (redoubt-bench --mode acked, random
clients / value size / MULTI) on the writer, kill -9 of the writer at a
random moment, REPLICAOF NO ONE on the reader (it becomes the writer at
epoch + 1), then redoubt-bench --mode verify of this round's and every
earlier round's state on the new writer: zero acknowledged writes lost or
torn. Prints the time from the kill to the first acknowledged write on the
new writer. A fresh reader subscribes to the new writer for the next round.

SIGSTOP: under acked load, SIGSTOP the writer, promote the reader, SIGCONT
the old writer, send writes to it: none is acknowledged (an error mentioning
"fenced", or no reply within a timeout), its log says FENCED, INFO fenced:1,
the new writer has none of those keys, and the load's acked state verifies on
the new writer.
"""
import os
import random
import signal
import subprocess
import time

from harness import (AuroraCluster, Resp, RespError, acked_load, check, fail, lsn, percentiles, seed, tmpdir, try_info,
                     verify_state, wait_for, wait_writable)

ROUNDS = int(os.environ.get("ROUNDS", "3"))
rng = random.Random(seed())
T0 = time.time()
work = tmpdir()

cl = AuroraCluster(nreaders=1).start()
print(f"6 storage nodes {cl.ports}, writer :{cl.writer.port}, reader :{cl.readers[0].port}", flush=True)
states = []
failover_s = []
dead = []
for rnd in range(ROUNDS):
    w, rd = cl.writer, cl.readers[0]
    epoch = lsn(w.repl(), "epoch")
    state = os.path.join(work, f"round-{rnd}.txt")
    clients = rng.choice([1, 4, 8])
    multi = rng.random() < 0.5
    vsize = rng.choice([20, 100, 1000])
    load = acked_load(w.port, f"f{rnd}:", state, clients=clients, duration=20, value_size=vsize,
                      seed_=rng.randrange(1 << 30), multi=multi)
    delay = rng.uniform(0.5, 2.5)
    time.sleep(delay)
    if load.poll() is not None:
        fail(f"round {rnd}: the load ended before the kill:\n{load.stdout.read()}")
    w.kill9()
    t_kill = time.time()
    rd.promote()
    t_promoted = time.time()
    cl.readers.remove(rd)
    cl.writer = rd
    wait_writable(rd, key=f"f{rnd}:probe", timeout=30)
    t_first = time.time()
    failover_s.append(t_first - t_kill)
    out, _ = load.communicate(timeout=60)
    check(os.path.exists(state), f"round {rnd}: bench wrote its state:\n{out}")
    states.append(state)
    acked = [l for l in out.splitlines() if l.startswith("acked:")]
    nep = lsn(rd.repl(), "epoch")
    check(nep > epoch, f"round {rnd}: promoted writer epoch {nep} > old {epoch}")
    print(f"round {rnd}: clients={clients} multi={multi} value={vsize}B; writer :{w.port} killed after "
          f"{delay:.2f}s; {acked[0] if acked else out.strip()[-200:]}", flush=True)
    print(f"  promoted {rd.name} :{rd.port} to writer at epoch {nep}: REPLICAOF NO ONE took "
          f"{t_promoted - t_kill:.3f}s, kill -> first acknowledged write {t_first - t_kill:.3f}s", flush=True)
    for i, st in enumerate(states):
        lost, vout = verify_state(rd.port, st)
        if lost != 0:
            fail(f"round {rnd}: state of round {i}: acknowledged writes lost or torn on the new writer:\n{vout}\n"
                 f"new writer log:\n{rd.log()}")
    print(f"  verify on the new writer: rounds 0..{rnd} PASS", flush=True)
    dead.append(w)
    nr = cl.add_reader(timeout=30)
    cl.wait_reader_caught_up(nr, timeout=30)
    print(f"  new reader {nr.name} :{nr.port} follows the writer :{rd.port}", flush=True)
# the last reader reads every round's acknowledged writes from shared storage
for i, st in enumerate(states):
    lost, vout = verify_state(cl.readers[0].port, st)
    check(lost == 0, f"reader {cl.readers[0].name}: state of round {i}:\n{vout}")
p50, p99, mx = percentiles(failover_s)
print(f"ok: {ROUNDS} failover rounds, 0 acknowledged writes lost; kill -> first acked write on the new writer: "
      f"{', '.join(f'{x:.3f}s' for x in failover_s)} (max {mx:.3f}s) ({time.time() - T0:.1f}s)", flush=True)

# ---------------------------------------------------------------- SIGSTOP: a stale writer is fenced
w, rd = cl.writer, cl.readers[0]
state = os.path.join(work, "sigstop.txt")
load = acked_load(w.port, "stop:", state, clients=4, duration=4, seed_=rng.randrange(1 << 30), multi=True)
time.sleep(rng.uniform(0.5, 1.5))
w.proc.send_signal(signal.SIGSTOP)
log_at = w.log_size()
print(f"SIGSTOP writer :{w.port} (pid {w.proc.pid}) under acked load", flush=True)
rd.promote()
cl.readers.remove(rd)
cl.writer = rd
wait_writable(rd, key="stop:probe-new", timeout=30)
print(f"  promoted {rd.name} :{rd.port} (epoch {lsn(rd.repl(), 'epoch')}); SIGCONT the old writer", flush=True)
w.proc.send_signal(signal.SIGCONT)
N = 20
REPLY_WAIT_S = 3.0
answers = {"fenced": 0, "no reply": 0}
conns = []
for i in range(N):  # N connections, one SET each, all sent at once; replies awaited until one deadline
    c = Resp(w.port, timeout=5)
    c.send("SET", f"stale:{i}", f"v{i}")
    conns.append(c)
    time.sleep(0.02)
deadline = time.time() + REPLY_WAIT_S
for i, c in enumerate(conns):
    c.sock.settimeout(max(0.01, deadline - time.time()))
    try:
        r = c.read()
    except OSError:  # socket.timeout is an OSError; so is a reset
        answers["no reply"] += 1
        continue
    if isinstance(r, RespError) and "fenced" in str(r).lower():
        answers["fenced"] += 1
    else:
        fail(f"the old writer answered SET stale:{i} with {r!r} (want an error mentioning fenced, or no reply)\n"
             f"{w.log_since(log_at)}")
check(answers["fenced"] > 0, "writes to the fenced writer get an error that says it was fenced")
print(f"  {answers['fenced']} writes to the old writer got the 'fenced' error", flush=True)
# a MULTI block too
c = Resp(w.port, timeout=1)
try:
    r = c.pipeline([("MULTI",), ("SET", "stale:m1", "x"), ("SET", "stale:m2", "x"), ("EXEC",)])
    check(not any(x == [b"OK", b"OK"] or x == ["OK", "OK"] for x in r),
          f"the old writer acknowledged a MULTI block: {r!r}")
except OSError:
    pass
c.close()
for c in conns:
    c.close()
out, _ = load.communicate(timeout=60)
acked = [l for l in out.splitlines() if l.startswith("acked:")]
wlog = w.log_since(log_at)
check("FENCED" in wlog, f"the old writer's log says FENCED after SIGCONT:\n{wlog[-3000:]}")
fl = [l for l in wlog.splitlines() if "FENCED" in l]
check(w.alive(), "the old writer is still running (fenced, not crashed)")
inf = try_info(w.port)
if inf is not None:
    check(inf.get("fenced") == "1", f"old writer INFO fenced:1 (got {inf.get('fenced')})")
    print("  old writer INFO: fenced:1", flush=True)
else:
    fail("the fenced writer does not answer INFO")
newv = Resp(rd.port)
got = newv.call("MGET", *[f"stale:{i}" for i in range(N)], "stale:m1", "stale:m2")
newv.close()
check(all(x is None for x in got), f"the new writer has keys written to the fenced writer: {got!r}")
lost, vout = verify_state(rd.port, state)
check(lost == 0, f"SIGSTOP round: acknowledged writes lost on the new writer:\n{vout}")
for i, st in enumerate(states):
    lost, vout = verify_state(rd.port, st)
    check(lost == 0, f"after the SIGSTOP round: state of round {i}:\n{vout}")
print(f"  old writer after SIGCONT: {N} SETs -> {answers['fenced']} fenced errors, {answers['no reply']} no reply "
      f"within {REPLY_WAIT_S:.0f}s; 0 acknowledged; log: {fl[0].split(' ', 3)[-1][:160]}", flush=True)
print(f"  load: {acked[0] if acked else '?'}; verify on the new writer PASS; none of the stale keys present",
      flush=True)
print("ok: a SIGSTOPped writer resumed after a promotion is fenced and says why", flush=True)
w.kill9()
for n in cl.readers + [cl.writer] + cl.nodes:
    n.stop()
print(f"aurora failover tests passed in {time.time() - T0:.1f}s", flush=True)
