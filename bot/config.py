"""The one config schema: typed, frozen structs decoded from TOML, unknown keys rejected.

Defaults live here and only here; `config.toml` at the repository root documents every key and a test
checks it decodes to exactly these defaults. Errors name the file and the key path:

    ConfigError("config.toml: Expected `int` >= 1, got 0 - at `$.regime.min_dwell_bars`")
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bot.bars import INTERVAL_MS
from bot.errors import ConfigError
from bot.features import FEATURE_SETS

PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Symbol = Annotated[str, Meta(pattern=r"^[A-Z0-9]{2,30}$")]
Url = Annotated[str, Meta(pattern=r"^(https?|wss?)://\S+$")]

REGIME_NAMES: tuple[str, ...] = ("calm_trend", "normal", "volatile", "crisis")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section."""


class MarketConfig(_Section):
    symbols: Annotated[list[Symbol], Meta(min_length=1, max_length=50)] = msgspec.field(
        default_factory=lambda: ["BTCUSDT"]
    )
    interval: str = "5"
    category: Literal["linear"] = "linear"


class ExchangeConfig(_Section):
    rest_url: Url = "https://api.bybit.com"
    ws_url: Url = "wss://stream.bybit.com/v5/public/linear"
    rest_timeout_s: PosFloat = 10.0
    rest_max_retries: NonNegInt = 6
    rest_backoff_initial_s: PosFloat = 0.5
    rest_backoff_max_s: PosFloat = 30.0
    ping_interval_s: PosFloat = 20.0
    stale_feed_s: PosFloat = 90.0
    bar_overdue_s: PosFloat = 30.0
    reconnect_backoff_initial_s: PosFloat = 0.5
    reconnect_backoff_max_s: PosFloat = 30.0
    healthy_reset_s: PosFloat = 60.0
    book_stream: Literal["none", "orderbook", "tickers"] = "orderbook"
    backfill_bars: Annotated[int, Meta(ge=60, le=10_000)] = 300


class TierConfig(_Section):
    layers: Annotated[int, Meta(ge=1, le=16)]
    width: Annotated[int, Meta(ge=1, le=4096)]
    features: str = "research"


def _default_tiers() -> dict[str, TierConfig]:
    return {
        "research": TierConfig(layers=8, width=256, features="research"),
        "staging": TierConfig(layers=6, width=192, features="research"),
        "production": TierConfig(layers=4, width=128, features="research"),
        "edge": TierConfig(layers=2, width=64, features="research"),
    }


class DistillConfig(_Section):
    horizon_bars: Annotated[int, Meta(ge=1, le=288)] = 1
    train_frac: Annotated[float, Meta(gt=0, lt=1)] = 0.6
    val_frac: Annotated[float, Meta(gt=0, lt=1)] = 0.2
    embargo_bars: NonNegInt = 48
    alpha_max: Fraction = 0.8
    t_max: PosFloat = 4.0
    gamma: NonNegFloat = 1.0
    epochs: PosInt = 40
    patience: PosInt = 8
    batch_size: PosInt = 256
    learning_rate: PosFloat = 1e-3
    l2: NonNegFloat = 1e-4
    teacher_folds: Annotated[int, Meta(ge=0, le=10)] = 0
    transfer_multiplier: NonNegFloat = 1.0
    transfer_jitter: NonNegFloat = 0.1
    seed: NonNegInt = 0
    onnx_atol: PosFloat = 1e-4
    synthetic_bars: Annotated[int, Meta(ge=1000)] = 60_000
    synthetic_seed: NonNegInt = 7
    quick_bars: Annotated[int, Meta(ge=1000)] = 20_000
    quick_epochs: PosInt = 8


class RegimeThresholds(_Section):
    """Optional overrides of the manifest's calibrated thresholds (None = use the manifest's)."""

    vol_calm_max: PosFloat | None = None
    vol_volatile_min: PosFloat | None = None
    vol_crisis_min: PosFloat | None = None
    trend_calm_min: Fraction | None = None
    spread_crisis_bps: PosFloat | None = None
    imbalance_crisis_min: Fraction | None = None


def _default_routes() -> dict[str, str]:
    return {"calm_trend": "edge", "normal": "production", "volatile": "staging", "crisis": "research"}


class RegimeConfig(_Section):
    vol_window: Annotated[int, Meta(ge=2, le=1000)] = 24
    trend_window: Annotated[int, Meta(ge=2, le=1000)] = 24
    volume_window: Annotated[int, Meta(ge=2, le=1000)] = 48
    use_book: bool = True
    hysteresis: Annotated[float, Meta(ge=0, lt=1)] = 0.1
    min_dwell_bars: PosInt = 6
    routes: dict[str, str] = msgspec.field(default_factory=_default_routes)
    thresholds: RegimeThresholds = msgspec.field(default_factory=RegimeThresholds)


class PaperConfig(_Section):
    notional_usd: PosFloat = 10_000.0
    max_units: Annotated[int, Meta(ge=1, le=100)] = 1
    long_threshold_bps: NonNegFloat = 2.0
    short_threshold_bps: NonNegFloat = 2.0
    fill_price: Literal["close", "mid"] = "close"
    slippage_bps: NonNegFloat = 1.0
    taker_fee_bps: NonNegFloat = 5.5
    maker_fee_bps: NonNegFloat = 2.0
    order_type: Literal["taker", "maker"] = "taker"


class LedgerConfig(_Section):
    path: str = "state/ledger.sqlite"


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    decisions_path: str = "logs/decisions.jsonl"


class ModelsConfig(_Section):
    dir: str = "models"
    warmup: bool = True


class ServiceConfig(_Section):
    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9108
    shutdown_timeout_s: PosFloat = 20.0


class Config(_Section):
    market: MarketConfig = msgspec.field(default_factory=MarketConfig)
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    tiers: dict[str, TierConfig] = msgspec.field(default_factory=_default_tiers)
    distill: DistillConfig = msgspec.field(default_factory=DistillConfig)
    regime: RegimeConfig = msgspec.field(default_factory=RegimeConfig)
    paper: PaperConfig = msgspec.field(default_factory=PaperConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    service: ServiceConfig = msgspec.field(default_factory=ServiceConfig)


def _cross_check(cfg: Config) -> list[str]:
    """Checks spanning several keys; returns `(key path: message)` strings."""
    errors: list[str] = []
    if cfg.market.interval not in INTERVAL_MS:
        errors.append(f"$.market.interval: expected one of {sorted(INTERVAL_MS)}, got {cfg.market.interval!r}")
    if len(set(cfg.market.symbols)) != len(cfg.market.symbols):
        errors.append(f"$.market.symbols: duplicate symbol in {cfg.market.symbols}")
    if not cfg.tiers:
        errors.append("$.tiers: at least one tier is required")
    params_prev: int | None = None
    for name, tier in cfg.tiers.items():
        if tier.features not in FEATURE_SETS:
            errors.append(f"$.tiers.{name}.features: expected one of {sorted(FEATURE_SETS)}, got {tier.features!r}")
        size = tier.layers * tier.width * tier.width
        if params_prev is not None and size >= params_prev:
            errors.append(f"$.tiers.{name}: each tier must be smaller than the one before (layers x width^2)")
        params_prev = size
    if cfg.distill.train_frac + cfg.distill.val_frac >= 1.0:
        errors.append("$.distill.val_frac: train_frac + val_frac must be < 1 to leave a test split")
    for regime, tier_name in cfg.regime.routes.items():
        if regime not in REGIME_NAMES:
            errors.append(f"$.regime.routes.{regime}: unknown regime; expected one of {list(REGIME_NAMES)}")
        elif tier_name not in cfg.tiers:
            errors.append(f"$.regime.routes.{regime}: names tier {tier_name!r}, not in [tiers] {list(cfg.tiers)}")
    missing = [r for r in REGIME_NAMES if r not in cfg.regime.routes]
    if missing:
        errors.append(f"$.regime.routes: no tier for regime(s) {missing}")
    th = cfg.regime.thresholds
    if th.vol_volatile_min is not None and th.vol_crisis_min is not None and th.vol_crisis_min <= th.vol_volatile_min:
        errors.append("$.regime.thresholds.vol_crisis_min: must be greater than vol_volatile_min")
    if th.vol_calm_max is not None and th.vol_volatile_min is not None and th.vol_calm_max >= th.vol_volatile_min:
        errors.append("$.regime.thresholds.vol_calm_max: must be less than vol_volatile_min")
    if cfg.exchange.reconnect_backoff_max_s < cfg.exchange.reconnect_backoff_initial_s:
        errors.append("$.exchange.reconnect_backoff_max_s: must be >= reconnect_backoff_initial_s")
    if cfg.exchange.rest_backoff_max_s < cfg.exchange.rest_backoff_initial_s:
        errors.append("$.exchange.rest_backoff_max_s: must be >= rest_backoff_initial_s")
    if cfg.exchange.stale_feed_s <= cfg.exchange.ping_interval_s:
        errors.append("$.exchange.stale_feed_s: must be greater than ping_interval_s")
    return errors


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate a decoded TOML document; raise ConfigError naming `source` and the key path."""
    try:
        cfg = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    errors = _cross_check(cfg)
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file. Nothing is opened or written besides reading `path`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(data, source=str(p))
