"""`careledger`: the operator's command line (CometBFT's verbs, our layout).

Built on click: mature, kept, tested through `click.testing.CliRunner`, and
explicit (no type-hint magic as in typer, which is itself click underneath).

    careledger version
    careledger init --home DIR [--moniker M] [--chain-id C]
    careledger testnet --v 4 [--o DIR] [--observers M] [--chain-id C] [--starting-port P] [--demo] [--pipeline W]
    careledger start --home DIR            # validator (role from config.toml)
    careledger observe --home DIR          # same node, forced read-only observer
    careledger show-node-id --home DIR     # p2p key hex (what persistent_peers use)
    careledger show-validator --home DIR   # consensus key as JSON
    careledger keys add NAME --home DIR | keys list --home DIR
    careledger tx --node URL --key FILE --type T --body JSON [--nonce N] [--wait]
    careledger query --node URL KEY [--prove] [--genesis FILE | --waypoint H:HASH [--results-lag L]]
    careledger query --node URL --tx HASH [--prove] [--genesis FILE]
    careledger audit export --node URL --program ID --out FILE
    careledger audit verify FILE [--genesis FILE | --waypoint H:HASH] [--results-lag L]
    careledger unsafe-reset-all --home DIR

Exit codes: 0 success, 1 a failed operation (rejected tx, failed proof,
unreachable node), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import replace
from typing import Any, Callable

import click

from ledger import codec
from ledger.crypto import PrivateKey
from ledger.errors import LedgerError
from ledger.types import Tx
from node.config import (
    DEFAULT_P2P_PORT, MAX_RESULTS_LAG, AppState, ConfigError, ConsensusParams, Genesis, GenesisAccount,
    GenesisObserver, GenesisValidator, InstrumentationSection, NodeConfig, Organisation, P2PSection, RPCSection,
    load_config, load_genesis, save_config, save_genesis,
)
from node.keys import generate_private_key, load_key_file, save_key_file

DEFAULT_HOME = os.path.join("~", ".careledger")
DEFAULT_BALANCE = 10_000_000_000  # cents per demo account ($100M)
DEMO_ROLES = ("payer", "provider", "auditor")
# `testnet --demo`: the demonstration's organisations (id, name, kind), each with one
# funded admin account written to DIR/accounts/<org>-<kind>.json.
DEMO_ORGANISATIONS = (
    ("payer-a", "Payer A health plan", "payer"),
    ("payer-b", "Payer B health plan", "payer"),
    ("pcp-group", "Northside Primary Care Group", "provider"),
    ("hospital", "St. Example General Hospital", "provider"),
    ("therapy-clinic", "Motion Therapy Clinic (PT/OT/chiropractic)", "provider"),
    ("auditor", "Independent Program Auditor", "auditor"),
    ("regulator", "State Insurance Regulator", "regulator"),
)
PORT_STRIDE = 10  # node i uses starting_port + 10*i (+0 p2p, +1 rpc, +2 metrics)
KEYS_DIR = "keys"
ACCOUNTS_DIR = "accounts"
HTTP_TIMEOUT_S = 10.0
BYTES_PREFIX = "0x"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("careledger")
    except Exception:  # noqa: BLE001 - not installed (run from a checkout)
        return "0.1.0"


def _fail(message: str, code: int = 1) -> None:
    click.echo("error: " + message, err=True)
    sys.exit(code)


def _home(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _load(home: str) -> NodeConfig:
    try:
        return load_config(_home(home))
    except ConfigError as exc:
        _fail(str(exc), 2)
        raise  # unreachable; keeps type checkers happy


home_option = click.option("--home", default=DEFAULT_HOME, show_default=True, help="Node home directory.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """CareLedger: a permissioned BFT ledger for value-based healthcare payments."""


@cli.command()
def version() -> None:
    """Print the software version."""
    click.echo(_version())


# ------------------------------------------------------------------ homes


def _write_key_if_missing(path: str) -> PrivateKey:
    if os.path.exists(path):
        return load_key_file(path)
    key = generate_private_key()
    save_key_file(path, key)
    return key


def _write_account(path: str, key: PrivateKey, name: str, org: str, role: str, admin: bool = False) -> None:
    """A key file `node.keys.load_key_file` reads, plus who the account is."""
    body = {"type": "ed25519", "public_key": key.public_key.hex(), "seed": key.seed.hex(),
            "name": name, "org": org, "role": role, "admin": admin}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")


def _random_chain_id() -> str:
    return "careledger-" + secrets.token_hex(3)


def _now_ms() -> int:
    return int(time.time() * 1000)


@cli.command()
@home_option
@click.option("--moniker", default="node0", show_default=True)
@click.option("--chain-id", default=None, help="Default: careledger-<random hex>.")
def init(home: str, moniker: str, chain_id: str | None) -> None:
    """Create a single-validator home: config, keys, genesis with one funded demo
    account (HOME/accounts/org0-payer.json); existing files are kept."""
    home = _home(home)
    config = NodeConfig(home=home, moniker=moniker)
    if not os.path.exists(config.config_file):
        save_config(config)
    else:
        config = _load(home)
    os.makedirs(config.data_dir, exist_ok=True)
    node_key = _write_key_if_missing(config.node_key_file)
    validator_key = _write_key_if_missing(config.priv_validator_key_file)
    if not os.path.exists(config.genesis_file):
        address = "%s:%d" % (config.p2p.listen_host, config.p2p.listen_port)
        # contracts.genesis needs one voting organisation: a demo payer with a funded account.
        accounts_dir = os.path.join(home, ACCOUNTS_DIR)
        os.makedirs(accounts_dir, mode=0o700, exist_ok=True)
        account = generate_private_key()
        _write_account(os.path.join(accounts_dir, "org0-payer.json"), account, "org0-payer", "org0", "payer")
        genesis = Genesis(
            chain_id=chain_id or _random_chain_id(), genesis_time_ms=_now_ms(),
            validators=(GenesisValidator(moniker, validator_key.public_key, node_key.public_key, address),),
            app_state=AppState((Organisation("org0", "Demo payer organisation", "payer"),),
                               (GenesisAccount(account.public_key, "org0", "payer"),),
                               ((account.public_key, DEFAULT_BALANCE),)))
        try:
            save_genesis(config.genesis_file, genesis)
        except ConfigError as exc:
            _fail(str(exc), 2)
    click.echo("initialised %s (node id %s)" % (home, node_key.public_key.hex()))


def build_testnet(
    output: str, validators: int, observers: int = 0, chain_id: str | None = None,
    starting_port: int = DEFAULT_P2P_PORT, organisations: int = 3, accounts_per_org: int = 1,
    balance: int = DEFAULT_BALANCE, host: str = "127.0.0.1", demo: bool = False, pipeline: int = 1,
) -> tuple[Genesis, list[NodeConfig]]:
    """Write a whole loopback testnet under `output` and return its genesis and configs.

    Layout: `output/node<i>/` (validators), `output/observer<j>/`,
    `output/accounts/<org>-<role>[-k].json`. Node i (validators first, then
    observers) listens on p2p `starting_port + 10*i`, RPC `+1`, metrics `+2`.
    Organisations: `organisations` generic ones (org<i>, kinds payer/provider/
    auditor round-robin, `accounts_per_org` non-admin accounts each) or, with
    `demo`, `DEMO_ORGANISATIONS` (one admin account each; the regulator does
    not vote). Every account is funded with `balance`. `pipeline` W > 1: a
    pipelined chain, genesis `results_lag` = `max_in_flight` = W.
    Raises ConfigError on bad arguments.
    """
    if validators < 1 or observers < 0 or organisations < 1 or accounts_per_org < 1:
        raise ConfigError("need at least 1 validator, 1 organisation and 1 account per organisation")
    last_port = starting_port + PORT_STRIDE * (validators + observers - 1) + 2
    if starting_port < 1 or last_port > 65535:
        raise ConfigError("ports %d..%d are out of range" % (starting_port, last_port))
    chain_id = chain_id or _random_chain_id()
    output = _home(output)
    names = ["node%d" % i for i in range(validators)] + ["observer%d" % j for j in range(observers)]
    configs: list[NodeConfig] = []
    node_keys: list[PrivateKey] = []
    validator_keys: list[PrivateKey] = []
    for index, name in enumerate(names):
        base = starting_port + PORT_STRIDE * index
        role = "validator" if index < validators else "observer"
        config = NodeConfig(
            home=os.path.join(output, name), moniker=name, role=role,
            p2p=P2PSection(listen_host=host, listen_port=base),
            rpc=RPCSection(listen_host=host, listen_port=base + 1),
            instrumentation=InstrumentationSection(prometheus_listen_host=host, prometheus_port=base + 2),
        )
        os.makedirs(config.config_dir, exist_ok=True)
        os.makedirs(config.data_dir, exist_ok=True)
        node_key = generate_private_key()
        save_key_file(config.node_key_file, node_key)
        node_keys.append(node_key)
        if role == "validator":
            validator_key = generate_private_key()
            save_key_file(config.priv_validator_key_file, validator_key)
            validator_keys.append(validator_key)
        configs.append(config)

    genesis_validators = tuple(
        GenesisValidator(names[i], validator_keys[i].public_key, node_keys[i].public_key,
                         "%s:%d" % (host, configs[i].p2p.listen_port))
        for i in range(validators))
    genesis_observers = tuple(
        GenesisObserver(names[i], node_keys[i].public_key) for i in range(validators, len(names)))

    accounts_dir = os.path.join(output, ACCOUNTS_DIR)
    os.makedirs(accounts_dir, exist_ok=True)
    orgs, accounts, balances = [], [], []
    if demo:
        for org_id, org_name, kind in DEMO_ORGANISATIONS:
            orgs.append(Organisation(org_id, org_name, kind))
            key = generate_private_key()
            name = "%s-%s" % (org_id, kind)
            _write_account(os.path.join(accounts_dir, name + ".json"), key, name, org_id, kind, admin=True)
            accounts.append(GenesisAccount(key.public_key, org_id, kind, admin=True))
            balances.append((key.public_key, balance))
    for o in range(0 if demo else organisations):
        role = DEMO_ROLES[o % len(DEMO_ROLES)]
        org = Organisation("org%d" % o, "Demo %s organisation %d" % (role, o), role)
        orgs.append(org)
        for k in range(accounts_per_org):
            key = generate_private_key()
            name = "%s-%s" % (org.id, role) + ("-%d" % k if accounts_per_org > 1 else "")
            _write_account(os.path.join(accounts_dir, name + ".json"), key, name, org.id, role)
            accounts.append(GenesisAccount(key.public_key, org.id, role))
            balances.append((key.public_key, balance))
    genesis = Genesis(
        chain_id=chain_id, genesis_time_ms=_now_ms(), validators=genesis_validators,
        observers=genesis_observers,
        consensus_params=ConsensusParams(results_lag=pipeline, max_in_flight=pipeline),
        app_state=AppState(tuple(orgs), tuple(accounts), tuple(sorted(balances))))

    peers = [str(v.peer) for v in genesis_validators]
    final = []
    for index, config in enumerate(configs):
        own = peers[index] if index < validators else None
        config = replace(config, p2p=replace(config.p2p, persistent_peers=tuple(p for p in peers if p != own)))
        save_config(config)
        save_genesis(config.genesis_file, genesis)
        final.append(config)
    return genesis, final


@cli.command()
@click.option("--v", "validators", type=click.IntRange(1, 128), default=4, show_default=True,
              help="Number of validators.")
@click.option("--o", "output", default="./mytestnet", show_default=True, help="Output directory.")
@click.option("--observers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Observers to allowlist (read-only nodes).")
@click.option("--chain-id", default=None)
@click.option("--starting-port", type=click.IntRange(1, 65535), default=DEFAULT_P2P_PORT, show_default=True,
              help="Node i listens on p2p P+10i, RPC P+10i+1, metrics P+10i+2.")
@click.option("--organisations", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Demo organisations (roles payer/provider/auditor round-robin).")
@click.option("--accounts-per-org", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--demo", is_flag=True,
              help="The demonstration's organisations instead: payer-a, payer-b, pcp-group, hospital, "
                   "therapy-clinic, auditor, regulator, each with a funded admin account "
                   "(accounts/<org>-<kind>.json); --organisations/--accounts-per-org are ignored.")
@click.option("--pipeline", "pipeline", type=click.IntRange(1, MAX_RESULTS_LAG), default=1, show_default=True,
              metavar="W", help="Pipelined chain: W heights in flight, headers carry the results of h − W "
                                "(genesis results_lag = max_in_flight = W; 1 = unpipelined).")
def testnet(validators: int, output: str, observers: int, chain_id: str | None, starting_port: int,
            organisations: int, accounts_per_org: int, demo: bool, pipeline: int = 1) -> None:
    """Write a loopback testnet: N validators, M observers, funded demo accounts."""
    try:
        genesis, configs = build_testnet(output, validators, observers, chain_id, starting_port,
                                         organisations, accounts_per_org, demo=demo, pipeline=pipeline)
    except ConfigError as exc:
        _fail(str(exc), 2)
        return
    click.echo("testnet %s: %d validators, %d observers in %s" % (
        genesis.chain_id, validators, observers, _home(output)))
    for config in configs:
        click.echo("  %-10s %-9s rpc http://%s:%d" % (
            config.moniker, config.role, config.rpc.listen_host, config.rpc.listen_port))


# ------------------------------------------------------------------ running


def _run(config: NodeConfig) -> None:
    """Run the node until SIGINT/SIGTERM (graceful: trio cancellation, database closed last)."""
    import functools

    import trio

    from node.logs import configure_logging
    from node.metrics import serve_node_metrics
    from node.rpc import rpc_hook

    configure_logging(config.log.level, config.log.format)
    from node.node import run_node  # the runtime; imported lazily so the CLI works without it

    metrics_hook = functools.partial(serve_node_metrics, namespace=config.instrumentation.namespace)
    from consensus.errors import ConsensusError
    from contracts.errors import ContractError

    try:
        trio.run(functools.partial(run_node, config, rpc_serve=rpc_hook(config), metrics_serve=metrics_hook,
                                   handle_signals=True))
    except (ConfigError, ConsensusError, ContractError, LedgerError) as exc:
        # a node that cannot start from its files: say why, without a traceback
        _fail("cannot start %s: %s: %s" % (config.moniker, type(exc).__name__, exc), 2)


@cli.command()
@home_option
def start(home: str) -> None:
    """Run the node described by HOME/config."""
    _run(_load(home))


@cli.command()
@home_option
def observe(home: str) -> None:
    """Run the node as a read-only observer (no signing, POST /tx refused)."""
    _run(replace(_load(home), role="observer"))


@cli.command("show-node-id")
@home_option
def show_node_id(home: str) -> None:
    """Print the node's p2p id (its node key's public key, hex)."""
    config = _load(home)
    click.echo(load_key_file(config.node_key_file).public_key.hex())


@cli.command("show-validator")
@home_option
def show_validator(home: str) -> None:
    """Print the node's consensus public key as JSON."""
    config = _load(home)
    if not os.path.exists(config.priv_validator_key_file):
        _fail("no validator key at %s (an observer?)" % config.priv_validator_key_file)
    key = load_key_file(config.priv_validator_key_file)
    click.echo(json.dumps({"name": config.moniker, "type": "ed25519", "public_key": key.public_key.hex()}))


@cli.command("unsafe-reset-all")
@home_option
def unsafe_reset_all(home: str) -> None:
    """Delete the node's data (blocks, state, double-sign guard); keep config and keys."""
    config = _load(home)
    if os.path.isdir(config.data_dir):
        for entry in os.listdir(config.data_dir):
            path = os.path.join(config.data_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    os.makedirs(config.data_dir, exist_ok=True)
    click.echo("removed all data under %s" % config.data_dir)


# --------------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """Manage account keys in HOME/keys/."""


@keys.command("add")
@click.argument("name")
@home_option
def keys_add(name: str, home: str) -> None:
    """Create a new account key NAME and print its public key."""
    if not name.replace("-", "").replace("_", "").isalnum():
        _fail("a key name is letters, digits, - and _", 2)
    directory = os.path.join(_home(home), KEYS_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name + ".json")
    if os.path.exists(path):
        _fail("key %s already exists at %s" % (name, path))
    key = generate_private_key()
    save_key_file(path, key)
    click.echo(json.dumps({"name": name, "public_key": key.public_key.hex(), "file": path}))


@keys.command("list")
@home_option
def keys_list(home: str) -> None:
    """List account keys: name and public key."""
    directory = os.path.join(_home(home), KEYS_DIR)
    names = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".json")) if os.path.isdir(directory) else []
    for name in names:
        try:
            public = load_key_file(os.path.join(directory, name + ".json")).public_key.hex()
        except LedgerError as exc:
            public = "unreadable (%s)" % exc
        click.echo("%s\t%s" % (name, public))


# ------------------------------------------------------------ client helpers


def http_client(base_url: str) -> Any:
    """The HTTP client the client commands use (tests replace this function)."""
    import httpx

    return httpx.Client(base_url=base_url.rstrip("/"), timeout=HTTP_TIMEOUT_S)


def json_to_body(value: Any) -> Any:
    """Tx bodies are canonical msgpack: JSON strings "0x<hex>" become bytes, recursively.

    Raises click.BadParameter on bad hex or a float.
    """
    if isinstance(value, str) and value.startswith(BYTES_PREFIX):
        try:
            return bytes.fromhex(value[len(BYTES_PREFIX):])
        except ValueError as exc:
            raise click.BadParameter("bad hex in %r" % value) from exc
    if isinstance(value, float):
        raise click.BadParameter("floats are not allowed in tx bodies (use integer cents)")
    if isinstance(value, list):
        return [json_to_body(v) for v in value]
    if isinstance(value, dict):
        return {k: json_to_body(v) for k, v in value.items()}
    return value


def body_to_json(value: Any) -> Any:
    """The inverse of `json_to_body`, for printing decoded state values."""
    if isinstance(value, bytes):
        return BYTES_PREFIX + value.hex()
    if isinstance(value, (list, tuple)):
        return [body_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(body_to_json(k)): body_to_json(v) for k, v in value.items()}
    return value


def nonce_key(public_key: bytes) -> bytes:
    """State key of an account's last used nonce (see contracts.accounts)."""
    from contracts.state import key

    return key("nonce", public_key)


def _get_json(client: Any, path: str) -> Any:
    import httpx

    try:
        response = client.get(path)
    except httpx.HTTPError as exc:
        _fail("cannot reach node: %s" % exc)
    if response.status_code != 200:
        _fail("GET %s: %d %s" % (path, response.status_code, response.text.strip()))
    return response.json()


def next_nonce(client: Any, public_key: bytes) -> int:
    """The account's next nonce: last used + 1.

    `GET /state` answers at the latest *certified* state version, which may
    trail the tip by one block, so the tip block's own transactions from this
    sender are counted too (reading /status first makes the pair consistent).
    """
    return next_nonces(client, [public_key])[public_key]


def next_nonces(client: Any, public_keys: list[bytes]) -> dict[bytes, int]:
    """`next_nonce` for several accounts with one look at the tip block."""
    tip = int(_get_json(client, "/status").get("height", 0))
    used: dict[bytes, int] = {}
    for public_key in public_keys:
        state = _get_json(client, "/state/" + nonce_key(public_key).hex())
        value = state.get("value")
        used[public_key] = 0 if value is None else int(codec.decode(bytes.fromhex(value)))
    if tip >= 1:
        block = client.get("/blocks/%d" % tip)
        if block.status_code == 200:
            for raw in block.json().get("txs", []):
                tx = Tx.decode(bytes.fromhex(raw))
                if tx.sender in used:
                    used[tx.sender] = max(used[tx.sender], tx.nonce)
    return {public_key: nonce + 1 for public_key, nonce in used.items()}


def wait_for_commit(client: Any, tx_hash: str, timeout_s: float,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any] | None:
    """Poll GET /tx/<hash> until committed; None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        response = client.get("/tx/" + tx_hash)
        if response.status_code == 200 and response.json().get("status") == "committed":
            return response.json()
        if time.monotonic() >= deadline:
            return None
        sleep(delay)
        delay = min(delay * 2, 0.5)


@cli.command()
@click.option("--node", "node_url", default="http://127.0.0.1:26657", show_default=True)
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Account key file (node.keys format).")
@click.option("--type", "tx_type", required=True, help="Transaction type, e.g. transfer.")
@click.option("--body", required=True, help='JSON object; "0x…" strings are bytes, e.g. {"to": "0xab…", "amount": 5}.')
@click.option("--nonce", type=click.IntRange(1), default=None, help="Default: the account's next nonce.")
@click.option("--chain-id", default=None, help="Default: from the node's /status.")
@click.option("--wait/--no-wait", default=False, help="Wait until the transaction is committed.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to --wait.")
def tx(node_url: str, key_file: str, tx_type: str, body: str, nonce: int | None, chain_id: str | None,
       wait: bool, timeout: float) -> None:
    """Sign a transaction and submit it; print its hash."""
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise click.BadParameter("--body is not JSON: %s" % exc) from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("--body must be a JSON object")
    try:
        key = load_key_file(key_file)
    except LedgerError as exc:
        _fail(str(exc), 2)
        return
    with http_client(node_url) as client:
        chain_id = chain_id or _get_json(client, "/status")["chain_id"]
        nonce = nonce or next_nonce(client, key.public_key)
        try:
            raw = Tx(chain_id, key.public_key, nonce, tx_type, json_to_body(parsed)).signed(key).encode()
        except LedgerError as exc:
            _fail("cannot encode the transaction: %s" % exc, 2)
            return
        response = client.post("/tx", content=raw, headers={"content-type": "application/octet-stream"})
        if response.status_code != 200:
            _fail("rejected (%d): %s" % (response.status_code, response.text.strip()))
        tx_hash = response.json()["hash"]
        click.echo(tx_hash)
        if wait:
            found = wait_for_commit(client, tx_hash, timeout)
            if found is None:
                _fail("not committed within %.0f s" % timeout)
            click.echo(json.dumps({"height": found.get("height"), "receipt": found.get("receipt")}))


def genesis_light_client(genesis: Genesis) -> Any:
    """A `ledger.light.LightClient` whose root of trust is `genesis`."""
    from ledger.light import LightClient

    return LightClient.from_genesis(genesis.chain_id, genesis.validator_set(), genesis.genesis_time_ms,
                                    results_lag=genesis.consensus_params.results_lag)


def waypoint_light_client(client: Any, waypoint: Any, results_lag: int = 1) -> Any:
    """A `ledger.light.LightClient` whose root of trust is `waypoint` (a
    `ledger.light.Waypoint`): the certified header it names, for a chain whose
    genesis is older than the trusting period. `results_lag` (L, the chain's
    genesis `consensus_params.results_lag`) is part of that root of trust: a
    header does not carry it, so it comes from the caller, never the node.

    The node behind `client` serves header H (`/commit/H`) and the validator
    sets that may have signed it: genesis's and each set handed over to up to
    H (`/light/epoch-changes`). Nothing served is believed: the header must
    hash to the waypoint, the set must hash to its `validators_hash` (and the
    next one to its `next_validators_hash` when H hands over), and a quorum of
    that set must have signed it. Raises LightClientError (UntrustedHeader:
    the node's header at H is not the one the waypoint names), LedgerError (a
    certificate short of a quorum, bad bytes), node.observer.QueryError (the
    node cannot serve what is needed) or ValueError/KeyError (a malformed answer).
    """
    from ledger.light import LightClient
    from ledger.types import CommitCertificate, Header, ValidatorSet
    from node.config import genesis_from_json
    from node.observer import QueryError, _fetch

    response = client.get("/commit/%d" % waypoint.height)
    if response.status_code != 200:
        raise QueryError("the node has no certified header at the waypoint's height %d (GET /commit: %d)"
                         % (waypoint.height, response.status_code))
    commit = response.json()
    header = Header.decode(bytes.fromhex(commit["encoded_header"]))
    certificate = CommitCertificate.decode(bytes.fromhex(commit["encoded_certificate"]))
    offered = [genesis_from_json(_fetch(client, "/genesis")).validator_set()]
    changes = _fetch(client, "/light/epoch-changes?from=0&to=%d" % waypoint.height)["changes"]
    offered += [ValidatorSet.from_wire(codec.decode(bytes.fromhex(change["validators"]))) for change in changes]
    sets = {vset.hash: vset for vset in offered}
    signers = sets.get(header.validators_hash, offered[0])  # a set that does not match is refused just below
    light = LightClient.from_waypoint(header.chain_id, waypoint, header, signers,
                                      sets.get(header.next_validators_hash), results_lag=results_lag)
    certificate.verify(header.chain_id, signers, header.hash, header.height)
    return light


def verify_state_answer(answer: dict[str, Any], key: bytes, light: Any, client: Any,
                        now_ms: int | None = None) -> int:
    """Check a `/state/<key>?prove=true` answer and return the proven height.

    `light` (a `ledger.light.LightClient` from `genesis_light_client` or
    `waypoint_light_client`) follows the validator-set changes the node behind
    `client` lists up to the answer's header (`/light/epoch-changes`, each
    hand-over certified by the outgoing set) and verifies the header with the
    set then in force (with the history proofs from the node); a header below
    a waypoint is proven by its inclusion in the waypoint header's history.
    The header must be the one carrying the state after `height`: height + L
    (L = `light.results_lag`; the genesis state: 1..L). Then the proof must
    lead from (key, value) to the header's app_hash.
    `now_ms` defaults to `node.observer.wall_clock_ms()` (tests replace it).
    Raises LedgerError (a LightClientError says which check failed; Expired:
    the root of trust is older than the trusting period) or
    ValueError/KeyError for a malformed answer, or node.observer.QueryError
    when the node cannot serve what is needed.
    """
    from ledger.light import results_header_height, results_version
    from ledger.types import Header
    from node.observer import _fetch, verify_cited_header, wall_clock_ms

    height = int(answer["height"])
    if not answer.get("header") or not answer.get("certificate"):
        raise ValueError("the node has no certified header for the state after height %d yet" % height)
    value = None if answer.get("value") is None else bytes.fromhex(answer["value"])
    header = Header.decode(bytes.fromhex(answer["header"]))
    chain_id = light.trusted.chain_id
    if header.chain_id != chain_id:
        raise ValueError("header is for chain %s, the trusted root is chain %s" % (header.chain_id, chain_id))
    if results_version(header.height, light.results_lag) != height:
        raise ValueError("header %d does not commit the state after height %d (results lag %d: header %d)"
                         % (header.height, height, light.results_lag, results_header_height(height, light.results_lag)))
    now = wall_clock_ms() if now_ms is None else now_ms
    verified = verify_cited_header(light, lambda path: _fetch(client, path), header,
                                   bytes.fromhex(answer["certificate"]), now)
    light.verify_state(verified, key, value, bytes.fromhex(answer["proof"]), version=height)
    return height


def _trusted_light_client(client: Any, genesis_file: str | None, waypoint: Any, home: str,
                          results_lag: int | None = None) -> Any:
    """The light client for --prove: from `waypoint` when given (exits 1 when the
    node cannot show that header with a quorum), else from the trusted genesis
    (which also gives the results lag L)."""
    from node.observer import QueryError

    if waypoint is None:
        return genesis_light_client(_trusted_genesis(client, genesis_file, home))
    lag = _waypoint_results_lag(client, home, results_lag)
    try:
        return waypoint_light_client(client, waypoint, lag)
    except (LedgerError, QueryError, ValueError, KeyError, TypeError, IndexError) as exc:
        _fail("waypoint %s NOT trusted: %s" % (waypoint, _why_not_verified(exc)))
        raise  # not reached: _fail exits


def _waypoint_results_lag(client: Any, home: str, given: int | None) -> int:
    """L for a waypoint light client: --results-lag, else HOME's genesis.json
    (a local, trusted copy), else the node's genesis with a warning (a wrong L
    would pair a state version with the wrong header: pin it)."""
    if given is not None:
        return given
    local = os.path.join(_home(home), "config", "genesis.json")
    if os.path.exists(local):
        try:
            return load_genesis(local).consensus_params.results_lag
        except ConfigError as exc:
            _fail(str(exc), 2)
    from node.config import genesis_from_json

    lag = genesis_from_json(_get_json(client, "/genesis")).consensus_params.results_lag
    if lag != 1:
        click.echo("warning: results lag %d taken from the node's genesis; pass --results-lag to pin it" % lag,
                   err=True)
    return lag


def _why_not_verified(exc: Exception) -> str:
    """The reason a proof failed, with the check's name and, for an expired root, what to do."""
    from ledger.light import Expired, LightClientError

    reason = "%s: %s" % (type(exc).__name__, exc) if isinstance(exc, LightClientError) else str(exc)
    if isinstance(exc, Expired):
        reason += " (pass --waypoint H:HASH naming a certified header from within the trusting period)"
    return reason


def _parse_waypoint(text: str | None) -> Any:
    """`--waypoint` as a `ledger.light.Waypoint`. Raises click.BadParameter."""
    from ledger.light import Waypoint

    if text is None:
        return None
    try:
        return Waypoint.parse(text)
    except LedgerError as exc:
        raise click.BadParameter("%s (got %r)" % (exc, text), param_hint="--waypoint") from exc


@cli.command()
@click.option("--node", "node_url", default="http://127.0.0.1:26657", show_default=True)
@click.argument("key", required=False)
@click.option("--hex", "key_is_hex", is_flag=True, help="KEY is hex (default: text such as balance/<hex>).")
@click.option("--tx", "tx_hash", default=None, help="[observer] Query a transaction by hash instead of a KEY.")
@click.option("--prove", is_flag=True, help="Verify a proof against a certified header.")
@click.option("--genesis", "genesis_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Trusted genesis.json for --prove (default: HOME's, else the node's, with a warning).")
@click.option("--waypoint", "waypoint_text", default=None, metavar="H:HASH",
              help="For --prove, trust the certified header at height H with this hash instead of genesis "
                   "(needed once genesis is older than the light client's two-week trusting period).")
@click.option("--results-lag", "results_lag", type=click.IntRange(1, 64), default=None, metavar="L",
              help="With --waypoint: the chain's genesis consensus_params.results_lag (header v+L carries "
                   "state v; default: HOME's genesis, else the node's, with a warning when it is not 1).")
@home_option
def query(node_url: str, key: str | None, key_is_hex: bool, tx_hash: str | None, prove: bool,
          genesis_file: str | None, waypoint_text: str | None, home: str, results_lag: int | None = None) -> None:
    """Print the state value at KEY (decoded) or the transaction --tx HASH, optionally
    verified with a proof against headers a light client checked from genesis or a waypoint."""
    if waypoint_text is not None and genesis_file is not None:
        raise click.UsageError("--waypoint and --genesis are mutually exclusive: trust one root, "
                               "a genesis file or a recent certified header")
    if waypoint_text is not None and not prove:
        raise click.UsageError("--waypoint is a root of trust for --prove; add --prove")
    if results_lag is not None and waypoint_text is None:
        raise click.UsageError("--results-lag goes with --waypoint (a genesis file gives its own)")
    waypoint = _parse_waypoint(waypoint_text)
    if tx_hash is not None:  # [observer] --tx: node/observer.py verifies the answer
        _query_tx(node_url, tx_hash, prove, genesis_file, waypoint, home, results_lag)
        return
    if key is None:
        raise click.UsageError("give a KEY or --tx HASH")
    if key_is_hex:
        try:
            raw_key = bytes.fromhex(key)
        except ValueError as exc:
            raise click.BadParameter("KEY is not hex") from exc
    else:
        raw_key = key.encode()
    from node.observer import QueryError

    failures = (LedgerError, QueryError, ValueError, KeyError, TypeError, IndexError)
    with http_client(node_url) as client:
        light = _trusted_light_client(client, genesis_file, waypoint, home, results_lag) if prove else None
        answer = _get_json(client, "/state/%s%s" % (raw_key.hex(), "?prove=true" if prove else ""))
        value_hex = answer.get("value")
        if value_hex is None:
            click.echo("null")
        else:
            raw = bytes.fromhex(value_hex)
            try:
                click.echo(json.dumps(body_to_json(codec.decode(raw))))
            except LedgerError:
                click.echo(json.dumps(BYTES_PREFIX + raw.hex()))
        if light is not None:
            try:
                height = verify_state_answer(answer, raw_key, light, client)
            except failures as exc:
                _fail("proof NOT verified: %s" % _why_not_verified(exc))
                return
            click.echo("verified at height %d" % height)


# ------------------------------------------- [observer] query --tx, audit (glue only)


def _trusted_genesis(client: Any, genesis_file: str | None, home: str) -> Genesis:
    local = genesis_file or os.path.join(_home(home), "config", "genesis.json")
    if os.path.exists(local):
        try:
            return load_genesis(local)
        except ConfigError as exc:
            _fail(str(exc), 2)
    from node.config import genesis_from_json

    click.echo("warning: genesis fetched from the node; pass --genesis to pin it", err=True)
    return genesis_from_json(_get_json(client, "/genesis"))


def _query_tx(node_url: str, tx_hash: str, prove: bool, genesis_file: str | None, waypoint: Any,
              home: str, results_lag: int | None = None) -> None:
    from node.observer import QueryError, verify_tx_answer

    if len(tx_hash) != 64 or any(c not in "0123456789abcdefABCDEF" for c in tx_hash):
        raise click.BadParameter("--tx must be 64 hex characters")
    with http_client(node_url) as client:
        answer = _get_json(client, "/tx/%s%s" % (tx_hash.lower(), "?prove=true" if prove else ""))
        if not prove:
            click.echo(json.dumps(answer))
            return
        light = _trusted_light_client(client, genesis_file, waypoint, home, results_lag)
        try:
            proven = verify_tx_answer(client, answer, light)
        except QueryError as exc:
            _fail("proof NOT verified: %s" % exc)
            return
    tx_record = proven["tx"]
    receipt = proven["receipt"]
    click.echo(json.dumps({"hash": tx_hash.lower(), "type": tx_record.type, "sender": tx_record.sender.hex(),
                           "nonce": tx_record.nonce, "body": body_to_json(tx_record.body),
                           "receipt": None if receipt is None else {"ok": receipt[1], "code": receipt[2],
                                                                    "message": receipt[3]}}))
    click.echo("verified at height %d%s" % (proven["height"], "" if receipt is not None else
                                             " (receipt not certified yet)"))


@cli.group()
def audit() -> None:
    """Export and verify settlement audit packages (node/audit.py)."""


@audit.command("export")
@click.option("--node", "node_url", default="http://127.0.0.1:26657", show_default=True)
@click.option("--program", "program_id", required=True, help="Program id (payment_program/<id>).")
@click.option("--stage", type=click.Choice(["final", "interim"]), default=None,
              help="Default: the final settlement, else the interim one.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False))
def audit_export(node_url: str, program_id: str, stage: str | None, out_file: str) -> None:
    """Collect one settlement with its certified headers and proofs into OUT."""
    from node.audit import AuditError, export_package, save_package

    with http_client(node_url) as client:
        try:
            package = export_package(client, program_id, stage)
        except AuditError as exc:
            _fail(str(exc))
            return
    save_package(out_file, package)
    click.echo("wrote %s: %s, anchor height %d" % (out_file, package["settlement_id"], package["anchor"]["height"]))


@audit.command("verify")
@click.argument("package_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--genesis", "genesis_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Trusted genesis.json (default: the package's own, with a warning).")
@click.option("--waypoint", default=None, help="Trust <height>:<header hash> (the package's anchor) instead.")
@click.option("--results-lag", "results_lag", type=click.IntRange(1, 64), default=None, metavar="L",
              help="The chain's genesis consensus_params.results_lag (default: the genesis's; pin it with a "
                   "waypoint and no --genesis).")
def audit_verify(package_file: str, genesis_file: str | None, waypoint: str | None,
                 results_lag: int | None = None) -> None:
    """Check a package offline and print the recomputed settlement beside the recorded one."""
    from node.audit import AuditError, load_package, verify_package

    genesis = None
    if genesis_file is not None:
        try:
            genesis = load_genesis(genesis_file)
        except ConfigError as exc:
            _fail(str(exc), 2)
    else:
        click.echo("warning: trusting the genesis inside the package; pass --genesis to pin it", err=True)
    try:
        report = verify_package(load_package(package_file), genesis, waypoint, results_lag)
    except AuditError as exc:
        _fail("audit package NOT verified: %s" % exc)
        return
    for line in report.lines():
        click.echo(line)
    if not report.matches:
        _fail("the recomputed settlement differs from the recorded one")
    click.echo("verified: the recorded settlement matches its proven inputs")


def main() -> None:
    cli(prog_name="careledger")


if __name__ == "__main__":
    main()
