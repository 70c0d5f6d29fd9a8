"""Identifier rules: NPI, TIN, NUCC taxonomy, patient pseudonyms, code formats.

Why: claims, attribution, providers and benefits all accept the same identifiers,
and a value one contract accepts must be accepted by every other, so each rule is
written once, here. Identifiers are checked the way CMS checks them (METHODS
§1.9): an NPI is 10 digits whose last digit is the Luhn check digit of `80840` +
the first nine; a TIN is 9 digits, not all zero; a NUCC taxonomy code is 10
characters ending in "X".

The `is_*` predicates raise nothing; each contract turns a False into its own
typed error and message (messages are in the receipts every replica hashes).
"""

from __future__ import annotations

import re
from typing import Any

from contracts.errors import MalformedTx

NPI_PREFIX = "80840"  # the card issuer prefix CMS uses for the NPI Luhn check
TAXONOMY_PATTERN = re.compile(r"[0-9]{3}[0-9A-Z]{6}X")
# CPT: 5 digits, or category II/III (4 digits + F/T), PLA codes (4 digits + U); HCPCS II: letter + 4 digits.
HCPCS_PATTERN = re.compile(r"^(\d{5}|\d{4}[FTU]|[A-V]\d{4})$")
# ICD-10-CM, canonical form without the dot: letter, digit, alphanumeric, up to 4 more.
ICD10_PATTERN = re.compile(r"^[A-Z]\d[0-9A-Z][0-9A-Z]{0,4}$")
PSEUDONYM_BYTES = 16  # the claim pseudonym (costs, quality, risk): 128 random bits
PATIENT_HEX = re.compile(r"[0-9a-f]{32,128}")
PATIENT_PREFIX = "pt-"


def luhn_check_digit(digits: str) -> int:
    """The Luhn digit that makes `digits` + it pass the mod-10 check.

    Raises ValueError if `digits` holds a character that is not a digit.
    """
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # these are doubled once the check digit is appended
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def _ascii_digits(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and value.isascii() and value.isdigit()


def is_npi(value: Any) -> bool:
    """10 ASCII digits, the last the Luhn digit of 80840 + the first nine (METHODS §1.9). Raises nothing."""
    return _ascii_digits(value, 10) and luhn_check_digit(NPI_PREFIX + value[:9]) == int(value[9])


def is_tin(value: Any) -> bool:
    """9 ASCII digits, not all zero. Raises nothing."""
    return _ascii_digits(value, 9) and value != "000000000"


def is_taxonomy(value: Any) -> bool:
    """A NUCC Health Care Provider Taxonomy code's shape: 10 characters, ending in X. Raises nothing."""
    return isinstance(value, str) and TAXONOMY_PATTERN.fullmatch(value) is not None


def is_pseudonym(value: Any) -> bool:
    """The claim pseudonym: exactly PSEUDONYM_BYTES random bytes. Raises nothing."""
    return isinstance(value, bytes) and len(value) == PSEUDONYM_BYTES


def patient_id(value: Any) -> str:
    """The canonical patient id: "pt-" + lower-case hex of ≥ 128 random bits.

    Accepts 32 random bytes or the string form. The submitter generates it with a
    CSPRNG; it must never be a hash or HMAC of an identifier (45 CFR 164.514(c)(1)),
    which the ledger cannot check and so never derives one itself.
    Raises MalformedTx.
    """
    if isinstance(value, bytes) and len(value) == 32:
        return PATIENT_PREFIX + value.hex()
    if (isinstance(value, str) and value.startswith(PATIENT_PREFIX) and len(value) % 2 == 1
            and PATIENT_HEX.fullmatch(value[3:]) is not None):
        return value
    raise MalformedTx("a patient is 32 random bytes or 'pt-' + 32..128 lower-case hex digits")


def patient_id_of_pseudonym(pseudonym: bytes) -> str:
    """The canonical patient id of a 16-byte claim pseudonym (the same patient in
    attribution and benefits). Raises nothing."""
    return PATIENT_PREFIX + pseudonym.hex()
