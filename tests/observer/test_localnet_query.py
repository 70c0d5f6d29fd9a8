"""`careledger query --prove` and `observe` against a real localnet (4 validators +
1 observer, one OS process each; scripts/localnet.py), bounded in time."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Iterator

import httpx
import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from localnet import Cluster, start_cluster  # noqa: E402

from ledger.types import Tx  # noqa: E402
from node.cli import cli, next_nonces  # noqa: E402
from node.keys import load_key_file  # noqa: E402

pytestmark = pytest.mark.slow

DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def localnet(tmp_path_factory: Any) -> Iterator[Cluster]:
    with start_cluster(validators=4, observers=1, directory=str(tmp_path_factory.mktemp("localnet") / "net")) as net:
        yield net


def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (DEADLINE_S, what))
        time.sleep(0.1)


def _transfer(localnet: Cluster, amount: int) -> str:
    directory = localnet.accounts_dir
    keys = [load_key_file(os.path.join(directory, f)) for f in sorted(os.listdir(directory))]
    sender, to = keys[0], keys[1].public_key
    url = localnet.validators[0].rpc
    with httpx.Client(base_url=url, timeout=10) as client:
        chain_id = client.get("/status").json()["chain_id"]
        nonce = next_nonces(client, [sender.public_key])[sender.public_key]
        raw = Tx(chain_id, sender.public_key, nonce, "transfer", {"to": to, "amount": amount}).signed(sender).encode()
        response = client.post("/tx", content=raw, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    tx_hash = response.json()["hash"]
    observer = localnet.observers[0].rpc
    _until(lambda: httpx.get("%s/tx/%s" % (observer, tx_hash), timeout=5).json().get("status") == "committed",
           "tx %s on the observer" % tx_hash[:12])
    return str(tx_hash)


def test_query_prove_against_a_real_observer_verifies_a_tx_and_a_value(localnet: Cluster) -> None:
    observer = localnet.observers[0]
    genesis_file = os.path.join(localnet.validators[0].home, "config", "genesis.json")
    first = _transfer(localnet, 7)
    _transfer(localnet, 1)  # one more block certifies the first one's receipt
    runner = CliRunner()
    result = runner.invoke(cli, ["query", "--node", observer.rpc, "--tx", first, "--prove", "--genesis", genesis_file])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["body"]["amount"] == 7
    assert result.output.strip().splitlines()[-1].startswith("verified at height ")

    sender = sorted(os.listdir(localnet.accounts_dir))[0]
    public = load_key_file(os.path.join(localnet.accounts_dir, sender)).public_key.hex()
    result = runner.invoke(cli, ["query", "--node", observer.rpc, "nonce/" + public, "--prove",
                                 "--genesis", genesis_file])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("verified at height ")


def test_the_observer_process_verifies_headers_refuses_txs_and_exports_its_metrics(localnet: Cluster) -> None:
    observer = localnet.observers[0]
    _transfer(localnet, 3)
    status = httpx.get(observer.rpc + "/verified", timeout=5).json()
    assert status["enabled"] and status["failure"] is None and status["verified_height"] >= 1
    assert httpx.post(observer.rpc + "/tx", content=b"x", timeout=5).status_code == 503
    metrics = httpx.get(observer.metrics, timeout=5).text
    assert "careledger_observer_verified_height" in metrics
    assert httpx.get(observer.rpc + "/explorer", timeout=5).status_code == 200
