"""The one config schema: typed, frozen structs decoded from TOML, unknown keys rejected.

Defaults live here and only here; `config.toml` at the repository root documents every key and a test
checks it decodes to exactly these defaults. Errors name the file, the key path, what was expected and
the value that came:

    ConfigError("config.toml: $.regime.min_dwell_bars: expected int >= 1, got 0")
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# the edge's own sections, part of this schema (and importable from here, as every section is)
from bot.bybit.settings import MAX_SYMBOLS as MAX_SYMBOLS
from bot.bybit.settings import ExchangeConfig as ExchangeConfig
from bot.bybit.settings import MarketConfig as MarketConfig
from bot.bybit.settings import NonNegInt, Section
from bot.bybit.settings import Symbol as Symbol
from bot.bybit.settings import SymbolSelection as SymbolSelection
from bot.config_errors import describe, non_finite
from bot.core.bars import INTERVAL_MS, interval_ms
from bot.core.engine import EngineParams
from bot.core.errors import ConfigError
from bot.core.features import FEATURE_SETS
from bot.core.params import (
    REGIME_NAMES,
    Fraction,
    NonNegFloat,
    PaperConfig,
    PosFloat,
    PosInt,
    RegimeConfig,
)

Port = Annotated[int, Meta(ge=0, le=65535)]

AlphaSchedule = Literal["linear", "constant"]


_Section = Section


class TierConfig(_Section, frozen=True):
    layers: Annotated[int, Meta(ge=1, le=16)]
    width: Annotated[int, Meta(ge=1, le=4096)]
    features: str = "research"


def _default_tiers() -> dict[str, TierConfig]:
    return {
        "research": TierConfig(layers=3, width=256, features="research"),
        "staging": TierConfig(layers=3, width=128, features="price_volume_vol"),
        "production": TierConfig(layers=2, width=64, features="vol_core"),
        "edge": TierConfig(layers=2, width=32, features="edge_vol"),
    }


class DistillConfig(_Section, frozen=True):
    horizon_bars: Annotated[int, Meta(ge=1, le=288)] = 1
    # Volatility head: log forward realised vol (RMS of the next vol_horizon_bars one-bar log returns).
    vol_head: bool = True
    vol_horizon_bars: Annotated[int, Meta(ge=2, le=288)] = 12
    train_frac: Annotated[float, Meta(gt=0, lt=1)] = 0.6
    val_frac: Annotated[float, Meta(gt=0, lt=1)] = 0.2
    embargo_bars: NonNegInt = 48
    alpha_max: Fraction = 0.8
    alpha_schedule: AlphaSchedule = "linear"
    t_max: PosFloat = 4.0
    gamma: NonNegFloat = 1.0
    epochs: PosInt = 40
    patience: PosInt = 8
    batch_size: PosInt = 256
    learning_rate: PosFloat = 1e-3
    l2: NonNegFloat = 1e-4
    # The teacher (first tier) only: L2 candidates, the one with the best validation MSE is kept (empty = l2).
    teacher_l2: list[NonNegFloat] = msgspec.field(default_factory=lambda: [1e-4, 1.0, 10.0])
    # ... and its Adam step size and batch (None = learning_rate / batch_size).
    teacher_learning_rate: PosFloat | None = 3e-4
    teacher_batch_size: PosInt | None = 1024
    teacher_folds: Annotated[int, Meta(ge=0, le=10)] = 2
    heldout_frac: Annotated[float, Meta(gt=0, lt=1)] = 0.5
    transfer_multiplier: NonNegFloat = 1.0
    transfer_jitter: NonNegFloat = 0.1
    seed: NonNegInt = 0
    onnx_atol: PosFloat = 1e-6
    # routes chosen by evidence (offline/routes.py): per regime the cheapest tier whose validation vol QLIKE
    # is at most (1 + route_qlike_tolerance) x the teacher's and return IC at most route_ic_tolerance below
    route_qlike_tolerance: NonNegFloat = 0.01
    route_ic_tolerance: NonNegFloat = 0.02
    synthetic_bars: Annotated[int, Meta(ge=1000)] = 60_000
    synthetic_seed: NonNegInt = 7
    quick_bars: Annotated[int, Meta(ge=1000)] = 20_000
    quick_epochs: PosInt = 8


class LedgerConfig(_Section, frozen=True):
    path: str = "state/ledger.sqlite"
    synchronous: Literal["full", "normal"] = "full"


class LoggingConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    decisions_path: str = "logs/decisions.jsonl"
    # Rotate the decision log before it passes rotate_mib MiB (0 = never): it becomes <path>.1, older ones
    # shift up to <path>.<keep_files> and the oldest is dropped; a line is never split across files.
    rotate_mib: Annotated[float, Meta(ge=0, le=1_000_000)] = 100.0
    keep_files: Annotated[int, Meta(ge=1, le=1000)] = 10


class ModelsConfig(_Section, frozen=True):
    dir: str = "models"
    warmup: bool = True
    # "match": every [market] symbol must be the one the family was trained on (manifest provenance);
    # "any": run the family on any symbol.
    symbols: Literal["match", "any"] = "match"
    # Hot reload: SIGHUP (systemctl reload) or a change of <dir>/current, checked every reload_poll_s
    # (0 = on SIGHUP only), loads, verifies and warms the new family and switches at a bar boundary.
    reload_poll_s: Annotated[float, Meta(ge=0, le=3600)] = 5.0
    # Serve each small tier by the compiled forward pass (bot.models.forward) where it proves equal to
    # onnxruntime at load; false keeps onnxruntime for every tier.
    compiled_forward: bool = True


class ServiceConfig(_Section, frozen=True):
    """systemd integration, Prometheus metrics and /healthz (see docs/service.md)."""

    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9108
    # /metrics and /status show positions and PnL: a non-loopback metrics_host is refused unless this is
    # true (then start-up logs a warning).
    expose_remote: bool = False
    shutdown_timeout_s: PosFloat = 20.0
    # Bars are fresh while the last confirmed bar arrived less than one bar length + this ago
    # (time.monotonic). Fresh gates the sd_notify WATCHDOG=1 pings and /healthz.
    watchdog_grace_s: Annotated[float, Meta(gt=0, le=86_400)] = 120.0
    # Closed bars the exchange has that are not decided yet: above warn, log + stop WATCHDOG=1 + 503;
    # this many more closed with not one decided: exit 4 (stalled) so systemd restarts the service.
    decision_lag_warn_bars: PosInt = 2
    decision_lag_restart_bars: PosInt = 6
    # ... and at least this long (monotonic) without a decision: a floor for accelerated replays.
    decision_stall_min_s: Annotated[float, Meta(ge=0, le=86_400)] = 60.0
    # Feature drift (bot.core.drift): PSI of each feature over the last drift_window_bars decided bars per
    # symbol against the manifest's training bins; from drift_psi_warn (0.1 = moderate, 0.25 = significant
    # shift), or the feature's training baseline for this window when higher, a (symbol, feature) logs
    # `drift` once and `drift_recovered` once back below 0.8x. 100 bars at least (bot.core.drift.MIN_WINDOW).
    drift_psi_warn: Annotated[float, Meta(gt=0, le=10)] = 0.25
    drift_window_bars: Annotated[int, Meta(ge=100, le=20_000)] = 288


class RetrainConfig(_Section, frozen=True):
    """Nightly retrain with champion/challenger: `python -m offline retrain` (docs/service.md)."""

    # Bars fetched over REST per [market] symbol (60_000 5-minute bars ~ 208 days).
    history_bars: Annotated[int, Meta(ge=500, le=2_000_000)] = 60_000
    # The most recent bars of that fetch: the challenger never trains on them; champion and challenger are
    # both scored on them (2016 5-minute bars = one week).
    holdout_bars: Annotated[int, Meta(ge=50, le=500_000)] = 2016
    # Promote only if the routed vol QLIKE (bias-corrected) of the challenger is below the champion's by
    # this fraction (0 = any improvement); without vol heads the routed return IC must exceed it by this.
    min_improvement: Annotated[float, Meta(ge=0, le=1)] = 0.0
    # ... and no tier regresses: its QLIKE at most (1 + qlike_tolerance) x the champion's tier's, its IC at
    # least the champion's tier's IC - ic_tolerance.
    qlike_tolerance: Annotated[float, Meta(ge=0, le=10)] = 0.1
    ic_tolerance: Annotated[float, Meta(ge=0, le=2)] = 0.05
    # retrain-<UTC time>.json summaries of every run (the challenger's report is also in its version dir).
    reports_dir: str = "retrain"
    # After each run (not --dry-run), delete the versions older than the newest keep_versions in the models
    # store; the current version and the one before it are always kept (bot.models.store.prune).
    keep_versions: Annotated[int, Meta(ge=2, le=10_000)] = 14


class Config(_Section, frozen=True):
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
    retrain: RetrainConfig = msgspec.field(default_factory=RetrainConfig)


def _cross_check(cfg: Config) -> list[str]:
    """Checks spanning several keys; returns `(key path: message)` strings."""
    errors = _market_errors(cfg) + _tier_errors(cfg)
    if cfg.distill.train_frac + cfg.distill.val_frac >= 1.0:
        errors.append("$.distill.val_frac: train_frac + val_frac must be < 1 to leave a test split")
    errors.extend(_regime_errors(cfg))
    if cfg.retrain.holdout_bars * 2 > cfg.retrain.history_bars:
        errors.append(
            f"$.retrain.holdout_bars: at most half of history_bars ({cfg.retrain.history_bars}), "
            f"got {cfg.retrain.holdout_bars}; the challenger trains on the rest"
        )
    if cfg.exchange.reconnect_backoff_max_s < cfg.exchange.reconnect_backoff_initial_s:
        errors.append("$.exchange.reconnect_backoff_max_s: must be >= reconnect_backoff_initial_s")
    if cfg.exchange.rest_backoff_max_s < cfg.exchange.rest_backoff_initial_s:
        errors.append("$.exchange.rest_backoff_max_s: must be >= rest_backoff_initial_s")
    if cfg.exchange.stale_feed_s <= cfg.exchange.ping_interval_s:
        errors.append("$.exchange.stale_feed_s: must be greater than ping_interval_s")
    errors.extend(_url_errors(cfg.exchange))
    try:
        ipaddress.ip_address(cfg.service.metrics_host)
    except ValueError:
        host = cfg.service.metrics_host
        errors.append(f"$.service.metrics_host: expected an IP address literal, got {host!r}")
    else:
        errors.extend(_exposure_errors(cfg.service))
    return errors


def _market_errors(cfg: Config) -> list[str]:
    """The `[market]` checks of `_cross_check`: interval, symbol list or selection."""
    errors: list[str] = []
    if cfg.market.interval not in INTERVAL_MS:
        known = sorted(INTERVAL_MS)
        errors.append(f"$.market.interval: expected one of {known}, got {cfg.market.interval!r}")
    selection = cfg.market.selection
    if selection is None:
        listed = cfg.market.symbol_list
        if len(set(listed)) != len(listed):
            errors.append(f"$.market.symbols: duplicate symbol in {listed}")
    elif not selection.all:
        errors.append(
            "$.market.symbols.all: expected true (every Trading USDT perpetual, then filtered), got false; "
            "list the symbols instead"
        )
    elif cfg.models.symbols != "any":
        errors.append(
            "$.market.symbols: a selection runs symbols no family was trained on, so it needs a family "
            f'that runs on any symbol: set [models] symbols = "any" ($.models.symbols is '
            f"{cfg.models.symbols!r}; a pooled family needs it too), or list the symbols"
        )
    return errors


def _tier_errors(cfg: Config) -> list[str]:
    """The `[tiers]` checks of `_cross_check`: feature sets, each tier smaller than the one before."""
    errors: list[str] = []
    if not cfg.tiers:
        errors.append("$.tiers: at least one tier is required")
    params_prev: int | None = None
    for name, tier in cfg.tiers.items():
        if tier.features not in FEATURE_SETS:
            known = sorted(FEATURE_SETS)
            errors.append(f"$.tiers.{name}.features: expected one of {known}, got {tier.features!r}")
        size = tier.layers * tier.width * tier.width
        if params_prev is not None and size >= params_prev:
            errors.append(f"$.tiers.{name}: each tier must be smaller than the one before (layers x width^2)")
        params_prev = size
    return errors


def _regime_errors(cfg: Config) -> list[str]:
    """The `[regime]` checks of `_cross_check`: routes, threshold overrides and quantiles in order."""
    errors: list[str] = []
    routes = cfg.regime.routes
    if not isinstance(routes, str):  # "auto": the family's own routes, checked when it is loaded
        for regime, tier_name in routes.items():
            if regime not in REGIME_NAMES:
                known = list(REGIME_NAMES)
                errors.append(f"$.regime.routes.{regime}: unknown regime; expected one of {known}")
            elif tier_name not in cfg.tiers:
                tiers = list(cfg.tiers)
                errors.append(f"$.regime.routes.{regime}: names tier {tier_name!r}, not in [tiers] {tiers}")
        missing = [r for r in REGIME_NAMES if r not in routes]
        if missing:
            errors.append(f"$.regime.routes: no tier for regime(s) {missing}")
    th = cfg.regime.thresholds
    calm, volatile, crisis = th.vol_calm_max, th.vol_volatile_min, th.vol_crisis_min
    if volatile is not None and crisis is not None and crisis <= volatile:
        errors.append(
            f"$.regime.thresholds.vol_crisis_min: must exceed vol_volatile_min ({volatile}), got {crisis}"
        )
    if calm is not None and volatile is not None and calm >= volatile:
        errors.append(
            f"$.regime.thresholds.vol_calm_max: must be less than vol_volatile_min ({volatile}), got {calm}"
        )
    rq = cfg.regime
    if not rq.vol_calm_quantile < rq.vol_volatile_quantile < rq.vol_crisis_quantile:
        errors.append(
            "$.regime.vol_volatile_quantile: expected vol_calm_quantile < vol_volatile_quantile < "
            f"vol_crisis_quantile, got {rq.vol_calm_quantile}, {rq.vol_volatile_quantile}, "
            f"{rq.vol_crisis_quantile}"
        )
    return errors


def _exposure_errors(service: ServiceConfig) -> list[str]:
    """A non-loopback `metrics_host` needs `expose_remote = true` (the pages show positions and PnL)."""
    if service.expose_remote or ipaddress.ip_address(service.metrics_host).is_loopback:
        return []
    return [
        f"$.service.metrics_host: {service.metrics_host!r} is not a loopback address, and /metrics and "
        "/status show positions and PnL; use 127.0.0.1 (or ::1), or set [service] expose_remote = true to "
        "serve them on the network on purpose"
    ]


_URL_SCHEMES: dict[str, tuple[str, ...]] = {"rest_url": ("http", "https"), "ws_url": ("ws", "wss")}


def _url_errors(ex: ExchangeConfig) -> list[str]:
    """Each URL field's scheme (`rest_url` http/https, `ws_url` ws/wss) and host."""
    errors = []
    for key, schemes in _URL_SCHEMES.items():
        url = getattr(ex, key)
        parts = urllib.parse.urlsplit(url)
        want = " or ".join(f"{s}://" for s in schemes)
        if parts.scheme not in schemes:
            errors.append(f"$.exchange.{key}: expected a {want} URL, got {url!r}")
        elif not parts.hostname:
            errors.append(f"$.exchange.{key}: expected a host after {parts.scheme}://, got {url!r}")
    return errors


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate a decoded TOML document; raise ConfigError naming `source` and the key path."""
    bad = non_finite(data)
    if bad is not None:
        raise ConfigError(f"{source}: {bad}")
    try:
        cfg = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, data, Config)}") from exc
    errors = _cross_check(cfg)
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
    return cfg


def engine_params(cfg: Config) -> EngineParams:
    """The per-bar engine's parameters from a validated config."""
    return EngineParams(
        symbols=tuple(cfg.market.symbol_list),
        interval_ms=interval_ms(cfg.market.interval),
        regime=cfg.regime,
        warmup=cfg.models.warmup,
    )


def watchdog_fresh_s(cfg: Config) -> float:
    """Freshness window in seconds: one bar length plus `service.watchdog_grace_s`."""
    return INTERVAL_MS[cfg.market.interval] / 1000.0 + cfg.service.watchdog_grace_s


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


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dump_config(cfg: Config) -> str:
    """`cfg` as TOML text that `parse_config(tomllib.loads(text))` reads back equal to `cfg`.

    One `[section]` per table (sub-tables as `[section.sub]`), keys in schema order; a `None` value is left
    out (it is the default of every optional key).
    """

    def key(k: str) -> str:
        return k if _BARE_KEY.match(k) else msgspec.json.encode(k).decode()

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)  # repr of inf / nan is TOML's inf / nan
        if isinstance(v, str):
            return msgspec.json.encode(v).decode()  # a JSON string is a TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"dump_config: cannot write {type(v).__name__} {v!r} to TOML")

    lines: list[str] = []

    def table(name: str, d: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        subs = []
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{key(k)} = {value(v)}")
        lines.append("")
        for k, v in subs:
            table(f"{name}.{key(k)}", v)

    for name, section in msgspec.to_builtins(cfg).items():
        table(key(name), section)
    return "\n".join(lines)
