"""Static configuration of one replica (identical on every validator)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec
from ledger.hashing import ZERO_HASH
from ledger.light import DEFAULT_MAX_CLOCK_DRIFT_MS
from ledger.types import MAX_TXS_PER_BLOCK, ValidatorSet

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
    - `results_lag` (L): header h carries the results (`app_hash`,
      `receipts_root`) of executing block h − L (genesis results for h ≤ L).
      L = 1 is the original chain format, byte for byte. A genesis constant:
      every validator, light client and proof route must agree on it.
    - `max_in_flight` (W ≤ L): heights voted on at once, c+1 … c+W above our
      committed height c (true pipelining, see `consensus.replica`). W ≤ L is
      forced: checking a proposal for c+W needs our own results of c+W−L.
    - `pipeline_window`: a BUFFER, not the in-flight window: heights above our
      committed height whose messages are kept for later rather than dropped
      (a replica slightly behind keeps them); a valid message further ahead
      triggers catch-up. Must be ≥ `max_in_flight`.
    - `checkpoint_interval` (K): checkpoint (and validator-set boundary) every
      K heights.
    - `base_timeout_ms` / `max_timeout_ms`: view-change timeout, doubling per
      consecutive view without progress, capped.
    - `max_pending_txs`: bound on transactions a replica remembers for
      proposing and for censorship detection.
    - `max_clock_drift_ms`: a proposal whose header time is more than this
      ahead of our clock is refused (light clients refuse such headers too:
      `ledger.light.TrustOptions.max_clock_drift_ms`, the same default). Only
      fresh proposals are judged: certified blocks are final whatever their time.
    - `max_block_bytes`: bound on a block's size (`block_bytes`), enforced
      when the primary builds a batch and when a proposal is checked. The
      effective bound is `block_bytes_limit(validators)`: also small enough
      that a NEW-VIEW (quorum VIEW-CHANGEs, each possibly carrying a prepared
      maximal block, plus the re-proposal: quorum+1 copies) stays under the
      codec's 4 MiB message limit. With n = 4 that is about 1 MiB; with n = 7
      about 680 KiB; it shrinks as 1/(quorum+1), so large validator sets get
      small blocks (a NEW-VIEW carrying headers instead of blocks would lift it).
    - `max_block_txs`: the network-wide bound on transactions in a block
      (genesis `consensus_params.max_block_txs`). Others' proposals are judged
      by it, never by our local `max_batch_txs` (which only sizes our own
      batches): validity must not depend on a validator's local config.
    - Committed-duplicate window: a proposal may not repeat a transaction
      committed in the last K (`checkpoint_interval`) blocks, before and after
      a restart alike; older replays are refused by the contracts' nonces.
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
    results_lag: int = 1
    max_in_flight: int = 1
    checkpoint_interval: int = 16
    base_timeout_ms: int = 1_000
    max_timeout_ms: int = 60_000
    max_pending_txs: int = 20_000
    fetch_timeout_ms: int = 1_000
    max_clock_drift_ms: int = DEFAULT_MAX_CLOCK_DRIFT_MS
    max_block_bytes: int = 2 * 1024 * 1024
    max_block_txs: int = MAX_TXS_PER_BLOCK
    quorum_override: int | None = None

    def __post_init__(self) -> None:
        if self.validators.size < 4:
            raise ConsensusError("PBFT needs n >= 4 validators, got %d" % self.validators.size)
        for name in ("max_batch_txs", "pipeline_window", "checkpoint_interval",
                     "base_timeout_ms", "max_timeout_ms", "max_pending_txs", "fetch_timeout_ms",
                     "max_block_bytes", "max_block_txs", "results_lag", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ConsensusError("%s must be >= 1" % name)
        if self.batch_timeout_ms < 0 or self.empty_block_interval_ms < 0 or self.max_clock_drift_ms < 0:
            raise ConsensusError("timeouts must be >= 0")
        if self.max_in_flight > self.results_lag:
            raise ConsensusError(
                "max_in_flight (W=%d) must be <= results_lag (L=%d): a proposal for committed+W is "
                "checked against our results of committed+W-L, which must already be executed"
                % (self.max_in_flight, self.results_lag))
        if self.pipeline_window < self.max_in_flight:
            raise ConsensusError("pipeline_window (message buffer, %d) must be >= max_in_flight (W=%d)"
                                 % (self.pipeline_window, self.max_in_flight))
        if self.max_timeout_ms < self.base_timeout_ms:
            raise ConsensusError("max_timeout_ms must be >= base_timeout_ms")

    def quorum(self, validators: ValidatorSet) -> int:
        """Votes needed in `validators` (2f+1, or n−f when n ≠ 3f+1)."""
        if self.quorum_override is not None:
            return self.quorum_override
        return validators.quorum

    def block_bytes_limit(self, validators: ValidatorSet) -> int:
        """The largest `block_bytes` a proposal may have while `validators` vote.

        `max_block_bytes`, further bounded so that (quorum+1)·W copies of a
        maximal block (a NEW-VIEW's VIEW-CHANGEs, each with up to W prepared
        certificates, and up to W re-proposals) plus generous per-copy
        overhead (certificate and PREPARE signatures: < 512 bytes per
        validator) fit in one message. W = 1 gives the unpipelined bound.
        """
        copies = (max(self.quorum(validators), validators.quorum) + 1) * self.max_in_flight
        overhead = 4096 + copies * (1024 + 512 * validators.size)
        return max(1024, min(self.max_block_bytes, (codec.MAX_MESSAGE_BYTES - overhead) // copies))

    def lagged_height(self, height: int) -> int:
        """The executed height whose results header `height` carries (0 = genesis)."""
        return max(0, height - self.results_lag)

    def view_timeout_ms(self, attempt: int) -> int:
        """Timeout for the `attempt`-th consecutive view without progress (0-based)."""
        return min(self.max_timeout_ms, self.base_timeout_ms << min(attempt, 40))
