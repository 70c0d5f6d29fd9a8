"""What a driver feeds into `Replica.handle(input, now_ms)`.

Every input is a frozen value; the replica never reads clocks, sockets or
disks itself. `now_ms` (the driver's clock) is passed next to the input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.types import Block, CommitCertificate, Tx, ValidatorSet


@dataclass(frozen=True)
class MessageReceived:
    """Raw bytes from an authenticated peer connection.

    `sender_public_key` is the transport's peer identity; the replica decodes
    the bytes and verifies the signature inside (the signer need not be the
    connection peer: messages may be relayed).
    """

    sender_public_key: bytes
    data: bytes


@dataclass(frozen=True)
class TimeoutFired:
    """A timeout the replica scheduled earlier with `ScheduleTimeout`.

    The driver hands back exactly the value it was given; stale timeouts are
    recognised by `token` and ignored, so drivers never need to cancel timers.
    `kind` is one of "batch", "progress", "view-change", "fetch", "status"
    (the idle beacon, every `max_timeout_ms`).
    """

    kind: str
    view: int
    height: int
    token: int


@dataclass(frozen=True)
class TransactionsVerified:
    """Transactions the mempool has decoded and signature-checked once.

    The replica remembers them (bounded) for proposing and to notice a primary
    that censors them (progress timeout ⇒ view change).
    """

    txs: tuple[Tx, ...]


@dataclass(frozen=True)
class BlockExecuted:
    """The driver executed committed block `height`.

    `app_hash` / `receipts_root` go into header `height + L` (`results_lag`).
    `validator_update`, when set, is a new validator set produced by a
    governance transaction in this block; it takes effect after the next
    checkpoint boundary (see `consensus.replica`).
    """

    height: int
    app_hash: bytes
    receipts_root: bytes
    validator_update: ValidatorSet | None = None


@dataclass(frozen=True)
class BlocksFetched:
    """Blocks with certificates a peer returned for a `FetchBlocks` effect.

    Consecutive, ascending heights. The replica verifies every certificate,
    hash chain and tx root before committing any of them.
    """

    peer: bytes
    blocks: tuple[tuple[Block, CommitCertificate], ...]


Input = MessageReceived | TimeoutFired | TransactionsVerified | BlockExecuted | BlocksFetched
