"""The sweep's grid: dotted config keys to candidate lists, their trials, and a config with a trial's
overrides applied (validated like a config file)."""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from bot.config import Config, parse_config
from bot.core.errors import ConfigError

POLICY_SECTIONS: Final = ("paper", "regime")
#: Sections whose keys shape the models: a trial that sweeps them distils its own family.
SHAPING_SECTIONS: Final = ("tiers", "distill")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def load_grid(path: str | Path) -> dict[str, list[Any]]:
    """Dotted key -> candidates, checked: lists, non-empty, under [paper], [regime], [tiers] or [distill].

    Raises:
        ConfigError: unreadable file, a value that is not a non-empty list, a key under [models] (it names
            files), or a key outside those sections.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read grid: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    grid = _flatten(raw)
    if not grid:
        raise ConfigError(f"{p}: empty grid; expected dotted keys to candidate lists")
    for key, values in grid.items():
        section = key.split(".", 1)[0]
        if section == "models":
            raise ConfigError(
                f"{p}: {key}: [models] keys name files, they are not candidates; pass the family with "
                f"--models, or sweep the keys that shape it (under {list(SHAPING_SECTIONS)}) and every "
                "trial distils its own"
            )
        if section not in POLICY_SECTIONS + SHAPING_SECTIONS:
            raise ConfigError(f"{p}: {key}: expected a key under {list(POLICY_SECTIONS + SHAPING_SECTIONS)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{p}: {key}: expected a non-empty list of candidates, got {values!r}")
    return grid


def apply(base: Config, overrides: Mapping[str, Any], *, source: str = "trial") -> Config:
    """`base` with dotted-key overrides, validated like a config file."""
    data: dict[str, Any] = msgspec.to_builtins(base)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source}: {key}: {part} is not a table")
            node = nxt
        node[parts[-1]] = value
    return parse_config(data, source=source)


def grid_trials(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def trial_id(overrides: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:12]


def shapes_models(grid: Mapping[str, Any]) -> bool:
    """True when a grid key is under [tiers] or [distill] (its trials distil their own families)."""
    return any(k.split(".", 1)[0] in SHAPING_SECTIONS for k in grid)
