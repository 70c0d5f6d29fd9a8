"""The state at height 0, built from genesis `app_state`.

Why: every validator must start from byte-identical state, so genesis is a pure
function of the genesis file — sorted, validated, no defaults that depend on
the machine. A bad genesis raises InvalidValue (a ContractError) and the node
refuses to start.

`app_state` schema (a map; JSON-friendly: keys may be hex strings):

    {
      "organisations": [                      # at least one voting organisation
        {"id": "cms", "name": "CMS", "kind": "payer", "voting": true},
        ...                                   # kind: payer|provider|auditor|regulator|patient_agent
      ],                                      # voting defaults to true for payer, provider, auditor
      "accounts": [
        {"public_key": <32 bytes | 64 hex chars>, "org": "cms",
         "admin": true,                       # default false
         "rights": null | ["tx type", ...]}   # default null (all its role allows)
        ...                                   # role is always the organisation's kind
      ],
      "parameters": {                         # optional; merged over DEFAULT_PARAMETERS
        "approval_threshold": [2, 3],         # k of n = ceil(n * 2/3) organisations
        "proposal_ttl_ms": 1209600000,
        "hcc_coefficients": {},               # placeholder table for quality/risk adjustment
        "code_lists": {},                     # placeholder code lists (attribution reads
      },                                      #   primary_care_hcpcs, pcp_taxonomies, ...)
      "validators": [["val-0", <key>], ...]   # optional: the initial validator set
    }

Writes: `org/<id>`, `governance/orgs`, `account/<key>`, `governance/param/<name>`
for every parameter, and `governance/validator_set/current` {"validators", "seq": 0,
"height": 0} when validators are given.
"""

from __future__ import annotations

from typing import Any

from contracts import accounts, governance
from contracts.errors import ContractError, InvalidValue
from contracts.state import StateView


def _key_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError as exc:
            raise InvalidValue("public key %r is not hex" % value) from exc
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidValue("a public key is 32 bytes")
    return value


def _list_of_maps(app_state: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = app_state.get(name, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidValue("app_state.%s must be a list of maps" % name)
    return items


def init_state(state: StateView, app_state: dict[str, Any]) -> None:
    """Write the genesis organisations, accounts, parameters and validator set.

    Raises a ContractError (InvalidValue from `genesis_writes`) for any malformed entry, a
    duplicate organisation or key, an account of an unknown organisation, or a
    genesis without a voting organisation.
    """
    if not isinstance(app_state, dict):
        raise InvalidValue("app_state must be a map")
    orgs = sorted(_list_of_maps(app_state, "organisations"), key=lambda o: str(o.get("id")))
    for org in orgs:
        org_id, name, kind = org.get("id"), org.get("name"), org.get("kind")
        if not all(isinstance(v, str) for v in (org_id, name, kind)):
            raise InvalidValue("an organisation needs string id, name and kind")
        governance.check_new_org(state, org_id, name, kind)
        voting = org.get("voting", kind in governance.VOTING_KINDS)
        if not isinstance(voting, bool):
            raise InvalidValue("organisation %r: voting must be a bool" % org_id)
        governance.create_org(state, org_id, name, kind, voting, 0)
    if not governance.voting_orgs(state):
        raise InvalidValue("genesis needs at least one voting organisation")

    entries = [(_key_bytes(a.get("public_key")), a) for a in _list_of_maps(app_state, "accounts")]
    for public_key, entry in sorted(entries, key=lambda pair: pair[0]):
        org = governance.get_org(state, entry.get("org")) if isinstance(entry.get("org"), str) else None
        if org is None:
            raise InvalidValue("account %s: unknown organisation %r" % (public_key.hex()[:16], entry.get("org")))
        if accounts.get_account(state, public_key) is not None:
            raise InvalidValue("account %s listed twice" % public_key.hex()[:16])
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise InvalidValue("account %s: admin must be a bool" % public_key.hex()[:16])
        rights = governance.check_rights_list(entry.get("rights"), org["kind"])
        accounts.put_account(state, public_key, org["id"], org["kind"],
                             admin=admin, rights=rights, delegated_by=None, height=0)

    parameters = dict(governance.DEFAULT_PARAMETERS)
    supplied = app_state.get("parameters", {})
    if not isinstance(supplied, dict):
        raise InvalidValue("app_state.parameters must be a map")
    parameters.update(supplied)
    for name, value in sorted(parameters.items()):
        if not isinstance(name, str):
            raise InvalidValue("parameter names are strings")
        governance.check_parameter(name, value)
        state.put(governance.parameter_key(name), value)

    if "validators" in app_state:
        wire = [[v[0], _key_bytes(v[1])] if isinstance(v, list) and len(v) == 2 else v
                for v in app_state["validators"]] if isinstance(app_state["validators"], list) else None
        validators = governance.validator_set_from(wire)
        state.put(governance.VALIDATORS_CURRENT_KEY, {"validators": validators.to_wire(), "seq": 0, "height": 0})


def genesis_writes(app_state: dict[str, Any]) -> dict[bytes, bytes | None]:
    """The genesis write set (sorted by key) for the node to commit as height 0.

    Raises InvalidValue (a ContractError) for a malformed `app_state`.
    """
    from contracts import modules  # noqa: F401  (rights lists name registered tx types)

    state = StateView(lambda _key: None)
    try:
        init_state(state, app_state)
    except InvalidValue:
        raise
    except ContractError as exc:  # e.g. AlreadyExists: one error type for a bad genesis
        raise InvalidValue("genesis: %s" % exc) from exc
    return state.writes()
