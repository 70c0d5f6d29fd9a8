"""MSSP shared savings and losses: the annual reconciliation as exact arithmetic.

Rules this module enforces (42 CFR part 425 subpart G; shared/domain/METHODS.md §1.1):

* Gross savings S = B − E (benchmark minus assigned-beneficiary expenditures); savings
  rate r = S / B.
* Generated savings G = S when r ≥ MSR (first-dollar sharing); generated losses G = S
  when the model is two-sided and r ≤ −MLR; otherwise G = 0.
* Earned savings = min(G × FSR × (1 − sequestration), PPL × B) — the cap-after-
  sequestration order is a named parameter (`CapOrder`).
* Owed losses = max(G × LSR, −loss sharing limit), then reduced by the extreme-and-
  uncontrollable-circumstances adjustment (§425.610(i)).

Money is integer cents; rates are `Fraction`s. Every intermediate is kept exact (amounts
as `Fraction` cents) and recorded on the settlement; the payable amount is rounded once,
at the end, half away from zero to the cent (METHODS.md conventions table).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

from contracts.payments.errors import (
    AmountOutOfRangeError,
    InvalidInputError,
    InvalidParameterError,
    MissingInputError,
    ReconciliationMismatchError,
    UnknownTrackError,
)
from contracts.rounding import round_half_away_from_zero

MAX_CENTS = 2**63 - 1
"""Largest magnitude of any money amount, in cents (a signed 64-bit integer)."""

SMALLEST_TABLE_POPULATION = 5_000
"""Start of the regulation's MSR table (§425.604(b)); smaller ACOs use the small-population scale."""

SMALLEST_SCALE_POPULATION = 500
"""Below this many assigned beneficiaries no published scale gives an MSR (see SMALL_POPULATION_MSR_TABLE)."""

# 42 CFR §425.604(b) (and by reference §425.605(b), §425.606(b), §425.610(b)): MSR by number
# of assigned beneficiaries, linear inside each band, band upper bound inclusive.
# (low N, high N, MSR at low N, MSR at high N); the last band is open-ended and flat.
MSR_TABLE: tuple[tuple[int, int | None, Fraction, Fraction], ...] = (
    (5_000, 5_999, Fraction(39, 1000), Fraction(36, 1000)),
    (6_000, 6_999, Fraction(36, 1000), Fraction(34, 1000)),
    (7_000, 7_999, Fraction(34, 1000), Fraction(32, 1000)),
    (8_000, 8_999, Fraction(32, 1000), Fraction(31, 1000)),
    (9_000, 9_999, Fraction(31, 1000), Fraction(30, 1000)),
    (10_000, 14_999, Fraction(30, 1000), Fraction(27, 1000)),
    (15_000, 19_999, Fraction(27, 1000), Fraction(25, 1000)),
    (20_000, 49_999, Fraction(25, 1000), Fraction(22, 1000)),
    (50_000, 59_999, Fraction(22, 1000), Fraction(20, 1000)),
    (60_000, None, Fraction(20, 1000), Fraction(20, 1000)),
)

# §425.110(b)(1)(i): an ACO whose assigned population falls below 5,000 stays eligible while
# under a corrective action plan, and "for ACOs with a variable MSR and MLR, the MSR and MLR
# will be set at a level consistent with the number of assigned beneficiaries". CMS's
# sliding scale below 5,000, same form as MSR_TABLE (linear inside a band, upper bound
# inclusive): 12.2 % at 500 (the top of the one-sided range CMS states, "2.0 % to 12.2 %"),
# 8.7 % at 1,000, 5.0 % at 3,000, 3.9 % at 5,000. [verify] against the Shared Savings and
# Losses Methodology Specifications' table: these band ends were read off the PUFs, where
# they reproduce every published MinSavPerc of an ACO with 500–4,999 assigned beneficiaries
# (88 ACO-years, PY2014–2018 and 2022; e.g. PY2018 A2507, N = 605: 0.114635271, and
# A1071, N = 3,785: 0.04568034, both to the published nine digits).
SMALL_POPULATION_MSR_TABLE: tuple[tuple[int, int, Fraction, Fraction], ...] = (
    (500, 999, Fraction(122, 1000), Fraction(87, 1000)),
    (1_000, 2_999, Fraction(87, 1000), Fraction(50, 1000)),
    (3_000, 4_999, Fraction(50, 1000), Fraction(39, 1000)),
)

HIGH_REVENUE_THRESHOLD = Fraction(35, 100)
"""§425.20 (Pathways to Success final rule, 83 FR 67816): a high-revenue ACO's participants'
total Parts A and B FFS revenue is at least 35 % of the Parts A and B FFS expenditures of its
assigned beneficiaries; a low-revenue ACO's is less. [verify] the definition's text (read in
a NAACOS summary of the rule; METHODS.md §1.1.3 uses the term at §425.605(h) only)."""

DEFAULT_SEQUESTRATION_RATE = Fraction(2, 100)

# Performance years whose 2 % sequestration of shared savings was reproduced on the CMS PUFs
# (METHODS.md §1.1.1). Other years default to 2 % but are [verify]: the CARES Act and later
# laws suspended or reduced Medicare sequestration from May 2020 to June 2022, so the rate
# applied to a PY's payment depends on when CMS paid it.
SEQUESTRATION_VALIDATED_YEARS: tuple[int, ...] = (2014, 2015, 2016, 2017, 2018, 2022)


class Track(enum.Enum):
    """Financial track or BASIC/ENHANCED level of an ACO's agreement."""

    TRACK_1 = "1"
    TRACK_1_PLUS = "1+"
    TRACK_2 = "2"
    TRACK_3 = "3"
    BASIC_A = "A"
    BASIC_B = "B"
    BASIC_C = "C"
    BASIC_D = "D"
    BASIC_E = "E"
    ENHANCED = "EN"


ONE_SIDED_TRACKS = frozenset({Track.TRACK_1, Track.BASIC_A, Track.BASIC_B})


def parse_track(name: str) -> Track:
    """Read a track name as CMS spells it ("1", "1+", "2", "3", "A"…"E", "EN").

    Raises UnknownTrackError for any other name.
    """
    for track in Track:
        if track.value == name:
            return track
    raise UnknownTrackError(f"unknown MSSP track or level {name!r}")


class MsrOption(enum.Enum):
    """The MSR/MLR a two-sided ACO elects for its agreement (§425.606(b), §425.610(b)).

    One-sided models always use VARIABLE (the banded table).
    """

    ZERO = Fraction(0)
    HALF_PERCENT = Fraction(5, 1000)
    ONE_PERCENT = Fraction(10, 1000)
    ONE_AND_HALF_PERCENT = Fraction(15, 1000)
    TWO_PERCENT = Fraction(20, 1000)
    VARIABLE = None


class QualityRule(enum.Enum):
    """How the quality result turns the maximum sharing rate into the final sharing rate."""

    MULTIPLIER = "multiplier"
    """PY2013–2020 (§425.502): FSR = max rate × quality score, 0 if the QPS is not met."""
    GATE = "gate"
    """PY2021–2023 (§425.512): FSR = max rate if the QPS is met, else 0."""
    GATE_WITH_ALTERNATIVE = "gate_with_alternative"
    """PY2024+: max rate if the QPS is met; max rate × score if only the alternative QPS is."""


class CapOrder(enum.Enum):
    """Whether the performance payment limit is compared before or after sequestration.

    The regulation states only the cap (§425.604(e)(2), §425.605(d), §425.606(e)(2),
    §425.610(e)(2)); the three capped ACO-years in the PUFs match CAP_AFTER_SEQUESTRATION.
    """

    CAP_AFTER_SEQUESTRATION = "cap_after_sequestration"
    CAP_BEFORE_SEQUESTRATION = "cap_before_sequestration"


class SettlementStage(enum.Enum):
    """An interim (estimated) settlement, or the final reconciliation that trues it up."""

    INTERIM = "interim"
    FINAL = "final"


class MsrSource(enum.Enum):
    """Where the minimum savings rate of a settlement came from."""

    TABLE = "table"
    ELECTED_FIXED = "elected_fixed"
    SMALL_POPULATION_SCALE = "small_population_scale"
    """500–4,999 assigned beneficiaries: CMS's sliding scale (§425.110(b)(1)(i))."""
    SMALL_POPULATION_INPUT = "small_population_input"
    """An MSR CMS determined for the ACO and supplied as an input (below the scale)."""


class LossLimitBasis(enum.Enum):
    """Which leg of the loss sharing limit bound (or could not be checked)."""

    NOT_APPLICABLE = "not_applicable"
    BENCHMARK = "benchmark"
    REVENUE = "revenue"
    BENCHMARK_REVENUE_UNKNOWN = "benchmark_revenue_unknown"


def _check_rate(name: str, value: object, error: type[Exception]) -> Fraction:
    """Return `value` as a Fraction in [0, 1]; raise `error` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        raise error(f"{name} must be an int or Fraction, got {type(value).__name__}")
    rate = Fraction(value)
    if rate < 0 or rate > 1:
        raise error(f"{name} must lie in [0, 1], got {rate}")
    return rate


def _check_cents(name: str, value: object) -> int:
    """Return `value` as non-negative integer cents below 2**63; raise otherwise.

    Raises InvalidInputError (not an int, or negative) and AmountOutOfRangeError
    (beyond a signed 64-bit count of cents).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{name} must be integer cents, got {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(f"{name} must not be negative, got {value}")
    if abs(value) > MAX_CENTS:
        raise AmountOutOfRangeError(f"{name} = {value} cents exceeds 2**63 − 1")
    return value


def minimum_savings_rate_from_table(assigned_beneficiaries: int) -> Fraction:
    """MSR for an ACO of this size, 42 CFR §425.604(b): linear interpolation inside a band.

    MSR(N) = MSR_low − (N − low) / (high − low) × (MSR_low − MSR_high).
    Raises InvalidInputError below 5,000 (the table does not cover it) or for a bad count.
    """
    if not isinstance(assigned_beneficiaries, int) or isinstance(assigned_beneficiaries, bool):
        raise InvalidInputError("assigned_beneficiaries must be an int")
    if assigned_beneficiaries < SMALLEST_TABLE_POPULATION:
        raise InvalidInputError(
            f"the MSR table starts at {SMALLEST_TABLE_POPULATION} assigned beneficiaries, "
            f"got {assigned_beneficiaries}"
        )
    for low, high, rate_low, rate_high in MSR_TABLE:
        if high is None:
            return rate_low
        if low <= assigned_beneficiaries <= high:
            position = Fraction(assigned_beneficiaries - low, high - low)
            return rate_low - position * (rate_low - rate_high)
    raise InvalidInputError(f"no MSR band for {assigned_beneficiaries}")  # unreachable: bands tile N ≥ 5,000


def minimum_savings_rate_for_small_population(assigned_beneficiaries: int) -> Fraction:
    """MSR of an ACO with 500–4,999 assigned beneficiaries on the variable option.

    §425.110(b)(1)(i): set "at a level consistent with the number of assigned
    beneficiaries", by CMS's sliding scale (`SMALL_POPULATION_MSR_TABLE`, linear inside a
    band as §425.604(b)). Raises InvalidInputError outside 500–4,999 or for a bad count.
    """
    if not isinstance(assigned_beneficiaries, int) or isinstance(assigned_beneficiaries, bool):
        raise InvalidInputError("assigned_beneficiaries must be an int")
    for low, high, rate_low, rate_high in SMALL_POPULATION_MSR_TABLE:
        if low <= assigned_beneficiaries <= high:
            return rate_low - Fraction(assigned_beneficiaries - low, high - low) * (rate_low - rate_high)
    raise InvalidInputError(
        f"the small-population MSR scale covers {SMALLEST_SCALE_POPULATION}–{SMALLEST_TABLE_POPULATION - 1} "
        f"assigned beneficiaries, got {assigned_beneficiaries}"
    )


def is_high_revenue(participant_revenue_cents: int, expenditures_cents: int) -> bool:
    """§425.20: participants' Parts A and B FFS revenue ≥ 35 % of the assigned beneficiaries'
    Parts A and B FFS expenditures (compared exactly: 100 × revenue ≥ 35 × expenditures)."""
    return Fraction(participant_revenue_cents) >= HIGH_REVENUE_THRESHOLD * expenditures_cents


@dataclass(frozen=True)
class MsspParameters:
    """The program rules of one ACO's track in one performance year.

    Build the usual values with `program_parameters`; construct directly to model a
    rule change. Rates are exact fractions in [0, 1]. Loss-limit legs are shares of the
    benchmark / of ACO-participant Parts A+B FFS revenue; the limit is the lesser of
    the legs that apply (None = that leg does not exist for the track).

    Raises InvalidParameterError on a rate outside [0, 1], a floor above the cap, a
    one-sided track with a fixed MSR option, or a two-sided track without a loss rate;
    UnknownTrackError when `track` is not a `Track`.
    """

    track: Track
    performance_year: int
    msr_option: MsrOption
    max_sharing_rate: Fraction
    performance_payment_limit: Fraction
    quality_rule: QualityRule
    loss_rate_flat: Fraction | None = None
    """Fixed loss sharing rate (Track 1+, BASIC C–E: 30 %), independent of quality."""
    loss_rate_floor: Fraction | None = None
    """Track 2/3, ENHANCED: loss rate = 1 − max rate × quality score, within [floor, cap]."""
    loss_rate_cap: Fraction | None = None
    loss_limit_benchmark_share: Fraction | None = None
    loss_limit_revenue_share: Fraction | None = None
    sequestration_rate: Fraction = DEFAULT_SEQUESTRATION_RATE
    cap_order: CapOrder = CapOrder.CAP_AFTER_SEQUESTRATION
    below_msr_half_sharing: bool = False
    """§425.605(h) (BASIC, agreements from 2024): eligible low-revenue ACOs share savings
    below the MSR at one half of the final sharing rate."""

    def __post_init__(self) -> None:
        if not isinstance(self.track, Track):
            raise UnknownTrackError(f"unknown MSSP track {self.track!r}")
        if not isinstance(self.msr_option, MsrOption):
            raise InvalidParameterError(f"unknown MSR/MLR option {self.msr_option!r}")
        if not isinstance(self.quality_rule, QualityRule):
            raise InvalidParameterError(f"unknown quality rule {self.quality_rule!r}")
        if not isinstance(self.cap_order, CapOrder):
            raise InvalidParameterError(f"unknown cap order {self.cap_order!r}")
        if not isinstance(self.performance_year, int) or self.performance_year < 2012:
            raise InvalidParameterError(f"performance year {self.performance_year!r} predates MSSP")
        for name in ("max_sharing_rate", "performance_payment_limit", "sequestration_rate"):
            object.__setattr__(self, name, _check_rate(name, getattr(self, name), InvalidParameterError))
        for name in (
            "loss_rate_flat",
            "loss_rate_floor",
            "loss_rate_cap",
            "loss_limit_benchmark_share",
            "loss_limit_revenue_share",
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_rate(name, value, InvalidParameterError))
        if self.one_sided:
            if self.msr_option is not MsrOption.VARIABLE:
                raise InvalidParameterError("one-sided models use the variable (table) MSR")
            return
        if self.loss_rate_flat is None and (self.loss_rate_floor is None or self.loss_rate_cap is None):
            raise InvalidParameterError(f"two-sided track {self.track.value} needs a loss rate rule")
        if self.loss_rate_floor is not None and self.loss_rate_cap is not None:
            if self.loss_rate_floor > self.loss_rate_cap:
                raise InvalidParameterError("loss rate floor exceeds its cap")
        if self.loss_limit_benchmark_share is None and self.loss_limit_revenue_share is None:
            raise InvalidParameterError(f"two-sided track {self.track.value} needs a loss sharing limit")

    @property
    def one_sided(self) -> bool:
        """True for models that never owe losses (Track 1, BASIC Levels A and B)."""
        return self.track in ONE_SIDED_TRACKS


def _percent(value: int) -> Fraction:
    return Fraction(value, 100)


def program_parameters(
    track: Track,
    performance_year: int,
    *,
    msr_option: MsrOption = MsrOption.VARIABLE,
    track_participation_year: int = 1,
    revenue_based_loss_limit: bool = True,
    sequestration_rate: Fraction = DEFAULT_SEQUESTRATION_RATE,
    cap_order: CapOrder = CapOrder.CAP_AFTER_SEQUESTRATION,
) -> MsspParameters:
    """The rules of `track` in `performance_year`, per METHODS.md §1.1.3.

    * `track_participation_year` — Track 2 only: the 1st/2nd/3rd+ PY in Track 2 sets the
      loss limit at 5 % / 7.5 % / 10 % of the benchmark (§425.606(g)).
    * `revenue_based_loss_limit` — Track 1+ only: whether the ACO's composition puts it
      on the revenue-based limit (PUF `RevLossLimit`).
    * `sequestration_rate` — [verify] per PY: 2 % reproduced for PY2014–2018 and 2022;
      payments made May 2020 – June 2022 fell under the CARES Act suspension.

    [verify] parameters: Track 1+ (8 % of revenue / 4 % of benchmark: secondary source);
    BASIC Level E legs (8 % of revenue / 4 % of benchmark) follow the §414.1415(c)(3)(i)
    standards, which are set per year; PY2021–2023 ENHANCED loss rate when the QPS is not
    met (75 %, by analogy with the 2024+ text).

    Raises UnknownTrackError for an unknown track and InvalidParameterError for a
    participation year below 1 or a one-sided track with a fixed MSR option.
    """
    if not isinstance(track, Track):
        raise UnknownTrackError(f"unknown MSSP track {track!r}")
    if not isinstance(track_participation_year, int) or track_participation_year < 1:
        raise InvalidParameterError("track_participation_year counts from 1")
    if not isinstance(performance_year, int):
        raise InvalidParameterError("performance_year must be an int")
    if performance_year <= 2020:
        quality_rule = QualityRule.MULTIPLIER
    elif performance_year <= 2023:
        quality_rule = QualityRule.GATE
    else:
        quality_rule = QualityRule.GATE_WITH_ALTERNATIVE
    loss_rate_flat: Fraction | None = None
    loss_rate_floor: Fraction | None = None
    loss_rate_cap: Fraction | None = None
    benchmark_leg: Fraction | None = None
    revenue_leg: Fraction | None = None
    below_msr_half_sharing = False
    if track is Track.TRACK_1:
        # §425.604(d): up to 50 % by quality; (e)(2): capped at 10 % of the benchmark.
        max_rate, payment_limit = _percent(50), _percent(10)
    elif track is Track.TRACK_1_PLUS:
        # Track 1+ participation agreement (CMMI) [verify]: 30 % flat loss rate; limit 8 % of
        # participant revenue (capped at 4 % of benchmark) or 4 % of benchmark by composition.
        max_rate, payment_limit = _percent(50), _percent(10)
        loss_rate_flat = _percent(30)
        benchmark_leg = _percent(4)
        revenue_leg = _percent(8) if revenue_based_loss_limit else None
    elif track is Track.TRACK_2:
        # §425.606(d) 60 % by quality; (e)(2) 15 % cap; (f) loss rate 1 − FSR within
        # [40 %, 60 %]; (g) limit 5 % / 7.5 % / 10 % of benchmark by PY of participation.
        max_rate, payment_limit = _percent(60), _percent(15)
        loss_rate_floor, loss_rate_cap = _percent(40), _percent(60)
        benchmark_leg = {1: _percent(5), 2: Fraction(75, 1000)}.get(track_participation_year, _percent(10))
    elif track in (Track.TRACK_3, Track.ENHANCED):
        # §425.610(d) 75 % by quality; (e)(2) 20 % cap; (f) loss rate 1 − 0.75 × quality
        # within [40 %, 75 %]; (g) limit 15 % of benchmark.
        max_rate, payment_limit = _percent(75), _percent(20)
        loss_rate_floor, loss_rate_cap = _percent(40), _percent(75)
        benchmark_leg = _percent(15)
    elif track in (Track.BASIC_A, Track.BASIC_B):
        # §425.605(d)(1)(i)–(ii): 40 % max sharing rate, 10 % performance payment limit;
        # §425.605(h): below-MSR sharing for agreements from 2024.
        max_rate, payment_limit = _percent(40), _percent(10)
        below_msr_half_sharing = performance_year >= 2024
    else:
        # BASIC C, D, E — §425.605(d)(1)(iii)–(v): 50 %, 10 % cap, 30 % flat loss rate, limit
        # = lesser of a revenue leg and a benchmark leg.
        max_rate, payment_limit = _percent(50), _percent(10)
        loss_rate_flat = _percent(30)
        revenue_leg, benchmark_leg = {
            Track.BASIC_C: (_percent(2), _percent(1)),
            Track.BASIC_D: (_percent(4), _percent(2)),
            Track.BASIC_E: (_percent(8), _percent(4)),  # §414.1415(c)(3)(i)(A)/(B) [verify per PY]
        }[track]
        below_msr_half_sharing = performance_year >= 2024
    return MsspParameters(
        track=track,
        performance_year=performance_year,
        msr_option=msr_option,
        max_sharing_rate=max_rate,
        performance_payment_limit=payment_limit,
        quality_rule=quality_rule,
        loss_rate_flat=loss_rate_flat,
        loss_rate_floor=loss_rate_floor,
        loss_rate_cap=loss_rate_cap,
        loss_limit_benchmark_share=benchmark_leg,
        loss_limit_revenue_share=revenue_leg,
        sequestration_rate=sequestration_rate,
        cap_order=cap_order,
        below_msr_half_sharing=below_msr_half_sharing,
    )


@dataclass(frozen=True)
class DisasterShare:
    """Extreme-and-uncontrollable-circumstances inputs (§425.610(i), §425.606(i)).

    Shared losses are reduced by (affected months / 12) × (share of assigned
    beneficiaries living in an affected area). Raises InvalidInputError outside 0–12
    months or a share outside [0, 1].
    """

    affected_months: int
    affected_beneficiary_share: Fraction

    def __post_init__(self) -> None:
        if not isinstance(self.affected_months, int) or not 0 <= self.affected_months <= 12:
            raise InvalidInputError(f"affected_months must be 0–12, got {self.affected_months!r}")
        share = _check_rate("affected_beneficiary_share", self.affected_beneficiary_share, InvalidInputError)
        object.__setattr__(self, "affected_beneficiary_share", share)

    @property
    def reduction_share(self) -> Fraction:
        """The fraction of shared losses forgiven."""
        return Fraction(self.affected_months, 12) * self.affected_beneficiary_share


@dataclass(frozen=True)
class DisasterAmount:
    """A disaster reduction CMS has already determined, in cents (positive = forgiven).

    Used when only the amount is known (the PUF `DisAdj` column). The reduction can
    cancel a loss but never turn it into a payment. Raises InvalidInputError if negative.
    """

    reduction_cents: int

    def __post_init__(self) -> None:
        _check_cents("reduction_cents", self.reduction_cents)


DisasterAdjustment = Union[DisasterShare, DisasterAmount]


@dataclass(frozen=True)
class QualityResult:
    """The ACO's quality outcome for the PY, as the quality contract reports it.

    `score` is the quality performance score in [0, 1] (PY2024+: the health-equity-
    adjusted score). Raises InvalidInputError for a score outside [0, 1].
    """

    score: Fraction
    met_standard: bool
    met_alternative_standard: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "score", _check_rate("quality score", self.score, InvalidInputError))
        if not isinstance(self.met_standard, bool) or not isinstance(self.met_alternative_standard, bool):
            raise InvalidInputError("quality standard flags must be bool")


@dataclass(frozen=True)
class MsspInputs:
    """What CMS measured for one ACO in one performance year.

    Amounts in integer cents. `benchmark_cents` is the total updated benchmark B
    (use `total_from_per_capita` to build it from per-capita values); `participant_revenue_cents`
    is the total Parts A+B FFS revenue of the ACO participants, needed only by a
    revenue-based loss limit. `small_population_msr` is an MSR CMS determined for an ACO
    below 5,000 assigned beneficiaries on the variable option; without it the MSR comes
    from the small-population scale (500–4,999), and below 500 there is none. The ledger's
    settlements never supply it (`programs.settlement_submit` derives the MSR from N); the
    PUF replay does for the one published row below 500.

    Raises InvalidInputError on negative beneficiaries, a non-positive benchmark,
    negative expenditures or revenue, an MSR outside [0, 1]; AmountOutOfRangeError beyond
    2**63 − 1 cents.
    """

    aco_id: str
    assigned_beneficiaries: int
    benchmark_cents: int
    expenditures_cents: int
    quality: QualityResult
    small_population_msr: Fraction | None = None
    participant_revenue_cents: int | None = None
    disaster: DisasterAdjustment | None = None
    eligible_for_below_msr_savings: bool = False
    """§425.605(h): low-revenue, ≥ 5,000 beneficiaries, agreement from 2024, other criteria met."""

    def __post_init__(self) -> None:
        if not isinstance(self.aco_id, str) or not self.aco_id:
            raise InvalidInputError("aco_id must be a non-empty string")
        if not isinstance(self.assigned_beneficiaries, int) or isinstance(self.assigned_beneficiaries, bool):
            raise InvalidInputError("assigned_beneficiaries must be an int")
        if self.assigned_beneficiaries < 0:
            raise InvalidInputError(f"assigned_beneficiaries is negative: {self.assigned_beneficiaries}")
        _check_cents("benchmark_cents", self.benchmark_cents)
        if self.benchmark_cents == 0:
            raise InvalidInputError("benchmark_cents must be positive (the savings rate divides by it)")
        _check_cents("expenditures_cents", self.expenditures_cents)
        if self.participant_revenue_cents is not None:
            _check_cents("participant_revenue_cents", self.participant_revenue_cents)
        if not isinstance(self.quality, QualityResult):
            raise InvalidInputError("quality must be a QualityResult")
        if self.small_population_msr is not None:
            msr = _check_rate("small_population_msr", self.small_population_msr, InvalidInputError)
            object.__setattr__(self, "small_population_msr", msr)
        if self.disaster is not None and not isinstance(self.disaster, (DisasterShare, DisasterAmount)):
            raise InvalidInputError("disaster must be a DisasterShare or a DisasterAmount")


def total_from_per_capita(per_capita_cents: Fraction | int, person_years: Fraction | int) -> int:
    """Σ-term of B or E: per-capita amount × assigned person-years, to the cent.

    A total is a reported figure, so it is rounded once, half away from zero. Raises
    InvalidInputError on negative values and AmountOutOfRangeError on overflow.
    """
    for name, value in (("per_capita_cents", per_capita_cents), ("person_years", person_years)):
        if isinstance(value, bool) or not isinstance(value, (int, Fraction)) or value < 0:
            raise InvalidInputError(f"{name} must be a non-negative int or Fraction")
    total = round_half_away_from_zero(Fraction(per_capita_cents) * Fraction(person_years))
    return _check_cents("total", total)


@dataclass(frozen=True)
class MsspSettlement:
    """One reconciliation, with every intermediate a regulator needs to audit it.

    Amounts are cents: `int` where the value is exact by construction, `Fraction` where
    it is an unrounded product; only `earned_cents` is rounded. Sign convention of
    `earned_cents` (as CMS's `EarnSaveLoss`): positive = CMS pays the ACO, negative =
    the ACO owes CMS.
    """

    stage: SettlementStage
    aco_id: str
    performance_year: int
    track: Track
    assigned_beneficiaries: int
    benchmark_cents: int
    expenditures_cents: int
    gross_savings_cents: int
    savings_rate: Fraction
    minimum_savings_rate: Fraction
    minimum_loss_rate: Fraction | None
    msr_source: MsrSource
    met_minimum_savings_rate: bool
    met_minimum_loss_rate: bool
    below_msr_savings: bool
    generated_cents: int
    generated_losses_not_charged_cents: int
    quality_score: Fraction
    final_sharing_rate: Fraction
    shared_savings_cents: Fraction
    sequestration_cents: Fraction
    performance_payment_limit_cents: Fraction
    savings_capped: bool
    loss_sharing_rate: Fraction | None
    shared_losses_cents: Fraction
    loss_sharing_limit_cents: Fraction | None
    loss_limit_basis: LossLimitBasis
    losses_limited: bool
    disaster_reduction_cents: Fraction
    earned_exact_cents: Fraction
    earned_cents: int

    @property
    def earned_savings_cents(self) -> int:
        """What CMS pays the ACO (0 when the ACO owes)."""
        return max(self.earned_cents, 0)

    @property
    def owed_losses_cents(self) -> int:
        """What the ACO repays CMS, as a positive number (0 when it earns)."""
        return max(-self.earned_cents, 0)


def _minimum_savings_rate(params: MsspParameters, inputs: MsspInputs) -> tuple[Fraction, MsrSource]:
    """The MSR and where it came from: the elected fixed rate, the §425.604(b) table (≥ 5,000),
    a CMS-determined input, or the small-population scale (500–4,999).

    Raises MissingInputError below 500 assigned beneficiaries without a determined MSR."""
    if params.msr_option is not MsrOption.VARIABLE:
        # §425.606(b)(1)(ii), §425.610(b)(1)(ii): symmetric MSR/MLR elected for the agreement.
        return params.msr_option.value, MsrSource.ELECTED_FIXED
    if inputs.assigned_beneficiaries >= SMALLEST_TABLE_POPULATION:
        return minimum_savings_rate_from_table(inputs.assigned_beneficiaries), MsrSource.TABLE
    if inputs.small_population_msr is not None:
        # An MSR CMS determined for this ACO (e.g. a PUF row below the scale): it wins, so a
        # stored settlement that carried one re-runs to the same result.
        return inputs.small_population_msr, MsrSource.SMALL_POPULATION_INPUT
    if inputs.assigned_beneficiaries >= SMALLEST_SCALE_POPULATION:
        # §425.110(b)(1)(i): below 5,000 the variable MSR follows the number of beneficiaries.
        return minimum_savings_rate_for_small_population(inputs.assigned_beneficiaries), MsrSource.SMALL_POPULATION_SCALE
    raise MissingInputError(
        f"{inputs.aco_id}: {inputs.assigned_beneficiaries} assigned beneficiaries is below CMS's MSR "
        f"scale (which starts at {SMALLEST_SCALE_POPULATION}); no minimum savings rate is defined for it"
    )


def _final_sharing_rate(params: MsspParameters, quality: QualityResult) -> Fraction:
    """FSR from the maximum rate and the quality outcome, by the PY's quality rule."""
    if params.quality_rule is QualityRule.MULTIPLIER:
        # §425.502 (PY2013–2020): sharing rate = max rate × quality score; 0 if QPS not met.
        return params.max_sharing_rate * quality.score if quality.met_standard else Fraction(0)
    if quality.met_standard:
        # §425.512: meeting the APP quality performance standard earns the maximum rate.
        return params.max_sharing_rate
    if params.quality_rule is QualityRule.GATE_WITH_ALTERNATIVE and quality.met_alternative_standard:
        # PY2024+: alternative QPS → sliding scale, max rate × quality score.
        return params.max_sharing_rate * quality.score
    return Fraction(0)


def _loss_sharing_rate(params: MsspParameters, quality: QualityResult) -> Fraction:
    """LSR: flat (Track 1+, BASIC C–E) or 1 − max rate × quality score within [floor, cap].

    §425.606(f), §425.610(f): the score counts only when a quality standard is met, so an
    ACO that misses it pays the cap (PY2018 A3743: 75 %).
    """
    if params.loss_rate_flat is not None:
        return params.loss_rate_flat
    met = quality.met_standard or (
        params.quality_rule is QualityRule.GATE_WITH_ALTERNATIVE and quality.met_alternative_standard
    )
    score = quality.score if met else Fraction(0)
    rate = 1 - params.max_sharing_rate * score
    floor, cap = params.loss_rate_floor, params.loss_rate_cap
    if floor is None or cap is None:  # guarded in MsspParameters.__post_init__
        raise InvalidParameterError("loss rate needs a floor and a cap")
    return min(max(rate, floor), cap)


def _loss_sharing_limit(
    params: MsspParameters, inputs: MsspInputs
) -> tuple[Fraction, LossLimitBasis]:
    """Lesser of the loss-limit legs that apply (§425.605(d)(1)(iii)–(v)(D), §425.606(g), §425.610(g)).

    Without participant revenue a revenue leg cannot be checked: the benchmark leg alone is
    used and the basis says so, which makes the owed loss an upper bound of the true one.
    """
    benchmark_leg = (
        params.loss_limit_benchmark_share * inputs.benchmark_cents
        if params.loss_limit_benchmark_share is not None
        else None
    )
    if params.loss_limit_revenue_share is None:
        if benchmark_leg is None:
            raise InvalidParameterError("two-sided track without a loss limit")
        return benchmark_leg, LossLimitBasis.BENCHMARK
    if inputs.participant_revenue_cents is None:
        if benchmark_leg is None:
            raise MissingInputError(f"{inputs.aco_id}: the loss limit needs participant_revenue_cents")
        return benchmark_leg, LossLimitBasis.BENCHMARK_REVENUE_UNKNOWN
    revenue_leg = params.loss_limit_revenue_share * inputs.participant_revenue_cents
    if benchmark_leg is None or revenue_leg <= benchmark_leg:
        return revenue_leg, LossLimitBasis.REVENUE
    return benchmark_leg, LossLimitBasis.BENCHMARK


def settle(
    params: MsspParameters,
    inputs: MsspInputs,
    stage: SettlementStage = SettlementStage.FINAL,
) -> MsspSettlement:
    """Reconcile one ACO-year: shared savings earned, or shared losses owed.

    Pure and exact; see the module docstring for the formula. Raises MissingInputError
    when an ACO below 500 assigned beneficiaries has no determined MSR; InvalidParameterError /
    InvalidInputError if `params` / `inputs` are not the right records;
    AmountOutOfRangeError if the result leaves the 64-bit cents range.
    """
    if not isinstance(params, MsspParameters):
        raise InvalidParameterError("params must be MsspParameters")
    if not isinstance(inputs, MsspInputs):
        raise InvalidInputError("inputs must be MsspInputs")
    if not isinstance(stage, SettlementStage):
        raise InvalidInputError("stage must be a SettlementStage")
    benchmark = inputs.benchmark_cents
    gross = benchmark - inputs.expenditures_cents
    savings_rate = Fraction(gross, benchmark)
    msr, msr_source = _minimum_savings_rate(params, inputs)
    # Symmetric MLR for two-sided models (METHODS.md conventions: variable option → table MSR).
    mlr = None if params.one_sided else msr

    # §425.604(c)(2), §425.605(c), §425.606(c), §425.610(c): savings at or above the MSR are
    # shared from the first dollar; losses at or beyond the MLR are shared by two-sided ACOs.
    met_msr = savings_rate >= msr
    met_mlr = mlr is not None and savings_rate <= -mlr and gross < 0
    below_msr = (
        not met_msr
        and gross > 0
        and params.below_msr_half_sharing
        and inputs.eligible_for_below_msr_savings
        and inputs.assigned_beneficiaries >= SMALLEST_TABLE_POPULATION
    )  # §425.605(h)
    generated = gross if (met_msr or met_mlr or below_msr) else 0
    not_charged = gross if (params.one_sided and gross < 0 and savings_rate <= -msr) else 0

    fsr = _final_sharing_rate(params, inputs.quality)
    if below_msr:
        fsr = fsr / 2  # §425.605(h)(2): one-half of the applicable final sharing rate
    zero = Fraction(0)
    ppl_amount = params.performance_payment_limit * benchmark
    shared_savings = sequestration = shared_losses = disaster_reduction = zero
    savings_capped = losses_limited = False
    lsr: Fraction | None = None
    loss_limit: Fraction | None = None
    basis = LossLimitBasis.NOT_APPLICABLE
    earned_exact = zero

    if generated > 0:
        shared_savings = generated * fsr
        if params.cap_order is CapOrder.CAP_AFTER_SEQUESTRATION:
            sequestration = shared_savings * params.sequestration_rate
            earned_exact = min(shared_savings - sequestration, ppl_amount)
            savings_capped = shared_savings - sequestration > ppl_amount
        else:
            capped = min(shared_savings, ppl_amount)
            savings_capped = shared_savings > ppl_amount
            sequestration = capped * params.sequestration_rate
            earned_exact = capped - sequestration
    elif generated < 0:
        lsr = _loss_sharing_rate(params, inputs.quality)
        shared_losses = generated * lsr
        loss_limit, basis = _loss_sharing_limit(params, inputs)
        losses_limited = shared_losses < -loss_limit
        after_limit = max(shared_losses, -loss_limit)
        # §425.610(i): the disaster reduction applies after the loss rate and the limit.
        if isinstance(inputs.disaster, DisasterShare):
            disaster_reduction = -after_limit * inputs.disaster.reduction_share
        elif isinstance(inputs.disaster, DisasterAmount):
            disaster_reduction = min(Fraction(inputs.disaster.reduction_cents), -after_limit)
        earned_exact = after_limit + disaster_reduction

    earned = round_half_away_from_zero(earned_exact)
    if abs(earned) > MAX_CENTS:
        raise AmountOutOfRangeError(f"{inputs.aco_id}: settlement {earned} cents exceeds 2**63 − 1")
    return MsspSettlement(
        stage=stage,
        aco_id=inputs.aco_id,
        performance_year=params.performance_year,
        track=params.track,
        assigned_beneficiaries=inputs.assigned_beneficiaries,
        benchmark_cents=benchmark,
        expenditures_cents=inputs.expenditures_cents,
        gross_savings_cents=gross,
        savings_rate=savings_rate,
        minimum_savings_rate=msr,
        minimum_loss_rate=mlr,
        msr_source=msr_source,
        met_minimum_savings_rate=met_msr,
        met_minimum_loss_rate=met_mlr,
        below_msr_savings=below_msr,
        generated_cents=generated,
        generated_losses_not_charged_cents=not_charged,
        quality_score=inputs.quality.score,
        final_sharing_rate=fsr,
        shared_savings_cents=shared_savings,
        sequestration_cents=sequestration,
        performance_payment_limit_cents=ppl_amount,
        savings_capped=savings_capped,
        loss_sharing_rate=lsr,
        shared_losses_cents=shared_losses,
        loss_sharing_limit_cents=loss_limit,
        loss_limit_basis=basis,
        losses_limited=losses_limited,
        disaster_reduction_cents=disaster_reduction,
        earned_exact_cents=earned_exact,
        earned_cents=earned,
    )


def settle_interim(params: MsspParameters, inputs: MsspInputs) -> MsspSettlement:
    """An estimated settlement (e.g. on incomplete claims run-out), to be trued up later.

    Same rules and errors as `settle`.
    """
    return settle(params, inputs, SettlementStage.INTERIM)


@dataclass(frozen=True)
class MsspTrueUp:
    """Final reconciliation against an earlier estimate.

    `true_up_cents` = final − estimate: positive = CMS pays the ACO the difference,
    negative = the ACO repays it. The estimate is kept whole so the ledger can reference it.
    """

    aco_id: str
    performance_year: int
    estimate: MsspSettlement
    final: MsspSettlement
    estimated_cents: int
    final_cents: int
    true_up_cents: int


def true_up(estimate: MsspSettlement, final: MsspSettlement) -> MsspTrueUp:
    """Pair an interim settlement with the final one and compute the difference owed.

    Raises ReconciliationMismatchError unless `estimate` is INTERIM and `final` is FINAL
    for the same ACO, performance year and track.
    """
    if not isinstance(estimate, MsspSettlement) or not isinstance(final, MsspSettlement):
        raise ReconciliationMismatchError("true_up takes two MsspSettlement records")
    if estimate.stage is not SettlementStage.INTERIM:
        raise ReconciliationMismatchError("the estimate must be an interim settlement")
    if final.stage is not SettlementStage.FINAL:
        raise ReconciliationMismatchError("the final reconciliation must be a final settlement")
    for name in ("aco_id", "performance_year", "track"):
        if getattr(estimate, name) != getattr(final, name):
            raise ReconciliationMismatchError(
                f"{name} differs: estimate {getattr(estimate, name)!r}, final {getattr(final, name)!r}"
            )
    return MsspTrueUp(
        aco_id=final.aco_id,
        performance_year=final.performance_year,
        estimate=estimate,
        final=final,
        estimated_cents=estimate.earned_cents,
        final_cents=final.earned_cents,
        true_up_cents=final.earned_cents - estimate.earned_cents,
    )
