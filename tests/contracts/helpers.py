"""A small chain for contract tests: genesis state in a dict, blocks run through
`contracts.engine.apply_block`, writes committed as the node would.

Keys are deterministic 32-byte strings (the engine trusts committed blocks to be
signed, so tests need no signatures). Organisations of the default world:

    cms (payer), acme (payer), river (provider, runs ACO river-aco),
    lake (provider), hill (provider, an independent practice), audit (auditor),
    board (regulator, non-voting), app (patient_agent, non-voting)

Voting organisations: cms, acme, river, lake, hill, audit → n = 6, k = 4 at 2/3.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from ledger import codec
from ledger.types import Tx

from contracts.engine import BlockContext, Receipt, apply_block
from contracts.genesis import genesis_writes
from contracts.providers import NPI_PREFIX, luhn_check_digit
from contracts.state import StateView, key


CHAIN_ID = "careledger-test"
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z in ms: block time of block 1
DAY = 86_400_000
YEAR = 365 * DAY

ORGS = [
    ("cms", "Centers for Medicare & Medicaid Services", "payer"),
    ("acme", "Acme Health Plan", "payer"),
    ("river", "River Valley ACO", "provider"),
    ("lake", "Lakeside ACO", "provider"),
    ("hill", "Hill Street Family Practice", "provider"),
    ("audit", "Independent Audit Co", "auditor"),
    ("board", "State Medical Board", "regulator"),
    ("app", "Patient Consent App", "patient_agent"),
]


def pk(name: str) -> bytes:
    """A deterministic 32-byte public key for a named test actor."""
    return hashlib.sha256(b"careledger-test-key/" + name.encode()).digest()


def admin(org: str) -> bytes:
    return pk(org + "/admin")


def npi(nine_digits: str) -> str:
    """A valid NPI: the nine digits + their Luhn check digit over 80840."""
    return nine_digits + str(luhn_check_digit(NPI_PREFIX + nine_digits))


def commitment(label: str) -> bytes:
    return hashlib.sha256(b"salt/" + label.encode()).digest()


def patient(label: str) -> str:
    """A stand-in for a random pseudonym (tests only: real ones come from a CSPRNG)."""
    return "pt-" + hashlib.sha256(b"pseudonym/" + label.encode()).hexdigest()


def default_app_state(**parameters: Any) -> dict[str, Any]:
    organisations = [{"id": i, "name": n, "kind": k} for i, n, k in ORGS]
    accounts = [{"public_key": admin(i).hex(), "org": i, "admin": True} for i, _, _ in ORGS]
    return {
        "organisations": organisations,
        "accounts": accounts,
        "parameters": parameters,
        "validators": [["val-%d" % i, pk("validator-%d" % i).hex()] for i in range(4)],
    }


class Chain:
    """Committed state plus a block counter; `run` executes one block."""

    def __init__(self, app_state: dict[str, Any] | None = None) -> None:
        self.store: dict[bytes, bytes] = {}
        self.commit(genesis_writes(default_app_state() if app_state is None else app_state))
        self.height = 0
        self.time_ms = T0
        self.pending: dict[bytes, int] = {}
        self.last_writes: dict[bytes, bytes | None] = {}

    # -- state
    def commit(self, writes: dict[bytes, bytes | None]) -> None:
        for k, v in writes.items():
            if v is None:
                self.store.pop(k, None)
            else:
                self.store[k] = v

    def view(self) -> StateView:
        return StateView(self.store.get)

    def get(self, k: bytes, default: Any = None) -> Any:
        raw = self.store.get(k)
        return default if raw is None else codec.decode(raw)

    def entries(self, prefix: bytes) -> list[Any]:
        return self.view().entries(prefix)

    def mutate(self, fn: Callable[[StateView], Any]) -> Any:
        """Write directly (for inputs another module will own, e.g. claim lines)."""
        state = self.view()
        result = fn(state)
        self.commit(state.writes())
        return result

    # -- transactions
    def tx(self, sender: bytes, tx_type: str, body: dict[str, Any], nonce: int | None = None) -> Tx:
        if nonce is None:
            nonce = self.get(key("nonce", sender), 0) + 1 + self.pending.get(sender, 0)
            self.pending[sender] = self.pending.get(sender, 0) + 1
        return Tx(CHAIN_ID, sender, nonce, tx_type, body)

    def run(self, *txs: Tx, time_ms: int | None = None) -> list[Receipt]:
        self.height += 1
        if time_ms is not None:
            self.time_ms = time_ms
        ctx = BlockContext(CHAIN_ID, self.height, self.time_ms)
        result = apply_block(self.store.get, ctx, list(txs))
        self.last_writes = result.writes
        self.commit(result.writes)
        self.pending = {}
        self.time_ms += 5_000
        return list(result.receipts)

    def send(self, sender: bytes, tx_type: str, body: dict[str, Any], time_ms: int | None = None) -> Receipt:
        return self.run(self.tx(sender, tx_type, body), time_ms=time_ms)[0]

    def ok(self, sender: bytes, tx_type: str, body: dict[str, Any], time_ms: int | None = None) -> Receipt:
        receipt = self.send(sender, tx_type, body, time_ms)
        assert receipt.ok, "%s failed: %s %s" % (tx_type, receipt.code, receipt.message)
        return receipt

    def fails(self, sender: bytes, tx_type: str, body: dict[str, Any], code: str,
              time_ms: int | None = None) -> Receipt:
        """Send, expect failure with `code`, and check only the sender's nonce moved."""
        receipt = self.send(sender, tx_type, body, time_ms)
        assert not receipt.ok and receipt.code == code, (receipt.code, receipt.message)
        assert set(self.last_writes) <= {key("nonce", sender)}, sorted(self.last_writes)
        return receipt


# ------------------------------------------------------------ a provider world


PCP_TAXONOMY = "207Q00000X"  # family medicine
NP_TAXONOMY = "363L00000X"
CARDIOLOGY = "207RC0000X"
DERMATOLOGY = "207N00000X"  # neither PCP nor a step-2 specialty

RIVER_TIN, RIVER_TIN_2, LAKE_TIN, HILL_TIN, SHARED_TIN = "111111111", "111111112", "222222222", "333333333", "444444444"
DR_RIVER, DR_RIVER_2, DR_LAKE, DR_HILL, DR_CARDIO, DR_SHARED, DR_DERM = (
    npi("100000001"), npi("100000002"), npi("100000003"), npi("100000004"),
    npi("100000005"), npi("100000006"), npi("100000007"),
)


def register_practitioner(chain: Chain, org: str, the_npi: str, taxonomy: str, name: str = "Dr Test") -> None:
    chain.ok(admin(org), "provider_register", {
        "npi": the_npi, "entity": "individual", "name": name,
        "taxonomies": [taxonomy], "primary_taxonomy": taxonomy,
    })


def licence(chain: Chain, the_npi: str, cid: str = "lic-1", valid_from: int = 0,
            expires: int = T0 + 3 * YEAR, issuer: str = "board") -> None:
    chain.ok(admin(issuer), "credential_issue", {
        "credential_id": cid, "npi": the_npi, "kind": "licence", "valid_from_ms": valid_from,
        "expires_at_ms": expires, "document_commitment": commitment(cid + the_npi), "jurisdiction": "CA",
    })


def provider_world(chain: Chain) -> None:
    """Program `mssp-2025` (payer cms) with ACOs river-aco (TINs RIVER_TIN,
    RIVER_TIN_2, SHARED_TIN) and lake-aco (LAKE_TIN, SHARED_TIN); HILL_TIN is
    outside every ACO. SHARED_TIN is in both ACOs, so its services are excluded."""
    for org, tin in (("river", RIVER_TIN), ("river", RIVER_TIN_2), ("lake", LAKE_TIN),
                     ("hill", HILL_TIN), ("hill", SHARED_TIN)):
        chain.ok(admin(org), "tin_register", {"tin": tin, "name": "Practice " + tin})
    for org, the_npi, taxonomy in (("river", DR_RIVER, PCP_TAXONOMY), ("river", DR_RIVER_2, NP_TAXONOMY),
                                   ("lake", DR_LAKE, PCP_TAXONOMY), ("hill", DR_HILL, PCP_TAXONOMY),
                                   ("river", DR_CARDIO, CARDIOLOGY), ("hill", DR_SHARED, PCP_TAXONOMY),
                                   ("hill", DR_DERM, DERMATOLOGY)):
        register_practitioner(chain, org, the_npi, taxonomy)
        licence(chain, the_npi)
    chain.ok(admin("cms"), "program_create", {"program_id": "mssp-2025", "name": "MSSP PY2025"})
    chain.ok(admin("river"), "aco_register", {"program_id": "mssp-2025", "aco_id": "river-aco", "name": "River ACO"})
    chain.ok(admin("lake"), "aco_register", {"program_id": "mssp-2025", "aco_id": "lake-aco", "name": "Lake ACO"})
    for aco, org, tin, npis in (("river-aco", "river", RIVER_TIN, [DR_RIVER, DR_CARDIO]),
                                ("river-aco", "river", RIVER_TIN_2, [DR_RIVER_2]),
                                ("river-aco", "river", SHARED_TIN, [DR_SHARED]),
                                ("lake-aco", "lake", LAKE_TIN, [DR_LAKE]),
                                ("lake-aco", "lake", SHARED_TIN, [DR_SHARED])):
        chain.ok(admin(org), "aco_add_participant", {"program_id": "mssp-2025", "aco_id": aco, "tin": tin, "npis": npis})
