"""Quality measurement (METHODS.md §1.5): measure definitions, submitted results,
exact performance rates, HEDIS continuous enrollment, weighted composites,
percentile benchmarks and patient-reported outcomes.

Performance rate (proportion measures), exactly as §1.5, as a Fraction:

    rate = (NUMER − NUMEX) / (DEN − DENEX − DENEXCEP)

with the population counts checked in §1.5's order: DEN ≤ IP, DENEX ≤ DEN,
NUMER ≤ DEN − DENEX, NUMEX ≤ NUMER, DENEXCEP ≤ DEN − DENEX − NUMER (exceptions
only among subjects not in the numerator). A zero performance denominator gives
no rate (stored as None), never a division. For an inverse measure (lower is
better, e.g. Quality ID 001 HbA1c > 9 %) the *performance* used by benchmarks and
composites is 1 − rate; the stored rate is always the plain rate.

Percentile definition (benchmarks): nearest rank. Over the n performances sorted
ascending, the p-th percentile (1 ≤ p ≤ 100) is the value at 1-based rank
⌈p·n/100⌉. It is always an observed value, needs no interpolation, and does not
depend on the order results were submitted in.

Roles: measure and composite definitions and benchmark/composite computations are
governance-ish and sent by a payer or an auditor (the program's owner or its
reviewer). Results are sent by a provider for its own organisation, or by a payer
for claims-based measures it computes for a provider. PRO scores come from the
provider that collected the questionnaire.

State:
- `quality/measure/<measure>` → definition (+ set_by, height)
- `quality/result/<program>/<period>/<measure>/<provider>` → counts, rate [n, d] | None, document
- `quality/results/<program>/<period>/<measure>` → authenticated list of provider ids
- `quality/benchmark/<program>/<period>/<measure>` → {n, percentiles: {p: [n, d]}}
- `quality/composite_def/<composite>`, `quality/composite/<composite>/<program>/<period>/<provider>`
- `quality/pro/<measure>/<program>/<period>/<provider>/<pseudonym hex>/<phase>` → score, document
- `quality/standard/<payment program>/<year>` → the MSSP quality performance standard
  assessment a settlement cites (see `handle_quality_standard_assess`)

MSSP quality performance standard (QPS) on ledger records (METHODS §1.1.3 quality
rule, §1.5 benchmarking). The payment program's `quality_rule` picks the test; the
distribution is the program's own per-measure benchmarks (`quality_benchmark_compute`
over the providers' results), CareLedger's stand-in for the national MIPS
distribution, which is not on the ledger. Thresholds by rule are [verify] per PY:

- `multiplier` (PY2013–2020, §425.502(b)(3), (d)): minimum attainment = the 30th
  percentile; met when every domain with a scored measure has ≥ 1 measure at or
  above it. (Pay-for-reporting in a first agreement year is not modelled.)
- `gate` (PY2021–2023, §425.512): met when the composite score is at least the
  composite of the 30th-percentile benchmarks of the same measures (a provider
  exactly at the 30th percentile everywhere).
- `gate_with_alternative` (PY2024+): as `gate` at the 40th percentile; the
  alternative QPS is met when one measure is at or above its 10th percentile and
  another at or above its 40th (the outcome-measure designation is [verify]: the
  ledger's measure definitions do not carry it).

The score the settlement uses is the composite score in basis points, rounded half
away from zero (the PUF publishes QualScore to 2–4 decimals).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable, Mapping, Sequence

from ledger.types import Tx

from contracts import accounts
from contracts.calendar import day_number
from contracts.costs import (
    GOVERNANCE_ROLES, check_bool, check_commitment, check_date, check_id, check_int, check_list,
    check_map, check_pseudonym,
)
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, InvalidValue, NotFound, NotPermitted
from contracts.rounding import ceil_div, round_half_away_from_zero
from contracts.state import StateView, key

POPULATIONS = ("initial_population", "denominator", "denominator_exclusion",
               "denominator_exception", "numerator", "numerator_exclusion")
REQUIRED_POPULATIONS = ("initial_population", "denominator", "numerator")
MAX_COUNT = 10**9
MAX_WEIGHT = 10_000
SCORINGS = ("proportion", "pro")
PHASES = ("baseline", "followup")
DEFAULT_PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]


# --------------------------------------------------------------- pure functions


def validate_counts(counts: Mapping[str, Any], populations: Sequence[str]) -> dict[str, int]:
    """Population counts in §1.5's order. Populations the measure does not use must be 0.

    Raises InvalidValue.
    """
    checked = {}
    for name in POPULATIONS:
        value = check_int(counts.get(name, 0), name, 0, MAX_COUNT)
        if value and name not in populations:
            raise InvalidValue("the measure has no %s population" % name)
        checked[name] = value
    ip, den = checked["initial_population"], checked["denominator"]
    denex, denexcep = checked["denominator_exclusion"], checked["denominator_exception"]
    numer, numex = checked["numerator"], checked["numerator_exclusion"]
    if den > ip:
        raise InvalidValue("denominator exceeds the initial population")
    if denex > den:
        raise InvalidValue("denominator exclusions exceed the denominator")
    if numer > den - denex:
        raise InvalidValue("numerator exceeds the denominator after exclusions")
    if numex > numer:
        raise InvalidValue("numerator exclusions exceed the numerator")
    if denexcep > den - denex - numer:
        raise InvalidValue("denominator exceptions must come from subjects not in the numerator")
    return checked


def performance_rate(counts: Mapping[str, int]) -> Fraction | None:
    """(NUMER − NUMEX) / (DEN − DENEX − DENEXCEP); None when the denominator is 0."""
    denominator = counts["denominator"] - counts["denominator_exclusion"] - counts["denominator_exception"]
    if denominator == 0:
        return None
    return Fraction(counts["numerator"] - counts["numerator_exclusion"], denominator)


def performance(rate: Fraction, inverse: bool) -> Fraction:
    """Higher is better: the rate, or 1 − rate for an inverse measure."""
    return 1 - rate if inverse else rate


def nearest_rank_percentile(values: Sequence[Fraction], p: int) -> Fraction:
    """The p-th percentile (1..100) by nearest rank: sorted(values)[⌈p·n/100⌉ − 1].

    Raises InvalidValue for no values or p outside 1..100.
    """
    if not values:
        raise InvalidValue("no values to take a percentile of")
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 100:
        raise InvalidValue("a percentile is an integer in 1..100")
    ordered = sorted(values)
    rank = ceil_div(p * len(ordered), 100)
    return ordered[max(rank, 1) - 1]


def continuously_enrolled(spans: Iterable[tuple[int, int]], period_start: int, period_end: int,
                          anchor_date: int | None = None, max_gaps: int = 1, max_gap_days: int = 45) -> bool:
    """HEDIS continuous enrollment over [period_start, period_end] (yyyymmdd, inclusive).

    Coverage spans are inclusive (start, end) and may overlap or touch. The uncovered
    stretches inside the period — including any at its start or end — are the gaps:
    at most `max_gaps` of them, each at most `max_gap_days` days, and the member must
    be enrolled on the anchor date (default: the period's last day).
    """
    first, last = day_number(period_start), day_number(period_end)
    anchor = day_number(anchor_date if anchor_date is not None else period_end)
    clipped = sorted((max(day_number(s), first), min(day_number(e), last)) for s, e in spans
                     if day_number(e) >= first and day_number(s) <= last and e >= s)
    gaps: list[int] = []
    covered_to = first - 1  # last covered day so far
    anchored = False
    for start, end in clipped:
        if start > covered_to + 1:
            gaps.append(start - covered_to - 1)
        covered_to = max(covered_to, end)
        anchored = anchored or start <= anchor <= end
    if covered_to < last:
        gaps.append(last - covered_to)
    return anchored and len(gaps) <= max_gaps and all(g <= max_gap_days for g in gaps)


def composite_score(domain_weights: Mapping[str, int], measures: Mapping[str, Mapping[str, Any]],
                    rates: Mapping[str, Fraction | None]) -> Fraction | None:
    """A weighted composite across domains (pure).

    Within a domain: the measure-weighted mean of performance (1 − rate for inverse
    measures) over the measures that have a rate. Across domains: the domain-weighted
    mean over the domains that have at least one scored measure (weights of empty
    domains are redistributed, as MSSP did when a domain had no scored measures).
    None if nothing is scored. Result in [0, 1].
    """
    total_weight = 0
    total = Fraction(0)
    for domain, domain_weight in sorted(domain_weights.items()):
        weight_sum = 0
        weighted = Fraction(0)
        for measure_id, definition in sorted(measures.items()):
            rate = rates.get(measure_id)
            if definition["domain"] != domain or rate is None:
                continue
            weight_sum += definition["weight"]
            weighted += definition["weight"] * performance(rate, definition["inverse"])
        if weight_sum:
            total += domain_weight * weighted / weight_sum
            total_weight += domain_weight
    return total / total_weight if total_weight else None


def pro_improvement_rate(pairs: Iterable[tuple[int, int]], mcid: int, higher_is_better: bool = True) -> Fraction | None:
    """Share of (baseline, follow-up) pairs that improved by at least the MCID."""
    pairs = list(pairs)
    if not pairs:
        return None
    improved = sum(1 for base, follow in pairs if (follow - base if higher_is_better else base - follow) >= mcid)
    return Fraction(improved, len(pairs))


def _pair(value: Fraction | None) -> list[int] | None:
    return None if value is None else [value.numerator, value.denominator]


# --------------------------------------------------------------- measures


def measure_key(measure_id: str) -> bytes:
    return key("quality", "measure", measure_id)


def validate_measure(body: Mapping[str, Any]) -> dict[str, Any]:
    """Raises InvalidValue."""
    measure_id = check_id(body.get("measure_id"), "measure_id")
    scoring = body.get("scoring", "proportion")
    if scoring not in SCORINGS:
        raise InvalidValue("scoring must be one of %s" % ", ".join(SCORINGS))
    record: dict[str, Any] = {
        "measure_id": measure_id, "scoring": scoring,
        "domain": check_id(body.get("domain"), "domain"),
        "weight": check_int(body.get("weight", 1), "weight", 1, MAX_WEIGHT),
        "inverse": check_bool(body.get("inverse", False), "inverse"),
        "criteria": check_commitment(body.get("criteria"), "criteria"),  # value sets + logic, committed
    }
    if scoring == "proportion":
        populations = check_list(body.get("populations"), "populations", len(POPULATIONS), 1)
        if len(set(populations)) != len(populations) or not set(populations) <= set(POPULATIONS):
            raise InvalidValue("populations must be distinct codes among %s" % ", ".join(POPULATIONS))
        if not set(REQUIRED_POPULATIONS) <= set(populations):
            raise InvalidValue("a proportion measure needs initial_population, denominator and numerator")
        record["populations"] = [p for p in POPULATIONS if p in populations]
        enrollment = body.get("continuous_enrollment")
        if enrollment is not None:
            enrollment = check_map(enrollment, "continuous_enrollment")
            enrollment = {"max_gaps": check_int(enrollment.get("max_gaps", 1), "max_gaps", 0, 12),
                          "max_gap_days": check_int(enrollment.get("max_gap_days", 45), "max_gap_days", 0, 366)}
        record["continuous_enrollment"] = enrollment
    else:
        low = check_int(body.get("score_min"), "score_min", -10**6, 10**6)
        record.update({
            "instrument": check_id(body.get("instrument"), "instrument"),
            "score_min": low,
            "score_max": check_int(body.get("score_max"), "score_max", low + 1, 10**6),
            "mcid": check_int(body.get("mcid", 1), "mcid", 0, 10**6),
        })
    return record


@REGISTRY.register("measure_define", roles=GOVERNANCE_ROLES)
def handle_measure_define(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Define a measure: {measure_id, scoring: proportion | pro, domain, weight, inverse,
    criteria: 32-byte commitment, populations: [codes] | instrument, score_min, score_max, mcid,
    continuous_enrollment: {max_gaps, max_gap_days} | None}.

    Raises InvalidValue or AlreadyExists (definitions are immutable: version the id).
    """
    record = validate_measure(tx.body)
    if state.exists(measure_key(record["measure_id"])):
        raise AlreadyExists("measure %s already defined" % record["measure_id"])
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(measure_key(record["measure_id"]), dict(record, set_by=org, height=ctx.height))
    state.emit("measure_defined", measure_id=record["measure_id"])


def _require_measure(state: StateView, measure_id: str, scoring: str) -> dict[str, Any]:
    measure = state.get(measure_key(measure_id))
    if measure is None:
        raise NotFound("no measure %s" % measure_id)
    if measure["scoring"] != scoring:
        raise InvalidValue("measure %s is scored as %s, not %s" % (measure_id, measure["scoring"], scoring))
    return measure


def _provider_for(state: StateView, tx: Tx, provider: str) -> None:
    """A provider sends only for its own organisation. Raises NotPermitted."""
    account = accounts.require_active(state, tx.sender)
    if account["role"] == "provider" and account["org"] != provider:
        raise NotPermitted("a provider submits only its own results")


def result_key(program: str, period: str, measure_id: str, provider: str) -> bytes:
    return key("quality", "result", program, period, measure_id, provider)


def results_index(program: str, period: str, measure_id: str) -> bytes:
    return key("quality", "results", program, period, measure_id)


@REGISTRY.register("quality_result_submit", roles={"provider", "payer"})
def handle_quality_result_submit(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Submit a provider's result: {measure_id, program, period, provider, counts: {population: n},
    document: 32-byte commitment of the MeasureReport}.

    Raises InvalidValue (counts inconsistent per §1.5), NotFound (measure),
    NotPermitted (another provider's result) or AlreadyExists.
    """
    measure_id = check_id(tx.body.get("measure_id"), "measure_id")
    program = check_id(tx.body.get("program"), "program")
    period = check_id(tx.body.get("period"), "period")
    provider = check_id(tx.body.get("provider"), "provider")
    document = check_commitment(tx.body.get("document"))
    measure = _require_measure(state, measure_id, "proportion")
    counts = validate_counts(check_map(tx.body.get("counts"), "counts"), measure["populations"])
    unknown = sorted(str(name) for name in tx.body["counts"] if name not in POPULATIONS)
    if unknown:
        raise InvalidValue("unknown population codes: %s" % ", ".join(unknown))
    _provider_for(state, tx, provider)
    k = result_key(program, period, measure_id, provider)
    if state.exists(k):
        raise AlreadyExists("a result for %s/%s/%s/%s exists" % (program, period, measure_id, provider))
    rate = performance_rate(counts)
    state.put(k, {"counts": counts, "rate": _pair(rate), "document": document,
                  "submitted_by": accounts.require_active(state, tx.sender)["org"], "height": ctx.height})
    state.append_entry(results_index(program, period, measure_id), provider)
    state.emit("quality_result", measure_id=measure_id, provider=provider, rate=_pair(rate))


def measure_performances(state: StateView, program: str, period: str, measure: Mapping[str, Any]) -> list[Fraction]:
    values = []
    for provider in state.entries(results_index(program, period, measure["measure_id"])):
        rate = state.get(result_key(program, period, measure["measure_id"], provider))["rate"]
        if rate is not None:
            values.append(performance(Fraction(*rate), measure["inverse"]))
    return values


@REGISTRY.register("quality_benchmark_compute", roles=GOVERNANCE_ROLES)
def handle_quality_benchmark_compute(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Percentile benchmarks of a measure's performance: {measure_id, program, period,
    percentiles: [1..100] (default deciles)}. Recomputing replaces the stored benchmark.

    Raises InvalidValue (bad percentiles, no scored results) or NotFound (measure).
    """
    measure_id = check_id(tx.body.get("measure_id"), "measure_id")
    program = check_id(tx.body.get("program"), "program")
    period = check_id(tx.body.get("period"), "period")
    percentiles = check_list(tx.body.get("percentiles", DEFAULT_PERCENTILES), "percentiles", 100, 1)
    for p in percentiles:
        check_int(p, "percentile", 1, 100)
    measure = _require_measure(state, measure_id, "proportion")
    values = measure_performances(state, program, period, measure)
    points = {p: _pair(nearest_rank_percentile(values, p)) for p in sorted(set(percentiles))}
    state.put(key("quality", "benchmark", program, period, measure_id),
              {"n": len(values), "percentiles": points, "height": ctx.height})
    state.emit("quality_benchmark", measure_id=measure_id, n=len(values))


# --------------------------------------------------------------- composites


@REGISTRY.register("composite_define", roles=GOVERNANCE_ROLES)
def handle_composite_define(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """{composite_id, measures: [measure ids], domain_weights: {domain: weight}}.

    Every measure must exist, be a proportion measure and sit in a weighted domain.
    Raises InvalidValue, NotFound or AlreadyExists.
    """
    composite_id = check_id(tx.body.get("composite_id"), "composite_id")
    measure_ids = [check_id(m, "measure") for m in check_list(tx.body.get("measures"), "measures", 200, 1)]
    if len(set(measure_ids)) != len(measure_ids):
        raise InvalidValue("a measure is listed twice")
    weights = check_map(tx.body.get("domain_weights"), "domain_weights")
    if not weights:
        raise InvalidValue("domain_weights is empty")
    for domain, weight in weights.items():
        check_id(domain, "domain")
        check_int(weight, "domain weight", 1, MAX_WEIGHT)
    for measure_id in measure_ids:
        if _require_measure(state, measure_id, "proportion")["domain"] not in weights:
            raise InvalidValue("measure %s is in a domain with no weight" % measure_id)
    k = key("quality", "composite_def", composite_id)
    if state.exists(k):
        raise AlreadyExists("composite %s already defined" % composite_id)
    state.put(k, {"measures": sorted(measure_ids), "domain_weights": dict(sorted(weights.items())),
                  "set_by": accounts.require_active(state, tx.sender)["org"], "height": ctx.height})
    state.emit("composite_defined", composite_id=composite_id)


@REGISTRY.register("composite_compute", roles=GOVERNANCE_ROLES)
def handle_composite_compute(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """{composite_id, program, period, provider}: the weighted composite of the provider's
    submitted results (missing results are unscored). Raises InvalidValue (nothing scored)
    or NotFound (composite)."""
    composite_id = check_id(tx.body.get("composite_id"), "composite_id")
    program = check_id(tx.body.get("program"), "program")
    period = check_id(tx.body.get("period"), "period")
    provider = check_id(tx.body.get("provider"), "provider")
    definition = state.get(key("quality", "composite_def", composite_id))
    if definition is None:
        raise NotFound("no composite %s" % composite_id)
    measures = {m: state.get(measure_key(m)) for m in definition["measures"]}
    rates: dict[str, Fraction | None] = {}
    for measure_id in definition["measures"]:
        result = state.get(result_key(program, period, measure_id, provider))
        rates[measure_id] = None if result is None or result["rate"] is None else Fraction(*result["rate"])
    value = composite_score(definition["domain_weights"], measures, rates)
    if value is None:
        raise InvalidValue("no scored measure for %s in %s/%s" % (provider, program, period))
    scored = sorted(m for m, r in rates.items() if r is not None)
    state.put(key("quality", "composite", composite_id, program, period, provider),
              {"score": _pair(value), "scored_measures": scored, "height": ctx.height})
    state.emit("composite_score", composite_id=composite_id, provider=provider, score=_pair(value))


# --------------------------------------------------------------- patient-reported outcomes


@REGISTRY.register("pro_submit", roles={"provider"})
def handle_pro_submit(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A PRO instrument score: {measure_id, program, period, patient, phase: baseline | followup,
    score: int in the measure's range, document: 32-byte commitment of the QuestionnaireResponse}.
    The provider is the sender's organisation. Only the score and the commitment go on-ledger.

    Raises InvalidValue, NotFound (measure) or AlreadyExists (this phase already recorded).
    """
    measure_id = check_id(tx.body.get("measure_id"), "measure_id")
    program = check_id(tx.body.get("program"), "program")
    period = check_id(tx.body.get("period"), "period")
    patient = check_pseudonym(tx.body.get("patient"))
    phase = tx.body.get("phase")
    if phase not in PHASES:
        raise InvalidValue("phase must be baseline or followup")
    document = check_commitment(tx.body.get("document"))
    measure = _require_measure(state, measure_id, "pro")
    value = check_int(tx.body.get("score"), "score", measure["score_min"], measure["score_max"])
    provider = accounts.require_active(state, tx.sender)["org"]
    k = key("quality", "pro", measure_id, program, period, provider, patient, phase)
    if state.exists(k):
        raise AlreadyExists("a %s score for this patient is recorded" % phase)
    state.put(k, {"score": value, "document": document, "height": ctx.height})
    state.emit("pro_recorded", measure_id=measure_id, phase=phase)


def enrollment_spans_ok(spans: Any, period_start: Any, period_end: Any) -> list[tuple[int, int]]:
    """Validate spans for `continuously_enrolled` given as [[start, end], …]. Raises InvalidValue."""
    check_date(period_start, "period_start")
    check_date(period_end, "period_end")
    out = []
    for span in check_list(spans, "spans", 1000):
        start, end = check_list(span, "span", 2, 2)
        out.append((check_date(start, "span start"), check_date(end, "span end")))
    return out


# --------------------------------------------------------------- MSSP quality performance standard

STANDARD_KIND = "mssp_quality_standard"
QPS_PERCENTILE = {"multiplier": 30, "gate": 30, "gate_with_alternative": 40}  # [verify] per PY
ALTERNATIVE_LOW_PERCENTILE = 10


def standard_key(program_id: str, year: int) -> bytes:
    return key("quality", "standard", program_id, year)


def _benchmark_at(benchmark: Mapping[str, Any] | None, measure_id: str, p: int) -> Fraction:
    """Raises NotFound when the measure has no benchmark at percentile p."""
    points = {} if benchmark is None else benchmark["percentiles"]
    if p not in points:
        raise NotFound("measure %s has no %dth-percentile benchmark" % (measure_id, p))
    return Fraction(*points[p])


def assess_standard(rule: str, definition: Mapping[str, Any], measures: Mapping[str, Mapping[str, Any]],
                    rates: Mapping[str, Fraction], benchmarks: Mapping[str, Mapping[str, Any] | None]
                    ) -> dict[str, Any]:
    """The QPS test of the module docstring (pure). `rates` holds the scored measures only.

    Raises InvalidValue (unknown rule, nothing scored) or NotFound (missing benchmark).
    """
    if rule not in QPS_PERCENTILE:
        raise InvalidValue("unknown quality rule %r" % (rule,))
    if not rates:
        raise InvalidValue("no scored measure to assess")
    p = QPS_PERCENTILE[rule]
    rows: dict[str, dict[str, Any]] = {}
    for measure_id in sorted(rates):
        value = performance(rates[measure_id], measures[measure_id]["inverse"])
        threshold = _benchmark_at(benchmarks.get(measure_id), measure_id, p)
        rows[measure_id] = {"performance": value, "threshold": threshold, "met": value >= threshold}
    score = composite_score(definition["domain_weights"], measures, rates)
    reference = None
    if rule == "multiplier":
        domains = {measures[m]["domain"] for m in rates}
        met = all(any(rows[m]["met"] for m in rates if measures[m]["domain"] == d) for d in domains)
    else:
        # the composite of a provider sitting exactly at the p-th percentile on every scored measure
        at_threshold = {m: (1 - rows[m]["threshold"]) if measures[m]["inverse"] else rows[m]["threshold"]
                        for m in rates}
        reference = composite_score(definition["domain_weights"], measures, at_threshold)
        met = score is not None and reference is not None and score >= reference
    alternative = False
    if rule == "gate_with_alternative":
        low = {m for m in rates if rows[m]["performance"]
               >= _benchmark_at(benchmarks.get(m), m, ALTERNATIVE_LOW_PERCENTILE)}
        high = {m for m in rates if rows[m]["met"]}
        alternative = any(a != b for a in low for b in high)
    return {"score": score, "reference_score": reference, "threshold_percentile": p, "measures": rows,
            "met_standard": met, "met_alternative_standard": alternative}


@REGISTRY.register("quality_standard_assess", roles=GOVERNANCE_ROLES)
def handle_quality_standard_assess(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Assess an MSSP program's quality performance standard for its performance year
    from the provider's composite and the measures' benchmarks: {program_id, composite_id,
    provider}. Quality results are filed under the payment program's id and the period
    str(performance year). Reassessing replaces the record (a settlement pins its hash).

    Who: the program's payer organisation, or an auditor.
    Raises InvalidValue (bad ids, not an MSSP program, nothing scored), NotFound (program,
    composite, composite score, benchmark), NotPermitted.
    """
    program_id = check_id(tx.body.get("program_id"), "program_id")
    composite_id = check_id(tx.body.get("composite_id"), "composite_id")
    provider = check_id(tx.body.get("provider"), "provider")
    program = state.get(key("payment_program", program_id))  # contracts.payments.programs.program_key
    if program is None:
        raise NotFound("no payment program %s" % program_id)
    if program["type"] != "mssp":
        raise InvalidValue("program %s is %s, not mssp" % (program_id, program["type"]))
    account = accounts.require_active(state, tx.sender)
    if account["role"] != "auditor" and account["org"] != program["payer_org"]:
        raise NotPermitted("only the program's payer or an auditor assesses its quality standard")
    year = program["performance_year"]
    period = str(year)
    definition = state.get(key("quality", "composite_def", composite_id))
    if definition is None:
        raise NotFound("no composite %s" % composite_id)
    composite = state.get(key("quality", "composite", composite_id, program_id, period, provider))
    if composite is None:
        raise NotFound("no %s composite for %s in %s/%s" % (composite_id, provider, program_id, period))
    measures = {m: state.get(measure_key(m)) for m in definition["measures"]}
    rates: dict[str, Fraction] = {}
    for measure_id in definition["measures"]:
        result = state.get(result_key(program_id, period, measure_id, provider))
        if result is not None and result["rate"] is not None:
            rates[measure_id] = Fraction(*result["rate"])
    benchmarks = {m: state.get(key("quality", "benchmark", program_id, period, m)) for m in rates}
    assessed = assess_standard(program["params"]["quality_rule"], definition, measures, rates, benchmarks)
    score = assessed["score"]
    state.put(standard_key(program_id, year), {
        "kind": STANDARD_KIND, "program_id": program_id, "year": year, "period": period,
        "composite_id": composite_id, "provider": provider, "rule": program["params"]["quality_rule"],
        "threshold_percentile": assessed["threshold_percentile"], "score": _pair(score),
        "score_bps": round_half_away_from_zero(score * 10_000),
        "reference_score": _pair(assessed["reference_score"]),
        "measures": {m: {"performance": _pair(row["performance"]), "threshold": _pair(row["threshold"]),
                         "met": row["met"]} for m, row in assessed["measures"].items()},
        "met_standard": assessed["met_standard"], "met_alternative_standard": assessed["met_alternative_standard"],
        "height": ctx.height,
    })
    state.emit("quality_standard_assessed", program_id=program_id, provider=provider,
               met_standard=assessed["met_standard"], score=_pair(score))
