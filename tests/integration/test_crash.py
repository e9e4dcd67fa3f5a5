"""kill -9 under write load, at random moments, many rounds: after each
restart every acknowledged write (and every acknowledged MULTI/EXEC as a
whole) is present, and no unacknowledged transaction is half-present.

Load and checking are done by redoubt-bench --mode acked / --mode verify:
each client writes its own keys with one request outstanding, so for every
key the server must hold either the last acknowledged value or the one
in-flight value, and the two keys of a MULTI block must hold the same value.
"""
import os
import random
import subprocess
import time

from harness import BENCH, Server, bench, check, fail, seed, tmpdir

ROUNDS = int(os.environ.get("ROUNDS", "10"))
rng = random.Random(seed())
work = tmpdir()
# Small checkpoint distance and segments so rounds cross checkpoints, FPIs and segment switches.
s = Server(args=["--checkpoint-wal-mb", "8", "--wal-segment-mb", "4", "--cache-mb", "8"])
s.start()
total_acked = 0
for r in range(ROUNDS):
    state = os.path.join(work, f"state-{r}.txt")
    clients = rng.choice([1, 4, 16])
    multi = ["--multi"] if r % 2 == 1 else []
    load = subprocess.Popen([BENCH, "--mode", "acked", "--port", str(s.port), "--clients", str(clients),
                             "--duration", "30", "--keyspace", "20000", "--value-size", str(rng.choice([20, 100, 3000])),
                             "--key-prefix", f"r{r}", "--seed", str(rng.randrange(1 << 30)),
                             "--state", state] + multi,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    delay = rng.uniform(0.3, 2.5)
    time.sleep(delay)
    if load.poll() is not None:
        fail("load ended before the kill:\n" + load.stdout.read())
    s.kill9()
    out, _ = load.communicate(timeout=60)
    check(os.path.exists(state), "bench wrote its state file:\n" + out)
    s.start(timeout=60)
    v = bench("--mode", "verify", "--port", s.port, "--state", state, check_rc=False)
    print(f"round {r}: clients={clients} multi={bool(multi)} kill after {delay:.2f}s; {out.strip().splitlines()[-1] if out.strip() else ''}; verify: {v.stdout.strip().splitlines()[-1] if v.stdout.strip() else v.stderr}", flush=True)
    if v.returncode != 0:
        fail(f"round {r}: acknowledged writes lost or torn after kill -9:\n{v.stdout}\n{v.stderr}\nserver log:\n{s.log()}")
check(s.stop() == 0, "clean stop at the end")
print("ok")
