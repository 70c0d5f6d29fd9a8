"""The demonstration year against a real 4-validator + 1-observer localnet
(scripts/demo_year.py), with a small population so it stays bounded in time.

Checks the contract of the demonstration: the MSSP settlement computed from
ledger records commits with an ok receipt, every node (observer included)
holds the same app hash afterwards, and the spending chart is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from demo_year import run_year  # noqa: E402
from localnet import find_starting_port, start_cluster  # noqa: E402

pytestmark = pytest.mark.slow

MEMBERS = 200
AGREEMENT_TIMEOUT_S = 30.0


def _demo_testnet(directory: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "node.cli", "testnet", "--demo", "--v", "4", "--observers", "1",
                    "--o", directory, "--starting-port", str(find_starting_port(5))],
                   cwd=ROOT, env=env, check=True, capture_output=True)


def _app_hashes_at_common_height(rpcs: list[str], at_least: int) -> tuple[int, set[Any]]:
    deadline = time.monotonic() + AGREEMENT_TIMEOUT_S
    with httpx.Client(timeout=10) as client:
        while True:
            common = min(int(client.get(url + "/status").json()["height"]) for url in rpcs)
            if common >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        hashes = {client.get(url + "/commit/%d" % common).json()["header"]["app_hash"] for url in rpcs}
    return common, hashes


def test_the_demonstration_year_settles_and_every_node_agrees(tmp_path: Any) -> None:
    directory = str(tmp_path / "net")
    _demo_testnet(directory)
    with start_cluster(directory=directory) as cluster:
        rpcs = [node.rpc for node in cluster.nodes]
        result = run_year(rpcs, cluster.accounts_dir, members=MEMBERS, seed=7, out_dir=str(tmp_path / "out"),
                          log=lambda line: None)
        receipt = result.report["settlement_receipt"]
        assert receipt is not None and receipt.ok, (receipt.code, receipt.message) if receipt else None
        assert result.report["settlement"]["amount_due_cents"] == result.report["settlement"]["result"]["earned_cents"] \
            or result.report["settlement"]["amount_due_cents"] is not None
        assert result.report["bundle_ok"]
        # header h+1 carries the state root after block h: wait until every node has it
        common, hashes = _app_hashes_at_common_height(rpcs, receipt.height + 2)
        assert common >= receipt.height + 1
        assert len(hashes) == 1, hashes
    assert result.chart is not None and os.path.getsize(result.chart) > 0
