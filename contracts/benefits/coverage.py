"""Coverage: which plan covers a member, and the facts that order the payers.

Why: coordination of benefits (NAIC MDL-120 §6, 42 CFR 411) is decided from
facts about each coverage — the member's relationship to the subscriber, the
subscriber's birthday and employment status, COBRA, coverage dates, employer
size and the Medicare entitlement reason — so the payer records them when it
enrolls the member, and every payer's order decision reads the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ledger.types import Tx

from contracts import attribution
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import InvalidValue, NotFound
from contracts.governance import sender_account
from contracts.state import StateView, key

from contracts.benefits import fields
from contracts.benefits.design import PlanDesign, load_plan

RELATIONSHIPS = ("self", "spouse", "child")  # self = employee/member/subscriber/retiree
EMPLOYMENT = ("active", "retired", "laid_off", "none")
PARENTS = ("together", "apart")
DECREES = ("none", "responsible", "not_responsible", "joint")
CUSTODY = ("custodial", "custodial_spouse", "noncustodial", "noncustodial_spouse")
MEDICARE_REASONS = ("age", "disability", "esrd")
MAX_EMPLOYEES = 10_000_000


@dataclass(frozen=True)
class Coverage:
    """One member's coverage under one plan, with its coordination facts."""

    member: str
    payer: str
    plan_id: str
    plan_kind: str
    cob_provision: bool
    family_id: str
    relationship: str
    coverage_start: int
    coverage_end: int | None
    subscriber_birthday: int  # mmdd of the subscriber (a parent, for a child)
    subscriber_since: int  # how long the plan has covered the subscriber
    employment: str  # of the subscriber: active, retired, laid_off, none
    cobra: bool  # COBRA or state continuation coverage
    employer_size: int
    medicare_reason: str | None
    esrd_coordination_start: int | None
    parents: str
    court_decree: str  # this plan's parent under a decree: responsible / not / joint / none
    custody: str | None

    @property
    def ref(self) -> tuple[str, str]:
        return (self.payer, self.plan_id)

    def active_on(self, day: int) -> bool:
        return self.coverage_start <= day and (self.coverage_end is None or day <= self.coverage_end)


def coverage_key(member: str, payer: str, plan_id: str) -> bytes:
    return key("benefits", "coverage", member, payer, plan_id)


def member_index(member: str) -> bytes:
    """Authenticated list of [payer, plan_id]: every coverage the member ever had."""
    return key("benefits", "member", member)


def parse_coverage(payer: str, plan: PlanDesign, body: Mapping[str, Any]) -> Coverage:
    """Validate a `benefit_coverage_enroll` body. Raises MalformedTx or InvalidValue."""
    member = fields.member(body)
    start = fields.date(body, "coverage_start")
    end = fields.optional_date(body, "coverage_end")
    if end is not None and end < start:
        raise InvalidValue("coverage_end precedes coverage_start")
    relationship = fields.choice(body, "relationship", RELATIONSHIPS)
    since = fields.date(body, "subscriber_since") if body.get("subscriber_since") is not None else start
    if since > start:
        raise InvalidValue("subscriber_since is after coverage_start")
    reason = body.get("medicare_reason")
    esrd_start = None
    if plan.kind == "medicare":
        reason = fields.choice(body, "medicare_reason", MEDICARE_REASONS)
        if reason == "esrd":
            esrd_start = fields.date(body, "esrd_coordination_start")
    elif reason is not None:
        raise InvalidValue("medicare_reason belongs on a medicare plan's coverage")
    custody = body.get("custody")
    if custody is not None:
        custody = fields.choice(body, "custody", CUSTODY)
    parents = fields.choice(body, "parents", PARENTS, "together")
    decree = fields.choice(body, "court_decree", DECREES, "none")
    if relationship != "child" and (parents != "together" or decree != "none" or custody is not None):
        raise InvalidValue("parents, court_decree and custody describe a dependent child only")
    return Coverage(
        member=member, payer=payer, plan_id=plan.plan_id, plan_kind=plan.kind,
        cob_provision=plan.cob_provision, family_id=fields.ident(body, "family_id"),
        relationship=relationship, coverage_start=start, coverage_end=end,
        subscriber_birthday=fields.month_day(body, "subscriber_birthday"), subscriber_since=since,
        employment=fields.choice(body, "employment", EMPLOYMENT), cobra=fields.flag(body, "cobra", False),
        employer_size=fields.count(body, "employer_size", 0, MAX_EMPLOYEES, 0),
        medicare_reason=reason, esrd_coordination_start=esrd_start,
        parents=parents, court_decree=decree, custody=custody,
    )


def to_record(c: Coverage, height: int) -> dict[str, Any]:
    return {
        "member": c.member, "plan_id": c.plan_id, "family_id": c.family_id, "relationship": c.relationship,
        "coverage_start": c.coverage_start, "coverage_end": c.coverage_end,
        "subscriber_birthday": c.subscriber_birthday, "subscriber_since": c.subscriber_since,
        "employment": c.employment, "cobra": c.cobra, "employer_size": c.employer_size,
        "medicare_reason": c.medicare_reason, "esrd_coordination_start": c.esrd_coordination_start,
        "parents": c.parents, "court_decree": c.court_decree, "custody": c.custody, "height": height,
    }


def load_coverage(state: StateView, member: str, payer: str, plan_id: str) -> Coverage:
    """The member's coverage under the plan. Raises NotFound (unknown plan or no coverage)."""
    plan = load_plan(state, payer, plan_id)
    record = state.get(coverage_key(member, payer, plan_id))
    if record is None:
        raise NotFound("member %s has no coverage under %s/%s" % (member[:12], payer, plan_id))
    return parse_coverage(payer, plan, record)


def member_coverages(state: StateView, member: str) -> list[Coverage]:
    """Every coverage of the member, sorted by (payer, plan id)."""
    refs = sorted({(payer, plan_id) for payer, plan_id in state.entries(member_index(member))})
    return [load_coverage(state, member, payer, plan_id) for payer, plan_id in refs]


@REGISTRY.register("benefit_coverage_enroll", roles={"payer"})
def handle_coverage_enroll(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Enroll (or correct, e.g. terminate) a member's coverage under one of the sender's plans.

    The member must be a registered patient (`patient_register`).
    Raises MalformedTx, InvalidValue, NotFound (plan or patient).
    """
    payer = sender_account(state, tx)["org"]
    plan = load_plan(state, payer, fields.ident(tx.body, "plan_id"))
    coverage = parse_coverage(payer, plan, tx.body)
    attribution.require_patient(state, coverage.member)
    k = coverage_key(coverage.member, payer, plan.plan_id)
    is_new = not state.exists(k)
    state.put(k, to_record(coverage, ctx.height))
    if is_new:
        state.append_entry(member_index(coverage.member), [payer, plan.plan_id])
    state.emit("benefit_coverage_enrolled", member=coverage.member, payer=payer, plan_id=plan.plan_id,
               corrected=not is_new)
