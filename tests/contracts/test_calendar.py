"""contracts.calendar: yyyymmdd arithmetic without datetime, checked here against datetime."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import calendar

EPOCH = datetime.date(1970, 1, 1).toordinal()


def _int(day: datetime.date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


@pytest.mark.parametrize("year, leap", [(1900, False), (2000, True), (2023, False), (2024, True), (2100, False)])
def test_leap_years_follow_the_gregorian_century_rule(year, leap):
    assert calendar.is_leap_year(year) == leap
    assert calendar.days_in_month(year, 2) == (29 if leap else 28)


def test_days_in_month_knows_the_short_months():
    assert [calendar.days_in_month(2025, m) for m in range(1, 13)] == [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


@pytest.mark.parametrize("value, ok", [
    (20240229, True), (20230229, False), (20230431, False), (20231301, False), (20230100, False),
    (19000101, True), (18991231, False), (22001231, True), (22010101, False),
    (True, False), ("20240101", False), (None, False),
])
def test_is_date_accepts_only_real_days_in_range(value, ok):
    assert calendar.is_date(value) == ok


def test_is_date_takes_the_callers_range():
    assert calendar.is_date(29991231, last=29991231) and not calendar.is_date(29991231)


@pytest.mark.parametrize("value, ok", [(202401, True), (202412, True), (202413, False), (202400, False),
                                       (189912, False), (True, False), ("202401", False)])
def test_is_month_accepts_yyyymm(value, ok):
    assert calendar.is_month(value) == ok


@given(st.dates(datetime.date(1900, 1, 1), datetime.date(2999, 12, 31)), st.integers(-40_000, 40_000))
def test_day_numbers_and_added_days_match_datetime(day, days):
    assert calendar.day_number(_int(day)) == day.toordinal() - EPOCH
    assert calendar.date_from_day_number(day.toordinal() - EPOCH) == _int(day)
    later = day.toordinal() + days
    if 1 <= later <= datetime.date.max.toordinal():
        assert calendar.add_days(_int(day), days) == _int(datetime.date.fromordinal(later))


def test_day_number_of_the_epoch_and_the_day_before():
    assert calendar.day_number(19700101) == 0
    assert calendar.day_number(19691231) == -1
    assert calendar.add_days(20240228, 1) == 20240229


@pytest.mark.parametrize("date, months, expected", [
    (20240115, 0, 20240101), (20241215, 1, 20250101), (20240131, 30, 20260701), (20240315, -3, 20231201),
])
def test_first_of_month_after_counts_whole_months(date, months, expected):
    assert calendar.first_of_month_after(date, months) == expected


def test_months_between_is_inclusive_and_crosses_years():
    assert calendar.months_between(20231115, 20240205) == [202311, 202312, 202401, 202402]
    assert calendar.months_between(20240205, 20240201) == [202402]
    assert calendar.months_between(20240301, 20240205) == []
    assert calendar.year_of(20240229) == 2024
