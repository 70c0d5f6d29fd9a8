"""The contract between the node's core runtime (`node/node.py`) and its
operator surface (HTTP API `node/rpc.py`, CLI, metrics).

The runtime implements `NodeService`; the RPC layer only calls these methods,
so either side can change without the other. All returned values are plain
JSON-able dicts (bytes as lowercase hex) unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class TxRejected(Exception):
    """A submitted transaction was refused before entering the mempool.

    `reason` is a short stable label (also the metric label), e.g. "malformed",
    "bad_signature", "wrong_chain", "nonce_too_old", "nonce_too_far", "duplicate",
    "mempool_full", "oversize", "read_only".
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
        self.detail = detail


class StateUnavailable(Exception):
    """A state version cannot be served: `reason` "pruned" (deleted by
    `[storage] keep_recent_versions`; HTTP 410) or "not_found" (not committed
    or not certified yet; HTTP 404). `oldest` is the oldest version served."""

    def __init__(self, reason: str, detail: str, oldest: int | None = None) -> None:
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail
        self.oldest = oldest


@dataclass(frozen=True)
class SubmitResult:
    tx_hash: bytes


class NodeService(Protocol):
    def status(self) -> dict[str, Any]:
        """At least: chain_id, node_id, moniker, role, height (last committed),
        app_hash (hex, state root after `height`), view, catching_up (bool),
        peers (int), latest_block_time_ms, validator (hex key or None)."""

    def net_info(self) -> dict[str, Any]: ...

    def validators(self) -> dict[str, Any]:
        """{"height": h, "validators": [{"name", "public_key"}], "quorum": q}"""

    def genesis(self) -> dict[str, Any]: ...

    def block(self, height: int) -> dict[str, Any] | None:
        """{"height", "hash", "header": {...}, "txs": [hex], "encoded": hex} or None."""

    def block_tx_hashes(self, height: int) -> dict[str, Any] | None:
        """The light form of `block` (GET /blocks/{h}?txs=hashes): {"height", "hash",
        "header": {...}, "tx_hashes": [hex]} or None. Each hash is `Tx.hash` (what
        GET /tx/{hash} accepts), in block order: no tx bytes to build or ship."""

    async def wait_for_height(self, height: int) -> None:
        """Return once block `height` is committed (at once if it already is).

        Woken by the driver's commit notification, never by polling. Takes no
        timeout: the caller bounds it (`trio.move_on_after`), and a cancelled
        wait leaves nothing behind. Raises nothing of its own.
        """

    def commit(self, height: int) -> dict[str, Any] | None:
        """{"height", "header": {...}, "certificate": {...}, "encoded_header": hex,
        "encoded_certificate": hex} or None."""

    async def submit_tx(self, raw: bytes) -> SubmitResult:
        """Verify and admit a tx to the mempool; raises TxRejected."""

    def tx(self, tx_hash: bytes) -> dict[str, Any] | None:
        """{"hash", "status": "pending"|"committed", "height", "index", "receipt": {...}} or None."""

    def state(self, key: bytes, prove: bool, height: int | None = None) -> dict[str, Any]:
        """{"key", "value" (hex or None), "height"} and, with prove, "proof" (hex of the
        encoded state proof) plus the certified header that commits the state root:
        "header" (hex), "certificate" (hex) for height+L ("header_height"; L = genesis
        results_lag, 1 unless the chain pipelines). `height`: that state
        version instead of the latest certified one; raises StateUnavailable."""

    def evidence(self) -> list[dict[str, Any]]:
        """[{"validator", "kind", "view", "height", "first", "second" (hex of the two
        signed messages), "recorded_height"}], persisted across restarts."""
