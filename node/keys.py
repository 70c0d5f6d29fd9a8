"""Key generation and key files: the I/O half of `ledger.crypto`."""

from __future__ import annotations

import json
import os

from ledger.crypto import SEED_BYTES, PrivateKey
from ledger.errors import SignatureError


def generate_private_key() -> PrivateKey:
    """A fresh key from the OS's randomness ."""
    return PrivateKey(os.urandom(SEED_BYTES))


def save_key_file(path: str, key: PrivateKey) -> None:
    """Write a key file readable only by its owner (CometBFT-style JSON)."""
    body = {"type": "ed25519", "public_key": key.public_key.hex(), "seed": key.seed.hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(body, handle, indent=2)
        handle.write("\n")


def load_key_file(path: str) -> PrivateKey:
    """Read a key file written by `save_key_file`.

    Raises SignatureError if the file is malformed or its public key does not
    match its seed.
    """
    try:
        with open(path) as handle:
            body = json.load(handle)
        key = PrivateKey(bytes.fromhex(body["seed"]))
        public = bytes.fromhex(body["public_key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError("malformed key file %s: %s" % (path, exc)) from exc
    if body.get("type") != "ed25519" or key.public_key != public:
        raise SignatureError("key file %s: public key does not match seed" % path)
    return key
