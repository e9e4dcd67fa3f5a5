"""redoubt-dump on a storage node's files (sn-hotlog, sn-meta, sn-pages).

6 redoubt-storage nodes + a writer (redoubt --role writer --storage ...) on
loopback. Keys are written with redis-cli; once every node's SCL has reached
the writer's VDL, one node is stopped with SIGTERM and the three subcommands
run on its directory:
  * sn-hotlog lists every record with an ok checksum and ends cleanly; the SCL
    it recovers equals the node's INFO scl before the stop;
  * sn-meta shows the epoch of INFO and the same SCL;
  * sn-pages lists the coalesced pages with ok checksums, and describes one;
  * --from, usage errors and missing files (exit 1).
Then a byte of a record in the middle of its hot log is flipped: sn-hotlog
reports corruption at that record's offset (checksum BAD) with exit 2; a
flipped byte in meta makes sn-meta exit 2.
"""
import os
import re
import subprocess
import time

from harness import DUMP, AuroraCluster, check, fail, lsn, seed, wait_for

seed()
T0 = time.time()
LIMIT_S = 120


def budget(what):
    if time.time() - T0 > LIMIT_S:
        fail(f"over the {LIMIT_S}s budget at: {what}")


def dump(*args):
    r = subprocess.run([DUMP] + [str(a) for a in args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


REC = re.compile(r"^off (\d+)\s+lsn (\d+)\s+prev (\d+)\s+epoch (\d+)\s+page (\S+)\s+(\S+)\s+(CPL|-)\s+len (\d+)\s+"
                 r"checksum (\S+)")

cl = AuroraCluster(nreaders=0).start()
w = cl.writer
print(f"6 storage nodes {cl.ports}, writer :{w.port} ({time.time() - T0:.1f}s)", flush=True)

# Keys through redis-cli (one process, commands on stdin): enough records that
# the nodes coalesce some into their page stores.
NKEYS = 3000
cmds = "".join(f"SET dump:{i:05d} value-{i}-{'x' * (i % 50)}\n" for i in range(NKEYS))
out = w.cli(stdin=cmds)
check(out.count("OK") == NKEYS, f"redis-cli SETs: {out.count('OK')} OK of {NKEYS}: {out[-300:]}")
check(w.cli("GET", "dump:00042").startswith("value-42-"), "GET after SET")
vdl = cl.wait_nodes_caught_up(cl.nodes, timeout=30)
print(f"{NKEYS} keys written, every node's scl >= vdl {vdl} ({time.time() - T0:.1f}s)", flush=True)

node = cl.nodes[2]


def stable_info():
    a = node.info()
    time.sleep(1.2)  # longer than a coalescing round's interval when no record arrives (1 s): settled
    b = node.info()
    return b if a.get("scl") == b.get("scl") and a.get("coalesced_lsn") == b.get("coalesced_lsn") else None


# Coalescing needs a read point (or 10,000 records): wait a little for some.
wait_for("node 2 to coalesce some records", lambda: int(node.info().get("coalesced_lsn", "0")) > 0, 15,
         interval=0.1)
info = wait_for("node 2's scl and coalesced_lsn to settle", stable_info, 15)
scl_before = int(info["scl"])
rc = node.stop()
check(rc == 0, f"storage node 2 exited {rc} on SIGTERM:\n{node.log()}")
d = node.dir
print(f"stopped node 2 (SIGTERM): INFO scl {scl_before}, epoch {info.get('epoch')}, records {info.get('records')}, "
      f"coalesced_lsn {info.get('coalesced_lsn')}; dir {d}", flush=True)

# ---------------------------------------------------------------- sn-hotlog
rc, so, se = dump("sn-hotlog", d)
check(rc == 0, f"sn-hotlog exited {rc}:\n{so[-2000:]}\n{se}")
recs = [REC.match(l) for l in so.splitlines()]
recs = [m for m in recs if m]
check(len(recs) >= scl_before, f"sn-hotlog lists {len(recs)} records, INFO scl {scl_before}")
check(all(m.group(9) == "ok" for m in recs), "every listed record has checksum ok")
lsns = sorted(int(m.group(2)) for m in recs)
check(lsns[:scl_before] == list(range(1, scl_before + 1)), "LSNs 1..scl are all in the hot log")
check(all(1 <= int(m.group(4)) <= int(info["epoch"]) for m in recs),
      f"record epochs within 1..INFO epoch {info['epoch']}: {sorted(set(m.group(4) for m in recs))}")
check(any(m.group(7) == "CPL" for m in recs), "some records are consistency points")
check(any(m.group(6) in ("PAGE_DELTA", "PAGE_IMAGE") for m in recs), "page records listed")
offs = [int(m.group(1)) for m in recs]
check(offs == sorted(offs) and offs[0] == 32, f"offsets ascend from the 32-byte header: {offs[:3]}")
check(re.search(r"^end of hot log at offset \d+ \(end of file\)$", so, re.M) is not None,
      f"sn-hotlog says why it stopped:\n{so[-800:]}")
m = re.search(r"recovered at restart: (\d+) records, scl (\d+), max_cpl (\d+)", so)
check(m and int(m.group(2)) == scl_before, f"sn-hotlog recovered scl == INFO scl {scl_before}:\n{so[-800:]}")
check(int(info.get("records", m.group(1))) == int(m.group(1)),
      f"records: sn-hotlog {m.group(1)}, INFO {info.get('records')}")
check(int(m.group(3)) == int(info.get("max_cpl", m.group(3))), f"max_cpl {m.group(3)} vs INFO {info.get('max_cpl')}")
print(f"ok sn-hotlog: {len(recs)} records, checksums ok, recovered scl {m.group(2)} == INFO scl", flush=True)

frm = max(1, scl_before - 5)
rc, so2, _ = dump("sn-hotlog", d, "--from", frm)
r2 = [REC.match(l) for l in so2.splitlines()]
r2 = [x for x in r2 if x]
check(rc == 0 and r2 and all(int(x.group(2)) >= frm for x in r2) and len(r2) < len(recs),
      f"sn-hotlog --from {frm}: rc {rc}, {len(r2)} records")

# ---------------------------------------------------------------- sn-meta
rc, so, se = dump("sn-meta", d)
check(rc == 0, f"sn-meta exited {rc}:\n{so}\n{se}")
check("checksum ok" in so, f"sn-meta checksum ok:\n{so}")
me = re.search(r"^  epoch:\s+(\d+)$", so, re.M)
check(me and me.group(1) == info["epoch"], f"sn-meta epoch vs INFO epoch {info['epoch']}:\n{so}")
mc = re.search(r"^  coalesced lsn:\s+(\d+)$", so, re.M)
check(mc and mc.group(1) == info["coalesced_lsn"], f"sn-meta coalesced lsn vs INFO {info['coalesced_lsn']}:\n{so}")
check(re.search(r"^  truncation ranges: \d+$", so, re.M), f"sn-meta truncation ranges:\n{so}")
ms = re.search(r"^scl \(recovered from .*\): (\d+)$", so, re.M)
check(ms and int(ms.group(1)) == scl_before, f"sn-meta scl == INFO scl {scl_before}:\n{so}")
print(f"ok sn-meta: epoch {me.group(1)}, coalesced {mc.group(1)}, scl {ms.group(1)}", flush=True)

# ---------------------------------------------------------------- sn-pages
rc, so, se = dump("sn-pages", d)
check(rc == 0, f"sn-pages exited {rc}:\n{so[-2000:]}\n{se}")
pages = re.findall(r"^page (\d+)\s+id (\d+)\s+type (\d+)\s+lsn (\d+)\s+checksum (\S+)", so, re.M)
check(pages, f"sn-pages lists pages:\n{so[-1000:]}")
check(all(p[4] == "ok" and p[0] == p[1] for p in pages), f"pages ok, header id == slot:\n{so[-1000:]}")
check(all(int(p[3]) <= scl_before for p in pages), "page LSNs <= scl")
check(max(int(p[3]) for p in pages) > 0, "some page has a nonzero LSN")
pid = pages[-1][0]
rc, so, se = dump("sn-pages", d, pid)
check(rc == 0 and f"page {pid} of " in so and "checksum ok" in so and "nslots=" in so,
      f"sn-pages {pid}: rc {rc}\n{so[-1500:]}\n{se}")
rc, so, _ = dump("sn-pages", d, 16000000)
check(rc == 0 and "never written" in so, f"sn-pages of a page never written: rc {rc} {so}")
print(f"ok sn-pages: {len(pages)} pages, all checksums ok; page {pid} described", flush=True)

# ---------------------------------------------------------------- usage and missing files
rc, so, _ = dump("--help")
check(rc == 0 and all(s in so for s in ("sn-hotlog", "sn-meta", "sn-pages")), "--help mentions the subcommands")
for args in (("sn-hotlog",), ("sn-pages", d, "x"), ("sn-hotlog", d, "--from", "zz"), ("sn-meta", d, "extra")):
    rc, _, se = dump(*args)
    check(rc == 1, f"{args}: usage error must exit 1, got {rc} {se}")
missing = os.path.join(d, "no-such-dir")
for sub in ("sn-hotlog", "sn-meta", "sn-pages"):
    rc, _, se = dump(sub, missing)
    check(rc == 1 and "no-such-dir" in se, f"{sub} of a missing dir: rc {rc}, stderr {se!r}")
empty = os.path.join(os.path.dirname(d), "empty")
os.mkdir(empty)
for sub in ("sn-hotlog", "sn-meta", "sn-pages"):
    rc, _, se = dump(sub, empty)
    check(rc == 1 and se.strip(), f"{sub} of a dir without storage-node files: rc {rc}, stderr {se!r}")
print("ok usage errors and missing files exit 1 with a message", flush=True)
budget("before the corruption checks")

# ---------------------------------------------------------------- a flipped byte
k = len(recs) // 2
bad_off, next_off = int(recs[k].group(1)), int(recs[k + 1].group(1))
hl = os.path.join(d, "hotlog")
with open(hl, "r+b") as f:
    f.seek(next_off - 1)  # the last payload byte of record k
    b = f.read(1)
    f.seek(next_off - 1)
    f.write(bytes([b[0] ^ 0x5A]))
rc, so, se = dump("sn-hotlog", d)
check(rc == 2, f"sn-hotlog on a flipped byte must exit 2, got {rc}:\n{so[-1500:]}\n{se}")
good = [x for x in (REC.match(l) for l in so.splitlines()) if x]
check(len(good) == k, f"records listed before the bad one: {len(good)}, expected {k}")
check(re.search(rf"^off {bad_off}\s+INVALID: .*checksum BAD$", so, re.M),
      f"the bad record's line with checksum BAD at offset {bad_off}:\n{so[-1500:]}")
check(re.search(rf"^CORRUPTION at offset {bad_off}: checksum mismatch;", so, re.M),
      f"sn-hotlog reports corruption at offset {bad_off}:\n{so[-1500:]}")
check(f"a valid record follows at offset {next_off}" in so, f"the next valid record is found:\n{so[-800:]}")
rc, so, _ = dump("sn-meta", d)
check(rc == 0 and f"corrupt at offset {bad_off}" in so, f"sn-meta notes the corrupt hot log: rc {rc}\n{so}")
print(f"ok flipped byte in record {k} at offset {bad_off}: CORRUPTION reported, exit 2", flush=True)

meta = os.path.join(d, "meta")
with open(meta, "r+b") as f:
    f.seek(16)  # the epoch
    b = f.read(1)
    f.seek(16)
    f.write(bytes([b[0] ^ 0x01]))
rc, so, se = dump("sn-meta", d)
check(rc == 2 and "checksum BAD" in so and "CORRUPT" in so, f"sn-meta on a flipped byte: rc {rc}\n{so}\n{se}")
os.truncate(meta, 100)
rc, so, se = dump("sn-meta", d)
check(rc == 2 and "wrong size" in so, f"sn-meta on a short meta: rc {rc}\n{so}\n{se}")
print("ok flipped byte / short meta: sn-meta exits 2", flush=True)

budget("the end")
print(f"test_dump_sn: all ok ({time.time() - T0:.1f}s)", flush=True)
