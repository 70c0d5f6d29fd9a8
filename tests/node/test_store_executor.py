"""Block store + executor: one atomic batch per block, restart from disk."""

import os
import signal
import subprocess
import sys

import pytest

from ledger.codec import decode
from ledger.errors import StorageError
from ledger.kv import MemoryStore
from contracts.transfer import balance_key
from node.executor import ExecutionError, Executor
from node.leveldb_store import LevelDBStore
from node.node import genesis_writes
from tests.node.chain_helpers import CHAIN, CLIENT, OTHER, genesis, next_block, transfer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fresh(kv):
    executor = Executor(CHAIN, kv)
    executor.init_genesis(genesis_writes(genesis()), 1_700_000_000_000)
    return executor


def run_blocks(executor, count):
    prev = executor.store.block(executor.height)
    for _ in range(count):
        height = executor.height + 1
        block, cert = next_block(prev, height, [transfer(height, amount=10)])
        executor.execute(block, cert)
        prev = block
    return prev


def test_executing_a_block_stores_everything_it_produced():
    executor = fresh(MemoryStore())
    block = run_blocks(executor, 1)
    store = executor.store
    assert store.height == 1 and store.block(1) == block
    assert store.certificate(1).block_hash == block.hash
    tx_hash = block.txs[0].hash
    assert store.tx_location(tx_hash) == (1, 0)
    [receipt] = store.receipts(1)
    assert receipt.ok and receipt.tx_hash == tx_hash
    app_hash, _ = store.results(1)
    assert executor.tree.root(1) == app_hash
    assert decode(executor.read_latest(balance_key(OTHER.public_key))) == 10
    assert store.height_of(block.hash) == 1


def test_blocks_must_be_executed_in_height_order():
    executor = fresh(MemoryStore())
    block, cert = next_block(None, 2, [])
    with pytest.raises(ExecutionError):
        executor.execute(block, cert)


class FailingStore(MemoryStore):
    fail = False

    def write(self, batch):
        if self.fail:
            raise StorageError("disk full")
        super().write(batch)


def test_a_failed_write_leaves_neither_block_nor_state_behind():
    kv = FailingStore()
    executor = fresh(kv)
    run_blocks(executor, 1)
    kv.fail = True
    with pytest.raises(ExecutionError):
        run_blocks(executor, 1)
    assert executor.store.height == 1 and executor.store.block(2) is None
    assert executor.tree.latest_version() == 1
    kv.fail = False
    run_blocks(executor, 1)
    assert executor.store.height == 2


def test_a_restart_resumes_at_the_last_height_on_disk(tmp_path):
    path = str(tmp_path / "db")
    executor = fresh(LevelDBStore(path))
    last = run_blocks(executor, 3)
    tip_before = executor.store.chain_tip()
    executor.kv.close()

    executor = Executor(CHAIN, LevelDBStore(path))
    executor.init_genesis(genesis_writes(genesis()), 0)  # a no-op on an existing store
    tip = executor.store.chain_tip()
    assert tip == tip_before and tip.height == 3 and tip.block_hash == last.hash
    assert tip.history.size == 3 and tip.certificate.height == 3
    run_blocks(executor, 1)
    assert executor.store.height == 4
    executor.kv.close()


def test_a_pipelined_chain_tip_hands_the_replica_the_last_l_results(tmp_path):
    executor = fresh(MemoryStore())
    assert executor.store.chain_tip(results_lag=3).lagged_results == ()  # genesis
    run_blocks(executor, 1)
    store = executor.store
    assert store.chain_tip(results_lag=3).lagged_results == ((0,) + store.results(0),)
    run_blocks(executor, 4)
    tip = store.chain_tip(results_lag=3)
    assert tip.height == 5 and (tip.app_hash, tip.receipts_root) == store.results(5)
    assert tip.lagged_results == tuple((h,) + store.results(h) for h in (3, 4))
    assert store.chain_tip().lagged_results == ()  # L = 1: the tip's own results suffice


def test_a_store_of_another_chain_is_refused(tmp_path):
    executor = fresh(MemoryStore())
    other = Executor("other-chain", executor.kv)
    with pytest.raises(ExecutionError):
        other.init_genesis({}, 0)


def test_kill_9_leaves_each_block_either_fully_written_or_absent(tmp_path):
    path = str(tmp_path / "db")
    acked = 0
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "node", "kill_writer.py"), path, ROOT],
                                 stdout=subprocess.PIPE, text=True)
        try:
            target = acked + 5 + round_ * 7
            for line in child.stdout:
                acked = int(line)
                if acked >= target:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        executor = Executor(CHAIN, LevelDBStore(path))
        store = executor.store
        height = store.height
        assert height >= acked  # every acknowledged block survived
        assert executor.tree.latest_version() == height  # state and blocks moved together
        prev = None
        for h in range(1, height + 1):
            block = store.block(h)
            assert block is not None and store.certificate(h) is not None and store.results(h) is not None
            assert prev is None or block.header.prev_hash == prev.hash
            assert store.tx_location(block.txs[0].hash) == (h, 0)
            prev = block
        assert store.block(height + 1) is None and store.results(height + 1) is None
        paid = sum(r.events[0]["amount"] for h in range(1, height + 1) for r in store.receipts(h) if r.ok)
        assert decode(executor.read_latest(balance_key(OTHER.public_key))) == paid  # state matches receipts
        assert decode(executor.read_latest(balance_key(CLIENT.public_key))) == 1000 - paid
        executor.kv.close()
        acked = height
