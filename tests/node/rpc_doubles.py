"""A growing-chain NodeService double for the GET /blocks/{h} long-poll tests
(the RPC tests and scripts/loadgen.py's commit follower)."""

from __future__ import annotations

from typing import Any

import trio

from ledger.hashing import sha256


class GrowingChain:
    """Blocks of raw txs that tests commit one at a time.

    `add_block` wakes waiters the way `Driver._commit` does (a `committed`
    event replaced on every commit), and `wait_for_height` is the runtime's
    loop over it, so the RPC sees the same notification pattern as on a node.
    `block_tx_hashes` is deliberately absent: the RPC derives it from `block`.
    """

    def __init__(self, blocks: int = 3) -> None:
        self.blocks: list[list[bytes]] = [[] for _ in range(blocks)]
        self.committed = trio.Event()

    @property
    def height(self) -> int:
        return len(self.blocks)

    def add_block(self, txs: list[bytes] | None = None) -> int:
        """Commit the next block (of `txs`) and wake waiters; returns its height."""
        self.blocks.append(list(txs or []))
        event, self.committed = self.committed, trio.Event()
        event.set()
        return self.height

    async def wait_for_height(self, height: int) -> None:
        while self.height < height:
            await self.committed.wait()

    def status(self) -> dict[str, Any]:
        return {"chain_id": "careledger-test", "height": self.height}

    def block(self, height: int) -> dict[str, Any] | None:
        if not 1 <= height <= self.height:
            return None
        txs = self.blocks[height - 1]
        return {"height": height, "hash": sha256(b"block%d" % height).hex(), "header": {"height": height},
                "txs": [raw.hex() for raw in txs], "encoded": b"".join(txs).hex()}


class RequestLog:
    """ASGI middleware recording each request's path and query string.

    Past `limit` requests it raises RuntimeError: under an autojump clock a
    client polling without pause would otherwise hang the test (the clock
    never moves while a task is runnable)."""

    def __init__(self, app: Any, limit: int = 10_000) -> None:
        self.app = app
        self.limit = limit
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["path"], scope.get("query_string", b"").decode()))
            if len(self.requests) > self.limit:
                raise RuntimeError("more than %d requests" % self.limit)
        await self.app(scope, receive, send)
