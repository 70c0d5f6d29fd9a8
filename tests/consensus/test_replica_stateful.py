"""Hypothesis stateful test of the pure core: any interleaving of honest votes,
garbage, duplicates and timeouts keeps a 4-replica cluster safe."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from consensus.effects import Broadcast, Commit, ScheduleTimeout
from consensus.inputs import BlockExecuted, MessageReceived, TransactionsVerified
from consensus.replica import Replica
from ledger.hashing import sha256

from tests.consensus.helpers import KEYS, config, tx


class Cluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.replicas = [Replica(config(), k) for k in KEYS]
        self.inbox: list[tuple[int, bytes, bytes]] = []
        self.timers: list[tuple[int, object]] = []
        self.chains: list[list[bytes]] = [[] for _ in KEYS]
        self.now = 0
        self.nonce = 0
        for i, r in enumerate(self.replicas):
            self._perform(i, r.start(0))

    def _perform(self, i: int, effects: list) -> None:  # type: ignore[type-arg]
        for e in effects:
            if isinstance(e, Broadcast):
                self.inbox += [(j, KEYS[i].public_key, e.data) for j in range(4) if j != i]
            elif isinstance(e, ScheduleTimeout):
                self.timers.append((i, e.timeout))
            elif isinstance(e, Commit):
                self.chains[i].append(e.block.hash)
                h = e.block.height
                self._perform(i, self.replicas[i].handle(BlockExecuted(h, sha256(e.block.hash), sha256(b"r")), self.now))

    @rule(count=st.integers(1, 3))
    def submit(self, count: int) -> None:
        txs = []
        for _ in range(count):
            self.nonce += 1
            txs.append(tx(self.nonce))
        for i, r in enumerate(self.replicas):
            self._perform(i, r.handle(TransactionsVerified(tuple(txs)), self.now))

    @rule(pick=st.integers(0, 10_000), duplicate=st.booleans())
    def deliver(self, pick: int, duplicate: bool) -> None:
        if not self.inbox:
            return
        j, sender, data = self.inbox[pick % len(self.inbox)] if duplicate else self.inbox.pop(pick % len(self.inbox))
        self.now += 1
        self._perform(j, self.replicas[j].handle(MessageReceived(sender, data), self.now))

    @rule(pick=st.integers(0, 10_000))
    def fire_timer(self, pick: int) -> None:
        if not self.timers:
            return
        i, timeout = self.timers.pop(pick % len(self.timers))
        self.now += 100
        self._perform(i, self.replicas[i].handle(timeout, self.now))  # type: ignore[arg-type]

    @rule(j=st.integers(0, 3), junk=st.binary(max_size=64))
    def garbage(self, j: int, junk: bytes) -> None:
        self._perform(j, self.replicas[j].handle(MessageReceived(KEYS[0].public_key, junk), self.now))

    @invariant()
    def agreement(self) -> None:
        for a in self.chains:
            for b in self.chains:
                assert all(x == y for x, y in zip(a, b))


TestCluster = Cluster.TestCase
TestCluster.settings = settings(max_examples=40, stateful_step_count=40, deadline=None, derandomize=True)
