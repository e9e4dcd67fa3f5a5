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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Server:
    """A redoubt process. start() waits until it answers PING."""

    def __init__(self, dir=None, port=None, args=()):
        self.dir = dir or os.path.join(tmpdir(), "data")
        self.port = port or free_port()
        self.args = list(args)
        self.proc = None
        self.log_path = self.dir.rstrip("/") + ".log"

    def start(self, wait=True, timeout=30):
        log = open(self.log_path, "ab")
        cmd = [REDOUBT, "--role", "standalone", "--dir", self.dir, "--port", str(self.port)] + self.args
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
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
        d = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                d[k.strip()] = v.strip()
        return d


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
