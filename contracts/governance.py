"""Governance: organisations, their staff keys, and changes that need k of n
organisations to agree.

Why: a permissioned ledger shared by competing payers and providers must not
let any one member change the rules. Day-to-day key management stays with each
organisation (its admin keys create, rotate, restrict and deactivate its own
staff keys); anything that changes the network — a new member, a parameter, the
validator set, the permission table, suspending someone else's key — is a
proposal that executes only once enough organisations approve it.

State layout (all values canonical msgpack):

- `org/<org id>` → {"id", "name", "kind", "voting": bool, "active": bool, "height"}
  kinds: payer, provider, auditor, regulator, patient_agent (an organisation that
  runs keys acting for patients, e.g. a consent service). An account's role is
  always its organisation's kind.
- `governance/orgs` → sorted list of org ids (the n of "k of n" is the active
  voting organisations in it).
- `account/<key hex>` (see `accounts`) gains "admin": bool, "rights": [tx types] |
  None, "delegated_by": key | None, "rotated_from"/"rotated_to": key,
  "suspended": {"proposal", "height"}.
- `governance/rotations` — authenticated list of {"org", "old", "new", "by", "height"};
  a rotated key's `nonce/<key>` is kept, so its history stays provable.
- `governance/param/<name>` → parameter value (see `DEFAULT_PARAMETERS`).
- `governance/permission/<tx type>` → sorted roles overriding the registry
  (read by the engine through `accounts.permitted_roles`).
- `governance/proposal/<id>` → {"id", "action", "params", "proposer", "org",
  "approvals": sorted org ids, "status": open|executed, "created_height",
  "expires_at_ms", "executed_height"}.
- `governance/proposals` — authenticated list of proposal ids in order.
- `governance/validator_set/current` → {"validators": [[name, key], …], "seq", "height"}
  (+ "proposal" after a change): the set decided last — genesis (seq 0, height 0)
  or the last executed `set_validator_set`, written in the same transaction as
  the pending record, with "height" = the block that EXECUTED the change. It is
  not yet the set signing blocks: consensus runs a set decided in block h from
  height c + 1, c the first multiple of the checkpoint interval K at or above
  h + 1 (`node.store.schedule_start`). K is a genesis consensus parameter that
  is not in the application state, so contracts cannot compute the activation
  height; a light client reads it from the headers (the header c hands over in
  `next_validators_hash`; `/light/epoch-changes`).
- `governance/validator_set/pending` → {"validators": [[name, key], …],
  "node_keys": [[validator key, node key], …], "seq": int, "proposal": id, "height": int}.
  The node (`node.executor`) reads it from each executed block's writes; when
  `seq` exceeds the last sequence it handed to consensus, it hands the set over
  (consensus decides the activation height: after the next checkpoint
  boundary) and allowlists the node keys for p2p. The contract never deletes it.
  A second change may execute before the first is active: the later one
  REPLACES the earlier when both fall before the same checkpoint boundary (the
  earlier set never signs a block and no header hands over to it; consensus
  `Replica._schedule_set`); otherwise each runs in turn from its own boundary.
  `history` keeps both either way.
- `governance/validator_set/history` — authenticated list of every accepted change.

Tx types (body fields; roles):

- `gov_create_account` {public_key, admin?: bool, rights?: [tx types] | None}
  — an admin key adds a staff key to its own organisation; payer, provider,
  auditor, regulator, patient_agent.
- `gov_rotate_key` {old_key, new_key} — the key itself or an admin of its org;
  all roles.
- `gov_delegate_rights` {public_key, rights: [tx types] | None} — an admin sets a
  staff key's allow-list in its own org; all roles.
- `gov_deactivate_account` {public_key} — an admin retires a staff key of its own
  org; all roles.
- `gov_propose` {proposal_id, action, params} — an admin of a voting org;
  payer, provider, auditor, regulator.
- `gov_approve` {proposal_id} — an admin of a voting org; same roles.
- `gov_execute` {proposal_id} — any key of a voting org, once approvals ≥ k.

Proposal actions and their params: `add_organisation` {org_id, name, kind,
voting? (default: true for payer, provider, auditor), admin_keys: [key]}; `set_parameter` {name, value};
`set_validator_set` {validators: [[name, validator key, node key?], …]} (4..128
members, distinct names and keys, valid ed25519 points; see `proposed_validators`:
the node key is the p2p identity the validator's node connects with — peers
allowlist it once the change executes); `set_permission` {tx_type,
roles: [role] | None (None clears the override)}; `suspend_account`
{public_key}; `reinstate_account` {public_key}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from ledger import crypto
from ledger.errors import LedgerError
from ledger.types import MAX_VALIDATORS, Tx, ValidatorSet

from contracts import accounts
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import (
    AlreadyExists, Conflict, Duplicate, Expired, InvalidValue, MalformedTx,
    NotFound, NotPermitted, UnknownAccount,
)
from contracts.rounding import ceil_div
from contracts.state import StateView, key

ORG_KINDS = ("auditor", "patient_agent", "payer", "provider", "regulator")
STAFF_ROLES = ("auditor", "patient_agent", "payer", "provider", "regulator")
GOVERNING_ROLES = ("auditor", "payer", "provider", "regulator")
VOTING_KINDS = ("auditor", "payer", "provider")  # validator operators vote by default (DESIGN: regulators observe)
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME_MAX = 200
MAX_LIST = 2000
# Governance must always be able to change itself: these types keep the
# registry's roles and no override may lock them away.
PROTECTED_TX_TYPES = frozenset({"gov_propose", "gov_approve", "gov_execute"})
# The smallest validator set a governance change may install: n = 3f+1 with f = 1.
MIN_VALIDATORS = 4

DAY_MS = 86_400_000
DEFAULT_PARAMETERS: dict[str, Any] = {
    # k of n: a proposal passes when approvals × den ≥ num × n (n = active voting orgs).
    "approval_threshold": [2, 3],
    "proposal_ttl_ms": 14 * DAY_MS,
    # Placeholders the quality and attribution modules read; genesis may fill them.
    "hcc_coefficients": {},
    "code_lists": {},
}

ORGS_KEY = key("governance", "orgs")
ROTATIONS_KEY = key("governance", "rotations")
PROPOSALS_KEY = key("governance", "proposals")
VALIDATORS_CURRENT_KEY = key("governance", "validator_set", "current")
VALIDATORS_PENDING_KEY = key("governance", "validator_set", "pending")
VALIDATORS_HISTORY_KEY = key("governance", "validator_set", "history")


# ------------------------------------------------------------ body field readers


def text(body: dict[str, Any], name: str, max_length: int = NAME_MAX) -> str:
    """A required non-empty string field. Raises MalformedTx."""
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise MalformedTx("%s must be a string of 1..%d characters" % (name, max_length))
    return value


def identifier(body: dict[str, Any], name: str) -> str:
    """A lower-case id safe inside a state key ("/" is the key separator). Raises MalformedTx."""
    value = body.get(name)
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise MalformedTx("%s must match %s" % (name, ID_PATTERN.pattern))
    return value


def integer(body: dict[str, Any], name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    """A required integer field in [low, high] (bool is not an integer here). Raises InvalidValue."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValue("%s must be an integer in [%d, %d]" % (name, low, high))
    return value


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """An optional bool field. Raises MalformedTx."""
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise MalformedTx("%s must be true or false" % name)
    return value


def public_key(body: dict[str, Any], name: str) -> bytes:
    """A 32-byte ed25519 public key field. Raises MalformedTx."""
    value = body.get(name)
    if not isinstance(value, bytes) or len(value) != 32:
        raise MalformedTx("%s must be a 32-byte public key" % name)
    return value


def commitment(body: dict[str, Any], name: str) -> bytes:
    """A 32-byte salted document commitment (never the document). Raises MalformedTx."""
    value = body.get(name)
    if not isinstance(value, bytes) or len(value) != 32:
        raise MalformedTx("%s must be a 32-byte salted commitment" % name)
    return value


def string_list(body: dict[str, Any], name: str, max_items: int = MAX_LIST) -> list[str]:
    """A list of distinct strings, returned sorted. Raises MalformedTx or Duplicate."""
    value = body.get(name)
    if not isinstance(value, list) or len(value) > max_items:
        raise MalformedTx("%s must be a list of at most %d strings" % (name, max_items))
    if not all(isinstance(item, str) and 0 < len(item) <= NAME_MAX for item in value):
        raise MalformedTx("%s must contain non-empty strings" % name)
    if len(set(value)) != len(value):
        raise Duplicate("%s lists an item twice" % name)
    return sorted(value)


# ------------------------------------------------------------ organisations and accounts


def org_key(org_id: str) -> bytes:
    return key("org", org_id)


def get_org(state: StateView, org_id: str) -> dict[str, Any] | None:
    return state.get(org_key(org_id))


def require_org(state: StateView, org_id: str) -> dict[str, Any]:
    """An active organisation. Raises NotFound."""
    org = get_org(state, org_id)
    if org is None or not org["active"]:
        raise NotFound("no active organisation %r" % org_id)
    return org


def sender_account(state: StateView, tx: Tx) -> dict[str, Any]:
    """The sender's account (the engine already checked it is active)."""
    return accounts.require_active(state, tx.sender)


def require_admin(state: StateView, tx: Tx) -> dict[str, Any]:
    """The sender's account if it is an admin key of an active organisation. Raises NotPermitted."""
    account = sender_account(state, tx)
    if not account.get("admin"):
        raise NotPermitted("only an organisation's admin key may do this")
    require_org(state, account["org"])
    return account


def voting_orgs(state: StateView) -> list[str]:
    """Active voting organisations, sorted: the n of k-of-n."""
    out = []
    for org_id in state.get(ORGS_KEY, []):
        org = get_org(state, org_id)
        if org is not None and org["active"] and org["voting"]:
            out.append(org_id)
    return out


def create_org(state: StateView, org_id: str, name: str, kind: str, voting: bool, height: int) -> None:
    """Write a new organisation. Callers validated every field first."""
    state.put(org_key(org_id), {
        "id": org_id, "name": name, "kind": kind, "voting": voting, "active": True, "height": height,
    })
    state.put(ORGS_KEY, sorted(set(state.get(ORGS_KEY, [])) | {org_id}))


def check_new_org(state: StateView, org_id: str, name: str, kind: str) -> None:
    """Raises InvalidValue (bad id or kind) or AlreadyExists."""
    if ID_PATTERN.fullmatch(org_id) is None:
        raise InvalidValue("organisation id must match %s" % ID_PATTERN.pattern)
    if not 0 < len(name) <= NAME_MAX:
        raise InvalidValue("organisation name must be 1..%d characters" % NAME_MAX)
    if kind not in ORG_KINDS:
        raise InvalidValue("organisation kind must be one of %s" % ", ".join(ORG_KINDS))
    if get_org(state, org_id) is not None:
        raise AlreadyExists("organisation %r exists" % org_id)


def check_rights_list(rights: Any, role: str) -> list[str] | None:
    """A delegated allow-list: None or distinct tx types the role may send. Raises InvalidValue."""
    if rights is None:
        return None
    if not isinstance(rights, list) or len(rights) > len(REGISTRY.kinds) + 1:
        raise InvalidValue("rights must be a list of tx types or null")
    if len(set(rights)) != len(rights):
        raise Duplicate("rights list a tx type twice")
    for tx_type in rights:
        kind = REGISTRY.kinds.get(tx_type) if isinstance(tx_type, str) else None
        if kind is None:
            raise InvalidValue("rights name an unknown tx type %r" % (tx_type,))
        if role not in kind.roles:
            raise InvalidValue("role %s may never send %s" % (role, tx_type))
    return sorted(rights)


def check_new_key(state: StateView, new_key: bytes) -> None:
    """A key is used once, ever: a retired key is never re-created. Raises AlreadyExists."""
    if accounts.get_account(state, new_key) is not None or state.exists(key("nonce", new_key)):
        raise AlreadyExists("key %s already has an account" % new_key.hex()[:16])


def staff_account(state: StateView, admin: dict[str, Any], target: bytes) -> dict[str, Any]:
    """An account of the admin's own organisation. Raises UnknownAccount or NotPermitted."""
    account = accounts.get_account(state, target)
    if account is None:
        raise UnknownAccount("no account for key %s" % target.hex()[:16])
    if account["org"] != admin["org"]:
        raise NotPermitted("the key belongs to another organisation")
    return account


@REGISTRY.register("gov_create_account", roles=STAFF_ROLES)
def handle_gov_create_account(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Add a staff key to the sender's organisation, in the organisation's role.

    Why: each member manages its own people; nobody else can mint keys in its name.
    Raises NotPermitted (not an admin), MalformedTx, AlreadyExists (key used before),
    InvalidValue/Duplicate (bad rights list).
    """
    admin = require_admin(state, tx)
    new_key = public_key(tx.body, "public_key")
    make_admin = flag(tx.body, "admin")
    rights = check_rights_list(tx.body.get("rights"), admin["role"])
    check_new_key(state, new_key)
    accounts.put_account(
        state, new_key, admin["org"], admin["role"],
        admin=make_admin, rights=rights, delegated_by=tx.sender, height=ctx.height,
    )
    state.emit("account_created", org=admin["org"], public_key=new_key, admin=make_admin)


@REGISTRY.register("gov_rotate_key", roles=STAFF_ROLES)
def handle_gov_rotate_key(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Replace a key: the old account is deactivated (its nonce record stays, so
    old transactions remain attributable and can never be replayed) and the new
    key inherits org, role, admin flag and rights.

    Sent by the old key itself or by an admin of the same organisation (lost key).
    Raises MalformedTx, UnknownAccount (old key missing or inactive), NotPermitted,
    AlreadyExists (new key used before).
    """
    old_key = public_key(tx.body, "old_key")
    new_key = public_key(tx.body, "new_key")
    old = accounts.get_account(state, old_key)
    if old is None or not old.get("active"):
        raise UnknownAccount("no active account for key %s" % old_key.hex()[:16])
    if tx.sender != old_key:
        admin = require_admin(state, tx)
        if admin["org"] != old["org"]:
            raise NotPermitted("only the key or its organisation's admin may rotate it")
    check_new_key(state, new_key)
    retired = dict(old, active=False, rotated_to=new_key)
    state.put(accounts.account_key(old_key), retired)
    fresh = {name: value for name, value in old.items() if name not in ("rotated_to", "suspended")}
    fresh.update(active=True, rotated_from=old_key, height=ctx.height)
    state.put(accounts.account_key(new_key), fresh)
    state.append_entry(ROTATIONS_KEY, {
        "org": old["org"], "old": old_key, "new": new_key, "by": tx.sender, "height": ctx.height,
    })
    state.emit("key_rotated", org=old["org"], old=old_key, new=new_key)


@REGISTRY.register("gov_delegate_rights", roles=STAFF_ROLES)
def handle_gov_delegate_rights(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Set which tx types a staff key of the admin's organisation may send
    (None: everything its role allows). An admin may not restrict itself, so an
    organisation can never lock out its own last admin by accident.

    Raises NotPermitted, MalformedTx, UnknownAccount, InvalidValue, Duplicate.
    """
    admin = require_admin(state, tx)
    target = public_key(tx.body, "public_key")
    if target == tx.sender:
        raise NotPermitted("an admin key cannot change its own rights")
    if "rights" not in tx.body:
        raise MalformedTx("rights is required (a list of tx types, or null)")
    account = staff_account(state, admin, target)
    if not account.get("active"):
        raise UnknownAccount("key %s is not active" % target.hex()[:16])
    rights = check_rights_list(tx.body["rights"], account["role"])
    state.put(accounts.account_key(target), dict(account, rights=rights, delegated_by=tx.sender))
    state.emit("rights_delegated", org=admin["org"], public_key=target, rights=rights)


@REGISTRY.register("gov_deactivate_account", roles=STAFF_ROLES)
def handle_gov_deactivate_account(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Retire a staff key of the admin's own organisation (someone left). The key
    can never be re-created; its nonce record stays.

    Raises NotPermitted (not an admin, other org, or its own key), MalformedTx,
    UnknownAccount (missing or already inactive).
    """
    admin = require_admin(state, tx)
    target = public_key(tx.body, "public_key")
    if target == tx.sender:
        raise NotPermitted("an admin key cannot deactivate itself; rotate it instead")
    account = staff_account(state, admin, target)
    if not account.get("active"):
        raise UnknownAccount("key %s is already inactive" % target.hex()[:16])
    state.put(accounts.account_key(target), dict(account, active=False, deactivated_height=ctx.height))
    state.emit("account_deactivated", org=admin["org"], public_key=target)


# ------------------------------------------------------------ parameters


def parameter_key(name: str) -> bytes:
    return key("governance", "param", name)


def get_parameter(state: StateView, name: str) -> Any:
    """A governance parameter, falling back to `DEFAULT_PARAMETERS` (None if unknown)."""
    value = state.get(parameter_key(name))
    if value is None:
        return DEFAULT_PARAMETERS.get(name)
    return value


def check_parameter(name: str, value: Any) -> None:
    """Type-check the parameters this module knows; others only need a canonical value.

    Raises InvalidValue.
    """
    if ID_PATTERN.fullmatch(name) is None:
        raise InvalidValue("parameter name must match %s" % ID_PATTERN.pattern)
    if value is None:
        raise InvalidValue("a parameter value may not be null")
    if name == "approval_threshold":
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                or not 0 < value[0] <= value[1]):
            raise InvalidValue("approval_threshold is [numerator, denominator] with 0 < num ≤ den")
    elif name == "proposal_ttl_ms":
        if isinstance(value, bool) or not isinstance(value, int) or not DAY_MS // 24 <= value <= 365 * DAY_MS:
            raise InvalidValue("proposal_ttl_ms must be an integer from one hour to a year")
    elif name in ("hcc_coefficients", "code_lists", "credential_issuers"):
        if not isinstance(value, dict):
            raise InvalidValue("%s must be a map" % name)


def required_approvals(state: StateView) -> tuple[int, int]:
    """(k, n): approvals needed and active voting organisations. k = ⌈n·num/den⌉, at least 1."""
    numerator, denominator = get_parameter(state, "approval_threshold")
    n = len(voting_orgs(state))
    k = ceil_div(n * numerator, denominator)
    return max(k, 1), n


# ------------------------------------------------------------ proposals


@dataclass(frozen=True)
class Action:
    """A governance change: `check` validates params against state (raises a
    ContractError), `apply` performs it after `check` passed."""

    check: Callable[[StateView, dict[str, Any]], None]
    apply: Callable[[StateView, dict[str, Any], BlockContext, str], None]


def _check_add_organisation(state: StateView, params: dict[str, Any]) -> None:
    check_new_org(state, identifier(params, "org_id"), text(params, "name"), text(params, "kind"))
    flag(params, "voting")
    keys = params.get("admin_keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= 16:
        raise MalformedTx("admin_keys must list 1..16 public keys")
    if len(set(k for k in keys if isinstance(k, bytes))) != len(keys):
        raise Duplicate("admin_keys lists a key twice")
    for admin_key in keys:
        if not isinstance(admin_key, bytes) or len(admin_key) != 32:
            raise MalformedTx("admin_keys must be 32-byte public keys")
        check_new_key(state, admin_key)


def _apply_add_organisation(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    org_id, kind = params["org_id"], params["kind"]
    create_org(state, org_id, params["name"], kind, params.get("voting", kind in VOTING_KINDS), ctx.height)
    for admin_key in sorted(params["admin_keys"]):
        accounts.put_account(state, admin_key, org_id, kind, admin=True, rights=None,
                             delegated_by=None, height=ctx.height)
    state.emit("organisation_added", org=org_id, kind=kind, proposal=proposal)


def _check_set_parameter(state: StateView, params: dict[str, Any]) -> None:
    check_parameter(identifier(params, "name"), params.get("value"))


def _apply_set_parameter(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    state.put(parameter_key(params["name"]), params["value"])
    state.emit("parameter_set", name=params["name"], proposal=proposal)


def validator_set_from(value: Any) -> ValidatorSet:
    """Parse [[name, key], …] with the kernel's rules. Raises InvalidValue."""
    try:
        return ValidatorSet.from_wire(value)
    except LedgerError as exc:
        raise InvalidValue("bad validator set: %s" % exc) from exc


def proposed_validators(value: Any) -> tuple[ValidatorSet, list[list[bytes]]]:
    """Parse a `set_validator_set` list: entries `[name, validator key]` or
    `[name, validator key, node key]` (the p2p identity its node connects with;
    omitted = the node connects with its validator key).

    Returns (the ValidatorSet consensus runs, [[validator key, node key], …] in
    set order). Refuses what the protocol cannot run: fewer than
    `MIN_VALIDATORS` members (PBFT needs n ≥ 3f+1 with f ≥ 1), a validator key,
    node key or name used twice, and keys that are not valid ed25519 points.
    Raises InvalidValue, MalformedTx or Duplicate.
    """
    if not isinstance(value, list) or not MIN_VALIDATORS <= len(value) <= MAX_VALIDATORS:
        raise InvalidValue("validators must list %d..%d validators (PBFT tolerates f faults with n ≥ 3f+1, f ≥ 1)"
                           % (MIN_VALIDATORS, MAX_VALIDATORS))
    pairs, node_keys = [], []
    for entry in value:
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise MalformedTx("a validator is [name, validator key] or [name, validator key, node key]")
        pairs.append(entry[:2])
        node_key = entry[2] if len(entry) == 3 else entry[1]
        for what, candidate in (("validator", entry[1]), ("node", node_key)):
            if not crypto.is_valid_public_key(candidate):
                raise InvalidValue("%s key of validator %r is not a valid ed25519 public key" % (what, entry[0]))
        node_keys.append([entry[1], node_key])
    if len({key for key, _ in node_keys}) != len(node_keys):
        raise Duplicate("a validator key appears twice")
    if len({node for _, node in node_keys}) != len(node_keys):
        raise Duplicate("a node key appears twice")
    vset = validator_set_from(pairs)  # names are 1..64-character strings
    if len({v.name for v in vset.validators}) != vset.size:
        raise Duplicate("a validator name appears twice")
    return vset, node_keys


def _check_set_validator_set(state: StateView, params: dict[str, Any]) -> None:
    proposed_validators(params.get("validators"))


def _apply_set_validator_set(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    vset, node_keys = proposed_validators(params["validators"])
    validators = vset.to_wire()
    previous = state.get(VALIDATORS_PENDING_KEY) or state.get(VALIDATORS_CURRENT_KEY) or {"seq": 0}
    record = {"validators": validators, "node_keys": node_keys, "seq": previous["seq"] + 1,
              "proposal": proposal, "height": ctx.height}
    state.put(VALIDATORS_PENDING_KEY, record)
    state.put(VALIDATORS_CURRENT_KEY, {"validators": validators, "seq": record["seq"], "height": ctx.height,
                                       "proposal": proposal})
    state.append_entry(VALIDATORS_HISTORY_KEY, record)
    state.emit("validator_set_change", seq=record["seq"], proposal=proposal, size=len(validators))


def _check_set_permission(state: StateView, params: dict[str, Any]) -> None:
    tx_type = text(params, "tx_type", 64)
    if tx_type not in REGISTRY.kinds:
        raise NotFound("no tx type %r" % tx_type)
    if tx_type in PROTECTED_TX_TYPES:
        raise NotPermitted("the permission of %s cannot be overridden" % tx_type)
    roles = params.get("roles")
    if roles is None:
        return
    if not isinstance(roles, list) or not all(isinstance(r, str) and r in accounts.ROLES for r in roles):
        raise InvalidValue("roles must be a list of %s, or null" % ", ".join(sorted(accounts.ROLES)))
    if len(set(roles)) != len(roles):
        raise Duplicate("roles lists a role twice")


def _apply_set_permission(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    tx_type, roles = params["tx_type"], params.get("roles")
    if roles is None:
        state.delete(accounts.permission_key(tx_type))
    else:
        state.put(accounts.permission_key(tx_type), sorted(roles))
    state.emit("permission_set", tx_type=tx_type, roles=None if roles is None else sorted(roles), proposal=proposal)


def _target_account(state: StateView, params: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    target = public_key(params, "public_key")
    account = accounts.get_account(state, target)
    if account is None:
        raise UnknownAccount("no account for key %s" % target.hex()[:16])
    return target, account


def _check_suspend_account(state: StateView, params: dict[str, Any]) -> None:
    _, account = _target_account(state, params)
    if not account.get("active"):
        raise Conflict("the account is not active")


def _apply_suspend_account(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    target, account = _target_account(state, params)
    state.put(accounts.account_key(target),
              dict(account, active=False, suspended={"proposal": proposal, "height": ctx.height}))
    state.emit("account_suspended", public_key=target, proposal=proposal)


def _check_reinstate_account(state: StateView, params: dict[str, Any]) -> None:
    _, account = _target_account(state, params)
    if account.get("active") or account.get("suspended") is None:
        raise Conflict("only a suspended account can be reinstated")


def _apply_reinstate_account(state: StateView, params: dict[str, Any], ctx: BlockContext, proposal: str) -> None:
    target, account = _target_account(state, params)
    record = {name: value for name, value in account.items() if name != "suspended"}
    state.put(accounts.account_key(target), dict(record, active=True))
    state.emit("account_reinstated", public_key=target, proposal=proposal)


ACTIONS: dict[str, Action] = {
    "add_organisation": Action(_check_add_organisation, _apply_add_organisation),
    "set_parameter": Action(_check_set_parameter, _apply_set_parameter),
    "set_validator_set": Action(_check_set_validator_set, _apply_set_validator_set),
    "set_permission": Action(_check_set_permission, _apply_set_permission),
    "suspend_account": Action(_check_suspend_account, _apply_suspend_account),
    "reinstate_account": Action(_check_reinstate_account, _apply_reinstate_account),
}


def proposal_key(proposal_id: str) -> bytes:
    return key("governance", "proposal", proposal_id)


def require_voting_admin(state: StateView, tx: Tx) -> dict[str, Any]:
    """An admin key of an active voting organisation. Raises NotPermitted."""
    account = require_admin(state, tx)
    if not require_org(state, account["org"])["voting"]:
        raise NotPermitted("organisation %r does not vote" % account["org"])
    return account


def require_open_proposal(state: StateView, proposal_id: str, ctx: BlockContext) -> dict[str, Any]:
    """Raises NotFound, Conflict (already executed) or Expired."""
    proposal = state.get(proposal_key(proposal_id))
    if proposal is None:
        raise NotFound("no proposal %r" % proposal_id)
    if proposal["status"] != "open":
        raise Conflict("proposal %r is %s" % (proposal_id, proposal["status"]))
    if ctx.time_ms >= proposal["expires_at_ms"]:
        raise Expired("proposal %r expired" % proposal_id)
    return proposal


@REGISTRY.register("gov_propose", roles=GOVERNING_ROLES)
def handle_gov_propose(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Open a proposal; the proposer's organisation counts as its first approval.

    The params are checked now (so nobody votes on nonsense) and again at execution
    (the state may have moved on). Raises NotPermitted (not a voting admin),
    MalformedTx, InvalidValue (unknown action or bad params), AlreadyExists, and
    whatever the action's check raises.
    """
    admin = require_voting_admin(state, tx)
    proposal_id = identifier(tx.body, "proposal_id")
    action_name = text(tx.body, "action", 64)
    action = ACTIONS.get(action_name)
    if action is None:
        raise InvalidValue("unknown action %r; one of %s" % (action_name, ", ".join(sorted(ACTIONS))))
    params = tx.body.get("params")
    if not isinstance(params, dict):
        raise MalformedTx("params must be a map")
    if state.exists(proposal_key(proposal_id)):
        raise AlreadyExists("proposal %r exists" % proposal_id)
    action.check(state, params)
    ttl = get_parameter(state, "proposal_ttl_ms")
    state.put(proposal_key(proposal_id), {
        "id": proposal_id, "action": action_name, "params": params, "proposer": tx.sender,
        "org": admin["org"], "approvals": [admin["org"]], "status": "open",
        "created_height": ctx.height, "expires_at_ms": ctx.time_ms + ttl, "executed_height": None,
    })
    state.append_entry(PROPOSALS_KEY, proposal_id)
    state.emit("proposal_opened", proposal=proposal_id, action=action_name, org=admin["org"])


@REGISTRY.register("gov_approve", roles=GOVERNING_ROLES)
def handle_gov_approve(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record the sender's organisation's approval (one per organisation).

    Raises NotPermitted, MalformedTx, NotFound, Conflict (executed), Expired,
    Duplicate (this organisation already approved).
    """
    admin = require_voting_admin(state, tx)
    proposal_id = identifier(tx.body, "proposal_id")
    proposal = require_open_proposal(state, proposal_id, ctx)
    if admin["org"] in proposal["approvals"]:
        raise Duplicate("organisation %r already approved %r" % (admin["org"], proposal_id))
    approvals = sorted(proposal["approvals"] + [admin["org"]])
    state.put(proposal_key(proposal_id), dict(proposal, approvals=approvals))
    state.emit("proposal_approved", proposal=proposal_id, org=admin["org"], approvals=len(approvals))


@REGISTRY.register("gov_execute", roles=GOVERNING_ROLES)
def handle_gov_execute(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Carry out a proposal once approvals from currently active voting
    organisations reach k = ⌈n × threshold⌉.

    Raises NotPermitted (sender's org does not vote), MalformedTx, NotFound,
    Conflict, Expired, NotPermitted (too few approvals), and the action's check errors.
    """
    account = sender_account(state, tx)
    if not require_org(state, account["org"])["voting"]:
        raise NotPermitted("organisation %r does not vote" % account["org"])
    proposal_id = identifier(tx.body, "proposal_id")
    proposal = require_open_proposal(state, proposal_id, ctx)
    needed, n = required_approvals(state)
    voters = set(voting_orgs(state))
    counted = [org for org in proposal["approvals"] if org in voters]
    if len(counted) < needed:
        raise NotPermitted("proposal %r has %d of %d approvals (n=%d)" % (proposal_id, len(counted), needed, n))
    action = ACTIONS[proposal["action"]]
    action.check(state, proposal["params"])
    state.put(proposal_key(proposal_id), dict(proposal, status="executed", executed_height=ctx.height))
    action.apply(state, proposal["params"], ctx, proposal_id)
    state.emit("proposal_executed", proposal=proposal_id, action=proposal["action"], approvals=len(counted))


def threshold_fraction(state: StateView) -> Fraction:
    """The approval threshold as an exact fraction (for reports)."""
    numerator, denominator = get_parameter(state, "approval_threshold")
    return Fraction(numerator, denominator)
