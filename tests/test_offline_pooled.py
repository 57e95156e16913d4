"""offline.pooled / offline.columns: the pooled dataset of many symbols holds its rows once and equals the
concatenation of each symbol's dataset; bar columns read like a list of bars."""

from __future__ import annotations

import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import pytest

from bot.config import DistillConfig
from bot.core.bars import Bar
from bot.core.errors import DataError
from offline.columns import BarColumns
from offline.data import (
    Dataset,
    calendar_splits,
    load_dataset,
    load_pooled,
    pooled_provenance,
    synthetic_bars,
)
from offline.fetch import write_klines_csv

STEP_MS = 300_000
ARRAYS = ("X", "y", "log_vol", "har_X", "har_tod_X", "start_ms", "bar_index", "series")


def _concatenated(datasets: Sequence[Dataset], cfg: DistillConfig) -> Dataset:
    """The pooling `load_pooled` replaced (each symbol's dataset, concatenated, then ordered): the oracle."""
    series = np.concatenate([np.full(d.n_rows, k, dtype=np.int64) for k, d in enumerate(datasets)])
    start = np.concatenate([d.start_ms for d in datasets])
    order = np.lexsort((series, start)).astype(np.int64)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(d, name) for d in datasets])[order]

    return Dataset(
        bars=datasets[0].bars,
        step_ms=datasets[0].step_ms,
        horizon_bars=datasets[0].horizon_bars,
        X=cat("X"),
        y=cat("y"),
        start_ms=start[order],
        bar_index=cat("bar_index"),
        splits=calendar_splits(start[order], cfg),
        provenance=pooled_provenance([d.provenance for d in datasets]),
        log_vol=cat("log_vol"),
        vol_horizon_bars=datasets[0].vol_horizon_bars,
        har_X=cat("har_X"),
        har_tod_X=cat("har_tod_X"),
        series=series[order],
        series_bars=[d.bars for d in datasets],
    )


def _symbols(tmp_path: Path, n: int, n_bars: int) -> tuple[list[Path], list[str]]:
    """`n` synthetic symbols, each starting 7 bars after the one before, one with a gap."""
    paths, names = [], []
    for k in range(n):
        bars = [
            Bar(b.symbol, b.start_ms + k * 7 * STEP_MS, b.open, b.high, b.low, b.close, b.volume, b.turnover)
            for b in synthetic_bars(n_bars, seed=k)
        ]
        if k == 1:
            bars = bars[:900] + bars[960:]  # a gap of 60 bars: features warm up again
        paths.append(tmp_path / f"S{k}USDT_5m.csv")
        names.append(f"S{k}USDT")
        write_klines_csv(bars, paths[-1])
    return paths, names


def test_pooled_rows_equal_the_concatenation_of_each_symbols_dataset(tmp_path: Path) -> None:
    """Every pooled array, split and provenance equals the concatenate-then-order oracle, bar for bar."""
    cfg = msgspec.structs.replace(DistillConfig(), embargo_bars=20)
    paths, names = _symbols(tmp_path, 4, 1500)
    got = load_pooled(paths, cfg, symbols=names, allow_gaps=True)
    want = _concatenated(
        [load_dataset(p, cfg, symbol=s, allow_gaps=True) for p, s in zip(paths, names, strict=True)], cfg
    )
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(got.splits, split), getattr(want.splits, split))
    assert got.provenance == want.provenance
    assert got.series_bars is not None
    assert want.series_bars is not None
    assert [list(b) for b in got.series_bars] == [list(b) for b in want.series_bars]
    mine, theirs = got.train_bars_by_symbol(), want.train_bars_by_symbol()
    assert {k: list(v) for k, v in mine.items()} == {k: list(v) for k, v in theirs.items()}


def test_pooled_dataset_is_built_holding_its_rows_about_once(tmp_path: Path) -> None:
    """The peak of traced allocations while pooling stays under 1.5x the pooled rows (the concatenating
    oracle needs over 2x): the rows are allocated once and filled symbol by symbol."""
    cfg = msgspec.structs.replace(DistillConfig(), embargo_bars=20)
    paths, names = _symbols(tmp_path, 8, 2000)
    tracemalloc.start()
    try:
        got = load_pooled(paths, cfg, symbols=names, allow_gaps=True)
        _, peak_new = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        old = _concatenated(
            [load_dataset(p, cfg, symbol=s, allow_gaps=True) for p, s in zip(paths, names, strict=True)], cfg
        )
        _, peak_old = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rows = sum(int(getattr(got, name).nbytes) for name in ARRAYS)
    assert old.n_rows == got.n_rows
    assert peak_new < 1.5 * rows, (peak_new, rows)
    assert peak_old > 2.0 * rows, (peak_old, rows)


def test_a_symbol_too_short_for_the_splits_is_named(tmp_path: Path) -> None:
    """One pooled file too short to fill train/validation/test on its own is a DataError naming it."""
    cfg = DistillConfig()
    paths, names = _symbols(tmp_path, 2, 1500)
    write_klines_csv(synthetic_bars(120, seed=9), paths[1])
    with pytest.raises(DataError, match=r"S1USDT_5m\.csv: too few usable rows"):
        load_pooled(paths, cfg, symbols=names)


def test_bar_columns_read_like_the_list_of_bars() -> None:
    """Indexing, negative indexing, slicing and iteration give the bars the columns were made of."""
    bars = synthetic_bars(300, seed=3)
    cols = BarColumns.of_bars(bars)
    assert len(cols) == 300
    assert cols[0] == bars[0]
    assert cols[-1] == bars[-1]
    assert list(cols[10:20]) == bars[10:20]
    assert list(cols) == bars
    assert cols.nbytes == 300 * 56
    with pytest.raises(IndexError):
        cols[300]


def test_training_rows_are_scaled_from_views_into_one_float32_array() -> None:
    """`row_runs` cuts `X[rows]` into views of its consecutive runs (no copy), and `scaled32` over parts
    equals float32(scaler.transform(concatenate(parts)[:, cols])) bit for bit, across chunk edges."""
    from sklearn.preprocessing import StandardScaler

    from offline.run import SCALE_CHUNK_ROWS, row_runs, scaled32

    rng = np.random.default_rng(0)
    X = rng.normal(size=(SCALE_CHUNK_ROWS + 5000, 7))
    rows = np.concatenate([np.arange(10, 3000), np.arange(4000, SCALE_CHUNK_ROWS + 4000)]).astype(np.int64)
    parts = row_runs(X, rows)
    assert len(parts) == 2
    assert all(np.shares_memory(p, X) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), X[rows])
    cols = np.array([0, 2, 5], dtype=np.intp)
    sc = StandardScaler().fit(X[:, cols])
    want = np.asarray(sc.transform(X[rows][:, cols]), dtype=np.float32)
    got = scaled32(parts, sc, cols)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert row_runs(X, np.zeros(0, dtype=np.int64))[0].shape == (0, 7)


def test_predictions_over_many_rows_are_made_in_chunks_equal_to_one_pass() -> None:
    """`predict_rows` over more rows than a chunk gives one pass's predictions (to float32 rounding), in
    order, with the output shape of `mlp.predict`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    from offline.train import PREDICT_CHUNK_ROWS, predict_rows

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2 * PREDICT_CHUNK_ROWS + 77, 6)).astype(np.float32)
    y = rng.normal(size=(X.shape[0], 2)).astype(np.float32)
    with warnings.catch_warnings():  # 5 iterations do not converge, and need not
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X[:500], y[:500])
    whole = np.asarray(mlp.predict(X), dtype=np.float64)
    got = predict_rows(mlp, X)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        predict_rows(mlp, X[:100]), np.asarray(mlp.predict(X[:100]), dtype=np.float64)
    )
