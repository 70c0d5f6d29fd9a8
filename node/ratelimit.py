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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class RateLimits:
    """Per-peer budgets (defaults as `[p2p]` in node/config.py documents them).

    Sized never to throttle an honest 4–7 validator cluster at full load
    (target 3,500 tx/s ≈ 1 MB/s of blocks from the primary and the same in
    gossip from a node clients submit to): rates are 10–30× that, and the
    bursts hold a whole send queue (4,096 frames) plus several maximal frames,
    which is what a peer flushes after a reconnect.
    """

    consensus: Budget = Budget(32 * 1024 * 1024, 64 * 1024 * 1024, 5_000, 10_000)
    gossip: Budget = Budget(8 * 1024 * 1024, 32 * 1024 * 1024, 10_000, 20_000)
    disconnect_after_s: float = 5.0  # continuously over the consensus budget this long
    enabled: bool = True


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
