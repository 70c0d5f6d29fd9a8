"""Benchmark the state tree on LevelDB: updates/s, storage, proof size and speed.

Figures are reported next to SHA-256 hashes/s and raw LevelDB gets/s measured
in the same run (DESIGN.md: speed as ratios, never asserted by unit tests).

    .venv/bin/python scripts/bench_state.py                 # 1,000,000 keys
    .venv/bin/python scripts/bench_state.py --keys 100000 --block 1000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time

from ledger.state import StateProof, StateTree, verify
from node.leveldb_store import LevelDBStore


def sha256_per_second(seconds: float = 1.0) -> float:
    """SHA-256 of an 80-byte input (an internal node preimage), as the tree does it."""
    prefix, left, right = b"JMT::IntrnalNode", bytes(32), bytes(range(32))
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10_000):
            hashlib.sha256(prefix + left + right).digest()
        count += 10_000
    return count / (time.perf_counter() - start)


def key_of(i: int) -> bytes:
    return b"acct/%010d" % i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--updates", type=int, default=100, help="blocks of updates to existing keys")
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--cache", type=int, default=100_000, help="decoded nodes kept in memory")
    parser.add_argument("--sync", action="store_true", help="fsync every block (default off)")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    rng = random.Random(1)
    workdir = tempfile.mkdtemp(prefix="bench_state_", dir=args.dir)
    store = LevelDBStore(os.path.join(workdir, "db"), sync=args.sync)
    tree = StateTree(store, cache_nodes=args.cache)
    hash_rate = sha256_per_second()
    print("sha256 (80 B): %.0f/s" % hash_rate)

    version = 0
    hashes = 0
    batch_bytes = 0
    batch_puts = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    report_every = max(1, args.keys // args.block // 10)
    for first in range(0, args.keys, args.block):
        version += 1
        writes = {key_of(i): b"balance:%d" % i for i in range(first, min(first + args.block, args.keys))}
        _, batch = tree.prepare(version, writes)
        hashes += tree.last_hashes
        batch_puts += len(batch.puts)
        batch_bytes += sum(len(k) + len(v) for k, v in batch.puts.items())
        store.write(batch)
        if version % report_every == 0:
            elapsed = time.perf_counter() - start
            print("  inserted %d keys, %.0f updates/s" % (min(first + args.block, args.keys), (first + args.block) / elapsed))
    insert_seconds = time.perf_counter() - start
    insert_cpu = time.process_time() - cpu_start
    insert_rate = args.keys / insert_seconds
    print("insert: %d keys in %.1f s = %.0f updates/s (%.0f per CPU-second); %.1f puts and %.0f bytes per write"
          " (incl. K index, stale index)"
          % (args.keys, insert_seconds, insert_rate, args.keys / insert_cpu, batch_puts / args.keys,
             batch_bytes / args.keys))
    print("hashes per insert: %.1f (of which key+value hashes: 2)" % (hashes / args.keys))

    # Updates of random existing keys: the steady state of a ledger.
    upd_hashes = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    for _ in range(args.updates):
        version += 1
        writes = {key_of(rng.randrange(args.keys)): b"balance:%d" % rng.randrange(10**9) for _ in range(args.block)}
        tree.apply(version, writes)
        upd_hashes += tree.last_hashes
    update_count = args.updates * args.block
    update_seconds = time.perf_counter() - start
    update_rate = update_count / update_seconds if update_count else 0.0
    update_cpu = max(time.process_time() - cpu_start, 1e-9)
    print("update: %d random existing keys in %.1f s = %.0f updates/s (%.0f per CPU-second), %.1f hashes/update"
          % (update_count, update_seconds, update_rate, update_count / update_cpu,
             upd_hashes / max(update_count, 1)))

    nodes = sum(1 for _ in store.iterate_prefix(b"N"))
    print("stored nodes: %d (%.2f per key)" % (nodes, nodes / args.keys))

    # Proofs: half present keys, half absent keys, at the latest version.
    probe = [key_of(rng.randrange(args.keys)) if i % 2 == 0 else b"absent/%d" % i for i in range(args.proofs)]
    start = time.perf_counter()
    proofs = [tree.prove(key, version) for key in probe]
    prove_rate = len(probe) / (time.perf_counter() - start)
    wires = [proof.to_bytes() for proof in proofs]
    sizes = [len(w) for w in wires]
    values = [tree.get(key, version) for key in probe]
    root = tree.root(version)
    start = time.perf_counter()
    for key, value, wire in zip(probe, values, wires):
        verify(root, key, value, StateProof.from_bytes(wire))
    verify_rate = len(probe) / (time.perf_counter() - start)
    present = [s for s, v in zip(sizes, values) if v is not None]
    print("proof bytes: mean %.0f max %d (present mean %.0f); siblings mean %.1f"
          % (sum(sizes) / len(sizes), max(sizes), sum(present) / max(len(present), 1),
             sum(len(p.siblings) for p in proofs) / len(proofs)))
    print("proofs: %.0f generated/s, %.0f verified/s (decode + verify)" % (prove_rate, verify_rate))

    get_keys = [b"N" + k for k, _ in zip((k for k, _ in store.iterate_prefix(b"N")), range(20_000))]
    rng.shuffle(get_keys)
    start = time.perf_counter()
    for key in get_keys:
        store.get(key)
    get_rate = len(get_keys) / (time.perf_counter() - start)
    print("raw leveldb get: %.0f/s" % get_rate)
    store.close()
    shutil.rmtree(workdir)
    print(
        "keys=%d updates_per_s=%.0f proof_bytes_max=%d proofs_per_s=%.0f verifies_per_s=%.0f "
        "sha256_per_s=%.0f hashes_per_update=%.1f update_existing_per_s=%.0f load_avg=%.1f"
        % (args.keys, insert_rate, max(sizes), prove_rate, verify_rate, hash_rate,
           hashes / args.keys, update_rate, os.getloadavg()[0])
    )


if __name__ == "__main__":
    main()
