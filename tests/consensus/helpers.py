"""Shared fixtures for step-table tests: a 4-validator chain and message builders."""

from __future__ import annotations

from dataclasses import replace

from consensus.config import ConsensusConfig
from consensus.messages import CommitVote, Prepare, Proposal
from consensus.replica import Replica
from ledger.crypto import PrivateKey
from ledger.hashing import ZERO_HASH, sha256
from ledger.merkle import root_from_hashes
from ledger.types import Block, Header, Tx, Validator, ValidatorSet, compute_tx_root

CHAIN = "careledger-test"
KEYS = [PrivateKey(sha256(b"step-%d" % i)) for i in range(4)]
VSET = ValidatorSet(tuple(Validator("v%d" % i, k.public_key) for i, k in enumerate(KEYS)))
CLIENT = PrivateKey(sha256(b"client"))
GENESIS_APP = sha256(b"genesis")


def config(**overrides: object) -> ConsensusConfig:
    values = dict(chain_id=CHAIN, validators=VSET, genesis_app_hash=GENESIS_APP, max_batch_txs=2,
                  batch_timeout_ms=10, checkpoint_interval=2, base_timeout_ms=1000, max_timeout_ms=8000)
    values.update(overrides)
    return ConsensusConfig(**values)  # type: ignore[arg-type]


def replica(index: int = 1, **overrides: object) -> Replica:
    r = Replica(config(**overrides), KEYS[index])
    r.start(0)
    return r


def tx(nonce: int) -> Tx:
    return Tx(CHAIN, CLIENT.public_key, nonce, "claim.submit", {"amount": nonce}).signed(CLIENT)


def block(height: int = 1, view: int = 0, txs: tuple[Tx, ...] = (), proposer: int | None = None,
          time: int = 5, prev_hash: bytes = ZERO_HASH, app_hash: bytes = GENESIS_APP) -> Block:
    proposer_key = KEYS[view % 4 if proposer is None else proposer].public_key
    header = Header(CHAIN, height, view, time, prev_hash, compute_tx_root(txs), ZERO_HASH, app_hash,
                    VSET.hash, VSET.hash, root_from_hashes([]), height - 1, proposer_key)
    return Block(header, txs)


def signed(msg, key: PrivateKey):  # type: ignore[no-untyped-def]
    return replace(msg, signature=key.sign(msg.KIND, CHAIN, msg.payload()))


def proposal(b: Block, view: int = 0, signer: int | None = None) -> bytes:
    index = view % 4 if signer is None else signer
    return signed(Proposal(KEYS[index].public_key, view, b.height, b), KEYS[index]).encode()


def prepare(b: Block, index: int, view: int = 0) -> bytes:
    return signed(Prepare(KEYS[index].public_key, view, b.height, b.hash), KEYS[index]).encode()


def commit(b: Block, index: int, view: int = 0) -> bytes:
    return signed(CommitVote(KEYS[index].public_key, view, b.height, b.hash), KEYS[index]).encode()
