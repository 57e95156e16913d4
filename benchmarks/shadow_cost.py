"""What runs after each decision (shadow tiers + drift: `bot.observe.monitors.LiveMonitors`) costs, beside it.

In-process, 4 symbols of the synthetic market through the real `Engine` and a real tier family: per decided
bar, the decision (`Engine.on_bar`) and then the after-decision work (every other tier predicts, the scorer
rates matured forecasts, rows are staged for the ledger, drift PSI) are timed separately with
`time.perf_counter_ns` and `time.thread_time_ns` (CPU). The work after the decision runs after the decision
record is emitted, so it cannot add to the decision's latency; what it costs is CPU, reported as the share of
one core at the issue's load (1 bar per second for 4 symbols).

    .venv/bin/python benchmarks/shadow_cost.py --models models/   # a family (default: distil a quick one)
    .venv/bin/python benchmarks/shadow_cost.py --quick
    .venv/bin/python benchmarks/shadow_cost.py --smoke     # tiny family, 50 bars per symbol: seconds

Writes docs/results/shadow_cost[_quick].json (smoke: a temp dir, or `--out`). Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import SMOKE_HELP, output_path, tiny_family  # noqa: E402 (benchmarks/, beside this script)

from bot.config import engine_params, load_config  # noqa: E402 (after the sys.path insert)
from bot.core.decision import Decided  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.models.family import TierFamily  # noqa: E402
from bot.observe.metrics import Metrics  # noqa: E402
from bot.observe.monitors import LiveMonitors  # noqa: E402
from bot.observe.status import StatusBoard  # noqa: E402
from offline.data import synthetic_bars  # noqa: E402

SYMBOLS = ("SYNTHAUSDT", "SYNTHBUSDT", "SYNTHCUSDT", "SYNTHDUSDT")


def family_dir(models: Path | None, work: Path, *, smoke: bool) -> Path:
    if models is not None:
        return models
    out = work / "models"
    if smoke:
        return tiny_family(out)
    cmd = [sys.executable, "-m", "offline", "distill", "--config", str(REPO / "config.toml")]
    subprocess.run([*cmd, "--data", "synthetic", "--quick", "--out", str(out)], check=True)
    return out


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="600 decided bars per symbol (default 3000)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: tiny family, 50 bars per symbol")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON (default docs/results/shadow_cost[_quick].json)"
    )
    args = parser.parse_args()
    n_live = 50 if args.smoke else 600 if args.quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = family_dir(args.models, work, smoke=args.smoke)
        base = load_config(REPO / "config.toml")
        cfg = msgspec.structs.replace(
            base,
            market=msgspec.structs.replace(base.market, symbols=list(SYMBOLS)),
            models=msgspec.structs.replace(base.models, dir=str(models), symbols="any"),
        )
        family = TierFamily.load(models)
        for name in family.names:
            family.warm(name)
        engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
        metrics = Metrics(stale_s=600.0)
        monitors = LiveMonitors(cfg, metrics, StatusBoard(cfg.market.symbol_list))
        ledger = Ledger.open(work / "ledger.sqlite", synchronous="normal")
        warm = 400
        series = {
            s: [dataclasses.replace(b, symbol=s) for b in synthetic_bars(warm + n_live, seed=11 + i)]
            for i, s in enumerate(SYMBOLS)
        }
        decide_us: list[float] = []
        after_us: list[float] = []
        after_cpu_ns = decide_cpu_ns = 0
        t_wall = time.perf_counter()
        for k in range(warm + n_live):
            for s in SYMBOLS:
                bar = series[s][k]
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                decision = engine.on_bar(bar, decide=k >= warm)
                t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
                if decision is None:
                    ledger.record_bar(bar)
                    monitors.replayed(s, engine.features(s))
                    continue
                ledger.record(bar, decision, engine.trader.state(s))
                c2, t2 = time.thread_time_ns(), time.perf_counter_ns()
                monitors.after_burst(
                    engine.family, [Decided(bar, decision, engine.features(bar.symbol))], ledger
                )
                t3, c3 = time.perf_counter_ns(), time.thread_time_ns()
                decide_us.append((t1 - t0) / 1e3)
                after_us.append((t3 - t2) / 1e3)
                decide_cpu_ns += c1 - c0
                after_cpu_ns += c3 - c2
        ledger.close()
        wall_s = time.perf_counter() - t_wall
    n = len(after_us)
    after_cpu_s_per_bar = after_cpu_ns / n / 1e9
    result = {
        "family": str(models),
        "tiers": list(family.names),
        "symbols": len(SYMBOLS),
        "decided_bars": n,
        "decision_us_p50": round(pct(decide_us, 50), 1),
        "decision_us_p99": round(pct(decide_us, 99), 1),
        "after_decision_us_p50": round(pct(after_us, 50), 1),
        "after_decision_us_p99": round(pct(after_us, 99), 1),
        "after_decision_cpu_us_mean": round(after_cpu_s_per_bar * 1e6, 1),
        "decision_cpu_us_mean": round(decide_cpu_ns / n / 1e3, 1),
        "cpu_share_at_1_bar_per_s_4_symbols_pct": round(100 * after_cpu_s_per_bar * len(SYMBOLS), 3),
        "wall_s": round(wall_s, 1),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    share = 100 * after_cpu_s_per_bar * len(SYMBOLS)
    verdict = "PASS" if share < 25 else "FAIL"
    print(f"target: < 25% CPU at 1 bar/s for 4 symbols: {verdict} ({share:.3f}% of a core)")
    print("target: adds nothing to the decision's p99: by construction (it runs after the record is emitted)")
    out = output_path(args.out, "shadow_cost", ".json", smoke=args.smoke, quick=args.quick)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
