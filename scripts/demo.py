"""The README's demonstration: `make demo` runs this.

    python scripts/demo.py [--members N] [--seed S] [--out DIR] [--keep]

1. Writes a testnet with the demonstration's organisations
   (`careledger testnet --demo --v 4 --observers 1`) in a temp dir and starts
   it with `scripts/localnet.py` (4 validators + 1 regulator observer, one OS
   process each, all on 127.0.0.1).
2. Submits signed transfers and prints every node's committed height and the
   app hash each one holds at a common height (they must agree).
3. Runs the demonstration year (`scripts/demo_year.py`) against the cluster and
   prints its settlement report; the chart goes to `--out` (default
   ./demo-output).
4. Prints the node table again and stops the cluster — always, also on an
   error, Ctrl-C or SIGTERM.

The kernel demonstration (a state tree on LevelDB with proofs) is
`scripts/demo_kernel.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import demo_year  # noqa: E402
from localnet import ClusterError, Cluster, find_starting_port, start_cluster  # noqa: E402
from ledger.types import Tx  # noqa: E402
from node.cli import next_nonces  # noqa: E402
from node.keys import load_key_file  # noqa: E402

VALIDATORS = 4
OBSERVERS = 1
DEFAULT_MEMBERS = 5_000  # the issue's ≈5,000-member year: 5–8 minutes on 2 cores
AGREEMENT_TIMEOUT_S = 30.0
TRANSFER_ROLES = ("payer", "provider", "auditor")  # regulators observe


def create_demo_testnet(directory: str) -> None:
    """`careledger testnet --demo` into `directory` (as an operator would type it)."""
    command = [sys.executable, "-m", "node.cli", "testnet", "--demo", "--v", str(VALIDATORS),
               "--observers", str(OBSERVERS), "--o", directory,
               "--starting-port", str(find_starting_port(VALIDATORS + OBSERVERS))]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError("careledger testnet --demo failed: %s" % (result.stderr or result.stdout))


def send_transfers(cluster: Cluster, count: int = 20) -> int:
    """Signed transfers between the demo organisations' accounts; returns the last commit height."""
    directory = cluster.accounts_dir
    names = [f for f in sorted(os.listdir(directory))
             if json.load(open(os.path.join(directory, f))).get("role") in TRANSFER_ROLES]
    keys = [load_key_file(os.path.join(directory, f)) for f in names]
    url = cluster.validators[0].rpc
    with httpx.Client(base_url=url, timeout=10) as client:
        chain_id = client.get("/status").json()["chain_id"]
        nonces = next_nonces(client, [k.public_key for k in keys])
        hashes = []
        for i in range(count):
            sender, receiver = keys[i % len(keys)], keys[(i + 1) % len(keys)]
            tx = Tx(chain_id, sender.public_key, nonces[sender.public_key], "transfer",
                    {"to": receiver.public_key, "amount": 100 + i})
            nonces[sender.public_key] += 1
            node = cluster.validators[i % len(cluster.validators)].rpc
            response = client.post(node + "/tx", content=tx.signed(sender).encode(),
                                   headers={"content-type": "application/octet-stream"})
            response.raise_for_status()
            hashes.append(response.json()["hash"])
        deadline = time.monotonic() + AGREEMENT_TIMEOUT_S
        height = 0
        for tx_hash in hashes:
            while True:
                answer = client.get("/tx/" + tx_hash)
                if answer.status_code == 200 and answer.json().get("status") == "committed":
                    if not (answer.json().get("receipt") or {}).get("ok"):
                        raise RuntimeError("transfer %s failed: %s" % (tx_hash[:12], answer.json().get("receipt")))
                    height = max(height, answer.json()["height"])
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("transfers not committed within %.0f s" % AGREEMENT_TIMEOUT_S)
                time.sleep(0.05)
    return height


def node_agreement(cluster: Cluster, min_height: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """Every node's tip and the app hash in its header at the highest height all of them
    have committed (header h carries the state root after block h−1). Waits (bounded)
    until every node reaches `min_height`."""
    deadline = time.monotonic() + AGREEMENT_TIMEOUT_S
    with httpx.Client(timeout=10) as client:
        while True:
            statuses = {n.name: client.get(n.rpc + "/status").json() for n in cluster.nodes}
            common = min(int(s["height"]) for s in statuses.values())
            if common >= min_height or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        rows = []
        for node in cluster.nodes:
            commit = client.get(node.rpc + "/commit/%d" % common)
            app_hash = commit.json()["header"]["app_hash"] if commit.status_code == 200 else None
            rows.append({"node": node.name, "role": node.role, "height": int(statuses[node.name]["height"]),
                         "common": common, "app_hash": app_hash})
    agree = len({r["app_hash"] for r in rows}) == 1 and rows[0]["app_hash"] is not None
    return rows, agree


def print_agreement(console: Console, rows: list[dict[str, Any]], agree: bool, title: str) -> None:
    table = Table(title=title)
    for column in ("node", "role", "committed height", "app hash at height %d" % rows[0]["common"]):
        table.add_column(column)
    for row in rows:
        table.add_row(row["node"], row["role"], str(row["height"]),
                      (row["app_hash"] or "-")[:16] + "…")
    console.print(table)
    console.print("[bold green]all %d nodes agree[/]" % len(rows) if agree else "[bold red]nodes DISAGREE[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS,
                        help="Synthetic population size (default %(default)s; ~3,400 assigned is the tcoc limit).")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--out", default=os.path.join(os.getcwd(), "demo-output"), help="Where the chart goes.")
    parser.add_argument("--keep", action="store_true", help="Keep the testnet directory (homes, logs).")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_sigterm)
    directory = tempfile.mkdtemp(prefix="careledger-demo-")
    started = time.monotonic()
    code = 1
    try:
        create_demo_testnet(directory)
        console.print("[bold]CareLedger demonstration[/]: %d validators + %d observer in %s" % (
            VALIDATORS, OBSERVERS, directory))
        with start_cluster(directory=directory) as cluster:
            for node in cluster.nodes:
                console.print("  %-10s %-9s pid %-7s %s" % (node.name, node.role, node.pid, node.rpc))
            height = send_transfers(cluster)
            rows, agree = node_agreement(cluster, height + 1)
            print_agreement(console, rows, agree, "20 signed transfers committed")
            result = demo_year.run_year([n.rpc for n in cluster.nodes], cluster.accounts_dir, args.members,
                                        args.seed, args.out, log=console.print)
            demo_year.print_report(result, console)
            last = max((o.height or 0) for o in [result.report["settlement_receipt"]] if o is not None) if \
                result.report["settlement_receipt"] else 0
            rows, agree = node_agreement(cluster, last + 2)
            print_agreement(console, rows, agree, "after the demonstration year")
            console.print("chart: %s" % result.chart)
            code = 0 if agree and result.report["settlement_ok"] else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the cluster[/]")
        code = 130
    except (ClusterError, demo_year.DemoError, httpx.HTTPError, RuntimeError) as exc:
        console.print("[bold red]error:[/] %s" % exc)
        code = 1
    finally:
        if args.keep:
            console.print("testnet kept in %s" % directory)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    console.print("demo finished in %.0f s (cluster stopped)" % (time.monotonic() - started))
    return code


if __name__ == "__main__":
    sys.exit(main())
