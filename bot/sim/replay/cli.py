"""`python -m bot replay-server`: its options and its main.

Exit codes (docs/errors.md): 2 for a bad option (a `--data` that does not exist among them) or a
`--host`/`--port` it cannot listen on, before it serves; 1 for bad data: a directory without a symbol's
CSV, a file that is not a klines CSV, a bad row (the file and line are named; met while serving, the
exchange stops instead of freezing its clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
from pathlib import Path

from bot.core.bars import INTERVAL_MS
from bot.core.errors import ConfigError
from bot.sim.replay.server import ReplayExchange

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


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
    parser.add_argument(
        "--no-book", action="store_true", help="push no orderbook/tickers updates (klines only)"
    )


def check_replay_args(args: argparse.Namespace) -> list[str]:
    """Range-check the options before anything starts (ConfigError naming the option); returns the symbols."""
    for flag, value, zero in (
        ("--bar-seconds", args.bar_seconds, "flat out"),
        ("--latency-ms", args.latency_ms, "none"),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{flag}: expected a finite number >= 0 (0 = {zero}), got {value}")
    for flag, number, least in (
        ("--updates-per-bar", args.updates_per_bar, 0),
        ("--history-bars", args.history_bars, 0),
        ("--max-bars", 1 if args.max_bars is None else args.max_bars, 1),
        ("--seed", args.seed, 0),
    ):
        if number < least:
            raise ConfigError(f"{flag}: expected an integer >= {least}, got {number}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 0..65535 (0 = any free port), got {args.port}")
    if args.interval not in INTERVAL_MS:
        raise ConfigError(f"--interval: expected one of {sorted(INTERVAL_MS)}, got {args.interval!r}")
    symbols = [s.strip() for s in str(args.symbols).split(",") if s.strip()]
    bad = [s for s in symbols if not _SYMBOL.match(s)]
    if not symbols or bad:
        raise ConfigError(
            f"--symbols: expected comma-separated symbols like BTCUSDT,ETHUSDT, got {args.symbols!r}"
        )
    if args.data != "synthetic" and not Path(args.data).exists():
        raise ConfigError(
            f"--data {args.data}: no such file or directory; expected 'synthetic', a klines CSV or a "
            "directory of SYMBOL_5m.csv files"
        )
    return symbols


async def main_replay(args: argparse.Namespace) -> int:
    """Run the replay exchange until cancelled (SIGINT/SIGTERM in the caller) or the data runs out."""
    symbols = check_replay_args(args)
    ex = _exchange(args, symbols)
    await _start(ex, args)
    try:
        print(json.dumps({"event": "replay_ready", "rest_url": ex.rest_url, "ws_url": ex.ws_url}), flush=True)
        await ex.done.wait()
        await asyncio.Event().wait()  # keep serving REST/pings after the data ran out, until cancelled
    finally:
        await ex.stop()
    return 0


async def _start(ex: ReplayExchange, args: argparse.Namespace) -> None:
    """`ex.start()`; a host or port it cannot listen on is a ConfigError naming them (and the fix)."""
    try:
        await ex.start()
    except OSError as exc:
        await ex.stop()
        raise ConfigError(
            f"--host/--port {args.host}:{args.port}: cannot listen ({exc.strerror or exc}); stop what holds "
            "the port, or choose another --port (0 = any free port) or --host"
        ) from exc
    except BaseException:
        await ex.stop()
        raise


def _exchange(args: argparse.Namespace, symbols: list[str]) -> ReplayExchange:
    return ReplayExchange(
        symbols=symbols,
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
        book=not args.no_book,
    )
