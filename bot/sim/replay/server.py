"""`ReplayExchange`: the market, the fault plan, the HTTP routes and the websocket sessions on one loopback
server, with the task that paces the market clock in real time and pushes what it produces (`ReplayClock`,
bot.sim.replay.driver)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from bot.core.bars import Bar
from bot.sim.replay import klines
from bot.sim.replay.book import BookModel, TickerState
from bot.sim.replay.driver import Clock, ReplayClock
from bot.sim.replay.faults import DropStage, FaultPlan, RestFaultKind
from bot.sim.replay.frames import kline_topic, malformed_frames, orderbook_topic, tickers_topic, trade_topic
from bot.sim.replay.instruments import Instrument, listed_only
from bot.sim.replay.market import Market
from bot.sim.replay.pacing import Pacer
from bot.sim.replay.rest import MarketRoutes, RateLimits, RestHit, control_route
from bot.sim.replay.ws import ReplayConnection, WsSessions

WS_PATH: Final = "/v5/public/linear"
KLINE_PATH: Final = "/v5/market/kline"
CONTROL_PREFIX: Final = "/_replay/"


class ReplayExchange(ReplayClock):
    """The replay exchange. `async with ReplayExchange(...) as ex:` serves on `ex.port` until exit.

    Args:
        symbols: symbols served (kline of every buildable interval, orderbook.1, tickers, publicTrade each).
        interval: the served (finest) kline interval ("5" = 5 minutes of exchange time per bar); coarser
            standard intervals are aggregated from it.
        data: "synthetic" (seed, seed+1, ... per symbol), a CSV file, or a directory of `{SYMBOL}_{N}m.csv`.
        bar_seconds: real seconds per bar; 0 = as fast as possible.
        updates_per_bar: `confirm:false` pushes per bar before the confirm (0 = confirms only).
        history_bars: bars already closed before the clock starts.
        max_bars: stop advancing after this many live bars (None = until the data runs out).
        keep_bars: closed bars retained per symbol for REST and `bars_closed`.
        book: run the level-1 book and trades model: `orderbook.1`, `tickers` and `publicTrade` pushes at
            every clock step (False: only their snapshots on subscribe and over REST).
        seed: synthetic seed of the first symbol (the book model of symbol i uses seed + 1000 + i).
        host, port: where to listen (port 0 = any free port).
        clock: "exchange" (timestamps on the replayed bars' own clock) or "wall" (bars shifted by whole
            intervals so the first live bar holds the start time; timestamps follow the wall clock).
        latency_ms: delay of every REST answer and websocket frame (0 = none; tests use it to stay fast).
        book_refresh_s: real seconds between quote refreshes (re-drawn sizes) between clock steps; 0 = none.
        instruments: (tick size, qty step) strings per symbol, e.g. {"BTCUSDT": ("0.1", "0.001")};
            a symbol not named is inferred from its data.
        listed: listed-only instruments added to `instruments-info` and REST `tickers` (no bars, no
            topics; `instruments.listed_only`), so the instrument list can be as long as Bybit's.
        rate_limits: REST limits (`rest.RateLimits`: 10006 with the X-Bapi-Limit headers, HTTP 403 past
            the IP limit); None = unlimited.
    """

    def __init__(
        self,
        *,
        symbols: tuple[str, ...] | list[str] = ("BTCUSDT",),
        interval: str = "5",
        data: str | Path = "synthetic",
        bar_seconds: float = 1.0,
        updates_per_bar: int = 3,
        history_bars: int = 500,
        max_bars: int | None = None,
        keep_bars: int = 50_000,
        book: bool = True,
        seed: int = 7,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = "exchange",
        latency_ms: float = 5.0,
        book_refresh_s: float = 0.1,
        instruments: Mapping[str, tuple[str, str]] | None = None,
        listed: int = 0,
        rate_limits: RateLimits | None = None,
    ) -> None:
        if bar_seconds < 0:
            raise ValueError(f"bar_seconds must be >= 0, got {bar_seconds}")
        if updates_per_bar < 0:
            raise ValueError(f"updates_per_bar must be >= 0, got {updates_per_bar}")
        if clock not in ("exchange", "wall"):
            raise ValueError(f"clock must be 'exchange' or 'wall', got {clock!r}")
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0 (0 = none), got {latency_ms}")
        if book_refresh_s < 0:
            raise ValueError(f"book_refresh_s must be >= 0 (0 = no refresh), got {book_refresh_s}")
        self.symbols = tuple(symbols)
        self.interval = interval
        self.data = data
        self.bar_seconds = bar_seconds
        self.updates_per_bar = updates_per_bar
        self.history_bars = history_bars
        self.max_bars = max_bars
        self.keep_bars = max(keep_bars, history_bars + 1)
        self.book = book
        self.seed = seed
        self.host = host
        self.port = port
        self.clock = clock
        self.latency_ms = latency_ms
        self.book_refresh_s = book_refresh_s
        self.done = asyncio.Event()
        self._market = Market(
            self.symbols,
            interval=interval,
            data=data,
            seed=seed,
            history_bars=history_bars,
            keep_bars=self.keep_bars,
            instruments=instruments,
        )
        self.interval_ms = self._market.interval_ms
        self.intervals = klines.served_intervals(interval)
        self._faults = FaultPlan()
        self._ws = WsSessions(self._faults, latency_ms=latency_ms, snapshot=self._snapshot)
        listings = listed_only(listed, taken=self.symbols)
        self._rest = MarketRoutes(self, self._market, self._faults, listings=listings, limits=rate_limits)
        self._pacer = Pacer()
        self._closed_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.books: dict[str, BookModel] = {}
        self._tickers: dict[str, TickerState] = {}
        self._last_book_push: dict[str, float] = {}
        self._tick_monotonic = 0.0  # when the clock last stepped (wall clock interpolation)
        self._step_ms = self.interval_ms // (updates_per_bar + 1)
        self._speed = self.interval_ms / 1000 / bar_seconds if bar_seconds > 0 else 0.0  # exchange s per s
        self._first_k = 0  # steps of the first live bar already past at start (wall clock)

    # ---- lifecycle --------------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL for `RestClient` / `[exchange] rest_url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Websocket URL for `[exchange] ws_url`."""
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    async def start(self) -> int:
        """Load history, bind, start the clock; return the bound port."""
        wall_ms = int(time.time() * 1000)
        self._market.load(wall_ms=wall_ms if self.clock == "wall" else None)
        self._tick_monotonic = time.monotonic()
        if self.clock == "wall" and self.bar_seconds > 0:
            # Start mid-bar where the wall clock is: skip the steps already past, time the rest from now.
            steps = self.updates_per_bar + 1
            phase_ms = max(wall_ms - self._market.slot_ms, 0)
            self._first_k = min(phase_ms // self._step_ms, steps - 1)
            self._market.tick_to(self._first_k, steps)
            behind_s = (phase_ms - self._first_k * self._step_ms) / self._speed / 1000
            self._tick_monotonic -= behind_s
            self._pacer.restart(behind_s=behind_s)
        for i, symbol in enumerate(self.symbols):
            topics = [kline_topic(iv, symbol) for iv in self.intervals]
            self._ws.serve(
                symbol, *topics, orderbook_topic(symbol), tickers_topic(symbol), trade_topic(symbol)
            )
            series = self._market.series[symbol]
            nxt = series.peek()
            last = series.bars[-1] if series.bars else nxt
            price, volume = (last.close, last.volume) if last is not None else (1.0, 1.0)
            self.books[symbol] = BookModel(
                series.instrument, seed=self.seed + 1000 + i, price=price, bar_volume=volume
            )
            self._tickers[symbol] = TickerState()
            self._tickers[symbol].update(self._ticker(symbol))
        app = web.Application()
        self._rest.add_routes(app)
        app.router.add_get(WS_PATH, self._ws.handle)
        app.router.add_post(CONTROL_PREFIX + "{method}", control_route(self))
        app.router.add_route("*", "/{tail:.*}", self._rest.not_found)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        self._driver = asyncio.create_task(self._drive(), name="replay-clock")
        if self.book and self.book_refresh_s > 0:
            self._refresher = asyncio.create_task(self._refresh_books(), name="replay-book-refresh")
        return self.port

    async def stop(self) -> None:
        """Stop the clock, close every websocket and the server."""
        tasks = [t for t in (self._driver, self._refresher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # a cancel() of the caller gets through
        self._driver = self._refresher = None
        await self._ws.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- records ----------------------------------------------------------------------------------------

    @property
    def clock_ms(self) -> int:
        """The market clock (epoch ms on the bar grid, shifted with `clock="wall"`)."""
        return self._market.clock_ms

    def reset_timestamp_ms(self, wait_s: float) -> int:
        """`X-Bapi-Limit-Reset-Timestamp` for a rate limit lifting in `wait_s`: exchange time, or with
        `clock="wall"` the wall clock itself (clients such as pybit sleep until it by their own clock)."""
        base = int(time.time() * 1000) if self.clock == "wall" else self.now_ms()
        return base + int(wait_s * 1000)

    def instrument(self, symbol: str) -> Instrument:
        """The instrument (tick size, qty step) of a served symbol."""
        return self._market.series[symbol].instrument

    @property
    def live_bars(self) -> int:
        """Live bars closed since the clock started (history not counted)."""
        return self._market.live_bars

    @property
    def connections(self) -> list[ReplayConnection]:
        """Every websocket accepted so far, open or closed, in order."""
        return self._ws.connections

    @property
    def open_connections(self) -> list[ReplayConnection]:
        """Websockets currently open."""
        return self._ws.open_connections

    @property
    def rest_hits(self) -> list[RestHit]:
        """Every REST market request so far, in order."""
        return self._rest.hits

    def bars_closed(self, symbol: str) -> list[Bar]:
        """The retained closed bars of `symbol` (history and live), ascending (source "csv"/"synthetic")."""
        return list(self._market.series[symbol].bars)

    def closed_keys(self, symbol: str) -> list[int]:
        """Open times of every bar of `symbol` that closed (history and live), ascending."""
        return list(self._market.series[symbol].keys)

    async def wait_live_bars(self, n: int) -> None:
        """Wait until at least `n` live bars closed (or the data ran out)."""
        while self.live_bars < n and not self.done.is_set():
            self._closed_event.clear()
            await self._closed_event.wait()

    # ---- fault switches ---------------------------------------------------------------------------------

    async def drop_connections(self, *, abort: bool = True, topic: str | None = None) -> int:
        """Drop every open websocket now (abort = TCP reset without a close frame), or only those subscribed
        to `topic`; return how many."""
        conns = [c for c in self.open_connections if topic is None or topic in c.topics]
        for conn in conns:
            await self._ws.drop(conn, abort=abort)
        return len(conns)

    def drop_next(self, n: int = 1, *, stage: DropStage = "open") -> None:
        """Drop the next `n` websockets: during the upgrade, right after it, or on their subscribe request."""
        self._faults.drop_next(n, stage)

    def silence(self, *, answer_pings: bool = True) -> None:
        """Open websockets stay open but get no more pushes; pings are answered or not."""
        self._ws.silence(answer_pings=answer_pings)

    def duplicate_confirms(self, n: int = 1, *, symbol: str | None = None) -> None:
        """Send each of the next `n` confirms twice (only `symbol`'s when given; None = any symbol's)."""
        self._faults.duplicate_confirms(n, symbol)

    def late_confirms(self, n: int = 1, *, lag_bars: int = 2, symbol: str | None = None) -> None:
        """Re-send each of the next `n` confirms (only `symbol`'s when given) again `lag_bars` bars later."""
        self._faults.late_confirms(n, lag_bars, symbol)

    def skip_confirms(self, n: int = 1, *, symbol: str | None = None) -> None:
        """Do not push the confirm of the next `n` bars (only `symbol`'s when given; they still close and
        are served over REST)."""
        self._faults.skip_confirms(n, symbol)

    def rest_fault(self, kind: RestFaultKind, *, n: int = 1, value: float = 0.0) -> None:
        """Answer the next `n` REST requests with a fault; `value`: reset wait s (10006), delay s (slow)."""
        self._faults.rest_fault(kind, n, value)

    def fail_symbol(self, symbol: str, failing: bool = True) -> None:
        """Answer every kline request of `symbol` with HTTP 502 (a symbol whose backfill cannot succeed)."""
        if failing:
            self._faults.failing_symbols.add(symbol)
        else:
            self._faults.failing_symbols.discard(symbol)

    def clear_rest_faults(self) -> None:
        """Forget the REST faults not yet served."""
        self._faults.clear_rest_faults()

    def ban(self, banned: bool = True) -> None:
        """Answer every REST request with HTTP 403 until `ban(False)`."""
        self._faults.banned = banned

    def set_status(self, symbol: str, status: str) -> None:
        """`instruments-info` shows `symbol` (served or listed-only) with `status` ("Trading", "Closed",
        "Settling", "PreLaunch", ...); pushes and REST bars go on (a delisting is announced first)."""
        listing = self._rest.listings.get(symbol)
        if listing is not None:
            self._rest.listings[symbol] = dataclasses.replace(listing, status=status)
        elif symbol in self._market.series:
            self._rest.status[symbol] = status
        else:
            raise ValueError(f"set_status: {symbol!r} is neither served nor listed")

    @property
    def rate_limit_hits(self) -> tuple[int, int]:
        """(answers of 10006 by the API limit, answers of HTTP 403 by the IP limit) so far."""
        return self._rest.api_limit_hits, self._rest.ip_limit_hits

    def delist_ws(self, symbol: str) -> None:
        """The websocket forgets `symbol`'s topics (subscribe: `handler not found`); REST still serves it."""
        self._ws.delist(symbol)

    def pause(self) -> None:
        """Stop the clock: no bar closes, pings are still answered."""
        self._pacer.pause()

    def resume(self) -> None:
        """Restart the clock."""
        self._pacer.resume()

    async def inject(self, frame: str) -> None:
        """Send a raw text frame to every open, non-silent websocket."""
        await self._ws.inject(frame)

    def malformed_frames(self, symbol: str) -> list[str]:
        """Frames a client must log and skip: bad JSON, wrong types, unknown topics, bad numbers."""
        return malformed_frames(self.interval, symbol)

    # ---- snapshots ----------------------------------------------------------------------------------------

    def ticker(self, symbol: str) -> dict[str, str]:
        """The REST `/v5/market/tickers` item of `symbol` now."""
        return self._ticker(symbol, rest=True)

    def book_snapshot(self, symbol: str) -> dict[str, object]:
        """The level-1 book of `symbol` now (`data` of an orderbook push)."""
        return self._book_data(symbol)
