"""Accounts: who may sign transactions, in which role, for which organisation.

An account is keyed by its ed25519 public key. Governance creates, rotates and
suspends them; the engine reads them for every transaction. Records:

- `account/<pubkey hex>` → {"org": str, "role": str, "active": bool,
  "delegated_by": hex | None, "rights": [tx types] | None}
- `nonce/<pubkey hex>` → last used nonce (int; 0 = none used)
"""

from __future__ import annotations

from typing import Any

from contracts.errors import InvalidValue, UnknownAccount
from contracts.state import StateView, key

ROLES = frozenset({"payer", "provider", "auditor", "regulator", "patient_agent"})


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


def put_account(state: StateView, public_key: bytes, org: str, role: str, **extra: Any) -> None:
    """Create or replace an account. Raises InvalidValue for an unknown role or bad key."""
    if role not in ROLES:
        raise InvalidValue("unknown role %r" % role)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise InvalidValue("an account key is 32 bytes")
    record = {"org": org, "role": role, "active": True}
    record.update(extra)
    state.put(account_key(public_key), record)


def next_nonce(state: StateView, public_key: bytes) -> int:
    return state.get(key("nonce", public_key), 0) + 1


def consume_nonce(state: StateView, public_key: bytes) -> None:
    state.put(key("nonce", public_key), next_nonce(state, public_key))
