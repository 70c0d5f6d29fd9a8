"""Audit packages: exported from a live node, verified offline against genesis."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from live_chain import EARNED_CENTS, PROGRAM_ID, LiveChain, flip_hex_digit
from node.audit import AuditError, export_package, load_package, save_package, verify_package
from node.cli import cli

SETTLEMENT_ID = "aco1/mssp/2022/final"


@pytest.fixture(scope="module")
def package(live_chain: LiveChain) -> dict[str, Any]:
    with httpx.Client(base_url=live_chain.observer_url, timeout=10) as client:
        return export_package(client, PROGRAM_ID)


def _write(tmp_path: Any, package: dict[str, Any], name: str = "audit.json") -> str:
    path = str(tmp_path / name)
    save_package(path, package)
    return path


def test_an_exported_package_verifies_offline_against_genesis(live_chain: LiveChain, package: dict[str, Any],
                                                               tmp_path: Any) -> None:
    report = verify_package(load_package(_write(tmp_path, package)), live_chain.genesis)
    assert report.settlement_id == SETTLEMENT_ID
    assert report.matches
    rows = {name: (recomputed, recorded) for name, recomputed, recorded in report.rows}
    assert rows["earned_cents"] == (EARNED_CENTS, EARNED_CENTS)
    assert rows["amount_due_cents"] == (EARNED_CENTS, EARNED_CENTS)
    assert [name for name, _, ok in report.references if ok] == ["assigned", "benchmark", "expenditures", "quality"]


def test_the_cli_exports_and_verifies_a_package_and_prints_both_settlements(live_chain: LiveChain,
                                                                            tmp_path: Any) -> None:
    out = str(tmp_path / "cli-audit.json")
    runner = CliRunner()
    exported = runner.invoke(cli, ["audit", "export", "--node", live_chain.observer_url, "--program", PROGRAM_ID,
                                   "--out", out])
    assert exported.exit_code == 0, exported.output
    checked = runner.invoke(cli, ["audit", "verify", out, "--genesis", live_chain.genesis_file])
    assert checked.exit_code == 0, checked.output
    assert "earned_cents" in checked.output and str(EARNED_CENTS) in checked.output
    assert "verified: the recorded settlement matches its proven inputs" in checked.output


def test_a_package_verifies_from_a_waypoint_on_its_anchor(package: dict[str, Any]) -> None:
    from ledger.types import Header

    anchor = Header.decode(bytes.fromhex(package["anchor"]["header"]))
    from node.config import genesis_from_json

    report = verify_package(package, genesis_from_json(package["genesis"]), "%d:%s" % (anchor.height, anchor.hash.hex()))
    assert report.matches and report.trusted_from.startswith("waypoint")


@pytest.mark.parametrize("where, reason", [
    (("states", 0, "value"), "state proof"),          # the settlement record itself
    (("states", 1, "value"), "state proof"),          # the program parameters
    (("states", 3, "proof"), "state proof"),          # an input record's proof
    (("anchor", "certificate"), "certificate"),       # a signature of the anchor's quorum
    (("blocks", 0, "header"), "history"),             # the settlement block's header
    (("tx", "tx"), "transaction inclusion"),          # the settlement transaction
    (("receipt", "receipt"), "receipt inclusion"),    # its receipt
])
def test_one_changed_byte_makes_the_package_fail_with_a_reason(
        live_chain: LiveChain, package: dict[str, Any], tmp_path: Any, where: tuple[Any, ...], reason: str) -> None:
    tampered = json.loads(json.dumps(package))
    holder = tampered
    for step in where[:-1]:
        holder = holder[step]
    text = holder[where[-1]]
    holder[where[-1]] = flip_hex_digit(text, len(text) // 2)
    with pytest.raises(AuditError) as failure:
        verify_package(load_package(_write(tmp_path, tampered)), live_chain.genesis)
    assert reason in str(failure.value)


def test_the_cli_rejects_a_package_with_one_byte_changed_and_says_why(live_chain: LiveChain, package: dict[str, Any],
                                                                      tmp_path: Any) -> None:
    path = _write(tmp_path, package)
    raw = bytearray(open(path, "rb").read())
    position = raw.index(b'"value": "') + len(b'"value": "') + 10  # inside the settlement record's hex
    raw[position] = ord("0") if raw[position] != ord("0") else ord("1")
    with open(path, "wb") as handle:
        handle.write(bytes(raw))
    result = CliRunner().invoke(cli, ["audit", "verify", path, "--genesis", live_chain.genesis_file])
    assert result.exit_code == 1
    assert "audit package NOT verified" in result.output and "state proof" in result.output


def test_a_package_checked_against_another_chains_genesis_fails(live_chain: LiveChain,
                                                                package: dict[str, Any]) -> None:
    from dataclasses import replace

    with pytest.raises(AuditError, match="chain"):
        verify_package(package, replace(live_chain.genesis, chain_id="careledger-elsewhere"))


def test_a_package_whose_validators_are_not_genesiss_fails(live_chain: LiveChain, package: dict[str, Any]) -> None:
    from ledger import codec

    wire = codec.decode(bytes.fromhex(package["validators"]))
    tampered = dict(package, validators=codec.encode(wire[:3]).hex())
    with pytest.raises(AuditError, match="validator set"):
        verify_package(tampered, live_chain.genesis)


def test_export_names_a_missing_program(live_chain: LiveChain) -> None:
    with httpx.Client(base_url=live_chain.observer_url, timeout=10) as client:
        with pytest.raises(AuditError, match="no program"):
            export_package(client, "no-such-program")


def test_the_package_file_is_plain_json(package: dict[str, Any], tmp_path: Any) -> None:
    path = _write(tmp_path, package)
    assert os.path.getsize(path) > 0 and json.load(open(path))["format"] == "careledger-audit/v1"


# ------------------------------------------------ across a validator-set change


def test_the_package_carries_the_hand_over_and_verifies_across_it(live_chain: LiveChain,
                                                                   package: dict[str, Any]) -> None:
    from ledger import codec
    from ledger.light import HeaderUpdate
    from ledger.types import Header

    assert live_chain.handover_height > 0
    updates = [HeaderUpdate.from_wire(codec.decode(bytes.fromhex(u))) for u in package["epoch_changes"]]
    assert [u.header.height for u in updates] == [live_chain.handover_height]
    renamed = updates[0].next_validators
    assert [v.name for v in renamed.validators] == ["w0", "w1", "w2", "w3"]
    assert renamed.hash != live_chain.genesis.validator_set().hash
    settled = Header.decode(bytes.fromhex(package["blocks"][0]["header"]))
    assert settled.height > live_chain.handover_height and settled.validators_hash == renamed.hash
    report = verify_package(package, live_chain.genesis)
    assert report.matches


def test_a_package_without_its_hand_over_fails_with_a_reason(live_chain: LiveChain, package: dict[str, Any]) -> None:
    with pytest.raises(AuditError, match="validator set"):
        verify_package(dict(package, epoch_changes=[]), live_chain.genesis)


def test_a_hand_over_to_another_set_fails(live_chain: LiveChain, package: dict[str, Any]) -> None:
    from ledger import codec
    from ledger.light import HeaderUpdate
    from ledger.types import Validator, ValidatorSet

    update = HeaderUpdate.from_wire(codec.decode(bytes.fromhex(package["epoch_changes"][0])))
    other = ValidatorSet(tuple(Validator("x%d" % i, v.public_key)
                               for i, v in enumerate(update.next_validators.validators)))
    forged = HeaderUpdate(update.header, update.certificate, update.history, other).encode().hex()
    with pytest.raises(AuditError, match="next_validators_hash"):
        verify_package(dict(package, epoch_changes=[forged]), live_chain.genesis)


def test_the_epoch_change_route_lists_the_hand_over_for_a_light_client(live_chain: LiveChain) -> None:
    from ledger.light import LightClient

    genesis = live_chain.genesis
    with httpx.Client(base_url=live_chain.validator_urls[0], timeout=10) as client:
        tip = client.get("/status").json()["height"]
        answer = client.get("/light/epoch-changes", params={"to": tip}).json()
        assert [c["height"] for c in answer["changes"]] == [live_chain.handover_height]
        assert client.get("/light/epoch-changes",
                          params={"from": live_chain.handover_height, "to": tip}).json()["changes"] == []
        assert client.get("/light/epoch-changes", params={"to": live_chain.handover_height - 1}).json()["changes"] == []
        assert client.get("/light/epoch-changes", params={"from": 5, "to": 4}).status_code == 400
        assert client.get("/light/epoch-changes", params={"to": tip + 100}).status_code == 404
    light = LightClient.from_genesis(genesis.chain_id, genesis.validator_set(), genesis.genesis_time_ms)
    from ledger import codec

    head = light.verify_epoch_changes([codec.decode(bytes.fromhex(c["update"])) for c in answer["changes"]],
                                      genesis.genesis_time_ms + 10**9)
    assert head.height == live_chain.handover_height
    assert light.trusted.validators.hash == head.next_validators_hash != genesis.validator_set().hash
