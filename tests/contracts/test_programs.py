"""Program contracts and MSSP settlement on the ledger (METHODS.md §1.1, §1.6).

Worked case (ENHANCED, PY2022): B = $100,000,000, E = $95,000,000 → S = $5,000,000,
r = 5 % ≥ MSR 2.5 % (20,000 assigned, §425.604(b) table), QPS met → FSR 75 %;
earned = min(5,000,000 × 0.75 × 0.98, 20 % × B) = $3,675,000, split 60 / 40.
"""

import hashlib
import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.payments.errors import InvalidSharesError
from contracts import quality, tcoc
from contracts.payments import mssp
from contracts.payments.programs import benchmark_key, check_shares, disaster_key, split_by_shares
from contracts.state import key

from payments_helpers import (
    AUDITOR, CLINIC, HOSPITAL, OTHER_PAYER, OUTSIDER, PAYER, REGULATOR, Chain, register_program,
)

B = 10_000_000_000
ASSIGNED = 20_000
FINAL = "aco1/mssp/2022/final"
INTERIM = "aco1/mssp/2022/interim"


def ledger_records(chain, expenditures, score_bps=8_000, met=True, program="aco1", year=2022, assigned=ASSIGNED):
    """Write the three records a settlement cites, as `tcoc_close`, `benchmark_set` and
    `quality_standard_assess` would have (test_tcoc.py derives them from claims), and
    return their references: a closed TCOC of the clinic's ACO (E, N = 20,000), the
    benchmark ($5,000 per capita at N = 20,000 → B = $100M) and the quality standard."""
    tcoc_record = {"kind": "tcoc", "program": program, "aco": "clinic-aco", "aco_org": "clinic",
                   "period_start": year * 10_000 + 101, "period_end": year * 10_000 + 1231, "status": tcoc.CLOSED,
                   "assigned_count": assigned, "expenditures_cents": expenditures}
    return {
        "tcoc_ref": chain.put(tcoc.tcoc_key(program, "clinic-aco", tcoc_record["period_start"],
                                            tcoc_record["period_end"]), tcoc_record),
        "benchmark_ref": chain.put(benchmark_key(program, year), {
            "kind": "mssp_benchmark", "program_id": program, "year": year, "updated_per_capita": [B, assigned]}),
        "quality_ref": chain.put(quality.standard_key(program, year), {
            "kind": quality.STANDARD_KIND, "program_id": program, "year": year, "score_bps": score_bps,
            "met_standard": met, "met_alternative_standard": False}),
    }


def settlement_body(chain, expenditures, stage="final", program="aco1", year=2022, assigned=ASSIGNED, **fields):
    """A record-based settlement of `program`, citing freshly written records with E = `expenditures`."""
    body = {"program_id": program, "stage": stage,
            **ledger_records(chain, expenditures, program=program, year=year, assigned=assigned)}
    body.update(fields)
    return body


def revenue_ref(chain, revenue_cents, program="aco1", year=2022, aco="clinic-aco", status=tcoc.CLOSED,
                period_end=None):
    """A participant-revenue record as `revenue_close` would have written it (test_tcoc.py
    computes one from claims), and its reference."""
    start, end = year * 10_000 + 101, period_end or year * 10_000 + 1231
    return chain.put(tcoc.revenue_key(program, aco, start, end), {
        "kind": tcoc.REVENUE_KIND, "program": program, "aco": aco, "aco_org": "clinic", "payer_org": "cms",
        "period_start": start, "period_end": end, "status": status, "revenue_cents": revenue_cents,
        "paid_cents": revenue_cents})


def determine(chain, program="aco1", sender=REGULATOR, **determination):
    """The regulator's disaster determination for the program's year; returns the receipt."""
    return chain.send(sender, "disaster_determine", {"program_id": program, **determination})


def cite(chain, record_key):
    return {"key": record_key.decode(), "hash": hashlib.sha256(chain.store[record_key]).digest()}


@pytest.fixture
def chain():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022)
    return chain


# ------------------------------------------------------------------ registration and signing


def test_a_program_is_active_only_once_every_participant_has_signed():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022, sign=False)
    assert chain.get(key("payment_program", "aco1"))["status"] == "proposed"
    chain.ok(CLINIC, "program_sign", {"program_id": "aco1"})
    assert chain.get(key("payment_program", "aco1"))["status"] == "proposed"
    chain.ok(HOSPITAL, "program_sign", {"program_id": "aco1"})
    program = chain.get(key("payment_program", "aco1"))
    assert program["status"] == "active" and program["signed"] == ["clinic", "hospital"]


def test_the_registered_parameters_are_explicit_on_the_ledger():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN", "sequestration_bps": 0}, year=2022)
    params = chain.get(key("payment_program", "aco1"))["params"]
    assert params["max_sharing_rate_bps"] == 7_500
    assert params["performance_payment_limit_bps"] == 2_000
    assert (params["loss_rate_floor_bps"], params["loss_rate_cap_bps"]) == (4_000, 7_500)
    assert params["loss_limit_benchmark_bps"] == 1_500
    assert params["sequestration_bps"] == 0
    assert params["quality_rule"] == "gate"


def test_signing_twice_and_signing_as_an_outsider_are_refused():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022, sign=False)
    chain.ok(CLINIC, "program_sign", {"program_id": "aco1"})
    assert chain.send(CLINIC, "program_sign", {"program_id": "aco1"}).code == "program_state"
    assert chain.send(OUTSIDER, "program_sign", {"program_id": "aco1"}).code == "not_a_party"


@pytest.mark.parametrize("participants", [
    [["clinic", 6_000], ["hospital", 3_999]],
    [["clinic", 6_000], ["hospital", 4_001]],
    [["clinic", 10_000], ["hospital", 0]],
    [["clinic", 5_000], ["clinic", 5_000]],
    [],
    [["clinic", "6000"], ["hospital", 4_000]],
])
def test_shares_that_do_not_sum_to_one_hundred_percent_are_refused(participants):
    chain = Chain()
    receipt = chain.send(PAYER, "program_register", {"program_id": "p", "type": "mssp", "performance_year": 2022,
                                                     "params": {"track": "EN"}, "participants": participants})
    assert receipt.code == "invalid_shares"
    assert chain.get(key("payment_program", "p")) is None


def test_a_participant_not_on_the_ledger_or_the_payer_itself_is_refused():
    chain = Chain()
    body = {"program_id": "p", "type": "mssp", "performance_year": 2022, "params": {"track": "EN"}}
    assert chain.send(PAYER, "program_register", dict(body, participants=[["nobody", 10_000]])).code == "unknown_program"
    assert chain.send(PAYER, "program_register", dict(body, participants=[["cms", 10_000]])).code == "program_state"


def test_bad_program_parameters_are_refused():
    chain = Chain()
    body = {"program_id": "p", "type": "mssp", "performance_year": 2022, "participants": [["clinic", 10_000]]}
    assert not chain.send(PAYER, "program_register", dict(body, params={"track": "Z"})).ok
    assert not chain.send(PAYER, "program_register", dict(body, params={"track": "EN", "msr_option_bps": 75})).ok
    assert not chain.send(PAYER, "program_register", dict(body, params={"track": "EN", "max_sharing_rate_bps": 10_001})).ok
    assert not chain.send(PAYER, "program_register", dict(body, type="pay_for_luck", params={})).ok
    assert chain.send(CLINIC, "program_register", dict(body, params={"track": "EN"})).code == "not_permitted"


def test_a_program_id_cannot_be_registered_twice(chain):
    receipt = chain.send(PAYER, "program_register", {"program_id": "aco1", "type": "mssp", "performance_year": 2022,
                                                     "params": {"track": "EN"}, "participants": [["clinic", 10_000]]})
    assert receipt.code == "program_state"


def test_the_order_of_signatures_within_a_block_does_not_change_the_state():
    results = []
    for order in itertools.permutations([CLINIC, HOSPITAL]):
        chain = Chain()
        register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022, sign=False)
        chain.run([chain.tx(signer, "program_sign", {"program_id": "aco1"}) for signer in order])
        results.append(chain.get(key("payment_program", "aco1")))
    assert results[0] == results[1] and results[0]["status"] == "active"


# ------------------------------------------------------------------ MSSP settlement


def test_the_worked_enhanced_savings_case_settles_with_every_intermediate(chain):
    body = settlement_body(chain, 9_500_000_000)
    chain.ok(PAYER, "settlement_submit", body)
    record = chain.get(key("settlement", FINAL))
    result = record["result"]
    assert result["gross_savings_cents"] == 500_000_000
    assert result["savings_rate"] == [1, 20]
    assert result["minimum_savings_rate"] == [1, 40]  # 2.5 % at 20,000 assigned
    assert result["final_sharing_rate"] == [3, 4]
    assert result["sequestration_cents"] == [7_500_000, 1]
    assert result["earned_cents"] == 367_500_000
    assert record["amount_due_cents"] == 367_500_000
    assert record["inputs"]["source"] == "ledger_records"
    assert (record["inputs"]["benchmark_cents"], record["inputs"]["assigned_beneficiaries"]) == (B, ASSIGNED)
    assert record["references"]["benchmark"] == body["benchmark_ref"]
    assert record["references"]["expenditures"] == record["references"]["assigned"] == body["tcoc_ref"]
    assert record["parties"] == ["clinic", "cms", "hospital"]
    assert chain.get(key("payment_program", "aco1", "settlements", "count")) == 1


def test_the_worked_enhanced_loss_case_owes_forty_percent(chain):
    # S = −$5,000,000, r = −5 % ≤ −MLR; LSR = 1 − 0.75 × 0.8 = 40 % (the floor); limit 15 % × B.
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 10_500_000_000))
    assert chain.get(key("settlement", FINAL))["amount_due_cents"] == -200_000_000
    chain.ok(PAYER, "settlement_disburse", {"settlement_id": FINAL})
    allocations = chain.get(key("disbursement", FINAL))["allocations"]
    assert allocations == [["clinic", -120_000_000], ["hospital", -80_000_000]]


@pytest.mark.parametrize("figures", [
    {"benchmark_cents": B},
    {"expenditures_cents": 1, "expenditures_ref": None},
    {"assigned_beneficiaries": 20_000, "assigned_ref": None},
    {"quality": {"score_bps": 10_000, "met_standard": True}},
])
def test_a_settlement_on_figures_the_payer_typed_in_is_refused_and_changes_nothing(chain, figures):
    # the removed client-figures form: B, E, N and quality come only from cited ledger records
    body = dict(settlement_body(chain, 9_500_000_000), **figures)
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", body)
    assert receipt.code == "submitted_figures"
    assert all(name in receipt.message for name in figures) and "tcoc_ref" in receipt.message
    assert chain.snapshot() == before
    old_form = {"program_id": "aco1", "stage": "final", "benchmark_cents": B, "expenditures_cents": 9_500_000_000,
                "assigned_beneficiaries": ASSIGNED, "quality": {"score_bps": 8_000, "met_standard": True},
                **{name: body[ref] for name, ref in (("benchmark_ref", "benchmark_ref"), ("quality_ref", "quality_ref"),
                                                     ("expenditures_ref", "tcoc_ref"), ("assigned_ref", "tcoc_ref"))}}
    assert chain.send(PAYER, "settlement_submit", old_form).code == "submitted_figures"
    assert chain.snapshot() == before


def test_settling_the_same_program_year_and_stage_twice_is_refused_and_changes_nothing(chain):
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000))
    again = settlement_body(chain, 9_000_000_000)
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", again)
    assert receipt.code == "already_settled"
    assert chain.snapshot() == before


def test_an_interim_estimate_is_trued_up_by_the_final_settlement(chain):
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_600_000_000, stage="interim"))
    assert chain.get(key("settlement", INTERIM))["amount_due_cents"] == 294_000_000  # $4M × 0.75 × 0.98
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000))  # the TCOC, closed again
    final = chain.get(key("settlement", FINAL))
    assert final["estimate"] == INTERIM
    assert final["true_up_cents"] == 73_500_000
    assert final["amount_due_cents"] == 73_500_000


def test_an_interim_after_the_final_is_refused(chain):
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000))
    assert chain.send(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000, "interim")).code == "program_state"


def test_settling_an_unknown_or_unsigned_program_is_refused():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022, sign=False)
    assert chain.send(PAYER, "settlement_submit", settlement_body(chain, 1, program="nope")).code == "unknown_program"
    assert chain.send(PAYER, "settlement_submit", settlement_body(chain, 1)).code == "program_state"


def test_only_the_programs_payer_may_settle_it(chain):
    assert chain.send(OTHER_PAYER, "settlement_submit", settlement_body(chain, 1)).code == "not_a_party"
    assert chain.send(CLINIC, "settlement_submit", settlement_body(chain, 1)).code == "not_permitted"


def test_a_reference_to_a_missing_or_changed_record_is_refused(chain):
    body = settlement_body(chain, 1)
    chain.put(quality.standard_key("aco1", 2022), {"kind": quality.STANDARD_KIND, "revised": True})
    assert chain.send(PAYER, "settlement_submit", body).code == "stale_reference"
    body = settlement_body(chain, 1, quality_ref={"key": "quality/none", "hash": bytes(32)})
    assert chain.send(PAYER, "settlement_submit", body).code == "stale_reference"


@pytest.mark.parametrize("field,value", [
    ("tcoc_ref", "tcoc/aco1"), ("benchmark_ref", {"key": "mssp_benchmark/aco1/2022"}),
    ("revenue_ref", {"key": "participant_revenue/aco1"}), ("disaster_ref", "mssp_disaster/aco1/2022"),
    ("revenue_ref", None), ("stage", "preliminary"),
])
def test_negative_or_malformed_inputs_are_refused(chain, field, value):
    body = dict(settlement_body(chain, 1), **{field: value})
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", body)
    assert not receipt.ok
    assert chain.snapshot() == before


def test_disbursement_splits_by_shares_once(chain):
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000))
    chain.ok(PAYER, "settlement_disburse", {"settlement_id": FINAL})
    assert chain.get(key("disbursement", FINAL))["allocations"] == [["clinic", 220_500_000], ["hospital", 147_000_000]]
    assert chain.send(PAYER, "settlement_disburse", {"settlement_id": FINAL}).code == "already_settled"
    assert chain.send(PAYER, "settlement_disburse", {"settlement_id": "nope"}).code == "unknown_program"
    assert chain.send(OTHER_PAYER, "settlement_disburse", {"settlement_id": FINAL}).code == "not_a_party"


def test_settlements_of_two_programs_in_one_block_do_not_depend_on_their_order():
    outcomes = []
    for reverse in (False, True):
        chain = Chain()
        register_program(chain, "aco1", "mssp", {"track": "EN"}, year=2022)
        register_program(chain, "aco2", "mssp", {"track": "EN"}, year=2022, payer=OTHER_PAYER)
        txs = [chain.tx(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000)),
               chain.tx(OTHER_PAYER, "settlement_submit", settlement_body(chain, 9_900_000_000, program="aco2"))]
        receipts = chain.run(txs[::-1] if reverse else txs)
        assert all(r.ok for r in receipts)
        outcomes.append(chain.store)
    assert outcomes[0] == outcomes[1]


# ------------------------------------------------------------------ largest-remainder split


def test_largest_remainder_gives_the_spare_cent_to_the_largest_remainder_then_the_lower_id():
    assert split_by_shares(100, [["a", 3_333], ["b", 3_333], ["c", 3_334]]) == [["a", 33], ["b", 33], ["c", 34]]
    assert split_by_shares(2, [["a", 3_333], ["b", 3_333], ["c", 3_334]]) == [["a", 1], ["b", 0], ["c", 1]]
    assert split_by_shares(1, [["b", 5_000], ["a", 5_000]]) == [["a", 1], ["b", 0]]
    assert split_by_shares(-1, [["b", 5_000], ["a", 5_000]]) == [["a", -1], ["b", 0]]


def test_check_shares_raises_a_typed_error():
    with pytest.raises(InvalidSharesError):
        check_shares([["a", 9_999]])


@st.composite
def shares(draw):
    n = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(1, 9_999), min_size=n - 1, max_size=n - 1, unique=True)))
    bounds = [0, *cuts, 10_000]
    return [["org%d" % i, bounds[i + 1] - bounds[i]] for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(-10**12, 10**12), parts=shares())
def test_a_split_is_exact_and_each_part_is_within_a_cent_of_its_share(amount, parts):
    result = split_by_shares(amount, parts)
    assert sum(cents for _, cents in result) == amount
    for (org, cents), (_, bps) in zip(result, sorted(parts)):
        assert abs(Fraction(cents) - Fraction(amount * bps, 10_000)) < 1
    assert split_by_shares(amount, parts[::-1]) == result


def test_a_loss_estimate_with_a_disaster_share_is_trued_up_against_the_final(chain):
    # Interim: G = −$5M, LSR 40 % → −$2M, half forgiven (6 of 12 months, all affected) → −$1M.
    # Final: G = −$4M → −$1.6M; the regulator revised the determination to 0 months → true-up −$0.6M.
    assert determine(chain, affected_months=6, affected_share_bps=10_000).ok
    interim = settlement_body(chain, 10_500_000_000, "interim", disaster_ref=cite(chain, disaster_key("aco1", 2022)))
    chain.ok(PAYER, "settlement_submit", interim)
    record = chain.get(key("settlement", INTERIM))
    assert record["amount_due_cents"] == -100_000_000
    assert record["references"]["disaster"] == interim["disaster_ref"]
    assert record["inputs"]["disaster"] == {"affected_months": 6, "affected_beneficiary_share": [1, 1]}
    assert determine(chain, affected_months=0, affected_share_bps=10_000).ok
    assert chain.get(disaster_key("aco1", 2022))["revision"] == 1
    stale = settlement_body(chain, 10_400_000_000, disaster_ref=interim["disaster_ref"])
    assert chain.send(PAYER, "settlement_submit", stale).code == "stale_reference"
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 10_400_000_000,
                                                         disaster_ref=cite(chain, disaster_key("aco1", 2022))))
    final = chain.get(key("settlement", FINAL))
    assert (final["result"]["earned_cents"], final["true_up_cents"]) == (-160_000_000, -60_000_000)
    # the final settlement fixes the determination
    assert determine(chain, affected_months=12, affected_share_bps=10_000).code == "program_state"


# ------------------------------------------------------------------ inputs the payer used to type in


@pytest.mark.parametrize("figures", [
    {"participant_revenue_cents": 3_000_000_000, "revenue_ref": None},
    {"small_population_msr_bps": 200},
    {"disaster": {"affected_months": 12, "affected_share_bps": 10_000}},
    {"disaster": {"reduction_cents": 1}},
    {"eligible_for_below_msr_savings": True},
])
def test_revenue_msr_disaster_or_eligibility_typed_in_by_the_payer_are_refused(chain, figures):
    body = dict(settlement_body(chain, 10_500_000_000), **figures)
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", body)
    assert receipt.code == "submitted_figures"
    assert all(name in receipt.message for name in figures if name != "revenue_ref")
    assert chain.snapshot() == before


def test_a_disaster_determination_is_the_regulators_to_make(chain):
    body = {"affected_months": 12, "affected_share_bps": 5_000}
    for sender in (PAYER, CLINIC, AUDITOR):
        assert determine(chain, sender=sender, **body).code == "not_permitted"
    assert chain.get(disaster_key("aco1", 2022)) is None
    assert determine(chain, **body, basis="FEMA DR-4673").ok
    record = chain.get(disaster_key("aco1", 2022))
    assert (record["kind"], record["year"], record["determined_by"]) == ("mssp_disaster", 2022, "cms-admin")
    assert (record["affected_months"], record["affected_share_bps"], record["reduction_cents"]) == (12, 5_000, None)


@pytest.mark.parametrize("body, code", [
    ({"affected_months": 13, "affected_share_bps": 1}, "payment_error"),
    ({"affected_months": 6, "affected_share_bps": 10_001}, "payment_error"),
    ({"affected_months": 6}, "payment_error"),
    ({"reduction_cents": -1}, "payment_error"),
    ({"reduction_cents": 5, "affected_months": 6, "affected_share_bps": 1}, "payment_error"),
    ({"reduction_cents": 5, "basis": ""}, "payment_error"),
    ({"program_id": "nope", "reduction_cents": 5}, "unknown_program"),
])
def test_a_malformed_disaster_determination_is_refused_and_changes_nothing(chain, body, code):
    register_program(chain, "cap1", "capitation", {"pmpm_cents": 1}, year=2022)
    before = chain.snapshot()
    assert determine(chain, **body).code == code
    assert determine(chain, program="cap1", reduction_cents=5).code == "unknown_program"
    assert chain.snapshot() == before


def test_a_determined_disaster_reduces_the_loss_and_must_be_cited(chain):
    # G = −$5M, LSR 40 % → −$2M; 12 months × 50 % of beneficiaries affected → half forgiven.
    assert determine(chain, affected_months=12, affected_share_bps=5_000).ok
    uncited = settlement_body(chain, 10_500_000_000)
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", uncited)
    assert receipt.code == "missing_input" and "mssp_disaster/aco1" in receipt.message
    assert chain.snapshot() == before
    chain.ok(PAYER, "settlement_submit", dict(uncited, disaster_ref=cite(chain, disaster_key("aco1", 2022))))
    result = chain.get(key("settlement", FINAL))["result"]
    assert result["disaster_reduction_cents"] == [100_000_000, 1] and result["earned_cents"] == -100_000_000


def test_a_disaster_reference_of_the_wrong_kind_program_or_year_is_refused_and_changes_nothing(chain):
    register_program(chain, "aco2", "mssp", {"track": "EN"}, year=2022)
    assert determine(chain, program="aco2", reduction_cents=1).ok
    other_year = chain.put(disaster_key("aco1", 2021), {"kind": "mssp_disaster", "program_id": "aco1", "year": 2021,
                                                         "affected_months": None, "affected_share_bps": None,
                                                         "reduction_cents": 1})
    body = settlement_body(chain, 10_500_000_000)
    before = chain.snapshot()
    for ref, code in ((cite(chain, disaster_key("aco2", 2022)), "mismatched_reference"),  # another program's
                      (other_year, "mismatched_reference"),  # another year's
                      (body["benchmark_ref"], "mismatched_reference"),  # not a determination
                      ({"key": "mssp_disaster/aco1/2022", "hash": bytes(32)}, "stale_reference")):  # none made
        assert chain.send(PAYER, "settlement_submit", dict(body, disaster_ref=ref)).code == code
    assert chain.snapshot() == before


def test_a_level_d_loss_is_limited_by_the_participants_revenue_from_the_ledger():
    # BASIC D, PY2022: B = $100M, E = $115M → G = −$15M; 30 % → −$4.5M; limit = lesser of
    # 4 % of revenue and 2 % of B ($2M). Revenue $30M → $1.2M (revenue leg), $60M → $2M.
    # High revenue (§425.20) when revenue ≥ 35 % × E = $40.25M: the $60M ACO is, the $30M one is not.
    cases = ((3_000_000_000, -120_000_000, "revenue", False), (6_000_000_000, -200_000_000, "benchmark", True))
    for revenue, owed, basis, high in cases:
        chain = Chain()
        register_program(chain, "aco1", "mssp", {"track": "D"}, year=2022)
        body = settlement_body(chain, 11_500_000_000)
        before = chain.snapshot()
        receipt = chain.send(PAYER, "settlement_submit", body)
        assert receipt.code == "missing_input" and "revenue_ref" in receipt.message
        assert chain.snapshot() == before
        chain.ok(PAYER, "settlement_submit", dict(body, revenue_ref=revenue_ref(chain, revenue)))
        record = chain.get(key("settlement", FINAL))
        assert record["result"]["earned_cents"] == owed and record["result"]["loss_limit_basis"] == basis
        assert record["inputs"]["participant_revenue_cents"] == revenue
        assert record["inputs"]["high_revenue"] is high
        assert record["references"]["revenue"]["key"].startswith("participant_revenue/aco1/clinic-aco/")


def test_a_revenue_reference_of_the_wrong_kind_program_aco_or_window_is_refused_and_changes_nothing():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "D"}, year=2022)
    body = settlement_body(chain, 11_500_000_000)
    refs = [
        (body["tcoc_ref"], "mismatched_reference"),  # not a revenue record
        (revenue_ref(chain, 1, program="aco2"), "mismatched_reference"),  # another program's
        (revenue_ref(chain, 1, aco="other-aco"), "mismatched_reference"),  # another ACO's
        (revenue_ref(chain, 1, period_end=20220630), "mismatched_reference"),  # not the TCOC's window
        (revenue_ref(chain, 1, year=2021), "mismatched_reference"),
        ({"key": "participant_revenue/aco1/clinic-aco/x", "hash": bytes(32)}, "stale_reference"),  # none
    ]
    still_open = revenue_ref(chain, 1, status=tcoc.OPEN)
    before = chain.snapshot()
    for ref, code in refs + [(still_open, "mismatched_reference")]:
        assert chain.send(PAYER, "settlement_submit", dict(body, revenue_ref=ref)).code == code
    assert chain.snapshot() == before


def test_only_a_low_revenue_aco_shares_savings_below_the_msr():
    # BASIC A, PY2024 (§425.605(h)): B = $100M, E = $98M → r = 2 % < MSR 2.5 % (N = 20,000).
    # Low revenue ($10M < 35 % × $98M): half the 40 % rate → 2 M × 20 % × 0.98 = $392,000.
    # High revenue ($34.3M = 35 % × $98M exactly): nothing.
    for revenue, high, earned in ((1_000_000_000, False, 39_200_000), (3_430_000_000, True, 0)):
        chain = Chain()
        register_program(chain, "aco1", "mssp", {"track": "A"}, year=2024)
        body = settlement_body(chain, 9_800_000_000, year=2024)
        assert chain.send(PAYER, "settlement_submit", body).code == "missing_input"
        chain.ok(PAYER, "settlement_submit", dict(body, revenue_ref=revenue_ref(chain, revenue, year=2024)))
        record = chain.get(key("settlement", "aco1/mssp/2024/final"))
        assert record["inputs"]["high_revenue"] is high
        assert record["inputs"]["eligible_for_below_msr_savings"] is (not high)
        assert record["result"]["below_msr_savings"] is (not high)
        assert record["result"]["earned_cents"] == earned


def test_below_5000_assigned_the_msr_comes_from_the_assigned_count():
    # BASIC A, PY2022, N = 3,785 (PUF 2018 A1071): MSR = 5.0 % − 785/1999 × 1.1 % = 4.568034 %.
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "A"}, year=2022)
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_500_000_000, assigned=3_785))  # r = 5 %
    result = chain.get(key("settlement", FINAL))["result"]
    msr = Fraction(*result["minimum_savings_rate"])
    assert msr == mssp.minimum_savings_rate_for_small_population(3_785)
    assert abs(msr - Fraction("0.04568034")) < Fraction(1, 10**9)
    assert result["msr_source"] == "small_population_scale" and result["met_minimum_savings_rate"] is True
    assert result["earned_cents"] == 196_000_000  # $5M × 40 % × 0.98


def test_below_500_assigned_a_variable_msr_settlement_is_refused_and_changes_nothing():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "A"}, year=2022)
    body = settlement_body(chain, 9_500_000_000, assigned=499)
    before = chain.snapshot()
    receipt = chain.send(PAYER, "settlement_submit", body)
    assert receipt.code == "missing_input" and "499" in receipt.message
    assert chain.snapshot() == before


def test_a_fixed_msr_option_and_the_wrong_program_type_are_handled():
    chain = Chain()
    register_program(chain, "aco1", "mssp", {"track": "EN", "msr_option_bps": 0}, year=2022)
    register_program(chain, "cap1", "capitation", {"pmpm_cents": 1}, year=2022)
    assert chain.get(key("payment_program", "aco1"))["params"]["msr_option_bps"] == 0
    chain.ok(PAYER, "settlement_submit", settlement_body(chain, 9_990_000_000))  # r = 0.1 % ≥ MSR 0
    assert chain.get(key("settlement", FINAL))["amount_due_cents"] == 7_350_000  # $100,000 × 0.75 × 0.98
    assert chain.send(PAYER, "settlement_submit", settlement_body(chain, 1, program="cap1")).code == "unknown_program"
