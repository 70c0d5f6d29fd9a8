"""One PBFT replica as a pure state machine: `handle(input, now_ms) -> [Effect]`.

Rules (Castro & Liskov, OSDI'99, adapted to a chain of blocks; "§" cites the paper):

- Heights are PBFT sequence numbers; a block is one batch of requests.
  The primary of view v for height h is `validators_for(h).primary(v)`.
- Normal case (§4.2): the primary sends PROPOSAL (pre-prepare) with the whole
  block; a backup PREPAREs it if the header checks out against its own
  executed state and the view/height/digest are fresh; *prepared* = proposal +
  quorum−1 matching PREPAREs from other validators; then it signs COMMIT
  (kind "commit" over `commit_vote_payload`, so the votes ARE the certificate).
  A quorum of COMMITs for (h, v, d) plus the block commits h — whatever our
  own view, because a quorum of COMMIT signatures is exactly what a light
  client accepts as final.
- Pipelining: header h carries the results of executing h−L (`results_lag`,
  genesis results for h ≤ L), so heights c+1 … c+W (`max_in_flight`, W ≤ L,
  c = our committed height; `committed + 1` is "the slot") are voted on at
  once: checking a proposal for c+W needs our results of c+W−L ≤ c.
  - A proposal for h in flight is accepted (and PREPAREd) only when it
    chains (prev_hash, history root, time) to the block we accepted at h−1 in
    the same view, or to our committed tip when h is the slot (`_parent`),
    and repeats no transaction of the blocks in flight below it.
  - The primary proposes the next height as soon as it has proposed (and
    accepted) the one below; batching rules are unchanged.
  - COMMIT for h only once h−1 is committed locally AND is the block h's
    prev_hash names (so only at the slot); blocks commit in height order.
  - Heights are never in flight across a validator-set boundary: a proposal
    above the slot must have the slot's validator set (`_same_set_as_slot`),
    so VIEW-CHANGE certificates and the NEW-VIEW walk stay within one set.
  - `pipeline_window` is a BUFFER beyond that: heights above the slot whose
    messages are kept rather than dropped (COMMITs above the slot, and
    messages a replica slightly behind cannot use yet); a valid message
    beyond it triggers catch-up.
  W = L = 1 is the unpipelined protocol, byte for byte.
- Checkpoints (§4.3): after executing a multiple of K, a validator signs
  CHECKPOINT(h, digest(h, block hash, app hash)); a quorum makes it stable
  and logs (evidence bookkeeping, checkpoint votes, guard records) at or below
  it are dropped. A stable digest different from our own is a broken
  invariant (our execution diverged) and raises.
- View change (§4.4): no progress within the timeout while work is pending
  (transactions we hold or a proposal we saw) ⇒ retransmit once at half the
  timeout, then VIEW-CHANGE(v+1) with our committed height + its certificate
  and our highest prepared certificate. The timeout doubles per consecutive
  failed view, capped. A replica escalates past v+1 only when f+1 other
  validators also want a view ≥ v+1 (so a partitioned replica does not run
  away with views it must later wait for). f+1 VIEW-CHANGEs for higher views
  make a replica join the smallest (§4.5.2). The new primary sends NEW-VIEW
  with a quorum of VIEW-CHANGEs. Each VIEW-CHANGE carries the highest-view
  prepared certificate of every height in flight (persisted, each dropped
  only once its height is executed). The O set is the walk
  (`_new_view_decision`): from max(committed)+1 upward, the highest-view
  prepared block of each height while it chains to the block chosen below
  (at the target: to the certified block), stopping at the first gap or
  break; the new primary re-proposes those height by height in the NEW-VIEW
  and proposes fresh blocks above. Every replica re-checks the NEW-VIEW
  (the walk included) before entering the view. Why the walk is safe: README
  "Consensus".
- Censorship: transactions are gossiped to every replica, so a replica that
  holds transactions the primary never proposes times out and votes it out.
- Double-sign guard: every signature goes through `_sign_once`, keyed by
  (kind, view, height); the record is in `PersistedState`, emitted as
  `Persist` at the FRONT of the effect list before any message it covers.
  Records are kept for 2K+W heights below the committed height, because a
  crash may lose unsynced blocks; drivers must sync blocks at least every K.
  A PROPOSAL record keeps its block only until `BlockExecuted` reports its
  height, which drivers send only once the block is durable (or make it
  durable before the next Persist): then just its digest stays.
- Catch-up: certified blocks (`Decided` replies, `BlocksFetched`) are verified
  (certificate with the quorum, hash chain, tx root, our own execution
  results) and committed one height at a time, never by replaying votes.
  A late slot message makes us answer its sender with Decided blocks only
  when the sender is really behind: the message is two or more heights old,
  or we saw it before (a retransmission, a restart's re-send, an idle
  beacon); a first late vote for our last height is the steady state.
  A replica fetches when it sees a quorum ahead: a message beyond its window,
  f+1 distinct validators' messages above its slot (one of them is honest and
  committed the slot; checked when the progress timer fires, so a replica only
  a message behind commits by itself), a Decided block above its slot, or a
  VIEW-CHANGE/NEW-VIEW whose certificate is above it. A peer answering a
  replica far behind also sends its certified tip. With no load nobody would
  send anything, so an idle replica re-sends its last COMMIT every
  `max_timeout_ms` (a status beacon; nothing new is signed).
- Restart: the guard records of our own PREPARE/COMMIT for the slot count
  again (same signatures, re-sent), so peers need not make up for them.
- Validator sets: a `BlockExecuted(h, validator_update=S)` schedules S for
  heights > c, where c is the first multiple of K that is ≥ h+L; header c
  announces it in `next_validators_hash`. So executed blocks up to e fix the
  set of every height ≤ the first multiple of K that is ≥ e+1+L
  (`_set_known`), which covers h+1 for every h ≤ committed+W once
  e ≥ h−L. With L = 1: ≥ h+1 and ≥ e+2, as before pipelining.
  View changes across a boundary: a VIEW-CHANGE's signer must be a validator
  of ITS slot (committed_height + 1); a NEW-VIEW is judged entirely against
  the set of its target height (max certified height + 1): primary, signer
  membership of every VIEW-CHANGE, quorum size — that is where its quorum must
  intersect the quorum that may have prepared the target. A replica that
  cannot know the target's set yet (a boundary it has not executed) drops the
  message and catches up first; a primary behind a certified height waits
  until it has caught up (retried on every commit).
- Evidence: the first signed message per (signer, kind, view, height) is kept
  until the next stable checkpoint; a conflicting second one yields `Evidence`.
- Bad peer input never raises: it is dropped and counted in `self.dropped`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from ledger import codec
from ledger.crypto import PrivateKey, is_valid
from ledger.errors import EncodeError, LedgerError
from ledger.hashing import ZERO_HASH, sha256
from ledger.types import (
    MAX_TXS_PER_BLOCK, Block, CommitCertificate, Header, Tx, ValidatorSet,
    commit_vote_payload, compute_tx_root, make_certificate,
)

from consensus.config import ConsensusConfig
from consensus.effects import (
    Broadcast, Commit, Effect, Evidence, FetchBlocks, Persist, ScheduleTimeout, Send,
)
from consensus.errors import InputError, InvariantViolation, MessageError
from consensus.history import History
from consensus.inputs import (
    BlockExecuted, BlocksFetched, Input, MessageReceived, TimeoutFired, TransactionsVerified,
)
from consensus.messages import (
    Checkpoint, CommitVote, Decided, NewView, Prepare, PreparedCertificate, Proposal,
    Verifier, ViewChange, checkpoint_digest, decode_message, with_signature_of,
)
from consensus.persist import ChainTip, PersistedState, SignedRecord

MAX_FUTURE_PER_HEIGHT = 512
MAX_FETCHED = 1024
MAX_EVIDENCE = 1000
MAX_REPLIED = 4096
MAX_VIEWS_AHEAD = 64
MAX_HEADER_BYTES = 1024  # a block's encoding beyond its txs' (header ≈ 500 bytes, array headers)


class _HeightLog:
    """The message log of one height in flight (§4.2: per sequence number)."""

    __slots__ = ("proposals", "proposal_bytes", "checked", "prepares", "commit_votes")

    def __init__(self) -> None:
        self.proposals: dict[int, Proposal] = {}  # view → pre-prepare
        self.proposal_bytes: dict[int, bytes] = {}
        self.checked: dict[tuple[int, bytes], bool] = {}  # (view, hash) → proposal valid in that view
        self.prepares: dict[tuple[int, bytes], dict[bytes, Prepare]] = {}
        self.commit_votes: dict[tuple[int, bytes], dict[bytes, bytes]] = {}


class Replica:
    """A PBFT replica (or an observer, when its key is not a validator).

    Construct it, call `start(now_ms)` once and perform the effects, then feed
    every input to `handle(input, now_ms)`. After a restart, pass the last
    `Persist` state (`restored`) and the block store's tip (`last_commit`).
    """

    def __init__(
        self,
        config: ConsensusConfig,
        private_key: PrivateKey,
        *,
        restored: PersistedState | None = None,
        last_commit: ChainTip | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        """`verifier(public_key, kind, chain_id, payload, signature) -> bool`
        defaults to `ledger.crypto.is_valid`; a simulator may pass a memoised one."""
        self.config = config
        self.key = private_key
        self.public_key = private_key.public_key
        self.chain_id = config.chain_id
        self._verifier: Verifier = verifier or is_valid
        self.dropped: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        self.evidence: list[Evidence] = []
        self.now = 0
        self._out: list[Effect] = []
        self._dirty = False

        tip = last_commit or ChainTip(
            time_ms=config.genesis_time_ms, app_hash=config.genesis_app_hash,
            receipts_root=config.genesis_receipts_root,
        )
        if tip.height > 0 and tip.certificate is None:
            raise InputError("a chain tip above genesis needs its commit certificate")
        self.committed = tip.height
        self.executed = tip.height
        self.last_block_hash = tip.block_hash
        self.last_time = tip.time_ms
        self.history = tip.history
        self.results: dict[int, tuple[bytes, bytes]] = {tip.height: (tip.app_hash, tip.receipts_root)}
        for h, app_hash, receipts_root in tip.lagged_results:
            if tip.height - config.results_lag < h < tip.height:
                self.results[h] = (app_hash, receipts_root)
        if 0 < tip.height < config.results_lag:  # headers 1..L carry the genesis results
            self.results[0] = (config.genesis_app_hash, config.genesis_receipts_root)
        self.last_certificate = tip.certificate
        self.recent: dict[int, tuple[Block, CommitCertificate]] = {}
        self._decided_bytes: dict[int, bytes] = {}  # encoded Decided per recent height
        self.schedule: list[tuple[int, ValidatorSet]] = [(1, config.validators)]
        for start, vset in tip.validator_schedule:
            self._schedule_set(start, vset)
        # Transactions committed in the last K blocks (`_commit` prunes), by
        # height: a proposal may not repeat them (§4.2 "valid request"; the
        # contracts' nonces refuse older replays). The same window after a
        # restart (the store hands back the last K blocks' txs with heights).
        self.committed_txs: dict[bytes, int] = {}
        self._committed_at: dict[int, list[bytes]] = {}
        window_floor = tip.height - config.checkpoint_interval
        for h, hashes in tip.recent_txs:
            if window_floor < h <= tip.height:
                for tx_hash in hashes:
                    self._remember_committed_tx(tx_hash, h)
        for tx_hash in tip.recent_tx_hashes:
            if tx_hash not in self.committed_txs:
                self._remember_committed_tx(tx_hash, tip.height)

        state = restored or PersistedState()
        self.view = state.view
        self.view_active = state.view_active
        self.signed: dict[tuple[str, int, int], SignedRecord] = {
            (r.kind, r.view, r.height): r for r in state.signed
        }
        # keys of our PROPOSAL records still holding their block, in signing
        # order (a dict: ordered), until `_strip_proposal_bytes` drops it; a
        # state saved before its heights' BlockExecuted (or by an older
        # version) may hold blocks at or below our tip: dropped at once
        self._proposals_with_block: dict[tuple[str, int, int], None] = {
            k: None for k, r in self.signed.items() if k[0] == "proposal" and r.data
        }
        self._strip_proposal_bytes(tip.height)
        # highest-view prepared certificate per height in flight (§4.4 P set),
        # each kept until its height is executed (= durable in the block store)
        self.prepared_at: dict[int, PreparedCertificate] = {
            c.proposal.height: c for c in state.certificates()
            if self.committed < c.proposal.height <= self.committed + config.max_in_flight
        }

        self.pending: dict[bytes, Tx] = {}
        self.pending_bytes: dict[bytes, int] = {}  # tx hash → len(tx.encode())
        self.future: dict[int, list[tuple[bytes, Any]]] = {}
        self.fetched: dict[int, tuple[Block, CommitCertificate, bytes]] = {}
        self.verified_fetched: set[int] = set()  # heights in `fetched` from a verified Decided
        self.view_changes: dict[int, dict[bytes, tuple[ViewChange, bytes]]] = {}
        self.valid_view_changes: set[bytes] = set()
        self.new_view_sent: set[int] = set()
        self.last_new_view: bytes | None = None
        self.checkpoints: dict[int, dict[bytes, bytes]] = {}
        self.own_checkpoints: dict[int, bytes] = {}
        self.stable_checkpoint = 0
        self.first_seen: dict[tuple[bytes, str, int, int], tuple[bytes, bytes]] = {}
        self.evidence_keys: set[tuple[bytes, str, int, int]] = set()
        self.replied: set[tuple[bytes, str, int]] = set()
        self.late_seen: set[tuple[bytes, str, int, int]] = set()  # late slot messages seen once
        self.ahead_height = 0
        self.ahead_peer: bytes | None = None
        self.ahead_senders: dict[bytes, int] = {}  # validator → height it showed it committed
        self.status_token: int | None = None
        self.fetch_in_flight = False
        self.failed_views = 0
        self.token = 0
        self.progress_token: int | None = None
        self.retransmitted = False
        self.view_change_token: int | None = None
        self.commits_at_view_change = 0
        self.batch_timers: set[tuple[int, int, str]] = set()
        self.batch_due: set[tuple[int, int]] = set()
        self.token_fetch = -1
        # (view, height) → block hash fixed by an accepted NEW-VIEW (§4.4 O set);
        # persisted, so a restart in that view still refuses any other block
        self.mandates: dict[tuple[int, int], bytes] = {(v, h): d for v, h, d in state.mandates}
        # (view, target) of the NEW-VIEW that activated `view`: no proposal below
        # the target in that view (§4.4: those heights are certified; only the O
        # set fills heights in that view up to max-s). Persisted like mandates.
        self.new_view_floor: tuple[int, int] = state.new_view_floor
        self.heights: dict[int, _HeightLog] = {}
        # (view, height) → the block we accepted there (a valid proposal chaining
        # to our accepted block at height − 1 in that view, or to our committed
        # tip) and the history root's state after it: what height + 1 chains to
        self.accepted: dict[tuple[int, int], tuple[Block, History]] = {}
        self.valid_blocks: dict[bytes, Block] = {}
        # the last transaction list whose root we computed, and that root: a
        # primary checks the block it just built, a certified block is checked
        # twice (`_certified_ok`, then `_header_problem`)
        self._tx_root_memo: tuple[tuple[Tx, ...], bytes] | None = None
        self._reset_slot()

    # ------------------------------------------------------------ driver API

    def start(self, now_ms: int) -> list[Effect]:
        """Effects to perform once after construction (timers, resent view change)."""
        self.now = now_ms
        self._out = []
        if not self.view_active:
            record = self.signed.get(("view-change", self.view, 0))
            if record is not None:
                self._out.append(Broadcast(record.data))
                self._arm_view_change_timer()
            else:
                self._start_view_change(self.view)
        self._arm_progress()
        self._arm_status()
        self._maybe_propose()
        return self._flush()

    def handle(self, event: Input, now_ms: int) -> list[Effect]:
        """Process one input; return the effects to perform in order.

        Bad peer input is dropped and counted in `dropped`; raises only
        `InputError` (driver bug) or `InvariantViolation` (halt the node).
        """
        self.now = now_ms
        self._out = []
        try:
            if isinstance(event, MessageReceived):
                self._on_message_bytes(event.sender_public_key, event.data)
            elif isinstance(event, TimeoutFired):
                self._on_timeout(event)
            elif isinstance(event, TransactionsVerified):
                self._on_transactions(event.txs)
            elif isinstance(event, BlockExecuted):
                self._on_block_executed(event)
            elif isinstance(event, BlocksFetched):
                self._on_blocks_fetched(event)
            else:
                raise InputError("unknown input %r" % (event,))
        except EncodeError as exc:
            # every message we build is bounded (blocks by `block_bytes_limit`):
            # one that does not encode means a bound is wrong. Halt loudly.
            raise InvariantViolation("a message we built does not encode: %s" % exc) from exc
        return self._flush()

    def persisted_state(self) -> PersistedState:
        """What the last `Persist` effect carried (for tests and drivers)."""
        certs = [self.prepared_at[h] for h in sorted(self.prepared_at)]
        return PersistedState(self.view, self.view_active, tuple(self.signed.values()),
                              certs[0] if certs else None,
                              tuple((v, h, d) for (v, h), d in sorted(self.mandates.items())),
                              tuple(certs[1:]), self.new_view_floor)

    @property
    def prepared(self) -> PreparedCertificate | None:
        """The lowest-height prepared certificate we hold (the slot's, unpipelined)."""
        return self.prepared_at[min(self.prepared_at)] if self.prepared_at else None

    # the slot's (committed + 1) log, for status and tests
    @property
    def proposals(self) -> dict[int, Proposal]:
        return self._log(self.committed + 1).proposals

    @property
    def proposal_bytes(self) -> dict[int, bytes]:
        return self._log(self.committed + 1).proposal_bytes

    @property
    def prepares(self) -> dict[tuple[int, bytes], dict[bytes, Prepare]]:
        return self._log(self.committed + 1).prepares

    @property
    def commit_votes(self) -> dict[tuple[int, bytes], dict[bytes, bytes]]:
        return self._log(self.committed + 1).commit_votes

    def status(self) -> dict[str, Any]:
        """A plain snapshot for metrics and RPC (`dump_consensus_state`)."""
        return {
            "height": self.committed, "executed": self.executed, "view": self.view,
            "view_active": self.view_active, "stable_checkpoint": self.stable_checkpoint,
            "pending_txs": len(self.pending), "evidence": len(self.evidence),
            "is_validator": self._is_validator(self.committed + 1),
            "dropped": dict(self.dropped), "counters": dict(self.counters),
        }

    # ------------------------------------------------------------- helpers

    def _flush(self) -> list[Effect]:
        out = self._out
        self._out = []
        if self._dirty:
            self._dirty = False
            out.insert(0, Persist(self.persisted_state().encode()))
        return out

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def _schedule_set(self, start: int, vset: ValidatorSet) -> None:
        self.schedule = [(s, v) for s, v in self.schedule if s < start] + [(start, vset)]

    def validators_for(self, height: int) -> ValidatorSet:
        """The validator set of `height`, as far as executed blocks tell."""
        current = self.schedule[0][1]
        for start, vset in self.schedule:
            if start <= height:
                current = vset
        return current

    def _set_known(self, height: int) -> bool:
        """Whether executed blocks already fix the validator set of `height`.

        An update executed at h takes effect after the first multiple of K that
        is ≥ h+L, so updates not yet executed (h ≥ executed+1) act only above
        the first multiple of K that is ≥ executed+1+L (L = 1: executed+2).
        With executed ≥ h−L this covers h+1 for every h ≤ committed+W (W ≤ L).
        """
        k = self.config.checkpoint_interval
        return height <= -(-(self.executed + 1 + self.config.results_lag) // k) * k

    def _in_flight(self) -> range:
        """Heights voted on at once: committed+1 … committed+W."""
        return range(self.committed + 1, self.committed + self.config.max_in_flight + 1)

    def _log(self, height: int) -> "_HeightLog":
        log = self.heights.get(height)
        if log is None:
            log = self.heights[height] = _HeightLog()
        return log

    def _quorum(self, height: int) -> int:
        return self.config.quorum(self.validators_for(height))

    def _is_validator(self, height: int) -> bool:
        return self.validators_for(height).index_of(self.public_key) is not None

    def _primary(self, view: int, height: int) -> bytes:
        return self.validators_for(height).primary(view).public_key

    def _verify(self, public_key: bytes, kind: str, payload: bytes, signature: bytes) -> bool:
        return self._verifier(public_key, kind, self.chain_id, payload, signature)

    def _check_signed(self, msg: Any, height: int) -> None:
        """Raise MessageError unless `msg` is signed by a validator of `height`."""
        if self.validators_for(height).index_of(msg.sender) is None:
            raise MessageError("unknown-validator")
        if not msg.verify_signature(self.chain_id, self._verifier):
            raise MessageError("bad-signature")

    def _tx_root(self, txs: tuple[Tx, ...]) -> bytes:
        """`compute_tx_root(txs)`, remembered for the last tuple of (immutable) txs."""
        memo = self._tx_root_memo
        if memo is not None and memo[0] is txs:
            return memo[1]
        root = compute_tx_root(txs)
        if type(txs) is tuple:  # a list could change under the same identity
            self._tx_root_memo = (txs, root)
        return root

    def _next_token(self) -> int:
        self.token += 1
        return self.token

    def _schedule(self, kind: str, delay_ms: int, view: int, height: int, token: int) -> None:
        self._out.append(ScheduleTimeout(max(0, delay_ms), TimeoutFired(kind, view, height, token)))

    def _sign_once(self, msg: Any, view: int, height: int, digest: bytes) -> bytes | None:
        """Sign `msg` unless we signed something different for (kind, view, height).

        Returns the wire bytes (the stored ones if we signed this before), or
        None when signing would be a double-sign (refused and counted).
        """
        key = (msg.KIND, view, height)
        record = self.signed.get(key)
        if record is not None:
            if record.digest == digest:
                # a proposal record at an executed height keeps only its digest
                # (`_strip_proposal_bytes`): nothing to re-send, nothing new signed
                return record.data or None
            self._count("refused_double_sign")
            return None
        signature = self.key.sign(msg.KIND, self.chain_id, msg.payload())
        data = replace(msg, signature=signature).encode()
        self.signed[key] = SignedRecord(msg.KIND, view, height, digest, data)
        if msg.KIND == "proposal":
            self._proposals_with_block[key] = None
        self._dirty = True
        return data

    def _strip_proposal_bytes(self, executed: int) -> None:
        """Keep only the digest of our PROPOSAL records at heights ≤ `executed`.

        A stored proposal is re-sent only for a height in flight (above the
        committed tip: `_maybe_propose`, `_retransmit`), and a block is
        reported executed only once it is durable in the block store (drivers
        must not send `BlockExecuted(h)` before block h survives a crash, or
        at least must make it durable before the next `Persist` is written),
        so after any restart the tip is ≥ `executed` and those bytes — a whole
        block each, ~2K+W of them on a primary, written with every Persist —
        can never be needed. The digest stays and still refuses any
        conflicting proposal (`_sign_once`). Not marked dirty: the next
        Persist carries the smaller state (a stale record on disk is harmless).
        A fresh record replaces the old one, so `SignedRecord.encoded` (cached
        per record) is computed again, without the block.
        """
        signed, holding = self.signed, self._proposals_with_block
        for key in [k for k in holding if k[2] <= executed]:
            del holding[key]
            r = signed.get(key)
            if r is not None and r.data:
                signed[key] = SignedRecord(r.kind, r.view, r.height, r.digest, b"")

    def _remember_committed_tx(self, tx_hash: bytes, height: int) -> None:
        self.committed_txs[tx_hash] = height
        self._committed_at.setdefault(height, []).append(tx_hash)

    def _note_signed(self, sender: bytes, kind: str, view: int, height: int, digest: bytes, data: bytes) -> bool:
        """Keep the first signed message per slot; report a conflicting second one.

        Returns False when this message conflicts with an earlier one.
        """
        key = (sender, kind, view, height)
        seen = self.first_seen.get(key)
        if seen is None:
            self.first_seen[key] = (digest, data)
            return True
        if seen[0] == digest:
            return True
        if key not in self.evidence_keys and len(self.evidence) < MAX_EVIDENCE:
            self.evidence_keys.add(key)
            evidence = Evidence(sender, kind, view, height, seen[1], data)
            self.evidence.append(evidence)
            self._out.append(evidence)
            self._count("evidence")
        return False

    # ------------------------------------------------------------- slot state

    def _reset_slot(self) -> None:
        """Forget votes for finished heights; the slot is `committed + 1`.

        Logs of heights above it (in flight) are kept: their proposals were
        accepted against the chain we had, and PREPAREs stay valid.
        """
        c = self.committed
        self.heights = {h: log for h, log in self.heights.items() if h > c}
        self.accepted = {k: v for k, v in self.accepted.items() if k[1] > c}
        self.valid_blocks = {d: b for d, b in self.valid_blocks.items() if b.height > c}
        self.mandates = {k: v for k, v in self.mandates.items() if k[1] > c}
        self.retransmitted = False
        # A COMMIT we signed for this height before a restart counts again (the
        # same signature; the guard record survived, the tally did not).
        height = c + 1
        log = self._log(height)
        for (kind, view, h), record in self.signed.items():
            if kind == "commit" and h == height:
                vote = CommitVote.from_wire(codec.decode(record.data))
                log.commit_votes.setdefault((view, record.digest), {})[self.public_key] = vote.signature

    # ------------------------------------------------------------- messages

    def _on_message_bytes(self, peer: bytes, data: bytes) -> None:
        try:
            msg = decode_message(data)
        except (LedgerError, TypeError, ValueError, KeyError, IndexError):
            # decoding only: whatever a peer's bytes make the decoder raise is
            # "malformed"; errors raised after decoding are not swallowed here
            self._drop("malformed")
            return
        try:
            self._dispatch(peer, msg, data)
        except MessageError as exc:
            self._drop(exc.reason)
        except EncodeError:
            raise  # ours, not the peer's: see `handle`
        except LedgerError:
            self._drop("invalid")

    def _dispatch(self, peer: bytes, msg: Any, data: bytes) -> None:
        if isinstance(msg, (Proposal, Prepare, CommitVote)):
            self._on_slot_message(peer, msg, data)
        elif isinstance(msg, Checkpoint):
            self._on_checkpoint(msg, data)
        elif isinstance(msg, ViewChange):
            self._on_view_change(peer, msg, data)
        elif isinstance(msg, NewView):
            self._on_new_view(msg, data)
        elif isinstance(msg, Decided):
            self._on_decided(peer, msg)

    def _on_slot_message(self, peer: bytes, msg: Any, data: bytes) -> None:
        height = msg.height
        slot = self.committed + 1
        if height < slot:
            self._check_signed(msg, height)
            # Answer with whole Decided blocks only a peer that is really behind:
            # its message is two or more heights old, or it sent this one before
            # (a retransmission, a restart's re-send or an idle beacon: it is
            # stuck). A first late vote for the height we just committed is the
            # steady state (the sender commits it from the same votes we did).
            repeat = self._seen_late(msg)
            if height < self.committed or repeat:
                self._reply_decided(msg.sender, height)
            if isinstance(msg, CommitVote) and (height + 1 < self.committed or repeat):
                self._reply_decided(msg.sender, height + 1)
            raise MessageError("old-height")
        in_flight = (height <= self.committed + self.config.max_in_flight
                     and not isinstance(msg, CommitVote) and self._set_known(height))
        if height > slot and not in_flight:
            self._check_signed(msg, min(height, self.executed + 1))
            # what the message shows its sender committed: an honest COMMIT for h
            # needs h−1 committed; a PROPOSAL/PREPARE only h−W (heights in flight)
            shown = height - (1 if isinstance(msg, CommitVote) else self.config.max_in_flight)
            self._note_ahead(msg.sender, shown)
            if shown > self.ahead_senders.get(msg.sender, 0):
                self.ahead_senders[msg.sender] = shown
            if height > slot + self.config.pipeline_window:
                self._start_fetch()
                raise MessageError("beyond-window")
            buffered = self.future.setdefault(height, [])
            if len(buffered) >= MAX_FUTURE_PER_HEIGHT:
                raise MessageError("buffer-full")
            buffered.append((peer, data))
            if self.progress_token is None and self._behind():
                self._arm_progress()  # nothing pending may ever arrive: make sure we fetch
            return
        if msg.view > self.view + MAX_VIEWS_AHEAD:
            raise MessageError("view-too-far")
        self._check_signed(msg, height)
        if isinstance(msg, Proposal):
            self._on_proposal(msg, data)
        elif isinstance(msg, Prepare):
            self._on_prepare(msg, data)
        else:
            self._on_commit_vote(msg, data)
        self._advance()

    def _on_proposal(self, p: Proposal, data: bytes) -> None:
        # §4.2: a pre-prepare is accepted only from the primary of its view.
        if p.sender != self._primary(p.view, p.height):
            raise MessageError("not-primary")
        if not self._note_signed(p.sender, "proposal", p.view, p.height, p.block_hash, data):
            raise MessageError("conflicting-proposal")
        log = self._log(p.height)
        if p.view in log.proposals:
            raise MessageError("duplicate")
        log.proposals[p.view] = p
        log.proposal_bytes[p.view] = data
        self._arm_progress()

    def _on_prepare(self, m: Prepare, data: bytes) -> None:
        if m.sender == self._primary(m.view, m.height):
            raise MessageError("prepare-from-primary")  # §4.2: the primary's pre-prepare is its prepare
        if not self._note_signed(m.sender, "prepare", m.view, m.height, m.block_hash, data):
            raise MessageError("conflicting-prepare")
        votes = self._log(m.height).prepares.setdefault((m.view, m.block_hash), {})
        if m.sender in votes:
            raise MessageError("duplicate")
        votes[m.sender] = m

    def _on_commit_vote(self, m: CommitVote, data: bytes) -> None:
        if not self._note_signed(m.sender, "commit", m.view, m.height, m.block_hash, data):
            raise MessageError("conflicting-commit")
        votes = self._log(m.height).commit_votes.setdefault((m.view, m.block_hash), {})
        if m.sender in votes:
            raise MessageError("duplicate")
        votes[m.sender] = m.signature
        if m.block_hash not in self.valid_blocks and len(votes) >= self._quorum(m.height):
            self._note_ahead(m.sender, m.height)  # decided elsewhere, block unknown: fetch it
            self._start_fetch()

    def _seen_late(self, msg: Any) -> bool:
        """Whether this signed slot message (sender, kind, view, height) reached
        us before, in its slot or late; remembers a late one."""
        key = (msg.sender, msg.KIND, msg.view, msg.height)
        if key in self.first_seen or key in self.late_seen:
            return True
        if len(self.late_seen) >= MAX_REPLIED:
            self.late_seen.clear()
        self.late_seen.add(key)
        return False

    def _note_ahead(self, peer: bytes, height: int) -> None:
        if height > self.committed and height >= self.ahead_height:
            self.ahead_height = height
            self.ahead_peer = peer

    def _reply_decided(self, peer: bytes, height: int) -> None:
        """Help a peer that is behind: send it a certified block it lacks."""
        if height not in self.recent or (peer, "decided", height) in self.replied:
            return
        if len(self.replied) > MAX_REPLIED:
            self.replied.clear()
        self.replied.add((peer, "decided", height))
        self._out.append(Send(peer, self._decided_data(height)))
        tip = self.committed
        if tip > height + 1 and tip in self.recent and (peer, "decided", tip) not in self.replied:
            # the peer is further behind than one block: our certified tip tells it
            # how far to fetch (it verifies every fetched block anyway)
            self.replied.add((peer, "decided", tip))
            self._out.append(Send(peer, self._decided_data(tip)))

    def _decided_data(self, height: int) -> bytes:
        """The encoded Decided of a recent height: once per height, whichever peers need it."""
        data = self._decided_bytes.get(height)
        if data is None:
            block, cert = self.recent[height]
            data = Decided(block, cert).encode()
            self._decided_bytes = {h: d for h, d in self._decided_bytes.items() if h in self.recent}
            self._decided_bytes[height] = data
        return data

    # --------------------------------------------------------- header checks

    def _parent(self, view: int, height: int) -> tuple[bytes, int, History] | None:
        """(hash, time, history after it) of the block `height` must chain to in
        `view`: our committed tip for the slot, else the block we accepted at
        height − 1 in the same view (None: not accepted (yet))."""
        if height == self.committed + 1:
            return self.last_block_hash, self.last_time, self.history
        accepted = self.accepted.get((view, height - 1))
        if accepted is None or height <= self.committed:
            return None
        block, history = accepted
        return block.hash, block.header.time, history

    def _ready_to_check(self, view: int, height: int) -> bool:
        """Whether we can judge a proposal for `height` in `view` now: its parent
        is accepted, our results of height − L are executed, the sets of height
        and height + 1 are known, and (above the slot) height has the slot's
        validator set: heights are never in flight across a set boundary, so a
        VIEW-CHANGE's certificates and a NEW-VIEW's walk stay within one set
        (the first height under a new set is voted once the boundary commits)."""
        return (self._parent(view, height) is not None
                and self.config.lagged_height(height) in self.results
                and self._set_known(height + 1)
                and self._same_set_as_slot(height))

    def _same_set_as_slot(self, height: int) -> bool:
        return height == self.committed + 1 or self.validators_for(height) == self.validators_for(self.committed + 1)

    def _expected_header_fields(self, height: int,
                                parent: tuple[bytes, int, History] | None = None) -> dict[str, Any]:
        """Header fields `height` must have on top of `parent` (default: our tip)."""
        if parent is None:
            parent = (self.last_block_hash, self.last_time, self.history)
        app_hash, receipts_root = self.results[self.config.lagged_height(height)]
        return {
            "chain_id": self.chain_id, "height": height, "prev_hash": parent[0],
            "app_hash": app_hash, "receipts_root": receipts_root,
            "validators_hash": self.validators_for(height).hash,
            "next_validators_hash": self.validators_for(height + 1).hash,
            "history_root": parent[2].root, "history_size": height - 1,
        }

    def _header_problem(self, block: Block, view: int = 0) -> str | None:
        """Why `block` cannot follow our chain (None if it can): our committed
        tip for the slot, our accepted block below it in `view` above the slot.
        Header h carries our results of executing h − L."""
        header = block.header
        parent = self._parent(view, block.height)
        if parent is None:
            return "header-no-parent"
        for name, expected in self._expected_header_fields(block.height, parent).items():
            if getattr(header, name) != expected:
                return "header-" + name.replace("_", "-")
        if header.time < parent[1]:
            return "header-time"
        if self._tx_root(block.txs) != header.tx_root:
            return "tx-root"
        return None

    def _proposal_problem(self, p: Proposal) -> str | None:
        """Validity of a proposal's block beyond the header chain (§4.2 'valid request')."""
        block = p.block
        problem = self._header_problem(block, p.view)
        if problem is not None:
            return problem
        header = block.header
        if p.view == self.new_view_floor[0] and p.height < self.new_view_floor[1]:
            return "below-new-view-target"  # certified below the target: never re-vote it in this view
        mandate = self.mandates.get((p.view, p.height))
        if mandate is not None:
            return None if block.hash == mandate else "not-the-mandated-block"
        if header.view != p.view or header.proposer != p.sender:
            return "header-view-or-proposer"
        if header.time > self.now + self.config.max_clock_drift_ms:
            # no upper bound would let a faulty primary push app time (and the
            # monotone lower bound of every later header) arbitrarily far ahead
            return "header-time-in-future"
        if len(block.txs) > min(self.config.max_block_txs, MAX_TXS_PER_BLOCK):  # genesis-wide, not local
            return "too-many-txs"
        if block_bytes(block) > self.config.block_bytes_limit(self.validators_for(p.height)):
            return "block-too-large"  # a NEW-VIEW re-proposing it must fit in one message
        below = self._txs_in_flight_below(p.view, p.height)
        hashes = {tx.hash for tx in block.txs}
        if (len(hashes) == len(block.txs) and self.committed_txs.keys().isdisjoint(hashes)
                and below.isdisjoint(hashes) and not any(tx.chain_id != self.chain_id for tx in block.txs)
                and self.pending.keys() >= hashes):
            return None  # the usual block: every check below passes (and verifies nothing)
        seen: set[bytes] = set()
        for tx in block.txs:
            tx_hash = tx.hash
            if tx_hash in seen or tx_hash in self.committed_txs or tx_hash in below:
                return "duplicate-tx"
            seen.add(tx_hash)
            if tx.chain_id != self.chain_id:
                return "tx-chain-id"
            if tx_hash not in self.pending and not self._verify(tx.sender, "tx", tx.signing_payload(), tx.signature):
                return "tx-signature"
        return None

    def _txs_in_flight_below(self, view: int, height: int) -> set[bytes]:
        """Transactions of the blocks we accepted in `view` between the slot and
        `height` (exclusive): a block in flight may not repeat them."""
        out: set[bytes] = set()
        for h in range(self.committed + 1, height):
            accepted = self.accepted.get((view, h))
            if accepted is not None:
                out.update(tx.hash for tx in accepted[0].txs)
        return out

    # ------------------------------------------------------------- progress

    def _advance(self) -> None:
        """Make every step the current slot allows (idempotent)."""
        for _ in range(10_000):
            if not self._step():
                return
        raise InvariantViolation("replica did not settle")

    def _step(self) -> bool:
        """One step of progress; True if something changed."""
        if self.executed < self.committed:
            return False
        height = self.committed + 1
        # catch-up: a certified block for the slot commits directly
        fetched = self.fetched.pop(height, None)
        self.verified_fetched.discard(height)
        if fetched is not None:
            block, cert, peer = fetched
            if self._certified_ok(block, cert):
                self._commit(block, cert)
                return True
            self._drop("bad-fetched-block")
            return True
        # validate proposals we hold (§4.2 acceptance conditions), lowest height
        # first: a proposal above the slot chains to the one accepted below it
        for h in self._in_flight():
            log = self.heights.get(h)
            if log is None:
                continue
            for view, p in list(log.proposals.items()):
                block_hash = p.block_hash
                if (view, block_hash) in log.checked or not self._ready_to_check(view, h):
                    continue
                problem = self._proposal_problem(p)
                log.checked[(view, block_hash)] = problem is None
                if problem is None:
                    self.valid_blocks[block_hash] = p.block
                    parent = self._parent(view, h)
                    if (view, h) not in self.accepted and parent is not None:
                        self.accepted[(view, h)] = (p.block, parent[2].append(block_hash))
                else:
                    self._drop("proposal-" + problem)
                return True
        # commit: a quorum of COMMITs for a block we hold (§4.2 committed-local)
        for (view, block_hash), votes in self._log(height).commit_votes.items():
            if len(votes) >= self._quorum(height) and block_hash in self.valid_blocks:
                block = self.valid_blocks[block_hash]
                if block.header.prev_hash != self.last_block_hash:
                    # honest COMMITs for h need h−1 committed as the block h names:
                    # a quorum for a block whose parent is not ours means we diverged
                    raise InvariantViolation("a COMMIT quorum at height %d names a parent we did not commit"
                                             % height)
                cert = make_certificate(height, view, block_hash, votes)
                self._commit(block, cert)
                return True
        if self.view_active:
            for h in self._in_flight():
                if not self._is_validator(h):
                    break
                if self._vote(h):
                    return True
        return self._maybe_propose()

    def _vote(self, height: int) -> bool:
        """PREPARE and COMMIT for one height in flight in our view; True if
        something changed."""
        view = self.view
        log = self.heights.get(height)
        p = None if log is None else log.proposals.get(view)
        if log is None or p is None or not log.checked.get((view, p.block_hash)):
            return False
        if view == self.new_view_floor[0] and height < self.new_view_floor[1]:
            return False  # §4.4: below a NEW-VIEW's target every height is certified
        accepted = self.accepted.get((view, height))
        if accepted is None or (accepted[0] is not p.block and accepted[0].hash != p.block_hash):
            return False  # PREPARE h only after accepting it (chained to h−1) in this view
        root = self.accepted.get((view, self.committed + 1))
        if root is None or root[0].header.prev_hash != self.last_block_hash:
            # accepted on top of a block at the slot that is not the one we then
            # committed there (certified from another view): a dead chain, no vote
            return False
        primary = self._primary(view, height)
        # §4.2: a backup accepts a pre-prepare and multicasts PREPARE
        if self.public_key != primary and self.public_key not in log.prepares.get((view, p.block_hash), {}):
            record = self.signed.get(("prepare", view, height))
            if record is None:
                msg = Prepare(self.public_key, view, height, p.block_hash)
                data = self._sign_once(msg, view, height, p.block_hash)
                if data is not None:
                    self._out.append(Broadcast(data))
                    log.prepares.setdefault((view, p.block_hash), {})[self.public_key] = with_signature_of(msg, data)
                    if height > self.committed + 1:
                        self._count("prepared_ahead")  # a height in flight above the slot
                    return True
            elif record.digest == p.block_hash:
                # Signed before a restart (the guard record survived, the vote
                # tally did not): the same signature counts again, and peers
                # that lost it get it once more. Nothing new is signed.
                log.prepares.setdefault((view, p.block_hash), {})[self.public_key] = \
                    Prepare.from_wire(codec.decode(record.data))
                self._out.append(Broadcast(record.data))
                return True
        # §4.2 prepared(m, v, n, i): pre-prepare + quorum−1 matching prepares
        votes = log.prepares.get((view, p.block_hash), {})
        if len(votes) < self._quorum(height) - 1:
            return False
        slot = height == self.committed + 1
        if slot and ("commit", view, height) in self.signed:
            return False
        held = self.prepared_at.get(height)
        changed = False
        if held is None or held.proposal.view < view:
            # the proposal's signed bytes ride along: persisting the
            # certificate on every flush then costs O(votes), not O(txs)
            self.prepared_at[height] = PreparedCertificate(
                p, tuple(sorted(votes.values(), key=lambda m: m.sender)), log.proposal_bytes.get(view, b""))
            self._dirty = True  # persisted before the COMMIT leaves (§4.4 needs P after a crash)
            changed = True
        # Pipelining: COMMIT for h only once h−1 is committed locally AND is the
        # block h's prev_hash names; otherwise a COMMIT quorum (a certificate a
        # light client takes as final) could exist for a block whose parent is
        # replaced in a view change.
        if not slot or p.block.header.prev_hash != self.last_block_hash:
            return changed
        msg = CommitVote(self.public_key, view, height, p.block_hash)
        data = self._sign_once(msg, view, height, p.block_hash)
        if data is not None:
            self._out.append(Broadcast(data))
            signature = with_signature_of(msg, data).signature
            log.commit_votes.setdefault((view, p.block_hash), {})[self.public_key] = signature
        return True

    def _certified_ok(self, block: Block, cert: CommitCertificate) -> bool:
        """A certified block for the slot: check the certificate, then our chain.

        Raises InvariantViolation if a valid certificate names a block that does
        not follow our executed state (we diverged from a quorum).
        """
        height = self.committed + 1
        if block.height != height or cert.block_hash != block.hash or not self._certificate_ok(cert):
            return False
        if self._tx_root(block.txs) != block.header.tx_root:
            return False  # the header is certified, these transactions are not: bad input
        problem = self._header_problem(block)
        if problem is not None:
            raise InvariantViolation(
                "certified block %d does not follow our executed chain (%s)" % (height, problem))
        return True

    def _certificate_ok(self, cert: CommitCertificate) -> bool:
        """Quorum of valid distinct COMMIT signatures from the height's validators."""
        vset = self.validators_for(cert.height)
        payload = commit_vote_payload(cert.height, cert.view, cert.block_hash)
        signers: set[bytes] = set()
        for key, signature in cert.signatures:
            if key in signers or vset.index_of(key) is None:
                return False
            if not self._verify(key, "commit", payload, signature):
                return False
            signers.add(key)
        return len(signers) >= self.config.quorum(vset)

    def _commit(self, block: Block, cert: CommitCertificate) -> None:
        height = block.height
        block_hash = block.hash
        if height != self.committed + 1 or cert.block_hash != block_hash:
            raise InvariantViolation("commit out of order at height %d" % height)
        self._out.append(Commit(block, cert))
        self._count("commits")
        self.committed = height
        self.last_block_hash = block_hash
        self.last_time = block.header.time
        self.history = self.history.append(block_hash)
        self.last_certificate = cert
        self.recent[height] = (block, cert)
        self.recent.pop(height - self.config.pipeline_window - 1, None)
        hashes = [tx.hash for tx in block.txs]
        self.committed_txs.update(dict.fromkeys(hashes, height))  # `_remember_committed_tx`, in bulk
        self._committed_at.setdefault(height, []).extend(hashes)
        pending, pending_bytes, committed = self.pending, self.pending_bytes, self.committed_txs
        for tx_hash in hashes:
            pending.pop(tx_hash, None)
            pending_bytes.pop(tx_hash, None)
        for old in [h for h in self._committed_at if h <= height - self.config.checkpoint_interval]:
            for tx_hash in self._committed_at.pop(old):
                if committed.get(tx_hash) == old:
                    del committed[tx_hash]
        # `prepared` stays until BlockExecuted: the Persist that precedes this
        # Commit must still carry it, because the block reaches the store only
        # after execution. A crash in between restarts us at committed = h−1
        # with a COMMIT signed for h, and our VIEW-CHANGE must then carry the
        # prepared certificate (§4.4). A certificate whose height is not
        # committed+1 is ignored everywhere (view change, restore, replacement).
        # Keep guard records for recent heights too: a crash may lose the last
        # unsynced blocks, and we must not sign those heights differently again.
        # (Drivers must sync the block store at least every K heights.)
        horizon = height - 2 * self.config.checkpoint_interval - self.config.pipeline_window
        for key in [k for k in self.signed if 0 < k[2] <= horizon]:
            del self.signed[key]
        self._dirty = True
        self.failed_views = 0
        self.ahead_senders = {k: h for k, h in self.ahead_senders.items() if h > height}
        self.verified_fetched = {h for h in self.verified_fetched if h > height}
        self._reset_slot()
        self.progress_token = None
        self._arm_progress()
        for old in [h for h in self.future if h <= height]:
            del self.future[old]
        self._replay_buffered(self._in_flight())
        if not self.view_active:
            self._maybe_send_new_view(self.view)  # it may have waited for us to catch up

    def _replay_buffered(self, heights: Iterable[int]) -> None:
        """Feed buffered messages for `heights` (ascending) back in: the slot's
        after a commit, and those of heights in flight that waited for their
        validator set to be known (W > 1)."""
        for h in heights:
            for peer, data in self.future.pop(h, []):
                self._on_message_bytes(peer, data)

    # ------------------------------------------------------------- proposing

    def _maybe_propose(self) -> bool:
        """Primary: propose the next block once batching allows (§4.2, batching).

        Pipelining: the next height is the lowest one in flight we have not
        proposed in this view; it is proposed as soon as the block below it is
        proposed (and accepted by us), not when that one commits.
        """
        view = self.view
        if not self.view_active or self.executed < self.committed:
            return False
        height = self.committed + 1
        while height in self.heights and view in self.heights[height].proposals:
            height += 1
        if height > self.committed + self.config.max_in_flight:
            return False
        if self._primary(view, height) != self.public_key:
            return False
        if height > self.committed + 1 and not self._ready_to_check(view, height):
            return False  # our block below is not accepted yet, or results/sets unknown
        record = self.signed.get(("proposal", view, height))
        if record is not None:  # signed before a restart: never sign another block here
            if not record.data:
                return False  # committed before the crash (bytes stripped): peers or a fetch decide it
            p = Proposal.from_wire(codec.decode(record.data))
            log = self._log(height)
            log.proposals[view] = p
            log.proposal_bytes[view] = record.data
            self._out.append(Broadcast(record.data))
            return True
        if (view, height) in self.mandates:
            return False  # the NEW-VIEW fixed this view's block: never propose another
        # B transactions, or fewer when the next one would push the block past
        # its byte bound (then the batch is full: propose at once)
        room = self.config.block_bytes_limit(self.validators_for(height)) - MAX_HEADER_BYTES
        txs: list[Tx] = []
        full = False
        oversized: list[bytes] = []
        below = self._txs_in_flight_below(view, height)
        committed, sizes = self.committed_txs, self.pending_bytes
        batch_size = min(self.config.max_batch_txs, self.config.max_block_txs)
        for h, tx in self.pending.items():
            if h in committed or h in below:
                continue
            size = sizes.get(h) or len(tx.encode())
            if size > room:
                if not txs:
                    oversized.append(h)  # fits no block of this validator set: never proposable
                    continue
                full = True
                break
            txs.append(tx)
            room -= size
            if len(txs) >= batch_size:
                full = True
                break
        for h in oversized:
            self.pending.pop(h, None)
            self.pending_bytes.pop(h, None)
            self._drop("tx-too-large")
        due = (view, height) in self.batch_due
        if not full and not (due and (txs or self.config.empty_block_interval_ms)):
            if txs and (view, height, "batch") not in self.batch_timers:
                self.batch_timers.add((view, height, "batch"))
                self._schedule("batch", self.config.batch_timeout_ms, view, height, 0)
            elif not txs and self.config.empty_block_interval_ms and (view, height, "empty") not in self.batch_timers:
                self.batch_timers.add((view, height, "empty"))
                self._schedule("batch", self.config.empty_block_interval_ms, view, height, 0)
            return False
        parent = self._parent(view, height)
        if parent is None:
            return False
        app_hash, receipts_root = self.results[self.config.lagged_height(height)]
        batch = tuple(txs)
        header = Header(
            self.chain_id, height, view, max(self.now, parent[1]), parent[0],
            self._tx_root(batch), receipts_root, app_hash,
            self.validators_for(height).hash, self.validators_for(height + 1).hash,
            parent[2].root, height - 1, self.public_key,
        )
        self._send_proposal(view, Block(header, batch))
        return True

    def _send_proposal(self, view: int, block: Block) -> Proposal | None:
        msg = Proposal(self.public_key, view, block.height, block)
        data = self._sign_once(msg, view, block.height, block.hash)
        if data is None:
            return None
        signed = with_signature_of(msg, data)
        self._out.append(Broadcast(data))
        self._count("proposals")
        if block.height in self._in_flight():
            self._note_signed(self.public_key, "proposal", view, block.height, block.hash, data)
            log = self._log(block.height)
            log.proposals.setdefault(view, signed)
            log.proposal_bytes.setdefault(view, data)
        return signed

    # ---------------------------------------------------------- transactions

    def _on_transactions(self, txs: Iterable[Tx]) -> None:
        limit = self.config.block_bytes_limit(self.validators_for(self.committed + 1)) - MAX_HEADER_BYTES
        committed, pending, sizes = self.committed_txs, self.pending, self.pending_bytes
        max_pending = self.config.max_pending_txs
        for tx in txs:
            data = tx.encode()
            tx_hash = tx.hash  # sha256 of `data`, cached on the Tx
            if tx_hash in committed or tx_hash in pending:
                continue
            if len(data) > limit:
                self._drop("tx-too-large")  # no block may carry it
                continue
            if len(pending) >= max_pending:
                self._drop("pending-full")
                continue
            pending[tx_hash] = tx
            sizes[tx_hash] = len(data)
        self._arm_progress()
        self._advance()

    # -------------------------------------------------------------- timeouts

    def _waiting(self) -> bool:
        return bool(self.pending) or any(log.proposals for log in self.heights.values()) or self._behind()

    def _behind(self) -> bool:
        """f+1 distinct validators signed slot messages for heights above ours:
        at least one honest validator committed our slot, so we must fetch it
        even with no transaction or proposal pending (nothing else would)."""
        slot = self.committed + 1
        ahead = sum(1 for h in self.ahead_senders.values() if h >= slot)
        return ahead > self.validators_for(slot).max_faulty

    def _arm_status(self) -> None:
        self.status_token = self._next_token()
        self._schedule("status", self.config.max_timeout_ms, self.view, self.committed + 1, self.status_token)

    def _beacon(self) -> None:
        """Idle: re-send our COMMIT for our last committed height (a status beacon).

        A replica that is behind learns from it that a quorum moved on (f+1
        senders ahead, or beyond its window) and fetches; a peer ahead of us
        answers it with Decided blocks. Costs one small message per peer per
        `max_timeout_ms` while nothing happens, and signs nothing new.
        """
        best = None
        for (kind, view, h), record in self.signed.items():
            if kind == "commit" and h == self.committed and (best is None or view > best.view):
                best = record
        if best is not None:
            self._out.append(Broadcast(best.data))

    def _arm_progress(self) -> None:
        """Start the view-change timer when work is pending (§4.4)."""
        if self.progress_token is not None or not self._waiting():
            return
        self.progress_token = self._next_token()
        delay = self.config.view_timeout_ms(self.failed_views) // 2
        self._schedule("progress", delay, self.view, self.committed + 1, self.progress_token)

    def _arm_view_change_timer(self) -> None:
        self.view_change_token = self._next_token()
        self.commits_at_view_change = self.counters.get("commits", 0)
        delay = self.config.view_timeout_ms(max(0, self.failed_views - 1))
        self._schedule("view-change", delay, self.view, self.committed + 1, self.view_change_token)

    def _on_timeout(self, t: TimeoutFired) -> None:
        if t.kind == "batch":
            if t.view == self.view and t.height in self._in_flight():
                self.batch_due.add((t.view, t.height))
                self._advance()
        elif t.kind == "progress":
            if t.token != self.progress_token:
                return
            self.progress_token = None
            if not self._waiting():
                return
            if self.ahead_height > self.committed and not self.fetch_in_flight:
                self._start_fetch()
            elif not (self.pending or any(log.proposals for log in self.heights.values())):
                pass  # only behind, a fetch in flight: never vote a view out for that
            elif not self.retransmitted and self.view_active:
                self.retransmitted = True
                self._retransmit()
            elif self.view_active and self._is_validator(self.committed + 1):
                self._count("progress_timeouts")
                self._start_view_change(self.view + 1)
                return
            self._arm_progress()
        elif t.kind == "view-change":
            if t.token != self.view_change_token or self.view_active:
                return
            others = {s for w, vcs in self.view_changes.items() if w >= self.view for s in vcs}
            others.discard(self.public_key)
            made_progress = self.counters.get("commits", 0) > self.commits_at_view_change
            if made_progress or len(others) < self.validators_for(self.committed + 1).max_faulty + 1:
                record = self.signed.get(("view-change", self.view, 0))
                if record is not None:
                    self._out.append(Broadcast(record.data))  # retransmit; do not run ahead alone
                self._arm_view_change_timer()
            else:
                self._start_view_change(self.view + 1)
        elif t.kind == "status":
            if t.token != self.status_token:
                return
            if not self._waiting():
                self._beacon()
            self._arm_status()
        elif t.kind == "fetch":
            if t.token == self.token_fetch:
                self.fetch_in_flight = False
                if self.ahead_height > self.committed:
                    self._start_fetch()

    def _retransmit(self) -> None:
        """Resend what we signed for the slot (lost messages), or our last commit."""
        heights = self._in_flight()
        sent = False
        for (kind, view, h), record in sorted(self.signed.items()):
            if h in heights and view == self.view and kind in ("proposal", "prepare", "commit") and record.data:
                self._out.append(Broadcast(record.data))
                sent = True
        if not sent and self.committed in self.recent:
            # peers ahead of us answer an old-height message with a Decided block
            block, cert = self.recent[self.committed]
            for key, signature in cert.signatures:
                if key == self.public_key:
                    vote = CommitVote(key, cert.view, cert.height, cert.block_hash, signature)
                    self._out.append(Broadcast(vote.encode()))

    # ----------------------------------------------------------- view change

    def _start_view_change(self, new_view: int) -> None:
        """§4.4: stop accepting messages of the old view; multicast VIEW-CHANGE."""
        if new_view < self.view or (new_view == self.view and self.view_active is False
                                    and ("view-change", new_view, 0) in self.signed):
            return
        if not self._is_validator(self.committed + 1):
            return  # observers follow NEW-VIEWs and certificates; they never vote
        for key in [k for k in self.signed if k[0] in ("view-change", "new-view") and k[1] < new_view]:
            del self.signed[key]
        for w in [w for w in self.view_changes if w < new_view]:
            del self.view_changes[w]
        self.view = new_view
        self.view_active = False
        self._dirty = True
        self.failed_views += 1
        self._count("view_changes_started")
        self.progress_token = None
        height = self.committed + 1
        if self._is_validator(height):
            # §4.4 P: the highest-view prepared certificate of every height in flight
            prepared = self.prepared_at.get(height)
            above = tuple(self.prepared_at[h] for h in self._in_flight()
                          if h > height and h in self.prepared_at and self._same_set_as_slot(h))
            vc = ViewChange(self.public_key, new_view, self.committed,
                            self.last_certificate if self.committed > 0 else None, prepared,
                            prepared_above=above)
            data = self._sign_once(vc, new_view, 0, sha256(vc.payload()))
            if data is not None:
                self._out.append(Broadcast(data))
                signed = ViewChange.from_wire(codec.decode(data))
                self.view_changes.setdefault(new_view, {})[self.public_key] = (signed, data)
                self.valid_view_changes.add(sha256(data))
        self._arm_view_change_timer()
        self._maybe_send_new_view(new_view)

    def _view_change_problem(self, vc: ViewChange) -> str | None:
        """Check the C and P parts of a VIEW-CHANGE (§4.4)."""
        if vc.certificate is not None and not self._certificate_ok(vc.certificate):
            return "bad-certificate"
        for prepared in vc.certificates():
            p = prepared.proposal
            if p.height > vc.committed_height + self.config.max_in_flight:
                return "prepared-beyond-in-flight-window"
            if not self._set_known(p.height):
                return "prepared-beyond-known-set"
            if self.validators_for(p.height) != self.validators_for(vc.committed_height + 1):
                return "prepared-across-set-boundary"  # never in flight across one
            if p.view >= vc.new_view:
                return "prepared-view-too-high"
            if p.sender != self._primary(p.view, p.height) or not p.verify_signature(self.chain_id, self._verifier):
                return "bad-prepared-proposal"
            signers: set[bytes] = set()
            vset = self.validators_for(p.height)
            for m in prepared.prepares:
                if (m.view, m.height, m.block_hash) != (p.view, p.height, p.block_hash):
                    return "mismatched-prepare"
                if m.sender in signers or m.sender == p.sender or vset.index_of(m.sender) is None:
                    return "bad-prepare-signer"
                if not m.verify_signature(self.chain_id, self._verifier):
                    return "bad-prepare-signature"
                signers.add(m.sender)
            if len(signers) < self.config.quorum(vset) - 1:
                return "prepared-without-quorum"
        return None

    def _validate_view_change(self, vc: ViewChange, data: bytes) -> None:
        digest = sha256(data)
        if digest in self.valid_view_changes:
            return
        # The sender changes views at ITS slot, committed_height + 1: it must be a
        # validator there. Past a set boundary we have not executed we cannot tell.
        if not self._set_known(vc.committed_height + 1):
            raise MessageError("view-change-beyond-known-set")
        self._check_signed(vc, vc.committed_height + 1)
        problem = self._view_change_problem(vc)
        if problem is not None:
            raise MessageError("view-change-" + problem)
        if len(self.valid_view_changes) > 100_000:
            self.valid_view_changes.clear()
        self.valid_view_changes.add(digest)

    def _ahead_by_certificate(self, peer: bytes, cert: CommitCertificate | None) -> None:
        """A certificate above our height that we can verify (its height's set is
        known) proves a quorum moved on, even when the message carrying it is
        beyond a set boundary we cannot judge yet: fetch."""
        if cert is None or cert.height <= max(self.committed, self.ahead_height if self.fetch_in_flight else 0):
            return
        if self._set_known(cert.height) and self._certificate_ok(cert):
            self._note_ahead(peer, cert.height)
            self._start_fetch()

    def _on_view_change(self, peer: bytes, vc: ViewChange, data: bytes) -> None:
        if vc.new_view > self.view + MAX_VIEWS_AHEAD:
            raise MessageError("view-too-far")  # bounds what one sender makes us store
        if not self._set_known(vc.committed_height + 1):
            self._ahead_by_certificate(vc.sender, vc.certificate)
        self._validate_view_change(vc, data)
        # the digest of what the signature covers, not of the raw bytes: fields the
        # decoder ignores (e.g. the tag of an embedded PREPARE) must not turn one
        # honest VIEW-CHANGE into "two" and frame its signer
        if not self._note_signed(vc.sender, "view-change", vc.new_view, 0, sha256(vc.payload()), data):
            raise MessageError("conflicting-view-change")
        if vc.committed_height < self.committed:
            self._reply_decided(vc.sender, vc.committed_height + 1)
        if vc.certificate is not None and vc.committed_height > self.committed:
            self._note_ahead(vc.sender, vc.committed_height)
            if not self.fetch_in_flight:
                self._start_fetch()
        if vc.new_view < self.view or (vc.new_view == self.view and self.view_active):
            # the sender is behind in views: show it how we got here
            if self.last_new_view is not None and (vc.sender, "new-view", self.view) not in self.replied:
                self.replied.add((vc.sender, "new-view", self.view))
                self._out.append(Send(vc.sender, self.last_new_view))
            raise MessageError("old-view")
        # keep only each sender's latest VIEW-CHANGE (it abandoned lower views)
        for w, vcs in list(self.view_changes.items()):
            if vc.sender in vcs and w != vc.new_view:
                if w > vc.new_view:
                    raise MessageError("superseded-view-change")
                del vcs[vc.sender]
                if not vcs:
                    del self.view_changes[w]
        self.view_changes.setdefault(vc.new_view, {})[vc.sender] = (vc, data)
        # §4.5.2: f+1 view changes for higher views ⇒ join the smallest of them
        higher = {}
        vset = self.validators_for(self.committed + 1)
        for w, vcs in self.view_changes.items():
            if w > self.view:
                for sender in vcs:
                    if sender != self.public_key and vset.index_of(sender) is not None:
                        higher[sender] = min(higher.get(sender, w), w)
        if len(higher) >= vset.max_faulty + 1:
            target = sorted(higher.values())[0]
            self._start_view_change(target)
        self._maybe_send_new_view(vc.new_view)

    def _maybe_send_new_view(self, view: int) -> None:
        """§4.4: the primary of v+1 sends NEW-VIEW once it holds a quorum of VIEW-CHANGEs."""
        if view != self.view or self.view_active or view in self.new_view_sent:
            return
        height = self.committed + 1
        if self._primary(view, height) != self.public_key:
            return
        vcs = self.view_changes.get(view, {})
        if self.public_key not in vcs or any(vc.committed_height >= height for vc, _ in vcs.values()):
            return  # we are behind a certified height: catch up first (retried on commit)
        # Only validators of our slot count (a validator removed at the boundary
        # below our slot may still send VIEW-CHANGEs for its old slot).
        vset = self.validators_for(height)
        quorum = self.config.quorum(vset)
        members = [(s, vc) for s, (vc, _) in sorted(vcs.items())
                   if s != self.public_key and vset.index_of(s) is not None]
        if len(members) + 1 < quorum:
            return
        # the freshest VIEW-CHANGEs first, so the target is our slot when possible
        members.sort(key=lambda item: -item[1].committed_height)
        chosen = ([vcs[self.public_key][0]] + [vc for _, vc in members])[:quorum]
        target_height, mandated = _new_view_decision(chosen)
        if self.validators_for(target_height) != vset:
            return  # stale VIEW-CHANGEs from before a set boundary: the next view has fresh ones
        reproposals: list[Proposal] = []
        for chosen_block in mandated:  # re-propose height by height (the walk)
            signed_p = self._send_proposal_for_new_view(view, chosen_block.block)
            if signed_p is None:
                return
            reproposals.append(signed_p)
        nv = NewView(self.public_key, view, tuple(chosen), reproposals[0] if reproposals else None,
                     reproposals=tuple(reproposals[1:]))
        data = self._sign_once(nv, view, 0, sha256(nv.payload()))
        if data is None:
            return
        self.new_view_sent.add(view)
        self._out.append(Broadcast(data))
        self._install_new_view(NewView.from_wire(codec.decode(data)), data, target_height, mandated)

    def _send_proposal_for_new_view(self, view: int, block: Block) -> Proposal | None:
        msg = Proposal(self.public_key, view, block.height, block)
        data = self._sign_once(msg, view, block.height, block.hash)
        if data is None:
            return None
        return with_signature_of(msg, data)

    def _on_new_view(self, nv: NewView, data: bytes) -> None:
        # §4.4: a replica accepts NEW-VIEW only after re-checking V and O itself
        if nv.view < self.view or (nv.view == self.view and self.view_active):
            raise MessageError("old-view")
        if not nv.view_changes:
            raise MessageError("new-view-without-quorum")
        # Everything is judged against the set in force at the NEW-VIEW's target
        # height (max certified height + 1), where the quorums must intersect.
        target_height, mandated = _new_view_decision(list(nv.view_changes))
        top = max([c.proposal.height for vc in nv.view_changes for c in vc.certificates()] + [target_height])
        if not self._set_known(max(target_height, min(top, target_height - 1 + self.config.max_in_flight))):
            # past a set boundary we have not executed: catch up (the certificate
            # of the highest VIEW-CHANGE proves how far) and take the view later
            best = max(nv.view_changes, key=lambda vc: vc.committed_height)
            self._ahead_by_certificate(best.sender, best.certificate)
            raise MessageError("new-view-beyond-known-set")
        vset = self.validators_for(target_height)
        if nv.sender != vset.primary(nv.view).public_key:
            raise MessageError("new-view-not-from-primary")
        self._check_signed(nv, target_height)
        signers: set[bytes] = set()
        for vc in nv.view_changes:
            if vc.new_view != nv.view or vc.sender in signers:
                raise MessageError("new-view-bad-view-changes")
            if vset.index_of(vc.sender) is None:
                raise MessageError("new-view-view-change-from-non-validator")
            self._validate_view_change(vc, vc.encode())
            signers.add(vc.sender)
        if len(signers) < self.config.quorum(vset):
            raise MessageError("new-view-without-quorum")
        # §4.4 O, pipelined: exactly the walk's blocks, height by height from
        # the target, each re-proposed by the new primary in the new view
        p = nv.proposal
        sent = ([] if p is None else [p]) + list(nv.reproposals)
        if mandated:
            if [q.block_hash for q in sent] != [m.block_hash for m in mandated]:
                raise MessageError("new-view-wrong-reproposal")
        elif nv.reproposals:
            raise MessageError("new-view-wrong-reproposal")
        for offset, q in enumerate(sent):
            if q.sender != nv.sender or q.view != nv.view or q.height != target_height + offset:
                raise MessageError("new-view-bad-proposal")
            if not q.verify_signature(self.chain_id, self._verifier):
                raise MessageError("bad-signature")
        self._install_new_view(nv, data, target_height, mandated)

    def _install_new_view(self, nv: NewView, data: bytes, target_height: int,
                          mandated: tuple[Proposal, ...]) -> None:
        self.view = nv.view
        self.view_active = True
        self._dirty = True
        self.last_new_view = data
        self.new_view_floor = (nv.view, target_height)
        self.view_change_token = None
        self._count("new_views")
        for w in [w for w in self.view_changes if w <= nv.view]:
            del self.view_changes[w]
        # VIEW-CHANGE/NEW-VIEW bookkeeping (height 0) for views below ours is
        # done with: stable checkpoints never collect it, so drop it here
        self.first_seen = {k: v for k, v in self.first_seen.items() if k[3] != 0 or k[2] >= nv.view}
        self.evidence_keys = {k for k in self.evidence_keys if k[3] != 0 or k[2] >= nv.view}
        for m in mandated:
            self.mandates[(nv.view, m.height)] = m.block_hash
        # Proposals of this view received (and checked) before its NEW-VIEW are
        # judged again under the NEW-VIEW's floor and mandates, mandated or not:
        # one checked earlier against the old floor may be a stale block below
        # the target (a faulty new primary sends it first), and blocks accepted
        # on top of a proposal the NEW-VIEW replaces must not keep their votes.
        for log in self.heights.values():
            log.checked = {k: v for k, v in log.checked.items() if k[0] != nv.view}
        self.accepted = {k: v for k, v in self.accepted.items() if k[0] != nv.view}
        for p in ([] if nv.proposal is None else [nv.proposal]) + list(nv.reproposals):
            if p.height in self._in_flight():
                # The NEW-VIEW's proposal IS the view's pre-prepare (§4.4): it
                # replaces whatever the primary sent for this view before its
                # NEW-VIEW (nobody could prepare that: the view was not active).
                # A different earlier block from the same primary is evidence.
                data_p = p.encode()
                self._note_signed(p.sender, "proposal", p.view, p.height, p.block_hash, data_p)
                log = self._log(p.height)
                if p.view in log.proposals and log.proposals[p.view].block_hash != p.block_hash:
                    log.checked.pop((p.view, log.proposals[p.view].block_hash), None)
                    self.accepted.pop((p.view, p.height), None)
                log.proposals[p.view] = p
                log.proposal_bytes[p.view] = data_p
            elif p.height > self.committed:
                self.future.setdefault(p.height, []).append((nv.sender, p.encode()))
        max_committed = target_height - 1
        if max_committed > self.committed:
            best = max(nv.view_changes, key=lambda vc: vc.committed_height)
            self._note_ahead(best.sender, max_committed)
            self._start_fetch()
        self.progress_token = None
        self._arm_progress()
        self._advance()

    # ------------------------------------------------------------ checkpoints

    def _on_block_executed(self, e: BlockExecuted) -> None:
        if e.height <= self.executed:
            if e.height in self.results and self.results[e.height] != (e.app_hash, e.receipts_root):
                raise InvariantViolation("block %d executed twice with different results" % e.height)
            return
        if e.height != self.executed + 1 or e.height > self.committed:
            raise InputError("BlockExecuted(%d) but executed=%d committed=%d"
                             % (e.height, self.executed, self.committed))
        self.executed = e.height
        self.results[e.height] = (e.app_hash, e.receipts_root)
        self._strip_proposal_bytes(e.height)
        for h in [h for h in self.prepared_at if h <= e.height]:
            # the block is in the store now: a restart resumes above it. Not
            # marked dirty: a stale certificate on disk is ignored on restore.
            del self.prepared_at[h]
        self.results.pop(e.height - self.config.pipeline_window - self.config.results_lag - 1, None)
        if e.validator_update is not None:
            # takes effect after the first multiple of K that is ≥ e + L
            k = self.config.checkpoint_interval
            boundary = -(-(e.height + self.config.results_lag) // k) * k
            self._schedule_set(boundary + 1, e.validator_update)
        if e.height % self.config.checkpoint_interval == 0:
            digest = checkpoint_digest(e.height, self.last_block_hash if e.height == self.committed
                                       else self.recent[e.height][0].hash, e.app_hash)
            self.own_checkpoints[e.height] = digest
            if self._is_validator(e.height):
                msg = Checkpoint(self.public_key, e.height, digest)
                data = self._sign_once(msg, 0, e.height, digest)
                if data is not None:
                    self._out.append(Broadcast(data))
                    self.checkpoints.setdefault(e.height, {})[self.public_key] = digest
            self._check_stable(e.height)
        if self.config.max_in_flight > 1:
            self._replay_buffered(h for h in self._in_flight() if h > self.committed + 1)
        self._advance()

    def _on_checkpoint(self, c: Checkpoint, data: bytes) -> None:
        if c.height <= self.stable_checkpoint:
            raise MessageError("old-checkpoint")
        if c.height > self.committed + 4 * self.config.checkpoint_interval + self.config.pipeline_window:
            raise MessageError("beyond-window")
        if c.height % self.config.checkpoint_interval:
            raise MessageError("not-a-checkpoint-height")
        self._check_signed(c, min(c.height, self.executed + 1))
        if not self._note_signed(c.sender, "checkpoint", 0, c.height, c.digest, data):
            raise MessageError("conflicting-checkpoint")
        self.checkpoints.setdefault(c.height, {})[c.sender] = c.digest
        if c.height > self.committed:
            self._note_ahead(c.sender, c.height)
        self._check_stable(c.height)

    def _check_stable(self, height: int) -> None:
        """§4.3: a checkpoint with a quorum of matching digests becomes stable."""
        votes = self.checkpoints.get(height, {})
        counts: dict[bytes, int] = {}
        for digest in votes.values():
            counts[digest] = counts.get(digest, 0) + 1
        for digest, count in counts.items():
            if count < self._quorum(height):
                continue
            own = self.own_checkpoints.get(height)
            if own is None:
                if height > self.committed and not self.fetch_in_flight:
                    self._start_fetch()
                return
            if own != digest:
                raise InvariantViolation("stable checkpoint %d has digest %s, ours is %s"
                                         % (height, digest.hex()[:16], own.hex()[:16]))
            if height > self.stable_checkpoint:
                self._make_stable(height)
            return

    def _make_stable(self, height: int) -> None:
        """Garbage-collect everything at or below a stable checkpoint."""
        self.stable_checkpoint = height
        self._count("stable_checkpoints")
        for h in [h for h in self.checkpoints if h < height]:
            del self.checkpoints[h]
        for h in [h for h in self.own_checkpoints if h < height]:
            del self.own_checkpoints[h]
        self.first_seen = {k: v for k, v in self.first_seen.items() if k[3] > height or k[3] == 0}
        self.evidence_keys = {k for k in self.evidence_keys if k[3] > height or k[3] == 0}
        self.late_seen = {k for k in self.late_seen if k[3] > height}

    # -------------------------------------------------------------- catch-up

    def _start_fetch(self) -> None:
        if self.fetch_in_flight or self.ahead_peer is None or self.ahead_height <= self.committed:
            return
        self.fetch_in_flight = True
        self._count("fetches")
        # one past what we know is committed: the peer may well have it ("possibly fewer")
        top = min(self.ahead_height + 1, self.committed + MAX_FETCHED)
        self._out.append(FetchBlocks(self.ahead_peer, self.committed + 1, top))
        self.token_fetch = self._next_token()
        self._schedule("fetch", self.config.fetch_timeout_ms, self.view, self.committed + 1, self.token_fetch)

    def _on_decided(self, peer: bytes, d: Decided) -> None:
        height = d.block.height
        if height <= self.committed:
            raise MessageError("old-height")
        if height > self.committed + MAX_FETCHED:
            raise MessageError("beyond-window")
        if height in self.verified_fetched:
            raise MessageError("duplicate")  # never replace a verified entry
        # Decided is unsigned: only its certificate (a quorum of COMMIT
        # signatures, checked against the latest validator set we know) makes it
        # evidence. Unverified, it could steer our catch-up at will.
        cert = d.certificate
        if cert.block_hash != d.block.hash or not self._certificate_ok(cert):
            raise MessageError("decided-bad-certificate")
        if self._tx_root(d.block.txs) != d.block.header.tx_root:
            raise MessageError("decided-bad-tx-root")
        self.fetched[height] = (d.block, cert, peer)
        self.verified_fetched.add(height)
        if height > self.committed + 1:
            self._note_ahead(peer, height)
            self._start_fetch()
        self._advance()

    def _on_blocks_fetched(self, f: BlocksFetched) -> None:
        self.fetch_in_flight = False
        before = self.committed
        for block, cert in f.blocks:
            if self.committed < block.height <= self.committed + MAX_FETCHED and cert.height == block.height:
                if block.height not in self.verified_fetched:  # never replace a verified entry
                    self.fetched[block.height] = (block, cert, f.peer)
            else:
                self._drop("fetched-out-of-range")
        self._advance()
        if self.committed == before:
            # Nothing usable (empty, timed out or bad): that peer is not ahead
            # after all. Forget it rather than ask it again at once in a loop;
            # fresh evidence of a peer ahead (or the fetch timer) fetches again.
            self._count("empty_fetches")
            if f.peer == self.ahead_peer:
                self.ahead_peer = None
                self.ahead_height = self.committed
            return
        if self.ahead_height > self.committed and (self.committed + 1) not in self.fetched:
            self._start_fetch()


def block_bytes(block: Block) -> int:
    """`len(block.encode())`, up to a few bytes, without re-encoding a large block
    in one piece: what `ConsensusConfig.block_bytes_limit` bounds."""
    return 6 + len(codec.encode(block.header.to_wire())) + sum(len(tx.encode()) for tx in block.txs)


def _new_view_decision(view_changes: list[ViewChange]) -> tuple[int, tuple[Proposal, ...]]:
    """§4.4 (computing O), pipelined: the height after the highest certified
    one (the target), and the blocks the new primary must re-propose.

    The walk: from the target upward, the highest-view prepared block of each
    height, while it chains (prev_hash) to the block chosen below it (at the
    target: to the certified block of the highest VIEW-CHANGE); it stops at the
    first gap or break, and heights above get fresh proposals. Safe because a
    committed block at h+1 implies its parent committed (an honest COMMIT needs
    it), so by PBFT's induction the highest-view prepared block at every height
    from the target to h+1 is the committed one, each chaining to the one
    below, and the walk reaches h+1. With W = 1 it is PBFT's single O entry.
    """
    best_vc = max(view_changes, key=lambda vc: vc.committed_height)
    target = best_vc.committed_height + 1
    best: dict[int, Proposal] = {}
    for vc in view_changes:
        for prepared in vc.certificates():
            p = prepared.proposal
            if p.height >= target and (p.height not in best or p.view > best[p.height].view):
                best[p.height] = p
    parent = ZERO_HASH if best_vc.certificate is None else best_vc.certificate.block_hash
    chosen: list[Proposal] = []
    height = target
    while height in best and best[height].block.header.prev_hash == parent:
        chosen.append(best[height])
        parent = best[height].block_hash
        height += 1
    return target, tuple(chosen)
