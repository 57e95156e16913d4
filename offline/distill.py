"""The distillation run: teacher, progressive chain, one-shot and scratch baselines, and the exported pick.

`run_distillation` is a few named steps over one shared `_Run` (data, splits, scalers, transfer set):
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
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from sklearn.preprocessing import StandardScaler

from bot.config import DistillConfig, TierConfig
from bot.core.features import FEATURE_SETS, feature_indices
from offline import vol as volmod
from offline.data import Dataset
from offline.evaluate import evaluate, vol_baselines
from offline.teacher import Candidate, Teacher, train_teacher
from offline.train import (
    F64,
    I64,
    FitResult,
    TierModel,
    blended_target,
    fit_mlp,
    stage_alpha,
    stage_temperature,
    transfer_set,
)


@dataclass(slots=True)
class DistillResult:
    """Everything a run produced: candidates per tier, the chosen family, and run facts."""

    tier_names: list[str]
    candidates: dict[str, list[Candidate]]
    chosen: dict[str, Candidate]
    info: dict[str, Any]


def _x_scaler(X_train: F64) -> StandardScaler:
    sc = StandardScaler()
    sc.fit(X_train)
    return sc


def _hidden(t: TierConfig) -> tuple[int, ...]:
    return (t.width,) * t.layers


@dataclass(frozen=True, slots=True)
class _Run:
    """What every step of one distillation run shares: data, splits, scalers, row sets and options.

    `student_X` / `student_y` are the labelled rows every student learns (`student_y` in standardised
    target units, [rows, heads]: return, then log vol with a vol head); `transfer_X` is the augmented
    transfer set (zero rows when `transfer_multiplier = 0`). `log_vol` is the raw vol target (None without
    a vol head); `har_X` / `har_tod_X` the HAR regressors of every row (for the baselines).
    """

    X: F64
    y: F64
    log_vol: F64 | None
    targets_std: F64
    vol_mean: float | None
    vol_scale: float | None
    har_X: F64 | None
    har_tod_X: F64 | None
    train_rows: I64
    val_rows: I64
    test_rows: I64
    tiers: Mapping[str, TierConfig]
    names: tuple[str, ...]
    cfg: DistillConfig
    epochs: int
    seed: int
    progress: bool
    say: Callable[[str], None]
    y_mean: float
    y_scale: float
    scalers: Mapping[tuple[str, ...], StandardScaler]
    teacher_rows: I64
    student_rows: I64
    student_X: F64
    student_y: F64
    val_y: F64
    transfer_X: F64
    rows_per_bar: int = 1
    series: I64 | None = None  # each row's symbol (pooled data), None for one series
    teacher_search: dict[str, float] = field(default_factory=dict)  # val MSE per teacher L2, and the choice

    @classmethod
    def prepare(
        cls,
        ds: Dataset,
        tiers: Mapping[str, TierConfig],
        cfg: DistillConfig,
        *,
        epochs: int,
        seed: int,
        progress: bool,
        log: Callable[[str], None] | None,
    ) -> _Run:
        """Scale the target and each tier's feature set on the training rows; split teacher/student rows."""
        names = tuple(tiers)
        if len(names) < 2:
            raise ValueError("distillation needs at least two tiers (a teacher and one student)")
        tr, va, te = ds.splits.train, ds.splits.val, ds.splits.test
        X, y = ds.X, ds.y
        y_mean = float(y[tr].mean())
        y_scale = float(y[tr].std()) or 1.0
        cols = [(y - y_mean) / y_scale]
        vol_mean = vol_scale = None
        har_X = har_tod_X = None
        if ds.log_vol is not None:
            vol_mean = float(ds.log_vol[tr].mean())
            vol_scale = float(ds.log_vol[tr].std()) or 1.0
            cols.append((ds.log_vol - vol_mean) / vol_scale)
            har_X, har_tod_X = ds.har_X, ds.har_tod_X
            if har_X is None or har_tod_X is None:  # a Dataset built by hand: one series
                close = np.array([b.close for b in ds.bars], dtype=np.float64)
                starts = np.array([b.start_ms for b in ds.bars], dtype=np.int64)
                har_X = volmod.har_design(close)[ds.bar_index]
                har_tod_X = volmod.har_design(close, starts, time_of_day=True)[ds.bar_index]
        targets_std = np.column_stack(cols)
        scalers: dict[tuple[str, ...], StandardScaler] = {}
        for name in names:
            feats = FEATURE_SETS[tiers[name].features]
            if feats not in scalers:
                scalers[feats] = _x_scaler(X[tr][:, feature_indices(feats)])
        if cfg.teacher_folds == 0:
            n_t = int(len(tr) * (1.0 - cfg.heldout_frac))
            teacher_rows, student_rows = tr[:n_t], tr[n_t:]
        else:
            teacher_rows, student_rows = tr, tr
        student_X = X[student_rows]
        x_std = X[tr].std(axis=0)
        x_std[x_std == 0.0] = 1.0
        transfer_X = (
            transfer_set(
                student_X, x_std, multiplier=cfg.transfer_multiplier, jitter=cfg.transfer_jitter, seed=seed
            )
            if cfg.transfer_multiplier > 0
            else np.empty((0, X.shape[1]))
        )
        return cls(
            X=X,
            y=y,
            log_vol=ds.log_vol,
            targets_std=targets_std,
            vol_mean=vol_mean,
            vol_scale=vol_scale,
            har_X=har_X,
            har_tod_X=har_tod_X,
            train_rows=tr,
            val_rows=va,
            test_rows=te,
            tiers=tiers,
            names=names,
            cfg=cfg,
            epochs=epochs,
            seed=seed,
            progress=progress,
            say=log or (lambda _msg: None),
            y_mean=y_mean,
            y_scale=y_scale,
            scalers=scalers,
            teacher_rows=teacher_rows,
            student_rows=student_rows,
            student_X=student_X,
            student_y=targets_std[student_rows],
            val_y=targets_std[va],
            transfer_X=transfer_X,
            rows_per_bar=ds.n_series,
            series=ds.series,
        )

    @property
    def students(self) -> tuple[str, ...]:
        """Student tier names, largest first (stage k is `students[k - 1]`)."""
        return self.names[1:]

    @property
    def n_stages(self) -> int:
        return len(self.names) - 1

    @property
    def has_transfer(self) -> bool:
        return bool(self.transfer_X.shape[0])

    @property
    def has_vol(self) -> bool:
        return self.log_vol is not None

    def targets(self, rows: I64) -> F64:
        """The labels of `rows` in standardised target units, [rows, heads]."""
        return self.targets_std[rows]

    def train(
        self,
        name: str,
        rows_X: F64,
        target: F64,
        *,
        desc: str,
        l2: float | None = None,
        teacher: bool = False,
    ) -> tuple[TierModel, FitResult]:
        """Fit tier `name` on full feature rows `rows_X` and a standardised target; validate on the labels.

        Args:
            l2: the MLP's L2 penalty (None = `cfg.l2`).
            teacher: use the teacher's step size and batch (`teacher_learning_rate`, `teacher_batch_size`).
        """
        cfg = self.cfg if l2 is None else msgspec.structs.replace(self.cfg, l2=l2)
        if teacher:
            cfg = msgspec.structs.replace(
                cfg,
                learning_rate=cfg.teacher_learning_rate or cfg.learning_rate,
                batch_size=cfg.teacher_batch_size or cfg.batch_size,
            )
        feats = FEATURE_SETS[self.tiers[name].features]
        sc = self.scalers[feats]
        cols = feature_indices(feats)
        Xs = np.asarray(sc.transform(rows_X[:, cols]), dtype=np.float32)
        Xv = np.asarray(sc.transform(self.X[self.val_rows][:, cols]), dtype=np.float32)
        hidden = _hidden(self.tiers[name])
        res = fit_mlp(
            hidden,
            Xs,
            target.astype(np.float32),
            Xv,
            self.val_y,
            cfg,
            epochs=self.epochs,
            seed=self.seed,
            desc=desc,
            progress=self.progress,
        )
        model = TierModel(
            hidden,
            feats,
            sc,
            self.y_mean,
            self.y_scale,
            res.mlp,
            vol_mean=self.vol_mean,
            vol_scale=self.vol_scale,
        )
        return model, res

    def distill(
        self, name: str, labeler: TierModel, labeler_S: F64, alpha: float, *, with_transfer: bool, desc: str
    ) -> tuple[TierModel, FitResult]:
        """Fit tier `name` on a blend of `labeler`'s outputs and the labels (plus the transfer set if asked).

        Args:
            labeler_S: `labeler`'s standardised predictions on `student_X`, [rows, heads].
            alpha: weight of the labeler; transfer rows have no label and learn the labeler alone.
        """
        target = blended_target(alpha, labeler_S, self.student_y)
        rows = self.student_X
        if with_transfer and self.transfer_X.shape[0]:
            rows = np.concatenate([self.student_X, self.transfer_X])
            target = np.concatenate([target, labeler.predict_std_all(self.transfer_X)])
        return self.train(name, rows, target, desc=desc)


def _progressive_chain(run: _Run, teacher: Teacher, *, with_transfer: bool) -> list[Candidate]:
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


def _one_shot(run: _Run, teacher: Teacher, name: str, k: int, same_size: Sequence[Candidate]) -> Candidate:
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


def _scratch(run: _Run, teacher: Teacher, name: str, k: int) -> Candidate:
    """Student `name` trained on the labels only (no teacher, no transfer set)."""
    m, fit = run.train(name, run.student_X, run.student_y, desc=f"scratch {name}")
    c = Candidate(name, "scratch", "scratch", k, m, 0.0, 1.0, False, fit)
    evaluate(run, teacher, c, teacher.on_students)
    return c


def _choose(run: _Run, teacher: Teacher, candidates: Mapping[str, list[Candidate]]) -> dict[str, Candidate]:
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


def _series_var_scales(run: _Run, c: Candidate) -> dict[int, float]:
    """Each pooled symbol's variance scale on its own validation rows ({} for one series)."""
    if run.series is None or run.log_vol is None:
        return {}
    out: dict[int, float] = {}
    for k in np.unique(run.series[run.val_rows]):
        rows = run.val_rows[run.series[run.val_rows] == k]
        pred = c.model.predict_log_vol(run.X[rows])
        out[int(k)] = volmod.qlike_scale(np.exp(run.log_vol[rows]), np.exp(pred))
    return out


def _run_info(run: _Run, teacher: Teacher) -> dict[str, Any]:
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
    run = _Run.prepare(ds, tiers, cfg, epochs=epochs, seed=seed, progress=progress, log=log)
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
