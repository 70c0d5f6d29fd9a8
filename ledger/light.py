"""The light client a regulator runs: check any answer against headers that a
quorum of validators signed, without trusting the node that served it.

What it verifies (reference/PROOFS.md §2.6, Tendermint's light client and Diem
epoch-change proofs):

1. Root of trust: genesis (chain id, first validator set, genesis time) or a
   waypoint `(height, header hash)` with the header and its validator set,
   obtained out of band.
2. A new header: chain id; height above the trusted head; time not before the
   trusted time, not more than `max_clock_drift_ms` ahead of `now_ms`, and the
   trusted head not older than `trusting_period_ms`; `validators_hash` names
   the set in force; its proposer is a member; the history it commits to
   extends the trusted history (RFC 6962 consistency proof) and contains the
   trusted block hash at its height (inclusion proof); a quorum of the set in
   force signed it (`CommitCertificate.verify`).
3. Validator-set changes: a header whose `next_validators_hash` differs from
   its `validators_hash` hands over to the set it names. The new set is
   accepted only when that header is certified by the outgoing set and the
   offered set hashes to `next_validators_hash` (Diem `EpochChangeProof`).
   A header that skips over a hand-over is refused: follow the epoch-change
   headers first (`verify_epoch_changes`).
4. Witness cross-check: two different headers for one height, each certified
   by a quorum of the same set, prove that at least f+1 validators signed
   both. Both certificates are kept as `ForkEvidence` and the client halts:
   every later call raises `ForkDetected` (it stops serving data).
5. Data proofs against a header this client verified: a transaction in
   `tx_root`, a receipt of block h in `receipts_root` of header h+L, a state
   value or its absence in `app_hash` of header h (the state after block h-L),
   an older header in `history_root`. L is the chain's results lag (genesis
   `consensus_params.results_lag`, 1 unless the chain pipelines): part of the
   root of trust, given to `from_genesis` / `from_waypoint`; with it,
   `verify_state(..., version=v)` / `verify_receipt(..., block_height=h)`
   also check that the header is the one carrying those results.

Rules this module keeps:
- Pure: the time enters as `now_ms`; no clock, I/O, threads or randomness.
- Total: every entry point accepts the typed record or its canonical bytes;
  anything malformed or false raises a `LightClientError` (a `LedgerError`),
  never another exception and never through an assert.
- An invalid call changes nothing, except that proof of a fork halts the client.
- Hashes and proofs are checked before signatures (cheap work first, so a
  flood of bogus headers costs hashes, not ed25519 verifications).

Limitation to know: headers do not commit to the number of transactions or
receipts, so the `size` of a tx or receipt inclusion proof is the server's
word. Membership of the leaf is sound (leaf and node hashes are domain
separated), but its index is only as good as that size; `verify_receipt` can
pin a receipt to its transaction hash instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NoReturn, TypeVar

from ledger import codec, merkle
from ledger import state as state_tree
from ledger.errors import DecodeError, LedgerError, ProofError
from ledger.hashing import HASH_BYTES
from ledger.types import MAX_TX_BYTES, CommitCertificate, Header, Tx, ValidatorSet

DEFAULT_TRUSTING_PERIOD_MS = 14 * 24 * 3600 * 1000  # two weeks: PROOFS.md §2.1 weak subjectivity
DEFAULT_MAX_CLOCK_DRIFT_MS = 10_000
MAX_STORED_HEADERS = 1024  # verified headers kept for data proofs and cross-checks
MAX_UPDATES = 1024  # headers in one epoch-change proof
MAX_TIME_MS = 2**64 - 1
MAX_CHAIN_ID_LENGTH = 64
MAX_RESULTS_LAG = 64  # sanity bound; node genesis allows at most 8 (node.config.MAX_RESULTS_LAG)


def results_header_height(version: int, results_lag: int) -> int:
    """The header carrying the results of block `version`: version + L (≥ 1)."""
    return version + results_lag


def results_version(header_height: int, results_lag: int) -> int:
    """The block whose results header `header_height` carries (0: genesis)."""
    return max(0, header_height - results_lag)


# ------------------------------------------------------------------ errors


class LightClientError(LedgerError):
    """Root of everything the light client raises."""


class MalformedInput(LightClientError, DecodeError):
    """An argument is not bytes or a record of the expected shape."""


class UntrustedHeader(LightClientError):
    """A header cannot be trusted: wrong chain, height or time, or its
    certificate is not a quorum of the set in force."""


class UnknownValidatorSet(UntrustedHeader):
    """A header names a validator set the client does not hold, or an offered
    set does not hash to what the header names."""


class Expired(LightClientError):
    """The trusted head is older than the trusting period: get a fresh waypoint."""


class ClockDrift(LightClientError):
    """A header's time is further ahead of the local clock than the drift bound."""


class InconsistentHistory(LightClientError):
    """A header's history does not extend the trusted history."""


class InvalidProof(LightClientError, ProofError):
    """A transaction, receipt, state or history proof does not match its header."""


class ForkDetected(LightClientError):
    """Two certified headers exist for one height; `evidence` holds both.

    Once raised, the client is halted and raises it from every call.
    """

    def __init__(self, message: str, evidence: "ForkEvidence") -> None:
        super().__init__(message)
        self.evidence = evidence


# ----------------------------------------------------------------- records


@dataclass(frozen=True)
class TrustOptions:
    """How long a trusted head stays usable and how far ahead a header may be.

    The trusting period must stay below the time in which a retired
    organisation's keys could leak (PROOFS.md §2.6 step 4).
    """

    trusting_period_ms: int = DEFAULT_TRUSTING_PERIOD_MS
    max_clock_drift_ms: int = DEFAULT_MAX_CLOCK_DRIFT_MS

    def __post_init__(self) -> None:
        _check_int(self.trusting_period_ms, "trusting period", 1)
        _check_int(self.max_clock_drift_ms, "max clock drift", 0)


@dataclass(frozen=True)
class Waypoint:
    """A header hash at a height, handed to the client out of band (Diem)."""

    height: int
    header_hash: bytes

    def __post_init__(self) -> None:
        _check_int(self.height, "waypoint height", 1)
        _check_hash(self.header_hash, "waypoint header hash")

    def __str__(self) -> str:
        return "%d:%s" % (self.height, self.header_hash.hex())

    @classmethod
    def parse(cls, text: Any) -> "Waypoint":
        """Read `"<height>:<hex hash>"`; raises MalformedInput."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise MalformedInput("a waypoint reads <height>:<hex header hash>")
        height, digest = text.split(":")
        if not (height.isascii() and height.isdigit()) or len(height) > 20:
            raise MalformedInput("waypoint height must be decimal digits")
        try:
            header_hash = bytes.fromhex(digest)
        except ValueError as exc:
            raise MalformedInput("waypoint hash must be hex") from exc
        return cls(int(height), header_hash)


@dataclass(frozen=True)
class TrustedState:
    """What the client trusts now.

    `height` 0 means genesis (no header yet). `validators` is the set in force
    for height+1. `history_size`/`history_root` are the trusted head's history
    (blocks 1..height-1); `header_hash` is the trusted head's own block hash.
    """

    chain_id: str
    height: int
    header_hash: bytes | None
    time_ms: int
    validators: ValidatorSet
    history_size: int
    history_root: bytes


@dataclass(frozen=True)
class VerifiedHeader:
    """A header the client verified; `certificate`/`validators` are None when
    it was proven by history inclusion or configured as a waypoint."""

    header: Header
    certificate: CommitCertificate | None
    validators: ValidatorSet | None


@dataclass(frozen=True)
class HistoryProof:
    """The proofs that a new header's history extends the trusted one.

    `consistency`: RFC 6962 proof from the trusted head's (history_size,
    history_root) to the new header's; empty when the trusted history is empty.
    `inclusion`: the trusted head's block hash at index height-1 in the new
    header's history; empty when starting from genesis.
    """

    consistency: tuple[bytes, ...] = ()
    inclusion: tuple[bytes, ...] = ()

    def to_wire(self) -> list[Any]:
        return [list(self.consistency), list(self.inclusion)]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, wire: Any) -> "HistoryProof":
        """Raises InvalidProof unless `wire` is two lists of 32-byte hashes."""
        if not isinstance(wire, (list, tuple)) or len(wire) != 2:
            raise InvalidProof("a history proof is [consistency, inclusion]")
        return cls(_as_hashes(wire[0], "consistency proof"), _as_hashes(wire[1], "inclusion proof"))


@dataclass(frozen=True)
class HeaderUpdate:
    """One step of an epoch-change proof: a header, its certificate, its
    history proof and, when it hands over, the next validator set."""

    header: Header
    certificate: CommitCertificate
    history: HistoryProof = HistoryProof()
    next_validators: ValidatorSet | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.header.to_wire(), self.certificate.to_wire(), self.history.to_wire(),
            None if self.next_validators is None else self.next_validators.to_wire(),
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, wire: Any) -> "HeaderUpdate":
        """Raises MalformedInput or InvalidProof on a malformed update."""
        if not isinstance(wire, (list, tuple)) or len(wire) != 4:
            raise MalformedInput("a header update is [header, certificate, history, next validators]")
        header, certificate, history, next_validators = wire
        return cls(
            _from_wire(Header, header, "header"),
            _from_wire(CommitCertificate, certificate, "certificate"),
            HistoryProof.from_wire(history),
            None if next_validators is None else _from_wire(ValidatorSet, next_validators, "validator set"),
        )


@dataclass(frozen=True)
class ForkEvidence:
    """Two certified headers for one height: proof that the signers common to
    both certificates (at least f+1 when both are quorums of one set) equivocated."""

    chain_id: str
    height: int
    trusted_header: Header
    trusted_certificate: CommitCertificate | None
    conflicting_header: Header
    conflicting_certificate: CommitCertificate

    @property
    def double_signers(self) -> tuple[bytes, ...]:
        """Validators whose signatures are in both certificates, sorted."""
        if self.trusted_certificate is None:
            return ()
        first = {key for key, _ in self.trusted_certificate.signatures}
        return tuple(sorted(key for key, _ in self.conflicting_certificate.signatures if key in first))

    def to_wire(self) -> list[Any]:
        return [
            self.chain_id, self.height, self.trusted_header.to_wire(),
            None if self.trusted_certificate is None else self.trusted_certificate.to_wire(),
            self.conflicting_header.to_wire(), self.conflicting_certificate.to_wire(),
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())


# ----------------------------------------------------------------- client


class LightClient:
    """A light client over one chain. Handlers verify and raise; they never
    mutate on invalid input (a proven fork halts the client)."""

    def __init__(self, trusted: TrustedState, options: TrustOptions | None = None, results_lag: int = 1) -> None:
        options = TrustOptions() if options is None else options
        if not isinstance(trusted, TrustedState) or not isinstance(options, TrustOptions):
            raise MalformedInput("a light client needs a TrustedState and TrustOptions")
        self._results_lag = _check_int(results_lag, "results lag", 1, MAX_RESULTS_LAG)
        self._trusted = trusted
        self._options = options
        self._stored: dict[int, VerifiedHeader] = {}
        self._evidence: ForkEvidence | None = None

    # -------------------------------------------------------- construction

    @classmethod
    def from_genesis(
        cls, chain_id: Any, validators: Any, genesis_time_ms: Any, options: TrustOptions | None = None,
        results_lag: int = 1,
    ) -> "LightClient":
        """Trust `validators` as the set of height 1 on `chain_id`, whose headers
        carry the results of the block `results_lag` (L) below them.

        Raises MalformedInput on a malformed argument.
        """
        chain = _as_chain_id(chain_id)
        vset = _as_validator_set(validators)
        time_ms = _check_int(genesis_time_ms, "genesis time", 0, MAX_TIME_MS)
        trusted = TrustedState(chain, 0, None, time_ms, vset, 0, merkle.EMPTY_ROOT)
        return cls(trusted, options, results_lag)

    @classmethod
    def from_waypoint(
        cls,
        chain_id: Any,
        waypoint: Any,
        header: Any,
        validators: Any,
        next_validators: Any = None,
        options: TrustOptions | None = None,
        results_lag: int = 1,
    ) -> "LightClient":
        """Trust the header a waypoint names, with the set that signed it.

        `next_validators` is needed only when the header hands over to a new set.
        `results_lag` (L): the chain's genesis constant; a header does not
        carry it, so it must come from the same out-of-band source as the waypoint.
        Raises MalformedInput, UntrustedHeader or UnknownValidatorSet.
        """
        chain = _as_chain_id(chain_id)
        if isinstance(waypoint, str):
            waypoint = Waypoint.parse(waypoint)
        if not isinstance(waypoint, Waypoint):
            raise MalformedInput("waypoint must be a Waypoint or '<height>:<hex>'")
        head = _as_header(header)
        vset = _as_validator_set(validators)
        offered = None if next_validators is None else _as_validator_set(next_validators)
        if head.chain_id != chain:
            raise UntrustedHeader("waypoint header is for chain %r" % head.chain_id)
        if head.height != waypoint.height or head.hash != waypoint.header_hash:
            raise UntrustedHeader("header does not match the waypoint %s" % waypoint)
        if vset.hash != head.validators_hash:
            raise UnknownValidatorSet("validator set does not hash to the waypoint header's validators_hash")
        following = _next_set(head, vset, offered)
        trusted = TrustedState(
            chain, head.height, head.hash, head.time, following, head.history_size, head.history_root
        )
        client = cls(trusted, options, results_lag)
        client._remember(VerifiedHeader(head, None, vset))
        return client

    # ---------------------------------------------------------- inspection

    @property
    def results_lag(self) -> int:
        """L: header h carries the results (app_hash, receipts_root) of block h − L."""
        return self._results_lag

    def results_header_height(self, version: int) -> int:
        """The height of the header carrying the results of block `version`
        (its state and receipts): version + L. Version 0 (genesis state) is
        carried by headers 1 … L; this returns L."""
        return results_header_height(version, self._results_lag)

    @property
    def trusted(self) -> TrustedState:
        return self._trusted

    @property
    def options(self) -> TrustOptions:
        return self._options

    @property
    def halted(self) -> bool:
        return self._evidence is not None

    @property
    def evidence(self) -> ForkEvidence | None:
        return self._evidence

    def verified_header(self, height: Any) -> VerifiedHeader | None:
        """The header verified at `height`, if still kept."""
        self._check_running()
        return self._stored.get(_check_int(height, "height", 1))

    # ------------------------------------------------------------- headers

    def verify_header(
        self,
        header: Any,
        certificate: Any,
        now_ms: Any,
        history: Any = None,
        next_validators: Any = None,
    ) -> Header:
        """Verify `header` against the trusted head and make it the new head.

        `history` is a HistoryProof (or its bytes; None = empty proofs).
        A header at a height already verified is accepted again if identical;
        a different one certified by the same set halts the client.

        Raises MalformedInput, UntrustedHeader, UnknownValidatorSet, Expired,
        ClockDrift, InconsistentHistory, InvalidProof or ForkDetected.
        """
        self._check_running()
        head = _as_header(header)
        cert = _as_certificate(certificate)
        now = _check_int(now_ms, "now", 0, MAX_TIME_MS)
        proof = _as_history_proof(history)
        offered = None if next_validators is None else _as_validator_set(next_validators)
        trusted = self._trusted
        if head.chain_id != trusted.chain_id:
            raise UntrustedHeader("header is for chain %r, not %r" % (head.chain_id, trusted.chain_id))
        if head.height <= trusted.height:
            return self._recheck_known(head, cert)
        self._check_time(head, now)
        if head.validators_hash != trusted.validators.hash:
            raise UnknownValidatorSet(
                "header %d names another validator set; verify the epoch-change headers first" % head.height
            )
        if trusted.validators.index_of(head.proposer) is None:
            raise UntrustedHeader("proposer is not a validator")
        following = _next_set(head, trusted.validators, offered)
        _check_history(trusted, head, proof)
        _check_certificate(trusted.chain_id, head, cert, trusted.validators)
        # every check passed: only now change state
        self._trusted = TrustedState(
            trusted.chain_id, head.height, head.hash, head.time, following, head.history_size, head.history_root
        )
        self._remember(VerifiedHeader(head, cert, trusted.validators))
        return head

    def verify_epoch_changes(self, updates: Any, now_ms: Any) -> Header:
        """Apply an epoch-change proof: headers in increasing height, each
        verified with the set the previous one handed over to.

        All or nothing: on failure the trusted state is as before (unless a
        fork was proven). Returns the last header.
        Raises what `verify_header` raises; MalformedInput for an empty list.
        """
        self._check_running()
        steps = _as_updates(updates)
        saved_trusted, saved_stored = self._trusted, dict(self._stored)
        last: Header | None = None
        try:
            for step in steps:
                last = self.verify_header(step.header, step.certificate, now_ms, step.history, step.next_validators)
        except ForkDetected:
            raise
        except LightClientError:
            self._trusted, self._stored = saved_trusted, saved_stored
            raise
        if last is None:  # unreachable: _as_updates refuses an empty list
            raise MalformedInput("an epoch-change proof needs at least one header")
        return last

    def verify_past_header(self, header: Any, proof: Any, anchor: Any = None) -> Header:
        """Verify an older header by its inclusion in a verified header's history.

        `anchor` defaults to the trusted head. Raises MalformedInput,
        UntrustedHeader, InvalidProof, InconsistentHistory or ForkDetected.
        """
        self._check_running()
        old = _as_header(header)
        path = _as_hashes(proof, "history inclusion proof")
        base = self._head_header() if anchor is None else self._require_verified(_as_header(anchor))
        if old.chain_id != base.chain_id:
            raise UntrustedHeader("header is for chain %r" % old.chain_id)
        if old.height >= base.height:
            raise UntrustedHeader("a past header must be below its anchor's height %d" % base.height)
        try:
            merkle.verify_inclusion_hash(old.hash, old.height - 1, base.history_size, path, base.history_root)
        except LedgerError as exc:
            raise InvalidProof("header %d is not in the history of header %d: %s" % (old.height, base.height, exc)) from exc
        known = self._stored.get(old.height)
        if known is not None:
            if known.header.hash != old.hash:
                raise InconsistentHistory("history proves a different header at height %d" % old.height)
            return known.header
        self._remember(VerifiedHeader(old, None, None))
        return old

    # --------------------------------------------------------- fork check

    def cross_check(self, primary_header: Any, witness_header: Any, witness_certificate: Any) -> None:
        """Compare a verified header with a witness's header for the same height.

        Equal hashes: nothing happens. Different and the witness's header is
        certified by the set that certified ours: keep both as evidence, halt,
        raise ForkDetected. Different but not so certified: the witness is
        faulty; raise UntrustedHeader (the client keeps running).
        """
        self._check_running()
        primary = self._require_verified(_as_header(primary_header))
        other = _as_header(witness_header)
        cert = _as_certificate(witness_certificate)
        if other.height != primary.height:
            raise UntrustedHeader("witness header is for height %d, not %d" % (other.height, primary.height))
        if other.hash == primary.hash:
            return
        self._judge_conflict(self._stored[primary.height], other, cert)

    # --------------------------------------------------------- data proofs

    def verify_tx_inclusion(self, header: Any, tx_bytes: Any, index: Any, size: Any, proof: Any) -> Tx:
        """Check that `tx_bytes` is transaction `index` of `size` in the
        block of a verified `header`; return the decoded transaction.

        Raises MalformedInput, UntrustedHeader, InvalidProof or ForkDetected.
        """
        self._check_running()
        head = self._require_verified(_as_header(header))
        data = _as_bytes(tx_bytes, "transaction", MAX_TX_BYTES)
        _check_inclusion(data, index, size, proof, head.tx_root, "transaction")
        try:
            return Tx.decode(data)
        except LedgerError as exc:
            raise MalformedInput("the proven leaf is not a transaction: %s" % exc) from exc

    def verify_receipt(
        self, header_of_next_block: Any, receipt_bytes: Any, index: Any, size: Any, proof: Any, tx_hash: Any = None,
        block_height: Any = None,
    ) -> None:
        """Check a receipt of block h against `receipts_root` of verified header h+L.

        With `tx_hash`, also check that the receipt is for that transaction
        (its first field), which pins it regardless of the claimed index.
        With `block_height` (h), also check that the header is h + L.
        Raises MalformedInput, UntrustedHeader, InvalidProof or ForkDetected.
        """
        self._check_running()
        head = self._require_verified(_as_header(header_of_next_block))
        if block_height is not None:
            block = _check_int(block_height, "block height", 1, MAX_TIME_MS)
            if head.height != block + self._results_lag:
                raise InvalidProof("header %d does not carry the receipts of block %d (results lag %d: header %d)"
                                   % (head.height, block, self._results_lag, block + self._results_lag))
        data = _as_bytes(receipt_bytes, "receipt", codec.MAX_MESSAGE_BYTES)
        expected = None if tx_hash is None else _check_hash(tx_hash, "tx hash")
        _check_inclusion(data, index, size, proof, head.receipts_root, "receipt")
        if expected is not None:
            try:
                wire = codec.decode(data)
            except LedgerError as exc:
                raise InvalidProof("the proven receipt does not decode: %s" % exc) from exc
            if not isinstance(wire, list) or not wire or wire[0] != expected:
                raise InvalidProof("the proven receipt is for another transaction")

    def verify_state(self, header: Any, key: Any, value: Any, proof: Any, version: Any = None) -> None:
        """Check that `key` holds `value` (None: is absent) in the state after
        block h-L, which verified header h commits to in `app_hash`.

        With `version` (v), also check that header h carries the state after
        block v: h = v + L (v = 0, genesis state: 1 ≤ h ≤ L).
        `proof` is a `ledger.state.StateProof`, its wire map or its bytes.
        Raises MalformedInput, UntrustedHeader, InvalidProof or ForkDetected.
        """
        self._check_running()
        head = self._require_verified(_as_header(header))
        if version is not None:
            v = _check_int(version, "state version", 0, MAX_TIME_MS)
            if results_version(head.height, self._results_lag) != v:
                raise InvalidProof("header %d does not commit the state after block %d (results lag %d: header %d)"
                                   % (head.height, v, self._results_lag, results_header_height(v, self._results_lag)))
        if not isinstance(key, bytes):
            raise MalformedInput("a state key is bytes")
        if value is not None and not isinstance(value, bytes):
            raise MalformedInput("a state value is bytes or None")
        state_proof = _as_state_proof(proof)
        try:
            state_tree.verify(head.app_hash, key, value, state_proof)
        except ProofError as exc:
            raise InvalidProof("state proof: %s" % exc) from exc

    # ------------------------------------------------------------ internals

    def _check_running(self) -> None:
        if self._evidence is not None:
            raise ForkDetected("halted: a fork was detected at height %d" % self._evidence.height, self._evidence)

    def _check_time(self, head: Header, now: int) -> None:
        trusted, options = self._trusted, self._options
        if now - trusted.time_ms > options.trusting_period_ms:
            raise Expired("trusted head (time %d) is older than the trusting period at %d" % (trusted.time_ms, now))
        if head.time > now + options.max_clock_drift_ms:
            raise ClockDrift("header time %d is more than %d ms ahead of %d" % (head.time, options.max_clock_drift_ms, now))
        if head.time < trusted.time_ms:
            raise UntrustedHeader("header time %d is before the trusted time %d" % (head.time, trusted.time_ms))
        if head.time - trusted.time_ms > options.trusting_period_ms:
            raise Expired("header is more than the trusting period after the trusted head")

    def _recheck_known(self, head: Header, cert: CommitCertificate) -> Header:
        """A header at or below the trusted height: the same one again is fine,
        a conflicting one is judged as a witness's would be."""
        known = self._stored.get(head.height)
        if known is None:
            raise UntrustedHeader("height %d is not above the trusted height %d" % (head.height, self._trusted.height))
        if known.header.hash == head.hash:
            return known.header
        self._judge_conflict(known, head, cert)

    def _judge_conflict(self, known: VerifiedHeader, other: Header, cert: CommitCertificate) -> NoReturn:
        """`other` differs from `known` at the same height. Always raises:
        ForkDetected (and halts) if the set that certified `known` also
        certified `other`, UntrustedHeader otherwise."""
        if known.validators is None:
            raise UntrustedHeader("no validator set is known for height %d to judge a conflict" % other.height)
        if other.chain_id != self._trusted.chain_id:
            raise UntrustedHeader("conflicting header is for chain %r" % other.chain_id)
        _check_certificate(self._trusted.chain_id, other, cert, known.validators)
        # A quorum of the set that certified ours also certified another header.
        self._evidence = ForkEvidence(
            self._trusted.chain_id, other.height, known.header, known.certificate, other, cert
        )
        raise ForkDetected(
            "two certified headers at height %d (%s, %s)" % (other.height, known.header.hash.hex()[:16], other.hash.hex()[:16]),
            self._evidence,
        )

    def _head_header(self) -> Header:
        known = self._stored.get(self._trusted.height)
        if known is None:
            raise UntrustedHeader("no verified header yet")
        return known.header

    def _require_verified(self, head: Header) -> Header:
        known = self._stored.get(head.height)
        if known is None or known.header.hash != head.hash:
            raise UntrustedHeader("header %d was not verified by this client (or is no longer kept)" % head.height)
        return known.header

    def _remember(self, verified: VerifiedHeader) -> None:
        self._stored[verified.header.height] = verified
        while len(self._stored) > MAX_STORED_HEADERS:
            oldest = next(height for height in self._stored if height != self._trusted.height)
            del self._stored[oldest]


# ------------------------------------------------------- pure check helpers


def _check_certificate(chain_id: str, head: Header, cert: CommitCertificate, validators: ValidatorSet) -> None:
    """Raises UntrustedHeader unless a quorum of `validators` certified `head`."""
    try:
        cert.verify(chain_id, validators, head.hash, head.height)
    except LedgerError as exc:
        raise UntrustedHeader("certificate for header %d: %s" % (head.height, exc)) from exc


def _next_set(head: Header, current: ValidatorSet, offered: ValidatorSet | None) -> ValidatorSet:
    """The set in force after `head`: `current`, or the offered set on a hand-over.

    Raises UnknownValidatorSet when a hand-over lacks its set or the set does
    not hash to `next_validators_hash`.
    """
    if head.next_validators_hash == head.validators_hash:
        if offered is not None and offered.hash != head.next_validators_hash:
            raise UnknownValidatorSet("offered next set is not the header's next set")
        return current
    if offered is None:
        raise UnknownValidatorSet("header %d hands over to a new validator set; supply it" % head.height)
    if offered.hash != head.next_validators_hash:
        raise UnknownValidatorSet("offered set does not hash to next_validators_hash of header %d" % head.height)
    return offered


def _check_history(trusted: TrustedState, head: Header, proof: HistoryProof) -> None:
    """The new header's history extends the trusted one and holds the trusted block.

    Raises InconsistentHistory.
    """
    new_size, new_root = head.history_size, head.history_root
    if new_size == 0 and new_root != merkle.EMPTY_ROOT:
        raise InconsistentHistory("header 1 must commit to the empty history")
    if trusted.header_hash is not None and head.height == trusted.height + 1 and head.prev_hash != trusted.header_hash:
        raise InconsistentHistory("prev_hash is not the trusted block")
    try:
        if trusted.history_size == 0:
            if proof.consistency:
                raise InconsistentHistory("a consistency proof from the empty history must be empty")
        else:
            merkle.verify_consistency(trusted.history_size, new_size, proof.consistency, trusted.history_root, new_root)
        if trusted.header_hash is None:
            if proof.inclusion:
                raise InconsistentHistory("there is no trusted block to include yet")
        else:
            # block k is leaf k-1; block hashes are the leaf hashes (consensus/history.py)
            merkle.verify_inclusion_hash(trusted.header_hash, trusted.height - 1, new_size, proof.inclusion, new_root)
    except ProofError as exc:
        raise InconsistentHistory("header %d does not extend the trusted history: %s" % (head.height, exc)) from exc


def _check_inclusion(data: bytes, index: Any, size: Any, proof: Any, root: bytes, what: str) -> None:
    path = _as_hashes(proof, "%s proof" % what)
    try:
        merkle.verify_inclusion(data, index, size, path, root)
    except LedgerError as exc:
        raise InvalidProof("%s inclusion: %s" % (what, exc)) from exc


# ------------------------------------------------------------- coercion

_R = TypeVar("_R")


def _check_int(value: Any, what: str, low: int = 0, high: int = MAX_TIME_MS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedInput("%s must be an integer in [%d, %d]" % (what, low, high))
    return value


def _check_hash(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise MalformedInput("%s must be a %d-byte hash" % (what, HASH_BYTES))
    return value


def _as_chain_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CHAIN_ID_LENGTH:
        raise MalformedInput("chain id must be a string of 1..%d characters" % MAX_CHAIN_ID_LENGTH)
    return value


def _as_bytes(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedInput("%s must be bytes" % what)
    if len(value) > limit:
        raise MalformedInput("%s is %d bytes, limit %d" % (what, len(value), limit))
    return value


def _decode(value: Any, what: str) -> Any:
    try:
        return codec.decode(value)
    except LedgerError as exc:
        raise MalformedInput("%s: %s" % (what, exc)) from exc


def _from_wire(kind: Callable[..., Any], wire: Any, what: str) -> Any:
    try:
        return kind.from_wire(wire)  # type: ignore[attr-defined]
    except LedgerError as exc:
        raise MalformedInput("%s: %s" % (what, exc)) from exc


def _coerce(value: Any, kind: type[_R], what: str) -> _R:
    """Bytes are decoded; a record is re-validated through its canonical wire
    form (a record built by hand may hold anything)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_wire(kind, _decode(bytes(value), what), what)  # type: ignore[no-any-return]
    if isinstance(value, kind):
        try:
            wire = codec.decode(codec.encode(value.to_wire()))  # type: ignore[attr-defined]
        except (LedgerError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedInput("%s holds malformed fields" % what) from exc
        return _from_wire(kind, wire, what)  # type: ignore[no-any-return]
    raise MalformedInput("%s must be a %s or its bytes" % (what, kind.__name__))


def _as_header(value: Any) -> Header:
    return _coerce(value, Header, "header")


def _as_certificate(value: Any) -> CommitCertificate:
    return _coerce(value, CommitCertificate, "certificate")


def _as_validator_set(value: Any) -> ValidatorSet:
    return _coerce(value, ValidatorSet, "validator set")


def _as_hashes(value: Any, what: str) -> tuple[bytes, ...]:
    """A proof: a list of 32-byte hashes, or its canonical bytes. Raises InvalidProof."""
    if isinstance(value, bytes):
        try:
            value = codec.decode(value)
        except LedgerError as exc:
            raise InvalidProof("%s: %s" % (what, exc)) from exc
    if not isinstance(value, (list, tuple)) or len(value) > merkle.MAX_PROOF_LENGTH:
        raise InvalidProof("%s must be a list of at most %d hashes" % (what, merkle.MAX_PROOF_LENGTH))
    for item in value:
        if not isinstance(item, bytes) or len(item) != HASH_BYTES:
            raise InvalidProof("%s holds an element that is not a %d-byte hash" % (what, HASH_BYTES))
    return tuple(value)


def _as_history_proof(value: Any) -> HistoryProof:
    if value is None:
        return HistoryProof()
    if isinstance(value, HistoryProof):
        return HistoryProof(_as_hashes(value.consistency, "consistency proof"), _as_hashes(value.inclusion, "inclusion proof"))
    if isinstance(value, bytes):
        try:
            value = codec.decode(value)
        except LedgerError as exc:
            raise InvalidProof("history proof: %s" % exc) from exc
    return HistoryProof.from_wire(value)


def _as_state_proof(value: Any) -> state_tree.StateProof:
    if isinstance(value, state_tree.StateProof):
        return value  # state_tree.verify re-checks every field
    if isinstance(value, bytes):
        try:
            value = codec.decode(value)
        except LedgerError as exc:
            raise InvalidProof("state proof: %s" % exc) from exc
    # checked here because StateProof.from_wire sorts the keys, which fails on mixed key types
    if not isinstance(value, dict) or set(value) != {"leaf", "siblings"}:
        raise InvalidProof("a state proof is a map with exactly leaf and siblings")
    try:
        return state_tree.StateProof.from_wire(value)
    except LedgerError as exc:
        raise InvalidProof("state proof: %s" % exc) from exc


def _as_updates(value: Any) -> list[HeaderUpdate]:
    if isinstance(value, bytes):
        value = _decode(value, "epoch-change proof")
    if not isinstance(value, (list, tuple)) or not 0 < len(value) <= MAX_UPDATES:
        raise MalformedInput("an epoch-change proof is a list of 1..%d header updates" % MAX_UPDATES)
    steps = []
    for item in value:
        if isinstance(item, HeaderUpdate):
            steps.append(item)
        else:
            steps.append(HeaderUpdate.from_wire(item))
    return steps


__all__ = [
    "ClockDrift", "Expired", "ForkDetected", "ForkEvidence", "HeaderUpdate", "HistoryProof",
    "InconsistentHistory", "InvalidProof", "LightClient", "LightClientError", "MalformedInput",
    "TrustOptions", "TrustedState", "UnknownValidatorSet", "UntrustedHeader", "VerifiedHeader",
    "Waypoint", "DEFAULT_MAX_CLOCK_DRIFT_MS", "DEFAULT_TRUSTING_PERIOD_MS",
]
