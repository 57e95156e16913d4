"""Real-data walk-forward study of the volatility head (issue 13): every tier and recipe against HAR-RV.

For BTCUSDT, ETHUSDT, SOLUSDT, XRPUSDT and BNBUSDT 5m (../shared/data) `offline.walkforward.run_walkforward`
cuts chronological expanding folds (the first half of the bars is training history only, the second half is
`--folds` test blocks), and for every fold and seed trains the pipeline's family (`run_distillation`:
teacher, progressive chain with and without the transfer set, one-shot, scratch; validation picks the
exported recipe per size) and HAR-RV / HAR-RV + hour-of-day on the fold's training rows, scored on the test
block. `--mode per-symbol` trains one family per symbol; `--mode pooled` one family on all five symbols
(`offline.data.load_pooled`, when the pipeline has it), scored per symbol. The seeded synthetic market is
the planted-signal control (one dataset, `--synthetic-folds` folds).

Intervals: mean +- the half-width of a Student-t 95% interval over the seeds x folds values of one symbol;
for the mean over symbols, each (seed, fold) is first averaged over the symbols, then t over seeds x folds.
Paired differences (progressive - one-shot, tier - HAR, student - teacher) are formed per (symbol, seed,
fold) before the same averaging. Seeds share a fold's data, so seeds x folds values are not independent:
the intervals describe training noise and fold-to-fold variation, not a sampling distribution of markets.

    .venv/bin/python benchmarks/vol_study.py --quick        # < 3 min: docs/results/vol_study_quick.*
    nice -n 10 .venv/bin/python benchmarks/vol_study.py     # the committed study: docs/results/vol_study.*
    .venv/bin/python benchmarks/vol_study.py --render docs/results/vol_study.json   # re-render .md/.png only
    .venv/bin/python benchmarks/vol_study.py --smoke        # seconds: BTCUSDT 4,000 bars, 2 folds, tiny tiers

`--smoke` writes to a temp dir (or `--out`), trains the tiny tiers of benchmarks/_smoke.py unless `--config`
is given, and uses a synthetic market when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from _smoke import SMOKE_HELP, data_or_synthetic, output_path, smoke_dir, tiny_config_file  # noqa: E402

from bot.config import Config, load_config  # noqa: E402
from offline import data as offline_data  # noqa: E402
from offline.walkforward import run_walkforward  # noqa: E402
from offline.walkforward_report import BASELINES  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
RECIPES = ("progressive", "progressive_no_transfer", "one_shot", "scratch")
SHOWN = ("vol_r2", "vol_ic", "vol_qlike_bc", "vol_retention", "vol_fidelity_r2", "ic")
PAIRS = (("progressive", "one_shot"), ("progressive", "scratch"), ("one_shot", "scratch"))
Row = dict[str, Any]


def ci95(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t 95% interval (0 for one value), and n; NaN mean when empty."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan, 0
    m = float(a.mean())
    if a.size < 2:
        return m, 0.0, 1
    return m, float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size)), int(a.size)


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = run("status", "--porcelain", "--", "offline", "bot/core", "bot/config.py", "config.toml")
    return {"commit": run("rev-parse", "HEAD"), "uncommitted_training_files": dirty.splitlines()}


# ---- running ----------------------------------------------------------------------------------------------


def _study_cfg(cfg: Config, *, epochs: int) -> Config:
    return msgspec.structs.replace(cfg, distill=msgspec.structs.replace(cfg.distill, epochs=epochs))


def run_study(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    """Every dataset's walk-forward rows, tagged with the dataset, plus the run's facts."""
    cfg = _study_cfg(load_config(args.config), epochs=args.epochs)
    dc = cfg.distill
    seeds = list(range(args.seeds))
    rows: list[Row] = []
    runs: list[dict[str, Any]] = []
    paths = [Path(args.data_dir) / f"{s}_5m.csv" for s in args.symbols]
    t0 = time.perf_counter()

    def one(label: str, ds: offline_data.Dataset, n_folds: int) -> None:
        ts = time.perf_counter()
        wf = run_walkforward(
            ds,
            cfg.tiers,
            dc,
            n_folds=n_folds,
            seeds=seeds,
            epochs=args.epochs,
            log=lambda m: say(f"{label}: {m}"),
        )
        for r in wf.rows:
            r["dataset"] = "synthetic" if label == "synthetic" else "real"
        rows.extend(wf.rows)
        runs.append({"label": label, "folds": wf.folds, "info": wf.info, "wall_s": time.perf_counter() - ts})
        say(f"{label}: done in {time.perf_counter() - ts:.0f} s (total {time.perf_counter() - t0:.0f} s)")

    with threadpool_limits(1):
        if args.mode == "pooled":
            load_pooled = getattr(offline_data, "load_pooled", None)
            if load_pooled is None:
                raise SystemExit("--mode pooled: offline.data has no load_pooled yet; use --mode per-symbol")
            ds = load_pooled(paths, dc, symbols=list(args.symbols), n_bars=args.bars, drop_last=True)
            one("pooled", ds, args.folds)
        else:
            for sym, path in zip(args.symbols, paths, strict=True):
                ds = offline_data.load_dataset(path, dc, n_bars=args.bars, drop_last=True, symbol=sym)
                one(sym, ds, args.folds)
        if args.synthetic_folds:
            ds = offline_data.load_dataset("synthetic", dc, n_bars=args.synthetic_bars)
            one("synthetic", ds, args.synthetic_folds)
    return {
        "info": {
            "mode": args.mode,
            "quick": args.quick,
            "smoke": args.smoke,
            "symbols": list(args.symbols),
            "folds": args.folds,
            "synthetic_folds": args.synthetic_folds,
            "synthetic_bars": args.synthetic_bars,
            "seeds": seeds,
            "epochs": args.epochs,
            "patience": dc.patience,
            "bars_per_symbol": args.bars,
            "tiers": {k: [t.layers, t.width, t.features] for k, t in cfg.tiers.items()},
            "alpha_schedule": dc.alpha_schedule,
            "teacher_l2": list(dc.teacher_l2),
            "teacher_folds": dc.teacher_folds,
            "config": str(args.config),
            "wall_s": time.perf_counter() - t0,
            "git": _git(),
            "python": platform.python_version(),
            "started_utc": args.started_utc,
            "command": " ".join(sys.argv),
        },
        "runs": runs,
        "rows": rows,
    }


# ---- statistics ----------------------------------------------------------------------------------------


def _key(r: Row) -> tuple[str, str]:
    return r["tier"], r["variant"]


def model_rows(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows per (tier, variant), plus (tier, "exported") = the candidate validation chose in each run."""
    out: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        out[_key(r)].append(r)
        if r["chosen"] and r["variant"] != "teacher":
            out[(r["tier"], "exported")].append(r)
    return out


def _cells(rows: Sequence[Row], metric: str, symbols: Sequence[str]) -> list[float]:
    """One value per (seed, fold): the mean over `symbols` (each symbol must be present)."""
    by: dict[tuple[Any, int], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r[metric] is not None:
            by[(r["seed"], r["fold"])][r["symbol"]] = r[metric]
    return [float(np.mean([v[s] for s in symbols])) for v in by.values() if all(s in v for s in symbols)]


def _paired(a: Sequence[Row], b: Sequence[Row], metric: str, symbols: Sequence[str]) -> list[float]:
    """Per (seed, fold), the mean over symbols of a - b; b may be seed-free (HAR: matched on fold only)."""
    bv = {(r["seed"], r["fold"], r["symbol"]): r[metric] for r in b}
    diffs: dict[tuple[Any, int], dict[str, float]] = defaultdict(dict)
    for r in a:
        other = bv.get((r["seed"], r["fold"], r["symbol"]), bv.get((None, r["fold"], r["symbol"])))
        if r[metric] is not None and other is not None:
            diffs[(r["seed"], r["fold"])][r["symbol"]] = r[metric] - other
    return [float(np.mean([v[s] for s in symbols])) for v in diffs.values() if all(s in v for s in symbols)]


def summarise(rows: Sequence[Row], symbols: Sequence[str]) -> dict[str, Any]:
    """Per model: mean +- 95% half-width of every shown metric; paired recipe differences; the targets."""
    by = model_rows(rows)
    tiers = list(dict.fromkeys(r["tier"] for r in rows if r["tier"] != "baseline"))
    order = [("baseline", b) for b in BASELINES] + [
        (t, v) for t in tiers for v in ("teacher", "exported", *RECIPES) if (t, v) in by
    ]
    table = []
    for key in order:
        cell: dict[str, Any] = {"tier": key[0], "variant": key[1]}
        for m in (*SHOWN, "vol_qlike", "compression"):
            mean, half, n = ci95(_cells(by[key], m, symbols))
            cell[m] = [mean, half]
            cell["n"] = max(cell.get("n", 0), n)
        for m in ("vol_r2", "vol_qlike_bc"):  # paired against HAR-RV + hour: fold-to-fold level swings cancel
            mean, half, _ = ci95(_paired(by[key], by[("baseline", "har_tod")], m, symbols))
            cell[f"{m}_vs_tod"] = [mean, half]
        table.append(cell)
    pairs = []
    for t in tiers[1:]:
        for a, b in PAIRS:
            for m in ("vol_r2", "vol_qlike_bc", "vol_fidelity_r2"):
                mean, half, n = ci95(_paired(by[(t, a)], by[(t, b)], m, symbols))
                pairs.append({"tier": t, "a": a, "b": b, "metric": m, "diff": [mean, half], "n": n})
    return {"table": table, "pairs": pairs, "targets": targets(by, tiers, symbols)}


def targets(by: dict[tuple[str, str], list[Row]], tiers: Sequence[str], symbols: Sequence[str]) -> list[Row]:
    """The issue's targets as PASS/FAIL lines on the mean over `symbols`."""
    out: list[Row] = []
    har, tod = by[("baseline", "har")], by[("baseline", "har_tod")]
    teacher = by[(tiers[0], "teacher")]
    exported = [(tiers[0], teacher)] + [(t, by[(t, "exported")]) for t in tiers[1:]]
    for t, rs in exported:
        d_r2 = ci95(_paired(rs, har, "vol_r2", symbols))
        d_q = ci95(_paired(rs, har, "vol_qlike_bc", symbols))
        out.append(
            {
                "target": f"{t} (exported) beats HAR-RV on vol R2 and QLIKE bc",
                "value": f"R2 {d_r2[0]:+.4f} +- {d_r2[1]:.4f}, QLIKE bc {d_q[0]:+.4f} +- {d_q[1]:.4f} "
                "(tier - HAR)",
                "pass": d_r2[0] > 0 and d_q[0] < 0,
            }
        )
    q_teacher = ci95(_cells(teacher, "vol_qlike_bc", symbols))[0]
    q_tod = ci95(_cells(tod, "vol_qlike_bc", symbols))[0]
    gain = 1.0 - q_teacher / q_tod
    d = ci95(_paired(teacher, tod, "vol_qlike_bc", symbols))
    out.append(
        {
            "target": "teacher beats HAR-RV + hour on QLIKE bc by >= 3%",
            "value": f"QLIKE bc {q_teacher:.4f} vs {q_tod:.4f}: {gain:+.1%} better "
            f"(diff {d[0]:+.4f} +- {d[1]:.4f})",
            "pass": gain >= 0.03,
        }
    )
    beaten = []
    for t in tiers[1:]:
        for v in RECIPES:
            r2 = ci95(_paired(by[(t, v)], teacher, "vol_r2", symbols))
            q = ci95(_paired(by[(t, v)], teacher, "vol_qlike_bc", symbols))
            if r2[0] - r2[1] > 0 or q[0] + q[1] < 0:
                beaten.append(f"{t}/{v} (R2 {r2[0]:+.4f} +- {r2[1]:.4f}, QLIKE bc {q[0]:+.4f} +- {q[1]:.4f})")
    out.append(
        {
            "target": "no student beats the teacher beyond noise (95% interval of the paired difference in "
            "vol R2 or QLIKE bc excludes 0 in the student's favour)",
            "value": "; ".join(beaten) if beaten else "none",
            "pass": not beaten,
        }
    )
    edge = tiers[-1]
    r_edge = ci95(_cells(by[(edge, "exported")], "vol_r2", symbols))[0]
    r_teacher = ci95(_cells(teacher, "vol_r2", symbols))[0]
    compr = ci95(_cells(by[(edge, "exported")], "compression", symbols))[0]
    ret = r_edge / r_teacher if r_teacher > 0 else math.nan
    out.append(
        {
            "target": f"{edge} keeps >= 95% of the teacher's vol R2 with >= 50x fewer params",
            "value": f"vol R2 {r_edge:.4f} / {r_teacher:.4f} = {ret:.1%} at {compr:.0f}x",
            "pass": ret >= 0.95 and compr >= 50,
        }
    )
    return out


# ---- rendering -----------------------------------------------------------------------------------------


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def _pm(v: Sequence[float], fmt: str) -> str:
    mean, half = v
    if not math.isfinite(mean):
        return "-"
    return f"{fmt.format(mean)} ± {half:.3f}" if half else fmt.format(mean)


def _md_table(summary: dict[str, Any]) -> list[str]:
    head = (
        "| tier | model | n | vol R² | Δ R² vs HAR+hour | vol IC | QLIKE bc | Δ QLIKE bc vs HAR+hour | QLIKE "
        "| retention | fidelity R² | ret IC | compr |"
    )
    out = [head, "|" + "---|" * 13]
    for c in summary["table"]:
        name = BASELINES.get(c["variant"], c["variant"]) if c["tier"] == "baseline" else c["variant"]
        out.append(
            f"| {c['tier']} | {name} | {c['n']} | {_pm(c['vol_r2'], '{:.4f}')} | "
            f"{_pm(c['vol_r2_vs_tod'], '{:+.4f}')} | {_pm(c['vol_ic'], '{:.3f}')} | "
            f"{_pm(c['vol_qlike_bc'], '{:.4f}')} | {_pm(c['vol_qlike_bc_vs_tod'], '{:+.4f}')} | "
            f"{_pm(c['vol_qlike'], '{:.4f}')} | "
            f"{_pm(c['vol_retention'], '{:.3f}')} | {_pm(c['vol_fidelity_r2'], '{:.3f}')} | "
            f"{_pm(c['ic'], '{:+.4f}')} | {_pm([c['compression'][0], 0.0], '{:.0f}x')} |"
        )
    return out


def _md_pairs(summary: dict[str, Any]) -> list[str]:
    out = ["| tier | difference | vol R² | QLIKE bc (< 0: a better) | fidelity R² |", "|---|---|---|---|---|"]
    cells: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(dict)
    for p in summary["pairs"]:
        cells[(p["tier"], p["a"], p["b"])][p["metric"]] = p["diff"]
    for (t, a, b), m in cells.items():
        fmt = "{:+.4f}"
        out.append(
            f"| {t} | {a} - {b} | {_pm(m['vol_r2'], fmt)} | {_pm(m['vol_qlike_bc'], fmt)} | "
            f"{_pm(m['vol_fidelity_r2'], fmt)} |"
        )
    return out


def render(doc: dict[str, Any], prefix: Path) -> str:
    """Write `<prefix>.md` and `<prefix>.png` from the study JSON; returns the markdown."""
    info = doc["info"]
    real = [r for r in doc["rows"] if r["dataset"] == "real"]
    syn = [r for r in doc["rows"] if r["dataset"] == "synthetic"]
    symbols = list(info["symbols"])
    git = info["git"]
    dirty = git["uncommitted_training_files"]
    mode = "smoke" if info.get("smoke") else "quick" if info["quick"] else "full"  # older JSONs: no "smoke"
    lines = [
        f"# Volatility head: walk-forward study ({mode})",
        "",
        f"Generated by `{info['command']}` (started {info['started_utc']} UTC, {info['wall_s'] / 60:.1f} min "
        f"wall on one BLAS thread, nice 10, shared 2-core machine). Code: commit `{git['commit'][:12]}`"
        + (f" plus uncommitted changes in {', '.join(d.split()[-1] for d in dirty)}." if dirty else "."),
        "",
        f"Data: {', '.join(symbols)} 5m (`../shared/data/bybit_linear_cobra0506_crypto_backtester`, last row "
        f"dropped, {info['bars_per_symbol'] or 'all'} bars each), mode `{info['mode']}`; "
        f"{info['folds']} expanding folds (first half training only), seeds {info['seeds']}, "
        f"<= {info['epochs']} epochs (patience "
        f"{info['patience']}), alpha schedule {info['alpha_schedule']}; tiers "
        + ", ".join(f"{k} {v[0]}x{v[1]} ({v[2]})" for k, v in info["tiers"].items())
        + ". Mean ± 95% Student-t half-width over seeds x folds (each (seed, fold) first averaged over the "
        "symbols; HAR does not train, so its n is the folds). Exported = the recipe validation chose per "
        "run.",
        "",
        "## Targets (issue 13), mean over the symbols",
        "",
    ]
    summary = summarise(real, symbols) if real else None
    if summary is not None:
        lines += [
            f"- **{'PASS' if t['pass'] else 'FAIL'}** {t['target']}: {t['value']}" for t in summary["targets"]
        ]
        lines += ["", "## Mean over the symbols", "", *_md_table(summary), ""]
        lines += ["Paired differences, mean over the symbols:", "", *_md_pairs(summary), ""]
        lines += ["## Per symbol", ""]
        for s in symbols:
            per = summarise([r for r in real if r["symbol"] == s], [s])
            lines += [f"### {s}", "", *_md_table(per), ""]
    if syn:
        per = summarise(syn, [syn[0]["symbol"]])
        lines += [
            f"## Control: synthetic market ({info['synthetic_bars']} bars, {info['synthetic_folds']} folds)",
            "",
            *_md_table(per),
            "",
            *[f"- {'PASS' if t['pass'] else 'FAIL'} {t['target']}: {t['value']}" for t in per["targets"]],
            "",
        ]
    lines += [
        "Columns: vol R² = out-of-sample R² of log realised vol (12 bars ahead); IC = Spearman; QLIKE bc = "
        "QLIKE after the variance scale fitted on the fold's training rows (lower is better); retention = "
        "vol R² / the teacher's of the same run; fidelity R² = R² of the model's log vol against the "
        "teacher's; return IC = the return head's Spearman IC; compr = teacher params / params. Δ vs "
        "HAR+hour = the model minus HAR-RV + hour, paired per symbol, seed and fold.",
        "",
        "## Folds",
        "",
        "| data | fold | train rows | val rows | test rows | test block (UTC) | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in doc["runs"]:
        for f in run["folds"]:
            lines.append(
                f"| {run['label']} | {f['fold']} | {f['train_rows']} | {f['val_rows']} | {f['test_rows']} | "
                f"{_utc(f['test_start_ms'])} .. {_utc(f['test_end_ms'])} | "
                + (f"{run['wall_s']:.0f} |" if f["fold"] == 1 else " |")
            )
    md = "\n".join(lines) + "\n"
    prefix.with_suffix(".md").write_text(md, encoding="utf-8")
    if summary is not None:
        plot(
            summary,
            prefix.with_suffix(".png"),
            title=f"{', '.join(symbols)} 5m, walk-forward ({info['mode']})",
        )
    return md


def plot(summary: dict[str, Any], path: Path, *, title: str) -> None:
    """Per tier and recipe (mean over symbols, 95% bars): vol R² against the two HAR bands, and vol R² and
    QLIKE bc paired against HAR-RV + hour (0 = as good as HAR-RV + hour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(c["tier"], c["variant"]): c for c in summary["table"]}
    tiers = list(dict.fromkeys(t for t, v in cells if v in ("exported", "teacher")))
    variants = ("teacher", "exported", *RECIPES)
    colors = ("black", "tab:red", "tab:blue", "tab:cyan", "tab:orange", "tab:green")
    panels = (
        ("vol_r2", "vol R² of log RV (higher better)"),
        ("vol_r2_vs_tod", "vol R² minus HAR-RV + hour, paired (higher better)"),
        ("vol_qlike_bc_vs_tod", "QLIKE bc minus HAR-RV + hour, paired (lower better)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, (m, label) in zip(axes, panels, strict=True):
        for b, color in (("har", "tab:gray"), ("har_tod", "tab:purple")):
            mean, half = cells[("baseline", b)][m]
            if math.isfinite(mean):
                ax.axhspan(mean - half, mean + half, color=color, alpha=0.2)
                ax.axhline(mean, color=color, lw=1.5, label=BASELINES[b])
        width = 0.8 / len(variants)
        for j, (v, color) in enumerate(zip(variants, colors, strict=True)):
            pts = [(i, cells[(t, v)][m]) for i, t in enumerate(tiers) if (t, v) in cells]
            if pts:
                xs = [i + (j - len(variants) / 2) * width for i, _ in pts]
                ys = [p[0] for _, p in pts]
                es = [p[1] for _, p in pts]
                ax.errorbar(xs, ys, yerr=es, fmt="o", color=color, label=v, capsize=3)
        ax.set_xticks(range(len(tiers)), tiers)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def write_doc(doc: dict[str, Any], path: Path) -> None:
    """The study JSON: floats to 6 significant digits, one fold-table row per line."""
    head = {k: v for k, v in doc.items() if k != "rows"}
    text = json.dumps(_rounded(head), indent=1, allow_nan=False)[:-2]
    rows = ",\n".join(json.dumps(_rounded(r), allow_nan=False) for r in doc["rows"])
    path.write_text(text + ',\n "rows": [\n' + rows + "\n ]\n}\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run (< 3 min): 2 symbols, 3 folds, 1 seed")
    p.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_HELP}: BTCUSDT 4,000 bars, 2 folds, 2 epochs"
    )
    p.add_argument("--mode", choices=("per-symbol", "pooled"), default="pooled")
    p.add_argument("--data-dir", default=str(DATA_DIR))
    p.add_argument("--symbols", nargs="+", default=None)
    p.add_argument("--folds", type=int, default=None, help="default 4 (quick 3)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1, default 3 (quick 1)")
    p.add_argument("--epochs", type=int, default=None, help="max epochs per model, default 12 (quick 4)")
    p.add_argument(
        "--bars", type=int, default=None, help="last N bars per symbol (default all; quick 12,000)"
    )
    p.add_argument("--synthetic-folds", type=int, default=None, help="0 = no control; default 3 (quick 2)")
    p.add_argument("--synthetic-bars", type=int, default=None, help="default 20,000 (quick 8,000)")
    p.add_argument("--out", default=None, help="output prefix (default docs/results/vol_study[_quick])")
    p.add_argument("--config", default=None, help="tiers and [distill] (default: config.toml; smoke: tiny)")
    p.add_argument("--render", default=None, help="re-render .md/.png from this JSON, train nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.symbols = args.symbols or list(SYMBOLS[:1])
        args.folds, args.seeds, args.epochs = args.folds or 2, args.seeds or 1, args.epochs or 2
        args.bars = args.bars or 4_000
        args.synthetic_folds = args.synthetic_folds or 0
        args.data_dir = str(data_or_synthetic(Path(args.data_dir), args.symbols))
        args.config = args.config or str(tiny_config_file(smoke_dir("config")))
    args.config = args.config or str(ROOT / "config.toml")
    q = args.quick
    args.symbols = args.symbols or (list(SYMBOLS[:2]) if q else list(SYMBOLS))
    args.folds = args.folds or (3 if q else 4)
    args.seeds = args.seeds or (1 if q else 3)
    args.epochs = args.epochs or (4 if q else 12)
    args.bars = args.bars or (12_000 if q else None)
    args.synthetic_folds = (2 if q else 3) if args.synthetic_folds is None else args.synthetic_folds
    args.synthetic_bars = args.synthetic_bars or (8_000 if q else 20_000)
    prefix = output_path(Path(args.out) if args.out else None, "vol_study", smoke=args.smoke, quick=q)
    if args.render:
        doc = json.loads(Path(args.render).read_text(encoding="utf-8"))
        print(render(doc, Path(args.render).with_suffix("")))
        return 0
    args.started_utc = time.strftime("%Y-%m-%d %H:%M", time.gmtime())

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    doc = run_study(args, say)
    write_doc(doc, prefix.with_suffix(".json"))
    print(render(doc, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
