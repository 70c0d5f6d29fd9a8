"""A 4-validator cluster on 127.0.0.1 commits transactions submitted to different nodes."""

import trio

import pytest

from contracts.transfer import balance_key
from ledger.state import StateProof, verify as verify_state
from ledger.types import CommitCertificate, Header

from node.config import ConsensusParams
from node.service import TxRejected
from tests.node.node_cluster import cluster, connect_all, make_genesis, start_node, transfer


async def wait_committed(nodes, tx_hashes):
    for node in nodes:
        for tx_hash in tx_hashes:
            while (node.tx(tx_hash) or {}).get("status") != "committed":
                await node.driver.committed.wait()


def assert_same_chain(nodes):
    top = min(node.store.height for node in nodes)
    assert top >= 1
    for height in range(0, top + 1):
        assert len({node.store.results(height) for node in nodes}) == 1, "app hash differs at %d" % height
        if height:
            assert len({node.store.block(height).hash for node in nodes}) == 1


def assert_state_answer_is_provable(node, genesis, key):
    """What a regulator checks: value + proof against a quorum-signed header."""
    answer = node.state(key, prove=True)
    header = Header.decode(bytes.fromhex(answer["header"]))
    certificate = CommitCertificate.decode(bytes.fromhex(answer["certificate"]))
    certificate.verify(genesis.chain_id, genesis.validator_set(), header.hash, header.height)
    assert header.height == answer["height"] + 1
    value = None if answer["value"] is None else bytes.fromhex(answer["value"])
    verify_state(header.app_hash, key, value, StateProof.from_bytes(bytes.fromhex(answer["proof"])))
    assert value is not None


async def test_four_validators_commit_transactions_submitted_to_different_nodes(tmp_path):
    genesis, keys, clients = make_genesis()
    with trio.fail_after(60):
        async with cluster(tmp_path, genesis, keys) as nodes:
            hashes = []
            for nonce in range(1, 4):
                for i, client in enumerate(clients):
                    tx = transfer(client, nonce, clients[(i + 1) % 4].public_key, amount=10)
                    result = await nodes[(i + nonce) % 4].submit_tx(tx.encode())
                    hashes.append(result.tx_hash)
            await wait_committed(nodes, hashes)
            assert_same_chain(nodes)
            for tx_hash in hashes:
                info = nodes[0].tx(tx_hash)
                assert info["receipt"]["ok"], info
            assert_state_answer_is_provable(nodes[1], genesis, balance_key(clients[0].public_key))
            status = nodes[2].status()
            assert status["height"] >= 1 and status["peers"] == 3
            assert status["app_hash"] == nodes[0].status()["app_hash"] or status["height"] != nodes[0].status()["height"]


async def submit_round(nodes, clients, nonce, targets):
    hashes = []
    for i, client in enumerate(clients):
        tx = transfer(client, nonce, clients[(i + 1) % len(clients)].public_key)
        hashes.append((await targets[i % len(targets)].submit_tx(tx.encode())).tx_hash)
    return hashes


async def test_a_restarted_validator_catches_up_from_disk_and_peers(tmp_path, nursery):
    genesis, keys, clients = make_genesis()
    with trio.fail_after(90):
        async with cluster(tmp_path, genesis, keys) as nodes:
            first = await submit_round(nodes, clients, 1, nodes)
            await wait_committed(nodes, first)
            height_before = nodes[3].store.height
            await nodes[3].stop()
            live = nodes[:3]  # 3 of 4 is still a quorum
            second = []
            for nonce in (2, 3):
                second += await submit_round(live, clients, nonce, live)
                await wait_committed(live, second)
            restarted = await start_node(nursery, tmp_path, genesis, keys[3], 3)
            assert restarted.store.height == height_before  # resumed from disk
            connect_all(live + [restarted])
            third = await submit_round(live, clients, 4, live)
            await wait_committed(live + [restarted], first + second + third)
            assert_same_chain(live + [restarted])
            await restarted.stop()


async def test_an_observer_follows_the_chain_and_refuses_transactions(tmp_path):
    genesis, keys, clients = make_genesis(n_observers=1)
    with trio.fail_after(60):
        async with cluster(tmp_path, genesis, keys) as nodes:
            observer = nodes[4]
            assert observer.status()["role"] == "observer" and observer.status()["validator"] is None
            with pytest.raises(TxRejected) as info:
                await observer.submit_tx(transfer(clients[0], 1, clients[1].public_key).encode())
            assert info.value.reason == "read_only"
            hashes = await submit_round(nodes, clients, 1, nodes[:4])
            await wait_committed(nodes, hashes)
            assert_same_chain(nodes)


PIPELINED = ConsensusParams(checkpoint_interval=4, results_lag=3, max_in_flight=3)


async def test_a_pipelined_cluster_commits_restarts_and_proves_state_at_header_v_plus_l(tmp_path, nursery):
    """L = W = 3: every node executes the same chain, header h carries the
    results of h − 3, a state answer pairs version v with header v + 3, and a
    validator restarted with heights in flight resumes from its store (the
    last L results handed to the replica) and catches up."""
    genesis, keys, clients = make_genesis(consensus_params=PIPELINED)
    with trio.fail_after(120):
        async with cluster(tmp_path, genesis, keys) as nodes:
            assert nodes[0].consensus_config.results_lag == nodes[0].consensus_config.max_in_flight == 3
            first = []
            for nonce in (1, 2, 3):
                first += await submit_round(nodes, clients, nonce, nodes)
            await wait_committed(nodes, first)
            await nodes[3].stop()
            live = nodes[:3]
            second = []
            for nonce in (4, 5):
                second += await submit_round(live, clients, nonce, live)
                await wait_committed(live, second)
            restarted = await start_node(nursery, tmp_path, genesis, keys[3], 3)
            connect_all(live + [restarted])
            third = []
            for nonce in (6, 7, 8):
                third += await submit_round(live, clients, nonce, live)
            await wait_committed(live + [restarted], first + second + third)
            everyone = live + [restarted]
            assert_same_chain(everyone)
            store = nodes[0].store
            for height in range(1, store.height + 1):
                header = store.block(height).header
                assert (header.app_hash, header.receipts_root) == store.results(max(0, height - 3)), height
            answer = nodes[1].state(balance_key(clients[0].public_key), prove=True)
            assert answer["header_height"] == answer["height"] + 3
            header = Header.decode(bytes.fromhex(answer["header"]))
            CommitCertificate.decode(bytes.fromhex(answer["certificate"])).verify(
                genesis.chain_id, genesis.validator_set(), header.hash, header.height)
            verify_state(header.app_hash, balance_key(clients[0].public_key), bytes.fromhex(answer["value"]),
                         StateProof.from_bytes(bytes.fromhex(answer["proof"])))
            await restarted.stop()
