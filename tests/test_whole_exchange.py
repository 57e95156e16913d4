"""The whole exchange against the replay exchange on 127.0.0.1: instruments paged with a cursor, a selection
resolved, its config error, topics sharded over connections, paced start-up backfill with a failing symbol."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_feed import FAST as FEED_FAST
from websockets.asyncio.client import connect

from bot.bybit.events import FeedReady
from bot.bybit.feed import ARGS_LIMIT_CHARS, MarketFeed, args_chars, plan_connections
from bot.bybit.pacing import RateWindow
from bot.bybit.rest import rest_client
from bot.bybit.universe import changes, resolve, resolve_config
from bot.config import Config, parse_config
from bot.core.bars import Bar
from bot.core.errors import ConfigError
from bot.sim.replay import ReplayExchange
from bot.sim.replay.instruments import listed_only
from bot.sim.replay.rest import RateLimits

FAST: dict[str, Any] = {**FEED_FAST, "rest_max_retries": 2}


def config(ex: ReplayExchange, symbols: Any, **exchange: Any) -> Config:
    opts = {**FAST, "rest_url": ex.rest_url, "ws_url": ex.ws_url, **exchange}
    return parse_config(
        {
            "market": {"symbols": symbols, "interval": ex.interval},
            "exchange": opts,
            "models": {"symbols": "any"},
        }
    )


def symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


async def test_instruments_info_pages_with_a_cursor_over_1000_instruments() -> None:
    """instruments-info pages like Bybit (500 default, limit <= 1000, a cursor); the client reads all."""
    async with ReplayExchange(symbols=["BTCUSDT"], listed=1200, max_bars=0, book=False) as ex:
        url = ex.rest_url + "/v5/market/instruments-info"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params={"category": "linear"}) as resp:
                first = await resp.json()
            assert len(first["result"]["list"]) == 500
            assert first["result"]["nextPageCursor"]
            async with http.get(url, params={"category": "linear", "limit": "1001"}) as resp:
                assert (await resp.json())["retCode"] == 10001
            async with http.get(url, params={"category": "linear", "cursor": "nonsense"}) as resp:
                assert (await resp.json())["retCode"] == 10001
        trading = {x.instrument.symbol for x in listed_only(1200) if x.status == "Trading"} | {"BTCUSDT"}
        assert len(trading) > 1000
        cfg = config(ex, ["BTCUSDT"])
        async with rest_client(cfg.exchange) as rest:
            rows = await rest.instruments()
            assert rest.requests == 2  # 1000 + the rest, following the cursor
        assert [r.symbol for r in rows] == sorted(trading)


async def test_selection_resolves_to_the_expected_set_and_follows_status() -> None:
    """{all, min_turnover_usd, top, exclude} keeps Trading USDT perpetuals by turnover; a delisting leaves."""
    async with ReplayExchange(symbols=["BTCUSDT"], listed=300, max_bars=0, book=False) as ex:
        listings = listed_only(300)
        sel = {"all": True, "min_turnover_usd": 5e6, "top": 40, "exclude": ["BTCUSDT", "L0002USDT"]}
        cfg = config(ex, sel)
        expected = [
            x.instrument.symbol
            for x in listings  # turnover falls with the index
            if x.status == "Trading"
            and x.contract_type == "LinearPerpetual"
            and x.instrument.symbol.endswith("USDT")
            and x.turnover_usd >= 5_000_000
            and x.instrument.symbol != "L0002USDT"
        ][:40]
        assert cfg.market.selection is not None
        async with rest_client(cfg.exchange) as rest:
            found = await resolve(rest, cfg.market.selection)
            assert list(found.symbols) == expected
            assert "L0039PERP" not in found.symbols  # a USDC perpetual
            assert "L0049USDT" not in found.symbols  # PreLaunch
            ex.set_status("L0000USDT", "Closed")
            again = await resolve(rest, cfg.market.selection)
        joined, left = changes(found.symbols, again.symbols)
        assert left == ["L0000USDT"]
        assert len(joined) == 1
        assert resolve_config(cfg, found).market.symbol_list == expected
        nothing = config(ex, {"all": True, "min_turnover_usd": 1e12})
        assert nothing.market.selection is not None
        async with rest_client(cfg.exchange) as rest:
            with pytest.raises(ConfigError, match=r"\$\.market\.symbols: the selection .* leaves no symbol"):
                await resolve(rest, nothing.market.selection)


def test_selection_without_a_family_for_any_symbol_is_one_config_error_exit_2(tmp_path: Path) -> None:
    """A selection with [models] symbols = "match" exits 2 with one line naming both keys, nothing written."""
    cfg = tmp_path / "sel.toml"
    cfg.write_text(
        '[market]\nsymbols = { all = true, top = 300 }\n[ledger]\npath = "state/l.sqlite"\n',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--config", str(cfg)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "$.market.symbols" in lines[0]
    assert "$.models.symbols" in lines[0]
    assert not (tmp_path / "state").exists()


async def test_subscribe_args_over_21000_chars_are_refused_naming_the_limit() -> None:
    """The replay refuses a connection's subscribe args past 21,000 characters with one error ack."""
    async with ReplayExchange(symbols=["BTCUSDT"], max_bars=0, book=False, latency_ms=0) as ex:
        topics = [f"orderbook.1.SYMBOL{i:05d}USDT" for i in range(800)]
        assert args_chars(topics) > ARGS_LIMIT_CHARS
        async with connect(ex.ws_url) as ws:
            await ws.send(json.dumps({"req_id": "big", "op": "subscribe", "args": topics}))
            ack = json.loads(await ws.recv())
        assert ack["success"] is False
        assert ack["op"] == "subscribe"
        assert ack["ret_msg"] == "args length >21000"
        assert ex.connections[0].topics == set()
    groups = [[f"kline.1.SYMBOL{i:05d}USDT", f"orderbook.1.SYMBOL{i:05d}USDT"] for i in range(500)]
    plans = plan_connections(groups, max_topics=5000)
    assert len(plans) >= 2
    assert all(args_chars([t for i in p for t in groups[i]]) <= ARGS_LIMIT_CHARS for p in plans)
    assert sorted(i for p in plans for i in p) == list(range(500))


async def test_three_connections_a_drop_on_one_delays_no_other_and_every_bar_comes_once() -> None:
    """6 symbols on 3 connections: one is dropped twice; the others never reconnect, never need REST,
    and every symbol gets every closed bar exactly once in order."""
    opts: dict[str, Any] = {"bar_seconds": 0.05, "updates_per_bar": 1, "history_bars": 100, "max_bars": 30}
    async with ReplayExchange(symbols=symbols(6), **opts) as ex:
        cfg = config(
            ex, list(ex.symbols), max_topics=4, reconnect_backoff_initial_s=0.2, reconnect_backoff_max_s=0.2
        )
        start = {s: ex.closed_keys(s)[-20] for s in ex.symbols}
        got: dict[str, list[Bar]] = {s: [] for s in ex.symbols}
        async with rest_client(cfg.exchange) as rest, MarketFeed(cfg, rest, start_ms=start) as feed:
            ready = False
            drops = 0
            dropped_at_ms = 2**62
            async with asyncio.timeout(30):
                async for ev in feed:
                    if isinstance(ev, FeedReady):
                        ready = True
                    elif isinstance(ev, Bar):
                        got[ev.symbol].append(ev)
                        if (
                            ready
                            and ev.symbol == "S000USDT"
                            and ev.source == "ws"
                            and len(got[ev.symbol]) in (25, 32)
                        ):
                            drops += await ex.drop_connections(topic="kline.5.S000USDT")
                            dropped_at_ms = min(dropped_at_ms, ev.start_ms)
                    if ex.done.is_set() and all(
                        got[s] and got[s][-1].start_ms == ex.closed_keys(s)[-1] for s in got
                    ):
                        break
        assert len(feed.connections) == 3
        assert drops == 2
        assert [c.symbols for c in feed.connections] == [tuple(symbols(6)[i : i + 2]) for i in (0, 2, 4)]
        dropped, *others = feed.connections
        assert dropped.connects == 3
        assert all(c.connects == 1 for c in others)
        for s in ex.symbols:
            keys = ex.closed_keys(s)
            assert [b.start_ms for b in got[s]] == keys[keys.index(start[s]) :], s
        for conn in others:
            for s in conn.symbols:  # live bars on the healthy connections all came from their websocket
                live = [b for b in got[s] if b.start_ms > dropped_at_ms]
                assert {b.source for b in live} == {"ws"}, s
        assert any(b.source == "rest" for b in got["S000USDT"][21:])  # the dropped one was refilled


async def test_paced_backfill_leaves_out_a_failing_symbol_and_stays_inside_the_limits() -> None:
    """30 symbols backfill at once under the replay's rate limits: the failing one is left out after its
    tries, the others are complete; no HTTP 403, and the client never outruns its own pacing."""
    limits = RateLimits(api=(30, 1.0), ip=(60, 5.0))
    opts: dict[str, Any] = {"bar_seconds": 0.2, "history_bars": 200, "max_bars": 2, "book": False}
    async with ReplayExchange(symbols=symbols(30), rate_limits=limits, **opts) as ex:
        ex.fail_symbol("S007USDT")
        cfg = config(
            ex, list(ex.symbols), rest_requests_per_5s=55, backfill_concurrency=4, book_stream="none"
        )
        async with rest_client(cfg.exchange) as rest, MarketFeed(cfg, rest) as feed:
            async with asyncio.timeout(30):
                async for ev in feed:
                    if isinstance(ev, FeedReady):
                        break
        assert list(feed.excluded) == ["S007USDT"]
        assert "HTTP 502" in feed.excluded["S007USDT"]
        assert ev.symbols == tuple(s for s in ex.symbols if s != "S007USDT")
        assert 29 * 60 <= ev.backfilled_bars <= 29 * 62  # 60 each, and the bars closed meanwhile
        assert ex.rate_limit_hits[1] == 0  # no HTTP 403
        times = sorted(h.monotonic_s for h in ex.rest_hits)
        assert max(sum(1 for t in times if t0 <= t < t0 + 5.0) for t0 in times) <= 55
        kline_hits = [h for h in ex.rest_hits if h.query.get("symbol") == "S007USDT"]
        assert sum(h.status == 502 for h in kline_hits) >= 2  # retried: 2 tries, each with its retries


async def test_rate_window_lets_at_most_limit_through_in_any_window() -> None:
    """RateWindow: at most `limit` acquisitions in any rolling window, and a hold stops everyone."""
    now = [0.0]

    async def sleep(s: float) -> None:
        now[0] += s

    win = RateWindow(3, 5.0, clock=lambda: now[0], sleep=sleep)
    stamps = []
    for _ in range(7):
        await win.acquire()
        stamps.append(now[0])
    assert stamps == [0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 10.0]
    win.hold(2.5)
    await win.acquire()
    assert now[0] == 12.5
