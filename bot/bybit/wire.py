"""Bybit v5 public wire messages: one typed struct per message, decoded once at the edge.

Websocket frames are decoded into a `WsEnvelope` first (op replies and topic pushes share one shape), then the
`data` of a topic push is decoded by topic into the matching struct and turned into domain values at once
(`Bar`, `BookTop`, `PartialBar`). Anything that does not match raises `WireError`
with what was expected and what came; the feed logs it and skips the frame.

Prices and sizes are decimal strings on the wire; the decoders turn them into checked floats (positive
and finite prices, non-negative finite sizes) in the same pass (msgspec, non-strict mode: numeric strings
to numbers), so nothing downstream re-parses a string. Times are int epoch ms.
"""

from __future__ import annotations

import sys
from typing import Annotated, Final, TypeVar

import msgspec

# `as`: an explicit re-export, as bot/bybit/feed.py imports WireError from here.
from bot.bybit.errors import WireError as WireError

#: A price: a decimal string on the wire, a positive finite float here.
Price = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]  # excludes inf and nan
#: A size, volume or turnover: non-negative and finite.
Size = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]


_T = TypeVar("_T")


# ---- websocket --------------------------------------------------------------------------------------------


class WsEnvelope(msgspec.Struct, frozen=True):
    """Any websocket frame: an op reply (`op`, `success`, `ret_msg`) or a topic push (`topic`, `data`)."""

    op: str | None = None
    success: bool | None = None
    ret_msg: str | None = None
    conn_id: str | None = None
    req_id: str | None = None
    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent


class WsKline(msgspec.Struct, frozen=True):
    """One element of a `kline.{interval}.{symbol}` push's `data` list."""

    start: int
    end: int
    interval: str
    open: Price
    close: Price
    high: Price
    low: Price
    volume: Size
    turnover: Size
    confirm: bool
    timestamp: int


class WsOrderbook(msgspec.Struct, frozen=True):
    """`data` of an `orderbook.1.{symbol}` push: `b`/`a` are `[price, size]` pairs (strings on the wire)."""

    s: str
    b: list[tuple[Price, Size]]
    a: list[tuple[Price, Size]]
    u: int = 0
    seq: int = 0


class WsTicker(msgspec.Struct, frozen=True):
    """`data` of a `tickers.{symbol}` push; a `delta` carries only the fields that changed (Bybit's names)."""

    symbol: str
    bid1Price: Price | None = None
    bid1Size: Size | None = None
    ask1Price: Price | None = None
    ask1Size: Size | None = None


_ENVELOPE: Final = msgspec.json.Decoder(WsEnvelope)
_KLINES: Final = msgspec.json.Decoder(list[WsKline], strict=False)
_ORDERBOOK: Final = msgspec.json.Decoder(WsOrderbook, strict=False)
_TICKER: Final = msgspec.json.Decoder(WsTicker, strict=False)


def decode_envelope(frame: str | bytes) -> WsEnvelope:
    """Decode a websocket text frame; raise `WireError` when it is not a JSON object of the known shape."""
    try:
        return _ENVELOPE.decode(frame)
    except msgspec.DecodeError as exc:
        raise WireError(
            f"websocket frame: expected a Bybit v5 JSON object, got {_clip(frame)!r}: {exc}"
        ) from exc


def decode_klines(raw: msgspec.Raw, *, topic: str) -> list[WsKline]:
    """Decode the `data` list of a kline push."""
    try:
        return _KLINES.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(
            f"{topic}: expected data as a list of kline objects, got {_clip(bytes(raw))!r}: {exc}"
        ) from exc


def decode_orderbook(raw: msgspec.Raw, *, topic: str) -> WsOrderbook:
    """Decode the `data` object of an `orderbook.1` push."""
    try:
        return _ORDERBOOK.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(f"{topic}: expected an orderbook object, got {_clip(bytes(raw))!r}: {exc}") from exc


def decode_ticker(raw: msgspec.Raw, *, topic: str) -> WsTicker:
    """Decode the `data` object of a `tickers` push."""
    try:
        return _TICKER.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(f"{topic}: expected a ticker object, got {_clip(bytes(raw))!r}: {exc}") from exc


# ---- REST -------------------------------------------------------------------------------------------------


class RestEnvelope(msgspec.Struct, frozen=True):
    """Every v5 REST answer: errors come with HTTP 200 and `retCode != 0`; `time` = exchange clock (ms)."""

    retCode: int
    retMsg: str
    time: int
    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent


class RestKline(msgspec.Struct, frozen=True, array_like=True):
    """One kline row `[start, open, high, low, close, volume, turnover]` (strings on the wire)."""

    start: int
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Size
    turnover: Size


class RestKlineResult(msgspec.Struct, frozen=True):
    """Kline `result`: rows newest first."""

    symbol: str
    category: str
    rows: list[RestKline] = msgspec.field(name="list")


class RestInstrument(msgspec.Struct, frozen=True):
    """One `instruments-info` item (the fields a symbol selection reads; the rest are ignored)."""

    symbol: str
    status: str
    contractType: str = ""
    quoteCoin: str = ""
    settleCoin: str = ""


class RestInstrumentsResult(msgspec.Struct, frozen=True):
    """`instruments-info` `result`: one page and the cursor of the next ("" = last page)."""

    category: str
    rows: list[RestInstrument] = msgspec.field(name="list")
    nextPageCursor: str = ""


class RestTicker(msgspec.Struct, frozen=True):
    """One REST `tickers` item (the fields a symbol selection reads)."""

    symbol: str
    turnover24h: Size = 0.0
    lastPrice: Size = 0.0


class RestTickersResult(msgspec.Struct, frozen=True):
    """REST `tickers` `result`."""

    category: str
    rows: list[RestTicker] = msgspec.field(name="list")


class RestTimeResult(msgspec.Struct, frozen=True):
    """`/v5/market/time` `result`."""

    timeSecond: int
    timeNano: int


_REST_ENVELOPE: Final = msgspec.json.Decoder(RestEnvelope)
_REST_KLINE: Final = msgspec.json.Decoder(RestKlineResult, strict=False)


def decode_rest(body: bytes, *, what: str) -> RestEnvelope:
    """Decode a REST body; raise `WireError` naming the request when it is not a v5 envelope."""
    try:
        return _REST_ENVELOPE.decode(body)
    except msgspec.DecodeError as exc:
        raise WireError(f"{what}: expected a Bybit v5 JSON envelope, got {_clip(body)!r}: {exc}") from exc


def decode_rest_klines(raw: msgspec.Raw, *, what: str) -> RestKlineResult:
    """Decode the kline `result`; raise `WireError` when it is missing or malformed."""
    if not raw:
        raise WireError(f"{what}: expected a kline result object, got none")
    try:
        return _REST_KLINE.decode(raw)
    except msgspec.DecodeError as exc:
        raise WireError(f"{what}: expected a kline result object, got {_clip(bytes(raw))!r}: {exc}") from exc


def decode_rest_result(raw: msgspec.Raw, kind: type[_T], *, what: str) -> _T:
    """Decode any other `result` into `kind`; raise `WireError` when it is missing or malformed."""
    name = kind.__name__.removeprefix("Rest").removesuffix("Result").lower()
    if not raw:
        raise WireError(f"{what}: expected a {name} result object, got none")
    try:
        return msgspec.json.decode(raw, type=kind, strict=False)
    except msgspec.DecodeError as exc:
        raise WireError(f"{what}: expected a {name} result object, got {_clip(bytes(raw))!r}: {exc}") from exc


def _clip(frame: str | bytes, n: int = 200) -> str | bytes:
    return frame if len(frame) <= n else frame[:n]
