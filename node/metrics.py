"""Prometheus metrics of one node, CometBFT-style, on their own port.

Each `NodeMetrics` owns a fresh `CollectorRegistry` (never the process-global
one), so several nodes can live in one process (tests, simulations). Names are
exposed as `<namespace>_<name>`, namespace "careledger" by default
(`[instrumentation] namespace`). Counters get prometheus_client's `_total`.

| exposed name (namespace omitted)            | type      | labels  | set by                     |
|---------------------------------------------|-----------|---------|----------------------------|
| consensus_height                            | gauge     |         | driver, after each commit  |
| consensus_view                              | gauge     |         | driver, on entering a view |
| consensus_view_changes_total                | counter   |         | driver, per view change    |
| consensus_validators                        | gauge     |         | driver, n of the set       |
| consensus_byzantine_validators              | gauge     |         | driver, from evidence      |
| consensus_block_interval_seconds            | histogram |         | driver, header time delta  |
| consensus_commit_latency_seconds            | histogram |         | mempool admit → commit     |
| consensus_total_txs                         | gauge     |         | committed txs since genesis|
| consensus_num_txs                           | gauge     |         | txs in the last block      |
| consensus_dropped_messages_total            | counter   | reason  | driver, invalid/late msgs  |
| mempool_size                                | gauge     |         | mempool                    |
| mempool_size_bytes                          | gauge     |         | mempool                    |
| mempool_failed_txs_total                    | counter   | reason  | mempool (TxRejected.reason)|
| p2p_peers                                   | gauge     |         | p2p                        |
| p2p_message_send_bytes_total                | counter   | peer, channel | p2p              |
| p2p_message_receive_bytes_total             | counter   | peer, channel | p2p              |
| p2p_dropped_frames_total                    | counter   | reason  | p2p (queue_full, oversize…)|
| p2p_handshake_failures_total                | counter   | reason  | p2p                        |
| p2p_rate_limited_total                      | counter   | peer, kind | p2p: frames over a peer's budget, dropped (kind: consensus, gossip) |
| p2p_rate_limit_disconnects_total            | counter   | peer    | p2p: links closed, consensus budget exceeded persistently |
| p2p_inbound_refused_total                   | counter   | reason  | p2p: inbound links closed unread, before their handshake |
| evidence_total                              | counter   |         | evidence store: distinct double-signing offences recorded (kept across restarts) |
| blocksync_catching_up                       | gauge     |         | sync: 1 while catching up  |
| blockstore_earliest_height                  | gauge     |         | /status earliest_block_height ([storage] retain_blocks) |
| state_db_size_bytes                         | gauge     |         | store, on each commit      |

`consensus_total_txs` is a gauge (as in CometBFT) so a runtime can set it
from the block store after a restart; the `RuntimeCollector` adapter counts
the txs committed since the process started. `peer` labels are
the first 16 hex characters of the peer's node key (bounded by the genesis
allowlist, so cardinality stays small).

`serve_metrics(metrics, host, port)` serves `GET /metrics` with hypercorn
(trio worker) and `prometheus_client.make_asgi_app`; `serve_node_metrics(
runtime, host, port)` is the `metrics_serve` hook `node.node.run_node` takes:
it builds a `NodeMetrics`, fills it from the runtime (`RuntimeCollector`)
on each scrape and serves it. `serve_asgi` is shared with the RPC server.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any, Callable

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_asgi_app

DEFAULT_NAMESPACE = "careledger"
BLOCK_INTERVAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
COMMIT_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PEER_LABEL_HEX = 16
MAX_TRACKED_TXS = 100_000


def peer_label(node_key: bytes) -> str:
    """The `peer` label for a node key: its first 16 hex characters."""
    return node_key.hex()[:PEER_LABEL_HEX]


class NodeMetrics:
    """All of one node's metrics; attributes are the prometheus_client objects.

    Use the attributes directly (`m.consensus_height.set(h)`,
    `m.mempool_failed_txs.labels(reason="bad_signature").inc()`) or the small
    helpers below for the multi-label ones.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        ns, reg = namespace, self.registry

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=ns, registry=reg)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=reg)

        # consensus
        self.consensus_height = gauge("consensus_height", "Height of the last committed block.")
        self.consensus_view = gauge("consensus_view", "Current PBFT view.")
        self.consensus_view_changes = counter("consensus_view_changes", "View changes this node entered.")
        self.consensus_validators = gauge("consensus_validators", "Number of validators in the current set.")
        self.consensus_byzantine_validators = gauge(
            "consensus_byzantine_validators", "Validators with recorded misbehaviour evidence.")
        self.consensus_block_interval_seconds = Histogram(
            "consensus_block_interval_seconds", "Time between this block's header time and the previous one's.",
            namespace=ns, registry=reg, buckets=BLOCK_INTERVAL_BUCKETS)
        self.consensus_commit_latency_seconds = Histogram(
            "consensus_commit_latency_seconds", "Time from mempool admission on this node to commit.",
            namespace=ns, registry=reg, buckets=COMMIT_LATENCY_BUCKETS)
        self.consensus_total_txs = gauge("consensus_total_txs", "Transactions committed since genesis.")
        self.consensus_num_txs = gauge("consensus_num_txs", "Transactions in the last committed block.")
        self.consensus_dropped_messages = counter(
            "consensus_dropped_messages", "Consensus messages dropped (invalid, stale, from a non-validator…).",
            ("reason",))
        # mempool
        self.mempool_size = gauge("mempool_size", "Transactions in the mempool.")
        self.mempool_size_bytes = gauge("mempool_size_bytes", "Bytes of transactions in the mempool.")
        self.mempool_failed_txs = counter(
            "mempool_failed_txs", "Transactions refused at admission, by TxRejected reason.", ("reason",))
        # p2p
        self.p2p_peers = gauge("p2p_peers", "Authenticated peers connected.")
        self.p2p_message_send_bytes = counter(
            "p2p_message_send_bytes", "Bytes sent to peers.", ("peer", "channel"))
        self.p2p_message_receive_bytes = counter(
            "p2p_message_receive_bytes", "Bytes received from peers.", ("peer", "channel"))
        self.p2p_dropped_frames = counter("p2p_dropped_frames", "Frames dropped by p2p.", ("reason",))
        self.p2p_handshake_failures = counter(
            "p2p_handshake_failures", "Handshakes that failed or were refused.", ("reason",))
        self.p2p_rate_limited = counter(
            "p2p_rate_limited", "Received frames dropped because the peer was over its budget.", ("peer", "kind"))
        self.p2p_rate_limit_disconnects = counter(
            "p2p_rate_limit_disconnects", "Peers disconnected for staying over their consensus budget.", ("peer",))
        self.p2p_inbound_refused = counter(
            "p2p_inbound_refused", "Inbound connections closed unread, before their handshake.", ("reason",))
        self.evidence = counter("evidence", "Distinct double-signing offences recorded (persisted).")
        # sync and storage
        self.blocksync_catching_up = gauge("blocksync_catching_up", "1 while the node is catching up, else 0.")
        self.blockstore_earliest_height = gauge(
            "blockstore_earliest_height", "Lowest block height surely stored ([storage] retain_blocks).")
        self.state_db_size_bytes = gauge("state_db_size_bytes", "Size on disk of the node's database.")
        self._admitted: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._last_totals: dict[tuple[int, tuple[tuple[str, str], ...]], int] = {}

    # -- helpers for the call sites that carry labels or units
    def record_send(self, node_key: bytes, channel: int | str, size: int) -> None:
        self.p2p_message_send_bytes.labels(peer=peer_label(node_key), channel=str(channel)).inc(size)

    def record_receive(self, node_key: bytes, channel: int | str, size: int) -> None:
        self.p2p_message_receive_bytes.labels(peer=peer_label(node_key), channel=str(channel)).inc(size)

    def record_rejected_tx(self, reason: str) -> None:
        self.mempool_failed_txs.labels(reason=reason).inc()

    def record_dropped_frame(self, reason: str) -> None:
        self.p2p_dropped_frames.labels(reason=reason).inc()

    def record_dropped_message(self, reason: str) -> None:
        self.consensus_dropped_messages.labels(reason=reason).inc()

    def record_commit(self, height: int, num_txs: int, total_txs: int,
                      block_interval_s: float | None = None) -> None:
        """One committed block: height, tx gauges and (from header times) the interval."""
        self.consensus_height.set(height)
        self.consensus_num_txs.set(num_txs)
        self.consensus_total_txs.set(total_txs)
        if block_interval_s is not None and block_interval_s >= 0:
            self.consensus_block_interval_seconds.observe(block_interval_s)

    # -- commit latency: admission time per tx hash, bounded
    def observe_admitted(self, tx_hash: bytes, now: float | None = None) -> None:
        """Remember when this node admitted `tx_hash` (for commit latency)."""
        self.observe_admitted_many([tx_hash], now)

    def observe_admitted_many(self, tx_hashes: list[bytes], now: float | None = None) -> None:
        """Remember that this node admitted `tx_hashes` at `now` (one clock
        reading for a whole verified batch)."""
        admitted = self._admitted
        now = time.monotonic() if now is None else now
        for tx_hash in tx_hashes:
            admitted[tx_hash] = now
        while len(admitted) > MAX_TRACKED_TXS:
            admitted.popitem(last=False)

    def observe_committed(self, tx_hashes: list[bytes], now: float | None = None) -> None:
        """Observe submit→commit latency for the committed txs this node admitted."""
        now = time.monotonic() if now is None else now
        for tx_hash in tx_hashes:
            admitted = self._admitted.pop(tx_hash, None)
            if admitted is not None:
                self.consensus_commit_latency_seconds.observe(max(0.0, now - admitted))

    def sync_counter(self, counter: Counter, labels: dict[str, str], total: int) -> None:
        """Raise a labelled counter to a component's cumulative `total`.

        Runtime components keep plain cumulative counts; this adds the
        difference since the last sync. A total that went down (a component
        restarted, e.g. a reconnected peer) counts as fresh.
        """
        key = (id(counter), tuple(sorted(labels.items())))
        last = self._last_totals.get(key, 0)
        delta = total - last if total >= last else total
        if delta > 0:
            (counter.labels(**labels) if labels else counter).inc(delta)
        self._last_totals[key] = total

    def exposition(self) -> bytes:
        """The text exposition of this registry (what /metrics returns)."""
        return generate_latest(self.registry)


# ----------------------------------------------------------------- serving


def _hypercorn_config(host: str, port: int, max_body_bytes: int | None = None) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = ["[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)]
    config.accesslog = None
    config.errorlog = logging.getLogger("careledger.http")
    config.graceful_timeout = 1.0
    if max_body_bytes is not None:
        config.wsgi_max_body_size = max_body_bytes
    return config


def port_of(bind: str) -> int:
    """The port in a hypercorn bind URL such as "http://127.0.0.1:26657"."""
    return int(bind.rstrip("/").rpartition(":")[2])


async def serve_asgi(
    app: Any, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve an ASGI `app` on host:port with hypercorn's trio worker until cancelled.

    Reports the bound port through `task_status` (useful with port 0).
    Raises OSError if the address is taken.
    """
    from hypercorn.trio import serve

    async def serve_and_report(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, _hypercorn_config(host, port), task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_and_report)
        task_status.started(port_of(binds[0]))


def with_lifespan(app: Any) -> Any:
    """Wrap a plain ASGI app so it answers the server's lifespan messages
    (prometheus_client's app does not, and hypercorn would log an error)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


def metrics_app(metrics: NodeMetrics) -> Any:
    """An ASGI app answering /metrics (any path, as prometheus_client's app does)."""
    return with_lifespan(make_asgi_app(registry=metrics.registry))


async def serve_metrics(
    metrics: NodeMetrics, host: str, port: int, *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `GET /metrics` for `metrics` on host:port until cancelled.

    `port = await nursery.start(serve_metrics, metrics, host, port)`.
    """
    await serve_asgi(metrics_app(metrics), host, port, task_status=task_status)


# ------------------------------------------------- runtime adapter (node.node)


def directory_size(path: str) -> int:
    """Bytes of the regular files under `path` (0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # LevelDB compaction removed it meanwhile
                continue
    return total


def _split_prefixed(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}


class RuntimeCollector:
    """Fills a `NodeMetrics` from a running `node.node.NodeRuntime`.

    The runtime keeps plain counters (`counters()`) and a `NodeService`
    status; `refresh()` copies them into Prometheus form right before each
    scrape. `attach()` hooks commits (block interval, total txs, commit
    latency) and mempool admissions (once per verified batch) when the
    runtime exposes `driver.on_commit` and `mempool.on_batch_done`.
    """

    def __init__(self, runtime: Any, metrics: NodeMetrics,
                 db_path: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.db_path = db_path
        self.clock = clock
        self._last_block_time_ms: int | None = None

    def attach(self) -> None:
        driver = getattr(self.runtime, "driver", None)
        if driver is not None and isinstance(getattr(driver, "on_commit", None), list):
            driver.on_commit.append(self._on_commit)
        mempool = getattr(self.runtime, "mempool", None)
        if mempool is not None and callable(getattr(mempool, "on_batch_done", None)):
            forward = mempool.on_batch_done

            def on_batch_done(admitted: list[Any]) -> None:
                if admitted:  # a tx's hash is known from admission (no re-hash)
                    self.metrics.observe_admitted_many([tx.hash for tx in admitted], self.clock())
                forward(admitted)

            mempool.on_batch_done = on_batch_done

    def _on_commit(self, block: Any, certificate: Any, executed: Any) -> None:
        m = self.metrics
        m.consensus_height.set(block.height)
        m.consensus_num_txs.set(len(block.txs))
        m.consensus_total_txs.inc(len(block.txs))
        time_ms = block.header.time
        if self._last_block_time_ms is not None and time_ms >= self._last_block_time_ms:
            m.consensus_block_interval_seconds.observe((time_ms - self._last_block_time_ms) / 1000)
        self._last_block_time_ms = time_ms
        m.observe_committed([tx.hash for tx in block.txs], self.clock())

    def refresh(self) -> None:
        """Copy the runtime's current status and counters into the metrics."""
        m, runtime = self.metrics, self.runtime
        status = runtime.status()
        m.consensus_height.set(status.get("height", 0))
        m.consensus_view.set(status.get("view", 0))
        m.p2p_peers.set(status.get("peers", 0))
        m.blocksync_catching_up.set(1 if status.get("catching_up") else 0)
        m.blockstore_earliest_height.set(status.get("earliest_block_height", 1))
        if "mempool_size" in status:
            m.mempool_size.set(status["mempool_size"])
        mempool = getattr(runtime, "mempool", None)
        if mempool is not None and isinstance(getattr(mempool, "bytes", None), int):
            m.mempool_size_bytes.set(mempool.bytes)
        m.consensus_validators.set(len(runtime.validators().get("validators", [])))
        m.consensus_byzantine_validators.set(len({e.get("public_key") for e in runtime.evidence()}))
        counters = runtime.counters() if hasattr(runtime, "counters") else {}
        for reason, total in counters.get("mempool_rejected", {}).items():
            m.sync_counter(m.mempool_failed_txs, {"reason": reason}, total)
        for reason, total in counters.get("consensus_dropped", {}).items():
            m.sync_counter(m.consensus_dropped_messages, {"reason": reason}, total)
        consensus = counters.get("consensus", {})
        m.sync_counter(m.consensus_view_changes, {}, consensus.get("new_views", 0))
        p2p = counters.get("p2p", {})
        for reason, total in _split_prefixed(p2p, "handshake_failures_").items():
            m.sync_counter(m.p2p_handshake_failures, {"reason": reason}, total)
        for reason, total in _split_prefixed(p2p, "frames_rejected_").items():
            m.sync_counter(m.p2p_dropped_frames, {"reason": reason}, total)
        for queue, total in _split_prefixed(p2p, "dropped_").items():
            m.sync_counter(m.p2p_dropped_frames, {"reason": "queue_full_" + queue}, total)
        for reason, total in _split_prefixed(p2p, "inbound_refused_").items():
            m.sync_counter(m.p2p_inbound_refused, {"reason": reason}, total)
        p2p_runtime = getattr(runtime, "p2p", None)
        for (key, kind), total in dict(getattr(p2p_runtime, "rate_limited", {})).items():
            m.sync_counter(m.p2p_rate_limited, {"peer": peer_label(key), "kind": kind}, total)
        for key, total in dict(getattr(p2p_runtime, "rate_limit_disconnects", {})).items():
            m.sync_counter(m.p2p_rate_limit_disconnects, {"peer": peer_label(key)}, total)
        evidence_store = getattr(runtime, "evidence_store", None)
        if evidence_store is not None:
            m.sync_counter(m.evidence, {}, evidence_store.total())
        net = runtime.net_info()
        for peer in net.get("peers", []):
            label = {"peer": str(peer.get("public_key", ""))[:PEER_LABEL_HEX], "channel": "all"}
            m.sync_counter(m.p2p_message_send_bytes, label, int(peer.get("sent_bytes", 0)))
            m.sync_counter(m.p2p_message_receive_bytes, label, int(peer.get("received_bytes", 0)))
        if self.db_path is not None:
            m.state_db_size_bytes.set(directory_size(self.db_path))


def refreshing_app(app: Any, refresh: Callable[[], None]) -> Any:
    """Wrap an ASGI app so `refresh()` runs before every HTTP request."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refresh()
        await app(scope, receive, send)

    return wrapped


async def serve_node_metrics(
    runtime: Any, host: str, port: int, *, namespace: str = DEFAULT_NAMESPACE,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`metrics_serve` for `node.node.run_node`: metrics of `runtime` on host:port.

    Creates the node's `NodeMetrics` (kept as `runtime.metrics` when the
    runtime has no such attribute yet), hooks its commits, and serves
    `/metrics`, refreshed from the runtime on every scrape.
    """
    metrics = NodeMetrics(namespace=namespace)
    config = getattr(runtime, "config", None)
    collector = RuntimeCollector(runtime, metrics, db_path=getattr(config, "db_path", None))
    collector.attach()
    if getattr(runtime, "metrics", None) is None:
        try:
            runtime.metrics = metrics
        except AttributeError:  # a runtime with __slots__: fine, nobody needs the handle
            pass
    app = refreshing_app(make_asgi_app(registry=metrics.registry), collector.refresh)
    await serve_asgi(with_lifespan(app), host, port, task_status=task_status)
