"""Micro-benchmark: CPU a validator spends admitting one transaction.

    python scripts/bench_admit.py [--txs N] [--rounds R] [--warmup W] [--batch 64]

Builds a real `NodeRuntime` (one validator of a 4-validator genesis, LevelDB
in a temporary directory, the metrics collector attached as `run_node`
attaches it; p2p, driver and RPC are not started) with three fake validator
peers whose gossip queues are emptied between frames (what their writer tasks
do). Pre-signs N transfers per round from N/32 accounts (`scripts/loadgen.py
prepare`: account i pays account i+1; each round the next 32 nonces of every
account), then, inside trio, per round:

- http:   N/2 fresh txs through `runtime.submit_txs` in batches of `--batch`
          (what POST /txs calls), one request at a time;
- gossip: the other N/2 as CHANNEL_TX_BATCH frames of `--batch` through
          `runtime._on_gossiped_batch` (what the p2p reader calls), each frame
          verified before the next arrives;
- dup:    a second copy of every tx by gossip (all refused as duplicates);

then, untimed, "commits" the round (the accounts' nonces advance in state,
`mempool.remove_committed`), as a block would.

The first W rounds are not measured. By default W fills the node's signature
cache (`VerifiedSignatures`, shared with the replica) to its capacity, as in a
node that has admitted more than that many txs; `--warmup 1` measures a fresh node.

CPU is `time.process_time()` (all threads: the worker thread's signature
checks are included). The verification floor is libsodium's
`crypto_sign_open` over the same signed messages, measured in the same run
on the main thread (what any admission must spend). Reports the
median round; the last line is
`admit_us_per_tx=… verify_us_per_tx=… overhead_us_per_tx=… dup_us_per_copy=… txs=…`
(admit and overhead over admitted txs, HTTP and gossip together).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import trio  # noqa: E402

from nacl.bindings import crypto_sign_open  # noqa: E402

from contracts.state import key as state_key  # noqa: E402
from ledger import codec  # noqa: E402
from ledger.crypto import PrivateKey, sign_bytes  # noqa: E402
from ledger.types import Tx  # noqa: E402
from node.config import (  # noqa: E402
    AppState, Genesis, GenesisAccount, GenesisValidator, MempoolSection, NodeConfig, Organisation, P2PSection,
)
from node.metrics import NodeMetrics, RuntimeCollector  # noqa: E402
from node.node import NodeKeys, NodeRuntime, tune_gc_for_node_process  # noqa: E402
from node.p2p import CHANNEL_TX_BATCH, Peer, encode_tx_batch  # noqa: E402
from node.service import TxRejected  # noqa: E402

CHAIN_ID = "careledger-bench"
VALIDATORS = 4
NONCES_PER_ACCOUNT = 32  # below the default nonce window (64)


def key(label: str) -> PrivateKey:
    return PrivateKey((label.encode() * 32)[:32])


def build_runtime(home: str, max_txs: int) -> tuple[NodeRuntime, list[bytes]]:
    """Validator 0 of a 4-validator chain; returns it and its peers' node keys."""
    keys = [NodeKeys(key("node%d" % i), key("validator%d" % i)) for i in range(VALIDATORS)]
    payer = key("genesis-payer")
    genesis = Genesis(
        chain_id=CHAIN_ID, genesis_time_ms=1_700_000_000_000,
        validators=tuple(GenesisValidator("v%d" % i, k.validator_key.public_key, k.node_key.public_key,
                                          "127.0.0.1:%d" % (20000 + i)) for i, k in enumerate(keys)),
        app_state=AppState(organisations=(Organisation("payers", "Payers"),),
                           accounts=(GenesisAccount(payer.public_key, "payers", "payer"),),
                           balances=((payer.public_key, 1_000_000),)),
    )
    config = NodeConfig(home=home, moniker="bench", p2p=P2PSection(listen_port=0),
                        mempool=MempoolSection(max_txs=max_txs, max_bytes=1 << 30))
    runtime = NodeRuntime(config, genesis, keys[0])
    RuntimeCollector(runtime, NodeMetrics()).attach()  # as `serve_node_metrics` does
    peers = [k.node_key.public_key for k in keys[1:]]
    for peer_key in peers:
        runtime.p2p.peers[peer_key] = Peer(peer_key, True, None, runtime.p2p.config)  # type: ignore[arg-type]
    return runtime, peers


def sign_round(accounts: list[PrivateKey], round_index: int) -> list[bytes]:
    """Each account's next NONCES_PER_ACCOUNT transfers (loadgen's `prepare`),
    interleaved (nonce n of every account, then n+1, …) as concurrent clients send them."""
    first = round_index * NONCES_PER_ACCOUNT + 1
    raws = []
    for nonce in range(first, first + NONCES_PER_ACCOUNT):
        for index, account in enumerate(accounts):
            to = accounts[(index + 1) % len(accounts)].public_key
            raws.append(Tx(CHAIN_ID, account.public_key, nonce, "transfer",
                           {"to": to, "amount": 1}).signed(account).encode())
    return raws


def commit_round(runtime: NodeRuntime, accounts: list[PrivateKey], raws: list[bytes], round_index: int) -> None:
    """What a block committing `raws` does to the mempool's view (outside the
    timed phases): the accounts' nonces advance in state, the txs leave the pool."""
    nonce = codec.encode((round_index + 1) * NONCES_PER_ACCOUNT)
    tree = runtime.executor.tree
    version = (tree.latest_version() or 0) + 1
    tree.apply(version, {state_key("nonce", account.public_key): nonce for account in accounts})
    runtime.mempool.remove_committed([Tx.decode(raw) for raw in raws])


def batches(raws: list[bytes], size: int) -> list[list[bytes]]:
    return [raws[i:i + size] for i in range(0, len(raws), size)]


class Drain:
    """Wakes the bench once the mempool has nothing queued or in flight."""

    def __init__(self, runtime: NodeRuntime, peers: list[bytes]) -> None:
        self.runtime = runtime
        self.peers = peers
        self.event = trio.Event()
        pool = runtime.mempool
        flush = pool.on_batch_done

        def on_batch_done(*admitted: Any) -> None:  # (admitted txs) since the batched metrics hook
            flush(*admitted)
            if not pool._in_flight:
                self.event.set()

        pool.on_batch_done = on_batch_done

    async def wait(self) -> None:
        while self.runtime.mempool._in_flight:
            self.event = trio.Event()
            await self.event.wait()

    def empty_peer_queues(self) -> None:
        for peer_key in self.peers:
            peer = self.runtime.p2p.peers[peer_key]
            peer.high.clear()
            peer.low.clear()


async def run_round(runtime: NodeRuntime, drain: Drain, peers: list[bytes], raws: list[bytes],
                    batch: int) -> dict[str, float]:
    """One round; CPU seconds per phase and the verification floor."""
    half = len(raws) // 2
    http, gossip = raws[:half], raws[half:]
    pool = runtime.mempool
    admitted_before = pool.admitted
    source = peers[0]
    requests = batches(http, batch)
    frames = [encode_tx_batch(chunk) for chunk in batches(gossip, batch)]  # the sender's work: untimed
    copies = [encode_tx_batch(chunk) for chunk in batches(raws, batch)]

    start = time.process_time()
    outcomes = []
    for chunk in requests:
        outcomes.append(await runtime.submit_txs(chunk))
        drain.empty_peer_queues()
    http_s = time.process_time() - start
    refused = [r for results in outcomes for r in results if isinstance(r, TxRejected)]
    if refused:
        raise SystemExit("http admission refused a tx: %s" % refused[0])

    start = time.process_time()
    for frame in frames:
        await runtime._on_gossiped_batch(source, CHANNEL_TX_BATCH, frame)
        await drain.wait()
        drain.empty_peer_queues()
    gossip_s = time.process_time() - start
    if pool.admitted - admitted_before != len(raws):
        raise SystemExit("admitted %d of %d" % (pool.admitted - admitted_before, len(raws)))

    duplicates_before = pool.gossip_rejected["duplicate"]
    start = time.process_time()
    for frame in copies:
        await runtime._on_gossiped_batch(peers[1], CHANNEL_TX_BATCH, frame)
        await trio.sleep(0)  # the p2p reader's next receive
    dup_s = time.process_time() - start
    if pool.gossip_rejected["duplicate"] - duplicates_before != len(raws):
        raise SystemExit("duplicates not all refused as such")

    # the floor: libsodium's verification of the same signed messages, nothing else
    decoded = [Tx.decode(raw) for raw in raws]
    signed = [(tx.signature + sign_bytes("tx", tx.chain_id, tx.signing_payload()), tx.sender) for tx in decoded]
    start = time.process_time()
    for message, public_key in signed:
        crypto_sign_open(message, public_key)
    verify_s = time.process_time() - start
    return {"http": http_s, "gossip": gossip_s, "dup": dup_s, "verify": verify_s}


async def bench(txs: int, rounds: int, warmup: int | None, batch: int, home: str) -> None:
    runtime, peers = build_runtime(home, max_txs=2 * txs)
    try:
        accounts = [key("bench-account-%d" % i) for i in range(txs // NONCES_PER_ACCOUNT)]
        if warmup is None:
            warmup = -(-runtime.verified_signatures.capacity // txs) + 1
        signed = [sign_round(accounts, r) for r in range(warmup + rounds)]
        tune_gc_for_node_process()  # as `run_node` does in a node process
        drain = Drain(runtime, peers)
        results = []
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.mempool.run)
            for index, raws in enumerate(signed):
                batches_before = runtime.mempool.verify_batches
                result = await run_round(runtime, drain, peers, raws, batch)
                result["verify_batches"] = runtime.mempool.verify_batches - batches_before
                commit_round(runtime, accounts, raws, index)
                if index >= warmup:
                    results.append(result)
                    print("round %d: http %.1f gossip %.1f dup %.1f verify %.1f us/tx, %d verify batches"
                          % (index, *(1e6 * result[k] / (len(raws) / (2 if k in ("http", "gossip") else 1))
                                      for k in ("http", "gossip", "dup", "verify")),
                             result["verify_batches"]), file=sys.stderr)
            nursery.cancel_scope.cancel()
    finally:
        runtime.close()
    per_tx = {k: statistics.median(r[k] for r in results) * 1e6 for k in ("http", "gossip", "dup", "verify")}
    admit = (per_tx["http"] + per_tx["gossip"]) / txs
    verify = per_tx["verify"] / txs
    http = per_tx["http"] / (txs // 2)
    gossip = per_tx["gossip"] / (txs - txs // 2)
    print("http_us_per_tx=%.1f gossip_us_per_tx=%.1f (verification included)" % (http, gossip))
    print("admit_us_per_tx=%.1f verify_us_per_tx=%.1f overhead_us_per_tx=%.1f dup_us_per_copy=%.1f txs=%d"
          % (admit, verify, admit - verify, per_tx["dup"] / txs, txs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--txs", type=int, default=4096,
                        help="txs per round (half HTTP, half gossip), a multiple of %d" % (2 * NONCES_PER_ACCOUNT))
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured rounds first (default: enough to fill the signature cache, plus one)")
    parser.add_argument("--batch", type=int, default=64, help="txs per POST /txs and per gossip frame")
    args = parser.parse_args(argv)
    if args.txs <= 0 or args.txs % (2 * NONCES_PER_ACCOUNT):
        parser.error("--txs must be a positive multiple of %d" % (2 * NONCES_PER_ACCOUNT))
    with tempfile.TemporaryDirectory(prefix="bench-admit-") as home:
        trio.run(bench, args.txs, args.rounds, args.warmup, args.batch, home)


if __name__ == "__main__":
    main()
