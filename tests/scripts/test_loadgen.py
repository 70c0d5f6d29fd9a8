"""scripts/loadgen.py's commit follower over the node API (a growing-chain double)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from typing import Any
from urllib.parse import parse_qs

import httpx
import trio

from ledger.crypto import PrivateKey
from ledger.hashing import sha256
from ledger.types import Tx
from node.rpc import create_app
from tests.node.rpc_doubles import GrowingChain, RequestLog

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("loadgen", ROOT / "scripts" / "loadgen.py")
loadgen = importlib.util.module_from_spec(SPEC)
sys.modules["loadgen"] = loadgen  # its dataclasses look their module up there
SPEC.loader.exec_module(loadgen)  # type: ignore[union-attr]

CHAIN = "careledger-test"
ALICE, BOB, CAROL, STRANGER = (PrivateKey(bytes([i]) * 32) for i in (1, 2, 3, 4))


class NoProgress:
    def update(self, task: Any, advance: int = 0) -> None:
        pass


def transfer(key: PrivateKey, nonce: int, to: PrivateKey) -> bytes:
    return Tx(CHAIN, key.public_key, nonce, "transfer", {"to": to.public_key, "amount": 1}).signed(key).encode()


def account(name: str, key: PrivateKey, nonces: range, to: PrivateKey) -> Any:
    raws = [(transfer(key, nonce, to), nonce) for nonce in nonces]
    return loadgen.Account(name, key, [(raw, sha256(raw), nonce) for raw, nonce in raws])


async def test_the_follower_long_polls_once_per_block_and_marks_commits_from_hashes(autojump_clock: Any) -> None:
    chain = GrowingChain(blocks=3)
    app = RequestLog(create_app(chain), limit=50)
    alice = account("alice", ALICE, range(1, 3), BOB)
    bob = account("bob", BOB, range(1, 2), CAROL)
    stats = loadgen.Stats()
    for raw, tx_hash, _ in alice.txs + bob.txs:
        stats.submit_time[tx_hash] = trio.current_time()
    not_ours = transfer(STRANGER, 9, CAROL)  # another client's: moves none of our accounts
    bobs_key_elsewhere = transfer(BOB, 5, CAROL)  # Bob's key used by another client: takes Bob's nonce 5
    done = trio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loadgen.follow_commits, client, ["http://node"], [alice, bob], stats, 3, done,
                               NoProgress(), None)
            await trio.sleep(5)  # nothing commits: the follower sits in long polls, it does not poll
            chain.add_block([alice.txs[0][0], not_ours])
            await trio.sleep(1)
            chain.add_block([alice.txs[1][0], bob.txs[0][0], bobs_key_elsewhere])
            await trio.sleep(1)
            done.set()
            stopped_at = trio.current_time()
        assert trio.current_time() == stopped_at  # done ends the pending long poll at once

    assert stats.committed == 3 and not stats.submit_time
    assert stats.latencies_ms == [5000.0, 6000.0, 6000.0]
    assert (alice.committed_nonce, bob.committed_nonce) == (2, 5)
    long_polls = [q for path, q in app.requests if parse_qs(q) == {"wait_ms": ["2000"], "txs": ["hashes"]}]
    raw_reads = [path for path, q in app.requests if not q]
    assert raw_reads == ["/blocks/4", "/blocks/5"]  # only blocks holding txs we did not sign
    assert len(long_polls) + len(raw_reads) == len(app.requests)
    assert len(long_polls) <= 6  # 5 s idle + 2 blocks + 1 s: a few long polls, not ~700 polls every 10 ms


async def test_the_follower_backs_off_from_a_node_that_answers_404_without_waiting(autojump_clock: Any) -> None:
    app = RequestLog(create_app(_NoWait(GrowingChain(blocks=3))), limit=200)
    done = trio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loadgen.follow_commits, client, ["http://node"], [], loadgen.Stats(), 3, done,
                               NoProgress(), None)
            await trio.sleep(1)
            done.set()
    assert 50 <= len(app.requests) <= 101  # one per FOLLOW_POLL_S, not a busy loop


class _NoWait:
    """A node API without long polls (the service has no wait_for_height)."""

    def __init__(self, chain: GrowingChain) -> None:
        self.block = chain.block
        self.status = chain.status


def test_the_summary_line_keeps_its_exact_shape() -> None:
    stats = loadgen.Stats(submitted=3, committed=2, rejected=1, first_submit=0.0, last_commit=2.0,
                          latencies_ms=[10.0, 30.0])
    assert loadgen.summary(stats) == "submitted=3 committed=2 rejected=1 tx_per_s=1.0 p50_ms=10.0 p99_ms=30.0"
    assert re.fullmatch(r"submitted=\d+ committed=\d+ rejected=\d+ tx_per_s=[\d.]+ p50_ms=[\d.]+ p99_ms=[\d.]+",
                        loadgen.summary(loadgen.Stats()))


async def test_a_chunk_refused_as_nonce_too_far_is_retried_not_given_up(autojump_clock: Any) -> None:
    # a node that has not yet executed the block the follower saw commit elsewhere
    # counts the nonce window from an older nonce: it refuses until it catches up
    alice = account("alice", ALICE, range(1, 3), BOB)
    answers = [[{"error": "nonce_too_far", "detail": ""}] * 2, [{"hash": h.hex()} for _, h, _ in alice.txs]]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, json={"results": answers[min(len(calls), 2) - 1]})

    stats = loadgen.Stats()
    limiter = trio.CapacityLimiter(1)
    token = object()
    await limiter.acquire_on_behalf_of(token)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await loadgen.post_chunk(alice, client, ["http://node"], alice.txs, 0, trio.current_time() + 10, stats,
                                 NoProgress(), None, limiter, token)
    assert len(calls) == 2 and stats.submitted == 2 and not stats.reasons and not alice.stopped
