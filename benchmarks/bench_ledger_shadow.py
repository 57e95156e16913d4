"""What recording costs the ledger per bar: the book top in the bar row, every tier's shadow forecast (4 rows
a bar) and a score snapshot (4 rows every 10th bar), written with the bar's transaction; file growth per
bar; and the start-up re-seed (`shadow_history` + `ShadowScorer.replay`) of 4 symbols. Results:
docs/architecture.md, "The ledger".

OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_ledger_shadow.py [--n 2000]
.venv/bin/python benchmarks/bench_ledger_shadow.py --smoke   # 100 bars, re-seed of 4 x 50: proves it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _smoke import SMOKE_HELP  # benchmarks/, beside this script

from bot.core.bars import Bar, BookTop
from bot.core.paper import PaperTrader
from bot.core.params import PaperConfig
from bot.ledger.writer import Ledger
from bot.observe.shadow import ShadowScorer

TIERS = ("research", "staging", "production", "edge")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def run(n: int, mode: str, *, shadow: bool) -> tuple[float, float, float]:
    """(record p50 us, record p99 us, file bytes per bar) for `n` bars of one symbol."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.sqlite"
        scorer = ShadowScorer(horizon_bars=1, vol_horizon_bars=12)
        with Ledger.open(path, synchronous=mode) as led:  # type: ignore[arg-type]
            trader = PaperTrader(PaperConfig())
            times = []
            for i in range(n):
                c = 100.0 + (i % 7)
                bar = Bar("BTCUSDT", i * 300_000, c, c, c, c, 1.0, 100.0)
                book = (
                    BookTop("BTCUSDT", bar.start_ms + 299_000, c - 0.01, 1.0, c + 0.01, 2.0)
                    if shadow
                    else None
                )
                pred = 0.001 if (i // 5) % 2 else -0.001
                r = trader.on_bar("BTCUSDT", bar.start_ms, c, pred, "edge", "normal")
                t0 = time.perf_counter_ns()
                led.record_result(bar, r, regime="normal", tier="edge", prediction=pred, book=book)
                times.append((time.perf_counter_ns() - t0) / 1e3)
                if shadow:
                    fc = {t: (float(rng.normal(0, 1e-3)), 0.002) for t in TIERS}
                    scorer.on_bar("BTCUSDT", c, "edge", fc)
                    led.stage_shadow(
                        "BTCUSDT", bar.start_ms, fc, scorer.snapshot("BTCUSDT") if i % 10 == 9 else []
                    )
            led.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99), size / n


def reseed(n_per_symbol: int) -> tuple[float, int]:
    """(seconds, bars replayed) to re-seed a scorer from a ledger holding `n_per_symbol` bars of 4 symbols."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.sqlite"
        with Ledger.open(path, synchronous="normal") as led:
            trader = PaperTrader(PaperConfig())
            for i in range(n_per_symbol):
                for s in SYMBOLS:
                    c = 100.0 + (i % 7)
                    bar = Bar(s, i * 300_000, c, c, c, c, 1.0, 100.0)
                    r = trader.on_bar(s, bar.start_ms, c, 0.0, "edge", "normal")
                    led.record_result(bar, r, regime="normal", tier="edge", prediction=0.0)
                    led.stage_shadow(s, bar.start_ms, {t: (float(rng.normal(0, 1e-3)), 0.002) for t in TIERS})
        t0 = time.perf_counter()
        with Ledger.open(path) as led:
            scorer = ShadowScorer(horizon_bars=1, vol_horizon_bars=12)
            n = scorer.replay(led.shadow_history(SYMBOLS, last_bars=scorer.window + scorer.horizon_span))
        return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reseed-bars", type=int, default=1000, help="decided bars per symbol to re-seed from")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 100 bars, re-seed from 4 x 50")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.reseed_bars = 100, 50
    for mode in ("full", "normal"):
        for shadow in (False, True):
            p50, p99, per_bar = run(args.n, mode, shadow=shadow)
            what = "bar+decision+book+4 forecasts(+4 scores/10 bars)" if shadow else "bar+decision only"
            print(
                f"synchronous={mode:6s} {what:48s} p50 {p50:8.1f} us  p99 {p99:8.1f} us  {per_bar:6.0f} B/bar"
            )
    s, n = reseed(args.reseed_bars)
    print(f"re-seed from 4 x {args.reseed_bars} decided bars: {n} bars replayed in {s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
