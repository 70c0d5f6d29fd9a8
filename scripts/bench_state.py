"""Benchmark the state tree on LevelDB: updates/s, storage, proof size and speed.

Figures are reported next to SHA-256 hashes/s and raw LevelDB gets/s measured
in the same run (DESIGN.md: speed as ratios, never asserted by unit tests).

On a shared machine wall-clock rates depend on the neighbours, so each rate is
also given per CPU-second (process: includes LevelDB's compaction thread;
main: the Python thread alone), with the load average, and the final line
carries `hash_bound_fraction` = updates_per_s / (sha256_per_s /
hashes_per_update): the fraction of the pure-hashing bound reached, a figure
that means the same on any machine (`cpu_hash_bound_fraction` is the same
ratio with both rates per CPU-second).

    .venv/bin/python scripts/bench_state.py                 # 1,000,000 keys
    .venv/bin/python scripts/bench_state.py --keys 100000 --block 1000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import shutil
import tempfile
import time

from ledger.state import DEFAULT_CACHE_NODES, StateProof, StateTree, verify
from node.leveldb_store import LevelDBStore


def sha256_per_second(seconds: float = 1.0) -> tuple[float, float]:
    """SHA-256 of an 80-byte input (an internal node preimage): (per wall second, per CPU-second)."""
    prefix, left, right = b"JMT::IntrnalNode", bytes(32), bytes(range(32))
    count = 0
    start = time.perf_counter()
    cpu = time.thread_time()
    while time.perf_counter() - start < seconds:
        for _ in range(10_000):
            hashlib.sha256(prefix + left + right).digest()
        count += 10_000
    return count / (time.perf_counter() - start), count / max(time.thread_time() - cpu, 1e-9)


class Clock:
    """Wall, process CPU (all threads, incl. LevelDB compaction) and main-thread CPU."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.main = time.perf_counter(), time.process_time(), time.thread_time()

    def rates(self, count: int) -> tuple[float, float, float]:
        wall = time.perf_counter() - self.wall
        cpu = max(time.process_time() - self.cpu, 1e-9)
        main = max(time.thread_time() - self.main, 1e-9)
        return count / wall, count / cpu, count / main


def key_of(i: int) -> bytes:
    return b"acct/%010d" % i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--updates", type=int, default=100, help="blocks of updates to existing keys")
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--cache", type=int, default=DEFAULT_CACHE_NODES, help="decoded nodes kept in memory")
    parser.add_argument("--sync", action="store_true", help="fsync every block (default off)")
    parser.add_argument("--gc-promote", action="store_true", help="StateTree(gc_promote=True)")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    rng = random.Random(1)
    load_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="bench_state_", dir=args.dir)
    store = LevelDBStore(os.path.join(workdir, "db"), sync=args.sync)
    tree = StateTree(store, cache_nodes=args.cache, gc_promote=args.gc_promote)
    hash_rate, hash_cpu_rate = sha256_per_second()
    print("sha256 (80 B): %.0f/s (%.0f per CPU-second); load average %.1f" % (hash_rate, hash_cpu_rate, load_start))

    version = 0
    hashes = 0
    batch_bytes = 0
    batch_puts = 0
    start = time.perf_counter()
    clock = Clock()
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
    insert_rate, insert_cpu_rate, insert_main_rate = clock.rates(args.keys)
    print("insert: %d keys in %.1f s = %.0f updates/s (%.0f per CPU-second, %.0f per main-thread CPU-second);"
          " %.1f puts and %.0f bytes per write (incl. K index, stale index)"
          % (args.keys, insert_seconds, insert_rate, insert_cpu_rate, insert_main_rate, batch_puts / args.keys,
             batch_bytes / args.keys))
    print("hashes per insert: %.1f (of which key+value hashes: 2); store reads per insert: %.2f nodes, %.2f leaves"
          % (hashes / args.keys, tree.node_reads / args.keys, tree.leaf_reads / args.keys))
    node_reads, leaf_reads = tree.node_reads, tree.leaf_reads

    # Updates of random existing keys: the steady state of a ledger.
    upd_hashes = 0
    start = time.perf_counter()
    clock = Clock()
    for _ in range(args.updates):
        version += 1
        writes = {key_of(rng.randrange(args.keys)): b"balance:%d" % rng.randrange(10**9) for _ in range(args.block)}
        tree.apply(version, writes)
        upd_hashes += tree.last_hashes
    update_count = args.updates * args.block
    update_seconds = time.perf_counter() - start
    update_rate, update_cpu_rate, _ = clock.rates(update_count)
    print("update: %d random existing keys in %.1f s = %.0f updates/s (%.0f per CPU-second), %.1f hashes/update,"
          " store reads per update: %.2f nodes, %.2f leaves"
          % (update_count, update_seconds, update_rate, update_cpu_rate, upd_hashes / max(update_count, 1),
             (tree.node_reads - node_reads) / max(update_count, 1),
             (tree.leaf_reads - leaf_reads) / max(update_count, 1)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cached_bytes = sum(len(key) + len(node) for key, node in tree._cache.items())
    print("memory: max RSS %.0f MB with %d cached nodes (limit %d), %.0f bytes each (node and key)"
          % (rss_mb, len(tree._cache), args.cache, cached_bytes / max(len(tree._cache), 1)))

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
    clock = Clock()
    for key, value, wire in zip(probe, values, wires):
        verify(root, key, value, StateProof.from_bytes(wire))
    verify_rate, _, verify_cpu_rate = clock.rates(len(probe))
    present = [s for s, v in zip(sizes, values) if v is not None]
    print("proof bytes: mean %.0f max %d (present mean %.0f); siblings mean %.1f"
          % (sum(sizes) / len(sizes), max(sizes), sum(present) / max(len(present), 1),
             sum(len(p.siblings) for p in proofs) / len(proofs)))
    print("proofs: %.0f generated/s, %.0f verified/s (decode + verify; %.0f per CPU-second)"
          % (prove_rate, verify_rate, verify_cpu_rate))

    get_keys = [b"N" + k for k, _ in zip((k for k, _ in store.iterate_prefix(b"N")), range(20_000))]
    rng.shuffle(get_keys)
    start = time.perf_counter()
    for key in get_keys:
        store.get(key)
    get_rate = len(get_keys) / (time.perf_counter() - start)
    print("raw leveldb get: %.0f/s" % get_rate)
    store.close()
    shutil.rmtree(workdir)
    # The hashing bound is re-measured at the end; the mean of both brackets the run.
    end_rate, end_cpu_rate = sha256_per_second()
    hash_rate, hash_cpu_rate = (hash_rate + end_rate) / 2, (hash_cpu_rate + end_cpu_rate) / 2
    hashes_per_update = hashes / args.keys
    bound = hash_rate / hashes_per_update
    cpu_bound = hash_cpu_rate / hashes_per_update
    print("hashing bound: %.0f updates/s (%.0f per CPU-second); reached %.1f%% (%.1f%% per CPU-second)"
          % (bound, cpu_bound, 100 * insert_rate / bound, 100 * insert_cpu_rate / cpu_bound))
    load = os.getloadavg()
    print(
        "keys=%d updates_per_s=%.0f proof_bytes_max=%d proofs_per_s=%.0f verifies_per_s=%.0f "
        "sha256_per_s=%.0f hashes_per_update=%.1f update_existing_per_s=%.0f load_avg=%.1f "
        "updates_per_cpu_s=%.0f updates_per_main_cpu_s=%.0f update_existing_per_cpu_s=%.0f "
        "verifies_per_cpu_s=%.0f sha256_per_cpu_s=%.0f hash_bound_fraction=%.3f cpu_hash_bound_fraction=%.3f "
        "load_avg_start=%.1f load_avg_15m=%.1f cache_nodes=%d max_rss_mb=%.0f gc_promote=%d"
        % (args.keys, insert_rate, max(sizes), prove_rate, verify_rate, hash_rate,
           hashes_per_update, update_rate, load[0],
           insert_cpu_rate, insert_main_rate, update_cpu_rate,
           verify_cpu_rate, hash_cpu_rate, insert_rate / bound, insert_cpu_rate / cpu_bound,
           load_start, load[2], args.cache, rss_mb, args.gc_promote)
    )


if __name__ == "__main__":
    main()
