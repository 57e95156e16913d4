"""Test support: a small-config builder shared by fixtures and tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from bot.config import Config, dump_config, engine_params
from bot.core.bars import Bar
from bot.core.decision import DecisionRecord
from bot.core.engine import Engine
from bot.core.paper import PaperTrader
from bot.ledger.writer import Ledger
from bot.models.family import TierFamily

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Tiny architectures (largest first) so the whole family trains in seconds.
SMALL_TIERS: dict[str, dict[str, Any]] = {
    "research": {"layers": 3, "width": 24, "features": "research"},
    "staging": {"layers": 2, "width": 16, "features": "research"},
    "production": {"layers": 2, "width": 12, "features": "research"},
    "edge": {"layers": 1, "width": 8, "features": "research"},
}


def small_config(**sections: dict[str, Any]) -> Config:
    """Default config with tiny tiers and a small, fast distillation budget; `sections` override keys."""
    data: dict[str, Any] = msgspec.to_builtins(Config())
    data["tiers"] = SMALL_TIERS
    data["distill"].update(quick_bars=6000, quick_epochs=3, embargo_bars=10)
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return msgspec.convert(data, Config)


#: The config writer of the schema (`bot.config.dump_config`), under the name the tests use.
to_toml = dump_config


def loop_config(
    rest_url: str,
    ws_url: str,
    models: Path,
    out: Path,
    *,
    symbol: str = "SYNTHUSDT",
    use_book: bool = True,
    backfill_bars: int = 120,
    synchronous: str = "full",
) -> Config:
    """The small config pointed at a loopback exchange, with short timings and state in `out`.

    With `use_book=False` regimes depend on bars only, so a restart that refetches bars over REST
    reproduces them exactly (the crash and golden tests need that).
    """
    return small_config(
        market={"symbols": [symbol]},
        exchange={
            "rest_url": rest_url,
            "ws_url": ws_url,
            "backfill_bars": backfill_bars,
            "reconnect_backoff_initial_s": 0.02,
            "reconnect_backoff_max_s": 0.2,
            "ping_interval_s": 1.0,
            "stale_feed_s": 5.0,
            "book_stream": "orderbook" if use_book else "none",
        },
        regime={"use_book": use_book},
        ledger={"path": str(out / "ledger.sqlite"), "synchronous": synchronous},
        logging={"decisions_path": str(out / "decisions.jsonl"), "format": "json"},
        models={"dir": str(models)},
    )


def golden(
    cfg: Config,
    bars: Sequence[Bar],
    ledger_path: Path,
    *,
    symbol: str = "SYNTHUSDT",
    last_ms: int | None = None,
) -> tuple[dict[int, tuple[str, str, float, int]], PaperTrader]:
    """The uninterrupted, in-process run (no network) the service must equal: `bars` from the first one the
    ledger stored, through one fresh engine, deciding from the ledger's `live_from` like the service.

    Returns start_ms -> (regime, tier, prediction, position), and the trader with the final positions.
    """
    ledger = Ledger.open(ledger_path)
    try:
        first_ms = ledger.bars(symbol)[0].start_ms
        live_from = ledger.live_from(symbol)
    finally:
        ledger.close()
    assert live_from is not None
    trader = PaperTrader(cfg.paper)
    engine = Engine(engine_params(cfg), TierFamily.load(cfg.models.dir), trader)
    out = {}
    for bar in bars:
        if bar.start_ms < first_ms or (last_ms is not None and bar.start_ms > last_ms):
            continue
        d = engine.on_bar(bar, decide=bar.start_ms >= live_from)
        if d is not None:
            out[bar.start_ms] = (d.regime, d.tier, d.prediction, d.position)
    return out, trader


def decision_record(
    i: int, *, symbol: str = "BTCUSDT", tier: str = "edge", prediction: float = 0.0, close: float = 100.0
) -> DecisionRecord:
    """A flat (no position, no PnL) decision record for bar `i` of a 5-minute grid, as the service logs it."""
    return DecisionRecord(
        symbol=symbol,
        start_ms=i * 300_000,
        source="ws",
        regime="normal",
        tier=tier,
        prediction=prediction,
        signal=0,
        position=0,
        qty=0.0,
        fill_price=None,
        fee_usd=0.0,
        realized_pnl_usd=0.0,
        unrealized_pnl_usd=0.0,
        equity_usd=0.0,
        bar_pnl_usd=0.0,
        holding_pnl_usd=0.0,
        holding_tier=None,
        holding_regime=None,
        trade_pnl_usd=0.0,
        close=close,
        latency_us={"total": 10.0},
    )
