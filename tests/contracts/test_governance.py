"""Governance: genesis, staff keys, delegation, rotation, k-of-n proposals,
validator-set changes, the permission table, suspension — all through apply_block."""

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import governance
from ledger.crypto import PrivateKey
from contracts.errors import InvalidValue
from contracts.genesis import genesis_writes
from contracts.state import key
from tests.contracts.helpers import (
    CHAIN_ID, DAY, T0, Chain, admin, default_app_state, pk,
)

VOTERS = ["cms", "acme", "river", "lake", "hill", "audit"]


def account(chain, public_key):
    return chain.get(key("account", public_key))


def propose(chain, proposer, proposal_id, action, params, approvers=()):
    chain.ok(admin(proposer), "gov_propose", {"proposal_id": proposal_id, "action": action, "params": params})
    for org in approvers:
        chain.ok(admin(org), "gov_approve", {"proposal_id": proposal_id})


def pass_proposal(chain, proposal_id, action, params):
    """Propose from cms, approve by three more (k = 4 of n = 6), execute."""
    propose(chain, "cms", proposal_id, action, params, approvers=("acme", "river", "audit"))
    return chain.ok(admin("hill"), "gov_execute", {"proposal_id": proposal_id})


# ------------------------------------------------------------ genesis


def test_genesis_writes_organisations_accounts_parameters_and_validators():
    chain = Chain()
    assert chain.get(key("governance", "orgs")) == sorted(VOTERS + ["board", "app"])
    assert governance.voting_orgs(chain.view()) == sorted(VOTERS)
    assert chain.get(key("org", "board"))["voting"] is False
    assert chain.get(key("org", "cms")) == {"id": "cms", "name": "Centers for Medicare & Medicaid Services",
                                            "kind": "payer", "voting": True, "active": True, "height": 0}
    cms = account(chain, admin("cms"))
    assert (cms["org"], cms["role"], cms["admin"], cms["rights"]) == ("cms", "payer", True, None)
    assert chain.get(governance.parameter_key("approval_threshold")) == [2, 3]
    assert chain.get(governance.parameter_key("hcc_coefficients")) == {}
    current = chain.get(governance.VALIDATORS_CURRENT_KEY)
    assert current["seq"] == 0 and len(current["validators"]) == 4


def test_genesis_is_deterministic_whatever_the_listing_order():
    forward = default_app_state()
    backward = default_app_state()
    backward["organisations"].reverse()
    backward["accounts"].reverse()
    assert genesis_writes(forward) == genesis_writes(backward)


@pytest.mark.parametrize("mutate", [
    lambda s: s["accounts"].append({"public_key": pk("x").hex(), "org": "nobody"}),
    lambda s: s["accounts"].append(dict(s["accounts"][0])),
    lambda s: s["organisations"].append({"id": "cms", "name": "again", "kind": "payer"}),
    lambda s: s["organisations"].append({"id": "Bad Id", "name": "x", "kind": "payer"}),
    lambda s: s["organisations"].append({"id": "x", "name": "x", "kind": "hospital"}),
    lambda s: s["accounts"].append({"public_key": "zz", "org": "cms"}),
    lambda s: s["parameters"].update(approval_threshold=[3, 2]),
    lambda s: s.update(validators=[["v", pk("v").hex()], ["w", pk("v").hex()]]),
    lambda s: s.update(organisations=[o for o in s["organisations"] if o["id"] in ("board", "app")],
                       accounts=[]),
])
def test_a_malformed_genesis_is_refused_with_a_typed_error(mutate):
    app_state = default_app_state()
    mutate(app_state)
    with pytest.raises(InvalidValue):
        genesis_writes(app_state)


# ------------------------------------------------------------ staff keys and delegation


def test_an_admin_creates_a_staff_key_in_its_own_organisation_and_role():
    chain = Chain()
    chain.ok(admin("acme"), "gov_create_account", {"public_key": pk("acme/clerk")})
    clerk = account(chain, pk("acme/clerk"))
    assert (clerk["org"], clerk["role"], clerk["admin"], clerk["delegated_by"]) == ("acme", "payer", False, admin("acme"))
    chain.ok(pk("acme/clerk"), "tin_register", {"tin": "987654321", "name": "Acme Clinic"})


def test_a_staff_key_cannot_create_accounts():
    chain = Chain()
    chain.ok(admin("acme"), "gov_create_account", {"public_key": pk("acme/clerk")})
    chain.fails(pk("acme/clerk"), "gov_create_account", {"public_key": pk("acme/other")}, "not_permitted")


def test_a_key_is_never_created_twice():
    chain = Chain()
    chain.fails(admin("acme"), "gov_create_account", {"public_key": admin("cms")}, "already_exists")


def test_delegated_rights_restrict_a_staff_key_to_listed_tx_types():
    chain = Chain()
    chain.ok(admin("river"), "gov_create_account", {"public_key": pk("river/clerk"), "rights": ["tin_register"]})
    chain.ok(pk("river/clerk"), "tin_register", {"tin": "555555555", "name": "River North"})
    chain.fails(pk("river/clerk"), "aco_register", {"program_id": "p", "aco_id": "a", "name": "A"}, "not_permitted")
    chain.ok(admin("river"), "gov_delegate_rights", {"public_key": pk("river/clerk"), "rights": None})
    assert account(chain, pk("river/clerk"))["rights"] is None


@pytest.mark.parametrize("body, code", [
    ({"public_key": pk("river/clerk"), "rights": ["no_such_tx"]}, "invalid_value"),
    ({"public_key": pk("river/clerk"), "rights": ["coverage_enroll"]}, "invalid_value"),  # payer-only type
    ({"public_key": pk("river/clerk"), "rights": ["tin_register", "tin_register"]}, "duplicate"),
    ({"public_key": pk("lake/ghost"), "rights": None}, "unknown_account"),
    ({"public_key": admin("lake"), "rights": None}, "not_permitted"),  # another org's key
    ({"public_key": admin("river"), "rights": []}, "not_permitted"),  # its own rights
    ({"public_key": b"short", "rights": None}, "malformed"),
    ({"public_key": pk("river/clerk")}, "malformed"),
])
def test_bad_delegations_are_refused(body, code):
    chain = Chain()
    chain.ok(admin("river"), "gov_create_account", {"public_key": pk("river/clerk")})
    chain.fails(admin("river"), "gov_delegate_rights", body, code)


def test_an_admin_deactivates_a_departed_staff_key():
    chain = Chain()
    chain.ok(admin("acme"), "gov_create_account", {"public_key": pk("acme/clerk")})
    chain.ok(admin("acme"), "gov_deactivate_account", {"public_key": pk("acme/clerk")})
    chain.fails(pk("acme/clerk"), "tin_register", {"tin": "987654321", "name": "x"}, "unknown_account")
    chain.fails(admin("acme"), "gov_deactivate_account", {"public_key": pk("acme/clerk")}, "unknown_account")
    chain.fails(admin("acme"), "gov_create_account", {"public_key": pk("acme/clerk")}, "already_exists")


# ------------------------------------------------------------ key rotation


def test_a_key_rotates_itself_and_its_nonce_history_is_kept():
    chain = Chain()
    chain.ok(admin("acme"), "tin_register", {"tin": "987654321", "name": "Acme Clinic"})
    chain.ok(admin("acme"), "gov_rotate_key", {"old_key": admin("acme"), "new_key": pk("acme/admin-2")})
    old, new = account(chain, admin("acme")), account(chain, pk("acme/admin-2"))
    assert old["active"] is False and old["rotated_to"] == pk("acme/admin-2")
    assert new["active"] and new["admin"] and new["org"] == "acme" and new["rotated_from"] == admin("acme")
    assert chain.get(key("nonce", admin("acme"))) == 2  # kept for audit and replay protection
    assert chain.entries(governance.ROTATIONS_KEY) == [
        {"org": "acme", "old": admin("acme"), "new": pk("acme/admin-2"), "by": admin("acme"), "height": 2}]
    receipt = chain.send(admin("acme"), "tin_register", {"tin": "987654322", "name": "x"})
    assert receipt.code == "unknown_account"
    chain.ok(pk("acme/admin-2"), "gov_create_account", {"public_key": pk("acme/clerk")})


def test_an_admin_rotates_a_lost_staff_key_but_another_org_cannot():
    chain = Chain()
    chain.ok(admin("acme"), "gov_create_account", {"public_key": pk("acme/clerk"), "rights": ["tin_register"]})
    chain.fails(admin("cms"), "gov_rotate_key", {"old_key": pk("acme/clerk"), "new_key": pk("x")}, "not_permitted")
    chain.ok(admin("acme"), "gov_rotate_key", {"old_key": pk("acme/clerk"), "new_key": pk("acme/clerk-2")})
    assert account(chain, pk("acme/clerk-2"))["rights"] == ["tin_register"]


@pytest.mark.parametrize("body, code", [
    ({"old_key": pk("nobody"), "new_key": pk("n")}, "unknown_account"),
    ({"old_key": admin("acme"), "new_key": admin("cms")}, "already_exists"),
    ({"old_key": admin("acme"), "new_key": b"\x00" * 31}, "malformed"),
    ({"new_key": pk("n")}, "malformed"),
])
def test_bad_rotations_are_refused(body, code):
    Chain().fails(admin("acme"), "gov_rotate_key", body, code)


# ------------------------------------------------------------ proposals


def test_adding_an_organisation_needs_k_of_n_approvals():
    chain = Chain()
    params = {"org_id": "delta", "name": "Delta Health", "kind": "payer", "admin_keys": [pk("delta/admin")]}
    propose(chain, "cms", "p1", "add_organisation", params, approvers=("acme", "river"))
    assert governance.required_approvals(chain.view()) == (4, 6)
    chain.fails(admin("lake"), "gov_execute", {"proposal_id": "p1"}, "not_permitted")  # 3 of 4
    chain.ok(admin("audit"), "gov_approve", {"proposal_id": "p1"})
    chain.ok(admin("lake"), "gov_execute", {"proposal_id": "p1"})
    assert chain.get(key("org", "delta"))["kind"] == "payer"
    assert account(chain, pk("delta/admin"))["admin"] is True
    assert governance.required_approvals(chain.view()) == (5, 7)  # ⌈7 × 2/3⌉
    chain.fails(admin("lake"), "gov_execute", {"proposal_id": "p1"}, "conflict")
    chain.ok(pk("delta/admin"), "program_create", {"program_id": "delta-ma", "name": "Delta MA"})


def test_each_organisation_approves_once_and_non_voters_cannot_vote():
    chain = Chain()
    propose(chain, "cms", "p1", "set_parameter", {"name": "proposal_ttl_ms", "value": DAY})
    chain.fails(admin("cms"), "gov_approve", {"proposal_id": "p1"}, "duplicate")
    chain.fails(admin("board"), "gov_approve", {"proposal_id": "p1"}, "not_permitted")
    chain.fails(admin("board"), "gov_propose", {"proposal_id": "p2", "action": "set_parameter",
                                                "params": {"name": "x", "value": 1}}, "not_permitted")
    chain.fails(admin("app"), "gov_approve", {"proposal_id": "p1"}, "not_permitted")  # role not allowed


def test_a_proposal_expires_after_its_ttl():
    chain = Chain()
    propose(chain, "cms", "p1", "set_parameter", {"name": "proposal_ttl_ms", "value": DAY})
    chain.fails(admin("acme"), "gov_approve", {"proposal_id": "p1"}, "expired", time_ms=T0 + 15 * DAY)


def test_a_parameter_change_takes_effect_on_execution():
    chain = Chain()
    pass_proposal(chain, "p1", "set_parameter", {"name": "approval_threshold", "value": [1, 2]})
    assert governance.required_approvals(chain.view()) == (3, 6)
    pass_proposal(chain, "p2", "set_parameter", {"name": "code_lists", "value": {"pcp_taxonomies": ["207Q00000X"]}})
    assert chain.get(governance.parameter_key("code_lists")) == {"pcp_taxonomies": ["207Q00000X"]}


def point(label):
    """A real ed25519 public key (hash-derived bytes are usually not curve points)."""
    return PrivateKey(hashlib.sha256(label.encode()).digest()).public_key


def test_a_validator_set_change_is_recorded_as_pending_for_the_node():
    chain = Chain()
    validators = [["val-%d" % i, point("new-validator-%d" % i)] for i in range(5)]
    pass_proposal(chain, "v1", "set_validator_set", {"validators": validators})
    pending = chain.get(governance.VALIDATORS_PENDING_KEY)
    assert pending["validators"] == validators and pending["seq"] == 1 and pending["proposal"] == "v1"
    # no node key given: the node connects with its validator key
    assert pending["node_keys"] == [[k, k] for _, k in validators]
    pass_proposal(chain, "v2", "set_validator_set", {"validators": validators[:4]})
    assert chain.get(governance.VALIDATORS_PENDING_KEY)["seq"] == 2
    assert [e["seq"] for e in chain.entries(governance.VALIDATORS_HISTORY_KEY)] == [1, 2]


def test_an_executed_change_becomes_the_current_set_with_its_executed_height():
    chain = Chain()
    genesis_current = chain.get(governance.VALIDATORS_CURRENT_KEY)
    validators = [["val-%d" % i, point("new-validator-%d" % i)] for i in range(5)]
    propose(chain, "cms", "v1", "set_validator_set", {"validators": validators}, approvers=("acme", "river"))
    assert chain.get(governance.VALIDATORS_CURRENT_KEY) == genesis_current  # not before it executes
    chain.ok(admin("audit"), "gov_approve", {"proposal_id": "v1"})
    chain.ok(admin("hill"), "gov_execute", {"proposal_id": "v1"})
    executed_at = chain.height
    assert chain.get(governance.VALIDATORS_CURRENT_KEY) == {
        "validators": validators, "seq": 1, "height": executed_at, "proposal": "v1"}
    assert chain.get(governance.VALIDATORS_PENDING_KEY)["height"] == executed_at
    # a later change (possibly before the first is active: it then replaces it) advances both records
    pass_proposal(chain, "v2", "set_validator_set", {"validators": validators[:4]})
    current = chain.get(governance.VALIDATORS_CURRENT_KEY)
    assert (current["validators"], current["seq"], current["height"]) == (validators[:4], 2, chain.height)
    assert current["seq"] == chain.get(governance.VALIDATORS_PENDING_KEY)["seq"]


def test_replaying_the_same_changes_writes_the_same_current_record():
    records = []
    for _ in range(2):
        chain = Chain()
        pass_proposal(chain, "v1", "set_validator_set",
                      {"validators": [["val-%d" % i, point("x%d" % i)] for i in range(4)]})
        records.append(chain.get(governance.VALIDATORS_CURRENT_KEY))
    assert records[0] == records[1]


def test_a_validator_set_change_carries_each_members_node_key():
    chain = Chain()
    validators = [["val-%d" % i, point("v%d" % i), point("node-%d" % i)] for i in range(4)]
    pass_proposal(chain, "v1", "set_validator_set", {"validators": validators})
    pending = chain.get(governance.VALIDATORS_PENDING_KEY)
    assert pending["validators"] == [[name, key] for name, key, _ in validators]  # the consensus set
    assert pending["node_keys"] == [[key, node] for _, key, node in validators]  # the p2p allowlist


def test_the_permission_table_override_is_enforced_by_the_engine():
    chain = Chain()
    pass_proposal(chain, "perm", "set_permission", {"tx_type": "tin_register", "roles": ["provider"]})
    chain.fails(admin("acme"), "tin_register", {"tin": "987654321", "name": "x"}, "not_permitted")
    chain.ok(admin("hill"), "tin_register", {"tin": "987654321", "name": "x"})
    pass_proposal(chain, "perm2", "set_permission", {"tx_type": "tin_register", "roles": None})
    chain.ok(admin("acme"), "tin_register", {"tin": "987654322", "name": "y"})


def test_suspension_by_proposal_stops_a_key_and_reinstatement_restores_it():
    chain = Chain()
    pass_proposal(chain, "s1", "suspend_account", {"public_key": admin("lake")})
    assert account(chain, admin("lake"))["suspended"]["proposal"] == "s1"
    assert chain.send(admin("lake"), "tin_register", {"tin": "987654321", "name": "x"}).code == "unknown_account"
    pass_proposal(chain, "s2", "reinstate_account", {"public_key": admin("lake")})
    chain.ok(admin("lake"), "tin_register", {"tin": "987654321", "name": "x"})


@pytest.mark.parametrize("action, params, code", [
    ("no_such_action", {}, "invalid_value"),
    ("set_parameter", {"name": "approval_threshold", "value": [0, 3]}, "invalid_value"),
    ("set_parameter", {"name": "proposal_ttl_ms", "value": -1}, "invalid_value"),
    ("set_parameter", {"name": "Bad Name", "value": 1}, "malformed"),
    ("set_validator_set", {"validators": []}, "invalid_value"),
    ("set_validator_set", {"validators": [["v", b"short"]]}, "invalid_value"),
    # the protocol needs n >= 4 (f >= 1), distinct names/keys, and real curve points
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % i)] for i in range(3)]}, "invalid_value"),
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % min(i, 2))] for i in range(4)]}, "duplicate"),
    ("set_validator_set", {"validators": [["v%d" % min(i, 2), point("k%d" % i)] for i in range(4)]}, "duplicate"),
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % i)] for i in range(3)]
                           + [["v3", bytes(32)]]}, "invalid_value"),
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % i), point("n0")] for i in range(4)]},
     "duplicate"),
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % i), b"x" * 31] for i in range(4)]},
     "invalid_value"),
    ("set_validator_set", {"validators": [["v%d" % i, point("k%d" % i), point("n"), 1] for i in range(4)]},
     "malformed"),
    ("set_permission", {"tx_type": "gov_approve", "roles": []}, "not_permitted"),
    ("set_permission", {"tx_type": "no_such_tx", "roles": []}, "not_found"),
    ("set_permission", {"tx_type": "tin_register", "roles": ["wizard"]}, "invalid_value"),
    ("add_organisation", {"org_id": "cms", "name": "x", "kind": "payer", "admin_keys": [pk("z")]}, "already_exists"),
    ("add_organisation", {"org_id": "z", "name": "x", "kind": "payer", "admin_keys": [admin("cms")]}, "already_exists"),
    ("add_organisation", {"org_id": "z", "name": "x", "kind": "payer", "admin_keys": []}, "malformed"),
    ("suspend_account", {"public_key": pk("nobody")}, "unknown_account"),
    ("reinstate_account", {"public_key": admin("lake")}, "conflict"),
])
def test_bad_proposals_are_refused_before_anyone_votes(action, params, code):
    Chain().fails(admin("cms"), "gov_propose", {"proposal_id": "p", "action": action, "params": params}, code)


def test_unknown_and_duplicate_proposal_ids_are_refused():
    chain = Chain()
    chain.fails(admin("acme"), "gov_approve", {"proposal_id": "nope"}, "not_found")
    chain.fails(admin("acme"), "gov_execute", {"proposal_id": "nope"}, "not_found")
    propose(chain, "cms", "p1", "set_parameter", {"name": "x", "value": 1})
    chain.fails(admin("acme"), "gov_propose", {"proposal_id": "p1", "action": "set_parameter",
                                               "params": {"name": "x", "value": 2}}, "already_exists")


def test_an_action_is_rechecked_at_execution():
    chain = Chain()
    params = {"org_id": "delta", "name": "Delta", "kind": "payer", "admin_keys": [pk("delta/admin")]}
    propose(chain, "cms", "a", "add_organisation", params, approvers=("acme", "river", "audit"))
    propose(chain, "cms", "b", "add_organisation", params, approvers=("acme", "river", "audit"))
    chain.ok(admin("cms"), "gov_execute", {"proposal_id": "a"})
    chain.fails(admin("cms"), "gov_execute", {"proposal_id": "b"}, "not_permitted")  # n is now 7, k 5
    chain.ok(pk("delta/admin"), "gov_approve", {"proposal_id": "b"})
    chain.fails(admin("cms"), "gov_execute", {"proposal_id": "b"}, "already_exists")


# ------------------------------------------------------------ properties


TX_TYPES = ["gov_create_account", "gov_rotate_key", "gov_delegate_rights", "gov_deactivate_account",
            "gov_propose", "gov_approve", "gov_execute", "provider_register", "tin_register",
            "credential_issue", "program_create", "aco_add_participant", "patient_register",
            "coverage_enroll", "consent_grant", "attribution_run", "performance_record"]
values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.binary(max_size=40),
                   st.text(max_size=12), st.sampled_from(["cms", "payer", "1234567893", "111111111", "p1"]),
                   st.lists(st.sampled_from(["x", "tin_register", "cms"]), max_size=3))
bodies = st.dictionaries(st.sampled_from(
    ["public_key", "old_key", "new_key", "rights", "admin", "proposal_id", "action", "params", "npi", "tin",
     "name", "entity", "program_id", "patient", "months", "kind", "run_id", "period"]), values, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx_type=st.sampled_from(TX_TYPES), body=bodies, sender=st.sampled_from(VOTERS + ["board", "app"]))
def test_a_failed_transaction_changes_nothing_but_the_senders_nonce(tx_type, body, sender):
    chain = Chain()
    receipt = chain.send(admin(sender), tx_type, body)
    if not receipt.ok:
        assert set(chain.last_writes) == {key("nonce", admin(sender))}
        assert receipt.events == ()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TX_TYPES[:7]), bodies, st.sampled_from(VOTERS)), max_size=6))
def test_replaying_a_block_on_two_fresh_states_gives_identical_writes_and_receipts(items):
    first, second = Chain(), Chain()
    txs = [first.tx(admin(sender), tx_type, body) for tx_type, body, sender in items]
    assert [r.encode() for r in first.run(*txs)] == [r.encode() for r in second.run(*txs)]
    assert first.last_writes == second.last_writes


def test_the_engine_still_rejects_wrong_chain_and_bad_nonce():
    chain = Chain()
    tx = chain.tx(admin("cms"), "tin_register", {"tin": "987654321", "name": "x"}, nonce=5)
    assert chain.run(tx)[0].code == "bad_nonce"
    assert CHAIN_ID == "careledger-test"
