"""Slow oracle of the regime kernel: the former pure-Python `RegimeSignals` / `RegimeDetector` of
bot/core/regime.py, kept verbatim (per-bar logic on deques and running sums) for the parity tests
(tests/test_kernels_regime.py). bot/ never imports it: `bot.core.kernels.regime` is the implementation.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from oracle_rolling import EwMean, RollingWindow, copy_state

from bot.core.bars import Bar, BookTop
from bot.core.params import RegimeConfig
from bot.core.regime import RegimeDecision
from bot.core.thresholds import (
    FALLBACK_REGIME,
    RegimeThresholdValues,
    Signals,
    resolve_routes,
)


class RegimeSignals:
    """Incremental regime signals for one symbol.

    Args:
        cfg: windows and `use_book`.
        interval_ms: expected bar spacing; a different spacing is a gap and restarts the warm-up.
            None takes bars as contiguous.
    """

    def __init__(self, cfg: RegimeConfig, *, interval_ms: int | None = None) -> None:
        self.cfg = cfg
        self.interval_ms = interval_ms
        self.last_start_ms: int | None = None
        self._book: BookTop | None = None
        self._reset()

    def _reset(self) -> None:
        cfg = self.cfg
        self._prev_close: float | None = None
        self._r2 = RollingWindow(cfg.vol_window)
        self._absdc = RollingWindow(cfg.trend_window)
        self._closes: deque[float] = deque(maxlen=cfg.trend_window + 1)
        self._lvol = RollingWindow(cfg.volume_window)
        self._eff = RollingWindow(cfg.trend_window)
        self._r2_long = EwMean(cfg.vol_long_halflife_bars)

    def copy(self) -> RegimeSignals:
        """An independent copy of the state (windows copied, config shared)."""
        return copy_state(self)

    @property
    def warm(self) -> bool:
        """True once every window is full (the last `update` returned signals)."""
        return self._r2.full and self._eff.full and self._lvol.full

    def update_book(self, book: BookTop) -> None:
        """Remember the latest top of book (ignored unless `cfg.use_book`)."""
        if self.cfg.use_book:
            self._book = book

    def update(self, bar: Bar) -> Signals | None:
        """Absorb a confirmed bar; return its signals, or None while warming up.

        Raises:
            ValueError: the bar is not newer than the previous one.
        """
        if self.last_start_ms is not None:
            if bar.start_ms <= self.last_start_ms:
                raise ValueError(
                    f"{bar.symbol}: expected bars in time order, got start_ms={bar.start_ms} "
                    f"after {self.last_start_ms}"
                )
            if self.interval_ms is not None and bar.start_ms - self.last_start_ms != self.interval_ms:
                self._reset()
        self.last_start_ms = bar.start_ms
        c = bar.close
        prev = self._prev_close
        self._prev_close = c
        self._closes.append(c)
        self._lvol.push(math.log1p(bar.volume))
        if prev is not None:
            r = c / prev - 1.0 if prev > 0.0 else 0.0
            self._r2.push(r * r)
            self._r2_long.push(r * r)
            self._absdc.push(abs(c - prev))
        if not self._absdc.full:
            return None
        path = self._absdc.s
        trend = (c - self._closes[0]) / path if path > 0.0 else 0.0
        self._eff.push(abs(trend))
        if not self.warm:
            return None
        ms = self._r2.s / self._r2.n
        vol = math.sqrt(ms) if ms > 0.0 else 0.0
        long_ms = self._r2_long.mean()
        vol_rel = math.sqrt(ms / long_ms) if long_ms > 0.0 else 1.0
        lv = self._lvol
        mean = lv.s / lv.n
        var = lv.ss / lv.n - mean * mean
        volume_z = (lv.buf[-1] - mean) / math.sqrt(var) if var > 1e-24 else 0.0
        spread_bps: float | None = None
        imbalance: float | None = None
        book = self._book
        # a book is fresh for this bar when the exchange stamped it at or after the bar's open
        if book is not None and book.symbol == bar.symbol and book.ts_ms >= bar.start_ms:
            spread_bps = book.spread_bps
            imbalance = book.imbalance
        return Signals(
            vol=vol,
            efficiency=self._eff.s / self._eff.n,
            trend=trend,
            volume_z=volume_z,
            spread_bps=spread_bps,
            imbalance=imbalance,
            vol_rel=vol_rel,
        )


def replay_signals(
    bars: Sequence[Bar], cfg: RegimeConfig, *, interval_ms: int | None = None
) -> list[Signals]:
    """Signals of every warm bar of `bars` (bar-only: no book)."""
    state = RegimeSignals(cfg, interval_ms=interval_ms)
    out: list[Signals] = []
    for bar in bars:
        s = state.update(bar)
        if s is not None:
            out.append(s)
    return out


class RegimeDetector:
    """Regime state machine for one symbol: `update(bar) -> RegimeDecision`.

    Args:
        calibration: `manifest.json["regime_calibration"]` (from `calibrate`).
        cfg: windows, hysteresis, dwell, routes and threshold overrides.
        interval_ms: expected bar spacing (a gap restarts the signal warm-up; the regime is kept).
        symbol: the symbol decided, for its own calibration (None, or not calibrated: the pooled one).
        routes: the regime -> tier map (`resolve_routes`); None takes `cfg.routes`, which must then be a
            table.
    """

    def __init__(
        self,
        calibration: Mapping[str, Any],
        cfg: RegimeConfig,
        *,
        interval_ms: int | None = None,
        symbol: str | None = None,
        routes: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.thresholds = RegimeThresholdValues.resolve(calibration, cfg, symbol=symbol)
        self.routes: dict[str, str] = resolve_routes(cfg.routes if routes is None else routes, None)
        self.signals = RegimeSignals(cfg, interval_ms=interval_ms)
        self.regime = FALLBACK_REGIME
        # the fallback imposes no dwell: the first warm bar may switch at once
        self.dwell_bars = cfg.min_dwell_bars

    def copy(self) -> RegimeDetector:
        """An independent copy of the detector state (thresholds and config shared)."""
        new = copy.copy(self)
        new.signals = self.signals.copy()
        return new

    def route(self, regime: str) -> str:
        """Tier name configured for `regime`."""
        return self.routes[regime]

    def update_book(self, book: BookTop) -> None:
        """Feed a top-of-book update (used only when `cfg.use_book`)."""
        self.signals.update_book(book)

    def classify(self, s: Signals) -> str:
        """The regime the thresholds alone assign to `s` (no hysteresis)."""
        th = self.thresholds
        v = th.level(s)
        if self._crisis(s, 1.0):
            return "crisis"
        if v >= th.vol_volatile_min:
            return "volatile"
        if v <= th.vol_calm_max and s.efficiency >= th.trend_calm_min:
            return "calm_trend"
        return "normal"

    def _crisis(self, s: Signals, relax: float) -> bool:
        th = self.thresholds
        v = th.level(s)
        if v >= th.vol_crisis_min * relax:
            return True
        if s.spread_bps is not None and s.spread_bps >= th.spread_crisis_bps * relax:
            return True
        return (
            s.imbalance is not None
            and abs(s.imbalance) >= th.imbalance_crisis_min * relax
            and v >= th.vol_volatile_min * relax
        )

    def holds(self, regime: str, s: Signals) -> bool:
        """Whether `regime`'s conditions still hold at its exit levels (thresholds relaxed by hysteresis)."""
        th = self.thresholds
        v = th.level(s)
        lo = 1.0 - self.cfg.hysteresis
        hi = 1.0 + self.cfg.hysteresis
        if regime == "crisis":
            return self._crisis(s, lo)
        if regime == "volatile":
            return v >= th.vol_volatile_min * lo and not self._crisis(s, hi)
        if regime == "calm_trend":
            return v <= th.vol_calm_max * hi and s.efficiency >= th.trend_calm_min * lo
        # normal: neither calm nor volatile nor crisis even when those are made harder to enter
        calm = v <= th.vol_calm_max * lo and s.efficiency >= th.trend_calm_min * hi
        return not calm and v < th.vol_volatile_min * hi and not self._crisis(s, hi)

    def update(self, bar: Bar) -> RegimeDecision:
        """Absorb a confirmed bar and decide its regime."""
        return self.decide(self.signals.update(bar))

    def decide(self, s: Signals | None) -> RegimeDecision:
        """Advance the state machine by one bar given its signals (None = still warming up)."""
        if s is None:
            self.dwell_bars += 1
            regime = self.regime
            return RegimeDecision(regime, self.routes[regime], False, False, regime, self.dwell_bars, None)
        candidate = self.classify(s)
        current = self.regime
        switch = False
        if candidate != current:
            dwell_ok = self.dwell_bars >= self.cfg.min_dwell_bars or candidate == "crisis"
            switch = dwell_ok and not self.holds(current, s)
        if switch:
            self.regime = candidate
            self.dwell_bars = 1
        else:
            self.dwell_bars += 1
        regime = self.regime
        return RegimeDecision(regime, self.routes[regime], switch, True, candidate, self.dwell_bars, s)
