"""MarketFeed vs the replay exchange on 127.0.0.1: every fault; bars received vs bars the exchange closed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.bybit.errors import ExchangeError, SubscribeError
from bot.bybit.events import FeedEvent, FeedReady
from bot.bybit.feed import MarketFeed
from bot.bybit.rest import RestClient, rest_client
from bot.config import Config, parse_config
from bot.core.bars import Bar, BookTop
from bot.core.stream import PartialBar
from bot.sim.replay import ReplayExchange

FAST: dict[str, Any] = {
    "rest_timeout_s": 2.0,
    "rest_max_retries": 3,
    "rest_backoff_initial_s": 0.01,
    "rest_backoff_max_s": 0.2,
    "ping_interval_s": 0.1,
    "stale_feed_s": 0.5,
    "bar_overdue_s": 0.2,
    "reconnect_backoff_initial_s": 0.01,
    "reconnect_backoff_max_s": 0.05,
    "healthy_reset_s": 0.5,
    "handshake_timeout_s": 2.0,
    "backfill_bars": 60,
}


def make_config(ex: ReplayExchange, **exchange: Any) -> Config:
    opts = {**FAST, "rest_url": ex.rest_url, "ws_url": ex.ws_url, **exchange}
    return parse_config({"market": {"symbols": list(ex.symbols), "interval": ex.interval}, "exchange": opts})


def rest_for(cfg: Config) -> RestClient:
    return rest_client(cfg.exchange)


class Run:
    """What a feed delivered, per symbol, plus every event."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.bars: dict[str, list[Bar]] = {s: [] for s in symbols}
        self.events: list[FeedEvent] = []


async def run_feed(
    ex: ReplayExchange,
    cfg: Config,
    *,
    backfill: int = 30,
    faults: Callable[[MarketFeed], Awaitable[None]] | None = None,
    on_event: Callable[[FeedEvent], Awaitable[None]] | None = None,
    timeout_s: float = 30.0,
) -> tuple[Run, MarketFeed]:
    """Run a feed until the exchange's data is done and every closed bar was delivered (or the timeout)."""
    start = {s: ex.closed_keys(s)[-backfill] for s in ex.symbols}
    run = Run(ex.symbols)
    async with rest_for(cfg) as rest, MarketFeed(cfg, rest, start_ms=start) as feed:
        fault_task = asyncio.create_task(faults(feed)) if faults is not None else None

        def complete() -> bool:
            return ex.done.is_set() and all(
                run.bars[s] and run.bars[s][-1].start_ms == ex.closed_keys(s)[-1] for s in ex.symbols
            )

        async def consume() -> None:
            async for ev in feed:
                run.events.append(ev)
                if isinstance(ev, Bar):
                    run.bars[ev.symbol].append(ev)
                if on_event is not None:
                    await on_event(ev)
                if complete():
                    return

        async with asyncio.timeout(timeout_s):
            await consume()
        if fault_task is not None:
            await fault_task
    return run, feed


def assert_exactly_once(ex: ReplayExchange, run: Run, *, backfill: int = 30) -> None:
    """Zero missing, zero duplicated, order preserved, values equal to what the exchange closed."""
    for s in ex.symbols:
        closed = ex.bars_closed(s)[-(backfill + ex.live_bars) :]
        got = run.bars[s]
        assert [b.start_ms for b in got] == [b.start_ms for b in closed], s
        assert [(b.open, b.high, b.low, b.close, b.volume) for b in got] == [
            (b.open, b.high, b.low, b.close, b.volume) for b in closed
        ]


async def drain(feed: MarketFeed) -> None:
    """Iterate the feed until it raises (10 s at most)."""
    async with asyncio.timeout(10):
        async for _ in feed:
            pass


def exchange(**kw: Any) -> ReplayExchange:
    opts: dict[str, Any] = {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "bar_seconds": 0.02,
        "updates_per_bar": 2,
        "history_bars": 200,
        "max_bars": 40,
    }
    opts.update(kw)
    return ReplayExchange(**opts)


async def test_clean_run_delivers_every_bar_once() -> None:
    """Backfill then live: each bar once in order, FeedReady once after backfill, partials and books flow."""
    async with exchange() as ex:
        run, feed = await run_feed(ex, make_config(ex))
    assert_exactly_once(ex, run)
    ready = [i for i, e in enumerate(run.events) if isinstance(e, FeedReady)]
    assert len(ready) == 1
    assert all(isinstance(e, Bar) and e.source == "rest" for e in run.events[: ready[0]])
    assert any(isinstance(e, PartialBar) for e in run.events)
    assert any(isinstance(e, BookTop) and e.bid_px < e.ask_px for e in run.events)
    assert feed.stats.ws_bars > 0
    assert feed.stats.backfilled_bars >= 60
    assert feed.stats.reconnects == 0


async def test_tickers_book_stream() -> None:
    """book_stream = "tickers" subscribes tickers.{symbol} and yields BookTop from bid1/ask1."""
    async with exchange(max_bars=10) as ex:
        run, _ = await run_feed(ex, make_config(ex, book_stream="tickers"))
    assert_exactly_once(ex, run)
    assert {c for conn in ex.connections for c in conn.topics} == {
        "kline.5.BTCUSDT",
        "kline.5.ETHUSDT",
        "tickers.BTCUSDT",
        "tickers.ETHUSDT",
    }
    assert any(isinstance(e, BookTop) for e in run.events)


async def test_drops_reconnect_resubscribe_and_backfill() -> None:
    """Repeated drops: every connection resubscribes every topic; no bar is missed or repeated."""

    async def faults(feed: MarketFeed) -> None:
        for k in range(5):
            await ex.wait_live_bars(5 + 6 * k)
            await ex.drop_connections(abort=k % 2 == 0)

    async with exchange() as ex:
        run, feed = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 5
    expected = {f"{k}.{s}" for s in ex.symbols for k in ("kline.5", "orderbook.1")}
    for conn in ex.connections:
        assert conn.subscribe_requests >= 1
        assert conn.topics == expected
    assert any(b.source == "rest" for b in run.bars["BTCUSDT"][30:]) or feed.stats.reconnects >= 5


async def test_twenty_drops_in_a_row() -> None:
    """20 connections dropped right after the upgrade, one after another: the feed recovers, bars exact."""
    async with exchange() as ex:
        ex.drop_next(20, stage="open")
        run, feed = await run_feed(ex, make_config(ex))
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 20
    assert len(ex.connections) >= 21


async def test_drop_during_handshake_and_during_resubscribe() -> None:
    """Drops during the websocket upgrade and on the (re)subscribe request are retried; bars exact."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.drop_next(2, stage="subscribe")
        await ex.drop_connections()

    async with exchange() as ex:
        ex.drop_next(3, stage="handshake")
        run, feed = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 6
    assert sum(1 for c in ex.connections if c.subscribe_requests and not c.topics) >= 2


async def test_open_but_silent_feed_with_pongs_reconnects() -> None:
    """A socket that answers pings but pushes nothing is stale (only klines prove the feed): reconnect."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.silence(answer_pings=True)

    async with exchange(bar_seconds=0.03) as ex:
        run, feed = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 1
    assert feed.stats.last_reconnect_cause is not None
    assert "stale feed" in feed.stats.last_reconnect_cause


async def test_open_but_silent_feed_without_pongs_reconnects() -> None:
    """A socket that stops answering pings is dead: reconnect on the pong timeout."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.silence(answer_pings=False)

    async with exchange(bar_seconds=0.03) as ex:
        run, feed = await run_feed(ex, make_config(ex, stale_feed_s=2.0), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 1
    assert feed.stats.last_reconnect_cause is not None
    assert "pong timeout" in feed.stats.last_reconnect_cause


async def test_quiet_market_with_pongs_only_does_not_reconnect() -> None:
    """Confirms only, one per bar, pongs in between: stale_feed_s above the bar length means no reconnect."""
    async with exchange(bar_seconds=0.25, updates_per_bar=0, max_bars=6) as ex:
        run, feed = await run_feed(ex, make_config(ex, stale_feed_s=0.6))
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects == 0
    assert feed.stats.pongs >= 8


async def test_duplicate_and_late_confirms_are_dropped_once() -> None:
    """Duplicated confirms and confirms re-sent bars later are dropped (logged); one decision per bar."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(5)
        ex.duplicate_confirms(4)
        ex.late_confirms(4, lag_bars=3)

    async with exchange() as ex:
        run, feed = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.duplicates_dropped >= 4
    assert feed.stats.late_dropped >= 4


async def test_missed_confirms_are_filled_over_rest() -> None:
    """Confirms that never arrive are detected (skip-ahead or overdue) and filled over REST in order."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(5)
        ex.skip_confirms(6)

    async with exchange() as ex:
        run, _ = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    live = [b for s in ex.symbols for b in run.bars[s][30:]]
    assert sum(b.source == "rest" for b in live) >= 5


async def test_malformed_frames_are_logged_and_skipped() -> None:
    """Bad JSON, wrong types, bad numbers and unknown topics are counted and skipped; the feed goes on."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(5)
        for frame in ex.malformed_frames("BTCUSDT"):
            await ex.inject(frame)

    async with exchange() as ex:
        run, feed = await run_feed(ex, make_config(ex), faults=faults)
    assert_exactly_once(ex, run)
    assert feed.stats.bad_frames >= 5
    assert feed.stats.unknown_topics >= 1
    assert feed.stats.reconnects == 0


async def test_consumer_stall_does_not_stop_the_heartbeat() -> None:
    """A consumer stalled 15x the ping interval (3x stale_feed_s): pings go on, no reconnect, bars exact."""
    stalled: list[int] = []

    async def on_event(ev: FeedEvent) -> None:
        if isinstance(ev, FeedReady):
            pings_before = sum(c.pings for c in ex.connections)
            await asyncio.sleep(1.5)
            stalled.append(sum(c.pings for c in ex.connections) - pings_before)

    async with exchange(bar_seconds=0.05, max_bars=40) as ex:
        run, feed = await run_feed(ex, make_config(ex), on_event=on_event)
    assert_exactly_once(ex, run)
    assert stalled
    assert stalled[0] >= 10
    assert feed.stats.reconnects == 0


async def test_queue_overflow_never_drops_confirmed_bars() -> None:
    """With a tiny queue and a slow consumer, updates are dropped but every confirmed bar arrives once."""

    async def on_event(ev: FeedEvent) -> None:
        if isinstance(ev, Bar) and ev.source == "ws":
            await asyncio.sleep(0.01)

    async with exchange(bar_seconds=0.005, updates_per_bar=4, max_bars=60) as ex:
        run, feed = await run_feed(ex, make_config(ex, feed_queue_size=16), on_event=on_event)
    assert_exactly_once(ex, run)
    assert feed.stats.dropped_updates > 0


async def test_rest_ban_stops_rest_but_not_the_websocket() -> None:
    """A 403 during a gap fill stops REST; held ws bars go out across the gap and live bars keep coming."""
    after_ban: list[Bar] = []
    banned = asyncio.Event()

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.ban()
        banned.set()
        await ex.drop_connections()

    async def on_event(ev: FeedEvent) -> None:
        if banned.is_set() and isinstance(ev, Bar):
            after_ban.append(ev)

    async with exchange() as ex:
        cfg = make_config(ex)
        start = {s: ex.closed_keys(s)[-30] for s in ex.symbols}
        async with rest_for(cfg) as rest, MarketFeed(cfg, rest, start_ms=start) as feed:
            task = asyncio.create_task(faults(feed))
            got: dict[str, list[int]] = {s: [] for s in ex.symbols}
            async with asyncio.timeout(20):
                async for ev in feed:
                    await on_event(ev)
                    if isinstance(ev, Bar):
                        got[ev.symbol].append(ev.start_ms)
                    if ex.done.is_set() and all(got[s][-1] == ex.closed_keys(s)[-1] for s in ex.symbols):
                        break
            await task
            assert rest.banned
    assert sum(1 for h in ex.rest_hits if h.status == 403) == 1
    assert feed.stats.reconnects >= 1
    assert len([b for b in after_ban if b.source == "ws"]) >= 10
    for s in ex.symbols:
        assert got[s] == sorted(set(got[s]))
        assert set(got[s]) <= set(ex.closed_keys(s))


async def test_unknown_symbol_over_rest_is_left_out_and_alone_is_fatal() -> None:
    """A symbol the exchange does not list is left out after its tries; alone it is fatal with the retMsg."""
    async with exchange(symbols=["BTCUSDT"], max_bars=3) as ex:
        opts = {**FAST, "rest_url": ex.rest_url, "ws_url": ex.ws_url}
        cfg = parse_config({"market": {"symbols": ["BTCUSDT", "ZZZUSDT"], "interval": "5"}, "exchange": opts})
        async with rest_for(cfg) as rest, MarketFeed(cfg, rest) as feed:
            async with asyncio.timeout(10):
                async for ev in feed:
                    if isinstance(ev, FeedReady):
                        break
        assert ev.symbols == ("BTCUSDT",)
        assert list(feed.excluded) == ["ZZZUSDT"]
        assert "Not supported symbols" in feed.excluded["ZZZUSDT"]
        cfg = parse_config({"market": {"symbols": ["ZZZUSDT"], "interval": "5"}, "exchange": opts})
        async with rest_for(cfg) as rest, MarketFeed(cfg, rest) as feed:
            with pytest.raises(ExchangeError, match="Not supported symbols"):
                await drain(feed)


async def test_refused_subscribe_is_a_clear_fatal_error() -> None:
    """A subscribe refused with `handler not found` (delisted symbol) raises SubscribeError with the topic."""
    async with exchange() as ex:
        ex.delist_ws("ETHUSDT")
        cfg = make_config(ex)
        async with rest_for(cfg) as rest, MarketFeed(cfg, rest) as feed:
            with pytest.raises(SubscribeError, match=r"handler not found,topic:kline\.5\.ETHUSDT"):
                await drain(feed)
        assert feed.stats.reconnects == 0


async def test_latest_backfill_when_start_is_none() -> None:
    """start_ms None backfills the latest backfill_bars closed bars, ending at the newest closed one."""
    async with exchange(symbols=["BTCUSDT"], max_bars=3) as ex:
        cfg = make_config(ex)
        async with rest_for(cfg) as rest, MarketFeed(cfg, rest) as feed:
            first: list[Bar] = []
            async with asyncio.timeout(10):
                async for ev in feed:
                    if isinstance(ev, FeedReady):
                        break
                    assert isinstance(ev, Bar)
                    first.append(ev)
    assert len(first) >= 60
    keys = ex.closed_keys("BTCUSDT")
    assert [b.start_ms for b in first] == keys[keys.index(first[0].start_ms) :][: len(first)]


async def _until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 - polls a predicate over state with no event
            await asyncio.sleep(0.002)


async def test_drop_while_gap_fill_waits_on_rate_limit_is_served_again() -> None:
    """Issue 15: the gap fill is answered 10006 twice and the websocket drops while the client waits to
    retry. The cancelled fill must be served on the next connection: every closed bar exactly once."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.rest_fault("10006", n=2, value=0.5)
        seen = len(ex.rest_hits)
        await ex.drop_connections()
        # the reconnect's gap fill is answered 10006; drop again while the retry sleeps
        await _until(lambda: any(h.ret_code == 10006 for h in ex.rest_hits[seen:]))
        await ex.drop_connections()

    async with exchange(max_bars=30) as ex:
        cfg = make_config(ex, rest_backoff_max_s=1.0, stale_feed_s=2.0)
        run, feed = await run_feed(ex, cfg, faults=faults, timeout_s=20.0)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects >= 2
    assert sum(1 for h in ex.rest_hits if h.ret_code == 10006) >= 1


async def test_gap_fill_outlasting_its_retries_is_retried_on_the_same_connection() -> None:
    """A gap fill whose 5xx answers outlast `rest_max_retries` is not fatal: the fill is retried after a
    pause on the same websocket, and every closed bar still comes out exactly once."""

    async def faults(feed: MarketFeed) -> None:
        await ex.wait_live_bars(8)
        ex.rest_fault("5xx", n=6)  # rest_max_retries=3: the first fill gives up after 4 attempts
        ex.skip_confirms(1)

    async with exchange(max_bars=30) as ex:
        cfg = make_config(ex, stale_feed_s=5.0)
        run, feed = await run_feed(ex, cfg, faults=faults, timeout_s=20.0)
    assert_exactly_once(ex, run)
    assert feed.stats.reconnects == 0
    assert sum(1 for h in ex.rest_hits if h.status >= 500) == 6
