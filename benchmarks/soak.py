"""Soak: the real service against the loopback replay exchange for >= 1,000,000 bars, reconnecting often.

Reports RSS over time (it must plateau after warm-up), the sizes of every bounded buffer, bars missed and
duplicated (both must be 0: the ledger's decided keys against the exchange's closed keys), reconnects and
throughput. Not a test: run it by hand.

    .venv/bin/python benchmarks/soak.py --bars 1000000 --reconnect-every 5000
    .venv/bin/python benchmarks/soak.py --quick          # 50,000 bars

Writes docs/soak.json.
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

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bot import logs  # noqa: E402
from bot.app import Service  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.ledger import Ledger  # noqa: E402
from bot.replay import ReplayExchange  # noqa: E402

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


def soak_config(ex: ReplayExchange, models: Path, out: Path) -> Config:
    from support import loop_config

    cfg = loop_config(
        ex.rest_url,
        ex.ws_url,
        models,
        out,
        symbol=SYMBOL,
        use_book=False,
        backfill_bars=100,
        synchronous="normal",
    )
    exchange = msgspec.structs.replace(
        cfg.exchange,
        reconnect_backoff_initial_s=0.01,
        reconnect_backoff_max_s=0.1,
        ping_interval_s=5.0,
        stale_feed_s=30.0,
    )
    return msgspec.structs.replace(cfg, exchange=exchange)


async def soak(bars: int, reconnect_every: int, sample_every: int, work: Path) -> dict[str, Any]:
    models = build_family(work / "models")
    samples: list[dict[str, float]] = []
    async with ReplayExchange(
        symbols=[SYMBOL],
        data="synthetic",
        seed=3,
        bar_seconds=0.0,
        updates_per_bar=1,
        history_bars=200,
        book=False,
        keep_bars=20_000,
    ) as ex:
        cfg = soak_config(ex, models, work)
        with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - /dev/null, before the loop is busy
            logs.configure_logging(fmt="json", decisions_path=None, stream=devnull)
            service = Service(cfg, max_decisions=bars)
            t0 = time.perf_counter()
            task = asyncio.create_task(service.run(asyncio.Event()))
            next_drop = reconnect_every
            next_sample = 0
            drops = 0
            while not task.done():
                await asyncio.sleep(0.05)
                n = service.summary.decisions
                if n >= next_drop:
                    drops += await ex.drop_connections()
                    next_drop += reconnect_every
                if n >= next_sample:
                    samples.append(
                        {
                            "decisions": n,
                            "rss_mb": round(rss_mb(), 1),
                            "t_s": round(time.perf_counter() - t0, 1),
                        }
                    )
                    next_sample += sample_every
                    print(
                        f"  {n:>9,} bars  rss {samples[-1]['rss_mb']:7.1f} MiB  {samples[-1]['t_s']:7.1f} s",
                        flush=True,
                    )
            summary = await task
            wall = time.perf_counter() - t0
            logs.close_logging()
        closed = ex.closed_keys(SYMBOL)
        buffers = {
            "replay_keep_bars": len(ex.bars_closed(SYMBOL)),
            "replay_rest_hits": len(ex.rest_hits),
            "replay_connections": len(ex.connections),
        }
    ledger = Ledger.open(cfg.ledger.path)
    try:
        decided = ledger.decided_keys(SYMBOL)
    finally:
        ledger.close()
    first, last = decided[0], decided[-1]
    expected = [k for k in closed if first <= k <= last]
    missing = len(set(expected) - set(decided))
    duplicated = len(decided) - len(set(decided))
    warm = [s for s in samples if s["decisions"] >= bars * 0.1]
    growth = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) if len(warm) >= 2 else float("nan")
    return {
        "bars": summary.decisions,
        "wall_s": round(wall, 1),
        "bars_per_s": round(summary.decisions / wall, 1),
        "reconnects_forced": drops,
        "reconnects_seen": summary.reconnects,
        "per_source": dict(summary.per_source),
        "missing": missing,
        "duplicated": duplicated,
        "rss_mb_after_warmup": warm[0]["rss_mb"] if warm else None,
        "rss_mb_end": samples[-1]["rss_mb"] if samples else None,
        "rss_growth_after_warmup_mb": round(growth, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "buffers": buffers,
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--reconnect-every", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="50,000 bars")
    parser.add_argument("--out", default=str(REPO / "docs" / "soak.json"))
    args = parser.parse_args()
    bars = 50_000 if args.quick else args.bars
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = asyncio.run(soak(bars, args.reconnect_every, max(bars // 40, 1000), Path(tmp)))
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
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if result["missing"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
