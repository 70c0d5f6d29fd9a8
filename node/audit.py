"""Audit packages: one settlement with everything needed to check it offline.

A regulator exports a package from any node (`careledger audit export`) and
checks it later, on another machine, trusting only genesis or a waypoint
(`careledger audit verify`). Nothing in the package is believed: every
byte either feeds a hash or signature check or is compared with proven data.

What a package holds (JSON, bytes as lowercase hex, format `careledger-audit/v1`):

- `epoch_changes`: every header up to T that hands over to a new validator
  set (encoded `ledger.light.HeaderUpdate`s: header, certificate by the
  outgoing set, the new set, history proof from the previous one), as
  `/light/epoch-changes` serves them; the light client follows them from
  genesis, so a package verifies across validator-set changes;
- `anchor`: the tip header T at export time with its certificate and the
  history proof from the last epoch-change header (or genesis) to it;
  verified by `ledger.light.LightClient` with the set then in force;
- `blocks`: header s (the block holding the `settlement_submit` tx),
  header s+L (whose `receipts_root` holds its receipt and whose `app_hash`
  the state after s) and, when L > 1, header s+L−1 (the state before s),
  each with its certificate and its inclusion proof in T's `history_root`.
  L is the chain's results lag (genesis `consensus_params.results_lag`, 1
  unless the chain pipelines: then the package has the two blocks s, s+1);
- `tx`, `receipt`: the settlement tx in s's `tx_root`, its receipt in s+L's
  `receipts_root` (pinned to the tx hash);
- `states`: JMT proofs at the versions the settlement used: the settlement
  record (and the interim one it trued up) after block s, against header
  s+L; the program parameters record and every input record referenced by the
  settlement (`references` / `*_ref`) before block s, against header s+L−1 —
  each reference's hash must equal the SHA-256 of the proven record.

Verification then re-runs `contracts.payments.mssp.settle` on the proven
inputs and parameters and sets the recomputed figures beside the recorded ones.
Every failure raises `AuditError` with a reason a person can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ledger import codec
from ledger.errors import LedgerError
from ledger.hashing import sha256
from ledger.light import HeaderUpdate, LightClient, LightClientError, TrustOptions, Waypoint
from ledger.types import CommitCertificate, Header, Tx, ValidatorSet

FORMAT = "careledger-audit/v1"
AUDIT_TRUSTING_PERIOD_MS = 2**63  # offline: trust genesis/waypoint for as long as the auditor chooses
STAGES = ("final", "interim")


class AuditError(Exception):
    """The package cannot be exported or does not verify; the message says why."""


@dataclass
class AuditReport:
    chain_id: str
    program_id: str
    settlement_id: str
    anchor_height: int
    settlement_height: int
    trusted_from: str
    rows: list[tuple[str, Any, Any]] = field(default_factory=list)  # (figure, recomputed, recorded)
    references: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, key, hash matches)

    @property
    def matches(self) -> bool:
        return all(recomputed == recorded for _, recomputed, recorded in self.rows) and all(
            ok for _, _, ok in self.references)

    def lines(self) -> list[str]:
        out = ["settlement %s (program %s) on chain %s" % (self.settlement_id, self.program_id, self.chain_id),
               "trusted from %s; anchor header %d; settlement recorded in block %d" % (
                   self.trusted_from, self.anchor_height, self.settlement_height),
               "proofs: headers, certificates, tx, receipt and %d state records verified" % (
                   2 + len(self.references)),
               "%-34s %22s %22s  %s" % ("figure", "recomputed", "recorded", "")]
        for name, recomputed, recorded in self.rows:
            out.append("%-34s %22s %22s  %s" % (name, _show(recomputed), _show(recorded),
                                               "ok" if recomputed == recorded else "MISMATCH"))
        for name, key, ok in self.references:
            out.append("input %-12s %s  %s" % (name, key, "hash ok" if ok else "HASH MISMATCH"))
        return out


def _show(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value) and value[1] != 0:
        return "%s/%s" % (value[0], value[1]) if value[1] != 1 else str(value[0])
    return json.dumps(value) if not isinstance(value, str) else value


# ------------------------------------------------------------------- export


def _get(client: Any, path: str) -> Any:
    try:
        response = client.get(path)
    except Exception as exc:  # noqa: BLE001 - httpx's errors, reported as the reason
        raise AuditError("cannot reach the node for %s: %s" % (path, exc)) from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise AuditError("GET %s: %d %s" % (path, response.status_code, response.text.strip()[:200]))
    return response.json()


def _latest_record(client: Any, key: bytes) -> Any:
    answer = _get(client, "/state/%s" % key.hex())
    if answer is None or answer.get("value") is None:
        return None
    return codec.decode(bytes.fromhex(answer["value"]))


def reference_keys(settlement: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(name, record key, hash) of every input record a settlement references:
    its `references` map and any `*_ref` entry of its inputs, sorted by name."""
    found: dict[str, tuple[str, bytes]] = {}
    for name, ref in sorted((settlement.get("references") or {}).items()):
        if isinstance(ref, dict) and isinstance(ref.get("key"), str) and isinstance(ref.get("hash"), bytes):
            found[str(name)] = (ref["key"], ref["hash"])
    inputs = settlement.get("inputs") if isinstance(settlement.get("inputs"), dict) else {}
    for name, ref in sorted(inputs.items()):
        if str(name).endswith("_ref") and isinstance(ref, dict) and isinstance(ref.get("key"), str):
            found.setdefault(str(name)[:-4], (ref["key"], ref.get("hash", b"")))
    return [(name, key, digest) for name, (key, digest) in sorted(found.items())]


def export_package(client: Any, program_id: str, stage: str | None = None) -> dict[str, Any]:
    """Collect the audit package of a program's settlement from the node behind `client`
    (an httpx.Client with the node's base URL). `stage` None: final, else interim.

    Raises AuditError (no such program or settlement, receipt not certified yet, node errors).
    """
    from contracts.payments.programs import make_settlement_id, program_key, settlement_key

    program = _latest_record(client, program_key(program_id))
    if not isinstance(program, dict):
        raise AuditError("no program %s on this chain" % program_id)
    if program.get("type") != "mssp":
        raise AuditError("program %s is %s; audit packages cover MSSP settlements" % (program_id, program.get("type")))
    settlement, settlement_id = None, ""
    for candidate in ([stage] if stage else list(STAGES)):
        settlement_id = make_settlement_id(program_id, "mssp", program["performance_year"], candidate)
        settlement = _latest_record(client, settlement_key(settlement_id))
        if isinstance(settlement, dict):
            break
    if not isinstance(settlement, dict):
        raise AuditError("program %s has no %s settlement" % (program_id, stage or "final or interim"))
    height = int(settlement["height"])
    genesis = _get(client, "/genesis")
    from node.config import genesis_from_json

    genesis_doc = genesis_from_json(genesis)
    lag = genesis_doc.consensus_params.results_lag  # the verifier checks it against its own genesis
    tx_hash = _find_settlement_tx(client, height, program_id, settlement["stage"])
    tx_answer = _get(client, "/tx/%s?prove=true" % tx_hash.hex())
    proof = (tx_answer or {}).get("proof")
    if not proof or not proof.get("receipt"):
        raise AuditError("the receipt of block %d is not certified yet (wait for block %d)" % (height, height + lag))
    tip = int(_get(client, "/status")["height"])
    anchor = _get(client, "/commit/%d" % tip)
    validators = genesis_doc.validator_set()
    from node.observer import fetched_history_proof

    def fetch(path: str) -> Any:
        answer = _get(client, path)
        if answer is None:
            raise AuditError("the node cannot serve %s" % path)
        return answer

    changes = fetch("/light/epoch-changes?from=0&to=%d" % tip)["changes"]
    last_change = changes[-1]["height"] if changes else 0
    anchor_history = (fetched_history_proof(fetch, last_change, tip).encode().hex()
                      if tip > last_change else None)
    cited = [(height, proof["header"], proof["certificate"]),
             (height + lag, proof["receipt"]["header"], proof["receipt"]["certificate"])]
    if lag > 1:  # header s+L−1 carries the state before s (with L = 1 that is header s itself)
        before = _get(client, "/commit/%d" % (height + lag - 1))
        if before is None:
            raise AuditError("the node cannot serve header %d" % (height + lag - 1))
        cited.insert(1, (height + lag - 1, before["encoded_header"], before["encoded_certificate"]))
    blocks = []
    for block_height, header_hex, cert_hex in cited:
        inclusion: list[str] = []
        if block_height < tip:
            inclusion = _get(client, "/history/inclusion?height=%d&size=%d" % (block_height, tip - 1))["proof"]
        blocks.append({"height": block_height, "header": header_hex, "certificate": cert_hex, "history": inclusion})
    states = [_state(client, settlement_key(settlement_id), height),
              _state(client, program_key(program_id), height - 1)]
    if settlement.get("estimate"):
        states.append(_state(client, settlement_key(str(settlement["estimate"])), height))
    for _, record_key, _ in reference_keys(settlement):
        states.append(_state(client, record_key.encode(), height - 1))
    return {
        "format": FORMAT, "chain_id": genesis["chain_id"], "program_id": program_id,
        "settlement_id": settlement_id, "genesis": genesis, "validators": codec.encode(validators.to_wire()).hex(),
        "epoch_changes": [change["update"] for change in changes],
        "anchor": {"height": tip, "header": anchor["encoded_header"], "certificate": anchor["encoded_certificate"],
                   "history": anchor_history},
        "blocks": blocks,
        "tx": {"tx": proof["tx"], "index": proof["index"], "size": proof["size"], "proof": proof["proof"]},
        "receipt": {k: proof["receipt"][k] for k in ("receipt", "index", "size", "proof")},
        "states": states,
    }


def _state(client: Any, key: bytes, version: int) -> dict[str, Any]:
    answer = _get(client, "/proof/state/%s?version=%d" % (key.hex(), version))
    if answer is None:
        raise AuditError("the node cannot prove %r at state version %d" % (key, version))
    return {"key": key.decode(), "version": version, "value": answer["value"], "proof": answer["proof"]}


def _find_settlement_tx(client: Any, height: int, program_id: str, stage: str) -> bytes:
    block = _get(client, "/blocks/%d" % height)
    if block is None:
        raise AuditError("block %d is not on this node" % height)
    for raw in block["txs"]:
        tx = Tx.decode(bytes.fromhex(raw))
        body = tx.body if isinstance(tx.body, dict) else {}
        if tx.type == "settlement_submit" and body.get("program_id") == program_id and body.get("stage") == stage:
            return tx.hash
    raise AuditError("no settlement_submit for %s in block %d" % (program_id, height))


def save_package(path: str, package: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(package, handle, indent=1, sort_keys=True)
        handle.write("\n")


# ------------------------------------------------------------------- verify


def load_package(path: str) -> dict[str, Any]:
    """Raises AuditError if the file is not a JSON audit package."""
    try:
        with open(path, "rb") as handle:
            package = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AuditError("not a readable audit package: %s" % exc) from exc
    if not isinstance(package, dict) or package.get("format") != FORMAT:
        raise AuditError("not an audit package of format %s" % FORMAT)
    return package


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise AuditError("%s must be hex text" % what)
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise AuditError("%s is not valid hex" % what) from exc


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise AuditError("%s must be a list of hex hashes" % what)
    return [_hex(item, what) for item in value]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AuditError("%s must be a non-negative integer" % what)
    return value


def verify_package(package: Any, genesis: Any = None, waypoint: str | None = None,
                   results_lag: int | None = None) -> AuditReport:
    """Check `package` against `genesis` (a node.config.Genesis; default: the one in the
    package, which only proves self-consistency) or against a waypoint naming its
    anchor header. `results_lag` (L: header v+L carries the state after v and
    block v's receipts) defaults to the genesis's `consensus_params.results_lag`;
    with a waypoint and the package's own genesis, pass it (a root-of-trust fact).
    Returns the report; raises AuditError saying what failed.
    """
    try:
        return _verify(package, genesis, waypoint, results_lag)
    except AuditError:
        raise
    except LightClientError as exc:
        raise AuditError("proof check failed (%s): %s" % (type(exc).__name__, exc)) from exc
    except (LedgerError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise AuditError("malformed package (%s): %s" % (type(exc).__name__, exc)) from exc


def _verify(package: Any, genesis: Any, waypoint: str | None, results_lag: int | None = None) -> AuditReport:
    from contracts.payments import mssp
    from contracts.payments.programs import (
        _inputs_from_echo, make_settlement_id, mssp_parameters_of, program_key, settlement_key, to_wire,
    )
    from node.config import genesis_from_json

    if not isinstance(package, dict) or package.get("format") != FORMAT:
        raise AuditError("not an audit package of format %s" % FORMAT)
    trusted_from = "genesis file"
    if genesis is None:
        genesis = genesis_from_json(package["genesis"])
        trusted_from = "the genesis inside the package (pass --genesis to pin it)"
    chain_id = genesis.chain_id
    lag = genesis.consensus_params.results_lag if results_lag is None else results_lag
    if package.get("chain_id") != chain_id:
        raise AuditError("package is for chain %r, genesis is %r" % (package.get("chain_id"), chain_id))
    validators = genesis.validator_set()
    offered = ValidatorSet.from_wire(codec.decode(_hex(package["validators"], "validators")))
    if offered.hash != validators.hash:
        raise AuditError("the package's validator set is not the genesis set")
    changes_part = package.get("epoch_changes") or []
    if not isinstance(changes_part, list):
        raise AuditError("epoch_changes must be a list of hex header updates")
    changes = [HeaderUpdate.from_wire(codec.decode(_hex(item, "epoch change %d" % index)))
               for index, item in enumerate(changes_part)]
    # every set a header of this package may name: genesis's and each one handed over to
    sets = {validators.hash: validators}
    for change in changes:
        if change.next_validators is not None:
            sets[change.next_validators.hash] = change.next_validators

    anchor_part = package["anchor"]
    anchor = Header.decode(_hex(anchor_part["header"], "anchor header"))
    anchor_cert = CommitCertificate.decode(_hex(anchor_part["certificate"], "anchor certificate"))
    if anchor_part.get("height") != anchor.height:
        raise AuditError("anchor height %r does not match its header (%d)" % (anchor_part.get("height"), anchor.height))
    options = TrustOptions(trusting_period_ms=AUDIT_TRUSTING_PERIOD_MS)
    if waypoint is not None:
        # the waypoint pins the anchor; its set is whichever offered set hashes to its validators_hash
        anchor_set = sets.get(anchor.validators_hash)
        if anchor_set is None:
            raise AuditError("the package holds no validator set matching the anchor's validators_hash")
        next_set = sets.get(anchor.next_validators_hash)
        client = LightClient.from_waypoint(chain_id, Waypoint.parse(waypoint), anchor, anchor_set,
                                           next_set, options=options, results_lag=lag)
        anchor_cert.verify(chain_id, anchor_set, anchor.hash, anchor.height)
        trusted_from = "waypoint %s" % waypoint
    else:
        client = LightClient.from_genesis(chain_id, validators, genesis.genesis_time_ms, options, lag)
        if changes:
            # each hand-over certified by the outgoing set, in order (all or nothing)
            if changes[-1].header.height > anchor.height:
                raise AuditError("epoch change %d is above the anchor %d" % (changes[-1].header.height, anchor.height))
            client.verify_epoch_changes(changes, anchor.time)
        if anchor.height > client.trusted.height:
            history = anchor_part.get("history")
            proof = None if history is None else _hex(history, "anchor history proof")
            client.verify_header(anchor, anchor_cert, anchor.time, proof)
        else:  # the anchor is the last epoch-change header: already verified, must be the same
            client.verify_header(anchor, anchor_cert, anchor.time)
        if client.trusted.validators.hash != anchor.next_validators_hash:
            raise AuditError("the package's epoch changes do not lead to the anchor's validator set")

    headers: dict[int, Header] = {anchor.height: anchor}
    for index, part in enumerate(package["blocks"]):
        header = Header.decode(_hex(part["header"], "block header %d" % index))
        cert = CommitCertificate.decode(_hex(part["certificate"], "block certificate %d" % index))
        if part.get("height") != header.height:
            raise AuditError("block %d: height %r does not match its header" % (index, part.get("height")))
        if header.height < anchor.height:
            client.verify_past_header(header, _hashes(part["history"], "history proof"), anchor)
        elif header.hash != anchor.hash:
            raise AuditError("block header %d is not the anchor header" % header.height)
        signers = sets.get(header.validators_hash)
        if signers is None:
            raise AuditError("header %d names a validator set the package does not hold" % header.height)
        try:
            cert.verify(chain_id, signers, header.hash, header.height)
        except LedgerError as exc:
            raise AuditError("certificate of header %d: %s" % (header.height, exc)) from exc
        headers[header.height] = header
    expected_blocks = 2 if lag == 1 else 3
    if len(package["blocks"]) != expected_blocks:
        raise AuditError("a package carries exactly %d blocks: the settlement's s and headers s+L-1, s+L "
                         "(results lag L = %d)" % (expected_blocks, lag) if lag > 1 else
                         "a package carries exactly two blocks: the settlement's and the next")
    settled_at = Header.decode(_hex(package["blocks"][0]["header"], "block header")).height
    receipt_at = client.results_header_height(settled_at)  # s + L
    for needed in (receipt_at - 1, receipt_at):
        if needed not in headers:
            raise AuditError("the package lacks header %d (it certifies the settlement's %s; results lag %d)"
                             % (needed, "receipt" if needed == receipt_at else "inputs", lag))

    part = package["tx"]
    tx = client.verify_tx_inclusion(headers[settled_at], _hex(part["tx"], "tx"), _int(part["index"], "tx index"),
                                    _int(part["size"], "tx count"), _hashes(part["proof"], "tx proof"))
    program_id, settlement_id = package["program_id"], package["settlement_id"]
    body = tx.body if isinstance(tx.body, dict) else {}
    if tx.type != "settlement_submit" or body.get("program_id") != program_id:
        raise AuditError("the proven transaction is not the settlement of program %s" % program_id)
    part = package["receipt"]
    receipt_bytes = _hex(part["receipt"], "receipt")
    client.verify_receipt(headers[receipt_at], receipt_bytes, _int(part["index"], "receipt index"),
                          _int(part["size"], "receipt count"), _hashes(part["proof"], "receipt proof"), tx.hash,
                          block_height=settled_at)
    receipt = codec.decode(receipt_bytes)
    if receipt[1] is not True:
        raise AuditError("the settlement transaction failed on the ledger: %s %s" % (receipt[2], receipt[3]))

    proven: dict[tuple[str, int], bytes | None] = {}
    for index, state in enumerate(package["states"]):
        version = _int(state["version"], "state version")
        carrier = client.results_header_height(version)  # version + L
        if carrier not in headers:
            raise AuditError("state %d is proven at version %d, but header %d is not in the package"
                             % (index, version, carrier))
        value = None if state["value"] is None else _hex(state["value"], "state value")
        key = state["key"]
        if not isinstance(key, str):
            raise AuditError("state %d: key must be text" % index)
        client.verify_state(headers[carrier], key.encode(), value, _hex(state["proof"], "state proof"),
                            version=version)
        proven[(key, version)] = value

    def record(key: bytes, version: int, what: str) -> Any:
        raw = proven.get((key.decode(), version))
        if raw is None:
            raise AuditError("the package proves no %s (%s at version %d)" % (what, key.decode(), version))
        return codec.decode(raw)

    settlement = record(settlement_key(settlement_id), settled_at, "settlement record")
    program = record(program_key(program_id), settled_at - 1, "program record")
    if settlement.get("id") != settlement_id or settlement.get("program_id") != program_id:
        raise AuditError("the proven settlement record is not %s of program %s" % (settlement_id, program_id))
    if settlement.get("height") != settled_at:
        raise AuditError("the settlement record says block %r, the proven tx is in block %d"
                         % (settlement.get("height"), settled_at))
    stage = mssp.SettlementStage(settlement["stage"])
    if settlement_id != make_settlement_id(program_id, "mssp", program["performance_year"], stage.value):
        raise AuditError("settlement id does not follow from the program and stage")

    report = AuditReport(chain_id, program_id, settlement_id, anchor.height, settled_at, trusted_from)
    for name, key, digest in reference_keys(settlement):
        raw = proven.get((key, settled_at - 1))
        if (key, settled_at - 1) not in proven:
            raise AuditError("the package proves no input record %s (%s)" % (name, key))
        report.references.append((name, key, raw is not None and sha256(raw) == digest))

    params = mssp_parameters_of(program)
    result = mssp.settle(params, _inputs_from_echo(program_id, settlement["inputs"]), stage)
    recomputed = to_wire(result)
    recorded = settlement.get("result") or {}
    for name in sorted(set(recomputed) | set(recorded)):
        report.rows.append((name, recomputed.get(name), recorded.get(name)))
    amount_due = result.earned_cents
    if settlement.get("estimate"):
        interim = record(settlement_key(str(settlement["estimate"])), settled_at, "interim settlement")
        estimate = mssp.settle(params, _inputs_from_echo(program_id, interim["inputs"]), mssp.SettlementStage.INTERIM)
        amount_due = mssp.true_up(estimate, result).true_up_cents
    report.rows.append(("amount_due_cents", amount_due, settlement.get("amount_due_cents")))
    return report
