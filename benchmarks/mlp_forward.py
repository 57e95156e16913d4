"""Per-call cost of a tier's forward pass: onnxruntime vs the compiled kernel, measured in the same run.

    python benchmarks/mlp_forward.py            # the default tier ladder (config.toml [tiers]), ~2 min
    python benchmarks/mlp_forward.py --smoke    # tiny tiers, a few cold calls: proves the script runs

Each tier of the default ladder (research 3x256 on 50 inputs, staging 3x128 on 50, production 2x64 on 39,
edge 2x32 on 16; both heads) is built from randomly initialised weights (Glorot-uniform, a fixed seed;
scikit-learn's own initialisation, no training) and exported by the real `offline.export.tier_to_onnx`, so
the graph is the one a distillation writes. Each tier is then served both ways through
`bot.models.tier.Tier`'s
`predict` (the engine's call: a full float64 feature row in, the return out): by onnxruntime (the bound
float32 buffers) and by the compiled forward pass (`bot.models.forward.choose_forward`, which also proves
parity).

hot: `--hot` calls back to back, each timed alone (perf_counter_ns). cold: one call every 100 ms, round
robin over every (tier, runtime) pair, so a pair runs once every 0.8 s with other work between: the bar
cadence's cold caches, without the engine's warm-up calls. The ratio is onnxruntime over compiled (> 1:
compiled is faster). The mlp kernel's mode (a compiled C extension, or plain Python) is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from typing import Any

import numpy as np

from bot.config import Config
from bot.core import kernels
from bot.core.features import FEATURE_INDEX, FEATURE_SETS, N_FEATURES
from bot.models import forward
from bot.models.tier import Tier, TierSpec, session_options

SEED = 21
SMOKE_SHAPES = ((3, 24), (2, 16), (2, 12), (1, 8))  # benchmarks/_smoke.py's tiny tiers


def random_tier(features: tuple[str, ...], hidden: tuple[int, ...], *, seed: int) -> Any:
    """A `offline.train.TierModel` with both heads and randomly initialised weights (no training)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from offline.train import TierModel

    rng = np.random.default_rng(seed)
    n = len(features)
    scaler = StandardScaler().fit(rng.normal(rng.normal(0, 2, n), rng.uniform(0.1, 3, n), size=(256, n)))
    mlp = MLPRegressor(hidden_layer_sizes=hidden, max_iter=1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(rng.standard_normal((8, n)), rng.standard_normal((8, 2)))
    dims = [n, *hidden, 2]
    for k in range(len(dims) - 1):  # scikit-learn's Glorot-uniform initialisation, from our own seed
        bound = np.sqrt(6.0 / (dims[k] + dims[k + 1]))
        mlp.coefs_[k] = rng.uniform(-bound, bound, (dims[k], dims[k + 1]))
        mlp.intercepts_[k] = rng.uniform(-bound, bound, dims[k + 1])
    return TierModel(
        hidden=hidden,
        features=features,
        x_scaler=scaler,
        y_mean=0.0,
        y_scale=3e-3,
        mlp=mlp,
        vol_mean=float(np.log(3e-3)),
        vol_scale=0.5,
        vol_var_scale=1.1,
    )


def build_tiers(shapes: dict[str, tuple[tuple[int, ...], tuple[str, ...]]]) -> dict[str, tuple[Tier, Tier]]:
    """Per tier: (served by onnxruntime, served by the compiled pass), from the same exported ONNX bytes."""
    import onnxruntime as ort

    from offline.export import tier_to_onnx

    out: dict[str, tuple[Tier, Tier]] = {}
    for i, (name, (hidden, features)) in enumerate(shapes.items()):
        data = tier_to_onnx(random_tier(features, hidden, seed=SEED + i), name=name).SerializeToString()
        spec = TierSpec(
            name=name,
            stage=i,
            file=f"{name}.onnx",
            sha256="",
            features=features,
            input_name="x",
            output_name="y",
            layers=len(hidden),
            width=hidden[0],
            params=0,
            recipe="random",
            entry=None,  # type: ignore[arg-type]  # the manifest entry is not needed to serve
            vol_output_name="vol",
        )
        index = np.array([FEATURE_INDEX[f] for f in features], dtype=np.intp)
        pair = []
        for enabled in (False, True):
            session = ort.InferenceSession(
                data, sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
            # the compiled side is measured at every size, also above the limit where the service keeps ORT
            choice = forward.choose_forward(
                data,
                session,
                index,
                input_name="x",
                output_name="y",
                vol_output_name="vol",
                enabled=enabled,
                require_compiled=False,
                max_multiply_adds=2**62,
            )
            if enabled and choice.runtime != "compiled":
                raise SystemExit(f"{name}: the compiled pass was refused: {choice.reason}")
            pair.append(Tier(spec, session, forward=choice))
        out[name] = (pair[0], pair[1])
    return out


def percentiles(ns: list[int]) -> tuple[float, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny tiers, few calls, seconds; no speed claim")
    ap.add_argument("--hot", type=int, default=20_000, help="hot calls per tier and runtime")
    ap.add_argument("--cold", type=int, default=100, help="cold calls per tier and runtime (100 ms apart)")
    args = ap.parse_args()
    cfg = Config()
    if args.smoke:
        args.hot, args.cold, gap_s = 200, 3, 0.01
        hidden = [(w,) * layers for layers, w in SMOKE_SHAPES]
    else:
        gap_s = 0.1
        hidden = [(t.width,) * t.layers for t in cfg.tiers.values()]
    shapes = {
        name: (h, tuple(FEATURE_SETS[t.features]))
        for (name, t), h in zip(cfg.tiers.items(), hidden, strict=True)
    }
    mode = "compiled C extension" if kernels.compiled().get("mlp") else "plain Python (not compiled)"
    print(f"# mlp forward: onnxruntime vs compiled ({'smoke' if args.smoke else 'full'})")
    print(f"bot.core.kernels.mlp: {mode}; onnxruntime {__import__('onnxruntime').__version__}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load}")
    print("weights: random Glorot-uniform init (seed 21), exported by offline.export.tier_to_onnx\n")
    tiers = build_tiers(shapes)
    rng = np.random.default_rng(SEED)
    x = np.ascontiguousarray(rng.standard_normal(N_FEATURES))

    hot: dict[tuple[str, int], tuple[float, float]] = {}
    for name, pair in tiers.items():
        for r, tier in enumerate(pair):
            for _ in range(max(10, args.hot // 20)):
                tier.predict(x)
            ns = []
            for _ in range(args.hot):
                t0 = time.perf_counter_ns()
                tier.predict(x)
                ns.append(time.perf_counter_ns() - t0)
            hot[name, r] = percentiles(ns)
    cold_ns: dict[tuple[str, int], list[int]] = {(n, r): [] for n in tiers for r in (0, 1)}
    for _ in range(args.cold):
        for (name, r), into in cold_ns.items():
            time.sleep(gap_s)
            t0 = time.perf_counter_ns()
            tiers[name][r].predict(x)
            into.append(time.perf_counter_ns() - t0)
    cold = {key: percentiles(ns) for key, ns in cold_ns.items()}

    print(
        "| tier | shape | inputs | mult-adds | served | parity | hot p50/p99 us ORT | compiled | ratio p50 "
        "| cold p50/p99 us ORT | compiled | ratio p50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (_, comp) in tiers.items():
        h, feats = shapes[name]
        macs = sum(a * b for a, b in zip([len(feats), *h], [*h, 2], strict=True))
        served = "compiled" if macs <= forward.MAX_MULTIPLY_ADDS else "onnxruntime"
        err = comp.choice.max_abs_err
        ho, hc, co, cc = hot[name, 0], hot[name, 1], cold[name, 0], cold[name, 1]
        print(
            f"| {name} | {len(h)}x{h[0]} | {len(feats)} | {macs:,} | {served} | {err:.1e} "
            f"| {ho[0]:.2f} / {ho[1]:.2f} | {hc[0]:.2f} / {hc[1]:.2f} | {ho[0] / hc[0]:.1f}x "
            f"| {co[0]:.1f} / {co[1]:.1f} | {cc[0]:.1f} / {cc[1]:.1f} | {co[0] / cc[0]:.1f}x |"
        )
    print(
        f"\nhot: {args.hot} calls per cell; cold: {args.cold} per cell, one every {gap_s * 1000:.0f} ms "
        f"round robin over the {len(cold_ns)} cells; served: which runtime TierFamily.load picks "
        f"(compiled up to {forward.MAX_MULTIPLY_ADDS:,} multiply-adds); parity: max |compiled - ORT| on the "
        "verification rows"
    )


if __name__ == "__main__":
    main()
