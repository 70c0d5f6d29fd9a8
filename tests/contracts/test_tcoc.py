"""Total cost of care over the attribution contract's recorded population, in pages
(contracts/tcoc.py), and the MSSP settlement derived from ledger records: the TCOC
record, the benchmark record (`benchmark_set`) and the quality standard record
(`quality_standard_assess`) — METHODS §1.1.1, §1.1.4, §1.2, §1.5.

Worked case (PY2025, window 2025-01-01..2025-12-31, truncation $1,000):
ann (river, $300 + $2,000 inpatient → truncated to $1,000), bob (river, $200),
cal (hill: outside every ACO → not counted), dan (river by claims recorded only in
attribution: cost 0). Runs b1 = {ann, bob}, b2 = {cal, dan} → assigned 3,
E = 1,000 + 200 + 0 = $1,200.00, untruncated $2,500, per capita 120,000/3 = 40,000 cents.
"""

from __future__ import annotations

import hashlib

import pytest

from contracts import attribution, tcoc
from contracts.state import key
from tests.contracts.helpers import (
    DR_HILL, DR_RIVER, HILL_TIN, RIVER_TIN, RIVER_TIN_2, SHARED_TIN, Chain, admin, commitment, provider_world,
)

PROGRAM = "mssp-2025"
START, END = 20250101, 20251231
WINDOW = {"program": PROGRAM, "aco_id": "river-aco", "period_start": START, "period_end": END}
TCOC_KEY = tcoc.tcoc_key(PROGRAM, "river-aco", START, END)
PAY_TCOC_KEY = tcoc.tcoc_key("mssp-pay", "river-aco", START, END)
REVENUE_KEY = tcoc.revenue_key(PROGRAM, "river-aco", START, END)
PAY_REVENUE_KEY = tcoc.revenue_key("mssp-pay", "river-aco", START, END)


def pseudonym(label: str) -> bytes:
    return hashlib.sha256(b"tcoc/" + label.encode()).digest()[:16]


ANN, BOB, CAL, DAN = (pseudonym(n) for n in ("ann", "bob", "cal", "dan"))


def pid(p: bytes) -> str:
    return "pt-" + p.hex()


def claim(chain: Chain, claim_id: str, who: bytes, tin: str, npi: str, cents: int, hcpcs: str | None = "99213",
          date: int = 20250310, kind: str = "professional") -> None:
    line = {"service_date": date, "hcpcs": hcpcs, "allowed_cents": cents, "paid_cents": cents}
    if hcpcs is None:
        line["revenue_code"] = "0120"
    chain.ok(admin("cms"), "claim_submit", {
        "claim_id": claim_id, "kind": kind, "patient": who, "billing_tin": tin, "billing_npi": npi,
        "rendering_npi": npi, "from_date": date, "through_date": date, "diagnoses": [],
        "document": commitment(claim_id), "lines": [line]})


def world() -> Chain:
    chain = Chain()
    provider_world(chain)
    for who in (ANN, BOB, CAL, DAN):
        chain.ok(admin("cms"), "patient_register", {"patient": pid(who), "agents": [admin("app")]})
        chain.ok(admin("cms"), "coverage_enroll", {"patient": pid(who), "months": list(range(202501, 202513)),
                                                   "part_a": True, "part_b": True, "advantage": False})
    claim(chain, "a1", ANN, RIVER_TIN, DR_RIVER, 30_000)
    claim(chain, "a2", ANN, RIVER_TIN, DR_RIVER, 200_000, hcpcs=None, kind="inpatient", date=20250601)
    claim(chain, "a0", ANN, RIVER_TIN, DR_RIVER, 999, date=20241231)  # outside the window
    claim(chain, "b1", BOB, RIVER_TIN, DR_RIVER, 20_000)
    claim(chain, "c1", CAL, HILL_TIN, DR_HILL, 50_000)
    line = {"patient": pid(DAN), "billing_tin": RIVER_TIN, "rendering_npi": DR_RIVER, "service_date": 20250401,
            "hcpcs": "99213", "allowed_cents": 10_000}
    chain.mutate(lambda state: attribution.append_claim_line(state, line))  # attribution only: cost 0
    run(chain, "b1", [ANN, BOB])
    run(chain, "b2", [CAL, DAN])
    run(chain, "other-window", [ANN], start=20240101, end=20241231)
    return chain


def run(chain: Chain, run_id: str, who: list[bytes], start: int = START, end: int = END) -> None:
    chain.ok(admin("cms"), "attribution_run", {"program_id": PROGRAM, "run_id": run_id, "period_start": start,
                                               "period_end": end, "patients": [pid(p) for p in who]})


def compute(chain: Chain, page: int, sender: bytes | None = None, cap: int | None = 100_000) -> dict:
    sender = sender or admin("audit")
    chain.ok(sender, "tcoc_open", dict(WINDOW, truncation_cents=cap))
    cursor = 0
    while cursor < chain.get(TCOC_KEY)["members_total"]:
        chain.ok(sender, "tcoc_accumulate", dict(WINDOW, cursor=cursor, limit=page))
        cursor = chain.get(TCOC_KEY)["patients_processed"]
    chain.ok(sender, "tcoc_close", WINDOW)
    return chain.get(TCOC_KEY)


FIGURES = ("assigned_count", "expenditures_cents", "untruncated_cents", "patients_truncated",
           "patients_processed", "per_capita", "per_capita_cents", "runs", "members_total", "status")


def test_the_worked_case_counts_the_union_of_the_windows_runs_with_truncation():
    record = compute(world(), page=1)
    assert record["runs"] == ["b1", "b2"] and record["run_sizes"] == [2, 2]
    assert record["assigned_count"] == 3
    assert record["expenditures_cents"] == 120_000
    assert record["untruncated_cents"] == 250_000
    assert record["patients_truncated"] == 1
    assert record["patients_processed"] == 4
    assert record["per_capita"] == [40_000, 1] and record["per_capita_cents"] == 40_000
    assert record["status"] == "closed" and record["aco_org"] == "river"


@pytest.mark.parametrize("page", [2, 3, 1_000])
def test_the_page_size_does_not_change_the_record(page):
    one = compute(world(), page=1)
    other = compute(world(), page=page)
    assert {f: one[f] for f in FIGURES} == {f: other[f] for f in FIGURES}


def test_a_patient_reassessed_by_a_later_run_of_the_window_counts_once():
    chain = world()
    run(chain, "b3", [ANN])
    record = compute(chain, page=1)
    assert record["runs"] == ["b1", "b2", "b3"] and record["members_total"] == 5
    assert record["assigned_count"] == 3 and record["expenditures_cents"] == 120_000


def test_without_truncation_the_whole_cost_counts():
    record = compute(world(), page=10, cap=None)
    assert record["expenditures_cents"] == 250_000 and record["patients_truncated"] == 0


def test_the_programs_payer_may_compute_it_but_not_another_payer_or_a_provider():
    chain = world()
    compute(chain, page=4, sender=admin("cms"))
    fresh = world()
    fresh.fails(admin("acme"), "tcoc_open", WINDOW, "not_permitted")
    fresh.fails(admin("river"), "tcoc_open", WINDOW, "not_permitted")


@pytest.mark.parametrize("body, code", [
    (dict(WINDOW, period_end=20241231), "invalid_value"),
    (dict(WINDOW, aco_id="no-such-aco"), "not_found"),
    (dict(WINDOW, period_start=20250201), "not_found"),  # no run over that window
    (dict(WINDOW, truncation_cents=0), "invalid_value"),
    (dict(WINDOW, program="no-program"), "not_found"),
])
def test_bad_opens_are_refused_and_change_nothing(body, code):
    world().fails(admin("audit"), "tcoc_open", body, code)


def test_pages_must_come_in_order_and_a_failed_page_changes_nothing():
    chain = world()
    chain.ok(admin("audit"), "tcoc_open", WINDOW)
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=1, limit=2), "conflict")
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=0), "invalid_value")
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=tcoc.MAX_PAGE + 1), "invalid_value")
    chain.fails(admin("audit"), "tcoc_close", WINDOW, "conflict")  # members left
    chain.ok(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=2))
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=2), "conflict")  # sent twice
    chain.ok(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=2, limit=2))
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=4, limit=2), "conflict")  # nothing left
    chain.fails(admin("audit"), "tcoc_open", WINDOW, "already_exists")
    chain.ok(admin("audit"), "tcoc_close", WINDOW)
    chain.fails(admin("audit"), "tcoc_close", WINDOW, "already_exists")
    chain.fails(admin("audit"), "tcoc_open", dict(WINDOW, restart=True), "already_exists")


def test_an_attribution_run_of_the_window_after_open_stops_the_accumulation_until_restart():
    chain = world()
    chain.ok(admin("audit"), "tcoc_open", WINDOW)
    chain.ok(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=1))
    run(chain, "late", [BOB])
    chain.fails(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=1, limit=1), "conflict")
    chain.ok(admin("audit"), "tcoc_open", dict(WINDOW, restart=True))
    record = chain.get(TCOC_KEY)
    assert record["runs"] == ["b1", "b2", "late"] and record["patients_processed"] == 0


def test_a_run_of_another_window_after_open_does_not_matter():
    chain = world()
    chain.ok(admin("audit"), "tcoc_open", WINDOW)
    run(chain, "other-2", [BOB], start=20240101, end=20241231)
    chain.ok(admin("audit"), "tcoc_accumulate", dict(WINDOW, cursor=0, limit=10))
    chain.ok(admin("audit"), "tcoc_close", WINDOW)


def test_the_attribution_run_records_its_members_in_the_order_it_assessed_them():
    chain = world()
    members = chain.entries(attribution.run_members_key(PROGRAM, "b1"))
    assert [m["patient"] for m in members] == sorted([pid(ANN), pid(BOB)])
    assert [m["aco"] for m in members] == ["river-aco", "river-aco"]
    assert chain.get(key("attribution_members", PROGRAM, "b2", "count")) == 2


# ------------------------------------------------------------------ ACO-participant revenue


def claim_by(chain: Chain, sender: str, claim_id: str, who: bytes, tin: str, cents: int, kind: str = "professional",
             date: int = 20250310) -> None:
    chain.ok(admin(sender), "claim_submit", {
        "claim_id": claim_id, "kind": kind, "patient": who, "billing_tin": tin, "billing_npi": DR_RIVER,
        "rendering_npi": DR_RIVER, "from_date": date, "through_date": date, "diagnoses": [],
        "document": commitment(claim_id),
        "lines": [{"service_date": date, "hcpcs": "99214", "allowed_cents": cents, "paid_cents": cents}]})


def revenue_world() -> Chain:
    """world() plus claims that must not count: another payer's claim and a provider's
    encounter under river's TIN. Claims under river's TINs: a1, a2, a0, b1, acme-1, enc-1."""
    chain = world()
    claim_by(chain, "acme", "acme-1", BOB, RIVER_TIN, 70_000)
    claim_by(chain, "river", "enc-1", BOB, RIVER_TIN, 0, kind="encounter")
    return chain


def compute_revenue(chain: Chain, page: int, sender: bytes | None = None) -> dict:
    sender = sender or admin("audit")
    chain.ok(sender, "revenue_open", WINDOW)
    cursor = 0
    while cursor < chain.get(REVENUE_KEY)["claims_total"]:
        chain.ok(sender, "revenue_accumulate", dict(WINDOW, cursor=cursor, limit=page))
        cursor = chain.get(REVENUE_KEY)["claims_processed"]
    chain.ok(sender, "revenue_close", WINDOW)
    return chain.get(REVENUE_KEY)


REVENUE_FIGURES = ("tins", "tin_claims", "claims_total", "claims_processed", "claims_counted", "lines_counted",
                   "revenue_cents", "paid_cents", "status")


def test_participant_revenue_is_the_payers_claims_under_the_acos_tins_in_the_window():
    record = compute_revenue(revenue_world(), page=1)
    assert record["kind"] == "participant_revenue" and record["status"] == "closed"
    assert record["tins"] == sorted([RIVER_TIN, RIVER_TIN_2, SHARED_TIN]) and record["claims_total"] == 6
    # a1 $300 + a2 $2,000 + b1 $200; not a0 (2024), acme-1 (another payer), enc-1 (an encounter),
    # nor c1 (hill's TIN); every patient's claims count, assigned or not
    assert record["revenue_cents"] == 250_000 and record["paid_cents"] == 250_000
    assert (record["claims_counted"], record["lines_counted"]) == (3, 3)
    assert (record["payer_org"], record["aco_org"]) == ("cms", "river")


@pytest.mark.parametrize("page", [2, 5, tcoc.MAX_PAGE])
def test_the_page_size_does_not_change_the_revenue(page):
    one = compute_revenue(revenue_world(), page=1)
    other = compute_revenue(revenue_world(), page=page)
    assert {f: one[f] for f in REVENUE_FIGURES} == {f: other[f] for f in REVENUE_FIGURES}


def test_revenue_pages_must_come_in_order_and_a_failed_page_changes_nothing():
    chain = revenue_world()
    chain.ok(admin("audit"), "revenue_open", WINDOW)
    chain.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=1, limit=2), "conflict")
    chain.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=0), "invalid_value")
    chain.fails(admin("audit"), "revenue_close", WINDOW, "conflict")  # claims left
    chain.ok(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=4))
    chain.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=4), "conflict")  # sent twice
    chain.ok(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=4, limit=4))
    chain.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=6, limit=1), "conflict")  # nothing left
    chain.fails(admin("audit"), "revenue_open", WINDOW, "already_exists")
    chain.ok(admin("audit"), "revenue_close", WINDOW)
    chain.fails(admin("audit"), "revenue_close", WINDOW, "already_exists")
    chain.fails(admin("audit"), "revenue_open", dict(WINDOW, restart=True), "already_exists")


def test_claims_recorded_after_revenue_open_are_not_counted():
    chain = revenue_world()
    chain.ok(admin("audit"), "revenue_open", WINDOW)
    claim_by(chain, "cms", "late-1", BOB, RIVER_TIN, 55_000)
    chain.ok(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=100))
    chain.ok(admin("audit"), "revenue_close", WINDOW)
    assert chain.get(REVENUE_KEY)["claims_total"] == 6 and chain.get(REVENUE_KEY)["revenue_cents"] == 250_000


def test_a_participant_change_after_revenue_open_stops_it_until_restart():
    chain = revenue_world()
    chain.ok(admin("audit"), "revenue_open", WINDOW)
    chain.ok(admin("river"), "aco_remove_participant", {"program_id": PROGRAM, "aco_id": "river-aco",
                                                        "tin": RIVER_TIN_2})
    chain.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=10), "conflict")
    chain.fails(admin("audit"), "revenue_close", WINDOW, "conflict")
    chain.ok(admin("audit"), "revenue_open", dict(WINDOW, restart=True))
    assert chain.get(REVENUE_KEY)["tins"] == sorted([RIVER_TIN, SHARED_TIN])


def test_the_programs_payer_or_an_auditor_computes_the_revenue_but_not_another_payer_or_a_provider():
    chain = revenue_world()
    assert compute_revenue(chain, page=10, sender=admin("cms"))["revenue_cents"] == 250_000
    fresh = revenue_world()
    fresh.fails(admin("acme"), "revenue_open", WINDOW, "not_permitted")
    fresh.fails(admin("river"), "revenue_open", WINDOW, "not_permitted")
    fresh.fails(admin("audit"), "revenue_open", dict(WINDOW, aco_id="no-such-aco"), "not_found")
    fresh.fails(admin("audit"), "revenue_accumulate", dict(WINDOW, cursor=0, limit=1), "not_found")


# ------------------------------------------------------------------ benchmark, quality standard, settlement

# Benchmark (per capita, cents): 0.1 × 36,000 + 0.3 × 39,000 + 0.6 × 40,000 = 39,300;
# + regional 700 = 40,000; × risk min(1.05, 1.03) × update 1.0 → 41,200 per capita.
# With N = 3: B = 123,600 cents; E = 120,000 → S = 3,600 (r = 2.9 %).
BENCHMARK = {"program_id": "mssp-pay", "by_per_capita_cents": [36_000, 39_000, 40_000],
             "regional_adjustment_cents": 700, "update_factor": [1, 1], "risk_ratio": [105, 100]}
MEASURES = (("bp", "chronic", False), ("a1c-poor", "chronic", True), ("screen", "prevention", False))
# (numerator, denominator) per provider and measure; river is the ACO reporting
RESULTS = {"river": {"bp": (80, 100), "a1c-poor": (10, 100), "screen": (70, 100)},
           "lake": {"bp": (60, 100), "a1c-poor": (30, 100), "screen": (50, 100)},
           "hill": {"bp": (40, 100), "a1c-poor": (50, 100), "screen": (90, 100)}}


def payment_world(year: int = 2025, track: str = "C") -> Chain:
    """BASIC Level C with the fixed 2 % MSR/MLR (three assigned beneficiaries are far below
    any MSR scale, so a variable MSR would be refused) and a revenue-based loss limit."""
    chain = world()
    chain.ok(admin("cms"), "program_register", {"program_id": "mssp-pay", "type": "mssp", "performance_year": year,
                                                "params": {"track": track, "msr_option_bps": 200},
                                                "participants": [["river", 10_000]]})
    chain.ok(admin("river"), "program_sign", {"program_id": "mssp-pay"})
    for measure_id, domain, inverse in MEASURES:
        chain.ok(admin("audit"), "measure_define", {
            "measure_id": measure_id, "scoring": "proportion", "domain": domain, "weight": 1, "inverse": inverse,
            "criteria": commitment(measure_id), "populations": ["initial_population", "denominator", "numerator"]})
    chain.ok(admin("audit"), "composite_define", {"composite_id": "aco-q", "measures": [m for m, _, _ in MEASURES],
                                                  "domain_weights": {"chronic": 1, "prevention": 1}})
    for provider, rows in RESULTS.items():
        for measure_id, (numer, den) in rows.items():
            chain.ok(admin("cms"), "quality_result_submit", {
                "measure_id": measure_id, "program": "mssp-pay", "period": str(year), "provider": provider,
                "counts": {"initial_population": den, "denominator": den, "numerator": numer},
                "document": commitment(provider + measure_id)})
        chain.ok(admin("audit"), "composite_compute", {"composite_id": "aco-q", "program": "mssp-pay",
                                                       "period": str(year), "provider": provider})
    for measure_id, _, _ in MEASURES:
        chain.ok(admin("audit"), "quality_benchmark_compute", {"measure_id": measure_id, "program": "mssp-pay",
                                                               "period": str(year)})
    return chain


def reference(chain: Chain, record_key: bytes) -> dict:
    return {"key": record_key.decode(), "hash": hashlib.sha256(chain.store[record_key]).digest()}


BENCHMARK_KEY = key("mssp_benchmark", "mssp-pay", 2025)
STANDARD_KEY = key("quality", "standard", "mssp-pay", 2025)


def ready(program_id_for_tcoc: str = PROGRAM) -> Chain:
    """Everything a record-based settlement cites; the TCOC is of the attribution program
    `mssp-2025`, so settlements of `mssp-pay` need its id to match (see the tests)."""
    chain = payment_world()
    chain.ok(admin("cms"), "benchmark_set", BENCHMARK)
    chain.ok(admin("audit"), "quality_standard_assess", {"program_id": "mssp-pay", "composite_id": "aco-q",
                                                         "provider": "river"})
    return chain


def test_the_benchmark_record_keeps_every_component_and_caps_the_risk_ratio():
    chain = payment_world()
    chain.ok(admin("cms"), "benchmark_set", BENCHMARK)
    record = chain.get(BENCHMARK_KEY)
    assert record["historical_per_capita"] == [39_300, 1]
    assert record["risk_ratio_applied"] == [103, 100]
    assert record["updated_per_capita"] == [41_200, 1]
    assert record["by_weights_bps"] == [1_000, 3_000, 6_000] and record["revision"] == 0
    chain.ok(admin("cms"), "benchmark_set", dict(BENCHMARK, regional_adjustment_cents=-300))
    assert chain.get(BENCHMARK_KEY)["revision"] == 1
    assert chain.get(BENCHMARK_KEY)["updated_per_capita"] == [40_170, 1]  # 39,000 × 1.03


@pytest.mark.parametrize("sender, body, code", [
    ("acme", BENCHMARK, "not_a_party"),
    ("cms", dict(BENCHMARK, program_id="nope"), "unknown_program"),
    ("cms", dict(BENCHMARK, by_per_capita_cents=[1, 2]), "payment_error"),
    ("cms", dict(BENCHMARK, by_per_capita_cents=[1, -2, 3]), "payment_error"),
    ("cms", dict(BENCHMARK, by_weights_bps=[5_000, 5_000, 1]), "payment_error"),
    ("cms", dict(BENCHMARK, update_factor=[0, 1]), "payment_error"),
    ("cms", dict(BENCHMARK, regional_adjustment_cents=-50_000), "payment_error"),  # not positive
])
def test_bad_benchmarks_are_refused_and_change_nothing(sender, body, code):
    chain = payment_world()
    chain.fails(admin(sender), "benchmark_set", body, code)


def test_the_quality_standard_is_derived_from_the_composite_and_the_benchmarks():
    chain = ready()
    record = chain.get(STANDARD_KEY)
    # PY2025 → gate_with_alternative at the 40th percentile (nearest rank of 3 = the 2nd value)
    assert record["rule"] == "gate_with_alternative" and record["threshold_percentile"] == 40
    # river: bp 0.8, a1c performance 0.9, screen 0.7 → chronic 0.85, prevention 0.7 → 0.775
    assert record["score"] == [31, 40] and record["score_bps"] == 7_750
    # at the 40th percentile: bp 0.6, a1c 0.7, screen 0.7 → (0.65 + 0.7) / 2 = 0.675
    assert record["reference_score"] == [27, 40]
    assert record["met_standard"] is True and record["met_alternative_standard"] is True


def test_a_provider_below_the_reference_composite_misses_the_standard():
    chain = payment_world()
    chain.ok(admin("audit"), "quality_standard_assess", {"program_id": "mssp-pay", "composite_id": "aco-q",
                                                         "provider": "hill"})
    # hill: bp 0.4, a1c 0.5, screen 0.9 → (0.45 + 0.9) / 2 = 0.675 = the reference: met ("at least")
    assert chain.get(STANDARD_KEY)["met_standard"] is True
    chain.ok(admin("audit"), "quality_standard_assess", {"program_id": "mssp-pay", "composite_id": "aco-q",
                                                         "provider": "lake"})
    # lake: bp 0.6, a1c 0.7, screen 0.5 → (0.65 + 0.5) / 2 = 0.575 < 0.675
    record = chain.get(STANDARD_KEY)
    assert record["met_standard"] is False and record["provider"] == "lake"


@pytest.mark.parametrize("sender, body, code", [
    ("audit", {"program_id": "nope", "composite_id": "aco-q", "provider": "river"}, "not_found"),
    ("audit", {"program_id": "mssp-pay", "composite_id": "nope", "provider": "river"}, "not_found"),
    ("audit", {"program_id": "mssp-pay", "composite_id": "aco-q", "provider": "nobody"}, "not_found"),
    ("acme", {"program_id": "mssp-pay", "composite_id": "aco-q", "provider": "river"}, "not_permitted"),
])
def test_bad_quality_assessments_are_refused_and_change_nothing(sender, body, code):
    payment_world().fails(admin(sender), "quality_standard_assess", body, code)


def test_the_multiplier_rule_needs_minimum_attainment_in_every_domain():
    from contracts import quality
    from fractions import Fraction as F

    measures = {"bp": {"domain": "chronic", "inverse": False, "weight": 1},
                "screen": {"domain": "prevention", "inverse": False, "weight": 1}}
    definition = {"domain_weights": {"chronic": 1, "prevention": 1}}
    benchmarks = {m: {"percentiles": {30: [1, 2], 10: [1, 10]}} for m in measures}
    met = quality.assess_standard("multiplier", definition, measures, {"bp": F(6, 10), "screen": F(4, 10)}, benchmarks)
    assert met["met_standard"] is False  # prevention has no measure at the 30th percentile
    met = quality.assess_standard("multiplier", definition, measures, {"bp": F(6, 10), "screen": F(5, 10)}, benchmarks)
    assert met["met_standard"] is True and met["reference_score"] is None


def settle_body(chain: Chain, tcoc_key: bytes | None = None, **refs) -> dict:
    body = {"program_id": "mssp-pay", "stage": "final", "tcoc_ref": reference(chain, tcoc_key or PAY_TCOC_KEY),
            "benchmark_ref": reference(chain, BENCHMARK_KEY), "quality_ref": reference(chain, STANDARD_KEY)}
    if PAY_REVENUE_KEY in chain.store:
        body["revenue_ref"] = reference(chain, PAY_REVENUE_KEY)
    body.update(refs)
    return body


def tcoc_for_payment_program(chain: Chain) -> None:
    """A TCOC of attribution program `mssp-pay` (same id as the payment program)."""
    chain.ok(admin("cms"), "program_create", {"program_id": "mssp-pay", "name": "MSSP paid"})
    chain.ok(admin("river"), "aco_register", {"program_id": "mssp-pay", "aco_id": "river-aco", "name": "River"})
    chain.ok(admin("river"), "aco_add_participant", {"program_id": "mssp-pay", "aco_id": "river-aco",
                                                     "tin": RIVER_TIN, "npis": [DR_RIVER]})
    chain.ok(admin("cms"), "attribution_run", {"program_id": "mssp-pay", "run_id": "r1", "period_start": START,
                                               "period_end": END, "patients": [pid(p) for p in (ANN, BOB, CAL, DAN)]})
    window = dict(WINDOW, program="mssp-pay")
    chain.ok(admin("audit"), "tcoc_open", dict(window, truncation_cents=100_000))
    chain.ok(admin("audit"), "tcoc_accumulate", dict(window, cursor=0, limit=10))
    chain.ok(admin("audit"), "tcoc_close", window)
    chain.ok(admin("audit"), "revenue_open", window)
    chain.ok(admin("audit"), "revenue_accumulate", dict(window, cursor=0, limit=10))
    chain.ok(admin("audit"), "revenue_close", window)


def test_the_settlement_takes_every_input_from_the_cited_records():
    chain = ready()
    tcoc_for_payment_program(chain)
    body = settle_body(chain)
    chain.ok(admin("cms"), "settlement_submit", body)
    record = chain.get(key("settlement", "mssp-pay/mssp/2025/final"))
    tc = chain.get(PAY_TCOC_KEY)
    assert tc["assigned_count"] == 3 and tc["expenditures_cents"] == 120_000
    inputs = record["inputs"]
    assert inputs["source"] == "ledger_records"
    assert inputs["assigned_beneficiaries"] == 3 and inputs["expenditures_cents"] == 120_000
    assert inputs["benchmark_cents"] == 123_600  # 41,200 × 3
    assert inputs["quality"] == {"score_bps": 7_750, "met_standard": True, "met_alternative_standard": True}
    assert record["references"]["assigned"] == record["references"]["expenditures"] == body["tcoc_ref"]
    assert record["references"]["benchmark"] == body["benchmark_ref"]
    assert record["result"]["gross_savings_cents"] == 3_600
    # r = 3,600 / 123,600 ≈ 2.9 % ≥ MSR 2 %; BASIC C: 50 % × 0.98 → 1,764 cents
    assert record["result"]["earned_cents"] == 1_764
    # the participants' revenue from the claims of river's TINs (a1 + a2 + b1), high revenue
    assert inputs["participant_revenue_cents"] == 250_000 and inputs["high_revenue"] is True
    assert record["references"]["revenue"] == body["revenue_ref"]


def test_mismatched_stale_or_open_records_are_refused_and_change_nothing():
    chain = ready()
    # the TCOC of attribution program mssp-2025 is another program's
    compute(chain, page=10)
    chain.fails(admin("cms"), "settlement_submit", settle_body(chain, TCOC_KEY), "mismatched_reference")
    tcoc_for_payment_program(chain)
    good = settle_body(chain)
    # a record of the wrong kind, and a benchmark record cited as the quality record
    chain.fails(admin("cms"), "settlement_submit", dict(good, quality_ref=good["benchmark_ref"]),
                "mismatched_reference")
    chain.fails(admin("cms"), "settlement_submit", dict(good, tcoc_ref=reference(chain, key("org", "cms"))),
                "mismatched_reference")
    # Level C has a revenue-based loss limit: the participants' revenue must be cited, and
    # it must be the revenue of this program's ACO (not the attribution program mssp-2025's)
    chain.fails(admin("cms"), "settlement_submit", {k: v for k, v in good.items() if k != "revenue_ref"},
                "missing_input")
    compute_revenue(chain, page=10)
    chain.fails(admin("cms"), "settlement_submit", dict(good, revenue_ref=reference(chain, REVENUE_KEY)),
                "mismatched_reference")
    # a changed benchmark: the old hash is stale
    chain.ok(admin("cms"), "benchmark_set", dict(BENCHMARK, regional_adjustment_cents=800))
    chain.fails(admin("cms"), "settlement_submit", good, "stale_reference")
    chain.fails(admin("cms"), "settlement_submit", dict(good, benchmark_ref={"key": "nope", "hash": bytes(32)}),
                "stale_reference")
    chain.fails(admin("acme"), "settlement_submit", settle_body(chain, tcoc_ref=good["tcoc_ref"]), "not_a_party")
    chain.ok(admin("cms"), "settlement_submit", settle_body(chain, tcoc_ref=good["tcoc_ref"]))
    # settled: the benchmark is fixed
    chain.fails(admin("cms"), "benchmark_set", BENCHMARK, "program_state")


def test_an_open_tcoc_cannot_be_cited():
    chain2 = ready()
    chain2.ok(admin("cms"), "program_create", {"program_id": "mssp-pay", "name": "MSSP paid"})
    chain2.ok(admin("river"), "aco_register", {"program_id": "mssp-pay", "aco_id": "river-aco", "name": "River"})
    chain2.ok(admin("cms"), "attribution_run", {"program_id": "mssp-pay", "run_id": "r1", "period_start": START,
                                                "period_end": END, "patients": [pid(ANN)]})
    chain2.ok(admin("audit"), "tcoc_open", dict(WINDOW, program="mssp-pay"))
    chain2.fails(admin("cms"), "settlement_submit", settle_body(chain2),
                 "mismatched_reference")
