"""An in-process chain for the observer tests: 4 validators and 1 observer
(real `run_node` runtimes with their HTTP APIs on OS-chosen ports), running
in a background thread so tests can drive it over HTTP like any client.

The scenario registers an MSSP program (payer "cms", participants "clinic"
60 % / "hospital" 40 %, ENHANCED, PY2022, a fixed 2 % MSR), puts on the ledger
the records a settlement is derived from, settles it from them and adds a few
transfers so the settlement's receipt is certified:

- total cost of care: the clinic's ACO, two patients attributed by a primary-care
  visit ($150) each, plus a $11,250 stay each → N = 2, E = $22,800 (`tcoc/…`);
- benchmark: $12,000 per capita in each base year → B = $12,000 × 2 = $24,000;
- quality standard: one measure at 80/100, the clinic's composite → met.

S = $1,200 (5 % ≥ MSR 2 %); earned = $1,200 × 75 % × (1 − 2 %) = $882
(`EARNED_CENTS`). The observer re-verifies every header with its light client.

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
from typing import Any, Callable, Iterator

import trio

from contracts.payments.programs import benchmark_key
from contracts.quality import standard_key
from contracts.tcoc import tcoc_key
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
# the settlement's ledger records (see the module docstring for the arithmetic)
ACO_ID = "clinic-aco"
CLINIC_TIN = "555555555"
CLINIC_NPI = "1000000012"  # Luhn-valid over the 80840 prefix
PCP_TAXONOMY = "207Q00000X"  # family medicine
MEASURE_ID, COMPOSITE_ID = "bp-control", "aco-quality"
QUALITY_NUMERATOR = 80  # of 100: score 80 %
PATIENTS = ("ann", "bob")
PERIOD_START, PERIOD_END = YEAR * 10_000 + 101, YEAR * 10_000 + 1231
SERVICE_DATE = YEAR * 10_000 + 310
LICENCE_EXPIRES_MS = 4_102_444_800_000  # 2100-01-01
VISIT_CENTS, STAY_CENTS = 15_000, 1_125_000  # $11,400 per patient
BENCHMARK_PER_CAPITA_CENTS = 1_200_000
MSR_OPTION_BPS = 200  # a fixed 2 % MSR/MLR elected at registration (two patients are below the MSR table)
TCOC_KEY = tcoc_key(PROGRAM_ID, ACO_ID, PERIOD_START, PERIOD_END)
EARNED_CENTS = 88_200  # S = $24,000 − $22,800 = $1,200 × 75 % × (1 − 2 % sequestration)


def _key(label: str) -> PrivateKey:
    return PrivateKey(sha256(b"observer-test:" + label.encode()))


def _pseudonym(label: str) -> bytes:
    """A stand-in for a random patient pseudonym (tests only)."""
    return sha256(b"observer-test/patient:" + label.encode())[:16]


def _patient_id(pseudonym: bytes) -> str:
    return "pt-" + pseudonym.hex()


def _commitment(label: str) -> bytes:
    return sha256(b"observer-test/salt:" + label.encode())


PAYER, CLINIC, HOSPITAL = _key("payer"), _key("clinic"), _key("hospital")


def make_genesis(genesis_time_ms: int, results_lag: int = 1) -> tuple[Genesis, list[NodeKeys]]:
    """`results_lag` L > 1: a pipelined chain (L = W heights in flight)."""
    keys = [NodeKeys(_key("node%d" % i), _key("validator%d" % i)) for i in range(4)] + [NodeKeys(_key("observer0"))]
    genesis = Genesis(
        chain_id=CHAIN_ID, genesis_time_ms=genesis_time_ms,
        validators=tuple(GenesisValidator("v%d" % i, k.validator_key.public_key, k.node_key.public_key,
                                          "127.0.0.1:1") for i, k in enumerate(keys[:4])),
        observers=(GenesisObserver("o0", keys[4].node_key.public_key),),
        consensus_params=ConsensusParams(checkpoint_interval=CHECKPOINT_INTERVAL, results_lag=results_lag,
                                         max_in_flight=results_lag),
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
    results_lag: int = 1
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
    genesis, keys = make_genesis(chain.genesis.genesis_time_ms, chain.results_lag)
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
    """Submit `txs` (independent of each other, or one sender's in nonce order), wait
    until all are committed, and raise if any of them failed."""
    primary = runtimes[0]
    for tx in txs:
        await primary.submit_tx(tx.encode())
    with trio.move_on_after(COMMIT_TIMEOUT_S):
        for tx in txs:
            while primary.store.tx_location(tx.hash) is None:
                await primary.driver.committed.wait()
    missing = [tx.type for tx in txs if primary.store.tx_location(tx.hash) is None]
    if missing:
        raise AssertionError("not committed within %d s: %s" % (COMMIT_TIMEOUT_S, ", ".join(missing)))
    for tx in txs:
        receipt = primary.tx(tx.hash)["receipt"]
        if not receipt["ok"]:
            raise AssertionError("%s failed: %s" % (tx.type, receipt))


def _settlement_records(tx: Callable[[PrivateKey, str, dict[str, Any]], Tx]) -> Iterator[list[Tx]]:
    """The transactions that put on the ledger every record the settlement cites: the
    closed total cost of care of the clinic's ACO (from claims and an attribution run),
    the program's benchmark and its quality standard.

    In stages, each made only when the previous one is committed (`tx` numbers each
    sender's nonces as it signs); a stage's txs are independent of each other or one
    sender's, in nonce order.
    """
    window = {"program": PROGRAM_ID, "aco_id": ACO_ID, "period_start": PERIOD_START, "period_end": PERIOD_END}
    year = str(YEAR)
    patients = [_patient_id(_pseudonym(label)) for label in PATIENTS]
    yield [
        tx(CLINIC, "tin_register", {"tin": CLINIC_TIN, "name": "Clinic practice"}),
        tx(CLINIC, "provider_register", {"npi": CLINIC_NPI, "entity": "individual", "name": "Dr Clinic",
                                         "taxonomies": [PCP_TAXONOMY], "primary_taxonomy": PCP_TAXONOMY}),
        tx(PAYER, "program_create", {"program_id": PROGRAM_ID, "name": "MSSP ACO 1"}),
        *[tx(PAYER, "patient_register", {"patient": patient, "agents": []}) for patient in patients],
        tx(PAYER, "measure_define", {
            "measure_id": MEASURE_ID, "scoring": "proportion", "domain": "chronic", "weight": 1, "inverse": False,
            "criteria": _commitment(MEASURE_ID), "populations": ["initial_population", "denominator", "numerator"]}),
        tx(PAYER, "composite_define", {"composite_id": COMPOSITE_ID, "measures": [MEASURE_ID],
                                       "domain_weights": {"chronic": 1}}),
    ]
    yield [
        tx(PAYER, "credential_issue", {
            "credential_id": "lic-1", "npi": CLINIC_NPI, "kind": "licence", "valid_from_ms": 0,
            "expires_at_ms": LICENCE_EXPIRES_MS, "document_commitment": _commitment("lic-1"), "jurisdiction": "CA"}),
        *[tx(PAYER, "coverage_enroll", {"patient": patient, "months": list(range(YEAR * 100 + 1, YEAR * 100 + 13)),
                                        "part_a": True, "part_b": True, "advantage": False}) for patient in patients],
        tx(PAYER, "quality_result_submit", {
            "measure_id": MEASURE_ID, "program": PROGRAM_ID, "period": year, "provider": "clinic",
            "counts": {"initial_population": 100, "denominator": 100, "numerator": QUALITY_NUMERATOR},
            "document": _commitment("clinic-" + MEASURE_ID)}),
        tx(PAYER, "composite_compute", {"composite_id": COMPOSITE_ID, "program": PROGRAM_ID, "period": year,
                                        "provider": "clinic"}),
        tx(PAYER, "quality_benchmark_compute", {"measure_id": MEASURE_ID, "program": PROGRAM_ID, "period": year}),
        tx(CLINIC, "aco_register", {"program_id": PROGRAM_ID, "aco_id": ACO_ID, "name": "Clinic ACO"}),
        tx(CLINIC, "aco_add_participant", {"program_id": PROGRAM_ID, "aco_id": ACO_ID, "tin": CLINIC_TIN,
                                           "npis": [CLINIC_NPI]}),
    ]
    claims = []
    for label in PATIENTS:
        for claim_id, kind, line in (
                (label + "-visit", "professional", {"hcpcs": "99213", "allowed_cents": VISIT_CENTS}),
                (label + "-stay", "inpatient", {"hcpcs": None, "revenue_code": "0120", "allowed_cents": STAY_CENTS})):
            claims.append(tx(PAYER, "claim_submit", {
                "claim_id": claim_id, "kind": kind, "patient": _pseudonym(label), "billing_tin": CLINIC_TIN,
                "billing_npi": CLINIC_NPI, "rendering_npi": CLINIC_NPI, "from_date": SERVICE_DATE,
                "through_date": SERVICE_DATE, "diagnoses": [], "document": _commitment(claim_id),
                "lines": [dict(line, service_date=SERVICE_DATE, paid_cents=line["allowed_cents"])]}))
    yield claims
    yield [
        tx(PAYER, "attribution_run", {"program_id": PROGRAM_ID, "run_id": "py%d" % YEAR, "period_start": PERIOD_START,
                                      "period_end": PERIOD_END, "patients": patients}),
        tx(PAYER, "tcoc_open", dict(window, truncation_cents=None)),
        tx(PAYER, "tcoc_accumulate", dict(window, cursor=0, limit=len(patients))),
        tx(PAYER, "tcoc_close", window),
        tx(PAYER, "benchmark_set", {"program_id": PROGRAM_ID, "by_per_capita_cents": [BENCHMARK_PER_CAPITA_CENTS] * 3,
                                    "regional_adjustment_cents": 0, "update_factor": [1, 1]}),
        tx(PAYER, "quality_standard_assess", {"program_id": PROGRAM_ID, "composite_id": COMPOSITE_ID,
                                              "provider": "clinic"}),
    ]


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
    lag = chain.results_lag  # the set executed at e takes effect after the first multiple of K ≥ e + L
    chain.handover_height = -(-(executed_at + lag) // CHECKPOINT_INTERVAL) * CHECKPOINT_INTERVAL
    while runtimes[0].store.height <= chain.handover_height + lag:
        await _submit_and_wait(runtimes, [tx(HOSPITAL, "transfer", {"to": CLINIC.public_key, "amount": 1})])

    await _submit_and_wait(runtimes, [tx(PAYER, "program_register", {
        "program_id": PROGRAM_ID, "type": "mssp", "performance_year": YEAR,
        "params": {"track": "EN", "msr_option_bps": MSR_OPTION_BPS},
        "participants": [["clinic", 6_000], ["hospital", 4_000]]})])
    await _submit_and_wait(runtimes, [tx(CLINIC, "program_sign", {"program_id": PROGRAM_ID}),
                                      tx(HOSPITAL, "program_sign", {"program_id": PROGRAM_ID})])
    for stage in _settlement_records(tx):
        await _submit_and_wait(runtimes, stage)
    state = runtimes[0].executor

    def ref(record_key: bytes) -> dict[str, Any]:
        stored = state.read_latest(record_key)
        assert stored is not None, record_key
        return {"key": record_key.decode(), "hash": sha256(stored)}

    settle = tx(PAYER, "settlement_submit", {
        "program_id": PROGRAM_ID, "stage": "final", "tcoc_ref": ref(TCOC_KEY),
        "benchmark_ref": ref(benchmark_key(PROGRAM_ID, YEAR)), "quality_ref": ref(standard_key(PROGRAM_ID, YEAR))})
    await _submit_and_wait(runtimes, [settle])
    chain.settlement_tx = settle.hash.hex()
    transfer = tx(CLINIC, "transfer", {"to": HOSPITAL.public_key, "amount": 5})
    await _submit_and_wait(runtimes, [transfer])
    for _ in range(chain.results_lag):  # blocks above, so the transfer's receipt (header h + L) is certified
        await _submit_and_wait(runtimes, [tx(HOSPITAL, "transfer", {"to": CLINIC.public_key, "amount": 1})])
    chain.transfer_tx = transfer.hash.hex()
    # the observer has executed and verified everything the validators committed
    target = runtimes[0].store.height
    with trio.fail_after(COMMIT_TIMEOUT_S):
        await runtimes[4].wait_for_height(target)


def flip_hex_digit(text: str, position: int) -> str:
    """`text` with the hex digit at `position` changed (one altered byte, for tamper tests)."""
    digit = text[position]
    return text[:position] + ("0" if digit != "0" else "1") + text[position + 1:]


def start_live_chain(tmp: str, results_lag: int = 1) -> LiveChain:
    """Start the chain in a daemon thread; returns once the scenario ran (raises its error)."""
    # the light client's trusting period runs from genesis time: a recent genesis
    genesis, _ = make_genesis(int(time.time() * 1000) - 60_000, results_lag)
    genesis_file = "%s/genesis.json" % tmp
    save_genesis(genesis_file, genesis)
    chain = LiveChain(genesis, genesis_file, results_lag)

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
