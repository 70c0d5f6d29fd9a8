"""Peer-to-peer transport: authenticated TCP links between allowed nodes.

- Listens on `listen_host:listen_port` and dials every configured
  `key@host:port` peer, redialling with capped exponential backoff + jitter.
- Every link runs the Noise XX handshake of `node.handshake`; only keys the
  `is_allowed` policy accepts (genesis validators, observer allowlist) stay.
- One link per peer key: if both sides dial each other, the link dialled by
  the smaller key survives (both sides pick the same one).
- A frame is `channel byte ‖ payload`. Per peer there are two bounded send
  queues: consensus and sync traffic first, transaction gossip only when the
  first is empty. A full gossip queue drops (counted); a full consensus queue
  drops too (PBFT retransmits and fetches), also counted.
- Received frames go to the handler registered for their channel; a
  malformed or oversize frame, or an unknown channel, disconnects the peer and
  counts `frames_rejected{reason}`.
- Per-peer rate limits (`node.ratelimit`): before its handler runs, every
  received frame is charged to the peer's `consensus` budget (consensus and
  sync channels) or its `gossip` budget (tx channels), each a token bucket of
  bytes and one of messages per second. Excess gossip is dropped; excess
  consensus traffic is dropped, and a peer over its consensus budget for
  `disconnect_after_s` is disconnected. Budgets belong to the peer's key, so
  reconnecting does not refill them. Both are counted per peer key and kind
  (`rate_limited[(peer key, kind)]`, `rate_limit_disconnects[peer key]`) and in
  `counters` (`rate_limited_<kind>`, `rate_limit_disconnects`). Time comes from
  the injected `clock` (trio's by default).
- Before any handshake, inbound connections are admitted per remote IP
  (`node.ratelimit.InboundGate`, limits in `rate_limits.inbound`): at most
  `max_pending_per_ip` of one IP's links in their handshake at once, and new
  ones charged to a per-IP token bucket; over either, and over the node-wide
  `MAX_PENDING_HANDSHAKES`, the connection is closed before anything is read
  and counted in `counters` as `inbound_refused_<reason>` (`pending_per_ip`,
  `rate_per_ip`, `busy`, `gone`: reset before it was looked at).
  Authenticated links are never affected.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Container

import msgpack
import structlog
import trio

from node.framing import FrameError, PeerDisconnected
from node.handshake import HandshakeError, NodeIdentity, SecureChannel, perform_handshake
from node.ratelimit import InboundGate, PeerRateLimiter, RateLimits, Verdict, ip_key

log = structlog.get_logger("careledger.p2p")

CHANNEL_CONSENSUS = 1
CHANNEL_TX = 2
CHANNEL_SYNC_REQUEST = 3
CHANNEL_SYNC_RESPONSE = 4
CHANNEL_TX_BATCH = 5  # several raw txs in one frame (`encode_tx_batch`): gossip at load
HIGH_PRIORITY = frozenset({CHANNEL_CONSENSUS, CHANNEL_SYNC_REQUEST, CHANNEL_SYNC_RESPONSE})
CHANNELS = HIGH_PRIORITY | {CHANNEL_TX, CHANNEL_TX_BATCH}
MAX_TX_BATCH_BYTES = 1024 * 1024  # one gossip frame's payload, well below max_frame_bytes
MAX_TX_BATCH_COUNT = 4096
MAX_PENDING_HANDSHAKES = 64  # inbound links not yet authenticated, at once
GOSSIP_CHANNELS = frozenset({CHANNEL_TX, CHANNEL_TX_BATCH})


def rate_kind(channel: int) -> str:
    """The budget a received frame of `channel` is charged to (node.ratelimit.KINDS)."""
    return "gossip" if channel in GOSSIP_CHANNELS else "consensus"

Handler = Callable[[bytes, int, bytes], Awaitable[None]]


def encode_tx_batch(raws: list[bytes]) -> bytes:
    """A CHANNEL_TX_BATCH payload: a msgpack array of byte strings (each one raw tx)."""
    return msgpack.packb(raws, use_bin_type=True)


def decode_tx_batch(payload: bytes) -> list[bytes]:
    """The raw txs of a CHANNEL_TX_BATCH payload. Raises FrameError("malformed").

    Only the container is parsed here; each tx is decoded (canonically) and
    verified by the mempool like a single gossiped tx.
    """
    try:
        raws = msgpack.unpackb(payload, raw=False, use_list=True, max_array_len=MAX_TX_BATCH_COUNT,
                               max_bin_len=MAX_TX_BATCH_BYTES, max_str_len=0, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises several types for bad input
        raise FrameError("malformed", "bad tx batch: %s" % type(exc).__name__) from exc
    if not isinstance(raws, list) or not all(isinstance(raw, bytes) for raw in raws):
        raise FrameError("malformed", "a tx batch is an array of byte strings")
    return raws


def chunk_tx_batch(raws: list[bytes], max_bytes: int = MAX_TX_BATCH_BYTES,
                   max_count: int = MAX_TX_BATCH_COUNT) -> list[list[bytes]]:
    """Split `raws` into lists that each fit one CHANNEL_TX_BATCH frame."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for raw in raws:
        if current and (size + len(raw) + 8 > max_bytes or len(current) >= max_count):
            chunks.append(current)
            current, size = [], 0
        current.append(raw)
        size += len(raw) + 8
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True)
class PeerAddress:
    public_key: bytes
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "PeerAddress":
        """`<hex ed25519 key>@host:port`. Raises ValueError if malformed."""
        key_hex, _, hostport = text.strip().partition("@")
        host, _, port = hostport.rpartition(":")
        key = bytes.fromhex(key_hex)
        if len(key) != 32 or not host or not port.isdigit():
            raise ValueError("peer address must be <64 hex>@host:port, got %r" % text)
        return cls(key, host, int(port))

    def __str__(self) -> str:
        return "%s@%s:%d" % (self.public_key.hex(), self.host, self.port)


@dataclass
class P2PConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 26656
    peers: list[PeerAddress] = field(default_factory=list)
    max_frame_bytes: int = 16 * 1024 * 1024
    handshake_timeout_s: float = 10.0
    dial_timeout_s: float = 3.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 10.0
    consensus_queue: int = 4096
    gossip_queue: int = 2048
    rate_limits: RateLimits = field(default_factory=RateLimits)


class Peer:
    """One live, authenticated link and its two outgoing queues."""

    def __init__(self, public_key: bytes, outbound: bool, channel: SecureChannel, config: P2PConfig,
                 limiter: PeerRateLimiter | None = None) -> None:
        self.public_key = public_key
        self.outbound = outbound
        self.channel = channel
        self.high: collections.deque[bytes] = collections.deque()
        self.low: collections.deque[bytes] = collections.deque()
        self._config = config
        self._ready = trio.Event()
        self.closed = trio.Event()
        self.cancel_scope = trio.CancelScope()
        self.sent_bytes = 0
        self.received_bytes = 0
        self.limiter = limiter if limiter is not None else PeerRateLimiter(config.rate_limits, 0.0)

    def enqueue(self, channel: int, data: bytes) -> bool:
        """Queue one frame; False if its queue is full (dropped)."""
        frame = bytes((channel,)) + data
        if channel in HIGH_PRIORITY:
            if len(self.high) >= self._config.consensus_queue:
                return False
            self.high.append(frame)
        else:
            if len(self.low) >= self._config.gossip_queue:
                return False
            self.low.append(frame)
        self._ready.set()
        return True

    async def next_frame(self) -> bytes:
        while not self.high and not self.low:
            self._ready = trio.Event()
            await self._ready.wait()
        return self.high.popleft() if self.high else self.low.popleft()

    def close(self) -> None:
        self.cancel_scope.cancel()


class P2P:
    """The node's peer set. Start with `await nursery.start(p2p.run)` (returns the port)."""

    def __init__(self, identity: NodeIdentity, config: P2PConfig, is_allowed: Callable[[bytes], bool],
                 *, clock: Callable[[], float] = trio.current_time) -> None:
        """`clock`: seconds for the rate limits (trio's clock: virtual under MockClock)."""
        self.identity = identity
        self.clock = clock
        self.config = config
        self.is_allowed = is_allowed
        self.peers: dict[bytes, Peer] = {}
        self.handlers: dict[int, Handler] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        # frames dropped over budget per (peer key, kind), and rate-limit disconnects per
        # peer key; kept across reconnects (bounded by the allowlist)
        self.rate_limited: collections.Counter[tuple[bytes, str]] = collections.Counter()
        self.rate_limit_disconnects: collections.Counter[bytes] = collections.Counter()
        # one limiter per peer KEY, not per link: reconnecting does not refill a budget
        self._limiters: dict[bytes, PeerRateLimiter] = {}
        self.port: int | None = None
        self.peer_connected = trio.Event()  # re-armed on every change, for waiters
        self.changes = 0  # peer-set and rate-limit changes so far (`wait_for_change`)
        self._on_change: list[Callable[[], None]] = []
        self._random = random.Random()
        # inbound connections still in their (unauthenticated) handshake: bounded,
        # so anyone who can reach the port cannot hold unbounded tasks and sockets
        self._handshake_slots = trio.Semaphore(MAX_PENDING_HANDSHAKES)
        # ... and per remote IP, before any handshake work is spent on them
        self._inbound_gate = InboundGate(config.rate_limits.inbound)

    # -------------------------------------------------------------- public API

    def on(self, channel: int, handler: Handler) -> None:
        """Register `await handler(peer_key, channel, payload)` for a channel."""
        self.handlers[channel] = handler

    def send(self, peer_key: bytes, channel: int, data: bytes) -> bool:
        peer = self.peers.get(peer_key)
        if peer is None:
            self.counters["send_no_peer"] += 1
            return False
        if not peer.enqueue(channel, data):
            self.counters["dropped_%s" % ("consensus" if channel in HIGH_PRIORITY else "gossip")] += 1
            return False
        return True

    def broadcast(self, channel: int, data: bytes, exclude: bytes | None = None,
                  only: Container[bytes] | None = None) -> int:
        """Queue `data` to every peer (but `exclude`, and only keys in `only` if given)."""
        sent = 0
        for key in list(self.peers):
            if key != exclude and (only is None or key in only) and self.send(key, channel, data):
                sent += 1
        return sent

    def peer_keys(self) -> list[bytes]:
        return sorted(self.peers)

    def info(self) -> list[dict[str, object]]:
        return [
            {"public_key": p.public_key.hex(), "outbound": p.outbound, "sent_bytes": p.sent_bytes,
             "received_bytes": p.received_bytes, "queued": len(p.high) + len(p.low)}
            for p in sorted(self.peers.values(), key=lambda p: p.public_key)
        ]

    async def wait_for_peers(self, count: int) -> None:
        """Return once at least `count` peers are connected (caller bounds the wait)."""
        while len(self.peers) < count:
            event = trio.Event()
            self._on_change.append(event.set)
            await event.wait()

    async def wait_for_change(self, seen: int | None = None) -> None:
        """Return at the next change of the peer set or of the rate-limit
        counters (callers loop on their own condition); at once if `changes`
        already moved past `seen` (so a caller never misses one)."""
        if seen is not None and self.changes > seen:
            return
        event = trio.Event()
        self._on_change.append(event.set)
        await event.wait()

    # ------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial the configured peers, and serve links until cancelled."""
        listeners = await trio.open_tcp_listeners(self.config.listen_port, host=self.config.listen_host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._accept_loop, listeners)
            for address in self.config.peers:
                if address.public_key != self.identity.public_key:
                    nursery.start_soon(self._dial_loop, address)
            task_status.started(self.port)

    def add_peer_address(self, address: PeerAddress) -> None:
        """Start dialling another peer (after `run` has started)."""
        self._nursery.start_soon(self._dial_loop, address)

    async def _accept_loop(self, listeners: list[trio.SocketListener]) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_on, listener, nursery)

    async def _accept_on(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # e.g. EMFILE: back off, do not die
                    self.counters["accept_errors"] += 1
                    log.warning("accept failed", error=str(exc))
                    await trio.sleep(0.1)
                    continue
                ip, reason = self._admit(stream)
                if reason is not None:
                    self.counters["inbound_refused_%s" % reason] += 1
                    await trio.aclose_forcefully(stream)  # closed unread: no handshake work
                    continue
                nursery.start_soon(self._serve_stream, stream, False, None, ip)

    def _admit(self, stream: trio.SocketStream) -> tuple[str, str | None]:
        """(remote IP key, refusal reason or None) for a new inbound `stream`.

        Admitted: a handshake slot and a pending place of its IP are taken,
        both given back by `_serve_stream` when the handshake ends. Refused:
        nothing is taken."""
        if self._handshake_slots.value == 0:
            self.counters["handshakes_refused_busy"] += 1  # its older name, kept for dashboards
            return "", "busy"
        try:
            ip = ip_key(stream.socket.getpeername()[0])
        except OSError:  # already reset by the peer
            return "", "gone"
        reason = self._inbound_gate.admit(ip, self.clock())
        if reason is None:
            self._handshake_slots.acquire_nowait()  # value > 0 checked above, no await since
        return ip, reason

    async def _dial_loop(self, address: PeerAddress) -> None:
        failures = 0
        while True:
            existing = self.peers.get(address.public_key)
            if existing is not None:
                await existing.closed.wait()
                continue
            stream = None
            try:
                with trio.fail_after(self.config.dial_timeout_s):
                    stream = await trio.open_tcp_stream(address.host, address.port)
            except (OSError, trio.TooSlowError):
                self.counters["dial_failures"] += 1
            if stream is not None:
                if await self._serve_stream(stream, True, address.public_key):
                    failures = 0
                    continue
            failures += 1
            delay = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** min(failures - 1, 16))
            await trio.sleep(delay * (0.5 + self._random.random() / 2))

    async def _serve_stream(self, stream: trio.SocketStream, outbound: bool, expected: bytes | None,
                            admitted_ip: str | None = None) -> bool:
        """Handshake and serve one link; True if it was authenticated.

        `admitted_ip`: an inbound link admitted by `_admit` for that IP key; its
        handshake slot and per-IP pending place are released as soon as the
        handshake ends (whatever its outcome)."""
        try:
            try:
                try:
                    with trio.fail_after(self.config.handshake_timeout_s):
                        channel = await perform_handshake(
                            stream, self.identity, initiator=outbound, is_allowed=self.is_allowed,
                            expected_key=expected, max_frame_bytes=self.config.max_frame_bytes,
                        )
                finally:
                    if admitted_ip is not None:
                        self._handshake_slots.release()
                        self._inbound_gate.release(admitted_ip)
            except HandshakeError as exc:
                self.counters["handshake_failures_%s" % exc.reason] += 1
                log.info("handshake refused", reason=exc.reason, detail=str(exc), outbound=outbound)
                return False
            except (PeerDisconnected, trio.TooSlowError):
                self.counters["handshake_failures_disconnected"] += 1
                return False
            limiter = self._limiters.get(channel.peer_key)
            if limiter is None:
                limiter = self._limiters[channel.peer_key] = PeerRateLimiter(self.config.rate_limits, self.clock())
            peer = Peer(channel.peer_key, outbound, channel, self.config, limiter)
            if not self._register(peer):
                return True
            try:
                await self._serve_peer(peer)
            finally:
                self._unregister(peer)
            return True
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    def _register(self, peer: Peer) -> bool:
        """Install `peer`, resolving duplicate links; False if `peer` loses."""
        old = self.peers.get(peer.public_key)
        if old is not None:
            mine_smaller = self.identity.public_key < peer.public_key
            # the surviving link is the one the smaller key dialled
            keep_new = old.outbound == peer.outbound or peer.outbound == mine_smaller
            if not keep_new:
                self.counters["duplicate_links"] += 1
                return False
            old.close()
            self.counters["duplicate_links"] += 1
        self.peers[peer.public_key] = peer
        self.counters["connections"] += 1
        log.info("peer connected", peer=peer.public_key.hex()[:16], outbound=peer.outbound)
        self._changed()
        return True

    def _unregister(self, peer: Peer) -> None:
        if self.peers.get(peer.public_key) is peer:
            del self.peers[peer.public_key]
            log.info("peer disconnected", peer=peer.public_key.hex()[:16])
        peer.closed.set()
        self._changed()

    def _changed(self) -> None:
        self.changes += 1
        callbacks, self._on_change = self._on_change, []
        for callback in callbacks:
            callback()

    async def _serve_peer(self, peer: Peer) -> None:
        with peer.cancel_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, peer, self._writer)
                await self._guarded(peer, self._reader)

    async def _guarded(self, peer: Peer, run: Callable[[Peer], Awaitable[None]]) -> None:
        """Run a link task; any transport failure closes the whole link."""
        try:
            await run(peer)
        except FrameError as exc:
            self.counters["frames_rejected_%s" % exc.reason] += 1
            log.warning("peer sent a bad frame", peer=peer.public_key.hex()[:16], reason=exc.reason)
        except PeerDisconnected:
            pass
        finally:
            peer.close()

    async def _writer(self, peer: Peer) -> None:
        while True:
            frame = await peer.next_frame()
            await peer.channel.send_frame(frame)
            peer.sent_bytes += len(frame)
            self.counters["sent_bytes"] += len(frame)

    async def _reader(self, peer: Peer) -> None:
        while True:
            frame = await peer.channel.receive_frame()
            peer.received_bytes += len(frame)
            self.counters["received_bytes"] += len(frame)
            channel = frame[0]
            handler = self.handlers.get(channel)
            if channel not in CHANNELS:
                raise FrameError("malformed", "unknown channel %d" % channel)
            kind = rate_kind(channel)
            verdict = peer.limiter.on_frame(kind, len(frame), self.clock())
            if verdict is not Verdict.ACCEPT:
                self.rate_limited[(peer.public_key, kind)] += 1
                self.counters["rate_limited_%s" % kind] += 1
                if verdict is Verdict.DISCONNECT:
                    self.rate_limit_disconnects[peer.public_key] += 1
                    self.counters["rate_limit_disconnects"] += 1
                    log.warning("peer persistently over its consensus rate limit; disconnecting",
                                peer=peer.public_key.hex()[:16])
                    self._changed()
                    return
                self._changed()
                continue
            if handler is None:
                self.counters["unhandled_%d" % channel] += 1
                continue
            try:
                await handler(peer.public_key, channel, frame[1:])
            except (FrameError, PeerDisconnected):
                raise
            except Exception as exc:  # noqa: BLE001 - trio.Cancelled is a BaseException: not caught
                # A handler failing on what this peer sent must not take the
                # whole node down: count it and drop the link to that peer.
                self.counters["handler_errors"] += 1
                log.warning("handler failed on a peer message; disconnecting",
                            peer=peer.public_key.hex()[:16], channel=channel,
                            error="%s: %s" % (type(exc).__name__, exc))
                return
