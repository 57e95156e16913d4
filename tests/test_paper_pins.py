"""Paper-trader behaviours that mutation testing showed unpinned: reducing a short, adding to a position,
sub-unit quantities at BTC-like prices, fill fields, attribution keys, the mid-price guard, the state text."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.bars import BookTop
from bot.core.paper import PaperResult, PaperTrader, PositionState
from bot.core.params import PaperConfig

SYM = "BTCUSDT"
TH: dict[str, Any] = {"long_threshold_bps": 2.0, "short_threshold_bps": 2.0}
LONG, SHORT, FLAT = 0.001, -0.001, 0.0


def trader(max_units: int = 1, st_: PositionState | None = None, /, **kw: Any) -> PaperTrader:
    """A trader with 2 bps thresholds (resuming `st_` if given)."""
    cfg = PaperConfig(max_units=max_units, **TH, **kw)
    return PaperTrader(cfg, positions=None if st_ is None else {st_.symbol: st_})


def test_fills_and_result_carry_the_bar_symbol_tier_and_regime() -> None:
    """Every fill names the symbol, bar, its sequence in the bar, tier and regime; opening legs realise 0."""
    r = trader().on_bar(SYM, 0, 100.0, LONG, "edge", "calm")
    r2 = trader(1, r.state).on_bar(SYM, 300_000, 100.0, SHORT, "staging", "crisis")
    assert (r2.symbol, r2.start_ms) == (SYM, 300_000)
    assert [(f.symbol, f.start_ms, f.seq, f.tier, f.regime) for f in r2.fills] == [
        (SYM, 300_000, 0, "staging", "crisis"),
        (SYM, 300_000, 1, "staging", "crisis"),
    ]
    assert r.fills[0].realized_pnl_usd == 0.0
    assert r2.fills[1].realized_pnl_usd == 0.0
    assert r2.fills[0].realized_pnl_usd != 0.0


def test_going_flat_clears_both_owners() -> None:
    """A flat book has neither a tier nor a regime owning it."""
    t = trader()
    t.on_bar(SYM, 0, 100.0, LONG, "edge", "calm")
    st_ = t.on_bar(SYM, 1, 101.0, FLAT, "edge", "calm").state
    assert (st_.units, st_.tier, st_.regime) == (0, None, None)


def test_flat_bars_without_trades_create_no_attribution_keys() -> None:
    """Bars that neither hold nor trade leave the per-tier and per-regime PnL maps empty."""
    t = trader()
    for i in range(3):
        r = t.on_bar(SYM, i, 100.0 + i, FLAT, "edge", "calm")
    assert (r.state.pnl_by_tier, r.state.pnl_by_regime) == ({}, {})


@pytest.mark.parametrize(("bid", "ask"), [(0.0, 101.0), (99.0, 0.0)])
def test_mid_rule_falls_back_to_the_close_on_a_one_sided_book(bid: float, ask: float) -> None:
    """A book with a zero bid or ask is no price: the close is used."""
    t = trader(fill_price="mid", slippage_bps=0.0)
    r = t.on_bar(SYM, 0, 100.5, LONG, "edge", "calm", book=BookTop(SYM, 0, bid, 1.0, ask, 1.0))
    assert r.fill_price == 100.5


def test_mid_rule_uses_a_sub_dollar_book() -> None:
    """Sub-dollar coins are priced at the book mid like any other."""
    t = trader(fill_price="mid", slippage_bps=0.0)
    r = t.on_bar(SYM, 0, 0.55, LONG, "edge", "calm", book=BookTop(SYM, 0, 0.5, 1.0, 0.7, 1.0))
    assert r.fill_price == pytest.approx(0.6, rel=1e-15)


def test_sub_dollar_close_is_accepted() -> None:
    """A positive close below 1 is a valid price."""
    r = trader(slippage_bps=0.0).on_bar(SYM, 0, 0.5, LONG, "edge", "calm")
    assert r.qty == pytest.approx(20_000.0)


def test_reducing_a_short_buys_back_the_fraction_at_the_same_entry() -> None:
    """A 3-unit short reduced to 1 buys back two thirds of the coins, realises (entry - exit) on them and
    keeps the average entry and the short sign."""
    r = trader(3, slippage_bps=0.0).on_bar(SYM, 0, 100.0, SHORT, "edge", "calm")
    assert r.position == -3
    assert r.qty == pytest.approx(-300.0)
    r2 = trader(1, r.state, slippage_bps=0.0).on_bar(SYM, 1, 90.0, SHORT, "edge", "calm")
    assert r2.position == -1
    assert [f.side for f in r2.fills] == ["buy"]
    assert r2.fills[0].qty == pytest.approx(200.0)
    assert r2.realized_pnl_usd == pytest.approx(200.0 * 10.0)
    assert r2.qty == pytest.approx(-100.0)
    assert r2.state.avg_entry_px == pytest.approx(100.0)
    assert r2.unrealized_pnl_usd == pytest.approx(-100.0 * (90.0 - 100.0))


def test_reducing_a_long_keeps_the_remaining_coins() -> None:
    """A 3-unit long reduced to 1 keeps one third of its coins, long."""
    r = trader(3, slippage_bps=0.0).on_bar(SYM, 0, 100.0, LONG, "edge", "calm")
    r2 = trader(1, r.state, slippage_bps=0.0).on_bar(SYM, 1, 110.0, LONG, "edge", "calm")
    assert r2.qty == pytest.approx(100.0)
    assert r2.unrealized_pnl_usd == pytest.approx(100.0 * 10.0)


def test_adding_to_a_long_buys_only_the_difference_at_a_weighted_entry() -> None:
    """From 1 to 3 units long buys 2 units' worth at the new price; the entry is the coin-weighted average."""
    r = trader(1, slippage_bps=0.0).on_bar(SYM, 0, 100.0, LONG, "edge", "calm")
    r2 = trader(3, r.state, slippage_bps=0.0).on_bar(SYM, 1, 200.0, LONG, "edge", "calm")
    assert [f.side for f in r2.fills] == ["buy"]
    assert r2.fills[0].qty == pytest.approx(100.0)
    assert (r2.position, r2.realized_pnl_usd) == (3, 0.0)
    assert r2.qty == pytest.approx(200.0)
    assert r2.state.avg_entry_px == pytest.approx(150.0)


def test_adding_to_a_short_sells_only_the_difference() -> None:
    """From 1 to 2 units short sells one unit's worth; the position stays short."""
    r = trader(1, slippage_bps=0.0).on_bar(SYM, 0, 100.0, SHORT, "edge", "calm")
    r2 = trader(2, r.state, slippage_bps=0.0).on_bar(SYM, 1, 50.0, SHORT, "edge", "calm")
    assert [f.side for f in r2.fills] == ["sell"]
    assert r2.fills[0].qty == pytest.approx(200.0)
    assert r2.qty == pytest.approx(-300.0)
    assert r2.state.avg_entry_px == pytest.approx(20_000.0 / 300.0)


def test_sub_unit_long_at_btc_prices_is_closed_by_selling() -> None:
    """0.1 BTC long is a long: closing sells it and realises qty * (exit - entry)."""
    t = trader(slippage_bps=0.0)
    r = t.on_bar(SYM, 0, 100_000.0, LONG, "edge", "calm")
    assert r.qty == pytest.approx(0.1)
    r2 = t.on_bar(SYM, 1, 101_000.0, FLAT, "edge", "calm")
    assert [f.side for f in r2.fills] == ["sell"]
    assert r2.fills[0].qty == pytest.approx(0.1)
    assert r2.realized_pnl_usd == pytest.approx(100.0)


def test_sub_unit_long_at_btc_prices_reduces_to_a_long() -> None:
    """A 0.3 BTC long reduced to one unit stays 0.1 BTC long."""
    r = trader(3, slippage_bps=0.0).on_bar(SYM, 0, 100_000.0, LONG, "edge", "calm")
    r2 = trader(1, r.state, slippage_bps=0.0).on_bar(SYM, 1, 100_000.0, LONG, "edge", "calm")
    assert [f.side for f in r2.fills] == ["sell"]
    assert r2.fills[0].qty == pytest.approx(0.2)
    assert r2.qty == pytest.approx(0.1)


def test_closing_a_short_leaves_a_positive_zero() -> None:
    """A closed short is qty +0.0 with entry 0, so the state text says 0.0 (never -0.0)."""
    t = trader()
    t.on_bar(SYM, 0, 100.0, SHORT, "edge", "calm")
    r = t.on_bar(SYM, 1, 100.0, FLAT, "edge", "calm")
    assert (r.qty, r.state.avg_entry_px) == (0.0, 0.0)
    assert math.copysign(1.0, r.qty) == 1.0
    assert json.loads(r.state.to_json())["qty"] == 0.0
    assert '"qty": 0.0' in r.state.to_json()


def test_holding_exactly_one_coin_earns_the_close_change() -> None:
    """A position of exactly 1.0 coin held over a bar earns 1 * (close change) for its owner."""
    t = trader(notional_usd=100.0, slippage_bps=0.0)
    assert t.on_bar(SYM, 0, 100.0, LONG, "edge", "calm").qty == 1.0
    r = t.on_bar(SYM, 1, 103.0, LONG, "prod", "normal")
    assert (r.holding_pnl_usd, r.holding_tier, r.holding_regime) == (3.0, "edge", "calm")


def test_resumed_position_never_marked_earns_no_holding_pnl() -> None:
    """A resumed position without a mark price has no holding PnL on its first bar."""
    st_ = PositionState(SYM, units=1, qty=2.0, avg_entry_px=100.0, tier="edge", regime="calm")
    r = trader(1, st_).on_bar(SYM, 0, 120.0, LONG, "prod", "normal")
    assert (r.holding_pnl_usd, r.fills) == (0.0, ())
    assert r.unrealized_pnl_usd == pytest.approx(40.0)


def test_state_text_has_sorted_keys_and_fresh_state_roundtrips() -> None:
    """The state JSON is key-sorted (stable text); a fresh, never-marked state round-trips with its Nones."""
    fresh = PositionState(SYM)
    text = fresh.to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert text == json.dumps(fresh.to_dict(), sort_keys=True)
    back = PositionState.from_json(text)
    assert back == fresh
    assert (back.last_start_ms, back.mark_px) == (None, None)


def test_state_of_another_version_is_refused_naming_it() -> None:
    """A state written by another version raises a ValueError naming the expected and found versions."""
    d = PositionState(SYM).to_dict() | {"version": 7}
    with pytest.raises(ValueError, match=r"expected version 1, got 7"):
        PositionState.from_dict(d)


# ---- property: cash conservation over any path of signals and sizes ----------------------------------------

_STEP = st.tuples(
    st.sampled_from([LONG, SHORT, FLAT]),
    st.integers(1, 4),  # max_units of the trader deciding this bar (a resume with another size)
    st.floats(-0.05, 0.05),  # close return
)


@settings(max_examples=200, deadline=None)
@given(
    price0=st.floats(0.01, 150_000.0),
    steps=st.lists(_STEP, min_size=1, max_size=25),
    slippage_bps=st.sampled_from([0.0, 1.0, 7.5]),
)
def test_equity_equals_cash_plus_marked_coins_on_any_path(
    price0: float, steps: list[tuple[float, int, float]], slippage_bps: float
) -> None:
    """Over any path of flips, adds and reductions (at BTC-like or sub-dollar prices), the average-cost
    equity equals the cash flows plus the coins marked at the close, the coins have the position's sign and
    size, and every fill is a real quantity at a price on its side of the base."""
    state: PositionState | None = None
    cash = 0.0
    price = price0
    for i, (pred, max_units, ret) in enumerate(steps):
        price *= 1.0 + ret
        t = trader(max_units, state, slippage_bps=slippage_bps)
        before = t.state(SYM)
        r: PaperResult = t.on_bar(SYM, i, price, pred, "tier", "regime")
        state = r.state
        target = t.signal(pred) * max_units
        assert r.position == target == state.units
        for f in r.fills:
            assert f.qty > 0.0
            assert f.notional_usd == pytest.approx(f.qty * f.price, rel=1e-12)
            if f.side == "buy":
                assert f.price == pytest.approx(price * (1 + slippage_bps * 1e-4), rel=1e-12)
                cash -= f.notional_usd
            else:
                assert f.price == pytest.approx(price * (1 - slippage_bps * 1e-4), rel=1e-12)
                cash += f.notional_usd
            cash -= f.fee_usd
        bought = sum(f.qty for f in r.fills if f.side == "buy")
        sold = sum(f.qty for f in r.fills if f.side == "sell")
        assert state.qty == pytest.approx(before.qty + bought - sold, rel=1e-9, abs=1e-12 * abs(before.qty))
        assert (state.qty > 0) == (state.units > 0)
        assert (state.qty < 0) == (state.units < 0)
        if state.units == 0:
            assert (state.qty, state.avg_entry_px) == (0.0, 0.0)
        elif (before.units > 0) == (state.units > 0) and 0 < abs(state.units) < abs(before.units):
            # a reduction keeps the entry and the coins per unit
            assert state.avg_entry_px == pytest.approx(before.avg_entry_px, rel=1e-12)
            assert state.qty / state.units == pytest.approx(before.qty / before.units, rel=1e-9)
        scale = max(1.0, abs(cash), abs(state.qty * price))
        assert state.equity_usd == pytest.approx(cash + state.qty * price, rel=1e-9, abs=1e-9 * scale)
        assert r.bar_pnl_usd == pytest.approx(r.holding_pnl_usd + r.trade_pnl_usd, rel=1e-9, abs=1e-9 * scale)


# ---- vol_target sizing -------------------------------------------------------------------------------------

VT: dict[str, Any] = {"sizing": "vol_target", "target_vol_bps": 10.0, "slippage_bps": 0.0}


def test_vol_target_flat_signal_needs_no_forecast_and_fixed_ignores_a_bad_one() -> None:
    """A flat signal is 0 units without a forecast; fixed sizing never looks at the forecast."""
    assert trader(3, **VT).target_units(0, None) == 0
    assert trader(3).target_units(1, -1.0) == 3


@pytest.mark.parametrize("vol", [0.0, -0.001, float("inf")])
def test_vol_target_refuses_a_non_positive_or_infinite_forecast(vol: float) -> None:
    """A forecast of zero, below zero or infinite is refused, naming it."""
    with pytest.raises(ValueError, match=f"positive vol forecast, got {vol!r}"):
        trader(3, **VT).target_units(-1, vol)


def test_vol_target_stands_aside_only_above_max_vol() -> None:
    """A forecast exactly at max_vol_bps still trades; above it the target is flat; no cap without it."""
    t = trader(3, max_vol_bps=25.0, **VT)
    assert t.target_units(-1, 0.0025) == pytest.approx(-0.4)
    assert t.target_units(-1, 0.0026) == 0
    assert trader(3, **VT).target_units(1, 0.5) == pytest.approx(0.002)


def test_vol_target_band_keeps_a_same_sign_position_up_to_its_edge() -> None:
    """Under vol_target a same-sign target within the band (edge included) keeps the position; beyond the
    band, across zero, or to flat it trades."""
    t = trader(3, rebalance_band=0.25, **VT)
    assert t._banded(2.0, 2.5) == 2.0  # |0.5| <= 0.25 * 2
    assert t._banded(-2.0, -1.5) == -2.0
    assert t._banded(2.0, 2.6) == 2.6
    assert t._banded(2.0, -2.0) == -2.0
    assert t._banded(-2.0, 2.0) == 2.0
    assert t._banded(2.0, 0.0) == 0.0
    assert t._banded(0.0, 0.1) == 0.1
    assert trader(3, rebalance_band=0.25)._banded(2.0, 2.5) == 2.5  # fixed sizing never bands


def test_fixed_sizing_adds_a_small_step_the_band_would_keep() -> None:
    """Fixed sizing from 10 to 11 units buys the unit even though it is within a 10% band."""
    r = trader(10, slippage_bps=0.0).on_bar(SYM, 0, 100.0, LONG, "edge", "calm")
    r2 = trader(11, r.state, slippage_bps=0.0).on_bar(SYM, 1, 100.0, LONG, "edge", "calm")
    assert r2.position == 11
    assert [f.side for f in r2.fills] == ["buy"]
    assert r2.fills[0].qty == pytest.approx(100.0)


def test_vol_target_holds_the_exposure_at_todays_price() -> None:
    """Under vol_target, a 1-unit long whose price doubled holds 2 units of exposure and sells half; fixed
    sizing keeps it as opened."""
    cfg = {**VT, "rebalance_band": 0.0, "long_threshold_bps": 2.0}
    t = PaperTrader(PaperConfig(max_units=3, **cfg))
    r = t.on_bar(SYM, 0, 100.0, LONG, "edge", "calm", vol_forecast=0.001)
    assert (r.position, r.qty) == (1.0, 100.0)
    r2 = t.on_bar(SYM, 1, 200.0, LONG, "edge", "calm", vol_forecast=0.001)
    assert [f.side for f in r2.fills] == ["sell"]
    assert r2.fills[0].qty == pytest.approx(50.0)
    assert r2.position == pytest.approx(1.0)
    assert r2.qty == pytest.approx(50.0)
    r3 = trader(1, r.state, slippage_bps=0.0).on_bar(SYM, 1, 200.0, LONG, "edge", "calm")
    assert (r3.fills, r3.position, r3.qty) == ((), 1, 100.0)


def test_stored_units_stay_int_when_whole_and_float_when_fractional() -> None:
    """Whole units read back as int (old states round-trip exactly), fractional ones as float."""
    d = PositionState(SYM).to_dict()
    whole = PositionState.from_dict(d | {"units": 2.0}).units
    frac = PositionState.from_dict(d | {"units": 0.5}).units
    assert (type(whole), whole) == (int, 2)
    assert (type(frac), frac) == (float, 0.5)


def test_vol_target_band_applies_around_one_unit_and_below() -> None:
    """The band keeps positions of about one unit or less too (no special case at 1 or below it)."""
    t = trader(3, rebalance_band=0.1, **VT)
    assert t._banded(1.0, 1.05) == 1.0
    assert t._banded(0.95, 1.0) == 0.95
    assert t._banded(0.5, 0.52) == 0.5
    assert t._banded(-0.5, -0.52) == -0.5


def test_vol_target_rebalances_a_position_of_exactly_one_coin() -> None:
    """A 1.0-coin long opened at 100 (one 100 USD unit) is worth 2 units at 200 and sells half its coins."""
    t = trader(3, notional_usd=100.0, rebalance_band=0.0, **VT)
    r = t.on_bar(SYM, 0, 100.0, LONG, "edge", "calm", vol_forecast=0.001)
    assert (r.position, r.qty) == (1.0, 1.0)
    r2 = t.on_bar(SYM, 1, 200.0, LONG, "edge", "calm", vol_forecast=0.001)
    assert [f.side for f in r2.fills] == ["sell"]
    assert r2.fills[0].qty == pytest.approx(0.5)


def test_vol_target_grows_a_half_unit_to_one_unit_with_one_buy() -> None:
    """From 0.5 units to a target of exactly 1 unit buys the missing half unit, no sell leg."""
    t = trader(3, rebalance_band=0.0, **VT)
    r = t.on_bar(SYM, 0, 100.0, LONG, "edge", "calm", vol_forecast=0.002)
    assert (r.position, r.qty) == (0.5, 50.0)
    r2 = t.on_bar(SYM, 1, 100.0, LONG, "edge", "calm", vol_forecast=0.001)
    assert [f.side for f in r2.fills] == ["buy"]
    assert r2.fills[0].qty == pytest.approx(50.0)
    assert r2.position == 1.0
    assert r2.qty == pytest.approx(100.0)
