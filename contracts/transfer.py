"""A minimal balance ledger used by the node runtime until the healthcare
contracts land: `transfer` moves integer cents between accounts."""

from __future__ import annotations

import functools

from ledger.types import Tx

from contracts.engine import REGISTRY, BlockContext
from contracts.errors import InsufficientFunds, InvalidValue
from contracts.state import StateView, key

MAX_AMOUNT = 2**62


@functools.lru_cache(maxsize=16384, typed=True)  # hot: read for every transaction
def balance_key(public_key: bytes) -> bytes:
    return key("balance", public_key)


@REGISTRY.register("transfer", roles={"payer", "provider", "auditor", "patient_agent"})
def handle_transfer(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Move `amount` cents from the sender to `to`.

    Raises InvalidValue (bad recipient or amount) or InsufficientFunds.
    """
    to, amount = tx.body.get("to"), tx.body.get("amount")
    if not isinstance(to, bytes) or len(to) != 32:
        raise InvalidValue("recipient must be a 32-byte public key")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidValue("amount must be a positive integer of cents")
    sender_key, recipient_key = balance_key(tx.sender), balance_key(to)
    have = state.get(sender_key, 0)
    if have < amount:
        raise InsufficientFunds("balance %d < %d" % (have, amount))
    state.put(sender_key, have - amount)
    state.put(recipient_key, state.get(recipient_key, 0) + amount)
    state.emit("transfer", sender=tx.sender, to=to, amount=amount)
