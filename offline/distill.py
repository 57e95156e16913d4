"""The distillation run: teacher, progressive chain, one-shot and scratch baselines, and the exported pick.

`run_distillation` is a few named steps over one shared `Run` (data, splits, scalers, transfer set):
train the teacher, run the progressive chain (with and without the transfer set), the one-shot and
scratch baselines per student size, evaluate every candidate on the same rows, and choose the exported
model per tier. The building blocks (loss identity, schedules, `fit_mlp`, metrics) live in `offline.train`.

With a volatility head (`Dataset.log_vol`) every tier is one MLP with two outputs, (return, log vol), both
standardised on the training rows; every recipe blends both heads the same way (stage k learns
`alpha_k * previous model + (1 - alpha_k) * labels` per head), early stopping watches the mean validation
MSE of the two heads and the exported candidate of a size is the one with the best mean validation R^2 of
the two heads. The vol head is scored against HAR-RV and HAR-RV + hour-of-day fitted on the same training
rows (`info["vol_baselines"]`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.config import DistillConfig, TierConfig
from offline import vol as volmod
from offline.data import Dataset
from offline.evaluate import evaluate, vol_baselines
from offline.run import Candidate, Run, Teacher
from offline.teacher import train_teacher
from offline.train import stage_alpha, stage_temperature


@dataclass(slots=True)
class DistillResult:
    """Everything a run produced: candidates per tier, the chosen family, and run facts."""

    tier_names: list[str]
    candidates: dict[str, list[Candidate]]
    chosen: dict[str, Candidate]
    info: dict[str, Any]


def _progressive_chain(run: Run, teacher: Teacher, *, with_transfer: bool) -> list[Candidate]:
    """Stage k distils student k from stage k-1 (the teacher at k = 1), one candidate per student size."""
    variant = "progressive" if with_transfer else "progressive_no_transfer"
    prev, prev_S = teacher.model, teacher.on_students
    chain: list[Candidate] = []
    for k, name in enumerate(run.students, start=1):
        a = stage_alpha(k, run.n_stages, run.cfg.alpha_max, schedule=run.cfg.alpha_schedule)
        temp = stage_temperature(k, run.n_stages, run.cfg.t_max, run.cfg.gamma)
        m, fit = run.distill(
            name, prev, prev_S, a, with_transfer=with_transfer, desc=f"{variant} {k}/{run.n_stages} {name}"
        )
        c = Candidate(name, "progressive", variant, k, m, a, temp, with_transfer, fit)
        evaluate(run, teacher, c, prev_S)
        chain.append(c)
        run.say(f"{variant} stage {k} {name}: val_r2 {c.metrics['val_r2']:.4f} ({fit.train_s:.1f} s)")
        prev, prev_S = m, m.predict_std_all(run.student_X)
    return chain


def _one_shot(run: Run, teacher: Teacher, name: str, k: int, same_size: Sequence[Candidate]) -> Candidate:
    """Student `name` distilled straight from the teacher with the chain's first-stage alpha.

    At the first student size this is chain stage 1 (same recipe, same run): that candidate is relabelled.
    """
    transfer = run.has_transfer
    first = next((c for c in same_size if c.stage == 1 and c.transfer == transfer), None)
    if first is not None:
        c = copy.copy(first)
        c.recipe, c.variant = "one_shot", "one_shot"
        return c
    a1 = stage_alpha(1, run.n_stages, run.cfg.alpha_max, schedule=run.cfg.alpha_schedule)
    t1 = stage_temperature(1, run.n_stages, run.cfg.t_max, run.cfg.gamma)
    m, fit = run.distill(
        name, teacher.model, teacher.on_students, a1, with_transfer=transfer, desc=f"one_shot {name}"
    )
    c = Candidate(name, "one_shot", "one_shot", k, m, a1, t1, transfer, fit)
    evaluate(run, teacher, c, teacher.on_students)
    return c


def _scratch(run: Run, teacher: Teacher, name: str, k: int) -> Candidate:
    """Student `name` trained on the labels only (no teacher, no transfer set)."""
    m, fit = run.train(name, run.student_X, run.student_y, desc=f"scratch {name}")
    c = Candidate(name, "scratch", "scratch", k, m, 0.0, 1.0, False, fit)
    evaluate(run, teacher, c, teacher.on_students)
    return c


def _choose(run: Run, teacher: Teacher, candidates: Mapping[str, list[Candidate]]) -> dict[str, Candidate]:
    """The exported model per tier: the teacher, then per student size the best validation score (first on
    ties): val R^2 of the return head, or with a vol head the mean of both heads' val R^2. A chosen vol
    head serves its forecast with the variance scale fitted on the validation rows (`vol_var_scale`), so the
    exported `vol` is unbiased in variance rather than the exp of a mean log."""
    chosen: dict[str, Candidate] = {run.names[0]: teacher.candidate}
    for name in run.students:
        chosen[name] = max(candidates[name], key=lambda c: c.metrics["val_score"] or -math.inf)
    for c in chosen.values():
        var_scale = c.metrics.get("vol_var_scale")
        if var_scale is not None:
            c.model.vol_var_scale = float(var_scale)
            c.model.vol_var_scale_by_series = _series_var_scales(run, c)
    return chosen


def _series_var_scales(run: Run, c: Candidate) -> dict[int, float]:
    """Each pooled symbol's variance scale on its own validation rows ({} for one series)."""
    if run.series is None or run.log_vol is None:
        return {}
    out: dict[int, float] = {}
    for k in np.unique(run.series[run.val_rows]):
        rows = run.val_rows[run.series[run.val_rows] == k]
        pred = c.model.predict_log_vol(run.X[rows])
        out[int(k)] = volmod.qlike_scale(np.exp(run.log_vol[rows]), np.exp(pred))
    return out


def _run_info(run: Run, teacher: Teacher) -> dict[str, Any]:
    """Run facts for the manifest and report: row counts, options, target scaling, the teacher's test R^2."""
    cfg, folds = run.cfg, run.cfg.teacher_folds
    return {
        "train_rows": len(run.train_rows),
        "teacher_rows": len(run.teacher_rows),
        "student_rows": len(run.student_rows),
        "transfer_rows": int(run.transfer_X.shape[0]),
        "val_rows": len(run.val_rows),
        "test_rows": len(run.test_rows),
        "epochs": run.epochs,
        "seed": run.seed,
        "teacher_folds": folds,
        "heldout_frac": cfg.heldout_frac if folds == 0 else None,
        "y_mean": run.y_mean,
        "y_scale": run.y_scale,
        "teacher_test_r2": teacher.test_r2,
        "n_stages": run.n_stages,
        "alpha_schedule": cfg.alpha_schedule,
        "alpha_max": cfg.alpha_max,
        "vol_head": run.has_vol,
        "vol_horizon_bars": cfg.vol_horizon_bars if run.has_vol else None,
        "vol_mean": run.vol_mean,
        "vol_scale": run.vol_scale,
        "vol_baselines": vol_baselines(run),
        "teacher_l2_val_mse": dict(run.teacher_search),
        "pooled_symbols": run.rows_per_bar,
    }


def run_distillation(
    ds: Dataset,
    tiers: Mapping[str, TierConfig],
    cfg: DistillConfig,
    *,
    epochs: int,
    seed: int,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> DistillResult:
    """Train the teacher, the progressive chain (with and without a transfer set) and the baselines.

    Teacher predictions for the students are out-of-sample: with `teacher_folds = 0` the training rows are
    split chronologically (`heldout_frac`): the teacher learns the first part and every student (all
    recipes, for a fair comparison) learns the held-out last part; with `teacher_folds = K >= 2` the
    teacher learns all training rows and students see K-fold out-of-fold teacher predictions (each fold
    purged by `embargo_bars` rows either side).

    The chain's stage k learns with `stage_alpha(k, ..., schedule=cfg.alpha_schedule)`. One-shot uses the
    chain's first-stage alpha, `alpha_1` of the same schedule (`alpha_max * (1 - 1/N)` when linear,
    `alpha_max` when constant), so chain and one-shot differ only in the chaining, and at the first
    student size one-shot *is* chain stage 1 (one run, shared). Scratch learns the labels only; under the
    linear schedule it equals the last stage of the chain without a transfer set (`alpha_N = 0`).

    Each tier after the first is then the candidate of its size with the best validation R^2 on labels.

    Args:
        tiers: tier configs, largest (the teacher) first; at least two.
        epochs: maximum epochs per model.
        seed: seed of every MLP and of the transfer set.
        progress: show a tqdm bar per model (stderr).
        log: receives one human-readable line per teacher and chain stage; None = silent.
    """
    run = Run.prepare(ds, tiers, cfg, epochs=epochs, seed=seed, progress=progress, log=log)
    teacher = train_teacher(run)
    candidates: dict[str, list[Candidate]] = {name: [] for name in run.names}
    candidates[run.names[0]].append(teacher.candidate)
    for with_transfer in [True, False] if run.has_transfer else [False]:
        for c in _progressive_chain(run, teacher, with_transfer=with_transfer):
            candidates[c.tier].append(c)
    for k, name in enumerate(run.students, start=1):
        candidates[name].append(_one_shot(run, teacher, name, k, candidates[name]))
        candidates[name].append(_scratch(run, teacher, name, k))
    return DistillResult(
        list(run.names), candidates, _choose(run, teacher, candidates), _run_info(run, teacher)
    )
