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

Speed (scripts/bench_state.py; roots, node bytes and proof bytes unchanged):
- an LRU of decoded internal nodes with their binary-subtree hashes; nodes a
  version replaces are dropped from it when that version is written, so it
  holds the live tree rather than a window of dead nodes. Sized (default
  DEFAULT_CACHE_NODES) to hold every internal node of ~1M keys, updates read
  only leaves from the store;
- internal hashes via a copy of a SHA-256 state that has absorbed the
  prefix (no byte concatenation); a changed slot re-hashes only its 4
  ancestors; one reused msgpack Packer;
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
# Decoded internal nodes kept in memory (LRU). 1M random keys have ~330k
# internal nodes; measured ~1.7 KB each decoded with their binary-subtree
# hashes, so the default holds the whole internal tree of ~1M keys in ~700 MB.
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


class _Node:
    """A decoded internal node plus its binary subtree in heap layout.

    Index 1 is the node hash, slot s sits at 16 + s, entry i has children 2i
    and 2i+1. Kept with the cached node so re-hashing after a change only
    recomputes the 4 ancestors of each changed slot.
    """

    __slots__ = ("children", "hashes", "kinds")

    def __init__(self, children: tuple[Child | None, ...]) -> None:
        # Tuples and bytes: once the collector has seen them they are
        # untracked, so a large cache does not slow every full collection.
        self.children = children
        self.hashes: tuple[bytes, ...] = ()
        self.kinds: bytes = b""


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
_ALL_INDEXES = tuple(range(15, 0, -1))
_BY_KEY_HASH = operator.attrgetter("kh")


def _rehash(node: _Node, params: TreeParams, changed: list[int] | None = None) -> int:
    """Fill node.hashes/kinds (all of them, or the ancestors of `changed` slots).

    Collapse rule: a range holding exactly one leaf hashes to that leaf; an
    empty range to the placeholder; a lone *internal* child is hashed with
    placeholders. Returns the number of SHA-256 calls.
    """
    children = node.children
    placeholder = params.placeholder
    if changed is None or not node.hashes:
        hashes = [placeholder] * 32
        kinds = bytearray(32)
        slot = 16
        for child in children:
            if child is not None:
                hashes[slot] = child[1]
                kinds[slot] = _LEAF if child[2] == 1 else _OTHER
            slot += 1
        todo: Any = _ALL_INDEXES
    else:
        hashes = list(node.hashes)
        kinds = bytearray(node.kinds)
        for slot in changed:
            child = children[slot]
            if child is None:
                hashes[16 + slot] = placeholder
                kinds[16 + slot] = _EMPTY
            else:
                hashes[16 + slot] = child[1]
                kinds[16 + slot] = _LEAF if child[2] == 1 else _OTHER
        # Ancestors level by level (bottom-up); within a level order is free.
        if len(changed) == 1:
            index = (16 + changed[0]) >> 1
            todo = (index, index >> 1, index >> 2, 1)
        else:
            level3 = {(16 + slot) >> 1 for slot in changed}
            level2 = {index >> 1 for index in level3}
            level1 = {index >> 1 for index in level2}
            todo = [*level3, *level2, *level1, 1]
    copy = _prefixed(params.internal_prefix)
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
    node.hashes = tuple(hashes)
    node.kinds = bytes(kinds)
    return calls


def _nibble(key_hash: bytes, depth: int) -> int:
    byte = key_hash[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


_HIGH_NIBBLE = tuple(bytes((byte & 0xF0,)) for byte in range(256))


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
_EMPTY_KINDS = bytes(32)


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

    __slots__ = ("leaf", "old_key", "old_depth", "changed")

    def __init__(self, leaf: Leaf, old_key: bytes | None, old_depth: int, changed: bool) -> None:
        self.leaf = leaf
        self.old_key = old_key  # node key it is stored under now (None: new)
        self.old_depth = old_depth
        self.changed = changed


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


class _Pass:
    """The batch being built for one version."""

    __slots__ = ("version", "batch", "puts", "written", "replaced", "node_prefix", "hashes")

    def __init__(self, version: int, ns: bytes) -> None:
        self.version = version
        self.batch = WriteBatch()
        self.puts = self.batch.puts  # our keys are bytes by construction
        self.written: dict[bytes, Any] = {}
        self.replaced: list[bytes] = []  # node keys this version makes stale
        self.node_prefix = ns + b"N"
        self.hashes = 0

    def stale(self, node_key: bytes) -> None:
        self.replaced.append(node_key)

    def put_node(self, node_key: bytes, encoded: bytes, decoded: Any) -> None:
        self.puts[self.node_prefix + node_key] = encoded
        if decoded is not None:
            self.written[node_key] = decoded


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
        objects to the oldest GC generation without scanning them. The new
        cached nodes are otherwise scanned by the young collections (with the
        32 hashes and 16 children each refers to), ~20% of an update in
        measurements. It is process-wide: garbage cycles of other code that
        exist at that moment wait for the next full collection, so enable it
        in a process whose main job is applying blocks, not by default.
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
        self._empty_hashes = (params.placeholder,) * 32
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
            entry = self._load_internal(node_key).children[_nibble(kh, depth)]
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
            if not node.hashes:
                _rehash(node, self._params)
            hashes, kinds = node.hashes, node.kinds
            nibble = _nibble(kh, depth)
            entry = None
            index = 1
            for level in (3, 2, 1, 0):
                index = (index << 1) | (nibble >> level & 1)
                sibling = hashes[index ^ 1]
                siblings.append(b"" if sibling == placeholder else sibling)
                kind = kinds[index]
                if kind == _EMPTY:
                    break
                if kind == _LEAF:
                    low = (index << level) - 16
                    slot = next(s for s in range(low, low + (1 << level)) if node.children[s])
                    entry = node.children[slot]
                    return self._leaf_proof(entry, kh, depth + 1, slot, siblings)
                if level == 0:
                    entry = node.children[nibble]
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
        # The update allocates ~100 short-lived objects per write and creates
        # no reference cycles; pausing the cyclic collector meanwhile halves
        # the cost (full collections would re-walk the node cache each time).
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
            result = self._update_empty(0, items)
        elif entry[2] == 1:
            node_key = _node_key(entry[0], b"", 0)
            result = self._update_leaf(0, node_key, self._load_leaf(node_key), items)
        else:
            result = self._update_internal(0, entry, items)
        if isinstance(result, _LeafOut):
            return self._place_leaf(result, 0, entry)
        return result

    def _place_leaf(self, out: _LeafOut, depth: int, previous: Child | None) -> Child:
        """Store a collapsed leaf at `depth` unless it is already there unchanged."""
        run = self._run
        kh, vh = out.leaf[0], out.leaf[1]
        if not out.changed and out.old_depth == depth and previous is not None:
            return previous
        if out.old_key is not None:
            run.stale(out.old_key)
        node_key = _node_key(run.version, kh, depth)
        run.puts[run.node_prefix + node_key] = _pack(list(out.leaf))
        run.hashes += 1
        state = self._leaf_state()
        state.update(kh)
        state.update(vh)
        return (run.version, state.digest(), 1)

    def _update_empty(self, depth: int, items: list[_Item]) -> _LeafOut | Child | None:
        """Place `items` into an empty subtree (deletes of absent keys vanish)."""
        if len(items) == 1:
            item = items[0]
            if item.value is None:
                return None
            leaf = (item.kh, item.vh, item.key, item.value)
            return _LeafOut(leaf, item.old_key, item.old_depth, item.old_key is None)  # type: ignore[arg-type]
        puts = [item for item in items if item.value is not None]
        if not puts:
            return None
        if len(puts) == 1:
            item = puts[0]
            leaf = (item.kh, item.vh, item.key, item.value)
            return _LeafOut(leaf, item.old_key, item.old_depth, item.old_key is None)  # type: ignore[arg-type]
        return self._build(depth, None, None, puts)

    def _update_leaf(self, depth: int, node_key: bytes, leaf: Leaf, items: list[_Item]) -> _LeafOut | Child | None:
        """Merge `items` with the one existing leaf of this subtree."""
        keep = True
        rest = []
        for item in items:
            if item.kh != leaf[0]:
                rest.append(item)
            elif item.value is None:
                keep = False
                self._run.stale(node_key)
            elif item.vh != leaf[1]:
                keep = False
                self._run.stale(node_key)
                rest.append(item)
        if keep:
            rest.append(_Item(leaf[0], leaf[2], leaf[3], leaf[1], node_key, depth))
            rest.sort(key=_BY_KEY_HASH)
        return self._update_empty(depth, rest)

    def _update_internal(self, depth: int, entry: Child, items: list[_Item]) -> _LeafOut | Child | None:
        node_key = _node_key(entry[0], items[0].kh, depth)
        return self._build(depth, entry, self._load_internal(node_key), items)

    def _build(
        self, depth: int, entry: Child | None, old: _Node | None, items: list[_Item]
    ) -> _LeafOut | Child | None:
        """Apply `items` below an internal node (`old`, stored as `entry`) at `depth`."""
        run = self._run
        children: tuple[Child | None, ...] = _NO_CHILDREN if old is None else old.children
        half = depth >> 1
        shift = 0 if depth & 1 else 4
        below = depth + 1
        results: list[tuple[int, Any]] = []  # (nibble, result), ascending nibbles
        total = len(items)
        start = 0
        while start < total:
            nibble = items[start].kh[half] >> shift & 15
            end = start + 1
            while end < total and items[end].kh[half] >> shift & 15 == nibble:
                end += 1
            group = items[start:end]
            start = end
            child = children[nibble]
            if child is None:
                result = self._update_empty(below, group)
            elif child[2] == 1:
                child_key = _node_key(child[0], group[0].kh, below)
                result = self._update_leaf(below, child_key, self._load_leaf(child_key), group)
            else:
                child_key = _node_key(child[0], group[0].kh, below)
                result = self._build(below, child, self._load_internal(child_key), group)
            results.append((nibble, result))
        new_children: list[Any] = list(children)
        for nibble, result in results:
            new_children[nibble] = result
        first = items[0].kh
        path = first[:half] + _HIGH_NIBBLE[first[half]] if depth & 1 else first[:half]
        old_key = None if entry is None else _NODE_KEY_HEAD.pack(entry[0], depth) + path
        live = 16 - new_children.count(None)
        if live <= 1:
            only_slot = next((i for i in range(16) if new_children[i] is not None), -1)
            only = new_children[only_slot] if live else None
            if only is None or not (type(only) is tuple and only[2] != 1):
                # Collapse: this node disappears; a lone leaf moves up to the parent.
                if old_key is not None:
                    run.stale(old_key)
                if only is None:
                    return None
                if type(only) is _LeafOut:
                    return only
                slot_key = _node_key(only[0], _with_nibble(first, depth, only_slot), below)
                return _LeafOut(self._load_leaf(slot_key), slot_key, below, False)
        changed = []
        for nibble, result in results:
            if type(result) is _LeafOut:
                result = self._place_leaf(result, below, children[nibble])
                new_children[nibble] = result
            if result != children[nibble]:
                changed.append(nibble)
        if old is not None and not changed:
            return entry
        if old_key is not None:
            run.stale(old_key)
        node = _Node(tuple(new_children))
        if old is not None and old.hashes:
            node.hashes, node.kinds = old.hashes, old.kinds
            run.hashes += _rehash(node, self._params, changed)
        elif old is None:
            # A new node: start from the all-empty subtree and hash only the
            # paths of the slots that are filled (usually two leaves).
            node.hashes, node.kinds = self._empty_hashes, _EMPTY_KINDS
            run.hashes += _rehash(node, self._params, changed)
        else:
            run.hashes += _rehash(node, self._params)
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
        node_key = _NODE_KEY_HEAD.pack(run.version, depth) + path
        run.put_node(node_key, _encode_internal(new_children), node)
        return (run.version, node.hashes[1], count)

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
            for node_key, node in run.written.items():
                self._remember(node_key, node)
        self._pending = None

    def _remember(self, node_key: bytes, node: Any) -> None:
        cache = self._cache
        cache[node_key] = node
        if len(cache) > self._cache_nodes:
            cache.popitem(last=False)

    def _load_internal(self, node_key: bytes) -> _Node:
        node = self._cache.get(node_key)
        if node is not None:
            self._cache.move_to_end(node_key)
            return node  # type: ignore[no-any-return]
        self.node_reads += 1
        data = self._kv.get(self._ns + b"N" + node_key)
        if data is None:
            raise StorageError("missing state node %s" % node_key.hex())
        node = _Node(tuple(_decode_internal(data)))
        self._remember(node_key, node)
        return node

    def _load_leaf(self, node_key: bytes) -> Leaf:
        self.leaf_reads += 1
        data = self._kv.get(self._ns + b"N" + node_key)
        if data is None:
            raise StorageError("missing state leaf %s" % node_key.hex())
        return _decode_leaf(data)


def _with_nibble(key_hash: bytes, depth: int, nibble: int) -> bytes:
    """`key_hash` with nibble `depth` replaced: a path into sibling slot `nibble`."""
    raw = bytearray(key_hash)
    half = depth >> 1
    if depth & 1:
        raw[half] = (raw[half] & 0xF0) | nibble
    else:
        raw[half] = (raw[half] & 0x0F) | (nibble << 4)
    return bytes(raw)

