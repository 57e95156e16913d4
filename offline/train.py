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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from bot.config import AlphaSchedule, DistillConfig
from bot.core.features import feature_indices
from offline import interrupts

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


def param_count(n_inputs: int, hidden: Sequence[int], *, n_outputs: int = 1) -> int:
    """Weights + biases of an MLP with `n_outputs` outputs."""
    sizes = [n_inputs, *hidden, n_outputs]
    return sum(int(a * b + b) for a, b in itertools.pairwise(sizes))


# ---- one fitted tier ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TierModel:
    """A fitted MLP with its feature subset and scalers; predicts raw targets from full feature rows.

    With a volatility head the MLP has two outputs, (return, log vol), each standardised by its own
    training mean and scale (`y_*` and `vol_*`); without one (`vol_scale` None) it has one output.
    """

    hidden: tuple[int, ...]
    features: tuple[str, ...]
    x_scaler: StandardScaler
    y_mean: float
    y_scale: float
    mlp: MLPRegressor
    vol_mean: float | None = None
    vol_scale: float | None = None
    # the variance scale folded into the served vol (`predict_vol`, the ONNX `vol` output), fitted on
    # validation rows by the distillation once the tier is chosen; 1.0 = uncalibrated
    vol_var_scale: float = 1.0
    # per pooled series (index into the dataset's symbols): the same scale fitted on that symbol's
    # validation rows alone; the service multiplies the graph's vol by sqrt(own / pooled) for that symbol
    vol_var_scale_by_series: dict[int, float] = field(default_factory=dict)

    @property
    def has_vol_head(self) -> bool:
        return self.vol_scale is not None

    @property
    def n_outputs(self) -> int:
        return 2 if self.has_vol_head else 1

    @property
    def columns(self) -> npt.NDArray[np.intp]:
        return feature_indices(self.features)

    @property
    def params(self) -> int:
        return int(sum(w.size for w in self.mlp.coefs_) + sum(b.size for b in self.mlp.intercepts_))

    def inputs(self, X_full: F64) -> F32:
        """Standardised float32 inputs of this tier from full feature rows."""
        return np.asarray(self.x_scaler.transform(X_full[:, self.columns]), dtype=np.float32)

    def predict_std_all(self, X_full: F64) -> F64:
        """Every head's prediction in standardised target units, [N, n_outputs] (return first), computed
        `PREDICT_CHUNK_ROWS` rows at a time (`predict_rows`)."""
        n = int(X_full.shape[0])
        parts = [
            predict_rows(self.mlp, self.inputs(X_full[lo : lo + PREDICT_CHUNK_ROWS]))
            for lo in range(0, n, PREDICT_CHUNK_ROWS)
        ]
        out = np.concatenate(parts) if parts else predict_rows(self.mlp, self.inputs(X_full))
        return out.reshape(n, -1)

    def predict_std(self, X_full: F64) -> F64:
        """The return head's prediction in standardised target units."""
        return self.predict_std_all(X_full)[:, 0]

    def predict(self, X_full: F64) -> F64:
        """Prediction as a raw forward return (fraction)."""
        return self.predict_std(X_full) * self.y_scale + self.y_mean

    def predict_log_vol(self, X_full: F64) -> F64:
        """The vol head's forecast of log realised vol (log of a per-bar RMS log return).

        Raises:
            ValueError: the model has no vol head.
        """
        if self.vol_scale is None or self.vol_mean is None:
            raise ValueError("this tier model has no volatility head")
        return self.predict_std_all(X_full)[:, 1] * self.vol_scale + self.vol_mean

    def predict_vol(self, X_full: F64) -> F64:
        """The served vol forecast (per-bar RMS log return, a fraction): `exp(log vol) * sqrt(vol_var_scale)`.

        Raises:
            ValueError: the model has no vol head.
        """
        vol: F64 = np.exp(self.predict_log_vol(X_full)) * math.sqrt(self.vol_var_scale)
        return vol


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


#: Rows one forward pass takes at a time: scikit-learn's `predict` keeps every layer's activations of all
#: its rows (a 3 x 256 tier on 5 M rows would hold ~15 GB), so a large set is predicted in chunks.
PREDICT_CHUNK_ROWS = 32_768


def predict_rows(mlp: MLPRegressor, X: F32) -> F64:
    """`mlp.predict(X)` as float64, `PREDICT_CHUNK_ROWS` rows at a time. Each row's output depends only on
    that row; BLAS blocks a chunk's rows differently from the whole set's, so a value can differ in its last
    float32 bit (1.2e-7 on a 3 x 256 tier), and the peak memory no longer grows with the rows."""
    n = int(X.shape[0])
    if n <= PREDICT_CHUNK_ROWS:
        return np.asarray(mlp.predict(X), dtype=np.float64)
    return np.concatenate(
        [
            np.asarray(mlp.predict(X[lo : lo + PREDICT_CHUNK_ROWS]), dtype=np.float64)
            for lo in range(0, n, PREDICT_CHUNK_ROWS)
        ]
    )


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
        X, target: standardised float32 training inputs and (blended) targets, [N] or [N, heads].
        X_val, y_val: standardised validation inputs and *labels* (standardised target units), shaped like
            `target`; the validation MSE is the mean over heads.
        epochs: maximum epochs; training stops after `cfg.patience` epochs without improvement.
    """
    mlp = make_mlp(hidden, cfg, n_rows=X.shape[0], seed=seed)
    best: MLPRegressor | None = None
    best_mse = math.inf
    best_epoch = 0
    history: list[float] = []
    if target.ndim == 2 and target.shape[1] == 1:
        target = target.ravel()  # one head: exactly the single-output fit
    y_val2 = y_val.reshape(y_val.shape[0], -1)
    t0 = time.perf_counter()
    bar = tqdm(total=epochs, desc=desc, disable=not progress, leave=True, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            interrupts.doing(f"training {desc or 'a model'}, epoch {epoch}/{epochs}")
            mlp.partial_fit(X, target)  # a signal raises offline.interrupts.Interrupted from inside
            pred = predict_rows(mlp, X_val).reshape(y_val2.shape)
            mse = float(np.mean((pred - y_val2) ** 2))
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
