"""The consensus driver: the single owner of the `Replica`.

It feeds inputs one at a time and performs each returned effect IN ORDER:

- `Persist`  → write `priv_validator_state` durably (one checksummed record
  into the older of two slot files, one fdatasync: `GuardFile`) BEFORE any
  later message leaves the node: this is the double-sign guard. (A Persist
  with no message after it in its list is written just before the next
  message instead, or superseded by a newer one.)
- `Broadcast` / `Send` → p2p consensus channel (high priority queue).
- `Commit` → the executor runs and persists the block; `BlockExecuted` is fed
  back before anything else from outside (the next header depends on it), and
  only once the block's write is durable: the replica then drops the block
  bytes of its own PROPOSAL guard records up to that height.
- `ScheduleTimeout` → a timer task delivers the `TimeoutFired` later.
- `FetchBlocks` → a sync task delivers `BlocksFetched` (maybe empty).
- `Evidence` → kept for RPC and metrics, and handed to `on_evidence` listeners
  (the node persists it: `node.store.EvidenceStore`).

An `InvariantViolation` or `ExecutionError` propagates and stops the node
(halting beats running on after our state diverged).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import struct
import time
from typing import Callable

import structlog
import trio

from consensus.effects import (
    Broadcast, Commit, Effect, Evidence, FetchBlocks, Persist, ScheduleTimeout, Send,
)
from consensus.inputs import (
    BlockExecuted, BlocksFetched, Input, MessageReceived, TimeoutFired, TransactionsVerified,
)
from consensus.errors import ConsensusError
from consensus.persist import PersistedState
from consensus.replica import Replica
from ledger.types import Block, CommitCertificate, Tx

from node.executor import Executed, Executor
from node.p2p import CHANNEL_CONSENSUS, P2P
from node.sync import BlockSync

log = structlog.get_logger("careledger.driver")

MAX_EVIDENCE = 1000
STAGE_LOG_EVERY = 50  # commits between 'driver stage times' log lines


GUARD_FORMAT = "careledger/priv_validator_state/v1"  # the legacy single JSON file (read once, migrated)

# The guard lives in two slot files next to `priv_validator_state.json`; each
# write goes to the slot NOT holding the newest valid record, as one record:
#   magic (8) | sequence (8, big-endian) | length (4) | sha256(magic|sequence|length|payload) (32) | payload
# and is made durable with ONE fdatasync (no tmp file, rename or directory
# sync: the slot files exist, synced with their directory, from the first
# write on). The newest record whose checksum holds wins on load, so a write
# torn by a crash leaves the previous record (the other slot) in charge — the
# state no message sent so far depends on anything newer than. A slot is
# never truncated: a shorter record leaves stale bytes after it, which the
# length field excludes. An empty payload records "no state yet".
GUARD_MAGIC = b"CLGUARD1"
GUARD_HEADER = struct.Struct(">8sQI32s")
GUARD_SLOT_SUFFIXES = (".slot0", ".slot1")
_fdatasync = getattr(os, "fdatasync", os.fsync)  # data + the size it needs; no mtime flush


def guard_slot_paths(path: str) -> tuple[str, str]:
    """The two slot files of the guard at `path` (`…/priv_validator_state.json`)."""
    root = path[:-len(".json")] if path.endswith(".json") else path
    return root + GUARD_SLOT_SUFFIXES[0], root + GUARD_SLOT_SUFFIXES[1]


def encode_guard_record(sequence: int, payload: bytes) -> bytes:
    head = GUARD_MAGIC + struct.pack(">QI", sequence, len(payload))
    digest = hashlib.sha256(head)
    digest.update(payload)  # no copy of the payload just to hash it
    return b"".join([head, digest.digest(), payload])


def decode_guard_record(raw: bytes) -> tuple[int, bytes] | None:
    """(sequence, payload) of the record at the start of `raw`, or None if it
    is missing, torn or corrupt (bad magic, short, checksum mismatch)."""
    if len(raw) < GUARD_HEADER.size:
        return None
    magic, sequence, length, digest = GUARD_HEADER.unpack_from(raw)
    payload = raw[GUARD_HEADER.size:GUARD_HEADER.size + length]
    if magic != GUARD_MAGIC or len(payload) != length:
        return None
    if hashlib.sha256(raw[:GUARD_HEADER.size - 32] + payload).digest() != digest:
        return None
    return sequence, payload


def _read_file(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _load_legacy(path: str) -> bytes | None:
    """The state bytes of a v1 JSON guard file (before slot files), or None if absent.

    Raises ConsensusError if it is corrupt."""
    raw = _read_file(path)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        if body.get("format") != GUARD_FORMAT:
            raise ValueError("unknown format %r" % body.get("format"))
        return bytes.fromhex(body["state"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConsensusError("corrupt double-sign guard file %s: %s" % (path, exc)) from exc


def _fsync_dir(path: str) -> None:
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes, offset: int = 0) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class GuardFile:
    """The double-sign guard on disk: two checksummed, sequenced slot files.

    `save` is durable when it returns (one fdatasync); `load` returns the
    newest valid record. Not thread-safe: one writer (the driver) at a time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.slots = guard_slot_paths(path)
        self._sequence: int | None = None  # of the newest valid record; None until opened
        self._newest_slot = 0

    def _read_slots(self) -> list[tuple[int, int, bytes]]:
        """[(sequence, slot index, payload)] of the valid records, newest first."""
        found = []
        for index, slot in enumerate(self.slots):
            raw = _read_file(slot)
            record = decode_guard_record(raw) if raw is not None else None
            if record is not None:
                found.append((record[0], index, record[1]))
        return sorted(found, reverse=True)

    def load_bytes(self) -> bytes | None:
        """The newest saved state (bytes), or None if never written.

        Raises ConsensusError when slot files exist but none holds a valid
        record (refuse to start: signing without the guard could double-sign).
        """
        if not os.path.exists(self.slots[0]):
            return _load_legacy(self.path)  # slots are made slot0 first: none yet
        records = self._read_slots()
        if not records:
            raise ConsensusError("corrupt double-sign guard: no valid record in %s or %s" % self.slots)
        if len(records) == 1 and any(os.path.getsize(slot) for i, slot in enumerate(self.slots)
                                     if i != records[0][1] and os.path.exists(slot)):
            # a crash tore the newest write (nothing that depended on it left the
            # node), or the disk damaged it: say so, the older record stays in charge
            log.warning("double-sign guard: invalid record ignored, using the previous one",
                        sequence=records[0][0], slot=self.slots[records[0][1]])
        return records[0][2] or None

    def _open(self) -> None:
        """Find the newest record, or create both slots (seeded with the legacy
        file's state, if any) durably: slot1 empty first, then slot0 via
        tmp+fsync+rename+dir fsync, so "slot0 exists" means "slots ready"."""
        if os.path.exists(self.slots[0]):
            records = self._read_slots()
            if not records:
                raise ConsensusError("corrupt double-sign guard: no valid record in %s or %s" % self.slots)
            self._sequence, self._newest_slot = records[0][0], records[0][1]
            if not os.path.exists(self.slots[1]):
                os.close(os.open(self.slots[1], os.O_WRONLY | os.O_CREAT, 0o600))
                _fsync_dir(self.slots[1])
            return
        legacy = _load_legacy(self.path) or b""
        fd = os.open(self.slots[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        tmp = self.slots[0] + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, encode_guard_record(0, legacy))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.slots[0])
        _fsync_dir(self.slots[0])
        self._sequence, self._newest_slot = 0, 0
        if legacy:  # migrated: the stale v1 file would only mislead an operator
            os.remove(self.path)
            _fsync_dir(self.path)

    def save(self, data: bytes) -> None:
        """Make `data` the newest record, durable before returning (one fdatasync
        after the first call); the previous record stays intact in the other slot."""
        if self._sequence is None:
            self._open()
        assert self._sequence is not None
        target = 1 - self._newest_slot
        fd = os.open(self.slots[target], os.O_WRONLY)
        try:
            _write_all(fd, encode_guard_record(self._sequence + 1, data))
            _fdatasync(fd)
        finally:
            os.close(fd)
        self._sequence += 1
        self._newest_slot = target


def save_guard_state(path: str, data: bytes) -> None:
    """Durably record the replica state `data` as the guard at `path` (see `GuardFile`)."""
    GuardFile(path).save(data)


def load_guard_state(path: str) -> PersistedState | None:
    """The last persisted consensus state, or None if never written.

    Raises ConsensusError if the guard is corrupt (refuse to start: signing
    without the guard could double-sign).
    """
    data = GuardFile(path).load_bytes()
    return PersistedState.decode(data) if data is not None else None


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Driver:
    """Runs one replica; start with `nursery.start(driver.run)`."""

    def __init__(
        self, replica: Replica, p2p: P2P, executor: Executor, sync: BlockSync, guard_path: str,
        *, clock_ms: Callable[[], int] = wall_clock_ms, input_queue: int = 10_000,
        resolve_peer: Callable[[bytes], bytes] = lambda key: key, persist: bool = True,
        catch_up_interval_s: float = 1.0,
    ) -> None:
        """`resolve_peer` maps a key the replica names (a validator key) to the
        p2p key to send to; `persist=False` on observers (they sign nothing);
        `catch_up_interval_s`: how long without a commit before polling a peer
        for newer certified blocks."""
        self.catch_up_interval_s = catch_up_interval_s
        self._last_commit_time = 0.0
        self._random = random.Random()
        self.resolve_peer = resolve_peer
        self.persist = persist
        self.replica = replica
        self.p2p = p2p
        self.executor = executor
        self.sync = sync
        self.guard_path = guard_path
        self._guard = GuardFile(guard_path)
        self.clock_ms = clock_ms
        self.evidence: list[Evidence] = []
        self.counters: collections.Counter[str] = collections.Counter()
        self.on_commit: list[Callable[[Block, CommitCertificate, Executed], None]] = []
        self.on_evidence: list[Callable[[Evidence], None]] = []  # e.g. persist it (node.store.EvidenceStore)
        self.committed = trio.Event()  # replaced after every commit: await for "next block"
        self._send, self._receive = trio.open_memory_channel[Input | None](input_queue)
        self._ready_txs: list[Tx] = []
        self._internal: collections.deque[Input] = collections.deque()
        self._nursery: trio.Nursery | None = None
        self._deferred_guard: bytes | None = None  # newest Persist not yet written (see _perform)
        p2p.on(CHANNEL_CONSENSUS, self._on_consensus_frame)

    # ----------------------------------------------------------- inputs in

    async def _on_consensus_frame(self, peer: bytes, channel: int, payload: bytes) -> None:
        await self._send.send(MessageReceived(peer, payload))

    def transactions_ready(self, txs: list[Tx]) -> None:
        """Mempool callback: hand verified txs to the replica soon (never blocks)."""
        self._ready_txs.extend(txs)
        try:
            self._send.send_nowait(None)  # wake the loop; if full it is busy anyway
        except trio.WouldBlock:
            pass

    # ------------------------------------------------------------- the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._perform(self.replica.start(self.clock_ms()))
            nursery.start_soon(self._catch_up_loop)
            task_status.started()
            while True:
                await self._drain_internal()
                if self._ready_txs:
                    txs, self._ready_txs = self._ready_txs, []
                    await self._handle(TransactionsVerified(tuple(txs)))
                    continue
                event = await self._receive.receive()
                if event is not None:
                    await self._handle(event)

    async def _drain_internal(self) -> None:
        while self._internal:
            await self._handle(self._internal.popleft())

    async def _handle(self, event: Input) -> None:
        effects = self.replica.handle(event, self.clock_ms())
        await self._perform(effects)

    async def _perform(self, effects: list[Effect]) -> None:
        for index, effect in enumerate(effects):
            if isinstance(effect, Persist):
                if self.persist:
                    # Each Persist carries the WHOLE replica state, so a later one
                    # supersedes an earlier one. A Persist with no message after it
                    # in its list (e.g. after a commit: pruned records) protects
                    # nothing that left the node yet: keep it pending and write it
                    # before the next message leaves (or drop it when a newer
                    # Persist comes first). One fsync'd guard write per height saved.
                    if any(isinstance(later, (Broadcast, Send)) for later in effects[index + 1:]):
                        self._deferred_guard = None
                        await self._save_guard(effect.state)
                    else:
                        self._deferred_guard = effect.state
                        self.counters["persists_deferred"] += 1
            elif isinstance(effect, Broadcast):
                await self._flush_guard()
                self.p2p.broadcast(CHANNEL_CONSENSUS, effect.data)
            elif isinstance(effect, Send):
                await self._flush_guard()
                self.p2p.send(self.resolve_peer(effect.to_public_key), CHANNEL_CONSENSUS, effect.data)
            elif isinstance(effect, Commit):
                await self._commit(effect.block, effect.certificate)
            elif isinstance(effect, ScheduleTimeout):
                assert self._nursery is not None
                self._nursery.start_soon(self._timer, effect.delay_ms, effect.timeout)
            elif isinstance(effect, FetchBlocks):
                assert self._nursery is not None
                self._nursery.start_soon(self._fetch, effect.peer, effect.from_height, effect.to_height)
            elif isinstance(effect, Evidence):
                self.counters["evidence"] += 1
                if len(self.evidence) < MAX_EVIDENCE:
                    self.evidence.append(effect)
                log.warning("evidence of double signing", validator=effect.public_key.hex()[:16],
                            kind=effect.kind, view=effect.view, height=effect.height)
                for evidence_listener in self.on_evidence:
                    evidence_listener(effect)

    async def _save_guard(self, state: bytes) -> None:
        # Written as the replica encoded it: it already dropped the block bytes
        # of its PROPOSAL records at executed heights (`Replica._strip_proposal_bytes`),
        # which is safe because `_commit` reports BlockExecuted only after the
        # block's write is durable. On the event loop, not in a worker thread: a save is one pwrite + one
        # fdatasync (~1–3 ms here), while a worker-thread round trip waits twice
        # for the GIL behind a busy loop (measured ~6.5 ms extra per save at half
        # load, 3 saves on each height's critical path). Nothing may leave the
        # node before the save is durable anyway.
        started = time.perf_counter()
        self._guard.save(state)
        self.counters["persists"] += 1
        self.counters["persist_us"] += int((time.perf_counter() - started) * 1e6)

    async def _flush_guard(self) -> None:
        """Write a deferred guard state before a message leaves (see `_perform`)."""
        if self._deferred_guard is not None:
            state, self._deferred_guard = self._deferred_guard, None
            await self._save_guard(state)

    async def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        # Execute and write (synced) on the loop: the only writer, in height order.
        # Nothing is reported (BlockExecuted, listeners) before the write is
        # durable, and the driver handles no other input until then. Not in a
        # worker thread: the round trip waits twice for the GIL behind the busy
        # loop — measured at half load ~10 ms on top of a ~7 ms synced write, on
        # every height's critical path (the next proposal needs BlockExecuted).
        started = time.perf_counter()
        executed, batch = self.executor.prepare(block, certificate)
        prepared = time.perf_counter()
        self.executor.write(block.height, batch)
        written = time.perf_counter()
        self.executor.finish(block, executed)
        # time spent per stage, summed (µs; /status "driver"): where a height's time goes
        self.counters["execute_us"] += int((prepared - started) * 1e6)
        self.counters["block_write_us"] += int((written - prepared) * 1e6)
        # a governance validator-set change executed in this block goes to consensus
        # (it schedules the set after the next checkpoint boundary); the executor
        # already recorded it in the block's batch, so a restart rebuilds the same
        # schedule (`BlockStore.chain_tip` → `ChainTip.validator_schedule`)
        self._internal.append(BlockExecuted(executed.height, executed.app_hash, executed.receipts_root,
                                            validator_update=executed.validator_update))
        self.counters["commits"] += 1
        if self.counters["commits"] % STAGE_LOG_EVERY == 0:
            c = self.counters
            log.info("driver stage times", commits=c["commits"], execute_ms_per_block=round(
                c["execute_us"] / c["commits"] / 1000, 2), block_write_ms_per_block=round(
                c["block_write_us"] / c["commits"] / 1000, 2), persists=c["persists"],
                persist_ms_each=round(c["persist_us"] / max(1, c["persists"]) / 1000, 2))
        for listener in self.on_commit:
            listener(block, certificate, executed)
        self._last_commit_time = trio.current_time()
        event, self.committed = self.committed, trio.Event()
        event.set()

    async def _timer(self, delay_ms: int, timeout: TimeoutFired) -> None:
        await trio.sleep(delay_ms / 1000)
        await self._send.send(timeout)

    async def _fetch(self, peer: bytes, first: int, last: int) -> None:
        blocks = await self.sync.fetch(self.resolve_peer(peer), first, last)
        await self._send.send(BlocksFetched(peer, tuple(blocks)))

    async def _catch_up_loop(self) -> None:
        """Block sync for a node that is behind while it has nothing to vote on.

        The replica fetches when it sees work beyond its window or times out
        with work pending; an idle lagging node (e.g. restarted, or an
        observer) learns nothing that way. So when no block committed for
        `catch_up_interval_s`, ask a peer (the one the replica saw ahead,
        else a random one) for the next certified blocks; the replica
        verifies whatever comes back like any fetched block.
        """
        while True:
            await trio.sleep(self.catch_up_interval_s)
            if trio.current_time() - self._last_commit_time < self.catch_up_interval_s:
                continue
            peers = self.p2p.peer_keys()
            if not peers:
                continue
            ahead = self.replica.ahead_peer if self.replica.ahead_height > self.replica.committed else None
            peer = self.resolve_peer(ahead) if ahead is not None else self._random.choice(peers)
            while True:
                first = self.replica.committed + 1
                blocks = await self.sync.fetch(peer, first, first + 127)
                if not blocks:
                    break
                self.counters["catch_up_blocks"] += len(blocks)
                await self._send.send(BlocksFetched(peer, tuple(blocks)))
                target = blocks[-1][0].height
                with trio.move_on_after(10 * self.catch_up_interval_s):
                    while self.replica.committed < target:
                        await self.committed.wait()
                if self.replica.committed < target:
                    break
