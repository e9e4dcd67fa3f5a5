"""A full disk: the server stops with a clear message (PANIC, exit 70) instead
of acknowledging anything it could not make durable, and every acknowledged
write is there when the data directory is moved to a disk with room.

Needs a small filesystem to fill: a tmpfs mounted by the test (root only;
without the permission the test says SKIP and why, and passes)."""
import os
import shutil
import subprocess

from harness import BENCH, Server, bench, check, fail, tmpdir

mnt = tmpdir("redoubt-full-")
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mnt], capture_output=True, text=True)
if r.returncode != 0:
    print(f"SKIP: cannot mount a 40 MiB tmpfs to fill ({r.stderr.strip() or 'not root'})")
    raise SystemExit(0)
try:
    s = Server(dir=os.path.join(mnt, "data"), args=["--wal-segment-mb", "4", "--checkpoint-wal-mb", "8"])
    s.log_path = os.path.join(tmpdir(), "server.log")  # the log must not fill the same disk
    s.start()
    state = os.path.join(tmpdir(), "state.txt")
    load = subprocess.run([BENCH, "--mode", "acked", "--port", str(s.port), "--clients", "4", "--duration", "60",
                           "--value-size", "20000", "--keyspace", "4000", "--key-prefix", "full", "--state", state],
                          capture_output=True, text=True, timeout=120)
    s.proc.wait(timeout=30)
    log = s.log()
    print("server exit status:", s.proc.returncode, "| bench:", (load.stdout.strip().splitlines() or ["?"])[-1])
    check(s.proc.returncode == 70, f"the server stopped with PANIC status 70 on a full disk, got {s.proc.returncode}:\n{log}")
    check("No space left on device" in log, "the log names the cause:\n" + log)
    check(os.path.exists(state), "the load wrote its state")
    # Move the directory to a disk with room and check every acknowledged write.
    moved = os.path.join(tmpdir(), "moved")
    shutil.copytree(s.dir, moved)
    t = Server(dir=moved).start()
    v = bench("--mode", "verify", "--port", t.port, "--state", state, check_rc=False)
    print(v.stdout.strip().splitlines()[-2] if v.stdout.strip() else v.stderr)
    check(v.returncode == 0, "every acknowledged write survived the full disk:\n" + v.stdout + v.stderr)
    check(t.stop() == 0, "clean stop")
finally:
    subprocess.run(["umount", "-l", mnt], capture_output=True)
print("ok")
