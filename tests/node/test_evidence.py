"""Double-signing evidence: persisted (deduplicated, bounded), served by GET /evidence, counted."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import trio

from consensus.messages import Prepare, decode_message
from ledger.hashing import sha256
from node.handshake import NodeIdentity
from node.leveldb_store import LevelDBStore
from node.metrics import NodeMetrics, RuntimeCollector
from node.p2p import CHANNEL_CONSENSUS, P2P, P2PConfig, PeerAddress
from node.rpc import create_app
from node.store import EvidenceStore
from tests.node.node_cluster import CHAIN_ID, make_genesis, start_node

V1, V2 = b"\x01" * 32, b"\x02" * 32


# ---------------------------------------------------------------- the store


def test_an_offence_is_kept_once_whatever_pair_reports_it(kv) -> None:  # type: ignore[no-untyped-def]
    store = EvidenceStore(kv)
    assert store.record(V1, "prepare", 0, 5, b"a", b"b", recorded_height=4)
    assert not store.record(V1, "prepare", 0, 5, b"a", b"b", recorded_height=9)  # the same again
    assert not store.record(V1, "prepare", 0, 5, b"b", b"c", recorded_height=9)  # a third message, same slot
    assert store.record(V1, "commit", 0, 5, b"a", b"b", recorded_height=4)  # another kind: another offence
    [prepare, commit] = sorted(store.records(), key=lambda r: r.kind, reverse=True)
    assert (prepare.validator, prepare.kind, prepare.view, prepare.height) == (V1, "prepare", 0, 5)
    assert (prepare.first, prepare.second, prepare.recorded_height) == (b"a", b"b", 4)
    assert commit.kind == "commit" and store.total() == 2 == store.kept()


def test_records_survive_reopening_the_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = LevelDBStore(str(tmp_path / "db"))
    EvidenceStore(db).record(V2, "view-change", 3, 7, b"x" * 100, b"y" * 5_000_000, recorded_height=6)
    db.close()
    db = LevelDBStore(str(tmp_path / "db"))
    try:
        [record] = EvidenceStore(db).records()
        assert record.second == b"y" * 5_000_000  # larger than one codec message: stored raw
        assert record.to_json()["validator"] == V2.hex() and record.to_json()["view"] == 3
        assert not EvidenceStore(db).record(V2, "view-change", 3, 7, b"x", b"z", recorded_height=8)
    finally:
        db.close()


def test_a_validator_over_its_cap_is_counted_but_cannot_crowd_out_others(kv) -> None:  # type: ignore[no-untyped-def]
    store = EvidenceStore(kv, max_records=5, max_per_validator=3)
    for height in range(1, 11):
        assert store.record(V1, "prepare", 0, height, b"a", b"b", recorded_height=height)
    assert store.kept() == 3 and store.total() == 10
    assert store.record(V2, "prepare", 0, 1, b"a", b"b", recorded_height=11)
    assert [r.validator for r in store.records()].count(V2) == 1
    for height in range(2, 10):
        store.record(V2, "prepare", 0, height, b"a", b"b", recorded_height=11)
    assert store.kept() == 5  # the total cap


def test_the_byte_cap_bounds_what_is_kept(kv) -> None:  # type: ignore[no-untyped-def]
    store = EvidenceStore(kv, max_bytes=1000)
    assert store.record(V1, "proposal", 0, 1, b"a" * 400, b"b" * 400, recorded_height=1)
    assert store.record(V1, "proposal", 0, 2, b"a" * 400, b"b" * 400, recorded_height=2)  # counted only
    assert store.kept() == 1 and store.total() == 2


# ------------------------------------------------- a running node, end to end


def conflicting_prepares(validator_key, height: int = 1) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    def signed(block_hash: bytes) -> bytes:
        vote = Prepare(validator_key.public_key, 0, height, block_hash)
        return replace(vote, signature=validator_key.sign(vote.KIND, CHAIN_ID, vote.payload())).encode()

    return signed(sha256(b"block a")), signed(sha256(b"block b"))


async def test_a_node_persists_evidence_serves_it_and_keeps_it_across_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    genesis, keys, _ = make_genesis()
    byzantine = keys[2]
    first, second = conflicting_prepares(byzantine.validator_key)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, tmp_path, genesis, keys[0], 0)
            # the byzantine validator's node connects and sends two conflicting PREPAREs
            attacker = P2P(NodeIdentity.create(byzantine.node_key, CHAIN_ID),
                           P2PConfig(listen_port=0, backoff_initial_s=0.01), lambda key: True)
            attacker_scope = trio.CancelScope()

            async def run_attacker(task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
                with attacker_scope:
                    await attacker.run(task_status=task_status)

            await nursery.start(run_attacker)
            attacker.add_peer_address(PeerAddress(node.node_key, "127.0.0.1", node.p2p.port))
            await node.p2p.wait_for_peers(1)
            reported = trio.Event()  # listeners run in order: the node's own one saved it first
            node.driver.on_evidence.append(lambda evidence: reported.set())
            for data in (first, second, second):  # the repeat is not a new offence
                assert attacker.send(node.node_key, CHANNEL_CONSENSUS, data)
            await reported.wait()
            attacker_scope.cancel()

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(node)),
                                         base_url="http://node") as client:
                [item] = (await client.get("/evidence")).json()["evidence"]
            assert item["validator"] == byzantine.validator_key.public_key.hex()
            assert (item["kind"], item["view"], item["height"]) == ("prepare", 0, 1)
            pair = {bytes.fromhex(item["first"]), bytes.fromhex(item["second"])}
            assert pair == {first, second}
            for raw in pair:  # anyone can re-check the signatures
                message = decode_message(raw)
                assert message.sender == byzantine.validator_key.public_key
            metrics = NodeMetrics()
            RuntimeCollector(node, metrics).refresh()
            assert b"careledger_evidence_total 1.0" in metrics.exposition()
            assert b"careledger_consensus_byzantine_validators 1.0" in metrics.exposition()
            await node.stop()

            restarted = await start_node(nursery, tmp_path, genesis, keys[0], 0)
            assert restarted.evidence() == [item]
            metrics = NodeMetrics()
            RuntimeCollector(restarted, metrics).refresh()
            assert b"careledger_evidence_total 1.0" in metrics.exposition()
            nursery.cancel_scope.cancel()
