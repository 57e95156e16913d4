"""The replay exchange as a Bybit v5 public market: instruments and numbers, aggregated klines and paging,
subscribe failures, snapshots and deltas, the wall clock and the network latency."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.bars import Bar
from bot.sim.replay import ReplayExchange
from bot.sim.replay.book import TickerState
from bot.sim.replay.instruments import Instrument, plain
from bot.sim.replay.klines import bucket_end, bucket_start, served_intervals

NUMBER = re.compile(r"^\d+(\.\d*[1-9])?$")  # no exponent, no trailing zeros (kline numbers)


def bar(close: float, volume: float) -> Bar:
    return Bar("XUSDT", 0, close, close, close, close, volume)


def test_numbers_come_from_tick_and_qty_step_not_float_repr() -> None:
    """Prices land on the tick (half-even), kline numbers drop trailing zeros, tickers keep the scale."""
    inst = Instrument.of("BTCUSDT", "0.1", "0.001")
    assert plain(inst.price(503.19450000000006)) == "503.2"
    assert plain(inst.price(74934.45)) == "74934.4"  # half-even onto the 0.1 grid
    assert plain(inst.price(78540.0)) == "78540"
    assert plain(inst.qty(0.1 + 0.2)) == "0.3"
    assert inst.px_fixed(Decimal("63561.6")) == "63561.6"
    assert Instrument.of("BTCUSDT", "0.10", "0.001").px_fixed(Decimal("63561.6")) == "63561.60"
    assert inst.qty_fixed(Decimal("1.76")) == "1.760"
    q = inst.quantise_bar(Bar("BTCUSDT", 0, 100.04, 100.26, 99.95, 100.15, 2.0004))
    assert (q.open, q.high, q.low, q.close, q.volume) == (100.0, 100.3, 100.0, 100.2, 2.0)
    assert q.turnover == float(
        Decimal("2.000") * (Decimal("100.0") * 2 + Decimal("100.3") + Decimal("100.2")) / 4
    )


def test_instrument_inferred_from_data_decimals_or_price_magnitude() -> None:
    """Data on a grid keeps it; data on none gets Bybit-like steps from the price's magnitude."""
    on_grid = Instrument.infer("BTCUSDT", [bar(65000.5, 12.345), bar(65001.0, 3.2)])
    assert (on_grid.tick, on_grid.qty_step) == (Decimal("0.1"), Decimal("0.001"))
    for price, tick, step in [(52_345.678912345, "0.1", "0.001"), (3_123.456789123, "0.01", "0.01")]:
        inst = Instrument.infer("X", [bar(price, 1.234567891234)])
        assert (inst.tick, inst.qty_step) == (Decimal(tick), Decimal(step))


def test_buckets_are_utc_aligned_and_intervals_built_from_the_served_one() -> None:
    """W opens Monday 00:00 UTC, M the 1st; only multiples of the served interval are served."""
    t = int(datetime(2025, 3, 13, 15, 47, tzinfo=UTC).timestamp() * 1000)
    assert datetime.fromtimestamp(bucket_start("W", t) / 1000, UTC) == datetime(2025, 3, 10, tzinfo=UTC)
    assert datetime.fromtimestamp(bucket_start("M", t) / 1000, UTC) == datetime(2025, 3, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(bucket_end("M", bucket_start("M", t)) / 1000, UTC) == datetime(
        2025, 4, 1, tzinfo=UTC
    )
    assert bucket_start("15", t) % 900_000 == 0
    assert served_intervals("5") == ("5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
    assert served_intervals("3") == ("3", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")


async def get(ex: ReplayExchange, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(ex.rest_url + path) as r:
        return r.status, await r.json()


def rows(answer: Any) -> list[list[str]]:
    return list(answer[1]["result"]["list"])


async def test_klines_aggregate_page_forward_from_start_and_stay_on_the_grid() -> None:
    """15-minute candles merge three 5-minute ones; start pages forward, end backward; numbers on grid."""
    async with ReplayExchange(symbols=["BTCUSDT"], bar_seconds=60.0, history_bars=600, latency_ms=0) as ex:
        base = "/v5/market/kline?category=linear&symbol=BTCUSDT"
        keys = ex.closed_keys("BTCUSDT")
        first15 = next(k for k in keys if k % 900_000 == 0)
        fives = rows(await get(ex, f"{base}&interval=5&start={first15}&limit=3"))
        fifteen = rows(await get(ex, f"{base}&interval=15&start={first15 + 60_000}&limit=1"))[0]
        assert int(fifteen[0]) == first15
        assert (fifteen[1], fifteen[4]) == (fives[-1][1], fives[0][4])  # first open, last close
        assert Decimal(fifteen[2]) == max(Decimal(r[2]) for r in fives)
        assert Decimal(fifteen[3]) == min(Decimal(r[3]) for r in fives)
        assert Decimal(fifteen[5]) == sum(Decimal(r[5]) for r in fives)
        assert Decimal(fifteen[6]) == sum(Decimal(r[6]) for r in fives)
        assert [int(r[0]) for r in fives] == [first15 + 600_000, first15 + 300_000, first15]
        forward = rows(await get(ex, f"{base}&interval=5&start={keys[0]}&limit=1000"))
        assert [int(r[0]) for r in reversed(forward)] == [*keys[:600], keys[-1] + 300_000]
        backward = rows(await get(ex, f"{base}&interval=5&end={keys[99]}&limit=10"))
        assert [int(r[0]) for r in reversed(backward)] == keys[90:100]
        bounded = rows(await get(ex, f"{base}&interval=5&start={keys[10]}&end={keys[500]}&limit=20"))
        assert [int(r[0]) for r in reversed(bounded)] == keys[10:30]
        tick = ex.instrument("BTCUSDT").tick
        for r in forward + rows(await get(ex, f"{base}&interval=D&limit=5")):
            assert all(NUMBER.match(x) for x in r[1:]), r
            assert all(Decimal(x) % tick == 0 for x in r[1:5]), r
        assert (await get(ex, f"{base}&interval=1"))[1]["retMsg"] == "Invalid period!"
        status, body = await get(ex, "/v5/market/recent-trade?category=linear&symbol=BTCUSDT")
        assert status == 404
        assert body["retCode"] == 10001


async def test_csv_turnover_is_derived_when_the_data_has_none(tmp_path: Path) -> None:
    """A CSV without turnover serves volume x mean price on the grid, not "0.0"."""
    csv = tmp_path / "BTCUSDT_5m.csv"
    lines = ["start_ms,open,high,low,close,volume"]
    lines += [f"{i * 300_000},100.5,101.0,100.0,100.5,2.5" for i in range(40)]
    csv.write_text("\n".join(lines) + "\n")
    async with ReplayExchange(symbols=["BTCUSDT"], data=csv, bar_seconds=60.0, history_bars=30) as ex:
        row = rows(await get(ex, "/v5/market/kline?category=linear&symbol=BTCUSDT&interval=5&end=0"))[0]
    assert row == ["0", "100.5", "101", "100", "100.5", "2.5", "251.25"]


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, pred: Any, limit: int = 200
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(limit):
        got.append(json.loads((await ws.receive(timeout=5)).data))
        if pred(got[-1]):
            return got
    raise AssertionError(f"no matching frame in {limit}")


async def test_subscribe_failures_one_frame_per_topic_and_nothing_subscribed() -> None:
    """Two bad topics and a good one: two failure frames, the good one not subscribed; then snapshots."""
    async with (
        ReplayExchange(symbols=["BTCUSDT"], bar_seconds=0.2, history_bars=300, latency_ms=1.0) as ex,
        aiohttp.ClientSession() as s,
        s.ws_connect(ex.ws_url) as ws,
    ):
        await ws.send_str(
            json.dumps({"op": "subscribe", "args": ["kline.1.BTCUSDT", "x.Y", "kline.5.BTCUSDT"]})
        )
        replies = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert [(r["success"], r["ret_msg"], r["req_id"]) for r in replies] == [
            (False, "error:handler not found,topic:kline.1.BTCUSDT", ""),
            (False, "error:handler not found,topic:x.Y", ""),
        ]
        assert ex.open_connections[0].topics == set()
        await ws.send_str(
            json.dumps({"op": "subscribe", "req_id": "s", "args": ["orderbook.1.BTCUSDT", "tickers.BTCUSDT"]})
        )
        first = [json.loads((await ws.receive(timeout=5)).data) for _ in range(3)]
        assert first[0]["success"] is True
        assert [(f["topic"], f["type"]) for f in first[1:]] == [
            ("orderbook.1.BTCUSDT", "snapshot"),
            ("tickers.BTCUSDT", "snapshot"),
        ]
        state = dict(first[2]["data"])
        later = await read_until(ws, lambda f: f.get("topic") == "tickers.BTCUSDT")
        delta = later[-1]
        assert delta["type"] == "delta"
        assert 1 < len(delta["data"]) < len(state)
        state |= delta["data"]
        assert Decimal(state["bid1Price"]) < Decimal(state["ask1Price"])


def test_ticker_delta_carries_only_changed_fields() -> None:
    """TickerState: the first update is everything, later ones only what changed (plus the symbol)."""
    t = TickerState()
    assert t.update({"symbol": "S", "a": "1", "b": "2"}) == {"symbol": "S", "a": "1", "b": "2"}
    assert t.update({"symbol": "S", "a": "1", "b": "3"}) == {"symbol": "S", "b": "3"}
    assert t.update({"symbol": "S", "a": "1", "b": "3"}) == {}


async def test_wall_clock_stamps_rest_ws_and_reset_header_with_wall_time() -> None:
    """clock="wall": REST time, ws ts and the 10006 reset header read as the wall clock; bars end by now."""
    async with (
        ReplayExchange(
            symbols=["BTCUSDT"], bar_seconds=300.0, updates_per_bar=0, history_bars=100, clock="wall"
        ) as ex,
        aiohttp.ClientSession() as s,
    ):
        now = time.time() * 1000
        async with s.get(ex.rest_url + "/v5/market/time") as r:
            answer = await r.json()
        assert abs(answer["time"] - now) < 2_000
        assert abs(int(answer["result"]["timeNano"]) // 1_000_000 - now) < 2_000
        assert ex.closed_keys("BTCUSDT")[-1] + 300_000 <= now + 1_000
        ex.rest_fault("10006", value=1.0)
        async with s.get(ex.rest_url + "/v5/market/time") as r:
            reset = int(r.headers["X-Bapi-Limit-Reset-Timestamp"])
        assert 0 <= reset - time.time() * 1000 <= 1_100
        async with s.ws_connect(ex.ws_url) as ws:
            await ws.send_str(json.dumps({"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}))
            frames = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert abs(frames[1]["ts"] - time.time() * 1000) < 2_000


async def test_latency_delays_websocket_frames() -> None:
    """latency_ms: a pong, an ack and its snapshot arrive no sooner, in order; latency 0 answers at once."""
    for latency_ms in (0.0, 60.0):
        async with (
            ReplayExchange(
                symbols=["BTCUSDT"], bar_seconds=60.0, history_bars=50, latency_ms=latency_ms
            ) as ex,
            aiohttp.ClientSession() as s,
            s.ws_connect(ex.ws_url) as ws,
        ):
            t0 = time.perf_counter()
            await ws.send_str(json.dumps({"op": "ping", "req_id": "p"}))
            await ws.send_str(json.dumps({"op": "subscribe", "req_id": "s", "args": ["orderbook.1.BTCUSDT"]}))
            frames = [json.loads((await ws.receive(timeout=5)).data) for _ in range(3)]
            took_s = time.perf_counter() - t0
        assert [f.get("op", f.get("topic")) for f in frames] == ["ping", "subscribe", "orderbook.1.BTCUSDT"]
        if latency_ms:
            assert took_s >= 0.055
        else:
            assert took_s < 0.5


async def test_paused_book_is_pushed_again_unchanged() -> None:
    """While the clock is paused the level-1 book is re-pushed (every 3 s on Bybit) with the same u."""
    async with (
        ReplayExchange(symbols=["BTCUSDT"], bar_seconds=60.0, history_bars=50, latency_ms=0) as ex,
        aiohttp.ClientSession() as s,
        s.ws_connect(ex.ws_url) as ws,
    ):
        ex.pause()
        await ws.send_str(json.dumps({"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}))
        ack, snap = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert ack["success"]
        again = json.loads((await ws.receive(timeout=5)).data)
        assert again["data"] == snap["data"]
        await asyncio.sleep(0)
