"""BPCI Advanced bundles: episodes, target prices, milestone payments and the
period-end reconciliation (METHODS.md §1.3).

Why: a bundle pays a care team for a whole clinical episode, so the team has to agree
up front on the price, on who gets what as the episode progresses, and on how the
period is reconciled against actual spending. The ledger records the episode as it
happens and reconciles from explicit, referenced spending figures.

Rules (BPCI Advanced Target Price Specifications MY3; Clinical Episode Reconciliation
Specifications MY1–2):

* An episode is triggered by an anchor inpatient stay (MS-DRG) or an anchor outpatient
  procedure (HCPCS) and lasts through **90 days** after discharge / the procedure.
* Target price = benchmark price × (1 − CMS discount), discount **3 %** in MY1–MY3
  [verify for MY4+: `discount_bps` is a per-model-year parameter]. The benchmark (PCMA ×
  PAT-adjusted baseline) is a program parameter per clinical episode category. A target
  price is a published per-episode price, so it is rounded to the cent, half away from
  zero.
* NPRA = Σ target prices − Σ actual (standardised, winsorised upstream) spending.
* CQS adjustment, at most 10 % of NPRA, applied **before** the cap: positive NPRA is
  reduced by cap × (100 − CQS)/100, negative NPRA by cap × CQS/100 — the linear scaling
  is [verify exact scaling]: the specification's table was not in the stored sources.
* Stop-loss / stop-gain: |CQS-adjusted NPRA| ≤ 20 % of the total target amount.
* The reconciliation amount is rounded once, half away from zero.

Milestone payments are CareLedger's schedule for paying the bundle to the care team
(admission, procedure, discharge, 30-day follow-up): each releases `milestone_bps` of the
episode's target price, split among the participants by their allocation shares. They
are payment instructions recorded on the ledger, independent of the retrospective NPRA.

State layout:

- `bundle_episode/<program>/<episode id>` → {"id", "program_id", "patient", "category",
  "trigger_kind", "trigger_code", "anchor_date", "initiator_org", "benchmark_cents",
  "target_price_cents", "milestones": {name: {"date", "cents", "height"}},
  "last_milestone": index | -1, "window_end_date": yyyymmdd | None, "reconciled_in": id | None}
- `bundle_episode/<program>/index` — authenticated list of episode ids in opening order.
- `disbursement/<program>/episode/<episode id>/<milestone>` — milestone payment split.
- `settlement/<program>/bpci_advanced/<period>/final` — the reconciliation (see programs).

Tx types (body fields; roles):

- `episode_open` {program_id, episode_id, patient, category, trigger_code, anchor_date}
  — provider (a participant).
- `episode_milestone` {program_id, episode_id, milestone, date} — provider (a participant).
- `bundle_reconcile` {program_id, period, cqs_hundredths, cqs_ref, episodes:
  [{episode_id, actual_cents, spending_ref}]} — payer (the program's payer).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from ledger.types import Tx

from contracts import calendar
from contracts.calendar import date_from_day_number
from contracts.engine import REGISTRY, BlockContext
from contracts.payments.errors import (
    AlreadySettledError,
    InvalidInputError,
    InvalidParameterError,
    ProgramStateError,
    UnknownProgramError,
)
from contracts.payments.programs import (
    BPS,
    ID_PATTERN,
    MAX_CENTS,
    check_date,
    make_settlement_id,
    read_choice,
    read_cents,
    read_date,
    read_id,
    read_int,
    read_reference,
    read_rows,
    record_disbursement,
    register_program_type,
    require_active_program,
    require_participant,
    require_payer,
    settlement_key,
    store_settlement,
    to_wire,
)
from contracts.rounding import round_half_away_from_zero
from contracts.state import StateView, key

DEFAULT_DISCOUNT_BPS = 300
"""CMS discount, MY1–MY3: 3 % [verify for MY4+ — a per-model-year parameter]."""
DEFAULT_STOP_BPS = 2_000
"""Stop-loss / stop-gain: 20 % of the total target amount (MY1–MY3) [verify per model year]."""
DEFAULT_QUALITY_CAP_BPS = 1_000
"""CQS adjustment at most 10 % of NPRA (MY1–MY3) [verify per model year]."""
DEFAULT_WINDOW_DAYS = 90
"""Post-discharge / post-procedure episode length."""
FOLLOW_UP_DAYS = 30
MILESTONES = ("admission", "procedure", "discharge", "followup_30d")
TRIGGER_KINDS = ("hcpcs", "ms_drg")
CQS_MAX = 10_000  # composite quality score in hundredths: 100.00
DAY_MS = 86_400_000
MAX_EPISODES_PER_RECONCILIATION = 2_000
MAX_CODES = 500

# ------------------------------------------------------------------ calendar (contracts.calendar)


def day_number(yyyymmdd: int) -> int:
    """Days since 1970-01-01 of a yyyymmdd date in 1900..2200 (`calendar.day_number`).

    Raises InvalidInputError for a date that does not exist.
    """
    return calendar.day_number(check_date(yyyymmdd))


# ------------------------------------------------------------------ pure rules


def target_price_cents(benchmark_cents: int, discount_bps: int) -> int:
    """Target price = benchmark × (1 − discount), to the cent, half away from zero.

    Raises InvalidInputError on a negative benchmark or a discount outside 0..10,000.
    """
    if isinstance(benchmark_cents, bool) or not isinstance(benchmark_cents, int) or benchmark_cents < 0:
        raise InvalidInputError("benchmark_cents must be non-negative integer cents")
    if isinstance(discount_bps, bool) or not isinstance(discount_bps, int) or not 0 <= discount_bps <= BPS:
        raise InvalidInputError("discount_bps must be 0..10,000")
    return round_half_away_from_zero(Fraction(benchmark_cents * (BPS - discount_bps), BPS))


def cqs_adjustment_rate(npra_cents: int, cqs_hundredths: int, quality_cap_bps: int) -> Fraction:
    """The share of NPRA removed by the quality adjustment, in [0, cap].

    Positive NPRA (a payment): less reduction for a higher CQS, cap × (100 − CQS)/100.
    Negative NPRA (a repayment): more reduction for a higher CQS, cap × CQS/100.
    [verify exact scaling against the Reconciliation Specifications.]
    """
    cap = Fraction(quality_cap_bps, BPS)
    if npra_cents > 0:
        return cap * Fraction(CQS_MAX - cqs_hundredths, CQS_MAX)
    if npra_cents < 0:
        return cap * Fraction(cqs_hundredths, CQS_MAX)
    return Fraction(0)


@dataclass(frozen=True)
class BundleParameters:
    """Per-model-year reconciliation parameters (all [verify] beyond MY3)."""

    discount_bps: int = DEFAULT_DISCOUNT_BPS
    stop_bps: int = DEFAULT_STOP_BPS
    quality_cap_bps: int = DEFAULT_QUALITY_CAP_BPS

    def __post_init__(self) -> None:
        for name in ("discount_bps", "stop_bps", "quality_cap_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS:
                raise InvalidParameterError("%s must be 0..10,000 basis points" % name)


@dataclass(frozen=True)
class BundleReconciliation:
    """A period's reconciliation with the columns of CMS's Reconciliation Report.

    Positive `reconciliation_cents` = the payer pays the participants; negative = they repay.
    """

    episode_count: int
    total_target_cents: int
    total_spending_cents: int
    npra_cents: int
    cqs_hundredths: int
    cqs_adjustment_rate: Fraction
    cqs_adjustment_cents: Fraction
    adjusted_npra_cents: Fraction
    stop_limit_cents: Fraction
    stop_applied: str  # "none" | "stop_gain" | "stop_loss"
    capped_exact_cents: Fraction
    reconciliation_cents: int


def reconcile(params: BundleParameters, targets_cents: Sequence[int], actuals_cents: Sequence[int],
              cqs_hundredths: int) -> BundleReconciliation:
    """Reconcile a period: NPRA → CQS adjustment (≤ cap) → ±stop limit → round once.

    Sums are order-free, so the result does not depend on the order of episodes.
    Raises InvalidInputError on negative or mismatched amounts or a CQS outside 0..100.00.
    """
    if len(targets_cents) != len(actuals_cents):
        raise InvalidInputError("one actual spending amount per episode target")
    for value in (*targets_cents, *actuals_cents):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CENTS:
            raise InvalidInputError("episode amounts must be non-negative integer cents")
    if isinstance(cqs_hundredths, bool) or not isinstance(cqs_hundredths, int) or not 0 <= cqs_hundredths <= CQS_MAX:
        raise InvalidInputError("cqs_hundredths must be 0..10,000 (CQS 0–100.00)")
    total_target = sum(targets_cents)
    total_spending = sum(actuals_cents)
    npra = total_target - total_spending
    rate = cqs_adjustment_rate(npra, cqs_hundredths, params.quality_cap_bps)
    adjustment = -npra * rate
    adjusted = npra + adjustment
    limit = Fraction(params.stop_bps, BPS) * total_target
    stop = "none"
    capped = adjusted
    if adjusted > limit:
        stop, capped = "stop_gain", limit
    elif adjusted < -limit:
        stop, capped = "stop_loss", -limit
    return BundleReconciliation(
        episode_count=len(targets_cents),
        total_target_cents=total_target,
        total_spending_cents=total_spending,
        npra_cents=npra,
        cqs_hundredths=cqs_hundredths,
        cqs_adjustment_rate=rate,
        cqs_adjustment_cents=adjustment,
        adjusted_npra_cents=adjusted,
        stop_limit_cents=limit,
        stop_applied=stop,
        capped_exact_cents=capped,
        reconciliation_cents=round_half_away_from_zero(capped),
    )


def milestone_cents(target_cents: int, milestone_bps: int) -> int:
    """The payment a milestone releases: its share of the target price, half away from zero."""
    return round_half_away_from_zero(Fraction(target_cents * milestone_bps, BPS))


# ------------------------------------------------------------------ parameters


def _bps_field(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS:
        raise InvalidParameterError("%s must be 0..10,000 basis points" % name)
    return value


def check_bundle_params(raw: Any, performance_year: int) -> dict[str, Any]:
    """Normalise a `bpci_advanced` program's parameters.

    {discount_bps=300, stop_bps=2000, quality_cap_bps=1000, window_days=90,
    milestone_bps: {milestone: bps} (Σ ≤ 10,000), episodes: {category: {trigger_kind,
    codes, benchmark_cents}}}. Raises InvalidParameterError.
    """
    if not isinstance(raw, dict):
        raise InvalidParameterError("params must be a map")
    known = {"discount_bps", "stop_bps", "quality_cap_bps", "window_days", "milestone_bps", "episodes"}
    if set(raw) - known:
        raise InvalidParameterError("unknown bundle parameters: %s" % ", ".join(sorted(set(raw) - known)))
    params = BundleParameters(
        discount_bps=_bps_field(raw, "discount_bps", DEFAULT_DISCOUNT_BPS),
        stop_bps=_bps_field(raw, "stop_bps", DEFAULT_STOP_BPS),
        quality_cap_bps=_bps_field(raw, "quality_cap_bps", DEFAULT_QUALITY_CAP_BPS),
    )
    window = raw.get("window_days", DEFAULT_WINDOW_DAYS)
    if isinstance(window, bool) or not isinstance(window, int) or not FOLLOW_UP_DAYS <= window <= 365:
        raise InvalidParameterError("window_days must be 30..365")
    milestones_raw = raw.get("milestone_bps", {})
    if not isinstance(milestones_raw, dict) or set(milestones_raw) - set(MILESTONES):
        raise InvalidParameterError("milestone_bps maps milestones %s to basis points" % ", ".join(MILESTONES))
    milestones = {name: _bps_field(milestones_raw, name, 0) for name in MILESTONES}
    if sum(milestones.values()) > BPS:
        raise InvalidParameterError("milestone payments exceed the target price")
    episodes_raw = raw.get("episodes")
    if not isinstance(episodes_raw, dict) or not episodes_raw:
        raise InvalidParameterError("episodes must define at least one clinical episode category")
    episodes: dict[str, Any] = {}
    for category in sorted(episodes_raw):
        definition = episodes_raw[category]
        if not isinstance(category, str) or ID_PATTERN.fullmatch(category) is None:
            raise InvalidParameterError("episode category %r is not an identifier" % (category,))
        if not isinstance(definition, dict) or sorted(definition) != ["benchmark_cents", "codes", "trigger_kind"]:
            raise InvalidParameterError("episode %s needs trigger_kind, codes, benchmark_cents" % category)
        if definition["trigger_kind"] not in TRIGGER_KINDS:
            raise InvalidParameterError("trigger_kind must be hcpcs or ms_drg")
        codes = definition["codes"]
        if (not isinstance(codes, list) or not 0 < len(codes) <= MAX_CODES
                or not all(isinstance(c, str) and 0 < len(c) <= 10 and c.isalnum() for c in codes)):
            raise InvalidParameterError("episode %s codes must be 1..%d alphanumeric codes" % (category, MAX_CODES))
        benchmark = definition["benchmark_cents"]
        if isinstance(benchmark, bool) or not isinstance(benchmark, int) or not 0 < benchmark <= MAX_CENTS:
            raise InvalidParameterError("episode %s benchmark_cents must be positive cents" % category)
        episodes[category] = {"trigger_kind": definition["trigger_kind"], "codes": sorted(set(codes)),
                              "benchmark_cents": benchmark,
                              "target_price_cents": target_price_cents(benchmark, params.discount_bps)}
    return {"discount_bps": params.discount_bps, "stop_bps": params.stop_bps,
            "quality_cap_bps": params.quality_cap_bps, "window_days": window,
            "milestone_bps": milestones, "episodes": episodes}


register_program_type("bpci_advanced", check_bundle_params)


# ------------------------------------------------------------------ tx handlers


def episode_key(program_id: str, episode_id: str) -> bytes:
    return key("bundle_episode", program_id, episode_id)


def episode_index_key(program_id: str) -> bytes:
    return key("bundle_episode", program_id, "index")


@REGISTRY.register("episode_open", roles={"provider"})
def handle_episode_open(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A participant opens an episode on its trigger (MS-DRG stay or HCPCS procedure).

    Raises InvalidInputError (fields, a trigger code outside the category),
    UnknownProgramError, ProgramStateError (inactive program; episode id taken),
    NotAPartyError (sender not a participant).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "bpci_advanced")
    org = require_participant(state, tx, program)
    episode_id = read_id(body, "episode_id")
    if episode_id == "index":
        raise InvalidInputError("episode_id 'index' is reserved")
    patient = read_id(body, "patient")
    category = body.get("category")
    definitions = program["params"]["episodes"]
    if not isinstance(category, str) or category not in definitions:
        raise InvalidInputError("category must be one of the program's episode categories")
    definition = definitions[category]
    trigger_code = body.get("trigger_code")
    if trigger_code not in definition["codes"]:
        raise InvalidInputError("trigger %r does not trigger a %s episode" % (trigger_code, category))
    anchor_date = read_date(body, "anchor_date")
    if state.exists(episode_key(program_id, episode_id)):
        raise ProgramStateError("episode %s already exists" % episode_id)
    state.put(episode_key(program_id, episode_id), {
        "id": episode_id, "program_id": program_id, "patient": patient, "category": category,
        "trigger_kind": definition["trigger_kind"], "trigger_code": trigger_code,
        "anchor_date": anchor_date, "initiator_org": org,
        "benchmark_cents": definition["benchmark_cents"],
        "target_price_cents": definition["target_price_cents"],
        "milestones": {}, "last_milestone": -1, "end_date": None, "window_end_date": None,
        "reconciled_in": None, "opened_height": ctx.height,
    })
    state.append_entry(episode_index_key(program_id), episode_id)
    state.emit("episode_opened", program_id=program_id, episode_id=episode_id, category=category)


def get_episode(state: StateView, program_id: str, episode_id: str) -> dict[str, Any]:
    """Raises UnknownProgramError when the episode does not exist."""
    episode = state.get(episode_key(program_id, episode_id))
    if episode is None:
        raise UnknownProgramError("no episode %s in program %s" % (episode_id, program_id))
    return episode


def check_milestone(episode: dict[str, Any], milestone: str, date: int) -> None:
    """Milestones advance in order (earlier ones may be skipped, e.g. no admission for an
    outpatient procedure), on or after the anchor date and the previous milestone, and
    inside the episode: the 30-day follow-up within 30 days of discharge/procedure.

    Raises ProgramStateError.
    """
    index = MILESTONES.index(milestone)
    if index <= episode["last_milestone"]:
        raise ProgramStateError("milestone %s is out of order or already recorded" % milestone)
    day = day_number(date)
    previous = [v["date"] for _, v in sorted(episode["milestones"].items())]
    if day < day_number(episode["anchor_date"]) or any(day < day_number(d) for d in previous):
        raise ProgramStateError("milestone %s dated before an earlier event of the episode" % milestone)
    if milestone == "followup_30d":
        if episode["end_date"] is None:
            raise ProgramStateError("the 30-day follow-up needs a discharge or procedure first")
        if day > day_number(episode["end_date"]) + FOLLOW_UP_DAYS:
            raise ProgramStateError("the follow-up is more than 30 days after discharge")
    if episode["window_end_date"] is not None and day > day_number(episode["window_end_date"]):
        raise ProgramStateError("milestone %s falls after the episode window" % milestone)


@REGISTRY.register("episode_milestone", roles={"provider"})
def handle_episode_milestone(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record a milestone and release its payment, split by the participants' shares.

    Discharge (inpatient) or procedure (outpatient trigger) fixes the 90-day window.
    Raises InvalidInputError, UnknownProgramError, NotAPartyError, ProgramStateError
    (order, dates, a reconciled episode), AlreadySettledError.
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "bpci_advanced")
    require_participant(state, tx, program)
    episode = get_episode(state, program_id, read_id(body, "episode_id"))
    milestone = read_choice(body, "milestone", MILESTONES)
    date = read_date(body, "date")
    if episode["reconciled_in"] is not None:
        raise ProgramStateError("episode %s is already reconciled" % episode["id"])
    params = program["params"]
    check_milestone(episode, milestone, date)
    cents = milestone_cents(episode["target_price_cents"], params["milestone_bps"][milestone])
    ends = milestone == "discharge" or (milestone == "procedure" and episode["trigger_kind"] == "hcpcs")
    updated = dict(episode, milestones=dict(episode["milestones"], **{milestone: {
        "date": date, "cents": cents, "height": ctx.height}}), last_milestone=MILESTONES.index(milestone))
    if ends:
        updated["end_date"] = date
        updated["window_end_date"] = date_from_day_number(day_number(date) + params["window_days"])
    state.put(episode_key(program_id, episode["id"]), updated)
    if cents:
        record_disbursement(state, ctx, program, "%s/episode/%s" % (program_id, episode["id"]), cents,
                            suffix=(milestone,), reference={"episode": episode["id"], "milestone": milestone})
    state.emit("episode_milestone", program_id=program_id, episode_id=episode["id"], milestone=milestone,
               cents=cents)


@REGISTRY.register("bundle_reconcile", roles={"payer"})
def handle_bundle_reconcile(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Reconcile a period's ended episodes against their referenced actual spending.

    Episodes are stored in id order, so the body's order does not matter.
    Raises InvalidInputError / StaleReferenceError, UnknownProgramError, NotAPartyError,
    ProgramStateError (an episode not ended, its window still open, or reconciled in
    another period), AlreadySettledError (this period is settled).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "bpci_advanced")
    require_payer(state, tx, program)
    period = read_id(body, "period")
    settlement_id = make_settlement_id(program_id, "bpci_advanced", period, "final")
    if state.exists(settlement_key(settlement_id)):
        raise AlreadySettledError("%s is already reconciled" % settlement_id)
    cqs = read_int(body, "cqs_hundredths", 0, CQS_MAX)
    cqs_ref = read_reference(state, body, "cqs_ref")
    rows = read_rows(body, "episodes", MAX_EPISODES_PER_RECONCILIATION, "episode",
                     ("episode_id", "actual_cents", "spending_ref"))
    today = ctx.time_ms // DAY_MS
    lines: dict[str, dict[str, Any]] = {}
    for row in rows:
        episode_id = read_id(row, "episode_id")
        if episode_id in lines:
            raise InvalidInputError("episode %s listed twice" % episode_id)
        episode = get_episode(state, program_id, episode_id)
        if episode["reconciled_in"] is not None:
            raise ProgramStateError("episode %s was reconciled in %s" % (episode_id, episode["reconciled_in"]))
        if episode["window_end_date"] is None or today <= day_number(episode["window_end_date"]):
            raise ProgramStateError("episode %s has not ended its 90-day window" % episode_id)
        lines[episode_id] = {"episode_id": episode_id, "target_price_cents": episode["target_price_cents"],
                             "actual_cents": read_cents(row, "actual_cents"),
                             "spending_ref": read_reference(state, row, "spending_ref")}
    ordered = [lines[episode_id] for episode_id in sorted(lines)]
    params = program["params"]
    result = reconcile(
        BundleParameters(params["discount_bps"], params["stop_bps"], params["quality_cap_bps"]),
        [line["target_price_cents"] for line in ordered], [line["actual_cents"] for line in ordered], cqs,
    )
    for line in ordered:
        episode = get_episode(state, program_id, line["episode_id"])
        state.put(episode_key(program_id, line["episode_id"]), dict(episode, reconciled_in=settlement_id))
    store_settlement(state, ctx, program, {
        "id": settlement_id, "kind": "bpci_advanced", "period": period, "stage": "final",
        "inputs": {"cqs_hundredths": cqs, "episodes": [
            {k: v for k, v in sorted(line.items()) if k != "spending_ref"} for line in ordered]},
        "references": {"cqs": cqs_ref, "episodes": {line["episode_id"]: line["spending_ref"] for line in ordered}},
        "result": to_wire(result), "estimate": None, "amount_due_cents": result.reconciliation_cents,
    })

