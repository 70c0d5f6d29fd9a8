"""A tiny chain for the quality, risk and costs tests: a dict as committed state,
accounts written through `contracts.accounts.put_account`, blocks run through
`contracts.engine.apply_block` and their writes committed."""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from typing import Any

from ledger.types import Tx

from contracts import accounts
from contracts.engine import BlockContext, Receipt, apply_block
from contracts.state import StateView

CHAIN_ID = "careledger-test"


def _ensure_modules() -> None:
    """`apply_block` imports `contracts.modules`; while a module listed there by another
    engineer is not yet in the tree, stand in with the modules these tests need."""
    try:
        importlib.import_module("contracts.modules")
    except ImportError:
        for name in ("transfer", "costs", "quality", "risk"):
            importlib.import_module("contracts." + name)
        stand_in = types.ModuleType("contracts.modules")
        sys.modules["contracts.modules"] = stand_in
        import contracts

        contracts.modules = stand_in  # type: ignore[attr-defined]


_ensure_modules()


def pubkey(name: str) -> bytes:
    return hashlib.sha256(b"key:" + name.encode()).digest()


def pseudonym(name: str) -> bytes:
    """A fixed 16-byte stand-in for a random pseudonym (tests need reproducibility)."""
    return hashlib.sha256(b"patient:" + name.encode()).digest()[:16]


def commitment(name: str) -> bytes:
    return hashlib.sha256(b"doc:" + name.encode()).digest()


def npi(stem: int) -> str:
    """A valid NPI: nine digits from `stem` plus the Luhn digit over 80840 + them."""
    body = "%09d" % stem
    total = 0
    for position, char in enumerate(reversed("80840" + body)):
        digit = int(char)
        if position % 2 == 0:  # doubled positions, counting from the (missing) check digit
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return body + str((10 - total % 10) % 10)


DEFAULT_ACCOUNTS = [
    ("payer", "acme", "payer"),
    ("payer2", "bluecross", "payer"),
    ("auditor", "audit", "auditor"),
    ("clinic", "river", "provider"),
    ("clinic2", "lake", "provider"),
    ("regulator", "board", "regulator"),
]


class Chain:
    """Committed state in a dict; `run` executes one block and commits it."""

    def __init__(self, account_list: list[tuple[str, str, str]] | None = None) -> None:
        self.db: dict[bytes, bytes] = {}
        self.height = 0
        self.nonces: dict[str, int] = {}
        genesis = StateView(self.db.get)
        for name, org, role in account_list or DEFAULT_ACCOUNTS:
            accounts.put_account(genesis, pubkey(name), org, role)
        self.commit(genesis.writes())

    def commit(self, writes: dict[bytes, bytes | None]) -> None:
        for k, v in writes.items():
            if v is None:
                self.db.pop(k, None)
            else:
                self.db[k] = v

    def tx(self, sender: str, tx_type: str, body: dict[str, Any]) -> Tx:
        self.nonces[sender] = self.nonces.get(sender, 0) + 1
        return Tx(CHAIN_ID, pubkey(sender), self.nonces[sender], tx_type, body)

    def run_block(self, txs: list[Tx]) -> tuple[Receipt, ...]:
        self.height += 1
        ctx = BlockContext(CHAIN_ID, self.height, 1_735_689_600_000 + self.height * 1000)
        result = apply_block(self.db.get, ctx, txs)
        self.commit(result.writes)
        return result.receipts

    def run(self, sender: str, tx_type: str, body: dict[str, Any]) -> Receipt:
        return self.run_block([self.tx(sender, tx_type, body)])[0]

    def view(self) -> StateView:
        return StateView(self.db.get)

    def snapshot_without_nonces(self) -> dict[bytes, bytes]:
        return {k: v for k, v in self.db.items() if not k.startswith(b"nonce/")}
