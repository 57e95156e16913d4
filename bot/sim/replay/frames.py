"""What the replay exchange puts on the wire: topic names, kline/orderbook/tickers/publicTrade pushes, REST
kline rows, op replies.

Pure functions; numbers are strings written from the instrument's tick size and qty step (`Instrument`):
kline numbers without trailing zeros ("78540"), ticker prices with the price scale ("63561.60").
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

import msgspec

from bot.core.bars import Bar
from bot.sim.replay.instruments import Instrument, plain

_encode: Final = msgspec.json.encode

# open, high, low, close, volume, turnover
Values = tuple[float, float, float, float, float, float]


def kline_topic(interval: str, symbol: str) -> str:
    """`kline.{interval}.{symbol}`."""
    return f"kline.{interval}.{symbol}"


def orderbook_topic(symbol: str) -> str:
    """`orderbook.1.{symbol}` (top of book only)."""
    return f"orderbook.1.{symbol}"


def tickers_topic(symbol: str) -> str:
    """`tickers.{symbol}`."""
    return f"tickers.{symbol}"


def trade_topic(symbol: str) -> str:
    """`publicTrade.{symbol}`."""
    return f"publicTrade.{symbol}"


def bar_values(bar: Bar) -> Values:
    """The bar's final open, high, low, close, volume, turnover."""
    return bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover


def partial_values(bar: Bar, f: float) -> Values:
    """The bar as it looks a fraction `f` (0..1) of the way through its interval (f = 1: the bar itself)."""
    if f >= 1.0:
        return bar_values(bar)
    close = bar.open + (bar.close - bar.open) * f
    high = max(bar.open, close) + (bar.high - max(bar.open, bar.close)) * f
    low = min(bar.open, close) - (min(bar.open, bar.close) - bar.low) * f
    return bar.open, high, low, close, bar.volume * f, bar.turnover * f


def kline_numbers(inst: Instrument, values: Values) -> list[str]:
    """open, high, low, close, volume, turnover as Bybit writes them in klines (no trailing zeros)."""
    o, h, lo, c, v, t = values
    po, ph, pl, pc = (inst.price(x) for x in (o, h, lo, c))
    return [
        plain(po),
        plain(max(ph, po, pc)),
        plain(min(pl, po, pc)),
        plain(pc),
        plain(inst.qty(v)),
        plain(inst.turnover(t)),
    ]


def kline_row(inst: Instrument, start_ms: int, values: Values) -> list[str]:
    """One row of a REST `/v5/market/kline` answer: start, open, high, low, close, volume, turnover."""
    return [str(start_ms), *kline_numbers(inst, values)]


def kline_frame(
    inst: Instrument,
    start_ms: int,
    values: Values,
    *,
    interval: str,
    end_ms: int,
    ts_ms: int,
    confirm: bool,
) -> bytes:
    """A `kline` push of the candle opening at `start_ms` showing `values`, stamped `ts_ms`."""
    o, h, lo, c, v, t = kline_numbers(inst, values)
    return _encode(
        {
            "topic": kline_topic(interval, inst.symbol),
            "data": [
                {
                    "start": start_ms,
                    "end": end_ms - 1,
                    "interval": interval,
                    "open": o,
                    "close": c,
                    "high": h,
                    "low": lo,
                    "volume": v,
                    "turnover": t,
                    "confirm": confirm,
                    "timestamp": ts_ms,
                }
            ],
            "ts": ts_ms,
            "type": "snapshot",
        }
    )


def book_data(
    inst: Instrument, bid: Decimal, bid_sz: Decimal, ask: Decimal, ask_sz: Decimal, seq: int
) -> dict[str, Any]:
    """`data` of a level-1 book (the ws push and, with `ts`/`cts` added, the REST answer)."""
    return {
        "s": inst.symbol,
        "b": [[plain(bid), inst.qty_fixed(bid_sz)]],
        "a": [[plain(ask), inst.qty_fixed(ask_sz)]],
        "u": seq,
        "seq": seq,
    }


def orderbook_frame(symbol: str, data: dict[str, Any], *, ts_ms: int) -> bytes:
    """An `orderbook.1` push: on Bybit every level-1 push is a snapshot (ts before type, as captured)."""
    return _encode(
        {"topic": orderbook_topic(symbol), "ts": ts_ms, "type": "snapshot", "data": data, "cts": ts_ms}
    )


def tickers_frame(symbol: str, data: dict[str, str], *, kind: str, cs: int, ts_ms: int) -> bytes:
    """A `tickers` push: `kind` "snapshot" (every field) or "delta" (symbol + the fields that changed)."""
    return _encode({"topic": tickers_topic(symbol), "type": kind, "data": data, "cs": cs, "ts": ts_ms})


def trade_frame(symbol: str, trades: list[dict[str, Any]], *, ts_ms: int) -> bytes:
    """A `publicTrade` push of one or more trades."""
    return _encode({"topic": trade_topic(symbol), "type": "snapshot", "ts": ts_ms, "data": trades})


def op_reply(*, success: bool, ret_msg: str, conn_id: str, req_id: str, op: str) -> str:
    """A reply to a client `op` (ping, subscribe, unsubscribe), in Bybit's linear key order."""
    return json.dumps(
        {"success": success, "ret_msg": ret_msg, "conn_id": conn_id, "req_id": req_id, "op": op},
        separators=(",", ":"),
    )


def malformed_frames(interval: str, symbol: str) -> list[str]:
    """Frames a client must log and skip: bad JSON, wrong types, unknown topics, bad numbers."""
    topic = kline_topic(interval, symbol)
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
                        "interval": interval,
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
        json.dumps({"topic": orderbook_topic(symbol), "data": {"s": symbol, "b": 5}, "ts": 1}),
    ]
