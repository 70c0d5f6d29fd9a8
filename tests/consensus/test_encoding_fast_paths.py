"""The consensus encoders that join cached bytes instead of re-walking them
(`Proposal.encode`, `Decided.encode`, `decode_message` of a proposal,
`PersistedState.encode`)
give exactly what the canonical codec gives, errors included: these are wire
and disk formats, and a replica must accept and refuse the same bytes."""

from __future__ import annotations

from typing import Any, Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import messages
from consensus.messages import (
    MAX_MESSAGE_BYTES, Decided, PreparedCertificate, Proposal, array_header, decode_message,
)
from consensus.persist import MAX_STATE_BYTES, STATE_VERSION, PersistedState, SignedRecord
from ledger import codec
from ledger.types import Block, CommitCertificate, Tx

from tests.consensus.helpers import CHAIN, CLIENT, KEYS, block, prepare, proposal, signed

SIGNATURE = b"\x07" * 64


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - the point is to compare errors too
        return type(exc).__name__, str(exc)


def _general_decode(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """`decode_message` with the proposal fast path switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(messages, "_decode_canonical_proposal", lambda data: None)
        return _outcome(decode_message, data)


def _tx(body: Any, nonce: int = 1) -> Tx:
    return Tx(CHAIN, CLIENT.public_key, nonce, "claim.submit", body, SIGNATURE)


def _proposal(txs: tuple[Tx, ...], view: int = 0) -> Proposal:
    b = block(1, view, txs=txs)
    return Proposal(KEYS[view % 4].public_key, view, 1, b, SIGNATURE)


def _decided(p: Proposal) -> Decided:
    return Decided(p.block, CommitCertificate(1, p.view, p.block_hash, tuple((k.public_key, SIGNATURE) for k in KEYS)))


def _nested(levels: int) -> Any:
    """A value `levels` containers deep: 0 is a scalar."""
    value: Any = 1
    for index in range(levels):
        value = [value] if index % 2 else {"k": value}
    return value


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 255, 256, 65_535, 65_536, 70_000])
def test_array_header_is_msgpacks(length: int) -> None:
    packer = msgpack.Packer()
    assert array_header(length) == packer.pack_array_header(length)


def test_a_proposal_encodes_as_the_codec_encodes_its_wire() -> None:
    txs = (_tx({"amount": 5}), _tx({"lines": [{"code": "A", "n": 2}], "note": "é"}, 2), _tx({}, 3))
    for p in (_proposal(()), _proposal(txs), _proposal(txs, view=70_000)):
        assert p.encode() == codec.encode(p.to_wire())
        assert decode_message(p.encode()) == p
        d = _decided(p)
        assert d.encode() == codec.encode(d.to_wire()) and decode_message(d.encode()) == d


@pytest.mark.parametrize("levels", range(24, 31))
def test_a_deep_transaction_body_is_refused_inside_a_proposal_exactly_as_before(
        levels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # a body `levels` + 1 deep encodes alone (as a tx, up to 31) but inside a
    # proposal only up to 28: the codec's depth limit counts from the message
    body = {"k": _nested(levels)}
    p = _proposal((_tx(body),))
    assert _outcome(p.encode) == _outcome(codec.encode, p.to_wire())
    assert _outcome(_decided(p).encode) == _outcome(codec.encode, _decided(p).to_wire())
    raw = msgpack.packb(p.to_wire(), use_bin_type=True)  # the same bytes, whatever the depth
    assert _outcome(decode_message, raw) == _general_decode(raw, monkeypatch)
    assert (_outcome(decode_message, raw)[0] == "ok") == (levels + 1 <= codec.MAX_DEPTH - 4)


def test_a_proposal_whose_transaction_does_not_encode_raises_the_codecs_error() -> None:
    header = block(1).header  # its tx root is not computed here: the tx does not encode
    p = Proposal(KEYS[0].public_key, 0, 1, Block(header, (_tx({"amount": 1.5}),)), SIGNATURE)
    assert _outcome(p.encode) == _outcome(codec.encode, p.to_wire())
    assert _outcome(p.encode)[0] == "EncodeError"
    assert _outcome(_decided(p).encode) == _outcome(codec.encode, _decided(p).to_wire())


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 + 1), st.binary(max_size=8),
                     st.text(max_size=6), st.floats(allow_nan=False))
_keys = st.one_of(st.text(max_size=4), st.binary(max_size=3), st.integers(-3, 300))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(bodies=st.lists(st.dictionaries(_keys, _values, max_size=4), max_size=4),
       view=st.integers(0, 2**64 - 1))
def test_proposal_encoding_and_decoding_match_the_general_path(
        bodies: list[dict[Any, Any]], view: int) -> None:
    monkeypatch = pytest.MonkeyPatch()
    try:
        txs = tuple(_tx(body, nonce) for nonce, body in enumerate(bodies))
        try:
            p = _proposal(txs, view)
        except Exception:  # noqa: BLE001 - a tx that does not encode alone has no block
            return
        assert _outcome(p.encode) == _outcome(codec.encode, p.to_wire())
        assert _outcome(_decided(p).encode) == _outcome(codec.encode, _decided(p).to_wire())
        try:
            raw = msgpack.packb(p.to_wire(), use_bin_type=True)  # canonical or not (key order)
        except Exception:  # noqa: BLE001 - msgpack cannot pack it either
            return
        assert _outcome(decode_message, raw) == _general_decode(raw, monkeypatch)
    finally:
        monkeypatch.undo()


def test_a_non_canonical_proposal_is_refused_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    p = _proposal((_tx({"b": 1, "aa": 2}),))  # canonical key order: "b" before "aa"
    wire = p.to_wire()
    variants = [
        msgpack.packb(wire, use_bin_type=True),
        msgpack.packb([*wire[:4], [wire[4][0], [[*wire[4][1][0][:4], {"aa": 2, "b": 1}, wire[4][1][0][5]]]],
                       wire[5]], use_bin_type=True),  # keys out of canonical order
        msgpack.packb(wire, use_bin_type=True).replace(b"\x96\x01", b"\x96\xcc\x01", 1),  # tag not minimal
        msgpack.packb(wire, use_bin_type=True) + b"\x00",  # trailing byte
        msgpack.packb(wire[:5] + [b"short"], use_bin_type=True),
    ]
    for raw in variants:
        assert _outcome(decode_message, raw) == _general_decode(raw, monkeypatch)
    assert _outcome(decode_message, variants[0])[0] == "ok"
    assert [_outcome(decode_message, raw)[0] for raw in variants[1:]] == ["DecodeError"] * 3 + ["ValidationError"]


def test_a_signed_proposal_decodes_to_what_was_signed() -> None:
    b = block(1, 0, txs=(_tx({"amount": 3}),))
    data = proposal(b)
    p = decode_message(data)
    assert isinstance(p, Proposal) and p.encode() == data and p.block == b and p.block_hash == b.hash
    assert len(data) <= MAX_MESSAGE_BYTES


# ------------------------------------------------------------ persisted state


def _reference_state_encoding(state: PersistedState) -> bytes:
    """What `PersistedState.encode` gave before it joined cached parts."""
    return codec.encode([
        STATE_VERSION, state.view, state.view_active,
        [[r.kind, r.view, r.height, r.digest, r.data] for r in state.signed],
        [list(c.encoded_parts()) for c in state.certificates()],
        [[v, h, d] for v, h, d in state.mandates],
        list(state.new_view_floor),
    ], max_bytes=MAX_STATE_BYTES)


def _certificate(height: int) -> PreparedCertificate:
    b = block(height, 0, txs=(_tx({"amount": height}),))
    votes = tuple(decode_message(prepare(b, i)) for i in (1, 2))
    return PreparedCertificate(signed(Proposal(KEYS[0].public_key, 0, height, b), KEYS[0]), votes)


_records = st.builds(SignedRecord, st.sampled_from(["proposal", "prepare", "commit", "checkpoint", "view-change"]),
                     st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32),
                     st.binary(max_size=300))


@settings(max_examples=200, deadline=None)
@given(view=st.integers(0, 2**64 - 1), active=st.booleans(), records=st.lists(_records, max_size=40),
       certificates=st.integers(0, 3),
       mandates=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32),
                                   st.binary(min_size=32, max_size=32)), max_size=3),
       floor=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))
def test_the_state_encodes_byte_for_byte_as_the_codec_encodes_it(
        view: int, active: bool, records: list[SignedRecord], certificates: int,
        mandates: list[tuple[int, int, bytes]], floor: tuple[int, int]) -> None:
    certs = [_CERTIFICATES[h] for h in range(certificates)]
    state = PersistedState(view, active, tuple(records), certs[0] if certs else None, tuple(mandates),
                           tuple(certs[1:]), floor)
    encoded = state.encode()
    assert encoded == _reference_state_encoding(state) == state.encode()
    assert PersistedState.decode(encoded) == state


_CERTIFICATES = [_certificate(h) for h in (1, 2, 3)]


def test_a_state_field_the_codec_refuses_is_refused_as_before() -> None:
    for state in (PersistedState(2**64), PersistedState(0, True, (SignedRecord("commit", -(2**64), 1, b"", b""),))):
        assert _outcome(state.encode) == _outcome(_reference_state_encoding, state)
        assert _outcome(state.encode)[0] == "EncodeError"
