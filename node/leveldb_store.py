"""LevelDB implementation of `ledger.kv.KeyValueStore` (plyvel).

Why here: plyvel is I/O, so it lives under node/; the kernel only sees the
protocol. Commits use one LevelDB WriteBatch with sync=True by default, so a
kill -9 leaves either the whole batch or none of it on disk.
"""

from __future__ import annotations

from typing import Any, Iterator

import plyvel

from ledger.errors import StorageError
from ledger.kv import WriteBatch, check_key, prefix_end


def _iterate(
    source: Any, prefix: bytes, start: bytes | None, reverse: bool
) -> Iterator[tuple[bytes, bytes]]:
    """Prefix iteration over a plyvel DB or snapshot with an inclusive `start`."""
    check_key(prefix)
    end = prefix_end(prefix)
    try:
        if reverse:
            if start is not None and (end is None or start < end):
                check_key(start)
                iterator = source.iterator(
                    start=prefix, stop=start, include_stop=True, reverse=True
                )
            else:
                iterator = source.iterator(start=prefix, stop=end, reverse=True)
        else:
            lower = prefix if start is None or check_key(start) < prefix else start
            iterator = source.iterator(start=lower, stop=end)
    except plyvel.Error as exc:
        raise StorageError("leveldb iterator: %s" % exc) from exc
    return _guarded(iterator)


def _guarded(iterator: Any) -> Iterator[tuple[bytes, bytes]]:
    with iterator:
        try:
            for key, value in iterator:
                yield key, value
        except plyvel.Error as exc:
            raise StorageError("leveldb iteration: %s" % exc) from exc


class LevelDBSnapshot:
    """A consistent read-only view; call close() (or let it be collected)."""

    def __init__(self, snapshot: Any) -> None:
        self._snapshot = snapshot

    def get(self, key: bytes) -> bytes | None:
        """Raises StorageError on a non-bytes key or a LevelDB failure."""
        try:
            return self._snapshot.get(check_key(key))
        except plyvel.Error as exc:
            raise StorageError("leveldb get: %s" % exc) from exc

    def iterate_prefix(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._snapshot, prefix, start, reverse)

    def close(self) -> None:
        self._snapshot.close()


class LevelDBStore:
    """KeyValueStore on a LevelDB directory.

    Raises StorageError when the database cannot be opened (missing parent
    directory, held by another process, corrupt).
    """

    def __init__(self, path: str, sync: bool = True, cache_bytes: int = 64 << 20) -> None:
        self._sync = sync
        try:
            self._db = plyvel.DB(
                str(path), create_if_missing=True, lru_cache_size=cache_bytes
            )
        except (plyvel.Error, OSError) as exc:
            raise StorageError("cannot open leveldb at %s: %s" % (path, exc)) from exc

    def get(self, key: bytes) -> bytes | None:
        """Raises StorageError on a non-bytes key or a LevelDB failure."""
        try:
            return self._db.get(check_key(key))
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb get: %s" % exc) from exc

    def write(self, batch: WriteBatch) -> None:
        """Apply `batch` atomically (one LevelDB WriteBatch, fsync if sync=True).

        Raises StorageError on a non-bytes key/value or a LevelDB failure;
        then nothing of the batch is applied.
        """
        if not isinstance(batch, WriteBatch):
            raise StorageError("write expects a WriteBatch")
        for key in batch.deletes:
            check_key(key)
        for key, value in batch.puts.items():
            if type(key) is not bytes or type(value) is not bytes:
                raise StorageError("keys and values must be bytes")
        try:
            with self._db.write_batch(transaction=True, sync=self._sync) as leveldb_batch:
                for key in batch.deletes:
                    leveldb_batch.delete(key)
                for key, value in batch.puts.items():
                    leveldb_batch.put(key, value)
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb write: %s" % exc) from exc

    def iterate_prefix(
        self, prefix: bytes, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._db, prefix, start, reverse)

    def snapshot(self) -> LevelDBSnapshot:
        try:
            return LevelDBSnapshot(self._db.snapshot())
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb snapshot: %s" % exc) from exc

    def close(self) -> None:
        self._db.close()
