"""Realised volatility: the target, the classical baselines every vol model must beat, and the metrics.

- Target: the forward realised volatility over `horizon` bars, `RV_t = sqrt(mean(r_{t+1..t+H}^2))` with
  `r` the one-bar log return; models forecast `log RV_t` (a fraction per bar, like the features' `rv_*`).
- HAR-RV (Corsi 2009): OLS of `log RV_t` on the log of the backward realised vol over the last 12, 48 and
  288 bars (an hour, four hours and a day of 5-minute bars), and the same plus hour-of-day dummies (intraday
  seasonality). A few lines of least squares; no dependency.
- Metrics: R^2 of log vol, Spearman IC, and QLIKE (Patton 2011) on variances, `s/h - log(s/h) - 1` with
  `s = RV^2` and `h` the forecast variance; robust to noise in the realised proxy, zero for a perfect
  forecast. Regressing logs forecasts the geometric mean, which biases `h` low; `qlike_scale` fits the
  variance-level correction `c = mean(s/h)` on training rows (the QLIKE-optimal scale), and the
  bias-corrected QLIKE applies it to the test forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: HAR windows in bars: an hour, four hours and a day of 5-minute bars.
HAR_WINDOWS: Final[tuple[int, ...]] = (12, 48, 288)
_VOL_FLOOR: Final = 1e-12  # log of an exactly flat stretch


def log_returns(close: F64) -> F64:
    """One-bar log returns; element 0 is NaN (no previous close)."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape, np.nan)
    out[1:] = np.log(c[1:] / c[:-1])
    return out


def _rolling_mean_sq(r: F64, window: int) -> F64:
    """Mean of r^2 over the `window` values ending at each index (NaN where incomplete)."""
    sq = np.where(np.isfinite(r), r * r, np.nan)
    out = np.full(sq.shape, np.nan)
    if len(sq) < window:
        return out
    csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(sq))])
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(sq))])
    sums = csum[window:] - csum[:-window]
    nbad = bad[window:] - bad[:-window]
    out[window - 1 :] = np.where(nbad == 0, sums / window, np.nan)
    return out


def backward_rv(close: F64, window: int) -> F64:
    """Realised vol over the `window` one-bar returns ending at each bar (NaN until enough history)."""
    return np.asarray(np.sqrt(_rolling_mean_sq(log_returns(close), window)), dtype=np.float64)


def forward_rv(close: F64, horizon: int) -> F64:
    """Realised vol over the next `horizon` one-bar returns after each bar (NaN in the last `horizon`)."""
    back = _rolling_mean_sq(log_returns(close), horizon)
    out = np.full(back.shape, np.nan)
    out[:-horizon] = back[horizon:]
    return np.asarray(np.sqrt(out), dtype=np.float64)


def har_design(
    close: F64,
    start_ms: I64 | None = None,
    *,
    windows: Sequence[int] = HAR_WINDOWS,
    time_of_day: bool = False,
) -> F64:
    """HAR regressors per bar: log backward RV per window, plus 23 hour-of-day dummies (UTC) if asked."""
    cols = [np.log(np.maximum(backward_rv(close, w), _VOL_FLOOR)) for w in windows]
    X = np.column_stack(cols)
    X[~np.isfinite(backward_rv(close, max(windows)))] = np.nan
    if time_of_day:
        if start_ms is None:
            raise ValueError("time_of_day needs the bars' start_ms")
        hour = (np.asarray(start_ms, dtype=np.int64) // 3_600_000) % 24
        dummies = (hour[:, None] == np.arange(1, 24)[None, :]).astype(np.float64)
        X = np.column_stack([X, dummies])
    return X


@dataclass(slots=True)
class HarRV:
    """OLS of log forward RV on HAR regressors (with intercept). Fit on finite rows only."""

    coef: F64 = field(default_factory=lambda: np.zeros(0))

    def fit(self, X: F64, y_log_vol: F64) -> HarRV:
        ok = np.isfinite(X).all(axis=1) & np.isfinite(y_log_vol)
        if ok.sum() <= X.shape[1] + 1:
            raise ValueError(f"HAR fit needs more than {X.shape[1] + 1} complete rows, got {int(ok.sum())}")
        A = np.column_stack([np.ones(int(ok.sum())), X[ok]])
        coef, *_ = np.linalg.lstsq(A, y_log_vol[ok], rcond=None)
        self.coef = np.asarray(coef, dtype=np.float64)
        return self

    def predict(self, X: F64) -> F64:
        """Forecast log vol (NaN where a regressor is missing)."""
        return np.asarray(self.coef[0] + X @ self.coef[1:], dtype=np.float64)


def qlike(realised_vol: F64, forecast_vol: F64, *, scale: float = 1.0) -> float:
    """Mean QLIKE of variance forecasts `scale * forecast_vol^2` against `realised_vol^2` (finite rows)."""
    s, h = _variances(realised_vol, forecast_vol)
    ratio = s / (scale * h)
    return float(np.mean(ratio - np.log(ratio) - 1.0))


def qlike_scale(realised_vol: F64, forecast_vol: F64) -> float:
    """The variance-level correction minimising QLIKE on these (training) rows: `mean(s / h)`."""
    s, h = _variances(realised_vol, forecast_vol)
    return float(np.mean(s / h))


def _variances(realised_vol: F64, forecast_vol: F64) -> tuple[F64, F64]:
    rv = np.asarray(realised_vol, dtype=np.float64)
    fv = np.asarray(forecast_vol, dtype=np.float64)
    ok = np.isfinite(rv) & np.isfinite(fv) & (rv > 0) & (fv > 0)
    if not ok.any():
        raise ValueError("QLIKE needs at least one row with positive finite realised and forecast vol")
    return rv[ok] ** 2, fv[ok] ** 2


def r2(truth: F64, pred: F64) -> float:
    """Out-of-sample R^2 on finite rows (1 - SSE/SST around the truth's own mean)."""
    ok = np.isfinite(truth) & np.isfinite(pred)
    t, p = truth[ok], pred[ok]
    sst = float(np.sum((t - t.mean()) ** 2))
    return float("nan") if sst == 0.0 else 1.0 - float(np.sum((t - p) ** 2)) / sst


def spearman_ic(truth: F64, pred: F64) -> float:
    """Spearman rank correlation on finite rows."""
    ok = np.isfinite(truth) & np.isfinite(pred)
    rho = spearmanr(truth[ok], pred[ok]).statistic
    return float(rho)


def vol_metrics(realised_vol: F64, forecast_log_vol: F64, *, scale: float = 1.0) -> dict[str, float]:
    """R^2 of log vol, Spearman IC, QLIKE raw and with the training-fitted variance `scale`."""
    log_rv = np.log(np.maximum(realised_vol, _VOL_FLOOR))
    fv = np.exp(forecast_log_vol)
    return {
        "r2_log_vol": r2(log_rv, forecast_log_vol),
        "ic": spearman_ic(log_rv, forecast_log_vol),
        "qlike": qlike(realised_vol, fv),
        "qlike_bc": qlike(realised_vol, fv, scale=scale),
    }
