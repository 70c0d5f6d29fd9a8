"""A tiny in-memory chain for the payment-contract tests (Contracts II).

`Chain` keeps committed state as a dict, runs blocks through `contracts.engine.apply_block`
and commits the write set, so tests exercise the real engine: nonces, roles, rollback.
Keys are fixed 32-byte strings (the engine does not check signatures).
"""

from __future__ import annotations

from typing import Any

from ledger.hashing import sha256
from ledger.types import Tx

from contracts.accounts import put_account
from contracts.engine import BlockContext, Receipt, apply_block
from contracts.state import StateView, key

CHAIN_ID = "careledger-test"
DAY_MS = 86_400_000
# 2026-01-01T00:00:00Z in ms: late enough that every test episode's window has closed.
LATE_TIME_MS = 20_454 * DAY_MS


def public_key(name: str) -> bytes:
    """A deterministic 32-byte key per name."""
    return sha256(b"key:" + name.encode())


PAYER = public_key("payer")
OTHER_PAYER = public_key("other-payer")
CLINIC = public_key("clinic")
HOSPITAL = public_key("hospital")
OUTSIDER = public_key("outsider")
AUDITOR = public_key("auditor")
REGULATOR = public_key("regulator")
PATIENT_A = public_key("patient-a")
PATIENT_B = public_key("patient-b")
PATIENT_C = public_key("patient-c")

ACCOUNTS = (
    (PAYER, "cms", "payer"),
    (OTHER_PAYER, "acme-health", "payer"),
    (CLINIC, "clinic", "provider"),
    (HOSPITAL, "hospital", "provider"),
    (OUTSIDER, "outsider", "provider"),
    (AUDITOR, "audit-co", "auditor"),
    (REGULATOR, "cms-admin", "regulator"),
    (PATIENT_A, "consent-svc", "patient_agent"),
    (PATIENT_B, "consent-svc", "patient_agent"),
    (PATIENT_C, "consent-svc", "patient_agent"),
)


class Chain:
    """Committed state plus a block runner."""

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self.height = 0
        self.nonces: dict[bytes, int] = {}
        genesis = StateView(self.store.get)
        for public, org, role in ACCOUNTS:
            put_account(genesis, public, org, role)
            genesis.put(key("org", org), {"id": org, "name": org, "kind": role, "voting": True, "active": True,
                                          "height": 0})
        self.commit(genesis.writes())

    def commit(self, writes: dict[bytes, bytes | None]) -> None:
        for k, v in writes.items():
            if v is None:
                self.store.pop(k, None)
            else:
                self.store[k] = v

    def put(self, record_key: bytes, value: Any) -> dict[str, Any]:
        """Write a record directly (as another contract would have) and return its reference."""
        view = StateView(self.store.get)
        view.put(record_key, value)
        self.commit(view.writes())
        return {"key": record_key.decode(), "hash": sha256(self.store[record_key])}

    def tx(self, sender: bytes, tx_type: str, body: dict[str, Any]) -> Tx:
        """A transaction with the sender's next nonce (counted when built)."""
        nonce = self.nonces.get(sender, 0) + 1
        self.nonces[sender] = nonce
        return Tx(CHAIN_ID, sender, nonce, tx_type, body)

    def run(self, txs: list[Tx], time_ms: int = LATE_TIME_MS) -> list[Receipt]:
        self.height += 1
        result = apply_block(self.store.get, BlockContext(CHAIN_ID, self.height, time_ms), txs)
        self.commit(result.writes)
        return list(result.receipts)

    def send(self, sender: bytes, tx_type: str, body: dict[str, Any], time_ms: int = LATE_TIME_MS) -> Receipt:
        """Run one transaction in its own block."""
        return self.run([self.tx(sender, tx_type, body)], time_ms)[0]

    def ok(self, sender: bytes, tx_type: str, body: dict[str, Any], time_ms: int = LATE_TIME_MS) -> Receipt:
        receipt = self.send(sender, tx_type, body, time_ms)
        if not receipt.ok:
            raise AssertionError("%s failed: %s %s" % (tx_type, receipt.code, receipt.message))
        return receipt

    def get(self, record_key: bytes, default: Any = None) -> Any:
        return StateView(self.store.get).get(record_key, default)

    def snapshot(self) -> dict[bytes, bytes]:
        """Committed state minus the nonce counters (which a failed tx still advances)."""
        return {k: v for k, v in self.store.items() if not k.startswith(b"nonce/")}


def register_program(chain: Chain, program_id: str, program_type: str, params: dict[str, Any],
                     participants: list[list[Any]] | None = None, year: int = 2024,
                     payer: bytes = PAYER, sign: bool = True) -> None:
    """Register a program with clinic 60 % / hospital 40 % (default) and collect signatures."""
    shares = participants if participants is not None else [["clinic", 6_000], ["hospital", 4_000]]
    chain.ok(payer, "program_register", {"program_id": program_id, "type": program_type,
                                         "performance_year": year, "params": params, "participants": shares})
    if sign:
        signers = {"clinic": CLINIC, "hospital": HOSPITAL, "outsider": OUTSIDER}
        for org, _ in shares:
            chain.ok(signers[org], "program_sign", {"program_id": program_id})
