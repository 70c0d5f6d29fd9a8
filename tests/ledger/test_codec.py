"""Canonical msgpack: round trips, canonical form, and one error type for garbage."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.errors import DecodeError, EncodeError

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8) | st.integers(-1000, 1000), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_decode_inverts_encode(value):
    assert codec.decode(codec.encode(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**64 - 1), max_size=8))
def test_map_encoding_does_not_depend_on_insertion_order(mapping):
    reversed_map = dict(reversed(list(mapping.items())))
    assert codec.encode(mapping) == codec.encode(reversed_map)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error_only(data):
    try:
        value = codec.decode(data)
    except DecodeError:
        return
    assert codec.encode(value) == data


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_mutated_encodings_decode_canonically_or_raise_decode_error(value, data):
    encoded = bytearray(codec.encode(value))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = codec.decode(bytes(encoded))
    except DecodeError:
        return
    assert codec.encode(decoded) == bytes(encoded)


@pytest.mark.parametrize("value", [1.5, {"a": 0.0}, [float("nan")], 2**64, -(2**63) - 1, {1.0: 1}, object(), {(1,): 2}])
def test_floats_big_ints_and_unknown_types_cannot_be_encoded(value):
    with pytest.raises(EncodeError):
        codec.encode(value)


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(1.5),
        msgpack.packb({"b": 1, "a": 2}),  # unsorted keys
        b"\xd0\x01",  # int8 where a fixint is canonical
        b"\x82\xa1a\x01\xa1a\x02",  # duplicate key
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\x91",  # truncated
        b"\x01\x02",  # trailing bytes
        b"",
        "not bytes",
    ],
)
def test_non_canonical_or_malformed_bytes_raise_decode_error(data):
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_oversize_messages_are_refused_before_parsing():
    with pytest.raises(DecodeError):
        codec.decode(codec.encode(b"x" * 100), max_bytes=50)


def test_nesting_deeper_than_the_limit_is_refused():
    value = []
    for _ in range(codec.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(EncodeError):
        codec.encode(value)
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb(value))
