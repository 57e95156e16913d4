"""Regime thresholds and routes: the calibrated thresholds a detector classifies with
(`RegimeThresholdValues.resolve`), the regime -> tier map it serves (`resolve_routes`), the calibration's
constants, and `Signals`, the per-bar signals the thresholds apply to (`bot.core.regime` computes them).

Calibration (`offline.calibrate.calibrate`, run on the training bars, stored as
`manifest.json["regime_calibration"]`): version 2 holds thresholds per training symbol (`per_symbol`), each
from that symbol's own training bars, and pooled thresholds over every training symbol for any other symbol
(`thresholds`); `RegimeThresholdValues.resolve(..., symbol=)` picks one. The book thresholds cannot be learned
from bars and take the documented defaults unless overridden.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bot.core.errors import ModelError
from bot.core.params import REGIME_NAMES, RegimeConfig

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
