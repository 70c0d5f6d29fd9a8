"""The node cache is invisible: stored bytes, roots and proofs do not depend on it.

The cache keeps each internal node as one bytes object (binary-subtree hashes,
the key hashes of its leaf children, the stored encoding; ledger/state.py
`Node`), and writes to known leaves skip reading them. These tests pin the
stored bytes to those of the first implementation and check what the cache
holds against the store.
"""

import hashlib

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import state as state_module
from ledger.kv import MemoryStore
from ledger.state import FUEL_PARAMS, StateTree

# Root and SHA-256 of every stored (key, value) after `_golden_workload`,
# computed with the implementation before the packed node cache (commit
# 87a084c): the on-disk format did not change.
GOLDEN_ROOT = "ba13937ec5c2204a13de691f8beadc4097868b3ee149705e48533f6cc458f60f"
GOLDEN_STORE = "507fb71044437bb364bd77df3dd310a9dabcf06b633402d90955a1d0f5ad6353"


def _store_digest(store):
    digest = hashlib.sha256()
    for key, value in store.iterate_prefix(b""):
        digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return digest.hexdigest()


def _golden_workload(cache_nodes):
    """60 blocks over 4,000 keys: inserts, updates, deletes, then a prune."""
    store = MemoryStore()
    tree = StateTree(store, cache_nodes=cache_nodes)
    x = 12345
    for version in range(1, 61):
        writes = {}
        for _ in range(300 if version <= 10 else 120):
            x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
            key = b"acct/%d" % ((x >> 40) % 4000)
            writes[key] = None if (x >> 20) % 7 == 0 else b"v%d" % ((x >> 8) % 1000)
        tree.apply(version, writes)
    tree.prune(50)
    return tree, store


def test_stored_bytes_equal_those_of_the_first_implementation_whatever_the_cache_size():
    for cache_nodes in (400_000, 50, 0):
        tree, store = _golden_workload(cache_nodes)
        assert tree.root(60).hex() == GOLDEN_ROOT
        assert _store_digest(store) == GOLDEN_STORE


def _check_cached_nodes(tree, store):
    """Every cached node: its encoding is the stored one, its subtree hashes
    are those of a node rebuilt from the store, and each leaf key hash it
    knows is the key hash of the leaf stored in that slot."""
    params = tree.params
    for node_key, node in tree._cache.items():
        stored = store.get(b"N" + node_key)
        start = state_module._encoded_start(node)
        assert node[start:] == stored
        rebuilt, _ = state_module._node_of(stored, state_module._decode_internal(stored), params)
        assert node[: state_module._INNER] == rebuilt[: state_module._INNER]
        flat = msgpack.unpackb(stored)
        version, depth = node_key[:8], node_key[8]
        at = state_module._INNER
        j = 1
        for slot in range(16):
            if not flat[0] >> slot & 1:
                continue
            child_version, _, count = flat[j], flat[j + 1], flat[j + 2]
            j += 3
            if count != 1:
                continue
            known = node[at : at + 32]
            at += 32
            if known == bytes(32):
                continue
            path = state_module._child_path(known, depth, slot)
            leaf = msgpack.unpackb(store.get(b"N" + child_version.to_bytes(8, "big") + bytes([depth + 1]) + path))
            assert leaf[0] == known, (version, slot)
        assert at == start


histories = st.lists(
    st.dictionaries(st.binary(min_size=0, max_size=2), st.none() | st.binary(max_size=4), max_size=30),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(history=histories)
def test_a_cached_tree_stores_the_same_bytes_as_an_uncached_one(history):
    cached_store, plain_store = MemoryStore(), MemoryStore()
    cached, plain = StateTree(cached_store), StateTree(plain_store, cache_nodes=0)
    for version, writes in enumerate(history, start=1):
        assert cached.apply(version, writes) == plain.apply(version, writes)
        _check_cached_nodes(cached, cached_store)
    assert _store_digest(cached_store) == _store_digest(plain_store)


def test_a_reopened_tree_learns_leaf_key_hashes_and_stores_the_same_bytes():
    # Nodes read back from the store do not know their leaves' key hashes:
    # the first write to such a leaf reads it, later ones do not.
    keys = [b"k%d" % i for i in range(400)]
    store = MemoryStore()
    StateTree(store).apply(1, {key: b"a" for key in keys})
    twin = MemoryStore()
    StateTree(twin).apply(1, {key: b"a" for key in keys})
    reopened, warm = StateTree(store), StateTree(twin, cache_nodes=0)
    for version in range(2, 6):
        writes = {key: b"v%d" % version for key in keys[version::3]}
        writes[keys[version]] = None
        assert reopened.apply(version, writes) == warm.apply(version, writes)
        _check_cached_nodes(reopened, store)
    assert _store_digest(store) == _store_digest(twin)
    reads = reopened.leaf_reads
    reopened.apply(6, {key: b"w" for key in keys[8::3]})  # written in version 2, never deleted
    assert reopened.leaf_reads == reads  # every one of these leaves is known now


def test_fuel_keys_of_zero_bytes_are_not_mistaken_for_unknown_leaves():
    zero, one = bytes(32), bytes(31) + b"\x01"
    store, twin = MemoryStore(), MemoryStore()
    tree, plain = StateTree(store, FUEL_PARAMS), StateTree(twin, FUEL_PARAMS, cache_nodes=0)
    for version, writes in enumerate([{zero: b"a", one: b"b"}, {zero: b"c"}, {zero: None}, {one: None}], start=1):
        assert tree.apply(version, writes) == plain.apply(version, writes)
    assert _store_digest(store) == _store_digest(twin)
