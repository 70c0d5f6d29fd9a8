"""Canonical msgpack: one byte string for one value, on every machine.

Rules (they make hashes and signatures reproducible):
- accepted types: None, bool, int (-2**63 .. 2**64-1), bytes, str, list/tuple
  (encoded as arrays), dict with str, bytes or int keys;
- map keys sorted by their own canonical encoding, no duplicate keys;
- no floats, no extension types, ints in their shortest msgpack form;
- sizes bounded: whole message, strings/bytes, containers, nesting depth.

`decode` re-encodes what it parsed and rejects any input that is not the
canonical form, so two different byte strings never decode to one value.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ledger.errors import DecodeError, EncodeError, LedgerError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | bytes | str | list["Value"] | dict[Any, "Value"]


def _canonical(value: Any, depth: int) -> Any:
    """Return `value` with maps rebuilt in canonical key order (the reference walk).

    Raises EncodeError on a float, an unknown type, an out-of-range int or
    nesting deeper than MAX_DEPTH. `_fast` handles the common shapes and
    falls back to this function for the rest; `encode` re-runs it on the whole
    value whenever the fast walk fails, so errors are exactly this walk's.
    """
    if depth > MAX_DEPTH:
        raise EncodeError("value nested deeper than %d" % MAX_DEPTH)
    if value is None or isinstance(value, (bool, bytes, str)):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodeError("integer out of 64-bit range: %d" % value)
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, bytes, int)):
                raise EncodeError("map key of type %s" % type(key).__name__)
            items.append((_pack(_canonical(key, depth + 1)), key, item))
        items.sort(key=lambda entry: entry[0])
        return {key: _canonical(item, depth + 1) for _, key, item in items}
    if isinstance(value, float):
        raise EncodeError("floats are not allowed; use integer cents or basis points")
    raise EncodeError("cannot encode type %s" % type(value).__name__)


# The fast walk. Exact types only (subclasses go to `_canonical`). It returns
# `value` itself when it already packs canonically (a tuple packs as the same
# array as a list; a map whose keys are in canonical order packs as it
# iterates), and a rebuilt value otherwise.
#
# Key order without packing each key: msgpack writes a str as a prefix that
# grows with the UTF-8 length (fixstr 0xa0+len < str8 0xd9 < str16 0xda <
# str32 0xdb, lengths big-endian) followed by the UTF-8 bytes, so packed str
# keys sort as (UTF-8 length, UTF-8 bytes); for ASCII keys that is
# (len(key), key). Bytes likewise (bin8 0xc4 < bin16 0xc5 < bin32 0xc6):
# (len(key), key). Maps with other or mixed key types use `_canonical`.
# tests/ledger/test_codec.py checks both walks give the same bytes and errors.

_PLAIN = (str, bytes, bool, type(None))


def _fast(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str or kind is bytes or kind is bool or value is None:
        return value
    if kind is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise EncodeError("integer out of 64-bit range")
    if depth >= MAX_DEPTH:  # a container whose items may be too deep: the reference decides
        return _canonical(value, depth)
    if kind is list or kind is tuple:
        out = None
        for index, item in enumerate(value):
            kind = type(item)
            if kind in _PLAIN or (kind is int and INT_MIN <= item <= INT_MAX):
                continue
            new = _fast(item, depth + 1)
            if new is not item:
                if out is None:
                    out = list(value)
                out[index] = new
        return value if out is None else out
    if kind is dict:
        return _fast_map(value, depth)
    return _canonical(value, depth)


def _fast_map(value: dict[Any, Any], depth: int) -> Any:
    # One pass over the keys for the common maps (events, records, tx bodies:
    # ASCII str keys), noting whether they are in canonical order and whether
    # every item is a scalar that packs as it is. Other keys: `_walk_map`.
    ordered = True
    flat = True
    previous_length = -1
    previous = ""
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return _walk_map(value, depth)
        length = len(key)
        if length < previous_length or (length == previous_length and key < previous):
            ordered = False
        previous_length, previous = length, key
        if flat:
            kind = type(item)
            flat = kind in _PLAIN or (kind is int and INT_MIN <= item <= INT_MAX)
    if ordered and flat:
        return value
    return _rebuild_map(value, depth, value if ordered else _length_then_key_order(value), flat)


def _walk_map(value: dict[Any, Any], depth: int) -> Any:
    """`_fast_map` for maps of bytes keys; any other keys go to `_canonical`."""
    key_kind = None
    ordered = True
    previous_length = -1
    previous: Any = None
    for key in value:
        kind = type(key)
        if kind is not key_kind:
            if key_kind is not None or not (kind is str or kind is bytes):
                return _canonical(value, depth)
            key_kind = kind
        if kind is str and not key.isascii():
            return _canonical(value, depth)
        if ordered:
            length = len(key)
            if length < previous_length or (length == previous_length and key < previous):
                ordered = False
            previous_length, previous = length, key
    return _rebuild_map(value, depth, value if ordered else _length_then_key_order(value), False)


def _length_then_key_order(keys: Any) -> list[Any]:
    """ASCII str or bytes keys sorted by (length, key): a stable sort by length
    of the keys sorted by value, cheaper than a key function."""
    return sorted(sorted(keys), key=len)


def _rebuild_map(value: dict[Any, Any], depth: int, keys: Any, flat: bool) -> Any:
    """`value` with its items in the order of `keys` (its keys, known to be of
    one kind and in canonical order) and each item through the fast walk
    (none needs it if `flat`); `value` itself when that changes nothing."""
    items: dict[Any, Any] = {}
    if flat:
        for key in keys:
            items[key] = value[key]
        return items
    changed = keys is not value
    for key in keys:
        item = value[key]
        kind = type(item)
        if not (kind in _PLAIN or (kind is int and INT_MIN <= item <= INT_MAX)):
            new = _fast(item, depth + 1)
            if new is not item:
                changed = True
                item = new
        items[key] = item
    return items if changed else value


# Reused packers: `msgpack.packb` builds a new Packer per call, which costs
# more than packing a transaction. Each packer serves one caller at a time
# (list pop/append are atomic, and `encode` also runs in worker threads); one
# that raised is dropped rather than trusted again.
_PACKERS: list[msgpack.Packer] = []


def _pack(value: Any) -> bytes:
    """`msgpack.packb(value, use_bin_type=True, strict_types=False)`."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True, strict_types=False)
    data = packer.pack(value)
    _PACKERS.append(packer)
    return data


def encode(value: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode `value` canonically.

    Raises EncodeError for floats, unknown types, out-of-range ints, deep
    nesting or a result over `max_bytes` (MAX_MESSAGE_BYTES: a message; local
    files such as the persisted consensus state may pass a larger bound).
    """
    try:
        data = _pack(_fast(value, 0))
    except (LedgerError, TypeError, ValueError, OverflowError, RecursionError):
        data = _encode_reference(value)  # the reference walk raises its own error
    if len(data) > max_bytes:
        raise EncodeError("encoding is %d bytes, limit %d" % (len(data), max_bytes))
    return data


def _encode_reference(value: Any) -> bytes:
    """`encode` through the reference walk only (no size bound); raises EncodeError."""
    try:
        return _pack(_canonical(value, 0))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc


def _reject_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key, item in pairs:
        if isinstance(key, (list, dict)) or key in result:
            raise DecodeError("duplicate or unhashable map key")
        result[key] = item
    return result


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode canonical bytes; arrays come back as lists.

    Raises DecodeError for anything else: not bytes, oversize, truncated,
    trailing bytes, floats, extension types, duplicate keys, or a
    non-canonical form (unsorted keys, non-minimal ints).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes, got %s" % type(data).__name__)
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError("message is %d bytes, limit %d" % (len(data), max_bytes))
    if 0 < len(data) <= 9:  # a state value such as a nonce or a balance: no msgpack round trip
        number = _small_uint(data)
        if number is not None:
            return number
    # Fast path: maps built in C (no pairs hook), then the canonical re-encode.
    # It accepts exactly what `_decode_reference` accepts: a duplicate key
    # leaves a smaller map whose re-encoding cannot equal `data`, an
    # unhashable key fails the unpack, and `_fast` encodes as `_canonical`.
    # Anything else (garbage, a mismatch) goes to the reference path, which
    # raises the DecodeError it always raised.
    try:
        value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, ext_hook=_reject_ext)
        if _pack(_fast(value, 0)) == data:
            return value
    except Exception:  # noqa: BLE001 — not swallowed: the reference path below decides and raises
        pass
    return _decode_reference(data, max_bytes)


# msgpack's uint forms: type byte -> (encoded length, smallest value that needs it)
_UINT_FORMS = {0xCC: (2, 0x80), 0xCD: (3, 0x100), 0xCE: (5, 0x1_0000), 0xCF: (9, 0x1_0000_0000)}


def _small_uint(data: bytes) -> int | None:
    """`data` as a non-negative int if it is exactly one in canonical form
    (a positive fixint, or the shortest uint form that holds it), else None."""
    first = data[0]
    if first < 0x80:
        return first if len(data) == 1 else None
    form = _UINT_FORMS.get(first)
    if form is None or len(data) != form[0]:
        return None
    number = int.from_bytes(data[1:], "big")
    return number if number >= form[1] else None


def _decode_reference(data: bytes, max_bytes: int) -> Any:
    """`decode` by the reference rules (pairs hook, reference re-encode); raises DecodeError."""
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            object_pairs_hook=_reject_pairs,
            ext_hook=_reject_ext,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise DecodeError("malformed msgpack: %s" % type(exc).__name__) from exc
    try:
        again = _encode_reference(value)
    except EncodeError as exc:
        raise DecodeError("not a canonical value: %s" % exc) from exc
    if len(again) > max_bytes:
        raise DecodeError("not a canonical value: encoding is %d bytes, limit %d" % (len(again), max_bytes))
    if again != data:
        raise DecodeError("bytes are not in canonical form")
    return value


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError("msgpack extension type %d is not allowed" % code)


# ---------------------------------------------- pieces for direct decoders
#
# A decoder of one fixed layout (`ledger.types.Tx._decode_direct`) may skip
# `decode`'s generic walk when it proves canonical form itself: `parse` the
# bytes, check the shape, `packs_canonically` on the parts it did not check,
# and `pack_as_is(value) == data`. Whatever it does not accept goes to
# `decode`, which decides (and raises) as always.


def parse(data: bytes) -> Any:
    """`data` parsed as `decode` parses it (arrays as lists, any map keys,
    extension types refused) but NOT checked for canonical form.

    Raises whatever msgpack raises on bad input (many types): callers treat
    any exception as "not mine" and use `decode`.
    """
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, ext_hook=_reject_ext)


def pack_as_is(value: Any) -> bytes:
    """msgpack bytes of `value` as it stands (maps in their own order): the
    canonical encoding only when `packs_canonically(value)`. Raises what msgpack raises."""
    return _pack(value)


def packs_canonically(value: Any, depth: int = 0) -> bool:
    """Whether `value`, at nesting `depth`, packs as it stands to its canonical
    encoding (what `encode`'s fast walk says by returning `value` itself).

    A flat map of ASCII str keys and scalar values (a typical tx body) is
    checked here; anything else by the fast walk. Never raises: a value
    `encode` would refuse is simply not canonical.
    """
    if type(value) is dict and depth < MAX_DEPTH:
        previous_length = -1
        previous = ""
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                break
            length = len(key)
            # packed ASCII str keys sort as (length, key): see the fast walk above
            if length < previous_length or (length == previous_length and key <= previous):
                return False
            previous_length, previous = length, key
            kind = type(item)
            if not (kind is bytes or kind is str or kind is bool or item is None
                    or (kind is int and INT_MIN <= item <= INT_MAX)):
                break
        else:
            return True
    try:
        return _fast(value, depth) is value
    except (LedgerError, TypeError, ValueError, OverflowError, RecursionError):
        return False
