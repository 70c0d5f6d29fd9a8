#!/usr/bin/env python3
"""Ingest FHIR R4 ExplanationOfBenefit resources as CareLedger `claim_submit` txs.

Runs at the submitting organisation, outside the deterministic core:

1. read EOBs from ndjson files, Bundle JSON or single-resource JSON;
2. normalise the known deviations of CMS Blue Button 2.0 (v1, STU3-shaped) EOBs
   — see `KNOWN_DEVIATIONS` — then validate with `fhir.resources.R4B`; anything
   still invalid is rejected with the validator's first error;
3. map each EOB to a claim body; patients get random 16-byte pseudonyms from the
   local table `--pseudonyms` (a JSON file that never leaves the organisation and
   never goes on the ledger); documents are salted commitments
   sha256(salt ‖ canonical resource) with a random salt kept in that same file;
4. `--dry-run`: apply the txs through `contracts.engine.apply_block` on an in-memory
   ledger with a genesis-like payer org + account, print
   `resources=<n> claims=<accepted> rejected=<n>` and one line per rejection.
   Otherwise sign and POST each tx to `--node URL` `/tx` (see `post_transactions`).

`--export-group PROGRAM` writes an ATR-shaped FHIR Group (Da Vinci ATR member
attribution list) of the patients in `--attributed FILE` (a JSON list of pseudonym
hex strings), or of every ingested patient when no file is given.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pathlib
import re
import secrets
import sys
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ledger import codec  # noqa: E402
from ledger.types import Tx  # noqa: E402

from contracts import accounts, costs  # noqa: E402
from contracts.engine import BlockContext, apply_block  # noqa: E402
from contracts.state import StateView  # noqa: E402

CHAIN_ID = "careledger-dev"
ISO_4217 = "urn:iso:std:iso:4217"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
TAX_SYSTEMS = ("http://terminology.hl7.org/CodeSystem/v2-0203", "urn:oid:2.16.840.1.113883.4.4")
BB = "https://bluebutton.cms.gov/resources/variables/"
KIND_BY_EOB_TYPE = {"INPATIENT": "inpatient", "SNF": "inpatient", "OUTPATIENT": "outpatient", "HHA": "outpatient",
                    "HOSPICE": "outpatient", "CARRIER": "professional", "DME": "dme"}
ALLOWED_CODES = ("line_alowd_chrg_amt", "eligible")
PAID_CODES = ("line_nch_pmt_amt", "rev_cntr_pmt_amt_amt", "benefit")
PATIENT_PAID_CODES = ("rev_cntr_ptnt_rspnsblty_pmt",)
KNOWN_DEVIATIONS = """\
Money with STU3 `code`/`system` → R4 `currency`; STU3 element names → R4:
information→supportingInfo, careTeamLinkId→careTeamSequence,
diagnosisLinkId→diagnosisSequence, item.service→productOrService,
totalCost→total[submitted], organization→provider (when provider is absent or is a
CMS provider number), insurance object→[{focal: true, coverage}]; hospitalization
dropped (dates kept in billablePeriod); missing insurer → CMS; missing use →
claim, outcome → complete, created → billablePeriod end; an item without a
product code gets the data-absent-reason code `not-applicable`."""


class Rejected(Exception):
    """An EOB that cannot become a claim; the message is the reason printed."""


# --------------------------------------------------------------- reading


def read_resources(paths: Iterable[pathlib.Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        text = path.read_text()
        if path.suffix == ".ndjson":
            out.extend(json.loads(line) for line in text.splitlines() if line.strip())
            continue
        data = json.loads(text)
        if data.get("resourceType") == "Bundle":
            out.extend(entry["resource"] for entry in data.get("entry", []) if "resource" in entry)
        else:
            out.append(data)
    return out


# --------------------------------------------------------------- normalisation


def _fix_money(node: Any) -> None:
    if isinstance(node, dict):
        if "value" in node and node.get("system") == ISO_4217:
            node.pop("system")
            node["currency"] = node.pop("code", "USD")
        for value in node.values():
            _fix_money(value)
    elif isinstance(node, list):
        for value in node:
            _fix_money(value)


def normalise(eob: dict[str, Any]) -> dict[str, Any]:
    """A copy of `eob` with the KNOWN_DEVIATIONS repaired."""
    eob = copy.deepcopy(eob)
    _fix_money(eob)
    if "information" in eob:
        eob["supportingInfo"] = eob.pop("information")
    if "totalCost" in eob:
        eob["total"] = [{"category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication",
                                                   "code": "submitted"}]}, "amount": eob.pop("totalCost")}]
    eob.pop("hospitalization", None)
    provider = eob.get("provider", {}).get("identifier", {}).get("system", "")
    if "organization" in eob and (not eob.get("provider") or provider.endswith("prvdr_num")):
        eob["provider"] = eob.pop("organization")
    eob.pop("organization", None)
    if not eob.get("provider"):
        npis = [c["provider"] for c in eob.get("careTeam", []) if c.get("provider", {}).get("identifier", {}).get("value")]
        eob["provider"] = npis[0] if npis else {"display": "unknown"}
    if isinstance(eob.get("insurance"), dict):
        eob["insurance"] = [dict(eob["insurance"], focal=True)]
    eob.setdefault("insurer", {"display": "CMS"})
    # R4-required elements that STU3 Blue Button v1 omits: an adjudicated claim
    eob.setdefault("use", "claim")
    eob.setdefault("outcome", "complete")
    if "created" not in eob:
        end = eob.get("billablePeriod", {}).get("end") or eob.get("billablePeriod", {}).get("start")
        if end:
            eob["created"] = end
    for item in eob.get("item", []):
        for old, new in (("careTeamLinkId", "careTeamSequence"), ("diagnosisLinkId", "diagnosisSequence"),
                         ("service", "productOrService")):
            if old in item:
                item[new] = item.pop(old)
        item.setdefault("productOrService", {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-applicable"}]})
    return eob


def validate_r4b(eob: dict[str, Any]) -> None:
    """Raises Rejected with the first validation error."""
    from fhir.resources.R4B.explanationofbenefit import ExplanationOfBenefit
    from pydantic import ValidationError

    try:
        ExplanationOfBenefit.model_validate(eob)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise Rejected("R4B validation: %s: %s (%d errors)" % (where, error["msg"], exc.error_count())) from None


# --------------------------------------------------------------- mapping


def _cents(value: Any, what: str) -> int:
    try:
        cents = Decimal(str(value)) * 100
    except InvalidOperation:
        raise Rejected("%s is not a number" % what) from None
    if cents != cents.to_integral_value() or cents < 0:
        raise Rejected("%s is not a non-negative amount in cents: %s" % (what, value))
    return int(cents)


def _date(value: str | None, what: str) -> int:
    if not value or not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise Rejected("%s missing or not a date" % what)
    return int(value[:10].replace("-", ""))


def _codes(concept: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])]


def _adjudication(item: dict[str, Any], names: tuple[str, ...]) -> int | None:
    total = None
    for adj in item.get("adjudication", []):
        for _, code in _codes(adj.get("category")):
            if code.rsplit("/", 1)[-1] in names and "amount" in adj and "value" in adj["amount"]:
                total = (total or 0) + _cents(adj["amount"]["value"], code.rsplit("/", 1)[-1])
    return total


class Pseudonyms:
    """The organisation's local table: FHIR patient reference → random 16-byte pseudonym."""

    def __init__(self, path: pathlib.Path | None) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.table: dict[str, str] = data.get("patients", {})
        self.salt = bytes.fromhex(data["salt"]) if "salt" in data else secrets.token_bytes(32)

    def get(self, reference: str) -> bytes:
        if reference not in self.table:
            self.table[reference] = secrets.token_bytes(costs.PSEUDONYM_BYTES).hex()
        return bytes.fromhex(self.table[reference])

    def commitment(self, resource: dict[str, Any]) -> bytes:
        return hashlib.sha256(self.salt + json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()).digest()

    def save(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps({"salt": self.salt.hex(), "patients": self.table}, indent=1, sort_keys=True))


def to_claim(eob: dict[str, Any], pseudonyms: Pseudonyms) -> dict[str, Any]:
    """The `claim_submit` body of a normalised, validated EOB. Raises Rejected."""
    eob_types = [code for _, code in _codes(eob.get("type"))]
    if "PDE" in eob_types or "pharmacy" in eob_types:
        raise Rejected("pharmacy event: NDC lines only, no CPT/HCPCS (out of scope for claim records)")
    kind = next((KIND_BY_EOB_TYPE[c] for c in eob_types if c in KIND_BY_EOB_TYPE), None)
    if kind is None:
        kind = {"institutional": "outpatient", "professional": "professional"}.get(eob_types[-1] if eob_types else "")
    if kind is None:
        raise Rejected("unknown claim type %s" % eob_types)
    period = eob.get("billablePeriod", {})
    from_date = _date(period.get("start"), "billablePeriod.start")
    through_date = _date(period.get("end") or period.get("start"), "billablePeriod.end")
    npis, tins = [], []
    for member in eob.get("careTeam", []):
        ident = member.get("provider", {}).get("identifier", {})
        roles = [code for _, code in _codes(member.get("role"))]
        if ident.get("system") == NPI_SYSTEM and ident.get("value"):
            npis.append((0 if "primary" in roles or "performing" in roles else 1, ident["value"]))
        elif ident.get("system") in TAX_SYSTEMS and ident.get("value"):
            tins.append(ident["value"])
    rendering = sorted(npis)[0][1] if npis else None
    if rendering is None:
        raise Rejected("no rendering NPI in careTeam")
    if not costs.is_valid_npi(rendering):
        raise Rejected("rendering NPI %s fails the Luhn check" % rendering)
    billing_ident = eob.get("provider", {}).get("identifier", {})
    billing_npi = billing_ident.get("value") if billing_ident.get("system") == NPI_SYSTEM else rendering
    if not costs.is_valid_npi(billing_npi):
        raise Rejected("billing NPI %s fails the Luhn check" % billing_npi)
    diagnoses = []
    for dx in sorted(eob.get("diagnosis", []), key=lambda d: d.get("sequence", 0)):
        for system, code in _codes(dx.get("diagnosisCodeableConcept")):
            if "icd-10" in system:
                code = code.replace(".", "").upper()
                if not re.match(r"^[A-Z]\d[0-9A-Z][0-9A-Z]{0,4}$", code):
                    raise Rejected("malformed ICD-10 code %r" % code)
                if code not in diagnoses:
                    diagnoses.append(code)
    lines = []
    for item in eob.get("item", []):
        hcpcs = next((code for system, code in _codes(item.get("productOrService"))
                      if "hcpcs" in system.lower() or "cpt" in system.lower()), None)
        revenue = next((code for _, code in _codes(item.get("revenue")) if re.match(r"^\d{4}$", code)), None)
        if hcpcs is None and (revenue is None or kind not in ("inpatient", "outpatient")):
            continue
        if hcpcs is not None and not re.match(r"^(\d{5}|\d{4}[FTU]|[A-V]\d{4})$", hcpcs):
            raise Rejected("malformed CPT/HCPCS code %r" % hcpcs)
        served = item.get("servicedDate") or item.get("servicedPeriod", {}).get("start") or period.get("start")
        paid = _adjudication(item, PAID_CODES) or 0
        allowed = _adjudication(item, ALLOWED_CODES)
        if allowed is None:  # institutional: Medicare allowed = program payment + beneficiary liability
            allowed = paid + (_adjudication(item, PATIENT_PAID_CODES) or 0)
        lines.append({"hcpcs": hcpcs, "revenue_code": revenue, "service_date": _date(served, "item serviced date"),
                      "allowed_cents": allowed, "paid_cents": paid, "units": 1})
    if not lines:
        raise Rejected("no line with a CPT/HCPCS code (or, on an institutional claim, a revenue code)")
    if kind in ("inpatient", "outpatient") and not any(line["paid_cents"] for line in lines):
        claim_paid = _cents(eob.get("payment", {}).get("amount", {}).get("value", 0), "payment.amount")
        lines[0]["allowed_cents"] = max(lines[0]["allowed_cents"], claim_paid)
        lines[0]["paid_cents"] = claim_paid
    for line in lines:
        if line["paid_cents"] > line["allowed_cents"]:
            raise Rejected("paid %d cents exceeds allowed %d cents on a line" % (line["paid_cents"], line["allowed_cents"]))
    pos = next((code for item in eob.get("item", []) for _, code in _codes(item.get("locationCodeableConcept"))
                if re.match(r"^\d{2}$", code)), None)
    return {
        "claim_id": re.sub(r"[^A-Za-z0-9._:-]", "-", eob.get("id", ""))[:64] or "eob",
        "kind": kind, "patient": pseudonyms.get(eob.get("patient", {}).get("reference", "")),
        "billing_tin": tins[0] if tins and re.match(r"^\d{9}$", tins[0]) else None,
        "billing_npi": billing_npi, "rendering_npi": rendering, "from_date": from_date,
        "through_date": through_date, "place_of_service": pos if kind in ("professional", "dme") else None,
        "drg": None, "diagnoses": diagnoses[: costs.MAX_DIAGNOSES], "document": pseudonyms.commitment(eob),
        "lines": lines,
    }


def prepare(resources: list[dict[str, Any]], pseudonyms: Pseudonyms) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(claim bodies, [(resource id, reason)]) for every resource."""
    bodies, rejected = [], []
    for resource in resources:
        rid = str(resource.get("id", "?"))
        try:
            if resource.get("resourceType") != "ExplanationOfBenefit":
                raise Rejected("not an ExplanationOfBenefit (%s)" % resource.get("resourceType"))
            eob = normalise(resource)
            validate_r4b(eob)
            bodies.append(to_claim(eob, pseudonyms))
        except Rejected as exc:
            rejected.append((rid, str(exc)))
    return bodies, rejected


# --------------------------------------------------------------- submission


def dry_run(bodies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Apply the claims on an in-memory ledger; return the contract's rejections."""
    db: dict[bytes, bytes] = {}
    payer = hashlib.sha256(b"ingest-dry-run-payer").digest()
    genesis = StateView(db.get)
    accounts.put_account(genesis, payer, "dry-run-payer", "payer")
    db.update({k: v for k, v in genesis.writes().items() if v is not None})
    txs = [Tx(CHAIN_ID, payer, n + 1, "claim_submit", body) for n, body in enumerate(bodies)]
    result = apply_block(db.get, BlockContext(CHAIN_ID, 1, 0), txs)
    return [(body["claim_id"], "%s: %s" % (r.code, r.message)) for body, r in zip(bodies, result.receipts) if not r.ok]


def post_transactions(bodies: list[dict[str, Any]], node: str, seed_hex: str, nonce_start: int, chain_id: str) -> list[tuple[str, str]]:
    """LIVE PATH (simple on purpose): sign each tx with the payer key and POST its
    msgpack bytes to `<node>/tx` as application/octet-stream. The node API is being
    built separately; a non-2xx answer is reported as a rejection."""
    import httpx

    from ledger.crypto import PrivateKey

    key = PrivateKey(bytes.fromhex(seed_hex))
    failures = []
    with httpx.Client(timeout=10.0) as client:
        for n, body in enumerate(bodies):
            tx = Tx(chain_id, key.public_key, nonce_start + n, "claim_submit", body).signed(key)
            response = client.post(node.rstrip("/") + "/tx", content=tx.encode(),
                                   headers={"content-type": "application/octet-stream"})
            if response.status_code >= 300:
                failures.append((body["claim_id"], "node answered %d: %s" % (response.status_code, response.text[:200])))
    return failures


def attribution_group(program: str, pseudonyms: Iterable[str], period: tuple[str, str] | None = None) -> dict[str, Any]:
    """An ATR-shaped FHIR Group (Da Vinci ATR member attribution list); members are
    pseudonymous Patient references, never identifiers."""
    group: dict[str, Any] = {
        "resourceType": "Group",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-atr/StructureDefinition/atr-group"]},
        "identifier": [{"system": "urn:careledger:program", "value": program}],
        "active": True, "type": "person", "actual": True, "name": "Attribution list %s" % program,
        "extension": [{"url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-attributionListStatus",
                       "valueCode": "draft"}],
        "member": [{"entity": {"reference": "Patient/pt-%s" % p}} for p in sorted(set(pseudonyms))],
    }
    if period is not None:
        group["extension"].append({"url": "http://hl7.org/fhir/us/davinci-atr/StructureDefinition/ext-contractValidityPeriod",
                                   "valuePeriod": {"start": period[0], "end": period[1]}})
    group["quantity"] = len(group["member"])
    return group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=pathlib.Path, help="ndjson, Bundle or resource JSON files")
    parser.add_argument("--dry-run", action="store_true", help="apply on an in-memory ledger; submit nothing")
    parser.add_argument("--node", help="node base URL, e.g. http://127.0.0.1:26657")
    parser.add_argument("--key", help="file holding the payer key's 32-byte seed in hex")
    parser.add_argument("--nonce-start", type=int, default=1)
    parser.add_argument("--chain-id", default=CHAIN_ID)
    parser.add_argument("--pseudonyms", type=pathlib.Path, help="local pseudonym table (JSON; never on-ledger)")
    parser.add_argument("--export-group", metavar="PROGRAM")
    parser.add_argument("--attributed", type=pathlib.Path, help="JSON list of attributed pseudonyms (hex)")
    parser.add_argument("--group-out", type=pathlib.Path)
    args = parser.parse_args(argv)

    pseudonyms = Pseudonyms(args.pseudonyms)
    resources = read_resources(args.paths)
    bodies, rejected = prepare(resources, pseudonyms)
    if args.dry_run:
        failures = dry_run(bodies)
    elif args.node and args.key:
        failures = post_transactions(bodies, args.node, pathlib.Path(args.key).read_text().strip(),
                                     args.nonce_start, args.chain_id)
    else:
        parser.error("give --dry-run, or --node and --key")
    rejected += failures
    print("resources=%d claims=%d rejected=%d" % (len(resources), len(bodies) - len(failures), len(rejected)))
    for rid, reason in rejected:
        print("rejected %s: %s" % (rid, reason))
    pseudonyms.save()
    if args.export_group:
        members = json.loads(args.attributed.read_text()) if args.attributed else sorted(pseudonyms.table.values())
        out = args.group_out or pathlib.Path("group-%s.json" % args.export_group)
        out.write_text(json.dumps(attribution_group(args.export_group, members), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
