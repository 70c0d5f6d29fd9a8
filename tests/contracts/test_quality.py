"""Quality measurement: METHODS.md §1.5 rates, HEDIS enrollment, benchmarks, composites, PROs."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import quality
from contracts.errors import InvalidValue
from contracts.state import key
from tests.contracts.quality_helpers import Chain, commitment, pseudonym

ALL = list(quality.POPULATIONS)


def measure(measure_id: str, domain: str = "clinical", weight: int = 1, inverse: bool = False, **extra) -> dict:
    body = {"measure_id": measure_id, "scoring": "proportion", "domain": domain, "weight": weight,
            "inverse": inverse, "criteria": commitment(measure_id), "populations": ALL}
    body.update(extra)
    return body


def counts(ip, den, denex, denexcep, numer, numex) -> dict:
    return dict(zip(quality.POPULATIONS, (ip, den, denex, denexcep, numer, numex)))


def result(measure_id: str, provider: str, c: dict, program: str = "mssp", period: str = "2025") -> dict:
    return {"measure_id": measure_id, "program": program, "period": period, "provider": provider,
            "counts": c, "document": commitment(measure_id + provider)}


def test_the_rate_follows_section_1_5_exactly():
    # IP 120, DEN 100, DENEX 10, NUMER 60, NUMEX 5, DENEXCEP 6 → (60 − 5) / (100 − 10 − 6) = 55/84
    c = quality.validate_counts(counts(120, 100, 10, 6, 60, 5), ALL)
    assert quality.performance_rate(c) == Fraction(55, 84)
    assert quality.performance(Fraction(55, 84), inverse=True) == Fraction(29, 84)
    assert quality.performance_rate(quality.validate_counts(counts(5, 3, 3, 0, 0, 0), ALL)) is None


@pytest.mark.parametrize("c", [
    counts(10, 11, 0, 0, 0, 0),   # DEN > IP
    counts(10, 10, 11, 0, 0, 0),  # DENEX > DEN
    counts(10, 10, 5, 0, 6, 0),   # NUMER > DEN − DENEX
    counts(10, 10, 0, 0, 5, 6),   # NUMEX > NUMER
    counts(10, 10, 2, 4, 5, 0),   # DENEXCEP > DEN − DENEX − NUMER
    counts(10, -1, 0, 0, 0, 0),
    counts(10, 10**10, 0, 0, 0, 0),
])
def test_inconsistent_counts_are_refused(c):
    with pytest.raises(InvalidValue):
        quality.validate_counts(c, ALL)


def test_a_result_is_stored_with_its_exact_rate_and_indexed():
    chain = Chain()
    assert chain.run("payer", "measure_define", measure("nqf0059", inverse=True)).ok
    receipt = chain.run("clinic", "quality_result_submit", result("nqf0059", "river", counts(120, 100, 10, 6, 60, 5)))
    assert receipt.ok, receipt.message
    stored = chain.view().get(quality.result_key("mssp", "2025", "nqf0059", "river"))
    assert stored["rate"] == [55, 84]
    assert chain.view().entries(quality.results_index("mssp", "2025", "nqf0059")) == ["river"]


def test_bad_quality_transactions_get_typed_errors():
    chain = Chain()
    assert chain.run("clinic", "measure_define", measure("m1")).code == "not_permitted"
    assert chain.run("payer", "measure_define", measure("m1", populations=["numerator"])).code == "invalid_value"
    assert chain.run("payer", "measure_define", measure("m1", criteria=b"short")).code == "invalid_value"
    assert chain.run("payer", "measure_define", measure("m1", weight=0)).code == "invalid_value"
    assert chain.run("payer", "measure_define", measure("m1", populations=REQ)).ok
    assert chain.run("payer", "measure_define", measure("m1")).code == "already_exists"
    good = result("m1", "river", counts(10, 10, 0, 0, 5, 0))
    assert chain.run("clinic", "quality_result_submit", dict(good, measure_id="nope")).code == "not_found"
    assert chain.run("clinic", "quality_result_submit", dict(good, provider="lake")).code == "not_permitted"
    assert chain.run("auditor", "quality_result_submit", good).code == "not_permitted"
    assert chain.run("clinic", "quality_result_submit", result("m1", "river", counts(10, 10, 1, 0, 5, 0))).code == "invalid_value"
    assert chain.run("clinic", "quality_result_submit", dict(good, counts={"numerator": 1, "bogus": 1})).code == "invalid_value"
    assert chain.run("clinic", "quality_result_submit", good).ok
    assert chain.run("clinic", "quality_result_submit", good).code == "already_exists"
    assert chain.run("payer", "quality_result_submit", result("m1", "lake", counts(10, 10, 0, 0, 7, 0))).ok


REQ = ["initial_population", "denominator", "numerator"]


# --------------------------------------------------------------- HEDIS continuous enrollment

YEAR = (20250101, 20251231)


@pytest.mark.parametrize("spans,enrolled", [
    ([(20250101, 20251231)], True),
    ([(20250101, 20250331), (20250516, 20251231)], True),   # one gap of 45 days (Apr 1 – May 15)
    ([(20250101, 20250331), (20250517, 20251231)], False),  # one gap of 46 days
    ([(20250215, 20251231)], True),                          # a gap at the start counts: 45 days
    ([(20250216, 20251231)], False),
    ([(20250101, 20250131), (20250210, 20250430), (20250510, 20251231)], False),  # two gaps
    ([(20250101, 20251215)], False),                         # not enrolled on the anchor date
    ([(20240101, 20250630), (20250601, 20260630)], True),    # overlapping spans beyond the year
])
def test_hedis_continuous_enrollment_allows_one_gap_of_at_most_45_days(spans, enrolled):
    assert quality.continuously_enrolled(spans, *YEAR) is enrolled


def test_enrollment_with_the_anchor_elsewhere():
    spans = [(20250101, 20251215)]
    assert quality.continuously_enrolled(spans, *YEAR, anchor_date=20251130) is True


# --------------------------------------------------------------- benchmarks


def test_nearest_rank_percentiles():
    values = [Fraction(n, 10) for n in (5, 1, 9, 3, 7)]  # sorted: .1 .3 .5 .7 .9
    assert quality.nearest_rank_percentile(values, 30) == Fraction(3, 10)   # rank ⌈1.5⌉ = 2
    assert quality.nearest_rank_percentile(values, 40) == Fraction(3, 10)   # rank 2
    assert quality.nearest_rank_percentile(values, 41) == Fraction(5, 10)   # rank ⌈2.05⌉ = 3
    assert quality.nearest_rank_percentile(values, 100) == Fraction(9, 10)
    assert quality.nearest_rank_percentile(values, 1) == Fraction(1, 10)
    with pytest.raises(InvalidValue):
        quality.nearest_rank_percentile([], 50)


def _benchmark_chain(order: list[int], inverse: bool = False) -> dict:
    chain = Chain([("payer", "acme", "payer")] + [("p%d" % i, "org%d" % i, "provider") for i in range(5)])
    chain.run("payer", "measure_define", measure("m", inverse=inverse))
    txs = [chain.tx("p%d" % i, "quality_result_submit", result("m", "org%d" % i, counts(10, 10, 0, 0, i * 2, 0)))
           for i in order]
    assert all(r.ok for r in chain.run_block(txs))
    assert chain.run("payer", "quality_benchmark_compute", {"measure_id": "m", "program": "mssp", "period": "2025",
                                                            "percentiles": [30, 40, 90]}).ok
    return chain.view().get(key("quality", "benchmark", "mssp", "2025", "m"))


def test_benchmarks_of_an_inverse_measure_use_one_minus_the_rate():
    normal = _benchmark_chain([0, 1, 2, 3, 4])["percentiles"]
    inverse = _benchmark_chain([0, 1, 2, 3, 4], inverse=True)["percentiles"]
    assert normal == {30: [1, 5], 40: [1, 5], 90: [4, 5]}  # rates 0, .2, .4, .6, .8
    assert inverse == {30: [2, 5], 40: [2, 5], 90: [1, 1]}


@settings(max_examples=15, deadline=None)
@given(st.permutations([0, 1, 2, 3, 4]))
def test_benchmarks_are_independent_of_submission_order(order):
    assert _benchmark_chain(list(order))["percentiles"] == _benchmark_chain([0, 1, 2, 3, 4])["percentiles"]


# --------------------------------------------------------------- composites


def test_a_weighted_composite_reweights_domains_without_scored_measures():
    chain = Chain()
    chain.run("payer", "measure_define", measure("a1c", "clinical", weight=2, inverse=True))
    chain.run("payer", "measure_define", measure("bp", "clinical", weight=1))
    chain.run("payer", "measure_define", measure("cahps", "experience", weight=1))
    chain.run("payer", "measure_define", measure("readm", "utilisation", weight=1))
    assert chain.run("payer", "composite_define", {"composite_id": "aco", "measures": ["a1c", "bp", "cahps", "readm"],
                                                   "domain_weights": {"clinical": 50, "experience": 30, "utilisation": 20}}).ok
    chain.run("clinic", "quality_result_submit", result("a1c", "river", counts(100, 100, 0, 0, 20, 0)))  # perf 4/5
    chain.run("clinic", "quality_result_submit", result("bp", "river", counts(100, 100, 0, 0, 70, 0)))   # 7/10
    chain.run("clinic", "quality_result_submit", result("cahps", "river", counts(10, 10, 0, 0, 9, 0)))   # 9/10
    assert chain.run("auditor", "composite_compute", {"composite_id": "aco", "program": "mssp", "period": "2025",
                                                      "provider": "river"}).ok
    stored = chain.view().get(key("quality", "composite", "aco", "mssp", "2025", "river"))
    clinical = (2 * Fraction(4, 5) + Fraction(7, 10)) / 3
    assert Fraction(*stored["score"]) == (50 * clinical + 30 * Fraction(9, 10)) / 80
    assert stored["scored_measures"] == ["a1c", "bp", "cahps"]
    assert chain.run("auditor", "composite_compute", {"composite_id": "aco", "program": "mssp", "period": "2025",
                                                      "provider": "lake"}).code == "invalid_value"
    assert chain.run("auditor", "composite_compute", {"composite_id": "zz", "program": "mssp", "period": "2025",
                                                      "provider": "river"}).code == "not_found"
    assert chain.run("payer", "composite_define", {"composite_id": "b", "measures": ["a1c"],
                                                   "domain_weights": {"other": 1}}).code == "invalid_value"


# --------------------------------------------------------------- patient-reported outcomes


def test_pro_scores_are_stored_with_their_questionnaire_commitment_only():
    chain = Chain()
    assert chain.run("payer", "measure_define", {"measure_id": "hoos-jr", "scoring": "pro", "domain": "pro",
                                                 "criteria": commitment("hoos"), "instrument": "HOOSJR",
                                                 "score_min": 0, "score_max": 100, "mcid": 18}).ok
    body = {"measure_id": "hoos-jr", "program": "cjr", "period": "2025", "patient": pseudonym("a"),
            "phase": "baseline", "score": 40, "document": commitment("qr1")}
    assert chain.run("clinic", "pro_submit", body).ok
    assert chain.run("clinic", "pro_submit", dict(body, phase="followup", score=70)).ok
    assert chain.run("clinic", "pro_submit", body).code == "already_exists"
    assert chain.run("clinic", "pro_submit", dict(body, score=101, phase="followup", patient=pseudonym("b"))).code == "invalid_value"
    assert chain.run("clinic", "pro_submit", dict(body, phase="later")).code == "invalid_value"
    assert chain.run("payer", "pro_submit", body).code == "not_permitted"
    stored = chain.view().get(key("quality", "pro", "hoos-jr", "cjr", "2025", "river", pseudonym("a"), "followup"))
    assert stored["score"] == 70 and set(stored) == {"score", "document", "height"}
    assert quality.pro_improvement_rate([(40, 70), (50, 60)], 18) == Fraction(1, 2)


# --------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 30), st.integers(-2, 30), st.integers(-2, 30)), min_size=1, max_size=5))
def test_a_failed_result_changes_nothing_and_replays_identically(triples):
    outcomes = []
    for _ in range(2):
        chain = Chain()
        chain.run("payer", "measure_define", measure("m"))
        before = chain.snapshot_without_nonces()
        txs = [chain.tx("clinic", "quality_result_submit", result("m", "river", counts(ip, den, 0, 0, numer, 0)))
               for ip, den, numer in triples]
        receipts = chain.run_block(txs)
        if not any(r.ok for r in receipts):
            assert chain.snapshot_without_nonces() == before
        outcomes.append((dict(chain.db), receipts))
    assert outcomes[0] == outcomes[1]
