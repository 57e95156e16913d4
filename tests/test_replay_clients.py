"""Real third-party clients (pybit, ccxt; pinned in the dev extra) against the replay exchange on loopback.

pybit is synchronous (requests, websocket-client threads): its calls run in a worker thread while the
exchange runs on the test's loop. ccxt runs its asyncio flavour on the test's loop. Neither is modified:
pybit's HTTP session gets the loopback `endpoint`, its WebSocket the loopback `PUBLIC_WSS` template;
ccxt gets the loopback URLs through its `urls` option.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.sim.replay import WS_PATH, ReplayExchange

pybit_http = pytest.importorskip("pybit.unified_trading")
ccxt_async = pytest.importorskip("ccxt.async_support")

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture
async def ex() -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(
        symbols=SYMBOLS, bar_seconds=0.2, updates_per_bar=3, history_bars=1500, latency_ms=5.0
    ) as exchange:
        yield exchange


def http(ex: ReplayExchange) -> Any:
    session = pybit_http.HTTP(testnet=False, timeout=5, max_retries=3, retry_delay=0)
    session.endpoint = ex.rest_url
    return session


async def test_pybit_http_klines_paged_instruments_time_tickers_orderbook(ex: ReplayExchange) -> None:
    """pybit HTTP: start-only klines page forward to the newest bar; instruments, time, tickers, orderbook."""
    keys = ex.closed_keys("BTCUSDT")

    def run() -> dict[str, Any]:
        s = http(ex)
        got: list[int] = []
        start = keys[0]
        for _ in range(5):
            page = s.get_kline(category="linear", symbol="BTCUSDT", interval="5", start=start, limit=1000)
            rows = page["result"]["list"]
            got += [int(r[0]) for r in reversed(rows)]
            if len(rows) < 1000:
                break
            start = int(rows[0][0]) + 300_000
        return {
            "klines": got,
            "hourly": s.get_kline(category="linear", symbol="BTCUSDT", interval="60", limit=3),
            "instruments": s.get_instruments_info(category="linear"),
            "time": s.get_server_time(),
            "tickers": s.get_tickers(category="linear", symbol="ETHUSDT"),
            "book": s.get_orderbook(category="linear", symbol="BTCUSDT"),
        }

    out = await asyncio.to_thread(run)
    assert out["klines"][: len(keys)] == keys  # ascending, nothing missing or doubled, then the open candle
    assert len(out["klines"]) - len(keys) <= 3
    hourly = out["hourly"]["result"]["list"]
    assert [int(r[0]) % 3_600_000 for r in hourly] == [0, 0, 0]
    items = out["instruments"]["result"]["list"]
    assert [i["symbol"] for i in items] == SYMBOLS
    assert all(i["status"] == "Trading" and i["priceFilter"]["tickSize"] for i in items)
    assert int(out["time"]["result"]["timeSecond"]) == out["time"]["time"] // 1000
    ticker = out["tickers"]["result"]["list"][0]
    assert float(ticker["bid1Price"]) < float(ticker["ask1Price"])
    book = out["book"]["result"]
    assert book["s"] == "BTCUSDT"
    assert float(book["b"][0][0]) < float(book["a"][0][0])


async def test_pybit_rate_limit_reset_header_with_wall_clock() -> None:
    """With the wall clock, pybit sleeps until X-Bapi-Limit-Reset-Timestamp, then retries (sleep >= 0)."""
    async with ReplayExchange(symbols=["BTCUSDT"], bar_seconds=300.0, history_bars=50, clock="wall") as ex:
        ex.rest_fault("10006", value=0.2)

        def run() -> tuple[float, Any]:
            s = http(ex)
            t0 = time.monotonic()
            answer = s.get_server_time()
            return time.monotonic() - t0, answer

        took_s, answer = await asyncio.to_thread(run)
    assert 0.1 <= took_s < 3.0
    assert abs(answer["time"] - time.time() * 1000) < 5_000  # real speed: the wall clock


class Collected:
    """Messages a pybit callback received, per topic, with the time each arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), message))

    def topics_after(self, t: float) -> set[str]:
        with self.lock:
            return {m["topic"] for at, m in self.messages if at > t}


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `cond` (set by pybit's threads, so there is no event to await) until true."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - the condition changes in another thread
            await asyncio.sleep(0.02)


async def test_pybit_websocket_streams_survive_a_drop(ex: ReplayExchange, monkeypatch: Any) -> None:
    """pybit WebSocket: kline (served and aggregated), orderbook.1, tickers and publicTrade stream; a dropped
    connection reconnects, resubscribes and streams again; the ticker pybit merges from deltas is complete."""
    template = ex.ws_url.removesuffix(WS_PATH) + "/v5/public/{CHANNEL_TYPE}"
    monkeypatch.setattr(pybit_http, "PUBLIC_WSS", template)
    got = Collected()

    def connect() -> Any:
        ws = pybit_http.WebSocket(testnet=False, channel_type="linear", retries=5)
        ws.kline_stream(interval=5, symbol="BTCUSDT", callback=got)
        ws.kline_stream(interval=15, symbol="ETHUSDT", callback=got)
        ws.orderbook_stream(depth=1, symbol="BTCUSDT", callback=got)
        ws.ticker_stream(symbol="ETHUSDT", callback=got)
        ws.trade_stream(symbol="BTCUSDT", callback=got)
        return ws

    ws = await asyncio.to_thread(connect)
    try:
        wanted = {"kline.5.BTCUSDT", "kline.15.ETHUSDT", "orderbook.1.BTCUSDT", "tickers.ETHUSDT"}
        wanted.add("publicTrade.BTCUSDT")
        await wait_for(lambda: got.topics_after(0.0) >= wanted)
        assert await ex.drop_connections() == 1
        dropped_at = time.monotonic()
        await wait_for(lambda: len(ex.open_connections) == 1 and got.topics_after(dropped_at) >= wanted)
        assert len(ex.connections) == 2
        assert ex.open_connections[0].topics == wanted
        with got.lock:
            tickers = [m for _, m in got.messages if m["topic"] == "tickers.ETHUSDT"]
        assert len(tickers[-1]["data"]) >= 25
        assert tickers[-1]["data"]["symbol"] == "ETHUSDT"
    finally:
        await asyncio.to_thread(ws.exit)


def ccxt_bybit(ex: ReplayExchange) -> Any:
    urls = {name: ex.rest_url for name in ("spot", "futures", "v2", "public", "private")}
    return ccxt_async.bybit({"urls": {"api": urls}})


async def test_ccxt_load_markets_fetch_ohlcv_ticker_order_book(ex: ReplayExchange) -> None:
    """Unmodified ccxt: load_markets (every default market type), fetch_ohlcv with since and limit (and
    paginated), fetch_ticker, fetch_order_book, fetch_time."""
    bybit = ccxt_bybit(ex)
    try:
        markets = await bybit.load_markets()
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(markets)
        market = markets["BTC/USDT:USDT"]
        tick = float(ex.instrument("BTCUSDT").tick)
        assert market["precision"]["price"] == tick
        keys = ex.closed_keys("BTCUSDT")
        since = keys[100]
        candles = await bybit.fetch_ohlcv("BTC/USDT:USDT", "5m", since=since, limit=50)
        assert [c[0] for c in candles] == keys[100:150]
        closed = ex.bars_closed("BTCUSDT")[100]
        assert candles[0][1:6] == [closed.open, closed.high, closed.low, closed.close, closed.volume]
        hourly = await bybit.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=5)
        assert len(hourly) == 5
        assert all(c[0] % 3_600_000 == 0 for c in hourly)
        # ccxt paginates up to its own clock unless told `until`: the replay's clock is the data's (2025)
        paged = await bybit.fetch_ohlcv(
            "BTC/USDT:USDT", "5m", since=keys[0], params={"paginate": True, "until": keys[1399]}
        )
        assert [c[0] for c in paged] == keys[:1400]
        ticker = await bybit.fetch_ticker("ETH/USDT:USDT")
        assert ticker["bid"] < ticker["ask"]
        assert ticker["last"] > 0
        book = await bybit.fetch_order_book("BTC/USDT:USDT")
        assert book["bids"][0][0] < book["asks"][0][0]
        assert await bybit.fetch_time() > 0
    finally:
        await bybit.close()


async def test_ccxt_paginates_to_its_own_clock_with_the_wall_clock() -> None:
    """clock="wall": ccxt's paginate (which stops at its own clock) gets every bar from `since` to now."""
    async with ReplayExchange(symbols=["BTCUSDT"], bar_seconds=300.0, history_bars=1500, clock="wall") as ex:
        bybit = ccxt_bybit(ex)
        try:
            keys = ex.closed_keys("BTCUSDT")
            paged = await bybit.fetch_ohlcv("BTC/USDT:USDT", "5m", since=keys[0], params={"paginate": True})
        finally:
            await bybit.close()
    assert [c[0] for c in paged][: len(keys)] == keys
    assert keys[-1] + 300_000 <= time.time() * 1000
