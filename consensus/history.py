"""Incremental RFC 6962 history root over block hashes (O(log n) per block).

Header h's `history_root` is `ledger.merkle.root_from_hashes([hash(1), ..., hash(h-1)])`:
the block hashes are used directly as the tree's leaf hashes, so an inclusion
proof for block k is `merkle.verify_inclusion_hash(block_hash_k, k - 1, size, proof, root)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import merkle


@dataclass(frozen=True)
class History:
    """Peaks of the perfect subtrees over block hashes 1..size, left to right.

    `root` equals `ledger.merkle.root_from_hashes(hashes)` (tested).
    """

    size: int = 0
    peaks: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def from_hashes(cls, hashes: list[bytes]) -> "History":
        history = cls()
        for block_hash in hashes:
            history = history.append(block_hash)
        return history

    def append(self, block_hash: bytes) -> "History":
        peaks = list(self.peaks)
        peaks.append((1, block_hash))
        while len(peaks) >= 2 and peaks[-1][0] == peaks[-2][0]:
            (size, right), (_, left) = peaks.pop(), peaks.pop()
            peaks.append((size * 2, merkle.node_hash(left, right)))
        return History(self.size + 1, tuple(peaks))

    @property
    def root(self) -> bytes:
        if not self.peaks:
            return merkle.root_from_hashes([])
        acc = self.peaks[-1][1]
        for _, left in reversed(self.peaks[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc
