"""Ledger records: encodings round-trip, hashes are stable, bad fields are typed
errors, and certificates need a quorum of distinct validators."""

import msgpack
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


def test_a_header_hash_is_computed_once_and_is_the_hash_of_its_encoding():
    from ledger.hashing import sha256

    header = make_block([make_tx(1)]).header
    assert "hash" not in header.__dict__
    first = header.hash
    assert first == sha256(header.encode()) == sha256(codec.encode(header.to_wire()))
    assert header.__dict__["hash"] is first and header.hash is first
    assert Header.decode(header.encode()).hash == first
    assert header == Header(*header.to_wire()) and hash(header) == hash(Header(*header.to_wire()))

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


@settings(max_examples=500, deadline=None)
@given(_wire_values, _wire_values)
def test_a_known_tx_is_found_exactly_when_the_wire_is_identical(body_a, body_b):
    # `find`'s unrolled comparison agrees with `_identical` on the whole wire,
    # nested containers included (bodies are maps, as a decoded tx's are)
    from ledger.types import KnownTxs, _identical

    def as_map(value):
        return value if isinstance(value, dict) else {"v": value}
    key = KEYS[0]
    tx = Tx(CHAIN, key.public_key, 3, "transfer", as_map(body_a), bytes(64))
    known = KnownTxs()
    known.add(tx)
    for candidate in (tx.to_wire(), [CHAIN, key.public_key, 3, "transfer", as_map(body_b), bytes(64)]):
        found = known.find(candidate)
        assert found is (tx if _identical(candidate, tx.to_wire()) else None)

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


# ------------------------------------- Tx.decode's direct path vs the reference
#
# `Tx.decode` tries `Tx._decode_direct` (one msgpack parse, the fixed layout
# checked in place) and falls back to `Tx._decode_reference` (generic canonical
# decode, then `from_wire`). Both must accept the same bytes as the same tx and
# refuse the same bytes with the same error.


def _decode_outcome(decode, raw):
    """What a caller can observe: the tx with its bytes, payload, hash and
    body key order, or the error's type and message."""
    try:
        tx = decode(raw)
    except (DecodeError, ValidationError) as exc:
        return (type(exc).__name__, str(exc))
    return ("ok", tx, type(tx.nonce), list(tx.body), tx.encode(), tx.signing_payload(), tx.hash)


def _assert_same_tx_decode(raw):
    direct = Tx._decode_direct(raw)
    reference = _decode_outcome(Tx._decode_reference, raw)
    assert _decode_outcome(Tx.decode, raw) == reference
    if direct is not None:  # the direct path alone never accepts what the reference refuses
        assert reference[0] == "ok" and _decode_outcome(lambda _: direct, raw) == reference


_ascii = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=64)
_nested_bodies = st.dictionaries(
    st.text(max_size=6) | st.binary(max_size=4) | st.integers(-3, 3),
    st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8)
                 | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6), max_size=4)
_tx_fields = st.tuples(st.text(min_size=1, max_size=64) | _ascii, st.binary(min_size=32, max_size=32),
                       st.integers(0, 2**64 - 1), st.text(min_size=1, max_size=64) | _ascii,
                       _tx_bodies | _nested_bodies, st.binary(min_size=64, max_size=64))


@settings(max_examples=1500, deadline=None)
@given(_tx_fields)
def test_a_valid_tx_decodes_the_same_by_the_direct_path_and_the_reference(fields):
    raw = codec.encode(list(fields))
    _assert_same_tx_decode(raw)
    chain, _, _, tx_type, body, _ = fields
    if all(type(key) is str and key.isascii() for key in body) and all(
            type(item) in (int, str, bytes, bool, type(None)) for item in body.values()):
        assert Tx._decode_direct(raw) is not None  # the usual shape does take the direct path


def _near_tx_wires():
    """Wires a tx decoder must refuse or read with care: a field of the wrong
    type, size or range, a wrong count, floats and non-canonical bodies."""
    good = [CHAIN, bytes(32), 1, "transfer", {"to": bytes(32), "amount": 5}, bytes(64)]
    changes = {
        0: ["", "c" * 65, 7, b"chain", None, "é" * 64, "é" * 65, "x" * 31, "x" * 32],
        1: [bytes(31), bytes(33), "k" * 32, 1, None],
        2: [-1, True, False, 2**64 - 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 1.0, "1", None],
        3: ["", "t" * 65, "t" * 64, 3, b"transfer"],
        4: [[], [1], "body", None, 1, {"a": 1.5}, {"amount": 5, "to": bytes(32)}, {1: 2}, {b"k": 1, "k": 2},
            {"a": {"b": [1, {"c": 2}]}}, {"é": 1, "a": 2}, {"": None}, {"b": 1, "a": 2}, {"bb": 1, "c": 2}],
        5: [bytes(63), bytes(65), "s" * 64, None],
    }
    wires = [good, good[:5], good + [1], [], good[:5] + [bytes(64), bytes(64)]]
    for index, values in changes.items():
        for value in values:
            wire = list(good)
            wire[index] = value
            wires.append(wire)
    return wires


@pytest.mark.parametrize("wire", _near_tx_wires())
def test_near_tx_wires_decode_the_same_by_the_direct_path_and_the_reference(wire):
    # packed as they stand (maps in their own order, floats kept: possibly not
    # canonical) and canonically where that is possible
    _assert_same_tx_decode(msgpack.packb(wire, use_bin_type=True))
    try:
        _assert_same_tx_decode(codec.encode(wire))
    except LedgerError:
        pass


@pytest.mark.parametrize("raw", [
    b"\xdc\x00\x06" + codec.encode(make_tx().to_wire())[1:],  # array16 header for 6 items
    codec.encode(make_tx().to_wire())[:1] + b"\xd9\x0f" + codec.encode(make_tx().to_wire())[2:],  # str8 chain id
    codec.encode(make_tx().to_wire()).replace(b"\x01\xa8transfer", b"\xcc\x01\xa8transfer"),  # uint8 nonce 1
    codec.encode(make_tx().to_wire()) + b"\x00", codec.encode(make_tx().to_wire())[:-1], b"", b"\x96", b"\xc1",
    b"\x96" + b"\xc0" * 6, bytes(64 * 1024 + 1), b"\x00" * 100,
])
def test_non_canonical_and_truncated_txs_are_refused_alike(raw):
    _assert_same_tx_decode(raw)


@settings(max_examples=1500, deadline=None)
@given(_tx_fields, st.data())
def test_mutated_txs_decode_the_same_by_the_direct_path_and_the_reference(fields, data):
    raw = bytearray(codec.encode(list(fields)))
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
        if how == "flip" and raw:
            raw[position] ^= data.draw(st.integers(1, 255))
        elif how == "cut":
            del raw[position:position + data.draw(st.integers(1, 4))]
        else:
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=3))
    _assert_same_tx_decode(bytes(raw))


def test_a_decoded_tx_keeps_the_digest_its_caller_computed():
    raw = make_tx().encode()
    from ledger.hashing import sha256
    tx = Tx.decode(raw, digest=sha256(raw))
    assert tx.__dict__["hash"] == tx.hash == make_tx().hash
