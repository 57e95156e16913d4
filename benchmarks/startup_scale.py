"""Start-up at the scale of the whole exchange: time to READY for N symbols x B bars of backfill, against the
replay exchange with its rate limits on (Bybit's IP limit, 600 requests in any 5 s, answered with HTTP 403;
an API limit of 100 requests a second answered with 10006 and the X-Bapi-Limit headers).

READY is the feed's `FeedReady`: every symbol's REST backfill done (or the symbol left out), the topics
spread over websocket connections and every connection subscribed. It is what the service waits for before
`service_ready`; model loading and the ledger replay come before it and are not counted here.

    .venv/bin/python benchmarks/startup_scale.py             # 500 symbols x 300 bars, docs/performance.md
    .venv/bin/python benchmarks/startup_scale.py --symbols 200
    .venv/bin/python benchmarks/startup_scale.py --smoke     # 20 symbols, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import SMOKE_HELP

from bot.bybit.events import FeedReady
from bot.bybit.feed import MarketFeed
from bot.bybit.rest import rest_client
from bot.config import parse_config
from bot.observe import logs
from bot.sim.replay import ReplayExchange
from bot.sim.replay.rest import RateLimits


async def run(n_symbols: int, bars: int, *, concurrency: int, max_topics: int) -> dict[str, float]:
    symbols = [f"S{i:04d}USDT" for i in range(n_symbols)]
    t0 = time.perf_counter()
    async with ReplayExchange(
        symbols=symbols,
        history_bars=bars + 20,
        bar_seconds=300.0,
        updates_per_bar=0,
        book=False,
        rate_limits=RateLimits(),
        latency_ms=5.0,
    ) as ex:
        exchange_s = time.perf_counter() - t0
        cfg = parse_config(
            {
                "market": {"symbols": symbols, "interval": ex.interval},
                "exchange": {
                    "rest_url": ex.rest_url,
                    "ws_url": ex.ws_url,
                    "backfill_bars": bars,
                    "backfill_concurrency": concurrency,
                    "max_topics": max_topics,
                },
            }
        )
        t1 = time.perf_counter()
        async with rest_client(cfg.exchange) as rest, MarketFeed(cfg, rest) as feed:
            async for ev in feed:
                if isinstance(ev, FeedReady):
                    break
            ready_s = time.perf_counter() - t1
            api_hits, ip_hits = ex.rate_limit_hits
            return {
                "symbols": len(ev.symbols),
                "excluded": len(feed.excluded),
                "bars": ev.backfilled_bars,
                "connections": len(feed.connections),
                "requests": rest.requests,
                "paced_s": rest.pacer.waited_s,
                "api_10006": api_hits,
                "ip_403": ip_hits,
                "ready_s": ready_s,
                "exchange_start_s": exchange_s,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--bars", type=int, default=300, help="backfill bars per symbol (>= 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="[exchange] backfill_concurrency")
    parser.add_argument("--max-topics", type=int, default=400, help="[exchange] max_topics")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.symbols, args.bars = 20, 60
    logs.configure_logging(level="warning", fmt="console")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    r = asyncio.run(run(args.symbols, args.bars, concurrency=args.concurrency, max_topics=args.max_topics))
    print("| symbols x bars | ready s | connections | requests | paced s | 10006 | 403 | excluded |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.symbols} x {args.bars} | {r['ready_s']:.2f} | {r['connections']:.0f} | {r['requests']:.0f} "
        f"| {r['paced_s']:.2f} | {r['api_10006']:.0f} | {r['ip_403']:.0f} | {r['excluded']:.0f} |"
    )
    start_s, bars = r["exchange_start_s"], r["bars"]
    print(f"(replay exchange start, not counted: {start_s:.1f} s; bars backfilled {bars:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
