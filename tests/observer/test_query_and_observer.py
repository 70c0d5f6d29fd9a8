"""The observer's light client, its routes, and `careledger query --tx --prove`."""

from __future__ import annotations

import json
from typing import Any, Callable

import httpx
import pytest
from click.testing import CliRunner

import node.cli
import node.observer
from live_chain import EARNED_CENTS, LiveChain, flip_hex_digit
from node.cli import cli


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_the_observer_verified_every_synced_header_and_validators_say_they_do_not(live_chain: LiveChain) -> None:
    observer = httpx.get(live_chain.observer_url + "/verified", timeout=5).json()
    height = httpx.get(live_chain.validator_urls[0] + "/status", timeout=5).json()["height"]
    assert observer["enabled"] and observer["failure"] is None and not observer["halted"]
    assert observer["verified_height"] == observer["height"] >= height - 1 >= 4
    assert observer["verified_txs"] >= 6
    assert httpx.get(live_chain.validator_urls[0] + "/verified", timeout=5).json()["enabled"] is False


def test_the_observer_is_read_only(live_chain: LiveChain) -> None:
    response = httpx.post(live_chain.observer_url + "/tx", content=b"\x00", timeout=5,
                          headers={"content-type": "application/octet-stream"})
    assert response.status_code == 503 and response.json()["error"] == "read_only"


def test_a_verified_state_answer_says_the_light_client_checked_it(live_chain: LiveChain) -> None:
    answer = httpx.get(live_chain.observer_url + "/verified/state/" + b"payment_program/aco1".hex(), timeout=5).json()
    assert answer["verified"] is True and answer["value"]


@pytest.mark.parametrize("query", ["old=0&new=2", "old=3&new=2", "old=a&new=2", "new=2"])
def test_bad_history_queries_get_400(live_chain: LiveChain, query: str) -> None:
    assert httpx.get(live_chain.observer_url + "/history/consistency?" + query, timeout=5).status_code == 400


def test_history_beyond_the_tip_is_404(live_chain: LiveChain) -> None:
    response = httpx.get(live_chain.observer_url + "/history/inclusion?height=1&size=100000", timeout=5)
    assert response.status_code == 404


def test_query_tx_prove_verifies_the_tx_and_its_receipt(live_chain: LiveChain) -> None:
    result = run("query", "--node", live_chain.observer_url, "--tx", live_chain.settlement_tx, "--prove",
                 "--genesis", live_chain.genesis_file)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    shown = json.loads(lines[0])
    assert shown["type"] == "settlement_submit" and shown["receipt"]["ok"] is True
    assert lines[-1].startswith("verified at height ")


def test_query_key_prove_verifies_against_the_observer(live_chain: LiveChain) -> None:
    result = run("query", "--node", live_chain.observer_url, "settlement/aco1/mssp/2022/final", "--prove",
                 "--genesis", live_chain.genesis_file)
    assert result.exit_code == 0, result.output
    assert '"amount_due_cents": %d' % EARNED_CENTS in result.output
    assert result.output.strip().splitlines()[-1].startswith("verified at height")


def _lying_node(monkeypatch: Any, live_chain: LiveChain, alter: Callable[[dict[str, Any]], None]) -> None:
    """A test double: forwards to the real observer, then alters /tx answers."""
    real = httpx.Client(base_url=live_chain.observer_url, timeout=10)

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        answer = real.get(path)
        if path.startswith("/tx/") and answer.status_code == 200:
            body = answer.json()
            alter(body)
            return httpx.Response(200, json=body)
        return httpx.Response(answer.status_code, content=answer.content, headers={"content-type": "application/json"})

    monkeypatch.setattr(node.cli, "http_client",
                        lambda url: httpx.Client(base_url="http://liar", transport=httpx.MockTransport(handler)))


def _altered_amount(body: dict[str, Any]) -> None:
    from ledger.types import Tx

    tx = Tx.decode(bytes.fromhex(body["proof"]["tx"]))
    forged = Tx(tx.chain_id, tx.sender, tx.nonce, tx.type, dict(tx.body, amount=5_000_000), tx.signature)
    body["proof"]["tx"] = forged.encode().hex()


def _failed_receipt(body: dict[str, Any]) -> None:
    from ledger import codec

    wire = codec.decode(bytes.fromhex(body["proof"]["receipt"]["receipt"]))
    wire[1], wire[2] = False, "insufficient_funds"
    body["proof"]["receipt"]["receipt"] = codec.encode(wire).hex()


def _other_tx(body: dict[str, Any]) -> None:
    body["hash"] = "ab" * 32


@pytest.mark.parametrize("alter, reason", [
    (_altered_amount, "transaction inclusion"),
    (_failed_receipt, "receipt inclusion"),
    (_other_tx, "not " + "ab" * 32),
])
def test_a_node_serving_an_altered_transaction_is_caught(monkeypatch: Any, live_chain: LiveChain,
                                                         alter: Callable[[dict[str, Any]], None], reason: str) -> None:
    _lying_node(monkeypatch, live_chain, alter)
    result = run("query", "--node", "http://liar", "--tx", live_chain.transfer_tx, "--prove",
                 "--genesis", live_chain.genesis_file)
    assert result.exit_code == 1
    assert "proof NOT verified" in result.output and reason in result.output


def test_the_explorer_page_and_its_assets_are_served_locally(live_chain: LiveChain) -> None:
    page = httpx.get(live_chain.observer_url + "/explorer", timeout=5)
    assert page.status_code == 200 and "/static/explorer.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert httpx.get(live_chain.observer_url + "/static/explorer.js", timeout=5).status_code == 200
    assert httpx.get(live_chain.observer_url + "/static/..%2Fnode.py", timeout=5).status_code == 404


# ------------------------------------------------ query --prove --waypoint


SETTLEMENT_KEY = "settlement/aco1/mssp/2022/final"


def _waypoint(live_chain: LiveChain, height: int) -> str:
    """`H:HASH` of the observer's certified header at `height` (what a regulator gets out of band)."""
    from ledger.types import Header

    commit = httpx.get("%s/commit/%d" % (live_chain.observer_url, height), timeout=5).json()
    return "%d:%s" % (height, Header.decode(bytes.fromhex(commit["encoded_header"])).hash.hex())


def _tip(live_chain: LiveChain) -> int:
    return int(httpx.get(live_chain.observer_url + "/status", timeout=5).json()["height"])


@pytest.mark.parametrize("where", ["first", "handover", "before-tip", "tip"])
def test_query_key_prove_verifies_from_a_waypoint(live_chain: LiveChain, where: str) -> None:
    # before the hand-over (follows it), on it (hands over itself), after it, and the answer's own header
    tip = _tip(live_chain)
    height = {"first": 1, "handover": live_chain.handover_height, "before-tip": tip - 1, "tip": tip}[where]
    result = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove",
                 "--waypoint", _waypoint(live_chain, height))
    assert result.exit_code == 0, result.output
    assert '"amount_due_cents": %d' % EARNED_CENTS in result.output
    assert result.output.strip().splitlines()[-1].startswith("verified at height")
    assert "warning" not in result.output  # no genesis is fetched or trusted


def test_a_waypoint_with_a_wrong_hash_is_refused(live_chain: LiveChain) -> None:
    height, digest = _waypoint(live_chain, _tip(live_chain) - 1).split(":")
    wrong = "%s:%s" % (height, flip_hex_digit(digest, 10))
    result = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove", "--waypoint", wrong)
    assert result.exit_code == 1
    assert "waypoint %s NOT trusted" % wrong in result.output and "does not match the waypoint" in result.output
    assert "amount_due_cents" not in result.output  # nothing is shown from an untrusted root


def test_a_waypoint_with_a_wrong_height_is_refused(live_chain: LiveChain) -> None:
    tip = _tip(live_chain)
    _, digest = _waypoint(live_chain, tip - 1).split(":")
    result = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove",
                 "--waypoint", "%d:%s" % (tip - 2, digest))
    assert result.exit_code == 1 and "does not match the waypoint" in result.output
    result = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove",
                 "--waypoint", "%d:%s" % (tip + 1000, digest))
    assert result.exit_code == 1
    assert "no certified header at the waypoint's height %d" % (tip + 1000) in result.output


@pytest.mark.parametrize("args, message", [
    (["--prove", "--waypoint", "WAYPOINT", "--genesis", "GENESIS"], "mutually exclusive"),
    (["--waypoint", "WAYPOINT"], "add --prove"),
    (["--prove", "--waypoint", "12"], "<height>:<hex header hash>"),
    (["--prove", "--waypoint", "12:zz"], "hex"),
])
def test_bad_waypoint_usage_is_a_usage_error(live_chain: LiveChain, args: list[str], message: str) -> None:
    filled = [{"WAYPOINT": _waypoint(live_chain, 1), "GENESIS": live_chain.genesis_file}.get(a, a) for a in args]
    result = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, *filled)
    assert result.exit_code == 2 and message in result.output


def test_past_the_trusting_period_genesis_fails_and_a_fresh_waypoint_verifies(monkeypatch: Any,
                                                                              live_chain: LiveChain) -> None:
    from ledger.light import DEFAULT_TRUSTING_PERIOD_MS

    # one millisecond past two weeks after genesis: every header (made after genesis) is younger than that
    monkeypatch.setattr(node.observer, "wall_clock_ms",
                        lambda: live_chain.genesis.genesis_time_ms + DEFAULT_TRUSTING_PERIOD_MS + 1)
    expired = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove",
                  "--genesis", live_chain.genesis_file)
    assert expired.exit_code == 1
    assert "proof NOT verified: Expired" in expired.output and "--waypoint" in expired.output
    fresh = run("query", "--node", live_chain.observer_url, SETTLEMENT_KEY, "--prove",
                "--waypoint", _waypoint(live_chain, _tip(live_chain) - 1))
    assert fresh.exit_code == 0, fresh.output
    assert fresh.output.strip().splitlines()[-1].startswith("verified at height")


def _tx_height(live_chain: LiveChain, tx_hash: str) -> int:
    return int(httpx.get("%s/tx/%s" % (live_chain.observer_url, tx_hash), timeout=5).json()["height"])


@pytest.mark.parametrize("where", ["first", "below-the-tx", "at-the-tx", "tip"])
def test_query_tx_prove_verifies_from_a_waypoint(live_chain: LiveChain, where: str) -> None:
    # A waypoint below the tx's block follows the chain forward to it; one above it
    # proves the tx's header (and the receipt's) by inclusion in the waypoint's history.
    tx_height = _tx_height(live_chain, live_chain.settlement_tx)
    height = {"first": 1, "below-the-tx": tx_height - 1, "at-the-tx": tx_height, "tip": _tip(live_chain)}[where]
    result = run("query", "--node", live_chain.observer_url, "--tx", live_chain.settlement_tx, "--prove",
                 "--waypoint", _waypoint(live_chain, height))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert json.loads(lines[0])["receipt"]["ok"] is True
    assert lines[-1] == "verified at height %d" % tx_height
    assert "warning" not in result.output


def test_query_tx_prove_with_a_wrong_waypoint_shows_nothing(live_chain: LiveChain) -> None:
    height, digest = _waypoint(live_chain, _tip(live_chain)).split(":")
    wrong = "%s:%s" % (height, flip_hex_digit(digest, 3))
    result = run("query", "--node", live_chain.observer_url, "--tx", live_chain.settlement_tx, "--prove",
                 "--waypoint", wrong)
    assert result.exit_code == 1 and "waypoint %s NOT trusted" % wrong in result.output
    assert "settlement_submit" not in result.output
