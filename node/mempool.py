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
   (PyNaCl releases the GIL, so the event loop keeps serving consensus);
   a signature in `VerifiedSignatures` (verified before, by the mempool or
   by the replica's proposal check, over the identical bytes) is not
   verified again

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

from ledger.crypto import is_valid
from ledger.errors import LedgerError
from ledger.hashing import sha256
from ledger.types import KNOWN_TXS, MAX_TX_BYTES, Tx

from node.service import TxRejected

RECENT_COMMITTED = 65_536  # committed tx hashes remembered for cheap duplicate refusal

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
    tx_hash: bytes = b""
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


class VerifiedSignatures:
    """Tx signatures known to verify, shared by the mempool and the replica's
    proposal check, so a tx both see is verified once.

    An entry is the exact verification input (sender key, chain id, signing
    payload bytes, signature): ed25519 verification is a pure function of
    those, so a hit is the same verdict, never a guess from a hash or from
    equal-looking fields. Only successes are kept; bounded, oldest dropped first.
    """

    def __init__(self, capacity: int = 16_384) -> None:
        self.capacity = capacity
        self._valid: dict[tuple[bytes, str, bytes, bytes], None] = {}
        self.hits = 0

    def knows(self, tx: Tx) -> bool:
        return (tx.sender, tx.chain_id, tx.signing_payload(), tx.signature) in self._valid

    def add(self, tx: Tx) -> None:
        self._remember((tx.sender, tx.chain_id, tx.signing_payload(), tx.signature))

    def _remember(self, entry: tuple[bytes, str, bytes, bytes]) -> None:
        valid = self._valid
        valid[entry] = None
        if len(valid) > self.capacity:
            del valid[next(iter(valid))]

    def verifier(self, public_key: bytes, kind: str, chain_id: str, payload: bytes, signature: bytes) -> bool:
        """A `consensus` verifier (`ledger.crypto.is_valid` semantics) that
        answers known tx signatures from memory and remembers new valid ones."""
        if kind != "tx":
            return is_valid(public_key, kind, chain_id, payload, signature)
        entry = (public_key, chain_id, payload, signature)
        if entry in self._valid:
            self.hits += 1
            return True
        if not is_valid(public_key, kind, chain_id, payload, signature):
            return False
        self._remember(entry)
        return True


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
        on_batch_done: Callable[[], None] = lambda: None,
        verified: VerifiedSignatures | None = None,
    ) -> None:
        """`on_admitted(tx, raw, source)` runs per admitted tx; `on_batch_done()`
        once after each verified batch (so gossip can go out as one frame)."""
        self.chain_id = chain_id
        self.verified = verified if verified is not None else VerifiedSignatures()
        self._read_committed_nonce = committed_nonce
        # committed nonce per sender, read once per batch of work (a gossip
        # frame, a POST /txs, a verified batch) instead of once per tx and step.
        # Cleared at the start of each such call (state only changes between
        # them: commits run elsewhere, between our synchronous sections).
        self._nonces: dict[bytes, int] = {}
        self.config = config or MempoolConfig()
        self.on_ready = on_ready
        self.on_admitted = on_admitted
        self.on_batch_done = on_batch_done
        self.rejected: collections.Counter[str] = collections.Counter()
        self.admitted = 0
        self.verify_batches = 0  # worker-thread round trips (each costs a GIL hand-off or two)
        self.gossip_rejected: collections.Counter[str] = collections.Counter()
        self.txs: dict[bytes, tuple[Tx, bytes]] = {}  # hash -> (tx, raw)
        self.by_sender: dict[bytes, dict[int, bytes]] = {}  # sender -> nonce -> hash
        self.released: dict[bytes, int] = {}  # sender -> highest nonce handed to on_ready
        self.bytes = 0
        self._in_flight: set[bytes] = set()
        # hashes of recently committed txs: late gossip copies are refused by
        # hash before any decode (bounded; the nonce check stays the real guard)
        self._recent: dict[bytes, None] = {}
        self._send, self._receive = trio.open_memory_channel[_Request](self.config.queue)

    def committed_nonce(self, sender: bytes) -> int:
        nonce = self._nonces.get(sender)
        if nonce is None:
            nonce = self._nonces[sender] = self._read_committed_nonce(sender)
        return nonce

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
        # Duplicates first, by the hash of the bytes: only canonical (valid)
        # encodings are ever pooled, so this never misreports a malformed tx,
        # and gossip's extra copies cost one sha256 instead of a decode.
        tx_hash = sha256(raw)  # canonical decode ⇒ raw == tx.encode()
        if tx_hash in self.txs or tx_hash in self._in_flight:
            raise self._reject("duplicate", "", gossip=gossip)
        if tx_hash in self._recent:
            raise self._reject("nonce_too_old", "already committed", gossip=gossip)
        try:
            tx = Tx.decode(raw)
        except LedgerError as exc:
            raise self._reject("malformed", str(exc), gossip=gossip) from exc
        if tx.chain_id != self.chain_id:
            raise self._reject("wrong_chain", "tx is for chain %r" % tx.chain_id, gossip=gossip)
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
        self._nonces.clear()
        tx, tx_hash = self._precheck(raw)
        request = _Request(tx, bytes(raw), source, tx_hash)
        self._in_flight.add(tx_hash)
        try:
            await self._send.send(request)
            await request.done.wait()
        finally:
            self._in_flight.discard(tx_hash)
        if request.error is not None:
            raise request.error
        return tx

    async def submit_many(self, raws: list[bytes]) -> list[Tx | TxRejected]:
        """Verify and admit several txs at once (one wait for all their batches).

        Returns, per input in order, the admitted `Tx` or the `TxRejected`
        (never raises for a single tx's refusal).
        """
        self._nonces.clear()
        results: list[Tx | TxRejected] = []
        requests: list[tuple[int, _Request, bytes]] = []
        for raw in raws:
            try:
                tx, tx_hash = self._precheck(raw)
            except TxRejected as exc:
                results.append(exc)
                continue
            request = _Request(tx, bytes(raw), None, tx_hash)
            self._in_flight.add(tx_hash)
            requests.append((len(results), request, tx_hash))
            results.append(tx)
        try:
            for _, request, _ in requests:
                await self._send.send(request)
            for _, request, _ in requests:
                await request.done.wait()
        finally:
            for _, request, tx_hash in requests:
                if not request.done.is_set():
                    self._in_flight.discard(tx_hash)
        for index, request, _ in requests:
            if request.error is not None:
                results[index] = request.error
        return results

    def submit_nowait(self, raw: bytes, source: bytes | None = None) -> bool:
        """Gossip path: queue a tx for verification without waiting.

        Refusals are counted, never raised; False if refused or the queue is full.
        """
        self._nonces.clear()
        return self._submit_nowait(raw, source)

    def submit_many_nowait(self, raws: list[bytes], source: bytes | None = None) -> int:
        """`submit_nowait` for each of `raws` (a gossip frame); returns how many were queued."""
        self._nonces.clear()
        return sum(1 for raw in raws if self._submit_nowait(raw, source))

    def _submit_nowait(self, raw: bytes, source: bytes | None) -> bool:
        try:
            tx, tx_hash = self._precheck(raw, gossip=True)
        except TxRejected:
            return False
        request = _Request(tx, bytes(raw), source, tx_hash)
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
            verified = self.verified
            known = [verified.knows(r.tx) for r in batch]
            verified.hits += known.count(True)
            unknown = [r.tx for r, seen in zip(batch, known) if not seen]
            # Measured: verifying small batches (≤ 16) on the event loop instead
            # saved no node CPU per committed tx, and verifying every batch there
            # halved throughput (the loop stalls): always a worker thread.
            fresh: list[bool] = []
            if unknown:
                self.verify_batches += 1
                fresh = await trio.to_thread.run_sync(_verify_batch, unknown)
            for tx, ok in zip(unknown, fresh):
                if ok:
                    verified.add(tx)
            fresh_verdicts = iter(fresh)
            verdicts = [True if seen else next(fresh_verdicts) for seen in known]
            self._nonces.clear()
            ready_senders: set[bytes] = set()
            for request, ok in zip(batch, verdicts):
                tx_hash = request.tx_hash or sha256(request.raw)
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
            self.on_batch_done()

    def _insert(self, tx: Tx, tx_hash: bytes, raw: bytes) -> None:
        self.txs[tx_hash] = (tx, raw)
        KNOWN_TXS.add(tx)  # a proposal carrying it decodes to this very tx (see KnownTxs)
        self.by_sender.setdefault(tx.sender, {})[tx.nonce] = tx_hash
        self.bytes += len(raw)
        self.admitted += 1

    def _remove(self, tx_hash: bytes) -> None:
        entry = self.txs.pop(tx_hash, None)
        if entry is None:
            return
        tx, raw = entry
        KNOWN_TXS.discard(tx)
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
        self._nonces.clear()
        out = []
        for sender, nonces in sorted(self.by_sender.items()):
            top = self.released.get(sender, 0)
            out.extend(self.txs[h][0] for n, h in sorted(nonces.items()) if n <= top)
        return out

    def remove_committed(self, txs: tuple[Tx, ...] | list[Tx]) -> None:
        """Drop committed txs and every pooled tx whose nonce is now used."""
        self._nonces.clear()
        senders: set[bytes] = set()
        recent = self._recent
        for tx in txs:
            # No tx.hash (a canonical re-encode): whatever we pool at the
            # committed (sender, nonce) goes below anyway, and only a tx we
            # pooled can come back to us as a late gossip copy.
            pooled = self.by_sender.get(tx.sender, {}).get(tx.nonce)
            if pooled is not None:
                entry = self.txs.get(pooled)
                if entry is not None and (entry[0] is tx or entry[0] == tx):  # usually the pooled object itself (KnownTxs)
                    self._remove(pooled)
                recent[pooled] = None
            senders.add(tx.sender)
        while len(recent) > RECENT_COMMITTED:
            del recent[next(iter(recent))]
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
