"""The one key/value interface the kernel stores through, and its memory version.

Why: the state tree, block store and indexes must run unchanged over LevelDB
(the node), a dict (tests, the deterministic simulator) and replay. One small
protocol keeps that true; `tests/ledger/test_kv_conformance.py` holds both
implementations to the same behaviour.

Rules every implementation follows:
- keys and values are `bytes`; a missing key reads as None;
- `write(batch)` applies all of a batch's puts and deletes, or none of them;
- `iterate_prefix` yields (key, value) in ascending byte order (descending
  with reverse=True) and sees the store as it was when iteration started;
  `start` is an inclusive bound in the direction of travel (forward: keys
  >= start, reverse: keys <= start);
- `snapshot()` is a read-only view that later writes do not change.
"""

from __future__ import annotations

import bisect
from typing import Iterator, Protocol

from ledger.errors import StorageError


class WriteBatch:
    """Puts and deletes applied together by `KeyValueStore.write`.

    The last operation on a key wins (a put after a delete is a put), so
    several writers (state tree, block store) can share one batch.
    """

    __slots__ = ("puts", "deletes")

    def __init__(self) -> None:
        self.puts: dict[bytes, bytes] = {}
        self.deletes: dict[bytes, None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        """Raises StorageError if key or value is not bytes."""
        if type(key) is not bytes or type(value) is not bytes:
            raise StorageError("keys and values must be bytes")
        self.deletes.pop(key, None)
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        """Raises StorageError if key is not bytes."""
        if type(key) is not bytes:
            raise StorageError("keys must be bytes")
        self.puts.pop(key, None)
        self.deletes[key] = None

    def merge(self, other: "WriteBatch") -> None:
        """Apply `other`'s operations on top of this batch."""
        for key in other.deletes:
            self.delete(key)
        for key, value in other.puts.items():
            self.put(key, value)

    def __len__(self) -> int:
        return len(self.puts) + len(self.deletes)


class ReadView(Protocol):
    """Reads shared by a store and its snapshots."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate_prefix(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...


class KeyValueStore(ReadView, Protocol):
    """A store: reads, one atomic batch write, consistent snapshots."""

    def write(self, batch: WriteBatch) -> None: ...

    def snapshot(self) -> ReadView: ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


def check_key(key: object) -> bytes:
    """Raises StorageError unless `key` is bytes."""
    if type(key) is not bytes:
        raise StorageError("keys must be bytes, got %s" % type(key).__name__)
    return key


class _Frozen:
    """A read-only view over one version of a MemoryStore's contents."""

    __slots__ = ("_data", "_keys")

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self._data = data
        self._keys: list[bytes] | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(check_key(key))

    def iterate_prefix(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_key(prefix)
        if start is not None:
            check_key(start)
        if self._keys is None:
            self._keys = sorted(self._data)
        return _walk(self._data, self._keys, prefix, start, reverse)

    def close(self) -> None:
        """Nothing to release in memory."""


def _walk(
    data: dict[bytes, bytes],
    keys: list[bytes],
    prefix: bytes,
    start: bytes | None,
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """Yield the prefix range of an immutable (data, sorted keys) pair."""
    end = prefix_end(prefix)
    lo = bisect.bisect_left(keys, prefix)
    hi = len(keys) if end is None else bisect.bisect_left(keys, end)
    if reverse:
        if start is not None:
            hi = min(hi, bisect.bisect_right(keys, start))
        for index in range(hi - 1, lo - 1, -1):
            key = keys[index]
            yield key, data[key]
    else:
        if start is not None:
            lo = max(lo, bisect.bisect_left(keys, start))
        for index in range(lo, hi):
            key = keys[index]
            yield key, data[key]


class MemoryStore:
    """In-memory KeyValueStore: a dict plus a lazily sorted key list.

    Snapshots and iterators share the current dict; the next write copies it
    first (copy-on-write), so they never see later writes.
    """

    def __init__(self) -> None:
        self._view = _Frozen({})
        self._shared = False

    def get(self, key: bytes) -> bytes | None:
        return self._view.get(key)

    def write(self, batch: WriteBatch) -> None:
        """Apply `batch` atomically. Raises StorageError on a non-bytes key/value."""
        if not isinstance(batch, WriteBatch):
            raise StorageError("write expects a WriteBatch")
        for key in batch.deletes:
            check_key(key)
        for key, value in batch.puts.items():
            if type(key) is not bytes or type(value) is not bytes:
                raise StorageError("keys and values must be bytes")
        data = self._view._data
        if self._shared:
            data = dict(data)
            self._shared = False
        for key in batch.deletes:
            data.pop(key, None)
        data.update(batch.puts)
        self._view = _Frozen(data)

    def iterate_prefix(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._shared = True
        return self._view.iterate_prefix(prefix, start, reverse)

    def snapshot(self) -> ReadView:
        self._shared = True
        return self._view

    def close(self) -> None:
        """Nothing to release in memory."""

    def __len__(self) -> int:
        return len(self._view._data)
