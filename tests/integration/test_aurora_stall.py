"""An aurora writer survives a stall of every storage node.

The writer runs with a 1 MiB buffer pool, so writes keep missing its cache and
must read pages back from storage (GetPage@VDL). All six storage nodes are
stopped with SIGSTOP for 3 s while clients write: a write whose page no node
can serve fails before it changes anything and is answered
`-ERR write failed, nothing changed` (server/README.md S4) or, parked on its
miss (non-blocking GetPage), `-TRYAGAIN storage unavailable` — or simply waits —
but the writer never exits. After SIGCONT writes are acknowledged again, and
every write acknowledged before, during and after the stall reads back.
"""
import os
import random
import signal
import threading
import time

from harness import AuroraCluster, Resp, RespError, acked_load, check, seed, tmpdir, verify_state

rng = random.Random(seed())
work = tmpdir()
cl = AuroraCluster(nreaders=0, writer_args=["--cache-mb", "1"]).start()
w = cl.writer

# Enough keys that a 1 MiB cache (128 pages) cannot hold the tree.
c = Resp(w.port)
for b in range(0, 30000, 500):
    replies = c.pipeline([("SET", f"pre:{i:06d}", "x" * 100) for i in range(b, b + 500)])
    check(all(r == "OK" for r in replies), f"preload: {replies[:3]}")
c.close()
print("preloaded 30000 keys through a writer with a 1 MiB cache", flush=True)

state = os.path.join(work, "acked.txt")
load = acked_load(w.port, "st", state, clients=4, duration=12, keyspace=20000, seed_=rng.randrange(1 << 30))

errors, oks = [], [0]


def overwrite_one(key):
    """One SET of a preloaded key (its page is most likely not cached) while storage is stopped."""
    try:
        cc = Resp(w.port, timeout=60)
        r = cc.call("SET", key, "y" * 100)
        cc.close()
        if r == "OK":
            oks[0] += 1
        else:
            errors.append(str(r))
    except RespError as e:
        errors.append(str(e))
    except OSError as e:
        errors.append(f"connection failed: {e}")


time.sleep(2)
for n in cl.nodes:
    os.kill(n.proc.pid, signal.SIGSTOP)
print("all six storage nodes stopped (SIGSTOP) for 3.5 s", flush=True)
threads = [threading.Thread(target=overwrite_one, args=(f"pre:{rng.randrange(30000):06d}",)) for _ in range(24)]
for th in threads:
    th.start()
time.sleep(3.5)
for n in cl.nodes:
    os.kill(n.proc.pid, signal.SIGCONT)
print("storage nodes resumed", flush=True)
for th in threads:
    th.join(timeout=90)
check(w.alive(), f"the writer must survive a storage stall:\n{w.log()[-3000:]}")
bad = [e for e in errors if not e.startswith(("ERR write failed, nothing changed", "TRYAGAIN storage unavailable"))]
check(not bad, f"only 'ERR write failed, nothing changed' or 'TRYAGAIN storage unavailable' (a parked write whose "
      f"page no node served: aurora/README S23) may answer a write during the stall: {bad[:3]}")
print(f"24 overwrites of cold keys sent during the stall: {oks[0]} acknowledged after it, {len(errors)} answered "
      f"{errors[0]!r}" if errors else f"24 overwrites of cold keys sent during the stall: all {oks[0]} acknowledged "
      f"after it (none needed a page it could not read)", flush=True)
out, _ = load.communicate(timeout=60)
acked = next((l for l in out.splitlines() if l.startswith("acked:")), out.strip()[-300:])
check(w.cli("SET", "after:stall", "1").strip() == "OK", "writes are acknowledged after the stall")
lost, vout = verify_state(w.port, state)
check(lost == 0, f"acknowledged writes lost across the storage stall:\n{vout}")
print(f"writer alive, writing again; acked load: {acked}; every acknowledged write reads back", flush=True)
print("ok")
