"""The replay exchange's HTTP routes: the public v5 market endpoints (with REST faults) and
`POST /_replay/<method>`.

Served: `GET /v5/market/kline` (every buildable standard interval), `instruments-info`, `time`, `tickers`,
`orderbook` (one level), category `linear`. Other categories answer as a market with no instruments (empty
lists; a named symbol is not supported). Bad parameters answer HTTP 200 with retCode 10001 and Bybit's
wording where known; an unknown path answers HTTP 404 with a v5 envelope (retCode 10001). Every answer's
`time` is the exchange's `now_ms()`. REST answers are not delayed by the exchange's `latency_ms` (a client
waits for its answer anyway; only the websocket's unsolicited frames race a client's bookkeeping).

`instruments-info` pages like Bybit: `limit` 1..1000 (default 500), rows in symbol order, `nextPageCursor`
an opaque token for the next page ("" on the last), `status` filters (default `Trading`). Rate limits, when
set (`RateLimits`): the API limit answers retCode 10006 "Too many visits!" with `X-Bapi-Limit`,
`X-Bapi-Limit-Status` (requests left in the window) and `X-Bapi-Limit-Reset-Timestamp` on every answer, as
Bybit's v5 rate-limit page describes; the IP limit (Bybit: 600 requests in any 5 s) answers HTTP 403 as
Bybit does, counted in `ip_limit_hits` (the replay lifts it when the window allows, Bybit bans >= 10 min).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from bot.sim.replay import klines
from bot.sim.replay.faults import FaultPlan
from bot.sim.replay.frames import kline_row
from bot.sim.replay.instruments import Instrument, Listing
from bot.sim.replay.market import Market

# Exchange methods a separate process may call: `POST /_replay/<method>` with a JSON object of kwargs.
CONTROL_METHODS: Final = frozenset(
    {"drop_connections", "drop_next", "silence", "duplicate_confirms", "late_confirms", "skip_confirms"}
    | {"rest_fault", "ban", "pause", "resume", "closed_keys", "fail_symbol", "set_status"}
)
MARKET_PREFIX: Final = "/v5/market/"
OTHER_CATEGORIES: Final = frozenset({"spot", "inverse", "option"})
MAX_KLINE_LIMIT: Final = 1000
MAX_BOOK_LIMIT: Final = 500
MAX_INSTRUMENTS_LIMIT: Final = 1000
DEFAULT_INSTRUMENTS_LIMIT: Final = 500

Answer = tuple[int, str, Any]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class RateWindow:
    """At most `limit` requests in any `window_s` seconds (a rolling window of request times, monotonic)."""

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def admit(self, now: float) -> tuple[bool, int, float]:
        """Count a request at `now`: (admitted, requests left in the window, seconds until a slot frees)."""
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False, 0, self._times[0] + self.window_s - now
        self._times.append(now)
        left = self.limit - len(self._times)
        return True, left, (self._times[0] + self.window_s - now) if left == 0 else 0.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The replay's REST limits: `api` (requests, window s) answered with 10006 and the X-Bapi-Limit
    headers; `ip` (requests, window s) answered with HTTP 403. None = no such limit."""

    api: tuple[int, float] | None = (100, 1.0)
    ip: tuple[int, float] | None = (600, 5.0)


class Exchange(Protocol):
    """What the routes need of `ReplayExchange`."""

    intervals: tuple[str, ...]

    def now_ms(self) -> int: ...
    def reset_timestamp_ms(self, wait_s: float) -> int: ...
    def ticker(self, symbol: str) -> dict[str, str]: ...
    def book_snapshot(self, symbol: str) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class RestHit:
    """One REST request: local monotonic time, the path, the query, and the HTTP status/retCode answered."""

    monotonic_s: float
    query: dict[str, str]
    status: int
    ret_code: int | None
    path: str = "/v5/market/kline"


class MarketRoutes:
    """The `/v5/market/*` routes: each answers the pending REST fault if any, else its data. Every request is
    recorded in `hits`."""

    def __init__(
        self,
        exchange: Exchange,
        market: Market,
        faults: FaultPlan,
        *,
        listings: list[Listing] | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self._ex = exchange
        self._market = market
        self._faults = faults
        self.hits: list[RestHit] = []
        self.listings = {x.instrument.symbol: x for x in listings or []}
        self.status: dict[str, str] = {}  # a served symbol's status when not Trading (set_status)
        self._api = RateWindow(*limits.api) if limits is not None and limits.api else None
        self._ip = RateWindow(*limits.ip) if limits is not None and limits.ip else None
        self.ip_limit_hits = 0
        self.api_limit_hits = 0
        self._routes: dict[str, Callable[[Mapping[str, str]], Answer]] = {
            "kline": self._kline,
            "instruments-info": self._instruments,
            "time": self._time,
            "tickers": self._tickers,
            "orderbook": self._orderbook,
        }

    def add_routes(self, app: web.Application) -> None:
        """Register every market route on `app`."""
        for name in self._routes:
            app.router.add_get(MARKET_PREFIX + name, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler: the pending REST fault if any (a ban answers 403), else the route's answer."""
        return await self._answer_request(request)

    async def not_found(self, request: web.Request) -> web.Response:
        """Any other path: HTTP 404 with a v5 envelope."""
        body = self._envelope(10001, f"path not found: {request.method} {request.path}", {})
        return web.json_response(body, status=404, dumps=_dumps)

    async def _answer_request(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        path = request.path
        fault = self._faults.take_rest_fault()
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.value)
        if self._faults.banned or (fault is not None and fault.kind == "403"):
            self._hit(path, query, 403, None)
            return web.Response(status=403, text="403 Forbidden")
        now = time.monotonic()
        if self._ip is not None and not self._ip.admit(now)[0]:
            self.ip_limit_hits += 1
            self._hit(path, query, 403, None)
            return web.Response(status=403, text="403, access too frequent")
        headers: dict[str, str] = {}
        if self._api is not None:
            ok, left, reset_s = self._api.admit(now)
            headers = {
                "X-Bapi-Limit": str(self._api.limit),
                "X-Bapi-Limit-Status": str(left),
                "X-Bapi-Limit-Reset-Timestamp": str(self._ex.reset_timestamp_ms(reset_s)),
            }
            if not ok:
                self.api_limit_hits += 1
                self._hit(path, query, 200, 10006)
                body = self._envelope(10006, "Too many visits!", {})
                return web.json_response(body, headers=headers, dumps=_dumps)
        if (fault is not None and fault.kind == "5xx") or query.get("symbol") in self._faults.failing_symbols:
            self._hit(path, query, 502, None)
            return web.Response(status=502, text="502 Bad Gateway")
        if fault is not None and fault.kind in ("10006", "10006_no_reset"):
            self._hit(path, query, 200, 10006)
            headers = {}
            if fault.kind == "10006":
                headers["X-Bapi-Limit-Reset-Timestamp"] = str(self._ex.reset_timestamp_ms(fault.value))
            return web.json_response(
                self._envelope(10006, "Too many visits", {}), headers=headers, dumps=_dumps
            )
        route = self._routes[path.removeprefix(MARKET_PREFIX)]
        code, msg, result = route(query)
        self._hit(path, query, 200, code)
        return web.json_response(self._envelope(code, msg, result), headers=headers, dumps=_dumps)

    def _hit(self, path: str, query: dict[str, str], status: int, code: int | None) -> None:
        self.hits.append(RestHit(time.monotonic(), query, status, code, path))

    def _envelope(self, code: int, msg: str, result: Any) -> dict[str, Any]:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self._ex.now_ms()}

    # ---- routes -----------------------------------------------------------------------------------------

    def _category(self, q: Mapping[str, str]) -> str | None:
        category = q.get("category", "")
        return category if category == "linear" or category in OTHER_CATEGORIES else None

    def _kline(self, q: Mapping[str, str]) -> Answer:
        return klines_answer(self._market, self._ex.intervals, q)

    def _instruments(self, q: Mapping[str, str]) -> Answer:
        category = self._category(q)
        if category is None:
            return 10001, "params error: category is invalid", {}
        try:
            limit = int(q.get("limit", str(DEFAULT_INSTRUMENTS_LIMIT)))
        except ValueError:
            return 10001, "params error: limit must be an integer", {}
        if not 1 <= limit <= MAX_INSTRUMENTS_LIMIT:
            return 10001, f"params error: limit must be in [1, {MAX_INSTRUMENTS_LIMIT}]", {}
        offset = _cursor_offset(q.get("cursor", ""))
        if offset is None:
            return 10001, "params error: cursor is invalid", {}
        status = q.get("status", "Trading")
        rows = self._instrument_rows() if category == "linear" else []
        rows = [r for r in rows if r["status"] == status and q.get("symbol", r["symbol"]) == r["symbol"]]
        page = rows[offset : offset + limit]
        nxt = _cursor(offset + limit) if offset + limit < len(rows) else ""
        return 0, "OK", {"category": category, "list": page, "nextPageCursor": nxt}

    def _instrument_rows(self) -> list[dict[str, Any]]:
        """Every linear instrument's `instruments-info` item (served and listed-only), in symbol order."""
        rows: list[dict[str, Any]] = []
        for symbol, series in self._market.series.items():
            launch = series.bars[0].start_ms if series.bars else self._market.slot_ms
            rows.append(series.instrument.info(launch_ms=launch, status=self.status.get(symbol, "Trading")))
        for listing in self.listings.values():
            item = listing.instrument.info(
                launch_ms=self._market.slot_ms, status=listing.status, contract_type=listing.contract_type
            )
            rows.append(item)
        rows.sort(key=lambda r: str(r["symbol"]))
        return rows

    def _time(self, q: Mapping[str, str]) -> Answer:
        now = self._ex.now_ms()
        return 0, "OK", {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _tickers(self, q: Mapping[str, str]) -> Answer:
        category = self._category(q)
        if category is None:
            return 10001, "params error: category is invalid", {}
        symbol = q.get("symbol")
        known = symbol in self._market.series or symbol in self.listings
        if symbol is not None and (category != "linear" or not known):
            return 10001, "Not supported symbols", {}
        symbols = [] if category != "linear" else [symbol] if symbol else list(self._market.series)
        items = [self._ex.ticker(s) for s in symbols if s in self._market.series]
        if category == "linear":
            listed = [x for x in self.listings.values() if symbol in (None, x.instrument.symbol)]
            items += [_listing_ticker(x) for x in listed]
        return 0, "OK", {"category": category, "list": items}

    def _orderbook(self, q: Mapping[str, str]) -> Answer:
        if self._category(q) is None:
            return 10001, "params error: category is invalid", {}
        symbol = q.get("symbol", "")
        if q.get("category") != "linear" or symbol not in self._market.series:
            return 10001, "Not supported symbols", {}
        try:
            limit = int(q.get("limit", "25"))
        except ValueError:
            return 10001, "params error: limit must be an integer", {}
        if not 1 <= limit <= MAX_BOOK_LIMIT:
            return 10001, f"params error: limit must be in [1, {MAX_BOOK_LIMIT}]", {}
        book = dict(self._ex.book_snapshot(symbol))
        now = self._ex.now_ms()
        return (
            0,
            "OK",
            {
                "s": symbol,
                "a": book["a"],
                "b": book["b"],
                "ts": now,
                "u": book["u"],
                "seq": book["seq"],
                "cts": now,
            },
        )


def _cursor(offset: int) -> str:
    """The opaque `nextPageCursor` of the page starting at row `offset`."""
    return base64.urlsafe_b64encode(f"offset={offset}".encode()).decode()


def _cursor_offset(cursor: str) -> int | None:
    """The row a cursor points at (0 for ""), None for a cursor this exchange never gave out."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    key, _, value = text.partition("=")
    return int(value) if key == "offset" and value.isdigit() else None


def _listing_ticker(x: Listing) -> dict[str, str]:
    """The REST `tickers` item of a listed-only instrument: a flat price of 1 and its 24h turnover."""
    inst = x.instrument
    price = inst.px_fixed(inst.tick * 10_000)
    return {
        "symbol": inst.symbol,
        "lastPrice": price,
        "markPrice": price,
        "indexPrice": price,
        "prevPrice24h": price,
        "price24hPcnt": "0",
        "highPrice24h": price,
        "lowPrice24h": price,
        "turnover24h": f"{x.turnover_usd:f}",
        "volume24h": f"{x.turnover_usd:f}",
        "openInterest": "0",
        "fundingRate": "0.0001",
        "bid1Price": price,
        "ask1Price": price,
    }


def klines_answer(market: Market, intervals: tuple[str, ...], q: Mapping[str, str]) -> Answer:
    """One kline query answered as Bybit v5 does: (retCode, retMsg, result), rows newest first, <= `limit`.

    With `start` the answer is the oldest `limit` candles from the one holding `start` (up to `end` if given),
    as Bybit answers and as ccxt's `since` and its pagination rely on; with only `end` (or neither) the
    newest `limit` at or before it.
    """
    if q.get("category") != "linear":
        return 10001, "Invalid category", {}
    symbol = q.get("symbol", "")
    series = market.series.get(symbol)
    if series is None:
        return 10001, "Not supported symbols", {}
    interval = q.get("interval", "")
    if interval not in intervals:
        return 10001, "Invalid period!", {}
    try:
        limit = int(q.get("limit", "200"))
        start = int(q["start"]) if "start" in q else None
        end = int(q["end"]) if "end" in q else None
    except ValueError:
        return 10001, "params error: limit, start and end must be integers", {}
    if not 1 <= limit <= MAX_KLINE_LIMIT:
        return 10001, f"params error: limit must be in [1, {MAX_KLINE_LIMIT}]", {}
    inst: Instrument = series.instrument
    rows = klines.query(series, interval, start=start, end=end, limit=limit)
    return 0, "OK", {"symbol": symbol, "category": "linear", "list": [kline_row(inst, b, v) for b, v in rows]}


def control_route(target: object) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`POST /_replay/<method>`: call `target.<method>(**json_body)` for a method in `CONTROL_METHODS`."""

    async def handle(request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method not in CONTROL_METHODS:
            return web.json_response({"ok": False, "error": f"unknown control {method!r}"}, status=404)
        kwargs = await request.json() if request.can_read_body else {}
        result = getattr(target, method)(**kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        return web.json_response({"ok": True, "result": result})

    return handle
