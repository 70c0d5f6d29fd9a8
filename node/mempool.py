"""The mempool: verify each transaction once, keep it bounded, release it in
per-account nonce order.

Admission, cheapest check first (every refusal is a `TxRejected(reason)` and
bumps `rejected[reason]`):

1. size ≤ `max_tx_bytes`                                  → "oversize"
2. canonical decode (`Tx.decode`)                          → "malformed"
3. chain id is ours                                        → "wrong_chain"
4. not already pooled or being verified (by hash)          → "duplicate"
5. committed nonce c of the sender (read from state):
   c < nonce ≤ c + `nonce_window`                          → "nonce_too_old" / "nonce_too_far"
   no other pooled tx holds the same (sender, nonce)       → "nonce_taken"
6. room by count and bytes                                 → "mempool_full"
7. ed25519 signature, in batches in a worker thread        → "bad_signature"
   (PyNaCl releases the GIL, so the event loop keeps serving consensus)

Steps 4–6 are re-checked after the signature batch, since a block may have
committed meanwhile. Admitted transactions are handed to `on_admitted` (for
gossip) and, once every lower nonce of the sender is committed or released,
to `on_ready` (for the replica): a replica never sees nonce n+1 before n.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

import trio

from ledger.errors import LedgerError
from ledger.hashing import sha256
from ledger.types import MAX_TX_BYTES, Tx

from node.service import TxRejected

REASONS = (
    "oversize", "malformed", "wrong_chain", "duplicate", "nonce_too_old", "nonce_too_far",
    "nonce_taken", "mempool_full", "bad_signature", "read_only",
)


@dataclass
class MempoolConfig:
    max_txs: int = 5000
    max_bytes: int = 64 * 1024 * 1024
    max_tx_bytes: int = MAX_TX_BYTES
    nonce_window: int = 64
    verify_batch: int = 256
    queue: int = 4096


@dataclass
class _Request:
    tx: Tx
    raw: bytes
    source: bytes | None
    done: trio.Event = field(default_factory=trio.Event)
    error: TxRejected | None = None


def _verify_batch(txs: list[Tx]) -> list[bool]:
    """Runs in a worker thread: one libsodium verify per tx."""
    results = []
    for tx in txs:
        try:
            tx.verify_signature()
            results.append(True)
        except LedgerError:
            results.append(False)
    return results


class Mempool:
    """Verified, pending transactions. Start `run` in the node's nursery."""

    def __init__(
        self,
        chain_id: str,
        committed_nonce: Callable[[bytes], int],
        config: MempoolConfig | None = None,
        *,
        on_ready: Callable[[list[Tx]], None] = lambda txs: None,
        on_admitted: Callable[[Tx, bytes, bytes | None], None] = lambda tx, raw, source: None,
    ) -> None:
        self.chain_id = chain_id
        self.committed_nonce = committed_nonce
        self.config = config or MempoolConfig()
        self.on_ready = on_ready
        self.on_admitted = on_admitted
        self.rejected: collections.Counter[str] = collections.Counter()
        self.admitted = 0
        self.gossip_rejected: collections.Counter[str] = collections.Counter()
        self.txs: dict[bytes, tuple[Tx, bytes]] = {}  # hash -> (tx, raw)
        self.by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> hash
        self.released: dict[bytes, int] = {}  # sender -> highest nonce handed to on_ready
        self.bytes = 0
        self._in_flight: set[bytes] = set()
        self._send, self._receive = trio.open_memory_channel[_Request](self.config.queue)

    # -------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self.txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self.txs

    def get(self, tx_hash: bytes) -> Tx | None:
        entry = self.txs.get(tx_hash)
        return None if entry is None else entry[0]

    # ------------------------------------------------------------ admission

    def _reject(self, reason: str, detail: str = "", gossip: bool = False) -> TxRejected:
        (self.gossip_rejected if gossip else self.rejected)[reason] += 1
        return TxRejected(reason, detail)

    def _precheck(self, raw: bytes, gossip: bool = False) -> tuple[Tx, bytes]:
        """Stateless and pool checks; raises TxRejected.

        Refusals of gossiped txs (mostly duplicates and already-committed
        nonces: the normal end of flooding) count in `gossip_rejected`, not
        in `rejected` (client-facing failures).
        """
        if not isinstance(raw, (bytes, bytearray)):
            raise self._reject("malformed", "not bytes", gossip=gossip)
        raw = bytes(raw)
        if len(raw) > self.config.max_tx_bytes:
            raise self._reject("oversize", "%d bytes, limit %d" % (len(raw), self.config.max_tx_bytes), gossip=gossip)
        try:
            tx = Tx.decode(raw)
        except LedgerError as exc:
            raise self._reject("malformed", str(exc), gossip=gossip) from exc
        if tx.chain_id != self.chain_id:
            raise self._reject("wrong_chain", "tx is for chain %r" % tx.chain_id, gossip=gossip)
        tx_hash = sha256(raw)  # canonical decode ⇒ raw == tx.encode()
        if tx_hash in self.txs or tx_hash in self._in_flight:
            raise self._reject("duplicate", "", gossip=gossip)
        self._check_state(tx, tx_hash, len(raw), gossip)
        return tx, tx_hash

    def _check_state(self, tx: Tx, tx_hash: bytes, size: int, gossip: bool = False) -> None:
        committed = self.committed_nonce(tx.sender)
        if tx.nonce <= committed:
            raise self._reject("nonce_too_old", "nonce %d, committed %d" % (tx.nonce, committed), gossip=gossip)
        if tx.nonce > committed + self.config.nonce_window:
            raise self._reject("nonce_too_far", "nonce %d, window ends at %d"
                               % (tx.nonce, committed + self.config.nonce_window), gossip=gossip)
        holder = self.by_sender.get(tx.sender, {}).get(tx.nonce)
        if holder is not None and holder != tx_hash:
            raise self._reject("nonce_taken", "another pooled tx uses nonce %d" % tx.nonce, gossip=gossip)
        if len(self.txs) + len(self._in_flight) >= self.config.max_txs or self.bytes + size > self.config.max_bytes:
            raise self._reject("mempool_full", "", gossip=gossip)

    async def submit(self, raw: bytes, source: bytes | None = None) -> Tx:
        """Verify and admit one tx (waits for its signature batch).

        Raises TxRejected with one of `REASONS`.
        """
        tx, tx_hash = self._precheck(raw)
        request = _Request(tx, bytes(raw), source)
        self._in_flight.add(tx_hash)
        try:
            await self._send.send(request)
            await request.done.wait()
        finally:
            self._in_flight.discard(tx_hash)
        if request.error is not None:
            raise request.error
        return tx

    def submit_nowait(self, raw: bytes, source: bytes | None = None) -> bool:
        """Gossip path: queue a tx for verification without waiting.

        Refusals are counted, never raised; False if refused or the queue is full.
        """
        try:
            tx, tx_hash = self._precheck(raw, gossip=True)
        except TxRejected:
            return False
        request = _Request(tx, bytes(raw), source)
        try:
            self._send.send_nowait(request)
        except trio.WouldBlock:
            self.gossip_rejected["mempool_full"] += 1
            return False
        self._in_flight.add(tx_hash)
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Verify queued transactions in batches until cancelled."""
        task_status.started()
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < self.config.verify_batch:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            verdicts = await trio.to_thread.run_sync(_verify_batch, [r.tx for r in batch])
            ready_senders: set[bytes] = set()
            for request, ok in zip(batch, verdicts):
                tx_hash = sha256(request.raw)
                self._in_flight.discard(tx_hash)
                gossip = request.source is not None
                try:
                    if not ok:
                        raise self._reject("bad_signature", gossip=gossip)
                    if tx_hash in self.txs:
                        raise self._reject("duplicate", gossip=gossip)
                    self._check_state(request.tx, tx_hash, len(request.raw), gossip)
                except TxRejected as exc:
                    request.error = exc
                else:
                    self._insert(request.tx, tx_hash, request.raw)
                    self.on_admitted(request.tx, request.raw, request.source)
                    ready_senders.add(request.tx.sender)
                request.done.set()
            self._release(ready_senders)

    def _insert(self, tx: Tx, tx_hash: bytes, raw: bytes) -> None:
        self.txs[tx_hash] = (tx, raw)
        self.by_sender.setdefault(tx.sender, {})[tx.nonce] = tx_hash
        self.bytes += len(raw)
        self.admitted += 1

    def _remove(self, tx_hash: bytes) -> None:
        entry = self.txs.pop(tx_hash, None)
        if entry is None:
            return
        tx, raw = entry
        self.bytes -= len(raw)
        nonces = self.by_sender.get(tx.sender)
        if nonces is not None and nonces.get(tx.nonce) == tx_hash:
            del nonces[tx.nonce]
            if not nonces:
                del self.by_sender[tx.sender]

    # -------------------------------------------------------------- release

    def _release(self, senders: set[bytes]) -> None:
        """Hand every sender's next contiguous nonces to `on_ready`, in order."""
        ready: list[Tx] = []
        for sender in sorted(senders):
            nonces = self.by_sender.get(sender)
            if not nonces:
                continue
            next_nonce = max(self.released.get(sender, 0), self.committed_nonce(sender)) + 1
            while next_nonce in nonces:
                ready.append(self.txs[nonces[next_nonce]][0])
                self.released[sender] = next_nonce
                next_nonce += 1
        if ready:
            self.on_ready(ready)

    def pending_ready(self) -> list[Tx]:
        """Every released, still-pooled tx (to re-feed a rebuilt replica)."""
        out = []
        for sender, nonces in sorted(self.by_sender.items()):
            top = self.released.get(sender, 0)
            out.extend(self.txs[h][0] for n, h in sorted(nonces.items()) if n <= top)
        return out

    def remove_committed(self, txs: tuple[Tx, ...] | list[Tx]) -> None:
        """Drop committed txs and every pooled tx whose nonce is now used."""
        senders: set[bytes] = set()
        for tx in txs:
            self._remove(tx.hash)
            senders.add(tx.sender)
        for sender in senders:
            committed = self.committed_nonce(sender)
            for nonce, tx_hash in list(self.by_sender.get(sender, {}).items()):
                if nonce <= committed:
                    self._remove(tx_hash)
            if sender in self.released and self.released[sender] < committed:
                self.released[sender] = committed
            if sender not in self.by_sender:
                self.released.pop(sender, None)
        self._release(senders)
