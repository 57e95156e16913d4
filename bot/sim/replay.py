"""A Bybit-v5-compatible replay exchange on loopback: REST klines and the public linear websocket.

Driven by an accelerated clock: every bar takes `bar_seconds` real seconds (0 = as fast as the loop goes), in
which each symbol's kline topic gets `updates_per_bar` `confirm:false` pushes and then the `confirm:true`
push. The exchange clock (`time` in REST answers, `ts` in pushes) is the bar grid, not the wall clock.
Bars come from a CSV (`start_ms,open,high,low,close,volume[,turnover]`, read lazily) or from
`SyntheticMarket` (one seed per symbol, which also gives the top of book for `orderbook.1` and
`tickers`). `history_bars` bars are already closed when it starts, so a client can backfill at once.

Fault switches for tests are methods (and `POST /_replay/<method>` with a JSON object of keyword
arguments for a separate process): drop connections (now, or the next N at handshake / open / subscribe),
stay open but silent (answering pings or not), duplicate, late and skipped confirms, malformed frames,
REST 10006 (with or without the reset header), 403, 5xx and slow answers, pause/resume of the clock.

Memory stays bounded for runs of millions of bars: REST serves the newest `keep_bars` closed bars, and the
record of what closed is a compact array of open times (`closed_keys`); `bars_closed` returns the retained
bars themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import csv
import itertools
import json
import time
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
from aiohttp import WSMsgType, web

from bot.core.bars import Bar, BookTop, interval_ms
from bot.core.errors import DataError
from bot.sim.synthetic import SyntheticMarket

WS_PATH: Final = "/v5/public/linear"
KLINE_PATH: Final = "/v5/market/kline"
CONTROL_PREFIX: Final = "/_replay/"

_encode = msgspec.json.encode


# ---- data sources -----------------------------------------------------------------------------------------


def read_csv_bars(path: str | Path, symbol: str) -> Iterator[Bar]:
    """Lazily read `start_ms,open,high,low,close,volume[,turnover]` rows (ascending, unique) as bars."""
    p = Path(path)
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or header[:6] != ["start_ms", "open", "high", "low", "close", "volume"]:
            raise DataError(
                f"{p}: expected header start_ms,open,high,low,close,volume[,turnover], got {header}"
            )
        prev = -1
        for lineno, row in enumerate(reader, start=2):
            try:
                start = int(row[0])
                o, h, lo, c, v = (float(x) for x in row[1:6])
                turnover = float(row[6]) if len(row) > 6 and row[6] else 0.0
            except (ValueError, IndexError) as exc:
                raise DataError(f"{p}:{lineno}: expected 6-7 numeric fields, got {row}: {exc}") from exc
            if start <= prev:
                raise DataError(f"{p}:{lineno}: start_ms {start} is not after the previous row's {prev}")
            prev = start
            yield Bar(symbol, start, o, h, lo, c, v, turnover, source="csv")


def _csv_steps(path: Path, symbol: str) -> Iterator[tuple[Bar, BookTop]]:
    for bar in read_csv_bars(path, symbol):
        half = bar.close * 0.25e-4
        yield bar, BookTop(symbol, bar.start_ms, bar.close - half, 1.0, bar.close + half, 1.0)


def _synthetic_steps(symbol: str, seed: int, interval: str) -> Iterator[tuple[Bar, BookTop]]:
    for step in SyntheticMarket(seed=seed, symbol=symbol, interval=interval).stream():
        yield step.bar, step.book


def _csv_for(data: Path, symbol: str, interval: str) -> Path:
    if data.is_file():
        return data
    suffix = {"60": "60m", "240": "240m", "D": "1d"}.get(interval, f"{interval}m")
    candidate = data / f"{symbol}_{suffix}.csv"
    if not candidate.is_file():
        raise DataError(f"{data}: expected a CSV file or a directory with {candidate.name}")
    return candidate


# ---- state ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ReplayConnection:
    """One accepted websocket, as the exchange saw it (kept after it closes, for tests)."""

    conn_id: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    topics: set[str] = field(default_factory=set)
    subscribe_requests: int = 0
    pings: int = 0
    silent: bool = False
    answer_pings: bool = True
    closed: bool = False


@dataclass(frozen=True, slots=True)
class RestHit:
    """One REST request: local monotonic time, the query, and the HTTP status/retCode answered."""

    monotonic_s: float
    query: dict[str, str]
    status: int
    ret_code: int | None


@dataclass
class _Market:
    symbol: str
    source: Iterator[tuple[Bar, BookTop]]
    starts: list[int] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    keys: array[int] = field(default_factory=lambda: array("q"))
    pending: tuple[Bar, BookTop] | None = None  # next bar of the source, not yet opened
    forming: Bar | None = None  # bar being formed now
    fraction: float = 0.0
    exhausted: bool = False
    seq: int = 0

    def peek(self) -> tuple[Bar, BookTop] | None:
        if self.pending is None and not self.exhausted:
            self.pending = next(self.source, None)
            if self.pending is None:
                self.exhausted = True
        return self.pending


def _partial_values(bar: Bar, f: float) -> tuple[float, float, float, float, float, float]:
    close = bar.open + (bar.close - bar.open) * f
    high = max(bar.open, close) + (bar.high - max(bar.open, bar.close)) * f
    low = min(bar.open, close) - (min(bar.open, bar.close) - bar.low) * f
    return bar.open, round(high, 8), round(low, 8), round(close, 8), bar.volume * f, bar.turnover * f


def _num(x: float) -> str:
    return repr(float(x))


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
        self.interval_ms = interval_ms(interval)
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
        self.clock_ms = 0
        self.live_bars = 0
        self.connections: list[ReplayConnection] = []
        self.rest_hits: list[RestHit] = []
        self.done = asyncio.Event()
        # fault switches
        self._drop_plan: deque[Literal["handshake", "open", "subscribe"]] = deque()
        self._dup_confirms = 0
        self._late_confirms = 0
        self._late_lag_bars = 2
        self._late_due: list[tuple[int, str, bytes]] = []
        self._skip_confirms = 0
        self._rest_faults: deque[tuple[str, float]] = deque()
        self._banned = False
        self._rest_delay_s = 0.0
        self._running = asyncio.Event()
        self._running.set()
        self._deadline = 0.0
        self._closed_event = asyncio.Event()
        self._markets: dict[str, _Market] = {}
        self._topics: dict[str, tuple[str, str]] = {}
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task[None] | None = None
        self._conn_ids = itertools.count(1)

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
        self._load()
        app = web.Application()
        app.router.add_get(KLINE_PATH, self._rest_kline)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_post(CONTROL_PREFIX + "{method}", self._control)
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
        for conn in self.connections:
            if not conn.closed:
                conn.closed = True
                with contextlib.suppress(Exception):
                    await conn.ws.close()
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

    def bars_closed(self, symbol: str) -> list[Bar]:
        """The retained closed bars of `symbol` (history and live), ascending (source "csv"/"synthetic")."""
        return list(self._markets[symbol].bars)

    def closed_keys(self, symbol: str) -> list[int]:
        """Open times of every bar of `symbol` that closed (history and live), ascending."""
        return list(self._markets[symbol].keys)

    async def wait_live_bars(self, n: int) -> None:
        """Wait until at least `n` live bars closed (or the data ran out)."""
        while self.live_bars < n and not self.done.is_set():
            self._closed_event.clear()
            await self._closed_event.wait()

    @property
    def open_connections(self) -> list[ReplayConnection]:
        """Websockets currently open."""
        return [c for c in self.connections if not c.closed]

    # ---- fault switches ---------------------------------------------------------------------------------

    async def drop_connections(self, *, abort: bool = True) -> int:
        """Drop every open websocket now (abort = TCP reset without a close frame); return how many."""
        conns = self.open_connections
        for conn in conns:
            await self._drop(conn, abort=abort)
        return len(conns)

    def drop_next(self, n: int = 1, *, stage: Literal["handshake", "open", "subscribe"] = "open") -> None:
        """Drop the next `n` websockets: during the upgrade, right after it, or on their subscribe request."""
        self._drop_plan.extend([stage] * n)

    def silence(self, *, answer_pings: bool = True) -> None:
        """Open websockets stay open but get no more pushes; pings are answered or not."""
        for conn in self.open_connections:
            conn.silent = True
            conn.answer_pings = answer_pings

    def duplicate_confirms(self, n: int = 1) -> None:
        """Send each of the next `n` confirms twice."""
        self._dup_confirms += n

    def late_confirms(self, n: int = 1, *, lag_bars: int = 2) -> None:
        """Re-send each of the next `n` confirms again `lag_bars` bars later."""
        self._late_confirms += n
        self._late_lag_bars = lag_bars

    def skip_confirms(self, n: int = 1) -> None:
        """Do not push the confirm of the next `n` bars (they still close and are served over REST)."""
        self._skip_confirms += n

    def rest_fault(
        self,
        kind: Literal["10006", "10006_no_reset", "403", "5xx", "slow"],
        *,
        n: int = 1,
        value: float = 0.0,
    ) -> None:
        """Answer the next `n` REST requests with a fault; `value`: reset wait s (10006), delay s (slow)."""
        self._rest_faults.extend([(kind, value)] * n)

    def clear_rest_faults(self) -> None:
        """Forget the REST faults not yet served."""
        self._rest_faults.clear()

    def ban(self, banned: bool = True) -> None:
        """Answer every REST request with HTTP 403 until `ban(False)`."""
        self._banned = banned

    def delist_ws(self, symbol: str) -> None:
        """The websocket forgets `symbol`'s topics (subscribe: `handler not found`); REST still serves it."""
        for topic in [t for t, (_, sym) in self._topics.items() if sym == symbol]:
            del self._topics[topic]

    def pause(self) -> None:
        """Stop the clock: no bar closes, pings are still answered."""
        self._running.clear()

    def resume(self) -> None:
        """Restart the clock."""
        self._running.set()

    async def inject(self, frame: str) -> None:
        """Send a raw text frame to every open, non-silent websocket."""
        for conn in self.open_connections:
            if not conn.silent:
                await self._send(conn, frame)

    def malformed_frames(self, symbol: str) -> list[str]:
        """Frames a client must log and skip: bad JSON, wrong types, unknown topics, bad numbers."""
        topic = f"kline.{self.interval}.{symbol}"
        return [
            "{not json",
            "[1, 2, 3]",
            json.dumps({"topic": topic, "data": {"start": "x"}, "ts": 1, "type": "snapshot"}),
            json.dumps(
                {"topic": topic, "data": [{"start": "abc", "confirm": "yes"}], "ts": 1, "type": "snapshot"}
            ),
            json.dumps(
                {
                    "topic": topic,
                    "data": [
                        {
                            "start": 0,
                            "end": 1,
                            "interval": self.interval,
                            "open": "NaN-ish",
                            "close": "1",
                            "high": "1",
                            "low": "1",
                            "volume": "1",
                            "turnover": "1",
                            "confirm": True,
                            "timestamp": 1,
                        }
                    ],
                    "ts": 1,
                    "type": "snapshot",
                }
            ),
            json.dumps({"topic": "liquidation.ZZZUSDT", "data": {}, "ts": 1, "type": "snapshot"}),
            json.dumps({"topic": f"orderbook.1.{symbol}", "data": {"s": symbol, "b": 5}, "ts": 1}),
        ]

    # ---- the clock --------------------------------------------------------------------------------------

    def _load(self) -> None:
        for i, symbol in enumerate(self.symbols):
            if str(self.data) == "synthetic":
                source = _synthetic_steps(symbol, self.seed + i, self.interval)
            else:
                source = _csv_steps(_csv_for(Path(self.data), symbol, self.interval), symbol)
            self._markets[symbol] = _Market(symbol, source)
            for topic in (f"kline.{self.interval}.{symbol}", f"orderbook.1.{symbol}", f"tickers.{symbol}"):
                self._topics[topic] = (topic.split(".")[0], symbol)
        firsts = [m.peek() for m in self._markets.values()]
        starts = [f[0].start_ms for f in firsts if f is not None]
        if not starts:
            raise DataError(f"{self.data}: no bars")
        slot = min(starts)
        for _ in range(self.history_bars):
            for m in self._markets.values():
                self._take_if(m, slot)
            slot += self.interval_ms
        self._slot = slot
        self.clock_ms = slot

    def _take_if(self, m: _Market, slot: int) -> Bar | None:
        nxt = m.peek()
        while nxt is not None and nxt[0].start_ms < slot:  # misaligned rows are skipped
            m.pending = None
            nxt = m.peek()
        if nxt is None or nxt[0].start_ms != slot:
            return None
        m.pending = None
        self._close(m, nxt[0])
        return nxt[0]

    def _close(self, m: _Market, bar: Bar) -> None:
        m.starts.append(bar.start_ms)
        m.bars.append(bar)
        m.keys.append(bar.start_ms)
        if len(m.bars) > 2 * self.keep_bars:
            del m.bars[: -self.keep_bars]
            del m.starts[: -self.keep_bars]

    async def _tick(self, seconds: float) -> None:
        """Advance the accelerated clock by `seconds` of real time, against a deadline: sleeps shorter than
        the timer's granularity (~1 ms) average out instead of each costing a whole timer tick. A clock that
        fell more than 0.25 s behind (a pause, a busy loop) restarts from now rather than bursting."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = self._deadline + seconds
        if deadline < now - 0.25:
            deadline = now
        self._deadline = deadline
        await asyncio.sleep(max(deadline - now, 0.0))
        if not self._running.is_set():
            await self._running.wait()
            self._deadline = loop.time()

    async def _drive(self) -> None:
        iv = self.interval_ms
        steps = self.updates_per_bar + 1
        while self.max_bars is None or self.live_bars < self.max_bars:
            await self._running.wait()
            slot = self._slot
            forming: list[tuple[_Market, Bar, BookTop]] = []
            for m in self._markets.values():
                nxt = m.peek()
                while nxt is not None and nxt[0].start_ms < slot:
                    m.pending = None
                    nxt = m.peek()
                if nxt is not None and nxt[0].start_ms == slot:
                    m.forming, m.fraction = nxt[0], 0.0
                    forming.append((m, nxt[0], nxt[1]))
                else:
                    m.forming = None
            if all(m.exhausted for m in self._markets.values()):
                break
            for k in range(1, steps):
                await self._tick(self.bar_seconds / steps)
                self.clock_ms = slot + k * iv // steps
                for m, bar, _ in forming:
                    m.fraction = k / steps
                    await self._broadcast(
                        m.symbol, "kline", self._kline_frame(bar, m.fraction, confirm=False)
                    )
            await self._tick(self.bar_seconds / steps)
            self.clock_ms = slot + iv
            for m, bar, book in forming:
                m.pending, m.forming = None, None
                self._close(m, bar)
                await self._confirm(m, bar)
                if self.book:
                    await self._push_book(m, book)
            due = [d for d in self._late_due if d[0] <= slot]
            self._late_due = [d for d in self._late_due if d[0] > slot]
            for _, symbol, frame in due:
                await self._broadcast(symbol, "kline", frame)
            self._slot = slot + iv
            self.live_bars += 1
            self._closed_event.set()
        self.done.set()
        self._closed_event.set()

    async def _confirm(self, m: _Market, bar: Bar) -> None:
        frame = self._kline_frame(bar, 1.0, confirm=True)
        if self._skip_confirms > 0:
            self._skip_confirms -= 1
            return
        await self._broadcast(m.symbol, "kline", frame)
        if self._dup_confirms > 0:
            self._dup_confirms -= 1
            await self._broadcast(m.symbol, "kline", frame)
        if self._late_confirms > 0:
            self._late_confirms -= 1
            self._late_due.append((bar.start_ms + self._late_lag_bars * self.interval_ms, m.symbol, frame))

    def _kline_frame(self, bar: Bar, f: float, *, confirm: bool) -> bytes:
        o, h, lo, c, v, t = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover)
        if not confirm:
            o, h, lo, c, v, t = _partial_values(bar, f)
        return _encode(
            {
                "topic": f"kline.{self.interval}.{bar.symbol}",
                "data": [
                    {
                        "start": bar.start_ms,
                        "end": bar.start_ms + self.interval_ms - 1,
                        "interval": self.interval,
                        "open": _num(o),
                        "close": _num(c),
                        "high": _num(h),
                        "low": _num(lo),
                        "volume": _num(v),
                        "turnover": _num(t),
                        "confirm": confirm,
                        "timestamp": self.clock_ms,
                    }
                ],
                "ts": self.clock_ms,
                "type": "snapshot",
            }
        )

    async def _push_book(self, m: _Market, book: BookTop) -> None:
        m.seq += 1
        ob = {
            "topic": f"orderbook.1.{m.symbol}",
            "ts": self.clock_ms,
            "type": "snapshot",
            "data": {
                "s": m.symbol,
                "b": [[_num(book.bid_px), _num(book.bid_sz)]],
                "a": [[_num(book.ask_px), _num(book.ask_sz)]],
                "u": m.seq,
                "seq": m.seq,
            },
            "cts": self.clock_ms,
        }
        await self._broadcast(m.symbol, "orderbook", _encode(ob))
        tk = {
            "topic": f"tickers.{m.symbol}",
            "type": "snapshot",
            "data": {
                "symbol": m.symbol,
                "lastPrice": _num(0.5 * (book.bid_px + book.ask_px)),
                "bid1Price": _num(book.bid_px),
                "bid1Size": _num(book.bid_sz),
                "ask1Price": _num(book.ask_px),
                "ask1Size": _num(book.ask_sz),
            },
            "cs": m.seq,
            "ts": self.clock_ms,
        }
        await self._broadcast(m.symbol, "tickers", _encode(tk))

    async def _broadcast(self, symbol: str, kind: str, frame: bytes) -> None:
        topic = f"kline.{self.interval}.{symbol}" if kind == "kline" else f"{kind}.{symbol}"
        if kind == "orderbook":
            topic = f"orderbook.1.{symbol}"
        text = frame.decode()
        for conn in self.connections:
            if not conn.closed and not conn.silent and topic in conn.topics:
                await self._send(conn, text)

    async def _send(self, conn: ReplayConnection, text: str) -> None:
        try:
            await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            conn.closed = True

    async def _drop(self, conn: ReplayConnection, *, abort: bool) -> None:
        conn.closed = True
        if abort and conn.transport is not None:
            conn.transport.abort()
        else:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"replay drop")

    # ---- websocket --------------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        stage = self._drop_plan.popleft() if self._drop_plan else None
        if stage == "handshake":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503, text="dropped during handshake")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        conn = ReplayConnection(conn_id=f"replay-{next(self._conn_ids)}", ws=ws, transport=transport)
        self.connections.append(conn)
        if stage == "open":
            await self._drop(conn, abort=True)
            return ws
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if await self._on_client_frame(conn, msg.data, drop_on_subscribe=stage == "subscribe"):
                    break
        finally:
            conn.closed = True
        return ws

    async def _on_client_frame(self, conn: ReplayConnection, text: str, *, drop_on_subscribe: bool) -> bool:
        """Handle one client frame; True = the connection was dropped."""
        try:
            req = json.loads(text)
        except ValueError:
            return False
        if not isinstance(req, dict):
            return False
        op = req.get("op")
        req_id = str(req.get("req_id", ""))
        if op == "ping":
            conn.pings += 1
            if conn.answer_pings:
                reply = {
                    "success": True,
                    "ret_msg": "pong",
                    "conn_id": conn.conn_id,
                    "req_id": req_id,
                    "op": "ping",
                }
                await self._send(conn, json.dumps(reply))
            return False
        if op in ("subscribe", "unsubscribe"):
            conn.subscribe_requests += op == "subscribe"
            if drop_on_subscribe and op == "subscribe":
                await self._drop(conn, abort=True)
                return True
            args = req.get("args")
            topics = [a for a in args if isinstance(a, str)] if isinstance(args, list) else []
            error = ""
            for topic in topics:
                if topic not in self._topics:
                    error = error or f"error:handler not found,topic:{topic}"
                elif op == "subscribe" and topic in conn.topics:
                    error = error or f"error:already subscribed,topic:{topic}"
                elif op == "subscribe":
                    conn.topics.add(topic)
                else:
                    conn.topics.discard(topic)
            reply = {
                "success": not error,
                "ret_msg": error,
                "conn_id": conn.conn_id,
                "req_id": req_id,
                "op": op,
            }
            await self._send(conn, json.dumps(reply))
        return False

    # ---- REST -------------------------------------------------------------------------------------------

    def _rest_answer(self, code: int, msg: str, result: Any) -> dict[str, Any]:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self.clock_ms}

    async def _rest_kline(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        fault = self._rest_faults.popleft() if self._rest_faults else None
        if self._rest_delay_s > 0:
            await asyncio.sleep(self._rest_delay_s)
        if fault is not None and fault[0] == "slow":
            await asyncio.sleep(fault[1])
        if self._banned or (fault is not None and fault[0] == "403"):
            self.rest_hits.append(RestHit(time.monotonic(), query, 403, None))
            return web.Response(status=403, text="403 Forbidden")
        if fault is not None and fault[0] == "5xx":
            self.rest_hits.append(RestHit(time.monotonic(), query, 502, None))
            return web.Response(status=502, text="502 Bad Gateway")
        if fault is not None and fault[0] in ("10006", "10006_no_reset"):
            self.rest_hits.append(RestHit(time.monotonic(), query, 200, 10006))
            headers = {}
            if fault[0] == "10006":
                headers["X-Bapi-Limit-Reset-Timestamp"] = str(self.clock_ms + int(fault[1] * 1000))
            return web.json_response(self._rest_answer(10006, "Too many visits", {}), headers=headers)
        code, msg, result = self._klines(query)
        self.rest_hits.append(RestHit(time.monotonic(), query, 200, code))
        return web.json_response(self._rest_answer(code, msg, result))

    def _klines(self, q: Mapping[str, str]) -> tuple[int, str, Any]:
        if q.get("category") != "linear":
            return 10001, "Invalid category", {}
        symbol = q.get("symbol", "")
        market = self._markets.get(symbol)
        if market is None:
            return 10001, "Not supported symbols", {}
        if q.get("interval") != self.interval:
            return 10001, "Invalid period!", {}
        try:
            limit = int(q.get("limit", "200"))
            start = int(q["start"]) if "start" in q else None
            end = int(q["end"]) if "end" in q else None
        except ValueError:
            return 10001, "params error: limit, start and end must be integers", {}
        if not 1 <= limit <= 1000:
            return 10001, "params error: limit must be in [1, 1000]", {}
        lo = 0 if start is None else bisect.bisect_left(market.starts, start)
        hi = len(market.starts) if end is None else bisect.bisect_right(market.starts, end)
        rows: list[list[str]] = []
        forming = market.forming
        if (
            forming is not None
            and (start is None or forming.start_ms >= start)
            and (end is None or forming.start_ms <= end)
        ):
            o, h, low, c, v, t = _partial_values(forming, market.fraction)
            rows.append([str(forming.start_ms), _num(o), _num(h), _num(low), _num(c), _num(v), _num(t)])
        for i in range(hi - 1, max(lo, hi - limit + len(rows)) - 1, -1):
            b = market.bars[i]
            rows.append(
                [
                    str(b.start_ms),
                    _num(b.open),
                    _num(b.high),
                    _num(b.low),
                    _num(b.close),
                    _num(b.volume),
                    _num(b.turnover),
                ]
            )
        return 0, "OK", {"symbol": symbol, "category": "linear", "list": rows[:limit]}

    # ---- control ----------------------------------------------------------------------------------------

    _CONTROL: Final = frozenset(
        {"drop_connections", "drop_next", "silence", "duplicate_confirms", "late_confirms", "skip_confirms"}
        | {"rest_fault", "ban", "pause", "resume", "closed_keys"}
    )

    async def _control(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method not in self._CONTROL:
            return web.json_response({"ok": False, "error": f"unknown control {method!r}"}, status=404)
        kwargs = await request.json() if request.can_read_body else {}
        result = getattr(self, method)(**kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        return web.json_response({"ok": True, "result": result})


# ---- CLI --------------------------------------------------------------------------------------------------


def add_replay_args(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m bot replay-server`."""
    parser.add_argument(
        "--data", default="synthetic", help="'synthetic', a CSV file, or a dir of SYMBOL_5m.csv"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port (printed)")
    parser.add_argument("--bar-seconds", type=float, default=1.0, help="real seconds per bar (0 = flat out)")
    parser.add_argument("--symbols", default="BTCUSDT", help="comma-separated symbols")
    parser.add_argument("--interval", default="5")
    parser.add_argument("--updates-per-bar", type=int, default=3)
    parser.add_argument("--history-bars", type=int, default=1000)
    parser.add_argument("--max-bars", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)


async def main_replay(args: argparse.Namespace) -> int:
    """Run the replay exchange until cancelled (SIGINT/SIGTERM in the caller) or the data runs out."""
    ex = ReplayExchange(
        symbols=[s.strip() for s in str(args.symbols).split(",") if s.strip()],
        interval=args.interval,
        data=args.data,
        bar_seconds=args.bar_seconds,
        updates_per_bar=args.updates_per_bar,
        history_bars=args.history_bars,
        max_bars=args.max_bars,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    async with ex:
        print(json.dumps({"event": "replay_ready", "rest_url": ex.rest_url, "ws_url": ex.ws_url}), flush=True)
        await ex.done.wait()
        await asyncio.Event().wait()  # keep serving REST/pings after the data ran out, until cancelled
    return 0
