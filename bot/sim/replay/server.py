"""`ReplayExchange`: the market, the fault plan, the HTTP routes and the websocket sessions on one loopback
server, with the task that paces the market clock in real time and pushes what it produces."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from bot.core.bars import Bar, BookTop
from bot.sim.replay.faults import DropStage, FaultPlan, RestFaultKind
from bot.sim.replay.frames import (
    Values,
    bar_values,
    kline_frame,
    kline_topic,
    malformed_frames,
    orderbook_frame,
    orderbook_topic,
    tickers_frame,
    tickers_topic,
)
from bot.sim.replay.market import Market, SymbolSeries
from bot.sim.replay.pacing import Pacer
from bot.sim.replay.rest import KlineRoute, RestHit, control_route
from bot.sim.replay.ws import ReplayConnection, WsSessions

WS_PATH: Final = "/v5/public/linear"
KLINE_PATH: Final = "/v5/market/kline"
CONTROL_PREFIX: Final = "/_replay/"


class ReplayExchange:
    """The replay exchange. `async with ReplayExchange(...) as ex:` serves on `ex.port` until exit.

    Args:
        symbols: symbols served (kline, orderbook.1 and tickers topics each).
        interval: the one kline interval served ("5" = 5 minutes of exchange time per bar).
        data: "synthetic" (seed, seed+1, ... per symbol), a CSV file, or a directory of `{SYMBOL}_{N}m.csv`.
        bar_seconds: real seconds per bar; 0 = as fast as possible.
        updates_per_bar: `confirm:false` pushes per bar before the confirm (0 = confirms only).
        history_bars: bars already closed before the clock starts.
        max_bars: stop advancing after this many live bars (None = until the data runs out).
        keep_bars: closed bars retained per symbol for REST and `bars_closed`.
        book: also push `orderbook.1` and `tickers` at each bar's close.
        seed: synthetic seed of the first symbol.
        host, port: where to listen (port 0 = any free port).
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
    ) -> None:
        if bar_seconds < 0:
            raise ValueError(f"bar_seconds must be >= 0, got {bar_seconds}")
        if updates_per_bar < 0:
            raise ValueError(f"updates_per_bar must be >= 0, got {updates_per_bar}")
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
        self.done = asyncio.Event()
        self._market = Market(
            self.symbols,
            interval=interval,
            data=data,
            seed=seed,
            history_bars=history_bars,
            keep_bars=self.keep_bars,
        )
        self.interval_ms = self._market.interval_ms
        self._faults = FaultPlan()
        self._ws = WsSessions(self._faults)
        self._rest = KlineRoute(self._market, self._faults)
        self._pacer = Pacer()
        self._closed_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task[None] | None = None

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
        self._market.load()
        for symbol in self.symbols:
            self._ws.serve(
                symbol, kline_topic(self.interval, symbol), orderbook_topic(symbol), tickers_topic(symbol)
            )
        app = web.Application()
        app.router.add_get(KLINE_PATH, self._rest.handle)
        app.router.add_get(WS_PATH, self._ws.handle)
        app.router.add_post(CONTROL_PREFIX + "{method}", control_route(self))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        self._driver = asyncio.create_task(self._drive(), name="replay-clock")
        return self.port

    async def stop(self) -> None:
        """Stop the clock, close every websocket and the server."""
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
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
        """The exchange clock (epoch ms on the bar grid): `time` in REST answers, `ts` in pushes."""
        return self._market.clock_ms

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
        """Every REST kline request so far, in order."""
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

    async def drop_connections(self, *, abort: bool = True) -> int:
        """Drop every open websocket now (abort = TCP reset without a close frame); return how many."""
        conns = self.open_connections
        for conn in conns:
            await self._ws.drop(conn, abort=abort)
        return len(conns)

    def drop_next(self, n: int = 1, *, stage: DropStage = "open") -> None:
        """Drop the next `n` websockets: during the upgrade, right after it, or on their subscribe request."""
        self._faults.drop_next(n, stage)

    def silence(self, *, answer_pings: bool = True) -> None:
        """Open websockets stay open but get no more pushes; pings are answered or not."""
        self._ws.silence(answer_pings=answer_pings)

    def duplicate_confirms(self, n: int = 1) -> None:
        """Send each of the next `n` confirms twice."""
        self._faults.duplicate_confirms(n)

    def late_confirms(self, n: int = 1, *, lag_bars: int = 2) -> None:
        """Re-send each of the next `n` confirms again `lag_bars` bars later."""
        self._faults.late_confirms(n, lag_bars)

    def skip_confirms(self, n: int = 1) -> None:
        """Do not push the confirm of the next `n` bars (they still close and are served over REST)."""
        self._faults.skip_confirms(n)

    def rest_fault(self, kind: RestFaultKind, *, n: int = 1, value: float = 0.0) -> None:
        """Answer the next `n` REST requests with a fault; `value`: reset wait s (10006), delay s (slow)."""
        self._faults.rest_fault(kind, n, value)

    def clear_rest_faults(self) -> None:
        """Forget the REST faults not yet served."""
        self._faults.clear_rest_faults()

    def ban(self, banned: bool = True) -> None:
        """Answer every REST request with HTTP 403 until `ban(False)`."""
        self._faults.banned = banned

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

    # ---- the clock --------------------------------------------------------------------------------------

    async def _drive(self) -> None:
        market = self._market
        steps = self.updates_per_bar + 1
        while self.max_bars is None or market.live_bars < self.max_bars:
            await self._pacer.wait_running()
            forming = market.open_bar()
            if forming is None:
                break
            for k in range(1, steps):
                await self._pacer.tick(self.bar_seconds / steps)
                market.tick_to(k, steps)
                for s, bar, _ in forming:
                    frame = self._kline_frame(bar, s.form(k / steps), confirm=False)
                    await self._ws.broadcast(kline_topic(self.interval, s.symbol), frame)
            await self._pacer.tick(self.bar_seconds / steps)
            market.tick_to(steps, steps)
            for s, bar, book in forming:
                market.close(s, bar)
                await self._confirm(bar)
                if self.book:
                    await self._push_book(s, book)
            for symbol, frame in self._faults.take_late(market.slot_ms):
                await self._ws.broadcast(kline_topic(self.interval, symbol), frame)
            market.end_bar()
            self._closed_event.set()
        self.done.set()
        self._closed_event.set()

    def _kline_frame(self, bar: Bar, values: Values, *, confirm: bool) -> bytes:
        return kline_frame(
            bar,
            values,
            interval=self.interval,
            interval_ms=self.interval_ms,
            clock_ms=self.clock_ms,
            confirm=confirm,
        )

    async def _confirm(self, bar: Bar) -> None:
        frame = self._kline_frame(bar, bar_values(bar), confirm=True)
        for _ in range(self._faults.confirm_copies(bar.symbol, bar.start_ms, self.interval_ms, frame)):
            await self._ws.broadcast(kline_topic(self.interval, bar.symbol), frame)

    async def _push_book(self, s: SymbolSeries, book: BookTop) -> None:
        s.seq += 1
        ob = orderbook_frame(s.symbol, book, seq=s.seq, clock_ms=self.clock_ms)
        await self._ws.broadcast(orderbook_topic(s.symbol), ob)
        tk = tickers_frame(s.symbol, book, seq=s.seq, clock_ms=self.clock_ms)
        await self._ws.broadcast(tickers_topic(s.symbol), tk)
