"""Replay CMS's MSSP public use files through `contracts.payments.mssp.settle`.

    python scripts/replay_mssp_puf.py [--verbose] FILE...

Each row of a "Performance Year Financial and Quality Results" PUF is one ACO-year:
its inputs (benchmark `ABtotBnchmk`, expenditures `ABtotExp`, assigned beneficiaries
`N_AB`, track, quality, disaster adjustment `DisAdj`) go into `settle`, and the result is
compared with the published `EarnSaveLoss`. Prints `file=<name> rows=<n> matched=<k>` per
file and `matched=<K> of <N>` at the end; exits 0 whatever the count.

What is read from each row, and how (columns differ by year; all six layouts handled):

* Track: `Track1`/`Track2` (2014–15), `Current_Track_1|1_Plus|2|3` (2016–18),
  `Current_Track` A–E/EN (2019+).
* MSR: computed by the contract from `N_AB` for one-sided ACOs and two-sided ACOs on the
  variable option — the §425.604(b) table from 5,000, CMS's small-population scale for
  500–4,999 (`mssp.SMALL_POPULATION_MSR_TABLE`). A two-sided ACO whose published
  `MinSavPerc` is exactly 0, 0.5, 1, 1.5 or 2 % is on that fixed option. Only below 500
  beneficiaries (one row: PY2017 A05696, N = 152), where no scale is published, is the
  published `MinSavPerc` the input.
* Quality: `QualScore` ("P4R" = pay-for-reporting year, score 1; empty = 0); `Met_QPS`
  where the file has it, else (2014–15) "met" means `FinalShareRate` > 0.
* Disaster: the published `DisAdj` (negative dollars) as a determined reduction amount.
* Participant revenue is not published, so revenue-based loss limits cannot be applied.

Tolerance — what "within the published rounding" means here. CMS computes with unrounded
values and publishes rounded ones, so a row matches when the published `EarnSaveLoss`
lies within $1 of the interval of results our exact settlement gives over every quality
score consistent with what was published:

1. The true score q lies in [Q − h, Q + h] ∩ [0, 1], where Q is the published
   `QualScore` and h is half a unit in the last decimal place the file uses for that
   column (e.g. 0.005 for 2014's two decimals, 0.00005 for 2016–18's four, 0.00005 for
   2015's and 2022's percents with two decimals).
2. Where the sharing rate is max rate × q (PY ≤ 2020, standard met), q also lies in
   [(F − k) / max, (F + k) / max], F the published `FinalShareRate`, k its half-unit.
   A row without a published score (some first-year, pay-for-reporting ACOs in 2015)
   is constrained by step 2 alone.
3. Earned savings and owed losses are monotone in q, so the interval of results is
   [settle(q_low), settle(q_high)] (in either order).
4. The dollar amounts are whole dollars rounded from CMS's unrounded values, so the
   published `EarnSaveLoss` may lie up to $1.75 outside that interval:
   $0.50 for the rounding of `EarnSaveLoss` itself;
   $0.75 because `ABtotBnchmk` and `ABtotExp` are each rounded (±$0.50), so the gross
   savings S = B − E is within $1 of CMS's, and no rate applied to S exceeds 75 %
   (FSR × 0.98 ≤ 73.5 %, loss rate ≤ 75 %; through a cap or loss limit the rounding of
   B moves the result by at most 20 % × $0.50);
   $0.50 for the rounding of the published `DisAdj` that is fed back in.

With `--verbose`, each nonmatching row is printed with the reason.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from contracts.payments.errors import PaymentError  # noqa: E402
from contracts.payments.mssp import (  # noqa: E402
    SMALLEST_SCALE_POPULATION,
    DisasterAmount,
    LossLimitBasis,
    MsrOption,
    MsspInputs,
    MsspParameters,
    MsspSettlement,
    QualityResult,
    QualityRule,
    Track,
    parse_track,
    program_parameters,
    settle,
)

TOLERANCE_CENTS = 175
"""$0.50 (EarnSaveLoss rounding) + 75 % × $1 (B − E rounding) + $0.50 (DisAdj rounding)."""
FIXED_MSR_OPTIONS = {option.value: option for option in MsrOption if option.value is not None}
_NUMBER = re.compile(r"^\s*(-?)(\d*)(?:\.(\d*))?\s*(%?)\s*$")


@dataclass(frozen=True)
class PufValue:
    """A published decimal, exact, with the half-unit of its last published place."""

    value: Fraction
    half_unit: Fraction


def parse_decimal(text: str, *, scale: Fraction = Fraction(1), decimals: int | None = None) -> PufValue:
    """Read a PUF decimal ("0.0714", "6.46%", "-1,200") exactly; '%' divides by 100.

    `decimals` overrides the number of published decimals used for the half-unit.
    Raises ValueError on text that is not a plain decimal.
    """
    match = _NUMBER.match(text.replace(",", ""))
    if match is None or (match.group(2) == "" and not match.group(3)):
        raise ValueError(f"not a decimal: {text!r}")
    sign, whole, fraction_digits, percent = match.groups()
    fraction_digits = fraction_digits or ""
    value = Fraction(int(whole or "0") * 10 ** len(fraction_digits) + int(fraction_digits or "0"),
                     10 ** len(fraction_digits))
    if sign:
        value = -value
    if percent:
        scale = scale / 100
    places = len(fraction_digits) if decimals is None else decimals
    return PufValue(value * scale, Fraction(1, 2 * 10**places) * scale)


def dollars_to_cents(text: str) -> int:
    """Whole or decimal dollars → integer cents (exact; the PUF publishes whole dollars)."""
    cents = parse_decimal(text).value * 100
    if cents.denominator != 1:
        raise ValueError(f"dollar amount finer than a cent: {text!r}")
    return cents.numerator


def _decimal_places(rows: Sequence[dict[str, str]], column: str) -> int:
    """The most decimals any row shows in `column`: the file's publication precision."""
    places = 0
    for row in rows:
        match = _NUMBER.match(row.get(column, "").replace(",", ""))
        if match and match.group(3):
            places = max(places, len(match.group(3)))
    return places


def _year(path: Path, rows: Sequence[dict[str, str]]) -> int:
    if rows and rows[0].get("year"):
        return int(rows[0]["year"])
    found = re.search(r"(20\d\d)", path.name)
    if found is None:
        raise ValueError(f"{path.name}: no performance year in the file or its name")
    return int(found.group(1))


def _track(row: dict[str, str]) -> Track:
    if row.get("Current_Track"):
        return parse_track(row["Current_Track"].strip())
    for column, track in (
        ("Current_Track_1_Plus", Track.TRACK_1_PLUS),
        ("Current_Track_1", Track.TRACK_1),
        ("Current_Track_2", Track.TRACK_2),
        ("Current_Track_3", Track.TRACK_3),
        ("Track1", Track.TRACK_1),
        ("Track2", Track.TRACK_2),
    ):
        if row.get(column, "").strip() == "1":
            return track
    raise ValueError("row names no track")


def _start_year(row: dict[str, str]) -> int | None:
    text = row.get("Current_Start_Date") or row.get("Start_Date") or ""
    found = re.match(r"\s*\d{1,2}/\d{1,2}/(\d{2,4})", text)
    if found is None:
        return None
    year = int(found.group(1))
    return year + 2000 if year < 100 else year


@dataclass(frozen=True)
class RowResult:
    """One ACO-year: what CMS published and the interval our settlement allows."""

    aco_id: str
    published_cents: int
    low_cents: int
    high_cents: int
    matched: bool
    reason: str


@dataclass(frozen=True)
class FileReplay:
    """Replay of one PUF file."""

    name: str
    rows: int
    matched: int
    misses: tuple[RowResult, ...]


class PufLayout:
    """Per-file facts: year, percent scaling and publication precision of rate columns."""

    def __init__(self, path: Path, rows: Sequence[dict[str, str]]) -> None:
        self.year = _year(path, rows)
        # PY2015 publishes rates as bare percents ("98.08", "49.04"), PY2022 with "%".
        share_values = [
            parse_decimal(row["FinalShareRate"]).value
            for row in rows
            if row.get("FinalShareRate", "").strip() and "%" not in row["FinalShareRate"]
        ]
        self.percent_scale = Fraction(1, 100) if share_values and max(share_values) > 1 else Fraction(1)
        self.quality_places = _decimal_places(rows, "QualScore")
        self.share_places = _decimal_places(rows, "FinalShareRate")

    def rate(self, text: str, places: int) -> PufValue:
        return parse_decimal(text, scale=self.percent_scale, decimals=places)


def _quality_band(
    layout: PufLayout, row: dict[str, str], params: MsspParameters
) -> tuple[Fraction, Fraction, bool]:
    """(q_low, q_high, met): every quality score consistent with the published row."""
    final_share = layout.rate(row["FinalShareRate"], layout.share_places)
    met_column = row.get("Met_QPS")
    met = met_column.strip() == "1" if met_column is not None else final_share.value > 0
    text = row.get("QualScore", "").strip()
    if text.upper() == "P4R":
        low = high = Fraction(1)  # §425.502(a)(1): pay-for-reporting year, full credit
    elif text == "":
        low, high = Fraction(0), Fraction(1)  # no published score: only the share rate constrains it
    else:
        score = layout.rate(text, layout.quality_places)
        low, high = score.value - score.half_unit, score.value + score.half_unit
    if met and params.quality_rule is QualityRule.MULTIPLIER:
        low = max(low, (final_share.value - final_share.half_unit) / params.max_sharing_rate)
        high = min(high, (final_share.value + final_share.half_unit) / params.max_sharing_rate)
    return max(low, Fraction(0)), min(high, Fraction(1)), met


def _parameters(layout: PufLayout, row: dict[str, str], track: Track) -> MsspParameters:
    published_msr = parse_decimal(row["MinSavPerc"]).value
    option = MsrOption.VARIABLE
    if track not in (Track.TRACK_1, Track.BASIC_A, Track.BASIC_B):
        option = FIXED_MSR_OPTIONS.get(published_msr, MsrOption.VARIABLE)
    start = _start_year(row)
    # PY of participation in the track (Track 2 loss limit); a 2012 start's first PY ran to 2013.
    participation = layout.year - max(start, 2013) + 1 if start is not None else 1
    return program_parameters(
        track,
        layout.year,
        msr_option=option,
        track_participation_year=max(participation, 1),
        revenue_based_loss_limit=row.get("RevLossLimit", "0").strip() == "1",
    )


def replay_row(layout: PufLayout, row: dict[str, str]) -> RowResult:
    """Settle one ACO-year at both ends of its quality band and compare with `EarnSaveLoss`."""
    aco_id = (row.get("ACO_ID") or row.get("ACO_Num") or "").strip()
    published = dollars_to_cents(row["EarnSaveLoss"])
    try:
        track = _track(row)
        params = _parameters(layout, row, track)
        q_low, q_high, met = _quality_band(layout, row, params)
        if q_low > q_high:
            return RowResult(aco_id, published, 0, 0, False, "published QualScore and FinalShareRate disagree")
        beneficiaries = int(row["N_AB"])
        disaster_text = row.get("DisAdj", "").strip()
        disaster_cents = -dollars_to_cents(disaster_text) if disaster_text else 0
        settlements: list[MsspSettlement] = []
        for score in (q_low, q_high):
            inputs = MsspInputs(
                aco_id=aco_id,
                assigned_beneficiaries=beneficiaries,
                benchmark_cents=dollars_to_cents(row["ABtotBnchmk"]),
                expenditures_cents=dollars_to_cents(row["ABtotExp"]),
                quality=QualityResult(score=score, met_standard=met),
                small_population_msr=(
                    parse_decimal(row["MinSavPerc"]).value if beneficiaries < SMALLEST_SCALE_POPULATION else None
                ),
                disaster=DisasterAmount(disaster_cents) if disaster_cents > 0 else None,
            )
            settlements.append(settle(params, inputs))
    except (PaymentError, ValueError, KeyError) as error:
        return RowResult(aco_id, published, 0, 0, False, f"cannot settle: {type(error).__name__}: {error}")
    low = min(s.earned_cents for s in settlements)
    high = max(s.earned_cents for s in settlements)
    matched = low - TOLERANCE_CENTS <= published <= high + TOLERANCE_CENTS
    reason = ""
    if not matched:
        first = settlements[0]
        reason = (
            f"published {_dollars(published)} outside [{_dollars(low)}, {_dollars(high)}]"
            f" ± {_dollars(TOLERANCE_CENTS)}"
        )
        if first.loss_limit_basis is LossLimitBasis.BENCHMARK_REVENUE_UNKNOWN:
            reason += (
                "; the loss limit has a revenue leg and ACO-participant revenue is not in the PUF"
                f" (shared loss {_dollars(first.shared_losses_cents)},"
                f" benchmark leg {_dollars(first.loss_sharing_limit_cents or 0)}, DisAdj {disaster_text})"
            )
    return RowResult(aco_id, published, low, high, matched, reason)


def _dollars(cents: Fraction | int) -> str:
    """Cents as dollars with two decimals, truncated toward zero, exactly."""
    amount = Fraction(cents)
    whole = abs(amount.numerator) // amount.denominator
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole // 100}.{whole % 100:02d}"


def read_rows(path: Path) -> list[dict[str, str]]:
    """All rows of a PUF CSV (a BOM, if any, is dropped)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def replay_file(path: Path) -> FileReplay:
    """Replay every row of one PUF file."""
    rows = read_rows(path)
    layout = PufLayout(path, rows)
    results = [replay_row(layout, row) for row in rows]
    misses = tuple(result for result in results if not result.matched)
    return FileReplay(path.name, len(results), len(results) - len(misses), misses)


def main(argv: Iterable[str] | None = None) -> int:
    """Replay the files named on the command line; print per-file and total counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--verbose", action="store_true", help="print each nonmatching row and why")
    args = parser.parse_args(list(argv) if argv is not None else None)
    total = matched = 0
    for path in args.files:
        replay = replay_file(path)
        print(f"file={replay.name} rows={replay.rows} matched={replay.matched}")
        if args.verbose:
            for miss in replay.misses:
                print(f"  miss {replay.name} {miss.aco_id}: {miss.reason}")
        total += replay.rows
        matched += replay.matched
    print(f"matched={matched} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
