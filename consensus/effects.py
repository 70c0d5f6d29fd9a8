"""What `Replica.handle` returns: a list of effects the driver performs IN ORDER.

Rules for drivers:
- `Persist` must be durable (fsync'd) before any later effect of the same list
  is performed: it carries the double-sign guard state that the following
  messages depend on.
- `Commit` comes in height order, exactly once per height (for the lifetime of
  the replica object). The driver stores block + certificate, executes the
  block, and feeds back `BlockExecuted`.
- `ScheduleTimeout` is fire-and-forget: deliver `timeout` after `delay_ms`.
- `FetchBlocks`: ask `peer` for committed blocks `from_height..to_height`
  (inclusive) with certificates; answer with `BlocksFetched` (possibly fewer).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.types import Block, CommitCertificate

from consensus.inputs import TimeoutFired


@dataclass(frozen=True)
class Broadcast:
    """Send `data` to every other validator (and observers, if any)."""

    data: bytes


@dataclass(frozen=True)
class Send:
    """Send `data` to one peer."""

    to_public_key: bytes
    data: bytes


@dataclass(frozen=True)
class Persist:
    """Durably replace the replica's saved state with `state` (fsync first).

    Load it back with `consensus.persist.PersistedState.decode(state)` and pass
    it as `Replica(..., restored=...)` after a restart.
    """

    state: bytes


@dataclass(frozen=True)
class Commit:
    """Block `block.height` is final, proven by `certificate`."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True)
class ScheduleTimeout:
    """Deliver `timeout` back to `handle` after `delay_ms` of driver time."""

    delay_ms: int
    timeout: TimeoutFired


@dataclass(frozen=True)
class Evidence:
    """Validator `public_key` signed two conflicting messages.

    `kind` is the message kind ("proposal", "prepare", "commit", "checkpoint",
    "view-change"); `first`/`second` are the two signed wire messages, enough
    for anyone to re-verify the misbehaviour.
    """

    public_key: bytes
    kind: str
    view: int
    height: int
    first: bytes
    second: bytes


@dataclass(frozen=True)
class FetchBlocks:
    """Ask `peer` for certified blocks `from_height..to_height` (catch-up)."""

    peer: bytes
    from_height: int
    to_height: int


Effect = Broadcast | Send | Persist | Commit | ScheduleTimeout | Evidence | FetchBlocks
