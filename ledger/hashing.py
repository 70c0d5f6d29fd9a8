"""The one hash function of the ledger (SHA-256) and fixed-size hash checks."""

import hashlib

from ledger.errors import ValidationError

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)


_sha256 = hashlib.sha256  # bound once: `sha256` is called for every tx, leaf and node


def sha256(data: bytes) -> bytes:
    return _sha256(data).digest()


def check_hash(value: object, what: str) -> bytes:
    """Return `value` if it is a 32-byte hash; raise ValidationError otherwise."""
    if not isinstance(value, bytes) or len(value) != HASH_BYTES:
        raise ValidationError("%s must be a %d-byte hash" % (what, HASH_BYTES))
    return value
