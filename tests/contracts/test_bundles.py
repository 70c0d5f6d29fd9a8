"""BPCI Advanced bundles (METHODS.md §1.3): target price, NPRA, CQS adjustment ≤ 10 % before
the ±20 % stop-loss / stop-gain, 90-day windows, milestone payments split by shares."""

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments.bundles import (
    BundleParameters, cqs_adjustment_rate, date_from_day_number, day_number, reconcile, target_price_cents,
)
from contracts.payments.errors import InvalidInputError, InvalidParameterError
from contracts.state import key

from payments_helpers import CLINIC, DAY_MS, HOSPITAL, OUTSIDER, PAYER, Chain, register_program

MY3 = BundleParameters()  # 3 % discount, 20 % stop, 10 % quality cap
BENCHMARK = 2_500_000  # $25,000 episode benchmark
TARGET = 2_425_000  # × (1 − 3 %)
PARAMS = {
    "milestone_bps": {"admission": 2_000, "procedure": 3_000, "discharge": 3_000, "followup_30d": 2_000},
    "episodes": {
        "major-joint": {"trigger_kind": "ms_drg", "codes": ["469", "470"], "benchmark_cents": BENCHMARK},
        "pci-outpatient": {"trigger_kind": "hcpcs", "codes": ["C9600"], "benchmark_cents": 1_000_001},
    },
}


# ------------------------------------------------------------------ pure rules


def test_the_target_price_is_the_benchmark_less_the_three_percent_discount():
    assert target_price_cents(BENCHMARK, 300) == TARGET
    assert target_price_cents(1_001, 300) == 971  # 970.97
    assert target_price_cents(50, 300) == 49  # 48.5 rounds half away from zero
    assert target_price_cents(1_000_001, 300) == 970_001  # 970,000.97


def test_the_worked_reconciliation_applies_the_quality_adjustment():
    # 10 episodes at $24,250 = $242,500 target; $220,000 spent → NPRA $22,500; CQS 80 →
    # reduction 10 % × 20/100 = 2 % → $22,050; under the 20 % limit ($48,500).
    result = reconcile(MY3, [TARGET] * 10, [2_200_000] * 10, 8_000)
    assert result.npra_cents == 2_250_000
    assert result.cqs_adjustment_rate == Fraction(2, 100)
    assert result.cqs_adjustment_cents == -45_000
    assert result.stop_limit_cents == 4_850_000
    assert (result.stop_applied, result.reconciliation_cents) == ("none", 2_205_000)


def test_stop_gain_caps_a_large_saving_at_twenty_percent_of_the_target():
    result = reconcile(MY3, [1_000_000, 1_000_000], [500_000, 500_000], 10_000)
    assert (result.stop_applied, result.reconciliation_cents) == ("stop_gain", 400_000)


def test_stop_loss_caps_a_large_repayment_at_twenty_percent_of_the_target():
    result = reconcile(MY3, [1_000_000, 1_000_000], [1_500_000, 1_500_000], 0)
    assert (result.stop_applied, result.reconciliation_cents) == ("stop_loss", -400_000)


def test_an_amount_exactly_at_the_stop_limit_is_not_flagged():
    assert reconcile(MY3, [1_000_000] * 2, [800_000] * 2, 10_000).stop_applied == "none"
    assert reconcile(MY3, [1_000_000] * 2, [800_000] * 2, 10_000).reconciliation_cents == 400_000
    assert reconcile(MY3, [1_000_000] * 2, [1_200_000] * 2, 0).reconciliation_cents == -400_000


def test_the_quality_adjustment_applies_before_the_cap():
    # NPRA 440,000 with CQS 0: 440,000 × 0.9 = 396,000 < 400,000. Cap-first would give 360,000.
    result = reconcile(MY3, [1_000_000] * 2, [780_000] * 2, 0)
    assert (result.stop_applied, result.reconciliation_cents) == ("none", 396_000)


def test_a_high_quality_score_reduces_a_repayment_by_at_most_ten_percent():
    assert reconcile(MY3, [1_000_000], [1_100_000], 10_000).reconciliation_cents == -90_000
    assert reconcile(MY3, [1_000_000], [1_100_000], 0).reconciliation_cents == -100_000
    assert reconcile(MY3, [1_000_000], [900_000], 0).reconciliation_cents == 90_000
    assert reconcile(MY3, [1_000_000], [900_000], 10_000).reconciliation_cents == 100_000


@settings(max_examples=300, deadline=None)
@given(targets=st.lists(st.integers(0, 10**9), min_size=1, max_size=8), data=st.data(),
       cqs=st.integers(0, 10_000))
def test_the_quality_adjustment_never_exceeds_ten_percent_and_the_result_never_the_stop(targets, data, cqs):
    actuals = data.draw(st.lists(st.integers(0, 2 * 10**9), min_size=len(targets), max_size=len(targets)))
    result = reconcile(MY3, targets, actuals, cqs)
    assert abs(result.cqs_adjustment_cents) <= abs(result.npra_cents) * Fraction(1, 10)
    assert abs(result.reconciliation_cents) <= result.stop_limit_cents + Fraction(1, 2)
    shuffled = list(zip(targets, actuals))
    random.Random(0).shuffle(shuffled)
    assert reconcile(MY3, [t for t, _ in shuffled], [a for _, a in shuffled], cqs) == result


def test_bad_reconciliation_inputs_raise_typed_errors():
    with pytest.raises(InvalidInputError):
        reconcile(MY3, [100], [-1], 5_000)
    with pytest.raises(InvalidInputError):
        reconcile(MY3, [100], [1, 2], 5_000)
    with pytest.raises(InvalidInputError):
        reconcile(MY3, [100], [1], 10_001)
    with pytest.raises(InvalidParameterError):
        BundleParameters(discount_bps=-1)
    assert cqs_adjustment_rate(0, 5_000, 1_000) == 0


def test_calendar_arithmetic_without_datetime():
    assert day_number(19700101) == 0
    assert date_from_day_number(day_number(20240110) + 90) == 20240409  # leap February
    assert date_from_day_number(day_number(20230110) + 90) == 20230410
    with pytest.raises(InvalidInputError):
        day_number(20230229)


@settings(max_examples=300, deadline=None)
@given(st.integers(day_number(19000101), day_number(22001231)))
def test_day_numbers_round_trip(days):
    assert day_number(date_from_day_number(days)) == days


# ------------------------------------------------------------------ on the ledger


@pytest.fixture
def chain():
    chain = Chain()
    register_program(chain, "bp1", "bpci_advanced", PARAMS)
    return chain


def open_episode(chain, episode_id="ep1", code="470", category="major-joint", anchor=20240105):
    return chain.send(CLINIC, "episode_open", {"program_id": "bp1", "episode_id": episode_id, "patient": "pz-" + episode_id,
                                               "category": category, "trigger_code": code, "anchor_date": anchor})


def milestone(chain, name, date, episode_id="ep1", sender=HOSPITAL):
    return chain.send(sender, "episode_milestone", {"program_id": "bp1", "episode_id": episode_id,
                                                    "milestone": name, "date": date})


def test_an_episode_records_its_target_price_and_pays_milestones_by_shares(chain):
    assert open_episode(chain).ok
    episode = chain.get(key("bundle_episode", "bp1", "ep1"))
    assert episode["target_price_cents"] == TARGET
    assert milestone(chain, "admission", 20240105).ok
    assert chain.get(key("disbursement", "bp1/episode/ep1", "admission"))["allocations"] == [
        ["clinic", 291_000], ["hospital", 194_000]]  # 20 % of $24,250 = $4,850, split 60/40
    assert milestone(chain, "discharge", 20240110).ok  # procedure skipped: allowed
    assert chain.get(key("bundle_episode", "bp1", "ep1"))["window_end_date"] == 20240409
    assert milestone(chain, "followup_30d", 20240209).ok  # day 30 after discharge
    assert chain.get(key("disbursement", "bp1/episode/ep1", "followup_30d"))["amount_cents"] == 485_000


def test_milestones_out_of_order_late_or_repeated_are_refused(chain):
    open_episode(chain)
    assert milestone(chain, "discharge", 20240110).ok
    assert milestone(chain, "admission", 20240105).code == "program_state"
    assert milestone(chain, "discharge", 20240111).code == "program_state"
    assert milestone(chain, "followup_30d", 20240210).code == "program_state"  # day 31
    assert milestone(chain, "followup_30d", 20240109).code == "program_state"  # before discharge


def test_an_outpatient_trigger_ends_at_the_procedure(chain):
    assert open_episode(chain, "ep2", code="C9600", category="pci-outpatient", anchor=20240301).ok
    assert milestone(chain, "procedure", 20240301, "ep2").ok
    episode = chain.get(key("bundle_episode", "bp1", "ep2"))
    assert episode["target_price_cents"] == 970_001
    assert episode["window_end_date"] == 20240530


def test_a_code_that_does_not_trigger_the_category_or_an_outsider_is_refused(chain):
    assert open_episode(chain, code="C9600").code == "payment_error"
    assert chain.send(OUTSIDER, "episode_open", {"program_id": "bp1", "episode_id": "x", "patient": "p",
                                                 "category": "major-joint", "trigger_code": "470",
                                                 "anchor_date": 20240101}).code == "not_a_party"
    assert open_episode(chain).ok
    assert open_episode(chain).code == "program_state"


def ended_episodes(chain, ids):
    for n, episode_id in enumerate(ids):
        open_episode(chain, episode_id)
        milestone(chain, "discharge", 20240110 + n, episode_id)
    return {episode_id: chain.put(key("costs", "episode", episode_id), {"actual": episode_id}) for episode_id in ids}


def reconcile_body(refs, cqs_ref, actuals, period="2024h1"):
    return {"program_id": "bp1", "period": period, "cqs_hundredths": 8_000, "cqs_ref": cqs_ref,
            "episodes": [{"episode_id": e, "actual_cents": actuals[e], "spending_ref": refs[e]} for e in actuals]}


def test_period_reconciliation_on_the_ledger_settles_once(chain):
    refs = ended_episodes(chain, ["ep1", "ep2"])
    cqs_ref = chain.put(key("quality", "cqs", "bp1"), {"cqs": 80})
    body = reconcile_body(refs, cqs_ref, {"ep1": 2_200_000, "ep2": 2_200_000})
    assert chain.send(PAYER, "bundle_reconcile", body).ok
    record = chain.get(key("settlement", "bp1/bpci_advanced/2024h1/final"))
    assert record["amount_due_cents"] == 441_000  # NPRA 450,000 less 2 %
    assert chain.send(PAYER, "bundle_reconcile", body).code == "already_settled"
    assert chain.send(PAYER, "bundle_reconcile", dict(body, period="2024h2")).code == "program_state"
    assert milestone(chain, "followup_30d", 20240201).code == "program_state"  # reconciled


def test_an_episode_is_not_reconciled_before_its_window_closes(chain):
    refs = ended_episodes(chain, ["ep1"])
    cqs_ref = chain.put(key("quality", "cqs", "bp1"), {"cqs": 80})
    body = reconcile_body(refs, cqs_ref, {"ep1": 1})
    on_last_day = day_number(20240409) * DAY_MS
    assert chain.send(PAYER, "bundle_reconcile", body, time_ms=on_last_day).code == "program_state"
    assert chain.send(PAYER, "bundle_reconcile", body, time_ms=on_last_day + DAY_MS).ok


def test_the_order_of_episodes_in_a_reconciliation_does_not_matter():
    stores = []
    for order in (["ep1", "ep2", "ep3"], ["ep3", "ep1", "ep2"]):
        chain = Chain()
        register_program(chain, "bp1", "bpci_advanced", PARAMS)
        refs = ended_episodes(chain, ["ep1", "ep2", "ep3"])
        cqs_ref = chain.put(key("quality", "cqs", "bp1"), {"cqs": 80})
        actuals = {e: {"ep1": 2_000_000, "ep2": 3_000_000, "ep3": 2_500_000}[e] for e in order}
        assert chain.send(PAYER, "bundle_reconcile", reconcile_body(refs, cqs_ref, actuals)).ok
        stores.append(chain.store)
    assert stores[0] == stores[1]


def test_bad_bundle_parameters_are_refused():
    chain = Chain()
    bad = [
        dict(PARAMS, discount_bps=-1),
        dict(PARAMS, milestone_bps={"admission": 6_000, "discharge": 6_000}),
        dict(PARAMS, episodes={}),
        dict(PARAMS, episodes={"x": {"trigger_kind": "icd10", "codes": ["A"], "benchmark_cents": 1}}),
        dict(PARAMS, episodes={"x": {"trigger_kind": "hcpcs", "codes": ["A"], "benchmark_cents": -1}}),
        dict(PARAMS, unknown=1),
    ]
    for n, params in enumerate(bad):
        receipt = chain.send(PAYER, "program_register", {"program_id": "b%d" % n, "type": "bpci_advanced",
                                                         "performance_year": 2024, "params": params,
                                                         "participants": [["clinic", 10_000]]})
        assert receipt.code == "payment_error", params
