"""Data-plane figures through the loopback replay exchange: bars/s, and reconnect-to-first-bar time.

    .venv/bin/python benchmarks/feed_throughput.py --bars 200000 --symbols 1 --updates 0
    .venv/bin/python benchmarks/feed_throughput.py --bars 1000000   # >1M bars, bounded memory
    .venv/bin/python benchmarks/feed_throughput.py --reconnects 30
    .venv/bin/python benchmarks/feed_throughput.py --smoke           # 2,000 bars and 2 reconnects: seconds

Throughput: the exchange runs flat out (`bar_seconds=0`), a `MarketFeed` consumes every event, and bars/s is
counted from `FeedReady` to the last confirmed bar; the delivered keys are compared with the exchange's
record (zero missing, zero duplicated). Reconnect: the exchange closes a bar every 10 ms; the benchmark drops
the websocket (TCP abort) and times drop -> first bar delivered after the new connection was made (backoff,
handshake, resubscribe and REST gap fill included), with reconnect backoff 10..50 ms as in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import time
from typing import Any

import structlog
from _smoke import SMOKE_HELP  # benchmarks/, beside this script

from bot.bybit.events import FeedReady
from bot.bybit.feed import MarketFeed
from bot.bybit.rest import RestClient
from bot.config import Config, parse_config
from bot.core.bars import Bar
from bot.sim.replay import ReplayExchange


def _config(ex: ReplayExchange, **exchange: Any) -> Config:
    opts: dict[str, Any] = {
        "rest_url": ex.rest_url,
        "ws_url": ex.ws_url,
        "rest_backoff_initial_s": 0.01,
        "rest_backoff_max_s": 0.2,
        "ping_interval_s": 1.0,
        "stale_feed_s": 5.0,
        "bar_overdue_s": 1.0,
        "reconnect_backoff_initial_s": 0.01,
        "reconnect_backoff_max_s": 0.05,
        "healthy_reset_s": 0.5,
        "backfill_bars": 60,
        "book_stream": "none",
        **exchange,
    }
    return parse_config({"market": {"symbols": list(ex.symbols), "interval": ex.interval}, "exchange": opts})


def _rest(cfg: Config) -> RestClient:
    e = cfg.exchange
    return RestClient(
        e.rest_url, backoff_initial_s=e.rest_backoff_initial_s, backoff_max_s=e.rest_backoff_max_s
    )


async def throughput(n_bars: int, n_symbols: int, updates: int) -> dict[str, Any]:
    symbols = [f"SYM{i}USDT" for i in range(n_symbols)]
    ex = ReplayExchange(
        symbols=symbols,
        bar_seconds=0.0,
        updates_per_bar=updates,
        history_bars=100,
        max_bars=n_bars,
        book=False,
    )
    async with ex:
        ex.pause()
        cfg = _config(ex)
        start = {s: ex.closed_keys(s)[-10] for s in symbols}
        counts = dict.fromkeys(symbols, 0)
        last = dict.fromkeys(symbols, 0)
        in_order = True
        t_ready = 0.0
        async with _rest(cfg) as rest, MarketFeed(cfg, rest, start_ms=start) as feed:
            async for ev in feed:
                if isinstance(ev, FeedReady):
                    t_ready = time.perf_counter()
                    ex.resume()
                elif isinstance(ev, Bar):
                    in_order &= ev.start_ms > last[ev.symbol]
                    last[ev.symbol] = ev.start_ms
                    counts[ev.symbol] += 1
                    if ex.done.is_set() and all(last[s] == ex.closed_keys(s)[-1] for s in symbols):
                        break
            elapsed = time.perf_counter() - t_ready
            reconnects = feed.stats.reconnects
        exact = all(counts[s] == 10 + n_bars for s in symbols) and in_order
        live = n_bars * n_symbols
    return {
        "bench": "throughput",
        "bars": live,
        "symbols": n_symbols,
        "updates_per_bar": updates,
        "frames": live * (updates + 1),
        "seconds": round(elapsed, 3),
        "bars_per_s": round(live / elapsed, 1),
        "frames_per_s": round(live * (updates + 1) / elapsed, 1),
        "exactly_once_in_order": exact,
        "reconnects": reconnects,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


async def reconnect(n: int) -> dict[str, Any]:
    ex = ReplayExchange(
        symbols=["BTCUSDT"], bar_seconds=0.01, updates_per_bar=1, history_bars=100, book=False
    )
    to_first_bar: list[float] = []
    async with ex:
        cfg = _config(ex)
        async with (
            _rest(cfg) as rest,
            MarketFeed(cfg, rest, start_ms={"BTCUSDT": ex.closed_keys("BTCUSDT")[-10]}) as feed,
        ):
            it = feed.__aiter__()
            while not isinstance(await it.__anext__(), FeedReady):
                pass
            for _ in range(n):
                await asyncio.sleep(0.05)
                # drain what is queued so the next bar seen is one delivered after the drop
                while not feed._queue.empty():
                    await it.__anext__()
                connects = feed.stats.connects
                t0 = time.perf_counter()
                await ex.drop_connections(abort=True)
                while True:
                    ev = await it.__anext__()
                    if isinstance(ev, Bar) and feed.stats.connects > connects:
                        to_first_bar.append(time.perf_counter() - t0)
                        break
            reconnects = feed.stats.reconnects

    def q(xs: list[float], p: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1)

    return {
        "bench": "reconnect",
        "drops": n,
        "reconnects": reconnects,
        "bar_seconds": ex.bar_seconds,
        "drop_to_first_bar_on_new_connection_ms": {
            "median": round(statistics.median(to_first_bar) * 1000, 1),
            "p95": q(to_first_bar, 0.95),
            "max": round(max(to_first_bar) * 1000, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=50_000)
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--updates", type=int, default=0, help="confirm:false pushes per bar")
    parser.add_argument("--reconnects", type=int, default=0, help="also run N drop/reconnect cycles")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 2,000 bars, 2 reconnects")
    args = parser.parse_args()
    if args.smoke:
        args.bars, args.reconnects = 2_000, 2
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.bars > 0:
        print(json.dumps(asyncio.run(throughput(args.bars, args.symbols, args.updates))), flush=True)
    if args.reconnects > 0:
        print(json.dumps(asyncio.run(reconnect(args.reconnects))), flush=True)


if __name__ == "__main__":
    main()
