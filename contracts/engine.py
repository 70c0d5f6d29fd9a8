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
from typing import Any, Callable, Iterable

from ledger import codec, merkle
from ledger.types import Tx

from contracts import accounts
from contracts.errors import (
    BadNonce, ContractError, MalformedTx, NotPermitted, UnknownTxType, WrongChain,
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


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    ok: bool
    code: str  # "ok" or the ContractError code
    message: str
    events: tuple[dict[str, Any], ...]

    def to_wire(self) -> list[Any]:
        return [self.tx_hash, self.ok, self.code, self.message, list(self.events)]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, wire: list[Any]) -> "Receipt":
        tx_hash, ok, code, message, events = wire
        return cls(tx_hash, ok, code, message, tuple(events))


@dataclass(frozen=True)
class BlockResult:
    writes: dict[bytes, bytes | None]  # sorted by key; None deletes
    receipts: tuple[Receipt, ...]

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
        expected = accounts.next_nonce(state, tx.sender)
        if tx.nonce != expected:
            raise BadNonce("nonce %d, expected %d" % (tx.nonce, expected))
        accounts.record_nonce(state, tx.sender, expected)
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


def apply_block(reader: Reader, ctx: BlockContext, txs: Iterable[Tx], registry: Registry | None = None) -> BlockResult:
    """Execute `txs` in order over the committed state read through `reader`."""
    from contracts import modules  # noqa: F401  (registers every handler)

    table = registry if registry is not None else REGISTRY
    state = StateView(reader, cache_reads=True)
    receipts = tuple(apply_tx(state, ctx, tx, table) for tx in txs)
    return BlockResult(state.writes(), receipts)
