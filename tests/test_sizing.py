"""Risk-targeted paper sizing ([paper] sizing = "vol_target") and the decision record's vol forecast."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bot.config import engine_params
from bot.core.engine import Engine
from bot.core.errors import ModelError
from bot.core.features import N_FEATURES
from bot.core.paper import PaperTrader
from bot.core.params import PaperConfig
from bot.ledger.writer import Ledger
from bot.models.family import TierFamily

SYM = "BTCUSDT"
VT = {
    "sizing": "vol_target",
    "target_vol_bps": 10.0,
    "max_units": 3,
    "slippage_bps": 0.0,
    "taker_fee_bps": 0.0,
}


def test_units_are_target_over_forecast_clipped_and_signed() -> None:
    t = PaperTrader(PaperConfig(**VT))
    assert t.target_units(1, 0.002) == pytest.approx(0.5)  # 10 bps / 20 bps per bar
    assert t.target_units(-1, 0.0005) == pytest.approx(-2.0)
    assert t.target_units(1, 0.0001) == 3.0  # 10x, clipped to max_units
    assert t.target_units(0, 0.002) == 0
    with pytest.raises(ValueError, match="positive vol forecast"):
        t.target_units(1, None)
    with pytest.raises(ValueError, match="positive vol forecast"):
        t.target_units(1, float("nan"))


def test_max_vol_stands_aside_and_fixed_sizing_ignores_the_forecast() -> None:
    t = PaperTrader(PaperConfig(**VT, max_vol_bps=30.0))
    assert t.target_units(1, 0.0029) == pytest.approx(10 / 29)
    assert t.target_units(1, 0.0031) == 0
    fixed = PaperTrader(PaperConfig(max_units=2))
    assert fixed.target_units(-1, None) == -2
    assert fixed.target_units(1, 0.5) == 2


def test_fills_follow_the_fractional_target_with_a_band() -> None:
    """0.5 units of 10,000 USD at 100 = 50 coins; a 5% move of the target is inside the 10% band."""
    t = PaperTrader(PaperConfig(**VT, long_threshold_bps=1.0))
    r = t.on_bar(SYM, 0, 100.0, 0.01, "edge", "normal", vol_forecast=0.002)
    assert r.position == pytest.approx(0.5)
    assert r.qty == pytest.approx(50.0)
    r = t.on_bar(SYM, 300_000, 100.0, 0.01, "edge", "normal", vol_forecast=0.0019)  # target 0.526
    assert r.position == pytest.approx(0.5)
    assert r.fills == ()
    r = t.on_bar(SYM, 600_000, 100.0, 0.01, "edge", "normal", vol_forecast=0.001)  # target 1.0
    assert r.position == pytest.approx(1.0)
    assert r.qty == pytest.approx(100.0)
    restored = PaperTrader(PaperConfig(**VT), positions={SYM: r.state})
    assert restored.state(SYM).units == pytest.approx(1.0)


def test_pnl_volatility_hits_the_target_when_the_forecast_is_right() -> None:
    """A random walk whose per-bar vol switches between regimes: with the true vol as forecast (and no
    rebalance band), the per-bar PnL's volatility is target_vol_bps of notional within 5% in every regime;
    under fixed sizing it follows the market's vol (4x between the calm and the wild regime)."""
    rng = np.random.default_rng(11)
    sigmas = np.repeat([0.001, 0.004, 0.002], 4000)
    returns = rng.normal(0.0, sigmas)
    close = 100.0 * np.exp(np.cumsum(returns))
    for sizing, expect in (("vol_target", None), ("fixed", "proportional")):
        cfg = PaperConfig(**{**VT, "sizing": sizing, "max_units": 100, "rebalance_band": 0.0})
        t = PaperTrader(cfg)
        pnl = []
        for i, (c, s) in enumerate(zip(close, sigmas, strict=True)):
            r = t.on_bar(SYM, i * 300_000, float(c), 1.0, "edge", "normal", vol_forecast=float(s))
            pnl.append(r.bar_pnl_usd)
        pnl_arr = np.asarray(pnl[1:])
        per_regime = [float(np.std(pnl_arr[k * 4000 : (k + 1) * 4000 - 1])) for k in range(3)]
        if expect is None:
            target = cfg.target_vol_bps * 1e-4 * cfg.notional_usd
            for got in per_regime:
                assert got == pytest.approx(target, rel=0.05)
        else:
            assert per_regime[1] / per_regime[0] > 2.5  # fixed sizing: PnL vol follows the market's


def test_vol_target_needs_a_family_with_a_vol_head(trained_family: Path, tmp_path: Path) -> None:
    """A family without a vol head (an older manifest: no `heads`) loads, but vol_target sizing refuses it."""
    import json
    import shutil

    from support import small_config

    cfg = small_config(paper={"sizing": "vol_target"})
    old = tmp_path / "old"
    shutil.copytree(trained_family, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["heads"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    family = TierFamily.load(old)
    assert not family.has_vol_head
    assert family.predict_vol("edge", np.zeros(N_FEATURES)) is None
    with pytest.raises(ModelError, match="volatility head"):
        Engine(engine_params(cfg), family, PaperTrader(cfg.paper))


def test_ledger_gains_the_vol_forecast_column_on_open(tmp_path: Path) -> None:
    """A ledger created before the column existed is migrated in place; its rows read back with None."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE decisions (symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, source TEXT NOT NULL, "
        "regime TEXT NOT NULL, tier TEXT NOT NULL, prediction REAL NOT NULL, signal INTEGER NOT NULL, "
        "position INTEGER NOT NULL, qty REAL NOT NULL, fill_price REAL, fee_usd REAL NOT NULL, "
        "realized_pnl_usd REAL NOT NULL, unrealized_pnl_usd REAL NOT NULL, equity_usd REAL NOT NULL, "
        "bar_pnl_usd REAL NOT NULL, holding_pnl_usd REAL NOT NULL, holding_tier TEXT, holding_regime TEXT, "
        "trade_pnl_usd REAL NOT NULL, latency_json TEXT, PRIMARY KEY (symbol, start_ms)) WITHOUT ROWID"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Ledger.open(path) as led:
        cols = {row[1] for row in led.conn.execute("PRAGMA table_info(decisions)")}
        assert "vol_forecast" in cols
        assert led.decisions(SYM) == []


def test_engine_sizes_by_the_families_vol_forecast(trained_family: Path) -> None:
    """An Engine on the trained family with vol_target sizing: every decision carries a positive
    vol_forecast and holds signal * min(target_vol_bps / vol_forecast, max_units) units (no band)."""
    from support import small_config

    from bot.sim.synthetic import SyntheticMarket

    cfg = small_config(
        market={"symbols": ["SYNTHUSDT"]},
        paper={"sizing": "vol_target", "target_vol_bps": 10.0, "max_units": 50, "rebalance_band": 0.0},
    )
    family = TierFamily.load(trained_family)
    family.check_fit(cfg)
    engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    decisions = []
    for step in SyntheticMarket(seed=3).generate(400):
        d = engine.on_bar(step.bar)
        if d is not None:
            decisions.append(d)
    assert len(decisions) > 300
    fractional = 0
    for d in decisions:
        assert d.vol_forecast is not None
        assert 0.0 < d.vol_forecast < 1.0
        want = d.signal * min(10.0 * 1e-4 / d.vol_forecast, 50.0)
        assert d.position == pytest.approx(want, rel=1e-9, abs=1e-12)
        fractional += d.signal != 0 and d.position != int(d.position)
    assert fractional > 0
