"""One symbol's bars as columns, and the per-bar training arrays (features, targets, usable rows) over them.

A `Bar` object costs about 300 bytes (a slotted dataclass and its boxed floats); `BarColumns` holds the same
bar in 56 bytes (an int64 and six float64 columns), which is what lets a pooled dataset of hundreds of
symbols keep every symbol's bars for regime calibration and routing (`offline.pooled`). It is a
`Sequence[Bar]`: indexing makes a `Bar`, slicing makes a view, so code written for a list of bars reads it.

`row_arrays` is the one place a bar series becomes training rows: the live feature kernel over the columns
(`bot.core.features.features_of_arrays`), the forward return, the log forward vol, and the usable mask
(`offline.data.build_dataset` and `offline.pooled.build_pooled` both call it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from bot.config import DistillConfig
from bot.core.bars import Bar
from bot.core.features import features_of_arrays
from offline.vol import forward_rv

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]


class BarColumns(Sequence[Bar]):
    """The bars of one symbol, in time order, as columns (`start_ms` epoch ms; prices in quote currency,
    `volume` in base coin, `turnover` in quote currency), all of one length."""

    __slots__ = ("close", "high", "low", "open", "source", "start_ms", "symbol", "turnover", "volume")

    def __init__(
        self,
        symbol: str,
        start_ms: I64,
        open_: F64,
        high: F64,
        low: F64,
        close: F64,
        volume: F64,
        turnover: F64,
        *,
        source: str = "csv",
    ) -> None:
        self.symbol = symbol
        self.start_ms = start_ms
        self.open = open_
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.turnover = turnover
        self.source = source

    @classmethod
    def of_bars(cls, bars: Sequence[Bar]) -> BarColumns:
        """The columns of `bars` (one symbol; `symbol` and `source` are the first bar's)."""
        n = len(bars)

        def col(name: str) -> F64:
            return np.fromiter((getattr(b, name) for b in bars), dtype=np.float64, count=n)

        return cls(
            bars[0].symbol if n else "",
            np.fromiter((b.start_ms for b in bars), dtype=np.int64, count=n),
            col("open"),
            col("high"),
            col("low"),
            col("close"),
            col("volume"),
            col("turnover"),
            source=bars[0].source if n else "csv",
        )

    def __len__(self) -> int:
        return int(self.start_ms.shape[0])

    @overload
    def __getitem__(self, i: int) -> Bar: ...

    @overload
    def __getitem__(self, i: slice) -> BarColumns: ...

    def __getitem__(self, i: int | slice) -> Bar | BarColumns:
        if isinstance(i, slice):
            c = self
            return BarColumns(
                c.symbol,
                c.start_ms[i],
                c.open[i],
                c.high[i],
                c.low[i],
                c.close[i],
                c.volume[i],
                c.turnover[i],
                source=c.source,
            )
        k = range(len(self))[i]  # IndexError past the end, negative indices from the end
        return Bar(
            self.symbol,
            int(self.start_ms[k]),
            float(self.open[k]),
            float(self.high[k]),
            float(self.low[k]),
            float(self.close[k]),
            float(self.volume[k]),
            float(self.turnover[k]),
            self.source,  # type: ignore[arg-type]  # a BarSource, copied from the bars it was made of
        )

    def __iter__(self) -> Iterator[Bar]:
        cols = (self.start_ms, self.open, self.high, self.low, self.close, self.volume, self.turnover)
        sym, src = self.symbol, self.source
        for t, o, h, lo, c, v, q in zip(*(a.tolist() for a in cols), strict=True):
            yield Bar(sym, t, o, h, lo, c, v, q, src)  # type: ignore[arg-type]  # see __getitem__

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        cols = (self.start_ms, self.open, self.high, self.low, self.close, self.volume, self.turnover)
        return sum(int(a.nbytes) for a in cols)


def forward_returns_of(close: F64, start_ms: I64, horizon_bars: int, step_ms: int) -> tuple[F64, BoolArr]:
    """Target `c_{t+h}/c_t - 1` per bar and whether it stays inside one contiguous run (no gap, in range)."""
    n = int(close.shape[0])
    y = np.full(n, np.nan, dtype=np.float64)
    ok = np.zeros(n, dtype=np.bool_)
    h = horizon_bars
    if n > h:
        y[: n - h] = close[h:] / close[: n - h] - 1.0
        ok[: n - h] = (start_ms[h:] - start_ms[: n - h]) == h * step_ms
    return y, ok


def forward_log_vol_of(close: F64, start_ms: I64, horizon_bars: int, step_ms: int) -> tuple[F64, BoolArr]:
    """Target `log RV_t` over the next `horizon_bars` bars and whether it is complete: contiguous (as the
    return target) and a realised vol > 0 (an exactly flat stretch has no finite log)."""
    rv = forward_rv(close, horizon_bars)
    _, ok = forward_returns_of(close, start_ms, horizon_bars, step_ms)
    ok &= np.isfinite(rv) & (rv > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_vol = np.where(ok, np.log(np.where(ok, rv, 1.0)), np.nan)
    return np.asarray(log_vol, dtype=np.float64), ok


@dataclass(frozen=True, slots=True)
class RowArrays:
    """Per bar of one series: features `X` [bars, N_FEATURES], return target `y`, log vol target `log_vol`
    (None without a vol head) and `usable` (warm, finite features, every target complete)."""

    X: F64
    y: F64
    log_vol: F64 | None
    usable: BoolArr


def row_arrays(cols: BarColumns, cfg: DistillConfig, *, step_ms: int) -> RowArrays:
    """The live features over `cols` (one kernel call) and the targets of `cfg`, with the usable mask."""
    X, warm = features_of_arrays(
        cols.start_ms, cols.open, cols.high, cols.low, cols.close, cols.volume, interval_ms=step_ms,
        symbol=cols.symbol,
    )  # fmt: skip
    y, ok = forward_returns_of(cols.close, cols.start_ms, cfg.horizon_bars, step_ms)
    usable = warm & ok & np.isfinite(X).all(axis=1) & np.isfinite(y)
    log_vol: F64 | None = None
    if cfg.vol_head:
        log_vol, vol_ok = forward_log_vol_of(cols.close, cols.start_ms, cfg.vol_horizon_bars, step_ms)
        usable &= vol_ok
    return RowArrays(X=X, y=y, log_vol=log_vol, usable=usable)
