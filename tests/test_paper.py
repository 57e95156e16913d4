"""Paper trader: signal thresholds, fills with slippage and fees, flips, PnL and attribution, exact resume."""

from __future__ import annotations

import random

import pytest

from bot.core.bars import BookTop
from bot.core.paper import PaperTrader, PositionState
from bot.core.params import PaperConfig

SYM = "BTCUSDT"
# defaults: notional 10_000 USD, 1 unit, thresholds 2 bps, slippage 1 bps, taker fee 5.5 bps
# The hand-computed cases below use 2 bps thresholds (the defaults are higher).
TH = {"long_threshold_bps": 2.0, "short_threshold_bps": 2.0}
CFG = PaperConfig(**TH)


def test_signal_thresholds_are_strict() -> None:
    """Long above +2 bps, short below -2 bps, flat in between and exactly at the thresholds."""
    t = PaperTrader(CFG)
    assert [t.signal(p) for p in (0.00021, 0.0002, 0.0, -0.0002, -0.00021)] == [1, 0, 0, 0, -1]


def test_open_long_fee_and_slippage_arithmetic() -> None:
    """Opening long at close 100: buy at 100.01 (1 bp slip), 10_000/100.01 coins, fee 5.5 USD."""
    t = PaperTrader(CFG)
    r = t.on_bar(SYM, 0, 100.0, 0.0003, "edge", "calm_trend")
    q = 10_000 / 100.01
    assert (r.signal, r.position) == (1, 1)
    assert r.fill_price == pytest.approx(100.01, abs=1e-12)
    assert r.qty == pytest.approx(q, rel=1e-12)
    assert [f.side for f in r.fills] == ["buy"]
    assert r.fills[0].notional_usd == pytest.approx(10_000.0, rel=1e-12)
    assert r.fee_usd == pytest.approx(5.5, rel=1e-12)
    assert r.realized_pnl_usd == 0.0
    assert r.unrealized_pnl_usd == pytest.approx(q * (100.0 - 100.01), rel=1e-9)  # -0.9999 USD of slippage
    assert r.trade_pnl_usd == pytest.approx(-5.5 - q * 0.01, rel=1e-9)
    assert r.equity_usd == pytest.approx(r.trade_pnl_usd, rel=1e-12)
    assert (r.holding_tier, r.holding_pnl_usd) == (None, 0.0)


def test_hold_then_flip_long_to_short() -> None:
    """Holding earns qty * dclose for the previous decider; a flip closes (realises) and opens short."""
    t = PaperTrader(CFG)
    t.on_bar(SYM, 0, 100.0, 0.0003, "edge", "calm_trend")
    q1 = 10_000 / 100.01
    r2 = t.on_bar(SYM, 300_000, 101.0, 0.0003, "production", "normal")
    assert (r2.fills, r2.fill_price) == ((), None)
    assert (r2.holding_tier, r2.holding_regime) == ("edge", "calm_trend")
    assert r2.holding_pnl_usd == pytest.approx(q1 * 1.0, rel=1e-12)
    assert r2.unrealized_pnl_usd == pytest.approx(q1 * (101.0 - 100.01), rel=1e-12)

    r3 = t.on_bar(SYM, 600_000, 102.0, -0.0005, "staging", "volatile")
    sell_px = 102.0 * (1 - 1e-4)  # 101.9898
    q2 = 10_000 / sell_px
    assert (r3.signal, r3.position) == (-1, -1)
    assert [f.side for f in r3.fills] == ["sell", "sell"]
    close_leg, open_leg = r3.fills
    assert close_leg.qty == pytest.approx(q1, rel=1e-12)
    assert close_leg.realized_pnl_usd == pytest.approx(q1 * (sell_px - 100.01), rel=1e-12)
    assert open_leg.qty == pytest.approx(q2, rel=1e-12)
    assert r3.qty == pytest.approx(-q2, rel=1e-12)
    fees = (q1 * sell_px + 10_000) * 5.5e-4
    assert r3.fee_usd == pytest.approx(fees, rel=1e-12)
    assert r3.realized_pnl_usd == pytest.approx(q1 * (sell_px - 100.01), rel=1e-12)
    assert (r3.holding_tier, r3.holding_pnl_usd) == ("production", pytest.approx(q1 * 1.0, rel=1e-12))
    st = r3.state
    assert st.avg_entry_px == pytest.approx(sell_px, rel=1e-12)
    assert (st.tier, st.regime, st.n_fills) == ("staging", "volatile", 3)
    assert st.fees_usd == pytest.approx(5.5 + fees, rel=1e-12)
    # short marked at 102 after selling at 101.9898: unrealised = -q2 * (102 - 101.9898)
    assert r3.unrealized_pnl_usd == pytest.approx(-q2 * (102.0 - sell_px), rel=1e-9)
    # equity = realised - fees + unrealised, and equals the sum of the three bars' PnL
    assert st.equity_usd == pytest.approx(
        st.realized_pnl_usd - st.fees_usd + st.unrealized_pnl_usd, rel=1e-12
    )
    assert sum(st.pnl_by_tier.values()) == pytest.approx(st.equity_usd, rel=1e-9)
    assert set(st.pnl_by_tier) == {"edge", "production", "staging"}


def test_short_profit_and_going_flat() -> None:
    """A short closed lower realises qty * (entry - exit); flat clears the position and its owner."""
    t = PaperTrader(CFG)
    t.on_bar(SYM, 0, 200.0, -0.001, "research", "crisis")
    entry = 200.0 * 0.9999
    q = 10_000 / entry
    r = t.on_bar(SYM, 300_000, 190.0, 0.0, "research", "crisis")
    exit_px = 190.0 * 1.0001
    assert (r.fills[0].side, r.position, r.qty) == ("buy", 0, 0.0)
    assert r.realized_pnl_usd == pytest.approx(q * (entry - exit_px), rel=1e-12)
    assert r.unrealized_pnl_usd == 0.0
    assert (r.state.tier, r.state.avg_entry_px) == (None, 0.0)
    assert r.equity_usd == pytest.approx(q * (entry - exit_px) - 5.5 - q * exit_px * 5.5e-4, rel=1e-12)


def test_maker_fee_and_mid_price_rule() -> None:
    """order_type maker charges maker_fee_bps; fill_price mid uses the book mid when a book is given."""
    cfg = PaperConfig(order_type="maker", fill_price="mid", slippage_bps=0.0, **TH)
    t = PaperTrader(cfg)
    book = BookTop(SYM, 10, 99.0, 1.0, 101.0, 1.0)
    r = t.on_bar(SYM, 0, 100.5, 0.01, "edge", "normal", book=book)
    assert r.fill_price == 100.0
    assert r.fee_usd == pytest.approx(10_000 * 2e-4, rel=1e-12)
    r2 = PaperTrader(cfg).on_bar(SYM, 0, 100.5, 0.01, "edge", "normal")
    assert r2.fill_price == 100.5  # no book: the close


def test_reduce_when_max_units_shrinks() -> None:
    """A resumed 3-unit long under max_units=1 sells two thirds of the coins at the next long signal."""
    t3 = PaperTrader(PaperConfig(max_units=3, slippage_bps=0.0, **TH))
    r = t3.on_bar(SYM, 0, 100.0, 0.001, "edge", "normal")
    assert r.qty == pytest.approx(300.0)
    t1 = PaperTrader(PaperConfig(max_units=1, slippage_bps=0.0, **TH), positions={SYM: r.state})
    r2 = t1.on_bar(SYM, 300_000, 110.0, 0.001, "edge", "normal")
    assert r2.position == 1
    assert [(f.side, pytest.approx(f.qty)) for f in r2.fills] == [("sell", pytest.approx(200.0))]
    assert r2.realized_pnl_usd == pytest.approx(200.0 * 10.0)
    assert r2.state.avg_entry_px == pytest.approx(100.0)


def test_duplicate_or_old_bar_and_bad_price_raise() -> None:
    """A bar at or before the last decided one, or a non-positive close, raises ValueError."""
    t = PaperTrader(CFG)
    t.on_bar(SYM, 300_000, 100.0, 0.0, "edge", "normal")
    with pytest.raises(ValueError, match="already decided"):
        t.on_bar(SYM, 300_000, 100.0, 0.0, "edge", "normal")
    with pytest.raises(ValueError, match="positive close"):
        t.on_bar(SYM, 600_000, 0.0, 0.0, "edge", "normal")


def _run(t: PaperTrader, n: int, *, seed: int, start: int = 0) -> None:
    rng = random.Random(seed)
    price = 100.0
    for i in range(n):
        price *= 1.0 + rng.gauss(0.0, 0.003)
        pred = rng.gauss(0.0, 0.0004)
        tier, regime = rng.choice([("edge", "calm_trend"), ("production", "normal"), ("research", "crisis")])
        if i >= start:
            t.on_bar(SYM, i * 300_000, price, pred, tier, regime)


def test_attribution_sums_to_equity_and_bar_pnl_decomposes() -> None:
    """Over a random run, per-bar PnL = holding + trade and per-tier / per-regime PnL sum to the equity."""
    t = PaperTrader(CFG)
    rng = random.Random(5)
    price, equity = 100.0, 0.0
    for i in range(300):
        price *= 1.0 + rng.gauss(0.0, 0.003)
        r = t.on_bar(SYM, i, price, rng.gauss(0.0, 0.0004), rng.choice("abc"), rng.choice("xyz"))
        assert r.bar_pnl_usd == pytest.approx(r.holding_pnl_usd + r.trade_pnl_usd, abs=1e-9)
        equity += r.bar_pnl_usd
    st = t.state(SYM)
    assert st.n_fills > 50
    assert equity == pytest.approx(st.equity_usd, abs=1e-8)
    assert sum(st.pnl_by_tier.values()) == pytest.approx(st.equity_usd, abs=1e-8)
    assert sum(st.pnl_by_regime.values()) == pytest.approx(st.equity_usd, abs=1e-8)


def test_state_roundtrip_resumes_exactly() -> None:
    """Serialising the state mid-run and resuming gives bit-identical states to an uninterrupted run."""
    full = PaperTrader(CFG)
    _run(full, 200, seed=9)
    first = PaperTrader(CFG)
    _run(first, 120, seed=9)
    text = first.state(SYM).to_json()
    resumed = PaperTrader(CFG, positions={SYM: PositionState.from_json(text)})
    _run(resumed, 200, seed=9, start=120)
    assert resumed.state(SYM) == full.state(SYM)
    assert PositionState.from_json(full.state(SYM).to_json()) == full.state(SYM)
