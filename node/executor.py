"""Executes committed blocks in height order and persists each atomically.

`execute(block, certificate)` runs `contracts.engine.apply_block` over the
latest committed state (the state tree's `get_latest`, one LevelDB get per
read), prepares the new state version with `StateTree.prepare`, adds block,
certificate, receipts, tx index, results and tip to the same batch, and
writes it once (synced). Only then is the result reported (`BlockExecuted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from contracts.engine import BlockContext, Receipt, apply_block
from ledger.errors import StorageError
from ledger.kv import KeyValueStore, WriteBatch
from ledger.state import StateTree
from ledger.types import Block, CommitCertificate

from node.store import STATE_NAMESPACE, BlockStore


class ExecutionError(Exception):
    """A committed block cannot be executed on our state: halt the node."""


@dataclass(frozen=True)
class Executed:
    height: int
    app_hash: bytes
    receipts_root: bytes
    receipts: tuple[Receipt, ...]


class Executor:
    """The only writer of the chain and the state."""

    def __init__(self, chain_id: str, kv: KeyValueStore) -> None:
        self.chain_id = chain_id
        self.kv = kv
        self.store = BlockStore(kv)
        self.tree = StateTree(kv, namespace=STATE_NAMESPACE)
        self.listeners: list[Callable[[Block, Executed], None]] = []

    # ------------------------------------------------------------- genesis

    def init_genesis(self, writes: Mapping[bytes, bytes | None], genesis_time_ms: int) -> bytes:
        """Write state version 0 (`writes`) once; return the genesis app hash.

        Raises ExecutionError if the store holds another chain.
        """
        existing = self.store.genesis()
        if existing is not None:
            if existing[0] != self.chain_id:
                raise ExecutionError("data directory belongs to chain %r" % existing[0])
            return existing[1]
        root, batch = self.tree.prepare(0, writes)
        self.store.add_genesis(batch, self.chain_id, root, genesis_time_ms)
        self.kv.write(batch)
        return root

    # --------------------------------------------------------------- reads

    def read_latest(self, key: bytes) -> bytes | None:
        return self.tree.get_latest(key)

    @property
    def height(self) -> int:
        return self.store.height

    # ------------------------------------------------------------- execute

    def execute(self, block: Block, certificate: CommitCertificate) -> Executed:
        """Execute and persist committed block `block.height` (= tip + 1).

        Raises ExecutionError if the block is out of order or the store fails.
        """
        executed, batch = self.prepare(block, certificate)
        self.persist(block, executed, batch)
        return executed

    def prepare(self, block: Block, certificate: CommitCertificate) -> tuple[Executed, WriteBatch]:
        """Execute block `block.height` (= tip + 1) and build its ONE write batch,
        without writing it: `persist` must follow before anything else executes.

        Split from `execute` so a driver can run the (synced) write in a worker
        thread while its event loop serves other work; it stays the single writer.
        Raises ExecutionError if the block is out of order or the store fails.
        """
        tip = self.store.tip()
        if block.height != tip.height + 1:
            raise ExecutionError("block %d executed after tip %d" % (block.height, tip.height))
        if tip.height and block.header.prev_hash != tip.block_hash:
            raise ExecutionError("block %d does not extend our chain" % block.height)
        header = block.header
        ctx = BlockContext(self.chain_id, header.height, header.time, header.proposer)
        result = apply_block(self.tree.get_latest, ctx, block.txs)
        batch = WriteBatch()
        try:
            app_hash, tree_batch = self.tree.prepare(block.height, result.writes)
            batch.merge(tree_batch)
            receipts_root = result.receipts_root
            self.store.add_block(batch, block, certificate, result.receipts, app_hash, receipts_root,
                                 tip.history.append(block.hash))
        except StorageError as exc:
            raise ExecutionError("cannot persist block %d: %s" % (block.height, exc)) from exc
        return Executed(block.height, app_hash, receipts_root, result.receipts), batch

    def write(self, height: int, batch: WriteBatch) -> None:
        """Write a prepared block's batch (synced); safe to call from a worker thread.

        Raises ExecutionError if the store fails.
        """
        try:
            self.kv.write(batch)
        except StorageError as exc:
            raise ExecutionError("cannot persist block %d: %s" % (height, exc)) from exc

    def persist(self, block: Block, executed: Executed, batch: WriteBatch) -> None:
        """Write a prepared block's batch, then tell the listeners."""
        self.write(block.height, batch)
        self.finish(block, executed)

    def finish(self, block: Block, executed: Executed) -> None:
        """After `write`: tell the listeners (on the caller's thread)."""
        for listener in self.listeners:
            listener(block, executed)
