"""Seeded synthetic market: regime-switching volatility, volume, top of book, and a planted signal.

The embedded default for the demo and the tests. Four regimes follow a sticky Markov chain
(calm_trend, normal, volatile, crisis) with their own volatility, drift, volume and spread. The next
bar's return carries a *planted* nonlinear signal computed from the features of the bars so far:

    r_{t+1} = sigma_{t+1} * (strength * s_t + sqrt(1 - strength^2) * eps),   eps ~ N(0, 1)

where `s_t` is a unit-variance nonlinear function of `bot.core.features` (short-term reversal scaled by
volatility, a candle-shape interaction, and - mostly in volatile and crisis regimes - a longer-horizon
trend term). A model that learns `E[r | x]` exactly reaches test R^2 close to `strength^2`
(`SyntheticMarket.ceiling_r2`); with the default strength 0.4 that is about 0.16.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from bot.core.bars import Bar, BookTop, interval_ms
from bot.core.features import FEATURE_INDEX, FeatureState

REGIMES: Final[tuple[str, ...]] = ("calm_trend", "normal", "volatile", "crisis")

# Per regime: per-bar volatility, drift in sigmas, mean duration in bars, log-volume mean, spread bps.
_SIGMA: Final = {"calm_trend": 0.0007, "normal": 0.0014, "volatile": 0.003, "crisis": 0.007}
_DRIFT: Final = {"calm_trend": 0.25, "normal": 0.0, "volatile": 0.0, "crisis": -0.1}
_DURATION: Final = {"calm_trend": 400.0, "normal": 450.0, "volatile": 220.0, "crisis": 150.0}
_LOG_VOLUME: Final = {"calm_trend": 4.0, "normal": 4.6, "volatile": 5.4, "crisis": 6.3}
_SPREAD_BPS: Final = {"calm_trend": 0.2, "normal": 0.5, "volatile": 1.5, "crisis": 6.0}
# Where a regime goes when it ends (weights).
_NEXT: Final = {
    "calm_trend": {"normal": 0.8, "volatile": 0.2},
    "normal": {"calm_trend": 0.4, "volatile": 0.4, "crisis": 0.2},
    "volatile": {"normal": 0.5, "crisis": 0.4, "calm_trend": 0.1},
    "crisis": {"volatile": 0.7, "normal": 0.3},
}
# Weight of the long-horizon term in the signal, per regime.
_LONG_WEIGHT: Final = {"calm_trend": 0.2, "normal": 0.3, "volatile": 0.8, "crisis": 1.2}

_I_RET1 = FEATURE_INDEX["ret_1"]
_I_RV24 = FEATURE_INDEX["rv_24"]
_I_BODY = FEATURE_INDEX["body"]
_I_CLOSE_POS = FEATURE_INDEX["close_pos"]
_I_EFF = FEATURE_INDEX["efficiency_24"]
_I_VOLRATIO = FEATURE_INDEX["vol_ratio"]
_I_VOLZ = FEATURE_INDEX["volume_z_24"]

DEFAULT_START_MS: Final = 1_735_689_600_000  # 2025-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class SyntheticStep:
    """One generated bar with the ground truth behind it."""

    bar: Bar
    regime: str
    signal: float  # s_t: planted unit-variance signal for the *next* bar's return (0 while warming up)
    book: BookTop  # top of book at the bar's close


class SyntheticMarket:
    """Infinite, seeded stream of `SyntheticStep`s for one symbol.

    Args:
        seed: RNG seed; the same seed gives the same bars.
        symbol: symbol written on the bars.
        interval: Bybit interval string; sets the spacing of `start_ms`.
        start_ms: open time of the first bar (UTC epoch ms).
        start_price: first open.
        strength: planted signal strength in [0, 1); the ceiling R^2 is about strength^2.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        symbol: str = "SYNTHUSDT",
        interval: str = "5",
        start_ms: int = DEFAULT_START_MS,
        start_price: float = 30_000.0,
        strength: float = 0.4,
    ) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"strength must be in [0, 1), got {strength}")
        self.seed = seed
        self.symbol = symbol
        self.interval = interval
        self.start_ms = start_ms
        self.start_price = start_price
        self.strength = strength

    @property
    def ceiling_r2(self) -> float:
        """R^2 of the true conditional mean (the best any model can do, up to sampling)."""
        return self.strength**2

    def __iter__(self) -> Iterator[SyntheticStep]:
        return self.stream()

    def stream(self) -> Iterator[SyntheticStep]:
        """Yield bars forever (deterministic for the seed)."""
        rng = random.Random(self.seed)
        gauss = rng.gauss
        step_ms = interval_ms(self.interval)
        state = FeatureState(interval_ms=step_ms)
        noise_w = math.sqrt(1.0 - self.strength**2)
        regime = "normal"
        price = self.start_price
        signal = 0.0
        mean_ema = 0.0  # running mean and variance of the raw signal, to keep s_t centred at unit variance
        var_ema = 1.0
        trend_sign = 1.0
        start_ms = self.start_ms
        while True:
            if rng.random() < 1.0 / _DURATION[regime]:
                nxt = _NEXT[regime]
                regime = rng.choices(list(nxt), weights=list(nxt.values()))[0]
                trend_sign = 1.0 if rng.random() < 0.5 else -1.0
            sigma = _SIGMA[regime]
            z = self.strength * signal + noise_w * gauss(0.0, 1.0) + trend_sign * _DRIFT[regime] * 0.1
            ret = sigma * z
            o = price
            c = o * math.exp(ret)
            wick = sigma * 0.6
            h = max(o, c) * (1.0 + abs(gauss(0.0, wick)))
            lo = min(o, c) * (1.0 - abs(gauss(0.0, wick)))
            vol = math.exp(_LOG_VOLUME[regime] + 0.35 * abs(z) + gauss(0.0, 0.4))
            bar = Bar(
                symbol=self.symbol,
                start_ms=start_ms,
                open=round(o, 2),
                high=round(h, 2),
                low=round(lo, 2),
                close=round(c, 2),
                volume=round(vol, 3),
                turnover=round(vol * c, 4),
                source="synthetic",
            )
            price = bar.close
            x = state.update(bar)
            if x is None:
                raw = 0.0
            else:
                rv = x[_I_RV24]
                scaled = x[_I_RET1] / rv if rv > 0.0 else 0.0
                short = -math.tanh(1.5 * scaled)  # reversal, saturating
                shape = x[_I_BODY] * x[_I_CLOSE_POS] - 0.3 * math.tanh(x[_I_VOLZ]) * x[_I_BODY]
                long = x[_I_EFF] * (1.0 if x[_I_VOLRATIO] > 0.0 else -0.5)
                raw = 0.9 * short + 0.6 * shape + _LONG_WEIGHT[regime] * long
                mean_ema += 0.002 * (raw - mean_ema)
                var_ema += 0.002 * ((raw - mean_ema) ** 2 - var_ema)
            signal = (raw - mean_ema) / math.sqrt(var_ema) if x is not None and var_ema > 1e-12 else 0.0
            spread = _SPREAD_BPS[regime] * (1.0 + 0.3 * abs(gauss(0.0, 1.0)))
            half = c * spread * 0.5e-4
            imbalance = max(-0.95, min(0.95, 0.25 * signal + gauss(0.0, 0.3)))
            depth = math.exp(gauss(1.0, 0.3))
            book = BookTop(
                symbol=self.symbol,
                ts_ms=start_ms + step_ms - 1,
                bid_px=round(c - half, 2),
                bid_sz=round(depth * (1.0 + imbalance), 3),
                ask_px=round(c + half, 2),
                ask_sz=round(depth * (1.0 - imbalance), 3),
            )
            yield SyntheticStep(bar=bar, regime=regime, signal=signal, book=book)
            start_ms += step_ms

    def generate(self, n_bars: int) -> list[SyntheticStep]:
        """The first `n_bars` steps of the stream."""
        out: list[SyntheticStep] = []
        for step in self.stream():
            if len(out) >= n_bars:
                break
            out.append(step)
        return out
