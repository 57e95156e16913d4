"""Regime calibration: training-time work, run on the training bars, stored in the manifest.

Quantiles of the regime signals (`bot.core.regime.replay_signals`, the serving code's own signals) and the
thresholds derived from them, which `bot.core.regime.RegimeDetector` reads back from
`manifest.json["regime_calibration"]`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from bot.core.bars import Bar
from bot.core.params import RegimeConfig
from bot.core.regime import (
    CALIBRATION_VERSION,
    DEFAULT_IMBALANCE_CRISIS_MIN,
    DEFAULT_SPREAD_CRISIS_BPS,
    replay_signals,
)

#: Quantile levels reported for every signal in the calibration.
REPORT_QUANTILES: Final[tuple[float, ...]] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def _quantiles(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float]:
    qs = np.quantile(values, REPORT_QUANTILES)
    return {f"{q:g}": float(v) for q, v in zip(REPORT_QUANTILES, qs, strict=True)}


def _kmeans_1d(
    x: np.ndarray[Any, np.dtype[np.float64]], centers: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Lloyd's algorithm in one dimension from `centers` (sorted); returns the sorted final centers."""
    c = np.sort(centers)
    for _ in range(200):
        bounds = 0.5 * (c[1:] + c[:-1])
        labels = np.searchsorted(bounds, x)
        new = np.array([x[labels == k].mean() if np.any(labels == k) else c[k] for k in range(len(c))])
        new.sort()
        if np.allclose(new, c, rtol=0.0, atol=1e-12):
            break
        c = new
    return c


def calibrate(bars: Sequence[Bar], cfg: RegimeConfig) -> dict[str, Any]:
    """Quantiles of the regime signals on training bars and the thresholds derived from them.

    Volatility thresholds: four clusters of log volatility (1-D k-means, deterministic), started from the
    quantile levels in `cfg` (`vol_calm_quantile`, `vol_volatile_quantile`, `vol_crisis_quantile` are the
    initial boundaries); each threshold is the geometric midpoint of two adjacent cluster centres, so the
    thresholds follow the data's own volatility levels rather than a fixed share of time. `trend_calm_min`
    is the `trend_calm_quantile` quantile of the trend efficiency. The book thresholds cannot be learned from
    bars: they take `DEFAULT_SPREAD_CRISIS_BPS` / `DEFAULT_IMBALANCE_CRISIS_MIN`.

    The result is JSON-serialisable and goes into `manifest.json["regime_calibration"]`:
    `{"version", "method", "windows": {"vol", "trend", "volume"}, "n_bars", "vol_q", "trend_q",
    "volume_q", "vol_centers", "levels": {threshold: the quantile level it fell at, or null},
    "thresholds": {name: value}}`.

    Raises:
        ValueError: fewer warm bars than 10 * the longest window (quantiles would be meaningless).
    """
    sig = replay_signals(bars, cfg)
    need = 10 * max(cfg.vol_window, cfg.trend_window, cfg.volume_window)
    if len(sig) < need:
        raise ValueError(
            f"regime calibration needs at least {need} warm bars, got {len(sig)} of {len(bars)} bars"
        )
    vol = np.fromiter((s.vol for s in sig), dtype=np.float64, count=len(sig))
    eff = np.fromiter((s.efficiency for s in sig), dtype=np.float64, count=len(sig))
    vz = np.fromiter((s.volume_z for s in sig), dtype=np.float64, count=len(sig))
    logv = np.log(np.maximum(vol, 1e-12))
    edges = (0.0, cfg.vol_calm_quantile, cfg.vol_volatile_quantile, cfg.vol_crisis_quantile, 1.0)
    init = np.quantile(logv, [0.5 * (a + b) for a, b in itertools.pairwise(edges)])
    centers = _kmeans_1d(logv, init)
    calm, volatile, crisis = (float(math.exp(0.5 * (a + b))) for a, b in itertools.pairwise(centers))
    thresholds: dict[str, float] = {
        "vol_calm_max": calm,
        "vol_volatile_min": volatile,
        "vol_crisis_min": crisis,
        "trend_calm_min": float(np.quantile(eff, cfg.trend_calm_quantile)),
        "spread_crisis_bps": DEFAULT_SPREAD_CRISIS_BPS,
        "imbalance_crisis_min": DEFAULT_IMBALANCE_CRISIS_MIN,
    }
    levels: dict[str, float | None] = {
        "vol_calm_max": float(np.mean(vol < calm)),
        "vol_volatile_min": float(np.mean(vol < volatile)),
        "vol_crisis_min": float(np.mean(vol < crisis)),
        "trend_calm_min": cfg.trend_calm_quantile,
        "spread_crisis_bps": None,
        "imbalance_crisis_min": None,
    }
    return {
        "version": CALIBRATION_VERSION,
        "method": "kmeans_log_vol",
        "windows": {"vol": cfg.vol_window, "trend": cfg.trend_window, "volume": cfg.volume_window},
        "n_bars": len(sig),
        "vol_q": _quantiles(vol),
        "trend_q": _quantiles(eff),
        "volume_q": _quantiles(vz),
        "vol_centers": [float(math.exp(c)) for c in centers],
        "levels": levels,
        "thresholds": thresholds,
    }
