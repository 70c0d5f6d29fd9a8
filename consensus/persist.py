"""What a replica saves durably: the double-sign guard and its view.

`PersistedState` is written (as `Persist(state)` effects, fsync'd before any
later effect) whenever the replica signs something new, enters a view, or
becomes prepared. After a restart, `Replica(..., restored=PersistedState.decode(bytes))`
guarantees the replica never signs a message that conflicts with one it signed
before: it re-sends the stored bytes instead, or refuses.

`ChainTip` is what the driver knows from its block store: the last committed
(and executed) block, so the replica can build and check the next header.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from ledger import codec
from ledger.errors import DecodeError, LedgerError
from ledger.hashing import ZERO_HASH
from ledger.types import CommitCertificate, ValidatorSet

from consensus.errors import ConsensusError
from consensus.history import History
from consensus.messages import PreparedCertificate

STATE_VERSION = 1


@dataclass(frozen=True)
class SignedRecord:
    """One message this replica signed: (kind, view, height) → content digest + bytes."""

    kind: str
    view: int
    height: int
    digest: bytes
    data: bytes


@dataclass(frozen=True)
class PersistedState:
    """The replica's durable consensus state (not the chain: see `ChainTip`).

    - `view`, `view_active`: current view, and False while changing to it.
    - `signed`: every message signed for heights above the last committed one
      (and the latest VIEW-CHANGE), the double-sign guard.
    - `prepared`: the highest-view prepared certificate above the last commit
      (PBFT requires it to survive crashes: it goes into VIEW-CHANGE).
    """

    view: int = 0
    view_active: bool = True
    signed: tuple[SignedRecord, ...] = ()
    prepared: PreparedCertificate | None = None

    def encode(self) -> bytes:
        return codec.encode([
            STATE_VERSION, self.view, self.view_active,
            [[r.kind, r.view, r.height, r.digest, r.data] for r in self.signed],
            None if self.prepared is None else self.prepared.to_wire(),
        ])

    @classmethod
    def decode(cls, data: bytes) -> "PersistedState":
        """Raise ConsensusError if `data` is not a state this version wrote."""
        try:
            version, view, active, signed, prepared = codec.decode(data)
            if version != STATE_VERSION or not isinstance(view, int) or not isinstance(active, bool):
                raise DecodeError("unknown persisted state version or shape")
            records = tuple(SignedRecord(k, v, h, d, b) for k, v, h, d, b in signed)
            return cls(view, active, records,
                       None if prepared is None else PreparedCertificate.from_wire(prepared))
        except (LedgerError, TypeError, ValueError) as exc:
            raise ConsensusError("corrupt persisted consensus state: %s" % exc) from exc


@dataclass(frozen=True)
class ChainTip:
    """The last committed and executed block, as the driver's store knows it.

    `app_hash`/`receipts_root` are the results of executing block `height`
    (they go into header `height + 1`). `validator_schedule` lists
    `(first_height, ValidatorSet)` changes already known (empty = genesis set
    forever); the driver gets it from its executed governance state.
    `recent_tx_hashes` lets the replica refuse re-proposed transactions
    (the contracts' nonce check remains the durable replay guard).
    """

    height: int = 0
    block_hash: bytes = ZERO_HASH
    time_ms: int = 0
    history: History = field(default_factory=History)
    app_hash: bytes = ZERO_HASH
    receipts_root: bytes = ZERO_HASH
    certificate: CommitCertificate | None = None
    validator_schedule: tuple[tuple[int, ValidatorSet], ...] = ()
    recent_tx_hashes: frozenset[bytes] = frozenset()


