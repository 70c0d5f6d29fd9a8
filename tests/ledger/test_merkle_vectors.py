"""RFC 6962 verifiers against every transparency-dev vector, plus generators
checked against the extracted tree heads and by round trip."""

import base64
import hashlib
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import ProofError, ValidationError

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors" / "rfc6962"


def _b64(value):
    return base64.b64decode(value) if value is not None else None


def _cases(kind):
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, "vectors missing"
    return files


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: "/".join(p.parts[-2:]))
def test_inclusion_vector(path):
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion_hash(*args)
    else:
        merkle.verify_inclusion_hash(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: "/".join(p.parts[-2:]))
def test_consistency_vector(path):
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vector_counts_match_the_published_set():
    cases = [json.loads(p.read_text()) for p in _cases("inclusion") + _cases("consistency")]
    valid = sum(1 for c in cases if not c["wantErr"])
    assert valid >= 12 and len(cases) - valid >= 180


def test_hasher_known_answers():
    kat = json.loads((VECTORS / "hasher_kat.json").read_text())
    for case in kat["cases"]:
        inp, want = case["input"], bytes.fromhex(case["want"])
        if inp.get("empty_tree"):
            assert merkle.root([]) == want
        elif "leaf_hex" in inp:
            assert merkle.leaf_hash(bytes.fromhex(inp["leaf_hex"])) == want
        else:
            left = bytes.fromhex(inp["left_hex"])
            right = bytes.fromhex(inp["right_hex"])
            assert merkle.node_hash(left, right) == want


def test_tree_heads_for_every_size():
    heads = json.loads((VECTORS / "tree_heads.json").read_text())
    leaves = [bytes.fromhex(h) for h in heads["leaf_inputs_hex"]]
    for size, want in enumerate(heads["root_hashes_by_size_hex"]):
        assert merkle.root(leaves[:size]).hex() == want


def _reference_mth(leaves):
    """RFC 6962 §2.1 MTH, written as the RFC states it (recursive, no shortcuts)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):  # the largest power of two smaller than n
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(leaves[:k]) + _reference_mth(leaves[k:])).digest()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=300))
def test_roots_match_a_plain_rfc6962_mth(leaves):
    want = _reference_mth(leaves)
    assert merkle.root(leaves) == want
    leaf_hashes = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    assert merkle.root_from_hashes(leaf_hashes) == want
    assert merkle.root_from_hashes(tuple(leaf_hashes)) == want


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 300, 400, 1023, 1025])
def test_roots_match_a_plain_rfc6962_mth_at_edge_sizes(size):
    leaves = [b"leaf %d" % i for i in range(size)]
    assert merkle.root(leaves) == _reference_mth(leaves)


leaf_lists = st.lists(st.binary(max_size=16), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_generated_inclusion_proofs_verify_and_reject_other_leaves(leaves, data):
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle.inclusion_proof(leaves, index)
    top = merkle.root(leaves)
    merkle.verify_inclusion(leaves[index], index, len(leaves), proof, top)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index] + b"x", index, len(leaves), proof, top)
    if proof:
        bad = list(proof)
        bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, len(leaves), bad, top)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_generated_consistency_proofs_verify_and_reject_a_rewritten_prefix(leaves, data):
    old = data.draw(st.integers(1, len(leaves)))
    proof = merkle.consistency_proof(leaves, old)
    merkle.verify_consistency(old, len(leaves), proof, merkle.root(leaves[:old]), merkle.root(leaves))
    rewritten = [b"changed"] + leaves[1:old]
    if merkle.root(rewritten) != merkle.root(leaves[:old]):
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, len(leaves), proof, merkle.root(rewritten), merkle.root(leaves))


@pytest.mark.parametrize(
    "args",
    [
        (b"x", -1, 3, [], bytes(32)),
        (b"x", 0, "3", [], bytes(32)),
        (b"x", 0, 1, "not a list", bytes(32)),
        (b"x", 0, 2, [b"short"], bytes(32)),
        (b"x", 0, 2, [bytes(32)] * 65, bytes(32)),
        ("str", 0, 1, [], bytes(32)),
    ],
)
def test_malformed_inclusion_arguments_raise_proof_error(args):
    with pytest.raises(ProofError):
        merkle.verify_inclusion(*args)


def test_generators_reject_out_of_range_indexes():
    with pytest.raises(ValidationError):
        merkle.inclusion_proof([b"a"], 1)
    with pytest.raises(ValidationError):
        merkle.consistency_proof([b"a"], 0)
