"""Pure regime detector: incremental signals, calibrated thresholds, hysteresis, and tier routing.

Signals (per confirmed bar, all from exchange data, no clock):

- `vol`: realised volatility, `sqrt(mean(r^2))` of simple close-to-close returns over `vol_window` bars
  (a fraction per bar, like the features' `rv_*`).
- `vol_rel`: `vol` over the symbol's own long-run level, `sqrt` of an exponentially weighted mean of `r^2`
  with half-life `vol_long_halflife_bars` (bias-corrected, so defined from the first return). It is
  self-normalising: 1.0 is the symbol's usual volatility whatever its scale, so one calibration serves a
  symbol the family never saw. Calibration version 2 classifies on it; version 1 (absolute `vol`) still loads.
- `trend`: signed Kaufman efficiency `(c_t - c_{t-n}) / sum |dc|` over `trend_window` bars, in [-1, 1]
  (+-1 = a straight line, 0 = pure chop); `efficiency`, the trend strength used to classify, is the mean of
  `|trend|` over the last `trend_window` bars (one bar's efficiency is too noisy and made calm_trend flap).
- `volume_z`: volume surprise, the z-score of the newest bar's `log1p(volume)` against the last
  `volume_window` bars (informational: reported and logged, not used to classify).
- `spread_bps`, `imbalance`: from the latest `BookTop` seen during the bar, when `use_book` is on.

Regimes, from the calibrated thresholds (`RegimeThresholdValues`; `vol` below is the calibration's volatility
signal, `vol_rel` for version 2):

- `crisis`: `vol >= vol_crisis_min`, or (book on) `spread_bps >= spread_crisis_bps`, or
  (book on) `|imbalance| >= imbalance_crisis_min` while `vol >= vol_volatile_min` (a one-sided book alone
  is common at the top level; it only means crisis in an already volatile market).
- `volatile`: `vol >= vol_volatile_min`.
- `calm_trend`: `vol <= vol_calm_max` and `efficiency >= trend_calm_min`.
- `normal`: everything else, and the fallback while the signals warm up.

Hysteresis: the detector leaves its current regime only when (a) at least `min_dwell_bars` bars have passed
since it entered it - except an escalation *into* crisis, which is immediate because crisis routes to the
most capable tier - and (b) the current regime's own conditions fail even with every threshold relaxed by the
fraction `hysteresis` in its favour (the exit levels), e.g. volatile is kept while `vol >= 0.9 *
vol_volatile_min` and `vol < 1.1 * vol_crisis_min` at `hysteresis = 0.1`.

Calibration (`offline.calibrate.calibrate`, run on the training bars, stored as
`manifest.json["regime_calibration"]`): version 2 holds thresholds per training symbol (`per_symbol`), each
from that symbol's own training bars, and pooled thresholds over every training symbol for any other symbol
(`thresholds`); `RegimeThresholdValues.resolve(..., symbol=)` picks one. The book thresholds cannot be learned
from bars and take the documented defaults unless overridden.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bot.core.bars import Bar, BookTop
from bot.core.errors import ModelError
from bot.core.params import REGIME_NAMES, RegimeConfig
from bot.core.rolling import EwMean, RollingWindow, copy_state

CALIBRATION_VERSION: Final = 2
#: Volatility signal a calibration classifies on, by its `signal` key (version 1 has none: absolute `vol`).
VOL_SIGNALS: Final = ("vol", "vol_rel")
#: Book thresholds used when neither the calibration nor the config sets them.
DEFAULT_SPREAD_CRISIS_BPS: Final = 5.0
DEFAULT_IMBALANCE_CRISIS_MIN: Final = 0.9
FALLBACK_REGIME: Final = "normal"
THRESHOLD_KEYS: Final[tuple[str, ...]] = (
    "vol_calm_max",
    "vol_volatile_min",
    "vol_crisis_min",
    "trend_calm_min",
    "spread_crisis_bps",
    "imbalance_crisis_min",
)


@dataclass(frozen=True, slots=True)
class Signals:
    """Regime signals after one confirmed bar. Book fields are None when no fresh book was seen."""

    vol: float
    efficiency: float
    trend: float
    volume_z: float
    spread_bps: float | None = None
    imbalance: float | None = None
    vol_rel: float = 1.0


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


def resolve_routes(routes: Mapping[str, str] | str, auto: Mapping[str, str] | None) -> dict[str, str]:
    """The regime -> tier map to serve: the config's, or with `routes = "auto"` the family's own (`auto`).

    Raises:
        ModelError: "auto" with a family that chose no routes (made before routes were chosen), or a map
            that leaves a regime without a tier.
    """
    if isinstance(routes, str):
        if routes != "auto":
            raise ModelError(f'[regime] routes: expected a table or "auto", got {routes!r}')
        if not auto:
            raise ModelError(
                '[regime] routes = "auto" needs a family that chose its routes at distillation ($.routes); '
                "this family has none: retrain it (python -m offline distill) or set [regime.routes]"
            )
        routes = auto
    missing = [r for r in REGIME_NAMES if r not in routes]
    if missing:
        raise ModelError(f"regime routes: no tier for regime(s) {missing}")
    return dict(routes)


@dataclass(frozen=True, slots=True)
class RegimeThresholdValues:
    """Resolved thresholds. Volatility is a per-bar fraction; efficiency and imbalance are in [0, 1]."""

    vol_calm_max: float
    vol_volatile_min: float
    vol_crisis_min: float
    trend_calm_min: float
    spread_crisis_bps: float
    imbalance_crisis_min: float
    vol_signal: str = "vol"  # which `Signals` field the volatility thresholds apply to (`VOL_SIGNALS`)
    source: str = "pooled"  # "symbol": the symbol's own calibration; "pooled": every training symbol's

    def level(self, s: Signals) -> float:
        """The volatility signal of `s` these thresholds classify."""
        return s.vol_rel if self.vol_signal == "vol_rel" else s.vol

    @classmethod
    def resolve(
        cls, calibration: Mapping[str, Any], cfg: RegimeConfig, *, symbol: str | None = None
    ) -> RegimeThresholdValues:
        """Calibrated thresholds with `cfg.thresholds` overrides (non-None fields win).

        Args:
            symbol: pick this symbol's own thresholds when the calibration has them (`per_symbol`), else the
                pooled ones (`thresholds`).

        Raises:
            ModelError: a threshold is neither calibrated nor overridden, the calibration was made with other
                windows than `cfg` for a threshold it supplies, or the resulting thresholds are out of order.
        """
        if not isinstance(calibration, Mapping):
            calibration = {}
        raw: Any = calibration.get("thresholds", {})
        source = "pooled"
        per_symbol = calibration.get("per_symbol")
        if symbol is not None and isinstance(per_symbol, Mapping) and symbol in per_symbol:
            entry = per_symbol[symbol]
            raw = entry.get("thresholds") if isinstance(entry, Mapping) else None
            source = "symbol"
        if not isinstance(raw, Mapping):
            raise ModelError(f"regime calibration: expected a 'thresholds' object, got {type(raw).__name__}")
        windows = calibration.get("windows")
        vol_signal = calibration.get("signal", "vol")
        if vol_signal not in VOL_SIGNALS:
            raise ModelError(
                f"regime calibration: signal: expected one of {list(VOL_SIGNALS)}, got {vol_signal!r}"
            )
        overrides = cfg.thresholds
        values: dict[str, float] = {}
        from_calibration: list[str] = []
        for key in THRESHOLD_KEYS:
            override = getattr(overrides, key)
            if override is not None:
                values[key] = float(override)
                continue
            value = raw.get(key)
            if value is None and key == "spread_crisis_bps":
                value = DEFAULT_SPREAD_CRISIS_BPS
            elif value is None and key == "imbalance_crisis_min":
                value = DEFAULT_IMBALANCE_CRISIS_MIN
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ModelError(
                    f"regime calibration: thresholds.{key}: expected a finite number (run "
                    f"bot.core.regime.calibrate or set [regime.thresholds].{key}), got {value!r}"
                )
            values[key] = float(value)
            from_calibration.append(key)
        vol_keys = ("vol_calm_max", "vol_volatile_min", "vol_crisis_min")
        expected = {"vol": cfg.vol_window, "trend": cfg.trend_window}
        uses = {"vol": vol_keys, "trend": ("trend_calm_min",)}
        if vol_signal == "vol_rel":
            expected["vol_long_halflife"] = cfg.vol_long_halflife_bars
            uses["vol_long_halflife"] = vol_keys
        for signal, window in expected.items():
            if not any(k in from_calibration for k in uses[signal]):
                continue
            got = windows.get(signal) if isinstance(windows, Mapping) else None
            if got != window:
                key = "vol_long_halflife_bars" if signal == "vol_long_halflife" else f"{signal}_window"
                raise ModelError(
                    f"regime calibration: calibrated with {key}={got}, config has {window}; "
                    f"recalibrate or override [regime.thresholds] {list(uses[signal])}"
                )
        th = cls(**values, vol_signal=vol_signal, source=source)
        if not 0.0 < th.vol_calm_max < th.vol_volatile_min < th.vol_crisis_min:
            raise ModelError(
                "regime thresholds: expected 0 < vol_calm_max < vol_volatile_min < vol_crisis_min, got "
                f"{th.vol_calm_max:g}, {th.vol_volatile_min:g}, {th.vol_crisis_min:g}"
            )
        return th


@dataclass(frozen=True, slots=True)
class RegimeDecision:
    """The detector's output for one confirmed bar.

    `signals` is None while warming up (then `regime` is the fallback "normal" and `warm` is False);
    `candidate` is what the thresholds alone say, before hysteresis and dwell; `dwell_bars` counts bars in
    `regime` including this one.
    """

    regime: str
    tier: str
    changed: bool
    warm: bool
    candidate: str
    dwell_bars: int
    signals: Signals | None


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
