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


# ------------------------------------------- the fast paths against the reference
#
# `codec.encode`/`codec.decode` take fast paths (a walk that skips values
# already in canonical form, str/bytes key order without packing each key, C
# maps on decode). They must give EXACTLY the bytes, values and errors of the
# original implementation, kept verbatim below as the reference.


def _reference_canonical(value, depth):
    if depth > codec.MAX_DEPTH:
        raise EncodeError("value nested deeper than %d" % codec.MAX_DEPTH)
    if value is None or isinstance(value, (bool, bytes, str)):
        return value
    if isinstance(value, int):
        if not codec.INT_MIN <= value <= codec.INT_MAX:
            raise EncodeError("integer out of 64-bit range: %d" % value)
        return value
    if isinstance(value, (list, tuple)):
        return [_reference_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, bytes, int)):
                raise EncodeError("map key of type %s" % type(key).__name__)
            items.append((_reference_pack(_reference_canonical(key, depth + 1)), key, item))
        items.sort(key=lambda entry: entry[0])
        return {key: _reference_canonical(item, depth + 1) for _, key, item in items}
    if isinstance(value, float):
        raise EncodeError("floats are not allowed; use integer cents or basis points")
    raise EncodeError("cannot encode type %s" % type(value).__name__)


def _reference_pack(value):
    return msgpack.packb(value, use_bin_type=True, strict_types=False)


def reference_encode(value, max_bytes=codec.MAX_MESSAGE_BYTES):
    try:
        data = _reference_pack(_reference_canonical(value, 0))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc
    if len(data) > max_bytes:
        raise EncodeError("encoding is %d bytes, limit %d" % (len(data), max_bytes))
    return data


def _reference_reject_pairs(pairs):
    result = {}
    for key, item in pairs:
        if isinstance(key, (list, dict)) or key in result:
            raise DecodeError("duplicate or unhashable map key")
        result[key] = item
    return result


def _reference_reject_ext(code, data):
    raise DecodeError("msgpack extension type %d is not allowed" % code)


def reference_decode(data, max_bytes=codec.MAX_MESSAGE_BYTES):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes, got %s" % type(data).__name__)
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError("message is %d bytes, limit %d" % (len(data), max_bytes))
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False,
                                object_pairs_hook=_reference_reject_pairs, ext_hook=_reference_reject_ext)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("malformed msgpack: %s" % type(exc).__name__) from exc
    try:
        again = reference_encode(value, max_bytes=max_bytes)
    except EncodeError as exc:
        raise DecodeError("not a canonical value: %s" % exc) from exc
    if again != data:
        raise DecodeError("bytes are not in canonical form")
    return value


def _outcome(function, *args):
    """('ok', result) or (error type, message): what a caller can observe."""
    try:
        return ("ok", function(*args))
    except (EncodeError, DecodeError) as exc:
        return (type(exc).__name__, str(exc))


def _same_structure(a, b):
    """Equal, with the same container types and key order (dict == ignores order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_structure(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_structure(x, y) for x, y in zip(a, b))
    return a == b


class _Str(str):
    pass


class _Dict(dict):
    pass


class _Int(int):
    pass


# every shape the fast walk treats specially: str keys across the fixstr/str8/
# str16 boundaries, non-ASCII keys, bytes keys, mixed and int/bool/None keys,
# tuples, subclasses, out-of-range ints, floats and unknown types
_key_text = st.text(max_size=3) | st.text(alphabet="ab", min_size=29, max_size=34) | st.sampled_from(
    ["a" * 255, "a" * 256, "b" * 255, "é", "ß", "\u00ff", "~", "\x7f", "a\x00"])
_key_bytes = st.binary(max_size=3) | st.sampled_from([b"\x00" * 255, b"\x00" * 256, b"\xff" * 31, b"\xff"])
_keys = (_key_text | _key_bytes | st.integers(-200, 200) | st.sampled_from([2**63, -(2**63), 2**64 - 1, True, None])
         | st.builds(_Str, st.text(max_size=3)) | st.floats(allow_nan=False) | st.tuples(st.integers(0, 3)))
_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=40)
            | st.sampled_from([2**64, -(2**63) - 1, 1.5, bytearray(b"x"), _Int(7), _Str("s"), "\ud800", object()]))
_any_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
    | st.dictionaries(_keys, inner, max_size=6) | st.dictionaries(_key_text, inner, max_size=6)
    | st.dictionaries(_key_bytes, inner, max_size=6) | st.dictionaries(_key_text, inner, max_size=4).map(_Dict),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(_any_values)
def test_encode_gives_exactly_the_reference_bytes_or_error(value):
    assert _outcome(codec.encode, value) == _outcome(reference_encode, value)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(_key_text, st.integers(0, 3), max_size=12) | st.dictionaries(_key_bytes, st.integers(0, 3), max_size=12))
def test_str_or_bytes_keys_sort_as_their_packed_bytes(mapping):
    assert list(msgpack.unpackb(codec.encode(mapping), raw=False)) == sorted(
        mapping, key=lambda key: msgpack.packb(key, use_bin_type=True))


def test_encode_matches_the_reference_at_the_depth_limit():
    for extra in range(-2, 3):
        for leaf in (1, [], {}, {"a": 1}, [1], {b"k": [2]}, 1.5):
            value = leaf
            for _ in range(codec.MAX_DEPTH + extra):
                value = [value] if extra % 2 else {"k": value}
            assert _outcome(codec.encode, value) == _outcome(reference_encode, value)
            data = msgpack.packb(value, use_bin_type=True)
            assert _outcome(codec.decode, data) == _outcome(reference_decode, data)


def _assert_same_decode(data):
    fast, reference = _outcome(codec.decode, data), _outcome(reference_decode, data)
    assert fast[0] == reference[0]
    if fast[0] == "ok":
        assert _same_structure(fast[1], reference[1])
    else:
        assert fast == reference


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_decode_accepts_and_rejects_exactly_as_the_reference_on_random_bytes(data):
    _assert_same_decode(data)


@settings(max_examples=1000, deadline=None)
@given(_any_values, st.data())
def test_decode_accepts_and_rejects_exactly_as_the_reference_on_near_canonical_bytes(value, data):
    try:
        encoded = bytearray(msgpack.packb(value, use_bin_type=True, strict_types=False))
    except (TypeError, ValueError, OverflowError):
        return
    if encoded and data.draw(st.booleans()):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
    _assert_same_decode(bytes(encoded))


@pytest.mark.parametrize("data", [
    b"\x82\xa1a\x01\xa1a\x02", b"\x82\x01\x01\xc3\x02", b"\x81\x91\x01\x02", b"\x81\x80\x01",
    b"\x82\xa1b\x01\xa1a\x02", b"\x82\xc4\x01b\x01\xa1a\x02", b"\xcb" + bytes(8), b"\xca" + bytes(4),
    b"\x81\xc0\x01", b"\x81\xc3\x01", b"\xd9\x01a", b"\xc4\x00", b"\x80", b"\x90", b"\xa0",
])
def test_decode_edge_cases_match_the_reference(data):
    _assert_same_decode(data)


# ----------------------------------- pieces for direct decoders (Tx._decode_direct)


@settings(max_examples=1500, deadline=None)
@given(_any_values | st.dictionaries(_key_text, _scalars, max_size=6), st.integers(0, codec.MAX_DEPTH + 1))
def test_packs_canonically_says_what_the_fast_walk_says(value, depth):
    try:
        expected = codec._fast(value, depth) is value
    except (EncodeError, TypeError, ValueError, OverflowError, RecursionError):
        expected = False
    assert codec.packs_canonically(value, depth) is expected
    if expected and depth == 0:  # then packing as it stands is encoding (or both fail: e.g. a lone surrogate)
        try:
            packed = codec.pack_as_is(value)
        except (TypeError, ValueError, OverflowError):
            with pytest.raises(EncodeError):
                codec.encode(value)
        else:
            assert packed == codec.encode(value)


@pytest.mark.parametrize("value", [
    {"b": 1, "a": 2}, {"aa": 1, "b": 2}, {"a": 1, "b": 2}, {"b": 1, "aa": 2}, {"a": 1.5}, {"a": 2**64}, {"a": [1]},
    {"é": 1}, {b"a": 1}, {1: 1}, {}, {"a": None, "b": True, "cc": b"", "dd": "x", "eee": -(2**63)},
])
def test_packs_canonically_on_flat_maps(value):
    assert codec.packs_canonically(value) is (codec._fast(value, 0) is value if 1.5 not in value.values()
                                              and 2**64 not in value.values() else False)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_parse_reads_as_decode_without_the_canonical_check(data):
    try:
        parsed = ("ok", codec.parse(data))
    except Exception:  # noqa: BLE001 - msgpack's many error types
        parsed = ("error",)
    decoded = _outcome(codec.decode, data)
    if decoded[0] == "ok":
        assert parsed[0] == "ok" and _same_structure(parsed[1], decoded[1])


@pytest.mark.parametrize("number", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_small_unsigned_ints_decode_alike_in_every_msgpack_form(number):
    canonical = codec.encode(number)
    assert codec.decode(canonical) == number and type(codec.decode(canonical)) is int
    for form, size in ((b"\xcc", 1), (b"\xcd", 2), (b"\xce", 4), (b"\xcf", 8), (b"\xd0", 1), (b"\xd1", 2),
                       (b"\xd2", 4), (b"\xd3", 8)):
        if number < 256 ** size:
            _assert_same_decode(form + number.to_bytes(size, "big"))
        _assert_same_decode(canonical + b"\x00")
        _assert_same_decode(canonical[:-1])


# ------------------------------------- map key order: any insertion order


def _any_order(mapping, data):
    """`mapping` rebuilt in an insertion order hypothesis draws."""
    return dict(data.draw(st.permutations(list(mapping.items()))))


def _reordered(value, data):
    """`value` with every map (at any depth) in a drawn insertion order."""
    if type(value) is dict:
        return _any_order({key: _reordered(item, data) for key, item in value.items()}, data)
    if type(value) in (list, tuple):
        return type(value)(_reordered(item, data) for item in value)
    return value


_unicode_keys = st.text(max_size=4) | st.text(alphabet="aé\u00ff\u4e00\U0001f600", max_size=4)


@settings(max_examples=1000, deadline=None)
@given(_any_values, st.data())
def test_encode_gives_the_reference_bytes_for_maps_in_any_insertion_order(value, data):
    reordered = _reordered(value, data)
    assert _outcome(codec.encode, reordered) == _outcome(reference_encode, reordered)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(_unicode_keys | _key_bytes | st.integers(-300, 300), _scalars, max_size=8)
       | st.dictionaries(_key_text | _unicode_keys, _scalars | st.dictionaries(_key_text, _scalars, max_size=3),
                         max_size=8), st.data())
def test_flat_and_shallow_maps_of_str_bytes_or_int_keys_encode_as_the_reference(mapping, data):
    for candidate in (mapping, _any_order(mapping, data), dict(sorted(mapping.items(), key=repr))):
        assert _outcome(codec.encode, candidate) == _outcome(reference_encode, candidate)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_key_text, _scalars, max_size=8))
def test_a_map_in_canonical_order_is_returned_as_it_is_by_the_fast_walk(mapping):
    try:
        canonical = msgpack.unpackb(reference_encode(mapping), raw=False)
    except (EncodeError, ValueError):
        return
    ordered = {key: mapping[key] for key in canonical}  # same key objects, canonical order
    assert (codec._fast(ordered, 0) is ordered) is all(key.isascii() for key in ordered)
    assert codec.encode(ordered) == reference_encode(mapping)
