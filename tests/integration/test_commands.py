"""Commands through redis-cli against a real redoubt process, persistence
across a clean restart, AUTH, and redis-benchmark working unchanged."""
import os
import subprocess

from harness import Server, check, fail, tmpdir

s = Server().start()

check(s.cli("PING") == "PONG", "PING")
check(s.cli("ECHO", "hello") == "hello", "ECHO")
check(s.cli("SET", "k1", "v1") == "OK", "SET")
check(s.cli("GET", "k1") == "v1", "GET")
check(s.cli("GET", "missing") == "", "GET missing is nil")
check(s.cli("SET", "k1", "v2", "NX") == "", "SET NX on an existing key does nothing")
check(s.cli("GET", "k1") == "v1", "SET NX kept the old value")
check(s.cli("SET", "k2", "x", "XX") == "", "SET XX on a missing key does nothing")
check(s.cli("SET", "k1", "v3", "GET") == "v1", "SET GET returns the old value")
check(s.cli("EXISTS", "k1", "k2", "k1") == "2", "EXISTS counts")
check(s.cli("INCR", "n") == "1" and s.cli("INCR", "n") == "2", "INCR")
check(s.cli("INCRBY", "n", "40") == "42" and s.cli("DECR", "n") == "41", "INCRBY/DECR")
check("not an integer" in s.cli("INCR", "k1"), "INCR on a non-integer is an error")
check(s.cli("MSET", "a", "1", "b", "2", "c", "3") == "OK", "MSET")
check(s.cli("MGET", "a", "b", "nope", "c") == "1\n2\n\n3", "MGET: " + s.cli("MGET", "a", "b", "nope", "c"))
check(s.cli("DEL", "a", "b", "nope") == "2", "DEL counts deleted keys")
check(s.cli("DBSIZE") == "3", "DBSIZE after DEL: " + s.cli("DBSIZE"))
check("unknown command 'FOO'" in s.cli("FOO", "bar"), "unknown command error")
check("wrong number of arguments for 'get'" in s.cli("GET"), "arity error")
check("key too large" in s.cli("SET", "k" * 2000, "v"), "oversized key error")
check(s.cli("SET", "e", "1", "EX", "10") == "OK" and 0 < int(s.cli("TTL", "e")) <= 10, "SET EX sets a TTL")
check("invalid expire time" in s.cli("SET", "e", "1", "EX", "0"), "SET EX 0 is refused")
check(s.cli("DEL", "e") == "1", "DEL of a key with a TTL")
check(s.cli("ROLE").splitlines()[0] == "master", "ROLE")
info = s.info()
check(info.get("redoubt_role") == "standalone" and "wal_fsyncs" in info, "INFO fields")
check(s.cli("CONFIG", "GET", "appendonly") == "appendonly\nno", "CONFIG GET")

# MULTI/EXEC on one connection (redis-cli reads commands from stdin).
out = s.cli(stdin="MULTI\nSET t1 a\nINCR tn\nSET t2 b\nEXEC\n")
check(out.splitlines()[-3:] == ["OK", "1", "OK"], "MULTI/EXEC replies: " + out)
out = s.cli(stdin="MULTI\nSET t3 a\nNOSUCH\nEXEC\nGET t3\n")
check("EXECABORT" in out and s.cli("EXISTS", "t3") == "0", "EXECABORT discards: " + out)
out = s.cli(stdin="MULTI\nSET t4 a\nDISCARD\nGET t4\n")
check(s.cli("EXISTS", "t4") == "0", "DISCARD: " + out)

# A large value through overflow pages.
big = os.urandom(200000).hex()  # 400 KB
r = subprocess.run(["redis-cli", "-p", str(s.port), "-x", "SET", "big"], input=big.encode(), capture_output=True)
check(r.stdout.strip() == b"OK", "SET of a 400 KB value: %r" % r.stdout[:100])
check(s.cli("STRLEN", "big") == str(len(big)), "STRLEN of the big value")
check("value too large" in subprocess.run(
    ["redis-cli", "-p", str(s.port), "-x", "SET", "huge"], input="x" * (1024 * 1024 + 10),
    capture_output=True, text=True).stdout, "value over 1 MiB refused")

# SCAN visits every key exactly once.
s.cli(stdin="".join(f"SET scan:{i:05d} {i}\n" for i in range(2000)))
keys = s.cli("--scan", "--pattern", "scan:*").splitlines()
check(len(keys) == 2000 and len(set(keys)) == 2000, "SCAN found %d of 2000 keys" % len(keys))

# redis-benchmark works unchanged.
r = subprocess.run(["redis-benchmark", "-p", str(s.port), "-t", "set,get", "-n", "5000", "-c", "8", "-q"],
                   capture_output=True, text=True, timeout=120)
check(r.returncode == 0 and "SET" in r.stdout and "GET" in r.stdout, "redis-benchmark: " + r.stdout + r.stderr)

# Clean restart keeps everything.
dbsize = s.cli("DBSIZE")
check(s.stop() == 0, "SIGTERM exits 0")
check("shut down cleanly" in s.log(), "clean shutdown logged")
s.start()
check(s.cli("DBSIZE") == dbsize, "DBSIZE after restart")
check(s.cli("GET", "k1") == "v3" and s.cli("GET", "n") == "41" and s.cli("GET", "t2") == "b", "values after restart")
check(s.cli("STRLEN", "big") == str(len(big)) and s.cli("GET", "big") == big, "big value after restart")

# SHUTDOWN command.
s.cli("SHUTDOWN", check_rc=False)
s.proc.wait(timeout=30)
check(s.proc.returncode == 0, "SHUTDOWN exits 0")

# AUTH.
a = Server(args=["--requirepass", "sekrit"]).start()
check("NOAUTH" in a.cli("GET", "x"), "NOAUTH before AUTH")
check("WRONGPASS" in a.cli("AUTH", "nope"), "wrong password")
check(a.cli(stdin="AUTH sekrit\nSET x 1\nGET x\n").splitlines() == ["OK", "OK", "1"], "AUTH then commands")
a.stop()

# A second process on the same data dir is refused.
d = tmpdir()
p = Server(dir=os.path.join(d, "x")).start()
q = Server(dir=p.dir)
q.start(wait=False)
q.proc.wait(timeout=20)
check(q.proc.returncode != 0 and "in use by another redoubt process" in q.log(), "data dir lock")
p.stop()
print("ok")
