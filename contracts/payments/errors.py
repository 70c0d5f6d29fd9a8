"""Typed errors of the payment contracts: one root, one subclass per kind of bad input.

`PaymentError` derives from the contracts' root `ContractError`, so a failed
settlement transaction records its code in the receipt like any other. Anything
raised from `contracts/payments/` that does not derive from `PaymentError` is a bug.
"""

from contracts.errors import ContractError


class PaymentError(ContractError):
    """Root of every error the payment contracts raise on bad input."""

    code = "payment_error"


class InvalidParameterError(PaymentError):
    """Program parameters break a rule (a rate above 1, a negative limit, a bad option)."""


class UnknownTrackError(InvalidParameterError):
    """A track or level name that the program does not define."""


class InvalidInputError(PaymentError):
    """Settlement inputs break a rule (negative beneficiaries, non-positive benchmark)."""


class MissingInputError(InvalidInputError):
    """An input the rule needs was not supplied (e.g. the MSR of an ACO below 5,000)."""


class AmountOutOfRangeError(InvalidInputError):
    """A money amount does not fit in a signed 64-bit count of cents."""


class ReconciliationMismatchError(PaymentError):
    """A true-up pairs settlements that do not belong together (other ACO, year, stage)."""
