"""The ledger's SQL: the tables (`DDL`, `PRAGMA user_version = SCHEMA_VERSION`), the columns added since a
ledger may have been created (`ADDED_COLUMNS`, added on open), and the statements `bot.ledger.writer` runs.

Table by table: docs/architecture.md, "The ledger". Every statement is a constant built from constant column
names (no value is ever formatted into SQL).
"""

from __future__ import annotations

from typing import Final

from bot.core.decision import DecisionRecord
from bot.core.paper import Fill

#: `decisions` columns: the record's fields, in its order, but those stored elsewhere (the bar's `close` lives
#: in `bars`, the fills in `fills`, `latency_us` as `latency_json`).
DECISION_FIELDS: Final[tuple[str, ...]] = tuple(
    f for f in DecisionRecord.__struct_fields__ if f not in ("close", "latency_us", "fills")
)
#: SQL type of each field's annotation (None allowed: no NOT NULL).
_SQL_TYPES: Final = {"str": "TEXT", "int": "INTEGER", "float": "REAL"}


def _column(name: str) -> str:
    """`name`'s column definition from the record's annotation of it: the types match the fields'."""
    kinds = [k.strip() for k in str(DecisionRecord.__annotations__[name]).split("|")]
    sql = _SQL_TYPES[next(k for k in kinds if k != "None")]
    default = " DEFAULT ''" if name == "model_sha" else ""  # rows from before the field: ''
    return f"{name} {sql}" + ("" if "None" in kinds else " NOT NULL") + default


DECISIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS decisions (\n    "
    + ",\n    ".join(
        [*(_column(f) for f in DECISION_FIELDS), "latency_json TEXT", "PRIMARY KEY (symbol, start_ms)"]
    )
    + "\n) WITHOUT ROWID;\n"
)

SCHEMA_VERSION: Final = 1

DDL_TEMPLATE: Final = """
CREATE TABLE IF NOT EXISTS bars (
    symbol TEXT NOT NULL, start_ms INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL, turnover REAL NOT NULL, source TEXT NOT NULL,
    spread_bps REAL, imbalance REAL, book_ts_ms INTEGER,
    PRIMARY KEY (symbol, start_ms)
) WITHOUT ROWID;
{decisions}CREATE TABLE IF NOT EXISTS fills (
    symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, seq INTEGER NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), qty REAL NOT NULL CHECK (qty > 0),
    price REAL NOT NULL, notional_usd REAL NOT NULL, fee_usd REAL NOT NULL, realized_pnl_usd REAL NOT NULL,
    tier TEXT NOT NULL, regime TEXT NOT NULL,
    PRIMARY KEY (symbol, start_ms, seq),
    FOREIGN KEY (symbol, start_ms) REFERENCES decisions (symbol, start_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, last_start_ms INTEGER NOT NULL, units INTEGER NOT NULL, qty REAL NOT NULL,
    avg_entry_px REAL NOT NULL, mark_px REAL, tier TEXT, regime TEXT,
    realized_pnl_usd REAL NOT NULL, fees_usd REAL NOT NULL, state_json TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_from (
    symbol TEXT PRIMARY KEY, start_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stops (
    symbol TEXT NOT NULL, stopped_ms INTEGER NOT NULL, reason TEXT NOT NULL,
    last_start_ms INTEGER, price REAL, qty REAL NOT NULL,
    realized_pnl_usd REAL NOT NULL, fee_usd REAL NOT NULL,
    PRIMARY KEY (symbol, stopped_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_forecasts (
    symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, tier TEXT NOT NULL,
    prediction REAL NOT NULL, vol_forecast REAL,
    PRIMARY KEY (symbol, start_ms, tier)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shadow_scores (
    symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, tier TEXT NOT NULL,
    window INTEGER NOT NULL, n INTEGER NOT NULL,
    ic REAL, vol_ic REAL, vol_qlike REAL, regret REAL, per_symbol INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (symbol, start_ms, tier)
) WITHOUT ROWID;
"""


DDL: Final = DDL_TEMPLATE.replace("{decisions}", DECISIONS_TABLE)
#: Columns added after a ledger may have been created: table -> (name, SQL type), added on open when missing.
ADDED_COLUMNS: Final = {
    "decisions": (("vol_forecast", "REAL"), ("model_sha", "TEXT NOT NULL DEFAULT ''")),
    "bars": (("spread_bps", "REAL"), ("imbalance", "REAL"), ("book_ts_ms", "INTEGER")),
    # 0: a row written before scores were per symbol (pooled over all symbols, taken after `symbol`'s bar)
    "shadow_scores": (("per_symbol", "INTEGER NOT NULL DEFAULT 0"),),
}
BAR_COLS: Final = "symbol, start_ms, open, high, low, close, volume, turnover, source"
BAR_INSERT: Final = (
    f"INSERT OR IGNORE INTO bars ({BAR_COLS}, spread_bps, imbalance, book_ts_ms) "  # noqa: S608 - constant
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
FORECAST_INSERT: Final = "INSERT OR REPLACE INTO shadow_forecasts VALUES (?, ?, ?, ?, ?)"
SCORE_INSERT: Final = (
    "INSERT OR REPLACE INTO shadow_scores "
    "(symbol, start_ms, tier, window, n, ic, vol_ic, vol_qlike, regret, per_symbol) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DECISION_COLS: Final = ", ".join((*DECISION_FIELDS, "latency_json"))
DECISION_INSERT: Final = (
    f"INSERT INTO decisions ({DECISION_COLS}) VALUES ({', '.join('?' * (len(DECISION_FIELDS) + 1))})"  # noqa: S608 - constant columns
)
DECISION_SELECT: Final = (
    f"SELECT {', '.join('d.' + c for c in DECISION_FIELDS)}, d.latency_json, b.close "  # noqa: S608 - constant
    "FROM decisions d JOIN bars b USING (symbol, start_ms) WHERE d.symbol = ? AND d.start_ms >= ? "
    "ORDER BY d.start_ms"
)
FILL_FIELDS: Final[tuple[str, ...]] = Fill.__struct_fields__
FILL_COLS: Final = ", ".join(FILL_FIELDS)
FILL_INSERT: Final = f"INSERT INTO fills ({FILL_COLS}) VALUES ({', '.join('?' * len(FILL_FIELDS))})"  # noqa: S608
POSITION_INSERT: Final = "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
STOP_INSERT: Final = "INSERT OR REPLACE INTO stops VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


SUMMARY_SQL: Final = {
    "tier": {
        "bars": "SELECT tier, COUNT(*) FROM decisions GROUP BY tier",
        "trade": "SELECT tier, SUM(trade_pnl_usd) FROM decisions GROUP BY tier",
        "held": "SELECT holding_tier, SUM(holding_pnl_usd) FROM decisions WHERE holding_tier IS NOT NULL "
        "GROUP BY holding_tier",
        "fills": "SELECT tier, COUNT(*), SUM(fee_usd) FROM fills GROUP BY tier",
    },
    "regime": {
        "bars": "SELECT regime, COUNT(*) FROM decisions GROUP BY regime",
        "trade": "SELECT regime, SUM(trade_pnl_usd) FROM decisions GROUP BY regime",
        "held": "SELECT holding_regime, SUM(holding_pnl_usd) FROM decisions WHERE holding_regime IS NOT NULL "
        "GROUP BY holding_regime",
        "fills": "SELECT regime, COUNT(*), SUM(fee_usd) FROM fills GROUP BY regime",
    },
}
