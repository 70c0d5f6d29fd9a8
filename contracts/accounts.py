"""Accounts: who may sign transactions, in which role, for which organisation.

An account is keyed by its ed25519 public key. Governance creates, rotates and
suspends them; the engine reads them for every transaction. Records:

- `account/<pubkey hex>` → {"org": str, "role": str, "active": bool,
  "delegated_by": hex | None, "rights": [tx types] | None}
- `nonce/<pubkey hex>` → last used nonce (int; 0 = none used)
"""

from __future__ import annotations

import functools
from typing import Any

from contracts.errors import BadNonce, InvalidValue, NotPermitted, UnknownAccount
from contracts.state import StateView, key

ROLES = frozenset({"payer", "provider", "auditor", "regulator", "patient_agent"})


@functools.lru_cache(maxsize=16384, typed=True)  # hot: read for every transaction
def account_key(public_key: bytes) -> bytes:
    return key("account", public_key)


def get_account(state: StateView, public_key: bytes) -> dict[str, Any] | None:
    return state.get(account_key(public_key))


def require_active(state: StateView, public_key: bytes) -> dict[str, Any]:
    """The sender's account. Raises UnknownAccount if missing or suspended."""
    account = get_account(state, public_key)
    if account is None or not account.get("active"):
        raise UnknownAccount("no active account for key %s" % public_key.hex()[:16])
    return account


def require_active_readonly(state: StateView, public_key: bytes) -> dict[str, Any]:
    """`require_active` for a caller that only reads the record (the engine's
    check of every sender): not copied, so it must not be mutated."""
    account = state.get_readonly(account_key(public_key))
    if account is None or not account.get("active"):
        raise UnknownAccount("no active account for key %s" % public_key.hex()[:16])
    return account


def put_account(state: StateView, public_key: bytes, org: str, role: str, **extra: Any) -> None:
    """Create or replace an account. Raises InvalidValue for an unknown role or bad key."""
    if role not in ROLES:
        raise InvalidValue("unknown role %r" % role)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise InvalidValue("an account key is 32 bytes")
    record = {"org": org, "role": role, "active": True}
    record.update(extra)
    state.put(account_key(public_key), record)


@functools.lru_cache(maxsize=16384, typed=True)  # hot: read for every transaction
def nonce_key(public_key: bytes) -> bytes:
    return key("nonce", public_key)


def next_nonce(state: StateView, public_key: bytes) -> int:
    return state.get(nonce_key(public_key), 0) + 1


def consume_nonce(state: StateView, public_key: bytes) -> None:
    state.put(nonce_key(public_key), next_nonce(state, public_key))


def use_nonce(state: StateView, public_key: bytes, nonce: int) -> None:
    """Record `nonce` as used (the engine's check of every sender).

    Raises BadNonce unless it is exactly `next_nonce` (replays and gaps fail).
    """
    k = nonce_key(public_key)
    expected = state.get_readonly(k, 0) + 1
    if nonce != expected:
        raise BadNonce("nonce %d, expected %d" % (nonce, expected))
    state.put(k, expected)


# -- permission hooks the engine calls for every transaction (governance sets them)


@functools.lru_cache(maxsize=1024, typed=True)  # hot: read for every transaction
def permission_key(tx_type: str) -> bytes:
    """`governance/permission/<tx type>` → sorted role list overriding the registry."""
    return key("governance", "permission", tx_type)


def permitted_roles(state: StateView, tx_type: str, default: frozenset[str]) -> frozenset[str]:
    """The roles that may send `tx_type`: an on-ledger override set by a governance
    proposal wins over the registry's default table."""
    override = state.get_readonly(permission_key(tx_type))
    if override is None:
        return default
    return frozenset(override)


def check_rights(account: dict[str, Any], tx_type: str) -> None:
    """Enforce a staff key's delegated allow-list. An account whose `rights` is None
    may send every type its role permits; otherwise only the listed types.

    Raises NotPermitted.
    """
    rights = account.get("rights")
    if rights is not None and tx_type not in rights:
        raise NotPermitted("this key is not delegated the right to send %s" % tx_type)
