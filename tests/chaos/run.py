#!/usr/bin/env python3
"""run.py — the chaos suite: seeded fault schedules against classic-sync and aurora clusters
whose every inter-node link goes through netproxy.py, with a history checker.

  python3 tests/chaos/run.py                       # CHAOS_SCHEDULES per mode (default 4)
  SEED=N CHAOS_MODES=classic CHAOS_SCHEDULES=1 python3 tests/chaos/run.py   # replay one schedule

Environment:
  SEED               the run's seed (printed). Schedule i of mode M has seed SEED+i (printed too,
                     as `SEED=... CHAOS_MODES=M CHAOS_FIRST=i`), so one schedule replays alone.
  CHAOS_MODES        classic,aurora (default both)
  CHAOS_SCHEDULES    schedules per mode (default 4)
  CHAOS_FIRST        index of the first schedule (default 0): with SEED, replays schedule i
  CHAOS_MONITORS     monitors per cluster (default 3; 1 works)
  CHAOS_HORIZON      seconds of faults per schedule (default 6)
  CHAOS_KINDS        comma list: only these fault kinds (see FAULTS); default all
  CHAOS_FRESH        1: a fresh cluster for every schedule (default: one cluster per mode, kept
                     across schedules, replaced only when it does not recover)
  CHAOS_STRICT_READS 0: stale reads (real-time order) on a writer connection are only counted
                     and reported (default 1: they fail the run; every writer holds a read lease)
  CHAOS_XFAIL        comma list of fault kinds whose violations are reported as expected
                     failures (they do not fail the run)
  CHAOS_STRICT_CASCADE 0: availability errors after a cascade schedule (writer killed twice) are
                     expected failures, reported (default 1: they fail the run)
  CHAOS_KEEP         1: keep the cluster dirs and logs
  CHAOS_BUDGET_S     per mode: start no new schedule after this many seconds (default none)
Exit status: 0 if no invariant was violated (outside CHAOS_XFAIL), 1 otherwise.
"""
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cluster import ChaosCluster, Net, Resp  # noqa: E402
import history  # noqa: E402

AVAIL_S = 5.0


def now():
    return time.monotonic()


def env_int(k, d):
    return int(os.environ.get(k, str(d)))


# ---------------------------------------------------------------- schedules
#
# A schedule is a list of faults (kind, start offset, duration, params drawn from the seed).
# Targets are symbolic ("the current writer", "a follower", "2 storage nodes") and resolved when
# the fault starts; the resolution is printed with the step.

FAULTS = {
    # kind: (weight classic, weight aurora)
    "kill_writer": (3, 3),          # kill -9 the current writer, restart it after the duration
    "kill_follower": (2, 2),        # kill -9 a replica/reader, restart later
    "pause_writer": (2, 2),         # SIGSTOP the writer for the duration, then SIGCONT
    "pause_follower": (1, 1),
    "part_mon_writer": (4, 3),      # monitors <-> writer (all monitors), writer keeps its followers
    "part_writer_followers": (2, 1),  # writer <-> some replicas (classic) / the reader (aurora)
    "part_writer_storage": (0, 3),  # writer <-> a subset of storage nodes (1..4)
    "part_storage_peers": (0, 1),   # storage <-> storage: a group cut from the others
    "isolate_writer": (2, 2),       # writer cut from every other node and monitor (clients still reach it)
    "part_one_way": (2, 2),         # one direction of a random link
    "part_mon_mon": (1, 1),         # a monitor cut from the other monitors
    "kill_monitors": (1, 1),        # monitor loss: 1..all monitors killed, restarted after
    "delay": (1, 1),                # delay + jitter on a set of links
    "kill_storage": (0, 2),         # kill -9 1..2 storage nodes (aurora)
}


def make_schedule(seed, mode, horizon, nmon, kinds=None):
    rng = random.Random(seed)
    names = [k for k, w in FAULTS.items() if w[0 if mode == "classic" else 1] > 0 and (not kinds or k in kinds)]
    weights = [FAULTS[k][0 if mode == "classic" else 1] for k in names]
    if nmon < 2 and "part_mon_mon" in names:
        i = names.index("part_mon_mon")
        del names[i], weights[i]
    steps = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choices(names, weights)[0]
        t0 = round(rng.uniform(0.8, max(1.0, horizon - 2.5)), 2)
        dur = round(rng.uniform(1.0, min(4.0, horizon - t0)), 2)
        p = {"mode": rng.choice(["hold", "hold", "drop", "reset"]), "rnd": rng.random(), "rnd2": rng.random(),
             "n": rng.randint(1, 4), "restart": rng.random() < 0.85,
             "delay": rng.choice([20, 50, 150, 400]), "jitter": rng.choice([0, 10, 50])}
        steps.append((t0, dur, kind, p))
    steps.sort(key=lambda s: s[0])
    return steps


class Executor:
    """Runs one schedule's faults against a cluster; keeps the active network cuts and recomputes
    the proxy's rules from them (overlapping faults on one link: the latest wins)."""

    def __init__(self, cl, log):
        self.cl, self.net, self.log = cl, cl.net, log
        self.active = {}   # step id -> {(src, dst): (mode, delay, jitter)}
        self.applied = {}  # (src, dst) -> rule
        self.t0 = None

    def sync_rules(self):
        want = {}
        for sid in sorted(self.active):
            want.update(self.active[sid])
        for link, rule in want.items():
            if self.applied.get(link) != rule:
                self.net.rule(link[0], link[1], *rule)
        for link in list(self.applied):
            if link not in want:
                self.net.rule(link[0], link[1], "open")
        self.applied = want

    def cut(self, sid, pairs, mode, two_way=True, delay=0, jitter=0):
        d = {}
        for a, b in pairs:
            d[(a, b)] = (mode, delay, jitter)
            if two_way:
                d[(b, a)] = (mode, delay, jitter)
        self.active[sid] = d
        self.sync_rules()

    def uncut(self, sid):
        if self.active.pop(sid, None) is not None:
            self.sync_rules()

    def names(self, kind):
        cl = self.cl
        if kind == "monitor":
            return [m.name for m in cl.monitors]
        if kind == "storage":
            return [s.name for s in cl.storage_nodes()]
        return [n.name for n in cl.data_nodes()]

    def start_fault(self, sid, kind, p):
        """Starts fault sid; returns (description, end action)."""
        cl = self.cl
        w = cl.current_writer()
        rnd = p["rnd"]
        followers = [n for n in self.names("data") if n != w]
        mons = self.names("monitor")
        st = self.names("storage")
        pick = lambda xs, r=rnd: xs[int(r * len(xs)) % len(xs)]
        if kind == "kill_writer" or kind == "kill_follower" or kind == "kill_storage":
            if kind == "kill_writer":
                targets = [w]
            elif kind == "kill_follower":
                targets = [pick(followers)]
            else:
                k = 1 + int(p["rnd2"] * 2)
                targets = random.Random(rnd).sample(st, k)
            for t in targets:
                cl.nodes[t].kill9()
            if p["restart"]:
                return f"kill -9 {','.join(targets)}" + (" (writer)" if kind == "kill_writer" else ""), \
                    ("restart " + ",".join(targets), lambda: [cl.restart(cl.nodes[t]) for t in targets if not cl.nodes[t].alive()])
            return f"kill -9 {','.join(targets)} (stays down until the heal)", None
        if kind in ("pause_writer", "pause_follower"):
            t = w if kind == "pause_writer" else pick(followers)
            cl.nodes[t].pause()
            return f"SIGSTOP {t}", (f"SIGCONT {t}", lambda: cl.nodes[t].resume())
        if kind == "kill_monitors":
            k = 1 + int(p["rnd2"] * len(mons))
            targets = random.Random(rnd).sample(mons, k)
            for t in targets:
                cl.nodes[t].kill9()
            if p["restart"]:
                return f"kill -9 monitors {','.join(targets)}", \
                    ("restart " + ",".join(targets), lambda: [cl.restart(cl.nodes[t]) for t in targets if not cl.nodes[t].alive()])
            return f"kill -9 monitors {','.join(targets)} (down until the heal)", None
        mode = p["mode"]
        if kind == "part_mon_writer":
            pairs = [(m, w) for m in mons]
        elif kind == "part_writer_followers":
            k = 1 + int(p["rnd2"] * len(followers))
            pairs = [(w, f) for f in random.Random(rnd).sample(followers, k)]
        elif kind == "part_writer_storage":
            k = min(p["n"], len(st))
            pairs = [(w, s) for s in random.Random(rnd).sample(st, k)]
        elif kind == "part_storage_peers":
            k = 1 + int(p["rnd2"] * 3)
            grp = random.Random(rnd).sample(st, k)
            pairs = [(a, b) for a in grp for b in st if b not in grp]
        elif kind == "isolate_writer":
            others = [n for n in self.names("data") + st + mons if n != w]
            pairs = [(w, o) for o in others]
        elif kind == "part_mon_mon":
            m = pick(mons)
            pairs = [(m, o) for o in mons if o != m]
        elif kind == "part_one_way":
            allnodes = self.names("data") + st + mons
            a = pick(allnodes)
            b = pick([x for x in allnodes if x != a], p["rnd2"])
            self.cut(sid, [(a, b)], mode, two_way=False)
            return f"cut {a} -> {b} one-way ({mode})", (f"heal {a} -> {b}", lambda: self.uncut(sid))
        elif kind == "delay":
            if cl.mode == "aurora":
                pairs = [(w, s) for s in st[:p["n"]]]
            else:
                pairs = [(f, w) for f in followers]
            self.cut(sid, pairs, "open", True, p["delay"], p["jitter"])
            return f"delay {p['delay']}ms+-{p['jitter']} on {', '.join(a + '<->' + b for a, b in pairs)}", \
                ("end delay", lambda: self.uncut(sid))
        else:
            raise ValueError(kind)
        self.cut(sid, pairs, mode)
        desc = ", ".join(f"{a}<->{b}" for a, b in pairs)
        return f"partition ({mode}) {desc}", ("heal " + kind, lambda: self.uncut(sid))

    def run(self, steps, horizon):
        self.t0 = now()
        events = [(t, i, "start") for i, (t, _, _, _) in enumerate(steps)]
        ends = {}
        events.sort()
        pending = list(events)
        while True:
            el = now() - self.t0
            if pending and pending[0][0] <= el:
                t, i, _ = pending.pop(0)
                _, dur, kind, p = steps[i]
                try:
                    desc, end = self.start_fault(i, kind, p)
                except Exception as e:  # noqa: BLE001 - a fault that cannot start is reported, not fatal
                    desc, end = f"{kind}: could not start ({e})", None
                self.log(f"  +{el:6.2f}s step {i}: {kind}: {desc}")
                if end:
                    ends[i] = (t + dur, end)
                continue
            due = [i for i, (te, _) in ends.items() if te <= el]
            if due:
                for i in due:
                    te, (what, fn) = ends.pop(i)
                    try:
                        fn()
                    except Exception as e:  # noqa: BLE001
                        what += f" (failed: {e})"
                    self.log(f"  +{now() - self.t0:6.2f}s step {i}: {what}")
                continue
            if el >= horizon and not pending:
                break
            time.sleep(0.01)
        # whatever is still active ends with the heal
        return ends

    def heal(self):
        """Network healed, every process running again (restarted in its current role)."""
        cl = self.cl
        self.active.clear()
        self.applied.clear()
        self.net.heal()
        for n in cl.nodes.values():
            if n.paused:
                n.resume()
        for m in cl.monitors:
            if not m.alive():
                cl.restart(m)
        for n in cl.storage_nodes() + cl.data_nodes():
            if not n.alive():
                cl.restart(n)


def repair(cl, log, timeout=40):
    """The operator after the storm: restarts fenced old writers (and anything dead) as followers
    of the current writer, until every follower streams from it. Returns True when healthy."""
    deadline = now() + timeout
    restarted = {}
    while now() < deadline:
        w = cl.current_writer()
        for n in cl.storage_nodes() + cl.data_nodes() + cl.monitors:
            if not n.alive():
                if now() - restarted.get(n.name, 0) > 2:
                    log(f"  repair: {n.name} is down: restart")
                    restarted[n.name] = now()
                    cl.restart(n)
                continue
            if n.kind in ("storage", "monitor") or n.name == w or w is None:
                continue
            d = n.info(timeout=1.0)
            if d and d.get("redoubt_role") in ("primary", "writer"):
                if now() - restarted.get(n.name, 0) > 5:
                    log(f"  repair: {n.name} is an old {d.get('redoubt_role')} (fenced:{d.get('fenced')}): restart as a "
                        f"{cl.follower_kind()} of {w}")
                    restarted[n.name] = now()
                    cl.restart(n)
        if w and cl.writable() and cl.followers_ok():
            return True
        time.sleep(0.2)
    return False


def mget(port, keys, timeout=10):
    out = {}
    c = Resp(port, timeout=timeout)
    try:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            deadline = time.time() + timeout
            while True:
                r = c.call("MGET", *chunk)
                # NOLEASE is transient by design (LS4: a writer whose lease renewals came late on a
                # loaded machine refuses reads until the next one): retry, as a client would
                if isinstance(r, list) or "NOLEASE" not in str(r) or time.time() >= deadline:
                    break
                time.sleep(0.05)
            if not isinstance(r, list):
                raise RuntimeError(f"MGET on :{port}: {r}")
            out.update(zip(chunk, r))
    finally:
        c.close()
    return out


# ---------------------------------------------------------------- one schedule

class Runner:
    def __init__(self, mode, base_seed, nmon, horizon, kinds, strict_reads, xfail):
        self.mode, self.base_seed, self.nmon, self.horizon = mode, base_seed, nmon, horizon
        self.kinds, self.strict_reads, self.xfail = kinds, strict_reads, xfail
        self.cl = None
        self.net = None
        self.dir = None
        self.results = []
        self.all_acked = []  # acknowledged unique-key writes of every schedule (the end check)

    def log(self, msg):
        print(msg, flush=True)

    def fresh(self):
        self.close()
        self.all_acked = []  # the end check covers one cluster's lifetime
        self.dir = tempfile.mkdtemp(prefix=f"redoubt-chaos-{self.mode}-")
        self.net = Net(self.dir, self.base_seed)
        self.cl = ChaosCluster(self.mode, self.dir, self.net, nmon=self.nmon)
        t = now()
        self.cl.start()
        self.log(f"[{self.mode}] cluster started in {now() - t:.1f}s ({self.dir}, {self.nmon} monitor(s))")

    def close(self):
        if self.cl:
            self.cl.stop()
        if self.net:
            self.net.close()
        if self.dir and os.environ.get("CHAOS_KEEP") != "1" and not any(r["failed"] for r in self.results):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.cl = self.net = None

    def schedule(self, idx, fresh):
        seed = self.base_seed + idx
        steps = make_schedule(seed, self.mode, self.horizon, self.nmon, self.kinds)
        if fresh or self.cl is None:
            self.fresh()
        cl = self.cl
        kinds = sorted({s[2] for s in steps})
        # cascade: the writer killed twice (the second time often the freshly promoted one, while the
        # first failover may be under way). Availability after such a schedule is a known open issue
        # on main until fenced writers rejoined by themselves (see README); CHAOS_STRICT_CASCADE=0 makes
        # its availability errors expected failures again.
        cascade = sum(1 for st in steps if st[2] == "kill_writer") >= 2
        self.log(f"[{self.mode}] schedule {idx} seed={seed} (replay: SEED={self.base_seed} CHAOS_MODES={self.mode} "
                 f"CHAOS_FIRST={idx} CHAOS_SCHEDULES=1 CHAOS_FRESH=1): {len(steps)} fault(s): {', '.join(kinds)}")
        ns = f"s{seed}"
        hist = history.History()
        stop = threading.Event()
        rng = random.Random(seed * 7 + 1)
        w0 = cl.current_writer()
        workers = []
        wid = 0
        for _ in range(2):
            wid += 1
            workers.append(history.Worker(wid, "discover", cl, hist, ns, random.Random(rng.random()), stop))
        wid += 1
        workers.append(history.Worker(wid, "pinned", cl, hist, ns, random.Random(rng.random()), stop, node=cl.nodes[w0]))
        follower_wids = set()
        for f in cl.data_nodes():
            if f.name != w0:
                wid += 1
                follower_wids.add(wid)
                workers.append(history.Worker(wid, "follower", cl, hist, ns, random.Random(rng.random()), stop, node=f))
        for wk in workers:
            wk.start()
        time.sleep(0.5)  # some history before the first fault (>= 0.8 s in)
        ex = Executor(cl, self.log)
        t_sched = now()
        res = {"mode": self.mode, "idx": idx, "seed": seed, "kinds": kinds, "failed": False, "xfail": False,
               "errors": [], "stale": 0, "lost": 0}
        try:
            ex.run(steps, self.horizon)
            ex.heal()
            t_heal = now()
            self.log(f"  +{t_heal - ex.t0:6.2f}s heal: network healed, processes resumed/restarted")
            avail = None
            while now() - t_heal < 30:
                if cl.writable(timeout=1.0):
                    avail = now() - t_heal
                    break
                time.sleep(0.05)
            self.log(f"  writes accepted {'%.2fs' % avail if avail is not None else 'NOT within 30s'} after the heal "
                     f"(writer {cl.current_writer()})")
            if avail is None or avail > AVAIL_S:
                res["errors"].append(("unavailable", f"no write accepted within {AVAIL_S}s of the heal "
                                      f"({'%.2fs' % avail if avail is not None else 'never'})"))
            time.sleep(1.0)
        finally:
            stop.set()
            for wk in workers:
                wk.join(timeout=10)
        healthy = repair(cl, self.log)
        if not healthy:
            res["errors"].append(("unrecovered", "the cluster did not get back to a writer + streaming followers in 40s"))
        w = cl.current_writer()
        ops = hist.ops
        keys = sorted({o.key for o in ops})
        final = None
        try:
            final = mget(cl.nodes[w].port, keys)
        except Exception as e:  # noqa: BLE001
            res["errors"].append(("unrecovered", f"cannot read the final state from {w}: {e}"))
        if final is not None:
            errors, stale, stats = history.check(ops, final, hist.follower_conns)
            res["errors"] += errors
            res["stale"] = len(stale)
            res["lost"] = stats["lost"]
            if self.strict_reads:
                res["errors"] += stale
            self.log(f"  history: {stats['ops']} ops, {stats['acked_writes']} acked / {stats['info_writes']} indeterminate "
                     f"/ {stats['failed_writes']} refused writes, {stats['reads']} reads; stale reads: {len(stale)}")
            for _, m in stale[:2]:
                self.log("    stale: " + m)
            self.all_acked += [(o.key, o.arg) for o in ops if o.kind == "set" and ":u:" in o.key and o.status == "ok"]
            # 6 convergence: every follower reaches the writer's state for the schedule's keys
            if healthy:
                for f in cl.data_nodes():
                    if f.name == w:
                        continue
                    t = now()
                    diff = None
                    while now() - t < 20:
                        try:
                            fv = mget(f.port, keys)
                            wv = mget(cl.nodes[w].port, keys)
                            diff = [k for k in keys if fv.get(k) != wv.get(k)]
                        except Exception as e:  # noqa: BLE001
                            diff = [f"error {e}"]
                        if not diff:
                            break
                        time.sleep(0.2)
                    if diff:
                        res["errors"].append(("diverged", f"{f.name} differs from the writer {w} on {len(diff)} keys "
                                              f"after 20s, e.g. {diff[:3]}"))
        bad = [e for e in res["errors"]]
        if bad:
            res["failed"] = True
            res["xfail"] = bool(self.xfail) and any(k in self.xfail for k in kinds)
            if cascade and os.environ.get("CHAOS_STRICT_CASCADE", "1") != "1" and \
                    all(k in ("unavailable", "unrecovered") for k, _ in bad):
                res["xfail"] = True
                res["kinds"] = kinds + ["cascade"]
            tag = "EXPECTED FAILURE" if res["xfail"] else "FAIL"
            self.log(f"  {tag}: schedule {idx} seed={seed}: " + history.summarize(bad))
        else:
            self.log(f"  ok ({now() - t_sched:.1f}s)")
        self.results.append(res)
        if not healthy:
            self.log(f"  [{self.mode}] the cluster did not recover: a fresh one for the next schedule")
            self.close_keep()
        return res

    def close_keep(self):
        if self.cl:
            self.cl.stop()
        if self.net:
            self.net.close()
        self.cl = self.net = None

    def final_check(self):
        """Every acknowledged unique-key write of every schedule, on the last writer."""
        if not self.cl or not self.all_acked:
            return 0
        w = self.cl.current_writer()
        try:
            vals = mget(self.cl.nodes[w].port, [k for k, _ in self.all_acked])
        except Exception as e:  # noqa: BLE001
            self.log(f"[{self.mode}] end check: cannot read from {w}: {e}")
            return -1
        lost = [(k, v) for k, v in self.all_acked if (vals.get(k) or b"").decode() != v]
        self.log(f"[{self.mode}] end check: {len(self.all_acked)} acknowledged unique writes of all schedules, "
                 f"{len(lost)} missing on the final writer {w}" + (f", e.g. {lost[:3]}" if lost else ""))
        return len(lost)


def main():
    seed = int(os.environ.get("SEED", str(int(time.time() * 1000) % 1000000007)))
    modes = [m for m in os.environ.get("CHAOS_MODES", "classic,aurora").split(",") if m]
    n = env_int("CHAOS_SCHEDULES", 4)
    first = env_int("CHAOS_FIRST", 0)
    nmon = env_int("CHAOS_MONITORS", 3)
    horizon = float(os.environ.get("CHAOS_HORIZON", "6"))
    kinds = [k for k in os.environ.get("CHAOS_KINDS", "").split(",") if k]
    fresh = os.environ.get("CHAOS_FRESH") == "1"
    strict = os.environ.get("CHAOS_STRICT_READS", "1") == "1"
    xfail = [k for k in os.environ.get("CHAOS_XFAIL", "").split(",") if k]
    budget = float(os.environ.get("CHAOS_BUDGET_S", "0") or 0)
    for k in kinds:
        if k not in FAULTS:
            sys.exit(f"unknown fault kind {k} (known: {', '.join(FAULTS)})")
    print(f"chaos: seed={seed} (replay with SEED={seed}) modes={','.join(modes)} schedules={n} first={first} "
          f"monitors={nmon} horizon={horizon}s", flush=True)
    t_all = now()
    summary = []
    rc = 0
    for mode in modes:
        r = Runner(mode, seed, nmon, horizon, kinds, strict, xfail)
        t_mode = now()
        try:
            for i in range(first, first + n):
                if budget and now() - t_mode > budget:
                    print(f"[{mode}] time budget of {budget}s used: stopping after {i - first} schedules", flush=True)
                    break
                try:
                    r.schedule(i, fresh)
                except Exception:  # noqa: BLE001 - the harness itself failed: report, go on with a fresh cluster
                    traceback.print_exc()
                    r.results.append({"mode": mode, "idx": i, "seed": seed + i, "kinds": [], "failed": True,
                                      "xfail": False, "errors": [("harness", "exception")], "stale": 0, "lost": 0})
                    r.close_keep()
            lost_end = r.final_check()
        finally:
            r.close()
        res = r.results
        nfail = sum(1 for x in res if x["failed"] and not x["xfail"])
        nx = sum(1 for x in res if x["xfail"])
        lost = sum(x["lost"] for x in res)
        stale = sum(x["stale"] for x in res)
        summary.append(f"{mode}: {len(res)} schedules in {now() - t_mode:.0f}s: {nfail} failed, {nx} expected failures, "
                       f"{lost} acknowledged writes lost, {stale} stale reads, end check missing {lost_end}")
        for x in res:
            if x["failed"]:
                summary.append(f"  {'xfail' if x['xfail'] else 'FAIL '} {mode} schedule {x['idx']} seed={x['seed']} "
                               f"[{','.join(x['kinds'])}]: {history.summarize(x['errors'], 0)}  "
                               f"(replay: SEED={seed} CHAOS_MODES={mode} CHAOS_FIRST={x['idx']} CHAOS_SCHEDULES=1)")
        if nfail or lost_end:
            rc = 1
    print(f"chaos summary (seed={seed}, {now() - t_all:.0f}s):", flush=True)
    for line in summary:
        print("  " + line, flush=True)
    sys.exit(rc)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    main()
