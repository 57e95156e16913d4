"""Timing helpers the kernel benchmarks share (a helper module, not a benchmark: no `--smoke` of its own)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_s(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` wall-clock runs of `fn`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
