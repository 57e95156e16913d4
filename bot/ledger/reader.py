"""The read side of the SQLite ledger (`bot.ledger.writer.Ledger`): what a restart restores and replays, the
shadow rows that re-seed the scorer, per-tier/regime summaries and the stops.

`LedgerReader` holds only queries on the open connection; `bot.ledger.writer.Ledger` (which opens, migrates
and writes the file) extends it, so every query is a method of the ledger. Tables: `bot.ledger.schema`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.core.bars import Bar
from bot.core.decision import DecisionRecord
from bot.core.paper import Fill, PositionState
from bot.ledger import schema
from bot.ledger.lock import LedgerError
from bot.observe.shadow import ShadowBar, ShadowScore


@dataclass(frozen=True, slots=True)
class Summary:
    """Bars decided and attributed PnL (net of fees, USD) for one tier or regime."""

    name: str
    bars: int
    pnl_usd: float
    fills: int = 0
    fees_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class LedgerReader:
    """Queries of an open ledger; `bot.ledger.writer.Ledger` opens the connection and writes."""

    _conn: sqlite3.Connection | None
    path: Path

    # ---- connection ------------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"{self.path}: ledger is closed")
        return self._conn

    # ---- queries ---------------------------------------------------------------------------------
    def last_decided(self, symbol: str) -> int | None:
        """start_ms of the newest decided bar of `symbol`, or None if none."""
        row = self.conn.execute("SELECT MAX(start_ms) FROM decisions WHERE symbol = ?", (symbol,)).fetchone()
        return None if row[0] is None else int(row[0])

    def is_decided(self, symbol: str, start_ms: int) -> bool:
        """Whether (symbol, start_ms) already has a decision."""
        row = self.conn.execute(
            "SELECT 1 FROM decisions WHERE symbol = ? AND start_ms = ?", (symbol, start_ms)
        ).fetchone()
        return row is not None

    def count_decisions(self, symbol: str | None = None) -> int:
        """Number of decided bars (of `symbol`, or all)."""
        if symbol is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
        return int(
            self.conn.execute("SELECT COUNT(*) FROM decisions WHERE symbol = ?", (symbol,)).fetchone()[0]
        )

    def load_positions(self) -> dict[str, PositionState]:
        """Paper states to resume from, per symbol (exact: floats round-trip through the stored JSON)."""
        rows = self.conn.execute("SELECT symbol, state_json FROM positions ORDER BY symbol").fetchall()
        return {str(sym): PositionState.from_json(str(js)) for sym, js in rows}

    def decisions(self, symbol: str, *, since_ms: int | None = None) -> list[DecisionRecord]:
        """The decision records of `symbol` (all, or those of bars opening at or after `since_ms`), oldest
        first, with their fills."""
        since = since_ms if since_ms is not None else -(2**63)
        rows = self.conn.execute(schema.DECISION_SELECT, (symbol, since)).fetchall()
        fills: dict[int, list[Fill]] = {}
        for f in self.fills(symbol):
            if f.start_ms >= since:
                fills.setdefault(f.start_ms, []).append(f)
        n = len(schema.DECISION_FIELDS)
        out: list[DecisionRecord] = []
        for r in rows:
            row = dict(zip(schema.DECISION_FIELDS, r[:n], strict=True))
            lat = {} if r[n] is None else {str(k): float(v) for k, v in json.loads(r[n]).items()}
            fl = tuple(fills.get(row["start_ms"], ()))
            out.append(DecisionRecord(**row, close=float(r[n + 1]), latency_us=lat, fills=fl))
        return out

    def fills(self, symbol: str) -> list[Fill]:
        """All fills of `symbol`, in execution order."""
        rows = self.conn.execute(
            f"SELECT {schema.FILL_COLS} FROM fills WHERE symbol = ? ORDER BY start_ms, seq",  # noqa: S608 - constant columns
            (symbol,),
        ).fetchall()
        return [Fill(*r) for r in rows]

    def summary(self, by: Literal["tier", "regime"]) -> list[Summary]:
        """Per tier or regime: bars routed to it, fills and fees of its decisions, and attributed PnL.

        PnL = holding PnL of the bars whose position it set + trade PnL (fees, slippage) of its own
        decisions; the sum over all names is the total equity change.
        """
        q = schema.SUMMARY_SQL[by]
        conn = self.conn
        bars = {k: int(n) for k, n in conn.execute(q["bars"]).fetchall()}
        trade = {k: float(v) for k, v in conn.execute(q["trade"]).fetchall()}
        held = {k: float(v) for k, v in conn.execute(q["held"]).fetchall()}
        fills = {k: (int(n), float(f)) for k, n, f in conn.execute(q["fills"]).fetchall()}
        names = sorted(set(bars) | set(held))
        return [
            Summary(
                name=str(n),
                bars=bars.get(n, 0),
                pnl_usd=trade.get(n, 0.0) + held.get(n, 0.0),
                fills=fills.get(n, (0, 0.0))[0],
                fees_usd=fills.get(n, (0, 0.0))[1],
            )
            for n in names
        ]

    def bars(self, symbol: str) -> list[Bar]:
        """Every stored bar of `symbol` (decided or warm-up), ascending; replayed on restart."""
        rows = self.conn.execute(
            "SELECT symbol, start_ms, open, high, low, close, volume, turnover, source FROM bars "
            "WHERE symbol = ? ORDER BY start_ms",
            (symbol,),
        ).fetchall()
        return [Bar(*r) for r in rows]

    def decided_keys(self, symbol: str) -> list[int]:
        """start_ms of every decided bar of `symbol`, ascending."""
        rows = self.conn.execute(
            "SELECT start_ms FROM decisions WHERE symbol = ? ORDER BY start_ms", (symbol,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def live_from(self, symbol: str) -> int | None:
        """Open time of the first bar the service decides for `symbol` (set once, at its first READY)."""
        row = self.conn.execute("SELECT start_ms FROM live_from WHERE symbol = ?", (symbol,)).fetchone()
        return None if row is None else int(row[0])

    def symbols(self) -> list[str]:
        """Symbols with stored bars, sorted."""
        return [str(r[0]) for r in self.conn.execute("SELECT DISTINCT symbol FROM bars ORDER BY symbol")]

    def recorded(self, symbol: str) -> list[tuple[Bar, float | None, float | None, int | None]]:
        """Every stored bar of `symbol`, ascending, with the book top recorded at its decision:
        (bar, spread_bps, imbalance, book_ts_ms), the last three None without a book (warm-up bars too)."""
        rows = self.conn.execute(
            f"SELECT {schema.BAR_COLS}, spread_bps, imbalance, book_ts_ms FROM bars "  # noqa: S608 - constant columns
            "WHERE symbol = ? ORDER BY start_ms",
            (symbol,),
        ).fetchall()
        return [(Bar(*r[:9]), r[9], r[10], r[11]) for r in rows]

    def shadow_forecasts(
        self, symbol: str, *, since_ms: int | None = None
    ) -> dict[int, dict[str, tuple[float, float | None]]]:
        """start_ms -> tier -> (predicted return, predicted volatility or None) of `symbol`'s decided bars
        (all, or those opening at or after `since_ms`)."""
        since = since_ms if since_ms is not None else -(2**63)
        out: dict[int, dict[str, tuple[float, float | None]]] = {}
        for start_ms, tier, pred, vol in self.conn.execute(
            "SELECT start_ms, tier, prediction, vol_forecast FROM shadow_forecasts "
            "WHERE symbol = ? AND start_ms >= ? ORDER BY start_ms, tier",
            (symbol, since),
        ):
            out.setdefault(int(start_ms), {})[str(tier)] = (float(pred), None if vol is None else float(vol))
        return out

    def shadow_scores(
        self, tier: str | None = None, *, symbol: str | None = None
    ) -> list[tuple[str, int, ShadowScore]]:
        """Stored score snapshots (of `tier` and `symbol`, or all) as (symbol, start_ms, score), oldest first.

        A row an older ledger stored (pooled over all symbols) has `score.symbol` None; a read-only ledger
        that was never opened for writing since lacks the `per_symbol` column, and all its rows are such."""
        cols = {str(r[1]) for r in self.conn.execute("PRAGMA table_info(shadow_scores)")}
        per_symbol = "per_symbol" if "per_symbol" in cols else "0"
        rows = self.conn.execute(
            "SELECT symbol, start_ms, tier, window, n, ic, vol_ic, vol_qlike, regret, "  # noqa: S608 - constant
            f"{per_symbol} FROM shadow_scores WHERE (? IS NULL OR tier = ?) AND (? IS NULL OR symbol = ?) "
            "ORDER BY start_ms, symbol, tier",
            (tier, tier, symbol, symbol),
        ).fetchall()
        return [(str(r[0]), int(r[1]), ShadowScore(str(r[0]) if r[9] else None, *r[2:9])) for r in rows]

    def shadow_history(self, symbols: list[str] | tuple[str, ...], *, last_bars: int) -> list[ShadowBar]:
        """The last `last_bars` decided bars of each symbol with their stored forecasts (empty when none were
        stored), merged oldest first: what `ShadowScorer.replay` re-seeds a restarted scorer with."""
        out: list[ShadowBar] = []
        for symbol in symbols:
            rows = self.conn.execute(
                "SELECT d.start_ms, d.tier, b.close FROM decisions d JOIN bars b USING (symbol, start_ms) "
                "WHERE d.symbol = ? ORDER BY d.start_ms DESC LIMIT ?",
                (symbol, last_bars),
            ).fetchall()
            if not rows:
                continue
            fc = self.shadow_forecasts(symbol, since_ms=int(rows[-1][0]))
            out += [
                ShadowBar(symbol, int(s), float(c), str(t), fc.get(int(s), {})) for s, t, c in reversed(rows)
            ]
        out.sort(key=lambda h: (h.start_ms, h.symbol))
        return out

    def stops(self, symbol: str) -> list[tuple[int, str, float | None, float]]:
        """`symbol`'s stops, oldest first: (stopped_ms, reason, price, qty closed; signed, + bought)."""
        rows = self.conn.execute(
            "SELECT stopped_ms, reason, price, qty FROM stops WHERE symbol = ? ORDER BY stopped_ms", (symbol,)
        ).fetchall()
        return [(int(a), str(b), None if c is None else float(c), float(d)) for a, b, c, d in rows]
