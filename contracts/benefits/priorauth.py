"""Prior authorisation: a provider requests, the member's payer decides.

Why: a category the plan marks `prior_auth` is paid only under an approved
authorisation valid on the date of service with units left; the adjudication
denies the line otherwise (CARC 197 absent, 15 invalid/expired, 198 exceeded).
Decisions record whether they met the CMS-0057-F time frames (72 hours
expedited, 7 calendar days standard, from 2026 [verify dates]) measured on
block time, never the wall clock.

Key: `benefits/pa/<payer>/<auth_id>` → {"auth_id", "member", "payer", "plan_id",
"category", "units_requested", "from_date", "to_date", "urgency", "status":
pending|approved|denied, "requested_by", "requested_at_ms", and once decided
"reason", "units_approved", "valid_from", "valid_to", "decided_at_ms", "timely",
"units_used"}.
"""

from __future__ import annotations

from typing import Any

from ledger.types import Tx

from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, Conflict, InvalidValue, NotFound
from contracts.governance import require_org, sender_account
from contracts.state import StateView, key

from contracts.benefits import fields
from contracts.benefits.coverage import load_coverage
from contracts.benefits.design import load_plan

URGENCY = ("standard", "expedited")
DECISION_WINDOW_MS = {"expedited": 72 * 3_600_000, "standard": 7 * 86_400_000}  # CMS-0057-F
MAX_UNITS = 10_000


def auth_key(payer: str, auth_id: str) -> bytes:
    return key("benefits", "pa", payer, auth_id)


@REGISTRY.register("benefit_pa_request", roles={"provider"})
def handle_pa_request(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A provider asks the member's payer to authorise units of a service category.

    Body: auth_id, member, payer, plan_id, category, units, from_date, to_date, urgency.
    Raises MalformedTx, InvalidValue, NotFound (payer, plan, coverage or category),
    AlreadyExists (auth id taken at that payer).
    """
    org = sender_account(state, tx)["org"]
    body = tx.body
    auth_id, member = fields.ident(body, "auth_id"), fields.member(body)
    payer = fields.ident(body, "payer")
    category = fields.code(body.get("category"), "category")
    units = fields.count(body, "units", 1, MAX_UNITS)
    start, end = fields.date(body, "from_date"), fields.date(body, "to_date")
    if end < start:
        raise InvalidValue("to_date precedes from_date")
    urgency = fields.choice(body, "urgency", URGENCY, "standard")
    require_org(state, payer)
    plan = load_plan(state, payer, fields.ident(body, "plan_id"))
    load_coverage(state, member, payer, plan.plan_id)
    if category not in plan.categories:
        raise NotFound("plan %s has no category %s" % (plan.plan_id, category))
    if state.exists(auth_key(payer, auth_id)):
        raise AlreadyExists("authorisation %s exists" % auth_id)
    state.put(auth_key(payer, auth_id), {
        "auth_id": auth_id, "member": member, "payer": payer, "plan_id": plan.plan_id, "category": category,
        "units_requested": units, "from_date": start, "to_date": end, "urgency": urgency,
        "status": "pending", "requested_by": org, "requested_at_ms": ctx.time_ms,
    })
    state.emit("benefit_pa_requested", auth_id=auth_id, payer=payer, urgency=urgency)


@REGISTRY.register("benefit_pa_decide", roles={"payer"})
def handle_pa_decide(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """The payer approves (units, validity window) or denies (reason) a pending request.

    Body: auth_id, decision ("approved" | "denied"), reason (code), and when
    approved: units (≤ requested), valid_from, valid_to.
    Raises MalformedTx, InvalidValue, NotFound (no such request at the sender
    payer: another payer's request is invisible to it), Conflict (already decided).
    """
    payer = sender_account(state, tx)["org"]
    body = tx.body
    auth_id = fields.ident(body, "auth_id")
    decision = fields.choice(body, "decision", ("approved", "denied"))
    reason = fields.code(body.get("reason"), "reason")
    record: dict[str, Any] | None = state.get(auth_key(payer, auth_id))
    if record is None:
        raise NotFound("no authorisation request %s at %s" % (auth_id, payer))
    if record["status"] != "pending":
        raise Conflict("authorisation %s is already %s" % (auth_id, record["status"]))
    update: dict[str, Any] = {"status": decision, "reason": reason, "decided_at_ms": ctx.time_ms,
                              "timely": ctx.time_ms - record["requested_at_ms"] <= DECISION_WINDOW_MS[record["urgency"]],
                              "units_approved": 0, "valid_from": None, "valid_to": None, "units_used": 0}
    if decision == "approved":
        units = fields.count(body, "units", 1, record["units_requested"])
        start, end = fields.date(body, "valid_from"), fields.date(body, "valid_to")
        if end < start:
            raise InvalidValue("valid_to precedes valid_from")
        update.update(units_approved=units, valid_from=start, valid_to=end)
    state.put(auth_key(payer, auth_id), dict(record, **update))
    state.emit("benefit_pa_decided", auth_id=auth_id, decision=decision, reason=reason, timely=update["timely"])
