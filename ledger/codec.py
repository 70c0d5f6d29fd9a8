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

from ledger.errors import DecodeError, EncodeError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | bytes | str | list["Value"] | dict[Any, "Value"]


def _canonical(value: Any, depth: int) -> Any:
    """Return `value` with maps rebuilt in canonical key order.

    Raises EncodeError on a float, an unknown type, an out-of-range int or
    nesting deeper than MAX_DEPTH.
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


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=False)


def encode(value: Any, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Encode `value` canonically.

    Raises EncodeError for floats, unknown types, out-of-range ints, deep
    nesting or a result over `max_bytes` (MAX_MESSAGE_BYTES: a message; local
    files such as the persisted consensus state may pass a larger bound).
    """
    try:
        data = _pack(_canonical(value, 0))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc
    if len(data) > max_bytes:
        raise EncodeError("encoding is %d bytes, limit %d" % (len(data), max_bytes))
    return data


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
        again = encode(value, max_bytes=max_bytes)
    except EncodeError as exc:
        raise DecodeError("not a canonical value: %s" % exc) from exc
    if again != data:
        raise DecodeError("bytes are not in canonical form")
    return value


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError("msgpack extension type %d is not allowed" % code)
