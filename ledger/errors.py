"""The kernel's typed errors: one root, one subclass per kind of bad input.

Anything raised from `ledger/` that does not derive from `LedgerError` is a bug.
"""


class LedgerError(Exception):
    """Root of every error the kernel raises on bad input."""


class DecodeError(LedgerError):
    """Bytes are not a canonical encoding of a value we accept."""


class EncodeError(LedgerError):
    """A value cannot be encoded canonically (float, oversize, unknown type)."""


class SignatureError(LedgerError):
    """A signature, public key or key file is malformed or does not verify."""


class ProofError(LedgerError):
    """A Merkle or state proof is malformed or does not match its root."""


class ValidationError(LedgerError):
    """A well-formed record breaks a rule (wrong length, out of range, oversize)."""


class StorageError(LedgerError):
    """The key/value store refused an operation or holds corrupt data."""
