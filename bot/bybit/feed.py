"""The live market feed: REST backfill, one websocket for every symbol, reconnects, heartbeat, watchdog.

`MarketFeed` is the asyncio shell around the pure `bot.core.stream.BarStream` (one per symbol):

    async with MarketFeed(config, rest, start_ms={"BTCUSDT": None}) as feed:
        async for event in feed:   # Bar | BookTop | PartialBar | FeedReady
            ...

Start-up: REST backfill of every symbol (from `start_ms[symbol]`, or the latest `backfill_bars` closed bars),
then connect and subscribe every topic on one connection, then `FeedReady`, then live. Every (re)connect
resubscribes everything and asks REST for the bars closed since the last one emitted; websocket confirms
newer than a gap are held until the gap is filled, so bars come out per symbol strictly in order, each once.

Tasks: the reader (this connection's frames, the stale-feed and pong watchdogs, the overdue-bar timer), the
heartbeat (`{"op":"ping"}` every `ping_interval_s`) and the REST filler run on their own, so a slow consumer
never stops the heartbeat. Only kline pushes prove the feed (`stale_feed_s`); pongs prove the socket
(a ping unanswered for `ping_interval_s` is a dead socket). Reconnects use capped exponential backoff with
jitter (`bot.bybit.backoff`), reset after a connection stayed healthy for `healthy_reset_s`. Counters and
connection state are in `feed.stats` (`FeedStats`).

Overflow policy of the bounded event queue (`feed_queue_size`): when it is full, `PartialBar` and `BookTop`
are dropped (`stats.dropped_updates`; the next update supersedes them) and confirmed bars spill into an
overflow list that refills the queue as the consumer catches up - the reader never blocks and no confirmed
bar is dropped. The overflow only grows by one bar per symbol per bar interval while the consumer is stalled.

Fatal (raised from the iteration): a refused subscribe (`SubscribeError`, e.g. unknown symbol), any REST
error during the start-up backfill, a REST error that is not transient during a gap fill (`ExchangeError`).
A gap fill whose transient faults outlast the retries (`RetriesExhaustedError`) is retried after a pause on
the same connection; the service's decision-lag check is what ends a run whose fills never succeed. An HTTP
403 (`IpBannedError`) during a gap fill stops REST only: the held websocket bars are emitted across the gap
(logged) and the websocket goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Self

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bot.bybit.backoff import Backoff, permanent_cause
from bot.bybit.events import FeedEvent, FeedReady, FeedStats, TickerTops, book_top, kline_events
from bot.bybit.rest import RestClient
from bot.bybit.wire import (
    WireError,
    WsEnvelope,
    decode_envelope,
    decode_klines,
    decode_orderbook,
    decode_ticker,
)
from bot.config import Config
from bot.core.bars import Bar, interval_ms
from bot.core.errors import (
    BotError,
    EndpointError,
    ExchangeError,
    IpBannedError,
    RetriesExhaustedError,
    SubscribeError,
)
from bot.core.stream import BackfillNeeded, BarStream, Dropped, GapSkipped, PartialBar, StreamEvent
from bot.logs import (
    BACKFILL,
    BACKFILL_FAILED,
    BAR_DUPLICATE,
    BAR_LATE,
    BAR_SKIPPED,
    WS_BAD_FRAME,
    WS_CONNECTED,
    WS_RECONNECT,
    WS_STALE,
    WS_SUBSCRIBED,
    WS_UNKNOWN_TOPIC,
    get_logger,
)

SUBSCRIBE_CHUNK = 10  # topics per subscribe request


class _Fatal:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Reconnect(Exception):
    """Internal: the connection must be replaced (stale feed, pong timeout)."""


def is_retryable(exc: BaseException) -> bool:
    """The one place that decides which connection errors lead to a reconnect (the rest are fatal): not a
    refused subscribe, an IP ban, an unknown host or a TLS failure (`permanent_cause`), a bad URI, or an
    HTTP 4xx other than 429 on the handshake."""
    if isinstance(exc, SubscribeError | IpBannedError | websockets.exceptions.InvalidURI):
        return False
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        status = exc.response.status_code
        return not (400 <= status < 500 and status != 429)
    if permanent_cause(exc) is not None:
        return False
    return isinstance(exc, OSError | TimeoutError | websockets.exceptions.WebSocketException | _Reconnect)


def connect_error(url: str, exc: BaseException) -> EndpointError:
    """The fatal error for a websocket connect that `is_retryable` refused, naming the URL and the cause."""
    cause = permanent_cause(exc) or f"{type(exc).__name__}: {exc}"
    return EndpointError(f"websocket {url}: {cause}; check [exchange] ws_url")


class MarketFeed:
    """Confirmed bars (exactly once, in order per symbol), partial bars, book tops and one `FeedReady`.

    Args:
        config: the service config (`[market]` symbols/interval, `[exchange]` urls, timings, book stream).
        rest: an open `RestClient` (shared with the rest of the process).
        start_ms: per symbol, the open time of the first bar to backfill; None or missing = the latest
            `exchange.backfill_bars` closed bars.
    """

    def __init__(
        self, config: Config, rest: RestClient, *, start_ms: Mapping[str, int | None] | None = None
    ) -> None:
        self._ex = config.exchange
        self.symbols = tuple(config.market.symbols)
        self.interval = config.market.interval
        self.interval_ms = interval_ms(self.interval)
        self._rest = rest
        self._backoff = Backoff(self._ex.reconnect_backoff_initial_s, self._ex.reconnect_backoff_max_s)
        self._start = dict(start_ms or {})
        self._streams: dict[str, BarStream] = {}
        self._queue: asyncio.Queue[FeedEvent | _Fatal] = asyncio.Queue(maxsize=self._ex.feed_queue_size)
        self._overflow: deque[FeedEvent | _Fatal] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._fill_wanted = asyncio.Event()
        self._filler_error: BaseException | None = None
        self._tickers = TickerTops()
        self._behind_since: dict[str, float] = {}
        self._ping_since: float | None = None
        self._closed = False
        self._frame_recv_ns = 0
        self._log = get_logger(component="feed")
        self._ready = False
        self._last_kline_monotonic = 0.0
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
        item = await self._queue.get()
        while self._overflow and not self._queue.full():
            self._queue.put_nowait(self._overflow.popleft())
        if isinstance(item, _Fatal):
            raise item.exc
        return item

    async def aclose(self) -> None:
        """Stop the feed: close the websocket and cancel its tasks."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
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
                self._fill_wanted.set()
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
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._put(_Fatal(exc), droppable=False)

    async def _initial_backfill(self) -> None:
        iv = self.interval_ms
        for symbol in self.symbols:
            start = self._start.get(symbol)
            if start is None:
                page = await self._rest.page(symbol, self.interval, limit=1)
                start = page.time_ms - page.time_ms % iv - self._ex.backfill_bars * iv
            stream = BarStream(symbol, iv, next_start_ms=start)
            self._streams[symbol] = stream
            hist = await self._rest.fetch_history(symbol, self.interval, start_ms=start)
            through = hist.bars[-1].start_ms if hist.bars else start - iv
            self._apply(stream.on_rest(hist.bars, through_ms=through))
            self._log.info(BACKFILL, symbol=symbol, bars=len(hist.bars), pages=hist.pages, start_ms=start)

    async def _connect_loop(self) -> None:
        attempt = 0
        cause: str | None = None
        while True:
            if cause is not None:
                delay = self._backoff.delay_s(attempt)
                self.stats.last_reconnect_cause = cause
                self._log.warning(WS_RECONNECT, cause=cause, delay_s=round(delay, 3), attempt=attempt)
                await asyncio.sleep(delay)
                self.stats.reconnects += 1
            subscribed_at: list[float] = []
            try:
                await self._session(subscribed_at)
                cause = "closed"
            except Exception as exc:
                if not is_retryable(exc):
                    if isinstance(exc, BotError):
                        raise
                    raise connect_error(self._ex.ws_url, exc) from exc
                cause = f"{type(exc).__name__}: {exc}"
            finally:
                self.stats.connected = False
            healthy = bool(subscribed_at) and time.monotonic() - subscribed_at[0] >= self._ex.healthy_reset_s
            attempt = 0 if healthy else attempt + 1

    def _topics(self) -> list[str]:
        topics: list[str] = []
        for s in self.symbols:
            topics.append(f"kline.{self.interval}.{s}")
            if self._ex.book_stream == "orderbook":
                topics.append(f"orderbook.1.{s}")
            elif self._ex.book_stream == "tickers":
                topics.append(f"tickers.{s}")
        return topics

    async def _session(self, subscribed_at: list[float]) -> None:
        ex = self._ex
        async with connect(
            ex.ws_url,
            open_timeout=ex.handshake_timeout_s,
            ping_interval=None,  # Bybit's heartbeat is the JSON ping below
            close_timeout=1.0,
            max_size=1 << 22,
        ) as ws:
            self.stats.connected = True
            self.stats.connects += 1
            self._log.info(WS_CONNECTED, url=ex.ws_url, connects=self.stats.connects)
            await self._subscribe(ws)
            now = time.monotonic()
            subscribed_at.append(now)
            self._last_kline_monotonic = now
            self._ping_since = None
            self._behind_since.clear()
            if not self._ready:
                self._ready = True
                self._put(FeedReady(self.symbols, self.stats.backfilled_bars), droppable=False)
            for stream in self._streams.values():
                self._apply(stream.on_reconnect())
            self._filler_error = None
            heartbeat = asyncio.create_task(self._heartbeat(ws), name="feed-heartbeat")
            filler = asyncio.create_task(self._filler(ws), name="feed-filler")
            try:
                await self._reader(ws)
            except websockets.exceptions.ConnectionClosed:
                if self._filler_error is not None:
                    raise self._filler_error from None
                raise
            finally:
                for task in (heartbeat, filler):
                    task.cancel()
                for task in (heartbeat, filler):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _subscribe(self, ws: ClientConnection) -> None:
        topics = self._topics()
        pending: dict[str, list[str]] = {}
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            req_id = f"sub-{self.stats.connects}-{i // SUBSCRIBE_CHUNK}"
            pending[req_id] = topics[i : i + SUBSCRIBE_CHUNK]
            await ws.send(f'{{"req_id":"{req_id}","op":"subscribe","args":{_json_list(pending[req_id])}}}')
        async with asyncio.timeout(self._ex.handshake_timeout_s):
            while pending:
                env = self._handle_frame(await ws.recv())
                if env is None or env.op != "subscribe":
                    continue
                req_id = env.req_id if env.req_id in pending else next(iter(pending))
                args = pending.pop(req_id)
                if env.success is not True:
                    raise SubscribeError(
                        f"subscribe {args} refused by {self._ex.ws_url}: {env.ret_msg!r}; "
                        "check [market] symbols and interval (the symbol must be a Bybit linear perpetual)"
                    )
        self._log.info(WS_SUBSCRIBED, topics=len(topics), connects=self.stats.connects)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        n = 0
        while True:
            await asyncio.sleep(self._ex.ping_interval_s)
            n += 1
            if self._ping_since is None:
                self._ping_since = time.monotonic()
            await ws.send(f'{{"req_id":"ping-{n}","op":"ping"}}')

    async def _reader(self, ws: ClientConnection) -> None:
        ex = self._ex
        tick_s = min(ex.stale_feed_s, ex.ping_interval_s, ex.bar_overdue_s) / 4.0
        while True:
            try:
                async with asyncio.timeout(tick_s):
                    frame = await ws.recv()
                self._handle_frame(frame)
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - self._last_kline_monotonic > ex.stale_feed_s:
                self._log.warning(WS_STALE, silent_s=round(now - self._last_kline_monotonic, 3))
                raise _Reconnect(f"stale feed: no kline push for {ex.stale_feed_s} s")
            if self._ping_since is not None and now - self._ping_since > ex.ping_interval_s:
                raise _Reconnect(f"pong timeout: no pong within {ex.ping_interval_s} s of a ping")
            for symbol, stream in self._streams.items():
                if stream.behind:
                    since = self._behind_since.setdefault(symbol, now)
                    if now - since >= ex.bar_overdue_s:
                        del self._behind_since[symbol]
                        self._apply(stream.overdue())
                else:
                    self._behind_since.pop(symbol, None)

    async def _filler(self, ws: ClientConnection) -> None:
        """Serve the streams' REST backfill requests; a fatal error is handed to the reader via the socket.

        Level-triggered: every pass serves whatever `fill_due` says, starting with what is already pending
        when this connection's filler starts, so a request never waits for an announcement that has passed.
        """
        while True:
            self._fill_wanted.clear()
            for symbol, stream in self._streams.items():
                req = stream.take_fill()
                if req is not None and not await self._serve_fill(ws, symbol, stream, req):
                    return
            if not any(s.fill_due for s in self._streams.values()):
                await self._fill_wanted.wait()

    async def _serve_fill(
        self, ws: ClientConnection, symbol: str, stream: BarStream, req: BackfillNeeded
    ) -> bool:
        """One fill; False when REST failed for good (the connection is closed with the error)."""
        iv = self.interval_ms
        if self._rest.banned:
            self._apply(stream.abandon_backfill())
            return True
        try:
            hist = await self._rest.fetch_history(
                symbol, self.interval, start_ms=req.start_ms, end_ms=req.end_ms
            )
        except IpBannedError:
            self._apply(stream.abandon_backfill())
            return True
        except RetriesExhaustedError as exc:
            # Transient (rate limit, 5xx, timeouts): keep the websocket, retry the fill after a pause. If it
            # never succeeds, the service's decision-lag check ends the run (stalled) and systemd restarts it.
            self._apply(stream.fill_failed())
            self._log.warning(
                BACKFILL_FAILED, symbol=symbol, error=str(exc), retry_in_s=self._ex.rest_backoff_max_s
            )
            await asyncio.sleep(self._ex.rest_backoff_max_s)
            return True
        except ExchangeError as exc:
            self._apply(stream.fill_failed())
            self._filler_error = exc
            await ws.close(code=1011, reason="rest backfill failed")
            return False
        last = hist.bars[-1].start_ms if hist.bars else req.start_ms - iv
        through = req.end_ms if req.end_ms is not None and req.end_ms + iv <= hist.time_ms else last
        self._apply(stream.on_rest(hist.bars, through_ms=through))
        self._log.info(BACKFILL, symbol=symbol, bars=len(hist.bars), start_ms=req.start_ms, end_ms=req.end_ms)
        return True

    # ---- frames -------------------------------------------------------------------------------------------

    def _handle_frame(self, frame: str | bytes) -> WsEnvelope | None:
        """Decode one frame and route it; bad frames and unknown topics are logged and skipped."""
        self._frame_recv_ns = time.perf_counter_ns()
        try:
            env = decode_envelope(frame)
            if env.topic is None:
                if env.op == "ping" or env.op == "pong" or env.ret_msg == "pong":
                    self.stats.pongs += 1
                    self._ping_since = None
                return env
            kind, _, rest = env.topic.partition(".")
            if kind == "kline":
                self._on_kline(env, rest)
            elif kind == "orderbook" and rest.startswith("1.") and rest[2:] in self._streams:
                self._on_orderbook(env, rest[2:])
            elif kind == "tickers" and rest in self._streams:
                self._on_ticker(env, rest)
            else:
                self.stats.unknown_topics += 1
                self._log.warning(WS_UNKNOWN_TOPIC, topic=env.topic)
        except (WireError, BotError) as exc:
            self.stats.bad_frames += 1
            self._log.warning(WS_BAD_FRAME, error=str(exc))
        return None

    def _on_kline(self, env: WsEnvelope, rest: str) -> None:
        interval, _, symbol = rest.partition(".")
        stream = self._streams.get(symbol)
        topic = env.topic or ""
        if stream is None or interval != self.interval:
            self.stats.unknown_topics += 1
            self._log.warning(WS_UNKNOWN_TOPIC, topic=topic)
            return
        klines = decode_klines(env.data, topic=topic)
        items = kline_events(
            klines, symbol=symbol, interval_ms=self.interval_ms, recv_ns=self._frame_recv_ns, topic=topic
        )
        self._last_kline_monotonic = time.monotonic()
        for item in items:
            self._apply(stream.on_ws_confirm(item) if isinstance(item, Bar) else stream.on_ws_partial(item))

    def _on_orderbook(self, env: WsEnvelope, symbol: str) -> None:
        top = book_top(decode_orderbook(env.data, topic=env.topic or ""), symbol=symbol, ts_ms=env.ts or 0)
        if top is not None:
            self._put(top, droppable=True)

    def _on_ticker(self, env: WsEnvelope, symbol: str) -> None:
        tk = decode_ticker(env.data, topic=env.topic or "")
        top = self._tickers.update(tk, symbol=symbol, ts_ms=env.ts or 0)
        if top is not None:
            self._put(top, droppable=True)


def _json_list(items: list[str]) -> str:
    return "[" + ",".join(f'"{x}"' for x in items) + "]"
