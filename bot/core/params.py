"""Parameters of the per-bar pipeline: plain frozen structs the core receives (bot/config.py decodes them
as the `[regime]` and `[paper]` sections of the one config schema; constraints here are that schema's)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
PosInt = Annotated[int, Meta(ge=1)]

REGIME_NAMES: tuple[str, ...] = ("calm_trend", "normal", "volatile", "crisis")


class _Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every parameter struct."""


class RegimeThresholds(_Params, frozen=True):
    """Optional overrides of the manifest's calibrated thresholds (None = use the manifest's)."""

    vol_calm_max: PosFloat | None = None
    vol_volatile_min: PosFloat | None = None
    vol_crisis_min: PosFloat | None = None
    trend_calm_min: Fraction | None = None
    spread_crisis_bps: PosFloat | None = None
    imbalance_crisis_min: Fraction | None = None


#: The fixed table this project shipped before routes were chosen by evidence (`routes = "auto"`, the
#: default): the smallest tier for calm markets, the teacher for crises.
GUESSED_ROUTES: dict[str, str] = {
    "calm_trend": "edge",
    "normal": "production",
    "volatile": "staging",
    "crisis": "research",
}


class RegimeConfig(_Params, frozen=True):
    vol_window: Annotated[int, Meta(ge=2, le=1000)] = 24
    trend_window: Annotated[int, Meta(ge=2, le=1000)] = 24
    volume_window: Annotated[int, Meta(ge=2, le=1000)] = 48
    # half-life (bars) of the long-run volatility level `vol` is divided by (the self-normalising signal)
    vol_long_halflife_bars: Annotated[int, Meta(ge=2, le=100_000)] = 576
    use_book: bool = True
    hysteresis: Annotated[float, Meta(ge=0, lt=1)] = 0.1
    min_dwell_bars: PosInt = 6
    # "quantile": volatility thresholds at the quantile levels below (each regime gets its intended share of
    # the training bars); "kmeans": a 1-D k-means of log vol_rel started at those levels (natural clusters)
    calibration: Literal["quantile", "kmeans"] = "quantile"
    vol_calm_quantile: Annotated[float, Meta(gt=0, lt=1)] = 0.25
    vol_volatile_quantile: Annotated[float, Meta(gt=0, lt=1)] = 0.7
    vol_crisis_quantile: Annotated[float, Meta(gt=0, lt=1)] = 0.93
    trend_calm_quantile: Annotated[float, Meta(ge=0, lt=1)] = 0.1
    # regime -> tier, or "auto": the routes the family chose by evidence at distillation (manifest `routes`)
    routes: dict[str, str] | Literal["auto"] = "auto"
    thresholds: RegimeThresholds = msgspec.field(default_factory=RegimeThresholds)


class PaperConfig(_Params, frozen=True):
    notional_usd: PosFloat = 10_000.0
    max_units: Annotated[int, Meta(ge=1, le=100)] = 1
    long_threshold_bps: NonNegFloat = 10.0
    short_threshold_bps: NonNegFloat = 10.0
    fill_price: Literal["close", "mid"] = "close"
    slippage_bps: NonNegFloat = 1.0
    taker_fee_bps: NonNegFloat = 5.5
    maker_fee_bps: NonNegFloat = 2.0
    order_type: Literal["taker", "maker"] = "taker"
    # "fixed": signal * max_units. "vol_target": signal * min(target_vol_bps / forecast vol, max_units)
    # units (fractional), flat when the forecast exceeds max_vol_bps; needs a family with a vol head.
    sizing: Literal["fixed", "vol_target"] = "fixed"
    target_vol_bps: PosFloat = 5.0  # why 5: config.toml's comment (docs/results/study_routing.md)
    max_vol_bps: PosFloat | None = None
    # vol_target: keep a same-sign position while the target is within this fraction of it (no churn).
    rebalance_band: Annotated[float, Meta(ge=0, le=1)] = 0.1
