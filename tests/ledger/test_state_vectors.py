"""Public vectors through the production tree: Penumbra JMT and Fuel SMT roots."""

import json
from pathlib import Path

import pytest

from ledger.kv import MemoryStore
from ledger.state import EMPTY_ROOT, FUEL_PARAMS, JMT_PARAMS, StateTree, verify

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
JMT_CASES = json.loads((VECTORS / "jmt" / "sha2_256_vectors.json").read_text())["vectors"]
FUEL_CASES = json.loads((VECTORS / "smt-fuel" / "smt_vectors.json").read_text())["cases"]


def _fuel_bytes(field: dict) -> bytes:
    if field["encoding"] == "hex":
        return bytes.fromhex(field["value"])
    if field["encoding"] == "utf-8":
        return field["value"].encode("utf-8")
    raise ValueError(field["encoding"])


def test_the_vector_files_hold_3_jmt_and_19_fuel_cases():
    assert len(JMT_CASES) == 3
    assert len(FUEL_CASES) == 19


@pytest.mark.parametrize("case", JMT_CASES, ids=lambda case: "%d-keys" % len(case["data"]))
def test_one_batch_reproduces_the_penumbra_jmt_root(case):
    tree = StateTree(MemoryStore(), JMT_PARAMS)
    writes = {bytes.fromhex(e["key"]): bytes.fromhex(e["value"]) for e in case["data"]}
    root = tree.apply(1, writes)
    assert root.hex() == case["expected_root"]
    assert tree.root(1) == root
    for key, value in writes.items():
        verify(root, key, value, tree.prove(key, 1))


@pytest.mark.parametrize("case", JMT_CASES, ids=lambda case: "%d-keys" % len(case["data"]))
def test_one_version_per_write_reproduces_the_penumbra_jmt_root(case):
    tree = StateTree(MemoryStore(), JMT_PARAMS)
    root = tree.apply(0, {})
    assert root == EMPTY_ROOT
    for version, entry in enumerate(case["data"], start=1):
        root = tree.apply(version, {bytes.fromhex(entry["key"]): bytes.fromhex(entry["value"])})
    assert root.hex() == case["expected_root"]


def _fuel_steps(case):
    """Yield (key, value-or-None) per step; empty data deletes (Fuel rule)."""
    for step in case["steps"]:
        key = _fuel_bytes(step["key"])
        if step["action"] == "delete":
            yield key, None
        else:
            data = _fuel_bytes(step["data"])
            yield key, (data or None)


@pytest.mark.parametrize("case", FUEL_CASES, ids=lambda case: case["file"])
def test_one_version_per_step_reproduces_the_fuel_root(case):
    tree = StateTree(MemoryStore(), FUEL_PARAMS)
    model = {}
    root = tree.apply(0, {})
    for version, (key, value) in enumerate(_fuel_steps(case), start=1):
        root = tree.apply(version, {key: value})
        model[key] = value
    assert root.hex() == case["expected_root"]["value"]
    for key, value in sorted(model.items()):
        verify(root, key, value, tree.prove(key, tree.latest_version()), FUEL_PARAMS)


@pytest.mark.parametrize("case", FUEL_CASES, ids=lambda case: case["file"])
def test_the_net_write_set_in_one_batch_reproduces_the_fuel_root(case):
    tree = StateTree(MemoryStore(), FUEL_PARAMS)
    net = {}
    for key, value in _fuel_steps(case):
        net[key] = value
    assert tree.apply(1, net).hex() == case["expected_root"]["value"]
