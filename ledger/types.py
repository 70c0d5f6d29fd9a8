"""The ledger's records: transactions, headers, blocks, validator sets, votes
and commit certificates.

Each record is a frozen dataclass with `to_wire()` (a canonical list) and
`from_wire()` (validates every field and raises DecodeError or
ValidationError). Hashes are SHA-256 of the canonical encoding.

Header `h` commits to the *results* of block `h-1` (`app_hash`,
`receipts_root`, as CometBFT's LastResults), because a block is executed after
it is committed; `history_root` is the RFC 6962 root of the hashes of blocks
1..h-1 and `history_size` is h-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ledger import codec, merkle
from ledger.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, is_valid, verify
from ledger.errors import DecodeError, LedgerError, SignatureError, ValidationError
from ledger.hashing import check_hash, sha256

MAX_TX_BYTES = 64 * 1024
MAX_TX_TYPE_LENGTH = 64
MAX_TXS_PER_BLOCK = 10_000
MAX_VALIDATORS = 128
U64_MAX = 2**64 - 1


def _int(value: Any, what: str, low: int = 0, high: int = U64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError("%s must be an integer in [%d, %d]" % (what, low, high))
    return value


def _bytes(value: Any, what: str, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise ValidationError("%s must be %d bytes" % (what, length))
    return value


def _str(value: Any, what: str, max_length: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise ValidationError("%s must be a string of 1..%d characters" % (what, max_length))
    return value


def _list(value: Any, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise DecodeError("%s must be a list%s" % (what, "" if length is None else " of %d" % length))
    return value


# --------------------------------------------------------------------- Tx

_SIGNATURE_WIRE_BYTES = 2 + SIGNATURE_BYTES  # bin8 header (0xc4, length) + the signature


@dataclass(frozen=True)
class Tx:
    """A client-signed transaction.

    `sender` is the signer's ed25519 public key; `nonce` orders one sender's
    transactions; `type` names the contract handler; `body` is a canonical map.
    """

    chain_id: str
    sender: bytes
    nonce: int
    type: str
    body: dict[str, Any]
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        return self._signing_payload

    @cached_property
    def _signing_payload(self) -> bytes:
        return codec.encode([self.sender, self.nonce, self.type, self.body])

    def signed(self, key: Any) -> "Tx":
        """A copy signed by `key` (a `ledger.crypto.PrivateKey`)."""
        signature = key.sign("tx", self.chain_id, self.signing_payload())
        return Tx(self.chain_id, self.sender, self.nonce, self.type, self.body, signature)

    def to_wire(self) -> list[Any]:
        return [self.chain_id, self.sender, self.nonce, self.type, self.body, self.signature]

    @cached_property
    def _encoded(self) -> bytes:
        # A Tx is immutable, so its canonical bytes and hash are computed once.
        return codec.encode(self.to_wire())

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def hash(self) -> bytes:
        return sha256(self._encoded)

    def verify_signature(self) -> None:
        """Raise SignatureError unless `signature` is the sender's over this tx."""
        verify(self.sender, "tx", self.chain_id, self.signing_payload(), self.signature)

    @classmethod
    def from_wire(cls, wire: Any) -> "Tx":
        """A tx from its wire list; raises DecodeError or ValidationError.

        When `KNOWN_TXS` holds a decoded tx whose wire is identical to `wire`
        (same types, values and key order, hence the same canonical bytes),
        that tx is returned: its bytes, hash and signing payload are known.
        """
        known = KNOWN_TXS.find(wire)
        if known is not None:
            return known
        chain_id, sender, nonce, tx_type, body, signature = _list(wire, "tx", 6)
        if not isinstance(body, dict):
            raise ValidationError("tx body must be a map")
        return cls(
            _str(chain_id, "chain id", 64),
            _bytes(sender, "sender", PUBLIC_KEY_BYTES),
            _int(nonce, "nonce"),
            _str(tx_type, "tx type", MAX_TX_TYPE_LENGTH),
            body,
            _bytes(signature, "signature", SIGNATURE_BYTES),
        )

    @classmethod
    def decode(cls, data: bytes, digest: bytes | None = None) -> "Tx":
        """Decode and validate a tx's bytes (not its signature).

        `digest`: `sha256(data)` when the caller computed it already (kept as
        the tx's hash). Tries `_decode_direct` first and takes the reference
        path (`_decode_reference`) for whatever it does not accept, so results
        and errors are the reference's (tests/ledger/test_types.py checks both).
        Raises DecodeError or ValidationError; oversize input is refused before parsing.
        """
        tx = cls._decode_direct(data) if type(data) is bytes else None
        if tx is None:
            tx = cls._decode_reference(data)
        if digest is not None:
            tx.__dict__["hash"] = digest
        return tx

    @classmethod
    def _decode_reference(cls, data: bytes) -> "Tx":
        """`decode` by the generic path: canonical decode, then `from_wire`.

        Raises DecodeError or ValidationError; oversize input is refused before parsing.
        """
        if isinstance(data, (bytes, bytearray)) and len(data) > MAX_TX_BYTES:
            raise DecodeError("tx is %d bytes, limit %d" % (len(data), MAX_TX_BYTES))
        tx = cls.from_wire(codec.decode(data, max_bytes=MAX_TX_BYTES))
        # `data` decoded canonically, so it IS `codec.encode(tx.to_wire())`:
        # 0x96 (an array of 6) ‖ chain id ‖ sender ‖ nonce ‖ type ‖ body ‖
        # signature (0xc4 0x40 + 64 bytes), each in canonical form. Keep it, and
        # the signing payload `encode([sender, nonce, type, body])`, which is
        # 0x94 (an array of 4) ‖ the same middle bytes, instead of re-encoding.
        raw = bytes(data)
        start = 1 + len(codec.encode(tx.chain_id))
        tx.__dict__["_encoded"] = raw
        tx.__dict__["_signing_payload"] = b"\x94" + raw[start:len(raw) - _SIGNATURE_WIRE_BYTES]
        return tx

    @classmethod
    def _decode_direct(cls, data: bytes) -> "Tx | None":
        """`decode` of the usual tx, or None: the reference path then decides.

        Accepts only what the reference accepts, as the same Tx: msgpack's
        parse (`codec.parse`, as `codec.decode` parses) must give exactly the
        six fields `from_wire` accepts, the body must pack canonically as it
        stands, and packing the parsed array as it stands must give `data`
        back, which is `codec.decode`'s canonical-form test. It skips the
        generic walk over the whole array, `from_wire`'s checks and its
        `KNOWN_TXS` lookup (a miss for any tx not already pooled), and the
        dataclass `__init__`. Raises nothing.
        """
        if len(data) > MAX_TX_BYTES:
            return None
        try:
            wire = codec.parse(data)
        except Exception:  # noqa: BLE001 — not swallowed: the reference path parses again and raises
            return None
        if type(wire) is not list or len(wire) != 6:
            return None
        chain_id, sender, nonce, tx_type, body, signature = wire
        if not (type(chain_id) is str and 0 < len(chain_id) <= 64
                and type(sender) is bytes and len(sender) == PUBLIC_KEY_BYTES
                and type(nonce) is int and 0 <= nonce <= U64_MAX
                and type(tx_type) is str and 0 < len(tx_type) <= MAX_TX_TYPE_LENGTH
                and type(body) is dict
                and type(signature) is bytes and len(signature) == SIGNATURE_BYTES):
            return None
        if not codec.packs_canonically(body, 1) or codec.pack_as_is(wire) != data:
            return None
        # the signing payload: 0x94 ‖ the bytes between the chain id and the
        # signature (see `_decode_reference`); a str of n UTF-8 bytes packs
        # with a 1-byte header up to 31 bytes, 2 up to 255, 3 beyond
        size = len(chain_id) if chain_id.isascii() else len(chain_id.encode())
        start = 1 + size + (1 if size < 32 else 2 if size < 256 else 3)
        # the fields are checked: fill the instance as the frozen dataclass's
        # `__init__` would (it has no `__post_init__`), without its per-field
        # `object.__setattr__`
        tx = object.__new__(cls)
        fields = tx.__dict__
        fields["chain_id"] = chain_id
        fields["sender"] = sender
        fields["nonce"] = nonce
        fields["type"] = tx_type
        fields["body"] = body
        fields["signature"] = signature
        fields["_encoded"] = data
        fields["_signing_payload"] = b"\x94" + data[start:len(data) - _SIGNATURE_WIRE_BYTES]
        return tx


class KnownTxs:
    """Decoded transactions a node holds (its mempool), found again by wire.

    A replica decodes every transaction of a proposal although its mempool
    decoded most of them already, with their canonical bytes. `find(wire)`
    looks up a tx registered under the same signature and returns it only if
    `wire` is *identical* to its wire: the same type at every position, equal
    values, dict keys in the same order. Canonical encoding is a function of
    exactly those, so the wire's bytes are the registered tx's bytes, and the
    registered tx is what `Tx.from_wire(wire)` would build, with its bytes,
    hash and signing payload already computed. Anything else is a miss.

    Bounded (oldest dropped first); only the owner of a registration removes it.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self._by_signature: dict[bytes, Tx] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._by_signature)

    def add(self, tx: Tx) -> None:
        """Register `tx` (it should come from `Tx.decode`, so its bytes are known)."""
        known = self._by_signature
        known[tx.signature] = tx
        while len(known) > self.capacity:
            del known[next(iter(known))]

    def discard(self, tx: Tx) -> None:
        if self._by_signature.get(tx.signature) is tx:
            del self._by_signature[tx.signature]

    def find(self, wire: Any) -> "Tx | None":
        if not self._by_signature or type(wire) is not list or len(wire) != 6:
            return None
        chain_id, sender, nonce, tx_type, body, signature = wire
        if type(signature) is not bytes:
            return None
        known = self._by_signature.get(signature)
        # `_identical(wire, known.to_wire())` unrolled for a tx's wire (the
        # signature is equal by the lookup). A registered tx is decoded, so its
        # fields have exactly these types; one that has not is missed, which is safe.
        if (known is None
                or type(chain_id) is not str or chain_id != known.chain_id
                or type(sender) is not bytes or sender != known.sender
                or type(nonce) is not int or nonce != known.nonce
                or type(tx_type) is not str or tx_type != known.type):
            return None
        known_body = known.body
        if type(body) is not dict or type(known_body) is not dict or len(body) != len(known_body):
            return None
        # the body map as `_identical` compares it, calling it only for nested containers
        for (key, item), (known_key, known_item) in zip(body.items(), known_body.items()):
            kind = type(item)
            if type(key) is not type(known_key) or key != known_key or kind is not type(known_item):
                return None
            if kind is dict or kind is list or kind is tuple:
                if not _identical(item, known_item):
                    return None
            elif item != known_item:
                return None
        self.hits += 1
        return known


def _identical(a: Any, b: Any) -> bool:
    """Same types, values and dict key order all the way down (so the same
    canonical bytes); stricter than ==, which equates 1, 1.0 and True."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    if kind is dict:
        if len(a) != len(b):
            return False
        for (key_a, item_a), (key_b, item_b) in zip(a.items(), b.items()):
            if type(key_a) is not type(key_b) or key_a != key_b or not _identical(item_a, item_b):
                return False
        return True
    return a == b


KNOWN_TXS = KnownTxs()  # filled by the node's mempool; empty (no effect) elsewhere


# ------------------------------------------------------------ validators


@dataclass(frozen=True)
class Validator:
    name: str
    public_key: bytes

    def to_wire(self) -> list[Any]:
        return [self.name, self.public_key]

    @classmethod
    def from_wire(cls, wire: Any) -> "Validator":
        name, public_key = _list(wire, "validator", 2)
        return cls(_str(name, "validator name", 64), _bytes(public_key, "validator key", PUBLIC_KEY_BYTES))


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered set of equally weighted validators (order picks primaries).

    f = ⌊(n−1)/3⌋ faults are tolerated; a quorum is 2f+1 when n = 3f+1 and
    n − f otherwise, so any two quorums share at least f+1 validators.
    """

    validators: tuple[Validator, ...]

    def __post_init__(self) -> None:
        keys = [v.public_key for v in self.validators]
        if not 1 <= len(keys) <= MAX_VALIDATORS:
            raise ValidationError("a validator set has 1..%d members" % MAX_VALIDATORS)
        if len(set(keys)) != len(keys):
            raise ValidationError("a validator key appears twice")

    @property
    def size(self) -> int:
        return len(self.validators)

    @property
    def max_faulty(self) -> int:
        return (self.size - 1) // 3

    @property
    def quorum(self) -> int:
        n, f = self.size, self.max_faulty
        return 2 * f + 1 if n == 3 * f + 1 else n - f

    def index_of(self, public_key: bytes) -> int | None:
        for index, validator in enumerate(self.validators):
            if validator.public_key == public_key:
                return index
        return None

    def primary(self, view: int) -> Validator:
        return self.validators[view % self.size]

    def to_wire(self) -> list[Any]:
        return [v.to_wire() for v in self.validators]

    @property
    def hash(self) -> bytes:
        return sha256(codec.encode(self.to_wire()))

    @classmethod
    def from_wire(cls, wire: Any) -> "ValidatorSet":
        return cls(tuple(Validator.from_wire(item) for item in _list(wire, "validator set")))


# ---------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    view: int
    time: int  # milliseconds since the Unix epoch, chosen by the proposer
    prev_hash: bytes
    tx_root: bytes
    receipts_root: bytes  # receipts of block height-1
    app_hash: bytes  # state root after block height-1
    validators_hash: bytes
    next_validators_hash: bytes
    history_root: bytes  # RFC 6962 root over hashes of blocks 1..height-1
    history_size: int
    proposer: bytes

    def to_wire(self) -> list[Any]:
        return [
            self.chain_id, self.height, self.view, self.time, self.prev_hash,
            self.tx_root, self.receipts_root, self.app_hash, self.validators_hash,
            self.next_validators_hash, self.history_root, self.history_size, self.proposer,
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        # computed once: a Header is frozen and its fields are str, int and bytes
        return sha256(self.encode())

    @classmethod
    def from_wire(cls, wire: Any) -> "Header":
        w = _list(wire, "header", 13)
        height = _int(w[1], "height", 1)
        history_size = _int(w[11], "history size")
        if history_size != height - 1:
            raise ValidationError("history size must be height - 1")
        return cls(
            _str(w[0], "chain id", 64), height, _int(w[2], "view"), _int(w[3], "time"),
            check_hash(w[4], "prev hash"), check_hash(w[5], "tx root"),
            check_hash(w[6], "receipts root"), check_hash(w[7], "app hash"),
            check_hash(w[8], "validators hash"), check_hash(w[9], "next validators hash"),
            check_hash(w[10], "history root"), history_size,
            _bytes(w[12], "proposer", PUBLIC_KEY_BYTES),
        )

    @classmethod
    def decode(cls, data: bytes) -> "Header":
        return cls.from_wire(codec.decode(data))


# ----------------------------------------------------------------- block


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Tx, ...] = field(default_factory=tuple)

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_wire(self) -> list[Any]:
        return [self.header.to_wire(), [tx.to_wire() for tx in self.txs]]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    def check_tx_root(self) -> None:
        """Raise ValidationError unless `header.tx_root` commits to `txs`."""
        if compute_tx_root(self.txs) != self.header.tx_root:
            raise ValidationError("tx root does not match the block's transactions")

    @classmethod
    def from_wire(cls, wire: Any) -> "Block":
        header, txs = _list(wire, "block", 2)
        tx_list = _list(txs, "block txs")
        if len(tx_list) > MAX_TXS_PER_BLOCK:
            raise ValidationError("block holds more than %d txs" % MAX_TXS_PER_BLOCK)
        return cls(Header.from_wire(header), tuple(Tx.from_wire(t) for t in tx_list))

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        return cls.from_wire(codec.decode(data))


def compute_tx_root(txs: tuple[Tx, ...] | list[Tx]) -> bytes:
    """RFC 6962 root over the canonical encodings of `txs`, in block order."""
    return merkle.root([tx.encode() for tx in txs])


# ------------------------------------------------ votes and certificates


def commit_vote_payload(height: int, view: int, block_hash: bytes) -> bytes:
    """What a validator signs (kind "commit") to commit `block_hash` at `height`."""
    return codec.encode([height, view, block_hash])


@dataclass(frozen=True)
class CommitCertificate:
    """2f+1 COMMIT signatures over one block: what regulators verify.

    `signatures` pairs a validator's public key with its signature over
    `commit_vote_payload(height, view, block_hash)`, sorted by key.
    """

    height: int
    view: int
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]

    def to_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_hash, [list(s) for s in self.signatures]]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, wire: Any) -> "CommitCertificate":
        height, view, block_hash, signatures = _list(wire, "certificate", 4)
        pairs = []
        for item in _list(signatures, "certificate signatures"):
            key, signature = _list(item, "certificate signature", 2)
            pairs.append((_bytes(key, "signer", PUBLIC_KEY_BYTES), _bytes(signature, "signature", SIGNATURE_BYTES)))
        if len(pairs) > MAX_VALIDATORS:
            raise ValidationError("certificate holds more than %d signatures" % MAX_VALIDATORS)
        return cls(_int(height, "height", 1), _int(view, "view"), check_hash(block_hash, "block hash"), tuple(pairs))

    @classmethod
    def decode(cls, data: bytes) -> "CommitCertificate":
        return cls.from_wire(codec.decode(data))

    def verify(self, chain_id: str, validators: ValidatorSet, block_hash: bytes, height: int) -> None:
        """Check that a quorum of `validators` signed this block at this height.

        Raises SignatureError if the certificate is for another block or
        height, names a non-validator or a signer twice, carries a bad
        signature, or has fewer than a quorum of valid signatures.
        """
        if self.block_hash != block_hash or self.height != height:
            raise SignatureError("certificate is for another block or height")
        payload = commit_vote_payload(self.height, self.view, self.block_hash)
        seen: set[bytes] = set()
        for key, signature in self.signatures:
            if key in seen:
                raise SignatureError("a validator signs a certificate twice")
            if validators.index_of(key) is None:
                raise SignatureError("certificate signer %s is not a validator" % key.hex()[:16])
            verify(key, "commit", chain_id, payload, signature)
            seen.add(key)
        if len(seen) < validators.quorum:
            raise SignatureError(
                "certificate has %d valid signatures, quorum is %d" % (len(seen), validators.quorum)
            )


def make_certificate(height: int, view: int, block_hash: bytes, votes: dict[bytes, bytes]) -> CommitCertificate:
    """Build a certificate from {public key: signature}, sorted for canonical bytes."""
    return CommitCertificate(height, view, block_hash, tuple(sorted(votes.items())))


__all__ = [
    "Block", "CommitCertificate", "Header", "KNOWN_TXS", "KnownTxs", "LedgerError", "Tx", "Validator", "ValidatorSet",
    "commit_vote_payload", "compute_tx_root", "is_valid", "make_certificate",
]
