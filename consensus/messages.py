"""Signed consensus messages and their canonical wire form.

Every message is `[tag, sender, ...fields, signature]` in canonical msgpack.
The signature covers kind-specific bytes (domain-separated by
`ledger.crypto.sign_bytes` with the chain id):

| message     | kind          | signed payload                                   |
|-------------|---------------|--------------------------------------------------|
| Proposal    | "proposal"    | encode([view, height, block_hash])               |
| Prepare     | "prepare"     | encode([view, height, block_hash])               |
| CommitVote  | "commit"      | ledger.types.commit_vote_payload(height, view, hash) |
| Checkpoint  | "checkpoint"  | encode([height, digest])                         |
| ViewChange  | "view-change" | encode(body) (everything but the signature)      |
| NewView     | "new-view"    | encode(body)                                     |
| Decided     | (none)        | carries a block and its CommitCertificate        |

COMMIT signatures are therefore exactly the certificate signatures a light
client verifies (`CommitCertificate.verify`).

`decode_message(data)` raises `DecodeError`/`ValidationError` for anything
malformed; it does not check signatures (`verify_signature` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from operator import attrgetter
from typing import Any, Callable

import msgpack

from ledger import codec
from ledger.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, PrivateKey
from ledger.errors import DecodeError, LedgerError, ValidationError
from ledger.hashing import check_hash, sha256
from ledger.types import Block, CommitCertificate, Tx, commit_vote_payload

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
U64_MAX = 2**64 - 1

TAG_PROPOSAL = 1
TAG_PREPARE = 2
TAG_COMMIT = 3
TAG_CHECKPOINT = 4
TAG_VIEW_CHANGE = 5
TAG_NEW_VIEW = 6
TAG_DECIDED = 7

Verifier = Callable[[bytes, str, str, bytes, bytes], bool]


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= U64_MAX:
        raise ValidationError("%s must be an integer >= %d" % (what, low))
    return value


def _key(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_BYTES:
        raise ValidationError("sender must be a %d-byte key" % PUBLIC_KEY_BYTES)
    return value


def _sig(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != SIGNATURE_BYTES:
        raise ValidationError("signature must be %d bytes" % SIGNATURE_BYTES)
    return value


def array_header(length: int) -> bytes:
    """The msgpack header of an array of `length` items (fixarray, array 16, array 32).

    A list's canonical encoding is this header followed by each item's own
    canonical encoding (`codec.encode` packs a list item by item), which lets
    an encoder join bytes it already holds instead of re-walking them.
    """
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _list(value: Any, what: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise DecodeError("%s must be a list%s" % (what, "" if length is None else " of %d" % length))
    return value


class _Signed:
    """Shared behaviour: `kind`, `payload()`, `body()`, wire encoding."""

    KIND = ""
    sender: bytes
    signature: bytes

    def payload(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def body(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_wire(self) -> list[Any]:
        return self.body() + [self.signature]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    def verify_signature(self, chain_id: str, verify: Verifier) -> bool:
        return verify(self.sender, self.KIND, chain_id, self.payload(), self.signature)


@dataclass(frozen=True)
class Proposal(_Signed):
    """PBFT PRE-PREPARE(v, n, d) carrying the whole block."""

    KIND = "proposal"
    sender: bytes
    view: int
    height: int
    block: Block
    signature: bytes = b""

    @property
    def block_hash(self) -> bytes:
        return self.block.hash  # cached on the frozen header (`Header.hash`)

    def payload(self) -> bytes:
        return codec.encode([self.view, self.height, self.block_hash])

    def body(self) -> list[Any]:
        return [TAG_PROPOSAL, self.sender, self.view, self.height, self.block.to_wire()]

    def encode(self) -> bytes:
        """`codec.encode(self.to_wire())`, byte for byte: the transactions'
        canonical bytes are cached on each `Tx`, so they are joined rather than
        walked again through the canonical encoder (a whole block's worth)."""
        data = _joined_encoding(self)
        return data if data is not None else codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, w: list[Any]) -> "Proposal":
        _, sender, view, height, block, sig = _list(w, "proposal", 6)
        proposal = cls(_key(sender), _int(view, "view"), _int(height, "height", 1), Block.from_wire(block), _sig(sig))
        if proposal.block.height != proposal.height:
            raise ValidationError("proposal height differs from its block's height")
        return proposal


# A proposal's wire is [tag, sender, view, height, [header, [tx, …]], signature]:
# each transaction's wire sits 3 levels down, and the canonical encoder refuses
# any value more than codec.MAX_DEPTH levels down. A tx reaching deeper than
# `_TX_DEPTH` below its wire encodes alone (as a tx) but not inside a proposal:
# such proposals keep the general path, which refuses them as it always did.
_TX_DEPTH = codec.MAX_DEPTH - 3
_SCALARS = frozenset((str, bytes, int, bool, type(None)))
_TX_SCALAR_FIELDS = tuple(attrgetter(name) for name in ("chain_id", "sender", "nonce", "type", "signature"))
_TX_BODY = attrgetter("body")


def _nested_within(value: dict[Any, Any] | list[Any] | tuple[Any, ...], limit: int) -> bool:
    """Whether every value inside the container `value` lies at most `limit`
    levels below it and has a plain canonical type (else: not known here)."""
    if not value:
        return True
    if limit < 1:
        return False
    for item in (value.values() if type(value) is dict else value):
        kind = type(item)
        if kind is dict or kind is list or kind is tuple:
            if not _nested_within(item, limit - 1):
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _txs_within_depth(txs: tuple[Any, ...]) -> bool:
    """Whether every item is a `Tx` of scalar fields whose wire lies within
    `_TX_DEPTH` (its body, one level down, within `_TX_DEPTH` − 1). Flat
    bodies, the common case, are recognised by type sets built in C."""
    if not set(map(type, txs)) <= {Tx} or not all(
            _SCALARS.issuperset(map(type, map(field, txs))) for field in _TX_SCALAR_FIELDS):
        return False
    bodies = list(map(_TX_BODY, txs))
    if not set(map(type, bodies)) <= {dict}:
        return False
    return (_SCALARS.issuperset(map(type, chain.from_iterable(map(dict.values, bodies))))
            or all(_nested_within(body, _TX_DEPTH - 1) for body in bodies))


def _encoded_block(block: Block) -> bytes | None:
    """`codec.encode(block.to_wire())` as it encodes one level down in a
    message (a PROPOSAL's or a DECIDED's), joined from the txs' cached
    canonical bytes; None when that cannot be vouched for.

    A list's canonical encoding is its array header followed by its items'
    own encodings, so this is the same bytes whenever every piece encodes
    alone as it does in place: true for the header (scalars) and for txs
    within `_TX_DEPTH` (see there).
    """
    txs = block.txs
    header = block.header.to_wire()
    if not _SCALARS.issuperset(map(type, header)) or type(txs) is not tuple or not _txs_within_depth(txs):
        return None
    try:
        return b"".join([array_header(2), codec.encode(header), array_header(len(txs)),
                         *[tx.encode() for tx in txs]])
    except (LedgerError, TypeError, ValueError):
        return None  # the full encoder raises its own error


def _joined_encoding(p: "Proposal") -> bytes | None:
    """`codec.encode(p.to_wire())`, the block joined by `_encoded_block`, or
    None when that cannot be vouched for (the caller then encodes in full)."""
    block = _encoded_block(p.block)
    if block is None or not _SCALARS.issuperset(map(type, (p.sender, p.view, p.height, p.signature))):
        return None
    try:
        data = b"".join([array_header(6), codec.encode(TAG_PROPOSAL), codec.encode(p.sender),
                         codec.encode(p.view), codec.encode(p.height), block, codec.encode(p.signature)])
    except (LedgerError, TypeError, ValueError):
        return None
    return data if len(data) <= codec.MAX_MESSAGE_BYTES else None


@dataclass(frozen=True)
class _Vote(_Signed):
    """A vote on one block: (view, height, block hash), signed as `KIND`, tagged `TAG`."""

    TAG = -1
    sender: bytes
    view: int
    height: int
    block_hash: bytes
    signature: bytes = b""

    def body(self) -> list[Any]:
        return [self.TAG, self.sender, self.view, self.height, self.block_hash]

    @classmethod
    def from_wire(cls, w: list[Any]) -> Any:
        _, sender, view, height, block_hash, sig = _list(w, cls.KIND, 6)
        return cls(_key(sender), _int(view, "view"), _int(height, "height", 1),
                   check_hash(block_hash, "block hash"), _sig(sig))


@dataclass(frozen=True)
class Prepare(_Vote):
    """PBFT PREPARE(v, n, d)."""

    KIND = "prepare"
    TAG = TAG_PREPARE

    def payload(self) -> bytes:
        return codec.encode([self.view, self.height, self.block_hash])


@dataclass(frozen=True)
class CommitVote(_Vote):
    """PBFT COMMIT(v, n, d); its signature is a certificate signature."""

    KIND = "commit"
    TAG = TAG_COMMIT

    def payload(self) -> bytes:
        return commit_vote_payload(self.height, self.view, self.block_hash)


@dataclass(frozen=True)
class Checkpoint(_Signed):
    """PBFT CHECKPOINT(n, d): `digest` = checkpoint_digest(height, block hash, app hash)."""

    KIND = "checkpoint"
    sender: bytes
    height: int
    digest: bytes
    signature: bytes = b""

    def payload(self) -> bytes:
        return codec.encode([self.height, self.digest])

    def body(self) -> list[Any]:
        return [TAG_CHECKPOINT, self.sender, self.height, self.digest]

    @classmethod
    def from_wire(cls, w: list[Any]) -> "Checkpoint":
        _, sender, height, digest, sig = _list(w, "checkpoint", 5)
        return cls(_key(sender), _int(height, "height", 1), check_hash(digest, "digest"), _sig(sig))


def checkpoint_digest(height: int, block_hash: bytes, app_hash: bytes) -> bytes:
    """The state digest replicas sign at a checkpoint: block and state after `height`."""
    return sha256(codec.encode([height, block_hash, app_hash]))


@dataclass(frozen=True)
class PreparedCertificate:
    """A proposal plus quorum−1 PREPAREs for it from other validators (PBFT's P set entry).

    `proposal_data` optionally holds the signed proposal's wire bytes
    (`proposal.encode()`, e.g. as received: the codec only accepts canonical
    bytes, so they are the same). `encoded_parts` uses them, so a replica that
    persists its certificate on every flush does not re-walk a whole block
    through the canonical encoder each time. Not part of equality.
    """

    proposal: Proposal
    prepares: tuple[Prepare, ...]
    proposal_data: bytes = field(default=b"", compare=False, repr=False)

    def to_wire(self) -> list[Any]:
        return [self.proposal.to_wire(), [p.to_wire() for p in self.prepares]]

    def encoded_parts(self) -> tuple[bytes, list[bytes]]:
        """(signed proposal bytes, [signed PREPARE bytes]), each computed once
        and kept (a replica persists its certificates on every flush)."""
        data = self.proposal_data
        if not data:
            data = self.proposal.encode()
            object.__setattr__(self, "proposal_data", data)  # a cache: equality ignores it
        return data, list(self._prepares_data)

    @cached_property
    def _prepares_data(self) -> tuple[bytes, ...]:
        return tuple(p.encode() for p in self.prepares)

    @classmethod
    def from_parts(cls, proposal_data: Any, prepares: Any) -> "PreparedCertificate":
        """Inverse of `encoded_parts`; raises DecodeError/ValidationError."""
        if not isinstance(proposal_data, bytes):
            raise DecodeError("prepared proposal must be bytes")
        items = _list(prepares, "prepares")
        if len(items) > 256:
            raise ValidationError("too many prepares")
        votes = []
        for item in items:
            if not isinstance(item, bytes):
                raise DecodeError("prepare must be bytes")
            wire = _list(codec.decode(item), "prepare")
            if wire and wire[0] != TAG_PREPARE:
                raise DecodeError("not a prepare")
            votes.append(Prepare.from_wire(wire))
        wire = _list(codec.decode(proposal_data), "proposal")
        if wire and wire[0] != TAG_PROPOSAL:
            raise DecodeError("not a proposal")
        proposal = Proposal.from_wire(wire)
        for vote in votes:
            if (vote.view, vote.height, vote.block_hash) != (proposal.view, proposal.height, proposal.block_hash):
                raise ValidationError("a prepare does not match its prepared proposal")
        return cls(proposal, tuple(votes), proposal_data)

    @classmethod
    def from_wire(cls, w: Any) -> "PreparedCertificate":
        proposal, prepares = _list(w, "prepared certificate", 2)
        items = _list(prepares, "prepares")
        if len(items) > 256:
            raise ValidationError("too many prepares")
        return cls(Proposal.from_wire(_list(proposal, "proposal")),
                   tuple(Prepare.from_wire(_list(p, "prepare")) for p in items))


MAX_PREPARED_ABOVE = 64  # prepared certificates above committed+1 in one VIEW-CHANGE (W − 1 at most)


@dataclass(frozen=True)
class ViewChange(_Signed):
    """PBFT VIEW-CHANGE(v+1, n, C, P, i).

    `committed_height` with `certificate` (its commit certificate, None at
    height 0) plays the role of the stable checkpoint proof C: everything up to
    it is final. `prepared` is the highest-view prepared certificate for
    `committed_height + 1`, if any (P); `prepared_above` the highest-view
    prepared certificate of every higher height in the sender's in-flight
    window (committed+2 … committed+W, ascending, gaps allowed; the receiver
    bounds the heights by its W). With W = 1 it is always empty and the wire
    form is the unpipelined one: the field is on the wire only when non-empty.
    """

    KIND = "view-change"
    sender: bytes
    new_view: int
    committed_height: int
    certificate: CommitCertificate | None
    prepared: PreparedCertificate | None
    signature: bytes = b""
    prepared_above: tuple[PreparedCertificate, ...] = ()

    def body(self) -> list[Any]:
        body = [TAG_VIEW_CHANGE, self.sender, self.new_view, self.committed_height,
                None if self.certificate is None else self.certificate.to_wire(),
                None if self.prepared is None else self.prepared.to_wire()]
        if self.prepared_above:
            body.append([c.to_wire() for c in self.prepared_above])
        return body

    def payload(self) -> bytes:
        return codec.encode(self.body())

    def certificates(self) -> tuple[PreparedCertificate, ...]:
        """Every prepared certificate carried, ascending by height."""
        return ((self.prepared,) if self.prepared is not None else ()) + self.prepared_above

    @classmethod
    def from_wire(cls, w: list[Any]) -> "ViewChange":
        if isinstance(w, list) and len(w) == 8:
            _, sender, new_view, committed, cert, prepared, above_wire, sig = w
            items = _list(above_wire, "prepared above")
            if not items or len(items) > MAX_PREPARED_ABOVE:
                raise ValidationError("prepared_above must hold 1..%d certificates when present"
                                      % MAX_PREPARED_ABOVE)
        else:
            _, sender, new_view, committed, cert, prepared, sig = _list(w, "view change", 7)
            items = []
        committed_height = _int(committed, "committed height")
        certificate = None if cert is None else CommitCertificate.from_wire(cert)
        if (certificate is None) != (committed_height == 0):
            raise ValidationError("a view change carries a certificate iff committed height > 0")
        if certificate is not None and certificate.height != committed_height:
            raise ValidationError("view-change certificate is for another height")
        prep = None if prepared is None else PreparedCertificate.from_wire(prepared)
        if prep is not None and prep.proposal.height != committed_height + 1:
            raise ValidationError("prepared certificate must be for committed height + 1")
        above = tuple(PreparedCertificate.from_wire(c) for c in items)
        last = committed_height + 1
        for c in above:
            if c.proposal.height <= last:
                raise ValidationError("prepared certificates above committed+1 must ascend")
            last = c.proposal.height
        return cls(_key(sender), _int(new_view, "view", 1), committed_height, certificate, prep, _sig(sig),
                   above)


@dataclass(frozen=True)
class NewView(_Signed):
    """PBFT NEW-VIEW(v+1, V, O): a quorum of VIEW-CHANGEs and the re-proposals.

    `proposal` is the new primary's PRE-PREPARE in the new view for the height
    after the highest certified one (the target), mandatory (and fixed) when
    the VIEW-CHANGEs' walk (`consensus.replica._new_view_decision`) starts
    there, otherwise optional. `reproposals` are the mandated blocks for
    target+1, target+2, … that the walk chose (pipelining, W > 1): on the wire
    only when non-empty, so W = 1 keeps the unpipelined form.
    """

    KIND = "new-view"
    sender: bytes
    view: int
    view_changes: tuple[ViewChange, ...]
    proposal: Proposal | None
    signature: bytes = b""
    reproposals: tuple[Proposal, ...] = ()

    def body(self) -> list[Any]:
        body = [TAG_NEW_VIEW, self.sender, self.view, [vc.to_wire() for vc in self.view_changes],
                None if self.proposal is None else self.proposal.to_wire()]
        if self.reproposals:
            body.append([p.to_wire() for p in self.reproposals])
        return body

    def payload(self) -> bytes:
        return codec.encode(self.body())

    @classmethod
    def from_wire(cls, w: list[Any]) -> "NewView":
        if isinstance(w, list) and len(w) == 7:
            _, sender, view, vcs, proposal, more, sig = w
            extra = _list(more, "reproposals")
            if not extra or len(extra) > MAX_PREPARED_ABOVE or proposal is None:
                raise ValidationError("reproposals must hold 1..%d proposals after a proposal"
                                      % MAX_PREPARED_ABOVE)
        else:
            _, sender, view, vcs, proposal, sig = _list(w, "new view", 6)
            extra = []
        items = _list(vcs, "view changes")
        if len(items) > 256:
            raise ValidationError("too many view changes")
        return cls(_key(sender), _int(view, "view", 1),
                   tuple(ViewChange.from_wire(_list(v, "view change")) for v in items),
                   None if proposal is None else Proposal.from_wire(_list(proposal, "proposal")),
                   _sig(sig),
                   tuple(Proposal.from_wire(_list(p, "proposal")) for p in extra))


@dataclass(frozen=True)
class Decided:
    """A committed block with its certificate, sent to a peer that is behind.

    Not signed by the sender: the certificate (a quorum of COMMIT signatures)
    is the proof, checked like a fetched block.
    """

    block: Block
    certificate: CommitCertificate

    def to_wire(self) -> list[Any]:
        return [TAG_DECIDED, self.block.to_wire(), self.certificate.to_wire()]

    def encode(self) -> bytes:
        """`codec.encode(self.to_wire())`, byte for byte, the block joined from
        its txs' cached bytes (`_encoded_block`) when it can be."""
        block = _encoded_block(self.block)
        certificate = self.certificate.to_wire()
        if block is not None and _nested_within(certificate, codec.MAX_DEPTH - 1):  # one level down
            try:
                data = b"".join([array_header(3), codec.encode(TAG_DECIDED), block, codec.encode(certificate)])
            except (LedgerError, TypeError, ValueError):
                pass  # the full encoder raises its own error
            else:
                if len(data) <= codec.MAX_MESSAGE_BYTES:
                    return data
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, w: list[Any]) -> "Decided":
        _, block, cert = _list(w, "decided", 3)
        decided = cls(Block.from_wire(block), CommitCertificate.from_wire(cert))
        if decided.certificate.height != decided.block.height:
            raise ValidationError("decided certificate is for another height")
        return decided


Message = Proposal | Prepare | CommitVote | Checkpoint | ViewChange | NewView | Decided

_DECODERS: dict[int, Any] = {
    TAG_PROPOSAL: Proposal, TAG_PREPARE: Prepare, TAG_COMMIT: CommitVote,
    TAG_CHECKPOINT: Checkpoint, TAG_VIEW_CHANGE: ViewChange, TAG_NEW_VIEW: NewView,
    TAG_DECIDED: Decided,
}


_PROPOSAL_PREFIX = array_header(6) + bytes([TAG_PROPOSAL])


def decode_message(data: bytes) -> Message:
    """Decode one wire message; raise DecodeError or ValidationError if malformed.

    A canonical PROPOSAL takes `_decode_canonical_proposal` (same result, no
    walk of its whole block); anything it does not vouch for, the general path.
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError("message is not bytes or is over %d bytes" % MAX_MESSAGE_BYTES)
    if type(data) is bytes and data.startswith(_PROPOSAL_PREFIX):
        proposal = _decode_canonical_proposal(data)
        if proposal is not None:
            return proposal
    wire = codec.decode(bytes(data), max_bytes=MAX_MESSAGE_BYTES)
    if (not isinstance(wire, list) or not wire or isinstance(wire[0], bool)
            or not isinstance(wire[0], int) or wire[0] not in _DECODERS):
        raise DecodeError("unknown message tag")
    try:
        return _DECODERS[wire[0]].from_wire(wire)
    except (TypeError, ValueError, KeyError, IndexError) as exc:  # defensive: typed error only
        raise DecodeError("malformed message: %s" % exc) from exc


def _decode_canonical_proposal(data: bytes) -> Proposal | None:
    """`decode_message(data)` for a PROPOSAL whose bytes are canonical, without
    walking its whole block through the canonical check; None when it cannot
    vouch for `data` (then the general path decides, and raises what it raises).

    `codec.decode` accepts exactly the bytes that are the canonical encoding of
    what they unpack to. The proposal built from the unpacked wire re-encodes
    (`_joined_encoding`: each tx's cached canonical bytes, joined) to the
    canonical encoding of that same wire; if that equals `data`, `data` is
    canonical and the general path would build this very proposal.
    """
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
        if type(wire) is not list or len(wire) != 6 or type(wire[0]) is not int or wire[0] != TAG_PROPOSAL:
            return None
        proposal = Proposal.from_wire(wire)
    except Exception:  # noqa: BLE001 - not swallowed: the general path decides and raises
        return None
    return proposal if _joined_encoding(proposal) == data else None


def sign(message: Any, key: PrivateKey, chain_id: str) -> Any:
    """Return `message` with `signature` filled in by `key`."""
    from dataclasses import replace
    return replace(message, signature=key.sign(message.KIND, chain_id, message.payload()))


_SIGNATURE_TRAILER = b"\xc4" + bytes([SIGNATURE_BYTES])  # msgpack bin8 header of a 64-byte signature


def with_signature_of(message: Any, data: bytes) -> Any:
    """`message` with the signature its own signed encoding `data` ends with.

    Every message's wire form ends with its signature (a 64-byte bin), so a
    replica that just signed a message (or re-sends a stored one) need not
    decode it again — for a proposal that would re-decode a whole block.
    Raises DecodeError if `data` does not end with a signature field.
    """
    from dataclasses import replace
    if len(data) < SIGNATURE_BYTES + 2 or data[-SIGNATURE_BYTES - 2:-SIGNATURE_BYTES] != _SIGNATURE_TRAILER:
        raise DecodeError("message bytes do not end with a signature")
    return replace(message, signature=bytes(data[-SIGNATURE_BYTES:]))
