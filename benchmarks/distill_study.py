"""Distillation study: progressive chain vs one-shot vs scratch at several final sizes, seeds and datasets.

For every dataset and seed one 8x256 teacher is trained (reused across sizes), then for each final size
(4x128, 2x64, 1x32, 1x16: ~9x to ~900x fewer parameters than the teacher) these students:

- `progressive`: the *linear* schedule (offline/train.py with `alpha_schedule = "linear"`, the product's
  default when this study ran): a chain of N <= 3 stages along the ladder
  8x256 -> 6x192 -> 4x128 -> 2x64 -> 1x32 -> 1x16 ending at the size, stage k learning the blended target
  `alpha_k * previous + (1 - alpha_k) * labels` with `alpha_k = alpha_max * (1 - k/N)`, plus a transfer set
  (mixup + jitter rows labelled by the previous stage);
- `progressive_no_transfer`: the same chain without the transfer set;
- `progressive_const`: the same chain with a constant `alpha_k = alpha_max` (`alpha_schedule = "constant"`,
  the product's default after it);
- `one_shot`: one student from the teacher with alpha_1 of the linear schedule and the transfer set (the
  product's baseline under the linear schedule), `one_shot_no_transfer`, `one_shot_const` (alpha = alpha_max:
  the product's one-shot under the constant schedule);
- `scratch`: the student on the labels alone.

The labels keep their original names (`progressive` = linear) so the stored results in
docs/results/study_distill*.json stay readable by this script; the pairing below relies on `progressive*` <->
`one_shot*` names.

Every model is built with offline/train.py's own pieces (fit_mlp, blended_target, transfer_set, TierModel)
on offline/data.py's dataset and split (teacher on the first half of the training rows, every student on
the held-out second half, validation picks the epoch), so the numbers are the pipeline's. Training runs on
one BLAS thread. Outputs: docs/results/study_distill[_quick].{json,md,png}.

    .venv/bin/python benchmarks/distill_study.py --quick      # ~5 min on 2 busy cores
    .venv/bin/python benchmarks/distill_study.py              # full budget, see docs/distillation_study.md
    .venv/bin/python benchmarks/distill_study.py --smoke      # seconds: synthetic + BTCUSDT, 3,000 bars

`--smoke` writes to a temp dir (or `--out`) and uses a synthetic market when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import stats
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import SMOKE_HELP, data_or_synthetic, output_path  # noqa: E402 (benchmarks/, beside this script)

from bot.config import Config, DistillConfig  # noqa: E402 (after the sys.path insert)
from bot.core.features import FEATURE_SETS, feature_indices  # noqa: E402
from offline.data import Dataset, load_dataset  # noqa: E402
from offline.train import (  # noqa: E402
    TierModel,
    blended_target,
    fit_mlp,
    hit_rate,
    information_coefficient,
    pearson,
    r2,
    transfer_set,
)

F64 = npt.NDArray[np.float64]
DATA_DIR = ROOT.parent / "shared" / "data" / "bybit_linear_cobra0506_crypto_backtester" / "normalized"

LADDER: dict[str, tuple[int, ...]] = {
    "8x256": (256,) * 8,
    "6x192": (192,) * 6,
    "4x128": (128,) * 4,
    "2x64": (64,) * 2,
    "1x32": (32,),
    "1x16": (16,),
}
TEACHER = "8x256"
# Final size -> the chain's students (N <= 3 stages, the seed chapter's N = 3 where the ladder allows).
CHAINS: dict[str, tuple[str, ...]] = {
    "4x128": ("6x192", "4x128"),
    "2x64": ("6x192", "4x128", "2x64"),
    "1x32": ("4x128", "2x64", "1x32"),
    "1x16": ("2x64", "1x32", "1x16"),
}
VARIANTS: tuple[str, ...] = (
    "progressive",
    "progressive_no_transfer",
    "progressive_const",
    "one_shot",
    "one_shot_no_transfer",
    "one_shot_const",
    "scratch",
)
METRICS: tuple[str, ...] = (
    "test_r2",
    "r2_retention",
    "fidelity_r2",
    "fidelity_corr",
    "ic",
    "hit_rate",
    "val_r2",
    "train_s",
    "chain_s",
)


def params_of(hidden: Sequence[int], n_inputs: int) -> int:
    """Weights + biases of an MLP with one output."""
    sizes = [n_inputs, *hidden, 1]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the Student-t 95% interval (half-width 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    m = float(a.mean())
    if a.size < 2:
        return m, 0.0
    half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, half


@dataclass(slots=True)
class Prepared:
    """A dataset with the pipeline's split into teacher rows and student rows, scaled once."""

    name: str
    ds: Dataset
    cfg: DistillConfig
    feats: tuple[str, ...]
    scaler: Any
    y_mean: float
    y_scale: float
    teacher_rows: npt.NDArray[np.int64]
    student_rows: npt.NDArray[np.int64]
    x_std: F64

    def ystd(self, v: F64) -> F64:
        return (v - self.y_mean) / self.y_scale


def prepare(name: str, data: str | Path, cfg: DistillConfig, n_bars: int | None) -> Prepared:
    """Load the dataset exactly as `pipeline_distill` does and split train rows like `run_distillation`."""
    from sklearn.preprocessing import StandardScaler

    ds = load_dataset(data, cfg, n_bars=n_bars)
    tr = ds.splits.train
    feats = FEATURE_SETS["research"]
    sc = StandardScaler().fit(ds.X[tr][:, feature_indices(feats)])
    n_t = int(len(tr) * (1.0 - cfg.heldout_frac))
    x_std = ds.X[tr].std(axis=0)
    x_std[x_std == 0.0] = 1.0
    y_scale = float(ds.y[tr].std()) or 1.0
    return Prepared(name, ds, cfg, feats, sc, float(ds.y[tr].mean()), y_scale, tr[:n_t], tr[n_t:], x_std)


class SeedRun:
    """Everything trained for one dataset and one seed; students are memoised by their chain prefix."""

    def __init__(self, p: Prepared, *, seed: int, epochs: int, log: Callable[[str], None]) -> None:
        self.p, self.seed, self.epochs, self.log = p, seed, epochs, log
        ds = p.ds
        self.cols = feature_indices(p.feats)
        self.X_S = ds.X[p.student_rows]
        self.y_S = p.ystd(ds.y[p.student_rows])
        self.X_val = np.asarray(p.scaler.transform(ds.X[ds.splits.val][:, self.cols]), dtype=np.float32)
        self.y_val = p.ystd(ds.y[ds.splits.val])
        mult, jit = p.cfg.transfer_multiplier, p.cfg.transfer_jitter
        self.X_T = transfer_set(self.X_S, p.x_std, multiplier=mult, jitter=jit, seed=seed)
        t0 = time.perf_counter()
        self.teacher = self._fit(TEACHER, ds.X[p.teacher_rows], p.ystd(ds.y[p.teacher_rows]))
        self.teacher_s = time.perf_counter() - t0
        self.teacher_S = self.teacher.predict_std(self.X_S)
        self.teacher_test = self.teacher.predict(ds.X[ds.splits.test])
        self.teacher_r2 = r2(ds.y[ds.splits.test], self.teacher_test)
        # key: (transfer, ((size, alpha), ...)) -> (model, its predictions on X_S, seconds of this stage)
        self._memo: dict[tuple[bool, tuple[tuple[str, float], ...]], tuple[TierModel, F64, float]] = {}

    def _fit(self, size: str, rows: F64, target: F64) -> TierModel:
        p = self.p
        Xs = np.asarray(p.scaler.transform(rows[:, self.cols]), dtype=np.float32)
        hidden = LADDER[size]
        res = fit_mlp(
            hidden,
            Xs,
            target.astype(np.float32),
            self.X_val,
            self.y_val,
            p.cfg,
            epochs=self.epochs,
            seed=self.seed,
        )
        return TierModel(hidden, p.feats, p.scaler, p.y_mean, p.y_scale, res.mlp)

    def student(
        self, size: str, labeler: TierModel, labeler_S: F64, alpha: float, *, transfer: bool
    ) -> TierModel:
        """One distillation stage (offline/train.py's `distill_from`); alpha 0 without transfer = scratch."""
        target = blended_target(alpha, labeler_S, self.y_S)
        rows = self.X_S
        if transfer and self.X_T.shape[0]:
            rows = np.concatenate([self.X_S, self.X_T])
            target = np.concatenate([target, labeler.predict_std(self.X_T)])
        return self._fit(size, rows, target)

    def chain(
        self, sizes: Sequence[str], alphas: Sequence[float], *, transfer: bool
    ) -> tuple[TierModel, float]:
        """The progressive chain over `sizes`; returns the last student and the summed stage seconds."""
        prev, prev_S = self.teacher, self.teacher_S
        total_s = 0.0
        key: tuple[tuple[str, float], ...] = ()
        for size, alpha in zip(sizes, alphas, strict=True):
            key = (*key, (size, round(alpha, 6)))
            hit = self._memo.get((transfer, key))
            if hit is None:
                t0 = time.perf_counter()
                m = self.student(size, prev, prev_S, alpha, transfer=transfer)
                m_S = m.predict_std(self.X_S)
                hit = (m, m_S, time.perf_counter() - t0)
                self._memo[(transfer, key)] = hit
            prev, prev_S, stage_s = hit
            total_s += stage_s
        return prev, total_s

    def evaluate(self, model: TierModel, seconds: float) -> dict[str, float | None]:
        ds = self.p.ds
        te, va = ds.splits.test, ds.splits.val
        pred = model.predict(ds.X[te])
        test_r2 = r2(ds.y[te], pred)
        return {
            "test_r2": test_r2,
            "r2_retention": test_r2 / self.teacher_r2 if self.teacher_r2 > 0.0 else None,
            "fidelity_r2": r2(self.teacher_test, pred),
            "fidelity_corr": pearson(self.teacher_test, pred),
            "ic": information_coefficient(pred, ds.y[te]),
            "hit_rate": hit_rate(pred, ds.y[te]),
            "val_r2": r2(ds.y[va], model.predict(ds.X[va])),
            "train_s": seconds,
            "chain_s": seconds,
        }

    def run_size(self, final: str) -> dict[str, dict[str, float | None]]:
        """All variants at one final size."""
        amax = self.p.cfg.alpha_max
        sizes = CHAINS[final]
        n = len(sizes)
        linear = [amax * (1.0 - k / n) for k in range(1, n + 1)]
        const = [amax] * n
        out: dict[str, dict[str, float | None]] = {}
        for variant, alphas, transfer in (
            ("progressive", linear, True),
            ("progressive_no_transfer", linear, False),
            ("progressive_const", const, True),
        ):
            m, s = self.chain(sizes, alphas, transfer=transfer)
            out[variant] = self.evaluate(m, s)
        for variant, alpha, transfer in (
            ("one_shot", linear[0], True),
            ("one_shot_no_transfer", linear[0], False),
            ("one_shot_const", amax, True),
            ("scratch", 0.0, False),
        ):
            m, s = self.chain([final], [alpha], transfer=transfer)
            out[variant] = self.evaluate(m, s)
        return out


def summarise(rows: list[dict[str, Any]], teacher: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95% interval per (size, variant) and metric, plus paired deltas and time ratios."""
    out: list[dict[str, Any]] = []
    t_s = {t["seed"]: t["teacher_s"] for t in teacher}
    for final in CHAINS:
        by_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for r in rows:
            if r["size"] == final:
                by_seed.setdefault(r["seed"], {})[r["variant"]] = r["metrics"]
        for variant in VARIANTS:
            ms = [v[variant] for v in by_seed.values() if variant in v]
            entry: dict[str, Any] = {"size": final, "variant": variant, "n_seeds": len(ms)}
            for key in METRICS:
                vals = [float(m[key]) for m in ms if m[key] is not None]
                entry[key] = list(ci95(vals)) if vals and len(vals) == len(ms) else None
            base = variant.replace("progressive", "one_shot")
            if variant.startswith("progressive"):
                ratio = [v[variant]["chain_s"] / v[base]["chain_s"] for v in by_seed.values()]
                e2e = [
                    (t_s[seed] + v[variant]["chain_s"]) / (t_s[seed] + v[base]["chain_s"])
                    for seed, v in by_seed.items()
                ]
                entry["time_ratio_students"] = list(ci95(ratio))
                entry["time_ratio_with_teacher"] = list(ci95(e2e))
                entry["time_ratio_baseline"] = base
            for other in ("one_shot", "scratch"):
                if variant == other:
                    continue
                for key in ("test_r2", "fidelity_r2", "ic"):
                    d = [float(v[variant][key]) - float(v[other][key]) for v in by_seed.values()]
                    entry[f"delta_{key}_vs_{other}"] = list(ci95(d))
            out.append(entry)
    return out


def _fmt(pair: list[float] | None, spec: str) -> str:
    if pair is None:
        return "n/a"
    return f"{pair[0]:{spec}} ±{pair[1]:{spec.lstrip('+')}}"


def format_tables(result: dict[str, Any]) -> str:
    """Markdown tables per dataset (mean ± 95% half-width over seeds)."""
    lines: list[str] = []
    for name, d in result["datasets"].items():
        t = d["teacher_summary"]
        lines.append(f"### {name}: {d['info']['rows']} rows, test {d['info']['test_rows']} rows")
        lines.append("")
        if not all(x["test_r2"] > 0 for x in d["teacher"]):
            ret_note = (
                "**Teacher test R² ≤ 0 on some seed: R² retention is meaningless; read fidelity and IC.**"
            )
        elif t["ic"][0] - t["ic"][1] <= 0.0:
            ret_note = (
                "**The teacher's IC interval includes 0 (no detectable skill): R² retention is a ratio of "
                "noise; read fidelity and IC.**"
            )
        else:
            ret_note = "R² retention = student test R² / teacher test R²."
        lines.append(
            f"Teacher 8x256 ({d['teacher'][0]['params']:,} params): test R² {_fmt(t['test_r2'], '+.4f')}, "
            f"IC {_fmt(t['ic'], '+.4f')}, hit {_fmt(t['hit_rate'], '.3f')}, "
            f"train {_fmt(t['teacher_s'], '.1f')} s. {ret_note}"
        )
        lines.append("")
        lines.append(
            "| size | compr | variant | retention | test R² | fidelity R² | fidelity r | IC | hit | "
            "ΔR² vs one-shot | Δfid vs one-shot | ΔIC vs one-shot | time ratio (students) | "
            "time ratio (+teacher) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for e in d["summary"]:
            comp = d["compression"][e["size"]]
            lines.append(
                "| "
                + " | ".join(
                    [
                        e["size"],
                        f"{comp:.0f}x",
                        e["variant"],
                        _fmt(e["r2_retention"], ".2f"),
                        _fmt(e["test_r2"], "+.4f"),
                        _fmt(e["fidelity_r2"], "+.3f"),
                        _fmt(e["fidelity_corr"], "+.3f"),
                        _fmt(e["ic"], "+.4f"),
                        _fmt(e["hit_rate"], ".3f"),
                        _fmt(e.get("delta_test_r2_vs_one_shot"), "+.4f"),
                        _fmt(e.get("delta_fidelity_r2_vs_one_shot"), "+.3f"),
                        _fmt(e.get("delta_ic_vs_one_shot"), "+.4f"),
                        _fmt(e.get("time_ratio_students"), ".2f"),
                        _fmt(e.get("time_ratio_with_teacher"), ".2f"),
                    ]
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Retention / fidelity / IC against compression, one column per dataset, 95% intervals as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, axes = plt.subplots(3, len(names), figsize=(5.2 * len(names), 11), squeeze=False)
    shown = ("progressive", "progressive_no_transfer", "progressive_const", "one_shot", "scratch")
    rows = (
        ("r2_retention", "R² retention"),
        ("fidelity_corr", "fidelity r (correlation with the teacher)"),
        ("ic", "IC (Spearman)"),
    )
    for j, name in enumerate(names):
        d = result["datasets"][name]
        skill = has_skill(d)
        for i, (key, label) in enumerate(rows):
            ax = axes[i][j]
            for k, variant in enumerate(shown):
                if key == "r2_retention" and not skill:
                    break
                es = [e for e in d["summary"] if e["variant"] == variant and e[key] is not None]
                if not es:
                    continue
                x = np.array([d["compression"][e["size"]] for e in es]) * (1.0 + 0.04 * (k - 2))
                ax.errorbar(
                    x,
                    [e[key][0] for e in es],
                    yerr=[e[key][1] for e in es],
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=variant,
                )
            if key == "ic":
                ax.axhline(d["teacher_summary"]["ic"][0], color="k", ls="--", lw=1, label="teacher")
            if key == "r2_retention" and not skill:
                note = "n/a: the teacher has no test skill\n(R² ≤ 0 or its IC interval includes 0)"
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
            ax.set_xscale("log")
            ax.set_xlabel("compression (teacher params / student params)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(name)
            if i == 2 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle(
        f"distillation study ({result['meta']['mode']}, {result['meta']['seeds']} seeds, mean ± 95% CI)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def has_skill(d: dict[str, Any]) -> bool:
    """The teacher beats the mean on every seed (test R² > 0) and its IC interval excludes 0."""
    ic = d["teacher_summary"]["ic"]
    return all(x["test_r2"] > 0 for x in d["teacher"]) and ic[0] - ic[1] > 0.0


def headline(result: dict[str, Any]) -> str:
    """One compact table: per dataset and size, progressive vs one-shot vs scratch and the best variant."""
    lines = [
        "| dataset | size | compr | metric | progressive | one-shot | scratch | best variant (mean) | "
        "progressive minus one-shot (paired) | time ratio prog/one-shot (+teacher) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in result["datasets"].items():
        skill = (
            all(x["test_r2"] > 0 for x in d["teacher"])
            and d["teacher_summary"]["ic"][0] > d["teacher_summary"]["ic"][1]
        )
        key, spec = ("r2_retention", ".2f") if skill else ("ic", "+.4f")
        by = {(e["size"], e["variant"]): e for e in d["summary"]}
        for size in CHAINS:
            p, o, sc = by[(size, "progressive")], by[(size, "one_shot")], by[(size, "scratch")]
            best = max(VARIANTS, key=lambda v: by[(size, v)][key][0] if by[(size, v)][key] else -math.inf)
            delta = p.get("delta_test_r2_vs_one_shot") if skill else p.get("delta_ic_vs_one_shot")
            lines.append(
                f"| {name} | {size} | {d['compression'][size]:.0f}x | {'retention' if skill else 'IC'} | "
                f"{_fmt(p[key], spec)} | {_fmt(o[key], spec)} | {_fmt(sc[key], spec)} | "
                f"{best} ({by[(size, best)][key][0]:{spec}}) | "
                f"{_fmt(delta, '+.4f')} {'(test R²)' if skill else '(IC)'} | "
                f"{_fmt(p.get('time_ratio_with_teacher'), '.2f')} |"
            )
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], stem: Path) -> None:
    """`stem`.md (tables) and `stem`.png from a study result; prints the tables."""
    tables = format_tables(result)
    m = result["meta"]
    header = (
        f"# Distillation study tables ({m['mode']})\n\n"
        f"Generated by `{m['command']}` in {m['wall_s'] / 60:.1f} min: {m['seeds']} seeds, "
        f"<= {m['epochs']} epochs (patience {m['patience']}), last {m['bars_per_dataset']} bars per dataset, "
        f"1 BLAS thread. Mean ± 95% t-interval over seeds. Time ratios: progressive chain "
        f"seconds / one-shot seconds of the same final size (students only, and with the teacher's "
        f"training added to both).\n\n"
    )
    head = "## Headline\n\n" + headline(result) + "\n\n## Per dataset\n\n"
    stem.with_suffix(".md").write_text(header + head + tables, encoding="utf-8")
    plot(result, stem.with_suffix(".png"))
    print(tables)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "scipy"):
        out[dist] = metadata.version(dist)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="quick budget: 20,000 bars, 8 epochs, 5 seeds")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 3,000 bars, 1 seed, 1 epoch")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per dataset (default 5)")
    ap.add_argument("--epochs", type=int, default=None, help="max epochs per model (default 8 quick / 20)")
    ap.add_argument("--bars", type=int, default=None, help="last N bars per dataset (default 20,000 / all)")
    ap.add_argument("--datasets", default=None, help="comma list (default synthetic,BTCUSDT,ETHUSDT)")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument(
        "--out", type=Path, default=None, help="output stem (default docs/results/study_distill[_quick])"
    )
    ap.add_argument("--render", type=Path, default=None, help="only re-render .md/.png from this study JSON")
    args = ap.parse_args(argv)
    if args.render is not None:
        done = json.loads(args.render.read_text(encoding="utf-8"))
        write_outputs(done, args.render.with_suffix(""))
        return 0

    base = Config().distill
    if args.smoke:
        args.seeds, args.epochs, args.bars = args.seeds or 1, args.epochs or 1, args.bars or 3_000
    datasets = (args.datasets or ("synthetic,BTCUSDT" if args.smoke else "synthetic,BTCUSDT,ETHUSDT")).split(
        ","
    )
    if args.smoke:
        args.data_dir = data_or_synthetic(args.data_dir, [d for d in datasets if d != "synthetic"])
    seeds = args.seeds or 5
    epochs = args.epochs or (base.quick_epochs if args.quick else 20)
    bars = args.bars or (base.quick_bars if args.quick else 25_920)  # 25,920 = the 90 days of 5m in the data
    cfg = msgspec.structs.replace(base, epochs=epochs)
    stem = output_path(args.out, "study_distill", smoke=args.smoke, quick=args.quick)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "meta": {
            "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
            "command": "python benchmarks/distill_study.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "seeds": seeds,
            "epochs": epochs,
            "patience": cfg.patience,
            "bars_per_dataset": bars,
            "blas_threads": 1,
            "chains": {k: [TEACHER, *v] for k, v in CHAINS.items()},
            "alpha_max": cfg.alpha_max,
            "transfer_multiplier": cfg.transfer_multiplier,
            "heldout_frac": cfg.heldout_frac,
            "versions": versions(),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        },
        "datasets": {},
    }
    with threadpool_limits(limits=1):
        for name in datasets:
            src: str | Path = "synthetic" if name == "synthetic" else args.data_dir / f"{name}_5m.csv"
            p = prepare(name, src, cfg, bars)
            n_in = len(p.feats)
            t_params = params_of(LADDER[TEACHER], n_in)
            compression = {s: t_params / params_of(LADDER[s], n_in) for s in LADDER}
            log(f"{name}: {p.ds.n_rows} rows, teacher {len(p.teacher_rows)}, students {len(p.student_rows)}")
            rows: list[dict[str, Any]] = []
            teacher: list[dict[str, Any]] = []
            for seed in range(seeds):
                run = SeedRun(p, seed=seed, epochs=epochs, log=log)
                te = p.ds.splits.test
                teacher.append(
                    {
                        "seed": seed,
                        "params": t_params,
                        "teacher_s": run.teacher_s,
                        "test_r2": run.teacher_r2,
                        "ic": information_coefficient(run.teacher_test, p.ds.y[te]),
                        "hit_rate": hit_rate(run.teacher_test, p.ds.y[te]),
                    }
                )
                for final in CHAINS:
                    for variant, metrics in run.run_size(final).items():
                        rows.append({"seed": seed, "size": final, "variant": variant, "metrics": metrics})
                prog = next(r for r in rows if r["seed"] == seed and r["size"] == "1x16")["metrics"]
                log(
                    f"{name} seed {seed}: teacher R2 {run.teacher_r2:+.4f} ({run.teacher_s:.1f} s); "
                    f"1x16 progressive fidelity {prog['fidelity_r2']:+.3f}"
                )
            t_summary = {
                k: list(ci95([float(t[k]) for t in teacher]))
                for k in ("test_r2", "ic", "hit_rate", "teacher_s")
            }
            result["datasets"][name] = {
                "info": {
                    "source": str(src),
                    "rows": p.ds.n_rows,
                    "teacher_rows": len(p.teacher_rows),
                    "student_rows": len(p.student_rows),
                    "transfer_rows": round(cfg.transfer_multiplier * len(p.student_rows)),
                    "val_rows": len(p.ds.splits.val),
                    "test_rows": len(p.ds.splits.test),
                    "first_start_ms": p.ds.provenance.get("first_start_ms"),
                    "last_start_ms": p.ds.provenance.get("last_start_ms"),
                },
                "compression": compression,
                "params": {s: params_of(LADDER[s], n_in) for s in LADDER},
                "teacher": teacher,
                "teacher_summary": t_summary,
                "rows": rows,
                "summary": summarise(rows, teacher),
            }
    result["meta"]["wall_s"] = time.perf_counter() - t_start
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    write_outputs(result, stem)
    log(f"wrote {stem}.json/.md/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
