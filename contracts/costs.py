"""Cost tracking: adjudicated claims and encounters, episodes of care, total
cost of care, and flags for potentially avoidable use.

Claims enter through `claim_submit` (a payer sends adjudicated claims of any
kind; a provider may send only `encounter` records, which carry no payment).
Codes are format-checked, amounts are integer cents in [0, MAX_CENTS], dates
are yyyymmdd ints. PHI never goes on the ledger: the patient is a 16-byte
random pseudonym and the claim document is a 32-byte salted commitment.

Record contract (other modules, e.g. attribution, read these; do not rename):

- `claimline/<claim_id>/<line, 20 digits>` → one adjudicated service line:
  {"claim_id": str, "line": int, "kind": str, "patient": bytes16,
   "billing_tin": str(9 digits) | None, "billing_npi": str(10), "rendering_npi": str(10),
   "service_date": int yyyymmdd, "hcpcs": str | None (CPT/HCPCS; None only on an
   institutional line identified by its revenue code), "revenue_code": str | None,
   "allowed_cents": int, "paid_cents": int, "units": int, "place_of_service": str | None}
- `claim/<patient id>` (the attribution contract, `contracts.attribution`): an
  authenticated list; every line with a CPT/HCPCS code and a billing TIN is also
  appended there through `attribution.append_claim_line` as
  {"patient": "pt-" + hex of the 16-byte pseudonym, "billing_tin", "rendering_npi",
   "service_date", "hcpcs", "allowed_cents", "claim_id", "line"}. Revenue-code-only
  institutional lines and lines without a billing TIN are not primary-care charges
  and are not appended.
- `claimhdr/<claim_id>` → the claim header: the fields above that are per claim,
  plus "from_date", "through_date", "drg", "diagnoses" (ICD-10-CM, no dot, first =
  principal), "document" (32 bytes), "line_count", "allowed_cents"/"paid_cents"
  (sums), "submitted_by" (org), "height".
- `costs/patient/<pseudonym hex>` and `costs/provider/<rendering npi>` and
  `costs/tin/<billing tin>`: authenticated lists (`StateView.append_entry`) whose
  entries are claim ids, in submission order.
- `claimdup/<sha256 hex>` → [claim_id, line]: the duplicate-line key, the hash of
  (patient, rendering NPI, billing NPI, service date, code, allowed, paid). A
  second line with the same key is rejected with `Duplicate`.
- `costs/episode_def/<id>`, `costs/episode/<id>/<pseudonym hex>`,
  `costs/params/avoidable`, `costs/flags/<pseudonym hex>`: see the handlers below.
  Total cost of care of an attributed population: `contracts.tcoc`.

Governance-ish parameters (episode definitions, avoidable-use code lists) are
set by a payer or an auditor: the payer owns its contract terms, an auditor
(e.g. a program's reviewer) may publish the reference lists; both are recorded
with the sending org so a regulator can see who set what.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from ledger import codec
from ledger.hashing import sha256
from ledger.types import Tx

from contracts import accounts, attribution, calendar, identifiers
from contracts.calendar import add_days, day_number
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, Duplicate, InvalidValue, NotFound, NotPermitted
from contracts.identifiers import PSEUDONYM_BYTES
from contracts.rounding import round_half_away_from_zero
from contracts.state import StateView, key

MAX_CENTS = 10**12  # $10 billion: anything larger is a data error, not a claim
MAX_LINES = 100
MAX_DIAGNOSES = 25
MAX_LIST = 5_000  # code lists and patient lists carried in one tx
COMMITMENT_BYTES = 32
GOVERNANCE_ROLES = {"payer", "auditor"}

CLAIM_KINDS = ("professional", "inpatient", "outpatient", "dme", "encounter")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
FIRST_DATE, LAST_DATE = 19000101, 29991231  # claims' dates: 1900-01-01 .. 2999-12-31
_DIGITS = {n: re.compile(r"[0-9]{%d}" % n) for n in (2, 3, 4, 9)}  # ASCII digits only
ED_VISIT_HCPCS = ("99281", "99282", "99283", "99284", "99285")


# --------------------------------------------------------------- validators
# Shared by quality.py and risk.py. Each raises InvalidValue naming the field.


def check_int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValue("%s must be an integer in [%d, %d]" % (what, low, high))
    return value


def check_str(value: Any, what: str, pattern: re.Pattern[str] = _ID) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidValue("%s is malformed: %r" % (what, value if isinstance(value, str) else type(value).__name__))
    return value


def check_id(value: Any, what: str) -> str:
    return check_str(value, what, _ID)


def check_bytes(value: Any, what: str, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidValue("%s must be %d bytes" % (what, length))
    return value


def check_pseudonym(value: Any, what: str = "patient") -> bytes:
    """The 16-byte claim pseudonym (`identifiers.is_pseudonym`). Raises InvalidValue."""
    if not identifiers.is_pseudonym(value):
        raise InvalidValue("%s must be %d bytes" % (what, PSEUDONYM_BYTES))
    return value


def check_commitment(value: Any, what: str = "document") -> bytes:
    return check_bytes(value, what, COMMITMENT_BYTES)


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue("%s must be true or false" % what)
    return value


def check_list(value: Any, what: str, max_items: int = MAX_LIST, min_items: int = 0) -> list[Any]:
    if not isinstance(value, list) or not min_items <= len(value) <= max_items:
        raise InvalidValue("%s must be a list of %d..%d items" % (what, min_items, max_items))
    return value


def check_map(value: Any, what: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise InvalidValue("%s must be a map" % what)
    return value


def check_hcpcs(value: Any, what: str = "hcpcs") -> str:
    """A CPT/HCPCS code (`identifiers.HCPCS_PATTERN`). Raises InvalidValue."""
    return check_str(value, what, identifiers.HCPCS_PATTERN)


def check_icd10(value: Any, what: str = "diagnosis") -> str:
    """An ICD-10-CM code without the dot (`identifiers.ICD10_PATTERN`). Raises InvalidValue."""
    return check_str(value, what, identifiers.ICD10_PATTERN)


is_valid_npi = identifiers.is_npi  # the name scripts/ingest_fhir.py uses


def check_npi(value: Any, what: str) -> str:
    """An NPI (`identifiers.is_npi`). Raises InvalidValue."""
    if not identifiers.is_npi(value):
        raise InvalidValue("%s is not a valid NPI (10 digits, Luhn check with prefix 80840)" % what)
    return value


def check_optional(value: Any, what: str, digits: int) -> str | None:
    if value is None:
        return None
    return check_str(value, what, _DIGITS[digits])


# --------------------------------------------------------------- dates (contracts.calendar)


def check_date(value: Any, what: str) -> int:
    """A yyyymmdd int naming a real calendar day in 1900..2999. Raises InvalidValue."""
    if isinstance(value, bool) or not isinstance(value, int) or not FIRST_DATE <= value <= LAST_DATE:
        raise InvalidValue("%s must be a yyyymmdd integer" % what)
    if not calendar.is_real_date(value):
        raise InvalidValue("%s is not a calendar date: %d" % (what, value))
    return value


# --------------------------------------------------------------- claims

def claim_header_key(claim_id: str) -> bytes:
    return key("claimhdr", claim_id)


def claim_line_key(claim_id: str, line: int) -> bytes:
    return key("claimline", claim_id, line)


def patient_index(patient: bytes) -> bytes:
    return key("costs", "patient", patient)


def provider_index(npi: str) -> bytes:
    return key("costs", "provider", npi)


def tin_index(tin: str) -> bytes:
    return key("costs", "tin", tin)


def duplicate_key(patient: bytes, rendering_npi: str, billing_npi: str, service_date: int,
                  code: str, allowed_cents: int, paid_cents: int) -> bytes:
    digest = sha256(codec.encode([patient, rendering_npi, billing_npi, service_date, code, allowed_cents, paid_cents]))
    return key("claimdup", digest)


def attribution_line(line: Mapping[str, Any]) -> dict[str, Any]:
    """The line in the attribution contract's shape (see the module docstring)."""
    return {"patient": identifiers.patient_id_of_pseudonym(line["patient"]), "billing_tin": line["billing_tin"],
            "rendering_npi": line["rendering_npi"], "service_date": line["service_date"],
            "hcpcs": line["hcpcs"], "allowed_cents": line["allowed_cents"],
            "claim_id": line["claim_id"], "line": line["line"]}


def _line_code(line: Mapping[str, Any]) -> str:
    return line["hcpcs"] if line["hcpcs"] is not None else "rev:" + line["revenue_code"]


def validate_claim(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a `claim_submit` body and return the normalised header with its lines.

    Raises InvalidValue on any malformed field (codes, dates, amounts, sizes).
    """
    claim_id = check_id(body.get("claim_id"), "claim_id")
    kind = body.get("kind")
    if kind not in CLAIM_KINDS:
        raise InvalidValue("kind must be one of %s" % ", ".join(CLAIM_KINDS))
    patient = check_pseudonym(body.get("patient"))
    billing_tin = check_optional(body.get("billing_tin"), "billing_tin", 9)
    billing_npi = check_npi(body.get("billing_npi"), "billing_npi")
    rendering_npi = check_npi(body.get("rendering_npi"), "rendering_npi")
    from_date = check_date(body.get("from_date"), "from_date")
    through_date = check_date(body.get("through_date"), "through_date")
    if through_date < from_date:
        raise InvalidValue("through_date precedes from_date")
    pos = check_optional(body.get("place_of_service"), "place_of_service", 2)
    drg = check_optional(body.get("drg"), "drg", 3)
    diagnoses = [check_icd10(d) for d in check_list(body.get("diagnoses"), "diagnoses", MAX_DIAGNOSES)]
    document = check_commitment(body.get("document"))
    raw_lines = check_list(body.get("lines"), "lines", MAX_LINES, 1)
    lines = []
    for n, raw in enumerate(raw_lines):
        raw = check_map(raw, "line %d" % n)
        hcpcs = None if raw.get("hcpcs") is None else check_hcpcs(raw.get("hcpcs"), "line %d hcpcs" % n)
        revenue = check_optional(raw.get("revenue_code"), "line %d revenue_code" % n, 4)
        if hcpcs is None and (revenue is None or kind not in ("inpatient", "outpatient")):
            raise InvalidValue("line %d needs a CPT/HCPCS code (a revenue code alone only on institutional claims)" % n)
        service_date = check_date(raw.get("service_date"), "line %d service_date" % n)
        if not from_date <= service_date <= through_date:
            raise InvalidValue("line %d service_date outside the claim's dates" % n)
        allowed = check_int(raw.get("allowed_cents"), "line %d allowed_cents" % n, 0, MAX_CENTS)
        paid = check_int(raw.get("paid_cents"), "line %d paid_cents" % n, 0, MAX_CENTS)
        if paid > allowed:
            raise InvalidValue("line %d paid_cents exceeds allowed_cents" % n)
        if kind == "encounter" and (allowed or paid):
            raise InvalidValue("an encounter record carries no payment amounts")
        units = check_int(raw.get("units", 1), "line %d units" % n, 0, 100_000)
        lines.append({
            "claim_id": claim_id, "line": n, "kind": kind, "patient": patient,
            "billing_tin": billing_tin, "billing_npi": billing_npi, "rendering_npi": rendering_npi,
            "service_date": service_date, "hcpcs": hcpcs, "revenue_code": revenue,
            "allowed_cents": allowed, "paid_cents": paid, "units": units, "place_of_service": pos,
        })
    header = {
        "claim_id": claim_id, "kind": kind, "patient": patient, "billing_tin": billing_tin,
        "billing_npi": billing_npi, "rendering_npi": rendering_npi, "from_date": from_date,
        "through_date": through_date, "place_of_service": pos, "drg": drg, "diagnoses": diagnoses,
        "document": document, "line_count": len(lines),
        "allowed_cents": sum(line["allowed_cents"] for line in lines),
        "paid_cents": sum(line["paid_cents"] for line in lines),
    }
    return {"header": header, "lines": lines}


@REGISTRY.register("claim_submit", roles={"payer", "provider"})
def handle_claim_submit(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record one adjudicated claim (payer) or encounter (provider) with its lines.

    Raises InvalidValue (malformed field), NotPermitted (a provider sending a
    non-encounter), AlreadyExists (claim id taken) or Duplicate (a line whose
    duplicate key matches an earlier line, here or in this claim).
    """
    claim = validate_claim(tx.body)
    header, lines = claim["header"], claim["lines"]
    account = accounts.require_active(state, tx.sender)
    if account["role"] == "provider" and header["kind"] != "encounter":
        raise NotPermitted("a provider may submit encounters only; adjudicated claims come from the payer")
    if state.exists(claim_header_key(header["claim_id"])):
        raise AlreadyExists("claim %s already recorded" % header["claim_id"])
    dup_keys = []
    for line in lines:
        dk = duplicate_key(line["patient"], line["rendering_npi"], line["billing_npi"], line["service_date"],
                           _line_code(line), line["allowed_cents"], line["paid_cents"])
        existing = state.get(dk)
        if existing is not None or dk in dup_keys:
            where = "claim %s line %d" % tuple(existing) if existing is not None else "this claim"
            raise Duplicate("line %d duplicates %s" % (line["line"], where))
        dup_keys.append(dk)
    attribution_lines = [attribution_line(line) for line in lines
                         if line["hcpcs"] is not None and line["billing_tin"] is not None]
    for line in attribution_lines:
        attribution.check_claim_line(line)  # raises before any write
    # -- all checks passed: write
    state.put(claim_header_key(header["claim_id"]), dict(header, submitted_by=account["org"], height=ctx.height))
    for line, dk in zip(lines, dup_keys):
        state.put(claim_line_key(header["claim_id"], line["line"]), line)
        state.put(dk, [header["claim_id"], line["line"]])
    for line in attribution_lines:
        attribution.append_claim_line(state, line)
    state.append_entry(patient_index(header["patient"]), header["claim_id"])
    state.append_entry(provider_index(header["rendering_npi"]), header["claim_id"])
    if header["billing_tin"] is not None:
        state.append_entry(tin_index(header["billing_tin"]), header["claim_id"])
    state.emit("claim_recorded", claim_id=header["claim_id"], lines=len(lines),
               allowed_cents=header["allowed_cents"], paid_cents=header["paid_cents"])


@dataclass(frozen=True)
class Claim:
    """A claim as the pure functions see it: the header plus its lines."""

    header: Mapping[str, Any]
    lines: tuple[Mapping[str, Any], ...]

    @property
    def claim_id(self) -> str:
        return self.header["claim_id"]


def load_claim(state: StateView, claim_id: str) -> Claim:
    """Raises NotFound if no such claim."""
    header = state.get(claim_header_key(claim_id))
    if header is None:
        raise NotFound("no claim %s" % claim_id)
    lines = tuple(state.get(claim_line_key(claim_id, n)) for n in range(header["line_count"]))
    return Claim(header, lines)


def patient_claims(state: StateView, patient: bytes) -> list[Claim]:
    """The patient's claims from the authenticated index, in submission order."""
    return [load_claim(state, claim_id) for claim_id in state.entries(patient_index(patient))]


def _claim_order(claim: Claim) -> tuple[int, int, str]:
    return (claim.header["from_date"], claim.header["through_date"], claim.claim_id)


# --------------------------------------------------------------- episodes of care


def validate_episode_definition(body: Mapping[str, Any]) -> dict[str, Any]:
    """Raises InvalidValue."""
    episode_id = check_id(body.get("episode_id"), "episode_id")
    hcpcs = sorted(set(check_hcpcs(c, "trigger_hcpcs") for c in check_list(body.get("trigger_hcpcs", []), "trigger_hcpcs")))
    drgs = sorted(set(check_str(d, "trigger_drgs", _DIGITS[3]) for d in check_list(body.get("trigger_drgs", []), "trigger_drgs")))
    if not hcpcs and not drgs:
        raise InvalidValue("an episode needs at least one trigger code")
    window = check_int(body.get("window_days"), "window_days", 1, 730)
    anchor = body.get("anchor", "discharge")
    if anchor not in ("admission", "discharge"):
        raise InvalidValue("anchor must be admission or discharge")
    return {"episode_id": episode_id, "trigger_hcpcs": hcpcs, "trigger_drgs": drgs,
            "window_days": window, "anchor": anchor}


def is_trigger(definition: Mapping[str, Any], claim: Claim) -> bool:
    if claim.header["drg"] is not None and claim.header["drg"] in definition["trigger_drgs"]:
        return True
    return any(line["hcpcs"] in definition["trigger_hcpcs"] for line in claim.lines if line["hcpcs"] is not None)


def find_episodes(definition: Mapping[str, Any], claims: Iterable[Claim]) -> list[dict[str, Any]]:
    """Group one patient's claims into episodes (pure).

    A trigger claim opens an episode: the trigger itself plus every claim whose
    from_date falls in (anchor, anchor + window_days], the anchor being the
    trigger's through_date ("discharge") or from_date ("admission"). A trigger
    inside an open window belongs to that episode and opens none (no overlap).
    Claims are taken in (from_date, through_date, claim_id) order, so the result
    is independent of submission order. Cost = Σ allowed and Σ paid cents.
    """
    episodes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for claim in sorted(claims, key=_claim_order):
        start = claim.header["from_date"]
        if current is not None and start <= current["end"]:
            current["claims"].append(claim.claim_id)
            current["allowed_cents"] += claim.header["allowed_cents"]
            current["paid_cents"] += claim.header["paid_cents"]
            continue
        if is_trigger(definition, claim):
            anchor = claim.header["through_date"] if definition["anchor"] == "discharge" else start
            current = {"trigger": claim.claim_id, "start": start,
                       "end": add_days(anchor, definition["window_days"]),
                       "claims": [claim.claim_id], "allowed_cents": claim.header["allowed_cents"],
                       "paid_cents": claim.header["paid_cents"]}
            episodes.append(current)
    return episodes


def episode_definition_key(episode_id: str) -> bytes:
    return key("costs", "episode_def", episode_id)


@REGISTRY.register("episode_define", roles=GOVERNANCE_ROLES)
def handle_episode_define(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Define an episode type: {episode_id, trigger_hcpcs, trigger_drgs, window_days, anchor}.

    Raises InvalidValue or AlreadyExists (definitions are immutable once set).
    """
    definition = validate_episode_definition(tx.body)
    k = episode_definition_key(definition["episode_id"])
    if state.exists(k):
        raise AlreadyExists("episode %s already defined" % definition["episode_id"])
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(k, dict(definition, set_by=org, height=ctx.height))
    state.emit("episode_defined", episode_id=definition["episode_id"])


@REGISTRY.register("episode_compute", roles=GOVERNANCE_ROLES)
def handle_episode_compute(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Compute and store a patient's episodes: {episode_id, patient}.

    Raises InvalidValue or NotFound (unknown episode type).
    """
    episode_id = check_id(tx.body.get("episode_id"), "episode_id")
    patient = check_pseudonym(tx.body.get("patient"))
    definition = state.get(episode_definition_key(episode_id))
    if definition is None:
        raise NotFound("no episode definition %s" % episode_id)
    episodes = find_episodes(definition, patient_claims(state, patient))
    state.put(key("costs", "episode", episode_id, patient), {"episodes": episodes, "height": ctx.height})
    state.emit("episodes_computed", episode_id=episode_id, count=len(episodes))


# --------------------------------------------------------------- total cost of care


def total_cost_of_care(claims_by_patient: Mapping[bytes, Sequence[Claim]], attributed: Iterable[bytes],
                       period_start: int, period_end: int, truncation_cents: int | None) -> dict[str, Any]:
    """Total cost of care of an attributed population over [period_start, period_end] (pure).

    Each attributed patient's cost is the sum of allowed cents of their claim lines
    whose service_date falls in the period; with `truncation_cents`, each patient's
    cost is capped at it (MSSP-style per-capita truncation, so one catastrophic case
    does not dominate). Patients with no claims count with cost 0. The per-capita
    figure is exact; `per_capita_cents` rounds it half away from zero.
    Raises InvalidValue if a patient is listed twice.
    """
    patients = sorted(attributed)
    if len(set(patients)) != len(patients):
        raise InvalidValue("a patient is listed twice in the attributed population")
    total = truncated = capped = 0
    for patient in patients:
        cost = sum(line["allowed_cents"] for claim in claims_by_patient.get(patient, ())
                   for line in claim.lines if period_start <= line["service_date"] <= period_end)
        total += cost
        if truncation_cents is not None and cost > truncation_cents:
            capped += 1
            cost = truncation_cents
        truncated += cost
    per_capita = Fraction(truncated, len(patients)) if patients else Fraction(0)
    return {"patients": len(patients), "total_cents": total, "truncated_total_cents": truncated,
            "patients_truncated": capped, "per_capita": [per_capita.numerator, per_capita.denominator],
            "per_capita_cents": round_half_away_from_zero(per_capita)}


# The ledger's total cost of care is `contracts.tcoc` (tcoc_open / tcoc_accumulate /
# tcoc_close): it walks the population the attribution contract recorded, in pages,
# instead of a client-supplied patient list. `total_cost_of_care` stays as the pure
# reference for a list already in hand.


# --------------------------------------------------------------- potentially avoidable use

AVOIDABLE_PARAMS_KEY = key("costs", "params", "avoidable")


def validate_avoidable_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """{acsc_icd10: [ICD-10 codes or 3+ character prefixes], ed_revenue_codes: [4 digits],
    ed_hcpcs: [codes], ed_places_of_service: [2 digits], readmission_days: int,
    planned_readmission_drgs: [3 digits]}. Raises InvalidValue."""
    acsc = sorted(set(check_icd10(c, "acsc_icd10") for c in check_list(body.get("acsc_icd10"), "acsc_icd10", MAX_LIST, 1)))
    revenue = sorted(set(check_str(c, "ed_revenue_codes", _DIGITS[4])
                         for c in check_list(body.get("ed_revenue_codes", []), "ed_revenue_codes")))
    hcpcs = sorted(set(check_hcpcs(c, "ed_hcpcs") for c in check_list(body.get("ed_hcpcs", list(ED_VISIT_HCPCS)), "ed_hcpcs")))
    pos = sorted(set(check_str(c, "ed_places_of_service", _DIGITS[2])
                     for c in check_list(body.get("ed_places_of_service", ["23"]), "ed_places_of_service")))
    days = check_int(body.get("readmission_days", 30), "readmission_days", 1, 365)
    planned = sorted(set(check_str(c, "planned_readmission_drgs", _DIGITS[3])
                         for c in check_list(body.get("planned_readmission_drgs", []), "planned_readmission_drgs")))
    return {"acsc_icd10": acsc, "ed_revenue_codes": revenue, "ed_hcpcs": hcpcs,
            "ed_places_of_service": pos, "readmission_days": days, "planned_readmission_drgs": planned}


def is_ed_visit(params: Mapping[str, Any], claim: Claim) -> bool:
    if claim.header["place_of_service"] in params["ed_places_of_service"]:
        return True
    return any(line["revenue_code"] in params["ed_revenue_codes"] or line["hcpcs"] in params["ed_hcpcs"]
               for line in claim.lines)


def _matches_code_list(code: str, code_list: Sequence[str]) -> bool:
    """A list entry matches a code equal to it or starting with it (category prefixes)."""
    return any(code.startswith(entry) for entry in code_list)


def avoidable_use_flags(params: Mapping[str, Any], claims: Iterable[Claim]) -> list[dict[str, Any]]:
    """Flags over one patient's claims (pure), in (from_date, through_date, claim_id) order:

    - `ed_acsc`: an ED visit whose principal (first) diagnosis is on the
      ambulatory-care-sensitive list (entries match as code prefixes);
    - `readmission`: an inpatient claim admitted 0..readmission_days days after the
      through_date of an earlier inpatient claim, unless its DRG is on the planned list.
    """
    flags: list[dict[str, Any]] = []
    last_discharge: tuple[int, str] | None = None
    for claim in sorted(claims, key=_claim_order):
        header = claim.header
        if claim.header["kind"] != "inpatient" and is_ed_visit(params, claim):
            if header["diagnoses"] and _matches_code_list(header["diagnoses"][0], params["acsc_icd10"]):
                flags.append({"claim_id": claim.claim_id, "flag": "ed_acsc", "date": header["from_date"]})
        if header["kind"] == "inpatient":
            if last_discharge is not None and header["drg"] not in params["planned_readmission_drgs"]:
                gap = day_number(header["from_date"]) - day_number(last_discharge[0])
                if 0 <= gap <= params["readmission_days"]:
                    flags.append({"claim_id": claim.claim_id, "flag": "readmission",
                                  "date": header["from_date"], "index_claim": last_discharge[1], "days": gap})
            if last_discharge is None or header["through_date"] >= last_discharge[0]:
                last_discharge = (header["through_date"], claim.claim_id)
    return flags


@REGISTRY.register("avoidable_use_params_set", roles=GOVERNANCE_ROLES)
def handle_avoidable_use_params_set(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Set the code lists for avoidable-use flags (replaces the previous set). Raises InvalidValue."""
    params = validate_avoidable_params(tx.body)
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(AVOIDABLE_PARAMS_KEY, dict(params, set_by=org, height=ctx.height))
    state.emit("avoidable_use_params_set", acsc_codes=len(params["acsc_icd10"]))


@REGISTRY.register("avoidable_use_compute", roles=GOVERNANCE_ROLES)
def handle_avoidable_use_compute(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Compute and store a patient's flags: {patient}. Raises InvalidValue or NotFound (no parameters)."""
    patient = check_pseudonym(tx.body.get("patient"))
    params = state.get(AVOIDABLE_PARAMS_KEY)
    if params is None:
        raise NotFound("avoidable-use code lists are not set")
    flags = avoidable_use_flags(params, patient_claims(state, patient))
    state.put(key("costs", "flags", patient), {"flags": flags, "height": ctx.height})
    state.emit("avoidable_use_computed", flags=len(flags))
