"""Cost tracking: claims, duplicates, episodes, total cost of care, avoidable use."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import costs
from contracts.errors import InvalidValue
from contracts.state import key
from tests.contracts.quality_helpers import Chain, commitment, npi, pseudonym

ALICE, BOB = pseudonym("alice"), pseudonym("bob")
DR_A, DR_B, GROUP = npi(111111111), npi(222222222), npi(333333333)


def claim(claim_id: str, patient: bytes = ALICE, *, kind: str = "professional", date: int = 20250110,
          through: int | None = None, hcpcs: str | None = "99213", allowed: int = 10_000, paid: int = 8_000,
          diagnoses: list[str] | None = None, drg: str | None = None, pos: str | None = "11",
          revenue: str | None = None, rendering: str = DR_A, lines: list[dict] | None = None) -> dict:
    return {
        "claim_id": claim_id, "kind": kind, "patient": patient, "billing_tin": "123456789",
        "billing_npi": GROUP, "rendering_npi": rendering, "from_date": date,
        "through_date": through or date, "place_of_service": pos, "drg": drg,
        "diagnoses": diagnoses if diagnoses is not None else ["E119"], "document": commitment(claim_id),
        "lines": lines or [{"hcpcs": hcpcs, "revenue_code": revenue, "service_date": date,
                            "allowed_cents": allowed, "paid_cents": paid, "units": 1}],
    }


def test_an_adjudicated_claim_is_recorded_with_its_line_indexes_and_attribution_entry():
    chain = Chain()
    receipt = chain.run("payer", "claim_submit", claim("c1"))
    assert receipt.ok, receipt.message
    view = chain.view()
    header = view.get(costs.claim_header_key("c1"))
    assert header["allowed_cents"] == 10_000 and header["submitted_by"] == "acme"
    line = view.get(costs.claim_line_key("c1", 0))
    for field in ("patient", "billing_tin", "rendering_npi", "service_date", "hcpcs", "allowed_cents"):
        assert field in line
    assert line["service_date"] == 20250110 and line["hcpcs"] == "99213"
    assert view.entries(costs.patient_index(ALICE)) == ["c1"]
    assert view.entries(costs.provider_index(DR_A)) == ["c1"]
    assert view.entries(costs.tin_index("123456789")) == ["c1"]
    attributed = view.entries(key("claim", "pt-" + ALICE.hex()))
    assert attributed[0]["allowed_cents"] == 10_000 and attributed[0]["claim_id"] == "c1"
    assert receipt.events[0]["type"] == "claim_recorded"


def test_a_duplicate_line_is_rejected_and_changes_nothing():
    chain = Chain()
    assert chain.run("payer", "claim_submit", claim("c1")).ok
    before = chain.snapshot_without_nonces()
    receipt = chain.run("payer", "claim_submit", claim("c2"))
    assert (receipt.ok, receipt.code) == (False, "duplicate")
    assert chain.snapshot_without_nonces() == before
    # different amounts are a different service line
    assert chain.run("payer", "claim_submit", claim("c3", allowed=10_001)).ok


def test_two_identical_lines_in_one_claim_are_duplicates():
    line = {"hcpcs": "99213", "service_date": 20250110, "allowed_cents": 5, "paid_cents": 5}
    receipt = Chain().run("payer", "claim_submit", claim("c1", lines=[line, dict(line)]))
    assert receipt.code == "duplicate"


def test_a_claim_id_is_recorded_once():
    chain = Chain()
    assert chain.run("payer", "claim_submit", claim("c1")).ok
    assert chain.run("payer", "claim_submit", claim("c1", date=20250111)).code == "already_exists"


def test_roles_a_provider_sends_only_encounters_and_an_auditor_no_claims():
    chain = Chain()
    assert chain.run("clinic", "claim_submit", claim("c1")).code == "not_permitted"
    assert chain.run("auditor", "claim_submit", claim("c2")).code == "not_permitted"
    assert chain.run("clinic", "claim_submit", claim("e1", kind="encounter", allowed=0, paid=0)).ok
    assert chain.run("clinic", "claim_submit", claim("e2", kind="encounter", allowed=5, paid=0)).code == "invalid_value"


@pytest.mark.parametrize("change", [
    {"hcpcs": "9921"}, {"hcpcs": "W1234"}, {"hcpcs": "99213X"}, {"diagnoses": ["E11.9"]}, {"diagnoses": ["1E19"]},
    {"rendering": "1234567890"}, {"allowed": -1}, {"allowed": 10**13, "paid": 0}, {"paid": 10_001},
    {"date": 20250230}, {"date": 2025011}, {"drg": "12"}, {"pos": "1"}, {"kind": "pharmacy"},
    {"hcpcs": None}, {"patient": b"short"},
])
def test_malformed_claims_get_a_typed_error(change):
    chain = Chain()
    receipt = chain.run("payer", "claim_submit", claim("c1", **change))
    assert (receipt.ok, receipt.code) == (False, "invalid_value"), change


def test_bad_header_fields_get_a_typed_error():
    chain = Chain()
    for field, value in (("document", b"x" * 31), ("billing_tin", "12345678"), ("billing_npi", 1234567893),
                         ("claim_id", "a/b"), ("lines", []), ("through_date", 20250101)):
        body = claim("c1")
        body[field] = value
        assert chain.run("payer", "claim_submit", body).code == "invalid_value", field
    body = claim("c1")
    body["lines"][0]["service_date"] = 20250111
    assert chain.run("payer", "claim_submit", body).code == "invalid_value"


def test_an_institutional_line_may_carry_a_revenue_code_alone():
    chain = Chain()
    body = claim("i1", kind="outpatient", hcpcs=None, revenue="0450", pos="22")
    assert chain.run("payer", "claim_submit", body).ok
    # not a primary-care charge: nothing enters the attribution list
    assert chain.view().entries(key("claim", "pt-" + ALICE.hex())) == []


# --------------------------------------------------------------- episodes


def test_an_episode_sums_the_trigger_and_claims_within_90_days_of_discharge():
    chain = Chain()
    assert chain.run("payer", "episode_define", {"episode_id": "lejr", "trigger_drgs": ["470"],
                                                 "window_days": 90, "anchor": "discharge"}).ok
    chain.run("payer", "claim_submit", claim("pre", date=20250101, allowed=1_000, paid=1_000))
    chain.run("payer", "claim_submit", claim("adm", kind="inpatient", date=20250105, through=20250108, drg="470",
                                            hcpcs=None, revenue="0001", allowed=1_500_000, paid=1_400_000, pos="21"))
    chain.run("payer", "claim_submit", claim("pt1", date=20250120, hcpcs="97110", allowed=20_000, paid=16_000))
    # 90 days after 2025-01-08 is 2025-04-08: in; 2025-04-09: out
    chain.run("payer", "claim_submit", claim("pt2", date=20250408, hcpcs="97110", allowed=20_000, paid=16_000))
    chain.run("payer", "claim_submit", claim("late", date=20250409, hcpcs="97110", allowed=20_000, paid=16_000))
    assert chain.run("auditor", "episode_compute", {"episode_id": "lejr", "patient": ALICE}).ok
    stored = chain.view().get(key("costs", "episode", "lejr", ALICE))["episodes"]
    assert stored == [{"trigger": "adm", "start": 20250105, "end": 20250408, "claims": ["adm", "pt1", "pt2"],
                       "allowed_cents": 1_540_000, "paid_cents": 1_432_000}]
    assert chain.run("auditor", "episode_compute", {"episode_id": "nope", "patient": ALICE}).code == "not_found"
    assert chain.run("clinic", "episode_define", {"episode_id": "x", "trigger_drgs": ["470"], "window_days": 9}).code == "not_permitted"
    assert chain.run("payer", "episode_define", {"episode_id": "y", "window_days": 9}).code == "invalid_value"


def test_dates_cross_months_and_leap_years_without_datetime():
    assert costs.add_days(20250108, 90) == 20250408
    assert costs.add_days(20240228, 1) == 20240229
    assert costs.add_days(20231231, 1) == 20240101
    assert costs.day_number(19700101) == 0
    with pytest.raises(Exception):
        costs.check_date(20230229, "d")


# --------------------------------------------------------------- total cost of care


def test_total_cost_of_care_truncates_each_patient_and_counts_patients_without_claims():
    """The pure reference; the ledger's TCOC over attribution is tests/contracts/test_tcoc.py."""
    chain = Chain()
    chain.run("payer", "claim_submit", claim("a1", ALICE, allowed=30_000_000, paid=1))
    chain.run("payer", "claim_submit", claim("b1", BOB, allowed=100_000, paid=1))
    chain.run("payer", "claim_submit", claim("b0", BOB, date=20241231, allowed=7, paid=1))  # outside the period
    carol = pseudonym("carol")
    view = chain.view()
    claims = {p: costs.patient_claims(view, p) for p in (ALICE, BOB, carol)}
    result = costs.total_cost_of_care(claims, [ALICE, BOB, carol], 20250101, 20251231, 10_000_000)
    assert result["total_cents"] == 30_100_000
    assert result["truncated_total_cents"] == 10_100_000
    assert result["patients_truncated"] == 1
    assert Fraction(*result["per_capita"]) == Fraction(10_100_000, 3)
    assert result["per_capita_cents"] == 3_366_667
    with pytest.raises(InvalidValue):
        costs.total_cost_of_care(claims, [ALICE, ALICE], 20250101, 20251231, None)


def test_the_list_based_tcoc_compute_transaction_is_gone():
    chain = Chain()
    body = {"program": "mssp-aco1", "period_start": 20250101, "period_end": 20251231,
            "patients": [ALICE], "truncation_cents": None}
    assert chain.run("payer", "tcoc_compute", body).code == "unknown_tx_type"


# --------------------------------------------------------------- avoidable use


def test_ed_visits_for_acsc_and_30_day_readmissions_are_flagged():
    chain = Chain()
    params = {"acsc_icd10": ["J44", "I50", "E1165"], "ed_revenue_codes": ["0450", "0451"],
              "readmission_days": 30, "planned_readmission_drgs": ["945"]}
    assert chain.run("auditor", "avoidable_use_params_set", params).ok
    chain.run("payer", "claim_submit", claim("ed1", kind="outpatient", date=20250201, hcpcs="99284",
                                             diagnoses=["J441", "R0602"], pos="23"))
    chain.run("payer", "claim_submit", claim("ed2", kind="outpatient", date=20250202, hcpcs="99283",
                                             diagnoses=["S52501A"], pos="23"))
    chain.run("payer", "claim_submit", claim("ip1", kind="inpatient", date=20250301, through=20250305,
                                             drg="291", hcpcs=None, revenue="0001", pos="21", allowed=900_000))
    chain.run("payer", "claim_submit", claim("ip2", kind="inpatient", date=20250404, through=20250406,
                                             drg="291", hcpcs=None, revenue="0001", pos="21", allowed=800_000))
    chain.run("payer", "claim_submit", claim("ip3", kind="inpatient", date=20250601, through=20250602,
                                             drg="291", hcpcs=None, revenue="0001", pos="21", allowed=700_000))
    assert chain.run("payer", "avoidable_use_compute", {"patient": ALICE}).ok
    flags = chain.view().get(key("costs", "flags", ALICE))["flags"]
    assert [(f["claim_id"], f["flag"]) for f in flags] == [("ed1", "ed_acsc"), ("ip2", "readmission")]
    assert flags[1]["days"] == 30 and flags[1]["index_claim"] == "ip1"
    assert chain.run("payer", "avoidable_use_params_set", {"acsc_icd10": ["J4.4"]}).code == "invalid_value"


def test_avoidable_use_needs_its_code_lists():
    assert Chain().run("payer", "avoidable_use_compute", {"patient": ALICE}).code == "not_found"


# --------------------------------------------------------------- properties

claim_strategy = st.builds(
    lambda n, day, allowed, paid_share, patient: claim(
        "c%d" % n, pseudonym(patient), date=20250101 + day, allowed=allowed, paid=allowed * paid_share // 100),
    st.integers(0, 5), st.integers(0, 27), st.integers(-5, 10**12 + 5), st.integers(0, 120), st.sampled_from(["a", "b"]))


@settings(max_examples=40, deadline=None)
@given(st.lists(claim_strategy, min_size=1, max_size=6))
def test_a_failed_claim_changes_nothing_and_a_block_replays_identically(bodies):
    chains = [Chain(), Chain()]
    results = []
    for chain in chains:
        txs = [chain.tx("payer", "claim_submit", body) for body in bodies]
        before = dict(chain.db)
        receipts = chain.run_block(txs)
        results.append((dict(chain.db), receipts))
        if not any(r.ok for r in receipts):
            assert {k: v for k, v in chain.db.items() if not k.startswith(b"nonce/")} == \
                   {k: v for k, v in before.items() if not k.startswith(b"nonce/")}
    assert results[0] == results[1]


@settings(max_examples=30, deadline=None)
@given(st.permutations([0, 1, 2, 3]), st.integers(1, 10**7))
def test_total_cost_of_care_is_independent_of_submission_and_list_order(order, cap):
    patients = [pseudonym(str(i)) for i in range(4)]
    made = {p: [costs.Claim({"claim_id": "x", "allowed_cents": 0}, ({"service_date": 20250105, "allowed_cents": (i + 1) * 1_000_000},))]
            for i, p in enumerate(patients)}
    reference = costs.total_cost_of_care(made, patients, 20250101, 20251231, cap)
    shuffled = [patients[i] for i in order]
    assert costs.total_cost_of_care(dict(reversed(list(made.items()))), shuffled, 20250101, 20251231, cap) == reference
