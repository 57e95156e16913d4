"""Bybit wire decoding at the edge: decimal strings become checked floats in one pass; bad values refused."""

from __future__ import annotations

import msgspec
import pytest

from bot.bybit.errors import WireError
from bot.bybit.wire import decode_klines, decode_orderbook, decode_rest_klines, decode_ticker

KLINE = (
    '[{"start":1735689600000,"end":1735689899999,"interval":"5","open":"{o}","close":"95010.5",'
    '"high":"95100","low":"94900.1","volume":"{v}","turnover":"1234.5","confirm":true,'
    '"timestamp":1735689900000}]'
)


def kline(open_: str = "95000", volume: str = "12.3") -> msgspec.Raw:
    return msgspec.Raw(KLINE.replace("{o}", open_).replace("{v}", volume).encode())


def test_kline_strings_decode_to_floats() -> None:
    (k,) = decode_klines(kline(), topic="kline.5.BTCUSDT")
    assert (k.open, k.high, k.low, k.close, k.volume, k.turnover) == (
        95000.0,
        95100.0,
        94900.1,
        95010.5,
        12.3,
        1234.5,
    )
    assert k.confirm is True


@pytest.mark.parametrize(
    ("open_", "volume", "where"),
    [
        ("abc", "1", "open"),
        ("nan", "1", "open"),
        ("inf", "1", "open"),
        ("0", "1", "open"),
        ("-5", "1", "open"),
        ("95000", "-1", "volume"),
        ("95000", "nan", "volume"),
    ],
)
def test_bad_numbers_are_refused_naming_the_field(open_: str, volume: str, where: str) -> None:
    with pytest.raises(WireError, match=rf"kline\.5\.BTCUSDT: .*\$\[0\]\.{where}"):
        decode_klines(kline(open_, volume), topic="kline.5.BTCUSDT")


def test_book_and_ticker_numbers() -> None:
    book = decode_orderbook(
        msgspec.Raw(b'{"s":"BTCUSDT","b":[["95000.1","1.5"]],"a":[["95000.2","0"]]}'), topic="t"
    )
    assert book.b == [(95000.1, 1.5)]
    assert book.a == [(95000.2, 0.0)]
    delta = decode_ticker(msgspec.Raw(b'{"symbol":"BTCUSDT","ask1Size":"3"}'), topic="t")
    assert (delta.bid1Price, delta.ask1Size) == (None, 3.0)
    with pytest.raises(WireError):
        decode_orderbook(msgspec.Raw(b'{"s":"BTCUSDT","b":[["-1","1"]],"a":[]}'), topic="t")


def test_rest_rows_decode_to_typed_klines() -> None:
    raw = msgspec.Raw(
        b'{"symbol":"BTCUSDT","category":"linear","list":[["1735689600000","1","2","0.5","1.5","10","15"]]}'
    )
    (row,) = decode_rest_klines(raw, what="GET kline").rows
    assert (row.start, row.open, row.high, row.low, row.close, row.volume, row.turnover) == (
        1735689600000, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0,
    )  # fmt: skip
    bad = msgspec.Raw(b'{"symbol":"B","category":"linear","list":[["x","1","2","0.5","1.5","10","15"]]}')
    with pytest.raises(WireError, match="GET kline"):
        decode_rest_klines(bad, what="GET kline")


def test_pushes_become_domain_values() -> None:
    """kline_events splits confirms from the forming bar; a one-sided book has no top; ticker deltas merge."""
    from bot.bybit.events import TickerTops, book_top, kline_events
    from bot.core.bars import Bar
    from bot.core.stream import PartialBar

    (k,) = decode_klines(kline(), topic="t")
    forming = msgspec.structs.replace(k, confirm=False, start=k.start + 300_000)
    items = kline_events([k, forming], symbol=SYM, interval_ms=300_000, recv_ns=7, topic="t")
    assert isinstance(items[0], Bar)
    assert items[0].recv_ns == 7
    assert isinstance(items[1], PartialBar)
    with pytest.raises(WireError, match="grid"):
        kline_events([k], symbol=SYM, interval_ms=7_000_000, recv_ns=0, topic="t")
    one_sided = decode_orderbook(msgspec.Raw(b'{"s":"BTCUSDT","b":[["1","1"]],"a":[]}'), topic="t")
    assert book_top(one_sided, symbol=SYM, ts_ms=1) is None
    tops = TickerTops()
    snap = decode_ticker(
        msgspec.Raw(b'{"symbol":"BTCUSDT","bid1Price":"10","bid1Size":"1","ask1Price":"11","ask1Size":"2"}'),
        topic="t",
    )
    assert tops.update(snap, symbol=SYM, ts_ms=1) is not None
    delta = decode_ticker(msgspec.Raw(b'{"symbol":"BTCUSDT","ask1Size":"0"}'), topic="t")
    top = tops.update(delta, symbol=SYM, ts_ms=2)
    assert top is not None
    assert (top.bid_px, top.ask_px, top.ask_sz) == (10.0, 11.0, 0.0)
    assert tops.update(delta, symbol="ETHUSDT", ts_ms=3) is None  # nothing known for that symbol yet


SYM = "BTCUSDT"
