"""Walk-forward folds: chronological expanding windows over a dataset's rows (`offline.walkforward`).

The first `first_train_frac` of the rows (by time) is training history only; the rest is split into
`n_folds` test blocks of equal row count. Fold k trains on everything before its test block, split into
train and validation in the ratio `train_frac : val_frac`, with `embargo_rows(cfg)` bars between the parts
and before the test block. Cuts are made on `start_ms`, so a gap only widens them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

import numpy as np

from bot.config import DistillConfig
from bot.core.errors import ConfigError, DataError
from offline.data import Dataset, Splits, embargo_rows
from offline.train import I64

#: Fewest rows a fold may have in each part (as `offline.data.chronological_splits` asks of a run).
MIN_TRAIN_ROWS: Final = 50
MIN_VAL_ROWS: Final = 20
MIN_TEST_ROWS: Final = 20


def check_n_folds(n_folds: int) -> None:
    """Raise ConfigError unless `n_folds` is an integer >= 2."""
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(
            f"--folds: expected an integer >= 2 (expanding walk-forward folds), got {n_folds!r}; "
            "use --folds 4, or leave it out to train and export one family"
        )


@dataclass(frozen=True, slots=True)
class Fold:
    """Row indices (into the dataset's rows) of one walk-forward fold, and its test block's time span."""

    index: int  # 1..n_folds
    train: I64
    val: I64
    test: I64
    test_start_ms: int
    test_end_ms: int  # start_ms of the block's last row

    @property
    def splits(self) -> Splits:
        return Splits(train=self.train, val=self.val, test=self.test)


def walkforward_folds(
    ds: Dataset, n_folds: int, cfg: DistillConfig, *, first_train_frac: float = 0.5
) -> list[Fold]:
    """Chronological expanding-window folds over `ds`'s rows (see the module docstring).

    Args:
        n_folds: number of test blocks, >= 2.
        cfg: `train_frac : val_frac` splits each training span; `embargo_rows(cfg)` bars separate the parts.
        first_train_frac: share of the rows (by time) before the first test block, in (0, 1).

    Raises:
        ConfigError: `n_folds` < 2 or `first_train_frac` outside (0, 1).
        DataError: a fold would get fewer than 50 train, 20 validation or 20 test rows.
    """
    check_n_folds(n_folds)
    if not 0.0 < first_train_frac < 1.0:
        raise ConfigError(f"first_train_frac: expected a fraction in (0, 1), got {first_train_frac}")
    t = ds.start_ms
    n = int(t.shape[0])
    order = np.argsort(t, kind="stable")
    ts = t[order]
    emb_ms = embargo_rows(cfg) * ds.step_ms
    ratio = cfg.train_frac / (cfg.train_frac + cfg.val_frac)
    first = int(n * first_train_frac)
    cuts = [first + (n - first) * k // n_folds for k in range(n_folds + 1)]
    folds: list[Fold] = []
    for k in range(1, n_folds + 1):
        lo, hi = cuts[k - 1], cuts[k]
        if hi <= lo:
            _too_few(n, n_folds, k, 0, 0, 0)
        t_lo = int(ts[lo])
        in_block = t >= t_lo if k == n_folds else (t >= t_lo) & (t < ts[hi])
        test = np.flatnonzero(in_block)
        span = np.sort(t[t < t_lo - emb_ms])
        n_tr, n_va = 0, 0
        train = val = np.zeros(0, dtype=np.int64)
        if span.size:
            cut_ms = int(span[min(int(span.size * ratio), span.size - 1)])
            val = np.flatnonzero((t >= cut_ms) & (t < t_lo - emb_ms))
            train = np.flatnonzero(t < cut_ms - emb_ms)
            n_tr, n_va = int(train.size), int(val.size)
        if n_tr < MIN_TRAIN_ROWS or n_va < MIN_VAL_ROWS or test.size < MIN_TEST_ROWS:
            _too_few(n, n_folds, k, n_tr, n_va, int(test.size))
        folds.append(
            Fold(
                index=k,
                train=train.astype(np.int64),
                val=val.astype(np.int64),
                test=test.astype(np.int64),
                test_start_ms=t_lo,
                test_end_ms=int(t[test].max()),
            )
        )
    return folds


def _too_few(n: int, n_folds: int, k: int, n_tr: int, n_va: int, n_te: int) -> None:
    raise DataError(
        f"--folds {n_folds}: too few usable rows ({n}) for {n_folds} walk-forward folds: fold {k} gets "
        f"{n_tr} train, {n_va} validation and {n_te} test rows, need >= {MIN_TRAIN_ROWS}, {MIN_VAL_ROWS} "
        f"and {MIN_TEST_ROWS}; use more bars or fewer folds"
    )


def fold_dataset(ds: Dataset, fold: Fold) -> Dataset:
    """`ds` with the fold's splits (the same rows and arrays, no copy)."""
    return dataclasses.replace(ds, splits=fold.splits)
