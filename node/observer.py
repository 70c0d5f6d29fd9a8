"""The regulator's observer: every synced header re-verified by a light client.

An observer node (`careledger observe`) syncs blocks like any node, but a
regulator should not have to trust that sync code or its peers. So
`LightObserver` runs `ledger.light.LightClient`, trusted from genesis, over
every committed block: header, certificate (a quorum of the set in force),
history consistency with the previous trusted head, every transaction's
inclusion in `tx_root`, and every receipt of block h − L in header h's
`receipts_root` (L: genesis results_lag, 1 unless the chain pipelines).
`verified_height` is the last height that passed; figures the explorer shows
are marked verified only when they rest on verified data.

A failed check stops verification (the node keeps serving, marked
unverified) and is reported on `/verified`; two certified headers for one
height halt the light client and are kept as evidence.

`ExplorerIndex` is the explorer's incremental index over committed blocks
(transaction types, programs, settlements, per-provider quality and cost);
it serves validators too, where nothing is marked verified.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import structlog

from ledger import codec, merkle
from ledger.errors import LedgerError
from ledger.light import ForkDetected, LightClient, LightClientError, TrustOptions
from ledger.types import Block, CommitCertificate

from node.history import HistoryError, history_proof

log = structlog.get_logger("careledger.observer")

MAX_SETTLEMENTS_SHOWN = 200
MAX_PROGRAMS_SHOWN = 200


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class LightObserver:
    """Verifies a runtime's committed blocks with a light client, in height order."""

    def __init__(self, runtime: Any, options: TrustOptions | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        genesis = runtime.genesis_doc
        self.runtime = runtime
        self.clock = clock
        self.results_lag = genesis.consensus_params.results_lag  # from this node's own (trusted) genesis
        self.client = LightClient.from_genesis(genesis.chain_id, genesis.validator_set(),
                                               genesis.genesis_time_ms, options, self.results_lag)
        self.failure: dict[str, Any] | None = None
        self.verified_txs = 0
        self.verified_receipts = 0
        self._gauges: Any = None

    @property
    def verified_height(self) -> int:
        return self.client.trusted.height

    def attach(self) -> None:
        """Verify what is stored already, then every block as it commits."""
        self.catch_up()
        self.runtime.driver.on_commit.append(self._on_commit)

    def _on_commit(self, block: Block, certificate: CommitCertificate, executed: Any) -> None:
        self.catch_up()

    def catch_up(self) -> None:
        """Verify stored blocks above the verified height, stopping at the first failure."""
        store = self.runtime.store
        while self.failure is None and self.verified_height < store.height:
            height = self.verified_height + 1
            block, cert = store.block(height), store.certificate(height)
            if block is None or cert is None:
                self._fail(height, "block or certificate missing from the store")
                break
            self.verify_block(block, cert)
        self._export_metrics()

    def verify_block(self, block: Block, certificate: CommitCertificate) -> bool:
        """Verify one block's header, transactions and block h − L's receipts.

        Returns whether it passed; a failure is recorded (never raised).
        """
        trusted = self.client.trusted
        height = block.height
        try:
            proof = history_proof(self.runtime.block_hashes(height - 1), trusted.height, height)
            header = block.header
            leaves = [tx.encode() for tx in block.txs]
            lagged = height - self.results_lag  # header h carries block h − L's receipts_root
            receipts = [r.encode() for r in (self.runtime.store.receipts(lagged) or [])] if lagged >= 1 else []
            # whole-block checks first, so a header is never trusted with contents that fail
            if merkle.root(leaves) != header.tx_root:
                raise LightClientError("transaction inclusion: the block's transactions do not match tx_root")
            if lagged >= 1 and merkle.root(receipts) != header.receipts_root:
                raise LightClientError("receipt inclusion: block %d's receipts do not match receipts_root"
                                       % lagged)
            next_set = None
            if header.next_validators_hash != header.validators_hash:
                next_set = self.runtime.replica.validators_for(height + 1)
            self.client.verify_header(header, certificate, self.clock(), proof, next_set)
            for index, leaf in enumerate(leaves):
                self.client.verify_tx_inclusion(header, leaf, index, len(leaves),
                                                merkle.inclusion_proof(leaves, index))
            self.verified_txs += len(leaves)
            if lagged >= 1:
                for index, leaf in enumerate(receipts):
                    self.client.verify_receipt(header, leaf, index, len(receipts),
                                               merkle.inclusion_proof(receipts, index), block_height=lagged)
                self.verified_receipts += len(receipts)
        except ForkDetected as exc:
            self._fail(height, str(exc), evidence=exc.evidence.encode().hex())
            return False
        except (LightClientError, LedgerError, HistoryError) as exc:
            self._fail(height, "%s: %s" % (type(exc).__name__, exc))
            return False
        return True

    def _fail(self, height: int, reason: str, evidence: str | None = None) -> None:
        self.failure = {"height": height, "reason": reason, "evidence": evidence}
        log.error("light client refused a synced header", height=height, reason=reason)

    def status(self) -> dict[str, Any]:
        trusted = self.client.trusted
        return {
            "enabled": True, "verified_height": trusted.height, "height": self.runtime.store.height,
            "trusted_hash": None if trusted.header_hash is None else trusted.header_hash.hex(),
            "trusted_time_ms": trusted.time_ms, "validators_hash": trusted.validators.hash.hex(),
            "verified_txs": self.verified_txs, "verified_receipts": self.verified_receipts,
            "halted": self.client.halted, "failure": self.failure,
        }

    def verify_state(self, key: bytes) -> dict[str, Any]:
        """The latest certified value at `key`, checked by the light client.

        {"key", "value" (hex|None), "height" (state version), "verified": bool, "reason"}.
        """
        runtime = self.runtime
        height = runtime.store.height
        version = max(0, height - self.results_lag)  # header `height` carries the state after h − L
        value = runtime.executor.tree.get(key, version)
        out: dict[str, Any] = {"key": key.hex(), "value": None if value is None else value.hex(),
                               "height": version, "verified": False, "reason": None}
        verified = self.client.verified_header(height) if height >= 1 and not self.client.halted else None
        if verified is None:
            out["reason"] = "header %d not verified by the light client" % height
            return out
        try:
            self.client.verify_state(verified.header, key, value, runtime.executor.tree.prove(key, version),
                                     version=version)
        except LightClientError as exc:
            out["reason"] = str(exc)
            return out
        out["verified"] = True
        return out

    def _export_metrics(self) -> None:
        """`<ns>_observer_verified_height` and `_observer_failed` in the node's registry."""
        metrics = getattr(self.runtime, "metrics", None)
        if metrics is None:
            return
        if self._gauges is None:
            from prometheus_client import Gauge

            self._gauges = (
                Gauge("observer_verified_height", "Last height the light client verified",
                      namespace=metrics.namespace, registry=metrics.registry),
                Gauge("observer_verification_failed", "1 once the light client refused a synced header",
                      namespace=metrics.namespace, registry=metrics.registry),
            )
        self._gauges[0].set(self.verified_height)
        self._gauges[1].set(0 if self.failure is None else 1)


def attach_light_observer(runtime: Any) -> LightObserver:
    """Create and hook the light observer of an observer runtime (node/node.py calls this)."""
    observer = LightObserver(runtime)
    observer.attach()
    return observer


# ----------------------------------------------------------------- explorer


def _decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return codec.decode(raw)
    except LedgerError:
        return None


def _text(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


class ExplorerIndex:
    """What the explorer page shows, indexed once per committed block."""

    def __init__(self) -> None:
        self.height = 0
        self.tx_types: Counter[str] = Counter()
        self.failed_txs = 0
        self.programs: dict[str, int] = {}  # id -> height of its last change
        self.settlements: dict[str, int] = {}  # id -> height recorded
        self.quality: dict[tuple[str, str], dict[str, Any]] = {}  # (provider, measure) -> figure
        self.costs: dict[str, dict[str, Any]] = {}  # billing npi -> figure
        self.blocks: list[dict[str, Any]] = []  # the most recent blocks

    def catch_up(self, store: Any) -> None:
        """Index the stored blocks above `height`; on a validator that prunes
        (`[storage] retain_blocks`) the figures cover the retained blocks only."""
        while self.height < store.height:
            height = self.height + 1
            block = store.block(height)
            if block is None:
                earliest = store.earliest_height()
                if height < earliest:  # pruned: go on from the oldest retained block
                    self.height = earliest - 1
                    continue
                return
            self.ingest(block, store.receipts(height) or [])
            self.height = height

    def ingest(self, block: Block, receipts: list[Any]) -> None:
        header = block.header
        self.blocks.append({"height": header.height, "view": header.view, "time": header.time,
                            "hash": block.hash.hex(), "txs": len(block.txs), "proposer": header.proposer.hex()})
        del self.blocks[:-20]
        for tx, receipt in zip(block.txs, receipts):
            self.tx_types[tx.type] += 1
            if not receipt.ok:
                self.failed_txs += 1
                continue
            body = tx.body if isinstance(tx.body, dict) else {}
            if tx.type in ("program_register", "program_sign") and isinstance(body.get("program_id"), str):
                self.programs[body["program_id"]] = block.height
            for event in receipt.events:
                if isinstance(event, dict) and event.get("type") == "settlement_recorded":
                    self.settlements[str(event.get("settlement_id"))] = block.height
                if isinstance(event, dict) and event.get("type") == "quality_result":
                    rate = event.get("rate")
                    self.quality[(str(event.get("provider")), str(event.get("measure_id")))] = {
                        "provider": str(event.get("provider")), "measure_id": str(event.get("measure_id")),
                        "rate": list(rate) if isinstance(rate, (list, tuple)) else None, "height": block.height}
            if tx.type == "claim_submit":
                for line in body.get("lines", []) if isinstance(body.get("lines"), list) else []:
                    if not isinstance(line, dict):
                        continue
                    npi = _text(line.get("billing_npi"))
                    figure = self.costs.setdefault(npi, {"provider": npi, "lines": 0, "allowed_cents": 0,
                                                         "paid_cents": 0, "height": 0})
                    figure["lines"] += 1
                    for name in ("allowed_cents", "paid_cents"):
                        if isinstance(line.get(name), int) and not isinstance(line.get(name), bool):
                            figure[name] += line[name]
                    figure["height"] = block.height


def explorer_summary(runtime: Any) -> dict[str, Any]:
    """The JSON the explorer page draws; `verified` marks come from the light observer."""
    from contracts.payments.programs import program_key, settlement_key

    index = runtime.__dict__.setdefault("_explorer_index", ExplorerIndex())
    index.catch_up(runtime.store)
    light: LightObserver | None = getattr(runtime, "light", None)
    verified_height = 0 if light is None else light.verified_height
    height = runtime.store.height
    status = runtime.status()
    genesis_doc = getattr(runtime, "genesis_doc", None)
    lag = 1 if genesis_doc is None else genesis_doc.consensus_params.results_lag

    def data_verified(at_height: int) -> bool:
        # a tx of block h and its receipt (in header h+L) are both checked once h+L is verified
        return light is not None and at_height + lag <= verified_height

    def record(key: bytes) -> dict[str, Any]:
        if light is not None:
            answer = light.verify_state(key)
        else:
            value = runtime.executor.tree.get(key, max(0, height - lag))
            answer = {"value": None if value is None else value.hex(), "verified": False,
                      "reason": "this node runs no light client", "height": max(0, height - lag)}
        value = _decode(bytes.fromhex(answer["value"])) if answer.get("value") else None
        return {"record": _jsonable(value), "verified": answer["verified"], "reason": answer.get("reason"),
                "proven_at": answer.get("height")}

    programs = []
    for program_id in sorted(index.programs)[:MAX_PROGRAMS_SHOWN]:
        entry = record(program_key(program_id))
        rec = entry["record"] if isinstance(entry["record"], dict) else {}
        programs.append({"id": program_id, "type": rec.get("type"), "status": rec.get("status"),
                         "performance_year": rec.get("performance_year"), "participants": rec.get("participants"),
                         "verified": entry["verified"], "reason": entry["reason"]})
    settlements = []
    for settlement_id in sorted(index.settlements)[:MAX_SETTLEMENTS_SHOWN]:
        entry = record(settlement_key(settlement_id))
        rec = entry["record"] if isinstance(entry["record"], dict) else {}
        result = rec.get("result") if isinstance(rec.get("result"), dict) else {}
        settlements.append({
            "id": settlement_id, "program_id": rec.get("program_id"), "stage": rec.get("stage"),
            "period": rec.get("period"), "amount_due_cents": rec.get("amount_due_cents"),
            "earned_cents": result.get("earned_cents"), "height": rec.get("height"),
            "verified": entry["verified"], "reason": entry["reason"]})
    return {
        "chain": {
            "chain_id": runtime.chain_id, "height": height, "view": status.get("view"),
            "role": status.get("role"), "moniker": status.get("moniker"),
            "verified_height": verified_height if light is not None else None,
            "height_verified": light is not None and light.failure is None and verified_height == height and height > 0,
            "light_client": None if light is None else light.status(),
            "validators": runtime.validators(), "evidence": runtime.evidence(),
            "recent_blocks": list(reversed(index.blocks)),
        },
        "tx_types": [{"type": t, "count": n, "verified": light is not None and verified_height >= index.height}
                     for t, n in sorted(index.tx_types.items())],
        "failed_txs": index.failed_txs,
        "programs": programs,
        "settlements": settlements,
        "quality": [dict(f, verified=data_verified(f["height"])) for _, f in sorted(index.quality.items())],
        "costs": [dict(f, verified=data_verified(f["height"])) for _, f in sorted(index.costs.items())],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {_text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ------------------------------------------------- light-client queries (CLI)


class QueryError(Exception):
    """A served answer does not verify; the message says which check failed."""


def fetched_history_proof(fetch: Callable[[str], Any], trusted_height: int, new_height: int) -> Any:
    """The `HistoryProof` taking a light client from trusted header `trusted_height`
    (0: genesis) to header `new_height`, from a node's /history routes.

    `fetch(path)` returns the decoded JSON of a GET (and raises on errors).
    Nothing fetched is believed: the light client checks both proofs.
    """
    from ledger.light import HistoryProof

    if trusted_height == 0:
        return HistoryProof()
    old_size, new_size = trusted_height - 1, new_height - 1
    consistency: list[bytes] = []
    if old_size > 0:
        consistency = [bytes.fromhex(p) for p in
                       fetch("/history/consistency?old=%d&new=%d" % (old_size, new_size))["proof"]]
    inclusion = [bytes.fromhex(p) for p in
                 fetch("/history/inclusion?height=%d&size=%d" % (trusted_height, new_size))["proof"]]
    return HistoryProof(tuple(consistency), tuple(inclusion))


def fetched_epoch_changes(fetch: Callable[[str], Any], from_height: int, to_height: int) -> list[Any]:
    """The encoded `HeaderUpdate`s a node lists for (from_height, to_height]
    (`/light/epoch-changes`), as wire lists for `LightClient.verify_epoch_changes`."""
    answer = fetch("/light/epoch-changes?from=%d&to=%d" % (from_height, to_height))
    return [codec.decode(bytes.fromhex(change["update"])) for change in answer["changes"]]


def follow_to_header(light: LightClient, fetch: Callable[[str], Any], header: Any, certificate: Any,
                     now_ms: int) -> Any:
    """Verify `header` (a Header or its bytes) with `light`, first following
    every validator-set change the node lists between the trusted head and it.

    A node that leaves out a hand-over only makes the header fail to verify
    (it names a set the client does not hold). Returns the verified Header;
    raises what the light client raises (and what `fetch` raises).
    """
    from ledger.types import Header

    head = header if isinstance(header, Header) else Header.decode(header)
    trusted = light.trusted.height
    if head.height > trusted:
        updates = fetched_epoch_changes(fetch, trusted, head.height)
        if updates:
            light.verify_epoch_changes(updates, now_ms)
            trusted = light.trusted.height
    if head.height <= trusted:  # already verified (it is an epoch-change header), or a recheck
        return light.verify_header(head, certificate, now_ms)
    proof = fetched_history_proof(fetch, trusted, head.height)
    return light.verify_header(head, certificate, now_ms, proof)


def verify_cited_header(light: LightClient, fetch: Callable[[str], Any], header: Any, certificate: Any,
                        now_ms: int) -> Any:
    """Verify a header an answer cites, wherever it lies relative to the root of trust.

    At or above the trusted head: `follow_to_header`. Below a waypoint (a root
    of trust that is not genesis): the header's inclusion in the waypoint
    header's history (blocks 1..H−1), fetched with `fetch`. Returns the
    verified Header; raises what the light client or `fetch` raises.
    """
    from ledger.types import Header

    head = header if isinstance(header, Header) else Header.decode(header)
    trusted = light.trusted.height
    if head.height < trusted and light.verified_header(head.height) is None:
        path = fetch("/history/inclusion?height=%d&size=%d" % (head.height, trusted - 1))["proof"]
        return light.verify_past_header(head, [bytes.fromhex(p) for p in path])
    return follow_to_header(light, fetch, head, certificate, now_ms)


def verify_tx_answer(client: Any, answer: dict[str, Any], light: LightClient,
                     now_ms: int | None = None) -> dict[str, Any]:
    """Check a `/tx/<hash>?prove=true` answer with `light` (a light client
    trusted from genesis or from a waypoint).

    Follows the validator-set changes the node lists up to header h
    (`/light/epoch-changes`), verifies header h (by history inclusion when it
    lies below a waypoint), the tx's inclusion in its `tx_root`, then — when
    the answer has it — header h+L the same way (L: `light.results_lag`, from
    the root of trust) and the receipt in its `receipts_root` pinned to the tx hash. Returns {"height", "tx": Tx,
    "receipt": wire or None}. Raises QueryError (a LightClientError's name
    and message when a check failed; Expired: the root of trust is older than
    the trusting period).
    """

    def fetch(path: str) -> Any:
        return _fetch(client, path)

    try:
        tx_hash = bytes.fromhex(answer["hash"])
        proof = answer.get("proof")
        if not isinstance(proof, dict):
            raise QueryError("the node sent no proof (status %s)" % answer.get("status"))
        now = wall_clock_ms() if now_ms is None else now_ms
        header = verify_cited_header(light, fetch, bytes.fromhex(proof["header"]),
                                     bytes.fromhex(proof["certificate"]), now)
        tx = light.verify_tx_inclusion(header, bytes.fromhex(proof["tx"]), proof["index"], proof["size"],
                                       [bytes.fromhex(p) for p in proof["proof"]])
        if tx.hash != tx_hash:
            raise QueryError("the proven transaction has hash %s, not %s" % (tx.hash.hex(), tx_hash.hex()))
        receipt_wire = None
        part = proof.get("receipt")
        if part:
            following = verify_cited_header(light, fetch, bytes.fromhex(part["header"]),
                                            bytes.fromhex(part["certificate"]), now)
            carrier = light.results_header_height(header.height)
            if following.height != carrier:
                raise QueryError("the receipt's header is %d, not %d (results lag %d)"
                                 % (following.height, carrier, light.results_lag))
            receipt_bytes = bytes.fromhex(part["receipt"])
            light.verify_receipt(following, receipt_bytes, part["index"], part["size"],
                                 [bytes.fromhex(p) for p in part["proof"]], tx_hash, block_height=header.height)
            receipt_wire = codec.decode(receipt_bytes)
        return {"height": header.height, "tx": tx, "receipt": receipt_wire}
    except QueryError:
        raise
    except LightClientError as exc:
        raise QueryError("%s: %s" % (type(exc).__name__, exc)) from exc
    except (LedgerError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise QueryError("malformed answer (%s): %s" % (type(exc).__name__, exc)) from exc


def _fetch(client: Any, path: str) -> Any:
    response = client.get(path)
    if response.status_code != 200:
        raise QueryError("GET %s: %d %s" % (path, response.status_code, response.text.strip()[:200]))
    return response.json()
