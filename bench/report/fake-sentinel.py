#!/usr/bin/env python3
"""A stand-in for redoubt-monitor's sentinel port, used by bench/run-demo only
when scripts/cluster or redoubt-monitor is not available (failover by hand).

  bench/report/fake-sentinel.py PORT CLUSTER ADDR_FILE

Answers SENTINEL get-master-addr-by-name CLUSTER with the "HOST PORT" read
from ADDR_FILE at every question (run-demo rewrites it after promoting a
replica by hand), nil for another cluster, PONG to PING. Runs until killed.
"""
import socket
import sys
import threading

port, cluster, addr_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def read_cmd(f):
    line = f.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        n = int(f.readline()[1:])
        args.append(f.read(n + 2)[:n])
    return args


def serve(c):
    f = c.makefile("rb")
    try:
        while True:
            cmd = read_cmd(f)
            if cmd is None:
                return
            words = [a.decode(errors="replace").lower() for a in cmd]
            if words[:2] == ["sentinel", "get-master-addr-by-name"] and len(words) == 3:
                try:
                    host, p = open(addr_file).read().split()
                except (OSError, ValueError):
                    c.sendall(b"*-1\r\n")
                    continue
                if cmd[2].decode(errors="replace") != cluster:
                    c.sendall(b"*-1\r\n")
                    continue
                h, p = host.encode(), p.encode()
                c.sendall(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p))
            elif words[:1] == ["ping"]:
                c.sendall(b"+PONG\r\n")
            else:
                c.sendall(b"-ERR unknown command\r\n")
    except (OSError, ValueError):
        pass
    finally:
        c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
