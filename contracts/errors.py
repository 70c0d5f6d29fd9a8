"""Typed contract errors. A handler raises one of these before its first
write; the engine records `code` and message in the receipt and rolls the
transaction back. Anything else escaping a handler is a bug and halts the node.
"""


class ContractError(Exception):
    """Root of every error a transaction can fail with."""

    code = "contract_error"


class MalformedTx(ContractError):
    code = "malformed"


class UnknownTxType(ContractError):
    code = "unknown_tx_type"


class BadNonce(ContractError):
    code = "bad_nonce"


class WrongChain(ContractError):
    code = "wrong_chain"


class NotPermitted(ContractError):
    code = "not_permitted"


class UnknownAccount(ContractError):
    code = "unknown_account"


class NotFound(ContractError):
    code = "not_found"


class AlreadyExists(ContractError):
    code = "already_exists"


class InvalidValue(ContractError):
    code = "invalid_value"


class Expired(ContractError):
    code = "expired"


class Revoked(ContractError):
    code = "revoked"


class Duplicate(ContractError):
    code = "duplicate"


class InsufficientFunds(ContractError):
    code = "insufficient_funds"


class Conflict(ContractError):
    code = "conflict"


class NotYetValid(ContractError):
    """A credential or grant whose validity period has not started."""

    code = "not_yet_valid"
