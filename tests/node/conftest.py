"""Fixtures shared by the node tests."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ledger.kv import MemoryStore
from node.leveldb_store import LevelDBStore


@pytest.fixture(params=["memory", "leveldb"])
def kv(request: Any, tmp_path: Any) -> Iterator[Any]:
    """A key-value store of each kind the node runs on (in-memory and LevelDB)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    store = LevelDBStore(str(tmp_path / "db"))
    yield store
    store.close()
