"""RFC 6962 / RFC 9162 Merkle trees: roots, inclusion and consistency proofs.

Used for `tx_root`, `receipts_root` and `history_root`. Leaves are hashed
`SHA256(0x00 || data)`, interior nodes `SHA256(0x01 || left || right)`, the
empty tree is `SHA256("")`. Verification follows RFC 9162 §2.1.3.2 and
§2.1.4.2 and the transparency-dev conventions: a consistency proof from size 0
is an error; equal sizes need an empty proof and byte-equal roots.

Every verifier raises `ProofError` on any failure and never anything else.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from ledger.errors import ProofError, ValidationError
from ledger.hashing import HASH_BYTES, sha256

EMPTY_ROOT = sha256(b"")
MAX_PROOF_LENGTH = 64  # a tree of 2**64 leaves needs at most 64 siblings
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

# Roots hash every leaf and node of 400-tx blocks, so `root` and
# `_root_of_hashes` call hashlib directly rather than through `leaf_hash` /
# `node_hash` (the same bytes; tests/ledger/test_merkle_vectors.py compares
# them with a plain recursive RFC 6962 MTH).
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, bottom-up: O(n) hashes, no recursion depth issues."""
    if not hashes:
        return EMPTY_ROOT
    sha, prefix = _sha256, NODE_PREFIX
    level = hashes
    while len(level) > 1:
        pairs = iter(level)  # zip(pairs, pairs) walks (level[0], level[1]), (level[2], level[3]), …
        paired = [sha(prefix + left + right).digest() for left, right in zip(pairs, pairs)]
        if len(level) % 2:
            paired.append(level[-1])  # an odd node is promoted unchanged
        level = paired
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of `leaves` (raw leaf data, in order)."""
    sha, prefix = _sha256, LEAF_PREFIX
    return _root_of_hashes([sha(prefix + leaf).digest() for leaf in leaves])


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash given leaf hashes already computed."""
    return _root_of_hashes(hashes)


def _check_index(index: int, size: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int) or not isinstance(size, int):
        raise ValidationError("index and size must be integers")
    if not 0 <= index < size:
        raise ValidationError("leaf index %d outside a tree of %d leaves" % (index, size))


def _inclusion_path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    # RFC 6962 §2.1.1 PATH(m, D[n])
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return _inclusion_path(hashes[:k], index) + [_root_of_hashes(hashes[k:])]
    return _inclusion_path(hashes[k:], index - k) + [_root_of_hashes(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf `index` of `leaves` (RFC 6962 §2.1.1).

    Raises ValidationError if `index` is outside the tree.
    """
    _check_index(index, len(leaves))
    return _inclusion_path([leaf_hash(leaf) for leaf in leaves], index)


def _subproof(hashes: Sequence[bytes], m: int, complete: bool) -> list[bytes]:
    # RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)
    n = len(hashes)
    if m == n:
        return [] if complete else [_root_of_hashes(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(hashes[:k], m, complete) + [_root_of_hashes(hashes[k:])]
    return _subproof(hashes[k:], m - k, False) + [_root_of_hashes(hashes[:k])]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the first `old_size` leaves are a prefix of `leaves`.

    Raises ValidationError unless 0 < old_size <= len(leaves).
    """
    if isinstance(old_size, bool) or not isinstance(old_size, int) or not 0 < old_size <= len(leaves):
        raise ValidationError("old size %r outside 1..%d" % (old_size, len(leaves)))
    if old_size == len(leaves):
        return []
    return _subproof([leaf_hash(leaf) for leaf in leaves], old_size, True)


def inclusion_proof_from_hashes(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf `index` given leaf hashes already computed (e.g. the
    block hashes of `history_root`, which are used directly as leaf hashes).

    Raises ValidationError if `index` is outside the tree.
    """
    _check_index(index, len(hashes))
    return _inclusion_path(list(hashes), index)


def consistency_proof_from_hashes(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof from the first `old_size` leaf hashes to all of `hashes`.

    Raises ValidationError unless 0 < old_size <= len(hashes).
    """
    if isinstance(old_size, bool) or not isinstance(old_size, int) or not 0 < old_size <= len(hashes):
        raise ValidationError("old size %r outside 1..%d" % (old_size, len(hashes)))
    if old_size == len(hashes):
        return []
    return _subproof(list(hashes), old_size, True)


def _check_proof(proof: object) -> list[bytes]:
    if not isinstance(proof, (list, tuple)):
        raise ProofError("a proof is a list of hashes")
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError("proof longer than %d hashes" % MAX_PROOF_LENGTH)
    for item in proof:
        if not isinstance(item, bytes) or len(item) != HASH_BYTES:
            raise ProofError("a proof element must be a %d-byte hash" % HASH_BYTES)
    return list(proof)


def _check_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**64:
        raise ProofError("%s must be an integer in [0, 2**64)" % what)
    return value


def root_from_inclusion_proof(leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Recompute the root implied by an inclusion proof (RFC 9162 §2.1.3.2).

    Raises ProofError if the proof has the wrong shape for (index, size).
    """
    index = _check_size(index, "leaf index")
    size = _check_size(size, "tree size")
    path = _check_proof(proof)
    if not isinstance(leaf_hash_, bytes) or len(leaf_hash_) != HASH_BYTES:
        raise ProofError("leaf hash must be %d bytes" % HASH_BYTES)
    if index >= size:
        raise ProofError("leaf index %d outside a tree of %d leaves" % (index, size))
    fn, sn = index, size - 1
    result = leaf_hash_
    for sibling in path:
        if sn == 0:
            raise ProofError("inclusion proof has too many hashes")
        if fn % 2 == 1 or fn == sn:
            result = node_hash(sibling, result)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has too few hashes")
    return result


def verify_inclusion_hash(leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes], root_: bytes) -> None:
    """Like `verify_inclusion` but for a leaf hash already computed."""
    if root_from_inclusion_proof(leaf_hash_, index, size, proof) != root_:
        raise ProofError("inclusion proof does not lead to the root")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_: bytes) -> None:
    """Check that `leaf` (raw data) is leaf `index` of the tree of `size` with `root_`.

    Raises ProofError on any mismatch or malformed argument.
    """
    if not isinstance(leaf, bytes):
        raise ProofError("leaf must be bytes")
    verify_inclusion_hash(leaf_hash(leaf), index, size, proof, root_)


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Check that the tree (`new_size`, `new_root`) extends (`old_size`, `old_root`).

    RFC 9162 §2.1.4.2. Raises ProofError on any mismatch or malformed argument.
    """
    old_size = _check_size(old_size, "old size")
    new_size = _check_size(new_size, "new size")
    path = _check_proof(proof)
    if not isinstance(old_root, bytes) or not isinstance(new_root, bytes):
        raise ProofError("roots must be bytes")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old_size > new_size:
        raise ProofError("old size %d exceeds new size %d" % (old_size, new_size))
    if old_size == new_size:
        if path:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    if len(old_root) != HASH_BYTES or len(new_root) != HASH_BYTES:
        raise ProofError("roots must be %d bytes" % HASH_BYTES)
    if not path:
        raise ProofError("empty consistency proof for different sizes")
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path = [old_root] + path
    fn, sn = old_size - 1, new_size - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for sibling in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof has too many hashes")
        if fn % 2 == 1 or fn == sn:
            fr = node_hash(sibling, fr)
            sr = node_hash(sibling, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has too few hashes")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
