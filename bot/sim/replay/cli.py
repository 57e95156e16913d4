"""`python -m bot replay-server`: its options and its main."""

from __future__ import annotations

import argparse
import asyncio
import json

from bot.sim.replay.server import ReplayExchange


def add_replay_args(parser: argparse.ArgumentParser) -> None:
    """Options of `python -m bot replay-server`."""
    parser.add_argument(
        "--data", default="synthetic", help="'synthetic', a CSV file, or a dir of SYMBOL_5m.csv"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port (printed)")
    parser.add_argument("--bar-seconds", type=float, default=1.0, help="real seconds per bar (0 = flat out)")
    parser.add_argument("--symbols", default="BTCUSDT", help="comma-separated symbols")
    parser.add_argument("--interval", default="5")
    parser.add_argument("--updates-per-bar", type=int, default=3)
    parser.add_argument("--history-bars", type=int, default=1000)
    parser.add_argument("--max-bars", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--clock",
        choices=("exchange", "wall"),
        default="exchange",
        help="timestamps on the data's own clock, or shifted so the replay starts at the wall clock",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=5.0, help="delay of every REST answer and ws frame (0 = none)"
    )


async def main_replay(args: argparse.Namespace) -> int:
    """Run the replay exchange until cancelled (SIGINT/SIGTERM in the caller) or the data runs out."""
    ex = ReplayExchange(
        symbols=[s.strip() for s in str(args.symbols).split(",") if s.strip()],
        interval=args.interval,
        data=args.data,
        bar_seconds=args.bar_seconds,
        updates_per_bar=args.updates_per_bar,
        history_bars=args.history_bars,
        max_bars=args.max_bars,
        seed=args.seed,
        host=args.host,
        port=args.port,
        clock=args.clock,
        latency_ms=args.latency_ms,
    )
    async with ex:
        print(json.dumps({"event": "replay_ready", "rest_url": ex.rest_url, "ws_url": ex.ws_url}), flush=True)
        await ex.done.wait()
        await asyncio.Event().wait()  # keep serving REST/pings after the data ran out, until cancelled
    return 0
