"""Teacher training, the progressive distillation chain, and the one-shot and scratch baselines.

Every model is a scikit-learn `MLPRegressor` (ReLU, Adam) trained with `partial_fit`, one call per epoch,
so Adam's state carries over and validation is done here, per epoch, on the *labels* (not on the
blended target that `early_stopping` would score), keeping the best weights under a patience rule.

Inputs are standardised per tier (statistics of the training rows only) and so is the target: raw
returns are tiny fractions, and unscaled the L2 penalty dominates and the net learns nothing.

Distillation with an MSE head: stage k minimises

    alpha_k * MSE(s, t) + (1 - alpha_k) * MSE(s, y)  =  MSE(s, alpha_k * t + (1 - alpha_k) * y)
                                                        + alpha_k * (1 - alpha_k) * MSE(t, y)

and the last term does not depend on the student, so each stage trains on the blended target
(`blended_target`; the identity is `two_term_loss == blended_loss + blend_constant`, pinned by a test).
`alpha_k` follows `DistillConfig.alpha_schedule`: "linear" (the default, the seed chapter's)
`alpha_k = alpha_max * (1 - k/N)`, which reaches 0 at the last stage, or "constant" `alpha_k = alpha_max`.
`T_k = t_max * (1 - k/N)^gamma`; a temperature softens logits and so only acts in a classification task:
for this regression head it is recorded, not applied.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from bot.config import AlphaSchedule, DistillConfig, TierConfig
from bot.core.features import FEATURE_SETS, feature_indices
from offline.data import Dataset

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Recipe = Literal["teacher", "progressive", "one_shot", "scratch"]


# ---- the loss identity --------------------------------------------------------------------------------


def blended_target(alpha: float, teacher: F64, y: F64) -> F64:
    """`alpha * teacher + (1 - alpha) * y`: the MSE-equivalent target of the two-term distillation loss."""
    return alpha * teacher + (1.0 - alpha) * y


def two_term_loss(alpha: float, student: F64, teacher: F64, y: F64) -> float:
    """`alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, y)`."""
    return float(alpha * np.mean((student - teacher) ** 2) + (1.0 - alpha) * np.mean((student - y) ** 2))


def blend_constant(alpha: float, teacher: F64, y: F64) -> float:
    """`alpha * (1 - alpha) * MSE(teacher, y)`: what separates the two-term loss from the blended MSE."""
    return float(alpha * (1.0 - alpha) * np.mean((teacher - y) ** 2))


def stage_alpha(k: int, n_stages: int, alpha_max: float, *, schedule: AlphaSchedule) -> float:
    """Weight of the previous model (vs the labels) at stage k in 1..N.

    Args:
        schedule: "constant": `alpha_k = alpha_max` at every stage; "linear":
            `alpha_k = alpha_max * (1 - k/N)`, so the last stage (`alpha_N = 0`) learns the labels only.
    """
    if schedule == "constant":
        return alpha_max
    if schedule == "linear":
        return alpha_max * (1.0 - k / n_stages)
    raise ValueError(f"alpha schedule must be 'linear' or 'constant', got {schedule!r}")


def stage_temperature(k: int, n_stages: int, t_max: float, gamma: float) -> float:
    """`T_k = t_max * (1 - k/N)^gamma` (recorded only; a temperature acts in classification)."""
    return float(t_max * (1.0 - k / n_stages) ** gamma)


# ---- metrics -----------------------------------------------------------------------------------------


def r2(truth: F64, pred: F64) -> float:
    """Coefficient of determination of `pred` against `truth` (1 - SSE/SST around truth's mean)."""
    sst = float(np.sum((truth - truth.mean()) ** 2))
    if sst <= 0.0:
        return 0.0
    return 1.0 - float(np.sum((truth - pred) ** 2)) / sst


def information_coefficient(pred: F64, truth: F64) -> float:
    """Spearman rank correlation of prediction and realised return (0 when either is constant)."""
    if np.ptp(pred) == 0.0 or np.ptp(truth) == 0.0:
        return 0.0
    rho = spearmanr(pred, truth).statistic
    return float(rho) if math.isfinite(float(rho)) else 0.0


def pearson(a: F64, b: F64) -> float:
    """Pearson correlation (0 when either side is constant)."""
    if np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def hit_rate(pred: F64, truth: F64) -> float:
    """Share of rows with a non-zero realised return where sign(pred) == sign(truth)."""
    nz = truth != 0.0
    if not nz.any():
        return 0.0
    return float(np.mean(np.sign(pred[nz]) == np.sign(truth[nz])))


def param_count(n_inputs: int, hidden: Sequence[int]) -> int:
    """Weights + biases of an MLP with one output."""
    sizes = [n_inputs, *hidden, 1]
    return sum(int(a * b + b) for a, b in itertools.pairwise(sizes))


# ---- one fitted tier ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TierModel:
    """A fitted MLP with its feature subset and scalers; predicts raw returns from full feature rows."""

    hidden: tuple[int, ...]
    features: tuple[str, ...]
    x_scaler: StandardScaler
    y_mean: float
    y_scale: float
    mlp: MLPRegressor

    @property
    def columns(self) -> npt.NDArray[np.intp]:
        return feature_indices(self.features)

    @property
    def params(self) -> int:
        return int(sum(w.size for w in self.mlp.coefs_) + sum(b.size for b in self.mlp.intercepts_))

    def inputs(self, X_full: F64) -> F32:
        """Standardised float32 inputs of this tier from full feature rows."""
        return np.asarray(self.x_scaler.transform(X_full[:, self.columns]), dtype=np.float32)

    def predict_std(self, X_full: F64) -> F64:
        """Prediction in standardised target units."""
        return np.asarray(self.mlp.predict(self.inputs(X_full)), dtype=np.float64).reshape(-1)

    def predict(self, X_full: F64) -> F64:
        """Prediction as a raw forward return (fraction)."""
        return self.predict_std(X_full) * self.y_scale + self.y_mean


def make_mlp(hidden: Sequence[int], cfg: DistillConfig, *, n_rows: int, seed: int) -> MLPRegressor:
    """An untrained MLPRegressor; every option by keyword (scikit-learn 1.9 put `loss` first)."""
    return MLPRegressor(
        loss="squared_error",
        hidden_layer_sizes=tuple(hidden),
        activation="relu",
        solver="adam",
        alpha=cfg.l2,
        batch_size=min(cfg.batch_size, n_rows),
        learning_rate="constant",
        learning_rate_init=cfg.learning_rate,
        shuffle=True,
        random_state=seed,
        early_stopping=False,
    )


@dataclass(slots=True)
class FitResult:
    """A trained MLP (best validation epoch) and how training went."""

    mlp: MLPRegressor
    best_epoch: int
    epochs_run: int
    val_mse: float
    train_s: float
    history: list[float] = field(default_factory=list)


def fit_mlp(
    hidden: Sequence[int],
    X: F32,
    target: F32,
    X_val: F32,
    y_val: F64,
    cfg: DistillConfig,
    *,
    epochs: int,
    seed: int,
    desc: str = "",
    progress: bool = False,
) -> FitResult:
    """Train with `partial_fit` per epoch; keep the weights with the lowest validation MSE on the labels.

    Args:
        hidden: hidden layer widths.
        X, target: standardised float32 training inputs and (blended) targets.
        X_val, y_val: standardised validation inputs and *labels* (standardised target units).
        epochs: maximum epochs; training stops after `cfg.patience` epochs without improvement.
    """
    mlp = make_mlp(hidden, cfg, n_rows=X.shape[0], seed=seed)
    best: MLPRegressor | None = None
    best_mse = math.inf
    best_epoch = 0
    history: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(total=epochs, desc=desc, disable=not progress, leave=True, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            mlp.partial_fit(X, target)
            mse = float(np.mean((mlp.predict(X_val).astype(np.float64) - y_val) ** 2))
            history.append(mse)
            if mse < best_mse - 1e-7:
                best_mse, best_epoch, best = mse, epoch, copy.deepcopy(mlp)
            bar.set_postfix(val_mse=f"{mse:.4f}", best_epoch=best_epoch, refresh=False)
            bar.update(1)
            if epoch - best_epoch >= cfg.patience:
                break
    finally:
        bar.close()
    assert best is not None
    return FitResult(best, best_epoch, len(history), best_mse, time.perf_counter() - t0, history)


# ---- the distillation run ----------------------------------------------------------------------------


@dataclass(slots=True)
class Candidate:
    """One trained model for one size, with its recipe and metrics."""

    tier: str
    recipe: Recipe
    variant: str  # "teacher", "progressive", "progressive_no_transfer", "one_shot", "scratch"
    stage: int
    model: TierModel
    alpha: float
    temperature: float
    transfer: bool
    fit: FitResult
    metrics: dict[str, float | None] = field(default_factory=dict)


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


def transfer_set(X_rows: F64, x_std: F64, *, multiplier: float, jitter: float, seed: int) -> F64:
    """Augmented inputs (Bucila et al. 2006): mixup of random row pairs plus Gaussian jitter.

    Each synthetic row is `lam * x_i + (1 - lam) * x_j + jitter * std * N(0, 1)` with `lam ~ Beta(0.4, 0.4)`,
    in raw feature units (`x_std` = per-feature training std). Returns `round(multiplier * len(X_rows))` rows.
    """
    n = round(multiplier * X_rows.shape[0])
    rng = np.random.default_rng(seed + 7919)
    i = rng.integers(0, X_rows.shape[0], size=n)
    j = rng.integers(0, X_rows.shape[0], size=n)
    lam = rng.beta(0.4, 0.4, size=(n, 1))
    out = lam * X_rows[i] + (1.0 - lam) * X_rows[j]
    out += jitter * x_std[None, :] * rng.standard_normal(out.shape)
    return np.asarray(out, dtype=np.float64)


def _hidden(t: TierConfig) -> tuple[int, ...]:
    return (t.width,) * t.layers


@dataclass(frozen=True, slots=True)
class _Run:
    """What every step of one distillation run shares: data, splits, scalers, row sets and options.

    `student_X` / `student_y` are the labelled rows every student learns (`student_y` in standardised
    target units); `transfer_X` is the augmented transfer set (zero rows when `transfer_multiplier = 0`).
    """

    X: F64
    y: F64
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
            student_y=(y[student_rows] - y_mean) / y_scale,
            val_y=(y[va] - y_mean) / y_scale,
            transfer_X=transfer_X,
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

    def ystd(self, v: F64) -> F64:
        """Raw returns in standardised target units."""
        return (v - self.y_mean) / self.y_scale

    def train(self, name: str, rows_X: F64, target: F64, *, desc: str) -> tuple[TierModel, FitResult]:
        """Fit tier `name` on full feature rows `rows_X` and a standardised target; validate on the labels."""
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
            self.cfg,
            epochs=self.epochs,
            seed=self.seed,
            desc=desc,
            progress=self.progress,
        )
        return TierModel(hidden, feats, sc, self.y_mean, self.y_scale, res.mlp), res

    def distill(
        self, name: str, labeler: TierModel, labeler_S: F64, alpha: float, *, with_transfer: bool, desc: str
    ) -> tuple[TierModel, FitResult]:
        """Fit tier `name` on a blend of `labeler`'s outputs and the labels (plus the transfer set if asked).

        Args:
            labeler_S: `labeler`'s standardised predictions on `student_X`.
            alpha: weight of the labeler; transfer rows have no label and learn the labeler alone.
        """
        target = blended_target(alpha, labeler_S, self.student_y)
        rows = self.student_X
        if with_transfer and self.transfer_X.shape[0]:
            rows = np.concatenate([self.student_X, self.transfer_X])
            target = np.concatenate([target, labeler.predict_std(self.transfer_X)])
        return self.train(name, rows, target, desc=desc)


@dataclass(frozen=True, slots=True)
class _Teacher:
    """The fitted teacher, its standardised outputs on the student rows, and the yardsticks students meet.

    `on_students` is out-of-sample: the held-out prediction, or the K-fold out-of-fold one.
    """

    candidate: Candidate
    on_students: F64
    test_pred: F64
    val_pred: F64
    test_r2: float

    @property
    def model(self) -> TierModel:
        return self.candidate.model


def _out_of_fold(run: _Run) -> tuple[F64, float]:
    """K-fold out-of-fold teacher predictions on the training rows (standardised) and their fit time in s."""
    tr, folds = run.train_rows, run.cfg.teacher_folds
    name = run.names[0]
    pred = np.empty(len(tr), dtype=np.float64)
    emb = max(run.cfg.embargo_bars, run.cfg.horizon_bars)
    bounds = np.linspace(0, len(tr), folds + 1).astype(int)
    t0 = time.perf_counter()
    for f in range(folds):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        keep = np.ones(len(tr), dtype=np.bool_)
        keep[max(0, lo - emb) : hi + emb] = False
        m, _ = run.train(
            name, run.X[tr[keep]], run.ystd(run.y[tr[keep]]), desc=f"teacher fold {f + 1}/{folds}"
        )
        pred[lo:hi] = m.predict_std(run.X[tr[lo:hi]])
    return pred, time.perf_counter() - t0


def _train_teacher(run: _Run) -> _Teacher:
    """Fit the first tier on the teacher rows and predict the student rows out of sample (evaluated)."""
    name = run.names[0]
    model, fit = run.train(
        name, run.X[run.teacher_rows], run.ystd(run.y[run.teacher_rows]), desc=f"teacher {name}"
    )
    run.say(f"teacher {name}: best epoch {fit.best_epoch}/{fit.epochs_run}, {fit.train_s:.1f} s")
    if run.cfg.teacher_folds == 0:
        on_students, oof_s = model.predict_std(run.student_X), 0.0
    else:
        on_students, oof_s = _out_of_fold(run)
    fit.train_s += oof_s
    test_pred = model.predict(run.X[run.test_rows])
    teacher = _Teacher(
        candidate=Candidate(name, "teacher", "teacher", 0, model, 0.0, run.cfg.t_max, False, fit),
        on_students=on_students,
        test_pred=test_pred,
        val_pred=model.predict(run.X[run.val_rows]),
        test_r2=r2(run.y[run.test_rows], test_pred),
    )
    _evaluate(run, teacher, teacher.candidate, on_students)
    return teacher


def _distill_loss(run: _Run, c: Candidate, labeler_S: F64) -> float:
    """The candidate's training objective on labelled rows (transfer rows excluded).

    The teacher's is its MSE on its own training labels; a student's is its stage's two-term loss on the
    student rows against `labeler_S`.
    """
    if c.stage == 0:
        y_rows = run.ystd(run.y[run.teacher_rows])
        return two_term_loss(0.0, c.model.predict_std(run.X[run.teacher_rows]), y_rows, y_rows)
    return two_term_loss(c.alpha, c.model.predict_std(run.student_X), labeler_S, run.student_y)


def _evaluate(run: _Run, teacher: _Teacher, c: Candidate, labeler_S: F64) -> None:
    """Fill `c.metrics`: test and validation scores on labels, fidelity to the teacher, size and training."""
    X, y, va, te = run.X, run.y, run.val_rows, run.test_rows
    pred = c.model.predict(X[te])
    pv = c.model.predict(X[va])
    test_r2 = r2(y[te], pred)
    c.metrics = {
        "test_r2": test_r2,
        "r2_retention": test_r2 / teacher.test_r2 if teacher.test_r2 > 0.0 else None,
        "fidelity_r2": r2(teacher.test_pred, pred),
        "ic": information_coefficient(pred, y[te]),
        "hit_rate": hit_rate(pred, y[te]),
        "distill_loss": _distill_loss(run, c, labeler_S),
        "train_s": c.fit.train_s,
        "val_r2": r2(y[va], pv),
        "val_fidelity_r2": r2(teacher.val_pred, pv),
        # scale-free fidelity: fidelity R2 is ill-conditioned when the teacher's output barely varies
        "fidelity_corr": pearson(teacher.test_pred, pred),
        "params": float(c.model.params),
        "compression": teacher.model.params / c.model.params,
        "best_epoch": float(c.fit.best_epoch),
        "epochs_run": float(c.fit.epochs_run),
    }


def _progressive_chain(run: _Run, teacher: _Teacher, *, with_transfer: bool) -> list[Candidate]:
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
        _evaluate(run, teacher, c, prev_S)
        chain.append(c)
        run.say(f"{variant} stage {k} {name}: val_r2 {c.metrics['val_r2']:.4f} ({fit.train_s:.1f} s)")
        prev, prev_S = m, m.predict_std(run.student_X)
    return chain


def _one_shot(run: _Run, teacher: _Teacher, name: str, k: int, same_size: Sequence[Candidate]) -> Candidate:
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
    _evaluate(run, teacher, c, teacher.on_students)
    return c


def _scratch(run: _Run, teacher: _Teacher, name: str, k: int) -> Candidate:
    """Student `name` trained on the labels only (no teacher, no transfer set)."""
    m, fit = run.train(name, run.student_X, run.student_y, desc=f"scratch {name}")
    c = Candidate(name, "scratch", "scratch", k, m, 0.0, 1.0, False, fit)
    _evaluate(run, teacher, c, teacher.on_students)
    return c


def _choose(run: _Run, teacher: _Teacher, candidates: Mapping[str, list[Candidate]]) -> dict[str, Candidate]:
    """The exported model per tier: the teacher, then per student size the best val R^2 (first on ties)."""
    chosen: dict[str, Candidate] = {run.names[0]: teacher.candidate}
    for name in run.students:
        chosen[name] = max(candidates[name], key=lambda c: c.metrics["val_r2"] or -math.inf)
    return chosen


def _run_info(run: _Run, teacher: _Teacher) -> dict[str, Any]:
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
    teacher = _train_teacher(run)
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
