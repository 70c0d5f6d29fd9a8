"""Providers: who is a clinician or a practice, what they are credentialed for,
which programs they take part in, whom they refer to, and how they perform.

Why: payment rules depend on provider facts — an ACO's participant list decides
attribution, a lapsed licence must stop a clinician joining a program — so those
facts live on the ledger with the organisation that attested them. Identifiers
are checked the way CMS checks them (METHODS §1.9), by the rules in
`contracts.identifiers`: an NPI is 10 digits whose last digit is the Luhn check
digit of `80840` + the first nine; a TIN is 9 digits; a NUCC taxonomy code is
10 characters ending in "X".

State layout:

- `provider/<npi>` → {"npi", "entity": individual|organisation, "name",
  "taxonomies": sorted codes, "primary_taxonomy", "tin": str | None, "org", "height"}
- `tin/<tin>` → {"tin", "name", "org", "height"}
- `credential/<npi>/<credential id>` → {"id", "npi", "kind", "issuer_org",
  "issuer_key", "valid_from_ms", "expires_at_ms", "document_commitment",
  "jurisdiction", "revoked": None | {"height", "time_ms", "reason", "by"}}
- `credential_index/<npi>` → sorted credential ids
- `program/<program id>` → {"id", "name", "org", "required_credential",
  "geographic_fallback": {service area: aco id}, "height"}
- `aco/<program id>/<aco id>` → {"id", "program", "name", "org",
  "participants": {tin: sorted npis}, "height"}
- `program_acos/<program id>` → sorted aco ids
- `program_tin/<program id>/<tin>` → sorted aco ids listing the TIN (two or more:
  the TIN's services are excluded from assignment, §425.400(a)(2)(iii))
- `program_npi/<program id>/<npi>` → sorted [aco id, tin] pairs
- `referral/<from npi>/<to npi>` → {"from", "to", "kind", "active", "org", "since_height", "ended_height"}
- `referral_index/<from npi>` → sorted to-NPIs
- `performance/<npi>/<period>` → {"quality_bps", "expected_cents", "actual_cents", "org", "height"}
- `performance_index/<npi>` → sorted periods
- `reputation/<npi>` → {"score_bps", "periods", "height"}

Tx types (body; roles):

- `provider_register` {npi, entity, name, taxonomies, primary_taxonomy, tin?}; provider, payer
- `tin_register` {tin, name}; provider, payer
- `credential_issue` {credential_id, npi, kind, valid_from_ms, expires_at_ms,
  document_commitment, jurisdiction?}; auditor, regulator, payer
- `credential_revoke` {npi, credential_id, reason}; auditor, regulator, payer
- `program_create` {program_id, name, required_credential?}; payer
- `program_set_fallback` {program_id, geographic_fallback: {area: aco id}}; payer
- `aco_register` {program_id, aco_id, name}; provider
- `aco_add_participant` {program_id, aco_id, tin, npis}; provider
- `aco_remove_participant` {program_id, aco_id, tin, npis?}; provider
- `referral_record` {from_npi, to_npi, kind?}; provider
- `referral_end` {from_npi, to_npi}; provider
- `performance_record` {npi, period, quality_bps, expected_cents, actual_cents}; auditor, payer
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from ledger.types import Tx

from contracts.engine import REGISTRY, BlockContext
from contracts.errors import (
    AlreadyExists, Duplicate, Expired, InvalidValue, MalformedTx, NotFound,
    NotPermitted, NotYetValid, Revoked,
)
from contracts.governance import (
    commitment, get_parameter, identifier, integer, sender_account, text,
)
from contracts.identifiers import NPI_PREFIX, is_npi, is_taxonomy, is_tin, luhn_check_digit  # noqa: F401 (re-exported)
from contracts.rounding import round_half_up
from contracts.state import StateView, key

CREDENTIAL_KINDS = ("accreditation", "board_certification", "licence")
ENTITIES = ("individual", "organisation")
REFERRAL_KINDS = ("consult", "preferred", "referral")
AREA_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
BPS = 10_000
MAX_TAXONOMIES = 15  # NPPES allows up to 15 taxonomy codes per NPI
MAX_NPIS_PER_TX = 1000
MAX_PERFORMANCE_PERIODS = 100
DEFAULT_REPUTATION_WEIGHTS = {"quality_bps": 6000, "cost_bps": 4000}


# ------------------------------------------------------------ identifiers (contracts.identifiers)


def npi_field(body: dict[str, Any], name: str) -> str:
    """Raises InvalidValue unless the field is a valid NPI."""
    value = body.get(name)
    if not is_npi(value):
        raise InvalidValue("%s is not a valid NPI (10 digits with the Luhn check digit)" % name)
    return value


def tin_field(body: dict[str, Any], name: str) -> str:
    """Raises InvalidValue unless the field is a valid TIN."""
    value = body.get(name)
    if not is_tin(value):
        raise InvalidValue("%s is not a valid TIN (9 digits)" % name)
    return value


# ------------------------------------------------------------ provider records


def provider_key(npi: str) -> bytes:
    return key("provider", npi)


def tin_key(tin: str) -> bytes:
    return key("tin", tin)


def get_provider(state: StateView, npi: str) -> dict[str, Any] | None:
    return state.get(provider_key(npi))


def require_provider(state: StateView, npi: str) -> dict[str, Any]:
    """Raises NotFound."""
    record = get_provider(state, npi)
    if record is None:
        raise NotFound("no provider with NPI %s" % npi)
    return record


@REGISTRY.register("provider_register", roles={"provider", "payer"})
def handle_provider_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register (or, by the same organisation, update) a practitioner or a
    provider organisation under its NPI, with its NUCC taxonomies.

    Why: specialty decides assignment step 1 vs 2, so it is recorded by an
    accountable organisation. Raises InvalidValue (bad NPI/TIN/taxonomy/entity),
    MalformedTx, Duplicate, AlreadyExists (NPI held by another organisation),
    NotFound (an organisation's TIN is not registered), NotPermitted (TIN of another org).
    """
    account = sender_account(state, tx)
    npi = npi_field(tx.body, "npi")
    entity = tx.body.get("entity")
    if entity not in ENTITIES:
        raise InvalidValue("entity must be individual or organisation")
    name = text(tx.body, "name")
    taxonomies = tx.body.get("taxonomies")
    if not isinstance(taxonomies, list) or not 1 <= len(taxonomies) <= MAX_TAXONOMIES:
        raise InvalidValue("taxonomies must list 1..%d NUCC codes" % MAX_TAXONOMIES)
    if not all(is_taxonomy(code) for code in taxonomies):
        raise InvalidValue("taxonomy codes are 10 characters: 3 digits, 6 digits/capitals, X")
    if len(set(taxonomies)) != len(taxonomies):
        raise Duplicate("a taxonomy code is listed twice")
    primary = tx.body.get("primary_taxonomy")
    if primary not in taxonomies:
        raise InvalidValue("primary_taxonomy must be one of taxonomies")
    tin = None
    if entity == "organisation":
        tin = tin_field(tx.body, "tin")
        tin_record = state.get(tin_key(tin))
        if tin_record is None:
            raise NotFound("TIN %s is not registered" % tin)
        if tin_record["org"] != account["org"]:
            raise NotPermitted("TIN %s belongs to another organisation" % tin)
    elif "tin" in tx.body:
        raise MalformedTx("an individual bills through a TIN via program participation, not registration")
    existing = get_provider(state, npi)
    if existing is not None and existing["org"] != account["org"]:
        raise AlreadyExists("NPI %s is registered by another organisation" % npi)
    if existing is not None and existing["entity"] != entity:
        raise InvalidValue("NPI %s is registered as %s" % (npi, existing["entity"]))
    state.put(provider_key(npi), {
        "npi": npi, "entity": entity, "name": name, "taxonomies": sorted(taxonomies),
        "primary_taxonomy": primary, "tin": tin, "org": account["org"],
        "height": ctx.height if existing is None else existing["height"],
    })
    state.emit("provider_registered" if existing is None else "provider_updated", npi=npi, org=account["org"])


@REGISTRY.register("tin_register", roles={"provider", "payer"})
def handle_tin_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register a taxpayer id (an ACO participant is a TIN) for the sender's organisation.

    Raises InvalidValue (bad TIN), MalformedTx, AlreadyExists.
    """
    account = sender_account(state, tx)
    tin = tin_field(tx.body, "tin")
    name = text(tx.body, "name")
    if state.exists(tin_key(tin)):
        raise AlreadyExists("TIN %s is registered" % tin)
    state.put(tin_key(tin), {"tin": tin, "name": name, "org": account["org"], "height": ctx.height})
    state.emit("tin_registered", tin=tin, org=account["org"])


# ------------------------------------------------------------ credentials


def credential_key(npi: str, credential_id: str) -> bytes:
    return key("credential", npi, credential_id)


def credential_index_key(npi: str) -> bytes:
    return key("credential_index", npi)


def credential_status(record: dict[str, Any], time_ms: int) -> str:
    """"active", "revoked", "expired" or "not_yet_valid" at block time `time_ms`."""
    if record["revoked"] is not None:
        return "revoked"
    if time_ms < record["valid_from_ms"]:
        return "not_yet_valid"
    if time_ms >= record["expires_at_ms"]:
        return "expired"
    return "active"


def require_credential(state: StateView, npi: str, kind: str, ctx: BlockContext) -> dict[str, Any]:
    """The NPI's active credential of `kind` at block time (the one expiring last
    if several are active).

    Why: actions such as joining a program need a licence that is valid now, not
    merely one that was issued once. When none is active, the error describes the
    credential of that kind expiring last, so the message points at the fix.
    Raises NotFound (none of that kind), Revoked, Expired or NotYetValid.
    """
    records = [state.get(credential_key(npi, cid)) for cid in state.get(credential_index_key(npi), [])]
    of_kind = sorted((r for r in records if r["kind"] == kind), key=lambda r: (r["expires_at_ms"], r["id"]))
    if not of_kind:
        raise NotFound("NPI %s has no %s" % (npi, kind))
    active = [r for r in of_kind if credential_status(r, ctx.time_ms) == "active"]
    if active:
        return active[-1]
    latest = of_kind[-1]
    status = credential_status(latest, ctx.time_ms)
    message = "NPI %s: %s %s is %s" % (npi, kind, latest["id"], status.replace("_", " "))
    if status == "revoked":
        raise Revoked(message)
    if status == "not_yet_valid":
        raise NotYetValid(message)
    raise Expired(message)


@REGISTRY.register("credential_issue", roles={"auditor", "regulator", "payer"})
def handle_credential_issue(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Attest a licence, board certification or accreditation for an NPI, valid
    over [valid_from_ms, expires_at_ms). The document itself stays off-ledger;
    only its salted commitment is stored.

    Why attestations: the issuer organisation, not the provider, vouches, and it
    alone can revoke. An organisation may not attest its own providers; if the
    parameter `credential_issuers` lists organisations for the kind, only they may.
    Raises MalformedTx, InvalidValue (bad NPI/kind/period), NotFound (unknown NPI),
    NotPermitted (self-attestation or not a listed issuer), AlreadyExists.
    """
    account = sender_account(state, tx)
    credential_id = identifier(tx.body, "credential_id")
    npi = npi_field(tx.body, "npi")
    kind = tx.body.get("kind")
    if kind not in CREDENTIAL_KINDS:
        raise InvalidValue("kind must be one of %s" % ", ".join(CREDENTIAL_KINDS))
    valid_from = integer(tx.body, "valid_from_ms")
    expires_at = integer(tx.body, "expires_at_ms")
    if expires_at <= valid_from:
        raise InvalidValue("expires_at_ms must be after valid_from_ms")
    document = commitment(tx.body, "document_commitment")
    jurisdiction = tx.body.get("jurisdiction")
    if jurisdiction is not None and (not isinstance(jurisdiction, str) or AREA_PATTERN.fullmatch(jurisdiction) is None):
        raise InvalidValue("jurisdiction must be a short code such as a state abbreviation")
    provider = require_provider(state, npi)
    if provider["org"] == account["org"]:
        raise NotPermitted("an organisation cannot attest its own providers")
    issuers = (get_parameter(state, "credential_issuers") or {}).get(kind)
    if issuers is not None and account["org"] not in issuers:
        raise NotPermitted("organisation %r is not an issuer of %s" % (account["org"], kind))
    if state.exists(credential_key(npi, credential_id)):
        raise AlreadyExists("credential %s exists for NPI %s" % (credential_id, npi))
    state.put(credential_key(npi, credential_id), {
        "id": credential_id, "npi": npi, "kind": kind, "issuer_org": account["org"],
        "issuer_key": tx.sender, "valid_from_ms": valid_from, "expires_at_ms": expires_at,
        "document_commitment": document, "jurisdiction": jurisdiction, "revoked": None,
    })
    state.put(credential_index_key(npi), sorted(state.get(credential_index_key(npi), []) + [credential_id]))
    state.emit("credential_issued", npi=npi, credential=credential_id, kind=kind, issuer=account["org"])


@REGISTRY.register("credential_revoke", roles={"auditor", "regulator", "payer"})
def handle_credential_revoke(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Revoke a credential (e.g. licence action, OIG exclusion). Only the issuing
    organisation may; the record stays, marked revoked, for the audit trail.

    Raises MalformedTx, InvalidValue, NotFound, NotPermitted, Revoked (already revoked).
    """
    account = sender_account(state, tx)
    npi = npi_field(tx.body, "npi")
    credential_id = identifier(tx.body, "credential_id")
    reason = text(tx.body, "reason")
    record = state.get(credential_key(npi, credential_id))
    if record is None:
        raise NotFound("no credential %s for NPI %s" % (credential_id, npi))
    if record["issuer_org"] != account["org"]:
        raise NotPermitted("only the issuing organisation may revoke a credential")
    if record["revoked"] is not None:
        raise Revoked("credential %s is already revoked" % credential_id)
    revoked = {"height": ctx.height, "time_ms": ctx.time_ms, "reason": reason, "by": tx.sender}
    state.put(credential_key(npi, credential_id), dict(record, revoked=revoked))
    state.emit("credential_revoked", npi=npi, credential=credential_id)


# ------------------------------------------------------------ programs and ACO participation


def program_key(program_id: str) -> bytes:
    return key("program", program_id)


def aco_key(program_id: str, aco_id: str) -> bytes:
    return key("aco", program_id, aco_id)


def program_acos_key(program_id: str) -> bytes:
    return key("program_acos", program_id)


def program_tin_key(program_id: str, tin: str) -> bytes:
    return key("program_tin", program_id, tin)


def program_npi_key(program_id: str, npi: str) -> bytes:
    return key("program_npi", program_id, npi)


def require_program(state: StateView, program_id: str) -> dict[str, Any]:
    """Raises NotFound."""
    program = state.get(program_key(program_id))
    if program is None:
        raise NotFound("no program %r" % program_id)
    return program


def require_aco(state: StateView, program_id: str, aco_id: str) -> dict[str, Any]:
    """Raises NotFound."""
    aco = state.get(aco_key(program_id, aco_id))
    if aco is None:
        raise NotFound("no ACO %r in program %r" % (aco_id, program_id))
    return aco


def acos_of_tin(state: StateView, program_id: str, tin: str) -> list[str]:
    """The ACOs of the program whose participant list has the TIN (sorted)."""
    return state.get(program_tin_key(program_id, tin), [])


def acos_of_npi(state: StateView, program_id: str, npi: str) -> list[list[str]]:
    """Sorted [aco id, tin] pairs through which the NPI participates."""
    return state.get(program_npi_key(program_id, npi), [])


@REGISTRY.register("program_create", roles={"payer"})
def handle_program_create(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Create a value-based program (e.g. an MSSP performance year) run by the
    sender's payer organisation. Joining requires `required_credential` (default licence).

    Raises MalformedTx, InvalidValue, AlreadyExists.
    """
    account = sender_account(state, tx)
    program_id = identifier(tx.body, "program_id")
    name = text(tx.body, "name")
    required = tx.body.get("required_credential", "licence")
    if required not in CREDENTIAL_KINDS:
        raise InvalidValue("required_credential must be one of %s" % ", ".join(CREDENTIAL_KINDS))
    if state.exists(program_key(program_id)):
        raise AlreadyExists("program %r exists" % program_id)
    state.put(program_key(program_id), {
        "id": program_id, "name": name, "org": account["org"], "required_credential": required,
        "geographic_fallback": {}, "height": ctx.height,
    })
    state.emit("program_created", program=program_id, org=account["org"])


@REGISTRY.register("program_set_fallback", roles={"payer"})
def handle_program_set_fallback(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Set the program-defined geographic fallback: service area → ACO id, used
    only for eligible patients with no qualifying primary-care service. This is
    not an MSSP rule (METHODS §1.2); it is the program's own choice.

    Service areas must be coarse enough not to identify anyone (a state, or a
    3-digit ZIP area of 20,000+ people: 45 CFR 164.514(b)(2)(i)(B)).
    Raises MalformedTx, InvalidValue, NotFound, NotPermitted (not the program's payer).
    """
    account = sender_account(state, tx)
    program = require_program(state, identifier(tx.body, "program_id"))
    if program["org"] != account["org"]:
        raise NotPermitted("only the program's payer may set its fallback")
    mapping = tx.body.get("geographic_fallback")
    if not isinstance(mapping, dict) or len(mapping) > MAX_NPIS_PER_TX:
        raise MalformedTx("geographic_fallback must be a map of service area to ACO id")
    for area, aco_id in sorted(mapping.items(), key=lambda item: str(item[0])):
        if not isinstance(area, str) or AREA_PATTERN.fullmatch(area) is None:
            raise InvalidValue("service area codes are short codes (%s)" % AREA_PATTERN.pattern)
        if not isinstance(aco_id, str):
            raise MalformedTx("fallback ACO ids are strings")
        require_aco(state, program["id"], aco_id)
    state.put(program_key(program["id"]), dict(program, geographic_fallback=mapping))
    state.emit("program_fallback_set", program=program["id"], areas=len(mapping))


@REGISTRY.register("aco_register", roles={"provider"})
def handle_aco_register(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Register an ACO, run by the sender's organisation, in a program.

    Raises MalformedTx, NotFound (program), AlreadyExists.
    """
    account = sender_account(state, tx)
    program = require_program(state, identifier(tx.body, "program_id"))
    aco_id = identifier(tx.body, "aco_id")
    name = text(tx.body, "name")
    if state.exists(aco_key(program["id"], aco_id)):
        raise AlreadyExists("ACO %r exists in program %r" % (aco_id, program["id"]))
    state.put(aco_key(program["id"], aco_id), {
        "id": aco_id, "program": program["id"], "name": name, "org": account["org"],
        "participants": {}, "height": ctx.height,
    })
    state.put(program_acos_key(program["id"]), sorted(state.get(program_acos_key(program["id"]), []) + [aco_id]))
    state.emit("aco_registered", program=program["id"], aco=aco_id, org=account["org"])


def _npi_list(body: dict[str, Any], name: str, required: bool) -> list[str]:
    npis = body.get(name)
    if npis is None and not required:
        return []
    if not isinstance(npis, list) or not (1 if required else 0) <= len(npis) <= MAX_NPIS_PER_TX:
        raise MalformedTx("%s must list 1..%d NPIs" % (name, MAX_NPIS_PER_TX))
    if not all(is_npi(npi) for npi in npis):
        raise InvalidValue("%s holds a value that is not a valid NPI" % name)
    if len(set(npis)) != len(npis):
        raise Duplicate("%s lists an NPI twice" % name)
    return sorted(npis)


def _owned_aco(state: StateView, tx: Tx) -> dict[str, Any]:
    account = sender_account(state, tx)
    program = require_program(state, identifier(tx.body, "program_id"))
    aco = require_aco(state, program["id"], identifier(tx.body, "aco_id"))
    if aco["org"] != account["org"]:
        raise NotPermitted("only the ACO's organisation may change its participant list")
    return aco


@REGISTRY.register("aco_add_participant", roles={"provider"})
def handle_aco_add_participant(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Add a participant TIN and the NPIs billing through it to an ACO's list.

    Each practitioner must hold the program's required credential now (METHODS
    §1.9: participants are credentialed providers). A TIN may be listed by two
    ACOs — the ledger records it, and attribution then excludes its services.
    Raises MalformedTx, InvalidValue (bad TIN/NPI), NotFound (program, ACO, TIN,
    NPI, credential), NotPermitted, Duplicate (NPI already listed under the TIN),
    Expired/Revoked/NotYetValid (credential).
    """
    aco = _owned_aco(state, tx)
    program = require_program(state, aco["program"])
    tin = tin_field(tx.body, "tin")
    npis = _npi_list(tx.body, "npis", required=True)
    if not state.exists(tin_key(tin)):
        raise NotFound("TIN %s is not registered" % tin)
    listed = aco["participants"].get(tin, [])
    for npi in npis:
        if npi in listed:
            raise Duplicate("NPI %s is already listed under TIN %s" % (npi, tin))
        if require_provider(state, npi)["entity"] != "individual":
            raise InvalidValue("NPI %s is an organisation; list practitioners" % npi)
        require_credential(state, npi, program["required_credential"], ctx)
    participants = dict(aco["participants"])
    participants[tin] = sorted(listed + npis)
    state.put(aco_key(aco["program"], aco["id"]), dict(aco, participants=participants))
    tin_acos = acos_of_tin(state, aco["program"], tin)
    if aco["id"] not in tin_acos:
        state.put(program_tin_key(aco["program"], tin), sorted(tin_acos + [aco["id"]]))
    for npi in npis:
        pairs = acos_of_npi(state, aco["program"], npi) + [[aco["id"], tin]]
        state.put(program_npi_key(aco["program"], npi), sorted(pairs))
    state.emit("aco_participant_added", program=aco["program"], aco=aco["id"], tin=tin, npis=npis)


@REGISTRY.register("aco_remove_participant", roles={"provider"})
def handle_aco_remove_participant(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Remove NPIs from a participant TIN, or the whole TIN when `npis` is omitted
    (a TIN left with no NPIs is removed too).

    Raises MalformedTx, InvalidValue, NotFound (program, ACO, TIN or NPI not listed), NotPermitted.
    """
    aco = _owned_aco(state, tx)
    tin = tin_field(tx.body, "tin")
    npis = _npi_list(tx.body, "npis", required=False)
    listed = aco["participants"].get(tin)
    if listed is None:
        raise NotFound("TIN %s is not a participant of ACO %r" % (tin, aco["id"]))
    for npi in npis:
        if npi not in listed:
            raise NotFound("NPI %s is not listed under TIN %s" % (npi, tin))
    removed = npis or listed
    remaining = sorted(set(listed) - set(removed))
    participants = dict(aco["participants"])
    if remaining:
        participants[tin] = remaining
    else:
        del participants[tin]
        tin_acos = [a for a in acos_of_tin(state, aco["program"], tin) if a != aco["id"]]
        if tin_acos:
            state.put(program_tin_key(aco["program"], tin), tin_acos)
        else:
            state.delete(program_tin_key(aco["program"], tin))
    state.put(aco_key(aco["program"], aco["id"]), dict(aco, participants=participants))
    for npi in removed:
        pairs = [p for p in acos_of_npi(state, aco["program"], npi) if p != [aco["id"], tin]]
        if pairs:
            state.put(program_npi_key(aco["program"], npi), pairs)
        else:
            state.delete(program_npi_key(aco["program"], npi))
    state.emit("aco_participant_removed", program=aco["program"], aco=aco["id"], tin=tin, npis=removed)


# ------------------------------------------------------------ referrals


def referral_key(from_npi: str, to_npi: str) -> bytes:
    return key("referral", from_npi, to_npi)


def referral_index_key(from_npi: str) -> bytes:
    return key("referral_index", from_npi)


@REGISTRY.register("referral_record", roles={"provider"})
def handle_referral_record(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record a standing referral relationship from one clinician to another (a
    network fact, never a patient's referral: that would be PHI).

    Raises InvalidValue (bad NPIs or kind, self-referral), NotFound, NotPermitted
    (the from-NPI belongs to another organisation), AlreadyExists (already active).
    """
    account = sender_account(state, tx)
    from_npi = npi_field(tx.body, "from_npi")
    to_npi = npi_field(tx.body, "to_npi")
    kind = tx.body.get("kind", "referral")
    if kind not in REFERRAL_KINDS:
        raise InvalidValue("kind must be one of %s" % ", ".join(REFERRAL_KINDS))
    if from_npi == to_npi:
        raise InvalidValue("a clinician does not refer to itself")
    if require_provider(state, from_npi)["org"] != account["org"]:
        raise NotPermitted("NPI %s belongs to another organisation" % from_npi)
    require_provider(state, to_npi)
    existing = state.get(referral_key(from_npi, to_npi))
    if existing is not None and existing["active"]:
        raise AlreadyExists("referral %s → %s is active" % (from_npi, to_npi))
    state.put(referral_key(from_npi, to_npi), {
        "from": from_npi, "to": to_npi, "kind": kind, "active": True, "org": account["org"],
        "since_height": ctx.height, "ended_height": None,
    })
    state.put(referral_index_key(from_npi), sorted(set(state.get(referral_index_key(from_npi), [])) | {to_npi}))
    state.emit("referral_recorded", from_npi=from_npi, to_npi=to_npi, kind=kind)


@REGISTRY.register("referral_end", roles={"provider"})
def handle_referral_end(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """End an active referral relationship (kept, marked inactive).

    Raises InvalidValue, NotFound (none active), NotPermitted.
    """
    account = sender_account(state, tx)
    from_npi = npi_field(tx.body, "from_npi")
    to_npi = npi_field(tx.body, "to_npi")
    existing = state.get(referral_key(from_npi, to_npi))
    if existing is None or not existing["active"]:
        raise NotFound("no active referral %s → %s" % (from_npi, to_npi))
    if existing["org"] != account["org"]:
        raise NotPermitted("only the referring organisation may end it")
    state.put(referral_key(from_npi, to_npi), dict(existing, active=False, ended_height=ctx.height))
    state.emit("referral_ended", from_npi=from_npi, to_npi=to_npi)


def referrals_from(state: StateView, from_npi: str) -> list[dict[str, Any]]:
    """Active referral relationships from a clinician, by to-NPI."""
    out = []
    for to_npi in state.get(referral_index_key(from_npi), []):
        record = state.get(referral_key(from_npi, to_npi))
        if record["active"]:
            out.append(record)
    return out


# ------------------------------------------------------------ performance and reputation


def performance_key(npi: str, period: str) -> bytes:
    return key("performance", npi, period)


def performance_index_key(npi: str) -> bytes:
    return key("performance_index", npi)


def reputation_key(npi: str) -> bytes:
    return key("reputation", npi)


def to_basis_points(value: Fraction) -> int:
    """Round a non-negative fraction of 1 to basis points, half up (= half away from
    zero for the non-negative values it is given)."""
    return round_half_up(value * BPS)


def period_score(record: dict[str, Any], weights: dict[str, int]) -> Fraction:
    """One period's score in [0, 1]: weighted quality (bps / 10,000) and cost,
    where cost = min(1, expected / actual) — 1 at or under the expected cost."""
    quality = Fraction(record["quality_bps"], BPS)
    actual = record["actual_cents"]
    cost = Fraction(1) if actual == 0 else min(Fraction(1), Fraction(record["expected_cents"], actual))
    return (weights["quality_bps"] * quality + weights["cost_bps"] * cost) / BPS


def compute_reputation(records: list[dict[str, Any]], weights: dict[str, int]) -> int:
    """The mean period score in basis points, computed exactly (0 with no periods)."""
    if not records:
        return 0
    total = sum((period_score(r, weights) for r in records), Fraction(0))
    return to_basis_points(total / len(records))


def reputation_weights(state: StateView) -> dict[str, int]:
    """Governance parameter `reputation_weights` {quality_bps, cost_bps} summing to 10,000."""
    weights = get_parameter(state, "reputation_weights") or DEFAULT_REPUTATION_WEIGHTS
    if (sorted(weights) != ["cost_bps", "quality_bps"]
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in weights.values())
            or weights["quality_bps"] + weights["cost_bps"] != BPS):
        raise InvalidValue("parameter reputation_weights must be {quality_bps, cost_bps} summing to 10000")
    return weights


@REGISTRY.register("performance_record", roles={"auditor", "payer"})
def handle_performance_record(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Record one period's measured quality (basis points) and cost (expected vs
    actual, cents) for an NPI, and recompute its reputation exactly.

    Fed by the quality and cost modules' owners; a period is recorded once.
    Raises InvalidValue (bad NPI, negative or out-of-range amounts), MalformedTx,
    NotFound (unknown NPI), Duplicate (period already recorded), NotPermitted
    (an organisation scoring its own provider), InvalidValue (too many periods).
    """
    account = sender_account(state, tx)
    npi = npi_field(tx.body, "npi")
    period = identifier(tx.body, "period")
    quality = integer(tx.body, "quality_bps", 0, BPS)
    expected = integer(tx.body, "expected_cents", 0, 2**62)
    actual = integer(tx.body, "actual_cents", 0, 2**62)
    if require_provider(state, npi)["org"] == account["org"]:
        raise NotPermitted("an organisation cannot score its own provider")
    periods = state.get(performance_index_key(npi), [])
    if period in periods:
        raise Duplicate("period %s is already recorded for NPI %s" % (period, npi))
    if len(periods) >= MAX_PERFORMANCE_PERIODS:
        raise InvalidValue("NPI %s has the maximum %d periods" % (npi, MAX_PERFORMANCE_PERIODS))
    weights = reputation_weights(state)
    record = {"quality_bps": quality, "expected_cents": expected, "actual_cents": actual,
              "org": account["org"], "height": ctx.height}
    periods = sorted(periods + [period])
    records = [record if p == period else state.get(performance_key(npi, p)) for p in periods]
    score = compute_reputation(records, weights)
    state.put(performance_key(npi, period), record)
    state.put(performance_index_key(npi), periods)
    state.put(reputation_key(npi), {"score_bps": score, "periods": len(periods), "height": ctx.height})
    state.emit("reputation_updated", npi=npi, period=period, score_bps=score)


# ------------------------------------------------------------ specialty helpers for attribution


def primary_taxonomy(state: StateView, npi: str) -> str | None:
    """The NPI's primary NUCC taxonomy, or None if the NPI is not registered."""
    record = get_provider(state, npi)
    return None if record is None else record["primary_taxonomy"]
