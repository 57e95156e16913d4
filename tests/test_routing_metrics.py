"""bot.sim.riskmetrics: drawdown and the risk-targeting error on series whose answers are known."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from bot.config import Config
from bot.core.decision import DecisionRecord
from bot.core.paper import PaperTrader
from bot.core.params import REGIME_NAMES, PaperConfig
from bot.sim.backtest import RunResult
from bot.sim.backtest_report import build_report
from bot.sim.riskmetrics import (
    held_pnl_bps,
    max_drawdown,
    ratios,
    risk_by_regime,
    risk_ratio,
    risk_table,
    rms,
    spread,
    within,
)

STEP_MS = 300_000


def test_max_drawdown_of_a_known_curve() -> None:
    """Cumulative 1, 3, -1, 0, -1, 4: the fall from the peak 3 to the trough -1 is 4."""
    assert max_drawdown(np.array([1.0, 2.0, -4.0, 1.0, -1.0, 5.0])) == pytest.approx(4.0)


def test_max_drawdown_counts_a_fall_from_zero_and_none_for_a_rising_curve() -> None:
    """A curve that starts by losing draws down from 0; one that only rises has no drawdown."""
    assert max_drawdown(np.array([-2.0, -1.0, 0.5])) == pytest.approx(3.0)
    assert max_drawdown(np.array([1.0, 0.0, 2.0])) == 0.0
    assert max_drawdown(np.array([])) == 0.0


def test_risk_ratio_of_a_constant_magnitude_series() -> None:
    """+-12 bps every bar against a 10 bps target is a ratio of exactly 1.2 (RMS, not std)."""
    pnl = np.array([12.0, -12.0] * 50)
    assert rms(pnl) == pytest.approx(12.0)
    assert risk_ratio(pnl, 10.0) == pytest.approx(1.2)
    # a constant PnL has std 0 but its RMS is still the level held
    assert risk_ratio(np.full(10, 5.0), 10.0) == pytest.approx(0.5)
    assert math.isnan(risk_ratio(np.array([]), 10.0))


def test_risk_ratio_refuses_a_non_positive_target() -> None:
    """A zero target is a bad input, named."""
    with pytest.raises(ValueError, match="target_bps"):
        risk_ratio(np.array([1.0]), 0.0)


def test_within_and_spread() -> None:
    """The +-25% band is inclusive, NaN never passes; spread is max / min of the finite ratios."""
    assert within(1.25)
    assert within(0.75)
    assert not within(1.2501)
    assert not within(0.7)
    assert not within(math.nan)
    assert spread([0.5, 2.0, math.nan, 1.0]) == pytest.approx(4.0)
    assert math.isnan(spread([math.nan]))


def test_risk_by_regime_splits_and_pools() -> None:
    """Calm bars at +-5 bps and volatile bars at +-20 bps against 10 bps: 0.5 and 2.0; `all` pools them;
    a named regime without bars is present with 0 bars and NaN."""
    pnl = np.array([5.0, -5.0, 20.0, -20.0] * 25)
    labels = ["calm_trend", "calm_trend", "volatile", "volatile"] * 25
    table = risk_by_regime(pnl, labels, 10.0, names=REGIME_NAMES)
    assert table["calm_trend"].ratio == pytest.approx(0.5)
    assert table["volatile"].ratio == pytest.approx(2.0)
    assert table["calm_trend"].bars == 50
    assert table["all"].ratio == pytest.approx(math.sqrt((25 + 400) / 2) / 10)
    assert table["crisis"].bars == 0
    assert math.isnan(table["crisis"].ratio)
    assert ratios(table, ["calm_trend", "volatile"]) == pytest.approx([0.5, 2.0])
    with pytest.raises(ValueError, match="one label per PnL value"):
        risk_by_regime(pnl, labels[:-1], 10.0)


def _records(cfg: PaperConfig, sigma: float, n: int, regime: str) -> list[DecisionRecord]:
    """The real paper trader, always long, on closes whose one-bar log return is +-sigma alternately, told
    the true vol; its decision records."""
    trader = PaperTrader(cfg)
    close = 100.0
    out = []
    for i in range(n):
        close *= math.exp(sigma if i % 2 else -sigma)
        res = trader.on_bar(
            "BTCUSDT", i * STEP_MS, close, 1.0, tier="edge", regime=regime, vol_forecast=sigma
        )
        out.append(
            DecisionRecord.of(
                res,
                source="test",
                regime=regime,
                tier="edge",
                prediction=1.0,
                close=close,
                vol_forecast=sigma,
            )
        )
    return out


def test_vol_target_sizing_hits_its_target_and_fixed_sizing_does_not() -> None:
    """With a perfect 20 bps forecast, vol_target at 10 bps holds 0.5 units and its holding PnL has an RMS of
    10 bps of notional (ratio 1 within 1%); fixed sizing holds 1 unit, ratio 2."""
    sigma = 20e-4
    vt = PaperConfig(sizing="vol_target", target_vol_bps=10.0, max_units=3, long_threshold_bps=0.0)
    recs = _records(vt, sigma, 400, "volatile")
    pnl, regimes, units = held_pnl_bps(recs, notional_usd=vt.notional_usd)
    assert pnl.size == 399  # every bar after the first carried the position opened on the first
    assert set(regimes) == {"volatile"}
    assert units.mean() == pytest.approx(0.5, rel=1e-2)
    table = risk_table(recs, notional_usd=vt.notional_usd, target_vol_bps=10.0, names=REGIME_NAMES)
    assert table["volatile"]["ratio"] == pytest.approx(1.0, abs=0.01)
    assert table["calm_trend"]["ratio"] is None  # no bars: None in report.json, not NaN
    fixed = PaperConfig(sizing="fixed", target_vol_bps=10.0, long_threshold_bps=0.0)
    table = risk_table(
        _records(fixed, sigma, 400, "volatile"), notional_usd=fixed.notional_usd, target_vol_bps=10.0
    )
    assert table["all"]["ratio"] == pytest.approx(2.0, abs=0.02)


def test_backtest_report_carries_the_risk_table() -> None:
    """`bot backtest`'s report.json has the risk table of its records, against [paper] target_vol_bps."""
    cfg = Config()
    cfg = msgspec.structs.replace(cfg, paper=msgspec.structs.replace(cfg.paper, target_vol_bps=10.0))
    recs = _records(PaperConfig(long_threshold_bps=0.0), 20e-4, 200, "volatile")
    closes = [(r.start_ms, r.close) for r in recs]
    run = RunResult(records=recs, warmup_bars=0, wall_s=1.0, symbols=("BTCUSDT",), closes={"BTCUSDT": closes})
    report = build_report(cfg, run, {})
    assert report["risk"]["volatile"]["bars"] == 199
    assert report["risk"]["volatile"]["ratio"] == pytest.approx(2.0, abs=0.02)
    assert report["risk"]["crisis"]["ratio"] is None
