"""ed25519 keys and domain-separated signatures, through PyNaCl only.

Every node and observer must accept exactly the same signatures, so one
library (libsodium via PyNaCl) is the only verifier; `tests/ledger/
test_crypto_vectors.py` pins which C2SP edge cases it accepts.

Sign bytes are `b"careledger/<kind>/v1" || 0x00 || chain_id || 0x00 || payload`,
so a signature for one kind of message or one chain is never valid for another.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from ledger.errors import SignatureError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
KINDS = frozenset(
    {"tx", "proposal", "prepare", "commit", "checkpoint", "view-change",
     "new-view", "header", "attestation", "handshake"}
)
_CHAIN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def sign_bytes(kind: str, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes signed for `payload` of `kind` on `chain_id`.

    Raises SignatureError for an unknown kind or a malformed chain id.
    """
    if kind not in KINDS:
        raise SignatureError("unknown signature kind %r" % kind)
    if not isinstance(chain_id, str) or not _CHAIN_ID.match(chain_id):
        raise SignatureError("malformed chain id %r" % (chain_id,))
    return b"careledger/" + kind.encode() + b"/v1\x00" + chain_id.encode() + b"\x00" + payload


@dataclass(frozen=True)
class PrivateKey:
    """An ed25519 signing key; `seed` is the 32 secret bytes."""

    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise SignatureError("a private key seed is %d bytes" % SEED_BYTES)

    @functools.cached_property
    def _keypair(self) -> tuple[bytes, bytes]:
        # (public key, libsodium's 64-byte expanded secret key): derived once,
        # not on every signature (a validator signs several votes per height)
        return nacl.bindings.crypto_sign_seed_keypair(self.seed)

    @property
    def public_key(self) -> bytes:
        return self._keypair[0]

    def sign(self, kind: str, chain_id: str, payload: bytes) -> bytes:
        """Return the 64-byte signature of `payload` for `kind` on `chain_id`."""
        message = sign_bytes(kind, chain_id, payload)
        return nacl.bindings.crypto_sign(message, self._keypair[1])[:SIGNATURE_BYTES]

    def __repr__(self) -> str:  # never print the secret
        return "PrivateKey(public=%s)" % self.public_key.hex()


def private_key_from_seed(seed: bytes) -> PrivateKey:
    return PrivateKey(bytes(seed))


def verify_raw(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Plain ed25519 verification by libsodium: the one verifier every node uses.

    Raises SignatureError on a malformed key or signature or a failed check.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise SignatureError("a public key is %d bytes" % PUBLIC_KEY_BYTES)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError("a signature is %d bytes" % SIGNATURE_BYTES)
    try:
        # what nacl.signing.VerifyKey.verify does, without building the key object
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise SignatureError("signature does not verify") from exc


def verify(public_key: bytes, kind: str, chain_id: str, payload: bytes, signature: bytes) -> None:
    """Check `signature` over `payload` for `kind` on `chain_id`; raise SignatureError."""
    if not isinstance(payload, bytes):
        raise SignatureError("payload must be bytes")
    verify_raw(public_key, sign_bytes(kind, chain_id, payload), signature)


def is_valid(public_key: bytes, kind: str, chain_id: str, payload: bytes, signature: bytes) -> bool:
    try:
        verify(public_key, kind, chain_id, payload, signature)
    except SignatureError:
        return False
    return True


def address(public_key: bytes) -> bytes:
    """A 20-byte account address: the first 20 bytes of SHA-256(public key)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise SignatureError("a public key is %d bytes" % PUBLIC_KEY_BYTES)
    return hashlib.sha256(public_key).digest()[:20]


def is_valid_public_key(public_key: object) -> bool:
    """Whether `public_key` is a usable ed25519 public key: 32 bytes encoding a
    point on the curve, in the prime-order subgroup and not of small order
    (libsodium's `crypto_core_ed25519_is_valid_point`). A key failing this can
    never produce a signature every node accepts, so governance refuses it as a
    validator or node key."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(public_key))
