"""Order of benefit determination: which payer is primary, and by which rule.

Pure functions over `Coverage` facts. `compare(a, b, day, others)` applies the
first rule that decides between two coverages, in this order:

Federal rules first (they override plan contracts):
  * Medicaid is the payer of last resort (42 U.S.C. 1396a(a)(25)).
  * Medicare Secondary Payer, 42 U.S.C. 1395y(b) / 42 CFR 411:
    - ESRD: a group health plan of any size (COBRA included) is primary during
      the 30-month coordination period (§411.162(b)-(c)), Medicare after it;
    - working aged: a group health plan covering the person through the current
      employment of self or spouse, employer with 20+ employees, is primary
      (§411.170-.172);
    - disability: a large group health plan (100+ employees) through the current
      employment of self or a family member is primary (§411.200-.206, §411.101);
    - otherwise (retiree, COBRA, small employer) Medicare is primary.
NAIC Coordination of Benefits Model Regulation (MDL-120, Oct 2013) §6:
  1. a plan without a COB provision is primary (both without: both primary);
  2. non-dependent before dependent — reversed when Medicare sits between them
     (§6 D(1)(b): Medicare secondary to the dependent plan, primary to the other);
  3. dependent child: parents apart → court decree, then (joint decree or none
     with birthday) birthday rule / custody order; together → birthday rule
     (month and day only), same birthday → the plan covering the parent longer;
  4. active before inactive (retired, laid off) employee;
  5. non-continuation before COBRA/state continuation (CareLedger: its own rule
     after active/inactive — METHODS conventions);
  6. longer coverage before shorter;
  7. none decides: the plans share the allowable expense equally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from contracts.calendar import first_of_month_after

from contracts.benefits.coverage import Coverage

WORKING_AGED_MIN_EMPLOYEES = 20  # 42 U.S.C. 1395y(b)(1)(A)(ii); 42 CFR 411.170
LGHP_MIN_EMPLOYEES = 100  # 42 CFR 411.101; IRC §5000(b)(2)
ESRD_COORDINATION_MONTHS = 30  # 42 U.S.C. 1395y(b)(1)(C); 42 CFR 411.162 (services from 1997-08-05)
CUSTODY_ORDER = ("custodial", "custodial_spouse", "noncustodial", "noncustodial_spouse")

TIE_RULES = ("no_cob_provision", "equal_share")


@dataclass(frozen=True)
class Decision:
    """The outcome of comparing two coverages: `first` pays before `second`,
    unless `tie` (both pay as primary: no COB provision, or equal shares)."""

    first: tuple[str, str]
    second: tuple[str, str]
    rule: str
    tie: bool = False


@dataclass(frozen=True)
class Ranked:
    """One coverage's place in the order: rank 1 is primary; `rule` decided the
    place (against the plan ranked just before it; for a primary, against the next)."""

    payer: str
    plan_id: str
    rank: int
    rule: str
    tie_group: int  # how many plans share this rank


def _decided(winner: Coverage, loser: Coverage, rule: str) -> Decision:
    return Decision(winner.ref, loser.ref, rule)


def _tie(a: Coverage, b: Coverage, rule: str) -> Decision:
    first, second = sorted((a.ref, b.ref))
    return Decision(first, second, rule, tie=True)


def esrd_period_end(medicare: Coverage) -> int:
    """The first day after the 30-month coordination period (it starts with the
    month of the ESRD-based entitlement date recorded on the coverage)."""
    start = medicare.esrd_coordination_start
    if start is None:
        raise ValueError("an ESRD coverage without its coordination start")
    return first_of_month_after(start, ESRD_COORDINATION_MONTHS)


def _medicare_secondary_payer(medicare: Coverage, plan: Coverage, day: int) -> Decision:
    """42 CFR 411: is the group health plan primary to Medicare on `day`?"""
    if medicare.medicare_reason == "esrd":
        if day < esrd_period_end(medicare):
            return _decided(plan, medicare, "msp_esrd_coordination_period")
        return _decided(medicare, plan, "msp_esrd_after_coordination_period")
    current = plan.employment == "active" and not plan.cobra
    if (medicare.medicare_reason == "age" and current and plan.relationship in ("self", "spouse")
            and plan.employer_size >= WORKING_AGED_MIN_EMPLOYEES):
        return _decided(plan, medicare, "msp_working_aged")
    if medicare.medicare_reason == "disability" and current and plan.employer_size >= LGHP_MIN_EMPLOYEES:
        return _decided(plan, medicare, "msp_disability_lghp")
    return _decided(medicare, plan, "msp_medicare_primary")


def _federal(a: Coverage, b: Coverage, day: int) -> Decision | None:
    if (a.plan_kind == "medicaid") != (b.plan_kind == "medicaid"):
        return _decided(b, a, "medicaid_last_resort") if a.plan_kind == "medicaid" else _decided(a, b, "medicaid_last_resort")
    if a.plan_kind == "medicare" and b.plan_kind == "commercial":
        return _medicare_secondary_payer(a, b, day)
    if b.plan_kind == "medicare" and a.plan_kind == "commercial":
        return _medicare_secondary_payer(b, a, day)
    return None


def _dependent_child(a: Coverage, b: Coverage) -> Decision | None:
    """NAIC §6 D(2): a dependent child covered by both parents' plans."""
    if "apart" in (a.parents, b.parents):
        a_resp, b_resp = a.court_decree == "responsible", b.court_decree == "responsible"
        if a_resp != b_resp:
            return _decided(a, b, "court_decree") if a_resp else _decided(b, a, "court_decree")
        joint = a_resp or "joint" in (a.court_decree, b.court_decree)
        if not joint and a.custody is not None and b.custody is not None and a.custody != b.custody:
            a_pos, b_pos = CUSTODY_ORDER.index(a.custody), CUSTODY_ORDER.index(b.custody)
            return _decided(a, b, "custodial_parent") if a_pos < b_pos else _decided(b, a, "custodial_parent")
    if a.subscriber_birthday != b.subscriber_birthday:
        earlier = a.subscriber_birthday < b.subscriber_birthday
        return _decided(a, b, "birthday_rule") if earlier else _decided(b, a, "birthday_rule")
    if a.subscriber_since != b.subscriber_since:
        longer = a.subscriber_since < b.subscriber_since
        return _decided(a, b, "birthday_rule_longer_parent_coverage") if longer else \
            _decided(b, a, "birthday_rule_longer_parent_coverage")
    return None


def _medicare_exception(dependent: Coverage, other: Coverage, day: int, others: Sequence[Coverage]) -> bool:
    """NAIC §6 D(1)(b): Medicare secondary to the dependent plan and primary to the other."""
    for medicare in others:
        if medicare.plan_kind != "medicare" or not medicare.active_on(day):
            continue
        if (_medicare_secondary_payer(medicare, dependent, day).first == dependent.ref
                and _medicare_secondary_payer(medicare, other, day).first == medicare.ref):
            return True
    return False


def compare(a: Coverage, b: Coverage, day: int, others: Sequence[Coverage] = ()) -> Decision:
    """Which of two coverages of one member pays first on `day`, and the rule.

    `others` are the member's other coverages (for the Medicare exception to
    rule 2). Raises nothing: every pair is decided, possibly as a tie.
    """
    federal = _federal(a, b, day)
    if federal is not None:
        return federal
    if not a.cob_provision or not b.cob_provision:  # rule 1
        if a.cob_provision == b.cob_provision:
            return _tie(a, b, "no_cob_provision")
        return _decided(b, a, "no_cob_provision") if a.cob_provision else _decided(a, b, "no_cob_provision")
    a_dep, b_dep = a.relationship != "self", b.relationship != "self"
    if a_dep != b_dep:  # rule 2
        dependent, other = (a, b) if a_dep else (b, a)
        if _medicare_exception(dependent, other, day, others):
            return _decided(dependent, other, "non_dependent_dependent_medicare_exception")
        return _decided(other, dependent, "non_dependent_dependent")
    if a.relationship == "child" and b.relationship == "child":  # rule 3
        decided = _dependent_child(a, b)
        if decided is not None:
            return decided
    a_active, b_active = a.employment == "active", b.employment == "active"
    a_inactive, b_inactive = a.employment in ("retired", "laid_off"), b.employment in ("retired", "laid_off")
    if a_active and b_inactive:  # rule 4
        return _decided(a, b, "active_inactive")
    if b_active and a_inactive:
        return _decided(b, a, "active_inactive")
    if a.cobra != b.cobra:  # rule 5
        return _decided(b, a, "cobra") if a.cobra else _decided(a, b, "cobra")
    if a.coverage_start != b.coverage_start:  # rule 6
        longer = a.coverage_start < b.coverage_start
        return _decided(a, b, "longer_coverage") if longer else _decided(b, a, "longer_coverage")
    return _tie(a, b, "equal_share")  # rule 7


def order_of_benefits(coverages: Sequence[Coverage], day: int) -> tuple[Ranked, ...]:
    """Rank the member's coverages active on `day` (rank 1 = primary).

    Repeatedly takes the plans no remaining plan beats; plans tied with each
    other share a rank. Pairwise rules need not be transitive: if every
    remaining plan is beaten (a cycle), the one with the most wins goes first,
    then the lowest (payer, plan id) — deterministic, and recorded as
    rule "order_cycle".
    """
    remaining = sorted((c for c in coverages if c.active_on(day)), key=lambda c: c.ref)
    ranked: list[Ranked] = []
    previous: Coverage | None = None
    rank = 0
    while remaining:
        decisions = {(x.ref, y.ref): compare(x, y, day, coverages) for x in remaining for y in remaining if x.ref < y.ref}

        def beaten(c: Coverage) -> bool:
            return any(not d.tie and d.second == c.ref for pair, d in decisions.items() if c.ref in pair)

        top = [c for c in remaining if not beaten(c)]
        cycle = not top
        if cycle:
            wins = {c.ref: sum(1 for d in decisions.values() if not d.tie and d.first == c.ref) for c in remaining}
            top = [sorted(remaining, key=lambda c: (-wins[c.ref], c.ref))[0]]
        rank += 1
        for c in top:
            if cycle:
                rule = "order_cycle"
            elif previous is not None:
                rule = compare(previous, c, day, coverages).rule
            elif len(top) > 1:
                rule = compare(top[0], top[1], day, coverages).rule
            elif len(remaining) > 1:
                rule = compare(c, [r for r in remaining if r.ref != c.ref][0], day, coverages).rule
            else:
                rule = "only_coverage"
            ranked.append(Ranked(c.payer, c.plan_id, rank, rule, len(top)))
        previous = top[0]
        remaining = [c for c in remaining if c not in top]
    return tuple(ranked)
