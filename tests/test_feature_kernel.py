"""bot.core.kernels.features: equal to the slow oracle (tests/oracle_features.py) on real and synthetic bars,
its loops equal its step, compiled equal to plain Python, bad bars rejected with the state untouched.

Tolerance: every feature within 1e-12 relative of the oracle, with an absolute floor of 1e-15 for values
near 0 (a feature is at most ~10 in size; in practice the two agree to the last bit).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_features import OracleFeatureState, oracle_replay

from bot.core import kernels
from bot.core.bars import Bar
from bot.core.features import (
    N_FEATURES,
    WARMUP_BARS,
    FeatureState,
    features_of_arrays,
    replay_features,
)
from bot.core.kernels import features as kernel
from bot.sim.synthetic import SyntheticMarket
from offline.data import load_csv

DATA = Path(__file__).resolve().parents[2] / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
STEP_MS = 300_000
RTOL, ATOL = 1e-12, 1e-15


def _assert_equal_to_oracle(bars: list[Bar], *, interval_ms: int | None = STEP_MS) -> None:
    X, valid = replay_features(bars, interval_ms=interval_ms)
    Y, valid_oracle = oracle_replay(bars, interval_ms=interval_ms)
    np.testing.assert_array_equal(valid, valid_oracle)
    assert np.isnan(X[~valid]).all()
    assert np.isfinite(X[valid]).all()
    np.testing.assert_allclose(X[valid], Y[valid], rtol=RTOL, atol=ATOL)


def _arrays(bars: list[Bar]) -> tuple[np.ndarray, ...]:
    return (
        np.array([b.start_ms for b in bars], dtype=np.int64),
        *(np.array([getattr(b, f) for b in bars]) for f in ("open", "high", "low", "close", "volume")),
    )


def test_layout_tiles_the_state() -> None:
    """The layout table covers slots 0..STATE_SLOTS-1 once, in order, with no hole."""
    nxt = 0
    for name, first, width in kernel.LAYOUT:
        assert first == nxt, name
        assert kernel.SLOT[name] == first
        nxt = first + width
    assert nxt == kernel.STATE_SLOTS
    assert kernel.N_OUT == N_FEATURES
    assert kernel.WARMUP == WARMUP_BARS


def test_compiled_reports_each_kernel() -> None:
    """compiled() names every kernel module; the feature kernel is compiled when its extension is built."""
    report = kernels.compiled()
    assert set(report) == set(kernels.KERNELS)
    assert "features" in report
    built = any(Path(kernels.__file__).parent.glob("features.*.so"))
    assert report["features"] == (built and os.environ.get(kernels.PURE_ENV) != "1")
    with pytest.raises(KeyError, match="unknown kernel 'nope'"):
        kernels.load_pure("nope")


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_equals_oracle_on_real_symbol(symbol: str) -> None:
    """On a real symbol's 90 days of 5m bars, every feature of every bar equals the oracle's."""
    _assert_equal_to_oracle(load_csv(DATA / f"{symbol}_5m.csv"))


def test_equals_oracle_on_synthetic_market_with_gaps() -> None:
    """On the synthetic market (contiguous, with gaps cut in, without gap detection): as the oracle."""
    bars = [s.bar for s in SyntheticMarket(seed=11).generate(4000)]
    _assert_equal_to_oracle(bars)
    gapped = [b for i, b in enumerate(bars) if i % 700 not in (300, 301, 302)]
    _assert_equal_to_oracle(gapped)
    _assert_equal_to_oracle(gapped, interval_ms=None)


@pytest.mark.skipif(
    not kernels.compiled()["features"], reason="the kernel runs as plain Python here: nothing to compare"
)
def test_compiled_equals_plain_python() -> None:
    """The compiled kernel and its .py run as plain Python give the same rows on the synthetic market."""
    pure = kernels.load_pure("features")
    bars = [s.bar for s in SyntheticMarket(seed=5).generate(600)]
    cols = _arrays(bars)
    rows = []
    for k in (kernel, pure):
        state = np.empty(k.STATE_SLOTS)
        k.init(state, STEP_MS)
        out = np.empty((len(bars), k.N_OUT))
        status = np.zeros(len(bars), dtype=np.int8)
        assert k.run(state, *cols, out, status) == len(bars)
        rows.append(out)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_run_and_run_symbols_equal_step() -> None:
    """run over T bars and run_symbols over N interleaved symbols give step's rows and codes exactly."""
    n_sym, t_bars = 3, 200
    series = [[s.bar for s in SyntheticMarket(seed=20 + i).generate(t_bars)] for i in range(n_sym)]
    by_step = np.empty((n_sym, t_bars, N_FEATURES))
    codes = np.empty((n_sym, t_bars), dtype=np.int8)
    for i, bars in enumerate(series):
        state = np.empty(kernel.STATE_SLOTS)
        kernel.init(state, STEP_MS)
        for t, b in enumerate(bars):
            codes[i, t] = kernel.step(
                state, b.start_ms, b.open, b.high, b.low, b.close, b.volume, by_step[i, t]
            )
    for i, bars in enumerate(series):
        X, valid = features_of_arrays(*_arrays(bars), interval_ms=STEP_MS)
        np.testing.assert_array_equal(X, by_step[i])
        np.testing.assert_array_equal(valid, codes[i] == kernel.ROW)
    states = np.empty((n_sym, kernel.STATE_SLOTS))
    for i in range(n_sym):
        kernel.init(states[i], STEP_MS)
    out = np.empty((n_sym, N_FEATURES))
    status = np.empty(n_sym, dtype=np.int8)
    for t in range(t_bars):
        cols = _arrays([series[i][t] for i in range(n_sym)])
        kernel.run_symbols(states, *cols, out, status)
        np.testing.assert_array_equal(out, by_step[:, t])
        np.testing.assert_array_equal(status, codes[:, t])


_BAD_FIELDS = [
    ("open", math.nan),
    ("high", math.inf),
    ("low", -math.inf),
    ("close", math.nan),
    ("volume", math.nan),
    ("volume", math.inf),
    ("volume", -1.0),
    ("close", 0.0),
    ("low", -5.0),
    ("open", 0.0),
]


@pytest.mark.parametrize(("field", "value"), _BAD_FIELDS)
def test_bad_bar_is_rejected_and_state_untouched(field: str, value: float) -> None:
    """A NaN/inf field, a price <= 0 or a negative volume raises ValueError naming it; the state is unchanged
    and the stream continues as if the bar never came."""
    bars = [s.bar for s in SyntheticMarket(seed=3).generate(120)]
    state, ref = FeatureState(interval_ms=STEP_MS), FeatureState(interval_ms=STEP_MS)
    for b in bars[:80]:
        state.update(b)
        ref.update(b)
    before = state.state.copy()
    good = bars[80]
    bad = Bar(**{**{f: getattr(good, f) for f in Bar.__slots__ if f != "recv_ns"}, field: value})
    with pytest.raises(ValueError, match=r"prices must be finite and > 0 and volume finite and >= 0"):
        state.update(bad)
    np.testing.assert_array_equal(state.state, before)
    for b in bars[80:]:
        np.testing.assert_array_equal(state.update(b), ref.update(b))


def test_zero_volume_is_valid() -> None:
    """Zero volume is a bar like any other: finite features, vol_chg 0 after it, as the oracle."""
    bars = [s.bar for s in SyntheticMarket(seed=4).generate(200)]
    bars = [
        Bar(b.symbol, b.start_ms, b.open, b.high, b.low, b.close, 0.0 if i % 7 < 3 else b.volume)
        for i, b in enumerate(bars)
    ]
    _assert_equal_to_oracle(bars)


def test_out_of_order_bar_raises_and_keeps_state() -> None:
    """A bar not after the previous one raises with both start times; the state is unchanged."""
    bars = [s.bar for s in SyntheticMarket(seed=3).generate(60)]
    fs = FeatureState(interval_ms=STEP_MS)
    for b in bars[:55]:
        fs.update(b)
    before = fs.state.copy()
    with pytest.raises(
        ValueError, match=rf"start_ms={bars[54].start_ms} is not after the previous {bars[54].start_ms}"
    ):
        fs.update(bars[54])
    with pytest.raises(ValueError, match="is not after the previous"):
        fs.update(bars[10])
    np.testing.assert_array_equal(fs.state, before)
    assert fs.last_start_ms == bars[54].start_ms


def test_run_names_the_first_bad_bar() -> None:
    """The T-bar loop stops at the first rejected bar and the error names its index."""
    bars = [s.bar for s in SyntheticMarket(seed=3).generate(100)]
    cols = _arrays(bars)
    cols[4][70] = math.nan  # close
    with pytest.raises(ValueError, match=r"^bar 70 of 100: SYNTHUSDT: bar start_ms="):
        features_of_arrays(*cols, interval_ms=STEP_MS, symbol="SYNTHUSDT")
    swapped = [*bars[:30], bars[31], bars[30], *bars[32:]]
    with pytest.raises(ValueError, match=r"^bar 31 of 100: .* is not after the previous"):
        replay_features(swapped, interval_ms=STEP_MS)


def test_feature_state_api() -> None:
    """last_start_ms (None, then the newest start, also 0), resets on gaps, warm, copy independence."""
    with pytest.raises(ValueError, match="interval_ms must be a positive"):
        FeatureState(interval_ms=0)
    fs = FeatureState(interval_ms=STEP_MS)
    assert fs.last_start_ms is None
    assert fs.count == 0
    assert fs.resets == 0
    assert not fs.warm
    bars = [Bar("X", i * STEP_MS, 100.0, 101.0, 99.0, 100.0 + (i % 3), 1.0) for i in range(WARMUP_BARS)]
    assert fs.update(bars[0]) is None
    assert fs.last_start_ms == 0
    for b in bars[1:-1]:
        assert fs.update(b) is None
    assert fs.warm
    twin = fs.copy()
    row = fs.update(bars[-1])
    assert row is not None
    assert row.shape == (N_FEATURES,)
    assert twin.count == WARMUP_BARS - 1
    assert fs.count == WARMUP_BARS
    np.testing.assert_array_equal(twin.update(bars[-1]), row)
    later = Bar("X", bars[-1].start_ms + 5 * STEP_MS, 100.0, 101.0, 99.0, 100.0, 1.0)
    assert fs.update(later) is None
    assert fs.resets == 1
    assert fs.count == 1


_steps = st.lists(
    st.tuples(
        st.floats(-0.03, 0.03),  # close-to-close log return
        st.floats(0.0, 0.01),  # upper wick
        st.floats(0.0, 0.01),  # lower wick
        st.sampled_from([0.0, 0.0, 1.0, 7.5, 1e4]) | st.floats(0.0, 1e6),  # volume, often zero
        st.sampled_from([1, 1, 1, 1, 1, 1, 2, 40]),  # bars since the previous one: 1 = contiguous, else a gap
        st.booleans(),  # a flat bar: open = high = low = close = previous close
    ),
    min_size=1,
    max_size=160,
)


def _path(steps: list[tuple[float, float, float, float, int, bool]]) -> list[Bar]:
    out, price, t = [], 100.0, 0
    for lr, uw, lw, vol, advance, flat in steps:
        t += advance * STEP_MS
        if flat:
            out.append(Bar("X", t, price, price, price, price, vol))
            continue
        o, c = price, price * math.exp(lr)
        out.append(Bar("X", t, o, max(o, c) * (1 + uw), min(o, c) * (1 - lw), c, vol))
        price = c
    return out


@settings(max_examples=60, deadline=None)
@given(_steps, st.sampled_from([STEP_MS, None]))
def test_random_paths_equal_oracle(
    steps: list[tuple[float, float, float, float, int, bool]], interval: int | None
) -> None:
    """Random bar paths with gaps, flat bars and zero volume: the kernel equals the oracle bar by bar,
    rows are finite, and a row comes exactly when WARMUP_BARS contiguous bars have been seen."""
    bars = _path(steps)
    _assert_equal_to_oracle(bars, interval_ms=interval)
    oracle, fs = OracleFeatureState(interval_ms=interval), FeatureState(interval_ms=interval)
    for b in bars:
        got, want = fs.update(b), oracle.update(b)
        assert (got is None) == (want is None)
        assert fs.count == oracle.count
        assert fs.resets == oracle.resets
        assert fs.last_start_ms == oracle.last_start_ms
