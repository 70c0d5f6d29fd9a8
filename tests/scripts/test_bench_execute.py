"""scripts/bench_execute.py executes the same bytes every run, and they are the
bytes the executor has always written for that workload."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("bench_execute", ROOT / "scripts" / "bench_execute.py")
bench_execute = importlib.util.module_from_spec(SPEC)
sys.modules["bench_execute"] = bench_execute
SPEC.loader.exec_module(bench_execute)  # type: ignore[union-attr]

# SHA-256 over every (height, app_hash, receipts_root) and every stored key and
# value after 3 blocks of 50 transfers among 8 accounts. Execution speed-ups
# must leave it as it is: a new value means the chain's output changed.
PINNED_DIGEST = "f6f2c26eb7bbc31d"


def test_the_benchmark_workload_stores_the_pinned_bytes_on_memory_and_leveldb() -> None:
    keys = bench_execute.account_keys(8)
    genesis = bench_execute.bench_genesis(keys)
    chain = bench_execute.signed_blocks(keys, 3, 50)
    for leveldb in (False, True):
        seconds, digest = bench_execute.run_once(genesis, chain, leveldb)
        assert digest[:16] == PINNED_DIGEST
        assert set(seconds) == {"execute", "apply", "state_prepare", "receipts", "add_block", "write"}
    assert all(len(block.txs) == 50 for block, _ in chain)
