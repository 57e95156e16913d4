"""`ReplayClock`, the clock half of `ReplayExchange` (bot.sim.replay.server): the task that paces the market
clock in real time, the pushes each clock step produces (klines of every served interval, the level-1 book,
tickers, trades), the quote refreshes between steps, and the snapshots a new subscriber gets.

A mixin: `ReplayExchange.__init__`/`start` set up the state declared below.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Final, Literal

from bot.core.bars import Bar
from bot.sim.replay import klines
from bot.sim.replay.book import BookModel, TickerState, ticker_fields
from bot.sim.replay.faults import FaultPlan
from bot.sim.replay.frames import (
    Values,
    bar_values,
    book_data,
    kline_frame,
    kline_topic,
    orderbook_frame,
    orderbook_topic,
    tickers_frame,
    tickers_topic,
    trade_frame,
    trade_topic,
)
from bot.sim.replay.market import Market, SymbolSeries
from bot.sim.replay.pacing import Pacer
from bot.sim.replay.ws import WsSessions

Clock = Literal["exchange", "wall"]

REPUSH_S: Final = 3.0  # an unchanged level-1 book is pushed again after this long, as on Bybit


class ReplayClock:
    """The market clock, its driver and the pushes (a mixin of `ReplayExchange`, which holds the state)."""

    symbols: tuple[str, ...]
    interval: str
    interval_ms: int
    intervals: tuple[str, ...]
    bar_seconds: float
    updates_per_bar: int
    max_bars: int | None
    book: bool
    book_refresh_s: float
    clock: Clock
    done: asyncio.Event
    books: dict[str, BookModel]
    _market: Market
    _faults: FaultPlan
    _ws: WsSessions
    _pacer: Pacer
    _closed_event: asyncio.Event
    _tickers: dict[str, TickerState]
    _last_book_push: dict[str, float]
    _tick_monotonic: float  # when the clock last stepped (wall clock interpolation)
    _step_ms: int
    _speed: float  # exchange s per s
    _first_k: int  # steps of the first live bar already past at start (wall clock)

    def now_ms(self) -> int:
        """What a client is told the time is (`time` in REST answers, `ts` in pushes): the market clock, and
        with `clock="wall"` the real time elapsed since its last step added (at the replay's speed, capped
        below the next step), so that a replay at real speed reads as the wall clock."""
        clock = self._market.clock_ms
        if self.clock == "exchange" or self.bar_seconds <= 0:
            return clock
        elapsed_ms = int((time.monotonic() - self._tick_monotonic) * 1000 * self._speed)
        return clock + max(0, min(elapsed_ms, self._step_ms - 1))

    # ---- the clock --------------------------------------------------------------------------------------

    def _step_clock(self, k: int, steps: int) -> None:
        self._market.tick_to(k, steps)
        self._tick_monotonic = time.monotonic()

    async def _drive(self) -> None:
        market = self._market
        steps = self.updates_per_bar + 1
        while self.max_bars is None or market.live_bars < self.max_bars:
            await self._pacer.wait_running()
            forming = market.open_bar()
            if forming is None:
                break
            volumes = {s.symbol: Decimal(0) for s, _ in forming}
            for s, bar in forming:
                self.books[s.symbol].set_scale(bar.volume)
            first_k, self._first_k = self._first_k, 0
            for k in range(first_k + 1, steps):
                await self._pacer.tick(self.bar_seconds / steps)
                self._step_clock(k, steps)
                for s, bar in forming:
                    values = s.form(k / steps)
                    frame = self._kline_frame(s, bar.start_ms, values, interval=self.interval, confirm=False)
                    await self._ws.broadcast(kline_topic(self.interval, s.symbol), frame)
                    await self._push_aggregates(s, bar, closing=False)
                    if self.book:
                        await self._push_market(s, values, volumes)
            await self._pacer.tick(self.bar_seconds / steps)
            self._step_clock(steps, steps)
            for s, bar in forming:
                s.form(1.0)
                if self.book:
                    await self._push_market(s, bar_values(bar), volumes)
                market.close(s, bar)
                await self._confirm(s, bar)
                await self._push_aggregates(s, bar, closing=True)
            for symbol, frame in self._faults.take_late(market.slot_ms):
                await self._ws.broadcast(kline_topic(self.interval, symbol), frame)
            market.end_bar()
            self._closed_event.set()
        self.done.set()
        self._closed_event.set()

    def _kline_frame(
        self, s: SymbolSeries, start_ms: int, values: Values, *, interval: str, confirm: bool
    ) -> bytes:
        return kline_frame(
            s.instrument,
            start_ms,
            values,
            interval=interval,
            end_ms=klines.bucket_end(interval, start_ms),
            ts_ms=self.now_ms(),
            confirm=confirm,
        )

    async def _confirm(self, s: SymbolSeries, bar: Bar) -> None:
        frame = self._kline_frame(s, bar.start_ms, bar_values(bar), interval=self.interval, confirm=True)
        for _ in range(self._faults.confirm_copies(bar.symbol, bar.start_ms, self.interval_ms, frame)):
            await self._ws.broadcast(kline_topic(self.interval, bar.symbol), frame)

    async def _push_aggregates(self, s: SymbolSeries, bar: Bar, *, closing: bool) -> None:
        """Pushes of the coarser intervals someone subscribed to: the bucket holding `bar` so far, confirmed
        when `bar` (closing) is its last."""
        for iv in self.intervals[1:]:
            topic = kline_topic(iv, s.symbol)
            if not self._ws.wanted(topic):
                continue
            b0 = klines.bucket_start(iv, bar.start_ms)
            values = klines.current(s, iv, bar.start_ms)
            if values is None:
                continue
            confirm = closing and bar.start_ms + self.interval_ms >= klines.bucket_end(iv, b0)
            await self._ws.broadcast(topic, self._kline_frame(s, b0, values, interval=iv, confirm=confirm))

    async def _push_market(self, s: SymbolSeries, values: Values, volumes: dict[str, Decimal]) -> None:
        """One clock step of the book model: the trades since the last step, the new quotes, the ticker."""
        book = self.books[s.symbol]
        ts = self.now_ms()
        volume = s.instrument.qty(values[4])
        prints = book.trade(values[3], volume - volumes[s.symbol], ts_ms=ts)
        volumes[s.symbol] = max(volume, volumes[s.symbol])
        if prints:
            await self._ws.broadcast(trade_topic(s.symbol), trade_frame(s.symbol, prints, ts_ms=ts))
        await self._push_book(s.symbol)

    async def _push_book(self, symbol: str) -> None:
        """Push the level-1 book and the ticker delta of `symbol` as they stand."""
        ts = self.now_ms()
        self._last_book_push[symbol] = time.monotonic()
        await self._ws.broadcast(
            orderbook_topic(symbol), orderbook_frame(symbol, self._book_data(symbol), ts_ms=ts)
        )
        if self._ws.wanted(tickers_topic(symbol)):
            delta = self._tickers[symbol].update(self._ticker(symbol))
            if delta:
                frame = tickers_frame(symbol, delta, kind="delta", cs=self.books[symbol].seq, ts_ms=ts)
                await self._ws.broadcast(tickers_topic(symbol), frame)

    async def _refresh_books(self) -> None:
        """Quote refreshes between clock steps; while paused, an unchanged book is re-pushed every 3 s."""
        while True:
            await asyncio.sleep(self.book_refresh_s)
            paused = not self._pacer.running
            for symbol in self.symbols:
                if not (self._ws.wanted(orderbook_topic(symbol)) or self._ws.wanted(tickers_topic(symbol))):
                    continue
                if not paused:
                    self.books[symbol].refresh()
                elif time.monotonic() - self._last_book_push.get(symbol, 0.0) < REPUSH_S:
                    continue
                await self._push_book(symbol)

    # ---- snapshots ----------------------------------------------------------------------------------------

    def _book_data(self, symbol: str) -> dict[str, object]:
        book = self.books[symbol]
        return book_data(book.inst, book.bid, book.bid_sz, book.ask, book.ask_sz, book.seq)

    def _ticker(self, symbol: str, *, rest: bool = False) -> dict[str, str]:
        return ticker_fields(self._market.series[symbol], self.books[symbol], now_ms=self.now_ms(), rest=rest)

    def _snapshot(self, topic: str) -> bytes | None:
        """What a new subscriber of `topic` gets right after the ack: the book, or the full ticker."""
        kind, _, symbol = topic.partition(".")
        if kind == "orderbook" and symbol.startswith("1.") and symbol[2:] in self.books:
            return orderbook_frame(symbol[2:], self._book_data(symbol[2:]), ts_ms=self.now_ms())
        if kind == "tickers" and symbol in self.books:
            # With other subscribers the stored ticker is what their deltas build on: a new subscriber starts
            # from it too (the next delta brings both up to date). Without, it is refreshed first.
            state = self._tickers[symbol]
            if self._ws.subscribers(topic) <= 1:
                state.update(self._ticker(symbol))
            fields = state.fields
            return tickers_frame(
                symbol, fields, kind="snapshot", cs=self.books[symbol].seq, ts_ms=self.now_ms()
            )
        return None
