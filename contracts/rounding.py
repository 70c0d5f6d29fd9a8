"""Integer rounding of exact amounts: the one place for each rounding rule.

Why: every replica must round a Fraction of cents (or of basis points) to the
same integer, without floats, and a payable amount must be rounded by the rule
its program states (METHODS.md conventions table). Two rules are in use and
they differ only for negative halves:

- half away from zero: 2.5 → 3, −2.5 → −3 (payable amounts, settlements, TCOC);
- half up (toward +∞):  2.5 → 3, −2.5 → −2 (basis points, member cost shares,
  whose inputs are never negative).

Ceiling division is here too: the other integer rounding the contracts use.
"""

from __future__ import annotations

from fractions import Fraction


def round_half_away_from_zero(amount: Fraction | int) -> int:
    """Round to the nearest integer, halves away from zero: |n/d| = q + r/d, plus one when 2r ≥ d.

    Raises nothing (an int is returned unchanged).
    """
    magnitude = abs(amount.numerator)
    quotient, remainder = divmod(magnitude, amount.denominator)
    if 2 * remainder >= amount.denominator:
        quotient += 1
    return -quotient if amount.numerator < 0 else quotient


def _floor_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def round_half_up(value: Fraction | int) -> int:
    """⌊value + 1/2⌋: halves toward +∞, so −5/2 → −2. Raises nothing."""
    return _floor_half_up(value.numerator, value.denominator)


def divide_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves up, for amounts that are
    never negative (where half up and half away from zero agree).

    Raises ValueError on a negative numerator or a denominator ≤ 0: a caller bug,
    since the contracts check amounts before they divide.
    """
    if numerator < 0 or denominator <= 0:
        raise ValueError("divide_half_up takes a non-negative numerator and a positive denominator")
    return _floor_half_up(numerator, denominator)


def ceil_div(numerator: int, denominator: int) -> int:
    """⌈numerator / denominator⌉ in integers. Raises ZeroDivisionError when denominator is 0."""
    return -(-numerator // denominator)
