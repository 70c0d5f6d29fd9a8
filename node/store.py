"""The block store: blocks, certificates, receipts, tx index and the chain tip.

Everything one committed block produces is added to ONE `ledger.kv.WriteBatch`
together with the state tree's nodes (`StateTree.prepare`), then written at
once (LevelDB: one synced WriteBatch). A crash therefore leaves the store at
the old height or at the new one, never in between.

Layout (the state tree lives under its own namespace `STATE_NAMESPACE`):

    b:B ‖ u64 h      -> encoded Block
    b:C ‖ u64 h      -> encoded CommitCertificate
    b:R ‖ u64 h ‖ u32 i -> encoded receipt wire of tx i
    b:A ‖ u64 h      -> encoded [app_hash, receipts_root] after executing h
    b:H ‖ block hash -> u64 h
    b:X ‖ tx hash    -> encoded [h, index]
    b:tip            -> encoded [h, block hash, time, history size, peaks]
    b:genesis        -> encoded [chain id, genesis app hash]
    b:V              -> encoded [[h, seq, validators wire, [[validator key, node key], …]], …]
                        every validator-set change handed to consensus, in order: the
                        block h whose execution wrote governance's pending record `seq`
    b:K ‖ u64 h      -> encoded Header of a pruned block h (`[storage] retain_blocks`)
    b:floor          -> u64 earliest retained block height (absent: 1, nothing pruned)

Block retention (`prune_block`, driven by node/pruning.py `BlockPruner`): a
pruned height h loses its block body (b:B, replaced by its header in b:K, so
history proofs and `header(h)` keep working), certificate, receipts and tx
index rows. Kept forever: the genesis record, results (b:A), the hash index
(b:H), validator updates, and every block whose header hands over to a new
validator set (body and certificate: light clients and observers walk the
set history through them).

Evidence (`EvidenceStore`, written apart from blocks, one synced batch per new
offence; keyed by the offence so a re-report, e.g. after a restart, collapses):

    e:E ‖ validator key ‖ u8 len ‖ kind ‖ u64 view ‖ u64 height
                     -> u64 recorded at height ‖ u32 len(first) ‖ first ‖ second
    e:N              -> u64 distinct offences ever reported (kept or not)
    e:V ‖ validator key -> u64 offences kept for that validator

Bounded: at most MAX_EVIDENCE_PER_VALIDATOR (64) records per validator (so one
equivocating validator cannot crowd out evidence against the others),
MAX_EVIDENCE (1,024) records and MAX_EVIDENCE_BYTES (256 MiB of signed
messages: a vote pair is < 1 KB, a proposal pair two blocks) in all; past a
cap an offence is only counted in e:N (and may be counted again after a
restart, since nothing per offence is stored for it).

    e:K, e:B         -> u64 records kept, u64 message bytes kept

Validator-set changes: the executor adds a `b:V` entry in the batch of the
block that executed the governance change, so a restart rebuilds exactly the
`ChainTip.validator_schedule` the running replica built from `BlockExecuted`
(`validator_schedule`: the set of block h starts at `schedule_start(h, K)`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack

from consensus.history import History
from consensus.persist import ChainTip
from contracts.engine import Receipt
from ledger import codec
from ledger.errors import StorageError
from ledger.hashing import ZERO_HASH
from ledger.kv import KeyValueStore, WriteBatch
from ledger.types import Block, CommitCertificate, Header, ValidatorSet

STATE_NAMESPACE = b"s:"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_P = b"b:"
_E = b"e:"
RECENT_TX_BLOCKS = 16
MAX_EVIDENCE = 1024  # evidence records kept in all ...
MAX_EVIDENCE_PER_VALIDATOR = 64  # ... per validator key ...
MAX_EVIDENCE_BYTES = 256 * 1024 * 1024  # ... and message bytes in all (two blocks per proposal pair)


def _h(height: int) -> bytes:
    return _U64.pack(height)


def encode_block(block: Block) -> bytes:
    """`block.encode()`, from each tx's cached canonical bytes.

    Canonical msgpack composes: an array's encoding is its header followed by
    its elements' encodings, so `[header, [tx, …]]` is the 2-array header, the
    encoded header, the n-array header and the txs' (already cached) bytes —
    byte for byte what `codec.encode(block.to_wire())` gives, without
    re-canonicalising every transaction body once more per block.
    """
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(2), block.header.encode(), packer.pack_array_header(len(block.txs))]
    parts.extend(tx.encode() for tx in block.txs)
    return b"".join(parts)


def schedule_start(executed_height: int, checkpoint_interval: int, results_lag: int = 1) -> int:
    """First height run by a validator set handed over in `BlockExecuted(executed_height)`.

    Mirrors `consensus.replica` (`_on_block_executed`): the set takes effect
    after c, the first multiple of K that is ≥ h+L (L = `results_lag`; header c
    announces it in `next_validators_hash`), so its first height is c + 1.
    """
    k = checkpoint_interval
    return -(-(executed_height + results_lag) // k) * k + 1


@dataclass(frozen=True)
class ValidatorUpdate:
    """A validator-set change handed to consensus after executing block `height`."""

    height: int
    seq: int
    validators: ValidatorSet
    node_keys: tuple[tuple[bytes, bytes], ...]  # (validator key, p2p node key)

    def to_wire(self) -> list[Any]:
        return [self.height, self.seq, self.validators.to_wire(), [[v, n] for v, n in self.node_keys]]

    @classmethod
    def from_wire(cls, wire: Any) -> "ValidatorUpdate":
        height, seq, validators, node_keys = wire
        return cls(height, seq, ValidatorSet.from_wire(validators), tuple((v, n) for v, n in node_keys))


@dataclass(frozen=True)
class Tip:
    height: int
    block_hash: bytes
    time_ms: int
    history: History


class BlockPruned(LookupError):
    """Block `height` was pruned here (`[storage] retain_blocks`): HTTP 410 with `earliest`."""

    def __init__(self, height: int, earliest: int) -> None:
        super().__init__("block %d is pruned: this node keeps blocks >= %d ([storage] retain_blocks); "
                         "ask an archive node" % (height, earliest))
        self.height = height
        self.earliest = earliest


def is_validator_set_change(header: Header) -> bool:
    """Whether `header` hands over to a new validator set: never pruned."""
    return header.next_validators_hash != header.validators_hash


class BlockStore:
    """Reads and batch-writes of the chain over a KeyValueStore."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    # ---------------------------------------------------------------- writes

    def add_genesis(self, batch: WriteBatch, chain_id: str, app_hash: bytes, time_ms: int) -> None:
        batch.put(_P + b"genesis", codec.encode([chain_id, app_hash]))
        batch.put(_P + b"A" + _h(0), codec.encode([app_hash, ZERO_HASH]))
        batch.put(_P + b"tip", codec.encode([0, ZERO_HASH, time_ms, 0, []]))

    def add_block(
        self, batch: WriteBatch, block: Block, certificate: CommitCertificate,
        receipts: tuple[Receipt, ...], app_hash: bytes, receipts_root: bytes, history: History,
        encoded_receipts: Sequence[bytes] | None = None,
    ) -> None:
        """Add everything block `h` produces to `batch` (the caller writes it).

        `encoded_receipts`: the receipts' bytes if the caller already has them
        (it hashed them for `receipts_root`), so each is encoded once."""
        h = _h(block.height)
        batch.put(_P + b"B" + h, encode_block(block))
        batch.put(_P + b"C" + h, certificate.encode())
        if encoded_receipts is None or len(encoded_receipts) != len(receipts):
            encoded_receipts = [receipt.encode() for receipt in receipts]
        put = batch.put
        receipt_prefix = _P + b"R" + h
        for index, raw in enumerate(encoded_receipts):
            put(receipt_prefix + _U32.pack(index), raw)
        batch.put(_P + b"A" + h, codec.encode([app_hash, receipts_root]))
        batch.put(_P + b"H" + block.hash, h)
        # receipt i is tx i's and carries its hash: no second encode + sha256 per tx
        hashes = ([r.tx_hash for r in receipts] if len(receipts) == len(block.txs)
                  else [tx.hash for tx in block.txs])
        # `codec.encode([height, index])` composed (as `encode_block`): the
        # 2-array header and the height once, then each index as msgpack packs
        # an int (its shortest form, the canonical one)
        packer = msgpack.Packer(use_bin_type=True)
        location_head = packer.pack_array_header(2) + codec.encode(block.height)
        for index, tx_hash in enumerate(hashes):
            put(_P + b"X" + tx_hash, location_head + packer.pack(index))
        peaks = [[size, digest] for size, digest in history.peaks]
        batch.put(_P + b"tip", codec.encode([block.height, block.hash, block.header.time, history.size, peaks]))

    def add_validator_update(self, batch: WriteBatch, update: ValidatorUpdate) -> None:
        """Add a validator-set change to `batch` (the batch of block `update.height`)."""
        updates = self.validator_updates()
        if updates and (update.height <= updates[-1].height or update.seq <= updates[-1].seq):
            raise StorageError("validator update seq %d at %d does not follow seq %d at %d"
                               % (update.seq, update.height, updates[-1].seq, updates[-1].height))
        batch.put(_P + b"V", codec.encode([u.to_wire() for u in updates + [update]]))

    def prune_block(self, batch: WriteBatch, height: int) -> int | None:
        """Add the pruning of block `height` to `batch`; return how many txs it
        held, or None if it is kept (a validator-set change) or already gone.
        The caller records the new floor (`set_earliest_height`) in the same batch.

        Reads only what it needs, on the event loop: the header (not each tx
        decoded and hashed) and the tx hashes from the block's receipt rows. A
        tx index row goes only if it points at this height: a later block may
        carry the same tx again (it fails there as a used nonce) and own the row.

        Raises StorageError on a corrupt record.
        """
        h = _h(height)
        raw = self.kv.get(_P + b"B" + h)
        if raw is None:
            return None
        try:
            header = Header.from_wire(msgpack.unpackb(raw, raw=False, strict_map_key=False)[0])
        except Exception as exc:
            raise StorageError("corrupt block %d in block store: %s" % (height, exc)) from exc
        if is_validator_set_change(header):
            return None
        batch.put(_P + b"K" + h, header.encode())
        batch.delete(_P + b"B" + h)
        batch.delete(_P + b"C" + h)
        count = 0
        for key, value in self.kv.iterate_prefix(_P + b"R" + h):
            batch.delete(key)
            count += 1
            try:
                index_key = _P + b"X" + msgpack.unpackb(value, raw=False, strict_map_key=False)[0]
                location = self.kv.get(index_key)
                owner = None if location is None else msgpack.unpackb(location)[0]
            except Exception as exc:
                raise StorageError("corrupt receipt or tx index at block %d: %s" % (height, exc)) from exc
            if owner == height:
                batch.delete(index_key)
        return count

    def set_earliest_height(self, batch: WriteBatch, height: int) -> None:
        """Record in `batch` that blocks below `height` may be pruned."""
        batch.put(_P + b"floor", _U64.pack(height))

    # ----------------------------------------------------------------- reads

    def earliest_height(self) -> int:
        """Lowest height whose block is guaranteed stored (1 until something is pruned)."""
        raw = self.kv.get(_P + b"floor")
        return 1 if raw is None else _U64.unpack(raw)[0]

    def check_not_pruned(self, height: int) -> None:
        """Raise BlockPruned if block `height` is missing because it was pruned."""
        earliest = self.earliest_height()
        if 1 <= height < earliest and self.kv.get(_P + b"B" + _h(height)) is None:
            raise BlockPruned(height, earliest)

    def header(self, height: int) -> Header | None:
        """Header `height`, from its block or (pruned) from the kept header."""
        block = self.block(height)
        if block is not None:
            return block.header
        raw = self.kv.get(_P + b"K" + _h(height))
        return None if raw is None else Header.decode(raw)


    def validator_updates(self) -> list[ValidatorUpdate]:
        """Every validator-set change handed to consensus, oldest first."""
        value = self._decode(self.kv.get(_P + b"V"), "validator updates")
        if value is None:
            return []
        try:
            return [ValidatorUpdate.from_wire(item) for item in value]
        except Exception as exc:
            raise StorageError("corrupt validator updates in block store: %s" % exc) from exc

    def validator_schedule(self, checkpoint_interval: int,
                           results_lag: int = 1) -> tuple[tuple[int, ValidatorSet], ...]:
        """`ChainTip.validator_schedule`: (first height, set) per handed-over change."""
        return tuple((schedule_start(u.height, checkpoint_interval, results_lag), u.validators)
                     for u in self.validator_updates())

    def _decode(self, raw: bytes | None, what: str) -> Any:
        if raw is None:
            return None
        try:
            return codec.decode(raw)
        except Exception as exc:
            raise StorageError("corrupt %s in block store: %s" % (what, exc)) from exc

    def genesis(self) -> tuple[str, bytes] | None:
        value = self._decode(self.kv.get(_P + b"genesis"), "genesis record")
        return None if value is None else (value[0], value[1])

    def tip(self) -> Tip:
        value = self._decode(self.kv.get(_P + b"tip"), "tip")
        if value is None:
            return Tip(0, ZERO_HASH, 0, History())
        height, block_hash, time_ms, size, peaks = value
        return Tip(height, block_hash, time_ms, History(size, tuple((s, d) for s, d in peaks)))

    @property
    def height(self) -> int:
        return self.tip().height

    def block(self, height: int) -> Block | None:
        raw = self.kv.get(_P + b"B" + _h(height))
        return None if raw is None else Block.decode(raw)

    def block_bytes(self, height: int) -> bytes | None:
        return self.kv.get(_P + b"B" + _h(height))

    def certificate(self, height: int) -> CommitCertificate | None:
        raw = self.kv.get(_P + b"C" + _h(height))
        return None if raw is None else CommitCertificate.decode(raw)

    def certificate_bytes(self, height: int) -> bytes | None:
        return self.kv.get(_P + b"C" + _h(height))

    def receipts(self, height: int) -> list[Receipt] | None:
        if self.kv.get(_P + b"B" + _h(height)) is None:
            return None
        return [Receipt.from_wire(self._decode(raw, "receipt"))
                for _, raw in self.kv.iterate_prefix(_P + b"R" + _h(height))]

    def receipt(self, height: int, index: int) -> Receipt | None:
        value = self._decode(self.kv.get(_P + b"R" + _h(height) + _U32.pack(index)), "receipt")
        return None if value is None else Receipt.from_wire(value)

    def results(self, height: int) -> tuple[bytes, bytes] | None:
        """(app_hash, receipts_root) after executing `height` (0 = genesis)."""
        value = self._decode(self.kv.get(_P + b"A" + _h(height)), "results")
        return None if value is None else (value[0], value[1])

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        value = self._decode(self.kv.get(_P + b"X" + tx_hash), "tx index")
        return None if value is None else (value[0], value[1])

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.kv.get(_P + b"H" + block_hash)
        return None if raw is None else _U64.unpack(raw)[0]

    def chain_tip(self, recent_blocks: int = RECENT_TX_BLOCKS, checkpoint_interval: int | None = None,
                  results_lag: int = 1) -> ChainTip:
        """What the replica needs to resume after a restart.

        `recent_blocks` must be the consensus duplicate window (K, the genesis
        checkpoint_interval): the replica refuses transactions committed in the
        last K blocks, and must see the same K blocks after a restart.
        `checkpoint_interval` (K; default `recent_blocks`) places the persisted
        validator-set changes in `validator_schedule`. `results_lag` (L, genesis
        `consensus_params.results_lag`): header h carries the results of h − L,
        so the replica gets the results of the L − 1 executed heights below the
        tip too (`lagged_results`) and sets take effect as it schedules them."""
        tip = self.tip()
        results = self.results(tip.height)
        if results is None:
            raise StorageError("block store has no results for its tip %d" % tip.height)
        recent: list[tuple[int, tuple[bytes, ...]]] = []
        for height in range(max(1, tip.height - recent_blocks + 1), tip.height + 1):
            block = self.block(height)
            if block is not None:
                recent.append((height, tuple(tx.hash for tx in block.txs)))
        return ChainTip(
            height=tip.height, block_hash=tip.block_hash, time_ms=tip.time_ms, history=tip.history,
            app_hash=results[0], receipts_root=results[1],
            certificate=self.certificate(tip.height) if tip.height else None,
            recent_txs=tuple(recent),
            validator_schedule=self.validator_schedule(checkpoint_interval or recent_blocks, results_lag),
            lagged_results=self._lagged_results(tip.height, results_lag),
        )

    def _lagged_results(self, height: int, results_lag: int) -> tuple[tuple[int, bytes, bytes], ...]:
        """`(h, app_hash, receipts_root)` for the executed heights h in (height − L, height)."""
        out = []
        for h in range(max(0, height - results_lag + 1), height):
            results = self.results(h)
            if results is None:
                raise StorageError("block store has no results for height %d (tip %d, results lag %d)"
                                   % (h, height, results_lag))
            out.append((h, results[0], results[1]))
        return tuple(out)


@dataclass(frozen=True)
class EvidenceRecord:
    """Two conflicting messages `validator` signed for one (kind, view, height)."""

    validator: bytes
    kind: str
    view: int
    height: int
    first: bytes
    second: bytes
    recorded_height: int  # this node's committed height when it first saw the offence

    def to_json(self) -> dict[str, Any]:
        return {"validator": self.validator.hex(), "public_key": self.validator.hex(), "kind": self.kind,
                "view": self.view, "height": self.height, "first": self.first.hex(),
                "second": self.second.hex(), "recorded_height": self.recorded_height}


class EvidenceStore:
    """Persisted double-signing evidence over a KeyValueStore (see module doc)."""

    def __init__(self, kv: KeyValueStore, max_records: int = MAX_EVIDENCE,
                 max_per_validator: int = MAX_EVIDENCE_PER_VALIDATOR, max_bytes: int = MAX_EVIDENCE_BYTES) -> None:
        self.kv = kv
        self.max_records = max_records
        self.max_per_validator = max_per_validator
        self.max_bytes = max_bytes

    @staticmethod
    def _key(validator: bytes, kind: str, view: int, height: int) -> bytes:
        kind_bytes = kind.encode()[:255]
        return (_E + b"E" + validator + bytes((len(kind_bytes),)) + kind_bytes
                + _U64.pack(view) + _U64.pack(height))

    def _count(self, key: bytes) -> int:
        raw = self.kv.get(key)
        return 0 if raw is None else _U64.unpack(raw)[0]

    def record(self, validator: bytes, kind: str, view: int, height: int, first: bytes, second: bytes,
               recorded_height: int) -> bool:
        """Save one offence; True if it is new (kept or, past a cap, only counted).

        The same (validator, kind, view, height) again — whatever the message
        pair — changes nothing. Raises StorageError if the store fails.
        """
        key = self._key(validator, kind, view, height)
        if self.kv.get(key) is not None:
            return False
        batch = WriteBatch()
        total = self.total()
        per_validator = self._count(_E + b"V" + validator)
        size = len(first) + len(second)
        kept_bytes = self._count(_E + b"B")
        if (self.kept() < self.max_records and per_validator < self.max_per_validator
                and kept_bytes + size <= self.max_bytes):
            batch.put(key, _U64.pack(recorded_height) + _U32.pack(len(first)) + first + second)
            batch.put(_E + b"V" + validator, _U64.pack(per_validator + 1))
            batch.put(_E + b"K", _U64.pack(self.kept() + 1))
            batch.put(_E + b"B", _U64.pack(kept_bytes + size))
        # past a cap the offence is only counted (nothing per offence is stored, so
        # the cap bounds the disk; the replica reports each offence once per run)
        batch.put(_E + b"N", _U64.pack(total + 1))
        self.kv.write(batch)
        return True

    def total(self) -> int:
        """Distinct offences ever reported to this store (kept or over a cap)."""
        return self._count(_E + b"N")

    def kept(self) -> int:
        return self._count(_E + b"K")

    def records(self, limit: int | None = None) -> list[EvidenceRecord]:
        """Kept evidence, by validator key, then kind, view and height."""
        out: list[EvidenceRecord] = []
        for key, raw in self.kv.iterate_prefix(_E + b"E"):
            body = key[len(_E) + 1:]
            validator, kind_len = body[:32], body[32]
            kind = body[33:33 + kind_len].decode()
            view, height = _U64.unpack(body[33 + kind_len:41 + kind_len])[0], _U64.unpack(body[41 + kind_len:])[0]
            if len(raw) < 12 or len(raw) < 12 + _U32.unpack(raw[8:12])[0]:
                raise StorageError("corrupt evidence record in block store")
            recorded_height, first_len = _U64.unpack(raw[:8])[0], _U32.unpack(raw[8:12])[0]
            first, second = raw[12:12 + first_len], raw[12 + first_len:]
            out.append(EvidenceRecord(validator, kind, view, height, first, second, recorded_height))
            if limit is not None and len(out) >= limit:
                break
        return out
