"""The replay exchange's HTTP routes: `GET /v5/market/kline` (with REST faults), `POST /_replay/<method>`."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from bot.sim.replay.faults import FaultPlan
from bot.sim.replay.frames import bar_values, kline_row
from bot.sim.replay.market import Market

# Exchange methods a separate process may call: `POST /_replay/<method>` with a JSON object of kwargs.
CONTROL_METHODS: Final = frozenset(
    {"drop_connections", "drop_next", "silence", "duplicate_confirms", "late_confirms", "skip_confirms"}
    | {"rest_fault", "ban", "pause", "resume", "closed_keys"}
)


@dataclass(frozen=True, slots=True)
class RestHit:
    """One REST request: local monotonic time, the query, and the HTTP status/retCode answered."""

    monotonic_s: float
    query: dict[str, str]
    status: int
    ret_code: int | None


class KlineRoute:
    """`GET /v5/market/kline`: the market's closed bars (newest first) and the forming one, or a fault.

    Every request is recorded in `hits`.
    """

    def __init__(self, market: Market, faults: FaultPlan) -> None:
        self._market = market
        self._faults = faults
        self.hits: list[RestHit] = []

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler: the pending REST fault if any (a ban answers 403), else the klines answer."""
        query = dict(request.query)
        fault = self._faults.take_rest_fault()
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.value)
        if self._faults.banned or (fault is not None and fault.kind == "403"):
            self.hits.append(RestHit(time.monotonic(), query, 403, None))
            return web.Response(status=403, text="403 Forbidden")
        if fault is not None and fault.kind == "5xx":
            self.hits.append(RestHit(time.monotonic(), query, 502, None))
            return web.Response(status=502, text="502 Bad Gateway")
        if fault is not None and fault.kind in ("10006", "10006_no_reset"):
            self.hits.append(RestHit(time.monotonic(), query, 200, 10006))
            headers = {}
            if fault.kind == "10006":
                headers["X-Bapi-Limit-Reset-Timestamp"] = str(self._market.clock_ms + int(fault.value * 1000))
            return web.json_response(self._answer(10006, "Too many visits", {}), headers=headers)
        code, msg, result = klines(self._market, query)
        self.hits.append(RestHit(time.monotonic(), query, 200, code))
        return web.json_response(self._answer(code, msg, result))

    def _answer(self, code: int, msg: str, result: Any) -> dict[str, Any]:
        return {
            "retCode": code,
            "retMsg": msg,
            "result": result,
            "retExtInfo": {},
            "time": self._market.clock_ms,
        }


def klines(market: Market, q: Mapping[str, str]) -> tuple[int, str, Any]:
    """One kline query answered as Bybit v5 does: (retCode, retMsg, result), rows newest first, <= `limit`."""
    if q.get("category") != "linear":
        return 10001, "Invalid category", {}
    symbol = q.get("symbol", "")
    series = market.series.get(symbol)
    if series is None:
        return 10001, "Not supported symbols", {}
    if q.get("interval") != market.interval:
        return 10001, "Invalid period!", {}
    try:
        limit = int(q.get("limit", "200"))
        start = int(q["start"]) if "start" in q else None
        end = int(q["end"]) if "end" in q else None
    except ValueError:
        return 10001, "params error: limit, start and end must be integers", {}
    if not 1 <= limit <= 1000:
        return 10001, "params error: limit must be in [1, 1000]", {}
    lo = 0 if start is None else bisect.bisect_left(series.starts, start)
    hi = len(series.starts) if end is None else bisect.bisect_right(series.starts, end)
    rows: list[list[str]] = []
    forming = series.forming
    if (
        forming is not None
        and (start is None or forming.start_ms >= start)
        and (end is None or forming.start_ms <= end)
    ):
        rows.append(kline_row(forming.start_ms, series.form_values()))
    for i in range(hi - 1, max(lo, hi - limit + len(rows)) - 1, -1):
        b = series.bars[i]
        rows.append(kline_row(b.start_ms, bar_values(b)))
    return 0, "OK", {"symbol": symbol, "category": "linear", "list": rows[:limit]}


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
