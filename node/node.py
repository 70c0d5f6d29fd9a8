"""The node runtime: one nursery holding p2p, mempool, consensus driver,
executor, block sync, and (when wired) the HTTP API and metrics servers.

`run_node(config)` accepts a `RuntimeConfig` (below) or anything shaped like
`node.config.NodeConfig` (see `runtime_config_from`). It reports readiness
with `task_status.started(runtime)` (the `NodeRuntime`, which implements
`node.service.NodeService`), and returns when cancelled or on SIGTERM/SIGINT
(when `handle_signals`, which also means "this process is the node": it then
tunes the garbage collector, see `tune_gc_for_node_process`), closing the
database last.

Identities: a validator's p2p identity IS its validator key (consensus
messages are signed by it and the transport authenticates it); an observer
uses its node key, which must be on the genesis observer allowlist. An
observer runs the same replica without voting rights: it follows commits via
the validators' votes, `Decided` replies and block sync, and refuses
`submit_tx` with "read_only".

Validator-set changes (governance `set_validator_set`, executed by every node
at the same height; see `node.executor`): each new member is
[name, validator key, node key] (node key omitted = its validator key). Once
the change is executed, this node allowlists the node keys for p2p (so a new
validator's node can connect even if genesis never named it), resolves the
validator key to that node key, and gossips transactions to it. Node keys of
removed validators stay allowed (they may follow the chain). The allowlist is
rebuilt at startup from the persisted changes (`BlockStore.validator_updates`).
A node whose validator key is not in genesis starts as a validator that does
not vote until the schedule includes its key (it syncs meanwhile). A new
validator's node must run with role "validator" (double-sign guard on disk);
an observer whose node key is scheduled also starts persisting its guard.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import structlog
import trio

from consensus.config import ConsensusConfig
from consensus.effects import Evidence
from consensus.replica import Replica
from contracts.engine import Receipt
from contracts.state import key as state_key
from ledger import codec
from ledger.crypto import PrivateKey
from ledger.hashing import ZERO_HASH
from ledger.types import KNOWN_TXS, Block, CommitCertificate, Header, Tx

from node.config import Genesis, NodeConfig, consensus_settings
from node.driver import Driver, load_guard_state
from node.executor import Executed, Executor
from node.history import HistoryService  # [observer] history/tx proofs for the RPC
from node.observer import attach_light_observer  # [observer]
from node.handshake import NodeIdentity
from node.keys import load_key_file
from node.leveldb_store import LevelDBStore
from node.mempool import Mempool, MempoolConfig, VerifiedSignatures
from node.p2p import (  # CHANNEL_TX_BATCH & co: batched tx gossip
    CHANNEL_TX, CHANNEL_TX_BATCH, P2P, P2PConfig, PeerAddress, chunk_tx_batch, decode_tx_batch, encode_tx_batch,
)
from node.pruning import BlockPruner, StatePruner
from node.service import StateUnavailable, SubmitResult, TxRejected
from node.store import BlockPruned, EvidenceStore
from node.sync import BlockSync

log = structlog.get_logger("careledger.node")
RECENT_BLOCKS = 32  # committed blocks kept in memory for commit followers (GET /blocks/{h}?txs=hashes)



# ------------------------------------------------------------------ config


@dataclass
class NodeKeys:
    """A node's keys: `node_key` is its p2p identity; `validator_key` signs
    consensus messages (None on observers, which follow with the node key)."""

    node_key: PrivateKey
    validator_key: PrivateKey | None = None


def load_node_keys(config: NodeConfig) -> NodeKeys:
    """Read `node_key.json` and, on validators, `priv_validator_key.json`.

    Raises SignatureError for a missing or malformed key file.
    """
    node_key = load_key_file(config.node_key_file)
    validator_key = load_key_file(config.priv_validator_key_file) if config.is_validator else None
    return NodeKeys(node_key, validator_key)


def p2p_config_from(config: NodeConfig) -> P2PConfig:
    section = config.p2p
    return P2PConfig(
        listen_host=section.listen_host, listen_port=section.listen_port,
        peers=[PeerAddress(p.node_key, p.host, p.port) for p in section.peers],
        max_frame_bytes=section.max_frame_bytes,
        handshake_timeout_s=section.handshake_timeout_ms / 1000,
        backoff_initial_s=section.dial_backoff_initial_ms / 1000,
        backoff_max_s=section.dial_backoff_max_ms / 1000,
        consensus_queue=section.send_queue_size, gossip_queue=section.send_queue_size,
        rate_limits=section.rate_limits(),
    )


def mempool_config_from(config: NodeConfig) -> MempoolConfig:
    section = config.mempool
    return MempoolConfig(max_txs=section.max_txs, max_bytes=section.max_bytes, nonce_window=section.nonce_window)


def app_state_dict(genesis: Genesis) -> dict[str, Any]:
    """`node.config.AppState` in the shape `contracts.genesis.genesis_writes` reads.

    Organisations carry their `kind` and resolved `voting` flag and accounts
    their `admin` flag, as the genesis file states them (defaults are applied
    and documented in `node.config`); an account's role is its organisation's
    kind, so it is not passed.
    """
    app = genesis.app_state
    return {
        "organisations": [{"id": o.id, "name": o.name, "kind": o.kind, "voting": o.voting}
                          for o in app.organisations],
        "accounts": [{"public_key": a.public_key, "org": a.org, "admin": a.admin} for a in app.accounts],
        "parameters": dict(app.parameters),
        "validators": [[v.name, v.public_key] for v in genesis.validators],
    }


def genesis_writes(genesis: Genesis) -> dict[bytes, bytes | None]:
    """State version 0: `contracts.genesis` over the app state, plus balances."""
    from contracts.genesis import genesis_writes as contract_genesis_writes
    from contracts.transfer import balance_key

    writes = dict(contract_genesis_writes(app_state_dict(genesis)))
    for public_key, amount in genesis.app_state.balances:
        writes[balance_key(public_key)] = codec.encode(amount)
    return dict(sorted(writes.items()))


# ------------------------------------------------------------- the runtime


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def header_json(header: Header) -> dict[str, Any]:
    return {
        "chain_id": header.chain_id, "height": header.height, "view": header.view, "time": header.time,
        "prev_hash": header.prev_hash.hex(), "tx_root": header.tx_root.hex(),
        "receipts_root": header.receipts_root.hex(), "app_hash": header.app_hash.hex(),
        "validators_hash": header.validators_hash.hex(),
        "next_validators_hash": header.next_validators_hash.hex(),
        "history_root": header.history_root.hex(), "history_size": header.history_size,
        "proposer": header.proposer.hex(),
    }


def certificate_json(cert: CommitCertificate) -> dict[str, Any]:
    return {
        "height": cert.height, "view": cert.view, "block_hash": cert.block_hash.hex(),
        "signatures": [{"public_key": k.hex(), "signature": s.hex()} for k, s in cert.signatures],
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {"tx_hash": receipt.tx_hash.hex(), "ok": receipt.ok, "code": receipt.code,
            "message": receipt.message, "events": _jsonable(list(receipt.events))}


class NodeRuntime(HistoryService):  # [observer] HistoryService: proof methods (node/history.py)
    """One node's live components; implements `node.service.NodeService`."""

    def __init__(self, config: NodeConfig, genesis: Genesis, keys: NodeKeys) -> None:
        self.config = config
        self.genesis_doc = genesis
        self.chain_id = genesis.chain_id
        self.node_key = keys.node_key.public_key
        self.validator_set = genesis.validator_set()
        if config.is_validator and keys.validator_key is None:
            raise ValueError("role validator, but no validator key")
        self.validator_key = keys.validator_key.public_key if keys.validator_key else None
        os.makedirs(config.data_dir, exist_ok=True)
        self.kv = LevelDBStore(config.db_path)
        try:
            self.executor = Executor(self.chain_id, self.kv)
            self.store = self.executor.store
            genesis_app_hash = self.executor.init_genesis(genesis_writes(genesis), genesis.genesis_time_ms)
            self.consensus_config = ConsensusConfig(
                chain_id=self.chain_id, validators=self.validator_set, genesis_app_hash=genesis_app_hash,
                genesis_receipts_root=ZERO_HASH, genesis_time_ms=genesis.genesis_time_ms,
                **consensus_settings(config, genesis),
            )
            self.guard_path = config.priv_validator_state_file
            k = self.consensus_config.checkpoint_interval
            updates = self.store.validator_updates()
            signing_key = (keys.validator_key or keys.node_key).public_key
            if config.is_validator and self.validator_set.index_of(signing_key) is None and not any(
                    u.validators.index_of(signing_key) is not None for u in updates):
                log.warning("validator key not in any validator set yet: not voting until governance adds it",
                            validator=signing_key.hex()[:16])
            # an observer whose node key governance made a validator signs too: guard it
            self._guarded = config.is_validator or any(
                u.validators.index_of(signing_key) is not None for u in updates)
            # tx signatures the mempool verified are not verified again by the
            # replica's proposal check (nor the other way round): see VerifiedSignatures
            self.verified_signatures = VerifiedSignatures()
            self.replica = Replica(
                self.consensus_config, keys.validator_key or keys.node_key,
                restored=load_guard_state(self.guard_path) if self._guarded else None,
                last_commit=self.store.chain_tip(k, checkpoint_interval=k,
                                                 results_lag=self.consensus_config.results_lag),
                verifier=self.verified_signatures.verifier,
            )
        except BaseException:
            self.kv.close()
            raise
        self.node_key_of = {v.public_key: v.node_key for v in genesis.validators}
        self.validator_node_keys = set(self.node_key_of.values())
        self.allowed_node_keys = set(genesis.allowed_node_keys())  # grows with validator-set changes
        for update in updates:
            self._learn_node_keys(update.node_keys)
        self.p2p = P2P(NodeIdentity.create(keys.node_key, self.chain_id), p2p_config_from(config),
                       self.allowed_node_keys.__contains__)
        self.sync = BlockSync(self.p2p, self.store)
        self.driver = Driver(self.replica, self.p2p, self.executor, self.sync, self.guard_path,
                             resolve_peer=self._resolve_peer, persist=self._guarded)
        self.mempool = Mempool(
            self.chain_id, self._committed_nonce, mempool_config_from(config),
            on_ready=self.driver.transactions_ready, on_admitted=self._gossip_tx,
            on_batch_done=self._flush_gossip, verified=self.verified_signatures,
        )
        self._gossip_out: list[tuple[bytes, bytes | None]] = []  # (raw, source) admitted, not yet sent
        if self.is_validator:
            self.p2p.on(CHANNEL_TX, self._on_gossiped_tx)
            self.p2p.on(CHANNEL_TX_BATCH, self._on_gossiped_batch)
        self.driver.on_commit.append(self._on_commit)
        self.evidence_store = EvidenceStore(self.kv)  # double-signing evidence, persisted
        self.driver.on_evidence.append(self._save_evidence)
        # [storage] keep_recent_versions: prune old state versions in the commit path
        self.pruner = StatePruner(self.executor.tree, config.storage.keep_recent_versions)
        self.driver.on_commit.append(self.pruner.on_commit)
        # [storage] retain_blocks: prune old blocks' bodies, receipts, tx index in the commit path
        self.block_pruner = BlockPruner(self.store, config.storage.retain_blocks)
        self.driver.on_commit.append(self.block_pruner.on_commit)
        self.latest_block_time_ms = self.store.tip().time_ms
        self._recent_blocks: dict[int, Block] = {}  # height → block, the newest RECENT_BLOCKS (see _on_commit)
        # [observer] an observer re-verifies every synced header with a light client (node/observer.py)
        self.light = None if self.is_validator else attach_light_observer(self)

    def _learn_node_keys(self, node_keys: tuple[tuple[bytes, bytes], ...]) -> None:
        """A validator-set change executed: allow, resolve and gossip to its nodes."""
        for validator_key, node_key in node_keys:
            self.node_key_of[validator_key] = node_key
            self.validator_node_keys.add(node_key)
            self.allowed_node_keys.add(node_key)

    def _resolve_peer(self, public_key: bytes) -> bytes:
        """The p2p key for a key the replica names (a peer's or a validator's)."""
        if public_key in self.p2p.peers:
            return public_key
        return self.node_key_of.get(public_key, public_key)

    @property
    def is_validator(self) -> bool:
        return self.config.is_validator

    # --------------------------------------------------------------- wiring

    def _committed_nonce(self, sender: bytes) -> int:
        raw = self.executor.read_latest(state_key("nonce", sender))
        return 0 if raw is None else int(codec.decode(raw))

    def _gossip_tx(self, tx: Tx, raw: bytes, source: bytes | None) -> None:
        """Queue an admitted tx for gossip; `_flush_gossip` sends the mempool's
        whole verified batch as one frame per peer (not one frame per tx)."""
        self._gossip_out.append((raw, source))

    def _flush_gossip(self, admitted: list[Tx] | None = None) -> None:
        """`Mempool.on_batch_done`: send what `_gossip_tx` queued, to every
        validator peer but each tx's source (`admitted` is not needed here).

        Peers that are no tx's source get the same frames: encoded once."""
        out, self._gossip_out = self._gossip_out, []
        if not out:
            return
        sources = {source for _, source in out}
        shared: list[tuple[int, bytes]] | None = None
        for key in list(self.p2p.peers):
            if key not in self.validator_node_keys:
                continue  # observers never propose
            if key in sources:
                frames = self._gossip_frames([raw for raw, source in out if source != key])
            else:
                if shared is None:
                    shared = self._gossip_frames([raw for raw, _ in out])
                frames = shared
            for channel, payload in frames:
                self.p2p.send(key, channel, payload)

    @staticmethod
    def _gossip_frames(raws: list[bytes]) -> list[tuple[int, bytes]]:
        """(channel, payload) frames carrying `raws`: one tx alone, or batches."""
        if len(raws) == 1:
            return [(CHANNEL_TX, raws[0])]
        return [(CHANNEL_TX_BATCH, encode_tx_batch(chunk)) for chunk in chunk_tx_batch(raws)] if raws else []

    async def _on_gossiped_tx(self, peer: bytes, channel: int, payload: bytes) -> None:
        self.mempool.submit_nowait(payload, source=peer)

    async def _on_gossiped_batch(self, peer: bytes, channel: int, payload: bytes) -> None:
        # FrameError (malformed) disconnects the peer
        self.mempool.submit_many_nowait(decode_tx_batch(payload), source=peer)

    def _on_commit(self, block: Block, certificate: CommitCertificate, executed: Executed) -> None:
        if executed.validator_update is not None:
            self._learn_node_keys(executed.node_keys)
            own = self.replica.public_key
            if not self._guarded and executed.validator_update.index_of(own) is not None:
                log.warning("this node's key joins the validator set: persisting its double-sign guard")
                self._guarded = self.driver.persist = True
            log.info("validator set change", height=block.height, size=executed.validator_update.size,
                     hash=executed.validator_update.hash.hex()[:16])
        self.mempool.remove_committed(block.txs)
        self.latest_block_time_ms = block.header.time
        # the newest blocks as executed (txs with their hashes cached): a commit
        # follower long-polling GET /blocks/{h}?txs=hashes reads the block just
        # committed, which would otherwise be read back and decoded tx by tx
        self._recent_blocks[block.height] = block
        if len(self._recent_blocks) > RECENT_BLOCKS:
            del self._recent_blocks[min(self._recent_blocks)]
        log.debug("committed", height=block.height, txs=len(block.txs), app_hash=executed.app_hash.hex()[:16])

    async def wait_for_height(self, height: int) -> None:
        """Return once block `height` is committed and executed (caller bounds the time)."""
        while self.store.height < height:
            await self.driver.committed.wait()

    def counters(self) -> dict[str, dict[str, int]]:
        """Every runtime counter, for the metrics module."""
        return {
            "p2p": dict(self.p2p.counters), "mempool_rejected": dict(self.mempool.rejected),
            "mempool_gossip_rejected": dict(self.mempool.gossip_rejected),
            "mempool": {"admitted": self.mempool.admitted,
                        "signature_cache_hits": self.verified_signatures.hits,
                        "known_tx_hits": KNOWN_TXS.hits, "verify_batches": self.mempool.verify_batches},
            "sync": dict(self.sync.counters), "driver": dict(self.driver.counters),
            "consensus_dropped": dict(self.replica.dropped), "consensus": dict(self.replica.counters),
        }

    # ----------------------------------------------------------- NodeService

    def status(self) -> dict[str, Any]:
        height = self.store.height
        results = self.store.results(height)
        return {
            "chain_id": self.chain_id, "node_id": self.node_key.hex(), "moniker": self.config.moniker,
            "role": self.config.role, "height": height,
            "app_hash": (results[0] if results else ZERO_HASH).hex(), "view": self.replica.view,
            "catching_up": self.replica.ahead_height > self.replica.committed,
            "peers": len(self.p2p.peers), "latest_block_time_ms": self.latest_block_time_ms,
            "validator": self.validator_key.hex() if self.validator_key else None,
            "mempool_size": len(self.mempool),
            "earliest_block_height": self.store.earliest_height(),  # [storage] retain_blocks
        }

    def net_info(self) -> dict[str, Any]:
        return {"listening": self.p2p.port is not None, "listen_port": self.p2p.port,
                "n_peers": len(self.p2p.peers), "peers": self.p2p.info()}

    def validators(self) -> dict[str, Any]:
        height = self.store.height
        vset = self.replica.validators_for(height + 1)
        return {"height": height,
                "validators": [{"name": v.name, "public_key": v.public_key.hex()} for v in vset.validators],
                "quorum": self.consensus_config.quorum(vset)}

    def genesis(self) -> dict[str, Any]:
        return self.genesis_doc.to_json()

    def block(self, height: int) -> dict[str, Any] | None:
        raw = self.store.block_bytes(height)
        if raw is None:
            self.store.check_not_pruned(height)  # raises BlockPruned: 410
            return None
        block = Block.decode(raw)
        return {"height": height, "hash": block.hash.hex(), "header": header_json(block.header),
                "txs": [tx.encode().hex() for tx in block.txs], "encoded": raw.hex()}

    def block_tx_hashes(self, height: int) -> dict[str, Any] | None:
        """`block` with each tx's hash (hex, block order) instead of its bytes:
        a follower's answer (GET /blocks/{h}?txs=hashes) without the tx hex."""
        block = self._recent_blocks.get(height) or self.store.block(height)
        if block is None:
            self.store.check_not_pruned(height)  # raises BlockPruned: 410
            return None
        return {"height": height, "hash": block.hash.hex(), "header": header_json(block.header),
                "tx_hashes": [tx.hash.hex() for tx in block.txs]}

    def commit(self, height: int) -> dict[str, Any] | None:
        block, cert = self.store.block(height), self.store.certificate(height)
        if block is None or cert is None:
            self.store.check_not_pruned(height)  # raises BlockPruned: 410
            return None
        return {"height": height, "header": header_json(block.header), "certificate": certificate_json(cert),
                "encoded_header": block.header.encode().hex(), "encoded_certificate": cert.encode().hex()}

    async def submit_tx(self, raw: bytes) -> SubmitResult:
        if not self.is_validator:
            self.mempool.rejected["read_only"] += 1
            raise TxRejected("read_only", "observers do not accept transactions")
        tx = await self.mempool.submit(raw)
        return SubmitResult(tx.hash)

    async def submit_txs(self, raws: list[bytes]) -> list[SubmitResult | TxRejected]:
        """Verify and admit several txs (POST /txs); per tx a result or its refusal."""
        if not self.is_validator:
            self.mempool.rejected["read_only"] += len(raws)
            return [TxRejected("read_only", "observers do not accept transactions") for _ in raws]
        results = await self.mempool.submit_many(raws)
        return [r if isinstance(r, TxRejected) else SubmitResult(r.hash) for r in results]

    def tx(self, tx_hash: bytes) -> dict[str, Any] | None:
        location = self.store.tx_location(tx_hash)
        if location is not None:
            height, index = location
            receipt = self.store.receipt(height, index)
            return {"hash": tx_hash.hex(), "status": "committed", "height": height, "index": index,
                    "receipt": None if receipt is None else receipt_json(receipt)}
        if tx_hash in self.mempool:
            return {"hash": tx_hash.hex(), "status": "pending", "height": None, "index": None, "receipt": None}
        return None

    def state(self, key: bytes, prove: bool, height: int | None = None) -> dict[str, Any]:
        """The value at the latest certified state version (or version `height`).

        State after block v is committed by header v+L (its app_hash; L =
        genesis `results_lag`, 1 unless the chain pipelines), so with tip H
        the answer is at version H-L, with header H and its certificate (at
        H = 0: genesis state, no certified header yet; for H < L the genesis
        state, which headers 1..L carry). A requested version must be
        certified (<= H-L) and not pruned (`[storage] keep_recent_versions`);
        raises StateUnavailable ("not_found", "pruned").
        """
        tip = self.store.height
        lag = self.consensus_config.results_lag
        certified = max(0, tip - lag)
        if height is None:
            version = certified
        else:
            version = height
            if version > certified:
                raise StateUnavailable("not_found", "state version %d is not certified yet (tip %d, results lag %d: "
                                       "versions up to %d)" % (version, tip, lag, certified))
            oldest = self.executor.tree.oldest_version()
            if oldest is not None and version < oldest:
                raise StateUnavailable("pruned", "state version %d is pruned: this node keeps the last %d "
                                       "versions ([storage] keep_recent_versions), oldest %d; ask an archive "
                                       "node" % (version, self.config.storage.keep_recent_versions, oldest), oldest)
        # the header carrying version v's results: v + L (genesis state: header min(L, tip))
        height = 0 if tip < 1 else (version + lag if version >= 1 else min(lag, tip))
        value = self.executor.tree.get(key, version)
        out: dict[str, Any] = {"key": key.hex(), "value": None if value is None else value.hex(), "height": version}
        if prove:
            if height >= 1:
                try:  # a proof needs header v + L's certificate: not one of a pruned block
                    self.store.check_not_pruned(height)
                except BlockPruned as exc:
                    oldest_version = max(0, exc.earliest - lag)
                    raise StateUnavailable("pruned", "state version %d is proved by block %d, which is pruned here "
                                           "([storage] retain_blocks): versions from %d; ask an archive node"
                                           % (version, height, oldest_version), oldest_version) from exc
            out["proof"] = self.executor.tree.prove(key, version).to_bytes().hex()
            if height >= 1:
                header, cert = self.store.header(height), self.store.certificate(height)
                out["header"] = header.encode().hex() if header else None
                out["certificate"] = cert.encode().hex() if cert else None
                out["header_height"] = height
            else:
                out["header"] = out["certificate"] = None
                out["header_height"] = None
        return out

    def evidence(self) -> list[dict[str, Any]]:
        """Persisted evidence (node.store.EvidenceStore), kept across restarts."""
        return [record.to_json() for record in self.evidence_store.records()]

    def _save_evidence(self, evidence: Evidence) -> None:
        """`Driver.on_evidence`: persist it (a re-report of one offence collapses)."""
        if self.evidence_store.record(evidence.public_key, evidence.kind, evidence.view, evidence.height,
                                      evidence.first, evidence.second, self.store.height):
            self.driver.counters["evidence_recorded"] += 1

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus["NodeRuntime"] = trio.TASK_STATUS_IGNORED,
                  rpc_serve: Callable[..., Awaitable[Any]] | None = None,
                  metrics_serve: Callable[..., Awaitable[Any]] | None = None) -> None:
        """Start every component in one nursery; `task_status.started(self)` once all listen.

        `rpc_serve(service, host, port, task_status=)` / `metrics_serve(runtime,
        host, port, task_status=)` are started when given (see `run_node`).
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.p2p.run)
            await nursery.start(self.mempool.run)
            await nursery.start(self.driver.run)
            if rpc_serve is not None:
                self.rpc_port = await nursery.start(
                    rpc_serve, self, self.config.rpc.listen_host, self.config.rpc.listen_port)
            if metrics_serve is not None and self.config.instrumentation.prometheus:
                self.metrics_port = await nursery.start(
                    metrics_serve, self, self.config.instrumentation.prometheus_listen_host,
                    self.config.instrumentation.prometheus_port)
            log.info("node started", moniker=self.config.moniker, role=self.config.role,
                     p2p_port=self.p2p.port, height=self.store.height)
            task_status.started(self)

    def close(self) -> None:
        self.kv.close()


# Garbage-collector settings for a process that runs one node (measured under
# the benchmark: collections took 0.27 s of ~6 s CPU per node, 0.08 s with
# these): collect the youngest generation every 10,000 net allocations rather
# than 700, and move what startup built (genesis, caches, modules) out of the
# collector's sight. Garbage cycles are still collected, only less often.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc_for_node_process() -> None:
    """Apply `GC_THRESHOLDS` and freeze what exists now (call once, after startup)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


async def run_node(
    config: NodeConfig, *, genesis: Genesis | None = None, keys: NodeKeys | None = None,
    rpc_serve: Callable[..., Awaitable[Any]] | None = None,
    metrics_serve: Callable[..., Awaitable[Any]] | None = None,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[NodeRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until cancelled, or until SIGTERM/SIGINT with `handle_signals`.

    `genesis` and `keys` default to the files under `config.home`. The HTTP
    API and metrics servers are whatever the caller passes (the CLI passes
    `node.rpc`'s and `node.metrics`'s); none when omitted. Reports the
    `NodeRuntime` via `task_status.started` once p2p, mempool and consensus run.
    Closes the database on the way out.
    """
    runtime = NodeRuntime(config, genesis or config.load_genesis(), keys or load_node_keys(config))
    try:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await nursery.start(functools.partial(runtime.run, rpc_serve=rpc_serve, metrics_serve=metrics_serve))
            if handle_signals:  # this process is the node (the CLI), not a test harness running several
                tune_gc_for_node_process()
            task_status.started(runtime)
    finally:
        runtime.close()
        log.info("node stopped", moniker=config.moniker)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutting down", signal=signal.Signals(signum).name)
            scope.cancel()
            return
