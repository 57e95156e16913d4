"""Regime calibration: training-time work, run on the training bars, stored in the manifest.

Quantiles of the regime signals (`bot.core.regime.replay_signals`, the serving code's own signals) and the
thresholds derived from them, which `bot.core.regime.RegimeDetector` reads back from
`manifest.json["regime_calibration"]`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from bot.core.bars import Bar
from bot.core.params import RegimeConfig
from bot.core.regime import replay_signals
from bot.core.thresholds import (
    CALIBRATION_VERSION,
    DEFAULT_IMBALANCE_CRISIS_MIN,
    DEFAULT_SPREAD_CRISIS_BPS,
)

F64 = np.ndarray[Any, np.dtype[np.float64]]

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


def _signal_arrays(bars: Sequence[Bar], cfg: RegimeConfig) -> dict[str, F64]:
    sig = replay_signals(bars, cfg)
    return {
        "vol": np.fromiter((s.vol for s in sig), dtype=np.float64, count=len(sig)),
        "vol_rel": np.fromiter((s.vol_rel for s in sig), dtype=np.float64, count=len(sig)),
        "efficiency": np.fromiter((s.efficiency for s in sig), dtype=np.float64, count=len(sig)),
        "volume_z": np.fromiter((s.volume_z for s in sig), dtype=np.float64, count=len(sig)),
    }


def _thresholds(sig: Mapping[str, F64], cfg: RegimeConfig) -> dict[str, Any]:
    """Quantile thresholds of one set of signals, with the training shares they give (no hysteresis)."""
    rel, eff = sig["vol_rel"], sig["efficiency"]
    levels = (cfg.vol_calm_quantile, cfg.vol_volatile_quantile, cfg.vol_crisis_quantile)
    if cfg.calibration == "kmeans":
        logv = np.log(np.maximum(rel, 1e-12))
        edges = (0.0, *levels, 1.0)
        centers = _kmeans_1d(logv, np.quantile(logv, [0.5 * (a + b) for a, b in itertools.pairwise(edges)]))
        calm, volatile, crisis = (math.exp(0.5 * (a + b)) for a, b in itertools.pairwise(centers))
    else:
        calm, volatile, crisis = (float(v) for v in np.quantile(rel, levels))
    trend = float(np.quantile(eff, cfg.trend_calm_quantile))
    thresholds = {
        "vol_calm_max": calm,
        "vol_volatile_min": volatile,
        "vol_crisis_min": crisis,
        "trend_calm_min": trend,
        "spread_crisis_bps": DEFAULT_SPREAD_CRISIS_BPS,
        "imbalance_crisis_min": DEFAULT_IMBALANCE_CRISIS_MIN,
    }
    is_crisis = rel >= crisis
    is_volatile = ~is_crisis & (rel >= volatile)
    is_calm = ~is_crisis & ~is_volatile & (rel <= calm) & (eff >= trend)
    shares = {
        "calm_trend": float(np.mean(is_calm)),
        "normal": float(np.mean(~(is_calm | is_volatile | is_crisis))),
        "volatile": float(np.mean(is_volatile)),
        "crisis": float(np.mean(is_crisis)),
    }
    return {"n_bars": int(rel.shape[0]), "thresholds": thresholds, "shares": shares}


def intended_shares(cfg: RegimeConfig) -> dict[str, float]:
    """The share of bars each regime is meant to get from the configured quantile levels (no hysteresis)."""
    calm = cfg.vol_calm_quantile * (1.0 - cfg.trend_calm_quantile)
    volatile = cfg.vol_crisis_quantile - cfg.vol_volatile_quantile
    crisis = 1.0 - cfg.vol_crisis_quantile
    return {
        "calm_trend": calm,
        "normal": 1.0 - calm - volatile - crisis,
        "volatile": volatile,
        "crisis": crisis,
    }


def calibrate(bars: Sequence[Bar] | Mapping[str, Sequence[Bar]], cfg: RegimeConfig) -> dict[str, Any]:
    """Regime thresholds on training bars: per training symbol, and pooled for every other symbol.

    The volatility signal is `vol_rel`, realised volatility over the symbol's own long-run level
    (`bot.core.regime`), so a threshold means the same on BTC and on a small coin. Its thresholds are the
    `vol_calm_quantile`, `vol_volatile_quantile` and `vol_crisis_quantile` quantiles of `vol_rel` and
    `trend_calm_min` the `trend_calm_quantile` quantile of the trend efficiency, each over one symbol's
    training bars (`per_symbol`) and over all of them together (`thresholds`, used for a symbol the family
    was not trained on). The book thresholds cannot be learned from bars: they take
    `DEFAULT_SPREAD_CRISIS_BPS` / `DEFAULT_IMBALANCE_CRISIS_MIN`.

    Args:
        bars: one symbol's training bars, or `{symbol: bars}` for a pooled family.

    The result is JSON-serialisable and goes into `manifest.json["regime_calibration"]`:
    `{"version", "method", "signal", "windows": {"vol", "trend", "volume", "vol_long_halflife"}, "n_bars",
    "vol_q", "vol_rel_q", "trend_q", "volume_q", "intended_shares", "thresholds", "shares",
    "per_symbol": {symbol: {"n_bars", "thresholds", "shares"}}}` (`shares`: each regime's share of the
    training bars under the thresholds, before hysteresis).

    Raises:
        ValueError: fewer warm bars than 10 * the longest window in a symbol (quantiles would be meaningless).
    """
    by_symbol: Mapping[str, Sequence[Bar]] = (
        bars if isinstance(bars, Mapping) else {(bars[0].symbol if bars else ""): bars}
    )
    need = 10 * max(cfg.vol_window, cfg.trend_window, cfg.volume_window)
    per: dict[str, dict[str, F64]] = {}
    for symbol, series in by_symbol.items():
        sig = _signal_arrays(series, cfg)
        if sig["vol"].shape[0] < need:
            raise ValueError(
                f"regime calibration needs at least {need} warm bars, got {sig['vol'].shape[0]} of "
                f"{len(series)} bars{f' of {symbol}' if symbol else ''}"
            )
        per[symbol] = sig
    pooled = {k: np.concatenate([sig[k] for sig in per.values()]) for k in next(iter(per.values()))}
    main = _thresholds(pooled, cfg)
    return {
        "version": CALIBRATION_VERSION,
        "method": f"{cfg.calibration}_rel_vol",
        "signal": "vol_rel",
        "windows": {
            "vol": cfg.vol_window,
            "trend": cfg.trend_window,
            "volume": cfg.volume_window,
            "vol_long_halflife": cfg.vol_long_halflife_bars,
        },
        "n_bars": main["n_bars"],
        "vol_q": _quantiles(pooled["vol"]),
        "vol_rel_q": _quantiles(pooled["vol_rel"]),
        "trend_q": _quantiles(pooled["efficiency"]),
        "volume_q": _quantiles(pooled["volume_z"]),
        "intended_shares": intended_shares(cfg),
        "thresholds": main["thresholds"],
        "shares": main["shares"],
        "per_symbol": {symbol: _thresholds(sig, cfg) for symbol, sig in per.items() if symbol},
    }
