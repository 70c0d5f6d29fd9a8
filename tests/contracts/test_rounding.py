"""contracts.rounding: each rounding rule once, including what it does with negatives."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.rounding import ceil_div, divide_half_up, round_half_away_from_zero, round_half_up


@pytest.mark.parametrize("value, expected", [
    (Fraction(5, 2), 3), (Fraction(-5, 2), -3), (Fraction(7, 2), 4), (Fraction(-7, 2), -4),
    (Fraction(249, 100), 2), (Fraction(-249, 100), -2), (Fraction(251, 100), 3), (Fraction(-251, 100), -3),
    (Fraction(0), 0), (7, 7), (-7, -7),
])
def test_round_half_away_from_zero_sends_halves_away_from_zero_on_both_sides(value, expected):
    assert round_half_away_from_zero(value) == expected


@pytest.mark.parametrize("value, expected", [
    (Fraction(5, 2), 3), (Fraction(-5, 2), -2), (Fraction(7, 2), 4), (Fraction(-7, 2), -3),
    (Fraction(1, 3), 0), (Fraction(-1, 3), 0), (Fraction(2, 3), 1), (Fraction(-2, 3), -1),
    (Fraction(0), 0), (7, 7), (-7, -7),
])
def test_round_half_up_sends_halves_toward_plus_infinity_so_negative_halves_go_up(value, expected):
    assert round_half_up(value) == expected


@pytest.mark.parametrize("numerator, denominator, expected", [
    (5, 2, 3), (4, 3, 1), (5, 3, 2), (0, 7, 0), (10_000, 10_000, 1), (14_999, 10_000, 1), (15_000, 10_000, 2),
])
def test_divide_half_up_rounds_a_non_negative_quotient(numerator, denominator, expected):
    assert divide_half_up(numerator, denominator) == expected


@pytest.mark.parametrize("numerator, denominator", [(-5, 2), (-1, 3), (5, 0), (5, -2), (-5, -2)])
def test_divide_half_up_refuses_a_negative_numerator_or_a_non_positive_denominator(numerator, denominator):
    with pytest.raises(ValueError):
        divide_half_up(numerator, denominator)


@pytest.mark.parametrize("numerator, denominator, expected", [
    (7, 2, 4), (6, 3, 2), (0, 5, 0), (1, 100, 1), (-7, 2, -3), (-6, 3, -2), (-1, 100, 0), (7, -2, -3),
])
def test_ceil_div_rounds_toward_plus_infinity(numerator, denominator, expected):
    assert ceil_div(numerator, denominator) == expected


@given(st.integers(-10**12, 10**12), st.integers(1, 10**6))
def test_the_rules_agree_with_exact_arithmetic(numerator, denominator):
    value = Fraction(numerator, denominator)
    assert round_half_up(value) == math.floor(value + Fraction(1, 2))
    assert round_half_away_from_zero(value) == -round_half_away_from_zero(-value)
    assert abs(round_half_away_from_zero(value) - value) <= Fraction(1, 2)
    assert ceil_div(numerator, denominator) == math.ceil(value)
    if numerator >= 0:
        assert divide_half_up(numerator, denominator) == round_half_up(value) == round_half_away_from_zero(value)
    elif value - math.floor(value) == Fraction(1, 2):  # a negative half: the two rules differ by one
        assert round_half_up(value) == round_half_away_from_zero(value) + 1
