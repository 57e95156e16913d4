"""offline.vol on known series: realised-vol targets, HAR-RV recovering planted coefficients, QLIKE values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offline.vol import (
    HAR_WINDOWS,
    HarRV,
    backward_rv,
    forward_rv,
    har_design,
    log_returns,
    qlike,
    qlike_scale,
    vol_metrics,
)


def prices(returns: np.ndarray) -> np.ndarray:
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))


def test_realised_vol_of_alternating_returns_is_their_size() -> None:
    """+-s alternating log returns: every window's RMS is exactly s, backward and forward."""
    s = 0.003
    close = prices(np.tile([s, -s], 200))
    assert np.isnan(log_returns(close)[0])
    back = backward_rv(close, 12)
    fwd = forward_rv(close, 12)
    assert np.all(np.isnan(back[:12]))
    assert np.allclose(back[12:], s, rtol=0, atol=1e-12)
    assert np.all(np.isnan(fwd[-12:]))
    assert np.allclose(fwd[:-12], s, rtol=0, atol=1e-12)


def test_forward_rv_looks_only_ahead() -> None:
    """forward_rv at t uses returns t+1..t+H: a shock at bar 50 shows at t = 50-H .. 49 and nowhere else."""
    r = np.full(100, 0.001)
    r[49] = 0.05  # the return of bar 50 (close[50] / close[49])
    close = prices(r)
    fwd = forward_rv(close, 5)
    big = np.flatnonzero(fwd > 0.01)
    assert list(big) == [45, 46, 47, 48, 49]


def test_har_recovers_a_planted_linear_relation() -> None:
    """When log forward RV is exactly a linear function of the HAR regressors, OLS recovers it."""
    rng = np.random.default_rng(3)
    close = prices(rng.normal(0, 1e-3, 5000) * np.exp(np.sin(np.arange(5000) / 300)))
    X = har_design(close, windows=HAR_WINDOWS)
    coef = np.array([-0.5, 0.4, 0.3, 0.2])
    y = coef[0] + X @ coef[1:]
    model = HarRV().fit(X, y)
    assert np.allclose(model.coef, coef, atol=1e-8)
    assert np.isnan(model.predict(X)[0])  # no history yet


def test_time_of_day_dummies() -> None:
    """Hour-of-day adds 23 one-hot columns (hour 0 is the base) from UTC start_ms."""
    close = prices(np.full(600, 1e-3))
    start_ms = np.arange(601, dtype=np.int64) * 300_000
    X = har_design(close, start_ms, time_of_day=True)
    assert X.shape == (601, 3 + 23)
    hour = (start_ms // 3_600_000) % 24
    assert np.all(X[hour == 0, 3:].sum(axis=1) == 0)
    assert np.all(X[hour == 5, 3 + 4] == 1.0)
    with pytest.raises(ValueError, match="start_ms"):
        har_design(close, time_of_day=True)


def test_qlike_values() -> None:
    """QLIKE = s/h - log(s/h) - 1 on variances: 0 when exact; a forecast vol twice the truth gives
    0.25 - log 0.25 - 1; the fitted variance scale undoes a constant bias exactly."""
    rv = np.array([0.001, 0.002, 0.004])
    assert qlike(rv, rv) == pytest.approx(0.0, abs=1e-15)
    assert qlike(rv, 2 * rv) == pytest.approx(0.25 - math.log(0.25) - 1.0)
    c = qlike_scale(rv, 2 * rv)
    assert c == pytest.approx(0.25)
    assert qlike(rv, 2 * rv, scale=c) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="at least one row"):
        qlike(np.array([np.nan]), np.array([0.1]))


def test_vol_metrics_rank_a_better_forecast_higher() -> None:
    rng = np.random.default_rng(5)
    true_log = rng.normal(-6.0, 0.5, 2000)
    realised = np.exp(true_log + rng.normal(0, 0.3, 2000))
    good = vol_metrics(realised, true_log)
    noisy = vol_metrics(realised, true_log + rng.normal(0, 0.6, 2000))
    assert good["r2_log_vol"] > noisy["r2_log_vol"]
    assert good["ic"] > noisy["ic"]
    assert good["qlike"] < noisy["qlike"]
    assert set(good) == {"r2_log_vol", "ic", "qlike", "qlike_bc"}
