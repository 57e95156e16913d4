"""Soak: the real service against the replay exchange (own process) for >= 1,000,000 bars, reconnecting often.

Reports RSS over time (it must plateau after warm-up), the sizes of every bounded buffer, bars missed and
duplicated (both must be 0: the ledger's decided keys against the exchange's closed keys), reconnects and
throughput. Not a test: run it by hand.

    .venv/bin/python benchmarks/soak.py --bars 1000000 --reconnect-every 5000
    .venv/bin/python benchmarks/soak.py --quick          # 50,000 bars
    .venv/bin/python benchmarks/soak.py --smoke          # 2,000 bars, a reconnect every 500: seconds

Writes docs/results/soak.json (smoke: a temp dir, or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bot.app import Service  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.observe import logs  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from _smoke import SMOKE_HELP, output_path  # noqa: E402

SYMBOL = "SYNTHUSDT"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def build_family(out: Path) -> Path:
    """A small real tier family (offline pipeline) for the soak."""
    from support import small_config

    from offline.pipeline import pipeline_distill

    pipeline_distill(small_config(), data="synthetic", out_dir=out, quick=True)
    return out


def soak_config(rest_url: str, ws_url: str, models: Path, out: Path) -> Config:
    from support import loop_config

    cfg = loop_config(
        rest_url, ws_url, models, out, symbol=SYMBOL, use_book=False, backfill_bars=100, synchronous="normal"
    )
    exchange = msgspec.structs.replace(
        cfg.exchange,
        reconnect_backoff_initial_s=0.01,
        reconnect_backoff_max_s=0.1,
        ping_interval_s=5.0,
        stale_feed_s=30.0,
    )
    return msgspec.structs.replace(cfg, exchange=exchange)


def proc_rss_mb(pid: int) -> float:
    """Resident set size of process `pid`, MiB."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


async def start_exchange(bar_seconds: float) -> tuple[asyncio.subprocess.Process, str, str]:
    """The replay exchange in its own process (so the bot's RSS is measured alone)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "replay-server",
        "--port",
        "0",
        "--symbols",
        SYMBOL,
        "--seed",
        "3",
        "--bar-seconds",
        str(bar_seconds),
        "--updates-per-bar",
        "1",
        "--history-bars",
        "200",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    ready = json.loads(await proc.stdout.readline())
    return proc, ready["rest_url"], ready["ws_url"]


async def control(http: aiohttp.ClientSession, rest_url: str, method: str, **kwargs: Any) -> Any:
    async with http.post(f"{rest_url}/_replay/{method}", json=kwargs) as resp:
        return (await resp.json())["result"]


async def soak(
    bars: int, reconnect_every: int, sample_every: int, bar_seconds: float, work: Path
) -> dict[str, Any]:
    models = build_family(work / "models")
    samples: list[dict[str, float]] = []
    proc, rest_url, ws_url = await start_exchange(bar_seconds)
    try:
        cfg = soak_config(rest_url, ws_url, models, work)
        async with aiohttp.ClientSession() as http:
            with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null, before the loop is busy
                logs.configure_logging(fmt="json", decisions_path=None, stream=devnull)
                service = Service(cfg, max_decisions=bars)
                t0 = time.perf_counter()
                task = asyncio.create_task(service.run(asyncio.Event()))
                next_drop = reconnect_every
                next_sample = 0
                drops = 0
                max_overflow = max_queue = 0
                while not task.done():
                    await asyncio.sleep(0.05)
                    n = service.summary.decisions
                    feed = service.feed
                    if feed is not None:
                        max_overflow = max(max_overflow, len(feed._overflow))
                        max_queue = max(max_queue, feed._queue.qsize())
                    if n >= next_drop:
                        drops += await control(http, rest_url, "drop_connections")
                        next_drop += reconnect_every
                    if n >= next_sample:
                        samples.append(
                            {
                                "decisions": n,
                                "rss_mb": round(rss_mb(), 1),
                                "exchange_rss_mb": round(proc_rss_mb(proc.pid), 1),
                                "t_s": round(time.perf_counter() - t0, 1),
                            }
                        )
                        next_sample += sample_every
                        last = samples[-1]
                        print(
                            f"  {n:>9,} bars  bot rss {last['rss_mb']:7.1f} MiB  exchange rss "
                            f"{last['exchange_rss_mb']:7.1f} MiB  {last['t_s']:7.1f} s",
                            flush=True,
                        )
                summary = await task
                wall = time.perf_counter() - t0
                logs.close_logging()
            closed = await control(http, rest_url, "closed_keys", symbol=SYMBOL)
    finally:
        proc.terminate()
        await proc.wait()
    ledger = Ledger.open(cfg.ledger.path)
    try:
        decided = ledger.decided_keys(SYMBOL)
    finally:
        ledger.close()
    first, last_key = decided[0], decided[-1]
    expected = [k for k in closed if first <= k <= last_key]
    missing = len(set(expected) - set(decided))
    duplicated = len(decided) - len(set(decided))
    warm = [s for s in samples if s["decisions"] >= bars * 0.1]
    growth = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) if len(warm) >= 2 else float("nan")
    return {
        "bars": summary.decisions,
        "wall_s": round(wall, 1),
        "bars_per_s": round(summary.decisions / wall, 1),
        "exchange_bar_seconds": bar_seconds,
        "reconnects_forced": drops,
        "reconnects_seen": summary.reconnects,
        "per_source": dict(summary.per_source),
        "missing": missing,
        "duplicated": duplicated,
        "rss_mb_after_warmup": warm[0]["rss_mb"] if warm else None,
        "rss_mb_end": samples[-1]["rss_mb"] if samples else None,
        "rss_growth_after_warmup_mb": round(growth, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "buffers": {
            "feed_queue_max": max_queue,
            "feed_overflow_max": max_overflow,
            "feed_queue_bound": cfg.exchange.feed_queue_size,
        },
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--reconnect-every", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="50,000 bars")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 2,000 bars, reconnect every 500")
    parser.add_argument(
        "--bar-seconds",
        type=float,
        default=0.0008,
        help="exchange pace (real s per bar); keep it slower than the bot's own throughput",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON (default docs/results/soak.json)")
    args = parser.parse_args()
    bars = 2_000 if args.smoke else 50_000 if args.quick else args.bars
    reconnect_every = 500 if args.smoke else args.reconnect_every
    sample_every = 200 if args.smoke else max(bars // 40, 1000)
    out = output_path(args.out, "soak", ".json", smoke=args.smoke, quick=False)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = asyncio.run(soak(bars, reconnect_every, sample_every, args.bar_seconds, Path(tmp)))
    result["command"] = " ".join(["benchmarks/soak.py", *sys.argv[1:]])
    print()
    print(
        f"{'bars':>10} {'wall s':>8} {'bars/s':>8} {'reconn':>7} {'missing':>8} {'dup':>5} "
        f"{'rss@10%':>8} {'rss end':>8} {'growth':>7}"
    )
    print(
        f"{result['bars']:>10,} {result['wall_s']:>8} {result['bars_per_s']:>8} "
        f"{result['reconnects_seen']:>7} "
        f"{result['missing']:>8} {result['duplicated']:>5} {result['rss_mb_after_warmup']:>8} "
        f"{result['rss_mb_end']:>8} {result['rss_growth_after_warmup_mb']:>7}"
    )
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0 if result["missing"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
