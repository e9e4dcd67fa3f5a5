"""harness.py — start real Redoubt processes on loopback ports and drive them
with real clients (redis-cli, redoubt-bench).

Every process a test starts is recorded and killed by PID when the test ends
(never by name). Randomized tests take their seed from SEED (printed) so a
failure replays with SEED=<n>.
"""
import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
BIN = os.path.join(BUILD, "bin")
REDOUBT = os.path.join(BIN, "redoubt")
BENCH = os.path.join(BIN, "redoubt-bench")
DUMP = os.path.join(BIN, "redoubt-dump")

_procs = []
_tmpdirs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
    if os.environ.get("KEEP_TMP") != "1":
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))


def seed():
    s = int(os.environ.get("SEED", str(int(time.time() * 1000) % 1000000007)))
    print(f"seed={s} (replay with SEED={s})", flush=True)
    return s


def tmpdir(prefix="redoubt-it-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def free_port():
    """A free port below the kernel's ephemeral range (32768-60999 here): a port from inside it can
    be taken as the source port of some outgoing connection while the test restarts the server
    that listened on it (EADDRINUSE on restart)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 32700)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- INFO and LSNs: the one parser of the tests (mirrors common/metrics.h rd_info_field_is_lsn / rd_lsn_parse)
_NOT_LSN = ("offset", "bytes", "_ms", "lag", "records", "segments", "answers", "gave_up")
_EXACT_LSN = ("scl", "vcl", "vdl", "max_cpl", "coalesced", "trimmed", "truncated_above")


def is_lsn_field(k):
    """Whether an INFO field (or k=v item) holds an LSN: printed as X/Y by every process."""
    if any(x in k for x in _NOT_LSN):
        return False
    return "lsn" in k or k in _EXACT_LSN or k.endswith(("_scl", "_vcl", "_vdl", "_point")) or k.startswith("vdl_")


def parse_lsn(v):
    """An LSN in either form it is printed in: PostgreSQL's X/Y (hex halves) or decimal (also 0x..)."""
    v = v.strip()
    if "/" in v:
        hi, lo = v.split("/", 1)
        return (int(hi, 16) << 32) | int(lo, 16)
    return int(v, 0)


def lsn_decimal(k, v):
    """v, with an X/Y LSN of an LSN field rewritten as a decimal string (so int() works on it)."""
    if "/" in v and is_lsn_field(k):
        try:
            return str(parse_lsn(v))
        except ValueError:
            return v
    return v


def info_dict(text):
    """An INFO text as a dict of strings; LSN fields (X/Y) as decimal strings, list lines
    (slaveN:k=v,...) keep their text: parse_kv_line converts their LSNs."""
    d = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            d[k.strip()] = lsn_decimal(k.strip(), v.strip())
    return d


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Server:
    """A redoubt process. start() waits until it answers PING."""

    role = "standalone"

    def __init__(self, dir=None, port=None, args=()):
        self.dir = dir or os.path.join(tmpdir(), "data")
        self.port = port or free_port()
        self.args = list(args)
        self.proc = None
        self.log_path = self.dir.rstrip("/") + ".log"
        self.env = {}  # extra environment (e.g. RD_FAULT) for the next start()

    def role_args(self):
        """Arguments that follow --role (subclasses add --primary, --name ...)."""
        return []

    def command(self):
        return [REDOUBT, "--role", self.role] + self.role_args() + ["--dir", self.dir, "--port", str(self.port)] + self.args

    def start(self, wait=True, timeout=30):
        log = open(self.log_path, "ab")
        cmd = self.command()
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        _procs.append(self.proc)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"redoubt exited with {self.proc.returncode} during start-up:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        fail(f"redoubt did not answer PING within {timeout}s:\n{self.log()}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout=30):
        """SIGTERM: clean shutdown with a checkpoint. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                fail("redoubt did not stop within %ds of SIGTERM" % timeout)
        return self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return "(no log)"

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        """The log written after byte offset (from log_size()), whole."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def cli(self, *args, stdin=None, check_rc=True, raw=False):
        cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if raw:
            cmd.append("--no-raw")
        cmd += [str(a) for a in args]
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60,
                           text=not isinstance(stdin, bytes))
        if check_rc and r.returncode != 0:
            fail(f"redis-cli {args} exited {r.returncode}: {r.stderr}")
        out = r.stdout
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return out.rstrip("\n")

    def info(self, section=None):
        text = self.cli("INFO", section) if section else self.cli("INFO")
        return info_dict(text)


def bench(*args, timeout=300, check_rc=True):
    r = subprocess.run([BENCH] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        fail(f"redoubt-bench {args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def raw_exchange(port, data, read_timeout=2.0):
    """Sends bytes on a fresh connection; returns (reply bytes, closed_by_server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(read_timeout)
    out = b""
    closed = False
    try:
        s.sendall(data)
    except OSError:
        closed = True
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
    except socket.timeout:
        pass
    except OSError:
        closed = True
    s.close()
    return out, closed


# ---------------------------------------------------------------- RESP client

class RespError(Exception):
    """An error reply (-ERR ...). Returned (not raised) by Resp.call."""

    def __str__(self):
        return self.args[0]


class Resp:
    """A minimal blocking RESP2 client for one connection. call() returns
    str (status), RespError (error reply), int, bytes (bulk), None (nil) or a
    list; a lost connection raises OSError / ConnectionError."""

    def __init__(self, port, host="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode(errors="replace")
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed in a bulk reply")
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad reply line {line[:60]!r}")

    def call(self, *args):
        self.send(*args)
        return self.read()

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(self.encode(*c) for c in cmds))
        return [self.read() for _ in cmds]


def dump(port, batch=500):
    """Every key and value of the server on port: {bytes key: bytes value},
    read with SCAN + MGET (hot-standby reads work on replicas)."""
    c = Resp(port, timeout=60)
    try:
        keys, cursor = set(), b"0"
        for _ in range(10_000_000):  # bounded: SCAN ends when the cursor is 0
            r = c.call("SCAN", cursor, "COUNT", 1000)
            if isinstance(r, RespError):
                fail(f"SCAN on port {port}: {r}")
            cursor, ks = r
            keys.update(ks)
            if cursor == b"0":
                break
        keys = sorted(keys)
        out = {}
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            vals = c.call("MGET", *chunk)
            if isinstance(vals, RespError):
                fail(f"MGET on port {port}: {vals}")
            for k, v in zip(chunk, vals):
                if v is not None:  # a key deleted between SCAN and MGET (live primary)
                    out[k] = v
        return out
    finally:
        c.close()


def diff_dumps(a, b, name_a="a", name_b="b", show=5):
    """'' if equal, else a short description of the differences."""
    if a == b:
        return ""
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    differ = [k for k in a if k in b and a[k] != b[k]]
    lines = [f"{len(a)} keys on {name_a}, {len(b)} on {name_b}: {len(only_a)} only on {name_a}, "
             f"{len(only_b)} only on {name_b}, {len(differ)} differ"]
    for k in only_a[:show]:
        lines.append(f"  only on {name_a}: {k!r}")
    for k in only_b[:show]:
        lines.append(f"  only on {name_b}: {k!r}")
    for k in differ[:show]:
        lines.append(f"  {k!r}: {name_a}={a[k][:40]!r} {name_b}={b[k][:40]!r}")
    return "\n".join(lines)


# ---------------------------------------------------------------- classic replication

class Primary(Server):
    """redoubt --role primary (classic). args: --commit, --sync-replicas, --peers ..."""
    role = "primary"


class Replica(Server):
    """redoubt --role replica --primary 127.0.0.1:PORT --name NAME. An empty
    (or missing) dir clones from the primary, then streams."""
    role = "replica"

    def __init__(self, primary_port, name, dir=None, port=None, args=()):
        super().__init__(dir=dir, port=port, args=args)
        self.primary_port = primary_port
        self.name = name

    def role_args(self):
        return ["--primary", f"127.0.0.1:{self.primary_port}", "--name", self.name]

    def start(self, wait=True, timeout=120):  # cloning takes longer than a plain start
        return super().start(wait=wait, timeout=timeout)


def as_replica(node, primary_port, name=None):
    """The same dir and port as node (any role), to be started as a replica of primary_port."""
    r = Replica(primary_port, name or getattr(node, "name", "old"), dir=node.dir, port=node.port, args=node.args)
    r.log_path = node.log_path
    return r


def as_primary(node, args=None):
    """The same dir, port and log as node, to be started as --role primary."""
    p = Primary(dir=node.dir, port=node.port, args=node.args if args is None else args)
    p.log_path = node.log_path
    return p


def parse_kv_line(v):
    """'name=r1,ip=127.0.0.1,port=5,state=streaming,flush_lsn=0/1A8' -> dict (LSNs as decimal strings,
    see info_dict)."""
    d = {}
    for part in v.split(","):
        if "=" in part:
            k, x = part.split("=", 1)
            d[k] = lsn_decimal(k, x)
    return d


def repl_info(node):
    """INFO replication as a dict; the primary's slaveN lines become
    d['slaves'] = [{'name':..., 'state':..., 'apply_lsn':...}, ...]."""
    d = node.info("replication")
    d["slaves"] = [parse_kv_line(v) for k, v in sorted(d.items()) if k.startswith("slave") and k[5:].isdigit()]
    return d


def lsn(d, key):
    """An LSN field of an INFO dict as an int (either form, parse_lsn); -1 when absent."""
    v = d.get(key)
    if v is None or v == "":
        return -1
    return parse_lsn(v)


def wait_for(what, pred, timeout=60, interval=0.05):
    """Polls pred() until it returns a true value (returned); fail() after timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
        except (OSError, ValueError, ConnectionError):
            last = None
        if last:
            return last
        time.sleep(interval)
    fail(f"timed out after {timeout}s waiting for {what}")


def wait_streaming(primary, nreplicas, timeout=120):
    """Until the primary lists nreplicas replicas in state streaming."""
    def ok():
        d = repl_info(primary)
        return sum(1 for s in d["slaves"] if s.get("state") == "streaming") >= nreplicas
    wait_for(f"{nreplicas} streaming replicas on port {primary.port}", ok, timeout)


def wait_converged(primary, replicas, timeout=120):
    """Until every replica's apply_lsn reaches the primary's master_repl_offset
    (read first, in the same poll). Returns the offset reached."""
    def ok():
        off = lsn(repl_info(primary), "master_repl_offset")
        applied = [lsn(repl_info(r), "apply_lsn") for r in replicas]
        return off if off > 0 and all(a >= off for a in applied) else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            off = ok()
            if off:
                return off
        except (OSError, ValueError, ConnectionError):
            pass
        time.sleep(0.05)
    state = "; ".join(f"port {r.port}: apply_lsn {repl_info(r).get('apply_lsn')}" for r in replicas if r.alive())
    fail(f"replicas did not converge within {timeout}s: primary master_repl_offset "
         f"{repl_info(primary).get('master_repl_offset')}; {state}")


def percentiles(samples):
    """(p50, p99, max) of a list of numbers (nearest rank)."""
    if not samples:
        return (0, 0, 0)
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return (pick(0.50), pick(0.99), s[-1])


# ---------------------------------------------------------------- aurora mode

STORAGE = os.path.join(BIN, "redoubt-storage")


def _wait_pong(proc, port, what, log, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"{what} exited with {proc.returncode} during start-up:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    fail(f"{what} did not answer PING within {timeout}s:\n{log()}")


class StorageNode(Server):
    """redoubt-storage --dir DIR --port N --id K --peers (the other five).
    Same dir and port across restarts; cli()/info()/log() as for Server."""

    def __init__(self, idx, port=None, dir=None):
        super().__init__(dir=dir or os.path.join(tmpdir("redoubt-sn-"), "data"), port=port)
        self.idx = idx
        self.peers = []

    def command(self):
        return [STORAGE, "--dir", self.dir, "--port", str(self.port), "--id", str(self.idx), "--bind", "127.0.0.1",
                "--peers", ",".join(f"127.0.0.1:{p}" for p in self.peers)] + self.args

    def start(self, wait=True, timeout=20):
        return super().start(wait=wait, timeout=timeout)

    def wait_ready(self, timeout=20):
        _wait_pong(self.proc, self.port, f"storage node {self.idx}", self.log, timeout)

    def scl(self):
        return int(self.info().get("scl", "-1"))


class AuroraServer(Server):
    """redoubt --role writer|reader --storage ... (no --dir: aurora roles keep no
    local files; self.dir only names the log file)."""

    def __init__(self, role, storage_ports, port=None, writer_port=None, name=None, args=()):
        super().__init__(dir=os.path.join(tmpdir("redoubt-au-"), name or role), port=port, args=args)
        self.role = role
        self.storage_ports = list(storage_ports)
        self.writer_port = writer_port
        self.name = name or role

    def command(self):
        cmd = [REDOUBT, "--role", self.role, "--port", str(self.port),
               "--storage", ",".join(f"127.0.0.1:{p}" for p in self.storage_ports)]
        if self.role == "reader":
            cmd += ["--writer", f"127.0.0.1:{self.writer_port}", "--name", self.name]
        return cmd + self.args

    def repl(self):
        """INFO replication as a dict; a writer's storageK / readerN lines are parsed
        into d['storage'] (list of 6 dicts, scl/acks as ints) and d['readers']."""
        d = self.info("replication")
        st = []
        for i in range(1, 7):
            v = parse_kv_line(d.get(f"storage{i}", ""))
            for k in ("scl", "acks"):
                if k in v:
                    v[k] = int(v[k])
            st.append(v)
        d["storage"] = st
        d["readers"] = [parse_kv_line(v) for k, v in sorted(d.items()) if k.startswith("reader") and k[6:].isdigit()]
        return d

    def total_acks(self):
        return sum(s.get("acks", 0) for s in self.repl()["storage"])

    def promote(self):
        """REPLICAOF NO ONE on a reader: it becomes the writer (epoch + 1)."""
        out = self.cli("REPLICAOF", "NO", "ONE")
        check(out.strip() == "OK", f"REPLICAOF NO ONE on reader {self.name} :{self.port}: {out!r}\n{self.log()}")
        self.role = "writer"
        return out


class AuroraCluster:
    """6 storage nodes (own dirs, --peers the other five), one writer and
    nreaders readers, all on 127.0.0.1. Nodes keep dir and port across kill9/start."""

    def __init__(self, nreaders=1, writer_args=(), reader_args=(), node_args=()):
        ports = [free_port() for _ in range(6)]
        self.nodes = [StorageNode(i, port=ports[i]) for i in range(6)]
        for n in self.nodes:
            n.peers = [p for p in ports if p != n.port]
            n.args = list(node_args)
        self.ports = ports
        self.writer_args = list(writer_args)
        if os.environ.get("READER_FEED") and "--reader-feed" not in self.writer_args:
            self.writer_args += ["--reader-feed", os.environ["READER_FEED"]]
        self.reader_args = list(reader_args)
        self.writer = None
        self.readers = []
        self.nreaders = nreaders
        self._names = 0

    def start(self, timeout=60):
        for n in self.nodes:
            n.start()
        self.writer = AuroraServer("writer", self.ports, args=self.writer_args).start(timeout=timeout)
        for _ in range(self.nreaders):
            self.add_reader(timeout=timeout)
        return self

    def add_reader(self, timeout=60, wait_subscribed=True):
        self._names += 1
        r = AuroraServer("reader", self.ports, writer_port=self.writer.port, name=f"rd{self._names}",
                         args=self.reader_args).start(timeout=timeout)
        self.readers.append(r)
        if wait_subscribed:
            w = self.writer
            wait_for(f"reader {r.name} subscribed to the writer :{w.port}",
                     lambda: any(x.get("name") == r.name for x in w.repl()["readers"]), timeout)
        return r

    def promote(self, reader):
        """Promotes reader; it becomes self.writer (the old writer object is returned)."""
        old = self.writer
        reader.promote()
        self.readers.remove(reader)
        self.writer = reader
        return old

    def wait_reader_caught_up(self, reader, timeout=30):
        """Until reader's read_point >= the writer's vdl (read first). Returns it."""
        def ok():
            vdl = lsn(self.writer.repl(), "vdl")
            rp = lsn(reader.repl(), "read_point")
            return rp if vdl > 0 and rp >= vdl else None
        return wait_for(f"reader {reader.name} read_point to reach the writer's vdl", ok, timeout)

    def wait_nodes_caught_up(self, nodes, timeout=30):
        """Until each node's INFO scl reaches the writer's vdl (read first)."""
        vdl = lsn(self.writer.repl(), "vdl")
        wait_for(f"storage nodes {[n.idx for n in nodes]} scl to reach vdl {vdl}",
                 lambda: all(n.scl() >= vdl for n in nodes), timeout, interval=0.1)
        return vdl


def wait_writable(node, key="aurora:probe", timeout=60):
    """Until a SET on node answers +OK; returns the seconds it took."""
    t0 = time.time()

    def ok():
        c = Resp(node.port, timeout=5)
        try:
            return c.call("SET", key, str(time.time())) == "OK"
        finally:
            c.close()
    wait_for(f"port {node.port} to acknowledge a write", ok, timeout, interval=0.02)
    return time.time() - t0


def verify_state(port, state):
    """(lost+torn, output) of redoubt-bench --mode verify; -1 if it could not run."""
    import re
    v = bench("--mode", "verify", "--port", port, "--state", state, check_rc=False)
    m = re.search(r"(\d+) lost \((\d+) missing, (\d+) older, (\d+) unexpected\), (\d+) torn", v.stdout)
    if v.returncode == 2 or not m:
        return -1, v.stdout + v.stderr
    return int(m.group(1)) + int(m.group(5)), v.stdout


def acked_load(port, prefix, state, clients=4, duration=30, keyspace=20000, value_size=100, seed_=1, multi=False):
    """Starts redoubt-bench --mode acked in the background (Popen, stdout piped)."""
    cmd = [BENCH, "--mode", "acked", "--port", str(port), "--clients", str(clients), "--duration", str(duration),
           "--keyspace", str(keyspace), "--value-size", str(value_size), "--key-prefix", prefix,
           "--seed", str(seed_), "--state", state] + (["--multi"] if multi else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _procs.append(p)
    return p


def try_info(port, section="replication", timeout=2.0):
    """INFO section as a dict, or None if no reply within timeout seconds
    (e.g. a writer whose replies are held while it has no quorum)."""
    try:
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", section],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return info_dict(r.stdout)
