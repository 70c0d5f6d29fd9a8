"""The executor's shortcuts write exactly the bytes the plain encoders give."""

from __future__ import annotations

from contracts.engine import receipts_root
from ledger import codec
from ledger.crypto import PrivateKey
from ledger.kv import MemoryStore
from ledger.types import Tx
from node.executor import Executor
from node.node import genesis_writes
from node.store import _P, _U32, _h, encode_block
from tests.node.chain_helpers import CHAIN, CLIENT, OTHER, genesis, next_block, transfer


def test_a_block_encoded_from_its_cached_tx_bytes_equals_block_encode() -> None:
    keys = [PrivateKey(bytes([i + 40]) * 32) for i in range(3)]
    txs = [Tx(CHAIN, keys[i % 3].public_key, i + 1, "transfer",
              {"to": OTHER.public_key, "amount": i, "memo": {"z": 1, "a": [1, b"x"]}}).signed(keys[i % 3])
           for i in range(70_000 // 200)]
    for count in (0, 1, 15, 16, 17, 300, len(txs)):  # msgpack fixarray / array16 boundaries
        block, _ = next_block(None, 1, txs[:count])
        assert encode_block(block) == block.encode()


def test_executed_blocks_store_the_same_bytes_and_receipts_root_as_the_plain_encoders() -> None:
    kv = MemoryStore()
    executor = Executor(CHAIN, kv)
    g = genesis()
    executor.init_genesis(genesis_writes(g), g.genesis_time_ms)
    block, cert = next_block(None, 1, [transfer(1), transfer(2, amount=10**12), transfer(3)])  # one fails
    executed, batch = executor.prepare(block, cert)
    executor.write(1, batch)
    assert executed.receipts_root == receipts_root(executed.receipts)
    assert not all(r.ok for r in executed.receipts)
    assert kv.get(_P + b"B" + _h(1)) == block.encode()
    for index, receipt in enumerate(executed.receipts):
        assert kv.get(_P + b"R" + _h(1) + _U32.pack(index)) == receipt.encode()
    assert executor.store.block(1) == block
    assert CLIENT.public_key == block.txs[0].sender


def test_the_tx_index_rows_are_the_plain_encoding_of_height_and_index() -> None:
    kv = MemoryStore()
    executor = Executor(CHAIN, kv)
    g = genesis()
    executor.init_genesis(genesis_writes(g), g.genesis_time_ms)
    txs = [transfer(nonce) for nonce in range(1, 301)]  # indexes across msgpack's 127/128 and 255/256 forms
    block, cert = next_block(None, 1, txs)
    executed, batch = executor.prepare(block, cert)
    executor.write(1, batch)
    for index, tx in enumerate(txs):
        assert kv.get(_P + b"X" + tx.hash) == codec.encode([1, index])
        assert kv.get(_P + b"R" + _h(1) + _U32.pack(index)) == codec.encode(executed.receipts[index].to_wire())


def test_one_executor_over_many_blocks_writes_what_a_fresh_executor_per_block_writes() -> None:
    # the decoded records one block hands the next (`apply_block`'s `known`) change no byte
    g = genesis()
    chain = []
    prev = None
    for height in range(1, 5):
        amounts = [1, 2, 10**12, 3] if height % 2 else [4, 4]  # one fails on odd heights
        start = sum(len(txs) for _, txs in chain) + 1
        txs = [transfer(start + i, amount=a) for i, a in enumerate(amounts)]
        block, cert = next_block(prev, height, txs)
        chain.append(((block, cert), txs))
        prev = block
    stores = []
    for fresh_each_block in (False, True):
        kv = MemoryStore()
        executor = Executor(CHAIN, kv)
        executor.init_genesis(genesis_writes(g), g.genesis_time_ms)
        for (block, cert), _ in chain:
            if fresh_each_block:
                executor = Executor(CHAIN, kv)
            executor.execute(block, cert)
        stores.append(list(kv.iterate_prefix(b"")))
    assert stores[0] == stores[1]
