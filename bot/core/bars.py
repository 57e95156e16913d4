"""Market-data value types shared by the data plane, features, engine and offline datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BarSource = Literal["ws", "rest", "csv", "synthetic"]

INTERVAL_MS: dict[str, int] = {
    "1": 60_000,
    "3": 180_000,
    "5": 300_000,
    "15": 900_000,
    "30": 1_800_000,
    "60": 3_600_000,
    "120": 7_200_000,
    "240": 14_400_000,
    "360": 21_600_000,
    "720": 43_200_000,
    "D": 86_400_000,
}


def interval_ms(interval: str) -> int:
    """Bar length in ms for a Bybit kline interval string ("1", "5", "60", "D", ...)."""
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        known = sorted(INTERVAL_MS)
        raise ValueError(f"unknown Bybit kline interval {interval!r}; expected one of {known}") from None


@dataclass(frozen=True, slots=True)
class Bar:
    """One confirmed (closed) kline. Prices in quote currency, volume in base coin.

    `start_ms` is the candle open time in UTC epoch milliseconds and, with `symbol`, the bar's key.
    """

    symbol: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float = 0.0
    source: BarSource = "ws"
    #: perf_counter_ns when the websocket frame carrying the confirm was read (0 = not from a frame);
    #: for the receive-to-decision latency only, never compared or stored.
    recv_ns: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BookTop:
    """Top of book from `orderbook.1` or `tickers`: best bid/ask price and size at `ts_ms` (exchange time)."""

    symbol: str
    ts_ms: int
    bid_px: float
    bid_sz: float
    ask_px: float
    ask_sz: float

    @property
    def spread_bps(self) -> float:
        """Quoted spread relative to the mid, in basis points."""
        mid = 0.5 * (self.bid_px + self.ask_px)
        return (self.ask_px - self.bid_px) / mid * 1e4 if mid > 0 else 0.0

    @property
    def imbalance(self) -> float:
        """Top-of-book size imbalance in [-1, 1]: +1 all bids, -1 all asks."""
        total = self.bid_sz + self.ask_sz
        return (self.bid_sz - self.ask_sz) / total if total > 0 else 0.0
