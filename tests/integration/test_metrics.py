"""Prometheus metrics on every process, LSNs as X/Y, COMMAND DOCS, redis_exporter (issue 14).

1. classic primary + replica (harness) with --metrics-port, a write load: every endpoint parses with
   the real parser (promparse.py under Debian's /usr/bin/python3: prometheus_client); the commit-latency
   and group-commit-size histograms counted the commits; LSN fields read in INFO as X/Y and the same
   value as a number in the metrics; ROLE keeps Redis's integer offsets.
2. redis_exporter (Debian's prometheus-redis-exporter) scrapes the primary: redis_up 1, keys, clients,
   memory, replication offset (skipped with a note when it is not installed).
3. COMMAND COUNT, COMMAND LIST, COMMAND INFO and COMMAND DOCS name the same commands, every doc has a
   summary, a group and the arity of COMMAND INFO.
4. scripts/cluster start aurora --metrics-base M: the writer, the reader, 6 storage nodes and 3 monitors
   all serve metrics (storage: SCL, fsyncs, hot log, epoch, connections; monitor: node up/down, epochs,
   failover counters); the writer's ROLE lists the reader's listening port; kill -9 of the writer: the monitors' failovers_completed_total counts it, the old
   writer's node_alive is 0 and the new writer reports the new epoch.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import ROOT, Primary, Replica, Resp, check, free_port, parse_lsn, tmpdir, wait_for, wait_converged
from test_cluster_classic import Cluster, first_write_after, free_range

SYSPY = "/usr/bin/python3"
PARSE = os.path.join(ROOT, "tests", "integration", "promparse.py")
XY = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
t_start = time.time()


def have_parser():
    r = subprocess.run([SYSPY, "-c", "import prometheus_client"], capture_output=True)
    return r.returncode == 0


def scrape(*ports):
    """{port: {family: {"type", "samples"}}} parsed by prometheus_client."""
    r = subprocess.run([SYSPY, PARSE] + [f"http://127.0.0.1:{p}/metrics" for p in ports],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"promparse failed on {ports}: {r.stdout[-500:]}{r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    return {p: out[f"http://127.0.0.1:{p}/metrics"] for p in ports}


def value(fams, name, **labels):
    """The sample name{labels}; a counter's family is named without _total by the parser."""
    f = fams.get(name) or fams.get(name[:-6] if name.endswith("_total") else name)
    check(f is not None, f"family {name} missing; have {sorted(fams)[:60]}")
    for sname, slabels, v in f["samples"]:
        if sname == name and all(slabels.get(k) == str(x) for k, x in labels.items()):
            return v
    check(False, f"no sample {name}{labels} in {f['samples'][:10]}")


def hist_count(fams, name):
    f = fams[name]
    check(f["type"] == "histogram", f"{name} is a histogram: {f['type']}")
    return [v for n, _, v in f["samples"] if n == name + "_count"][0]


def raw_info(port, section=None):
    c = Resp(port, timeout=5)
    try:
        r = c.call("INFO", section) if section else c.call("INFO")
        return r.decode()
    finally:
        c.close()


def raw_fields(text):
    d = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            d[k] = v.strip()
    return d


def classic_part():
    pm, rm = free_port(), free_port()
    p = Primary(args=["--metrics-port", str(pm)]).start()
    r = Replica(p.port, "r1", args=["--metrics-port", str(rm)]).start()
    c = Resp(p.port, timeout=10)
    for i in range(300):
        c.call("SET", f"m:{i}", "v" * 50)
    c.close()
    wait_converged(p, [r])
    fams = scrape(pm, rm)
    pf, rf = fams[pm], fams[rm]
    commits = hist_count(pf, "redoubt_commit_latency_seconds")
    groups = hist_count(pf, "redoubt_group_commit_size")
    check(commits >= 300 and groups >= 1, f"histograms: {commits} commits timed, {groups} WAL flushes")
    gsum = [v for n, _, v in pf["redoubt_group_commit_size"]["samples"] if n.endswith("_sum")][0]
    check(gsum >= 300, f"group commit sizes add up to the commits: {gsum}")
    check(value(pf, "redoubt_role", role="primary") == 1 and value(rf, "redoubt_role", role="replica") == 1, "roles")
    check(value(pf, "redoubt_connected_clients") >= 0 and value(pf, "redoubt_wal_bytes") > 0, "clients, WAL bytes")
    check(value(pf, "redoubt_replica_lag_bytes", replica="r1") >= 0, "replica lag on the primary")
    check(value(rf, "redoubt_lag_ms") >= 0 and value(pf, "redoubt_timeline") >= 1, "lag_ms, timeline")
    check(value(pf, "redoubt_keyspace_keys", db="db0") == 300, "keyspace keys")
    # LSNs: X/Y in INFO (a person reads them), numbers in the metrics; Redis's offsets stay decimal
    pi, ri = raw_fields(raw_info(p.port)), raw_fields(raw_info(r.port))
    for k in ("wal_insert_lsn", "wal_flushed_lsn", "wal_redo_lsn", "release_lsn"):
        check(XY.match(pi[k]), f"primary INFO {k} as X/Y: {pi[k]}")
    for k in ("receive_lsn", "write_lsn", "flush_lsn", "apply_lsn", "primary_flush_lsn"):
        check(XY.match(ri[k]), f"replica INFO {k} as X/Y: {ri[k]}")
    check(pi["master_repl_offset"].isdigit(), f"master_repl_offset stays decimal (Redis): {pi['master_repl_offset']}")
    slave = [v for k, v in pi.items() if k.startswith("slave") and k[5:].isdigit()][0]
    check(re.search(r"flush_lsn=[0-9A-F]+/[0-9A-F]+", slave) and re.search(r"offset=\d+(,|$)", slave),
          f"slave0 line: LSNs X/Y, offset decimal: {slave}")
    check(not any(k.endswith("_xy") for k in pi), "no duplicate _xy fields")
    check(parse_lsn(ri["apply_lsn"]) == int(value(rf, "redoubt_apply_lsn")),
          f"the replica's apply_lsn {ri['apply_lsn']} is the metric's number {value(rf, 'redoubt_apply_lsn')}")
    role = Resp(p.port).call("ROLE")
    check(isinstance(role[1], int), f"ROLE's offset stays an integer (Redis clients parse it): {role}")
    print(f"classic: {len(pf)} families on the primary, {len(rf)} on the replica; {int(commits)} commits timed in "
          f"{int(groups)} WAL flushes; INFO LSNs X/Y (wal_flushed_lsn {pi['wal_flushed_lsn']}, apply_lsn "
          f"{ri['apply_lsn']})", flush=True)
    exporter(p)
    command_docs(p.port)
    r.stop()
    p.stop()


def exporter(p):
    exe = shutil.which("prometheus-redis-exporter")
    if not exe:
        print("SKIP redis_exporter: prometheus-redis-exporter is not installed (scripts/install-deps installs it)",
              flush=True)
        return
    eport = free_port()
    proc = subprocess.Popen([exe, "-redis.addr", f"redis://127.0.0.1:{p.port}", "-web.listen-address",
                             f"127.0.0.1:{eport}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up():
            r = subprocess.run([SYSPY, PARSE, "--lenient", f"http://127.0.0.1:{eport}/metrics"], capture_output=True, text=True,
                               timeout=30)
            return json.loads(r.stdout)[f"http://127.0.0.1:{eport}/metrics"] if r.returncode == 0 else None
        fams = wait_for("redis_exporter to answer", up, timeout=20, interval=0.3)
        check(value(fams, "redis_up") == 1, "redis_exporter: redis_up 1")
        check(value(fams, "redis_db_keys", db="db0") == 300, "redis_exporter: redis_db_keys")
        check(value(fams, "redis_connected_clients") >= 1 and value(fams, "redis_memory_used_bytes") > 0,
              "redis_exporter: clients and memory")
        check(value(fams, "redis_connected_slaves") == 1, "redis_exporter: one replica")
        print(f"redis_exporter: {len(fams)} families, redis_up 1, db0 keys 300, "
              f"redis_master_repl_offset {fams.get('redis_master_repl_offset', {}).get('samples', [[0, 0, '-']])[0][2]}",
              flush=True)
    finally:
        proc.kill()
        proc.wait()


def command_docs(port):
    c = Resp(port, timeout=5)
    count = c.call("COMMAND", "COUNT")
    names = [x.decode() for x in c.call("COMMAND", "LIST")]
    info = c.call("COMMAND")
    docs = c.call("COMMAND", "DOCS")
    c.close()
    check(count == len(names) == len(info) == len(docs) // 2, f"COMMAND COUNT {count}, LIST {len(names)}, "
          f"INFO {len(info)}, DOCS {len(docs) // 2}")
    arity = {e[0].decode(): e[1] for e in info}
    check(set(arity) == set(names), "COMMAND INFO and COMMAND LIST name the same commands")
    for i in range(0, len(docs), 2):
        name = docs[i].decode()
        d = {docs[i + 1][j].decode(): docs[i + 1][j + 1].decode() for j in range(0, len(docs[i + 1]), 2)}
        check(d.get("summary") and d.get("group") and int(d.get("arity")) == arity[name], f"COMMAND DOCS {name}: {d}")
    one = Resp(port).call("COMMAND", "DOCS", "get", "nosuchcommand")
    check(len(one) == 2 and one[0] == b"get", f"COMMAND DOCS get nosuch: {one}")
    # every command the server knows is in docs/commands.md
    doc = open(os.path.join(ROOT, "docs", "commands.md")).read().upper()
    missing = [n for n in names if not re.search(r"\b" + re.escape(n.upper()) + r"\b", doc)]
    check(not missing, f"commands missing from docs/commands.md: {missing}")
    print(f"COMMAND: {count} commands; COUNT, LIST, INFO and DOCS agree; all in docs/commands.md", flush=True)


def aurora_part():
    d = tmpdir("redoubt-metrics-")
    cl = Cluster(d)
    try:
        base, mbase = free_range(), free_range()
        cl.run("start", "aurora", "--readers", 1, "--dir", d, "--base-port", base, "--metrics-base", mbase,
                   timeout=180)
        ep = cl.endpoints()
        mport = {n: mbase + port - base for n, (_, port, _) in ep.items()}
        c = Resp(ep["writer"][1], timeout=10)
        for i in range(100):
            c.call("SET", f"a:{i}", "x")
        c.close()
        fams = scrape(*mport.values())
        byname = {n: fams[p] for n, p in mport.items()}
        w, rd, s1, m1 = byname["writer"], byname["reader1"], byname["storage1"], byname["monitor1"]
        check(value(w, "redoubt_role", role="writer") == 1 and value(rd, "redoubt_role", role="reader") == 1, "roles")
        check(value(w, "redoubt_vdl") >= 100 and value(w, "redoubt_epoch") >= 1, "writer VDL, epoch")
        check(hist_count(w, "redoubt_commit_latency_seconds") >= 100, "the writer times its commits")
        check(value(w, "redoubt_writer_storage_scl", storage=f"127.0.0.1:{ep['storage1'][1]}") >= 0, "per-node SCL")
        check(value(rd, "redoubt_read_point") > 0, "reader read point")
        for n in (f"storage{i}" for i in range(1, 7)):
            f = byname[n]
            check(value(f, "redoubt_storage_scl") > 0 and value(f, "redoubt_storage_fsyncs") +
                  value(f, "redoubt_storage_dsync_writes") > 0, f"{n}: scl, fsyncs")
            check(value(f, "redoubt_storage_connections") >= 1 and value(f, "redoubt_storage_epoch") >= 1,
                  f"{n}: connections, epoch")
        check(value(s1, "redoubt_storage_hot_log_bytes") > 0 and "redoubt_storage_coalesced_lsn" in s1, "hot log")
        check(value(s1, "redoubt_storage_peer_scl", peer=f"127.0.0.1:{ep['storage2'][1]}") >= 0, "peer SCL")
        for n in ("monitor1", "monitor2", "monitor3"):
            f = byname[n]
            check(value(f, "redoubt_monitor_node_alive", node="writer") == 1, f"{n}: the writer is up")
            check(value(f, "redoubt_monitor_monitors_up") == 3, f"{n}: 3 monitors up")
            check(value(f, "redoubt_monitor_writer", writer="writer") == 1, f"{n}: names the writer")
        # LSNs as X/Y on every kind of process
        for n, keys in (("writer", ("vdl", "vcl")), ("reader1", ("read_point", "writer_vdl")),
                        ("storage1", ("scl", "durable_lsn", "coalesced_lsn", "hotlog_trim_point"))):
            f = raw_fields(raw_info(ep[n][1]))
            for k in keys:
                check(XY.match(f[k]), f"{n} INFO {k} as X/Y: {f[k]}")
        role = Resp(ep["writer"][1]).call("ROLE")
        check([int(x[1]) for x in role[2]] == [ep["reader1"][1]], f"the writer's ROLE lists reader1's listening port: "
              f"{role}")
        mi = raw_info(ep["monitor1"][1])
        check(re.search(r"lsn=[0-9A-F]+/[0-9A-F]+,", mi), f"monitor node lines: lsn X/Y:\n{mi}")
        print(f"aurora: {len(mport)} endpoints parsed (writer {len(w)} families, storage1 {len(s1)}, monitor1 "
              f"{len(m1)})", flush=True)

        old = ep["writer"]
        os.kill(old[2], signal.SIGKILL)
        new_port, outage = first_write_after(cl, ep["monitor1"][1], old[1], time.time())
        mons = [mport[n] for n in ("monitor1", "monitor2", "monitor3")]

        def counted():
            f = scrape(*mons)
            done = sum(value(f[p], "redoubt_monitor_failovers_completed_total") for p in mons)
            return f if done >= 1 and all(value(f[p], "redoubt_monitor_node_alive", node="writer") == 0
                                           for p in mons) else None
        f = wait_for("a monitor to count the failover and every monitor to see the old writer down", counted, 20, 0.3)
        started = sum(value(f[p], "redoubt_monitor_failovers_started_total") for p in mons)
        epochs = [value(f[p], "redoubt_monitor_current_epoch") for p in mons]
        newname = [n for n, (_, p, _) in cl.endpoints().items() if p == new_port][0]
        nw = scrape(mport[newname])[mport[newname]]
        check(value(nw, "redoubt_role", role="writer") == 1 and value(nw, "redoubt_epoch") >= 2,
              f"{newname} is the writer at epoch >= 2")
        check(value(nw, "redoubt_promotions_total") == 1, f"{newname} counts its promotion")
        print(f"failover to {newname} in {outage:.2f}s: failovers started {int(started)}, completed >= 1; monitors' "
              f"current_epoch {epochs}; old writer node_alive 0 everywhere", flush=True)
        cl.run("stop", timeout=120)
    finally:
        cl.kill_leftovers()


if __name__ == "__main__":
    if not have_parser():
        print("SKIP: python3-prometheus-client is not installed for /usr/bin/python3 (scripts/install-deps)")
    else:
        classic_part()
        aurora_part()
    print(f"PASS ({time.time() - t_start:.1f}s)", flush=True)
