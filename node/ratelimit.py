"""Per-peer rate limits: token buckets for bytes and messages, time passed in.

Every authenticated peer gets two budgets, each a pair of buckets (bytes per
second and messages per second):

- `consensus`: consensus votes and proposals plus block-sync requests and
  responses (the traffic that keeps the chain moving);
- `gossip`: transaction gossip (single txs and batches).

They are separate so a peer flooding transactions exhausts only its own
gossip budget and can never starve votes. What happens over budget:

- gossip: the frame is dropped and counted (transactions are re-submitted or
  re-gossiped by honest nodes; nothing depends on one gossip frame);
- consensus: the frame is dropped and counted (PBFT retransmits and fetches),
  and a peer that stays over its consensus budget for `disconnect_after_s`
  (its bucket never refills to half) is disconnected: an honest node's
  bursts drain quickly, a flood does not.

Pure logic: the caller passes `now` (seconds, any monotonic origin), so the
node uses trio's clock (`trio.current_time`, virtual under MockClock) and
tests step time by hand without sleeping. A bucket holds at most `burst`
tokens and gains `rate` per second; a cost above `burst` (a frame larger than
the byte burst) passes only when the bucket is full and leaves it in debt, so
one large honest frame is never refused forever. A rate of 0 disables that
bucket (unlimited).

Before any handshake, `InboundGate` limits new inbound connections per
remote IP (`ip_key`: an IPv4 address, or an IPv6 /64): at most
`max_pending_per_ip` of them may be in their (unauthenticated) handshake at
once, and new ones are charged to a per-IP token bucket of `per_ip_per_s`
connections per second up to `per_ip_burst`. A refused connection is closed
before anything is read from it, so it costs no Noise work.
"""

from __future__ import annotations

import collections
import enum
import ipaddress
from dataclasses import dataclass, field

KINDS = ("consensus", "gossip")


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    DISCONNECT = "disconnect"


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full. rate 0 = unlimited."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 0 or (rate > 0 and burst <= 0):
            raise ValueError("a token bucket needs rate >= 0 and, when limited, burst > 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last call (a clock going back adds none)."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def try_take(self, cost: float, now: float) -> bool:
        """Take `cost` tokens if the bucket holds them (or is full, for a cost
        above the burst); False leaves the bucket unchanged."""
        if self.unlimited:
            return True
        self.refill(now)
        if self.tokens >= min(cost, self.burst):
            self.tokens -= cost
            return True
        return False

    def fill_ratio(self, now: float) -> float:
        """Tokens held as a fraction of the burst (1.0 when unlimited)."""
        if self.unlimited:
            return 1.0
        self.refill(now)
        return self.tokens / self.burst


@dataclass(frozen=True)
class Budget:
    """One traffic kind's limits; 0 disables that limit."""

    bytes_per_s: float
    burst_bytes: float
    msgs_per_s: float
    burst_msgs: float


@dataclass(frozen=True)
class InboundLimits:
    """Per-remote-IP limits on inbound connections before their handshake.

    Sized so that one host running a whole local cluster never hits them: in
    a loopback testnet every node shares 127.0.0.1, validators dial every
    validator and observers dial every validator, so a validator of a V + O
    node cluster sees at most V - 1 + O handshakes from 127.0.0.1 at once
    (16 covers 7 validators + 10 observers) and the same number of new
    connections whenever it (re)starts or all its links drop; the burst holds
    two such waves back to back and the rate refills one in two seconds.
    An attacker on one address still holds at most 16 of the node's 64
    handshake slots and pays for at most 8 handshakes per second.
    """

    max_pending_per_ip: int = 16  # >= 1: inbound links of one IP in their handshake at once
    per_ip_per_s: float = 8.0  # new inbound connections per second per IP; 0 disables the bucket
    per_ip_burst: float = 32.0
    max_tracked_ips: int = 4096  # per-IP buckets kept (least recently used evicted)

    def __post_init__(self) -> None:
        if self.max_pending_per_ip < 1 or self.max_tracked_ips < 1:
            raise ValueError("max_pending_per_ip and max_tracked_ips must be >= 1")
        if self.per_ip_per_s < 0 or self.per_ip_burst < 0 or (self.per_ip_per_s > 0 and self.per_ip_burst < 1):
            raise ValueError("per_ip_per_s must be >= 0 and, when it limits, per_ip_burst >= 1")


@dataclass(frozen=True)
class RateLimits:
    """Per-peer budgets (defaults as `[p2p]` in node/config.py documents them),
    and the per-IP limits on inbound connections before their handshake
    (`inbound`, which `enabled` does not switch off).

    Sized never to throttle an honest 4–7 validator cluster at full load
    (target 3,500 tx/s ≈ 1 MB/s of blocks from the primary and the same in
    gossip from a node clients submit to): rates are 10–30× that, and the
    bursts hold a whole send queue (4,096 frames) plus several maximal frames,
    which is what a peer flushes after a reconnect.
    """

    consensus: Budget = Budget(32 * 1024 * 1024, 64 * 1024 * 1024, 5_000, 10_000)
    gossip: Budget = Budget(8 * 1024 * 1024, 32 * 1024 * 1024, 10_000, 20_000)
    disconnect_after_s: float = 5.0  # continuously over the consensus budget this long
    enabled: bool = True  # the per-peer budgets only; `inbound` has its own switches
    inbound: InboundLimits = field(default_factory=InboundLimits)


def ip_key(host: str) -> str:
    """The address a remote `host` is limited as: an IPv4 address (also when
    IPv4-mapped), or an IPv6 /64 (one subscriber's usual allocation, so
    rotating addresses inside it does not escape the limit). Other text (not
    an IP literal) is its own key."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class InboundGate:
    """Admission of inbound connections per remote IP (pure: `now` passed in).

    `admit(ip, now)` returns None and counts the connection as pending, or a
    refusal reason ("pending_per_ip", "rate_per_ip") and changes nothing but
    the bucket's refill; every admitted connection must be `release`d once its
    handshake ends. Memory is bounded: pending counts exist only for IPs with a
    pending link, and at most `max_tracked_ips` buckets are kept (evicting the
    least recently used one only ever gives that IP a fresh burst).
    """

    def __init__(self, limits: InboundLimits) -> None:
        self.limits = limits
        self.pending: dict[str, int] = {}
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def admit(self, ip: str, now: float) -> str | None:
        if self.pending.get(ip, 0) >= self.limits.max_pending_per_ip:
            return "pending_per_ip"
        if self.limits.per_ip_per_s > 0:
            bucket = self._buckets.get(ip)
            if bucket is None:
                bucket = TokenBucket(self.limits.per_ip_per_s, self.limits.per_ip_burst, now)
                self._buckets[ip] = bucket
                while len(self._buckets) > self.limits.max_tracked_ips:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(ip)
            if not bucket.try_take(1, now):
                return "rate_per_ip"
        self.pending[ip] = self.pending.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        """One admitted connection of `ip` finished its handshake (any outcome)."""
        left = self.pending.get(ip, 0) - 1
        if left > 0:
            self.pending[ip] = left
        else:
            self.pending.pop(ip, None)


class _Pair:
    __slots__ = ("bytes", "msgs")

    def __init__(self, budget: Budget, now: float) -> None:
        self.bytes = TokenBucket(budget.bytes_per_s, budget.burst_bytes, now)
        self.msgs = TokenBucket(budget.msgs_per_s, budget.burst_msgs, now)

    def try_take(self, size: int, now: float) -> bool:
        # check both before taking either, so a refusal changes nothing
        self.bytes.refill(now)
        self.msgs.refill(now)
        if not self.bytes.unlimited and self.bytes.tokens < min(size, self.bytes.burst):
            return False
        if not self.msgs.unlimited and self.msgs.tokens < 1:
            return False
        self.bytes.try_take(size, now)
        self.msgs.try_take(1, now)
        return True

    def recovered(self, now: float) -> bool:
        """Both buckets at least half full again: the peer slowed down."""
        return self.bytes.fill_ratio(now) >= 0.5 and self.msgs.fill_ratio(now) >= 0.5


class PeerRateLimiter:
    """The budgets of one peer link. `on_frame(kind, size, now)` → Verdict."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self._budgets = {"consensus": _Pair(limits.consensus, now), "gossip": _Pair(limits.gossip, now)}
        self.over_since: float | None = None  # first consensus overrun not yet recovered from

    def on_frame(self, kind: str, size: int, now: float) -> Verdict:
        """Charge one received frame of `size` bytes to `kind`'s budget.

        Raises KeyError for an unknown kind (a caller bug, not a peer's).
        """
        pair = self._budgets[kind]
        if not self.limits.enabled:
            return Verdict.ACCEPT
        if kind == "consensus" and self.over_since is not None and pair.recovered(now):
            self.over_since = None
        if pair.try_take(size, now):
            return Verdict.ACCEPT
        if kind != "consensus":
            return Verdict.DROP
        if self.over_since is None:
            self.over_since = now
        elif now - self.over_since >= self.limits.disconnect_after_s:
            return Verdict.DISCONNECT
        return Verdict.DROP
