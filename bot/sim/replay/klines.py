"""Klines of every standard Bybit interval, aggregated from the served (finest) bars of one symbol.

Buckets are UTC-aligned as on Bybit: minute and hour intervals and `D` on the epoch grid, `W` from Monday
00:00 UTC, `M` from the first of the month. An interval is served when its buckets are whole multiples of the
served bar interval (`W` and `M` need `D` or finer); finer intervals cannot be made from coarser bars.
A bucket's values are open of its first bar, max/min, close of its last bar, sums of volume and turnover;
missing served bars are simply absent. Pure functions over `SymbolSeries`.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from bot.core.bars import INTERVAL_MS
from bot.sim.replay.frames import Values, bar_values
from bot.sim.replay.market import SymbolSeries

STANDARD_INTERVALS: Final = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
_DAY_MS: Final = 86_400_000
_WEEK_MS: Final = 7 * _DAY_MS
_MONDAY_OFFSET_MS: Final = 4 * _DAY_MS  # 1970-01-01 was a Thursday; Monday 1970-01-05


def served_intervals(served: str) -> tuple[str, ...]:
    """The standard intervals that can be built from bars of interval `served`."""
    base = INTERVAL_MS[served]
    out: list[str] = []
    for iv in STANDARD_INTERVALS:
        if iv in INTERVAL_MS:
            if INTERVAL_MS[iv] % base == 0:
                out.append(iv)
        elif _DAY_MS % base == 0:
            out.append(iv)
    return tuple(out)


def bucket_start(interval: str, t_ms: int) -> int:
    """Open time of the `interval` bucket holding `t_ms`."""
    if interval in INTERVAL_MS:
        step = INTERVAL_MS[interval]
        return t_ms // step * step
    if interval == "W":
        return (t_ms - _MONDAY_OFFSET_MS) // _WEEK_MS * _WEEK_MS + _MONDAY_OFFSET_MS
    d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000


def bucket_end(interval: str, start_ms: int) -> int:
    """Open time of the bucket after the one opening at `start_ms`."""
    if interval in INTERVAL_MS:
        return start_ms + INTERVAL_MS[interval]
    if interval == "W":
        return start_ms + _WEEK_MS
    d = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def merge(acc: Values | None, v: Values) -> Values:
    """`acc` extended by the later bar `v`."""
    if acc is None:
        return v
    return acc[0], max(acc[1], v[1]), min(acc[2], v[2]), v[3], acc[4] + v[4], acc[5] + v[5]


def _rows(series: SymbolSeries) -> tuple[int, int]:
    """(number of retained closed bars, number including the forming one)."""
    n = len(series.starts)
    return n, n + (series.forming is not None)


def _row(series: SymbolSeries, i: int) -> tuple[int, Values]:
    if i < len(series.starts):
        bar = series.bars[i]
        return bar.start_ms, bar_values(bar)
    assert series.forming is not None
    return series.forming.start_ms, series.form_values()


def query(
    series: SymbolSeries, interval: str, *, start: int | None, end: int | None, limit: int
) -> list[tuple[int, Values]]:
    """Bybit's kline answer over the retained (and forming) bars: (bucket start, values), newest first.

    With `start`: the oldest `limit` buckets from the one holding `start` (and opening at or before `end`,
    if given). Without: the newest `limit` buckets opening at or before `end` (or the newest of all).
    """
    _, total = _rows(series)
    starts = series.starts
    lo = 0 if start is None else bisect.bisect_left(starts, bucket_start(interval, start))
    if end is None:
        hi = total
    else:
        hi = bisect.bisect_left(starts, bucket_end(interval, bucket_start(interval, end)))
        if hi == len(starts) and series.forming is not None and series.forming.start_ms <= end:
            hi = total
    if lo == len(starts) and start is not None and series.forming is not None:
        lo = len(starts) if series.forming.start_ms >= bucket_start(interval, start) else total
    out: list[tuple[int, Values]] = []
    if start is not None:
        for b, v in _forward(series, interval, lo, hi):
            out.append((b, v))
            if len(out) == limit:
                break
        out.reverse()
        return out
    for b, v in _backward(series, interval, lo, hi):
        out.append((b, v))
        if len(out) == limit:
            break
    return out


def _forward(series: SymbolSeries, interval: str, lo: int, hi: int) -> Iterator[tuple[int, Values]]:
    cur: int | None = None
    acc: Values | None = None
    for i in range(lo, hi):
        t, v = _row(series, i)
        b = bucket_start(interval, t)
        if cur is not None and b != cur:
            assert acc is not None
            yield cur, acc
            acc = None
        cur, acc = b, merge(acc, v)
    if cur is not None and acc is not None:
        yield cur, acc


def _backward(series: SymbolSeries, interval: str, lo: int, hi: int) -> Iterator[tuple[int, Values]]:
    cur: int | None = None
    parts: list[Values] = []
    for i in range(hi - 1, lo - 1, -1):
        t, v = _row(series, i)
        b = bucket_start(interval, t)
        if cur is not None and b != cur:
            yield cur, _fold(parts)
            parts = []
        cur = b
        parts.append(v)
    if cur is not None and parts:
        yield cur, _fold(parts)


def _fold(newest_first: list[Values]) -> Values:
    acc: Values | None = None
    for v in reversed(newest_first):
        acc = merge(acc, v)
    assert acc is not None
    return acc


def current(series: SymbolSeries, interval: str, t_ms: int) -> Values | None:
    """Values of the `interval` bucket holding `t_ms` so far (closed bars and the forming one)."""
    b = bucket_start(interval, t_ms)
    rows = query(series, interval, start=b, end=b, limit=1)
    return rows[0][1] if rows and rows[0][0] == b else None
