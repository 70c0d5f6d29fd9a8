"""Per-node Prometheus registries with CometBFT-style names, served on their own port."""

from __future__ import annotations

import httpx
import trio

from node.metrics import NodeMetrics, peer_label, serve_metrics

EXPECTED = (
    "consensus_height", "consensus_view", "consensus_view_changes_total", "consensus_validators",
    "consensus_byzantine_validators", "consensus_block_interval_seconds_bucket",
    "consensus_commit_latency_seconds_bucket", "consensus_total_txs", "mempool_size",
    "mempool_size_bytes", "p2p_peers", "blocksync_catching_up", "state_db_size_bytes",
)


def sample_names(metrics: NodeMetrics) -> set[str]:
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def test_every_documented_metric_is_exposed_under_the_namespace() -> None:
    names = sample_names(NodeMetrics())
    for name in EXPECTED:
        assert "careledger_" + name in names, name


def test_labelled_counters_appear_once_used() -> None:
    metrics = NodeMetrics()
    metrics.record_rejected_tx("bad_signature")
    metrics.record_send(b"\xab" * 32, 1, 100)
    metrics.record_receive(b"\xab" * 32, 1, 40)
    metrics.record_dropped_frame("queue_full")
    metrics.record_dropped_message("stale_view")
    reg = metrics.registry
    assert reg.get_sample_value("careledger_mempool_failed_txs_total", {"reason": "bad_signature"}) == 1
    labels = {"peer": peer_label(b"\xab" * 32), "channel": "1"}
    assert reg.get_sample_value("careledger_p2p_message_send_bytes_total", labels) == 100
    assert reg.get_sample_value("careledger_p2p_message_receive_bytes_total", labels) == 40
    assert reg.get_sample_value("careledger_p2p_dropped_frames_total", {"reason": "queue_full"}) == 1
    assert reg.get_sample_value("careledger_consensus_dropped_messages_total", {"reason": "stale_view"}) == 1


def test_two_nodes_in_one_process_do_not_share_a_registry() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.consensus_height.set(5)
    assert b.registry.get_sample_value("careledger_consensus_height") == 0


def test_the_namespace_is_configurable() -> None:
    assert "hcnode_consensus_height" in sample_names(NodeMetrics(namespace="hcnode"))


def test_record_commit_sets_height_and_tx_gauges_and_observes_the_interval() -> None:
    metrics = NodeMetrics()
    metrics.record_commit(height=9, num_txs=3, total_txs=30, block_interval_s=0.2)
    reg = metrics.registry
    assert reg.get_sample_value("careledger_consensus_height") == 9
    assert reg.get_sample_value("careledger_consensus_total_txs") == 30
    assert reg.get_sample_value("careledger_consensus_block_interval_seconds_count") == 1


async def test_serve_metrics_answers_the_text_exposition() -> None:
    metrics = NodeMetrics()
    metrics.consensus_height.set(12)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, metrics, "127.0.0.1", 0)
        async with httpx.AsyncClient() as client:
            response = await client.get("http://127.0.0.1:%d/metrics" % port)
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert "careledger_consensus_height 12.0" in response.text


class FakeRuntime:
    """The slice of node.node.NodeRuntime the collector reads."""

    def __init__(self) -> None:
        self.rejected = {"bad_signature": 2}
        self.sent = 100

    def status(self) -> dict[str, object]:
        return {"height": 7, "view": 2, "peers": 3, "catching_up": True, "mempool_size": 5}

    def validators(self) -> dict[str, object]:
        return {"validators": [{"name": "v%d" % i} for i in range(4)]}

    def evidence(self) -> list[dict[str, object]]:
        return [{"public_key": "aa"}, {"public_key": "aa"}]

    def net_info(self) -> dict[str, object]:
        return {"peers": [{"public_key": "ab" * 32, "sent_bytes": self.sent, "received_bytes": 7}]}

    def counters(self) -> dict[str, dict[str, int]]:
        return {"mempool_rejected": dict(self.rejected), "consensus_dropped": {"stale": 1},
                "consensus": {"new_views": 2},
                "p2p": {"handshake_failures_unknown_key": 1, "frames_rejected_oversize": 3, "dropped_gossip": 4}}


def test_the_runtime_collector_copies_status_and_cumulative_counters() -> None:
    from node.metrics import RuntimeCollector

    runtime, metrics = FakeRuntime(), NodeMetrics()
    collector = RuntimeCollector(runtime, metrics)
    collector.refresh()
    runtime.rejected["bad_signature"] = 5
    runtime.sent = 30  # the peer reconnected: its byte count restarted
    collector.refresh()
    reg = metrics.registry
    assert reg.get_sample_value("careledger_consensus_height") == 7
    assert reg.get_sample_value("careledger_consensus_view") == 2
    assert reg.get_sample_value("careledger_blocksync_catching_up") == 1
    assert reg.get_sample_value("careledger_consensus_validators") == 4
    assert reg.get_sample_value("careledger_consensus_byzantine_validators") == 1
    assert reg.get_sample_value("careledger_mempool_failed_txs_total", {"reason": "bad_signature"}) == 5
    assert reg.get_sample_value("careledger_consensus_view_changes_total") == 2
    assert reg.get_sample_value("careledger_p2p_dropped_frames_total", {"reason": "oversize"}) == 3
    assert reg.get_sample_value("careledger_p2p_dropped_frames_total", {"reason": "queue_full_gossip"}) == 4
    assert reg.get_sample_value("careledger_p2p_handshake_failures_total", {"reason": "unknown_key"}) == 1
    sent = reg.get_sample_value("careledger_p2p_message_send_bytes_total", {"peer": "ab" * 8, "channel": "all"})
    assert sent == 130


def test_commit_latency_is_observed_for_admitted_transactions_only() -> None:
    metrics = NodeMetrics()
    metrics.observe_admitted(b"a", now=10.0)
    metrics.observe_committed([b"a", b"never-admitted"], now=10.25)
    reg = metrics.registry
    assert reg.get_sample_value("careledger_consensus_commit_latency_seconds_count") == 1
    assert reg.get_sample_value("careledger_consensus_commit_latency_seconds_sum") == 0.25
