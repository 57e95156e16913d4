"""`python -m offline sweep`: config candidates scored by walk-forward backtests, run as Ray tasks.

GRID.toml maps dotted config keys to candidate lists (`"paper.long_threshold_bps" = [5.0, 10.0]`; nested
tables flatten to the same dotted keys). `--search grid` tries every combination, `--search optuna --trials N`
lets Optuna (TPE over the same categorical candidates) pick N of them, asked in batches of the Ray cluster's
CPUs. Policy keys (`[paper]`, `[regime]`) never change features or predictions, so every trial reuses the
backtest cache of the (data, `--models`) pair. A grid with keys that shape the models (`[tiers]`, `[distill]`)
makes every trial distil its own family inside its Ray task (`ensure_family`), on training rows that no fold
scores (`training_rows`), cached in `DIR/models/<hash>` by a hash of the keys that shape it and of those rows,
so trials (and reruns) with the same shaping keys share one family. `[models]` keys name files and are
refused.

Each trial is one policy-only backtest pass (`bot.sim.backtest.Backtest.policy_pnl`: one regime and one
paper kernel call per symbol over the cached features and predictions, metrics out, no records) over the
whole span (in a sweep that distils: the span after the training rows); its decided bars are cut into
`--folds` chronological folds of equal time and each fold is scored by the annualised Sharpe of the
portfolio's per-bar PnL (`--metric`). The score that chooses is the mean over every fold but the last; the
last fold is held out: reported for every trial, never used to choose.

Outputs in DIR: trials.json + trials.csv (one row per trial: keys, per-fold scores, mean, spread, held-out,
family, status, error), best.toml (a complete config; in a sweep that distils, `[models] dir` names the
best trial's family), sweep.png (validation vs held-out score per trial).
Every input is checked before any file is created or any Ray worker starts (`offline.sweep_plan`), and DIR
follows the one output policy (marked as the sweep's; another sweep's trials are refused without --fresh).
Re-running the same command resumes: trials already finished with the same fingerprint (base config, grid,
data, models, folds, metric) are not recomputed, also those an interrupted run kept in its journal; a failed
trial is recorded with its error and retried on the next run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from bot.config import Config, dump_config, parse_config
from bot.interrupts import deferred
from offline import interrupts
from offline.families import FAMILIES_DIR, FamilyPlan, ensure_family, training_rows, write_atomic
from offline.grid import (
    apply,
    grid_trials,
    trial_id,
)
from offline.sweep_plan import JOURNAL, write_marker

# ---- scoring ------------------------------------------------------------------------------------------


def fold_scores(
    times: np.ndarray[Any, Any], pnl: np.ndarray[Any, Any], *, folds: int, bars_per_year: float, metric: str
) -> list[float]:
    """Score of each of `folds` equal-time chronological folds of the portfolio's per-bar PnL."""
    from bot.sim.backtest_report import sharpe

    edges = np.linspace(times[0], times[-1] + 1, folds + 1)
    out = []
    for k in range(folds):
        sel = (times >= edges[k]) & (times < edges[k + 1])
        part = pnl[sel]
        out.append(sharpe(part, bars_per_year) if metric == "sharpe" else float(part.sum()))
    return out


_BACKTESTS: dict[str, Any] = {}
#: Loaded backtests a worker keeps (one per data/family pair; the oldest is dropped beyond this).
_KEEP_BACKTESTS: Final = 4


def run_trial(
    base_toml: str,
    overrides: dict[str, Any],
    data: list[str],
    models: str,
    *,
    folds: int,
    metric: str,
    warmup_bars: int | None,
    cache_dir: str | None,
    family: FamilyPlan | None = None,
) -> dict[str, Any]:
    """One trial (runs inside a Ray task): a backtest under the overridden config, scored per fold.

    With `family` (the grid shapes the models), the trial's family comes from `ensure_family` instead of
    `models`, and only bars from `family.from_ms` on are decided. The loaded data and models stay in the
    worker process between trials (`_BACKTESTS`).
    """
    from bot.core.bars import interval_ms
    from bot.sim.backtest import Backtest
    from bot.sim.backtest_report import YEAR_MS

    t0 = time.perf_counter()
    base = parse_config(tomllib.loads(base_toml), source="base config")
    cfg = apply(base, overrides)
    fam: dict[str, Any] = {}
    from_ms = None
    if family is not None:
        family_dir, fam = ensure_family(cfg, family)
        models, from_ms = str(family_dir), family.from_ms
    key = json.dumps(
        [data, models, warmup_bars, cache_dir, from_ms, cfg.market.interval, cfg.exchange.backfill_bars]
    )
    bt = _BACKTESTS.get(key)
    if bt is None:
        bt = Backtest(
            base,
            data,
            models,
            warmup_bars=warmup_bars,
            from_ms=from_ms,
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
        while len(_BACKTESTS) >= _KEEP_BACKTESTS:
            del _BACKTESTS[next(iter(_BACKTESTS))]
        _BACKTESTS[key] = bt
    times, pnl = bt.policy_pnl(cfg)  # the policy-only kernel pass: no records
    bpy = YEAR_MS / interval_ms(cfg.market.interval)
    scores = fold_scores(times, pnl, folds=folds, bars_per_year=bpy, metric=metric)
    val = scores[:-1]
    return {
        "folds": scores,
        "validation": float(np.mean(val)),
        "spread": float(np.std(val)),
        "heldout": scores[-1],
        "pnl_usd": float(pnl.sum()),
        "bars": bt.decided_bars,
        "seconds": time.perf_counter() - t0,
        **fam,
    }


# ---- the sweep --------------------------------------------------------------------------------------


def _trials_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    cols = [
        "id",
        "status",
        *keys,
        "validation",
        "spread",
        "heldout",
        "pnl_usd",
        "folds",
        "seconds",
        "family",
        "distilled",
        "error",
    ]
    fh = io.StringIO(newline="")
    w = csv.writer(fh)
    w.writerow(cols)
    for r in rows:
        ov = r["overrides"]
        w.writerow(
            [
                r["id"],
                r["status"],
                *(json.dumps(ov.get(k)) for k in keys),
                *(r.get(c) for c in ("validation", "spread", "heldout", "pnl_usd")),
                json.dumps(r.get("folds")),
                r.get("seconds"),
                r.get("family"),
                r.get("distilled"),
                r.get("error"),
            ]
        )
    return fh.getvalue()


def _plot(path: Path, rows: list[dict[str, Any]], metric: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return False
    fig, ax = plt.subplots(figsize=(6, 5))
    xs = [r["validation"] for r in ok]
    ys = [r["heldout"] for r in ok]
    ax.scatter(xs, ys, s=18, color="#2e86c1")
    best = max(ok, key=lambda r: r["validation"])
    ax.scatter([best["validation"]], [best["heldout"]], s=60, color="#c0392b", label="chosen")
    lo, hi = min(xs + ys), max(xs + ys)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"validation {metric} (mean of folds 1..K-1)")
    ax.set_ylabel(f"held-out {metric} (fold K)")
    ax.set_title(f"{len(ok)} trials: over-fitting shows as points below the diagonal")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return True


def sweep(
    base: Config,
    grid: Mapping[str, list[Any]],
    data: Sequence[str],
    out: Path,
    *,
    models: str,
    search: str = "grid",
    trials: int | None = None,
    folds: int = 4,
    metric: str = "sharpe",
    address: str | None = None,
    num_cpus: int | None = None,
    warmup_bars: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
    distill_frac: float = 0.5,
    distill_quick: bool = False,
    fresh: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run the sweep; returns {"rows", "best", "seconds", "computed"}. See the module docstring.

    Args:
        models: the family of a policy-only grid (unused when the grid shapes the models).
        distill_frac: when the grid shapes the models, the share of the data's time span whose first file's
            bars train the trials' families; bars after it are the folds (`training_rows`).
        distill_quick: distil those families with `[distill] quick_bars` / `quick_epochs`.
        fresh: `out` holds trials of another sweep (another grid, config, data...): replace them at the end
            instead of refusing (`offline.sweep_plan.earlier_rows`).

    Raises:
        ConfigError, DataError: a bad option, grid value, data file, fold count or `out` (before any file
            is created or any worker starts). ModelError: a policy-only grid's `models` cannot be loaded.
    """
    import importlib

    from offline.fanout import init_ray
    from offline.sweep_plan import plan

    ray: Any = importlib.import_module("ray")  # untyped enough that mypy --strict cannot check its calls
    # every check before any file is created or any worker starts (offline/sweep_plan.py)
    p = plan(
        base,
        grid,
        data,
        out,
        models=models,
        search=search,
        trials=trials,
        folds=folds,
        metric=metric,
        num_cpus=num_cpus,
        warmup_bars=warmup_bars,
        distill_frac=distill_frac,
        distill_quick=distill_quick,
        fresh=fresh,
    )
    fp, rows = p.fingerprint, list(p.resumed)
    done = {r["id"] for r in rows}
    keys = list(grid)
    base_toml = dump_config(base)
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        init_ray(ray, address=address, num_cpus=num_cpus)
        interrupts.reclaim()  # ray.init installed its own SIGTERM handler
    try:
        interrupts.phase("data", "preparing the sweep's data")
        out.mkdir(parents=True, exist_ok=True)
        family: FamilyPlan | None = None
        if p.cut is not None:
            family = training_rows(
                p.series,
                out / FAMILIES_DIR,
                interval=base.market.interval,
                distill_frac=distill_frac,
                quick=distill_quick,
            )
            log(
                f"families distil on {family.train_csv} (bars before {family.from_ms} ms); "
                "folds decide the rest"
            )
        write_marker(out)
        task = ray.remote(run_trial)
        kw: dict[str, Any] = {
            "folds": folds,
            "metric": metric,
            "warmup_bars": warmup_bars,
            "cache_dir": cache_dir,
            "family": family,
        }
        computed = 0

        def launch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            nonlocal computed
            refs = [task.remote(base_toml, ov, list(data), models, **kw) for ov in batch]
            got: list[dict[str, Any]] = []
            for ov, ref in zip(batch, refs, strict=True):
                row: dict[str, Any] = {"id": trial_id(ov), "overrides": ov, "fingerprint": fp}
                try:
                    row.update(ray.get(ref), status="ok", error=None)
                except Exception as exc:  # a failed trial is recorded (with its error), the sweep goes on
                    cause = getattr(exc, "cause", None) or exc
                    row.update(status="failed", error=f"{type(cause).__name__}: {cause}".splitlines()[0])
                got.append(row)
                computed += 1
                log(_trial_line(row, ov))
            rows.extend(got)
            write_atomic(out / JOURNAL, json.dumps(rows, indent=1) + "\n")  # a rerun resumes from here
            write_marker(out)
            return got

        interrupts.phase("training", f"running the sweep's trials on Ray (fingerprint {fp})")
        if search == "grid":
            todo = [ov for ov in grid_trials(grid) if trial_id(ov) not in done]
            if trials is not None:
                todo = todo[: max(0, trials - len(done))]
            batch_size = max(1, int(ray.cluster_resources().get("CPU", 1)) * 4)
            for i in range(0, len(todo), batch_size):
                launch(todo[i : i + batch_size])
        else:
            _optuna(grid, rows, launch, n=trials or 20, seed=seed, batch=int(ray.cluster_resources()["CPU"]))
    finally:
        if started:
            ray.shutdown()
    interrupts.phase("export", "writing trials.csv, best.toml and sweep.png")
    best = _publish(out, base, rows, keys, family, folds=folds, metric=metric)
    return {"rows": rows, "best": best, "seconds": time.perf_counter() - t0, "computed": computed}


def _trial_line(row: dict[str, Any], ov: dict[str, Any]) -> str:
    fam = (
        f" family {row['family']} ({'distilled' if row['distilled'] else 'cached'})"
        if "family" in row
        else ""
    )
    return f"trial {row['id']} {row['status']}:{fam} {ov} -> {row.get('validation', row.get('error'))}"


def _publish(
    out: Path,
    base: Config,
    rows: list[dict[str, Any]],
    keys: list[str],
    family: FamilyPlan | None,
    *,
    folds: int,
    metric: str,
) -> dict[str, Any] | None:
    """Write trials.json/.csv, best.toml and sweep.png together (a signal waits for the swap), drop the
    journal, record the files in the marker; returns the best row (None: no trial succeeded)."""
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["validation"]) if ok else None
    texts = {"trials.json": json.dumps(rows, indent=1) + "\n", "trials.csv": _trials_csv(rows, keys)}
    if best is not None:
        texts["best.toml"] = _best_toml(base, best, family, n_ok=len(ok), folds=folds, metric=metric)
    fd, png = tempfile.mkstemp(prefix=".sweep.png.", dir=out)
    os.close(fd)
    try:
        plotted = _plot(Path(png), rows, metric)
        with deferred():  # the outputs change together or not at all
            for name, text in texts.items():
                write_atomic(out / name, text)
            if plotted:
                os.replace(png, out / "sweep.png")
            (out / JOURNAL).unlink(missing_ok=True)
            write_marker(out)
    finally:
        Path(png).unlink(missing_ok=True)
    return best


def _best_toml(
    base: Config, best: dict[str, Any], family: FamilyPlan | None, *, n_ok: int, folds: int, metric: str
) -> str:
    """best.toml: the base config with the best trial's overrides (and, in a sweep that distils, the
    family that trial distilled), headed by how it was chosen."""
    best_ov = dict(best["overrides"])
    if family is not None:  # the family that trial distilled (trained on the rows before the folds)
        best_ov["models.dir"] = str(Path(family.root) / best["family"])
        if set(family.symbols) != {family.symbol}:  # the sweep scored it on every data symbol
            best_ov["models.symbols"] = "any"
    best_cfg = apply(base, best_ov, source="best")
    head = (
        f"# offline sweep: best of {n_ok} trials by mean validation {metric} "
        f"over folds 1..{folds - 1}\n"
        f"# trial {best['id']}: validation {best['validation']:.4f} (spread {best['spread']:.4f}), "
        f"held-out fold {best['heldout']:.4f}\n# overrides: {json.dumps(best['overrides'])}\n\n"
    )
    return head + dump_config(best_cfg)


def _optuna(
    grid: Mapping[str, list[Any]],
    rows: list[dict[str, Any]],
    launch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    *,
    n: int,
    seed: int,
    batch: int,
) -> None:
    """TPE over the grid's categorical candidates, `batch` trials asked at a time; finished trials seed it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.CategoricalDistribution(v) for k, v in grid.items()
    }
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    seen = {r["id"] for r in rows}
    for r in rows:
        if r["status"] == "ok" and all(r["overrides"].get(k) in v for k, v in grid.items()):
            study.add_trial(
                optuna.trial.create_trial(params=r["overrides"], distributions=dists, value=r["validation"])
            )
    left = n - len(seen)
    while left > 0:
        asked = [study.ask(dists) for _ in range(min(batch, left))]
        batch_ov = [{k: t.params[k] for k in grid} for t in asked]
        todo = [ov for ov in batch_ov if trial_id(ov) not in seen]
        results = {r["id"]: r for r in launch(todo)} if todo else {}
        for t, ov in zip(asked, batch_ov, strict=True):
            got: dict[str, Any] | None = results.get(trial_id(ov))
            if got is None:
                got = next((x for x in rows if x["id"] == trial_id(ov)), None)
            ok = got is not None and got["status"] == "ok" and math.isfinite(got["validation"])
            study.tell(
                t,
                got["validation"] if ok and got is not None else None,
                state=None if ok else optuna.trial.TrialState.FAIL,
            )
            seen.add(trial_id(ov))
        left -= len(asked)


def print_result(res: dict[str, Any], out: Path, metric: str) -> None:
    rows = res["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = len(rows) - len(ok)
    print(
        f"sweep: {len(rows)} trials ({res['computed']} computed now, {failed} failed) "
        f"in {res['seconds']:.1f} s",
        file=sys.stdout,
    )
    best = res["best"]
    if best is not None:
        print(
            f"best {best['id']}: validation {metric} {best['validation']:.4f}, "
            f"held-out {best['heldout']:.4f}; "
            f"{json.dumps(best['overrides'])}"
        )
    print(f"wrote {out}/: trials.csv, trials.json" + (", best.toml, sweep.png" if best else ""))
