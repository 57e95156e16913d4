"""bot.core.features: incremental == batch, an independent vectorised check on real data, gaps, properties."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.bars import Bar
from bot.core.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURE_SETS,
    WARMUP_BARS,
    FeatureState,
    replay_features,
)
from offline.data import load_csv, synthetic_bars

BTC_5M = (
    Path(__file__).resolve().parents[2]
    / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized/BTCUSDT_5m.csv"
)
STEP_MS = 300_000


def _incremental(bars: list[Bar]) -> np.ndarray:
    state = FeatureState(interval_ms=STEP_MS)
    rows = []
    for b in bars:
        v = state.update(b)
        rows.append(np.full(len(FEATURE_NAMES), np.nan) if v is None else v)
    return np.array(rows)


def _vectorised(bars: list[Bar]) -> dict[str, np.ndarray]:
    """An independent numpy twin of a subset of the features (no running sums)."""
    c = np.array([b.close for b in bars])
    h = np.array([b.high for b in bars])
    lo = np.array([b.low for b in bars])
    r = np.full(len(c), np.nan)
    r[1:] = c[1:] / c[:-1] - 1.0
    out: dict[str, np.ndarray] = {"ret_1": r, "range_vol": (h - lo) / c}
    out["mom_5"] = np.r_[np.full(5, np.nan), c[5:] / c[:-5] - 1.0]
    out["ret_48"] = np.r_[np.full(48, np.nan), c[48:] / c[:-48] - 1.0]
    for w in (6, 24, 48):
        rv = np.full(len(c), np.nan)
        for t in range(w, len(c)):
            rv[t] = math.sqrt(np.mean(r[t - w + 1 : t + 1] ** 2))
        out[f"rv_{w}"] = rv
    ma = np.full(len(c), np.nan)
    for t in range(23, len(c)):
        ma[t] = c[t] / c[t - 23 : t + 1].mean() - 1.0
    out["dist_ma_24"] = ma
    dc = np.r_[np.nan, np.diff(c)]
    rsi = np.full(len(c), np.nan)
    for t in range(14, len(c)):
        g = np.clip(dc[t - 13 : t + 1], 0, None).sum()
        ls = np.clip(-dc[t - 13 : t + 1], 0, None).sum()
        rsi[t] = (g - ls) / (g + ls) if g + ls > 0 else 0.0
    out["rsi_14"] = rsi
    out.update(_vectorised_vol(bars))
    return out


def _ew_direct(x: np.ndarray, half_life: int) -> np.ndarray:
    """Bias-corrected EW mean by definition: sum_k w^(t-k) x_k / sum_k w^(t-k), w = 0.5^(1/h)."""
    w = 0.5 ** (1.0 / half_life)
    out = np.full(len(x), np.nan)
    ok = np.flatnonzero(np.isfinite(x))
    for t in range(len(x)):
        k = ok[ok <= t]
        if k.size:
            weights = w ** (t - k).astype(np.float64)
            out[t] = np.sum(weights * x[k]) / np.sum(weights)
    return out


def _vectorised_vol(bars: list[Bar]) -> dict[str, np.ndarray]:
    """The log-vol, range-estimator and calendar features from their textbook definitions."""
    o = np.array([b.open for b in bars])
    c = np.array([b.close for b in bars])
    h = np.array([b.high for b in bars])
    lo = np.array([b.low for b in bars])
    v = np.array([b.volume for b in bars])
    start = np.array([b.start_ms for b in bars], dtype=np.int64)
    lr = np.r_[np.nan, np.log(c[1:] / c[:-1])]
    pk = np.log(h / lo) ** 2 / (4.0 * math.log(2.0))
    gk = 0.5 * np.log(h / lo) ** 2 - (2.0 * math.log(2.0) - 1.0) * np.log(c / o) ** 2

    def logvol(var: np.ndarray) -> np.ndarray:
        return np.asarray(np.log(np.maximum(np.sqrt(var), 1e-5)), dtype=np.float64)

    out: dict[str, np.ndarray] = {}
    for hl in (12, 48, 288):
        out[f"lrv_ew{hl}"] = logvol(_ew_direct(lr**2, hl))
        out[f"lpk_ew{hl}"] = logvol(_ew_direct(pk, hl))
        out[f"lgk_ew{hl}"] = logvol(_ew_direct(gk, hl))
    out["lpk_1"] = logvol(pk)
    lv = np.log1p(v)
    prev_mean = np.r_[np.nan, _ew_direct(lv, 288)[:-1]]
    out["lvolume_surprise"] = lv - prev_mean
    day_frac = (start % 86_400_000) / 86_400_000
    day = start // 86_400_000
    for k in (2, 3, 4):
        out[f"hour{k}_sin"] = np.sin(k * 2 * np.pi * day_frac)
        out[f"hour{k}_cos"] = np.cos(k * 2 * np.pi * day_frac)
    out["dow2_sin"] = np.sin(2 * 2 * np.pi * (day % 7) / 7)
    out["dow2_cos"] = np.cos(2 * 2 * np.pi * (day % 7) / 7)
    weekday = np.array([dt.datetime.fromtimestamp(s / 1000, tz=dt.UTC).weekday() for s in start])
    out["weekend"] = (weekday >= 5).astype(np.float64)
    return out


def _assert_matches_twin(bars: list[Bar]) -> None:
    X, valid = replay_features(bars, interval_ms=STEP_MS)
    twin = _vectorised(bars)
    for name, ref in twin.items():
        got = X[valid, FEATURE_INDEX[name]]
        np.testing.assert_allclose(got, ref[valid], rtol=1e-7, atol=1e-10, err_msg=name)


def test_incremental_equals_replay_on_synthetic() -> None:
    """Per-bar FeatureState.update equals replay_features row for row on the synthetic market."""
    bars = synthetic_bars(3000, seed=3)
    X, valid = replay_features(bars, interval_ms=STEP_MS)
    inc = _incremental(bars)
    assert valid.sum() == len(bars) - (WARMUP_BARS - 1)
    np.testing.assert_array_equal(np.isnan(inc).any(axis=1), ~valid)
    np.testing.assert_array_equal(inc[valid], X[valid])


def test_features_match_vectorised_twin_on_synthetic() -> None:
    """The running-sum features equal an independent numpy computation on synthetic bars."""
    _assert_matches_twin(synthetic_bars(2000, seed=5))


@pytest.mark.skipif(not BTC_5M.exists(), reason="../shared/data not present")
def test_incremental_equals_replay_and_twin_on_real_btc() -> None:
    """On real BTCUSDT 5m bars: incremental == replay, and equal to the numpy twin (no running-sum drift)."""
    bars = load_csv(BTC_5M)
    X, valid = replay_features(bars, interval_ms=STEP_MS)
    inc = _incremental(bars)
    np.testing.assert_array_equal(inc[valid], X[valid])
    assert np.isfinite(X[valid]).all()
    _assert_matches_twin(bars[:4000])
    # the running sums over 25k bars must not drift: the tail agrees with the twin too
    tail = bars[-3000:]
    _assert_matches_twin(tail)
    # windowed features forget everything before the tail; the EW ones nearly so (0.5^(3000/288) of weight)
    fresh = replay_features(tail, interval_ms=STEP_MS)[0][-1]
    windowed = [FEATURE_INDEX[n] for n in FEATURE_SETS["v1"]]
    np.testing.assert_allclose(fresh[windowed], X[-1, windowed], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fresh, X[-1], rtol=0.0, atol=1e-2)


def test_gap_resets_warmup() -> None:
    """After a time gap no vector comes for WARMUP_BARS - 1 bars, and the next rows equal a fresh start."""
    bars = synthetic_bars(300, seed=1)
    shifted = [
        *bars[:150],
        *(
            Bar(b.symbol, b.start_ms + 3 * STEP_MS, b.open, b.high, b.low, b.close, b.volume)
            for b in bars[150:]
        ),
    ]
    X, valid = replay_features(shifted, interval_ms=STEP_MS)
    assert valid[150 - 1]
    assert not valid[150 : 150 + WARMUP_BARS - 1].any()
    assert valid[150 + WARMUP_BARS - 1]
    fresh, _ = replay_features(shifted[150:], interval_ms=STEP_MS)
    np.testing.assert_array_equal(X[150 + WARMUP_BARS - 1 :], fresh[WARMUP_BARS - 1 :])


def test_feature_sets_are_ordered_subsets() -> None:
    """Each named feature set is an ordered subset of FEATURE_NAMES; the seed set is the chapter's four."""
    for name, feats in FEATURE_SETS.items():
        idx = [FEATURE_INDEX[f] for f in feats]
        assert idx == sorted(idx), name
    assert FEATURE_SETS["seed"] == ("ret_1", "range_vol", "vol_chg", "mom_5")
    assert 20 <= len(FEATURE_NAMES) <= 60
    assert FEATURE_SETS["v1"] == FEATURE_NAMES[:30]  # version 1's vector is the prefix of version 2's
    assert set(FEATURE_SETS["edge_vol"]) < set(FEATURE_SETS["vol_core"]) < set(FEATURE_SETS["research"])


# A price move is 0 or at least a tick (1e-6 of the price here; exchanges' ticks are coarser). Smaller moves
# are float rounding of the price, and a window of them has a rounding-noise variance that differs with the
# price scale (range_z_24 at 1e-16 ranges: 0 at scale 1, -4e-7 at scale 7), which no feature can be
# invariant to.
_move = st.one_of(st.just(0.0), st.floats(1e-6, 0.02))
_bar_steps = st.lists(
    st.tuples(
        st.builds(lambda m, up: m if up else -m, _move, st.booleans()),  # close-to-close log return
        st.one_of(st.just(0.0), st.floats(1e-6, 0.01)),  # upper wick
        st.one_of(st.just(0.0), st.floats(1e-6, 0.01)),  # lower wick
        st.floats(0.0, 1e4),  # volume
    ),
    min_size=WARMUP_BARS,
    max_size=120,
)


def _bars_from(steps: list[tuple[float, float, float, float]], scale: float) -> list[Bar]:
    out, price = [], 100.0
    for i, (lr, uw, lw, vol) in enumerate(steps):
        o, c = price, price * math.exp(lr)
        out.append(
            Bar(
                "X",
                i * STEP_MS,
                o * scale,
                max(o, c) * (1 + uw) * scale,
                min(o, c) * (1 - lw) * scale,
                c * scale,
                vol,
            )
        )
        price = c
    return out


@settings(max_examples=40, deadline=None)
@given(_bar_steps, st.sampled_from([0.001, 7.0, 1000.0]))
def test_features_finite_bounded_and_price_scale_invariant(
    steps: list[tuple[float, float, float, float]], scale: float
) -> None:
    """Any valid bar path gives finite, bounded features, unchanged by rescaling all prices."""
    base, _ = replay_features(_bars_from(steps, 1.0), interval_ms=STEP_MS)
    scaled, valid = replay_features(_bars_from(steps, scale), interval_ms=STEP_MS)
    assert valid.sum() == len(steps) - (WARMUP_BARS - 1)
    rows = scaled[valid]
    assert np.isfinite(rows).all()
    for name in (
        "rsi_14",
        "close_pos",
        "body",
        "efficiency_24",
        "hour_sin",
        "dow_cos",
        "hour3_cos",
        "weekend",
    ):
        col = rows[:, FEATURE_INDEX[name]]
        assert (np.abs(col) <= 1.0 + 1e-9).all(), name
    for name in ("upper_wick", "lower_wick"):
        col = rows[:, FEATURE_INDEX[name]]
        assert ((col >= -1e-9) & (col <= 1.0 + 1e-9)).all(), name
    np.testing.assert_allclose(rows, base[valid], rtol=1e-6, atol=1e-7)


def test_ew_vol_features_on_a_known_series() -> None:
    """A constant one-bar log return r gives lrv_ew* = log|r| at every half-life, and a constant range gives
    the Parkinson value log(log(h/l) / sqrt(4 ln 2)); a doubled vol shifts every log-vol feature by log 2."""
    r, hl = 0.002, 1.003

    def path(k: float) -> list[Bar]:
        out, price = [], 100.0
        for i in range(400):
            sign = 1.0 if i % 2 == 0 else -1.0
            c = price * math.exp(sign * k * r)
            out.append(Bar("X", i * STEP_MS, price, max(price, c) * hl**k, min(price, c), c, 10.0))
            price = c
        return out

    X1 = replay_features(path(1.0), interval_ms=STEP_MS)[0][-1]
    X2 = replay_features(path(2.0), interval_ms=STEP_MS)[0][-1]
    for n in ("lrv_ew12", "lrv_ew48", "lrv_ew288"):
        assert X1[FEATURE_INDEX[n]] == pytest.approx(math.log(r), abs=1e-9), n
    for n in ("lrv_ew12", "lpk_ew12", "lpk_ew288", "lgk_ew48", "lpk_1"):
        assert X2[FEATURE_INDEX[n]] - X1[FEATURE_INDEX[n]] == pytest.approx(math.log(2.0), abs=1e-6), n
    assert X1[FEATURE_INDEX["lvolume_surprise"]] == pytest.approx(0.0, abs=1e-12)


def test_ew_state_copy_is_independent() -> None:
    """FeatureState.copy() copies the EW accumulators: updating the copy leaves the original untouched."""
    bars = synthetic_bars(200, seed=2)
    a = FeatureState(interval_ms=STEP_MS)
    for b in bars[:150]:
        a.update(b)
    b_state = a.copy()
    b_state.update(bars[150])
    b_state.update(bars[151])
    ref = FeatureState(interval_ms=STEP_MS)
    for b in bars[:150]:
        ref.update(b)
    np.testing.assert_array_equal(a.update(bars[150]), ref.update(bars[150]))
