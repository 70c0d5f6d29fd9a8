"""StateView's read caches (remembered reads, remembered decodes) change no
result: any sequence of reads, writes, mutations of what was read, snapshots
and rollbacks sees exactly what a view without caches sees."""

import copy

import msgpack

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec

from contracts.errors import InvalidValue
from contracts.state import StateView

KEYS = [b"a", b"b", b"c", b"d"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**64 - 1) | st.binary(max_size=4) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.sampled_from(KEYS)),
        st.tuples(st.just("get_and_mutate"), st.sampled_from(KEYS)),
        st.tuples(st.just("put"), st.sampled_from(KEYS), VALUES),
        st.tuples(st.just("put_bytes"), st.sampled_from(KEYS), VALUES),
        st.tuples(st.just("delete"), st.sampled_from(KEYS)),
        st.tuples(st.just("snapshot")),
        st.tuples(st.just("rollback"), st.integers(0, 5)),
    ),
    max_size=40,
)


class UncachedView(StateView):
    """The reference: every get reads the reader and decodes."""

    def get(self, k, default=None):
        raw = self.get_bytes(k)
        return default if raw is None else codec.decode(raw)


def _mutate(value):
    if isinstance(value, dict):
        value["zz"] = 1
        for item in value.values():
            _mutate(item)
    elif isinstance(value, list):
        value.append(7)
        for item in value:
            _mutate(item)


def _run(view, ops, reads):
    marks = []
    seen = []
    for op in ops:
        if op[0] == "get":
            seen.append(view.get(op[1], "missing"))
        elif op[0] == "get_and_mutate":
            value = view.get(op[1], "missing")
            seen.append(codec.encode(value))
            _mutate(value)
        elif op[0] == "put":
            value = op[2]
            view.put(op[1], value)
            _mutate(value)  # changing a value after put changes nothing stored
        elif op[0] == "put_bytes":
            view.put_bytes(op[1], codec.encode(op[2]))
        elif op[0] == "delete":
            view.delete(op[1])
        elif op[0] == "snapshot":
            marks.append(view.snapshot())
        elif marks:
            view.rollback(marks[min(op[1], len(marks) - 1)])
            del marks[min(op[1], len(marks) - 1):]
    return seen, view.writes(), reads


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES), OPS)
def test_cached_reads_and_decodes_see_exactly_what_an_uncached_view_sees(committed, ops):
    stored = {k: codec.encode(v) for k, v in committed.items()}


    def run(view_class, **kwargs):
        reads = []

        def reader(k):
            reads.append(k)
            return stored.get(k)

        return _run(view_class(reader, **kwargs), copy.deepcopy(ops), reads)

    cached_seen, cached_writes, cached_reads = run(StateView, cache_reads=True)
    plain_seen, plain_writes, _ = run(StateView)
    reference_seen, reference_writes, _ = run(UncachedView)
    assert cached_seen == plain_seen == reference_seen
    assert repr(cached_seen) == repr(reference_seen)  # same types and key order too
    assert cached_writes == plain_writes == reference_writes
    assert len(cached_reads) == len(set(cached_reads))  # each committed key read once


def test_a_value_read_twice_is_two_independent_copies():
    stored = {b"k": codec.encode({"list": [1, 2], "n": 1})}
    view = StateView(stored.get, cache_reads=True)
    first = view.get(b"k")
    first["list"].append(3)
    first["n"] = 99
    assert view.get(b"k") == {"list": [1, 2], "n": 1}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES), st.dictionaries(st.sampled_from(KEYS), VALUES),
       st.booleans(), OPS)
def test_values_known_from_an_earlier_view_change_no_result(earlier, committed, same, ops):
    # `known` comes from a view over another state (as the previous block's view
    # is): an entry is used only where its bytes equal what is read now
    committed = earlier if same else committed
    earlier_stored = {k: codec.encode(v) for k, v in earlier.items()}
    earlier_view = StateView(earlier_stored.get, cache_reads=True)
    for k in KEYS:
        _mutate(earlier_view.get(k))  # copies: the known values stay as decoded
    earlier_view.put(b"a", 5)
    stored = {k: codec.encode(v) for k, v in committed.items()}

    def run(**kwargs):
        return _run(StateView(stored.get, cache_reads=True, **kwargs), copy.deepcopy(ops), [])

    known_seen, known_writes, _ = run(known=earlier_view.decoded())
    reference_seen, reference_writes, _ = _run(UncachedView(stored.get), copy.deepcopy(ops), [])
    assert known_seen == reference_seen and repr(known_seen) == repr(reference_seen)
    assert known_writes == reference_writes


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
                                   -1, -32, -33, -128, -129, -2**31 - 1, -2**63, True, False])
def test_an_int_is_stored_as_its_canonical_encoding(value):
    view = StateView(lambda k: None)
    view.put(b"n", value)
    assert view.get_bytes(b"n") == codec.encode(value)
    assert view.get(b"n") == value and type(view.get(b"n")) is type(value)


@pytest.mark.parametrize("value", [2**64, -2**63 - 1])
def test_an_int_out_of_the_64_bit_range_is_refused(value):
    view = StateView(lambda k: None)
    with pytest.raises(InvalidValue):
        view.put(b"n", value)
    assert view.writes() == {}


def test_a_record_known_from_an_earlier_view_is_not_decoded_again(monkeypatch):
    stored = {b"a": codec.encode({"role": "payer"}), b"b": codec.encode(7), b"c": codec.encode([1])}
    earlier = StateView(dict(stored).get, cache_reads=True)
    for k in stored:
        earlier.get(k)
    stored[b"c"] = codec.encode([2])  # changed since: decoded afresh
    decoded = []
    decode = codec.decode
    monkeypatch.setattr(codec, "decode", lambda raw: decoded.append(raw) or decode(raw))
    view = StateView(stored.get, cache_reads=True, known=earlier.decoded())
    assert [view.get(k) for k in (b"a", b"b", b"c")] == [{"role": "payer"}, 7, [2]]
    assert decoded == [stored[b"c"]]


ATTRIBUTE_NAMES = st.sampled_from(["to", "sender", "amount", "type", "a", "zz", "claim_id", "é", "naïve", "x" * 40])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=10), st.lists(st.tuples(ATTRIBUTE_NAMES, VALUES), max_size=6))
def test_an_emitted_event_is_type_and_attributes_with_keys_in_canonical_order(event_type, pairs):
    attributes = dict(pairs)  # the call order: as the handler wrote its keywords
    view = StateView(lambda k: None)
    view.emit(event_type, **attributes)
    view.emit(event_type, **attributes)  # the second time from the remembered key order
    expected = {"type": event_type, **attributes}
    for event in view.take_events():
        assert event == expected
        assert codec.encode(event) == codec.encode(expected)
        if all(name.isascii() for name in event):
            assert list(event) == sorted(event, key=lambda name: msgpack.packb(name))
