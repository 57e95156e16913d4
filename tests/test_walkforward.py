"""Walk-forward folds of the vol head (offline/walkforward.py): chronology, embargo, HAR fitted on training
rows only, `offline distill --folds K` end to end and its bad-input errors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.config import Config, DistillConfig, TierConfig
from bot.core.bars import INTERVAL_MS
from bot.core.errors import ConfigError, DataError
from offline.__main__ import main as offline_main
from offline.data import Dataset, build_dataset, embargo_rows, synthetic_bars
from offline.distill import run_distillation
from offline.folds import fold_dataset, walkforward_folds
from offline.walkforward import (
    fit_har_baselines,
    har_designs,
    run_walkforward,
    score_candidate,
)
from offline.walkforward_report import WalkForward

REPO = Path(__file__).resolve().parents[1]
STEP_MS = INTERVAL_MS["5"]
CFG = DistillConfig(embargo_bars=5, vol_horizon_bars=12, batch_size=128, synthetic_bars=2000)
TIERS = {
    "research": TierConfig(layers=2, width=24),
    "staging": TierConfig(layers=1, width=12),
    "edge": TierConfig(layers=1, width=6, features="newest_bar"),
}
TINY_TOML = """
[tiers.research]
layers = 2
width = 24
[tiers.staging]
layers = 1
width = 12
[tiers.production]
layers = 1
width = 8
[tiers.edge]
layers = 1
width = 6
features = "newest_bar"
[distill]
quick_bars = 2000
quick_epochs = 2
embargo_bars = 5
batch_size = 128
"""


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(synthetic_bars(2500, seed=3), CFG, step_ms=STEP_MS)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_folds_are_chronological_expanding_with_disjoint_ordered_test_blocks(ds: Dataset) -> None:
    """Each fold's train < val < test in time; training spans grow; test blocks tile the tail in order."""
    folds = walkforward_folds(ds, 4, CFG, first_train_frac=0.4)
    assert [f.index for f in folds] == [1, 2, 3, 4]
    t = ds.start_ms
    for f in folds:
        assert t[f.train].max() < t[f.val].min() <= t[f.val].max() < t[f.test].min()
        assert t[f.train].min() == t.min()  # expanding: every fold starts at the first row
    for a, b in itertools.pairwise(folds):
        assert t[a.test].max() < t[b.test].min()  # non-overlapping, in order
        assert set(a.train) < set(b.train)  # expanding
        assert t[b.val].max() < t[b.test].min()
    tests = np.concatenate([f.test for f in folds])
    assert len(set(tests)) == tests.size
    assert np.array_equal(tests, np.arange(int(ds.n_rows * 0.4), ds.n_rows))  # the tail, each row once


def test_embargo_keeps_every_training_target_out_of_the_next_block(ds: Dataset) -> None:
    """No train row's target reaches a validation bar, no train/val row's target reaches the test block."""
    emb = embargo_rows(CFG)
    horizon = max(CFG.horizon_bars, CFG.vol_horizon_bars)
    assert emb >= horizon
    bi = ds.bar_index
    for f in walkforward_folds(ds, 3, CFG):
        assert bi[f.train].max() + horizon < bi[f.val].min()
        assert bi[f.val].max() + horizon < bi[f.test].min()
        gap_bars = (ds.start_ms[f.test].min() - ds.start_ms[f.val].max()) // STEP_MS
        assert gap_bars > emb  # the embargo, in bars, between the last validation row and the block


def test_har_baselines_are_fitted_on_training_rows_only(ds: Dataset) -> None:
    """Changing validation and test targets and regressors leaves the HAR coefficients as they were; changing
    a training row moves them; test-row changes move the test score."""
    fold = walkforward_folds(ds, 2, CFG)[1]
    designs = har_designs(ds)
    base = fit_har_baselines(ds, fold, designs=designs)
    assert ds.log_vol is not None
    held = np.concatenate([fold.val, fold.test])
    rng = np.random.default_rng(0)
    lv = ds.log_vol.copy()
    lv[held] += rng.normal(0.0, 1.0, held.size)
    shaken = {k: X.copy() for k, X in designs.items()}
    for X in shaken.values():
        X[held, :3] += rng.normal(0.0, 1.0, (held.size, 3))
    moved = fit_har_baselines(dataclasses.replace(ds, log_vol=lv), fold, designs=shaken)
    for key in ("har", "har_tod"):
        assert np.array_equal(base[key].model.coef, moved[key].model.coef)
        assert base[key].qlike_scale == moved[key].qlike_scale
        assert base[key].metrics["vol_r2"] != moved[key].metrics["vol_r2"]
    lv_train = ds.log_vol.copy()
    lv_train[fold.train[-50:]] += 1.0
    trained = fit_har_baselines(dataclasses.replace(ds, log_vol=lv_train), fold, designs=designs)
    assert not np.allclose(base["har"].model.coef, trained["har"].model.coef)


def test_run_walkforward_scores_every_recipe_per_fold_and_har_matches_the_pipeline(ds: Dataset) -> None:
    """Every fold has both HAR rows and every tier x recipe scored; HAR and the candidates' scores equal the
    pipeline's own (`vol_baselines`, `offline.evaluate`) on the same fold: one procedure."""
    wf = run_walkforward(ds, TIERS, CFG, n_folds=2, seeds=[1], epochs=2)
    for k in (1, 2):
        rows = [r for r in wf.rows if r["fold"] == k]
        assert {r["variant"] for r in rows if r["tier"] == "baseline"} == {"har", "har_tod"}
        assert {(r["tier"], r["variant"]) for r in rows if r["tier"] == "edge"} == {
            ("edge", v) for v in ("progressive", "progressive_no_transfer", "one_shot", "scratch")
        }
        assert sum(r["chosen"] for r in rows if r["tier"] == "edge") == 1
        teacher = next(r for r in rows if r["variant"] == "teacher")
        assert teacher["vol_fidelity_r2"] == pytest.approx(1.0)
        for r in rows:
            assert r["vol_r2"] is not None
            assert r["vol_qlike_bc"] is not None
            assert r["vol_qlike_bc"] > 0
    fold2 = walkforward_folds(ds, 2, CFG)[1]
    res = run_distillation(fold_dataset(ds, fold2), TIERS, CFG, epochs=1, seed=0)
    har = next(r for r in wf.rows if r["fold"] == 2 and r["variant"] == "har")
    assert har["symbol"] == ds.provenance.get("symbol", "data")
    for key in ("vol_r2", "vol_qlike_bc"):
        assert har[key] == pytest.approx(res.info["vol_baselines"]["har"][key], abs=1e-12)
    teacher_model = res.chosen["research"].model
    for c in res.candidates["edge"] + res.candidates["research"]:
        mine = score_candidate(ds, c.model, teacher_model, fold2.train, fold2.test)
        for key in (
            "vol_r2",
            "vol_ic",
            "vol_qlike",
            "vol_qlike_bc",
            "vol_retention",
            "vol_fidelity_r2",
            "ic",
        ):
            assert mine[key] == pytest.approx(c.metrics[key], abs=1e-9), key


def test_too_few_rows_or_bad_k_is_a_clear_error(ds: Dataset) -> None:
    """K < 2 is a ConfigError naming --folds; too many folds for the rows is a DataError saying what to do."""
    with pytest.raises(ConfigError, match=r"--folds: expected an integer >= 2.*got 1"):
        walkforward_folds(ds, 1, CFG)
    with pytest.raises(DataError, match=r"too few usable rows .* fewer folds"):
        walkforward_folds(ds, 80, CFG)
    with pytest.raises(ConfigError, match="vol_head"):
        run_walkforward(dataclasses.replace(ds, log_vol=None), TIERS, CFG, n_folds=2, seeds=[0], epochs=1)
    assert Config().distill.vol_head  # the default trains a vol head


def test_cli_folds_writes_the_fold_table_and_exports_nothing(tmp_path: Path) -> None:
    """`distill --folds 2 --quick` exits 0, prints the table, writes walkforward.json/.txt, no family."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    out = tmp_path / "wf"
    args = [
        "distill",
        "--config",
        str(cfg),
        "--data",
        "synthetic",
        "--folds",
        "2",
        "--quick",
        "--out",
        str(out),
    ]
    proc = _run(*args, "--seed", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HAR-RV + hour" in proc.stdout
    assert "no family was exported" in proc.stdout
    assert "fold 2/2 seed 2" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        ".progdistill-output.json",
        "walkforward.json",
        "walkforward.txt",
    ]
    doc = json.loads((out / "walkforward.json").read_text())
    assert (doc["info"]["n_folds"], doc["info"]["seeds"], doc["info"]["epochs"]) == (2, [2], 2)
    assert {r["fold"] for r in doc["rows"]} == {1, 2}
    assert [f["fold"] for f in doc["folds"]] == [1, 2]
    skill = doc["info"]["return_skill"]  # the teacher's return IC pooled over both test blocks
    assert (skill["rows"], skill["n_rows"]) == ("walk-forward", sum(f["test_rows"] for f in doc["folds"]))
    assert skill["se"] > 0.0
    assert "return head (teacher, pooled over the test blocks): IC " in proc.stdout
    # each fold chooses its routes on its validation rows and is scored routed vs teacher on its test block
    assert [r["fold"] for r in doc["info"]["routes"]] == [1, 2]
    for r in doc["info"]["routes"]:
        assert set(r["routes"]) == {"calm_trend", "normal", "volatile", "crisis"}
        assert 0.0 < r["test"]["cost_ratio_vs_teacher"] <= 1.0
        assert math.isfinite(r["test"]["qlike_vs_teacher"])
    assert "fold 2 routes (chosen on its validation rows): calm_trend -> " in proc.stdout
    assert not (tmp_path / "models").exists()  # nothing exported, no models store created


def _write_csv(path: Path, seed: int) -> None:
    bars = synthetic_bars(1800, seed=seed)
    lines = ["start_ms,open,high,low,close,volume"]
    lines += [f"{b.start_ms},{b.open!r},{b.high!r},{b.low!r},{b.close!r},{b.volume!r}" for b in bars]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_folds_pools_several_symbols_and_scores_each_on_its_own_rows(tmp_path: Path) -> None:
    """Two `--data` CSVs train one family per fold; every model and each symbol's own HAR is scored per
    symbol, so the fold table has a row per (fold, symbol, model)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write_csv(a, 5)
    _write_csv(b, 6)
    out = tmp_path / "wf"
    proc = _run(
        *("distill", "--config", str(cfg), "--folds", "2", "--quick", "--out", str(out)),
        *("--data", str(a), "--symbol", "AAAUSDT", "--data", str(b), "--symbol", "BBBUSDT"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "walkforward.json").read_text())
    assert doc["info"]["pooled"] is True
    assert doc["info"]["symbols"] == ["AAAUSDT", "BBBUSDT"]
    har = [(r["fold"], r["symbol"]) for r in doc["rows"] if r["variant"] == "har"]
    assert sorted(har) == [(1, "AAAUSDT"), (1, "BBBUSDT"), (2, "AAAUSDT"), (2, "BBBUSDT")]
    edge = [r for r in doc["rows"] if r["tier"] == "edge" and r["variant"] == "scratch"]
    assert sorted((r["fold"], r["symbol"]) for r in edge) == sorted(har)
    assert edge[0]["vol_r2"] != edge[1]["vol_r2"]  # each symbol on its own rows
    assert "mean over folds, seeds and symbols" in proc.stdout


def test_cli_bad_k_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--folds 1` exits 2 before any work: one `error:` line naming --folds, no traceback, no output dir."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "wf"
    rc = offline_main(["distill", "--data", "synthetic", "--folds", "1", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: --folds: expected an integer >= 2 (expanding walk-forward folds), got 1; use --folds 4, or "
        "leave it out to train and export one family"
    ]
    assert not out.exists()


def _comparable(wf: WalkForward) -> tuple[list[dict[str, Any]], Any, Any]:
    """The fold table without wall times (rows' train_s), with the pooled return skill and the routes."""
    rows = [{k: v for k, v in r.items() if k != "train_s"} for r in wf.rows]
    return rows, wf.info["return_skill"], wf.info["routes"]


def test_folds_and_seeds_fanned_out_on_a_local_ray_equal_the_in_process_run(ds: Dataset) -> None:
    """2 folds x 2 seeds as Ray tasks (a real local Ray, the dataset shared once through its object store)
    give the fold table (floats to 1e-9), return skill and routes of the in-process run, in its order."""
    import ray

    from offline.fanout import FanOut, fan_out

    kw: dict[str, Any] = {"n_folds": 2, "seeds": [1, 2], "epochs": 1, "regime": Config().regime}
    here = run_walkforward(ds, TIERS, CFG, **kw)
    assert not ray.is_initialized()
    with fan_out(FanOut(num_cpus=2)) as runner:
        shared = runner.share(ds)
        assert shared is not ds
        assert not shared.X.flags.writeable  # the tasks and this process read the object store's copy
        there = run_walkforward(shared, TIERS, CFG, runner=runner, **kw)
        assert there.info["ran"] == "ray (2 CPUs)"
    assert not ray.is_initialized()
    assert here.info["ran"] == "in process"
    assert len(here.rows) == len(there.rows) > 0
    assert {(r["fold"], r["seed"]) for r in there.rows if r["seed"] is not None} == {
        (f, s) for f in (1, 2) for s in (1, 2)
    }
    rows_there, skill_there, routes_there = _comparable(there)
    rows_here, skill_here, routes_here = _comparable(here)
    assert skill_there == skill_here
    assert routes_there == routes_here
    for a, b in zip(rows_there, rows_here, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():  # the workers' BLAS runs 1 thread, this process 2: sums may differ
            if isinstance(value, float):  # in the last bits, so floats agree to 1e-9 relative, not bitwise
                assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), (key, a, b)
            else:
                assert value == b[key], (key, a, b)
