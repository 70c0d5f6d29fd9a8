"""Governance validator-set changes reach consensus: the executor hands a change
over once (`Executed.validator_update` → `BlockExecuted`), records it in the
block's batch, and a reopened store rebuilds the same `ChainTip.validator_schedule`."""

import trio

from consensus.config import ConsensusConfig
from consensus.replica import Replica
from ledger.crypto import PrivateKey
from ledger.hashing import ZERO_HASH
from ledger.types import CommitCertificate, Tx, Validator, ValidatorSet
from node.config import AppState, ConsensusParams, Genesis, GenesisAccount, GenesisValidator, Organisation
from node.executor import Executor
from node.leveldb_store import LevelDBStore
from node.node import NodeKeys, genesis_writes
from node.p2p import PeerAddress
from node.store import schedule_start
from tests.node.chain_helpers import CHAIN, next_block
from tests.node.node_cluster import CHAIN_ID, cluster, deterministic_key, start_node

K = 4
T0 = 1_700_000_000_000
VALIDATORS = [PrivateKey(bytes([i + 1]) * 32) for i in range(5)]  # the 5th joins by governance
NODE_KEYS = [PrivateKey(bytes([i + 11]) * 32) for i in range(5)]
ADMINS = [PrivateKey(bytes([i + 31]) * 32) for i in range(3)]


def gov_genesis() -> Genesis:
    """4 validators; three voting payer organisations (k = 2 of n = 3 at 2/3)."""
    return Genesis(
        CHAIN, T0,
        tuple(GenesisValidator("v%d" % i, VALIDATORS[i].public_key, NODE_KEYS[i].public_key, "127.0.0.1:1")
              for i in range(4)),
        consensus_params=ConsensusParams(checkpoint_interval=K),
        app_state=AppState(tuple(Organisation("org%d" % i, "Org %d" % i, "payer") for i in range(3)),
                           tuple(GenesisAccount(a.public_key, "org%d" % i, "payer", admin=True)
                                 for i, a in enumerate(ADMINS))),
    )


def new_set_params() -> dict:
    members = [["v%d" % i, VALIDATORS[i].public_key, NODE_KEYS[i].public_key] for i in range(5)]
    return {"validators": members}


def new_set() -> ValidatorSet:
    return ValidatorSet(tuple(Validator("v%d" % i, VALIDATORS[i].public_key) for i in range(5)))


class Nonces:
    def __init__(self) -> None:
        self.next: dict[bytes, int] = {}

    def tx(self, key: PrivateKey, tx_type: str, body: dict) -> Tx:
        nonce = self.next.get(key.public_key, 1)
        self.next[key.public_key] = nonce + 1
        return Tx(CHAIN, key.public_key, nonce, tx_type, body).signed(key)


def governance_txs(nonces: Nonces, proposal_id: str, params: dict) -> list[list[Tx]]:
    """Three blocks: propose (org0), approve (org1), execute (org0)."""
    return [
        [nonces.tx(ADMINS[0], "gov_propose",
                   {"proposal_id": proposal_id, "action": "set_validator_set", "params": params})],
        [nonces.tx(ADMINS[1], "gov_approve", {"proposal_id": proposal_id})],
        [nonces.tx(ADMINS[0], "gov_execute", {"proposal_id": proposal_id})],
    ]


def execute(executor: Executor, txs: list[Tx]):
    prev = executor.store.block(executor.height)
    block, cert = next_block(prev, executor.height + 1, txs)
    executed = executor.execute(block, cert)
    assert all(r.ok for r in executed.receipts), [(r.code, r.message) for r in executed.receipts]
    return executed


def replica_from(store, genesis: Genesis, genesis_app_hash: bytes) -> Replica:
    config = ConsensusConfig(chain_id=CHAIN, validators=genesis.validator_set(), genesis_app_hash=genesis_app_hash,
                             genesis_receipts_root=ZERO_HASH, genesis_time_ms=T0, checkpoint_interval=K)
    return Replica(config, VALIDATORS[0], last_commit=store.chain_tip(K, checkpoint_interval=K))


def test_schedule_start_is_the_height_after_the_next_checkpoint_boundary():
    # consensus.replica: executed at h → scheduled for heights > c, c = first multiple of K ≥ h+1
    assert [schedule_start(h, 4) for h in range(1, 10)] == [5, 5, 5, 9, 9, 9, 9, 13, 13]


def test_schedule_start_with_a_results_lag_follows_the_replica():
    # pipelined (L = 3): executed at h → heights > c, c = first multiple of K ≥ h+L (consensus.replica)
    assert [schedule_start(h, 4, 3) for h in range(1, 10)] == [5, 9, 9, 9, 9, 13, 13, 13, 13]


def test_an_approved_change_is_handed_over_once_persisted_and_rebuilt_after_reopening(tmp_path):
    genesis = gov_genesis()
    path = str(tmp_path / "db")
    kv = LevelDBStore(path)
    executor = Executor(CHAIN, kv)
    app_hash = executor.init_genesis(genesis_writes(genesis), T0)
    nonces = Nonces()
    handed = []
    for txs in governance_txs(nonces, "add-v4", new_set_params()):
        handed.append(execute(executor, txs).validator_update)
    assert handed[:2] == [None, None]
    assert handed[2] == new_set()  # executed at height 3
    executed = execute(executor, [])  # the pending record is not re-handed
    assert executed.validator_update is None
    (update,) = executor.store.validator_updates()
    assert (update.height, update.seq, update.validators) == (3, 1, new_set())
    assert update.node_keys == tuple((VALIDATORS[i].public_key, NODE_KEYS[i].public_key) for i in range(5))
    schedule = executor.store.chain_tip(K, checkpoint_interval=K).validator_schedule
    assert schedule == ((schedule_start(3, K), new_set()),) == ((5, new_set()),)
    kv.close()

    # reopen: the same schedule comes back, and the replica built from it agrees
    kv = LevelDBStore(path)
    try:
        executor = Executor(CHAIN, kv)
        assert executor.store.chain_tip(K, checkpoint_interval=K).validator_schedule == schedule
        replica = replica_from(executor.store, genesis, app_hash)
        assert replica.validators_for(4) == genesis.validator_set()
        assert replica.validators_for(5) == new_set()
        # a second change in a later block: handed over once more, seq 2, appended
        back = {"validators": new_set_params()["validators"][:4]}
        results = [execute(executor, txs).validator_update for txs in governance_txs(nonces, "drop-v4", back)]
        assert results[:2] == [None, None] and results[2] == genesis.validator_set()
        assert [(u.height, u.seq) for u in executor.store.validator_updates()] == [(3, 1), (7, 2)]
        assert executor.store.chain_tip(K, checkpoint_interval=K).validator_schedule == (
            (5, new_set()), (9, genesis.validator_set()))
    finally:
        kv.close()



# ------------------------------------------------------------------ in-process cluster


def cluster_genesis():
    """4 validators, a 5th node NOT in genesis (its node key is allowlisted only
    once governance adds it), three voting organisations, funded clients, K = 4."""
    keys = [NodeKeys(deterministic_key("node%d" % i), deterministic_key("validator%d" % i)) for i in range(5)]
    admins = [deterministic_key("admin%d" % i) for i in range(3)]
    clients = [deterministic_key("client%d" % i) for i in range(2)]
    genesis = Genesis(
        chain_id=CHAIN_ID, genesis_time_ms=T0,
        validators=tuple(GenesisValidator("v%d" % i, k.validator_key.public_key, k.node_key.public_key,
                                          "127.0.0.1:%d" % (20000 + i)) for i, k in enumerate(keys[:4])),
        consensus_params=ConsensusParams(checkpoint_interval=K),
        app_state=AppState(
            organisations=tuple(Organisation("org%d" % i, "Org %d" % i, "payer") for i in range(3)),
            accounts=tuple(GenesisAccount(a.public_key, "org%d" % i, "payer", admin=True)
                           for i, a in enumerate(admins))
            + tuple(GenesisAccount(c.public_key, "org0", "payer") for c in clients),
            balances=tuple(sorted((c.public_key, 1_000_000) for c in clients)),
        ),
    )
    return genesis, keys, admins, clients


async def test_a_governance_change_adds_a_fifth_validator_to_a_running_cluster(tmp_path, nursery):
    genesis, keys, admins, clients = cluster_genesis()
    newcomer_keys = keys[4]
    members = [["v%d" % i, k.validator_key.public_key, k.node_key.public_key] for i, k in enumerate(keys)]
    target = ValidatorSet(tuple(Validator(name, key) for name, key, _ in members))
    nonce = {c.public_key: 0 for c in clients + admins}

    def tx(key, tx_type, body):
        nonce[key.public_key] += 1
        return Tx(CHAIN_ID, key.public_key, nonce[key.public_key], tx_type, body).signed(key)

    async def commit(node, signed):
        result = await node.submit_tx(signed.encode())
        while (node.tx(result.tx_hash) or {}).get("status") != "committed":
            await node.driver.committed.wait()
        info = node.tx(result.tx_hash)
        assert info["receipt"]["ok"], info
        return info["height"]

    async def drive(nodes, height):
        """Commit transfers until every node in `nodes` stored `height`."""
        while min(n.store.height for n in nodes) < height:
            await commit(nodes[0], tx(clients[0], "transfer", {"to": clients[1].public_key, "amount": 1}))

    with trio.fail_after(90):
        async with cluster(tmp_path, genesis, keys[:4]) as nodes:
            newcomer = await start_node(nursery, tmp_path, genesis, newcomer_keys, 4)
            for node in nodes:
                newcomer.p2p.add_peer_address(PeerAddress(node.node_key, "127.0.0.1", node.p2p.port))
            await commit(nodes[0], tx(clients[0], "transfer", {"to": clients[1].public_key, "amount": 1}))
            with trio.fail_after(10):  # its dials are refused: not allowlisted yet
                while not any(n.p2p.counters["handshake_failures_unknown_key"] for n in nodes):
                    await trio.sleep(0.05)
            assert all(newcomer.node_key not in n.p2p.peers for n in nodes)
            assert newcomer.replica.validators_for(1).index_of(newcomer_keys.validator_key.public_key) is None

            # k = 2 of n = 3 organisations: propose (org0, counts as approval), approve (org1), execute
            await commit(nodes[0], tx(admins[0], "gov_propose", {
                "proposal_id": "add-v4", "action": "set_validator_set", "params": {"validators": members}}))
            await commit(nodes[1], tx(admins[1], "gov_approve", {"proposal_id": "add-v4"}))
            executed_at = await commit(nodes[2], tx(admins[0], "gov_execute", {"proposal_id": "add-v4"}))
            boundary = -(-(executed_at + 1) // K) * K
            await drive(nodes, boundary + 2)

            for node in nodes:
                assert [(u.height, u.validators) for u in node.store.validator_updates()] == [(executed_at, target)]
                assert newcomer.node_key in node.allowed_node_keys
                assert node.replica.validators_for(boundary + 1) == target
            old = genesis.validator_set()
            for height in range(executed_at, boundary + 3):
                header = nodes[0].store.block(height).header
                expected_now = target if height > boundary else old
                expected_next = target if height >= boundary else old
                assert header.validators_hash == expected_now.hash, height
                assert header.next_validators_hash == expected_next.hash, height
            block = nodes[0].store.block(boundary + 1)
            nodes[0].store.certificate(boundary + 1).verify(CHAIN_ID, target, block.hash, boundary + 1)

            # the newcomer connects (its node key is allowed now), catches up and signs
            for node in nodes:
                with trio.fail_after(20):
                    while newcomer.node_key not in node.p2p.peers:
                        await trio.sleep(0.05)
            newcomer_key = newcomer_keys.validator_key.public_key
            signed_by_newcomer = None
            with trio.fail_after(40):
                while signed_by_newcomer is None:
                    await drive(nodes, max(n.store.height for n in nodes) + 1)
                    for height in range(boundary + 1, nodes[0].store.height + 1):
                        certificate = nodes[0].store.certificate(height)
                        if any(k == newcomer_key for k, _ in certificate.signatures):
                            signed_by_newcomer = height
                            break
            block = nodes[0].store.block(signed_by_newcomer)
            certificate: CommitCertificate = nodes[0].store.certificate(signed_by_newcomer)
            certificate.verify(CHAIN_ID, target, block.hash, signed_by_newcomer)
            with trio.fail_after(20):
                await newcomer.wait_for_height(signed_by_newcomer)
            assert newcomer.store.block(signed_by_newcomer).hash == block.hash
            await newcomer.stop()
