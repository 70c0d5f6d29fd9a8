"""Kernel demonstration: a 100,000-entry state tree on LevelDB, proved and verified.

Builds the tree in blocks of 1,000 writes (one version per block), then proves
one present and one absent key and verifies both proofs the way an observer
would: from the root hash and the proof bytes alone.

    .venv/bin/python scripts/demo_kernel.py [--entries 100000] [--block 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from ledger.errors import ProofError
from ledger.state import StateProof, StateTree, verify
from node.leveldb_store import LevelDBStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=1_000)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="careledger_demo_")
    store = LevelDBStore(os.path.join(workdir, "state.db"))
    tree = StateTree(store)
    try:
        print("Building %d entries in blocks of %d on LevelDB (%s)" % (args.entries, args.block, workdir))
        start = time.perf_counter()
        version = 0
        for first in range(0, args.entries, args.block):
            version += 1
            last = min(first + args.block, args.entries)
            tree.apply(version, {b"claim/%08d" % i: b"amount_cents=%d" % (i * 37 % 100_000) for i in range(first, last)})
        build = time.perf_counter() - start
        root = tree.root(version)
        print("  %d versions in %.1f s (%.0f writes/s, fsync per block)" % (version, build, args.entries / build))
        print("  root @ version %d: %s" % (version, root.hex()))

        for label, key in (("present", b"claim/%08d" % (args.entries // 2)), ("absent", b"claim/not-filed")):
            start = time.perf_counter()
            value = tree.get(key, version)
            proof_bytes = tree.prove(key, version).to_bytes()
            proved = time.perf_counter() - start
            start = time.perf_counter()
            verify(root, key, value, StateProof.from_bytes(proof_bytes))
            checked = time.perf_counter() - start
            proof = StateProof.from_bytes(proof_bytes)
            print("\n%s key %r" % (label, key.decode()))
            print("  value:        %r" % (value,))
            print("  proof:        %d bytes, %d siblings (%d empty), leaf %s"
                  % (len(proof_bytes), len(proof.siblings), sum(1 for s in proof.siblings if not s),
                     "none" if proof.leaf is None else proof.leaf[0].hex()[:16] + "…"))
            print("  get+prove:    %.0f µs    verify: %.0f µs    -> verified" % (proved * 1e6, checked * 1e6))
            try:
                verify(root, key, b"forged" if value is None else None, proof)
                print("  !! a forged claim verified")
            except ProofError as exc:
                print("  forged claim rejected: %s" % exc)
    finally:
        store.close()
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
