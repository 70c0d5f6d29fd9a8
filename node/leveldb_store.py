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

    Tuning (defaults measured with scripts/bench_state.py; LevelDB's own
    defaults are 4 MiB / 2 MiB / snappy / no filter):
    - write_buffer_size 64 MiB: a block's batch (~2-3 MB at 1,000 writes)
      lands in a memtable that absorbs many blocks before an L0 flush, so
      fewer, larger L0 files and less compaction work per byte written;
    - max_file_size 8 MiB: fewer table files to open and compact;
    - compression off: state nodes are mostly SHA-256 hashes, which do not
      compress; snappy only spends CPU on every flush and compaction;
    - bloom filter 10 bits/key: a point get (every node/leaf read is one)
      skips the tables of the other levels without reading a block.
    """

    def __init__(
        self,
        path: str,
        sync: bool = True,
        cache_bytes: int = 64 << 20,
        write_buffer_bytes: int = 64 << 20,
        max_file_bytes: int = 8 << 20,
        compression: str | None = None,
        bloom_filter_bits: int = 10,
    ) -> None:
        self._sync = sync
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=True,
                lru_cache_size=cache_bytes,
                write_buffer_size=write_buffer_bytes,
                max_file_size=max_file_bytes,
                compression=compression,
                bloom_filter_bits=bloom_filter_bits,
            )
        except (plyvel.Error, OSError) as exc:
            raise StorageError("cannot open leveldb at %s: %s" % (path, exc)) from exc

    def get(self, key: bytes) -> bytes | None:
        """Raises StorageError on a non-bytes key or a LevelDB failure."""
        if type(key) is not bytes:
            check_key(key)
        try:
            return self._db.get(key)
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb get: %s" % exc) from exc

    def write(self, batch: WriteBatch) -> None:
        """Apply `batch` atomically (one LevelDB WriteBatch, fsync if sync=True).

        Raises StorageError on a non-bytes key/value or a LevelDB failure;
        then nothing of the batch is applied.
        """
        if not isinstance(batch, WriteBatch):
            raise StorageError("write expects a WriteBatch")
        try:
            # transaction=True: an exception inside the block (a bad key found
            # half-way) discards the whole LevelDB batch, so the checks can
            # run in the same pass as the puts.
            with self._db.write_batch(transaction=True, sync=self._sync) as leveldb_batch:
                delete = leveldb_batch.delete
                for key in batch.deletes:
                    if type(key) is not bytes:
                        raise StorageError("keys must be bytes")
                    delete(key)
                put = leveldb_batch.put
                for key, value in batch.puts.items():
                    if type(key) is not bytes or type(value) is not bytes:
                        raise StorageError("keys and values must be bytes")
                    put(key, value)
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb write: %s" % exc) from exc

    def property(self, name: bytes) -> bytes | None:
        """A LevelDB property such as b"leveldb.stats" (diagnostics)."""
        try:
            return self._db.get_property(name)
        except (plyvel.Error, RuntimeError) as exc:
            raise StorageError("leveldb property: %s" % exc) from exc

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
