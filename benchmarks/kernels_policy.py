"""Policy kernels: the regime and paper kernels per bar and over T bars, against the oracle classes.

Every figure is measured in the same run as its baseline, the former pure-Python `RegimeDetector` and
`PaperTrader` (the slow oracles, tests/oracle_regime.py and tests/oracle_paper.py), and printed with the
ratio to it:

- `per bar, hot`: p50/p99 µs of one call, bars back to back: the oracle's `update(bar)` / `on_bar(...)`,
  the product's class (the kernel behind its wrapper, which builds the same records) and the bare kernel
  `step` on preallocated arrays; compiled and, for comparison, the same `.py` run as plain Python;
- `T-loop`: a policy-only pass over cached predictions (what a sweep trial does: regime, routed tier's
  cached prediction and vol forecast, paper; metrics out, no records written), bars/s: the oracle classes
  per bar, the product classes per bar, and the kernels (`regime.run` per symbol, the routed predictions
  gathered with numpy, `paper.run` per symbol); issue 21's target is >= 2,000,000 bars/s compiled.

Data: the 5 real 5m symbols in ../shared/data (the first 3,000 bars of each calibrate the regimes: a real
distilled calibration, per symbol), or without them the synthetic market. Predictions and vol forecasts are
random per tier (the policy does not care where they came from).

    .venv/bin/python benchmarks/kernels_policy.py            # full: every real bar, 2,000 hot samples
    .venv/bin/python benchmarks/kernels_policy.py --smoke    # seconds, no speed assertion
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import oracle_paper  # noqa: E402
import oracle_regime  # noqa: E402
from _timing import best_s  # noqa: E402

from bot.core import kernels  # noqa: E402
from bot.core.bars import Bar  # noqa: E402
from bot.core.kernels import paper as kpaper  # noqa: E402
from bot.core.kernels import regime as kregime  # noqa: E402
from bot.core.paper import PaperTrader, kernel_params  # noqa: E402
from bot.core.params import GUESSED_ROUTES, REGIME_NAMES, PaperConfig, RegimeConfig  # noqa: E402
from bot.core.regime import RegimeDetector  # noqa: E402
from bot.sim.synthetic import SyntheticMarket  # noqa: E402
from offline.calibrate import calibrate  # noqa: E402
from offline.data import load_csv  # noqa: E402

DATA = ROOT.parent / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
STEP_MS = 300_000
TIERS = ("edge", "production", "staging", "research")
ROUTES = GUESSED_ROUTES
REGIME_CFG = RegimeConfig(routes=ROUTES)
PAPER_CFG = PaperConfig(sizing="vol_target", max_units=3, long_threshold_bps=2.0, short_threshold_bps=2.0)
N_CAL = 3000
RS = kregime.SLOTS
PS = kpaper.SLOTS


def _histories(smoke: bool) -> tuple[str, dict[str, list[Bar]]]:
    """Each symbol's bars (calibration bars first)."""
    if DATA.is_dir():
        names = SYMBOLS[: 1 if smoke else 5]
        series = {s: load_csv(DATA / f"{s}_5m.csv") for s in names}
        if smoke:
            series = {s: b[: N_CAL + 2000] for s, b in series.items()}
        return f"{len(series)} real 5m symbol(s) from ../shared/data", series
    n = N_CAL + (2000 if smoke else 23_000)
    series = {
        f"SYN{i}USDT": [s.bar for s in SyntheticMarket(seed=7 + i).generate(n)]
        for i in range(1 if smoke else 5)
    }
    return f"{len(series)} synthetic symbol(s) (../shared/data absent)", series


def _cached(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached predictions and vol forecasts, one column per tier."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(0.0, 0.0004, (n, len(TIERS)))
    vol = np.exp(rng.normal(math.log(0.002), 0.5, (n, len(TIERS))))
    return pred, vol


def _per_bar_us(call: Callable[[int], object], n: int) -> tuple[float, float]:
    clock = time.perf_counter_ns
    times = np.empty(n)
    for i in range(n):
        t0 = clock()
        call(i)
        times[i] = (clock() - t0) / 1e3
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


class _Run:
    """One symbol's timed bars as the kernels take them."""

    def __init__(self, symbol: str, bars: list[Bar], cal: dict[str, Any], seed: int) -> None:
        self.symbol, self.bars, self.cal = symbol, bars, cal
        self.start_ms = np.array([b.start_ms for b in bars], dtype=np.int64)
        self.close = np.array([b.close for b in bars])
        self.volume = np.array([b.volume for b in bars])
        self.pred, self.vol = _cached(len(bars), seed)
        det = RegimeDetector(cal, REGIME_CFG, interval_ms=STEP_MS, symbol=symbol)
        self.iparams, self.fparams = det.signals._iparams, det.signals._fparams
        # the routes as tier indices into TIERS (the cached columns)
        self.routes = np.array([TIERS.index(ROUTES[r]) for r in REGIME_NAMES], dtype=np.int64)


def _policy_oracle(runs: Sequence[_Run], det_cls: Any, trader_cls: Any) -> None:
    """The per-bar classes over every bar: regime, the routed tier's cached answers, paper."""
    for run in runs:
        det = det_cls(run.cal, REGIME_CFG, interval_ms=STEP_MS, symbol=run.symbol)
        trader = trader_cls(PAPER_CFG)
        pred, vol = run.pred.tolist(), run.vol.tolist()
        for t, bar in enumerate(run.bars):
            d = det.update(bar)
            k = TIERS.index(d.tier)
            trader.on_bar(
                run.symbol, bar.start_ms, bar.close, pred[t][k], d.tier, d.regime, vol_forecast=vol[t][k]
            )


def _policy_kernels(runs: Sequence[_Run], kr: ModuleType, kp: ModuleType) -> float:
    """One regime and one paper kernel call per symbol; returns the summed equity (a metric out)."""
    params = kernel_params(PAPER_CFG)
    equity = 0.0
    empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros((0, 4))
    for run in runs:
        n = run.start_ms.shape[0]
        istate, fstate = kr.new_state(run.iparams)
        iout, fout = np.empty((n, RS["N_IOUT"]), dtype=np.int64), np.empty((n, RS["N_FOUT"]))
        kr.run(
            istate, fstate, run.iparams, run.fparams, run.routes, run.start_ms, run.close, run.volume,
            empty_i, empty_f, iout, fout,
        )  # fmt: skip
        tier = iout[:, RS["O_TIER"]]
        rows = np.arange(n)
        state = kp.new_state()
        pnl_tier, pnl_regime = np.full(len(TIERS), np.nan), np.full(len(REGIME_NAMES), np.nan)
        out = np.empty((n, PS["N_OUT"]))
        kp.run(
            state, params, run.start_ms, run.close, run.pred[rows, tier], run.vol[rows, tier], empty_f[:, 0],
            empty_f[:, 0], tier, np.ascontiguousarray(iout[:, RS["O_REGIME"]]), pnl_tier, pnl_regime, out,
        )  # fmt: skip
        equity += float(out[-1, PS["R_EQUITY"]])
    return equity


def _regime_step(kr: ModuleType, run: _Run, warm: int) -> Callable[[int], object]:
    istate, fstate = kr.new_state(run.iparams)
    iout, fout = np.empty(RS["N_IOUT"], dtype=np.int64), np.empty(RS["N_FOUT"])
    step, ip, fp, routes = kr.step, run.iparams, run.fparams, run.routes
    sm, cl, vo = run.start_ms.tolist(), run.close.tolist(), run.volume.tolist()
    for t in range(warm):
        step(istate, fstate, ip, fp, routes, sm[t], cl[t], vo[t], iout, fout)

    def call(i: int) -> object:
        t = warm + i
        return step(istate, fstate, ip, fp, routes, sm[t], cl[t], vo[t], iout, fout)

    return call


def _paper_step(kp: ModuleType, run: _Run, warm: int) -> Callable[[int], object]:
    state, params, out = kp.new_state(), kernel_params(PAPER_CFG), np.empty(PS["N_OUT"])
    pnl_tier, pnl_regime = np.full(len(TIERS), np.nan), np.full(len(REGIME_NAMES), np.nan)
    step = kp.step
    sm, cl = run.start_ms.tolist(), run.close.tolist()
    pred, vol = run.pred[:, 0].tolist(), run.vol[:, 0].tolist()
    for t in range(warm):
        step(state, params, sm[t], cl[t], pred[t], vol[t], 0.0, 0.0, 0, 1, pnl_tier, pnl_regime, out)

    def call(i: int) -> object:
        t = warm + i
        return step(state, params, sm[t], cl[t], pred[t], vol[t], 0.0, 0.0, 0, 1, pnl_tier, pnl_regime, out)

    return call


def _regime_class(cls: Any, run: _Run, warm: int) -> Callable[[int], object]:
    det = cls(run.cal, REGIME_CFG, interval_ms=STEP_MS, symbol=run.symbol)
    for bar in run.bars[:warm]:
        det.update(bar)
    bars = run.bars
    return lambda i: det.update(bars[warm + i])


def _paper_class(cls: Any, run: _Run, warm: int) -> Callable[[int], object]:
    trader = cls(PAPER_CFG)
    sym, bars = run.symbol, run.bars
    pred, vol = run.pred[:, 0].tolist(), run.vol[:, 0].tolist()
    for t in range(warm):
        trader.on_bar(sym, bars[t].start_ms, bars[t].close, pred[t], "edge", "normal", vol_forecast=vol[t])

    def call(i: int) -> object:
        t, b = warm + i, bars[warm + i]
        return trader.on_bar(sym, b.start_ms, b.close, pred[t], "edge", "normal", vol_forecast=vol[t])

    return call


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: proves the script runs")
    args = ap.parse_args(argv)
    smoke = args.smoke
    hot_n = 200 if smoke else 2000
    source, series = _histories(smoke)
    cal = calibrate({s: b[:N_CAL] for s, b in series.items()}, REGIME_CFG)
    runs = [_Run(s, b[N_CAL:], cal, seed=i) for i, (s, b) in enumerate(series.items())]
    n_bars = sum(len(r.bars) for r in runs)
    pure_r, pure_p = kernels.load_pure("regime"), kernels.load_pure("paper")
    compiled = kernels.compiled()
    print(
        f"# Policy kernels ({'smoke' if smoke else 'full'}): {source}, {n_bars:,} timed bars after {N_CAL:,} "
        f"calibration bars each; compiled regime={compiled['regime']} paper={compiled['paper']}; python "
        f"{platform.python_version()}, {os.cpu_count()} cpus, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    first, warm = runs[0], 600
    o_det, o_trader = oracle_regime.RegimeDetector, oracle_paper.PaperTrader
    per_bar: list[tuple[str, Callable[[], Callable[[int], object]]]] = [
        ("regime: oracle RegimeDetector.update (baseline)", lambda: _regime_class(o_det, first, warm)),
        (
            "regime: RegimeDetector.update (kernel + wrapper)",
            lambda: _regime_class(RegimeDetector, first, warm),
        ),
        ("regime: kernel.step", lambda: _regime_step(kregime, first, warm)),
        ("regime: kernel.step (same .py, plain Python)", lambda: _regime_step(pure_r, first, warm)),
        ("paper: oracle PaperTrader.on_bar (baseline)", lambda: _paper_class(o_trader, first, warm)),
        ("paper: PaperTrader.on_bar (kernel + wrapper)", lambda: _paper_class(PaperTrader, first, warm)),
        ("paper: kernel.step", lambda: _paper_step(kpaper, first, warm)),
        ("paper: kernel.step (same .py, plain Python)", lambda: _paper_step(pure_p, first, warm)),
    ]
    print("\n| per bar, hot | p50 µs | p99 µs | vs oracle p50 |")
    print("|---|---:|---:|---:|")
    base = 0.0
    for name, make in per_bar:
        p50, p99 = _per_bar_us(make(), min(hot_n, len(first.bars) - warm))
        base = p50 if "baseline" in name else base
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {base / p50:.1f}x |")

    repeat = 1 if smoke else 3
    oracle_s = best_s(lambda: _policy_oracle(runs, o_det, o_trader), 1)
    sub = [_Run(first.symbol, first.bars[:2000], cal, seed=0)]
    sub_n = len(sub[0].bars)
    wrappers_s = best_s(lambda: _policy_oracle(runs, RegimeDetector, PaperTrader), 1)
    kernels_s = best_s(lambda: _policy_kernels(runs, kregime, kpaper), repeat)
    pure_s = best_s(lambda: _policy_kernels(sub, pure_r, pure_p), 1) * n_bars / sub_n  # scaled to all bars
    rows = [
        ("oracle classes per bar (baseline)", oracle_s),
        ("RegimeDetector + PaperTrader per bar (kernel + wrappers)", wrappers_s),
        ("regime.run + paper.run per symbol", kernels_s),
        (f"regime.run + paper.run, plain Python (timed on {sub_n:,} bars)", pure_s),
    ]
    print("\n| T-loop, policy-only pass over cached predictions | bars/s | vs oracle |")
    print("|---|---:|---:|")
    for name, secs in rows:
        print(f"| {name} | {n_bars / secs:,.0f} | {oracle_s / secs:.1f}x |")
    if not all(compiled[k] for k in ("regime", "paper")):
        print("\n(kernels not compiled in this process: the kernel rows are plain Python)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
