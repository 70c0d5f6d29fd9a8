"""MSSP shared savings/losses: worked cases from shared/domain/METHODS.md §1.1 and the PUFs.

Amounts are cents. Real ACO-years are named by PUF year and ACO id; expected values are
written out as literals so that a regression in the contract cannot hide behind itself.
"""

from dataclasses import FrozenInstanceError
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments.errors import (
    AmountOutOfRangeError,
    InvalidInputError,
    InvalidParameterError,
    MissingInputError,
    PaymentError,
    ReconciliationMismatchError,
    UnknownTrackError,
)
from contracts.payments.mssp import (
    CapOrder,
    DisasterAmount,
    DisasterShare,
    LossLimitBasis,
    MsrOption,
    MsrSource,
    MsspInputs,
    MsspParameters,
    QualityResult,
    QualityRule,
    SettlementStage,
    Track,
    is_high_revenue,
    minimum_savings_rate_for_small_population,
    minimum_savings_rate_from_table,
    parse_track,
    program_parameters,
    round_half_away_from_zero,
    settle,
    settle_interim,
    total_from_per_capita,
    true_up,
)

DOLLAR = 100
PCT = Fraction(1, 100)
PERMILLE = Fraction(1, 1000)


def quality(score: Fraction | int = 1, met: bool = True, alternative: bool = False) -> QualityResult:
    return QualityResult(score=Fraction(score), met_standard=met, met_alternative_standard=alternative)


def inputs(
    benchmark_dollars: int,
    expenditure_dollars: int,
    *,
    beneficiaries: int = 60_000,
    q: QualityResult | None = None,
    aco_id: str = "A0001",
    **extra: object,
) -> MsspInputs:
    return MsspInputs(
        aco_id=aco_id,
        assigned_beneficiaries=beneficiaries,
        benchmark_cents=benchmark_dollars * DOLLAR,
        expenditures_cents=expenditure_dollars * DOLLAR,
        quality=q if q is not None else quality(),
        **extra,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- MSR table, §425.604(b)

# Every band edge of the table, both sides of each boundary, as literal percents.
MSR_EDGES = [
    (5_000, "3.9"),
    (5_999, "3.6"),
    (6_000, "3.6"),
    (6_999, "3.4"),
    (7_000, "3.4"),
    (7_999, "3.2"),
    (8_000, "3.2"),
    (8_999, "3.1"),
    (9_000, "3.1"),
    (9_999, "3.0"),
    (10_000, "3.0"),
    (14_999, "2.7"),
    (15_000, "2.7"),
    (19_999, "2.5"),
    (20_000, "2.5"),
    (49_999, "2.2"),
    (50_000, "2.2"),
    (59_999, "2.0"),
    (60_000, "2.0"),
    (60_001, "2.0"),
    (1_000_000, "2.0"),
]


@pytest.mark.parametrize(("beneficiaries", "percent"), MSR_EDGES)
def test_the_msr_at_every_band_edge_is_the_table_value(beneficiaries: int, percent: str) -> None:
    assert minimum_savings_rate_from_table(beneficiaries) == Fraction(percent) * PCT


@pytest.mark.parametrize(
    ("beneficiaries", "expected"),
    [
        # METHODS.md §1.1.2 worked values (PUF 2018 A1002: 0.030860861).
        (9_139, Fraction(31, 1000) - Fraction(139, 999) * PERMILLE),
        (38_660, Fraction(25, 1000) - Fraction(18_660, 29_999) * 3 * PERMILLE),
        (54_981, Fraction(22, 1000) - Fraction(4_981, 9_999) * 2 * PERMILLE),
        (5_451, Fraction(39, 1000) - Fraction(451, 999) * 3 * PERMILLE),  # PUF 2018 A1409
        (5_500, Fraction(39, 1000) - Fraction(500, 999) * 3 * PERMILLE),
    ],
)
def test_the_msr_interpolates_linearly_inside_a_band(beneficiaries: int, expected: Fraction) -> None:
    assert minimum_savings_rate_from_table(beneficiaries) == expected


def test_the_worked_msr_values_match_the_published_decimals() -> None:
    assert abs(minimum_savings_rate_from_table(9_139) - Fraction("0.030860861")) < Fraction(1, 10**9)
    assert abs(minimum_savings_rate_from_table(38_660) - Fraction("0.023133938")) < Fraction(1, 10**9)
    assert abs(minimum_savings_rate_from_table(54_981) - Fraction("0.021003700")) < Fraction(1, 10**9)


def test_the_msr_table_does_not_cover_fewer_than_5000_beneficiaries() -> None:
    with pytest.raises(InvalidInputError):
        minimum_savings_rate_from_table(4_999)


def test_an_aco_below_5000_uses_the_msr_cms_supplies() -> None:
    params = program_parameters(Track.TRACK_1, 2018)
    small = inputs(10_000_000, 9_500_000, beneficiaries=3_785, small_population_msr=Fraction("0.04568"))
    result = settle(params, small)
    assert result.minimum_savings_rate == Fraction("0.04568")
    assert result.msr_source is MsrSource.SMALL_POPULATION_INPUT
    assert result.met_minimum_savings_rate  # 5 % ≥ 4.568 %


@pytest.mark.parametrize(
    ("beneficiaries", "published"),
    [
        # PY2018 PUF MinSavPerc, published to nine digits (METHODS.md §1.1.2 quotes both)
        (605, "0.114635271"),  # A2507
        (3_785, "0.04568034"),  # A1071
        (4_976, "0.039126563"),  # A3103
    ],
)
def test_below_5000_the_msr_follows_cms_small_population_scale(beneficiaries: int, published: str) -> None:
    rate = minimum_savings_rate_for_small_population(beneficiaries)
    assert abs(rate - Fraction(published)) < Fraction(1, 10**9)
    result = settle(program_parameters(Track.TRACK_1, 2018), inputs(10_000_000, 9_500_000, beneficiaries=beneficiaries))
    assert result.minimum_savings_rate == rate
    assert result.msr_source is MsrSource.SMALL_POPULATION_SCALE


@pytest.mark.parametrize(
    ("beneficiaries", "percent"),
    [(500, "12.2"), (999, "8.7"), (1_000, "8.7"), (2_999, "5.0"), (3_000, "5.0"), (4_999, "3.9")],
)
def test_the_small_population_scale_meets_its_band_ends_and_the_table(beneficiaries: int, percent: str) -> None:
    assert minimum_savings_rate_for_small_population(beneficiaries) == Fraction(percent) * PCT
    assert minimum_savings_rate_for_small_population(4_999) == minimum_savings_rate_from_table(5_000)


def test_below_500_beneficiaries_without_a_determined_msr_raises_missing_input() -> None:
    with pytest.raises(MissingInputError):
        settle(program_parameters(Track.TRACK_1, 2018), inputs(10_000_000, 9_500_000, beneficiaries=499))
    with pytest.raises(InvalidInputError):
        minimum_savings_rate_for_small_population(5_000)


def test_a_high_revenue_aco_has_participant_revenue_of_at_least_35_percent_of_expenditures() -> None:
    assert is_high_revenue(35, 100) and not is_high_revenue(34, 100)
    assert is_high_revenue(3_500_000_000, 10_000_000_000) and not is_high_revenue(3_499_999_999, 10_000_000_000)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=5_000, max_value=200_000))
def test_the_msr_never_rises_with_more_beneficiaries(beneficiaries: int) -> None:
    here = minimum_savings_rate_from_table(beneficiaries)
    assert minimum_savings_rate_from_table(beneficiaries + 1) <= here
    assert Fraction(2, 100) <= here <= Fraction(39, 1000)


# ---------------------------------------------------------------- MSR threshold and MLR options


def test_savings_below_the_msr_earn_nothing() -> None:
    # N = 60,000 → MSR 2 %; savings rate 1.99 %.
    result = settle(program_parameters(Track.TRACK_1, 2018), inputs(100_000_000, 98_010_000, q=quality(1)))
    assert result.gross_savings_cents == 1_990_000 * DOLLAR
    assert not result.met_minimum_savings_rate
    assert result.generated_cents == 0
    assert result.earned_cents == 0


def test_savings_exactly_at_the_msr_are_shared_from_the_first_dollar() -> None:
    result = settle(program_parameters(Track.TRACK_1, 2018), inputs(100_000_000, 98_000_000, q=quality(1)))
    assert result.savings_rate == Fraction(2, 100)
    assert result.met_minimum_savings_rate
    assert result.generated_cents == 2_000_000 * DOLLAR  # the whole of S, not S − MSR × B
    assert result.earned_cents == 2_000_000 * DOLLAR * Fraction(50, 100) * Fraction(98, 100)


@pytest.mark.parametrize(
    ("option", "rate"),
    [
        (MsrOption.ZERO, Fraction(0)),
        (MsrOption.HALF_PERCENT, Fraction(5, 1000)),
        (MsrOption.ONE_PERCENT, Fraction(1, 100)),
        (MsrOption.ONE_AND_HALF_PERCENT, Fraction(15, 1000)),
        (MsrOption.TWO_PERCENT, Fraction(2, 100)),
    ],
)
def test_each_fixed_mlr_option_is_symmetric(option: MsrOption, rate: Fraction) -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=option)
    benchmark = 100_000_000
    at_threshold = int(rate * benchmark)
    loss = settle(params, inputs(benchmark, benchmark + at_threshold + 1, beneficiaries=8_000))
    assert loss.minimum_savings_rate == rate and loss.minimum_loss_rate == rate
    assert loss.msr_source is MsrSource.ELECTED_FIXED
    assert loss.met_minimum_loss_rate and loss.earned_cents < 0
    gain = settle(params, inputs(benchmark, benchmark - at_threshold - 1, beneficiaries=8_000))
    assert gain.met_minimum_savings_rate and gain.earned_cents > 0
    if rate > 0:
        inside = settle(params, inputs(benchmark, benchmark + at_threshold - 1, beneficiaries=8_000))
        assert not inside.met_minimum_loss_rate and inside.earned_cents == 0


def test_the_variable_option_uses_the_table_for_both_msr_and_mlr() -> None:
    # PUF 2018 A2392 (Track 1+): N = 14,719 → MSR = MLR = 3.0 − 4,719/4,999 × 0.3 %.
    params = program_parameters(Track.TRACK_1_PLUS, 2018, revenue_based_loss_limit=True)
    result = settle(params, inputs(130_265_792, 136_127_125, beneficiaries=14_719, q=quality(Fraction("0.9732"))))
    expected = Fraction(30, 1000) - Fraction(4_719, 4_999) * 3 * PERMILLE
    assert result.minimum_savings_rate == expected == result.minimum_loss_rate
    assert abs(expected - Fraction("0.027168034")) < Fraction(1, 10**9)
    assert result.loss_sharing_rate == Fraction(30, 100)  # Track 1+ flat, independent of quality
    # −5,861,333 × 30 % = −1,758,399.90; + DisAdj 717 → published −1,757,683.
    assert result.shared_losses_cents == -586_133_300 * Fraction(30, 100)


def test_a_one_sided_model_never_owes_losses() -> None:
    result = settle(program_parameters(Track.BASIC_B, 2022), inputs(100_000_000, 130_000_000))
    assert result.generated_cents == 0
    assert result.generated_losses_not_charged_cents == -30_000_000 * DOLLAR
    assert result.earned_cents == 0 and result.owed_losses_cents == 0


# ---------------------------------------------------------------- sharing, sequestration, caps


def test_puf_2018_a1001_track_1_earned_savings() -> None:
    # G = 112,523,299; FSR = 50 % × 0.9084 = 45.42 %; × 0.98 → 50,085,920.76. CMS published
    # 50,087,988: its unrounded score lies within the 4-decimal rounding of 0.9084.
    result = settle(
        program_parameters(Track.TRACK_1, 2018),
        inputs(1_072_551_536, 960_028_237, beneficiaries=77_372, q=quality(Fraction("0.9084"))),
    )
    assert result.generated_cents == 11_252_329_900
    assert result.final_sharing_rate == Fraction("0.4542")
    assert result.sequestration_cents == 11_252_329_900 * Fraction("0.4542") * Fraction(2, 100)
    assert result.earned_cents == 5_008_592_076
    assert result.earned_savings_cents == 5_008_592_076 and result.owed_losses_cents == 0


def test_puf_2022_a1001_enhanced_earns_the_full_rate_when_the_qps_is_met() -> None:
    params = program_parameters(Track.ENHANCED, 2022, msr_option=MsrOption.TWO_PERCENT)
    assert params.quality_rule is QualityRule.GATE
    result = settle(params, inputs(966_116_777, 903_712_089, beneficiaries=74_992, q=quality(Fraction("0.8941"))))
    assert result.final_sharing_rate == Fraction(75, 100)
    assert result.earned_cents == 4_586_744_568  # published 45,867,446


@pytest.mark.parametrize(
    ("track", "generated_dollars", "score", "met", "alternative", "expected_cents"),
    [
        # METHODS.md §1.1.1 PY2024 spot checks (G × FSR × 0.98).
        (Track.ENHANCED, 146_796_368, Fraction("0.9"), True, False, 10_789_533_048),
        (Track.BASIC_E, 23_261_739, Fraction("0.9"), True, False, 1_139_825_211),
        (Track.BASIC_B, 20_226_464, Fraction("0.9"), True, False, 792_877_389),
        # A3770: alternative QPS only, 75 % × 0.5645 = 42.3375 %.
        (Track.ENHANCED, 20_979_165, Fraction("0.5645"), False, True, 870_441_290),
        (Track.ENHANCED, 20_979_165, Fraction("0.5645"), False, False, 0),
    ],
)
def test_py2024_quality_rule_sets_the_final_sharing_rate(
    track: Track, generated_dollars: int, score: Fraction, met: bool, alternative: bool, expected_cents: int
) -> None:
    params = program_parameters(track, 2024)
    assert params.quality_rule is QualityRule.GATE_WITH_ALTERNATIVE
    result = settle(params, inputs(5 * generated_dollars, 4 * generated_dollars, q=quality(score, met, alternative)))
    assert result.earned_cents == expected_cents


def test_a3770_loss_rate_is_one_minus_the_alternative_sliding_scale() -> None:
    params = program_parameters(Track.ENHANCED, 2024, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 110_000_000, q=quality(Fraction("0.5645"), False, True)))
    assert result.loss_sharing_rate == 1 - Fraction(75, 100) * Fraction("0.5645")  # 57.6625 %


def test_the_performance_payment_limit_caps_savings_after_sequestration() -> None:
    # PUF 2018 A1409: 37,681,081 × 45.41 % × 0.98 = 16.77 M > 10 % × 121,182,225 → 12,118,222.50.
    result = settle(
        program_parameters(Track.TRACK_1, 2018),
        inputs(121_182_225, 83_501_144, beneficiaries=5_451, q=quality(Fraction("0.9081"))),
    )
    assert result.savings_capped
    assert result.performance_payment_limit_cents == 1_211_822_250
    assert result.earned_cents == 1_211_822_250  # published 12,118,223 (whole dollars)


def test_cap_before_sequestration_is_available_as_a_parameter() -> None:
    params = program_parameters(Track.TRACK_1, 2018, cap_order=CapOrder.CAP_BEFORE_SEQUESTRATION)
    result = settle(params, inputs(121_182_225, 83_501_144, beneficiaries=5_451, q=quality(Fraction("0.9081"))))
    assert result.savings_capped
    assert result.earned_cents == 1_211_822_250 * Fraction(98, 100)


def test_sequestration_is_a_parameter_and_applies_only_to_savings() -> None:
    no_sequestration = program_parameters(Track.TRACK_1, 2020, sequestration_rate=Fraction(0))
    result = settle(no_sequestration, inputs(100_000_000, 90_000_000))
    assert result.sequestration_cents == 0 and result.earned_cents == 500_000_000
    losses = settle(program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO), inputs(100, 110))
    assert losses.sequestration_cents == 0
    assert losses.earned_cents == -1_000 * Fraction(40, 100)


# ---------------------------------------------------------------- losses, rates and limits


def test_puf_2018_a3365_track_3_loss_rate_floor_and_disaster_reduction() -> None:
    # LSR = 1 − 74.16 % = 25.84 % → floor 40 %. B − E = −3,340,682 (the PUF's G says −3,340,681:
    # B and E are each rounded to the dollar); × 40 % + 136,037 = −1,200,235.80.
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.TWO_PERCENT)
    result = settle(
        params,
        inputs(
            130_170_365,
            133_511_047,
            beneficiaries=11_988,
            q=quality(Fraction("0.9888")),
            disaster=DisasterAmount(136_037 * DOLLAR),
        ),
    )
    assert result.loss_sharing_rate == Fraction(40, 100)
    assert result.disaster_reduction_cents == 13_603_700
    assert result.earned_cents == -120_023_580  # published −1,200,236
    assert result.owed_losses_cents == 120_023_580


def test_puf_2018_a3743_missing_the_qps_puts_the_loss_rate_at_its_cap() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ONE_PERCENT)
    result = settle(
        params,
        inputs(
            86_448_539,
            89_276_593,
            beneficiaries=6_003,
            q=quality(Fraction("0.4545"), met=False),
            disaster=DisasterAmount(2_797 * DOLLAR),
        ),
    )
    assert result.final_sharing_rate == 0
    assert result.loss_sharing_rate == Fraction(75, 100)
    assert result.earned_cents == -211_824_350  # −2,118,243.50; published −2,118,244


def test_track_2_loss_rate_is_one_minus_the_sharing_rate() -> None:
    # PUF 2018 A3336: FSR 60 % × 0.9794 = 58.764 % → LSR 41.236 %.
    params = program_parameters(Track.TRACK_2, 2018, msr_option=MsrOption.ONE_PERCENT)
    result = settle(params, inputs(181_635_269, 186_035_881, beneficiaries=16_966, q=quality(Fraction("0.9794"))))
    assert result.loss_sharing_rate == 1 - Fraction(60, 100) * Fraction("0.9794")


def test_puf_2022_a1539_enhanced_loss_rate_uses_the_quality_score_itself() -> None:
    params = program_parameters(Track.ENHANCED, 2022, msr_option=MsrOption.ONE_PERCENT)
    result = settle(
        params,
        inputs(
            236_275_356,
            249_555_909,
            beneficiaries=23_249,
            q=quality(Fraction("0.7063")),
            disaster=DisasterShare(affected_months=12, affected_beneficiary_share=Fraction(1)),
        ),
    )
    assert result.loss_sharing_rate == Fraction("0.470275")
    assert round_half_away_from_zero(result.shared_losses_cents) == -624_551_206  # DisAdj −6,245,512
    assert result.earned_cents == 0  # PY2022: the PHE covered every month and county


@pytest.mark.parametrize(
    ("participation_year", "limit_share"),
    [(1, Fraction(5, 100)), (2, Fraction(75, 1000)), (3, Fraction(10, 100)), (7, Fraction(10, 100))],
)
def test_track_2_loss_limit_rises_with_the_year_of_participation(
    participation_year: int, limit_share: Fraction
) -> None:
    params = program_parameters(Track.TRACK_2, 2016, msr_option=MsrOption.ZERO, track_participation_year=participation_year)
    result = settle(params, inputs(100_000_000, 150_000_000, q=quality(0)))  # LSR 60 % × 50 M = 30 M
    assert result.losses_limited
    assert result.loss_sharing_limit_cents == limit_share * 100_000_000 * DOLLAR
    assert result.earned_cents == -limit_share * 100_000_000 * DOLLAR


def test_losses_within_the_limit_are_not_limited() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 130_000_000))  # 40 % × 30 M = 12 M < 15 M
    assert not result.losses_limited and result.loss_limit_basis is LossLimitBasis.BENCHMARK
    assert result.earned_cents == -12_000_000 * DOLLAR


def test_losses_over_the_limit_are_limited_to_15_percent_of_benchmark() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 150_000_000))  # 40 % × 50 M = 20 M > 15 M
    assert result.losses_limited
    assert result.earned_cents == -15_000_000 * DOLLAR


@pytest.mark.parametrize(
    ("track", "revenue_dollars", "expected_limit_dollars", "basis"),
    [
        (Track.BASIC_C, 40_000_000, 800_000, LossLimitBasis.REVENUE),  # 2 % × 40 M < 1 % × 100 M
        (Track.BASIC_C, 90_000_000, 1_000_000, LossLimitBasis.BENCHMARK),  # 2 % × 90 M > 1 M
        (Track.BASIC_D, 40_000_000, 1_600_000, LossLimitBasis.REVENUE),
        (Track.BASIC_D, 60_000_000, 2_000_000, LossLimitBasis.BENCHMARK),
        (Track.BASIC_E, 40_000_000, 3_200_000, LossLimitBasis.REVENUE),
        (Track.BASIC_E, 60_000_000, 4_000_000, LossLimitBasis.BENCHMARK),
    ],
)
def test_basic_loss_limit_is_the_lesser_of_the_revenue_and_benchmark_legs(
    track: Track, revenue_dollars: int, expected_limit_dollars: int, basis: LossLimitBasis
) -> None:
    params = program_parameters(track, 2022, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 150_000_000, participant_revenue_cents=revenue_dollars * DOLLAR))
    assert result.loss_sharing_rate == Fraction(30, 100)
    assert result.loss_sharing_limit_cents == expected_limit_dollars * DOLLAR
    assert result.loss_limit_basis is basis
    assert result.earned_cents == -expected_limit_dollars * DOLLAR


def test_without_revenue_the_benchmark_leg_alone_is_applied_and_flagged() -> None:
    # PUF 2022 A1070 (Level D): 30 % × 28,610,637 = 8,583,191.10 < 2 % × B = 11,105,069.10.
    params = program_parameters(Track.BASIC_D, 2022)
    result = settle(params, inputs(555_253_455, 583_864_092, beneficiaries=22_904))
    assert result.loss_limit_basis is LossLimitBasis.BENCHMARK_REVENUE_UNKNOWN
    assert result.loss_sharing_limit_cents == Fraction(2, 100) * 55_525_345_500
    assert result.earned_cents == -858_319_110


def test_track_1_plus_without_the_revenue_limit_uses_4_percent_of_benchmark() -> None:
    params = program_parameters(Track.TRACK_1_PLUS, 2018, revenue_based_loss_limit=False)
    result = settle(params, inputs(100_000_000, 130_000_000))
    assert result.loss_limit_basis is LossLimitBasis.BENCHMARK
    assert result.loss_sharing_limit_cents == 4_000_000 * DOLLAR
    assert result.earned_cents == -4_000_000 * DOLLAR  # 30 % × 30 M = 9 M, limited


# ---------------------------------------------------------------- disaster adjustment, §425.610(i)


def test_the_disaster_share_is_months_times_beneficiaries() -> None:
    share = DisasterShare(affected_months=6, affected_beneficiary_share=Fraction(1, 2))
    assert share.reduction_share == Fraction(1, 4)
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 130_000_000, disaster=share))  # loss 12 M
    assert result.disaster_reduction_cents == 3_000_000 * DOLLAR
    assert result.earned_cents == -9_000_000 * DOLLAR


def test_the_disaster_reduction_applies_after_the_loss_limit() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    share = DisasterShare(affected_months=3, affected_beneficiary_share=Fraction(1))
    result = settle(params, inputs(100_000_000, 150_000_000, disaster=share))  # limited to 15 M
    assert result.earned_cents == -15_000_000 * DOLLAR * Fraction(3, 4)


def test_a_disaster_amount_can_cancel_a_loss_but_never_create_a_payment() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    result = settle(params, inputs(100_000_000, 130_000_000, disaster=DisasterAmount(50_000_000 * DOLLAR)))
    assert result.disaster_reduction_cents == 12_000_000 * DOLLAR
    assert result.earned_cents == 0


def test_a_disaster_does_not_change_savings() -> None:
    params = program_parameters(Track.TRACK_3, 2018, msr_option=MsrOption.ZERO)
    share = DisasterShare(affected_months=12, affected_beneficiary_share=Fraction(1))
    with_disaster = settle(params, inputs(100_000_000, 90_000_000, disaster=share))
    assert with_disaster.earned_cents == settle(params, inputs(100_000_000, 90_000_000)).earned_cents > 0


# ---------------------------------------------------------------- below-MSR savings, §425.605(h)


def test_an_eligible_low_revenue_basic_aco_shares_below_msr_savings_at_half_rate() -> None:
    params = program_parameters(Track.BASIC_A, 2024)
    eligible = settle(params, inputs(100_000_000, 99_000_000, eligible_for_below_msr_savings=True))
    assert eligible.below_msr_savings and not eligible.met_minimum_savings_rate
    assert eligible.final_sharing_rate == Fraction(20, 100)
    assert eligible.earned_cents == 1_000_000 * DOLLAR * Fraction(20, 100) * Fraction(98, 100)
    assert settle(params, inputs(100_000_000, 99_000_000)).earned_cents == 0
    before_2024 = settle(program_parameters(Track.BASIC_A, 2023), inputs(100_000_000, 99_000_000, eligible_for_below_msr_savings=True))
    assert before_2024.earned_cents == 0


# ---------------------------------------------------------------- interim settlement and true-up


def test_true_up_is_final_minus_estimate_and_references_the_estimate() -> None:
    params = program_parameters(Track.TRACK_1, 2018)
    estimate = settle_interim(params, inputs(100_000_000, 95_000_000))
    final = settle(params, inputs(100_000_000, 96_000_000))
    assert estimate.stage is SettlementStage.INTERIM and final.stage is SettlementStage.FINAL
    record = true_up(estimate, final)
    assert record.estimate is estimate and record.final is final
    assert record.estimated_cents == 245_000_000 and record.final_cents == 196_000_000
    assert record.true_up_cents == -49_000_000  # the ACO repays the over-estimate


def test_true_up_can_turn_savings_into_owed_losses() -> None:
    params = program_parameters(Track.ENHANCED, 2022, msr_option=MsrOption.ZERO)
    estimate = settle_interim(params, inputs(100_000_000, 99_000_000))
    final = settle(params, inputs(100_000_000, 101_000_000))
    assert true_up(estimate, final).true_up_cents == final.earned_cents - estimate.earned_cents
    assert final.earned_cents < 0 < estimate.earned_cents


def test_true_up_rejects_settlements_that_do_not_belong_together() -> None:
    params = program_parameters(Track.TRACK_1, 2018)
    estimate = settle_interim(params, inputs(100_000_000, 95_000_000))
    with pytest.raises(ReconciliationMismatchError):
        true_up(estimate, settle(params, inputs(100_000_000, 95_000_000, aco_id="A0002")))
    with pytest.raises(ReconciliationMismatchError):
        true_up(estimate, settle(program_parameters(Track.TRACK_1, 2017), inputs(100_000_000, 95_000_000)))
    with pytest.raises(ReconciliationMismatchError):
        true_up(estimate, estimate)
    with pytest.raises(ReconciliationMismatchError):
        final = settle(params, inputs(100_000_000, 95_000_000))
        true_up(final, final)


# ---------------------------------------------------------------- rounding and helpers


def test_rounding_is_half_away_from_zero() -> None:
    assert round_half_away_from_zero(Fraction(5, 2)) == 3
    assert round_half_away_from_zero(Fraction(-5, 2)) == -3
    assert round_half_away_from_zero(Fraction(249, 100)) == 2
    assert round_half_away_from_zero(Fraction(-251, 100)) == -3


@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(min_value=1, max_value=10**6))
def test_rounding_agrees_with_decimal_round_half_up(numerator: int, denominator: int) -> None:
    # Decimal's ROUND_HALF_UP rounds halves away from zero; 60 digits make the quotient
    # exact enough that no value strays across a half.
    with localcontext() as context:
        context.prec = 60
        expected = int((Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert round_half_away_from_zero(Fraction(numerator, denominator)) == expected


def test_total_from_per_capita_rounds_once_to_the_cent() -> None:
    # 13,162.00 per capita × 73,400.5 person-years.
    assert total_from_per_capita(1_316_200, Fraction(146_801, 2)) == 96_609_738_100
    assert total_from_per_capita(Fraction(1, 3), 2) == 1


# ---------------------------------------------------------------- properties

TRACKS_AND_OPTIONS = st.sampled_from(
    [
        (Track.TRACK_1, MsrOption.VARIABLE, 2016),
        (Track.TRACK_1_PLUS, MsrOption.VARIABLE, 2018),
        (Track.TRACK_2, MsrOption.ONE_PERCENT, 2017),
        (Track.TRACK_3, MsrOption.ZERO, 2018),
        (Track.BASIC_B, MsrOption.VARIABLE, 2022),
        (Track.BASIC_C, MsrOption.HALF_PERCENT, 2022),
        (Track.BASIC_E, MsrOption.VARIABLE, 2024),
        (Track.ENHANCED, MsrOption.TWO_PERCENT, 2022),
        (Track.ENHANCED, MsrOption.VARIABLE, 2024),
    ]
)
SCORES = st.fractions(min_value=0, max_value=1, max_denominator=10_000)


@settings(max_examples=300, deadline=None)
@given(
    TRACKS_AND_OPTIONS,
    st.integers(min_value=5_000, max_value=150_000),
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=0, max_value=2 * 10**12),
    st.integers(min_value=1, max_value=10**11),
    SCORES,
    st.booleans(),
)
def test_more_spending_never_earns_more(
    track_option: tuple[Track, MsrOption, int],
    beneficiaries: int,
    benchmark: int,
    expenditures: int,
    extra: int,
    score: Fraction,
    met: bool,
) -> None:
    track, option, year = track_option
    params = program_parameters(track, year, msr_option=option)
    q = quality(score, met)
    revenue = benchmark // 2
    base = MsspInputs("A1", beneficiaries, benchmark, expenditures, q, participant_revenue_cents=revenue)
    more = MsspInputs("A1", beneficiaries, benchmark, expenditures + extra, q, participant_revenue_cents=revenue)
    assert settle(params, more).earned_cents <= settle(params, base).earned_cents


@settings(max_examples=300, deadline=None)
@given(
    TRACKS_AND_OPTIONS,
    st.integers(min_value=5_000, max_value=150_000),
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=0, max_value=2 * 10**12),
    SCORES,
    st.booleans(),
)
def test_earned_savings_stay_within_the_cap_and_owed_losses_within_the_limit(
    track_option: tuple[Track, MsrOption, int],
    beneficiaries: int,
    benchmark: int,
    expenditures: int,
    score: Fraction,
    met: bool,
) -> None:
    track, option, year = track_option
    params = program_parameters(track, year, msr_option=option)
    result = settle(
        params,
        MsspInputs("A1", beneficiaries, benchmark, expenditures, quality(score, met), participant_revenue_cents=benchmark),
    )
    cap = round_half_away_from_zero(params.performance_payment_limit * benchmark)
    assert 0 <= result.earned_savings_cents <= cap
    assert result.earned_savings_cents <= max(result.gross_savings_cents, 0)
    if result.gross_savings_cents >= 0:
        assert result.earned_cents >= 0
    else:
        assert result.earned_cents <= 0
    if params.one_sided:
        assert result.owed_losses_cents == 0
    elif result.loss_sharing_limit_cents is not None:
        assert result.owed_losses_cents <= round_half_away_from_zero(result.loss_sharing_limit_cents)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=0, max_value=10**12), SCORES, SCORES)
def test_a_higher_quality_score_never_lowers_the_settlement(
    benchmark: int, expenditures: int, low: Fraction, high: Fraction
) -> None:
    low, high = min(low, high), max(low, high)
    for track in (Track.TRACK_1, Track.TRACK_2, Track.TRACK_3):
        params = program_parameters(track, 2018, msr_option=MsrOption.VARIABLE if track is Track.TRACK_1 else MsrOption.ZERO)
        worse = settle(params, MsspInputs("A1", 20_000, benchmark, expenditures, quality(low)))
        better = settle(params, MsspInputs("A1", 20_000, benchmark, expenditures, quality(high)))
        assert better.earned_cents >= worse.earned_cents


# ---------------------------------------------------------------- bad input raises typed errors


def test_negative_beneficiaries_raise() -> None:
    with pytest.raises(InvalidInputError):
        inputs(100, 90, beneficiaries=-1)


@pytest.mark.parametrize("benchmark_cents", [-1, 0])
def test_a_non_positive_benchmark_raises(benchmark_cents: int) -> None:
    with pytest.raises(InvalidInputError):
        MsspInputs("A1", 10_000, benchmark_cents, 0, quality())


def test_negative_expenditures_and_revenue_raise() -> None:
    with pytest.raises(InvalidInputError):
        MsspInputs("A1", 10_000, 100, -1, quality())
    with pytest.raises(InvalidInputError):
        MsspInputs("A1", 10_000, 100, 1, quality(), participant_revenue_cents=-5)


def test_amounts_beyond_2_63_cents_raise_out_of_range() -> None:
    with pytest.raises(AmountOutOfRangeError):
        MsspInputs("A1", 10_000, 2**63, 0, quality())
    with pytest.raises(AmountOutOfRangeError):
        MsspInputs("A1", 10_000, 100, 2**63, quality())
    assert issubclass(AmountOutOfRangeError, PaymentError)


def test_unknown_tracks_raise() -> None:
    with pytest.raises(UnknownTrackError):
        parse_track("4")
    with pytest.raises(UnknownTrackError):
        program_parameters("EN", 2022)  # type: ignore[arg-type]
    assert parse_track("1+") is Track.TRACK_1_PLUS and parse_track("EN") is Track.ENHANCED


@pytest.mark.parametrize("rate", [Fraction(101, 100), Fraction(-1, 100), 0.5, True])
def test_a_rate_outside_zero_to_one_or_not_exact_raises(rate: object) -> None:
    with pytest.raises(InvalidParameterError):
        MsspParameters(
            track=Track.TRACK_1,
            performance_year=2018,
            msr_option=MsrOption.VARIABLE,
            max_sharing_rate=rate,  # type: ignore[arg-type]
            performance_payment_limit=Fraction(10, 100),
            quality_rule=QualityRule.MULTIPLIER,
        )


def test_a_quality_score_above_one_raises() -> None:
    with pytest.raises(InvalidInputError):
        QualityResult(score=Fraction(101, 100), met_standard=True)


def test_a_one_sided_track_cannot_elect_a_fixed_msr() -> None:
    with pytest.raises(InvalidParameterError):
        program_parameters(Track.TRACK_1, 2018, msr_option=MsrOption.ZERO)


def test_a_two_sided_track_needs_a_loss_rate_and_a_limit() -> None:
    with pytest.raises(InvalidParameterError):
        MsspParameters(
            track=Track.TRACK_3,
            performance_year=2018,
            msr_option=MsrOption.ZERO,
            max_sharing_rate=Fraction(75, 100),
            performance_payment_limit=Fraction(20, 100),
            quality_rule=QualityRule.MULTIPLIER,
        )


def test_bad_disaster_inputs_raise() -> None:
    with pytest.raises(InvalidInputError):
        DisasterShare(affected_months=13, affected_beneficiary_share=Fraction(1))
    with pytest.raises(InvalidInputError):
        DisasterShare(affected_months=6, affected_beneficiary_share=Fraction(3, 2))
    with pytest.raises(InvalidInputError):
        DisasterAmount(-1)


def test_records_are_frozen() -> None:
    result = settle(program_parameters(Track.TRACK_1, 2018), inputs(100, 90))
    with pytest.raises(FrozenInstanceError):
        result.earned_cents = 0  # type: ignore[misc]
