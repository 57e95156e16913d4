"""REST client against the replay exchange (and a fixture server) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.bybit.errors import ExchangeError, IpBannedError, RateLimitError
from bot.bybit.rest import RestClient
from bot.sim.replay import ReplayExchange

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
async def ex() -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(symbols=["BTCUSDT"], bar_seconds=60.0, history_bars=2500) as exchange:
        yield exchange


def client(ex: ReplayExchange, **kw: float) -> RestClient:
    opts: dict[str, float] = {
        "timeout_s": 2.0,
        "max_retries": 3,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.5,
    }
    opts.update(kw)
    return RestClient(ex.rest_url, **opts)  # type: ignore[arg-type]


async def test_history_pages_and_drops_open_candle(ex: ReplayExchange) -> None:
    """2500 closed bars come back ascending in 3 pages of <= 1000 rows; the open candle is dropped."""
    keys = ex.closed_keys("BTCUSDT")
    async with client(ex) as rc:
        pages: list[int] = []
        hist = await rc.fetch_history(
            "BTCUSDT", "5", start_ms=keys[0], on_page=lambda b: pages.append(len(b))
        )
    assert [b.start_ms for b in hist.bars] == keys
    assert hist.pages == 3
    assert rc.requests == 3
    assert sum(pages) == 2500
    assert all(b.source == "rest" for b in hist.bars)
    assert hist.bars[-1].start_ms + 300_000 <= hist.time_ms  # the open candle was served and dropped
    sample = ex.bars_closed("BTCUSDT")[1234]
    got = hist.bars[1234]
    assert (got.open, got.high, got.low, got.close, got.volume) == (
        sample.open,
        sample.high,
        sample.low,
        sample.close,
        sample.volume,
    )


async def test_history_with_end_is_inclusive(ex: ReplayExchange) -> None:
    """start..end are inclusive open times; klines_page drops the open candle."""
    keys = ex.closed_keys("BTCUSDT")
    async with client(ex) as rc:
        bars = await rc.history("BTCUSDT", "5", start_ms=keys[10], end_ms=keys[20])
        newest = await rc.klines_page("BTCUSDT", "5", limit=5)
    assert [b.start_ms for b in bars] == keys[10:21]
    assert [b.start_ms for b in newest] == keys[-4:]  # 5 rows: 4 closed + the open candle


@pytest.fixture
async def fixture_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def kline(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        name = "rest_kline_page_older.json" if "end" in request.query else "rest_kline_page_newer.json"
        return web.Response(body=(FIXTURES / name).read_bytes(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/v5/market/kline", kline)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_overlapping_pages_are_deduplicated(fixture_server: tuple[str, list[dict[str, str]]]) -> None:
    """Overlapping fixture pages (documented format) yield each bar once; the open candle is dropped."""
    url, seen = fixture_server
    async with RestClient(url, page_limit=3, backoff_initial_s=0.01, backoff_max_s=0.1) as rc:
        bars = await rc.history("BTCUSDT", "5", start_ms=1672324800000)
    assert [b.start_ms for b in bars] == [1672324800000, 1672325100000, 1672325400000]
    assert len(seen) == 2
    assert seen[1]["end"] == "1672324800000"
    assert bars[0].close == 16677.0
    assert bars[0].turnover == 34666.4005


async def test_rate_limit_waits_until_reset_header(ex: ReplayExchange) -> None:
    """10006 with X-Bapi-Limit-Reset-Timestamp waits (reset - answer time), then succeeds."""
    ex.rest_fault("10006", value=0.3)
    async with client(ex) as rc:
        bars = await rc.klines_page("BTCUSDT", "5", limit=10)
    assert len(bars) == 9
    assert rc.retries == 1
    gap = ex.rest_hits[1].monotonic_s - ex.rest_hits[0].monotonic_s
    assert 0.28 <= gap < 1.0


async def test_rate_limit_reset_wait_is_capped(ex: ReplayExchange) -> None:
    """A reset far in the future is capped at backoff_max_s."""
    ex.rest_fault("10006", value=30.0)
    async with client(ex, backoff_max_s=0.1) as rc:
        await rc.klines_page("BTCUSDT", "5", limit=10)
    gap = ex.rest_hits[1].monotonic_s - ex.rest_hits[0].monotonic_s
    assert 0.09 <= gap < 0.5


async def test_rate_limit_without_header_backs_off_then_gives_up(ex: ReplayExchange) -> None:
    """10006 without the header uses exponential backoff; past max_retries it raises RateLimitError."""
    ex.rest_fault("10006_no_reset", n=10)
    async with client(ex, max_retries=2) as rc:
        with pytest.raises(RateLimitError, match="gave up after 3 attempts"):
            await rc.klines_page("BTCUSDT", "5")
    assert len(ex.rest_hits) == 3


async def test_403_bans_rest_without_retry(ex: ReplayExchange) -> None:
    """HTTP 403 raises IpBannedError at once and later calls fail fast without a request."""
    ex.rest_fault("403")
    async with client(ex) as rc:
        with pytest.raises(IpBannedError, match="403"):
            await rc.klines_page("BTCUSDT", "5")
        assert rc.banned
        with pytest.raises(IpBannedError):
            await rc.klines_page("BTCUSDT", "5")
    assert len(ex.rest_hits) == 1


async def test_5xx_and_slow_answers_are_retried(ex: ReplayExchange) -> None:
    """HTTP 5xx and an answer slower than the timeout are retried and the call succeeds."""
    ex.rest_fault("5xx", n=2)
    ex.rest_fault("slow", value=1.0)
    async with client(ex, timeout_s=0.3) as rc:
        bars = await rc.klines_page("BTCUSDT", "5", limit=3)
    assert len(bars) == 2
    assert rc.retries == 3


async def test_bad_params_raise_with_exchange_message(ex: ReplayExchange) -> None:
    """retCode 10001 is not retried; the error carries the exchange's retMsg."""
    async with client(ex) as rc:
        with pytest.raises(ExchangeError, match="retCode 10001: Not supported symbols"):
            await rc.klines_page("ZZZUSDT", "5")
        with pytest.raises(ExchangeError, match="Invalid period"):
            await rc.klines_page("BTCUSDT", "1")  # finer than the served 5m bars
    assert len(ex.rest_hits) == 2


async def test_lifecycle_and_argument_checks(ex: ReplayExchange) -> None:
    """A closed client cannot reopen; bad limits and timeouts say what was expected."""
    rc = client(ex)
    async with rc:
        with pytest.raises(ValueError, match=r"limit must be in 1\.\.1000"):
            await rc.klines_page("BTCUSDT", "5", limit=1001)
    with pytest.raises(RuntimeError, match="opens once"):
        await rc.__aenter__()
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        RestClient(ex.rest_url, timeout_s=0)


async def test_bar_keys_do_not_depend_on_tz(ex: ReplayExchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same history under different TZ settings (incl. DST zones) has the same keys."""
    keys = ex.closed_keys("BTCUSDT")
    results = []
    for tz in ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        async with client(ex) as rc:
            results.append([b.start_ms for b in await rc.history("BTCUSDT", "5", start_ms=keys[-300])])
    monkeypatch.undo()
    time.tzset()
    assert all(r == keys[-300:] for r in results)
