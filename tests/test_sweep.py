"""`offline sweep`: a small grid over policy keys on a real local Ray, resumed, failures recorded."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import support
from test_backtest import synthetic_csvs

from bot.config import parse_config
from bot.core.errors import ConfigError
from offline.sweep import load_grid, sweep


def test_local_ray_sweep_writes_trials_best_config_and_resumes(trained_family: Path, tmp_path: Path) -> None:
    """4 trials on local Ray: failures keep their error; best.toml is a valid config; a rerun resumes."""
    csvs = synthetic_csvs(tmp_path / "data", n=1000)
    grid_path = tmp_path / "grid.toml"
    grid_path.write_text(
        '"paper.long_threshold_bps" = [0.0, 5.0]\n"regime.routes.normal" = ["edge", "no_such_tier"]\n',
        encoding="utf-8",
    )
    grid = load_grid(grid_path)
    out = tmp_path / "sweep"
    data = [str(p) for p in csvs.values()]
    kw = {"models": str(trained_family), "folds": 3, "num_cpus": 2, "warmup_bars": 100}
    res = sweep(support.small_config(), grid, data, out, cache_dir=str(tmp_path / "cache"), **kw)
    rows = res["rows"]
    assert len(rows) == res["computed"] == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2
    assert all("no_such_tier" in r["error"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert len(r["folds"]) == 3
        assert r["heldout"] == r["folds"][-1]
    best = parse_config(tomllib.loads((out / "best.toml").read_text(encoding="utf-8")), source="best.toml")
    assert best.regime.routes["normal"] == "edge"
    assert {p.name for p in out.iterdir()} >= {"trials.csv", "trials.json", "best.toml", "sweep.png"}
    again = sweep(support.small_config(), grid, data, out, cache_dir=str(tmp_path / "cache"), **kw)
    assert again["computed"] == 2  # only the failed trials are retried
    assert json.loads((out / "trials.json").read_text(encoding="utf-8"))[0]["id"] == ok[0]["id"]


def test_grid_refuses_model_shaping_keys(tmp_path: Path) -> None:
    """A key under [tiers] or [distill] is refused with a message naming it (no trial distils models)."""
    grid = tmp_path / "g.toml"
    grid.write_text('"distill.epochs" = [1, 2]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"distill\.epochs.*shape the models"):
        load_grid(grid)
