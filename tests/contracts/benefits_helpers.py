"""Builders for the benefits tests: plan designs, coverage facts, claim lines,
run through `tests.contracts.helpers.Chain` (payers cms and acme, providers
river and hill)."""

from __future__ import annotations

from typing import Any

from contracts.benefits.adjudicate import adjudication_key
from contracts.benefits.coverage import Coverage
from contracts.engine import Receipt
from tests.contracts.helpers import Chain, admin, npi, patient

DR_PT, GROUP = npi("200000001"), npi("200000002")
ALICE, BOB, CHILD = patient("alice"), patient("bob"), patient("child")


def plan_body(plan_id: str = "ppo", **overrides: Any) -> dict[str, Any]:
    """A commercial PPO: $500/$1,000 deductible, $1,500/$3,000 OOP max, office $25
    copay (no deductible), PT/OT/chiro 20 % coinsurance after the deductible in one
    hard 20-visit bucket, imaging 20 % needing prior authorisation."""
    body: dict[str, Any] = {
        "plan_id": plan_id, "kind": "commercial",
        "deductible_cents": {"individual": 50_000, "family": 100_000},
        "oop_max_cents": {"individual": 150_000, "family": 300_000},
        "categories": {
            "office": {"copay_cents": 2_500, "deductible_applies": False},
            "pt": {"coinsurance_bp": 2_000}, "ot": {"coinsurance_bp": 2_000},
            "slp": {"coinsurance_bp": 2_000}, "chiro": {"coinsurance_bp": 2_000},
            "imaging": {"coinsurance_bp": 2_000, "prior_auth": True},
            "surgery": {"coinsurance_bp": 2_000},
        },
        "buckets": [{"bucket_id": "rehab", "categories": ["pt", "ot", "chiro"], "unit": "visits", "limit": 20}],
    }
    body.update(overrides)
    return body


def medicare_body(plan_id: str = "part-b", threshold: int = 241_000) -> dict[str, Any]:
    """Original Medicare Part B, 2025: $257 deductible, 20 % coinsurance, no OOP
    max (set to the ceiling), KX thresholds: PT+SLP one bucket, OT another."""
    ceiling = 10**12
    return {
        "plan_id": plan_id, "kind": "medicare",
        "deductible_cents": {"individual": 25_700, "family": 25_700},
        "oop_max_cents": {"individual": ceiling, "family": ceiling},
        "categories": {name: {"coinsurance_bp": 2_000} for name in ("office", "pt", "ot", "slp", "surgery")},
        "buckets": [
            {"bucket_id": "pt_slp", "categories": ["pt", "slp"], "unit": "cents", "limit": threshold, "hard": False},
            {"bucket_id": "ot", "categories": ["ot"], "unit": "cents", "limit": threshold, "hard": False},
        ],
    }


def coverage_body(member: str, plan_id: str = "ppo", **facts: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "member": member, "plan_id": plan_id, "family_id": "fam-" + member[3:11],
        "relationship": "self", "coverage_start": 20240101, "subscriber_birthday": 615,
        "employment": "active", "employer_size": 500,
    }
    body.update(facts)
    return body


def line_body(claim_id: str, member: str = ALICE, plan_id: str = "ppo", *, category: str = "office",
              date: int = 20250310, allowed: int = 10_000, billed: int | None = None, hcpcs: str = "99213",
              units: int = 1, line: int = 0, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "claim_id": claim_id, "line": line, "member": member, "plan_id": plan_id, "service_date": date,
        "category": category, "hcpcs": hcpcs, "units": units, "allowed_cents": allowed,
        "billed_cents": allowed if billed is None else billed, "rendering_npi": DR_PT,
        "billing_npi": GROUP, "place_of_service": "11",
    }
    body.update(extra)
    return body


def world(*members: str) -> Chain:
    """A chain whose members are registered patients (registered by acme)."""
    chain = Chain()
    for member in members or (ALICE,):
        chain.ok(admin("acme"), "patient_register", {"patient": member})
    return chain


def ppo_world(*members: str, **plan: Any) -> Chain:
    """acme's PPO with every member enrolled as a subscriber."""
    chain = world(*members)
    chain.ok(admin("acme"), "benefit_plan_register", plan_body(**plan))
    for member in members or (ALICE,):
        chain.ok(admin("acme"), "benefit_coverage_enroll", coverage_body(member))
    return chain


def adjudicate(chain: Chain, payer: str, body: dict[str, Any]) -> dict[str, Any]:
    """Adjudicate and return the stored record (asserts the tx succeeded)."""
    chain.ok(admin(payer), "benefit_adjudicate", body)
    return chain.get(adjudication_key(payer, body["claim_id"], body["line"]))


def cov(payer: str, plan_id: str = "p", **facts: Any) -> Coverage:
    """Coverage facts for the pure order-rule tests."""
    base: dict[str, Any] = dict(
        member=ALICE, payer=payer, plan_id=plan_id, plan_kind="commercial", cob_provision=True,
        family_id="f", relationship="self", coverage_start=20200101, coverage_end=None,
        subscriber_birthday=615, subscriber_since=20200101, employment="active", cobra=False,
        employer_size=500, medicare_reason=None, esrd_coordination_start=None, parents="together",
        court_decree="none", custody=None)
    base.update(facts)
    return Coverage(**base)


def receipt_ok(receipt: Receipt) -> None:
    assert receipt.ok, (receipt.code, receipt.message)
