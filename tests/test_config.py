"""bot.config.load_config: the repo's config.toml equals the defaults; bad configs name file and key path."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import msgspec
import pytest

from bot.config import Config, dump_config, load_config, parse_config
from bot.core.errors import BotError, ConfigError

REPO = Path(__file__).resolve().parents[1]

# (case id, TOML text, substrings the error must contain after the file name)
BAD_CONFIGS: list[tuple[str, str, list[str]]] = [
    ("unknown_top_level", "colour = 'blue'\n", ["$.colour: unknown key; expected one of ['market',"]),
    ("unknown_nested", "[regime]\nvol_windw = 24\n", ["$.regime.vol_windw: unknown key", "'vol_window'"]),
    (
        "unknown_in_tier",
        "[tiers.big]\nlayers = 2\nwidth = 8\nshape = 'mlp'\n",
        ["$.tiers.big.shape: unknown key; expected one of ['layers', 'width', 'features']"],
    ),
    (
        "unknown_threshold",
        "[regime.thresholds]\nvol_max = 0.1\n",
        ["$.regime.thresholds.vol_max: unknown key"],
    ),
    ("interval_wrong_type", "[market]\ninterval = 5\n", ["$.market.interval: expected str, got int 5"]),
    (
        "float_wrong_type",
        "[paper]\nnotional_usd = 'lots'\n",
        ["$.paper.notional_usd: expected float, got str 'lots'"],
    ),
    (
        "bool_is_not_int",
        "[regime]\nvol_window = true\n",
        ["$.regime.vol_window: expected int, got bool True"],
    ),
    ("section_not_table", "tiers = 3\n", ["$.tiers: expected object, got int 3"]),
    ("dwell_zero", "[regime]\nmin_dwell_bars = 0\n", ["$.regime.min_dwell_bars: expected int >= 1, got 0"]),
    (
        "port_too_big",
        "[service]\nmetrics_port = 70000\n",
        ["$.service.metrics_port: expected int <= 65535, got 70000"],
    ),
    (
        "backfill_too_small",
        "[exchange]\nbackfill_bars = 10\n",
        ["$.exchange.backfill_bars: expected int >= 60, got 10"],
    ),
    (
        "hysteresis_one",
        "[regime]\nhysteresis = 1.0\n",
        ["$.regime.hysteresis: expected float < 1", "got 1.0"],
    ),
    (
        "negative_timeout",
        "[exchange]\nrest_timeout_s = -1.0\n",
        ["$.exchange.rest_timeout_s: expected float > 0"],
    ),
    ("grace_zero", "[service]\nwatchdog_grace_s = 0.0\n", ["$.service.watchdog_grace_s: expected float > 0"]),
    (
        "bad_level",
        "[logging]\nlevel = 'verbose'\n",
        ["$.logging.level: expected one of ['debug', 'info', 'warning', 'error'], got 'verbose'"],
    ),
    ("bad_interval", "[market]\ninterval = '7'\n", ["$.market.interval: expected one of", "got '7'"]),
    ("no_symbols", "[market]\nsymbols = []\n", ["$.market.symbols: expected array of length >= 1"]),
    (
        "bad_symbol",
        "[market]\nsymbols = ['BTCUSDT', 'eth-usdt']\n",
        ["$.market.symbols[1]:", "got 'eth-usdt'"],
    ),
    (
        "duplicate_symbols",
        "[market]\nsymbols = ['BTCUSDT', 'ETHUSDT', 'BTCUSDT']\n",
        ["$.market.symbols: duplicate symbol"],
    ),
    (
        "route_to_missing_tier",
        "[regime.routes]\ncalm_trend = 'edge'\nnormal = 'medium'\nvolatile = 'staging'\n"
        "crisis = 'research'\n",
        ["$.regime.routes.normal: names tier 'medium', not in [tiers]"],
    ),
    (
        "unknown_regime",
        "[regime.routes]\ncalm_trend = 'edge'\nnormal = 'production'\nvolatile = 'staging'\n"
        "crisis = 'research'\nsideways = 'edge'\n",
        ["$.regime.routes.sideways: unknown regime"],
    ),
    (
        "regime_without_tier",
        "[regime.routes]\ncalm_trend = 'edge'\nnormal = 'production'\nvolatile = 'staging'\n",
        ["$.regime.routes: no tier for regime(s) ['crisis']"],
    ),
    ("route_not_str", "[regime.routes]\nnormal = 4\n", ["$.regime.routes.normal: expected str, got int 4"]),
    (
        "unknown_feature_set",
        "[tiers.edge]\nlayers = 2\nwidth = 64\nfeatures = 'everything'\n",
        ["$.tiers.edge.features: expected one of", "got 'everything'"],
    ),
    ("tier_missing_width", "[tiers.edge]\nlayers = 2\n", ["$.tiers.edge.width: required key is missing"]),
    (
        "tier_too_deep",
        "[tiers.edge]\nlayers = 17\nwidth = 8\n",
        ["$.tiers.edge.layers: expected int <= 16, got 17"],
    ),
    (
        "tiers_not_shrinking",
        "[tiers.a]\nlayers = 2\nwidth = 64\n[tiers.b]\nlayers = 4\nwidth = 128\n",
        ["$.tiers.b: each tier must be smaller than the one before"],
    ),
    (
        "threshold_order_calm",
        "[regime.thresholds]\nvol_calm_max = 0.003\nvol_volatile_min = 0.002\n",
        ["$.regime.thresholds.vol_calm_max: must be less than vol_volatile_min (0.002), got 0.003"],
    ),
    (
        "threshold_order_crisis",
        "[regime.thresholds]\nvol_volatile_min = 0.004\nvol_crisis_min = 0.004\n",
        ["$.regime.thresholds.vol_crisis_min: must exceed vol_volatile_min (0.004), got 0.004"],
    ),
    (
        "bad_rest_url",
        "[exchange]\nrest_url = 'api.bybit.com'\n",
        ["$.exchange.rest_url: expected str matching regex"],
    ),
    (
        "bad_ws_url",
        "[exchange]\nws_url = 'ftp://stream.bybit.com'\n",
        ["$.exchange.ws_url:", "'ftp://stream"],
    ),
    (
        "splits_leave_no_test",
        "[distill]\ntrain_frac = 0.7\nval_frac = 0.3\n",
        ["$.distill.val_frac: train_frac"],
    ),
    (
        "backoff_order",
        "[exchange]\nreconnect_backoff_initial_s = 5.0\nreconnect_backoff_max_s = 1.0\n",
        ["$.exchange.reconnect_backoff_max_s: must be >= reconnect_backoff_initial_s"],
    ),
    (
        "stale_below_ping",
        "[exchange]\nping_interval_s = 20.0\nstale_feed_s = 15.0\n",
        ["$.exchange.stale_feed_s: must be greater than ping_interval_s"],
    ),
    (
        "metrics_host_name",
        "[service]\nmetrics_host = 'localhost'\n",
        ["$.service.metrics_host: expected an IP address literal, got 'localhost'"],
    ),
    ("invalid_toml", "[market\nsymbols = ['BTCUSDT']\n", ["not valid TOML"]),
    ("duplicate_toml_key", "[market]\ninterval = '5'\ninterval = '1'\n", ["not valid TOML"]),
    ("not_utf8", "\udcff", ["not valid TOML"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    """Each bad config raises ConfigError naming the file, the key path, the expectation and the value."""
    path = tmp_path / "config.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message
    assert isinstance(info.value, BotError)
    assert len(message.splitlines()) == 1


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is a ConfigError naming the path and the OS reason."""
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config file: No such file or directory"):
        load_config(tmp_path / "nope.toml")


def test_bad_config_touches_nothing(tmp_path: Path) -> None:
    """A rejected config creates no ledger, log or state directory: errors come before anything is opened."""
    path = tmp_path / "config.toml"
    state, logs = tmp_path / "state" / "ledger.sqlite", tmp_path / "logs" / "decisions.jsonl"
    path.write_text(
        f"[ledger]\npath = '{state}'\n[logging]\ndecisions_path = '{logs}'\n[regime]\nmin_dwell_bars = 0\n"
    )
    with pytest.raises(ConfigError):
        load_config(path)
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_several_cross_field_errors_reported_together(tmp_path: Path) -> None:
    """Cross-field errors are all listed in one message, each with its key path."""
    path = tmp_path / "c.toml"
    path.write_text("[market]\ninterval = '7'\nsymbols = ['BTCUSDT', 'BTCUSDT']\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "$.market.interval:" in str(info.value)
    assert "$.market.symbols:" in str(info.value)


def test_repo_config_toml_is_exactly_the_defaults() -> None:
    """config.toml at the repo root decodes to exactly Config() and sets every section and key."""
    cfg = load_config(REPO / "config.toml")
    assert cfg == Config()
    doc = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    defaults = msgspec.to_builtins(Config())
    for section, values in defaults.items():
        assert section in doc, f"config.toml lacks [{section}]"
        if section in ("tiers",):
            assert set(doc[section]) == set(values)
            continue
        for key, value in values.items():
            if value is None or (isinstance(value, dict) and all(v is None for v in value.values())):
                continue  # None-valued options can only be documented as comments in TOML
            assert key in doc[section], f"config.toml lacks {section}.{key}"


def test_empty_file_is_defaults_and_config_is_frozen(tmp_path: Path) -> None:
    """An empty file gives the defaults; the config objects are immutable."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    cfg = load_config(path)
    assert cfg == Config()
    with pytest.raises(AttributeError):
        cfg.market.interval = "1"  # type: ignore[misc]


def test_valid_overrides_apply() -> None:
    """A valid override changes exactly the named key (and a 2-symbol, 1m config passes cross-checks)."""
    cfg = parse_config(
        {"market": {"symbols": ["BTCUSDT", "ETHUSDT"], "interval": "1"}, "service": {"metrics_port": 0}}
    )
    assert cfg.market.symbols == ["BTCUSDT", "ETHUSDT"]
    assert cfg.market.interval == "1"
    assert cfg.service.metrics_port == 0
    assert cfg.regime == Config().regime


def _unusual_config() -> Config:
    """Every kind of value the schema holds: quoted keys, escapes and non-ASCII, optional keys set, 1e-06."""
    tiers = {
        "big tier": {"layers": 3, "width": 24, "features": "research"},
        "v1.small": {"layers": 1, "width": 8, "features": "newest_bar"},
    }
    return parse_config(
        {
            "market": {"symbols": ["BTCUSDT", "ETHUSDT"], "interval": "1"},
            "tiers": tiers,
            "distill": {"learning_rate": 1e-6, "alpha_max": 0.0},
            "regime": {
                "routes": dict.fromkeys(["calm_trend", "normal", "volatile", "crisis"], "v1.small"),
                "thresholds": {"vol_calm_max": 0.001, "spread_crisis_bps": 12.5},
            },
            "logging": {"decisions_path": 'logs/d\u00e9cisions "q"\\\n\t.jsonl'},
            "models": {"warmup": False},
        }
    )


@pytest.mark.parametrize("cfg", [Config(), _unusual_config()], ids=["defaults", "unusual"])
def test_dump_config_round_trips(cfg: Config) -> None:
    """`parse_config(tomllib.loads(dump_config(cfg))) == cfg` (the writer and the reader are one schema)."""
    text = dump_config(cfg)
    assert parse_config(tomllib.loads(text), source="dumped") == cfg
