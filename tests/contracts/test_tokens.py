"""Incentive tokens: minted only by rule, transferred, redeemed as co-pay credit; supply conserved."""

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.state import key

from payments_helpers import (
    CLINIC, HOSPITAL, OTHER_PAYER, PATIENT_A, PATIENT_B, PATIENT_C, PAYER, Chain, register_program,
)

RULES = {"colorectal-screening": 500, "flu-shot": 100}
WALLETS = (PATIENT_A, PATIENT_B, PATIENT_C)


def token_chain():
    chain = Chain()
    chain.put(key("governance", "param", "token_engagement_rules"), RULES)
    return chain


def engagement(chain, wallet=PATIENT_A, kind="colorectal-screening", date=20240315, patient="pz-a"):
    return chain.send(CLINIC, "engagement_record", {"patient": patient, "wallet": wallet, "event_kind": kind,
                                                    "event_date": date, "evidence": bytes([7]) * 32})


def balances(chain):
    return {wallet: chain.get(key("token", "balance", wallet), 0) for wallet in WALLETS}


def supply(chain):
    return chain.get(key("token", "supply"), {"minted": 0, "redeemed": 0})


def test_a_recorded_screening_mints_the_governance_amount_once():
    chain = token_chain()
    assert engagement(chain).ok
    assert balances(chain)[PATIENT_A] == 500
    assert supply(chain) == {"minted": 500, "redeemed": 0}
    assert engagement(chain).code == "duplicate_event"
    assert engagement(chain, kind="yoga").code == "payment_error"
    assert engagement(chain, date=20240230).code == "payment_error"
    assert chain.send(PATIENT_A, "engagement_record", {"patient": "pz-a", "wallet": PATIENT_A, "event_kind": "flu-shot",
                                                       "event_date": 20240101, "evidence": bytes(32)}).code == "not_permitted"


def test_without_a_governance_rule_nothing_is_minted():
    chain = Chain()
    assert engagement(chain).code == "payment_error"
    chain.put(key("governance", "param", "token_engagement_rules"), {"colorectal-screening": -5})
    assert engagement(chain).code == "payment_error"
    assert supply(chain) == {"minted": 0, "redeemed": 0}


def test_transfer_and_redemption_move_and_burn_tokens():
    chain = token_chain()
    engagement(chain)
    assert chain.send(PATIENT_A, "token_transfer", {"to": PATIENT_B, "amount": 200}).ok
    assert chain.send(PATIENT_A, "token_transfer", {"to": PATIENT_B, "amount": 301}).code == "insufficient_tokens"
    assert chain.send(PATIENT_A, "token_transfer", {"to": PATIENT_B, "amount": -1}).code == "payment_error"
    assert chain.send(PATIENT_A, "token_transfer", {"to": PATIENT_B, "amount": 0}).code == "payment_error"
    redeem = {"redemption_id": "r1", "amount": 150, "provider_org": "clinic", "claim_id": "clm-1"}
    assert chain.send(PATIENT_B, "token_redeem", redeem).ok
    assert chain.send(PATIENT_B, "token_redeem", redeem).code == "duplicate_event"
    assert chain.send(PATIENT_B, "token_redeem", dict(redeem, redemption_id="r2", amount=51)).code == "insufficient_tokens"
    assert chain.send(PATIENT_B, "token_redeem", dict(redeem, redemption_id="r3", provider_org="nobody")).code == "unknown_program"
    assert balances(chain) == {PATIENT_A: 300, PATIENT_B: 50, PATIENT_C: 0}
    assert supply(chain) == {"minted": 500, "redeemed": 150}
    assert chain.get(key("token", "redemption", "r1"))["claim_id"] == "clm-1"


def test_a_settlement_rule_mints_once_for_a_positive_settlement():
    chain = token_chain()
    chain.put(key("governance", "param", "token_settlement_rule_bps"), 10)  # 0.1 % of the amount due
    register_program(chain, "cap1", "capitation", {"pmpm_cents": 50_000})
    references = {"enrollment_ref": chain.put(key("coverage", "roster"), {"r": 1}),
                  "risk_ref": chain.put(key("risk", "scores"), {"r": 1})}
    chain.ok(PAYER, "capitation_payment", {"program_id": "cap1", "month": 202401, **references,
                                           "members": [{"member": "m1", "risk_score_bps": 12_345, "days_enrolled": 31}]})
    body = {"settlement_id": "cap1/capitation/202401/final", "wallet": PATIENT_C}
    assert chain.send(OTHER_PAYER, "token_settlement_mint", body).code == "not_a_party"
    assert chain.send(PAYER, "token_settlement_mint", body).ok
    assert balances(chain)[PATIENT_C] == 61_725 * 10 // 10_000  # floor of 61.725
    assert chain.send(PAYER, "token_settlement_mint", body).code == "already_settled"


operation = st.one_of(
    st.tuples(st.just("engage"), st.sampled_from(WALLETS), st.sampled_from(sorted(RULES)), st.integers(1, 28)),
    st.tuples(st.just("transfer"), st.sampled_from(WALLETS), st.sampled_from(WALLETS), st.integers(-5, 700)),
    st.tuples(st.just("redeem"), st.sampled_from(WALLETS), st.integers(0, 3), st.integers(-5, 700)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(operation, min_size=1, max_size=5), min_size=1, max_size=6))
def test_supply_is_conserved_and_failed_transactions_change_nothing(blocks):
    chain = token_chain()
    for block in blocks:
        for op in block:
            before = chain.snapshot()
            if op[0] == "engage":
                _, wallet, kind, day = op
                receipt = engagement(chain, wallet, kind, 20240300 + day, patient="pz-%s" % wallet.hex()[:8])
            elif op[0] == "transfer":
                _, source, target, amount = op
                receipt = chain.send(source, "token_transfer", {"to": target, "amount": amount})
            else:
                _, wallet, n, amount = op
                receipt = chain.send(wallet, "token_redeem", {"redemption_id": "r%d" % n, "amount": amount,
                                                              "provider_org": "hospital", "claim_id": "c%d" % n})
            if not receipt.ok:
                assert chain.snapshot() == before
        totals = supply(chain)
        assert sum(balances(chain).values()) == totals["minted"] - totals["redeemed"]
        assert all(value >= 0 for value in balances(chain).values())


def test_order_of_independent_engagements_in_a_block_does_not_change_balances():
    stores = []
    for reverse in (False, True):
        chain = token_chain()
        txs = [chain.tx(CLINIC, "engagement_record", {"patient": "pz-a", "wallet": PATIENT_A, "event_kind": "flu-shot",
                                                      "event_date": 20240101, "evidence": bytes(32)}),
               chain.tx(HOSPITAL, "engagement_record", {"patient": "pz-b", "wallet": PATIENT_B,
                                                        "event_kind": "colorectal-screening",
                                                        "event_date": 20240102, "evidence": bytes(32)})]
        assert all(r.ok for r in chain.run(txs[::-1] if reverse else txs))
        stores.append(chain.store)
    assert stores[0] == stores[1]
