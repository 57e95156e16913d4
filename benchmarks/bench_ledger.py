"""Ledger commit latency per bar under WAL with synchronous FULL vs NORMAL (on this disk).

.venv/bin/python benchmarks/bench_ledger.py [--n 500]
.venv/bin/python benchmarks/bench_ledger.py --smoke     # 50 bars: proves it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _smoke import SMOKE_HELP  # benchmarks/, beside this script

from bot.core.bars import Bar
from bot.core.paper import PaperTrader
from bot.core.params import PaperConfig
from bot.ledger.writer import Ledger


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 50 bars")
    args = ap.parse_args()
    if args.smoke:
        args.n = 50
    for mode in ("full", "normal"):
        with tempfile.TemporaryDirectory() as d, Ledger.open(Path(d) / "l.sqlite", synchronous=mode) as led:
            trader = PaperTrader(PaperConfig())
            times = []
            for i in range(args.n):
                c = 100.0 + (i % 7)
                bar = Bar("BTCUSDT", i * 300_000, c, c, c, c, 1.0)
                pred = 0.001 if (i // 5) % 2 else -0.001
                t0 = time.perf_counter_ns()
                r = trader.on_bar("BTCUSDT", bar.start_ms, c, pred, "edge", "normal")
                t1 = time.perf_counter_ns()
                led.record_result(bar, r, regime="normal", tier="edge", prediction=pred)
                times.append(((time.perf_counter_ns() - t1) / 1e3, (t1 - t0) / 1e3))
            rec = np.array([t[0] for t in times])
            paper = np.array([t[1] for t in times])
            r50, r99 = np.percentile(rec, [50, 99])
            print(f"synchronous={mode:6s} record p50 {r50:8.1f} us  p99 {r99:8.1f} us", end="")
            print(f"   paper.on_bar p50 {np.percentile(paper, 50):6.1f} us")


if __name__ == "__main__":
    main()
