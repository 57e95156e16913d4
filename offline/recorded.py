"""What the service recorded, as training data: the ledger's bars with the book top of each decision.

`recorded_rows(ledger, symbol)` reads them (read-only: safe while the bot runs), `recorded_bars` keeps the
bars (for merging into REST history), and `export_dataset` writes them as a klines CSV with the optional
book columns, `start_ms,open,high,low,close,volume,turnover,spread_bps,imbalance`, which the one CSV reader
(`bot.sim.csvbars`) reads back (`read_csv_bars` the bars, `read_csv_rows` the book columns too). Warm-up
bars and bars decided without a book have empty book fields.

The CSV is staged and renamed into place (`bot.outputs.StagedOutput`); an existing `--out` is replaced only
when it is a previous export (its header is `EXPORT_HEADER`).
"""

from __future__ import annotations

import csv
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bot.core.bars import Bar
from bot.core.errors import BotError, DataError
from bot.ledger.writer import Ledger, LedgerError
from bot.outputs import StagedOutput
from bot.sim.csvbars import CSV_COLUMNS, OPTIONAL_COLUMNS

EXPORT_HEADER: Final[tuple[str, ...]] = (*CSV_COLUMNS, *OPTIONAL_COLUMNS)


class RecordedDataError(DataError):
    """The ledger holds no recorded bars (of the symbol asked for), or the symbol is ambiguous."""


@dataclass(frozen=True, slots=True)
class RecordedBar:
    """A stored bar and the top of book the service held when it decided it (None: no book, or warm-up).

    `book_ts_ms` is the book update's exchange time (epoch ms): compare it with the bar's close
    (`start_ms` + interval) to judge how fresh the book was.
    """

    bar: Bar
    spread_bps: float | None
    imbalance: float | None
    book_ts_ms: int | None


def recorded_rows(
    ledger_path: str | Path, symbol: str | None = None, *, busy_timeout_s: float = 5.0
) -> tuple[str, list[RecordedBar]]:
    """The recorded bars of `symbol` (None: the ledger's only symbol), ascending; returns (symbol, rows).
    `busy_timeout_s`: how long to wait for a ledger another process holds locked.

    Raises:
        LedgerError: the ledger is missing, not a ledger of this bot, corrupt or locked.
        RecordedDataError: no recorded bars (of `symbol`), or several symbols and `symbol` is None.
    """
    with Ledger.open_readonly(ledger_path, busy_timeout_s=busy_timeout_s) as ledger:
        held = ledger.symbols()
        if not held:
            raise RecordedDataError(
                f"{ledger_path}: holds no recorded bars; run the bot on it first (python -m bot run)"
            )
        if symbol is None:
            if len(held) > 1:
                raise RecordedDataError(
                    f"{ledger_path}: holds bars of {', '.join(held)}; pick one with --symbol"
                )
            symbol = held[0]
        elif symbol not in held:
            raise RecordedDataError(
                f"--symbol {symbol}: {ledger_path} holds no bars of it; it holds {', '.join(held)}"
            )
        rows = [RecordedBar(*r) for r in ledger.recorded(symbol)]
    return symbol, rows


def recorded_bars(ledger_path: str | Path, symbol: str | None = None) -> list[Bar]:
    """The bars the service stored for `symbol` (warm-up and decided), ascending (see `recorded_rows`)."""
    return [r.bar for r in recorded_rows(ledger_path, symbol)[1]]


def export_csv_reason(path: Path) -> str | None:
    """None when `path` is a CSV `export_dataset` wrote (so a new export may replace it), else why not."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError):
        header = None
    if header is None or tuple(header) != EXPORT_HEADER:
        return f"exists and is not a CSV written by offline export-dataset (header {','.join(EXPORT_HEADER)})"
    return None


def export_output(path: str | Path, ledger_path: str | Path) -> StagedOutput:
    """The staged `--out` of `export-dataset`: replaces only a previous export, never the ledger."""
    return StagedOutput(
        path, kind="recorded-csv", recognise=export_csv_reason, is_file=True, protect=[ledger_path]
    )


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def export_dataset(
    ledger_path: str | Path, out: str | Path, *, symbol: str | None = None
) -> dict[str, object]:
    """Write the recorded bars of `symbol` to `out` (staged, atomic); returns what was written.

    Raises:
        OutputPathError: `out` must not be replaced (checked before the ledger is read); nothing touched.
        LedgerError, RecordedDataError: as `recorded_rows`; nothing written.
    """
    out = Path(out)
    stage = export_output(out, ledger_path)
    stage.check()
    sym, rows = recorded_rows(ledger_path, symbol)
    with stage as tmp:
        with (tmp / out.name).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(EXPORT_HEADER)
            for r in rows:
                b = r.bar
                w.writerow(
                    [
                        b.start_ms,
                        *(repr(v) for v in (b.open, b.high, b.low, b.close, b.volume, b.turnover)),
                        _num(r.spread_bps),
                        _num(r.imbalance),
                    ]
                )
        stage.commit()
    return {
        "symbol": sym,
        "bars": len(rows),
        "with_book": sum(r.spread_bps is not None for r in rows),
        "first_start_ms": rows[0].bar.start_ms,
        "last_start_ms": rows[-1].bar.start_ms,
    }


def snapshot_reason(path: Path) -> str | None:
    """None when `path` is a ledger of this bot (so a new snapshot may replace it), else why not."""
    try:
        Ledger.open_readonly(path, busy_timeout_s=0.5).close()
    except BotError as exc:
        return f"exists and is not a ledger snapshot ({exc})"
    return None


def snapshot_ledger(ledger_path: str | Path, out: str | Path) -> dict[str, object]:
    """A consistent copy of the bot's ledger at `out` (SQLite online backup: safe while the bot writes).

    The nightly retrain unit runs it with full privileges (`ExecStartPre=+`) to read the bot's private state
    directory, then trains on the copy as its own user (the `-wal`/`-shm` files SQLite may create beside a
    cleanly closed ledger stay the ledger owner's: SQLite running as root hands them to the database file's
    owner; tests/test_export_dataset.py checks it). `out` is staged and renamed into place; an existing
    `out` is replaced only when it is a ledger (a previous snapshot), never the source.

    Raises:
        OutputPathError: `out` must not be replaced; nothing touched.
        LedgerError: the source is missing, not a ledger of this bot, corrupt or locked.
    """
    src, out = Path(ledger_path), Path(out)
    stage = StagedOutput(out, kind="ledger-snapshot", recognise=snapshot_reason, is_file=True, protect=[src])
    stage.check()
    with Ledger.open_readonly(src) as ledger, stage as tmp:
        symbols = ledger.symbols()
        target = sqlite3.connect(tmp / out.name)
        try:
            ledger.conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        except sqlite3.Error as exc:
            raise LedgerError(f"{src}: cannot copy the ledger: {exc}") from exc
        finally:
            target.close()
        stage.commit()
    return {"ledger": str(src), "out": str(out), "symbols": symbols, "bytes": out.stat().st_size}
