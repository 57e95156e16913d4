"""bot.sim.csvbars: one klines CSV reader, strict by default, lenient for the replay exchange."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bot.core.errors import DataError
from bot.sim.csvbars import read_csv_bars

T0 = 1_700_000_000_000
STEP_MS = 300_000


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ETHUSDT_5m.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_strict_reads_clean_rows_lazily_with_the_file_symbol(tmp_path: Path) -> None:
    """A clean file yields csv bars named after the file prefix; a bad line fails only when reached."""
    path = _write(
        tmp_path,
        "start_ms,open,high,low,close,volume,turnover\n"
        f"{T0},100,101,99,100.5,2,201\n"
        f"{T0 + STEP_MS},100.5,102,100,101,3,303\n"
        f"{T0 + 2 * STEP_MS},x,102,100,101,3,303\n",
    )
    bars = read_csv_bars(path)
    first = next(bars)
    assert (first.symbol, first.start_ms, first.close, first.turnover, first.source) == (
        "ETHUSDT",
        T0,
        100.5,
        201.0,
        "csv",
    )
    assert next(bars).start_ms == T0 + STEP_MS
    with pytest.raises(DataError, match=r"ETHUSDT_5m\.csv: line 4: open must be a number, got 'x'"):
        next(bars)


# One row each, that lenient mode accepts and strict mode rejects (the message strict mode gives).
_LENIENT_ONLY = [
    ("start_ms,open,high,low,close,volume,turnover,confirm\n", "1,1,1,1,1,1,1\n", "line 1: expected header"),
    ("start_ms,open,high,low,close,volume,turnover\n", "1,1,1,1,1,1,\n", "line 2: turnover must be a number"),
    ("start_ms,open,high,low,close,volume\n", "1,1,1,1,1,1,1\n", "line 2: expected 6 fields, got 7"),
    ("start_ms,open,high,low,close,volume\n", "1,nan,1,1,1,1\n", "line 2: open must be finite"),
    ("start_ms,open,high,low,close,volume\n", "1,0,1,1,1,1\n", "line 2: prices must be > 0"),
    ("start_ms,open,high,low,close,volume\n", "1,1,1,2,1,1\n", "line 2: high 1.0 < low 2.0"),
    ("start_ms,open,high,low,close,volume\n", "1,1,1,1,1,-1\n", "line 2: volume/turnover must be >= 0"),
]


@pytest.mark.parametrize(("header", "row", "strict_error"), _LENIENT_ONLY)
def test_lenient_accepts_what_strict_rejects(
    tmp_path: Path, header: str, row: str, strict_error: str
) -> None:
    """Extra columns, an empty turnover and unchecked values pass with lenient=True; strict names the line."""
    path = _write(tmp_path, header + row)
    with pytest.raises(DataError, match=strict_error):
        list(read_csv_bars(path, "X"))
    [bar] = read_csv_bars(path, "X", lenient=True)
    assert bar.symbol == "X"
    assert bar.start_ms == 1


def test_lenient_reads_turnover_from_the_seventh_column_or_zero(tmp_path: Path) -> None:
    """Lenient: the seventh field is turnover, an empty one is 0, fields after it are ignored."""
    path = _write(
        tmp_path,
        "start_ms,open,high,low,close,volume,turnover,extra\n1,1,2,1,1,1,5,z\n2,1,2,1,1,1,,z\n3,inf,1,1,1,1\n",
    )
    bars = list(read_csv_bars(path, lenient=True))
    assert [b.turnover for b in bars] == [5.0, 0.0, 0.0]
    assert math.isinf(bars[2].open)


@pytest.mark.parametrize("lenient", [False, True])
@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,1,1,1,1,1\n1,1,1,1,1,1\n", "line 3: duplicate start_ms 1"),
        ("2,1,1,1,1,1\n1,1,1,1,1,1\n", "line 3: start_ms 1 is before the previous row's 2"),
        ("1,1,1,1,1\n", "line 2: expected"),
        ("one,1,1,1,1,1\n", "line 2: start_ms must be an integer epoch ms, got 'one'"),
        ("1,1,1,1,abc,1\n", "line 2: close must be a number, got 'abc'"),
    ],
)
def test_both_modes_reject_disorder_and_unparsable_rows(
    tmp_path: Path, lenient: bool, rows: str, message: str
) -> None:
    """Order, field count and numbers are checked in both modes, naming the file and the line."""
    path = _write(tmp_path, "start_ms,open,high,low,close,volume\n" + rows)
    with pytest.raises(DataError, match=re.escape(f"ETHUSDT_5m.csv: {message}")):
        list(read_csv_bars(path, lenient=lenient))


@pytest.mark.parametrize("lenient", [False, True])
def test_bad_header_empty_and_missing_files_are_data_errors(tmp_path: Path, lenient: bool) -> None:
    """A wrong header, an empty file and a missing file raise DataError naming the file, in both modes."""
    with pytest.raises(DataError, match="line 1: expected header start_ms,open"):
        list(read_csv_bars(_write(tmp_path, "time,o,h,l,c,v\n1,1,1,1,1,1\n"), lenient=lenient))
    with pytest.raises(DataError, match="empty file"):
        list(read_csv_bars(_write(tmp_path, ""), lenient=lenient))
    with pytest.raises(DataError, match=r"nope\.csv: cannot read klines CSV"):
        list(read_csv_bars(tmp_path / "nope.csv", lenient=lenient))
