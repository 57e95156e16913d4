"""The pooled rows of many symbols, built with one copy of the rows (`offline.data.load_pooled` uses it).

Concatenating each symbol's dataset and then ordering the rows holds them two or three times at the peak.
Here the pooled dataset is made in two passes over the symbols:

1. `series_part`: each symbol's checked bars become columns (`offline.columns.BarColumns`, 56 bytes a bar),
   the feature kernel and the targets run once, and only the usable rows' bar indices are kept;
2. `pooled_order` orders every symbol's usable rows by (time, symbol), and `fill_rows` allocates the pooled
   arrays once, runs the kernel and the targets again for one symbol at a time and writes its rows into their
   places.

The kernel runs twice per symbol (it does over 1,000,000 bars/s, docs/performance.md), so at its peak the
process holds the pooled rows once, plus one symbol's per-bar arrays and the bar columns of every symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.config import DistillConfig
from bot.core.bars import Bar
from bot.core.features import N_FEATURES
from offline.columns import F64, I64, BarColumns, row_arrays
from offline.vol import HAR_WINDOWS, har_design


@dataclass(frozen=True, slots=True)
class SeriesPart:
    """One symbol after the first pass: its bars as columns, its usable rows' bar indices (ascending), its
    interval and provenance."""

    cols: BarColumns
    step_ms: int
    bar_index: I64
    provenance: dict[str, Any]


def series_part(
    bars: Sequence[Bar], step_ms: int, provenance: dict[str, Any], cfg: DistillConfig
) -> SeriesPart:
    """The first pass over one symbol's bars (see the module docstring); its usable rows may be none."""
    cols = BarColumns.of_bars(bars)
    usable = row_arrays(cols, cfg, step_ms=step_ms).usable
    return SeriesPart(cols, step_ms, np.flatnonzero(usable).astype(np.int64), provenance)


def pooled_order(parts: Sequence[SeriesPart]) -> tuple[I64, I64, I64]:
    """`(start_ms, series, where)`: every usable row's time and symbol in pooled order (by time, then symbol),
    and for the rows listed symbol by symbol, the pooled row each goes to."""
    sizes = [int(p.bar_index.size) for p in parts]
    series = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    start = np.concatenate([p.cols.start_ms[p.bar_index] for p in parts])
    order = np.lexsort((series, start))
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    return start[order], series[order], where.astype(np.int64)


@dataclass(frozen=True, slots=True)
class PooledRows:
    """The pooled arrays, one row per usable row of every symbol (see `offline.data.Dataset`)."""

    X: F64
    y: F64
    bar_index: I64
    log_vol: F64 | None
    har_X: F64 | None
    har_tod_X: F64 | None

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows."""
        arrays = (self.X, self.y, self.bar_index, self.log_vol, self.har_X, self.har_tod_X)
        return sum(int(a.nbytes) for a in arrays if a is not None)


def fill_rows(parts: Sequence[SeriesPart], where: I64, cfg: DistillConfig) -> PooledRows:
    """Allocate the pooled arrays once and write each symbol's rows into their places (`where`, from
    `pooled_order`), running the kernel and the targets again one symbol at a time."""
    n = int(where.size)
    vol = cfg.vol_head
    out = PooledRows(
        X=np.empty((n, N_FEATURES), dtype=np.float64),
        y=np.empty(n, dtype=np.float64),
        bar_index=np.empty(n, dtype=np.int64),
        log_vol=np.empty(n, dtype=np.float64) if vol else None,
        har_X=np.empty((n, len(HAR_WINDOWS)), dtype=np.float64) if vol else None,
        har_tod_X=np.empty((n, len(HAR_WINDOWS) + 23), dtype=np.float64) if vol else None,
    )
    offset = 0
    for p in parts:
        bi = p.bar_index
        rows = where[offset : offset + bi.size]
        offset += int(bi.size)
        arrays = row_arrays(p.cols, cfg, step_ms=p.step_ms)
        out.X[rows] = arrays.X[bi]
        out.y[rows] = arrays.y[bi]
        out.bar_index[rows] = bi
        if out.log_vol is not None and out.har_X is not None and out.har_tod_X is not None:
            assert arrays.log_vol is not None
            out.log_vol[rows] = arrays.log_vol[bi]
            out.har_X[rows] = har_design(p.cols.close)[bi]
            out.har_tod_X[rows] = har_design(p.cols.close, p.cols.start_ms, time_of_day=True)[bi]
        del arrays
    return out
