"""Disputes: a party challenges a settlement with evidence hashes, an auditor rules, and the
payer's adjustment references both the settlement and the dispute."""

import pytest

from contracts.state import key

from payments_helpers import AUDITOR, CLINIC, HOSPITAL, OTHER_PAYER, OUTSIDER, PAYER, Chain, register_program

SETTLEMENT = "cap1/capitation/202402/final"
EVIDENCE = [bytes([1]) * 32, bytes([2]) * 32]


@pytest.fixture
def chain():
    chain = Chain()
    register_program(chain, "cap1", "capitation", {"pmpm_cents": 50_000})
    references = {"enrollment_ref": chain.put(key("coverage", "roster"), {"r": 1}),
                  "risk_ref": chain.put(key("risk", "scores"), {"r": 1})}
    chain.ok(PAYER, "capitation_payment", {"program_id": "cap1", "month": 202402, **references,
                                           "members": [{"member": "m1", "risk_score_bps": 10_000, "days_enrolled": 29}]})
    return chain


def open_dispute(chain, sender=CLINIC, dispute_id="d1", settlement=SETTLEMENT, evidence=EVIDENCE):
    return chain.send(sender, "dispute_open", {"dispute_id": dispute_id, "settlement_id": settlement,
                                               "reason": "member m1 was enrolled in January", "evidence": evidence})


def rule(chain, decision="upheld", adjustment=12_345, sender=AUDITOR, dispute_id="d1"):
    return chain.send(sender, "dispute_rule", {"dispute_id": dispute_id, "decision": decision,
                                               "adjustment_cents": adjustment, "rationale": bytes([9]) * 32})


def test_a_party_opens_a_dispute_with_evidence_commitments(chain):
    assert open_dispute(chain).ok
    dispute = chain.get(key("dispute", "d1"))
    assert dispute["status"] == "open" and dispute["evidence"] == EVIDENCE and dispute["opened_by_org"] == "clinic"
    assert chain.get(key("settlement", SETTLEMENT, "disputes", "count")) == 1
    assert chain.send(HOSPITAL, "dispute_evidence", {"dispute_id": "d1", "evidence": [bytes([3]) * 32]}).ok
    assert len(chain.get(key("dispute", "d1"))["evidence"]) == 3


def test_disputing_someone_elses_settlement_is_refused(chain):
    before = chain.snapshot()
    assert open_dispute(chain, sender=OUTSIDER).code == "not_a_party"
    assert open_dispute(chain, sender=OTHER_PAYER).code == "not_a_party"
    assert chain.snapshot() == before
    assert open_dispute(chain).ok
    assert chain.send(OUTSIDER, "dispute_evidence", {"dispute_id": "d1", "evidence": [bytes(32)]}).code == "not_a_party"


def test_malformed_disputes_are_refused(chain):
    assert open_dispute(chain, evidence=[b"short"]).code == "payment_error"
    assert open_dispute(chain, evidence=[]).code == "payment_error"
    assert open_dispute(chain, evidence=[bytes(32), bytes(32)]).code == "payment_error"
    assert open_dispute(chain, settlement="cap1/capitation/202403/final").code == "unknown_program"
    assert open_dispute(chain, settlement="cap1/capitation/202402/final/disputes/count").code == "unknown_program"
    assert open_dispute(chain).ok
    assert open_dispute(chain).code == "program_state"


def test_only_an_auditor_rules_once_and_a_ruling_is_consistent(chain):
    open_dispute(chain)
    assert rule(chain, sender=PAYER).code == "not_permitted"
    assert rule(chain, decision="rejected", adjustment=5).code == "payment_error"
    assert rule(chain, decision="upheld", adjustment=0).code == "payment_error"
    assert rule(chain).ok
    assert chain.get(key("dispute", "d1"))["ruling"]["auditor_org"] == "audit-co"
    assert rule(chain).code == "program_state"
    assert chain.send(CLINIC, "dispute_evidence", {"dispute_id": "d1", "evidence": [bytes(32)]}).code == "program_state"


def test_the_adjustment_references_settlement_and_dispute_and_splits_by_shares(chain):
    open_dispute(chain)
    rule(chain)
    body = {"dispute_id": "d1", "settlement_id": SETTLEMENT}
    assert chain.send(OTHER_PAYER, "dispute_adjust", body).code == "not_a_party"
    assert chain.send(PAYER, "dispute_adjust", body).ok
    record = chain.get(key("disbursement", SETTLEMENT, "adjustment", "d1"))
    assert record["reference"] == {"settlement_id": SETTLEMENT, "dispute_id": "d1"}
    assert record["allocations"] == [["clinic", 7_407], ["hospital", 4_938]]  # 7,407 + 4,938 = 12,345
    assert chain.get(key("dispute", "d1"))["status"] == "adjusted"
    assert chain.send(PAYER, "dispute_adjust", body).code == "already_settled"


def test_a_rejected_dispute_or_a_mismatched_settlement_is_not_adjusted(chain):
    open_dispute(chain)
    assert chain.send(PAYER, "dispute_adjust", {"dispute_id": "d1", "settlement_id": SETTLEMENT}).code == "program_state"
    rule(chain, decision="rejected", adjustment=0)
    assert chain.send(PAYER, "dispute_adjust", {"dispute_id": "d1", "settlement_id": SETTLEMENT}).code == "program_state"
    assert chain.send(PAYER, "dispute_adjust", {"dispute_id": "nope", "settlement_id": SETTLEMENT}).code == "unknown_program"
