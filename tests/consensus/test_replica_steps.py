"""Step tables: one input → the expected effects, one PBFT rule per test."""

from __future__ import annotations

from consensus.effects import Broadcast, Commit, Evidence, Persist, ScheduleTimeout
from consensus.inputs import BlockExecuted, MessageReceived, TimeoutFired, TransactionsVerified
from consensus.messages import CommitVote, NewView, Prepare, Proposal, ViewChange, decode_message
from consensus.persist import PersistedState
from consensus.replica import Replica
from ledger.types import CommitCertificate

from tests.consensus.helpers import KEYS, VSET, block, commit, config, prepare, proposal, replica, tx


def _sent(effects, kind):  # type: ignore[no-untyped-def]
    return [decode_message(e.data) for e in effects if isinstance(e, Broadcast)
            and isinstance(decode_message(e.data), kind)]


def _recv(r: Replica, index: int, data: bytes, now: int = 10):  # type: ignore[no-untyped-def]
    return r.handle(MessageReceived(KEYS[index].public_key, data), now)


def test_a_backup_prepares_a_valid_proposal_from_the_primary_and_persists_first() -> None:
    # PBFT §4.2: a backup accepts PRE-PREPARE(v, n, d) from primary(v) and multicasts PREPARE.
    r = replica(1)
    b = block()
    effects = _recv(r, 0, proposal(b))
    assert isinstance(effects[0], Persist)  # the guard record is durable before the vote leaves
    prepares = _sent(effects, Prepare)
    assert [(p.view, p.height, p.block_hash) for p in prepares] == [(0, 1, b.hash)]


def test_a_replica_ignores_a_proposal_from_a_non_primary() -> None:
    # PBFT §4.2: only the primary of view v may pre-prepare in v.
    r = replica(1)
    effects = _recv(r, 2, proposal(block(proposer=2), signer=2))
    assert effects == [] and r.dropped["not-primary"] == 1


def test_a_replica_ignores_a_prepare_from_an_unknown_validator() -> None:
    from ledger.crypto import PrivateKey
    from ledger.hashing import sha256
    stranger = PrivateKey(sha256(b"stranger"))
    r = replica(1)
    b = block()
    msg = Prepare(stranger.public_key, 0, 1, b.hash)
    data = Prepare(stranger.public_key, 0, 1, b.hash, stranger.sign("prepare", "careledger-test", msg.payload())).encode()
    assert r.handle(MessageReceived(stranger.public_key, data), 1) == []
    assert r.dropped["unknown-validator"] == 1


def test_a_replica_drops_bad_signatures_and_garbage_without_changing_state() -> None:
    r = replica(1)
    good = decode_message(prepare(block(), 2))
    forged = Prepare(good.sender, good.view, good.height, good.block_hash, bytes(64)).encode()
    before = r.persisted_state()
    assert _recv(r, 2, forged) == []
    assert _recv(r, 2, b"\xff\x00garbage") == []
    assert r.dropped == {"bad-signature": 1, "malformed": 1}
    assert r.persisted_state() == before and r.committed == 0


def test_a_replica_rejects_a_proposal_whose_header_does_not_follow_its_state() -> None:
    # PBFT §4.2 "valid request" + header rule: app_hash must be our executed state.
    r = replica(1)
    effects = _recv(r, 0, proposal(block(app_hash=bytes(32))))
    assert _sent(effects, Prepare) == [] and r.dropped["proposal-header-app-hash"] == 1


def test_prepared_replica_commits_and_quorum_of_commits_yields_a_verifiable_certificate() -> None:
    # PBFT §4.2: prepared = pre-prepare + 2f prepares → COMMIT; committed-local = 2f+1 commits.
    r = replica(1)
    b = block()
    _recv(r, 0, proposal(b))
    effects = _recv(r, 2, prepare(b, 2))  # our own PREPARE + this one = quorum − 1
    assert isinstance(effects[0], Persist)  # prepared certificate persisted before COMMIT leaves
    assert [c.block_hash for c in _sent(effects, CommitVote)] == [b.hash]
    _recv(r, 2, commit(b, 2))
    effects = _recv(r, 3, commit(b, 3))
    commits = [e for e in effects if isinstance(e, Commit)]
    assert len(commits) == 1 and commits[0].block == b
    cert: CommitCertificate = commits[0].certificate
    cert.verify("careledger-test", VSET, b.hash, 1)  # what a regulator's light client runs


def test_the_primary_batches_up_to_b_transactions_or_waits_t_ms() -> None:
    r = Replica(config(), KEYS[0])
    r.start(0)
    effects = r.handle(TransactionsVerified((tx(1),)), 1)
    assert _sent(effects, Proposal) == []
    batch = [e for e in effects if isinstance(e, ScheduleTimeout) and e.timeout.kind == "batch"]
    assert batch and batch[0].delay_ms == 10
    effects = r.handle(TransactionsVerified((tx(2),)), 2)  # B = 2 reached
    (p,) = _sent(effects, Proposal)
    assert len(p.block.txs) == 2 and p.block.header.time == 2


def test_a_progress_timeout_leads_to_a_view_change_with_doubling_timeouts() -> None:
    # PBFT §4.4: a backup waiting on a request starts a view change when its timer expires.
    r = replica(1)
    effects = r.handle(TransactionsVerified((tx(1),)), 0)
    (progress,) = [e for e in effects if isinstance(e, ScheduleTimeout)]
    r.handle(progress.timeout, 500)  # first expiry: retransmit
    effects = r.handle(TimeoutFired("progress", 0, 1, r.progress_token or 0), 1000)
    (vc,) = _sent(effects, ViewChange)
    assert vc.new_view == 1 and not r.view_active
    (vct,) = [e for e in effects if isinstance(e, ScheduleTimeout)]
    assert vct.delay_ms == 1000
    r.view_changes[1] = {KEYS[i].public_key: (None, b"") for i in (2, 3)}  # f+1 others want a change
    effects = r.handle(vct.timeout, 2000)
    assert _sent(effects, ViewChange)[0].new_view == 2
    assert [e.delay_ms for e in effects if isinstance(e, ScheduleTimeout)] == [2000]


def test_new_primary_sends_new_view_and_replicas_accept_it() -> None:
    # PBFT §4.4: primary of v+1 collects 2f+1 VIEW-CHANGEs and multicasts NEW-VIEW.
    replicas = [replica(i) for i in range(4)]
    vcs = []
    for i in (0, 2, 3):
        replicas[i].handle(TransactionsVerified((tx(1),)), 0)
        replicas[i].progress_token and replicas[i].handle(TimeoutFired("progress", 0, 1, replicas[i].progress_token), 500)
        effects = replicas[i].handle(TimeoutFired("progress", 0, 1, replicas[i].progress_token or 0), 1000)
        vcs += [e.data for e in effects if isinstance(e, Broadcast) and isinstance(decode_message(e.data), ViewChange)]
    new_primary = replicas[1]  # primary of view 1
    out = []
    for i, data in zip((0, 2, 3), vcs):
        out += _recv(new_primary, i, data, 1100)
    nvs = [e.data for e in out if isinstance(e, Broadcast) and isinstance(decode_message(e.data), NewView)]
    assert len(nvs) == 1 and new_primary.view == 1 and new_primary.view_active
    _recv(replicas[2], 1, nvs[0], 1200)
    assert replicas[2].view == 1 and replicas[2].view_active


def test_two_conflicting_prepares_from_one_validator_are_reported_as_evidence() -> None:
    r = replica(1)
    a, b = block(time=5), block(time=6)
    _recv(r, 2, prepare(a, 2))
    effects = _recv(r, 2, prepare(b, 2))
    (evidence,) = [e for e in effects if isinstance(e, Evidence)]
    assert evidence.public_key == KEYS[2].public_key and evidence.kind == "prepare"
    assert r.evidence == [evidence]


def test_a_restarted_replica_never_signs_a_conflicting_prepare() -> None:
    # Double-sign guard: the persisted record survives the restart.
    r = replica(1)
    a = block(time=5)
    effects = _recv(r, 0, proposal(a))
    saved = [e for e in effects if isinstance(e, Persist)][-1].state
    restarted = Replica(config(), KEYS[1], restored=PersistedState.decode(saved))
    restarted.start(20)
    b = block(time=6)
    effects = restarted.handle(MessageReceived(KEYS[0].public_key, proposal(b)), 30)
    assert _sent(effects, Prepare) == []


def test_checkpoint_becomes_stable_with_a_quorum_of_matching_digests() -> None:
    # PBFT §4.3: a checkpoint with 2f+1 matching signed digests is stable.
    from consensus.messages import Checkpoint, checkpoint_digest
    from tests.consensus.helpers import signed
    r = replica(1, checkpoint_interval=1)
    b = block()
    for data, i in [(proposal(b), 0), (prepare(b, 2), 2), (prepare(b, 3), 3), (commit(b, 2), 2), (commit(b, 3), 3)]:
        _recv(r, i, data)
    assert r.committed == 1
    effects = r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 40)
    (cp,) = _sent(effects, Checkpoint)
    digest = checkpoint_digest(1, b.hash, b"\x01" * 32)
    assert cp.digest == digest
    for i in (2, 3):
        _recv(r, i, signed(Checkpoint(KEYS[i].public_key, 1, digest), KEYS[i]).encode())
    assert r.stable_checkpoint == 1


def _restart(r: Replica, saved: bytes, now: int = 20) -> Replica:
    restarted = Replica(config(), r.key, restored=PersistedState.decode(saved))
    restarted.start(now)
    return restarted


def _last_persist(effects) -> bytes:  # type: ignore[no-untyped-def]
    return [e for e in effects if isinstance(e, Persist)][-1].state


def test_after_a_restart_our_own_prepare_counts_again() -> None:
    # PBFT §4.2 prepared = pre-prepare + 2f PREPAREs (ours included). The guard
    # record of our PREPARE survives a crash; its signature counts again, so one
    # more PREPARE from a peer is enough, and no new signature is made.
    r = replica(1)
    b = block()
    saved = _last_persist(_recv(r, 0, proposal(b)))
    restarted = _restart(r, saved)
    effects = _recv(restarted, 0, proposal(b), 30)
    assert [p.block_hash for p in _sent(effects, Prepare)] == [b.hash]  # the stored bytes, re-sent
    assert _sent(effects, Prepare)[0] == decode_message(PersistedState.decode(saved).signed[0].data)
    effects = _recv(restarted, 2, prepare(b, 2), 40)  # own + this one = quorum − 1
    assert [c.block_hash for c in _sent(effects, CommitVote)] == [b.hash]


def test_after_a_restart_our_own_commit_counts_again() -> None:
    # committed-local = 2f+1 COMMITs, ours included: after a restart two peers suffice.
    r = replica(1)
    b = block()
    _recv(r, 0, proposal(b))
    saved = _last_persist(_recv(r, 2, prepare(b, 2)))  # prepared: our COMMIT is signed
    assert any(rec.kind == "commit" for rec in PersistedState.decode(saved).signed)
    restarted = _restart(r, saved)
    _recv(restarted, 0, proposal(b), 30)
    _recv(restarted, 2, commit(b, 2), 31)
    effects = _recv(restarted, 3, commit(b, 3), 32)
    (done,) = [e for e in effects if isinstance(e, Commit)]
    done.certificate.verify("careledger-test", VSET, b.hash, 1)
    assert KEYS[1].public_key in dict(done.certificate.signatures)


def test_f_plus_1_validators_ahead_make_an_idle_replica_fetch() -> None:
    # Catch-up trigger: nothing pending, but f+1 = 2 validators signed messages for
    # height 3 (they committed 1 and 2): one of them is honest, so we are behind.
    from consensus.effects import FetchBlocks
    r = replica(1)
    ahead = block(height=3, prev_hash=b"\x01" * 32)
    effects = _recv(r, 2, prepare(ahead, 2))
    assert [e for e in effects if isinstance(e, ScheduleTimeout)] == []  # one sender proves nothing
    effects = _recv(r, 3, prepare(ahead, 3), 11)
    (timer,) = [e for e in effects if isinstance(e, ScheduleTimeout)]
    assert timer.timeout.kind == "progress"
    effects = r.handle(timer.timeout, 11 + timer.delay_ms)
    (fetch,) = [e for e in effects if isinstance(e, FetchBlocks)]
    assert (fetch.from_height, fetch.to_height) == (1, 3)  # one past what it knows is committed
    assert _sent(effects, ViewChange) == []  # being behind is not a reason to vote the primary out


def test_an_idle_replica_sends_a_status_beacon_of_its_last_commit() -> None:
    # With no load nobody sends anything; the periodic beacon (our last COMMIT, no
    # new signature) lets a lagging peer see a quorum ahead and fetch.
    r = replica(1)
    b = block()
    for data, i in [(proposal(b), 0), (prepare(b, 2), 2), (commit(b, 2), 2), (commit(b, 3), 3)]:
        _recv(r, i, data)
    assert r.committed == 1
    r.handle(BlockExecuted(1, b"\x01" * 32, b"\x02" * 32), 40)
    effects = r.handle(TimeoutFired("status", 0, 1, r.status_token or 0), 8000)
    (beacon,) = _sent(effects, CommitVote)
    assert (beacon.height, beacon.block_hash, beacon.sender) == (1, b.hash, KEYS[1].public_key)
    assert [e.timeout.kind for e in effects if isinstance(e, ScheduleTimeout)] == ["status"]


def test_a_view_change_past_an_unexecuted_set_boundary_is_not_judged() -> None:
    # Validator sets change only after a checkpoint boundary (K = 2 here). A replica
    # that executed nothing knows the set of heights 1..2 only; a VIEW-CHANGE from a
    # replica at slot 4 must be checked against set(4), which it cannot know yet.
    from tests.consensus.helpers import signed
    r = replica(1)
    from ledger.types import commit_vote_payload
    hash3 = b"\x03" * 32
    sigs = tuple(sorted((k.public_key, k.sign("commit", "careledger-test", commit_vote_payload(3, 0, hash3)))
                        for k in KEYS[:3]))
    vc = signed(ViewChange(KEYS[2].public_key, 1, 3, CommitCertificate(3, 0, hash3, sigs), None), KEYS[2]).encode()
    _recv(r, 2, vc)
    assert r.dropped == {"view-change-beyond-known-set": 1}
    assert r._set_known(2) and not r._set_known(3)


def test_one_view_change_in_two_encodings_is_not_evidence() -> None:
    # The decoder ignores the tag of a PREPARE embedded in a prepared certificate, so
    # a flipped tag gives other bytes with the same signed payload: that is not a
    # second VIEW-CHANGE, and its honest signer must not be reported (sim seed 365).
    from ledger import codec
    r = replica(1)
    b = block()
    _recv(r, 0, proposal(b))
    _recv(r, 2, prepare(b, 2))
    assert r.prepared is not None
    r.handle(TransactionsVerified((tx(1),)), 20)
    r.handle(TimeoutFired("progress", 0, 1, r.progress_token or 0), 600)
    effects = r.handle(TimeoutFired("progress", 0, 1, r.progress_token or 0), 1200)
    (data,) = [e.data for e in effects if isinstance(e, Broadcast) and isinstance(decode_message(e.data), ViewChange)]
    wire = codec.decode(data)
    assert wire[5] is not None  # carries the prepared certificate
    wire[5][1][0][0] += 1
    other = codec.encode(wire)
    assert other != data and decode_message(other) == decode_message(data)
    observer = replica(3)
    _recv(observer, 1, data, 1300)
    effects = _recv(observer, 1, other, 1301)
    assert [e for e in effects if isinstance(e, Evidence)] == [] and observer.evidence == []
