"""What the replay exchange puts on the wire: topic names, kline/orderbook/tickers pushes, REST kline rows.

Pure functions over bars and books; numbers are written as Bybit writes them (strings).
"""

from __future__ import annotations

import json
from typing import Final

import msgspec

from bot.core.bars import Bar, BookTop

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


def num(x: float) -> str:
    """A number as Bybit writes it: a string."""
    return repr(float(x))


def bar_values(bar: Bar) -> Values:
    """The bar's final open, high, low, close, volume, turnover."""
    return bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover


def partial_values(bar: Bar, f: float) -> Values:
    """The bar as it looks a fraction `f` (0..1) of the way through its interval."""
    close = bar.open + (bar.close - bar.open) * f
    high = max(bar.open, close) + (bar.high - max(bar.open, bar.close)) * f
    low = min(bar.open, close) - (min(bar.open, bar.close) - bar.low) * f
    return bar.open, round(high, 8), round(low, 8), round(close, 8), bar.volume * f, bar.turnover * f


def kline_row(start_ms: int, values: Values) -> list[str]:
    """One row of a REST `/v5/market/kline` answer: start, open, high, low, close, volume, turnover."""
    return [str(start_ms), *(num(v) for v in values)]


def kline_frame(
    bar: Bar, values: Values, *, interval: str, interval_ms: int, clock_ms: int, confirm: bool
) -> bytes:
    """A `kline` push of `bar` showing `values`, stamped with the exchange clock `clock_ms`."""
    o, h, lo, c, v, t = values
    return _encode(
        {
            "topic": kline_topic(interval, bar.symbol),
            "data": [
                {
                    "start": bar.start_ms,
                    "end": bar.start_ms + interval_ms - 1,
                    "interval": interval,
                    "open": num(o),
                    "close": num(c),
                    "high": num(h),
                    "low": num(lo),
                    "volume": num(v),
                    "turnover": num(t),
                    "confirm": confirm,
                    "timestamp": clock_ms,
                }
            ],
            "ts": clock_ms,
            "type": "snapshot",
        }
    )


def orderbook_frame(symbol: str, book: BookTop, *, seq: int, clock_ms: int) -> bytes:
    """An `orderbook.1` snapshot push of the top of book."""
    return _encode(
        {
            "topic": orderbook_topic(symbol),
            "ts": clock_ms,
            "type": "snapshot",
            "data": {
                "s": symbol,
                "b": [[num(book.bid_px), num(book.bid_sz)]],
                "a": [[num(book.ask_px), num(book.ask_sz)]],
                "u": seq,
                "seq": seq,
            },
            "cts": clock_ms,
        }
    )


def tickers_frame(symbol: str, book: BookTop, *, seq: int, clock_ms: int) -> bytes:
    """A `tickers` snapshot push: last price at the mid, best bid and ask."""
    return _encode(
        {
            "topic": tickers_topic(symbol),
            "type": "snapshot",
            "data": {
                "symbol": symbol,
                "lastPrice": num(0.5 * (book.bid_px + book.ask_px)),
                "bid1Price": num(book.bid_px),
                "bid1Size": num(book.bid_sz),
                "ask1Price": num(book.ask_px),
                "ask1Size": num(book.ask_sz),
            },
            "cs": seq,
            "ts": clock_ms,
        }
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
