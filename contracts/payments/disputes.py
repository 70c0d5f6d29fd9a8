"""Settlement disputes: a party challenges a settlement with evidence commitments, an
auditor rules, and the payer records the adjustment as a new transaction.

Why: a settlement computed on the ledger can still rest on wrong inputs (a missed claim,
a mis-attributed patient). The dispute path keeps the original settlement immutable and
adds an auditable chain — challenge, ruling, adjustment — each step referencing the
previous one. Evidence stays off-ledger (it holds PHI); the ledger holds 32-byte hashes
that commit to it.

Rules:

* Only a party of the settlement (its program's payer or a participant) may open a
  dispute or add evidence; anyone else gets NotAPartyError.
* Only an auditor rules, once, on an open dispute: `upheld` with a signed adjustment
  (positive = the payer pays the participants more) or `rejected` (adjustment 0).
* The adjustment is a separate `dispute_adjust` transaction by the settlement's payer
  that names both the settlement and the dispute; it is split among the participants by
  their allocation shares (largest remainder) and recorded once.

State layout:

- `dispute/<id>` → {"id", "settlement_id", "program_id", "opened_by_org", "reason",
  "evidence": [hash, …], "status": open|rejected|upheld|adjusted, "opened_height",
  "ruling": {"decision", "adjustment_cents", "rationale", "auditor_org", "height"} | None,
  "adjustment": disbursement key | None}
- `settlement/<settlement id>/disputes` — authenticated list of dispute ids.
- `disbursement/<settlement id>/adjustment/<dispute id>` — the adjustment's split.

Tx types (body fields; roles):

- `dispute_open` {dispute_id, settlement_id, reason, evidence: [32-byte hash, …]} — payer, provider.
- `dispute_evidence` {dispute_id, evidence: [32-byte hash, …]} — payer, provider.
- `dispute_rule` {dispute_id, decision: upheld|rejected, adjustment_cents, rationale: 32-byte hash} — auditor.
- `dispute_adjust` {dispute_id, settlement_id} — payer.
"""

from __future__ import annotations

from typing import Any

from ledger.types import Tx

from contracts.engine import REGISTRY, BlockContext
from contracts.payments.errors import (
    AlreadySettledError,
    InvalidInputError,
    NotAPartyError,
    ProgramStateError,
    UnknownProgramError,
)
from contracts.payments.programs import (
    MAX_CENTS,
    disbursement_key,
    get_program,
    get_settlement,
    read_choice,
    read_hash,
    read_id,
    read_text,
    record_disbursement,
    require_payer,
    sender_org,
    settlement_key,
)
from contracts.state import StateView, key

MAX_EVIDENCE = 32
MAX_EVIDENCE_TOTAL = 256
OPEN, UPHELD, REJECTED, ADJUSTED = "open", "upheld", "rejected", "adjusted"


def dispute_key(dispute_id: str) -> bytes:
    return key("dispute", dispute_id)


def get_dispute(state: StateView, dispute_id: str) -> dict[str, Any]:
    """Raises UnknownProgramError when there is no such dispute."""
    dispute = state.get(dispute_key(dispute_id))
    if dispute is None:
        raise UnknownProgramError("no dispute %s" % dispute_id)
    return dispute


def read_evidence(body: dict[str, Any]) -> list[bytes]:
    """1..32 distinct 32-byte evidence commitments, in the order given. Raises InvalidInputError."""
    raw = body.get("evidence")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_EVIDENCE:
        raise InvalidInputError("evidence must list 1..%d 32-byte hashes" % MAX_EVIDENCE)
    hashes = [read_hash(item, "evidence") for item in raw]
    if len(set(hashes)) != len(hashes):
        raise InvalidInputError("evidence lists a hash twice")
    return hashes


def require_settlement_party(state: StateView, tx: Tx, settlement: dict[str, Any]) -> str:
    """The sender's org, which must be a party of the settlement. Raises NotAPartyError."""
    org = sender_org(state, tx)
    if org not in settlement["parties"]:
        raise NotAPartyError("%s is not a party to settlement %s" % (org, settlement["id"]))
    return org


@REGISTRY.register("dispute_open", roles={"payer", "provider"})
def handle_dispute_open(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A party disputes a settlement, committing to its evidence by hash.

    Raises InvalidInputError, UnknownProgramError (no such settlement), NotAPartyError
    (the sender's org is not a party), ProgramStateError (dispute id taken).
    """
    body = tx.body
    dispute_id = read_id(body, "dispute_id")
    settlement = get_settlement(state, body.get("settlement_id"))
    org = require_settlement_party(state, tx, settlement)
    reason = read_text(body, "reason", 1000)
    evidence = read_evidence(body)
    if state.exists(dispute_key(dispute_id)):
        raise ProgramStateError("dispute %s already exists" % dispute_id)
    state.put(dispute_key(dispute_id), {
        "id": dispute_id, "settlement_id": settlement["id"], "program_id": settlement["program_id"],
        "opened_by_org": org, "reason": reason, "evidence": evidence, "status": OPEN,
        "opened_height": ctx.height, "ruling": None, "adjustment": None,
    })
    state.append_entry(settlement_key(settlement["id"]) + b"/disputes", dispute_id)
    state.emit("dispute_opened", dispute_id=dispute_id, settlement_id=settlement["id"], org=org)


@REGISTRY.register("dispute_evidence", roles={"payer", "provider"})
def handle_dispute_evidence(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A party adds evidence commitments to an open dispute.

    Raises InvalidInputError (malformed, repeated or too much evidence),
    UnknownProgramError, NotAPartyError, ProgramStateError (already ruled).
    """
    dispute = get_dispute(state, read_id(tx.body, "dispute_id"))
    settlement = get_settlement(state, dispute["settlement_id"])
    require_settlement_party(state, tx, settlement)
    added = read_evidence(tx.body)
    if dispute["status"] != OPEN:
        raise ProgramStateError("dispute %s is closed" % dispute["id"])
    evidence = list(dispute["evidence"])
    if set(added) & set(evidence):
        raise InvalidInputError("evidence already submitted")
    if len(evidence) + len(added) > MAX_EVIDENCE_TOTAL:
        raise InvalidInputError("a dispute holds at most %d evidence hashes" % MAX_EVIDENCE_TOTAL)
    state.put(dispute_key(dispute["id"]), dict(dispute, evidence=evidence + added))
    state.emit("dispute_evidence", dispute_id=dispute["id"], count=len(added))


@REGISTRY.register("dispute_rule", roles={"auditor"})
def handle_dispute_rule(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """An auditor rules on an open dispute: upheld with a signed adjustment, or rejected.

    Raises InvalidInputError (a rejected ruling with an adjustment, an upheld one without),
    UnknownProgramError, ProgramStateError (already ruled).
    """
    body = tx.body
    dispute = get_dispute(state, read_id(body, "dispute_id"))
    decision = read_choice(body, "decision", (UPHELD, REJECTED))
    adjustment = body.get("adjustment_cents")
    if isinstance(adjustment, bool) or not isinstance(adjustment, int) or abs(adjustment) > MAX_CENTS:
        raise InvalidInputError("adjustment_cents must be signed integer cents")
    if decision == REJECTED and adjustment != 0:
        raise InvalidInputError("a rejected dispute carries no adjustment")
    if decision == UPHELD and adjustment == 0:
        raise InvalidInputError("an upheld dispute needs a non-zero adjustment")
    rationale = read_hash(body.get("rationale"), "rationale")
    if dispute["status"] != OPEN:
        raise ProgramStateError("dispute %s was already ruled" % dispute["id"])
    ruling = {"decision": decision, "adjustment_cents": adjustment, "rationale": rationale,
              "auditor_org": sender_org(state, tx), "height": ctx.height}
    state.put(dispute_key(dispute["id"]), dict(dispute, status=decision, ruling=ruling))
    state.emit("dispute_ruled", dispute_id=dispute["id"], decision=decision, adjustment_cents=adjustment)


@REGISTRY.register("dispute_adjust", roles={"payer"})
def handle_dispute_adjust(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """The settlement's payer records the adjustment of an upheld dispute, referencing
    both the settlement and the dispute; it is split among participants by share.

    Raises InvalidInputError (the dispute is not about that settlement),
    UnknownProgramError, NotAPartyError (not the payer), ProgramStateError (not upheld),
    AlreadySettledError (already adjusted).
    """
    body = tx.body
    dispute = get_dispute(state, read_id(body, "dispute_id"))
    settlement = get_settlement(state, body.get("settlement_id"))
    if dispute["settlement_id"] != settlement["id"]:
        raise InvalidInputError("dispute %s is about %s, not %s" % (dispute["id"], dispute["settlement_id"], settlement["id"]))
    program = get_program(state, settlement["program_id"])
    require_payer(state, tx, program)
    if dispute["status"] == ADJUSTED:
        raise AlreadySettledError("dispute %s was already adjusted" % dispute["id"])
    if dispute["status"] != UPHELD:
        raise ProgramStateError("dispute %s is %s, not upheld" % (dispute["id"], dispute["status"]))
    suffix = ("adjustment", dispute["id"])
    record_disbursement(state, ctx, program, settlement["id"], dispute["ruling"]["adjustment_cents"], suffix=suffix,
                        reference={"settlement_id": settlement["id"], "dispute_id": dispute["id"]})
    state.put(dispute_key(dispute["id"]), dict(
        dispute, status=ADJUSTED, adjustment=disbursement_key(settlement["id"], *suffix).decode()))
