"""Kernels: the feature kernel per bar (hot and cold), over T bars and over N symbols, against the oracle.

Every figure is measured in the same run as its baseline, the former pure-Python `FeatureState` (the slow
oracle, tests/oracle_features.py), and printed with the ratio to it:

- `per bar, hot`: bars back to back, p50/p99 of one call: the oracle's `update(bar)`, the product's
  `FeatureState.update(bar)` (the kernel behind its typed wrapper: a new row array per bar) and the bare
  `kernel.step` on preallocated arrays passed as typed views (`kernel.view`); compiled and, for
  comparison, the same `.py` run as plain Python; a no-op Python call is the measurement's floor;
- `per bar, cold`: the same calls one bar every `--gap-ms` ms (100 ms: live bars come minutes apart), and
  `FeatureState.update` right after a rehearsal of the same bar on `copy()` (the engine's `on_partial`);
- `T-loop`: the features of a whole history, bars/s: `features_of_arrays` (one `kernel.run` per symbol, what
  offline dataset building and the backtest call), `replay_features` (the same from a list of `Bar`s) and
  the oracle; target >= 1,000,000 bars/s;
- `burst`: `kernel.run_symbols` over 500 symbols' bars of one bar close, µs per burst.

Data: the 5 real 5m symbols in ../shared/data (130k bars) or, without them, the synthetic market.

    .venv/bin/python benchmarks/kernels.py            # full: every real bar, 2,000 hot and 50 cold samples
    .venv/bin/python benchmarks/kernels.py --smoke    # seconds, no speed assertion
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import best_s  # noqa: E402
from oracle_features import OracleFeatureState, oracle_replay  # noqa: E402

from bot.core import kernels  # noqa: E402
from bot.core.bars import Bar  # noqa: E402
from bot.core.features import N_FEATURES, FeatureState, features_of_arrays, replay_features  # noqa: E402
from bot.core.kernels import features as kernel  # noqa: E402
from bot.sim.synthetic import SyntheticMarket  # noqa: E402
from offline.data import load_csv  # noqa: E402

DATA = ROOT.parent / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
STEP_MS = 300_000
BURST_SYMBOLS = 500


def _histories(smoke: bool) -> tuple[str, list[list[Bar]]]:
    if DATA.is_dir():
        series = [load_csv(DATA / f"{s}_5m.csv") for s in SYMBOLS[: 1 if smoke else 5]]
        if smoke:
            series = [series[0][-3000:]]
        return f"{len(series)} real 5m symbol(s) from ../shared/data", series
    n = 3000 if smoke else 26_000
    series = [[s.bar for s in SyntheticMarket(seed=7 + i).generate(n)] for i in range(1 if smoke else 5)]
    return f"{len(series)} synthetic symbol(s) (../shared/data absent)", series


def _arrays(bars: Sequence[Bar]) -> tuple[np.ndarray, ...]:
    return (
        np.array([b.start_ms for b in bars], dtype=np.int64),
        *(np.array([getattr(b, f) for b in bars]) for f in ("open", "high", "low", "close", "volume")),
    )


def _step_caller(k: ModuleType, warm_bars: Sequence[Bar]) -> Callable[[Bar], object]:
    """The bare kernel step of module `k` on preallocated arrays (as typed views), its state warmed on
    `warm_bars`."""
    state = np.empty(k.STATE_SLOTS)
    k.init(state, STEP_MS)
    state, out = k.view(state), k.view(np.empty(N_FEATURES))
    step = k.step
    for b in warm_bars:
        step(state, b.start_ms, b.open, b.high, b.low, b.close, b.volume, out)

    def call(b: Bar) -> object:
        return step(state, b.start_ms, b.open, b.high, b.low, b.close, b.volume, out)

    return call


def _wrapper_caller(
    cls: type[FeatureState] | type[OracleFeatureState], warm: Sequence[Bar]
) -> Callable[[Bar], object]:
    fs = cls(interval_ms=STEP_MS)
    for b in warm:
        fs.update(b)
    return fs.update


def _per_bar_us(
    call: Callable[[Bar], object], bars: Sequence[Bar], gap_s: float, *, rehearse: bool = False
) -> tuple[float, float]:
    """p50/p99 µs of `call(bar)`; `rehearse`: `call.__self__.copy().update(bar)` untimed just before."""
    clock = time.perf_counter_ns
    times = np.empty(len(bars))
    owner = getattr(call, "__self__", None)
    for i, b in enumerate(bars):
        if gap_s:
            time.sleep(gap_s)
        if rehearse and isinstance(owner, FeatureState):
            owner.copy().update(b)
        t0 = clock()
        call(b)
        times[i] = (clock() - t0) / 1e3
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: proves the script runs")
    ap.add_argument("--gap-ms", type=float, default=100.0, help="spacing of the cold bars (default 100)")
    args = ap.parse_args(argv)
    smoke = args.smoke
    hot_n, cold_n = (200, 3) if smoke else (2000, 50)
    gap_s = (10.0 if smoke else args.gap_ms) / 1e3
    source, series = _histories(smoke)
    n_bars = sum(len(s) for s in series)
    pure = kernels.load_pure("features")
    print(
        f"# Feature kernel ({'smoke' if smoke else 'full'}): {source}, {n_bars:,} bars; compiled "
        f"{kernels.compiled()}; python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    # per bar, hot and cold: the states are warmed on the first 300 bars, then timed on the next ones
    first = series[0]
    warm, timed = first[:300], first[300 : 300 + hot_n]
    cold = first[300 + hot_n : 300 + hot_n + cold_n]
    warm_cold = first[: 300 + hot_n]  # the cold bars follow on, without a gap
    callers: list[tuple[str, Callable[[Sequence[Bar]], Callable[[Bar], object]]]] = [
        ("oracle FeatureState.update (baseline)", lambda w: _wrapper_caller(OracleFeatureState, w)),
        ("no-op Python call (the floor)", lambda w: lambda b: None),
        ("FeatureState.update (kernel + wrapper)", lambda w: _wrapper_caller(FeatureState, w)),
        ("kernel.step (compiled)", lambda w: _step_caller(kernel, w)),
        ("kernel.step (same .py, plain Python)", lambda w: _step_caller(pure, w)),
    ]
    print(
        "\n| per bar | hot p50 µs | hot p99 µs | vs oracle p50 | cold p50 µs | cold p99 µs | vs oracle p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base: tuple[float, float] | None = None
    for name, make in callers:
        hot = _per_bar_us(make(warm), timed, 0.0)
        cld = _per_bar_us(make(warm_cold), cold, gap_s)
        base = base or (hot[0], cld[0])
        print(
            f"| {name} | {hot[0]:.2f} | {hot[1]:.2f} | {base[0] / hot[0]:.1f}x | {cld[0]:.2f} | {cld[1]:.2f} "
            f"| {base[1] / cld[0]:.1f}x |"
        )
    assert base is not None
    reh = _per_bar_us(_wrapper_caller(FeatureState, warm_cold), cold, gap_s, rehearse=True)
    print(
        f"| FeatureState.update, rehearsed on copy() first (cold only) | | | | {reh[0]:.2f} | {reh[1]:.2f} "
        f"| {base[1] / reh[0]:.1f}x |"
    )

    # T-loop over every history, one call per symbol
    cols = [_arrays(s) for s in series]
    repeat = 1 if smoke else 3
    oracle_s = best_s(lambda: [oracle_replay(s, interval_ms=STEP_MS) for s in series], 1)
    rows = [
        ("oracle replay (baseline)", oracle_s),
        (
            "features_of_arrays (kernel.run per symbol)",
            best_s(lambda: [features_of_arrays(*c, interval_ms=STEP_MS) for c in cols], repeat),
        ),
        (
            "replay_features (from Bar lists)",
            best_s(lambda: [replay_features(s, interval_ms=STEP_MS) for s in series], repeat),
        ),
    ]
    sub = cols[0]
    sub_n = min(2000, len(series[0]))

    def pure_run() -> None:
        state = np.empty(pure.STATE_SLOTS)
        pure.init(state, STEP_MS)
        out, status = np.empty((sub_n, N_FEATURES)), np.zeros(sub_n, dtype=np.int8)
        pure.run(state, *(a[:sub_n] for a in sub), out, status)

    pure_s = best_s(pure_run, 1) * n_bars / sub_n  # scaled to the whole history
    rows.append((f"kernel.run, plain Python (timed on {sub_n:,} bars)", pure_s))
    print("\n| T-loop (offline feature building) | bars/s | vs oracle |")
    print("|---|---:|---:|")
    for name, secs in rows:
        print(f"| {name} | {n_bars / secs:,.0f} | {oracle_s / secs:.1f}x |")

    # burst: one bar close of BURST_SYMBOLS symbols (the real histories' bars, cycled)
    n_sym = BURST_SYMBOLS
    states = np.empty((n_sym, kernel.STATE_SLOTS))
    for i in range(n_sym):
        kernel.init(states[i], STEP_MS)
    length = min(len(s) for s in series)
    steps = min(length, 100 if smoke else 1000)
    picks = [cols[i % len(cols)] for i in range(n_sym)]
    bursts = [
        tuple(np.ascontiguousarray(np.array([p[f][t] for p in picks])) for f in range(6))
        for t in range(steps)
    ]
    out, status = np.empty((n_sym, N_FEATURES)), np.empty(n_sym, dtype=np.int8)
    times = np.empty(steps)
    for t, burst in enumerate(bursts):
        t0 = time.perf_counter_ns()
        kernel.run_symbols(states, *burst, out, status)
        times[t] = (time.perf_counter_ns() - t0) / 1e3
    oracles = [OracleFeatureState(interval_ms=STEP_MS) for _ in range(n_sym)]
    o_times = np.empty(min(steps, 60))
    for t in range(o_times.size):
        bars = [
            Bar("X", int(b[0][i]), *(float(b[f][i]) for f in range(1, 6)))
            for b in (bursts[t],)
            for i in range(n_sym)
        ]
        t0 = time.perf_counter_ns()
        for fs, bar in zip(oracles, bars, strict=True):
            fs.update(bar)
        o_times[t] = (time.perf_counter_ns() - t0) / 1e3
    warm_t = slice(60, None) if steps > 120 else slice(None)
    print(f"\n| burst of {n_sym} symbols (one bar close) | p50 µs | p99 µs | vs oracle p50 |")
    print("|---|---:|---:|---:|")
    ob, ob99 = (float(np.percentile(o_times, q)) for q in (50, 99))
    print(f"| oracle, symbol by symbol (baseline, {o_times.size} closes) | {ob:,.0f} | {ob99:,.0f} | 1.0x |")
    kb = float(np.percentile(times[warm_t], 50))
    print(f"| kernel.run_symbols | {kb:,.1f} | {np.percentile(times[warm_t], 99):,.1f} | {ob / kb:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
