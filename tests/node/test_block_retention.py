"""Block retention: `[storage] retain_blocks = N` prunes old blocks' bodies,
certificates, receipts and tx index rows, keeps the last N, headers (history
proofs), validator-set changes and genesis; pruned heights answer 410; block
sync passes over a peer that pruned what it needs; restart keeps working."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
import trio

from ledger import codec
from ledger.types import Block, CommitCertificate
from node.config import ConfigError, Genesis, NodeConfig, StorageSection, consensus_settings
from node.history import HistoryService
from node.leveldb_store import LevelDBStore
from node.p2p import CHANNEL_SYNC_REQUEST, CHANNEL_SYNC_RESPONSE
from node.pruning import MIN_RETAIN_BLOCKS, PRUNE_EVERY_BLOCKS, BlockPruner
from node.rpc import create_app
from node.store import BlockPruned, BlockStore
from node.sync import MAX_PEERS_PER_FETCH, BlockSync
from tests.node.chain_helpers import genesis, next_block, transfer
from tests.node.test_store_executor import fresh

RETAIN = MIN_RETAIN_BLOCKS
CHANGE_HEIGHT = 5  # a header that hands over to a new validator set: never pruned
NEXT_SET = genesis().validator_set()  # the set it hands over to (any known set will do)


def run_chain(executor: Any, pruner: BlockPruner | None, count: int) -> list[Block]:
    """`count` blocks of one transfer each; block CHANGE_HEIGHT announces a new set."""
    prev = executor.store.block(executor.height)
    blocks = []
    for _ in range(count):
        height = executor.height + 1
        block, cert = next_block(prev, height, [transfer(height)])
        if height == CHANGE_HEIGHT:
            header = dataclasses.replace(block.header, next_validators_hash=NEXT_SET.hash)
            block = Block(header, block.txs)
            cert = CommitCertificate(height, 0, block.hash, ())
        executed = executor.execute(block, cert)
        if pruner is not None:
            pruner.on_commit(block, cert, executed)
        blocks.append(block)
        prev = block
    return blocks


class History(HistoryService):
    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.genesis_doc = genesis()


def check_retained(store: BlockStore, blocks: list[Block]) -> int:
    """Assert what a pruned store serves; return its earliest retained height."""
    tip = store.height
    earliest = store.earliest_height()
    assert tip - RETAIN + 1 - PRUNE_EVERY_BLOCKS < earliest <= tip - RETAIN + 1
    for block in blocks:
        h = block.height
        tx_hash = block.txs[0].hash
        if h >= earliest or h == CHANGE_HEIGHT:
            assert store.block(h) == block and store.certificate(h) is not None
            assert store.receipts(h) and store.tx_location(tx_hash) == (h, 0)
            store.check_not_pruned(h)
        else:
            assert store.block(h) is None and store.certificate(h) is None
            assert store.receipt(h, 0) is None and store.tx_location(tx_hash) is None
            with pytest.raises(BlockPruned) as caught:
                store.check_not_pruned(h)
            assert caught.value.earliest == earliest
        assert store.header(h) == block.header  # headers stay: history proofs
        assert store.results(h) is not None
    assert store.genesis() is not None and store.results(0) is not None
    # history proofs come from headers, pruned or not
    history = History(store)
    assert history.block_hashes(tip) == [b.hash for b in blocks]
    assert history.epoch_change_heights(tip) == [CHANGE_HEIGHT]
    assert history.history_inclusion(1, tip)["block_hash"] == blocks[0].hash.hex()
    assert history.epoch_changes(0, tip)["changes"][0]["height"] == CHANGE_HEIGHT
    return earliest


def test_a_store_keeping_n_blocks_serves_the_last_n_and_the_set_changes(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    pruner = BlockPruner(executor.store, RETAIN)
    blocks = run_chain(executor, pruner, RETAIN + 4 * PRUNE_EVERY_BLOCKS)
    earliest = check_retained(executor.store, blocks)
    assert earliest > CHANGE_HEIGHT + 1  # something around the kept change was pruned
    assert pruner.counters["pruned_blocks"] == earliest - 2  # 1..earliest-1, less the change
    tip = executor.store.chain_tip(recent_blocks=16)  # a restart's view: the last K blocks' txs
    assert len(tip.recent_txs) == 16


def test_without_retain_blocks_nothing_is_pruned(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    pruner = BlockPruner(executor.store, 0)
    blocks = run_chain(executor, pruner, RETAIN + 2 * PRUNE_EVERY_BLOCKS)
    assert executor.store.earliest_height() == 1
    assert all(executor.store.block(b.height) == b for b in blocks)


def test_a_large_backlog_is_pruned_in_bounded_steps(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    blocks = run_chain(executor, None, RETAIN + 3 * PRUNE_EVERY_BLOCKS)  # archive, then turned on
    pruner = BlockPruner(executor.store, RETAIN, max_heights=10)
    pruner.prune(executor.height)
    assert executor.store.earliest_height() == 11  # one bounded step
    while pruner.prune(executor.height):
        pass
    assert executor.store.earliest_height() == executor.height - RETAIN + 1
    check_retained(executor.store, blocks)


def test_a_restart_keeps_the_floor_and_goes_on_pruning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "db")
    kv = LevelDBStore(path)
    executor = fresh(kv)
    blocks = run_chain(executor, BlockPruner(executor.store, RETAIN), RETAIN + 2 * PRUNE_EVERY_BLOCKS)
    earliest = executor.store.earliest_height()
    kv.close()
    kv = LevelDBStore(path)
    try:
        executor = fresh(kv)  # init_genesis on an existing store: a restart
        assert executor.height == blocks[-1].height and executor.store.earliest_height() == earliest
        executor.store.chain_tip(recent_blocks=16, checkpoint_interval=16)
        blocks += run_chain(executor, BlockPruner(executor.store, RETAIN), 2 * PRUNE_EVERY_BLOCKS)
        assert check_retained(executor.store, blocks) > earliest
    finally:
        kv.close()


def test_a_pruner_refuses_too_few_blocks() -> None:
    with pytest.raises(ValueError):
        BlockPruner(BlockStore(None), MIN_RETAIN_BLOCKS - 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BlockPruner(BlockStore(None), -1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("value", [-1, 1, MIN_RETAIN_BLOCKS - 1])
def test_config_refuses_a_bad_retain_blocks(value: int) -> None:
    with pytest.raises(ConfigError, match="retain_blocks"):
        StorageSection(retain_blocks=value)


def test_config_accepts_zero_and_the_minimum() -> None:
    assert StorageSection().retain_blocks == 0
    assert StorageSection(retain_blocks=MIN_RETAIN_BLOCKS).retain_blocks == MIN_RETAIN_BLOCKS


def test_retain_blocks_loads_from_config_toml_and_a_bad_value_names_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from node.config import config_from_dict
    config = config_from_dict(str(tmp_path), {"storage": {"retain_blocks": 1000}})
    assert config.storage.retain_blocks == 1000 and config.storage.keep_recent_versions == 0
    with pytest.raises(ConfigError, match="retain_blocks"):
        config_from_dict(str(tmp_path), {"storage": {"retain_blocks": 5}})
    with pytest.raises(ConfigError, match="retain_blocks"):
        config_from_dict(str(tmp_path), {"storage": {"retain_blocks": "100"}})


def test_config_refuses_retain_blocks_on_an_observer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="observer"):
        NodeConfig(home=str(tmp_path), role="observer", storage=StorageSection(retain_blocks=1000))


def test_config_refuses_fewer_blocks_than_two_checkpoints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.node.node_cluster import make_genesis
    genesis, _, _ = make_genesis(n_clients=1)
    assert isinstance(genesis, Genesis)
    interval = genesis.consensus_params.checkpoint_interval
    lag = genesis.consensus_params.results_lag
    assert 2 * interval + lag - 1 >= MIN_RETAIN_BLOCKS  # so the check below is the genesis one
    config = NodeConfig(home=str(tmp_path))
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        consensus_settings(config.replace(storage=StorageSection(retain_blocks=2 * interval + lag - 1)), genesis)
    consensus_settings(config.replace(storage=StorageSection(retain_blocks=2 * interval + lag)), genesis)


# --------------------------------------------------------------------- RPC


class PrunedNode:
    """A NodeService double over a real pruned store (node.node's lookups)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def block(self, height: int) -> dict[str, Any] | None:
        if self.store.block_bytes(height) is None:
            self.store.check_not_pruned(height)
            return None
        return {"height": height}

    def commit(self, height: int) -> dict[str, Any] | None:
        if self.store.certificate(height) is None:
            self.store.check_not_pruned(height)
            return None
        return {"height": height}


async def test_the_rpc_answers_410_with_the_oldest_height_below_the_retained_blocks() -> None:
    from ledger.kv import MemoryStore
    executor = fresh(MemoryStore())
    run_chain(executor, BlockPruner(executor.store, RETAIN), RETAIN + 2 * PRUNE_EVERY_BLOCKS)
    earliest = executor.store.earliest_height()
    app = create_app(PrunedNode(executor.store))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        for route in ("/blocks/%d", "/blocks/%d?txs=hashes", "/commit/%d"):
            gone = await client.get(route % (earliest - 1))
            assert gone.status_code == 410, route
            assert gone.json()["error"] == "pruned" and gone.json()["oldest_height"] == earliest
            assert "retain_blocks" in gone.json()["detail"]
            assert (await client.get(route % earliest)).status_code == 200
            assert (await client.get(route % CHANGE_HEIGHT)).status_code == 200  # a kept set change
            assert (await client.get(route % (executor.height + 1))).status_code == 404


# -------------------------------------------------------------------- sync


class LoopbackP2P:
    """Peers whose BlockSync servers answer in-process (each over its own store)."""

    def __init__(self) -> None:
        self.servers: dict[bytes, BlockSync] = {}
        self.asked: list[bytes] = []
        self.client: BlockSync | None = None
        self.handlers: dict[int, Any] = {}
        self._nursery: trio.Nursery | None = None

    def on(self, channel: int, handler: Any) -> None:
        self.handlers[channel] = handler

    def peer_keys(self) -> list[bytes]:
        return sorted(self.servers)

    def send(self, peer: bytes, channel: int, data: bytes) -> bool:
        assert channel == CHANNEL_SYNC_REQUEST and self._nursery is not None
        self.asked.append(peer)
        self._nursery.start_soon(self.servers[peer]._on_request, b"client", channel, data)
        return True


class ServerP2P:
    """What a server's BlockSync sends goes back to the client as from `key`."""

    def __init__(self, key: bytes, loop: LoopbackP2P) -> None:
        self.key, self.loop = key, loop

    def on(self, channel: int, handler: Any) -> None:
        pass

    def send(self, peer: bytes, channel: int, data: bytes) -> bool:
        assert channel == CHANNEL_SYNC_RESPONSE and self.loop._nursery is not None
        self.loop._nursery.start_soon(self.loop.handlers[CHANNEL_SYNC_RESPONSE], self.key, channel, data)
        return True


def store_with(retain: int) -> BlockStore:
    from ledger.kv import MemoryStore
    executor = fresh(MemoryStore())
    run_chain(executor, BlockPruner(executor.store, retain), RETAIN + 2 * PRUNE_EVERY_BLOCKS)
    return executor.store


async def test_sync_passes_over_a_peer_that_pruned_the_asked_heights() -> None:
    loop = LoopbackP2P()
    pruned_peer, archive = b"a" * 32, b"b" * 32
    loop.servers[pruned_peer] = BlockSync(ServerP2P(pruned_peer, loop), store_with(RETAIN))  # type: ignore[arg-type]
    loop.servers[archive] = BlockSync(ServerP2P(archive, loop), store_with(0))  # type: ignore[arg-type]
    client = BlockSync(loop, store=None)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        loop._nursery = nursery
        blocks = await client.fetch(pruned_peer, 1, 4)
        assert [b.height for b, _ in blocks] == [1, 2, 3, 4]  # from the archive
        assert loop.asked == [pruned_peer, archive]
        assert client.peer_earliest[pruned_peer] == loop.servers[pruned_peer].store.earliest_height()
        assert loop.servers[pruned_peer].counters["pruned_requests"] == 1
        # known now: the pruned peer is not asked for low heights again
        loop.asked.clear()
        assert len(await client.fetch(pruned_peer, 2, 3)) == 2 and loop.asked == [archive]
        # ... but still for heights it keeps
        loop.asked.clear()
        tip = loop.servers[pruned_peer].store.height
        assert len(await client.fetch(pruned_peer, tip, tip)) == 1 and loop.asked == [pruned_peer]


async def test_sync_gives_up_when_every_peer_pruned_the_heights() -> None:
    loop = LoopbackP2P()
    for index in range(MAX_PEERS_PER_FETCH + 1):
        key = bytes([index + 1]) * 32
        loop.servers[key] = BlockSync(ServerP2P(key, loop), store_with(RETAIN))  # type: ignore[arg-type]
    client = BlockSync(loop, store=None)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        loop._nursery = nursery
        first = min(loop.servers)
        assert await client.fetch(first, 1, 4) == []
        assert len(loop.asked) == MAX_PEERS_PER_FETCH  # bounded
        assert client.counters["no_peer_has_blocks"] == 1
        loop.asked.clear()
        assert await client.fetch(first, 1, 4) == []
        assert loop.asked == [max(loop.servers)]  # only the one not asked yet


async def test_a_malformed_pruned_answer_is_a_bad_response() -> None:
    client = BlockSync(LoopbackP2P(), store=None)  # type: ignore[arg-type]
    await client._on_response(b"p" * 32, CHANNEL_SYNC_RESPONSE, codec.encode([1, [], "x"]))
    await client._on_response(b"p" * 32, CHANNEL_SYNC_RESPONSE, codec.encode([1, [], 0]))
    await client._on_response(b"p" * 32, CHANNEL_SYNC_RESPONSE, codec.encode([1, [], 5, 6]))
    assert client.counters["bad_responses"] == 3


# ------------------------------------------------------------ a running node


async def start_retaining_node(nursery: trio.Nursery, tmp_path: Any, genesis: Any, keys: Any, index: int,
                               retain: int) -> Any:
    """`node_cluster.start_node` with `[storage] retain_blocks = retain`."""
    from tests.node.node_cluster import start_node
    return await start_node(nursery, tmp_path, genesis, keys, index, storage=StorageSection(retain_blocks=retain),
                            batch_timeout_ms=1)


async def test_a_retaining_cluster_prunes_answers_410_and_a_restarted_node_catches_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.node.node_cluster import connect_all, make_genesis, transfer as cluster_transfer
    genesis, keys, clients = make_genesis(n_clients=2)
    retain = max(MIN_RETAIN_BLOCKS, 2 * genesis.consensus_params.checkpoint_interval
                 + genesis.consensus_params.results_lag)
    nonce = 0

    async def commit_until(node: Any, height: int) -> list[bytes]:
        nonlocal nonce
        hashes = []
        while node.store.height < height:
            nonce += 1
            result = await node.submit_tx(cluster_transfer(clients[0], nonce, clients[1].public_key).encode())
            hashes.append(result.tx_hash)
            await node.wait_for_height(node.store.height + 1)
        return hashes

    with trio.fail_after(180):
        async with trio.open_nursery() as nursery:
            nodes = [await start_retaining_node(nursery, tmp_path, genesis, k, i, retain)
                     for i, k in enumerate(keys)]
            connect_all(nodes)
            for node in nodes:
                await node.p2p.wait_for_peers(3)
            node = nodes[0]
            early = await commit_until(node, retain + 2 * PRUNE_EVERY_BLOCKS)
            earliest = node.status()["earliest_block_height"]
            assert 1 < earliest <= node.store.height - retain + 1
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(node)), base_url="http://n")
            gone = await client.get("/blocks/1")
            assert gone.status_code == 410 and gone.json()["oldest_height"] == earliest
            assert (await client.get("/commit/1")).status_code == 410
            assert (await client.get("/blocks/%d" % earliest)).status_code == 200
            assert (await client.get("/tx/%s" % early[0].hex())).status_code == 404  # its index row is gone
            # a state proof needs header v + L's certificate: 410 when that block is pruned
            lag = genesis.consensus_params.results_lag
            key = "00" * 4
            old_state = await client.get("/state/%s?prove=true&height=1" % key)
            assert old_state.status_code == 410 and old_state.json()["oldest_height"] == earliest - lag
            kept_state = await client.get("/state/%s?prove=true&height=%d" % (key, earliest - lag))
            assert kept_state.status_code == 200 and kept_state.json()["certificate"] is not None
            status = (await client.get("/status")).json()
            assert status["earliest_block_height"] == earliest
            from node.metrics import NodeMetrics, RuntimeCollector
            metrics = NodeMetrics()
            RuntimeCollector(node, metrics).refresh()
            assert metrics.registry.get_sample_value("careledger_blockstore_earliest_height") == earliest
            # history proofs still reach below the floor (headers are kept)
            assert node.history_inclusion(1, node.store.height)["height"] == 1
            await client.aclose()

            # a node that lags by fewer than `retain` blocks restarts on its pruned
            # store and catches up from its (pruned) peers
            lagged_at = nodes[3].store.height
            lagged_earliest = nodes[3].store.earliest_height()
            assert lagged_earliest > 1
            await nodes[3].stop()
            await commit_until(node, node.store.height + PRUNE_EVERY_BLOCKS + 2)
            restarted = await start_retaining_node(nursery, tmp_path, genesis, keys[3], 3, retain)
            assert restarted.store.height >= lagged_at  # resumed from disk
            assert restarted.status()["earliest_block_height"] == lagged_earliest
            connect_all(nodes[:3] + [restarted])
            target = node.store.height + 2
            await commit_until(node, target)
            with trio.fail_after(60):
                while restarted.store.height < target:
                    await restarted.driver.committed.wait()
            assert restarted.store.block(target).hash == node.store.block(target).hash
            nursery.cancel_scope.cancel()


def test_the_explorer_index_of_a_pruning_validator_starts_at_its_oldest_block(kv) -> None:  # type: ignore[no-untyped-def]
    from node.observer import ExplorerIndex

    executor = fresh(kv)
    pruner = BlockPruner(executor.store, RETAIN)
    run_chain(executor, pruner, RETAIN + 2 * PRUNE_EVERY_BLOCKS)
    earliest = executor.store.earliest_height()
    assert earliest > 1
    index = ExplorerIndex()
    index.catch_up(executor.store)
    assert index.height == executor.store.height  # not stuck at the first pruned height
    assert index.blocks[-1]["height"] == executor.store.height
    assert min(b["height"] for b in index.blocks) >= earliest  # the retained blocks only


def test_pruning_a_block_keeps_the_index_row_a_later_block_owns(kv) -> None:  # type: ignore[no-untyped-def]
    # a faulty primary may re-include an old signed tx after K blocks: it fails
    # there (used nonce) but its index row now points at the later block
    executor = fresh(kv)
    blocks = run_chain(executor, None, 3)
    again = blocks[0].txs[0]
    later, cert = next_block(blocks[-1], 4, [again])
    executor.execute(later, cert)
    assert executor.store.tx_location(again.hash) == (4, 0)
    run_chain(executor, None, RETAIN + PRUNE_EVERY_BLOCKS)
    BlockPruner(executor.store, RETAIN).prune(executor.height)
    assert executor.store.earliest_height() > 4 and executor.store.block(1) is None
    assert executor.store.tx_location(again.hash) is None  # block 4 was pruned too: its row went with it


def test_the_index_row_of_a_kept_later_block_survives(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    blocks = run_chain(executor, None, RETAIN + PRUNE_EVERY_BLOCKS)
    again = blocks[0].txs[0]
    later, cert = next_block(executor.store.block(executor.height), executor.height + 1, [again])
    executor.execute(later, cert)
    BlockPruner(executor.store, RETAIN).prune(executor.height)
    assert executor.store.block(1) is None  # the original block is pruned ...
    assert executor.store.tx_location(again.hash) == (later.height, 0)  # ... the later one keeps its row


def test_a_prune_step_stops_after_its_tx_budget(kv) -> None:  # type: ignore[no-untyped-def]
    executor = fresh(kv)
    run_chain(executor, None, RETAIN + 3 * PRUNE_EVERY_BLOCKS)  # one tx per block
    pruner = BlockPruner(executor.store, RETAIN, max_txs=5)
    assert pruner.prune(executor.height) == 5
    # heights 1-4 and 6 (5 is a kept set change): the floor stops where the budget ran out
    assert executor.store.earliest_height() == 7
    assert executor.store.block(7) is not None and executor.store.block(6) is None
    assert executor.store.block(CHANGE_HEIGHT) is not None
