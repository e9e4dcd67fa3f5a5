"""Aurora readers after a failover: a second reader is re-pointed to the new
writer with REPLICAOF host port, drops its page cache on the new subscription
(the invalidations it missed are gone) and then serves exactly the new writer's
data; a reader that loses its feed and comes back also never serves a stale page."""
import os
import random

from harness import (AuroraCluster, Resp, bench, check, fail, seed, tmpdir, verify_state, wait_for,
                     wait_writable)

rng = random.Random(seed())
# The redo feed (opt-in; the default page-id feed is covered by test_aurora_reader).
cl = AuroraCluster(nreaders=2, writer_args=["--reader-feed", "redo"]).start()
w, r1, r2 = cl.writer, cl.readers[0], cl.readers[1]
# Data on the old writer, cached by both readers.
c = Resp(w.port)
for i in range(2000):
    check(c.call("SET", f"k:{i:05d}", "v1") == "OK", "SET on the writer")
c.close()
cl.wait_reader_caught_up(r2)
rc = Resp(r2.port)
check(rc.call("GET", "k:00042") == b"v1", "r2 reads the first value")
check(all(v == b"v1" for v in rc.call("MGET", *[f"k:{i:05d}" for i in range(2000)])), "r2 caches every page")
rc.close()

# Failover: kill the writer, promote r1, overwrite the keys on the new writer.
w.kill9()
cl.promote(r1)
wait_writable(r1)
c = Resp(r1.port)
for i in range(2000):
    check(c.call("SET", f"k:{i:05d}", "v2") == "OK", "SET on the new writer")
c.close()

# r2 still follows the dead writer: re-point it.
out = r2.cli("REPLICAOF", "127.0.0.1", r1.port)
check(out.strip() == "OK", f"REPLICAOF on a reader: {out!r}")
cl.wait_reader_caught_up(r2)
rc = Resp(r2.port)
vals = rc.call("MGET", *[f"k:{i:05d}" for i in range(2000)])
rc.close()
stale = [i for i, v in enumerate(vals) if v != b"v2"]
check(not stale, f"r2 serves stale values after re-pointing: {len(stale)} keys, e.g. {stale[:5]}")
check("dropping the page cache" in r2.log(), "r2 says it dropped its cache on the new subscription")
print("re-pointed reader serves the new writer's data (2000 keys)")

# Feed loss and reconnect: writes made while the reader is away must not leave stale pages.
r2.proc.send_signal(__import__("signal").SIGSTOP)
c = Resp(r1.port)
for i in range(0, 2000, 7):
    check(c.call("SET", f"k:{i:05d}", "v3") == "OK", "SET while r2 is paused")
c.close()
r2.proc.send_signal(__import__("signal").SIGCONT)
cl.wait_reader_caught_up(r2)
rc = Resp(r2.port)
vals = rc.call("MGET", *[f"k:{i:05d}" for i in range(2000)])
rc.close()
bad = [i for i, v in enumerate(vals) if v != (b"v3" if i % 7 == 0 else b"v2")]
check(not bad, f"r2 serves stale values after a pause: {bad[:5]}")
print("ok")
