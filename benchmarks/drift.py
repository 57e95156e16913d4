"""Feature drift: the per-bar cost of the rolling PSI, and how often it alarms on real 5m data.

Per symbol (real Bybit 5m klines from ../shared/data), the live feature code runs over every bar; decile
bins are fitted on the first 60 % of the rows (the distillation's `train_frac`), exactly as the export does
(`bot.core.drift.fit_bins` on the monitored, non-calendar inputs). Then a `DriftMonitor` streams

- *in-sample*: the training rows themselves (no drift by construction: every alarm is the window being
  shorter than the market's own regimes), and
- *out-of-sample*: the rows after them (what a service started on that family would see),

for several window lengths, and reports the share of bars on which some feature is at or above its
warning threshold, the `drift` warnings per day (crossings with the service's hysteresis), and which
features alarm most - with a flat threshold of 0.25 for every feature, and with the service's calibrated
thresholds (max(0.25, the highest PSI the training rows reached over the same window), the manifest's
`train_psi_max`). The cost part times `DriftMonitor.update` (the service's per-bar call) and the gauge update
(`Metrics.drift`) per bar, in microseconds, on one BLAS thread.

    .venv/bin/python benchmarks/drift.py --quick      # BTCUSDT, windows 288 and 2016: < 1 min
    .venv/bin/python benchmarks/drift.py              # 5 symbols, windows 288 .. 4032: ~3 min
    .venv/bin/python benchmarks/drift.py --smoke      # BTCUSDT's last 3,000 bars, window 288: seconds

Writes docs/results/drift[_quick].json (smoke: a temp dir or `--out`). Without ../shared/data, `--smoke`
streams a
synthetic market instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _smoke import SMOKE_HELP, data_or_synthetic, output_path
from threadpoolctl import threadpool_limits

from bot.core.bars import interval_ms
from bot.core.drift import DriftMonitor, fit_bins, monitored_features, training_psi_max
from bot.core.features import FEATURE_INDEX, FEATURE_NAMES, replay_features
from bot.observe.metrics import Metrics
from bot.sim.csvbars import read_csv_bars

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"
WARN = 0.25
BARS_PER_DAY = 288


def stream(
    bins: dict[str, tuple[list[float], list[float]]],
    rows: np.ndarray,
    window: int,
    baseline: dict[str, float] | None = None,
) -> tuple[dict[str, Any], list[float]]:
    """Rows through a fresh monitor; the alarm statistics and every update's time in microseconds."""
    m = DriftMonitor(bins, FEATURE_INDEX, window_bars=window, warn_psi=WARN, baseline=baseline)
    worst: list[float] = []
    above = Counter[str]()
    crossings = 0
    times_us: list[float] = []
    clock = time.perf_counter_ns
    for row in rows:
        t0 = clock()
        up = m.update("S", row)
        times_us.append((clock() - t0) / 1e3)
        if up.psi is None:
            continue
        worst.append(float((up.psi / m.threshold).max()))
        for i in np.flatnonzero(up.psi >= m.threshold):
            above[m.features[i]] += 1
        crossings += len(up.crossed)
    n = len(worst)
    days = n / BARS_PER_DAY
    return {
        "window_bars": window,
        "scored_bars": n,
        "share_bars_alarm": round(sum(w >= 1.0 for w in worst) / n, 4) if n else None,
        "median_max_psi_over_threshold": round(float(np.median(worst)), 4) if n else None,
        "warnings_per_day": round(crossings / days, 2) if n else None,
        "top_features_share_alarm": {f: round(c / n, 3) for f, c in above.most_common(6)},
    }, times_us


def symbol_study(
    path: Path, windows: list[int], *, last_bars: int | None = None
) -> tuple[dict[str, Any], list[float]]:
    """Fit on the first 60 % of `path`'s rows (its last `last_bars` bars; None = all); stream in-sample and
    out-of-sample for each window."""
    bars = list(read_csv_bars(path))
    bars = bars[-last_bars:] if last_bars else bars
    X, valid = replay_features(bars, interval_ms=interval_ms("5"))
    X = X[valid & np.isfinite(X).all(axis=1)]
    n_train = int(0.6 * len(X))
    train, test = X[:n_train], X[n_train:]
    names = monitored_features(FEATURE_NAMES)
    bins = {n: fit_bins(train[:, FEATURE_INDEX[n]], 10) for n in names}
    out: dict[str, Any] = {"rows": len(X), "train_rows": n_train, "features": len(names), "windows": []}
    times: list[float] = []
    for w in windows:
        ins, _ = stream(bins, train, w)
        oos, t = stream(bins, test, w)
        base = training_psi_max(bins, FEATURE_INDEX, train, window_bars=w) or {}
        cal, _ = stream(bins, test, w, base)
        times += t
        out["windows"].append(
            {
                "window_bars": w,
                "in_sample_flat": ins,
                "out_of_sample_flat": oos,
                "out_of_sample_calibrated": cal,
                "thresholds": {f: round(max(WARN, v), 3) for f, v in base.items()},
            }
        )
    return out, times


def gauge_cost_us(n_features: int, n: int = 20_000) -> float:
    """Median microseconds of one `Metrics.drift` call (every feature's gauge and the max)."""
    metrics = Metrics(stale_s=60.0)
    psi = {f"f{i}": 0.1 * i for i in range(n_features)}
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        metrics.drift("BTCUSDT", psi)
        ts.append((time.perf_counter_ns() - t0) / 1e3)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_HELP}: BTCUSDT's last 3,000 bars, window 288"
    )
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=None, help="JSON (default docs/results/drift[_quick].json)")
    args = ap.parse_args()
    short = args.quick or args.smoke
    symbols = ["BTCUSDT"] if short else ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT"]
    windows = [288] if args.smoke else [288, 2016] if args.quick else [288, 1008, 2016, 4032]
    last_bars = 3_000 if args.smoke else None
    data_dir = data_or_synthetic(args.data_dir, symbols) if args.smoke else args.data_dir
    load0 = os.getloadavg()
    result: dict[str, Any] = {"quick": args.quick, "smoke": args.smoke, "warn_psi": WARN, "symbols": {}}
    times: list[float] = []
    with threadpool_limits(1):
        for sym in symbols:
            res, t = symbol_study(data_dir / f"{sym}_5m.csv", windows, last_bars=last_bars)
            result["symbols"][sym] = res
            times += t
        n_features = len(monitored_features(FEATURE_NAMES))
        ts = np.sort(np.array(times))
        result["cost"] = {
            "features": n_features,
            "update_us_p50": round(float(np.percentile(ts, 50)), 2),
            "update_us_p99": round(float(np.percentile(ts, 99)), 2),
            "updates": len(ts),
            "gauges_us_p50": round(gauge_cost_us(n_features, 2_000 if args.smoke else 20_000), 2),
        }
    result["loadavg_before_after"] = [load0, os.getloadavg()]
    result["python"] = platform.python_version()
    c = result["cost"]
    print(
        f"per bar ({c['features']} features): DriftMonitor.update p50 {c['update_us_p50']} us, "
        f"p99 {c['update_us_p99']} us; gauges p50 {c['gauges_us_p50']} us"
    )
    print("share of bars with some feature at/above its threshold, and drift warnings per day")
    print(
        f"{'symbol':8s} {'window':>6s} | {'flat 0.25: train':>16s} {'/day':>6s} {'after':>6s} {'/day':>6s} | "
        f"{'calibrated: after':>17s} {'/day':>6s}  top calibrated alarms"
    )
    for sym, res in result["symbols"].items():
        for w in res["windows"]:
            i, o, c = w["in_sample_flat"], w["out_of_sample_flat"], w["out_of_sample_calibrated"]
            top = ", ".join(f"{f} {s:.2f}" for f, s in list(c["top_features_share_alarm"].items())[:3])
            print(
                f"{sym:8s} {w['window_bars']:6d} | "
                f"{i['share_bars_alarm']:16.3f} {i['warnings_per_day']:6.2f} "
                f"{o['share_bars_alarm']:6.3f} {o['warnings_per_day']:6.2f} | {c['share_bars_alarm']:17.3f} "
                f"{c['warnings_per_day']:6.2f}  {top}"
            )
    out = output_path(args.out, "drift", ".json", smoke=args.smoke, quick=args.quick)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
