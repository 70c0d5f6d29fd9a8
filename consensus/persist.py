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
from functools import cached_property
from typing import Any

from ledger import codec
from ledger.errors import DecodeError, EncodeError, LedgerError
from ledger.hashing import ZERO_HASH
from ledger.types import CommitCertificate, ValidatorSet

from consensus.errors import ConsensusError
from consensus.history import History
from consensus.messages import PreparedCertificate, array_header

STATE_VERSION = 4
MAX_STATE_BYTES = 256 * 1024 * 1024  # local file, not a message: several whole blocks fit


@dataclass(frozen=True)
class SignedRecord:
    """One message this replica signed: (kind, view, height) → content digest + bytes."""

    kind: str
    view: int
    height: int
    digest: bytes
    data: bytes

    @cached_property
    def encoded(self) -> bytes:
        """Its canonical encoding inside `PersistedState` (computed once: a
        record never changes, and the state is re-encoded on every flush)."""
        return codec.encode([self.kind, self.view, self.height, self.digest, self.data], max_bytes=MAX_STATE_BYTES)


@dataclass(frozen=True)
class PersistedState:
    """The replica's durable consensus state (not the chain: see `ChainTip`).

    - `view`, `view_active`: current view, and False while changing to it.
    - `signed`: every message signed for heights above the last committed one
      (and the latest VIEW-CHANGE), the double-sign guard. A PROPOSAL record
      at an executed (durable) height has empty `data`: only its digest is
      needed there (`Replica._strip_proposal_bytes`).
    - `prepared`, `prepared_above`: the highest-view prepared certificate of
      every height in flight above the last commit, lowest first in
      `prepared`, the higher ones ascending in `prepared_above` (pipelining,
      W > 1). PBFT requires them to survive crashes: they go into VIEW-CHANGE.
    - `new_view_floor`: `(view, target)` of the NEW-VIEW that made `view`
      active: in that view no proposal below the target is accepted (PBFT
      §4.4: sequence numbers up to max-s are filled only by the O set; below
      the target every height is already certified). Version 4 only; older
      states load with (0, 0), as they behaved.
    - `mandates`: `(view, height, block_hash)` fixed by an accepted NEW-VIEW
      (§4.4, the O set): in that view only that block may be prepared at that
      height. It must survive a restart, or a replica would accept any block
      the (possibly faulty) primary sends in the view it re-entered.

    Encoding (version 3) is O(records), not O(transactions): the prepared
    certificate is stored as the signed proposal's bytes and its PREPAREs'
    bytes (`PreparedCertificate.encoded_parts`), each one msgpack `bin`,
    instead of re-walking the whole block through the canonical encoder on
    every flush (it ran on every Persist: ~7 % of a loaded node's CPU).

    Version 4 stores a list of such certificates (one per height in
    flight); version 3 stored at most one, and still loads as it was.
    Older states still load: version 2 (the prepared certificate as nested
    wire lists) as it was; version 1 (no mandates): one saved in an active
    view above 0 comes back as *changing* to that view, so the replica
    re-learns the NEW-VIEW (peers re-send it) before it votes in that view
    again. Anything else is refused with `ConsensusError`.
    """

    view: int = 0
    view_active: bool = True
    signed: tuple[SignedRecord, ...] = ()
    prepared: PreparedCertificate | None = None
    mandates: tuple[tuple[int, int, bytes], ...] = ()
    prepared_above: tuple[PreparedCertificate, ...] = ()
    new_view_floor: tuple[int, int] = (0, 0)

    def certificates(self) -> tuple[PreparedCertificate, ...]:
        return ((self.prepared,) if self.prepared is not None else ()) + self.prepared_above

    def encode(self) -> bytes:
        """`codec.encode([STATE_VERSION, view, view_active, [[kind, view,
        height, digest, data], …], [[proposal bytes, [prepare bytes, …]], …],
        [[view, height, digest], …], [view, target]])`, byte for byte.

        Incremental: a list encodes as its array header followed by each
        item's own encoding, so the records' cached encodings are joined
        (`SignedRecord.encoded`) instead of re-walking every record — and the
        whole blocks a primary's proposal records hold — on every flush.
        Not a network message: the guard records may hold several whole
        blocks, so the codec's per-message size limit does not apply here.
        """
        def enc(value: Any) -> bytes:
            return codec.encode(value, max_bytes=MAX_STATE_BYTES)

        certificates = self.certificates()
        data = b"".join([
            array_header(7), enc(STATE_VERSION), enc(self.view), enc(self.view_active),
            array_header(len(self.signed)), *[r.encoded for r in self.signed],
            array_header(len(certificates)), *[enc(list(c.encoded_parts())) for c in certificates],
            enc([[v, h, d] for v, h, d in self.mandates]), enc(list(self.new_view_floor)),
        ])
        if len(data) > MAX_STATE_BYTES:
            raise EncodeError("encoding is %d bytes, limit %d" % (len(data), MAX_STATE_BYTES))
        return data

    @classmethod
    def decode(cls, data: bytes) -> "PersistedState":
        """Raise ConsensusError if `data` is not a state this version wrote."""
        try:
            fields = codec.decode(data, max_bytes=MAX_STATE_BYTES)
            version = fields[0] if isinstance(fields, list) and fields else None
            prepared_from: Any = PreparedCertificate.from_wire  # versions 1 and 2: nested wire lists
            above: tuple[PreparedCertificate, ...] = ()
            floor: tuple[int, int] = (0, 0)
            if version == 1 and len(fields) == 5:
                _, view, active, signed, prepared = fields
                mandates: list = []
                if isinstance(view, int) and view > 0:
                    active = False  # a mandate may have been lost: re-learn the NEW-VIEW
            elif version in (2, 3) and len(fields) == 6:
                _, view, active, signed, prepared, mandates = fields
                if version == 3:
                    prepared_from = _from_parts
                if isinstance(view, int) and view > 0:
                    active = False  # no new-view floor was saved: re-learn the NEW-VIEW
            elif version == STATE_VERSION and len(fields) == 7:
                _, view, active, signed, all_prepared, mandates, floor_wire = fields
                if (not isinstance(floor_wire, list) or len(floor_wire) != 2
                        or not all(isinstance(x, int) and not isinstance(x, bool) for x in floor_wire)):
                    raise DecodeError("new-view floor must be [view, height]")
                floor = (floor_wire[0], floor_wire[1])
                if not isinstance(all_prepared, list):
                    raise DecodeError("prepared certificates must be a list")
                certs = [_from_parts(c) for c in all_prepared]
                heights = [c.proposal.height for c in certs]
                if heights != sorted(set(heights)):
                    raise DecodeError("prepared certificates must ascend by height")
                prepared, above = (certs[0], tuple(certs[1:])) if certs else (None, ())
                prepared_from = lambda c: c  # noqa: E731 - decoded above
            else:
                raise DecodeError("unknown persisted state version or shape")
            if not isinstance(view, int) or not isinstance(active, bool):
                raise DecodeError("unknown persisted state version or shape")
            records = tuple(SignedRecord(k, v, h, d, b) for k, v, h, d, b in signed)
            fixed = []
            for v, h, d in mandates:
                if not isinstance(v, int) or not isinstance(h, int) or not isinstance(d, bytes):
                    raise DecodeError("bad mandate")
                fixed.append((v, h, d))
            return cls(view, active, records,
                       None if prepared is None else prepared_from(prepared),
                       tuple(fixed), above, floor)
        except (LedgerError, TypeError, ValueError) as exc:
            raise ConsensusError("corrupt persisted consensus state: %s" % exc) from exc


def _from_parts(parts: Any) -> PreparedCertificate:
    if not isinstance(parts, list) or len(parts) != 2:
        raise DecodeError("prepared certificate must be [proposal bytes, prepares]")
    return PreparedCertificate.from_parts(*parts)


@dataclass(frozen=True)
class ChainTip:
    """The last committed and executed block, as the driver's store knows it.

    `app_hash`/`receipts_root` are the results of executing block `height`
    (they go into header `height + 1`). `validator_schedule` lists
    `(first_height, ValidatorSet)` changes already known (empty = genesis set
    forever); the driver gets it from its executed governance state.
    `recent_tx_hashes` lets the replica refuse re-proposed transactions
    (the contracts' nonce check remains the durable replay guard).
    `recent_txs` is the same with each block's height: `(height, tx hashes)`
    for the last K (checkpoint_interval) blocks, so a restarted replica applies
    exactly the K-block duplicate window a running one does. Hashes given only
    in `recent_tx_hashes` count as committed at `height` (conservative).
    `lagged_results`: `(height, app_hash, receipts_root)` of executed blocks
    below `height`; with a results lag L > 1 the replica needs the last L − 1
    of them (header h carries the results of h − L).
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
    recent_txs: tuple[tuple[int, tuple[bytes, ...]], ...] = ()
    lagged_results: tuple[tuple[int, bytes, bytes], ...] = ()


