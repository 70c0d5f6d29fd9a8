"""Coordination of benefits: NAIC MDL-120 §6 order rules, Medicare Secondary
Payer order, secondary payment methods (worked cases), and the secondary flow
through `apply_block`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.benefits import secondary
from contracts.benefits.accumulators import individual_key
from contracts.benefits.order import compare, order_of_benefits
from contracts.errors import InvalidValue
from tests.contracts.benefits_helpers import (
    ALICE, adjudicate, coverage_body, cov, line_body, medicare_body, plan_body, world,
)
from tests.contracts.helpers import admin

DAY = 20250310


def ranks(coverages, day=DAY):
    return [(r.payer, r.rank, r.rule) for r in order_of_benefits(coverages, day)]


# ------------------------------------------------------------ NAIC order rules, one worked case each


def test_a_plan_without_a_cob_provision_is_primary():
    decision = compare(cov("a", cob_provision=False), cov("b", relationship="spouse"), DAY)
    assert (decision.first, decision.rule) == (("a", "p"), "no_cob_provision")


def test_two_plans_without_a_cob_provision_both_pay_as_primary():
    assert ranks([cov("a", cob_provision=False), cov("b", cob_provision=False)]) == [
        ("a", 1, "no_cob_provision"), ("b", 1, "no_cob_provision")]


def test_the_plan_covering_the_person_as_subscriber_is_primary_over_the_dependent_plan():
    assert ranks([cov("spouse_plan", relationship="spouse", coverage_start=20100101), cov("own_plan")]) == [
        ("own_plan", 1, "non_dependent_dependent"), ("spouse_plan", 2, "non_dependent_dependent")]


def test_birthday_rule_the_parent_whose_birthday_comes_first_in_the_year_is_primary():
    # father born 1970-09-10, mother 1975-03-15: only month and day count
    dad = cov("dad", relationship="child", subscriber_birthday=910, coverage_start=20150101)
    mom = cov("mom", relationship="child", subscriber_birthday=315, coverage_start=20200101)
    decision = compare(dad, mom, DAY)
    assert (decision.first, decision.rule) == (("mom", "p"), "birthday_rule")


def test_same_birthday_the_plan_that_covered_the_parent_longer_is_primary():
    a = cov("a", relationship="child", subscriber_birthday=704, subscriber_since=20180101, coverage_start=20200101)
    b = cov("b", relationship="child", subscriber_birthday=704, subscriber_since=20120101, coverage_start=20200101)
    decision = compare(a, b, DAY)
    assert (decision.first, decision.rule) == (("b", "p"), "birthday_rule_longer_parent_coverage")


def test_a_court_decree_beats_the_birthday_rule_for_a_child_of_separated_parents():
    decreed = cov("dad", relationship="child", subscriber_birthday=1201, parents="apart", court_decree="responsible",
                  custody="noncustodial")
    other = cov("mom", relationship="child", subscriber_birthday=101, parents="apart", custody="custodial")
    decision = compare(other, decreed, DAY)
    assert (decision.first, decision.rule) == (("dad", "p"), "court_decree")


def test_a_joint_custody_decree_falls_back_to_the_birthday_rule():
    dad = cov("dad", relationship="child", subscriber_birthday=1201, parents="apart", court_decree="joint",
              custody="noncustodial")
    mom = cov("mom", relationship="child", subscriber_birthday=101, parents="apart", court_decree="joint",
              custody="custodial")
    assert compare(dad, mom, DAY).first == ("mom", "p")
    assert compare(dad, mom, DAY).rule == "birthday_rule"


@pytest.mark.parametrize("first,second", [
    ("custodial", "custodial_spouse"), ("custodial_spouse", "noncustodial"), ("noncustodial", "noncustodial_spouse"),
])
def test_without_a_decree_custodial_parent_then_spouse_then_noncustodial_then_spouse(first, second):
    # the second plan has the earlier birthday: custody decides before birthdays
    a = cov("a", relationship="child", subscriber_birthday=1201, parents="apart", custody=first)
    b = cov("b", relationship="child", subscriber_birthday=101, parents="apart", custody=second)
    decision = compare(b, a, DAY)
    assert (decision.first, decision.rule) == (("a", "p"), "custodial_parent")


def test_the_active_employee_plan_is_primary_over_the_retiree_plan():
    retired = cov("old_job", employment="retired", coverage_start=19900101)
    active = cov("new_job", coverage_start=20240101)
    assert ranks([retired, active]) == [("new_job", 1, "active_inactive"), ("old_job", 2, "active_inactive")]


def test_a_laid_off_employee_plan_is_inactive_too():
    assert compare(cov("a", employment="laid_off"), cov("b"), DAY).first == ("b", "p")


def test_cobra_continuation_is_secondary_to_the_employee_plan():
    cobra = cov("cobra_plan", employment="none", cobra=True, coverage_start=20100101)
    job = cov("job_plan", employment="none", coverage_start=20240101)
    decision = compare(cobra, job, DAY)
    assert (decision.first, decision.rule) == (("job_plan", "p"), "cobra")


def test_the_longer_coverage_is_primary_when_nothing_else_decides():
    decision = compare(cov("new", coverage_start=20240101), cov("old", coverage_start=20190101), DAY)
    assert (decision.first, decision.rule) == (("old", "p"), "longer_coverage")


def test_when_no_rule_decides_the_plans_share_equally():
    assert ranks([cov("a"), cov("b")]) == [("a", 1, "equal_share"), ("b", 1, "equal_share")]
    assert secondary.equal_share(10_001, 2, 8_000) == 5_001  # half away from zero
    assert secondary.equal_share(10_000, 2, 4_000) == 4_000  # never more than as primary


def test_coverage_not_active_on_the_day_is_not_ranked():
    assert ranks([cov("ended", coverage_end=20250101), cov("now", coverage_start=20250201)]) == [
        ("now", 1, "only_coverage")]


# ------------------------------------------------------------ Medicare Secondary Payer (42 CFR 411)


def medicare(reason="age", **facts):
    return cov("cms", "part-b", plan_kind="medicare", medicare_reason=reason, employment="none",
               employer_size=0, **facts)


def test_working_aged_employer_of_20_or_more_is_primary_to_medicare():
    assert ranks([medicare(), cov("acme", employer_size=20)])[0][:3] == ("acme", 1, "msp_working_aged")
    assert ranks([medicare(), cov("acme", relationship="spouse", employer_size=20)])[0][0] == "acme"


def test_working_aged_small_employer_or_retiree_plan_is_secondary_to_medicare():
    assert ranks([medicare(), cov("acme", employer_size=19)])[0] == ("cms", 1, "msp_medicare_primary")
    assert ranks([medicare(), cov("acme", employment="retired")])[0] == ("cms", 1, "msp_medicare_primary")
    assert ranks([medicare(), cov("acme", cobra=True)])[0] == ("cms", 1, "msp_medicare_primary")


def test_disability_large_group_plan_of_100_or_more_is_primary_to_medicare():
    assert ranks([medicare("disability"), cov("acme", employer_size=100)])[0] == ("acme", 1, "msp_disability_lghp")
    assert ranks([medicare("disability"), cov("acme", employer_size=99)])[0][0] == "cms"


def test_esrd_group_plan_is_primary_for_the_30_month_coordination_period_only():
    esrd = medicare("esrd", esrd_coordination_start=20230315)
    retiree = cov("acme", employment="retired", employer_size=5)
    assert ranks([esrd, retiree], 20250831)[0] == ("acme", 1, "msp_esrd_coordination_period")
    # 30 months from March 2023 end with August 2025
    assert ranks([esrd, retiree], 20250901)[0] == ("cms", 1, "msp_esrd_after_coordination_period")


def test_medicaid_is_the_payer_of_last_resort():
    assert ranks([cov("aaa", plan_kind="medicaid", coverage_start=19900101), cov("zzz")])[0][0] == "zzz"


def test_medicare_between_a_spouse_plan_and_a_retiree_plan_reverses_the_dependent_rule():
    # NAIC §6 D(1)(b): retired, 67; spouse works for a 50-person employer
    retiree_plan = cov("retiree", employment="retired")
    spouse_plan = cov("spouse_job", relationship="spouse", employer_size=50)
    order = ranks([retiree_plan, spouse_plan, medicare()])
    assert [payer for payer, _, _ in order] == ["spouse_job", "cms", "retiree"]
    assert compare(retiree_plan, spouse_plan, DAY, [medicare()]).rule == "non_dependent_dependent_medicare_exception"


# ------------------------------------------------------------ secondary payment (pure worked cases)


def test_standard_cob_pays_the_balance_up_to_its_normal_benefit():
    assert secondary.standard_cob(10_000, 8_000, 8_000) == 2_000
    assert secondary.standard_cob(10_000, 2_000, 5_000) == 5_000


def test_carve_out_pays_its_benefit_less_the_primary_payment():
    assert secondary.carve_out(10_000, 8_000, 8_000) == 0
    assert secondary.carve_out(10_000, 5_000, 8_000) == 3_000


def test_non_duplication_pays_only_what_its_benefit_exceeds_the_primary_payment_by():
    assert secondary.non_duplication(10_000, 5_000, 8_000) == 3_000
    assert secondary.non_duplication(10_000, 9_000, 8_000) == 0


def test_medicare_secondary_payment_matches_the_411_33_b_example():
    line = secondary.MedicareLine(charge=17_500, primary_paid=12_000, medicare_normal=10_000,
                                  medicare_allowed=12_500, primary_allowed=15_000)
    assert secondary.medicare_secondary_fee_schedule(line) == 3_000


def test_medicare_pays_nothing_when_the_provider_accepted_the_primary_payment_in_full():
    line = secondary.MedicareLine(17_500, 12_000, 10_000, 12_500, 15_000, accepted_as_full=True)
    assert secondary.medicare_secondary_fee_schedule(line) == 0


def test_medicare_secondary_payment_on_another_basis_matches_the_411_33_f_example():
    assert secondary.medicare_secondary_other_basis(270_000, 52_000, 280_000, 236_000) == 34_000


def test_negative_cob_amounts_are_rejected():
    with pytest.raises(InvalidValue):
        secondary.standard_cob(10_000, -1, 5_000)


# ------------------------------------------------------------ through the engine


def two_payer_chain(cms_method: str = "standard"):
    """Alice: acme PPO as subscriber (primary), cms plan as spouse (secondary)."""
    chain = world(ALICE)
    chain.ok(admin("acme"), "benefit_plan_register", plan_body())
    chain.ok(admin("cms"), "benefit_plan_register", plan_body(
        "spouse-ppo", cob_method=cms_method, deductible_cents={"individual": 25_000, "family": 50_000}))
    chain.ok(admin("acme"), "benefit_coverage_enroll", coverage_body(ALICE))
    chain.ok(admin("cms"), "benefit_coverage_enroll", coverage_body(ALICE, "spouse-ppo", relationship="spouse"))
    return chain


def test_a_secondary_claim_before_the_primary_adjudication_is_rejected_and_changes_nothing():
    chain = two_payer_chain()
    receipt = chain.fails(admin("cms"), "benefit_adjudicate", line_body("c1", plan_id="spouse-ppo"), "conflict")
    assert "recorded first" in receipt.message


@pytest.mark.parametrize("method,paid,member", [
    ("standard", 60_000, 0), ("carve_out", 20_000, 40_000), ("non_duplication", 20_000, 40_000),
])
def test_secondary_pays_by_its_method_and_credits_its_deductible_as_if_primary(method, paid, member):
    chain = two_payer_chain(method)
    # $1,000 surgery. Primary: $500 deductible + 20 % of $500 = $600 member, pays $400.
    first = adjudicate(chain, "acme", line_body("c1", category="surgery", allowed=100_000))
    assert (first["rank"], first["cob_rule"], first["paid_cents"], first["member_cents"]) == (
        1, "non_dependent_dependent", 40_000, 60_000)
    # Secondary's normal benefit: $250 deductible + 20 % of $750 = $400 member → N = $600.
    second = adjudicate(chain, "cms", line_body("c1", plan_id="spouse-ppo", category="surgery", allowed=100_000))
    assert (second["rank"], second["normal_benefit_cents"]) == (2, 60_000)
    assert (second["paid_cents"], second["member_cents"]) == (paid, member)
    assert first["paid_cents"] + second["paid_cents"] <= 100_000
    met = chain.get(individual_key(ALICE, 2025, "cms", "spouse-ppo"))
    assert met == {"deductible": 25_000, "oop": member}


def test_medicare_as_secondary_pays_by_411_33_through_the_engine():
    chain = world(ALICE)
    office = {"office": {"coinsurance_bp": 2_000, "deductible_applies": False}}
    chain.ok(admin("acme"), "benefit_plan_register", plan_body(categories=office, buckets=[]))
    part_b = medicare_body()
    part_b["deductible_cents"] = {"individual": 0, "family": 0}  # deductible met, as in §411.33(b)
    chain.ok(admin("cms"), "benefit_plan_register", part_b)
    chain.ok(admin("acme"), "benefit_coverage_enroll", coverage_body(ALICE, employer_size=25))
    chain.ok(admin("cms"), "benefit_coverage_enroll", coverage_body(
        ALICE, "part-b", employment="none", employer_size=0, medicare_reason="age"))
    first = adjudicate(chain, "acme", line_body("c1", allowed=15_000, billed=17_500))
    assert first["paid_cents"] == 12_000 and first["cob_rule"] == "msp_working_aged"
    second = adjudicate(chain, "cms", line_body("c1", plan_id="part-b", allowed=12_500, billed=17_500))
    assert (second["rank"], second["paid_cents"], second["member_cents"]) == (2, 3_000, 0)


def test_the_secondary_may_adjudicate_the_line_the_primary_paid_but_not_twice():
    chain = two_payer_chain()
    adjudicate(chain, "acme", line_body("c1"))
    adjudicate(chain, "cms", line_body("c1", plan_id="spouse-ppo"))
    chain.fails(admin("cms"), "benefit_adjudicate", line_body("c2", plan_id="spouse-ppo"), "duplicate")


def test_a_secondary_after_a_primary_denial_pays_its_normal_benefit():
    chain = world(ALICE)
    chain.ok(admin("acme"), "benefit_plan_register", plan_body())
    no_auth = dict(plan_body()["categories"], imaging={"coinsurance_bp": 2_000})
    chain.ok(admin("cms"), "benefit_plan_register", plan_body("spouse-ppo", categories=no_auth))
    chain.ok(admin("acme"), "benefit_coverage_enroll", coverage_body(ALICE))
    chain.ok(admin("cms"), "benefit_coverage_enroll", coverage_body(ALICE, "spouse-ppo", relationship="spouse"))
    first = adjudicate(chain, "acme", line_body("c1", category="imaging", allowed=20_000))  # no authorisation
    assert (first["status"], first["reason"], first["carc"]) == ("denied", "prior_auth_missing", "197")
    second = adjudicate(chain, "cms", line_body("c1", plan_id="spouse-ppo", category="imaging", allowed=20_000))
    # nothing paid before it: its normal benefit, all $200 to the deductible
    assert (second["status"], second["rank"], second["paid_cents"], second["member_cents"]) == ("paid", 2, 0, 20_000)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["office", "surgery", "pt"]), st.integers(0, 300_000)),
                min_size=1, max_size=8),
       st.sampled_from(["standard", "carve_out", "non_duplication"]))
def test_with_two_payers_no_one_pays_past_the_allowable_and_each_oop_holds(claims, method):
    chain = two_payer_chain(method)
    for n, (category, allowed) in enumerate(claims):
        body = line_body("c%d" % n, category=category, allowed=allowed, date=20250101 + n,
                         hcpcs="97110" if category == "pt" else "99213")
        first = adjudicate(chain, "acme", body)
        second = adjudicate(chain, "cms", dict(body, plan_id="spouse-ppo"))
        assert first["paid_cents"] + second["paid_cents"] <= allowed
        assert second["member_cents"] == allowed - first["paid_cents"] - second["paid_cents"]
    for plan, payer in (("ppo", "acme"), ("spouse-ppo", "cms")):
        met = chain.get(individual_key(ALICE, 2025, payer, plan))
        assert met["oop"] <= 150_000 and met["deductible"] <= 50_000
