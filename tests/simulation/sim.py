"""Deterministic cluster simulator for the pure PBFT replicas.

One seed drives everything (`random.Random(seed)`): virtual clock, network
(delay, loss, duplication, reordering, partitions forming and healing, one-way
links), crashes and restarts with a disk that loses unsynced block writes, and
byzantine behaviour (Twins, equivocating primary, silent replica, garbage and
replayed messages; in the "stale-proposal" scenario a new primary that sends
fresh proposals for each replica's slot before its NEW-VIEW). Invariants are
checked at every commit; the same seed replays byte for byte (`Result.trace_hash`).

Used by `tests/simulation/` and `scripts/simulate.py`.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field, replace
from typing import Any

from consensus.config import ConsensusConfig
from consensus.effects import Broadcast, Commit, Evidence, FetchBlocks, Persist, ScheduleTimeout, Send
from consensus.errors import ConsensusError
from consensus.inputs import BlockExecuted, BlocksFetched, MessageReceived, TimeoutFired, TransactionsVerified
from consensus.messages import CommitVote, Decided, NewView, Prepare, Proposal, ViewChange, Checkpoint, decode_message
from consensus.persist import ChainTip, PersistedState
from consensus.replica import Replica
from consensus.history import History
from ledger import codec
from ledger.crypto import PrivateKey, is_valid
from ledger.hashing import sha256
from ledger.types import Block, Header, Tx, Validator, ValidatorSet, commit_vote_payload, compute_tx_root

CHAIN_ID = "careledger-sim"
FAULT_MODES = ("none", "crash", "network", "byzantine", "all")
SCENARIOS = ("primary-crash", "twin-primary", "restart-all", "validator-change", "long-partition-no-load",
             "boundary-primary-crash", "stale-proposal")
TWINS_VIEWS = 12  # views with a scheduled Twins partition (higher views are fully connected)

_VERIFY_CACHE: dict[tuple[bytes, str, str, bytes, bytes], bool] = {}


def cached_verify(public_key: bytes, kind: str, chain_id: str, payload: bytes, signature: bytes) -> bool:
    """`ledger.crypto.is_valid`, memoised (verification is a pure function)."""
    key = (public_key, kind, chain_id, payload, signature)
    hit = _VERIFY_CACHE.get(key)
    if hit is None:
        if len(_VERIFY_CACHE) > 300_000:
            _VERIFY_CACHE.clear()
        hit = _VERIFY_CACHE[key] = is_valid(public_key, kind, chain_id, payload, signature)
    return hit


def validator_key(index: int) -> PrivateKey:
    return PrivateKey(sha256(b"careledger-sim-validator-%d" % index))


CLIENT_KEYS = [PrivateKey(sha256(b"careledger-sim-client-%d" % i)) for i in range(4)]
CLIENT_PUBS = [k.public_key for k in CLIENT_KEYS]


@dataclass
class Disk:
    """A node's disk: consensus state is fsync'd; block writes are synced lazily."""

    state: bytes | None = None
    blocks: list[tuple[Block, Any, bytes, bytes]] = field(default_factory=list)  # block, cert, app, receipts
    synced: int = 0

    def crash(self) -> int:
        """Lose unsynced writes; a block without its execution results was never written
        (the node stores block, certificate and state in one batch)."""
        keep = self.synced
        while keep and self.blocks[keep - 1][2] == b"":
            keep -= 1
        lost = len(self.blocks) - keep
        del self.blocks[keep:]
        self.synced = keep
        return lost


@dataclass
class Node:
    index: int
    key: PrivateKey
    honest: bool
    replica: Replica | None = None
    alive: bool = True
    incarnation: int = 0
    disk: Disk = field(default_factory=Disk)
    committed: list[bytes] = field(default_factory=list)  # block hashes from height 1 (this incarnation's view of the chain)
    tx_seen: set[bytes] = field(default_factory=set)
    silent: bool = False
    equivocate: bool = False
    pub: bytes = b""

    def __post_init__(self) -> None:
        self.pub = self.key.public_key


@dataclass
class Result:
    seed: int
    heights: int
    messages: int
    faults: int
    checks: int
    violations: list[str]
    events: int
    virtual_ms: int
    trace_hash: str
    longest_view_change_ms: int
    prepared_ahead: int = 0  # moments an honest replica PREPAREd h+1 before committing h


class Simulation:
    def __init__(self, seed: int, validators: int = 4, heights: int = 20, faults: str = "all",
                 quorum_override: int | None = None, heal_after_ms: int = 8_000,
                 progress_bound_ms: int = 120_000, scenario: str | None = None,
                 checkpoint_interval: int = 5, pipeline: int = 1) -> None:
        """`pipeline` W: heights in flight, with results lag L = W (header h
        carries the results of h − W). 1 is the unpipelined chain."""
        if faults not in FAULT_MODES:
            raise ValueError("faults must be one of %s" % (FAULT_MODES,))
        if scenario is not None and scenario not in SCENARIOS:
            raise ValueError("scenario must be one of %s" % (SCENARIOS,))
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = validators
        self.f = (validators - 1) // 3
        self.target = heights
        self.faults_mode = faults
        self.heal_at = heal_after_ms if faults != "none" else 0
        if scenario in ("long-partition-no-load", "stale-proposal"):
            self.heal_at = heal_after_ms  # the partition (held-back commits) itself is the fault
        self.deadline = self.heal_at + progress_bound_ms
        self.scenario = scenario
        rng = self.rng
        self.vset = ValidatorSet(tuple(Validator("v%d" % i, validator_key(i).public_key) for i in range(validators)))
        self.config = ConsensusConfig(
            CHAIN_ID, self.vset, genesis_app_hash=sha256(b"genesis"), max_batch_txs=rng.choice([1, 4, 16]),
            batch_timeout_ms=rng.choice([5, 20, 50]), pipeline_window=4, checkpoint_interval=checkpoint_interval,
            base_timeout_ms=rng.choice([300, 500, 800]), max_timeout_ms=4_000, fetch_timeout_ms=400,
            quorum_override=quorum_override,
            results_lag=pipeline, max_in_flight=pipeline,
        )
        if pipeline > self.config.pipeline_window:
            self.config = replace(self.config, pipeline_window=pipeline)
        self.lag = pipeline
        byz = faults in ("byzantine", "all")
        self.byzantine_mode = rng.choice(["twins", "equivocate", "silent", "twins"]) if byz else None
        if scenario == "twin-primary":
            self.byzantine_mode = "twins"
        if scenario == "stale-proposal":
            self.byzantine_mode = "stale-proposal"
        self.nodes: list[Node] = [Node(i, validator_key(i), True) for i in range(validators)]
        self.byzantine_keys: set[bytes] = set()
        # primary-crash and long-partition-no-load already take one node out (crashed
        # for good / isolated): that node is the byzantine one, so faults stay within f
        doomed = {"primary-crash": 0, "long-partition-no-load": validators - 1}.get(scenario or "")
        if self.byzantine_mode == "twins":
            twin_of = 0 if scenario == "twin-primary" else rng.randrange(validators)
            if doomed is not None:
                twin_of = doomed
            self.nodes[twin_of].honest = False
            self.nodes.append(Node(validators, validator_key(twin_of), False))
            self.byzantine_keys.add(validator_key(twin_of).public_key)
            self.twins = (twin_of, validators)
        elif self.byzantine_mode in ("equivocate", "silent"):
            bad = rng.randrange(validators)
            if doomed is not None:
                bad = doomed
            self.nodes[bad].honest = False
            self.nodes[bad].silent = self.byzantine_mode == "silent"
            self.nodes[bad].equivocate = self.byzantine_mode == "equivocate"
            self.byzantine_keys.add(self.nodes[bad].pub)
        # "stale-proposal": one byzantine validator S and 2f honest "victims". Until S
        # sends a NEW-VIEW (or the faults heal), the network holds back from the
        # victims every COMMIT, Decided, checkpoint and fetched block for heights
        # >= stall_height from the others (S withholds its own COMMITs from them), and
        # proposals and PREPAREs above stall_height between victims and the others,
        # so that height gets certified at S and the other honest replicas only,
        # nothing above it is prepared, and the victims (prepared at it) time out
        # into view changes. When S becomes primary of a view it first sends every
        # replica a fresh, correctly signed proposal of that view for the replica's
        # slot (and, W > 1, the heights above), built on the replica's committed
        # chain with other transactions, then its NEW-VIEW, then its COMMITs for
        # those blocks. 2f victims + S are a quorum: a replica that votes on a
        # proposal the NEW-VIEW puts below its target commits a block conflicting
        # with the certified one (the bug fixed in 8ce0310).
        self.stale: Node | None = None
        self.victims: set[int] = set()
        self.stall_height = 0
        self.holding = False
        self.held: list[tuple[Node, Node, bytes]] = []
        self.stale_views: set[int] = set()
        self.stale_attacks: list[tuple[int, int]] = []  # (view, replicas sent fresh proposals)
        self.stale_armed = 0  # attacks while stall_height was certified but 2f victims lacked it
        self.fresh_blocks: dict[tuple[bytes, int, int], Block] = {}
        self.stale_release_ms = 0
        if self.byzantine_mode == "stale-proposal":
            bad = rng.randrange(validators)
            self.stale = self.nodes[bad]
            self.stale.honest = False
            self.byzantine_keys.add(self.stale.pub)
            others = [i for i in range(validators) if i != bad]
            rng.shuffle(others)
            self.victims = set(others[:2 * self.f])
            self.stall_height = rng.randrange(1, max(2, min(heights // 2, 6)))
            self.stale_release_ms = rng.choice([0, 100, 500, 2_000])
            self.holding = True
        # Validator-set changes: the fake executor returns `validator_update` when it
        # executes a height listed here (a governance transaction, deterministic on
        # every node). A follower (key index n) starts as a non-validator observer.
        self.set_updates: dict[int, ValidatorSet] = {}
        self.follower: Node | None = None
        if scenario in ("validator-change", "boundary-primary-crash"):
            k = checkpoint_interval
            follower_key = validator_key(validators)
            grown = ValidatorSet(self.vset.validators + (Validator("v%d" % validators, follower_key.public_key),))
            self.set_updates = {k - 2: grown, 2 * k + 1: self.vset}  # in force from k+1, then from 3k+1
            self.follower = Node(len(self.nodes), follower_key, True)
            self.nodes.append(self.follower)
        self.truth: list[tuple[int, ValidatorSet]] = [(1, self.vset)]
        for h, vset in sorted(self.set_updates.items()):
            self.truth.append((self.boundary(h) + 1, vset))
        self.isolated: set[int] = set()
        # Twins (§A.3): per view, which side of a two-way partition each instance is on;
        # a message of view v is delivered only inside v's partition (until healed).
        self.twins_schedule: dict[int, set[tuple[int, int]]] = {}
        if self.byzantine_mode == "twins":
            self.twins_schedule = {v: self.twins_partition() for v in range(TWINS_VIEWS)}
        self.net_faults = faults in ("network", "all")
        self.crash_faults = faults in ("crash", "all")
        self.loss = rng.choice([0.0, 0.01, 0.05]) if self.net_faults else 0.0
        self.dup = rng.choice([0.0, 0.02, 0.1]) if self.net_faults else 0.0
        self.delay_mean = rng.choice([5, 20, 60]) if self.net_faults else 10
        self.blocked: set[tuple[int, int]] = set()
        self.queue: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.now = 0
        self.messages = 0
        self.faults = 0
        self.checks = 0
        self.events = 0
        self.violations: list[str] = []
        self.canonical: dict[int, bytes] = {}
        self.app_roots: dict[int, bytes] = {}
        self.signed_by_honest: dict[tuple[bytes, str, int, int], bytes] = {}
        self.captured: list[bytes] = []
        self.trace = hashlib.sha256()
        self.tx_counter = 0
        self.committed_txs: dict[bytes, int] = {}
        self.view_change_started: int | None = None
        self.longest_view_change = 0
        self.quiet = False
        self.catch_up_ms: int | None = None
        self.boundary_new_views = 0  # NEW-VIEWs whose VIEW-CHANGEs span a validator-set change
        # "boundary-primary-crash": (boundary height, view, crashed node) for each set
        # boundary whose first height's primary was crashed the moment it was committed
        self.boundary_crashes: list[tuple[int, int, int]] = []
        self.prepared_ahead = 0  # honest PREPAREs for h+1 (or higher) sent before committing h
        self.multi_height_new_views = 0  # honest NEW-VIEWs re-proposing two or more heights
        self.in_flight_at_crash: list[int] = []  # per crash: heights the victim had in flight

    # ------------------------------------------------------- validator sets

    def boundary(self, height: int) -> int:
        """The checkpoint after which an update executed at `height` takes effect:
        the first multiple of K that is ≥ height + L."""
        k = self.config.checkpoint_interval
        return -(-(height + self.config.results_lag) // k) * k

    def set_for(self, height: int) -> ValidatorSet:
        """Ground truth: the validator set in force at `height`."""
        current = self.truth[0][1]
        for start, vset in self.truth:
            if start <= height:
                current = vset
        return current

    # ----------------------------------------------------------- scheduling

    def push(self, at: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, payload))

    def honest_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.honest]

    # ------------------------------------------------------------- running

    def run(self) -> Result:
        for node in self.nodes:
            self.boot(node)
        self.push(0, "tx", None)
        if self.heal_at:
            self.plan_faults()
        try:
            while self.queue and not self.violations:
                at, _, kind, payload = heapq.heappop(self.queue)
                if at > self.deadline:
                    break
                self.now = at
                self.events += 1
                self.trace.update(b"%d:%s;" % (at, kind.encode()))
                self.dispatch(kind, payload)
                if self.now >= self.heal_at and self.done():
                    break
        except ConsensusError as exc:
            self.violations.append("replica raised %s: %s" % (type(exc).__name__, exc))
        if not self.violations and not self.done():
            low = min([len(n.committed) for n in self.honest_nodes() if n.alive] or [0])
            self.violations.append("no progress: lowest honest height %d < %d by %d ms (healed at %d)"
                                   % (low, self.target, self.now, self.heal_at))
        self.final_checks()
        return Result(self.seed, min(len(n.committed) for n in self.honest_nodes()), self.messages,
                      self.faults, self.checks, self.violations, self.events, self.now,
                      self.trace.hexdigest(), self.longest_view_change, self.prepared_ahead)

    def done(self) -> bool:
        """Every live honest node reached the target (nodes crashed for good, as in the
        primary-crash scenario, are faulty from then on)."""
        live = [n for n in self.honest_nodes() if n.alive]
        if self.scenario == "long-partition-no-load":
            # the rejoined replica must reach everyone's height, not just the target
            if self.isolated or len({len(n.committed) for n in live}) != 1:
                return False
        return len(live) >= self.n - self.f - (0 if self.byzantine_mode is None else 1) and \
            all(len(n.committed) >= self.target for n in live)

    def dispatch(self, kind: str, payload: Any) -> None:
        if kind == "deliver":
            dst, src_key, data, inc = payload
            node = self.nodes[dst]
            if node.alive and node.incarnation == inc:
                self.messages += 1
                self.feed(node, MessageReceived(src_key, data))
        elif kind == "timeout":
            idx, inc, timeout = payload
            node = self.nodes[idx]
            if node.alive and node.incarnation == inc:
                self.feed(node, timeout)
        elif kind == "execute":
            idx, inc, height = payload
            node = self.nodes[idx]
            if node.alive and node.incarnation == inc:
                self.execute(node, height)
        elif kind == "fetched":
            idx, inc, event = payload
            node = self.nodes[idx]
            if node.alive and node.incarnation == inc:
                self.feed(node, event)
        elif kind == "tx":
            self.make_tx()
        elif kind == "crash":
            self.crash(self.nodes[payload])
        elif kind == "restart":
            self.restart(self.nodes[payload])
        elif kind == "partition":
            self.blocked = payload
            self.faults += 1
        elif kind == "garbage":
            self.inject_garbage()
        elif kind == "heal-isolation":
            self.isolated = set()
        elif kind == "release":
            self.release_held()

    # ---------------------------------------------------------------- nodes

    def boot(self, node: Node) -> None:
        disk = node.disk
        restored = PersistedState.decode(disk.state) if disk.state is not None else None
        tip = None
        if disk.blocks:
            history = History.from_hashes([b.hash for b, _, _, _ in disk.blocks])
            block, cert, app, receipts = disk.blocks[-1]
            txs = frozenset(tx.hash for b, _, _, _ in disk.blocks for tx in b.txs)
            schedule = tuple((self.boundary(h) + 1, vset) for h, vset in sorted(self.set_updates.items())
                             if h <= block.height)
            lagged = tuple((b.height, a, r) for b, _, a, r in disk.blocks[-self.lag:-1])
            tip = ChainTip(block.height, block.hash, block.header.time, history, app, receipts, cert,
                           schedule, txs, lagged_results=lagged)
        node.replica = Replica(self.config, node.key, restored=restored, last_commit=tip, verifier=cached_verify)
        node.committed = [b.hash for b, _, _, _ in disk.blocks]
        node.tx_seen = {tx.hash for b, _, _, _ in disk.blocks for tx in b.txs}
        node.alive = True
        self.perform(node, node.replica.start(self.now))
        # the mempool re-gossips what it holds after a restart
        pending = [tx for tx in self.all_txs if tx.hash not in node.tx_seen] if hasattr(self, "all_txs") else []
        if pending:
            self.feed(node, TransactionsVerified(tuple(pending[-200:])))

    def feed(self, node: Node, event: Any) -> None:
        assert node.replica is not None
        before = node.replica.counters.get("view_changes_started", 0)
        self.perform(node, node.replica.handle(event, self.now))
        if node.honest and self.view_change_started is None and \
                node.replica.counters.get("view_changes_started", 0) > before:
            self.view_change_started = self.now

    def perform(self, node: Node, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                node.disk.state = effect.state
                node.disk.synced = len(node.disk.blocks)  # fsync flushes earlier writes too
            elif isinstance(effect, Broadcast):
                self.on_send(node, None, effect.data)
            elif isinstance(effect, Send):
                self.on_send(node, effect.to_public_key, effect.data)
            elif isinstance(effect, Commit):
                self.on_commit(node, effect)
            elif isinstance(effect, ScheduleTimeout):
                self.push(self.now + effect.delay_ms, "timeout", (node.index, node.incarnation, effect.timeout))
            elif isinstance(effect, FetchBlocks):
                self.on_fetch(node, effect)
            elif isinstance(effect, Evidence):
                if effect.public_key not in self.byzantine_keys and not self.quorum_weakened():
                    self.violations.append("evidence against honest validator %s" % effect.public_key.hex()[:8])

    def quorum_weakened(self) -> bool:
        return self.config.quorum_override is not None

    # -------------------------------------------------------------- network

    def link_up(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked and src not in self.isolated and dst not in self.isolated

    def on_send(self, node: Node, to: bytes | None, data: bytes) -> None:
        try:
            msg: Any = decode_message(data)
        except Exception:  # noqa: BLE001 - simulator inspecting its own traffic
            msg = None
        if node.honest:
            self.check_no_double_sign(node, data, msg)
            if isinstance(msg, Prepare) and msg.sender == node.pub and msg.height > len(node.committed) + 1:
                self.prepared_ahead += 1  # heights really are in flight
            if isinstance(msg, NewView) and msg.sender == node.pub and msg.reproposals:
                self.multi_height_new_views += 1  # a view change re-proposed several heights in flight
            if self.set_updates and isinstance(msg, NewView) and msg.sender == node.pub:
                slots = [vc.committed_height + 1 for vc in msg.view_changes]
                if len({self.set_for(h).hash for h in slots + [max(slots)]}) > 1:
                    self.boundary_new_views += 1
        if node.silent:
            return
        if node.equivocate and to is None and isinstance(msg, Proposal):
            self.equivocate(node, data)
            return
        if node is self.stale and isinstance(msg, NewView) and msg.sender == node.pub \
                and msg.view not in self.stale_views:
            self.stale_views.add(msg.view)
            self.stale_new_view(node, msg, data)
            return
        if len(self.captured) < 500 and self.rng.random() < 0.05:
            self.captured.append(data)
        cut = self.twins_cut(msg)
        for other in self.nodes:
            if other is node or (to is not None and other.pub != to):
                continue
            if cut and (node.index, other.index) in cut:
                continue
            if self.holding and self.held_back(node, other, msg):
                self.held.append((node, other, data))
                continue
            self.transmit(node, other, data)

    # ------------------------------------------------- stale-proposal scenario

    def held_back(self, src: Node, dst: Node, msg: Any) -> bool:
        """Between victims and the others: commit evidence for heights >= stall_height
        to a victim, and proposals and PREPAREs above stall_height either way (so no
        height above it is prepared anywhere: with W > 1 a VIEW-CHANGE would carry it
        and the NEW-VIEW re-propose it)."""
        if (dst.index in self.victims) == (src.index in self.victims):
            return False
        if isinstance(msg, (Proposal, Prepare)):
            return msg.height > self.stall_height
        if dst.index not in self.victims:
            return False
        if isinstance(msg, (CommitVote, Checkpoint)):
            return msg.height >= self.stall_height
        if isinstance(msg, Decided):
            return msg.block.height >= self.stall_height
        return False

    def release_held(self) -> None:
        if not self.holding:
            return
        self.holding = False
        held, self.held = self.held, []
        for src, dst, data in held:
            self.transmit(src, dst, data)

    def lagged_results(self, node: Node, height: int) -> tuple[bytes, bytes] | None:
        """(app hash, receipts root) of an executed height, as every honest node has it."""
        if height == 0:
            return self.config.genesis_app_hash, self.config.genesis_receipts_root
        block_hash, app = self.canonical.get(height), self.app_roots.get(height)
        if (block_hash is None or app is None) and len(node.disk.blocks) >= height:
            block, _, app, receipts = node.disk.blocks[height - 1]
            return (app, receipts) if app else None
        return None if block_hash is None or app is None else (app, sha256(b"receipts" + block_hash))

    def fresh_chain(self, node: Node, dst: Node, view: int) -> list[Block]:
        """The byzantine primary's blocks of `view` for dst's slot and (W > 1) the heights
        above, chained on dst's committed tip, with transactions other than the
        certified block's (the same blocks for every replica with that tip)."""
        replica = dst.replica
        assert replica is not None
        slot = replica.committed + 1
        parent_hash, parent_time, history = replica.last_block_hash, replica.last_time, replica.history
        used = set(dst.tx_seen)
        blocks: list[Block] = []
        for height in range(slot, slot + self.lag):
            vset = self.set_for(height)
            if vset.primary(view).public_key != node.pub or vset != self.set_for(slot):
                break
            results = self.lagged_results(node, self.config.lagged_height(height))
            if results is None:
                break
            block = self.fresh_blocks.get((parent_hash, height, view))
            if block is None:
                certified = {tx.hash for n in self.nodes if len(n.disk.blocks) >= height
                             for tx in n.disk.blocks[height - 1][0].txs}
                txs: list[Tx] = []
                for tx in reversed(getattr(self, "all_txs", [])):
                    if tx.hash not in used and tx.hash not in certified:
                        txs.append(tx)
                        if len(txs) >= self.config.max_batch_txs:
                            break
                header = Header(CHAIN_ID, height, view, max(self.now, parent_time) + 1, parent_hash,
                                compute_tx_root(txs), results[1], results[0], vset.hash,
                                self.set_for(height + 1).hash, history.root, height - 1, node.pub)
                block = self.fresh_blocks[(parent_hash, height, view)] = Block(header, tuple(txs))
            blocks.append(block)
            used |= {tx.hash for tx in block.txs}
            parent_hash, parent_time, history = block.hash, block.header.time, history.append(block.hash)
        return blocks

    def stale_new_view(self, node: Node, nv: NewView, data: bytes) -> None:
        """Fresh proposals of the new view first, then the NEW-VIEW, then COMMITs for them."""
        sent = 0
        behind = [n for n in self.nodes
                  if n.index in self.victims and n.alive and len(n.committed) < self.stall_height]
        if len(behind) >= 2 * self.f and self.stall_height in self.canonical:
            self.stale_armed += 1
        for dst in self.nodes:
            if dst is node or not self.link_up(node.index, dst.index):
                continue
            blocks = self.fresh_chain(node, dst, nv.view) if dst.alive and dst.replica is not None else []
            at = self.now + 1 + int(self.rng.expovariate(1.0 / self.delay_mean))
            for offset, kind in ((0, Proposal), (1, None), (2, CommitVote)):
                if kind is None:
                    self.push(at + offset, "deliver", (dst.index, node.pub, data, dst.incarnation))
                    continue
                for block in blocks:
                    msg: Any = Proposal(node.pub, nv.view, block.height, block) if kind is Proposal else \
                        CommitVote(node.pub, nv.view, block.height, block.hash)
                    msg = replace(msg, signature=node.key.sign(msg.KIND, CHAIN_ID, msg.payload()))
                    self.push(at + offset, "deliver", (dst.index, node.pub, msg.encode(), dst.incarnation))
            sent += bool(blocks)
        self.stale_attacks.append((nv.view, sent))
        if self.holding:
            self.push(self.now + self.stale_release_ms, "release", None)

    def twins_cut(self, msg: Any) -> set[tuple[int, int]] | None:
        """The Twins partition of the message's view, while faults last."""
        if not self.twins_schedule or self.now >= self.heal_at or msg is None:
            return None
        if isinstance(msg, (Proposal, Prepare, CommitVote, NewView)):
            view = msg.view
        elif isinstance(msg, ViewChange):
            view = msg.new_view
        else:
            return None  # checkpoints and certified blocks carry no view
        return self.twins_schedule.get(view)

    def twins_partition(self) -> set[tuple[int, int]]:
        """One view's Twins schedule entry: the two instances of the twinned key on
        opposite sides of a two-way partition of the others (which instance is
        with the larger side varies), or, sometimes, no partition."""
        rng = self.rng
        a, b = self.twins
        if rng.random() < 0.2:
            return set()
        others = [i for i in range(len(self.nodes)) if i not in (a, b)]
        rng.shuffle(others)
        cut = rng.randrange(0, len(others) + 1)
        side_a = {a} | set(others[:cut])
        side_b = {b} | set(others[cut:])
        return {(x, y) for x in side_a for y in side_b} | {(y, x) for x in side_a for y in side_b}

    def transmit(self, src: Node, dst: Node, data: bytes) -> None:
        if not self.link_up(src.index, dst.index):
            return
        rng = self.rng
        copies = 1
        if self.now < self.heal_at:
            if rng.random() < self.loss:
                return
            if rng.random() < self.dup:
                copies = 2
        for _ in range(copies):
            delay = 1 + int(rng.expovariate(1.0 / self.delay_mean))
            self.push(self.now + delay, "deliver", (dst.index, src.pub, data, dst.incarnation))

    def equivocate(self, node: Node, data: bytes) -> None:
        """Byzantine primary: a second block for the same (view, height) to half the nodes."""
        p = decode_message(data)
        assert isinstance(p, Proposal)
        header = replace(p.block.header, time=p.block.header.time + 1)
        other = Proposal(p.sender, p.view, p.height, Block(header, p.block.txs))
        other = replace(other, signature=node.key.sign("proposal", CHAIN_ID, other.payload()))
        alt = other.encode()
        for i, dst in enumerate(n for n in self.nodes if n is not node):
            self.transmit(node, dst, data if i % 2 == 0 else alt)

    def inject_garbage(self) -> None:
        rng = self.rng
        dst = rng.choice(self.nodes)
        choice = rng.random()
        if choice < 0.4 or not self.captured:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        elif choice < 0.7:
            data = rng.choice(self.captured)  # replay
        else:
            raw = bytearray(rng.choice(self.captured))
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)  # bit flip
            data = bytes(raw)
        self.faults += 1
        self.push(self.now + 1, "deliver", (dst.index, rng.choice(self.nodes).pub, data, dst.incarnation))
        if self.now < self.heal_at:
            self.push(self.now + rng.randrange(20, 300), "garbage", None)

    # ------------------------------------------------------------- invariants

    def check_no_double_sign(self, node: Node, data: bytes, msg: Any) -> None:
        if msg is None or isinstance(msg, Decided):
            return
        if isinstance(msg, (Proposal, Prepare, CommitVote)):
            digest, view, height = (msg.block_hash, msg.view, msg.height)
        elif isinstance(msg, Checkpoint):
            digest, view, height = msg.digest, 0, msg.height
        elif isinstance(msg, ViewChange):
            digest, view, height = sha256(data), msg.new_view, 0
        elif isinstance(msg, NewView):
            digest, view, height = sha256(data), msg.view, 0
        else:
            return
        if msg.sender != node.pub:
            return
        key = (msg.sender, msg.KIND, view, height)
        self.checks += 1
        seen = self.signed_by_honest.setdefault(key, digest)
        if seen != digest:
            self.violations.append("honest double-sign by %d: %s view %d height %d" % (node.index, msg.KIND, view, height))

    def on_commit(self, node: Node, effect: Commit) -> None:
        block, cert = effect.block, effect.certificate
        height = block.height
        self.checks += 1
        if height != len(node.committed) + 1:
            self.violations.append("node %d committed height %d after %d" % (node.index, height, len(node.committed)))
            return
        node.committed.append(block.hash)
        node.disk.blocks.append((block, cert, b"", b""))
        self.check_certified(node, block, cert)
        self.check_lagged_results(node, block)
        if node.honest:
            first = self.canonical.setdefault(height, block.hash)
            if first != block.hash:
                self.violations.append("agreement: height %d has two blocks (node %d)" % (height, node.index))
            for tx in block.txs:
                self.checks += 1
                if not cached_verify(tx.sender, "tx", tx.chain_id, tx.signing_payload(), tx.signature):
                    self.violations.append("validity: unsigned tx committed at %d" % height)
                if tx.hash in node.tx_seen:
                    self.violations.append("validity: tx committed twice on node %d" % node.index)
                node.tx_seen.add(tx.hash)
        if self.scenario == "boundary-primary-crash" and node.honest:
            self.crash_next_sets_primary(node, height)
        if self.scenario == "long-partition-no-load" and node.index == self.n - 1 and not self.isolated:
            self.catch_up_ms = self.now - self.heal_at
        if self.view_change_started is not None and node.honest:
            self.longest_view_change = max(self.longest_view_change, self.now - self.view_change_started)
            self.view_change_started = None
        self.push(self.now + self.rng.randrange(1, 5), "execute", (node.index, node.incarnation, height))

    def crash_next_sets_primary(self, node: Node, height: int) -> None:
        """At the first commit of a set boundary, crash the primary (in the committing
        node's view) of the first height under the NEW set, and restart it later: the
        view change for that height must be judged against the new set."""
        if self.set_for(height + 1) == self.set_for(height) or \
                any(h == height for h, _, _ in self.boundary_crashes):
            return
        view = node.replica.view
        primary = self.set_for(height + 1).primary(view).public_key
        victim = next((n for n in self.nodes if n.pub == primary and n.alive), None)
        if victim is None:
            return
        self.boundary_crashes.append((height, view, victim.index))
        self.crash(victim)
        self.push(self.now + 1_500, "restart", victim.index)

    def check_certified(self, node: Node, block: Block, cert: Any) -> None:
        """The header names the set in force (and announces the next one at a
        boundary); the certificate is a quorum of THAT set's valid COMMIT signatures."""
        height = block.height
        vset, nxt = self.set_for(height), self.set_for(height + 1)
        header = block.header
        self.checks += 1
        if header.validators_hash != vset.hash or header.next_validators_hash != nxt.hash:
            self.violations.append("height %d header names the wrong validator set (node %d)" % (height, node.index))
        payload = commit_vote_payload(cert.height, cert.view, cert.block_hash)
        signers = set()
        for key, signature in cert.signatures:
            if key in signers or vset.index_of(key) is None or \
                    not cached_verify(key, "commit", CHAIN_ID, payload, signature):
                self.violations.append("height %d certificate has a signer outside its set or a bad signature"
                                       % height)
                return
            signers.add(key)
        if cert.height != height or cert.block_hash != block.hash or len(signers) < self.config.quorum(vset):
            self.violations.append("height %d certificate does not certify the block under its set" % height)

    def check_lagged_results(self, node: Node, block: Block) -> None:
        """Header h carries the (honestly executed) results of h − L, genesis's for h ≤ L."""
        lagged = block.height - self.config.results_lag
        expected = self.config.genesis_app_hash if lagged <= 0 else self.app_roots.get(lagged)
        if expected is None:
            return  # no honest node executed h − L yet (it was certified by peers we have not heard)
        self.checks += 1
        if block.header.app_hash != expected:
            self.violations.append("height %d header carries app hash not of height %d (node %d)"
                                   % (block.height, lagged, node.index))

    def execute(self, node: Node, height: int) -> None:
        block, cert, _, _ = node.disk.blocks[height - 1] if height <= len(node.disk.blocks) else (None, None, 0, 0)
        if block is None:
            return
        prev = node.disk.blocks[height - 2][2] if height > 1 else self.config.genesis_app_hash
        update = self.set_updates.get(height)
        governance = b"" if update is None else b"set:" + update.hash
        app = sha256(prev + b"".join(tx.hash for tx in block.txs) + governance)
        receipts = sha256(b"receipts" + block.hash)
        node.disk.blocks[height - 1] = (block, cert, app, receipts)
        if height % 3 == 0:
            node.disk.synced = len(node.disk.blocks)
        if node.honest:
            self.checks += 1
            first = self.app_roots.setdefault(height, app)
            if first != app:
                self.violations.append("state roots differ at height %d" % height)
        self.feed(node, BlockExecuted(height, app, receipts, validator_update=update))

    def final_checks(self) -> None:
        honest = self.honest_nodes()
        for node in honest:
            for h, block_hash in enumerate(node.committed, 1):
                self.checks += 1
                if self.canonical.get(h) not in (None, block_hash):
                    self.violations.append("agreement (final): node %d height %d" % (node.index, h))

    # ---------------------------------------------------------------- faults

    def plan_faults(self) -> None:
        rng = self.rng
        if self.net_faults:
            t = rng.randrange(100, 1500)
            while t < self.heal_at - 500:
                self.push(t, "partition", self.random_partition())
                t += rng.randrange(300, 2500)
            self.push(self.heal_at, "partition", set())
        if self.crash_faults:
            for _ in range(rng.randrange(1, 4)):
                victim = rng.randrange(len(self.nodes))
                at = rng.randrange(100, self.heal_at - 1500)
                self.push(at, "crash", victim)
                self.push(at + rng.randrange(200, 1400), "restart", victim)
        if self.byzantine_mode is not None:
            self.push(rng.randrange(10, 500), "garbage", None)
        if self.scenario == "primary-crash":
            self.push(700, "crash", 0)
        if self.scenario == "stale-proposal":
            self.push(self.heal_at, "release", None)
        if self.scenario == "long-partition-no-load":
            self.isolated = {self.n - 1}
            self.faults += 1
            self.push(self.heal_at, "heal-isolation", None)
        if self.scenario == "restart-all":
            for node in self.nodes:
                self.push(900, "crash", node.index)
                self.push(1300 + 10 * node.index, "restart", node.index)

    def random_partition(self) -> set[tuple[int, int]]:
        rng = self.rng
        idx = list(range(len(self.nodes)))
        rng.shuffle(idx)
        mode = rng.choice(["isolate", "split", "none"])
        if mode == "none":
            return set()
        side_a = {idx[0]} if mode == "isolate" else set(idx[: len(idx) // 2])
        side_b = set(idx) - side_a
        one_way = rng.random() < 0.3
        blocked = {(x, y) for x in side_a for y in side_b}
        if not one_way:
            blocked |= {(y, x) for x in side_a for y in side_b}
        return blocked

    def crash(self, node: Node) -> None:
        if not node.alive:
            return
        if node.replica is not None:  # heights the victim had proposals for above its commit
            logs = [h for h, log in node.replica.heights.items() if log.proposals]
            self.in_flight_at_crash.append(max(logs, default=node.replica.committed) - node.replica.committed)
        node.alive = False
        node.incarnation += 1
        self.faults += 1
        node.disk.crash()

    def restart(self, node: Node) -> None:
        if node.alive:
            return
        node.incarnation += 1
        self.boot(node)

    # ------------------------------------------------------------------ load

    def make_tx(self) -> None:
        if not hasattr(self, "all_txs"):
            self.all_txs: list[Tx] = []
        if self.done() and self.now >= self.heal_at:
            return
        if self.scenario == "long-partition-no-load":
            # load stops, for good, once the honest replicas outside the partition reach
            # the target: before the partition heals, unless faults slowed them down
            # (then it goes on after the heal: stopping it at the heal left them short)
            reached = [len(n.committed) for n in self.honest_nodes() if n.index != self.n - 1]
            if min(reached) >= self.target:
                return
        rng = self.rng
        client = rng.randrange(len(CLIENT_KEYS))
        key = CLIENT_KEYS[client]
        self.tx_counter += 1
        tx = Tx(CHAIN_ID, CLIENT_PUBS[client], self.tx_counter, "claim.submit", {"amount": rng.randrange(1, 10_000)}).signed(key)
        self.all_txs.append(tx)
        for node in self.nodes:
            if self.now < self.heal_at and self.net_faults and rng.random() < 0.1:
                continue  # gossip missed this node; the primary may be the one censoring
            if node.alive and node.index not in self.isolated:
                self.feed(node, TransactionsVerified((tx,)))
        self.push(self.now + rng.randrange(5, 60), "tx", None)

    # -------------------------------------------------------------- catch-up

    def on_fetch(self, node: Node, effect: FetchBlocks) -> None:
        peers = [n for n in self.nodes if n.pub == effect.peer and n.alive]
        if not peers:
            return
        peer = peers[0]
        if not (self.link_up(node.index, peer.index) and self.link_up(peer.index, node.index)):
            return
        blocks = tuple((b, c) for b, c, _, _ in peer.disk.blocks[effect.from_height - 1: effect.to_height][:64])
        if self.holding and node.index in self.victims and peer.index not in self.victims:
            blocks = tuple((b, c) for b, c in blocks if b.height < self.stall_height)
        if blocks:
            self.push(self.now + 2 * self.delay_mean, "fetched",
                      (node.index, node.incarnation, BlocksFetched(peer.pub, blocks)))


def run_seed(seed: int, **kwargs: Any) -> Result:
    return Simulation(seed, **kwargs).run()
