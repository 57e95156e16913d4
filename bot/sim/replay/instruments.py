"""Instruments of the replay exchange: tick size and qty step per symbol, and numbers written from them.

Every number the exchange puts on the wire goes through `Instrument`: prices are quantised to the tick,
quantities to the qty step (`Decimal`, half-even), and written without float artefacts. Bars are quantised
once when they enter the market, so REST, websocket and `bars_closed` agree to the last digit.

Without an explicit `(tick, qty_step)` pair the instrument is inferred from the symbol's first bars: the
decimals the data is written with (a CSV of real Bybit klines is already on its grid), or, for data that is
on no grid (the synthetic market), from the price's magnitude the way Bybit lists its perpetuals
(~50 000 -> tick 0.1 and qty step 0.001; ~3 000 -> 0.01 and 0.01; ~150 -> 0.001 and 0.1; ~2 -> 0.0001 and 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from bot.core.bars import Bar

_MAX_DECIMALS = 8
_QUOTES = ("USDT", "USDC", "USD")


def decimals(step: Decimal) -> int:
    """Digits after the point of a step ("0.10" -> 2, "1" -> 0)."""
    exp = step.as_tuple().exponent
    assert isinstance(exp, int)
    return max(-exp, 0)


def plain(x: Decimal) -> str:
    """`x` without trailing zeros or an exponent ("78540", "0.001"), as Bybit writes kline numbers."""
    s = format(x, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _written_decimals(x: float) -> int:
    text = repr(float(x))
    if "e" in text or "E" in text:
        return _MAX_DECIMALS + 1
    _, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return len(frac)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One linear perpetual: `tick` (price step) and `qty_step`, as Decimals."""

    symbol: str
    tick: Decimal
    qty_step: Decimal

    @classmethod
    def of(cls, symbol: str, tick: str, qty_step: str) -> Instrument:
        """From strings ("0.10", "0.001"); raises ValueError naming the bad one."""
        try:
            t, q = Decimal(tick), Decimal(qty_step)
        except ArithmeticError as exc:
            raise ValueError(
                f"{symbol}: expected decimal tick and qty step, got {tick!r}, {qty_step!r}"
            ) from exc
        if not (t > 0 and q > 0):
            raise ValueError(f"{symbol}: tick and qty step must be > 0, got {tick!r}, {qty_step!r}")
        return cls(symbol, t, q)

    @classmethod
    def infer(cls, symbol: str, bars: Iterable[Bar]) -> Instrument:
        """From the data: the decimals the prices and volumes are written with, else the price magnitude."""
        sample = list(bars)
        if not sample:
            return cls(symbol, Decimal("0.01"), Decimal("0.001"))
        px_dec = max(_written_decimals(v) for b in sample for v in (b.open, b.high, b.low, b.close))
        qty_dec = max(_written_decimals(b.volume) for b in sample)
        magnitude = math.floor(math.log10(max(abs(sample[0].close), 1e-8)))
        if px_dec > _MAX_DECIMALS:
            px_dec = min(max(5 - magnitude, 0), _MAX_DECIMALS)
        if qty_dec > _MAX_DECIMALS:
            qty_dec = min(max(magnitude - 1, 0), _MAX_DECIMALS)
        return cls(symbol, Decimal(1).scaleb(-px_dec), Decimal(1).scaleb(-qty_dec))

    # ---- numbers --------------------------------------------------------------------------------------

    @property
    def price_scale(self) -> int:
        """Decimals of a price."""
        return decimals(self.tick)

    @property
    def qty_scale(self) -> int:
        """Decimals of a quantity."""
        return decimals(self.qty_step)

    def price(self, x: float | Decimal) -> Decimal:
        """`x` on the tick grid (half-even)."""
        d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
        return (d / self.tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * self.tick

    def qty(self, x: float | Decimal) -> Decimal:
        """`x` on the qty-step grid (half-even), never negative."""
        d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
        q = (d / self.qty_step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * self.qty_step
        return max(q, Decimal(0))

    def turnover(self, x: float | Decimal) -> Decimal:
        """A quote amount with price + qty decimals (the exact product of an on-grid price and qty)."""
        d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
        return d.quantize(Decimal(1).scaleb(-min(self.price_scale + self.qty_scale, _MAX_DECIMALS)))

    def px_fixed(self, x: Decimal) -> str:
        """A price with `price_scale` decimals ("63561.60" for tick 0.10), as tickers print it."""
        return f"{self.price(x):.{self.price_scale}f}"

    def qty_fixed(self, x: Decimal) -> str:
        """A quantity with `qty_scale` decimals ("1.760")."""
        return f"{self.qty(x):.{self.qty_scale}f}"

    def quantise_bar(self, bar: Bar) -> Bar:
        """`bar` with prices on the tick, volume on the qty step, turnover from them (vwap ~ OHLC mean when
        the data has none)."""
        o, h, lo, c = (self.price(v) for v in (bar.open, bar.high, bar.low, bar.close))
        h, lo = max(h, o, c), min(lo, o, c)
        v = self.qty(bar.volume)
        t = Decimal(repr(bar.turnover)) if bar.turnover > 0 else v * (o + h + lo + c) / 4
        return dataclasses.replace(
            bar,
            open=float(o),
            high=float(h),
            low=float(lo),
            close=float(c),
            volume=float(v),
            turnover=float(self.turnover(t)),
        )

    # ---- REST -----------------------------------------------------------------------------------------

    def info(
        self, *, launch_ms: int, status: str = "Trading", contract_type: str = "LinearPerpetual"
    ) -> dict[str, Any]:
        """The `/v5/market/instruments-info` item (category linear) of this instrument."""
        base = self.symbol
        quote = "USDT"
        for q in _QUOTES:
            if self.symbol.endswith(q) and len(self.symbol) > len(q):
                base, quote = self.symbol[: -len(q)], q
                break
        if self.symbol.endswith("PERP"):  # Bybit's USDC perpetuals: BTCPERP, ETHPERP
            base, quote = self.symbol[:-4], "USDC"
        elif "-" in self.symbol:  # dated futures: BTCUSDT-26DEC25
            base, quote = self.symbol.split("-")[0].removesuffix("USDT"), "USDT"
        max_qty = self.qty_step * 1_000_000
        return {
            "symbol": self.symbol,
            "contractType": contract_type,
            "status": status,
            "baseCoin": base,
            "quoteCoin": quote,
            "launchTime": str(launch_ms),
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(self.price_scale),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": self.px_fixed(self.tick),
                "maxPrice": self.px_fixed(self.tick * 19_999_998),
                "tickSize": self.px_fixed(self.tick),
            },
            "lotSizeFilter": {
                "maxOrderQty": self.qty_fixed(max_qty),
                "minOrderQty": self.qty_fixed(self.qty_step),
                "qtyStep": self.qty_fixed(self.qty_step),
                "postOnlyMaxOrderQty": self.qty_fixed(max_qty),
                "maxMktOrderQty": self.qty_fixed(max_qty / 10),
                "minNotionalValue": "5",
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": quote,
            "copyTrading": "both",
            "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005",
            "isPreListing": False,
            "preListingInfo": None,
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            "displayName": "",
        }


# ---- listed-only instruments ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """An instrument the exchange lists (instruments-info, REST tickers) without serving its bars: the
    filler that makes the replay's instrument list as long as Bybit's (500+ linear perpetuals)."""

    instrument: Instrument
    status: str = "Trading"
    contract_type: str = "LinearPerpetual"
    turnover_usd: Decimal = Decimal(0)


def listed_only(n: int, *, taken: Iterable[str] = ()) -> list[Listing]:
    """`n` listings named `L0000USDT`, `L0001USDT`, ...: 24h turnover falling from 1e9 USD by 2% a row, every
    50th one `PreLaunch`, every 40th a USDC perpetual (`L0039PERP`) and every 60th a dated `LinearFutures`
    (`L0059USDT-26DEC25`), so that a selection has something to leave out. Names in `taken` are skipped."""
    used = set(taken)
    out: list[Listing] = []
    for i in range(n):
        status = "PreLaunch" if i % 50 == 49 else "Trading"
        contract = "LinearPerpetual"
        symbol = f"L{i:04d}USDT"
        if i % 40 == 39:
            symbol = f"L{i:04d}PERP"
        elif i % 60 == 59:
            symbol, contract = f"L{i:04d}USDT-26DEC25", "LinearFutures"
        if symbol in used:
            continue
        turnover = (Decimal(10) ** 9 * Decimal("0.98") ** i).quantize(Decimal("0.0001"))
        inst = Instrument(symbol, Decimal("0.0001"), Decimal("1"))
        out.append(Listing(inst, status=status, contract_type=contract, turnover_usd=turnover))
    return out
