"""Damaged files: a torn WAL tail is truncated and start-up continues with
every committed write; a corrupted record before the tail stops start-up
with a message naming the segment file and offset; a corrupted data page is
reported (never served) and the server stays up."""
import glob
import os
import random
import shutil

from harness import Server, check, seed, tmpdir

rng = random.Random(seed())
base = Server(args=["--checkpoint-wal-mb", "512"]).start()
base.cli(stdin="".join(f"SET key:{i:05d} value-{i}\n" for i in range(3000)))
check(base.cli("DBSIZE") == "3000", "3000 keys written")
base.kill9()  # the WAL since the last checkpoint must be replayed


def segments(d):
    return sorted(glob.glob(os.path.join(d, "wal", "*")))


def end_of_log(path):
    data = open(path, "rb").read()
    end = len(data.rstrip(b"\0"))
    return (end + 7) // 8 * 8


def copy(name):
    d = os.path.join(tmpdir(), name)
    shutil.copytree(base.dir, d)
    os.remove(os.path.join(d, "LOCK")) if os.path.exists(os.path.join(d, "LOCK")) else None
    return d

# 1. Torn tail: garbage after the last record.
d = copy("torn")
seg = segments(d)[-1]
end = end_of_log(seg)
with open(seg, "r+b") as f:
    f.seek(end)
    f.write(bytes(rng.getrandbits(8) for _ in range(200)))
s = Server(dir=d).start()
check(s.cli("DBSIZE") == "3000", "all committed keys after a torn tail: " + s.cli("DBSIZE"))
check(s.cli("GET", "key:02999") == "value-2999", "last key present")
check(s.cli("SET", "after", "1") == "OK", "writes continue after truncating the tail")
s.stop()
s.start()
check(s.cli("GET", "after") == "1" and s.cli("DBSIZE") == "3001", "restart after the truncated tail")
s.stop()

# 2. Corruption before the tail: flip a byte in the middle of the log.
d = copy("corrupt")
seg = segments(d)[0]
end = end_of_log(seg)
pos = end // 2
with open(seg, "r+b") as f:
    f.seek(pos)
    b = f.read(1)
    f.seek(pos)
    f.write(bytes([b[0] ^ 0x5A]))
s = Server(dir=d)
s.start(wait=False)
s.proc.wait(timeout=30)
log = s.log()
check(s.proc.returncode != 0, "start-up refused on mid-log corruption")
check(os.path.basename(seg) in log and "offset" in log, "message names the segment file and offset:\n" + log)

# 3. A corrupted data page is detected, not served.
d = copy("page")
s = Server(dir=d).start()
s.stop()  # checkpoint: pages on disk, nothing to replay
data = os.path.join(d, "data.rdb")
size = os.path.getsize(data)
with open(data, "r+b") as f:
    for page in range(1, size // 8192):
        f.seek(page * 8192 + 4000)
        f.write(b"\xff\xfe\xfd\xfc")
s.start()
out = s.cli("GET", "key:01234")
check("corrupt" in out.lower(), "GET from a corrupted page reports corruption, got: " + out)
check(s.cli("PING") == "PONG", "server stays up")
# A write that must read a corrupted page fails before changing anything: an error, not a
# stop (commands.c write_failed), and nothing is written to the log for it.
wal_before = s.info("persistence").get("wal_commits")
out = s.cli("SET", "key:01234", "new-value")
check(out.startswith("ERR write failed, nothing changed") and "corrupt" in out.lower(),
      "SET into a corrupted page answers an error, got: " + out)
check(s.cli("PING") == "PONG", "server stays up after the failed write")
check(s.info("persistence").get("wal_commits") == wal_before, "no commit logged for the failed write")
out = s.cli("INCR", "key:01234")
check(out.startswith("ERR"), "INCR of a key on a corrupted page answers an error, got: " + out)
check(s.cli("PING") == "PONG", "server stays up after the failed INCR")
print("writes into a corrupted page: errors, the server stays up, nothing logged", flush=True)
s.kill9()
print("ok")
