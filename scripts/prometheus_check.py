"""Show that a real Prometheus server scrapes every node of a local cluster.

Starts a localnet (4 validators + 1 observer by default), writes a scrape
config naming each node's metrics endpoint, runs the `prometheus` binary
(Debian package `prometheus`) on a loopback port with a throw-away data dir,
waits (bounded) until every target is "up" and a CareLedger series is
queryable, prints one line per target and a final figure line
`targets=N up=U series=S`, then stops everything. Exit 1 unless all are up.

    python scripts/prometheus_check.py [--validators 4] [--observers 1] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from localnet import start_cluster  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape_config(cluster) -> str:
    lines = ["global:", "  scrape_interval: 1s", "scrape_configs:", "  - job_name: careledger", "    static_configs:"]
    for node in cluster.nodes:
        target = urllib.parse.urlparse(node.metrics).netloc
        lines.append('      - targets: ["%s"]' % target)
        lines.append("        labels: {moniker: %s, role: %s}" % (node.name, node.role))
    return "\n".join(lines) + "\n"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--observers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus is not installed (apt-get install prometheus)", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="careledger-prometheus-")
    with start_cluster(args.validators, args.observers) as cluster:
        config = pathlib.Path(workdir, "prometheus.yml")
        config.write_text(scrape_config(cluster))
        port = free_port()
        server = subprocess.Popen(
            [binary, "--config.file=%s" % config, "--storage.tsdb.path=%s" % pathlib.Path(workdir, "data"),
             "--web.listen-address=127.0.0.1:%d" % port],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = "http://127.0.0.1:%d" % port
        targets: list[dict] = []
        series = 0
        try:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                time.sleep(1)
                try:
                    targets = get_json(base + "/api/v1/targets")["data"]["activeTargets"]
                    query = urllib.parse.quote("careledger_consensus_height")
                    series = len(get_json(base + "/api/v1/query?query=" + query)["data"]["result"])
                except (OSError, ValueError, KeyError):
                    continue
                if len(targets) == len(cluster.nodes) and all(t["health"] == "up" for t in targets) and series == len(cluster.nodes):
                    break
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
            shutil.rmtree(workdir, ignore_errors=True)
    for target in sorted(targets, key=lambda t: t["labels"].get("moniker", "")):
        print("%-10s %-9s %-28s %s" % (target["labels"].get("moniker"), target["labels"].get("role"),
                                      target["scrapeUrl"], target["health"]))
    up = sum(1 for t in targets if t["health"] == "up")
    print("targets=%d up=%d series=%d" % (len(cluster.nodes), up, series))
    return 0 if up == len(cluster.nodes) and series == len(cluster.nodes) else 1


if __name__ == "__main__":
    sys.exit(main())
