"""Datasets for distillation: kline CSV loading with checks, synthetic bars, features, targets and splits.

Features come from the live feature kernel run over the bars, one kernel call per symbol
(`bot.core.features.features_of_arrays`, via `offline.columns.row_arrays`), so training and inference can
never disagree. The target of
row t is the forward return over `horizon_bars` bars, `c_{t+h} / c_t - 1`; a row is usable when its features
are warm and its target lies inside one contiguous run of bars (no gap between t and t+h). With
`[distill] vol_head` the row also carries the volatility target, the log forward realised vol over
`vol_horizon_bars` (`offline.vol.forward_rv`: the RMS of the next H one-bar log returns), and a row is usable
only when both targets are complete (contiguous, and a realised vol > 0, whose log is finite), so both heads
learn and are scored on the same rows.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.config import DistillConfig
from bot.core.bars import INTERVAL_MS, Bar
from bot.core.errors import DataError
from bot.core.features import FEATURE_NAMES
from bot.sim.csvbars import read_csv_bars
from bot.sim.synthetic import SyntheticMarket
from offline.columns import BarColumns, forward_log_vol_of, forward_returns_of, row_arrays
from offline.pooled import SeriesPart, fill_rows, pooled_order, series_part
from offline.vol import har_design

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

_INTERVAL_BY_MS: dict[int, str] = {ms: name for name, ms in INTERVAL_MS.items()}

#: Symbol on bars read from a CSV when no symbol is given (the provenance then records none).
CSV_SYMBOL = "UNKNOWN"


def load_csv(path: str | Path, *, symbol: str | None = None) -> list[Bar]:
    """Read klines `start_ms,open,high,low,close,volume[,turnover]` (header required) into bars.

    The strict mode of `bot.sim.csvbars.read_csv_bars`: rows strictly ascending in `start_ms` without
    duplicates; prices finite and > 0, volume finite and >= 0, `high >= max(open, close, low)` and
    `low <= min(open, close)`; and at least 2 rows. Gaps are checked separately (`check_gaps`).

    Args:
        path: CSV file.
        symbol: symbol written on the bars; `None` writes `CSV_SYMBOL` (the file name is not guessed from).

    Raises:
        DataError: naming the file, the line number (header = line 1) and what was expected.
    """
    bars = list(read_csv_bars(path, symbol if symbol is not None else CSV_SYMBOL))
    if len(bars) < 2:
        raise DataError(f"{Path(path)}: expected at least 2 data rows, got {len(bars)}")
    return bars


def infer_interval_ms(bars: Sequence[Bar]) -> int:
    """The most common spacing of `start_ms`; must be a Bybit interval."""
    diffs = Counter(b.start_ms - a.start_ms for a, b in itertools.pairwise(bars))
    step, _ = diffs.most_common(1)[0]
    if step not in _INTERVAL_BY_MS:
        raise DataError(
            f"bar spacing {step} ms is not a Bybit interval; expected one of {sorted(_INTERVAL_BY_MS)}"
        )
    return step


def interval_name(step_ms: int) -> str:
    """Bybit interval string ("5", "60", "D") for a spacing in ms."""
    return _INTERVAL_BY_MS[step_ms]


def check_gaps(bars: Sequence[Bar], step_ms: int, *, allow_gaps: bool, source: str = "data") -> int:
    """Count gaps (spacing != step_ms); raise DataError naming the first one unless `allow_gaps`.

    Row numbers in the message count data rows from 1 (line = row + 1 in a CSV with a header).
    """
    n_gaps = 0
    for i in range(1, len(bars)):
        d = bars[i].start_ms - bars[i - 1].start_ms
        if d != step_ms:
            if not allow_gaps:
                raise DataError(
                    f"{source}: gap before data row {i + 1} (line {i + 2}): start_ms "
                    f"{bars[i - 1].start_ms} -> {bars[i].start_ms} is {d} ms, expected {step_ms}; "
                    "pass --allow-gaps to accept gaps"
                )
            n_gaps += 1
    return n_gaps


def synthetic_bars(n_bars: int, *, seed: int) -> list[Bar]:
    """The first `n_bars` bars of `SyntheticMarket(seed=seed)`."""
    return [step.bar for step in SyntheticMarket(seed=seed).generate(n_bars)]


def forward_returns(bars: Sequence[Bar], horizon_bars: int, step_ms: int) -> tuple[F64, BoolArr]:
    """Target `c_{t+h}/c_t - 1` per bar and whether it stays inside one contiguous run (no gap, in range)."""
    cols = BarColumns.of_bars(bars)
    return forward_returns_of(cols.close, cols.start_ms, horizon_bars, step_ms)


def forward_log_vol(bars: Sequence[Bar], horizon_bars: int, step_ms: int) -> tuple[F64, BoolArr]:
    """Target `log RV_t` over the next `horizon_bars` bars and whether it is complete.

    Complete: `t..t+H` is one contiguous run and the realised vol is > 0 (an exactly flat stretch has no
    finite log).
    """
    cols = BarColumns.of_bars(bars)
    return forward_log_vol_of(cols.close, cols.start_ms, horizon_bars, step_ms)


def embargo_rows(cfg: DistillConfig) -> int:
    """Rows between splits (and purged around teacher folds): the embargo, at least every target's horizon."""
    return max(cfg.embargo_bars, cfg.horizon_bars, cfg.vol_horizon_bars if cfg.vol_head else 0)


@dataclass(frozen=True, slots=True)
class Splits:
    """Row indices (into the dataset's usable rows) of the chronological splits."""

    train: I64
    val: I64
    test: I64


@dataclass(slots=True)
class Dataset:
    """Features (all of FEATURE_NAMES), raw targets and splits of one bar series.

    `X`, `y`, `start_ms` hold only usable rows (warm features, finite, target inside a contiguous run);
    `bar_index` maps each row back to its bar. `log_vol` is the volatility target (log of the per-bar RMS
    of the next `vol_horizon_bars` one-bar log returns) of the same rows; None without a vol head, and so
    are `har_X` / `har_tod_X`, the HAR-RV regressors of each row (`offline.vol.har_design`).

    Pooled over several symbols (`load_pooled`), rows are in time order (ties by series), `series` is
    each row's series (index into `series_bars`, the bars of each symbol) and `bar_index` points into its
    own series' bars; `bars` is the first series'. None for one series.
    """

    bars: Sequence[Bar]
    step_ms: int
    horizon_bars: int
    X: F64
    y: F64
    start_ms: I64
    bar_index: I64
    splits: Splits
    provenance: dict[str, Any] = field(default_factory=dict)
    log_vol: F64 | None = None
    vol_horizon_bars: int | None = None
    har_X: F64 | None = None
    har_tod_X: F64 | None = None
    series: I64 | None = None
    series_bars: list[Sequence[Bar]] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_series(self) -> int:
        """Symbols pooled in this dataset (1 for one bar series)."""
        return 1 if self.series_bars is None else len(self.series_bars)

    def train_bars(self) -> Sequence[Bar]:
        """Bars up to and including the last training row's target bar (for regime calibration).

        Pooled over several series: those of the first series (`bars`)."""
        train = self.splits.train
        if self.series is not None:
            train = train[self.series[train] == 0]
        last = int(self.bar_index[train[-1]]) + max(self.horizon_bars, self.vol_horizon_bars or 0)
        return self.bars[: last + 1]

    def train_bars_by_symbol(self) -> dict[str, Sequence[Bar]]:
        """Each series' bars up to its last training row's target bar, by symbol (regime calibration).

        A series without a recorded symbol (`provenance`) is keyed "" (pooled thresholds only)."""
        if self.series is None or self.series_bars is None:
            return {self.provenance.get("symbol") or "": self.train_bars()}
        horizon = max(self.horizon_bars, self.vol_horizon_bars or 0)
        train = self.splits.train
        symbols = [p.get("symbol") or "" for p in self.provenance.get("series", [])]
        out: dict[str, Sequence[Bar]] = {}
        for k, bars in enumerate(self.series_bars):
            rows = train[self.series[train] == k]
            if rows.size:
                key = symbols[k] if k < len(symbols) and symbols[k] else f"series{k}"
                out[key] = bars[: int(self.bar_index[rows[-1]]) + horizon + 1]
        return out


def chronological_splits(n_rows: int, cfg: DistillConfig) -> Splits:
    """train | embargo | val | embargo | test over rows in time order.

    The embargo is `embargo_rows(cfg)` (>= every target's horizon) rows so no target overlaps a boundary.
    """
    emb = embargo_rows(cfg)
    n_train = int(n_rows * cfg.train_frac)
    n_val = int(n_rows * cfg.val_frac)
    val_start = n_train + emb
    test_start = val_start + n_val + emb
    if n_train < 50 or n_val < 20 or n_rows - test_start < 20:
        raise DataError(
            f"too few usable rows ({n_rows}) for train_frac={cfg.train_frac}, val_frac={cfg.val_frac}, "
            f"embargo={emb}: need >= 50 train, 20 validation and 20 test rows; use more bars"
        )
    idx = np.arange(n_rows, dtype=np.int64)
    return Splits(train=idx[:n_train], val=idx[val_start : val_start + n_val], test=idx[test_start:])


def calendar_splits(start_ms: I64, cfg: DistillConfig) -> Splits:
    """`chronological_splits` over the distinct bar times of `start_ms` (sorted rows, several series
    pooled): every series is cut at the same calendar boundaries, so no series' validation or test period
    lies inside another's training period, and the embargo (`embargo_rows(cfg)` bar times) separates them.
    For one series it equals `chronological_splits(len(start_ms), cfg)`."""
    times, pos = np.unique(start_ms, return_inverse=True)
    by_time = chronological_splits(int(times.size), cfg)
    idx = np.arange(start_ms.size, dtype=np.int64)

    def rows(t: I64) -> I64:
        if t.size == 0:
            return t
        return np.asarray(idx[(pos >= t[0]) & (pos <= t[-1])], dtype=np.int64)

    return Splits(train=rows(by_time.train), val=rows(by_time.val), test=rows(by_time.test))


def build_dataset(
    bars: list[Bar],
    cfg: DistillConfig,
    *,
    step_ms: int,
    provenance: dict[str, Any] | None = None,
) -> Dataset:
    """Replay the live features over `bars`, attach the targets (return; log vol with `cfg.vol_head`), drop
    rows where any target is incomplete, split."""
    cols = BarColumns.of_bars(bars)
    arrays = row_arrays(cols, cfg, step_ms=step_ms)
    X_all, y_all, v_all, usable = arrays.X, arrays.y, arrays.log_vol, arrays.usable
    bar_index = np.flatnonzero(usable).astype(np.int64)
    if bar_index.size == 0:
        raise DataError(f"no usable rows among {len(bars)} bars (warm-up is 49 bars per contiguous run)")
    start = cols.start_ms[bar_index]
    splits = chronological_splits(int(bar_index.size), cfg)
    assert X_all.shape[1] == len(FEATURE_NAMES)
    har_X = har_tod_X = None
    if v_all is not None:
        har_X = har_design(cols.close)[bar_index]
        har_tod_X = har_design(cols.close, cols.start_ms, time_of_day=True)[bar_index]
    return Dataset(
        bars=bars,
        step_ms=step_ms,
        horizon_bars=cfg.horizon_bars,
        X=X_all[bar_index],
        y=y_all[bar_index],
        start_ms=start,
        bar_index=bar_index,
        splits=splits,
        provenance=dict(provenance or {}),
        log_vol=None if v_all is None else v_all[bar_index],
        vol_horizon_bars=cfg.vol_horizon_bars if cfg.vol_head else None,
        har_X=har_X,
        har_tod_X=har_tod_X,
    )


def check_one_interval(steps_ms: Sequence[int], provs: Sequence[dict[str, Any]]) -> None:
    """Raise DataError unless every pooled series has the same bar interval."""
    if len(set(steps_ms)) != 1:
        names = [p.get("path") or p.get("source") for p in provs]
        raise DataError(
            f"--data: pooled files must share one bar interval, got {sorted(set(steps_ms))} ms ({names}); "
            "pass files of one interval"
        )


def pooled_provenance(provs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The provenance of a pooled dataset: its series' provenances (`series`), and their span and rows."""
    symbols = [p.get("symbol") for p in provs]
    return {
        "source": "pooled",
        "path": None,
        "symbol": None,
        "symbols": symbols if all(s is not None for s in symbols) else None,
        "interval": provs[0].get("interval"),
        "first_start_ms": min(int(p["first_start_ms"]) for p in provs),
        "last_start_ms": max(int(p["last_start_ms"]) for p in provs),
        "rows": sum(int(p["rows"]) for p in provs),
        "seed": None,
        "series": list(provs),
    }


def load_pooled(
    data: Sequence[str | Path],
    cfg: DistillConfig,
    *,
    symbols: Sequence[str | None] | None = None,
    n_bars: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
) -> Dataset:
    """Several CSVs (one symbol each, `symbols[i]` for `data[i]`, one interval) as one dataset: rows merged in
    time order (ties by symbol), split at the same calendar boundaries for every symbol (`calendar_splits`).
    Each symbol's rows are those of its own `load_dataset`; the rows are held once (`offline.pooled`).

    Features are pooled as they are: one input scaler then serves every symbol, which is sound because the
    volatility features that carry the signal are logs of fractions (a symbol's vol level is a shift) and
    the returns and ranges are fractions of price.

    Raises:
        DataError: as `load_dataset` per file (each must fill the splits on its own), "synthetic" among
            several sources, mismatched intervals, or too few rows for the splits.
    """
    if len(data) > 1 and any(str(d) == "synthetic" for d in data):
        raise DataError("--data: 'synthetic' cannot be pooled with other data; pass CSV files only")
    syms = list(symbols) if symbols else [None] * len(data)
    if len(syms) != len(data):
        raise DataError(f"--symbol: give one per --data file ({len(data)}) or none, got {len(syms)}")
    if len(data) == 1:
        return load_dataset(
            data[0], cfg, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last, symbol=syms[0]
        )
    parts: list[SeriesPart] = []
    for d, sym in zip(data, syms, strict=True):
        bars, step_ms, prov = read_series(
            d, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last, symbol=sym
        )
        part = series_part(bars, step_ms, prov, cfg)
        del bars  # the Bar objects weigh ~5x the columns
        n_rows = int(part.bar_index.size)
        if n_rows == 0:
            raise DataError(
                f"{d}: no usable rows among {len(part.cols)} bars (warm-up is 49 bars per contiguous run)"
            )
        try:
            chronological_splits(n_rows, cfg)  # each symbol fills the splits on its own
        except DataError as exc:
            raise DataError(f"{d}: {exc}") from exc
        parts.append(part)
    check_one_interval([p.step_ms for p in parts], [p.provenance for p in parts])
    start, series, where = pooled_order(parts)
    splits = calendar_splits(start, cfg)  # before the big allocation: too few rows fails at once
    rows = fill_rows(parts, where, cfg)
    return Dataset(
        bars=parts[0].cols,
        step_ms=parts[0].step_ms,
        horizon_bars=cfg.horizon_bars,
        X=rows.X,
        y=rows.y,
        start_ms=start,
        bar_index=rows.bar_index,
        splits=splits,
        provenance=pooled_provenance([p.provenance for p in parts]),
        log_vol=rows.log_vol,
        vol_horizon_bars=cfg.vol_horizon_bars if cfg.vol_head else None,
        har_X=rows.har_X,
        har_tod_X=rows.har_tod_X,
        series=series,
        series_bars=[p.cols for p in parts],
    )


def _provenance(
    source: str, path: str | None, bars: Sequence[Bar], step_ms: int, seed: int | None, symbol: str | None
) -> dict[str, Any]:
    return {
        "source": source,
        "path": path,
        "symbol": symbol,
        "interval": interval_name(step_ms),
        "first_start_ms": bars[0].start_ms,
        "last_start_ms": bars[-1].start_ms,
        "rows": len(bars),
        "seed": seed,
    }


def load_dataset(
    data: str | Path,
    cfg: DistillConfig,
    *,
    n_bars: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
    symbol: str | None = None,
) -> Dataset:
    """Dataset from `"synthetic"` (SyntheticMarket(seed=cfg.synthetic_seed)) or a klines CSV path.

    Args:
        data: "synthetic" or a CSV path.
        cfg: distillation config (horizon, splits, synthetic size/seed).
        n_bars: synthetic: bars to generate (None = cfg.synthetic_bars); CSV: keep only the last n_bars.
        allow_gaps: accept time gaps in a CSV (features warm up again, no target spans a gap).
        drop_last: drop a CSV's last row first: in a raw Bybit download it is the candle that was still open
            when it was fetched (../shared/data/README.md).
        symbol: the symbol a CSV holds (`--symbol`), recorded in the provenance; None records none (the
            file name is never guessed from). Synthetic data records its own symbol.

    Raises:
        DataError: bad rows, gaps, too few rows for the splits, or degenerate prices (all closes equal).
    """
    if str(data) == "synthetic":
        n = n_bars if n_bars is not None else cfg.synthetic_bars
        bars = synthetic_bars(n, seed=cfg.synthetic_seed)
        step_ms = INTERVAL_MS["5"]
        prov = _provenance("synthetic", None, bars, step_ms, cfg.synthetic_seed, bars[0].symbol)
    else:
        bars, step_ms, prov = read_series(
            data, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last, symbol=symbol
        )
    return build_dataset(bars, cfg, step_ms=step_ms, provenance=prov)


def read_series(
    data: str | Path, *, n_bars: int | None, allow_gaps: bool, drop_last: bool, symbol: str | None
) -> tuple[list[Bar], int, dict[str, Any]]:
    """One klines CSV's checked bars, their interval (ms) and provenance (see `load_dataset`).

    Raises:
        DataError: as `load_dataset` for a CSV.
    """
    path = Path(data)
    bars = load_csv(path, symbol=symbol)
    if drop_last:
        bars = bars[:-1]
        if len(bars) < 2:
            raise DataError(
                f"{path}: --drop-last leaves {len(bars)} data row(s); expected at least 2; use more bars"
            )
    if n_bars is not None and len(bars) > n_bars:
        bars = bars[-n_bars:]
    step_ms = infer_interval_ms(bars)
    n_gaps = check_gaps(bars, step_ms, allow_gaps=allow_gaps, source=str(path))
    check_prices(bars, source=str(path))
    prov = _provenance("csv", str(path), bars, step_ms, None, symbol)
    prov["gaps"] = n_gaps
    prov["dropped_last_row"] = drop_last
    return bars, step_ms, prov


def check_prices(bars: Sequence[Bar], *, source: str) -> None:
    """Raise DataError when the closes never change (nothing to learn: every target would be 0)."""
    first = bars[0].close
    if all(b.close == first for b in bars):
        raise DataError(
            f"{source}: degenerate data: all {len(bars)} closes are {first}; expected prices that move"
        )


def check_name(text: str) -> bool:
    """True if `text` is a safe tier/file name (letters, digits, _ and -)."""
    return re.fullmatch(r"[A-Za-z0-9_-]+", text) is not None


def load_sources(
    sources: Sequence[str | Path],
    cfg: DistillConfig,
    *,
    symbol: str | Sequence[str | None] | None = None,
    n_bars: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
) -> Dataset:
    """One `--data` source (`load_dataset`) or several pooled (`load_pooled`); `symbol` is one name or one
    per source. The one place `offline distill` and `--folds` turn their `--data` arguments into rows."""
    if len(sources) == 1:
        one = symbol if symbol is None or isinstance(symbol, str) else symbol[0]
        return load_dataset(
            sources[0], cfg, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last, symbol=one
        )
    syms = [symbol] if isinstance(symbol, str) else symbol
    return load_pooled(sources, cfg, symbols=syms, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last)
