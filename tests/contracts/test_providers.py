"""Providers: NPI/TIN/taxonomy checks (METHODS §1.9), credentials with expiry and
revocation, ACO participation, referrals and an exact reputation score."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import providers
from contracts.errors import Expired, NotFound, NotYetValid, Revoked
from contracts.engine import BlockContext
from contracts.state import key
from tests.contracts.helpers import (
    CHAIN_ID, DR_CARDIO, DR_HILL, DR_RIVER, DR_SHARED, HILL_TIN, LAKE_TIN, PCP_TAXONOMY, RIVER_TIN,
    SHARED_TIN, T0, YEAR, Chain, admin, commitment, licence, npi, provider_world, register_practitioner,
)

# ------------------------------------------------------------ identifiers


def test_the_methods_example_npi_passes_the_luhn_check_with_the_80840_prefix():
    assert providers.luhn_check_digit("80840123456789") == 3
    assert providers.is_npi("1234567893")
    assert not providers.is_npi("1234567890")


@given(st.text(alphabet="0123456789", min_size=9, max_size=9), st.integers(0, 9))
def test_exactly_one_check_digit_makes_a_valid_npi(nine, digit):
    assert providers.is_npi(nine + str(digit)) == (digit == providers.luhn_check_digit("80840" + nine))


@pytest.mark.parametrize("value", ["123456789", "12345678930", "12345678a3", "１２３４５６７８９３", 1234567893, None])
def test_malformed_npis_are_rejected(value):
    assert not providers.is_npi(value)


@pytest.mark.parametrize("value, ok", [("123456789", True), ("000000000", False), ("12345678", False),
                                       ("12-345678", False), (123456789, False)])
def test_tins_are_nine_digits(value, ok):
    assert providers.is_tin(value) == ok


@pytest.mark.parametrize("value, ok", [("207Q00000X", True), ("363LF0000X", True), ("2084P0800X", True),
                                       ("207Q00000", False), ("207q00000X", False), ("207Q00000Y", False)])
def test_taxonomy_codes_have_the_nucc_shape(value, ok):
    assert providers.is_taxonomy(value) == ok


# ------------------------------------------------------------ registration


def register_body(**overrides):
    body = {"npi": DR_RIVER, "entity": "individual", "name": "Dr A", "taxonomies": [PCP_TAXONOMY],
            "primary_taxonomy": PCP_TAXONOMY}
    body.update(overrides)
    return body


@pytest.mark.parametrize("overrides, code", [
    ({"npi": "1234567890"}, "invalid_value"),
    ({"entity": "robot"}, "invalid_value"),
    ({"taxonomies": ["207Q0000"], "primary_taxonomy": "207Q0000"}, "invalid_value"),
    ({"taxonomies": []}, "invalid_value"),
    ({"taxonomies": [PCP_TAXONOMY, PCP_TAXONOMY]}, "duplicate"),
    ({"primary_taxonomy": "207R00000X"}, "invalid_value"),
    ({"name": ""}, "malformed"),
    ({"tin": "123456789"}, "malformed"),  # individuals bill through participation
    ({"entity": "organisation", "tin": "12345"}, "invalid_value"),
    ({"entity": "organisation", "tin": "123456789"}, "not_found"),
])
def test_bad_provider_registrations_get_typed_errors(overrides, code):
    Chain().fails(admin("river"), "provider_register", register_body(**overrides), code)


def test_registration_roles_and_ownership():
    chain = Chain()
    chain.fails(admin("audit"), "provider_register", register_body(), "not_permitted")
    chain.ok(admin("river"), "provider_register", register_body())
    chain.fails(admin("lake"), "provider_register", register_body(), "already_exists")
    chain.ok(admin("river"), "provider_register", register_body(name="Dr A. Smith"))  # the owner updates
    assert chain.get(providers.provider_key(DR_RIVER))["name"] == "Dr A. Smith"
    chain.ok(admin("river"), "tin_register", {"tin": RIVER_TIN, "name": "River Group"})
    chain.fails(admin("lake"), "tin_register", {"tin": RIVER_TIN, "name": "x"}, "already_exists")
    org_npi = npi("200000001")
    chain.fails(admin("lake"), "provider_register", register_body(npi=org_npi, entity="organisation", tin=RIVER_TIN),
                "not_permitted")
    chain.ok(admin("river"), "provider_register", register_body(npi=org_npi, entity="organisation", tin=RIVER_TIN))


# ------------------------------------------------------------ credentials


def ctx(time_ms):
    return BlockContext(CHAIN_ID, 1, time_ms)


def test_require_credential_reports_not_found_expired_revoked_and_not_yet_valid():
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    with pytest.raises(NotFound):
        providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0))
    licence(chain, DR_RIVER, "lic-1", valid_from=T0 - YEAR, expires=T0 + YEAR)
    assert providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0))["id"] == "lic-1"
    with pytest.raises(Expired):
        providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0 + YEAR))
    with pytest.raises(NotYetValid):
        providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0 - 2 * YEAR))
    with pytest.raises(NotFound):
        providers.require_credential(chain.view(), DR_RIVER, "board_certification", ctx(T0))
    chain.ok(admin("board"), "credential_revoke", {"npi": DR_RIVER, "credential_id": "lic-1", "reason": "board action"})
    with pytest.raises(Revoked):
        providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0))


def test_a_renewed_licence_supersedes_an_expired_one():
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    licence(chain, DR_RIVER, "lic-old", valid_from=0, expires=T0 - 1)
    licence(chain, DR_RIVER, "lic-new", valid_from=T0 - 1, expires=T0 + YEAR)
    assert providers.require_credential(chain.view(), DR_RIVER, "licence", ctx(T0))["id"] == "lic-new"


def credential_body(**overrides):
    body = {"credential_id": "lic-9", "npi": DR_RIVER, "kind": "licence", "valid_from_ms": 0,
            "expires_at_ms": T0 + YEAR, "document_commitment": commitment("doc")}
    body.update(overrides)
    return body


@pytest.mark.parametrize("sender, overrides, code", [
    ("board", {"kind": "diploma"}, "invalid_value"),
    ("board", {"expires_at_ms": 0}, "invalid_value"),
    ("board", {"valid_from_ms": -5}, "invalid_value"),
    ("board", {"document_commitment": b"plain text licence"}, "malformed"),
    ("board", {"npi": "1234567890"}, "invalid_value"),
    ("board", {"npi": npi("999999999")}, "not_found"),
    ("board", {"credential_id": "lic-1"}, "already_exists"),
    ("river", {}, "not_permitted"),  # providers cannot attest at all (role)
    ("board", {"jurisdiction": "California, USA"}, "invalid_value"),
])
def test_bad_credential_issues_get_typed_errors(sender, overrides, code):
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    licence(chain, DR_RIVER, "lic-1")
    chain.fails(admin(sender), "credential_issue", credential_body(**overrides), code)


def test_an_organisation_cannot_attest_its_own_provider_and_only_the_issuer_revokes():
    chain = Chain()
    chain.ok(admin("acme"), "provider_register", register_body(npi=DR_HILL))
    chain.fails(admin("acme"), "credential_issue", credential_body(npi=DR_HILL), "not_permitted")
    chain.ok(admin("board"), "credential_issue", credential_body(npi=DR_HILL))
    revoke = {"npi": DR_HILL, "credential_id": "lic-9", "reason": "x"}
    chain.fails(admin("audit"), "credential_revoke", revoke, "not_permitted")
    chain.ok(admin("board"), "credential_revoke", revoke)
    chain.fails(admin("board"), "credential_revoke", revoke, "revoked")


# ------------------------------------------------------------ program participation


def test_the_participant_lists_and_the_tin_in_two_acos_index():
    chain = Chain()
    provider_world(chain)
    aco = chain.get(providers.aco_key("mssp-2025", "river-aco"))
    assert aco["participants"][RIVER_TIN] == sorted([DR_RIVER, DR_CARDIO])
    assert providers.acos_of_tin(chain.view(), "mssp-2025", SHARED_TIN) == ["lake-aco", "river-aco"]
    assert providers.acos_of_tin(chain.view(), "mssp-2025", HILL_TIN) == []
    assert providers.acos_of_npi(chain.view(), "mssp-2025", DR_SHARED) == [
        ["lake-aco", SHARED_TIN], ["river-aco", SHARED_TIN]]


def join(chain, the_npi, tin=RIVER_TIN, aco="river-aco", sender="river"):
    return {"program_id": "mssp-2025", "aco_id": aco, "tin": tin, "npis": [the_npi]}


def test_joining_a_program_requires_an_active_licence():
    chain = Chain()
    provider_world(chain)
    newcomer = npi("100000099")
    register_practitioner(chain, "river", newcomer, PCP_TAXONOMY)
    chain.fails(admin("river"), "aco_add_participant", join(chain, newcomer), "not_found")
    licence(chain, newcomer, "lic-x", valid_from=0, expires=T0)
    chain.fails(admin("river"), "aco_add_participant", join(chain, newcomer), "expired")
    licence(chain, newcomer, "lic-y", valid_from=0, expires=T0 + YEAR)
    chain.ok(admin("board"), "credential_revoke", {"npi": newcomer, "credential_id": "lic-y", "reason": "x"})
    chain.fails(admin("river"), "aco_add_participant", join(chain, newcomer), "revoked")
    licence(chain, newcomer, "lic-z", valid_from=0, expires=T0 + YEAR)
    chain.ok(admin("river"), "aco_add_participant", join(chain, newcomer))


@pytest.mark.parametrize("sender, body, code", [
    ("lake", join(None, DR_RIVER), "not_permitted"),  # not the ACO's organisation
    ("river", join(None, DR_RIVER), "duplicate"),
    ("river", join(None, "1234567890"), "invalid_value"),
    ("river", join(None, npi("999999998")), "not_found"),
    ("river", join(None, DR_RIVER, tin="999999999"), "not_found"),
    ("river", join(None, DR_RIVER, aco="nope"), "not_found"),
    ("river", dict(join(None, DR_RIVER), npis=[]), "malformed"),
    ("acme", join(None, DR_RIVER), "not_permitted"),  # payer role
])
def test_bad_participation_changes_get_typed_errors(sender, body, code):
    chain = Chain()
    provider_world(chain)
    chain.fails(admin(sender), "aco_add_participant", body, code)


def test_removing_a_participant_updates_every_index():
    chain = Chain()
    provider_world(chain)
    chain.ok(admin("lake"), "aco_remove_participant", {"program_id": "mssp-2025", "aco_id": "lake-aco", "tin": SHARED_TIN})
    assert providers.acos_of_tin(chain.view(), "mssp-2025", SHARED_TIN) == ["river-aco"]
    assert providers.acos_of_npi(chain.view(), "mssp-2025", DR_SHARED) == [["river-aco", SHARED_TIN]]
    chain.ok(admin("river"), "aco_remove_participant",
             {"program_id": "mssp-2025", "aco_id": "river-aco", "tin": RIVER_TIN, "npis": [DR_CARDIO]})
    assert chain.get(providers.aco_key("mssp-2025", "river-aco"))["participants"][RIVER_TIN] == [DR_RIVER]
    chain.fails(admin("river"), "aco_remove_participant",
                {"program_id": "mssp-2025", "aco_id": "river-aco", "tin": LAKE_TIN}, "not_found")


# ------------------------------------------------------------ referrals


def test_referral_relationships_are_recorded_and_ended_by_the_referring_org():
    chain = Chain()
    provider_world(chain)
    body = {"from_npi": DR_RIVER, "to_npi": DR_CARDIO, "kind": "preferred"}
    chain.fails(admin("lake"), "referral_record", body, "not_permitted")
    chain.fails(admin("river"), "referral_record", dict(body, to_npi=DR_RIVER), "invalid_value")
    chain.fails(admin("river"), "referral_record", dict(body, kind="kickback"), "invalid_value")
    chain.ok(admin("river"), "referral_record", body)
    chain.fails(admin("river"), "referral_record", body, "already_exists")
    assert [r["to"] for r in providers.referrals_from(chain.view(), DR_RIVER)] == [DR_CARDIO]
    chain.ok(admin("river"), "referral_end", {"from_npi": DR_RIVER, "to_npi": DR_CARDIO})
    assert providers.referrals_from(chain.view(), DR_RIVER) == []
    chain.fails(admin("river"), "referral_end", {"from_npi": DR_RIVER, "to_npi": DR_CARDIO}, "not_found")


# ------------------------------------------------------------ reputation


def perf(period, quality, expected, actual, the_npi=DR_RIVER):
    return {"npi": the_npi, "period": period, "quality_bps": quality, "expected_cents": expected, "actual_cents": actual}


def test_reputation_is_the_exact_mean_of_weighted_quality_and_cost():
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    # 2024: quality 80 %, cost 100,000/125,000 = 0.8 → 0.6×0.8 + 0.4×0.8 = 0.8000
    chain.ok(admin("audit"), "performance_record", perf("2024", 8000, 10_000_000, 12_500_000))
    assert chain.get(providers.reputation_key(DR_RIVER))["score_bps"] == 8000
    # 2025: quality 90 %, under the expected cost → cost 1 → 0.94; mean 0.87
    chain.ok(admin("cms"), "performance_record", perf("2025", 9000, 100_000, 90_000))
    assert chain.get(providers.reputation_key(DR_RIVER)) == {"score_bps": 8700, "periods": 2, "height": 3}


def test_reputation_rounds_half_away_from_zero_to_basis_points():
    assert providers.to_basis_points(Fraction(1, 20000)) == 1  # 0.5 bps
    assert providers.to_basis_points(Fraction(1, 30000)) == 0
    weights = providers.DEFAULT_REPUTATION_WEIGHTS
    # quality 1 bps, cost 2/3: 0.6/10,000 + 0.4×2/3 = 0.26672666… → 2667
    assert providers.compute_reputation([perf("p", 1, 2, 3)], weights) == 2667


@pytest.mark.parametrize("sender, body, code", [
    ("audit", perf("2024", 10_001, 1, 1), "invalid_value"),
    ("audit", perf("2024", 5000, -1, 1), "invalid_value"),
    ("audit", perf("2024", 5000, 1, -100), "invalid_value"),
    ("audit", perf("2024", 5000, 1, 1, the_npi="1234567890"), "invalid_value"),
    ("audit", perf("2024", 5000, 1, 1, the_npi=npi("999999997")), "not_found"),
    ("audit", perf("20/24", 5000, 1, 1), "malformed"),
    ("river", perf("2024", 5000, 1, 1), "not_permitted"),  # role
])
def test_bad_performance_records_get_typed_errors(sender, body, code):
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    chain.fails(admin(sender), "performance_record", body, code)


def test_a_period_is_recorded_once():
    chain = Chain()
    register_practitioner(chain, "river", DR_RIVER, PCP_TAXONOMY)
    chain.ok(admin("audit"), "performance_record", perf("2024", 5000, 1, 1))
    chain.fails(admin("audit"), "performance_record", perf("2024", 6000, 1, 1), "duplicate")
    assert chain.get(key("performance_index", DR_RIVER)) == ["2024"]
