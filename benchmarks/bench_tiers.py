"""Tier runtime latency on this machine: bound vs unbound run, hot vs cold, with and without a warm-up call.

Builds a real-size family (8x256, 6x192, 4x128, 2x64 over the 30 features) with tests/fixtures_models.py,
loads it with bot.tiers.TierFamily, and times single-row predictions:

- hot: back-to-back calls;
- cold: one call every `--gap-ms` ms (caches go cold between calls, like live bars minutes apart);
- warmed: the same gap, with `warm(tier)` just before each timed call (the engine's pattern).

    .venv/bin/python benchmarks/bench_tiers.py [--n 300] [--gap-ms 100]
    .venv/bin/python benchmarks/bench_tiers.py --idle-cpu   # CPU used at 10 calls/s, default vs tuned
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fixtures_models import full_vectors, write_family

from bot.tiers import TierFamily

FAMILY = {
    "research": ((256,) * 8, "research"),
    "staging": ((192,) * 6, "research"),
    "production": ((128,) * 4, "research"),
    "edge": ((64,) * 2, "research"),
}


def _pct(xs: list[float]) -> str:
    p50, p90, p99 = np.percentile(np.array(xs), [50, 90, 99])
    return f"p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f} us"


def _cpu_share(call: object, seconds: float = 5.0) -> float:
    assert callable(call)
    call()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        call()
        time.sleep(0.1)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / seconds


def idle_cpu() -> None:
    """Share of a core used by the 8x256 tier called 10 times a second: ORT defaults vs bot.tiers options."""
    with tempfile.TemporaryDirectory() as d:
        write_family(Path(d), FAMILY)
        x = full_vectors(1)[0]
        default = ort.InferenceSession(str(Path(d) / "research.onnx"), providers=["CPUExecutionProvider"])
        sub = x.astype(np.float32).reshape(1, -1)
        print(f"ORT default session: {_cpu_share(lambda: default.run(None, {'x': sub})):6.1%} of a core")
        fam = TierFamily.load(d, only=["research"])
        print(f"bot.tiers session:   {_cpu_share(lambda: fam.predict('research', x)):6.1%} of a core")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=100.0)
    ap.add_argument("--idle-cpu", action="store_true")
    args = ap.parse_args()
    if args.idle_cpu:
        idle_cpu()
        return
    with tempfile.TemporaryDirectory() as d:
        write_family(Path(d), FAMILY)
        fam = TierFamily.load(d)
        X = full_vectors(args.n)
        for name in fam.names:
            tier = fam[name]
            sess, spec = tier.session, tier.spec
            for x in X[:50]:
                fam.predict(name, x)
            bound, unbound = [], []
            for x in X:
                t0 = time.perf_counter_ns()
                fam.predict(name, x)
                bound.append((time.perf_counter_ns() - t0) / 1e3)
                t0 = time.perf_counter_ns()
                sub = x[tier.index].astype(np.float32).reshape(1, -1)
                float(sess.run([spec.output_name], {spec.input_name: sub})[0][0, 0])
                unbound.append((time.perf_counter_ns() - t0) / 1e3)
            cold, warmed = [], []
            for i, x in enumerate(X[: max(20, args.n // 5)]):
                time.sleep(args.gap_ms / 1e3)
                if i % 2:
                    fam.warm(name)
                t0 = time.perf_counter_ns()
                fam.predict(name, x)
                (warmed if i % 2 else cold).append((time.perf_counter_ns() - t0) / 1e3)
            print(f"{name:10s} hot bound   {_pct(bound)}")
            print(f"{'':10s} hot unbound {_pct(unbound)}")
            print(f"{'':10s} cold        {_pct(cold)}   (one call per {args.gap_ms:g} ms)")
            print(f"{'':10s} warmed      {_pct(warmed)}   (warm() just before)")


if __name__ == "__main__":
    main()
