"""What a secondary payer pays: pure functions with the rules' worked cases.

Notation (METHODS §1.7): A = allowable expense, P = what earlier payers paid,
N = this plan's normal benefit for the line, computed as if it were primary.
All amounts integer cents; no rounding is needed (only sums and minima).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import InvalidValue
from contracts.rounding import divide_half_up


def _check(*amounts: int) -> None:
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in amounts):
        raise InvalidValue("COB amounts are non-negative integer cents")


def standard_cob(allowable: int, prior_paid: int, normal_benefit: int) -> int:
    """NAIC MDL-120 §7: the secondary applies its normal benefit to the allowable
    expense left unpaid, so primary + secondary never exceeds A: min(N, A − P).

    Worked case: A = $100, primary paid $80, N = $80 → pays $20, member owes $0.
    Raises InvalidValue on a negative amount.
    """
    _check(allowable, prior_paid, normal_benefit)
    return min(normal_benefit, max(0, allowable - prior_paid))


def carve_out(allowable: int, prior_paid: int, normal_benefit: int) -> int:
    """Carve-out (exclusion; a plan design, not an NAIC rule): the normal benefit
    less the primary payment, max(0, N − P), and never beyond A − P.

    Worked case: A = $100, P = $80, N = $80 → pays $0; the member keeps the $20.
    Raises InvalidValue.
    """
    _check(allowable, prior_paid, normal_benefit)
    return max(0, min(normal_benefit - prior_paid, allowable - prior_paid))


def non_duplication(allowable: int, prior_paid: int, normal_benefit: int) -> int:
    """Non-duplication: pays only what its own benefit exceeds the primary's
    payment by — in the definitions METHODS §1.7 follows this equals carve-out.

    Worked case: A = $100, P = $50, N = $80 → pays $30; member owes $20.
    Raises InvalidValue.
    """
    return carve_out(allowable, prior_paid, normal_benefit)


def equal_share(allowable: int, plans: int, normal_benefit: int) -> int:
    """NAIC §6 rule 7 (no rule decides): the plans share A equally, and a plan
    never pays more than it would as primary: min(N, A / plans), rounded half
    away from zero to the cent. Raises InvalidValue."""
    _check(allowable, normal_benefit)
    if plans < 1:
        raise InvalidValue("equal share among no plans")
    return min(normal_benefit, divide_half_up(allowable, plans))


@dataclass(frozen=True)
class MedicareLine:
    """Inputs of 42 CFR 411.33(a) for a fee-schedule or reasonable-charge service."""

    charge: int  # actual charge, or the amount the supplier must accept as payment in full if less
    primary_paid: int
    medicare_normal: int  # what Medicare would pay with no primary payer
    medicare_allowed: int  # fee schedule / reasonable charge, before deductible and coinsurance
    primary_allowed: int  # the primary's allowable charge, before its deductible and coinsurance
    accepted_as_full: bool = False  # §411.32(b): provider took the primary payment in full


def medicare_secondary_fee_schedule(line: MedicareLine) -> int:
    """42 CFR 411.33(a): the lowest of (1) charge − primary payment; (2) Medicare's
    normal payment; (3) the higher of Medicare's and the primary's allowed − the
    primary payment. Nothing when the provider accepted the primary payment as
    payment in full (§411.32(b)).

    Worked case §411.33(b): charge $175, primary allowed $150 paid $120, fee
    schedule $125, deductible met (0.80 × $125 = $100) → min($55, $100, $30) = $30.
    Raises InvalidValue.
    """
    _check(line.charge, line.primary_paid, line.medicare_normal, line.medicare_allowed, line.primary_allowed)
    if line.accepted_as_full:
        return 0
    return max(0, min(line.charge - line.primary_paid, line.medicare_normal,
                      max(line.medicare_allowed, line.primary_allowed) - line.primary_paid))


def medicare_secondary_other_basis(gross_medicare: int, deductible_coinsurance: int,
                                   charges: int, primary_paid: int) -> int:
    """42 CFR 411.33(e) (e.g. inpatient PPS): the lowest of (1) gross Medicare
    amount − Medicare deductible and coinsurance; (2) gross amount − primary
    payment; (3) charges − primary payment; (4) charges − deductible and coinsurance.

    Worked case §411.33(f): charges $2,800, primary paid $2,360, gross Medicare
    $2,700, deductible $520 → min($2,180, $340, $440, $2,280) = $340.
    Raises InvalidValue.
    """
    _check(gross_medicare, deductible_coinsurance, charges, primary_paid)
    return max(0, min(gross_medicare - deductible_coinsurance, gross_medicare - primary_paid,
                      charges - primary_paid, charges - deductible_coinsurance))


def secondary_payment(method: str, allowable: int, prior_paid: int, normal_benefit: int,
                      charge: int, prior_allowed: int, own_allowed: int) -> int:
    """Dispatch on the plan's `cob_method`. Raises InvalidValue (unknown method or bad amount)."""
    if method == "standard":
        return standard_cob(allowable, prior_paid, normal_benefit)
    if method == "carve_out":
        return carve_out(allowable, prior_paid, normal_benefit)
    if method == "non_duplication":
        return non_duplication(allowable, prior_paid, normal_benefit)
    if method == "medicare_secondary":
        return medicare_secondary_fee_schedule(MedicareLine(
            charge=charge, primary_paid=prior_paid, medicare_normal=normal_benefit,
            medicare_allowed=own_allowed, primary_allowed=prior_allowed))
    raise InvalidValue("unknown COB method %r" % method)
