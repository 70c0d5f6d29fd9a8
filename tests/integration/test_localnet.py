"""Real node processes on 127.0.0.1 (scripts/localnet.py), bounded in time.

Each test starts its own 4-validator cluster, drives it over the HTTP API and
checks the contract: transactions commit wherever they are submitted, every
node agrees on every block (so on every app hash), crashes and restarts lose
nothing acknowledged, the primary's crash is survived by a view change, and
bad input gets a 400 naming the reason. Polling real processes is bounded by
explicit deadlines (there is no virtual clock across processes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Iterator

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from localnet import Cluster, NodeProcess, start_cluster  # noqa: E402

from ledger.types import Tx  # noqa: E402
from node.cli import next_nonces  # noqa: E402
from node.keys import load_key_file  # noqa: E402

pytestmark = pytest.mark.slow

COMMIT_TIMEOUT_S = 60.0
POLL_S = 0.1


@pytest.fixture
def cluster(tmp_path: Any) -> Iterator[Cluster]:
    with start_cluster(validators=4, directory=str(tmp_path / "net"), accounts_per_org=2) as running:
        yield running


class Wallet:
    """The funded testnet accounts, signing transfers with locally tracked nonces."""

    def __init__(self, cluster: Cluster) -> None:
        directory = cluster.accounts_dir
        self.keys = [load_key_file(os.path.join(directory, f)) for f in sorted(os.listdir(directory))]
        url = cluster.validators[0].rpc
        with httpx.Client(base_url=url, timeout=10) as client:
            self.chain_id = client.get("/status").json()["chain_id"]
            self.nonces = next_nonces(client, [k.public_key for k in self.keys])

    def transfer(self, sender: int, amount: int = 1) -> bytes:
        key = self.keys[sender % len(self.keys)]
        to = self.keys[(sender + 1) % len(self.keys)].public_key
        nonce = self.nonces[key.public_key]
        self.nonces[key.public_key] = nonce + 1
        return Tx(self.chain_id, key.public_key, nonce, "transfer", {"to": to, "amount": amount}).signed(key).encode()


def submit(node: NodeProcess, raw: bytes) -> str:
    response = httpx.post(node.rpc + "/tx", content=raw, headers={"content-type": "application/octet-stream"},
                          timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["hash"])


def status(node: NodeProcess) -> dict[str, Any]:
    return httpx.get(node.rpc + "/status", timeout=5).json()


def wait_until(predicate: Any, what: str, timeout_s: float = COMMIT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout_s, what))
        time.sleep(POLL_S)


def committed_on(node: NodeProcess, hashes: list[str]) -> bool:
    with httpx.Client(base_url=node.rpc, timeout=5) as client:
        for tx_hash in hashes:
            response = client.get("/tx/" + tx_hash)
            if response.status_code != 200 or response.json().get("status") != "committed":
                return False
    return True


def wait_committed(nodes: list[NodeProcess], hashes: list[str]) -> None:
    for node in nodes:
        wait_until(lambda: committed_on(node, hashes), "%d txs committed on %s" % (len(hashes), node.name))


def assert_same_chain(nodes: list[NodeProcess]) -> int:
    """Every node holds byte-identical blocks up to the lowest height (so the same app hash
    at every height: header h+1 carries the state root after h). Returns that height."""
    height = min(int(status(n)["height"]) for n in nodes)
    for h in range(1, height + 1):
        encoded = {n.name: httpx.get("%s/blocks/%d" % (n.rpc, h), timeout=5).json()["encoded"] for n in nodes}
        assert len(set(encoded.values())) == 1, "nodes disagree at height %d: %s" % (h, sorted(encoded))
    return height


def wait_height(nodes: list[NodeProcess], height: int) -> None:
    for node in nodes:
        wait_until(lambda: int(status(node)["height"]) >= height, "%s to reach height %d" % (node.name, height))


def test_transactions_submitted_to_different_nodes_all_commit_with_one_app_hash_per_height(
        cluster: Cluster) -> None:
    wallet = Wallet(cluster)
    hashes = [submit(cluster.validators[i % 4], wallet.transfer(i)) for i in range(24)]
    wait_committed(cluster.validators, hashes)
    height = assert_same_chain(cluster.validators)
    assert height >= 1
    app_hashes = {status(n)["app_hash"] for n in cluster.validators if int(status(n)["height"]) == height}
    assert len(app_hashes) == 1


def test_a_killed_validator_is_not_needed_and_catches_up_after_restart(cluster: Cluster) -> None:
    wallet = Wallet(cluster)
    victim = cluster.validators[3]
    survivors = cluster.validators[:3]
    first = [submit(survivors[i % 3], wallet.transfer(i)) for i in range(12)]
    victim.kill()
    later = [submit(survivors[i % 3], wallet.transfer(i)) for i in range(12, 36)]
    wait_committed(survivors, first + later)
    target = min(int(status(n)["height"]) for n in survivors)
    victim.start()
    wait_height([victim], target)
    wait_committed([victim], first + later)
    assert_same_chain(cluster.validators)


def test_killing_the_primary_forces_a_view_change_and_commits_resume(cluster: Cluster) -> None:
    wallet = Wallet(cluster)
    warmup = [submit(cluster.validators[i % 4], wallet.transfer(i)) for i in range(8)]
    wait_committed(cluster.validators, warmup)
    view = int(status(cluster.validators[0])["view"])
    primary = cluster.validators[view % 4]
    primary.kill()
    survivors = [n for n in cluster.validators if n is not primary]
    after = [submit(survivors[i % 3], wallet.transfer(i)) for i in range(8, 20)]
    wait_committed(survivors, after)
    assert all(int(status(n)["view"]) > view for n in survivors)
    assert_same_chain(survivors)


def test_stopping_and_restarting_every_node_loses_no_acknowledged_transaction(cluster: Cluster) -> None:
    wallet = Wallet(cluster)
    acknowledged = [submit(cluster.validators[i % 4], wallet.transfer(i)) for i in range(30)]
    wait_committed(cluster.validators, acknowledged)
    before = assert_same_chain(cluster.validators)
    blocks_before = httpx.get("%s/blocks/%d" % (cluster.validators[0].rpc, before), timeout=5).json()["hash"]
    for node in cluster.nodes:
        node.kill()
    for node in cluster.nodes:
        node.start()
    from localnet import wait_healthy

    wait_healthy(cluster.nodes)
    wait_height(cluster.validators, before)
    for node in cluster.validators:
        assert httpx.get("%s/blocks/%d" % (node.rpc, before), timeout=5).json()["hash"] == blocks_before
    wait_committed(cluster.validators, acknowledged)
    wallet = Wallet(cluster)  # nonces from the restarted chain
    more = [submit(cluster.validators[i % 4], wallet.transfer(i)) for i in range(4)]
    wait_committed(cluster.validators, more)
    assert_same_chain(cluster.validators)


def test_a_malformed_transaction_gets_a_400_with_a_reason(cluster: Cluster) -> None:
    node = cluster.validators[0]
    garbage = httpx.post(node.rpc + "/tx", content=b"\x93not a tx",
                         headers={"content-type": "application/octet-stream"}, timeout=10)
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "malformed"
    wallet = Wallet(cluster)
    forged = bytearray(wallet.transfer(0))
    forged[-1] ^= 0x01  # flip a bit of the signature
    bad_signature = httpx.post(node.rpc + "/tx", content=bytes(forged), timeout=10)
    assert bad_signature.status_code == 400
    assert bad_signature.json()["error"] == "bad_signature"
    as_json = httpx.post(node.rpc + "/tx", content=json.dumps({"tx": "zz"}),
                         headers={"content-type": "application/json"}, timeout=10)
    assert as_json.status_code == 400
