"""Benchmark block execution: the CPU a validator spends per committed transaction.

Builds the state a `careledger testnet` starts from (`node.node.genesis_writes`
over a genesis of 64 funded accounts in 4 organisations, payer/provider/
auditor round-robin, as `build_testnet --organisations 4 --accounts-per-org 16`
makes, but with fixed keys so every run executes the same bytes), pre-signs
`--blocks` blocks of `--txs` transfers (scripts/loadgen.py's shape: account i
sends 1 cent to account i+1, nonces in order) and executes them with
`Executor.prepare` + `Executor.write` into a MemoryStore (or, with
`--leveldb`, a temporary LevelDB: synced writes, so the write time is mostly
the disk's).

Transactions reach `prepare` as they do in a node: decoded from their bytes,
hash already known (the mempool and the proposal checks computed it). The
garbage collector is tuned as in a node process (`tune_gc_for_node_process`).

Times are CPU time (`time.process_time`), the best of `--rounds` runs over a
fresh store, in µs per transaction:

- execute: `Executor.prepare` as a whole, of which
  - apply: `contracts.engine.apply_block` (the contracts),
  - state_prepare: `StateTree.prepare` (the new state version),
  - add_block: `BlockStore.add_block` (block, receipts, tx index, tip),
  - receipts: the rest (receipt encoding and root, tip read);
- write: `Executor.write` (the batch into the store).

`digest` is SHA-256 over every block's (height, app_hash, receipts_root) and
every key and value in the store after the last block: an optimisation must
leave it unchanged. Ends with one line on stdout:
`execute_us_per_tx=… apply_us_per_tx=… state_prepare_us_per_tx=…
receipts_us_per_tx=… add_block_us_per_tx=… write_us_per_tx=… blocks=… txs=… digest=…`

    .venv/bin/python scripts/bench_execute.py
    .venv/bin/python scripts/bench_execute.py --blocks 50 --rounds 5 --leveldb
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import node.executor as executor_module  # noqa: E402
from ledger.crypto import PrivateKey  # noqa: E402
from ledger.hashing import ZERO_HASH  # noqa: E402
from ledger.kv import KeyValueStore, MemoryStore  # noqa: E402
from ledger.types import Block, CommitCertificate, Header, Tx, compute_tx_root  # noqa: E402
from node.config import AppState, Genesis, GenesisAccount, GenesisValidator, Organisation  # noqa: E402
from node.executor import Executor  # noqa: E402
from node.node import genesis_writes, tune_gc_for_node_process  # noqa: E402

CHAIN_ID = "careledger-bench"
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 200
BALANCE = 10_000_000_000  # node.cli.DEFAULT_BALANCE
ROLES = ("payer", "provider", "auditor")  # node.cli.DEMO_ROLES
ORGANISATIONS = 4
PROPOSER = PrivateKey(b"p" * 32)


def account_keys(count: int) -> list[PrivateKey]:
    return [PrivateKey(hashlib.sha256(b"bench account %d" % i).digest()) for i in range(count)]


def bench_genesis(keys: list[PrivateKey]) -> Genesis:
    """64 accounts spread over 4 organisations, as `build_testnet` lays them out."""
    per_org = -(-len(keys) // ORGANISATIONS)
    orgs = tuple(Organisation("org%d" % o, "Demo %s organisation %d" % (ROLES[o % len(ROLES)], o),
                              ROLES[o % len(ROLES)]) for o in range(ORGANISATIONS))
    accounts = tuple(GenesisAccount(key.public_key, "org%d" % (i // per_org), ROLES[(i // per_org) % len(ROLES)])
                     for i, key in enumerate(keys))
    validators = tuple(GenesisValidator("node%d" % i, PrivateKey(bytes([i + 1]) * 32).public_key,
                                        PrivateKey(bytes([i + 11]) * 32).public_key, "127.0.0.1:1")
                       for i in range(4))
    balances = tuple(sorted((key.public_key, BALANCE) for key in keys))
    return Genesis(CHAIN_ID, GENESIS_TIME_MS, validators, app_state=AppState(orgs, accounts, balances))


def signed_blocks(keys: list[PrivateKey], blocks: int, per_block: int) -> list[tuple[Block, CommitCertificate]]:
    """`blocks` chained blocks of `per_block` transfers, round-robin over the accounts."""
    nonces = [0] * len(keys)
    out: list[tuple[Block, CommitCertificate]] = []
    prev_hash = ZERO_HASH
    sender = 0
    for height in range(1, blocks + 1):
        txs = []
        for _ in range(per_block):
            nonces[sender] += 1
            to = keys[(sender + 1) % len(keys)].public_key
            signed = Tx(CHAIN_ID, keys[sender].public_key, nonces[sender], "transfer",
                        {"to": to, "amount": 1}).signed(keys[sender])
            tx = Tx.decode(signed.encode())  # as the node holds it: decoded, bytes kept
            tx.hash  # noqa: B018  (known before execution: mempool, proposal checks)
            txs.append(tx)
            sender = (sender + 1) % len(keys)
        header = Header(CHAIN_ID, height, 0, GENESIS_TIME_MS + height * BLOCK_INTERVAL_MS, prev_hash,
                        compute_tx_root(txs), ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH,
                        height - 1, PROPOSER.public_key)
        block = Block(header, tuple(txs))
        prev_hash = block.hash
        out.append((block, CommitCertificate(height, 0, block.hash, ())))
    return out


class Timer:
    """Sums the CPU time spent in wrapped callables, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds[name] = 0.0

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.process_time() - started

        return timed


def store_digest(kv: KeyValueStore, results: list[tuple[int, bytes, bytes]]) -> str:
    digest = hashlib.sha256()
    for height, app_hash, receipts_root in results:
        digest.update(b"%d" % height + app_hash + receipts_root)
    for key, value in kv.iterate_prefix(b""):
        digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return digest.hexdigest()


def run_once(genesis: Genesis, chain: list[tuple[Block, CommitCertificate]], leveldb: bool) -> tuple[dict[str, float], str]:
    """Execute `chain` over a fresh store; return (CPU seconds by stage, digest)."""
    directory = tempfile.mkdtemp(prefix="bench-execute-") if leveldb else None
    try:
        if directory is not None:
            from node.leveldb_store import LevelDBStore

            kv: KeyValueStore = LevelDBStore(directory)
        else:
            kv = MemoryStore()
        executor = Executor(CHAIN_ID, kv)
        executor.init_genesis(genesis_writes(genesis), GENESIS_TIME_MS)
        timer = Timer()
        original_apply = executor_module.apply_block
        executor_module.apply_block = timer.wrap("apply", original_apply)
        executor.tree.prepare = timer.wrap("state_prepare", executor.tree.prepare)  # type: ignore[method-assign]
        executor.store.add_block = timer.wrap("add_block", executor.store.add_block)  # type: ignore[method-assign]
        results = []
        execute = write = 0.0
        try:
            for block, certificate in chain:
                started = time.process_time()
                executed, batch = executor.prepare(block, certificate)
                prepared = time.process_time()
                executor.write(block.height, batch)
                written = time.process_time()
                executor.finish(block, executed)
                execute += prepared - started
                write += written - prepared
                results.append((executed.height, executed.app_hash, executed.receipts_root))
        finally:
            executor_module.apply_block = original_apply
        seconds = dict(timer.seconds, execute=execute, write=write)
        seconds["receipts"] = execute - seconds["apply"] - seconds["state_prepare"] - seconds["add_block"]
        digest = store_digest(kv, results)
        kv.close()
        return seconds, digest
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=30, help="blocks per round (default 30)")
    parser.add_argument("--txs", type=int, default=400, help="transfers per block (default 400)")
    parser.add_argument("--accounts", type=int, default=64, help="funded accounts (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="runs over a fresh store; the best is kept")
    parser.add_argument("--leveldb", action="store_true", help="a temporary LevelDB instead of a MemoryStore")
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.txs < 1 or args.accounts < 2 or args.rounds < 1:
        parser.error("need at least 1 block, 1 tx, 2 accounts and 1 round")

    keys = account_keys(args.accounts)
    genesis = bench_genesis(keys)
    chain = signed_blocks(keys, args.blocks, args.txs)
    tune_gc_for_node_process()
    txs = args.blocks * args.txs
    best: dict[str, float] | None = None
    digests = set()
    for round_index in range(args.rounds):
        seconds, digest = run_once(genesis, chain, args.leveldb)
        digests.add(digest)
        print("round %d: execute %.1f µs/tx" % (round_index + 1, seconds["execute"] / txs * 1e6), file=sys.stderr)
        if best is None or seconds["execute"] < best["execute"]:
            best = seconds
    if len(digests) != 1:
        raise SystemExit("rounds disagree: %s" % sorted(digests))
    assert best is not None
    stages = ("execute", "apply", "state_prepare", "receipts", "add_block", "write")
    figures = " ".join("%s_us_per_tx=%.2f" % (name, best[name] / txs * 1e6) for name in stages)
    print("%s blocks=%d txs=%d digest=%s" % (figures, args.blocks, txs, digests.pop()[:16]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
