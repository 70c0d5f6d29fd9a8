"""An in-process chain for the observer tests: 4 validators and 1 observer
(real `run_node` runtimes with their HTTP APIs on OS-chosen ports), running
in a background thread so tests can drive it over HTTP like any client.

The scenario registers an MSSP program (payer "cms", participants "clinic"
60 % / "hospital" 40 %), collects both signatures, settles it (the worked
ENHANCED case of tests/contracts/test_programs.py: $3,675,000 earned) and
adds a few transfers so the settlement's receipt is certified. The observer
re-verifies every header with its light client.

Before the program, governance (cms and clinic of the three voting
organisations) replaces the validator set by the same four keys under new
names, so the chain has one hand-over (header `handover_height` names the new
set in `next_validators_hash`; K = `CHECKPOINT_INTERVAL`) and everything the
tests prove about the settlement was certified by the new set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from contracts.payments.programs import program_key
from contracts.state import key
from ledger.crypto import PrivateKey
from ledger.hashing import sha256
from ledger.types import Tx
from node.config import (
    AppState, ConsensusParams, ConsensusSection, Genesis, GenesisAccount, GenesisObserver, GenesisValidator,
    InstrumentationSection, NodeConfig, Organisation, P2PSection, RPCSection, save_genesis,
)
from node.node import NodeKeys, NodeRuntime, run_node
from node.p2p import PeerAddress
from node.rpc import serve_api

CHAIN_ID = "careledger-observer-test"
PROGRAM_ID = "aco1"
YEAR = 2022
START_TIMEOUT_S = 30
COMMIT_TIMEOUT_S = 30
CHECKPOINT_INTERVAL = 4


def _key(label: str) -> PrivateKey:
    return PrivateKey(sha256(b"observer-test:" + label.encode()))


PAYER, CLINIC, HOSPITAL = _key("payer"), _key("clinic"), _key("hospital")


def make_genesis(genesis_time_ms: int) -> tuple[Genesis, list[NodeKeys]]:
    keys = [NodeKeys(_key("node%d" % i), _key("validator%d" % i)) for i in range(4)] + [NodeKeys(_key("observer0"))]
    genesis = Genesis(
        chain_id=CHAIN_ID, genesis_time_ms=genesis_time_ms,
        validators=tuple(GenesisValidator("v%d" % i, k.validator_key.public_key, k.node_key.public_key,
                                          "127.0.0.1:1") for i, k in enumerate(keys[:4])),
        observers=(GenesisObserver("o0", keys[4].node_key.public_key),),
        consensus_params=ConsensusParams(checkpoint_interval=CHECKPOINT_INTERVAL),
        app_state=AppState(
            organisations=(Organisation("cms", "CMS"), Organisation("clinic", "Clinic", "provider"),
                           Organisation("hospital", "Hospital", "provider")),
            accounts=(GenesisAccount(PAYER.public_key, "cms", "payer", admin=True),
                      GenesisAccount(CLINIC.public_key, "clinic", "provider", admin=True),
                      GenesisAccount(HOSPITAL.public_key, "hospital", "provider")),
            balances=tuple(sorted((k.public_key, 1_000_000) for k in (PAYER, CLINIC, HOSPITAL))),
        ),
    )
    return genesis, keys


@dataclass
class LiveChain:
    genesis: Genesis
    genesis_file: str
    validator_urls: list[str] = field(default_factory=list)
    observer_url: str = ""
    settlement_tx: str = ""
    handover_height: int = 0  # the header that hands over to `renamed_validators`
    transfer_tx: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    runtimes: list[NodeRuntime] = field(default_factory=list)


def _config(home: str, index: int, role: str) -> NodeConfig:
    return NodeConfig(home=home, moniker="n%d" % index, role=role,
                      p2p=P2PSection(listen_port=0, dial_backoff_max_ms=500),
                      rpc=RPCSection(listen_port=0),
                      instrumentation=InstrumentationSection(prometheus=False),
                      consensus=ConsensusSection(batch_timeout_ms=20, base_timeout_ms=2000))


async def _run(chain: LiveChain, tmp: str) -> None:
    genesis, keys = make_genesis(chain.genesis.genesis_time_ms)
    roles = ["validator"] * 4 + ["observer"]
    async with trio.open_nursery() as nursery:
        runtimes: list[NodeRuntime] = []
        for index, (node_keys, role) in enumerate(zip(keys, roles)):
            config = _config("%s/n%d" % (tmp, index), index, role)

            async def serve(service: Any, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED,
                            _ro: bool = role != "validator") -> None:
                await serve_api(service, host, port, read_only=_ro, task_status=task_status)

            runtime = await nursery.start(lambda task_status, c=config, k=node_keys, s=serve: run_node(
                c, genesis=genesis, keys=k, rpc_serve=s, task_status=task_status))
            runtimes.append(runtime)
        for i, node in enumerate(runtimes):
            for other in runtimes[i + 1:]:
                node.p2p.add_peer_address(PeerAddress(other.node_key, "127.0.0.1", other.p2p.port))
        with trio.fail_after(START_TIMEOUT_S):
            for node in runtimes:
                await node.p2p.wait_for_peers(len(runtimes) - 1)
        chain.runtimes = runtimes
        chain.validator_urls = ["http://127.0.0.1:%d" % r.rpc_port for r in runtimes[:4]]
        chain.observer_url = "http://127.0.0.1:%d" % runtimes[4].rpc_port
        await _scenario(chain, runtimes)
        chain.ready.set()
        while not chain.stop.is_set():
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


async def _submit_and_wait(runtimes: list[NodeRuntime], txs: list[Tx]) -> None:
    primary = runtimes[0]
    for tx in txs:
        await primary.submit_tx(tx.encode())
    with trio.fail_after(COMMIT_TIMEOUT_S):
        for tx in txs:
            while primary.store.tx_location(tx.hash) is None:
                await primary.driver.committed.wait()


async def _scenario(chain: LiveChain, runtimes: list[NodeRuntime]) -> None:
    nonces: dict[bytes, int] = {}

    def tx(signer: PrivateKey, tx_type: str, body: dict[str, Any]) -> Tx:
        nonces[signer.public_key] = nonces.get(signer.public_key, 0) + 1
        return Tx(CHAIN_ID, signer.public_key, nonces[signer.public_key], tx_type, body).signed(signer)

    # a validator-set change: the same keys (and node keys) under new names
    genesis = chain.genesis
    members = [["w%d" % i, v.public_key, v.node_key] for i, v in enumerate(genesis.validators)]
    await _submit_and_wait(runtimes, [tx(PAYER, "gov_propose", {
        "proposal_id": "rename-validators", "action": "set_validator_set", "params": {"validators": members}})])
    await _submit_and_wait(runtimes, [tx(CLINIC, "gov_approve", {"proposal_id": "rename-validators"})])
    execute = tx(PAYER, "gov_execute", {"proposal_id": "rename-validators"})
    await _submit_and_wait(runtimes, [execute])
    executed_at = runtimes[0].store.tx_location(execute.hash)[0]
    chain.handover_height = -(-(executed_at + 1) // CHECKPOINT_INTERVAL) * CHECKPOINT_INTERVAL
    while runtimes[0].store.height <= chain.handover_height + 1:
        await _submit_and_wait(runtimes, [tx(HOSPITAL, "transfer", {"to": CLINIC.public_key, "amount": 1})])

    await _submit_and_wait(runtimes, [tx(PAYER, "program_register", {
        "program_id": PROGRAM_ID, "type": "mssp", "performance_year": YEAR, "params": {"track": "EN"},
        "participants": [["clinic", 6_000], ["hospital", 4_000]]})])
    await _submit_and_wait(runtimes, [tx(CLINIC, "program_sign", {"program_id": PROGRAM_ID}),
                                      tx(HOSPITAL, "program_sign", {"program_id": PROGRAM_ID})])
    state = runtimes[0].executor

    def ref(record_key: bytes) -> dict[str, Any]:
        stored = state.read_latest(record_key)
        assert stored is not None, record_key
        return {"key": record_key.decode(), "hash": sha256(stored)}

    refs = {name: ref(record) for name, record in (
        ("benchmark", key("org", "cms")), ("expenditures", key("org", "clinic")),
        ("assigned", key("org", "hospital")), ("quality", program_key(PROGRAM_ID)))}
    settle = tx(PAYER, "settlement_submit", {
        "program_id": PROGRAM_ID, "stage": "final", "benchmark_cents": 10_000_000_000,
        "benchmark_ref": refs["benchmark"], "expenditures_cents": 9_500_000_000,
        "expenditures_ref": refs["expenditures"], "assigned_beneficiaries": 20_000,
        "assigned_ref": refs["assigned"], "quality": {"score_bps": 8_000, "met_standard": True},
        "quality_ref": refs["quality"]})
    await _submit_and_wait(runtimes, [settle])
    chain.settlement_tx = settle.hash.hex()
    transfer = tx(CLINIC, "transfer", {"to": HOSPITAL.public_key, "amount": 5})
    await _submit_and_wait(runtimes, [transfer])
    await _submit_and_wait(runtimes, [tx(HOSPITAL, "transfer", {"to": CLINIC.public_key, "amount": 1})])
    chain.transfer_tx = transfer.hash.hex()
    receipt = runtimes[0].tx(settle.hash)["receipt"]
    if not receipt["ok"]:
        raise AssertionError("settlement failed: %s" % receipt)
    # the observer has executed and verified everything the validators committed
    target = runtimes[0].store.height
    with trio.fail_after(COMMIT_TIMEOUT_S):
        await runtimes[4].wait_for_height(target)


def start_live_chain(tmp: str) -> LiveChain:
    """Start the chain in a daemon thread; returns once the scenario ran (raises its error)."""
    # the light client's trusting period runs from genesis time: a recent genesis
    genesis, _ = make_genesis(int(time.time() * 1000) - 60_000)
    genesis_file = "%s/genesis.json" % tmp
    save_genesis(genesis_file, genesis)
    chain = LiveChain(genesis, genesis_file)

    def main() -> None:
        try:
            trio.run(_run, chain, tmp)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            chain.error = exc
            chain.ready.set()

    thread = threading.Thread(target=main, name="live-chain", daemon=True)
    thread.start()
    chain.thread = thread  # type: ignore[attr-defined]
    if not chain.ready.wait(START_TIMEOUT_S + 4 * COMMIT_TIMEOUT_S) or chain.error is not None:
        chain.stop.set()
        raise RuntimeError("live chain did not start: %r" % chain.error) from chain.error
    return chain


def stop_live_chain(chain: LiveChain) -> None:
    chain.stop.set()
    chain.thread.join(timeout=15)  # type: ignore[attr-defined]
