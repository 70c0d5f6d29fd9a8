"""The consensus driver: the single owner of the `Replica`.

It feeds inputs one at a time and performs each returned effect IN ORDER:

- `Persist`  → write + fsync `priv_validator_state` (tmp file, fsync, rename,
  fsync dir) BEFORE any later message leaves the node: this is the
  double-sign guard. (A Persist with no message after it in its list is
  written just before the next message instead, or superseded by a newer one.)
- `Broadcast` / `Send` → p2p consensus channel (high priority queue).
- `Commit` → the executor runs and persists the block; `BlockExecuted` is fed
  back before anything else from outside (the next header depends on it).
- `ScheduleTimeout` → a timer task delivers the `TimeoutFired` later.
- `FetchBlocks` → a sync task delivers `BlocksFetched` (maybe empty).
- `Evidence` → kept for RPC and metrics.

An `InvariantViolation` or `ExecutionError` propagates and stops the node
(halting beats running on after our state diverged).
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
from typing import Callable

import msgpack
import structlog
import trio

from consensus.effects import (
    Broadcast, Commit, Effect, Evidence, FetchBlocks, Persist, ScheduleTimeout, Send,
)
from consensus.inputs import (
    BlockExecuted, BlocksFetched, Input, MessageReceived, TimeoutFired, TransactionsVerified,
)
from consensus.errors import ConsensusError
from consensus.persist import STATE_VERSION as PERSISTED_STATE_VERSION, PersistedState
from consensus.replica import Replica
from ledger.types import Block, CommitCertificate, Tx

from node.executor import Executed, Executor
from node.p2p import CHANNEL_CONSENSUS, P2P
from node.sync import BlockSync

log = structlog.get_logger("careledger.driver")

MAX_EVIDENCE = 1000


GUARD_FORMAT = "careledger/priv_validator_state/v1"


def save_guard_state(path: str, data: bytes) -> None:
    """Atomically replace `path` with the replica state `data` (JSON wrapper,
    CometBFT's file name), durable before returning: tmp, fsync, rename, fsync dir."""
    tmp = path + ".tmp"
    body = json.dumps({"format": GUARD_FORMAT, "state": data.hex()}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def trim_guard_state(state: bytes, durable_height: int) -> bytes:
    """`state` (an encoded `PersistedState`) without the block bytes of PROPOSAL
    records at heights ≤ `durable_height`; their digests stay.

    The replica keeps what it signed for ~2K+W heights and re-sends a stored
    proposal only for its open slot (committed + 1), in case a crash lost
    unsynced blocks. This driver writes every block synced before it reports
    it executed, so after any restart the slot is above `durable_height`: those
    bytes (a whole block each; the primary's guard file would carry ~2K+W
    blocks, fsync'd several times per height) can never be needed, while the
    digests keep refusing any conflicting signature. Anything unexpected is
    returned unchanged.
    """
    try:
        wire = msgpack.unpackb(state, raw=False, strict_map_key=False)
        # [version, view, active, records, ...]: touch only the records list
        if not isinstance(wire, list) or len(wire) < 4 or wire[0] != PERSISTED_STATE_VERSION:
            return state
        records = wire[3]
        if not isinstance(records, list):
            return state
        changed = False
        for record in records:
            if (isinstance(record, list) and len(record) == 5 and record[0] == "proposal"
                    and isinstance(record[2], int) and 0 < record[2] <= durable_height and record[4]):
                record[4] = b""
                changed = True
    except (ValueError, TypeError, msgpack.UnpackException):
        return state
    return msgpack.packb(wire, use_bin_type=True) if changed else state


def load_guard_state(path: str) -> PersistedState | None:
    """The last persisted consensus state, or None if never written.

    Raises ConsensusError if the file is corrupt (refuse to start: signing
    without the guard could double-sign).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    try:
        body = json.loads(raw)
        if body.get("format") != GUARD_FORMAT:
            raise ValueError("unknown format %r" % body.get("format"))
        data = bytes.fromhex(body["state"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConsensusError("corrupt double-sign guard file %s: %s" % (path, exc)) from exc
    return PersistedState.decode(data)


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
        self.clock_ms = clock_ms
        self.evidence: list[Evidence] = []
        self.counters: collections.Counter[str] = collections.Counter()
        self.on_commit: list[Callable[[Block, CommitCertificate, Executed], None]] = []
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

    async def _save_guard(self, state: bytes) -> None:
        if self.executor is not None:
            state = trim_guard_state(state, self.executor.height)  # blocks durable on disk
        await trio.to_thread.run_sync(save_guard_state, self.guard_path, state)
        self.counters["persists"] += 1

    async def _flush_guard(self) -> None:
        """Write a deferred guard state before a message leaves (see `_perform`)."""
        if self._deferred_guard is not None:
            state, self._deferred_guard = self._deferred_guard, None
            await self._save_guard(state)

    async def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        # Execute on the loop (the only writer, in height order), then the synced
        # LevelDB write in a worker thread: the loop keeps admitting and gossiping
        # txs meanwhile. Nothing is reported (BlockExecuted, listeners) before the
        # write is durable, and the driver handles no other input until then.
        executed, batch = self.executor.prepare(block, certificate)
        await trio.to_thread.run_sync(self.executor.write, block.height, batch)
        self.executor.finish(block, executed)
        # a governance validator-set change executed in this block goes to consensus
        # (it schedules the set after the next checkpoint boundary); the executor
        # already recorded it in the block's batch, so a restart rebuilds the same
        # schedule (`BlockStore.chain_tip` → `ChainTip.validator_schedule`)
        self._internal.append(BlockExecuted(executed.height, executed.app_hash, executed.receipts_root,
                                            validator_update=executed.validator_update))
        self.counters["commits"] += 1
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
