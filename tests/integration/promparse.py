"""Scrapes Prometheus endpoints and parses them with the real parser (prometheus_client, Debian's
python3-prometheus-client: run this with /usr/bin/python3). Prints one JSON object:
{url: {family: {"type": t, "samples": [[name, labels, value], ...]}}}. Any parse error, a family
written twice, or a non-200 answer exits non-zero with the reason. --lenient accepts a family name
twice (redis_exporter's Go collector writes go_memstats_alloc_bytes as a gauge and as a counter
_total, which the parser names alike) and merges their samples.

    /usr/bin/python3 tests/integration/promparse.py [--lenient] http://127.0.0.1:9100/metrics ...
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url, lenient=False):
    with urllib.request.urlopen(url, timeout=10) as r:
        if r.status != 200:
            raise SystemExit(f"{url}: HTTP {r.status}")
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            raise SystemExit(f"{url}: Content-Type {ctype!r}")
        text = r.read().decode()
    fams = {}
    for f in text_string_to_metric_families(text):
        samples = [[s.name, s.labels, s.value] for s in f.samples]
        if f.name in fams:  # the format requires one block per family
            if not lenient:
                raise SystemExit(f"{url}: family {f.name} appears twice")
            fams[f.name]["samples"] += samples
            continue
        fams[f.name] = {"type": f.type, "samples": samples}
    return fams


if __name__ == "__main__":
    lenient = "--lenient" in sys.argv[1:]
    print(json.dumps({u: scrape(u, lenient) for u in sys.argv[1:] if u != "--lenient"}))
