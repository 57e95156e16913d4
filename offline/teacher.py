"""The teacher: the first tier, fitted with its L2 chosen on the chronological validation tail, and its
out-of-sample predictions on the rows the students learn from (the held-out rows, or K-fold out-of-fold
predictions with an embargo around each fold), as an `offline.run.Teacher`.
"""

from __future__ import annotations

import time

import numpy as np

from offline.data import embargo_rows
from offline.evaluate import evaluate
from offline.run import Candidate, Run, Teacher, row_runs
from offline.train import F64, FitResult, TierModel, r2


def out_of_fold(run: Run, l2: float) -> tuple[F64, float]:
    """K-fold out-of-fold teacher predictions on the training rows (standardised) and their fit time in s."""
    tr, folds = run.train_rows, run.cfg.teacher_folds
    name = run.names[0]
    pred = np.empty((len(tr), run.targets_std.shape[1]), dtype=np.float64)
    emb = embargo_rows(run.cfg) * run.rows_per_bar  # pooled symbols interleave: one bar is n_series rows
    bounds = np.linspace(0, len(tr), folds + 1).astype(int)
    t0 = time.perf_counter()
    for f in range(folds):
        lo, hi = int(bounds[f]), int(bounds[f + 1])
        keep = np.ones(len(tr), dtype=np.bool_)
        keep[max(0, lo - emb) : hi + emb] = False
        m, _ = run.train(
            name,
            row_runs(run.X, tr[keep]),  # views of the rows around the held-out fold, no copy
            run.targets(tr[keep]),
            desc=f"teacher fold {f + 1}/{folds}",
            l2=l2,
            teacher=True,
        )
        pred[lo:hi] = m.predict_std_all(run.X[tr[lo:hi]])
    return pred, time.perf_counter() - t0


def train_teacher(run: Run) -> Teacher:
    """Fit the first tier on the teacher rows and predict the student rows out of sample (evaluated)."""
    name = run.names[0]
    best: tuple[TierModel, FitResult, float] | None = None
    search_s = 0.0
    for l2 in run.cfg.teacher_l2 or (run.cfg.l2,):
        model, fit = run.train(
            name,
            row_runs(run.X, run.teacher_rows),
            run.targets(run.teacher_rows),
            desc=f"teacher {name}",
            l2=l2,
            teacher=True,
        )
        search_s += fit.train_s
        run.say(
            f"teacher {name} l2={l2:g}: val mse {fit.val_mse:.4f}, best epoch {fit.best_epoch}/"
            f"{fit.epochs_run}, {fit.train_s:.1f} s"
        )
        run.teacher_search[f"{l2:g}"] = fit.val_mse
        if best is None or fit.val_mse < best[1].val_mse:
            best = (model, fit, l2)
    assert best is not None
    model, fit, l2 = best
    fit.train_s = search_s  # the teacher's cost includes its L2 search
    run.teacher_search["chosen"] = l2
    if run.cfg.teacher_folds == 0:
        on_students, oof_s = model.predict_std_all(run.student_X), 0.0
    else:
        on_students, oof_s = out_of_fold(run, l2)
    fit.train_s += oof_s
    test_pred = model.predict(run.X[run.test_rows])
    teacher = Teacher(
        candidate=Candidate(name, "teacher", "teacher", 0, model, 0.0, run.cfg.t_max, False, fit),
        on_students=on_students,
        test_pred=test_pred,
        val_pred=model.predict(run.X[run.val_rows]),
        test_r2=r2(run.y[run.test_rows], test_pred),
        test_log_vol=model.predict_log_vol(run.X[run.test_rows]) if run.has_vol else None,
    )
    evaluate(run, teacher, teacher.candidate, on_students)
    return teacher
