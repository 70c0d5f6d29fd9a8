"""Block sync: certified blocks by request/response over p2p.

The replica decides *when* to fetch (a `FetchBlocks` effect when it sees a
quorum, checkpoint or decided block above its height); this module performs
it and answers other nodes' requests from the block store.

Request  (channel SYNC_REQUEST):  [request id, from height, to height]
Response (channel SYNC_RESPONSE): [request id, [[block wire, certificate wire], ...]]

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
# One shared bound for a response's encoding, below the codec's message limit
# (codec.encode refuses more, and an EncodeError here used to escape the handler).
MAX_RESPONSE_BYTES = codec.MAX_MESSAGE_BYTES - 64 * 1024


class BlockSync:
    def __init__(self, p2p: P2P, store: BlockStore, *, timeout_s: float = 2.0) -> None:
        self.p2p = p2p
        self.store = store
        self.timeout_s = timeout_s
        self.counters: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[bytes, trio.MemorySendChannel[list[object]]]] = {}
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
            request_id, items = codec.decode(payload)
        except (LedgerError, ValueError, TypeError):
            self.counters["bad_responses"] += 1
            return
        waiter = self._waiting.get(request_id) if isinstance(request_id, int) else None
        if waiter is None or waiter[0] != peer or not isinstance(items, list):
            self.counters["unexpected_responses"] += 1
            return
        try:
            waiter[1].send_nowait(items)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    # ---------------------------------------------------------------- client

    async def fetch(self, peer: bytes, first: int, last: int) -> list[tuple[Block, CommitCertificate]]:
        """Ask `peer` for blocks first..last; return the valid prefix of its answer
        (empty on timeout, disconnect or a bad answer)."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[list[object]](1)
        self._waiting[request_id] = (peer, send)
        try:
            if not self.p2p.send(peer, CHANNEL_SYNC_REQUEST, codec.encode([request_id, first, last])):
                return []
            with trio.move_on_after(self.timeout_s):
                items = await receive.receive()
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
