"""SQLite ledger of bars, decisions, fills, positions and shadow scores: one transaction per bar close.

Tables (SQL in `bot.ledger.schema`; columns and meaning: docs/architecture.md, "The ledger"):

- `bars(symbol, start_ms, open, high, low, close, volume, turnover, source, spread_bps, imbalance,
  book_ts_ms)`, key (symbol, start_ms): every bar the service saw, with the top of book it held when it
  decided the bar (NULL: warm-up bar, or no book yet);
- `decisions(symbol, start_ms, ...)`, PRIMARY KEY (symbol, start_ms): a bar is decided at most once;
- `fills(symbol, start_ms, seq, ...)`, key (symbol, start_ms, seq), each referring to its decision;
- `positions(symbol PRIMARY KEY, ..., state_json)`: the paper state after the symbol's last decided bar;
- `shadow_forecasts(symbol, start_ms, tier, prediction, vol_forecast)`: every tier's forecast of a decided bar
  (`bot.observe.shadow`), so live scores can be recomputed and the scorer re-seeded after a restart;
- `shadow_scores(symbol, start_ms, tier, window, n, ic, vol_ic, vol_qlike, regret, per_symbol)`: the
  scorer's rolling scores of `symbol`'s bars, taken after its decided bar (symbol, start_ms); `per_symbol`
  0 marks rows of older ledgers, whose scores were pooled over all symbols (the column is added on open).

Shadow rows are computed after the bar's decision is out, so `stage_shadow` buffers them and the next
transaction (the next bar's, or `flush`/`close`) writes them: no extra commit per bar, and a crash loses at
most the newest bar's shadow rows.

`record(bar, decision, state)` writes the bar, the decision record, its fills and the new position in ONE
`BEGIN IMMEDIATE ... COMMIT`: after a crash either all of a bar is there or none of it. `record_close` does
the same for every bar of a bar close at once (the service's group commit: one transaction, one fsync).
Recording a key that is already decided raises `AlreadyDecidedError` and changes nothing (a second decision
of a bar is a bug in the caller, which should skip bars with `is_decided`/`last_decided` after a restart).

Durability: WAL journal with `synchronous = FULL` by default. A killed process (SIGKILL) loses nothing that
committed under either FULL or NORMAL, since the WAL is in the OS page cache; FULL also fsyncs the WAL at
every commit so a decided bar survives power loss or a kernel crash too - otherwise the decisions log could
hold lines for bars the ledger lost, and a restart would decide them again. The price is an fsync per
commit (milliseconds against microseconds under NORMAL: benchmarks/bench_ledger.py, docs/performance.md).
At one commit per bar close (minutes apart) that is affordable, but it is blocking I/O: write the ledger after
the bars' latency stages are measured (`[ledger].synchronous = "normal"` if a deployment prefers speed).

The queries (restore and replay, shadow reads, summaries, stops) are `bot.ledger.reader.LedgerReader`'s, which
`Ledger` extends; this module opens, migrates and writes the file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from bot.core.bars import Bar, BookTop
from bot.core.decision import DecisionRecord
from bot.core.paper import Fill, PaperResult, PositionState
from bot.ledger import schema
from bot.ledger.lock import LedgerError as LedgerError
from bot.ledger.lock import LedgerInUseError as LedgerInUseError
from bot.ledger.lock import LedgerLock as LedgerLock
from bot.ledger.reader import LedgerReader
from bot.observe.shadow import Forecasts, ShadowScore


class AlreadyDecidedError(LedgerError):
    """`record` was called for a (symbol, start_ms) that already has a decision."""


@dataclass(frozen=True, slots=True)
class BarWrite:
    """One bar of a bar close for `Ledger.record_close`: decided (`decision`, the symbol's paper `state` after
    it, the `book` held at the decision) or absorbed only (warm-up: `decision` and `state` None)."""

    bar: Bar
    decision: DecisionRecord | None = None
    state: PositionState | None = None
    book: BookTop | None = None


def _checked(w: BarWrite) -> PositionState:
    """`w.state`, after checking that the bar, its decision, fills and state are of one (symbol, start_ms).

    Raises:
        LedgerError: they disagree (or a decision without a state).
    """
    bar, decision, state = w.bar, w.decision, w.state
    assert decision is not None
    key = (bar.symbol, bar.start_ms)
    if state is None or (decision.symbol, decision.start_ms) != key or state.symbol != bar.symbol:
        raise LedgerError(
            f"record: expected decision and state for {key}, got decision "
            f"{(decision.symbol, decision.start_ms)} and state of {None if state is None else state.symbol!r}"
        )
    bad = [f.seq for f in decision.fills if (f.symbol, f.start_ms) != key]
    if bad:
        raise LedgerError(f"record: fills {bad} are not for bar {key}")
    if state.last_start_ms != bar.start_ms:
        raise LedgerError(f"record: expected state after bar {bar.start_ms}, got after {state.last_start_ms}")
    return state


def _position_row(state: PositionState) -> tuple[Any, ...]:
    """`state` as a `positions` row."""
    return (
        state.symbol,
        state.last_start_ms,
        state.units,
        state.qty,
        state.avg_entry_px,
        state.mark_px,
        state.tier,
        state.regime,
        state.realized_pnl_usd,
        state.fees_usd,
        state.to_json(),
    )


class Ledger(LedgerReader):
    """An open ledger. Use `Ledger.open(path)`; close with `close()` or as a context manager.

    Not thread-safe: use it from one thread (the event loop's).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool = False) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self.read_only = read_only
        self._forecast_rows: list[tuple[Any, ...]] = []  # staged shadow rows, written by the next transaction
        self._score_rows: list[tuple[Any, ...]] = []

    @classmethod
    def open(cls, path: str | Path, *, synchronous: Literal["full", "normal"] = "full") -> Ledger:
        """Open or create the ledger at `path` (parent directories are created).

        Raises:
            LedgerError: the file cannot be opened, is not SQLite, or has another schema version.
        """
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(p, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"{p}: cannot open ledger: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, schema.SCHEMA_VERSION):
                raise LedgerError(
                    f"{p}: ledger schema version {version}, this bot writes {schema.SCHEMA_VERSION}"
                )
            conn.execute("BEGIN IMMEDIATE")
            for stmt in schema.DDL.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            for table, added in schema.ADDED_COLUMNS.items():
                have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, sql_type in added:
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"{p}: not a usable SQLite ledger: {exc}") from exc
        except LedgerError:
            conn.close()
            raise
        return cls(conn, p)

    @classmethod
    def open_readonly(cls, path: str | Path, *, busy_timeout_s: float = 5.0) -> Ledger:
        """Open an existing ledger for reading only (safe while the service writes it: WAL readers never block
        the writer); creates, migrates and changes nothing. `busy_timeout_s`: how long to wait for a lock
        another process holds (the bot's own writes never take one that blocks a reader).

        Raises:
            LedgerError: no such file, not an SQLite ledger, another schema version, or locked too long.
        """
        p = Path(path)
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist"
            raise LedgerError(f"{p}: {what}; expected the bot's ledger file ([ledger] path of its config)")
        try:
            conn = sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True, timeout=busy_timeout_s)
        except sqlite3.Error as exc:
            raise LedgerError(f"{p}: cannot open ledger: {exc}") from exc
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version != schema.SCHEMA_VERSION or "bars" not in tables:
                raise LedgerError(
                    f"{p}: not a ledger of this bot (schema version {version}, tables {sorted(tables)}); "
                    "expected the bot's [ledger] path"
                )
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerError(f"{p}: ledger is locked ({exc}); retry in a moment") from exc
            raise LedgerError(f"{p}: not a usable SQLite ledger: {exc}") from exc
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"{p}: not a usable SQLite ledger: {exc}") from exc
        except LedgerError:
            conn.close()
            raise
        return cls(conn, p, read_only=True)

    # ---- lifecycle (queries and the `conn` property: bot.ledger.reader.LedgerReader) ---------------
    def close(self) -> None:
        """Write the staged shadow rows (`flush`), then close without a checkpoint (the WAL is replayed on
        next open). Idempotent; the connection is closed even when the flush fails (LedgerError)."""
        if self._conn is not None:
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a write the disk refuses (full, read-only, I/O error) is a LedgerError naming the
        file, with the transaction rolled back (nothing half-written)."""
        conn = self.conn
        if self.read_only:
            raise LedgerError(f"{self.path}: opened read-only (Ledger.open_readonly); nothing written")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                self._write_staged(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._forecast_rows.clear()
            self._score_rows.clear()
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise LedgerError(
                f"{self.path}: cannot write the ledger ({exc}); free disk space or fix the permissions of "
                "[ledger] path, then restart (the bar is fetched again)"
            ) from exc

    def set_live_from(self, symbol: str, start_ms: int) -> None:
        """Record `live_from` for `symbol` (first write wins: it never moves once set)."""
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO live_from VALUES (?, ?)", (symbol, start_ms))

    # ---- writes ----------------------------------------------------------------------------------
    def record_bar(self, bar: Bar, *, book: BookTop | None = None) -> None:
        """Store a bar without a decision (e.g. warm-up); a bar already stored is left as it is."""
        with self._tx() as conn:
            self._insert_bar(conn, bar, book)

    @staticmethod
    def _insert_bar(conn: sqlite3.Connection, bar: Bar, book: BookTop | None) -> None:
        top = (None, None, None) if book is None else (book.spread_bps, book.imbalance, book.ts_ms)
        conn.execute(
            schema.BAR_INSERT,
            (
                bar.symbol,
                bar.start_ms,
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                bar.volume,
                bar.turnover,
                bar.source,
                *top,
            ),
        )

    def stage_shadow(
        self, symbol: str, start_ms: int, forecasts: Forecasts, scores: Sequence[ShadowScore] = ()
    ) -> None:
        """Buffer every tier's forecast of the decided bar (symbol, start_ms) and, if given, a score snapshot
        of `symbol` taken after it; the next transaction (the next bar's `record`, or `flush`/`close`) writes
        them.

        Raises:
            LedgerError: a score of another symbol (or a pooled one) in `scores`.
        """
        bad = [s.tier for s in scores if s.symbol != symbol]
        if bad:
            raise LedgerError(f"stage_shadow: scores of tiers {bad} are not {symbol!r}'s (snapshot(symbol))")
        self._forecast_rows += [(symbol, start_ms, t, p, v) for t, (p, v) in forecasts.items()]
        self._score_rows += [
            (symbol, start_ms, s.tier, s.window, s.n, s.ic, s.vol_ic, s.vol_qlike, s.regret, 1)
            for s in scores
        ]

    def flush(self) -> None:
        """Write the staged shadow rows now (a no-op when none are staged)."""
        if self._forecast_rows or self._score_rows:
            with self._tx():
                pass

    def _write_staged(self, conn: sqlite3.Connection) -> None:
        if self._forecast_rows:
            conn.executemany(schema.FORECAST_INSERT, self._forecast_rows)
        if self._score_rows:
            conn.executemany(schema.SCORE_INSERT, self._score_rows)

    def record(
        self, bar: Bar, decision: DecisionRecord, state: PositionState, *, book: BookTop | None = None
    ) -> None:
        """Write the bar (with `book`, the top of book held at the decision, if any), its decision, its fills
        and the symbol's new paper state in one transaction (with the staged shadow rows of earlier bars):
        `record_close` of one decided bar.

        Raises:
            AlreadyDecidedError: (symbol, start_ms) is already decided; nothing is written.
            LedgerError: the keys of bar, decision, fills and state disagree, or SQLite refused the write.
        """
        self.record_close([BarWrite(bar, decision, state, book)])

    def record_close(self, writes: Sequence[BarWrite]) -> None:
        """Write a bar close's bars - each decided one with its decision, fills, new paper state and book,
        each absorbed-only one (warm-up) as `record_bar` does - in ONE transaction (group commit: one fsync
        under `synchronous = FULL` for the whole close), with the staged shadow rows of earlier bars. After
        a crash either the whole close is there or none of it.

        Raises:
            AlreadyDecidedError: a decided bar's (symbol, start_ms) already is; nothing is written.
            LedgerError: a decided bar's keys of bar, decision, fills and state disagree, or SQLite refused
                the write; nothing is written.
        """
        bars, decisions, fills, positions = [], [], [], []
        for w in writes:
            top = (
                (None, None, None) if w.book is None else (w.book.spread_bps, w.book.imbalance, w.book.ts_ms)
            )
            b = w.bar
            bars.append(
                (b.symbol, b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover, b.source, *top)
            )
            if w.decision is None:
                continue
            d, state = w.decision, _checked(w)
            lat = json.dumps(d.latency_us, sort_keys=True) if d.latency_us else None
            decisions.append((*(getattr(d, c) for c in schema.DECISION_FIELDS), lat))
            fills += [msgspec.structs.astuple(f) for f in d.fills]
            positions.append(_position_row(state))
        keys = [(w.bar.symbol, w.bar.start_ms) for w in writes if w.decision is not None]
        where = f"{keys[0][0]}@{keys[0][1]}" if len(keys) == 1 else f"{len(keys)} decided bars {keys[:3]}..."
        try:
            with self._tx() as conn:
                conn.executemany(schema.BAR_INSERT, bars)
                conn.executemany(schema.DECISION_INSERT, decisions)
                conn.executemany(schema.FILL_INSERT, fills)
                conn.executemany(schema.POSITION_INSERT, positions)
        except sqlite3.IntegrityError as exc:
            done = [k for k in keys if self.is_decided(*k)]
            if done:
                first = f"{done[0][0]}@{done[0][1]}"
                more = "" if len(done) == 1 else f" (and {len(done) - 1} more of this close)"
                raise AlreadyDecidedError(f"{first}: bar already decided{more}; nothing written") from exc
            raise LedgerError(f"{where}: ledger refused the bar: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"{where}: ledger write failed: {exc}") from exc

    def record_stop(
        self, symbol: str, *, stopped_ms: int, reason: str, fill: Fill | None, state: PositionState
    ) -> None:
        """A symbol stopped (delisted, suspended, dropped by the selection): one `stops` row saying why, and,
        when it held a position, the closing `fill` (numbered after its last decided bar's fills) and its
        flat paper `state`, in one transaction. `stopped_ms`: the exchange clock when it stopped.

        Raises:
            LedgerError: SQLite refused the write; nothing is written.
        """
        qty = 0.0 if fill is None else (fill.qty if fill.side == "buy" else -fill.qty)
        stop = (
            symbol,
            stopped_ms,
            reason,
            state.last_start_ms,
            state.mark_px,
            qty,
            0.0 if fill is None else fill.realized_pnl_usd,
            0.0 if fill is None else fill.fee_usd,
        )
        try:
            with self._tx() as conn:
                conn.execute(schema.STOP_INSERT, stop)
                if fill is not None:
                    (seq,) = conn.execute(
                        "SELECT COALESCE(MAX(seq) + 1, 0) FROM fills WHERE symbol = ? AND start_ms = ?",
                        (symbol, fill.start_ms),
                    ).fetchone()
                    conn.execute(
                        schema.FILL_INSERT, msgspec.structs.astuple(msgspec.structs.replace(fill, seq=seq))
                    )
                    conn.execute(schema.POSITION_INSERT, _position_row(state))
        except sqlite3.Error as exc:
            raise LedgerError(f"{symbol}: ledger refused the stop ({reason}): {exc}") from exc

    def record_result(
        self,
        bar: Bar,
        result: PaperResult,
        *,
        regime: str,
        tier: str,
        prediction: float,
        latency_us: dict[str, float] | None = None,
        book: BookTop | None = None,
    ) -> DecisionRecord:
        """`record` for a `PaperTrader.on_bar` result; returns the stored record."""
        d = DecisionRecord.of(
            result,
            source=bar.source,
            regime=regime,
            tier=tier,
            prediction=prediction,
            close=bar.close,
            latency_us=latency_us,
        )
        self.record(bar, d, result.state, book=book)
        return d
