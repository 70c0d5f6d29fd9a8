"""Executes committed blocks in height order and persists each atomically.

`execute(block, certificate)` runs `contracts.engine.apply_block` over the
latest committed state (the state tree's `get_latest`, one LevelDB get per
read), prepares the new state version with `StateTree.prepare`, adds block,
certificate, receipts, tx index, results and tip to the same batch, and
writes it once (synced). Only then is the result reported (`BlockExecuted`).

Validator-set changes: when a block's writes set governance's
`governance/validator_set/pending` record with a `seq` above the last one
handed over, `Executed.validator_update` carries the new `ValidatorSet` (the
driver passes it in `BlockExecuted`) and the change is recorded in the same
batch (`BlockStore.add_validator_update`). Only the block that WROTE the record
hands it over — never "whatever the state holds when this node looked" — so the
handover height, hence the activation height, is the same on every node
whatever software version or restart history it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from contracts.engine import BlockContext, Receipt, apply_block
from contracts.governance import VALIDATORS_PENDING_KEY
from ledger import codec, merkle
from ledger.errors import LedgerError, StorageError
from ledger.kv import KeyValueStore, WriteBatch
from ledger.state import StateTree
from ledger.types import Block, CommitCertificate, ValidatorSet

from node.store import STATE_NAMESPACE, BlockStore, ValidatorUpdate


class ExecutionError(Exception):
    """A committed block cannot be executed on our state: halt the node."""


@dataclass(frozen=True)
class Executed:
    height: int
    app_hash: bytes
    receipts_root: bytes
    receipts: tuple[Receipt, ...]
    # set when this block executed a governance validator-set change (see module doc)
    validator_update: ValidatorSet | None = None
    node_keys: tuple[tuple[bytes, bytes], ...] = ()  # (validator key, p2p node key) of the new set


class Executor:
    """The only writer of the chain and the state."""

    def __init__(self, chain_id: str, kv: KeyValueStore) -> None:
        self.chain_id = chain_id
        self.kv = kv
        self.store = BlockStore(kv)
        self.tree = StateTree(kv, namespace=STATE_NAMESPACE)
        self.listeners: list[Callable[[Block, Executed], None]] = []
        # values the last block decoded, offered to the next (`apply_block`'s `known`)
        self._decoded: Mapping[bytes, tuple[bytes, Any]] = {}

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
        result = apply_block(self.tree.get_latest, ctx, block.txs, known=self._decoded)
        self._decoded = result.decoded
        try:
            # the tree's batch is the block's: the store adds its rows to it
            app_hash, batch = self.tree.prepare(block.height, result.writes)
            # = result.receipts_root, with each receipt encoded once for the root and the store
            encoded_receipts = [receipt.encode() for receipt in result.receipts]
            receipts_root = merkle.root(encoded_receipts)
            self.store.add_block(batch, block, certificate, result.receipts, app_hash, receipts_root,
                                 tip.history.append(block.hash), encoded_receipts)
            update = self._validator_update(block.height, result.writes.get(VALIDATORS_PENDING_KEY))
            if update is not None:
                self.store.add_validator_update(batch, update)
        except StorageError as exc:
            raise ExecutionError("cannot persist block %d: %s" % (block.height, exc)) from exc
        if update is None:
            return Executed(block.height, app_hash, receipts_root, result.receipts), batch
        return Executed(block.height, app_hash, receipts_root, result.receipts,
                        update.validators, update.node_keys), batch

    def _validator_update(self, height: int, raw: bytes | None) -> ValidatorUpdate | None:
        """The change to hand to consensus if block `height` wrote a pending
        validator-set record newer than the last one handed over."""
        if raw is None:
            return None
        try:
            record = codec.decode(raw)
            seq = record["seq"]
            previous = self.store.validator_updates()
            if previous and seq <= previous[-1].seq:
                return None
            validators = ValidatorSet.from_wire(record["validators"])
            node_keys = tuple((v, n) for v, n in record.get("node_keys") or
                              [[v.public_key, v.public_key] for v in validators.validators])
        except (LedgerError, KeyError, TypeError, ValueError) as exc:
            # governance validated it with the same rules: every node fails alike
            raise ExecutionError("block %d wrote an unusable validator set: %s" % (height, exc)) from exc
        return ValidatorUpdate(height, seq, validators, node_keys)

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
