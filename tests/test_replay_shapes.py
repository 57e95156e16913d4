"""Golden shapes: every message the replay exchange sends has the keys and value types of a real Bybit v5
sample in ../shared/data/bybit_protocol (values are not compared). Messages without a stored sample
(instruments-info, publicTrade) are checked against the documented fields written out here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.sim.replay import ReplayExchange

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "bybit_protocol"

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} not present")


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def shape(x: Any) -> Any:
    """Keys and value types, recursively (a list by its first element)."""
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(x[0])] if x else []
    return type(x).__name__


def assert_shape(ours: Any, theirs: Any) -> None:
    assert shape(ours) == shape(theirs)


# Documented fields (bybit-exchange/docs v5/market/instrument and v5/websocket/public/trade) with types.
INSTRUMENT_DOC = {
    "symbol": "str",
    "contractType": "str",
    "status": "str",
    "baseCoin": "str",
    "quoteCoin": "str",
    "launchTime": "str",
    "deliveryTime": "str",
    "deliveryFeeRate": "str",
    "priceScale": "str",
    "leverageFilter": {"minLeverage": "str", "maxLeverage": "str", "leverageStep": "str"},
    "priceFilter": {"minPrice": "str", "maxPrice": "str", "tickSize": "str"},
    "lotSizeFilter": {
        "maxOrderQty": "str",
        "minOrderQty": "str",
        "qtyStep": "str",
        "postOnlyMaxOrderQty": "str",
    },
    "unifiedMarginTrade": "bool",
    "fundingInterval": "int",
    "settleCoin": "str",
}
TRADE_DOC = {"T": "int", "s": "str", "S": "str", "v": "str", "p": "str", "L": "str", "i": "str", "BT": "bool"}


def contains(ours: Any, doc: dict[str, Any]) -> bool:
    """Every documented key is present with its type (nested dicts likewise)."""
    got = shape(ours)
    for key, want in doc.items():
        if key not in got:
            return False
        if isinstance(want, dict):
            if not contains(ours[key], want):
                return False
        elif got[key] != want:
            return False
    return True


@pytest.fixture
async def ex() -> AsyncIterator[ReplayExchange]:
    async with ReplayExchange(
        symbols=["BTCUSDT"], bar_seconds=0.1, updates_per_bar=3, history_bars=300, latency_ms=1.0
    ) as exchange:
        yield exchange


async def get(ex: ReplayExchange, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(ex.rest_url + path) as r:
        return await r.json()


async def test_rest_answers_have_the_sample_shapes(ex: ReplayExchange) -> None:
    """kline, time, orderbook, tickers, errors 10001 and 10006: keys and types of the real samples."""
    kline = await get(ex, "/v5/market/kline?category=linear&symbol=BTCUSDT&interval=5&limit=3")
    assert_shape(kline, sample("rest_kline_ok_inverse_BTCUSD_60__bybit_docs.json"))
    assert_shape(await get(ex, "/v5/market/time"), sample("rest_server_time__bybit_docs.json"))
    book = await get(ex, "/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=1")
    assert_shape(book, sample("rest_orderbook_ok__bybit_docs.json"))
    tickers = await get(ex, "/v5/market/tickers?category=linear&symbol=BTCUSDT")
    assert_shape(tickers, sample("rest_tickers_ok_inverse_BTCUSD__bybit_docs.json"))
    bad = await get(ex, "/v5/market/kline?category=linear&symbol=BTCUSDT&interval=3d")
    assert_shape(bad, sample("rest_kline_error_10001_invalid_period__captured_2025-11-11.json"))
    assert bad["retMsg"] == "Invalid period!"
    ex.rest_fault("10006", value=0.1)
    limited = await get(ex, "/v5/market/time")
    assert_shape(limited, sample("rest_error_10006_too_many_visits__captured_2023-09-05.json"))
    missing = await get(ex, "/v5/market/nothing-here")
    assert_shape(missing, sample("rest_error_10001_symbol_invalid__captured_testnet_2023-06-30.json"))


async def test_instruments_info_has_the_documented_fields(ex: ReplayExchange) -> None:
    """instruments-info: every documented field of a linear instrument, with its type."""
    answer = await get(ex, "/v5/market/instruments-info?category=linear")
    assert set(answer["result"]) == {"category", "list", "nextPageCursor"}
    assert contains(answer["result"]["list"][0], INSTRUMENT_DOC)


async def frames_until(ws: aiohttp.ClientWebSocketResponse, want: set[str]) -> dict[str, dict[str, Any]]:
    """Read frames until one of each kind in `want` came; kind = topic kind + type, or op + success."""
    seen: dict[str, dict[str, Any]] = {}
    async for msg in ws:
        frame = json.loads(msg.data)
        if "topic" in frame:
            kind = f"{frame['topic'].split('.')[0]}:{frame.get('type')}"
        else:
            kind = f"{frame['op']}:{frame['success']}"
        seen.setdefault(kind, frame)
        if want <= set(seen):
            return seen
    raise AssertionError(f"closed before {want - set(seen)}")


async def test_websocket_frames_have_the_sample_shapes(ex: ReplayExchange) -> None:
    """Acks, pong, failure, kline, orderbook.1, ticker snapshot and delta, publicTrade: sample shapes."""
    async with aiohttp.ClientSession() as s, s.ws_connect(ex.ws_url) as ws:
        topics = ["kline.5.BTCUSDT", "orderbook.1.BTCUSDT", "tickers.BTCUSDT", "publicTrade.BTCUSDT"]
        await ws.send_str(json.dumps({"req_id": "t1", "op": "subscribe", "args": topics}))
        await ws.send_str(json.dumps({"req_id": "e6", "op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}))
        await ws.send_str(json.dumps({"req_id": "p1", "op": "ping"}))
        want = {"subscribe:True", "subscribe:False", "ping:True", "kline:snapshot", "orderbook:snapshot"}
        want |= {"tickers:snapshot", "tickers:delta", "publicTrade:snapshot"}
        seen = await frames_until(ws, want)
    assert_shape(seen["subscribe:True"], sample("ws_subscribe_ack_linear__captured_2026-08-13.json"))
    assert_shape(seen["ping:True"], sample("ws_pong_linear__captured_2026-08-13.json"))
    failure = seen["subscribe:False"]
    assert_shape(failure, sample("ws_subscribe_fail_already_subscribed__captured_2026-09-23_relay.json"))
    assert failure["ret_msg"] == "error:already subscribed,topic:orderbook.1.BTCUSDT"
    assert_shape(seen["kline:snapshot"], sample("ws_kline_push_confirm_false__bybit_docs.json"))
    book = seen["orderbook:snapshot"]
    assert_shape(book, sample("ws_orderbook1_snapshot_linear_BTCUSDT__captured_2026-08-13.json"))
    assert list(book) == ["topic", "ts", "type", "data", "cts"]  # level 1: ts before type, as captured
    snap = seen["tickers:snapshot"]
    assert_shape(snap, sample("ws_ticker_linear_snapshot_BTCUSDT__captured_2026-08-13.json"))
    delta = sample("ws_ticker_linear_delta_BTCUSDT__captured_2026-08-13.json")
    ours = seen["tickers:delta"]
    assert set(ours) == set(delta)
    assert shape(ours["cs"]) == "int"
    assert shape(ours["ts"]) == "int"
    assert ours["data"]["symbol"] == "BTCUSDT"
    assert set(ours["data"]) < set(snap["data"])
    assert all(isinstance(v, str) for v in ours["data"].values())
    trade = seen["publicTrade:snapshot"]
    assert set(trade) == {"topic", "type", "ts", "data"}
    assert contains(trade["data"][0], TRADE_DOC)
