"""Attribution: which ACO (and clinician) is accountable for each patient.

Why: shared savings, quality and capitation are all computed over an ACO's
attributed population, so the assignment — and every change to it — must be
reproducible by any member and auditable by a regulator. The rules follow MSSP
beneficiary assignment (METHODS §1.2, 42 CFR 425.400–.404), in this order:

1. Eligibility in the window (§425.401(a)), from the program payer's coverage
   months: ≥ 1 month of Part A and B, no month with only one of them, no
   Medicare Advantage month. Ineligible patients are assigned to no one.
2. Voluntary alignment (§425.402(e)): a clinician the patient designated wins
   over claims. If that clinician is in no ACO of the program, claims-based
   assignment is blocked (CareLedger convention, METHODS conventions table). If
   the clinician participates in several ACOs, claims decide.
3. Step 1: if any primary-care service came from a primary-care practitioner
   (PCP, NP, PA, CNS by primary taxonomy), plurality of those allowed charges.
4. Step 2: otherwise, plurality of primary-care charges from the §425.402(c)
   specialists.
   Plurality is among entities: each ACO of the program (its participant TINs)
   and each TIN outside every ACO. Lines billed through a TIN listed by two or
   more ACOs are excluded (§425.400(a)(2)(iii)). "Greater than" is literal: a
   tie at the top assigns the patient to no one. Within the winning ACO the
   clinician is the one with the most allowed charges, then the most recent
   service date, then the lowest NPI (the documented tie-break).
5. Geographic fallback — program-defined, NOT an MSSP rule: an eligible patient
   with no qualifying primary-care service at all is assigned to the ACO the
   program maps the patient's service area to (`program_set_fallback`).
   Step 3 (PY2025 NP/PA/CNS expanded window) is not implemented.

Claims input contract (shared with `contracts/costs.py`): each claim line is an
entry of the authenticated list `claim/<patient id>` (`state.append_entry`, so
keys `claim/<patient id>/count` and `claim/<patient id>/i/<n>`), a map:

    {"patient": "pt-<hex>", "billing_tin": "9 digits", "rendering_npi": "10 digits",
     "service_date": yyyymmdd int, "hcpcs": str, "allowed_cents": int >= 0,
     "voided": bool (optional; true lines are ignored)}

`append_claim_line(state, line)` validates and writes one; `primary_care_lines`
reads them. A corrected line is rewritten in place with "voided": true and the
correction appended.

State layout:

- `patient/<id>` → {"id", "org", "agents": sorted keys, "service_area": str | None, "height"}
- `patient_directory` — authenticated list of patient ids, in registration order
- `coverage/<id>/<payer org>` → {"months": {yyyymm: {"part_a", "part_b", "advantage"}}}
- `consent/<id>/<consent id>` → {"id", "patient", "grantee_org", "purpose",
  "valid_from_ms", "expires_at_ms", "document_commitment", "granted_by", "revoked": None | {...}}
- `consent_index/<id>` → sorted consent ids; `consent_log/<id>` — authenticated list of grants/revocations
- `alignment/<id>` → {"npi", "active", "designated_at_ms", "height", "by"};
  `alignment_log/<id>` — authenticated list of designations and withdrawals
- `assignment/<program>/<id>` → {"aco", "npi", "basis", "reason", "run", "height",
  "period_start", "period_end", "aco_cents", "best_other_cents"}
- `assignment_history/<program>/<id>` — authenticated list of that patient's transitions
- `attribution/<program>/transitions` — authenticated list of every transition
  {"patient", "run", "change": new|dropped|changed, "from_aco", "to_aco", "from_npi",
  "to_npi", "basis", "reason", "height"}
- `attribution/<program>/runs` — authenticated list of run summaries;
  `attribution_run/<program>/<run id>` → the summary
- `attribution_members/<program>/<run id>` — authenticated list of {"patient", "aco"}:
  every patient the run assessed and its result, in the order it assessed them
  (sorted ids). With the runs list it is the recorded population a window's total
  cost of care walks (`contracts.tcoc`).
- `attribution_window/<program>/<start>/<end>/<patient>` → the id of the last run over
  exactly that window that assessed the patient (so the union of a window's runs
  counts each patient once, with its latest result for that window).

Tx types (body; roles):

- `patient_register` {patient, agents?: [keys], service_area?}; payer, patient_agent
- `coverage_enroll` {patient, months: [yyyymm], part_a, part_b, advantage}; payer
- `consent_grant` {patient, consent_id, grantee_org, purpose, valid_from_ms?,
  expires_at_ms?, document_commitment}; patient_agent (an agent of the patient)
- `consent_revoke` {patient, consent_id}; patient_agent
- `alignment_designate` {patient, npi}; patient_agent
- `alignment_withdraw` {patient}; patient_agent
- `attribution_run` {program_id, run_id, period_start, period_end, patients?}; payer
  (the program's payer organisation)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.types import Tx

from contracts import accounts, providers
from contracts.calendar import is_date, is_month, months_between
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import (
    AlreadyExists, Conflict, Duplicate, InvalidValue, MalformedTx, NotFound,
    NotPermitted, Revoked,
)
from contracts.governance import (
    commitment, flag, get_parameter, identifier, integer, require_org, sender_account,
)
from contracts.identifiers import is_npi, is_tin, patient_id
from contracts.state import StateView, key

CONSENT_PURPOSES = ("care_coordination", "operations", "payment", "quality_reporting", "research", "treatment")
MAX_PATIENTS_PER_RUN = 2000
MAX_MONTHS_PER_TX = 120
MAX_AGENTS = 8
MAX_ALLOWED_CENTS = 2**53

# Placeholders until governance sets the per-PY tables in parameter `code_lists`
# ({"primary_care_hcpcs", "pcp_taxonomies", "specialist_taxonomies"}). [verify]
# against the Assignment Methodology Specifications' code table for the PY.
DEFAULT_PRIMARY_CARE_HCPCS = tuple(
    ["%05d" % c for c in range(99202, 99206)] + ["%05d" % c for c in range(99211, 99216)]
    + ["%05d" % c for c in range(99304, 99311)] + ["99315", "99316", "99318"]
    + ["%05d" % c for c in range(99324, 99351)] + ["99484", "99487", "99489", "99490", "99491"]
    + ["99492", "99493", "99494", "99495", "99496", "G0402", "G0438", "G0439"]
)
DEFAULT_PCP_TAXONOMIES = (
    "207Q00000X",  # family medicine
    "207R00000X",  # internal medicine
    "208D00000X",  # general practice
    "208000000X",  # pediatrics
    "207QG0300X", "207RG0300X",  # geriatric medicine (family, internal)
    "363L00000X", "363LA2200X", "363LF0000X", "363LG0600X", "363LP0200X",  # nurse practitioners
    "363A00000X", "363AM0700X",  # physician assistants
    "364S00000X",  # clinical nurse specialist
)
DEFAULT_SPECIALIST_TAXONOMIES = (
    "207RC0000X",  # cardiovascular disease
    "204D00000X",  # osteopathic manipulative medicine
    "2084N0400X",  # neurology
    "207V00000X",  # obstetrics & gynecology
    "207QS0010X", "207RS0010X",  # sports medicine
    "208100000X",  # physical medicine & rehabilitation
    "2084P0800X",  # psychiatry
    "2084P0805X",  # geriatric psychiatry
    "207RP1001X",  # pulmonary disease
    "207RN0300X",  # nephrology
    "207RE0101X",  # endocrinology
    "193200000X",  # multi-specialty group
    "207RA0401X", "2084A0401X",  # addiction medicine
    "207RH0000X",  # hematology
    "207RH0003X",  # hematology & oncology
    "2083P0901X",  # preventive medicine
    "2084B0040X",  # behavioral neurology & neuropsychiatry
    "207RX0202X",  # medical oncology
    "207VX0201X",  # gynecologic oncology
)


# ------------------------------------------------------------ patients and coverage


def patient_key(pid: str) -> bytes:
    return key("patient", pid)


DIRECTORY_KEY = key("patient_directory")


def require_patient(state: StateView, pid: str) -> dict[str, Any]:
    """Raises NotFound."""
    record = state.get(patient_key(pid))
    if record is None:
        raise NotFound("no patient %s" % pid[:12])
    return record


def require_agent(state: StateView, tx: Tx) -> tuple[str, dict[str, Any]]:
    """The body's patient, if the sender is one of its agents. Raises MalformedTx, NotFound, NotPermitted."""
    pid = patient_id(tx.body.get("patient"))
    patient = require_patient(state, pid)
    if tx.sender not in patient["agents"]:
        raise NotPermitted("the sender is not an agent of this patient")
    return pid, patient


@REGISTRY.register("patient_register", roles={"payer", "patient_agent"})
def handle_patient_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register a patient pseudonym with the keys that may act for the patient.

    A patient agent registering a patient is always one of its agents. The
    optional service area feeds only the program-defined geographic fallback and
    must be coarse (a state, or a ZIP3 area of 20,000+ people).
    Raises MalformedTx, InvalidValue, Duplicate, AlreadyExists, NotFound (agent key).
    """
    account = sender_account(state, tx)
    pid = patient_id(tx.body.get("patient"))
    agents = tx.body.get("agents", [])
    if not isinstance(agents, list) or len(agents) > MAX_AGENTS:
        raise MalformedTx("agents must list at most %d public keys" % MAX_AGENTS)
    if not all(isinstance(a, bytes) and len(a) == 32 for a in agents):
        raise MalformedTx("agents must be 32-byte public keys")
    if account["role"] == "patient_agent" and tx.sender not in agents:
        agents = agents + [tx.sender]
    if len(set(agents)) != len(agents):
        raise Duplicate("an agent key is listed twice")
    for agent in agents:
        agent_account = accounts.get_account(state, agent)
        if agent_account is None or agent_account["role"] != "patient_agent":
            raise NotFound("agent %s is not a patient_agent account" % agent.hex()[:16])
    area = tx.body.get("service_area")
    if area is not None and (not isinstance(area, str) or providers.AREA_PATTERN.fullmatch(area) is None):
        raise InvalidValue("service_area must be a short code")
    if state.exists(patient_key(pid)):
        raise AlreadyExists("patient %s is registered" % pid[:12])
    state.put(patient_key(pid), {"id": pid, "org": account["org"], "agents": sorted(agents),
                                 "service_area": area, "height": ctx.height})
    state.append_entry(DIRECTORY_KEY, pid)
    state.emit("patient_registered", patient=pid)


def coverage_key(pid: str, payer_org: str) -> bytes:
    return key("coverage", pid, payer_org)


@REGISTRY.register("coverage_enroll", roles={"payer"})
def handle_coverage_enroll(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record (or correct) the sender payer's coverage of a patient for the listed months.

    Raises MalformedTx, InvalidValue (bad month), Duplicate, NotFound (patient).
    """
    account = sender_account(state, tx)
    pid = patient_id(tx.body.get("patient"))
    months = tx.body.get("months")
    if not isinstance(months, list) or not 1 <= len(months) <= MAX_MONTHS_PER_TX:
        raise MalformedTx("months must list 1..%d yyyymm months" % MAX_MONTHS_PER_TX)
    if not all(is_month(m) for m in months):
        raise InvalidValue("months are yyyymm integers")
    if len(set(months)) != len(months):
        raise Duplicate("a month is listed twice")
    flags = {name: flag(tx.body, name) for name in ("part_a", "part_b", "advantage")}
    require_patient(state, pid)
    record = state.get(coverage_key(pid, account["org"]), {"months": {}})
    merged = dict(record["months"])
    for month in months:
        merged[month] = flags
    state.put(coverage_key(pid, account["org"]), {"months": merged})
    state.emit("coverage_enrolled", patient=pid, payer=account["org"], months=len(months))


def eligibility_problem(state: StateView, pid: str, payer_org: str, start: int, end: int) -> str | None:
    """Why the patient is not assignable in the window (§425.401(a)), or None."""
    months = state.get(coverage_key(pid, payer_org), {"months": {}})["months"]
    window = [months[m] for m in months_between(start, end) if m in months]
    if any(m["advantage"] for m in window):
        return "ineligible_medicare_advantage_month"
    if any(m["part_a"] != m["part_b"] for m in window):
        return "ineligible_part_a_or_b_only_month"
    if not any(m["part_a"] and m["part_b"] for m in window):
        return "ineligible_no_part_a_and_b_month"
    return None


# ------------------------------------------------------------ consent and alignment


def consent_key(pid: str, consent_id: str) -> bytes:
    return key("consent", pid, consent_id)


@REGISTRY.register("consent_grant", roles={"patient_agent"})
def handle_consent_grant(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record a patient's consent for an organisation and purpose; the signed
    consent document stays off-ledger behind its salted commitment.

    Raises MalformedTx, InvalidValue (purpose, period), NotFound (patient or
    organisation), NotPermitted (not the patient's agent), AlreadyExists.
    """
    pid, _ = require_agent(state, tx)
    consent_id = identifier(tx.body, "consent_id")
    grantee = identifier(tx.body, "grantee_org")
    purpose = tx.body.get("purpose")
    if purpose not in CONSENT_PURPOSES:
        raise InvalidValue("purpose must be one of %s" % ", ".join(CONSENT_PURPOSES))
    valid_from = integer(tx.body, "valid_from_ms") if "valid_from_ms" in tx.body else ctx.time_ms
    expires_at = integer(tx.body, "expires_at_ms") if tx.body.get("expires_at_ms") is not None else None
    if expires_at is not None and expires_at <= valid_from:
        raise InvalidValue("expires_at_ms must be after valid_from_ms")
    document = commitment(tx.body, "document_commitment")
    require_org(state, grantee)
    if state.exists(consent_key(pid, consent_id)):
        raise AlreadyExists("consent %s exists" % consent_id)
    record = {"id": consent_id, "patient": pid, "grantee_org": grantee, "purpose": purpose,
              "valid_from_ms": valid_from, "expires_at_ms": expires_at, "document_commitment": document,
              "granted_by": tx.sender, "revoked": None}
    state.put(consent_key(pid, consent_id), record)
    index = key("consent_index", pid)
    state.put(index, sorted(state.get(index, []) + [consent_id]))
    state.append_entry(key("consent_log", pid), {"consent": consent_id, "action": "grant",
                                                  "by": tx.sender, "height": ctx.height})
    state.emit("consent_granted", patient=pid, consent=consent_id, grantee=grantee, purpose=purpose)


@REGISTRY.register("consent_revoke", roles={"patient_agent"})
def handle_consent_revoke(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Revoke a consent from this block on (the record stays, marked revoked).

    Raises MalformedTx, NotFound, NotPermitted, Revoked (already revoked).
    """
    pid, _ = require_agent(state, tx)
    consent_id = identifier(tx.body, "consent_id")
    record = state.get(consent_key(pid, consent_id))
    if record is None:
        raise NotFound("no consent %s" % consent_id)
    if record["revoked"] is not None:
        raise Revoked("consent %s is already revoked" % consent_id)
    state.put(consent_key(pid, consent_id),
              dict(record, revoked={"height": ctx.height, "time_ms": ctx.time_ms, "by": tx.sender}))
    state.append_entry(key("consent_log", pid), {"consent": consent_id, "action": "revoke",
                                                  "by": tx.sender, "height": ctx.height})
    state.emit("consent_revoked", patient=pid, consent=consent_id)


def has_consent(state: StateView, pid: str, org: str, purpose: str, time_ms: int) -> bool:
    """Whether an unrevoked consent covers `org` and `purpose` at `time_ms`."""
    for consent_id in state.get(key("consent_index", pid), []):
        record = state.get(consent_key(pid, consent_id))
        if (record["grantee_org"] == org and record["purpose"] == purpose and record["revoked"] is None
                and record["valid_from_ms"] <= time_ms
                and (record["expires_at_ms"] is None or time_ms < record["expires_at_ms"])):
            return True
    return False


def alignment_key(pid: str) -> bytes:
    return key("alignment", pid)


@REGISTRY.register("alignment_designate", roles={"patient_agent"})
def handle_alignment_designate(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Voluntary alignment (§425.402(e)): the patient names the clinician
    responsible for their overall care; it replaces any earlier designation.

    Raises MalformedTx, InvalidValue (bad NPI or not a practitioner), NotFound,
    NotPermitted, Conflict (the same clinician is already designated).
    """
    pid, _ = require_agent(state, tx)
    npi = providers.npi_field(tx.body, "npi")
    if providers.require_provider(state, npi)["entity"] != "individual":
        raise InvalidValue("a designation names a clinician, not an organisation")
    current = state.get(alignment_key(pid))
    if current is not None and current["active"] and current["npi"] == npi:
        raise Conflict("NPI %s is already designated" % npi)
    state.put(alignment_key(pid), {"npi": npi, "active": True, "designated_at_ms": ctx.time_ms,
                                   "height": ctx.height, "by": tx.sender})
    state.append_entry(key("alignment_log", pid), {"action": "designate", "npi": npi, "height": ctx.height})
    state.emit("alignment_designated", patient=pid, npi=npi)


@REGISTRY.register("alignment_withdraw", roles={"patient_agent"})
def handle_alignment_withdraw(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Withdraw the patient's designation; claims decide again from the next run.

    Raises MalformedTx, NotFound (no active designation), NotPermitted.
    """
    pid, _ = require_agent(state, tx)
    current = state.get(alignment_key(pid))
    if current is None or not current["active"]:
        raise NotFound("the patient has no active designation")
    state.put(alignment_key(pid), dict(current, active=False, height=ctx.height))
    state.append_entry(key("alignment_log", pid), {"action": "withdraw", "npi": current["npi"], "height": ctx.height})
    state.emit("alignment_withdrawn", patient=pid)


# ------------------------------------------------------------ claim lines (the costs contract)


@dataclass(frozen=True)
class ClaimLine:
    patient: str
    billing_tin: str
    rendering_npi: str
    service_date: int
    hcpcs: str
    allowed_cents: int


def check_claim_line(line: Any) -> ClaimLine:
    """Validate one claim line map. Raises MalformedTx or InvalidValue."""
    if not isinstance(line, dict):
        raise MalformedTx("a claim line is a map")
    pid = patient_id(line.get("patient"))
    if not is_tin(line.get("billing_tin")):
        raise InvalidValue("billing_tin is not a valid TIN")
    if not is_npi(line.get("rendering_npi")):
        raise InvalidValue("rendering_npi is not a valid NPI")
    if not is_date(line.get("service_date")):
        raise InvalidValue("service_date must be a yyyymmdd integer")
    hcpcs = line.get("hcpcs")
    if not isinstance(hcpcs, str) or not 1 <= len(hcpcs) <= 8:
        raise InvalidValue("hcpcs must be a code of 1..8 characters")
    allowed = line.get("allowed_cents")
    if isinstance(allowed, bool) or not isinstance(allowed, int) or not 0 <= allowed <= MAX_ALLOWED_CENTS:
        raise InvalidValue("allowed_cents must be a non-negative integer of cents")
    return ClaimLine(pid, line["billing_tin"], line["rendering_npi"], line["service_date"], hcpcs, allowed)


def append_claim_line(state: StateView, line: dict[str, Any]) -> int:
    """Append a validated claim line to `claim/<patient>`; returns its index.

    For `contracts/costs.py`. Raises MalformedTx or InvalidValue.
    """
    parsed = check_claim_line(line)
    return state.append_entry(key("claim", parsed.patient), dict(line, patient=parsed.patient))


def code_lists(state: StateView) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(primary-care HCPCS, PCP taxonomies, step-2 specialist taxonomies) from the
    governance parameter `code_lists`, else the module's placeholders."""
    lists = get_parameter(state, "code_lists") or {}
    return (frozenset(lists.get("primary_care_hcpcs", DEFAULT_PRIMARY_CARE_HCPCS)),
            frozenset(lists.get("pcp_taxonomies", DEFAULT_PCP_TAXONOMIES)),
            frozenset(lists.get("specialist_taxonomies", DEFAULT_SPECIALIST_TAXONOMIES)))


def primary_care_lines(state: StateView, program: str, period: tuple[int, int],
                       patients: list[str] | None = None) -> list[ClaimLine]:
    """Primary-care claim lines with service dates in `period` (yyyymmdd, inclusive)
    for `patients` (default: every registered patient), from any TIN.

    `program` names the program whose code lists apply (today: the network-wide
    `code_lists` parameter). Voided lines are skipped. The result is sorted, so
    callers never depend on the order claims were submitted in.
    Raises NotFound (program), MalformedTx/InvalidValue (a malformed stored line).
    """
    providers.require_program(state, program)
    start, end = period
    hcpcs, _, _ = code_lists(state)
    if patients is None:
        patients = [patient_id(p) for p in state.entries(DIRECTORY_KEY)]
    out = []
    for pid in sorted(set(patients)):
        for line in state.entries(key("claim", pid)):
            if line.get("voided"):
                continue
            parsed = check_claim_line(line)
            if start <= parsed.service_date <= end and parsed.hcpcs in hcpcs:
                out.append(parsed)
    return sorted(out, key=lambda l: (l.patient, l.service_date, l.billing_tin, l.rendering_npi,
                                      l.hcpcs, l.allowed_cents))


# ------------------------------------------------------------ assignment


@dataclass(frozen=True)
class Assignment:
    """One patient's result: `aco` None means assigned to no one, `reason` says why."""

    aco: str | None
    npi: str | None
    basis: str | None  # voluntary_alignment | step1 | step2 | geographic_fallback
    reason: str
    aco_cents: int = 0
    best_other_cents: int = 0


def _plurality(state: StateView, program: str, lines: list[ClaimLine], step: str) -> Assignment:
    totals: dict[tuple[str, str], int] = {}
    by_aco: dict[str, list[ClaimLine]] = {}
    for line in lines:
        acos = providers.acos_of_tin(state, program, line.billing_tin)
        if len(acos) > 1:
            continue  # §425.400(a)(2)(iii): a TIN in two ACOs is excluded
        entity = ("aco", acos[0]) if acos else ("tin", line.billing_tin)
        totals[entity] = totals.get(entity, 0) + line.allowed_cents
        if acos:
            by_aco.setdefault(acos[0], []).append(line)
    if not totals:
        return Assignment(None, None, None, "%s_all_services_excluded_multi_aco_tin" % step)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    (kind, winner), top = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    if len(ranked) > 1 and runner_up == top:
        return Assignment(None, None, None, "%s_plurality_tie" % step, 0, top)
    if kind == "tin":
        return Assignment(None, None, None, "%s_plurality_outside_aco" % step, 0, top)
    return Assignment(winner, _clinician(by_aco[winner]), step, "%s_plurality" % step, top, runner_up)


def _clinician(lines: list[ClaimLine]) -> str:
    """Most allowed charges, then most recent service, then lowest NPI."""
    cents: dict[str, int] = {}
    latest: dict[str, int] = {}
    for line in lines:
        cents[line.rendering_npi] = cents.get(line.rendering_npi, 0) + line.allowed_cents
        latest[line.rendering_npi] = max(latest.get(line.rendering_npi, 0), line.service_date)
    return sorted(cents, key=lambda npi: (-cents[npi], -latest[npi], npi))[0]


def assign_patient(state: StateView, program: dict[str, Any], period: tuple[int, int],
                   pid: str, lines: list[ClaimLine]) -> Assignment:
    """The MSSP steps for one patient (see the module docstring); pure over `state`."""
    problem = eligibility_problem(state, pid, program["org"], period[0], period[1])
    if problem is not None:
        return Assignment(None, None, None, problem)
    alignment = state.get(alignment_key(pid))
    if alignment is not None and alignment["active"]:
        pairs = providers.acos_of_npi(state, program["id"], alignment["npi"])
        acos = sorted({aco for aco, tin in pairs
                       if len(providers.acos_of_tin(state, program["id"], tin)) == 1})
        if len(acos) == 1:
            return Assignment(acos[0], alignment["npi"], "voluntary_alignment", "voluntary_alignment")
        if not pairs:
            return Assignment(None, None, None, "aligned_outside_aco")
    _, pcp, specialists = code_lists(state)
    pcp_lines = [l for l in lines if providers.primary_taxonomy(state, l.rendering_npi) in pcp]
    if pcp_lines:
        return _plurality(state, program["id"], pcp_lines, "step1")
    specialist_lines = [l for l in lines if providers.primary_taxonomy(state, l.rendering_npi) in specialists]
    if specialist_lines:
        return _plurality(state, program["id"], specialist_lines, "step2")
    area = state.get(patient_key(pid))["service_area"]
    fallback = program["geographic_fallback"].get(area) if area is not None else None
    if fallback is not None:
        return Assignment(fallback, None, "geographic_fallback", "geographic_fallback_program_defined")
    return Assignment(None, None, None, "no_primary_care_services")


def assignment_key(program: str, pid: str) -> bytes:
    return key("assignment", program, pid)


def transitions_key(program: str) -> bytes:
    return key("attribution", program, "transitions")


def runs_key(program: str) -> bytes:
    return key("attribution", program, "runs")


def run_members_key(program: str, run_id: str) -> bytes:
    return key("attribution_members", program, run_id)


def window_run_key(program: str, period_start: int, period_end: int, pid: str) -> bytes:
    return key("attribution_window", program, period_start, period_end, pid)


def period_runs(state: StateView, program: str, period_start: int, period_end: int) -> list[dict[str, Any]]:
    """The summaries of the program's runs over exactly this window, in recorded order."""
    return [run for run in state.entries(runs_key(program))
            if run["period_start"] == period_start and run["period_end"] == period_end]


def _change(previous: dict[str, Any] | None, result: Assignment) -> str | None:
    before = None if previous is None else (previous["aco"], previous["npi"])
    if before is None or before[0] is None:
        return None if result.aco is None else "new"
    if result.aco is None:
        return "dropped"
    return None if before == (result.aco, result.npi) else "changed"


@REGISTRY.register("attribution_run", roles={"payer"})
def handle_attribution_run(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Run assignment for a batch of patients (default: all registered) over a
    window and record each result; every change (new, dropped, changed) is
    appended, with its reason, to the program's and the patient's authenticated
    transition lists so a regulator can prove the full history.

    Raises MalformedTx, InvalidValue (bad dates, window over 24 months, batch too
    large), NotFound (program, patient), NotPermitted (not the program's payer),
    Duplicate (run id reused or a patient listed twice).
    """
    account = sender_account(state, tx)
    program = providers.require_program(state, identifier(tx.body, "program_id"))
    if program["org"] != account["org"]:
        raise NotPermitted("only the program's payer may run its assignment")
    run_id = identifier(tx.body, "run_id")
    start, end = tx.body.get("period_start"), tx.body.get("period_end")
    if not is_date(start) or not is_date(end) or start > end:
        raise InvalidValue("period_start and period_end are yyyymmdd dates, start ≤ end")
    if len(months_between(start, end)) > 24:
        raise InvalidValue("an assignment window spans at most 24 months")
    if "patients" in tx.body:
        raw = tx.body["patients"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PATIENTS_PER_RUN:
            raise MalformedTx("patients must list 1..%d patients" % MAX_PATIENTS_PER_RUN)
        patients = [patient_id(p) for p in raw]
        if len(set(patients)) != len(patients):
            raise Duplicate("a patient is listed twice")
        for pid in patients:
            require_patient(state, pid)
    else:
        patients = [patient_id(p) for p in state.entries(DIRECTORY_KEY)]
        if len(patients) > MAX_PATIENTS_PER_RUN:
            raise InvalidValue("more than %d patients: list a batch" % MAX_PATIENTS_PER_RUN)
    run_key = key("attribution_run", program["id"], run_id)
    if state.exists(run_key):
        raise Duplicate("run %r exists" % run_id)
    lines = primary_care_lines(state, program["id"], (start, end), patients)
    by_patient: dict[str, list[ClaimLine]] = {}
    for line in lines:
        by_patient.setdefault(line.patient, []).append(line)
    results = [(pid, assign_patient(state, program, (start, end), pid, by_patient.get(pid, [])))
               for pid in sorted(patients)]
    changes = assigned = 0
    for pid, result in results:
        previous = state.get(assignment_key(program["id"], pid))
        change = _change(previous, result)
        state.put(assignment_key(program["id"], pid), {
            "aco": result.aco, "npi": result.npi, "basis": result.basis, "reason": result.reason,
            "run": run_id, "height": ctx.height, "period_start": start, "period_end": end,
            "aco_cents": result.aco_cents, "best_other_cents": result.best_other_cents,
        })
        assigned += result.aco is not None
        state.append_entry(run_members_key(program["id"], run_id), {"patient": pid, "aco": result.aco})
        state.put(window_run_key(program["id"], start, end, pid), run_id)
        if change is not None:
            changes += 1
            entry = {"patient": pid, "run": run_id, "change": change,
                     "from_aco": None if previous is None else previous["aco"], "to_aco": result.aco,
                     "from_npi": None if previous is None else previous["npi"], "to_npi": result.npi,
                     "basis": result.basis, "reason": result.reason, "height": ctx.height}
            state.append_entry(transitions_key(program["id"]), entry)
            state.append_entry(key("assignment_history", program["id"], pid), entry)
    summary = {"run": run_id, "period_start": start, "period_end": end, "patients": len(results),
               "assigned": assigned, "changes": changes, "height": ctx.height, "time_ms": ctx.time_ms}
    state.put(run_key, summary)
    state.append_entry(runs_key(program["id"]), summary)
    state.emit("attribution_run", program=program["id"], run=run_id, patients=len(results),
               assigned=assigned, changes=changes)


# ------------------------------------------------------------ ATR export


NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ATR_PROVIDER_EXTENSION = "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributedProvider"
PATIENT_SYSTEM = "urn:careledger:patient"
ACO_SYSTEM = "urn:careledger:aco"
BASIS_EXTENSION = "urn:careledger:attribution-basis"


def _fhir_date(yyyymmdd: int) -> str:
    return "%04d-%02d-%02d" % (yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100)


def attribution_list(state: StateView, program_id: str, aco_id: str | None = None,
                     patients: list[str] | None = None) -> dict[str, Any]:
    """The program's current attribution as a FHIR R4 Group shaped like a Da Vinci
    ATR member attribution list: one member per assigned patient (pseudonym only),
    with the attributed clinician's NPI and the ACO. Pure: reads state, writes nothing.

    Raises NotFound (program or ACO), MalformedTx (bad patient id).
    """
    program = providers.require_program(state, program_id)
    if aco_id is not None:
        providers.require_aco(state, program_id, aco_id)
    if patients is None:
        patients = [patient_id(p) for p in state.entries(DIRECTORY_KEY)]
    members = []
    for pid in sorted(set(patient_id(p) for p in patients)):
        record = state.get(assignment_key(program_id, pid))
        if record is None or record["aco"] is None or (aco_id is not None and record["aco"] != aco_id):
            continue
        extensions = [{"url": BASIS_EXTENSION, "valueCode": record["basis"]},
                      {"url": ACO_SYSTEM, "valueIdentifier": {"system": ACO_SYSTEM, "value": record["aco"]}}]
        if record["npi"] is not None:
            extensions.append({"url": ATR_PROVIDER_EXTENSION, "valueReference": {
                "identifier": {"system": NPI_SYSTEM, "value": record["npi"]}}})
        members.append({
            "entity": {"identifier": {"system": PATIENT_SYSTEM, "value": pid}},
            "period": {"start": _fhir_date(record["period_start"]), "end": _fhir_date(record["period_end"])},
            "inactive": False,
            "extension": extensions,
        })
    return {
        "resourceType": "Group",
        "id": program_id if aco_id is None else "%s.%s" % (program_id, aco_id),
        "type": "person",
        "actual": True,
        "name": program["name"],
        "identifier": [{"system": "urn:careledger:program", "value": program_id}],
        "managingEntity": {"identifier": {"system": "urn:careledger:org", "value": program["org"]}},
        "quantity": len(members),
        "member": members,
    }
