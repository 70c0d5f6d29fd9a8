"""Calendar arithmetic on yyyymmdd (and yyyymm) integers: the one place for it.

Why: contracts date claims, episodes, enrollment spans and capitation months, and
every replica must compute the same day counts without `datetime` (a forbidden
import in the pure core) and without floats. Dates are plain ints such as
20240229; day numbers count days since 1970-01-01 (Howard Hinnant's
`days_from_civil` / `civil_from_days`, proleptic Gregorian, integers only).

Everything here is pure and total over ints: no function raises. Predicates
(`is_*`) answer whether a value is acceptable; each contract turns a False into
its own typed error, with its own message (messages are part of the receipts
every replica hashes, so they stay with the caller). The arithmetic functions
expect a real date (check it with `is_date` first); given another int they
return a number without meaning, never an exception.
"""

from __future__ import annotations

from typing import Any

FIRST_DATE = 19_000_101
LAST_DATE = 22_001_231
FIRST_MONTH = 190_001
LAST_MONTH = 220_012
LEAP_YEAR = 2000  # a year with a 29 February, for month-and-day values such as birthdays
_SHORT_MONTHS = (4, 6, 9, 11)


def is_leap_year(year: int) -> bool:
    """Gregorian leap year: divisible by 4, except centuries not divisible by 400. Raises nothing."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    """Calendar days in `month` (1..12) of `year`; 31 for any other month number. Raises nothing."""
    if month == 2:
        return 29 if is_leap_year(year) else 28
    return 30 if month in _SHORT_MONTHS else 31


def is_real_date(yyyymmdd: int) -> bool:
    """Whether an int's month is 1..12 and its day exists in that month. Raises nothing."""
    year, month, day = yyyymmdd // 10_000, yyyymmdd // 100 % 100, yyyymmdd % 100
    return 1 <= month <= 12 and 1 <= day <= days_in_month(year, month)


def is_date(value: Any, first: int = FIRST_DATE, last: int = LAST_DATE) -> bool:
    """Whether `value` is an int (not a bool) in [first, last] naming a real calendar day.

    Raises nothing.
    """
    return (not isinstance(value, bool) and isinstance(value, int)
            and first <= value <= last and is_real_date(value))


def is_month(value: Any, first: int = FIRST_MONTH, last: int = LAST_MONTH) -> bool:
    """Whether `value` is a yyyymm int (not a bool) in [first, last] with a month 1..12. Raises nothing."""
    return (not isinstance(value, bool) and isinstance(value, int)
            and first <= value <= last and 1 <= value % 100 <= 12)


def day_number(yyyymmdd: int) -> int:
    """Days since 1970-01-01 of a yyyymmdd date (Hinnant's days_from_civil). Raises nothing."""
    year, month, day = yyyymmdd // 10_000, yyyymmdd // 100 % 100, yyyymmdd % 100
    year -= 1 if month <= 2 else 0
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def date_from_day_number(days: int) -> int:
    """The yyyymmdd date of a day number (inverse of `day_number`, civil_from_days). Raises nothing."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year * 10_000 + month * 100 + day


def add_days(yyyymmdd: int, days: int) -> int:
    """The date `days` (possibly negative) after a date. Raises nothing."""
    return date_from_day_number(day_number(yyyymmdd) + days)


def year_of(yyyymmdd: int) -> int:
    """The calendar year of a date. Raises nothing."""
    return yyyymmdd // 10_000


def first_of_month_after(yyyymmdd: int, months: int) -> int:
    """The first day of the month `months` after the date's month. Raises nothing."""
    index = (yyyymmdd // 10_000) * 12 + (yyyymmdd // 100 % 100 - 1) + months
    return (index // 12) * 10_000 + (index % 12 + 1) * 100 + 1


def months_between(start_date: int, end_date: int) -> list[int]:
    """The yyyymm months from start_date's month to end_date's month, inclusive
    (empty when end_date's month precedes start_date's). Raises nothing."""
    months, month = [], start_date // 100
    while month <= end_date // 100:
        months.append(month)
        month = month + 1 if month % 100 < 12 else (month // 100 + 1) * 100 + 1
    return months
