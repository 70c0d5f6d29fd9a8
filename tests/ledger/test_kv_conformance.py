"""One conformance suite for every KeyValueStore: memory and LevelDB behave alike."""

import pytest

from ledger.errors import StorageError
from ledger.kv import MemoryStore, WriteBatch, prefix_end
from node.leveldb_store import LevelDBStore


@pytest.fixture(params=["memory", "leveldb"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        db = LevelDBStore(str(tmp_path / "db"))
        yield db
        db.close()


def write(store, puts=(), deletes=()):
    batch = WriteBatch()
    for key in deletes:
        batch.delete(key)
    for key, value in dict(puts).items():
        batch.put(key, value)
    store.write(batch)


KEYS = [b"a", b"a\x00", b"a\x01", b"a\xff", b"a\xff\xff", b"ab", b"b", b"\xff", b"\xff\xff"]


def fill(store):
    write(store, {key: b"v" + key for key in KEYS})


def test_get_returns_the_value_written_and_none_for_a_missing_key(store):
    assert store.get(b"k") is None
    write(store, {b"k": b"v", b"empty": b""})
    assert store.get(b"k") == b"v"
    assert store.get(b"empty") == b""
    assert store.get(b"k2") is None


def test_a_batch_applies_puts_and_deletes_together(store):
    write(store, {b"a": b"1", b"b": b"2"})
    write(store, {b"c": b"3", b"a": b"9"}, deletes=[b"b", b"missing"])
    assert [store.get(k) for k in (b"a", b"b", b"c")] == [b"9", None, b"3"]


def test_the_last_operation_on_a_key_in_a_batch_wins(store):
    batch = WriteBatch()
    batch.put(b"x", b"1")
    batch.delete(b"x")
    batch.delete(b"y")
    batch.put(b"y", b"2")
    store.write(batch)
    assert store.get(b"x") is None and store.get(b"y") == b"2"


def test_a_batch_with_a_bad_entry_writes_nothing(store):
    write(store, {b"a": b"1"})
    batch = WriteBatch()
    batch.put(b"b", b"2")
    batch.puts[b"c"] = "not bytes"  # bypasses put()'s check
    with pytest.raises(StorageError):
        store.write(batch)
    assert store.get(b"b") is None and store.get(b"a") == b"1"


def test_batch_helpers_reject_non_bytes():
    batch = WriteBatch()
    with pytest.raises(StorageError):
        batch.put("k", b"v")
    with pytest.raises(StorageError):
        batch.put(b"k", bytearray(b"v"))
    with pytest.raises(StorageError):
        batch.delete(1)


def test_bad_key_types_raise_storage_error(store):
    with pytest.raises(StorageError):
        store.get("k")
    with pytest.raises(StorageError):
        list(store.iterate_prefix("a"))


def test_delete_removes_a_key(store):
    write(store, {b"k": b"v"})
    write(store, deletes=[b"k"])
    assert store.get(b"k") is None
    assert list(store.iterate_prefix(b"")) == []


def test_prefix_iteration_is_in_byte_order(store):
    fill(store)
    assert [k for k, _ in store.iterate_prefix(b"a")] == [b"a", b"a\x00", b"a\x01", b"ab", b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in store.iterate_prefix(b"a\xff")] == [b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in store.iterate_prefix(b"\xff")] == [b"\xff", b"\xff\xff"]
    assert list(store.iterate_prefix(b"")) == [(k, b"v" + k) for k in sorted(KEYS)]
    assert list(store.iterate_prefix(b"c")) == []


def test_reverse_prefix_iteration_is_in_descending_order(store):
    fill(store)
    assert [k for k, _ in store.iterate_prefix(b"a", reverse=True)] == [
        b"a\xff\xff", b"a\xff", b"ab", b"a\x01", b"a\x00", b"a"
    ]
    assert [k for k, _ in store.iterate_prefix(b"", reverse=True)] == sorted(KEYS, reverse=True)
    assert [k for k, _ in store.iterate_prefix(b"\xff", reverse=True)] == [b"\xff\xff", b"\xff"]


def test_start_is_an_inclusive_bound_in_the_direction_of_travel(store):
    fill(store)
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"a\x01")] == [b"a\x01", b"ab", b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"a\x02")] == [b"ab", b"a\xff", b"a\xff\xff"]
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"a\x01", reverse=True)] == [b"a\x01", b"a\x00", b"a"]
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"ac", reverse=True)] == [b"ab", b"a\x01", b"a\x00", b"a"]
    # A start outside the prefix clamps to the prefix range.
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"")] == [k for k, _ in store.iterate_prefix(b"a")]
    assert [k for k, _ in store.iterate_prefix(b"a", start=b"z", reverse=True)] == [
        k for k, _ in store.iterate_prefix(b"a", reverse=True)
    ]
    assert list(store.iterate_prefix(b"a", start=b"b")) == []
    assert list(store.iterate_prefix(b"b", start=b"a", reverse=True)) == []


def test_a_snapshot_does_not_see_later_writes(store):
    write(store, {b"p/1": b"old", b"p/2": b"two"})
    snap = store.snapshot()
    write(store, {b"p/1": b"new", b"p/3": b"three"}, deletes=[b"p/2"])
    assert snap.get(b"p/1") == b"old" and snap.get(b"p/2") == b"two" and snap.get(b"p/3") is None
    assert list(snap.iterate_prefix(b"p/")) == [(b"p/1", b"old"), (b"p/2", b"two")]
    assert list(snap.iterate_prefix(b"p/", reverse=True)) == [(b"p/2", b"two"), (b"p/1", b"old")]
    assert store.get(b"p/1") == b"new" and store.get(b"p/2") is None
    snap.close()


def test_an_open_iterator_does_not_see_later_writes(store):
    write(store, {b"p/%d" % i: b"%d" % i for i in range(5)})
    iterator = store.iterate_prefix(b"p/")
    assert next(iterator) == (b"p/0", b"0")
    write(store, {b"p/9": b"9", b"p/3": b"x"}, deletes=[b"p/4"])
    assert list(iterator) == [(b"p/1", b"1"), (b"p/2", b"2"), (b"p/3", b"3"), (b"p/4", b"4")]


def test_leveldb_data_survives_reopening(tmp_path):
    db = LevelDBStore(str(tmp_path / "db"))
    write(db, {b"k": b"v"})
    db.close()
    again = LevelDBStore(str(tmp_path / "db"))
    assert again.get(b"k") == b"v"
    again.close()


def test_opening_an_unusable_path_raises_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError):
        LevelDBStore(str(blocker / "db"))


def test_prefix_end_is_the_first_key_after_the_prefix():
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


def test_a_batch_with_a_bad_delete_key_writes_nothing(store):
    write(store, {b"a": b"1"})
    batch = WriteBatch()
    batch.put(b"b", b"2")
    batch.deletes["a"] = None  # bypasses delete()'s check
    with pytest.raises(StorageError):
        store.write(batch)
    assert store.get(b"b") is None and store.get(b"a") == b"1"


def test_leveldb_tuning_options_do_not_change_the_data(tmp_path):
    # Written with the tuned defaults (no compression, bloom filter, large
    # write buffer), read back with LevelDB's own defaults, and the reverse.
    db = LevelDBStore(str(tmp_path / "db"), sync=False)
    write(db, {b"k%d" % i: bytes(100) + b"%d" % i for i in range(2000)})
    db.close()
    plain = LevelDBStore(
        str(tmp_path / "db"), write_buffer_bytes=4 << 20, max_file_bytes=2 << 20,
        compression="snappy", bloom_filter_bits=0,
    )
    assert plain.get(b"k1999") == bytes(100) + b"1999"
    write(plain, {b"later": b"x"})
    assert plain.property(b"leveldb.stats") is not None
    plain.close()
    again = LevelDBStore(str(tmp_path / "db"))
    assert again.get(b"later") == b"x" and sum(1 for _ in again.iterate_prefix(b"k")) == 2000
    again.close()
