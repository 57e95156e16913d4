"""bot.sim.csvbars: one klines CSV reader, strict by default, lenient for the replay exchange."""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np
import pytest

from bot.core.errors import DataError
from bot.sim.csvbars import BarArrays, _fast_arrays, read_csv_arrays, read_csv_bars

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


# ---- read_csv_arrays: the numpy fast path and its fallback --------------------------------------------

REAL = Path(__file__).resolve().parents[2] / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
_FIELDS = ("start_ms", "open", "high", "low", "close", "volume", "turnover")


def _as_rows(arrays: BarArrays) -> list[tuple[float, ...]]:
    return list(zip(*(getattr(arrays, f).tolist() for f in _FIELDS), strict=True))


def _per_row(path: Path, symbol: str | None = None) -> list[tuple[float, ...]]:
    return [
        (b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover)
        for b in read_csv_bars(path, symbol)
    ]


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data is not present")
@pytest.mark.parametrize("name", ["BTCUSDT_5m.csv", "ETHUSDT_5m.csv", "SOLUSDT_5m.csv", "XRPUSDT_5m.csv",
                                  "BNBUSDT_5m.csv", "BTCUSDT_1m.csv"])  # fmt: skip
def test_arrays_equal_the_per_row_reader_on_real_data(name: str) -> None:
    """On the real files the fast path is taken and gives exactly the per-row reader's values and types."""
    path = REAL / name
    assert _fast_arrays(path.read_bytes(), "X") is not None
    arrays = read_csv_arrays(path)
    assert arrays.symbol == name.split("_")[0]
    assert arrays.start_ms.dtype == np.int64
    assert _as_rows(arrays) == _per_row(path)
    assert len(arrays) > 25_000
    assert arrays.bar(3) == next(b for i, b in enumerate(read_csv_bars(path)) if i == 3)


_EDGE_TOKENS = ["1", "1.", ".5", "+.5", "00.25", "1e3", "1E-3", "1.e2", "2.5e+2", "1e308", "4.9e-324", "0.1",
                "0.30000000000000004", "123456789.123456789", "9007199254740993", "1e22", "1e23"]  # fmt: skip


@pytest.mark.parametrize("turnover", [False, True])
def test_arrays_equal_the_per_row_reader_on_edge_numbers(tmp_path: Path, turnover: bool) -> None:
    """Exponents, signs, bare points, subnormals and long mantissas parse as `float` parses them."""
    header = "start_ms,open,high,low,close,volume" + (",turnover" if turnover else "")
    rows = [
        f"{1000 + i},{tok},{tok},{tok},{tok},{tok}" + (f",{tok}" if turnover else "")
        for i, tok in enumerate(_EDGE_TOKENS)
    ]
    path = _write(tmp_path, header + "\n" + "\n".join(rows))  # no final newline
    assert _fast_arrays(path.read_bytes(), "X") is not None
    assert _as_rows(read_csv_arrays(path)) == _per_row(path)
    assert read_csv_arrays(path).open.tolist() == [float(t) for t in _EDGE_TOKENS]


@pytest.mark.parametrize(
    "body",
    [
        "1,1,1,1,1,1\r\n2,1,1,1,1,1\r\n",  # CRLF: the csv module's reading
        '1,1,1,1,1,1\n"2",1,1,1,1,1\n',  # a quoted field
        "1, 1,1,1,1,1\n",  # a space
        "+1,1,1,1,1,1\n-0,1,1,1,1,1\n",  # signed start_ms, not ascending: refused by the fallback
    ],
)
def test_arrays_leave_other_files_to_the_per_row_reader(tmp_path: Path, body: str) -> None:
    """CRLF, quotes and spaces take the per-row path, whose answer (values or error) is the result."""
    path = _write(tmp_path, "start_ms,open,high,low,close,volume\n" + body)
    assert _fast_arrays(path.read_bytes(), "X") is None
    try:
        expected: list[tuple[float, ...]] | str = _per_row(path)
    except DataError as exc:
        expected = str(exc)
    try:
        got: list[tuple[float, ...]] | str = _as_rows(read_csv_arrays(path))
    except DataError as exc:
        got = str(exc)
    assert got == expected


_BAD_ROWS = [
    ("1,1,1,1,1,1\n1,1,1,1,1,1\n", "line 3: duplicate start_ms 1"),
    ("2,1,1,1,1,1\n1,1,1,1,1,1\n", "line 3: start_ms 1 is before the previous row's 2"),
    ("1,1,1,1,1\n", "line 2: expected 6 fields, got 5"),
    ("1,1,1,1,1,1\n2,1,1,1,1,1,1\n", "line 3: expected 6 fields, got 7"),
    ("1,1,1,1,1,1\n\n2,1,1,1,1,1\n", "line 3: expected 6 fields, got 0"),
    ("1.0,1,1,1,1,1\n", "line 2: start_ms must be an integer epoch ms, got '1.0'"),
    ("1e3,1,1,1,1,1\n", "line 2: start_ms must be an integer epoch ms, got '1e3'"),
    ("1,1,1,1,1,1\n2,1,1,1,1..5,1\n", "line 3: close must be a number, got '1..5'"),
    ("1,1,1,1,1,\n", "line 2: volume must be a number, got ''"),
    ("1,1e999,1,1,1,1\n", "line 2: open must be finite, got '1e999'"),
    ("1,nan,1,1,1,1\n", "line 2: open must be finite, got 'nan'"),
    ("1,0,1,1,1,1\n", "line 2: prices must be > 0"),
    ("1,1,1,1,-1,1\n", "line 2: prices must be > 0"),
    ("1,1,1,2,1,1\n", "line 2: high 1.0 < low 2.0"),
    ("1,2,1.5,1,1,1\n", "line 2: open/close outside [low, high]"),
    ("1,1,2,1.5,1,1\n", "line 2: open/close outside [low, high]"),
    ("1,1,1,1,1,-1\n", "line 2: volume/turnover must be >= 0"),
]


@pytest.mark.parametrize(("rows", "message"), _BAD_ROWS)
def test_arrays_refuse_what_the_per_row_reader_refuses_with_its_message(
    tmp_path: Path, rows: str, message: str
) -> None:
    """Every strict check holds on the fast path too; the error is the per-row reader's, naming the line."""
    path = _write(tmp_path, "start_ms,open,high,low,close,volume\n" + rows)
    with pytest.raises(DataError) as per_row:
        _per_row(path)
    with pytest.raises(DataError) as arrays:
        read_csv_arrays(path)
    assert str(arrays.value) == str(per_row.value)
    assert re.search(re.escape(f"ETHUSDT_5m.csv: {message}"), str(arrays.value))


def test_arrays_read_gzip_and_bom_files_and_refuse_a_missing_one(tmp_path: Path) -> None:
    """A gzip file and a BOM go through the per-row reader (same values); a missing file is a DataError."""
    text = "start_ms,open,high,low,close,volume,turnover\n1,1,2,1,1.5,3,4.5\n2,1.5,2,1,1,3,4\n"
    gz = tmp_path / "BTCUSDT_5m.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    bom = tmp_path / "BTCUSDT_5m.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    for path in (gz, bom):
        assert _fast_arrays(path.read_bytes(), "X") is None
        arrays = read_csv_arrays(path)
        assert _as_rows(arrays) == [(1, 1.0, 2.0, 1.0, 1.5, 3.0, 4.5), (2, 1.5, 2.0, 1.0, 1.0, 3.0, 4.0)]
        assert arrays.symbol == "BTCUSDT"
    with pytest.raises(DataError, match=r"nope\.csv: cannot read klines CSV"):
        read_csv_arrays(tmp_path / "nope.csv")
