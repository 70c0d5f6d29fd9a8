"""Plan designs: what a payer's benefit plan charges and limits.

Why: cost share and limits must be computed identically by every member of the
ledger, so the design is an immutable on-ledger record (a new plan year is a new
plan id). Amounts are integer cents, coinsurance in basis points.

Buckets model METHODS §1.8 limits as (categories, unit, limit, hard/soft):
Medicare Part B keeps PT + SLP in one KX-threshold bucket and OT in another
(SSA §1833(g), BBA 2018 §50202; soft: above it a line needs the KX modifier);
commercial plans often have one hard visit limit over PT, OT and chiropractic.
A bucket naming a `pool` shares its counter with every other plan whose bucket
names the same pool for the same member and year: that is how two payers keep
one combined therapy count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ledger.types import Tx

from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, InvalidValue, MalformedTx, NotFound
from contracts.governance import sender_account
from contracts.state import StateView, key

from contracts.benefits import fields

PLAN_KINDS = ("commercial", "medicare", "medicaid")
COB_METHODS = ("standard", "carve_out", "non_duplication", "medicare_secondary")
UNITS = ("visits", "cents")
MAX_CATEGORIES = 64
MAX_BUCKETS = 16
MAX_VISITS = 10_000


@dataclass(frozen=True)
class Category:
    """Cost share for one service category (e.g. "office", "pt", "ot", "slp", "chiro")."""

    copay_cents: int
    coinsurance_bp: int
    deductible_applies: bool
    prior_auth: bool


@dataclass(frozen=True)
class Bucket:
    """A limit over a set of categories, per member and calendar year."""

    bucket_id: str
    categories: tuple[str, ...]
    unit: str  # "visits" counts units, "cents" counts allowed amounts
    limit: int
    hard: bool  # hard: deny beyond it; soft: beyond it a line needs the KX modifier
    pool: str | None  # shared counter across plans (and payers), or None


@dataclass(frozen=True)
class PlanDesign:
    payer: str
    plan_id: str
    kind: str
    cob_provision: bool  # NAIC MDL-120 §6 rule 1: a plan without one is always primary
    cob_method: str
    deductible_individual: int
    deductible_family: int
    oop_individual: int
    oop_family: int
    categories: Mapping[str, Category]
    buckets: tuple[Bucket, ...]

    def buckets_for(self, category: str) -> tuple[Bucket, ...]:
        return tuple(b for b in self.buckets if category in b.categories)


def plan_key(payer: str, plan_id: str) -> bytes:
    return key("benefits", "plan", payer, plan_id)


def parse_plan(payer: str, body: Mapping[str, Any]) -> PlanDesign:
    """Validate a `benefit_plan_register` body into a design.

    Raises MalformedTx (not a map) or InvalidValue (any field out of range,
    a family amount below the individual one, an OOP max below the deductible,
    a bucket naming an unknown category).
    """
    plan_id = fields.ident(body, "plan_id")
    kind = fields.choice(body, "kind", PLAN_KINDS, "commercial")
    default_method = "medicare_secondary" if kind == "medicare" else "standard"
    method = fields.choice(body, "cob_method", COB_METHODS, default_method)
    if (method == "medicare_secondary") != (kind == "medicare"):
        raise InvalidValue("cob_method medicare_secondary is for (and the only one of) medicare plans")
    deductible = fields.mapping(body.get("deductible_cents"), "deductible_cents")
    oop = fields.mapping(body.get("oop_max_cents"), "oop_max_cents")
    ded_ind, ded_fam = fields.cents(deductible, "individual"), fields.cents(deductible, "family")
    oop_ind, oop_fam = fields.cents(oop, "individual"), fields.cents(oop, "family")
    if ded_fam < ded_ind or oop_fam < oop_ind:
        raise InvalidValue("a family amount is below the individual amount")
    if oop_ind < ded_ind or oop_fam < ded_fam:
        raise InvalidValue("the out-of-pocket maximum is below the deductible (the deductible counts toward it)")
    raw_categories = fields.mapping(body.get("categories"), "categories")
    if not 1 <= len(raw_categories) <= MAX_CATEGORIES:
        raise InvalidValue("categories must name 1..%d service categories" % MAX_CATEGORIES)
    categories: dict[str, Category] = {}
    for name in sorted(raw_categories, key=str):
        raw = fields.mapping(raw_categories[name], "category %r" % name)
        categories[fields.code(name, "category")] = Category(
            copay_cents=fields.cents(raw, "copay_cents", 0),
            coinsurance_bp=fields.count(raw, "coinsurance_bp", 0, fields.BASIS_POINTS, 0),
            deductible_applies=fields.flag(raw, "deductible_applies", True),
            prior_auth=fields.flag(raw, "prior_auth", False),
        )
    raw_buckets = body.get("buckets", [])
    if not isinstance(raw_buckets, list) or len(raw_buckets) > MAX_BUCKETS:
        raise MalformedTx("buckets must be a list of at most %d limits" % MAX_BUCKETS)
    buckets = []
    for n, raw in enumerate(raw_buckets):
        raw = fields.mapping(raw, "bucket %d" % n)
        bucket_id = fields.code(raw.get("bucket_id"), "bucket_id")
        names = raw.get("categories")
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_CATEGORIES:
            raise InvalidValue("bucket %s needs a list of categories" % bucket_id)
        names = [fields.code(c, "bucket category") for c in names]
        if len(set(names)) != len(names) or any(c not in categories for c in names):
            raise InvalidValue("bucket %s lists a repeated or unknown category" % bucket_id)
        unit = fields.choice(raw, "unit", UNITS)
        limit = fields.count(raw, "limit", 0, MAX_VISITS if unit == "visits" else fields.MAX_CENTS)
        pool = raw.get("pool")
        buckets.append(Bucket(bucket_id, tuple(sorted(names)), unit, limit, fields.flag(raw, "hard", True),
                              None if pool is None else fields.code(pool, "pool")))
    if len({b.bucket_id for b in buckets}) != len(buckets):
        raise InvalidValue("a bucket id is repeated")
    return PlanDesign(payer, plan_id, kind, fields.flag(body, "cob_provision", True), method,
                      ded_ind, ded_fam, oop_ind, oop_fam, categories, tuple(buckets))


def to_record(plan: PlanDesign, height: int) -> dict[str, Any]:
    return {
        "payer": plan.payer, "plan_id": plan.plan_id, "kind": plan.kind,
        "cob_provision": plan.cob_provision, "cob_method": plan.cob_method,
        "deductible_cents": {"individual": plan.deductible_individual, "family": plan.deductible_family},
        "oop_max_cents": {"individual": plan.oop_individual, "family": plan.oop_family},
        "categories": {name: {"copay_cents": c.copay_cents, "coinsurance_bp": c.coinsurance_bp,
                              "deductible_applies": c.deductible_applies, "prior_auth": c.prior_auth}
                       for name, c in sorted(plan.categories.items())},
        "buckets": [{"bucket_id": b.bucket_id, "categories": list(b.categories), "unit": b.unit,
                     "limit": b.limit, "hard": b.hard, "pool": b.pool} for b in plan.buckets],
        "height": height,
    }


def load_plan(state: StateView, payer: str, plan_id: str) -> PlanDesign:
    """The registered design. Raises NotFound."""
    record = state.get(plan_key(payer, plan_id))
    if record is None:
        raise NotFound("no plan %s of payer %s" % (plan_id, payer))
    return parse_plan(payer, record)


@REGISTRY.register("benefit_plan_register", roles={"payer"})
def handle_plan_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register the sender payer's plan design (immutable: a new design is a new plan id).

    Raises MalformedTx, InvalidValue (see `parse_plan`), AlreadyExists.
    """
    payer = sender_account(state, tx)["org"]
    plan = parse_plan(payer, tx.body)
    if state.exists(plan_key(payer, plan.plan_id)):
        raise AlreadyExists("plan %s is registered" % plan.plan_id)
    state.put(plan_key(payer, plan.plan_id), to_record(plan, ctx.height))
    state.emit("benefit_plan_registered", payer=payer, plan_id=plan.plan_id)
