"""Static configuration of one replica (identical on every validator)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.hashing import ZERO_HASH
from ledger.types import ValidatorSet

from consensus.errors import ConsensusError


@dataclass(frozen=True)
class ConsensusConfig:
    """Consensus parameters fixed at genesis.

    - `validators`: the genesis validator set (n ≥ 4).
    - `genesis_app_hash` / `genesis_receipts_root`: what header 1 carries.
    - `genesis_time_ms`: lower bound for header 1's `time`.
    - `max_batch_txs` (B) / `batch_timeout_ms` (T): a primary proposes as soon
      as it holds B transactions, or T ms after it could propose with fewer.
    - `empty_block_interval_ms`: propose an empty block after this long with
      nothing to do (0 = never create empty blocks).
    - `pipeline_window` (W): heights above our committed height whose messages
      are buffered (see `consensus.replica` for why only one height is voted
      at a time); a valid message further ahead triggers catch-up.
    - `checkpoint_interval` (K): checkpoint (and validator-set boundary) every
      K heights.
    - `base_timeout_ms` / `max_timeout_ms`: view-change timeout, doubling per
      consecutive view without progress, capped.
    - `max_pending_txs`: bound on transactions a replica remembers for
      proposing and for censorship detection.
    - `quorum_override`: TEST ONLY. Replaces the quorum (e.g. with f+1) so the
      simulator can prove it detects safety violations. Never set it on a node.
    """

    chain_id: str
    validators: ValidatorSet
    genesis_app_hash: bytes = ZERO_HASH
    genesis_receipts_root: bytes = ZERO_HASH
    genesis_time_ms: int = 0
    max_batch_txs: int = 100
    batch_timeout_ms: int = 50
    empty_block_interval_ms: int = 0
    pipeline_window: int = 8
    checkpoint_interval: int = 16
    base_timeout_ms: int = 1_000
    max_timeout_ms: int = 60_000
    max_pending_txs: int = 20_000
    fetch_timeout_ms: int = 1_000
    quorum_override: int | None = None

    def __post_init__(self) -> None:
        if self.validators.size < 4:
            raise ConsensusError("PBFT needs n >= 4 validators, got %d" % self.validators.size)
        for name in ("max_batch_txs", "pipeline_window", "checkpoint_interval",
                     "base_timeout_ms", "max_timeout_ms", "max_pending_txs", "fetch_timeout_ms"):
            if getattr(self, name) < 1:
                raise ConsensusError("%s must be >= 1" % name)
        if self.batch_timeout_ms < 0 or self.empty_block_interval_ms < 0:
            raise ConsensusError("timeouts must be >= 0")
        if self.max_timeout_ms < self.base_timeout_ms:
            raise ConsensusError("max_timeout_ms must be >= base_timeout_ms")

    def quorum(self, validators: ValidatorSet) -> int:
        """Votes needed in `validators` (2f+1, or n−f when n ≠ 3f+1)."""
        if self.quorum_override is not None:
            return self.quorum_override
        return validators.quorum

    def view_timeout_ms(self, attempt: int) -> int:
        """Timeout for the `attempt`-th consecutive view without progress (0-based)."""
        return min(self.max_timeout_ms, self.base_timeout_ms << min(attempt, 40))
