"""Ledger records: encodings round-trip, hashes are stable, bad fields are typed
errors, and certificates need a quorum of distinct validators."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, merkle
from ledger.crypto import private_key_from_seed
from ledger.errors import DecodeError, LedgerError, SignatureError, ValidationError
from ledger.types import (
    Block, CommitCertificate, Header, Tx, Validator, ValidatorSet, commit_vote_payload, compute_tx_root,
    make_certificate,
)

CHAIN = "careledger-test"
KEYS = [private_key_from_seed(bytes([i + 1]) * 32) for i in range(7)]


def validator_set(n):
    return ValidatorSet(tuple(Validator("v%d" % i, KEYS[i].public_key) for i in range(n)))


def make_tx(nonce=1):
    key = KEYS[0]
    return Tx(CHAIN, key.public_key, nonce, "transfer", {"to": bytes(32), "amount": 5}).signed(key)


def make_block(txs=()):
    vs = validator_set(4)
    header = Header(
        CHAIN, 1, 0, 1_700_000_000_000, bytes(32), compute_tx_root(list(txs)), merkle.EMPTY_ROOT,
        bytes(32), vs.hash, vs.hash, merkle.EMPTY_ROOT, 0, KEYS[0].public_key,
    )
    return Block(header, tuple(txs))


def sign_commit(block, signers, view=0, height=None):
    height = block.height if height is None else height
    payload = commit_vote_payload(height, view, block.hash)
    return make_certificate(height, view, block.hash, {k.public_key: k.sign("commit", CHAIN, payload) for k in signers})


@pytest.mark.parametrize("n, f, quorum", [(4, 1, 3), (5, 1, 4), (6, 1, 5), (7, 2, 5), (10, 3, 7), (13, 4, 9)])
def test_fault_tolerance_and_quorum_follow_the_design(n, f, quorum):
    keys = [private_key_from_seed(bytes([i + 100]) * 32) for i in range(n)]
    vs = ValidatorSet(tuple(Validator("v%d" % i, k.public_key) for i, k in enumerate(keys)))
    assert (vs.max_faulty, vs.quorum) == (f, quorum)
    assert 2 * vs.quorum - n >= f + 1  # any two quorums share an honest validator


def test_a_tx_round_trips_and_its_signature_verifies():
    tx = make_tx()
    again = Tx.decode(tx.encode())
    assert again == tx and again.hash == tx.hash
    again.verify_signature()


def test_a_tx_with_a_changed_body_fails_signature_verification():
    tx = make_tx()
    forged = Tx(tx.chain_id, tx.sender, tx.nonce, tx.type, {"to": bytes(32), "amount": 500}, tx.signature)
    with pytest.raises(SignatureError):
        forged.verify_signature()


@pytest.mark.parametrize(
    "wire",
    [
        [CHAIN, b"short", 1, "t", {}, bytes(64)],
        [CHAIN, bytes(32), -1, "t", {}, bytes(64)],
        [CHAIN, bytes(32), 1, "", {}, bytes(64)],
        [CHAIN, bytes(32), 1, "t", [], bytes(64)],
        [CHAIN, bytes(32), 1, "t", {}, b"sig"],
        [CHAIN, bytes(32), True, "t", {}, bytes(64)],
        [CHAIN, bytes(32), 1, "t", {}],
        "not a list",
    ],
)
def test_malformed_tx_fields_are_typed_errors(wire):
    with pytest.raises((DecodeError, ValidationError)):
        Tx.from_wire(wire)


def test_oversize_tx_bytes_are_refused_before_parsing():
    with pytest.raises(DecodeError):
        Tx.decode(b"\x00" * (64 * 1024 + 1))


def test_a_block_round_trips_and_checks_its_tx_root():
    block = make_block([make_tx(1), make_tx(2)])
    again = Block.decode(block.encode())
    assert again == block and again.hash == block.hash
    again.check_tx_root()
    swapped = Block(block.header, (block.txs[1], block.txs[0]))
    with pytest.raises(ValidationError):
        swapped.check_tx_root()


def test_a_header_whose_history_size_is_not_height_minus_one_is_refused():
    wire = make_block().header.to_wire()
    wire[11] = 5
    with pytest.raises(ValidationError):
        Header.from_wire(wire)


def test_a_quorum_certificate_verifies():
    block = make_block()
    sign_commit(block, KEYS[:3]).verify(CHAIN, validator_set(4), block.hash, 1)
    cert = CommitCertificate.decode(sign_commit(block, KEYS[:3]).encode())
    cert.verify(CHAIN, validator_set(4), block.hash, 1)


@pytest.mark.parametrize(
    "case",
    ["too_few", "non_validator", "other_height", "other_chain", "duplicate_signer", "other_block"],
)
def test_bad_certificates_are_refused(case):
    block = make_block()
    vs = validator_set(4)
    if case == "too_few":
        cert = sign_commit(block, KEYS[:2])
    elif case == "non_validator":
        cert = sign_commit(block, [KEYS[0], KEYS[1], KEYS[5]])
    elif case == "other_height":
        cert = sign_commit(block, KEYS[:3], height=2)
    elif case == "other_chain":
        payload = commit_vote_payload(1, 0, block.hash)
        cert = make_certificate(1, 0, block.hash, {k.public_key: k.sign("commit", "other-chain", payload) for k in KEYS[:3]})
    elif case == "duplicate_signer":
        good = sign_commit(block, KEYS[:2])
        cert = CommitCertificate(1, 0, block.hash, good.signatures + (good.signatures[0],))
    else:
        cert = sign_commit(block, KEYS[:3])
        with pytest.raises(SignatureError):
            cert.verify(CHAIN, vs, bytes(32), 1)
        return
    with pytest.raises(SignatureError):
        cert.verify(CHAIN, vs, block.hash, 1)


def test_a_validator_set_refuses_duplicate_keys():
    with pytest.raises(ValidationError):
        ValidatorSet((Validator("a", KEYS[0].public_key), Validator("b", KEYS[0].public_key)))


def test_every_kernel_error_derives_from_ledger_error():
    for error in (DecodeError, SignatureError, ValidationError):
        assert issubclass(error, LedgerError)


_tx_bodies = st.dictionaries(
    st.text(max_size=40), st.integers(0, 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=300)
    | st.lists(st.integers(-5, 5), max_size=3), max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=64), st.integers(0, 2**64 - 1), st.text(min_size=1, max_size=64), _tx_bodies)
def test_a_decoded_tx_keeps_exactly_the_bytes_and_signing_payload_a_fresh_encode_gives(chain, nonce, tx_type, body):
    # Tx.decode keeps the received bytes as the encoding and slices the signing
    # payload out of them: both must equal what encoding the fields gives
    tx = Tx(chain, KEYS[1].public_key, nonce, tx_type, body, bytes(range(64)))
    raw = codec.encode(tx.to_wire())
    decoded = Tx.decode(raw)
    fresh = Tx(*decoded.to_wire())
    assert decoded == tx and decoded.encode() == raw == fresh.encode()
    assert decoded.signing_payload() == fresh.signing_payload() == codec.encode([tx.sender, nonce, tx_type, body])
    assert decoded.hash == fresh.hash


_wire_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, min_value=-3, max_value=3) \
    | st.binary(max_size=2) | st.text(max_size=2)
_wire_values = st.recursive(
    _wire_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=2) | st.integers(0, 2) | st.booleans(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=1000, deadline=None)
@given(_wire_values, _wire_values)
def test_identical_wires_have_identical_canonical_bytes(a, b):
    from ledger.types import _identical

    def outcome(value):
        try:
            return codec.encode(value)
        except LedgerError as exc:
            return type(exc)
    if _identical(a, b):
        assert outcome(a) == outcome(b)
    assert _identical(a, a) or a != a  # reflexive (NaN aside)


def test_a_known_tx_is_found_only_by_an_identical_wire():
    from ledger.types import KnownTxs

    known = KnownTxs()
    tx = Tx.decode(make_tx().encode())
    known.add(tx)
    assert known.find(tx.to_wire()) is tx
    assert known.find(codec.decode(tx.encode())) is tx
    wire = tx.to_wire()
    for changed in (
        [wire[0], wire[1], True, *wire[3:]] if wire[2] == 1 else None,  # nonce 1 as a bool
        wire[:4] + [{"amount": 5, "to": bytes(32)}] + wire[5:],  # same map, other key order
        wire[:4] + [{"to": bytes(32), "amount": 6}] + wire[5:],
        wire[:4] + [{"to": bytearray(32), "amount": 5}] + wire[5:],
        wire[:5] + [bytes(64)],
        tuple(wire),
        wire[:5],
    ):
        if changed is not None:
            assert known.find(changed) is None
    # Tx.from_wire of a different wire under the same signature is built as usual
    forged = Tx.from_wire(wire[:4] + [{"to": bytes(32), "amount": 6}] + wire[5:])
    assert forged.body["amount"] == 6 and forged.hash != tx.hash
    known.discard(Tx.decode(tx.encode()))  # another object: not the registered one
    assert known.find(wire) is tx
    known.discard(tx)
    assert known.find(wire) is None and len(known) == 0


def test_a_block_decoded_by_a_node_reuses_its_pooled_txs():
    from ledger.types import KNOWN_TXS

    pooled = Tx.decode(make_tx(nonce=7).encode())
    other = make_tx(nonce=8)
    KNOWN_TXS.add(pooled)
    try:
        block = Block.decode(make_block([pooled, other]).encode())
        assert block.txs[0] is pooled and block.txs[1] == other and block.txs[1] is not other
        block.check_tx_root()
    finally:
        KNOWN_TXS.discard(pooled)
