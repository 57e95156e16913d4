"""A Bybit-v5-compatible public market on loopback: REST market endpoints and the public linear websocket,
usable by the bot, pybit and ccxt unmodified (docs/replay.md).

Driven by an accelerated clock: every bar takes `bar_seconds` real seconds (0 = as fast as the loop goes), in
which each symbol's kline topic gets `updates_per_bar` `confirm:false` pushes and then the `confirm:true`
push; coarser standard intervals are aggregated from the served bars. A seeded level-1 book and trades model
driven by the bars feeds `orderbook.1`, `tickers` and `publicTrade`. The clock is the replayed data's own
(`clock="exchange"`) or shifted to the wall clock (`clock="wall"`); websocket frames leave after
`latency_ms`. Bars come from a CSV (`start_ms,open,high,low,close,volume[,turnover]`, read lazily and
leniently by `bot.sim.csvbars`) or from `SyntheticMarket` (one seed per symbol), quantised to each symbol's
tick size and qty step. `history_bars` bars are already closed when it starts, so a client can backfill.

Fault switches for tests are methods (and `POST /_replay/<method>` with a JSON object of keyword
arguments for a separate process): drop connections (now, or the next N at handshake / open / subscribe),
stay open but silent (answering pings or not), duplicate, late and skipped confirms, malformed frames,
REST 10006 (with or without the reset header), 403, 5xx and slow answers, pause/resume of the clock.

Memory stays bounded for runs of millions of bars: REST serves the newest `keep_bars` closed bars, and the
record of what closed is a compact array of open times (`closed_keys`); `bars_closed` returns the retained
bars themselves.

Modules: `market` (data sources and the bar clock), `instruments` (tick, qty step, numbers), `klines`
(interval buckets and aggregation), `book` (the book, trades and ticker model), `faults` (the fault plan),
`frames` (wire encoding), `rest` (HTTP routes), `ws` (websocket sessions), `driver` (`ReplayClock`: the
clock task and its pushes), `server` (`ReplayExchange`), `cli` (`replay-server`).
"""

from __future__ import annotations

from bot.sim.csvbars import read_csv_bars
from bot.sim.replay.cli import add_replay_args, main_replay
from bot.sim.replay.instruments import Instrument
from bot.sim.replay.rest import RestHit
from bot.sim.replay.server import CONTROL_PREFIX, KLINE_PATH, WS_PATH, ReplayExchange
from bot.sim.replay.ws import ReplayConnection

__all__ = [
    "CONTROL_PREFIX",
    "KLINE_PATH",
    "WS_PATH",
    "Instrument",
    "ReplayConnection",
    "ReplayExchange",
    "RestHit",
    "add_replay_args",
    "main_replay",
    "read_csv_bars",
]
