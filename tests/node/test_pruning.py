"""State pruning in the node: `[storage] keep_recent_versions` bounds the state on disk,
recent proofs keep verifying, pruned heights are refused clearly (410)."""

from __future__ import annotations

import functools

import httpx
import pytest
import trio

from contracts.transfer import balance_key
from ledger.errors import ValidationError
from ledger.kv import MemoryStore
from ledger.state import StateProof, verify as verify_state
from ledger.types import CommitCertificate, Header
from node.config import StorageSection
from node.leveldb_store import LevelDBStore
from node.node import run_node
from node.pruning import PRUNE_EVERY_BLOCKS, StatePruner
from node.rpc import create_app
from node.store import STATE_NAMESPACE
from tests.node.chain_helpers import next_block, transfer
from tests.node.node_cluster import connect_all, make_genesis, node_config, transfer as cluster_transfer
from tests.node.test_store_executor import fresh


def state_keys(kv) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _ in kv.iterate_prefix(STATE_NAMESPACE))


def run_overwrites(executor, pruner, heights: int) -> None:  # type: ignore[no-untyped-def]
    """`heights` blocks, each rewriting the same keys (a balance each side and a nonce)."""
    prev = executor.store.block(executor.height)
    for _ in range(heights):
        height = executor.height + 1
        block, cert = next_block(prev, height, [transfer(height, amount=1)])
        executed = executor.execute(block, cert)
        if pruner is not None:
            pruner.on_commit(block, cert, executed)
        prev = block


def test_repeated_overwrites_stop_growing_the_state_once_pruned(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    pruner = StatePruner(executor.tree, keep_recent_versions=4)
    counts = []
    for _ in range(4):
        run_overwrites(executor, pruner, 4 * PRUNE_EVERY_BLOCKS)
        counts.append(state_keys(kv))
    assert counts[1] == counts[2] == counts[3]  # steady state: as many keys as 32 blocks ago
    assert executor.tree.oldest_version() == executor.height - 4 + 1
    assert pruner.counters["pruned_nodes"] > 0


def test_without_pruning_every_overwrite_adds_state_keys(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    pruner = StatePruner(executor.tree, keep_recent_versions=0)  # the default: keep all
    counts = []
    for _ in range(3):
        run_overwrites(executor, pruner, 2 * PRUNE_EVERY_BLOCKS)
        counts.append(state_keys(kv))
    assert counts[0] < counts[1] < counts[2]
    assert executor.tree.oldest_version() == 0


def test_pruned_versions_are_refused_and_kept_ones_still_prove(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    run_overwrites(executor, StatePruner(executor.tree, keep_recent_versions=3), 3 * PRUNE_EVERY_BLOCKS)
    tip = executor.height
    key = balance_key(transfer(1).sender)
    with pytest.raises(ValidationError, match="pruned"):
        executor.tree.get(key, tip - 3)
    for version in (tip - 2, tip - 1, tip):
        value = executor.tree.get(key, version)
        verify_state(executor.tree.root(version), key, value, executor.tree.prove(key, version))


def test_a_pruner_refuses_to_keep_a_single_version() -> None:
    with pytest.raises(ValueError):
        StatePruner(fresh(MemoryStore()).tree, keep_recent_versions=1)


# ------------------------------------------------------------ a running node


def check_proof(answer, genesis, key) -> None:  # type: ignore[no-untyped-def]
    header = Header.decode(bytes.fromhex(answer["header"]))
    certificate = CommitCertificate.decode(bytes.fromhex(answer["certificate"]))
    certificate.verify(genesis.chain_id, genesis.validator_set(), header.hash, header.height)
    assert header.height == answer["height"] + 1 == answer["header_height"]
    value = None if answer["value"] is None else bytes.fromhex(answer["value"])
    verify_state(header.app_hash, key, value, StateProof.from_bytes(bytes.fromhex(answer["proof"])))


async def test_a_pruning_node_proves_recent_heights_and_refuses_pruned_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    genesis, keys, clients = make_genesis(n_clients=2)
    keep = 4
    key = balance_key(clients[0].public_key)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nodes = []
            for index, node_keys in enumerate(keys):
                config = node_config(str(tmp_path / ("node%d" % index)), index, batch_timeout_ms=1)
                config = config.replace(storage=StorageSection(keep_recent_versions=keep))
                nodes.append(await nursery.start(functools.partial(
                    run_node, config, genesis=genesis, keys=node_keys)))
            connect_all(nodes)
            for other in nodes:
                await other.p2p.wait_for_peers(3)
            node = nodes[0]
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(node)), base_url="http://n")
            target = 3 * PRUNE_EVERY_BLOCKS + 2
            nonce = 0
            while node.store.height < target:
                nonce += 1
                await node.submit_tx(cluster_transfer(clients[0], nonce, clients[1].public_key).encode())
                await node.wait_for_height(node.store.height + 1)
                if node.store.height == 3:  # before any pruning: every version is served
                    answer = (await client.get("/state/%s?prove=true&height=1" % key.hex())).json()
                    check_proof(answer, genesis, key)
            tip = node.store.height
            oldest = node.executor.tree.oldest_version()
            assert tip - keep + 1 - PRUNE_EVERY_BLOCKS < oldest <= tip - keep + 1

            latest = await client.get("/state/%s?prove=true" % key.hex())  # the usual route: version tip-1
            assert latest.status_code == 200
            check_proof(latest.json(), genesis, key)
            recent = await client.get("/state/%s?prove=true&height=%d" % (key.hex(), oldest))
            assert recent.status_code == 200 and recent.json()["height"] == oldest
            check_proof(recent.json(), genesis, key)

            pruned = await client.get("/state/%s?prove=true&height=%d" % (key.hex(), oldest - 1))
            assert pruned.status_code == 410
            assert pruned.json()["error"] == "pruned" and pruned.json()["oldest_height"] == oldest
            assert "keep_recent_versions" in pruned.json()["detail"]
            assert (await client.get("/proof/state/%s?version=1" % key.hex())).status_code == 410
            assert (await client.get("/proof/state/%s?version=%d" % (key.hex(), oldest))).status_code == 200
            future = await client.get("/state/%s?height=%d" % (key.hex(), tip))  # header tip+1 not there yet
            assert future.status_code == 404 and future.json()["error"] == "not_found"
            assert (await client.get("/state/%s?height=-1" % key.hex())).status_code == 400
            await client.aclose()
            nursery.cancel_scope.cancel()
