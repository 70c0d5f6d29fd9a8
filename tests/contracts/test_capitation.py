"""Capitation, risk corridors and stop-loss (METHODS.md §1.6), worked at every band edge."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments.capitation import (
    ACA_CORRIDOR_BANDS, CorridorBand, StopLossTerms, check_bands, corridor_amount, member_month_cents,
    specific_stop_loss, stop_loss,
)
from contracts.payments.errors import InvalidInputError, InvalidParameterError
from contracts.state import key

from payments_helpers import CLINIC, OTHER_PAYER, PAYER, Chain, register_program

T = 1_000_000  # target, cents
TWELVE_AT_ATTACHMENT = [("m%02d" % n, 10_000_000) for n in range(2, 14)]
PARAMS = {"pmpm_cents": 50_000, "specific_attachment_cents": 10_000_000, "specific_coinsurance_bps": 1_000,
          "aggregate_attachment_bps": 12_500, "aggregate_coinsurance_bps": 0}


# ------------------------------------------------------------------ PMPM and proration


def test_a_full_month_pays_pmpm_times_the_risk_score():
    assert member_month_cents(50_000, 12_000, 31, 31) == 60_000  # $500 × 1.2


def test_a_partial_month_is_prorated_by_enrolled_days():
    assert member_month_cents(50_000, 10_000, 15, 30) == 25_000
    assert member_month_cents(50_000, 10_000, 10, 29) == 17_241  # Feb 2024: 17,241.38
    assert member_month_cents(1, 10_000, 15, 30) == 1  # 0.5 cent rounds half away from zero
    assert member_month_cents(50_000, 10_000, 0, 31) == 0


def test_enrolled_days_beyond_the_month_or_negative_rates_are_refused():
    with pytest.raises(InvalidInputError):
        member_month_cents(50_000, 10_000, 31, 30)
    with pytest.raises(InvalidInputError):
        member_month_cents(-1, 10_000, 1, 30)


# ------------------------------------------------------------------ risk corridors


@pytest.mark.parametrize("costs,amount", [
    (1_000_000, 0),
    (1_030_000, 0),        # 103 %: the inner edge, no sharing
    (1_050_000, 10_000),   # 50 % × 2 %
    (1_080_000, 25_000),   # 108 %: 2.5 % of target
    (1_100_000, 41_000),   # 2.5 % T + 80 % × 2 % T
    (970_000, 0),          # 97 %
    (950_000, -10_000),
    (920_000, -25_000),    # 92 %
    (900_000, -41_000),
    (0, -25_000 - 736_000),
])
def test_aca_corridor_band_edges(costs, amount):
    assert corridor_amount(T, costs).amount_cents == amount


def test_a_cent_past_the_inner_edge_shares_half_a_cent_rounded_away_from_zero():
    result = corridor_amount(T, 1_030_001)
    assert result.exact_cents == Fraction(1, 2) and result.amount_cents == 1
    assert corridor_amount(T, 969_999).amount_cents == -1


def statute_18062(target, costs):
    """42 U.S.C. 18062(b), as written."""
    t, a = Fraction(target), Fraction(costs)
    if a > Fraction(108, 100) * t:
        return Fraction(25, 1000) * t + Fraction(8, 10) * (a - Fraction(108, 100) * t)
    if a > Fraction(103, 100) * t:
        return Fraction(1, 2) * (a - Fraction(103, 100) * t)
    if a < Fraction(92, 100) * t:
        return -(Fraction(25, 1000) * t + Fraction(8, 10) * (Fraction(92, 100) * t - a))
    if a < Fraction(97, 100) * t:
        return -Fraction(1, 2) * (Fraction(97, 100) * t - a)
    return Fraction(0)


@settings(max_examples=500, deadline=None)
@given(target=st.integers(1, 10**12), ratio_bps=st.integers(0, 30_000), extra=st.integers(-9_999, 9_999))
def test_the_generic_bands_reproduce_the_aca_statute(target, ratio_bps, extra):
    costs = max(target * ratio_bps // 10_000 + extra, 0)
    assert corridor_amount(target, costs).exact_cents == statute_18062(target, costs)


def test_part_d_2008_thresholds_are_just_other_bands():
    bands = (CorridorBand(500, 1_000, 5_000), CorridorBand(1_000, None, 8_000))
    assert corridor_amount(T, 1_050_000, bands).amount_cents == 0
    assert corridor_amount(T, 1_100_000, bands).amount_cents == 25_000
    assert corridor_amount(T, 850_000, bands).amount_cents == -65_000


@pytest.mark.parametrize("bands", [
    (CorridorBand(300, 800, 5_000), CorridorBand(700, None, 8_000)),  # overlap
    (CorridorBand(300, None, 5_000), CorridorBand(800, None, 8_000)),  # open band not last
    (CorridorBand(300, 300, 5_000),),
    (CorridorBand(300, 800, 10_001),),
    (CorridorBand(-1, 800, 5_000),),
])
def test_malformed_corridor_bands_are_refused(bands):
    with pytest.raises(InvalidParameterError):
        check_bands(bands)


def test_a_zero_or_negative_corridor_input_is_refused():
    with pytest.raises(InvalidInputError):
        corridor_amount(0, 1)
    with pytest.raises(InvalidInputError):
        corridor_amount(T, -1)


# ------------------------------------------------------------------ stop-loss


def test_specific_stop_loss_attaches_above_the_attachment_point():
    assert specific_stop_loss(15_000_000, 10_000_000, 1_000) == 4_500_000  # $50k over × 90 %
    assert specific_stop_loss(10_000_000, 10_000_000, 1_000) == 0  # exactly at the attachment
    assert specific_stop_loss(9_999_999, 10_000_000, 1_000) == 0
    assert specific_stop_loss(10_000_001, 10_000_000, 1_000) == Fraction(9, 10)


def test_aggregate_stop_loss_attaches_above_125_percent_of_expected_on_retained_claims():
    terms = StopLossTerms(specific_attachment_cents=10_000_000, specific_coinsurance_bps=1_000,
                          aggregate_attachment_bps=12_500, aggregate_coinsurance_bps=2_000)
    # Retained: 10,000,000 (m1, capped at the attachment) + 12 × 10,000,000 = 130,000,000
    # vs 125 % × 100,000,000 expected.
    result = stop_loss(terms, [("m1", 15_000_000), *TWELVE_AT_ATTACHMENT], 100_000_000)
    assert result.specific_total_cents == 4_500_000
    assert result.retained_claims_cents == 130_000_000
    assert result.aggregate_attachment_cents == 125_000_000
    assert result.aggregate_cents == 4_000_000  # 5,000,000 × 80 %
    assert result.amount_cents == 8_500_000
    at_edge = stop_loss(terms, [("m1", 5_000_000), *TWELVE_AT_ATTACHMENT], 100_000_000)
    assert at_edge.amount_cents == 0


def test_stop_loss_rejects_duplicates_and_negatives():
    with pytest.raises(InvalidInputError):
        stop_loss(StopLossTerms(), [("m", 1), ("m", 2)], 10)
    with pytest.raises(InvalidInputError):
        stop_loss(StopLossTerms(), [("m", -1)], 10)
    with pytest.raises(InvalidParameterError):
        StopLossTerms(specific_coinsurance_bps=10_001)


# ------------------------------------------------------------------ on the ledger


@pytest.fixture
def chain():
    chain = Chain()
    register_program(chain, "cap1", "capitation", PARAMS)
    return chain


def refs(chain, month=202402):
    return {"enrollment_ref": chain.put(key("coverage", "roster", str(month)), {"m": month}),
            "risk_ref": chain.put(key("risk", "scores", str(month)), {"m": month})}


def members(*rows):
    return [{"member": m, "risk_score_bps": r, "days_enrolled": d} for m, r, d in rows]


def test_a_month_of_capitation_is_priced_per_member_and_paid_once(chain):
    body = {"program_id": "cap1", "month": 202402, "members": members(("m1", 12_000, 29), ("m2", 10_000, 10)),
            **refs(chain)}
    assert chain.send(PAYER, "capitation_payment", body).ok
    record = chain.get(key("settlement", "cap1/capitation/202402/final"))
    assert [m["cents"] for m in record["inputs"]["members"]] == [60_000, 17_241]
    assert record["amount_due_cents"] == 77_241
    assert chain.send(PAYER, "capitation_payment", body).code == "already_settled"
    assert chain.send(PAYER, "settlement_disburse", {"settlement_id": "cap1/capitation/202402/final"}).ok


def test_a_retroactive_adjustment_references_the_payment_and_owes_the_difference(chain):
    body = {"program_id": "cap1", "month": 202402, "members": members(("m1", 12_000, 29), ("m2", 10_000, 10)),
            **refs(chain)}
    chain.ok(PAYER, "capitation_payment", body)
    adjust = {"program_id": "cap1", "month": 202402, "adjustment_id": "834-0001", "reason": "retro enrolment",
              "members": members(("m2", 10_000, 29), ("m3", 15_000, 29), ("m1", 11_000, 0)), **refs(chain)}
    assert chain.send(PAYER, "capitation_adjust", adjust).ok
    record = chain.get(key("settlement", "cap1/capitation/202402/adj-834-0001"))
    deltas = {m["member"]: m["delta_cents"] for m in record["inputs"]["members"]}
    assert deltas == {"m1": -60_000, "m2": 50_000 - 17_241, "m3": 75_000}
    assert record["estimate"] == "cap1/capitation/202402/final"
    assert record["amount_due_cents"] == 75_000 - 60_000 + 32_759
    assert chain.get(key("capitation", "cap1", "202402", "member", "m2"))["cents"] == 50_000
    assert chain.send(PAYER, "capitation_adjust", adjust).code == "already_settled"
    assert chain.send(PAYER, "capitation_adjust", dict(adjust, month=202403, adjustment_id="x")).code == "program_state"


def test_capitation_inputs_outside_the_contract_or_negative_are_refused(chain):
    base = {"program_id": "cap1", "month": 202402, "members": members(("m1", 10_000, 29)), **refs(chain)}
    for bad in (dict(base, month=202502), dict(base, month=202413),
                dict(base, members=members(("m1", 10_000, 30))), dict(base, members=members(("m1", -1, 3))),
                dict(base, members=members(("m1", 1, 3), ("m1", 1, 3)))):
        before = chain.snapshot()
        assert not chain.send(PAYER, "capitation_payment", bad).ok
        assert chain.snapshot() == before
    assert chain.send(OTHER_PAYER, "capitation_payment", base).code == "not_a_party"
    assert chain.send(CLINIC, "capitation_payment", base).code == "not_permitted"


def test_the_order_of_members_in_a_payment_does_not_matter():
    stores = []
    for rows in ((("m1", 12_000, 29), ("m2", 10_000, 10)), (("m2", 10_000, 10), ("m1", 12_000, 29))):
        chain = Chain()
        register_program(chain, "cap1", "capitation", PARAMS)
        chain.ok(PAYER, "capitation_payment", {"program_id": "cap1", "month": 202402, "members": members(*rows),
                                               **refs(chain)})
        stores.append(chain.store)
    assert stores[0] == stores[1]


def test_the_corridor_and_stop_loss_settle_once_per_year(chain):
    target_ref = chain.put(key("costs", "target", "2024"), {"t": 1})
    costs_ref = chain.put(key("costs", "allowable", "2024"), {"a": 1})
    body = {"program_id": "cap1", "target_cents": T, "target_ref": target_ref, "allowable_costs_cents": 1_100_000,
            "costs_ref": costs_ref}
    assert chain.send(PAYER, "corridor_settle", body).ok
    assert chain.get(key("settlement", "cap1/risk_corridor/2024/final"))["amount_due_cents"] == 41_000
    assert chain.send(PAYER, "corridor_settle", body).code == "already_settled"
    stop = {"program_id": "cap1", "expected_claims_cents": 100_000_000, "expected_ref": target_ref,
            "members": [{"member": m, "annual_paid_cents": paid} for m, paid in [("m1", 15_000_000), *TWELVE_AT_ATTACHMENT]],
            "claims_ref": costs_ref}
    assert chain.send(PAYER, "stop_loss_settle", dict(stop, expected_claims_cents=-1)).code == "payment_error"
    assert chain.send(PAYER, "stop_loss_settle", stop).ok
    assert chain.get(key("settlement", "cap1/stop_loss/2024/final"))["amount_due_cents"] == 4_500_000 + 5_000_000
    assert chain.send(PAYER, "stop_loss_settle", stop).code == "already_settled"


def test_bad_capitation_parameters_are_refused():
    chain = Chain()
    for n, params in enumerate([{}, {"pmpm_cents": 0}, {"pmpm_cents": 1, "corridor_bands": [[800, 300, 5_000]]},
                                {"pmpm_cents": 1, "specific_coinsurance_bps": 20_000}, {"pmpm_cents": 1, "x": 1}]):
        receipt = chain.send(PAYER, "program_register", {"program_id": "c%d" % n, "type": "capitation",
                                                         "performance_year": 2024, "params": params,
                                                         "participants": [["clinic", 10_000]]})
        assert receipt.code == "payment_error"
    assert ACA_CORRIDOR_BANDS == check_bands(ACA_CORRIDOR_BANDS)
