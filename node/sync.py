"""Block sync: certified blocks by request/response over p2p.

The replica decides *when* to fetch (a `FetchBlocks` effect when it sees a
quorum, checkpoint or decided block above its height); this module performs
it and answers other nodes' requests from the block store.

Request  (channel SYNC_REQUEST):  [request id, from height, to height]
Response (channel SYNC_RESPONSE): [request id, [[block wire, certificate wire], ...]]
Pruned   (channel SYNC_RESPONSE): [request id, [], earliest retained height]
    — the server pruned `from height` (`[storage] retain_blocks`). The fetcher
    notes that peer's floor (it only rises), never asks it for lower heights
    again, and asks another connected peer instead (at most
    MAX_PEERS_PER_FETCH per fetch). A server that lacks blocks for any other
    reason (not there yet) answers the prefix it has, maybe empty, as before.

The fetcher checks what it can without the validator schedule: consecutive
heights starting at `from`, each certificate names its block's hash and
height, each block's tx root, and the prev-hash chain inside the batch. The
replica then verifies every certificate's quorum against the height's
validator set and each header against its own executed chain before
committing; the executor re-checks prev_hash against the stored tip.
"""

from __future__ import annotations

import collections
import itertools
from typing import Callable

import trio

from ledger import codec
from ledger.errors import EncodeError, LedgerError
from ledger.types import Block, CommitCertificate

from node.p2p import CHANNEL_SYNC_REQUEST, CHANNEL_SYNC_RESPONSE, P2P
from node.store import BlockStore

MAX_BLOCKS_PER_RESPONSE = 128
MAX_PEERS_PER_FETCH = 4  # the asked peer, then others, when peers answer "pruned"
# One shared bound for a response's encoding, below the codec's message limit
# (codec.encode refuses more, and an EncodeError here used to escape the handler).
MAX_RESPONSE_BYTES = codec.MAX_MESSAGE_BYTES - 64 * 1024


class PeerPruned(Exception):
    """`peer` answered that it pruned the asked heights; it keeps blocks >= `earliest`."""

    def __init__(self, peer: bytes, earliest: int) -> None:
        super().__init__("peer %s keeps blocks >= %d only" % (peer.hex()[:16], earliest))
        self.peer = peer
        self.earliest = earliest


class BlockSync:
    def __init__(self, p2p: P2P, store: BlockStore, *, timeout_s: float = 2.0) -> None:
        self.p2p = p2p
        self.store = store
        self.timeout_s = timeout_s
        self.counters: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[bytes, trio.MemorySendChannel[tuple[list[object], int | None]]]] = {}
        self.peer_earliest: dict[bytes, int] = {}  # a peer's earliest retained height, from its "pruned" answers
        p2p.on(CHANNEL_SYNC_REQUEST, self._on_request)
        p2p.on(CHANNEL_SYNC_RESPONSE, self._on_response)

    # ---------------------------------------------------------------- server

    async def _on_request(self, peer: bytes, channel: int, payload: bytes) -> None:
        try:
            request_id, first, last = codec.decode(payload, max_bytes=256)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (request_id, first, last)):
                raise ValueError("non-integer field")
        except (LedgerError, ValueError, TypeError):
            self.counters["bad_requests"] += 1
            return
        self.counters["requests_served"] += 1
        start = max(1, first)
        if self.store.block_bytes(start) is None and start < self.store.earliest_height():
            self.counters["pruned_requests"] += 1
            answer = [request_id, [], self.store.earliest_height()]
            self.p2p.send(peer, CHANNEL_SYNC_RESPONSE, codec.encode(answer))
            return
        items: list[list[object]] = []
        size = 32  # [request id, array header]
        for height in range(max(1, first), min(last, first + MAX_BLOCKS_PER_RESPONSE - 1) + 1):
            block_data, cert_data = self.store.block_bytes(height), self.store.certificate_bytes(height)
            if block_data is None or cert_data is None:
                break
            # the item's exact encoding: [block, certificate] = 1 + both encodings
            item_size = 1 + len(block_data) + len(cert_data)
            if size + item_size > MAX_RESPONSE_BYTES:
                if not items:
                    self.counters["oversized_blocks"] += 1  # cannot be served in one response
                break
            size += item_size
            items.append([codec.decode(block_data), codec.decode(cert_data)])
        try:
            payload = codec.encode([request_id, items], max_bytes=MAX_RESPONSE_BYTES)
        except EncodeError:  # cannot happen with exact sizes; never crash the node over it
            self.counters["oversized_responses"] += 1
            payload = codec.encode([request_id, []])
        self.p2p.send(peer, CHANNEL_SYNC_RESPONSE, payload)

    async def _on_response(self, peer: bytes, channel: int, payload: bytes) -> None:
        try:
            request_id, items, *rest = codec.decode(payload)
            earliest = rest[0] if rest else None
            if len(rest) > 1 or not (earliest is None or (type(earliest) is int and earliest >= 1)):
                raise ValueError("bad pruned field")
        except (LedgerError, ValueError, TypeError):
            self.counters["bad_responses"] += 1
            return
        waiter = self._waiting.get(request_id) if isinstance(request_id, int) else None
        if waiter is None or waiter[0] != peer or not isinstance(items, list):
            self.counters["unexpected_responses"] += 1
            return
        try:
            waiter[1].send_nowait((items, earliest))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    # ---------------------------------------------------------------- client

    async def fetch(self, peer: bytes, first: int, last: int) -> list[tuple[Block, CommitCertificate]]:
        """Ask `peer` for blocks first..last; return the valid prefix of its answer
        (empty on timeout, disconnect or a bad answer). A peer known to have
        pruned `first`, or answering so, is passed over for the next connected
        peer not known to have (at most MAX_PEERS_PER_FETCH asked)."""
        asked = 0
        for candidate in [peer] + [key for key in self.p2p.peer_keys() if key != peer]:
            if self.peer_earliest.get(candidate, 1) > first:
                continue  # it said it pruned these heights; its floor only rises
            if asked == MAX_PEERS_PER_FETCH:
                break
            asked += 1
            try:
                return await self._fetch_from(candidate, first, last)
            except PeerPruned as exc:
                self.peer_earliest[exc.peer] = max(exc.earliest, self.peer_earliest.get(exc.peer, 1))
                self.counters["pruned_answers"] += 1
        self.counters["no_peer_has_blocks"] += 1
        return []

    async def _fetch_from(self, peer: bytes, first: int, last: int) -> list[tuple[Block, CommitCertificate]]:
        """One request to `peer`. Raises PeerPruned if it answers that it pruned `first`."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[tuple[list[object], int | None]](1)
        self._waiting[request_id] = (peer, send)
        try:
            if not self.p2p.send(peer, CHANNEL_SYNC_REQUEST, codec.encode([request_id, first, last])):
                return []
            with trio.move_on_after(self.timeout_s):
                items, earliest = await receive.receive()
                if earliest is not None and earliest > first:
                    raise PeerPruned(peer, earliest)
                return self._check(items, first)
            self.counters["timeouts"] += 1
            return []
        finally:
            del self._waiting[request_id]

    def _check(self, items: list[object], first: int) -> list[tuple[Block, CommitCertificate]]:
        out: list[tuple[Block, CommitCertificate]] = []
        previous: Block | None = None
        for expected, item in zip(itertools.count(first), items):
            try:
                block_wire, cert_wire = item  # type: ignore[misc]
                block = Block.from_wire(block_wire)
                cert = CommitCertificate.from_wire(cert_wire)
                block.check_tx_root()
            except (LedgerError, ValueError, TypeError):
                self.counters["bad_blocks"] += 1
                break
            if (block.height != expected or cert.height != expected or cert.block_hash != block.hash
                    or (previous is not None and block.header.prev_hash != previous.hash)):
                self.counters["bad_blocks"] += 1
                break
            out.append((block, cert))
            previous = block
        self.counters["blocks_fetched"] += len(out)
        return out


def fetch_task(sync: BlockSync, deliver: Callable[[bytes, list[tuple[Block, CommitCertificate]]], None],
               peer: bytes, first: int, last: int) -> Callable[[], object]:
    """A zero-argument coroutine function for `nursery.start_soon`."""

    async def run() -> None:
        blocks = await sync.fetch(peer, first, last)
        deliver(peer, blocks)

    return run
