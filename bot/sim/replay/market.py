"""The replay exchange's market: where bars come from and the exchange clock that opens and closes them.

Synchronous and free of I/O beyond reading the data lazily: the server paces it in real time and pushes
what it returns. The clock is the bar grid (`clock_ms`). Bars enter quantised to their instrument's tick and
qty step and, for the wall clock, shifted by a whole number of intervals (`shift_ms`) so that the first live
bar holds the wall-clock time the exchange started at.
"""

from __future__ import annotations

import dataclasses
import itertools
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.bars import Bar, interval_ms
from bot.core.errors import DataError
from bot.sim.csvbars import read_csv_bars
from bot.sim.replay.frames import Values, partial_values
from bot.sim.replay.instruments import Instrument
from bot.sim.synthetic import SyntheticMarket

Step = Bar  # one bar of a source, as read (before quantising and shifting)


# ---- data sources -----------------------------------------------------------------------------------------


def csv_steps(path: Path, symbol: str) -> Iterator[Step]:
    """Bars of a klines CSV (read leniently)."""
    yield from read_csv_bars(path, symbol, lenient=True)


def synthetic_steps(symbol: str, seed: int, interval: str) -> Iterator[Step]:
    """Bars of `SyntheticMarket(seed=seed)` (its book is not used: `book.BookModel` quotes every source)."""
    for step in SyntheticMarket(seed=seed, symbol=symbol, interval=interval).stream():
        yield step.bar


def csv_for(data: Path, symbol: str, interval: str) -> Path:
    """`data` itself if it is a file, else `{data}/{symbol}_{N}m.csv` (60m, 240m, 1d for 60, 240, D)."""
    if data.is_file():
        return data
    suffix = {"60": "60m", "240": "240m", "D": "1d"}.get(interval, f"{interval}m")
    candidate = data / f"{symbol}_{suffix}.csv"
    if not candidate.is_file():
        raise DataError(f"{data}: expected a CSV file or a directory with {candidate.name}")
    return candidate


# ---- one symbol -------------------------------------------------------------------------------------------


@dataclass
class SymbolSeries:
    """One symbol's bars: the source, the closed bars retained, the bar forming now."""

    symbol: str
    source: Iterator[Step]
    instrument: Instrument
    shift_ms: int = 0
    starts: list[int] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    keys: array[int] = field(default_factory=lambda: array("q"))
    pending: Step | None = None  # next bar of the source, not yet opened
    forming: Bar | None = None  # bar being formed now
    fraction: float = 0.0
    exhausted: bool = False

    def peek(self) -> Step | None:
        """The next bar of the source (None = exhausted), without taking it."""
        if self.pending is None and not self.exhausted:
            step = next(self.source, None)
            if step is None:
                self.exhausted = True
            else:
                bar = self.instrument.quantise_bar(step)
                if self.shift_ms:
                    bar = dataclasses.replace(bar, start_ms=bar.start_ms + self.shift_ms)
                self.pending = bar
        return self.pending

    def skip_before(self, slot_ms: int) -> Step | None:
        """Drop source bars opening before `slot_ms` (misaligned rows); return the next one."""
        nxt = self.peek()
        while nxt is not None and nxt.start_ms < slot_ms:
            self.pending = None
            nxt = self.peek()
        return nxt

    def form(self, fraction: float) -> Values:
        """Move the forming bar to `fraction` (0..1) of its interval; return its values there."""
        self.fraction = fraction
        return self.form_values()

    def form_values(self) -> Values:
        """The forming bar's values at the current `fraction`."""
        assert self.forming is not None
        return partial_values(self.forming, self.fraction)


# ---- the market -------------------------------------------------------------------------------------------


class Market:
    """Every symbol on one bar grid. `load` closes the history; then per live bar: `open_bar`, `tick_to`
    and `SymbolSeries.form` for the partial updates, `close` per symbol, `end_bar`.

    Args:
        symbols: symbols served.
        interval: the kline interval ("5" = 5 minutes per bar).
        data: "synthetic" (seed, seed+1, ... per symbol), a CSV file, or a directory of `{SYMBOL}_{N}m.csv`.
        seed: synthetic seed of the first symbol.
        history_bars: bars closed by `load`.
        keep_bars: closed bars retained per symbol (trimmed when twice as many are held).
        instruments: (tick, qty step) strings per symbol; a symbol not named is inferred from its data.
    """

    def __init__(
        self,
        symbols: tuple[str, ...],
        *,
        interval: str,
        data: str | Path,
        seed: int,
        history_bars: int,
        keep_bars: int,
        instruments: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.symbols = symbols
        self.interval = interval
        self.interval_ms = interval_ms(interval)
        self.data = data
        self.seed = seed
        self.history_bars = history_bars
        self.keep_bars = keep_bars
        self.instruments_given = dict(instruments or {})
        self.series: dict[str, SymbolSeries] = {}
        self.clock_ms = 0
        self.live_bars = 0
        self._slot = 0

    def load(self, *, wall_ms: int | None = None) -> None:
        """Open the sources and close `history_bars` bars; the clock then stands at the first live bar.

        `wall_ms` (the wall clock, epoch ms) shifts every bar by whole intervals so the first live bar holds
        it; None keeps the data's own times.
        """
        samples: dict[str, list[Step]] = {}
        for i, symbol in enumerate(self.symbols):
            if str(self.data) == "synthetic":
                source = synthetic_steps(symbol, self.seed + i, self.interval)
            else:
                source = csv_steps(csv_for(Path(self.data), symbol, self.interval), symbol)
            sample = list(itertools.islice(source, 64))
            samples[symbol] = sample
            given = self.instruments_given.get(symbol)
            inst = Instrument.of(symbol, *given) if given is not None else Instrument.infer(symbol, sample)
            self.series[symbol] = SymbolSeries(symbol, itertools.chain(sample, source), inst)
        raw_starts = [s[0].start_ms for s in samples.values() if s]
        if not raw_starts:
            raise DataError(f"{self.data}: no bars")
        if wall_ms is not None:
            live = min(raw_starts) + self.history_bars * self.interval_ms
            shift = (wall_ms - live) // self.interval_ms * self.interval_ms
            for s in self.series.values():
                s.shift_ms = shift
        firsts = [s.peek() for s in self.series.values()]
        starts = [f.start_ms for f in firsts if f is not None]
        slot = min(starts)
        for _ in range(self.history_bars):
            for s in self.series.values():
                nxt = s.skip_before(slot)
                if nxt is not None and nxt.start_ms == slot:
                    s.pending = None
                    self._retain(s, nxt)
            slot += self.interval_ms
        self._slot = slot
        self.clock_ms = slot

    def open_bar(self) -> list[tuple[SymbolSeries, Bar]] | None:
        """Start forming the next bar of every symbol that has one; None = every source is exhausted."""
        slot = self._slot
        forming: list[tuple[SymbolSeries, Bar]] = []
        for s in self.series.values():
            nxt = s.skip_before(slot)
            if nxt is not None and nxt.start_ms == slot:
                s.forming, s.fraction = nxt, 0.0
                forming.append((s, nxt))
            else:
                s.forming = None
        if all(s.exhausted for s in self.series.values()):
            return None
        return forming

    def tick_to(self, k: int, steps: int) -> None:
        """Set the clock to step `k` of `steps` through the forming bar (k == steps: its close)."""
        self.clock_ms = self._slot + k * self.interval_ms // steps

    def close(self, s: SymbolSeries, bar: Bar) -> None:
        """`bar`, the one `s` was forming, closed."""
        s.pending, s.forming = None, None
        self._retain(s, bar)

    @property
    def slot_ms(self) -> int:
        """Open time of the live bar (the one forming, or the next to open)."""
        return self._slot

    def end_bar(self) -> None:
        """Finish the live bar (every symbol closed): count it, move to the next slot."""
        self._slot += self.interval_ms
        self.live_bars += 1

    def _retain(self, s: SymbolSeries, bar: Bar) -> None:
        s.starts.append(bar.start_ms)
        s.bars.append(bar)
        s.keys.append(bar.start_ms)
        if len(s.bars) > 2 * self.keep_bars:
            del s.bars[: -self.keep_bars]
            del s.starts[: -self.keep_bars]
