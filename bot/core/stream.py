"""Pure bar stream: each confirmed bar of a symbol exactly once, in order, never invented.

`BarStream` is the sans-I/O core under `bot.bybit.feed`: no asyncio, no logging, no clock. It is fed websocket
kline updates (`on_ws_partial`, `on_ws_confirm`) and REST history (`on_rest`), and returns events:

- `Bar`: the next confirmed bar (`source` "ws" or "rest"), in strictly increasing `start_ms`;
- `PartialBar`: a `confirm:false` update of the bar being formed;
- `BackfillNeeded`: the shell must fetch REST history for `[start_ms, end_ms]` (`end_ms=None`: up to the
  exchange's newest closed bar) and hand it to `on_rest`. The pending request is `request`; the shell takes
  it with `take_fill()` (it is then in flight) and answers with `on_rest`, `fill_failed` or
  `abandon_backfill`. `on_reconnect()` means the old connection and any fill in flight on it are gone: the
  request is due again and announced again, so a fill cut short by a disconnect is always served;
- `Dropped`: a confirm that was already emitted (`duplicate`: the same bar again; `late`: an older bar, e.g. a
  websocket confirm arriving after a REST fill) - the shell logs it;
- `GapSkipped`: bars the exchange itself does not have (REST vouched for the range and they are absent), or a
  gap the shell gave up filling (`abandon_backfill`, e.g. REST banned) - the stream moves on without them.

Ordering rule: a websocket confirm newer than the next expected bar is *held* until REST has filled the gap
before it, so a bar is never emitted ahead of an older one. The key is `(symbol, start_ms)`, UTC epoch ms from
the exchange; nothing here reads a clock or a time zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bot.core.bars import Bar


@dataclass(frozen=True, slots=True)
class PartialBar:
    """A `confirm:false` update of the bar opened at `start_ms`; `ts_ms` = exchange time of the update."""

    symbol: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float
    ts_ms: int

    @classmethod
    def of(cls, bar: Bar, *, ts_ms: int) -> PartialBar:
        """The `confirm:false` update of `bar` carrying its current values at exchange time `ts_ms`."""
        b = bar
        return cls(b.symbol, b.start_ms, b.open, b.high, b.low, b.close, b.volume, b.turnover, ts_ms)

    def as_bar(self) -> Bar:
        """The bar this update would be if it confirmed now (for rehearsals; never emitted)."""
        p = self
        return Bar(p.symbol, p.start_ms, p.open, p.high, p.low, p.close, p.volume, p.turnover, source="ws")


@dataclass(frozen=True, slots=True)
class BackfillNeeded:
    """Fetch confirmed bars `start_ms..end_ms` (open times, inclusive; `end_ms=None`: through the newest)."""

    symbol: str
    start_ms: int
    end_ms: int | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """A confirmed bar that was not emitted because its key was already emitted or passed."""

    symbol: str
    start_ms: int
    reason: Literal["duplicate", "late"]
    source: Literal["ws", "rest"]


@dataclass(frozen=True, slots=True)
class GapSkipped:
    """Open times `from_ms..to_ms` (inclusive) will never be emitted: the exchange has no such bars, or
    the shell abandoned the fill (`reason`)."""

    symbol: str
    from_ms: int
    to_ms: int
    reason: Literal["exchange_missing", "abandoned"]


StreamEvent = Bar | PartialBar | BackfillNeeded | Dropped | GapSkipped


class BarStream:
    """Exactly-once, in-order confirmed bars for one symbol.

    Args:
        symbol: the symbol; every event carries it.
        interval_ms: bar length in ms.
        next_start_ms: open time of the first bar to emit; None = the first confirm or REST bar anchors it.
    """

    def __init__(self, symbol: str, interval_ms: int, *, next_start_ms: int | None = None) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be a positive number of ms, got {interval_ms}")
        if next_start_ms is not None and next_start_ms % interval_ms != 0:
            raise ValueError(
                f"next_start_ms must be a multiple of interval_ms={interval_ms}, got {next_start_ms}"
            )
        self.symbol = symbol
        self.interval_ms = interval_ms
        self.next_start_ms = next_start_ms
        self.partial: PartialBar | None = None
        self.request: BackfillNeeded | None = None
        self._in_flight = False
        self.newest_closed_ms: int | None = None  # newest open time the exchange is known to have closed
        self._held: dict[int, Bar] = {}
        self.emitted = 0

    # ---- queries ----------------------------------------------------------------------------------------

    @property
    def held(self) -> list[int]:
        """Open times of websocket confirms waiting for a gap fill, ascending."""
        return sorted(self._held)

    @property
    def fill_due(self) -> bool:
        """True when a fill request is pending and nobody is serving it: the shell must `take_fill()`."""
        return self.request is not None and not self._in_flight

    @property
    def behind(self) -> bool:
        """True when a newer bar is forming, the next expected confirm has not come and no fill is pending."""
        return (
            self.request is None
            and self.partial is not None
            and self.next_start_ms is not None
            and self.partial.start_ms > self.next_start_ms
        )

    # ---- inputs -----------------------------------------------------------------------------------------

    def on_ws_partial(self, partial: PartialBar) -> list[StreamEvent]:
        """A `confirm:false` update. Updates of bars already emitted or older than the latest are ignored."""
        if self.next_start_ms is not None and partial.start_ms < self.next_start_ms:
            return []
        if self.partial is not None and partial.start_ms < self.partial.start_ms:
            return []
        self._closed_through(partial.start_ms - self.interval_ms)
        self.partial = partial
        return [partial]

    def on_ws_confirm(self, bar: Bar) -> list[StreamEvent]:
        """A `confirm:true` bar from the websocket."""
        if self.next_start_ms is None:
            self.next_start_ms = bar.start_ms
        start = bar.start_ms
        self._closed_through(start)
        if start < self.next_start_ms:
            reason: Literal["duplicate", "late"] = (
                "duplicate" if start == self.next_start_ms - self.interval_ms else "late"
            )
            return [Dropped(self.symbol, start, reason, "ws")]
        if start in self._held:
            return [Dropped(self.symbol, start, "duplicate", "ws")]
        if self.partial is not None and self.partial.start_ms <= start:
            self.partial = None
        if start > self.next_start_ms:
            self._held[start] = bar
            return self._want(end_ms=min(self._held) - self.interval_ms)
        out: list[StreamEvent] = [self._emit(bar)]
        out.extend(self._drain())
        # Contiguous again: an open-ended (reconnect) request stays; a bounded one the confirms have passed
        # is done or, with a later confirm still held, moves on to the gap before it (emitted bars are never
        # fetched again).
        req = self.request
        if req is not None and req.end_ms is not None and req.end_ms < self.next_start_ms:
            self.request = None
            if self._held:
                out.extend(self._want(end_ms=min(self._held) - self.interval_ms))
        return out

    def on_reconnect(self) -> list[StreamEvent]:
        """A new connection: bars may have closed unseen, so ask for all after the last one.

        A fill that was in flight on the old connection died with it: the request (widened to open-ended)
        is due again and is announced again, whatever state it was in.
        """
        self._in_flight = False
        if self.next_start_ms is None:
            return []
        if self.request is None or self.request.end_ms is not None:
            self.request = BackfillNeeded(self.symbol, self.next_start_ms, None)
        return [self.request]

    def overdue(self) -> list[StreamEvent]:
        """The shell's timer says the next confirm is overdue: ask REST for it (or re-announce a request
        that is pending and not in flight)."""
        if self.next_start_ms is None or self._in_flight:
            return []
        if self.request is not None:
            return [self.request]
        return self._want(end_ms=None)

    def take_fill(self) -> BackfillNeeded | None:
        """The request to serve now, marked in flight; None when nothing is due."""
        if not self.fill_due:
            return None
        self._in_flight = True
        return self.request

    def fill_failed(self) -> list[StreamEvent]:
        """The fill in flight got no answer (an error the shell survives): the request is due again."""
        self._in_flight = False
        return [self.request] if self.request is not None else []

    def on_rest(self, bars: Iterable[Bar], *, through_ms: int) -> list[StreamEvent]:
        """Confirmed REST bars; the exchange vouches that no other bar exists with open time <= `through_ms`.

        Bars at or before the last emitted one are overlap and are skipped silently.
        """
        out: list[StreamEvent] = []
        merged: dict[int, Bar] = {}
        for bar in bars:
            if bar.start_ms <= through_ms and (
                self.next_start_ms is None or bar.start_ms >= self.next_start_ms
            ):
                merged.setdefault(bar.start_ms, bar)
        for start in [s for s in self._held if s <= through_ms]:
            merged.setdefault(start, self._held.pop(start))
        if merged:
            self._closed_through(max(merged))
        for start in sorted(merged):
            if self.next_start_ms is None:
                self.next_start_ms = start
            if start > self.next_start_ms:
                out.append(
                    GapSkipped(self.symbol, self.next_start_ms, start - self.interval_ms, "exchange_missing")
                )
            out.append(self._emit(merged[start]))
        if self._held and self.next_start_ms is not None:
            first = min(self._held)
            if self.next_start_ms < first and through_ms >= first - self.interval_ms:
                # The exchange vouched there is nothing before the held confirm: it follows a real gap.
                out.append(
                    GapSkipped(self.symbol, self.next_start_ms, first - self.interval_ms, "exchange_missing")
                )
                self.next_start_ms = first
        out.extend(self._drain())
        self.request = None
        self._in_flight = False
        if self._held:
            out.extend(self._want(end_ms=min(self._held) - self.interval_ms))
        return out

    def abandon_backfill(self) -> list[StreamEvent]:
        """Give up the pending fill (REST unavailable): emit the held confirms in order across the gaps."""
        out: list[StreamEvent] = []
        self.request = None
        self._in_flight = False
        for start in sorted(self._held):
            assert self.next_start_ms is not None
            if start > self.next_start_ms:
                out.append(GapSkipped(self.symbol, self.next_start_ms, start - self.interval_ms, "abandoned"))
            out.append(self._emit(self._held.pop(start)))
        return out

    # ---- internals --------------------------------------------------------------------------------------

    def _closed_through(self, start_ms: int) -> None:
        if self.newest_closed_ms is None or start_ms > self.newest_closed_ms:
            self.newest_closed_ms = start_ms

    def _emit(self, bar: Bar) -> Bar:
        self.next_start_ms = bar.start_ms + self.interval_ms
        self.emitted += 1
        return bar

    def _drain(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        while self.next_start_ms in self._held:
            out.append(self._emit(self._held.pop(self.next_start_ms)))
        return out

    def _want(self, *, end_ms: int | None) -> list[StreamEvent]:
        assert self.next_start_ms is not None
        if self.request is not None and self.request.end_ms is None:
            return []  # an open-ended request already covers any range
        req = BackfillNeeded(self.symbol, self.next_start_ms, end_ms)
        if req == self.request:
            return []
        self.request = req
        return [req]
