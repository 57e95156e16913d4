"""Routing study: does the regime router pay? Routed family vs fixed single tiers on real BTCUSDT/ETHUSDT 5m.

Per symbol, a tier family is distilled with `offline.pipeline.pipeline_distill` on the CSV (the pipeline's own
chronological split: train | embargo | validation | embargo | test). The bars of the test period are then
replayed in-process through `bot.core.engine.Engine` (features, regime detector, ONNX tier, paper trader) once
with the configured routes and once per tier with every regime routed to that tier (always-teacher ...
always-edge). Feature and regime state are warmed on all bars before the test period (no decisions).

Per variant: IC (Spearman of prediction vs the realised next-bar return) and hit rate, paper PnL after fees
and slippage (the config's [paper]), fills and turnover (traded notional / notional_usd), share of bars per
tier, and the mean inference cost per bar (multiply-adds of the tiers used, and measured microseconds).
Ratios are against always-teacher. Output: docs/study_routing[_quick].{json,md}.

    .venv/bin/python benchmarks/routing_study.py --quick    # quick families (last 20k bars, 8 epochs)
    .venv/bin/python benchmarks/routing_study.py            # full families (all bars, 40 epochs)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import Config, engine_params  # noqa: E402 (after the sys.path insert)
from bot.core.engine import Engine  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.core.params import REGIME_NAMES  # noqa: E402
from bot.tiers import TierFamily  # noqa: E402
from offline.data import load_csv, load_dataset  # noqa: E402
from offline.pipeline import pipeline_distill  # noqa: E402
from offline.train import hit_rate, information_coefficient  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"
DOCS = ROOT / "docs"
LOW_THRESHOLD_BPS = 1.0


def multiply_adds(hidden: Sequence[int], n_in: int) -> int:
    sizes = [n_in, *hidden, 1]
    return sum(a * b for a, b in itertools.pairwise(sizes))


def run_variant(
    cfg: Config, family: TierFamily, bars: list[Any], first_test: int, label: str
) -> dict[str, Any]:
    """Replay bars[:first_test] without deciding, then decide every test bar; return the metrics."""
    symbol = bars[0].symbol
    cfg = msgspec.structs.replace(cfg, market=msgspec.structs.replace(cfg.market, symbols=[symbol]))
    trader = PaperTrader(cfg.paper)
    engine = Engine(engine_params(cfg), family, trader)
    engine.replay(bars[:first_test])
    preds: list[float] = []
    realised: list[float] = []
    tiers: dict[str, int] = {}
    regimes: dict[str, int] = {}
    infer_us: list[float] = []
    macs: list[int] = []
    traded_usd = 0.0
    mac_of = {
        t.name: multiply_adds(t.spec.entry.hidden or [t.spec.width] * t.spec.layers, t.n_features)
        for t in family
    }
    for i in range(first_test, len(bars) - 1):
        d = engine.on_bar(bars[i])
        if d is None:
            continue
        preds.append(d.prediction)
        realised.append(bars[i + 1].close / bars[i].close - 1.0)
        tiers[d.tier] = tiers.get(d.tier, 0) + 1
        regimes[d.regime] = regimes.get(d.regime, 0) + 1
        infer_us.append(d.latency_us["inference"])
        macs.append(mac_of[d.tier])
        traded_usd += sum(f.notional_usd for f in d.fills)
    st = trader.state(symbol)
    p = np.asarray(preds)
    y = np.asarray(realised)
    n = len(preds)
    return {
        "variant": label,
        "bars": n,
        "ic": information_coefficient(p, y),
        "hit_rate": hit_rate(p, y),
        "pnl_usd": st.equity_usd,
        "fees_usd": st.fees_usd,
        "fills": st.n_fills,
        "turnover": traded_usd / cfg.paper.notional_usd,
        "tier_share": {k: v / n for k, v in sorted(tiers.items())},
        "regime_share": {k: v / n for k, v in sorted(regimes.items())},
        "mean_multiply_adds": float(np.mean(macs)),
        "mean_inference_us": float(np.mean(infer_us)),
        "p99_inference_us": float(np.percentile(infer_us, 99)),
        "signal_share": float(np.mean(np.abs(p) > cfg.paper.long_threshold_bps * 1e-4)),
    }


def study_symbol(
    symbol: str, cfg: Config, *, quick: bool, models_root: Path, data_dir: Path
) -> dict[str, Any]:
    csv = data_dir / f"{symbol}_5m.csv"
    models = models_root / f"routing_{symbol}{'_quick' if quick else ''}"
    t0 = time.perf_counter()
    if not (models / "manifest.json").exists():
        pipeline_distill(cfg, data=csv, out_dir=models, quick=quick)
    distill_s = time.perf_counter() - t0
    family = TierFamily.load(models)
    ds = load_dataset(csv, cfg.distill, n_bars=cfg.distill.quick_bars if quick else None)
    bars = load_csv(csv)
    offset = len(bars) - len(ds.bars)  # ds.bars is the tail the pipeline used
    first_test = offset + int(ds.bar_index[ds.splits.test[0]])
    variants = [("routed", cfg)]
    for name in family.names:
        routes = dict.fromkeys(REGIME_NAMES, name)
        variants.append(
            (
                f"always_{name}",
                msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes=routes)),
            )
        )
    rows = [run_variant(c, family, bars, first_test, label) for label, c in variants]
    # PnL sensitivity: the same replay with a low entry threshold (the default rarely trades on 5m returns)
    low = msgspec.structs.replace(
        cfg.paper, long_threshold_bps=LOW_THRESHOLD_BPS, short_threshold_bps=LOW_THRESHOLD_BPS
    )
    for r, (label, c) in zip(rows, variants, strict=True):
        lo = run_variant(msgspec.structs.replace(c, paper=low), family, bars, first_test, label)
        r["low_threshold"] = {k: lo[k] for k in ("pnl_usd", "fees_usd", "fills", "turnover", "signal_share")}
    teacher = rows[1]
    for r in rows:
        r["cost_ratio_vs_teacher"] = r["mean_multiply_adds"] / teacher["mean_multiply_adds"]
        r["us_ratio_vs_teacher"] = r["mean_inference_us"] / teacher["mean_inference_us"]
    return {
        "csv": str(csv),
        "models": str(models),
        "distill_s": distill_s,
        "test_first_start_ms": bars[first_test].start_ms,
        "test_last_start_ms": bars[-1].start_ms,
        "test_bars": len(bars) - first_test,
        "tiers": [
            {"name": t.name, "recipe": t.spec.recipe, "metrics": msgspec.structs.asdict(t.spec.entry.metrics)}
            for t in family
        ],
        "variants": rows,
    }


def format_tables(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for sym, s in result["symbols"].items():
        lines.append(
            f"### {sym}: {s['test_bars']} test bars (models: {', '.join(t['recipe'] for t in s['tiers'])})"
        )
        n = s["variants"][0]["bars"]
        lines.append("")
        lines.append(
            f"IC standard error under no skill ≈ 1/√n = {1 / np.sqrt(n):.4f}; "
            f"|IC| below ~{2 / np.sqrt(n):.3f} "
            "is indistinguishable from zero. Inference µs are measured under shared-CPU load; the MAC ratio "
            "is the load-free cost measure."
        )
        lines.append("")
        lines.append(
            "| variant | IC | hit | PnL USD | fees USD | fills | turnover | cost (MACs) vs teacher | "
            f"inference us (mean) | tier share | PnL USD @{LOW_THRESHOLD_BPS:g} bps | "
            f"fills @{LOW_THRESHOLD_BPS:g} bps |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in s["variants"]:
            share = ", ".join(f"{k} {v:.0%}" for k, v in r["tier_share"].items())
            lines.append(
                f"| {r['variant']} | {r['ic']:+.4f} | {r['hit_rate']:.3f} | {r['pnl_usd']:+,.0f} | "
                f"{r['fees_usd']:,.0f} | {r['fills']} | {r['turnover']:.0f} | "
                f"{r['cost_ratio_vs_teacher']:.3f} | "
                f"{r['mean_inference_us']:.1f} | {share} | {r['low_threshold']['pnl_usd']:+,.0f} | "
                f"{r['low_threshold']['fills']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="quick families: last 20k bars, 8 epochs")
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--models-root", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--out", type=Path, default=None, help="output stem (default docs/study_routing[_quick])")
    args = ap.parse_args(argv)
    cfg = Config()
    stem = args.out or DOCS / ("study_routing_quick" if args.quick else "study_routing")
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "command": "python benchmarks/routing_study.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "routes": dict(cfg.regime.routes),
            "paper": msgspec.to_builtins(cfg.paper),
        },
        "symbols": {},
    }
    for sym in args.symbols.split(","):
        print(f"[{time.perf_counter() - t0:6.1f} s] {sym}", file=sys.stderr, flush=True)
        result["symbols"][sym] = study_symbol(
            sym, cfg, quick=args.quick, models_root=args.models_root, data_dir=args.data_dir
        )
    result["meta"]["wall_s"] = time.perf_counter() - t0
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    tables = format_tables(result)
    m = result["meta"]
    stem.with_suffix(".md").write_text(
        f"# Routing study ({m['mode']})\n\n"
        f"Generated by `{m['command']}` in {m['wall_s'] / 60:.1f} min. Routes: "
        f"{m['routes']}. PnL is net of fees and slippage ([paper] defaults: entry threshold "
        f"{m['paper']['long_threshold_bps']:g} bps; and again at {LOW_THRESHOLD_BPS:g} bps), "
        "on the test period only.\n\n" + tables,
        encoding="utf-8",
    )
    print(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
