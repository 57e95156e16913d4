"""What the feed yields, and the pure translation of decoded Bybit pushes into domain values.

Kept apart from the asyncio feed (`bot.bybit.feed`) so the translation is testable and the feed is the
connection logic alone: `kline_events` turns a kline push into confirmed `Bar`s and `PartialBar`s, `book_top`
an `orderbook.1` push into a `BookTop`, and `TickerTops` merges `tickers` snapshots and deltas into one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.bybit.errors import WireError
from bot.bybit.wire import WsKline, WsOrderbook, WsTicker
from bot.core.bars import Bar, BookTop
from bot.core.stream import PartialBar


@dataclass(frozen=True, slots=True)
class FeedReady:
    """Sent once: the start-up backfill is done and the first subscribe was acknowledged."""

    symbols: tuple[str, ...]
    backfilled_bars: int


FeedEvent = Bar | BookTop | PartialBar | FeedReady


@dataclass(slots=True)
class FeedStats:
    """What the feed has done so far: monotonic counts (read them, never write them; the feed is the only
    writer) and the connection state. Consumers take deltas between polls (the service's metrics)."""

    connects: int = 0  # websocket connections opened (the first included)
    reconnects: int = 0  # connections replaced after a failure or close
    backfilled_bars: int = 0  # confirmed bars emitted from REST (start-up backfill and gap fills)
    ws_bars: int = 0  # confirmed bars emitted from the websocket
    dropped_updates: int = 0  # PartialBar/BookTop dropped because the event queue was full
    duplicates_dropped: int = 0  # confirmed bars seen again (already emitted)
    late_dropped: int = 0  # confirmed bars older than the stream's position
    gaps_skipped: int = 0  # gaps given up (REST banned): bars emitted across them
    bad_frames: int = 0  # frames that failed to decode or validate (logged, skipped)
    unknown_topics: int = 0  # pushes on a topic the feed did not subscribe
    pongs: int = 0  # heartbeat answers
    connected: bool = False  # every websocket connection is open now
    connections: int = 0  # websocket connections the topics are spread over
    open_connections: int = 0  # of them open now
    last_reconnect_cause: str | None = None  # why the newest reconnect happened; None before the first


def kline_events(
    klines: list[WsKline], *, symbol: str, interval_ms: int, recv_ns: int, topic: str
) -> list[Bar | PartialBar]:
    """A kline push's elements in order: confirmed ones as `Bar` (source ws), the forming one as
    `PartialBar`. Raises WireError for a start off the interval grid."""
    out: list[Bar | PartialBar] = []
    for k in klines:
        if k.start % interval_ms != 0:
            raise WireError(f"{topic}: expected start on the {interval_ms} ms grid, got {k.start}")
        o, h, lo, c, v, t = k.open, k.high, k.low, k.close, k.volume, k.turnover
        if k.confirm:
            out.append(Bar(symbol, k.start, o, h, lo, c, v, t, source="ws", recv_ns=recv_ns))
        else:
            out.append(PartialBar(symbol, k.start, o, h, lo, c, v, t, k.timestamp))
    return out


def book_top(book: WsOrderbook, *, symbol: str, ts_ms: int) -> BookTop | None:
    """The top of an `orderbook.1` push; None for a one-sided update (one side unknown)."""
    if not book.b or not book.a:
        return None
    (bp, bs), (ap, asz) = book.b[0], book.a[0]
    return BookTop(symbol, ts_ms, bp, bs, ap, asz)


class TickerTops:
    """Top of book from `tickers` pushes: a snapshot, then deltas carrying only what changed."""

    def __init__(self) -> None:
        self._state: dict[str, dict[str, float]] = {}

    def update(self, tk: WsTicker, *, symbol: str, ts_ms: int) -> BookTop | None:
        """Merge one push; the full top once all four fields are known, else None."""
        state = self._state.setdefault(symbol, {})
        for key, value in (
            ("bid_px", tk.bid1Price),
            ("bid_sz", tk.bid1Size),
            ("ask_px", tk.ask1Price),
            ("ask_sz", tk.ask1Size),
        ):
            if value is not None:
                state[key] = value
        if len(state) < 4:
            return None
        return BookTop(symbol, ts_ms, state["bid_px"], state["bid_sz"], state["ask_px"], state["ask_sz"])
