"""Walk-forward evaluation of the volatility head: chronological expanding-window folds.

The dataset's rows are cut in time. The first `first_train_frac` (default 0.5) of the rows (by time) is
training history only; the rest is split into `n_folds` test blocks of equal row count. Fold k trains on
everything before its test block and tests on the block:

    [ train | embargo | validation ] embargo [ test block k ] (later rows unused by fold k)

Inside the training span the pipeline's own split applies: train and validation in the ratio
`train_frac : val_frac`, separated by `embargo_rows(cfg)` bars (>= every target's horizon), and the same
embargo precedes the test block, so no training or validation row's target reaches into the test block.
Cuts are made on `start_ms` (the embargo in bars of `step_ms`), so a gap only widens them.

Per fold (and seed) `offline.distill.run_distillation` trains the teacher and every recipe of every size on
the fold's rows (progressive chain with and without the transfer set, one-shot, scratch; validation picks
the exported candidate per size), and every candidate is scored on the test block: vol R^2 of log vol,
Spearman IC, QLIKE raw and bias-corrected (variance scale fitted on the training rows), retention of the
teacher's vol R^2, fidelity to the teacher (R^2 of student vs teacher log-vol) and the return head's IC.
HAR-RV and HAR-RV + hour-of-day are fitted here by OLS on the fold's training rows
(`fit_har_baselines`, the procedure of `offline.evaluate.vol_baselines`) and scored on the same test rows.

Every model is scored per symbol (`score_candidate`, the metrics of `offline.evaluate`, checked equal by
a test): for one bar series that is the pipeline's own test score; for a pooled dataset (several symbols
trained as one family, `Dataset.series`) each symbol's test rows are scored on their own, the QLIKE scale
is fitted on that symbol's training rows, and each symbol gets its own HAR fitted on its own training rows.

`python -m offline distill --folds K` runs this and writes the fold table (`walkforward.json`,
`walkforward.txt`); it exports and promotes **no** family: each fold's models are evaluation artefacts of a
shorter history, and the family to ship is the one `offline distill` trains on all the data.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from bot.config import Config, DistillConfig, TierConfig
from bot.core.errors import ConfigError
from bot.core.params import RegimeConfig
from bot.models.manifest import ReturnSkill
from bot.outputs import StagedOutput
from offline import vol as volmod
from offline.calibrate import calibrate
from offline.data import Dataset, embargo_rows, load_sources
from offline.distill import DistillResult, run_distillation
from offline.evaluate import rank_products, return_skill
from offline.export import write_json
from offline.fanout import FanOut, Runner, fan_out
from offline.folds import Fold, check_n_folds, fold_dataset, walkforward_folds
from offline.routes import choose_routes, routed_on_rows, row_regimes
from offline.train import F64, I64, TierModel, information_coefficient
from offline.walkforward_report import METRICS, WalkForward, format_walkforward, to_json

BoolArr = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class HarBaseline:
    """A HAR model fitted on one fold's training rows, its QLIKE variance scale and its test metrics."""

    name: str
    model: volmod.HarRV
    qlike_scale: float
    metrics: dict[str, float]


def har_designs(ds: Dataset) -> dict[str, F64]:
    """HAR regressors of every row: "har" (log RV over 12/48/288 bars) and "har_tod" (+ hour of day).

    The dataset's own (`Dataset.har_X`, per series when pooled) when it carries them, else built from its
    one bar series."""
    if ds.har_X is not None and ds.har_tod_X is not None:
        return {"har": ds.har_X, "har_tod": ds.har_tod_X}
    close = np.array([b.close for b in ds.bars], dtype=np.float64)
    starts = np.array([b.start_ms for b in ds.bars], dtype=np.int64)
    return {
        "har": volmod.har_design(close)[ds.bar_index],
        "har_tod": volmod.har_design(close, starts, time_of_day=True)[ds.bar_index],
    }


def series_rows(ds: Dataset) -> dict[str, Callable[[], BoolArr]]:
    """Row mask per symbol, made when called (one symbol's mask at a time: hundreds of symbols' masks
    at once would weigh more than the rows): one entry for one series; per pooled series otherwise."""
    prov = ds.provenance
    if ds.series is None:
        name = str(prov.get("symbol") or prov.get("source") or "data")
        return {name: lambda: np.ones(ds.n_rows, dtype=np.bool_)}
    series = ds.series
    names = prov.get("symbols") or [f"series{k}" for k in range(ds.n_series)]
    return {str(name): functools.partial(_mask, series, k) for k, name in enumerate(names)}


def _mask(series: I64, k: int) -> BoolArr:
    return np.asarray(series == k, dtype=np.bool_)


def fit_har_baselines(
    ds: Dataset,
    fold: Fold,
    *,
    designs: Mapping[str, F64] | None = None,
    rows: BoolArr | None = None,
) -> dict[str, HarBaseline]:
    """HAR-RV and HAR-RV + hour-of-day: OLS and the QLIKE scale on the fold's training rows only, scored
    on its test rows (rows whose regressors are incomplete, in the first day of bars, are left out).

    Args:
        rows: restrict to these rows (one symbol of a pooled dataset: its own HAR); None = all rows.
    """
    if ds.log_vol is None:
        raise ConfigError("walk-forward folds score the volatility head: set [distill] vol_head = true")
    lv = ds.log_vol
    tr, te = fold.train, fold.test
    if rows is not None:
        tr, te = tr[rows[tr]], te[rows[te]]
    out: dict[str, HarBaseline] = {}
    for key, X in (designs or har_designs(ds)).items():
        model = volmod.HarRV().fit(X[tr], lv[tr])
        scale = volmod.qlike_scale(np.exp(lv[tr]), np.exp(model.predict(X[tr])))
        m = volmod.vol_metrics(np.exp(lv[te]), model.predict(X[te]), scale=scale)
        out[key] = HarBaseline(
            name=key,
            model=model,
            qlike_scale=scale,
            metrics={
                "vol_r2": m["r2_log_vol"],
                "vol_ic": m["ic"],
                "vol_qlike": m["qlike"],
                "vol_qlike_bc": m["qlike_bc"],
            },
        )
    return out


def score_candidate(
    ds: Dataset, model: TierModel, teacher: TierModel, train: I64, test: I64
) -> dict[str, float | None]:
    """A candidate's vol head on `test` rows as `offline.evaluate.vol_metrics` scores it (QLIKE scale on
    `train` rows), its return head's IC, and its size; per symbol when the rows are one symbol's."""
    assert ds.log_vol is not None
    lv, X = ds.log_vol, ds.X
    pred = model.predict_log_vol(X[test])
    scale = volmod.qlike_scale(np.exp(lv[train]), np.exp(model.predict_log_vol(X[train])))
    m = volmod.vol_metrics(np.exp(lv[test]), pred, scale=scale)
    teacher_pred = pred if model is teacher else teacher.predict_log_vol(X[test])
    teacher_r2 = volmod.r2(lv[test], teacher_pred)
    return {
        "vol_r2": m["r2_log_vol"],
        "vol_ic": m["ic"],
        "vol_qlike": m["qlike"],
        "vol_qlike_bc": m["qlike_bc"],
        "vol_retention": m["r2_log_vol"] / teacher_r2 if teacher_r2 > 0.0 else None,
        "vol_fidelity_r2": volmod.r2(teacher_pred, pred),
        "ic": information_coefficient(model.predict(X[test]), ds.y[test]),
        "params": float(model.params),
        "compression": teacher.params / model.params,
    }


def run_walkforward(
    ds: Dataset,
    tiers: Mapping[str, TierConfig],
    cfg: DistillConfig,
    *,
    n_folds: int,
    seeds: Sequence[int],
    epochs: int,
    first_train_frac: float = 0.5,
    log: Callable[[str], None] | None = None,
    regime: RegimeConfig | None = None,
    runner: Runner | None = None,
) -> WalkForward:
    """Train and score every fold for every seed (see the module docstring).

    Args:
        ds: a dataset with a vol head (`offline.data.load_dataset`); its own splits are ignored.
        tiers: tier configs, largest (the teacher) first.
        n_folds: test blocks, >= 2.
        seeds: training seeds; each fold is trained once per seed.
        epochs: maximum epochs per model.
        log: receives one line per fold and seed.
        runner: where the fold x seed tasks run (`offline.fanout`; None = in this process); every task
            reads the one shared copy of `ds` (share it first to hold it once). The result is the same
            wherever they run.
        regime: with it, each fold (first seed) also calibrates its regimes on its training bars, chooses
            its routes on its validation rows (`offline.routes.choose_routes`, as `offline distill` does)
            and scores the routed family against always-teacher on its test block (`info["routes"]`).

    Raises:
        ConfigError: bad `n_folds`, no vol head, no seed.
        DataError: too few rows per fold.
    """
    if ds.log_vol is None:
        raise ConfigError("walk-forward folds score the volatility head: set [distill] vol_head = true")
    if not seeds:
        raise ConfigError("walk-forward: expected at least one seed")
    say = log or (lambda _msg: None)
    folds = walkforward_folds(ds, n_folds, cfg, first_train_frac=first_train_frac)
    designs = har_designs(ds)
    symbols = series_rows(ds)
    fold_info = [_fold_info(ds, fold) for fold in folds]
    t0 = time.perf_counter()
    baselines = _baselines(ds, folds, symbols, designs)
    jobs = [(fold, seed, seed == seeds[0], tiers, cfg, epochs, regime) for fold in folds for seed in seeds]

    def done(job: tuple[Any, ...], got: FoldSeed) -> None:
        fold, seed = job[0], job[1]
        say(
            f"fold {fold.index}/{n_folds} seed {seed}: {fold.train.size} train / {fold.val.size} val / "
            f"{fold.test.size} test rows, {got.seconds:.1f} s"
        )

    runner = runner or Runner(None)
    if not runner.shares(ds):
        runner.share(ds)
    say(f"walk-forward: {len(jobs)} fold x seed task(s) {runner.where}")
    results = runner.map(fold_seed, jobs, on_result=done)
    rows, skill_products, skill_starts, fold_routes = _assemble(folds, jobs, results, baselines)
    info = {
        "n_folds": n_folds,
        "seeds": list(seeds),
        "epochs": epochs,
        "first_train_frac": first_train_frac,
        "embargo_rows": embargo_rows(cfg),
        "vol_horizon_bars": cfg.vol_horizon_bars,
        "horizon_bars": cfg.horizon_bars,
        "tiers": list(tiers),
        "n_rows": ds.n_rows,
        "symbols": list(symbols),
        "pooled": len(symbols) > 1,
        "provenance": ds.provenance,
        "total_s": time.perf_counter() - t0,
        "return_skill": pooled_return_skill(skill_products, skill_starts, cfg, tier=next(iter(tiers))),
        "routes": fold_routes,
        "ran": runner.where,
    }
    return WalkForward(rows=rows, folds=fold_info, info=info)


def _assemble(
    folds: Sequence[Fold],
    jobs: Sequence[tuple[Any, ...]],
    results: Sequence[FoldSeed],
    baselines: Mapping[int, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[F64], list[I64], list[dict[str, Any]]]:
    """The fold table in fold order (baselines, then each seed's rows), the first seed's rank products and
    times per test block, and each fold's routes."""
    by_fold: dict[int, list[FoldSeed]] = {}
    for job, got in zip(jobs, results, strict=True):
        by_fold.setdefault(job[0].index, []).append(got)
    rows: list[dict[str, Any]] = []
    products: list[F64] = []
    starts: list[I64] = []
    routes: list[dict[str, Any]] = []
    for fold in folds:
        rows.extend(baselines[fold.index])
        for got in by_fold[fold.index]:
            rows.extend(got.rows)
            if got.skill_products is not None and got.skill_starts is not None:
                products.append(got.skill_products)
                starts.append(got.skill_starts)
            if got.routes is not None:
                routes.append(got.routes)
    return rows, products, starts, routes


def _baselines(
    ds: Dataset,
    folds: Sequence[Fold],
    symbols: Mapping[str, Callable[[], BoolArr]],
    designs: Mapping[str, F64],
) -> dict[int, list[dict[str, Any]]]:
    """Each fold's HAR baseline rows, symbol by symbol (one symbol's row mask at a time)."""
    out: dict[int, list[dict[str, Any]]] = {fold.index: [] for fold in folds}
    for sym, mask_of in symbols.items():
        mask = mask_of()
        for fold in folds:
            for key, base in fit_har_baselines(ds, fold, designs=designs, rows=mask).items():
                out[fold.index].append(
                    _row(fold.index, None, sym, "baseline", key, key, False, 0, base.metrics)
                )
    return out


def _fold_info(ds: Dataset, fold: Fold) -> dict[str, Any]:
    return {
        "fold": fold.index,
        "train_rows": int(fold.train.size),
        "val_rows": int(fold.val.size),
        "test_rows": int(fold.test.size),
        "train_start_ms": int(ds.start_ms[fold.train].min()),
        "test_start_ms": fold.test_start_ms,
        "test_end_ms": fold.test_end_ms,
    }


@dataclass(frozen=True, slots=True)
class FoldSeed:
    """One fold trained with one seed: its table rows, and (first seed only) the teacher's rank products
    and times on the test block and the fold's routes (with a regime config)."""

    rows: list[dict[str, Any]]
    skill_products: F64 | None
    skill_starts: I64 | None
    routes: dict[str, Any] | None
    seconds: float


def fold_seed(
    ds: Dataset,
    fold: Fold,
    seed: int,
    first: bool,
    tiers: Mapping[str, TierConfig],
    cfg: DistillConfig,
    epochs: int,
    regime: RegimeConfig | None,
) -> FoldSeed:
    """Train fold `fold` with `seed` and score every candidate per symbol on its test block (a Ray task,
    or a call in this process: `offline.fanout`)."""
    ts = time.perf_counter()
    fds = fold_dataset(ds, fold)
    res = run_distillation(fds, tiers, cfg, epochs=epochs, seed=seed)
    teacher = res.chosen[res.tier_names[0]].model
    products = starts = routes = None
    if first:  # ranked within the fold's test block, pooled over blocks by the caller
        products = rank_products(teacher.predict(ds.X[fold.test]), ds.y[fold.test])
        starts = ds.start_ms[fold.test]
        if regime is not None:
            routes = _fold_routes(res, fds, fold, regime, cfg)
    per_symbol = []
    for sym, mask_of in series_rows(ds).items():
        mask = mask_of()
        per_symbol.append((sym, fold.train[mask[fold.train]], fold.test[mask[fold.test]]))
    rows: list[dict[str, Any]] = []
    for name in res.tier_names:
        for c in res.candidates[name]:
            chosen = res.chosen[name] is c
            for sym, tr, te in per_symbol:
                m = score_candidate(ds, c.model, teacher, tr, te)
                m["train_s"] = c.fit.train_s
                rows.append(_row(fold.index, seed, sym, name, c.variant, c.recipe, chosen, c.stage, m))
    return FoldSeed(rows, products, starts, routes, time.perf_counter() - ts)


def _fold_routes(
    res: DistillResult, fds: Dataset, fold: Fold, regime: RegimeConfig, cfg: DistillConfig
) -> dict[str, Any]:
    """The routes fold `fold` would ship (calibrated on its training bars, chosen on its validation rows)
    and how they score on its test block against always-teacher."""
    calibration = calibrate(fds.train_bars_by_symbol(), regime)
    regimes = np.array(row_regimes(fds, calibration, regime))
    routing = choose_routes(res, fds, calibration, regime, cfg, regimes=regimes)
    return {
        "fold": fold.index,
        "routes": routing.choice.routes,
        "table": msgspec.to_builtins(routing.choice.table),
        "test": routed_on_rows(res, fds, routing, regimes, fold.test),
    }


def pooled_return_skill(
    products: Sequence[F64], starts: Sequence[I64], cfg: DistillConfig, *, tier: str
) -> dict[str, Any]:
    """The teacher's return-head IC and SE pooled over the folds' test blocks (first seed; each block
    ranked on its own: `offline.evaluate.return_skill`), as the manifest's `ReturnSkill` JSON."""
    ic, se, n = return_skill(np.concatenate(products), np.concatenate(starts), horizon_bars=cfg.horizon_bars)
    skill = ReturnSkill(ic=ic, se=se, n_rows=n, rows="walk-forward", tier=tier)
    out: dict[str, Any] = msgspec.to_builtins(skill)
    return out


def _row(
    fold: int,
    seed: int | None,
    symbol: str,
    tier: str,
    variant: str,
    recipe: str,
    chosen: bool,
    stage: int,
    metrics: Mapping[str, float | None],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "fold": fold,
        "seed": seed,
        "symbol": symbol,
        "tier": tier,
        "variant": variant,
        "recipe": recipe,
        "chosen": chosen,
        "stage": stage,
    }
    for k in METRICS:
        v = metrics.get(k)
        row[k] = None if v is None or not math.isfinite(v) else float(v)
    return row


def pipeline_walkforward(
    cfg: Config,
    *,
    data: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    n_folds: int,
    quick: bool = False,
    seed: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
    symbol: str | Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    n_seeds: int = 1,
    fanout: FanOut | None = None,
) -> tuple[WalkForward, str]:
    """`offline distill --folds K`: load `data` as `pipeline_distill` does (several CSVs: pooled, one
    family for all symbols, each scored on its own rows), run the folds with `n_seeds` seeds (`seed`,
    `seed + 1`, ...; each fold x seed a task where `fanout` says: a local Ray by default) and write
    `walkforward.json` and `walkforward.txt` into `out_dir` (staged; replaced only when it is empty or a
    previous walk-forward output). Exports no family. Returns the result and the printed table.

    Raises:
        ConfigError: bad `n_folds` or `n_seeds` (before any work), no vol head, an `out_dir` it must not
            write, or a Ray that cannot start or be joined (`offline.fanout`).
        DataError: bad data or too few rows per fold.
    """
    check_n_folds(n_folds)
    dc = cfg.distill
    if not dc.vol_head:
        raise ConfigError("--folds scores the volatility head: set [distill] vol_head = true")
    sources: list[str | Path] = [data] if isinstance(data, str | Path) else list(data)
    protect = [d for d in sources if str(d) != "synthetic"]
    n_bars = dc.quick_bars if quick else None
    if n_seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1 seed, got {n_seeds}")
    first_seed = dc.seed if seed is None else seed
    say = log or (lambda _msg: None)
    stage = StagedOutput(out_dir, kind="walkforward", protect=protect)
    with stage as tmp, fan_out(fanout or FanOut(), log=say) as runner:
        ds = load_sources(
            sources, dc, symbol=symbol, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last
        )
        ds = runner.share(ds)  # on Ray: the store's copy, read by every task; this process's own is freed
        wf = run_walkforward(
            ds,
            cfg.tiers,
            dc,
            n_folds=n_folds,
            seeds=[first_seed + k for k in range(n_seeds)],
            epochs=dc.quick_epochs if quick else dc.epochs,
            log=log,
            regime=cfg.regime,
            runner=runner,
        )
        wf.info["quick"] = quick
        table = format_walkforward(wf)
        write_json(tmp / "walkforward.json", to_json(wf))
        (tmp / "walkforward.txt").write_text(table + "\n", encoding="utf-8")
        stage.commit()
    return wf, table
