#!/usr/bin/env python3
"""netproxy.py — a loopback fault proxy for the chaos suite (Python 3 stdlib only).

One listener per destination node (127.0.0.1:free port -> 127.0.0.1:the node's real port).
Every other process is given the listener's address for that node, so all inter-node traffic
passes here. Faults are per DIRECTED LINK (src -> dst): on accept, the proxy finds which process
opened the connection (its socket inode in /proc/net/tcp, looked up in /proc/PID/fd of the PIDs
registered with `pid`), so the link rule for (src, dst) applies to the bytes src sends and the
rule for (dst, src) to the bytes it gets back. Why not one listening port per link: addresses
travel (the monitor re-points replicas with REPLICAOF using *its* address of the new primary,
readers are told the writer's address, Sentinel answers clients): a per-link port would be
used by the wrong source after the first failover. Per-destination listeners with source
identification keep every link exact whoever learnt the address from whom.

Link rules (a direction of a link):
  open            bytes pass (after delay ms + uniform jitter ms; order is kept, as TCP does)
  hold            a partition: nothing passes and nothing is closed. The proxy stops reading,
                  so the sender's socket buffers fill as with a real partition; bytes already
                  read wait. Healed: everything held is delivered (the connection survived).
  drop            a partition that discards: bytes read are thrown away; a connection that
                  lost bytes is reset at heal (a TCP stream cannot skip bytes).
  reset           host unreachable: existing connections get RST now, new ones at accept.
A new connection over a link whose rule (either direction) is hold/drop is accepted and then
black-holed (never connected upstream, silent: the connecting node's handshake times out, it
never sees "connection refused"); it is closed at heal so the node retries.

Control: the proxy prints `control PORT` on stdout, then serves one-line commands on
127.0.0.1:PORT (one reply line each, JSON):
  listen DST TARGET_PORT [TARGET_HOST [BIND_HOST [PORT]]]  -> {"port": N}   a listener for node DST
                                 on BIND_HOST:PORT (default 127.0.0.1, a free port) forwarding to
                                 TARGET_HOST:TARGET_PORT (default 127.0.0.1): a node in another
                                 "availability zone" listens on its own loopback alias 127.0.N.x
  pid NAME PID                   register a process (its connections are attributed to NAME)
  rule SRC DST MODE [DELAY_MS JITTER_MS]   SRC/DST may be '*'; MODE open|hold|drop|reset
  down DST / up DST               DST's process died / runs again: while down the listener is
                                 closed, so connects are refused at once as a dead process's port
                                 refuses them (the chaos runner knows when it kills a process)
  heal                           every rule back to open, no delay
  stats                          {"conns": n, "bytes": n, "unknown_src": n, "rules": {...}}
  quit

Options (scripts/cluster runs it as a daemon; the chaos runner passes none):
  --detach              do not exit when stdin closes (only on `quit` or a signal)
  --control-file FILE   also write the control port to FILE (written whole, then renamed)
"""
import asyncio
import json
import os
import random
import socket
import struct
import sys
import time

MODES = ("open", "hold", "drop", "reset")


def diag_inode(sport, dport, saddr="127.0.0.1", daddr="127.0.0.1"):
    """Inode of the TCP socket saddr:sport -> daddr:dport (NETLINK_SOCK_DIAG exact lookup),
    None if not found."""
    src = socket.inet_aton(saddr) + b"\0" * 12
    dst = socket.inet_aton(daddr) + b"\0" * 12
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xffffffff)
    req += struct.pack(">HH", sport, dport) + src + dst + struct.pack("=III", 0, 0xffffffff, 0xffffffff)
    msg = struct.pack("=IHHII", 16 + len(req), 20, 1, 1, 0) + req  # SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as nl:  # NETLINK_SOCK_DIAG
            nl.settimeout(1.0)
            nl.send(msg)
            data = nl.recv(65536)
    except OSError:
        return None
    if len(data) < 16 + 72:
        return None
    mtype = struct.unpack_from("=H", data, 4)[0]
    if mtype != 20:
        return None
    return struct.unpack_from("=I", data, 16 + 68)[0] or None


class Proxy:
    def __init__(self):
        self.rules = {}           # (src, dst) -> (mode, delay_ms, jitter_ms)
        self.pids = {}            # pid -> name
        self.listeners = {}       # dst -> (server, port, target)
        self.hosts = {}           # dst -> (bind host, target host) when not 127.0.0.1
        self.conns = set()
        self.changed = asyncio.Event()
        self.rng = random.Random(int(os.environ.get("NETPROXY_SEED", "1")))
        self.nbytes = 0
        self.unknown = 0
        self.nconns = 0

    # ------------------------------------------------------------ rules
    def rule(self, src, dst):
        for k in ((src, dst), (src, "*"), ("*", dst), ("*", "*")):
            r = self.rules.get(k)
            if r:
                return r
        return ("open", 0, 0)

    def notify(self):
        ev, self.changed = self.changed, asyncio.Event()
        ev.set()

    def set_rule(self, src, dst, mode, delay=0, jitter=0):
        if mode == "open" and not delay and not jitter:
            self.rules.pop((src, dst), None)
        else:
            self.rules[(src, dst)] = (mode, delay, jitter)
        if mode == "reset":
            for c in list(self.conns):
                if c.matches(src, dst):
                    c.abort()
        elif mode != "drop":
            # A step's own heal of a drop partition: a connection that lost bytes is reset now, as
            # heal() does (a TCP stream cannot skip bytes). Before, bytes flowed again over it with
            # a hole until the full heal: a reader could apply feed frames past a lost one (a
            # phantom read in SEED=2026 aurora schedule 27, not a Redoubt fault).
            for c in list(self.conns):
                if c.dirty and (c.matches(src, dst) or c.matches(dst, src)):
                    c.abort()
        self.notify()

    def heal(self):
        self.rules.clear()
        for c in list(self.conns):
            if c.blackholed or c.dirty:
                c.abort()
        self.notify()

    # ------------------------------------------------------------ who connected
    def identify(self, peer_port, listen_port, peer_host="127.0.0.1", listen_host="127.0.0.1"):
        """The registered name of the process owning 127.0.0.1:peer_port -> listen_port (runs in a
        thread). The socket's inode comes from the kernel by an exact sock_diag (netlink) lookup:
        /proc/net/tcp lists every socket of the machine and can take seconds to read."""
        for attempt in range(4):  # the process may not be registered yet (just started)
            name = self._identify(peer_port, listen_port, peer_host, listen_host)
            if name:
                return name
            time.sleep(0.02)
        return None

    def _identify(self, peer_port, listen_port, peer_host="127.0.0.1", listen_host="127.0.0.1"):
        inode = diag_inode(peer_port, listen_port, peer_host, listen_host)
        if not inode:
            return None
        target = "socket:[%d]" % inode
        for pid, name in list(self.pids.items()):
            d = "/proc/%d/fd" % pid
            try:
                fds = os.listdir(d)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(d + "/" + fd) == target:
                        return name
                except OSError:
                    pass
        return None

    # ------------------------------------------------------------ listeners
    async def listen(self, dst, target, target_host="127.0.0.1", bind_host="127.0.0.1", want_port=0):
        if dst in self.listeners:
            srv, port, _ = self.listeners[dst]
            self.listeners[dst] = (srv, port, target)
            self.hosts[dst] = (self.hosts.get(dst, ("127.0.0.1",))[0], target_host)
            return port
        holder = {}
        self.hosts[dst] = (bind_host, target_host)

        async def on_conn(reader, writer):
            await Conn(self, dst, holder["port"], reader, writer).run()
        srv = await asyncio.start_server(on_conn, bind_host, want_port, backlog=256)
        port = srv.sockets[0].getsockname()[1]
        holder["port"] = port
        self.listeners[dst] = (srv, port, target)
        return port


    def down(self, dst):
        srv, port, target = self.listeners[dst]
        if srv is not None:
            srv.close()
            self.listeners[dst] = (None, port, target)

    async def up(self, dst):
        srv, port, target = self.listeners[dst]
        if srv is None:
            holder = {"port": port}

            async def on_conn(reader, writer):
                await Conn(self, dst, holder["port"], reader, writer).run()
            for _ in range(50):
                try:
                    srv = await asyncio.start_server(on_conn, self.hosts.get(dst, ("127.0.0.1",))[0], port,
                                                     backlog=256, reuse_address=True)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            self.listeners[dst] = (srv, port, target)


class Conn:
    def __init__(self, px, dst, lport, reader, writer):
        self.px, self.dst, self.lport = px, dst, lport
        self.cr, self.cw = reader, writer
        self.ur = self.uw = None
        self.src = "?"
        self.blackholed = False
        self.dirty = False
        self.closed = False

    def matches(self, src, dst):
        pairs = ((self.src, self.dst), (self.dst, self.src))
        return any((src in ("*", a)) and (dst in ("*", b)) for a, b in pairs)

    def abort(self):
        """RST both sides."""
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.uw):
            if w is None:
                continue
            try:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            except Exception:
                pass
        self.px.conns.discard(self)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for w in (self.cw, self.uw):
            if w is not None:
                try:
                    w.close()
                except Exception:
                    pass
        self.px.conns.discard(self)

    async def run(self):
        px = self.px
        px.conns.add(self)
        px.nconns += 1
        peer = self.cw.get_extra_info("peername")
        local = self.cw.get_extra_info("sockname")
        name = None
        if peer:
            name = await asyncio.get_running_loop().run_in_executor(
                None, px.identify, peer[1], self.lport, peer[0], local[0] if local else "127.0.0.1")
        if name is None:
            px.unknown += 1
        self.src = name or "?"
        fwd, back = px.rule(self.src, self.dst), px.rule(self.dst, self.src)
        if "reset" in (fwd[0], back[0]):
            self.abort()
            return
        # a partitioned link: accepted, silent, never connected upstream (closed at heal)
        while px.rule(self.src, self.dst)[0] in ("hold", "drop") or px.rule(self.dst, self.src)[0] in ("hold", "drop"):
            self.blackholed = True
            ev = px.changed
            # drain what the node sends so its writes never fail: a black hole
            rd = asyncio.ensure_future(self.cr.read(65536))
            ch = asyncio.ensure_future(ev.wait())
            done, _ = await asyncio.wait({rd, ch}, return_when=asyncio.FIRST_COMPLETED)
            if rd in done:
                if not rd.result():
                    ch.cancel()
                    self.close()
                    return
            else:
                rd.cancel()
            ch.cancel()
            if self.closed:
                return
        if self.closed:
            return
        if self.blackholed:  # healed (or the rule changed): let the node retry cleanly
            self.abort()
            return
        target = px.listeners[self.dst][2]
        try:
            thost = px.hosts.get(self.dst, ("127.0.0.1", "127.0.0.1"))[1]
            self.ur, self.uw = await asyncio.wait_for(asyncio.open_connection(thost, target), 5)
        except (OSError, asyncio.TimeoutError):
            # the node is down: refuse as the node itself would (RST)
            self.abort()
            return
        try:
            self.uw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.cw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except Exception:
            pass
        await asyncio.gather(self.pump(self.cr, self.uw, self.src, self.dst),
                             self.pump(self.ur, self.cw, self.dst, self.src), return_exceptions=True)
        self.close()

    async def wait_passable(self, a, b):
        """Until the link a->b is not held. Returns its rule."""
        while True:
            r = self.px.rule(a, b)
            if r[0] != "hold":
                return r
            await self.px.changed.wait()

    async def pump(self, reader, writer, a, b):
        q = asyncio.Queue()
        last = [0.0]

        async def deliver():
            while True:
                at, data = await q.get()
                if data is None:
                    break
                now = time.monotonic()
                if at > now:
                    await asyncio.sleep(at - now)
                r = await self.wait_passable(a, b)
                if self.closed:
                    return
                if r[0] == "drop":
                    self.dirty = True
                    continue
                writer.write(data)
                self.px.nbytes += len(data)
                await writer.drain()
            try:
                writer.write_eof()
            except Exception:
                pass
        dt = asyncio.ensure_future(deliver())
        try:
            while not self.closed:
                r = await self.wait_passable(a, b)
                if self.closed:
                    break
                data = await reader.read(65536)
                if not data:
                    break
                r = self.px.rule(a, b)
                if r[0] == "drop":
                    self.dirty = True
                    continue
                mode, delay, jitter = r
                at = 0.0
                if delay or jitter:
                    at = max(last[0], time.monotonic() + (delay + self.px.rng.uniform(0, jitter)) / 1000.0)
                    last[0] = at
                q.put_nowait((at, data))
        except (OSError, ConnectionError):
            pass
        finally:
            q.put_nowait((0, None))
            try:
                await dt
            except Exception:
                pass
            self.close()


async def control(px, reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        p = line.decode().split()
        out = {"ok": True}
        try:
            if not p:
                continue
            if p[0] == "listen":
                out["port"] = await px.listen(p[1], int(p[2]), *(p[3:5]), *[int(x) for x in p[5:6]])
            elif p[0] == "pid":
                pid = int(p[2])
                for k in [k for k, v in px.pids.items() if v == p[1]]:
                    if k != pid and not os.path.exists("/proc/%d" % k):
                        del px.pids[k]
                px.pids[pid] = p[1]
            elif p[0] == "rule":
                mode = p[3]
                if mode not in MODES:
                    raise ValueError("mode " + mode)
                px.set_rule(p[1], p[2], mode, int(p[4]) if len(p) > 4 else 0, int(p[5]) if len(p) > 5 else 0)
            elif p[0] == "down":
                px.down(p[1])
            elif p[0] == "up":
                await px.up(p[1])
            elif p[0] == "heal":
                px.heal()
            elif p[0] == "stats":
                out.update(conns=len(px.conns), total_conns=px.nconns, bytes=px.nbytes, unknown_src=px.unknown,
                           rules={"%s>%s" % k: v for k, v in px.rules.items()},
                           links=sorted({"%s>%s" % (c.src, c.dst) for c in px.conns}))
            elif p[0] == "quit":
                writer.write(b'{"ok": true}\n')
                await writer.drain()
                os._exit(0)
            else:
                raise ValueError("unknown command " + p[0])
        except Exception as e:  # noqa: BLE001 - reported to the controller
            out = {"ok": False, "error": str(e)}
        writer.write((json.dumps(out) + "\n").encode())
        await writer.drain()


def watchdog(beat):
    """Logs (stderr) where the event loop is stuck if it misses its beat for a second."""
    import threading
    import traceback

    def run():
        main_id = threading.main_thread().ident
        while True:
            time.sleep(0.5)
            lag = time.monotonic() - beat[0]
            if lag > 1.0:
                fr = sys._current_frames().get(main_id)
                sys.stderr.write("netproxy: event loop stalled %.1fs at:\n%s\n" % (lag, "".join(traceback.format_stack(fr))))
                sys.stderr.flush()
    threading.Thread(target=run, daemon=True).start()


async def heartbeat(beat):
    while True:
        beat[0] = time.monotonic()
        await asyncio.sleep(0.1)


async def main():
    detach, control_file = "--detach" in sys.argv[1:], None
    if "--control-file" in sys.argv[1:]:
        control_file = sys.argv[sys.argv.index("--control-file") + 1]
    px = Proxy()
    beat = [time.monotonic()]
    asyncio.ensure_future(heartbeat(beat))
    watchdog(beat)
    srv = await asyncio.start_server(lambda r, w: control(px, r, w), "127.0.0.1", 0)
    print("control %d" % srv.sockets[0].getsockname()[1], flush=True)
    if control_file:
        with open(control_file + ".tmp", "w") as f:
            f.write("%d\n" % srv.sockets[0].getsockname()[1])
        os.rename(control_file + ".tmp", control_file)
    if detach:
        await asyncio.Event().wait()
    # the controller owns us: exit when our stdin closes (the test process died)
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, sys.stdin.read)
    await fut
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
