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
    """An input the rule needs was not supplied: a ledger record a settlement must cite
    (participant revenue, a disaster determination), or an MSR below CMS's scale."""

    code = "missing_input"


class AmountOutOfRangeError(InvalidInputError):
    """A money amount does not fit in a signed 64-bit count of cents."""


class ReconciliationMismatchError(PaymentError):
    """A true-up pairs settlements that do not belong together (other ACO, year, stage)."""


# -- Contracts II: program contracts, bundles, capitation, disputes, tokens ----------------
# Each of these carries its own receipt `code`, so a client can tell why a payment
# transaction failed without parsing the message.


class InvalidSharesError(InvalidParameterError):
    """Participant allocation shares are not positive basis points summing to 10,000."""

    code = "invalid_shares"


class UnknownProgramError(PaymentError):
    """A transaction names a program (or a settlement, episode, dispute) not on the ledger."""

    code = "unknown_program"


class ProgramStateError(PaymentError):
    """The program, episode or dispute is not in the state the transaction needs
    (not yet active, already signed, interim after final, milestone out of order)."""

    code = "program_state"


class AlreadySettledError(PaymentError):
    """The same program/period/stage was already settled, disbursed or adjusted."""

    code = "already_settled"


class NotAPartyError(PaymentError):
    """The sender's organisation is not a party to the program or settlement it acts on."""

    code = "not_a_party"


class StaleReferenceError(InvalidInputError):
    """An input's ledger reference names no record, or a record whose hash differs."""

    code = "stale_reference"


class InsufficientTokensError(PaymentError):
    """A token transfer or redemption exceeds the sender's balance."""

    code = "insufficient_tokens"


class DuplicateEventError(PaymentError):
    """The same engagement event was already rewarded."""

    code = "duplicate_event"


class MismatchedReferenceError(InvalidInputError):
    """A cited ledger record exists and is current but belongs to another program, year
    or period, is of the wrong kind, or is not final yet (an open total cost of care)."""

    code = "mismatched_reference"


class SubmittedFiguresError(InvalidInputError):
    """A settlement body carries MSSP figures (benchmark, expenditures, assigned count,
    quality, participant revenue, MSR, disaster adjustment, below-MSR eligibility) typed
    in by the submitter instead of citing the ledger records they come from."""

    code = "submitted_figures"
