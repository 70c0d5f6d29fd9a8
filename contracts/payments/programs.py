"""Program contracts: a value-based payment agreement registered on the ledger, signed
by every party, then settled from ledger-recorded inputs.

Why: a shared-savings or bundled-payment contract is only as trustworthy as the record
of what was agreed (rates, limits, who gets which share) and of which numbers the
settlement used. Registering the parameters, collecting each participant's signature
and keeping every intermediate of every settlement on the ledger lets any party — or a
regulator — recompute a payment and see which ledger records fed it.

Rules this module enforces:

* A program is registered by a payer (its organisation becomes the payer party) with
  a type (`mssp`, `bpci_advanced`, `capitation`), a performance year, type-specific
  parameters, and participants with allocation shares in basis points that are
  positive and sum to exactly 10,000. It is `proposed` until every participant
  organisation has sent `program_sign`; then it is `active`. Only active programs
  settle.
* MSSP settlements run `contracts.payments.mssp.settle` (42 CFR 425 subpart G) on
  inputs the contract derives from ledger records the body cites by `{key, hash}`:
  a closed total cost of care, the program's benchmark record, its quality
  standard record, the closed ACO-participant revenue (when the track needs it) and
  the regulator's disaster determination (when one exists); the MSR follows from the
  assigned count. A reference must name an existing record whose SHA-256 is `hash`
  (else StaleReferenceError), of the right kind, program, ACO and period (else
  MismatchedReferenceError); a record the settlement needs but does not cite is
  MissingInputError.
* One settlement per program / year / stage: an interim (estimated) settlement may
  precede the final one; the final one then stores the `mssp.true_up` against it and
  the amount due is the difference (METHODS.md §1.6 "Reconciliation of estimated vs
  actual"). An interim after the final is refused.
* Disbursement splits the amount due among participants by their shares with the
  largest-remainder method (integer cents, ties to the lower org id), once per
  settlement. Positive = the payer pays the participants; negative = they repay.

State layout (values canonical msgpack; `key()` parts):

- `payment_program/<id>` → {"id", "type", "payer_org", "performance_year", "params",
  "participants": [[org, bps], …] sorted by org, "signed": sorted orgs,
  "status": proposed|active, "registered_height", "activated_height"}
- `payment_program/<id>/settlements` — authenticated list of settlement ids of the program.
- `mssp_benchmark/<program id>/<year>` → {"kind": "mssp_benchmark", "program_id", "year",
  "by_per_capita_cents", "by_weights_bps", "historical_per_capita": [n, d],
  "regional_adjustment_cents", "risk_ratio", "risk_ratio_applied", "update_factor",
  "updated_per_capita": [n, d], "revision", "set_by", "height"}.
- `mssp_disaster/<program id>/<year>` → {"kind": "mssp_disaster", "program_id", "year",
  "affected_months", "affected_share_bps" | None, "reduction_cents" | None, "basis",
  "revision", "determined_by", "height"}.
- `settlement/<settlement id>` → {"id", "kind", "program_id", "period", "stage",
  "payer_org", "parties", "amount_due_cents", "inputs", "references", "result",
  "estimate", "height", "time_ms"}; settlement ids are `<program>/<kind>/<period>/<stage>`.
- `disbursement/<settlement id>` → {"settlement_id", "amount_cents", "allocations":
  [[org, cents], …], "height"}; also used for dispute adjustments
  (`disbursement/<settlement id>/adjustment/<dispute id>`).

Tx types (body fields; roles):

- `program_register` {program_id, type, performance_year, params, participants:
  [[org, bps], …]} — payer.
- `program_sign` {program_id} — provider (a participant organisation's key).
- `benchmark_set` {program_id, by_per_capita_cents: [BY1, BY2, BY3], by_weights_bps?,
  regional_adjustment_cents, update_factor: [n, d], risk_ratio?: [n, d]} — payer (the
  program's payer org); writes `mssp_benchmark/<program>/<year>`.
- `disaster_determine` {program_id, affected_months, affected_share_bps, basis?} |
  {program_id, reduction_cents, basis?} — regulator (the program administrator);
  writes `mssp_disaster/<program>/<year>`, revisable until the final settlement.
- `settlement_submit` {program_id, stage: interim|final, tcoc_ref, benchmark_ref,
  quality_ref, revenue_ref?, disaster_ref?} — payer (the program's payer org). E and N
  come from the closed `tcoc/…` record (`contracts.tcoc`), B = the benchmark record's
  updated per-capita × N, quality from `quality/standard/<program>/<year>`
  (`contracts.quality.quality_standard_assess`), the participants' revenue — and so
  high/low revenue (§425.20) and §425.605(h) eligibility — from the closed
  `participant_revenue/…` record of the same ACO and window (`contracts.tcoc`; required
  by tracks with a revenue-based loss limit or below-MSR sharing), the disaster
  adjustment from `mssp_disaster/<program>/<year>` (required when it exists), the MSR
  from N. The payer supplies no figure: a body with any of `SUBMITTED_FIGURES`
  (`benchmark_cents`, `expenditures_cents`, `assigned_beneficiaries`, `quality`,
  `expenditures_ref`, `assigned_ref`, `participant_revenue_cents`,
  `small_population_msr_bps`, `disaster`, `eligible_for_below_msr_savings`) fails with
  SubmittedFiguresError (`submitted_figures`).
- `settlement_disburse` {settlement_id} — payer (the settlement's payer org).
"""

from __future__ import annotations

import enum
import re
from dataclasses import fields, replace
from fractions import Fraction
from typing import Any, Callable, Iterator, Sequence

from ledger.hashing import sha256
from ledger.types import Tx

from contracts import accounts, calendar, quality, tcoc
from contracts.engine import REGISTRY, BlockContext
from contracts.payments import mssp
from contracts.payments.errors import (
    AlreadySettledError,
    AmountOutOfRangeError,
    InvalidInputError,
    InvalidParameterError,
    InvalidSharesError,
    MismatchedReferenceError,
    MissingInputError,
    NotAPartyError,
    ProgramStateError,
    StaleReferenceError,
    SubmittedFiguresError,
    UnknownProgramError,
)
from contracts.state import StateView, key

BPS = 10_000
"""Basis points in one whole: shares and rates are integers out of this."""

MAX_CENTS = mssp.MAX_CENTS
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_PARTICIPANTS = 500
MAX_REF_KEY = 1024
PROGRAM_TYPES = ("bpci_advanced", "capitation", "mssp")
PROPOSED, ACTIVE = "proposed", "active"
SUBMITTED_FIGURES = ("assigned_beneficiaries", "assigned_ref", "benchmark_cents", "disaster",
                     "eligible_for_below_msr_savings", "expenditures_cents", "expenditures_ref",
                     "participant_revenue_cents", "quality", "small_population_msr_bps")
"""Body fields of the removed client-figures form of `settlement_submit`: refused. The
participant revenue comes from `revenue_ref`, the MSR from N, the disaster adjustment from
`disaster_ref`, §425.605(h) eligibility from the revenue record."""

# ------------------------------------------------------------------ body readers
# Each reader returns a checked value or raises InvalidInputError naming the field.


def read_id(body: dict[str, Any], name: str) -> str:
    """An identifier: lower-case letters, digits, '.', '_' or '-', at most 64."""
    value = body.get(name)
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise InvalidInputError("%s must match %s" % (name, ID_PATTERN.pattern))
    return value


def read_text(body: dict[str, Any], name: str, max_length: int = 200) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidInputError("%s must be a string of 1..%d characters" % (name, max_length))
    return value


def read_int(body: dict[str, Any], name: str, low: int = 0, high: int = MAX_CENTS) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError("%s must be an integer in [%d, %d]" % (name, low, high))
    return value


def read_cents(body: dict[str, Any], name: str) -> int:
    """Non-negative integer cents below 2**63. Raises InvalidInputError (negative, not an
    int) or AmountOutOfRangeError (too large)."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError("%s must be integer cents" % name)
    if value < 0:
        raise InvalidInputError("%s must not be negative, got %d" % (name, value))
    if value > MAX_CENTS:
        raise AmountOutOfRangeError("%s exceeds 2**63 − 1 cents" % name)
    return value


def check_date(value: Any) -> int:
    """A yyyymmdd int naming a real calendar day in 1900..2200 (`contracts.calendar`).

    Raises InvalidInputError.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError("a date is an integer yyyymmdd")
    if not calendar.is_date(value):
        raise InvalidInputError("%d is not a calendar date" % value)
    return value


def read_date(body: dict[str, Any], name: str) -> int:
    """A yyyymmdd calendar date in 1900..2200. Raises InvalidInputError."""
    return check_date(read_int(body, name, calendar.FIRST_DATE, calendar.LAST_DATE))


def read_rows(body: dict[str, Any], name: str, max_rows: int, row: str, row_fields: Sequence[str],
              allow_empty: bool = False) -> Iterator[dict[str, Any]]:
    """The maps listed under `name` (1..max_rows of them, or 0.. with `allow_empty`).

    The list is checked now; each row is checked to be a map as it is reached, so a
    handler reports the first bad row in body order. Raises InvalidInputError.
    """
    rows = body.get(name)
    if not isinstance(rows, list) or not (0 if allow_empty else 1) <= len(rows) <= max_rows:
        bounds = "at most %d" % max_rows if allow_empty else "1..%d" % max_rows
        raise InvalidInputError("%s must list %s %s" % (name, bounds, name))
    return _maps(rows, "each %s row is {%s}" % (row, ", ".join(row_fields)))


def _maps(rows: list[Any], message: str) -> Iterator[dict[str, Any]]:
    for row in rows:
        if not isinstance(row, dict):
            raise InvalidInputError(message)
        yield row


def read_bps(body: dict[str, Any], name: str, high: int = BPS) -> int:
    """A rate in basis points, 0..`high`."""
    return read_int(body, name, 0, high)


def read_bool(body: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInputError("%s must be true or false" % name)
    return value


def read_hash(value: Any, name: str) -> bytes:
    """A 32-byte commitment (an evidence hash, a record hash)."""
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInputError("%s must be a 32-byte hash" % name)
    return value


def read_choice(body: dict[str, Any], name: str, choices: Sequence[str]) -> str:
    value = body.get(name)
    if value not in choices:
        raise InvalidInputError("%s must be one of %s" % (name, ", ".join(choices)))
    return value


def read_reference(state: StateView, body: dict[str, Any], name: str) -> dict[str, Any]:
    """`{key: str, hash: 32 bytes}` naming the ledger record an input came from.

    The record must exist and hash (SHA-256 of its stored bytes) to `hash`, so the
    settlement commits to the exact version of the record it used.
    Raises InvalidInputError (malformed) or StaleReferenceError (missing / changed).
    """
    ref = body.get(name)
    if not isinstance(ref, dict) or sorted(ref) != ["hash", "key"]:
        raise InvalidInputError("%s must be {key, hash}" % name)
    record_key = ref["key"]
    if not isinstance(record_key, str) or not 0 < len(record_key) <= MAX_REF_KEY:
        raise InvalidInputError("%s.key must be a state key string" % name)
    digest = read_hash(ref["hash"], name + ".hash")
    stored = state.get_bytes(record_key.encode())
    if stored is None:
        raise StaleReferenceError("%s names no ledger record: %s" % (name, record_key))
    if sha256(stored) != digest:
        raise StaleReferenceError("%s: record %s has changed since it was referenced" % (name, record_key))
    return {"key": record_key, "hash": digest}


def record_reference(state: StateView, record_key: bytes) -> dict[str, Any]:
    """The `{key, hash}` reference of an existing record (for clients and tests)."""
    stored = state.get_bytes(record_key)
    if stored is None:
        raise StaleReferenceError("no record at %r" % record_key)
    return {"key": record_key.decode(), "hash": sha256(stored)}


# ------------------------------------------------------------------ wire forms


def to_wire(value: Any) -> Any:
    """A settlement intermediate as a canonical value: Fraction → [num, den],
    enum → its value (or name when the value is not a string), dataclass → map."""
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if isinstance(value, Fraction):
        return [value.numerator, value.denominator]
    if isinstance(value, (list, tuple)):
        return [to_wire(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: to_wire(getattr(value, f.name)) for f in fields(value)}
    return value


def bps_fraction(bps: int | None) -> Fraction | None:
    return None if bps is None else Fraction(bps, BPS)


def fraction_bps(rate: Fraction | None) -> int | None:
    """A rate as whole basis points. Raises InvalidParameterError if it is not whole."""
    if rate is None:
        return None
    scaled = rate * BPS
    if scaled.denominator != 1:
        raise InvalidParameterError("rate %s is not a whole number of basis points" % rate)
    return scaled.numerator


# ------------------------------------------------------------------ shares


def check_shares(raw: Any) -> list[list[Any]]:
    """Participants `[[org, bps], …]`: distinct ids, each share 1..10,000, Σ = 10,000.

    Returned sorted by org id. Raises InvalidSharesError.
    """
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_PARTICIPANTS:
        raise InvalidSharesError("participants must be a non-empty list of [org, bps]")
    seen: dict[str, int] = {}
    for entry in raw:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise InvalidSharesError("each participant is [org id, share in basis points]")
        org, share = entry
        if not isinstance(org, str) or ID_PATTERN.fullmatch(org) is None:
            raise InvalidSharesError("participant org id %r is not an identifier" % (org,))
        if isinstance(share, bool) or not isinstance(share, int) or not 0 < share <= BPS:
            raise InvalidSharesError("share of %s must be 1..10,000 basis points" % org)
        if org in seen:
            raise InvalidSharesError("participant %s listed twice" % org)
        seen[org] = share
    total = sum(seen.values())
    if total != BPS:
        raise InvalidSharesError("shares sum to %d basis points, not 10,000" % total)
    return [[org, seen[org]] for org in sorted(seen)]


def split_by_shares(amount_cents: int, shares: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Split integer cents by basis-point shares, exactly, by largest remainder.

    Each org first gets ⌊|amount| × bps / 10,000⌋; the cents left over (fewer than the
    number of orgs) go one each to the largest remainders, ties to the lower org id.
    The sign of `amount_cents` is applied afterwards, so a repayment splits the same
    way as a payment. Σ of the result = `amount_cents`. Raises InvalidSharesError.
    """
    checked = check_shares([list(s) for s in shares])
    magnitude = abs(amount_cents)
    sign = -1 if amount_cents < 0 else 1
    floors: dict[str, int] = {}
    remainders: list[tuple[int, str]] = []
    for org, bps in checked:
        quotient, remainder = divmod(magnitude * bps, BPS)
        floors[org] = quotient
        remainders.append((-remainder, org))
    left = magnitude - sum(floors.values())
    for _, org in sorted(remainders)[:left]:
        floors[org] += 1
    return [[org, sign * floors[org]] for org in sorted(floors)]


# ------------------------------------------------------------------ programs


def program_key(program_id: str) -> bytes:
    return key("payment_program", program_id)


def settlements_list_key(program_id: str) -> bytes:
    return key("payment_program", program_id, "settlements")


def settlement_key(settlement_id: str) -> bytes:
    return key("settlement", settlement_id)


def disbursement_key(settlement_id: str, *suffix: str) -> bytes:
    return key("disbursement", settlement_id, *suffix)


def make_settlement_id(program_id: str, kind: str, period: str | int, stage: str) -> str:
    return "%s/%s/%s/%s" % (program_id, kind, period, stage)


ParamChecker = Callable[[Any, int], dict[str, Any]]
PARAM_CHECKERS: dict[str, ParamChecker] = {}
"""Program type → function(raw params, performance year) → normalised params; raises
InvalidParameterError. `bundles` and `capitation` add theirs when imported."""


def register_program_type(name: str, checker: ParamChecker) -> None:
    if name not in PROGRAM_TYPES or name in PARAM_CHECKERS:
        raise ValueError("program type %r unknown or registered twice" % name)
    PARAM_CHECKERS[name] = checker


def sender_org(state: StateView, tx: Tx) -> str:
    """The organisation of the sending key (the engine has checked it is active)."""
    account = accounts.require_active(state, tx.sender)
    return account["org"]


def get_program(state: StateView, program_id: str) -> dict[str, Any]:
    """The program record. Raises UnknownProgramError."""
    program = state.get(program_key(program_id))
    if program is None:
        raise UnknownProgramError("no program %s" % program_id)
    return program


def require_active_program(state: StateView, program_id: str, program_type: str) -> dict[str, Any]:
    """An active program of `program_type`.

    Raises UnknownProgramError (missing or other type) or ProgramStateError (not all
    participants have signed).
    """
    program = get_program(state, program_id)
    if program["type"] != program_type:
        raise UnknownProgramError("program %s is %s, not %s" % (program_id, program["type"], program_type))
    if program["status"] != ACTIVE:
        raise ProgramStateError("program %s is not active: awaiting signatures" % program_id)
    return program


def require_payer(state: StateView, tx: Tx, program: dict[str, Any]) -> str:
    """The sender's org, which must be the program's payer. Raises NotAPartyError."""
    org = sender_org(state, tx)
    if org != program["payer_org"]:
        raise NotAPartyError("%s is not the payer of program %s" % (org, program["id"]))
    return org


def require_participant(state: StateView, tx: Tx, program: dict[str, Any]) -> str:
    """The sender's org, which must be a participant. Raises NotAPartyError."""
    org = sender_org(state, tx)
    if org not in [p[0] for p in program["participants"]]:
        raise NotAPartyError("%s is not a participant of program %s" % (org, program["id"]))
    return org


def parties(program: dict[str, Any]) -> list[str]:
    """Every organisation bound by the program: its payer and its participants."""
    return sorted({program["payer_org"], *[p[0] for p in program["participants"]]})


@REGISTRY.register("program_register", roles={"payer"})
def handle_program_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register a program contract proposed by the sending payer.

    Raises InvalidInputError (bad id, type or year), InvalidParameterError (bad
    parameters for the type), InvalidSharesError (shares), UnknownProgramError (a
    participant org not on the ledger), ProgramStateError (id taken, or the payer lists
    itself as a participant).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program_type = read_choice(body, "type", PROGRAM_TYPES)
    year = read_int(body, "performance_year", 2012, 2200)
    participants = check_shares(body.get("participants"))
    checker = PARAM_CHECKERS.get(program_type)
    if checker is None:
        raise InvalidParameterError("program type %s is not available" % program_type)
    params = checker(body.get("params"), year)
    payer_org = sender_org(state, tx)
    if state.exists(program_key(program_id)):
        raise ProgramStateError("program %s already exists" % program_id)
    for org, _ in participants:
        if org == payer_org:
            raise ProgramStateError("the payer cannot also be a participant")
        if not state.exists(key("org", org)):
            raise UnknownProgramError("participant organisation %s is not on the ledger" % org)
    state.put(program_key(program_id), {
        "id": program_id,
        "type": program_type,
        "payer_org": payer_org,
        "performance_year": year,
        "params": params,
        "participants": participants,
        "signed": [],
        "status": PROPOSED,
        "registered_height": ctx.height,
        "activated_height": None,
    })
    state.emit("program_registered", program_id=program_id, type=program_type, payer_org=payer_org)


@REGISTRY.register("program_sign", roles={"provider"})
def handle_program_sign(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A participant organisation accepts the program; the last signature activates it.

    Signatures are kept as a sorted set, so the order in which participants sign does
    not change the record. Raises UnknownProgramError, NotAPartyError (not a
    participant), ProgramStateError (this org already signed).
    """
    program_id = read_id(tx.body, "program_id")
    program = get_program(state, program_id)
    org = require_participant(state, tx, program)
    if org in program["signed"]:
        raise ProgramStateError("%s already signed program %s" % (org, program_id))
    signed = sorted([*program["signed"], org])
    updated = dict(program, signed=signed)
    if len(signed) == len(program["participants"]):
        updated.update(status=ACTIVE, activated_height=ctx.height)
    state.put(program_key(program_id), updated)
    state.emit("program_signed", program_id=program_id, org=org, status=updated["status"])


# ------------------------------------------------------------------ MSSP parameters

_MSR_OPTIONS_BY_BPS = {0: mssp.MsrOption.ZERO, 50: mssp.MsrOption.HALF_PERCENT,
                       100: mssp.MsrOption.ONE_PERCENT, 150: mssp.MsrOption.ONE_AND_HALF_PERCENT,
                       200: mssp.MsrOption.TWO_PERCENT}
_RATE_OVERRIDES = (
    ("max_sharing_rate_bps", "max_sharing_rate"),
    ("performance_payment_limit_bps", "performance_payment_limit"),
    ("loss_rate_flat_bps", "loss_rate_flat"),
    ("loss_rate_floor_bps", "loss_rate_floor"),
    ("loss_rate_cap_bps", "loss_rate_cap"),
    ("loss_limit_benchmark_bps", "loss_limit_benchmark_share"),
    ("loss_limit_revenue_bps", "loss_limit_revenue_share"),
)
_MSSP_PARAM_FIELDS = frozenset({
    "track", "msr_option_bps", "track_participation_year", "revenue_based_loss_limit",
    "sequestration_bps", "cap_order", "quality_rule", "below_msr_half_sharing",
    *[name for name, _ in _RATE_OVERRIDES],
})


def _optional_bps(raw: dict[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS:
        raise InvalidParameterError("%s must be 0..10,000 basis points or null" % name)
    return value


def build_mssp_parameters(raw: Any, performance_year: int) -> mssp.MsspParameters:
    """MSSP parameters from a registration body: the track's rules for the year
    (`mssp.program_parameters`, METHODS.md §1.1.3), then any explicit overrides.

    `sequestration_bps` defaults to 200 (2 %) and is [verify] per performance year
    (CARES Act suspension May 2020 – June 2022). Raises InvalidParameterError /
    UnknownTrackError.
    """
    if not isinstance(raw, dict):
        raise InvalidParameterError("params must be a map")
    unknown = sorted(set(raw) - _MSSP_PARAM_FIELDS)
    if unknown:
        raise InvalidParameterError("unknown MSSP parameters: %s" % ", ".join(unknown))
    track_name = raw.get("track")
    if not isinstance(track_name, str):
        raise InvalidParameterError("params.track must be a track name")
    track = mssp.parse_track(track_name)
    msr_bps = raw.get("msr_option_bps")
    if msr_bps is not None and (isinstance(msr_bps, bool) or msr_bps not in _MSR_OPTIONS_BY_BPS):
        raise InvalidParameterError("msr_option_bps must be null (variable) or 0, 50, 100, 150, 200")
    participation = raw.get("track_participation_year", 1)
    revenue_based = raw.get("revenue_based_loss_limit", True)
    sequestration = raw.get("sequestration_bps", 200)
    if isinstance(participation, bool) or not isinstance(participation, int) or participation < 1:
        raise InvalidParameterError("track_participation_year must be a positive integer")
    if not isinstance(revenue_based, bool):
        raise InvalidParameterError("revenue_based_loss_limit must be a bool")
    if isinstance(sequestration, bool) or not isinstance(sequestration, int) or not 0 <= sequestration <= BPS:
        raise InvalidParameterError("sequestration_bps must be 0..10,000")
    try:
        cap_order = mssp.CapOrder(raw.get("cap_order", mssp.CapOrder.CAP_AFTER_SEQUESTRATION.value))
    except ValueError:
        raise InvalidParameterError("unknown cap_order %r" % (raw.get("cap_order"),)) from None
    params = mssp.program_parameters(
        track,
        performance_year,
        msr_option=mssp.MsrOption.VARIABLE if msr_bps is None else _MSR_OPTIONS_BY_BPS[msr_bps],
        track_participation_year=participation,
        revenue_based_loss_limit=revenue_based,
        sequestration_rate=Fraction(sequestration, BPS),
        cap_order=cap_order,
    )
    overrides: dict[str, Any] = {}
    for body_name, field_name in _RATE_OVERRIDES:
        if body_name in raw:
            overrides[field_name] = bps_fraction(_optional_bps(raw, body_name))
    if "quality_rule" in raw:
        try:
            overrides["quality_rule"] = mssp.QualityRule(raw["quality_rule"])
        except ValueError:
            raise InvalidParameterError("unknown quality_rule %r" % (raw["quality_rule"],)) from None
    if "below_msr_half_sharing" in raw:
        if not isinstance(raw["below_msr_half_sharing"], bool):
            raise InvalidParameterError("below_msr_half_sharing must be a bool")
        overrides["below_msr_half_sharing"] = raw["below_msr_half_sharing"]
    return replace(params, **overrides) if overrides else params  # __post_init__ re-validates


def mssp_params_record(params: mssp.MsspParameters) -> dict[str, Any]:
    """The resolved parameters as stored on the program: every rate explicit, in bps."""
    record: dict[str, Any] = {
        "track": params.track.value,
        "msr_option_bps": fraction_bps(params.msr_option.value),
        "quality_rule": params.quality_rule.value,
        "cap_order": params.cap_order.value,
        "sequestration_bps": fraction_bps(params.sequestration_rate),
        "below_msr_half_sharing": params.below_msr_half_sharing,
    }
    for body_name, field_name in _RATE_OVERRIDES:
        record[body_name] = fraction_bps(getattr(params, field_name))
    return record


def check_mssp_params(raw: Any, performance_year: int) -> dict[str, Any]:
    return mssp_params_record(build_mssp_parameters(raw, performance_year))


def mssp_parameters_of(program: dict[str, Any]) -> mssp.MsspParameters:
    """Rebuild `MsspParameters` from a stored (fully explicit) program record."""
    stored = program["params"]
    return build_mssp_parameters(dict(stored), program["performance_year"])


register_program_type("mssp", check_mssp_params)


# ------------------------------------------------------------------ MSSP benchmark record

BENCHMARK_YEAR_WEIGHTS_BPS = (1_000, 3_000, 6_000)
"""BY1/BY2/BY3 weights of the historical benchmark (METHODS §1.1.4: 10 % / 30 % / 60 %
for a first agreement period) [verify per agreement period]."""
RISK_RATIO_CAP = Fraction(103, 100)
"""Positive change in prospective HCC risk scores is capped at +3 % (§425.610(a)(2)(i))."""
MAX_FACTOR_TERM = 10**12


def benchmark_key(program_id: str, year: int) -> bytes:
    return key("mssp_benchmark", program_id, year)


def read_ratio(body: dict[str, Any], name: str, default: Fraction | None = None) -> Fraction:
    """A positive exact ratio `[numerator, denominator]`. Raises InvalidInputError."""
    raw = body.get(name)
    if raw is None and default is not None:
        return default
    if (not isinstance(raw, list) or len(raw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_FACTOR_TERM for v in raw)):
        raise InvalidInputError("%s must be [numerator, denominator], both positive integers" % name)
    return Fraction(raw[0], raw[1])


def compute_updated_benchmark(by_cents: Sequence[int], weights_bps: Sequence[int], regional_cents: int,
                              risk_ratio: Fraction, update_factor: Fraction) -> dict[str, Fraction]:
    """The per-capita updated benchmark, exactly (METHODS §1.1.4, one enrollment type):

        historical = Σ weight_i × BY_i  (BY_i already trended and risk-adjusted to BY3)
        updated    = (historical + regional adjustment) × min(risk ratio, 1.03) × update factor

    Raises InvalidInputError if the weights do not sum to 10,000 bps or the result is
    not positive.
    """
    if sum(weights_bps) != BPS:
        raise InvalidInputError("benchmark-year weights must sum to 10,000 basis points")
    historical = sum((Fraction(w, BPS) * c for w, c in zip(weights_bps, by_cents)), Fraction(0))
    applied = min(risk_ratio, RISK_RATIO_CAP)
    updated = (historical + regional_cents) * applied * update_factor
    if updated <= 0:
        raise InvalidInputError("the updated benchmark must be positive")
    return {"historical": historical, "risk_ratio_applied": applied, "updated": updated}


@REGISTRY.register("benchmark_set", roles={"payer"})
def handle_benchmark_set(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record an MSSP program's per-capita benchmark for its performance year, with its
    components, so that a settlement cites a benchmark record instead of a figure.

    Body: {program_id, by_per_capita_cents: [BY1, BY2, BY3], by_weights_bps?: [3 ints],
    regional_adjustment_cents: int (signed, per capita), update_factor: [n, d],
    risk_ratio?: [n, d] (default 1)}.

    Who: the program's payer alone. In MSSP the benchmark is established by CMS
    (42 CFR 425.601–.603, §425.650–.660), not negotiated, and the ACO's recourse is a
    dispute; the participants accepted that when they signed the program, and every
    component is on the ledger for them to check. It may be revised until a settlement
    of the year exists (each revision bumps `revision`; a settlement pins its hash).
    Raises InvalidInputError, UnknownProgramError (missing or not MSSP), NotAPartyError,
    ProgramStateError (already settled).
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = get_program(state, program_id)
    if program["type"] != "mssp":
        raise UnknownProgramError("program %s is %s, not mssp" % (program_id, program["type"]))
    org = require_payer(state, tx, program)
    raw_by = body.get("by_per_capita_cents")
    if not isinstance(raw_by, list) or len(raw_by) != 3:
        raise InvalidInputError("by_per_capita_cents must list BY1, BY2, BY3 per-capita cents")
    by_cents = [read_cents({"by_per_capita_cents": v}, "by_per_capita_cents") for v in raw_by]
    raw_weights = body.get("by_weights_bps", list(BENCHMARK_YEAR_WEIGHTS_BPS))
    if not isinstance(raw_weights, list) or len(raw_weights) != 3:
        raise InvalidInputError("by_weights_bps must list three weights")
    weights = [read_bps({"by_weights_bps": w}, "by_weights_bps") for w in raw_weights]
    regional = read_int(body, "regional_adjustment_cents", -MAX_CENTS, MAX_CENTS)
    update = read_ratio(body, "update_factor")
    risk = read_ratio(body, "risk_ratio", Fraction(1))
    figures = compute_updated_benchmark(by_cents, weights, regional, risk, update)
    year = program["performance_year"]
    for stage in ("interim", "final"):
        if state.exists(settlement_key(make_settlement_id(program_id, "mssp", year, stage))):
            raise ProgramStateError("%s is settled for %d: its benchmark is fixed" % (program_id, year))
    previous = state.get(benchmark_key(program_id, year))
    state.put(benchmark_key(program_id, year), {
        "kind": "mssp_benchmark", "program_id": program_id, "year": year,
        "by_per_capita_cents": by_cents, "by_weights_bps": weights,
        "historical_per_capita": to_wire(figures["historical"]), "regional_adjustment_cents": regional,
        "risk_ratio": to_wire(risk), "risk_ratio_applied": to_wire(figures["risk_ratio_applied"]),
        "update_factor": to_wire(update), "updated_per_capita": to_wire(figures["updated"]),
        "revision": 0 if previous is None else previous["revision"] + 1, "set_by": org, "height": ctx.height,
    })
    state.emit("benchmark_set", program_id=program_id, year=year,
               updated_per_capita=to_wire(figures["updated"]))


# ------------------------------------------------------------------ MSSP disaster determination

DISASTER_KIND = "mssp_disaster"
MAX_BASIS = 200


def disaster_key(program_id: str, year: int) -> bytes:
    return key("mssp_disaster", program_id, year)


def disaster_adjustment(record: dict[str, Any]) -> mssp.DisasterAdjustment:
    """The `mssp` adjustment a stored determination stands for."""
    if record["reduction_cents"] is not None:
        return mssp.DisasterAmount(record["reduction_cents"])
    return mssp.DisasterShare(record["affected_months"], Fraction(record["affected_share_bps"], BPS))


@REGISTRY.register("disaster_determine", roles={"regulator"})
def handle_disaster_determine(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record the program administrator's extreme-and-uncontrollable-circumstances
    determination for an MSSP program's performance year, which its settlement must cite.

    Body: {program_id, affected_months: 0..12, affected_share_bps: 0..10,000, basis?} —
    shared losses are reduced by (months / 12) × (share of assigned beneficiaries living
    in an affected area) (§425.606(i), §425.610(i); `mssp.DisasterShare`) — or {program_id,
    reduction_cents, basis?}, a reduction already determined in cents (as the PUF's
    `DisAdj`). `basis` names the event (e.g. a FEMA declaration), at most 200 characters.

    Who: a regulator — which areas and months were affected, and so the reduction, is
    determined by CMS as administrator of the program (§425.610(i)), not by the payer:
    a payer settling on its own reduction of the ACO's losses is what this record replaces. Governance may change
    the role through the permission table, like any tx type. It may be revised until the
    year's final settlement exists (each revision bumps `revision`; a settlement pins
    its hash).
    Raises InvalidInputError, UnknownProgramError (missing or not MSSP),
    ProgramStateError (the final settlement exists), AmountOutOfRangeError.
    """
    body = tx.body
    program_id = read_id(body, "program_id")
    program = get_program(state, program_id)
    if program["type"] != "mssp":
        raise UnknownProgramError("program %s is %s, not mssp" % (program_id, program["type"]))
    given = sorted(set(body) - {"program_id", "basis"})
    if given == ["affected_months", "affected_share_bps"]:
        months, share, reduction = read_int(body, "affected_months", 0, 12), read_bps(body, "affected_share_bps"), None
    elif given == ["reduction_cents"]:
        months, share, reduction = None, None, read_cents(body, "reduction_cents")
    else:
        raise InvalidInputError("a determination is {affected_months, affected_share_bps} or {reduction_cents}")
    basis = None if body.get("basis") is None else read_text(body, "basis", MAX_BASIS)
    year = program["performance_year"]
    if state.exists(settlement_key(make_settlement_id(program_id, "mssp", year, "final"))):
        raise ProgramStateError("%s is settled for %d: its disaster determination is fixed" % (program_id, year))
    previous = state.get(disaster_key(program_id, year))
    state.put(disaster_key(program_id, year), {
        "kind": DISASTER_KIND, "program_id": program_id, "year": year, "affected_months": months,
        "affected_share_bps": share, "reduction_cents": reduction, "basis": basis,
        "revision": 0 if previous is None else previous["revision"] + 1,
        "determined_by": sender_org(state, tx), "height": ctx.height,
    })
    state.emit("disaster_determined", program_id=program_id, year=year, affected_months=months,
               affected_share_bps=share, reduction_cents=reduction)


# ------------------------------------------------------------------ MSSP settlement


def _cited(state: StateView, body: dict[str, Any], name: str, kind: str,
           canonical: Callable[[dict[str, Any]], bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference, record) of a `*_ref` naming a current record of `kind` at its canonical key.

    Raises InvalidInputError, StaleReferenceError (missing or changed record),
    MismatchedReferenceError (another kind of record, or not at its canonical key).
    """
    reference = read_reference(state, body, name)
    record = state.get(reference["key"].encode())
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise MismatchedReferenceError("%s must cite a %s record" % (name, kind))
    if canonical(record) != reference["key"].encode():
        raise MismatchedReferenceError("%s: %s is not where the %s record lives" % (name, reference["key"], kind))
    return reference, record


def _read_revenue(state: StateView, body: dict[str, Any], program: dict[str, Any], params: mssp.MsspParameters,
                  tcoc_record: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(reference, record) of the closed ACO-participant revenue `revenue_ref` cites, or
    (None, None) when the body cites none and the track does not need it.

    Needed by a track with a revenue-based loss limit (METHODS §1.1.3: BASIC C–E, Track 1+
    on the revenue-based limit) and by one whose low-revenue ACOs may share savings below
    the MSR (§425.605(h), BASIC from 2024): without it a payer could drop the leg that
    limits the ACO's losses. The record must be the revenue of the TCOC's ACO over the
    TCOC's window (§425.20 compares the two over the same period).
    Raises MissingInputError (needed, not cited), InvalidInputError, StaleReferenceError,
    MismatchedReferenceError (kind, program, ACO, window, still open).
    """
    if "revenue_ref" not in body:
        if params.loss_limit_revenue_share is not None or params.below_msr_half_sharing:
            raise MissingInputError(
                "track %s needs the ACO participants' revenue: cite the closed participant_revenue record of "
                "the TCOC's ACO and window as revenue_ref (revenue_open / revenue_accumulate / revenue_close)"
                % params.track.value)
        return None, None
    reference, record = _cited(state, body, "revenue_ref", tcoc.REVENUE_KIND, lambda r: tcoc.revenue_key(
        r["program"], r["aco"], r["period_start"], r["period_end"]))
    if record["program"] != program["id"]:
        raise MismatchedReferenceError("revenue_ref is the participant revenue of program %s" % record["program"])
    if record["aco"] != tcoc_record["aco"]:
        raise MismatchedReferenceError("revenue_ref is the revenue of ACO %s, the TCOC's ACO is %s" % (
            record["aco"], tcoc_record["aco"]))
    if (record["period_start"], record["period_end"]) != (tcoc_record["period_start"], tcoc_record["period_end"]):
        raise MismatchedReferenceError("revenue_ref covers %d-%d, the TCOC covers %d-%d" % (
            record["period_start"], record["period_end"], tcoc_record["period_start"], tcoc_record["period_end"]))
    if record["status"] != tcoc.CLOSED:
        raise MismatchedReferenceError("revenue_ref is still open: close it first")
    return reference, record


def _read_disaster(state: StateView, body: dict[str, Any],
                   program: dict[str, Any]) -> tuple[dict[str, Any] | None, mssp.DisasterAdjustment | None]:
    """(reference, adjustment) of the program administrator's extreme-and-uncontrollable-
    circumstances determination for the program's year (`disaster_determine`), or (None, None).

    The record lives at `mssp_disaster/<program>/<year>`; when it exists the settlement
    must cite it (a payer cannot leave out a reduction of the ACO's losses), and a
    `disaster_ref` must name it. Raises MissingInputError (a determination exists but is
    not cited), InvalidInputError, StaleReferenceError, MismatchedReferenceError.
    """
    year = program["performance_year"]
    if "disaster_ref" not in body:
        if state.exists(disaster_key(program["id"], year)):
            raise MissingInputError("a disaster determination exists for %s/%d: cite %s as disaster_ref" % (
                program["id"], year, disaster_key(program["id"], year).decode()))
        return None, None
    reference, record = _cited(state, body, "disaster_ref", DISASTER_KIND,
                               lambda r: disaster_key(r["program_id"], r["year"]))
    if (record["program_id"], record["year"]) != (program["id"], year):
        raise MismatchedReferenceError("disaster_ref belongs to %s/%d, not %s/%d" % (
            record["program_id"], record["year"], program["id"], year))
    return reference, disaster_adjustment(record)


def read_mssp_record_inputs(state: StateView, body: dict[str, Any],
                            program: dict[str, Any]) -> tuple[mssp.MsspInputs, dict[str, Any], dict[str, Any]]:
    """The settlement inputs derived from the ledger records the body cites:

    - `tcoc_ref` → a closed `tcoc/…` record (`contracts.tcoc`) of this program, over a
      window inside the performance year, for an ACO whose organisation is a
      participant: E = its truncated `expenditures_cents`, N = its `assigned_count`;
    - `benchmark_ref` → the program's `mssp_benchmark/<program>/<year>` record:
      B = updated per-capita benchmark × N, rounded once (`mssp.total_from_per_capita`);
    - `quality_ref` → the program's `quality/standard/<program>/<year>` record
      (`quality_standard_assess`): score and met_standard / met_alternative_standard;
    - `revenue_ref` → the closed `participant_revenue/…` record of the TCOC's ACO and
      window (`contracts.tcoc`): the participants' revenue for a revenue-based loss limit,
      and whether the ACO is high- or low-revenue (§425.20, `mssp.is_high_revenue`: revenue
      ≥ 35 % of E), which decides §425.605(h) below-MSR sharing — required when the track
      uses either (`_read_revenue`);
    - `disaster_ref` → the regulator's `mssp_disaster/<program>/<year>` determination,
      required when one exists (`_read_disaster`).
    The MSR is not an input: `mssp.settle` takes it from N (the §425.604(b) table, or
    CMS's small-population scale for 500–4,999; below 500 it refuses).

    Returns (inputs, echo, references); the echo is what a stored settlement re-runs
    from (`_inputs_from_echo`: a true-up, an audit).
    Raises InvalidInputError, MissingInputError, StaleReferenceError,
    MismatchedReferenceError, AmountOutOfRangeError.
    """
    program_id, year = program["id"], program["performance_year"]
    tcoc_ref, tcoc_record = _cited(state, body, "tcoc_ref", "tcoc", lambda r: tcoc.tcoc_key(
        r["program"], r["aco"], r["period_start"], r["period_end"]))
    if tcoc_record["program"] != program_id:
        raise MismatchedReferenceError("tcoc_ref is the total cost of care of program %s" % tcoc_record["program"])
    if tcoc_record["period_start"] // 10_000 != year or tcoc_record["period_end"] // 10_000 != year:
        raise MismatchedReferenceError("tcoc_ref covers %d-%d, outside performance year %d" % (
            tcoc_record["period_start"], tcoc_record["period_end"], year))
    if tcoc_record["status"] != tcoc.CLOSED:
        raise MismatchedReferenceError("tcoc_ref is still open: close it first")
    if tcoc_record["aco_org"] not in [org for org, _ in program["participants"]]:
        raise MismatchedReferenceError("the ACO of tcoc_ref (org %s) is not a participant" % tcoc_record["aco_org"])
    benchmark_ref, benchmark = _cited(state, body, "benchmark_ref", "mssp_benchmark",
                                      lambda r: benchmark_key(r["program_id"], r["year"]))
    quality_ref, standard = _cited(state, body, "quality_ref", quality.STANDARD_KIND,
                                   lambda r: quality.standard_key(r["program_id"], r["year"]))
    for name, record in (("benchmark_ref", benchmark), ("quality_ref", standard)):
        if (record["program_id"], record["year"]) != (program_id, year):
            raise MismatchedReferenceError("%s belongs to %s/%d, not %s/%d" % (
                name, record["program_id"], record["year"], program_id, year))
    assigned = tcoc_record["assigned_count"]
    benchmark_cents = mssp.total_from_per_capita(Fraction(*benchmark["updated_per_capita"]), assigned)
    quality_result = mssp.QualityResult(Fraction(standard["score_bps"], BPS), standard["met_standard"],
                                        standard["met_alternative_standard"])
    echo: dict[str, Any] = {
        "source": "ledger_records",
        "benchmark_cents": benchmark_cents,
        "expenditures_cents": tcoc_record["expenditures_cents"],
        "assigned_beneficiaries": assigned,
        "quality": {"score_bps": standard["score_bps"], "met_standard": standard["met_standard"],
                    "met_alternative_standard": standard["met_alternative_standard"]},
    }
    references = {"assigned": tcoc_ref, "benchmark": benchmark_ref, "expenditures": tcoc_ref,
                  "quality": quality_ref}
    revenue_ref, revenue_record = _read_revenue(state, body, program, mssp_parameters_of(program), tcoc_record)
    revenue = None if revenue_record is None else revenue_record["revenue_cents"]
    high_revenue = None if revenue is None else mssp.is_high_revenue(revenue, tcoc_record["expenditures_cents"])
    disaster_ref, disaster = _read_disaster(state, body, program)
    for name, ref in (("revenue", revenue_ref), ("disaster", disaster_ref)):
        if ref is not None:
            references[name] = ref
    # §425.605(h)(ii): only a low-revenue ACO may share savings below the MSR; the other
    # conditions (≥ 5,000 assigned, E < B, an agreement from 2024) are checked by `settle`.
    eligible = high_revenue is False
    echo.update(participant_revenue_cents=revenue, high_revenue=high_revenue, small_population_msr_bps=None,
                disaster=to_wire(disaster), eligible_for_below_msr_savings=eligible)
    inputs = mssp.MsspInputs(aco_id=program_id, assigned_beneficiaries=assigned, benchmark_cents=benchmark_cents,
                             expenditures_cents=tcoc_record["expenditures_cents"], quality=quality_result,
                             participant_revenue_cents=revenue, disaster=disaster,
                             eligible_for_below_msr_savings=eligible)
    return inputs, echo, references


def _inputs_from_echo(program_id: str, echo: dict[str, Any]) -> mssp.MsspInputs:
    """Rebuild the inputs of a stored settlement (to re-run it for a true-up or an audit).

    Source-agnostic on purpose: a settlement stored before the client-figures form was
    removed (`"source": "client_figures"`) still re-runs the same way.
    """
    disaster_raw = echo["disaster"]
    disaster: mssp.DisasterAdjustment | None = None
    if isinstance(disaster_raw, dict) and "reduction_cents" in disaster_raw:
        disaster = mssp.DisasterAmount(disaster_raw["reduction_cents"])
    elif isinstance(disaster_raw, dict):
        numerator, denominator = disaster_raw["affected_beneficiary_share"]
        disaster = mssp.DisasterShare(disaster_raw["affected_months"], Fraction(numerator, denominator))
    quality = echo["quality"]
    return mssp.MsspInputs(
        aco_id=program_id,
        assigned_beneficiaries=echo["assigned_beneficiaries"],
        benchmark_cents=echo["benchmark_cents"],
        expenditures_cents=echo["expenditures_cents"],
        quality=mssp.QualityResult(Fraction(quality["score_bps"], BPS), quality["met_standard"],
                                   quality["met_alternative_standard"]),
        small_population_msr=bps_fraction(echo["small_population_msr_bps"]),
        participant_revenue_cents=echo["participant_revenue_cents"],
        disaster=disaster,
        eligible_for_below_msr_savings=echo["eligible_for_below_msr_savings"],
    )


def store_settlement(state: StateView, ctx: BlockContext, program: dict[str, Any], record: dict[str, Any]) -> None:
    """Write a settlement record and index it under its program (callers validated first)."""
    state.put(settlement_key(record["id"]), dict(
        record, program_id=program["id"], payer_org=program["payer_org"], parties=parties(program),
        height=ctx.height, time_ms=ctx.time_ms,
    ))
    state.append_entry(settlements_list_key(program["id"]), record["id"])
    state.emit("settlement_recorded", settlement_id=record["id"], kind=record["kind"],
               amount_due_cents=record["amount_due_cents"])


@REGISTRY.register("settlement_submit", roles={"payer"})
def handle_settlement_submit(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Settle an MSSP program's performance year from ledger-recorded inputs.

    B, E, N, quality, participant revenue and the disaster adjustment come only from the
    ledger records the body cites (`tcoc_ref`, `benchmark_ref`, `quality_ref`,
    `revenue_ref`, `disaster_ref`; see `read_mssp_record_inputs`) and the MSR from N: a
    payer cannot settle on figures it typed in, so a body carrying any of them
    (`SUBMITTED_FIGURES`, the removed client-figures form) is refused first. Stores
    every intermediate of `mssp.settle`; a final settlement after an interim one also
    stores `mssp.true_up` and owes only the difference.
    Raises SubmittedFiguresError (client figures), UnknownProgramError,
    ProgramStateError (inactive; interim after final), NotAPartyError (sender not
    the payer), AlreadySettledError (this stage exists), InvalidInputError /
    StaleReferenceError / MismatchedReferenceError / MissingInputError (a needed record
    not cited; no MSR below 500 assigned) / AmountOutOfRangeError (inputs),
    InvalidParameterError.
    """
    body = tx.body
    submitted = sorted(name for name in SUBMITTED_FIGURES if name in body)
    if submitted:
        raise SubmittedFiguresError(
            "settlement_submit does not take client figures (%s): the contract derives B, E, N and quality "
            "from the ledger records cited by tcoc_ref, benchmark_ref and quality_ref, participant revenue "
            "from revenue_ref, the disaster adjustment from disaster_ref and the MSR from N" % ", ".join(submitted))
    program_id = read_id(body, "program_id")
    program = require_active_program(state, program_id, "mssp")
    require_payer(state, tx, program)
    stage = mssp.SettlementStage(read_choice(body, "stage", ("interim", "final")))
    year = program["performance_year"]
    settlement_id = make_settlement_id(program_id, "mssp", year, stage.value)
    interim_id = make_settlement_id(program_id, "mssp", year, "interim")
    final_id = make_settlement_id(program_id, "mssp", year, "final")
    if state.exists(settlement_key(settlement_id)):
        raise AlreadySettledError("%s is already settled" % settlement_id)
    if stage is mssp.SettlementStage.INTERIM and state.exists(settlement_key(final_id)):
        raise ProgramStateError("%s: the final settlement exists; no interim after it" % program_id)
    inputs, echo, references = read_mssp_record_inputs(state, body, program)
    params = mssp_parameters_of(program)
    result = mssp.settle(params, inputs, stage)
    record: dict[str, Any] = {
        "id": settlement_id, "kind": "mssp", "period": year, "stage": stage.value,
        "inputs": echo, "references": references, "result": to_wire(result),
        "estimate": None, "true_up_cents": None, "amount_due_cents": result.earned_cents,
    }
    interim = state.get(settlement_key(interim_id)) if stage is mssp.SettlementStage.FINAL else None
    if interim is not None:
        estimate = mssp.settle(params, _inputs_from_echo(program_id, interim["inputs"]), mssp.SettlementStage.INTERIM)
        trued = mssp.true_up(estimate, result)
        record.update(estimate=interim_id, true_up_cents=trued.true_up_cents, amount_due_cents=trued.true_up_cents)
    store_settlement(state, ctx, program, record)


def get_settlement(state: StateView, settlement_id: Any) -> dict[str, Any]:
    """A settlement record. Raises InvalidInputError / UnknownProgramError."""
    if not isinstance(settlement_id, str) or not 0 < len(settlement_id) <= 300:
        raise InvalidInputError("settlement_id must be a settlement id string")
    record = state.get(settlement_key(settlement_id))
    if not isinstance(record, dict) or record.get("id") != settlement_id:  # e.g. a list counter key
        raise UnknownProgramError("no settlement %s" % settlement_id)
    return record


def record_disbursement(state: StateView, ctx: BlockContext, program: dict[str, Any],
                        settlement_id: str, amount_cents: int, suffix: tuple[str, ...] = (),
                        reference: dict[str, Any] | None = None) -> list[list[Any]]:
    """Split `amount_cents` among the program's participants and record the payment
    instruction (funds move off-ledger; the ledger holds who is owed what, and why).

    Raises AlreadySettledError if this disbursement was already recorded.
    """
    target = disbursement_key(settlement_id, *suffix)
    if state.exists(target):
        raise AlreadySettledError("%s was already disbursed" % "/".join((settlement_id, *suffix)))
    allocations = split_by_shares(amount_cents, program["participants"])
    state.put(target, {
        "settlement_id": settlement_id, "program_id": program["id"], "payer_org": program["payer_org"],
        "amount_cents": amount_cents, "allocations": allocations, "reference": reference,
        "height": ctx.height,
    })
    state.emit("disbursed", settlement_id=settlement_id, amount_cents=amount_cents, allocations=allocations)
    return allocations


@REGISTRY.register("settlement_disburse", roles={"payer"})
def handle_settlement_disburse(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record the payment of a settlement's amount due, split by allocation shares.

    Raises InvalidInputError, UnknownProgramError, NotAPartyError (not the payer),
    AlreadySettledError (already disbursed).
    """
    settlement = get_settlement(state, tx.body.get("settlement_id"))
    program = get_program(state, settlement["program_id"])
    require_payer(state, tx, program)
    if state.exists(disbursement_key(settlement["id"])):
        raise AlreadySettledError("%s was already disbursed" % settlement["id"])
    record_disbursement(state, ctx, program, settlement["id"], settlement["amount_due_cents"])

