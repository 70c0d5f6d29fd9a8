"""Attribution: MSSP steps (METHODS §1.2) with voluntary alignment, exclusions,
the program-defined geographic fallback, consent, auditable transitions, ATR export."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import attribution
from contracts.errors import InvalidValue, MalformedTx
from contracts.state import key
from tests.contracts.helpers import (
    DR_CARDIO, DR_DERM, DR_HILL, DR_LAKE, DR_RIVER, DR_RIVER_2, DR_SHARED, HILL_TIN, LAKE_TIN, RIVER_TIN,
    RIVER_TIN_2, SHARED_TIN, Chain, admin, commitment, patient, provider_world,
)

PROGRAM = "mssp-2025"
YEAR_2025 = list(range(202501, 202513))
ANN = patient("ann")


def world(*patients, area=None):
    chain = Chain()
    provider_world(chain)
    for pid in patients or (ANN,):
        body = {"patient": pid, "agents": [admin("app")]}
        if area is not None:
            body["service_area"] = area
        chain.ok(admin("cms"), "patient_register", body)
        enroll(chain, pid)
    return chain


def enroll(chain, pid, months=YEAR_2025, a=True, b=True, advantage=False, payer="cms"):
    chain.ok(admin(payer), "coverage_enroll", {"patient": pid, "months": months, "part_a": a, "part_b": b,
                                               "advantage": advantage})


def claim(chain, tin, npi, cents, date=20250315, hcpcs="99213", pid=ANN, **extra):
    line = {"patient": pid, "billing_tin": tin, "rendering_npi": npi, "service_date": date,
            "hcpcs": hcpcs, "allowed_cents": cents, **extra}
    chain.mutate(lambda state: attribution.append_claim_line(state, line))


def run(chain, run_id="q4", patients=None, start=20250101, end=20251231):
    body = {"program_id": PROGRAM, "run_id": run_id, "period_start": start, "period_end": end}
    if patients is not None:
        body["patients"] = patients
    chain.ok(admin("cms"), "attribution_run", body)


def result(chain, pid=ANN):
    record = chain.get(attribution.assignment_key(PROGRAM, pid))
    return record["aco"], record["npi"], record["basis"], record["reason"]


# ------------------------------------------------------------ claims-based steps


def test_step_one_assigns_to_the_aco_with_the_plurality_of_primary_care_charges():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 30_000)
    claim(chain, HILL_TIN, DR_HILL, 20_000)
    claim(chain, HILL_TIN, DR_HILL, 90_000, hcpcs="27447")  # a knee replacement is not primary care
    run(chain)
    assert result(chain) == ("river-aco", DR_RIVER, "step1", "step1_plurality")
    record = chain.get(attribution.assignment_key(PROGRAM, ANN))
    assert (record["aco_cents"], record["best_other_cents"]) == (30_000, 20_000)


def test_a_plurality_outside_every_aco_assigns_no_one():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 20_000)
    claim(chain, HILL_TIN, DR_HILL, 30_000)
    run(chain)
    assert result(chain) == (None, None, None, "step1_plurality_outside_aco")


def test_greater_than_is_literal_so_a_tie_assigns_no_one():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 25_000)
    claim(chain, LAKE_TIN, DR_LAKE, 10_000)
    claim(chain, LAKE_TIN, DR_LAKE, 15_000, date=20250601)
    run(chain)
    assert result(chain) == (None, None, None, "step1_plurality_tie")


def test_step_two_uses_specialists_only_without_any_pcp_primary_care():
    chain = world()
    claim(chain, RIVER_TIN, DR_CARDIO, 40_000)
    claim(chain, HILL_TIN, DR_DERM, 90_000)  # neither a PCP nor a step-2 specialty
    run(chain)
    assert result(chain) == ("river-aco", DR_CARDIO, "step2", "step2_plurality")


def test_any_pcp_primary_care_sends_the_patient_to_step_one():
    chain = world()
    claim(chain, RIVER_TIN, DR_CARDIO, 500_000)
    claim(chain, HILL_TIN, DR_HILL, 5_000)
    run(chain)
    assert result(chain) == (None, None, None, "step1_plurality_outside_aco")


def test_services_through_a_tin_in_two_acos_are_excluded():
    chain = world()
    claim(chain, SHARED_TIN, DR_SHARED, 100_000)
    claim(chain, LAKE_TIN, DR_LAKE, 1_000)
    run(chain)
    assert result(chain) == ("lake-aco", DR_LAKE, "step1", "step1_plurality")


def test_the_clinician_tie_break_is_charges_then_most_recent_service_then_lowest_npi():
    chain = world(ANN, patient("bob"))
    claim(chain, RIVER_TIN, DR_RIVER, 10_000, date=20250301)
    claim(chain, RIVER_TIN_2, DR_RIVER_2, 10_000, date=20250501)
    claim(chain, RIVER_TIN, DR_RIVER, 10_000, date=20250301, pid=patient("bob"))
    claim(chain, RIVER_TIN_2, DR_RIVER_2, 10_000, date=20250301, pid=patient("bob"))
    run(chain)
    assert result(chain)[:2] == ("river-aco", DR_RIVER_2)  # most recent
    assert result(chain, patient("bob"))[:2] == ("river-aco", min(DR_RIVER, DR_RIVER_2))


def test_only_primary_care_lines_in_the_window_and_not_voided_count():
    chain = world()
    claim(chain, HILL_TIN, DR_HILL, 80_000, date=20241231)
    claim(chain, HILL_TIN, DR_HILL, 80_000, voided=True)
    claim(chain, RIVER_TIN, DR_RIVER, 1_000, hcpcs="G0439")
    lines = attribution.primary_care_lines(chain.view(), PROGRAM, (20250101, 20251231))
    assert [(l.rendering_npi, l.allowed_cents, l.hcpcs) for l in lines] == [(DR_RIVER, 1_000, "G0439")]
    run(chain)
    assert result(chain)[0] == "river-aco"


# ------------------------------------------------------------ voluntary alignment and eligibility


def test_voluntary_alignment_wins_over_claims():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 90_000)
    chain.ok(admin("app"), "alignment_designate", {"patient": ANN, "npi": DR_LAKE})
    run(chain)
    assert result(chain) == ("lake-aco", DR_LAKE, "voluntary_alignment", "voluntary_alignment")


def test_alignment_to_a_clinician_outside_every_aco_blocks_claims_assignment():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 90_000)
    chain.ok(admin("app"), "alignment_designate", {"patient": ANN, "npi": DR_HILL})
    run(chain, "r1")
    assert result(chain) == (None, None, None, "aligned_outside_aco")
    chain.ok(admin("app"), "alignment_withdraw", {"patient": ANN})
    run(chain, "r2")
    assert result(chain)[0] == "river-aco"


def test_alignment_to_a_clinician_in_two_acos_leaves_it_to_claims():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 90_000)
    chain.ok(admin("app"), "alignment_designate", {"patient": ANN, "npi": DR_SHARED})
    run(chain)
    assert result(chain)[:3] == ("river-aco", DR_RIVER, "step1")


@pytest.mark.parametrize("coverage, reason", [
    ({"advantage": True, "months": [202506]}, "ineligible_medicare_advantage_month"),
    ({"b": False, "months": [202506]}, "ineligible_part_a_or_b_only_month"),
])
def test_ineligible_patients_are_assigned_to_no_one(coverage, reason):
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 90_000)
    enroll(chain, ANN, **coverage)
    run(chain)
    assert result(chain) == (None, None, None, reason)


def test_coverage_from_another_payer_does_not_make_a_patient_eligible():
    chain = Chain()
    provider_world(chain)
    chain.ok(admin("acme"), "patient_register", {"patient": ANN})
    enroll(chain, ANN, payer="acme")
    claim(chain, RIVER_TIN, DR_RIVER, 90_000)
    run(chain)
    assert result(chain)[3] == "ineligible_no_part_a_and_b_month"


def test_the_program_defined_geographic_fallback_applies_only_without_primary_care():
    chain = world(ANN, patient("bob"), area="ZIP3-941")
    chain.ok(admin("cms"), "program_set_fallback", {"program_id": PROGRAM, "geographic_fallback": {"ZIP3-941": "lake-aco"}})
    claim(chain, HILL_TIN, DR_HILL, 5_000, pid=patient("bob"))
    run(chain)
    assert result(chain) == ("lake-aco", None, "geographic_fallback", "geographic_fallback_program_defined")
    assert result(chain, patient("bob"))[0] is None


# ------------------------------------------------------------ transitions are auditable


def test_every_change_is_recorded_with_its_reason_in_authenticated_lists():
    chain = world()
    claim(chain, RIVER_TIN, DR_RIVER, 30_000)
    run(chain, "r1")
    claim(chain, LAKE_TIN, DR_LAKE, 50_000)
    run(chain, "r2")
    run(chain, "r3")  # nothing changed: no transition
    enroll(chain, ANN, months=[202512], advantage=True)
    run(chain, "r4")
    transitions = chain.entries(attribution.transitions_key(PROGRAM))
    assert [(t["run"], t["change"], t["from_aco"], t["to_aco"], t["reason"]) for t in transitions] == [
        ("r1", "new", None, "river-aco", "step1_plurality"),
        ("r2", "changed", "river-aco", "lake-aco", "step1_plurality"),
        ("r4", "dropped", "lake-aco", None, "ineligible_medicare_advantage_month"),
    ]
    assert chain.entries(key("assignment_history", PROGRAM, ANN)) == transitions
    runs = chain.entries(attribution.runs_key(PROGRAM))
    assert [(r["run"], r["assigned"], r["changes"]) for r in runs] == [
        ("r1", 1, 1), ("r2", 1, 1), ("r3", 1, 0), ("r4", 0, 1)]


lines = st.lists(st.tuples(
    st.sampled_from([(RIVER_TIN, DR_RIVER), (RIVER_TIN_2, DR_RIVER_2), (LAKE_TIN, DR_LAKE), (HILL_TIN, DR_HILL),
                     (SHARED_TIN, DR_SHARED), (RIVER_TIN, DR_CARDIO)]),
    st.integers(0, 5) .map(lambda n: n * 5_000),
    st.sampled_from([20250110, 20250520, 20251130]),
    st.sampled_from([ANN, patient("bob")]),
), max_size=10)


@settings(max_examples=25, deadline=None)
@given(lines, st.randoms(use_true_random=False))
def test_attribution_does_not_depend_on_the_order_claims_were_submitted(items, rng):
    shuffled = list(items)
    rng.shuffle(shuffled)
    outcomes = []
    for order in (items, shuffled):
        chain = world(ANN, patient("bob"))
        for (tin, npi), cents, date, pid in order:
            claim(chain, tin, npi, cents, date=date, pid=pid)
        run(chain)
        outcomes.append([chain.get(attribution.assignment_key(PROGRAM, p)) for p in (ANN, patient("bob"))])
    assert outcomes[0] == outcomes[1]


# ------------------------------------------------------------ ATR export


def test_the_attribution_list_is_a_fhir_group_of_pseudonyms_with_attributed_npis():
    chain = world(ANN, patient("bob"), patient("cy"))
    claim(chain, RIVER_TIN, DR_RIVER, 30_000)
    claim(chain, LAKE_TIN, DR_LAKE, 30_000, pid=patient("bob"))
    run(chain)
    group = attribution.attribution_list(chain.view(), PROGRAM, "river-aco")
    assert group["resourceType"] == "Group" and group["type"] == "person" and group["actual"] is True
    assert group["quantity"] == 1
    member = group["member"][0]
    assert member["entity"] == {"identifier": {"system": "urn:careledger:patient", "value": ANN}}
    assert member["period"] == {"start": "2025-01-01", "end": "2025-12-31"}
    assert {"url": attribution.ATR_PROVIDER_EXTENSION, "valueReference": {
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": DR_RIVER}}} in member["extension"]
    assert attribution.attribution_list(chain.view(), PROGRAM)["quantity"] == 2


# ------------------------------------------------------------ consent


def consent_body(**overrides):
    body = {"patient": ANN, "consent_id": "c1", "grantee_org": "river", "purpose": "care_coordination",
            "document_commitment": commitment("consent-form")}
    body.update(overrides)
    return body


def test_consent_is_granted_and_revoked_by_the_patients_agent():
    chain = world()
    chain.ok(admin("app"), "consent_grant", consent_body())
    view = chain.view()
    assert attribution.has_consent(view, ANN, "river", "care_coordination", chain.time_ms)
    assert not attribution.has_consent(view, ANN, "lake", "care_coordination", chain.time_ms)
    chain.ok(admin("app"), "consent_revoke", {"patient": ANN, "consent_id": "c1"})
    assert not attribution.has_consent(chain.view(), ANN, "river", "care_coordination", chain.time_ms)
    chain.fails(admin("app"), "consent_revoke", {"patient": ANN, "consent_id": "c1"}, "revoked")
    assert [e["action"] for e in chain.entries(key("consent_log", ANN))] == ["grant", "revoke"]


def test_only_the_patients_own_agent_signs_consents():
    chain = world()
    chain.ok(admin("app"), "gov_create_account", {"public_key": b"\x07" * 32})
    chain.fails(b"\x07" * 32, "consent_grant", consent_body(), "not_permitted")
    chain.fails(admin("river"), "consent_grant", consent_body(), "not_permitted")  # role


@pytest.mark.parametrize("overrides, code", [
    ({"purpose": "marketing"}, "invalid_value"),
    ({"grantee_org": "nobody"}, "not_found"),
    ({"document_commitment": b"Ann Smith consents"}, "malformed"),
    ({"patient": "ann smith"}, "malformed"),
    ({"patient": patient("zed")}, "not_found"),
    ({"valid_from_ms": 10, "expires_at_ms": 5}, "invalid_value"),
])
def test_bad_consents_get_typed_errors(overrides, code):
    world().fails(admin("app"), "consent_grant", consent_body(**overrides), code)


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize("sender, tx_type, body, code", [
    ("cms", "patient_register", {"patient": "123-45-6789"}, "malformed"),
    ("cms", "patient_register", {"patient": "pt-" + "AB" * 16}, "malformed"),  # upper-case hex
    ("cms", "patient_register", {"patient": ANN}, "already_exists"),
    ("cms", "patient_register", {"patient": patient("x"), "agents": [admin("cms")]}, "not_found"),
    ("cms", "patient_register", {"patient": patient("x"), "service_area": "123 Main St"}, "invalid_value"),
    ("river", "patient_register", {"patient": patient("x")}, "not_permitted"),
    ("cms", "coverage_enroll", {"patient": ANN, "months": [202513]}, "invalid_value"),
    ("cms", "coverage_enroll", {"patient": ANN, "months": [202501, 202501]}, "duplicate"),
    ("cms", "coverage_enroll", {"patient": ANN, "months": [202501], "part_a": "yes"}, "malformed"),
    ("cms", "coverage_enroll", {"patient": patient("zed"), "months": [202501]}, "not_found"),
    ("app", "alignment_designate", {"patient": ANN, "npi": "1234567890"}, "invalid_value"),
    ("app", "alignment_withdraw", {"patient": ANN}, "not_found"),
    ("acme", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20250101,
                                 "period_end": 20251231}, "not_permitted"),
    ("cms", "attribution_run", {"program_id": "nope", "run_id": "r", "period_start": 20250101,
                                "period_end": 20251231}, "not_found"),
    ("cms", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20250230,
                                "period_end": 20251231}, "invalid_value"),
    ("cms", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20251231,
                                "period_end": 20250101}, "invalid_value"),
    ("cms", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20200101,
                                "period_end": 20251231}, "invalid_value"),
    ("cms", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20250101,
                                "period_end": 20251231, "patients": [patient("zed")]}, "not_found"),
    ("cms", "attribution_run", {"program_id": PROGRAM, "run_id": "r", "period_start": 20250101,
                                "period_end": 20251231, "patients": [ANN, ANN]}, "duplicate"),
])
def test_bad_attribution_inputs_get_typed_errors(sender, tx_type, body, code):
    world().fails(admin(sender), tx_type, body, code)


def test_a_run_id_is_used_once():
    chain = world()
    run(chain, "r1")
    chain.fails(admin("cms"), "attribution_run", {"program_id": PROGRAM, "run_id": "r1",
                                                  "period_start": 20250101, "period_end": 20251231}, "duplicate")


@pytest.mark.parametrize("line", [
    {"billing_tin": "12345", "allowed_cents": 1},
    {"rendering_npi": "1234567890", "allowed_cents": 1},
    {"allowed_cents": -100},
    {"service_date": 20250231, "allowed_cents": 1},
    {"patient": "ann", "allowed_cents": 1},
])
def test_malformed_claim_lines_are_refused_at_the_boundary(line):
    full = {"patient": ANN, "billing_tin": RIVER_TIN, "rendering_npi": DR_RIVER, "service_date": 20250301,
            "hcpcs": "99213", **line}
    with pytest.raises((MalformedTx, InvalidValue)):
        attribution.check_claim_line(full)


def test_a_patient_pseudonym_may_be_given_as_32_random_bytes():
    raw = bytes(range(32))
    assert attribution.patient_id(raw) == "pt-" + raw.hex()
