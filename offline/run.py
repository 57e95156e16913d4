"""One distillation run's shared state: `Run` (data, splits, scalers, row sets, options and the fit
helpers every step uses), and the `Candidate` and `Teacher` records the steps produce.

`offline.teacher`, `offline.evaluate` and `offline.distill` all build on this module, one way: it imports
none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt
from sklearn.preprocessing import StandardScaler

from bot.config import DistillConfig, TierConfig
from bot.core.features import FEATURE_SETS, feature_indices
from offline import vol as volmod
from offline.data import Dataset
from offline.train import F32, F64, I64, FitResult, Recipe, TierModel, blended_target, fit_mlp, transfer_set


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


@dataclass(frozen=True, slots=True)
class Teacher:
    """The fitted teacher, its standardised outputs on the student rows, and the yardsticks students meet.

    `on_students` is out-of-sample: the held-out prediction, or the K-fold out-of-fold one, [rows, heads].
    """

    candidate: Candidate
    on_students: F64
    test_pred: F64
    val_pred: F64
    test_r2: float
    test_log_vol: F64 | None = None

    @property
    def model(self) -> TierModel:
        return self.candidate.model


def _x_scaler(X_train: F64) -> StandardScaler:
    sc = StandardScaler()
    sc.fit(X_train)
    return sc


def rows_of(X: F64, rows: I64) -> F64:
    """`X[rows]`: a view (no copy) when `rows` is one ascending run of indices, as chronological and
    calendar splits are; a copy otherwise."""
    n = int(rows.size)
    if n and int(rows[-1]) - int(rows[0]) == n - 1 and bool(np.all(np.diff(rows) == 1)):
        return X[int(rows[0]) : int(rows[0]) + n]
    return np.asarray(X[rows], dtype=X.dtype)


def row_runs(X: F64, rows: I64) -> list[F64]:
    """`X[rows]` as views (no copy), one per run of consecutive ascending indices; concatenated, they are
    `X[rows]`. A purged fold's training rows are two runs, a split's rows one."""
    if rows.size == 0:
        return [X[:0]]
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    lo = np.concatenate([[0], cuts])
    hi = np.concatenate([cuts, [rows.size]])
    return [X[int(rows[a]) : int(rows[b - 1]) + 1] for a, b in zip(lo, hi, strict=True)]


#: Rows scaled at a time: the float64 scratch of `scaled32` stays a few MiB, whatever the data's size.
SCALE_CHUNK_ROWS = 32_768


def scaled32(parts: Sequence[F64], scaler: StandardScaler, cols: npt.NDArray[np.intp]) -> F32:
    """The columns `cols` of the rows in `parts` (in order), standardised by `scaler`, as one float32 array,
    filled chunk by chunk: equal to `float32(scaler.transform(concatenate(parts)[:, cols]))` (the transform
    is per element) without the float64 copies of every row that expression makes."""
    n = sum(int(p.shape[0]) for p in parts)
    out = np.empty((n, len(cols)), dtype=np.float32)
    at = 0
    for part in parts:
        for lo in range(0, int(part.shape[0]), SCALE_CHUNK_ROWS):
            chunk = np.asarray(scaler.transform(part[lo : lo + SCALE_CHUNK_ROWS][:, cols]))
            out[at : at + chunk.shape[0]] = chunk
            at += chunk.shape[0]
    return out


def _hidden(t: TierConfig) -> tuple[int, ...]:
    return (t.width,) * t.layers


@dataclass(frozen=True, slots=True)
class Run:
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
    ) -> Run:
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
        X_tr = rows_of(X, tr)  # a view for the usual contiguous training rows: the rows are held once
        for name in names:
            feats = FEATURE_SETS[tiers[name].features]
            if feats not in scalers:
                scalers[feats] = _x_scaler(X_tr[:, feature_indices(feats)])
        if cfg.teacher_folds == 0:
            n_t = int(len(tr) * (1.0 - cfg.heldout_frac))
            teacher_rows, student_rows = tr[:n_t], tr[n_t:]
        else:
            teacher_rows, student_rows = tr, tr
        student_X = rows_of(X, student_rows)
        x_std = X_tr.std(axis=0)
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
        rows_X: F64 | Sequence[F64],
        target: F64,
        *,
        desc: str,
        l2: float | None = None,
        teacher: bool = False,
    ) -> tuple[TierModel, FitResult]:
        """Fit tier `name` on full feature rows `rows_X` and a standardised target; validate on the labels.

        Args:
            rows_X: the rows, or a list of parts of them in order (views: `row_runs`), scaled into the one
                float32 array the MLP fits on (`scaled32`).
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
        Xs = scaled32([rows_X] if isinstance(rows_X, np.ndarray) else rows_X, sc, cols)
        Xv = scaled32(row_runs(self.X, self.val_rows), sc, cols)
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
        rows = [self.student_X]
        if with_transfer and self.transfer_X.shape[0]:
            rows.append(self.transfer_X)  # scaled into one array by `train`, never concatenated in float64
            target = np.concatenate([target, labeler.predict_std_all(self.transfer_X)])
        return self.train(name, rows, target, desc=desc)
