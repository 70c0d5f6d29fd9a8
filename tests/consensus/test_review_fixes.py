"""Step tables for the review findings: one input → the expected effects, with
the PBFT rule (Castro & Liskov, OSDI'99, "§") each one enforces."""

from __future__ import annotations

from consensus.effects import Broadcast, Commit, Persist
from consensus.inputs import BlockExecuted, MessageReceived
from consensus.messages import CommitVote, NewView, Prepare, Proposal, ViewChange, decode_message
from consensus.persist import PersistedState
from consensus.replica import Replica

from tests.consensus.helpers import KEYS, block, commit, config, prepare, proposal, replica, signed


def _recv(r: Replica, index: int, data: bytes, now: int = 10):  # type: ignore[no-untyped-def]
    return r.handle(MessageReceived(KEYS[index].public_key, data), now)


def _sent(effects, kind):  # type: ignore[no-untyped-def]
    return [m for m in (decode_message(e.data) for e in effects if isinstance(e, Broadcast))
            if isinstance(m, kind)]


def _last_persist(effects, previous: bytes | None = None) -> bytes | None:  # type: ignore[no-untyped-def]
    for e in effects:
        if isinstance(e, Persist):
            previous = e.state
    return previous


def _vc(index: int, new_view: int = 1) -> ViewChange:
    return signed(ViewChange(KEYS[index].public_key, new_view, 0, None, None), KEYS[index])


def _replica_in_view_1_with_mandate_x():  # type: ignore[no-untyped-def]
    """Replica 2 prepared X in view 0, then joined view 1 whose NEW-VIEW (from
    the faulty primary 1) mandates X; before that primary 1 had sent block A."""
    r = replica(2)
    x, a = block(1, 0, time=5), block(1, 1, time=7)
    state = None
    for index, data in ((0, proposal(x, 0)), (3, prepare(x, 3, 0)),
                        (0, _vc(0).encode()), (3, _vc(3).encode())):
        effects = _recv(r, index, data)
        state = _last_persist(effects, state)
    (own_vc,) = [vc for vc in r.view_changes[1].values() if vc[0].sender == KEYS[2].public_key]
    assert own_vc[0].prepared is not None and own_vc[0].prepared.proposal.block_hash == x.hash
    state = _last_persist(_recv(r, 1, proposal(a, 1)), state)  # A arrives BEFORE the NEW-VIEW
    reproposal = signed(Proposal(KEYS[1].public_key, 1, 1, x), KEYS[1])
    nv = signed(NewView(KEYS[1].public_key, 1, (_vc(1), own_vc[0], _vc(3)), reproposal), KEYS[1])
    effects = _recv(r, 1, nv.encode())
    state = _last_persist(effects, state)
    return r, x, a, effects, state


def test_new_view_reproposal_replaces_a_block_the_primary_sent_before_its_new_view() -> None:
    # §4.4: on NEW-VIEW, the replica pre-prepares exactly the O set (here X, prepared
    # in view 0). A block A that the faulty primary sent for view 1 before NEW-VIEW
    # must not shadow X: the replica PREPAREs X in view 1, never A.
    r, x, a, effects, _ = _replica_in_view_1_with_mandate_x()
    assert r.view == 1 and r.view_active
    assert [(m.view, m.block_hash) for m in _sent(effects, Prepare)] == [(1, x.hash)]
    assert r.proposals[1].block_hash == x.hash
    assert len(r.evidence) == 1 and r.evidence[0].kind == "proposal"  # A and X both signed for view 1


def test_new_view_mandate_survives_a_restart() -> None:
    # §4.4 + crash recovery: the O set of the view we are in is part of the state
    # that must survive a crash, otherwise after a restart in view 1 the replica
    # prepares (and commits) any block A the faulty primary sends for view 1.
    r, x, a, _, state = _replica_in_view_1_with_mandate_x()
    assert state is not None
    restored = PersistedState.decode(state)
    assert restored.mandates == ((1, 1, x.hash),)
    r2 = Replica(config(), KEYS[2], restored=restored)
    r2.start(100)
    effects = _recv(r2, 1, proposal(a, 1), 101)
    assert _sent(effects, Prepare) == [] and r2.dropped.get("proposal-not-the-mandated-block") == 1
    effects = _recv(r2, 3, prepare(a, 3, 1), 102)
    assert _sent(effects, CommitVote) == []


def test_a_version_1_state_in_an_active_view_above_0_restarts_as_changing_views() -> None:
    # A pre-mandate state cannot tell whether view v had an O set: the replica
    # re-learns the NEW-VIEW before voting in v again.
    from ledger import codec
    old = codec.encode([1, 3, True, [], None])
    restored = PersistedState.decode(old)
    assert restored.view == 3 and restored.view_active is False and restored.mandates == ()


def test_the_persist_before_a_commit_keeps_the_prepared_certificate_until_the_block_is_executed() -> None:
    # §4.4 + crash consistency: P (the prepared certificate) must survive until
    # the committed block is durable. The Persist that precedes Commit(h) is
    # fsync'd before the block reaches the store; a kill -9 between the two
    # restarts us at committed = h−1 with a COMMIT signed for h, and our
    # VIEW-CHANGE must still carry P.
    r = replica(2)
    x = block(1, 0, time=5)
    state = None
    for index, data in ((0, proposal(x, 0)), (3, prepare(x, 3, 0)), (0, commit(x, 0, 0)), (3, commit(x, 3, 0))):
        effects = _recv(r, index, data)
        state = _last_persist(effects, state)
    kinds = [type(e).__name__ for e in effects]
    assert kinds.index("Persist") < kinds.index("Commit")
    assert state is not None
    restored = PersistedState.decode(state)
    assert restored.prepared is not None and restored.prepared.proposal.block_hash == x.hash
    # crash before the block is written: the store's tip is still height 0
    again = Replica(config(), KEYS[2], restored=restored)
    again.start(50)
    _recv(again, 0, _vc(0).encode(), 61)
    effects = _recv(again, 3, _vc(3).encode(), 62)  # f+1 others want view 1: join (§4.5.2)
    (own,) = _sent(effects, ViewChange)
    assert own.prepared is not None and own.prepared.proposal.block_hash == x.hash
    # once the block is executed (= durable in the store) P is forgotten
    r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 70)
    assert r.prepared is None


def test_a_proposal_with_a_header_time_beyond_the_clock_drift_is_not_prepared() -> None:
    # §4.2 "valid request": a header time more than max_clock_drift_ms (default
    # = the light client's TrustOptions bound, 10 s) ahead of our clock is refused;
    # later headers could never go back below it.
    from ledger.light import DEFAULT_MAX_CLOCK_DRIFT_MS
    assert config().max_clock_drift_ms == DEFAULT_MAX_CLOCK_DRIFT_MS == 10_000
    r = replica(2)
    effects = _recv(r, 0, proposal(block(1, 0, time=2**64 - 1)), 1000)
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-header-time-in-future") == 1
    r = replica(2)
    effects = _recv(r, 0, proposal(block(1, 0, time=1000 + 10_000)), 1000)  # exactly at the bound
    assert len(_sent(effects, Prepare)) == 1


def test_a_message_whose_tag_is_a_list_or_a_map_is_dropped_as_malformed() -> None:
    # Bad peer input never raises out of handle: it is dropped and counted.
    from ledger import codec
    r = replica(1)
    for payload in ([[]], [{}], [{"a": 1}], [[1], b"x"]):
        assert r.handle(MessageReceived(b"\x07" * 32, codec.encode(payload)), 1) == []
    assert r.dropped == {"malformed": 4}


def _big_tx(nonce: int, pad: int = 60_000):  # type: ignore[no-untyped-def]
    from ledger.types import Tx
    from tests.consensus.helpers import CHAIN, CLIENT
    return Tx(CHAIN, CLIENT.public_key, nonce, "claim.submit", {"pad": bytes([nonce % 251]) * pad}).signed(CLIENT)


def test_the_primary_stops_adding_transactions_before_the_block_byte_bound() -> None:
    # Batching (§4.2 with batches): B txs or fewer, never a block past the byte
    # bound: 100 × 60 KB would be 6 MB, over the 4 MiB codec limit, and used to
    # raise EncodeError out of handle.
    from consensus.inputs import TransactionsVerified
    from consensus.replica import block_bytes
    from tests.consensus.helpers import VSET
    r = replica(0, max_batch_txs=100)
    effects = r.handle(TransactionsVerified(tuple(_big_tx(n + 1) for n in range(100))), 1)
    (p,) = _sent(effects, Proposal)
    limit = r.config.block_bytes_limit(VSET)
    assert 0 < len(p.block.txs) < 100 and block_bytes(p.block) <= limit
    assert abs(block_bytes(p.block) - len(p.block.encode())) <= 8


def test_a_backup_refuses_a_block_over_the_byte_bound() -> None:
    # §4.2 "valid request": an oversized block is not prepared (its NEW-VIEW
    # re-proposal would not fit in one message).
    from ledger.types import compute_tx_root
    from dataclasses import replace as dc_replace
    txs = tuple(_big_tx(n + 1) for n in range(20))  # 1.2 MB > ~1 MiB for n = 4
    b = block(1, 0)
    b = dc_replace(b, header=dc_replace(b.header, tx_root=compute_tx_root(txs)), txs=txs)
    r = replica(1, max_batch_txs=100)
    effects = _recv(r, 0, proposal(b))
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-block-too-large") == 1


def test_a_new_view_re_proposing_a_maximal_block_fits_in_one_message() -> None:
    # §4.4: NEW-VIEW = quorum VIEW-CHANGEs (each may carry a prepared certificate
    # with the whole block) + the re-proposal: quorum+1 copies must encode.
    from dataclasses import replace as dc_replace
    from ledger import codec
    from ledger.types import compute_tx_root
    from consensus.messages import PreparedCertificate
    from consensus.replica import block_bytes
    from tests.consensus.helpers import VSET
    limit = config().block_bytes_limit(VSET)
    txs = [_big_tx(n + 1) for n in range(limit // 60_200)]
    b = block(1, 0)
    b = dc_replace(b, header=dc_replace(b.header, tx_root=compute_tx_root(tuple(txs)), time=2**63), txs=tuple(txs))
    filler = limit - block_bytes(b) - 200
    txs.append(_big_tx(999, filler))
    b = dc_replace(b, header=dc_replace(b.header, tx_root=compute_tx_root(tuple(txs))), txs=tuple(txs))
    assert limit - 300 <= block_bytes(b) <= limit
    p0 = decode_message(proposal(b, 0))
    cert = PreparedCertificate(p0, tuple(decode_message(prepare(b, i, 0)) for i in (1, 2)))
    vcs = tuple(signed(ViewChange(KEYS[i].public_key, 1, 0, None, cert), KEYS[i]) for i in (1, 2, 3))
    nv = signed(NewView(KEYS[1].public_key, 1, vcs, signed(Proposal(KEYS[1].public_key, 1, 1, b), KEYS[1])), KEYS[1])
    assert len(nv.encode()) <= codec.MAX_MESSAGE_BYTES


def _decided(b, signers=(0, 1, 2), view: int = 0) -> bytes:  # type: ignore[no-untyped-def]
    from consensus.messages import Decided
    from ledger.types import make_certificate
    votes = {KEYS[i].public_key: decode_message(commit(b, i, view)).signature for i in signers}
    return Decided(b, make_certificate(b.height, view, b.hash, votes)).encode()


def test_an_unverified_decided_neither_steers_catch_up_nor_replaces_a_verified_one() -> None:
    # Catch-up trusts certificates only (a quorum of COMMIT signatures, §4.2
    # committed-local): Decided is unsigned by its sender, so its certificate
    # is checked before the block is kept or the sender is taken as "ahead".
    from consensus.effects import FetchBlocks
    r = replica(1)
    far = block(5, 0)
    forged = _decided(far, signers=(0,))  # one signature: no quorum
    effects = _recv(r, 3, forged)
    assert [e for e in effects if isinstance(e, FetchBlocks)] == []
    assert r.ahead_peer is None and 5 not in r.fetched and r.dropped == {"decided-bad-certificate": 1}
    good = _decided(far)
    effects = _recv(r, 2, good)
    assert [(e.peer, e.from_height) for e in effects if isinstance(e, FetchBlocks)] == [(KEYS[2].public_key, 1)]
    assert r.fetched[5][2] == KEYS[2].public_key
    other = _decided(block(5, 0, time=9))  # a second verified block can only be a bug elsewhere
    _recv(r, 3, other)
    assert r.fetched[5][0] == far and r.dropped["duplicate"] == 1


def test_an_empty_fetch_response_forgets_the_peer_instead_of_refetching_in_a_loop() -> None:
    from consensus.effects import FetchBlocks
    from consensus.inputs import BlocksFetched
    r = replica(1)
    _recv(r, 2, _decided(block(5, 0)))
    assert r.fetch_in_flight and r.ahead_peer == KEYS[2].public_key
    effects = r.handle(BlocksFetched(KEYS[2].public_key, ()), 20)
    assert [e for e in effects if isinstance(e, FetchBlocks)] == []
    assert r.ahead_peer is None and not r.fetch_in_flight


def test_view_change_storage_is_bounded_per_sender_and_in_views() -> None:
    # §4.4/§4.5.2 bookkeeping: a VIEW-CHANGE for a view too far ahead is not
    # stored; each sender's latest VIEW-CHANGE replaces its earlier ones.
    from consensus.replica import MAX_VIEWS_AHEAD
    r = replica(1)
    _recv(r, 3, _vc(3, MAX_VIEWS_AHEAD + 1).encode())
    assert r.dropped == {"view-too-far": 1} and r.view_changes == {}
    for w in (1, 2, 3):
        _recv(r, 3, _vc(3, w).encode())
    assert {w: list(vcs) for w, vcs in r.view_changes.items()} == {3: [KEYS[3].public_key]}
    _recv(r, 3, _vc(3, 2).encode())  # an older one arriving late does not come back
    assert list(r.view_changes) == [3] and r.dropped["superseded-view-change"] == 1


def test_view_change_first_seen_entries_below_the_installed_view_are_dropped() -> None:
    # height-0 (VIEW-CHANGE) evidence bookkeeping is never collected by stable
    # checkpoints: entering view v forgets it for views below v.
    r1 = replica(1)
    for i in (0, 2, 3):  # f+1 join view 1 (§4.5.2); r1 is its primary and sends NEW-VIEW
        _recv(r1, i, _vc(i, 1).encode())
    assert r1.view == 1 and r1.view_active
    assert {k[2] for k in r1.first_seen if k[3] == 0 and k[1] == "view-change"} == {1}
    own = None
    for i in (0, 3):  # f+1 want view 2: r1 joins
        effects = _recv(r1, i, _vc(i, 2).encode())
        own = (_sent(effects, ViewChange) or [own])[0]
    assert own is not None and own.new_view == 2 and not r1.view_active
    nv = signed(NewView(KEYS[2].public_key, 2, (_vc(0, 2), own, _vc(3, 2)), None), KEYS[2])
    _recv(r1, 2, nv.encode())
    assert r1.view == 2 and r1.view_active
    assert [k for k in r1.first_seen if k[3] == 0 and k[2] < 2] == []


def _block_with(r: Replica, txs, view: int = 0, time: int = 5):  # type: ignore[no-untyped-def]
    """A block for r's slot whose header follows r's executed chain."""
    from dataclasses import replace as dc_replace
    from ledger.types import compute_tx_root
    height = r.committed + 1
    b = block(height, view, time=time)
    header = dc_replace(b.header, **r._expected_header_fields(height), tx_root=compute_tx_root(tuple(txs)))
    return dc_replace(b, header=header, txs=tuple(txs))


def test_proposal_validity_uses_the_genesis_block_tx_bound_not_the_local_batch_size() -> None:
    # §4.2 "valid request" must be the same predicate on every honest replica:
    # our local max_batch_txs (2 here) sizes only OUR batches.
    from tests.consensus.helpers import tx
    r = replica(1, max_batch_txs=2, max_block_txs=3)
    effects = _recv(r, 0, proposal(_block_with(r, [tx(1), tx(2), tx(3)])))
    assert len(_sent(effects, Prepare)) == 1
    r = replica(1, max_batch_txs=2, max_block_txs=3)
    effects = _recv(r, 0, proposal(_block_with(r, [tx(1), tx(2), tx(3), tx(4)])))
    assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-too-many-txs") == 1


def test_the_committed_duplicate_window_is_k_blocks_before_and_after_a_restart() -> None:
    # Same decision with or without a restart: K = 2 in these tables.
    from consensus.persist import ChainTip
    from ledger.types import CommitCertificate
    from tests.consensus.helpers import GENESIS_APP, tx
    live = replica(1)
    b1 = _block_with(live, [tx(1)])
    for index, data in ((0, proposal(b1)), (2, prepare(b1, 2)), (0, commit(b1, 0)), (2, commit(b1, 2))):
        _recv(live, index, data)
    assert live.committed == 1
    live.handle(BlockExecuted(1, GENESIS_APP, b"\x00" * 32), 20)
    cert = live.last_certificate
    assert isinstance(cert, CommitCertificate)
    tip = ChainTip(height=1, block_hash=b1.hash, time_ms=5, history=live.history, app_hash=GENESIS_APP,
                   receipts_root=b"\x00" * 32, certificate=cert, recent_txs=((1, (tx(1).hash,)),))
    restarted = Replica(config(), KEYS[1], last_commit=tip)
    restarted.start(30)
    assert restarted.committed_txs == live.committed_txs == {tx(1).hash: 1}
    for r in (live, restarted):
        effects = _recv(r, 0, proposal(_block_with(r, [tx(1)], time=6)), 40)
        assert _sent(effects, Prepare) == [] and r.dropped.get("proposal-duplicate-tx") == 1
    # entries older than K blocks are dropped (bounded memory); nonces cover those
    old = ChainTip(height=9, block_hash=b1.hash, time_ms=5, history=live.history, app_hash=GENESIS_APP,
                   receipts_root=b"\x00" * 32, certificate=cert,
                   recent_txs=((7, (tx(7).hash,)), (8, (tx(8).hash,)), (9, (tx(9).hash,))))
    assert Replica(config(), KEYS[1], last_commit=old).committed_txs == {tx(8).hash: 8, tx(9).hash: 9}


# --- late votes: answer only peers that are really behind --------------------

def _committed_at_1():  # type: ignore[no-untyped-def]
    """Replica 2 commits X at height 1 from proposal, a PREPARE and COMMITs by 0 and 3."""
    r = replica(2)
    x = block(1, 0, time=5)
    for index, data in ((0, proposal(x, 0)), (3, prepare(x, 3, 0)), (0, commit(x, 0, 0)), (3, commit(x, 3, 0))):
        _recv(r, index, data)
    assert r.committed == 1
    return r, x


def _decided_sent(effects):  # type: ignore[no-untyped-def]
    from consensus.effects import Send
    from consensus.messages import Decided
    return [decode_message(e.data).block.height for e in effects
            if isinstance(e, Send) and isinstance(decode_message(e.data), Decided)]


def test_a_first_late_vote_for_the_height_just_committed_gets_no_decided_block() -> None:
    # steady state: peer 1 commits height 1 from the same votes we did; a whole
    # block in reply would be wasted (catch-up rule: only peers really behind)
    r, x = _committed_at_1()
    assert _decided_sent(_recv(r, 1, prepare(x, 1, 0), 20)) == []
    assert _decided_sent(_recv(r, 1, commit(x, 1, 0), 21)) == []


def test_a_repeated_late_vote_means_the_peer_is_stuck_and_gets_the_decided_block() -> None:
    r, x = _committed_at_1()
    _recv(r, 1, prepare(x, 1, 0), 20)
    assert _decided_sent(_recv(r, 1, prepare(x, 1, 0), 30)) == [1]  # retransmitted: stuck at 1


def test_a_vote_seen_in_its_slot_and_sent_again_after_the_commit_gets_the_decided_block() -> None:
    # peer 3's COMMIT reached us in the slot; the same COMMIT again afterwards is
    # a retransmission or an idle beacon: its sender is stuck
    r, x = _committed_at_1()
    assert _decided_sent(_recv(r, 3, commit(x, 3, 0), 30)) == [1]


def test_a_vote_two_heights_old_gets_the_decided_block_at_once() -> None:
    r, x = _committed_at_1()
    r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 40)
    y = block(2, 0, time=6, prev_hash=x.hash, app_hash=b"\x01" * 32)
    from dataclasses import replace as _replace
    from ledger.merkle import root_from_hashes
    from ledger.hashing import ZERO_HASH  # noqa: F401
    y = type(y)(_replace(y.header, receipts_root=b"\x02" * 32, history_root=root_from_hashes([x.hash])), ())
    for index, data in ((0, proposal(y, 0)), (3, prepare(y, 3, 0)), (0, commit(y, 0, 0)), (3, commit(y, 3, 0))):
        _recv(r, index, data, 41)
    assert r.committed == 2
    assert _decided_sent(_recv(r, 1, prepare(x, 1, 0), 50)) == [1]  # first time, but 2 behind
