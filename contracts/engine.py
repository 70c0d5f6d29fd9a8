"""Executes a committed block's transactions as a deterministic state machine.

`apply_block(reader, ctx, txs)` runs every transaction in block order over a
`StateView` of the state after the previous block and returns the write set
and one receipt per transaction. For each transaction, in this order:

1. chain id matches the block's;
2. the sender has an active account (`accounts` module);
3. the nonce is exactly the account's next nonce (replays and gaps fail);
4. the tx type is registered and the sender's role is permitted for it;
5. the handler runs; a `ContractError` rolls back its writes and is recorded
   in the receipt. The nonce is consumed whenever step 3 passed, so a failed
   transaction can never be replayed.

Signatures are checked before consensus (mempool and proposal checks); the
engine trusts the committed block's transactions to be client-signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import msgpack

from ledger import codec, merkle
from ledger.types import Tx

from contracts import accounts
from contracts.errors import (
    ContractError, MalformedTx, NotPermitted, UnknownTxType, WrongChain,
)
from contracts.state import Reader, StateView


@dataclass(frozen=True)
class BlockContext:
    """What a handler may know about the block: never the wall clock."""

    chain_id: str
    height: int
    time_ms: int  # the header's time, agreed by consensus
    proposer: bytes = b""


Handler = Callable[[StateView, Tx, BlockContext], None]


@dataclass(frozen=True)
class TxKind:
    name: str
    handler: Handler
    roles: frozenset[str]  # roles allowed to send it; see accounts.ROLES


@dataclass
class Registry:
    """The table of transaction types: name → handler and permitted roles."""

    kinds: dict[str, TxKind] = field(default_factory=dict)

    def register(self, name: str, roles: Iterable[str]) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            if name in self.kinds:
                raise ValueError("tx type %r registered twice" % name)
            unknown = set(roles) - accounts.ROLES
            if unknown:
                raise ValueError("unknown roles %s for %r" % (sorted(unknown), name))
            self.kinds[name] = TxKind(name, handler, frozenset(roles))
            return handler

        return decorate

    def permission_table(self) -> dict[str, list[str]]:
        return {name: sorted(kind.roles) for name, kind in sorted(self.kinds.items())}


REGISTRY = Registry()


# Packs a receipt's fixed fields. Shared, as `ledger.state` shares its packer:
# packing bytes, a bool, a str or an array header runs no Python code, so one
# call cannot interleave with another thread's.
_PACKER = msgpack.Packer(use_bin_type=True)
_RECEIPT_HEADER = _PACKER.pack_array_header(5)
# A success, [32-byte hash, True, "ok", "", events], is constant around its hash.
_SUCCESS_HEAD = _RECEIPT_HEADER + _PACKER.pack(bytes(32))[:-32]  # ‖ the bin 8 header of 32 bytes
_SUCCESS_FIELDS = _PACKER.pack(True) + _PACKER.pack("ok") + _PACKER.pack("")
_ARRAY_HEADERS = tuple(_PACKER.pack_array_header(n) for n in range(16))  # the fixarray headers


class Receipt(NamedTuple):
    """One transaction's result. A NamedTuple rather than a frozen dataclass:
    as immutable, and built (once per transaction) at under half the cost."""

    tx_hash: bytes
    ok: bool
    code: str  # "ok" or the ContractError code
    message: str
    events: tuple[dict[str, Any], ...]

    def to_wire(self) -> list[Any]:
        return [self.tx_hash, self.ok, self.code, self.message, list(self.events)]

    def encode(self) -> bytes:
        """`codec.encode(self.to_wire())`, built from its parts.

        Canonical msgpack composes: an array is its header followed by its
        items' encodings. The four fixed fields (bytes, bool, str, str) pack
        as they are (a success's are constants around its hash), so only the
        events take codec's canonical walk.
        """
        tx_hash, events = self.tx_hash, self.events
        if self.ok is True and self.code == "ok" and self.message == "" and type(tx_hash) is bytes \
                and len(tx_hash) == 32:
            parts = [_SUCCESS_HEAD, tx_hash, _SUCCESS_FIELDS]
        elif type(tx_hash) is bytes and type(self.ok) is bool and type(self.code) is str \
                and type(self.message) is str:
            pack = _PACKER.pack
            try:
                parts = [_RECEIPT_HEADER, pack(tx_hash), pack(self.ok), pack(self.code), pack(self.message)]
            except ValueError:  # a str that is not UTF-8: codec raises its own error
                return codec.encode(self.to_wire())
        else:
            return codec.encode(self.to_wire())
        count = len(events)
        parts.append(_ARRAY_HEADERS[count] if count < 16 else _PACKER.pack_array_header(count))
        parts.extend(map(codec.encode, events))
        data = b"".join(parts)
        if len(data) > codec.MAX_MESSAGE_BYTES:
            return codec.encode(self.to_wire())  # raises codec's EncodeError
        return data

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "Receipt":
        tx_hash, ok, code, message, events = wire
        return cls(tx_hash, ok, code, message, tuple(events))


@dataclass(frozen=True)
class BlockResult:
    writes: dict[bytes, bytes | None]  # sorted by key; None deletes
    receipts: tuple[Receipt, ...]
    # the values the block decoded (`StateView.decoded`): pass to the next `apply_block`
    decoded: Mapping[bytes, tuple[bytes, Any]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def receipts_root(self) -> bytes:
        return receipts_root(self.receipts)


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    return merkle.root([r.encode() for r in receipts])


def apply_tx(state: StateView, ctx: BlockContext, tx: Tx, registry: Registry) -> Receipt:
    """Run one transaction; never raises a ContractError (it goes in the receipt)."""
    mark = state.snapshot()
    tx_hash = tx.hash
    try:
        if tx.chain_id != ctx.chain_id:
            raise WrongChain("tx is for chain %r" % tx.chain_id)
        account = accounts.require_active_readonly(state, tx.sender)  # only read below
        accounts.use_nonce(state, tx.sender, tx.nonce)
    except ContractError as exc:
        state.rollback(mark)
        return Receipt(tx_hash, False, exc.code, str(exc), ())
    consumed = state.snapshot()
    try:
        kind = registry.kinds.get(tx.type)
        if kind is None:
            raise UnknownTxType("no transaction type %r" % tx.type)
        if account["role"] not in accounts.permitted_roles(state, tx.type, kind.roles):
            raise NotPermitted("role %s may not send %s" % (account["role"], tx.type))
        accounts.check_rights(account, tx.type)
        if not isinstance(tx.body, dict):
            raise MalformedTx("body must be a map")
        kind.handler(state, tx, ctx)
    except ContractError as exc:
        state.rollback(consumed)
        state.take_events()
        return Receipt(tx_hash, False, exc.code, str(exc), ())
    return Receipt(tx_hash, True, "ok", "", tuple(state.take_events()))


def apply_block(reader: Reader, ctx: BlockContext, txs: Iterable[Tx], registry: Registry | None = None,
                known: Mapping[bytes, tuple[bytes, Any]] | None = None) -> BlockResult:
    """Execute `txs` in order over the committed state read through `reader`.

    `known`: the previous block's `BlockResult.decoded`, so that records it
    read and this block reads unchanged are not decoded twice (a record is
    taken only if its bytes are equal to what `reader` gives now).
    """
    from contracts import modules  # noqa: F401  (registers every handler)

    table = registry if registry is not None else REGISTRY
    state = StateView(reader, cache_reads=True, known=known)
    receipts = tuple(apply_tx(state, ctx, tx, table) for tx in txs)
    return BlockResult(state.writes(), receipts, state.decoded())
