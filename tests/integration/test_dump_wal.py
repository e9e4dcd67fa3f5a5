"""redoubt-dump wal, like pg_waldump: --stats, -n, --to, --type, --page, a --from inside a record
(starts at the next record, with a note, exit 0), --follow (sees records appended while it runs,
stops on SIGINT), and key names in PAGE_DELTA lines. Real server, real files."""
import re
import signal
import subprocess
import time

from harness import DUMP, Server, check, tmpdir

s = Server(dir=tmpdir() + "/d").start()
for i in range(40):
    check(s.cli("SET", f"dumpkey:{i:03d}", f"value-{i}") == "OK", "SET")
wal = lambda *a, **kw: subprocess.run([DUMP, "wal", s.dir, *a], capture_output=True, text=True, timeout=30, **kw)

r = wal()
check(r.returncode == 0, f"dump exits 0: {r.stderr}")
lines = [l for l in r.stdout.splitlines() if l.startswith("lsn ")]
commits = [l for l in lines if " COMMIT " in l]
check(len(commits) >= 40, f"one COMMIT per SET: {len(commits)}")
check(any('"dumpkey:039' in l for l in lines), "a PAGE_DELTA line shows the key it wrote")

r = wal("--stats")
check(re.search(r"^COMMIT\s+\d+", r.stdout, re.M) and "full-page images:" in r.stdout, f"--stats:\n{r.stdout}")
check(not any(l.startswith("lsn ") for l in r.stdout.splitlines()), "--stats prints no records")

r = wal("--type", "COMMIT", "-n", "3")
got = [l for l in r.stdout.splitlines() if l.startswith("lsn ")]
check(len(got) == 3 and all(" COMMIT " in l for l in got), f"--type COMMIT -n 3:\n{r.stdout}")

second = got[1].split()[1]
r = wal("--to", second, "--type", "COMMIT")
got2 = [l for l in r.stdout.splitlines() if l.startswith("lsn ")]
check(len(got2) == 1 and got2[0] == got[0], f"--to stops before the record at {second}:\n{r.stdout}")

hi, lo = second.split("/")
inside = (int(hi, 16) << 32 | int(lo, 16)) + 8
r = wal("--from", f"{inside >> 32:X}/{inside & 0xffffffff:X}", "-n", "1")
check(r.returncode == 0 and "is not the start of a record" in r.stdout, f"--from inside a record:\n{r.stdout}")
nxt = [l for l in r.stdout.splitlines() if l.startswith("lsn ")]
check(len(nxt) == 1 and int(nxt[0].split()[1].split("/")[1], 16) > int(lo, 16), f"next record: {nxt}")

r = wal("--page", "0", "--type", "PAGE_DELTA")
check(all(" page 0 " in l for l in r.stdout.splitlines() if l.startswith("lsn ")), "--page 0")

f = subprocess.Popen([DUMP, "wal", s.dir, "--follow", "--type", "COMMIT"], stdout=subprocess.PIPE, text=True)
time.sleep(0.5)
check(s.cli("SET", "followed", "1") == "OK", "SET while following")
time.sleep(0.8)
f.send_signal(signal.SIGINT)
out, _ = f.communicate(timeout=10)
n_follow = sum(1 for l in out.splitlines() if l.startswith("lsn "))
check(n_follow == len(commits) + 1, f"--follow printed the new commit too ({n_follow} vs {len(commits) + 1})")
print("ok", flush=True)
