"""Benefits: plan designs, coverage, cost share and accumulators, limit buckets
(plan, Medicare KX, pooled across payers), prior authorisation, duplicates,
real-time eligibility, and bad input — all through `apply_block`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.benefits import eligibility
from contracts.benefits.accumulators import family_key, individual_key
from contracts.benefits.adjudicate import adjudication_key
from contracts.benefits.priorauth import auth_key
from tests.contracts.benefits_helpers import (
    ALICE, BOB, adjudicate, coverage_body, line_body, medicare_body, plan_body, ppo_world, world,
)
from tests.contracts.helpers import DAY, admin, patient

ACME, CMS, RIVER = admin("acme"), admin("cms"), admin("river")


def acc(chain, member=ALICE, payer="acme", plan="ppo", year=2025):
    return chain.get(individual_key(member, year, payer, plan), {"deductible": 0, "oop": 0})


# ------------------------------------------------------------ plan designs and coverage


def test_a_payer_registers_a_plan_design_once():
    chain = world()
    chain.ok(ACME, "benefit_plan_register", plan_body())
    chain.fails(ACME, "benefit_plan_register", plan_body(), "already_exists")
    chain.ok(CMS, "benefit_plan_register", plan_body())  # plan ids are per payer


@pytest.mark.parametrize("change", [
    {"oop_max_cents": {"individual": 10_000, "family": 300_000}},  # below the deductible
    {"deductible_cents": {"individual": 50_000, "family": 10_000}},  # family below individual
    {"deductible_cents": {"individual": -1, "family": 10_000}},
    {"categories": {"pt": {"coinsurance_bp": 10_001}}},
    {"buckets": [{"bucket_id": "x", "categories": ["acupuncture"], "unit": "visits", "limit": 3}]},
    {"kind": "medicare", "cob_method": "standard"},  # a medicare plan coordinates by §411.33
])
def test_a_malformed_plan_design_is_rejected(change):
    chain = world()
    chain.fails(ACME, "benefit_plan_register", plan_body(**change), "invalid_value")


def test_only_a_payer_registers_plans_and_enrolls_coverage():
    chain = ppo_world()
    chain.fails(RIVER, "benefit_plan_register", plan_body("other"), "not_permitted")
    chain.fails(RIVER, "benefit_coverage_enroll", coverage_body(ALICE), "not_permitted")


@pytest.mark.parametrize("change,code", [
    ({"plan_id": "nope"}, "not_found"),
    ({"member": patient("stranger")}, "not_found"),
    ({"member": "alice"}, "malformed"),
    ({"coverage_start": 20250230}, "invalid_value"),
    ({"subscriber_birthday": 230}, "invalid_value"),
    ({"relationship": "cousin"}, "invalid_value"),
    ({"coverage_end": 20231231}, "invalid_value"),
    ({"medicare_reason": "age"}, "invalid_value"),
    ({"custody": "custodial"}, "invalid_value"),  # custody describes a child only
])
def test_bad_coverage_enrollments_are_rejected_and_change_nothing(change, code):
    chain = world()
    chain.ok(ACME, "benefit_plan_register", plan_body())
    chain.fails(ACME, "benefit_coverage_enroll", dict(coverage_body(ALICE), **change), code)


# ------------------------------------------------------------ cost share sequences


def test_deductible_then_coinsurance_then_the_oop_maximum():
    chain = ppo_world()
    steps = [  # (category, allowed) -> (deductible, copay, coinsurance, paid)
        (("surgery", 30_000), (30_000, 0, 0, 0)),  # all to the $500 deductible
        (("surgery", 50_000), (20_000, 0, 6_000, 24_000)),  # $200 finishes it, 20 % of $300
        (("surgery", 600_000), (0, 0, 94_000, 506_000)),  # 20 % = $1,200 capped at the $940 left
        (("office", 10_000), (0, 0, 0, 10_000)),  # OOP met: no copay either
    ]
    for n, ((category, allowed), expected) in enumerate(steps):
        record = adjudicate(chain, "acme", line_body("c%d" % n, category=category, allowed=allowed, line=0,
                                                     date=20250301 + n))
        got = (record["deductible_cents"], record["copay_cents"], record["coinsurance_cents"], record["paid_cents"])
        assert got == expected, (n, got)
    assert acc(chain) == {"deductible": 50_000, "oop": 150_000}


def test_a_copay_category_skips_the_deductible():
    chain = ppo_world()
    record = adjudicate(chain, "acme", line_body("c1", allowed=12_000))
    assert (record["copay_cents"], record["member_cents"], record["paid_cents"]) == (2_500, 2_500, 9_500)
    assert acc(chain) == {"deductible": 0, "oop": 2_500}


def test_coinsurance_rounds_half_away_from_zero_once_per_line():
    chain = ppo_world(deductible_cents={"individual": 0, "family": 0})
    record = adjudicate(chain, "acme", line_body("c1", category="surgery", allowed=10_003))  # 20 % = 2000.6
    assert record["coinsurance_cents"] == 2_001


def test_the_family_deductible_and_oop_are_embedded():
    chain = world(ALICE, BOB)
    chain.ok(ACME, "benefit_plan_register", plan_body(oop_max_cents={"individual": 150_000, "family": 200_000}))
    for member in (ALICE, BOB):
        chain.ok(ACME, "benefit_coverage_enroll", coverage_body(member, family_id="smith"))
    alice = adjudicate(chain, "acme", line_body("a1", category="surgery", allowed=1_000_000))
    assert alice["member_cents"] == 150_000  # individual OOP maximum
    bob = adjudicate(chain, "acme", line_body("b1", BOB, category="surgery", allowed=1_000_000))
    assert (bob["deductible_cents"], bob["member_cents"]) == (50_000, 50_000)  # family OOP left: $500
    assert chain.get(family_key("acme", "ppo", "smith", 2025)) == {"deductible": 100_000, "oop": 200_000}


def test_accumulators_restart_with_the_calendar_year():
    chain = ppo_world()
    adjudicate(chain, "acme", line_body("c1", category="surgery", allowed=50_000, date=20251215))
    record = adjudicate(chain, "acme", line_body("c2", category="surgery", allowed=50_000, date=20260105))
    assert record["deductible_cents"] == 50_000 and acc(chain, year=2026)["deductible"] == 50_000


def test_a_line_outside_the_coverage_dates_or_categories_is_denied_with_a_reason():
    chain = ppo_world()
    early = adjudicate(chain, "acme", line_body("c1", date=20231231))
    assert (early["status"], early["reason"], early["carc"]) == ("denied", "coverage_not_active", "26")
    odd = adjudicate(chain, "acme", line_body("c2", category="dental"))
    assert (odd["status"], odd["carc"]) == ("denied", "96")
    assert acc(chain) == {"deductible": 0, "oop": 0}


# ------------------------------------------------------------ limit buckets


def test_a_combined_pt_ot_chiro_visit_limit_denies_the_visit_past_it():
    chain = ppo_world(buckets=[{"bucket_id": "rehab", "categories": ["pt", "ot", "chiro"], "unit": "visits",
                                "limit": 3}])
    for n, category in enumerate(("pt", "ot", "chiro")):
        assert adjudicate(chain, "acme", line_body("v%d" % n, category=category, hcpcs="97110",
                                                   date=20250301 + n))["status"] == "paid"
    fourth = adjudicate(chain, "acme", line_body("v3", category="pt", hcpcs="97110", date=20250310))
    assert (fourth["status"], fourth["reason"], fourth["carc"]) == ("denied", "benefit_limit_reached", "119")
    assert adjudicate(chain, "acme", line_body("s1", category="slp", hcpcs="92507"))["status"] == "paid"


def test_a_hard_dollar_limit_caps_the_allowed_amount_then_denies():
    chain = ppo_world(deductible_cents={"individual": 0, "family": 0},
                      buckets=[{"bucket_id": "chiro_dollars", "categories": ["chiro"], "unit": "cents", "limit": 10_000}])
    first = adjudicate(chain, "acme", line_body("c1", category="chiro", allowed=6_000, hcpcs="98940"))
    second = adjudicate(chain, "acme", line_body("c2", category="chiro", allowed=6_000, hcpcs="98941"))
    assert (first["allowed_cents"], second["allowed_cents"], second["paid_cents"]) == (6_000, 4_000, 3_200)
    third = adjudicate(chain, "acme", line_body("c3", category="chiro", allowed=6_000, hcpcs="98942"))
    assert third["status"] == "denied"


def medicare_world(threshold=241_000):
    chain = world()
    chain.ok(CMS, "benefit_plan_register", medicare_body(threshold=threshold))
    chain.ok(CMS, "benefit_coverage_enroll", coverage_body(ALICE, "part-b", employment="none", employer_size=0,
                                                           medicare_reason="age"))
    return chain


def test_medicare_pt_and_slp_share_a_kx_threshold_and_ot_has_its_own():
    chain = medicare_world(threshold=100_000)
    pt = adjudicate(chain, "cms", line_body("c1", plan_id="part-b", category="pt", hcpcs="97110", allowed=90_000))
    assert pt["status"] == "paid"
    slp = adjudicate(chain, "cms", line_body("c2", plan_id="part-b", category="slp", hcpcs="92507", allowed=20_000))
    assert (slp["status"], slp["reason"]) == ("denied", "threshold_without_kx")
    with_kx = adjudicate(chain, "cms", line_body("c3", plan_id="part-b", category="slp", hcpcs="92507",
                                                 allowed=20_000, modifiers=["GN", "KX"]))
    assert (with_kx["status"], with_kx["kx_threshold"]) == ("paid", True)
    ot = adjudicate(chain, "cms", line_body("c4", plan_id="part-b", category="ot", hcpcs="97165", allowed=90_000))
    assert (ot["status"], ot["kx_threshold"]) == ("paid", False)
    buckets = {b.bucket_id: b for b in eligibility(chain.store.get, ALICE, 20250601).plans[0].buckets}
    assert (buckets["pt_slp"].used, buckets["pt_slp"].remaining, buckets["ot"].remaining) == (110_000, 0, 10_000)


def pooled_plan(plan_id):
    return plan_body(plan_id, buckets=[{"bucket_id": "rehab", "categories": ["pt", "ot", "chiro"],
                                        "unit": "visits", "limit": 3, "pool": "rehab"}])


def test_a_pooled_therapy_limit_carries_over_from_one_payer_to_the_next():
    chain = world()
    chain.ok(ACME, "benefit_plan_register", pooled_plan("ppo"))
    chain.ok(CMS, "benefit_plan_register", pooled_plan("hmo"))
    chain.ok(ACME, "benefit_coverage_enroll", coverage_body(ALICE, coverage_end=20250630))
    chain.ok(CMS, "benefit_coverage_enroll", coverage_body(ALICE, "hmo", coverage_start=20250701))
    for n in range(2):
        adjudicate(chain, "acme", line_body("a%d" % n, category="pt", hcpcs="97110", date=20250401 + n))
    assert adjudicate(chain, "cms", line_body("h1", plan_id="hmo", category="ot", hcpcs="97165",
                                              date=20250801))["status"] == "paid"
    denied = adjudicate(chain, "cms", line_body("h2", plan_id="hmo", category="pt", hcpcs="97110", date=20250802))
    assert denied["reason"] == "benefit_limit_reached"
    view = eligibility(chain.store.get, ALICE, 20250901)
    assert view.primary == ("cms", "hmo") and view.plans[0].buckets[0].remaining == 0


def test_a_visit_paid_by_primary_and_secondary_counts_once_in_a_shared_pool():
    chain = world()
    chain.ok(ACME, "benefit_plan_register", pooled_plan("ppo"))
    chain.ok(CMS, "benefit_plan_register", pooled_plan("hmo"))
    chain.ok(ACME, "benefit_coverage_enroll", coverage_body(ALICE))
    chain.ok(CMS, "benefit_coverage_enroll", coverage_body(ALICE, "hmo", relationship="spouse"))
    adjudicate(chain, "acme", line_body("c1", category="pt", hcpcs="97110"))
    second = adjudicate(chain, "cms", line_body("c1", plan_id="hmo", category="pt", hcpcs="97110"))
    assert second["status"] == "paid" and second["pools_counted"] == []
    plans = eligibility(chain.store.get, ALICE, 20250601).plans
    assert [(p.payer, p.rank, p.buckets[0].used) for p in plans] == [("acme", 1, 1), ("cms", 2, 1)]


# ------------------------------------------------------------ prior authorisation


def pa_request(chain, auth_id="pa1", units=2, **change):
    body = {"auth_id": auth_id, "member": ALICE, "payer": "acme", "plan_id": "ppo", "category": "imaging",
            "units": units, "from_date": 20250301, "to_date": 20250331, "urgency": "standard"}
    body.update(change)
    return chain.ok(RIVER, "benefit_pa_request", body)


def pa_decide(chain, auth_id="pa1", decision="approved", **change):
    body = {"auth_id": auth_id, "decision": decision, "reason": "medically_necessary", "units": 2,
            "valid_from": 20250301, "valid_to": 20250331}
    body.update(change)
    return chain.ok(ACME, "benefit_pa_decide", body)


def imaging(claim_id, auth_id="pa1", date=20250315, hcpcs="70553", units=1):
    return line_body(claim_id, category="imaging", hcpcs=hcpcs, allowed=80_000, date=date, units=units,
                     auth_id=auth_id)


def test_an_approved_authorisation_pays_and_counts_its_units():
    chain = ppo_world()
    pa_request(chain)
    receipt = pa_decide(chain)
    assert receipt.events[0]["timely"] is True
    assert adjudicate(chain, "acme", imaging("c1"))["status"] == "paid"
    assert chain.get(auth_key("acme", "pa1"))["units_used"] == 1


@pytest.mark.parametrize("setup,line_change,reason,carc", [
    ("none", {"auth_id": None}, "prior_auth_missing", "197"),
    ("approved", {"date": 20250401}, "prior_auth_expired", "15"),
    ("approved", {"units": 3}, "prior_auth_units_exceeded", "198"),
    ("approved", {"auth_id": "nope"}, "prior_auth_invalid", "15"),
    ("denied", {}, "prior_auth_not_approved", "15"),
    ("pending", {}, "prior_auth_not_approved", "15"),
])
def test_a_line_without_a_valid_authorisation_is_recorded_as_denied(setup, line_change, reason, carc):
    chain = ppo_world()
    if setup != "none":
        pa_request(chain)
    if setup in ("approved", "denied"):
        pa_decide(chain, decision=setup)
    record = adjudicate(chain, "acme", imaging("c1", **line_change))
    assert (record["status"], record["reason"], record["carc"], record["paid_cents"]) == ("denied", reason, carc, 0)
    assert acc(chain) == {"deductible": 0, "oop": 0}


def test_a_denied_line_can_be_resubmitted_once_the_authorisation_is_approved():
    chain = ppo_world()
    assert adjudicate(chain, "acme", imaging("c1", auth_id=None))["status"] == "denied"
    pa_request(chain)
    pa_decide(chain)
    assert adjudicate(chain, "acme", imaging("c2"))["status"] == "paid"
    chain.fails(ACME, "benefit_adjudicate", imaging("c3"), "duplicate")


def test_authorisation_rules_on_who_requests_and_decides():
    chain = ppo_world()
    body = {"auth_id": "pa1", "member": ALICE, "payer": "acme", "plan_id": "ppo", "category": "imaging",
            "units": 1, "from_date": 20250301, "to_date": 20250331}
    chain.fails(ACME, "benefit_pa_request", body, "not_permitted")
    chain.fails(RIVER, "benefit_pa_request", dict(body, category="dental"), "not_found")
    chain.fails(RIVER, "benefit_pa_request", dict(body, to_date=20250201), "invalid_value")
    pa_request(chain, units=1)
    chain.fails(RIVER, "benefit_pa_request", body, "already_exists")
    decision = {"auth_id": "pa1", "decision": "approved", "reason": "ok", "units": 1,
                "valid_from": 20250301, "valid_to": 20250331}
    chain.fails(CMS, "benefit_pa_decide", decision, "not_found")  # another payer's request
    chain.fails(ACME, "benefit_pa_decide", dict(decision, units=2), "invalid_value")  # above the request
    late = chain.time_ms + 8 * DAY
    receipt = chain.ok(ACME, "benefit_pa_decide", decision, time_ms=late)
    assert receipt.events[0]["timely"] is False  # standard requests: 7 calendar days
    chain.fails(ACME, "benefit_pa_decide", decision, "conflict")


# ------------------------------------------------------------ duplicates and bad input


def test_an_exact_duplicate_line_is_rejected_and_changes_nothing():
    chain = ppo_world()
    adjudicate(chain, "acme", line_body("c1"))
    chain.fails(ACME, "benefit_adjudicate", line_body("c2"), "duplicate")
    chain.fails(ACME, "benefit_adjudicate", line_body("c1", date=20250311), "already_exists")
    assert adjudicate(chain, "acme", line_body("c3", modifiers=["25"]))["status"] == "paid"  # not exact


@pytest.mark.parametrize("change,code", [
    ({"member": patient("stranger")}, "not_found"),
    ({"plan_id": "nope"}, "not_found"),
    ({"allowed_cents": -100}, "invalid_value"),
    ({"billed_cents": 5_000}, "invalid_value"),  # allowed above billed
    ({"service_date": 20251301}, "invalid_value"),
    ({"service_date": "2025-03-10"}, "invalid_value"),
    ({"member": "pt-XYZ"}, "malformed"),
    ({"hcpcs": "9921"}, "invalid_value"),
    ({"rendering_npi": "1234567890"}, "invalid_value"),
    ({"modifiers": ["KX", "GP", "59", "25", "XU"]}, "invalid_value"),
    ({"units": 0}, "invalid_value"),
    ({"place_of_service": "office"}, "invalid_value"),
])
def test_bad_claim_lines_are_rejected_and_change_nothing(change, code):
    chain = ppo_world()
    chain.fails(ACME, "benefit_adjudicate", line_body("c1", **change), code)


def test_another_role_or_payer_cannot_adjudicate():
    chain = ppo_world()
    chain.fails(RIVER, "benefit_adjudicate", line_body("c1"), "not_permitted")
    chain.fails(CMS, "benefit_adjudicate", line_body("c1"), "not_found")  # cms has no plan ppo
    assert chain.get(adjudication_key("acme", "c1", 0)) is None


# ------------------------------------------------------------ real-time eligibility


def test_eligibility_reports_remaining_benefits_and_the_primary_payer():
    chain = ppo_world()
    adjudicate(chain, "acme", line_body("c1", category="surgery", allowed=60_000))  # $500 ded + $20
    adjudicate(chain, "acme", line_body("c2", category="pt", hcpcs="97110", date=20250311))
    view = eligibility(chain.view(), ALICE, 20250401)
    assert view.primary == ("acme", "ppo")
    plan = view.plans[0]
    assert (plan.deductible_met, plan.deductible_remaining) == (50_000, 0)
    assert (plan.oop_met, plan.oop_remaining) == (52_000 + 2_000, 150_000 - 54_000)
    assert (plan.buckets[0].used, plan.buckets[0].remaining) == (1, 19)
    assert plan.prior_auth_categories == ("imaging",)
    assert eligibility(chain.store.get, ALICE, 20230101).plans == ()  # not yet covered


# ------------------------------------------------------------ properties

CLAIMS = st.lists(st.tuples(st.sampled_from(["office", "surgery", "pt", "ot", "chiro"]),
                            st.integers(min_value=0, max_value=400_000)), min_size=1, max_size=14)


@settings(max_examples=20, deadline=None)
@given(CLAIMS, st.randoms(use_true_random=False))
def test_accumulators_never_exceed_their_limits_whatever_the_claim_order(claims, rnd):
    chain = world(ALICE, BOB)
    chain.ok(ACME, "benefit_plan_register", plan_body(
        oop_max_cents={"individual": 150_000, "family": 200_000},
        buckets=[{"bucket_id": "rehab", "categories": ["pt", "ot", "chiro"], "unit": "visits", "limit": 4}]))
    for member in (ALICE, BOB):
        chain.ok(ACME, "benefit_coverage_enroll", coverage_body(member, family_id="f"))
    order = list(enumerate(claims))
    rnd.shuffle(order)
    txs = [chain.tx(ACME, "benefit_adjudicate", line_body(
        "c%d" % n, ALICE if n % 2 == 0 else BOB, category=category, allowed=allowed,
        hcpcs="97110" if category in ("pt", "ot", "chiro") else "99213", date=20250101 + n))
        for n, (category, allowed) in order]
    assert all(receipt.ok for receipt in chain.run(*txs))
    records = [chain.get(adjudication_key("acme", "c%d" % n, 0)) for n in range(len(claims))]
    for member in (ALICE, BOB):
        mine = [r for r in records if r["member"] == member]
        assert sum(r["member_cents"] for r in mine) == acc(chain, member)["oop"] <= 150_000
        assert acc(chain, member)["deductible"] <= 50_000
        assert sum(r["units"] for r in mine if r["status"] == "paid" and r["category"] != "office"
                   and r["category"] != "surgery") <= 4
    family = chain.get(family_key("acme", "ppo", "f", 2025), {"deductible": 0, "oop": 0})
    assert family["oop"] == sum(r["member_cents"] for r in records) <= 200_000
    assert family["deductible"] <= 100_000
    for r in records:
        assert 0 <= r["member_cents"] <= r["allowed_cents"] and r["paid_cents"] + r["member_cents"] == r["allowed_cents"]
