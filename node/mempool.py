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

Cost per tx (scripts/bench_admit.py): the txs of one POST /txs or one gossip
frame enter the queue together, so the verifier takes them as one batch (one
worker-thread round trip), and the whole call waits on one Event; a gossiped
copy of a tx already pooled or in flight costs one sha256 and a counter.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import Callable

import trio

from ledger.crypto import is_valid, sign_bytes, verify_raw
from ledger.errors import LedgerError, SignatureError
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


class _Waiter:
    """One `submit`/`submit_many` call waiting for the verdicts on its queued txs.

    `results` is the call's list (a Tx per queued tx, replaced by its
    TxRejected if refused after verification); `pending` counts queued txs
    without a verdict. Verdicts come in queue order, so the ones still
    pending are always the call's last `pending` txs.
    """

    __slots__ = ("results", "pending", "done")

    def __init__(self, results: list[Tx | TxRejected]) -> None:
        self.results = results
        self.pending = 0
        self.done = trio.Event()

    def settle(self, index: int, error: TxRejected | None) -> None:
        if error is not None:
            self.results[index] = error
        self.pending -= 1
        if not self.pending:
            self.done.set()


# A queued tx: (tx, raw, source, hash, waiter or None for gossip, index in the waiter's results)
_Entry = tuple[Tx, bytes, bytes | None, bytes, _Waiter | None, int]

# what a refusal by hash alone says (see `Mempool._known`)
_KNOWN_DETAIL = {"duplicate": "", "nonce_too_old": "already committed"}


def _drop_oldest(entries: dict[object, object], capacity: int) -> None:
    """Trim an insertion-ordered dict to `capacity`, oldest first, in one pass.

    (`del d[next(iter(d))]` once per insert looks O(1) but is not: each call
    skips every slot deleted since the dict last resized, ~10 µs per insert
    at 16k entries.)
    """
    excess = len(entries) - capacity
    if excess > 0:
        for key in list(itertools.islice(entries, excess)):
            del entries[key]


def _verify_batch(txs: list[Tx]) -> list[bool]:
    """Runs in a worker thread: one libsodium verify per tx, `tx.verify_signature()`'s verdict.

    The signed bytes are `sign_bytes("tx", chain id, b"") ‖ signing payload`
    (`ledger.crypto`'s layout), the prefix built once per chain id rather
    than once per tx (all of a batch share ours).
    """
    prefixes: dict[str, bytes | None] = {}
    results = []
    for tx in txs:
        if tx.chain_id not in prefixes:
            prefixes[tx.chain_id] = _tx_sign_prefix(tx.chain_id)
        prefix = prefixes[tx.chain_id]
        try:
            if prefix is None:
                raise SignatureError("malformed chain id")
            verify_raw(tx.sender, prefix + tx.signing_payload(), tx.signature)
            results.append(True)
        except LedgerError:
            results.append(False)
    return results


def _tx_sign_prefix(chain_id: str) -> bytes | None:
    """What `sign_bytes("tx", chain_id, payload)` puts before the payload; None for a malformed chain id."""
    try:
        return sign_bytes("tx", chain_id, b"")
    except SignatureError:
        return None


class VerifiedSignatures:
    """Tx signatures known to verify, shared by the mempool and the replica's
    proposal check, so a tx both see is verified once.

    An entry is the exact verification input (sender key, chain id, signing
    payload bytes, signature): ed25519 verification is a pure function of
    those, so a hit is the same verdict, never a guess from a hash or from
    equal-looking fields. Entries are filed by signature (one 64-byte key to
    hash) and a hit needs the other three equal too. Only successes are kept;
    bounded, oldest dropped first.
    """

    def __init__(self, capacity: int = 16_384) -> None:
        self.capacity = capacity
        self._valid: dict[bytes, tuple[bytes, str, bytes]] = {}  # signature -> (key, chain id, payload)
        self.hits = 0

    def lookup(self, txs: list[Tx]) -> list[bool]:
        """Whether each tx's signature is known to verify (hits are counted)."""
        valid = self._valid
        known = [valid.get(tx.signature) == (tx.sender, tx.chain_id, tx.signing_payload()) for tx in txs]
        self.hits += known.count(True)
        return known

    def remember_all(self, txs: list[Tx]) -> None:
        """Remember txs whose signatures verified."""
        valid = self._valid
        for tx in txs:
            valid[tx.signature] = (tx.sender, tx.chain_id, tx.signing_payload())
        _drop_oldest(valid, self.capacity)

    def verifier(self, public_key: bytes, kind: str, chain_id: str, payload: bytes, signature: bytes) -> bool:
        """A `consensus` verifier (`ledger.crypto.is_valid` semantics) that
        answers known tx signatures from memory and remembers new valid ones."""
        if kind != "tx":
            return is_valid(public_key, kind, chain_id, payload, signature)
        signed = (public_key, chain_id, payload)
        if self._valid.get(signature) == signed:
            self.hits += 1
            return True
        if not is_valid(public_key, kind, chain_id, payload, signature):
            return False
        self._valid[signature] = signed
        _drop_oldest(self._valid, self.capacity)
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
        on_batch_done: Callable[[list[Tx]], None] = lambda admitted: None,
        verified: VerifiedSignatures | None = None,
    ) -> None:
        """`on_admitted(tx, raw, source)` runs per admitted tx; `on_batch_done(admitted)`
        once after each verified batch, with the txs it admitted (so gossip can
        go out as one frame, and metrics take one clock reading per batch)."""
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
        self._send, self._receive = trio.open_memory_channel[_Entry](self.config.queue)

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
        """Stateless and pool checks; returns the decoded tx and its hash.

        Refusals of gossiped txs (mostly duplicates and already-committed
        nonces: the normal end of flooding) count in `gossip_rejected`, not
        in `rejected` (client-facing failures). Raises TxRejected.
        """
        raw = self._checked_bytes(raw, gossip)
        # Duplicates first, by the hash of the bytes: only canonical (valid)
        # encodings are ever pooled, so this never misreports a malformed tx,
        # and gossip's extra copies cost one sha256 instead of a decode.
        tx_hash = sha256(raw)  # canonical decode ⇒ raw == tx.encode()
        reason = self._known(tx_hash)
        if reason is not None:
            raise self._reject(reason, _KNOWN_DETAIL[reason], gossip=gossip)
        return self._decode_new(raw, tx_hash, gossip), tx_hash

    def _checked_bytes(self, raw: bytes, gossip: bool) -> bytes:
        """`raw` as bytes, within `max_tx_bytes`; raises TxRejected ("malformed", "oversize")."""
        if type(raw) is not bytes:
            if not isinstance(raw, (bytes, bytearray)):
                raise self._reject("malformed", "not bytes", gossip=gossip)
            raw = bytes(raw)
        if len(raw) > self.config.max_tx_bytes:
            raise self._reject("oversize", "%d bytes, limit %d" % (len(raw), self.config.max_tx_bytes), gossip=gossip)
        return raw

    def _known(self, tx_hash: bytes) -> str | None:
        """The refusal for a tx known by hash ("duplicate": pooled or being
        verified; "nonce_too_old": committed lately), or None."""
        if tx_hash in self.txs or tx_hash in self._in_flight:
            return "duplicate"
        if tx_hash in self._recent:
            return "nonce_too_old"
        return None

    def _decode_new(self, raw: bytes, tx_hash: bytes, gossip: bool) -> Tx:
        """Decode a tx not known by hash and check it against chain and pool.

        Raises TxRejected ("malformed", "wrong_chain", or a `_check_state` reason).
        """
        try:
            tx = Tx.decode(raw, digest=tx_hash)
        except LedgerError as exc:
            raise self._reject("malformed", str(exc), gossip=gossip) from exc
        if tx.chain_id != self.chain_id:
            raise self._reject("wrong_chain", "tx is for chain %r" % tx.chain_id, gossip=gossip)
        self._check_state(tx, tx_hash, len(raw), gossip)
        return tx

    def _check_state(self, tx: Tx, tx_hash: bytes, size: int, gossip: bool = False) -> None:
        """Nonce window, nonce holder and room; raises TxRejected ("nonce_too_old",
        "nonce_too_far", "nonce_taken", "mempool_full")."""
        sender, nonce, config = tx.sender, tx.nonce, self.config
        committed = self._nonces.get(sender)
        if committed is None:
            committed = self.committed_nonce(sender)
        if nonce <= committed:
            raise self._reject("nonce_too_old", "nonce %d, committed %d" % (nonce, committed), gossip=gossip)
        if nonce > committed + config.nonce_window:
            raise self._reject("nonce_too_far", "nonce %d, window ends at %d"
                               % (nonce, committed + config.nonce_window), gossip=gossip)
        pooled = self.by_sender.get(sender)
        holder = None if pooled is None else pooled.get(nonce)
        if holder is not None and holder != tx_hash:
            raise self._reject("nonce_taken", "another pooled tx uses nonce %d" % nonce, gossip=gossip)
        if len(self.txs) + len(self._in_flight) >= config.max_txs or self.bytes + size > config.max_bytes:
            raise self._reject("mempool_full", "", gossip=gossip)

    async def submit(self, raw: bytes, source: bytes | None = None) -> Tx:
        """Verify and admit one tx (waits for its signature batch).

        Raises TxRejected with one of `REASONS`.
        """
        self._nonces.clear()
        tx, tx_hash = self._precheck(raw)
        results: list[Tx | TxRejected] = [tx]
        waiter = _Waiter(results)
        self._in_flight.add(tx_hash)
        await self._queue_and_wait([(tx, tx.encode(), source, tx_hash, waiter, 0)], waiter)
        if isinstance(results[0], TxRejected):
            raise results[0]
        return tx

    async def submit_many(self, raws: list[bytes]) -> list[Tx | TxRejected]:
        """Verify and admit several txs at once (one wait for all their batches).

        Returns, per input in order, the admitted `Tx` or the `TxRejected`
        (never raises for a single tx's refusal).
        """
        self._nonces.clear()
        results: list[Tx | TxRejected] = []
        waiter = _Waiter(results)
        entries: list[_Entry] = []
        for raw in raws:
            try:
                tx, tx_hash = self._precheck(raw)
            except TxRejected as exc:
                results.append(exc)
                continue
            self._in_flight.add(tx_hash)
            entries.append((tx, tx.encode(), None, tx_hash, waiter, len(results)))
            results.append(tx)
        await self._queue_and_wait(entries, waiter)
        return results

    async def _queue_and_wait(self, entries: list[_Entry], waiter: _Waiter) -> None:
        """Queue `entries` (all of `waiter`'s txs, their hashes in flight) and
        wait for their verdicts.

        When the queue has room they all enter before the verifier runs, so
        they are verified together. If cancelled, the hashes of the txs
        without a verdict leave `_in_flight` (the verifier may still admit the
        queued ones).
        """
        waiter.pending = len(entries)
        if not entries:
            return
        try:
            for entry in entries:
                try:
                    self._send.send_nowait(entry)
                except trio.WouldBlock:
                    await self._send.send(entry)  # full: wait for room (backpressure on clients)
            await waiter.done.wait()
        finally:
            for entry in entries[len(entries) - waiter.pending:]:
                self._in_flight.discard(entry[3])

    def submit_nowait(self, raw: bytes, source: bytes | None = None) -> bool:
        """Gossip path: queue a tx for verification without waiting.

        Refusals are counted, never raised; False if refused or the queue is full.
        """
        self._nonces.clear()
        return self._submit_nowait(raw, source)

    def submit_many_nowait(self, raws: list[bytes], source: bytes | None = None) -> int:
        """`submit_nowait` for each of `raws` (a gossip frame); returns how many were queued."""
        self._nonces.clear()
        queued = 0
        for raw in raws:
            if self._submit_nowait(raw, source):
                queued += 1
        return queued

    def _submit_nowait(self, raw: bytes, source: bytes | None) -> bool:
        try:
            raw = self._checked_bytes(raw, gossip=True)
        except TxRejected:
            return False
        tx_hash = sha256(raw)
        reason = self._known(tx_hash)
        if reason is not None:  # the normal end of flooding: counted, no TxRejected built
            self.gossip_rejected[reason] += 1
            return False
        try:
            tx = self._decode_new(raw, tx_hash, gossip=True)
        except TxRejected:
            return False
        try:
            self._send.send_nowait((tx, raw, source, tx_hash, None, 0))
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
            verdicts = await self._verify(batch)
            self._admit(batch, verdicts)

    async def _verify(self, batch: list[_Entry]) -> list[bool]:
        """Signature verdicts for `batch`, in order: known ones from
        `verified`, the others in one worker-thread call (then remembered)."""
        txs = [entry[0] for entry in batch]
        known = self.verified.lookup(txs)
        if all(known):
            return known
        unknown = [tx for tx, seen in zip(txs, known) if not seen]
        # Measured: verifying small batches (≤ 16) on the event loop instead
        # saved no node CPU per committed tx, and verifying every batch there
        # halved throughput (the loop stalls): always a worker thread.
        self.verify_batches += 1
        fresh = await trio.to_thread.run_sync(_verify_batch, unknown)
        self.verified.remember_all([tx for tx, ok in zip(unknown, fresh) if ok])
        fresh_verdicts = iter(fresh)
        return [True if seen else next(fresh_verdicts) for seen in known]

    def _admit(self, batch: list[_Entry], verdicts: list[bool]) -> None:
        """Re-check and pool each verified tx (a block may have committed
        meanwhile), settle the waiting callers, release, report the batch."""
        self._nonces.clear()
        ready_senders: set[bytes] = set()
        admitted: list[Tx] = []
        for (tx, raw, source, tx_hash, waiter, index), ok in zip(batch, verdicts):
            self._in_flight.discard(tx_hash)
            gossip = source is not None
            error = None
            try:
                if not ok:
                    raise self._reject("bad_signature", gossip=gossip)
                if tx_hash in self.txs:
                    raise self._reject("duplicate", gossip=gossip)
                self._check_state(tx, tx_hash, len(raw), gossip)
            except TxRejected as exc:
                error = exc
            else:
                self._insert(tx, tx_hash, raw)
                self.on_admitted(tx, raw, source)
                ready_senders.add(tx.sender)
                admitted.append(tx)
            if waiter is not None:
                waiter.settle(index, error)
        self._release(ready_senders)
        self.on_batch_done(admitted)

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
        _drop_oldest(recent, RECENT_COMMITTED)
        for sender in senders:
            committed = self.committed_nonce(sender)
            pool = self.by_sender.get(sender)
            # the loop above removed this block's own txs, so a sender's pool
            # rarely still holds a used nonce: test that with min() (C speed)
            # before walking the pool in Python (hundreds of nonces at load)
            if pool and min(pool) <= committed:
                for nonce, tx_hash in list(pool.items()):
                    if nonce <= committed:
                        self._remove(tx_hash)
            if sender in self.released and self.released[sender] < committed:
                self.released[sender] = committed
            if sender not in self.by_sender:
                self.released.pop(sender, None)
        self._release(senders)
