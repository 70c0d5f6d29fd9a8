"""State pruning in the running node: keep the last N state-tree versions.

`[storage] keep_recent_versions = N` (node/config.py): 0 keeps every version
(the default: observers, archives and audit sources answer proofs at any
height); N >= 2 lets the node delete tree nodes that only versions older than
`tip - N + 1` use, with `ledger.state.StateTree.prune` (bounded batches, each
atomic, recording the new floor in the same batch).

When: `StatePruner.on_commit` is a `Driver.on_commit` listener, so it runs in
the commit path itself — after the block's synced write, before the driver
handles anything else — never concurrently with the executor (the single
writer) or with a proof being built (RPC handlers run on the same event loop
and build a proof without yielding). It prunes every PRUNE_EVERY_BLOCKS
commits (one extra synced LevelDB write per that many blocks), so between N
and N + PRUNE_EVERY_BLOCKS - 1 versions are readable; at most
PRUNE_MAX_CHUNKS × PRUNE_CHUNK_NODES nodes go per call, so turning pruning on
for a large archive works off its backlog over several commits instead of
stalling one.

What stays servable (tip H): `/state/{key}?prove=true` (version H - L, with
header H; L = genesis results_lag, 1 unless the chain pipelines) always,
since N >= L + 1 (`node.config.consensus_settings` refuses less); `/state/{key}?prove=true&height=V` and
`/proof/state/{key}?version=V` for V >= `oldest_version()`; older versions
answer 410 "pruned". Blocks are pruned apart, by `BlockPruner` below.

Block retention (`[storage] retain_blocks = N`, 0 = keep every block, the
default; CometBFT's min_retain_blocks): `BlockPruner.on_commit`, also a
`Driver.on_commit` listener, every PRUNE_EVERY_BLOCKS commits prunes at most
BLOCK_PRUNE_MAX_HEIGHTS heights below `tip - N + 1` in ONE atomic batch that
also moves the floor (`BlockStore.earliest_height`), so a crash leaves either
the old floor or the new one. `BlockStore.prune_block` says what goes (body,
certificate, receipts, tx index rows) and what stays (headers, results,
validator-set-change blocks, genesis). The last N blocks are never pruned.
"""

from __future__ import annotations

import collections
from typing import Any

from ledger.kv import WriteBatch
from ledger.state import StateTree

from node.store import BlockStore

PRUNE_EVERY_BLOCKS = 8
PRUNE_CHUNK_NODES = 10_000
PRUNE_MAX_CHUNKS = 8
BLOCK_PRUNE_MAX_HEIGHTS = 64  # heights per batch: 8x the chain's growth over PRUNE_EVERY_BLOCKS
# txs per batch: pruning runs on the event loop (~5 µs a tx), so a backlog of
# big blocks is worked off in steps of a few tens of ms, never seconds
BLOCK_PRUNE_MAX_TXS = 4096
MIN_RETAIN_BLOCKS = 32  # [storage] retain_blocks: 0 or at least this (node/config.py checks it)


class _CommitPruner:
    """Runs `prune(tip)` after every `every_blocks`-th durable commit while
    `keep` (the recent heights or versions kept) is not 0 (0: keep all)."""

    keep: int
    every_blocks: int

    @property
    def enabled(self) -> bool:
        return self.keep > 0

    def on_commit(self, block: Any, certificate: Any, executed: Any) -> None:
        """`Driver.on_commit` listener: prune after block `executed.height` is durable."""
        if self.enabled and executed.height % self.every_blocks == 0:
            self.prune(executed.height)

    def prune(self, tip: int) -> int:
        raise NotImplementedError


class StatePruner(_CommitPruner):
    """Prunes `tree` to the last `keep_recent_versions` versions (0: never)."""

    def __init__(self, tree: StateTree, keep_recent_versions: int, *, every_blocks: int = PRUNE_EVERY_BLOCKS,
                 chunk_nodes: int = PRUNE_CHUNK_NODES, max_chunks: int = PRUNE_MAX_CHUNKS) -> None:
        if keep_recent_versions < 0 or keep_recent_versions == 1:
            raise ValueError("keep_recent_versions must be 0 or >= 2 (proofs are served at tip - 1)")
        self.tree = tree
        self.keep = keep_recent_versions
        self.every_blocks = every_blocks
        self.chunk_nodes = chunk_nodes
        self.max_chunks = max_chunks
        self.counters: collections.Counter[str] = collections.Counter()

    def prune(self, tip: int) -> int:
        """Delete what versions below `tip - keep + 1` alone use; return nodes removed.

        Raises ledger.errors.ValidationError / StorageError from the tree (a
        bug or a failing disk: the node halts).
        """
        oldest = tip - self.keep + 1
        floor = self.tree.oldest_version()
        if not self.enabled or oldest <= 0 or floor is None or oldest < floor:
            return 0
        removed = 0
        for _ in range(self.max_chunks):
            count = self.tree.prune(oldest, self.chunk_nodes)
            removed += count
            if count < self.chunk_nodes:
                break
        self.counters["prunes"] += 1
        self.counters["pruned_nodes"] += removed
        return removed


class BlockPruner(_CommitPruner):
    """Prunes blocks below the last `retain_blocks` (0: never) from `store`."""

    def __init__(self, store: BlockStore, retain_blocks: int, *, every_blocks: int = PRUNE_EVERY_BLOCKS,
                 max_heights: int = BLOCK_PRUNE_MAX_HEIGHTS, max_txs: int = BLOCK_PRUNE_MAX_TXS) -> None:
        if retain_blocks < 0 or 0 < retain_blocks < MIN_RETAIN_BLOCKS:
            raise ValueError("retain_blocks must be 0 or >= %d" % MIN_RETAIN_BLOCKS)
        self.store = store
        self.keep = retain_blocks
        self.every_blocks = every_blocks
        self.max_heights = max_heights
        self.max_txs = max_txs
        self.counters: collections.Counter[str] = collections.Counter()

    def prune(self, tip: int) -> int:
        """Prune up to `max_heights` heights below `tip - retain_blocks + 1` (fewer
        once `max_txs` txs are pruned), moving the floor in the same batch;
        return the heights pruned.

        Raises ledger.errors.StorageError (corrupt record or failing disk).
        """
        target = tip - self.keep + 1
        floor = self.store.earliest_height()
        if not self.enabled or target <= floor:
            return 0
        stop = min(target, floor + self.max_heights)
        batch = WriteBatch()
        pruned = txs = 0
        height = floor
        while height < stop and txs < self.max_txs:
            count = self.store.prune_block(batch, height)
            if count is not None:
                pruned += 1
                txs += count
            height += 1
        self.store.set_earliest_height(batch, height)
        self.store.kv.write(batch)
        self.counters["block_prunes"] += 1
        self.counters["pruned_blocks"] += pruned
        return pruned
