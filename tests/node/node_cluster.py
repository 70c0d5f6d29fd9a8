"""An in-process cluster of real nodes on 127.0.0.1 for tests (ports chosen by the OS)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from ledger.crypto import PrivateKey
from ledger.types import Tx
from node.config import (
    AppState, ConsensusParams, ConsensusSection, Genesis, GenesisAccount, GenesisObserver, GenesisValidator, NodeConfig,
    Organisation, P2PSection, StorageSection,
)
from node.node import NodeKeys, NodeRuntime, run_node
from node.p2p import PeerAddress

CHAIN_ID = "careledger-test"


def deterministic_key(label: str) -> PrivateKey:
    return PrivateKey((label.encode() * 32)[:32])


def make_genesis(n_validators: int = 4, n_clients: int = 4, n_observers: int = 0,
                 balance: int = 1_000_000,
                 consensus_params: ConsensusParams | None = None) -> tuple[Genesis, list[NodeKeys], list[PrivateKey]]:
    """A genesis with `n_validators` validators, observers and funded clients
    (`consensus_params`: e.g. a pipelined chain's results_lag / max_in_flight).

    Returns (genesis, node keys: validators then observers, client keys).
    """
    keys = [NodeKeys(deterministic_key("node%d" % i), deterministic_key("validator%d" % i))
            for i in range(n_validators)]
    keys += [NodeKeys(deterministic_key("observer%d" % i)) for i in range(n_observers)]
    clients = [deterministic_key("client%d" % i) for i in range(n_clients)]
    genesis = Genesis(
        chain_id=CHAIN_ID, genesis_time_ms=1_700_000_000_000,
        validators=tuple(GenesisValidator("v%d" % i, k.validator_key.public_key, k.node_key.public_key,
                                          "127.0.0.1:%d" % (20000 + i)) for i, k in enumerate(keys[:n_validators])),
        observers=tuple(GenesisObserver("o%d" % i, k.node_key.public_key)
                        for i, k in enumerate(keys[n_validators:])),
        consensus_params=consensus_params or ConsensusParams(),
        app_state=AppState(
            organisations=(Organisation("payers", "Payers"),),
            accounts=tuple(GenesisAccount(c.public_key, "payers", "payer") for c in clients),
            balances=tuple(sorted((c.public_key, balance) for c in clients)),
        ),
    )
    return genesis, keys, clients


def node_config(home: str, index: int, role: str = "validator", **consensus: int) -> NodeConfig:
    settings = {"batch_timeout_ms": 20, "base_timeout_ms": 2000}
    settings.update(consensus)
    return NodeConfig(home=home, moniker="node%d" % index, role=role,
                      p2p=P2PSection(listen_port=0, dial_backoff_max_ms=500),
                      consensus=ConsensusSection(**settings))


def transfer(client: PrivateKey, nonce: int, to: bytes, amount: int = 1, chain_id: str = CHAIN_ID) -> Tx:
    return Tx(chain_id, client.public_key, nonce, "transfer", {"to": to, "amount": amount}).signed(client)


async def start_node(nursery: trio.Nursery, tmp_path, genesis: Genesis, keys: NodeKeys, index: int,
                     role: str = "validator", storage: StorageSection | None = None,
                     **consensus: int) -> NodeRuntime:
    """Start a node whose `stop()` cancels it (its home survives for a restart);
    `storage` and `consensus` settings replace node_config's."""
    config = node_config(str(tmp_path / ("node%d" % index)), index, role, **consensus)
    if storage is not None:
        config = config.replace(storage=storage)
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[NodeRuntime] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await run_node(config, genesis=genesis, keys=keys, task_status=task_status)
        finally:
            stopped.set()

    runtime = await nursery.start(run)

    async def stop() -> None:
        scope.cancel()
        await stopped.wait()

    runtime.stop = stop  # type: ignore[attr-defined]
    return runtime


@asynccontextmanager
async def cluster(tmp_path, genesis: Genesis, keys: list[NodeKeys],
                  roles: list[str] | None = None) -> AsyncIterator[list[NodeRuntime]]:
    """Start one node per key set, connect them all, yield the runtimes."""
    roles = roles or ["validator" if k.validator_key else "observer" for k in keys]
    async with trio.open_nursery() as nursery:
        nodes = [await start_node(nursery, tmp_path, genesis, k, i, role)
                 for i, (k, role) in enumerate(zip(keys, roles))]
        connect_all(nodes)
        with trio.fail_after(20):
            for node in nodes:
                await node.p2p.wait_for_peers(len(nodes) - 1)
        yield nodes
        nursery.cancel_scope.cancel()


def connect_all(nodes: list[NodeRuntime]) -> None:
    for i, node in enumerate(nodes):
        for other in nodes[i + 1:]:
            node.p2p.add_peer_address(PeerAddress(other.node_key, "127.0.0.1", other.p2p.port))
