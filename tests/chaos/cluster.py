"""cluster.py — a Redoubt cluster whose every inter-node link goes through netproxy.py.

Nodes listen on their real ports; every other process (replicas, monitors, writer, storage
peers, readers, other monitors) is given the proxy's address for that node. Clients of the
test may go to a node's real port (direct) or to its proxy address (what Sentinel discovery
answers: the monitors know the nodes by their proxy addresses).

Processes are tracked by Popen and killed by PID (never by name). The monitor command line is
built in ONE place, `monitor_command()`, so a change of the monitor's flags is a one-hunk edit.
"""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
from harness import BIN, Resp, RespError, free_port  # noqa: E402,F401

HOST = "127.0.0.1"
CLUSTER_NAME = "chaos"


def now():
    return time.monotonic()


_taken = set()


def node_port():
    """A port for a node, below the kernel's ephemeral range (the proxy's listeners and every
    outgoing connection take ephemeral ports, so they never collide with a node that is down),
    free now and never handed out twice by this process."""
    import random
    try:
        lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    rng = random.Random()
    for _ in range(1000):
        p = rng.randrange(10000, max(10001, lo))
        if p in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, p))
            except OSError:
                continue
        _taken.add(p)
        return p
    raise RuntimeError("no free port below the ephemeral range")


class Net:
    """The fault proxy process and its control connection."""

    def __init__(self, logdir, seed=1):
        self.log = open(os.path.join(logdir, "netproxy.log"), "ab")
        env = dict(os.environ, NETPROXY_SEED=str(seed))
        self.proc = subprocess.Popen([sys.executable, "-u", os.path.join(HERE, "netproxy.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        harness._procs.append(self.proc)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("control "):
            raise RuntimeError("netproxy did not start: %r" % line)
        self.port = int(line.split()[1])
        self.sock = socket.create_connection((HOST, self.port), timeout=10)
        self.f = self.sock.makefile("rb")
        self.pid("client", os.getpid())

    def cmd(self, *args):
        self.sock.sendall((" ".join(str(a) for a in args) + "\n").encode())
        r = json.loads(self.f.readline())
        if not r.get("ok"):
            raise RuntimeError("netproxy %s: %s" % (args, r.get("error")))
        return r

    def listen(self, name, target):
        return self.cmd("listen", name, target)["port"]

    def pid(self, name, pid):
        self.cmd("pid", name, pid)

    def rule(self, src, dst, mode, delay=0, jitter=0):
        self.cmd("rule", src, dst, mode, delay, jitter)

    def cut(self, a, b, mode="hold", two_way=True):
        self.rule(a, b, mode)
        if two_way:
            self.rule(b, a, mode)

    def heal(self):
        self.cmd("heal")

    def down(self, name):
        self.cmd("down", name)

    def up(self, name):
        self.cmd("up", name)

    def stats(self):
        return self.cmd("stats")

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


class Node:
    """One process of the cluster: name, kind (primary|replica|writer|reader|storage|monitor),
    real port, proxy port, and a command builder (a function of the cluster's current state)."""

    def __init__(self, cl, name, kind, port):
        self.cl, self.name, self.kind, self.port = cl, name, kind, port
        self.pport = cl.net.listen(name, port)
        self.proc = None
        self.paused = False
        self.log_path = os.path.join(cl.dir, name + ".log")
        self.starts = 0

    @property
    def addr(self):
        """The address other processes use: the proxy's."""
        return f"{HOST}:{self.pport}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, cmd):
        with open(self.log_path, "ab") as log:
            log.write(("\n=== %s start: %s\n" % (time.strftime("%H:%M:%S"), " ".join(map(shlex.quote, cmd)))).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        harness._procs.append(self.proc)
        self.cl.net.pid(self.name, self.proc.pid)
        self.cl.net.up(self.name)
        self.paused = False
        self.starts += 1

    def signal(self, sig):
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        if self.alive():
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.cl.net.down(self.name)
        self.paused = False

    def pause(self):
        if self.alive():
            self.signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.alive():
            self.signal(signal.SIGCONT)
        self.paused = False

    def ping(self, timeout=1.0):
        try:
            with socket.create_connection((HOST, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def call(self, *args, timeout=2.0):
        """One command on the real port; None on any connection error."""
        try:
            c = Resp(self.port, timeout=timeout)
        except OSError:
            return None
        try:
            return c.call(*args)
        except (OSError, ConnectionError, ValueError):
            return None
        finally:
            c.close()

    def info(self, section="replication", timeout=2.0):
        r = self.call("INFO", section, timeout=timeout)
        if not isinstance(r, bytes):
            return None
        d = {}
        for line in r.decode(errors="replace").splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                d[k.strip()] = v.strip()
        return d


_help = {}


def has_flag(binary, flag):
    """Whether `binary --help` mentions flag (older or newer builds: the suite adapts)."""
    if binary not in _help:
        try:
            r = subprocess.run([os.path.join(BIN, binary), "--help"], capture_output=True, text=True, timeout=10)
            _help[binary] = r.stdout + r.stderr
        except (OSError, subprocess.SubprocessError):
            _help[binary] = ""
    return flag in _help[binary]


class ChaosCluster:
    """mode 'classic' (primary + 2 replicas, remote_flush, ANY 1) or 'aurora' (6 storage nodes,
    writer, 1 reader), plus `nmon` monitors; every link through the proxy."""

    def __init__(self, mode, d, net, nmon=3, commit_timeout_ms=2000, interval_ms=100, misses=5, cooldown_ms=1000):
        self.mode, self.dir, self.net, self.nmon = mode, d, net, nmon
        self.commit_timeout_ms = commit_timeout_ms
        self.interval_ms, self.misses, self.cooldown_ms = interval_ms, misses, cooldown_ms
        self.nodes = {}
        self.monitors = []
        self.writer_name = None  # last known writer
        if mode == "classic":
            self.add("primary", "primary")
            for i in (1, 2):
                self.add(f"replica{i}", "replica")
            # each node lists the two others (as PostgreSQL's synchronous_standby_names per node): the
            # initial primary gets 'ANY 1 (replica1,replica2)'; a promoted replica waits for the two
            # others, so the failover rule (n-k+1 of its listed replicas) can be met after the first
            # failover too. CHAOS_CLASSIC_SPEC=static gives every node 'ANY 1 (replica1,replica2)'.
            self.static_spec = os.environ.get("CHAOS_CLASSIC_SPEC") == "static"
        else:
            for i in range(1, 7):
                self.add(f"storage{i}", "storage")
            self.add("writer", "writer")
            self.add("reader1", "reader")
        for i in range(1, nmon + 1):
            self.monitors.append(self.add(f"monitor{i}", "monitor"))

    def add(self, name, kind):
        n = Node(self, name, kind, node_port())
        self.nodes[name] = n
        return n

    # ------------------------------------------------------------ who is who
    def data_nodes(self):
        return [n for n in self.nodes.values() if n.kind not in ("monitor", "storage")]

    def storage_nodes(self):
        return [n for n in self.nodes.values() if n.kind == "storage"]

    def by_pport(self, port):
        for n in self.nodes.values():
            if n.pport == port or n.port == port:
                return n
        return None

    def writer_kind(self):
        return "primary" if self.mode == "classic" else "writer"

    def follower_kind(self):
        return "replica" if self.mode == "classic" else "reader"

    def monitors_writer(self):
        """The writer as a majority of the answering monitors name it (None if none answer)."""
        votes = {}
        for m in self.monitors:
            if not m.alive() or m.paused:
                continue
            r = m.call("SENTINEL", "get-master-addr-by-name", CLUSTER_NAME, timeout=1.0)
            if isinstance(r, list) and len(r) == 2 and r[1] is not None:
                n = self.by_pport(int(r[1]))
                if n:
                    votes[n.name] = votes.get(n.name, 0) + 1
        if not votes:
            return None
        return max(votes.items(), key=lambda kv: kv[1])[0]

    def nodes_writer(self):
        """The writer as the nodes say: unfenced primary/writer with the newest term/timeline/epoch."""
        best, bestk = None, None
        for n in self.data_nodes():
            if not n.alive() or n.paused:
                continue
            d = n.info(timeout=1.0)
            if not d or d.get("redoubt_role") not in ("primary", "writer") or d.get("fenced") == "1":
                continue
            k = (int(d.get("term", "0") or 0), int(d.get("timeline", "0") or 0), int(d.get("epoch", "0") or 0))
            if bestk is None or k > bestk:
                best, bestk = n.name, k
        return best

    def current_writer(self):
        w = self.monitors_writer() or self.nodes_writer() or self.writer_name
        self.writer_name = w
        return w

    # ------------------------------------------------------------ command lines
    def sync_spec(self, n):
        if self.static_spec:
            return "ANY 1 (replica1,replica2)"
        return "ANY 1 (%s)" % ",".join(x.name for x in self.data_nodes() if x is not n)

    def data_command(self, n, role, upstream=None):
        if self.mode == "classic":
            cmd = [os.path.join(BIN, "redoubt"), "--role", role, "--dir", os.path.join(self.dir, n.name),
                   "--port", str(n.port), "--bind", HOST, "--commit", "remote_flush", "--sync-replicas", self.sync_spec(n),
                   ] + self.timeout_flags() + ["--replica-timeout-ms", "3000", "--name", n.name]
            if role == "replica":
                cmd += ["--primary", upstream.addr]
            return cmd
        st = ",".join(s.addr for s in self.storage_nodes())
        cmd = [os.path.join(BIN, "redoubt"), "--role", role, "--port", str(n.port), "--bind", HOST, "--storage", st
               ] + self.timeout_flags() + ["--name", n.name]
        if role == "reader":
            cmd += ["--writer", upstream.addr]
        return cmd

    def secret_flags(self):
        """Peer authentication as scripts/cluster sets it up (one 0600 secret per cluster, every
        process): the monitors' votes and hellos (monitor M18) and the nodes' admin commands run
        authenticated under faults too. CHAOS_SECRET=0 runs without."""
        if os.environ.get("CHAOS_SECRET", "1") == "0" or not all(
                has_flag(b, "--cluster-secret-file") for b in ("redoubt", "redoubt-monitor", "redoubt-storage")):
            return []
        path = os.path.join(self.dir, "cluster.secret")
        if not os.path.exists(path):
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, f"cluster_id={CLUSTER_NAME}\nsecret={os.urandom(32).hex()}\n".encode())
            os.close(fd)
        return ["--cluster-secret-file", path]

    def timeout_flags(self):
        f = list(self.secret_flags())
        if has_flag("redoubt", "--commit-timeout-ms"):
            f += ["--commit-timeout-ms", str(self.commit_timeout_ms)]
        if self.lease_ms() and self.nmon:  # read leases (server/README.md LS4), as scripts/cluster does
            f += ["--lease-ms", str(self.lease_ms()), "--lease-monitors", str(self.nmon)]
        return f

    def lease_ms(self):
        """2 x interval, below the detection time, as scripts/cluster; CHAOS_LEASE=0 turns leases off."""
        if os.environ.get("CHAOS_LEASE", "1") == "0" or not has_flag("redoubt", "--lease-ms") or \
                not has_flag("redoubt-monitor", "--lease-ms"):
            return 0
        return 2 * self.interval_ms

    def storage_command(self, n):
        idx = int(n.name[len("storage"):])
        peers = ",".join(s.addr for s in self.storage_nodes() if s is not n)
        return [os.path.join(BIN, "redoubt-storage"), "--dir", os.path.join(self.dir, n.name), "--port", str(n.port),
                "--id", str(idx - 1), "--bind", HOST, "--peers", peers] + self.secret_flags()

    def monitor_command(self, m):
        """THE monitor command line (mirrors scripts/cluster monitor_args). Roles are the current
        ones (a restarted monitor learns who the writer is now)."""
        k = int(m.name[len("monitor"):])
        w = self.current_writer() if any(x.alive() for x in self.data_nodes()) else self.writer_name
        cmd = [os.path.join(BIN, "redoubt-monitor"), "--cluster", CLUSTER_NAME, "--mode", self.mode,
               "--port", str(m.port), "--bind", HOST,
               "--interval-ms", str(self.interval_ms), "--misses", str(self.misses),
               "--cooldown-ms", str(self.cooldown_ms)] + self.secret_flags()
        if self.lease_ms():
            cmd += ["--lease-ms", str(self.lease_ms())]
        if has_flag("redoubt-monitor", "--log-file"):
            cmd += ["--log-file", os.path.join(self.dir, m.name + ".mon.log")]
        if has_flag("redoubt-monitor", "--id"):  # monitors as a quorum (main since 8be42d8)
            cmd += ["--id", str(k), "--dir", os.path.join(self.dir, m.name)]
            for o in self.monitors:
                if o is not m:
                    cmd += ["--monitor", o.addr]
        elif len(self.monitors) > 1:
            raise RuntimeError("this redoubt-monitor has no --monitor: run with CHAOS_MONITORS=1")
        for n in self.nodes.values():
            if n.kind == "monitor":
                continue
            role = n.kind if n.kind == "storage" else (self.writer_kind() if n.name == w else self.follower_kind())
            cmd += ["--node", f"{n.name}={role}@{n.addr}"]
        return cmd

    # ------------------------------------------------------------ start / restart
    def wait_pong(self, n, timeout):
        deadline = now() + timeout
        while now() < deadline:
            if not n.alive():
                raise RuntimeError(f"{n.name} exited during start-up (log {n.log_path})")
            if n.ping(0.5):
                return True
            time.sleep(0.05)
        raise RuntimeError(f"{n.name} did not answer PING within {timeout}s (log {n.log_path})")

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        if self.mode == "classic":
            p = self.nodes["primary"]
            p.start(self.data_command(p, "primary"))
            self.wait_pong(p, 30)
            for i in (1, 2):
                r = self.nodes[f"replica{i}"]
                r.start(self.data_command(r, "replica", p))
            for i in (1, 2):
                self.wait_pong(self.nodes[f"replica{i}"], 120)
            self.writer_name = "primary"
        else:
            for s in self.storage_nodes():
                s.start(self.storage_command(s))
            for s in self.storage_nodes():
                self.wait_pong(s, 30)
            w = self.nodes["writer"]
            w.start(self.data_command(w, "writer"))
            self.wait_pong(w, 60)
            r = self.nodes["reader1"]
            r.start(self.data_command(r, "reader", w))
            self.wait_pong(r, 60)
            self.writer_name = "writer"
        for m in self.monitors:
            m.start(self.monitor_command(m))
        for m in self.monitors:
            self.wait_pong(m, 10)
        self.wait_healthy(60)
        return self

    def restart(self, n, wait=False):
        """(Re)start n in the role it should have now: a monitor with the current roles; a data
        node as writer if it is the current writer, else as a follower of the current writer."""
        if n.alive():
            n.kill9()
        if n.kind == "monitor":
            n.start(self.monitor_command(n))
        elif n.kind == "storage":
            n.start(self.storage_command(n))
        else:
            w = self.current_writer()
            if w == n.name:
                n.start(self.data_command(n, self.writer_kind()))
            else:
                n.start(self.data_command(n, self.follower_kind(), self.nodes[w]))
        if wait:
            self.wait_pong(n, 120)

    def writable(self, timeout=1.0):
        """A probe write through the monitors' answer; True if acknowledged."""
        w = self.monitors_writer() or self.nodes_writer()
        if not w:
            return False
        n = self.nodes[w]
        try:
            c = Resp(n.pport, timeout=timeout)
        except OSError:
            return False
        try:
            return c.call("SET", "chaos:probe", str(time.time())) == "OK"
        except (OSError, ConnectionError, ValueError):
            return False
        finally:
            c.close()

    def followers_ok(self):
        """Every follower streams from the current writer (classic: listed as streaming;
        aurora: the reader listed by the writer) and every storage node answers."""
        w = self.current_writer()
        if not w:
            return False
        d = self.nodes[w].info(timeout=1.0)
        if not d:
            return False
        if self.mode == "classic":
            return sum(1 for k, v in d.items() if k.startswith("slave") and k[5:].isdigit() and "state=streaming" in v) \
                >= len(self.data_nodes()) - 1
        readers = sum(1 for k in d if k.startswith("reader") and k[6:].isdigit())
        return readers >= len(self.data_nodes()) - 1 and all(s.ping(0.5) for s in self.storage_nodes())

    def wait_healthy(self, timeout):
        deadline = now() + timeout
        while now() < deadline:
            if self.writable() and self.followers_ok():
                return True
            time.sleep(0.1)
        return False

    def stop(self):
        for n in self.nodes.values():
            if n.alive():
                n.signal(signal.SIGCONT)
                n.kill9()
