#!/usr/bin/env python3
"""Benchmark the CPU one validator spends in the PBFT replica layer per height.

Four (or `--validators`) in-process `Replica`s run a steady load: every height
each replica is handed the block's pre-signed transactions (as the mempool
does: decoded from their bytes and registered in `KNOWN_TXS`), the
primary proposes a full block of `--txs` transactions, and every message is
delivered straight to the others (FIFO, no loss, a virtual clock). After a
`Commit` the harness feeds `BlockExecuted` at once, like the node's driver.

Only `Replica.handle` (and `start`) is timed, with `time.process_time`, summed
over the replicas of the measured heights (after `--warmup` heights, so the
double-sign guard holds its steady ~2K+W heights of records) and divided by
the validator count: CPU per height of ONE validator, averaged over primary
and backups. `driver_guard_us_per_height` is the driver's share of each
`Persist` that the node would write (`node.driver`: the guard record's
checksum, no disk I/O), measured the same way; the "guard" line gives it per
replica, with the average size of the state written (the primary's is the
largest: its PROPOSAL records, each a whole block until executed).

    .venv/bin/python scripts/bench_consensus.py                  # 4 validators, 400-tx blocks
    .venv/bin/python scripts/bench_consensus.py --heights 60 --pipeline 3
    .venv/bin/python scripts/bench_consensus.py --profile        # cProfile of the measured heights

The last line is exactly
`consensus_us_per_height=… consensus_us_per_tx=… heights=…`; `chain=` (the
last block's hash) on the line before is identical for identical behaviour.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pathlib
import pstats
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from consensus import messages  # noqa: E402
from consensus.config import ConsensusConfig  # noqa: E402
from consensus.effects import Broadcast, Commit, Persist, Send  # noqa: E402
from consensus.inputs import BlockExecuted, MessageReceived, TransactionsVerified  # noqa: E402
from consensus.replica import Replica  # noqa: E402
from ledger.crypto import PrivateKey  # noqa: E402
from ledger.hashing import sha256  # noqa: E402
from ledger.types import KNOWN_TXS, Tx, Validator, ValidatorSet  # noqa: E402
from node.driver import encode_guard_record  # noqa: E402

CHAIN_ID = "careledger-bench"
STEP_MS = 2  # virtual time per delivered message
MESSAGE_NAMES = {messages.TAG_PROPOSAL: "Proposal", messages.TAG_PREPARE: "Prepare",
                 messages.TAG_COMMIT: "CommitVote", messages.TAG_CHECKPOINT: "Checkpoint",
                 messages.TAG_VIEW_CHANGE: "ViewChange", messages.TAG_NEW_VIEW: "NewView",
                 messages.TAG_DECIDED: "Decided"}


def make_txs(count: int, clients: int = 64) -> list[Tx]:
    """`count` signed txs, as a node's mempool holds them (decoded from bytes)."""
    keys = [PrivateKey(sha256(b"bench-client-%d" % i)) for i in range(clients)]
    txs = []
    for n in range(count):
        key = keys[n % clients]
        tx = Tx(CHAIN_ID, key.public_key, n // clients, "claim.submit",
                {"amount": 100 + n % 9_000, "claim_id": "c-%08d" % n, "payer": "payer-%d" % (n % 7)}).signed(key)
        txs.append(Tx.decode(tx.encode()))
    return txs


class Bench:
    def __init__(self, validators: int, txs_per_block: int, pipeline: int) -> None:
        self.keys = [PrivateKey(sha256(b"bench-validator-%d" % i)) for i in range(validators)]
        vset = ValidatorSet(tuple(Validator("v%d" % i, k.public_key) for i, k in enumerate(self.keys)))
        self.config = ConsensusConfig(
            CHAIN_ID, vset, genesis_app_hash=sha256(b"genesis"), max_batch_txs=txs_per_block,
            batch_timeout_ms=50, pipeline_window=max(8, pipeline), checkpoint_interval=16,
            results_lag=pipeline, max_in_flight=pipeline)
        # every tx of a block is pending at every replica (gossiped and verified
        # by its mempool first), so only votes reach the signature verifier
        self.replicas = [Replica(self.config, k) for k in self.keys]
        self.pubs = [k.public_key for k in self.keys]
        self.now = 0
        self.queue: collections.deque[tuple[int, Any]] = collections.deque()
        self.cpu = [0.0] * validators
        self.cpu_by_input: collections.Counter[str] = collections.Counter()
        self.guard_cpu = 0.0
        self.guard_cpu_by = [0.0] * validators
        self.guard_bytes_by = [0] * validators
        self.persists_by = [0] * validators
        self.deferred: list[bytes | None] = [None] * validators
        self.guard_sequence = [0] * validators
        self.persists = 0
        self.last_block_hash = b""
        for i, r in enumerate(self.replicas):
            started = time.process_time()
            effects = r.start(self.now)
            self.cpu[i] += time.process_time() - started
            self.perform(i, effects)

    def handle(self, i: int, event: Any) -> None:
        started = time.process_time()
        effects = self.replicas[i].handle(event, self.now)
        spent = time.process_time() - started
        self.cpu[i] += spent
        self.cpu_by_input[self.label(event)] += spent
        self.perform(i, effects)

    @staticmethod
    def label(event: Any) -> str:
        if isinstance(event, MessageReceived):  # [tag, ...]: the tag is the byte after the array header
            return "message:" + MESSAGE_NAMES.get(event.data[1], "other")
        return type(event).__name__

    def perform(self, i: int, effects: list[Any]) -> None:
        """The node driver's order: Persist (written before the next message
        leaves, or superseded), messages, Commit → BlockExecuted at once."""
        executed = []
        for index, effect in enumerate(effects):
            if isinstance(effect, Persist):
                if any(isinstance(later, (Broadcast, Send)) for later in effects[index + 1:]):
                    self.deferred[i] = None
                    self.save_guard(i, effect.state)
                else:
                    self.deferred[i] = effect.state
            elif isinstance(effect, (Broadcast, Send)):
                if self.deferred[i] is not None:
                    state, self.deferred[i] = self.deferred[i], None
                    self.save_guard(i, state)
                targets = range(len(self.replicas)) if isinstance(effect, Broadcast) \
                    else [self.pubs.index(effect.to_public_key)]
                for j in targets:
                    if j != i:
                        self.queue.append((j, MessageReceived(self.pubs[i], effect.data)))
            elif isinstance(effect, Commit):
                block = effect.block
                self.last_block_hash = block.hash
                executed.append(BlockExecuted(block.height, sha256(b"app" + block.hash),
                                              sha256(b"receipts" + block.hash)))
        for event in executed:
            self.handle(i, event)

    def save_guard(self, i: int, state: bytes) -> None:
        """The driver's CPU per guard write (no disk I/O): the checksummed record."""
        started = time.process_time()
        self.guard_sequence[i] += 1
        encode_guard_record(self.guard_sequence[i], state)
        spent = time.process_time() - started
        self.guard_cpu += spent
        self.guard_cpu_by[i] += spent
        self.guard_bytes_by[i] += len(state)
        self.persists_by[i] += 1
        self.persists += 1

    def run_height(self, txs: list[Tx], chunk: int = 100) -> None:
        for start in range(0, len(txs), chunk):  # the mempool hands verified txs over in batches
            batch = tuple(txs[start:start + chunk])
            for tx in batch:
                KNOWN_TXS.add(tx)  # the node's mempool registers what it decoded
            for i in range(len(self.replicas)):
                self.handle(i, TransactionsVerified(batch))
        while self.queue:
            self.now += STEP_MS
            j, event = self.queue.popleft()
            self.handle(j, event)

    def reset_counters(self) -> None:
        self.cpu = [0.0] * len(self.replicas)
        self.cpu_by_input.clear()
        self.guard_cpu = 0.0
        self.guard_cpu_by = [0.0] * len(self.replicas)
        self.guard_bytes_by = [0] * len(self.replicas)
        self.persists_by = [0] * len(self.replicas)
        self.persists = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--txs", type=int, default=400, help="transactions per block")
    parser.add_argument("--heights", type=int, default=100, help="measured heights")
    parser.add_argument("--warmup", type=int, default=48, help="heights before measuring (guard steady state)")
    parser.add_argument("--pipeline", type=int, default=1, metavar="W", help="W = L heights in flight")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the measured heights")
    args = parser.parse_args(argv)

    total = args.warmup + args.heights
    started = time.perf_counter()
    txs = make_txs(total * args.txs)
    print("signed %d txs in %.1fs" % (len(txs), time.perf_counter() - started), file=sys.stderr)

    bench = Bench(args.validators, args.txs, args.pipeline)
    blocks = [txs[h * args.txs:(h + 1) * args.txs] for h in range(total)]
    for h in range(args.warmup):
        bench.run_height(blocks[h])
    bench.reset_counters()
    profiler = cProfile.Profile() if args.profile else None
    wall = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for h in range(args.warmup, total):
        bench.run_height(blocks[h])
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - wall

    committed = [r.committed for r in bench.replicas]
    if min(committed) != total:
        print("FAILED: committed heights %s, expected %d" % (committed, total), file=sys.stderr)
        return 1
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
    n = args.validators
    per_height = sum(bench.cpu) / n / args.heights * 1e6
    for name, spent in sorted(bench.cpu_by_input.items(), key=lambda item: -item[1]):
        print("  %-28s %8.0f us/height" % (name, spent / n / args.heights * 1e6))
    print("  %-28s %s" % ("per replica (us/height)",
                          " ".join("%.0f" % (c / args.heights * 1e6) for c in bench.cpu)))
    print("  %-28s %s" % ("guard (us/height, KiB/write)", "  ".join(
        "%.0f,%.1f" % (g / args.heights * 1e6, b / max(1, w) / 1024)
        for g, b, w in zip(bench.guard_cpu_by, bench.guard_bytes_by, bench.persists_by))))
    print("driver_guard_us_per_height=%.0f guard_writes_per_height=%.2f wall_s=%.1f load=%.2f chain=%s" % (
        bench.guard_cpu / n / args.heights * 1e6, bench.persists / n / args.heights, wall,
        os.getloadavg()[0], bench.last_block_hash.hex()[:16]))
    print("consensus_us_per_height=%.0f consensus_us_per_tx=%.2f heights=%d" % (
        per_height, per_height / args.txs, args.heights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
