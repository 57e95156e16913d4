"""The one klines CSV reader: `start_ms,open,high,low,close,volume[,turnover[,spread_bps,imbalance]]` rows.

The optional book columns are what the service recorded at each decision (`offline export-dataset`): the
quoted spread in bps (>= 0) and the top-of-book imbalance in [-1, 1], empty where there was no book.
`read_csv_bars` checks and skips them; `read_csv_rows` returns them too.

Used by `offline.data.load_csv` (training data, strict), by the replay exchange (`lenient=True`) and, as
arrays (`read_csv_arrays`, strict), by `bot backtest` and `offline sweep`. `read_csv_arrays` parses a
plain file in a few numpy calls and checks it vectorised; a file that is anything else (gzip, a BOM, `\r`,
quotes, spaces, letters, the book columns) or that fails any check is read again by the per-row reader,
which raises the error naming the line and column, so both paths accept and refuse the same files with the
same messages. Every error is a `DataError` naming the file and the line (header = line 1) and what was
expected. A gzip file (by its magic bytes, whatever its name) is read decompressed; a UTF-8 byte-order mark
is skipped; bytes that are not UTF-8 are an error naming the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.bars import Bar
from bot.core.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CSV_COLUMNS: Final[tuple[str, ...]] = ("start_ms", "open", "high", "low", "close", "volume")
#: The optional columns after `volume`, in order: a header has none, `turnover`, or all three.
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = ("turnover", "spread_bps", "imbalance")
_HEADER: Final = f"{','.join(CSV_COLUMNS)}[,turnover[,spread_bps,imbalance]]"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BOM: Final = b"\xef\xbb\xbf"
#: The headers the fast path of `read_csv_arrays` takes (the book columns' empty fields go row by row).
_FAST_HEADERS: Final = {
    ",".join(CSV_COLUMNS).encode(): 6,
    ",".join((*CSV_COLUMNS, "turnover")).encode(): 7,
}
#: Bytes a fast-path body may hold: digits, signs, the decimal point, exponents, commas and newlines. Within
#: them numpy's parser (`PyOS_string_to_double`, as `float`) and `int` agree on what a number is.
_FAST_BYTES: Final = np.zeros(256, dtype=np.bool_)
_FAST_BYTES[np.frombuffer(b"0123456789+-.eE,\n", dtype=np.uint8)] = True
_COMMA, _NEWLINE = ord(","), ord("\n")


def _lines(p: Path) -> Generator[str, None, None]:
    """The file's lines as text: gzip decompressed, a leading BOM dropped, strict UTF-8 per line."""
    try:
        with p.open("rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
        fh = gzip.open(p, "rb") if gz else p.open("rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise DataError(f"{p}: cannot read klines CSV: {exc.strerror}") from exc
    with fh:
        line_no = 0
        try:
            for line_no, data in enumerate(fh, start=1):
                if line_no == 1 and data.startswith(_BOM):
                    data = data[len(_BOM) :]
                try:
                    yield data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = data[exc.start : exc.start + 4]
                    raise DataError(
                        f"{p}: line {line_no}: not UTF-8 text (byte {exc.start + 1}: {bad!r}); "
                        "save the CSV as UTF-8"
                    ) from None
        except (OSError, EOFError, zlib.error) as exc:
            what = "a damaged or truncated gzip file" if gz else "cannot read klines CSV"
            raise DataError(f"{p}: line {line_no + 1}: {what}: {exc}") from exc


def read_csv_bars(path: str | Path, symbol: str | None = None, *, lenient: bool = False) -> Iterator[Bar]:
    """Lazily read klines rows as bars (source "csv"), strictly ascending in `start_ms` without duplicates.

    Strict (the default): the header is exactly the six columns, optionally `turnover`, optionally followed
    by `spread_bps,imbalance`; every row has as many fields as the header; values are finite, prices > 0,
    volume and turnover >= 0, `high >= max(open, close, low)` and `low <= min(open, close)`; a book field
    is empty or a finite spread >= 0 / imbalance in [-1, 1] (checked, not part of the bar). Gaps are not
    checked here.

    Lenient: the header's first six columns must match, further columns are allowed and the seventh, if
    any, is read as turnover; a row needs at least six fields (extra ones are ignored, an empty or missing
    turnover is 0); values only need to parse as numbers (no finiteness, sign or high/low checks).
    Order is checked in both modes.

    Args:
        path: CSV file.
        symbol: symbol written on the bars; `None` takes the file name's prefix before "_" (BTCUSDT_5m.csv).
        lenient: accept what the replay exchange accepts (see above) instead of the strict checks.

    Raises:
        DataError: the file cannot be read, or a line is not as expected (raised when that line is reached).
    """
    for bar, _spread, _imbalance in read_csv_rows(path, symbol, lenient=lenient):
        yield bar


def read_csv_rows(
    path: str | Path, symbol: str | None = None, *, lenient: bool = False
) -> Iterator[tuple[Bar, float | None, float | None]]:
    """`read_csv_bars` with the book columns: (bar, spread_bps, imbalance), None where empty or absent."""
    p = Path(path)
    sym = symbol if symbol is not None else p.stem.split("_")[0].upper()
    lines = _lines(p)
    try:
        reader = csv.reader(lines)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{p}: empty file; expected header {_HEADER}")
        n_cols = _check_header(p, [h.strip() for h in header], lenient=lenient)
        prev_ms: int | None = None
        for line_no, row in enumerate(reader, start=2):
            where = f"{p}: line {line_no}"
            bar = _parse_row(row, sym, n_cols, where=where, lenient=lenient)
            if prev_ms is not None:
                if bar.start_ms == prev_ms:
                    raise DataError(f"{p}: line {line_no}: duplicate start_ms {bar.start_ms}")
                if bar.start_ms < prev_ms:
                    raise DataError(
                        f"{p}: line {line_no}: start_ms {bar.start_ms} is before the previous row's {prev_ms}"
                    )
            prev_ms = bar.start_ms
            yield (bar, *_parse_book(row, n_cols, where=where, lenient=lenient))
    except csv.Error as exc:
        raise DataError(f"{p}: line {reader.line_num}: not a CSV row: {exc}") from None
    finally:
        lines.close()


def _check_header(p: Path, cols: list[str], *, lenient: bool) -> int:
    """Validate the header; return the number of fields a strict row must have."""
    bad = tuple(cols[:6]) != CSV_COLUMNS
    if not lenient:
        bad = bad or len(cols) not in (6, 7, 9) or tuple(cols[6:]) != OPTIONAL_COLUMNS[: len(cols) - 6]
    if bad:
        raise DataError(f"{p}: line 1: expected header {_HEADER}, got {','.join(cols)}")
    return len(cols)


def _parse_row(row: list[str], symbol: str, n_cols: int, *, where: str, lenient: bool) -> Bar:
    if lenient and len(row) < 6:
        raise DataError(f"{where}: expected at least 6 fields, got {len(row)}")
    if not lenient and len(row) != n_cols:
        raise DataError(f"{where}: expected {n_cols} fields, got {len(row)}")
    try:
        start_ms = int(row[0])
    except ValueError:
        raise DataError(f"{where}: start_ms must be an integer epoch ms, got {row[0]!r}") from None
    finite = not lenient
    o, h, lo, c, v = (
        _parse_float(row[i], what=name, where=where, finite=finite)
        for i, name in enumerate(CSV_COLUMNS[1:], start=1)
    )
    has_turnover = (len(row) > 6 and row[6] != "") if lenient else n_cols >= 7
    t = _parse_float(row[6], what="turnover", where=where, finite=finite) if has_turnover else 0.0
    if not lenient:
        if min(o, h, lo, c) <= 0.0:
            raise DataError(f"{where}: prices must be > 0, got open={o} high={h} low={lo} close={c}")
        if h < lo:
            raise DataError(f"{where}: high {h} < low {lo}")
        if h < max(o, c) or lo > min(o, c):
            raise DataError(f"{where}: open/close outside [low, high]: o={o} h={h} l={lo} c={c}")
        if v < 0.0 or t < 0.0:
            raise DataError(f"{where}: volume/turnover must be >= 0, got {v}/{t}")
    return Bar(symbol, start_ms, o, h, lo, c, v, t, "csv")


def _parse_book(
    row: list[str], n_cols: int, *, where: str, lenient: bool
) -> tuple[float | None, float | None]:
    """The (spread_bps, imbalance) of a row with the book columns; (None, None) without them or when empty.
    Lenient mode does not read them (the replay exchange has no use for them)."""
    if lenient or n_cols != 9:
        return None, None
    spread = _parse_float(row[7], what="spread_bps", where=where, finite=True) if row[7] != "" else None
    imbalance = _parse_float(row[8], what="imbalance", where=where, finite=True) if row[8] != "" else None
    if spread is not None and spread < 0.0:
        raise DataError(f"{where}: spread_bps must be >= 0, got {spread}")
    if imbalance is not None and not -1.0 <= imbalance <= 1.0:
        raise DataError(f"{where}: imbalance must be in [-1, 1], got {imbalance}")
    return spread, imbalance


def _parse_float(text: str, *, what: str, where: str, finite: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {what} must be a number, got {text!r}") from None
    if finite and not math.isfinite(value):
        raise DataError(f"{where}: {what} must be finite, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class BarArrays:
    """One symbol's klines as arrays (row i: the file's i-th row), as the kernels take them; `turnover` is
    0 where the file has no such column."""

    symbol: str
    start_ms: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    turnover: F64

    def __len__(self) -> int:
        return int(self.start_ms.shape[0])

    def bar(self, i: int) -> Bar:
        """Row `i` as a `Bar` (source "csv"), as `read_csv_bars` yields it."""
        return Bar(
            self.symbol,
            int(self.start_ms[i]),
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
            float(self.turnover[i]),
            "csv",
        )

    def bars(self) -> list[Bar]:
        """Every row as a `Bar`."""
        cols = (self.open, self.high, self.low, self.close, self.volume, self.turnover)
        return [
            Bar(self.symbol, t, o, h, lo, c, v, tv, "csv")
            for t, o, h, lo, c, v, tv in zip(self.start_ms.tolist(), *(a.tolist() for a in cols), strict=True)
        ]


def read_csv_arrays(path: str | Path, symbol: str | None = None) -> BarArrays:
    """Every row of a klines CSV as arrays, with exactly the strict checks of `read_csv_bars` (book
    columns checked and dropped).

    A plain file (no gzip, no BOM, only digits, signs, points, exponents, commas and `\\n` after a 6- or
    7-column header) is parsed by numpy and checked vectorised; anything else, and any file that fails a
    check, is read by `read_csv_bars`, which names the bad line and column.

    Raises:
        DataError: the file cannot be read, or a line is not as expected (the per-row reader's message).
    """
    p = Path(path)
    sym = symbol if symbol is not None else p.stem.split("_")[0].upper()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read klines CSV: {exc.strerror}") from exc
    fast = _fast_arrays(raw, sym)
    return fast if fast is not None else _rows_as_arrays(p, sym)


def _fast_arrays(raw: bytes, symbol: str) -> BarArrays | None:
    """`raw` parsed and checked by numpy; None when the per-row reader must decide (`read_csv_arrays`)."""
    head, sep, body = raw.partition(b"\n")
    n_cols = _FAST_HEADERS.get(head)
    if n_cols is None or not sep or not body:
        return None
    if body.endswith(b"\n"):
        body = body[:-1]
    chars = np.frombuffer(body, dtype=np.uint8)
    if not bool(_FAST_BYTES[chars].all()):
        return None
    # every line has exactly n_cols fields: the newlines are the n_cols-th, 2*n_cols-th, ... separator
    seps = chars[(chars == _COMMA) | (chars == _NEWLINE)]
    n_rows = (seps.shape[0] + 1) // n_cols
    if seps.shape[0] != n_rows * n_cols - 1:
        return None
    at = np.flatnonzero(seps == _NEWLINE)
    if not np.array_equal(at, np.arange(n_cols - 1, seps.shape[0], n_cols)):
        return None
    names = (*CSV_COLUMNS[1:], *OPTIONAL_COLUMNS[:1])[: n_cols - 1]
    dtype = [("start_ms", np.int64), *((name, np.float64) for name in names)]
    try:  # int64 refuses "1.0", "1e3" and out-of-range integers, as the checks below want
        table = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=dtype, ndmin=1, comments=None)
    except ValueError:
        return None
    cols = [np.ascontiguousarray(table[name]) for name, _ in dtype]
    start_ms: I64 = cols[0]
    o, h, lo, c, v = cols[1:6]
    t = cols[6] if n_cols == 7 else np.zeros(n_rows, dtype=np.float64)
    values = np.stack((o, h, lo, c, v, t))
    ok = (
        np.isfinite(values).all()
        and (np.minimum(np.minimum(o, h), np.minimum(lo, c)) > 0.0).all()
        and (h >= lo).all()
        and (h >= np.maximum(o, c)).all()
        and (lo <= np.minimum(o, c)).all()
        and (v >= 0.0).all()
        and (t >= 0.0).all()
        and (np.diff(start_ms) > 0).all()
    )
    return BarArrays(symbol, start_ms, o, h, lo, c, v, t) if ok else None


def _rows_as_arrays(p: Path, symbol: str) -> BarArrays:
    """The per-row reader's bars as arrays (raises its `DataError` on the first bad line)."""
    bars = list(read_csv_bars(p, symbol))
    n = len(bars)
    start_ms = np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=n)
    o, h, lo, c, v, t = (
        np.fromiter((getattr(b, f) for b in bars), dtype=np.float64, count=n)
        for f in ("open", "high", "low", "close", "volume", "turnover")
    )
    return BarArrays(symbol, start_ms, o, h, lo, c, v, t)
