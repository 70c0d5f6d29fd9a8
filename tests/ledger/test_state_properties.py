"""Property tests of the state tree against a recursive reference (PROOFS.md §1.9 item 2)."""

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError, ProofError, StorageError, ValidationError
from ledger.kv import MemoryStore
from ledger.state import (
    EMPTY_ROOT,
    FUEL_PARAMS,
    JMT_PARAMS,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    StateProof,
    StateTree,
    verify,
)
from node.leveldb_store import LevelDBStore


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(params, kv, depth=0):
    """The logical tree, written as plainly as possible: kv maps key_hash -> value."""
    if not kv:
        return params.placeholder
    if len(kv) == 1:
        ((k, v),) = kv.items()
        return H(params.leaf_prefix + k + H(v))
    left = {k: v for k, v in kv.items() if not (k[depth // 8] >> (7 - depth % 8)) & 1}
    right = {k: v for k, v in kv.items() if (k[depth // 8] >> (7 - depth % 8)) & 1}
    return H(
        params.internal_prefix
        + reference_root(params, left, depth + 1)
        + reference_root(params, right, depth + 1)
    )


def jmt_reference(model):
    return reference_root(JMT_PARAMS, {H(k): v for k, v in model.items()})


# Small key alphabet so updates and deletes hit existing keys often.
keys = st.binary(min_size=0, max_size=3)
values = st.binary(min_size=0, max_size=8)
blocks = st.lists(st.dictionaries(keys, st.none() | values, max_size=12), min_size=1, max_size=6)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def replay(tree, history):
    """Apply blocks as versions 1..n; return the model after each version."""
    models = {}
    model = {}
    for version, writes in enumerate(history, start=1):
        tree.apply(version, writes)
        for key, value in writes.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        models[version] = dict(model)
    return models


@SETTINGS
@given(history=blocks)
def test_every_version_root_equals_the_reference_and_old_values_stay_readable(history):
    tree = StateTree(MemoryStore())
    models = replay(tree, history)
    for version, model in models.items():
        assert tree.root(version) == jmt_reference(model)
        for key in sorted({k for writes in history for k in writes}):
            assert tree.get(key, version) == model.get(key)
    last = models[len(history)]
    for key in sorted({k for writes in history for k in writes}):
        assert tree.get_latest(key) == last.get(key)


@SETTINGS
@given(model=st.dictionaries(st.binary(min_size=32, max_size=32), st.binary(min_size=1, max_size=8), max_size=40))
def test_fuel_parameters_match_the_reference_through_the_same_code(model):
    tree = StateTree(MemoryStore(), FUEL_PARAMS)
    assert tree.apply(1, model) == reference_root(FUEL_PARAMS, model)


@settings(max_examples=25, deadline=None)
@given(history=blocks, probes=st.lists(keys, max_size=6))
def test_proofs_verify_for_present_and_absent_keys_at_every_version(history, probes):
    tree = StateTree(MemoryStore())
    models = replay(tree, history)
    candidates = sorted({k for writes in history for k in writes} | set(probes))
    for version, model in models.items():
        root = tree.root(version)
        for key in candidates:
            proof = tree.prove(key, version)
            assert len(proof.siblings) <= 256
            wire = StateProof.from_bytes(proof.to_bytes())
            assert wire == proof
            verify(root, key, model.get(key), wire)
            wrong = b"x" if model.get(key) is None else None
            with pytest.raises(ProofError):
                verify(root, key, wrong, proof)


def _flip(data: bytes, bit: int) -> bytes:
    raw = bytearray(data)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


@settings(max_examples=40, deadline=None)
@given(
    model=st.dictionaries(keys, values, min_size=1, max_size=30),
    extra=keys,
    data=st.data(),
)
def test_flipping_any_bit_of_proof_value_key_or_root_fails(model, extra, data):
    tree = StateTree(MemoryStore())
    tree.apply(1, model)
    root = tree.root(1)
    for key in sorted(set(model) | {extra}):
        value = model.get(key)
        proof = tree.prove(key, 1)
        encoded = proof.to_bytes()
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1), label="proof bit")
        with pytest.raises(ProofError):
            verify(root, key, value, StateProof.from_bytes(_flip(encoded, bit)))
        bit = data.draw(st.integers(0, 255), label="root bit")
        with pytest.raises(ProofError):
            verify(_flip(root, bit), key, value, proof)
        if value:
            bit = data.draw(st.integers(0, len(value) * 8 - 1), label="value bit")
            with pytest.raises(ProofError):
                verify(root, key, _flip(value, bit), proof)
        if key:
            bit = data.draw(st.integers(0, len(key) * 8 - 1), label="key bit")
            other = _flip(key, bit)
            if value is not None or other in model:
                with pytest.raises(ProofError):
                    verify(root, other, value, proof)
            else:
                # An absence proof covers a whole empty subtree: it may also
                # prove a flipped key absent, which is then true.
                try:
                    verify(root, other, None, proof)
                except ProofError:
                    pass


@settings(max_examples=30, deadline=None)
@given(history=blocks, keep=st.integers(0, 5), step=st.integers(1, 7))
def test_pruning_never_breaks_a_retained_version(history, keep, step):
    store = MemoryStore()
    tree = StateTree(store, cache_nodes=0)
    models = replay(tree, history)
    latest = len(history)
    oldest = max(1, latest - keep)
    while tree.prune(oldest, max_nodes=step):
        pass
    probe = sorted({k for writes in history for k in writes})
    for version in range(oldest, latest + 1):
        assert tree.root(version) == jmt_reference(models[version])
        for key in probe:
            assert tree.get(key, version) == models[version].get(key)
            verify(tree.root(version), key, models[version].get(key), tree.prove(key, version))
    for version in range(1, oldest):
        with pytest.raises(ValidationError):
            tree.root(version)
    # Nothing left in the stale index at or below the retained version.
    assert [k for k, _ in store.iterate_prefix(b"S") if int.from_bytes(k[1:9], "big") <= oldest] == []
    # Live nodes = nodes reachable from retained versions (no leak, no loss).
    assert sum(1 for _ in store.iterate_prefix(b"N")) == len(_reachable(tree, store, oldest, latest))


def _reachable(tree, store, oldest, latest):
    import msgpack

    seen = set()
    for version in range(oldest, latest + 1):
        entry = msgpack.unpackb(store.get(b"R" + version.to_bytes(8, "big")))
        stack = [] if entry is None else [(entry, b"", 0)]
        while stack:
            (child_version, _, count), path, depth = stack.pop()
            node_key = child_version.to_bytes(8, "big") + bytes([depth]) + _pack(path)
            seen.add(node_key)
            if count == 1:
                continue
            flat = msgpack.unpackb(store.get(b"N" + node_key))
            j = 1
            for nibble in range(16):
                if flat[0] >> nibble & 1:
                    stack.append(((flat[j], flat[j + 1], flat[j + 2]), path + bytes([nibble]), depth + 1))
                    j += 3
    return seen


def _pack(nibbles: bytes) -> bytes:
    padded = nibbles + (b"\x00" if len(nibbles) % 2 else b"")
    return bytes((padded[i] << 4) | padded[i + 1] for i in range(0, len(padded), 2))


def _contents(store):
    return list(store.iterate_prefix(b""))


BAD_WRITES = [
    {b"k" * (MAX_KEY_BYTES + 1): b"v"},
    {b"k": b"v" * (MAX_VALUE_BYTES + 1)},
    {"k": b"v"},
    {b"k": "v"},
    {b"k": 1},
    {b"ok": b"v", b"bad": bytearray(b"v")},
    [(b"k", b"v")],
]


@pytest.mark.parametrize("writes", BAD_WRITES, ids=range(len(BAD_WRITES)))
def test_bad_writes_raise_validation_error_and_change_nothing(writes):
    store = MemoryStore()
    tree = StateTree(store)
    tree.apply(1, {b"a": b"1", b"b": b"2"})
    before = _contents(store)
    with pytest.raises(ValidationError):
        tree.apply(2, writes)
    assert _contents(store) == before
    assert tree.latest_version() == 1
    assert tree.apply(2, {b"c": b"3"}) == jmt_reference({b"a": b"1", b"b": b"2", b"c": b"3"})


@pytest.mark.parametrize("version", [1, 0, -1, True, 2**64, "3", None])
def test_bad_versions_raise_validation_error_and_change_nothing(version):
    store = MemoryStore()
    tree = StateTree(store)
    tree.apply(1, {b"a": b"1"})
    before = _contents(store)
    with pytest.raises(ValidationError):
        tree.apply(version, {b"a": b"2"})
    assert _contents(store) == before
    assert tree.get_latest(b"a") == b"1"


def test_reads_of_unknown_versions_and_bad_keys_raise_typed_errors():
    tree = StateTree(MemoryStore())
    assert tree.latest_version() is None
    with pytest.raises(ValidationError):
        tree.root(0)
    tree.apply(3, {b"a": b"1"})
    for call in (lambda: tree.get(b"a", 2), lambda: tree.prove(b"a", 4), lambda: tree.get("a", 3)):
        with pytest.raises(ValidationError):
            call()
    with pytest.raises(ValidationError):
        StateTree(MemoryStore(), FUEL_PARAMS).apply(1, {b"short": b"v"})


def test_an_empty_tree_has_the_placeholder_root_and_proves_absence():
    tree = StateTree(MemoryStore())
    assert tree.apply(1, {b"gone": None}) == EMPTY_ROOT
    verify(EMPTY_ROOT, b"anything", None, tree.prove(b"anything", 1))


GARBAGE = [
    None,
    b"",
    StateProof(None, tuple([b""] * 257)),
    StateProof(None, (b"\x00" * 31,)),
    StateProof((b"\x00" * 32,), ()),
    StateProof([b"\x00" * 32, b"\x00" * 32], ()),  # list, not tuple
    StateProof(None, [b""]),
    StateProof(None, (None,)),
    StateProof(None, (EMPTY_ROOT,)),  # placeholder must be encoded as b""
    StateProof(1, 2),
]


@pytest.mark.parametrize("proof", GARBAGE, ids=range(len(GARBAGE)))
def test_verify_is_total_on_malformed_proofs(proof):
    with pytest.raises(ProofError):
        verify(EMPTY_ROOT, b"k", None, proof)


@pytest.mark.parametrize(
    "args",
    [(b"short", b"k", None), ("x" * 32, b"k", None), (EMPTY_ROOT, "k", None), (EMPTY_ROOT, b"k", 5)],
)
def test_verify_is_total_on_wrong_argument_types(args):
    with pytest.raises(ProofError):
        verify(*args, StateProof(None, ()))


@pytest.mark.parametrize(
    "wire",
    [b"\xc1", b"\x80", b"\x91\x01", b"\x82\xa4leaf\xc0\xa8siblings\x91\x01", b"\x00" * 10],
)
def test_malformed_proof_bytes_raise_proof_error(wire):
    with pytest.raises(ProofError):
        StateProof.from_bytes(wire)


@pytest.fixture(params=["memory", "leveldb"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        db = LevelDBStore(str(tmp_path / "db"), sync=False)
        yield db
        db.close()


def test_the_tree_gives_identical_results_on_memory_and_leveldb(store):
    tree = StateTree(store, cache_nodes=64)
    model = {}
    for version in range(1, 31):
        writes = {}
        for i in range(40):
            key = b"acct/%d" % ((version * 7919 + i * 104729) % 500)
            writes[key] = None if (version + i) % 5 == 0 else b"v%d-%d" % (version, i)
        tree.apply(version, writes)
        for key, value in writes.items():
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
    assert tree.root(30) == jmt_reference(model)
    while tree.prune(25, max_nodes=100):
        pass
    for key in [b"acct/%d" % i for i in range(0, 500, 7)]:
        assert tree.get(key, 30) == model.get(key)
        verify(tree.root(30), key, model.get(key), tree.prove(key, 30))
    # A reopened tree (cold cache) reads the same state.
    fresh = StateTree(store)
    assert fresh.latest_version() == 30 and fresh.oldest_version() == 25
    assert fresh.root(30) == tree.root(30)


def test_prepare_returns_the_batch_without_writing_it():
    store = MemoryStore()
    tree = StateTree(store)
    tree.apply(1, {b"a": b"1"})
    before = _contents(store)
    root, batch = tree.prepare(2, {b"b": b"2"})
    assert _contents(store) == before and tree.latest_version() == 1
    batch.put(b"block/2", b"block bytes")  # the node adds its own records
    store.write(batch)
    assert tree.root(2) == root == jmt_reference({b"a": b"1", b"b": b"2"})
    assert store.get(b"block/2") == b"block bytes"


def test_a_missing_node_is_reported_as_a_storage_error():
    store = MemoryStore()
    tree = StateTree(store, cache_nodes=0)
    tree.apply(1, {b"k%d" % i: b"v" for i in range(50)})
    from ledger.kv import WriteBatch

    batch = WriteBatch()
    for key, _ in store.iterate_prefix(b"N"):
        batch.delete(key)
    store.write(batch)
    with pytest.raises(StorageError):
        tree.get(b"k1", 1)
    with pytest.raises(LedgerError):
        tree.apply(2, {b"k1": b"w"})


class _NastyKey:
    """A map key that collides with "leaf" and fails every comparison."""

    def __hash__(self):
        return hash("leaf")

    def __eq__(self, other):
        raise RuntimeError("no comparisons")


WIRE_GARBAGE = [
    {1: b"", "leaf": None},  # mixed key types: sorted() used to raise TypeError
    {b"leaf": None, b"siblings": []},
    {"leaf": None, 2: []},
    {"leaf": None, "siblings": [], "extra": 1},
    {"leaf": None},
    {_NastyKey(): None, "siblings": []},
    {"leaf": None, "siblings": [1.5]},
    {"leaf": [b"\x00" * 32], "siblings": []},
    {"leaf": None, "siblings": [b"\x00" * 31]},
    [("leaf", None), ("siblings", [])],
    None,
    3,
]


@pytest.mark.parametrize("wire", WIRE_GARBAGE, ids=range(len(WIRE_GARBAGE)))
def test_from_wire_is_total_and_raises_only_proof_error(wire):
    with pytest.raises(ProofError):
        StateProof.from_wire(wire)


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\x01\xc4\x00\xa4leaf\xc0",  # {1: b"", "leaf": None}
        b"\x82\xa8siblings\x90\xa4leaf\xc0",  # keys out of canonical order
        b"\x82\xa4leaf\xc0\xa8siblings\xdc\x00\x00",  # non-minimal array header
        b"\x83\xa4leaf\xc0\xa8siblings\x90\xa4leaf\xc0",  # duplicate key
        b"\x82\xa4leaf\xc0\xa8siblings\x90\x00",  # trailing byte
        b"\x82\xa4leaf\xc0\xa8siblings\x91\xc7\x01\x05\x00",  # extension type
        b"\x82\xa4leaf\xc0\xa8siblings\x91\xcb" + bytes(8),  # float
        b"\x82\xa4leaf\xc0\xa8siblings\x90" + b"\x00" * (20 * 1024),  # oversize
        bytearray(b"\x82\xa4leaf\xc0\xa8siblings\x91\x01"),
        "not bytes",
        None,
    ],
)
def test_from_bytes_is_total_and_rejects_non_canonical_bytes(data):
    with pytest.raises(ProofError):
        StateProof.from_bytes(data)


@settings(max_examples=40, deadline=None)
@given(model=st.dictionaries(keys, values, max_size=30), probe=keys)
def test_proof_bytes_are_the_canonical_codec_encoding(model, probe):
    from ledger import codec

    tree = StateTree(MemoryStore())
    tree.apply(1, model)
    proof = tree.prove(probe, 1)
    data = proof.to_bytes()
    assert data == codec.encode(proof.to_wire())
    assert StateProof.from_wire(codec.decode(data)) == StateProof.from_bytes(data) == proof
    assert StateProof.from_bytes(bytearray(data)) == proof


def test_one_stale_record_per_version_and_the_per_node_layout_still_prunes():
    import msgpack

    from ledger.kv import WriteBatch

    def build():
        store = MemoryStore()
        tree = StateTree(store)
        model = {}
        for version in range(1, 6):
            writes = {b"k%d" % ((version * 13 + i * 7) % 40): b"v%d" % version for i in range(15)}
            tree.apply(version, writes)
            model.update(writes)
        return store, tree, model

    store, tree, model = build()
    records = list(store.iterate_prefix(b"S"))
    assert records and all(len(key) == 9 for key, _ in records)
    # Rewrite the index in the older layout: S ‖ version ‖ node_key -> b"".
    legacy_store, legacy_tree, _ = build()
    batch = WriteBatch()
    for key, value in legacy_store.iterate_prefix(b"S"):
        batch.delete(key)
        for node_key in msgpack.unpackb(value):
            batch.put(key + node_key, b"")
    legacy_store.write(batch)
    for each in (tree, legacy_tree):
        while each.prune(4, max_nodes=3):
            pass
    assert sorted(k for k, _ in store.iterate_prefix(b"N")) == sorted(k for k, _ in legacy_store.iterate_prefix(b"N"))
    assert [k for k, _ in legacy_store.iterate_prefix(b"S") if int.from_bytes(k[1:9], "big") <= 4] == []
    for key, value in model.items():
        verify(legacy_tree.root(5), key, value, legacy_tree.prove(key, 5))


@pytest.mark.parametrize(
    "params, key",
    [(JMT_PARAMS, "a"), (JMT_PARAMS, b"k" * (MAX_KEY_BYTES + 1)), (FUEL_PARAMS, b"short"), (FUEL_PARAMS, None)],
)
def test_get_latest_rejects_bad_keys_with_validation_error(params, key):
    tree = StateTree(MemoryStore(), params)
    with pytest.raises(ValidationError):
        tree.get_latest(key)


def test_gc_promote_gives_the_same_roots_and_leaves_the_collector_enabled():
    import gc

    model = {b"k%d" % i: b"v%d" % i for i in range(300)}
    plain, promoted = StateTree(MemoryStore()), StateTree(MemoryStore(), gc_promote=True)
    assert plain.apply(1, model) == promoted.apply(1, model) == jmt_reference(model)
    assert gc.isenabled() and gc.get_freeze_count() == 0
