"""Bybit v5 public REST client: paginated kline history with retries, used live and by `offline fetch`.

Lifecycle: `RestClient` is an async context manager around one `aiohttp.ClientSession` (new -> open ->
closed; a closed client cannot reopen). Rules:

- retCode 10006 (rate limit): wait until `X-Bapi-Limit-Reset-Timestamp` when present, measured against the
  answer's own `time` field (so local clock skew does not matter), capped at `backoff_max_s`; without the
  header, capped exponential backoff with jitter. HTTP 5xx, 429, timeouts and connection errors: the same
  backoff. At most `max_retries` retries, then `RetriesExhaustedError` (`RateLimitError` for 10006).
- HTTP 403 (IP ban, >= 10 min): `IpBannedError` at once, no retry, and every later call fails fast without a
  request for `ban_s` seconds - REST stops, the websocket is not affected.
- Any other retCode (10001 bad params/symbol ...): `ExchangeError` with the exchange's retMsg.
- Pacing (`bot.bybit.pacing.RateWindow`, shared by every caller of the client): at most
  `[exchange] rest_requests_per_5s` requests in any 5 s (Bybit's IP limit is 600, past it HTTP 403), and
  an answer with `X-Bapi-Limit-Status: 0` holds every request until its `X-Bapi-Limit-Reset-Timestamp`.

A kline row is confirmed when `start_ms + interval_ms <= time` (the exchange clock of the answer); the still
open candle Bybit includes is dropped. `history` pages backwards with `end` (1000 rows a page), removes the
duplicate rows at page boundaries and returns bars ascending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self

import aiohttp
import msgspec

from bot.bybit.backoff import Backoff, permanent_cause
from bot.bybit.errors import (
    EndpointError,
    ExchangeError,
    IpBannedError,
    RateLimitError,
    RetriesExhaustedError,
)
from bot.bybit.log_events import BACKFILL_PAGE, REST_BANNED, REST_RETRY, get_logger
from bot.bybit.pacing import RateWindow
from bot.bybit.settings import ExchangeConfig
from bot.bybit.wire import (
    RestInstrument,
    RestInstrumentsResult,
    RestTicker,
    RestTickersResult,
    decode_rest,
    decode_rest_klines,
    decode_rest_result,
)
from bot.core.bars import Bar, interval_ms

KLINE_PATH: Final = "/v5/market/kline"
INSTRUMENTS_PATH: Final = "/v5/market/instruments-info"
TICKERS_PATH: Final = "/v5/market/tickers"
MAX_LIMIT: Final = 1000
RATE_LIMIT_CODE: Final = 10006
RESET_HEADER: Final = "X-Bapi-Limit-Reset-Timestamp"
STATUS_HEADER: Final = "X-Bapi-Limit-Status"
MAX_INSTRUMENT_PAGES: Final = 100  # a cursor that never ends is an exchange fault, not 100,000 symbols


@dataclass(frozen=True, slots=True)
class KlinePage:
    """One kline answer: confirmed `bars` ascending, the `open_start_ms` of an included open candle (or None),
    and the exchange clock `time_ms` of the answer."""

    bars: list[Bar]
    open_start_ms: int | None
    time_ms: int
    rows: int


@dataclass(frozen=True, slots=True)
class History:
    """Confirmed bars ascending, and the exchange clock (ms) of the newest answer they came from."""

    bars: list[Bar]
    time_ms: int
    pages: int


class _Retry(Exception):
    """Internal: this attempt failed in a retryable way; `wait_s` is the server-told wait, if any."""

    def __init__(self, cause: str, *, wait_s: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.wait_s = wait_s
        self.rate_limited = rate_limited


class RestClient:
    """Bybit v5 public REST (market data only, no keys).

    Args:
        base_url: e.g. "https://api.bybit.com" or "http://127.0.0.1:PORT".
        timeout_s: total timeout per request attempt.
        max_retries: retries after the first attempt for retryable failures (0 = no retry).
        backoff_initial_s: first backoff; doubles per retry, with jitter in [50%, 100%].
        backoff_max_s: cap for any wait, including a server-told rate-limit reset.
        category: Bybit category sent with every request.
        ban_s: how long an HTTP 403 stops all requests.
        page_limit: rows per history page (Bybit's maximum, 1000; smaller only for tests).
        pacer: the request pacing shared by every caller (None = unlimited; server-told holds still apply).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        category: str = "linear",
        ban_s: float = 600.0,
        page_limit: int = MAX_LIMIT,
        pacer: RateWindow | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError(
                "backoff must satisfy 0 < backoff_initial_s <= backoff_max_s, "
                f"got {backoff_initial_s}, {backoff_max_s}"
            )
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.category = category
        self.ban_s = ban_s
        if not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"page_limit must be in 1..{MAX_LIMIT}, got {page_limit}")
        self.page_limit = page_limit
        self.pacer = pacer if pacer is not None else RateWindow(None, 5.0)
        self.requests = 0
        self.retries = 0
        self._banned_until: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._log = get_logger(component="rest")

    # ---- lifecycle --------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"RestClient is {self._state}; a client opens once - create a new one")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session; the client cannot be used again."""
        self._state = "closed"
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def banned(self) -> bool:
        """True while an HTTP 403 ban is in force (no request is sent)."""
        return self._banned_until is not None and time.monotonic() < self._banned_until

    # ---- API --------------------------------------------------------------------------------------------

    async def page(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MAX_LIMIT,
    ) -> KlinePage:
        """One GET /v5/market/kline: confirmed bars ascending plus the answer's exchange time."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
        step = interval_ms(interval)
        params = {"category": self.category, "symbol": symbol, "interval": interval, "limit": str(limit)}
        if start_ms is not None:
            params["start"] = str(start_ms)
        if end_ms is not None:
            params["end"] = str(end_ms)
        what = f"GET {KLINE_PATH} {symbol} {interval} start={start_ms} end={end_ms}"
        env_time, result = await self._get(KLINE_PATH, params, what=what)
        parsed = decode_rest_klines(result, what=what)
        bars: dict[int, Bar] = {}
        open_start: int | None = None
        for row in parsed.rows:
            start = row.start
            if start + step > env_time:
                open_start = start
                continue
            bars[start] = Bar(
                symbol, start, row.open, row.high, row.low, row.close, row.volume, row.turnover, source="rest"
            )
        return KlinePage(
            bars=[bars[k] for k in sorted(bars)],
            open_start_ms=open_start,
            time_ms=env_time,
            rows=len(parsed.rows),
        )

    async def klines_page(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = MAX_LIMIT,
    ) -> list[Bar]:
        """Confirmed bars of one kline request, ascending (the open candle dropped)."""
        return (await self.page(symbol, interval, start_ms=start_ms, end_ms=end_ms, limit=limit)).bars

    async def fetch_history(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        on_page: Callable[[list[Bar]], None] | None = None,
    ) -> History:
        """All confirmed bars with `start_ms <= open time <= end_ms` (None = through the newest closed bar).

        Pages backwards with `end` (1000 rows a page). When a page is full, the ranges on both sides of it
        that can still hold closed bars are fetched too, so this is correct whichever end of a range the
        server fills a page from. `on_page` sees each page's new bars.
        """
        step = interval_ms(interval)
        found: dict[int, Bar] = {}
        todo: list[tuple[int, int | None]] = [(start_ms, end_ms)]
        time_ms = 0
        pages = 0
        newest: int | None = end_ms  # an open end is frozen at the first answer's clock, see below
        while todo:
            lo, hi = todo.pop()
            page = await self.page(symbol, interval, start_ms=lo, end_ms=hi, limit=self.page_limit)
            pages += 1
            time_ms = max(time_ms, page.time_ms)
            if newest is None:
                # "Through the newest closed bar" means newest as of the first answer: without this bound
                # a market closing bars faster than pages come back (an accelerated replay) is chased forever.
                newest = (page.time_ms // step - 1) * step
            fresh = [b for b in page.bars if b.start_ms not in found and b.start_ms >= lo]
            fresh = [b for b in fresh if hi is None or b.start_ms <= hi]
            for bar in fresh:
                found[bar.start_ms] = bar
            self._log.debug(BACKFILL_PAGE, symbol=symbol, lo_ms=lo, hi_ms=hi, rows=page.rows, new=len(fresh))
            if on_page is not None:
                on_page(fresh)
            if page.rows < self.page_limit or not page.bars:
                continue
            first, last = page.bars[0].start_ms, page.bars[-1].start_ms
            upper = last + step
            if upper + step <= page.time_ms and upper <= newest and (hi is None or upper <= hi):
                todo.append((upper, hi))
            if first - step >= lo:
                todo.append((lo, first - step))
        return History(bars=[found[k] for k in sorted(found)], time_ms=time_ms, pages=pages)

    async def history(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int,
        end_ms: int | None = None,
        on_page: Callable[[list[Bar]], None] | None = None,
    ) -> list[Bar]:
        """All confirmed bars from `start_ms` through `end_ms` (None = the newest closed one), ascending."""
        hist = await self.fetch_history(symbol, interval, start_ms=start_ms, end_ms=end_ms, on_page=on_page)
        return hist.bars

    async def instruments(self) -> list[RestInstrument]:
        """Every `instruments-info` row of the category (status `Trading`, the exchange's default), all pages:
        1000 rows a page, following `nextPageCursor` until it is empty."""
        rows: list[RestInstrument] = []
        cursor = ""
        for n in range(MAX_INSTRUMENT_PAGES):
            params = {"category": self.category, "limit": str(MAX_LIMIT)}
            if cursor:
                params["cursor"] = cursor
            what = f"GET {INSTRUMENTS_PATH} page {n + 1}"
            _, raw = await self._get(INSTRUMENTS_PATH, params, what=what)
            page = decode_rest_result(raw, RestInstrumentsResult, what=what)
            rows.extend(page.rows)
            if not page.nextPageCursor or not page.rows:
                return rows
            cursor = page.nextPageCursor
        raise ExchangeError(
            f"GET {INSTRUMENTS_PATH}: still a nextPageCursor after {MAX_INSTRUMENT_PAGES} pages "
            f"({len(rows)} rows); the exchange's cursor does not end"
        )

    async def tickers(self) -> list[RestTicker]:
        """Every REST `tickers` item of the category (24h turnover, last price), one request."""
        what = f"GET {TICKERS_PATH}"
        _, raw = await self._get(TICKERS_PATH, {"category": self.category}, what=what)
        return decode_rest_result(raw, RestTickersResult, what=what).rows

    async def server_time_ms(self) -> int:
        """The exchange clock, epoch ms (the `time` of a `/v5/market/time` answer)."""
        env_time, _ = await self._get("/v5/market/time", {}, what="GET /v5/market/time")
        return env_time

    # ---- transport --------------------------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, str], *, what: str) -> tuple[int, msgspec.Raw]:
        """GET with the retry rules; returns (exchange time ms, raw result)."""
        attempt = 0
        while True:
            try:
                return await self._attempt(path, params, what=what)
            except _Retry as retry:
                if attempt >= self.max_retries:
                    msg = f"{what}: gave up after {attempt + 1} attempts, last: {retry.cause}"
                    if retry.rate_limited:
                        raise RateLimitError(msg) from None
                    raise RetriesExhaustedError(msg) from None
                delay = retry.wait_s if retry.wait_s is not None else self._backoff.delay_s(attempt)
                self.retries += 1
                self._log.warning(
                    REST_RETRY, what=what, cause=retry.cause, delay_s=round(delay, 3), attempt=attempt
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _attempt(self, path: str, params: dict[str, str], *, what: str) -> tuple[int, msgspec.Raw]:
        if self._state != "open" or self._session is None:
            raise RuntimeError(f"RestClient is {self._state}; use `async with RestClient(...)`")
        if self.banned:
            raise IpBannedError(
                f"{what}: REST is stopped after HTTP 403 (IP ban) for up to {self.ban_s:.0f} s"
            )
        await self.pacer.acquire()
        self.requests += 1
        try:
            async with self._session.get(self.base_url + path, params=params) as resp:
                status = resp.status
                body = await resp.read()
                reset_header = resp.headers.get(RESET_HEADER)
                left_header = resp.headers.get(STATUS_HEADER)
        except TimeoutError:
            raise _Retry(f"timeout after {self.timeout_s} s") from None
        except aiohttp.ClientError as exc:
            permanent = permanent_cause(exc)
            if permanent is not None:
                raise EndpointError(f"{what}: {self.base_url}: {permanent}") from None
            if isinstance(exc, aiohttp.InvalidURL):
                raise EndpointError(f"{what}: {self.base_url}: not a valid URL ({exc})") from None
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        if status == 403:
            self._banned_until = time.monotonic() + self.ban_s
            self._log.error(REST_BANNED, what=what, ban_s=self.ban_s)
            raise IpBannedError(f"{what}: HTTP 403 - the IP is banned by Bybit (>= 10 min); REST stopped")
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status}")
        if status != 200:
            raise ExchangeError(f"{what}: expected HTTP 200, got {status}: {body[:200]!r}")
        env = decode_rest(body, what=what)
        wait_s = self._reset_wait_s(reset_header, env.time)
        if left_header is not None and left_header.strip() == "0" and wait_s is not None:
            self.pacer.hold(wait_s)  # the window is spent: nobody sends until it resets
        if env.retCode == 0:
            return env.time, env.result
        if env.retCode == RATE_LIMIT_CODE:
            raise _Retry(f"retCode 10006 {env.retMsg}", wait_s=wait_s, rate_limited=True)
        raise ExchangeError(f"{what}: retCode {env.retCode}: {env.retMsg}")

    def _reset_wait_s(self, reset_header: str | None, env_time_ms: int) -> float | None:
        """Seconds until `X-Bapi-Limit-Reset-Timestamp`, measured against the answer's own clock and capped
        at `backoff_max_s`; None without a usable header."""
        if reset_header is None:
            return None
        try:
            reset_ms = int(reset_header)
        except ValueError:
            return None
        return min(self.backoff_max_s, max(0.0, (reset_ms - env_time_ms) / 1000.0))


def rest_client(ex: ExchangeConfig) -> RestClient:
    """The process's REST client for `[exchange]` (timeouts, retries, backoff and request pacing)."""
    return RestClient(
        ex.rest_url,
        timeout_s=ex.rest_timeout_s,
        max_retries=ex.rest_max_retries,
        backoff_initial_s=ex.rest_backoff_initial_s,
        backoff_max_s=ex.rest_backoff_max_s,
        pacer=RateWindow(ex.rest_requests_per_5s, 5.0),
    )
