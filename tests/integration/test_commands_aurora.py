"""Typed values and TTLs through aurora: a writer on six storage nodes and a reader.

* HSET, SET PX/EX, EXPIRE, APPEND, INCRBYFLOAT on the writer; the reader (redo feed) answers the
  same once caught up: types, values, TTL present or not.
* Keys set with PX 1500: visible on the reader, then hidden, then deleted by the writer (DBSIZE
  falls on the writer; the reader's DBSIZE follows through the redo stream, X1/X2).
* ROLE on the writer lists the reader; INFO keyspace counts keys with a TTL on the writer.
"""
import time

from harness import AuroraCluster, Resp, check, wait_for, wait_writable

cl = AuroraCluster(nreaders=0)
cl.start()
w = cl.writer
wait_writable(w)
rd = cl.add_reader()
c, rc = Resp(w.port), Resp(rd.port)
c.call("HSET", "h", "a", "1", "b", "2")
c.call("HINCRBY", "h", "a", 41)
c.call("SET", "s", "x", "EX", 3600)
c.call("APPEND", "s", "yz")
c.call("INCRBYFLOAT", "f", "1.5")
c.call("SET", "p", "v")
c.call("EXPIRE", "p", 7200)
c.call("PERSIST", "p")
base = c.call("DBSIZE")
t_set = time.time()
c.pipeline([("SET", f"t:{i}", "v", "PX", 1500) for i in range(100)])
cl.wait_reader_caught_up(rd)


def state(x):
    return (x.call("HGETALL", "h"), x.call("GET", "s"), x.call("TTL", "s") > 3000, x.call("GET", "f"),
            x.call("TTL", "p"), x.call("TYPE", "h"))


check(state(c) == ([b"a", b"42", b"b", b"2"], b"xyz", True, b"1.5", -1, "hash"), f"writer: {state(c)}")
check(state(rc) == state(c), f"reader equals writer: {state(rc)}")
check(f"expires={100 + 1}" in c.call("INFO", "keyspace").decode(), c.call("INFO", "keyspace"))
role = c.call("ROLE")
check(role[0] == b"master" and len(role[2]) == 1, f"the writer's ROLE lists its reader: {role}")
if time.time() < t_set + 1.2:
    check(rc.call("GET", "t:5") == b"v", "the reader sees a TTL key before it expires")
time.sleep(max(0.0, t_set + 1.7 - time.time()))
check(c.call("GET", "t:5") is None, "hidden on the writer")
wait_for("the writer deletes its expired keys", lambda: c.call("DBSIZE") == base, timeout=15)
cl.wait_reader_caught_up(rd)
check(rc.call("DBSIZE") == base and rc.call("GET", "t:5") is None, "the reader follows the deletes")
print(f"aurora: typed values and TTLs equal on writer and reader; 100 keys expired, deleted, replicated; ROLE {role}")
c.close()
rc.close()
print("test_commands_aurora: OK")
