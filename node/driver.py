"""The consensus driver: the single owner of the `Replica`.

It feeds inputs one at a time and performs each returned effect IN ORDER:

- `Persist`  → write + fsync `priv_validator_state` (tmp file, fsync, rename,
  fsync dir) BEFORE any later effect of the list leaves the node: this is the
  double-sign guard.
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
        for effect in effects:
            if isinstance(effect, Persist):
                if self.persist:
                    await trio.to_thread.run_sync(save_guard_state, self.guard_path, effect.state)
                    self.counters["persists"] += 1
            elif isinstance(effect, Broadcast):
                self.p2p.broadcast(CHANNEL_CONSENSUS, effect.data)
            elif isinstance(effect, Send):
                self.p2p.send(self.resolve_peer(effect.to_public_key), CHANNEL_CONSENSUS, effect.data)
            elif isinstance(effect, Commit):
                self._commit(effect.block, effect.certificate)
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

    def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        executed = self.executor.execute(block, certificate)
        self._internal.append(BlockExecuted(executed.height, executed.app_hash, executed.receipts_root))
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
