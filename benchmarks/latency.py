"""Latency: single-row inference per tier and runtime, the bar->decision pipeline hot and cold, idle CPU.

Part 1, single-row inference per tier (p50/p99 over back-to-back calls), against the bot's path as baseline:

- `ort_bound`: `bot.models.tier.Tier.predict` (numpy gather into a pre-bound float32 buffer, IOBinding run),
the   bot's session options (1 thread, no spinning);
- `ort_plain`: slice + cast + `session.run` with a feed dict, same session options;
- `ort_default`: `session.run` on a session with onnxruntime's default options (thread pool, spinning);
- `numpy`: the same graph as a numpy forward pass, weights read from the ONNX initializers (`onnx` package);
- `sklearn`: `Pipeline(StandardScaler, MLPRegressor).predict` carrying the same weights;
- `floor`: multiply-adds x 2 / single-core GFLOP/s of a float32 numpy GEMM measured in the same run;
- `ort_bound_cold` / `ort_bound_cold_warmed`: the bot's path called once every `--gap-ms` ms, without and with
  `TierFamily.warm` just before (formerly benchmarks/bench_tiers.py).

Part 2, the bar->decision pipeline per tier in-process: `Engine.on_bar` stages (features, regime,
inference, paper) plus the service's `log` (structlog JSON line to /dev/null) and `ledger` (SQLite WAL file
write) per bar, each routed to a single tier, in three regimes:

- `hot`: bars back to back;
- `cold`: one bar every `--gap-ms` ms (>= 100 ms, like live bars minutes apart), no warm-up;
- `cold_warm`: the same spacing, `Engine.on_partial` (the bot's warm-up on the last partial) just before.

Part 3, idle CPU: process CPU seconds over a few seconds of an idle asyncio loop with the whole family loaded
and run once, with the bot's session options vs onnxruntime's defaults (spinning thread pools).

The tier family comes from `python -m offline distill --data synthetic --quick --out DIR` (built once if
DIR has no manifest). Output: docs/results/latency[_quick].json and .png.

    .venv/bin/python benchmarks/latency.py --quick
    .venv/bin/python benchmarks/latency.py --models /tmp/bench_models
    .venv/bin/python benchmarks/latency.py --smoke     # seconds, a tiny family, outputs in a temp dir
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _smoke import SMOKE_HELP, output_path, smoke_dir, tiny_family  # noqa: E402 (benchmarks/, beside this script)

from bot.config import Config, engine_params  # noqa: E402
from bot.core.bars import Bar  # noqa: E402
from bot.core.decision import encode_line  # noqa: E402
from bot.core.engine import Engine  # noqa: E402
from bot.core.features import N_FEATURES  # noqa: E402
from bot.core.paper import PaperTrader  # noqa: E402
from bot.core.params import REGIME_NAMES  # noqa: E402
from bot.core.stream import PartialBar  # noqa: E402
from bot.ledger.writer import Ledger  # noqa: E402
from bot.models.family import TierFamily  # noqa: E402
from bot.models.tier import Tier  # noqa: E402
from bot.observe import logs  # noqa: E402 (after the sys.path insert)
from bot.sim.synthetic import SyntheticMarket  # noqa: E402

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
DEFAULT_MODELS = Path(tempfile.gettempdir()) / "bench_models"
#: mode -> (single-row calls, hot bars, cold bars per mode, idle seconds, default cold gap in ms)
SIZES: dict[str, tuple[int, int, int, float, float]] = {
    "smoke": (200, 100, 3, 0.5, 10.0),
    "quick": (2_000, 1_000, 40, 3.0, 100.0),
    "full": (20_000, 10_000, 200, 10.0, 100.0),
}


def pct(xs: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean of microsecond samples."""
    a = np.asarray(xs, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def ensure_family(models: Path, log: Callable[[str], None]) -> None:
    """Build the synthetic quick tier family into `models` unless a manifest is already there."""
    if (models / "manifest.json").exists():
        return
    from offline.pipeline import pipeline_distill

    log(f"building the tier family into {models} (python -m offline distill --data synthetic --quick)")
    pipeline_distill(Config(), data="synthetic", out_dir=models, quick=True)


# ---- part 1: single-row inference ----


class NumpyMLP:
    """The exported graph (Scaler -> [MatMul, Add, Relu]* -> MatMul, Add -> *y_scale + y_mean) in numpy."""

    def __init__(self, path: Path) -> None:
        m = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        self.offset = np.zeros(0, dtype=np.float32)
        self.scale = np.zeros(0, dtype=np.float32)
        self.weights: list[F32] = []
        self.biases: list[F32] = []
        for node in m.graph.node:
            if node.op_type == "Scaler":
                attrs = {a.name: list(a.floats) for a in node.attribute}
                self.offset = np.array(attrs["offset"], dtype=np.float32)
                self.scale = np.array(attrs["scale"], dtype=np.float32)
            elif node.op_type == "MatMul":
                self.weights.append(np.ascontiguousarray(init[node.input[1]], dtype=np.float32))
            elif node.op_type == "Add" and node.input[1] in init and node.input[1] != "y_mean":
                self.biases.append(np.asarray(init[node.input[1]], dtype=np.float32).reshape(-1))
        self.y_scale = float(init["y_scale"][0])
        self.y_mean = float(init["y_mean"][0])
        assert len(self.weights) == len(self.biases)
        assert self.offset.size == self.weights[0].shape[0]

    @property
    def multiply_adds(self) -> int:
        return sum(int(w.shape[0] * w.shape[1]) for w in self.weights)

    def predict(self, x: F32) -> float:
        h = (x - self.offset) * self.scale
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return float(h[0, 0]) * self.y_scale + self.y_mean

    def sklearn_pipeline(self) -> Any:
        """A fitted-looking Pipeline(StandardScaler, MLPRegressor) carrying these exact weights."""
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        n_in = self.weights[0].shape[0]
        hidden = tuple(int(w.shape[1]) for w in self.weights[:-1])
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, n_in))
        sc = StandardScaler().fit(X)
        sc.mean_ = self.offset.astype(np.float64)
        sc.scale_ = 1.0 / self.scale.astype(np.float64)
        n_out = self.weights[-1].shape[1]  # the heads (return, log vol): predict gives [N, n_out]
        mlp = MLPRegressor(hidden_layer_sizes=hidden, max_iter=1, random_state=0)
        mlp.partial_fit(X, rng.standard_normal((64, n_out)))
        mlp.coefs_ = [w.astype(np.float64) for w in self.weights]
        mlp.intercepts_ = [b.astype(np.float64) for b in self.biases]
        return Pipeline([("scaler", sc), ("mlp", mlp)])


def gemm_gflops(seconds: float = 1.0) -> float:
    """Single-thread float32 GEMM throughput (512x512x512), best of repeated runs within `seconds`."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 512)).astype(np.float32)
    c = np.empty((512, 512), dtype=np.float32)
    best = 0.0
    with threadpool_limits(limits=1):
        np.matmul(a, b, out=c)
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            dt = time.perf_counter() - t0
            best = max(best, 2 * 512**3 / dt / 1e9)
    return best


def time_calls(fn: Callable[[], object], n: int, *, warmup: int = 200) -> list[float]:
    """Microseconds of `n` back-to-back calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = [0.0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = (clock() - t0) / 1e3
    return out


def inference_part(
    models: Path, family: TierFamily, *, n: int, n_cold: int, gap_ms: float, gflops: float
) -> dict[str, Any]:
    """Single-row latency per tier and runtime; checks every runtime agrees with the bot's prediction."""
    rng = np.random.default_rng(1)
    x_full = rng.standard_normal(N_FEATURES) * 0.5
    return {
        t.spec.name: _tier_inference(
            models, family, t, x_full, n=n, n_cold=n_cold, gap_ms=gap_ms, gflops=gflops
        )
        for t in family
    }


def _tier_inference(
    models: Path,
    family: TierFamily,
    tier: Tier,
    x_full: F64,
    *,
    n: int,
    n_cold: int,
    gap_ms: float,
    gflops: float,
) -> dict[str, Any]:
    spec = tier.spec
    sub = np.ascontiguousarray(x_full[tier.index], dtype=np.float32).reshape(1, -1)
    data = (models / spec.file).read_bytes()
    default = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    nm = NumpyMLP(models / spec.file)
    skl = nm.sklearn_pipeline()

    def sklearn() -> float:  # the return head: column 0 of the two heads (return, log vol)
        return float(skl.predict(sub)[0, 0]) * nm.y_scale + nm.y_mean

    want = tier.predict(x_full)
    got = {
        "numpy": nm.predict(sub),
        "sklearn": sklearn(),
        "ort_default": float(default.run([spec.output_name], {spec.input_name: sub})[0][0, 0]),
    }
    for k, v in got.items():
        if abs(v - want) > 1e-6 + 1e-4 * abs(want):
            raise RuntimeError(f"{spec.name}: {k} predicts {v}, the bot's tier {want}")
    sess, idx, iname, oname = tier.session, tier.index, spec.input_name, spec.output_name

    def plain() -> float:
        s = x_full[idx].astype(np.float32).reshape(1, -1)
        return float(sess.run([oname], {iname: s})[0][0, 0])

    runs: dict[str, Callable[[], object]] = {
        "ort_bound": lambda: tier.predict(x_full),
        "ort_plain": plain,
        "ort_default": lambda: default.run([oname], {iname: sub}),
        "numpy": lambda: nm.predict(sub),
        "sklearn": sklearn,
    }
    row: dict[str, Any] = {"params": spec.params, "multiply_adds": nm.multiply_adds}
    for k, fn in runs.items():
        reps = n if k != "sklearn" else max(200, n // 5)
        row[k] = pct(time_calls(fn, reps))
    row["floor_us"] = 2 * nm.multiply_adds / (gflops * 1e3)
    cold: list[float] = []
    warmed: list[float] = []
    clock = time.perf_counter_ns
    for i in range(2 * n_cold):  # merged from benchmarks/bench_tiers.py: the tier alone, cold vs warmed
        time.sleep(gap_ms / 1e3)
        if i % 2:
            family.warm(spec.name)
        t0 = clock()
        tier.predict(x_full)
        (warmed if i % 2 else cold).append((clock() - t0) / 1e3)
    row["ort_bound_cold"] = pct(cold)
    row["ort_bound_cold_warmed"] = pct(warmed)
    return row


# ---- part 2: the bar -> decision pipeline ------------------------------------------------------------------


def single_tier_cfg(base: Config, tier: str, ledger_path: Path) -> Config:
    routes = dict.fromkeys(REGIME_NAMES, tier)
    return msgspec.structs.replace(
        base,
        regime=msgspec.structs.replace(base.regime, routes=routes),
        ledger=msgspec.structs.replace(base.ledger, path=str(ledger_path)),
    )


def pipeline_part(
    family: TierFamily, *, n_hot: int, n_cold: int, gap_ms: float, workdir: Path
) -> dict[str, Any]:
    """Per tier: stage latencies (us) hot, cold, and cold with the bot's warm-up; log and ledger included."""
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (closed at the end)
    logs.configure_logging(level="info", fmt="json", decisions_path=None, stream=devnull)
    log = logs.get_logger(component="service")
    n_warm = 400
    steps = SyntheticMarket(seed=11, symbol="BTCUSDT").generate(n_warm + n_hot + 2 * n_cold + 10)
    bars = [s.bar for s in steps]
    out: dict[str, Any] = {}
    try:
        for tier in family.names:
            path = workdir / f"ledger_{tier}.sqlite"
            out[tier] = _tier_pipeline(
                family, tier, bars, log, path, n_warm=n_warm, n_hot=n_hot, n_cold=n_cold, gap_ms=gap_ms
            )
    finally:
        logs.configure_logging(level="info", fmt="json", stream=sys.stderr)
        devnull.close()
    return out


def _tier_pipeline(
    family: TierFamily,
    tier: str,
    bars: list[Bar],
    log: Any,
    ledger_path: Path,
    *,
    n_warm: int,
    n_hot: int,
    n_cold: int,
    gap_ms: float,
) -> dict[str, Any]:
    clock = time.perf_counter_ns
    base = Config()
    cfg = single_tier_cfg(base, tier, ledger_path)
    ledger = Ledger.open(cfg.ledger.path)
    engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    engine.replay(bars[:n_warm])
    it = iter(bars[n_warm:])
    modes: dict[str, dict[str, list[float]]] = {}

    def one(mode: str, bar: Bar, *, write: bool) -> None:
        t0 = clock()
        d = engine.on_bar(bar)
        t1 = clock()
        assert d is not None
        assert d.tier == tier
        logs.write_decision(encode_line(d, {"ledger": 0.0, "recv_to_decision": 0.0}))
        t2 = clock()
        rec = modes.setdefault(mode, {})
        for k, v in d.latency_us.items():
            rec.setdefault(k, []).append(v)
        rec.setdefault("on_bar", []).append((t1 - t0) / 1e3)
        rec.setdefault("log", []).append((t2 - t1) / 1e3)
        rec.setdefault("decision_total", []).append((t2 - t0) / 1e3)
        if write:  # the service's ledger commit (SQLite WAL, synchronous=FULL), timed on its own
            t3 = clock()
            ledger.record(bar, d, engine.trader.state(bar.symbol))
            rec.setdefault("ledger", []).append((clock() - t3) / 1e3)

    for _ in range(n_hot):
        one("hot", next(it), write=False)
    for i in range(2 * n_cold):
        bar = next(it)
        time.sleep(gap_ms / 1e3)
        if i % 2:
            engine.on_partial(PartialBar.of(bar, ts_ms=bar.start_ms + 299_000))
            one("cold_warm", bar, write=True)
        else:
            one("cold", bar, write=True)
    ledger.close()
    return {mode: {k: pct(v) for k, v in rec.items()} for mode, rec in modes.items()}


# ---- part 3: idle CPU ----


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _idle(seconds: float) -> None:
    """An idle event loop with a 1 s heartbeat task, like the service between bars."""

    async def beat() -> None:
        for _ in range(int(seconds) + 1):
            await asyncio.sleep(1.0)

    task = asyncio.create_task(beat())
    await asyncio.sleep(seconds)
    task.cancel()


def idle_child(kind: str, models: Path, seconds: float) -> dict[str, Any]:
    """In a fresh process: load the family (`bot`/`default` ORT options, or `none`), run each tier once,
    then measure process CPU over `seconds` of an idle asyncio loop."""
    keep: list[Any] = []
    if kind == "bot":
        family = TierFamily.load(models)
        for t in family.names:
            family.predict(t, np.zeros(N_FEATURES))
        keep.append(family)
    elif kind == "default":
        manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
        for e in manifest["tiers"]:
            sess = ort.InferenceSession((models / e["file"]).read_bytes(), providers=["CPUExecutionProvider"])
            sess.run(
                [e["output_name"]], {e["input_name"]: np.zeros((1, len(e["features"])), dtype=np.float32)}
            )
            keep.append(sess)
    c0, w0 = _cpu_s(), time.perf_counter()
    asyncio.run(_idle(seconds))
    c1, w1 = _cpu_s(), time.perf_counter()
    return {
        "cpu_s": c1 - c0,
        "wall_s": w1 - w0,
        "core_pct": 100.0 * (c1 - c0) / (w1 - w0),
        "threads": len(os.listdir("/proc/self/task")),
    }


def idle_part(models: Path, *, seconds: float) -> dict[str, Any]:
    """Idle CPU share of one core, each case in its own process: no models, bot options, ORT defaults."""
    res: dict[str, Any] = {}
    for label, kind in (("no_models", "none"), ("bot_options", "bot"), ("ort_default_options", "default")):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--idle-child",
            kind,
            "--models",
            str(models),
            "--idle-s",
            str(seconds),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 120)
        res[label] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


# ---- report ----------------------------------------------------------------------------------------------


def format_report(r: dict[str, Any]) -> str:
    lines = [f"single-core float32 GEMM: {r['gflops']:.1f} GFLOP/s", ""]
    runtimes = ("ort_bound", "ort_plain", "ort_default", "numpy", "sklearn")
    lines.append("single-row inference, us (p50 / p99), ratio of p50 to ort_bound in brackets")
    lines.append(f"{'tier':<11}{'params':>9}{'floor':>8}  " + "".join(f"{k:>24}" for k in runtimes))
    for name, row in r["inference"].items():
        b = row["ort_bound"]["p50"]
        cells = "".join(
            f"{row[k]['p50']:>8.1f} /{row[k]['p99']:>7.1f} [{row[k]['p50'] / b:4.1f}x]" for k in runtimes
        )
        lines.append(f"{name:<11}{row['params']:>9,}{row['floor_us']:>8.2f}  {cells}")
        c, w = row["ort_bound_cold"], row["ort_bound_cold_warmed"]
        lines.append(
            f"{'':<11}ort_bound one call per {r['meta']['gap_ms']:g} ms: "
            f"cold {c['p50']:.1f} / {c['p99']:.1f}, after warm() {w['p50']:.1f} / {w['p99']:.1f}"
        )
    lines.append("")
    lines.append("bar -> decision in-process, us: p50 / p99 (decision_total = Engine.on_bar + the log line)")
    stages = ("features", "regime", "inference", "paper", "log", "decision_total")
    lines.append(f"{'tier':<11}{'mode':<10}" + "".join(f"{k:>18}" for k in stages))
    for name, modes in r["pipeline"].items():
        for mode, st in modes.items():
            cells = "".join(f"{st[k]['p50']:>9.1f}/{st[k]['p99']:>8.1f}" for k in stages)
            lines.append(f"{name:<11}{mode:<10}{cells}")
        hot = modes["hot"]["inference"]["p99"]
        cw = modes["cold_warm"]["inference"]["p99"]
        c = modes["cold"]["inference"]["p99"]
        single = r["inference"][name]["ort_bound"]["p99"]
        led = modes["cold"]["ledger"]
        lines.append(
            f"{'':<11}inference p99: cold {c:.1f} us, cold+warm-up {cw:.1f} us = {cw / single:.1f}x the hot "
            f"single-row ORT p99 ({single:.1f} us), pipeline hot {hot:.1f} us; ledger commit p50/p99 "
            f"{led['p50']:.0f}/{led['p99']:.0f} us"
        )
    lines.append("")
    for label, v in r["idle"].items():
        lines.append(
            f"idle {label:<20} {v['core_pct']:6.2f}% of a core "
            f"({v['cpu_s']:.3f} s CPU in {v['wall_s']:.1f} s, {v['threads']} threads)"
        )
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    tiers = list(r["inference"])
    runtimes = ("ort_bound", "ort_plain", "ort_default", "numpy", "sklearn")
    w = 0.15
    for k, rt in enumerate(runtimes):
        xs = np.arange(len(tiers)) + (k - 2) * w
        a1.bar(xs, [r["inference"][t][rt]["p50"] for t in tiers], w, label=rt)
        a1.errorbar(xs, [r["inference"][t][rt]["p99"] for t in tiers], fmt="k_", ms=8)
    a1.plot(
        np.arange(len(tiers)), [r["inference"][t]["floor_us"] for t in tiers], "r*", label="arithmetic floor"
    )
    a1.set_yscale("log")
    a1.set_xticks(np.arange(len(tiers)), tiers)
    a1.set_ylabel("us per single-row call (bar p50, tick p99)")
    a1.set_title("inference")
    a1.legend(fontsize=7)
    modes = ("hot", "cold", "cold_warm")
    for k, mode in enumerate(modes):
        xs = np.arange(len(tiers)) + (k - 1) * 0.25
        a2.bar(
            xs, [r["pipeline"][t][mode]["decision_total"]["p50"] for t in tiers], 0.25, label=f"{mode} p50"
        )
        a2.errorbar(xs, [r["pipeline"][t][mode]["decision_total"]["p99"] for t in tiers], fmt="k_", ms=8)
    a2.axhline(50, color="r", ls="--", lw=1, label="50 us target")
    a2.set_yscale("log")
    a2.set_xticks(np.arange(len(tiers)), tiers)
    a2.set_ylabel("us bar -> decision (on_bar + log line; tick = p99)")
    a2.set_title("pipeline")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; a tiny family unless --models")
    ap.add_argument("--models", type=Path, default=None, help=f"tier family (default {DEFAULT_MODELS})")
    ap.add_argument("--gap-ms", type=float, default=None, help="spacing of cold calls (>= 100; smoke 10)")
    ap.add_argument("--idle-s", type=float, default=None)
    ap.add_argument(
        "--out", type=Path, default=None, help="output stem (default docs/results/latency[_quick])"
    )
    ap.add_argument("--idle-child", choices=("none", "bot", "default"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.idle_child:
        print(json.dumps(idle_child(args.idle_child, args.models, args.idle_s or 3.0)))
        return 0
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    n_inf, n_hot, n_cold, idle_default, gap_default = SIZES[mode]
    idle_s = args.idle_s or idle_default
    gap_ms = max(args.gap_ms or gap_default, 1.0)
    stem = output_path(args.out, "latency", smoke=args.smoke, quick=args.quick)
    models = args.models or (tiny_family(smoke_dir("models")) if args.smoke else DEFAULT_MODELS)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    ensure_family(models, log)
    family = TierFamily.load(models)
    load0 = os.getloadavg()
    gflops = gemm_gflops(seconds=0.2 if args.smoke else 1.0)
    log(f"GEMM {gflops:.1f} GFLOP/s; inference part")
    with threadpool_limits(limits=1):
        inference = inference_part(models, family, n=n_inf, n_cold=n_cold, gap_ms=gap_ms, gflops=gflops)
        log("pipeline part")
        with tempfile.TemporaryDirectory() as tmp:
            pipeline = pipeline_part(family, n_hot=n_hot, n_cold=n_cold, gap_ms=gap_ms, workdir=Path(tmp))
    log("idle part")
    idle = idle_part(models, seconds=idle_s)
    r: dict[str, Any] = {
        "meta": {
            "mode": mode,
            "command": "python benchmarks/latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "models": str(models),
            "provenance": family.manifest.provenance,
            "samples": {"inference": n_inf, "hot": n_hot, "cold_each": n_cold, "idle_s": idle_s},
            "gap_ms": gap_ms,
            "loadavg_before": load0,
            "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "versions": {d: metadata.version(d) for d in ("numpy", "onnxruntime", "scikit-learn", "onnx")},
            "python": platform.python_version(),
        },
        "gflops": gflops,
        "inference": inference,
        "pipeline": pipeline,
        "idle": idle,
    }
    r["meta"]["wall_s"] = time.perf_counter() - t_start
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    plot(r, stem.with_suffix(".png"))
    print(format_report(r))
    log(f"wrote {stem}.json/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
