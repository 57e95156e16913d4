"""Scoring the distillation's candidates: test and validation scores on labels, fidelity to the teacher,
the training objective, the volatility head's metrics, and the HAR-RV baselines the vol head must beat.

Every candidate is scored on the same rows of one run (`offline.run.Run`), so the report compares like with
like.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from offline import vol as volmod
from offline.run import Candidate, Run, Teacher
from offline.train import F64, I64, hit_rate, information_coefficient, pearson, r2, two_term_loss


def distill_loss(run: Run, c: Candidate, labeler_S: F64) -> float:
    """The candidate's training objective on labelled rows (transfer rows excluded).

    The teacher's is its MSE on its own training labels; a student's is its stage's two-term loss on the
    student rows against `labeler_S`.
    """
    if c.stage == 0:
        y_rows = run.targets(run.teacher_rows)
        return two_term_loss(0.0, c.model.predict_std_all(run.X[run.teacher_rows]), y_rows, y_rows)
    return two_term_loss(c.alpha, c.model.predict_std_all(run.student_X), labeler_S, run.student_y)


def evaluate(run: Run, teacher: Teacher, c: Candidate, labeler_S: F64) -> None:
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
        "distill_loss": distill_loss(run, c, labeler_S),
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
    c.metrics.update(vol_metrics(run, teacher, c))
    val_r2, vol_val = c.metrics["val_r2"], c.metrics["val_vol_r2"]
    c.metrics["val_score"] = val_r2 if vol_val is None or val_r2 is None else 0.5 * (val_r2 + vol_val)


#: The vol head's metric keys (None in every one without a vol head).
VOL_METRICS = (
    "vol_r2",
    "vol_ic",
    "vol_qlike",
    "vol_qlike_bc",
    "val_vol_r2",
    "vol_retention",
    "vol_fidelity_r2",
    "vol_r2_sym",
    "vol_var_scale",
    "vol_qlike_served",
)


def per_series_r2(run: Run, truth: F64, pred: F64, rows: I64) -> float:
    """Mean over the pooled symbols of R^2 of log vol on each symbol's `rows` (its own mean as the
    reference, so a symbol's vol level earns nothing); the plain R^2 for one series."""
    if run.series is None:
        return volmod.r2(truth, pred)
    s = run.series[rows]
    return float(np.mean([volmod.r2(truth[s == k], pred[s == k]) for k in np.unique(s)]))


def vol_metrics(run: Run, teacher: Teacher, c: Candidate) -> dict[str, float | None]:
    """The vol head on the test rows: R^2 of log vol, Spearman IC, QLIKE raw and bias-corrected (the
    variance scale fitted on the training rows), validation R^2, retention and fidelity vs the teacher;
    `vol_var_scale`, the variance scale fitted on the validation rows that the export folds into the served
    forecast (`TierModel.predict_vol`), and `vol_qlike_served`, the test QLIKE of that served forecast."""
    if run.log_vol is None or teacher.test_log_vol is None:
        return dict.fromkeys(VOL_METRICS)
    X, lv, tr, va, te = run.X, run.log_vol, run.train_rows, run.val_rows, run.test_rows
    pred = c.model.predict_log_vol(X[te])
    scale = volmod.qlike_scale(np.exp(lv[tr]), np.exp(c.model.predict_log_vol(X[tr])))
    m = volmod.vol_metrics(np.exp(lv[te]), pred, scale=scale)
    pred_va = c.model.predict_log_vol(X[va])
    var_scale = volmod.qlike_scale(np.exp(lv[va]), np.exp(pred_va))
    teacher_r2 = volmod.r2(lv[te], teacher.test_log_vol)
    return {
        "vol_r2": m["r2_log_vol"],
        "vol_ic": m["ic"],
        "vol_qlike": m["qlike"],
        "vol_qlike_bc": m["qlike_bc"],
        "val_vol_r2": volmod.r2(lv[va], pred_va),
        "vol_retention": m["r2_log_vol"] / teacher_r2 if teacher_r2 > 0.0 else None,
        "vol_fidelity_r2": volmod.r2(teacher.test_log_vol, pred),
        "vol_r2_sym": per_series_r2(run, lv[te], pred, te),
        "vol_var_scale": var_scale,
        "vol_qlike_served": volmod.qlike(np.exp(lv[te]), np.exp(pred), scale=var_scale),
    }


def har_forecasts(run: Run, design: F64) -> tuple[F64, F64]:
    """HAR log-vol forecasts of every row and the same after the QLIKE variance scale (`+ log(scale) / 2`).

    OLS and scale are fitted on the training rows; with pooled symbols (`run.series`) each symbol gets its
    own HAR and scale fitted on its own training rows (the baseline at its strongest: per-symbol HAR is what
    the literature and the walk-forward study fit)."""
    assert run.log_vol is not None
    lv, tr = run.log_vol, run.train_rows
    groups = (
        [np.arange(lv.shape[0])]
        if run.series is None
        else [np.flatnonzero(run.series == k) for k in np.unique(run.series)]
    )
    raw = np.full(lv.shape[0], np.nan)
    corrected = np.full(lv.shape[0], np.nan)
    train_mask = np.zeros(lv.shape[0], dtype=np.bool_)
    train_mask[tr] = True
    for rows in groups:
        fit_rows = rows[train_mask[rows]]
        model = volmod.HarRV().fit(design[fit_rows], lv[fit_rows])
        p = model.predict(design[rows])
        scale = volmod.qlike_scale(np.exp(lv[fit_rows]), np.exp(model.predict(design[fit_rows])))
        raw[rows] = p
        corrected[rows] = p + 0.5 * np.log(scale)
    return raw, corrected


def vol_baselines(run: Run) -> dict[str, dict[str, float]]:
    """HAR-RV and HAR-RV + hour-of-day fitted (OLS, and the QLIKE variance scale) on the training rows, per
    symbol when pooled (`har_forecasts`), scored on the test rows like the tiers' vol head; {} without a vol
    head."""
    if run.log_vol is None or run.har_X is None or run.har_tod_X is None:
        return {}
    lv, va, te = run.log_vol, run.val_rows, run.test_rows
    out: dict[str, dict[str, float]] = {}
    for key, design in (("har", run.har_X), ("har_tod", run.har_tod_X)):
        raw, corrected = har_forecasts(run, design)
        m = volmod.vol_metrics(np.exp(lv[te]), raw[te])
        out[key] = {
            "vol_r2": m["r2_log_vol"],
            "vol_ic": m["ic"],
            "vol_qlike": m["qlike"],
            "vol_qlike_bc": volmod.qlike(np.exp(lv[te]), np.exp(corrected[te])),
            "val_vol_r2": volmod.r2(lv[va], raw[va]),
            "vol_r2_sym": per_series_r2(run, lv[te], raw[te], te),
            "qlike_scale": float(np.mean(np.exp(2.0 * (corrected[te] - raw[te])))),
        }
    return out


def rank_products(pred: F64, truth: F64) -> F64:
    """Per row, the product of the standardised ranks of `pred` and `truth` (average ranks for ties,
    population standard deviation): their mean is the Spearman IC exactly. Zeros when a side is constant."""
    if pred.size == 0 or np.ptp(pred) == 0.0 or np.ptp(truth) == 0.0:
        return np.zeros(pred.size)
    rp = np.asarray(rankdata(pred), dtype=np.float64)
    rt = np.asarray(rankdata(truth), dtype=np.float64)
    out: F64 = ((rp - rp.mean()) / rp.std()) * ((rt - rt.mean()) / rt.std())
    return out


def return_skill(products: F64, start_ms: I64, *, horizon_bars: int) -> tuple[float, float, int]:
    """Spearman IC of the return head and its standard error, from `rank_products` of the scored rows.

    IC = mean of the products. SE: a Newey-West (Bartlett) estimate on the products summed per bar time
    (`start_ms`: rows of pooled symbols at the same time are one observation, as their returns co-move),
    with `2 * (horizon_bars - 1)` lags (twice the overlap of `horizon_bars`-bar forward returns: Bartlett
    weights shrink the first lags; on two independent 10-bar overlapping sums it gives 0.93 of the true sd
    of the IC, against 0.87 with `horizon_bars - 1` lags). For one symbol and non-overlapping 1-bar returns
    this is the plain sd(products) / sqrt(n), about 1/sqrt(n) under no skill. Products of several test
    blocks (each ranked within its own block) pool into one IC and SE.

    Returns:
        (ic, se, n_rows); (0.0, 0.0, 0) without rows.
    """
    return mean_with_se(products, start_ms, lags=2 * (horizon_bars - 1))


def mean_with_se(values: F64, start_ms: I64, *, lags: int) -> tuple[float, float, int]:
    """The mean of per-row `values` and its Newey-West (Bartlett, `lags` lags) standard error, rows of the
    same bar time (`start_ms`; pooled symbols) summed into one observation first.

    Returns:
        (mean, se, n_rows); (0.0, 0.0, 0) without rows.
    """
    n = int(values.size)
    if n == 0:
        return 0.0, 0.0, 0
    order = np.argsort(start_ms, kind="stable")
    _, first = np.unique(start_ms[order], return_index=True)
    per_bar = np.add.reduceat(values[order], first)
    u = per_bar - per_bar.mean()
    t = u.size
    var = float(u @ u) / t
    for lag in range(1, min(lags, t - 1) + 1):
        var += 2.0 * (1.0 - lag / (lags + 1)) * float(u[lag:] @ u[:-lag]) / t
    se = math.sqrt(max(var, 0.0) * t) / n
    return float(values.mean()), se, n
