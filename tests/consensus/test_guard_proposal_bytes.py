"""A primary's guard keeps the block of its PROPOSAL records only until the
height is executed (= durable in the block store): the digest stays, the
bytes go, so the state written before every vote stays small. A proposal not
yet executed keeps its bytes and is re-sent after a restart."""

from __future__ import annotations

import collections

import pytest

from consensus.effects import Broadcast, Commit, Persist, Send
from consensus.history import History
from consensus.inputs import BlockExecuted, MessageReceived, TransactionsVerified
from consensus.persist import ChainTip, PersistedState, SignedRecord
from consensus.replica import Replica
from ledger.hashing import sha256
from tests.consensus.helpers import KEYS, config, tx


def _app(block_hash: bytes) -> tuple[bytes, bytes]:
    return sha256(b"app" + block_hash), sha256(b"receipts" + block_hash)


class _Cluster:
    """Four replicas, FIFO delivery, BlockExecuted fed right after each Commit
    (as the driver does once the block is written)."""

    def __init__(self, pipeline: int = 1) -> None:
        self.config = config(checkpoint_interval=4, max_batch_txs=1, results_lag=pipeline, max_in_flight=pipeline)
        self.replicas = [Replica(self.config, KEYS[i]) for i in range(4)]
        self.queue: collections.deque = collections.deque()
        self.now = 0
        self.blocks: dict[int, tuple] = {}  # height → (block, certificate), as committed by replica 0
        self.persists: list[tuple[int, bytes]] = []  # replica 0: (executed when written, state)
        for i, r in enumerate(self.replicas):
            self.perform(i, r.start(0))

    def handle(self, i: int, event) -> list:  # type: ignore[no-untyped-def]
        effects = self.replicas[i].handle(event, self.now)
        self.perform(i, effects)
        return effects

    def perform(self, i: int, effects: list) -> None:  # type: ignore[type-arg]
        executed = []
        for effect in effects:
            if isinstance(effect, Persist) and i == 0:
                self.persists.append((self.replicas[0].executed, effect.state))
            elif isinstance(effect, Broadcast):
                self.queue.extend((j, MessageReceived(KEYS[i].public_key, effect.data)) for j in range(4) if j != i)
            elif isinstance(effect, Send):
                j = [k.public_key for k in KEYS].index(effect.to_public_key)
                self.queue.append((j, MessageReceived(KEYS[i].public_key, effect.data)))
            elif isinstance(effect, Commit):
                if i == 0:
                    self.blocks[effect.block.height] = (effect.block, effect.certificate)
                executed.append(BlockExecuted(effect.block.height, *_app(effect.block.hash)))
        for event in executed:
            self.handle(i, event)

    def run_height(self, nonce: int) -> None:
        for i in range(4):
            self.handle(i, TransactionsVerified((tx(nonce),)))
        while self.queue:
            self.now += 1
            j, event = self.queue.popleft()
            self.handle(j, event)

    def tip(self, height: int) -> ChainTip:
        block, cert = self.blocks[height]
        history = History.from_hashes([self.blocks[h][0].hash for h in range(1, height + 1)])
        lagged = tuple((h, *_app(self.blocks[h][0].hash)) for h in range(max(1, height - self.config.results_lag + 1),
                                                                         height))
        return ChainTip(height, block.hash, block.header.time, history, *_app(block.hash), cert,
                        lagged_results=lagged)


@pytest.mark.parametrize("pipeline", [1, 3])
def test_a_primary_persists_no_block_bytes_at_or_below_its_executed_height(pipeline: int) -> None:
    cluster = _Cluster(pipeline)
    heights = 30
    for nonce in range(1, heights + 1):
        cluster.run_height(nonce)
    primary = cluster.replicas[0]
    assert primary.executed == primary.committed == heights
    assert primary.counters.get("proposals", 0) >= heights
    assert cluster.persists
    for executed, state in cluster.persists:
        decoded = PersistedState.decode(state)
        assert decoded.encode() == state  # no stale cached record encoding inside
        proposals = [r for r in decoded.signed if r.kind == "proposal"]
        for r in proposals:
            assert (r.data == b"") == (r.height <= executed), (executed, r.height)
            if r.height in cluster.blocks:
                assert r.digest == cluster.blocks[r.height][0].hash  # the digest stays
        for height, (block, _) in cluster.blocks.items():
            if height <= executed:
                assert block.encode() not in state, (executed, height)
    # the steady state holds ~2K+W records, but not one block
    assert sum(r.kind == "proposal" for r in primary.persisted_state().signed) > pipeline
    final = primary.persisted_state().encode()
    assert all(block.encode() not in final for block, _ in cluster.blocks.values())
    assert len(final) < 16 * 1024


def test_a_stripped_record_still_refuses_a_conflicting_proposal() -> None:
    cluster = _Cluster()
    for nonce in range(1, 6):
        cluster.run_height(nonce)
    primary = cluster.replicas[0]
    record = primary.signed[("proposal", 0, 5)]
    assert record.data == b"" and record.digest == cluster.blocks[5][0].hash
    from consensus.messages import Proposal
    other = cluster.blocks[4][0]  # any other block: a different digest at (proposal, 0, 5)
    assert primary._sign_once(Proposal(primary.public_key, 0, 5, other), 0, 5, other.hash) is None
    assert primary.counters["refused_double_sign"] == 1
    block = cluster.blocks[5][0]  # the same block: nothing to re-send, nothing new signed
    assert primary._sign_once(Proposal(primary.public_key, 0, 5, block), 0, 5, block.hash) is None


def test_a_restarted_primary_re_sends_its_unexecuted_proposal() -> None:
    cluster = _Cluster()
    for nonce in range(1, 21):
        cluster.run_height(nonce)
    primary = cluster.replicas[0]
    effects = primary.handle(TransactionsVerified((tx(21),)), cluster.now)  # proposes 21, then crashes
    sent = [e.data for e in effects if isinstance(e, Broadcast)]
    assert len(sent) == 1
    state = [e.state for e in effects if isinstance(e, Persist)][-1]
    assert state.find(sent[0]) >= 0  # the un-executed proposal keeps its bytes
    restored = PersistedState.decode(state)

    restarted = Replica(cluster.config, KEYS[0], restored=restored, last_commit=cluster.tip(20))
    resent = [e.data for e in restarted.start(cluster.now + 5) if isinstance(e, Broadcast)]
    assert sent[0] in resent  # the very bytes signed before the crash
    assert restarted.counters.get("proposals", 0) == 0  # nothing new signed
    assert restarted.proposal_bytes[0] == sent[0]


def test_a_restored_state_drops_block_bytes_at_or_below_the_tip_and_keeps_the_rest() -> None:
    """States written before the replica stripped its records (older versions
    let the driver trim them) load as before, minus the bytes of durable heights."""
    cluster = _Cluster()
    for nonce in range(1, 9):
        cluster.run_height(nonce)
    digest = bytes(32)
    old = PersistedState(0, True, (
        SignedRecord("proposal", 0, 7, cluster.blocks[7][0].hash, b"block-7"),
        SignedRecord("prepare", 0, 7, digest, b"vote-7"),
        SignedRecord("proposal", 0, 8, cluster.blocks[8][0].hash, b"block-8"),
        SignedRecord("proposal", 0, 9, digest, b"block-9"),
    ))
    r = Replica(cluster.config, KEYS[0], restored=PersistedState.decode(old.encode()), last_commit=cluster.tip(8))
    assert [(rec.kind, rec.height, rec.digest, rec.data) for rec in r.persisted_state().signed] == [
        ("proposal", 7, cluster.blocks[7][0].hash, b""), ("prepare", 7, digest, b"vote-7"),
        ("proposal", 8, cluster.blocks[8][0].hash, b""), ("proposal", 9, digest, b"block-9")]
    assert b"block-7" not in r.persisted_state().encode()


def test_a_proposal_record_for_the_slot_without_bytes_is_neither_re_sent_nor_replaced() -> None:
    """`_maybe_propose`: a slot record stripped by an older driver (its block was
    reported durable, then lost) keeps the primary from signing another block there."""
    cluster = _Cluster()
    for nonce in range(1, 9):
        cluster.run_height(nonce)
    stripped = PersistedState(0, True, (SignedRecord("proposal", 0, 9, bytes(32), b""),))
    r = Replica(cluster.config, KEYS[0], restored=stripped, last_commit=cluster.tip(8))
    effects = r.start(cluster.now) + r.handle(TransactionsVerified((tx(9),)), cluster.now + 1)
    assert not [e for e in effects if isinstance(e, Broadcast)]
    assert r.counters.get("proposals", 0) == 0
    assert r.signed[("proposal", 0, 9)].data == b""
