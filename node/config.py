"""A node's home directory, its `config.toml` and its `genesis.json`.

Home layout (CometBFT's, so operators find things where they expect them)::

    <home>/config/config.toml               NodeConfig (this module)
    <home>/config/genesis.json              Genesis (this module), identical on every node
    <home>/config/node_key.json             p2p identity key (node.keys format, mode 0600)
    <home>/config/priv_validator_key.json   consensus signing key (validators only, 0600)
    <home>/data/careledger.db/              LevelDB: blocks, state tree, indexes
    <home>/data/priv_validator_state.slot0  double-sign guard (written by the runtime:
    <home>/data/priv_validator_state.slot1  two checksummed slots, newest valid wins; a v1
                                            priv_validator_state.json is migrated once)

`config.toml` (every key optional; defaults below; an unknown key or a value
of the wrong type is a `ConfigError` naming the key)::

    moniker = "node0"                 # human name in /status and logs
    role = "validator"                # "validator" | "observer" (read-only, no signing key)

    [p2p]
    listen_host = "127.0.0.1"
    listen_port = 26656
    persistent_peers = []             # ["<node key hex>@host:port", ...]
    max_frame_bytes = 16777216        # frames above this are refused before reading
    send_queue_size = 4096            # per-peer outgoing frames before dropping
    dial_backoff_initial_ms = 100     # first redial delay, doubled per failure ...
    dial_backoff_max_ms = 10000       # ... up to this
    handshake_timeout_ms = 10000
    # per-peer rate limits on RECEIVED frames (node/ratelimit.py); 0 disables one limit.
    # "consensus" = consensus + block-sync channels, "gossip" = tx gossip: separate
    # budgets, so a gossip flood never starves votes. Over budget: gossip frames are
    # dropped; consensus frames are dropped, and a peer over its consensus budget
    # for rate_limit_disconnect_ms (its buckets never refill to half) is disconnected.
    # Defaults are 10-30x what an honest peer sends in a 4-7 validator cluster at
    # 3,500 tx/s (~1 MB/s of blocks; gossip alike); bursts hold a full send queue.
    rate_limit = true                 # false: no per-peer limits at all
    consensus_rate_bytes = 33554432   # bytes/s per peer (32 MiB/s) ...
    consensus_burst_bytes = 67108864  # ... bucket size (64 MiB)
    consensus_rate_msgs = 5000        # frames/s per peer ...
    consensus_burst_msgs = 10000      # ... bucket size
    gossip_rate_bytes = 8388608       # 8 MiB/s per peer
    gossip_burst_bytes = 33554432     # 32 MiB
    gossip_rate_msgs = 10000
    gossip_burst_msgs = 20000
    rate_limit_disconnect_ms = 5000   # continuously over the consensus budget this long
    # per remote IP (IPv6: per /64), on inbound connections BEFORE their handshake
    # (node/ratelimit.py InboundGate); refused ones are closed unread. Sized for a
    # whole loopback cluster on one host (all nodes are 127.0.0.1): a validator sees
    # at most V-1+O handshakes at once from it (16 covers 7 validators + 10 observers).
    max_pending_per_ip = 16           # >= 1: one IP's links in their handshake at once
    inbound_per_ip_per_s = 8          # new inbound connections per second per IP (0 = off) ...
    inbound_per_ip_burst = 32         # ... bucket size: two full-cluster reconnect waves

    [rpc]
    listen_host = "127.0.0.1"
    listen_port = 26657               # 0 = any free port (reported by serve_rpc)
    max_body_bytes = 1000000          # larger POST bodies get 413

    [instrumentation]
    prometheus = true                 # serve /metrics on its own port
    prometheus_listen_host = "127.0.0.1"
    prometheus_port = 26660
    namespace = "careledger"          # metric name prefix

    [consensus]                       # local copies; see Genesis.consensus_params
    max_batch_txs = 400               # a primary proposes once it holds this many txs ...
    batch_timeout_ms = 20             # ... or this long after it could propose fewer
    pipeline_window = 8
    checkpoint_interval = 16          # must equal genesis consensus_params.checkpoint_interval
    base_timeout_ms = 1000            # view-change timeout, doubled per failed view ...
    max_timeout_ms = 60000            # ... capped here
    empty_block_interval_ms = 0       # 0 = never create empty blocks

    [mempool]
    max_txs = 20000
    max_bytes = 67108864
    nonce_window = 64                 # accept nonces in (committed, committed + window]

    [storage]
    keep_recent_versions = 0          # state-tree versions kept (0 = keep all: observers,
                                      # archives, audit sources). N >= 2: every 8 commits,
                                      # at tip H, the node prunes versions < H - N + 1, so
                                      # /state/{key}?prove=true&height=V and /proof/state
                                      # serve at least V in [H - N + 1, H - 1] (up to 7
                                      # older may remain; 410 "pruned" below the oldest).
                                      # The old name retain_versions is read as this key.
    retain_blocks = 0                 # blocks kept (0 = keep every block: validators that
                                      # serve catch-up, observers, archives). N >= 32 and
                                      # >= 2 x checkpoint_interval + results_lag: the node
                                      # prunes bodies, certificates, receipts and tx index
                                      # rows below tip - N + 1 (headers and validator-set
                                      # changes stay); /blocks, /commit answer 410 "pruned"
                                      # with earliest_block_height (/status) below it.

    [log]
    level = "info"                    # debug | info | warning | error
    format = "console"                # console | json

Genesis JSON (bytes as lowercase hex)::

    {"chain_id": "careledger-test", "genesis_time_ms": 1700000000000,
     "validators": [{"name", "public_key", "node_key", "address": "host:port"}],
     "observers": [{"name", "node_key"}],
     "consensus_params": {"checkpoint_interval": 16, "max_block_txs": 10000,
                          "results_lag": 1, "max_in_flight": 1},   # optional, 1 ≤ W ≤ L ≤ 8
     "app_state": {"organisations": [{"id", "name", "kind", "voting"}],
                   "accounts": [{"public_key", "org", "role", "admin"}],
                   "balances": {"<public key hex>": cents},
                   "parameters": {"name": value}}}

App state fields and their defaults (`contracts/genesis.py` reads the same shape):

- organisation `kind`: payer | provider | auditor | regulator | patient_agent.
  Missing (files written before the field existed): the `role` of the
  organisation's first listed account, else "payer".
- organisation `voting`: counts in governance's k of n. Missing: true for
  payer, provider and auditor; false for regulator and patient_agent.
- account `role`: must equal its organisation's kind (an account always acts in
  its organisation's kind); missing means exactly that.
- account `admin`: may manage its organisation's keys and propose/approve
  governance changes. Missing: false.

Functions raise `ConfigError` (a ValueError) with the file and key at fault.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from ledger import codec
from ledger.crypto import PUBLIC_KEY_BYTES
from ledger.errors import LedgerError
from ledger.hashing import sha256
from ledger.types import MAX_TXS_PER_BLOCK, MAX_VALIDATORS, Validator, ValidatorSet
from node.pruning import MIN_RETAIN_BLOCKS
from node.ratelimit import Budget, InboundLimits, RateLimits

CONFIG_DIR = "config"
DATA_DIR = "data"
CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.json"
NODE_KEY_FILE = "node_key.json"
PRIV_VALIDATOR_KEY_FILE = "priv_validator_key.json"
PRIV_VALIDATOR_STATE_FILE = "priv_validator_state.json"
DB_NAME = "careledger.db"

ROLES = ("validator", "observer")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")
ACCOUNT_ROLES = ("payer", "provider", "auditor", "regulator", "patient_agent")
DEFAULT_P2P_PORT = 26656
DEFAULT_RPC_PORT = 26657
DEFAULT_METRICS_PORT = 26660
MAX_PORT = 65535

_CHAIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """A config or genesis file is missing, malformed or inconsistent."""


# ----------------------------------------------------------------- sections


@dataclass(frozen=True)
class PeerSpec:
    """A parsed `persistent_peers` entry: `<node key hex>@host:port`."""

    node_key: bytes
    host: str
    port: int

    def __str__(self) -> str:
        return "%s@%s:%d" % (self.node_key.hex(), self.host, self.port)


def parse_peer(text: str) -> PeerSpec:
    """Parse `<64 hex chars>@host:port`. Raises ConfigError if malformed."""
    key_hex, at, hostport = text.strip().partition("@")
    host, colon, port = hostport.rpartition(":")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    if not at or not colon or len(key) != PUBLIC_KEY_BYTES or not host or not port.isdigit() \
            or not 0 < int(port) <= MAX_PORT:
        raise ConfigError("peer must be <64 hex node key>@host:port, got %r" % text)
    return PeerSpec(key, host, int(port))


def _check_port(value: int, what: str) -> None:
    if not 0 <= value <= MAX_PORT:
        raise ConfigError("%s must be a port in [0, %d], got %d" % (what, MAX_PORT, value))


def _check_positive(section: Any, names: tuple[str, ...], where: str) -> None:
    for name in names:
        if getattr(section, name) < 1:
            raise ConfigError("[%s] %s must be >= 1" % (where, name))


@dataclass(frozen=True)
class P2PSection:
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_P2P_PORT
    persistent_peers: tuple[str, ...] = ()
    max_frame_bytes: int = 16 * 1024 * 1024
    send_queue_size: int = 4096
    dial_backoff_initial_ms: int = 100
    dial_backoff_max_ms: int = 10_000
    handshake_timeout_ms: int = 10_000
    rate_limit: bool = True
    consensus_rate_bytes: int = 32 * 1024 * 1024
    consensus_burst_bytes: int = 64 * 1024 * 1024
    consensus_rate_msgs: int = 5_000
    consensus_burst_msgs: int = 10_000
    gossip_rate_bytes: int = 8 * 1024 * 1024
    gossip_burst_bytes: int = 32 * 1024 * 1024
    gossip_rate_msgs: int = 10_000
    gossip_burst_msgs: int = 20_000
    rate_limit_disconnect_ms: int = 5_000
    max_pending_per_ip: int = 16
    inbound_per_ip_per_s: int = 8
    inbound_per_ip_burst: int = 32

    def __post_init__(self) -> None:
        _check_port(self.listen_port, "[p2p] listen_port")
        _check_positive(self, ("max_frame_bytes", "send_queue_size", "dial_backoff_initial_ms",
                               "dial_backoff_max_ms", "handshake_timeout_ms", "rate_limit_disconnect_ms",
                               "max_pending_per_ip"), "p2p")
        if self.inbound_per_ip_per_s < 0 or self.inbound_per_ip_burst < 0:
            raise ConfigError("[p2p] inbound_per_ip_per_s and inbound_per_ip_burst must be >= 0")
        if self.inbound_per_ip_per_s > 0 and self.inbound_per_ip_burst < 1:
            raise ConfigError("[p2p] inbound_per_ip_burst must be >= 1 when inbound_per_ip_per_s limits (> 0)")
        for kind in ("consensus", "gossip"):
            for unit in ("bytes", "msgs"):
                rate = getattr(self, "%s_rate_%s" % (kind, unit))
                burst = getattr(self, "%s_burst_%s" % (kind, unit))
                if rate < 0 or burst < 0:
                    raise ConfigError("[p2p] %s_rate_%s and %s_burst_%s must be >= 0" % (kind, unit, kind, unit))
                if rate > 0 and burst < 1:
                    raise ConfigError("[p2p] %s_burst_%s must be >= 1 when %s_rate_%s limits (> 0)"
                                      % (kind, unit, kind, unit))
        if self.dial_backoff_max_ms < self.dial_backoff_initial_ms:
            raise ConfigError("[p2p] dial_backoff_max_ms must be >= dial_backoff_initial_ms")
        for peer in self.persistent_peers:
            parse_peer(peer)

    @property
    def peers(self) -> tuple[PeerSpec, ...]:
        """`persistent_peers`, parsed."""
        return tuple(parse_peer(peer) for peer in self.persistent_peers)

    def rate_limits(self) -> RateLimits:
        """The per-peer budgets and per-IP inbound limits these keys describe (`node.ratelimit`)."""
        return RateLimits(
            consensus=Budget(self.consensus_rate_bytes, self.consensus_burst_bytes,
                             self.consensus_rate_msgs, self.consensus_burst_msgs),
            gossip=Budget(self.gossip_rate_bytes, self.gossip_burst_bytes,
                          self.gossip_rate_msgs, self.gossip_burst_msgs),
            disconnect_after_s=self.rate_limit_disconnect_ms / 1000, enabled=self.rate_limit,
            inbound=InboundLimits(max_pending_per_ip=self.max_pending_per_ip,
                                  per_ip_per_s=self.inbound_per_ip_per_s, per_ip_burst=self.inbound_per_ip_burst))


@dataclass(frozen=True)
class RPCSection:
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_RPC_PORT
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        _check_port(self.listen_port, "[rpc] listen_port")
        _check_positive(self, ("max_body_bytes",), "rpc")


@dataclass(frozen=True)
class InstrumentationSection:
    prometheus: bool = True
    prometheus_listen_host: str = "127.0.0.1"
    prometheus_port: int = DEFAULT_METRICS_PORT
    namespace: str = "careledger"

    def __post_init__(self) -> None:
        _check_port(self.prometheus_port, "[instrumentation] prometheus_port")
        if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", self.namespace):
            raise ConfigError("[instrumentation] namespace must be a Prometheus name, got %r" % self.namespace)


@dataclass(frozen=True)
class ConsensusSection:
    max_batch_txs: int = 400
    batch_timeout_ms: int = 20
    pipeline_window: int = 8
    checkpoint_interval: int = 16
    base_timeout_ms: int = 1_000
    max_timeout_ms: int = 60_000
    empty_block_interval_ms: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("max_batch_txs", "pipeline_window", "checkpoint_interval",
                               "base_timeout_ms", "max_timeout_ms"), "consensus")
        if self.batch_timeout_ms < 0 or self.empty_block_interval_ms < 0:
            raise ConfigError("[consensus] batch_timeout_ms and empty_block_interval_ms must be >= 0")
        if self.max_timeout_ms < self.base_timeout_ms:
            raise ConfigError("[consensus] max_timeout_ms must be >= base_timeout_ms")
        if self.max_batch_txs > MAX_TXS_PER_BLOCK:
            raise ConfigError("[consensus] max_batch_txs must be <= %d" % MAX_TXS_PER_BLOCK)


@dataclass(frozen=True)
class MempoolSection:
    max_txs: int = 20_000
    max_bytes: int = 64 * 1024 * 1024
    nonce_window: int = 64

    def __post_init__(self) -> None:
        _check_positive(self, ("max_txs", "max_bytes", "nonce_window"), "mempool")


@dataclass(frozen=True)
class StorageSection:
    keep_recent_versions: int = 0
    retain_blocks: int = 0

    def __post_init__(self) -> None:
        if self.keep_recent_versions < 0 or self.keep_recent_versions == 1:
            raise ConfigError("[storage] keep_recent_versions must be 0 (keep every version) or >= 2 "
                              "(the latest proof route serves version tip - 1)")
        if self.retain_blocks < 0 or 0 < self.retain_blocks < MIN_RETAIN_BLOCKS:
            raise ConfigError("[storage] retain_blocks must be 0 (keep every block) or >= %d "
                              "(lagging peers catch up from the recent blocks)" % MIN_RETAIN_BLOCKS)


# config.toml keys renamed: old name -> new name (an old file still loads)
_RENAMED_KEYS = {"storage": {"retain_versions": "keep_recent_versions"}}


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "console"

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS:
            raise ConfigError("[log] level must be one of %s, got %r" % (", ".join(LOG_LEVELS), self.level))
        if self.format not in LOG_FORMATS:
            raise ConfigError("[log] format must be one of %s, got %r" % (", ".join(LOG_FORMATS), self.format))


_SECTIONS: dict[str, type] = {
    "p2p": P2PSection,
    "rpc": RPCSection,
    "instrumentation": InstrumentationSection,
    "consensus": ConsensusSection,
    "mempool": MempoolSection,
    "storage": StorageSection,
    "log": LogSection,
}


# --------------------------------------------------------------- NodeConfig


@dataclass(frozen=True)
class NodeConfig:
    """Everything `config.toml` says, plus where the home directory is.

    `home` is not stored in the file: it is where the file was loaded from.
    The chain id lives in the genesis (`load_genesis().chain_id`).
    """

    home: str
    moniker: str = "node"
    role: str = "validator"
    p2p: P2PSection = field(default_factory=P2PSection)
    rpc: RPCSection = field(default_factory=RPCSection)
    instrumentation: InstrumentationSection = field(default_factory=InstrumentationSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    storage: StorageSection = field(default_factory=StorageSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError("role must be one of %s, got %r" % (", ".join(ROLES), self.role))
        if self.role != "validator" and self.storage.retain_blocks:
            # an observer's light client re-verifies every stored block from genesis at startup
            raise ConfigError("[storage] retain_blocks must be 0 on an observer (it re-verifies every block)")
        if not self.moniker or len(self.moniker) > 64:
            raise ConfigError("moniker must be 1..64 characters")

    # -- paths (all absolute when `home` is)
    @property
    def config_dir(self) -> str:
        return os.path.join(self.home, CONFIG_DIR)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.home, DATA_DIR)

    @property
    def config_file(self) -> str:
        return os.path.join(self.config_dir, CONFIG_FILE)

    @property
    def genesis_file(self) -> str:
        return os.path.join(self.config_dir, GENESIS_FILE)

    @property
    def node_key_file(self) -> str:
        return os.path.join(self.config_dir, NODE_KEY_FILE)

    @property
    def priv_validator_key_file(self) -> str:
        return os.path.join(self.config_dir, PRIV_VALIDATOR_KEY_FILE)

    @property
    def priv_validator_state_file(self) -> str:
        return os.path.join(self.data_dir, PRIV_VALIDATOR_STATE_FILE)

    @property
    def db_path(self) -> str:
        """The LevelDB directory holding blocks, state and indexes."""
        return os.path.join(self.data_dir, DB_NAME)

    @property
    def is_validator(self) -> bool:
        return self.role == "validator"

    def load_genesis(self) -> "Genesis":
        """Raises ConfigError if the genesis file is missing or invalid."""
        return load_genesis(self.genesis_file)

    def replace(self, **changes: Any) -> "NodeConfig":
        """A copy with top-level fields or whole sections replaced."""
        return dataclasses.replace(self, **changes)

    def to_toml_dict(self) -> dict[str, Any]:
        """The dict written to config.toml (everything but `home`)."""
        out: dict[str, Any] = {"moniker": self.moniker, "role": self.role}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return out


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(value: Any, expected: Any, where: str) -> Any:
    """Return `value` converted to the field's type, or raise ConfigError.

    TOML gives int/bool/str/list; bool is never accepted for int and vice versa.
    """
    origin = typing.get_origin(expected)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(expected)
        if not isinstance(value, list):
            raise ConfigError("%s must be a list, got %s" % (where, type(value).__name__))
        return tuple(_check_value(item, item_type, "%s[%d]" % (where, i)) for i, item in enumerate(value))
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field type is listed above
        raise TypeError("unsupported config field type %r" % (expected,))
    if not ok:
        raise ConfigError("%s must be %s, got %s %r" % (where, expected.__name__, type(value).__name__, value))
    return value


def _build_section(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError("[%s] must be a table" % where)
    for old, new in _RENAMED_KEYS.get(where, {}).items():
        if old in table:
            if new in table:
                raise ConfigError("[%s] has both %s and its old name %s" % (where, new, old))
            table = {(new if k == old else k): v for k, v in table.items()}
    hints = _field_types(cls)
    unknown = sorted(set(table) - set(hints))
    if unknown:
        raise ConfigError("unknown key%s in [%s]: %s (known: %s)" % (
            "s" if len(unknown) > 1 else "", where, ", ".join(unknown), ", ".join(sorted(hints))))
    values = {name: _check_value(value, hints[name], "[%s] %s" % (where, name)) for name, value in table.items()}
    return cls(**values)


def config_from_dict(home: str, data: dict[str, Any]) -> NodeConfig:
    """Validate a parsed config.toml. Raises ConfigError."""
    top_level = {"moniker": str, "role": str}
    unknown = sorted(set(data) - set(top_level) - set(_SECTIONS))
    if unknown:
        raise ConfigError("unknown key%s in config.toml: %s (known: %s)" % (
            "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(list(top_level) + list(_SECTIONS))))
    values: dict[str, Any] = {}
    for name, kind in top_level.items():
        if name in data:
            values[name] = _check_value(data[name], kind, name)
    for name, cls in _SECTIONS.items():
        if name in data:
            values[name] = _build_section(cls, data[name], name)
    return NodeConfig(home=home, **values)


def load_config(home: str) -> NodeConfig:
    """Read `<home>/config/config.toml`. Raises ConfigError."""
    home = os.path.abspath(home)
    path = os.path.join(home, CONFIG_DIR, CONFIG_FILE)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError("no config file at %s (run `careledger init --home %s`)" % (path, home)) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc)) from exc
    try:
        return config_from_dict(home, data)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from exc


def save_config(config: NodeConfig) -> None:
    """Write `config.toml` under `config.home`, creating the directories."""
    os.makedirs(config.config_dir, exist_ok=True)
    os.makedirs(config.data_dir, exist_ok=True)
    with open(config.config_file, "wb") as handle:
        tomli_w.dump(config.to_toml_dict(), handle)


# ------------------------------------------------------------------ genesis


@dataclass(frozen=True)
class GenesisValidator:
    """A validator: `public_key` signs consensus messages, `node_key` is its p2p identity."""

    name: str
    public_key: bytes
    node_key: bytes
    address: str  # "host:port" of its p2p listener

    @property
    def peer(self) -> PeerSpec:
        return parse_peer("%s@%s" % (self.node_key.hex(), self.address))


@dataclass(frozen=True)
class GenesisObserver:
    """A read-only node allowed to connect: only its p2p `node_key` is pinned."""

    name: str
    node_key: bytes


@dataclass(frozen=True)
class ConsensusParams:
    """Network-wide values every node must share (they shape headers and checkpoints)."""

    checkpoint_interval: int = 16
    max_block_txs: int = MAX_TXS_PER_BLOCK
    # pipelining (README "Pipelining"): header h carries the results of block
    # h − results_lag (L); max_in_flight (W ≤ L) heights are voted at once.
    # 1 / 1 is the unpipelined chain; left out of genesis.json when 1.
    results_lag: int = 1
    max_in_flight: int = 1

    def to_json(self) -> dict[str, int]:
        out = dataclasses.asdict(self)
        for name in PIPELINING_PARAMS:
            if out[name] == 1:  # today's format: a genesis written without them is unchanged
                del out[name]
        return out


ORG_KINDS = ACCOUNT_ROLES
VOTING_KINDS = ("payer", "provider", "auditor")  # must match contracts.governance.VOTING_KINDS


@dataclass(frozen=True)
class Organisation:
    """A member organisation of the network.

    `kind` is payer | provider | auditor | regulator | patient_agent; every
    account of the organisation acts in that role (contracts.governance).
    Default "payer" only for files written before the field existed: there the
    parser takes the role of the organisation's first listed account instead.
    `voting` says whether the organisation counts in governance's k of n;
    None (the default) resolves to True for payer, provider and auditor and
    False for regulator and patient_agent (regulators observe, DESIGN.md).
    Raises ConfigError on an unknown kind or a non-bool voting.
    """

    id: str
    name: str
    kind: str = "payer"
    voting: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in ORG_KINDS:
            raise ConfigError("organisation %r: kind must be one of %s, got %r"
                              % (self.id, ", ".join(ORG_KINDS), self.kind))
        if self.voting is None:
            object.__setattr__(self, "voting", self.kind in VOTING_KINDS)
        elif not isinstance(self.voting, bool):
            raise ConfigError("organisation %r: voting must be true or false" % self.id)


@dataclass(frozen=True)
class GenesisAccount:
    """A key at genesis. `role` must equal its organisation's kind (the JSON may
    omit it); `admin` (default False) lets the key manage its organisation's
    other keys and vote in governance."""

    public_key: bytes
    org: str
    role: str
    admin: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.admin, bool):
            raise ConfigError("account %s: admin must be true or false" % self.public_key.hex()[:16])


@dataclass(frozen=True)
class AppState:
    """The application's initial state: who exists and what they hold.

    The node turns it into state version 0 with `contracts.genesis` (an
    organisation's kind is its accounts' role) plus `balance/<key>` writes.
    """

    organisations: tuple[Organisation, ...] = ()
    accounts: tuple[GenesisAccount, ...] = ()
    balances: tuple[tuple[bytes, int], ...] = ()  # (public key, cents), sorted by key
    parameters: tuple[tuple[str, Any], ...] = ()  # (name, canonical value), sorted by name

    def __post_init__(self) -> None:
        kinds = {o.id: o.kind for o in self.organisations}
        for account in self.accounts:
            kind = kinds.get(account.org)
            if kind is None:
                raise ConfigError("account %s: unknown organisation %r" % (account.public_key.hex()[:16], account.org))
            if account.role != kind:
                raise ConfigError("account %s: role %r differs from organisation %r's kind %r"
                                  % (account.public_key.hex()[:16], account.role, account.org, kind))

    def balance_of(self, public_key: bytes) -> int:
        return dict(self.balances).get(public_key, 0)


@dataclass(frozen=True)
class Genesis:
    """The chain's first facts, identical on every node; its `hash` pins them."""

    chain_id: str
    genesis_time_ms: int
    validators: tuple[GenesisValidator, ...]
    observers: tuple[GenesisObserver, ...] = ()
    consensus_params: ConsensusParams = field(default_factory=ConsensusParams)
    app_state: AppState = field(default_factory=AppState)

    def validator_set(self) -> ValidatorSet:
        """The consensus validator set, in genesis order (order picks primaries)."""
        return ValidatorSet(tuple(Validator(v.name, v.public_key) for v in self.validators))

    def allowed_node_keys(self) -> frozenset[bytes]:
        """Every p2p key that may connect: validators' and allowlisted observers'."""
        return frozenset([v.node_key for v in self.validators] + [o.node_key for o in self.observers])

    def validator_by_node_key(self, node_key: bytes) -> GenesisValidator | None:
        for validator in self.validators:
            if validator.node_key == node_key:
                return validator
        return None

    def to_json(self) -> dict[str, Any]:
        app = self.app_state
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [
                {"name": v.name, "public_key": v.public_key.hex(), "node_key": v.node_key.hex(),
                 "address": v.address}
                for v in self.validators
            ],
            "observers": [{"name": o.name, "node_key": o.node_key.hex()} for o in self.observers],
            "consensus_params": self.consensus_params.to_json(),
            "app_state": {
                "organisations": [{"id": o.id, "name": o.name, "kind": o.kind, "voting": o.voting}
                                  for o in app.organisations],
                "accounts": [
                    {"public_key": a.public_key.hex(), "org": a.org, "role": a.role, "admin": a.admin}
                    for a in app.accounts
                ],
                "balances": {k.hex(): amount for k, amount in app.balances},
                "parameters": {name: value for name, value in app.parameters},
            },
        }

    @property
    def hash(self) -> bytes:
        """SHA-256 of the canonical msgpack of `to_json()`: same on every machine."""
        return sha256(codec.encode(self.to_json()))


def _get(data: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError("%s must be an object" % where)
    if name not in data:
        raise ConfigError("%s: missing %r" % (where, name))
    value = data[name]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError("%s.%s must be %s" % (where, name, kind.__name__))
    return value


def _only(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError("%s: unknown key%s %s" % (where, "s" if len(unknown) > 1 else "", ", ".join(unknown)))


def _key(text: Any, where: str) -> bytes:
    try:
        value = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        value = b""
    if len(value) != PUBLIC_KEY_BYTES or text != value.hex():
        raise ConfigError("%s must be 64 lowercase hex characters" % where)
    return value


def _name(text: Any, where: str) -> str:
    if not isinstance(text, str) or not _NAME.match(text):
        raise ConfigError("%s must be 1..64 of [A-Za-z0-9._-], got %r" % (where, text))
    return text


def genesis_from_json(data: Any) -> Genesis:
    """Validate a parsed genesis document. Raises ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("genesis must be a JSON object")
    _only(data, ("chain_id", "genesis_time_ms", "validators", "observers", "consensus_params", "app_state"),
          "genesis")
    chain_id = _get(data, "chain_id", str, "genesis")
    if not _CHAIN_ID.match(chain_id):
        raise ConfigError("genesis.chain_id must match [a-z0-9][a-z0-9._-]{0,63}, got %r" % chain_id)
    time_ms = _get(data, "genesis_time_ms", int, "genesis")
    if time_ms < 0:
        raise ConfigError("genesis.genesis_time_ms must be >= 0")

    validators = []
    for i, item in enumerate(_get(data, "validators", list, "genesis")):
        where = "genesis.validators[%d]" % i
        _only(item if isinstance(item, dict) else {}, ("name", "public_key", "node_key", "address"), where)
        address = _get(item, "address", str, where)
        validator = GenesisValidator(
            _name(_get(item, "name", str, where), where + ".name"),
            _key(_get(item, "public_key", str, where), where + ".public_key"),
            _key(_get(item, "node_key", str, where), where + ".node_key"),
            address,
        )
        validator.peer  # validates "host:port"
        validators.append(validator)
    if not 1 <= len(validators) <= MAX_VALIDATORS:
        raise ConfigError("genesis needs 1..%d validators, has %d" % (MAX_VALIDATORS, len(validators)))

    observers = []
    for i, item in enumerate(data.get("observers", [])):
        where = "genesis.observers[%d]" % i
        _only(item if isinstance(item, dict) else {}, ("name", "node_key"), where)
        observers.append(GenesisObserver(_name(_get(item, "name", str, where), where + ".name"),
                                         _key(_get(item, "node_key", str, where), where + ".node_key")))

    names = [v.name for v in validators] + [o.name for o in observers]
    if len(set(names)) != len(names):
        raise ConfigError("genesis: validator and observer names must be unique")
    node_keys = [v.node_key for v in validators] + [o.node_key for o in observers]
    if len(set(node_keys)) != len(node_keys):
        raise ConfigError("genesis: a node key appears twice")
    if len({v.public_key for v in validators}) != len(validators):
        raise ConfigError("genesis: a validator public key appears twice")

    params_data = data.get("consensus_params", {})
    if not isinstance(params_data, dict):
        raise ConfigError("genesis.consensus_params must be an object")
    _check_pipelining(params_data)
    try:
        params = _build_section(ConsensusParams, params_data, "genesis.consensus_params")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("[genesis.consensus_params]", "genesis.consensus_params")) from exc
    if params.checkpoint_interval < 1 or not 1 <= params.max_block_txs <= MAX_TXS_PER_BLOCK:
        raise ConfigError("genesis.consensus_params: checkpoint_interval >= 1, max_block_txs in [1, %d]"
                          % MAX_TXS_PER_BLOCK)

    genesis = Genesis(chain_id, time_ms, tuple(validators), tuple(observers), params,
                      _app_state_from_json(data.get("app_state", {})))
    try:
        genesis.validator_set()
        codec.encode(genesis.to_json())
    except LedgerError as exc:
        raise ConfigError("genesis: %s" % exc) from exc
    return genesis


def _app_state_from_json(data: Any) -> AppState:
    where = "genesis.app_state"
    if not isinstance(data, dict):
        raise ConfigError("%s must be an object" % where)
    _only(data, ("organisations", "accounts", "balances", "parameters"), where)
    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError("%s.accounts must be a list" % where)
    first_roles: dict[str, str] = {}  # legacy files: an organisation without kind takes its first account's role
    for item in raw_accounts:
        if isinstance(item, dict) and isinstance(item.get("org"), str) and isinstance(item.get("role"), str):
            first_roles.setdefault(item["org"], item["role"])
    orgs = []
    for i, item in enumerate(data.get("organisations", [])):
        w = "%s.organisations[%d]" % (where, i)
        _only(item if isinstance(item, dict) else {}, ("id", "name", "kind", "voting"), w)
        org_id = _name(_get(item, "id", str, w), w + ".id")
        kind = _get(item, "kind", str, w) if "kind" in item else first_roles.get(org_id, "payer")
        voting = _get(item, "voting", bool, w) if "voting" in item else None
        try:
            orgs.append(Organisation(org_id, _get(item, "name", str, w), kind, voting))
        except ConfigError as exc:
            raise ConfigError("%s: %s" % (w, exc)) from exc
    kinds = {o.id: o.kind for o in orgs}
    if len(kinds) != len(orgs):
        raise ConfigError("%s.organisations: an id appears twice" % where)
    accounts = []
    for i, item in enumerate(raw_accounts):
        w = "%s.accounts[%d]" % (where, i)
        _only(item if isinstance(item, dict) else {}, ("public_key", "org", "role", "admin"), w)
        org = _get(item, "org", str, w)
        if org not in kinds:
            raise ConfigError("%s.org %r is not a listed organisation" % (w, org))
        role = _get(item, "role", str, w) if "role" in item else kinds[org]
        if role not in ACCOUNT_ROLES:
            raise ConfigError("%s.role must be one of %s" % (w, ", ".join(ACCOUNT_ROLES)))
        if role != kinds[org]:
            raise ConfigError("%s.role %r differs from organisation %r's kind %r (an account acts in its "
                              "organisation's kind)" % (w, role, org, kinds[org]))
        admin = _get(item, "admin", bool, w) if "admin" in item else False
        accounts.append(GenesisAccount(_key(_get(item, "public_key", str, w), w + ".public_key"), org, role, admin))
    if len({a.public_key for a in accounts}) != len(accounts):
        raise ConfigError("%s.accounts: a public key appears twice" % where)
    balances_data = data.get("balances", {})
    if not isinstance(balances_data, dict):
        raise ConfigError("%s.balances must be an object {public key hex: cents}" % where)
    balances = []
    for hex_key, amount in balances_data.items():
        w = "%s.balances[%s]" % (where, hex_key)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= 2**62:
            raise ConfigError("%s must be an integer number of cents in [0, 2**62]" % w)
        balances.append((_key(hex_key, w), amount))
    parameters_data = data.get("parameters", {})
    if not isinstance(parameters_data, dict):
        raise ConfigError("%s.parameters must be an object" % where)
    return AppState(tuple(orgs), tuple(accounts), tuple(sorted(balances)),
                    tuple(sorted(parameters_data.items())))


def load_genesis(path: str) -> Genesis:
    """Read and validate a genesis.json. Raises ConfigError."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError("no genesis file at %s" % path) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc)) from exc
    try:
        return genesis_from_json(data)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from exc


def save_genesis(path: str, genesis: Genesis) -> None:
    """Write genesis.json (indented, keys in a fixed order)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(genesis.to_json(), handle, indent=2)
        handle.write("\n")


PIPELINING_PARAMS = ("results_lag", "max_in_flight")
MAX_RESULTS_LAG = 8  # L: heights a proof waits for its results header; W ≤ L heights in flight


def _check_pipelining(params: dict[str, Any]) -> None:
    """`results_lag` (L) and `max_in_flight` (W): integers with 1 ≤ W ≤ L ≤
    MAX_RESULTS_LAG. Raises ConfigError saying which bound failed."""
    values = {}
    for name in PIPELINING_PARAMS:
        value = params.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESULTS_LAG:
            raise ConfigError("genesis.consensus_params.%s = %r: must be an integer in [1, %d]"
                              % (name, value, MAX_RESULTS_LAG))
        values[name] = value
    if values["max_in_flight"] > values["results_lag"]:
        raise ConfigError(
            "genesis.consensus_params: max_in_flight (W=%d) must be <= results_lag (L=%d): a backup checks "
            "a proposal for committed+W against its own results of committed+W-L, which must be executed"
            % (values["max_in_flight"], values["results_lag"]))


def consensus_settings(config: NodeConfig, genesis: Genesis) -> dict[str, int]:
    """Keyword arguments for `consensus.config.ConsensusConfig` (besides chain
    id, validators, genesis hashes and time): config.toml's `[consensus]` with
    the genesis's network-wide `checkpoint_interval`, `results_lag` and
    `max_in_flight` winning, and `max_batch_txs` capped by `max_block_txs`.

    Raises ConfigError when `[storage] keep_recent_versions` is below L + 1:
    the latest proof route serves state version tip − L; or when
    `[storage] retain_blocks` is below 2K + L (K: checkpoint_interval)."""
    section = config.consensus
    keep, lag = config.storage.keep_recent_versions, genesis.consensus_params.results_lag
    if 0 < keep < lag + 1:
        raise ConfigError("[storage] keep_recent_versions = %d: must be 0 or >= results_lag + 1 = %d (the latest "
                          "proof route serves state version tip - %d)" % (keep, lag + 1, lag))
    retain, interval = config.storage.retain_blocks, genesis.consensus_params.checkpoint_interval
    if 0 < retain < 2 * interval + lag:
        raise ConfigError("[storage] retain_blocks = %d: must be 0 or >= 2 x checkpoint_interval + results_lag = %d "
                          "(a restart re-reads the last checkpoint_interval blocks' txs, a tx proof needs "
                          "block h + results_lag)" % (retain, 2 * interval + lag))
    return {
        "max_batch_txs": min(section.max_batch_txs, genesis.consensus_params.max_block_txs),
        "max_block_txs": genesis.consensus_params.max_block_txs,  # judges others' proposals
        "batch_timeout_ms": section.batch_timeout_ms,
        "empty_block_interval_ms": section.empty_block_interval_ms,
        # a message buffer that must hold the W heights in flight
        "pipeline_window": max(section.pipeline_window, genesis.consensus_params.max_in_flight),
        "checkpoint_interval": genesis.consensus_params.checkpoint_interval,
        "results_lag": genesis.consensus_params.results_lag,
        "max_in_flight": genesis.consensus_params.max_in_flight,
        "base_timeout_ms": section.base_timeout_ms,
        "max_timeout_ms": section.max_timeout_ms,
    }

