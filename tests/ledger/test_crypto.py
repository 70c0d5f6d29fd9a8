"""ed25519 through PyNaCl: domain separation, key files, and the pinned set of
C2SP edge-case signatures the one shared verifier accepts."""

import json
import pathlib

import pytest

from ledger import crypto
from ledger.errors import SignatureError
from node import keys

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "vectors" / "ed25519"
KEY = crypto.private_key_from_seed(bytes(range(32)))


def test_a_signature_verifies_for_its_own_kind_and_chain():
    signature = KEY.sign("tx", "careledger-test", b"payload")
    crypto.verify(KEY.public_key, "tx", "careledger-test", b"payload", signature)


@pytest.mark.parametrize(
    "kind, chain, payload",
    [("commit", "careledger-test", b"payload"), ("tx", "careledger-other", b"payload"), ("tx", "careledger-test", b"payloaD")],
)
def test_a_signature_is_not_valid_as_another_kind_chain_or_payload(kind, chain, payload):
    signature = KEY.sign("tx", "careledger-test", b"payload")
    with pytest.raises(SignatureError):
        crypto.verify(KEY.public_key, kind, chain, payload, signature)


@pytest.mark.parametrize(
    "public_key, signature",
    [(b"short", bytes(64)), (bytes(32), b"short"), ("text", bytes(64)), (bytes(32), bytes(64))],
)
def test_malformed_keys_and_signatures_raise_signature_error(public_key, signature):
    with pytest.raises(SignatureError):
        crypto.verify(public_key, "tx", "careledger-test", b"x", signature)


@pytest.mark.parametrize("kind, chain", [("unknown", "careledger-test"), ("tx", "Bad Chain!"), ("tx", "")])
def test_unknown_kinds_and_malformed_chain_ids_are_refused(kind, chain):
    with pytest.raises(SignatureError):
        crypto.sign_bytes(kind, chain, b"")


def test_sign_bytes_are_prefixed_by_kind_and_chain():
    assert crypto.sign_bytes("commit", "c1", b"p") == b"careledger/commit/v1\x00c1\x00p"


def test_key_files_round_trip_and_are_private(tmp_path):
    path = tmp_path / "key.json"
    key = keys.generate_private_key()
    keys.save_key_file(str(path), key)
    assert keys.load_key_file(str(path)) == key
    assert path.stat().st_mode & 0o077 == 0
    assert key.seed.hex() not in repr(key)


def test_a_key_file_whose_public_key_does_not_match_is_refused(tmp_path):
    path = tmp_path / "key.json"
    keys.save_key_file(str(path), KEY)
    body = json.loads(path.read_text())
    body["public_key"] = "00" * 32
    path.write_text(json.dumps(body))
    with pytest.raises(SignatureError):
        keys.load_key_file(str(path))


def test_a_garbled_key_file_is_refused(tmp_path):
    path = tmp_path / "key.json"
    path.write_text("{not json")
    with pytest.raises(SignatureError):
        keys.load_key_file(str(path))


def test_pynacl_accepts_exactly_the_pinned_c2sp_edge_cases():
    """PyNaCl 1.6 (libsodium) accepts 43 of the 914 C2SP vectors; every node and
    observer must share this verdict, so any drift fails here."""
    cases = json.loads((VECTORS / "ed25519vectors.json").read_text())
    pinned = json.loads((VECTORS / "pynacl_accepts.json").read_text())["accepted_numbers"]
    accepted = []
    for case in cases:
        try:
            crypto.verify_raw(bytes.fromhex(case["key"]), case["msg"].encode(), bytes.fromhex(case["sig"]))
        except SignatureError:
            continue
        accepted.append(case["number"])
    assert len(cases) == 914
    assert accepted == pinned
    assert len(accepted) == 43


def test_no_accepted_edge_case_has_a_non_canonical_or_low_order_point():
    cases = json.loads((VECTORS / "ed25519vectors.json").read_text())
    pinned = set(json.loads((VECTORS / "pynacl_accepts.json").read_text())["accepted_numbers"])
    forbidden = {"non_canonical_A", "non_canonical_R", "low_order_A", "low_order_R", "low_order_residue", "reencoded_k"}
    for case in cases:
        if case["number"] in pinned:
            assert not forbidden & set(case["flags"] or [])
