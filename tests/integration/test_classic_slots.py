"""Replication slots survive a primary restart (DIR/slots, PostgreSQL's pg_replslot).

1. A primary (1 MiB WAL segments, a checkpoint every 2 MiB of WAL, each removing
   old segments) and replica r1; r1 is killed with kill -9.
2. ~6 MiB more WAL on the primary: r1's slot keeps the segments it needs.
3. kill -9 of the primary, restart on the same dir: its log says the slot was
   restored; ~6 MiB more WAL (more checkpoints).
4. r1 restarts and resumes streaming from its own WAL position — no re-clone —
   and converges to the primary's exact contents.
5. A corrupt slots file stops the primary at start-up with a message naming the
   file; without the file it starts (and says nothing of slots).
"""
import os
import random
import re
import subprocess

from harness import (DUMP, Primary, Replica, Resp, check, diff_dumps, dump, repl_info, seed, wait_converged,
                     wait_streaming)

rng = random.Random(seed())
common = ["--wal-segment-mb", "1", "--checkpoint-wal-mb", "2"]


def write_mb(node, mb, tag):
    """At least mb MiB of WAL: 900-byte values over a fresh key range, pipelined."""
    c = Resp(node.port)
    try:
        for b in range(0, mb * 1024, 256):
            replies = c.pipeline([("SET", f"{tag}:{i:07d}", rng.randbytes(450).hex()) for i in range(b, b + 256)])
            check(all(r == "OK" for r in replies), f"SET replies: {replies[:3]}")
    finally:
        c.close()


def wal_segments(node):
    return sorted(f for f in os.listdir(os.path.join(node.dir, "wal")) if len(f) == 24)


p = Primary(args=common).start()
r1 = Replica(p.port, "r1", args=common).start()
wait_streaming(p, 1)
write_mb(p, 1, "a")
wait_converged(p, [r1])
r1_lsn = int(repl_info(r1)["flush_lsn"])
r1.kill9()
print(f"r1 killed at flush_lsn {r1_lsn}", flush=True)

write_mb(p, 6, "b")
segs = wal_segments(p)
print(f"primary: {len(segs)} WAL segments kept while r1 is away ({segs[0]} .. {segs[-1]})", flush=True)
check(int(segs[0][8:], 16) <= r1_lsn >> 20, f"the segment holding r1's position {r1_lsn} must be kept: {segs}")

at = p.log_size()
p.kill9()
p.start()
log = p.log_since(at)
out = subprocess.run([DUMP, "slots", p.dir], capture_output=True, text=True)
check(out.returncode == 0 and re.search(r"r1 +restart lsn", out.stdout) is not None,
      f"redoubt-dump slots shows r1's slot: {out.stdout}{out.stderr}")
print(out.stdout.strip(), flush=True)
check(re.search(r'replication slot "r1" restored', log) is not None,
      f"the restarted primary must restore r1's slot from DIR/slots; its log:\n{log}")
write_mb(p, 6, "c")
segs = wal_segments(p)
check(int(segs[0][8:], 16) <= r1_lsn >> 20,
      f"after the restart and more checkpoints the segment holding r1's position {r1_lsn} must still be kept: {segs}")
print(f"primary restarted: slot restored, {len(segs)} WAL segments kept", flush=True)

at = r1.log_size()
r1.start()
wait_streaming(p, 1)
off = wait_converged(p, [r1])
rlog = r1.log_since(at)
check(re.search(r"clon", rlog, re.I) is None, f"r1 must resume from its own files, not re-clone:\n{rlog}")
d = diff_dumps(dump(p.port), dump(r1.port), "primary", "r1")
check(not d, f"r1 differs from the primary:\n{d}")
print(f"r1 resumed streaming without re-cloning and converged at {off}", flush=True)

# A corrupt slots file: a clear refusal, nothing guessed.
p.stop()
path = os.path.join(p.dir, "slots")
with open(path, "r+b") as f:
    f.seek(20)
    b = f.read(1)
    f.seek(20)
    f.write(bytes([b[0] ^ 0xFF]))
at = p.log_size()
proc = p.start(wait=False).proc
rc = proc.wait(timeout=30)
log = p.log_since(at)
check(rc != 0 and "slots" in log and "unreadable" in log,
      f"a corrupt slots file must stop the start-up with a message (exit {rc}):\n{log}")
print(f"corrupt slots file: start-up refused (exit {rc}): "
      f"{[l for l in log.splitlines() if 'slots' in l][0].split('] ')[-1]}", flush=True)
os.unlink(path)
p.start()
check(p.cli("SET", "after", "slots").strip() == "OK", "the primary starts without a slots file")
print("ok")
