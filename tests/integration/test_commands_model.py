"""Redis commands against a model, and through replication (docs/commands.md).

* A random sequence of string, hash and TTL commands (SET with NX/XX/GET/EX/
  KEEPTTL, GETSET, GETDEL, GETEX, APPEND, INCRBY/DECRBY, INCRBYFLOAT, SETNX,
  MSETNX, EXPIRE/PERSIST/TTL, HSET/HGET/HMGET/HDEL/HGETALL/HLEN/HEXISTS/HINCRBY,
  DEL/EXISTS/TYPE, MULTI/EXEC) on a classic primary; every reply is compared with
  a Python model of Redis. TTLs in the model run are long (hours), so replies do
  not depend on timing.
* A classic replica then holds exactly what the model holds (type, value, a
  TTL or none) once it has applied the primary's last commit.
* Short TTLs: keys set with PX 300 are visible on the primary and the replica,
  then hidden, then deleted by the primary (DBSIZE falls, a logged delete) and
  the replica's DBSIZE follows through the WAL.
* redis-py (Debian's python3-redis, run under /usr/bin/python3): a WATCH
  transaction under contention counts exactly, a foreign write aborts EXEC, and
  Lock (SET NX PX + the release/extend scripts) works.
* FLUSHDB empties primary and replica.
"""
import os
import random
import subprocess
import sys
import time

from harness import (Primary, Replica, Resp, RespError, check, fail, free_port, seed, wait_converged, wait_for,
                     wait_streaming)

rng = random.Random(seed())
pm, rm = free_port(), free_port()
p = Primary(args=["--metrics-port", str(pm)]).start()
r = Replica(p.port, "r1", args=["--metrics-port", str(rm)]).start()
wait_streaming(p, 1)
c = Resp(p.port)

HOUR_MS = 3600_000


class Model:
    def __init__(self):
        self.d = {}    # key -> ("s", bytes) | ("h", dict)
        self.ttl = {}  # key -> True (has a TTL)

    def typ(self, k):
        return self.d[k][0] if k in self.d else None

    def setv(self, k, v, keepttl=False, ttl=False):
        self.d[k] = ("s", v)
        if not keepttl:
            self.ttl.pop(k, None)
        if ttl:
            self.ttl[k] = True

    def delete(self, k):
        self.ttl.pop(k, None)
        return self.d.pop(k, None) is not None


WRONG = "WRONGTYPE"
m = Model()
keys = [b"k%d" % i for i in range(12)]
fields = [b"f%d" % i for i in range(5)]


def rv():
    return rng.choice([b"", b"1", b"-7", b"10", b"abc", b"\xfe\x01tagged", os.urandom(rng.randint(1, 40)),
                       b"x" * rng.choice([100, 3000])])


def expect_err(reply):
    return isinstance(reply, RespError)


def step():
    """One random command: (args, expected reply or a predicate)."""
    k = rng.choice(keys)
    t = m.typ(k)
    op = rng.randrange(26)
    if op == 0:
        v = rv()
        m.setv(k, v)
        return ("SET", k, v), "OK"
    if op == 1:
        v = rv()
        if t is None:
            m.setv(k, v)
            return ("SET", k, v, "NX"), "OK"
        return ("SET", k, v, "NX"), None
    if op == 2:
        v = rv()
        if t is None:
            return ("SET", k, v, "XX"), None
        m.setv(k, v, keepttl=True)
        return ("SET", k, v, "XX", "KEEPTTL"), "OK"
    if op == 3:
        v = rv()
        if t == "h":
            return ("SET", k, v, "GET"), WRONG
        old = m.d[k][1] if t else None
        m.setv(k, v, ttl=True)
        return ("SET", k, v, "GET", "PX", HOUR_MS), old
    if op == 4:
        if t == "h":
            return ("GET", k), WRONG
        return ("GET", k), m.d[k][1] if t else None
    if op == 5:
        v = rv()
        if t == "h":
            return ("GETSET", k, v), WRONG
        old = m.d[k][1] if t else None
        m.setv(k, v)
        return ("GETSET", k, v), old
    if op == 6:
        if t == "h":
            return ("GETDEL", k), WRONG
        old = m.d[k][1] if t else None
        m.delete(k)
        return ("GETDEL", k), old
    if op == 7:
        v = rv()
        if t == "h":
            return ("APPEND", k, v), WRONG
        nv = (m.d[k][1] if t else b"") + v
        m.setv(k, nv, keepttl=True)
        return ("APPEND", k, v), len(nv)
    if op == 8:
        by = rng.randint(-1000, 1000)
        if t == "h":
            return ("INCRBY", k, by), WRONG
        cur = m.d[k][1] if t else b"0"
        try:
            n = int(cur) + by
            if cur != str(int(cur)).encode():
                raise ValueError
        except ValueError:
            return ("INCRBY", k, by), "ERR"
        m.setv(k, str(n).encode(), keepttl=True)
        return ("INCRBY", k, by), n
    if op == 9:
        v = rv()
        if t is None:
            m.setv(k, v)
            return ("SETNX", k, v), 1
        return ("SETNX", k, v), 0
    if op == 10:
        k2 = rng.choice(keys)
        v1, v2 = rv(), rv()
        if t is None and m.typ(k2) is None:
            m.setv(k, v1)
            m.setv(k2, v2)
            return ("MSETNX", k, v1, k2, v2), 1
        return ("MSETNX", k, v1, k2, v2), 0
    if op == 11:
        if t is None:
            return ("EXPIRE", k, 7200), 0
        m.ttl[k] = True
        return ("EXPIRE", k, 7200), 1
    if op == 12:
        if t is None or k not in m.ttl:
            return ("PERSIST", k), 0
        del m.ttl[k]
        return ("PERSIST", k), 1
    if op == 13:
        if t is None:
            return ("TTL", k), -2
        if k not in m.ttl:
            return ("TTL", k), -1
        return ("TTL", k), lambda x: isinstance(x, int) and 3000 < x <= 7200
    if op == 14:
        f, v = rng.choice(fields), rv()
        if t == "s":
            return ("HSET", k, f, v), WRONG
        h = m.d[k][1] if t else {}
        added = 0 if f in h else 1
        h[f] = v
        m.d[k] = ("h", h)
        return ("HSET", k, f, v), added
    if op == 15:
        f = rng.choice(fields)
        if t == "s":
            return ("HGET", k, f), WRONG
        return ("HGET", k, f), (m.d[k][1].get(f) if t else None)
    if op == 16:
        fs = rng.sample(fields, 2)
        if t == "s":
            return ("HDEL", k, *fs), WRONG
        if t is None:
            return ("HDEL", k, *fs), 0
        h = m.d[k][1]
        n = sum(1 for f in fs if h.pop(f, None) is not None)
        if not h:
            m.delete(k)
        return ("HDEL", k, *fs), n
    if op == 17:
        if t == "s":
            return ("HGETALL", k), WRONG
        h = m.d[k][1] if t else {}
        return ("HGETALL", k), lambda x: isinstance(x, list) and dict(zip(x[::2], x[1::2])) == h
    if op == 18:
        f, by = rng.choice(fields), rng.randint(-50, 50)
        if t == "s":
            return ("HINCRBY", k, f, by), WRONG
        h = m.d[k][1] if t else {}
        try:
            cur = h.get(f, b"0")
            n = int(cur) + by
            if cur != str(int(cur)).encode():
                raise ValueError
        except ValueError:
            return ("HINCRBY", k, f, by), "ERR"
        h[f] = str(n).encode()
        m.d[k] = ("h", h)
        return ("HINCRBY", k, f, by), n
    if op == 19:
        return ("TYPE", k), {None: "none", "s": "string", "h": "hash"}[t]
    if op == 20:
        k2 = rng.choice(keys)
        return ("EXISTS", k, k2), (k in m.d) + (k2 in m.d)
    if op == 21:
        return ("DEL", k), 1 if m.delete(k) else 0
    if op == 22:
        if t == "s":
            return ("HLEN", k), WRONG
        return ("HLEN", k), len(m.d[k][1]) if t else 0
    if op == 23:
        fs = rng.sample(fields, 3)
        if t == "s":
            return ("HMGET", k, *fs), WRONG
        h = m.d[k][1] if t else {}
        return ("HMGET", k, *fs), [h.get(f) for f in fs]
    if op == 24:
        if t == "h":
            return ("GETEX", k, "PERSIST"), WRONG
        if t is None:
            return ("GETEX", k, "PERSIST"), None
        m.ttl.pop(k, None)
        return ("GETEX", k, "PERSIST"), m.d[k][1]
    f = rng.choice(fields)
    if t == "s":
        return ("HEXISTS", k, f), WRONG
    return ("HEXISTS", k, f), 1 if t and f in m.d[k][1] else 0


def check_reply(args, want, got):
    if want == WRONG:
        ok = isinstance(got, RespError) and str(got).startswith("WRONGTYPE")
    elif want == "ERR":
        ok = isinstance(got, RespError)
    elif callable(want):
        ok = want(got)
    else:
        ok = got == want
    if not ok:
        fail(f"{args!r}: expected {want!r}, got {got!r} (history: {history[-6:]!r})")


n_ops = 3000
history = []
for i in range(n_ops):
    if rng.random() < 0.05:  # a MULTI block of a few commands, replies checked from EXEC's array
        steps = [step() for _ in range(rng.randint(2, 5))]
        check(c.call("MULTI") == "OK", "MULTI")
        for a, _ in steps:
            c.call(*a)
        got = c.call("EXEC")
        check(isinstance(got, list) and len(got) == len(steps), f"EXEC: {got!r}")
        for (a, want), g in zip(steps, got):
            check_reply(a, want, g)
        continue
    a, want = step()
    history.append(a)
    check_reply(a, want, c.call(*a))
print(f"model: {n_ops} steps, {len(m.d)} keys ({sum(1 for v in m.d.values() if v[0] == 'h')} hashes, "
      f"{len(m.ttl)} with a TTL) agree with the primary")


def snapshot(port):
    x = Resp(port)
    out = {}
    for k in keys:
        t = x.call("TYPE", k)
        if t == "none":
            continue
        v = x.call("GET", k) if t == "string" else dict(zip(*[iter(x.call("HGETALL", k))] * 2))
        out[k] = (t, v, x.call("PTTL", k) > 0)
    x.close()
    return out


want = {k: ("string" if t == "s" else "hash", v, k in m.ttl) for k, (t, v) in m.d.items()}
wait_converged(p, [r])
check(snapshot(p.port) == want, "primary state equals the model")
got = snapshot(r.port)
check(got == want, "replica state equals the model: %r" % [(k, got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)][:3])
print("replica equals the model (types, values, TTL present or not)")

# ---- short TTLs: hidden by time, deleted by the writer, the delete replicated
base = int(c.call("DBSIZE"))
t_set = time.time()
c.pipeline([("SET", f"ttl:{i}", "v", "PX", 1500) for i in range(200)])
c.call("HSET", "ttlhash", "f", "v")
c.call("PEXPIRE", "ttlhash", 1500)
check(int(c.call("DBSIZE")) == base + 201, "201 keys with a TTL added")
check(c.call("INFO", "keyspace").decode().find(f"expires={len(m.ttl) + 201}") > 0,
      "INFO keyspace counts the keys with a TTL: " + c.call("INFO", "keyspace").decode())
wait_converged(p, [r])
rr = Resp(r.port)
if time.time() < t_set + 1.2:  # (a slow machine may have passed the expiry already)
    check(rr.call("GET", "ttl:7") == b"v" and rr.call("HGET", "ttlhash", "f") == b"v",
          "the replica sees TTL keys before they expire")
time.sleep(max(0.0, t_set + 1.7 - time.time()))
check(c.call("GET", "ttl:7") is None and c.call("EXISTS", "ttlhash") == 0, "expired keys are hidden on the primary")
wait_for("the primary deletes its expired keys", lambda: int(c.call("DBSIZE")) == base, timeout=10)
wait_converged(p, [r])
check(int(rr.call("DBSIZE")) == base, "the replica applied the primary's expiry deletes")
check(rr.call("GET", "ttl:7") is None, "expired key gone on the replica")
print(f"short TTLs: 201 keys expired and deleted on the primary, the deletes replicated")

# ---- redis-py: WATCH transactions and Lock
pyprog = r'''
import sys, threading, redis
port = int(sys.argv[1])
r = redis.Redis(port=port)
r.set("counter", 0)
def worker(n):
    c = redis.Redis(port=port)
    for _ in range(n):
        with c.pipeline() as p:
            while True:
                try:
                    p.watch("counter")
                    v = int(p.get("counter"))
                    p.multi()
                    p.set("counter", v + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
ts = [threading.Thread(target=worker, args=(40,)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
assert r.get("counter") == b"160", r.get("counter")
# a foreign write between WATCH and EXEC aborts it
p = r.pipeline(); p.watch("w"); other = redis.Redis(port=port); other.set("w", "x"); p.multi(); p.set("w", "y")
try:
    p.execute(); raise SystemExit("EXEC should have been aborted")
except redis.WatchError:
    pass
assert r.get("w") == b"x"
lock = r.lock("lk", timeout=2)
assert lock.acquire(blocking=False)
assert not r.lock("lk", timeout=2).acquire(blocking=False)
assert lock.extend(3)
assert 4000 < r.pttl("lk") <= 5000, r.pttl("lk")
assert lock.reacquire() and 1000 < r.pttl("lk") <= 2000
lock.release()
assert r.get("lk") is None
with r.lock("lk2", timeout=5, blocking_timeout=1):
    assert r.exists("lk2")
assert not r.exists("lk2")
h = r.execute_command("HELLO", 2)
assert h[h.index(b"proto") + 1] == 2, h
assert r.client_id() > 0 and len(r.time()) == 2
print("redis-py ok")
'''
res = subprocess.run(["/usr/bin/python3", "-c", pyprog, str(p.port)], capture_output=True, text=True, timeout=120)
if res.returncode != 0 and "No module named 'redis'" in res.stderr:
    print("SKIP redis-py checks: python3-redis is not installed (scripts/install-deps installs it)")
else:
    check(res.returncode == 0 and "redis-py ok" in res.stdout, f"redis-py: {res.stdout}{res.stderr}")
    print("redis-py: WATCH transaction (4 threads x 40), WatchError on a foreign write, Lock acquire/extend/release")

# ---- INFO like Redis: memory, clients, keyspace; redis-cli --stat; ROLE with listening ports
mem = p.info("memory")
check(int(mem["used_memory"]) > int(mem["used_memory_buffer_pool"]) > 0 and int(mem["used_memory_rss"]) > 0,
      f"INFO memory: {mem}")
cl = p.info("clients")
check(int(cl["connected_clients"]) >= 1 and cl["blocked_clients"] == "0", f"INFO clients: {cl}")
check(p.info("keyspace")["db0"].startswith(f"keys={c.call('DBSIZE')},expires="), "INFO keyspace")
st = subprocess.run(["timeout", "2.5", "stdbuf", "-oL", "redis-cli", "-p", str(p.port), "--stat", "-i", "1"],
                    capture_output=True, text=True).stdout.splitlines()
row = [ln.split() for ln in st if ln[:1].isdigit()]
check(row and int(row[0][0]) == int(c.call("DBSIZE")) and row[0][1][-1] in "KMG" and int(row[0][2]) >= 1,
      f"redis-cli --stat prints sane numbers: {st}")
role = c.call("ROLE")
check(role[0] == b"master" and [x[1] for x in role[2]] == [str(r.port).encode()],
      f"ROLE lists the replica with the port it listens on ({r.port}): {role}")
check(f"port={r.port}," in p.cli("INFO", "replication"), "INFO replication slave0 port is the listening port")
print(f"INFO memory/clients/keyspace, redis-cli --stat: {row[0]}, ROLE: {role}")

# ---- Prometheus metrics, parsed with the real parser (python3-prometheus-client)
promprog = r'''
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
out = {}
for port in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    out[port] = fams
p, r = out[sys.argv[1]], out[sys.argv[2]]
h = p["redoubt_commit_latency_seconds"]
count = [s.value for s in h.samples if s.name.endswith("_count")][0]
assert h.type == "histogram" and count > 1000, (h.type, count)
inf = [s.value for s in h.samples if s.labels.get("le") == "+Inf"][0]
assert inf == count
assert [s.labels for s in p["redoubt_role"].samples] == [{"role": "primary"}]
assert p["redoubt_wal_bytes"].samples[0].value > 0 and p["redoubt_wal_group_commit_max"].samples[0].value >= 1
lag = p["redoubt_replica_lag_bytes"].samples
assert [s.labels for s in lag] == [{"replica": "r1"}], lag
assert p["redoubt_connected_clients"].samples[0].value >= 0
assert [s.labels for s in r["redoubt_role"].samples] == [{"role": "replica"}]
assert "redoubt_apply_lsn" in r and "redoubt_keyspace_keys" in r, sorted(r)[:20]
print("metrics ok", len(p), "families on the primary,", len(r), "on the replica, commits timed:", int(count))
'''
res = subprocess.run(["/usr/bin/python3", "-c", promprog, str(pm), str(rm)], capture_output=True, text=True, timeout=60)
if res.returncode != 0 and "No module named 'prometheus_client'" in res.stderr:
    print("SKIP metrics parse: python3-prometheus-client is not installed (scripts/install-deps installs it)")
else:
    check(res.returncode == 0 and "metrics ok" in res.stdout, f"metrics: {res.stdout}{res.stderr}")
    print(res.stdout.strip())

# ---- FLUSHDB: everything goes, on the replica too
for i in range(500):
    c.call("SET", f"fl:{i}", "v")
check(c.call("FLUSHDB") == "OK" and c.call("DBSIZE") == 0, "FLUSHDB empties the primary")
wait_converged(p, [r])
check(rr.call("DBSIZE") == 0, "FLUSHDB reached the replica")
check(isinstance(rr.call("SET", "a", "b"), RespError), "replica refuses writes")
print("FLUSHDB replicated")
c.close()
rr.close()
r.stop()
p.stop()
print("test_commands_model: OK")
