"""Hot-log trimming that waits for lagging peers (storage-node README N10, N11),
with a real writer and six real storage nodes (1 MiB segments so trimming
happens within seconds, --hotlog-keep-mb KEEP_MB) under redoubt-bench acked
load:

1. all up: segments are deleted while the load runs;
2. kill -9 one node (the victim), keep writing: no live node trims past the
   victim's SCL as it learned it by gossip (INFO names the victim as what holds
   the trim point), as long as the hot log is within --hotlog-keep-mb;
3. restart it: it catches up by gap fill alone (no page copy, never blocked),
   then trimming proceeds and the hot-log files held for it disappear;
4. kill -9 it again and write past --hotlog-keep-mb: the others give up on it
   (logged, INFO trim_gave_up) and trim past its SCL; restarted, it reports it
   cannot catch up, copies a peer's page store (PAGECOPY/PAGES), and catches up;
5. every acknowledged key of every load round reads back from the writer, and
   once the load stops every node's page store is identical (redoubt-dump
   sn-pages) — the copied one included.

Bounded in time (about 40-60 s), prints its seed, kills only its own PIDs.
"""
import os
import random
import re
import subprocess
import time

from harness import (DUMP, AuroraCluster, StorageNode, acked_load, check, fail, parse_kv_line, seed, tmpdir,
                     verify_state, wait_for)

rng = random.Random(seed())
T0 = time.time()
KEEP_MB = 24
EXTRA = ["--hotlog-segment-mb", "1", "--hotlog-keep-mb", str(KEEP_MB)]
DEADLINE = T0 + 150  # hard cap on the whole test


def elapsed():
    return f"{time.time() - T0:.1f}s"


cl = AuroraCluster(nreaders=0)
for n in cl.nodes:
    n.command = (lambda n=n: StorageNode.command(n) + EXTRA)
cl.start()
nodes, w = cl.nodes, cl.writer
victim = nodes[rng.randrange(6)]
others = [n for n in nodes if n is not victim]
print(f"6 storage nodes + writer up; victim is node {victim.idx} (:{victim.port}) ({elapsed()})", flush=True)

rounds = []  # (prefix, state file): every acked round is verified at the end


def load(seconds, clients=4):
    """One acked round of `seconds` against the writer; returns when it ends."""
    k = len(rounds)
    prefix, state = f"t{k}:", os.path.join(tmpdir(), f"state{k}")
    p = acked_load(w.port, prefix, state, clients=clients, duration=seconds, keyspace=4000,
                   seed_=rng.randrange(1 << 30))
    rounds.append((prefix, state))
    try:
        out, _ = p.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        fail(f"redoubt-bench round {k} did not end")
    check(p.returncode == 0, f"redoubt-bench round {k} exited {p.returncode}:\n{out[-1500:]}")
    m = re.search(r"acked: (\d+) acknowledged", out)
    return int(m.group(1)) if m else 0


def infos(ns):
    return {n.idx: n.info() for n in ns}


def peer_line(inf, port):
    """The peerN line of INFO describing the node on port, as a dict."""
    for k, v in inf.items():
        if k.startswith("peer") and k[4:].isdigit() and f":{port}," in v + ",":
            return parse_kv_line(v)
    fail(f"no peer line for :{port} in {inf}")


def seg_files(n):
    return sorted(f for f in os.listdir(n.dir) if re.fullmatch(r"hotlog\.\d+", f))


# ---- 1. all up: trimming runs under load
load(4)
inf = infos(nodes)
deadline = time.time() + 30
while not all(int(d["segments_deleted"]) > 0 for d in inf.values()) and time.time() < deadline:
    load(2)  # compact redo (redo/README.md R5, engine E18) fills 1 MiB segments more slowly: write on
    inf = infos(nodes)
for i, d in inf.items():
    check(d["hotlog_trim"] == "on", f"trimming is on by default on node {i}")
    check(int(d["segments_deleted"]) > 0, f"node {i} deleted segments under load: {d}")
print(f"ok: trimming on by default, segments deleted under load: "
      f"{[int(d['segments_deleted']) for d in inf.values()]}, hot log bytes "
      f"{[int(d['hot_log_bytes']) for d in inf.values()]} ({elapsed()})", flush=True)

# ---- 2. kill -9 the victim; the others must not trim past its SCL while within --hotlog-keep-mb
victim.kill9()
acked_down = load(4)
time.sleep(1.5)  # a coalesce + trim round after the writer's last READPOINT
inf = infos(others)
for i, d in inf.items():
    pl = peer_line(d, victim.port)
    vscl = int(pl["scl"])
    check(pl["heard"] == "1" and pl["state"] == "down", f"node {i} knows the dead victim: {pl}")
    check(int(d["hot_log_bytes"]) < KEEP_MB << 20,
          f"node {i} stayed within --hotlog-keep-mb in this phase (test parameters): {d['hot_log_bytes']}")
    check(int(d["hot_log_trimmed_lsn"]) <= vscl, f"node {i} trimmed past the dead victim's scl {vscl}: {d}")
    check(int(d["hotlog_trim_point"]) == vscl and f":{victim.port}" in d["hotlog_trim_held_by"],
          f"node {i}: the trim point is the victim's scl {vscl}: {d['hotlog_trim_point']} "
          f"held by {d['hotlog_trim_held_by']}")
    check(int(d["coalesced_lsn"]) > vscl + 1000, f"node {i} coalesced well past the victim: {d}")
    check(int(d["trim_gave_up"]) == 0, f"node {i} did not give up on the victim: {d}")
held = {n.idx: seg_files(n) for n in others}
vscl = int(peer_line(inf[others[0].idx], victim.port)["scl"])
print(f"ok: {acked_down} writes with the victim down; nobody trimmed past its scl {vscl}; hot log bytes "
      f"{[int(d['hot_log_bytes']) for d in inf.values()]} ({elapsed()})", flush=True)

# ---- 3. restart: catch-up by gap fill alone; then trimming proceeds and the held files go
at = victim.log_size()
victim.start()
load(3)
cl.wait_nodes_caught_up([victim], timeout=30)
d = victim.info()
check(int(d["page_copies"]) == 0 and int(d["catchup_blocked_lsn"]) == 0, f"victim caught up by gap fill: {d}")
check("cannot catch up" not in victim.log_since(at), "victim never blocked")
check(int(d["scl"]) > vscl, f"victim scl {d['scl']} passed {vscl}")


def held_files_gone():
    return all(not (set(held[n.idx][:1]) & set(seg_files(n))) for n in others) and \
        all(int(n.info()["hot_log_trimmed_lsn"]) > vscl for n in others)


wait_for("trimming to proceed past the victim's old scl on every node", held_files_gone, timeout=20, interval=0.2)
inf = infos(others)
print(f"ok: victim caught up by gap fill (gaps_filled {d['gaps_filled']}); trimming proceeded, held files deleted, "
      f"hot log bytes {[int(x['hot_log_bytes']) for x in inf.values()]} ({elapsed()})", flush=True)

# ---- 4. kill -9 again and write past --hotlog-keep-mb: the others give up, the victim copies pages
victim.kill9()
marks = {n.idx: n.log_size() for n in others}
while not all(int(n.info()["trim_gave_up"]) >= 1 for n in others):
    check(time.time() < DEADLINE - 60, f"nobody gave up on the victim: {infos(others)}")
    load(3, clients=8)
for n in others:
    check("giving up on it" in n.log_since(marks[n.idx]) and f":{victim.port}" in n.log_since(marks[n.idx]),
          f"node {n.idx} logs which peer it gave up on")
inf = infos(others)
vscl2 = max(int(peer_line(x, victim.port)["scl"]) for x in inf.values())
check(all(int(x["hot_log_trimmed_lsn"]) > vscl2 for x in inf.values()),
      f"every live node trimmed past the victim's scl {vscl2}")
check(all(int(x["hot_log_bytes"]) <= (KEEP_MB + 8) << 20 for x in inf.values()),
      f"hot logs stay near --hotlog-keep-mb: {[x['hot_log_bytes'] for x in inf.values()]}")
print(f"ok: past {KEEP_MB} MiB the others gave up on the victim (scl {vscl2}), hot log bytes "
      f"{[int(x['hot_log_bytes']) for x in inf.values()]} ({elapsed()})", flush=True)
at = victim.log_size()
victim.start()
load(3)
cl.wait_nodes_caught_up([victim], timeout=40)
d = victim.info()
lg = victim.log_since(at)
check(int(d["page_copies"]) >= 1 and int(d["pages_copied"]) > 0, f"victim caught up by page copy: {d}")
check("cannot catch up" in lg and "page copy from peer" in lg, f"victim logs the page copy:\n{lg[-2000:]}")
print(f"ok: restarted victim copied {d['pages_copied']} pages from a peer and caught up to scl {d['scl']} "
      f"({elapsed()})", flush=True)
wait_for("the others to wait for the victim again",
         lambda: all(int(n.info()["peers_given_up"]) == 0 for n in others), timeout=20, interval=0.2)

# ---- 5. every acknowledged key; identical page stores once quiet
for prefix, state in rounds:
    bad, out = verify_state(w.port, state)
    check(bad == 0, f"round {prefix}: {bad} acknowledged writes lost or torn:\n{out[-1500:]}")
print(f"ok: every acknowledged key of {len(rounds)} rounds read back from the writer ({elapsed()})", flush=True)
w.stop()  # nothing new arrives: every node coalesces to the same point (the last read point)


def same_coalesced():
    c = [int(n.info()["coalesced_lsn"]) for n in nodes]
    return c[0] if len(set(c)) == 1 and c[0] > 0 else None


def settled():
    # Coalescing proceeds in steps: six equal values can be a moment on the way. Settled = equal
    # and unchanged a second later.
    a = same_coalesced()
    if a is None:
        return None
    time.sleep(1.0)
    return a if same_coalesced() == a else None


c1 = wait_for("every node coalesced to the same lsn, unchanged for 1 s", settled, timeout=45, interval=0.3)
stores = {}
for n in nodes:
    n.stop()
    r = subprocess.run([DUMP, "sn-pages", n.dir], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"sn-pages of node {n.idx}: rc {r.returncode}\n{r.stdout[-800:]}{r.stderr}")
    with open(os.path.join(n.dir, "pages"), "rb") as f:
        stores[n.idx] = f.read().rstrip(b"\0")
ref = stores[others[0].idx]
check(len(ref) > 0, "the page store holds pages")
for i, b in stores.items():
    if b != ref:
        pg = next((k for k in range(0, max(len(b), len(ref)), 8192) if b[k:k + 8192] != ref[k:k + 8192]), -1)
        fail(f"node {i}'s page store differs from node {others[0].idx}'s (first at page {pg // 8192})")
print(f"ok: all six page stores byte-identical ({len(ref) // 8192 + 1} page slots, coalesced {c1}) after the load "
      f"stopped ({elapsed()})", flush=True)
print(f"sn trim tests passed in {elapsed()}", flush=True)
