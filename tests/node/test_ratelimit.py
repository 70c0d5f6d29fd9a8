"""Per-peer rate limits: the pure buckets (time passed in), then real links on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from ledger.crypto import PrivateKey
from node.handshake import NodeIdentity
from node.p2p import CHANNEL_CONSENSUS, CHANNEL_TX, CHANNEL_TX_BATCH, P2P, P2PConfig, PeerAddress, rate_kind
from node.ratelimit import (
    Budget, InboundGate, InboundLimits, PeerRateLimiter, RateLimits, TokenBucket, Verdict, ip_key,
)

CHAIN = "careledger-test"
KEYS = [PrivateKey(bytes([i + 40]) * 32) for i in range(3)]
ALLOWED = {k.public_key for k in KEYS}
UNLIMITED = Budget(0, 0, 0, 0)


# ------------------------------------------------------------------ buckets


def test_a_bucket_starts_full_and_refuses_once_empty() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.try_take(1, 0.0) for _ in range(4)] == [True, True, True, False]


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    for _ in range(3):
        bucket.try_take(1, 0.0)
    assert not bucket.try_take(1, 0.05)  # half a token earned
    assert bucket.try_take(1, 0.1)  # one token
    assert not bucket.try_take(1, 0.1)
    bucket.refill(100.0)
    assert bucket.tokens == 3  # never above the burst


def test_a_refused_take_leaves_the_bucket_unchanged() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=0.0)
    assert bucket.try_take(4, 0.0)
    assert not bucket.try_take(2, 0.0)
    assert bucket.tokens == 1 and bucket.try_take(1, 0.0)


def test_a_cost_above_the_burst_passes_only_from_a_full_bucket_and_leaves_debt() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.try_take(250, 0.0)  # one large frame is never refused forever
    assert bucket.tokens == -150
    assert not bucket.try_take(250, 2.0)  # 50 tokens: not full
    assert bucket.try_take(250, 2.5)  # full again


def test_a_clock_going_back_earns_nothing() -> None:
    bucket = TokenBucket(rate=10, burst=1, now=5.0)
    assert bucket.try_take(1, 5.0)
    assert not bucket.try_take(1, 4.0)


def test_a_zero_rate_bucket_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=0, now=0.0)
    assert all(bucket.try_take(10**9, 0.0) for _ in range(100))


def test_a_limited_bucket_needs_a_positive_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0.0)


def test_channels_map_to_consensus_and_gossip_budgets() -> None:
    assert rate_kind(CHANNEL_CONSENSUS) == "consensus"
    assert rate_kind(CHANNEL_TX) == rate_kind(CHANNEL_TX_BATCH) == "gossip"


# ------------------------------------------------- per-IP inbound admission


def test_an_ip_may_hold_at_most_max_pending_per_ip_handshakes_at_once() -> None:
    gate = InboundGate(InboundLimits(max_pending_per_ip=2, per_ip_per_s=0, per_ip_burst=0))
    assert [gate.admit("10.0.0.1", 0.0) for _ in range(3)] == [None, None, "pending_per_ip"]
    assert gate.admit("10.0.0.2", 0.0) is None  # another IP has its own count
    gate.release("10.0.0.1")
    assert gate.admit("10.0.0.1", 0.0) is None
    for _ in range(2):
        gate.release("10.0.0.1")
    gate.release("10.0.0.2")
    assert gate.pending == {}  # nothing kept for IPs without a pending link


def test_new_connections_per_ip_are_a_token_bucket_that_refills_with_time() -> None:
    gate = InboundGate(InboundLimits(max_pending_per_ip=100, per_ip_per_s=2, per_ip_burst=3))
    assert [gate.admit("10.0.0.1", 0.0) for _ in range(4)] == [None, None, None, "rate_per_ip"]
    assert gate.pending["10.0.0.1"] == 3  # a refusal takes no pending place
    assert gate.admit("10.0.0.2", 0.0) is None  # another IP has its own bucket
    assert gate.admit("10.0.0.1", 0.25) == "rate_per_ip"  # half a connection earned
    assert gate.admit("10.0.0.1", 0.5) is None
    assert [gate.admit("10.0.0.1", 10.0) for _ in range(4)] == [None, None, None, "rate_per_ip"]  # burst caps


def test_the_per_ip_buckets_kept_are_bounded() -> None:
    gate = InboundGate(InboundLimits(max_pending_per_ip=100, per_ip_per_s=1, per_ip_burst=1, max_tracked_ips=2))
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert gate.admit(ip, 0.0) is None
    assert len(gate._buckets) == 2
    assert gate.admit("10.0.0.1", 0.0) is None  # evicted: a fresh burst (never a stricter limit)
    assert gate.admit("10.0.0.3", 0.0) == "rate_per_ip"


def test_addresses_are_limited_per_ipv4_address_and_per_ipv6_slash_64() -> None:
    assert ip_key("127.0.0.1") == "127.0.0.1"
    assert ip_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("fe80::1%eth0") == "fe80::/64"


def test_bad_inbound_limits_are_refused() -> None:
    for bad in (dict(max_pending_per_ip=0), dict(per_ip_per_s=-1), dict(per_ip_per_s=1, per_ip_burst=0),
                dict(max_tracked_ips=0)):
        with pytest.raises(ValueError):
            InboundLimits(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------- peer limiter


def limits(**overrides: object) -> RateLimits:
    values: dict[str, object] = dict(consensus=Budget(0, 0, 10, 10), gossip=Budget(0, 0, 5, 5),
                                     disconnect_after_s=2.0)
    values.update(overrides)
    return RateLimits(**values)  # type: ignore[arg-type]


def test_a_gossip_flood_is_dropped_and_never_spends_the_consensus_budget() -> None:
    limiter = PeerRateLimiter(limits(), now=0.0)
    verdicts = [limiter.on_frame("gossip", 100, 0.0) for _ in range(50)]
    assert verdicts.count(Verdict.ACCEPT) == 5 and verdicts.count(Verdict.DROP) == 45
    assert Verdict.DISCONNECT not in verdicts  # gossip over budget never disconnects
    assert all(limiter.on_frame("consensus", 100, 0.0) is Verdict.ACCEPT for _ in range(10))


def test_the_byte_budget_limits_independently_of_the_message_budget() -> None:
    limiter = PeerRateLimiter(limits(gossip=Budget(1000, 1000, 0, 0)), now=0.0)
    assert limiter.on_frame("gossip", 600, 0.0) is Verdict.ACCEPT
    assert limiter.on_frame("gossip", 600, 0.0) is Verdict.DROP
    assert limiter.on_frame("gossip", 600, 0.2) is Verdict.ACCEPT  # 400 + 200 earned


def test_a_peer_persistently_over_its_consensus_budget_is_disconnected() -> None:
    limiter = PeerRateLimiter(limits(), now=0.0)
    now, verdicts = 0.0, []
    while now < 3.0:  # 100 frames/s against a budget of 10/s
        verdicts.append((now, limiter.on_frame("consensus", 10, now)))
        now = round(now + 0.01, 2)
    first_drop = next(t for t, v in verdicts if v is Verdict.DROP)
    first_disconnect = next(t for t, v in verdicts if v is Verdict.DISCONNECT)
    assert first_drop == pytest.approx(0.1)
    assert first_disconnect - first_drop == pytest.approx(2.0)


def test_a_brief_consensus_burst_that_recovers_is_never_disconnected() -> None:
    limiter = PeerRateLimiter(limits(), now=0.0)
    for second in range(10):  # every second: a burst of 12 (2 over), then quiet
        verdicts = [limiter.on_frame("consensus", 10, float(second)) for _ in range(12)]
        assert Verdict.DISCONNECT not in verdicts
        assert verdicts.count(Verdict.DROP) == (2 if second == 0 else 12 - 10)


def test_disabled_limits_accept_everything() -> None:
    limiter = PeerRateLimiter(limits(enabled=False), now=0.0)
    assert all(limiter.on_frame("consensus", 10**6, 0.0) is Verdict.ACCEPT for _ in range(1000))


def test_the_default_budgets_never_throttle_an_honest_peer_at_full_load() -> None:
    # 3,500 tx/s of ~300 B: ~1 MB/s of proposals and ~1 MB/s of gossip (batches of 512
    # txs, or worst case one frame per tx), plus votes: 4 per height at 50 heights/s,
    # after a reconnect flush of a full 4,096-frame queue. 10 virtual seconds.
    limiter = PeerRateLimiter(RateLimits(), now=0.0)
    for frame in range(4096):
        assert limiter.on_frame("consensus", 200, 0.0) is Verdict.ACCEPT
    for tick in range(1, 10 * 50 + 1):  # 50 heights/s
        now = tick / 50
        assert limiter.on_frame("consensus", 1_000_000 // 50, now) is Verdict.ACCEPT  # proposal
        for _ in range(4):
            assert limiter.on_frame("consensus", 200, now) is Verdict.ACCEPT
        for _ in range(70):  # 3,500 single-tx gossip frames/s
            assert limiter.on_frame("gossip", 300, now) is Verdict.ACCEPT


# --------------------------------------------------------- real links (loopback)


class ManualClock:
    """Time for the victim's rate limits, advanced only by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(index: int, clock: ManualClock | None = None, rate_limits: RateLimits | None = None) -> P2P:
    config = P2PConfig(listen_port=0, backoff_initial_s=0.01, backoff_max_s=0.2,
                       rate_limits=rate_limits or RateLimits())
    if clock is None:
        return P2P(NodeIdentity.create(KEYS[index], CHAIN), config, ALLOWED.__contains__)
    return P2P(NodeIdentity.create(KEYS[index], CHAIN), config, ALLOWED.__contains__, clock=clock)


class Progress:
    """Wakes the test whenever a handler ran or the victim's p2p state changed."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def poke(self) -> None:
        self._event.set()

    async def until(self, predicate) -> None:  # type: ignore[no-untyped-def]
        while not predicate():
            self._event = trio.Event()
            await self._event.wait()

    async def watch(self, p2p: P2P) -> None:
        seen = p2p.changes
        while True:
            await p2p.wait_for_change(seen)
            seen = p2p.changes
            self.poke()


async def test_a_flooding_peer_is_throttled_then_disconnected_while_an_honest_peer_is_not() -> None:
    clock = ManualClock()
    victim = make(0, clock, limits(consensus=Budget(0, 0, 16, 16), gossip=Budget(0, 0, 10, 10),
                                   disconnect_after_s=1.0))
    flooder, honest = make(1), make(2)
    victim_key, flooder_key, honest_key = (k.public_key for k in KEYS)
    received: dict[tuple[bytes, int], int] = {}
    progress = Progress()

    async def handler(peer: bytes, channel: int, payload: bytes) -> None:
        received[(peer, channel)] = received.get((peer, channel), 0) + 1
        progress.poke()

    def got(peer: bytes, channel: int) -> int:
        return received.get((peer, channel), 0)

    victim.on(CHANNEL_TX, handler)
    victim.on(CHANNEL_CONSENSUS, handler)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for node in (victim, flooder, honest):
                await nursery.start(node.run)
            nursery.start_soon(progress.watch, victim)
            for node in (flooder, honest):
                node.add_peer_address(PeerAddress(victim_key, "127.0.0.1", victim.port))
            await victim.wait_for_peers(2)

            # 1. a gossip flood at t=0: the flooder's 10-frame gossip budget passes and the
            #    rest is dropped; the honest peer's txs all arrive (its own budget)
            for i in range(200):
                assert flooder.send(victim_key, CHANNEL_TX, b"tx%d" % i)
            for i in range(5):
                assert honest.send(victim_key, CHANNEL_TX, b"honest%d" % i)
            await progress.until(lambda: got(flooder_key, CHANNEL_TX)
                                 + victim.rate_limited[(flooder_key, "gossip")] == 200
                                 and got(honest_key, CHANNEL_TX) == 5)
            assert got(flooder_key, CHANNEL_TX) == 10
            assert victim.rate_limited[(flooder_key, "gossip")] == 190
            assert victim.counters["rate_limited_gossip"] == 190
            assert victim.rate_limited[(honest_key, "gossip")] == 0
            assert set(victim.peers) == {flooder_key, honest_key}  # gossip floods never disconnect

            # 2. the flooder's consensus budget is separate and untouched by its gossip flood
            for i in range(16):
                flooder.send(victim_key, CHANNEL_CONSENSUS, b"vote%d" % i)
            await progress.until(lambda: got(flooder_key, CHANNEL_CONSENSUS) == 16)
            assert victim.rate_limited[(flooder_key, "consensus")] == 0

            # 3. a consensus flood: 10 frames per 1/8 s against 16/s; dropped first, and
            #    disconnected once it has been over budget for 1 s without recovering
            step = 0
            while not victim.rate_limit_disconnects[flooder_key]:
                step += 1
                clock.now = step / 8  # earns 2 frames (exact in binary): 2 pass, 8 are dropped
                before = victim.rate_limited[(flooder_key, "consensus")]
                for i in range(10):
                    flooder.send(victim_key, CHANNEL_CONSENSUS, b"flood%d.%d" % (step, i))
                await progress.until(lambda: victim.rate_limited[(flooder_key, "consensus")] >= before + 8
                                     or victim.rate_limit_disconnects[flooder_key] > 0)
                assert step <= 20
            assert clock.now == 1.125  # first dropped at t = 0.125, 1 s earlier
            assert victim.counters["rate_limit_disconnects"] == 1
            # steps 1-8 drop 8 each; step 9 passes 2, and its 3rd frame disconnects
            assert victim.rate_limited[(flooder_key, "consensus")] == 8 * 8 + 1

            # 4. the honest peer stayed connected and its votes still arrive
            honest.send(victim_key, CHANNEL_CONSENSUS, b"vote")
            await progress.until(lambda: got(honest_key, CHANNEL_CONSENSUS) == 1)
            assert honest_key in victim.peers
            assert victim.rate_limited[(honest_key, "consensus")] == 0
            assert victim.rate_limit_disconnects[honest_key] == 0
            nursery.cancel_scope.cancel()


def test_rate_limit_counters_are_exported_per_peer_and_kind() -> None:
    import collections

    from node.metrics import NodeMetrics, RuntimeCollector, peer_label
    from tests.node.test_metrics import FakeRuntime

    runtime = FakeRuntime()
    runtime.p2p = type("FakeP2P", (), {})()  # type: ignore[attr-defined]
    runtime.p2p.rate_limited = collections.Counter({(KEYS[1].public_key, "gossip"): 190,  # type: ignore[attr-defined]
                                                    (KEYS[1].public_key, "consensus"): 65})
    runtime.p2p.rate_limit_disconnects = collections.Counter({KEYS[1].public_key: 1})  # type: ignore[attr-defined]
    metrics = NodeMetrics()
    collector = RuntimeCollector(runtime, metrics)
    collector.refresh()
    runtime.p2p.rate_limited[(KEYS[1].public_key, "gossip")] += 10  # type: ignore[attr-defined]
    collector.refresh()
    reg, peer = metrics.registry, peer_label(KEYS[1].public_key)
    assert reg.get_sample_value("careledger_p2p_rate_limited_total", {"peer": peer, "kind": "gossip"}) == 200
    assert reg.get_sample_value("careledger_p2p_rate_limited_total", {"peer": peer, "kind": "consensus"}) == 65
    assert reg.get_sample_value("careledger_p2p_rate_limit_disconnects_total", {"peer": peer}) == 1


# ---------------------------------------------- per-IP inbound admission, live


async def half_open_from(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:`port` from loopback address `source`
    (Linux routes all of 127/8 to lo) that never starts a handshake."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():
        await trio.sleep(0.005)  # polling the accept loop's counters, bounded by the caller's fail_after


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    """True if the node closed `stream` (EOF or reset) without sending anything."""
    try:
        return await stream.receive_some(1) == b""
    except trio.BrokenResourceError:
        return True


async def test_half_open_connections_over_the_per_ip_cap_are_closed_unread_and_a_validator_still_connects() -> None:
    victim = make(0, rate_limits=RateLimits(inbound=InboundLimits(max_pending_per_ip=2, per_ip_per_s=0,
                                                                  per_ip_burst=0)))
    validator = make(1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(victim.run)
            assert victim.port is not None
            attacker: list[trio.SocketStream] = []
            for i in range(5):  # one at a time, so the first two are the admitted ones
                attacker.append(await half_open_from("127.0.0.2", victim.port))
                await until(lambda: victim._inbound_gate.pending.get("127.0.0.2", 0)
                            + victim.counters["inbound_refused_pending_per_ip"] == i + 1)
            assert victim._inbound_gate.pending["127.0.0.2"] == 2
            assert victim.counters["inbound_refused_pending_per_ip"] == 3
            for stream in attacker[2:]:
                assert await closed_by_peer(stream)  # closed at once: no handshake timeout waited
            assert victim.counters["handshake_failures_disconnected"] == 0  # the two still pending

            # an allowed validator (from 127.0.0.1) completes its handshake meanwhile
            validator_scope = trio.CancelScope()

            async def run_validator(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
                with validator_scope:
                    await validator.run(task_status=task_status)

            await nursery.start(run_validator)
            validator.add_peer_address(PeerAddress(KEYS[0].public_key, "127.0.0.1", victim.port))
            await victim.wait_for_peers(1)
            assert set(victim.peers) == {KEYS[1].public_key}
            assert victim.counters["inbound_refused_pending_per_ip"] == 3

            # the attacker's slots come back when its half-open links end
            for stream in attacker[:2]:
                await stream.aclose()
            await until(lambda: "127.0.0.2" not in victim._inbound_gate.pending)
            assert victim._handshake_slots.value == 64
            nursery.cancel_scope.cancel()


async def test_a_burst_of_new_connections_from_one_ip_is_refused_and_admitted_again_later() -> None:
    clock = ManualClock()
    victim = make(0, clock, RateLimits(inbound=InboundLimits(max_pending_per_ip=16, per_ip_per_s=2,
                                                             per_ip_burst=3)))
    validator = make(1)

    def seen(ip: str) -> int:
        return (victim._inbound_gate.pending.get(ip, 0) + victim.counters["inbound_refused_rate_per_ip"]
                + victim.counters["handshake_failures_disconnected"])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(victim.run)
            assert victim.port is not None
            outcomes: list[bool] = []  # True: closed by the victim at once
            streams: list[trio.SocketStream] = []
            for i in range(6):  # a burst at t = 0: three admitted, three refused
                streams.append(await half_open_from("127.0.0.2", victim.port))
                await until(lambda: seen("127.0.0.2") == i + 1)
            assert victim.counters["inbound_refused_rate_per_ip"] == 3
            assert victim._inbound_gate.pending["127.0.0.2"] == 3
            for stream in streams[3:]:
                outcomes.append(await closed_by_peer(stream))
            assert outcomes == [True, True, True]

            # another IP (the validator dials from 127.0.0.1) has its own bucket
            await nursery.start(validator.run)
            validator.add_peer_address(PeerAddress(KEYS[0].public_key, "127.0.0.1", victim.port))
            await victim.wait_for_peers(1)

            # time passes: 0.5 s earns one connection, which is admitted; the next is refused
            clock.now = 0.5
            streams.append(await half_open_from("127.0.0.2", victim.port))
            await until(lambda: victim._inbound_gate.pending.get("127.0.0.2", 0) == 4)
            streams.append(await half_open_from("127.0.0.2", victim.port))
            await until(lambda: victim.counters["inbound_refused_rate_per_ip"] == 4)
            assert await closed_by_peer(streams[-1])
            assert victim._inbound_gate.pending["127.0.0.2"] == 4
            assert set(victim.peers) == {KEYS[1].public_key}  # the authenticated link is untouched
            nursery.cancel_scope.cancel()


def test_inbound_refusals_are_exported_by_reason() -> None:
    import collections

    from node.metrics import NodeMetrics, RuntimeCollector
    from tests.node.test_metrics import FakeRuntime as BaseRuntime

    class FakeRuntime(BaseRuntime):
        def counters(self) -> dict[str, dict[str, int]]:
            return {"p2p": dict(self.p2p_counters)}  # type: ignore[attr-defined]

    runtime = FakeRuntime()
    runtime.p2p_counters = collections.Counter(  # type: ignore[attr-defined]
        {"inbound_refused_pending_per_ip": 3, "inbound_refused_rate_per_ip": 5, "connections": 2})
    metrics = NodeMetrics()
    collector = RuntimeCollector(runtime, metrics)
    collector.refresh()
    runtime.p2p_counters["inbound_refused_rate_per_ip"] += 2  # type: ignore[attr-defined]
    collector.refresh()
    reg = metrics.registry
    assert reg.get_sample_value("careledger_p2p_inbound_refused_total", {"reason": "pending_per_ip"}) == 3
    assert reg.get_sample_value("careledger_p2p_inbound_refused_total", {"reason": "rate_per_ip"}) == 7
