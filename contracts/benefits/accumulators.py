"""Accumulators on the ledger: deductible and out-of-pocket met (individual and
family), and limit buckets (per plan, or pooled across plans and payers).

Why: every payer reads and debits the same counters inside the adjudication
transaction, so a member's remaining benefits are consistent in real time
across all payers (METHODS §1.8). Keys (year = calendar benefit year):

- `benefits/acc/<member>/<year>/<payer>/<plan>` → {"deductible": cents, "oop": cents}
- `benefits/famacc/<payer>/<plan>/<family>/<year>` → {"deductible": cents, "oop": cents}
- `benefits/bucket/<member>/<year>/<payer>/<plan>/<bucket>` → used (visits or cents)
- `benefits/pool/<member>/<year>/<pool>` → used, shared by every bucket naming the pool
"""

from __future__ import annotations

from contracts.state import StateView, key

from contracts.benefits.costshare import Accumulated, Limits
from contracts.benefits.coverage import Coverage
from contracts.benefits.design import Bucket, PlanDesign

ZERO = {"deductible": 0, "oop": 0}


def individual_key(member: str, year: int, payer: str, plan_id: str) -> bytes:
    return key("benefits", "acc", member, year, payer, plan_id)


def family_key(payer: str, plan_id: str, family_id: str, year: int) -> bytes:
    return key("benefits", "famacc", payer, plan_id, family_id, year)


def bucket_key(member: str, year: int, payer: str, plan_id: str, bucket: Bucket) -> bytes:
    """The bucket's counter: its pool's when it names one, else the plan's own."""
    if bucket.pool is not None:
        return key("benefits", "pool", member, year, bucket.pool)
    return key("benefits", "bucket", member, year, payer, plan_id, bucket.bucket_id)


def limits_of(plan: PlanDesign) -> Limits:
    return Limits(plan.deductible_individual, plan.deductible_family, plan.oop_individual, plan.oop_family)


def accumulated(state: StateView, coverage: Coverage, year: int) -> Accumulated:
    mine = state.get(individual_key(coverage.member, year, coverage.payer, coverage.plan_id), ZERO)
    family = state.get(family_key(coverage.payer, coverage.plan_id, coverage.family_id, year), ZERO)
    return Accumulated(mine["deductible"], family["deductible"], mine["oop"], family["oop"])


def bucket_used(state: StateView, coverage: Coverage, year: int, bucket: Bucket) -> int:
    return state.get(bucket_key(coverage.member, year, coverage.payer, coverage.plan_id, bucket), 0)


def credit(state: StateView, coverage: Coverage, year: int, deductible: int, oop: int) -> None:
    """Add to the member's and the family's deductible and OOP met (callers checked the limits)."""
    for k in (individual_key(coverage.member, year, coverage.payer, coverage.plan_id),
              family_key(coverage.payer, coverage.plan_id, coverage.family_id, year)):
        record = state.get(k, ZERO)
        state.put(k, {"deductible": record["deductible"] + deductible, "oop": record["oop"] + oop})


def count_bucket(state: StateView, coverage: Coverage, year: int, bucket: Bucket, amount: int) -> None:
    k = bucket_key(coverage.member, year, coverage.payer, coverage.plan_id, bucket)
    state.put(k, state.get(k, 0) + amount)
