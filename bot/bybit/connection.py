"""One websocket connection of the market feed (`Connection`) and the symbols it carries.

Its own reconnect loop with capped exponential backoff and jitter (`bot.bybit.backoff`), reset after
`healthy_reset_s` of health; each session subscribes the connection's topics, then runs its reader (frames,
the stale-feed and pong watchdogs, the overdue-bar timer), heartbeat (`{"op":"ping"}` every
`ping_interval_s`) and REST filler. `is_retryable` decides which connection errors lead to a reconnect.
The feed (`bot.bybit.feed.MarketFeed`) plans the connections and owns the streams and the event queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from bot.bybit.backoff import Backoff, permanent_cause
from bot.bybit.errors import (
    EndpointError,
    ExchangeError,
    IpBannedError,
    RetriesExhaustedError,
    SubscribeError,
)
from bot.bybit.events import FeedEvent, FeedStats, TickerTops, book_top, kline_events
from bot.bybit.log_events import (
    BACKFILL,
    BACKFILL_FAILED,
    WS_BAD_FRAME,
    WS_CONNECTED,
    WS_RECONNECT,
    WS_STALE,
    WS_SUBSCRIBED,
    WS_UNKNOWN_TOPIC,
    get_logger,
)
from bot.bybit.pacing import RateWindow
from bot.bybit.rest import RestClient
from bot.bybit.settings import ExchangeConfig
from bot.bybit.wire import (
    WireError,
    WsEnvelope,
    decode_envelope,
    decode_klines,
    decode_orderbook,
    decode_ticker,
)
from bot.core.bars import Bar
from bot.core.errors import BotError
from bot.core.stream import BackfillNeeded, BarStream, StreamEvent

SUBSCRIBE_CHUNK = 10  # topics per subscribe request


class Feed(Protocol):
    """What a connection uses of its feed (`bot.bybit.feed.MarketFeed`; a protocol, so no import cycle)."""

    interval: str
    interval_ms: int
    stats: FeedStats
    _ex: ExchangeConfig
    _rest: RestClient
    _streams: dict[str, BarStream]
    _connect_pacer: RateWindow
    _closed: bool

    def _topics(self, symbol: str) -> list[str]: ...

    def _apply(self, events: list[StreamEvent]) -> None: ...

    def _put(self, item: FeedEvent, *, droppable: bool) -> None: ...

    async def _subscribed_first(self, conn: Connection) -> None: ...

    def _connected_changed(self) -> None: ...


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


class Connection:
    """One websocket connection and the symbols it carries: reconnect loop, reader, heartbeat, filler."""

    def __init__(self, feed: Feed, index: int, symbols: list[str]) -> None:
        self.feed = feed
        self.index = index
        self.symbols = tuple(symbols)
        self.streams = {s: feed._streams[s] for s in symbols}
        self.topics = [t for s in symbols for t in feed._topics(s)]
        ex = feed._ex
        self._ex = ex
        self._backoff = Backoff(ex.reconnect_backoff_initial_s, ex.reconnect_backoff_max_s)
        self._op_seq = 0
        self._ops: set[asyncio.Task[None]] = set()
        self.fill_wanted = asyncio.Event()
        self._filler_error: BaseException | None = None
        self._tickers = TickerTops()
        self._behind_since: dict[str, float] = {}
        self._ping_since: float | None = None
        self._frame_recv_ns = 0
        self._last_kline_monotonic = 0.0
        self.connects = 0
        self.connected = False
        self._ws: ClientConnection | None = None  # the open socket, once subscribed
        self._gone: set[str] = set()  # symbols removed from this connection (their last pushes are quiet)
        self._log = get_logger(component="feed", conn=index)

    def add(self, symbol: str, stream: BarStream, topics: list[str]) -> None:
        """Carry `symbol` from now on: subscribed now when the socket is open (and on every reconnect)."""
        self.symbols = (*self.symbols, symbol)
        self.streams[symbol] = stream
        self.topics = self.topics + topics
        self._gone.discard(symbol)
        self._send_op("subscribe", topics)

    def remove(self, symbol: str) -> None:
        """Stop carrying `symbol`: unsubscribed now when the socket is open, and not on reconnects."""
        topics = self.feed._topics(symbol)
        self.symbols = tuple(s for s in self.symbols if s != symbol)
        self.streams.pop(symbol, None)
        self.topics = [t for t in self.topics if t not in topics]
        self._behind_since.pop(symbol, None)
        self._gone.add(symbol)
        self._send_op("unsubscribe", topics)

    def _send_op(self, op: str, topics: list[str]) -> None:
        """Send a subscribe/unsubscribe on the open socket (in the background; the ack is read and ignored
        by the reader). A closed socket needs nothing: the next session subscribes `self.topics`."""
        ws = self._ws
        if ws is None or not topics:
            return
        self._op_seq += 1
        frame = f'{{"req_id":"{op}-{self.index}-{self._op_seq}","op":"{op}","args":{_json_list(topics)}}}'

        async def send() -> None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await ws.send(frame)

        task = asyncio.create_task(send(), name=f"feed-{op}-{self.index}")
        self._ops.add(task)
        task.add_done_callback(self._ops.discard)

    @property
    def stats(self) -> FeedStats:
        return self.feed.stats

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff until cancelled or a fatal error."""
        attempt = 0
        cause: str | None = None
        while not self.feed._closed:
            if cause is not None:
                delay = self._backoff.delay_s(attempt)
                self.stats.last_reconnect_cause = cause
                self._log.warning(WS_RECONNECT, cause=cause, delay_s=round(delay, 3), attempt=attempt)
                await asyncio.sleep(delay)
                self.stats.reconnects += 1
            subscribed_at: list[float] = []
            await self.feed._connect_pacer.acquire()
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
                self.connected = False
                self.feed._connected_changed()
            healthy = bool(subscribed_at) and time.monotonic() - subscribed_at[0] >= self._ex.healthy_reset_s
            attempt = 0 if healthy else attempt + 1

    async def _session(self, subscribed_at: list[float]) -> None:
        ex = self._ex
        async with connect(
            ex.ws_url,
            open_timeout=ex.handshake_timeout_s,
            ping_interval=None,  # Bybit's heartbeat is the JSON ping below
            close_timeout=1.0,
            max_size=1 << 22,
        ) as ws:
            self.connected = True
            self.connects += 1
            self.stats.connects += 1
            self.feed._connected_changed()
            self._log.info(WS_CONNECTED, url=ex.ws_url, connects=self.connects, symbols=len(self.symbols))
            await self._subscribe(ws)
            await self.feed._subscribed_first(self)
            now = time.monotonic()
            subscribed_at.append(now)
            self._last_kline_monotonic = now
            self._ping_since = None
            self._behind_since.clear()
            for stream in list(self.streams.values()):
                self.feed._apply(stream.on_reconnect())
            self._ws = ws
            self._filler_error = None
            heartbeat = asyncio.create_task(self._heartbeat(ws), name=f"feed-heartbeat-{self.index}")
            filler = asyncio.create_task(self._filler(ws), name=f"feed-filler-{self.index}")
            try:
                await self._reader(ws)
            except websockets.exceptions.ConnectionClosed:
                if self._filler_error is not None:
                    raise self._filler_error from None
                raise
            finally:
                self._ws = None
                for task in (heartbeat, filler):
                    task.cancel()
                # gather, not `suppress(CancelledError)` around each await: that also swallowed a cancel() of
                # this task arriving meanwhile, which left it "cancelling" and reconnecting at shutdown
                for result in await asyncio.gather(heartbeat, filler, return_exceptions=True):
                    if isinstance(result, Exception):  # CancelledError (a BaseException) is the expected end
                        raise result

    async def _subscribe(self, ws: ClientConnection) -> None:
        topics = self.topics
        pending: dict[str, list[str]] = {}
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            req_id = f"sub-{self.index}-{self.connects}-{i // SUBSCRIBE_CHUNK}"
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
        self._log.info(WS_SUBSCRIBED, topics=len(topics), connects=self.connects)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        n = 0
        while True:
            await asyncio.sleep(self._ex.ping_interval_s)
            n += 1
            if self._ping_since is None:
                self._ping_since = time.monotonic()
            await ws.send(f'{{"req_id":"ping-{self.index}-{n}","op":"ping"}}')

    async def _reader(self, ws: ClientConnection) -> None:
        ex = self._ex
        tick_s = min(ex.stale_feed_s, ex.ping_interval_s, ex.bar_overdue_s) / 4.0
        while True:
            try:
                async with asyncio.timeout(tick_s):
                    frame = await ws.recv()
                self._handle_frame(frame)
            except TimeoutError:
                # a cancel() that lands while the timeout fires can arrive here as TimeoutError (the task
                # stays "cancelling"); looping on would swallow it and hang the feed's shutdown
                task = asyncio.current_task()
                if self.feed._closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from None
            now = time.monotonic()
            if now - self._last_kline_monotonic > ex.stale_feed_s:
                self._log.warning(WS_STALE, silent_s=round(now - self._last_kline_monotonic, 3))
                raise _Reconnect(f"stale feed: no kline push for {ex.stale_feed_s} s")
            if self._ping_since is not None and now - self._ping_since > ex.ping_interval_s:
                raise _Reconnect(f"pong timeout: no pong within {ex.ping_interval_s} s of a ping")
            for symbol, stream in self.streams.items():
                if stream.behind:
                    since = self._behind_since.setdefault(symbol, now)
                    if now - since >= ex.bar_overdue_s:
                        del self._behind_since[symbol]
                        self.feed._apply(stream.overdue())
                else:
                    self._behind_since.pop(symbol, None)

    async def _filler(self, ws: ClientConnection) -> None:
        """Serve this connection's streams' REST backfill requests; a fatal error is handed to the reader
        via the socket.

        Level-triggered: every pass serves whatever `fill_due` says, starting with what is already pending
        when this connection's filler starts, so a request never waits for an announcement that has passed.
        """
        while True:
            self.fill_wanted.clear()
            for symbol, stream in list(self.streams.items()):  # a symbol may join or leave meanwhile
                if symbol not in self.streams:
                    continue
                req = stream.take_fill()
                if req is not None and not await self._serve_fill(ws, symbol, stream, req):
                    return
            if not any(s.fill_due for s in self.streams.values()):
                await self.fill_wanted.wait()

    async def _serve_fill(
        self, ws: ClientConnection, symbol: str, stream: BarStream, req: BackfillNeeded
    ) -> bool:
        """One fill; False when REST failed for good (the connection is closed with the error)."""
        feed = self.feed
        iv = feed.interval_ms
        rest = feed._rest
        if rest.banned:
            feed._apply(stream.abandon_backfill())
            return True
        try:
            hist = await rest.fetch_history(symbol, feed.interval, start_ms=req.start_ms, end_ms=req.end_ms)
        except IpBannedError:
            feed._apply(stream.abandon_backfill())
            return True
        except RetriesExhaustedError as exc:
            # Transient (rate limit, 5xx, timeouts): keep the websocket, retry the fill after a pause. If it
            # never succeeds, the service's decision-lag check ends the run (stalled) and systemd restarts it.
            feed._apply(stream.fill_failed())
            self._log.warning(
                BACKFILL_FAILED, symbol=symbol, error=str(exc), retry_in_s=self._ex.rest_backoff_max_s
            )
            await asyncio.sleep(self._ex.rest_backoff_max_s)
            return True
        except ExchangeError as exc:
            feed._apply(stream.fill_failed())
            self._filler_error = exc
            await ws.close(code=1011, reason="rest backfill failed")
            return False
        last = hist.bars[-1].start_ms if hist.bars else req.start_ms - iv
        through = req.end_ms if req.end_ms is not None and req.end_ms + iv <= hist.time_ms else last
        feed._apply(stream.on_rest(hist.bars, through_ms=through))
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
            elif kind == "orderbook" and rest.startswith("1.") and rest[2:] in self.streams:
                self._on_orderbook(env, rest[2:])
            elif kind == "tickers" and rest in self.streams:
                self._on_ticker(env, rest)
            elif rest.rpartition(".")[2] in self._gone:
                pass  # pushed before the unsubscribe landed
            else:
                self.stats.unknown_topics += 1
                self._log.warning(WS_UNKNOWN_TOPIC, topic=env.topic)
        except (WireError, BotError) as exc:
            self.stats.bad_frames += 1
            self._log.warning(WS_BAD_FRAME, error=str(exc))
        return None

    def _on_kline(self, env: WsEnvelope, rest: str) -> None:
        interval, _, symbol = rest.partition(".")
        stream = self.streams.get(symbol)
        topic = env.topic or ""
        if stream is None and symbol in self._gone:
            return  # pushed before the unsubscribe landed
        if stream is None or interval != self.feed.interval:
            self.stats.unknown_topics += 1
            self._log.warning(WS_UNKNOWN_TOPIC, topic=topic)
            return
        klines = decode_klines(env.data, topic=topic)
        items = kline_events(
            klines, symbol=symbol, interval_ms=self.feed.interval_ms, recv_ns=self._frame_recv_ns, topic=topic
        )
        self._last_kline_monotonic = time.monotonic()
        apply = self.feed._apply
        for item in items:
            apply(stream.on_ws_confirm(item) if isinstance(item, Bar) else stream.on_ws_partial(item))

    def _on_orderbook(self, env: WsEnvelope, symbol: str) -> None:
        top = book_top(decode_orderbook(env.data, topic=env.topic or ""), symbol=symbol, ts_ms=env.ts or 0)
        if top is not None:
            self.feed._put(top, droppable=True)

    def _on_ticker(self, env: WsEnvelope, symbol: str) -> None:
        tk = decode_ticker(env.data, topic=env.topic or "")
        top = self._tickers.update(tk, symbol=symbol, ts_ms=env.ts or 0)
        if top is not None:
            self.feed._put(top, droppable=True)


def _json_list(items: list[str]) -> str:
    return "[" + ",".join(f'"{x}"' for x in items) + "]"
