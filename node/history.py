"""Proof-serving methods of the runtime: history, transaction and receipt proofs.

`HistoryService` is a mixin of `node.node.NodeRuntime` (it needs only
`self.store`, a `node.store.BlockStore`). Its answers let a light client
(`ledger.light.LightClient`) move its trusted head forward and check data
without trusting this node:

- `history_consistency(old, new)`: RFC 6962 consistency proof between the
  history trees of sizes `old` and `new` (history size s = blocks 1..s; the
  header at height h commits to size h-1);
- `history_inclusion(height, size)`: the block hash of `height` (leaf
  height-1) in the history of `size` blocks;
- `tx_proof(tx_hash)`: the tx's inclusion in its block's `tx_root`, the
  certified header, and the receipt's inclusion in `receipts_root` of the
  next header when that block exists;
- `epoch_changes(from_height, to_height)`: every header in
  (from_height, to_height] that hands over to a new validator set
  (`next_validators_hash != validators_hash`), with its certificate, the new
  set and the history proof chaining it to the previous one (the first to
  `from_height`), ready for `LightClient.verify_epoch_changes`.

History leaves are block hashes used directly as leaf hashes
(`consensus/history.py`), hence the `*_from_hashes` proof builders.
The block-hash list is cached: committed blocks never change.
"""

from __future__ import annotations

from typing import Any

from ledger import codec, merkle
from ledger.light import HeaderUpdate, HistoryProof
from ledger.types import ValidatorSet

MAX_HISTORY_SIZE = 2**40


class HistoryError(ValueError):
    """A history or proof request names sizes or heights this node cannot serve."""


class PrunedError(HistoryError):
    """The state version asked for was pruned (`[storage] keep_recent_versions`): HTTP 410."""


def history_proof(hashes: list[bytes], trusted_height: int, new_height: int) -> HistoryProof:
    """The `HistoryProof` a light client trusting block `trusted_height` needs
    to accept header `new_height`, built from block hashes 1..new_height-1.

    Raises HistoryError if the heights do not fit the hashes.
    """
    new_size = new_height - 1
    if not 0 <= trusted_height < new_height or len(hashes) < new_size:
        raise HistoryError("cannot prove header %d from trusted height %d with %d block hashes"
                           % (new_height, trusted_height, len(hashes)))
    prefix = hashes[:new_size]
    old_size = max(0, trusted_height - 1)
    consistency = merkle.consistency_proof_from_hashes(prefix, old_size) if old_size else []
    inclusion = merkle.inclusion_proof_from_hashes(prefix, trusted_height - 1) if trusted_height else []
    return HistoryProof(tuple(consistency), tuple(inclusion))


class HistoryService:
    """Mixin for the runtime: proofs over the local block store."""

    store: Any
    _block_hash_cache: list[bytes]
    _epoch_change_cache: list[int]

    def _results_lag(self) -> int:
        """L (genesis results_lag): header h carries block h − L's results."""
        config = getattr(self, "consensus_config", None)
        return 1 if config is None else int(config.results_lag)

    def block_hashes(self, count: int) -> list[bytes]:
        """Hashes of blocks 1..count. Raises HistoryError beyond the tip.

        Scanning a block also notes whether its header hands over to a new
        validator set (`epoch_change_heights`)."""
        cache = self.__dict__.setdefault("_block_hash_cache", [])
        changes = self.__dict__.setdefault("_epoch_change_cache", [])
        if count > self.store.height:
            raise HistoryError("only %d blocks are committed, %d asked" % (self.store.height, count))
        while len(cache) < count:
            # the header alone: a pruned block ([storage] retain_blocks) keeps it
            header = self.store.header(len(cache) + 1)
            if header is None:
                raise HistoryError("block %d missing from the store" % (len(cache) + 1))
            if header.next_validators_hash != header.validators_hash:
                changes.append(header.height)
            cache.append(header.hash)
        return cache[:count]

    def epoch_change_heights(self, to_height: int) -> list[int]:
        """Heights <= `to_height` whose header hands over to a new validator set."""
        self.block_hashes(to_height)
        return [h for h in self.__dict__["_epoch_change_cache"] if h <= to_height]

    def _validator_set_by_hash(self, digest: bytes) -> ValidatorSet:
        genesis = getattr(self, "genesis_doc", None)
        candidates = [] if genesis is None else [genesis.validator_set()]
        candidates += [update.validators for update in reversed(self.store.validator_updates())]
        for vset in candidates:
            if vset.hash == digest:
                return vset
        raise HistoryError("no stored validator set hashes to %s" % digest.hex())

    def epoch_changes(self, from_height: int, to_height: int) -> dict[str, Any]:
        """The epoch-change proof a light client trusting header `from_height`
        (0: genesis) needs to hold the validator set in force after `to_height`.

        {"from", "to", "changes": [{"height", "header", "certificate",
        "validators" (the set it hands over to), "history" (HistoryProof from
        the previous entry, the first from `from_height`), "update" (the
        encoded `ledger.light.HeaderUpdate`)}]} — hex encodings; headers in
        (from, to] only. Raises HistoryError.
        """
        if not 0 <= from_height <= to_height <= MAX_HISTORY_SIZE:
            raise HistoryError("need 0 <= from <= to")
        heights = [h for h in self.epoch_change_heights(to_height) if h > from_height]
        hashes = self.block_hashes(heights[-1] - 1) if heights else []
        changes: list[dict[str, Any]] = []
        trusted = from_height
        for height in heights:
            block, cert = self.store.block(height), self.store.certificate(height)
            if block is None or cert is None:
                raise HistoryError("block or certificate %d missing from the store" % height)
            vset = self._validator_set_by_hash(block.header.next_validators_hash)
            proof = history_proof(hashes, trusted, height)
            update = HeaderUpdate(block.header, cert, proof, vset)
            changes.append({
                "height": height, "header": block.header.encode().hex(), "certificate": cert.encode().hex(),
                "validators": codec.encode(vset.to_wire()).hex(), "history": proof.encode().hex(),
                "update": update.encode().hex(),
            })
            trusted = height
        return {"from": from_height, "to": to_height, "changes": changes}

    def history_consistency(self, old: int, new: int) -> dict[str, Any]:
        """{"old", "new", "old_root", "new_root", "proof": [hex]}. Raises HistoryError."""
        if not 0 < old <= new <= MAX_HISTORY_SIZE:
            raise HistoryError("need 0 < old <= new")
        hashes = self.block_hashes(new)
        proof = merkle.consistency_proof_from_hashes(hashes, old)
        return {"old": old, "new": new, "old_root": merkle.root_from_hashes(hashes[:old]).hex(),
                "new_root": merkle.root_from_hashes(hashes).hex(), "proof": [p.hex() for p in proof]}

    def history_inclusion(self, height: int, size: int) -> dict[str, Any]:
        """{"height", "size", "index", "block_hash", "root", "proof": [hex]}. Raises HistoryError."""
        if not 0 < height <= size <= MAX_HISTORY_SIZE:
            raise HistoryError("need 0 < height <= size")
        hashes = self.block_hashes(size)
        proof = merkle.inclusion_proof_from_hashes(hashes, height - 1)
        return {"height": height, "size": size, "index": height - 1, "block_hash": hashes[height - 1].hex(),
                "root": merkle.root_from_hashes(hashes).hex(), "proof": [p.hex() for p in proof]}

    def state_proof(self, key: bytes, version: int) -> dict[str, Any]:
        """The value at `key` in state version `version` (after block `version`)
        with its proof; header version+L commits that state in `app_hash` (L =
        `_results_lag()`, genesis results_lag).

        {"key", "version", "value" (hex|None), "proof" (hex)}. Raises HistoryError
        for a version that is not committed yet.
        """
        if not 0 <= version <= self.store.height:
            raise HistoryError("state version %d is not committed (tip %d)" % (version, self.store.height))
        tree = self.executor.tree  # type: ignore[attr-defined]
        oldest = tree.oldest_version()
        if oldest is not None and version < oldest:
            raise PrunedError("state version %d is pruned: this node keeps versions >= %d "
                              "([storage] keep_recent_versions); ask an archive node" % (version, oldest))
        value = tree.get(key, version)
        return {"key": key.hex(), "version": version, "value": None if value is None else value.hex(),
                "proof": tree.prove(key, version).to_bytes().hex()}

    def tx_proof(self, tx_hash: bytes) -> dict[str, Any] | None:
        """Inclusion proofs of a committed tx and of its receipt, with the headers
        and certificates they lead to; None if the tx is not committed here.

        {"height", "index", "size", "tx" (hex), "proof": [hex], "header", "certificate"
        (hex of the encodings), "receipt": {"index", "size", "receipt" (hex), "proof",
        "header", "certificate", "header_height"} or None until block height+L exists
        (L: genesis results_lag; header h+L carries block h's receipts_root)}.
        """
        location = self.store.tx_location(tx_hash)
        if location is None:
            return None
        height, index = location
        block, cert = self.store.block(height), self.store.certificate_bytes(height)
        if block is None or cert is None:
            return None
        leaves = [tx.encode() for tx in block.txs]
        out: dict[str, Any] = {
            "height": height, "index": index, "size": len(leaves), "tx": leaves[index].hex(),
            "proof": [p.hex() for p in merkle.inclusion_proof(leaves, index)],
            "header": block.header.encode().hex(), "certificate": cert.hex(), "receipt": None,
        }
        carrier = height + self._results_lag()
        following, following_cert = self.store.block(carrier), self.store.certificate_bytes(carrier)
        receipts = self.store.receipts(height)
        if following is not None and following_cert is not None and receipts and index < len(receipts):
            encoded = [r.encode() for r in receipts]
            out["receipt"] = {
                "index": index, "size": len(encoded), "receipt": encoded[index].hex(),
                "proof": [p.hex() for p in merkle.inclusion_proof(encoded, index)],
                "header": following.header.encode().hex(), "certificate": following_cert.hex(),
                "header_height": carrier,
            }
        return out
