"""Malformed client input: the bad client gets an error and/or is
disconnected; the server stays up and other clients are unaffected."""
import os
import random
import socket
import time

from harness import Server, check, raw_exchange, seed

rng = random.Random(seed())
s = Server().start()

# A well-behaved client stays connected throughout.
good = socket.create_connection(("127.0.0.1", s.port), timeout=5)


def good_ping():
    good.sendall(b"*1\r\n$4\r\nPING\r\n")
    check(good.recv(100) == b"+PONG\r\n", "the well-behaved client still gets PONG")


cases = [
    (b"*1\r\n$abc\r\nPING\r\n", b"invalid bulk length"),
    (b"*x\r\n", b"invalid multibulk length"),
    (b"*2\r\n+PING\r\n", b"expected '$'"),
    (b"*1\r\n$999999999999\r\n", b"invalid bulk length"),          # huge bulk length
    (b"*99999999999\r\n", b"invalid multibulk length"),            # huge argument count
    (b'SET "unbalanced\r\n', b"unbalanced"),
    (b"A" * 70000, b"too big inline"),                               # inline without newline
]
for data, expect in cases:
    out, closed = raw_exchange(s.port, data)
    check(expect in out, f"{data[:30]!r}: expected {expect!r}, got {out[:120]!r}")
    check(closed, f"{data[:30]!r}: connection closed after a protocol error")
    good_ping()

# Declaring a bulk just under the limit and sending it slowly does not crash.
out, closed = raw_exchange(s.port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n" + b"x" * 1000, read_timeout=0.5)
good_ping()

# Random bytes, many connections.
for i in range(200):
    n = rng.randint(1, 4000)
    data = bytes(rng.getrandbits(8) for _ in range(n))
    raw_exchange(s.port, data, read_timeout=0.05)
good_ping()

# A client that floods without reading hits the output limit and is dropped
# (the limit is 1 MiB here), the server stays up.
t = Server(args=["--max-output-buffer-mb", "1"]).start()
t.cli("SET", "v", "x" * 100000)
flood = socket.create_connection(("127.0.0.1", t.port), timeout=5)
flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
try:
    for _ in range(400):
        flood.sendall(b"GET v\r\n" * 10)
except OSError:
    pass
check(t.cli("PING") == "PONG", "server alive after an output flood")
for _ in range(100):
    if "output buffer over" in t.log():
        break
    time.sleep(0.05)
check("output buffer over" in t.log(), "the flooding client was dropped at the output limit:\n" + t.log())
flood.close()
t.stop()

check(s.cli("SET", "after", "1") == "OK" and s.cli("GET", "after") == "1", "server works after bad input")
check(s.alive(), "server still running")
good.close()
check(s.stop() == 0, "clean stop")
print("ok")
