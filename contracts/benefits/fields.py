"""Body-field readers shared by the benefits handlers.

Why: every handler validates its whole body before its first write, so the
checks live here as small functions that each raise a typed ContractError
naming the field. Patient ids, dates, NPIs and codes reuse the rules of
`contracts.identifiers`, `contracts.calendar` and the checks of `contracts.costs`,
so that a member here is the same "pt-<hex>" patient the attribution contract
registers.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from contracts import calendar, costs, identifiers
from contracts.errors import InvalidValue, MalformedTx

MAX_CENTS = costs.MAX_CENTS
BASIS_POINTS = 10_000
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # categories, buckets, pools, reasons
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")
_PLACE_OF_SERVICE = re.compile(r"[0-9]{2}")
MAX_MODIFIERS = 4


def member(body: Mapping[str, Any], name: str = "member") -> str:
    """The canonical patient pseudonym. Raises MalformedTx."""
    return identifiers.patient_id(body.get(name))


def ident(body: Mapping[str, Any], name: str) -> str:
    """A claim, plan, family or authorisation id (no "/"). Raises InvalidValue."""
    return costs.check_id(body.get(name), name)


def code(value: Any, what: str) -> str:
    """A lower-case snake-case code (service category, bucket, pool). Raises InvalidValue."""
    return costs.check_str(value, what, _CODE)


def cents(body: Mapping[str, Any], name: str, default: int | None = None) -> int:
    """Integer cents in [0, MAX_CENTS]; negative amounts are rejected. Raises InvalidValue."""
    value = body.get(name, default)
    return costs.check_int(value, name, 0, MAX_CENTS)


def count(body: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    """An integer in [low, high]. Raises InvalidValue."""
    return costs.check_int(body.get(name, default), name, low, high)


def date(body: Mapping[str, Any], name: str) -> int:
    """A yyyymmdd calendar date. Raises InvalidValue."""
    return costs.check_date(body.get(name), name)


def optional_date(body: Mapping[str, Any], name: str) -> int | None:
    """A yyyymmdd date or None. Raises InvalidValue."""
    return None if body.get(name) is None else date(body, name)


def month_day(body: Mapping[str, Any], name: str) -> int:
    """A birthday as an mmdd int (month and day only: NAIC MDL-120 §6 birthday
    rule ignores the year); 0229 is allowed. Raises InvalidValue."""
    value = costs.check_int(body.get(name), name, 101, 1231)
    month, day = value // 100, value % 100
    if not 1 <= month <= 12 or not 1 <= day <= calendar.days_in_month(calendar.LEAP_YEAR, month):
        raise InvalidValue("%s is not a month and day: %d" % (name, value))
    return value


def flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    """An optional bool. Raises InvalidValue."""
    return costs.check_bool(body.get(name, default), name)


def choice(body: Mapping[str, Any], name: str, options: tuple[str, ...], default: str | None = None) -> str:
    """One of `options`. Raises InvalidValue."""
    value = body.get(name, default)
    if value not in options:
        raise InvalidValue("%s must be one of %s" % (name, ", ".join(options)))
    return value


def modifiers(body: Mapping[str, Any], name: str = "modifiers") -> list[str]:
    """Up to four two-character CPT/HCPCS modifiers (e.g. "GP", "KX"), order kept. Raises InvalidValue."""
    raw = costs.check_list(body.get(name, []), name, MAX_MODIFIERS)
    return [costs.check_str(m, name, _MODIFIER) for m in raw]


def place_of_service(body: Mapping[str, Any], name: str = "place_of_service") -> str:
    """A two-digit CMS place-of-service code (e.g. "11" office). Raises InvalidValue."""
    return costs.check_str(body.get(name), name, _PLACE_OF_SERVICE)


def mapping(value: Any, what: str) -> dict[Any, Any]:
    """Raises MalformedTx."""
    if not isinstance(value, dict):
        raise MalformedTx("%s must be a map" % what)
    return value
