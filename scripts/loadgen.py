"""Load generator: transfers between the funded testnet accounts.

    python scripts/loadgen.py --nodes URL[,URL…] --rate R --duration S [--accounts DIR]

1. Reads every key in DIR (default: the accounts of `careledger testnet`),
   asks the first node for the chain id and each account's next nonce.
2. Signs ALL transactions before the timed window (so signing never limits
   the measured rate): account i sends 1 cent to account i+1, nonces in order.
3. Submits them during `--duration` seconds at `--rate` tx/s (0 = as fast as
   it can), round-robin over the nodes, as POST /txs requests of up to
   `--batch` txs (a msgpack array; `--batch 1`: one POST /tx per tx); up to
   `--concurrency` requests in flight per account (started in nonce order), and at most `--window`
   uncommitted transactions per account (the mempool refuses nonces too far
   ahead). A rejected transaction stops its account (its later nonces could
   never commit). A node that fails to answer is skipped for
   the next one (the same tx is retried there).
4. Follows commits with one long poll per block on the first reachable node
   (`GET /blocks/{next}?wait_ms=…&txs=hashes`: answered when the block
   commits, with its txs' hashes only), for up to `--settle` seconds after
   the window.

Ends with exactly one line on stdout:
`submitted=… committed=… rejected=… tx_per_s=… p50_ms=… p99_ms=…`
(tx_per_s = committed ÷ seconds from the first submission to the last
commit; latencies are submit→seen committed). Progress bars (rich) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import msgpack  # noqa: E402
import trio  # noqa: E402

from ledger.crypto import PrivateKey  # noqa: E402
from ledger.hashing import sha256  # noqa: E402
from ledger.types import Tx  # noqa: E402
from node.keys import load_key_file  # noqa: E402

DEFAULT_WINDOW = 48  # below the mempool's default nonce_window of 64
DEFAULT_MAX_TXS = 20_000
DEFAULT_BATCH = 64  # txs per POST /txs request (1 = one POST /tx per tx)
POLL_S = 0.02
FOLLOW_WAIT_MS = 2000  # GET /blocks/{next}?wait_ms=: the node answers when the block commits, or 404 after this
FOLLOW_POLL_S = 0.01  # pause after a 404 that came back early (a node that does not long-poll)
RETRY_S = 0.05
# Refusals that pass by themselves: a full pool drains, and a node that has
# not yet executed the block we saw commit elsewhere answers "nonce_too_far"
# until it catches up (the window is counted from ITS committed nonce).
RETRY_REASONS = frozenset({"mempool_full", "nonce_too_far"})


@dataclass
class Account:
    name: str
    key: PrivateKey
    txs: list[tuple[bytes, bytes, int]] = field(default_factory=list)  # (raw, hash, nonce)
    next_index: int = 0
    committed_nonce: int = 0
    stopped: bool = False


@dataclass
class Stats:
    submitted: int = 0
    rejected: int = 0
    committed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    submit_time: dict[bytes, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    committed_hashes: set[bytes] = field(default_factory=set)
    first_submit: float | None = None
    last_commit: float | None = None

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def load_accounts(directory: str) -> list[Account]:
    """Every key file in `directory`, sorted by name. Raises SystemExit if none."""
    names = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    if len(names) < 2:
        raise SystemExit("need at least two account key files in %s" % directory)
    return [Account(name[:-5], load_key_file(os.path.join(directory, name))) for name in names]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def prepare(accounts: list[Account], nodes: list[str], total: int, amount: int) -> str:
    """Fetch chain id and nonces (synchronously), then sign `total` transfers.

    Returns the chain id.
    """
    from node.cli import next_nonces

    with httpx.Client(base_url=nodes[0], timeout=10.0) as client:
        chain_id = client.get("/status").json()["chain_id"]
        nonces = next_nonces(client, [a.key.public_key for a in accounts])
    per_account = math.ceil(total / len(accounts))
    for index, account in enumerate(accounts):
        to = accounts[(index + 1) % len(accounts)].key.public_key
        first = nonces[account.key.public_key]
        account.committed_nonce = first - 1
        for nonce in range(first, first + per_account):
            raw = Tx(chain_id, account.key.public_key, nonce, "transfer",
                     {"to": to, "amount": amount}).signed(account.key).encode()
            account.txs.append((raw, sha256(raw), nonce))
    return chain_id


class Pacer:
    """Hands out send slots at `rate` per second (0 = no limit)."""

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.start = start
        self.issued = 0
        self.lock = trio.Lock()

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            slot = self.start + self.issued / self.rate
            self.issued += 1
        await trio.sleep_until(slot)

    async def take(self, most: int) -> int:
        """Wait for one slot, then also claim the slots already due (up to `most` in all)."""
        if self.rate <= 0:
            return most
        await self.wait()
        async with self.lock:
            due = int((trio.current_time() - self.start) * self.rate) - self.issued + 1
            extra = max(0, min(most - 1, due))
            self.issued += extra
        return 1 + extra


async def submit_account(account: Account, client: httpx.AsyncClient, nodes: list[str], window: int,
                         concurrency: int, pacer: Pacer, deadline: float, stats: Stats, progress: Any,
                         task: Any, offset: int) -> None:
    """Send one account's transactions in nonce order, up to `concurrency` in flight."""
    limiter = trio.CapacityLimiter(concurrency)
    async with trio.open_nursery() as nursery:
        for index, (raw, tx_hash, nonce) in enumerate(account.txs):
            while nonce - account.committed_nonce > window and not account.stopped:
                if trio.current_time() >= deadline:
                    return
                await trio.sleep(POLL_S)
            if account.stopped or trio.current_time() >= deadline:
                return
            await pacer.wait()
            await limiter.acquire_on_behalf_of(tx_hash)
            nursery.start_soon(post_one, account, client, nodes, raw, tx_hash, offset + index, deadline,
                               stats, progress, task, limiter)


async def submit_account_batched(account: Account, client: httpx.AsyncClient, nodes: list[str], window: int,
                                 concurrency: int, batch: int, pacer: Pacer, deadline: float, stats: Stats,
                                 progress: Any, task: Any, offset: int) -> None:
    """Send one account's transactions in nonce order as POST /txs chunks of up to `batch`."""
    limiter = trio.CapacityLimiter(concurrency)
    index = 0
    chunk_number = 0
    async with trio.open_nursery() as nursery:
        while index < len(account.txs):
            nonce = account.txs[index][2]
            while nonce - account.committed_nonce > window and not account.stopped:
                if trio.current_time() >= deadline:
                    return
                await trio.sleep(POLL_S)
            if account.stopped or trio.current_time() >= deadline:
                return
            room = window - (nonce - account.committed_nonce) + 1
            count = await pacer.take(max(1, min(batch, room, len(account.txs) - index)))
            chunk = account.txs[index:index + count]
            token = object()
            await limiter.acquire_on_behalf_of(token)
            nursery.start_soon(post_chunk, account, client, nodes, chunk, offset + chunk_number, deadline,
                               stats, progress, task, limiter, token)
            index += count
            chunk_number += 1


async def post_chunk(account: Account, client: httpx.AsyncClient, nodes: list[str],
                     chunk: list[tuple[bytes, bytes, int]], node_index: int, deadline: float, stats: Stats,
                     progress: Any, task: Any, limiter: trio.CapacityLimiter, token: object) -> None:
    """POST /txs one chunk; retry what the mempool had no room for; stop the account on a refusal."""
    try:
        sent_at = trio.current_time()
        for _, tx_hash, _ in chunk:
            stats.submit_time[tx_hash] = sent_at  # before the POST: a fast commit must find it
        pending = list(chunk)
        attempts = 0
        retried = False
        while pending:
            url = nodes[node_index % len(nodes)]
            try:
                response = await client.post(url + "/txs", content=msgpack.packb([raw for raw, _, _ in pending]),
                                             headers={"content-type": "application/msgpack"})
                results = response.json()["results"] if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, KeyError):
                results = None
            if results is None or len(results) != len(pending):
                node_index += 1
                attempts += 1
                retried = True
                if attempts >= 3 * len(nodes) or trio.current_time() >= deadline:
                    _give_up(account, pending, stats, "unreachable")
                    return
                await trio.sleep(RETRY_S)
                continue
            accepted = 0
            for (raw, tx_hash, nonce), result in zip(pending, results):
                reason = result.get("error")
                if reason is None or (retried and reason in ("duplicate", "nonce_taken", "nonce_too_old")):
                    accepted += 1
                    continue
                if reason in RETRY_REASONS and trio.current_time() < deadline:
                    break  # retry from here (later ones answer "duplicate" if they got in)
                _count_submitted(stats, sent_at, accepted, progress, task)
                _give_up(account, pending[accepted:], stats, reason)
                return
            _count_submitted(stats, sent_at, accepted, progress, task)
            pending = pending[accepted:]
            if pending:
                retried = True
                await trio.sleep(RETRY_S)
    finally:
        limiter.release_on_behalf_of(token)


def _count_submitted(stats: Stats, sent_at: float, count: int, progress: Any, task: Any) -> None:
    if not count:
        return
    stats.submitted += count
    if stats.first_submit is None or sent_at < stats.first_submit:
        stats.first_submit = sent_at
    progress.update(task, advance=count)


def _give_up(account: Account, txs: list[tuple[bytes, bytes, int]], stats: Stats, reason: str) -> None:
    """The first of `txs` was refused: its account stops (later nonces could never commit)."""
    for _, tx_hash, _ in txs:
        stats.submit_time.pop(tx_hash, None)
    stats.reject(reason)
    account.stopped = True


async def post_one(account: Account, client: httpx.AsyncClient, nodes: list[str], raw: bytes, tx_hash: bytes,
                   node_index: int, deadline: float, stats: Stats, progress: Any, task: Any,
                   limiter: trio.CapacityLimiter) -> None:
    """POST one transaction, moving to the next node if one does not answer."""
    try:
        sent_at = trio.current_time()
        stats.submit_time[tx_hash] = sent_at  # before the POST: a fast commit must find it
        attempts = 0
        while True:
            url = nodes[node_index % len(nodes)]
            try:
                response = await client.post(url + "/tx", content=raw,
                                             headers={"content-type": "application/octet-stream"})
            except httpx.HTTPError:
                node_index += 1
                attempts += 1
                if attempts >= 3 * len(nodes) or trio.current_time() >= deadline:
                    stats.submit_time.pop(tx_hash, None)
                    stats.reject("unreachable")
                    account.stopped = True
                    return
                await trio.sleep(RETRY_S)
                continue
            if response.status_code == 200:
                break
            reason = _reason(response)
            if reason in RETRY_REASONS and trio.current_time() < deadline:
                await trio.sleep(RETRY_S)
                continue
            if attempts and reason in ("duplicate", "nonce_taken", "nonce_too_old"):
                break  # an earlier attempt reached a node after all
            stats.submit_time.pop(tx_hash, None)
            stats.reject(reason)
            account.stopped = True  # a gap in this account's nonces: its later txs cannot commit
            return
        stats.submitted += 1
        if stats.first_submit is None or sent_at < stats.first_submit:
            stats.first_submit = sent_at
        progress.update(task, advance=1)
    finally:
        limiter.release_on_behalf_of(tx_hash)


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.status_code))
    except (ValueError, AttributeError):
        return str(response.status_code)


async def follow_commits(client: httpx.AsyncClient, nodes: list[str], accounts: list[Account], stats: Stats,
                         start_height: int, done: trio.Event, progress: Any, task: Any) -> None:
    """Read every new block (until `done`) and mark our transactions committed."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_when_set, done, nursery.cancel_scope)  # don't sit out a long poll
        await _follow_blocks(client, nodes, accounts, stats, start_height, progress, task)


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _follow_blocks(client: httpx.AsyncClient, nodes: list[str], accounts: list[Account], stats: Stats,
                         start_height: int, progress: Any, task: Any) -> None:
    """One long poll per block: `?wait_ms=` answers when block `height + 1`
    commits (no 404 polling), `?txs=hashes` without the tx bytes (no hex to
    build, parse or re-hash). A node that fails moves us to the next one."""
    by_hash = {tx_hash: (a, nonce) for a in accounts for _, tx_hash, nonce in a.txs}
    by_sender = {a.key.public_key: a for a in accounts}
    height = start_height
    node_index = 0
    while True:
        url = nodes[node_index % len(nodes)]
        asked = trio.current_time()
        try:
            response = await client.get("%s/blocks/%d" % (url, height + 1),
                                        params={"wait_ms": FOLLOW_WAIT_MS, "txs": "hashes"})
            if response.status_code == 404:
                if trio.current_time() - asked < FOLLOW_WAIT_MS / 2000:
                    await trio.sleep(FOLLOW_POLL_S)  # answered without waiting: don't spin on it
                continue
            response.raise_for_status()
            hashes = _tx_hashes(response.json())
            foreign = mark_committed(hashes, by_hash, stats, trio.current_time(), progress, task)
            if foreign:
                await _track_foreign_nonces(client, url, height + 1, foreign, by_sender)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            node_index += 1  # try the next node
            await trio.sleep(FOLLOW_POLL_S)
            continue
        height += 1


def _tx_hashes(block: dict[str, Any]) -> list[bytes]:
    """The tx hashes of a GET /blocks/{h} answer: its "tx_hashes", or (a node
    that ignores ?txs=hashes) the hashes of its raw "txs". Raises ValueError, KeyError."""
    if "tx_hashes" in block:
        return [bytes.fromhex(text) for text in block["tx_hashes"]]
    return [sha256(bytes.fromhex(text)) for text in block["txs"]]


def mark_committed(hashes: list[bytes], by_hash: dict[bytes, tuple[Account, int]], stats: Stats, now: float,
                   progress: Any, task: Any) -> list[int]:
    """Count our txs among one block's `hashes` committed and move their
    accounts' committed nonces; return the positions of the txs not ours.

    Every tx this run signed is in `by_hash`, so our own txs need no decoding.
    """
    foreign: list[int] = []
    for index, tx_hash in enumerate(hashes):
        sent = stats.submit_time.pop(tx_hash, None)
        if sent is not None and tx_hash not in stats.committed_hashes:
            stats.committed_hashes.add(tx_hash)
            stats.committed += 1
            stats.latencies_ms.append((now - sent) * 1000)
            stats.last_commit = now
            progress.update(task, advance=1)
        owner = by_hash.get(tx_hash)
        if owner is None:
            foreign.append(index)
        else:
            owner[0].committed_nonce = max(owner[0].committed_nonce, owner[1])
    return foreign


async def _track_foreign_nonces(client: httpx.AsyncClient, url: str, height: int, foreign: list[int],
                                by_sender: dict[bytes, Account]) -> None:
    """A tx we did not sign may still carry one of our keys (another client
    with the same key files): it then takes one of our nonces, and the window
    must move past it. Hashes cannot say whose a tx is, so fetch that block's
    raw form once and decode just those txs. A chain carrying only our load
    never gets here. Raises httpx.HTTPError, ValueError, KeyError."""
    response = await client.get("%s/blocks/%d" % (url, height))
    response.raise_for_status()
    raws = response.json()["txs"]
    for index in foreign:
        tx = Tx.decode(bytes.fromhex(raws[index]))
        account = by_sender.get(tx.sender)
        if account is not None:
            account.committed_nonce = max(account.committed_nonce, tx.nonce)


async def run_load(nodes: list[str], accounts: list[Account], rate: float, duration: float, window: int,
                   settle: float, quiet: bool = False, concurrency: int = 1, batch: int = 1) -> Stats:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.console import Console

    stats = Stats()
    total = sum(len(a.txs) for a in accounts)
    connections = len(accounts) * concurrency + 8
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        start_height = int((await client.get(nodes[0] + "/status")).json()["height"])
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=quiet, transient=False) as progress:
            submitted_task = progress.add_task("submitted", total=total)
            committed_task = progress.add_task("committed", total=total)
            done = trio.Event()
            async with trio.open_nursery() as outer:
                outer.start_soon(follow_commits, client, nodes, accounts, stats, start_height, done,
                                 progress, committed_task)
                start = trio.current_time()
                pacer = Pacer(rate, start)
                async with trio.open_nursery() as senders:
                    for index, account in enumerate(accounts):
                        if batch > 1:
                            senders.start_soon(submit_account_batched, account, client, nodes, window, concurrency,
                                               batch, pacer, start + duration, stats, progress, submitted_task,
                                               index)
                        else:
                            senders.start_soon(submit_account, account, client, nodes, window, concurrency,
                                               pacer, start + duration, stats, progress, submitted_task, index)
                with trio.move_on_after(settle):
                    while stats.submit_time:
                        await trio.sleep(POLL_S)
                done.set()
    return stats


def summary(stats: Stats) -> str:
    elapsed = ((stats.last_commit or 0) - stats.first_submit) if stats.first_submit is not None else 0
    tx_per_s = stats.committed / elapsed if elapsed > 0 else 0.0
    return "submitted=%d committed=%d rejected=%d tx_per_s=%.1f p50_ms=%.1f p99_ms=%.1f" % (
        stats.submitted, stats.committed, stats.rejected, tx_per_s,
        percentile(stats.latencies_ms, 0.50), percentile(stats.latencies_ms, 0.99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", required=True, help="Comma-separated RPC URLs.")
    parser.add_argument("--rate", type=float, default=0.0, help="tx/s; 0 = as fast as possible.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of submission.")
    parser.add_argument("--accounts", default=None, help="Directory of account key files.")
    parser.add_argument("--max-txs", type=int, default=DEFAULT_MAX_TXS,
                        help="Transactions to pre-sign when --rate is 0.")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help="Uncommitted transactions allowed per account.")
    parser.add_argument("--concurrency", type=int, default=1, help="Requests in flight per account.")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help="Txs per request: >1 uses POST /txs (msgpack array), 1 uses POST /tx.")
    parser.add_argument("--settle", type=float, default=15.0, help="Seconds to wait for commits afterwards.")
    parser.add_argument("--amount", type=int, default=1, help="Cents per transfer.")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    parser.add_argument("--json-stats", action="store_true", help="Also print rejection reasons to stderr.")
    args = parser.parse_args(argv)
    nodes = [url.strip().rstrip("/") for url in args.nodes.split(",") if url.strip()]
    accounts_dir = args.accounts or os.path.join(os.getcwd(), "mytestnet", "accounts")
    accounts = load_accounts(accounts_dir)
    total = int(args.rate * args.duration) if args.rate > 0 else args.max_txs
    began = time.perf_counter()
    prepare(accounts, nodes, max(total, len(accounts)), args.amount)
    print("signed %d txs for %d accounts in %.1f s" % (
        sum(len(a.txs) for a in accounts), len(accounts), time.perf_counter() - began), file=sys.stderr)
    stats = trio.run(run_load, nodes, accounts, args.rate, args.duration, args.window, args.settle,
                     args.quiet, args.concurrency, args.batch)
    if args.json_stats or stats.reasons:
        print("rejections: %s" % json.dumps(stats.reasons), file=sys.stderr)
    print(summary(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
