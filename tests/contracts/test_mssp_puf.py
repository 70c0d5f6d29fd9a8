"""Replay every row of CMS's MSSP public use files through the settlement contract.

The six CSVs in tests/data/mssp-puf/ are unedited copies of shared/data/mssp-puf/ (see the
README there). METHODS.md §2.1: 2,658 of the 2,659 ACO-years reproduce within the published
rounding; the one that cannot is PY2022 A1070, whose loss limit needs ACO revenue.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PUF_DIR = REPO_ROOT / "tests" / "data" / "mssp-puf"
PUF_FILES = sorted(PUF_DIR.glob("mssp_puf_py*.csv"))


def load_replay() -> ModuleType:
    """Import scripts/replay_mssp_puf.py by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("replay_mssp_puf", REPO_ROOT / "scripts" / "replay_mssp_puf.py")
    if spec is None or spec.loader is None:
        raise ImportError("scripts/replay_mssp_puf.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("replay_mssp_puf", module)
    spec.loader.exec_module(module)
    return module


replay = load_replay()

EXPECTED = {
    "mssp_puf_py2014.csv": (333, 333),
    "mssp_puf_py2015.csv": (392, 392),
    "mssp_puf_py2016.csv": (432, 432),
    "mssp_puf_py2017.csv": (472, 472),
    "mssp_puf_py2018.csv": (548, 548),
    "mssp_puf_py2022.csv": (482, 481),
}


def test_all_six_puf_files_are_present() -> None:
    assert [path.name for path in PUF_FILES] == sorted(EXPECTED)


@pytest.mark.parametrize("path", PUF_FILES, ids=lambda path: path.name)
def test_each_puf_file_reproduces_its_expected_count(path: Path) -> None:
    result = replay.replay_file(path)
    assert (result.rows, result.matched) == EXPECTED[path.name]


def test_the_only_miss_is_py2022_a1070_for_want_of_aco_revenue() -> None:
    misses = [(path.name, miss) for path in PUF_FILES for miss in replay.replay_file(path).misses]
    assert [(name, miss.aco_id) for name, miss in misses] == [("mssp_puf_py2022.csv", "A1070")]
    assert "revenue" in misses[0][1].reason


def test_the_script_prints_the_total_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main([str(path) for path in PUF_FILES]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "matched=2658 of 2659"
    assert "file=mssp_puf_py2018.csv rows=548 matched=548" in lines


def test_verbose_output_names_the_miss_and_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main(["--verbose", str(PUF_DIR / "mssp_puf_py2022.csv")]) == 0
    out = capsys.readouterr().out
    assert "A1070" in out and "revenue" in out
    assert out.splitlines()[-1] == "matched=481 of 482"


def test_a_published_figure_beyond_the_rounding_band_does_not_match(tmp_path: Path) -> None:
    # PY2018 A1001 alone matches; moved $3 above the top of its band it must not.
    source = (PUF_DIR / "mssp_puf_py2018.csv").read_text(encoding="utf-8-sig").splitlines()
    header, first = source[0], source[1]
    assert first.startswith("A1001,") and ",50087988," in first
    single = tmp_path / "mssp_puf_py2018.csv"
    single.write_text(header + "\n" + first + "\n", encoding="utf-8")
    original = replay.replay_file(single)
    assert (original.rows, original.matched) == (1, 1)
    row = replay.replay_row(replay.PufLayout(single, replay.read_rows(single)), replay.read_rows(single)[0])
    moved = str(row.high_cents // 100 + 3)
    single.write_text(header + "\n" + first.replace(",50087988,", f",{moved},") + "\n", encoding="utf-8")
    assert replay.replay_file(single).matched == 0


def test_decimal_parsing_is_exact() -> None:
    from fractions import Fraction

    assert replay.parse_decimal("6.46%").value == Fraction(646, 10_000)
    assert replay.parse_decimal("6.46%").half_unit == Fraction(1, 20_000)  # half of 0.01 %
    assert replay.parse_decimal("0.030860861").value == Fraction(30_860_861, 10**9)
    assert replay.dollars_to_cents("-1200236") == -120_023_600


def test_the_small_population_msr_scale_gives_every_published_msr_from_500_to_4999() -> None:
    # §425.110(b)(1)(i): below 5,000 the variable MSR follows the assigned count. Every
    # published MinSavPerc of an ACO with 500–4,999 assigned beneficiaries (88 ACO-years)
    # equals the scale to its published precision; the one row below 500 (PY2017 A05696,
    # N = 152) has no published scale and stays a replay input.
    import csv

    from contracts.payments.mssp import minimum_savings_rate_for_small_population

    compared, below = 0, []
    for path in PUF_FILES:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                beneficiaries = int(row["N_AB"])
                if beneficiaries < 500:
                    below.append((path.name, beneficiaries))
                if not 500 <= beneficiaries < 5_000:
                    continue
                published = replay.parse_decimal(row["MinSavPerc"])
                scale = minimum_savings_rate_for_small_population(beneficiaries)
                assert abs(scale - published.value) <= published.half_unit, (path.name, row["N_AB"])
                compared += 1
    assert compared == 88
    assert below == [("mssp_puf_py2017.csv", 152)]
