"""The replay exchange's level-1 book, trades and ticker: a seeded model driven by the bars.

One `BookModel` per symbol, `random.Random(seed)`, consulted at each clock step of the forming bar:

- **Trades.** The volume the bar gained since the previous step (`qty(volume * k/steps)` minus the last one,
  on the qty-step grid, so a bar's trades sum to its volume exactly) trades at the step's price (the forming
  close) in 1 to 3 prints with random sizes. Side: `Buy` when the price rose since the last trade, `Sell`
  when it fell, a coin flip when unchanged; `L` (tick direction) follows the same comparison.
- **Quotes.** After a `Buy` the ask sits at the trade price and the bid `spread` ticks below; after a `Sell`
  the bid sits at it and the ask above. `spread` is 1 tick (85 %), 2 (10 %) or 3 (5 %). Sizes are the bar's
  volume / 200 (at least one qty step) times a log-normal factor (sigma 0.75), re-drawn at every step and at
  each real-time quote refresh between steps.
- **Ticker.** Derived from the served bars: `lastPrice` is the last trade, `prevPrice24h`/`prevPrice1h` the
  open of the first bar of the trailing 24 h / 1 h window (the forming bar included), `highPrice24h`,
  `lowPrice24h`, `volume24h`, `turnover24h` over that 24 h window, `price24hPcnt` their ratio. Placeholders
  (documented in docs/replay.md): `markPrice` and `indexPrice` are the mid on the tick grid, `openInterest`
  and `openInterestValue` are 0, `fundingRate` 0.0001 every 8 h (`nextFundingTime` the next 00/08/16 UTC),
  `fundingCap` 0.005, pre-listing fields empty.
"""

from __future__ import annotations

import bisect
import random
import uuid
from decimal import Decimal
from typing import Any, Final

from bot.sim.replay.instruments import Instrument
from bot.sim.replay.market import SymbolSeries

_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000
_FUNDING_MS: Final = 8 * _HOUR_MS
_SIZE_DIVISOR: Final = 200


class BookModel:
    """Level-1 book and trade prints of one symbol (see the module docstring for the model).

    Args:
        inst: the symbol's instrument (tick, qty step).
        seed: seed of the model's random draws.
        price: the starting last price (the last closed bar's close).
        bar_volume: the volume of a typical bar (sizes scale with it).
    """

    def __init__(self, inst: Instrument, *, seed: int, price: float, bar_volume: float) -> None:
        self.inst = inst
        self._rng = random.Random(seed)
        self.last = inst.price(price)
        self.direction = "ZeroPlusTick"
        self.seq = 0  # `u`/`seq` of the book, `cs` of the ticker
        self.trade_seq = 0
        self._base = max(inst.qty(bar_volume / _SIZE_DIVISOR), inst.qty_step)
        self.bid = self.last
        self.ask = self.last + inst.tick
        self.bid_sz = self._size()
        self.ask_sz = self._size()
        self._quote(self._rng.random() < 0.5)

    # ---- the model ------------------------------------------------------------------------------------

    def _size(self) -> Decimal:
        return max(self.inst.qty(float(self._base) * self._rng.lognormvariate(0.0, 0.75)), self.inst.qty_step)

    def _quote(self, buy: bool) -> None:
        r = self._rng.random()
        spread = self.inst.tick * (1 if r < 0.85 else 2 if r < 0.95 else 3)
        if buy:
            self.ask, self.bid = self.last, self.last - spread
        else:
            self.bid, self.ask = self.last, self.last + spread
        if self.bid <= 0:
            self.bid, self.ask = self.inst.tick, self.inst.tick + spread
        self.bid_sz, self.ask_sz = self._size(), self._size()
        self.seq += 1

    def set_scale(self, bar_volume: float) -> None:
        """Sizes follow the volume of the bar now forming."""
        self._base = max(self.inst.qty(bar_volume / _SIZE_DIVISOR), self.inst.qty_step)

    def trade(self, price: float, volume: Decimal, *, ts_ms: int) -> list[dict[str, Any]]:
        """The market traded `volume` (on the qty grid) at `price` since the last step: the prints (maybe
        none), after which the book is re-quoted around the price."""
        px = self.inst.price(price)
        if px > self.last:
            buy, self.direction = True, "PlusTick"
        elif px < self.last:
            buy, self.direction = False, "MinusTick"
        else:
            buy = self._rng.random() < 0.5
            self.direction = (
                "ZeroPlusTick" if self.direction in ("PlusTick", "ZeroPlusTick") else "ZeroMinusTick"
            )
        self.last = px
        units = int(volume / self.inst.qty_step) if volume > 0 else 0
        prints: list[dict[str, Any]] = []
        n = min(self._rng.randint(1, 3), units)
        if n > 0:
            cuts = sorted(self._rng.sample(range(1, units), n - 1)) if n > 1 else []
            parts = [b - a for a, b in zip([0, *cuts], [*cuts, units], strict=True)]
            for part in parts:
                self.trade_seq += 1
                prints.append(
                    {
                        "T": ts_ms,
                        "s": self.inst.symbol,
                        "S": "Buy" if buy else "Sell",
                        "v": self.inst.qty_fixed(self.inst.qty_step * part),
                        "p": self.inst.px_fixed(px),
                        "L": self.direction,
                        "i": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                        "BT": False,
                        "RPI": False,
                        "seq": self.trade_seq,
                    }
                )
        self._quote(buy)
        return prints

    def refresh(self) -> None:
        """A quote refresh between clock steps: same prices, sizes re-drawn."""
        self.bid_sz, self.ask_sz = self._size(), self._size()
        self.seq += 1

    @property
    def mid(self) -> Decimal:
        """The mid on the tick grid."""
        return self.inst.price((self.bid + self.ask) / 2)


def _window(series: SymbolSeries, from_ms: int) -> tuple[float, float, float, float, float] | None:
    """(first open, high, low, volume, turnover) of the bars opening at or after `from_ms` (forming too)."""
    i = bisect.bisect_left(series.starts, from_ms)
    bars = [series.bars[j] for j in range(i, len(series.bars))]
    vals = [(b.open, b.high, b.low, b.volume, b.turnover) for b in bars]
    if series.forming is not None and series.forming.start_ms >= from_ms:
        o, h, lo, _, v, t = series.form_values()
        vals.append((o, h, lo, v, t))
    if not vals:
        return None
    return (
        vals[0][0],
        max(v[1] for v in vals),
        min(v[2] for v in vals),
        sum(v[3] for v in vals),
        sum(v[4] for v in vals),
    )


def ticker_fields(
    series: SymbolSeries, book: BookModel, *, now_ms: int, rest: bool = False
) -> dict[str, str]:
    """Every field of a linear `tickers` item at `now_ms` (`rest`: the REST answer's extra fields too)."""
    inst = book.inst
    day = _window(series, now_ms - _DAY_MS + 1)
    hour = _window(series, now_ms - _HOUR_MS + 1)
    last = book.last
    prev24 = inst.price(day[0]) if day else last
    prev1h = inst.price(hour[0]) if hour else last
    pcnt = (last / prev24 - 1).quantize(Decimal("0.000001")) if prev24 > 0 else Decimal(0)
    four = Decimal("0.0001")
    out = {
        "symbol": inst.symbol,
        "price24hPcnt": f"{pcnt:f}",
        "lastPrice": inst.px_fixed(last),
        "prevPrice24h": inst.px_fixed(prev24),
        "highPrice24h": inst.px_fixed(inst.price(day[1]) if day else last),
        "lowPrice24h": inst.px_fixed(inst.price(day[2]) if day else last),
        "prevPrice1h": inst.px_fixed(prev1h),
        "markPrice": inst.px_fixed(book.mid),
        "indexPrice": inst.px_fixed(book.mid),
        "openInterest": "0",
        "openInterestValue": "0.00",
        "turnover24h": f"{Decimal(repr(day[4] if day else 0.0)).quantize(four):f}",
        "volume24h": f"{Decimal(repr(day[3] if day else 0.0)).quantize(four):f}",
        "fundingIntervalHour": "8",
        "fundingCap": "0.005",
        "singleOpenInterest": "0",
        "singleOpenInterestValue": "0.00",
        "nextFundingTime": str((now_ms // _FUNDING_MS + 1) * _FUNDING_MS),
        "fundingRate": "0.0001",
        "bid1Price": inst.px_fixed(book.bid),
        "bid1Size": inst.qty_fixed(book.bid_sz),
        "ask1Price": inst.px_fixed(book.ask),
        "ask1Size": inst.qty_fixed(book.ask_sz),
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
    }
    if not rest:
        out = {"symbol": inst.symbol, "tickDirection": book.direction, **out}
        return out
    del out["singleOpenInterest"], out["singleOpenInterestValue"]
    out |= {
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "basis": "",
        "basisRateYear": "",
    }
    return out


class TickerState:
    """The last ticker pushed for one symbol: `update` returns the fields that changed (the delta)."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def update(self, fields: dict[str, str]) -> dict[str, str]:
        """Store `fields`; return `symbol` plus every field whose value changed (only `symbol` = none)."""
        delta = {k: v for k, v in fields.items() if self.fields.get(k) != v}
        self.fields = dict(fields)
        delta.pop("symbol", None)
        return {"symbol": fields["symbol"], **delta} if delta else {}
