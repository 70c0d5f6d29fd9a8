"""Capitation: risk-adjusted PMPM payments, retroactive adjustments, risk corridors
and stop-loss (METHODS.md §1.6).

Why: under capitation a provider group takes the cost risk of its members for a fixed
per-member-per-month fee. The fee must follow enrolment and risk scores, corrections must
reference what they correct, and the agreed protections (corridors, stop-loss) must be
computed the same way by payer and provider.

Rules:

* Member-month payment = base PMPM × risk score × days enrolled / days in the month,
  rounded half away from zero **per member-month** (an 820 remittance lists per-member
  amounts; METHODS.md conventions table). Risk scores are in basis points (1.0000 = 10,000).
* A retroactive adjustment (834 enrolment change, risk-score correction) re-prices the
  named members of a month already paid; the amount due is new − previously paid, and the
  adjustment references the payment it corrects.
* Risk corridors — generic symmetric bands [(lower, upper | open, share)] in basis points
  of the target; default ACA 42 U.S.C. 18062(b) (2014–2016): within ±3 % nothing, 3–8 %
  50 %, beyond 8 % 80 %. Part D (42 U.S.C. 1395w-115(e)) uses other thresholds per year —
  pass them as bands [verify per year]. Positive = costs above target, the payer pays the
  risk-bearing participants; negative = they pay back.
* Stop-loss (a contract term, every value a parameter): specific = Σ max(0, member annual
  paid − attachment) × (1 − coinsurance); aggregate = max(0, retained claims − attachment %
  × expected claims) × (1 − coinsurance), where retained claims are each member's paid
  amount up to the specific attachment [verify against the contract: the usual commercial
  convention]. One payable amount, rounded once.

State layout (besides `settlement/…` and `disbursement/…`, see `programs`):

- `capitation/<program>/<yyyymm>/member/<member>` → {"risk_score_bps", "days_enrolled",
  "cents", "settlement_id"}: the current priced state of one member-month.

Settlement ids: `<program>/capitation/<yyyymm>/final`, `<program>/capitation/<yyyymm>/adj-<id>`,
`<program>/risk_corridor/<year>/final`, `<program>/stop_loss/<year>/final`.

Tx types (body fields; roles — all payer, the program's payer org):

- `capitation_payment` {program_id, month: yyyymm, members: [{member, risk_score_bps,
  days_enrolled}], enrollment_ref, risk_ref}
- `capitation_adjust` {program_id, month, adjustment_id, reason, members: [...same...],
  enrollment_ref, risk_ref}
- `corridor_settle` {program_id, target_cents, target_ref, allowable_costs_cents, costs_ref}
- `stop_loss_settle` {program_id, expected_claims_cents, expected_ref, members:
  [{member, annual_paid_cents}], claims_ref}
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from ledger.types import Tx

from contracts.calendar import days_in_month
from contracts.engine import REGISTRY, BlockContext
from contracts.payments.errors import (
    AlreadySettledError,
    InvalidInputError,
    InvalidParameterError,
    ProgramStateError,
)
from contracts.payments.programs import (
    BPS,
    MAX_CENTS,
    make_settlement_id,
    read_cents,
    read_id,
    read_int,
    read_reference,
    read_rows,
    read_text,
    register_program_type,
    require_active_program,
    require_payer,
    settlement_key,
    store_settlement,
    to_wire,
)
from contracts.rounding import round_half_away_from_zero
from contracts.state import StateView, key

MAX_RISK_SCORE_BPS = 1_000_000  # a risk score of 100.0: far above any CMS-HCC score
MAX_MEMBERS = 2_000


@dataclass(frozen=True)
class CorridorBand:
    """Share `share_bps` of the deviation between `lower_bps` and `upper_bps` of the target
    (upper None = open-ended), applied on both sides of the target."""

    lower_bps: int
    upper_bps: int | None
    share_bps: int


ACA_CORRIDOR_BANDS = (CorridorBand(300, 800, 5_000), CorridorBand(800, None, 8_000))
"""42 U.S.C. 18062(b)(1)–(2): 50 % of costs between 103 % and 108 % of the target, 2.5 % of
the target + 80 % beyond 108 %; mirrored below 97 % / 92 % (CY 2014–2016)."""


def check_bands(bands: Sequence[CorridorBand]) -> tuple[CorridorBand, ...]:
    """Bands ascending, non-overlapping, each lower < upper, only the last open-ended,
    shares 0..10,000. Raises InvalidParameterError."""
    checked = tuple(bands)
    previous_upper: int | None = 0
    for index, band in enumerate(checked):
        for value in (band.lower_bps, band.share_bps, *(() if band.upper_bps is None else (band.upper_bps,))):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidParameterError("corridor band values must be non-negative integers")
        if band.share_bps > BPS:
            raise InvalidParameterError("a corridor share cannot exceed 10,000 basis points")
        if previous_upper is None or band.lower_bps < previous_upper:
            raise InvalidParameterError("corridor bands must ascend without overlapping")
        if band.upper_bps is None:
            if index != len(checked) - 1:
                raise InvalidParameterError("only the last corridor band may be open-ended")
        elif band.upper_bps <= band.lower_bps:
            raise InvalidParameterError("a corridor band's upper bound must exceed its lower bound")
        previous_upper = band.upper_bps
    return checked


def member_month_cents(pmpm_cents: int, risk_score_bps: int, days_enrolled: int, month_days: int) -> int:
    """PMPM × risk score × enrolled days / days in month, half away from zero.

    Raises InvalidInputError on a negative rate or score, or days outside 0..month_days.
    """
    for name, value in (("pmpm_cents", pmpm_cents), ("risk_score_bps", risk_score_bps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError("%s must be a non-negative integer" % name)
    if isinstance(days_enrolled, bool) or not isinstance(days_enrolled, int) or not 0 <= days_enrolled <= month_days:
        raise InvalidInputError("days_enrolled must be 0..%d" % month_days)
    return round_half_away_from_zero(Fraction(pmpm_cents * risk_score_bps * days_enrolled, BPS * month_days))


@dataclass(frozen=True)
class CorridorResult:
    """A risk-corridor settlement; `amount_cents` > 0: the payer pays the participants."""

    target_cents: int
    allowable_costs_cents: int
    deviation_cents: int
    band_amounts_cents: tuple[Fraction, ...]
    exact_cents: Fraction
    amount_cents: int


def corridor_amount(target_cents: int, allowable_costs_cents: int,
                    bands: Sequence[CorridorBand] = ACA_CORRIDOR_BANDS) -> CorridorResult:
    """Apply symmetric corridor bands to allowable costs A around the target T.

    For each band, the part of |A − T| lying between lower × T and upper × T is shared at
    the band's rate; the sign follows A − T. With the ACA defaults this is exactly
    18062(b): e.g. A > 1.08 T → 0.5 × 0.05 T + 0.8 (A − 1.08 T). Rounded once.
    Raises InvalidInputError (negative amounts, a zero target) or InvalidParameterError.
    """
    checked = check_bands(bands)
    for name, value in (("target_cents", target_cents), ("allowable_costs_cents", allowable_costs_cents)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS:
            raise InvalidInputError("%s must be non-negative integer cents" % name)
    if target_cents == 0:
        raise InvalidInputError("the corridor target must be positive")
    deviation = allowable_costs_cents - target_cents
    magnitude = abs(deviation)
    sign = -1 if deviation < 0 else 1
    amounts = []
    for band in checked:
        low = Fraction(band.lower_bps * target_cents, BPS)
        width = magnitude - low
        if band.upper_bps is not None:
            width = min(width, Fraction((band.upper_bps - band.lower_bps) * target_cents, BPS))
        amounts.append(sign * max(width, Fraction(0)) * Fraction(band.share_bps, BPS))
    exact = sum(amounts, Fraction(0))
    return CorridorResult(target_cents, allowable_costs_cents, deviation, tuple(amounts), exact,
                          round_half_away_from_zero(exact))


@dataclass(frozen=True)
class StopLossTerms:
    """Stop-loss contract terms. `specific_attachment_cents` None = no specific layer;
    `aggregate_attachment_bps` None = no aggregate layer (e.g. 12,500 = 125 % of expected).
    Raises InvalidParameterError."""

    specific_attachment_cents: int | None = None
    specific_coinsurance_bps: int = 0
    aggregate_attachment_bps: int | None = 12_500
    aggregate_coinsurance_bps: int = 0

    def __post_init__(self) -> None:
        for name in ("specific_attachment_cents", "aggregate_attachment_bps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS):
                raise InvalidParameterError("%s must be a non-negative integer or null" % name)
        for name in ("specific_coinsurance_bps", "aggregate_coinsurance_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS:
                raise InvalidParameterError("%s must be 0..10,000 basis points" % name)


def specific_stop_loss(annual_paid_cents: int, attachment_cents: int, coinsurance_bps: int) -> Fraction:
    """max(0, paid − attachment) × (1 − coinsurance), exact."""
    return max(Fraction(annual_paid_cents - attachment_cents), Fraction(0)) * Fraction(BPS - coinsurance_bps, BPS)


@dataclass(frozen=True)
class StopLossResult:
    specific_cents: tuple[tuple[str, Fraction], ...]
    specific_total_cents: Fraction
    retained_claims_cents: int
    aggregate_attachment_cents: Fraction | None
    aggregate_cents: Fraction
    exact_cents: Fraction
    amount_cents: int


def stop_loss(terms: StopLossTerms, members: Sequence[tuple[str, int]], expected_claims_cents: int) -> StopLossResult:
    """Specific and aggregate stop-loss recoveries for a contract year; members in id order.

    Raises InvalidInputError on negative amounts or duplicate members.
    """
    if isinstance(expected_claims_cents, bool) or not isinstance(expected_claims_cents, int) or expected_claims_cents < 0:
        raise InvalidInputError("expected_claims_cents must be non-negative cents")
    ordered = sorted(members)
    if len({m for m, _ in ordered}) != len(ordered):
        raise InvalidInputError("a member is listed twice")
    specific: list[tuple[str, Fraction]] = []
    retained = 0
    for member, paid in ordered:
        if isinstance(paid, bool) or not isinstance(paid, int) or not 0 <= paid <= MAX_CENTS:
            raise InvalidInputError("annual_paid_cents must be non-negative cents")
        if terms.specific_attachment_cents is None:
            retained += paid
            continue
        recovery = specific_stop_loss(paid, terms.specific_attachment_cents, terms.specific_coinsurance_bps)
        if recovery:
            specific.append((member, recovery))
        retained += min(paid, terms.specific_attachment_cents)
    specific_total = sum((amount for _, amount in specific), Fraction(0))
    attachment = None
    aggregate = Fraction(0)
    if terms.aggregate_attachment_bps is not None:
        attachment = Fraction(terms.aggregate_attachment_bps * expected_claims_cents, BPS)
        aggregate = max(retained - attachment, Fraction(0)) * Fraction(BPS - terms.aggregate_coinsurance_bps, BPS)
    exact = specific_total + aggregate
    return StopLossResult(tuple(specific), specific_total, retained, attachment, aggregate, exact,
                          round_half_away_from_zero(exact))


# ------------------------------------------------------------------ parameters


def check_capitation_params(raw: Any, performance_year: int) -> dict[str, Any]:
    """Normalise a `capitation` program's parameters: {pmpm_cents, corridor_bands=ACA,
    specific_attachment_cents=None, specific_coinsurance_bps=0, aggregate_attachment_bps=12500,
    aggregate_coinsurance_bps=0}. Raises InvalidParameterError."""
    if not isinstance(raw, dict):
        raise InvalidParameterError("params must be a map")
    known = {"pmpm_cents", "corridor_bands", "specific_attachment_cents", "specific_coinsurance_bps",
             "aggregate_attachment_bps", "aggregate_coinsurance_bps"}
    if set(raw) - known:
        raise InvalidParameterError("unknown capitation parameters: %s" % ", ".join(sorted(set(raw) - known)))
    pmpm = raw.get("pmpm_cents")
    if isinstance(pmpm, bool) or not isinstance(pmpm, int) or not 0 < pmpm <= MAX_CENTS:
        raise InvalidParameterError("pmpm_cents must be positive integer cents")
    bands_raw = raw.get("corridor_bands")
    if bands_raw is None:
        bands = ACA_CORRIDOR_BANDS
    else:
        if not isinstance(bands_raw, list) or not all(isinstance(b, list) and len(b) == 3 for b in bands_raw):
            raise InvalidParameterError("corridor_bands is a list of [lower_bps, upper_bps | null, share_bps]")
        bands = check_bands([CorridorBand(*b) for b in bands_raw])
    terms = StopLossTerms(
        specific_attachment_cents=raw.get("specific_attachment_cents"),
        specific_coinsurance_bps=raw.get("specific_coinsurance_bps", 0),
        aggregate_attachment_bps=raw.get("aggregate_attachment_bps", 12_500),
        aggregate_coinsurance_bps=raw.get("aggregate_coinsurance_bps", 0),
    )
    return {"pmpm_cents": pmpm, "corridor_bands": [[b.lower_bps, b.upper_bps, b.share_bps] for b in bands],
            **to_wire(terms)}


register_program_type("capitation", check_capitation_params)


# ------------------------------------------------------------------ tx handlers


def member_key(program_id: str, month: int, member: str) -> bytes:
    return key("capitation", program_id, str(month), "member", member)


def _read_month(body: dict[str, Any], year: int) -> int:
    month = read_int(body, "month", 190_001, 220_012)
    if month // 100 != year or not 1 <= month % 100 <= 12:
        raise InvalidInputError("month %d is not a month of contract year %d" % (month, year))
    return month


def _read_member_rows(body: dict[str, Any], month: int) -> list[dict[str, Any]]:
    """Member rows sorted by member id. Raises InvalidInputError."""
    rows = read_rows(body, "members", MAX_MEMBERS, "member", ("member", "risk_score_bps", "days_enrolled"))
    month_days = days_in_month(month // 100, month % 100)
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        member = read_id(row, "member")
        if member in seen:
            raise InvalidInputError("member %s listed twice" % member)
        seen[member] = {"member": member, "risk_score_bps": read_int(row, "risk_score_bps", 0, MAX_RISK_SCORE_BPS),
                        "days_enrolled": read_int(row, "days_enrolled", 0, month_days)}
    return [seen[m] for m in sorted(seen)]


def _price(rows: list[dict[str, Any]], pmpm: int, month: int) -> list[dict[str, Any]]:
    month_days = days_in_month(month // 100, month % 100)
    return [dict(row, cents=member_month_cents(pmpm, row["risk_score_bps"], row["days_enrolled"], month_days))
            for row in rows]


@REGISTRY.register("capitation_payment", roles={"payer"})
def handle_capitation_payment(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Pay one month's capitation for the listed members (order-free: stored by member id).

    Raises InvalidInputError / StaleReferenceError, UnknownProgramError, ProgramStateError,
    NotAPartyError, AlreadySettledError (the month was already paid).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "capitation")
    require_payer(state, tx, program)
    month = _read_month(body, program["performance_year"])
    settlement_id = make_settlement_id(program_id, "capitation", month, "final")
    if state.exists(settlement_key(settlement_id)):
        raise AlreadySettledError("capitation for %d is already paid" % month)
    rows = _price(_read_member_rows(body, month), program["params"]["pmpm_cents"], month)
    references = {"enrollment": read_reference(state, body, "enrollment_ref"),
                  "risk": read_reference(state, body, "risk_ref")}
    for row in rows:
        state.put(member_key(program_id, month, row["member"]), {
            "risk_score_bps": row["risk_score_bps"], "days_enrolled": row["days_enrolled"],
            "cents": row["cents"], "settlement_id": settlement_id})
    store_settlement(state, ctx, program, {
        "id": settlement_id, "kind": "capitation", "period": month, "stage": "final",
        "inputs": {"pmpm_cents": program["params"]["pmpm_cents"], "members": rows}, "references": references,
        "result": {"member_months": len(rows), "total_cents": sum(r["cents"] for r in rows)},
        "estimate": None, "amount_due_cents": sum(r["cents"] for r in rows),
    })


@REGISTRY.register("capitation_adjust", roles={"payer"})
def handle_capitation_adjust(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Re-price members of a month already paid (retroactive enrolment or risk score).

    Each member's delta = new amount − current amount (0 if newly enrolled); the
    adjustment references the month's payment. Raises InvalidInputError /
    StaleReferenceError, UnknownProgramError, NotAPartyError, ProgramStateError (the
    month was never paid), AlreadySettledError (adjustment id used).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "capitation")
    require_payer(state, tx, program)
    month = _read_month(body, program["performance_year"])
    adjustment_id = read_id(body, "adjustment_id")
    reason = read_text(body, "reason")
    original_id = make_settlement_id(program_id, "capitation", month, "final")
    if not state.exists(settlement_key(original_id)):
        raise ProgramStateError("no capitation payment for %d to adjust" % month)
    settlement_id = make_settlement_id(program_id, "capitation", month, "adj-" + adjustment_id)
    if state.exists(settlement_key(settlement_id)):
        raise AlreadySettledError("adjustment %s already recorded" % adjustment_id)
    rows = _price(_read_member_rows(body, month), program["params"]["pmpm_cents"], month)
    references = {"enrollment": read_reference(state, body, "enrollment_ref"),
                  "risk": read_reference(state, body, "risk_ref"), "adjusts": original_id}
    lines = []
    for row in rows:
        current = state.get(member_key(program_id, month, row["member"]))
        previous = 0 if current is None else current["cents"]
        lines.append(dict(row, previous_cents=previous, delta_cents=row["cents"] - previous))
    for line in lines:
        state.put(member_key(program_id, month, line["member"]), {
            "risk_score_bps": line["risk_score_bps"], "days_enrolled": line["days_enrolled"],
            "cents": line["cents"], "settlement_id": settlement_id})
    total = sum(line["delta_cents"] for line in lines)
    store_settlement(state, ctx, program, {
        "id": settlement_id, "kind": "capitation_adjustment", "period": month, "stage": "adj-" + adjustment_id,
        "inputs": {"reason": reason, "members": lines}, "references": references,
        "result": {"delta_cents": total}, "estimate": original_id, "amount_due_cents": total,
    })


def _open_year_settlement(state: StateView, tx: Tx, kind: str) -> tuple[dict[str, Any], int, str]:
    """(program, contract year, settlement id) of a `kind` settlement for the whole
    contract year, sent by the payer of an active capitation program.

    Raises InvalidInputError, UnknownProgramError, ProgramStateError, NotAPartyError,
    AlreadySettledError (the year is already settled).
    """
    program_id = read_id(tx.body, "program_id")
    program = require_active_program(state, program_id, "capitation")
    require_payer(state, tx, program)
    year = program["performance_year"]
    settlement_id = make_settlement_id(program_id, kind, year, "final")
    if state.exists(settlement_key(settlement_id)):
        raise AlreadySettledError("%s is already settled" % settlement_id)
    return program, year, settlement_id


@REGISTRY.register("corridor_settle", roles={"payer"})
def handle_corridor_settle(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Settle the contract year's risk corridor from referenced target and costs.

    Raises InvalidInputError / StaleReferenceError, UnknownProgramError,
    ProgramStateError, NotAPartyError, AlreadySettledError.
    """
    body = tx.body
    program, year, settlement_id = _open_year_settlement(state, tx, "risk_corridor")
    target = read_cents(body, "target_cents")
    costs = read_cents(body, "allowable_costs_cents")
    references = {"target": read_reference(state, body, "target_ref"),
                  "costs": read_reference(state, body, "costs_ref")}
    bands = [CorridorBand(*b) for b in program["params"]["corridor_bands"]]
    result = corridor_amount(target, costs, bands)
    store_settlement(state, ctx, program, {
        "id": settlement_id, "kind": "risk_corridor", "period": year, "stage": "final",
        "inputs": {"target_cents": target, "allowable_costs_cents": costs,
                   "bands": program["params"]["corridor_bands"]},
        "references": references, "result": to_wire(result), "estimate": None,
        "amount_due_cents": result.amount_cents,
    })


@REGISTRY.register("stop_loss_settle", roles={"payer"})
def handle_stop_loss_settle(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Settle the contract year's specific and aggregate stop-loss recoveries.

    Raises InvalidInputError / StaleReferenceError, UnknownProgramError,
    ProgramStateError, NotAPartyError, AlreadySettledError.
    """
    body = tx.body
    program, year, settlement_id = _open_year_settlement(state, tx, "stop_loss")
    expected = read_cents(body, "expected_claims_cents")
    rows = read_rows(body, "members", MAX_MEMBERS, "member", ("member", "annual_paid_cents"), allow_empty=True)
    members = []
    for row in rows:
        members.append((read_id(row, "member"), read_cents(row, "annual_paid_cents")))
    references = {"expected": read_reference(state, body, "expected_ref"),
                  "claims": read_reference(state, body, "claims_ref")}
    params = program["params"]
    terms = StopLossTerms(params["specific_attachment_cents"], params["specific_coinsurance_bps"],
                          params["aggregate_attachment_bps"], params["aggregate_coinsurance_bps"])
    result = stop_loss(terms, members, expected)
    store_settlement(state, ctx, program, {
        "id": settlement_id, "kind": "stop_loss", "period": year, "stage": "final",
        "inputs": {"expected_claims_cents": expected, "members": [list(m) for m in sorted(members)]},
        "references": references, "result": to_wire(result), "estimate": None,
        "amount_due_cents": result.amount_cents,
    })
