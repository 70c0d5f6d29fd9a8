"""The state a contract sees: a typed overlay over the committed state.

Reads fall through to `reader` (the committed state at the previous height);
writes collect in an overlay the node later applies to the state tree in one
batch. `snapshot()`/`rollback()` give each transaction all-or-nothing
semantics without undo code. Values are canonical msgpack (`ledger.codec`).

Keys are `type prefix ‖ "/" ‖ id` bytes; the prefix separates object kinds.
`append_entry` keeps an authenticated counter plus indexed entries so a
regulator can prove a list is complete (count + every index).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping

import msgpack

from ledger import codec
from ledger.errors import LedgerError

from contracts.errors import InvalidValue

Reader = Callable[[bytes], "bytes | None"]
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 256 * 1024
_DELETED = object()


def key(*parts: str | bytes | int) -> bytes:
    """Join key parts with "/": str as UTF-8, bytes as hex, ints as 20-digit decimal
    (fixed width so keys of one kind sort numerically)."""
    try:
        return _remembered_key(*parts)
    except TypeError:  # an unhashable part: `_key` raises what it always raised
        return _key(*parts)


def _key(*parts: str | bytes | int) -> bytes:
    out = []
    for part in parts:
        if isinstance(part, bool):
            raise TypeError("bool is not a key part")
        if isinstance(part, bytes):
            out.append(part.hex())
        elif isinstance(part, int):
            out.append("%020d" % part)
        else:
            out.append(part)
    return "/".join(out).encode()


# The same few keys (a sender's account, nonce and balance) are built many
# times per block; `typed` keeps 1 and True (equal, but True is refused) apart.
_remembered_key = functools.lru_cache(maxsize=16384, typed=True)(_key)


class StateView:
    """A write overlay with nested snapshots over a read-only committed state.

    `cache_reads=True` (what `apply_block` uses: its reader is the committed
    state of the previous height, fixed while the block runs) remembers every
    value read from `reader`, so a key read by many transactions of a block is
    fetched once. Decoded records are remembered with the bytes they came from
    and handed out as fresh copies, so a handler that mutates what it read
    changes nothing it did not `put`.

    `known` (what `apply_block` passes: the `decoded()` of the previous
    block's view) offers values decoded earlier: one is taken when its bytes
    equal the bytes read now, so a record a block does not change is not
    decoded again in the next.
    """

    def __init__(self, reader: Reader, *, cache_reads: bool = False,
                 known: Mapping[bytes, tuple[bytes, Any]] | None = None) -> None:
        self._reader = reader
        self._read_cache: dict[bytes, bytes | None] | None = {} if cache_reads else None
        self._decoded: dict[bytes, tuple[bytes, Any]] = {}  # key -> (bytes, codec.decode(bytes))
        self._known: Mapping[bytes, tuple[bytes, Any]] = {} if known is None else known
        self._writes: dict[bytes, Any] = {}  # key -> bytes | _DELETED
        self._journal: list[tuple[bytes, Any]] = []  # (key, previous overlay entry or missing)
        self._events: list[dict[str, Any]] = []
        self._events_taken_at = 0  # journal length when events were last taken

    # -- raw bytes
    def get_bytes(self, k: bytes) -> bytes | None:
        if k in self._writes:
            value = self._writes[k]
            return None if value is _DELETED else value
        cache = self._read_cache
        if cache is None:
            return self._reader(k)
        try:
            return cache[k]
        except KeyError:
            raw = cache[k] = self._reader(k)
            return raw

    def put_bytes(self, k: bytes, value: bytes) -> None:
        if len(k) > MAX_KEY_BYTES or len(value) > MAX_VALUE_BYTES:
            raise InvalidValue("state key or value over the size limit")
        self._journal.append((k, self._writes.get(k, _MISSING)))
        self._writes[k] = value

    def delete(self, k: bytes) -> None:
        self._journal.append((k, self._writes.get(k, _MISSING)))
        self._writes[k] = _DELETED

    # -- canonical records
    def get(self, k: bytes, default: Any = None) -> Any:
        value = self.get_readonly(k, _MISSING)
        if value is _MISSING:
            return default
        kind = type(value)
        return _copy(value) if kind is dict or kind is list else value

    def get_readonly(self, k: bytes, default: Any = None) -> Any:
        """`get` without the copy: the caller must not mutate what it gets (it
        is the value every later read of `k` in this view decodes to)."""
        raw = self.get_bytes(k)
        if raw is None:
            return default
        entry = self._decoded.get(k)
        if entry is not None and entry[0] is raw:  # the very bytes decoded before
            return entry[1]
        entry = self._known.get(k)
        if entry is not None and entry[0] == raw:  # equal bytes, decoded by an earlier view
            value = entry[1]
        else:
            try:
                value = codec.decode(raw)
            except LedgerError as exc:  # committed state is ours: corruption is a bug
                raise RuntimeError("corrupt state value at %r" % k) from exc
        self._decoded[k] = (raw, value)
        return value

    def put(self, k: bytes, value: Any) -> None:
        if type(value) is int and codec.INT_MIN <= value <= codec.INT_MAX:
            raw = _pack_int(value)  # balances, nonces, counters: no generic walk
        else:
            try:
                raw = codec.encode(value)
            except LedgerError as exc:
                raise InvalidValue("cannot store value: %s" % exc) from exc
        self.put_bytes(k, raw)
        if type(value) in _DECODES_TO_ITSELF:  # decode(raw) would give an equal value of the same type
            self._decoded[k] = (raw, value)

    def exists(self, k: bytes) -> bool:
        return self.get_bytes(k) is not None

    # -- authenticated lists
    def append_entry(self, prefix: bytes, value: Any) -> int:
        """Append `value` at `prefix/i/<n>` and bump `prefix/count`; return n."""
        count_key = prefix + b"/count"
        n = self.get(count_key, 0)
        self.put(prefix + b"/i/" + b"%020d" % n, value)
        self.put(count_key, n + 1)
        return n

    def entries(self, prefix: bytes) -> list[Any]:
        count = self.get(prefix + b"/count", 0)
        return [self.get(prefix + b"/i/" + b"%020d" % i) for i in range(count)]

    # -- events
    def emit(self, event_type: str, **attributes: Any) -> None:
        """Record the event `{"type": event_type, **attributes}` (an attribute
        named "type" wins) with its keys in canonical order, so that the
        receipt encodes it without a sort."""
        names = tuple(attributes)
        template = _EVENT_TEMPLATES.get(names)
        if template is None:
            template = _event_template(names)
        event = template.copy()  # the keys in order; every value is set below
        event["type"] = event_type
        event.update(attributes)
        self._journal.append((b"", _EVENT))
        self._events.append(event)

    # -- transactions
    def snapshot(self) -> int:
        return len(self._journal)

    def rollback(self, mark: int) -> None:
        """Undo every write and event after `mark` (a `snapshot()` value).

        Raises RuntimeError for a mark older than the last `take_events`: the
        events before it belong to a transaction that already has its receipt.
        """
        if mark < self._events_taken_at:
            raise RuntimeError("rollback past events already taken")
        while len(self._journal) > mark:
            k, previous = self._journal.pop()
            if previous is _EVENT:
                self._events.pop()
            elif previous is _MISSING:
                del self._writes[k]
            else:
                self._writes[k] = previous

    def take_events(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        self._events_taken_at = len(self._journal)
        return events

    def writes(self) -> dict[bytes, bytes | None]:
        """The write set, sorted by key, deletes as None."""
        return {k: (None if v is _DELETED else v) for k, v in sorted(self._writes.items())}

    def decoded(self) -> Mapping[bytes, tuple[bytes, Any]]:
        """Every value this view decoded (or stored), as key -> (bytes, value):
        the `known` of a later view. Not to be mutated."""
        return self._decoded


_MISSING = object()
_EVENT = object()
# msgpack writes an int in its shortest form: `codec.encode`'s canonical form
# of an in-range int. Shared, as `ledger.state` shares its packer: packing an
# int runs no Python code, so one call cannot interleave with another thread's.
_pack_int = msgpack.Packer(use_bin_type=True).pack
# exact types whose canonical encoding decodes to an equal value of the same
# type (not subclasses: an IntEnum decodes to a plain int)
_DECODES_TO_ITSELF = (int, bool, str, bytes, type(None))


# attribute names in call order -> a map of "type" and those names, in
# canonical order, every value None. Bounded: the names come from the code,
# but a handler may pass a map's keys.
_EVENT_TEMPLATES: dict[tuple[str, ...], dict[str, None]] = {}
_MAX_EVENT_TEMPLATES = 4096


def _event_template(names: tuple[str, ...]) -> dict[str, None]:
    """The keys of an event with attributes `names` in canonical map order:
    ASCII str keys sort as (length, key) (see `ledger.codec`); other keys
    stay as given, for codec to sort. Codec checks the order either way."""
    keys = dict.fromkeys(("type",) + names)
    if all(key.isascii() for key in keys):
        keys = dict.fromkeys(sorted(sorted(keys), key=len))
    if len(_EVENT_TEMPLATES) < _MAX_EVENT_TEMPLATES:
        _EVENT_TEMPLATES[names] = keys
    return keys


def _copy(value: Any) -> Any:
    """A deep copy of a decoded value (only dicts, lists and immutable scalars)."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


def iter_sorted(items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Items in key order: the one way contracts iterate maps."""
    return sorted(items, key=lambda item: item[0])
