"""The node runtime pipelined: L = W = 3 (genesis `results_lag` / `max_in_flight`).

The same in-process chain as `live_chain` (4 validators + 1 observer, a
validator-set hand-over, an MSSP settlement) with header h carrying the
results of block h − 3 and three heights voted at once. Every node executes
the same chain (equal app hashes at every height); the observer's light
client verifies every header and the receipts of h − L in header h; state
and tx+receipt proofs pair version v with header v + L and verify with
`careledger query --prove` (from genesis, and from a waypoint with
`--results-lag`); the audit package carries headers s, s+L−1, s+L and verifies.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest
from click.testing import CliRunner

from live_chain import EARNED_CENTS, PROGRAM_ID, LiveChain, start_live_chain, stop_live_chain
from ledger.types import Header
from node.audit import AuditError, export_package, verify_package
from node.cli import cli

LAG = 3
SETTLEMENT_KEY = "settlement/aco1/mssp/2022/final"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: Any) -> Iterator[LiveChain]:
    live = start_live_chain(str(tmp_path_factory.mktemp("pipelined-chain")), results_lag=LAG)
    try:
        yield live
    finally:
        stop_live_chain(live)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_the_runtimes_pipeline_and_execute_the_same_chain(chain: LiveChain) -> None:
    runtimes = chain.runtimes
    assert all(r.consensus_config.results_lag == LAG and r.consensus_config.max_in_flight == LAG for r in runtimes)
    top = min(r.store.height for r in runtimes)
    assert top > 2 * LAG
    for height in range(top + 1):
        assert len({r.store.results(height) for r in runtimes}) == 1, "results differ at %d" % height
        if height:
            assert len({r.store.block(height).hash for r in runtimes}) == 1
    store = runtimes[0].store
    genesis_results = store.results(0)
    for height in range(1, top + 1):  # header h carries the results of h − L (genesis for h ≤ L)
        header = store.block(height).header
        expected = store.results(height - LAG) if height > LAG else genesis_results
        assert (header.app_hash, header.receipts_root) == expected, height


def test_the_observer_verified_every_header_and_the_lagged_receipts(chain: LiveChain) -> None:
    observer = httpx.get(chain.observer_url + "/verified", timeout=5).json()
    assert observer["failure"] is None and not observer["halted"]
    assert observer["verified_height"] == observer["height"] > 2 * LAG
    assert observer["verified_receipts"] >= 6
    answer = httpx.get(chain.observer_url + "/verified/state/" + b"payment_program/aco1".hex(), timeout=5).json()
    assert answer["verified"] is True and answer["height"] == observer["height"] - LAG


def test_a_state_answer_pairs_version_v_with_header_v_plus_l(chain: LiveChain) -> None:
    url = chain.validator_urls[1]
    key = SETTLEMENT_KEY.encode().hex()
    answer = httpx.get("%s/state/%s?prove=true" % (url, key), timeout=5).json()
    assert answer["header_height"] == answer["height"] + LAG
    assert Header.decode(bytes.fromhex(answer["header"])).height == answer["height"] + LAG
    older = httpx.get("%s/state/%s?prove=true&height=%d" % (url, key, answer["height"] - 1), timeout=5).json()
    assert older["header_height"] == answer["height"] - 1 + LAG
    tip = httpx.get(url + "/status", timeout=5).json()["height"]
    assert httpx.get("%s/state/%s?height=%d" % (url, key, tip - LAG + 1), timeout=5).status_code == 404


def test_query_prove_verifies_a_state_value(chain: LiveChain) -> None:
    result = run("query", "--node", chain.validator_urls[2], SETTLEMENT_KEY, "--prove", "--genesis", chain.genesis_file)
    assert result.exit_code == 0, result.output
    assert '"amount_due_cents": %d' % EARNED_CENTS in result.output
    assert result.output.strip().splitlines()[-1].startswith("verified at height")


def test_query_tx_prove_verifies_the_tx_and_its_receipt_in_header_h_plus_l(chain: LiveChain) -> None:
    answer = httpx.get("%s/tx/%s?prove=true" % (chain.observer_url, chain.settlement_tx), timeout=5).json()
    assert answer["proof"]["receipt"]["header_height"] == answer["height"] + LAG
    result = run("query", "--node", chain.observer_url, "--tx", chain.settlement_tx, "--prove",
                 "--genesis", chain.genesis_file)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    shown = json.loads(lines[0])
    assert shown["type"] == "settlement_submit" and shown["receipt"]["ok"] is True
    assert lines[-1] == "verified at height %d" % answer["height"]


def _waypoint(chain: LiveChain) -> str:
    height = httpx.get(chain.observer_url + "/status", timeout=5).json()["height"]
    commit = httpx.get("%s/commit/%d" % (chain.observer_url, height), timeout=5).json()
    return "%d:%s" % (height, Header.decode(bytes.fromhex(commit["encoded_header"])).hash.hex())


def test_query_prove_from_a_waypoint_takes_the_results_lag_it_is_given(chain: LiveChain, tmp_path: Any) -> None:
    waypoint = _waypoint(chain)
    home = str(tmp_path / "empty-home")  # no local genesis: L must be given (or comes from the node, warned)
    result = run("query", "--node", chain.observer_url, "--tx", chain.settlement_tx, "--prove",
                 "--waypoint", waypoint, "--results-lag", str(LAG), "--home", home)
    assert result.exit_code == 0, result.output
    # the wrong L pairs the receipt with a header that does not carry it: refused
    wrong = run("query", "--node", chain.observer_url, "--tx", chain.settlement_tx, "--prove",
                "--waypoint", waypoint, "--results-lag", "1", "--home", home)
    assert wrong.exit_code == 1 and "proof NOT verified" in wrong.output and "(results lag 1)" in wrong.output


def test_a_state_proof_checked_with_the_wrong_lag_is_refused(chain: LiveChain, tmp_path: Any) -> None:
    home = str(tmp_path / "empty-home")
    result = run("query", "--node", chain.validator_urls[0], SETTLEMENT_KEY, "--prove",
                 "--waypoint", _waypoint(chain), "--results-lag", "1", "--home", home)
    assert result.exit_code == 1
    assert "does not commit the state after height" in result.output


def test_the_audit_package_carries_headers_s_s_plus_l_minus_1_and_s_plus_l_and_verifies(chain: LiveChain) -> None:
    with httpx.Client(base_url=chain.observer_url, timeout=10) as client:
        package = export_package(client, PROGRAM_ID)
    settled = package["blocks"][0]["height"]
    assert [b["height"] for b in package["blocks"]] == [settled, settled + LAG - 1, settled + LAG]
    report = verify_package(package, chain.genesis)
    assert report.matches
    rows = {name: (recomputed, recorded) for name, recomputed, recorded in report.rows}
    assert rows["earned_cents"] == (EARNED_CENTS, EARNED_CENTS)
    with pytest.raises(AuditError, match="blocks"):
        verify_package(dict(package, blocks=package["blocks"][:2]), chain.genesis)
    with pytest.raises(AuditError):
        verify_package(package, chain.genesis, results_lag=1)
