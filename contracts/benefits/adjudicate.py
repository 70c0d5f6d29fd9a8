"""Adjudication of one claim line by a member's payer.

Why: the payer's decision (allowed amount, member cost share, payment, or a
denial with its reason) and every accumulator it touches — the member's and
family's deductible and out-of-pocket met, plan and pooled limit buckets, the
authorisation's units — change together in one transaction, so all payers see
one consistent picture (METHODS §1.8).

Sequence, all checks before the first write:

1. the body is well formed; the plan and the member's coverage exist (else
   NotFound); the (claim id, line) is new at this payer (else AlreadyExists);
   the same service line (duplicate key: member, rendering and billing NPI,
   date, procedure + modifiers, units, place of service) was not paid by
   this plan before (else Duplicate; a denied line may be resubmitted under a
   new claim id, e.g. once the authorisation is approved);
2. coverage not active on the date → denied (CARC 26 before / 27 after);
   category not covered → denied (CARC 96);
3. coordination: order the member's coverages (`order.order_of_benefits`);
   a payer after rank 1 needs every earlier payer's adjudication of the same
   service line recorded first (else Conflict, nothing written);
4. prior authorisation where the category needs it → else denied (197/15/198);
5. limit buckets: a hard visit limit reached → denied (CARC 119); a hard dollar
   limit caps the allowed amount; past a soft threshold (Medicare KX) a line
   without the KX modifier is denied;
6. cost share as if primary (`costshare.cost_share`); a secondary pays by its
   COB method (`secondary`), credits its deductible as if it had paid first
   (NAIC MDL-120 §7) and its OOP with what the member is left to pay, never
   past its OOP maximum (it pays more instead).

A denied line is recorded (as a payer's remittance would) and changes no
accumulator. CARC codes are the X12 claim adjustment reason codes [verify
against the current code list].

Keys: `benefits/adj/<payer>/<claim_id>/<line>` → the adjudication record;
`benefits/adjdup/<payer>/<plan>/<sha256 hex>` → [claim_id, line];
`benefits/adjlog/<member>` authenticated list of [payer, plan_id, claim_id, line].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ledger import codec
from ledger.hashing import sha256
from ledger.types import Tx

from contracts import costs
from contracts.calendar import year_of
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, Conflict, Duplicate, InvalidValue
from contracts.governance import sender_account
from contracts.state import StateView, key

from contracts.benefits import accumulators, fields, secondary
from contracts.benefits.costshare import CostShare, cost_share, oop_remaining
from contracts.benefits.coverage import Coverage, load_coverage, member_coverages
from contracts.benefits.design import Bucket, PlanDesign, load_plan
from contracts.benefits.order import Ranked, order_of_benefits
from contracts.benefits.priorauth import auth_key

MAX_LINE = 999
MAX_UNITS = 10_000
KX = "KX"


@dataclass(frozen=True)
class ClaimLine:
    claim_id: str
    line: int
    member: str
    plan_id: str
    service_date: int
    category: str
    hcpcs: str
    modifiers: tuple[str, ...]
    units: int
    billed_cents: int
    allowed_cents: int
    rendering_npi: str
    billing_npi: str
    place_of_service: str
    auth_id: str | None


@dataclass(frozen=True)
class Outcome:
    status: str  # "paid" or "denied"
    reason: str | None = None
    carc: str | None = None
    rank: int = 1
    cob_rule: str = "only_coverage"
    allowed: int = 0
    prior_paid: int = 0
    prior_allowed: int = 0
    prior: tuple[tuple[str, str, str, int], ...] = ()
    normal: CostShare | None = None
    paid: int = 0
    member: int = 0
    deductible_credit: int = 0
    buckets: tuple[tuple[Bucket, int], ...] = ()
    pools: tuple[str, ...] = ()
    kx_threshold: bool = False


def parse_line(body: dict[str, Any]) -> ClaimLine:
    """Raises MalformedTx or InvalidValue (negative amounts, allowed above billed, bad dates/codes)."""
    billed, allowed = fields.cents(body, "billed_cents"), fields.cents(body, "allowed_cents")
    if allowed > billed:
        raise InvalidValue("allowed_cents exceeds billed_cents")
    auth_id = None if body.get("auth_id") is None else fields.ident(body, "auth_id")
    return ClaimLine(
        claim_id=fields.ident(body, "claim_id"), line=fields.count(body, "line", 0, MAX_LINE, 0),
        member=fields.member(body), plan_id=fields.ident(body, "plan_id"),
        service_date=fields.date(body, "service_date"), category=fields.code(body.get("category"), "category"),
        hcpcs=costs.check_hcpcs(body.get("hcpcs")), modifiers=tuple(fields.modifiers(body)),
        units=fields.count(body, "units", 1, MAX_UNITS, 1), billed_cents=billed, allowed_cents=allowed,
        rendering_npi=costs.check_npi(body.get("rendering_npi"), "rendering_npi"),
        billing_npi=costs.check_npi(body.get("billing_npi"), "billing_npi"),
        place_of_service=fields.place_of_service(body),
        auth_id=auth_id,
    )


def adjudication_key(payer: str, claim_id: str, line: int) -> bytes:
    return key("benefits", "adj", payer, claim_id, line)


def duplicate_digest(line: ClaimLine) -> bytes:
    """METHODS §1.8 duplicate key: member, NPIs, date, code + modifiers, units, place of service."""
    return sha256(codec.encode([line.member, line.rendering_npi, line.billing_npi, line.service_date,
                                line.hcpcs, list(line.modifiers), line.units, line.place_of_service]))


def duplicate_key(payer: str, plan_id: str, digest: bytes) -> bytes:
    return key("benefits", "adjdup", payer, plan_id, digest)


def log_key(member: str) -> bytes:
    return key("benefits", "adjlog", member)


def _denied(reason: str, carc: str, **context: Any) -> Outcome:
    return Outcome("denied", reason, carc, **context)


def _prior_adjudications(state: StateView, ranked: tuple[Ranked, ...], mine: Ranked,
                         digest: bytes) -> list[dict[str, Any]]:
    """Earlier payers' adjudications of this service line. Raises Conflict if one is missing."""
    found = []
    for earlier in ranked:
        if earlier.rank >= mine.rank:
            continue
        where = state.get(duplicate_key(earlier.payer, earlier.plan_id, digest))
        if where is None:
            raise Conflict("rank %d needs the adjudication by %s/%s (rank %d) recorded first"
                           % (mine.rank, earlier.payer, earlier.plan_id, earlier.rank))
        found.append(state.get(adjudication_key(earlier.payer, where[0], where[1])))
    return found


def _authorisation_problem(state: StateView, coverage: Coverage, line: ClaimLine) -> tuple[str, str] | None:
    """(reason, CARC) when the line lacks a valid authorisation, else None."""
    if line.auth_id is None:
        return ("prior_auth_missing", "197")
    record = state.get(auth_key(coverage.payer, line.auth_id))
    if record is None or (record["member"], record["plan_id"], record["category"]) != \
            (line.member, line.plan_id, line.category):
        return ("prior_auth_invalid", "15")
    if record["status"] != "approved":
        return ("prior_auth_not_approved", "15")
    if not record["valid_from"] <= line.service_date <= record["valid_to"]:
        return ("prior_auth_expired", "15")
    if record["units_used"] + line.units > record["units_approved"]:
        return ("prior_auth_units_exceeded", "198")
    return None


@dataclass(frozen=True)
class LimitCheck:
    """The limits' verdict on a line: a denial, or the payable allowed amount,
    what each bucket counts, and whether a soft threshold was passed (with KX)."""

    denial: tuple[str, str] | None
    allowed: int = 0
    increments: tuple[tuple[Bucket, int], ...] = ()
    kx_threshold: bool = False


def check_limits(state: StateView, plan: PlanDesign, coverage: Coverage, line: ClaimLine,
                 counted_pools: set[str]) -> LimitCheck:
    """Check every bucket over the line's category. A pool an earlier payer already
    counted for this service line is checked but not counted again."""
    year = year_of(line.service_date)
    allowed = line.allowed_cents
    increments: list[tuple[Bucket, int]] = []
    kx = False
    for bucket in plan.buckets_for(line.category):
        used = accumulators.bucket_used(state, coverage, year, bucket)
        already = bucket.pool is not None and bucket.pool in counted_pools
        amount = line.units if bucket.unit == "visits" else allowed
        before = used - amount if already else used
        if before + amount > bucket.limit:
            if not bucket.hard:
                if KX not in line.modifiers:  # SSA §1833(g)(5): above the threshold only with KX
                    return LimitCheck(("threshold_without_kx", "96"))
                kx = True
            elif bucket.unit == "visits" or before >= bucket.limit:
                return LimitCheck(("benefit_limit_reached", "119"))
            else:
                allowed = amount = bucket.limit - before  # CARC 119 on the rest
        increments.append((bucket, 0 if already else amount))
    # a dollar cap found late lowers what earlier dollar buckets count
    final = tuple((b, allowed if b.unit == "cents" and inc else inc) for b, inc in increments)
    return LimitCheck(None, allowed, final, kx)


def decide(state: StateView, plan: PlanDesign, coverage: Coverage, line: ClaimLine, digest: bytes) -> Outcome:
    """The adjudication outcome, reading state only. Raises Conflict (earlier payer missing)."""
    if not coverage.active_on(line.service_date):
        before = line.service_date < coverage.coverage_start
        return _denied("coverage_not_active", "26" if before else "27")
    category = plan.categories.get(line.category)
    if category is None:
        return _denied("not_covered", "96")
    ranked = order_of_benefits(member_coverages(state, line.member), line.service_date)
    mine = [r for r in ranked if (r.payer, r.plan_id) == coverage.ref][0]
    priors = _prior_adjudications(state, ranked, mine, digest)
    paid_priors = [p for p in priors if p["status"] == "paid"]
    context: dict[str, Any] = dict(
        rank=mine.rank, cob_rule=mine.rule,
        prior=tuple((p["payer"], p["plan_id"], p["claim_id"], p["line"]) for p in priors),
        prior_paid=sum(p["paid_cents"] for p in paid_priors),
        prior_allowed=max([p["allowed_cents"] for p in paid_priors] or [0]))
    if category.prior_auth:
        problem = _authorisation_problem(state, coverage, line)
        if problem is not None:
            return _denied(*problem, **context)
    counted = {pool for p in paid_priors for pool in p["pools_counted"]}
    limits = check_limits(state, plan, coverage, line, counted)
    if limits.denial is not None:
        return _denied(*limits.denial, **context)
    allowed, increments = limits.allowed, limits.increments
    year = year_of(line.service_date)
    limit_values = accumulators.limits_of(plan)
    met = accumulators.accumulated(state, coverage, year)
    normal = cost_share(allowed, category, limit_values, met)
    outcome = Outcome("paid", allowed=allowed, normal=normal, deductible_credit=normal.deductible,
                      buckets=increments, kx_threshold=limits.kx_threshold,
                      pools=tuple(sorted({b.pool for b, inc in increments if b.pool is not None and inc})),
                      **context)
    if mine.rank == 1 and mine.tie_group > 1 and mine.rule == "equal_share":
        paid = secondary.equal_share(allowed, mine.tie_group, normal.plan_pays)
        return replace(outcome, paid=paid, member=min(normal.member, allowed - paid))
    if not priors:
        return replace(outcome, paid=normal.plan_pays, member=normal.member)
    allowable = max(allowed, outcome.prior_allowed)  # NAIC MDL-120 §3: the highest allowed is the allowable expense
    prior_paid = min(outcome.prior_paid, allowable)
    paid = secondary.secondary_payment(plan.cob_method, allowable, prior_paid, normal.plan_pays,
                                       line.billed_cents, outcome.prior_allowed, allowed)
    member = allowable - prior_paid - paid
    cap = oop_remaining(limit_values, met)
    if member > cap:  # the plan's OOP maximum protects its member as secondary too
        paid, member = paid + member - cap, cap
    return replace(outcome, paid=paid, member=member)


def _record(payer: str, line: ClaimLine, outcome: Outcome, height: int) -> dict[str, Any]:
    normal = outcome.normal
    return {
        "payer": payer, "plan_id": line.plan_id, "claim_id": line.claim_id, "line": line.line,
        "member": line.member, "service_date": line.service_date, "category": line.category,
        "hcpcs": line.hcpcs, "modifiers": list(line.modifiers), "units": line.units,
        "billed_cents": line.billed_cents, "submitted_allowed_cents": line.allowed_cents,
        "allowed_cents": outcome.allowed, "status": outcome.status, "reason": outcome.reason, "carc": outcome.carc,
        "rank": outcome.rank, "cob_rule": outcome.cob_rule,
        "prior_adjudications": [list(p) for p in outcome.prior], "prior_paid_cents": outcome.prior_paid,
        "normal_benefit_cents": normal.plan_pays if normal else 0,
        "deductible_cents": normal.deductible if normal else 0, "copay_cents": normal.copay if normal else 0,
        "coinsurance_cents": normal.coinsurance if normal else 0,
        "paid_cents": outcome.paid, "member_cents": outcome.member,
        "pools_counted": list(outcome.pools), "kx_threshold": outcome.kx_threshold,
        "auth_id": line.auth_id, "rendering_npi": line.rendering_npi, "billing_npi": line.billing_npi,
        "place_of_service": line.place_of_service, "height": height,
    }


@REGISTRY.register("benefit_adjudicate", roles={"payer"})
def handle_adjudicate(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Adjudicate one claim line under one of the sender's plans (see the module docstring).

    Body: claim_id, line, member, plan_id, service_date, category, hcpcs,
    modifiers?, units, billed_cents, allowed_cents, rendering_npi, billing_npi,
    place_of_service, auth_id?.
    Raises MalformedTx, InvalidValue, NotFound (plan, coverage), AlreadyExists,
    Duplicate, Conflict (an earlier payer has not adjudicated the line).
    """
    payer = sender_account(state, tx)["org"]
    line = parse_line(tx.body)
    coverage = load_coverage(state, line.member, payer, line.plan_id)
    plan = load_plan(state, payer, line.plan_id)
    if state.exists(adjudication_key(payer, line.claim_id, line.line)):
        raise AlreadyExists("claim %s line %d is adjudicated" % (line.claim_id, line.line))
    digest = duplicate_digest(line)
    earlier = state.get(duplicate_key(payer, line.plan_id, digest))
    if earlier is not None and state.get(adjudication_key(payer, earlier[0], earlier[1]))["status"] == "paid":
        raise Duplicate("exact duplicate of claim %s line %d" % tuple(earlier))  # a denied line may be resubmitted
    outcome = decide(state, plan, coverage, line, digest)
    # -- every check passed: write
    state.put(adjudication_key(payer, line.claim_id, line.line), _record(payer, line, outcome, ctx.height))
    state.append_entry(log_key(line.member), [payer, line.plan_id, line.claim_id, line.line])
    state.put(duplicate_key(payer, line.plan_id, digest), [line.claim_id, line.line])
    if outcome.status == "paid":
        year = year_of(line.service_date)
        accumulators.credit(state, coverage, year, outcome.deductible_credit, outcome.member)
        for bucket, amount in outcome.buckets:
            if amount:
                accumulators.count_bucket(state, coverage, year, bucket, amount)
        if line.auth_id is not None and plan.categories[line.category].prior_auth:
            k = auth_key(payer, line.auth_id)
            record = state.get(k)
            state.put(k, dict(record, units_used=record["units_used"] + line.units))
    state.emit("benefit_adjudicated", payer=payer, claim_id=line.claim_id, line=line.line,
               status=outcome.status, reason=outcome.reason, paid_cents=outcome.paid,
               member_cents=outcome.member)
