"""Incentive tokens: a fungible balance ledger for patient-engagement rewards.

Why: value-based contracts reward outcomes such as completed screenings; paying part of
that reward to the patient, as credit against a co-pay, needs a ledger that no single
party can inflate. Tokens are therefore created only by rules the network agreed on
(governance parameters) and only when a triggering record exists, and they leave
circulation only through a recorded redemption.

Rules:

* Mint only by rule. (a) Engagement: a provider records a completed event (e.g. a
  screening) for a patient pseudonym; the governance parameter `token_engagement_rules`
  ({event kind: tokens}) sets the amount credited to the patient's pseudonymous wallet.
  One reward per patient, event kind and date. (b) Settlement: the governance parameter
  `token_settlement_rule_bps` mints ⌊amount due × bps / 10,000⌋ tokens (floor: a reward
  never exceeds the rule) once for a settlement with a positive amount due, into a wallet
  the settlement's payer names.
* Transfer between wallets (the sending key is the wallet).
* Redeem as co-pay credit: burns the tokens and records the redemption (provider, claim).
* Conservation: Σ balances = minted − redeemed, tracked in `token/supply`.

Wallets are 32-byte public keys held through `patient_agent` accounts: the ledger never
learns who the patient is.

State layout:

- `token/balance/<wallet hex>` → int (absent = 0)
- `token/supply` → {"minted": int, "redeemed": int}
- `token/engagement/<patient>/<event kind>/<yyyymmdd>` → {"wallet", "amount", "provider_org",
  "evidence", "height"}
- `token/settlement_mint/<settlement id>` → {"wallet", "amount", "height"}
- `token/redemption/<redemption id>` → {"wallet", "amount", "provider_org", "claim_id", "height"}

Tx types (body fields; roles):

- `engagement_record` {patient, wallet, event_kind, event_date, evidence} — provider.
- `token_settlement_mint` {settlement_id, wallet} — payer (the settlement's payer).
- `token_transfer` {to, amount} — patient_agent.
- `token_redeem` {redemption_id, amount, provider_org, claim_id} — patient_agent.
"""

from __future__ import annotations

from typing import Any

from ledger.types import Tx

from contracts import governance
from contracts.engine import REGISTRY, BlockContext
from contracts.payments.errors import (
    AlreadySettledError,
    DuplicateEventError,
    InsufficientTokensError,
    InvalidInputError,
    InvalidParameterError,
    UnknownProgramError,
)
from contracts.payments.programs import (
    BPS,
    get_program,
    get_settlement,
    read_date,
    read_hash,
    read_id,
    read_int,
    require_payer,
    sender_org,
)
from contracts.state import StateView, key

ENGAGEMENT_RULES_PARAMETER = "token_engagement_rules"
SETTLEMENT_RULE_PARAMETER = "token_settlement_rule_bps"
MAX_TOKENS = 2**62
SUPPLY_KEY = key("token", "supply")


def balance_key(wallet: bytes) -> bytes:
    return key("token", "balance", wallet)


def balance_of(state: StateView, wallet: bytes) -> int:
    return state.get(balance_key(wallet), 0)


def supply(state: StateView) -> dict[str, int]:
    return state.get(SUPPLY_KEY, {"minted": 0, "redeemed": 0})


def read_wallet(body: dict[str, Any], name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInputError("%s must be a 32-byte wallet key" % name)
    return value


def read_amount(body: dict[str, Any]) -> int:
    """A positive whole number of tokens. Raises InvalidInputError."""
    return read_int(body, "amount", 1, MAX_TOKENS)


def mint(state: StateView, wallet: bytes, amount: int, source: str) -> None:
    """Credit `wallet` and the minted total. Callers have validated the rule and amount."""
    totals = supply(state)
    state.put(balance_key(wallet), balance_of(state, wallet) + amount)
    state.put(SUPPLY_KEY, {"minted": totals["minted"] + amount, "redeemed": totals["redeemed"]})
    state.emit("tokens_minted", wallet=wallet, amount=amount, source=source)


def engagement_rules(state: StateView) -> dict[str, int]:
    """The governance-set reward per event kind. Raises InvalidParameterError if malformed."""
    rules = governance.get_parameter(state, ENGAGEMENT_RULES_PARAMETER)
    if rules is None:
        return {}
    if not isinstance(rules, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_TOKENS
            for k, v in rules.items()):
        raise InvalidParameterError("%s must map event kinds to positive token amounts" % ENGAGEMENT_RULES_PARAMETER)
    return rules


@REGISTRY.register("engagement_record", roles={"provider"})
def handle_engagement_record(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """A provider records a completed engagement event; the rule's amount is minted to
    the patient's wallet.

    Raises InvalidInputError (fields, an event kind with no rule), InvalidParameterError
    (malformed rule table), DuplicateEventError (event already rewarded).
    """
    body = tx.body
    patient = read_id(body, "patient")
    wallet = read_wallet(body, "wallet")
    event_kind = read_id(body, "event_kind")
    event_date = read_date(body, "event_date")
    evidence = read_hash(body.get("evidence"), "evidence")
    rules = engagement_rules(state)
    if event_kind not in rules:
        raise InvalidInputError("no engagement rule rewards %s" % event_kind)
    record_key = key("token", "engagement", patient, event_kind, str(event_date))
    if state.exists(record_key):
        raise DuplicateEventError("%s on %d for this patient was already rewarded" % (event_kind, event_date))
    amount = rules[event_kind]
    state.put(record_key, {"wallet": wallet, "amount": amount, "provider_org": sender_org(state, tx),
                           "evidence": evidence, "height": ctx.height})
    mint(state, wallet, amount, "engagement:" + event_kind)


@REGISTRY.register("token_settlement_mint", roles={"payer"})
def handle_token_settlement_mint(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Mint the settlement rule's tokens for a settlement with a positive amount due.

    Raises InvalidInputError (no rule, nothing due, bad wallet), InvalidParameterError
    (malformed rule), UnknownProgramError, NotAPartyError (not the settlement's payer),
    AlreadySettledError (already minted for this settlement).
    """
    settlement = get_settlement(state, tx.body.get("settlement_id"))
    wallet = read_wallet(tx.body, "wallet")
    require_payer(state, tx, get_program(state, settlement["program_id"]))
    rule = governance.get_parameter(state, SETTLEMENT_RULE_PARAMETER)
    if rule is None:
        raise InvalidInputError("no settlement token rule is set")
    if isinstance(rule, bool) or not isinstance(rule, int) or not 0 < rule <= BPS:
        raise InvalidParameterError("%s must be 1..10,000 basis points" % SETTLEMENT_RULE_PARAMETER)
    amount = max(settlement["amount_due_cents"], 0) * rule // BPS
    if amount <= 0:
        raise InvalidInputError("settlement %s earns no tokens" % settlement["id"])
    record_key = key("token", "settlement_mint", settlement["id"])
    if state.exists(record_key):
        raise AlreadySettledError("tokens were already minted for %s" % settlement["id"])
    state.put(record_key, {"wallet": wallet, "amount": amount, "height": ctx.height})
    mint(state, wallet, amount, "settlement:" + settlement["id"])


@REGISTRY.register("token_transfer", roles={"patient_agent"})
def handle_token_transfer(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Move tokens from the sender's wallet to `to`.

    Raises InvalidInputError (bad recipient or amount) or InsufficientTokensError.
    """
    to = read_wallet(tx.body, "to")
    amount = read_amount(tx.body)
    have = balance_of(state, tx.sender)
    if have < amount:
        raise InsufficientTokensError("balance %d < %d" % (have, amount))
    state.put(balance_key(tx.sender), have - amount)
    state.put(balance_key(to), balance_of(state, to) + amount)
    state.emit("tokens_transferred", sender=tx.sender, to=to, amount=amount)


@REGISTRY.register("token_redeem", roles={"patient_agent"})
def handle_token_redeem(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Burn tokens from the sender's wallet as co-pay credit at a provider, with a record.

    Raises InvalidInputError, UnknownProgramError (provider org not on the ledger),
    DuplicateEventError (redemption id used), InsufficientTokensError.
    """
    body = tx.body
    redemption_id = read_id(body, "redemption_id")
    amount = read_amount(body)
    provider_org = read_id(body, "provider_org")
    claim_id = read_id(body, "claim_id")
    if not state.exists(key("org", provider_org)):
        raise UnknownProgramError("provider organisation %s is not on the ledger" % provider_org)
    record_key = key("token", "redemption", redemption_id)
    if state.exists(record_key):
        raise DuplicateEventError("redemption %s already recorded" % redemption_id)
    have = balance_of(state, tx.sender)
    if have < amount:
        raise InsufficientTokensError("balance %d < %d" % (have, amount))
    totals = supply(state)
    state.put(balance_key(tx.sender), have - amount)
    state.put(SUPPLY_KEY, {"minted": totals["minted"], "redeemed": totals["redeemed"] + amount})
    state.put(record_key, {"wallet": tx.sender, "amount": amount, "provider_org": provider_org,
                           "claim_id": claim_id, "height": ctx.height})
    state.emit("tokens_redeemed", wallet=tx.sender, amount=amount, provider_org=provider_org, claim_id=claim_id)
