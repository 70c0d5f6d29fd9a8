"""config.toml and genesis.json: defaults, round trips, clear errors."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import pytest

from node.config import (
    AppState, ConfigError, ConsensusSection, Genesis, GenesisAccount, GenesisObserver, GenesisValidator,
    NodeConfig, Organisation, P2PSection, StorageSection, config_from_dict, consensus_settings, genesis_from_json,
    load_config, load_genesis, parse_peer, save_config, save_genesis,
)

K = [bytes([i]) * 32 for i in range(1, 12)]


def write_toml(home: Any, text: str) -> str:
    os.makedirs(os.path.join(home, "config"), exist_ok=True)
    with open(os.path.join(home, "config", "config.toml"), "w") as handle:
        handle.write(text)
    return str(home)


def sample_genesis() -> Genesis:
    return Genesis(
        chain_id="careledger-test", genesis_time_ms=1_700_000_000_000,
        validators=tuple(GenesisValidator("node%d" % i, K[i], K[i + 4], "127.0.0.1:%d" % (26656 + 10 * i))
                         for i in range(4)),
        observers=(GenesisObserver("observer0", K[9]),),
        app_state=AppState(
            organisations=(Organisation("org0", "A payer"),),
            accounts=(GenesisAccount(K[10], "org0", "payer"),),
            balances=((K[10], 500),),
            parameters=(("approval_threshold", [2, 3]),),
        ),
    )


def test_defaults_round_trip_through_toml(tmp_path: Any) -> None:
    config = NodeConfig(home=str(tmp_path), moniker="alpha")
    save_config(config)
    assert load_config(str(tmp_path)) == config


def test_a_full_config_round_trips_with_peers_and_every_section(tmp_path: Any) -> None:
    config = NodeConfig(
        home=str(tmp_path), moniker="beta", role="observer",
        p2p=P2PSection(listen_port=0, persistent_peers=("%s@127.0.0.1:26656" % K[1].hex(),)),
        consensus=ConsensusSection(max_batch_txs=10, batch_timeout_ms=0),
    )
    save_config(config)
    loaded = load_config(str(tmp_path))
    assert loaded == config
    assert loaded.p2p.peers[0].node_key == K[1]
    assert not loaded.is_validator


def test_an_empty_file_means_all_defaults(tmp_path: Any) -> None:
    config = load_config(write_toml(tmp_path, ""))
    assert config.rpc.listen_port == 26657
    assert config.instrumentation.namespace == "careledger"
    assert config.log.format == "console"


def test_paths_follow_the_cometbft_layout(tmp_path: Any) -> None:
    config = NodeConfig(home=str(tmp_path))
    assert config.genesis_file == os.path.join(str(tmp_path), "config", "genesis.json")
    assert config.node_key_file.endswith(os.path.join("config", "node_key.json"))
    assert config.priv_validator_key_file.endswith(os.path.join("config", "priv_validator_key.json"))
    assert config.priv_validator_state_file.endswith(os.path.join("data", "priv_validator_state.json"))
    assert config.db_path.startswith(config.data_dir)


@pytest.mark.parametrize("text,needle", [
    ("colour = 1", "unknown key in config.toml: colour"),
    ("[p2p]\nlisten_prot = 1", "unknown key in [p2p]: listen_prot"),
    ("[rpc]\nlisten_port = \"26657\"", "[rpc] listen_port must be int"),
    ("[instrumentation]\nprometheus = 1", "[instrumentation] prometheus must be bool"),
    ("[mempool]\nmax_txs = true", "[mempool] max_txs must be int"),
    ("[p2p]\npersistent_peers = \"a@b:1\"", "[p2p] persistent_peers must be a list"),
    ("[p2p]\npersistent_peers = [\"nothex@127.0.0.1:1\"]", "peer must be"),
    ("[rpc]\nlisten_port = 70000", "port in [0, 65535]"),
    ("role = \"leader\"", "role must be one of"),
    ("[log]\nformat = \"xml\"", "[log] format must be one of"),
    ("[consensus]\nmax_timeout_ms = 10\nbase_timeout_ms = 20", "max_timeout_ms must be >= base_timeout_ms"),
    ("[mempool]\nmax_txs = 0", "[mempool] max_txs must be >= 1"),
    ("p2p = 3", "[p2p] must be a table"),
    ("[rpc\n", "cannot read"),
])
def test_a_bad_config_is_a_config_error_naming_the_key(tmp_path: Any, text: str, needle: str) -> None:
    home = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(home)
    assert needle in str(info.value)
    assert "config.toml" in str(info.value)


def test_a_missing_config_file_says_how_to_create_one(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="careledger init"):
        load_config(str(tmp_path))


def test_config_from_dict_validates_without_a_file(tmp_path: Any) -> None:
    config = config_from_dict(str(tmp_path), {"moniker": "x", "storage": {"keep_recent_versions": 100}})
    assert config.storage.keep_recent_versions == 100


def test_the_old_storage_key_retain_versions_still_loads_as_keep_recent_versions(tmp_path: Any) -> None:
    config = config_from_dict(str(tmp_path), {"storage": {"retain_versions": 0}})
    assert config.storage.keep_recent_versions == 0
    with pytest.raises(ConfigError, match="old name"):
        config_from_dict(str(tmp_path), {"storage": {"retain_versions": 5, "keep_recent_versions": 5}})


def test_keep_recent_versions_of_one_is_refused_because_proofs_need_the_tip_minus_one(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="keep_recent_versions"):
        config_from_dict(str(tmp_path), {"storage": {"keep_recent_versions": 1}})


def test_p2p_rate_limit_keys_become_the_peer_budgets(tmp_path: Any) -> None:
    config = config_from_dict(str(tmp_path), {"p2p": {"gossip_rate_msgs": 7, "gossip_burst_msgs": 9,
                                                      "rate_limit_disconnect_ms": 1500}})
    limits = config.p2p.rate_limits()
    assert (limits.gossip.msgs_per_s, limits.gossip.burst_msgs) == (7, 9)
    assert limits.disconnect_after_s == 1.5 and limits.enabled
    assert limits.consensus.bytes_per_s == 32 * 1024 * 1024  # the documented default
    with pytest.raises(ConfigError, match="gossip_burst_bytes"):
        config_from_dict(str(tmp_path), {"p2p": {"gossip_burst_bytes": 0}})
    with pytest.raises(ConfigError, match="rate_limit"):
        config_from_dict(str(tmp_path), {"p2p": {"rate_limit": 1}})


def test_p2p_per_ip_inbound_keys_become_the_inbound_limits(tmp_path: Any) -> None:
    default = config_from_dict(str(tmp_path), {}).p2p.rate_limits().inbound
    assert (default.max_pending_per_ip, default.per_ip_per_s, default.per_ip_burst) == (16, 8, 32)
    config = config_from_dict(str(tmp_path), {"p2p": {"max_pending_per_ip": 3, "inbound_per_ip_per_s": 0,
                                                      "inbound_per_ip_burst": 0}})  # 0/0: no per-IP bucket
    inbound = config.p2p.rate_limits().inbound
    assert (inbound.max_pending_per_ip, inbound.per_ip_per_s, inbound.per_ip_burst) == (3, 0, 0)


@pytest.mark.parametrize("p2p, message", [
    ({"max_pending_per_ip": 0}, r"\[p2p\] max_pending_per_ip must be >= 1"),
    ({"max_pending_per_ip": -4}, r"\[p2p\] max_pending_per_ip must be >= 1"),
    ({"inbound_per_ip_per_s": -1}, r"inbound_per_ip_per_s and inbound_per_ip_burst must be >= 0"),
    ({"inbound_per_ip_burst": -1}, r"inbound_per_ip_per_s and inbound_per_ip_burst must be >= 0"),
    ({"inbound_per_ip_per_s": 5, "inbound_per_ip_burst": 0}, r"inbound_per_ip_burst must be >= 1 when"),
    ({"max_pending_per_ip": 2.5}, r"max_pending_per_ip must be int"),
    ({"inbound_per_ip_per_s": True}, r"inbound_per_ip_per_s must be int"),
])
def test_bad_per_ip_inbound_limits_are_refused(tmp_path: Any, p2p: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(str(tmp_path), {"p2p": p2p})


def test_parse_peer_accepts_the_documented_form_only() -> None:
    peer = parse_peer("%s@127.0.0.1:26656" % K[2].hex())
    assert (peer.node_key, peer.host, peer.port) == (K[2], "127.0.0.1", 26656)
    assert str(peer) == "%s@127.0.0.1:26656" % K[2].hex()
    for bad in ("127.0.0.1:1", "%s@127.0.0.1" % K[2].hex(), "ab@127.0.0.1:1", "%s@:1" % K[2].hex()):
        with pytest.raises(ConfigError):
            parse_peer(bad)


def test_genesis_round_trips_and_its_hash_is_stable(tmp_path: Any) -> None:
    genesis = sample_genesis()
    path = str(tmp_path / "genesis.json")
    save_genesis(path, genesis)
    loaded = load_genesis(path)
    assert loaded == genesis
    assert loaded.hash == genesis.hash
    assert len(genesis.hash) == 32
    assert replace(genesis, chain_id="careledger-other").hash != genesis.hash


def test_genesis_gives_the_validator_set_and_the_p2p_allowlist() -> None:
    genesis = sample_genesis()
    vset = genesis.validator_set()
    assert vset.size == 4 and vset.quorum == 3
    assert [v.public_key for v in vset.validators] == K[0:4]
    assert genesis.allowed_node_keys() == frozenset(K[4:8] + [K[9]])
    assert genesis.validator_by_node_key(K[5]).name == "node1"
    assert genesis.app_state.balance_of(K[10]) == 500


def _genesis_json(**changes: Any) -> dict[str, Any]:
    data = sample_genesis().to_json()
    data.update(changes)
    return data


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.update(chain_id="Bad Chain"), "chain_id"),
    (lambda d: d.update(extra=1), "unknown key extra"),
    (lambda d: d.update(validators=[]), "1..128 validators"),
    (lambda d: d["validators"][0].update(public_key="zz"), "validators[0].public_key"),
    (lambda d: d["validators"][1].update(public_key=d["validators"][0]["public_key"]), "appears twice"),
    (lambda d: d["validators"][0].update(address="nowhere"), "peer must be"),
    (lambda d: d["observers"][0].update(node_key=d["validators"][0]["node_key"]), "node key appears twice"),
    (lambda d: d["app_state"]["accounts"][0].update(org="nobody"), "not a listed organisation"),
    (lambda d: d["app_state"]["accounts"][0].update(role="king"), "role must be one of"),
    (lambda d: d["app_state"]["balances"].update({K[10].hex(): -1}), "cents"),
    (lambda d: d.update(genesis_time_ms=True), "genesis_time_ms must be int"),
    (lambda d: d["consensus_params"].update(max_block_txs=0), "max_block_txs"),
    (lambda d: d["consensus_params"].update(speed=3), "unknown key"),
])
def test_a_bad_genesis_is_a_config_error_naming_the_field(mutate: Any, needle: str) -> None:
    data = _genesis_json()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        genesis_from_json(data)
    assert needle in str(info.value)


def test_an_unreadable_genesis_file_is_a_config_error(tmp_path: Any) -> None:
    path = tmp_path / "genesis.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_genesis(str(path))
    with pytest.raises(ConfigError, match="no genesis file"):
        load_genesis(str(tmp_path / "missing.json"))


def test_genesis_json_is_plain_json_with_hex_keys(tmp_path: Any) -> None:
    path = str(tmp_path / "genesis.json")
    save_genesis(path, sample_genesis())
    with open(path) as handle:
        data = json.load(handle)
    assert data["validators"][0]["public_key"] == K[0].hex()
    assert data["app_state"]["balances"] == {K[10].hex(): 500}


def test_consensus_settings_take_network_wide_values_from_genesis(tmp_path: Any) -> None:
    config = NodeConfig(home=str(tmp_path), consensus=ConsensusSection(checkpoint_interval=99, max_batch_txs=500))
    genesis = replace(sample_genesis(), consensus_params=replace(sample_genesis().consensus_params,
                                                                 checkpoint_interval=32, max_block_txs=200))
    settings = consensus_settings(config, genesis)
    assert settings["checkpoint_interval"] == 32
    assert settings["max_batch_txs"] == 200


@pytest.mark.parametrize("name", ["results_lag", "max_in_flight"])
def test_pipelining_value_1_is_todays_format_and_is_not_written_back(name: str) -> None:
    data = _genesis_json()
    data["consensus_params"][name] = 1  # today's format: accepted, and the genesis is unchanged
    assert genesis_from_json(data) == genesis_from_json(_genesis_json())
    assert name not in genesis_from_json(data).to_json()["consensus_params"]


def test_a_pipelined_genesis_is_accepted_round_trips_and_reaches_the_consensus_config(tmp_path: Any) -> None:
    data = _genesis_json()
    data["consensus_params"].update(results_lag=3, max_in_flight=2)
    genesis = genesis_from_json(data)
    assert (genesis.consensus_params.results_lag, genesis.consensus_params.max_in_flight) == (3, 2)
    assert genesis_from_json(genesis.to_json()) == genesis
    config = NodeConfig(home=str(tmp_path), consensus=ConsensusSection(pipeline_window=1))
    settings = consensus_settings(config, genesis)
    assert (settings["results_lag"], settings["max_in_flight"]) == (3, 2)
    assert settings["pipeline_window"] == 2  # the message buffer holds the heights in flight


@pytest.mark.parametrize("params, match", [
    ({"results_lag": 2, "max_in_flight": 3}, r"max_in_flight \(W=3\) must be <= results_lag \(L=2\)"),
    ({"max_in_flight": 2}, r"max_in_flight \(W=2\) must be <= results_lag \(L=1\)"),
    ({"results_lag": 9}, r"results_lag = 9: must be an integer in \[1, 8\]"),
    ({"results_lag": 0}, r"results_lag = 0: must be an integer in \[1, 8\]"),
    ({"max_in_flight": 0}, r"max_in_flight = 0"),
    ({"results_lag": True}, r"results_lag = True"),
    ({"results_lag": "3"}, r"results_lag = '3'"),
])
def test_a_pipelining_genesis_out_of_bounds_is_refused(params: dict[str, Any], match: str) -> None:
    data = _genesis_json()
    data["consensus_params"].update(params)
    with pytest.raises(ConfigError, match=match):
        genesis_from_json(data)


def test_a_pipelined_genesis_needs_the_versions_its_latest_proof_serves(tmp_path: Any) -> None:
    data = _genesis_json()
    data["consensus_params"].update(results_lag=3, max_in_flight=3)
    genesis = genesis_from_json(data)
    with pytest.raises(ConfigError, match=r"keep_recent_versions = 3: must be 0 or >= results_lag \+ 1 = 4"):
        consensus_settings(NodeConfig(home=str(tmp_path), storage=StorageSection(keep_recent_versions=3)), genesis)
    assert consensus_settings(NodeConfig(home=str(tmp_path), storage=StorageSection(keep_recent_versions=4)),
                              genesis)["results_lag"] == 3
