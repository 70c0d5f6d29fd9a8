"""Build blocks for store/executor tests (certificates are not checked there)."""

from ledger.crypto import PrivateKey
from ledger.hashing import ZERO_HASH
from ledger.types import Block, CommitCertificate, Header, Tx, compute_tx_root
from node.config import AppState, Genesis, GenesisAccount, GenesisValidator, Organisation

CHAIN = "careledger-test"
CLIENT = PrivateKey(b"c" * 32)
OTHER = PrivateKey(b"d" * 32)
VALIDATOR = PrivateKey(b"v" * 32)


def genesis() -> Genesis:
    return Genesis(
        CHAIN, 1_700_000_000_000,
        tuple(GenesisValidator("v%d" % i, PrivateKey(bytes([i + 1]) * 32).public_key,
                               PrivateKey(bytes([i + 11]) * 32).public_key, "127.0.0.1:1") for i in range(4)),
        app_state=AppState((Organisation("payers", "Payers"),),
                           (GenesisAccount(CLIENT.public_key, "payers", "payer"),),
                           ((CLIENT.public_key, 1000),)),
    )


def next_block(prev: Block | None, height: int, txs: list[Tx]) -> tuple[Block, CommitCertificate]:
    header = Header(CHAIN, height, 0, 1_700_000_000_000 + height, prev.hash if prev else ZERO_HASH,
                    compute_tx_root(txs), ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH,
                    height - 1, VALIDATOR.public_key)
    block = Block(header, tuple(txs))
    return block, CommitCertificate(height, 0, block.hash, ())


def transfer(nonce: int, amount: int = 1) -> Tx:
    return Tx(CHAIN, CLIENT.public_key, nonce, "transfer", {"to": OTHER.public_key, "amount": amount}).signed(CLIENT)
