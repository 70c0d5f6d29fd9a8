"""Step tables for true pipelining (W heights in flight, results lag L ≥ W).

Each test names the rule it pins (README "Consensus" and `consensus.replica`):
- R1 a proposal for h ∈ (c, c+W] is accepted (PREPAREd) only once it chains to
  the block accepted at h−1 in the same view (or to our committed tip);
- R2 the primary proposes the next height as soon as the previous is proposed;
- R3 COMMIT for h only once h−1 is committed locally AND is the block h's
  prev_hash names;
- R4 header h carries the results of h−L;
- R5 a validator-set update executed at e takes effect after the first
  multiple of K ≥ e+L; heights are never in flight across a set boundary;
- R6 VIEW-CHANGE carries the highest-view prepared certificate of every height
  in flight; NEW-VIEW re-proposes, height by height, the highest-view prepared
  block while it chains, stopping at the first gap or break; every replica
  re-checks it;
- R7 the persisted state keeps every certificate in flight (version 4).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.config import ConsensusConfig
from consensus.effects import Broadcast, Commit
from consensus.errors import ConsensusError
from consensus.inputs import BlockExecuted, MessageReceived, TransactionsVerified
from consensus.messages import (
    CommitVote, Decided, NewView, Prepare, PreparedCertificate, Proposal, ViewChange, decode_message,
)
from consensus.persist import PersistedState
from consensus.replica import Replica, _new_view_decision
from ledger import codec
from ledger.hashing import ZERO_HASH, sha256
from ledger.merkle import root_from_hashes
from ledger.types import Block, Header, Validator, ValidatorSet, compute_tx_root, make_certificate

from tests.consensus.helpers import CHAIN, GENESIS_APP, KEYS, VSET, config, signed, tx

W = 3


def pconfig(**overrides: object) -> ConsensusConfig:
    """The step-table config (tests/consensus/helpers.py) with W = L = 3 and K = 4."""
    values: dict[str, object] = dict(checkpoint_interval=4, results_lag=W, max_in_flight=W)
    values.update(overrides)
    return config(**values)


def preplica(index: int = 1, **overrides: object) -> Replica:
    r = Replica(pconfig(**overrides), KEYS[index])
    r.start(0)
    return r


def chain(length: int, view: int = 0, start: list[Block] | None = None, txs_from: int = 100,
          time: int = 5) -> list[Block]:
    """Blocks 1..length (extending `start`), headers as an honest primary of
    `view` builds them with L = W = 3: heights ≤ 3 carry the genesis results."""
    blocks = list(start or [])
    while len(blocks) < length:
        height = len(blocks) + 1
        txs = (tx(txs_from + height),)
        header = Header(CHAIN, height, view, time + height, blocks[-1].hash if blocks else ZERO_HASH,
                        compute_tx_root(txs), ZERO_HASH, GENESIS_APP, VSET.hash, VSET.hash,
                        root_from_hashes([b.hash for b in blocks]), height - 1, KEYS[view % 4].public_key)
        blocks.append(Block(header, txs))
    return blocks


def _proposal(b: Block, view: int = 0) -> bytes:
    return signed(Proposal(KEYS[view % 4].public_key, view, b.height, b), KEYS[view % 4]).encode()


def _prepare(b: Block, index: int, view: int = 0) -> bytes:
    return signed(Prepare(KEYS[index].public_key, view, b.height, b.hash), KEYS[index]).encode()


def _commit(b: Block, index: int, view: int = 0) -> bytes:
    return signed(CommitVote(KEYS[index].public_key, view, b.height, b.hash), KEYS[index]).encode()


def _recv(r: Replica, index: int, data: bytes, now: int = 10):  # type: ignore[no-untyped-def]
    return r.handle(MessageReceived(KEYS[index].public_key, data), now)


def _sent(effects, kind):  # type: ignore[no-untyped-def]
    return [m for m in (decode_message(e.data) for e in effects if isinstance(e, Broadcast))
            if isinstance(m, kind)]


def _prepared_certificate(b: Block, view: int = 0) -> PreparedCertificate:
    p = decode_message(_proposal(b, view))
    others = [i for i in range(4) if i != view % 4][:2]
    return PreparedCertificate(p, tuple(decode_message(_prepare(b, i, view)) for i in others))


# ------------------------------------------------------------------ config

def test_w_above_l_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConsensusError, match=r"max_in_flight \(W=3\) must be <= results_lag \(L=2\)"):
        pconfig(results_lag=2, max_in_flight=3)
    with pytest.raises(ConsensusError, match="pipeline_window"):
        pconfig(pipeline_window=2)
    assert pconfig(results_lag=5, max_in_flight=3).lagged_height(7) == 2


def test_blocks_are_bounded_so_a_new_view_with_w_blocks_per_view_change_fits_one_message() -> None:
    one, three = pconfig(results_lag=1, max_in_flight=1), pconfig()
    assert three.block_bytes_limit(VSET) < one.block_bytes_limit(VSET) // 2
    copies = (VSET.quorum + 1) * W  # quorum VIEW-CHANGEs × W certificates + W re-proposals
    overhead = copies * (1024 + 512 * VSET.size)
    assert copies * three.block_bytes_limit(VSET) + overhead <= codec.MAX_MESSAGE_BYTES


# -------------------------------------------------------------- R1, R4

def test_r1_a_backup_prepares_heights_in_flight_only_in_chain_order() -> None:
    r = preplica(1)
    b1, b2, b3, b4 = chain(4)
    assert _sent(_recv(r, 0, _proposal(b3)), Prepare) == []  # its parent (2) is not accepted yet
    assert _sent(_recv(r, 0, _proposal(b2)), Prepare) == []
    effects = _recv(r, 0, _proposal(b1))
    assert [(m.height, m.block_hash) for m in _sent(effects, Prepare)] == [(1, b1.hash), (2, b2.hash), (3, b3.hash)]
    assert r.committed == 0  # three heights in flight, none committed
    # c + W + 1 is beyond the in-flight window: buffered, not prepared
    assert _sent(_recv(r, 0, _proposal(b4)), Prepare) == [] and 4 in r.future


def test_r1_a_proposal_that_does_not_chain_to_the_block_accepted_below_is_not_prepared() -> None:
    r = preplica(1)
    b1, b2 = chain(2)
    other1 = chain(1, time=50)[0]
    stray2 = chain(2, start=[other1])[1]  # chains to a block we never accepted at 1
    _recv(r, 0, _proposal(b1))
    effects = _recv(r, 0, _proposal(stray2))
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-header-prev-hash") == 1


def test_r4_header_h_must_carry_the_results_of_h_minus_l() -> None:
    r = preplica(1)
    b1 = chain(1)[0]
    wrong = Block(replace(b1.header, app_hash=sha256(b"not genesis")), b1.txs)
    assert _sent(_recv(r, 0, _proposal(wrong)), Prepare) == []
    assert r.dropped.get("proposal-header-app-hash") == 1


# ------------------------------------------------------------------- R2

def test_r2_the_primary_proposes_the_next_height_as_soon_as_the_previous_is_proposed() -> None:
    r = preplica(0)
    effects = r.handle(TransactionsVerified(tuple(tx(i) for i in range(1, 9))), 10)
    proposals = _sent(effects, Proposal)
    assert [p.height for p in proposals] == [1, 2, 3]  # W heights, none committed
    assert proposals[1].block.header.prev_hash == proposals[0].block_hash
    assert proposals[2].block.header.prev_hash == proposals[1].block_hash
    txs = [t.hash for p in proposals for t in p.block.txs]
    assert len(txs) == 6 == len(set(txs))  # batching unchanged (B = 2), no tx in two blocks in flight


# ------------------------------------------------------------------- R3

def _prepared_1_and_2(r: Replica) -> tuple[Block, Block, list]:  # type: ignore[type-arg]
    b1, b2 = chain(2)
    out = []
    for data in (_proposal(b1), _proposal(b2), _prepare(b1, 2), _prepare(b1, 3), _prepare(b2, 2), _prepare(b2, 3)):
        index = decode_message(data).sender
        out += r.handle(MessageReceived(index, data), 10)
    return b1, b2, out


def test_r3_commit_for_h_waits_until_h_minus_1_is_committed_locally() -> None:
    r = preplica(1)
    b1, b2, effects = _prepared_1_and_2(r)
    assert [m.height for m in _sent(effects, CommitVote)] == [1]  # 2 is prepared, not committed-to
    assert sorted(r.prepared_at) == [1, 2]
    effects = _recv(r, 2, _commit(b1, 2)) + _recv(r, 3, _commit(b1, 3))
    assert [e.block.height for e in effects if isinstance(e, Commit)] == [1]
    assert _sent(effects, CommitVote) == []  # 1 is committed but not executed yet
    effects = r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 20)
    assert [(m.height, m.block_hash) for m in _sent(effects, CommitVote)] == [(2, b2.hash)]


def test_r3_no_commit_for_h_when_the_committed_h_minus_1_is_not_the_block_it_names() -> None:
    r = preplica(1)
    b1, b2, _ = _prepared_1_and_2(r)
    y1 = chain(1, time=40, txs_from=500)[0]  # certified elsewhere (e.g. after a view change)
    votes = {KEYS[i].public_key: decode_message(_commit(y1, i, 1)).signature for i in (0, 2, 3)}
    cert = make_certificate(1, 1, y1.hash, votes)
    effects = _recv(r, 2, Decided(y1, cert).encode())
    assert [e.block.hash for e in effects if isinstance(e, Commit)] == [y1.hash]
    effects = r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 20)
    assert _sent(effects, CommitVote) == []  # b2 names b1 as parent: never a COMMIT for it
    assert ("commit", 0, 2) not in r.signed


# ------------------------------------------------------------------- R5

def test_r5_a_set_update_takes_effect_after_the_first_multiple_of_k_at_or_above_e_plus_l() -> None:
    extra = ValidatorSet(VSET.validators + (Validator("v4", sha256(b"pk-4")),))
    r = preplica(1, checkpoint_interval=2)
    b1 = chain(1)[0]
    votes = {KEYS[i].public_key: decode_message(_commit(b1, i)).signature for i in (0, 2, 3)}
    _recv(r, 0, Decided(b1, make_certificate(1, 0, b1.hash, votes)).encode())
    r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32, validator_update=extra), 20)
    # e = 1, L = 3: first multiple of K = 2 that is ≥ 4 is 4, so the set changes from 5
    assert r.validators_for(4) == VSET and r.validators_for(5) == extra
    unpipelined = Replica(pconfig(checkpoint_interval=2, results_lag=1, max_in_flight=1), KEYS[1])
    unpipelined.start(0)
    _recv(unpipelined, 0, Decided(b1, make_certificate(1, 0, b1.hash, votes)).encode())
    unpipelined.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32, validator_update=extra), 20)
    assert unpipelined.validators_for(3) == extra  # L = 1: today's rule (boundary 2)


def test_r5_heights_are_never_in_flight_across_a_set_boundary() -> None:
    extra = ValidatorSet(VSET.validators + (Validator("v4", sha256(b"pk-4")),))
    r = Replica(pconfig(checkpoint_interval=2), KEYS[1],
                restored=None)
    r.start(0)
    r._schedule_set(3, extra)  # as if an update had been executed: heights ≥ 3 use `extra`
    assert r._same_set_as_slot(2) and not r._same_set_as_slot(3)


# ------------------------------------------------------------------- R6

def test_r6_a_view_change_carries_the_prepared_certificate_of_every_height_in_flight() -> None:
    r = preplica(1)
    b1, b2, _ = _prepared_1_and_2(r)
    vcs = [signed(ViewChange(KEYS[i].public_key, 1, 0, None, None), KEYS[i]) for i in (2, 3)]
    effects = _recv(r, 2, vcs[0].encode()) + _recv(r, 3, vcs[1].encode())  # f+1 others: join (§4.5.2)
    (own,) = [m for m in _sent(effects, ViewChange) if m.sender == KEYS[1].public_key]
    assert own.prepared is not None and own.prepared.proposal.block_hash == b1.hash
    assert [c.proposal.block_hash for c in own.prepared_above] == [b2.hash]


def _vc(index: int, certs: tuple[PreparedCertificate, ...] = (), new_view: int = 1) -> ViewChange:
    first = certs[0] if certs and certs[0].proposal.height == 1 else None
    above = certs[1:] if first is not None else certs
    return signed(ViewChange(KEYS[index].public_key, new_view, 0, None, first, prepared_above=above), KEYS[index])


def test_r6_the_new_view_walk_reproposes_while_it_chains_and_stops_at_a_gap_or_break() -> None:
    b1, b2, b3 = chain(3)
    c1, c2, c3 = (_prepared_certificate(b) for b in (b1, b2, b3))
    assert [p.block_hash for p in _new_view_decision([_vc(0, (c1, c2)), _vc(2, (c1, c2, c3)), _vc(3)])[1]] == \
        [b1.hash, b2.hash, b3.hash]
    # a gap at 2: 3 is not re-proposed (fresh proposals from 2 upward)
    assert [p.height for p in _new_view_decision([_vc(0, (c1, c3)), _vc(2), _vc(3)])[1]] == [1]
    # a break: the highest-view block at 2 does not chain to the one chosen at 1
    y1 = chain(1, time=40, txs_from=500)[0]
    y2 = chain(2, start=[y1])[1]
    cy2 = _prepared_certificate(y2, 0)
    assert [p.height for p in _new_view_decision([_vc(0, (c1,)), _vc(2, (cy2,)), _vc(3)])[1]] == [1]
    # the highest-view block at 2 wins, and a later view's block is preferred
    y2_v1 = chain(2, view=1, start=[b1])[1]
    assert [p.block_hash for p in _new_view_decision(
        [_vc(0, (c1, c2), 2), _vc(2, (c1, _prepared_certificate(y2_v1, 1)), 2), _vc(3, (), 2)])[1]] == \
        [b1.hash, y2_v1.hash]
    # nothing chains to the certified tip (genesis here): no mandate at all
    assert _new_view_decision([_vc(0, (cy2,)), _vc(2), _vc(3)]) == (1, ())


def test_r6_a_new_view_missing_a_mandated_reproposal_is_refused() -> None:
    r = preplica(2)
    b1, b2 = chain(2)
    c1, c2 = _prepared_certificate(b1), _prepared_certificate(b2)
    vcs = (_vc(0, (c1, c2)), _vc(1), _vc(3))
    re1 = signed(Proposal(KEYS[1].public_key, 1, 1, b1), KEYS[1])
    re2 = signed(Proposal(KEYS[1].public_key, 1, 2, b2), KEYS[1])
    short = signed(NewView(KEYS[1].public_key, 1, vcs, re1), KEYS[1])
    _recv(r, 1, short.encode())
    assert r.dropped.get("new-view-wrong-reproposal") == 1 and r.view == 0
    full = signed(NewView(KEYS[1].public_key, 1, vcs, re1, reproposals=(re2,)), KEYS[1])
    effects = _recv(r, 1, full.encode())
    assert r.view == 1 and r.view_active
    assert r.mandates == {(1, 1): b1.hash, (1, 2): b2.hash}
    assert [(m.height, m.block_hash) for m in _sent(effects, Prepare)] == [(1, b1.hash), (2, b2.hash)]


def test_r6_wire_forms_without_heights_in_flight_are_the_unpipelined_ones() -> None:
    vc = _vc(0)
    assert len(vc.to_wire()) == 7 and ViewChange.from_wire(vc.to_wire()) == vc
    wire = vc.body() + [[], vc.signature]
    with pytest.raises(Exception):
        ViewChange.from_wire(wire)  # an empty `prepared_above` is not canonical
    nv = NewView(KEYS[1].public_key, 1, (vc,), None, b"\x00" * 64)
    assert len(nv.to_wire()) == 6


# ------------------------------------------------------------------- R7

def test_r7_the_persisted_state_keeps_every_certificate_in_flight_and_a_restart_restores_them() -> None:
    r = preplica(1)
    b1, b2, effects = _prepared_1_and_2(r)
    state = [e.state for e in effects if hasattr(e, "state")][-1]
    restored = PersistedState.decode(state)
    assert [c.proposal.height for c in restored.certificates()] == [1, 2]
    again = Replica(pconfig(), KEYS[1], restored=restored)
    again.start(30)
    assert sorted(again.prepared_at) == [1, 2]


def test_r7_a_version_3_state_still_loads() -> None:
    cert = _prepared_certificate(chain(1)[0])
    old = codec.encode([3, 2, True, [], list(cert.encoded_parts()), []])
    back = PersistedState.decode(old)
    assert back.prepared == cert and back.prepared_above == ()


def test_r6_no_proposal_below_the_new_view_target_is_accepted_in_that_view() -> None:
    # §4.4: in view v, heights up to max-s are filled only by the O set. Here a
    # VIEW-CHANGE proves height 1 certified, so the NEW-VIEW's target is 2: a
    # replica still at height 0 must not PREPARE another block for height 1 in
    # view 1 (with W heights in flight it would otherwise accept c+1 … c+W).
    r = preplica(2)
    b1 = chain(1)[0]
    votes = {KEYS[i].public_key: decode_message(_commit(b1, i)).signature for i in (0, 1, 3)}
    cert = make_certificate(1, 0, b1.hash, votes)
    ahead = signed(ViewChange(KEYS[0].public_key, 1, 1, cert, None), KEYS[0])
    nv = signed(NewView(KEYS[1].public_key, 1, (ahead, _vc(1), _vc(3)), None), KEYS[1])
    _recv(r, 1, nv.encode())
    assert r.view == 1 and r.view_active and r.new_view_floor == (1, 2) and r.committed == 0
    z1 = chain(1, view=1, time=60, txs_from=700)[0]
    effects = _recv(r, 1, _proposal(z1, 1))
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-below-new-view-target") == 1
    restored = PersistedState.decode(r.persisted_state().encode())
    assert restored.new_view_floor == (1, 2)  # survives a restart


@pytest.mark.parametrize("lag", [1, W])
def test_r6_a_stale_proposal_received_before_the_new_view_is_judged_again_under_its_floor(lag: int) -> None:
    # Review finding (a safety bug at W = 1 and W = 3): the faulty primary of view
    # 1 first sends a fresh block for height 1 in view 1, then a NEW-VIEW whose
    # VIEW-CHANGEs prove height 1 certified (target 2, nothing re-proposed). The
    # proposal was checked against the old floor before the NEW-VIEW; it must be
    # judged again (§4.4: below max-s only the O set fills heights), or two
    # honest replicas could commit it while another committed the certified block.
    r = preplica(2, results_lag=lag, max_in_flight=lag)
    b1 = chain(1)[0]
    votes = {KEYS[i].public_key: decode_message(_commit(b1, i)).signature for i in (0, 1, 3)}
    ahead = signed(ViewChange(KEYS[1].public_key, 1, 1, make_certificate(1, 0, b1.hash, votes), None), KEYS[1])
    nv = signed(NewView(KEYS[1].public_key, 1, (ahead, _vc(2), _vc(3)), None), KEYS[1])
    z1 = chain(1, view=1, time=60, txs_from=700)[0]
    effects = _recv(r, 1, _proposal(z1, 1)) + _recv(r, 1, nv.encode())
    assert r.view == 1 and r.view_active and r.new_view_floor == (1, 2)
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-below-new-view-target") == 1
    effects = _recv(r, 3, _prepare(z1, 3, 1)) + _recv(r, 0, _prepare(z1, 0, 1))
    assert _sent(effects, Prepare) == [] and _sent(effects, CommitVote) == [] and r.committed == 0


def test_r1_a_block_accepted_on_a_proposal_the_new_view_replaces_gets_no_prepare() -> None:
    # Review finding: before its NEW-VIEW the primary of view 1 sent p1@1 and p2@2
    # (on p1); the NEW-VIEW proposes q1@1 instead. p2 no longer chains to the
    # block accepted at 1 in view 1, so it is judged again and not PREPAREd.
    p1, p2 = chain(2, view=1, time=60, txs_from=700)
    q1 = chain(1, view=1, time=80, txs_from=900)[0]
    r = preplica(2)
    _recv(r, 1, _proposal(p1, 1))
    _recv(r, 1, _proposal(p2, 1))
    nvp = signed(Proposal(KEYS[1].public_key, 1, 1, q1), KEYS[1])
    nv = signed(NewView(KEYS[1].public_key, 1, (_vc(1), _vc(2), _vc(3)), nvp), KEYS[1])
    effects = _recv(r, 1, nv.encode())
    assert [(m.height, m.block_hash) for m in _sent(effects, Prepare)] == [(1, q1.hash)]


def test_a_new_view_with_w_maximal_blocks_per_view_change_encodes_within_the_message_bound() -> None:
    from consensus.replica import MAX_HEADER_BYTES, block_bytes
    from ledger.types import Tx
    from tests.consensus.helpers import CLIENT
    cfg = pconfig()
    limit = cfg.block_bytes_limit(VSET)
    blocks: list[Block] = []
    for height in (1, 2, 3):  # one maximal block per height in flight
        txs: list[Tx] = []
        room = limit - MAX_HEADER_BYTES
        nonce = height * 1000
        while room > 70_000:
            nonce += 1
            t = Tx(CHAIN, CLIENT.public_key, nonce, "claim.submit", {"memo": "x" * 60_000}).signed(CLIENT)
            txs.append(t)
            room -= len(t.encode())
        header = Header(CHAIN, height, 0, 5 + height, blocks[-1].hash if blocks else ZERO_HASH,
                        compute_tx_root(tuple(txs)), ZERO_HASH, GENESIS_APP, VSET.hash, VSET.hash,
                        root_from_hashes([b.hash for b in blocks]), height - 1, KEYS[0].public_key)
        blocks.append(Block(header, tuple(txs)))
        assert block_bytes(blocks[-1]) <= limit
    certs = tuple(_prepared_certificate(b) for b in blocks)
    vcs = tuple(_vc(i, certs) for i in (0, 2, 3))
    reproposals = [signed(Proposal(KEYS[1].public_key, 1, b.height, b), KEYS[1]) for b in blocks]
    nv = signed(NewView(KEYS[1].public_key, 1, vcs, reproposals[0], reproposals=tuple(reproposals[1:])), KEYS[1])
    data = nv.encode()  # raises EncodeError beyond codec.MAX_MESSAGE_BYTES
    assert len(data) <= codec.MAX_MESSAGE_BYTES and len(data) > 3 * 4 * (limit - 80_000)
    assert decode_message(data) == nv
