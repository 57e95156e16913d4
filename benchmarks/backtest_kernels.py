"""`bot backtest` and `offline sweep` on the kernels against the former per-bar path, in the same run.

Issue 21, item 4. Every figure is measured in this process next to its baseline, the former path
(`Backtest.run_per_bar`: `Engine.on_bar` per bar over the cached predictions), with the ratio to it:

- `bot backtest end to end`: read the CSVs, features and predictions (first run: computed, one feature
  kernel call per symbol and one onnxruntime call per tier and head; rerun with other policy keys: the
  cache), the regime and policy pass, the decision records, decisions.jsonl and report.json (no plots), in
  process (interpreter start-up excluded); the kernel rows also through the real CLI (`python -m bot
  backtest ... --no-plots`, in process). Targets: >= 250,000 / >= 300,000 bars/s.
- `policy-only pass`: over the cached features and predictions, the portfolio's per-bar PnL out, no records
  (a sweep trial's work). Target: >= 2,000,000 bars/s.
- `offline sweep`: 100 policy trials x 4 folds on local Ray (`--num-cpus`, default 2); the former path's
  sweep is extrapolated from its measured per-trial time (running it takes many minutes). Target: < 60 s.

Both paths' records are compared (decisions.jsonl lines, latency aside) and the table says whether they
are equal. Data: the 5 real 5m symbols of ../shared/data (about 25,900 bars each); --smoke: 2 symbols x
3,000 bars (or a synthetic stand-in), a tiny family, 4 trials x 2 folds.

    .venv/bin/python benchmarks/backtest_kernels.py --models models/current
    .venv/bin/python benchmarks/backtest_kernels.py --smoke
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _smoke import data_or_synthetic, smoke_dir, tiny_family  # noqa: E402

from bot.config import Config, dump_config  # noqa: E402
from bot.core import kernels  # noqa: E402
from bot.core.decision import encode_line  # noqa: E402
from bot.sim.backtest import Backtest  # noqa: E402
from bot.sim.backtest_report import RunResult  # noqa: E402

DATA = ROOT.parent / "shared/data/bybit_linear_cobra0506_crypto_backtester/normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")


def _config(models: Path) -> Config:
    """The default config serving `models` on any symbol; the long-run vol half-life the family's regime
    calibration was made with (a family made before the default changed still loads)."""
    cfg = Config()
    manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    windows = manifest.get("regime_calibration", {}).get("windows", {})
    halflife = windows.get("vol_long_halflife", cfg.regime.vol_long_halflife_bars)
    return msgspec.structs.replace(
        cfg,
        models=msgspec.structs.replace(cfg.models, symbols="any", dir=str(models)),
        regime=msgspec.structs.replace(cfg.regime, vol_long_halflife_bars=halflife),
    )


def _other_policy(cfg: Config) -> Config:
    """`cfg` with other policy keys (thresholds, sizing rule)."""
    paper = msgspec.structs.replace(cfg.paper, long_threshold_bps=5.0, short_threshold_bps=3.0)
    return msgspec.structs.replace(cfg, paper=paper)


def _end_to_end(
    cfg: Config, run_cfg: Config, data: list[str], models: Path, cache: Path, out: Path, *, per_bar: bool
) -> tuple[float, Backtest, RunResult]:
    """What `bot backtest --no-plots` does, timed: load and cache, the pass, decisions.jsonl, report.json."""
    from bot.sim.backtest_report import build_report

    t0 = time.perf_counter()
    bt = Backtest(cfg, data, models, cache_dir=cache)
    res = bt.run_per_bar(run_cfg) if per_bar else bt.run(run_cfg)
    out.mkdir(parents=True, exist_ok=True)
    if per_bar:  # the former CLI: one encode_line per record through a sink
        with (out / "decisions.jsonl").open("wb", buffering=1 << 20) as fh:
            for rec in res.records:
                fh.write(encode_line(rec))
                fh.write(b"\n")
    else:  # as the CLI: the lines from the kernels' arrays
        (out / "decisions.jsonl").write_bytes(res.lines())
    report = build_report(bt.config_for(run_cfg), res, {})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return time.perf_counter() - t0, bt, res


def _cli(config: Path, data: list[str], models: Path, cache: Path, out: Path) -> float:
    """`python -m bot backtest --no-plots` in process (its summary lines swallowed), timed."""
    from bot.__main__ import main

    argv = ["backtest", "--config", str(config), "--out", str(out), "--models", str(models)]
    argv += [x for d in data for x in ("--data", d)] + ["--cache-dir", str(cache), "--no-plots"]
    t0 = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"bot backtest exited {code}")
    return time.perf_counter() - t0


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _same(a: RunResult, b: RunResult) -> bool:
    def line(r: Any) -> bytes:
        return encode_line(msgspec.structs.replace(r, latency_us={}, source=""))

    return len(a.records) == len(b.records) and all(
        line(x) == line(y) for x, y in zip(a.records, b.records, strict=True)
    )


def _sweep(
    cfg: Config, data: list[str], models: Path, cache: Path, out: Path, *, trials: int, folds: int, cpus: int
) -> dict[str, Any]:
    from offline.sweep import sweep

    if len(tempfile.gettempdir()) > 40 and "RAY_TMPDIR" not in os.environ:
        # Ray's session sockets must fit AF_UNIX's 107 bytes: under a long $TMPDIR (pytest's) use /tmp
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    side = max(2, round(trials**0.5))
    values = [0.5 * k for k in range(side)]
    grid = {"paper.long_threshold_bps": values, "paper.short_threshold_bps": values}
    return sweep(
        cfg,
        grid,
        data,
        out,
        models=str(models),
        folds=folds,
        trials=trials,
        num_cpus=cpus,
        cache_dir=str(cache),
    )


def _old_trial_s(bt: Backtest, cfg: Config, folds: int) -> float:
    """One trial of the former sweep: the per-bar engine's records, summed per bar time, scored per fold."""
    import numpy as np

    from offline.sweep import fold_scores

    t0 = time.perf_counter()
    res = bt.run_per_bar(cfg)
    per_time: dict[int, float] = {}
    for r in res.records:
        per_time[r.start_ms] = per_time.get(r.start_ms, 0.0) + r.bar_pnl_usd
    times = np.array(sorted(per_time), dtype=np.int64)
    pnl = np.array([per_time[int(t)] for t in times])
    fold_scores(times, pnl, folds=folds, bars_per_year=105_120.0, metric="sharpe")
    return time.perf_counter() - t0


def _profile(fn: Callable[[], object], top: int = 8) -> str:
    prof = cProfile.Profile()
    prof.runcall(fn)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: proves the script runs")
    ap.add_argument("--models", type=Path, default=None, help="tier family (default: models/current)")
    ap.add_argument("--data-dir", type=Path, default=DATA, help="the {SYMBOL}_5m.csv files")
    ap.add_argument("--num-cpus", type=int, default=2, help="local Ray CPUs of the sweep (default 2)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile summary of each kernel row")
    ap.add_argument("--no-sweep", action="store_true", help="skip the offline sweep rows (minutes)")
    args = ap.parse_args(argv)
    smoke = args.smoke
    symbols = SYMBOLS[:2] if smoke else SYMBOLS
    data_dir = data_or_synthetic(args.data_dir, symbols, last_bars=3000) if smoke else args.data_dir
    data = [str(data_dir / f"{s}_5m.csv") for s in symbols]
    models: Path = args.models or (tiny_family(smoke_dir("models")) if smoke else ROOT / "models/current")
    trials, folds = (4, 2) if smoke else (100, 4)
    cfg = _config(models)
    other = _other_policy(cfg)
    work = Path(tempfile.mkdtemp(prefix="bench_backtest_kernels_"))
    config_path = work / "config.toml"
    config_path.write_text(dump_config(cfg), encoding="utf-8")
    load0 = os.getloadavg()

    rows: list[tuple[str, float, float, str]] = []  # what, kernel s, per-bar s, target

    # untimed: imports and first calls (one symbol), so neither path pays them
    _end_to_end(cfg, cfg, data[:1], models, work / "cache_warm", work / "out_warm", per_bar=False)
    # end to end: the first run (empty cache) and a rerun with other policy keys (cache hit), both paths
    e_new, bt, new = _end_to_end(cfg, cfg, data, models, work / "cache_new", work / "out_new", per_bar=False)
    e_old, _, old = _end_to_end(cfg, cfg, data, models, work / "cache_old", work / "out_old", per_bar=True)
    n_bars = bt.n_bars
    same = _same(new, old)
    r_new, _, _ = _end_to_end(cfg, other, data, models, work / "cache_new", work / "out_new", per_bar=False)
    r_old, _, _ = _end_to_end(cfg, other, data, models, work / "cache_old", work / "out_old", per_bar=True)
    rows += [
        ("bot backtest end to end, first run (empty cache)", e_new, e_old, ">= 250,000"),
        ("bot backtest end to end, rerun with other policy keys", r_new, r_old, ">= 300,000"),
    ]
    cli_first = _cli(config_path, data, models, work / "cache_cli", work / "out_cli")
    cli_rerun = _cli(config_path, data, models, work / "cache_cli", work / "out_cli")
    # the policy-only pass over the cached features and predictions
    repeat = 1 if smoke else 5
    p_new = _best(lambda: bt.policy_pnl(other), repeat)
    p_old = _best(lambda: _old_trial_s(bt, other, folds), 1)
    rows.append(("policy-only pass over cached predictions", p_new, p_old, ">= 2,000,000"))

    print(
        f"# bot backtest / offline sweep on the kernels ({'smoke' if smoke else 'full'}): {len(symbols)} "
        f"symbols x 5m from {data_dir}, {n_bars:,} bars ({len(new.records):,} decided), family {models}; "
        f"compiled {kernels.compiled()}; python {platform.python_version()}, {os.cpu_count()} cpus, load "
        f"average before {' '.join(f'{x:.2f}' for x in load0)}"
    )
    print("\n| figure | kernels s | kernels bars/s | per-bar path s | per-bar bars/s | ratio | target |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for what, s_new, s_old, target in rows:
        print(
            f"| {what} | {s_new:.3f} | {n_bars / s_new:,.0f} | {s_old:.3f} | {n_bars / s_old:,.0f} | "
            f"{s_old / s_new:.1f}x | {target} |"
        )
    print(
        f"| `python -m bot backtest --no-plots` (in process), first run / rerun | {cli_first:.3f} / "
        f"{cli_rerun:.3f} | {n_bars / cli_first:,.0f} / {n_bars / cli_rerun:,.0f} | | | | |"
    )
    print(f"\nrecords of both paths equal (decisions.jsonl lines, latency aside): {'yes' if same else 'NO'}")

    if args.no_sweep:
        _profiles(args, cfg, other, data, models, work)
        return 0
    # the sweep: kernels on local Ray; the former path extrapolated from one measured trial
    t0 = time.perf_counter()
    res = _sweep(other, data, models, work / "cache_new", work / "sweep", trials=trials, folds=folds,
                 cpus=args.num_cpus)  # fmt: skip
    s_new = time.perf_counter() - t0
    ok = sum(r["status"] == "ok" for r in res["rows"])
    per_trial = [r["seconds"] for r in res["rows"] if r["status"] == "ok"]
    old_trial = p_old
    s_old = old_trial * trials / args.num_cpus
    print(
        f"\n| offline sweep, {trials} policy trials x {folds} folds, local Ray on {args.num_cpus} cpus "
        "| s | ratio |"
    )
    print("|---|---:|---:|")
    print(f"| kernels: policy-only pass per trial (measured, Ray start included; {ok} ok) | {s_new:.1f} | "
          f"{s_old / s_new:.1f}x |")  # fmt: skip
    print(f"| per-bar path: {old_trial:.2f} s per trial x {trials} / {args.num_cpus} cpus (extrapolated) | "
          f"{s_old:.1f} | 1.0x |")  # fmt: skip
    if per_trial:
        print(
            f"\nsweep trial seconds inside Ray: median {sorted(per_trial)[len(per_trial) // 2]:.3f}, "
            f"max {max(per_trial):.3f}; target < 60 s; load average after "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
    _profiles(args, cfg, other, data, models, work)
    return 0


def _profiles(args: argparse.Namespace, cfg: Config, other: Config, data: list[str], models: Path,
              work: Path) -> None:  # fmt: skip
    """With --profile: a cProfile summary of the kernels' end to end, first run and rerun."""
    if not args.profile:
        return
    print("\n## profile: end to end, first run (empty cache; kernels)\n")
    print(_profile(lambda: _end_to_end(cfg, cfg, data, models, work / "cache_prof", work / "out_prof",
                                       per_bar=False), top=14))  # fmt: skip
    print("\n## profile: end to end, rerun with other policy keys (kernels)\n")
    print(_profile(lambda: _end_to_end(cfg, other, data, models, work / "cache_prof", work / "out_prof",
                                       per_bar=False), top=14))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
