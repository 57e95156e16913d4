"""`offline sweep` on a real local Ray: policy grids (checked up front, resumed) and grids that distil."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import support
from test_backtest import synthetic_csvs

from bot.config import parse_config
from bot.core.errors import ConfigError
from bot.outputs import MARKER
from offline.grid import load_grid
from offline.sweep import sweep


def test_local_ray_sweep_writes_trials_best_config_and_resumes(trained_family: Path, tmp_path: Path) -> None:
    """4 trials on local Ray: per-fold scores, best.toml a valid config, the outputs marked as the sweep's; a
    rerun resumes (computes nothing); a grid value the config refuses stops the run before Ray starts."""
    csvs = synthetic_csvs(tmp_path / "data", n=1000)
    grid_path = tmp_path / "grid.toml"
    grid_path.write_text(
        '"paper.long_threshold_bps" = [0.0, 5.0]\n"regime.routes.normal" = ["edge", "production"]\n',
        encoding="utf-8",
    )
    grid = load_grid(grid_path)
    out = tmp_path / "sweep"
    data = [str(p) for p in csvs.values()]
    kw = {"models": str(trained_family), "folds": 3, "num_cpus": 2, "warmup_bars": 100}
    # a routes table to sweep one route of (the default is "auto")
    routes = {"calm_trend": "edge", "normal": "production", "volatile": "staging", "crisis": "research"}
    base = support.small_config(regime={"routes": routes})
    res = sweep(base, grid, data, out, cache_dir=str(tmp_path / "cache"), **kw)
    rows = res["rows"]
    assert len(rows) == res["computed"] == 4
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    for r in rows:
        assert len(r["folds"]) == 3
        assert r["heldout"] == r["folds"][-1]
    best = parse_config(tomllib.loads((out / "best.toml").read_text(encoding="utf-8")), source="best.toml")
    assert best.regime.routes["normal"] == res["best"]["overrides"]["regime.routes.normal"]
    names = {p.name for p in out.iterdir()}
    assert names == {"trials.csv", "trials.json", "best.toml", "sweep.png", MARKER}
    again = sweep(base, grid, data, out, cache_dir=str(tmp_path / "cache"), **kw)
    assert again["computed"] == 0
    assert json.loads((out / "trials.json").read_text(encoding="utf-8"))[0]["id"] == rows[0]["id"]
    grid_path.write_text('"regime.routes.normal" = ["edge", "no_such_tier"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"regime\.routes\.normal\[1\] = 'no_such_tier'"):
        sweep(base, load_grid(grid_path), data, tmp_path / "new", **kw)
    assert not (tmp_path / "new").exists()


def test_grid_refuses_models_keys(tmp_path: Path) -> None:
    """A key under [models] is refused with a message naming it (it names files, not candidates)."""
    grid = tmp_path / "g.toml"
    grid.write_text('"models.dir" = ["a", "b"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"models\.dir: \[models\] keys name files.*--models"):
        load_grid(grid)


def test_trials_that_shape_models_distil_cached_families_on_rows_before_the_folds(tmp_path: Path) -> None:
    """A tier-width grid: each trial distils (in its Ray task) on the rows before the folds, one family per
    hash under DIR/models; a rerun of another grid (--fresh) over the same shaping keys distils nothing."""
    import ray

    csvs = synthetic_csvs(tmp_path / "data", n=2000)
    data = [str(p) for p in csvs.values()]
    out = tmp_path / "sweep"
    base = support.small_config()
    kw = {
        "models": str(tmp_path / "unused"),  # a grid that shapes the models never reads --models
        "folds": 3,
        "warmup_bars": 100,
        "cache_dir": str(tmp_path / "cache"),
        "distill_frac": 0.5,
        "distill_quick": True,
    }
    (tmp_path / "g1.toml").write_text('"tiers.edge.width" = [4, 8]\n', encoding="utf-8")
    (tmp_path / "g2.toml").write_text(
        '"tiers.edge.width" = [4, 8]\n"paper.long_threshold_bps" = [5.0]\n', encoding="utf-8"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        first = sweep(base, load_grid(tmp_path / "g1.toml"), data, out, **kw)
        families = out / "models"
        made = sorted(p for p in families.iterdir() if p.is_dir())
        mtimes = {p.name: (p / "manifest.json").stat().st_mtime_ns for p in made}
        again = sweep(base, load_grid(tmp_path / "g2.toml"), data, out, fresh=True, **kw)
    finally:
        ray.shutdown()
    rows = first["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("error") for r in rows]
    assert all(r["distilled"] for r in rows)
    assert {p.name for p in made} == {r["family"] for r in rows}
    assert len(made) == 2
    # the family trained on SYNTHUSDT's bars before the cut; every decided bar (all folds) is after it
    train = csv_starts(families / "train_SYNTHUSDT.csv")
    cut = max(train) + 1
    manifest = json.loads((made[0] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["provenance"]["last_start_ms"] == max(train) < cut
    assert manifest["provenance"]["symbol"] == "SYNTHUSDT"
    decided_from = min(csv_starts(csvs["SYNTHUSDT"])[1000:])
    assert max(train) < decided_from
    assert all(r["bars"] == 2 * 1000 for r in rows)  # 2 symbols x the 1000 bars after the cut
    widths = {r["overrides"]["tiers.edge.width"]: r["family"] for r in rows}
    assert (
        json.loads((families / f"{widths[4]}.json").read_text(encoding="utf-8"))["tiers"]["edge"]["width"]
        == 4
    )
    new = again["rows"]  # another grid: --fresh replaced the trials, the families are reused
    assert again["computed"] == 2
    assert [r["status"] for r in new] == ["ok", "ok"]
    assert not any(r["distilled"] for r in new)
    assert {r["family"] for r in new} == set(mtimes)
    assert {p.name: (p / "manifest.json").stat().st_mtime_ns for p in made} == mtimes
    best = parse_config(tomllib.loads((out / "best.toml").read_text(encoding="utf-8")), source="best.toml")
    assert Path(best.models.dir).parent == families.resolve()
    assert best.models.symbols == "any"  # scored on both symbols


def csv_starts(path: Path) -> list[int]:
    """`start_ms` of every row of a klines CSV."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [int(line.split(",", 1)[0]) for line in lines]
