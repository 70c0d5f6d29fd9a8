"""The authenticated state: a Jellyfish Merkle Tree (JMT), versioned by height.

Why this shape (reference/PROOFS.md §1.2, §1.9):
- Logically a binary sparse Merkle tree over 256-bit key hashes where an
  empty subtree hashes to a placeholder and a subtree holding one leaf *is*
  that leaf. The root therefore depends only on the contents (history
  independence), which is what the vectors and the property tests check.
  With `JMT_PARAMS` roots equal Penumbra `jmt` (SHA-256); with `FUEL_PARAMS`
  they equal the Fuel sparse Merkle tree.
- Physically 16-ary: an internal node covers 4 binary levels, so an update
  touches ~1/4 as many stored nodes. Node key = version u64 BE ‖ nibble
  count ‖ packed nibbles; nodes are immutable, which makes caching safe.
- One version per block, built bottom-up from the sorted write set; every
  replaced node gets a stale-index entry so `prune` never walks the tree.

Storage layout (under an optional namespace prefix):
  N ‖ node_key            -> internal [exist_bitmap, (version, hash, leaf_count)*]
                             or leaf [key_hash, value_hash, key, value]
  S ‖ u64 stale_since     -> [node_key, ...]  (nodes not in the tree from
                             stale_since on; one record per version. Entries
                             S ‖ u64 ‖ node_key -> b"" of the older per-node
                             layout are still pruned.)
  R ‖ u64 version         -> root entry [version, hash, leaf_count] or nil
  K ‖ key                 -> latest value (one get for execution reads)
  M latest / M pruned     -> u64 latest version / oldest retained version

Speed (scripts/bench_state.py; roots, node bytes and proof bytes unchanged,
tests/ledger/test_state_cache.py pins the stored bytes):
- an LRU of internal nodes, each ONE bytes object (`Node`: binary-subtree
  hashes, its leaves' key hashes, the stored encoding), so the cyclic
  collector never scans the cache; nodes a version replaces are dropped
  from it when that version is written, so it holds the live tree rather
  than a window of dead nodes. Sized (default DEFAULT_CACHE_NODES) to hold
  every internal node of ~1M keys: updates read no internal node, and a
  write to an existing key whose parent is cached reads no leaf either;
- one write below a node (most nodes under the top levels of a block) edits
  the decoded node in place and re-hashes only the slot's 4 ancestors; a
  write into another key's leaf slot builds the new two-leaf node directly;
- internal hashes via a copy of a SHA-256 state that has absorbed the
  prefix (no byte concatenation); one reused msgpack Packer;
- `from_bytes` decodes with msgpack, checks the structure and compares the
  proof's own canonical encoding with the input instead of codec's generic
  re-encoding walk; `verify` folds siblings over a precomputed bit string.
"""

from __future__ import annotations

import gc
import hashlib
import operator
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack

from ledger import codec
from ledger.errors import ProofError, StorageError, ValidationError
from ledger.kv import KeyValueStore, WriteBatch

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 256 * 1024
MAX_VERSION = 2**64 - 1
MAX_SIBLINGS = 256
# Largest canonical proof: 256 siblings of 34 B plus a leaf is under 9 KiB.
MAX_PROOF_BYTES = 16 * 1024
HASH_BYTES = 32
# Internal nodes kept in memory (LRU). 1M random keys have ~330-360k internal
# nodes. A cached `Node` is 512 B of subtree hashes + 32 B per leaf child +
# its encoding (~0.1-0.65 KB): at most ~1.9 KB, measured ~0.8 KB on average
# with its key, so the default holds the whole internal tree of ~1M keys in
# ~0.3 GB (bounded by ~0.8 GB whatever the shape).
DEFAULT_CACHE_NODES = 400_000

_U64 = struct.Struct(">Q")
_NODE_KEY_HEAD = struct.Struct(">QB")
_sha256 = hashlib.sha256

# Kinds of a binary subtree inside a 16-slot node (see `_rehash`).
_EMPTY, _LEAF, _OTHER = 0, 1, 2


@dataclass(frozen=True)
class TreeParams:
    """The hashing constants; one code path serves JMT and Fuel.

    hash_keys: keys are SHA-256'd into 32-byte key hashes (JMT) or must
    already be 32 bytes and are used as given (Fuel).
    """

    leaf_prefix: bytes
    internal_prefix: bytes
    placeholder: bytes
    hash_keys: bool


JMT_PARAMS = TreeParams(
    b"JMT::LeafNode", b"JMT::IntrnalNode", b"SPARSE_MERKLE_PLACEHOLDER_HASH__", True
)
FUEL_PARAMS = TreeParams(b"\x00", b"\x01", bytes(HASH_BYTES), False)
EMPTY_ROOT = JMT_PARAMS.placeholder

Child = tuple[int, bytes, int]  # (version, hash, leaf_count); leaf_count == 1 is a leaf
Leaf = tuple[bytes, bytes, bytes, bytes]  # (key_hash, value_hash, key, value)


# --------------------------------------------------------------------------- hashing


def key_hash_of(key: bytes, params: TreeParams = JMT_PARAMS) -> bytes:
    """The 256-bit path of `key`. Raises ValidationError on a bad key."""
    if type(key) is not bytes:
        raise ValidationError("state keys must be bytes, got %s" % type(key).__name__)
    if len(key) > MAX_KEY_BYTES:
        raise ValidationError("state key is %d bytes, limit %d" % (len(key), MAX_KEY_BYTES))
    if params.hash_keys:
        return _sha256(key).digest()
    if len(key) != HASH_BYTES:
        raise ValidationError("keys must be 32-byte hashes with these parameters")
    return key


def leaf_hash(params: TreeParams, key_hash: bytes, value_hash: bytes) -> bytes:
    return _sha256(params.leaf_prefix + key_hash + value_hash).digest()


def _prefixed(prefix: bytes) -> Any:
    """`copy` of a SHA-256 state that has absorbed `prefix` (cheaper than
    hashing `prefix + left + right`: no concatenations, prefix absorbed once)."""
    copy = _PREFIXED.get(prefix)
    if copy is None:
        if len(_PREFIXED) > 64:
            _PREFIXED.clear()
        copy = _PREFIXED[prefix] = _sha256(prefix).copy
    return copy


_PREFIXED: dict[bytes, Any] = {}
_ALL_ENTRIES = tuple(range(15, 0, -1))
_BY_KEY_HASH = operator.attrgetter("kh")


# An internal node as cached: ONE bytes object,
#   kinds of entries 0..31 (32 B) ‖ hashes of entries 1..15 (32 B each; the
#     slot hashes, entries 16..31, are in the encoding)
#   ‖ the key hash of each leaf child, in slot order (32 B each; zeros when
#     not known, e.g. for a node read back from the store)
#   ‖ the stored encoding (`_encode_internal`, the bytes on disk).
# The binary subtree is in heap layout: entry 1 is the node hash, slot s is
# entry 16 + s, entry i has children 2i and 2i+1; kinds[i] says whether entry
# i is empty, one leaf or more (the collapse rule needs it). Keeping the
# subtree means a change re-hashes only the 4 ancestors of a slot; keeping
# the encoding means a change re-packs the node without a 16-slot walk;
# knowing the leaves' key hashes means a write to an existing key replaces
# its leaf without reading it from the store.
# A bytes object is invisible to the cyclic collector: the tuples of children
# and hashes this replaced cost ~60 collector visits per new node in young
# collections (~20 % of an update at 1M keys) and ~1.6x the memory.
Node = bytes
_INNER = 512  # kinds + 15 entry hashes; the leaf key hashes start here
_LEAF_BYTE = bytes((1,))  # == bytes((_LEAF,)): counts leaf slots in the kinds
_UNKNOWN = bytes(32)  # a leaf key hash not known


def _encoded_start(node: bytes) -> int:
    """Where the stored encoding starts in a cached node (after the leaf key hashes)."""
    return _INNER + (node.count(_LEAF_BYTE, 16, 32) << 5)


def _subtree(children: Any, placeholder: bytes) -> tuple[list[Any], bytearray]:
    """Entry hashes (slots 16..31 filled from `children`, the rest
    placeholders) and kinds (slots set, the rest empty)."""
    hashes = [placeholder] * 32
    kinds = bytearray(32)
    slot = 16
    for child in children:
        if child is not None:
            hashes[slot] = child[1]
            kinds[slot] = _LEAF if child[2] == 1 else _OTHER
        slot += 1
    return hashes, kinds


def _combine(hashes: list[Any], kinds: bytearray, todo: Any, copy: Any) -> int:
    """Recompute entries `todo` (bottom-up) from their two children; returns
    the SHA-256 calls. Collapse rule: a range holding exactly one leaf hashes
    to that leaf; an empty range to the placeholder; a lone *internal* child
    is hashed with placeholders."""
    calls = 0
    for index in todo:
        left = index << 1
        left_kind = kinds[left]
        right_kind = kinds[left + 1]
        if right_kind == _EMPTY and left_kind != _OTHER:
            hashes[index] = hashes[left]
            kinds[index] = left_kind
        elif left_kind == _EMPTY and right_kind == _LEAF:
            hashes[index] = hashes[left + 1]
            kinds[index] = _LEAF
        else:
            state = copy()
            state.update(hashes[left])
            state.update(hashes[left + 1])
            hashes[index] = state.digest()
            kinds[index] = _OTHER
            calls += 1
    return calls


def _node_of(encoded: bytes, children: Any, params: TreeParams) -> tuple[Node, int]:
    """The cached form of the node stored as `encoded` (16 `children`), its
    subtree hashed from scratch; and the SHA-256 calls."""
    hashes, kinds = _subtree(children, params.placeholder)
    calls = _combine(hashes, kinds, _ALL_ENTRIES, _prefixed(params.internal_prefix))
    return bytes(kinds) + b"".join(hashes[1:16]) + _UNKNOWN * kinds.count(_LEAF_BYTE, 16) + encoded, calls


def _rehash(old: bytes, children: Any, changed: list[int], params: TreeParams) -> tuple[bytes, int]:
    """Kinds + entry hashes (the first _INNER bytes of a Node) after the
    `changed` slots of the node whose are `old` took the values in
    `children`; and the SHA-256 calls."""
    hashes, kinds = _subtree(children, params.placeholder)
    kinds[:16] = old[:16]
    for index in range(1, 16):
        hashes[index] = old[index << 5 : (index + 1) << 5]
    # Ancestors level by level (bottom-up); within a level order is free.
    level3 = {(16 + slot) >> 1 for slot in changed}
    level2 = {index >> 1 for index in level3}
    level1 = {index >> 1 for index in level2}
    calls = _combine(hashes, kinds, [*level3, *level2, *level1, 1], _prefixed(params.internal_prefix))
    return bytes(kinds) + b"".join(hashes[1:16]), calls


def _rehash_slot(
    old: bytes, slot: int, child: Child | None, sibling: bytes, sibling_kind: int, params: TreeParams
) -> tuple[bytes, int]:
    """`_rehash` for one changed slot, given the hash and kind of the slot
    next to it: walks its 4 ancestors and reads their siblings from `old`."""
    inner = bytearray(old[:_INNER])
    index = 16 + slot
    if child is None:
        current, kind = params.placeholder, _EMPTY
    else:
        current, kind = child[1], (_LEAF if child[2] == 1 else _OTHER)
    inner[index] = kind
    copy = _prefixed(params.internal_prefix)
    calls = 0
    while True:
        if index & 1:
            left, left_kind, right, right_kind = sibling, sibling_kind, current, kind
        else:
            left, left_kind, right, right_kind = current, kind, sibling, sibling_kind
        index >>= 1
        if right_kind == _EMPTY and left_kind != _OTHER:
            current, kind = left, left_kind
        elif left_kind == _EMPTY and right_kind == _LEAF:
            current, kind = right, _LEAF
        else:
            state = copy()
            state.update(left)
            state.update(right)
            current, kind = state.digest(), _OTHER
            calls += 1
        offset = index << 5
        inner[offset : offset + 32] = current
        inner[index] = kind
        if index == 1:
            return bytes(inner), calls
        other = index ^ 1
        offset = other << 5
        sibling, sibling_kind = inner[offset : offset + 32], inner[other]


def _children_of(flat: list[Any]) -> list[Child | None]:
    """The 16 slots of a decoded node [bitmap, version, hash, leaf_count, ...]."""
    children: list[Child | None] = [None] * 16
    bitmap = flat[0]
    j = 1
    for slot in range(16):
        if bitmap >> slot & 1:
            children[slot] = (flat[j], flat[j + 1], flat[j + 2])
            j += 3
    return children


def _child_at(node: Node, slot: int) -> Child | None:
    flat = _unpackb(node[_encoded_start(node) :])
    bitmap = flat[0]
    if not bitmap >> slot & 1:
        return None
    j = 1 + 3 * (bitmap & ((1 << slot) - 1)).bit_count()
    return (flat[j], flat[j + 1], flat[j + 2])


def _nibble(key_hash: bytes, depth: int) -> int:
    byte = key_hash[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


_HIGH_NIBBLE = tuple(bytes((byte & 0xF0,)) for byte in range(256))
_BYTE = tuple(bytes((byte,)) for byte in range(256))


def _node_key(version: int, key_hash: bytes, depth: int) -> bytes:
    """version u64 BE ‖ nibble count ‖ the first `depth` nibbles of key_hash, packed."""
    half = depth >> 1
    if depth & 1:
        return _NODE_KEY_HEAD.pack(version, depth) + key_hash[:half] + _HIGH_NIBBLE[key_hash[half]]
    return _NODE_KEY_HEAD.pack(version, depth) + key_hash[:half]


# --------------------------------------------------------------------------- node codec

# One Packer reused: packb() builds a new one per call. pack() runs entirely
# under the GIL for the plain ints/bytes/lists given here, so sharing is safe.
_pack = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb


def _encode_internal(children: list[Child | None] | tuple[Child | None, ...]) -> bytes:
    bitmap = 0
    bit = 1
    flat: list[Any] = [0]
    for child in children:
        if child is not None:
            bitmap |= bit
            flat += child
        bit <<= 1
    flat[0] = bitmap
    return _pack(flat)


def _decode_internal(data: bytes) -> list[Child | None]:
    """Raises StorageError if `data` is not an internal node we wrote."""
    try:
        flat = _unpackb(data, raw=False)
        bitmap = flat[0]
        if type(bitmap) is not int:
            raise ValueError("bitmap")
        children: list[Child | None] = [None] * 16
        j = 1
        for index in range(16):
            if bitmap >> index & 1:
                children[index] = (flat[j], flat[j + 1], flat[j + 2])
                j += 3
        if j != len(flat):
            raise ValueError("trailing data")
    except Exception as exc:  # corrupt bytes from disk: msgpack raises many types
        raise StorageError("corrupt internal node: %s" % type(exc).__name__) from exc
    return children


def _decode_leaf(data: bytes) -> Leaf:
    """Raises StorageError if `data` is not a leaf node we wrote."""
    try:
        kh, vh, key, value = _unpackb(data, raw=False)
    except Exception as exc:  # corrupt bytes from disk
        raise StorageError("corrupt leaf node: %s" % type(exc).__name__) from exc
    if type(kh) is not bytes or type(vh) is not bytes or type(key) is not bytes or type(value) is not bytes:
        raise StorageError("corrupt leaf node: field types")
    return (kh, vh, key, value)


def _decode_stale(data: bytes) -> list[bytes]:
    """Raises StorageError unless `data` is a stale-index record we wrote."""
    try:
        node_keys = _unpackb(data, raw=False)
    except Exception as exc:  # corrupt bytes from disk
        raise StorageError("corrupt stale index: %s" % type(exc).__name__) from exc
    if type(node_keys) is not list or not all(type(key) is bytes for key in node_keys):
        raise StorageError("corrupt stale index")
    return node_keys


def _decode_root(data: bytes) -> Child | None:
    try:
        entry = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # corrupt bytes from disk
        raise StorageError("corrupt root entry: %s" % type(exc).__name__) from exc
    if entry is None:
        return None
    if not isinstance(entry, list) or len(entry) != 3:
        raise StorageError("corrupt root entry")
    return (entry[0], entry[1], entry[2])


_NO_CHILDREN: tuple[None, ...] = (None,) * 16


# --------------------------------------------------------------------------- proofs


@dataclass(frozen=True)
class StateProof:
    """A (non-)existence proof: the leaf found on the key's path, if any, and
    the sibling hashes from the bottom up; b"" stands for an empty subtree
    (keeps proofs short and independent of the placeholder constant).
    """

    leaf: tuple[bytes, bytes] | None  # (key_hash, value_hash)
    siblings: tuple[bytes, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "leaf": None if self.leaf is None else [self.leaf[0], self.leaf[1]],
            "siblings": list(self.siblings),
        }

    @classmethod
    def from_wire(cls, wire: Any) -> "StateProof":
        """Raises ProofError on any structure other than what to_wire makes.

        Total: whatever `wire` is (mixed key types, odd subclasses), the only
        exception is ProofError.
        """
        if not isinstance(wire, dict) or dict.__len__(wire) != 2:
            raise ProofError("state proof must be a map with leaf and siblings")
        try:
            leaf = dict.get(wire, "leaf", _MISSING)
            siblings = dict.get(wire, "siblings", _MISSING)
        except Exception as exc:  # a key object whose __hash__/__eq__ misbehaves
            raise ProofError("state proof map has unusable keys") from exc
        if leaf is _MISSING or siblings is _MISSING:
            raise ProofError("state proof must be a map with leaf and siblings")
        if type(leaf) is list:
            leaf = tuple(leaf)
        if type(siblings) is list:
            siblings = tuple(siblings)
        _check_fields(leaf, siblings)
        return cls(leaf, siblings)

    def to_bytes(self) -> bytes:
        """The canonical encoding (ledger.codec) of to_wire()."""
        try:
            _check_fields(self.leaf, self.siblings)
        except ProofError:
            return codec.encode(self.to_wire())  # malformed: the generic path and its errors
        return self._pack()

    def _pack(self) -> bytes:
        # Equal to codec.encode(self.to_wire()) for well-formed fields: the
        # canonical map order is "leaf" (0xa4...) before "siblings" (0xa8...),
        # and there are no ints or floats to normalise (tested).
        leaf = self.leaf
        return _pack({"leaf": None if leaf is None else [leaf[0], leaf[1]], "siblings": list(self.siblings)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "StateProof":
        """Raises ProofError on malformed bytes (and only ProofError).

        Accepts exactly the canonical encodings of well-formed proofs, like
        codec.decode + from_wire, without codec's generic re-encoding walk:
        decode, check the structure, re-encode the proof and compare bytes.
        """
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise ProofError("undecodable state proof: expected bytes, got %s" % type(data).__name__)
            data = bytes(data)
        if len(data) > MAX_PROOF_BYTES:
            raise ProofError("state proof is %d bytes, limit %d" % (len(data), MAX_PROOF_BYTES))
        try:
            wire = _unpackb(data, raw=False)
        except Exception as exc:  # msgpack raises many unrelated types on garbage
            raise ProofError("undecodable state proof: %s" % type(exc).__name__) from exc
        proof = cls.from_wire(wire)
        if proof._pack() != data:
            raise ProofError("state proof bytes are not in canonical form")
        return proof


_MISSING = object()


def _common_prefix_bits(a: bytes, b: bytes) -> int:
    diff = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return 256 - diff.bit_length()


def verify(
    root: bytes,
    key: bytes,
    value: bytes | None,
    proof: StateProof,
    params: TreeParams = JMT_PARAMS,
) -> None:
    """Check that `key` maps to `value` (None: is absent) under `root`.

    Total: any malformed argument or mismatch raises ProofError, nothing else.
    """
    if type(root) is not bytes or len(root) != HASH_BYTES:
        raise ProofError("root must be a 32-byte hash")
    if type(key) is not bytes or len(key) > MAX_KEY_BYTES:
        raise ProofError("key must be bytes of at most %d" % MAX_KEY_BYTES)
    if value is not None and type(value) is not bytes:
        raise ProofError("value must be bytes or None")
    if not isinstance(proof, StateProof):
        raise ProofError("proof must be a StateProof")
    _check_fields(proof.leaf, proof.siblings)
    if params.hash_keys:
        key_hash = _sha256(key).digest()
    elif len(key) == HASH_BYTES:
        key_hash = key
    else:
        raise ProofError("key must be a 32-byte hash with these parameters")
    siblings = proof.siblings
    leaf = proof.leaf
    placeholder = params.placeholder
    if placeholder in siblings:
        raise ProofError("placeholder sibling must be encoded as empty")
    if value is not None:
        if leaf is None or leaf[0] != key_hash:
            raise ProofError("proof does not lead to the key's leaf")
        if leaf[1] != _sha256(value).digest():
            raise ProofError("value does not match the proven leaf")
    elif leaf is not None:
        if leaf[0] == key_hash:
            raise ProofError("key is present; absence claimed")
        if _common_prefix_bits(key_hash, leaf[0]) < len(siblings):
            raise ProofError("proof leaf is not in the key's subtree")
    if leaf is None:
        current = placeholder
    else:
        state = _prefixed(params.leaf_prefix)()
        state.update(leaf[0])
        state.update(leaf[1])
        current = state.digest()
    count = len(siblings)
    if count:
        copy = _prefixed(params.internal_prefix)
        # The key's first `count` bits, top first; siblings run bottom-up.
        bits = format(int.from_bytes(key_hash, "big") >> (256 - count), "0%db" % count)
        for sibling, bit in zip(siblings, reversed(bits)):
            state = copy()
            if bit == "1":
                state.update(sibling or placeholder)
                state.update(current)
            else:
                state.update(current)
                state.update(sibling or placeholder)
            current = state.digest()
    if current != root:
        raise ProofError("proof does not match the root")


def _check_fields(leaf: Any, siblings: Any) -> None:
    """Raises ProofError unless leaf is None or two 32-byte hashes and siblings
    is a tuple of at most MAX_SIBLINGS entries, each 32 bytes or empty."""
    if leaf is not None:
        if type(leaf) is not tuple or len(leaf) != 2:
            raise ProofError("proof leaf must be (key_hash, value_hash)")
        for part in leaf:
            if type(part) is not bytes or len(part) != HASH_BYTES:
                raise ProofError("proof leaf hashes must be 32 bytes")
    if type(siblings) is not tuple or len(siblings) > MAX_SIBLINGS:
        raise ProofError("proof siblings must be a sequence of at most %d" % MAX_SIBLINGS)
    for sibling in siblings:
        if type(sibling) is not bytes or len(sibling) not in (0, HASH_BYTES):
            raise ProofError("a sibling must be 32 bytes or empty")


# --------------------------------------------------------------------------- the tree


class _LeafOut:
    """A subtree that collapsed to one leaf; its parent decides where it is stored."""

    __slots__ = ("leaf", "old_key", "old_depth", "changed", "hash")

    def __init__(
        self, leaf: Leaf, old_key: bytes | None, old_depth: int, changed: bool, hash: bytes | None = None
    ) -> None:
        self.leaf = leaf
        self.old_key = old_key  # node key it is stored under now (None: new)
        self.old_depth = old_depth
        self.changed = changed
        self.hash = hash  # the leaf hash, when already computed


class _Item:
    """One write of the block (or an existing leaf being pushed down)."""

    __slots__ = ("kh", "key", "value", "vh", "old_key", "old_depth")

    def __init__(
        self,
        kh: bytes,
        key: bytes,
        value: bytes | None,
        vh: bytes | None,
        old_key: bytes | None = None,
        old_depth: int = -1,
    ) -> None:
        self.kh = kh
        self.key = key
        self.value = value
        self.vh = vh
        self.old_key = old_key
        self.old_depth = old_depth


def _leaf_out(item: _Item) -> _LeafOut:
    """The leaf a put (or a pushed-down existing leaf) becomes; a block's own
    writes (no old node key) are changed leaves."""
    leaf = (item.kh, item.vh, item.key, item.value)
    return _LeafOut(leaf, item.old_key, item.old_depth, item.old_key is None)  # type: ignore[arg-type]


class _Pass:
    """The batch being built for one version."""

    __slots__ = ("version", "batch", "puts", "written", "replaced", "node_prefix", "hashes")

    def __init__(self, version: int, ns: bytes) -> None:
        self.version = version
        self.batch = WriteBatch()
        self.puts = self.batch.puts  # our keys are bytes by construction
        self.written: dict[bytes, Node] = {}  # cached form of the nodes put
        self.replaced: list[bytes] = []  # node keys this version makes stale
        self.node_prefix = ns + b"N"
        self.hashes = 0


class StateTree:
    """A versioned JMT over a KeyValueStore.

    Reads raise ValidationError for a bad key or a version that does not
    exist (never written or pruned) and StorageError for corrupt storage.
    """

    def __init__(
        self,
        kv: KeyValueStore,
        params: TreeParams = JMT_PARAMS,
        namespace: bytes = b"",
        cache_nodes: int = DEFAULT_CACHE_NODES,
        gc_promote: bool = False,
    ) -> None:
        """`cache_nodes` bounds the LRU of decoded internal nodes (0: none).

        `gc_promote` (off by default): after each prepare, move all tracked
        objects to the oldest GC generation without scanning them. Cached
        nodes are bytes objects, which the collector never tracks, so this
        now gains little (it saved ~20% when nodes were tuples of hashes and
        children); kept for callers that set it. It is process-wide: garbage
        cycles of other code that exist at that moment wait for the next full
        collection, so enable it only in a process whose main job is applying
        blocks.
        """
        self._kv = kv
        self._gc_promote = gc_promote
        self._params = params
        self._ns = namespace
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._cache_nodes = cache_nodes
        self._pending: tuple[int, bytes, _Pass] | None = None
        self._run: _Pass = _Pass(0, namespace)
        self._leaf_state = _prefixed(params.leaf_prefix)
        self._empty_inner = bytes(32) + params.placeholder * 15
        self.last_hashes = 0  # SHA-256 calls of the last prepare (benchmarks)
        self.node_reads = 0  # internal nodes read from the store (cache misses)
        self.leaf_reads = 0  # leaves read from the store

    @property
    def params(self) -> TreeParams:
        return self._params

    # ------------------------------------------------------------ versions

    def latest_version(self) -> int | None:
        """The newest committed version, or None before the first."""
        raw = self._kv.get(self._ns + b"Mlatest")
        return None if raw is None else _U64.unpack(raw)[0]

    def oldest_version(self) -> int | None:
        """The oldest version still readable, or None before the first."""
        latest = self.latest_version()
        if latest is None:
            return None
        raw = self._kv.get(self._ns + b"Mpruned")
        if raw is not None:
            return _U64.unpack(raw)[0]
        first = next(self._kv.iterate_prefix(self._ns + b"R"), None)
        return latest if first is None else _U64.unpack(first[0][len(self._ns) + 1 :])[0]

    def _root_entry(self, version: int) -> Child | None:
        if type(version) is not int or not 0 <= version <= MAX_VERSION:
            raise ValidationError("version must be an int in 0..2**64-1")
        pruned = self._kv.get(self._ns + b"Mpruned")
        if pruned is not None and version < _U64.unpack(pruned)[0]:
            raise ValidationError("version %d is pruned" % version)
        raw = self._kv.get(self._ns + b"R" + _U64.pack(version))
        if raw is None:
            raise ValidationError("no state at version %d" % version)
        return _decode_root(raw)

    def root(self, version: int) -> bytes:
        """The root hash at `version`. Raises ValidationError if unknown or pruned."""
        entry = self._root_entry(version)
        return self._params.placeholder if entry is None else entry[1]

    # ------------------------------------------------------------ reads

    def get_latest(self, key: bytes) -> bytes | None:
        """The value at the latest version: one store get, no tree walk."""
        if type(key) is not bytes or len(key) > MAX_KEY_BYTES or (
            not self._params.hash_keys and len(key) != HASH_BYTES
        ):
            key_hash_of(key, self._params)  # raises the ValidationError (no hashing otherwise)
        return self._kv.get(self._ns + b"K" + key)

    def get(self, key: bytes, version: int) -> bytes | None:
        """The value of `key` at `version` (None: absent)."""
        kh = key_hash_of(key, self._params)
        self._settle()
        entry = self._root_entry(version)
        depth = 0
        while entry is not None:
            node_key = _node_key(entry[0], kh, depth)
            if entry[2] == 1:
                leaf = self._load_leaf(node_key)
                return leaf[3] if leaf[0] == kh else None
            entry = _child_at(self._load_internal(node_key), _nibble(kh, depth))
            depth += 1
        return None

    def prove(self, key: bytes, version: int) -> StateProof:
        """A proof for `key` at `version`, of existence or of absence."""
        kh = key_hash_of(key, self._params)
        self._settle()
        entry = self._root_entry(version)
        siblings: list[bytes] = []
        placeholder = self._params.placeholder
        depth = 0
        while entry is not None and entry[2] != 1:
            node = self._load_internal(_node_key(entry[0], kh, depth))
            nibble = _nibble(kh, depth)
            entry = None
            index = 1
            for level in (3, 2, 1, 0):
                index = (index << 1) | (nibble >> level & 1)
                other = index ^ 1
                if node[other] == _EMPTY:
                    sibling = placeholder
                elif level:
                    sibling = node[other << 5 : (other + 1) << 5]
                else:
                    flat = _unpackb(node[_encoded_start(node) :])
                    bitmap = flat[0]
                    sibling = flat[2 + 3 * (bitmap & ((1 << (other - 16)) - 1)).bit_count()]
                siblings.append(b"" if sibling == placeholder else sibling)
                kind = node[index]
                if kind == _EMPTY:
                    break
                if kind == _LEAF:
                    low = (index << level) - 16
                    slot = next(s for s in range(low, low + (1 << level)) if node[16 + s] != _EMPTY)
                    entry = _child_at(node, slot)
                    return self._leaf_proof(entry, kh, depth + 1, slot, siblings)  # type: ignore[arg-type]
                if level == 0:
                    if node[other] == _EMPTY:
                        flat = _unpackb(node[_encoded_start(node) :])
                        bitmap = flat[0]
                    j = 1 + 3 * (bitmap & ((1 << nibble) - 1)).bit_count()
                    entry = (flat[j], flat[j + 1], flat[j + 2])
            depth += 1
        if entry is None:
            return StateProof(None, tuple(reversed(siblings)))
        leaf = self._load_leaf(_node_key(entry[0], kh, depth))
        return StateProof((leaf[0], leaf[1]), tuple(reversed(siblings)))

    def _leaf_proof(
        self, entry: Child, kh: bytes, depth: int, slot: int, siblings: list[bytes]
    ) -> StateProof:
        """Proof ending at the only leaf of a binary range (maybe another key's)."""
        node_key = _node_key(entry[0], _with_nibble(kh, depth - 1, slot), depth)
        leaf = self._load_leaf(node_key)
        return StateProof((leaf[0], leaf[1]), tuple(reversed(siblings)))

    # ------------------------------------------------------------ writes

    def apply(self, version: int, writes: Mapping[bytes, bytes | None]) -> bytes:
        """Commit `writes` as `version` in one atomic batch; return the new root.

        Raises ValidationError (nothing written) on a bad version or write set,
        StorageError if the store fails (nothing written either).
        """
        root, batch = self.prepare(version, writes)
        self._kv.write(batch)
        self._settle()
        return root

    def prepare(self, version: int, writes: Mapping[bytes, bytes | None]) -> tuple[bytes, WriteBatch]:
        """Build the batch for `version` without writing it; return (root, batch).

        The caller adds its own puts (blocks, receipts) and writes the batch.
        Raises ValidationError on a bad version or write set (see apply).
        """
        latest = self.latest_version()
        if type(version) is not int or not 0 <= version <= MAX_VERSION:
            raise ValidationError("version must be an int in 0..2**64-1")
        if latest is not None and version <= latest:
            raise ValidationError("version %d is not after %d" % (version, latest))
        # The update allocates short-lived objects (items, lists, decoded
        # nodes) and creates no reference cycles: collections during it would
        # only re-scan live work, so the cyclic collector is paused meanwhile.
        paused = gc.isenabled()
        gc.disable()
        try:
            items = self._validated_items(writes)
            self._settle()
            return self._prepare(version, latest, items)
        finally:
            if paused:
                if self._gc_promote:
                    # Move every tracked object to the oldest generation
                    # without a scan (see `gc_promote` in __init__).
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()

    def _prepare(self, version: int, latest: int | None, items: list[_Item]) -> tuple[bytes, WriteBatch]:
        run = _Pass(version, self._ns)
        entry = None if latest is None else self._root_entry(latest)
        self._run = run
        run.hashes = sum(1 if item.value is None else 2 for item in items) if self._params.hash_keys else sum(
            0 if item.value is None else 1 for item in items
        )
        new_entry = self._update_root(entry, items)
        ns = self._ns
        # Latest-value index: straight into the batch's dicts (keys and values
        # were validated as bytes; each key occurs once in `items`).
        latest_prefix = ns + b"K"
        puts, deletes = run.puts, run.batch.deletes
        for item in items:
            if item.value is None:
                deletes[latest_prefix + item.key] = None
            else:
                puts[latest_prefix + item.key] = item.value
        if run.replaced:
            # One stale-index record per version (not one per node): ~3 fewer
            # LevelDB entries per write, and prune reads them in order anyway.
            run.replaced = list(dict.fromkeys(run.replaced))
            puts[ns + b"S" + _U64.pack(version)] = _pack(run.replaced)
        root_value = msgpack.packb(None if new_entry is None else list(new_entry), use_bin_type=True)
        run.batch.put(ns + b"R" + _U64.pack(version), root_value)
        run.batch.put(ns + b"Mlatest", _U64.pack(version))
        self._pending = (version, root_value, run)
        self.last_hashes = run.hashes
        return (self._params.placeholder if new_entry is None else new_entry[1]), run.batch

    def _validated_items(self, writes: Mapping[bytes, bytes | None]) -> list[_Item]:
        if not isinstance(writes, Mapping):
            raise ValidationError("writes must be a mapping of key to value or None")
        items = []
        hash_keys = self._params.hash_keys
        for key, value in writes.items():
            if hash_keys and type(key) is bytes and len(key) <= MAX_KEY_BYTES:
                kh = _sha256(key).digest()
            else:
                kh = key_hash_of(key, self._params)
            if value is None:
                items.append(_Item(kh, key, None, None))
                continue
            if type(value) is not bytes:
                raise ValidationError("state values must be bytes or None")
            if len(value) > MAX_VALUE_BYTES:
                raise ValidationError("state value is %d bytes, limit %d" % (len(value), MAX_VALUE_BYTES))
            items.append(_Item(kh, key, value, _sha256(value).digest()))
        items.sort(key=_BY_KEY_HASH)
        return items

    def _update_root(self, entry: Child | None, items: list[_Item]) -> Child | None:
        if not items:
            return entry
        if entry is None:
            result = self._update_empty(0, items, b"")
        elif entry[2] == 1:
            node_key = _NODE_KEY_HEAD.pack(entry[0], 0)
            result = self._update_leaf(0, node_key, self._load_leaf(node_key), items, b"")
        else:
            node_key = _NODE_KEY_HEAD.pack(entry[0], 0)
            result = self._build(0, entry, self._load_internal(node_key), items, b"")
        if type(result) is _LeafOut:
            return self._place_leaf(result, 0, entry, b"")
        return result

    def _place_leaf(self, out: _LeafOut, depth: int, previous: Child | None, path: bytes) -> Child:
        """Store a collapsed leaf at `depth` (nibble path `path`) unless it is
        already there unchanged."""
        run = self._run
        if not out.changed and out.old_depth == depth and previous is not None:
            return previous
        if out.old_key is not None:
            run.replaced.append(out.old_key)
        leaf = out.leaf
        run.puts[run.node_prefix + _NODE_KEY_HEAD.pack(run.version, depth) + path] = _pack(list(leaf))
        if out.hash is not None:
            return (run.version, out.hash, 1)
        run.hashes += 1
        state = self._leaf_state()
        state.update(leaf[0])
        state.update(leaf[1])
        return (run.version, state.digest(), 1)

    def _update_empty(self, depth: int, items: list[_Item], path: bytes) -> _LeafOut | Child | None:
        """Place `items` into an empty subtree (deletes of absent keys vanish)."""
        if len(items) == 1:
            item = items[0]
            if item.value is None:
                return None
            return _leaf_out(item)
        puts = [item for item in items if item.value is not None]
        if not puts:
            return None
        if len(puts) == 1:
            return _leaf_out(puts[0])
        if len(puts) == 2:
            return self._build_pair(depth, puts[0], puts[1], path)
        return self._build(depth, None, None, puts, path)

    def _build_pair(self, depth: int, first: _Item, second: _Item, path: bytes) -> Child:
        """`_build` for a new node holding two puts (`first` sorts before
        `second`): what a write to a slot that holds another key's leaf makes."""
        run = self._run
        params = self._params
        half = depth >> 1
        below = depth + 1
        shift = 0 if depth & 1 else 4
        first_nibble = first.kh[half] >> shift & 15
        second_nibble = second.kh[half] >> shift & 15
        version_head = _NODE_KEY_HEAD.pack
        if first_nibble == second_nibble:
            # Both go to one slot: a node with a lone internal child.
            child = self._build_pair(below, first, second, _child_path(first.kh, depth, first_nibble))
            inner, calls = _rehash_slot(self._empty_inner, first_nibble, child, params.placeholder, _EMPTY, params)
            flat: list[Any] = [1 << first_nibble, *child]
            khs = b""
            count = child[2]
        else:
            first_leaf = self._place_leaf(_leaf_out(first), below, None, _child_path(first.kh, depth, first_nibble))
            second_leaf = self._place_leaf(_leaf_out(second), below, None, _child_path(second.kh, depth, second_nibble))
            # The first leaf alone collapses all the way up (no hashing); the
            # second is then hashed against it where their paths meet.
            inner, calls = _rehash_slot(self._empty_inner, first_nibble, first_leaf, params.placeholder, _EMPTY, params)
            if second_nibble == first_nibble ^ 1:
                sibling, sibling_kind = first_leaf[1], _LEAF
            else:
                sibling, sibling_kind = params.placeholder, _EMPTY
            inner, more = _rehash_slot(inner, second_nibble, second_leaf, sibling, sibling_kind, params)
            calls += more
            flat = [(1 << first_nibble) | (1 << second_nibble), *first_leaf, *second_leaf]
            khs = first.kh + second.kh
            count = 2
        run.hashes += calls
        node_key = version_head(run.version, depth) + path
        encoded = _pack(flat)
        run.puts[run.node_prefix + node_key] = encoded
        run.written[node_key] = inner + khs + encoded
        return (run.version, inner[32:64], count)

    def _update_leaf(
        self, depth: int, node_key: bytes, leaf: Leaf, items: list[_Item], path: bytes
    ) -> _LeafOut | Child | None:
        """Merge `items` with the one existing leaf of this subtree."""
        keep = True
        rest = []
        for item in items:
            if item.kh != leaf[0]:
                rest.append(item)
            elif item.value is None:
                keep = False
                self._run.replaced.append(node_key)
            elif item.vh != leaf[1]:
                keep = False
                self._run.replaced.append(node_key)
                rest.append(item)
        if keep:
            rest.append(_Item(leaf[0], leaf[2], leaf[3], leaf[1], node_key, depth))
            rest.sort(key=_BY_KEY_HASH)
        return self._update_empty(depth, rest, path)

    def _rewrite_leaf(self, child: Child, child_key: bytes, item: _Item) -> _LeafOut | Child | None:
        """`_update_leaf` for a write to the key of leaf `child` (its key hash
        known from the cached parent): what the leaf held does not matter, so
        it is not read. Returns `child` itself if the value is the same."""
        run = self._run
        if item.value is None:
            run.replaced.append(child_key)
            return None
        state = self._leaf_state()
        state.update(item.kh)
        state.update(item.vh)  # type: ignore[arg-type]
        digest = state.digest()
        run.hashes += 1
        if digest == child[1]:
            return child
        run.replaced.append(child_key)
        return _LeafOut((item.kh, item.vh, item.key, item.value), None, -1, True, digest)  # type: ignore[arg-type]

    def _build_one(self, depth: int, entry: Child, old: Node, item: _Item, path: bytes) -> _LeafOut | Child | None:
        """`_build` for the commonest case: one write below an existing node.

        Same results, stale entries and puts as `_build` with `[item]`; it
        edits the decoded node in place, re-hashes one slot's ancestors and,
        when the node knows the key hash of the leaf in the slot, replaces or
        deletes that leaf without reading it (below the top levels of a block
        nearly every node gets exactly one write).
        """
        run = self._run
        start = _INNER + (old.count(_LEAF_BYTE, 16, 32) << 5)  # _encoded_start
        flat = _unpackb(old[start:])
        bitmap = flat[0]
        kh = item.kh
        half = depth >> 1
        below = depth + 1
        if depth & 1:
            nibble = kh[half] & 15
            child_path = kh[: half + 1]
        else:
            nibble = kh[half] >> 4
            child_path = path + _HIGH_NIBBLE[kh[half]]
        bit = 1 << nibble
        j = 1 + 3 * (bitmap & (bit - 1)).bit_count()
        at = 0  # where this slot's leaf key hash is in `old`, once looked up
        child: Child | None
        result: Any
        if bitmap & bit:
            child = (flat[j], flat[j + 1], flat[j + 2])
            child_key = _NODE_KEY_HEAD.pack(child[0], below) + child_path
            if child[2] == 1:
                at = _INNER + (old.count(_LEAF_BYTE, 16, 16 + nibble) << 5)
                if old[at : at + 32] == kh and kh != _UNKNOWN:
                    result = self._rewrite_leaf(child, child_key, item)
                    if result is child:
                        return entry
                else:
                    result = self._update_leaf(below, child_key, self._load_leaf(child_key), [item], child_path)
            else:
                node = self._cache.get(child_key)
                if node is None:
                    node = self._load_internal(child_key)
                result = self._build_one(below, child, node, item, child_path)
                if result is child:
                    return entry
        else:
            if item.value is None:
                return entry  # deleting an absent key changes nothing
            child = None
            result = _leaf_out(item)
        leaf_kh = None
        if result is None or type(result) is _LeafOut:
            if bitmap.bit_count() - (child is not None) + (result is not None) <= 1:
                # Collapse (as in `_build`): with at most one child left this
                # node disappears unless that child is an internal node.
                if result is not None:
                    run.replaced.append(_NODE_KEY_HEAD.pack(entry[0], depth) + path)
                    return result  # type: ignore[no-any-return]
                others = bitmap & ~bit
                if not others:
                    run.replaced.append(_NODE_KEY_HEAD.pack(entry[0], depth) + path)
                    return None
                only_slot = others.bit_length() - 1
                k = 1 + 3 * (bitmap & ((1 << only_slot) - 1)).bit_count()
                if flat[k + 2] == 1:
                    run.replaced.append(_NODE_KEY_HEAD.pack(entry[0], depth) + path)
                    slot_key = _NODE_KEY_HEAD.pack(flat[k], below) + _child_path(kh, depth, only_slot)
                    return _LeafOut(self._load_leaf(slot_key), slot_key, below, False)
            if result is not None:
                leaf_kh = result.leaf[0]
                result = self._place_leaf(result, below, child, child_path)
        if result == child:
            return entry
        run.replaced.append(_NODE_KEY_HEAD.pack(entry[0], depth) + path)
        params = self._params
        sibling_bit = 1 << (nibble ^ 1)
        if bitmap & sibling_bit:
            k = 1 + 3 * (bitmap & (sibling_bit - 1)).bit_count()
            sibling, sibling_kind = flat[k + 1], (_LEAF if flat[k + 2] == 1 else _OTHER)
        else:
            sibling, sibling_kind = params.placeholder, _EMPTY
        if result is None:
            del flat[j : j + 3]
            flat[0] = bitmap ^ bit
            count = entry[2] - child[2]  # type: ignore[index]
        elif child is None:
            flat[j:j] = result
            flat[0] = bitmap | bit
            count = entry[2] + result[2]
        else:
            flat[j : j + 3] = result
            count = entry[2] + result[2] - child[2]
        encoded = _pack(flat)
        inner, calls = _rehash_slot(old, nibble, result, sibling, sibling_kind, params)
        run.hashes += calls
        was_leaf = child is not None and child[2] == 1
        if leaf_kh is not None or was_leaf:
            if not at:
                at = _INNER + (old.count(_LEAF_BYTE, 16, 16 + nibble) << 5)
            khs = old[_INNER:at] + (leaf_kh or b"") + old[at + 32 if was_leaf else at : start]
        else:
            khs = old[_INNER:start]
        node_key = _NODE_KEY_HEAD.pack(run.version, depth) + path
        run.puts[run.node_prefix + node_key] = encoded
        run.written[node_key] = inner + khs + encoded
        return (run.version, inner[32:64], count)

    def _build(
        self, depth: int, entry: Child | None, old: Node | None, items: list[_Item], path: bytes
    ) -> _LeafOut | Child | None:
        """Apply `items` below an internal node (`old`, stored as `entry`) at
        `depth`; `path` is its packed nibble path (first `depth` nibbles)."""
        run = self._run
        children: Any = _NO_CHILDREN if old is None else _children_of(_unpackb(old[_encoded_start(old) :]))
        half = depth >> 1
        below = depth + 1
        if depth & 1:
            # Children's paths end in a full byte: this node's last nibble + theirs.
            shift, child_stem, child_top, child_shift = 0, path[:-1], path[-1], 0
        else:
            shift, child_stem, child_top, child_shift = 4, path, 0, 4
        version_head = _NODE_KEY_HEAD.pack
        cache_get = self._cache.get
        results: list[tuple[int, Any, bytes]] = []  # (nibble, result, child path), ascending nibbles
        total = len(items)
        start = 0
        while start < total:
            nibble = items[start].kh[half] >> shift & 15
            end = start + 1
            while end < total and items[end].kh[half] >> shift & 15 == nibble:
                end += 1
            group = items[start:end] if start or end < total else items
            start_of_group, start = start, end
            child_path = child_stem + _BYTE[child_top | nibble << child_shift]
            child = children[nibble]
            if child is None:
                result = self._update_empty(below, group, child_path)
            elif child[2] == 1:
                child_key = version_head(child[0], below) + child_path
                if end - start_of_group == 1 and old is not None:
                    at = _INNER + (old.count(_LEAF_BYTE, 16, 16 + nibble) << 5)
                    known = old[at : at + 32] == group[0].kh and group[0].kh != _UNKNOWN
                else:
                    known = False
                if known:
                    result = self._rewrite_leaf(child, child_key, group[0])
                else:
                    result = self._update_leaf(below, child_key, self._load_leaf(child_key), group, child_path)
            else:
                child_key = version_head(child[0], below) + child_path
                node = cache_get(child_key)
                if node is None:
                    node = self._load_internal(child_key)
                if end - start_of_group == 1:
                    result = self._build_one(below, child, node, group[0], child_path)
                else:
                    result = self._build(below, child, node, group, child_path)
            results.append((nibble, result, child_path))
        new_children: list[Any] = list(children)
        for nibble, result, _ in results:
            new_children[nibble] = result
        old_key = None if entry is None else version_head(entry[0], depth) + path
        live = 16 - new_children.count(None)
        if live <= 1:
            only_slot = next((i for i in range(16) if new_children[i] is not None), -1)
            only = new_children[only_slot] if live else None
            if only is None or not (type(only) is tuple and only[2] != 1):
                # Collapse: this node disappears; a lone leaf moves up to the parent.
                if old_key is not None:
                    run.replaced.append(old_key)
                if only is None:
                    return None
                if type(only) is _LeafOut:
                    return only
                slot_key = version_head(only[0], below) + child_stem + _BYTE[child_top | only_slot << child_shift]
                return _LeafOut(self._load_leaf(slot_key), slot_key, below, False)
        changed = []
        placed = {}  # slot -> key hash of the leaf placed there
        for nibble, result, child_path in results:
            if type(result) is _LeafOut:
                placed[nibble] = result.leaf[0]
                result = self._place_leaf(result, below, children[nibble], child_path)
                new_children[nibble] = result
            if result != children[nibble]:
                changed.append(nibble)
        if old is None:
            # A new node: start from the all-empty subtree and hash only the
            # paths of the slots that are filled (usually two leaves).
            old = self._empty_inner
        elif not changed:
            return entry
        if old_key is not None:
            run.replaced.append(old_key)
        inner, calls = _rehash(old, new_children, changed, self._params)
        run.hashes += calls
        if entry is None:
            count = 0
            for child in new_children:
                if child is not None:
                    count += child[2]
        else:
            count = entry[2]
            for nibble in changed:
                was = children[nibble]
                now = new_children[nibble]
                count += (0 if now is None else now[2]) - (0 if was is None else was[2])
        # Leaf key hashes in slot order: placed now, else kept from `old`.
        khs = []
        if placed or old[16:32].count(_LEAF_BYTE):
            at = _INNER
            for slot in range(16):
                was_leaf = old[16 + slot] == _LEAF
                now = new_children[slot]
                if now is not None and now[2] == 1:
                    khs.append(placed.get(slot) or old[at : at + 32])
                if was_leaf:
                    at += 32
        node_key = version_head(run.version, depth) + path
        encoded = _encode_internal(new_children)
        run.puts[run.node_prefix + node_key] = encoded
        run.written[node_key] = inner + b"".join(khs) + encoded
        return (run.version, inner[32:64], count)

    # ------------------------------------------------------------ pruning

    def prune(self, oldest_retained_version: int, max_nodes: int = 10_000) -> int:
        """Delete nodes no version >= `oldest_retained_version` uses.

        Bounded: removes at most `max_nodes` stale nodes per call (one atomic
        batch) and returns how many; call again until it returns 0. Raises
        ValidationError if the version is after the latest or before an
        earlier prune.
        """
        latest = self.latest_version()
        if type(oldest_retained_version) is not int or type(max_nodes) is not int or max_nodes < 1:
            raise ValidationError("prune takes an int version and a positive max_nodes")
        if latest is None or not 0 <= oldest_retained_version <= latest:
            raise ValidationError("can only prune up to the latest version")
        ns = self._ns
        raw = self._kv.get(ns + b"Mpruned")
        floor = 0 if raw is None else _U64.unpack(raw)[0]
        if oldest_retained_version < floor:
            raise ValidationError("already pruned up to version %d" % floor)
        batch = WriteBatch()
        batch.put(ns + b"Mpruned", _U64.pack(oldest_retained_version))
        removed = 0
        head = len(ns) + 1
        stop = _U64.pack(oldest_retained_version)
        for index_key, value in self._kv.iterate_prefix(ns + b"S"):
            if index_key[head : head + 8] > stop or removed >= max_nodes:
                break
            if len(index_key) > head + 8:
                node_keys = [index_key[head + 8 :]]  # older layout: one entry per node
            else:
                node_keys = _decode_stale(value)
            take = node_keys[: max_nodes - removed]
            for node_key in take:
                batch.delete(ns + b"N" + node_key)
                self._cache.pop(node_key, None)
            removed += len(take)
            if len(take) < len(node_keys):
                batch.put(index_key, _pack(node_keys[len(take) :]))  # the rest, next call
            else:
                batch.delete(index_key)
        roots = 0
        for root_key, _ in self._kv.iterate_prefix(ns + b"R"):
            if _U64.unpack(root_key[len(ns) + 1 :])[0] >= oldest_retained_version or roots >= max_nodes:
                break
            batch.delete(root_key)
            roots += 1
        self._kv.write(batch)
        return removed

    # ------------------------------------------------------------ node cache

    def _settle(self) -> None:
        """Cache the nodes of the last prepared batch once the store holds it."""
        pending = self._pending
        if pending is None:
            return
        version, root_value, run = pending
        if self._kv.get(self._ns + b"R" + _U64.pack(version)) != root_value:
            latest = self.latest_version()
            if latest is None or latest < version:
                return  # not written yet; keep waiting
        else:
            # Replaced nodes only serve reads of older versions: drop them so
            # the LRU holds the live tree instead of a window of dead nodes.
            cache = self._cache
            for node_key in run.replaced:
                cache.pop(node_key, None)
            # Build order (children before parents): the upper nodes end up
            # most recently used, so they are the last to be evicted.
            cache.update(run.written)
            for _ in range(len(cache) - self._cache_nodes):
                cache.popitem(last=False)
        self._pending = None

    def _remember(self, node_key: bytes, node: Any) -> None:
        cache = self._cache
        cache[node_key] = node
        if len(cache) > self._cache_nodes:
            cache.popitem(last=False)

    def _load_internal(self, node_key: bytes) -> Node:
        node = self._cache.get(node_key)
        if node is not None:
            self._cache.move_to_end(node_key)
            return node  # type: ignore[no-any-return]
        self.node_reads += 1
        data = self._kv.get(self._ns + b"N" + node_key)
        if data is None:
            raise StorageError("missing state node %s" % node_key.hex())
        node, _ = _node_of(data, _decode_internal(data), self._params)
        self._remember(node_key, node)
        return node

    def _load_leaf(self, node_key: bytes) -> Leaf:
        self.leaf_reads += 1
        data = self._kv.get(self._ns + b"N" + node_key)
        if data is None:
            raise StorageError("missing state leaf %s" % node_key.hex())
        return _decode_leaf(data)


def _child_path(key_hash: bytes, depth: int, nibble: int) -> bytes:
    """Packed nibble path of slot `nibble` of the node at `depth` on `key_hash`'s path."""
    half = depth >> 1
    if depth & 1:
        return key_hash[:half] + _BYTE[(key_hash[half] & 0xF0) | nibble]
    return key_hash[:half] + _BYTE[nibble << 4]


def _with_nibble(key_hash: bytes, depth: int, nibble: int) -> bytes:
    """`key_hash` with nibble `depth` replaced: a path into sibling slot `nibble`."""
    raw = bytearray(key_hash)
    half = depth >> 1
    if depth & 1:
        raw[half] = (raw[half] & 0xF0) | nibble
    else:
        raw[half] = (raw[half] & 0x0F) | (nibble << 4)
    return bytes(raw)

