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

Each trial is one backtest (`bot.sim.backtest.Backtest`, the live engine) over the whole span (in a sweep
that distils: the span after the training rows); its decided bars are cut into `--folds` chronological
folds of equal time and each fold is scored by the annualised Sharpe of the portfolio's per-bar PnL
(`--metric`). The score that chooses is the mean over every fold but the last; the last fold is held out:
reported for every trial, never used to choose.

Outputs in DIR: trials.json + trials.csv (one row per trial: keys, per-fold scores, mean, spread, held-out,
family, status, error), best.toml (a complete config; in a sweep that distils, `[models] dir` names the
best trial's family), sweep.png (validation vs held-out score per trial).
Re-running the same command resumes: trials already finished with the same base config, data and models are
not recomputed; a failed trial is recorded with its error and retried on the next run.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from bot.config import Config, dump_config, parse_config
from bot.core.errors import ConfigError

POLICY_SECTIONS: Final = ("paper", "regime")
#: Sections whose keys shape the models: a trial that sweeps them distils its own family.
SHAPING_SECTIONS: Final = ("tiers", "distill")
METRICS: Final = ("sharpe", "pnl_usd")
#: `[regime]` keys the offline regime calibration reads (`offline.calibrate`, stored in the manifest): they
#: shape a distilled family too, so they are part of its hash.
CALIBRATION_KEYS: Final = (
    "vol_window",
    "trend_window",
    "volume_window",
    "vol_calm_quantile",
    "vol_volatile_quantile",
    "vol_crisis_quantile",
    "trend_calm_quantile",
)
#: Sub-directory of the sweep's `--out` holding the distilled families (`<hash>/`) and their training rows.
FAMILIES_DIR: Final = "models"


# ---- grid -----------------------------------------------------------------------------------------------


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


# ---- families distilled by trials ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    """Where and from what a sweep's trials distil their families (built once by the driver).

    Attributes:
        root: `DIR/models`: families in `<hash>/`, the key that made each in `<hash>.json`.
        train_csv: the training rows (`training_rows`), a klines CSV.
        data_id: sha256 of `train_csv`'s bytes (the identity of the rows in the family hash).
        from_ms: the first decided bar of every trial of the sweep; the training rows all start before it.
        quick: distil with `[distill] quick_bars` / `quick_epochs`.
        symbol: the symbol of the training rows (recorded in the manifest's provenance).
        symbols: every symbol the trials decide (the family serves them all).
    """

    root: str
    train_csv: str
    data_id: str
    from_ms: int
    quick: bool
    symbol: str
    symbols: tuple[str, ...]


def training_rows(
    data: Sequence[str], root: Path, *, interval: str, distill_frac: float, quick: bool
) -> FamilyPlan:
    """Cut the data's time span: the first `distill_frac` of it trains families, the rest is decided.

    `cut = lo + distill_frac * (hi - lo + one bar)`, aligned down to the bar interval, where `lo`/`hi` are the
    first/last bar over all `data` files. The training rows are the first `data` file's bars with
    `start_ms < cut` (one family serves every symbol, as live; a distillation reads one series). Every trial
    then decides bars from `cut` on only, so no fold, validation or held-out, holds a row the family was
    trained, validated or tested on (their targets end before `cut` too: the rows stop there).

    Raises:
        ConfigError: `distill_frac` not in (0, 1). DataError: an unreadable or malformed CSV.
    """
    from bot.core.bars import interval_ms
    from bot.sim.backtest_cache import load_symbol
    from offline.__main__ import write_klines_csv  # the project's one klines writer

    if not 0.0 < distill_frac < 1.0:
        raise ConfigError(f"distill_frac: expected a fraction in (0, 1), got {distill_frac}")
    step = interval_ms(interval)
    series = [load_symbol(arg, interval_ms=step) for arg in data]
    lo = min(s.bars[0].start_ms for s in series)
    hi = max(s.bars[-1].start_ms for s in series)
    cut = lo + int((hi - lo + step) * distill_frac) // step * step
    first = series[0]
    rows = [b for b in first.bars if b.start_ms < cut]
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"train_{first.symbol}.csv"
    write_klines_csv(rows, path)
    data_id = hashlib.sha256(path.read_bytes()).hexdigest()
    return FamilyPlan(
        root=str(path.parent.resolve()),
        train_csv=str(path.resolve()),
        data_id=data_id,
        from_ms=cut,
        quick=quick,
        symbol=first.symbol,
        symbols=tuple(s.symbol for s in series),
    )


def family_key(cfg: Config, plan: FamilyPlan) -> dict[str, Any]:
    """Everything that shapes a family distilled from `plan`'s rows under `cfg` (what its hash covers)."""
    from bot.core.features import FEATURE_VERSION

    return {
        "tiers": msgspec.to_builtins(cfg.tiers),
        "distill": msgspec.to_builtins(cfg.distill),
        "regime_calibration": {k: getattr(cfg.regime, k) for k in CALIBRATION_KEYS},
        "interval": cfg.market.interval,
        "feature_version": FEATURE_VERSION,
        "quick": plan.quick,
        "symbol": plan.symbol,
        "data": plan.data_id,
    }


def family_hash(key: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `key` (sorted keys, no spaces), first 16 hex digits."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def ensure_family(cfg: Config, plan: FamilyPlan) -> tuple[Path, dict[str, Any]]:
    """The family of `cfg`'s shaping keys: `plan.root/<hash>`, distilled now unless it is there already.

    A per-hash file lock (`fcntl.flock`) makes concurrent trials with the same keys distil once: the others
    wait and reuse it. `pipeline_distill` writes the directory atomically, so one with a manifest is whole.

    Returns:
        (family directory, {"family": hash, "distilled": True when distilled by this call, "distill_s"}).
    """
    import fcntl

    from bot.manifest import MANIFEST_NAME
    from offline.pipeline import pipeline_distill

    key = family_key(cfg, plan)
    h = family_hash(key)
    root = Path(plan.root)
    target = root / h
    t0 = time.perf_counter()
    with (root / f".{h}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        distilled = not (target / MANIFEST_NAME).is_file()
        if distilled:
            pipeline_distill(
                cfg,
                data=plan.train_csv,
                out_dir=target,
                quick=plan.quick,
                allow_gaps=True,
                symbol=plan.symbol,
            )
            _write_atomic(root / f"{h}.json", json.dumps(key, indent=1, sort_keys=True) + "\n")
    return target, {"family": h, "distilled": distilled, "distill_s": time.perf_counter() - t0}


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
    result = bt.run(cfg)
    per_time: dict[int, float] = {}
    for r in result.records:
        per_time[r.start_ms] = per_time.get(r.start_ms, 0.0) + r.bar_pnl_usd
    times = np.array(sorted(per_time), dtype=np.int64)
    pnl = np.array([per_time[int(t)] for t in times], dtype=np.float64)
    bpy = YEAR_MS / interval_ms(cfg.market.interval)
    scores = fold_scores(times, pnl, folds=folds, bars_per_year=bpy, metric=metric)
    val = scores[:-1]
    return {
        "folds": scores,
        "validation": float(np.mean(val)),
        "spread": float(np.std(val)),
        "heldout": scores[-1],
        "pnl_usd": float(pnl.sum()),
        "bars": len(result.records),
        "seconds": time.perf_counter() - t0,
        **fam,
    }


# ---- the sweep --------------------------------------------------------------------------------------


def _fingerprint(
    base_toml: str, data: Sequence[str], models: str, folds: int, metric: str, family: FamilyPlan | None
) -> str:
    h = hashlib.sha256()
    extra = () if family is None else (f"distil:{family.from_ms}:{family.quick}:{family.data_id}",)
    for part in (base_toml, *data, models, str(folds), metric, *extra):
        h.update(part.encode())
        h.update(b"\0")
    for d in data:
        path = Path(d.partition("=")[2] if "=" in d else d)
        h.update(hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"?")
    manifest = Path(models) / "manifest.json"
    h.update(manifest.read_bytes() if manifest.exists() else b"?")
    return h.hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(out: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    _write_atomic(out / "trials.json", json.dumps(rows, indent=1) + "\n")
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
    fd, tmp = tempfile.mkstemp(prefix=".trials.csv.", dir=out)
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
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
    os.replace(tmp, out / "trials.csv")


def _plot(out: Path, rows: list[dict[str, Any]], metric: str) -> bool:
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
    fig.savefig(out / "sweep.png", dpi=100)
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
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run the sweep; returns {"rows", "best", "seconds", "computed"}. See the module docstring.

    Args:
        models: the family of a policy-only grid (unused when the grid shapes the models).
        distill_frac: when the grid shapes the models, the share of the data's time span whose first file's
            bars train the trials' families; bars after it are the folds (`training_rows`).
        distill_quick: distil those families with `[distill] quick_bars` / `quick_epochs`.
    """
    import importlib

    ray: Any = importlib.import_module("ray")  # untyped enough that mypy --strict cannot check its calls

    if folds < 2:
        raise ConfigError(f"--folds: expected >= 2 (the last one is held out), got {folds}")
    if metric not in METRICS:
        raise ConfigError(f"--metric: expected one of {list(METRICS)}, got {metric!r}")
    keys = list(grid)
    base_toml = dump_config(base)
    for ov in grid_trials({k: v[:1] for k, v in grid.items()}):
        apply(base, ov, source="grid")  # a key the schema does not know fails before Ray starts
    out.mkdir(parents=True, exist_ok=True)
    family: FamilyPlan | None = None
    if shapes_models(grid):
        family = training_rows(
            data,
            out / FAMILIES_DIR,
            interval=base.market.interval,
            distill_frac=distill_frac,
            quick=distill_quick,
        )
        log(f"families distil on {family.train_csv} (bars before {family.from_ms} ms); folds decide the rest")
    fp = _fingerprint(base_toml, data, models, folds, metric, family)
    rows: list[dict[str, Any]] = []
    prev = out / "trials.json"
    if prev.exists():
        try:
            old = json.loads(prev.read_text(encoding="utf-8"))
        except ValueError:
            old = []
        rows = [r for r in old if r.get("fingerprint") == fp and r.get("status") == "ok"]
    done = {r["id"] for r in rows}
    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        if address is None:
            cpus = num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
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
            fam = (
                f" family {row['family']} ({'distilled' if row['distilled'] else 'cached'})"
                if "family" in row
                else ""
            )
            log(f"trial {row['id']} {row['status']}:{fam} {ov} -> {row.get('validation', row.get('error'))}")
        rows.extend(got)
        _save(out, rows, keys)
        return got

    try:
        if search == "grid":
            todo = [ov for ov in grid_trials(grid) if trial_id(ov) not in done]
            if trials is not None:
                todo = todo[: max(0, trials - len(done))]
            batch_size = max(1, int(ray.cluster_resources().get("CPU", 1)) * 4)
            for i in range(0, len(todo), batch_size):
                launch(todo[i : i + batch_size])
        elif search == "optuna":
            _optuna(grid, rows, launch, n=trials or 20, seed=seed, batch=int(ray.cluster_resources()["CPU"]))
        else:
            raise ConfigError(f"--search: expected grid or optuna, got {search!r}")
    finally:
        if started:
            ray.shutdown()
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["validation"]) if ok else None
    if best is not None:
        best_ov = dict(best["overrides"])
        if family is not None:  # the family that trial distilled (trained on the rows before the folds)
            best_ov["models.dir"] = str(Path(family.root) / best["family"])
            if set(family.symbols) != {family.symbol}:  # the sweep scored it on every data symbol
                best_ov["models.symbols"] = "any"
        best_cfg = apply(base, best_ov, source="best")
        head = (
            f"# offline sweep: best of {len(ok)} trials by mean validation {metric} "
            f"over folds 1..{folds - 1}\n"
            f"# trial {best['id']}: validation {best['validation']:.4f} (spread {best['spread']:.4f}), "
            f"held-out fold {best['heldout']:.4f}\n# overrides: {json.dumps(best['overrides'])}\n\n"
        )
        _write_atomic(out / "best.toml", head + dump_config(best_cfg))
    _plot(out, rows, metric)
    return {"rows": rows, "best": best, "seconds": time.perf_counter() - t0, "computed": computed}


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
