"""Total cost of care of an ACO's attributed population, read from the ledger's own
attribution records and accumulated in pages.

Why: a settlement's expenditures E and assigned count N (METHODS §1.1.1) must be
the ones of the population the attribution contract assigned, not a list a client
chose, and one transaction (64 KiB) cannot carry a real ACO's population. So the
population is walked on-ledger, a bounded page per transaction, and the closed
record is what `settlement_submit` cites.

The population of (program, ACO, period) — deterministic, documented order:

1. the attribution runs of the program whose window is exactly
   [period_start, period_end], in the order the runs list recorded them (a run
   covers at most `attribution.MAX_PATIENTS_PER_RUN` patients, so a period has
   several runs);
2. within a run, its member list `attribution_members/<program>/<run>` (the order
   the run assessed them: sorted ids);
3. a member counts when the run's recorded result for it names this ACO and the
   run is the last run over this window that assessed it
   (`attribution_window/<program>/<start>/<end>/<patient>`). A patient re-assessed
   by a later run of the same window counts at that later run only, so the union
   of the runs counts every patient once, with its latest result for the window;
   runs over other windows (e.g. a prior year) do not interfere.

Cost per counted patient (METHODS §1.1.4, simplified): Σ allowed cents of the
patient's claim lines (`costs.patient_claims`) with a service date in the period,
capped at `truncation_cents` when given (one cap; the per-enrollment-type 99th
percentile caps are [verify] and not modelled). Patients with no claims count 0.

Attribution must not change under an open accumulation: a new run over the same
window appended after `tcoc_open` makes `tcoc_accumulate` / `tcoc_close` fail with
Conflict; `tcoc_open` with `restart: true` starts the open record again.

State: `tcoc/<program>/<aco>/<period_start>/<period_end>` → {"kind": "tcoc",
"program", "aco", "aco_org", "period_start", "period_end", "truncation_cents",
"status": open|closed, "runs": [run ids], "run_sizes": [n], "members_total",
"runs_count_at_open", "patients_processed", "assigned_count", "untruncated_cents",
"expenditures_cents" (truncated), "patients_truncated", "per_capita": [n, d] | None,
"per_capita_cents" | None, "opened_by", "opened_height", "closed_height"}.

Tx types (body; roles — the attribution program's payer organisation, or an auditor):

- `tcoc_open` {program, aco_id, period_start, period_end, truncation_cents?: int | None,
  restart?: bool}
- `tcoc_accumulate` {program, aco_id, period_start, period_end, cursor: patients
  processed so far (must equal the record's), limit: 1..MAX_PAGE}
- `tcoc_close` {program, aco_id, period_start, period_end}

ACO-participant revenue, walked the same way (a bounded page per transaction):

Why: CMS's revenue-based loss limits (BASIC C–E, Track 1+; METHODS §1.1.3: "X % of total
Parts A+B FFS revenue of the ACO participants") and the high-/low-revenue distinction
(§425.20; low-revenue ACOs may share savings below the MSR, §425.605(h)) need the ACO
participants' revenue. That is a figure about the participants' claims — every claim
billed under a participant TIN, for any patient, not only the assigned ones — so it is
computed from the ledger's claims instead of being typed into a settlement.

What counts: the claims listed under each participant TIN of the ACO
(`costs/tin/<tin>`, TINs in sorted order, claims in submission order) up to the count
each list had at `revenue_open`; of those, claims submitted by the program's payer
organisation (its adjudicated Parts A and B FFS claims; a provider's encounters carry
no payment); of their lines, those with a service date in the window. Revenue is the
Σ of their allowed cents — the measure the total cost of care uses for E, so that the
§425.20 comparison of revenue with E is like with like; Σ paid cents is kept beside it.
[verify] CMS measures both in Medicare payment amounts.

State: `participant_revenue/<program>/<aco>/<period_start>/<period_end>` → {"kind":
"participant_revenue", "program", "aco", "aco_org", "payer_org", "period_start",
"period_end", "status": open|closed, "tins": [sorted TINs], "tin_claims": [claims per TIN
at open], "claims_total", "claims_processed", "claims_counted", "lines_counted",
"revenue_cents" (Σ allowed), "paid_cents", "opened_by", "opened_height", "closed_height"}.

- `revenue_open` {program, aco_id, period_start, period_end, restart?: bool}
- `revenue_accumulate` {program, aco_id, period_start, period_end, cursor: claims
  processed so far (must equal the record's), limit: 1..MAX_PAGE}
- `revenue_close` {program, aco_id, period_start, period_end}

Roles as for the total cost of care. A change of the ACO's participant TINs after
`revenue_open` makes accumulate/close fail with Conflict until a `restart`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterator

from ledger.types import Tx

from contracts import accounts, attribution, costs, providers
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, Conflict, InvalidValue, NotFound, NotPermitted
from contracts.identifiers import PATIENT_PREFIX, PSEUDONYM_BYTES
from contracts.rounding import round_half_away_from_zero
from contracts.state import StateView, key

MAX_PAGE = 1_000
OPEN, CLOSED = "open", "closed"
ROLES = {"payer", "auditor"}


def tcoc_key(program: str, aco_id: str, period_start: int, period_end: int) -> bytes:
    return key("tcoc", program, aco_id, period_start, period_end)


def _target(state: StateView, tx: Tx) -> tuple[dict[str, Any], dict[str, Any], int, int]:
    """(program, aco, start, end) of the body; the sender must be the program's payer
    organisation or an auditor. Raises InvalidValue, NotFound, NotPermitted."""
    program_id = costs.check_id(tx.body.get("program"), "program")
    aco_id = costs.check_id(tx.body.get("aco_id"), "aco_id")
    start = costs.check_date(tx.body.get("period_start"), "period_start")
    end = costs.check_date(tx.body.get("period_end"), "period_end")
    if end < start:
        raise InvalidValue("period_end precedes period_start")
    program = providers.require_program(state, program_id)
    aco = providers.require_aco(state, program_id, aco_id)
    account = accounts.require_active(state, tx.sender)
    if account["role"] != "auditor" and account["org"] != program["org"]:
        raise NotPermitted("only the program's payer or an auditor computes its total cost of care")
    return program, aco, start, end


def _require_open(state: StateView, k: bytes, what: str = "total cost of care") -> dict[str, Any]:
    """The open paged record at `k` (`what` names it in errors).
    Raises NotFound (never opened) or AlreadyExists (already closed)."""
    record = state.get(k)
    if record is None:
        raise NotFound("no %s is open at %s" % (what, k.decode()))
    if record["status"] != OPEN:
        raise AlreadyExists("the %s at %s is closed" % (what, k.decode()))
    return record


def _check_attribution_unchanged(state: StateView, record: dict[str, Any]) -> None:
    """A run over the same window recorded after `tcoc_open` would change the
    population under the accumulation. Raises Conflict."""
    runs = attribution.runs_key(record["program"])
    count = state.get(runs + b"/count", 0)
    for n in range(record["runs_count_at_open"], count):
        run = state.get(runs + b"/i/" + b"%020d" % n)
        if (run["period_start"], run["period_end"]) == (record["period_start"], record["period_end"]):
            raise Conflict("attribution run %s over this window was recorded after tcoc_open: reopen with "
                           "restart" % run["run"])


def patient_cost_cents(state: StateView, pid: str, period_start: int, period_end: int) -> int:
    """Σ allowed cents of the patient's claim lines dated in the period (0 without claims).

    Claims are filed under the 16-byte pseudonym whose canonical id is `pid`
    (`identifiers.patient_id_of_pseudonym`); other ids have no claims.
    """
    raw = pid[len(PATIENT_PREFIX):]
    if len(raw) != 2 * PSEUDONYM_BYTES:
        return 0
    return sum(line["allowed_cents"] for claim in costs.patient_claims(state, bytes.fromhex(raw))
               for line in claim.lines if period_start <= line["service_date"] <= period_end)


def _next_page(record: dict[str, Any], cursor: int, limit: int, processed: str, total: str, noun: str) -> int:
    """Where the page starting at `cursor` stops, for a paged record whose items
    processed so far are `record[processed]` of `record[total]`.

    Raises Conflict when `cursor` is not the items processed so far (a page sent
    twice or out of order) or nothing is left.
    """
    if cursor != record[processed]:
        raise Conflict("cursor %d, but %d %ss are processed" % (cursor, record[processed], noun))
    if cursor >= record[total]:
        raise Conflict("every %s is processed: close it" % noun)
    return min(cursor + limit, record[total])


def _page_positions(groups: list[Any], sizes: list[int], cursor: int, stop: int) -> Iterator[tuple[Any, int]]:
    """(group, index within the group) of items cursor … stop−1 of the groups laid end to end."""
    offset = 0
    for group, size in zip(groups, sizes):
        for index in range(max(cursor, offset) - offset, min(stop, offset + size) - offset):
            yield group, index
        offset += size


@REGISTRY.register("tcoc_open", roles=ROLES)
def handle_tcoc_open(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Open the total cost of care of an ACO's attributed population for a window,
    fixing the attribution runs it walks (every run over exactly that window).

    Raises InvalidValue (dates, cap, restart flag), NotFound (program, ACO, no run
    over the window), NotPermitted, AlreadyExists (open without restart, or closed).
    """
    program, aco, start, end = _target(state, tx)
    cap = tx.body.get("truncation_cents")
    if cap is not None:
        costs.check_int(cap, "truncation_cents", 1, costs.MAX_CENTS)
    restart = costs.check_bool(tx.body.get("restart", False), "restart")
    k = tcoc_key(program["id"], aco["id"], start, end)
    existing = state.get(k)
    if existing is not None and (existing["status"] == CLOSED or not restart):
        raise AlreadyExists("total cost of care for %s/%s %d-%d is %s" % (program["id"], aco["id"], start, end,
                                                                          existing["status"]))
    runs = attribution.period_runs(state, program["id"], start, end)
    if not runs:
        raise NotFound("no attribution run of %s over %d-%d" % (program["id"], start, end))
    sizes = [state.get(attribution.run_members_key(program["id"], run["run"]) + b"/count", 0) for run in runs]
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(k, {
        "kind": "tcoc", "program": program["id"], "aco": aco["id"], "aco_org": aco["org"],
        "period_start": start, "period_end": end, "truncation_cents": cap, "status": OPEN,
        "runs": [run["run"] for run in runs], "run_sizes": sizes, "members_total": sum(sizes),
        "runs_count_at_open": state.get(attribution.runs_key(program["id"]) + b"/count", 0),
        "patients_processed": 0, "assigned_count": 0, "untruncated_cents": 0, "expenditures_cents": 0,
        "patients_truncated": 0, "per_capita": None, "per_capita_cents": None,
        "opened_by": org, "opened_height": ctx.height, "closed_height": None,
    })
    state.emit("tcoc_opened", program=program["id"], aco=aco["id"], runs=len(runs), members=sum(sizes))


@REGISTRY.register("tcoc_accumulate", roles=ROLES)
def handle_tcoc_accumulate(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Process the next `limit` members of the population, in the documented order.

    `cursor` must equal the members processed so far, so a page sent twice or out
    of order fails instead of counting a patient twice.
    Raises InvalidValue (limit, cursor type), NotFound (not open), AlreadyExists
    (closed), NotPermitted, Conflict (cursor mismatch, attribution changed, nothing left).
    """
    program, aco, start, end = _target(state, tx)
    cursor = costs.check_int(tx.body.get("cursor"), "cursor", 0, 10**9)
    limit = costs.check_int(tx.body.get("limit"), "limit", 1, MAX_PAGE)
    k = tcoc_key(program["id"], aco["id"], start, end)
    record = _require_open(state, k)
    stop = _next_page(record, cursor, limit, "patients_processed", "members_total", "member")
    _check_attribution_unchanged(state, record)
    totals = {name: record[name] for name in ("assigned_count", "untruncated_cents", "expenditures_cents",
                                              "patients_truncated")}
    for run_id, index in _page_positions(record["runs"], record["run_sizes"], cursor, stop):
        member = state.get(attribution.run_members_key(program["id"], run_id) + b"/i/" + b"%020d" % index)
        pid = member["patient"]
        latest = state.get(attribution.window_run_key(program["id"], start, end, pid))
        if member["aco"] == aco["id"] and latest == run_id:
            cost = patient_cost_cents(state, pid, start, end)
            totals["assigned_count"] += 1
            totals["untruncated_cents"] += cost
            if record["truncation_cents"] is not None and cost > record["truncation_cents"]:
                totals["patients_truncated"] += 1
                cost = record["truncation_cents"]
            totals["expenditures_cents"] += cost
    state.put(k, dict(record, patients_processed=stop, **totals))
    state.emit("tcoc_accumulated", program=program["id"], aco=aco["id"], processed=stop,
               assigned=totals["assigned_count"])


@REGISTRY.register("tcoc_close", roles=ROLES)
def handle_tcoc_close(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Close a fully processed total cost of care: fix the per-capita figure.

    The record is immutable afterwards; settlements cite it by `{key, hash}`.
    Raises InvalidValue, NotFound (not open), AlreadyExists (closed), NotPermitted,
    Conflict (members left to process, attribution changed).
    """
    program, aco, start, end = _target(state, tx)
    k = tcoc_key(program["id"], aco["id"], start, end)
    record = _require_open(state, k)
    if record["patients_processed"] != record["members_total"]:
        raise Conflict("%d of %d members processed" % (record["patients_processed"], record["members_total"]))
    _check_attribution_unchanged(state, record)
    per_capita = None
    if record["assigned_count"]:
        per_capita = Fraction(record["expenditures_cents"], record["assigned_count"])
    state.put(k, dict(record, status=CLOSED, closed_height=ctx.height,
                      per_capita=None if per_capita is None else [per_capita.numerator, per_capita.denominator],
                      per_capita_cents=None if per_capita is None else round_half_away_from_zero(per_capita)))
    state.emit("tcoc_closed", program=program["id"], aco=aco["id"], assigned=record["assigned_count"],
               expenditures_cents=record["expenditures_cents"])


# ------------------------------------------------------------------ ACO-participant revenue

REVENUE_KIND = "participant_revenue"


def revenue_key(program: str, aco_id: str, period_start: int, period_end: int) -> bytes:
    return key("participant_revenue", program, aco_id, period_start, period_end)


def _participant_tins(aco: dict[str, Any]) -> list[str]:
    return sorted(aco["participants"])


def _check_participants_unchanged(state: StateView, record: dict[str, Any]) -> None:
    """The participant list walked is the one fixed at `revenue_open`. Raises Conflict."""
    aco = providers.require_aco(state, record["program"], record["aco"])
    if _participant_tins(aco) != record["tins"]:
        raise Conflict("the participant TINs of %s changed after revenue_open: reopen with restart" % record["aco"])


@REGISTRY.register("revenue_open", roles=ROLES)
def handle_revenue_open(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Open the ACO-participant revenue of a window, fixing the participant TINs and how
    many claims of each TIN it walks (those recorded so far).

    Raises InvalidValue (dates, restart flag), NotFound (program, ACO), NotPermitted,
    AlreadyExists (open without restart, or closed).
    """
    program, aco, start, end = _target(state, tx)
    restart = costs.check_bool(tx.body.get("restart", False), "restart")
    k = revenue_key(program["id"], aco["id"], start, end)
    existing = state.get(k)
    if existing is not None and (existing["status"] == CLOSED or not restart):
        raise AlreadyExists("participant revenue for %s/%s %d-%d is %s" % (program["id"], aco["id"], start, end,
                                                                         existing["status"]))
    tins = _participant_tins(aco)
    counts = [state.get(costs.tin_index(tin) + b"/count", 0) for tin in tins]
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(k, {
        "kind": REVENUE_KIND, "program": program["id"], "aco": aco["id"], "aco_org": aco["org"],
        "payer_org": program["org"], "period_start": start, "period_end": end, "status": OPEN,
        "tins": tins, "tin_claims": counts, "claims_total": sum(counts), "claims_processed": 0,
        "claims_counted": 0, "lines_counted": 0, "revenue_cents": 0, "paid_cents": 0,
        "opened_by": org, "opened_height": ctx.height, "closed_height": None,
    })
    state.emit("revenue_opened", program=program["id"], aco=aco["id"], tins=len(tins), claims=sum(counts))


@REGISTRY.register("revenue_accumulate", roles=ROLES)
def handle_revenue_accumulate(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Process the next `limit` claims of the participant TINs, in the documented order.

    `cursor` must equal the claims processed so far, so a page sent twice or out of order
    fails instead of counting a claim twice.
    Raises InvalidValue (limit, cursor type), NotFound (not open), AlreadyExists (closed),
    NotPermitted, Conflict (cursor mismatch, participants changed, nothing left).
    """
    program, aco, start, end = _target(state, tx)
    cursor = costs.check_int(tx.body.get("cursor"), "cursor", 0, 10**9)
    limit = costs.check_int(tx.body.get("limit"), "limit", 1, MAX_PAGE)
    k = revenue_key(program["id"], aco["id"], start, end)
    record = _require_open(state, k, "participant revenue")
    stop = _next_page(record, cursor, limit, "claims_processed", "claims_total", "claim")
    _check_participants_unchanged(state, record)
    totals = {name: record[name] for name in ("claims_counted", "lines_counted", "revenue_cents", "paid_cents")}
    for tin, index in _page_positions(record["tins"], record["tin_claims"], cursor, stop):
        claim = costs.load_claim(state, state.get(costs.tin_index(tin) + b"/i/" + b"%020d" % index))
        if claim.header["submitted_by"] != record["payer_org"] or claim.header["kind"] == "encounter":
            continue
        lines = [line for line in claim.lines if start <= line["service_date"] <= end]
        if lines:
            totals["claims_counted"] += 1
            totals["lines_counted"] += len(lines)
            totals["revenue_cents"] += sum(line["allowed_cents"] for line in lines)
            totals["paid_cents"] += sum(line["paid_cents"] for line in lines)
    state.put(k, dict(record, claims_processed=stop, **totals))
    state.emit("revenue_accumulated", program=program["id"], aco=aco["id"], processed=stop,
               revenue_cents=totals["revenue_cents"])


@REGISTRY.register("revenue_close", roles=ROLES)
def handle_revenue_close(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Close a fully processed participant revenue; settlements cite it by `{key, hash}`.

    Raises InvalidValue, NotFound (not open), AlreadyExists (closed), NotPermitted,
    Conflict (claims left to process, participants changed).
    """
    program, aco, start, end = _target(state, tx)
    k = revenue_key(program["id"], aco["id"], start, end)
    record = _require_open(state, k, "participant revenue")
    if record["claims_processed"] != record["claims_total"]:
        raise Conflict("%d of %d claims processed" % (record["claims_processed"], record["claims_total"]))
    _check_participants_unchanged(state, record)
    state.put(k, dict(record, status=CLOSED, closed_height=ctx.height))
    state.emit("revenue_closed", program=program["id"], aco=aco["id"], revenue_cents=record["revenue_cents"])
