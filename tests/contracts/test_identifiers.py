"""contracts.identifiers: one rule per identifier, shared by every contract that reads one."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import costs, identifiers, providers
from contracts.errors import InvalidValue, MalformedTx


def test_every_contract_uses_the_same_npi_and_tin_rules():
    assert providers.is_npi is identifiers.is_npi and costs.is_valid_npi is identifiers.is_npi
    assert providers.is_tin is identifiers.is_tin and providers.luhn_check_digit is identifiers.luhn_check_digit


@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_a_claim_and_a_provider_registration_accept_the_same_npis(value):
    ok = identifiers.is_npi(value)
    assert ok == (identifiers.luhn_check_digit("80840" + value[:9]) == int(value[9]))
    if ok:
        assert costs.check_npi(value, "npi") == value
        assert providers.npi_field({"npi": value}, "npi") == value
    else:
        with pytest.raises(InvalidValue):
            costs.check_npi(value, "npi")


@pytest.mark.parametrize("value", ["1234567896\n", "1234567893\n", "١٢٣٤٥٦٧٨٩٣", "１２３４５６７８９３", " 1234567893"])
def test_an_npi_is_ten_ascii_digits_only(value):
    assert not identifiers.is_npi(value)
    with pytest.raises(InvalidValue):
        costs.check_npi(value, "rendering_npi")


@pytest.mark.parametrize("value, ok", [(bytes(16), True), (bytes(15), False), (bytes(32), False), ("00" * 16, False)])
def test_a_claim_pseudonym_is_sixteen_bytes(value, ok):
    assert identifiers.is_pseudonym(value) == ok


def test_a_claim_pseudonym_maps_to_the_patient_id_attribution_accepts():
    pid = identifiers.patient_id_of_pseudonym(bytes(range(16)))
    assert pid == "pt-000102030405060708090a0b0c0d0e0f"
    assert identifiers.patient_id(pid) == pid
    with pytest.raises(MalformedTx):
        identifiers.patient_id("pt-" + "A" * 32)


@pytest.mark.parametrize("code, ok", [("99213", True), ("0001F", True), ("G0438", True), ("W1234", False), ("9921", False)])
def test_hcpcs_codes_have_the_cpt_or_level_ii_shape(code, ok):
    assert (identifiers.HCPCS_PATTERN.match(code) is not None) == ok


@pytest.mark.parametrize("code, ok", [("E119", True), ("I5022", True), ("E11.9", False), ("e119", False), ("1E19", False)])
def test_icd10_codes_are_stored_without_the_dot(code, ok):
    assert (identifiers.ICD10_PATTERN.match(code) is not None) == ok
