"""The persisted consensus state: O(records) encoding (versions 3 and 4) and loading
older versions. PBFT §4.4 needs the prepared certificate P to survive a crash;
these tests pin how it is stored, not whether (test_review_fixes does that)."""

from __future__ import annotations

import pytest

from consensus.errors import ConsensusError
from consensus.messages import PreparedCertificate, Prepare, Proposal, decode_message
from consensus.persist import STATE_VERSION, PersistedState, SignedRecord
from ledger import codec
from ledger.types import Block

from tests.consensus.helpers import KEYS, block, commit, prepare, proposal, replica, tx
from tests.consensus.test_review_fixes import _last_persist, _recv


def _certificate(txs: int = 3) -> tuple[PreparedCertificate, bytes]:
    b = block(1, 0, txs=tuple(tx(i) for i in range(txs)))
    data = proposal(b, 0)
    p = decode_message(data)
    votes = tuple(decode_message(prepare(b, i, 0)) for i in (1, 2))
    return PreparedCertificate(p, votes, data), data


def test_state_version_is_4_and_round_trips_a_prepared_certificate() -> None:
    cert, data = _certificate()
    state = PersistedState(2, True, (SignedRecord("prepare", 0, 1, b"\x01" * 32, b"abc"),), cert, ((1, 1, b"\x02" * 32),))
    encoded = state.encode()
    assert codec.decode(encoded, max_bytes=len(encoded))[0] == STATE_VERSION == 4
    back = PersistedState.decode(encoded)
    assert back == state
    assert back.prepared is not None and back.prepared.proposal_data == data


def test_encoding_a_prepared_certificate_does_not_re_encode_its_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # the point of version 3: encode runs on every flush; with the proposal's
    # signed bytes at hand it must not walk the block's transactions
    cert, _ = _certificate(txs=5)
    state = PersistedState(0, True, (), cert)

    def boom(self: Block) -> list:  # pragma: no cover - failing path
        raise AssertionError("the block was re-encoded")

    monkeypatch.setattr(Block, "to_wire", boom)
    state.encode()
    state.encode()


def test_a_certificate_without_proposal_bytes_encodes_its_block_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cert, data = _certificate()
    bare = PreparedCertificate(cert.proposal, cert.prepares)
    calls = []
    original = Proposal.encode
    monkeypatch.setattr(Proposal, "encode", lambda self: calls.append(1) or original(self))
    for _ in range(3):
        PersistedState(0, True, (), bare).encode()
    assert len(calls) == 1 and bare.proposal_data == data


def test_a_replica_persists_its_prepared_certificate_with_the_received_proposal_bytes() -> None:
    r = replica(2)
    x = block(1, 0, time=5, txs=(tx(1),))
    state = None
    for index, data in ((0, proposal(x, 0)), (3, prepare(x, 3, 0))):
        state = _last_persist(_recv(r, index, data), state)
    assert r.prepared is not None and r.prepared.proposal_data == proposal(x, 0)
    assert state is not None
    assert PersistedState.decode(state).prepared == r.prepared


def test_a_version_2_state_with_a_nested_prepared_certificate_still_loads() -> None:
    cert, _ = _certificate()
    old = codec.encode([2, 4, True, [["commit", 4, 1, b"\x03" * 32, commit(cert.proposal.block, 2, 4)]],
                        cert.to_wire(), [[4, 1, b"\x02" * 32]]])
    back = PersistedState.decode(old)
    # no new-view floor was saved before version 4: the view is re-learned (peers re-send its NEW-VIEW)
    assert back.view == 4 and not back.view_active and back.prepared == cert
    assert back.mandates == ((4, 1, b"\x02" * 32),)
    assert PersistedState.decode(codec.encode([2, 0, True, [], None, []])).view_active  # view 0 has no NEW-VIEW


@pytest.mark.parametrize("prepared", [
    "not a list", [b"\x00"], [b"garbage", []], [None, []],
])
def test_a_version_3_state_with_a_malformed_prepared_certificate_is_refused(prepared: object) -> None:
    with pytest.raises(ConsensusError):
        PersistedState.decode(codec.encode([3, 0, True, [], prepared, []]))


def test_a_version_3_state_whose_prepares_do_not_match_the_proposal_is_refused() -> None:
    cert, data = _certificate()
    other = block(1, 0, time=9)
    wrong = [prepare(other, 1, 0), prepare(other, 2, 0)]
    with pytest.raises(ConsensusError, match="does not match"):
        PersistedState.decode(codec.encode([3, 0, True, [], [data, wrong], []]))
    swapped = [data, [data]]  # a proposal where a PREPARE belongs
    with pytest.raises(ConsensusError):
        PersistedState.decode(codec.encode([3, 0, True, [], swapped, []]))


def test_an_unknown_state_version_is_refused_clearly() -> None:
    with pytest.raises(ConsensusError, match="unknown persisted state version"):
        PersistedState.decode(codec.encode([5, 0, True, [], [], []]))
