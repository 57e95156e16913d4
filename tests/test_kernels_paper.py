"""Paper kernel parity: the kernel (per bar through PaperTrader, over T bars, over N symbols) equals the
former pure-Python trader (tests/oracle_paper.py) exactly - positions (and their int/float type), fills,
fees, PnL, attribution - on the synthetic market, the 5 real symbols and random bar sequences."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import oracle_paper as oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.bars import Bar, BookTop
from bot.core.kernels import paper as kp
from bot.core.paper import PaperResult, PaperTrader, PositionState, kernel_params
from bot.core.params import REGIME_NAMES, PaperConfig
from bot.sim.csvbars import read_csv_bars
from bot.sim.synthetic import SyntheticMarket

DATA = Path(__file__).resolve().parents[2] / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
TIERS = ("edge", "production", "staging", "research")
K = kp.SLOTS
N_BARS = 3000
CONFIGS = {
    "fixed": PaperConfig(max_units=2, long_threshold_bps=2.0, short_threshold_bps=2.0),
    "fixed_mid_maker": PaperConfig(
        long_threshold_bps=1.0,
        short_threshold_bps=3.0,
        fill_price="mid",
        order_type="maker",
        slippage_bps=0.5,
    ),
    "vol_target": PaperConfig(
        max_units=3, long_threshold_bps=2.0, short_threshold_bps=2.0, sizing="vol_target", target_vol_bps=5.0
    ),
    "vol_target_cap_band": PaperConfig(
        max_units=2,
        long_threshold_bps=1.0,
        short_threshold_bps=1.0,
        sizing="vol_target",
        target_vol_bps=8.0,
        max_vol_bps=40.0,
        rebalance_band=0.3,
        fill_price="mid",
    ),
}


def same(got: PaperResult, want: PaperResult) -> None:
    """Equal values and equal Python types (the records encode an int position as 1, a float as 1.0); the
    attribution dicts' order aside (the state's JSON sorts its keys)."""
    assert got == want

    def canonical(r: PaperResult) -> str:
        st = r.state
        by_tier, by_regime = sorted(st.pnl_by_tier.items()), sorted(st.pnl_by_regime.items())
        return repr((r, st.units, by_tier, by_regime)).split("state=PositionState(")[0] + repr(
            (st.units, by_tier, by_regime)
        )

    assert canonical(got) == canonical(want)


def _inputs(n: int, seed: int) -> tuple[list[float], list[float], list[int], list[int]]:
    """Predictions around the thresholds, lognormal vol forecasts, random tier and regime codes."""
    rng = np.random.default_rng(seed)
    return (
        rng.normal(0.0, 0.0004, n).tolist(),
        np.exp(rng.normal(math.log(0.002), 0.6, n)).tolist(),
        rng.integers(0, len(TIERS), n).tolist(),
        rng.integers(0, len(REGIME_NAMES), n).tolist(),
    )


@cache
def _real() -> dict[str, list[Bar]]:
    if not DATA.is_dir():
        pytest.skip("../shared/data not present (CI always has it)")
    return {s: list(read_csv_bars(DATA / f"{s}_5m.csv"))[-N_BARS:] for s in SYMBOLS}


def _run_kernel(cfg: PaperConfig, bars: list[Bar], books: list[BookTop] | None, seed: int) -> tuple[Any, ...]:
    pred, vol, tier, regime = _inputs(len(bars), seed)
    state = kp.new_state()
    pnl_tier, pnl_regime = np.full(len(TIERS), np.nan), np.full(len(REGIME_NAMES), np.nan)
    out = np.zeros((len(bars), K["N_OUT"]))
    done = kp.run(
        state,
        kernel_params(cfg),
        np.array([b.start_ms for b in bars], np.int64),
        np.array([b.close for b in bars]),
        np.array(pred),
        np.array(vol),
        np.array([b.bid_px for b in books]) if books else np.zeros(0),
        np.array([b.ask_px for b in books]) if books else np.zeros(0),
        np.array(tier, np.int64),
        np.array(regime, np.int64),
        pnl_tier,
        pnl_regime,
        out,
    )
    assert done == len(bars)
    return state, pnl_tier, pnl_regime, out


def _compare_run(cfg: PaperConfig, bars: list[Bar], books: list[BookTop] | None, seed: int) -> PositionState:
    """Per bar through PaperTrader and in one T-loop call: both equal the oracle."""
    pred, vol, tier, regime = _inputs(len(bars), seed)
    ref, got = oracle.PaperTrader(cfg), PaperTrader(cfg)
    results = []
    for t, bar in enumerate(bars):
        args = (bar.symbol, bar.start_ms, bar.close, pred[t], TIERS[tier[t]], REGIME_NAMES[regime[t]])
        book = books[t] if books else None
        want = ref.on_bar(*args, book=book, vol_forecast=vol[t])
        same(got.on_bar(*args, book=book, vol_forecast=vol[t]), want)
        results.append(want)
    state, pnl_tier, pnl_regime, out = _run_kernel(cfg, bars, books, seed)
    for t, want in enumerate(results):
        row = out[t].tolist()
        assert (row[K["R_POSITION"]], row[K["R_QTY"]], row[K["R_EQUITY"]]) == (
            want.position,
            want.qty,
            want.equity_usd,
        )
        assert (row[K["R_BAR_PNL"]], row[K["R_HOLDING"]], row[K["R_TRADE_PNL"]]) == (
            want.bar_pnl_usd,
            want.holding_pnl_usd,
            want.trade_pnl_usd,
        )
        assert int(row[K["R_N_FILLS"]]) == len(want.fills)
        for k, f in enumerate(want.fills):
            base = K["R_FILL0"] + k * K["FILL_WIDTH"]
            assert row[base + K["X_SIDE"]] == (1.0 if f.side == "buy" else -1.0)
            assert row[base + K["X_QTY"] : base + K["X_REALIZED"] + 1] == [
                f.qty,
                f.price,
                f.notional_usd,
                f.fee_usd,
                f.realized_pnl_usd,
            ]
    final = results[-1].state
    assert {TIERS[i]: v for i, v in enumerate(pnl_tier.tolist()) if not math.isnan(v)} == final.pnl_by_tier
    assert {
        REGIME_NAMES[i]: v for i, v in enumerate(pnl_regime.tolist()) if not math.isnan(v)
    } == final.pnl_by_regime
    s = state.tolist()
    assert (s[K["S_REALIZED"]], s[K["S_FEES"]], int(s[K["S_N_FILLS"]])) == (
        final.realized_pnl_usd,
        final.fees_usd,
        final.n_fills,
    )
    assert sum(len(r.fills) for r in results) > 10
    return final


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_synthetic_market_with_books(name: str) -> None:
    """On the synthetic market (book mids for mid fills), every result equals the oracle's, per bar and
    over T bars in one kernel call, for fixed and vol_target sizing with and without the cap and band."""
    steps = SyntheticMarket(seed=11).generate(1500)
    _compare_run(CONFIGS[name], [s.bar for s in steps], [s.book for s in steps], seed=3)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_real_symbols(symbol: str) -> None:
    """On each real symbol's last bars, fixed and capped vol_target sizing equal the oracle exactly."""
    for i, name in enumerate(("fixed", "vol_target_cap_band")):
        _compare_run(CONFIGS[name], _real()[symbol], None, seed=i)


def test_n_symbols_in_one_call_per_bar_close() -> None:
    """One kernel call per bar close over the 5 real symbols equals 5 oracle traders."""
    cfg = CONFIGS["vol_target"]
    n_bars = 600
    bars = {s: _real()[s][:n_bars] for s in SYMBOLS}
    inputs = {s: _inputs(n_bars, seed=i) for i, s in enumerate(SYMBOLS)}
    ref = oracle.PaperTrader(cfg)
    n = len(SYMBOLS)
    state = kp.new_state(n)
    pnl_tier, pnl_regime = np.full((n, len(TIERS)), np.nan), np.full((n, len(REGIME_NAMES)), np.nan)
    out = np.zeros((n, K["N_OUT"]))
    params = kernel_params(cfg)
    for t in range(n_bars):
        row = [bars[s][t] for s in SYMBOLS]
        done = kp.run_symbols(
            state,
            params,
            np.array([b.start_ms for b in row], np.int64),
            np.array([b.close for b in row]),
            np.array([inputs[s][0][t] for s in SYMBOLS]),
            np.array([inputs[s][1][t] for s in SYMBOLS]),
            np.zeros(0),
            np.zeros(0),
            np.array([inputs[s][2][t] for s in SYMBOLS], np.int64),
            np.array([inputs[s][3][t] for s in SYMBOLS], np.int64),
            pnl_tier,
            pnl_regime,
            out,
        )
        assert done == n
        for i, (s, bar) in enumerate(zip(SYMBOLS, row, strict=True)):
            preds, vols, tiers, regimes = inputs[s]
            tier, regime = TIERS[tiers[t]], REGIME_NAMES[regimes[t]]
            want = ref.on_bar(s, bar.start_ms, bar.close, preds[t], tier, regime, vol_forecast=vols[t])
            assert (out[i, K["R_POSITION"]], out[i, K["R_EQUITY"]]) == (want.position, want.equity_usd)
    for i, s in enumerate(SYMBOLS):
        final = ref.state(s)
        got = {TIERS[k]: v for k, v in enumerate(pnl_tier[i].tolist()) if not math.isnan(v)}
        assert got == final.pnl_by_tier


def test_a_refused_bar_leaves_the_loop_and_the_state_where_they_were() -> None:
    """The T-loop stops at a bar out of order and returns its index; step on it again says why."""
    cfg = CONFIGS["fixed"]
    bars = _real()["BTCUSDT"][:5]
    bars[3] = bars[1]
    state, _, _, _ = (kp.new_state(), None, None, None)
    out = np.zeros((5, K["N_OUT"]))
    ones = np.zeros(5, np.int64)
    args = (np.array([b.start_ms for b in bars], np.int64), np.array([b.close for b in bars]))
    done = kp.run(
        state, kernel_params(cfg), *args, np.full(5, 0.01), np.full(5, np.nan), np.zeros(0), np.zeros(0),
        ones, ones, np.full(1, np.nan), np.full(4, np.nan), out,
    )  # fmt: skip
    assert done == 3
    before = state.copy()
    status = kp.step(
        state, kernel_params(cfg), bars[3].start_ms, bars[3].close, 0.01, np.nan, 0.0, 0.0, 0, 0,
        np.full(1, np.nan), np.full(4, np.nan), out[3],
    )  # fmt: skip
    assert status == K["OUT_OF_ORDER"]
    assert np.array_equal(state, before)


# --- random bar sequences: flat prices, gaps, books with an empty side, bad closes and vol forecasts

_bar = st.tuples(
    st.sampled_from([1, 1, 1, 3, 0]),  # start_ms step (0: the same bar again)
    st.sampled_from([0.0, 0.0, 0.002, -0.002, 0.05, -0.05]),  # return (0: flat)
    st.sampled_from([0.0, 0.0001, -0.0001, 0.003, -0.003, 0.0002]),  # prediction (0.0002: at 2 bps)
    st.sampled_from([None, 0.001, 0.003, 0.006, 0.0, math.inf, math.nan]),  # vol forecast
    st.one_of(
        st.none(), st.tuples(st.sampled_from([0.0, 99.5, 100.0]), st.sampled_from([0.0, 100.5, 101.0]))
    ),
    st.sampled_from([0, 0, 0, 1, 2]),  # tier index; the regime follows it
    st.sampled_from([False, False, False, False, True]),  # a non-positive close
)


@settings(max_examples=80, deadline=None)
@given(
    bars=st.lists(_bar, min_size=1, max_size=40),
    sizing=st.sampled_from(["fixed", "vol_target"]),
    max_units=st.integers(1, 3),
    band=st.sampled_from([0.0, 0.1, 0.5]),
    max_vol=st.sampled_from([None, 30.0]),
    mid=st.booleans(),
    maker=st.booleans(),
    start=st.sampled_from([None, "long", "short_frac"]),
)
def test_random_sequences_equal_the_oracle(
    bars: list[Any],
    sizing: str,
    max_units: int,
    band: float,
    max_vol: float | None,
    mid: bool,
    maker: bool,
    start: str | None,
) -> None:
    """Random bars (flat prices, gaps, repeated bars, zero/negative closes, empty book sides, missing or bad
    vol forecasts) from a flat or a restored position: the same results and the same errors as the oracle."""
    cfg = PaperConfig(
        max_units=max_units,
        long_threshold_bps=2.0,
        short_threshold_bps=2.0,
        sizing=sizing,  # type: ignore[arg-type]
        rebalance_band=band,
        max_vol_bps=max_vol,
        fill_price="mid" if mid else "close",
        order_type="maker" if maker else "taker",
    )
    restored: dict[str, PositionState] = {}
    if start == "long":
        restored["X"] = PositionState(
            "X", 0, 2, 200.0, 99.0, 100.0, "edge", "normal", 1.0, 0.5, 3, {"edge": 0.5}
        )
    elif start == "short_frac":
        restored["X"] = PositionState("X", 0, -0.5, -50.0, 101.0, None, "staging", "crisis")
    ref, got = oracle.PaperTrader(cfg, positions=restored), PaperTrader(cfg, positions=restored)
    start_ms, price = 0, 100.0
    for step_ms, ret, pred, vol, book, tier, bad_close in bars:
        start_ms += step_ms * 300_000
        price *= 1.0 + ret
        close = -price if bad_close else price
        top = None if book is None else BookTop("X", start_ms, book[0], 1.0, book[1], 1.0)
        args = ("X", start_ms, close, pred, TIERS[tier], REGIME_NAMES[tier])
        try:
            want: PaperResult | str = ref.on_bar(*args, book=top, vol_forecast=vol)
        except ValueError as exc:
            want = str(exc)
        try:
            result: PaperResult | str = got.on_bar(*args, book=top, vol_forecast=vol)
        except ValueError as exc:
            result = str(exc)
        if isinstance(want, str):
            assert result == want
        else:
            assert isinstance(result, PaperResult)
            same(result, want)
    assert got.state("X").to_json() == ref.state("X").to_json()


def test_the_loops_refuse_arrays_shorter_than_the_bars() -> None:
    """run and run_symbols check every array once (they index without bounds checks) and raise ValueError."""
    n, i64 = 3, np.zeros(3, np.int64)
    p = kernel_params(CONFIGS["fixed"])
    cols = (np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(0), np.zeros(0), i64, i64)
    with pytest.raises(ValueError, match="shorter than"):
        kp.run(kp.new_state(), p, i64, *cols, np.zeros(1), np.zeros(1), np.zeros((n - 1, K["N_OUT"])))
    with pytest.raises(ValueError, match="shorter than"):
        kp.run_symbols(
            kp.new_state(n - 1), p, i64, *cols, np.zeros((n, 1)), np.zeros((n, 1)), np.zeros((n, 28))
        )
