"""The live market feed: REST backfill, websocket connections sharing the symbols, reconnects, heartbeats.

`MarketFeed` is the asyncio shell around the pure `bot.core.stream.BarStream` (one per symbol):

    async with MarketFeed(config, rest, start_ms={"BTCUSDT": None}) as feed:
        async for event in feed:   # Bar | BookTop | PartialBar | FeedReady
            ...

Start-up: REST backfill of every symbol (from `start_ms[symbol]`, or the latest `backfill_bars` closed bars
before the exchange's clock), `backfill_concurrency` symbols at once inside the REST client's pacing, with
a progress line every ~2 s. A symbol whose backfill fails `backfill_attempts` times (each try with the
client's own retries) is left out with one warning (`symbol_excluded`) and never holds up the others; only
when every symbol fails, or REST is unusable (a bad URL, an IP ban), is the start-up fatal. Then the topics
(kline and book topic of each symbol; a symbol's topics stay on one connection) are spread over as many
connections as `[exchange] max_topics` and Bybit's 21,000-character subscribe args need (`plan_connections`),
each connection subscribes, and once all have, `FeedReady`, then live. Opening and reopening connections
is paced (`ws_connects_per_5min`; Bybit allows 500 per 5 minutes).

Each connection (`bot.bybit.connection.Connection`) is independent: its own reader (frames, the stale-feed
and pong watchdogs, the overdue-bar timer), heartbeat (`{"op":"ping"}` every `ping_interval_s`), REST filler
and reconnect loop with capped exponential backoff and jitter (`bot.bybit.backoff`), reset after
`healthy_reset_s` of health.
Every (re)connect resubscribes that connection's topics and asks REST for the bars closed since the last one
emitted of its symbols; websocket confirms newer than a gap are held until the gap is filled, so bars come
out per symbol strictly in order, each once. A symbol belongs to exactly one connection, so a drop on one
delays no symbol on another. Only kline pushes prove a connection's feed (`stale_feed_s`); pongs prove its
socket (a ping unanswered for `ping_interval_s` is a dead socket). Counters are in `feed.stats`.

Overflow policy of the bounded event queue (`feed_queue_size`): when it is full, `PartialBar` and `BookTop`
are dropped (`stats.dropped_updates`; the next update supersedes them) and confirmed bars spill into an
overflow list that refills the queue as the consumer catches up - the readers never block and no confirmed
bar is dropped. The overflow only grows by one bar per symbol per bar interval while the consumer is stalled.

Fatal (raised from the iteration): a refused subscribe (`SubscribeError`, e.g. unknown symbol), a start-up
backfill that failed for every symbol or could not reach REST, a REST error that is not transient during a
gap fill (`ExchangeError`). A gap fill whose transient faults outlast the retries (`RetriesExhaustedError`)
is retried after a pause on the same connection; the service's decision-lag check is what ends a run whose
fills never succeed. An HTTP 403 (`IpBannedError`) during a gap fill stops REST only: the held websocket
bars are emitted across the gap (logged) and the websocket goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from bot.bybit.connection import Connection
from bot.bybit.errors import EndpointError, ExchangeError, IpBannedError, RateLimitError
from bot.bybit.events import FeedEvent, FeedReady, FeedStats
from bot.bybit.log_events import (
    BACKFILL,
    BACKFILL_FAILED,
    BACKFILL_PROGRESS,
    BAR_DUPLICATE,
    BAR_LATE,
    BAR_SKIPPED,
    SYMBOL_EXCLUDED,
    WS_PLANNED,
    get_logger,
)
from bot.bybit.pacing import RateWindow
from bot.bybit.rest import History, RestClient
from bot.bybit.settings import FeedSettings
from bot.bybit.wire import WireError
from bot.core.bars import Bar, interval_ms
from bot.core.errors import BotError
from bot.core.stream import BackfillNeeded, BarStream, Dropped, GapSkipped, PartialBar, StreamEvent

ARGS_LIMIT_CHARS = 21_000  # Bybit: the subscribe args of one public connection, as one JSON array
PROGRESS_EVERY_S = 2.0  # start-up backfill progress line
CONNECT_WINDOW_S = 300.0  # Bybit counts connection opens per 5 minutes
RATE_LIMITED_TRIES = 10  # start-up backfill tries of one symbol that only met rate limits, at most


class _Fatal:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def args_chars(topics: list[str]) -> int:
    """Characters of `topics` as one JSON array (`["a","b"]`): how Bybit counts the subscribe args limit."""
    return 2 + sum(len(t) + 2 for t in topics) + max(len(topics) - 1, 0)


def plan_connections(
    groups: list[list[str]], *, max_topics: int, max_chars: int = ARGS_LIMIT_CHARS
) -> list[list[int]]:
    """Spread topic groups (one per symbol, kept together) over connections, in order: a connection takes
    groups while it holds at most `max_topics` topics and `max_chars` characters of args. Returns the group
    indices of each connection. Raises ValueError for a group that fits no connection."""
    plans: list[list[int]] = []
    topics: list[str] = []
    for i, group in enumerate(groups):
        if len(group) > max_topics or args_chars(group) > max_chars:
            raise ValueError(
                f"topics {group} do not fit one connection ({max_topics} topics, {max_chars} chars)"
            )
        if not plans or len(topics) + len(group) > max_topics or args_chars(topics + group) > max_chars:
            plans.append([])
            topics = []
        plans[-1].append(i)
        topics.extend(group)
    return plans


class MarketFeed:
    """Confirmed bars (exactly once, in order per symbol), partial bars, book tops and one `FeedReady`.

    Args:
        config: the service config (`[market]` symbols/interval, `[exchange]` urls, timings, book stream).
        rest: an open `RestClient` (shared with the rest of the process).
        start_ms: per symbol, the open time of the first bar to backfill; None or missing = the latest
            `exchange.backfill_bars` closed bars.
    """

    def __init__(
        self, config: FeedSettings, rest: RestClient, *, start_ms: Mapping[str, int | None] | None = None
    ) -> None:
        self._ex = config.exchange
        self.symbols = tuple(config.market.symbol_list)
        self.interval = config.market.interval
        self.interval_ms = interval_ms(self.interval)
        self._rest = rest
        self._start = dict(start_ms or {})
        self._streams: dict[str, BarStream] = {}
        self._queue: asyncio.Queue[FeedEvent | _Fatal] = asyncio.Queue(maxsize=self._ex.feed_queue_size)
        self._overflow: deque[FeedEvent | _Fatal] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._connect_pacer = RateWindow(self._ex.ws_connects_per_5min, CONNECT_WINDOW_S)
        self.connections: list[Connection] = []
        self._owner: dict[str, Connection] = {}
        self._subscribed: set[int] = set()
        self._all_subscribed = asyncio.Event()
        self._closed = False
        self._log = get_logger(component="feed")
        self.excluded: dict[str, str] = {}  # symbol -> why its start-up backfill was given up
        self._tasks: list[asyncio.Task[None]] = []
        self._conn_failed = asyncio.Event()
        self.stats = FeedStats()

    # ---- lifecycle and iteration --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Self:
        if self._closed:
            raise RuntimeError("MarketFeed is closed; create a new one")
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="market-feed")
        return self

    def events(self) -> Self:
        """The event iterator (the feed itself)."""
        return self.__aiter__()

    async def __anext__(self) -> FeedEvent:
        return self._taken(await self._queue.get())

    def next_nowait(self) -> FeedEvent | None:
        """The next event when one is queued already, else None (never waits): the consumer takes a bar
        close's burst of confirms at once. Raises the feed's fatal error as the iteration does."""
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return self._taken(item)

    def _taken(self, item: FeedEvent | _Fatal) -> FeedEvent:
        while self._overflow and not self._queue.full():
            self._queue.put_nowait(self._overflow.popleft())
        if isinstance(item, _Fatal):
            raise item.exc
        return item

    async def aclose(self) -> None:
        """Stop the feed: close the websockets and cancel their tasks.

        The sockets are aborted first, so a connection's loop ends on its own (its `recv()` raises and it
        sees the feed closed) even when a cancel() raced a timeout inside it and was lost."""
        self._closed = True
        for conn in self.connections:
            ws = conn._ws
            if ws is not None:
                ws.transport.abort()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)  # a cancel() of ours gets through
            self._runner = None

    @property
    def streams(self) -> Mapping[str, BarStream]:
        """The per-symbol bar stream cores (read-only use: `next_start_ms`, `held`, `emitted`)."""
        return self._streams

    # ---- output -------------------------------------------------------------------------------------------

    def _put(self, item: FeedEvent | _Fatal, *, droppable: bool) -> None:
        if self._overflow or self._queue.full():
            if droppable:
                self.stats.dropped_updates += 1
            else:
                self._overflow.append(item)
            return
        self._queue.put_nowait(item)

    def _apply(self, events: list[StreamEvent]) -> None:
        for ev in events:
            if isinstance(ev, Bar):
                if ev.source == "rest":
                    self.stats.backfilled_bars += 1
                else:
                    self.stats.ws_bars += 1
                self._put(ev, droppable=False)
            elif isinstance(ev, PartialBar):
                self._put(ev, droppable=True)
            elif isinstance(ev, BackfillNeeded):
                owner = self._owner.get(ev.symbol)
                if owner is not None:
                    owner.fill_wanted.set()
            elif isinstance(ev, Dropped):
                if ev.reason == "duplicate":
                    self.stats.duplicates_dropped += 1
                    self._log.info(BAR_DUPLICATE, symbol=ev.symbol, start_ms=ev.start_ms, source=ev.source)
                else:
                    self.stats.late_dropped += 1
                    self._log.info(BAR_LATE, symbol=ev.symbol, start_ms=ev.start_ms, source=ev.source)
            elif isinstance(ev, GapSkipped):
                self.stats.gaps_skipped += 1
                self._log.warning(
                    BAR_SKIPPED, symbol=ev.symbol, from_ms=ev.from_ms, to_ms=ev.to_ms, reason=ev.reason
                )

    # ---- the run ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._initial_backfill()
            self._plan()
            for conn in self.connections:
                self._launch(conn)
            try:
                await self._conn_failed.wait()
                for task in self._tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        task.result()  # a connection ends only by a fatal error
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._put(_Fatal(exc), droppable=False)

    def _launch(self, conn: Connection) -> None:
        task = asyncio.create_task(conn.run(), name=f"feed-conn-{conn.index}")
        task.add_done_callback(lambda _: self._conn_failed.set())
        self._tasks.append(task)

    # ---- symbols joining and leaving while running --------------------------------------------------------

    def add_symbols(self, symbols: list[str], *, start_ms: int) -> None:
        """Run `symbols` from now on (new listings): each gets a stream from `start_ms` (its backfill's first
        bar open), joins the newest connection with room (`max_topics`, 21,000 characters), or a new one, is
        subscribed there, and its backfill is served by that connection's REST filler (then live bars, each
        once and in order). Symbols already run are ignored. Call it once the feed is running."""
        for symbol in symbols:
            if symbol in self._streams:
                continue
            self.excluded.pop(symbol, None)
            stream = self._streams[symbol] = BarStream(symbol, self.interval_ms, next_start_ms=start_ms)
            topics = self._topics(symbol)
            conn = self.connections[-1] if self.connections else None
            fits = conn is not None and (
                len(conn.topics) + len(topics) <= self._ex.max_topics
                and args_chars(conn.topics + topics) <= ARGS_LIMIT_CHARS
            )
            if conn is None or not fits:
                conn = Connection(self, len(self.connections), [symbol])
                self.connections.append(conn)
                self._owner[symbol] = conn
                self.stats.connections = len(self.connections)
                self._launch(conn)
            else:
                self._owner[symbol] = conn
                conn.add(symbol, stream, topics)
            self._apply(stream.on_reconnect())  # the backfill: from start_ms, open-ended

    def remove_symbols(self, symbols: list[str]) -> None:
        """Stop `symbols` (delisted, suspended, dropped): unsubscribed on their connection, their streams
        dropped; bars of them still queued are the consumer's to ignore. Unknown symbols are ignored."""
        for symbol in symbols:
            conn = self._owner.pop(symbol, None)
            self._streams.pop(symbol, None)
            if conn is not None:
                conn.remove(symbol)

    async def _initial_backfill(self) -> None:
        """Every symbol's start-up backfill, `backfill_concurrency` at once; failed symbols are left out."""
        ex, iv = self._ex, self.interval_ms
        if any(self._start.get(s) is None for s in self.symbols):
            now_ms = await self._rest.server_time_ms()
            latest = now_ms - now_ms % iv - ex.backfill_bars * iv
        for symbol in self.symbols:
            start = self._start.get(symbol)
            self._streams[symbol] = BarStream(symbol, iv, next_start_ms=latest if start is None else start)
        gate = asyncio.Semaphore(ex.backfill_concurrency)
        progress = _Progress(len(self.symbols), self._rest, self._log)
        last_error: BaseException | None = None

        async def one(symbol: str) -> None:
            nonlocal last_error
            async with gate:
                stream = self._streams[symbol]
                assert stream.next_start_ms is not None
                hist = await self._backfill_one(symbol, stream.next_start_ms)
            if isinstance(hist, History):
                through = hist.bars[-1].start_ms if hist.bars else stream.next_start_ms - iv
                self._apply(stream.on_rest(hist.bars, through_ms=through))
                self._log.debug(BACKFILL, symbol=symbol, bars=len(hist.bars), pages=hist.pages)
            else:
                last_error = hist
                self.excluded[symbol] = str(hist)
                del self._streams[symbol]
            progress.done(symbol, excluded=not isinstance(hist, History))

        await asyncio.gather(*(one(s) for s in self.symbols))
        progress.log(final=True)
        if not self._streams:
            assert last_error is not None
            raise last_error

    async def _backfill_one(self, symbol: str, start_ms: int) -> History | BotError:
        """One symbol's history, tried `backfill_attempts` times; the last error when every try failed.

        A try that only ran out of rate-limit waits (10006 every time, `RateLimitError`) is not the symbol's
        fault and does not count, up to `RATE_LIMITED_TRIES` of them. Raises what no retry can mend (a bad
        URL, an IP ban): every other symbol would fail the same way.
        """
        attempts = self._ex.backfill_attempts
        failed = limited = 0
        while True:
            try:
                return await self._rest.fetch_history(symbol, self.interval, start_ms=start_ms)
            except (EndpointError, IpBannedError):
                raise
            except RateLimitError as exc:
                limited += 1
                if limited < RATE_LIMITED_TRIES:
                    self._log.warning(BACKFILL_FAILED, symbol=symbol, error=str(exc), rate_limited=limited)
                    continue
                error: BotError = exc
            except (ExchangeError, WireError) as exc:
                failed += 1
                if failed < attempts:
                    self._log.warning(BACKFILL_FAILED, symbol=symbol, error=str(exc), attempt=failed)
                    continue
                error = exc
            self._log.warning(SYMBOL_EXCLUDED, symbol=symbol, error=str(error), attempts=failed + limited)
            return error

    def _plan(self) -> None:
        """Spread the backfilled symbols' topics over connections (`plan_connections`)."""
        symbols = list(self._streams)
        groups = [self._topics(s) for s in symbols]
        plans = plan_connections(groups, max_topics=self._ex.max_topics)
        for index, plan in enumerate(plans):
            conn = Connection(self, index, [symbols[i] for i in plan])
            self.connections.append(conn)
            for symbol in conn.symbols:
                self._owner[symbol] = conn
        self.stats.connections = len(self.connections)
        self._log.info(
            WS_PLANNED,
            connections=len(self.connections),
            symbols=len(symbols),
            topics=sum(len(g) for g in groups),
            excluded=sorted(self.excluded),
        )

    def _topics(self, symbol: str) -> list[str]:
        topics = [f"kline.{self.interval}.{symbol}"]
        if self._ex.book_stream == "orderbook":
            topics.append(f"orderbook.1.{symbol}")
        elif self._ex.book_stream == "tickers":
            topics.append(f"tickers.{symbol}")
        return topics

    async def _subscribed_first(self, conn: Connection) -> None:
        """`conn` subscribed for the first time: once every connection has, `FeedReady`; until then wait,
        so no live bar comes out before it."""
        if conn.index not in self._subscribed:
            self._subscribed.add(conn.index)
            if len(self._subscribed) == len(self.connections) and not self._all_subscribed.is_set():
                self._put(FeedReady(tuple(self._streams), self.stats.backfilled_bars), droppable=False)
                self._all_subscribed.set()
        await self._all_subscribed.wait()

    def _connected_changed(self) -> None:
        opened = sum(c.connected for c in self.connections)
        self.stats.open_connections = opened
        self.stats.connected = bool(self.connections) and opened == len(self.connections)


class _Progress:
    """The start-up backfill's progress line: every `PROGRESS_EVERY_S` and once at the end."""

    def __init__(self, total: int, rest: RestClient, log: Any) -> None:
        self.total = total
        self.finished = 0
        self.excluded = 0
        self._rest = rest
        self._log = log
        self._t0 = time.monotonic()
        self._last = self._t0
        self._requests0 = rest.requests

    def done(self, symbol: str, *, excluded: bool) -> None:
        self.finished += 1
        self.excluded += excluded
        if time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self.log(final=False)

    def log(self, *, final: bool) -> None:
        now = time.monotonic()
        self._last = now
        self._log.info(
            BACKFILL_PROGRESS,
            done=self.finished,
            total=self.total,
            excluded=self.excluded,
            requests=self._rest.requests - self._requests0,
            paced_s=round(self._rest.pacer.waited_s, 3),
            elapsed_s=round(now - self._t0, 3),
            final=final,
        )
