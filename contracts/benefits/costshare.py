"""The member's cost share for one line, as if the plan were primary (pure).

Order, as plans adjudicate: deductible first (when the category applies it),
then the copay, then coinsurance on what is left; the total is capped at the
out-of-pocket maximum still remaining (the deductible counts toward it). When
the cap bites, coinsurance is forgiven first, then the copay, then the
deductible. Coinsurance is rounded half away from zero to the cent, once per
line (METHODS conventions).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.rounding import divide_half_up

from contracts.benefits import fields
from contracts.benefits.design import Category


@dataclass(frozen=True)
class Accumulated:
    """What a member has met this benefit year under one plan (embedded family:
    an individual's remaining amount is the smaller of the two)."""

    deductible_individual: int
    deductible_family: int
    oop_individual: int
    oop_family: int


@dataclass(frozen=True)
class Limits:
    deductible_individual: int
    deductible_family: int
    oop_individual: int
    oop_family: int


@dataclass(frozen=True)
class CostShare:
    allowed: int
    deductible: int
    copay: int
    coinsurance: int

    @property
    def member(self) -> int:
        return self.deductible + self.copay + self.coinsurance

    @property
    def plan_pays(self) -> int:
        return self.allowed - self.member


def deductible_remaining(limits: Limits, met: Accumulated) -> int:
    return max(0, min(limits.deductible_individual - met.deductible_individual,
                      limits.deductible_family - met.deductible_family))


def oop_remaining(limits: Limits, met: Accumulated) -> int:
    return max(0, min(limits.oop_individual - met.oop_individual, limits.oop_family - met.oop_family))


def cost_share(allowed: int, category: Category, limits: Limits, met: Accumulated) -> CostShare:
    """The member's share of `allowed` cents and its parts. Never negative, never
    above `allowed`, never above the remaining out-of-pocket maximum."""
    deductible = min(allowed, deductible_remaining(limits, met)) if category.deductible_applies else 0
    rest = allowed - deductible
    copay = min(rest, category.copay_cents)
    coinsurance = divide_half_up((rest - copay) * category.coinsurance_bp, fields.BASIS_POINTS)
    cap = oop_remaining(limits, met)
    deductible = min(deductible, cap)
    copay = min(copay, cap - deductible)
    coinsurance = min(coinsurance, cap - deductible - copay)
    return CostShare(allowed, deductible, copay, coinsurance)
