"""The `careledger` command line, through click's CliRunner (no real node needed)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import httpx
import pytest
from click.testing import CliRunner

from ledger import codec
from ledger.crypto import PrivateKey
from ledger.hashing import ZERO_HASH
from ledger.kv import MemoryStore
from ledger.state import StateTree
from ledger.types import Header, Tx, commit_vote_payload, make_certificate
from node import cli as cli_module
from node.cli import cli
from node.config import load_config, load_genesis, save_genesis
from node.keys import load_key_file


def run(*args: str, ok: bool = True) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_version_prints_a_version() -> None:
    assert run("version").output.strip()


def test_init_writes_a_single_validator_home_and_keeps_keys_on_a_second_run(tmp_path: Any) -> None:
    home = str(tmp_path / "h")
    run("init", "--home", home, "--moniker", "solo", "--chain-id", "careledger-solo")
    config = load_config(home)
    genesis = load_genesis(config.genesis_file)
    assert genesis.chain_id == "careledger-solo"
    assert genesis.validators[0].public_key == load_key_file(config.priv_validator_key_file).public_key
    assert genesis.validators[0].node_key == load_key_file(config.node_key_file).public_key
    assert os.stat(config.node_key_file).st_mode & 0o077 == 0
    first_id = run("show-node-id", "--home", home).output.strip()
    run("init", "--home", home)
    assert run("show-node-id", "--home", home).output.strip() == first_id


def test_testnet_writes_validators_observers_ports_peers_and_funded_accounts(tmp_path: Any) -> None:
    out = str(tmp_path / "net")
    run("testnet", "--v", "4", "--observers", "1", "--o", out, "--chain-id", "careledger-t",
        "--starting-port", "30000")
    homes = ["node0", "node1", "node2", "node3", "observer0"]
    configs = [load_config(os.path.join(out, name)) for name in homes]
    assert [c.role for c in configs] == ["validator"] * 4 + ["observer"]
    ports = [p for c in configs for p in (c.p2p.listen_port, c.rpc.listen_port, c.instrumentation.prometheus_port)]
    assert len(set(ports)) == len(ports) and min(ports) == 30000
    genesis = load_genesis(configs[0].genesis_file)
    assert all(load_genesis(c.genesis_file) == genesis for c in configs)
    assert len(genesis.validators) == 4 and len(genesis.observers) == 1
    assert genesis.observers[0].node_key == load_key_file(configs[4].node_key_file).public_key
    assert not os.path.exists(configs[4].priv_validator_key_file)
    for index, config in enumerate(configs[:4]):
        own = load_key_file(config.node_key_file).public_key
        peer_keys = {p.node_key for p in config.p2p.peers}
        assert own not in peer_keys and len(peer_keys) == 3
        assert genesis.validators[index].public_key == load_key_file(config.priv_validator_key_file).public_key
    assert len(configs[4].p2p.peers) == 4
    accounts = sorted(os.listdir(os.path.join(out, "accounts")))
    assert accounts == ["org0-payer.json", "org1-provider.json", "org2-auditor.json"]
    for name in accounts:
        key = load_key_file(os.path.join(out, "accounts", name))
        assert genesis.app_state.balance_of(key.public_key) > 0
    assert [a.role for a in genesis.app_state.accounts] == ["payer", "provider", "auditor"]


def test_testnet_pipeline_writes_a_pipelined_genesis(tmp_path: Any) -> None:
    out = str(tmp_path / "net")
    run("testnet", "--v", "4", "--o", out, "--starting-port", "30000", "--pipeline", "3")
    params = load_genesis(load_config(os.path.join(out, "node0")).genesis_file).consensus_params
    assert (params.results_lag, params.max_in_flight) == (3, 3)
    assert run("testnet", "--v", "4", "--o", str(tmp_path / "bad"), "--pipeline", "9", ok=False).exit_code == 2


def test_testnet_refuses_ports_past_65535(tmp_path: Any) -> None:
    result = run("testnet", "--v", "4", "--o", str(tmp_path / "n"), "--starting-port", "65530", ok=False)
    assert result.exit_code == 2
    assert "out of range" in result.output


def test_show_validator_prints_the_consensus_key(tmp_path: Any) -> None:
    home = str(tmp_path / "h")
    run("init", "--home", home)
    shown = json.loads(run("show-validator", "--home", home).output)
    assert shown["public_key"] == load_key_file(load_config(home).priv_validator_key_file).public_key.hex()


def test_a_command_on_a_missing_home_exits_2_with_a_hint(tmp_path: Any) -> None:
    result = run("show-node-id", "--home", str(tmp_path / "nowhere"), ok=False)
    assert result.exit_code == 2
    assert "careledger init" in result.output


def test_keys_add_and_list(tmp_path: Any) -> None:
    home = str(tmp_path / "h")
    added = json.loads(run("keys", "add", "alice", "--home", home).output)
    listed = run("keys", "list", "--home", home).output
    assert "alice\t%s" % added["public_key"] in listed
    assert run("keys", "add", "alice", "--home", home, ok=False).exit_code == 1


def test_unsafe_reset_all_deletes_data_and_keeps_config_and_keys(tmp_path: Any) -> None:
    home = str(tmp_path / "h")
    run("init", "--home", home)
    config = load_config(home)
    os.makedirs(config.db_path)
    with open(config.priv_validator_state_file, "w") as handle:
        handle.write("{}")
    run("unsafe-reset-all", "--home", home)
    assert os.listdir(config.data_dir) == []
    assert os.path.exists(config.priv_validator_key_file) and os.path.exists(config.genesis_file)


# ---------------------------------------------------------------- client commands

CHAIN = "careledger-cli"


def use_node(monkeypatch: Any, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    def client(base_url: str) -> httpx.Client:
        return httpx.Client(base_url=base_url, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(cli_module, "http_client", client)


def test_tx_signs_with_the_next_nonce_submits_and_waits(tmp_path: Any, monkeypatch: Any) -> None:
    home = str(tmp_path / "h")
    key_file = json.loads(run("keys", "add", "payer", "--home", home).output)["file"]
    key = load_key_file(key_file)
    submitted: list[Tx] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/status":
            return httpx.Response(200, json={"chain_id": CHAIN})
        if path == "/state/" + b"nonce/".hex() + key.public_key.hex().encode().hex():
            return httpx.Response(200, json={"value": codec.encode(6).hex(), "height": 3})
        if path == "/tx" and request.method == "POST":
            tx = Tx.decode(request.content)
            tx.verify_signature()
            submitted.append(tx)
            return httpx.Response(200, json={"hash": tx.hash.hex()})
        if path.startswith("/tx/"):
            return httpx.Response(200, json={"status": "committed", "height": 4, "receipt": {"ok": True}})
        return httpx.Response(404, json={"error": "not_found"})

    use_node(monkeypatch, handler)
    body = json.dumps({"to": "0x" + "ab" * 32, "amount": 250})
    out = run("tx", "--node", "http://n", "--key", key_file, "--type", "transfer", "--body", body, "--wait").output
    tx = submitted[0]
    assert (tx.chain_id, tx.nonce, tx.type) == (CHAIN, 7, "transfer")
    assert tx.body == {"to": b"\xab" * 32, "amount": 250}
    assert out.splitlines()[0] == tx.hash.hex()
    assert json.loads(out.splitlines()[1])["height"] == 4


def test_tx_reports_a_rejection_and_exits_1(tmp_path: Any, monkeypatch: Any) -> None:
    key_file = json.loads(run("keys", "add", "k", "--home", str(tmp_path)).output)["file"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(400, json={"error": "nonce_too_old", "detail": "used"})
        return httpx.Response(200, json={"chain_id": CHAIN, "value": None})

    use_node(monkeypatch, handler)
    result = run("tx", "--node", "http://n", "--key", key_file, "--type", "transfer", "--body", "{}",
                 "--nonce", "1", ok=False)
    assert result.exit_code == 1
    assert "nonce_too_old" in result.output


def test_tx_refuses_a_body_that_is_not_a_json_object(tmp_path: Any) -> None:
    key_file = json.loads(run("keys", "add", "k", "--home", str(tmp_path)).output)["file"]
    result = run("tx", "--key", key_file, "--type", "transfer", "--body", "[1]", ok=False)
    assert result.exit_code == 2


def _proven_answer(tmp_path: Any) -> tuple[dict[str, Any], str, bytes]:
    """A /state?prove=true answer certified by 4 genesis validators, and that genesis."""
    out = str(tmp_path / "net")
    run("testnet", "--v", "4", "--o", out, "--chain-id", CHAIN)
    genesis_path = os.path.join(out, "node0", "config", "genesis.json")
    validator_keys = [load_key_file(os.path.join(out, "node%d" % i, "config", "priv_validator_key.json"))
                      for i in range(4)]
    key = b"balance/" + b"ab" * 32
    value = codec.encode(1234)
    tree = StateTree(MemoryStore())
    root = tree.apply(4, {key: value, b"other": b"\x01"})
    genesis = load_genesis(genesis_path)
    vhash = genesis.validator_set().hash
    # a header a light client trusted from genesis accepts: the genesis set in force, no hand-over,
    # time after genesis; from genesis it needs no history proof
    header = Header(CHAIN, 5, 0, genesis.genesis_time_ms + 1, ZERO_HASH, ZERO_HASH, ZERO_HASH, root, vhash, vhash,
                    ZERO_HASH, 4, validator_keys[0].public_key)
    payload = commit_vote_payload(5, 0, header.hash)
    votes = {k.public_key: k.sign("commit", CHAIN, payload) for k in validator_keys[:3]}
    certificate = make_certificate(5, 0, header.hash, votes)
    answer = {"key": key.hex(), "value": value.hex(), "height": 4,
              "proof": tree.prove(key, 4).to_bytes().hex(),
              "header": header.encode().hex(), "certificate": certificate.encode().hex()}
    return answer, genesis_path, key


def _serve(monkeypatch: Any, answer: dict[str, Any], epoch_changes: list[dict[str, Any]] | None = None) -> None:
    """Serve `answer` for every path but /light/epoch-changes (no validator-set change by default)."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/light/epoch-changes":
            return httpx.Response(200, json={"changes": epoch_changes or []})
        return httpx.Response(200, json=answer)

    use_node(monkeypatch, handler)


def test_query_prove_verifies_against_the_genesis_validators(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key = _proven_answer(tmp_path)
    _serve(monkeypatch, answer)
    out = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path).output
    assert out.splitlines() == ["1234", "verified at height 4"]


def test_query_prove_fails_on_a_forged_value(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key = _proven_answer(tmp_path)
    answer["value"] = codec.encode(999_999).hex()
    _serve(monkeypatch, answer)
    result = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path, ok=False)
    assert result.exit_code == 1
    assert "proof NOT verified" in result.output


def test_query_prove_fails_when_the_certificate_is_short_of_a_quorum(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key = _proven_answer(tmp_path)
    from ledger.types import CommitCertificate

    cert = CommitCertificate.decode(bytes.fromhex(answer["certificate"]))
    answer["certificate"] = CommitCertificate(cert.height, cert.view, cert.block_hash,
                                              cert.signatures[:2]).encode().hex()
    _serve(monkeypatch, answer)
    result = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path, ok=False)
    assert "quorum" in result.output


def test_query_prove_fails_against_another_chains_genesis(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key = _proven_answer(tmp_path)
    genesis = load_genesis(genesis_path)
    from dataclasses import replace

    save_genesis(genesis_path, replace(genesis, chain_id="careledger-elsewhere"))
    _serve(monkeypatch, answer)
    result = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path, ok=False)
    assert result.exit_code == 1


def _handed_over_answer(tmp_path: Any) -> tuple[dict[str, Any], str, bytes, list[dict[str, Any]], Any]:
    """Header 3 (certified by the genesis set) hands over to a new set, which certifies
    header 5 of the answer; returns the answer, genesis, key, the epoch change the node
    lists for it, and a handler serving the history proofs from header 3 to header 5."""
    from ledger import merkle
    from ledger.light import HeaderUpdate, HistoryProof
    from ledger.types import Validator, ValidatorSet

    answer, genesis_path, key = _proven_answer(tmp_path)
    genesis = load_genesis(genesis_path)
    out = str(tmp_path / "net")
    old_keys = [load_key_file(os.path.join(out, "node%d" % i, "config", "priv_validator_key.json")) for i in range(4)]
    new_keys = old_keys[1:] + [PrivateKey(b"\x42" * 32)]
    new_set = ValidatorSet(tuple(Validator("n%d" % i, k.public_key) for i, k in enumerate(new_keys)))
    old_hash = genesis.validator_set().hash
    h1, h2, h4 = (bytes([i]) * 32 for i in (1, 2, 4))
    handover = Header(CHAIN, 3, 0, genesis.genesis_time_ms + 1, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH,
                      old_hash, new_set.hash, merkle.root_from_hashes([h1, h2]), 2, old_keys[0].public_key)

    def certify(header: Header, signers: list[Any]) -> Any:
        payload = commit_vote_payload(header.height, 0, header.hash)
        return make_certificate(header.height, 0, header.hash,
                                {k.public_key: k.sign("commit", CHAIN, payload) for k in signers})

    history = [h1, h2, handover.hash, h4]
    old = Header.decode(bytes.fromhex(answer["header"]))
    header = Header(CHAIN, 5, 0, genesis.genesis_time_ms + 2, ZERO_HASH, ZERO_HASH, ZERO_HASH, old.app_hash,
                    new_set.hash, new_set.hash, merkle.root_from_hashes(history), 4, new_keys[0].public_key)
    answer.update(header=header.encode().hex(), certificate=certify(header, new_keys[:3]).encode().hex())
    update = HeaderUpdate(handover, certify(handover, old_keys[:3]), HistoryProof(), new_set)
    change = {"height": 3, "update": update.encode().hex()}
    proofs = {
        "/history/consistency": {"proof": [p.hex() for p in merkle.consistency_proof_from_hashes(history, 2)]},
        "/history/inclusion": {"proof": [p.hex() for p in merkle.inclusion_proof_from_hashes(history, 2)]},
    }
    return answer, genesis_path, key, [change], proofs


def _serve_chain(monkeypatch: Any, answer: dict[str, Any], changes: list[dict[str, Any]],
                 proofs: dict[str, Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/light/epoch-changes":
            return httpx.Response(200, json={"changes": changes})
        if request.url.path in proofs:
            return httpx.Response(200, json=proofs[request.url.path])
        return httpx.Response(200, json=answer)

    use_node(monkeypatch, handler)


def test_query_prove_follows_a_validator_set_change(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key, changes, proofs = _handed_over_answer(tmp_path)
    _serve_chain(monkeypatch, answer, changes, proofs)
    out = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path).output
    assert out.splitlines() == ["1234", "verified at height 4"]


def test_query_prove_fails_when_the_node_leaves_out_the_hand_over(tmp_path: Any, monkeypatch: Any) -> None:
    answer, genesis_path, key, _, proofs = _handed_over_answer(tmp_path)
    _serve_chain(monkeypatch, answer, [], proofs)
    result = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path, ok=False)
    assert result.exit_code == 1
    assert "proof NOT verified" in result.output and "another validator set" in result.output


def test_query_prove_fails_when_the_hand_over_is_not_certified_by_the_outgoing_set(
        tmp_path: Any, monkeypatch: Any) -> None:
    from ledger.light import HeaderUpdate
    from ledger.types import CommitCertificate

    answer, genesis_path, key, changes, proofs = _handed_over_answer(tmp_path)
    update = HeaderUpdate.from_wire(codec.decode(bytes.fromhex(changes[0]["update"])))
    cert = update.certificate
    short = CommitCertificate(cert.height, cert.view, cert.block_hash, cert.signatures[:2])
    changes[0]["update"] = HeaderUpdate(update.header, short, update.history, update.next_validators).encode().hex()
    _serve_chain(monkeypatch, answer, changes, proofs)
    result = run("query", "--node", "http://n", key.decode(), "--prove", "--genesis", genesis_path, ok=False)
    assert "proof NOT verified" in result.output and "quorum" in result.output


def test_query_without_prove_prints_the_decoded_value(monkeypatch: Any) -> None:
    _serve(monkeypatch, {"key": "00", "value": codec.encode({"org": "org0", "k": b"\x01"}).hex(), "height": 2})
    assert json.loads(run("query", "--node", "http://n", "account/x").output) == {"k": "0x01", "org": "org0"}


@pytest.mark.parametrize("body,expected", [
    ({"to": "0xabcd", "n": [1, "0x00"]}, {"to": b"\xab\xcd", "n": [1, b"\x00"]}),
    ({"memo": "plain"}, {"memo": "plain"}),
])
def test_json_bodies_map_0x_strings_to_bytes(body: Any, expected: Any) -> None:
    assert cli_module.json_to_body(body) == expected
    assert cli_module.json_to_body(cli_module.body_to_json(expected)) == expected


def test_an_account_file_is_a_loadable_key_with_its_org_and_role(tmp_path: Any) -> None:
    out = str(tmp_path / "net")
    run("testnet", "--v", "1", "--o", out, "--organisations", "4", "--accounts-per-org", "2")
    files = sorted(os.listdir(os.path.join(out, "accounts")))
    assert len(files) == 8 and "org3-payer-1.json" in files
    with open(os.path.join(out, "accounts", "org3-payer-1.json")) as handle:
        data = json.load(handle)
    assert (data["org"], data["role"]) == ("org3", "payer")
    assert isinstance(load_key_file(os.path.join(out, "accounts", "org3-payer-1.json")), PrivateKey)


def test_next_nonce_counts_the_senders_txs_in_the_uncertified_tip_block(monkeypatch: Any) -> None:
    key = PrivateKey(bytes(range(32)))
    tip_tx = Tx(CHAIN, key.public_key, 9, "transfer", {}).signed(key)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            return httpx.Response(200, json={"chain_id": CHAIN, "height": 5})
        if request.url.path == "/blocks/5":
            return httpx.Response(200, json={"txs": [tip_tx.encode().hex()]})
        return httpx.Response(200, json={"value": codec.encode(8).hex(), "height": 4})

    with httpx.Client(base_url="http://n", transport=httpx.MockTransport(handler)) as client:
        assert cli_module.next_nonce(client, key.public_key) == 10
