"""Real-time eligibility: what a member has left, across all therapies and payers.

Why: the ledger's accumulators are shared, so one read answers what a 270/271
exchange asks each payer separately: which payer is primary, deductible and
out-of-pocket met and remaining, and per-bucket visits or dollars remaining —
including pooled buckets another payer has been counting.

    eligibility(reader_or_state, member, as_of) -> Eligibility

`reader_or_state` is a `StateView` or a committed-state reader (`key -> bytes | None`);
`member` a patient pseudonym ("pt-<hex>" or 32 bytes); `as_of` a yyyymmdd date
(its calendar year is the benefit year). Read-only; raises MalformedTx (member)
or InvalidValue (date).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.calendar import year_of
from contracts.identifiers import patient_id
from contracts.state import Reader, StateView

from contracts.benefits import accumulators, fields
from contracts.benefits.costshare import deductible_remaining, oop_remaining
from contracts.benefits.coverage import member_coverages
from contracts.benefits.design import load_plan
from contracts.benefits.order import order_of_benefits


@dataclass(frozen=True)
class BucketStatus:
    bucket_id: str
    categories: tuple[str, ...]
    unit: str  # "visits" or "cents"
    limit: int
    used: int
    remaining: int
    hard: bool
    pool: str | None


@dataclass(frozen=True)
class PlanBenefits:
    payer: str
    plan_id: str
    rank: int  # 1 = primary
    cob_rule: str
    cob_method: str
    deductible_met: int
    deductible_remaining: int  # individual, embedded in the family amount
    family_deductible_met: int
    oop_met: int
    oop_remaining: int
    family_oop_met: int
    buckets: tuple[BucketStatus, ...]
    prior_auth_categories: tuple[str, ...]


@dataclass(frozen=True)
class Eligibility:
    member: str
    as_of: int
    plans: tuple[PlanBenefits, ...]  # active coverages, in order of benefit determination

    @property
    def primary(self) -> tuple[str, str] | None:
        return (self.plans[0].payer, self.plans[0].plan_id) if self.plans else None


def _state(reader_or_state: StateView | Reader) -> StateView:
    return reader_or_state if isinstance(reader_or_state, StateView) else StateView(reader_or_state)


def eligibility(reader_or_state: StateView | Reader, member: Any, as_of: int) -> Eligibility:
    """Remaining benefits of `member` on `as_of` under every active coverage.

    Raises MalformedTx (member) or InvalidValue (as_of).
    """
    state = _state(reader_or_state)
    pid = patient_id(member)
    day = fields.date({"as_of": as_of}, "as_of")
    year = year_of(day)
    coverages = {c.ref: c for c in member_coverages(state, pid)}
    plans = []
    for ranked in order_of_benefits(list(coverages.values()), day):
        coverage = coverages[(ranked.payer, ranked.plan_id)]
        plan = load_plan(state, ranked.payer, ranked.plan_id)
        limits = accumulators.limits_of(plan)
        met = accumulators.accumulated(state, coverage, year)
        buckets = []
        for bucket in plan.buckets:
            used = accumulators.bucket_used(state, coverage, year, bucket)
            buckets.append(BucketStatus(bucket.bucket_id, bucket.categories, bucket.unit, bucket.limit, used,
                                        max(0, bucket.limit - used), bucket.hard, bucket.pool))
        plans.append(PlanBenefits(
            payer=ranked.payer, plan_id=ranked.plan_id, rank=ranked.rank, cob_rule=ranked.rule,
            cob_method=plan.cob_method, deductible_met=met.deductible_individual,
            deductible_remaining=deductible_remaining(limits, met), family_deductible_met=met.deductible_family,
            oop_met=met.oop_individual, oop_remaining=oop_remaining(limits, met), family_oop_met=met.oop_family,
            buckets=tuple(buckets),
            prior_auth_categories=tuple(name for name, c in sorted(plan.categories.items()) if c.prior_auth)))
    return Eligibility(pid, day, tuple(plans))
